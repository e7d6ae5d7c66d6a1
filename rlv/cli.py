"""The `rlv` command line: thin Typer commands over library calls a notebook can make too.

Option defaults are None ("not given"): the defaults live in the dataclasses of rlv/config.py.
User mistakes (RlvError, bad options) print one line and exit 2; a sweep whose trials failed
exits 1.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from rlv.errors import RlvError

app = typer.Typer(
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


@app.command()
def train(
    out: Annotated[Path, typer.Option(help="Folder for metrics.json, epochs.json and the PNGs.")],
    encoder: Annotated[str | None, typer.Option(help="L | PNL | NL | RKS")] = None,
    layer: Annotated[str | None, typer.Option(help="fc | conv")] = None,
    prior: Annotated[str | None, typer.Option(help="normal | flow2 | flow6")] = None,
    objective: Annotated[str | None, typer.Option(help="elbo (correct) | thesis")] = None,
    dataset: Annotated[str | None, typer.Option(help="mnist | svhn")] = None,
    seed: Annotated[int | None, typer.Option(help="Split and initialisation seed.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs (thesis: 250).")] = None,
    train_size: Annotated[int | None, typer.Option(help="Training images (thesis: 25000).")] = None,
    test_size: Annotated[int | None, typer.Option(help="Test images (default: whole split).")] = None,
    fid_samples: Annotated[int | None, typer.Option(help="FID sample count; 0 skips FID.")] = None,
    latent_dim: Annotated[int | None, typer.Option(help="Latent size (default: data set's).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (thesis: 256).")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate (thesis: 1e-3).")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32 | bf16 (autocast, opt-in).")] = None,
    checkpoint_every: Annotated[int | None, typer.Option(help="Epochs between checkpoints.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Folder holding the data set's files.")] = None,
) -> None:
    """Train and evaluate one cell for one seed, outside Ray (rerun to resume)."""
    from rlv.config import TrialConfig, from_dict
    from rlv.single import train_to_folder

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
    dataset: Annotated[str, typer.Option(help="mnist | svhn")] = "mnist",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List every cell with its trainable and frozen parameter counts (from the built models)."""
    from rlv.catalog import model_catalog

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
    from rlv.bench import run_benchmark

    run_benchmark(layers=layers.split(","), priors=priors.split(","), encoder=encoder,
                  epochs=epochs, train_size=train_size, precisions=precisions.split(","), log=echo)


def _load_sweep(sweep: str):  # type: ignore[no-untyped-def]
    from rlv.sweep import load_sweep

    return load_sweep(sweep)


@app.command()
def check(sweep: Annotated[str, typer.Argument(help="Sweep name (sweeps/NAME.yaml) or path.")]) -> None:
    """Validate a sweep file without running it: trial count and resources."""
    for line in _load_sweep(sweep).describe():
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
    sweep_json: Annotated[str | None, typer.Option(hidden=True)] = None,  # how a Ray Job gets it
) -> None:
    """Run a sweep's grid x seeds as Ray Tune trials into the Parquet store (rerun to resume)."""
    remote = cluster is not None or (address or "").startswith(("http://", "https://"))
    name = sweep or ("thesis-mnist" if remote else "quick")
    if sweep_json is not None:
        from rlv.sweep import parse_sweep

        spec = parse_sweep(json.loads(sweep_json), source="--sweep-json")
    else:
        spec = _load_sweep(name)
    if remote:
        from rlv.cluster import submit_sweep

        code = submit_sweep(spec, sweep_arg=name, cluster=cluster, address=address, store=store,
                            echo=echo)
        raise typer.Exit(code)
    from rlv.launch import LaunchOptions, run_sweep

    outcome = run_sweep(spec, LaunchOptions(store=store, address=address, num_cpus=num_cpus,
                                            num_gpus=num_gpus), echo)
    for line in outcome.summary():
        echo(line)
    if not outcome.ok:
        raise typer.Exit(1)


@app.command()
def status(
    sweep: Annotated[str, typer.Argument(help="Sweep name or path.")] = "quick",
    store: Annotated[str | None, typer.Option(help="Store folder or URI (overrides the sweep's).")] = None,
) -> None:
    """Finished, running, failed and pending trials of a sweep, and where its store is."""
    from rlv.launch import store_location
    from rlv.status import sweep_status

    spec = _load_sweep(sweep)
    for line in sweep_status(spec, store_location(spec, store)).lines():
        echo(line)


@app.command()
def analyze(
    store: Annotated[str, typer.Argument(help="Store folder or URI.")],
    out: Annotated[Path, typer.Option(help="Folder for report.md, report.html and the CSVs.")],
    sweep: Annotated[str | None, typer.Option(help="Analyse this sweep only.")] = None,
) -> None:
    """The thesis's tables, ANOVAs and plots from a store, as a Markdown and HTML report."""
    from rlv.analysis import write_report

    paths = write_report(store, out, sweep=sweep)
    echo(f"wrote {paths.markdown}, {paths.html} and {paths.anova}")


def main() -> None:
    """Entry point: one line per user mistake, never a traceback for one."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if len(sys.argv) == 1:
        sys.argv.append("--help")
    try:
        code = app(standalone_mode=False)
    except RlvError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.TyperException as exc:  # Typer's own usage errors: unknown option, bad number
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        typer.echo(f"error: {message}", err=True)
        sys.exit(getattr(exc, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
