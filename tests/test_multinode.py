"""rlv on a real multi-node Ray on this machine: a head that runs no trials and two worker nodes,
each with a cache folder of its own (as separate machines would have).

The sweep runs through `rlv launch --address` in a subprocess: the test process may already be
joined to the session's Ray (tests/conftest.py), and ray.init happens once per process. The
driver gets no $RLV_CACHE_DIR (it would reach every trial through the job's runtime env) and a
home of its own, so each worker node's trials use that node's cache.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

RLV = Path(sys.executable).parent / "rlv"


@dataclass
class Nodes:
    cluster: Any  # ray.cluster_utils.Cluster
    workers: list[Any]  # its two worker nodes (ray._private.node.Node)
    caches: dict[str, Path]  # worker node id -> that node's RLV_CACHE_DIR
    root: Path

    @property
    def address(self) -> str:
        return str(self.cluster.address)


@pytest.fixture
def nodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Nodes]:
    from ray.cluster_utils import Cluster

    # short (Unix socket paths) and private: RAY_TMPDIR keeps the cluster's session files and
    # its "current cluster" address file out of /tmp/ray, which other Rays on this machine use
    root = Path(tempfile.mkdtemp(prefix="rlv-mn-"))
    monkeypatch.setenv("RAY_TMPDIR", str(root))
    cluster = Cluster(initialize_head=True, shutdown_at_exit=True,
                      head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers, caches = [], {}
    try:
        for name in ("a", "b"):
            cache = root / f"cache-{name}"
            # one CPU each: two 1-CPU trials at a time run on two different nodes
            node = cluster.add_node(num_cpus=1, env_vars={"RLV_CACHE_DIR": str(cache)})
            workers.append(node)
            caches[node.node_id] = cache
        cluster.wait_for_nodes()
        yield Nodes(cluster, workers, caches, root)
    finally:
        cluster.shutdown()


def write_sweep(folder: Path, name: str, *, encoders: list[str], seeds: int, epochs: int,
                train_size: int, fid_samples: int, max_failures: int,
                checkpoint_every: int = 1, cpu: int = 1) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"""\
name: {name}
factors:
  dataset: [mnist]
  encoder: [{", ".join(encoders)}]
  layer: [fc]
  prior: [normal]
seeds: {seeds}
settings:
  data: {{train_size: {train_size}, test_size: 100}}
  train: {{epochs: {epochs}, checkpoint_every: {checkpoint_every}}}
  eval: {{fid_samples: {fid_samples}}}
resources: {{cpu: {cpu}, gpu: 0}}
max_failures: {max_failures}
""")
    return path


def launch(sweep: Path, address: str, store: Path, home: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "RLV_CACHE_DIR"}
    home.mkdir(parents=True, exist_ok=True)
    env["HOME"] = str(home)  # the driver's own preflight cache, not a worker's
    return subprocess.Popen([str(RLV), "launch", str(sweep), "--address", address,
                             "--store", str(store)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen[str], timeout_s: float) -> str:
    try:
        out, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        pytest.fail(f"rlv launch did not finish in {timeout_s:.0f} s:\n{out}")
    assert process.returncode == 0, out
    return out


def read(store: Path, table: str) -> pd.DataFrame:
    return pd.read_parquet(store / table)


def attempts(run: Path, tag: str = "train/neg_elbo") -> list[list[int]]:
    """The steps of `tag` in each TensorBoard event file of one trial's run, oldest file first:
    the driver opens one file per attempt of a trial (rlv/service/curves.py). Read straight from
    the TFRecord framing, a signal independent of the store's epoch rows."""
    from tensorboardX.proto.event_pb2 import Event

    files = []
    for file in run.glob("events.out.tfevents.*"):
        data, at, events = file.read_bytes(), 0, []
        while at < len(data):
            (length,) = struct.unpack("<Q", data[at:at + 8])
            event = Event()
            event.ParseFromString(data[at + 12:at + 12 + length])  # after the length and its CRC
            events.append(event)
            at += 12 + length + 4  # the payload's CRC
        steps = [e.step for e in events if any(v.tag == tag for v in e.summary.value)]
        files.append((min(e.wall_time for e in events), steps))
    return [steps for _, steps in sorted(files)]


def test_trials_spread_over_nodes_each_with_its_own_caches(nodes: Nodes, tmp_path: Path) -> None:
    epochs, seeds, encoders = 2, 2, ["L", "NL"]
    sweep = write_sweep(tmp_path, "spread", encoders=encoders, seeds=seeds, epochs=epochs,
                        train_size=200, fid_samples=20, max_failures=0)
    store = tmp_path / "store"
    out = finish(launch(sweep, nodes.address, store, tmp_path / "home"), timeout_s=420)

    trials = read(store, "trials")
    expected = {f"{e}-fc-normal-s{s}" for e in encoders for s in range(seeds)}
    assert sorted(trials["trial_id"]) == sorted(expected), out  # each exactly once
    # every trial ran on a worker (the head has no CPU for trials), and both workers got some
    assert set(trials["node_id"]) == set(nodes.caches), trials[["trial_id", "node_id"]]
    assert set(trials["hostname"]) == {socket.gethostname()}

    epoch_rows = read(store, "epochs")
    keys = list(zip(epoch_rows["trial_id"], epoch_rows["epoch"], strict=True))
    assert sorted(keys) == sorted((t, e) for t in expected for e in range(1, epochs + 1))
    # no trial moved: its epochs ran where it finished
    where = dict(zip(trials["trial_id"], trials["node_id"], strict=True))
    assert all(where[t] == n for t, n in zip(epoch_rows["trial_id"], epoch_rows["node_id"],
                                             strict=True))

    # each node built its own caches: the decoded data set, and the real images' FID
    # statistics of exactly the seeds its own trials ran
    for node_id, cache in nodes.caches.items():
        assert list((cache / "data").glob("mnist-*.npy")), f"no data cache in {cache}"
        ran = trials[trials["node_id"] == node_id]
        stats = {p.name for p in (cache / "fid" / "stats").glob("*.npz")}
        assert stats == {f"mnist-s{s}-n20.npz" for s in set(ran["seed"])}, (node_id, stats)


def test_a_lost_node_s_trials_resume_on_the_other_node(nodes: Nodes, tmp_path: Path) -> None:
    epochs, every = 60, 2
    sweep = write_sweep(tmp_path, "lost", encoders=["L", "NL"], seeds=1, epochs=epochs,
                        train_size=1000, fid_samples=0, max_failures=2, checkpoint_every=every)
    store = tmp_path / "store"
    process = launch(sweep, nodes.address, store, tmp_path / "home")
    lost, survivor = nodes.workers[1], nodes.workers[0]

    # wait until the node to lose has committed a few epochs of a trial, then take it away
    deadline, victim = time.monotonic() + 240, None
    while victim is None:
        assert process.poll() is None, process.communicate()[0]
        assert time.monotonic() < deadline, "no trial committed epochs on the second node"
        time.sleep(0.5)
        try:
            rows = read(store, "epochs")
        except (OSError, ValueError):  # no epochs table yet
            continue
        mine = rows[rows["node_id"] == lost.node_id]
        if len(mine) >= 2 * every + 1:  # past its second checkpoint
            victim = str(mine["trial_id"].iloc[0])
            assert mine["epoch"].max() < epochs, "the trial finished before its node was lost"
    nodes.cluster.remove_node(lost, allow_graceful=False)
    out = finish(process, timeout_s=420)

    trials = read(store, "trials")
    assert sorted(trials["trial_id"]) == ["L-fc-normal-s0", "NL-fc-normal-s0"], out
    # the lost node's trial finished on the survivor
    final = trials.set_index("trial_id")["node_id"]
    assert final[victim] == survivor.node_id, out
    assert set(final) == {survivor.node_id}

    rows = read(store, "epochs")
    assert len(rows) == 2 * epochs  # every epoch of both trials once: nothing lost or doubled
    assert set(zip(rows["trial_id"], rows["epoch"], strict=True)) == {
        (t, e) for t in trials["trial_id"] for e in range(1, epochs + 1)}
    # the victim's first epochs ran on the lost node, the rest on the survivor, in one run each:
    # it continued after its last checkpoint
    moved = rows[rows["trial_id"] == victim].sort_values("epoch")
    on_lost = moved[moved["node_id"] == lost.node_id]["epoch"].tolist()
    on_survivor = moved[moved["node_id"] == survivor.node_id]["epoch"].tolist()
    assert on_lost and on_survivor
    assert on_lost == list(range(1, len(on_lost) + 1))
    assert on_survivor == list(range(len(on_lost) + 1, epochs + 1))

    # the proof of the resume: the store keeps one row per (trial, epoch) whatever ran it, so a
    # restart from epoch 1 would give the same rows. The curves show each attempt as it ran:
    # the victim's second attempt starts after a checkpoint of its first, not at epoch 1
    first, second = attempts(store / "tensorboard" / "lost" / victim)
    assert first == list(range(1, len(first) + 1)), first  # ran on the lost node from epoch 1
    start = second[0]
    assert 1 < start <= first[-1] + 1, (first, second)
    assert (start - 1) % every == 0, (start, every)  # right after a checkpoint (every 2 epochs)
    assert second == list(range(start, epochs + 1)), second
    # the other trial never moved: one attempt, every epoch
    (other,) = set(trials["trial_id"]) - {victim}
    assert attempts(store / "tensorboard" / "lost" / other) == [list(range(1, epochs + 1))]


def test_a_trial_bigger_than_every_node_fails_at_once_though_the_cluster_s_sum_would_hold_it(
        nodes: Nodes, tmp_path: Path) -> None:
    # two 1-CPU workers: 2 CPUs in all, none on one node (Ray would leave the trial pending)
    sweep = write_sweep(tmp_path, "big", encoders=["L"], seeds=1, epochs=1, train_size=100,
                        fid_samples=0, max_failures=0, cpu=2)
    store = tmp_path / "store"
    process = launch(sweep, nodes.address, store, tmp_path / "home")
    try:
        out, _ = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"a 2-CPU trial on 1-CPU nodes was accepted:\n{process.communicate()[0]}")
    assert process.returncode == 2, out
    assert "asks for 2 CPUs per trial but the cluster has 1 on its largest node" in out
    assert "Traceback" not in out
    assert not (store / "trials").exists()
