"""The cluster path of `rlv launch`: bring a cluster up and run the sweep on it as a Ray Job.

    rlv launch [SWEEP] --cluster FILE           stage rlv's wheel, ray up, tunnel to the
                                                dashboard over SSH, submit
    rlv launch [SWEEP] --address http://H:8265  submit to a running cluster's Jobs API
    ... --dry-run                               print all of that instead of running it

The nodes install the wheel of the rlv this machine imports (wheel.py; the files' setup_commands),
and the job carries that same rlv package as its py_modules, so the sweep runs this machine's
rlv whatever the nodes had before and whether or not a project folder exists here. The job runs
`python -m rlv.cli launch --sweep-json SPEC --address auto` on the head, i.e. the local path of
launch.py against the cluster's own Ray. The job's logs stream here; Ctrl-C stops the
streaming, not the job (`ray job stop ID` does). The job's submission id and its metadata's
`job_name` name the sweep in the dashboard (dashboard.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from rlv.errors import RlvError
from rlv.service.tunnel import (
    close_tunnel,
    dashboard_ports,
    open_tunnel,
    ray_cli,
    tunnel_command,
    wait_for_dashboard,
)
from rlv.service.wheel import STAGE, package_dir, stage_wheel, wheel_name
from rlv.store.files import first_line
from rlv.sweep.spec import SweepSpec


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
    Ray's package (a data file, not a private API) and the cross-key rules `ray up` adds to it.
    Ray itself is not imported: it reads the token mode once, when first imported (see
    use_token_auth)."""
    import importlib.util

    import jsonschema

    if not isinstance(config, dict):
        return "a cluster config is a YAML mapping"
    ray_spec = importlib.util.find_spec("ray")
    assert ray_spec is not None and ray_spec.origin, "rlv's dependencies include Ray"
    schema_path = Path(ray_spec.origin).parent / "autoscaler" / "ray-schema.json"
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
    """Talk to token-authenticated clusters (Ray 2.60's default) with this machine's token.
    Before Ray is first imported in this process: it reads the mode then, once."""
    token = Path.home() / ".ray" / "auth_token"
    if "RAY_AUTH_MODE" not in os.environ and (token.exists() or os.environ.get("RAY_AUTH_TOKEN")):
        os.environ["RAY_AUTH_MODE"] = "token"


def ensure_token() -> None:
    """Create ~/.ray/auth_token if missing (in a `ray` process of its own, so that this one has
    not imported Ray yet): the clusters' files mount it on every node."""
    if not (Path.home() / ".ray" / "auth_token").exists():
        done = subprocess.run(ray_cli("get-auth-token", "--generate"), capture_output=True,
                              text=True)
        if done.returncode != 0:
            said = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
            raise RlvError(f"cannot create a Ray token (ray get-auth-token --generate): {said[-1]}")


def bring_up(cluster: Path, echo: Callable[[str], None]) -> None:
    """Stage this rlv's wheel, then `ray up` the cluster of a cluster-launcher config. A running
    cluster is updated without restarting Ray (a sweep it runs goes on): the nodes reinstall rlv
    only if the wheel changed."""
    validate_cluster_config(cluster)
    wheel = stage_wheel()
    from ray.autoscaler.sdk import create_or_update_cluster

    echo(f"bringing up the cluster of {cluster} with {wheel.name} (ray up; minutes on a cold "
         "start)")
    try:
        create_or_update_cluster(str(cluster), no_restart=True, restart_only=False,
                                 no_config_cache=False)
    except Exception as exc:
        raise RlvError(f"ray up {cluster} failed: {first_line(exc)}") from None


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


def runtime_env() -> dict[str, Any]:
    """The job's runtime environment: this machine's rlv package, first on every job process's
    path (the entrypoint's and the trials'), whatever rlv the nodes have installed."""
    return {"py_modules": [str(package_dir())], "excludes": ["**/__pycache__"]}


def submit_sweep(spec: SweepSpec, *, sweep_arg: str, cluster: Path | None, address: str | None,
                 store: str | None, echo: Callable[[str], None], dry_run: bool = False) -> int:
    """Run the sweep as a Ray Job on a cluster; the job's exit status (0 when every trial ran).
    With `dry_run`, print what would be run instead (0)."""
    config = None
    if cluster is not None:
        # the file first: whether the store must be shared depends on what the file says, and a
        # missing or broken file is the problem to name, not the store it cannot judge
        config = validate_cluster_config(cluster)
    check_cluster_store(store or spec.store, on_cloud=on_cloud(cluster))
    if dry_run:
        for line in plan_lines(spec, cluster, config, address, store):
            echo(line)
        return 0
    if cluster is not None:
        ensure_token()  # the cluster's nodes get it (file_mounts)
    use_token_auth()
    tunnel = None
    try:
        if cluster is not None and config is not None:
            bring_up(cluster, echo)
            tunnel = open_tunnel(cluster, config, echo)
            url = f"http://127.0.0.1:{dashboard_ports(config)[0]}"
        else:
            url = (address or "").rstrip("/")
            wait_for_dashboard(url, timeout_s=10)
        return _run_job(spec, url, store, sweep_arg, echo)
    finally:
        if tunnel is not None:
            close_tunnel(tunnel)


def plan_lines(spec: SweepSpec, cluster: Path | None, config: dict[str, Any] | None,
               address: str | None, store: str | None) -> list[str]:
    """What `rlv launch --dry-run` prints: the ray up it would run (the file's mounts and
    commands, with the wheel it would stage), the tunnel, and the Ray Job."""
    from rlv.service.dashboard import job_metadata, submission_id

    lines = ["dry run: nothing is staged, started or submitted"]
    if cluster is not None and config is not None:
        provider = config.get("provider") or {}
        where = (f"head {provider.get('head_ip')}, workers "
                 f"{', '.join(map(str, provider.get('worker_ips') or [])) or 'none'}"
                 if provider.get("type") == "local" else f"provider {provider.get('type')}")
        lines += [f"ray up {cluster} (cluster {config.get('cluster_name')}: {where}; a running "
                  "cluster is updated, not restarted)",
                  f"  stage: {STAGE}/{wheel_name()} (the rlv at {package_dir()}) and "
                  f"{STAGE}/requirements.txt"]
        lines += [f"  file_mounts: {remote} <- {local}"
                  for remote, local in (config.get("file_mounts") or {}).items()]
        for key in ("initialization_commands", "setup_commands", "head_setup_commands",
                    "worker_setup_commands", "head_start_ray_commands",
                    "worker_start_ray_commands"):
            if config.get(key):
                lines.append(f"  {key}:")
                lines += [f"    {command}" for command in config[key]]
        tunnel = " ".join(shlex.quote(word) for word in tunnel_command(cluster, config))
        url = f"http://127.0.0.1:{dashboard_ports(config)[0]}"
        lines.append(f"tunnel to the dashboard: {tunnel}")
    else:
        url = (address or "").rstrip("/")
    lines += [f"Ray Job on {url}:",
              f"  entrypoint: {entrypoint(spec, store)}",
              f"  runtime_env: {json.dumps(runtime_env())}",
              f"  metadata: {json.dumps(job_metadata(spec.name, store or spec.store))}",
              f"  submission_id: {submission_id(spec.name)} (a new one each launch)"]
    return lines


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
            runtime_env=runtime_env(),
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
