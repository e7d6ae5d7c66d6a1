"""Running rlv where torch, Ray and torch's companions cannot be imported at all.

A folder of shim packages (torch/__init__.py, ray/__init__.py, ...) goes first on PYTHONPATH,
before site-packages, so `import torch` finds the shim, which raises ImportError. The shim
first writes a line to stderr: a module that tried the import and caught the error still
leaves that trace (`assert LEAK not in out.stderr`). The project root comes next on PYTHONPATH,
so the command runs this checkout's rlv (`python -m rlv.cli`, what the `rlv` script runs).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torchvision", "torch_fidelity", "ray")
BLOCKED = "blocked by the test"  # in the ImportError a shim raises
LEAK = "IMPORTED HEAVY"  # what a shim writes to stderr when anything imports it


def make_shims(folder: Path) -> Path:
    """A folder with one shim package per heavy package; returns it."""
    for name in HEAVY:
        package = folder / name
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text(
            "import sys\n"
            f"print({LEAK!r} + ': ' + {name!r}, file=sys.stderr)\n"
            f"raise ImportError({name!r} + ' is ' + {BLOCKED!r})\n")
    return folder


def blocked_env(shims: Path) -> dict[str, str]:
    """This process's environment with PYTHONPATH = the shims, then the project root."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(shims), str(ROOT)])}


def run_python(shims: Path, *args: str, cwd: Path,
               timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """`python ARGS` with the heavy packages blocked, run in `cwd`."""
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd,
                          env=blocked_env(shims), timeout=timeout_s)


def run_rlv(shims: Path, *args: str, cwd: Path,
            timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    """`rlv ARGS` as a process, with the heavy packages blocked, run in `cwd`."""
    return run_python(shims, "-m", "rlv.cli", *args, cwd=cwd, timeout_s=timeout_s)


def start_rlv(shims: Path, *args: str, cwd: Path) -> subprocess.Popen[str]:
    """`rlv ARGS` started as a process that keeps running (a server: `rlv board`), with the heavy
    packages blocked, in a process group of its own (conftest.stop_process_group stops it);
    its stdout and stderr are pipes, read as lines."""
    return subprocess.Popen([sys.executable, "-m", "rlv.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, env=blocked_env(shims),
                            start_new_session=True)
