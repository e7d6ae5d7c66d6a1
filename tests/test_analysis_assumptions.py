"""The F tests' assumptions and the fallback (rlv/analysis/assumptions.py, permutation.py,
multiplicity.py): Shapiro-Wilk and Brown-Forsythe against scipy on residuals computed here; the
Freedman-Lane p of a known null (near the exact F test's p) and of a huge effect (1/(B+1)); the
observed F against statsmodels' Type III; Holm against statsmodels' `multipletests`; and
`rlv analyze` on degenerate data: rows with notes, no warning.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

# pytest puts tests/ on sys.path (no __init__.py there): the helpers import by name.
from analysis_helpers import synthetic_epochs, synthetic_trials, write_store
from scipy import stats
from statsmodels.stats.anova import anova_lm
from statsmodels.stats.multitest import multipletests

from rlv import cli
from rlv import columns as col
from rlv.analysis import anova_table, fit_metric, fit_models, load_store
from rlv.analysis.assumptions import assumption_table
from rlv.analysis.permutation import freedman_lane
from rlv.analysis.resampling import Resampling, generator

REPO = Path(__file__).resolve().parents[1]
CELL = [col.ENCODER, col.LAYER, col.PRIOR]
GRID = {"encoders": ("L", "NL", "RKS"), "layers": ("fc", "conv"), "priors": ("normal", "flow6")}
B = 999


def _loaded(tmp_path: Path, trials: pd.DataFrame) -> pd.DataFrame:
    write_store(tmp_path / "store", trials)
    return load_store(tmp_path / "store").trials


def _quiet(call, *args, **kwargs):  # type: ignore[no-untyped-def]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # notes, never warnings
        return call(*args, **kwargs)


def _with_outliers(trials: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Three values 40 noise sds off: Shapiro-Wilk rejects normality of any model's residuals."""
    out = trials.copy()
    out.loc[[3, 22, 41], metric] += 40.0
    return out


def _dummies(labels: pd.Series) -> np.ndarray:
    return pd.get_dummies(labels.astype(str)).to_numpy(float)


def _residuals(trials: pd.DataFrame, metric: str, columns: list[np.ndarray]) -> np.ndarray:
    y = trials[metric].to_numpy(float)
    x = np.column_stack([np.ones(len(y)), *columns])
    beta, *_ = np.linalg.lstsq(x, y, rcond=None)
    return y - x @ beta


def _by_cell(trials: pd.DataFrame, values: np.ndarray) -> list[np.ndarray]:
    keys = trials[CELL].astype(str).agg("/".join, axis=1).to_numpy()
    return [values[keys == k] for k in np.unique(keys)]


def test_checks_are_scipys_on_the_models_residuals(tmp_path: Path) -> None:
    """test_re (full factorial: residuals y - cell mean, BF on the values by cell), its blocked
    variant (cells and seeds as dummies) and gap_re (main effects: BF on the values too, as the
    fitted value is constant in a cell)."""
    raw = synthetic_trials(seeds=range(5), **GRID)  # type: ignore[arg-type]
    trials = _loaded(tmp_path, _with_outliers(raw, col.TEST_RE))
    table = _quiet(assumption_table, trials, [col.TEST_RE, col.GAP_RE]).set_index(["metric", "block"])
    cells = _dummies(trials[CELL].astype(str).agg("/".join, axis=1))
    expected = {
        (col.TEST_RE, ""): _residuals(trials, col.TEST_RE, [cells]),
        (col.TEST_RE, "seed"): _residuals(trials, col.TEST_RE, [cells, _dummies(trials[col.SEED])]),
        (col.GAP_RE, ""): _residuals(trials, col.GAP_RE, [_dummies(trials[f]) for f in CELL]),
    }
    for key, resid in expected.items():
        row = table.loc[key]
        shapiro = stats.shapiro(resid)
        assert row["shapiro_W"] == pytest.approx(shapiro.statistic, rel=1e-6)
        assert row["shapiro_p"] == pytest.approx(shapiro.pvalue, rel=1e-5)
        if key[1] == "":  # the thesis's models: Brown-Forsythe on the values themselves
            groups = _by_cell(trials, trials[key[0]].to_numpy(float))
        else:
            groups = _by_cell(trials, resid)
        bf = stats.levene(*groups, center="median")
        assert row["brown_forsythe_W"] == pytest.approx(bf.statistic, rel=1e-6)
        assert row["brown_forsythe_p"] == pytest.approx(bf.pvalue, rel=1e-6)
        assert row["cells"] == 12
    assert table.loc[(col.TEST_RE, ""), "read"] == "permutation"
    assert "normality rejected" in table.loc[(col.TEST_RE, ""), "note"]


def test_unequal_variances_call_for_the_permutation_test(tmp_path: Path) -> None:
    raw = synthetic_trials(seeds=range(6), **GRID)  # type: ignore[arg-type]
    wide = raw[col.ENCODER] == "RKS"
    noise = np.random.default_rng(4).normal(0.0, 25.0, int(wide.sum()))
    raw.loc[wide, col.FID] += noise  # RKS's cells 25 times as noisy
    trials = _loaded(tmp_path, raw)
    row = _quiet(assumption_table, trials, [col.FID]).set_index("block").loc[""]
    assert row["brown_forsythe_p"] < 0.01 and not row["equal_variances"]
    assert row["read"] == "permutation" and "equal variances rejected" in row["note"]


def _statsmodels_f(trials: pd.DataFrame, formula: str) -> dict[str, float]:
    table = anova_lm(smf.ols(formula, trials.assign(y=trials[col.TEST_NEG_ELBO])).fit(), typ=3)
    return {
        ":".join(re.findall(r"C\((\w+), Sum\)", str(name))): float(row["F"])
        for name, row in table.iterrows()
        if name not in ("Intercept", "Residual")
    }


@pytest.mark.parametrize("rng_seed", [0, 1])
def test_permutation_p_of_a_null_is_near_the_exact_f_tests(rng_seed: int, tmp_path: Path) -> None:
    """No encoder effect, normal noise: the F test is exact, so the permutation p estimates its
    p (binomial sd sqrt(p(1-p)/B)); neither is small. The observed F is statsmodels' Type III."""
    null = {"L": 0.0, "NL": 0.0, "RKS": 0.0}
    raw = synthetic_trials(seeds=range(5), encoder_effect=null, rng_seed=rng_seed, **GRID)  # type: ignore[arg-type]
    trials = _loaded(tmp_path, raw)
    fit = fit_metric(trials, col.TEST_NEG_ELBO, "mnist")  # prior + encoder * layer
    want = _statsmodels_f(
        trials.assign(**{f: trials[f].astype(str) for f in CELL}),
        "y ~ C(encoder, Sum) * C(layer, Sum) + C(prior, Sum)",
    )
    anova = anova_table([fit]).set_index("term")
    for term in fit.terms:
        name = ":".join(term)
        f_value, p_perm = freedman_lane(fit, term, B, np.random.default_rng(rng_seed))
        assert f_value == pytest.approx(want[name], rel=1e-9)
        assert f_value == pytest.approx(anova.loc[name, "F"], rel=1e-9)
        if name == col.ENCODER:
            p_f = float(anova.loc[name, "p"])
            assert p_perm > 0.05 and p_f > 0.05
            assert abs(p_perm - p_f) <= 4 * math.sqrt(p_f * (1 - p_f) / B) + 1 / B
        assert 1 / (B + 1) <= p_perm <= 1.0 and round(p_perm * (B + 1)) == pytest.approx(p_perm * (B + 1))


def test_permutation_p_of_a_huge_effect_is_its_floor(tmp_path: Path) -> None:
    """An encoder effect of 1000 noise sds: no permutation reaches the observed F."""
    huge = {"L": 0.0, "NL": 1000.0, "RKS": 2000.0}
    trials = _loaded(tmp_path, synthetic_trials(seeds=range(3), encoder_effect=huge, **GRID))  # type: ignore[arg-type]
    for block in ("", col.SEED):
        fit = fit_metric(trials, col.TEST_RE, "mnist", block=block)
        _, p_perm = freedman_lane(fit, (col.ENCODER,), B, np.random.default_rng(0))
        assert p_perm == 1 / (B + 1)


def test_anova_reads_the_permutation_p_where_checks_fail_and_holm_adjusts(tmp_path: Path) -> None:
    """Outliers in test_re (and so in the RE gap, test - train): their models' rows read the
    permutation p (p_perm set, seeded by `Resampling`), the other metrics' the F test (NaN).
    p_holm: statsmodels' Holm over the metrics, per dataset, model kind and term, of the p each
    row reads."""
    raw = synthetic_trials(seeds=range(4), **GRID)  # type: ignore[arg-type]
    trials = _loaded(tmp_path, _with_outliers(raw, col.TEST_RE))
    fits = fit_models(trials)
    anova = _quiet(anova_table, fits, resampling=Resampling(permutations=199, seed=2))
    outlying = anova["metric"].isin([col.TEST_RE, col.GAP_RE])
    assert (anova.loc[outlying, "read"] == "permutation").all()
    assert anova.loc[outlying, "p_perm"].notna().all()
    assert ((anova.loc[outlying, "p_perm"] * 200).round(9) % 1 == 0).all()  # multiples of 1/(B+1)
    assert (anova.loc[~outlying, "read"] == "F").all() and anova.loc[~outlying, "p_perm"].isna().all()
    again = anova_table(fits, resampling=Resampling(permutations=199, seed=2))
    pd.testing.assert_series_equal(again["p_perm"], anova["p_perm"])
    other = anova_table(fits, resampling=Resampling(permutations=199, seed=3))
    assert not np.array_equal(other.loc[outlying, "p_perm"], anova.loc[outlying, "p_perm"])
    read = np.where(anova["read"] == "permutation", anova["p_perm"], anova["p"])
    families = anova.assign(read_p=read).groupby(["dataset", "block", "term"])
    assert families.ngroups >= 8
    for _, family in families:
        adjusted = multipletests(family["read_p"].to_numpy(float), method="holm")[1]
        assert family["p_holm"].to_numpy() == pytest.approx(adjusted, rel=1e-12)
        assert len(family) == family["metric"].nunique()  # one p per metric in each family
    encoder = anova[(anova["term"] == col.ENCODER) & (anova["block"] == "")]
    assert len(encoder) == 8  # the thesis's eight metrics: one family
    finite = np.isfinite(read)
    assert (anova["p_holm"][finite] >= read[finite]).all()  # beside the unadjusted p, which stay
    assert anova["p"].notna().all() and anova.loc[outlying, "p_holm"].notna().all()


def _csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    for name in ("block", "note", "read"):
        if name in frame:
            frame[name] = frame[name].fillna("").astype(str)
    return frame


def test_rlv_analyze_on_degenerate_data(tmp_path: Path) -> None:
    """A constant metric, one fixed by the seed alone, a factor with one level among FID's
    values, outliers in the RE gap: `rlv analyze` with its resampling options writes every new
    table with notes, prints no warning, and reports the rest as usual."""
    raw = synthetic_trials(seeds=range(3), **GRID)  # type: ignore[arg-type]
    raw[col.TEST_RE] = 42.0
    raw[col.TEST_RT] = 10.0 + 3.0 * raw[col.SEED]
    raw.loc[raw[col.ENCODER] != "L", col.FID] = np.nan
    raw.loc[[3, 22], col.TRAIN_RE] -= 40.0  # the RE gap (test - train) gets outliers
    root = write_store(tmp_path / "store", raw, "test", synthetic_epochs(raw), images=True)
    out = tmp_path / "report"
    argv = ["analyze", str(root), "--out", str(out), "--resamples", "200", "--permutations", "99",
            "--random-seed", "5"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "rlv.cli", *argv], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr, done.stderr
    anova, checks = _csv(out / "anova.csv"), _csv(out / "assumptions.csv")
    random, robust = _csv(out / "random_effects.csv"), _csv(out / "robust.csv")
    constant = checks[checks["metric"] == col.TEST_RE]
    assert (constant["read"] == "").all() and constant["note"].str.contains("constant metric").all()
    re_rows = anova[anova["metric"] == col.TEST_RE]
    assert re_rows[["p", "p_perm", "p_holm"]].isna().all().all() and (re_rows["read"] == "").all()
    gap = anova[anova["metric"] == col.GAP_RE]
    assert (gap["read"] == "permutation").all() and gap["p_perm"].notna().all()
    assert ((gap["p_perm"] * 100).round(9) % 1 == 0).all()  # 99 permutations
    assert random[random["metric"] == col.TEST_RE]["note"].str.contains("constant metric").all()
    seed_only = random[random["metric"] == col.TEST_RT]
    assert seed_only["variance"].isna().all() and seed_only["note"].str.contains("no residual").all()
    fid = robust[(robust["metric"] == col.FID) & (robust["statistic"] == "probability_of_improvement")]
    assert len(fid) and col.ENCODER not in set(fid["factor"])  # one encoder among FID's values
    iqm = robust[(robust["metric"] == col.TEST_NEG_ELBO) & (robust["statistic"] == "iqm")]
    assert len(iqm) == 12 and iqm["value"].notna().all()
    markdown = (out / "report.md").read_text()
    for heading in ("Seeds as a random effect (mnist, REML)", "Robust summaries", "Which test to read"):
        assert heading in markdown
    assert "200 resamples" in markdown and "99 permutations" in markdown


def test_bad_resampling_options_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["rlv", "analyze", str(tmp_path), "--out", str(tmp_path / "r"),
                                      "--permutations", "9"])  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1
    assert "permutations = 9 is not allowed" in err[0] and ">= 99" in err[0]


def test_each_resampled_quantity_has_its_own_stream() -> None:
    first = generator(0, "permutation", "mnist", "fid").integers(0, 1 << 30, 4)
    assert np.array_equal(first, generator(0, "permutation", "mnist", "fid").integers(0, 1 << 30, 4))
    assert not np.array_equal(first, generator(0, "permutation", "mnist", "test_re").integers(0, 1 << 30, 4))
    assert not np.array_equal(first, generator(1, "permutation", "mnist", "fid").integers(0, 1 << 30, 4))
