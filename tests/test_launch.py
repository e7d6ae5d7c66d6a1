"""The sweep service on a real Ray cluster: packing, the store, failures, resuming, Ray Jobs
(growing a sweep in place: tests/test_grow.py).

All tests share the session's `ray start --head` cluster (tests/conftest.py): 4 CPUs and one
declared GPU on this CPU-only machine. Trials are tiny (hundreds of images, a few epochs).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from crafted import crafted_checkpoint
from gates import Gates, alive, checkpoint_epoch, descends_from, wait_for

from rlv import columns as col
from rlv.service.launch import LaunchOptions, run_sweep
from rlv.store.files import read_status
from rlv.store.store import Store
from rlv.sweep.spec import parse_sweep

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def sweep_file(tmp_path: Path, name: str, **changes: Any) -> Path:
    data: dict[str, Any] = {
        "name": name, "store": str(tmp_path / "store"),
        "factors": {"encoder": ["L", "NL"], "layer": ["fc"], "prior": ["normal", "flow2"]},
        "seeds": 1,
        "settings": {"data": {"train_size": 512, "test_size": 256},
                     "train": {"epochs": 3, "batch_size": 128, "checkpoint_every": 1},
                     "eval": {"fid_samples": 0, "samples": 16, "interpolation_pairs": 2}},
        "resources": {"cpu": 1, "gpu": 0},
        "max_failures": 1,
    }
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def load(path: Path):  # type: ignore[no-untyped-def]
    return parse_sweep(yaml.safe_load(path.read_text()), source=str(path))


def assert_store_complete(store: Path, sweep: str, trials: list[str], epochs: int) -> pd.DataFrame:
    """Every trial row and every epoch row exactly once."""
    rows = pd.read_parquet(store / "trials", filters=[(col.SWEEP, "=", sweep)])
    assert sorted(rows[col.TRIAL_ID]) == sorted(trials)
    ep = pd.read_parquet(store / "epochs", filters=[(col.SWEEP, "=", sweep)])
    keys = list(zip(ep[col.TRIAL_ID], ep[col.EPOCH], strict=True))
    assert len(keys) == len(set(keys)), "an epoch row is duplicated"
    assert sorted(keys) == sorted((t, e) for t in trials for e in range(1, epochs + 1))
    return rows


def max_overlap(rows: pd.DataFrame) -> int:
    """The most trials that ran at the same moment, from their start and finish times."""
    events = [(t, 1) for t in rows[col.STARTED_AT]] + [(t, -1) for t in rows[col.FINISHED_AT]]
    running = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        running += step
        peak = max(peak, running)
    return peak


def test_fractional_gpus_pack_four_trials_and_the_store_gets_every_row_once(
        tmp_path: Path, ray_cluster, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    # 0.5 CPU and 0.25 GPU per trial: the 4 CPUs would fit 8 at once, the one GPU fits 4
    path = sweep_file(tmp_path, "pack", factors={"encoder": ["L", "PNL", "NL", "RKS"],
                                                 "prior": ["normal", "flow2"]},
                      settings={"train": {"epochs": 4, "batch_size": 64, "checkpoint_every": 2}},
                      resources={"cpu": 0.5, "gpu": 0.25})
    spec = load(path)
    lines: list[str] = []
    opened: list[str] = []  # the driver's openings of a store (the trials' are in their processes)
    real_open = Store.open.__func__  # type: ignore[attr-defined]
    monkeypatch.setattr(Store, "open", classmethod(
        lambda cls, location: opened.append(str(location)) or real_open(cls, location)))
    import rlv.service.curves  # noqa: F401  (tensorboardX sets CRC32C_SW_MODE when imported)

    environment = dict(os.environ)
    outcome = run_sweep(spec, LaunchOptions(), lines.append)
    assert outcome.ok, outcome.failed
    assert opened == [str(tmp_path / "store")]  # once, and passed down from there
    assert dict(os.environ) == environment  # the launch left the driver's environment as it was
    assert any("each 0.5 CPU + 0.25 GPU" in line for line in lines)
    rows = assert_store_complete(tmp_path / "store", "pack", [c.name for c in spec.trials()], 4)
    assert max_overlap(rows) == 4
    for column in col.IMAGE_COLUMNS:
        assert all((tmp_path / "store" / p).read_bytes()[:4] == b"\x89PNG" for p in rows[column])
    assert set(rows[col.DEVICE].str.split(":").str[0]) == {"cpu"}  # torch sees no CUDA here
    status = read_status(Store.open(tmp_path / "store"), "pack")
    assert {t["status"] for t in status["trials"].values()} == {"TERMINATED"}


def test_a_gpu_request_on_a_cluster_without_gpus_fails_before_any_trial(tmp_path: Path) -> None:
    path = sweep_file(tmp_path, "nogpu", resources={"cpu": 1, "gpu": 0.5})
    out = subprocess.run(["rlv", "launch", str(path), "--num-cpus", "2", "--num-gpus", "0"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "asks for 0.5 GPU per trial but the cluster has no GPU" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "store" / "trials").exists()
    # nothing ran, so the store does not claim the sweep: an edited file launches after this
    assert not (tmp_path / "store" / "_sweeps").exists()


def test_failed_trials_are_named_with_their_error_and_the_sweep_exits_nonzero(
        tmp_path: Path, ray_cluster) -> None:  # type: ignore[no-untyped-def]
    # an absurd learning rate drives the loss to NaN, which the trial reports as divergence
    path = sweep_file(tmp_path, "diverge", factors={"encoder": ["L"], "prior": ["normal"]},
                      settings={"train": {"lr": 1.0e12}}, max_failures=0)
    out = subprocess.run(["rlv", "launch", str(path), "--address", ray_cluster.address],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAILED L-fc-normal-s0" in out.stdout and "diverged" in out.stdout


def test_a_killed_trial_resumes_from_its_checkpoint_with_no_row_lost_or_doubled(
        tmp_path: Path, ray_cluster) -> None:  # type: ignore[no-untyped-def]
    path = sweep_file(tmp_path, "killtrial", factors={"encoder": ["L"], "prior": ["normal", "flow2"]},
                      settings={"train": {"epochs": 6, "batch_size": 64, "checkpoint_every": 2}},
                      max_failures=2)
    victim = "L-fc-normal-s0"
    gates = Gates(tmp_path / "gates")
    gates.hold(victim, 4)  # held once epoch 4 is checkpointed and reported
    driver = subprocess.Popen(["rlv", "launch", str(path), "--address", ray_cluster.address],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, **gates.env})
    store = tmp_path / "store"
    wait_for(lambda: victim in gates.held() or driver.poll() is not None, 240,
             "the trial held at epoch 4")
    assert driver.poll() is None, driver.communicate()[0]
    pid = gates.held()[victim]
    assert descends_from(pid, ray_cluster.pid), f"pid {pid} is not a worker of the test's Ray"
    checkpoint = 4  # the driver promotes the held epoch's checkpoint when it gets the report
    wait_for(lambda: checkpoint_epoch(store, "killtrial", victim) == checkpoint, 60,
             "the driver to commit epoch 4's checkpoint")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid), 60, "the killed trial process to end")
    gates.release(victim)
    output, _ = driver.communicate(timeout=600)
    assert driver.returncode == 0, output
    assert f"{victim} failed (attempt 1); retrying from its last checkpoint" in output
    spec = load(path)
    assert_store_complete(store, "killtrial", [c.name for c in spec.trials()], 6)
    attempts = read_status(Store.open(store), "killtrial")["trials"]
    assert {name: t["attempts"] for name, t in attempts.items()} == \
        {victim: 2, "L-fc-flow2-s0": 1}
    # the retry trained from the checkpoint's next epoch to the end, nothing before it
    first, retry = gates.attempts(victim)
    assert first == list(range(1, checkpoint + 1))
    assert retry == list(range(checkpoint + 1, 7))


def test_two_launches_of_one_sweep_started_together_run_each_trial_once(
        tmp_path: Path, ray_cluster) -> None:  # type: ignore[no-untyped-def]
    """The sweep's claim is an exclusive create in the store: one launch holds it and runs the
    trials; the other exits 1 at once in one line naming the holder."""
    path = sweep_file(tmp_path, "twice", factors={"encoder": ["L", "NL"], "prior": ["normal", "flow2"]})
    command = ["rlv", "launch", str(path), "--address", ray_cluster.address]
    # one trial is held after epoch 1 until the loser has exited: the holder cannot finish (and
    # release its claim) first, however slowly the other starts
    gates = Gates(tmp_path / "gates")
    gates.hold("L-fc-normal-s0", 1)
    both = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, **gates.env}) for _ in range(2)]
    wait_for(lambda: any(p.poll() is not None for p in both), 300, "one launch to exit")
    gates.release("L-fc-normal-s0")
    outs = [p.communicate(timeout=600) for p in both]
    codes = sorted(p.returncode for p in both)
    assert codes == [0, 1], outs
    winner, loser = (0, 1) if both[0].returncode == 0 else (1, 0)
    out, err = outs[loser]
    assert "started" not in out  # it ran nothing
    assert err.count("\n") == 1, err  # one line, no traceback
    assert (f"sweep 'twice' is claimed in store {tmp_path / 'store'} by driver "
            f"{socket.gethostname()} pid {both[winner].pid} (since ") in err
    assert "launch again" in err
    spec = load(path)
    assert_store_complete(tmp_path / "store", "twice", [c.name for c in spec.trials()], 3)


def test_a_killed_driver_resumes_on_the_embedded_cluster_without_rerunning_finished_trials(
        tmp_path: Path) -> None:
    """The default path: `rlv launch` starts its own local Ray; kill it, run it again.

    One trial is held after its checkpoint at epoch 2 (rlv/service/hold.py) while the others run
    through the second slot, so the kill finds a trial mid-run with a checkpoint and at least one
    finished trial in the store, whatever the speed of this machine."""
    path = sweep_file(tmp_path, "killdriver",
                      factors={"encoder": ["L", "NL", "RKS"], "prior": ["normal", "flow2"]},
                      settings={"train": {"epochs": 6, "batch_size": 64, "checkpoint_every": 2}})
    store = tmp_path / "store"
    victim = "L-fc-flow2-s0"
    gates = Gates(tmp_path / "gates")
    gates.hold(victim, 2)
    command = ["rlv", "launch", str(path), "--num-cpus", "2"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | gates.env
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True, env=env)
    trials_dir = store / "trials" / "sweep=killdriver"
    wait_for(lambda: first.poll() is not None or (victim in gates.held() and trials_dir.exists()
                                                  and any(trials_dir.glob("*.parquet"))),
             300, "a held trial and a finished trial in the store")
    assert first.poll() is None, first.communicate()[0]
    pid = gates.held()[victim]
    assert descends_from(pid, first.pid), f"pid {pid} is not a worker of the launch's Ray"
    checkpoint = 2
    wait_for(lambda: checkpoint_epoch(store, "killdriver", victim) == checkpoint, 60,
             "the driver to commit epoch 2's checkpoint")
    os.killpg(first.pid, signal.SIGKILL)  # the driver and the Ray it started
    first.communicate(timeout=60)
    wait_for(lambda: not alive(pid), 60, "the held trial to end with its Ray")
    gates.release(victim)
    done_before = set(pd.read_parquet(trials_dir)[col.TRIAL_ID])
    assert done_before and victim not in done_before
    second = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "Ray dashboard: http://127.0.0.1:" in second.stdout
    # the killed driver's claim: its process is gone, so the next launch takes it over at once
    assert (f"taking over the claim of sweep killdriver from driver {socket.gethostname()} pid "
            f"{first.pid} (since ") in second.stdout, second.stdout
    assert f"{len(done_before)} in the store already" in second.stdout
    # "] NAME started": NL-fc-normal-s0 must not match L-fc-normal-s0
    restarted = {name for name in done_before if f"] {name} started" in second.stdout}
    assert not restarted, f"finished trials ran again: {restarted}"
    for name in done_before:  # one process trained each finished trial, once
        assert gates.attempts(name) == [list(range(1, 7))]
    # the held trial resumed after its checkpoint
    before_kill, resumed = gates.attempts(victim)
    assert before_kill == list(range(1, checkpoint + 1))
    assert resumed == list(range(checkpoint + 1, 7))
    spec = load(path)
    assert_store_complete(store, "killdriver", [c.name for c in spec.trials()], 6)
    status = subprocess.run(["rlv", "status", str(path)], capture_output=True, text=True)
    assert "6 finished, 0 running, 0 failed, 0 pending (of 6)" in status.stdout


def test_the_job_path_runs_a_sweep_through_the_jobs_api(tmp_path: Path, ray_cluster) -> None:  # type: ignore[no-untyped-def]
    path = sweep_file(tmp_path, "job", factors={"encoder": ["RKS"], "prior": ["normal", "flow2"]},
                      settings={"eval": {"fid_samples": 32}})
    out = subprocess.run(["rlv", "launch", str(path), "--address", ray_cluster.dashboard],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "submitted sweep job as Ray Job" in out.stdout
    assert "sweep job: 2/2 trials finished" in out.stdout  # the job's own log, streamed here
    rows = assert_store_complete(tmp_path / "store", "job", ["RKS-fc-normal-s0", "RKS-fc-flow2-s0"], 3)
    assert rows[col.FID].notna().all() and (rows[col.FID] > 0).all()
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(ray_cluster.dashboard).list_jobs()
    assert any((j.metadata or {}).get("rlv_sweep") == "job" for j in jobs)


def test_started_and_finished_times_are_utc_timestamps(tmp_path: Path, ray_cluster) -> None:  # type: ignore[no-untyped-def]
    path = sweep_file(tmp_path, "times", factors={"encoder": ["NL"], "prior": ["normal"]})
    outcome = run_sweep(load(path), LaunchOptions(), lambda line: None)
    assert outcome.ok
    rows = pd.read_parquet(tmp_path / "store" / "trials")
    start, end = rows[col.STARTED_AT].item(), rows[col.FINISHED_AT].item()
    assert start.tzinfo is not None and start < end <= pd.Timestamp(datetime.now().astimezone())
    cfg = json.loads(rows[col.CONFIG].item())
    assert cfg["trial_id"] == "NL-fc-normal-s0" and cfg["sweep"] == "times"


def test_a_finished_trial_is_not_run_again_and_a_checkpoint_left_behind_is_slimmed(
        tmp_path: Path, ray_cluster) -> None:  # type: ignore[no-untyped-def]
    """The driver can die after the store got a trial's row but before it slimmed the trial's
    checkpoint: the row is the truth, so the trial is done."""
    path = sweep_file(tmp_path, "race", factors={"encoder": ["L"], "prior": ["normal"]})
    spec = load(path)
    assert run_sweep(spec, LaunchOptions(), lambda line: None).ok
    folder = tmp_path / "store" / "_checkpoints" / "race" / "L-fc-normal-s0"
    (folder / "state.pt").write_bytes(b"what a running trial's checkpoint would be")
    lines: list[str] = []
    outcome = run_sweep(spec, LaunchOptions(), lines.append)
    assert outcome.ok and outcome.finished == [] and outcome.skipped == 1
    assert not [line for line in lines if "started" in line], lines
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt"]
    assert "nothing to run, all 1 trials are in the store" in outcome.summary()[0]


def test_a_crafted_checkpoint_in_the_store_runs_nothing_and_the_trial_starts_over(
        tmp_path: Path, ray_cluster) -> None:  # type: ignore[no-untyped-def]
    path = sweep_file(tmp_path, "crafted", factors={"encoder": ["NL"], "prior": ["normal"]})
    marker = tmp_path / "ran"
    folder = tmp_path / "store" / "_checkpoints" / "crafted" / "NL-fc-normal-s0"
    folder.mkdir(parents=True)
    (folder / "state.pt").write_bytes(crafted_checkpoint(str(marker)))
    gates = Gates(tmp_path / "gates")
    out = subprocess.run(["rlv", "launch", str(path), "--address", ray_cluster.address],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, **gates.env})
    assert out.returncode == 0, out.stdout + out.stderr
    assert not marker.exists()  # the trial read the file; its code never ran
    assert gates.attempts("NL-fc-normal-s0") == [[1, 2, 3]]  # one process, from epoch 1
    assert_store_complete(tmp_path / "store", "crafted", ["NL-fc-normal-s0"], 3)
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt"]  # its own state replaced it
