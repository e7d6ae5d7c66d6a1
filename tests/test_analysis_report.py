"""write_report's files and `rlv analyze`'s guards; the notebook's committed form (it is executed
once per CI run, on a real store, in tests/test_end_to_end.py)."""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

# pytest puts tests/ on sys.path (no __init__.py there): the helpers import by name.
from analysis_helpers import synthetic_epochs, synthetic_store, synthetic_trials, write_store

from rlv import cli
from rlv import columns as col
from rlv.analysis import anova_table, load_store, write_report
from rlv.errors import RlvError

NOTEBOOK = Path(__file__).resolve().parents[1] / "analysis" / "thesis_analysis.ipynb"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MNIST (2 seeds) and SVHN (3 seeds) in two sweeps, with epochs and images."""
    root = synthetic_store(tmp_path_factory.mktemp("store"), "mnist", images=True, seeds=range(2))
    svhn = synthetic_trials(
        "svhn", layers=("conv",), priors=("flow6",), seeds=range(3), sweep_dir="svhn"
    )
    write_store(root, svhn, "svhn", synthetic_epochs(svhn), images=True)
    return root


def test_write_report_writes_self_contained_files(store: Path, tmp_path: Path) -> None:
    paths = write_report(str(store), tmp_path / "report")
    for path in (paths.markdown, paths.html, paths.anova, paths.posthoc, paths.orderings):
        assert path.is_file() and path.stat().st_size > 0
    assert paths.checks.is_file() and paths.comparison.is_file()
    assert {p.name for p in paths.tables} >= {"mnist_test_neg_elbo.csv", "svhn_summary.csv"}
    assert any(p.name == "mnist_learning_curves.png" for p in paths.plots)
    assert len(paths.images) == (24 + 4) * 3  # per cell the first seed's three PNGs
    # anova.csv is the tidy table itself.
    written = pd.read_csv(paths.anova, keep_default_na=False, na_values=[""])
    expected = anova_table(load_store(store))
    assert list(written.columns) == list(expected.columns)
    assert written["F"].to_numpy() == pytest.approx(expected["F"].to_numpy(), nan_ok=True)
    assert set(written["dataset"]) == {"mnist", "svhn"}
    # The HTML needs no other file: every image is a data URI, nothing is fetched.
    html = paths.html.read_text()
    sources = re.findall(r"""src=["']([^"']*)["']""", html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html
    assert set(written["block"].fillna("")) == {"", "seed"}
    markdown = paths.markdown.read_text()
    trials = load_store(store, sweep="mnist").trials
    resid_df = len(trials) - trials.groupby([col.ENCODER, col.LAYER, col.PRIOR]).ngroups
    assert resid_df == 24 and f"F(3, {resid_df}) = " in markdown  # the RE model's encoder term
    assert "+ seed (block)" in markdown and "of residual variance" in markdown
    assert "| layer | prior |" in markdown and "](images/mnist/" in markdown
    # orderings of every factor, beside the thesis's; the planning table
    orderings = pd.read_csv(paths.orderings)
    mnist = orderings[orderings["dataset"] == "mnist"]
    assert set(mnist["factor"]) == {col.ENCODER, col.LAYER, col.PRIOR}
    assert mnist.set_index(["metric", "factor"]).loc[(col.FID, col.PRIOR), "thesis_ordering"] == (
        "flow6 < flow2 < normal"
    )
    planning = pd.read_csv(paths.planning)
    assert set(planning["metric"]) >= {col.TEST_NEG_ELBO, col.TEST_RE, col.FID}
    assert "Planning: seeds per cell" in markdown
    # Deltas fixed beforehand, half and one residual sd: for RE's full factorial sigma is the
    # pooled within-cell sd, so f = delta_sd / sqrt(2 a) whatever the data.
    re_plan = planning[(planning["dataset"] == "mnist") & (planning["metric"] == col.TEST_RE)]
    assert sorted(re_plan["delta_sd"]) == [0.5, 1.0]
    cells = [col.ENCODER, col.LAYER, col.PRIOR]
    within = trials[col.TEST_RE] - trials.groupby(cells, observed=True)[col.TEST_RE].transform("mean")
    sigma = math.sqrt(float((within**2).sum()) / resid_df)
    assert re_plan["sigma"].to_numpy() == pytest.approx([sigma, sigma], rel=1e-9)
    assert re_plan["delta"].to_numpy() == pytest.approx(re_plan["delta_sd"] * sigma, rel=1e-9)
    assert re_plan["f"].to_numpy() == pytest.approx(re_plan["delta_sd"] / math.sqrt(8), rel=1e-9)
    assert "half and of one residual sd" in markdown
    # Each interval says its level: Tukey at 1 - alpha = 99%, eta squared at 95%.
    assert "simultaneous 99% Tukey interval" in markdown and "| 99% interval |" in markdown
    assert "partial eta sq [95% CI]" in markdown and "with its 95% interval" in markdown


def test_write_report_one_sweep(store: Path, tmp_path: Path) -> None:
    paths = write_report(store, tmp_path, sweep="svhn")
    anova = pd.read_csv(paths.anova, keep_default_na=False, na_values=[""])
    by_block = anova.groupby(anova["block"].fillna(""))["resid_df"].unique()
    assert list(by_block[""]) == [12 - 4] and list(by_block["seed"]) == [12 - 4 - 2]
    assert not any("mnist" in p.name for p in paths.plots)


def test_the_committed_notebook_reads_its_store_from_the_environment() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    first_code = next(c for c in notebook.cells if c.cell_type == "code")
    assert 'STORE = os.environ.get("RLV_STORE", "../results")' in first_code.source
    # The committed notebook carries no outputs.
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")


def _analyze(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(sys, "argv", ["rlv", "analyze", *argv])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    return int(exit_info.value.code or 0)


def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("where", ["file", "under-file", "store-root", "in-store"])
def test_analyze_out_must_be_a_folder_outside_the_store(
    where: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    root = synthetic_store(tmp_path / "store", seeds=range(1))
    regular = tmp_path / "notes.txt"
    regular.write_text("keep me")
    out = {
        "file": regular,
        "under-file": regular / "report",
        "store-root": root,
        "in-store": root / "trials" / "report",
    }[where]
    before = _snapshot(root)
    assert _analyze([str(root), "--out", str(out)], monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = "is a file, not a folder" if "file" in where else "is inside the store"
    assert len(err) == 1 and expected in err[0] and str(out) in err[0], err
    assert regular.read_text() == "keep me" and _snapshot(root) == before  # nothing damaged
    assert len(load_store(root).trials) == 24


def test_the_loader_never_reads_other_files_as_parquet(tmp_path: Path) -> None:
    root = synthetic_store(tmp_path / "store", seeds=range(1))
    (root / "trials" / "report.md").write_text("# not data")
    (root / "trials" / "sweep=test" / "anova.csv").write_text("a,b\n1,2\n")
    (root / "epochs" / "sweep=test" / "plot.png").write_bytes(b"\x89PNG not parquet")
    results = load_store(root)
    assert len(results.trials) == 24 and len(results.epochs) == 24 * 3


def test_write_report_refuses_to_pool_two_sweeps_of_one_dataset(tmp_path: Path) -> None:
    root = synthetic_store(tmp_path / "store", "quick", seeds=range(1))
    synthetic_store(root, "thesis-mnist", seeds=range(2))
    with pytest.raises(RlvError, match=r"several mnist sweeps \(quick, thesis-mnist\).*--sweep"):
        write_report(root, tmp_path / "report")
    assert not (tmp_path / "report").exists()  # refused before writing anything
    paths = write_report(root, tmp_path / "report", sweep="thesis-mnist")
    assert paths.anova.is_file()
