"""Sweep files: the shipped sweeps, validation messages, trial names, and `rlv check`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlv.config import TrialConfig
from rlv.errors import RlvError
from rlv.service.launch import trial_points, trial_search
from rlv.service.resources import trial_resources
from rlv.sweep.files import load_sweep
from rlv.sweep.spec import TRIAL_KEY, Resources, parse_sweep

ROOT = Path(__file__).resolve().parent.parent


def test_the_shipped_sweeps_have_the_thesis_grids() -> None:
    mnist = load_sweep("thesis-mnist").trials()
    assert len(mnist) == 120 and len({c.name for c in mnist}) == 120
    assert {c.train.epochs for c in mnist} == {250}
    assert {c.eval.fid_samples for c in mnist} == {10_000}
    assert {c.train.objective for c in mnist} == {"thesis"}
    assert {c.seed for c in mnist} == {0, 1, 2, 3, 4}
    svhn = load_sweep("thesis-svhn").trials()
    assert len(svhn) == 20 and {(c.model.layer, c.model.prior) for c in svhn} == {("conv", "flow6")}
    assert {c.train.epochs for c in svhn} == {500} and {c.data.dataset for c in svhn} == {"svhn"}
    both = load_sweep("objective-mnist").trials()
    assert len(both) == 240 and {c.train.objective for c in both} == {"elbo", "thesis"}
    quick = load_sweep("quick").trials()
    assert len(quick) == 24 and {c.eval.fid_samples for c in quick} != {0}


def test_trial_names_read_like_the_design() -> None:
    names = {c.name for c in load_sweep("thesis-mnist").trials()}
    assert "NL-conv-flow6-s3" in names
    both = {c.name for c in load_sweep("objective-mnist").trials()}
    assert {"NL-conv-flow6-elbo-s3", "NL-conv-flow6-thesis-s3"} <= both


def base(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"name": "t", "factors": {"encoder": ["L"]}, "seeds": 1}
    data.update(changes)
    return data


@pytest.mark.parametrize("data,message", [
    (base(factorz={}), r"unknown key 'factorz'; allowed: name, store, factors"),
    (base(seeds=10**9), r"seeds = 1,000,000,000: a sweep holds at most 10,000,000 trials"),
    (base(factors={"encoder": ["L", "NL"]}, seeds=5 * 10**6 + 1),
     r"the grid has 10,000,002 trials \(cells x seeds\): a sweep holds at most 10,000,000"),
    (base(factors={"encoder": ["L", "XX"]}), r"unknown encoder 'XX'; choose one of: L, PNL, NL, RKS"),
    (base(factors={"prior": ["flow4"]}), r"unknown prior 'flow4'; choose one of: normal, flow2, flow6"),
    (base(factors={"colour": ["red"]}), r"unknown factor 'colour'; factors: dataset, encoder"),
    (base(settings={"train": {"epochz": 3}}), r"unknown setting 'train.epochz'; allowed: batch_size"),
    (base(settings={"train": {"epochs": "two"}}), r"train.epochs = 'two' has the wrong type; expected int"),
    (base(settings={"train": {"epochs": -1}}), r"epochs = -1 is not allowed; it must be > 0"),
    (base(settings={"model": {"encoder": "L"}}), r"settings.model.encoder is a factor"),
    (base(seeds=0), r"seeds = 0: a count must be >= 1"),
    (base(resources={"gpu": 1.5}), r"resources.gpu = 1.5: use a fraction in \[0, 1\]"),
    (base(resources={"tpu": 1}), r"unknown resources key 'tpu'; allowed: cpu, gpu"),
    (base(name="a b"), r"name = 'a b'"),
    (base(settings={"eval": {"fid_samples": 30_000}}), r"fid_samples = 30000 exceeds the 25000"),
    (base(settings={"eval": {"fid_samples": 1}}), r"fid_samples = 1 is not allowed: FID needs a covariance"),
])
def test_bad_sweeps_say_what_is_wrong_and_what_is_allowed(data: dict[str, Any], message: str) -> None:
    with pytest.raises(RlvError, match=message):
        parse_sweep(data, source="s.yaml")


def test_each_trials_resolved_config_reaches_tune_once_as_a_plain_dict() -> None:
    spec = parse_sweep(base(factors={"encoder": ["L", "NL"], "layer": ["fc", "conv"]}, seeds=3))
    trials = spec.trials()
    space, _ = trial_search(trials)
    assert list(space) == [TRIAL_KEY]
    presets = trial_points(trials)  # the search's preset points, one per trial
    assert len(presets) == 2 * 2 * 3 == spec.size() == len(trials)
    rebuilt = [TrialConfig.from_dict(p[TRIAL_KEY]) for p in presets]  # what a worker does, once
    assert rebuilt == trials
    assert {(c.model.encoder, c.model.layer, c.seed) for c in rebuilt} == {
        (e, layer, s) for e in ("L", "NL") for layer in ("fc", "conv") for s in range(3)}
    assert len({c.name for c in rebuilt}) == 12


def test_checking_a_grid_of_100000_seeds_is_quick() -> None:
    start = time.perf_counter()
    spec = parse_sweep(base(factors={"encoder": ["L", "NL"]}, seeds=100_000))
    lines = spec.describe()
    assert time.perf_counter() - start < 5.0
    assert "200,000 trials" in lines[0]
    assert lines[-1].endswith("NL-fc-normal-s99999")


def test_gpu_requests_against_cluster_resources() -> None:
    notices: list[str] = []

    def ask(requested: Resources, cluster: dict[str, float], extra: dict[str, float] | None = None):  # type: ignore[no-untyped-def]
        return trial_resources(requested, cluster, notices.append, extra=extra or {})

    assert ask(Resources(1, "auto"), {"CPU": 8, "GPU": 1})["gpu"] == 0.25
    assert ask(Resources(1, "auto"), {"CPU": 8})["gpu"] == 0.0
    assert notices and "no GPU" in notices[0]
    with pytest.raises(RlvError, match=r"asks for 0.25 GPU per trial but the cluster has no GPU"):
        ask(Resources(1, 0.25), {"CPU": 8})
    with pytest.raises(RlvError, match=r"asks for 4 CPUs per trial but the cluster has 2"):
        ask(Resources(4, 0), {"CPU": 2})
    # a head whose autoscaler can add GPU workers: the request waits for them, it is no error
    assert ask(Resources(1, 0.25), {"CPU": 4}, extra={"GPU": 8.0, "CPU": 32.0})["gpu"] == 0.25


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def run_rlv(*args: str) -> Ran:
    """rlv in this process (Typer's CliRunner), from the project folder as a user runs it."""
    from typer.testing import CliRunner

    from rlv.cli import app

    here = os.getcwd()
    os.chdir(ROOT)
    try:
        out = CliRunner().invoke(app, list(args))
    finally:
        os.chdir(here)
    return Ran(out.exit_code, out.stdout, out.stderr)


def test_rlv_check_prints_the_trial_count_and_resources() -> None:
    out = run_rlv("check", "thesis-mnist")
    assert out.returncode == 0, out.stderr
    assert "120 trials" in out.stdout and "1 CPU" in out.stdout and "0.25 GPU" in out.stdout


def test_rlv_check_of_a_bad_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(base(factors={"layer": ["fc", "rnn"]})))
    out = run_rlv("check", str(bad))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "unknown layer type 'rnn'" in out.stderr
    assert "Traceback" not in out.stderr
    missing = run_rlv("check", "no-such-sweep")
    assert missing.returncode == 2
    assert "objective-check, objective-mnist, quick, thesis-mnist" in missing.stderr


def test_rlv_check_cifar10_says_what_data_is_missing_and_passes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RLV_DATA_DIR", raising=False)
    out = run_rlv("check", "cifar10")
    assert out.returncode == 0, out.stderr
    assert "data: CIFAR-10 not found" in out.stdout and "cifar-10-batches-py" in out.stdout
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(b"x")
    monkeypatch.setenv("RLV_DATA_DIR", str(tmp_path))
    found = run_rlv("check", "cifar10")
    assert found.returncode == 0 and "data:" not in found.stdout, found.stdout


def test_rlv_check_of_a_misspelt_setting_factor_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(base(factors={"encoder": ["L"], "model.latnet_dim": [8, 16]})))
    out = run_rlv("check", str(bad))
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr
    assert "unknown setting 'model.latnet_dim'; allowed: batchnorm, dropout" in out.stderr
