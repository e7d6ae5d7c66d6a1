"""rlv on a real multi-node Ray on this machine: a head that runs no trials and two worker nodes,
each with a cache folder of its own (as separate machines would have).

The sweep runs through `rlv launch --address` in a subprocess: the test process may already be
joined to the session's Ray (tests/conftest.py), and ray.init happens once per process. The
driver gets no $RLV_CACHE_DIR (it would reach every trial through the job's runtime env) and a
home of its own, so each worker node's trials use that node's cache.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from gates import Gates, alive, wait_for
from s3server import S3Server
from tb_events import attempts, scalars

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
def nodes(monkeypatch: pytest.MonkeyPatch, s3_server: S3Server) -> Iterator[Nodes]:
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
            # each node reaches the test's S3 server as a machine would reach S3: the AWS
            # variables of its own environment (tests/s3server.py)
            node = cluster.add_node(num_cpus=1,
                                    env_vars={"RLV_CACHE_DIR": str(cache), **s3_server.env})
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


def launch(sweep: Path, address: str, store: Path | str, home: Path,
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


def read(store: Path | str, table: str) -> pd.DataFrame:
    """A table of a store, a folder or an s3:// URI (pyarrow finds the endpoint in the
    environment, as any user's pandas would)."""
    return pd.read_parquet(f"{store}/{table}")


def held_epochs(store: Path | str, trials: int, held_at: int) -> pd.DataFrame | None:
    """The epochs table once the driver has written every trial's epochs up to the hold, else
    None (no table yet, or fewer rows)."""
    try:
        rows = read(store, "epochs")
    except (OSError, ValueError):  # no epochs table yet
        return None
    return rows if len(rows) == trials * held_at else None


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

    def committed() -> pd.DataFrame | None:
        return held_epochs(store, len(names), held_at)

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


def run_cli(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run([str(RLV), *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})
    assert done.returncode == 0, f"rlv {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def s3_objects(s3: S3Server, bucket: str, prefix: str) -> dict[str, bytes]:
    """key -> bytes of every file under `prefix`, read with boto3 (not rlv's own reader)."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    found = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            if item["Key"].endswith("/"):
                continue  # a folder marker (pyarrow's create_dir), not a file
            found[item["Key"]] = client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
    return found


def test_an_s3_store_takes_a_lost_node_a_grown_seed_and_every_reader(
        nodes: Nodes, s3_env: S3Server, tmp_path: Path) -> None:
    """The store on a real S3 API (moto's server on loopback): a worker lost mid-sweep, the sweep
    grown by a seed, then everything a user reads from the bucket; every row exactly once."""
    bucket = s3_env.bucket()
    store = f"s3://{bucket}/rlv"
    epochs, held_at = 4, 2
    sweep = write_sweep(tmp_path, "s3", encoders=["L", "NL"], seeds=1, epochs=epochs,
                        train_size=300, fid_samples=0, max_failures=2, checkpoint_every=2)
    names = ["L-fc-normal-s0", "NL-fc-normal-s0"]
    gates = Gates(tmp_path / "gates")
    for name in names:
        gates.hold(name, held_at)
    process = launch(sweep, nodes.address, store, tmp_path / "home", gates.env | s3_env.env)

    def committed() -> pd.DataFrame | None:
        return held_epochs(store, len(names), held_at)

    wait_for(lambda: committed() is not None or process.poll() is not None, 240,
             "both trials' epochs up to the hold in the bucket")
    assert process.poll() is None, process.communicate()[0]
    rows = committed()
    assert rows is not None
    lost, survivor = nodes.workers[1], nodes.workers[0]
    (victim,) = rows[rows["node_id"] == lost.node_id]["trial_id"].unique()
    pid = gates.held()[victim]
    nodes.cluster.remove_node(lost, allow_graceful=False)
    wait_for(lambda: not alive(pid), 60, "the lost node's trial process to end")
    for name in names:
        gates.release(name)
    finish(process, timeout_s=420)
    assert read(store, "trials").set_index("trial_id")["node_id"][victim] == survivor.node_id
    assert gates.attempts(victim) == [list(range(1, held_at + 1)),
                                      list(range(held_at + 1, epochs + 1))]

    # grown by a seed: only the new trials run
    sweep = write_sweep(tmp_path, "s3", encoders=["L", "NL"], seeds=2, epochs=epochs,
                        train_size=300, fid_samples=0, max_failures=2, checkpoint_every=2)
    out = finish(launch(sweep, nodes.address, store, tmp_path / "home", s3_env.env), 420)
    assert "2 in the store already" in out, out
    grown = [*names, "L-fc-normal-s1", "NL-fc-normal-s1"]
    trials, epoch_rows = read(store, "trials"), read(store, "epochs")
    assert sorted(trials["trial_id"]) == sorted(grown)  # each exactly once
    keys = sorted(zip(epoch_rows["trial_id"], epoch_rows["epoch"], strict=True))
    assert keys == sorted((t, e) for t in grown for e in range(1, epochs + 1))

    # everything a user reads, from the bucket alone
    assert "4 finished, 0 running, 0 failed, 0 pending (of 4)" in run_cli(
        "status", "s3", "--store", store, env=s3_env.env)
    assert f"store {store}: 4 done, 0 running, 0 to run" in run_cli(
        "check", str(sweep), "--store", store, env=s3_env.env)
    run_cli("analyze", store, "--out", str(tmp_path / "report"), env=s3_env.env)
    assert (tmp_path / "report" / "report.md").exists()
    run_cli("plan", store, "--metric", "test_re", "--factor", "encoder", "--delta", "1.0",
            env=s3_env.env)
    from rlv.trial.saved import load_model

    model = load_model(store, "s3", "L-fc-normal-s1")
    assert sum(p.numel() for p in model.parameters()) > 0
    # the learning curves, downloaded as TensorBoard would read them: every epoch of the
    # victim once, the retry hiding nothing it did not run again
    objects = s3_objects(s3_env, bucket, f"rlv/tensorboard/s3/{victim}/")
    run = tmp_path / "curves" / victim
    run.mkdir(parents=True)
    for key, data in objects.items():
        (run / key.rsplit("/", 1)[1]).write_bytes(data)
    mine = epoch_rows[epoch_rows["trial_id"] == victim].set_index("epoch")["train_neg_elbo"]
    assert scalars(run)["train/neg_elbo"] == pytest.approx(mine.to_dict(), rel=1e-6)
    # each finished trial keeps its model alone: no attempt's checkpoint is left behind
    kept = s3_objects(s3_env, bucket, "rlv/_checkpoints/s3/")
    assert sorted(kept) == sorted(f"rlv/_checkpoints/s3/{t}/model.pt" for t in grown)


def test_s3_requests_per_trial_do_not_grow_with_the_sweep(
        nodes: Nodes, s3_env: S3Server, tmp_path: Path) -> None:
    """What a trial costs in S3 requests (S3 bills them), counted in the server's log for a sweep
    and one four times larger of the same settings: the count per finished trial must not grow
    with the sweep (benchmarks/s3_requests.py prints README's figures, 4 and 32 trials)."""

    def run(name: str, seeds: int) -> list:  # type: ignore[type-arg]
        bucket = s3_env.bucket()
        store = f"s3://{bucket}/rlv"
        sweep = write_sweep(tmp_path, name, encoders=["L", "PNL", "NL", "RKS"], seeds=seeds,
                            epochs=2, train_size=128, fid_samples=0, max_failures=0)
        finish(launch(sweep, nodes.address, store, tmp_path / "home", s3_env.env), 600)
        assert len(read(store, "trials")) == 4 * seeds
        return s3_env.requests(bucket)

    small, large = run("small", 1), run("large", 4)
    per_small, per_large = len(small) / 4, len(large) / 16
    kinds = {n: Counter(r.method for r in reqs) for n, reqs in (("4", small), ("16", large))}
    assert per_large <= per_small, (per_small, per_large, kinds)
    # a table's batch file or a pointer is one PUT, never a multipart upload (three requests;
    # a checkpoint's megabytes go up in parts)
    multipart = [r for r in small + large if "uploads" in r.target or "uploadId" in r.target]
    assert not [r for r in multipart if ".parquet" in r.target or ".json" in r.target], multipart
    assert all(r.status < 500 for r in small + large)


def node_pids(node: Any) -> list[int]:
    """The processes the test started for one worker node (its raylet and agents)."""
    return [info.process.pid for infos in node.all_processes.values() for info in infos
            if info.process is not None and info.process.poll() is None]


def test_a_frozen_node_s_attempt_thawed_after_its_retry_changes_nothing(
        nodes: Nodes, tmp_path: Path) -> None:
    """SIGSTOP a worker node mid-trial (its raylet, agents and the trial's process) until Ray
    declares it dead and Tune retries the trial on the other node; once the sweep is done, let
    the frozen processes go on (SIGCONT) for as long as they live. The store ends as it would
    have without the frozen attempt, and nothing that attempt writes is read by anyone."""
    epochs, held_at = 4, 2
    # a checkpoint after every epoch: the thawed attempt's next epoch ends with a write
    sweep = write_sweep(tmp_path, "frozen", encoders=["L", "NL"], seeds=1, epochs=epochs,
                        train_size=300, fid_samples=0, max_failures=2, checkpoint_every=1)
    store = tmp_path / "store"
    names = ["L-fc-normal-s0", "NL-fc-normal-s0"]
    gates = Gates(tmp_path / "gates")
    for name in names:
        gates.hold(name, held_at)
    process = launch(sweep, nodes.address, store, tmp_path / "home", gates.env)

    def committed() -> pd.DataFrame | None:
        return held_epochs(store, len(names), held_at)

    wait_for(lambda: committed() is not None or process.poll() is not None, 240,
             "both trials' epochs up to the hold in the store")
    assert process.poll() is None, process.communicate()[0]
    rows = committed()
    assert rows is not None
    frozen, survivor = nodes.workers[1], nodes.workers[0]
    (victim,) = rows[rows["node_id"] == frozen.node_id]["trial_id"].unique()
    trial_pid = gates.held()[victim]
    stopped = [*node_pids(frozen), trial_pid]
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        # observable: the driver says Tune retries the trial, once Ray has declared the node dead
        assert process.stdout is not None
        seen = []
        for line in process.stdout:
            seen.append(line)
            if f"{victim} failed (attempt 1); retrying" in line:
                break
        else:
            pytest.fail("the driver ended without retrying the frozen trial:\n" + "".join(seen))
        for name in names:
            gates.release(name)  # the retry resumes after the hold's epoch: it never holds again
        out = finish(process, timeout_s=420)
        folder = store / "_checkpoints" / "frozen" / victim
        kept = (folder / "model.pt").read_bytes()  # the retry's weights
        finished = read(store, "trials")
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    # the thawed attempt goes on for as long as it lives: it trains its next epoch and writes
    # that checkpoint into its own folder (the retry's folders are gone: the trial is done),
    # then waits in its report for a driver that no longer knows it, or Ray ends it first
    def where(pid: int) -> str:  # in a failure message: each thread's state and wait channel
        try:
            return "; ".join(
                open(f"/proc/{pid}/task/{t}/stat").read().split(") ")[1].split()[0] + ":"
                + open(f"/proc/{pid}/task/{t}/wchan").read()
                for t in sorted(os.listdir(f"/proc/{pid}/task")))
        except OSError as exc:
            return str(exc)

    stale = f"attempt-*/state-{held_at + 1:06d}.pt"
    try:
        wait_for(lambda: not alive(trial_pid) or any(folder.glob(stale)), 300,
                 "the thawed attempt to end or to write its next checkpoint")
    except AssertionError:
        raise AssertionError(f"thawed {trial_pid} trained {gates.trained_by(victim, trial_pid)}; "
                             f"threads {where(trial_pid)[:400]}") from None
    wrote = sorted(str(p.relative_to(folder)) for p in folder.glob("attempt-*/*"))

    trials = read(store, "trials")
    assert sorted(trials["trial_id"]) == names, out
    assert trials.set_index("trial_id")["node_id"][victim] == survivor.node_id
    rows = read(store, "epochs")
    assert sorted(zip(rows["trial_id"], rows["epoch"], strict=True)) == sorted(
        (t, e) for t in names for e in range(1, epochs + 1))
    moved = rows[rows["trial_id"] == victim].sort_values("epoch")
    assert moved["node_id"].tolist() == [frozen.node_id] * held_at + \
        [survivor.node_id] * (epochs - held_at)
    # the store is as the retry left it: the same rows, the retry's model, no pointer; what the
    # thawed attempt wrote (if Ray let it) lies in its own folder, which no reader opens
    pd.testing.assert_frame_equal(read(store, "trials"), finished)
    assert (folder / "model.pt").read_bytes() == kept
    assert not (folder / "committed.json").exists()
    left = {p.relative_to(folder).parts[0] for p in folder.rglob("*") if p.is_file()}
    assert {f for f in left if f != "model.pt" and not f.startswith("attempt-")} == set(), left
    print(f"after the retry the thawed attempt wrote {wrote}")
    # a relaunch finds every trial done: nothing of the frozen attempt is taken for a checkpoint
    again = finish(launch(sweep, nodes.address, store, tmp_path / "home"), timeout_s=300)
    assert "nothing to run, all 2 trials are in the store" in again, again
