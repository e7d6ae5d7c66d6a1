"""Robust summaries (rlv/analysis/robust.py): each cell's IQM against numpy's mean of the sorted,
trimmed sample; its bootstrap interval against the exact bootstrap distribution, enumerated here;
the probability of improvement against a count over pairs of runs written here, on the metric's
own direction, ties counting 1/2; seeded, and each metric's numbers independent of the others.
"""

from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# pytest puts tests/ on sys.path (no __init__.py there): the helpers import by name.
from analysis_helpers import synthetic_trials, write_store

from rlv import columns as col
from rlv.analysis import load_store
from rlv.analysis.resampling import Resampling
from rlv.analysis.robust import robust_table
from rlv.errors import RlvError

CELL = [col.ENCODER, col.LAYER, col.PRIOR]
GRID = {"encoders": ("L", "PNL", "NL"), "layers": ("fc", "conv"), "priors": ("normal", "flow6")}


def _loaded(tmp_path: Path, trials: pd.DataFrame) -> pd.DataFrame:
    write_store(tmp_path / "store", trials)
    return load_store(tmp_path / "store").trials


def _table(trials: pd.DataFrame, metrics: list[str], **settings: int) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # notes, never warnings
        return robust_table(trials, metrics, Resampling(**settings))


def _trimmed_mean(values: np.ndarray) -> float:
    """The IQM by hand: sort, drop the lowest and highest quarter (floor of n/4 each), average."""
    cut = len(values) // 4
    ordered = np.sort(values)
    return float(ordered[cut : len(values) - cut].mean())


def _iqms(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = table[(table["metric"] == metric) & (table["statistic"] == "iqm")]
    return rows.set_index(CELL)


def _pairs(table: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = table[(table["metric"] == metric) & (table["statistic"] == "probability_of_improvement")]
    return rows.set_index(["factor", "level_a", "level_b"])


@pytest.mark.parametrize("seeds", [5, 8, 9])
def test_iqm_is_the_trimmed_mean(seeds: int, tmp_path: Path) -> None:
    trials = _loaded(tmp_path, synthetic_trials(seeds=range(seeds), **GRID))  # type: ignore[arg-type]
    table = _table(trials, [col.TEST_RE])
    iqms = _iqms(table, col.TEST_RE)
    assert len(iqms) == 3 * 2 * 2
    for key, cell in trials.groupby(CELL, observed=True):
        row = iqms.loc[tuple(str(k) for k in key)]
        values = cell[col.TEST_RE].to_numpy(float)
        assert row["value"] == pytest.approx(_trimmed_mean(values), rel=1e-12)
        assert row["n"] == seeds and row["cells"] == 1 and row["note"] == ""
        assert values.min() <= row["lower"] <= row["value"] <= row["upper"] <= values.max()


def test_iqm_interval_matches_the_exact_bootstrap_distribution(tmp_path: Path) -> None:
    """Five seeds: the 5^5 resamples are few enough to enumerate, so the bootstrap percentiles
    are known exactly; 4000 random resamples put the interval's ends between the exact 1% and
    5% (95% and 99%) quantiles."""
    trials = _loaded(tmp_path, synthetic_trials(seeds=range(5), **GRID))  # type: ignore[arg-type]
    iqms = _iqms(_table(trials, [col.FID], resamples=4000, seed=11), col.FID)
    for key, cell in trials.groupby(CELL, observed=True):
        values = cell[col.FID].to_numpy(float)
        every = np.array(list(itertools.product(values, repeat=len(values))))  # (3125, 5)
        exact = np.sort(every, axis=1)[:, 1:4].mean(axis=1)  # the IQM of 5: the middle three
        row = iqms.loc[tuple(str(k) for k in key)]
        assert np.quantile(exact, 0.01) <= row["lower"] <= np.quantile(exact, 0.05)
        assert np.quantile(exact, 0.95) <= row["upper"] <= np.quantile(exact, 0.99)


def _improvement_by_hand(
    trials: pd.DataFrame, metric: str, factor: str, a: str, b: str, lower_better: bool
) -> tuple[float, int]:
    """Per cell of the other factors: the share of (run at a, run at b) pairs where a's run is
    better (ties 1/2); averaged over the cells holding both. Also the number of such cells."""
    others = [f for f in CELL if f != factor]
    shares = []
    measured = trials[trials[metric].notna()]
    for _, cell in measured.groupby(others, observed=True):
        runs_a = cell.loc[cell[factor].astype(str) == a, metric].to_numpy(float)
        runs_b = cell.loc[cell[factor].astype(str) == b, metric].to_numpy(float)
        if not len(runs_a) or not len(runs_b):
            continue
        score = 0.0
        for x in runs_a:
            for y in runs_b:
                if x == y:
                    score += 0.5
                elif (x < y) == lower_better:
                    score += 1.0
        shares.append(score / (len(runs_a) * len(runs_b)))
    return float(np.mean(shares)), len(shares)


@pytest.mark.parametrize(("metric", "lower_better"), [(col.TEST_RE, True), (col.TEST_RT, False)])
def test_probability_of_improvement_counts_pairs_in_matched_cells(
    metric: str, lower_better: bool, tmp_path: Path
) -> None:
    """Noise as large as the encoder gaps, values rounded so that runs tie: P(a better than b)
    for every pair of every ordered factor, better on the metric's own direction."""
    raw = synthetic_trials(
        seeds=range(4), encoder_effect={"L": 0.0, "PNL": 0.5, "NL": 1.0}, noise=1.0, **GRID
    )  # type: ignore[arg-type]
    raw[metric] = raw[metric].round(0)  # ties
    trials = _loaded(tmp_path, raw)
    pairs = _pairs(_table(trials, [metric]), metric)
    expected_pairs = {
        (col.ENCODER, "L", "PNL"), (col.ENCODER, "L", "NL"), (col.ENCODER, "PNL", "NL"),
        (col.LAYER, "fc", "conv"), (col.PRIOR, "normal", "flow6"),
    }  # fmt: skip
    assert set(pairs.index) == expected_pairs
    assert (pairs["better"] == ("lower" if lower_better else "higher")).all()
    for factor, a, b in expected_pairs:
        value, cells = _improvement_by_hand(trials, metric, factor, a, b, lower_better)
        row = pairs.loc[(factor, a, b)]
        assert row["value"] == pytest.approx(value, abs=1e-12)
        assert row["cells"] == cells and row["n"] == cells * 2 * 4
        assert 0.0 <= row["lower"] <= row["upper"] <= 1.0
    # A planted gap of 10 noise sds: the better level wins every pair, whatever the direction.
    clear = _loaded(tmp_path / "clear", synthetic_trials(seeds=range(3), **GRID))  # type: ignore[arg-type]
    wins = _pairs(_table(clear, [metric]), metric).loc[(col.ENCODER, "L", "NL")]
    assert wins["value"] == (1.0 if lower_better else 0.0)


def test_seeded_and_independent_of_the_other_metrics(tmp_path: Path) -> None:
    trials = _loaded(tmp_path, synthetic_trials(seeds=range(6), **GRID))  # type: ignore[arg-type]
    both = _table(trials, [col.TEST_RE, col.FID], resamples=500, seed=3)
    alone = _table(trials, [col.FID], resamples=500, seed=3)
    fid = both[both["metric"] == col.FID].reset_index(drop=True)
    pd.testing.assert_frame_equal(fid, alone.reset_index(drop=True))
    other = _table(trials, [col.FID], resamples=500, seed=4)
    assert not np.array_equal(other["lower"], alone["lower"], equal_nan=True)
    assert np.array_equal(other["value"], alone["value"], equal_nan=True)  # no resampling in it


def test_settings_are_checked() -> None:
    with pytest.raises(RlvError, match="resamples = 10 is not allowed"):
        Resampling(resamples=10)
    with pytest.raises(RlvError, match="permutations = 1.5 is not allowed"):
        Resampling(permutations=1.5)  # type: ignore[arg-type]


def test_degenerate_cells_get_rows_with_a_note(tmp_path: Path) -> None:
    """A cell with one seed, a constant metric, a pair of encoders no layer x prior cell holds
    both of: values where they exist, NaN and a note where not, never a warning."""
    raw = synthetic_trials(seeds=range(3), **GRID)  # type: ignore[arg-type]
    single = (raw[col.ENCODER] == "L") & (raw[col.LAYER] == "fc") & (raw[col.PRIOR] == "normal")
    raw.loc[single & (raw[col.SEED] > 0), col.TEST_RE] = np.nan  # one seed left in that cell
    raw[col.FID] = 7.0
    apart = ((raw[col.ENCODER] == "L") & (raw[col.LAYER] == "conv")) | (
        (raw[col.ENCODER] == "NL") & (raw[col.LAYER] == "fc")
    )
    raw.loc[apart, col.TEST_NEG_ELBO] = np.nan  # L only in fc, NL only in conv
    trials = _loaded(tmp_path, raw)
    table = _table(trials, [col.TEST_RE, col.FID, col.TEST_NEG_ELBO])
    one = _iqms(table, col.TEST_RE).loc[("L", "fc", "normal")]
    kept = raw.loc[single & (raw[col.SEED] == 0), col.TEST_RE].iloc[0]
    assert one["value"] == pytest.approx(kept) and np.isnan(one["lower"]) and np.isnan(one["upper"])
    assert one["n"] == 1 and "one seed" in one["note"]
    understated = _pairs(table, col.TEST_RE).loc[(col.ENCODER, "L", "PNL")]
    assert "one seed" in understated["note"]
    constant = table[table["metric"] == col.FID]
    assert (constant.loc[constant["statistic"] == "iqm", "value"] == 7.0).all()
    fid_pairs = constant[constant["statistic"] == "probability_of_improvement"]
    assert (fid_pairs[["value", "lower", "upper"]] == 0.5).all().all()
    apart_pair = _pairs(table, col.TEST_NEG_ELBO).loc[(col.ENCODER, "L", "NL")]
    assert np.isnan(apart_pair["value"]) and apart_pair["cells"] == 0
    assert "no cell of the other factors holds both levels" in apart_pair["note"]
    matched = _pairs(table, col.TEST_NEG_ELBO).loc[(col.ENCODER, "L", "PNL")]
    value, cells = _improvement_by_hand(trials, col.TEST_NEG_ELBO, col.ENCODER, "L", "PNL", True)
    assert matched["value"] == pytest.approx(value) and matched["cells"] == cells == 2
