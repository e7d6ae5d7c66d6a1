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
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from gates import Gates, alive, wait_for
from tb_events import attempts

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


def launch(sweep: Path, address: str, store: Path, home: Path,
           extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "RLV_CACHE_DIR"} | (extra_env or {})
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
    epochs, held_at = 8, 4
    sweep = write_sweep(tmp_path, "lost", encoders=["L", "NL"], seeds=1, epochs=epochs,
                        train_size=1000, fid_samples=0, max_failures=2, checkpoint_every=2)
    store = tmp_path / "store"
    names = ["L-fc-normal-s0", "NL-fc-normal-s0"]
    # both trials (one per 1-CPU node) are held once epoch 4 is checkpointed: the node is lost
    # while its trial is certainly mid-run, past its second checkpoint
    gates = Gates(tmp_path / "gates")
    for name in names:
        gates.hold(name, held_at)
    process = launch(sweep, nodes.address, store, tmp_path / "home", gates.env)
    lost, survivor = nodes.workers[1], nodes.workers[0]

    def committed() -> pd.DataFrame | None:  # the held epochs, once the driver wrote them
        try:
            rows = read(store, "epochs")
        except (OSError, ValueError):  # no epochs table yet
            return None
        return rows if len(rows) == len(names) * held_at else None

    wait_for(lambda: committed() is not None or process.poll() is not None, 240,
             "both trials' epochs up to the hold in the store")
    assert process.poll() is None, process.communicate()[0]
    rows = committed()
    assert rows is not None
    by_node = rows.groupby("node_id")["trial_id"].unique()
    assert sorted(by_node.index) == sorted([lost.node_id, survivor.node_id]), by_node
    (victim,) = by_node[lost.node_id]
    pid = gates.held()[victim]
    nodes.cluster.remove_node(lost, allow_graceful=False)
    wait_for(lambda: not alive(pid), 60, "the lost node's trial process to end")
    for name in names:
        gates.release(name)
    out = finish(process, timeout_s=420)

    trials = read(store, "trials")
    assert sorted(trials["trial_id"]) == names, out
    # the lost node's trial finished on the survivor
    final = trials.set_index("trial_id")["node_id"]
    assert final[victim] == survivor.node_id, out
    assert set(final) == {survivor.node_id}

    rows = read(store, "epochs")
    assert len(rows) == 2 * epochs  # every epoch of both trials once: nothing lost or doubled
    assert set(zip(rows["trial_id"], rows["epoch"], strict=True)) == {
        (t, e) for t in names for e in range(1, epochs + 1)}
    # the victim's first epochs ran on the lost node, the rest on the survivor
    moved = rows[rows["trial_id"] == victim].sort_values("epoch")
    assert moved[moved["node_id"] == lost.node_id]["epoch"].tolist() == list(range(1, held_at + 1))
    assert moved[moved["node_id"] == survivor.node_id]["epoch"].tolist() == \
        list(range(held_at + 1, epochs + 1))
    # the store keeps one row per (trial, epoch) whatever ran it, so a restart from epoch 1 would
    # give the same rows: what each process trained, and the curves of each attempt, show that
    # the second attempt started right after the checkpoint of the first
    resumed = [list(range(1, held_at + 1)), list(range(held_at + 1, epochs + 1))]
    assert gates.attempts(victim) == resumed
    assert attempts(store / "tensorboard" / "lost" / victim) == resumed
    # the other trial never moved: one attempt, every epoch
    (other,) = set(names) - {victim}
    assert gates.attempts(other) == [list(range(1, epochs + 1))]
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
