"""The launch's second step: one driver per sweep. The claim (rlv/store/claim.py) is taken
before anything runs and held to the end; a driver whose claim was taken over stops writing."""

from __future__ import annotations

from collections.abc import Callable

from rlv.errors import RlvError
from rlv.store import claim
from rlv.store.store import Store


def claim_sweep(store: Store, sweep: str, echo: Callable[[str], None]) -> claim.ClaimHandle:
    """The claim, as a context manager; SweepBusy (exit 1, one line) while another driver holds
    it."""
    return claim.acquire(store, sweep, echo=echo)


def stop_if_taken_over(store: Store, sweep: str) -> None:
    """RlvError once another launch took this driver's claim over (its heartbeat was late)."""
    taken = claim.taken_over(store, sweep)
    if taken is not None:
        raise RlvError(f"sweep {sweep!r} was taken over by {taken.holder()} while this driver's "
                       "heartbeat was late; this driver stopped writing to the store")
