"""The analysis beyond the thesis: gap signs, seed blocks, effect-size intervals, Tukey intervals,
orderings of every factor, and designs of any sweep.

Every number is checked against a computation written here: least squares with numpy on
indicator matrices built by hand, root-finding on scipy's noncentral F, scipy's studentized range.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

# pytest puts tests/ on sys.path (no __init__.py there): the helpers import by name.
from analysis_helpers import ENCODER_EFFECT, synthetic_trials, write_store
from scipy import stats

from rlv import columns as col
from rlv.analysis import (
    anova_table,
    cell_table,
    compare_orderings,
    fit_models,
    load_store,
    ordering_table,
    posthoc_table,
)
from rlv.errors import RlvError

SEED_EFFECT = {0: -1.5, 1: 0.0, 2: 1.5, 3: 0.5, 4: -0.5}


@pytest.fixture(scope="module")
def blocked(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The 4 x 2 x 3 x 5 grid with a planted seed (block) effect, loaded from real Parquet."""
    root = tmp_path_factory.mktemp("blocked")
    write_store(root, synthetic_trials(seed_effect=SEED_EFFECT, rng_seed=5))
    return load_store(root).trials


def _indicators(frame: pd.DataFrame, factors: list[str]) -> np.ndarray:
    """One 0/1 column per observed combination of `factors` (the cell means' column space)."""
    keys = frame[factors].astype(str).agg("|".join, axis=1)
    return (keys.to_numpy()[:, None] == np.unique(keys)[None, :]).astype(float)


def _rss(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    resid = y - x @ beta
    return float(resid @ resid), len(y) - int(np.linalg.matrix_rank(x))


def _space(frame: pd.DataFrame, crossed: list[str], main: list[str], seed: bool) -> np.ndarray:
    """Column space of `crossed` fully crossed + `main` main effects (+ seed as a block)."""
    parts = [_indicators(frame, crossed)]
    parts += [_indicators(frame, [m])[:, 1:] for m in main]  # one level absorbed by the cells
    if seed:
        parts.append(_indicators(frame, [col.SEED])[:, 1:])
    return np.hstack(parts)


MODELS = {  # metric -> (crossed, main) of the thesis's model
    col.TEST_RE: ([col.ENCODER, col.LAYER, col.PRIOR], []),
    col.TEST_NEG_ELBO: ([col.ENCODER, col.LAYER], [col.PRIOR]),
    col.GAP_RE: ([col.ENCODER], [col.LAYER, col.PRIOR]),
}


def _row(anova: pd.DataFrame, metric: str, term: str, block: str) -> pd.Series:
    rows = anova[(anova["metric"] == metric) & (anova["term"] == term) & (anova["block"] == block)]
    assert len(rows) == 1, rows
    return rows.iloc[0]


# --- 1. overfitting gaps in the thesis's sign --------------------------------------------------


def test_gaps_are_derived_from_train_and_test_in_the_thesis_sign(tmp_path: Path) -> None:
    trials = synthetic_trials(seeds=range(2))
    no_gaps = trials.drop(columns=[col.GAP_NEG_ELBO, col.GAP_RE, col.GAP_RT])  # SPEC's columns
    write_store(tmp_path / "spec", no_gaps)
    old = trials.assign(  # an older store: train - test, the opposite sign
        **{
            col.GAP_NEG_ELBO: trials[col.TRAIN_NEG_ELBO] - trials[col.TEST_NEG_ELBO],
            col.GAP_RE: trials[col.TRAIN_RE] - trials[col.TEST_RE],
            col.GAP_RT: trials[col.TRAIN_RT] - trials[col.TEST_RT],
        }
    )
    write_store(tmp_path / "old", old)
    for name in ("spec", "old"):
        loaded = load_store(tmp_path / name).trials.sort_values(col.TRIAL_ID)
        ref = trials.sort_values(col.TRIAL_ID)
        np.testing.assert_allclose(
            loaded[col.GAP_NEG_ELBO], ref[col.TEST_NEG_ELBO] - ref[col.TRAIN_NEG_ELBO]
        )
        np.testing.assert_allclose(loaded[col.GAP_RE], ref[col.TEST_RE] - ref[col.TRAIN_RE])
        np.testing.assert_allclose(loaded[col.GAP_RT], ref[col.TRAIN_RT] - ref[col.TEST_RT])
    anova = anova_table(load_store(tmp_path / "spec"))
    assert {col.GAP_NEG_ELBO, col.GAP_RE, col.GAP_RT} <= set(anova["metric"])  # all 8 models
    # A DataFrame passed directly is read the same way.
    direct = anova_table(no_gaps, [col.GAP_RT])
    assert direct["F"].notna().all()


def test_a_stored_gap_without_its_train_column_is_dropped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trials = synthetic_trials(seeds=range(2))
    # An older store without train_re: its gap_re (here in the old sign, train - test) cannot
    # be checked, so it must not reach the analysis; the other gaps are re-derived.
    old = trials.assign(**{col.GAP_RE: trials[col.TRAIN_RE] - trials[col.TEST_RE]})
    write_store(tmp_path, old.drop(columns=[col.TRAIN_RE]))
    with caplog.at_level("WARNING", logger="rlv.analysis.gaps"):
        loaded = load_store(tmp_path).trials
    assert col.GAP_RE not in loaded
    assert any(col.GAP_RE in r.message and col.TRAIN_RE in r.message for r in caplog.records)
    ref = trials.set_index(col.TRIAL_ID).loc[loaded[col.TRIAL_ID]]
    np.testing.assert_allclose(
        loaded[col.GAP_RT].to_numpy(), (ref[col.TRAIN_RT] - ref[col.TEST_RT]).to_numpy()
    )
    assert col.GAP_RE not in set(anova_table(loaded)["metric"])


def test_a_gap_with_a_planted_overfit_is_positive(tmp_path: Path) -> None:
    trials = synthetic_trials(seeds=range(3))
    fc = trials[col.LAYER] == "fc"
    trials.loc[fc, col.TEST_RE] = trials.loc[fc, col.TRAIN_RE] + 12.0  # fc overfits: test worse
    trials.loc[~fc, col.TEST_RE] = trials.loc[~fc, col.TRAIN_RE] + 1.0
    write_store(tmp_path, trials)
    loaded = load_store(tmp_path).trials
    means = loaded.groupby(col.LAYER, observed=True)[col.GAP_RE].mean()
    assert means["fc"] == pytest.approx(12.0) and means["conv"] == pytest.approx(1.0)
    orderings = compare_orderings(ordering_table(posthoc_table(loaded, [col.GAP_RE])))
    layer = orderings.set_index("factor").loc[col.LAYER]
    assert layer["ordering"] == "conv < fc" and layer["thesis_ordering"] == "conv < fc"
    assert layer["matches_thesis"]


# --- 2. seed blocks ----------------------------------------------------------------------------


@pytest.mark.parametrize("metric", list(MODELS))
def test_seed_block_from_projections(blocked: pd.DataFrame, metric: str) -> None:
    crossed, main = MODELS[metric]
    y = blocked[metric].to_numpy(float)
    rss_u, df_u = _rss(_space(blocked, crossed, main, seed=False), y)
    rss_b, df_b = _rss(_space(blocked, crossed, main, seed=True), y)
    anova = anova_table(blocked, [metric])
    seed = _row(anova, metric, col.SEED, "seed")
    assert seed["df"] == 4 and seed["resid_df"] == df_b == df_u - 4
    assert seed["ss"] == pytest.approx(rss_u - rss_b, rel=1e-9)
    assert seed["F"] == pytest.approx(((rss_u - rss_b) / 4) / (rss_b / df_b), rel=1e-9)
    # the planted block effect; a gap (test - train) cancels it, as a shared split would
    assert seed["significant"] == (metric != col.GAP_RE)
    # share of residual SS (the seed row's partial eta^2) and of residual variance (mean square)
    assert seed["partial_eta_sq"] == pytest.approx((rss_u - rss_b) / rss_u, rel=1e-9)
    blocked_rows = anova[anova["block"] == "seed"]
    assert blocked_rows["model"].str.endswith("+ seed (block)").all()
    assert blocked_rows["block_removes"].to_numpy() == pytest.approx(
        1.0 - (rss_b / df_b) / (rss_u / df_u), rel=1e-9
    )
    assert anova[anova["block"] == ""]["block_removes"].isna().all()
    # The blocked model tests the design's terms against the smaller error term.
    encoder_u, encoder_b = (_row(anova, metric, col.ENCODER, b) for b in ("", "seed"))
    assert encoder_b["ss"] == pytest.approx(encoder_u["ss"], rel=1e-9)  # balanced: orthogonal
    assert encoder_b["F"] == pytest.approx(
        (encoder_u["ss"] / 3) / (rss_b / df_b), rel=1e-9
    )


def test_no_block_without_seeds_to_block(tmp_path: Path) -> None:
    write_store(tmp_path, synthetic_trials(seeds=range(1)))
    assert (anova_table(load_store(tmp_path), [col.GAP_RE])["block"] == "").all()


# --- 3. effect sizes ---------------------------------------------------------------------------


def _lambda_root(f_obs: float, df1: int, df2: int, target: float) -> float:
    """Bisection on lambda for ncf.cdf(F; df1, df2, lambda) = target (0 when below at 0)."""
    if stats.f.cdf(f_obs, df1, df2) <= target:
        return 0.0
    low, high = 0.0, 1.0
    while stats.ncf.cdf(f_obs, df1, df2, high) > target:
        high *= 2.0
    for _ in range(200):
        middle = (low + high) / 2.0
        if stats.ncf.cdf(f_obs, df1, df2, middle) > target:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def test_partial_eta_squared_and_its_interval(blocked: pd.DataFrame) -> None:
    metric = col.TEST_NEG_ELBO
    crossed, main = MODELS[metric]
    y = blocked[metric].to_numpy(float)
    rss, df_error = _rss(_space(blocked, crossed, main, seed=False), y)
    anova = anova_table(blocked, [metric])
    rows = anova[anova["block"] == ""]
    assert len(rows) == 4
    for row in rows.itertuples():
        assert row.partial_eta_sq == pytest.approx(row.ss / (row.ss + rss), rel=1e-9)
        f_obs = (row.ss / row.df) / (rss / df_error)
        lam_low = _lambda_root(f_obs, row.df, df_error, 0.975)
        lam_high = _lambda_root(f_obs, row.df, df_error, 0.025)
        scale = row.df + df_error + 1
        assert row.eta_sq_lower == pytest.approx(lam_low / (lam_low + scale), abs=1e-6)
        assert row.eta_sq_upper == pytest.approx(lam_high / (lam_high + scale), abs=1e-6)
        assert row.eta_sq_lower <= row.partial_eta_sq <= row.eta_sq_upper
    # A term with no effect (the planted data have no encoder x layer interaction): the lower
    # bound is 0 exactly when F is below the 97.5% point of the central F.
    inter = _row(anova, metric, "encoder:layer", "")
    below = stats.f.cdf(inter["F"], 3, df_error) <= 0.975
    assert (inter["eta_sq_lower"] == 0.0) == below
    assert anova["eta_sq_upper"].notna().all()


def test_tukey_intervals_from_the_studentized_range(blocked: pd.DataFrame) -> None:
    metric = col.TEST_RE
    crossed, main = MODELS[metric]
    y = blocked[metric].to_numpy(float)
    rss, df_error = _rss(_space(blocked, crossed, main, seed=False), y)
    mse = rss / df_error
    posthoc = posthoc_table(blocked, [metric])
    assert set(posthoc["factor"]) == {col.ENCODER, col.LAYER, col.PRIOR}
    for factor, part in posthoc.groupby("factor"):
        k = blocked[factor].nunique()
        q = stats.studentized_range.ppf(0.99, k, df_error)
        means = blocked.groupby(factor, observed=True)[metric].mean()
        counts = blocked.groupby(factor, observed=True)[metric].size()
        assert len(part) == k * (k - 1) // 2
        for row in part.itertuples():
            diff = means[row.group2] - means[row.group1]
            half = q * np.sqrt(mse / 2 * (1 / counts[row.group1] + 1 / counts[row.group2]))
            assert row.meandiff == pytest.approx(diff, rel=1e-9)
            assert row.lower == pytest.approx(diff - half, rel=1e-6)
            assert row.upper == pytest.approx(diff + half, rel=1e-6)
            assert row.confidence == pytest.approx(0.99)
            assert row.reject == (not row.lower <= 0.0 <= row.upper)


# --- 4. orderings of every factor --------------------------------------------------------------


def test_orderings_of_encoder_layer_and_prior_against_the_thesis(blocked: pd.DataFrame) -> None:
    orderings = compare_orderings(ordering_table(posthoc_table(blocked, [col.FID, col.TEST_RE])))
    table = orderings.set_index(["metric", "factor"])
    assert set(table.index) == set(
        itertools.product([col.FID, col.TEST_RE], [col.ENCODER, col.LAYER, col.PRIOR])
    )
    # planted: prior flow6 < flow2 < normal (the thesis's FID ordering), layer fc < conv (the
    # thesis has conv < fc), encoder L < PNL < RKS < NL (the thesis's), prior on RE: the thesis
    # found no effect, we planted one.
    assert table.loc[(col.FID, col.PRIOR), "ordering"] == "flow6 < flow2 < normal"
    assert table.loc[(col.FID, col.PRIOR), "matches_thesis"]
    assert table.loc[(col.FID, col.LAYER), "thesis_ordering"] == "conv < fc"
    assert not table.loc[(col.FID, col.LAYER), "matches_thesis"]
    assert table.loc[(col.TEST_RE, col.ENCODER), "matches_thesis"]
    assert table.loc[(col.TEST_RE, col.PRIOR), "thesis_ordering"] == "normal & flow2 & flow6"
    assert not table.loc[(col.TEST_RE, col.PRIOR), "matches_thesis"]
    assert pd.isna(table.loc[(col.TEST_RE, col.LAYER), "thesis_ordering"])  # thesis: none


def test_orderings_are_compared_on_the_levels_both_have() -> None:
    # A sweep beyond the thesis: encoder PRKS added (planted above NL), priors normal, flow6 and
    # mog (planted: flow6 < normal < mog; flow2 never run). Gaps of 5+ noise sds: every pair
    # differs, so the measured orderings are known by construction.
    encoders = {**ENCODER_EFFECT, "PRKS": 20.0}
    priors = {"flow6": -6.0, "normal": 0.0, "mog": 5.0}
    trials = synthetic_trials(
        encoders=list(encoders), priors=list(priors), encoder_effect=encoders,
        prior_effect=priors, seeds=range(3), noise=0.2,
    )  # fmt: skip
    table = compare_orderings(
        ordering_table(posthoc_table(trials, [col.FID, col.TEST_RE]))
    ).set_index(["metric", "factor"])
    enc = table.loc[(col.FID, col.ENCODER)]
    assert enc["ordering"] == "L < PNL < RKS < NL < PRKS"
    assert enc["thesis_ordering"] == "L < PNL < RKS < NL"
    assert enc["matches_thesis"] and enc["left_out_levels"] == "PRKS"
    assert enc["compared_levels"] == "L, PNL, RKS, NL"
    prior = table.loc[(col.FID, col.PRIOR)]
    assert prior["ordering"] == "flow6 < normal < mog"
    assert prior["matches_thesis"]  # thesis flow6 < flow2 < normal, on flow6 and normal
    assert prior["compared_levels"] == "flow6, normal"
    assert prior["left_out_levels"] == "flow2, mog"
    # The thesis found no prior effect on RE (one group); ours separates flow6 from normal.
    assert table.loc[(col.TEST_RE, col.PRIOR), "matches_thesis"] == False  # noqa: E712
    # One shared level has no order: nothing to compare.
    two = synthetic_trials(
        priors=["normal", "mog"], prior_effect=priors, seeds=range(3), noise=0.2
    )
    prior = compare_orderings(
        ordering_table(posthoc_table(two, [col.FID], factor=col.PRIOR))
    ).iloc[0]
    assert prior["ordering"] == "normal < mog" and prior["thesis_ordering"] is not None
    assert pd.isna(prior["matches_thesis"]) and prior["compared_levels"] is None
    assert prior["left_out_levels"] == "flow2, flow6, mog"


# --- 6. any sweep's factors --------------------------------------------------------------------

LATENT = {8: 0.0, 16: 3.0, 32: 6.0}


@pytest.fixture(scope="module")
def latent(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """encoder x layer x prior x latent_dim (8/16/32) x 3 seeds, with a `factors` column."""
    root = tmp_path_factory.mktemp("latent")
    write_store(root, synthetic_trials(extra=(col.LATENT_DIM, LATENT), seeds=range(3)))
    return load_store(root).trials


def test_an_extra_factor_gets_the_full_factorial_on_the_test_metrics(latent: pd.DataFrame) -> None:
    anova = anova_table(latent)
    thesis = anova[anova["block"] == ""]
    assert set(thesis["metric"]) == {col.TEST_NEG_ELBO, col.TEST_RT, col.TEST_RE, col.FID}
    factors = [col.ENCODER, col.LAYER, col.PRIOR, col.LATENT_DIM]
    expected = {
        ":".join(t) for k in range(1, 5) for t in itertools.combinations(factors, k)
    }
    n, cells = len(latent), 4 * 2 * 3 * 3
    for _metric, rows in thesis.groupby("metric"):
        assert set(rows["term"]) == expected
        assert (rows["resid_df"] == n - cells).all()
        assert (rows["model"] == "encoder * layer * prior * latent_dim").all()
    # The latent_dim main effect's SS by hand (balanced: n per level x squared deviations).
    y = latent[col.TEST_RE]
    level_means = latent.groupby(col.LATENT_DIM)[col.TEST_RE].transform("mean")
    ss = float(((level_means - y.mean()) ** 2).sum())
    assert _row(anova, col.TEST_RE, col.LATENT_DIM, "")["ss"] == pytest.approx(ss, rel=1e-9)
    # Numeric levels are categories in numeric order; the planted ordering is found.
    orderings = ordering_table(posthoc_table(latent, [col.TEST_RE], factor=col.LATENT_DIM))
    assert orderings["ordering"].tolist() == ["8 < 16 < 32"]
    # Tables lay the extra factor out as a row level.
    table = cell_table(latent, col.TEST_RE)
    assert table.index.names == [col.LAYER, col.PRIOR, col.LATENT_DIM] and len(table) == 18


def test_a_thesis_grid_with_a_factors_column_gets_exactly_the_thesis_models(
    tmp_path: Path,
) -> None:
    plain = synthetic_trials(seeds=range(2), rng_seed=2)
    listed = plain.assign(**{col.SWEEP_FACTORS: "encoder,layer,prior,latent_dim"})  # one level
    write_store(tmp_path / "plain", plain)
    write_store(tmp_path / "listed", listed)
    ours = anova_table(load_store(tmp_path / "listed"))
    pd.testing.assert_frame_equal(ours, anova_table(load_store(tmp_path / "plain")))
    assert len(set(ours["metric"])) == 8
    bad = plain.assign(**{col.SWEEP_FACTORS: "encoder,init"})
    write_store(tmp_path / "bad", bad)
    with pytest.raises(RlvError, match="factor 'init' in column 'factors' but have no column"):
        fit_models(load_store(tmp_path / "bad"))
