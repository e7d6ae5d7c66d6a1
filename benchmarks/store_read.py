"""Reading a 2,016-trial store: `load_store` (rlv.analysis) and `rlv status`, per checkout.

    python benchmarks/store_read.py                                  # this checkout
    python benchmarks/store_read.py --repo /tmp/rlv-before --repo .  # two checkouts, one store

The store built (by benchmarks/synthetic_store.py, board_first_render.py's builder too) has the
shape of benchmarks/sweep_scale.py's big sweep as its driver leaves it: the thesis's 24 cells x 84
seeds (2,016 trials), --epochs epoch rows per trial, written by rlv's own StoreWriter in batches
of 20 to 60 trials (one file per table and flush, about 50 each, as the driver's 10-second
flushes leave them), with the sweep's manifest and an ended status file, so that `rlv status`
reads it from the store alone. It is built with this checkout's rlv and read by each --repo's: a
fresh process with that checkout first on PYTHONPATH times `load_store(STORE)` (its import apart),
and `python -m rlv.cli status NAME --store STORE` is timed as a user sees it (process start to
exit). Median of --runs runs each, the checkouts' runs interleaved; one line per number.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))  # run from a checkout, too
sys.path.insert(0, str(HERE / "benchmarks"))

from synthetic_store import build_store  # noqa: E402

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
            files = build_store(store, args.trials, args.sweep, args.epochs, flush=(20, 60))
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
