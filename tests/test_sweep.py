"""Sweep files: the shipped sweeps, validation messages, trial names, and `rlv check`."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from rlv.config import TrainConfig, TrialConfig
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
    # the thesis's tables 5.6 and 5.10 count 128-wide nets in its conv flow priors, 64 in its fc ones
    widths = {(c.model.layer, c.model.prior, c.model.flow_hidden) for c in mnist + svhn}
    assert widths == {("fc", p, 64) for p in ("normal", "flow2", "flow6")} | {
        ("conv", "normal", 64), ("conv", "flow2", 128), ("conv", "flow6", 128)}
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


WHERE_SWEEP = """
name: w
factors:
  encoder: [L, NL]
  layer: [fc, conv]
  prior: [normal, flow2, flow6]
seeds: 2
settings:
  train: {epochs: 3}
  model: {flow_hidden: 32}
where:
  - when: {layer: conv, prior: [flow2, flow6]}   # a list of levels: either matches
    settings: {model: {flow_hidden: 128}}
  - when: {encoder: NL, layer: conv}             # later entries go on top of earlier ones
    settings: {model: {flow_hidden: 96}, train: {lr: 0.0005}}
"""


def test_where_sets_a_setting_for_the_cells_whose_levels_match() -> None:
    data = yaml.safe_load(WHERE_SWEEP)
    spec = parse_sweep(data, source="w.yaml")
    trials = spec.trials()
    assert len(trials) == 2 * 2 * 3 * 2
    for c in trials:
        conv, flow, nl = c.model.layer == "conv", c.model.prior != "normal", c.model.encoder == "NL"
        assert c.model.flow_hidden == (96 if conv and nl else 128 if conv and flow else 32), c.name
        assert c.train.lr == (0.0005 if conv and nl else TrainConfig.lr), c.name
        assert c.train.epochs == 3
    # the ids (and the factors) are those of the sweep without `where`: it is no factor
    plain = parse_sweep({k: v for k, v in data.items() if k != "where"})
    assert [c.name for c in trials] == [c.name for c in plain.trials()]
    assert trials[0].factors == plain.trials()[0].factors == ("encoder", "layer", "prior")
    # the manifest's form reads back as the same spec (and a Ray Job's --sweep-json)
    assert parse_sweep(spec.to_dict()) == spec
    assert parse_sweep(yaml.safe_load(yaml.safe_dump(spec.to_dict()))) == spec
    assert "where" not in plain.to_dict()  # a sweep without it keeps its manifest as it was
    conv_flows, conv_nl = 2 * 2 * 2, 3 * 2  # trials: encoders x flows x seeds, priors x seeds
    assert spec.describe()[4:6] == [
        f"where layer = conv, prior = flow2|flow6: model.flow_hidden = 128 "
        f"({conv_flows} of {len(trials)} trials)",
        f"where encoder = NL, layer = conv: model.flow_hidden = 96, train.lr = 0.0005 "
        f"({conv_nl} of {len(trials)} trials)"]


def test_where_on_a_setting_factor_matches_its_typed_levels() -> None:
    data = base(factors={"layer": ["fc", "conv"], "model.latent_dim": [8, 16], "train.lr": [0.001, 1]},
                where=[{"when": {"model.latent_dim": 16, "train.lr": [1]},
                        "settings": {"train": {"batch_size": 128}}}])
    trials = parse_sweep(data).trials()
    batch = {(c.model.latent_dim, c.train.lr): c.train.batch_size for c in trials}
    assert batch == {(8, 0.001): 256, (8, 1.0): 256, (16, 0.001): 256, (16, 1.0): 128}
    assert len(trials) == 8 and len({c.name for c in trials}) == 8


def test_where_may_mend_a_cell_that_the_fixed_settings_cannot_run() -> None:
    data = base(factors={"layer": ["fc", "conv"]}, settings={"model": {"latent_dim": 6}})
    with pytest.raises(RlvError, match=r"latent_dim = 6 must be a multiple of 4 for conv"):
        parse_sweep(data)
    data["where"] = [{"when": {"layer": "conv"}, "settings": {"model": {"latent_dim": 8}}}]
    assert {(c.model.layer, c.model.latent_dim) for c in parse_sweep(data).trials()} == {
        ("fc", 6), ("conv", 8)}
    # an error the fixed settings give a cell an entry applies to is theirs, not the entry's
    data["where"] = [{"when": {"layer": "conv"}, "settings": {"model": {"flow_hidden": 8}}}]
    with pytest.raises(RlvError, match=r"^s.yaml: latent_dim = 6 must be a multiple of 4"):
        parse_sweep(data, source="s.yaml")


def where(when: Any, settings: Any = None, **extra: Any) -> dict[str, Any]:
    """A sweep of fc and conv cells whose one `where` entry is given."""
    entry = {"when": when, "settings": {"model": {"flow_hidden": 128}} if settings is None else settings}
    return base(factors={"encoder": ["L", "NL"], "layer": ["fc", "conv"], "model.latent_dim": [8, 16]},
                where=[{**entry, **extra}])


@pytest.mark.parametrize("data,message", [
    (base(where={"when": {"layer": "conv"}}), r"^s.yaml: where must be a list of entries \{when: "),
    (base(where=["conv"]), r"^s.yaml: where\[0\] must be a mapping with keys when, settings"),
    (where({"layer": "conv"}, then=1), r"where\[0\]: unknown key 'then'; allowed: when, settings$"),
    (where(None), r"where\[0\].when must be a mapping of factor -> level or list of levels, naming "
                  r"at least one of this sweep's factors: encoder, layer, model.latent_dim"),
    (where({}), r"where\[0\].when must be a mapping .*\(a setting for every cell goes under settings\)"),
    (where({"layr": "conv"}), r"where\[0\].when names 'layr', which is no factor of this sweep; its "
                              r"factors: encoder, layer, model.latent_dim$"),
    (where({"prior": "flow2"}), r"where\[0\].when names 'prior', which is no factor of this sweep"),
    (where({"seed": 0}), r"where\[0\].when names the seed, which is no factor here"),
    (where({"layer": "cnv"}), r"where\[0\].when: layer = 'cnv' is no level of this sweep; its "
                              r"levels: fc, conv$"),
    (where({"model.latent_dim": 12}), r"where\[0\].when: model.latent_dim = 12 is no level of this "
                                      r"sweep; its levels: 8, 16$"),
    (where({"model.latent_dim": "8"}), r"where\[0\].when: model.latent_dim = '8' is no level"),
    (where({"layer": []}), r"where\[0\].when.layer needs a level or a list of levels; its levels: fc"),
    (where({"layer": ["conv", "conv"]}), r"where\[0\].when.layer lists a level twice: \['conv', 'conv'\]"),
    (where({"layer": "conv"}, {}), r"where\[0\].settings must be a mapping with sections model, data, "
                                   r"train, eval, setting at least one value, got \{\}"),
    (where({"layer": "conv"}, {"modle": {"flow_hidden": 128}}),
     r"where\[0\]: unknown settings section 'modle'; allowed: model, data, train, eval$"),
    (where({"layer": "conv"}, {"model": 128}), r"where\[0\].settings.model must be a mapping of "
                                               r"setting -> value, got 128$"),
    (where({"layer": "conv"}, {"model": {"flow_hiden": 128}}),
     r"where\[0\]: unknown setting 'model.flow_hiden'; allowed: batchnorm, dropout, encoder, "
     r"flow_hidden"),
    (where({"layer": "conv"}, {"model": {"flow_hidden": "wide"}}),
     r"where\[0\]: model.flow_hidden = 'wide' has the wrong type; expected int$"),
    (where({"layer": "conv"}, {"model": {"prior": "flow6"}}),
     r"where\[0\]: model.prior is the factor 'prior': a cell's level is set by factors.prior alone$"),
    (where({"layer": "conv"}, {"model": {"latent_dim": 32}}),
     r"where\[0\]: model.latent_dim is the factor 'model.latent_dim': a cell's level is set by "
     r"factors.model.latent_dim alone$"),
    (where({"layer": "conv"}, {"data": {"data_dir": "data"}}),
     r"where\[0\]: data.data_dir cannot depend on the levels .*give it under settings.data$"),
    # values that type-check but cannot run are caught cell by cell, naming the entry
    (where({"layer": "conv"}, {"model": {"flow_hidden": 0}}),
     r"^s.yaml: where\[0\] \(layer = conv\): flow_hidden = 0 is not allowed; it must be > 0$"),
    (where({"encoder": "NL", "model.latent_dim": [8, 16]}, {"model": {"dropout": 1.5}}),
     r"^s.yaml: where\[0\] \(encoder = NL, model.latent_dim = 8\|16\): dropout = 1.5 is not "
     r"allowed; it must be in \[0, 1\)$"),
])
def test_bad_where_entries_say_what_is_wrong_and_what_is_allowed(data: dict[str, Any],
                                                                 message: str) -> None:
    with pytest.raises(RlvError, match=message):
        parse_sweep(data, source="s.yaml")


def test_the_later_where_entry_that_breaks_a_cell_is_the_one_named() -> None:
    data = where({"layer": "conv"})
    data["where"].append({"when": {"encoder": "NL"}, "settings": {"eval": {"samples": 16}}})
    data["where"].append({"when": {"model.latent_dim": 16}, "settings": {"model": {"flow_hidden": -4}}})
    with pytest.raises(RlvError, match=r"^s.yaml: where\[2\] \(model.latent_dim = 16\): "
                                       r"flow_hidden = -4 is not allowed"):
        parse_sweep(data, source="s.yaml")


def test_rlv_check_of_a_bad_where_value_is_one_line_and_exit_2(tmp_path: Path) -> None:
    text = WHERE_SWEEP.replace("flow_hidden: 96", "flow_hidden: -96")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    out = run_rlv("check", str(bad), "--store", str(tmp_path / "store"))
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0, out.stderr
    assert (f"{bad}: where[1] (encoder = NL, layer = conv): flow_hidden = -96 is not allowed; it "
            "must be > 0") in out.stderr
    good = tmp_path / "good.yaml"
    good.write_text(WHERE_SWEEP)
    out = run_rlv("check", str(good), "--store", str(tmp_path / "store"))
    assert out.returncode == 0, out.stderr
    assert "where layer = conv, prior = flow2|flow6: model.flow_hidden = 128 (8 of 24 trials)" in (
        out.stdout.splitlines())
