"""The store: real Parquet that pandas reads, exactly-once rows, atomic files, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from rlv import columns as col
from rlv.errors import RlvError
from rlv.store.files import STATUS_DIR, finished_trials, read_json, read_status
from rlv.store.store import Store
from rlv.store.writer import StoreWriter


def epoch_rows(trial: str, epochs: range, loss: float = 1.0) -> list[dict[str, Any]]:
    return [{col.TRIAL_ID: trial, col.EPOCH: e, col.TRAIN_NEG_ELBO: loss * e, col.TRAIN_RE: 1.0,
             col.TRAIN_RT: -1.0, col.EPOCH_TIME_S: 0.1, col.ENCODER: "L", col.SEED: 0}
            for e in epochs]


def trial_row(trial: str) -> dict[str, Any]:
    return {col.TRIAL_ID: trial, col.ENCODER: "L", col.LAYER: "fc", col.PRIOR: "normal",
            col.SEED: 0, col.TEST_NEG_ELBO: 9.8, col.FID: float("nan"),
            col.STARTED_AT: "2026-01-01T00:00:00+00:00", col.FINISHED_AT: "2026-01-01T00:01:00+00:00",
            col.CONFIG: "{}", "my_extra_metric": 3.5}


def test_rows_are_written_once_even_when_reported_again(tmp_path: Path) -> None:
    # a driver's reports: a trial's epochs (losses tell the reports apart), again before the
    # flush, again after it, and again by a resumed driver
    first, before_flush, after_flush, resumed = (epoch_rows("a", range(1, 4), loss=1.0),
                                                 epoch_rows("a", range(2, 6), loss=2.0),
                                                 epoch_rows("a", range(1, 4), loss=3.0),
                                                 epoch_rows("a", range(1, 7), loss=4.0))
    kept: dict[int, float] = {}  # the first report of each epoch: the one the store must hold
    for r in first + before_flush + after_flush + resumed:
        kept.setdefault(r[col.EPOCH], r[col.TRAIN_NEG_ELBO])

    def new(rows: list[dict[str, Any]], *seen: list[dict[str, Any]]) -> int:
        return len({r[col.EPOCH] for r in rows} - {r[col.EPOCH] for s in seen for r in s})

    writer = StoreWriter(Store.open(tmp_path), "s")
    assert writer.queue_epochs(first) == len(first)
    assert writer.queue_epochs(before_flush) == new(before_flush, first)  # queued already
    assert writer.queue_trial(trial_row("a"), {})
    assert not writer.queue_trial(trial_row("a"), {})
    assert writer.flush() == ["a"]
    assert writer.queue_epochs(after_flush) == new(after_flush, first, before_flush) == 0
    assert not writer.queue_trial(trial_row("a"), {})  # in the store already
    assert writer.flush() == []
    # a new writer (a resumed driver) knows what the store holds
    again = StoreWriter(Store.open(tmp_path), "s")
    assert again.queue_epochs(resumed) == new(resumed, first, before_flush)
    assert not again.queue_trial(trial_row("a"), {})
    assert again.flush() == []
    epochs = pd.read_parquet(tmp_path / "epochs")
    assert sorted(epochs[col.EPOCH]) == sorted(kept)  # each epoch once
    assert dict(zip(epochs[col.EPOCH], epochs[col.TRAIN_NEG_ELBO], strict=True)) == kept
    assert pd.read_parquet(tmp_path / "trials")[col.TRIAL_ID].tolist() == ["a"]


def test_a_flushed_trial_row_is_typed_and_its_images_are_in_the_store(tmp_path: Path) -> None:
    png = b"\x89PNG"
    writer = StoreWriter(Store.open(tmp_path), "s")
    writer.queue_trial(trial_row("a"), {col.IMAGE_SAMPLES: png})
    image = writer.image_path("a", col.IMAGE_SAMPLES)
    assert (tmp_path / image).read_bytes() == png  # written when queued, before the row
    writer.flush()
    trials = pd.read_parquet(tmp_path / "trials")
    assert trials[col.SWEEP].astype(str).tolist() == ["s"]
    assert trials["my_extra_metric"].item() == trial_row("a")["my_extra_metric"]
    assert str(trials[col.STARTED_AT].dtype).startswith("datetime64")
    assert trials[col.IMAGE_SAMPLES].item() == image == "images/s/a/samples.png"


def test_sweeps_are_partitions_of_one_table(tmp_path: Path) -> None:
    for sweep in ("one", "two"):
        writer = StoreWriter(Store.open(tmp_path), sweep)
        writer.queue_trial(trial_row("a"), {})
        writer.flush()
    trials = pd.read_parquet(tmp_path / "trials")
    assert sorted(trials[col.SWEEP].astype(str)) == ["one", "two"]
    only = pd.read_parquet(tmp_path / "trials", filters=[(col.SWEEP, "=", "two")])
    assert only[col.SWEEP].astype(str).tolist() == ["two"]


def test_no_temporary_files_are_left_or_read(tmp_path: Path) -> None:
    writer = StoreWriter(Store.open(tmp_path), "s")
    rows = epoch_rows("a", range(1, 3))
    writer.queue_epochs(rows)
    writer.flush()
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # none left
    junk = tmp_path / "epochs" / "sweep=s" / ".half-written.parquet.tmp"
    junk.write_bytes(b"junk")
    assert len(pd.read_parquet(tmp_path / "epochs")) == len(rows)  # nor read


def test_a_uri_store_works_like_a_folder(tmp_path: Path) -> None:
    writer = StoreWriter(Store.open(f"file://{tmp_path}"), "s")
    writer.queue_trial(trial_row("a"), {})
    writer.flush()
    assert pd.read_parquet(tmp_path / "trials")[col.TRIAL_ID].tolist() == ["a"]


def test_a_corrupt_file_is_named_and_nothing_is_lost(tmp_path: Path) -> None:
    writer = StoreWriter(Store.open(tmp_path), "s")
    writer.queue_epochs(epoch_rows("a", range(1, 3)))
    writer.flush()
    bad = tmp_path / "epochs" / "sweep=s" / "b-e00001-00001.parquet"
    bad.write_bytes(b"not parquet")
    before = sorted(p.name for p in (tmp_path / "epochs" / "sweep=s").iterdir())
    with pytest.raises(RlvError, match=r"corrupt store file .*b-e00001-00001\.parquet"):
        StoreWriter(Store.open(tmp_path), "s")
    assert sorted(p.name for p in (tmp_path / "epochs" / "sweep=s").iterdir()) == before


def test_keys_come_from_one_listing_of_file_names(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Per-trial files (TRIAL_ID.parquet; TRIAL-eFIRST-LAST.parquet, a contiguous run of epochs),
    as stores written before batches hold them: their names are their keys."""
    trials, epochs = tmp_path / "trials" / "sweep=s", tmp_path / "epochs" / "sweep=s"
    trials.mkdir(parents=True)
    epochs.mkdir(parents=True)
    runs = {"a": [(1, 2), (3, 5)], "b-e1": [(1, 2)]}  # b-e1: an id that looks like a run
    for trial, spans in runs.items():
        for first, last in spans:
            pq.write_table(pa.Table.from_pylist(epoch_rows(trial, range(first, last + 1))),
                           epochs / f"{trial}-e{first:05d}-{last:05d}.parquet")
    pq.write_table(pa.Table.from_pylist([trial_row("a")]), trials / "a.parquet")
    (trials / "_metadata").write_bytes(b"")  # not data: skipped

    def no_reading(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the keys were read from a file, not its name")

    monkeypatch.setattr(pq, "read_table", no_reading)
    monkeypatch.setattr(pq, "ParquetFile", no_reading)
    again = StoreWriter(Store.open(tmp_path), "s")
    assert again.trials_written == {"a"} == finished_trials(Store.open(tmp_path), "s")
    assert again.epochs_written == {(trial, e) for trial, spans in runs.items()
                                    for first, last in spans for e in range(first, last + 1)}
    assert finished_trials(Store.open(tmp_path), "none yet") == set()


def test_a_writer_makes_each_folder_once(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    made: list[str] = []

    class Counting(pafs.FSSpecHandler):
        def create_dir(self, path: str, recursive: bool) -> None:
            made.append(path)
            super().create_dir(path, recursive)

    counting = pafs.PyFileSystem(Counting(fsspec.filesystem("file")))
    writer = StoreWriter(Store(str(tmp_path), counting, str(tmp_path)), "s")
    heartbeats = range(1, 4)
    for epoch in heartbeats:  # an epoch committed, then the heartbeat: status and a flush
        writer.queue_epochs(epoch_rows("a", range(epoch, epoch + 1)))
        writer.write_status({"epoch": epoch})
        writer.flush()
    assert sorted(made) == [f"{tmp_path}/_status", f"{tmp_path}/epochs/sweep=s"]
    assert read_status(Store.open(tmp_path), "s") == {"epoch": heartbeats[-1]}
    assert len(list((tmp_path / "epochs" / "sweep=s").iterdir())) == len(heartbeats)  # a batch each
    assert len(pd.read_parquet(tmp_path / "epochs")) == len(heartbeats)


def test_json_files_missing_or_corrupt(tmp_path: Path) -> None:
    opened = Store.open(tmp_path)
    fs, root = opened.fs, opened.root
    assert read_json(fs, f"{root}/nothing.json") is None
    assert read_status(Store.open(tmp_path), "s") == {}
    status = tmp_path / STATUS_DIR / "s.json"
    status.parent.mkdir()
    status.write_text('{"torn": ')
    with pytest.raises(RlvError, match=r"corrupt JSON file .*s\.json"):
        read_status(Store.open(tmp_path), "s")


# --- the sweep's truth: content keys, the manifest, plans (no Ray) -----------------------------

def small_sweep(store: Path, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "g", "store": str(store),
        "factors": {"encoder": ["L", "NL"], "layer": ["fc"], "prior": ["normal"]}, "seeds": 2,
        "settings": {"data": {"train_size": 256, "test_size": 128}, "train": {"epochs": 2},
                     "eval": {"fid_samples": 0}}}
    data.update(changes)
    return data


def store_rows(store: Path, cfgs: list[Any]) -> None:
    """Rows as the driver writes them, each with its trial's config (what matching reads)."""
    writer = StoreWriter(Store.open(store), "g")
    for cfg in cfgs:
        writer.queue_trial({**trial_row(cfg.name), col.CONFIG: cfg.to_json()}, {})
    writer.flush()


def test_a_trial_is_its_content_not_its_name() -> None:
    from dataclasses import replace

    from rlv.config import DataConfig, ModelConfig, TrainConfig, TrialConfig
    from rlv.store.identity import config_key

    base = TrialConfig(model=ModelConfig(encoder="NL"), data=DataConfig(train_size=256), seed=3)
    key = config_key(base)
    # naming, where the data lies and how often to checkpoint change no result
    assert config_key(replace(base, sweep="other", trial_id="NL-fc-normal-latent_dim16-s3")) == key
    assert config_key(replace(base, data=DataConfig(train_size=256, data_dir="/x"))) == key
    assert config_key(replace(base, train=TrainConfig(checkpoint_every=3))) == key
    # MNIST's latent size given explicitly is the default it ran with: the same trial
    assert config_key(replace(base, model=ModelConfig(encoder="NL", latent_dim=16))) == key
    assert config_key(replace(base, model=ModelConfig(encoder="NL", latent_dim=32))) != key
    assert config_key(replace(base, data=DataConfig(train_size=25_000))) != key
    assert config_key(replace(base, data=DataConfig())) == config_key(
        replace(base, data=DataConfig(train_size=25_000)))  # None means the thesis's 25,000
    assert config_key(replace(base, seed=4)) != key
    assert config_key(replace(base, train=TrainConfig(lr=2e-3))) != key


def test_a_plan_runs_only_what_the_store_lacks(tmp_path: Path) -> None:
    from rlv.store.manifest import write_manifest
    from rlv.store.plan import plan_sweep
    from rlv.sweep.spec import parse_sweep

    store = tmp_path / "store"
    spec = parse_sweep(small_sweep(store))
    plan = plan_sweep(spec, Store.open(store))
    assert [c.name for c in plan.trial_configs()] == ["L-fc-normal-s0", "L-fc-normal-s1",
                                                      "NL-fc-normal-s0", "NL-fc-normal-s1"]
    write_manifest(Store.open(store), plan.manifest, trials_run=4)
    store_rows(store, plan.trial_configs()[:3])  # three finished; NL-fc-normal-s1 did not
    grown = parse_sweep(small_sweep(store, seeds=3,
                                    factors={"encoder": ["L", "NL", "RKS"], "layer": ["fc"],
                                             "prior": ["normal"]}))
    plan = plan_sweep(grown, Store.open(store))
    assert sorted(plan.done.values()) == ["L-fc-normal-s0", "L-fc-normal-s1", "NL-fc-normal-s0"]
    assert sorted(c.name for c in plan.trial_configs()) == sorted(
        ["NL-fc-normal-s1", "L-fc-normal-s2", "NL-fc-normal-s2"]
        + [f"RKS-fc-normal-s{s}" for s in range(3)])
    assert plan.total == 9 and plan.outside == 0
    # the same settings written out in full are the same trials (the default made explicit)
    explicit = small_sweep(store)
    explicit["settings"] = {**explicit["settings"], "model": {"latent_dim": 16}}
    assert len(plan_sweep(parse_sweep(explicit), Store.open(store)).done) == 3



def test_the_names_a_plan_gives_its_trials_to_run_are_those_their_configs_get(
        tmp_path: Path) -> None:
    """`rlv check` and `rlv status` name the trials to run without building their configs;
    the names must be the ones a launch gives them (built config by config here)."""
    from rlv.store.manifest import write_manifest
    from rlv.store.plan import plan_sweep
    from rlv.sweep.spec import parse_sweep

    store = tmp_path / "store"
    wide = small_sweep(store, seeds=3, factors={
        "encoder": ["L", "NL"], "layer": ["fc"], "prior": ["normal"], "objective": ["elbo", "thesis"],
        "model.latent_dim": [8, 12], "train.lr": [0.001, 0.0005]})
    plan = plan_sweep(parse_sweep(wide), Store.open(store))
    configs = plan.trial_configs()
    assert plan.to_run_names() == {c.name for c in configs}
    assert "NL-fc-normal-thesis-latent_dim12-lr0.0005-s2" in plan.to_run_names()
    write_manifest(Store.open(store), plan.manifest, trials_run=len(configs))
    store_rows(store, configs[:5])
    plan = plan_sweep(parse_sweep(wide), Store.open(store))
    assert plan.to_run_names() == {c.name for c in configs[5:]}


def test_a_store_written_before_manifests_is_matched_by_its_rows_configs(tmp_path: Path) -> None:
    from rlv.store.plan import plan_sweep
    from rlv.sweep.spec import parse_sweep

    store = tmp_path / "store"
    spec = parse_sweep(small_sweep(store))
    store_rows(store, spec.trials()[:2])  # rows, but no _sweeps/g/spec.json
    plan = plan_sweep(spec, Store.open(store))
    assert sorted(plan.done.values()) == ["L-fc-normal-s0", "L-fc-normal-s1"]
    other = parse_sweep(small_sweep(store, settings={"data": {"train_size": 128},
                                                     "eval": {"fid_samples": 0}}))
    assert not plan_sweep(other, Store.open(store)).done  # other settings: other trials


def test_a_changed_setting_is_refused_naming_both_values(tmp_path: Path) -> None:
    from rlv.store.manifest import write_manifest
    from rlv.store.plan import plan_sweep
    from rlv.sweep.spec import parse_sweep

    store = tmp_path / "store"
    plan = plan_sweep(parse_sweep(small_sweep(store)), Store.open(store))
    write_manifest(Store.open(store), plan.manifest, trials_run=4)
    changed = small_sweep(store, settings={"data": {"train_size": 512, "test_size": 128},
                                           "train": {"epochs": 2}, "eval": {"fid_samples": 0}})
    with pytest.raises(RlvError, match=r"data\.train_size = 256, the sweep file now says 512.*"
                                       r"another name, or another --store"):
        plan_sweep(parse_sweep(changed), Store.open(store))
    # a factor's levels may change: that is growing (or narrowing) the grid
    narrowed = small_sweep(store, factors={"encoder": ["NL"], "layer": ["fc"], "prior": ["normal"]})
    assert plan_sweep(parse_sweep(narrowed), Store.open(store)).total == 2


def test_a_where_setting_is_part_of_each_trial_and_a_changed_one_is_refused(tmp_path: Path) -> None:
    """A `where:` setting changes no id but is in each trial's config: trials are keyed by it,
    and changing, adding or dropping it is refused as a changed fixed setting is, naming the
    cell; a level the last launch did not have is no change."""
    from rlv.store.manifest import write_manifest
    from rlv.store.plan import plan_sweep
    from rlv.store.status import spec_from_store
    from rlv.sweep.spec import parse_sweep

    store = tmp_path / "store"
    factors = {"encoder": ["L", "NL"], "layer": ["fc"], "prior": ["normal", "flow2"]}

    def flows(width: int, levels: list[str] | None = None) -> dict[str, Any]:
        return small_sweep(store, factors={**factors, "encoder": levels or factors["encoder"]},
                           where=[{"when": {"prior": "flow2"},
                                   "settings": {"model": {"flow_hidden": width}}}])

    spec = parse_sweep(flows(128))
    plain = parse_sweep(small_sweep(store, factors=factors))
    plan = plan_sweep(spec, Store.open(store))
    # the same ids as without `where`, other keys (the content) for the flow cells only
    assert [c.name for c in spec.trials()] == [c.name for c in plain.trials()]
    keys = plan_sweep(plain, Store.open(store)).cell_keys
    assert [a == b for a, b in zip(plan.cell_keys, keys, strict=True)] == [True, False, True, False]
    configs = plan.trial_configs()
    write_manifest(Store.open(store), plan.manifest, trials_run=len(configs))
    store_rows(store, configs[:5])
    assert spec_from_store(Store.open(store), "g") == spec  # the manifest keeps the entries
    assert sorted(plan_sweep(spec, Store.open(store)).done.values()) == sorted(
        c.name for c in configs[:5])
    for changed, old, new in ((flows(96), 128, 96), (small_sweep(store, factors=factors), 128, 64)):
        with pytest.raises(RlvError, match=rf"ran its L-fc-flow2 trials with model.flow_hidden = "
                                           rf"{old}, the sweep file now says {new}: .*another --store"):
            plan_sweep(parse_sweep(changed), Store.open(store))
    # a new level's cells ran never: their entry may say what it likes
    grown = parse_sweep(small_sweep(store, factors={**factors, "encoder": ["L", "NL", "RKS"]},
                                    where=[*flows(128)["where"],
                                           {"when": {"encoder": "RKS"},
                                            "settings": {"model": {"flow_hidden": 32}}}]))
    assert len(plan_sweep(grown, Store.open(store)).done) == 5
    # a sweep launched without the entry refuses it once trials ran under the default
    other = tmp_path / "other"
    first = plan_sweep(parse_sweep({**small_sweep(other, factors=factors)}), Store.open(other))
    write_manifest(Store.open(other), first.manifest, trials_run=8)
    with pytest.raises(RlvError, match=r"ran its L-fc-flow2 trials with model.flow_hidden = 64, "
                                       r"the sweep file now says 128"):
        plan_sweep(parse_sweep({**flows(128), "store": str(other)}), Store.open(other))


def test_status_comes_from_the_store_alone_and_a_missing_store_is_an_error(tmp_path: Path) -> None:
    from rlv.store.manifest import write_manifest
    from rlv.store.plan import plan_sweep
    from rlv.store.status import spec_from_store, sweep_status
    from rlv.sweep.spec import parse_sweep

    store = tmp_path / "store"
    spec = parse_sweep(small_sweep(store))
    with pytest.raises(RlvError, match=r"store .*store does not exist"):
        sweep_status(spec, Store.open(store))
    plan = plan_sweep(spec, Store.open(store))
    write_manifest(Store.open(store), plan.manifest, trials_run=4)
    store_rows(store, plan.trial_configs()[:1])
    again = spec_from_store(Store.open(store), "g")
    assert again.to_dict() == spec.to_dict()
    report = sweep_status(again, Store.open(store))
    assert (report.finished, report.pending, report.total) == (["L-fc-normal-s0"], 3, 4)
    with pytest.raises(RlvError, match=r"holds no sweep 'nope' \(sweeps there: g\)"):
        spec_from_store(Store.open(store), "nope")


def test_a_drivers_batches_hold_each_row_once_and_reopen_with_their_keys(tmp_path: Path) -> None:
    writer = StoreWriter(Store.open(tmp_path), "s")
    assert writer.queue_epochs(epoch_rows("a", range(1, 3)) + epoch_rows("b", range(1, 2))) == 3
    assert writer.queue_epochs(epoch_rows("a", range(2, 4))) == 1  # epoch 2 is queued already
    assert writer.queue_trial(trial_row("a"), {col.IMAGE_SAMPLES: b"\x89PNG"})
    assert not writer.queue_trial(trial_row("a"), {})
    assert not (tmp_path / "trials").exists()  # nothing in the tables before the flush
    assert writer.flush() == ["a"]
    assert writer.flush() == [] and writer.queued == 0
    # a new writer (a resumed driver) reads the batches' keys; reported again, nothing is new
    again = StoreWriter(Store.open(tmp_path), "s")
    assert again.trials_written == {"a"} == finished_trials(Store.open(tmp_path), "s")
    assert again.epochs_written == {("a", 1), ("a", 2), ("a", 3), ("b", 1)}
    assert again.queue_epochs(epoch_rows("a", range(1, 5))) == 1
    assert not again.queue_trial(trial_row("a"), {})
    again.queue_trial(trial_row("b"), {})
    again.flush()
    epochs = pd.read_parquet(tmp_path / "epochs")
    pairs = sorted(zip(epochs[col.TRIAL_ID], epochs[col.EPOCH], strict=True))
    assert pairs == [("a", 1), ("a", 2), ("a", 3), ("a", 4), ("b", 1)]
    trials = pd.read_parquet(tmp_path / "trials")
    assert sorted(trials[col.TRIAL_ID]) == ["a", "b"]
    assert trials.set_index(col.TRIAL_ID).loc["a", col.IMAGE_SAMPLES] == "images/s/a/samples.png"
    assert len(list((tmp_path / "trials" / "sweep=s").iterdir())) == 2  # two flushes, two files


def test_a_store_that_is_a_regular_file_is_one_line_for_check_status_and_analyze(
        tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from rlv.cli import app

    store = tmp_path / "results.csv"  # a file where the store should be: reads would find nothing
    store.write_text("not a store\n")
    sweep = tmp_path / "g.yaml"
    sweep.write_text(yaml.safe_dump(small_sweep(store)))
    for args in (["check", str(sweep), "--store", str(store)],
                 ["status", "g", "--store", str(store)],
                 ["analyze", str(store), "--out", str(tmp_path / "report")]):
        out = CliRunner().invoke(app, args)
        assert out.exit_code == 2, (args, out.output)
        assert out.output.strip().splitlines() == [
            f"error: store {str(store)!r} is a file, not a folder: name a store folder (it may "
            "not exist yet) or a URI"], args
    assert store.read_text() == "not a store\n"
    assert not (tmp_path / "report").exists()
