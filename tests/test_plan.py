"""`rlv plan`: seeds per cell from the store's residual variance and the noncentral F.

The expected plans are derived here from the semantics README and plan.py document, not from
plan.py's formula: the model's design matrix is built with numpy (intercept plus sum-coded columns
and their products), sigma is its least-squares residual sd, and the noncentrality is the extra
sum of squares that the factor's columns explain in the noise-free means of Cohen's pattern (two
levels delta apart, the rest at the grand mean), over sigma^2, with df from the matrix ranks. The
power is then scipy.stats.ncf's tail beyond scipy.stats.f's critical value, and the seeds per cell
the first n, counting up, that reaches the target. The command runs in-process (rlv.cli.app with
Typer's CliRunner; errors through rlv.cli.main).
"""

from __future__ import annotations

import itertools
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# pytest puts tests/ on sys.path (no __init__.py there): the helpers import by name.
from analysis_helpers import sum_coded_design, synthetic_trials, write_store
from scipy import stats
from typer.testing import CliRunner

from rlv import cli
from rlv import columns as col
from rlv.analysis.plan import plan_seeds

Term = tuple[str, ...]
FACTORS = (col.ENCODER, col.LAYER, col.PRIOR)
# The models of README's table (design.py's docstring), written out: test_re gets the full
# factorial, test_neg_elbo prior + encoder * layer (prior without interactions).
MODELS: dict[str, tuple[Term, ...]] = {
    col.TEST_RE: tuple(t for k in (1, 2, 3) for t in itertools.combinations(FACTORS, k)),
    col.TEST_NEG_ELBO: ((col.ENCODER,), (col.LAYER,), (col.PRIOR,), (col.ENCODER, col.LAYER)),
}
MAX_N = 1000  # a search that gets here means the setup is wrong, not that the plan is


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plan")
    write_store(root, synthetic_trials(seeds=range(3), noise=2.0, rng_seed=7))
    return root


def _rss(x: np.ndarray, y: np.ndarray) -> float:
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(((y - x @ beta) ** 2).sum())


@dataclass(frozen=True)
class Expected:
    sigma: float
    params: int
    f: float
    cells: int
    current_power: float
    seeds: int
    power_below: float  # the power at seeds - 1 (nan where that design has no residual df)


def _expected(
    trials: pd.DataFrame, metric: str, factor: str, delta: float, power: float, alpha: float
) -> Expected:
    terms = MODELS[metric]
    x, _ = sum_coded_design(trials, terms)
    params = int(np.linalg.matrix_rank(x))
    sigma = math.sqrt(_rss(x, trials[metric].to_numpy(float)) / (len(trials) - params))
    grid = trials[list(FACTORS)].drop_duplicates().reset_index(drop=True)
    first, second = sorted(trials[factor].astype(str).unique())[:2]

    def power_of(rows: pd.DataFrame) -> tuple[float, float]:
        """(power, noncentrality) of the F test of `factor` in the model fitted to `rows`."""
        full, owner = sum_coded_design(rows, terms)
        reduced = full[:, [i for i, t in enumerate(owner) if t != (factor,)]]
        # Cohen's pattern: two level means delta apart, every other level at the grand mean.
        level = rows[factor].astype(str).to_numpy()
        means = delta / 2 * ((level == first).astype(float) - (level == second))
        noncentrality = (_rss(reduced, means) - _rss(full, means)) / sigma**2
        rank = int(np.linalg.matrix_rank(full))
        df1, df2 = rank - int(np.linalg.matrix_rank(reduced)), len(rows) - rank
        if df2 <= 0:
            return math.nan, noncentrality
        critical = stats.f.ppf(1 - alpha, df1, df2)
        return float(1 - stats.ncf.cdf(critical, df1, df2, noncentrality)), noncentrality

    current, noncentrality = power_of(trials)
    below = math.nan
    for n in range(1, MAX_N):
        reached, _ = power_of(grid.loc[grid.index.repeat(n)])
        if reached >= power:  # nan (no residual df) is never enough
            break
        below = reached
    else:
        raise AssertionError(f"no n below {MAX_N} reaches power {power}")
    # Cohen's f is the noncentrality per trial, square-rooted.
    f = math.sqrt(noncentrality / len(trials))
    return Expected(sigma, params, f, len(grid), current, n, below)


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
    want = _expected(trials, col.TEST_RE, factor, delta, power=0.8, alpha=0.01)
    # the search must have crossed the target at a design that has residual df, so that the
    # seeds asked for are the smallest enough, not merely the first that can be tested
    assert want.power_below < 0.8
    assert plan["sigma"] == pytest.approx(want.sigma, rel=1e-9)
    assert plan["params"] == want.params and plan["cells"] == want.cells
    assert plan["f"] == pytest.approx(want.f, rel=1e-9)
    assert plan["current_power"] == pytest.approx(want.current_power, rel=1e-9)
    assert plan["seeds_per_cell"] == want.seeds
    assert plan["trials_needed"] == want.seeds * want.cells


def test_seeds_per_cell_when_the_model_has_fewer_parameters_than_cells(store: Path) -> None:
    # test_neg_elbo's model, prior + encoder * layer: fewer parameters than the 24 cells, so the
    # residual df is N minus those, not N - 24.
    trials = pd.read_parquet(store / "trials")
    want = _expected(trials, col.TEST_NEG_ELBO, col.ENCODER, 1.5, power=0.8, alpha=0.01)
    assert want.params < want.cells
    plan = plan_seeds(trials, col.TEST_NEG_ELBO, col.ENCODER, 1.5)
    assert plan.params == want.params and plan.sigma == pytest.approx(want.sigma, rel=1e-9)
    assert plan.f == pytest.approx(want.f, rel=1e-9)
    assert plan.current_power == pytest.approx(want.current_power, rel=1e-9)
    assert plan.seeds_per_cell == want.seeds
    assert plan.trials_needed == want.seeds * want.cells


def test_plan_with_other_power_and_alpha_and_the_sentence(store: Path) -> None:
    trials = pd.read_parquet(store / "trials")
    ours = plan_seeds(trials, col.TEST_RE, col.ENCODER, 2.0, power=0.95, alpha=0.05)
    want = _expected(trials, col.TEST_RE, col.ENCODER, 2.0, power=0.95, alpha=0.05)
    assert ours.seeds_per_cell == want.seeds
    assert ours.current_power == pytest.approx(want.current_power, rel=1e-9)
    result = CliRunner().invoke(
        cli.app, ["plan", str(store), "--metric", col.TEST_RE, "--factor", col.ENCODER,
                  "--delta", "2", "--power", "0.95", "--alpha", "0.05"]
    )  # fmt: skip
    assert result.exit_code == 0 and f"{want.seeds} seeds per cell" in result.output


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
