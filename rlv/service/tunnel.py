"""The SSH tunnel from this machine to a launcher-made cluster's dashboard and Jobs API.

Where the head's dashboard listens comes from its start command in the cluster file: on the
head's 127.0.0.1 (cluster.yaml: Ray's own `ray dashboard FILE` forwards to it), or on the head's
own address (cluster-local.yaml, `--dashboard-host=$RAY_CLOUD_INSTANCE_ID`: an `ssh -L` to that
address with the file's user and key). The tunnel listens on this machine's 127.0.0.1, port
$RLV_DASHBOARD_PORT (default 8265), which must be free: a dashboard already answering there
(another Ray's) would otherwise take the sweep.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlv.errors import RlvError

DASHBOARD_PORT = 8265
LOCAL_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0", "::1")


def ray_cli(*args: str) -> list[str]:
    """A `ray` command line for this Python's Ray, however it was installed (no script needed)."""
    return [sys.executable, "-m", "ray.scripts.scripts", *args]


def _head_words(config: dict[str, Any]) -> list[str]:
    return " ".join(config.get("head_start_ray_commands") or []).split()


def dashboard_ports(config: dict[str, Any]) -> tuple[int, int]:
    """(here, on the head): the tunnel's local port ($RLV_DASHBOARD_PORT, default 8265) and the
    head's dashboard port (its --dashboard-port in head_start_ray_commands, default 8265)."""
    given = os.environ.get("RLV_DASHBOARD_PORT") or str(DASHBOARD_PORT)
    if not given.isdigit() or not 0 < int(given) < 65536:
        raise RlvError(f"RLV_DASHBOARD_PORT={given!r} is not a port (1-65535)")
    remote = DASHBOARD_PORT
    for word in _head_words(config):
        if word.startswith("--dashboard-port=") and word.split("=", 1)[1].isdigit():
            remote = int(word.split("=", 1)[1])
    return int(given), remote


def dashboard_host(config: dict[str, Any]) -> str:
    """Where the head's dashboard listens, as the head sees it: its --dashboard-host, with a
    variable (the head's own address) resolved to the file's head_ip."""
    host = "127.0.0.1"  # Ray's default
    for word in _head_words(config):
        if word.startswith("--dashboard-host="):
            host = word.split("=", 1)[1]
    if host.startswith("$"):
        return str((config.get("provider") or {}).get("head_ip") or host)
    return host


def tunnel_command(cluster: Path, config: dict[str, Any]) -> list[str]:
    """The command that forwards this machine's tunnel port to the head's dashboard."""
    local, remote = dashboard_ports(config)
    host = dashboard_host(config)
    provider = config.get("provider") or {}
    if host in LOCAL_HOSTS or provider.get("type") != "local":
        return ray_cli("dashboard", str(cluster), "--port", str(local), "--remote-port", str(remote))
    auth = config.get("auth") or {}
    command = ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-o", "StrictHostKeyChecking=no",
               "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
               "-o", "ServerAliveInterval=10", "-o", "IdentitiesOnly=yes"]
    if auth.get("ssh_private_key"):
        command += ["-i", os.path.expanduser(str(auth["ssh_private_key"]))]
    if auth.get("ssh_proxy_command"):
        command += ["-o", f"ProxyCommand={auth['ssh_proxy_command']}"]
    return [*command, "-L", f"127.0.0.1:{local}:{host}:{remote}",
            f"{auth.get('ssh_user')}@{provider.get('head_ip')}"]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def wait_for_dashboard(url: str, timeout_s: float,
                       alive: Callable[[], bool] = lambda: True) -> None:
    """Until the dashboard at `url` answers (401 without a token counts); an RlvError after
    `timeout_s`, or as soon as `alive()` says the tunnel has ended."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=5):
                return
        except urllib.error.HTTPError:  # it answers (401 without a token): it is up
            return
        except (urllib.error.URLError, OSError) as exc:
            if not alive() or time.monotonic() > deadline:
                raise RlvError(f"the Ray dashboard at {url} does not answer ({exc}); is the "
                               "cluster up and the address right?") from None
            time.sleep(1)


def open_tunnel(cluster: Path, config: dict[str, Any],
                echo: Callable[[str], None]) -> subprocess.Popen[bytes]:
    """Start the tunnel and wait until the dashboard answers through it; the caller closes it
    (close_tunnel)."""
    local, _ = dashboard_ports(config)
    if port_in_use(local):
        raise RlvError(f"port {local} on 127.0.0.1 here is in use (another Ray's dashboard?); set "
                       "RLV_DASHBOARD_PORT to a free port for the tunnel to the cluster")
    command = tunnel_command(cluster, config)
    tunnel = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)  # its ssh child goes with it
    try:
        wait_for_dashboard(f"http://127.0.0.1:{local}", timeout_s=120,
                           alive=lambda: tunnel.poll() is None)
    except RlvError:
        close_tunnel(tunnel)
        raise
    shown = " ".join(shlex.quote(word) for word in command)
    if command[0] == sys.executable:  # ray_cli's: shown as the `ray` command
        shown = " ".join(["ray", *(shlex.quote(word) for word in command[3:])])
    echo(f"Ray dashboard: http://127.0.0.1:{local} (an SSH tunnel; later: `{shown}`)")
    return tunnel


def close_tunnel(tunnel: subprocess.Popen[bytes]) -> None:
    """End the tunnel's process group (`ray dashboard` runs ssh as a child, which terminate()
    alone would leave holding the port)."""
    try:
        os.killpg(tunnel.pid, signal.SIGTERM)
        tunnel.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        tunnel.kill()
