"""The cluster path of `rlv launch`: bring a cloud cluster up and run the sweep on it as a Ray Job.

    rlv launch [SWEEP] --cluster cluster.yaml   ray up, forward the dashboard over SSH, submit
    rlv launch [SWEEP] --address http://H:8265  submit to a running cluster's Jobs API

The job runs `python -m rlv.cli launch --sweep-json SPEC --address auto` on the head, i.e. the local path of
launch.py against the cluster's own Ray, with this project folder as its working_dir. The job's
logs stream here; Ctrl-C stops the streaming, not the job (`ray job stop ID` does). The job's
submission id and its metadata's `job_name` name the sweep in the dashboard (dashboard.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from rlv.errors import RlvError
from rlv.store.files import first_line
from rlv.sweep.spec import SweepSpec

DASHBOARD_PORT = 8265
# what the job's working_dir upload leaves out (Ray caps a working_dir at a few hundred MB)
UPLOAD_EXCLUDES = [".venv", ".git", "results", "runs", "**/__pycache__", "*.npy", "*.pt",
                   ".mypy_cache", ".ruff_cache", ".pytest_cache"]


def project_root() -> Path:
    """The folder holding rlv/ and sweeps/: what the job's working_dir uploads."""
    return Path(__file__).resolve().parents[2]  # rlv/service/cluster.py -> the project


def validate_cluster_config(path: Path) -> dict[str, Any]:
    """Ray's own schema check of a cluster-launcher config (offline), as an RlvError on failure."""
    if not path.exists():
        raise RlvError(f"cluster config {path} does not exist")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise RlvError(f"{path}: not valid YAML: {exc}") from None
    problem = cluster_config_problem(config)
    if problem:
        raise RlvError(f"{path} fails Ray's cluster config schema: {problem}")
    return config  # type: ignore[no-any-return]


def cluster_config_problem(config: Any) -> str:
    """What is wrong with a cluster-launcher config ("" if nothing): the JSON schema that ships in
    Ray's package (a data file, not a private API) and the cross-key rules `ray up` adds to it."""
    import jsonschema
    import ray.autoscaler

    if not isinstance(config, dict):
        return "a cluster config is a YAML mapping"
    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    try:
        jsonschema.validate(config, json.loads(schema_path.read_text()))
    except jsonschema.ValidationError as exc:
        return first_line(exc)
    types = config.get("available_node_types") or {}
    if types:
        head = config.get("head_node_type")
        if head not in types:
            return f"head_node_type {head!r} must be one of available_node_types ({', '.join(types)})"
        minimum = sum(int(t.get("min_workers", 0) or 0) for t in types.values())
        if "max_workers" in config and minimum > int(config["max_workers"]):
            return (f"max_workers = {config['max_workers']} is smaller than the node types' "
                    f"min_workers together ({minimum})")
    return ""


def use_token_auth() -> None:
    """Talk to token-authenticated clusters (Ray 2.60's default) with this machine's token."""
    token = Path.home() / ".ray" / "auth_token"
    if "RAY_AUTH_MODE" not in os.environ and (token.exists() or os.environ.get("RAY_AUTH_TOKEN")):
        os.environ["RAY_AUTH_MODE"] = "token"


def ray_cli(*args: str) -> list[str]:
    """A `ray` command line for this Python's Ray, whether or not its venv is on PATH."""
    beside = Path(sys.executable).parent / "ray"
    return [str(beside) if beside.exists() else (shutil.which("ray") or "ray"), *args]


def ensure_token() -> None:
    """Create ~/.ray/auth_token if missing: cluster.yaml mounts it on every node."""
    if not (Path.home() / ".ray" / "auth_token").exists():
        done = subprocess.run(ray_cli("get-auth-token", "--generate"), capture_output=True,
                              text=True)
        if done.returncode != 0:
            raise RlvError(f"cannot create a Ray token (ray get-auth-token --generate): "
                           f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")


def wait_for_dashboard(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=5):
                return
        except urllib.error.HTTPError:  # it answers (401 without a token): it is up
            return
        except (urllib.error.URLError, OSError) as exc:
            if time.monotonic() > deadline:
                raise RlvError(f"the Ray dashboard at {url} does not answer ({exc}); is the "
                               "cluster up and the address right?") from None
            time.sleep(2)


def bring_up(cluster: Path, echo: Callable[[str], None]) -> None:
    """`ray up` the cluster of a cluster-launcher config (idempotent: a running one is updated)."""
    validate_cluster_config(cluster)
    ensure_token()
    from ray.autoscaler.sdk import create_or_update_cluster

    echo(f"bringing up the cluster of {cluster} (ray up; minutes on a cold start)")
    try:
        create_or_update_cluster(str(cluster), no_restart=False, restart_only=False,
                                 no_config_cache=False)
    except Exception as exc:
        raise RlvError(f"ray up {cluster} failed: {first_line(exc)}") from None


def forward_dashboard(cluster: Path, echo: Callable[[str], None]) -> subprocess.Popen[bytes]:
    """An SSH tunnel to the head's dashboard (`ray dashboard`); the caller terminates it."""
    local, remote = dashboard_ports(cluster)
    forwarder = subprocess.Popen(ray_cli("dashboard", str(cluster), "--port", str(local),
                                         "--remote-port", str(remote)),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 start_new_session=True)  # its ssh child goes with it
    try:
        wait_for_dashboard(f"http://127.0.0.1:{local}", timeout_s=120)
    except RlvError:
        stop_forwarder(forwarder)
        raise
    echo(f"Ray dashboard: http://127.0.0.1:{local} (an SSH tunnel; later: "
         f"`ray dashboard {cluster}`)")
    return forwarder


def on_cloud(cluster: Path | None) -> bool:
    """Whether a launcher config starts cloud machines (no shared folder) rather than a lab's
    own machines by address (provider `local`, where an NFS path can be the store)."""
    if cluster is None or not cluster.is_file():
        return cluster is not None
    try:
        config = yaml.safe_load(cluster.read_text()) or {}
    except yaml.YAMLError:
        return True  # validate_cluster_config names the problem
    provider = config.get("provider") if isinstance(config, dict) else None
    return not (isinstance(provider, dict) and provider.get("type") == "local")


def dashboard_ports(cluster: Path) -> tuple[int, int]:
    """(here, on the head): the tunnel's local port ($RLV_DASHBOARD_PORT, default 8265) and the
    head's dashboard port (its --dashboard-port in head_start_ray_commands, default 8265)."""
    local = int(os.environ.get("RLV_DASHBOARD_PORT") or DASHBOARD_PORT)
    remote = DASHBOARD_PORT
    try:
        config = yaml.safe_load(cluster.read_text()) or {}
        commands = " ".join(config.get("head_start_ray_commands") or [])
    except (OSError, yaml.YAMLError, AttributeError):
        commands = ""
    for word in commands.split():
        if word.startswith("--dashboard-port="):
            remote = int(word.split("=", 1)[1])
    return local, remote


def stop_forwarder(forwarder: subprocess.Popen[bytes]) -> None:
    """End `ray dashboard` and the ssh tunnel it runs (its process group: terminate() alone
    leaves the ssh child holding the port)."""
    try:
        os.killpg(forwarder.pid, signal.SIGTERM)
        forwarder.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        forwarder.kill()


def check_cluster_store(store: str, on_cloud: bool) -> None:
    """A job runs in a temporary folder on the head, and a cloud cluster has many nodes."""
    if "://" in store:
        return
    if on_cloud:
        raise RlvError(f"store {store!r} is a local folder; a cloud cluster's nodes need a "
                       "shared store: pass --store s3://BUCKET/PATH (or gs://...)")
    if not os.path.isabs(store):
        raise RlvError(f"store {store!r} is a relative path, which a Ray Job would resolve in its "
                       "temporary folder; pass --store with a URI (s3://...) or an absolute path "
                       "that every node of the cluster shares")


def entrypoint(spec: SweepSpec, store: str | None) -> str:
    """The job's command: the sweep travels as JSON, so the cluster runs what was checked here."""
    command = ["python", "-m", "rlv.cli", "launch", "--sweep-json", json.dumps(spec.to_dict()),
               "--address", "auto"]
    if store:
        command += ["--store", store]
    return " ".join(shlex.quote(c) for c in command)


async def _tail(client: Any, job_id: str, echo: Callable[[str], None]) -> None:
    async for chunk in client.tail_job_logs(job_id):
        for line in chunk.rstrip("\n").splitlines():
            echo(line)


async def _stream(client: Any, job_id: str, echo: Callable[[str], None]) -> bool:
    """Echo the job's log until it ends (False) or Ctrl-C detaches (True). Ctrl-C is taken by
    the event loop itself (add_signal_handler): a KeyboardInterrupt raised wherever the main
    thread happens to be could land inside the log client's own code and be lost there."""
    loop = asyncio.get_running_loop()
    detach = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, detach.set)
    try:
        tail = asyncio.ensure_future(_tail(client, job_id, echo))
        interrupted = asyncio.ensure_future(detach.wait())
        await asyncio.wait({tail, interrupted}, return_when=asyncio.FIRST_COMPLETED)
        if tail.done():
            interrupted.cancel()
            tail.result()  # the log client's error, if it ended with one
            return False
        tail.cancel()
        return True
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def submit_sweep(spec: SweepSpec, *, sweep_arg: str, cluster: Path | None, address: str | None,
                 store: str | None, echo: Callable[[str], None]) -> int:
    """Run the sweep as a Ray Job on a cluster; the job's exit status (0 when every trial ran)."""
    if cluster is not None:
        # the file first: whether the store must be shared depends on what the file says, and a
        # missing or broken file is the problem to name, not the store it cannot judge
        validate_cluster_config(cluster)
    check_cluster_store(store or spec.store, on_cloud=on_cloud(cluster))
    use_token_auth()
    forwarder = None
    try:
        if cluster is not None:
            bring_up(cluster, echo)
            use_token_auth()  # ray up made the token if there was none
            forwarder = forward_dashboard(cluster, echo)
            url = f"http://127.0.0.1:{dashboard_ports(cluster)[0]}"
        else:
            url = (address or "").rstrip("/")
            wait_for_dashboard(url, timeout_s=10)
        return _run_job(spec, url, store, sweep_arg, echo)
    finally:
        if forwarder is not None:
            stop_forwarder(forwarder)


def submit_when_ready(client: Any, timeout_s: float = 120, **job: Any) -> str:
    """client.submit_job(**job), retried while a fresh head's job agent is not up yet (its
    dashboard answers first, and refuses jobs with "No available agent" until then)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return str(client.submit_job(**job))
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(3)


def _run_job(spec: SweepSpec, url: str, store: str | None, sweep_arg: str,
             echo: Callable[[str], None]) -> int:
    from ray.job_submission import JobStatus, JobSubmissionClient

    from rlv.service.dashboard import dashboard_lines, job_metadata, submission_id

    try:
        client = JobSubmissionClient(url)
        job_id = submit_when_ready(
            client,
            entrypoint=entrypoint(spec, store),
            runtime_env={"working_dir": str(project_root()), "excludes": UPLOAD_EXCLUDES},
            # the dashboard's Job name column, and the sweep's `rlv board` line
            metadata=job_metadata(spec.name, store or spec.store),
            submission_id=submission_id(spec.name),
        )
    except Exception as exc:
        raise RlvError(f"cannot submit the sweep to {url}: {first_line(exc)}") from None
    echo(f"submitted sweep {spec.name} as Ray Job {job_id}; its logs follow "
         f"(Ctrl-C detaches; `ray job stop {job_id} --address {url}` stops it)")
    for line in dashboard_lines(url, spec.name, jobs_path=True):
        echo(line)
    try:
        detached = asyncio.run(_stream(client, job_id, echo))
    except KeyboardInterrupt:  # Ctrl-C before the loop took it
        detached = True
    if detached:
        echo(f"detached from job {job_id}; it keeps running (rlv status {sweep_arg})")
        return 130
    info = client.get_job_info(job_id)
    if info.status == JobStatus.SUCCEEDED:
        return 0
    echo(f"job {job_id} ended {info.status}: {info.message or ''}".rstrip(": "))
    return 1
