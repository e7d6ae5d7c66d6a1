"""Settings as factors: parsing, typed levels, trial ids, errors, and their columns in the store."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from rlv import columns as col
from rlv.cli import app
from rlv.config import ModelConfig, TrainConfig, TrialConfig
from rlv.errors import RlvError
from rlv.levels import INITS
from rlv.store.store import Store
from rlv.store.writer import StoreWriter
from rlv.sweep.files import load_sweep
from rlv.sweep.spec import parse_sweep
from rlv.trial.run import epoch_row, run_trial

ROOT = Path(__file__).resolve().parent.parent


def sweep(**factors: Any) -> dict[str, Any]:
    return {"name": "f", "factors": {"encoder": ["L", "NL"], **factors}, "seeds": 2,
            "settings": {"data": {"train_size": 256, "test_size": 128},
                         "train": {"epochs": 1, "batch_size": 128},
                         "eval": {"fid_samples": 0, "samples": 4, "interpolation_pairs": 1}}}


def test_a_setting_factor_crosses_the_grid_and_names_its_trials() -> None:
    spec = parse_sweep(sweep(**{"model.latent_dim": [8, 32]}))
    trials = spec.trials()
    expected = {f"{e}-fc-normal-latent_dim{d}-s{s}"
                for e, d, s in itertools.product(["L", "NL"], [8, 32], [0, 1])}
    assert {c.name for c in trials} == expected and len(trials) == 8
    assert {c.model.latent_dim for c in trials} == {8, 32}
    assert all(c.factors == ("encoder", "model.latent_dim") for c in trials)
    assert spec.factor_columns() == ("encoder", "latent_dim")
    assert trials[0].factor_columns() == ("encoder", "latent_dim")


def test_levels_are_typed_like_the_setting() -> None:
    spec = parse_sweep(sweep(**{"train.lr": [1, 0.01], "model.batchnorm": [False, True],
                                "model.init": ["kaiming_normal"]}))
    trials = spec.trials()
    assert {type(c.train.lr) for c in trials} == {float}  # 1 -> 1.0, as the setting is a float
    assert {c.train.lr for c in trials} == {1.0, 0.01}
    assert {c.model.batchnorm for c in trials} == {False, True}
    names = {c.name for c in trials}
    assert "NL-fc-normal-lr1-batchnormtrue-s1" in names  # init does not vary: not in the id
    assert "L-fc-normal-lr0.01-batchnormfalse-s0" in names
    # trial-name order: named factors first, then the settings as the file lists them
    assert spec.factor_columns() == ("encoder", "lr", "batchnorm", "init")


def test_a_trial_config_with_factors_round_trips_through_a_plain_dict_and_json() -> None:
    cfg = parse_sweep(sweep(**{"model.latent_dim": [8, 32]})).trials()[-1]
    plain = json.loads(cfg.to_json())
    assert plain["factors"] == ["encoder", "model.latent_dim"]
    assert TrialConfig.from_dict(plain) == cfg
    assert TrialConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("factors,message", [
    ({"model.latent_dmi": [8]},
     r"unknown setting 'model.latent_dmi'; allowed: .*latent_dim.*prior_components"),
    ({"train.learning_rate": [0.1]}, r"unknown setting 'train.learning_rate'; allowed: batch_size"),
    ({"modle.latent_dim": [8]}, r"'modle' is no settings section; sections: model, data, train, eval"),
    ({"latent_dim": [8]}, r"unknown factor 'latent_dim'; .*any setting as section.field"),
    ({"model.latent_dim": ["eight"]}, r"model.latent_dim = 'eight' has the wrong type; expected int"),
    ({"model.batchnorm": [1]}, r"model.batchnorm = 1 has the wrong type; expected bool"),
    ({"model.latent_dim": [8, 8]}, r"factor 'model.latent_dim' lists a level twice"),
    ({"model.latent_dim": [None, 8]}, r"level None is not allowed"),
    ({"model.latent_dim": []}, r"needs a non-empty list of levels"),
    ({"model.encoder": ["L"]}, r"factor 'model.encoder' is the factor 'encoder'"),
    ({"layer": ["conv"], "model.latent_dim": [8, 6]},
     r"latent_dim = 6 must be a multiple of 4 for conv layers"),
    ({"model.init": ["he"]}, r"unknown init 'he'; choose one of: xavier_uniform, xavier_normal"),
    ({"model.dropout": [0.5, 1.0]}, r"dropout = 1.0 is not allowed; it must be in \[0, 1\)"),
    ({"data.data_dir": ["/a", "b/c"]}, r"level '/a' cannot be part of a trial id"),
])
def test_bad_setting_factors_say_what_is_wrong(factors: dict[str, Any], message: str) -> None:
    with pytest.raises(RlvError, match=message):
        parse_sweep(sweep(**factors))


def test_a_setting_both_fixed_and_a_factor_is_refused() -> None:
    data = sweep(**{"train.lr": [0.1, 0.01]})
    data["settings"]["train"]["lr"] = 0.1
    with pytest.raises(RlvError, match=r"settings.train.lr is also a factor"):
        parse_sweep(data)


def test_the_shipped_sweeps_keep_their_trial_ids_and_defaults() -> None:
    """Today's files: ids as before (encoder-layer-prior[-objective]-sSEED), every new setting
    at its default (today's behaviour) but the thesis grids' conv flows' width (their `where:`)."""
    for name, objectives in (("quick", ["elbo"]), ("thesis-mnist", ["thesis"]),
                             ("objective-mnist", ["elbo", "thesis"])):
        spec = load_sweep(name)
        suffix = [f"-{o}" for o in objectives] if len(objectives) > 1 else [""]
        expected = [f"{e}-{la}-{p}{o}-s{s}" for e in ("L", "PNL", "NL", "RKS")
                    for la in ("fc", "conv") for p in ("normal", "flow2", "flow6")
                    for o in suffix for s in spec.seeds]
        trials = spec.trials()
        assert sorted(c.name for c in trials) == sorted(expected)
        for c in trials:
            conv_flow = (name != "quick" and c.model.layer == "conv"
                         and c.model.prior != "normal")
            defaults = ModelConfig(encoder=c.model.encoder, layer=c.model.layer,
                                   prior=c.model.prior, latent_dim=c.model.latent_dim,
                                   flow_hidden=128 if conv_flow else ModelConfig.flow_hidden)
            assert c.model == defaults and c.train.warmup_epochs == TrainConfig.warmup_epochs
    assert load_sweep("thesis-svhn").trials()[0].name == "L-conv-flow6-s0"


def test_float_levels_alike_to_six_digits_get_ids_of_their_own() -> None:
    """`:g` printed 0.001 and 0.0010000001 alike; an id's level now reads back as the level, and
    a level whose short form is exact keeps it (the ids of today's stores: lr0.001, lr1e-05)."""
    levels = [0.001, 0.0010000001, 1e-05, 0.25]
    trials = parse_sweep(sweep(**{"train.lr": levels})).trials()
    assert len({c.name for c in trials}) == len(trials) == 2 * 2 * len(levels)
    for c in trials:
        label = c.name.split("-lr", 1)[1].rsplit("-s", 1)[0]
        assert float(label) == c.train.lr
    names = {c.name for c in trials}
    assert {"L-fc-normal-lr0.001-s0", "L-fc-normal-lr1e-05-s0", "NL-fc-normal-lr0.25-s1",
            "L-fc-normal-lr0.0010000001-s0"} <= names
    regularisation = load_sweep("future-regularisation").trials()
    assert regularisation[0].name == "L-conv-flow6-dropout0-batchnormfalse-warmup_epochs0-s0"


@pytest.fixture
def dashed_init(monkeypatch: pytest.MonkeyPatch) -> str:
    """An init registered for this test only, whose name holds '-init': with a data_dir level
    that does too, two cells print the same id (no shipped level can: only data_dir is free)."""
    monkeypatch.setattr(INITS, "_entries", dict(INITS._entries))  # the test's copy
    name = "b-initxavier_normal"
    INITS.register(name, "rlv.trial.models.inits:XavierNormal")
    return name


def test_two_trials_with_one_id_are_refused_in_one_line(dashed_init: str, tmp_path: Path) -> None:
    # data_dir a-initb with init xavier_normal, and data_dir a with init b-initxavier_normal:
    # both ...-data_dira-initb-initxavier_normal-s0
    data = sweep(**{"data.data_dir": ["a", "a-initb"], "model.init": ["xavier_normal", dashed_init]})
    same = "L-fc-normal-data_dira-initb-initxavier_normal-s0"
    message = (f"two trials get the id {same}: data.data_dir = 'a', model.init = "
               f"'{dashed_init}' and data.data_dir = 'a-initb', model.init = 'xavier_normal'")
    with pytest.raises(RlvError, match="^sweep: " + re.escape(message)):
        parse_sweep(data)
    path = tmp_path / "same.yaml"
    path.write_text(yaml.safe_dump(data))
    out = CliRunner().invoke(app, ["check", str(path)])  # in-process: it sees the test's init
    assert out.exit_code == 2 and out.stderr.strip().splitlines() == [
        f"error: {path}: {message}; give levels that differ in their ids"], out.stderr


@pytest.mark.parametrize("name", ["future-priors", "future-prks", "future-latent", "future-init",
                                  "future-regularisation", "cifar10"])
def test_the_future_work_sweeps_check_and_say_which_question_they_answer(name: str) -> None:
    path = ROOT / "sweeps" / f"{name}.yaml"
    text = path.read_text()
    assert text.startswith("# Thesis chapter"), "the first comment names the thesis's question"
    spec = parse_sweep(yaml.safe_load(text), source=str(path))
    assert spec.describe()[0].startswith(f"sweep {name}: OK")
    assert len({c.name for c in spec.trials()}) == spec.size()


def test_future_sweeps_cover_the_levels_the_issue_names() -> None:
    assert set(load_sweep("future-priors").factors["prior"]) == {"mog", "vamp", "normal", "flow6"}
    assert load_sweep("future-latent").factors["model.latent_dim"] == (8, 16, 32, 64)
    assert len(load_sweep("future-init").factors["model.init"]) == 5
    reg = load_sweep("future-regularisation").factors
    assert {"model.dropout", "model.batchnorm", "train.warmup_epochs"} <= set(reg)
    assert "PRKS" in load_sweep("future-prks").factors["encoder"]


def test_setting_factors_are_typed_columns_of_both_store_tables(tmp_path: Path) -> None:
    """Two tiny trials of a sweep with latent_dim, lr and batchnorm as factors, written through
    the store writer: each factor is its own column in `trials` and `epochs`, typed like its
    setting in every file, and `factors` lists the sweep's factor columns."""
    spec = parse_sweep(sweep(**{"model.latent_dim": [4, 8], "train.lr": [0.001],
                                "model.batchnorm": [True]}))
    writer = StoreWriter(Store.open(tmp_path), spec.name)
    chosen = [c for c in spec.trials() if c.model.encoder == "NL" and c.seed == 0]
    for cfg in chosen:
        result = run_trial(cfg)
        writer.queue_epochs([epoch_row(cfg, m) for m in result.epochs])
        writer.queue_trial(result.row, result.images.by_column())
        writer.flush()  # a batch file per trial in each table: each file is typed on its own
    trials = pq.read_table(tmp_path / "trials").to_pandas()
    epochs = pq.read_table(tmp_path / "epochs").to_pandas()
    assert sorted(trials[col.TRIAL_ID]) == ["NL-fc-normal-latent_dim4-s0", "NL-fc-normal-latent_dim8-s0"]
    assert set(trials[col.SWEEP_FACTORS]) == {"encoder,latent_dim,lr,batchnorm"}
    for table in (tmp_path / "trials", tmp_path / "epochs"):
        for f in sorted(table.rglob("*.parquet")):
            schema = pq.read_schema(f)
            assert schema.field("latent_dim").type == pa.int64(), f
            assert schema.field("lr").type == pa.float64(), f
            assert schema.field("batchnorm").type == pa.bool_(), f
    assert sorted(epochs["latent_dim"]) == [4, 8] and set(epochs["lr"]) == {0.001}
    assert sorted(trials["latent_dim"]) == [4, 8] and bool(trials["batchnorm"].all())


def test_a_trial_outside_a_sweep_lists_the_factors_its_name_shows() -> None:
    cfg = TrialConfig()
    assert cfg.factor_columns() == ("encoder", "layer", "prior")
    thesis = TrialConfig.from_dict({"train": {"objective": "thesis"}})
    assert thesis.factor_columns() == ("encoder", "layer", "prior", "objective")
