"""Data sets: sources, padding, per-seed splits, device residency, and missing-file errors."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch
from scipy.io import savemat

from rlv.config import DataConfig
from rlv.datasets import Mnist, SplitSizes, Svhn, split_indices
from rlv.errors import RlvError
from rlv.levels import DATASETS
from rlv.trial.data import load_split


@pytest.fixture(scope="module")
def mnist_offline() -> np.ndarray:
    return DATASETS.build("mnist").images(None)


def test_offline_mnist_is_60000_padded_uint8_images(mnist_offline: np.ndarray) -> None:
    assert mnist_offline.shape == (60_000, 1, 32, 32) and mnist_offline.dtype == np.uint8
    assert mnist_offline.max() == 255
    border = np.ones((32, 32), bool)
    border[2:30, 2:30] = False
    assert not mnist_offline[:, 0][:, border].any(), "the 2-pixel border must be zero"


def test_mnist_from_a_user_folder_of_torchvision_files_equals_the_offline_copy(
        tmp_path, mnist_offline: np.ndarray, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RLV_CACHE_DIR", str(tmp_path / "cache"))
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = mnist_offline[:, 0, 2:30, 2:30]  # back to (60000, 28, 28)
    header = b"".join(v.to_bytes(4, "big") for v in (2051, 60_000, 28, 28))
    with gzip.open(raw / "train-images-idx3-ubyte.gz", "wb", compresslevel=1) as f:
        f.write(header + images.tobytes())
    from_folder = Mnist().images(str(tmp_path / "data"))
    assert np.array_equal(from_folder, mnist_offline)


def test_a_folder_without_the_files_names_the_folder_and_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RlvError, match=r"MNIST not found in data dir .*train-images-idx3-ubyte\.gz"):
        Mnist().images(str(tmp_path))
    with pytest.raises(RlvError, match=r"SVHN not found in data dir .*train_32x32\.mat"):
        Svhn().images(str(tmp_path))


def test_svhn_reads_the_mat_layout(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RLV_CACHE_DIR", str(tmp_path / "cache"))

    class TinySvhn(Svhn):  # the real file holds 73,257 images; the layout is what matters
        total = 7
        sizes = SplitSizes(3, 2, 2)

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 3, 32, 32), dtype=np.uint8)  # (N, C, H, W)
    x = np.transpose(images, (2, 3, 1, 0))  # the .mat stores (H, W, C, N)
    savemat(tmp_path / "train_32x32.mat", {"X": x, "y": np.ones((7, 1), np.uint8)})
    assert np.array_equal(TinySvhn().images(str(tmp_path)), images)


def test_splits_have_the_thesis_sizes_are_disjoint_and_reproducible() -> None:
    for name, (train, val, test, total) in {"mnist": (25_000, 10_000, 25_000, 60_000),
                                             "svhn": (25_000, 10_000, 38_257, 73_257)}.items():
        ds = DATASETS.build(name)
        a, b, c = split_indices(ds.total, ds.sizes, seed=3)
        assert (len(a), len(b), len(c), ds.total) == (train, val, test, total)
        assert len(np.unique(np.concatenate([a, b, c]))) == train + val + test
        again = split_indices(ds.total, ds.sizes, seed=3)
        assert all(np.array_equal(x, y) for x, y in zip((a, b, c), again, strict=True))
        other = split_indices(ds.total, ds.sizes, seed=4)
        assert not np.array_equal(a, other[0])


def test_load_split_puts_float_images_on_the_device_and_truncates(mnist_offline: np.ndarray) -> None:
    cfg = DataConfig(train_size=300, test_size=200)
    split = load_split(cfg, 1, torch.device("cpu"))
    assert split.train.shape == (300, 1, 32, 32) and split.test.shape == (200, 1, 32, 32)
    assert split.train.dtype == torch.float32 and 0 <= split.train.min() and split.train.max() <= 1
    train_idx, _, test_idx = split_indices(60_000, Mnist.sizes, 1)
    assert np.array_equal(split.train_uint8.numpy(), mnist_offline[train_idx[:300]])
    assert torch.equal(split.test, torch.from_numpy(mnist_offline[test_idx[:200]]).float() / 255)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_split_lives_on_the_gpu() -> None:
    split = load_split(DataConfig(train_size=100, test_size=100), 0, torch.device("cuda"))
    assert split.train.is_cuda and split.test.is_cuda
