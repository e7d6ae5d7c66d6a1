"""Ray for a launch: the embedded local cluster (started here, dashboard on 127.0.0.1) or the one
at --address / $RAY_ADDRESS, joined as a driver. What a running Ray cannot honour (the embedded
cluster's sizes) is an error naming the option, not ignored."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from rlv.errors import RlvError
from rlv.store.files import first_line


@dataclass(frozen=True)
class LaunchOptions:
    store: str | None = None  # overrides the sweep file's store
    address: str | None = None  # join this Ray cluster instead of starting one
    num_cpus: int | None = None  # the embedded cluster's CPUs (default: all)
    num_gpus: int | None = None  # the embedded cluster's GPUs (default: detected)

    def sizes(self) -> list[str]:
        """The options that size an embedded cluster, as given."""
        return [f"--{name.replace('_', '-')} {value}"
                for name, value in (("num_cpus", self.num_cpus), ("num_gpus", self.num_gpus))
                if value is not None]


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """RlvError unless host:port answers: ray.init would retry an unreachable GCS for minutes."""
    target = address.split("://", 1)[-1]
    if target == "auto" or ":" not in target:
        return  # "auto" finds the local cluster (or fails at once); no port to probe
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        raise RlvError(f"cannot reach Ray at {address}: {exc}; is the cluster up (ray status) "
                       "and the address host:port of its head?") from None


def check_options(options: LaunchOptions) -> None:
    """Before anything runs: sizes of an embedded cluster given to a launch that joins one."""
    address = options.address or os.environ.get("RAY_ADDRESS")
    if address and options.sizes():
        raise RlvError(f"{' and '.join(options.sizes())} size the embedded local Ray, but this "
                       f"launch joins the running cluster at {address} (--address or "
                       "RAY_ADDRESS), which keeps its own size: leave them out")


def _check_running(options: LaunchOptions) -> None:
    """A Ray this process already joined keeps its size: refuse sizes that differ from it."""
    import ray

    have = ray.cluster_resources()
    for option, key, wanted in (("--num-cpus", "CPU", options.num_cpus),
                                ("--num-gpus", "GPU", options.num_gpus)):
        if wanted is not None and int(have.get(key, 0)) != wanted:
            raise RlvError(f"{option} {wanted}: this process already runs on a Ray cluster with "
                           f"{have.get(key, 0):g} {key}s, which it cannot resize; leave "
                           f"{option} out")


def start_ray(options: LaunchOptions, env: dict[str, str], sweep: str = "",
              store: str = "") -> str:
    """Start the embedded cluster or join one; return the dashboard URL ("" if there is none).
    `env` reaches every worker through the job's runtime_env. The driver's job carries the
    sweep's name (the dashboard's Job name column) and the `rlv board` line of its store."""
    import ray

    from rlv.service.dashboard import job_config

    if ray.is_initialized():
        _check_running(options)
        return ""
    check_options(options)
    address = options.address or os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": env} if env else None
    if address:
        check_reachable(address)
    try:
        if address:
            context = ray.init(address=address, log_to_driver=False, runtime_env=runtime_env,
                               job_config=job_config(sweep, store))
        else:
            # "local": a new cluster of our own, even where another one runs on this machine
            context = ray.init(address="local", num_cpus=options.num_cpus,
                               num_gpus=options.num_gpus, include_dashboard=True,
                               dashboard_host="127.0.0.1", log_to_driver=False,
                               runtime_env=runtime_env, job_config=job_config(sweep, store))
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray cluster"
        raise RlvError(f"cannot reach Ray at {where}: {first_line(exc)}") from None
    url = context.dashboard_url or ""
    if url and not url.startswith("http"):
        url = f"http://{url}"
    return url
