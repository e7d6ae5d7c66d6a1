"""The layers hold: what runs on a laptop (`rlv check`, `rlv status`, `rlv analyze`) imports
neither torch nor Ray, proven by running each as a process where both (and torch's companions)
cannot be imported at all (tests/blocked.py), and checking what it printed and its exit code."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from analysis_helpers import ENCODER_EFFECT, PRIORS, synthetic_store, synthetic_trials
from blocked import BLOCKED, HEAVY, LEAK, ROOT, make_shims, run_python, run_rlv

from rlv import columns as col
from rlv.store.store import Store

SWEEPS = ROOT / "sweeps"
FAILED = "NL-conv-flow6-s0"  # the trial the status file says failed (not in the store)


@pytest.fixture(scope="module")
def shims(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shims(tmp_path_factory.mktemp("shims"))


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The analysis tests' synthetic store: 120 trials of sweep quick, with their images."""
    return synthetic_store(tmp_path_factory.mktemp("laptop") / "store", sweep="quick", images=True)


@pytest.fixture(scope="module")
def sweep_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store as a driver of sweep quick leaves it, written by rlv's own StoreWriter: synthetic
    rows of the flow6-less cells for seeds 0 and 1 (the sweep has seed 0 only: seed 1's rows are
    outside its grid), each carrying its trial's config, and a status file of an ended run
    in which FAILED failed."""
    from rlv.store.writer import StoreWriter
    from rlv.sweep.files import load_sweep

    spec = load_sweep(str(SWEEPS / "quick.yaml"))
    root = tmp_path_factory.mktemp("swept") / "store"
    writer = StoreWriter(Store.open(root), "quick")
    for row in synthetic_trials(priors=[p for p in PRIORS if p != "flow6"], seeds=range(2),
                                sweep_dir="quick").to_dict("records"):
        cfg = spec.trial_config({f: row[f] for f in spec.factors} | {"seed": row[col.SEED]})
        writer.queue_trial({**row, col.TRIAL_ID: cfg.name, col.CONFIG: cfg.to_json()}, {})
    writer.flush()
    writer.write_status({"sweep": "quick", "updated_at": datetime.now(UTC).isoformat(),
                         "ended": True, "driver": "elsewhere:1",
                         "trials": {FAILED: {"status": "ERROR", "error": "RlvError: diverged"}}})
    return root


def sweep_file(name: str) -> dict[str, Any]:
    return yaml.safe_load((SWEEPS / f"{name}.yaml").read_text())


def grid_size(sweep: dict[str, Any]) -> int:
    return math.prod(len(levels) for levels in sweep["factors"].values()) * sweep["seeds"]


def counts(store: Path, sweep: dict[str, Any]) -> tuple[int, int]:
    """(trials in the sweep's grid, trials outside it) of the store's rows, by their seeds."""
    rows = pd.read_parquet(store / "trials")
    inside = int((rows[col.SEED] < sweep["seeds"]).sum())
    return inside, len(rows) - inside


def one_error_line(out: Any) -> str:
    """A user mistake: exit code 2, nothing on stdout, one line on stderr (no traceback)."""
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == "" and len(out.stderr.splitlines()) == 1, out.stderr
    return str(out.stderr.strip())


def test_the_shims_really_block_torch_and_ray(shims: Path, tmp_path: Path) -> None:
    code = ("import rlv\nprint(rlv.__file__)\n"
            f"for name in {HEAVY!r}:\n"
            "    try:\n        __import__(name)\n    except ImportError as exc:\n        print(exc)\n"
            "    else:\n        print(name, 'imported')\n")
    out = run_python(shims, "-c", code, cwd=tmp_path, timeout_s=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(ROOT / "rlv" / "__init__.py"),
                                       *(f"{name} is {BLOCKED}" for name in HEAVY)]
    # each attempt left its trace, even though the ImportError was caught
    assert out.stderr.splitlines() == [f"{LEAK}: {name}" for name in HEAVY]
    # and the blocked package fails a program that imports it
    out = run_python(shims, "-c", "import torch.nn", cwd=tmp_path, timeout_s=60)
    assert out.returncode == 1 and f"ImportError: torch is {BLOCKED}" in out.stderr


def test_rlv_check_imports_neither_torch_nor_ray(shims: Path, sweep_store: Path,
                                                 tmp_path: Path) -> None:
    sweep, nowhere = sweep_file("thesis-mnist"), tmp_path / "nowhere"
    out = run_rlv(shims, "check", "thesis-mnist", "--store", str(nowhere), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert LEAK not in out.stderr, out.stderr
    total, seeds, factors = grid_size(sweep), sweep["seeds"], sweep["factors"]
    assert total == 120
    first = "-".join(factors[f][0] for f in ("encoder", "layer", "prior"))
    last = "-".join(factors[f][-1] for f in ("encoder", "layer", "prior"))
    conv_flows = len(factors["encoder"]) * len(["flow2", "flow6"]) * seeds  # its one where entry
    assert out.stdout.splitlines() == [
        f"sweep thesis-mnist: OK, {total} trials "
        f"({', '.join(f'{k} {len(v)}' for k, v in factors.items())}, seeds {seeds})",
        "each trial asks for 1 CPU and 0.25 GPU where the cluster has GPUs, else none",
        f"epochs {sweep['settings']['train']['epochs']}, FID samples "
        f"{sweep['settings']['eval']['fid_samples']}, max failures {sweep['max_failures']}, "
        f"store {sweep['store']}",
        f"trials: {first}-s0 ... {last}-s{seeds - 1}",
        f"where layer = conv, prior = flow2|flow6: model.flow_hidden = 128 "
        f"({conv_flows} of {total} trials)",
        f"store {nowhere}: not created yet; all {total} trials to run",
        "remaining time: no estimate (no measured epoch or FID times yet)",
    ]
    # against a store with finished trials: what is done and to run, and the time it will take
    quick = sweep_file("quick")
    out = run_rlv(shims, "check", "quick", "--store", str(sweep_store), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert LEAK not in out.stderr, out.stderr
    done, outside = counts(sweep_store, quick)
    assert done == 16 and outside == 16
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"sweep quick: OK, {grid_size(quick)} trials (")
    assert lines[4:6] == [
        f"store {sweep_store}: {done} done, 0 running, {grid_size(quick) - done} to run "
        "(0 resume from checkpoints)",
        f"{outside} stored trials are no longer in the grid (kept as they are)"]
    assert lines[6].startswith("remaining: about ") and len(lines) == 7, lines


def test_rlv_check_of_an_unknown_sweep_says_so_in_one_line(shims: Path, tmp_path: Path) -> None:
    error = one_error_line(run_rlv(shims, "check", "no-such-sweep", cwd=tmp_path))
    assert error.startswith("error: unknown sweep 'no-such-sweep'; available: ")
    assert "thesis-mnist" in error


def test_rlv_status_imports_neither_torch_nor_ray(shims: Path, sweep_store: Path,
                                                  tmp_path: Path) -> None:
    out = run_rlv(shims, "status", str(SWEEPS / "quick.yaml"), "--store", str(sweep_store),
                  cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert LEAK not in out.stderr, out.stderr
    quick = sweep_file("quick")
    finished, outside = counts(sweep_store, quick)
    total = grid_size(quick)
    lines = out.stdout.splitlines()
    assert lines[:3] == [
        f"sweep quick: {finished} finished, 0 running, 1 failed, {total - finished - 1} pending "
        f"(of {total})",
        f"store: {sweep_store}",
        f"{outside} stored trials are no longer in the grid (kept as they are)"]
    assert lines[3].startswith("last run ended ") and lines[3].endswith(" (driver elsewhere:1)")
    assert lines[4:] == [f"  failed   {FAILED}: RlvError: diverged"]


def test_rlv_status_of_a_missing_store_says_so_in_one_line(shims: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-store"
    error = one_error_line(run_rlv(shims, "status", str(SWEEPS / "quick.yaml"), "--store",
                                   str(missing), cwd=tmp_path))
    assert error.startswith(f"error: store {missing} does not exist (nothing was launched into it)")


def test_rlv_analyze_imports_neither_torch_nor_ray(shims: Path, store: Path, tmp_path: Path) -> None:
    report = tmp_path / "report"
    out = run_rlv(shims, "analyze", str(store), "--out", str(report), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert LEAK not in out.stderr, out.stderr
    assert out.stdout.splitlines() == [
        f"wrote {report / 'report.md'}, {report / 'report.html'} and {report / 'anova.csv'}"]
    assert (report / "report.html").stat().st_size > 0
    assert len(pd.read_csv(report / "anova.csv")) > 0
    text = (report / "report.md").read_text()
    trials = len(pd.read_parquet(store / "trials"))
    assert text.startswith(f"# rlv report: {store}\n\nSweeps: quick. Trials: {trials} "
                           f"(mnist {trials}).")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    expected = ["## Cell means and standard deviations", "## ANOVA (mnist, Type III, alpha = 0.01)",
                "## Post hoc orderings (Tukey HSD, alpha = 0.01)", "## Comparison with the thesis",
                "## Plots", "## Images (per cell, the lowest seed)"]
    assert [h for h in headings if h in expected] == expected, headings
    # the encoder effect planted in the store comes out as the ordering of the post hoc tests
    planted = " < ".join(sorted(ENCODER_EFFECT, key=ENCODER_EFFECT.__getitem__))
    assert f"| mnist | test_neg_elbo | encoder | {planted} | True |" in text
