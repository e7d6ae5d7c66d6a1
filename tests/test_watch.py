"""Watching a sweep: `rlv status --watch`, the TensorBoard curves, the dashboard's progress actor.

The event files are read back with TensorBoard's own reader (tests/tb_events.py), independently
of tensorboardX, which writes them; the values are compared with the store's `epochs` and `trials`
tables, which another writer wrote from the same reports.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from blocked import LEAK, make_shims, run_rlv
from gates import wait_for
from tb_events import scalars
from typer.testing import CliRunner

from rlv import columns as col
from rlv.cli import app
from rlv.service.recorder import END, HEARTBEAT, RESULT, RETRY, Event, SweepView
from rlv.store.store import Store


def write_sweep(tmp_path: Path, name: str, **changes: Any) -> Path:
    data: dict[str, Any] = {
        "name": name, "store": str(tmp_path / "store"),
        "factors": {"encoder": ["L", "NL"], "layer": ["fc"], "prior": ["flow2"]},
        "seeds": 1,
        "settings": {"data": {"train_size": 256, "test_size": 128},
                     "train": {"epochs": 3, "batch_size": 128, "checkpoint_every": 1},
                     "eval": {"fid_samples": 0, "samples": 16, "interpolation_pairs": 2}},
        "resources": {"cpu": 1, "gpu": 0},
        "max_failures": 0,
    }
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def status_file(store: Path, sweep: str, trials: dict[str, dict[str, Any]], *, ended: bool,
                driver: str) -> None:
    """A status file as a driver writes it (STORE/_status/SWEEP.json)."""
    folder = store / "_status"
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{sweep}.json.tmp"
    tmp.write_text(json.dumps({"sweep": sweep, "updated_at": datetime.now(UTC).isoformat(),
                               "ended": ended, "driver": driver, "trials": trials}))
    tmp.replace(folder / f"{sweep}.json")


# --- rlv status --watch ------------------------------------------------------------------------


def test_status_watch_refreshes_until_the_sweep_ends_and_exits_1_on_failures(tmp_path: Path) -> None:
    path = write_sweep(tmp_path, "watched")
    store = tmp_path / "store"
    # a live "driver" on this machine: a process of ours that exists while the sweep runs
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    here = f"{socket.gethostname()}:{driver.pid}"
    running = {"L-fc-flow2-s0": {"status": "RUNNING", "epoch": 2, "node": "10.1.2.3 pid 4242"},
               "NL-fc-flow2-s0": {"status": "PENDING", "epoch": 0}}
    status_file(store, "watched", running, ended=False, driver=here)
    watch = subprocess.Popen([sys.executable, "-m", "rlv.cli", "status", str(path), "--watch",
                              "--every", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    assert watch.stdout is not None
    seen: list[str] = []
    try:
        # the sweep ends once the watch has shown it running three times: seen, not timed
        for line in watch.stdout:
            seen.append(line)
            if sum(ln.startswith("sweep watched:") for ln in seen) == 3:
                break
        status_file(store, "watched", {
            "L-fc-flow2-s0": {"status": "RUNNING", "epoch": 3},
            "NL-fc-flow2-s0": {"status": "ERROR", "epoch": 1, "error": "RlvError: diverged"}},
            ended=True, driver=here)
        rest, errors = watch.communicate(timeout=120)
    finally:
        driver.kill()
        driver.wait()
        if watch.poll() is None:
            watch.kill()
            watch.communicate()
    output = "".join(seen) + rest
    assert watch.returncode == 1, output + errors  # a trial failed
    assert "Traceback" not in errors
    first, last = output.split("--- ")[1], output.split("--- ")[-1]
    assert "1 running" in first and "running  L-fc-flow2-s0 (epoch 2, on 10.1.2.3 pid 4242)" in first
    assert "0 finished, 0 running, 1 failed, 1 pending (of 2)" in last
    assert "failed   NL-fc-flow2-s0: RlvError: diverged" in last
    assert "last run ended" in last
    assert output.count("sweep watched:") >= 4  # three while it ran, the last once it ended


@pytest.mark.parametrize("every", ["0", "-1", "inf", "nan", "1e400", "86401"])
def test_status_watch_rejects_a_bad_interval_in_one_line(tmp_path: Path, every: str) -> None:
    path = write_sweep(tmp_path, "interval")
    out = CliRunner().invoke(app, ["status", str(path), "--watch", "--every", every])
    assert out.exit_code == 2, out.output
    assert out.output.strip() == ("error: --every must be a number of seconds above 0 and at "
                                  f"most 86400, not {float(every)}")


def test_watching_a_sweep_no_driver_has_started_says_it_waits_for_one(tmp_path: Path) -> None:
    from rlv.store.status import watch_status
    from rlv.sweep.files import load_sweep

    path = write_sweep(tmp_path, "unstarted")
    store = tmp_path / "store"
    store.mkdir()  # `rlv launch` has made the store; its driver has not written the status yet
    lines: list[str] = []

    def start_later() -> None:  # once the watch has said it waits, a driver runs nothing, ends
        wait_for(lambda: any("waiting for `rlv launch`" in line for line in lines), 120,
                 "the watch to say it waits")
        status_file(store, "unstarted", {}, ended=True, driver="elsewhere:1")

    thread = threading.Thread(target=start_later)
    thread.start()
    try:
        watch_status(load_sweep(str(path)), Store.open(store), lines.append, every_s=0.2)
    finally:
        thread.join()
    blocks = "\n".join(lines).split("--- ")[1:]
    assert len(blocks) >= 2
    assert "waiting for `rlv launch`" in blocks[0]
    assert "waiting for `rlv launch`" not in blocks[-1]


def test_status_watch_still_imports_neither_torch_nor_ray(tmp_path: Path) -> None:
    """`rlv status --watch` as a process where torch and Ray cannot be imported (tests/blocked.py):
    it watches an ended sweep to its end, prints its one block and exits 0."""
    path = write_sweep(tmp_path, "light")
    status_file(tmp_path / "store", "light", {}, ended=True, driver="elsewhere:1")
    out = run_rlv(make_shims(tmp_path / "shims"), "status", str(path), "--watch", "--every", "0.1",
                  cwd=tmp_path, timeout_s=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert LEAK not in out.stderr, out.stderr
    header, *lines = out.stdout.splitlines()
    assert header.startswith("--- ") and header.endswith(" UTC"), out.stdout  # one refresh: it ended
    assert lines[:2] == ["sweep light: 0 finished, 0 running, 0 failed, 2 pending (of 2)",
                         f"store: {tmp_path / 'store'}"], out.stdout
    assert len(lines) == 3 and lines[2].startswith("last run ended "), out.stdout
    assert lines[2].endswith(" (driver elsewhere:1)"), out.stdout


# --- the learning curves' event files (read with tests/tb_events.py) ----------------------------


VIEW = SweepView("curves", "", total=2)  # what the sinks are handed with each event


def epoch_event(name: str, e: int, neg_elbo: float) -> Event:
    """The recorder's event for an epoch the trainable reported."""
    return Event(RESULT, name, epoch_row={
        col.TRIAL_ID: name, col.EPOCH: e, col.TRAIN_NEG_ELBO: neg_elbo, col.TRAIN_RE: neg_elbo - 1,
        col.TRAIN_RT: -1.0, col.FLOW_LOGDET: 0.5, col.EPOCH_TIME_S: 0.1})


def test_a_retried_trial_hides_the_epochs_it_runs_again_and_ends_with_its_test_metrics(
        tmp_path: Path) -> None:
    from rlv.service.curves import CurvesSink

    name = "L-fc-flow2-s0"
    curves = CurvesSink(Store.open(tmp_path / "store"), "retry")
    for e in (1, 2, 3):  # the first attempt: epochs 1-3, then it fails
        curves.handle(epoch_event(name, e, 100.0 + e), VIEW)
    curves.handle(Event(RETRY, name), VIEW)
    for e in (3, 4):  # the retry resumes from the checkpoint of epoch 2
        curves.handle(epoch_event(name, e, 50.0 + e), VIEW)
    curves.handle(Event(RESULT, name, row={
        col.TRIAL_ID: name, col.EPOCHS: 4, col.TEST_NEG_ELBO: 60.5, col.TEST_RE: 55.0,
        col.TEST_RT: -5.5, col.TEST_RT_ELBO: -5.25, col.FLOW_LOGDET: 0.25, col.FID: float("nan")}),
        VIEW)
    curves.handle(Event(END), VIEW)

    run = tmp_path / "store" / "tensorboard" / "retry" / name
    assert len(list(run.glob("events.out.tfevents.*"))) == 2
    got = scalars(run)
    assert got["train/neg_elbo"] == {1: 101.0, 2: 102.0, 3: 53.0, 4: 54.0}
    assert got["train/re"] == {1: 100.0, 2: 101.0, 3: 52.0, 4: 53.0}
    assert got["test/neg_elbo"] == {4: 60.5} and got["test/rt_elbo"] == {4: -5.25}
    assert "test/fid" not in got
    # a remote store (here fsspec's memory://) gets the same events, as parts of each file
    import fsspec

    remote = CurvesSink(Store.open("memory://curves-store"), "retry")
    remote.handle(epoch_event(name, 1, 7.0), VIEW)
    remote.handle(Event(END), VIEW)
    memory = fsspec.filesystem("memory")
    copied = memory.glob(f"/curves-store/tensorboard/retry/{name}/events.out.tfevents.*")
    assert copied
    (tmp_path / "copied").mkdir()
    for part in copied:
        (tmp_path / "copied" / Path(part).name).write_bytes(memory.cat_file(part))
    assert scalars(tmp_path / "copied")["train/neg_elbo"] == {1: 7.0}


def test_a_remote_store_gets_each_finished_trial_s_curves_once(tmp_path: Path) -> None:
    """A sync copies only the runs that changed: a finished trial is not sent again whenever
    another trial reports (that would make every sync cost the whole sweep)."""
    import fsspec

    from rlv.service.curves import CurvesSink

    def final(name: str) -> Event:
        return Event(RESULT, name, row={col.TRIAL_ID: name, col.EPOCHS: 1, col.TEST_NEG_ELBO: 9.0})

    memory = fsspec.filesystem("memory")
    curves = CurvesSink(Store.open("memory://once-store"), "once")
    curves.handle(epoch_event("first", 1, 11.0), VIEW)
    curves.handle(final("first"), VIEW)  # finished: its run is sent now
    sent = memory.glob("/once-store/tensorboard/once/first/events.out.tfevents.*")
    assert sent
    for part in sent:  # if a later sync sent any of the finished run again, it would reappear
        memory.rm(part)
    curves.handle(epoch_event("second", 1, 11.0), VIEW)
    curves.handle(Event(HEARTBEAT), VIEW)
    curves.handle(final("second"), VIEW)
    curves.handle(Event(END), VIEW)
    assert memory.glob("/once-store/tensorboard/once/first/*") == []
    copied = memory.glob("/once-store/tensorboard/once/second/events.out.tfevents.*")
    assert copied
    (tmp_path / "second").mkdir()
    for part in copied:
        (tmp_path / "second" / Path(part).name).write_bytes(memory.cat_file(part))
    assert scalars(tmp_path / "second")["train/neg_elbo"] == {1: 11.0}


def test_a_remote_store_gets_each_byte_of_a_running_trial_s_curves_once(tmp_path: Path) -> None:
    """Object stores cannot append: each sync (the driver's heartbeat) sends what the event file
    gained as a new part, never a file or bytes already sent; TensorBoard reads the parts as one
    run."""
    import fsspec

    from rlv.service.curves import CurvesSink

    memory = fsspec.filesystem("memory")
    curves = CurvesSink(Store.open("memory://parts-store"), "parts")
    pattern = "/parts-store/tensorboard/parts/L-fc-normal-s0/events.out.tfevents.*"

    def synced(epoch: int) -> bool:
        """One heartbeat; whether the parts sent so far hold `epoch` (tensorboardX writes its
        events from a thread of its own: a heartbeat may find an epoch's event not written yet)."""
        curves.handle(Event(HEARTBEAT), VIEW)
        folder = tmp_path / f"sent-{epoch}-{time.monotonic_ns()}"
        folder.mkdir()
        for part in memory.glob(pattern):
            (folder / Path(part).name).write_bytes(memory.cat_file(part))
        return epoch in scalars(folder).get("train/neg_elbo", {})

    for e in (1, 2, 3):
        curves.handle(epoch_event("L-fc-normal-s0", e, 20.0 - e), VIEW)
        wait_for(lambda e=e: synced(e), 60, f"epoch {e} in the parts sent")  # type: ignore[misc]
    curves.handle(Event(END), VIEW)
    parts = sorted(memory.glob(pattern))
    assert len(parts) >= 3, parts  # each epoch waited for its own sync: at least a part each
    (local,) = (Path(curves._local) / "L-fc-normal-s0").iterdir()
    sent = b"".join(memory.cat_file(p) for p in parts)
    assert sent == local.read_bytes()  # every byte once, in order: nothing re-sent
    (tmp_path / "parts").mkdir()
    for p in parts:
        (tmp_path / "parts" / Path(p).name).write_bytes(memory.cat_file(p))
    assert scalars(tmp_path / "parts")["train/neg_elbo"] == {1: 19.0, 2: 18.0, 3: 17.0}


# --- the learning curves and the progress actor, on a real Ray ----------------------------------


def launch(path: Path, cluster: Any) -> subprocess.CompletedProcess[str]:
    """`rlv launch` as a user runs it, as its own driver of the cluster."""
    return subprocess.run(["rlv", "launch", str(path), "--address", cluster.address],
                          capture_output=True, text=True, timeout=600)


def board_log(cluster: Any, sweep: str) -> str:
    """The progress actor's log, through the dashboard's log API (what its page shows)."""
    from ray.util.state import get_log, list_actors

    from rlv.service.dashboard import board_name

    actors = list_actors(address=cluster.address, filters=[("name", "=", board_name(sweep))],
                         detail=True)
    assert len(actors) == 1 and actors[0].class_name == "SweepBoard", actors
    return "".join(get_log(address=cluster.address, actor_id=actors[0].actor_id, tail=1000,
                           timeout=30))


@pytest.mark.slow
def test_every_trial_gets_a_tensorboard_run_matching_the_store_and_the_board_shows_progress(
        tmp_path: Path, watch_cluster) -> None:  # type: ignore[no-untyped-def]
    from ray.util.state import list_actors

    from rlv.store.status import sweep_status
    from rlv.sweep.files import load_sweep

    # test_every 2: the test split's terms after epochs 2 and 4, in the epochs table and as curves
    path = write_sweep(tmp_path, "curves", settings={
        "train": {"epochs": 4},
        "eval": {"fid_samples": 0, "samples": 16, "interpolation_pairs": 2, "test_every": 2}})
    out = launch(path, watch_cluster)
    assert out.returncode == 0, out.stdout + out.stderr
    logdir = tmp_path / "store" / "tensorboard" / "curves"
    assert f"learning curves: tensorboard --logdir {logdir} --host 127.0.0.1" in out.stdout
    assert f"Ray dashboard: {watch_cluster.dashboard}" in out.stdout
    token_file = os.environ["RAY_AUTH_TOKEN_PATH"]  # the session's token (tests/conftest.py)
    assert (f"it asks for a token: paste what `ray get-auth-token` prints (Ray reads it from "
            f"the file {token_file})") in out.stdout
    assert "Jobs > Job name 'rlv sweep curves'" in out.stdout

    store = tmp_path / "store"
    epochs = pd.read_parquet(store / "epochs", filters=[(col.SWEEP, "=", "curves")])
    trials = pd.read_parquet(store / "trials", filters=[(col.SWEEP, "=", "curves")])
    runs = sorted(p.name for p in logdir.iterdir())
    assert runs == sorted(trials[col.TRIAL_ID])  # one run per trial, named by its id
    for trial_id in runs:
        got = scalars(logdir / trial_id)
        mine = epochs[epochs[col.TRIAL_ID] == trial_id].set_index(col.EPOCH).sort_index()
        for tag, column in [("train/neg_elbo", col.TRAIN_NEG_ELBO), ("train/re", col.TRAIN_RE),
                            ("train/rt", col.TRAIN_RT), ("train/flow_logdet", col.FLOW_LOGDET),
                            ("train/epoch_time_s", col.EPOCH_TIME_S)]:
            assert sorted(got[tag]) == [1, 2, 3, 4], tag
            for epoch, value in got[tag].items():
                assert value == pytest.approx(float(mine.loc[epoch, column]), rel=1e-6), (tag, epoch)
        row = trials[trials[col.TRIAL_ID] == trial_id].iloc[0]
        for tag, column in [("test/neg_elbo", col.TEST_NEG_ELBO), ("test/re", col.TEST_RE),
                            ("test/rt", col.TEST_RT)]:
            assert mine[column].isna().tolist() == [True, False, True, False], column
            assert got[tag] == {e: pytest.approx(float(mine.loc[e, column]), rel=1e-6)
                                for e in (2, 4)}, tag
            # after the last epoch, the same evaluation as the trial's own test column
            assert float(mine.loc[4, column]) == pytest.approx(float(row[column]), rel=1e-9)
        assert got["test/rt_elbo"] == {4: pytest.approx(float(row[col.TEST_RT_ELBO]), rel=1e-6)}
        assert "test/fid" not in got  # FID skipped (fid_samples 0): no point rather than NaN

    # the job carries the sweep's name: the dashboard's Job name column
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(watch_cluster.dashboard).list_jobs()
    assert any((j.metadata or {}).get("job_name") == "rlv sweep curves" for j in jobs)
    # the progress actor's log ends with the lines `rlv status` prints
    log = board_log(watch_cluster, "curves")
    final = log.rsplit("--- ", 1)[-1]
    assert "sweep curves: 2 finished, 0 running, 0 failed, 0 pending (of 2)" in final
    assert sweep_status(load_sweep(str(path)), Store.open(store)).lines()[0] in final
    # while the trials ran it said where: this node, and the pids of their ImplicitFunc actors
    functions = {a.pid for a in list_actors(address=watch_cluster.address, detail=True,
                                            filters=[("class_name", "=", "ImplicitFunc")],
                                            limit=1000)}
    shown = {line.strip() for line in log.splitlines() if line.strip().startswith("running")}
    for trial_id in runs:
        placed = [line for line in shown if line.startswith(f"running  {trial_id} (epoch ")]
        assert placed, log
        assert all(" pid " in line for line in placed), log
        pids = {int(line.rsplit(" pid ", 1)[1].rstrip(")")) for line in placed}
        assert pids <= functions, (placed, functions)


@pytest.mark.slow
def test_a_failed_trial_shows_its_one_line_reason_on_the_board_and_in_rlv_status(
        tmp_path: Path, watch_cluster) -> None:  # type: ignore[no-untyped-def]
    from rlv.store.status import sweep_status
    from rlv.sweep.files import load_sweep

    # an absurd learning rate drives the loss to NaN, which the trial reports as divergence
    path = write_sweep(tmp_path, "boardfail", factors={"encoder": ["L"], "prior": ["normal"]},
                       settings={"train": {"lr": 1.0e12}})
    out = launch(path, watch_cluster)
    assert out.returncode == 1, out.stdout + out.stderr
    status = sweep_status(load_sweep(str(path)), Store.open(tmp_path / "store")).lines()
    failed = [line for line in status if line.startswith("  failed   L-fc-normal-s0: ")]
    assert len(failed) == 1 and "diverged" in failed[0], status
    final = board_log(watch_cluster, "boardfail").rsplit("--- ", 1)[-1]
    assert "0 finished, 0 running, 1 failed, 0 pending (of 1)" in final
    assert failed[0] in final.splitlines()


@pytest.mark.slow
def test_the_jobs_path_names_the_job_after_the_sweep_and_its_log_and_board_show_progress(
        tmp_path: Path, watch_cluster) -> None:  # type: ignore[no-untyped-def]
    from ray.job_submission import JobSubmissionClient, JobType

    path = write_sweep(tmp_path, "jobwatch", factors={"encoder": ["RKS"], "prior": ["normal"]})
    out = subprocess.run(["rlv", "launch", str(path), "--address", watch_cluster.dashboard],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert ("the sweep: Jobs > Job name 'rlv sweep jobwatch'; its progress: the job's Logs, or "
            "Actors > rlv-sweep:jobwatch > Logs") in out.stdout
    token_file = os.environ["RAY_AUTH_TOKEN_PATH"]  # how to get in, on this path too
    assert (f"it asks for a token: paste what `ray get-auth-token` prints (Ray reads it from "
            f"the file {token_file})") in out.stdout
    client = JobSubmissionClient(watch_cluster.dashboard)
    jobs = [j for j in client.list_jobs() if j.type == JobType.SUBMISSION
            and (j.metadata or {}).get("job_name") == "rlv sweep jobwatch"]
    assert len(jobs) == 1 and str(jobs[0].submission_id).startswith("rlv-jobwatch-"), jobs
    # the job's page shows its driver's log: the per-trial progress lines
    log = client.get_job_logs(str(jobs[0].submission_id))
    assert "RKS-fc-normal-s0 started" in log and "] RKS-fc-normal-s0 finished in " in log
    assert "sweep jobwatch: 1/1 trials finished" in log
    final = board_log(watch_cluster, "jobwatch").rsplit("--- ", 1)[-1]
    assert "sweep jobwatch: 1 finished, 0 running, 0 failed, 0 pending (of 1)" in final
