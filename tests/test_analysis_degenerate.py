"""Degenerate data never crash the analysis: `rlv analyze` on small valid stores whose models have
no residual variance, a factor with one level among a metric's values, one seed per cell or a
constant metric exits 0 without a traceback or warning; the affected rows hold NaN where nothing
can be estimated and a `note` that says what and why, and every other metric is analysed as usual
(its F checked against statsmodels' Type III ANOVA, computed here). An infinite value (a diverged
trial's) is left out, and noted.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

# pytest puts tests/ on sys.path (no __init__.py there): the helpers import by name.
from analysis_helpers import synthetic_epochs, synthetic_trials, write_store
from statsmodels.stats.anova import anova_lm

from rlv import columns as col
from rlv.analysis import anova_table, fit_metric, load_store

REPO = Path(__file__).resolve().parents[1]
# A small grid (2 x 2 x 2 cells) keeps each `rlv analyze` run short.
GRID = {"encoders": ("L", "NL"), "layers": ("fc", "conv"), "priors": ("normal", "flow6")}
CELL = [col.ENCODER, col.LAYER, col.PRIOR]
# The thesis's models (design.py) of the metrics the tests compare, written out.
FORMULAS = {
    col.TEST_NEG_ELBO: "y ~ C(encoder, Sum) * C(layer, Sum) + C(prior, Sum)",
    col.GAP_RE: "y ~ C(encoder, Sum) + C(layer, Sum) + C(prior, Sum)",
    col.TEST_RE: "y ~ C(encoder, Sum) * C(layer, Sum) * C(prior, Sum)",
}


@dataclass(frozen=True)
class Analysis:
    trials: pd.DataFrame  # as the analysis reads them (gaps derived from train and test)
    markdown: str
    anova: pd.DataFrame
    posthoc: pd.DataFrame
    checks: pd.DataFrame


def _csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for name in ("block", "note"):
        if name in frame:
            frame[name] = frame[name].fillna("").astype(str)
    return frame


def _analyze(trials: pd.DataFrame, tmp_path: Path) -> Analysis:
    """`rlv analyze` as a process on a store of `trials`: exit 0, no traceback, no warning."""
    root = write_store(tmp_path / "store", trials, "test", synthetic_epochs(trials), images=True)
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "rlv.cli", "analyze", str(root), "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr, done.stderr
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    return Analysis(
        trials=load_store(root).trials,
        markdown=(out / "report.md").read_text(),
        anova=_csv(out / "anova.csv"),
        posthoc=_csv(out / "posthoc.csv"),
        checks=_csv(out / "checks.csv"),
    )


def _rows(anova: pd.DataFrame, metric: str, block: str = "") -> pd.DataFrame:
    rows = anova[(anova["metric"] == metric) & (anova["block"] == block)]
    assert len(rows), (metric, block)
    return rows


def _assert_as_statsmodels(
    trials: pd.DataFrame, anova: pd.DataFrame, metric: str, note: str = ""
) -> None:
    """The metric's model rows: `note`, finite F equal to statsmodels' Type III F."""
    data = trials[CELL].astype(str).assign(y=trials[metric].astype(float))
    table = anova_lm(smf.ols(FORMULAS[metric], data).fit(), typ=3)
    want = {
        ":".join(re.findall(r"C\((\w+), Sum\)", str(name))): float(row["F"])
        for name, row in table.iterrows()
        if name not in ("Intercept", "Residual")
    }
    rows = _rows(anova, metric).set_index("term")
    assert (rows["note"] == note).all(), rows["note"].tolist()
    assert sorted(rows.index) == sorted(want)
    for term, f_value in want.items():
        assert math.isfinite(rows.loc[term, "F"]) and math.isfinite(rows.loc[term, "p"])
        assert rows.loc[term, "F"] == pytest.approx(f_value, rel=1e-9), term
        assert rows.loc[term, "eta_sq_lower"] <= rows.loc[term, "eta_sq_upper"]


def _assert_not_estimable(rows: pd.DataFrame, why: str) -> None:
    assert rows["note"].str.contains(why, regex=False).all(), rows["note"].tolist()
    assert rows["note"].str.contains("F, p and intervals not estimable", regex=False).all()
    for name in ("F", "p", "eta_sq_lower", "eta_sq_upper"):
        assert rows[name].isna().all(), name
    assert not rows["significant"].any()


def test_test_re_fixed_by_the_seed_alone(tmp_path: Path) -> None:
    """The seed-blocked RE model has zero residual variance: it crashed in the eta^2 interval."""
    trials = synthetic_trials(seeds=range(3), **GRID)  # type: ignore[arg-type]
    trials[col.TEST_RE] = 100.0 + 3.0 * trials[col.SEED]  # the seed alone fixes test RE
    report = _analyze(trials, tmp_path)
    blocked = _rows(report.anova, col.TEST_RE, "seed")
    _assert_not_estimable(blocked, "no residual variance")
    seed = blocked.set_index("term").loc[col.SEED]
    seed_means = trials.groupby(col.SEED)[col.TEST_RE].transform("mean")
    seed_ss = float(((seed_means - trials[col.TEST_RE].mean()) ** 2).sum())
    assert seed["ss"] == pytest.approx(seed_ss, rel=1e-9)
    assert seed["partial_eta_sq"] == 1.0 and (blocked["block_removes"] == 1.0).all()
    design = blocked[blocked["term"] != col.SEED]
    assert (design["ss"] == 0.0).all() and design["partial_eta_sq"].isna().all()
    # The model without the block has the seeds as residual: no design effect, F = 0.
    plain = _rows(report.anova, col.TEST_RE)
    assert (plain["note"] == "").all() and (plain["F"] == 0.0).all() and (plain["p"] == 1.0).all()
    _assert_as_statsmodels(report.trials, report.anova, col.TEST_NEG_ELBO)
    assert "no residual variance" in report.markdown


def test_a_model_that_fits_every_value(tmp_path: Path) -> None:
    """Test RE equal to its cell means: zero residual variance; Tukey's differences are exact."""
    trials = synthetic_trials(seeds=range(3), **GRID)  # type: ignore[arg-type]
    trials[col.TEST_RE] = trials.groupby(CELL)[col.TEST_RE].transform("mean")
    report = _analyze(trials, tmp_path)
    for block in ("", "seed"):
        rows = _rows(report.anova, col.TEST_RE, block)
        _assert_not_estimable(rows, "no residual variance (the model fits every value exactly)")
        design = rows[rows["term"] != col.SEED]
        assert (design["ss"] > 0).all() and (design["partial_eta_sq"] == 1.0).all()
    pairs = report.posthoc[report.posthoc["metric"] == col.TEST_RE]
    assert len(pairs) and pairs["note"].str.contains("exact differences").all()
    assert (pairs["lower"] == pairs["meandiff"]).all() and (pairs["upper"] == pairs["meandiff"]).all()
    assert (pairs["p_adj"] == 0.0).all() and pairs["reject"].all()
    checks = report.checks.set_index("metric").loc[col.TEST_RE]
    assert math.isnan(checks["shapiro_p"]) and "no residual variance" in checks["note"]
    _assert_as_statsmodels(report.trials, report.anova, col.TEST_NEG_ELBO)


def test_a_constant_metric(tmp_path: Path) -> None:
    trials = synthetic_trials(seeds=range(3), **GRID)  # type: ignore[arg-type]
    trials[col.TEST_RE] = 42.0
    report = _analyze(trials, tmp_path)
    for block in ("", "seed"):
        rows = _rows(report.anova, col.TEST_RE, block)
        _assert_not_estimable(rows, "constant metric (every value 42)")
        assert (rows["ss"] == 0.0).all() and rows["partial_eta_sq"].isna().all()
    pairs = report.posthoc[report.posthoc["metric"] == col.TEST_RE]
    assert len(pairs) and pairs["note"].str.contains("constant metric").all()
    assert (pairs["meandiff"] == 0.0).all() and not pairs["reject"].any()
    checks = report.checks.set_index("metric").loc[col.TEST_RE]
    assert math.isnan(checks["levene_p"]) and math.isnan(checks["shapiro_p"])
    assert "Levene not defined" in checks["note"]
    _assert_as_statsmodels(report.trials, report.anova, col.TEST_NEG_ELBO)
    assert "constant metric (every value 42)" in report.markdown


def test_a_factor_with_one_level_among_a_metrics_values(tmp_path: Path) -> None:
    """FID measured for encoder L only: the encoder effect is not estimable for FID."""
    trials = synthetic_trials(seeds=range(3), **GRID)  # type: ignore[arg-type]
    trials.loc[trials[col.ENCODER] != "L", col.FID] = np.nan
    report = _analyze(trials, tmp_path)
    for block in ("", "seed"):
        rows = _rows(report.anova, col.FID, block)
        assert rows["note"].str.contains(
            "one level among the values, its effect not estimable: encoder (L)", regex=False
        ).all()
        assert not rows["term"].str.contains(col.ENCODER).any()
        assert rows["F"].notna().all()  # layer and prior are tested as usual
    assert "encoder (L)" in report.markdown
    _assert_as_statsmodels(report.trials, report.anova, col.TEST_NEG_ELBO)
    # A block with one level among the metric's values: no blocked variant from fit_models; the
    # library's fit of one says the block is not estimable and leaves its row NaN.
    one_seed = synthetic_trials(seeds=range(2), **GRID)  # type: ignore[arg-type]
    one_seed.loc[one_seed[col.SEED] == 1, col.FID] = np.nan
    write_store(tmp_path / "one_seed", one_seed)
    results = load_store(tmp_path / "one_seed")
    assert (anova_table(results, [col.FID])["block"].fillna("") == "").all()
    fit = fit_metric(results.trials, col.FID, "mnist", block=col.SEED)
    rows = anova_table([fit])
    assert rows["note"].str.contains("its effect not estimable: seed (0)", regex=False).all()
    seed = rows.set_index("term").loc[col.SEED]
    assert seed["df"] == 0 and math.isnan(seed["ss"]) and math.isnan(seed["partial_eta_sq"])


def test_one_seed_per_cell(tmp_path: Path) -> None:
    """One seed: the full factorial (test RE) has no residual df; the main-effects model of the
    RE gap keeps 8 - 4 = 4 and is tested as usual."""
    trials = synthetic_trials(seeds=range(1), **GRID)  # type: ignore[arg-type]
    report = _analyze(trials, tmp_path)
    rows = _rows(report.anova, col.TEST_RE)
    assert (rows["resid_df"] == 0).all()
    _assert_not_estimable(rows, "no residual df (as many parameters as trials, e.g. one seed")
    assert (report.anova["block"] == "").all()  # one seed: nothing to block
    pairs = report.posthoc[report.posthoc["metric"] == col.TEST_RE]
    assert len(pairs) and pairs["p_adj"].isna().all() and pairs["lower"].isna().all()
    assert pairs["note"].str.contains("no residual df").all()
    _assert_as_statsmodels(report.trials, report.anova, col.GAP_RE)
    gap_pairs = report.posthoc[report.posthoc["metric"] == col.GAP_RE]
    assert gap_pairs["p_adj"].notna().all() and (gap_pairs["note"] == "").all()


def test_an_infinite_value_is_left_out_and_noted(tmp_path: Path) -> None:
    """A diverged trial's infinite test RE: its model is fitted on the other trials."""
    trials = synthetic_trials(seeds=range(3), **GRID)  # type: ignore[arg-type]
    trials.loc[0, col.TEST_RE] = np.inf
    write_store(tmp_path, trials)
    loaded = load_store(tmp_path).trials
    anova = anova_table(loaded, [col.TEST_RE, col.TEST_NEG_ELBO])
    anova["block"] = anova["block"].fillna("")
    finite = loaded[np.isfinite(loaded[col.TEST_RE])]
    assert len(finite) == len(loaded) - 1
    assert (_rows(anova, col.TEST_RE)["n"] == len(finite)).all()
    _assert_as_statsmodels(
        finite, anova, col.TEST_RE, note="unbalanced; 1 infinite value left out"
    )
    _assert_as_statsmodels(loaded, anova, col.TEST_NEG_ELBO)
