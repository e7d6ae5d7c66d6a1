"""Analysis of a results store: tables, ANOVA, post hoc tests, plots, the thesis's numbers, reports.

Imports neither torch nor Ray (a test checks it), so a laptop with pandas, statsmodels and
matplotlib can open a store that a cluster wrote:

    from rlv.analysis import load_store, anova_table
    results = load_store("results", sweep="thesis")
    anova_table(results)
"""

from rlv.analysis.anova import ALPHA, MetricFit, anova_table, fit_metric, fit_models
from rlv.analysis.design import DEFAULT_METRICS, METRIC_MODELS
from rlv.analysis.labels import METRIC_LABELS, metric_label
from rlv.analysis.load import (
    Results,
    list_sweeps,
    load_store,
    read_image,
    require_one_sweep_per_dataset,
)
from rlv.analysis.plan import SeedPlan, plan_seeds, plan_store, planning_table
from rlv.analysis.plots import image_grid, interaction_plot, learning_curves
from rlv.analysis.posthoc import (
    ordering_string,
    ordering_table,
    posthoc_table,
    residual_checks,
    tukey_hsd,
)
from rlv.analysis.report import ReportPaths, write_report
from rlv.analysis.tables import cell_table, cell_tables, count_table, metrics_table, params_table
from rlv.analysis.thesis import (
    THESIS_ORDERINGS,
    compare_orderings,
    thesis_comparison,
    thesis_table,
)

__all__ = [
    "ALPHA",
    "DEFAULT_METRICS",
    "METRIC_LABELS",
    "METRIC_MODELS",
    "THESIS_ORDERINGS",
    "MetricFit",
    "ReportPaths",
    "Results",
    "SeedPlan",
    "anova_table",
    "cell_table",
    "cell_tables",
    "compare_orderings",
    "count_table",
    "fit_metric",
    "fit_models",
    "image_grid",
    "interaction_plot",
    "learning_curves",
    "list_sweeps",
    "load_store",
    "metric_label",
    "metrics_table",
    "ordering_string",
    "ordering_table",
    "params_table",
    "plan_seeds",
    "plan_store",
    "planning_table",
    "posthoc_table",
    "read_image",
    "require_one_sweep_per_dataset",
    "residual_checks",
    "thesis_comparison",
    "thesis_table",
    "tukey_hsd",
    "write_report",
]
