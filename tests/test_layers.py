"""The layers hold: what runs on a laptop (`rlv check`, `rlv status`, `rlv analyze`) imports
neither torch nor Ray, proven by running them where both (and torch's companions) cannot be
imported at all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from analysis_helpers import synthetic_store

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "torchvision", "torch_fidelity", "ray")

# Runs the CLI with an import hook that refuses the heavy packages, then checks that none of them
# was even looked for: a module that tried and caught the ImportError would still be a leak.
BLOCKED_CLI = f"""
import sys
HEAVY = {HEAVY!r}
tried = []
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY:
            tried.append(name)
            raise ModuleNotFoundError(f"No module named {{name!r}} (refused by the test)")
        return None
sys.meta_path.insert(0, Refuse())
sys.argv = ["rlv", *sys.argv[1:]]
from rlv.cli import main
try:
    main()
finally:
    if tried:
        print("IMPORTED HEAVY:", sorted(set(tried)), file=sys.stderr)
"""


def run_blocked(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", BLOCKED_CLI, *args], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synthetic_store(tmp_path_factory.mktemp("laptop") / "store", sweep="quick")


def test_the_import_hook_really_refuses_torch() -> None:
    out = subprocess.run([sys.executable, "-c", BLOCKED_CLI.replace("from rlv.cli import main",
                                                                    "import torch\nmain = None")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "refused by the test" in out.stderr


def test_rlv_check_imports_neither_torch_nor_ray() -> None:
    out = run_blocked("check", "thesis-mnist")
    assert out.returncode == 0, out.stderr
    assert "120 trials" in out.stdout and "IMPORTED HEAVY" not in out.stderr


def test_rlv_status_imports_neither_torch_nor_ray(store: Path) -> None:
    out = run_blocked("status", str(ROOT / "sweeps" / "quick.yaml"), "--store", str(store))
    assert out.returncode == 0, out.stderr
    assert "sweep quick" in out.stdout and "IMPORTED HEAVY" not in out.stderr


def test_rlv_analyze_imports_neither_torch_nor_ray(store: Path, tmp_path: Path) -> None:
    out = run_blocked("analyze", str(store), "--out", str(tmp_path / "report"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "report" / "report.md").exists() and "IMPORTED HEAVY" not in out.stderr
