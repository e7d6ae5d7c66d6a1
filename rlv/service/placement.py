"""Where a trial runs: the Ray node and host, for the store's rows.

Kept out of rlv/trial/ (which never imports Ray): the trainable merges these columns into each
epoch row and into the trial's final row, so a row shows which node ran it (and a trial resumed
elsewhere after a lost node shows it: its epochs' nodes differ from its final row's).
"""

from __future__ import annotations

import socket

import ray

from rlv import columns as col


def node_columns() -> dict[str, str]:
    """{node_id: Ray's hex node id, hostname: this machine's name} of the calling worker."""
    return {col.NODE_ID: ray.get_runtime_context().get_node_id(),
            col.HOSTNAME: socket.gethostname()}


def gpu_share() -> dict[str, float]:
    """{gpu_share: the GPUs Ray assigned the calling trial}, for its row: what packing gave it."""
    return {col.GPU_SHARE: float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))}
