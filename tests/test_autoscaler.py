"""The GPU preflight against an autoscaler: Ray's fake multi-node cluster, for real.

`RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=FILE` runs Ray's real autoscaler with a
node provider that starts nodes as local processes. The head has no GPU; the config's GPU worker
type (min_workers 0) is what the autoscaler can add. rlv learns that from the same file
($RLV_AUTOSCALING_CONFIG). The head is ours alone (its own ports and temp folder), started with
--block in a process group of its own and stopped by it (never `ray stop`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import free_port, stop_process_group
from gates import Gates, wait_for

from rlv.errors import RlvError
from rlv.service.resources import AUTOSCALING_CONFIG_ENV, alive_nodes, autoscaling_nodes, trial_resources
from rlv.sweep.spec import Resources

BIN = Path(sys.executable).parent
GPU_NODE = {"resources": {"CPU": 4, "GPU": 1}, "node_config": {}, "min_workers": 0,
            "max_workers": 2}
# the running autoscaler's GPU type: more CPUs than four 1-CPU trials ask, and at most one such
# node, so that four trials at once is the one GPU's limit
PACKED_GPU_NODE = {**GPU_NODE, "resources": {"CPU": 8, "GPU": 1}, "max_workers": 1}
CPU_NODE = {"resources": {"CPU": 4}, "node_config": {}, "min_workers": 0, "max_workers": 2}


def fake_cluster_config(port: int, workers: dict[str, Any]) -> dict[str, Any]:
    """A fake_multinode cluster config: a head without CPUs or GPUs, and `workers` types."""
    return {
        "cluster_name": "rlv-fake", "max_workers": 4, "upscaling_speed": 1.0,
        "idle_timeout_minutes": 0.1,  # 6 s: idle nodes go away within the test
        "provider": {"type": "fake_multinode", "gcs_address": f"127.0.0.1:{port}",
                     "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True},
        "auth": {"ssh_user": "ray"}, "docker": {},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            **workers},
        "head_node_type": "ray.head.default",
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [],
        "setup_commands": [], "head_setup_commands": [], "worker_setup_commands": [],
        "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


# --- the preflight reads the autoscaling config (no Ray) ---------------------------------------

def write_config(path: Path, workers: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(fake_cluster_config(6379, workers)))
    return path


@pytest.fixture
def named_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def name(workers: dict[str, Any]) -> Path:
        path = write_config(tmp_path / "autoscale.yaml", workers)
        monkeypatch.setenv(AUTOSCALING_CONFIG_ENV, str(path))
        return path
    return name


def test_gpus_the_autoscaler_can_add_count_for_the_preflight(named_config) -> None:  # type: ignore[no-untyped-def]
    named_config({"gpu": GPU_NODE, "cpu": CPU_NODE})
    # one shape per node type it can add (a trial runs on one node: no sums)
    assert sorted(autoscaling_nodes(), key=len) == [{"CPU": 4.0}, {"CPU": 4.0, "GPU": 1.0}]
    head = [{"CPU": 0.0}]  # the only alive node before any worker exists
    notices: list[str] = []
    assert trial_resources(Resources(cpu=1, gpu=0.25), head, notices.append) == \
        {"cpu": 1, "gpu": 0.25}
    assert trial_resources(Resources(cpu=1, gpu="auto"), head, notices.append) == \
        {"cpu": 1, "gpu": 0.25}
    assert notices == []


def test_an_autoscaler_without_gpu_types_still_fails_fast(named_config) -> None:  # type: ignore[no-untyped-def]
    named_config({"cpu": CPU_NODE})
    with pytest.raises(RlvError, match="0.25 GPU per trial but the cluster has no GPU"):
        trial_resources(Resources(cpu=1, gpu=0.25), [{"CPU": 0.0}], print)
    notices: list[str] = []
    assert trial_resources(Resources(cpu=1, gpu="auto"), [{"CPU": 0.0}], notices.append) == \
        {"cpu": 1, "gpu": 0.0}
    assert notices and "no GPU" in notices[0]


def test_a_named_config_that_is_not_there_is_one_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUTOSCALING_CONFIG_ENV, str(tmp_path / "nope.yaml"))
    with pytest.raises(RlvError, match=r"RLV_AUTOSCALING_CONFIG names .*nope.yaml"):
        autoscaling_nodes()
    (tmp_path / "bad.yaml").write_text("- just\n- a list\n")
    monkeypatch.setenv(AUTOSCALING_CONFIG_ENV, str(tmp_path / "bad.yaml"))
    with pytest.raises(RlvError, match="bad.yaml is not a readable YAML cluster config"):
        autoscaling_nodes()


def ray_node(alive: bool, **resources: float) -> dict[str, Any]:
    """A node as ray.nodes() describes it (the keys the preflight reads, and some it does not)."""
    return {"NodeID": os.urandom(8).hex(), "Alive": alive, "NodeManagerAddress": "127.0.0.1",
            "Resources": {**resources, "memory": 2e9, "node:127.0.0.1": 1.0}}


def test_a_trial_must_fit_on_one_node_not_on_the_cluster_s_sum(named_config) -> None:  # type: ignore[no-untyped-def]
    named_config({})  # no autoscaler: the alive nodes are all there is
    two_small = [ray_node(True, CPU=1.0), ray_node(True, CPU=1.0), ray_node(True, CPU=0.0)]
    assert sum(n["CPU"] for n in alive_nodes(two_small)) >= 2  # the sum would do
    with pytest.raises(RlvError, match=r"asks for 2 CPUs per trial but the cluster has 1 on its "
                                       r"largest node; lower resources.cpu"):
        trial_resources(Resources(cpu=2, gpu=0), alive_nodes(two_small), print)
    assert trial_resources(Resources(cpu=1, gpu=0), alive_nodes(two_small), print) == \
        {"cpu": 1, "gpu": 0.0}
    # a dead node's resources are gone
    with pytest.raises(RlvError, match="asks for 2 CPUs per trial but the cluster has 1"):
        trial_resources(Resources(cpu=2, gpu=0),
                        alive_nodes([*two_small, ray_node(False, CPU=8.0)]), print)

    gpus = [ray_node(True, CPU=4.0, GPU=1.0), ray_node(True, CPU=4.0, GPU=1.0)]
    with pytest.raises(RlvError, match=r"asks for 2 GPUs per trial but the cluster has 1 on its "
                                       r"largest node"):
        trial_resources(Resources(cpu=1, gpu=2), alive_nodes(gpus), print)
    # CPUs on one node, the GPU on another: together they fit on neither
    apart = [ray_node(True, CPU=8.0), ray_node(True, CPU=1.0, GPU=1.0)]
    with pytest.raises(RlvError, match=r"asks for 4 CPUs \+ 1 GPU per trial but no node has "
                                       r"both; the largest with 1 GPU has 1 CPUs"):
        trial_resources(Resources(cpu=4, gpu=1), alive_nodes(apart), print)
    notices: list[str] = []
    assert trial_resources(Resources(cpu=4, gpu="auto"), alive_nodes(apart), notices.append) == \
        {"cpu": 4, "gpu": 0.0}
    assert notices == ["notice: no GPU node of the cluster has 4 CPUs; trials run on CPUs "
                       "(resources.gpu: auto)"]


def test_a_node_type_the_autoscaler_can_add_counts_one_node_at_a_time(named_config) -> None:  # type: ignore[no-untyped-def]
    head = alive_nodes([ray_node(True, CPU=0.0)])
    named_config({"gpu": GPU_NODE, "cpu": CPU_NODE})  # 4 CPUs + 1 GPU, or 4 CPUs, per node
    assert trial_resources(Resources(cpu=4, gpu=1), head, print) == {"cpu": 4, "gpu": 1.0}
    with pytest.raises(RlvError, match="asks for 2 GPUs per trial but the cluster has 1 on its"):
        trial_resources(Resources(cpu=1, gpu=2), head, print)  # 2 such nodes: 2 GPUs in all
    with pytest.raises(RlvError, match="asks for 8 CPUs per trial but the cluster has 4 on its"):
        trial_resources(Resources(cpu=8, gpu=0), head, print)
    # a type the autoscaler may not start (max_workers 0) adds nothing
    named_config({"gpu": {**GPU_NODE, "max_workers": 0}, "cpu": CPU_NODE})
    with pytest.raises(RlvError, match="0.25 GPU per trial but the cluster has no GPU"):
        trial_resources(Resources(cpu=1, gpu=0.25), head, print)


# --- a real (fake-provider) autoscaler ----------------------------------------------------------

@dataclass(frozen=True)
class FakeCluster:
    address: str
    config: Path
    root: Path


def ray_nodes(address: str) -> list[dict[str, Any]]:
    """Every node the cluster has known (alive or dead), from a process of its own."""
    script = ("import json, sys, ray; ray.init(address=sys.argv[1], log_to_driver=False); "
              "print(json.dumps([{'id': n['NodeID'], 'alive': n['Alive'], "
              "'resources': n['Resources']} for n in ray.nodes()]))")
    out = subprocess.run([sys.executable, "-c", script, address], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    return list(json.loads(out.strip().splitlines()[-1]))


@pytest.fixture
def fake_cluster() -> Iterator[FakeCluster]:
    root = Path(tempfile.mkdtemp(prefix="rlv-as-"))  # short: Unix socket paths
    port = free_port()
    config = root / "autoscale.yaml"
    config.write_text(yaml.safe_dump(fake_cluster_config(port, {"gpu": PACKED_GPU_NODE})))
    # the fake nodes are started by the autoscaler (a child of this head) and inherit this
    # environment: RAY_TMPDIR keeps their files in our folder, not /tmp/ray
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "RAY_TMPDIR": str(root)}
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", "--num-cpus=0",
         "--num-gpus=0", f"--autoscaling-config={config}", "--include-dashboard=false",
         "--disable-usage-stats", f"--temp-dir={root / 'ray'}", "--node-ip-address=127.0.0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield FakeCluster(f"127.0.0.1:{port}", config, root)
    finally:
        stop_process_group(head)
        stop_leftovers(root)


def stop_leftovers(root: Path) -> None:
    """The autoscaler's node processes that outlived the head (they name our folder)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(root) in cmdline:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.slow
def test_gpu_trials_wait_for_the_autoscaler_share_its_nodes_and_idle_nodes_go(
        fake_cluster: FakeCluster, tmp_path: Path) -> None:
    before = ray_nodes(fake_cluster.address)
    assert not any(n["resources"].get("GPU") for n in before), before  # no GPU yet

    # six trials of 1 CPU + 0.25 GPU: the node's 8 CPUs would run all six at once, its one GPU
    # runs four. Each trial is held after its first epoch (rlv/service/hold.py) until four are
    # held together, so the four certainly overlap, whatever the speed of this machine.
    sweep = tmp_path / "gpus.yaml"
    sweep.write_text("""\
name: gpus
factors: {dataset: [mnist], encoder: [L, NL], layer: [fc], prior: [normal]}
seeds: 3
settings:
  data: {train_size: 300, test_size: 100}
  train: {epochs: 3, checkpoint_every: 1}
  eval: {fid_samples: 0}
resources: {cpu: 1, gpu: 0.25}
max_failures: 0
""")
    names = [f"{e}-fc-normal-s{s}" for e in ("L", "NL") for s in range(3)]
    gates = Gates(tmp_path / "gates")
    for name in names:
        gates.hold(name, 1)
    store = tmp_path / "store"
    env = {**os.environ, AUTOSCALING_CONFIG_ENV: str(fake_cluster.config), **gates.env}
    driver = subprocess.Popen([str(BIN / "rlv"), "launch", str(sweep), "--address",
                               fake_cluster.address, "--store", str(store)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: len(gates.held()) >= 4 or driver.poll() is not None, 300,
                 "four trials held at once")
        assert driver.poll() is None, driver.communicate()[0]
        # while they are held: the node they run on is one the autoscaler added, with one GPU
        during = [n for n in ray_nodes(fake_cluster.address) if n["alive"]]
        added = [n for n in during if n["id"] not in {b["id"] for b in before}]
        assert [n["resources"].get("GPU") for n in added] == [1.0], during
        for name in names:
            gates.release(name)
        out, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode == 0, out
    assert "each 1 CPU + 0.25 GPU" in out

    trials = pd.read_parquet(store / "trials")
    assert sorted(trials["trial_id"]) == sorted(names)
    # Ray gave each trial a quarter of the GPU, on the one GPU node the autoscaler added
    assert (trials["gpu_share"] == 0.25).all(), trials[["trial_id", "gpu_share"]]
    assert set(trials["node_id"]) == {added[0]["id"]}, trials[["trial_id", "node_id"]]
    # four at once (the held four), never more: the GPU is the limit, not the CPUs
    events = sorted([(t, 1) for t in pd.to_datetime(trials["started_at"])] +
                    [(t, -1) for t in pd.to_datetime(trials["finished_at"])])
    running = [sum(step for _, step in events[:i + 1]) for i in range(len(events))]
    assert max(running) == 4, trials[["trial_id", "started_at", "finished_at"]]

    # and once idle, it goes away again
    node_id = added[0]["id"]
    wait_for(lambda: not {n["id"]: n for n in ray_nodes(fake_cluster.address)}[node_id]["alive"],
             180, "the idle GPU node to be removed")
