"""`rlv launch --cluster FILE` end to end on loopback: Ray's `local` node provider over SSH.

An sshd of the test's own (Debian's openssh-server, from scripts/install.sh --dev) listens on a
free 127.0.0.1 port with a throwaway host key and client key; Ray reaches it through an
`ssh_proxy_command` (its SSH runner has no port option). `ray up` starts a Ray head here, the
sweep runs as a Ray Job whose log streams, Ctrl-C detaches while the job goes on, `rlv status`
reads the shared store, and `ray down` tears the cluster down.

This machine is shared: the sshd runs every command through a guard that refuses `ray stop`
(what `ray down` runs on the head, and it would stop every Ray here); the head is started with
--block in a process group of its own and stopped by it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import free_port, stop_process_group
from gates import Gates

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SSHD = Path("/usr/sbin/sshd")
HOME = Path.home()
GUARD = """#!/bin/bash
# every command of this test's sshd runs here: `ray stop` (and a shutdown) would reach every Ray
# on this shared machine, not just the test's cluster
case "$SSH_ORIGINAL_COMMAND" in
  *"ray stop"*|*shutdown*) echo "test sshd refused: $SSH_ORIGINAL_COMMAND" >> {log}; exit 0;;
esac
exec /bin/bash -c "$SSH_ORIGINAL_COMMAND"
"""


@dataclass(frozen=True)
class Sshd:
    port: int
    key: Path
    root: Path
    env: dict[str, str]  # what the head's processes see


def why_no_sshd() -> str | None:
    if not SSHD.exists():
        return f"{SSHD} is missing: install Debian's openssh-server (scripts/install.sh --dev)"
    if shutil.which("rsync") is None:
        return "rsync is missing (ray up copies files with it): scripts/install.sh --dev"
    if shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "the OpenSSH client (ssh, ssh-keygen) is missing"
    return None


@pytest.fixture
def sshd() -> Iterator[Sshd]:
    reason = why_no_sshd()
    if reason:
        if os.environ.get("CI"):  # install.sh --dev installs them: CI never goes green without
            pytest.fail(reason)
        pytest.skip(reason)
    root = Path(tempfile.mkdtemp(prefix="rlv-ssh-"))
    for name in ("host_key", "id_ed25519"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)],
                       check=True)
    (root / "authorized_keys").write_text((root / "id_ed25519.pub").read_text())
    (root / "guard.sh").write_text(GUARD.format(log=root / "refused.log"))
    (root / "guard.sh").chmod(0o755)
    port = free_port()
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": os.environ["RAY_AUTH_TOKEN_PATH"],
           "RAY_TMPDIR": str(root), "RLV_CACHE_DIR": str(root / "cache"),
           **Gates(root / "gates").env}  # the test holds the head's trials (rlv/service/hold.py)
    (root / "sshd_config").write_text("\n".join([
        f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {root / 'host_key'}",
        f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
        "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no",
        f"ForceCommand {root / 'guard.sh'}",
        "SetEnv " + " ".join(f"{k}={v}" for k, v in env.items()), ""]))
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    daemon = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(root / "sshd_config")],
                              stdout=subprocess.DEVNULL, stderr=open(root / "sshd.log", "wb"),
                              start_new_session=True)
    deadline = time.monotonic() + 20
    while daemon.poll() is None and time.monotonic() < deadline:
        probe = subprocess.run(["bash", "-c", f"exec 3<>/dev/tcp/127.0.0.1/{port}"],
                               capture_output=True)
        if probe.returncode == 0:
            break
        time.sleep(0.3)
    if daemon.poll() is not None:
        reason = f"sshd could not start: {(root / 'sshd.log').read_text()[-300:]}"
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
    try:
        yield Sshd(port, root / "id_ed25519", root, env)
    finally:
        stop_process_group(daemon)


def loopback_config(sshd: Sshd, ray_port: int, dashboard_port: int) -> Path:
    """cluster-local.yaml, pointed at this machine through the test's sshd."""
    config = yaml.safe_load((ROOT / "cluster-local.yaml").read_text())
    proxy = sshd.root / "proxy.sh"  # stdin/stdout <-> the sshd's port
    proxy.write_text(f"#!/bin/bash\nexec 3<>/dev/tcp/127.0.0.1/{sshd.port}\n"
                     "cat <&3 &\nexec cat >&3\n")
    proxy.chmod(0o755)
    config["cluster_name"] = f"rlv-loopback-{sshd.port}"
    config["provider"] = {"type": "local", "head_ip": "127.0.0.1", "worker_ips": []}
    config["auth"] = {"ssh_user": os.environ.get("USER") or "root",
                      "ssh_private_key": str(sshd.key), "ssh_proxy_command": str(proxy)}
    # the job uploads the project itself; this machine already has the venv
    config["file_mounts"] = {}
    config["setup_commands"] = []
    # without SSH_CLIENT: Debian's bash sources ~/.bashrc in every `bash -c` it sees run by sshd
    # (Ray starts workers and the job's entrypoint so), which may put another Python first.
    # Loopback only, and ports of its own (Ray's fixed defaults, such as the dashboard agent's
    # 52365, may be taken by other Rays on this machine); Ray's single-machine mode, as in
    # tests/conftest.py, since a shell started by sshd does not inherit the test's environment
    head = (f"export PATH={BIN}:$PATH RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0; "
            "unset SSH_CLIENT SSH_CONNECTION; "
            f"setsid nohup ray start --head --block --port={ray_port} "
            f"--node-ip-address=127.0.0.1 --dashboard-agent-listen-port={free_port()} "
            f"--ray-client-server-port={free_port()} "
            f"--num-cpus=2 --dashboard-host=127.0.0.1 --dashboard-port={dashboard_port} "
            f"--disable-usage-stats --temp-dir={sshd.root / 'ray'} "
            f"> {sshd.root / 'head.log'} 2>&1 < /dev/null & echo $! > {sshd.root / 'head.pid'}")
    config["head_start_ray_commands"] = [head]
    config["worker_start_ray_commands"] = []
    path = sshd.root / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def stop_head(root: Path) -> None:
    pid_file = root / "head.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text().split()[0])
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.5)


def test_rlv_launch_cluster_over_ssh_on_loopback(sshd: Sshd, tmp_path: Path) -> None:
    ray_port, dashboard_port, tunnel_port = free_port(), free_port(), free_port()
    cluster = loopback_config(sshd, ray_port, dashboard_port)
    sweep = tmp_path / "ssh.yaml"
    sweep.write_text("""\
name: ssh
factors: {dataset: [mnist], encoder: [L, NL], layer: [fc], prior: [normal]}
seeds: 1
settings:
  data: {train_size: 300, test_size: 100}
  train: {epochs: 4, checkpoint_every: 1}
  eval: {fid_samples: 0}
resources: {cpu: 1, gpu: 0}
max_failures: 0
""")
    store = sshd.root / "store"  # a folder the (one) node shares with this client
    # both trials wait after their first epoch until the client has detached: the job is
    # certainly still running then, however fast this machine is
    gates = Gates(sshd.root / "gates")
    names = ["L-fc-normal-s0", "NL-fc-normal-s0"]
    for name in names:
        gates.hold(name, 1)
    env = {**os.environ, "RAY_TMPDIR": str(sshd.root), "RLV_DASHBOARD_PORT": str(tunnel_port)}
    created = [p for p in (HOME / "ray_bootstrap_config.yaml", HOME / "ray_bootstrap_key.pem")
               if not p.exists()]  # what ray up writes in this user's home: removed at the end
    try:
        launch = subprocess.Popen(
            [str(BIN / "rlv"), "launch", str(sweep), "--cluster", str(cluster), "--store",
             str(store)], env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            cwd=ROOT)
        assert launch.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 300
        for line in launch.stdout:  # ray up, the tunnel, the submission, then the job's log
            lines.append(line)
            if "as Ray Job" in line:
                job_id = line.split("as Ray Job", 1)[1].split(";")[0].strip()
                break
            assert time.monotonic() < deadline, "".join(lines)
        else:
            pytest.fail(f"rlv launch ended before submitting: {''.join(lines)}")
        for line in launch.stdout:  # the job's own log, streamed: its driver's first line
            lines.append(line)
            if "sweep ssh: 2 trials" in line:
                break
            assert time.monotonic() < deadline, "".join(lines)
        else:
            pytest.fail(f"the job's log did not stream here: {''.join(lines)}")
        launch.send_signal(signal.SIGINT)  # Ctrl-C: detach, the job goes on
        rest, _ = launch.communicate(timeout=60)
        assert launch.returncode == 130, "".join(lines) + rest
        assert f"detached from job {job_id}; it keeps running" in rest
        # the trials were still to run when this client left: fewer trial rows than trials
        # (rows, not files: one batch file can hold both trials), then the job still going
        # (read after the rows: a job that is running now was running when they were read)
        rows_at_detach = (len(pd.read_parquet(store / "trials"))
                          if (store / "trials").exists() else 0)
        assert rows_at_detach < 2, rows_at_detach

        from ray.job_submission import JobStatus, JobSubmissionClient

        client = JobSubmissionClient(f"http://127.0.0.1:{dashboard_port}")
        assert client.get_job_status(job_id) in (JobStatus.PENDING, JobStatus.RUNNING), \
            client.get_job_logs(job_id)
        for name in names:
            gates.release(name)
        deadline = time.monotonic() + 300
        while client.get_job_status(job_id) not in (JobStatus.SUCCEEDED, JobStatus.FAILED,
                                                    JobStatus.STOPPED):
            assert time.monotonic() < deadline, client.get_job_logs(job_id)[-3000:]
            time.sleep(2)
        assert client.get_job_status(job_id) == JobStatus.SUCCEEDED, client.get_job_logs(job_id)
        from ray.util.state import list_nodes  # loopback only: the head's node is 127.0.0.1

        assert {n.node_ip for n in list_nodes(address=f"http://127.0.0.1:{dashboard_port}")} == {
            "127.0.0.1"}

        status = subprocess.run([str(BIN / "rlv"), "status", str(sweep), "--store", str(store)],
                                capture_output=True, text=True, timeout=120, env=env)
        assert status.returncode == 0, status.stderr
        assert "2 finished" in status.stdout, status.stdout
        trials = pd.read_parquet(store / "trials")
        assert sorted(trials["trial_id"]) == ["L-fc-normal-s0", "NL-fc-normal-s0"]
        assert len(pd.read_parquet(store / "epochs")) == 2 * 4

        down = subprocess.run([str(BIN / "ray"), "down", "-y", str(cluster)], env=env,
                              capture_output=True, text=True, timeout=180)
        assert down.returncode == 0, down.stdout + down.stderr
        # ray down asked the head to `ray stop`; the guard kept it to the test's own head
        assert "ray stop" in (sshd.root / "refused.log").read_text()
    finally:
        stop_head(sshd.root)
        for path in created:
            path.unlink(missing_ok=True)
