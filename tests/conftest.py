"""Shared test fixtures: a private cache, and one real Ray cluster for the whole session.

The cluster is a real `ray start --head` (dashboard and Jobs API on 127.0.0.1) with 4 CPUs and one
GPU it declares but does not have, so that 0.25-GPU trials pack four at once on a CPU machine.
It uses token authentication, as Ray 2.60 clusters do by default, with a session token.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
# fixtures of the S3 tests (moto's server on loopback), loaded once this module is complete
pytest_plugins = ["s3server"]

# Ray reads its authentication settings when it is first imported, and any test may import it:
# so the session's token exists and the mode is set before the first test is even collected.
_AUTH_DIR = Path(tempfile.mkdtemp(prefix="rlv-tests-ray-auth-"))
(_AUTH_DIR / "auth_token").write_text(secrets.token_hex(32))
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN_PATH"] = str(_AUTH_DIR / "auth_token")
# Loopback only: on Linux Ray replaces a node address of 127.0.0.1 by the machine's own address
# and binds its GCS and raylets on every interface; with its single-machine mode (the switch
# Ray keeps for macOS and Windows, off here) every Ray process this session starts (heads,
# Cluster helper nodes, the fake autoscaler's nodes, rlv launch drivers) uses 127.0.0.1 alone.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Data and FID caches of this session only (a fresh machine's first run, every time)."""
    cache = tmp_path_factory.mktemp("rlv-cache")
    os.environ["RLV_CACHE_DIR"] = str(cache)
    os.environ["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"  # rlv and ray CLIs
    return cache


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RayCluster:
    address: str  # GCS host:port, for ray.init and `rlv launch --address`
    dashboard: str  # http://127.0.0.1:PORT, for the Jobs API
    pid: int  # the `ray start --block` process: every process of this cluster descends from it


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory, private_cache: Path) -> Iterator[RayCluster]:
    import ray
    head, cluster = start_head(tmp_path_factory.mktemp("ray"), cpus=4, gpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    stop_process_group(head)


def start_head(temp_dir: Path, cpus: int, gpus: int,
               timeout_s: float = 90) -> tuple[subprocess.Popen[bytes], RayCluster]:
    """A real `ray start --head` on free 127.0.0.1 ports (the dashboard agent's too: its fixed
    default is taken wherever another head runs, and without it the dashboard shows no logs),
    once its dashboard answers. --block keeps `ray start` in the foreground as the parent of the
    head's processes, in a process group of its own: stop_process_group stops exactly those
    (never `ray stop`, which stops every Ray on the machine)."""
    port, dashboard_port, agent_port = free_port(), free_port(), free_port()
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", f"--num-cpus={cpus}",
         f"--num-gpus={gpus}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard_port}", f"--dashboard-agent-listen-port={agent_port}",
         "--disable-usage-stats", f"--temp-dir={temp_dir}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"{dashboard}/api/version", timeout=2)
            break
        except urllib.error.HTTPError:  # 401 without the token: the dashboard is up
            break
        except OSError:
            if time.monotonic() > deadline or head.poll() is not None:
                stop_process_group(head)
                raise
            time.sleep(1)
    return head, RayCluster(address=f"127.0.0.1:{port}", dashboard=dashboard, pid=head.pid)


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 20 s, to the process group that `process` leads."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="session")
def watch_cluster(tmp_path_factory: pytest.TempPathFactory, private_cache: Path) -> Iterator[RayCluster]:
    """A second head, 2 CPUs, for the tests that read the dashboard (tests/test_watch.py and
    tests/test_dashboard_browser.py): every port it listens on is a free one, the dashboard
    agent's too (its fixed default, 52365, is taken wherever another Ray runs on the machine, and
    without its agent the dashboard shows no logs). Its drivers are `rlv launch` processes."""
    head, cluster = start_head(tmp_path_factory.mktemp("ray-watch"), cpus=2, gpus=0)
    yield cluster
    stop_process_group(head)
