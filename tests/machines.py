"""A lab's machines on one host, for the cluster-launcher test (tests/test_cluster_launcher.py).

Each machine is its own PID, mount and UTS namespace (`unshare --pid --fork --mount-proc --uts`,
as root): its own /tmp and home (a copy of /etc/passwd that moves root's home), its own host
name, and its own sshd on port 22 of its own loopback address (127.A.B.n: Linux delivers all of
127.0.0.0/8 to the loopback device). So a `ray stop` run on a machine sees and stops that
machine's Rays only, as on a real one; Ray's files in /tmp and ~ are the machine's; and a PID
that rlv records with a host name (a driver's, a claim's) is never looked up on another machine.
The network is the host's, as on a LAN: what a machine listens on, the others reach, and two
machines (or another Ray on the host) cannot both bind one port of one address.

What the machines have installed, like a lab's image: the Python 3.11 the test venv was made
from (first on PATH through ~/.bashrc), whose site-packages shows rlv's pinned dependencies
(torch, Ray, ...) and not rlv: a folder of links to the test venv's packages, mounted over that
site-packages in each machine's namespace only. A cluster file's setup then installs rlv on them
as in a lab whose Python already has torch.

The client (the lab user's laptop) runs each command in a mount and UTS namespace of its own: a
private /tmp and home (Ray keeps a launched cluster's state in /tmp under the file's
cluster_name, which must not meet another user's), and the project folder can be hidden.
Stopping a machine ends its namespace, and with it every process it ran.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
ROOT = Path(__file__).resolve().parent.parent
VENV_SITE = Path(sysconfig.get_paths()["purelib"])  # the dependencies the machines' Python shows
BASE_PYTHON = Path(sys.base_prefix) / "bin" / f"python{sys.version_info[0]}.{sys.version_info[1]}"


def base_site() -> Path | None:
    """The first site-packages folder of the machines' Python (the base of the test venv)."""
    done = subprocess.run([str(BASE_PYTHON), "-c", "import site; print(*site.getsitepackages())"],
                          capture_output=True, text=True)
    folders = [Path(f) for f in done.stdout.split() if Path(f).is_dir()]
    return folders[0] if done.returncode == 0 and folders else None


def why_not() -> str | None:
    """Why machines cannot be built here (None where they can)."""
    if os.geteuid() != 0:
        return "the lab's machines need root (namespaces, mounts, sshd on port 22)"
    for tool in ("unshare", "mount", "ssh", "ssh-keygen", "rsync"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (scripts/install.sh --dev installs openssh-server and rsync)"
    if not SSHD.exists():
        return f"{SSHD} is missing: install Debian's openssh-server (scripts/install.sh --dev)"
    if not BASE_PYTHON.exists() or base_site() is None:
        return f"the machines' Python, {BASE_PYTHON}, or its site-packages folder is missing"
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "--uts", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot make PID, mount and UTS namespaces: {probe.stderr.strip()}"
    return None


def free_addresses(count: int) -> list[str]:
    """`count` loopback addresses 127.A.B.2, .3, ... whose port 22 is free (A.B from this
    process's PID, so that two test sessions on one host pick different ones)."""
    for attempt in range(64):
        a, b = 100 + (os.getpid() + attempt) % 150, (os.getpid() // 150 + attempt) % 250
        addresses = [f"127.{a}.{b}.{2 + i}" for i in range(count)]
        if all(_bindable(address, 22) for address in addresses):
            return addresses
    raise RuntimeError("no loopback addresses with a free port 22")


def _bindable(address: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def _answers(address: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        try:
            s.connect((address, port))
        except OSError:
            return False
    return True


def _passwd_with_home(home: Path) -> str:
    """/etc/passwd with root's home moved to `home` (sshd, ssh and bash take ~ from it)."""
    lines = []
    for line in Path("/etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == "root":
            fields[5] = str(home)
        lines.append(":".join(fields))
    return "\n".join(lines) + "\n"


def lab_site(rig: Path) -> Path:
    """The machines' site-packages: links to the test venv's packages (rlv's pinned
    dependencies, pip, setuptools), rlv's own files left out."""
    folder = rig / "lab-site"
    folder.mkdir()
    # the links go through rig/venv-site, where each machine mounts the venv's site-packages
    # before its own /tmp hides the venv (a checkout, and so its venv, may lie under /tmp)
    (rig / "venv-site").mkdir()
    for entry in VENV_SITE.iterdir():
        name = entry.name
        if not (name == "rlv" or name.startswith(("rlv-", "__editable__")) or "_rlv_" in name):
            (folder / name).symlink_to(rig / "venv-site" / name)
    return folder


def _private_root(root: Path) -> tuple[Path, Path]:
    """A machine's home and /tmp under `root`, and its passwd naming that home."""
    home, tmp = root / "home", root / "tmp"
    home.mkdir(parents=True)
    tmp.mkdir()
    tmp.chmod(0o1777)
    (root / "passwd").write_text(_passwd_with_home(home))
    return home, tmp


class Machine:
    """A lab machine: a namespace whose first process is its sshd on `address`:22, with `env`
    set in every SSH session (sshd's SetEnv). `rig` holds lab_site, the host key and the
    authorized keys."""

    def __init__(self, rig: Path, name: str, address: str, env: dict[str, str]) -> None:
        self.name, self.address, self.root = name, address, rig / name
        self.home, self.tmp = _private_root(self.root)
        (self.home / ".bashrc").write_text(f"export PATH={BASE_PYTHON.parent}:$PATH\n")
        (self.root / "sshd_config").write_text("\n".join([
            "Port 22", f"ListenAddress {address}", f"HostKey {rig / 'host_key'}",
            f"PidFile {self.root / 'sshd.pid'}", f"AuthorizedKeysFile {rig / 'authorized_keys'}",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no", "PrintMotd no",
            *([f"SetEnv {' '.join(f'{k}={v}' for k, v in env.items())}"] if env else []), ""]))
        setup = [f"hostname lab-{name}", f"mount --bind {VENV_SITE} {rig / 'venv-site'}",
                 f"mount --bind {self.tmp} /tmp",
                 f"mount --bind {self.root / 'passwd'} /etc/passwd",
                 f"mount --bind {rig / 'lab-site'} {base_site()}", "mkdir -p /run/sshd",
                 f"exec {SSHD} -D -e -f {self.root / 'sshd_config'}"]
        # --kill-child: when unshare ends, its child (the namespace's first process) is killed,
        # and with it every process of the namespace
        self.process = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", "--uts", "--kill-child", "--",
             "bash", "-c", " && ".join(setup)],
            stdout=subprocess.DEVNULL, stderr=open(self.root / "sshd.log", "wb"),
            start_new_session=True)
        self.namespace = ""  # its PID namespace, once it runs

    def wait_ready(self, timeout_s: float = 30) -> None:
        """Until its sshd accepts connections."""
        deadline = time.monotonic() + timeout_s
        while not _answers(self.address, 22):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"machine {self.name}'s sshd did not start: "
                                   f"{(self.root / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.1)
        first = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        self.namespace = os.readlink(f"/proc/{first.split()[0]}/ns/pid")

    def commands(self) -> list[str]:
        """The command lines of the machine's processes (those in its PID namespace)."""
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and os.readlink(entry / "ns" / "pid") == self.namespace:
                    found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
            except OSError:  # ended meanwhile
                continue
        return found

    def stop(self) -> None:
        """End the machine and every process it runs."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)


class Client:
    """The lab user's machine: `command(argv)` runs argv with a private /tmp and home (the passwd
    names it; give HOME in the environment too), `binds` (source, target) mounted, and the
    `hidden` folders covered by an empty one."""

    def __init__(self, rig: Path, binds: Sequence[tuple[Path, Path]] = (),
                 hidden: Sequence[Path] = ()) -> None:
        self.root = rig / "client"
        self.home, self.tmp = _private_root(self.root)
        # the binds and the hidden folders first: their paths may lie under /tmp, which the
        # private /tmp then covers (a checkout and its venv under /tmp, as a CI clone may be)
        self.setup = ["hostname lab-client",
                      *(f"mount --bind {source} {target}" for source, target in binds),
                      *(f"mount -t tmpfs -o size=1m,mode=0555 hidden {path}" for path in hidden),
                      f"mount --bind {self.tmp} /tmp",
                      f"mount --bind {self.root / 'passwd'} /etc/passwd"]

    def command(self, argv: Sequence[str | Path]) -> list[str]:
        """argv as the client runs it: unshare and bash exec it, so it keeps the PID that
        subprocess gives the command (a signal sent there reaches it)."""
        return ["unshare", "--mount", "--uts", "--", "bash", "-c",
                " && ".join(self.setup) + ' && exec "$0" "$@"', *map(str, argv)]
