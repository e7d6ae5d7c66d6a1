"""What a trial asks for against what the cluster has: fail fast instead of waiting forever.

Ray leaves a trial that asks for a GPU on a cluster without one pending forever (a warning after
60 s, no error), so this check runs before any trial is sent.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from rlv.errors import RlvError
from rlv.sweep import Resources

AUTO_GPU_FRACTION = 0.25  # four trials share a GPU: the thesis's models are small
BOOTSTRAP_CONFIG = Path("~/ray_bootstrap_config.yaml")  # on a launcher-made cluster's head


def autoscaling_capacity(config_path: Path = BOOTSTRAP_CONFIG) -> dict[str, float]:
    """Resources the autoscaler can add (from the head's cluster config), e.g. {"GPU": 8}."""
    path = config_path.expanduser()
    if not path.exists():
        return {}
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    capacity: dict[str, float] = {}
    for node in (config.get("available_node_types") or {}).values():
        count = int(node.get("max_workers", 0) or 0)
        for name, amount in (node.get("resources") or {}).items():
            capacity[name] = capacity.get(name, 0.0) + float(amount) * count
    return capacity


def trial_resources(requested: Resources, cluster: dict[str, Any], notice: Callable[[str], None],
                    extra: dict[str, float] | None = None) -> dict[str, float]:
    """Tune's per-trial resources for `requested` on a cluster with `cluster` resources, plus
    `extra` that an autoscaler can add (default: read from the head's cluster config)."""
    extra = autoscaling_capacity() if extra is None else extra
    gpus = float(cluster.get("GPU", 0)) + extra.get("GPU", 0.0)
    cpus = float(cluster.get("CPU", 0)) + extra.get("CPU", 0.0)
    if requested.gpu == "auto":
        gpu = AUTO_GPU_FRACTION if gpus > 0 else 0.0
        if gpus == 0:
            notice("notice: the cluster has no GPU; trials run on CPUs (resources.gpu: auto)")
    else:
        gpu = float(requested.gpu)
        if gpu > 0 and gpus == 0:
            raise RlvError(f"the sweep asks for {gpu:g} GPU per trial but the cluster has no GPU; "
                           "set resources.gpu to 0 or auto, or join a cluster with GPUs")
        if gpu > gpus:
            raise RlvError(f"the sweep asks for {gpu:g} GPUs per trial but the cluster has "
                           f"{gpus:g}")
    if requested.cpu > cpus:
        raise RlvError(f"the sweep asks for {requested.cpu:g} CPUs per trial but the cluster has "
                       f"{cpus:g}; lower resources.cpu")
    return {"cpu": requested.cpu, "gpu": gpu}


def concurrency(per_trial: dict[str, float], cluster: dict[str, Any]) -> int:
    """How many trials fit at once on the cluster as it is now (for the progress line)."""
    fits = [int(float(cluster.get(k.upper(), 0)) // v) for k, v in per_trial.items() if v > 0]
    return max(1, min(fits)) if fits else 1

