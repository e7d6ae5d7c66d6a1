"""Reading a 2,016-trial store: `load_store` (rlv.analysis) and `rlv status`, per checkout.

    python benchmarks/store_read.py                                  # this checkout
    python benchmarks/store_read.py --repo /tmp/rlv-before --repo .  # two checkouts, one store

The store built has the shape of benchmarks/sweep_scale.py's big sweep as its driver leaves it
(board_first_render.py's cells and planted effects): the thesis's 24 cells x 84 seeds (2,016
trials), --epochs epoch rows per trial, written by rlv's own StoreWriter in batches of 20 to 60
trials (one file per table and flush, about 50 each, as the driver's 10-second flushes leave
them), with the sweep's manifest and an ended status file, so that `rlv status` reads it from the
store alone. It is built with this checkout's rlv and read by each --repo's: a fresh process with
that checkout first on PYTHONPATH times `load_store(STORE)` (its import apart), and
`python -m rlv.cli status NAME --store STORE` is timed as a user sees it (process start to exit).
Median of --runs runs each, the checkouts' runs interleaved; one line per number.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))  # run from a checkout, too
sys.path.insert(0, str(HERE / "benchmarks"))

from board_first_render import CELLS, EFFECT  # noqa: E402

from rlv import columns as col  # noqa: E402
from rlv.levels import DATASETS  # noqa: E402
from rlv.store.manifest import write_manifest  # noqa: E402
from rlv.store.plan import plan_sweep  # noqa: E402
from rlv.store.writer import StoreWriter  # noqa: E402
from rlv.sweep.spec import parse_sweep  # noqa: E402

# What the child process runs: the import and the read are timed apart.
LOAD = """
import json, sys, time
start = time.perf_counter()
import rlv
from rlv.analysis.load import load_store
imported = time.perf_counter()
results = load_store(sys.argv[1])
done = time.perf_counter()
print(json.dumps({"rlv": rlv.__file__, "import_s": imported - start, "load_s": done - imported,
                  "trials": len(results.trials), "epochs": len(results.epochs)}))
"""


def _opened(root: Path) -> Any:
    """The store handle this checkout's store functions take: a Store where rlv has one (the
    refactor under way), else the location as a str (rlv before it)."""
    try:
        from rlv.store.store import Store
    except ImportError:
        return str(root)
    return Store.open(root)


def build_store(root: Path, trials: int, sweep: str, epochs: int) -> int:
    """A finished sweep of `trials` trials (24 cells x seeds); returns the batch files written."""
    seeds = math.ceil(trials / 24)
    spec = parse_sweep({"name": sweep, "store": str(root), "factors": CELLS, "seeds": seeds,
                        "settings": {"data": {"train_size": 64, "test_size": 64},
                                     "train": {"epochs": epochs, "batch_size": 64},
                                     "eval": {"fid_samples": 0}},
                        "resources": {"cpu": 1, "gpu": 0}, "keep_model": False}, source=sweep)
    store = _opened(root)
    plan = plan_sweep(spec, store)
    configs = plan.trial_configs()
    write_manifest(store, plan.manifest, trials_run=len(configs))
    writer = StoreWriter(store, sweep)
    rng = np.random.default_rng(0)
    started = datetime(2025, 1, 1, tzinfo=UTC)
    next_flush, flushes = int(rng.integers(20, 61)), 0
    for k, cfg in enumerate(configs):
        m = cfg.model
        effect = EFFECT[m.encoder] + EFFECT[m.layer] + EFFECT[m.prior] + rng.normal(0, 0.5)
        levels = {col.ENCODER: m.encoder, col.LAYER: m.layer, col.PRIOR: m.prior,
                  col.DATASET: cfg.data.dataset, col.OBJECTIVE: cfg.train.objective,
                  col.SEED: cfg.seed}
        epoch_s = 0.05 + abs(rng.normal(0, 0.01))
        curve = [60 / e + rng.normal(0, 2) for e in range(1, epochs + 1)]  # (epochs,)
        writer.queue_epochs([{col.TRIAL_ID: cfg.name, col.EPOCH: e, **levels,
                              col.TRAIN_NEG_ELBO: 545 + effect + curve[e - 1],
                              col.TRAIN_RE: 525 + effect + curve[e - 1],
                              col.TRAIN_RT: -20 - effect / 4, col.EPOCH_TIME_S: epoch_s}
                             for e in range(1, epochs + 1)])
        begun = started + timedelta(seconds=2 * k)
        writer.queue_trial({
            col.TRIAL_ID: cfg.name, **levels, col.SWEEP_FACTORS: ",".join(CELLS),
            col.EPOCHS: epochs,
            col.LATENT_DIM: m.resolved_latent_dim(DATASETS.get(cfg.data.dataset).cls.latent_dim),
            col.TRAIN_SIZE: cfg.data.train_size, col.TEST_SIZE: cfg.data.test_size,
            col.TEST_NEG_ELBO: 540 + effect + rng.normal(), col.TEST_RE: 520 + effect + rng.normal(),
            col.TEST_RT: -20 - effect / 4 + rng.normal(),
            col.TRAIN_NEG_ELBO: 545 + effect + curve[-1], col.TRAIN_RE: 525 + effect + curve[-1],
            col.TRAIN_RT: -20 - effect / 4, col.FID: float("nan"), col.FID_SAMPLES: 0,
            col.EPOCH_TIME_S: epoch_s, col.DEVICE: "cpu", col.HOSTNAME: socket.gethostname(),
            col.STARTED_AT: begun.isoformat(),
            col.FINISHED_AT: (begun + timedelta(seconds=epochs * epoch_s + 0.3)).isoformat(),
            col.TRIAL_SECONDS: epochs * epoch_s + 0.3, col.CONFIG: cfg.to_json()}, {})
        if k + 1 == next_flush:
            writer.flush()
            flushes += 1
            next_flush += int(rng.integers(20, 61))
    if writer.queued:
        writer.flush()
        flushes += 1
    writer.write_status({"sweep": sweep, "updated_at": datetime.now(UTC).isoformat(),
                         "ended": True, "driver": f"{socket.gethostname()}:{os.getpid()}",
                         "trials": {}})
    return flushes


def _env(repo: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), env.get("PYTHONPATH")) if p)
    return env


def time_load(repo: Path, store: Path) -> dict[str, Any]:
    """One fresh process of checkout `repo` reading the store with load_store."""
    done = subprocess.run([sys.executable, "-c", LOAD, str(store)], cwd=repo, env=_env(repo),
                          capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"error": tail}
    timing: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if not Path(timing["rlv"]).resolve().is_relative_to(repo):
        raise SystemExit(f"{repo}: the child imported rlv from {timing['rlv']}, not this checkout")
    return timing


def time_status(repo: Path, store: Path, sweep: str) -> dict[str, Any]:
    """`rlv status NAME --store STORE` of checkout `repo`, process start to exit."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rlv.cli", "status", sweep, "--store",
                           str(store)], cwd=repo, env=_env(repo), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = ((done.stderr + done.stdout).strip().splitlines() or ["(no output)"])[-1]
        return {"error": tail}
    return {"status_s": seconds, "first_line": done.stdout.strip().splitlines()[0]}


def _median(runs: list[dict[str, Any]], key: str) -> str:
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        return f"failed ({errors[0]})"
    values = [r[key] for r in runs]
    return (f"median {statistics.median(values):.2f} s (min {min(values):.2f}, "
            f"max {max(values):.2f}, {len(values)} runs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, action="append",
                        help="a checkout whose rlv is timed (repeat for several; default: this)")
    parser.add_argument("--trials", type=int, default=2016, help="trials of the built store")
    parser.add_argument("--epochs", type=int, default=10, help="epoch rows per trial")
    parser.add_argument("--sweep", default="scale", help="the sweep's name")
    parser.add_argument("--store", type=Path, default=None,
                        help="time this store (holding --sweep) instead of building one")
    parser.add_argument("--runs", type=int, default=3, help="runs of each measurement")
    args = parser.parse_args()
    repos = [r.resolve() for r in args.repo or [HERE]]

    folder = Path(tempfile.mkdtemp(prefix="rlv-store-read-"))
    try:
        store = args.store.resolve() if args.store else folder / "store"
        if args.store is None:
            start = time.perf_counter()
            files = build_store(store, args.trials, args.sweep, args.epochs)
            print(f"built {store}: {args.trials:,} trials x {args.epochs} epochs, {files} batch "
                  f"files per table, in {time.perf_counter() - start:.1f} s", flush=True)
        print(f"load average before: {os.getloadavg()[0]:.2f} (on {os.cpu_count()} CPUs)",
              flush=True)
        loads: dict[Path, list[dict[str, Any]]] = {repo: [] for repo in repos}
        statuses: dict[Path, list[dict[str, Any]]] = {repo: [] for repo in repos}
        for _ in range(args.runs):  # interleaved: the checkouts share the machine's load
            for repo in repos:
                loads[repo].append(time_load(repo, store))
                statuses[repo].append(time_status(repo, store, args.sweep))
        for repo in repos:
            read = loads[repo][0] if "error" not in loads[repo][0] else {}
            rows = f" ({read['trials']:,} trials, {read['epochs']:,} epoch rows)" if read else ""
            print(f"{repo}: load_store{rows}: {_median(loads[repo], 'load_s')}", flush=True)
            print(f"{repo}: import rlv.analysis.load: {_median(loads[repo], 'import_s')}",
                  flush=True)
            shown = statuses[repo][0].get("first_line", "")
            print(f"{repo}: rlv status (process start to exit): "
                  f"{_median(statuses[repo], 'status_s')}"
                  + (f"; it says: {shown}" if shown else ""), flush=True)
        print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
