"""The settings of the analysis's resampling: bootstrap resamples, permutations, the random seed.

Defined once here; `rlv analyze --resamples --permutations --random-seed` and `write_report`
override them. Every bootstrap and permutation draws from its own generator, seeded by the seed
and the names of what it resamples (dataset, metric, model, term, ...), so a number depends on
the settings and its own data only: not on which other metrics a run analyses, nor their order.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from rlv.errors import RlvError


@dataclass(frozen=True)
class Resampling:
    """How many bootstrap resamples (robust.py) and permutations (permutation.py), from which seed."""

    resamples: int = 2000
    permutations: int = 999
    seed: int = 0

    def __post_init__(self) -> None:
        for name, least in (("resamples", 100), ("permutations", 99)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise RlvError(f"{name} = {value!r} is not allowed; it must be an integer >= {least}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise RlvError(f"random seed = {self.seed!r} is not allowed; it must be an integer >= 0")


def generator(seed: int, *keys: object) -> np.random.Generator:
    """A generator for one resampled quantity: `seed` and the text of `keys` (crc32, stable
    across runs and Python versions, unlike `hash`)."""
    words = [zlib.crc32(str(key).encode("utf-8")) for key in keys]
    return np.random.default_rng([seed, *words])
