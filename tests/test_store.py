"""The store: real Parquet that pandas reads, exactly-once rows, atomic files, clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from rlv import columns as col
from rlv.errors import RlvError
from rlv.store import STATUS_DIR, StoreWriter, finished_trials, open_store, read_json, read_status


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
    writer = StoreWriter(str(tmp_path), "s")
    assert writer.write_epochs(epoch_rows("a", range(1, 4))) == 3
    assert writer.write_epochs(epoch_rows("a", range(2, 6), loss=9.0)) == 2  # 2, 3 seen already
    assert writer.write_trial(trial_row("a"), {col.IMAGE_SAMPLES: b"\x89PNG"})
    assert not writer.write_trial(trial_row("a"), {})
    # a new writer (a resumed driver) knows what the store holds
    again = StoreWriter(str(tmp_path), "s")
    assert again.write_epochs(epoch_rows("a", range(1, 7))) == 1  # only epoch 6 is new
    assert not again.write_trial(trial_row("a"), {})
    epochs = pd.read_parquet(tmp_path / "epochs")
    assert sorted(epochs[col.EPOCH]) == [1, 2, 3, 4, 5, 6]
    assert epochs.loc[epochs[col.EPOCH] == 3, col.TRAIN_NEG_ELBO].item() == 3.0  # the first kept
    trials = pd.read_parquet(tmp_path / "trials")
    assert len(trials) == 1 and trials[col.SWEEP].astype(str).tolist() == ["s"]
    assert trials["my_extra_metric"].item() == 3.5
    assert str(trials[col.STARTED_AT].dtype).startswith("datetime64")
    image = trials[col.IMAGE_SAMPLES].item()
    assert image == "images/s/a/samples.png" and (tmp_path / image).read_bytes() == b"\x89PNG"


def test_sweeps_are_partitions_of_one_table(tmp_path: Path) -> None:
    StoreWriter(str(tmp_path), "one").write_trial(trial_row("a"), {})
    StoreWriter(str(tmp_path), "two").write_trial(trial_row("a"), {})
    trials = pd.read_parquet(tmp_path / "trials")
    assert sorted(trials[col.SWEEP].astype(str)) == ["one", "two"]
    only = pd.read_parquet(tmp_path / "trials", filters=[(col.SWEEP, "=", "two")])
    assert len(only) == 1


def test_no_temporary_files_are_left_or_read(tmp_path: Path) -> None:
    writer = StoreWriter(str(tmp_path), "s")
    writer.write_epochs(epoch_rows("a", range(1, 3)))
    (tmp_path / "epochs" / "sweep=s" / ".half-written.parquet.tmp").write_bytes(b"junk")
    assert len(pd.read_parquet(tmp_path / "epochs")) == 2
    assert not [p for p in (tmp_path / "epochs").rglob("*") if p.name.startswith(".")][1:]


def test_a_uri_store_works_like_a_folder(tmp_path: Path) -> None:
    writer = StoreWriter(f"file://{tmp_path}", "s")
    writer.write_trial(trial_row("a"), {})
    assert len(pd.read_parquet(tmp_path / "trials")) == 1


def test_a_corrupt_file_is_named_and_nothing_is_lost(tmp_path: Path) -> None:
    StoreWriter(str(tmp_path), "s").write_epochs(epoch_rows("a", range(1, 3)))
    bad = tmp_path / "epochs" / "sweep=s" / "b-e00001-00001.parquet"
    bad.write_bytes(b"not parquet")
    before = sorted(p.name for p in (tmp_path / "epochs" / "sweep=s").iterdir())
    with pytest.raises(RlvError, match=r"corrupt store file .*b-e00001-00001\.parquet"):
        StoreWriter(str(tmp_path), "s")
    assert sorted(p.name for p in (tmp_path / "epochs" / "sweep=s").iterdir()) == before


def test_keys_come_from_one_listing_of_file_names(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    writer = StoreWriter(str(tmp_path), "s")
    writer.write_epochs(epoch_rows("a", range(1, 3)) + epoch_rows("a", range(4, 5)))
    # 3 and 5 are new, 4 is not: each file holds one contiguous run, so its name lists its keys
    assert writer.write_epochs(epoch_rows("a", range(1, 6)) + epoch_rows("b-e1", range(1, 3))) == 4
    writer.write_trial(trial_row("a"), {})
    names = sorted(p.name for p in (tmp_path / "epochs" / "sweep=s").iterdir())
    assert names == ["a-e00001-00002.parquet", "a-e00003-00003.parquet", "a-e00004-00004.parquet",
                     "a-e00005-00005.parquet", "b-e1-e00001-00002.parquet"]
    (tmp_path / "trials" / "sweep=s" / "_metadata").write_bytes(b"")  # not data: skipped

    def no_reading(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the keys were read from a file, not its name")

    monkeypatch.setattr(pq, "read_table", no_reading)
    monkeypatch.setattr(pq, "ParquetFile", no_reading)
    again = StoreWriter(str(tmp_path), "s")
    assert again.trials_written == {"a"} == finished_trials(str(tmp_path), "s")
    assert again.epochs_written == {("a", e) for e in range(1, 6)} | {("b-e1", 1), ("b-e1", 2)}
    assert finished_trials(str(tmp_path), "none yet") == set()


def test_a_writer_makes_each_folder_once(tmp_path: Path) -> None:
    fsspec = pytest.importorskip("fsspec")
    made: list[str] = []

    class Counting(pafs.FSSpecHandler):
        def create_dir(self, path: str, recursive: bool) -> None:
            made.append(path)
            super().create_dir(path, recursive)

    writer = StoreWriter(str(tmp_path), "s")
    writer._fs = pafs.PyFileSystem(Counting(fsspec.filesystem("file")))
    for epoch in range(1, 4):
        writer.write_status({"epoch": epoch})  # the heartbeat
        writer.write_epochs(epoch_rows("a", range(epoch, epoch + 1)))  # a commit
    assert sorted(made) == [f"{tmp_path}/_status", f"{tmp_path}/epochs/sweep=s"]
    assert read_status(str(tmp_path), "s") == {"epoch": 3}
    assert len(pd.read_parquet(tmp_path / "epochs")) == 3


def test_json_files_missing_or_corrupt(tmp_path: Path) -> None:
    fs, root = open_store(str(tmp_path))
    assert read_json(fs, f"{root}/nothing.json") is None
    assert read_status(str(tmp_path), "s") == {}
    status = tmp_path / STATUS_DIR / "s.json"
    status.parent.mkdir()
    status.write_text('{"torn": ')
    with pytest.raises(RlvError, match=r"corrupt JSON file .*s\.json"):
        read_status(str(tmp_path), "s")
