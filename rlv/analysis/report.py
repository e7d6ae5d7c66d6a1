"""`write_report`: the whole analysis of a store as files, for `rlv analyze` and for sharing.

Writes into `out`: report.md, a self-contained report.html, anova.csv (the tidy ANOVA table, with
each model's seed-blocked variant), posthoc.csv (every pair with its Tukey interval),
orderings.csv (encoder, layer, prior, ... against the thesis's), checks.csv, planning.csv,
random_effects.csv (seeds as a random effect), robust.csv (IQMs, probabilities of improvement),
assumptions.csv (which test to read), thesis_comparison.csv, tables/*.csv, plots/*.png and
images/ (the trials' own PNGs, per cell the first seed's). Prints nothing; logs progress. `out`
must be a folder (created if missing) outside the store: a report written into a store would sit
among its data.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
from matplotlib.figure import Figure

import rlv
from rlv import columns as col
from rlv.analysis.anova import ALPHA, anova_table, fit_models, model_fits
from rlv.analysis.assumptions import assumption_table
from rlv.analysis.design import DEFAULT_METRICS
from rlv.analysis.effects import CI_LEVEL
from rlv.analysis.labels import metric_label, present_datasets, present_levels
from rlv.analysis.load import Results, load_store, require_one_sweep_per_dataset
from rlv.analysis.mixed import random_effects_table
from rlv.analysis.plan import POWER, planning_table
from rlv.analysis.plots import image_cells, interaction_plot, learning_curves
from rlv.analysis.posthoc import ordering_table, posthoc_table, residual_checks
from rlv.analysis.render import (
    Block,
    Heading,
    Para,
    Picture,
    PictureGrid,
    Table,
    to_html,
    to_markdown,
)
from rlv.analysis.report_robust import assumption_blocks, random_effects_blocks, robust_blocks
from rlv.analysis.resampling import Resampling
from rlv.analysis.robust import robust_table
from rlv.analysis.tables import available_metrics, cell_tables, select_dataset
from rlv.analysis.thesis import compare_orderings, thesis_comparison
from rlv.errors import RlvError
from rlv.store.store import Store

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReportPaths:
    """Where `write_report` put each output (all inside `out`)."""

    out: Path
    markdown: Path
    html: Path
    anova: Path
    posthoc: Path
    orderings: Path
    checks: Path
    planning: Path
    comparison: Path
    random_effects: Path
    robust: Path
    assumptions: Path
    tables: tuple[Path, ...]
    plots: tuple[Path, ...]
    images: tuple[Path, ...]


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name)


def _fmt(frame: pd.DataFrame, digits: int = 2) -> pd.DataFrame:
    """Floats as fixed-point text (missing: empty), everything else as is."""
    out = frame.copy()
    for name in out.columns:
        if pd.api.types.is_float_dtype(out[name]):
            out[name] = [f"{v:.{digits}f}" if np.isfinite(v) else "" for v in out[name]]
    return out


def _p(value: float) -> str:
    # The thesis writes "p < .000"; "< .001" says the same without claiming p = 0.
    if not np.isfinite(value):
        return ""
    return "< .001" if value < 0.001 else f"{value:.3f}"


def _eta(value: float, low: float, high: float) -> str:
    if not np.isfinite(value):
        return ""
    interval = f" [{low:.3f}, {high:.3f}]" if np.isfinite(low) and np.isfinite(high) else ""
    return f"{value:.3f}{interval}"


def _anova_display(anova: pd.DataFrame) -> pd.DataFrame:
    """The thesis's reporting: F(df, resid df) = value, p, partial eta squared [95% CI] (the
    interval's level is effects.CI_LEVEL, not the tests' alpha = 0.01), flags;
    a blocked model's rows say how much residual variance the block removes."""
    return pd.DataFrame(
        {
            "metric": anova["metric"],
            "model": anova["model"],
            "term": anova["term"],
            "F": [
                f"F({d}, {r}) = {f:.2f}" if np.isfinite(f) else f"F({d}, {r}) undefined"
                for d, r, f in zip(anova["df"], anova["resid_df"], anova["F"], strict=True)
            ],
            "p": [_p(p) for p in anova["p"]],
            "p (Holm)": [_p(p) for p in anova["p_holm"]],
            "p perm": [_p(p) for p in anova["p_perm"]],
            "read": anova["read"],
            f"partial eta sq [{CI_LEVEL:.0%} CI]": [
                _eta(e, lo, hi)
                for e, lo, hi in zip(
                    anova["partial_eta_sq"], anova["eta_sq_lower"], anova["eta_sq_upper"],
                    strict=True,
                )
            ],
            "block removes": [
                f"{v:.1%} of residual variance" if np.isfinite(v) else ""
                for v in anova["block_removes"]
            ],
            "n": anova["n"],
            "note": anova["note"],
        }
    )


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _datasets(results: Results) -> list[str]:
    """The named datasets (plots and images are per dataset; none without a dataset column)."""
    return [d for d in present_datasets(results.trials) if d is not None]


def _statistics(
    results: Results, out: Path, blocks: list[Block], resampling: Resampling
) -> dict[str, Path]:
    """ANOVA, post hoc, orderings, checks and the thesis comparison: report blocks, and the CSVs
    (returned as {name: path})."""
    try:
        fits = fit_models(results)  # once, for all the tables
        anova = anova_table(fits, resampling=resampling)
        posthoc = posthoc_table(fits)
        checks = residual_checks(fits)
        planning = planning_table(model_fits(fits))
        random = random_effects_table(fits)
        robust = robust_table(fits, settings=resampling)
        assumptions = assumption_table(fits)
    except RlvError as exc:  # e.g. no metric has values yet: the report still shows the rest
        logger.warning("no statistics: %s", exc)
        blocks.append(Para(f"No statistics: {exc}"))
        anova, posthoc, checks, planning, random, robust, assumptions = (
            pd.DataFrame() for _ in range(7)
        )
    orderings = compare_orderings(ordering_table(posthoc)) if not posthoc.empty else pd.DataFrame()
    comparison = thesis_comparison(results)
    frames = {
        "anova": anova,
        "posthoc": posthoc,
        "orderings": orderings,
        "checks": checks,
        "planning": planning,
        "random_effects": random,
        "robust": robust,
        "assumptions": assumptions,
        "thesis_comparison": comparison,
    }
    paths = {name: out / f"{name}.csv" for name in frames}
    for name, frame in frames.items():
        frame.to_csv(paths[name], index=False)
    for dataset in sorted(set(anova["dataset"])) if not anova.empty else []:
        blocks.append(Heading(f"ANOVA ({dataset}, Type III, alpha = {ALPHA:g})", 2))
        blocks.append(
            Para(
                "Each model is followed by its seed-blocked variant (+ seed (block)): a seed's "
                "split and frozen initialisation are shared by every cell. Partial eta squared "
                f"with its {CI_LEVEL:.0%} interval (noncentral F inverted; the F tests are at "
                f"alpha = {ALPHA:g}). Overfitting gaps are positive "
                "when the test set is worse (test - train; RT: train - test). read: the test to "
                "read, the F test, or the permutation test (p perm) where the model's residuals "
                "fail a check (Which test to read, below); p (Holm): that p adjusted over the "
                "metrics, per term."
            )
        )
        blocks.append(Table(_anova_display(anova[anova["dataset"] == dataset])))
        blocks += random_effects_blocks(random, dataset)
    if not orderings.empty:
        blocks.append(Heading(f"Post hoc orderings (Tukey HSD, alpha = {ALPHA:g})", 2))
        blocks.append(
            Para(
                "Ascending means; '&' joins levels that do not differ significantly; the "
                "thesis's ordering beside ours where it states one, compared on the levels "
                "both have (compared_levels; left_out_levels: a level only one side has)."
            )
        )
        blocks.append(Table(orderings))
    if not posthoc.empty:
        tukey_level = f"{1 - ALPHA:.0%}"
        blocks.append(
            Heading(
                f"Post hoc pairs (mean difference, simultaneous {tukey_level} Tukey interval)", 2
            )
        )
        shown = posthoc.assign(
            pair=posthoc["group2"] + " - " + posthoc["group1"],
            **{f"{tukey_level} interval": [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(
                posthoc["lower"], posthoc["upper"], strict=True)]},
            p=[_p(v) for v in posthoc["p_adj"]],
        )[["dataset", "metric", "factor", "pair", "meandiff", f"{tukey_level} interval",
           "confidence", "p"]]  # fmt: skip
        blocks.append(Table(_fmt(shown, 3)))
    blocks += robust_blocks(robust, resampling.resamples)
    if not planning.empty:
        blocks.append(Heading("Planning: seeds per cell for a follow-up", 2))
        blocks.append(
            Para(
                f"Seeds per cell for power {POWER:g} at alpha {ALPHA:g} to detect a difference "
                "of half and of one residual sd of the metric (delta_sd 0.5, 1; delta in the "
                "metric's units) between two encoders, others at the grand mean: Cohen's "
                "f = delta / (sigma sqrt(2a)), sigma the model's residual sd. The deltas are "
                "fixed beforehand, not taken from the data: current_power is the power these "
                "seeds have for such a difference. "
                "Other deltas: rlv plan STORE --metric M --factor F --delta D."
            )
        )
        cols = ["dataset", "metric", "factor", "delta_sd", "delta", "sigma", "f", "current_seeds",
                "current_power", "seeds_per_cell", "trials_needed"]  # fmt: skip
        blocks.append(Table(_fmt(planning[cols], 3)))
    if not checks.empty:
        blocks.append(Heading("Assumption checks", 2))
        blocks.append(Para("Levene (mean-centred) across cells; Shapiro-Wilk on model residuals."))
        blocks.append(Table(_fmt(checks, 3)))
    blocks += assumption_blocks(assumptions, resampling.permutations)
    if not comparison.empty:
        blocks.append(Heading("Comparison with the thesis", 2))
        # In the thesis's table order (5.1, 5.2, ...), not alphabetically by metric.
        ordered = comparison.sort_values(["dataset", "table"], kind="stable")
        groups = ordered.groupby(["dataset", "metric"], observed=True, sort=False)
        for (dataset, metric), part in groups:
            shown = _fmt(part.drop(columns=["dataset", "metric"]))
            blocks.append(Table(shown, caption=f"{dataset}: {metric_label(str(metric))}"))
    return paths


def _tables(results: Results, out: Path, blocks: list[Block]) -> list[Path]:
    paths = []
    blocks.append(Heading("Cell means and standard deviations", 2))
    for name, table in cell_tables(results).items():
        path = out / "tables" / f"{_safe(name)}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(path)
        paths.append(path)
        metric = name.split("_", 1)[1] if "_" in name else name
        digits = 0 if metric in ("n", col.TRAINABLE_PARAMS) else 2
        blocks.append(Table(_fmt(table, digits), caption=f"{name} ({metric_label(metric)})"))
    return paths


def _plots(results: Results, out: Path, blocks: list[Block]) -> list[Path]:
    paths = []
    blocks.append(Heading("Plots", 2))
    for dataset in _datasets(results):
        part = select_dataset(results.trials, dataset)
        for metric in available_metrics(part, DEFAULT_METRICS):
            path = _save(interaction_plot(part, metric), out / "plots" / f"{dataset}_{metric}.png")
            paths.append(path)
            blocks.append(Picture(path, f"{dataset}: {metric_label(metric)}"))
        epochs = results.epochs
        if col.DATASET in epochs and (epochs[col.DATASET].astype(str) == dataset).any():
            fig = learning_curves(select_dataset(epochs, dataset))
            path = _save(fig, out / "plots" / f"{dataset}_learning_curves.png")
            paths.append(path)
            blocks.append(Picture(path, f"{dataset}: learning curves (mean over seeds)"))
    return paths


def _images(results: Results, out: Path, blocks: list[Block]) -> list[Path]:
    """Copy each cell's first-seed PNGs into out/images and lay them out like tables 5.7-5.9."""
    paths: list[Path] = []
    blocks.append(Heading("Images (per cell, the lowest seed)", 2))
    for dataset in _datasets(results):
        trials = select_dataset(results.trials, dataset)
        encoders = present_levels(trials[col.ENCODER])
        for kind in col.IMAGE_COLUMNS:
            if kind not in trials or trials[kind].isna().all():
                continue
            grid: dict[str, list[Path | None]] = {}
            for key, encoder, rel in image_cells(trials, kind):
                label = " / ".join(key)
                row = grid.setdefault(label, [None] * len(encoders))
                if rel is None:
                    continue
                target = out / "images" / dataset / kind / f"{_safe('-'.join([*key, encoder]))}.png"
                try:
                    data = results.image(rel)
                except RlvError as exc:
                    logger.warning("%s", exc)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                row[encoders.index(encoder)] = target
                paths.append(target)
            caption = f"{dataset}: {kind.removeprefix('image_')}"
            rows = tuple((label, tuple(cells)) for label, cells in grid.items())
            blocks.append(PictureGrid(tuple(encoders), rows, caption))
    return paths


def _check_out(opened: Store, out: Path) -> None:
    """RlvError (before anything is written) for an `out` that is a file, sits under a file,
    or lies inside a local store."""
    for path in (out, *out.parents):
        if path.exists() and not path.is_dir():
            raise RlvError(f"--out {out}: {path} is a file, not a folder; name a folder")
    if isinstance(opened.fs, pafs.LocalFileSystem):
        root_path, target = Path(opened.root).resolve(), out.resolve()
        if target == root_path or root_path in target.parents:
            raise RlvError(
                f"--out {out} is inside the store {opened.location}: "
                "write the report to a folder outside the store"
            )


def write_report(
    store: str | os.PathLike[str] | Store,
    out: str | os.PathLike[str],
    sweep: str | None = None,
    resampling: Resampling | None = None,
) -> ReportPaths:
    """Analyse a store (one sweep, or all when each data set has one) and write the report files.

    `resampling`: the bootstrap resamples, permutations and seed (default `Resampling()`)."""
    out_dir = Path(out)
    opened = store if isinstance(store, Store) else Store.open(store)  # once: it may be remote
    _check_out(opened, out_dir)
    results = load_store(opened, sweep)
    require_one_sweep_per_dataset(results)  # passes when `sweep` names one
    out_dir.mkdir(parents=True, exist_ok=True)
    trials = results.trials
    counts = (
        ", ".join(f"{d} {n}" for d, n in trials[col.DATASET].value_counts(sort=False).items())
        if col.DATASET in trials
        else ""
    )
    title = f"rlv report: {opened.location}" + (f" (sweep {sweep})" if sweep else "")
    blocks: list[Block] = [
        Heading(title, 1),
        Para(
            f"Sweeps: {', '.join(results.sweeps)}. Trials: {len(trials)} ({counts}). "
            f"Generated by rlv {rlv.__version__} on "
            f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}."
        ),
    ]
    logger.info("report: tables")
    tables = _tables(results, out_dir, blocks)
    logger.info("report: statistics")
    csvs = _statistics(results, out_dir, blocks, resampling or Resampling())
    from rlv.analysis.rounds import rounds_blocks  # the rounds of sweeps with until:

    blocks += rounds_blocks(opened, results.sweeps)
    logger.info("report: plots")
    plots = _plots(results, out_dir, blocks)
    logger.info("report: images")
    images = _images(results, out_dir, blocks)
    markdown, page = out_dir / "report.md", out_dir / "report.html"
    markdown.write_text(to_markdown(blocks, out_dir), encoding="utf-8")
    page.write_text(to_html(blocks, title), encoding="utf-8")
    logger.info("report written to %s", out_dir)
    return ReportPaths(
        out=out_dir,
        markdown=markdown,
        html=page,
        anova=csvs["anova"],
        posthoc=csvs["posthoc"],
        orderings=csvs["orderings"],
        checks=csvs["checks"],
        planning=csvs["planning"],
        comparison=csvs["thesis_comparison"],
        random_effects=csvs["random_effects"],
        robust=csvs["robust"],
        assumptions=csvs["assumptions"],
        tables=tuple(tables),
        plots=tuple(plots),
        images=tuple(images),
    )
