"""A seed's split of a data set, resident on the trial's device (rlv/datasets.py reads the files).

Each process keeps the split it last used in memory, so a reused Ray actor running the next
seed's cell of the same layer type starts without touching the disk.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from rlv.config import DataConfig
from rlv.datasets import Dataset, effective_sizes, split_indices
from rlv.levels import DATASETS
from rlv.trial.models.vae import derived_seed


@dataclass(frozen=True)
class Split:
    """A seed's train and test images on one device, float in [0, 1], (N, C, 32, 32)."""

    train: torch.Tensor
    test: torch.Tensor
    train_uint8: torch.Tensor  # the same train images as uint8 on the CPU, for FID's real side


def trial_indices(dataset: Dataset, cfg: DataConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The indices of seed `seed`'s train and test images, cut to the configured sizes."""
    train_n, test_n = effective_sizes(dataset, cfg)
    train_idx, _, test_idx = split_indices(dataset.total, dataset.sizes, seed)
    if cfg.test_overlap == "independent":
        # a second permutation of all the images, drawn apart from the first: about
        # train/total of these test images are training images too (config.TEST_OVERLAPS)
        rng = np.random.Generator(np.random.PCG64(derived_seed(seed, "test-overlap")))
        test_idx = rng.permutation(dataset.total)
    return train_idx[:train_n], test_idx[:test_n]


def load_split(cfg: DataConfig, seed: int, device: torch.device,
               memory_format: torch.memory_format = torch.contiguous_format) -> Split:
    """The trial's data, resident on `device` in `memory_format`; the last one is kept in memory
    for reuse (a reused Ray actor running the next seed's cell of the same layer type)."""
    return _load_split_cached(cfg, seed, str(device), memory_format)


@lru_cache(maxsize=1)
def _load_split_cached(cfg: DataConfig, seed: int, device: str,
                       memory_format: torch.memory_format) -> Split:
    dataset = DATASETS.build(cfg.dataset)
    images = dataset.images(cfg.data_dir)
    train_idx, test_idx = trial_indices(dataset, cfg, seed)
    train_u8 = torch.from_numpy(images[train_idx])
    test_u8 = torch.from_numpy(images[test_idx])

    def to_device(u8: torch.Tensor) -> torch.Tensor:
        # (N, C, 32, 32) in [0, 1]; channels_last is a no-op for MNIST's one channel
        return u8.to(device).float().div_(255.0).contiguous(memory_format=memory_format)

    return Split(train=to_device(train_u8), test=to_device(test_u8), train_uint8=train_u8)
