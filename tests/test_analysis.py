"""rlv.analysis: loading a store, the ANOVA models, post hoc orderings, tables, thesis data.

Stores are real Parquet files written into tmp_path; metric values come from a planted additive
model plus seeded noise (tests/analysis_helpers.py), and expectations are computed independently.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# pytest puts tests/ on sys.path (no __init__.py there): the helpers import by name.
from analysis_helpers import (
    sum_coded_design,
    synthetic_epochs,
    synthetic_store,
    synthetic_trials,
    write_store,
)
from scipy import stats
from statsmodels.stats.multicomp import pairwise_tukeyhsd

from rlv import columns as col
from rlv.analysis import (
    Results,
    anova_table,
    cell_table,
    cell_tables,
    compare_orderings,
    count_table,
    fit_models,
    image_grid,
    interaction_plot,
    learning_curves,
    load_store,
    metrics_table,
    ordering_string,
    ordering_table,
    params_table,
    posthoc_table,
    residual_checks,
    thesis_comparison,
    thesis_table,
)
from rlv.analysis.load import categorize
from rlv.errors import RlvError
from rlv.store.store import Store

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def complete(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """A complete 4 x 2 x 3 x 5 MNIST store, loaded."""
    root = synthetic_store(tmp_path_factory.mktemp("complete"), images=True)
    return load_store(str(root)).trials


def _thesis(anova: pd.DataFrame) -> pd.DataFrame:
    """The thesis's models' rows (not their seed-blocked variants)."""
    return anova[anova["block"] == ""]


def _terms(anova: pd.DataFrame, metric: str) -> dict[str, tuple[int, int]]:
    rows = _thesis(anova)[lambda a: a["metric"] == metric]
    return {t: (d, r) for t, d, r in zip(rows["term"], rows["df"], rows["resid_df"], strict=True)}


# --- (i) the import rule -------------------------------------------------------------------------


def test_analysis_imports_neither_torch_nor_ray() -> None:
    code = (
        "import rlv.analysis, rlv.analysis.report, rlv.analysis.plots, sys; "
        "bad = [m for m in ('torch', 'ray') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# --- loading -------------------------------------------------------------------------------------


def test_load_store_types_levels_and_hidden_files(tmp_path: Path) -> None:
    trials = synthetic_trials(layers=("fc",), seeds=range(2))
    write_store(tmp_path, trials, "quick", synthetic_epochs(trials))
    # Temporary files of a writer in progress: garbage that must be skipped.
    (tmp_path / "trials" / "sweep=quick" / "_part-1.parquet").write_bytes(b"junk")
    (tmp_path / "trials" / "sweep=quick" / ".part-2.parquet.tmp").write_bytes(b"junk")
    results = load_store(tmp_path)
    assert len(results.trials) == len(trials)
    assert results.sweeps == ("quick",)
    assert results.trials[col.SWEEP].map(type).eq(str).all()
    encoder = results.trials[col.ENCODER].dtype
    assert isinstance(encoder, pd.CategoricalDtype) and encoder.ordered
    assert list(encoder.categories) == ["L", "PNL", "NL", "RKS"]
    assert list(results.trials[col.LAYER].cat.categories) == ["fc"]  # only levels present
    assert list(results.trials[col.PRIOR].cat.categories) == ["normal", "flow2", "flow6"]
    assert results.trials[col.SEED].dtype == np.int64
    assert len(results.epochs) == 3 * len(trials)
    assert isinstance(results.epochs[col.ENCODER].dtype, pd.CategoricalDtype)
    # The contract for users: pandas reads the store directly.
    assert len(pd.read_parquet(f"{tmp_path}/trials")) == len(trials)


def test_load_store_one_sweep_and_errors(tmp_path: Path) -> None:
    write_store(tmp_path, synthetic_trials(seeds=range(1)), "a")
    write_store(tmp_path, synthetic_trials(seeds=range(2)), "b")
    assert len(load_store(tmp_path, sweep="b").trials) == 48
    assert load_store(tmp_path).sweeps == ("a", "b")
    with pytest.raises(RlvError, match=r"unknown sweep 'c'.*a, b"):
        load_store(tmp_path, sweep="c")
    with pytest.raises(RlvError, match="store not found"):
        load_store(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RlvError, match="no trials table"):
        load_store(tmp_path / "empty")
    (tmp_path / "trials" / "sweep=b" / "part-9.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(RlvError, match=r"corrupt parquet file .*part-9\.parquet"):
        load_store(tmp_path, sweep="b")


def test_load_store_from_uris(tmp_path: Path) -> None:
    trials = synthetic_trials(seeds=range(1))
    write_store(tmp_path, trials, "uri")
    assert len(load_store(tmp_path.as_uri()).trials) == 24  # file:// through pyarrow
    fsspec = pytest.importorskip("fsspec")
    memory = fsspec.filesystem("memory")
    path = "/rlv-test/trials/sweep=mem/part-0.parquet"
    with memory.open(path, "wb") as handle:
        trials.to_parquet(handle, index=False)
    assert len(load_store("memory://rlv-test").trials) == 24  # other schemes through fsspec


def test_files_with_different_columns_are_read_with_one_schema(tmp_path: Path) -> None:
    """Batch files written by different rlv versions: one has a setting column the other lacks
    and an all-null (null-typed) fid where the other has doubles; every row keeps its values."""
    trials = synthetic_trials(seeds=range(2))  # 48 trials
    old, new = trials.iloc[:24].drop(columns=[col.LATENT_DIM]), trials.iloc[24:].copy()
    new[col.LATENT_DIM] = 32
    folder = tmp_path / "trials" / "sweep=mixed"
    folder.mkdir(parents=True)
    # the older file first (its schema would be the one read if a reader took the first file's)
    pq.write_table(pa.Table.from_pandas(old, preserve_index=False), folder / "batch-a.parquet")
    later = pa.Table.from_pandas(new, preserve_index=False)
    later = later.set_column(later.schema.get_field_index(col.FID), col.FID,
                             pa.nulls(len(new)))  # a flush where no trial computed FID
    assert later.schema.field(col.FID).type == pa.null()
    pq.write_table(later, folder / "batch-b.parquet")
    (folder / "notes.csv").write_text("a stray file: skipped, never parsed\n")

    for store in (tmp_path, Store.open(tmp_path)):  # a folder or an opened store
        loaded = load_store(store).trials.set_index(col.TRIAL_ID)
        assert len(loaded) == 48 and set(loaded[col.SWEEP]) == {"mixed"}
        latent = loaded[col.LATENT_DIM]
        assert latent[old[col.TRIAL_ID]].isna().all()
        assert (latent[new[col.TRIAL_ID]] == 32).all()
        fid = loaded[col.FID]
        np.testing.assert_allclose(fid[old[col.TRIAL_ID]], old[col.FID])
        assert fid[new[col.TRIAL_ID]].isna().all()
        np.testing.assert_allclose(loaded.loc[trials[col.TRIAL_ID], col.TEST_RE],
                                   trials[col.TEST_RE])


def test_a_corrupt_file_is_named_in_one_line(tmp_path: Path) -> None:
    trials = synthetic_trials(seeds=range(1))
    write_store(tmp_path, trials, "a", synthetic_epochs(trials))
    folder = tmp_path / "epochs" / "sweep=a"
    good = (folder / "part-0.parquet").read_bytes()
    # the footer intact (the schema reads) but the first page torn: found only by the scan
    torn = good[:4] + b"\xff" * 64 + good[68:]
    (folder / "part-1.parquet").write_bytes(torn)
    with pytest.raises(RlvError, match=r"corrupt parquet file .*sweep=a/part-1\.parquet") as bad:
        load_store(tmp_path)
    assert "\n" not in str(bad.value)
    (folder / "part-1.parquet").write_bytes(good[: len(good) // 2])  # cut short: no footer
    with pytest.raises(RlvError, match=r"corrupt parquet file .*sweep=a/part-1\.parquet") as cut:
        load_store(Store.open(tmp_path), sweep="a")
    assert "\n" not in str(cut.value)


# --- (a) degrees of freedom ----------------------------------------------------------------------


def test_anova_degrees_of_freedom_complete_design(complete: pd.DataFrame) -> None:
    anova = anova_table(complete)
    covariate = {
        "encoder": (3, 110),
        "layer": (1, 110),
        "prior": (2, 110),
        "encoder:layer": (3, 110),
    }
    assert _terms(anova, col.TEST_NEG_ELBO) == covariate
    assert _terms(anova, col.TEST_RT) == covariate
    factorial = {
        "encoder": (3, 96), "layer": (1, 96), "prior": (2, 96), "encoder:layer": (3, 96),
        "encoder:prior": (6, 96), "layer:prior": (2, 96), "encoder:layer:prior": (6, 96),
    }  # fmt: skip
    assert _terms(anova, col.TEST_RE) == factorial
    assert _terms(anova, col.FID) == factorial
    main = {"encoder": (3, 113), "layer": (1, 113), "prior": (2, 113)}
    for metric in (col.GAP_NEG_ELBO, col.GAP_RE, col.GAP_RT, col.EPOCH_TIME_S):
        assert _terms(anova, metric) == main
    assert anova["balanced"].all() and (anova["n"] == 120).all()
    assert (anova["missing_cells"] == 0).all() and (anova["note"] == "").all()


def test_anova_svhn_is_one_way_with_16_df(tmp_path: Path) -> None:
    write_store(tmp_path, synthetic_trials("svhn", layers=("conv",), priors=("flow6",)))
    anova = _thesis(anova_table(load_store(tmp_path)))
    assert set(anova["term"]) == {"encoder"}
    assert (anova["df"] == 3).all() and (anova["resid_df"] == 16).all()
    assert (anova["model"] == "encoder").all() and (anova["dataset"] == "svhn").all()


# --- (b) F and SS against a computation by hand --------------------------------------------------


def _effects(frame: pd.DataFrame, y: str) -> dict[str, np.ndarray]:
    """Classical balanced-design effects per row, from cell and marginal means."""
    grand = frame[y].mean()

    def m(*factors: str) -> np.ndarray:
        return frame.groupby(list(factors), observed=True)[y].transform("mean").to_numpy()

    e, la, p = col.ENCODER, col.LAYER, col.PRIOR
    return {
        "encoder": m(e) - grand,
        "layer": m(la) - grand,
        "prior": m(p) - grand,
        "encoder:layer": m(e, la) - m(e) - m(la) + grand,
        "encoder:prior": m(e, p) - m(e) - m(p) + grand,
        "layer:prior": m(la, p) - m(la) - m(p) + grand,
        "encoder:layer:prior": (
            m(e, la, p) - m(e, la) - m(e, p) - m(la, p) + m(e) + m(la) + m(p) - grand
        ),
    }


def test_anova_full_factorial_matches_hand_computation(complete: pd.DataFrame) -> None:
    y = complete[col.TEST_RE].to_numpy()
    effects = _effects(complete, col.TEST_RE)
    cell_mean = complete.groupby([col.ENCODER, col.LAYER, col.PRIOR], observed=True)[col.TEST_RE]
    ss_error = float(((y - cell_mean.transform("mean").to_numpy()) ** 2).sum())
    anova = _thesis(anova_table(complete, [col.TEST_RE])).set_index("term")
    for term, effect in effects.items():
        ss = float((effect**2).sum())  # = n per level x sum of squared marginal deviations
        df = anova.loc[term, "df"]
        assert anova.loc[term, "ss"] == pytest.approx(ss, rel=1e-9)
        assert anova.loc[term, "F"] == pytest.approx((ss / df) / (ss_error / 96), rel=1e-9)
        assert anova.loc[term, "partial_eta_sq"] == pytest.approx(ss / (ss + ss_error), rel=1e-9)
    assert anova.loc["encoder", "significant"]  # the planted effect is found


def test_anova_prior_covariate_model_matches_hand_computation(complete: pd.DataFrame) -> None:
    y = complete[col.TEST_NEG_ELBO].to_numpy()
    effects = _effects(complete, col.TEST_NEG_ELBO)
    terms = ("encoder", "layer", "prior", "encoder:layer")
    ss = {t: float((effects[t] ** 2).sum()) for t in terms}
    ss_error = float(((y - y.mean()) ** 2).sum()) - sum(ss.values())  # orthogonal when balanced
    anova = _thesis(anova_table(complete, [col.TEST_NEG_ELBO])).set_index("term")
    for term in terms:
        df = anova.loc[term, "df"]
        assert anova.loc[term, "ss"] == pytest.approx(ss[term], rel=1e-9)
        assert anova.loc[term, "F"] == pytest.approx((ss[term] / df) / (ss_error / 110), rel=1e-9)


# --- (c) post hoc orderings ----------------------------------------------------------------------


def test_posthoc_recovers_planted_ordering(complete: pd.DataFrame) -> None:
    posthoc = posthoc_table(complete, [col.TEST_RE, col.TEST_NEG_ELBO])
    # every factor of each model: 6 encoder pairs, 1 layer pair, 3 prior pairs
    assert len(posthoc) == 2 * (6 + 1 + 3) and (posthoc["error_df"].isin([96, 110])).all()
    orderings = ordering_table(posthoc).set_index(["metric", "factor"])["ordering"]
    for metric in (col.TEST_RE, col.TEST_NEG_ELBO):  # the planted effects (analysis_helpers)
        assert orderings[(metric, col.ENCODER)] == "L < PNL < RKS < NL"
        assert orderings[(metric, col.LAYER)] == "fc < conv"
        assert orderings[(metric, col.PRIOR)] == "flow6 < flow2 < normal"
    only = posthoc_table(complete, [col.TEST_RE], factor=col.ENCODER)
    assert set(only["factor"]) == {col.ENCODER} and len(only) == 6


def test_posthoc_joins_levels_with_equal_means(tmp_path: Path) -> None:
    planted = {"L": 0.0, "PNL": 6.0, "RKS": 6.0, "NL": 12.0}
    write_store(tmp_path, synthetic_trials(encoder_effect=planted, rng_seed=1))
    posthoc = posthoc_table(load_store(tmp_path), [col.TEST_RE, col.FID], factor=col.ENCODER)
    orderings = ordering_table(posthoc)
    for text in orderings["ordering"]:
        assert text in ("L < PNL & RKS < NL", "L < RKS & PNL < NL")


def test_ordering_string_notation() -> None:
    means = {"L": 1.0, "PNL": 2.0, "RKS": 2.1, "NL": 3.0}
    differ = [("L", "PNL"), ("L", "RKS"), ("L", "NL"), ("PNL", "NL"), ("RKS", "NL")]
    assert ordering_string(means, differ) == "L < PNL & RKS < NL"
    assert ordering_string(means, differ, descending=True) == "NL > RKS & PNL > L"
    assert ordering_string(means, []) == "L & PNL & RKS & NL"


def test_posthoc_one_way_equals_pairwise_tukeyhsd(tmp_path: Path) -> None:
    write_store(tmp_path, synthetic_trials("svhn", layers=("conv",), priors=("flow6",), noise=4.0))
    trials = load_store(tmp_path).trials
    ours = posthoc_table(trials, [col.FID]).set_index(["group1", "group2"])
    ref = pairwise_tukeyhsd(trials[col.FID].to_numpy(), trials[col.ENCODER].astype(str), 0.01)
    frame = ref.summary_frame()  # meandiff = group_t - group_c
    for g_t, g_c, diff, p_adj in zip(
        frame["group_t"], frame["group_c"], frame["meandiff"], frame["p-adj"], strict=True
    ):
        row = ours.loc[(g_c, g_t)] if (g_c, g_t) in ours.index else ours.loc[(g_t, g_c)]
        sign = 1.0 if (g_c, g_t) in ours.index else -1.0
        assert sign * row["meandiff"] == pytest.approx(diff, abs=1e-3)
        assert row["p_adj"] == pytest.approx(p_adj, abs=2e-3)


def test_residual_checks_table(complete: pd.DataFrame) -> None:
    checks = residual_checks(complete, [col.TEST_RE, col.GAP_RE])
    assert list(checks["levene_cells"]) == [24, 24]
    assert checks[["levene_p", "shapiro_p"]].notna().all().all()
    assert checks["normal"].all()  # Gaussian noise


def test_tables_take_precomputed_fits(complete: pd.DataFrame) -> None:
    """Fit once, use the fits for every table: the same numbers as fitting from the trials."""
    metrics = [col.TEST_RE, col.GAP_RE]
    fits = fit_models(complete, metrics)
    pd.testing.assert_frame_equal(anova_table(fits), anova_table(complete, metrics))
    assert [f.block for f in fits] == ["", "seed"] * 2  # each model, then its blocked variant
    pd.testing.assert_frame_equal(posthoc_table(fits), posthoc_table(complete, metrics))
    pd.testing.assert_frame_equal(residual_checks(fits), residual_checks(complete, metrics))
    only_re = anova_table(fits, [col.TEST_RE])  # `metrics` picks among the fits
    assert set(only_re["metric"]) == {col.TEST_RE}


# --- (d) incomplete data -------------------------------------------------------------------------


def test_unbalanced_and_incomplete_store_is_analysed_and_flagged(tmp_path: Path) -> None:
    trials = synthetic_trials()
    failed = trials[col.SEED].eq(4) & trials[col.ENCODER].isin(["NL"]) & trials[col.LAYER].eq("fc")
    write_store(tmp_path / "unbalanced", trials[~failed])
    anova = anova_table(load_store(tmp_path / "unbalanced"))
    assert (~anova["balanced"]).all() and (anova["n"] == 117).all()
    assert anova["note"].str.contains("unbalanced").all()
    assert _terms(anova, col.TEST_RE)["encoder"] == (3, 93)
    assert anova["F"].notna().all()
    # A whole cell missing (a sweep still running): the 3-way interaction is not estimable.
    empty_cell = (
        trials[col.ENCODER].eq("RKS") & trials[col.LAYER].eq("conv") & trials[col.PRIOR].eq("flow6")
    )
    write_store(tmp_path / "running", trials[~empty_cell])
    anova = anova_table(load_store(tmp_path / "running"))
    fid = _thesis(anova)[lambda a: a["metric"] == col.FID]
    assert (fid["missing_cells"] == 1).all() and not fid["balanced"].any()
    assert "encoder:layer:prior" not in set(fid["term"])
    assert fid["note"].str.contains("left out: encoder:layer:prior").all()
    assert fid["F"].notna().all()


def _least_squares_type3(
    rows: pd.DataFrame, metric: str, terms: list[tuple[str, ...]]
) -> dict[str, tuple[float, int, float, float]]:
    """Per term (SS, df, F, p): the RSS the full sum-coded model loses without the term's columns,
    the rank those columns add, and the F test of that against the full model's residual."""

    def rss_rank(x: np.ndarray) -> tuple[float, int]:
        beta, *_ = np.linalg.lstsq(x, y, rcond=None)
        return float(((y - x @ beta) ** 2).sum()), int(np.linalg.matrix_rank(x))

    y = rows[metric].to_numpy(float)
    x, owner = sum_coded_design(rows, terms)
    rss_full, rank_full = rss_rank(x)
    resid_df = len(y) - rank_full
    out = {}
    for term in terms:
        rss, rank = rss_rank(x[:, [i for i, t in enumerate(owner) if t != term]])
        ss, df = rss - rss_full, rank_full - rank
        f_value = (ss / df) / (rss_full / resid_df)
        out[":".join(term)] = (ss, df, f_value, float(stats.f.sf(f_value, df, resid_df)))
    return out


def test_type3_on_unbalanced_data_equals_least_squares_on_sum_coded_columns(tmp_path: Path) -> None:
    """Unbalanced, every cell filled: Type I, II and III differ here, and only Type III with
    sum-to-zero columns (SPSS's GLM, which the thesis used) equals dropping each term's columns
    from the full model. The fallback for rank-deficient designs must give the same numbers."""
    from rlv.analysis.anova import _extra_ss

    trials = synthetic_trials(rng_seed=3).drop(index=[0, 7, 30, 31, 64])
    write_store(tmp_path, trials)
    results = load_store(tmp_path)
    factors = [col.ENCODER, col.LAYER, col.PRIOR]
    # the models of design.py's table, written out: test_re the full factorial, test_neg_elbo
    # prior + encoder * layer
    models = {
        col.TEST_RE: [t for k in (1, 2, 3) for t in itertools.combinations(factors, k)],
        col.TEST_NEG_ELBO: [(col.ENCODER,), (col.LAYER,), (col.PRIOR,), (col.ENCODER, col.LAYER)],
    }
    anova = _thesis(anova_table(results, list(models)))
    for metric, terms in models.items():
        want = _least_squares_type3(trials, metric, terms)
        rows = anova[anova["metric"] == metric].set_index("term")
        assert not rows["balanced"].any() and (rows["n"] == len(trials)).all()
        assert sorted(rows.index) == sorted(want)
        for term, (ss, df, f_value, p_value) in want.items():
            row = rows.loc[term]
            assert row["df"] == df, term
            assert row["ss"] == pytest.approx(ss, rel=1e-8), term
            assert row["F"] == pytest.approx(f_value, rel=1e-8), term
            assert row["p"] == pytest.approx(p_value, rel=1e-8), term
    for fit in fit_models(results, list(models), blocks=False):
        want = _least_squares_type3(trials, fit.metric, models[fit.metric])
        for fallback_term, (fallback_ss, fallback_df) in _extra_ss(fit).items():
            name = ":".join(fallback_term)
            assert fallback_ss == pytest.approx(want[name][0], rel=1e-8), name
            assert fallback_df == want[name][1], name


def test_metric_missing_everywhere(tmp_path: Path) -> None:
    trials = synthetic_trials(seeds=range(2))
    trials[col.FID] = np.nan  # a sweep that skipped FID
    write_store(tmp_path, trials)
    results = load_store(tmp_path)
    with pytest.raises(RlvError, match="'fid' has no values"):
        anova_table(results, [col.FID])
    assert col.FID not in set(anova_table(results)["metric"])  # the default set skips it
    with pytest.raises(RlvError, match="no ANOVA model for metric 'nope'"):
        anova_table(results, ["nope"])
    with pytest.raises(RlvError, match="'fid' has no values"):
        cell_table(results, col.FID)


def test_single_level_factor_is_dropped(tmp_path: Path) -> None:
    write_store(tmp_path, synthetic_trials(layers=("fc",)))
    anova = anova_table(load_store(tmp_path), [col.TEST_RE, col.TEST_NEG_ELBO])
    assert not anova["term"].str.contains("layer").any()
    assert _terms(anova, col.TEST_RE)["encoder:prior"] == (6, 48)
    assert _terms(anova, col.TEST_NEG_ELBO)["encoder"] == (3, 54)


def test_model_without_residual_df_is_reported(tmp_path: Path) -> None:
    write_store(tmp_path, synthetic_trials(seeds=range(1)))
    anova = anova_table(load_store(tmp_path), [col.TEST_RE, col.GAP_RE])
    re_rows = anova[anova["metric"] == col.TEST_RE]  # one seed: no blocked variant
    assert (re_rows["resid_df"] == 0).all() and re_rows["F"].isna().all()
    assert re_rows["note"].str.contains("no residual df").all()
    assert anova[anova["metric"] == col.GAP_RE]["F"].notna().all()  # 24 - 7 = 17 df left
    orderings = ordering_table(posthoc_table(load_store(tmp_path), [col.TEST_RE, col.GAP_RE]))
    untested = orderings.groupby("metric")["ordering"].apply(lambda o: o.isna().all())
    assert untested.to_dict() == {col.TEST_RE: True, col.GAP_RE: False}  # not "all equal"


# --- (e) both objectives -------------------------------------------------------------------------


def test_both_objectives_add_objective_to_the_models(tmp_path: Path) -> None:
    write_store(tmp_path, synthetic_trials(objectives=("elbo", "thesis")))
    anova = anova_table(load_store(tmp_path))
    fid = _terms(anova, col.FID)
    assert fid["encoder:layer:prior:objective"] == (6, 240 - 48)
    assert fid["objective"] == (1, 192) and fid["encoder:objective"] == (3, 192)
    neg = _terms(anova, col.TEST_NEG_ELBO)
    assert neg["objective"] == (1, 240 - 11) and "encoder:objective" not in neg
    assert _terms(anova, col.GAP_RT)["objective"] == (1, 240 - 8)
    assert _thesis(anova).set_index(["metric", "term"]).loc[
        (col.TEST_RE, "objective"), "significant"
    ]
    table = cell_table(load_store(tmp_path), col.TEST_RE)
    assert table.index.names == [col.LAYER, col.PRIOR, col.OBJECTIVE] and len(table) == 12


# --- tables --------------------------------------------------------------------------------------


def test_cell_table_layout_and_values(complete: pd.DataFrame) -> None:
    table = cell_table(complete, col.TEST_NEG_ELBO)
    assert table.index.names == [col.LAYER, col.PRIOR]
    assert list(table.index) == [
        (la, p) for la in ("fc", "conv") for p in ("normal", "flow2", "flow6")
    ]
    assert list(table.columns) == [(e, s) for e in ("L", "PNL", "NL", "RKS") for s in ("M", "Std")]
    cell = complete[
        complete[col.LAYER].eq("conv")
        & complete[col.PRIOR].eq("flow2")
        & complete[col.ENCODER].eq("NL")
    ][col.TEST_NEG_ELBO]
    assert table.loc[("conv", "flow2"), ("NL", "M")] == pytest.approx(cell.mean())
    assert table.loc[("conv", "flow2"), ("NL", "Std")] == pytest.approx(cell.std(ddof=1))
    assert (count_table(complete).to_numpy() == 5).all()
    assert (params_table(complete)["PNL"] == 1030).all()
    tables = cell_tables(complete)
    assert {"mnist_test_neg_elbo", "mnist_fid", "mnist_n", "mnist_trainable_params"} <= set(tables)
    assert "mnist_summary" not in tables  # table 5.10 layout only for a single layer x prior


def test_metrics_table_is_table_5_10_layout(tmp_path: Path) -> None:
    write_store(tmp_path, synthetic_trials("svhn", layers=("conv",), priors=("flow6",)))
    table = metrics_table(load_store(tmp_path))
    assert list(table.index.get_level_values("metric")) == [
        col.TEST_NEG_ELBO, col.TEST_RT, col.TEST_RE, col.FID, col.EPOCH_TIME_S,
    ]  # fmt: skip
    assert table.shape == (5, 8)


# --- (f) the thesis's numbers --------------------------------------------------------------------


def test_thesis_tables_transcription() -> None:
    mnist = thesis_table("mnist")
    assert len(mnist) == 24 * 5
    assert mnist.groupby("metric").size().to_dict() == {
        m: 24 for m in (col.TEST_NEG_ELBO, col.TEST_RT, col.TEST_RE, col.FID, col.EPOCH_TIME_S)
    }
    assert len(mnist.drop_duplicates([col.LAYER, col.PRIOR, col.ENCODER])) == 24
    cells = mnist.set_index([col.LAYER, col.PRIOR, col.ENCODER, "metric"])
    # Spot checks against the thesis text.
    assert tuple(cells.loc[("fc", "normal", "L", col.TEST_NEG_ELBO), ["mean", "std"]]) == (
        9.84,
        0.05,
    )
    assert tuple(cells.loc[("fc", "flow6", "L", col.TEST_RT), ["mean", "std"]]) == (44.82, 0.02)
    assert tuple(cells.loc[("conv", "flow6", "NL", col.FID), ["mean", "std"]]) == (78.17, 26.78)
    assert tuple(cells.loc[("conv", "normal", "L", col.EPOCH_TIME_S), ["mean", "std"]]) == (
        1.87,
        0.01,
    )
    svhn = thesis_table("svhn").set_index([col.ENCODER, "metric"])
    assert len(svhn) == 20 and (svhn["table"] == "5.10").all()
    assert tuple(svhn.loc[("RKS", col.TEST_RE), ["mean", "std"]]) == (20.10, 1.37)
    # negative ELBO = RE - RT (table 5.1 = 5.3 - 5.2) catches a mistyped digit in any cell.
    for table in (thesis_table("mnist"), thesis_table("svhn")):
        wide = table.pivot_table(
            index=[col.LAYER, col.PRIOR, col.ENCODER],
            columns="metric",
            values="mean",
            observed=True,
        )
        residual = wide[col.TEST_RE] - wide[col.TEST_RT] - wide[col.TEST_NEG_ELBO]
        assert residual.abs().max() <= 0.05


def test_thesis_comparison(complete: pd.DataFrame) -> None:
    comparison = thesis_comparison(complete)
    assert len(comparison) == 24 * 5
    row = comparison[
        comparison[col.LAYER].eq("fc")
        & comparison[col.PRIOR].eq("normal")
        & comparison[col.ENCODER].eq("L")
        & comparison["metric"].eq(col.TEST_NEG_ELBO)
    ].iloc[0]
    assert row["thesis_mean"] == 9.84 and row["n"] == 5
    assert row["difference"] == pytest.approx(row["mean"] - 9.84)
    orderings = compare_orderings(ordering_table(posthoc_table(complete, [col.TEST_RE])))
    assert orderings.loc[0, "thesis_ordering"] == "L < PNL < RKS < NL"
    assert orderings.loc[0, "matches_thesis"]


# --- plots ---------------------------------------------------------------------------------------


def test_plots_build_figures(tmp_path: Path) -> None:
    results = load_store(synthetic_store(tmp_path, images=True, seeds=range(2)))
    assert len(interaction_plot(results, col.TEST_RE).axes) == 2  # one panel per layer
    assert len(learning_curves(results).axes) == 6  # layer x prior
    grid = image_grid(results)
    assert len(grid.axes) == 24 and all(ax.images for ax in grid.axes)
    both = categorize(pd.concat([results.trials, results.trials.assign(dataset="svhn")]))
    with pytest.raises(RlvError, match="several datasets"):
        interaction_plot(both, col.TEST_RE)
    assert len(fit_models(both, [col.TEST_RE], blocks=False)) == 2  # one model per dataset


def test_results_image_opens_the_store_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = load_store(synthetic_store(tmp_path, images=True, seeds=range(1)))
    opened: list[str] = []
    real_open = Store.open

    def counting_open(location: str) -> Store:
        opened.append(location)
        return real_open(location)

    monkeypatch.setattr(Store, "open", staticmethod(counting_open))
    paths = results.trials[col.IMAGE_SAMPLES].dropna().head(3)
    assert all(results.image(p).startswith(b"\x89PNG") for p in paths)
    assert opened == []  # load_store's filesystem is reused
    by_hand = Results(str(tmp_path), results.trials, results.epochs)
    for path in paths:
        by_hand.image(path)
    assert opened == [str(tmp_path)]  # opened once, then kept
