"""Sweep files: the shipped sweeps, validation messages, trial names, and `rlv check`."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlv.errors import RlvError
from rlv.resources import trial_resources
from rlv.sweep import Resources, load_sweep, parse_sweep

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


def test_param_space_grids_every_factor_and_the_seed() -> None:
    spec = parse_sweep(base(factors={"encoder": ["L", "NL"], "layer": ["fc", "conv"]}, seeds=3))
    space = spec.param_space()
    assert space["encoder"] == {"grid_search": ["L", "NL"]}
    assert space["seed"] == {"grid_search": [0, 1, 2]}
    assert len(spec.trials()) == 12
    assert parse_sweep(space["sweep_spec"]) == spec  # a trial can rebuild the spec


def test_fingerprint_changes_with_the_trials() -> None:
    a = parse_sweep(base())
    b = parse_sweep(base(settings={"train": {"epochs": 3}}))
    assert a.fingerprint() == parse_sweep(base()).fingerprint() != b.fingerprint()


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


def run_rlv(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["rlv", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


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
    assert missing.returncode == 2 and "available: objective-check, objective-mnist, quick" in missing.stderr
