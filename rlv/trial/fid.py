"""FID with torch-fidelity's `inception-v3-compat` network, fast enough for a 2-core CPU.

The features are torch-fidelity's: its `FeatureExtractorInceptionV3` is built with the offline
weights of `rlv.trial.fid_weights`, then turned, once per process and device, into an equivalent that is
cheaper to run (features equal the standard extractor's up to float rounding, ~2e-5):
  - every eval-mode BatchNorm is folded into its conv's weight and bias;
  - on CPU each conv runs with its ReLU fused in (oneDNN post-op) on channels_last tensors, and
    the 299x299 stem runs STEM_CHUNK images at a time so its activations stay in cache;
  - the TF1-compatible bilinear resize to 299x299 is computed row-then-column, which gives
    bit-identical values to torch-fidelity's `interpolate_bilinear_2d_like_tensorflow1x` from a
    tenth of its gathers; grey images are resized once, then repeated to three channels.
On a 2-core AVX2 CPU this runs ~68 s per 1,000 32x32 images at batch_size=16 (larger batches are
slower: ~75 s at 100), against ~150 s for torch-fidelity's default path
(benchmarks/fid_speed.py). The Frechet distance itself is torch-fidelity's
`fid_statistics_to_metric`. Statistics of the real images are cached per key under
`cache_dir()/fid/stats/` (atomic writes: concurrent trials computing one key both write whole,
identical files).
"""

from __future__ import annotations

import functools
import io
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from rlv.errors import RlvError
from rlv.paths import atomic_write_bytes, cache_dir, file_digest

log = logging.getLogger(__name__)

INCEPTION_SIZE = 299  # torch-fidelity's FeatureExtractorInceptionV3.INPUT_IMAGE_SIZE
FEATURE_LAYER = "2048"  # the pool features FID uses
FEATURE_DIM = 2048
STEM_CHUNK = 4  # images per pass through the 299x299 stem on CPU (see FastInception.forward)
_KEY_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")

# One fast extractor per device and process: building one costs seconds.
_EXTRACTORS: dict[str, FastInception] = {}


def _has_fused_conv_relu() -> bool:
    """Whether this torch build exposes oneDNN's conv with a fused ReLU post-op."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")


class ConvReLU(nn.Module):
    """torch-fidelity's BasicConv2d (conv, eval BatchNorm, ReLU) with the BatchNorm folded in."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, block: nn.Module, fused: bool) -> None:
        super().__init__()
        conv, bn = block.get_submodule("conv"), block.get_submodule("bn")
        if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
            raise TypeError(f"expected torch-fidelity's BasicConv2d (conv + bn), got {type(block)}")
        folded = torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
        if folded.bias is None:  # fuse_conv_bn_eval always gives one; a torch change would show here
            raise TypeError("fuse_conv_bn_eval returned a convolution without a bias")
        self.stride = list(folded.stride)
        self.padding = [int(p) for p in folded.padding]  # never 'same'/'valid' in Inception
        self.fused = fused
        # (C_out, C_in, kH, kW) in channels_last: the layout oneDNN's fast kernels use
        self.register_buffer("weight", folded.weight.detach().contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", folded.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused and x.device.type == "cpu":
            return torch.ops.mkldnn._convolution_pointwise(
                x, self.weight, self.bias, self.padding, self.stride, [1, 1], 1, "relu", [], ""
            )
        return F.relu(F.conv2d(x, self.weight, self.bias, self.stride, self.padding), inplace=True)


@functools.lru_cache(maxsize=8)
def _resize_grid(n_in: int, dtype: torch.dtype,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices below and above each of the 299 output positions and the weight of the
    upper one, (299,) each; cached, as building them costs host-to-device copies per batch."""
    pos = torch.arange(0, INCEPTION_SIZE, 1, dtype=dtype, device=device)
    pos = pos * torch.tensor(n_in / INCEPTION_SIZE, dtype=torch.float32, device=device)
    lo = pos.long()
    return lo, (lo + 1).clamp_max(n_in - 1), pos - lo.float()


def tf_resize_299(x: torch.Tensor) -> torch.Tensor:
    """torch-fidelity's TF1 bilinear resize (align_corners=False) of float (B, C, h, w) to 299x299.

    Same arithmetic in the same order as `interpolate_bilinear_2d_like_tensorflow1x(method="slow")`:
    it interpolates along x for each output row from the two source rows, so doing the x step
    once per source row (h rows, not 299) and then gathering rows gives bit-identical output.
    """
    _, _, h, w = x.shape
    x_lo, x_hi, dx = _resize_grid(w, x.dtype, x.device)
    y_lo, y_hi, dy = _resize_grid(h, x.dtype, x.device)
    left, right = x[:, :, :, x_lo], x[:, :, :, x_hi]  # (B, C, h, 299)
    rows = left + (right - left) * dx  # (B, C, h, 299)
    top, bottom = rows[:, :, y_lo, :], rows[:, :, y_hi, :]  # (B, C, 299, 299)
    return top + (bottom - top) * dy.view(INCEPTION_SIZE, 1)


class FastInception(nn.Module):
    """torch-fidelity's inception-v3-compat 2048-d pool features, folded and fused for speed."""

    _BLOCKS = ("Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c",
               "Mixed_6d", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")

    def __init__(self, standard: nn.Module, fused: bool) -> None:
        """Takes over `standard` (a torch-fidelity extractor): its conv blocks are replaced."""
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d

        net = standard
        for parent in list(net.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, BasicConv2d):
                    setattr(parent, name, ConvReLU(child, fused))
        net.fc = nn.Identity()  # FID needs no logits
        self.net = net.eval().requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) with C in {1, 3} -> float32 (B, 2048)."""
        # On CPU the 299x299 stem runs a few images at a time: its activations (5.5 MB per image
        # after Conv2d_2b) then stay in the L3 cache; measured ~6% faster than whole batches.
        chunk = STEM_CHUNK if images.device.type == "cpu" else images.shape[0]
        x = torch.cat([self.stem(images[i : i + chunk]) for i in range(0, images.shape[0], chunk)])
        for name in self._BLOCKS:
            x = self.net.get_submodule(name)(x)  # (B, 192, 35, 35) -> ... -> (B, 2048, 8, 8)
        x = self.net.get_submodule("AvgPool")(x)  # (B, 2048, 1, 1)
        return torch.flatten(x, 1).to(torch.float32)  # (B, 2048)

    def stem(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> (B, 192, 35, 35): resize, scale and the layers before Mixed_5b."""
        layer = self.net.get_submodule
        x = tf_resize_299(images.to(torch.float32))  # (B, C, 299, 299)
        x = (x - 128) / 128  # the TF graph's input scaling, as torch-fidelity writes it
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)  # grey: the same values in all three channels
        x = x.contiguous(memory_format=torch.channels_last)  # (B, 3, 299, 299)
        x = layer("Conv2d_1a_3x3")(x)  # (B, 32, 149, 149)
        x = layer("Conv2d_2a_3x3")(x)  # (B, 32, 147, 147)
        x = layer("Conv2d_2b_3x3")(x)  # (B, 64, 147, 147)
        x = layer("MaxPool_1")(x)  # (B, 64, 73, 73)
        x = layer("Conv2d_3b_1x1")(x)  # (B, 80, 73, 73)
        x = layer("Conv2d_4a_3x3")(x)  # (B, 192, 71, 71)
        return layer("MaxPool_2")(x)  # (B, 192, 35, 35)


class ImageDataset(torch.utils.data.Dataset[torch.Tensor]):
    """uint8 images (N, C, H, W), C in {1, 3}, as torch-fidelity's `calculate_metrics` takes them:
    one (3, H, W) tensor per item (grey repeated). For comparing with torch-fidelity's own path."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i].contiguous()


def standard_extractor(device: torch.device) -> nn.Module:
    """torch-fidelity's own `inception-v3-compat` extractor (2048-d features) on `device`."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    from rlv.trial.fid_weights import inception_weights_path

    extractor = FeatureExtractorInceptionV3(
        "inception-v3-compat", [FEATURE_LAYER],
        feature_extractor_weights_path=str(inception_weights_path()),
    )
    return extractor.to(device).eval()


def extractor(device: torch.device) -> FastInception:
    """The process's fast extractor for `device`, built on first use (weights are read once)."""
    key = str(torch.device(device))
    if key not in _EXTRACTORS:
        start = time.perf_counter()
        standard = standard_extractor(torch.device("cpu"))
        fused = torch.device(device).type == "cpu" and _has_fused_conv_relu()
        fast = FastInception(standard, fused=fused).to(device)
        if torch.device(device).type == "cpu":
            fast = fast.to(memory_format=torch.channels_last)
        _EXTRACTORS[key] = fast
        log.info("FID Inception ready on %s in %.1f s", key, time.perf_counter() - start)
    return _EXTRACTORS[key]


def _check_images(images: torch.Tensor, what: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise RlvError(f"{what}: expected a uint8 torch.Tensor, got "
                       f"{getattr(images, 'dtype', type(images).__name__)}")
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise RlvError(f"{what}: expected shape (N, C, H, W) with C in (1, 3), "
                       f"got {tuple(images.shape)}")
    if images.shape[0] < 2:
        raise RlvError(f"{what}: FID needs at least 2 images for a covariance, got {images.shape[0]}")


def inception_features(images: torch.Tensor, *, device: torch.device,
                       batch_size: int = 100) -> torch.Tensor:
    """float32 (N, 2048) pool features of uint8 images (N, C, H, W), C in {1, 3}, on the CPU."""
    if batch_size < 1:
        raise RlvError(f"batch_size must be >= 1, got {batch_size}")
    model = extractor(device)
    out = torch.empty(images.shape[0], FEATURE_DIM, dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(device)  # (b, C, H, W) uint8
            out[start : start + batch.shape[0]] = model(batch).cpu()
    return out


def inception_statistics(images: torch.Tensor, *, device: torch.device,
                         batch_size: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Mean (2048,) and covariance (2048, 2048), float64, of the images' Inception features."""
    _check_images(images, "inception_statistics")
    start = time.perf_counter()
    features = inception_features(images, device=device, batch_size=batch_size).double().numpy()
    seconds = time.perf_counter() - start
    log.info("Inception features of %d images in %.1f s (%.1f s per 1,000)",
             len(features), seconds, 1000 * seconds / len(features))
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """torch-fidelity's Frechet distance between two Gaussians (its `fid_statistics_to_metric`)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    metric = fid_statistics_to_metric(
        {"mu": np.asarray(mu1, np.float64), "sigma": np.asarray(sigma1, np.float64)},
        {"mu": np.asarray(mu2, np.float64), "sigma": np.asarray(sigma2, np.float64)},
        verbose=False,
    )
    return float(metric[KEY_METRIC_FID])


def stats_path(real_key: str) -> Path:
    """Where the real statistics of `real_key` are cached."""
    if not _KEY_PATTERN.fullmatch(real_key):
        raise RlvError(f"real_key {real_key!r} must be a file name: letters, digits, '.', '_', '-'")
    return cache_dir() / "fid" / "stats" / f"{real_key}.npz"


def _weights_id() -> str:
    """Names the Inception weights in cached statistics, so other weights never reuse them: the
    converted file's name carries its source's SHA1; a $RLV_FID_WEIGHTS file is hashed."""
    from rlv.trial.fid_weights import converted_weights_path, inception_weights_path

    path = inception_weights_path()
    if path != converted_weights_path():  # the user's $RLV_FID_WEIGHTS
        return f"{path.name}-{_sha1(str(path), path.stat().st_mtime_ns)}"
    return path.name


@functools.lru_cache(maxsize=4)
def _sha1(path: str, mtime_ns: int) -> str:
    return file_digest(Path(path), "sha1")


def real_statistics(real_key: str, real_images: Callable[[], torch.Tensor], *,
                    device: torch.device, batch_size: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Cached (mu, sigma) of the real images of `real_key`; computed and saved on a miss."""
    path = stats_path(real_key)
    weights = _weights_id()
    if path.exists():
        with np.load(path) as cached:
            if str(cached["weights"]) == weights:
                return cached["mu"], cached["sigma"]
        log.info("FID statistics %s were made with other weights; recomputing", path)
    images = real_images()
    _check_images(images, f"real_images() of {real_key!r}")
    mu, sigma = inception_statistics(images, device=device, batch_size=batch_size)
    buffer = io.BytesIO()
    np.savez(buffer, mu=mu, sigma=sigma, n=len(images), weights=np.array(weights))
    atomic_write_bytes(path, buffer.getvalue())  # concurrent writers replace whole files
    log.info("cached FID statistics of %d real images at %s", len(images), path)
    return mu, sigma


def fid_score(fake: torch.Tensor, real_key: str, real_images: Callable[[], torch.Tensor], *,
              device: torch.device, batch_size: int = 100) -> float:
    """FID between uint8 images `fake` (N, C, H, W), C in {1, 3}, and the real images of `real_key`.

    `real_images()` returns the real uint8 images and is called only when the statistics of
    `real_key` are not cached yet (cache_dir()/fid/stats/<real_key>.npz, float64 mu and sigma).
    """
    _check_images(fake, "fid_score fake images")
    mu_real, sigma_real = real_statistics(real_key, real_images, device=device, batch_size=batch_size)
    mu_fake, sigma_fake = inception_statistics(fake, device=device, batch_size=batch_size)
    return frechet_distance(mu_fake, sigma_fake, mu_real, sigma_real)
