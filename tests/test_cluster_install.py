"""What `rlv launch --cluster` sends to a cluster, without one: the wheel of the imported rlv that
the nodes install, the dry run, the tunnel's command, and the one-line errors on the way.
(tests/test_cluster_launcher.py runs the whole path on a lab of two machines.)"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

import rlv
from rlv.errors import RlvError
from rlv.service.tunnel import open_tunnel, tunnel_command
from rlv.service.wheel import stage_wheel, wheel_bytes

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_the_wheel_is_the_imported_rlv_with_its_metadata_and_a_valid_record() -> None:
    data = wheel_bytes()
    assert data == wheel_bytes(), "the same files make the same bytes (ray up sees no change)"
    wheel = zipfile.ZipFile(io.BytesIO(data))
    names = set(wheel.namelist())
    package = Path(rlv.__file__).parent
    on_disk = {f"rlv/{p.relative_to(package).as_posix()}" for p in package.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    dist_info = f"rlv-{rlv.__version__}.dist-info"
    assert names == on_disk | {f"{dist_info}/{n}" for n in
                               ("METADATA", "WHEEL", "entry_points.txt", "RECORD")}
    assert "rlv/board/static/charts.js" in names and "rlv/analysis/data" in str(sorted(names))
    metadata = wheel.read(f"{dist_info}/METADATA").decode()
    assert f"Version: {rlv.__version__}\n" in metadata and "Requires-Dist: torch==" in metadata
    assert "rlv = rlv.cli:main" in wheel.read(f"{dist_info}/entry_points.txt").decode()
    for line in wheel.read(f"{dist_info}/RECORD").decode().splitlines():
        path, digest, size = line.split(",")
        if path.endswith("RECORD"):
            continue
        content = wheel.read(path)
        expected = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=")
        assert digest == f"sha256={expected.decode()}" and int(size) == len(content), path


def test_staging_keeps_one_wheel_and_a_requirements_file_naming_it(tmp_path: Path) -> None:
    (tmp_path / "rlv-0.0.1-py3-none-any.whl").write_bytes(b"an older launch's")
    wheel = stage_wheel(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([wheel.name, "requirements.txt"])
    assert (tmp_path / "requirements.txt").read_text() == f"./{wheel.name}\n"
    written = wheel.stat().st_mtime_ns
    assert stage_wheel(tmp_path) == wheel and wheel.stat().st_mtime_ns == written  # unchanged


def test_a_stage_that_cannot_be_written_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(RlvError, match="cannot stage rlv's wheel for the cluster in .*a-file/dist"):
        stage_wheel(tmp_path / "a-file" / "dist")


def test_the_staged_wheel_installs_with_pip_as_this_rlv(tmp_path: Path) -> None:
    wheel = stage_wheel(tmp_path / "stage")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # what a node's setup runs, without the dependencies (this venv has none)
    subprocess.run([sys.executable, "-m", "pip", "-q", "--disable-pip-version-check", "--python",
                    str(venv / "bin" / "python"), "install", "--no-deps", "--no-index", "-r",
                    "requirements.txt"], check=True, cwd=wheel.parent)
    shown = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import importlib.metadata as m, rlv; print(rlv.__file__, rlv.__version__, m.version('rlv'))"],
        capture_output=True, text=True, check=True, cwd=tmp_path).stdout.split()
    assert shown[0].startswith(str(venv)) and shown[1:] == [rlv.__version__] * 2
    assert (venv / "bin" / "rlv").exists()


def _launch(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "rlv"), "launch", *args], capture_output=True, text=True,
                          timeout=120, cwd=home, env={**os.environ, "HOME": str(home), **env})


def test_dry_run_prints_ray_up_the_tunnel_and_the_job_and_runs_nothing(tmp_path: Path) -> None:
    out = _launch("quick", "--cluster", str(ROOT / "cluster-local.yaml"), "--store", "/shared/rlv",
                  "--dry-run", home=tmp_path)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    config = yaml.safe_load((ROOT / "cluster-local.yaml").read_text())
    assert f"ray up {ROOT / 'cluster-local.yaml'} (cluster rlv-lab:" in text
    for command in config["setup_commands"] + config["head_start_ray_commands"]:
        assert f"    {command}\n" in text
    assert "file_mounts: ~/rlv-dist <- ~/.cache/rlv-dist" in text
    assert f"rlv-{rlv.__version__}-py3-none-any.whl (the rlv at {Path(rlv.__file__).parent})" in text
    assert "tunnel to the dashboard: ssh -N" in text and ":REPLACE_ME.10:8265 " in text
    assert "entrypoint: python -m rlv.cli launch --sweep-json" in text
    assert '"py_modules": ["' in text and '"job_name": "rlv sweep quick"' in text
    assert "submission_id: rlv-quick-" in text
    assert not (tmp_path / ".cache").exists() and not (tmp_path / ".ray").exists()  # nothing


def test_dry_run_of_a_job_on_a_running_cluster_contacts_nothing(tmp_path: Path) -> None:
    out = _launch("quick", "--address", "http://127.0.0.1:9", "--store", "/shared/rlv",
                  "--dry-run", home=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "Ray Job on http://127.0.0.1:9:" in out.stdout and "ray up" not in out.stdout


@pytest.mark.parametrize(("args", "env", "message"), [
    (["quick", "--dry-run"], {}, "--dry-run: only with --cluster FILE or --address "
                                 "http://HEAD:8265"),
    (["quick", "--cluster", str(ROOT / "cluster-local.yaml"), "--store", "/s", "--dry-run"],
     {"RLV_DASHBOARD_PORT": "eighty"}, "RLV_DASHBOARD_PORT='eighty' is not a port (1-65535)"),
])
def test_bad_dry_runs_are_one_line(tmp_path: Path, args: list[str], env: dict[str, str],
                                   message: str) -> None:
    out = _launch(*args, home=tmp_path, **env)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_the_tunnel_goes_to_the_dashboard_where_the_head_command_puts_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RLV_DASHBOARD_PORT", "18265")
    local = yaml.safe_load((ROOT / "cluster-local.yaml").read_text())
    command = tunnel_command(Path("lab.yaml"), local)
    assert command[:2] == ["ssh", "-N"] and command[-1] == "REPLACE_ME@REPLACE_ME.10"
    assert command[-3:-1] == ["-L", "127.0.0.1:18265:REPLACE_ME.10:8265"]
    aws = tunnel_command(Path("cluster.yaml"), yaml.safe_load((ROOT / "cluster.yaml").read_text()))
    assert aws[1:] == ["-m", "ray.scripts.scripts", "dashboard", "cluster.yaml", "--port", "18265",
                       "--remote-port", "8265"]  # Ray's own tunnel to the head's 127.0.0.1


def test_a_tunnel_port_in_use_here_is_refused_before_anything_answers_on_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:  # another Ray's dashboard, say: it must not get the sweep
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("RLV_DASHBOARD_PORT", str(port))
        config = yaml.safe_load((ROOT / "cluster-local.yaml").read_text())
        with pytest.raises(RlvError, match=f"port {port} on 127.0.0.1 here is in use"):
            open_tunnel(Path("lab.yaml"), config, print)
