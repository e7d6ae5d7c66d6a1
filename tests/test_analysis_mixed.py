"""Seeds as a random effect (rlv/analysis/mixed.py): REML's variance components against the
ANOVA (expected mean squares) estimator, computed here with numpy, which REML equals for a
balanced design; the boundary (no seed variance) and degenerate models get a note, not a warning.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# pytest puts tests/ on sys.path (no __init__.py there): the helpers import by name.
from analysis_helpers import synthetic_trials, write_store

from rlv import columns as col
from rlv.analysis import fit_models, load_store
from rlv.analysis.mixed import random_effects_table

CELL = [col.ENCODER, col.LAYER, col.PRIOR]
GRID = {"encoders": ("L", "NL", "RKS"), "layers": ("fc", "conv"), "priors": ("normal", "flow6")}


def _seed_effects(seeds: int, sd: float, rng_seed: int) -> dict[int, float]:
    return dict(enumerate(np.random.default_rng(rng_seed).normal(0.0, sd, seeds)))


def _store(tmp_path: Path, trials: pd.DataFrame) -> pd.DataFrame:
    write_store(tmp_path / "store", trials)
    return load_store(tmp_path / "store").trials


def _dummies(labels: pd.Series) -> np.ndarray:
    """One 0/1 column per level (with an intercept the design is rank-deficient: lstsq copes)."""
    return pd.get_dummies(labels.astype(str)).to_numpy(float)


def _rss_rank(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    return float(resid @ resid), int(np.linalg.matrix_rank(x))


def _cells(trials: pd.DataFrame, factors: list[str]) -> pd.Series:
    return trials[factors].astype(str).agg("/".join, axis=1)


# The thesis's fixed parts (design.py), as 0/1 columns: the model's column space is all REML sees.
DESIGNS = {
    col.TEST_RE: lambda t: [_dummies(_cells(t, CELL))],  # encoder * layer * prior
    col.TEST_NEG_ELBO: lambda t: [_dummies(_cells(t, CELL[:2])), _dummies(t[col.PRIOR])],
    col.EPOCH_TIME_S: lambda t: [_dummies(t[f]) for f in CELL],  # main effects
}


def _fixed_design(trials: pd.DataFrame, metric: str) -> np.ndarray:
    return np.column_stack([np.ones(len(trials)), *DESIGNS[metric](trials)])


def _ems_estimates(trials: pd.DataFrame, metric: str) -> tuple[float, float]:
    """(var_seed, var_residual) by expected mean squares in a balanced design: with c trials per
    seed, E[MS_seed] = var_residual + c var_seed and E[MS_E] = var_residual."""
    y = trials[metric].to_numpy(float)
    seeds = trials[col.SEED].to_numpy()
    design = np.column_stack([_fixed_design(trials, metric), _dummies(trials[col.SEED])])
    rss, rank = _rss_rank(design, y)
    ms_error = rss / (len(y) - rank)
    levels = np.unique(seeds)
    per_seed = len(y) // len(levels)
    seed_means = np.array([y[seeds == s].mean() for s in levels])
    ms_seed = per_seed * float(((seed_means - y.mean()) ** 2).sum()) / (len(levels) - 1)
    return (ms_seed - ms_error) / per_seed, ms_error


def _rows(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = table[table["metric"] == metric].set_index("component")
    assert list(rows.index) == ["seed", "residual"], rows
    return rows


def _quiet(call, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Run `call` with every warning an error: the analysis records notes instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return call(*args, **kwargs)


@pytest.mark.parametrize("metric", list(DESIGNS))
def test_reml_equals_the_expected_mean_squares_estimator(metric: str, tmp_path: Path) -> None:
    """Each of the thesis's three model kinds, on a balanced design with planted seed effects."""
    trials = synthetic_trials(seeds=range(6), seed_effect=_seed_effects(6, 2.0, 5), **GRID)  # type: ignore[arg-type]
    loaded = _store(tmp_path, trials)
    rows = _rows(_quiet(random_effects_table, loaded, [metric]), metric)
    var_seed, var_resid = _ems_estimates(loaded, metric)
    assert var_seed > 0  # off the boundary, where REML = EMS
    assert rows.loc["seed", "variance"] == pytest.approx(var_seed, rel=1e-6)
    assert rows.loc["residual", "variance"] == pytest.approx(var_resid, rel=1e-6)
    icc = var_seed / (var_seed + var_resid)
    assert rows.loc["seed", "share"] == pytest.approx(icc, rel=1e-6)
    assert rows["share"].sum() == pytest.approx(1.0)
    assert (rows["note"].fillna("") == "").all() and (rows["seeds"] == 6).all()
    assert rows["model"].iloc[0].endswith("+ (1 | seed)")


def test_seed_variance_on_its_boundary_is_zero_with_a_note(tmp_path: Path) -> None:
    """Seed means made equal: MS_seed = 0 < MS_E, so REML's seed variance is 0 and the residual
    variance that of the model without seeds (its MSE, computed here)."""
    trials = synthetic_trials(seeds=range(4), seed_effect=_seed_effects(4, 2.0, 1), **GRID)  # type: ignore[arg-type]
    seed_mean = trials.groupby(col.SEED)[col.TEST_RE].transform("mean")
    trials[col.TEST_RE] = trials[col.TEST_RE] - seed_mean + trials[col.TEST_RE].mean()
    loaded = _store(tmp_path, trials)
    rows = _rows(_quiet(random_effects_table, loaded, [col.TEST_RE]), col.TEST_RE)
    y = loaded[col.TEST_RE].to_numpy(float)
    rss, rank = _rss_rank(_fixed_design(loaded, col.TEST_RE), y)
    assert rows.loc["seed", "variance"] == 0.0 and rows.loc["seed", "share"] == 0.0
    assert rows.loc["residual", "variance"] == pytest.approx(rss / (len(y) - rank), rel=1e-9)
    assert rows["note"].str.contains("boundary (0)", regex=False).all()


def test_unbalanced_data_are_fitted_and_fits_are_reused(tmp_path: Path) -> None:
    """Trials missing: REML still fits (no EMS identity to check), shares in [0, 1], no warning;
    the table from `fit_models`' fits equals the one from results."""
    trials = synthetic_trials(seeds=range(5), seed_effect=_seed_effects(5, 1.5, 2), **GRID)  # type: ignore[arg-type]
    trials = trials.drop(index=[0, 7, 31]).reset_index(drop=True)
    write_store(tmp_path / "store", trials)
    results = load_store(tmp_path / "store")
    from_fits = _quiet(random_effects_table, fit_models(results))
    from_results = _quiet(random_effects_table, results)
    pd.testing.assert_frame_equal(from_fits, from_results)
    assert from_fits["share"].between(0.0, 1.0).all()
    assert set(from_fits["component"]) == {"seed", "residual"}
    assert (from_fits["n"] == len(trials)).all()


def test_degenerate_models_get_rows_with_a_note(tmp_path: Path) -> None:
    """A constant metric, one fixed by the seed alone (no residual variance once the seed is in
    the model) and a single seed: NaN variances and a note, never a warning or an error."""
    trials = synthetic_trials(seeds=range(3), **GRID)  # type: ignore[arg-type]
    trials[col.TEST_RE] = 42.0
    trials[col.FID] = 100.0 + 3.0 * trials[col.SEED]
    loaded = _store(tmp_path, trials)
    table = _quiet(random_effects_table, loaded, [col.TEST_RE, col.FID, col.TEST_NEG_ELBO])
    constant = _rows(table, col.TEST_RE)
    assert constant["variance"].isna().all() and constant["note"].str.contains("constant metric").all()
    by_seed = _rows(table, col.FID)
    assert by_seed["variance"].isna().all()
    assert by_seed["note"].str.contains("no residual variance").all()
    usual = _rows(table, col.TEST_NEG_ELBO)
    assert usual["variance"].notna().all()
    one_seed = _store(tmp_path / "one", synthetic_trials(seeds=range(1), **GRID))  # type: ignore[arg-type]
    rows = _rows(_quiet(random_effects_table, one_seed, [col.TEST_NEG_ELBO]), col.TEST_NEG_ELBO)
    assert rows["variance"].isna().all() and rows["note"].str.contains("one seed").all()
    assert math.isnan(rows.loc["seed", "share"])
