"""The command line, run as users run it: `rlv train`, `rlv models`, and one-line errors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from rlv import columns as col
from rlv.catalog import model_catalog

ROOT = Path(__file__).resolve().parent.parent


def rlv(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rlv", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def test_rlv_train_shows_progress_and_writes_metrics_and_images(tmp_path: Path) -> None:
    out = rlv("train", "--encoder", "NL", "--layer", "conv", "--prior", "flow6", "--seed", "0",
              "--epochs", "2", "--train-size", "600", "--test-size", "300", "--fid-samples", "20",
              "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
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
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr
    assert not (tmp_path / "metrics.json").exists()


def test_rlv_models_lists_every_cell_from_the_built_models() -> None:
    out = rlv("models", "--dataset", "svhn", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert len(rows) == 24 and rows == model_catalog("svhn")
    nl = next(r for r in rows if (r["encoder"], r["layer"], r["prior"]) == ("NL", "fc", "normal"))
    assert nl["latent_dim"] == 32 and nl["frozen_params"] > 0


def test_an_unreachable_cluster_is_one_line_not_a_hang(tmp_path: Path) -> None:
    out = rlv("launch", "quick", "--address", "127.0.0.1:1", "--store", str(tmp_path), timeout=120)
    assert out.returncode == 2
    assert "cannot reach Ray at 127.0.0.1:1" in out.stderr and "Traceback" not in out.stderr
