"""The command line, run in-process as Typer's CliRunner drives it: `rlv train`, `rlv models`,
`rlv check`, and one-line errors for bad input (exit 2, no traceback, nothing written)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner, Result

from rlv import columns as col
from rlv.cli import app
from rlv.levels import DATASETS, ENCODERS, LAYERS, OBJECTIVES, PRIORS
from rlv.trial.catalog import model_catalog
from rlv.trial.fid_weights import WEIGHTS_ENV

ROOT = Path(__file__).resolve().parent.parent


def rlv(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def one_line_error(out: Result, message: str) -> None:
    """The user-mistake contract: exit 2, one line on stderr that names the problem."""
    assert out.exit_code == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def test_rlv_train_shows_progress_and_writes_metrics_and_images(tmp_path: Path) -> None:
    out = rlv("train", "--encoder", "NL", "--layer", "conv", "--prior", "flow6", "--seed", "0",
              "--epochs", "2", "--train-size", "600", "--test-size", "300", "--fid-samples", "20",
              "--out", str(tmp_path))
    assert out.exit_code == 0, out.stderr
    assert "epoch 1/2" in out.stdout and "epoch 2/2" in out.stdout and "FID" in out.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for column in (col.TEST_NEG_ELBO, col.TEST_RE, col.TEST_RT, col.GAP_RE, col.FID,
                   col.TRAINABLE_PARAMS, col.EPOCH_TIME_S, col.FLOW_LOGDET, col.CONFIG):
        assert column in metrics
    assert metrics[col.TRIAL_ID] == "NL-conv-flow6-s0" and metrics[col.FID] > 0
    epochs = json.loads((tmp_path / "epochs.json").read_text())
    assert [e[col.EPOCH] for e in epochs] == [1, 2]
    for name in ("reconstructions", "samples", "interpolations"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("args,message", [
    (["--encoder", "XL"], "unknown encoder 'XL'; choose one of: L, PNL, NL, RKS"),
    (["--prior", "flow3"], "unknown prior 'flow3'; choose one of: normal, flow2, flow6"),
    (["--objective", "kl"], "unknown objective 'kl'; choose one of: elbo, thesis"),
    (["--train-size", "-5"], "train_size = -5 is not allowed; it must be > 0"),
    (["--epochs", "two"], "Invalid value for '--epochs'"),
    (["--data-dir", "/nonexistent/mnist"], "MNIST not found in data dir /nonexistent/mnist"),
    (["--dataset", "svhn", "--data-dir", "/nonexistent/svhn"], "put train_32x32.mat"),
])
def test_bad_input_is_one_line_naming_it_with_exit_code_2(args: list[str], message: str,
                                                          tmp_path: Path) -> None:
    out = rlv("train", "--out", str(tmp_path), "--epochs", "1", *args)
    one_line_error(out, message)
    assert not (tmp_path / "metrics.json").exists()


def test_train_out_at_a_regular_file_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    one_line_error(rlv("train", "--out", str(target), "--epochs", "1"), "is a file, not a folder")
    assert target.read_text() == "mine"


def test_corrupt_fid_weights_fail_before_training(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    garbage = tmp_path / "weights.pth"
    garbage.write_bytes(b"not a state dict" * 100)
    monkeypatch.setenv(WEIGHTS_ENV, str(garbage))
    out = rlv("train", "--out", str(tmp_path / "run"), "--epochs", "1", "--train-size", "300",
              "--test-size", "100", "--fid-samples", "20")
    one_line_error(out, f"FID weights file {garbage}")
    assert "epoch 1" not in out.stdout  # refused before training, not after it


def test_fid_weights_of_another_model_are_refused_naming_a_missing_tensor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(2, 2)}, other)
    monkeypatch.setenv(WEIGHTS_ENV, str(other))
    out = rlv("train", "--out", str(tmp_path / "run"), "--epochs", "1", "--fid-samples", "20")
    one_line_error(out, "is not torch-fidelity's inception-v3-compat state dict")


def test_an_unusable_cache_dir_is_one_line_for_train_and_launch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("RLV_CACHE_DIR", str(blocker / "cache"))
    one_line_error(rlv("train", "--out", str(tmp_path / "run"), "--epochs", "1"),
                   f"$RLV_CACHE_DIR {blocker / 'cache'} is not usable")
    one_line_error(rlv("launch", "quick", "--store", str(tmp_path / "store")),
                   f"$RLV_CACHE_DIR {blocker / 'cache'} is not usable")
    assert not (tmp_path / "store").exists()  # refused before the store was touched


def test_corrupt_fid_weights_fail_a_launch_before_any_trial(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    garbage = tmp_path / "weights.pth"
    garbage.write_bytes(b"\x80\x02garbage")
    monkeypatch.setenv(WEIGHTS_ENV, str(garbage))
    one_line_error(rlv("launch", "quick", "--store", str(tmp_path / "store")),
                   f"FID weights file {garbage}")
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("content,message", [
    ("name: caf\xe9\n".encode("latin-1"), "not UTF-8 (byte 9 is 0xe9)"),
    (b"name: quick\x00\nseeds: 1\n", "not a text file (byte 11 is NUL)"),
])
def test_a_sweep_file_that_is_not_utf8_text_is_one_line(content: bytes, message: str,
                                                        tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    for command in ("check", "launch"):
        one_line_error(rlv(command, str(path), "--store", str(tmp_path / "store"))
                       if command == "launch" else rlv(command, str(path)), message)
    assert path.read_bytes() == content


def test_rlv_check_of_a_grid_of_100000_seeds_answers_at_once(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text("name: big\nfactors: {encoder: [L, NL], prior: [normal, flow6]}\n"
                    "seeds: 100000\n")
    out = rlv("check", str(path))
    assert out.exit_code == 0, out.stderr
    assert "400,000 trials" in out.stdout and "NL-fc-flow6-s99999" in out.stdout


def test_rlv_models_lists_every_cell_from_the_built_models() -> None:
    out = rlv("models", "--dataset", "svhn", "--json")
    assert out.exit_code == 0, out.stderr
    rows = json.loads(out.stdout)
    cells = len(LAYERS.names()) * len(PRIORS.names()) * len(ENCODERS.names())
    assert len(rows) == cells and rows == model_catalog("svhn")
    nl = next(r for r in rows if (r["encoder"], r["layer"], r["prior"]) == ("NL", "fc", "normal"))
    assert nl["latent_dim"] == 32 and nl["frozen_params"] > 0


def test_an_unreachable_cluster_is_one_line_not_a_hang(tmp_path: Path) -> None:
    # a process of its own: this test session's driver is already joined to the test cluster
    out = subprocess.run(["rlv", "launch", "quick", "--address", "127.0.0.1:1", "--store",
                          str(tmp_path)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2
    assert "cannot reach Ray at 127.0.0.1:1" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "_sweeps").exists()  # not claimed: an edited file launches after this


@pytest.mark.parametrize("sizes", [["--num-cpus", "2"], ["--num-cpus", "2", "--num-gpus", "1"]])
def test_sizes_for_a_cluster_that_is_joined_are_one_line_before_anything_runs(
        tmp_path: Path, sizes: list[str]) -> None:
    """--num-cpus/--num-gpus size the embedded Ray; a running cluster keeps its size: an error
    naming them, before the store is touched (nothing listens at the address)."""
    out = subprocess.run(["rlv", "launch", "quick", "--address", "127.0.0.1:1", "--store",
                          str(tmp_path / "store"), *sizes], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    given = " and ".join(f"{sizes[i]} {sizes[i + 1]}" for i in range(0, len(sizes), 2))
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stderr.strip() == (
        f"error: {given} size the embedded local Ray, but this launch joins the running cluster "
        "at 127.0.0.1:1 (--address or RAY_ADDRESS), which keeps its own size: leave them out")
    assert not (tmp_path / "store").exists()


def test_rlv_train_help_lists_every_registered_level() -> None:
    out = rlv("train", "--help")
    assert out.exit_code == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    for option, registry in (("--encoder", ENCODERS), ("--layer", LAYERS), ("--prior", PRIORS),
                             ("--objective", OBJECTIVES), ("--dataset", DATASETS)):
        listed = lines[option].split(None, 2)[2].split(" (")[0]  # after "--prior <str>"
        assert listed.split(" | ") == list(registry.names()), lines[option]


def _fake_mnist(folder: Path) -> Path:
    """A torchvision-style MNIST training file of 60,000 blank 28 x 28 images (gzip: 60 kB)."""
    folder.mkdir(parents=True)
    path = folder / "train-images-idx3-ubyte.gz"
    header = b"".join(v.to_bytes(4, "big") for v in (2051, 60_000, 28, 28))
    with gzip.open(path, "wb") as f:
        f.write(header + bytes(60_000 * 28 * 28))
    return path


def test_check_and_launch_take_a_data_dir_as_rlv_data_dir_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the missing-data messages tell the user to pass: `rlv check cifar10 --data-dir DIR`
    finds CIFAR-10 there, and a launch looks for its data there before anything starts."""
    monkeypatch.delenv("RLV_DATA_DIR", raising=False)
    folder = tmp_path / "data" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(b"x")
    missing = rlv("check", "cifar10", "--store", str(tmp_path / "store"))
    assert missing.exit_code == 0 and "data: CIFAR-10 not found" in missing.stdout
    assert "--data-dir" in missing.stdout
    found = rlv("check", "cifar10", "--store", str(tmp_path / "store"),
                "--data-dir", str(tmp_path / "data"))
    assert found.exit_code == 0 and "data:" not in found.stdout, found.stdout
    assert "RLV_DATA_DIR" not in os.environ  # the command's only
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(rlv("launch", "quick", "--store", str(tmp_path / "store"), "--data-dir",
                       str(empty)), f"MNIST not found in data dir {empty}")
    assert not (tmp_path / "store").exists()
    one_line_error(rlv("launch", "quick", "--address", "http://127.0.0.1:1", "--data-dir",
                       str(empty)), "for a sweep on a cluster set data.data_dir in the sweep file")


@pytest.mark.slow
def test_a_launched_trial_reads_its_data_from_the_data_dir(
        tmp_path: Path, ray_cluster) -> None:  # type: ignore[no-untyped-def]
    """End to end: the trial (a Ray worker) decodes the MNIST file of --data-dir, not the offline
    copy: its node cache holds the array keyed by that file alone."""
    source = _fake_mnist(tmp_path / "data")
    sweep = {"name": "datadir", "store": str(tmp_path / "store"), "factors": {"encoder": ["L"]},
             "settings": {"data": {"train_size": 256, "test_size": 128},
                          "train": {"epochs": 1, "batch_size": 128},
                          "eval": {"fid_samples": 0, "samples": 4, "interpolation_pairs": 1}},
             "resources": {"cpu": 1, "gpu": 0}}
    path = tmp_path / "datadir.yaml"
    path.write_text(json.dumps(sweep))
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "RLV_DATA_DIR"}
    out = subprocess.run(["rlv", "launch", str(path), "--address", ray_cluster.address,
                          "--data-dir", str(source.parent)], capture_output=True, text=True,
                         timeout=300, env={**env, "RLV_CACHE_DIR": str(cache)})
    assert out.returncode == 0, out.stdout + out.stderr
    stat = source.stat()
    identity = f"{source.resolve()}|{stat.st_size}|{int(stat.st_mtime)}"
    key = hashlib.sha256(f"mnist|{identity}".encode()).hexdigest()[:16]
    assert sorted(p.name for p in (cache / "data").iterdir()) == [f"mnist-{key}.npy"]


def test_fid_weights_with_the_right_names_but_wrong_shapes_are_refused_before_training(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rlv.trial.fid_weights import expected_keys

    misfit = tmp_path / "misfit.pth"  # every tensor torch-fidelity expects, each of one value
    torch.save({key: torch.zeros(1) for key in expected_keys()}, misfit)
    monkeypatch.setenv(WEIGHTS_ENV, str(misfit))
    out = rlv("train", "--out", str(tmp_path / "run"), "--epochs", "1", "--train-size", "300",
              "--test-size", "100", "--fid-samples", "20")
    one_line_error(out, f"FID weights file {misfit}")
    assert "size mismatch for" in out.output and "epoch 1" not in out.stdout


def test_fid_weights_in_torch_s_older_file_format_pass_the_check(tmp_path: Path) -> None:
    from rlv.trial.fid_weights import check_weights_file, inception_weights_path

    state = torch.load(inception_weights_path(), map_location="cpu", weights_only=True)
    older = tmp_path / "older.pth"  # torch's pre-1.6 format: no zip, so no memory map
    torch.save(state, older, _use_new_zipfile_serialization=False)
    check_weights_file(older)  # raises RlvError if refused
