"""Shared test fixtures: a private cache, and one real Ray cluster for the whole session.

The cluster is a real `ray start --head` (dashboard and Jobs API on 127.0.0.1) with 4 CPUs and one
GPU it declares but does not have, so that 0.25-GPU trials pack four at once on a CPU machine.
It uses token authentication, as Ray 2.60 clusters do by default, with a session token.
"""

from __future__ import annotations

import os
import secrets
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

# Ray reads its authentication settings when it is first imported, and any test may import it:
# so the session's token exists and the mode is set before the first test is even collected.
_AUTH_DIR = Path(tempfile.mkdtemp(prefix="rlv-tests-ray-auth-"))
(_AUTH_DIR / "auth_token").write_text(secrets.token_hex(32))
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN_PATH"] = str(_AUTH_DIR / "auth_token")


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


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory, private_cache: Path) -> Iterator[RayCluster]:
    import ray
    port, dashboard_port = free_port(), free_port()
    subprocess.run(
        [str(BIN / "ray"), "start", "--head", f"--port={port}", "--num-cpus=4", "--num-gpus=1",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={dashboard_port}", "--disable-usage-stats"],
        check=True, capture_output=True, text=True,
    )
    address = f"127.0.0.1:{port}"
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{dashboard}/api/version", timeout=2)
            break
        except urllib.error.HTTPError:  # 401 without the token: the dashboard is up
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    ray.init(address=address, log_to_driver=False)
    yield RayCluster(address=address, dashboard=dashboard)
    ray.shutdown()
    subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True)
