"""write_report's files, and the analysis notebook run end to end against a small store."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pandas as pd
import pytest

# pytest puts tests/ on sys.path (no __init__.py there): the helpers import by name.
from analysis_helpers import synthetic_epochs, synthetic_store, synthetic_trials, write_store
from nbclient import NotebookClient

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
    written = pd.read_csv(paths.anova)
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
    markdown = paths.markdown.read_text()
    assert "F(3, 96)" not in markdown or "mnist" in markdown
    assert "| layer | prior |" in markdown and "](images/mnist/" in markdown


def test_write_report_one_sweep(store: Path, tmp_path: Path) -> None:
    paths = write_report(store, tmp_path, sweep="svhn")
    assert set(pd.read_csv(paths.anova)["resid_df"]) == {8}  # 12 trials - 4 encoders
    assert not any("mnist" in p.name for p in paths.plots)


@pytest.mark.slow
def test_notebook_runs_end_to_end(
    store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    first_code = next(c for c in notebook.cells if c.cell_type == "code")
    assert 'STORE = os.environ.get("RLV_STORE", "../results")' in first_code.source
    # The committed notebook carries no outputs.
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code")
    monkeypatch.setenv("RLV_STORE", str(store))
    client = NotebookClient(
        notebook,
        timeout=60,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 10  # plots and image grids
    text = "".join(str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert col.TEST_NEG_ELBO in text and "L < PNL < RKS < NL" in text


def test_write_report_refuses_to_pool_two_sweeps_of_one_dataset(tmp_path: Path) -> None:
    root = synthetic_store(tmp_path / "store", "quick", seeds=range(1))
    synthetic_store(root, "thesis-mnist", seeds=range(2))
    with pytest.raises(RlvError, match=r"several mnist sweeps \(quick, thesis-mnist\).*--sweep"):
        write_report(root, tmp_path / "report")
    assert not (tmp_path / "report").exists()  # refused before writing anything
    paths = write_report(root, tmp_path / "report", sweep="thesis-mnist")
    assert paths.anova.is_file()
