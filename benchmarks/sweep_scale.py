"""How rlv's sweep service scales: thousands of near-empty trials on the embedded local Ray.

    python benchmarks/sweep_scale.py --trials 2016 --cpus 2

One run, one local Ray: first a 24-trial sweep (the thesis's 24 cells, one seed) as the baseline,
then a sweep of --trials trials (the 24 cells x enough seeds), both of near-empty trials (64
training and 64 test images, one epoch, batch 64, no FID, keep_model: false), so what is measured
is what Ray, Tune and rlv add. Then, on the big sweep's store:
  - Ray's overhead per trial (slot-seconds not spent inside a trial, per trial) of both sweeps;
  - the driver's peak memory (this process: it is the `rlv launch` driver);
  - `rlv status NAME --store S` (a fresh process, from the store alone) and pandas reading the
    store's `trials` and `epochs` tables, in wall seconds;
  - `rlv check` of the same sweep grown to --check-trials trials (default 100,000), in wall seconds.
Prints one line per number; the README's "Scale" paragraph quotes them.
"""

from __future__ import annotations

import argparse
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from rlv.service.launch import LaunchOptions, SweepOutcome, run_sweep  # noqa: E402
from rlv.sweep.spec import parse_sweep  # noqa: E402

CELLS = {"encoder": ["L", "PNL", "NL", "RKS"], "layer": ["fc", "conv"],
         "prior": ["normal", "flow2", "flow6"]}


def sweep_data(name: str, store: Path, seeds: int) -> dict[str, Any]:
    return {"name": name, "store": str(store), "factors": CELLS, "seeds": seeds,
            "settings": {"data": {"train_size": 64, "test_size": 64},
                         "train": {"epochs": 1, "batch_size": 64},
                         "eval": {"fid_samples": 0, "reconstructions": 8, "samples": 16,
                                  "interpolation_pairs": 2}},
            "resources": {"cpu": 1, "gpu": 0}, "max_failures": 0, "keep_model": False}


def timed(command: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {out.stdout}{out.stderr}")
    return elapsed, out.stdout


def launch(name: str, store: Path, seeds: int, cpus: int, log: Path) -> SweepOutcome:
    spec = parse_sweep(sweep_data(name, store, seeds), source=name)
    with log.open("a") as f:
        outcome = run_sweep(spec, LaunchOptions(num_cpus=cpus, num_gpus=0),
                            lambda line: print(line, file=f, flush=True))
    if not outcome.ok:
        raise SystemExit(f"{name}: trials failed: {sorted(outcome.failed.items())[:3]}")
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2016, help="trials of the big sweep")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the embedded Ray")
    parser.add_argument("--check-trials", type=int, default=100_000)
    parser.add_argument("--store", type=Path, default=None, help="default: a temporary folder")
    args = parser.parse_args()
    store = args.store or Path(tempfile.mkdtemp(prefix="rlv-scale-")) / "store"
    store.parent.mkdir(parents=True, exist_ok=True)
    log = store.parent / "launch.log"
    rlv = [sys.executable, "-m", "rlv.cli"]
    print(f"store {store}; progress lines in {log}", flush=True)

    base = launch("scale-24", store, 1, args.cpus, log)
    print(f"baseline: {len(base.finished)} trials in {base.wall_s:.0f} s on {base.slots} slots, "
          f"trials' own time {base.trial_s:.0f} s; Ray adds {base.overhead_per_trial_s:.2f} s "
          "per trial", flush=True)
    seeds = math.ceil(args.trials / 24)
    big = launch("scale", store, seeds, args.cpus, log)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"big sweep: {len(big.finished)} trials in {big.wall_s:.0f} s on {big.slots} slots, "
          f"trials' own time {big.trial_s:.0f} s; Ray adds {big.overhead_per_trial_s:.2f} s per "
          f"trial ({big.wall_s / len(big.finished):.2f} s of wall time per trial)", flush=True)
    print(f"driver peak memory: {peak_mb:.0f} MB", flush=True)

    status_s, status_out = timed([*rlv, "status", "scale", "--store", str(store)])
    print(f"rlv status scale --store: {status_s:.2f} s ({status_out.splitlines()[0]})", flush=True)
    reader = ("import pandas as pd, sys, time; t = time.perf_counter(); "
              "n = len(pd.read_parquet(sys.argv[1] + '/trials')); a = time.perf_counter() - t; "
              "t = time.perf_counter(); m = len(pd.read_parquet(sys.argv[1] + '/epochs')); "
              "print(n, m, f'{a:.2f}', f'{time.perf_counter() - t:.2f}')")
    _, read_out = timed([sys.executable, "-c", reader, str(store)])
    rows, epoch_rows, trials_s, epochs_s = read_out.split()
    print(f"pandas: trials table ({rows} rows) {trials_s} s, epochs table ({epoch_rows} rows) "
          f"{epochs_s} s", flush=True)

    grown = store.parent / "scale-grown.yaml"
    grown.write_text(yaml.safe_dump(sweep_data("scale", store, math.ceil(args.check_trials / 24))))
    check_s, check_out = timed([*rlv, "check", str(grown)])
    summary = [ln for ln in check_out.splitlines() if ln.startswith(("sweep", "store", "remaining"))]
    print(f"rlv check of {24 * math.ceil(args.check_trials / 24):,} trials: {check_s:.2f} s",
          flush=True)
    for line in summary:
        print(f"  {line}", flush=True)


if __name__ == "__main__":
    main()
