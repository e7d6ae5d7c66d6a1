"""`rlv launch --cluster cluster-local.yaml` end to end: a lab of two machines on this host.

The shipped cluster-local.yaml runs with only its addresses and SSH user filled in (its key,
~/.ssh/id_ed25519, is the client's): every other line, every command, as shipped. The machines
(tests/machines.py) are a head and a worker, each its own PID, mount and UTS namespace with its
own sshd on its own 127.x.y.z address, so the file's `ray stop` stops their Rays and no other
on this host; their Python has rlv's dependencies but not rlv. The client is a normal
(non-editable) install of rlv, with a version of its own, in a venv whose project folder is
hidden from it. Then:

- `rlv launch --cluster` stages the client's wheel, `ray up` installs it on the head by the
  file's setup_commands and starts Ray; the head's autoscaler joins the worker over SSH (its
  setup too); the sweep is submitted as a Ray Job whose log streams here;
- its four trials run on the worker (the store's node_id) with the client's rlv (the store's
  rlv_version); each waits after its first epoch until the client has detached with Ctrl-C;
- `rlv status --watch` on the client sees the sweep end, the job succeeds;
- `ray down` stops the head's Ray, and the worker's leaves once the head is gone.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from conftest import free_port
from gates import Gates, wait_for
from machines import ROOT, VENV_SITE, Client, Machine, free_addresses, lab_site, why_not

pytestmark = pytest.mark.slow

SHIPPED = ROOT / "cluster-local.yaml"
TRIALS = [f"{encoder}-fc-normal-s{seed}" for encoder in ("L", "NL") for seed in (0, 1)]
SWEEP = """\
name: lab
factors: {dataset: [mnist], encoder: [L, NL], layer: [fc], prior: [normal]}
seeds: 2
settings:
  data: {train_size: 300, test_size: 100}
  train: {epochs: 2, checkpoint_every: 1}
  eval: {fid_samples: 0}
resources: {cpu: 1, gpu: 0}
max_failures: 0
"""


@dataclass
class Lab:
    rig: Path
    head: Machine
    worker: Machine
    client: Client
    client_bin: Path  # the client venv's bin: rlv, python
    version: str  # the client's rlv version
    gates: Gates
    env: dict[str, str]  # the client's environment


def _fail_or_skip(reason: str) -> None:
    if os.environ.get("CI"):  # install.sh --dev provides everything: CI never goes green without
        pytest.fail(reason)
    pytest.skip(reason)


def _client_venv(rig: Path) -> tuple[Path, str]:
    """A venv holding a normal (non-editable) install of this rlv under a version of its own; its
    dependencies are the test venv's, seen through a folder bound in the client's namespace."""
    import rlv

    version = f"{rlv.__version__.split('+')[0]}+lab{secrets.token_hex(3)}"
    source = rig / "source"
    shutil.copytree(ROOT / "rlv", source / "rlv", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    init = source / "rlv" / "__init__.py"
    code = init.read_text()
    assert code.count("__version__ = ") == 1, "rlv/__init__.py sets its version once"
    init.write_text(re.sub(r'__version__ = "[^"]*"', f'__version__ = "{version}"', code))
    venv = rig / "client-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (venv / "deps").mkdir()
    (site / "deps.pth").write_text(f"{venv / 'deps'}\n")
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w",
                    str(rig / "wheels"), str(source)], check=True, capture_output=True)
    subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                    "--no-index", *map(str, (rig / "wheels").glob("rlv-*.whl"))], check=True,
                   capture_output=True)
    shutil.rmtree(source)
    shutil.rmtree(rig / "wheels")
    return venv, version


@pytest.fixture
def lab() -> Iterator[Lab]:
    reason = why_not()
    if reason:
        _fail_or_skip(reason)
    # outside /tmp, which every machine replaces by its own: the store is shared, as over NFS
    rig = Path(tempfile.mkdtemp(prefix="rlv-lab-", dir="/var/tmp"))
    machines: list[Machine] = []
    try:
        for name in ("host_key", "id_ed25519"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(rig / name)],
                           check=True)
        (rig / "authorized_keys").write_text((rig / "id_ed25519.pub").read_text())
        lab_site(rig)
        gates = Gates(rig / "gates")
        head_ip, worker_ip = free_addresses(2)
        machines += [Machine(rig, "head", head_ip, {}),
                     Machine(rig, "worker", worker_ip, gates.env)]  # trials hold (hold.py)
        venv, version = _client_venv(rig)
        # the client sees its own venv, the dependencies through it, and no project folder
        client = Client(rig, binds=[(VENV_SITE, venv / "deps")], hidden=[ROOT])
        (client.home / ".ssh").mkdir(mode=0o700)
        shutil.copy(rig / "id_ed25519", client.home / ".ssh" / "id_ed25519")
        # the user's Ray token: the one this session's Rays use, so this test reads the head too
        (client.home / ".ray").mkdir()
        shutil.copy(os.environ["RAY_AUTH_TOKEN_PATH"], client.home / ".ray" / "auth_token")
        env = {"HOME": str(client.home), "PATH": f"{venv / 'bin'}:/usr/sbin:/usr/bin:/sbin:/bin",
               "LANG": "C.UTF-8", "RLV_DASHBOARD_PORT": str(free_port())}
        for machine in machines:
            machine.wait_ready()
        yield Lab(rig, machines[0], machines[1], client, venv / "bin", version, gates, env)
    finally:
        for machine in machines:
            machine.stop()
        shutil.rmtree(rig, ignore_errors=True)


def lab_cluster_file(lab: Lab) -> Path:
    """The shipped cluster-local.yaml with the machines' addresses and the SSH user: no other
    line differs."""
    shipped = SHIPPED.read_text()
    text = (shipped.replace("head_ip: REPLACE_ME.10", f"head_ip: {lab.head.address}")
            .replace("worker_ips: [REPLACE_ME.11, REPLACE_ME.12]",
                     f"worker_ips: [{lab.worker.address}]")
            .replace("ssh_user: REPLACE_ME", "ssh_user: root"))
    changed = [line for line, was in zip(text.splitlines(), shipped.splitlines(), strict=True)
               if line != was]
    assert len(changed) == 3 and "REPLACE_ME" not in str(yaml.safe_load(text)), changed
    path = lab.rig / "cluster-local.yaml"
    path.write_text(text)
    return path


def _ray_processes(machine: Machine) -> list[str]:
    return [c for c in machine.commands() if "raylet" in c or "gcs_server" in c]


def _diagnosis(lab: Lab, out: list[str]) -> str:
    """What a failed wait shows: the client's output, the head's autoscaler log, and what runs
    on each machine."""
    logs = sorted((lab.head.tmp / "ray").glob("session_*/logs/monitor.*"))
    parts = [f"--- rlv launch:\n{''.join(out)[-4000:]}"]
    parts += [f"--- {log.name}:\n{log.read_text(errors='replace')[-3000:]}" for log in logs]
    parts += [f"--- {m.name} runs: {[c[:100] for c in m.commands()]}"
              for m in (lab.head, lab.worker)]
    return "\n".join(parts)


class _Output:
    """A process's output lines, read as they come (a full pipe would stall it)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self.process = process
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def has(self, text: str) -> bool:
        return any(text in line for line in self.lines)


def test_rlv_launch_cluster_local_yaml_on_a_lab_of_two_machines(lab: Lab) -> None:
    started, times = time.monotonic(), {}
    cluster = lab_cluster_file(lab)
    sweep, store = lab.rig / "lab.yaml", lab.rig / "store"
    sweep.write_text(SWEEP)
    for trial in TRIALS:  # each trial waits after its first epoch until released
        lab.gates.hold(trial, 1)

    def on_client(*argv: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(lab.client.command(argv), env=lab.env, cwd=lab.client.home,
                              capture_output=True, text=True, **kwargs)

    launch = subprocess.Popen(
        lab.client.command([lab.client_bin / "rlv", "launch", sweep, "--cluster", cluster,
                            "--store", store]),
        env=lab.env, cwd=lab.client.home, text=True, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    out = _Output(launch)
    try:
        def wait(what: str, predicate: Callable[[], bool], timeout_s: float) -> None:
            try:
                wait_for(lambda: predicate() or launch.poll() is not None, timeout_s, what)
            except AssertionError:
                raise AssertionError(f"timed out waiting for {what}\n"
                                     f"{_diagnosis(lab, out.lines)}") from None
            assert launch.poll() is None, f"rlv launch ended\n{_diagnosis(lab, out.lines)}"
            times[what] = time.monotonic() - started

        # ray up (the head's setup and Ray), the tunnel, the submission
        wait("the head", lambda: out.has("Ray dashboard: http://127.0.0.1:"), 600)
        wait("the submission", lambda: out.has("as Ray Job"), 120)
        # the worker joins (its setup and Ray, by the head's autoscaler): two trials, one per
        # CPU of the worker, start and are held
        wait("two trials held", lambda: len(lab.gates.held()) >= 2, 600)
        launch.send_signal(signal.SIGINT)  # Ctrl-C: detach, the job goes on
        launch.wait(timeout=60)
        out.reader.join(timeout=10)
    finally:
        if launch.poll() is None:
            launch.kill()
    text = "".join(out.lines)
    job_id = text.split("as Ray Job", 1)[1].split(";")[0].strip()
    assert launch.returncode == 130, text[-4000:]
    assert f"detached from job {job_id}; it keeps running" in text

    from ray.job_submission import JobStatus, JobSubmissionClient
    from ray.util.state import list_nodes

    # the test's own look at the head: its dashboard listens on the head's address
    dashboard = f"http://{lab.head.address}:8265"
    jobs = JobSubmissionClient(dashboard)
    assert jobs.get_job_status(job_id) == JobStatus.RUNNING, jobs.get_job_logs(job_id)[-3000:]
    assert (jobs.get_job_info(job_id).metadata or {}).get("job_name") == "rlv sweep lab"
    assert job_id.startswith("rlv-lab-")
    for trial in TRIALS:
        lab.gates.release(trial)

    status = on_client(lab.client_bin / "rlv", "status", "lab", "--store", store, "--watch",
                       "--every", "1", timeout=600)
    assert status.returncode == 0, status.stdout[-3000:] + status.stderr
    assert "4 finished" in status.stdout.split("--- ")[-1], status.stdout[-2000:]
    times["the sweep"] = time.monotonic() - started
    wait_for(lambda: jobs.get_job_status(job_id).is_terminal(), 120, "the job to end")
    assert jobs.get_job_status(job_id) == JobStatus.SUCCEEDED, jobs.get_job_logs(job_id)[-3000:]

    nodes = {node.node_ip: node.node_id for node in list_nodes(address=dashboard)}
    assert set(nodes) == {lab.head.address, lab.worker.address}, nodes
    trials = pd.read_parquet(store / "trials")
    assert sorted(trials["trial_id"]) == sorted(TRIALS)
    assert set(trials["node_id"]) == {nodes[lab.worker.address]}  # the trials ran on the worker
    assert set(trials["hostname"]) == {"lab-worker"}
    assert set(trials["rlv_version"]) == {lab.version}  # with the client's rlv

    down = on_client(lab.client_bin / "python", "-m", "ray.scripts.scripts", "down", "-y",
                     cluster, timeout=300)
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    assert not _ray_processes(lab.head), lab.head.commands()  # the file's `ray stop` ran there
    times["ray down"] = time.monotonic() - started
    # the local provider's `ray down` stops Ray on the head; the worker's raylet, its head
    # gone, stops too
    wait_for(lambda: not _ray_processes(lab.worker), 180, "the worker's Ray to stop")
    times["the worker's Ray gone"] = time.monotonic() - started
    print("\nlab timeline (s from rlv launch): "
          + ", ".join(f"{what} {at:.0f}" for what, at in times.items()))
