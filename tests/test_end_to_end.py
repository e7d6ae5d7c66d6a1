"""A real sweep (Ray Tune, the store, FID) analysed by `rlv analyze` and by the notebook."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml
from nbclient import NotebookClient

from rlv import columns as col
from rlv.service.launch import LaunchOptions, run_sweep
from rlv.sweep.spec import parse_sweep

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
SWEEP = {
    "name": "e2e",
    "factors": {"encoder": ["L", "NL"], "layer": ["fc"], "prior": ["normal", "flow2"]},
    "seeds": 2,
    "settings": {"data": {"train_size": 512, "test_size": 256},
                 "train": {"epochs": 2, "batch_size": 128, "checkpoint_every": 1},
                 "eval": {"fid_samples": 16, "samples": 16, "interpolation_pairs": 2}},
    "resources": {"cpu": 1, "gpu": "auto"},
}


@pytest.fixture(scope="module")
def real_store(tmp_path_factory: pytest.TempPathFactory, ray_cluster) -> Path:  # type: ignore[no-untyped-def]
    store = tmp_path_factory.mktemp("e2e") / "store"
    spec = parse_sweep({**SWEEP, "store": str(store)})
    outcome = run_sweep(spec, LaunchOptions(), lambda line: None)
    assert outcome.ok, outcome.failed
    return store


def test_the_store_holds_the_contracts_columns(real_store: Path) -> None:
    trials = pd.read_parquet(real_store / "trials")
    assert len(trials) == 8 and trials[col.FID].gt(0).all()
    assert (trials[col.FID_SAMPLES] == 16).all()
    assert set(trials[col.SEED]) == {0, 1}
    # the two seeds draw different splits and initial weights, so their results differ
    by_seed = trials.pivot_table(index=[col.ENCODER, col.PRIOR], columns=col.SEED,
                                 values=col.TEST_RE, observed=True)
    assert (by_seed[0] != by_seed[1]).all()
    epochs = pd.read_parquet(real_store / "epochs")
    assert len(epochs) == 16


def test_rlv_analyze_writes_the_report_of_a_real_sweep(real_store: Path, tmp_path: Path) -> None:
    out = subprocess.run(["rlv", "analyze", str(real_store), "--out", str(tmp_path / "report")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = tmp_path / "report"
    assert (report / "report.md").exists() and (report / "report.html").exists()
    anova = pd.read_csv(report / "anova.csv")
    re_rows = anova[anova["metric"] == col.TEST_RE]
    plain, blocked = re_rows[re_rows["block"].isna()], re_rows[re_rows["block"] == "seed"]
    # encoder * prior full factorial on 2 x 2 cells x 2 seeds: 8 - 4 = 4 residual df; the seed
    # block (2 seeds) takes one more
    assert set(plain["resid_df"]) == {4}
    assert set(blocked["resid_df"]) == {3} and "seed" in set(blocked["term"])
    assert "data:image/png;base64," in (report / "report.html").read_text()


def test_rlv_analyze_of_a_missing_store_is_one_line(tmp_path: Path) -> None:
    out = subprocess.run(["rlv", "analyze", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "Traceback" not in out.stderr


def test_the_notebook_runs_on_a_store_the_tests_made(real_store: Path) -> None:
    """The notebook's only execution in the test suite (nbclient raises on a failing cell)."""
    notebook = nbformat.read(ROOT / "analysis" / "thesis_analysis.ipynb", as_version=4)
    os.environ["RLV_STORE"] = str(real_store)
    try:
        NotebookClient(notebook, timeout=300, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "analysis")}}).execute()
    finally:
        del os.environ["RLV_STORE"]

    def shown(source_start: str) -> str:
        """Everything the code cell starting with `source_start` displayed, as text and HTML."""
        cell = next(c for c in notebook.cells
                    if c.cell_type == "code" and c.source.startswith(source_start))
        return "".join(str(o.get("data", {}).get(kind, "")) + str(o.get("text", ""))
                       for o in cell.outputs for kind in ("text/plain", "text/html"))

    assert "8 trials" in shown("SWEEP = None")  # 2 encoders x 2 priors x 2 seeds
    anova = shown("fits = ra.fit_models")
    assert col.TEST_NEG_ELBO in anova and "+ seed (block)" in anova
    assert re.search(r"\b(L|NL) [<&>] (L|NL)\b", shown("posthoc = ra.posthoc_table"))
    assert "seeds_per_cell" in shown("ra.planning_table")
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 4  # plots and image grids


def test_status_after_the_sweep(real_store: Path, tmp_path: Path) -> None:
    sweep = tmp_path / "e2e.yaml"
    sweep.write_text(yaml.safe_dump({**SWEEP, "store": str(real_store)}))
    out = subprocess.run(["rlv", "status", str(sweep)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert "8 finished, 0 running, 0 failed, 0 pending (of 8)" in out.stdout
    assert f"store: {real_store}" in out.stdout
