"""The session's Ray lives on loopback alone: its nodes' addresses are 127.0.0.1 and its GCS
answers nowhere else (tests/conftest.py sets Ray's single-machine mode for that)."""

from __future__ import annotations

import socket

import pytest

pytestmark = pytest.mark.slow


def outward_address() -> str | None:
    """This machine's address towards the rest of the network (no packet is sent), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the route, sends nothing
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address


def test_the_session_ray_uses_loopback_only(ray_cluster) -> None:  # type: ignore[no-untyped-def]
    import ray

    nodes = [n for n in ray.nodes() if n["Alive"]]
    assert nodes and {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}
    host, port = ray_cluster.address.rsplit(":", 1)
    assert host == "127.0.0.1"
    with socket.create_connection(("127.0.0.1", int(port)), timeout=5):
        pass  # the GCS answers on loopback
    outward = outward_address()
    if outward is None:
        return  # a machine with no other address: nothing else to refuse
    with pytest.raises(OSError):  # and on the machine's own address, nothing listens
        socket.create_connection((outward, int(port)), timeout=5).close()
