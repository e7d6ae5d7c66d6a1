"""What a trial asks for against what the cluster has: fail fast instead of waiting forever.

Ray leaves a trial that asks for a GPU on a cluster without one pending forever (a warning after
60 s, no error), so this check runs before any trial is sent.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from rlv.errors import RlvError
from rlv.sweep.spec import Resources

AUTO_GPU_FRACTION = 0.25  # four trials share a GPU: the thesis's models are small
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")  # on a launcher-made cluster's head
# the autoscaling config of a cluster started by hand (`ray start --head --autoscaling-config=F`,
# e.g. Ray's fake multi-node cluster): Ray offers no public API that tells a driver what its
# autoscaler can add, so the user names the file
AUTOSCALING_CONFIG_ENV = "RLV_AUTOSCALING_CONFIG"


def autoscaling_config_path() -> Path:
    """$RLV_AUTOSCALING_CONFIG if set, else the cluster launcher's copy on the head."""
    given = os.environ.get(AUTOSCALING_CONFIG_ENV)
    return Path(given) if given else BOOTSTRAP_CONFIG


Node = Mapping[str, Any]  # one machine's resources, e.g. {"CPU": 4.0, "GPU": 1.0}


def alive_nodes(ray_nodes: Sequence[Mapping[str, Any]]) -> list[dict[str, float]]:
    """The resources of each alive node, from ray.nodes() (a trial runs on one node: the
    cluster's sum says nothing about whether it fits)."""
    return [dict(node.get("Resources") or {}) for node in ray_nodes if node.get("Alive")]


def autoscaling_nodes(config_path: Path | None = None) -> list[dict[str, float]]:
    """The nodes the autoscaler can add (from the cluster config): one resources mapping per node
    type with max_workers > 0. A named ($RLV_AUTOSCALING_CONFIG) file that is missing or
    unreadable is an RlvError; a missing launcher copy means a cluster without an autoscaler."""
    named = config_path is None and AUTOSCALING_CONFIG_ENV in os.environ
    path = (config_path or autoscaling_config_path()).expanduser()
    if named and not path.is_file():
        raise RlvError(f"${AUTOSCALING_CONFIG_ENV} names {path}, which is not a file; point it "
                       "at the cluster's autoscaling config (the --autoscaling-config of ray start)")
    if not path.exists():
        return []
    try:
        config = yaml.safe_load(path.read_text()) or {}
        if not isinstance(config, dict):
            raise yaml.YAMLError("not a mapping of cluster settings")
    except (OSError, yaml.YAMLError) as exc:
        if named:
            raise RlvError(f"${AUTOSCALING_CONFIG_ENV} {path} is not a readable YAML cluster "
                           f"config: {str(exc).splitlines()[0]}") from None
        return []
    types = [{name: float(amount) for name, amount in (node.get("resources") or {}).items()}
             for node in (config.get("available_node_types") or {}).values()
             if int(node.get("max_workers", 0) or 0) > 0]
    types = [t for t in types if t]
    provider = config.get("provider") or {}
    if provider.get("type") == "local" and provider.get("worker_ips") and not types:
        # machines by address (cluster-local.yaml): Ray detects their CPUs and GPUs only when
        # they join, which the autoscaler does after `ray up`; whatever they have is coming
        return [dict.fromkeys(("CPU", "GPU"), math.inf)]
    return types


def _nodes(given: Sequence[Node] | Node) -> list[Node]:
    # one mapping is one machine (the embedded local Ray is a single node)
    return [given] if isinstance(given, Mapping) else list(given)


def _fits(node: Node, cpu: float, gpu: float) -> bool:
    return float(node.get("CPU", 0)) >= cpu and float(node.get("GPU", 0)) >= gpu


def trial_resources(requested: Resources, nodes: Sequence[Node] | Node,
                    notice: Callable[[str], None],
                    extra: Sequence[Node] | Node | None = None) -> dict[str, float]:
    """Tune's per-trial resources for `requested` on a cluster of `nodes` (each node's resources:
    alive_nodes(ray.nodes())), plus the node types `extra` that an autoscaler can add (default:
    read from the head's cluster config). A trial runs on one node, so its CPUs and GPUs together
    must fit on one of them."""
    candidates = _nodes(nodes) + _nodes(autoscaling_nodes() if extra is None else extra)
    cpu = float(requested.cpu)
    gpu_nodes = [n for n in candidates if float(n.get("GPU", 0)) > 0]
    most_gpus = max((float(n.get("GPU", 0)) for n in candidates), default=0.0)
    most_cpus = max((float(n.get("CPU", 0)) for n in candidates), default=0.0)
    if requested.gpu == "auto":
        gpu = AUTO_GPU_FRACTION if any(_fits(n, cpu, AUTO_GPU_FRACTION) for n in gpu_nodes) else 0.0
        if not gpu_nodes:
            notice("notice: the cluster has no GPU; trials run on CPUs (resources.gpu: auto)")
        elif gpu == 0:
            notice(f"notice: no GPU node of the cluster has {cpu:g} CPUs; trials run on CPUs "
                   "(resources.gpu: auto)")
    else:
        gpu = float(requested.gpu)
        if gpu > 0 and not gpu_nodes:
            raise RlvError(f"the sweep asks for {gpu:g} GPU per trial but the cluster has no GPU; "
                           "set resources.gpu to 0 or auto, or join a cluster with GPUs")
        if gpu > most_gpus:
            raise RlvError(f"the sweep asks for {gpu:g} GPUs per trial but the cluster has "
                           f"{most_gpus:g} on its largest node; a trial runs on one node")
    if cpu > most_cpus:
        raise RlvError(f"the sweep asks for {cpu:g} CPUs per trial but the cluster has "
                       f"{most_cpus:g} on its largest node; lower resources.cpu")
    if not any(_fits(n, cpu, gpu) for n in candidates):
        # each fits somewhere, not both on one node: name the GPU node with the most CPUs
        best = max((n for n in candidates if float(n.get("GPU", 0)) >= gpu),
                   key=lambda n: float(n.get("CPU", 0)))
        raise RlvError(f"the sweep asks for {cpu:g} CPUs + {gpu:g} GPU per trial but no node has "
                       f"both; the largest with {gpu:g} GPU has {float(best.get('CPU', 0)):g} CPUs; "
                       "lower resources.cpu")
    return {"cpu": requested.cpu, "gpu": gpu}


def concurrency(per_trial: dict[str, float], cluster: dict[str, Any]) -> int:
    """How many trials fit at once on the cluster as it is now (for the progress line)."""
    fits = [int(float(cluster.get(k.upper(), 0)) // v) for k, v in per_trial.items() if v > 0]
    return max(1, min(fits)) if fits else 1

