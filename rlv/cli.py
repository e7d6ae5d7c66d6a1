"""The `rlv` command line: thin Typer commands over library calls a notebook can make too.

Option defaults are None ("not given"): the defaults live in the dataclasses of rlv/config.py.
User mistakes (RlvError, bad options) print one line and exit 2; a sweep whose trials failed,
or that another driver holds (SweepBusy), exits 1. The tests drive `app` in-process with Typer's CliRunner.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from rlv.config import PRECISIONS
from rlv.envvars import temporary_env
from rlv.errors import RlvError
from rlv.levels import DATASETS, ENCODERS, LAYERS, OBJECTIVES, PRIORS


class _Commands(TyperGroup):
    """rlv's command group: every user mistake ends as one line on stderr and exit code 2, the
    same under `rlv` as under Typer's CliRunner (the tests run the CLI in-process)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False,
                                windows_expand_args=windows_expand_args, **extra)
        except RlvError as exc:
            typer.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            typer.echo("interrupted", err=True)
            sys.exit(130)
        except typer.TyperException as exc:  # Typer's own usage errors: unknown option, bad number
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            typer.echo(f"error: {message}", err=True)
            sys.exit(getattr(exc, "exit_code", 2))
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_Commands,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="rlv: the 'Who Needs an Encoder?' experiment as a Ray Tune sweep, and its analysis.",
)


def echo(message: str) -> None:
    typer.echo(message)


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _levels(names: Sequence[str]) -> str:
    """An option's help: the registered levels (rlv/levels.py), so a new level shows at once."""
    return " | ".join(names)


DATA_DIR_HELP = ("Folder holding the data sets' files, used as $RLV_DATA_DIR is (a sweep file's "
                 "data.data_dir comes first).")


def _data_dir_env(data_dir: str | None) -> AbstractContextManager[None]:
    """--data-dir of check and launch: $RLV_DATA_DIR for this command, made absolute (trials
    resolve it in their own folders), then as it was (the tests run commands in-process)."""
    resolved = None if data_dir is None else str(Path(data_dir).expanduser().resolve())
    return temporary_env("RLV_DATA_DIR", resolved)


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, epochs.json and the PNGs.")],
    encoder: Annotated[str | None, typer.Option(help=_levels(ENCODERS.names()))] = None,
    layer: Annotated[str | None, typer.Option(help=_levels(LAYERS.names()))] = None,
    prior: Annotated[str | None, typer.Option(help=_levels(PRIORS.names()))] = None,
    objective: Annotated[str | None, typer.Option(
        help=f"{_levels(OBJECTIVES.names())} (elbo is the correct one)")] = None,
    dataset: Annotated[str | None, typer.Option(help=_levels(DATASETS.names()))] = None,
    seed: Annotated[int | None, typer.Option(help="Split and initialisation seed.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (thesis: 250).")] = None,
    train_size: Annotated[int | None, typer.Option(help="Training images (thesis: 25000).")] = None,
    test_size: Annotated[int | None, typer.Option(help="Test images (default: whole split).")] = None,
    fid_samples: Annotated[int | None, typer.Option(help="FID sample count; 0 skips FID.")] = None,
    latent_dim: Annotated[int | None, typer.Option(help="Latent size (default: data set's).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (thesis: 256).")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate (thesis: 1e-3).")] = None,
    precision: Annotated[str | None, typer.Option(
        help=f"{_levels(PRECISIONS)} (bf16: autocast, opt-in).")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Epochs between checkpoints.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Folder holding the data set's files.")] = None,
) -> None:
    """Train and evaluate one cell for one seed, outside Ray (rerun to resume)."""
    from rlv.config import TrialConfig, from_dict
    from rlv.trial.standalone import train_to_folder

    cfg = from_dict(TrialConfig, {
        "model": _given(encoder=encoder, layer=layer, prior=prior, latent_dim=latent_dim),
        "data": _given(dataset=dataset, train_size=train_size, test_size=test_size,
                       data_dir=data_dir),
        "train": _given(epochs=epochs, batch_size=batch_size, lr=lr, objective=objective,
                        precision=precision, checkpoint_every=checkpoint_every),
        "eval": _given(fid_samples=fid_samples),
        **_given(seed=seed),
    })
    train_to_folder(cfg, out, echo)


@app.command()
def models(
    dataset: Annotated[str, typer.Option(help="mnist | svhn | cifar10")] = "mnist",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List every cell with its trainable and frozen parameter counts (from the built models)."""
    from rlv.trial.catalog import model_catalog

    rows = model_catalog(dataset)
    if as_json:
        echo(json.dumps(rows, indent=2))
        return
    echo(f"{'layer':<6} {'prior':<7} {'encoder':<8} {'trainable':>10} {'frozen':>9}")
    for r in rows:
        echo(f"{r['layer']:<6} {r['prior']:<7} {r['encoder']:<8} "
             f"{r['trainable_params']:>10,} {r['frozen_params']:>9,}")


@app.command()
def bench(
    layers: Annotated[str, typer.Option(help="Comma-separated layer types.")] = "fc,conv",
    priors: Annotated[str, typer.Option(help="Comma-separated priors.")] = "normal,flow2,flow6",
    encoder: Annotated[str, typer.Option(help="Encoder of the benchmarked cells.")] = "L",
    epochs: Annotated[int, typer.Option(help="Epochs per loop and cell (median).")] = 3,
    train_size: Annotated[int | None, typer.Option(help="Training images (default 25000).")] = None,
    precisions: Annotated[str, typer.Option(help="fp32 and/or bf16, comma-separated.")] = "fp32",
) -> None:
    """Time rlv's training loop against a plain PyTorch loop, in the same run."""
    from rlv.trial.bench import run_benchmark

    run_benchmark(layers=layers.split(","), priors=priors.split(","), encoder=encoder,
                  epochs=epochs, train_size=train_size, precisions=precisions.split(","), log=echo)


def _load_sweep(sweep: str):  # type: ignore[no-untyped-def]
    from rlv.sweep.files import load_sweep

    return load_sweep(sweep)


@app.command()
def check(
    sweep: Annotated[str, typer.Argument(help="Sweep name (sweeps/NAME.yaml) or path.")],
    store: Annotated[str | None, typer.Option(help="Store folder or URI (overrides the sweep's).")] = None,
    data_dir: Annotated[str | None, typer.Option(help=DATA_DIR_HELP)] = None,
) -> None:
    """Validate a sweep file without running it: trial count, resources, and against its store
    the trials done, running and to run, with the remaining time the store's timings predict."""
    from rlv.store.estimate import check_store
    from rlv.store.rounds import spec_at_rounds, until_check
    from rlv.store.store import Store

    with _data_dir_env(data_dir):
        spec = _load_sweep(sweep)
        opened = Store.open(spec.store_location(store))
        now = check_store(spec_at_rounds(spec, opened), opened)  # until: the rounds' seeds
        for line in spec.describe() + now + until_check(spec, opened):
            echo(line)


@app.command()
def launch(
    sweep: Annotated[str | None, typer.Argument(
        help="Sweep name or path (default: quick locally, thesis-mnist on a cluster).")] = None,
    cluster: Annotated[Path | None, typer.Option(
        help="Ray cluster-launcher config: bring it up and submit the sweep as a Ray Job.")] = None,
    address: Annotated[str | None, typer.Option(
        help="Ray to use: host:port or auto joins as a driver; http://HEAD:8265 submits a Job.")] = None,
    store: Annotated[str | None, typer.Option(help="Store folder or URI (overrides the sweep's).")] = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs of the embedded local Ray.")] = None,
    num_gpus: Annotated[int | None, typer.Option(help="GPUs of the embedded local Ray.")] = None,
    data_dir: Annotated[str | None, typer.Option(
        help=f"{DATA_DIR_HELP} Not with --cluster or a Job address: set data.data_dir there.")] = None,
    sweep_json: Annotated[str | None, typer.Option(hidden=True)] = None,  # how a Ray Job gets it
    dry_run: Annotated[bool, typer.Option(
        help="With --cluster or a Job address: print the ray up, tunnel and Ray Job it would "
             "run, and run nothing.")] = False,
) -> None:
    """Run a sweep's grid x seeds as Ray Tune trials into the Parquet store (rerun to resume)."""
    remote = cluster is not None or (address or "").startswith(("http://", "https://"))
    if dry_run and not remote:
        raise typer.BadParameter("only with --cluster FILE or --address http://HEAD:8265 (it "
                                 "prints what a cluster launch would run)", param_hint="--dry-run")
    name = sweep or ("thesis-mnist" if remote else "quick")
    if sweep_json is not None:
        from rlv.sweep.spec import parse_sweep

        spec = parse_sweep(json.loads(sweep_json), source="--sweep-json")
    else:
        spec = _load_sweep(name)
    if remote:
        from rlv.service.cluster import submit_sweep

        if data_dir is not None:  # this machine's variable does not reach the cluster's trials
            raise RlvError(f"--data-dir {data_dir} names a folder for trials on this machine; for "
                           "a sweep on a cluster set data.data_dir in the sweep file (a folder on "
                           "the cluster's nodes)")

        code = submit_sweep(spec, sweep_arg=name, cluster=cluster, address=address, store=store,
                            echo=echo, dry_run=dry_run)
        raise typer.Exit(code)
    from rlv.service.launch import LaunchOptions, run_sweep

    with _data_dir_env(data_dir):
        outcome = run_sweep(spec, LaunchOptions(store=store, address=address, num_cpus=num_cpus,
                                                num_gpus=num_gpus), echo)
    for line in outcome.summary():
        echo(line)
    raise typer.Exit(outcome.exit_code)


@app.command()
def status(
    sweep: Annotated[str, typer.Argument(help="Sweep name or path.")] = "quick",
    store: Annotated[str | None, typer.Option(help="Store folder or URI (overrides the sweep's).")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until the sweep ends.")] = False,
    every: Annotated[float, typer.Option(help="Seconds between refreshes with --watch.")] = 5.0,
) -> None:
    """Finished, running, failed and pending trials of a sweep, and where its store is. With
    --store and a sweep name, from the store alone (the sweep's spec is kept there)."""
    from rlv.store.status import spec_from_store, sweep_status
    from rlv.store.store import Store

    is_file = sweep.endswith((".yaml", ".yml")) or Path(sweep).expanduser().exists()
    if store is not None and not is_file:
        opened = Store.open(store)
        spec = spec_from_store(opened, sweep)
    else:
        spec = _load_sweep(sweep)
        opened = Store.open(spec.store_location(store))
    if watch:
        _watch_status(spec, opened, every)
        return
    for line in sweep_status(spec, opened).lines():
        echo(line)


def _watch_status(spec, store, every: float) -> None:  # type: ignore[no-untyped-def]
    from rlv.store.status import watch_status

    report = watch_status(spec, store, echo, every_s=every,
                          clear=sys.stdout.isatty())
    if report.failed:
        raise typer.Exit(1)


@app.command()
def analyze(
    store: Annotated[str, typer.Argument(help="Store folder or URI.")],
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.html and the CSVs.")],
    sweep: Annotated[str | None, typer.Option(help="Analyse this sweep only.")] = None,
    resamples: Annotated[int | None, typer.Option(
        help="Bootstrap resamples of the IQM and probability-of-improvement intervals.")] = None,
    permutations: Annotated[int | None, typer.Option(
        help="Permutations of the Freedman-Lane tests where the F test's assumptions fail.")] = None,
    random_seed: Annotated[int | None, typer.Option(
        help="Seed of the bootstrap and the permutations.")] = None,
) -> None:
    """The thesis's tables, ANOVAs and plots from a store, as a Markdown and HTML report.

    --resamples, --permutations and --random-seed default to rlv/analysis/resampling.py's."""
    from rlv.analysis import write_report
    from rlv.analysis.resampling import Resampling

    resampling = Resampling(**_given(resamples=resamples, permutations=permutations, seed=random_seed))
    paths = write_report(store, out, sweep=sweep, resampling=resampling)
    echo(f"wrote {paths.markdown}, {paths.html} and {paths.anova}")


# --- rlv plan (analysis side; kept self-contained so that edits elsewhere in this file merge) ---
@app.command()
def plan(
    store: Annotated[str, typer.Argument(help="Store folder or URI.")],
    metric: Annotated[str, typer.Option(help="Metric column, e.g. test_re.")],
    factor: Annotated[str, typer.Option(help="Factor whose two levels should differ, e.g. encoder.")],
    delta: Annotated[float, typer.Option(help="Difference to detect, in the metric's units.")],
    power: Annotated[float | None, typer.Option(help="Power wanted (default 0.8).")] = None,
    alpha: Annotated[float | None, typer.Option(help="Significance level (default 0.01).")] = None,
    sweep: Annotated[str | None, typer.Option(help="Plan from this sweep only.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a sentence.")] = False,
) -> None:
    """Seeds per cell to detect a difference between two levels of a factor (noncentral F)."""
    from rlv.analysis.plan import plan_store

    result = plan_store(store, metric, factor, delta, sweep=sweep, **_given(power=power, alpha=alpha))
    echo(json.dumps(result.as_dict()) if as_json else result.describe())


# --- rlv board (a live page of a sweep; kept self-contained so that edits elsewhere merge) ---
@app.command()
def board(
    store: Annotated[str | None, typer.Argument(help="Store folder or URI (default: results).")] = None,
    sweep: Annotated[str | None, typer.Option(
        help="The sweep to show (default: the store's only one).")] = None,
    port: Annotated[int | None, typer.Option(
        help="Port on 127.0.0.1 (default 8266; 0: any free one).")] = None,
    dashboard: Annotated[str | None, typer.Option(
        help="The Ray dashboard's address to link to (default http://127.0.0.1:8265).")] = None,
) -> None:
    """Serve a live page of a sweep on 127.0.0.1: its grid of trials filling in, cell means with
    intervals, learning curves and the ANOVA, from the store alone (no torch, no Ray)."""
    from rlv.board.config import BoardConfig
    from rlv.board.server import serve_board

    serve_board(BoardConfig(**_given(store=store, sweep=sweep, port=port, dashboard=dashboard)),
                echo)


def main() -> None:
    """Entry point: one line per user mistake, never a traceback for one (see _Commands)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if len(sys.argv) == 1:
        sys.argv.append("--help")
    app()


if __name__ == "__main__":
    main()
