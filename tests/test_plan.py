"""`rlv plan`: seeds per cell from the store's residual variance and the noncentral F.

Expected numbers come from numpy least squares and direct scipy.stats.ncf / f calls written here.
The command runs in-process (rlv.cli.app with Typer's CliRunner; errors through rlv.cli.main).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# pytest puts tests/ on sys.path (no __init__.py there): the helpers import by name.
from analysis_helpers import synthetic_trials, write_store
from scipy import stats
from typer.testing import CliRunner

from rlv import cli
from rlv import columns as col
from rlv.analysis.plan import plan_seeds


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plan")
    write_store(root, synthetic_trials(seeds=range(3), noise=2.0, rng_seed=7))
    return root


def _power(f: float, n_total: int, a: int, params: int, alpha: float) -> float:
    df2 = n_total - params
    return float(stats.ncf.sf(stats.f.isf(alpha, a - 1, df2), a - 1, df2, f * f * n_total))


def _sigma_full_factorial(trials: pd.DataFrame, metric: str) -> tuple[float, int]:
    """Residual sd of the full factorial by least squares on cell indicators, and its params."""
    keys = trials[[col.ENCODER, col.LAYER, col.PRIOR]].astype(str).agg("|".join, axis=1)
    x = (keys.to_numpy()[:, None] == np.unique(keys)[None, :]).astype(float)
    y = trials[metric].to_numpy(float)
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    rss = float(((y - x @ beta) ** 2).sum())
    return math.sqrt(rss / (len(y) - x.shape[1])), x.shape[1]


@pytest.mark.parametrize("factor,delta", [(col.ENCODER, 2.0), (col.PRIOR, 1.5), (col.LAYER, 1.0)])
def test_seeds_per_cell_from_the_noncentral_f(store: Path, factor: str, delta: float) -> None:
    result = CliRunner().invoke(
        cli.app,
        ["plan", str(store), "--metric", col.TEST_RE, "--factor", factor,
         "--delta", str(delta), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    trials = pd.read_parquet(store / "trials")
    sigma, params = _sigma_full_factorial(trials, col.TEST_RE)
    a, cells = trials[factor].nunique(), 24
    f = delta / (sigma * math.sqrt(2 * a))
    assert plan["sigma"] == pytest.approx(sigma, rel=1e-9)
    assert plan["f"] == pytest.approx(f, rel=1e-9)
    assert plan["current_power"] == pytest.approx(_power(f, len(trials), a, params, 0.01), rel=1e-9)
    n = plan["seeds_per_cell"]
    assert _power(f, n * cells, a, params, 0.01) >= 0.8  # enough ...
    assert n * cells - cells <= params or _power(f, (n - 1) * cells, a, params, 0.01) < 0.8  # least
    assert plan["trials_needed"] == n * cells


def _fit_prior_covariate(trials: pd.DataFrame, metric: str) -> tuple[float, int]:
    """Residual sd of prior + encoder * layer by least squares on a dummy-coded design built
    here, and its parameter count (fewer than the 24 cells: prior does not interact)."""
    enc, lay, pri = (pd.get_dummies(trials[f].astype(str), drop_first=True, dtype=float)
                     for f in (col.ENCODER, col.LAYER, col.PRIOR))  # fmt: skip
    inter = [enc[e] * lay[la] for e in enc for la in lay]
    x = np.column_stack([np.ones(len(trials)), enc, lay, pri, *inter])
    y = trials[metric].to_numpy(float)
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    rss = float(((y - x @ beta) ** 2).sum())
    return math.sqrt(rss / (len(y) - x.shape[1])), x.shape[1]


def test_seeds_per_cell_when_the_model_has_fewer_parameters_than_cells(store: Path) -> None:
    # test_neg_elbo's model, prior + encoder * layer: 1 + 3 + 1 + 2 + 3 = 10 parameters for
    # 24 cells, so the residual df is N - 10, not N - 24.
    trials = pd.read_parquet(store / "trials")
    sigma, params = _fit_prior_covariate(trials, col.TEST_NEG_ELBO)
    e, la, p = (trials[f].nunique() for f in (col.ENCODER, col.LAYER, col.PRIOR))
    assert params == 1 + (e - 1) + (la - 1) + (p - 1) + (e - 1) * (la - 1) < 24
    plan = plan_seeds(trials, col.TEST_NEG_ELBO, col.ENCODER, 1.5)
    f = 1.5 / (sigma * math.sqrt(2 * e))
    assert plan.params == params and plan.sigma == pytest.approx(sigma, rel=1e-9)
    assert plan.current_power == pytest.approx(_power(f, len(trials), e, params, 0.01), rel=1e-9)
    expected = next(n for n in range(1, 10_000) if _power(f, n * 24, e, params, 0.01) >= 0.8)
    assert plan.seeds_per_cell == expected and plan.trials_needed == expected * 24


def test_plan_with_other_power_and_alpha_and_the_sentence(store: Path) -> None:
    trials = pd.read_parquet(store / "trials")
    ours = plan_seeds(trials, col.TEST_RE, col.ENCODER, 2.0, power=0.95, alpha=0.05)
    sigma, params = _sigma_full_factorial(trials, col.TEST_RE)
    f = 2.0 / (sigma * math.sqrt(8))
    n = ours.seeds_per_cell
    assert n is not None
    assert _power(f, n * 24, 4, params, 0.05) >= 0.95 > _power(f, (n - 1) * 24, 4, params, 0.05)
    result = CliRunner().invoke(
        cli.app, ["plan", str(store), "--metric", col.TEST_RE, "--factor", col.ENCODER,
                  "--delta", "2", "--power", "0.95", "--alpha", "0.05"]
    )  # fmt: skip
    assert result.exit_code == 0 and f"{n} seeds per cell" in result.output


@pytest.mark.parametrize("args,message", [
    (["--metric", "nope"], "unknown metric 'nope'"),
    (["--factor", "seed"], "factor 'seed' is not in the model of test_re"),
    (["--delta", "0"], "delta = 0 is not allowed; it must be > 0"),
    (["--delta", "-1"], "delta = -1 is not allowed"),
    (["--power", "1.5"], "power = 1.5 is not allowed; it must lie strictly between 0 and 1"),
    (["--alpha", "0"], "alpha = 0 is not allowed"),
    (["--sweep", "other"], "unknown sweep 'other'"),
])  # fmt: skip
def test_bad_plan_input_is_one_line(
    store: Path, args: list[str], message: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    given = {"--metric": col.TEST_RE, "--factor": col.ENCODER, "--delta": "1"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        given[flag] = value
    argv = ["rlv", "plan", str(store), *[x for kv in given.items() for x in kv]]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
