"""The sweep claim (rlv/store/claim.py): one holder among launches that start together, on a local
folder and on a real S3 API (moto's server on loopback); takeover of a dead or silent holder."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from s3server import S3Server

from rlv.errors import RlvError
from rlv.store.claim import Claim, ClaimStore, acquire
from rlv.store.store import Store

RACERS = 6


def _race(store: str, go: mp.synchronize.Event, results: mp.Queue) -> None:  # type: ignore[type-arg]
    go.wait()
    try:
        handle = acquire(Store.open(store), "race", echo=lambda line: None)
        results.put(("won", handle.number))
    except RlvError as exc:
        results.put(("lost", str(exc)))


def race(store: str) -> list[tuple[str, object]]:
    """RACERS processes call acquire at one moment (released by one event); their outcomes."""
    ctx = mp.get_context("spawn")
    go, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(store, go, results)) for _ in range(RACERS)]
    for p in procs:
        p.start()
    go.set()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    return outcomes


def check_one_winner(outcomes: list[tuple[str, object]]) -> None:
    won = [o for o in outcomes if o[0] == "won"]
    assert len(won) == 1, outcomes
    for kind, text in outcomes:
        if kind == "lost":  # the racers that exited (processes gone) or not: both say who holds
            assert "race" in str(text) and "pid" in str(text), text


def test_launches_started_together_on_a_folder_leave_exactly_one_holder(tmp_path: Path) -> None:
    for round_ in range(3):
        check_one_winner(race(str(tmp_path / f"store{round_}")))


def test_launches_started_together_on_s3_leave_exactly_one_holder(s3_env: S3Server) -> None:
    bucket = s3_env.bucket()
    check_one_winner(race(f"s3://{bucket}/rlv"))
    # the claim was a conditional PUT: the losers' PUTs were refused by the server (412)
    puts = [r for r in s3_env.requests(bucket) if r.method == "PUT" and "/_claims/race/" in r.target]
    assert sorted(r.status for r in puts).count(200) == 1, puts
    assert {r.status for r in puts} <= {200, 412}, puts


def test_a_held_claim_refuses_a_second_launch_naming_its_holder(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    handle = acquire(Store.open(store), "s", echo=lambda line: None)
    with pytest.raises(RlvError) as refused:
        acquire(Store.open(store), "s", echo=lambda line: None)
    text = str(refused.value)
    assert f"driver {socket.gethostname()} pid {os.getpid()} (since {handle.claim.since})" in text
    assert "\n" not in text and "launch again" in text
    handle.release()  # a released claim is free at once
    again = acquire(Store.open(store), "s", echo=lambda line: None)
    assert again.number == handle.number + 1


def test_a_holder_killed_with_sigkill_is_taken_over_saying_so(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from rlv.store.claim import acquire; from rlv.store.store import Store; "
         f"acquire(Store.open({store!r}), 's', echo=print); print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"  # observable: it holds the claim now
    with pytest.raises(RlvError, match=f"pid {holder.pid}"):
        acquire(Store.open(store), "s", echo=lambda line: None)
    since = json.loads(Path(store, "_claims", "s", "claim-000001.json").read_text())["since"]
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    said: list[str] = []
    handle = acquire(Store.open(store), "s", echo=said.append)
    assert said == [f"taking over the claim of sweep s from driver {socket.gethostname()} pid "
                    f"{holder.pid} (since {since}): its process {holder.pid} on this host is gone"]
    assert handle.number == 2
    assert [p.name for p in Path(store, "_claims", "s").iterdir()] == ["claim-000002.json"]


def _foreign_claim(store: str, sweep: str, age_s: float) -> None:
    """A claim as a driver on another host writes it, with its last heartbeat `age_s` ago."""
    beat = (datetime.now(UTC) - timedelta(seconds=age_s)).isoformat(timespec="seconds")
    claims = ClaimStore(Store.open(store), sweep)
    assert claims.create(1, Claim(token="t", host="elsewhere.example", pid=1, since=beat,
                                  heartbeat_at=beat))


def test_a_claim_from_another_host_is_taken_over_only_when_its_heartbeat_is_stale(
        tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    _foreign_claim(store, "fresh", age_s=5)
    with pytest.raises(RlvError, match="driver elsewhere.example pid 1"):
        acquire(Store.open(store), "fresh", stale_s=60, echo=lambda line: None)
    _foreign_claim(store, "old", age_s=600)
    said: list[str] = []
    acquire(Store.open(store), "old", stale_s=60, echo=said.append)
    assert len(said) == 1 and "from driver elsewhere.example pid 1" in said[0]
    assert "no heartbeat for 60" in said[0] and "stale after 60 s" in said[0]


def test_a_holder_taken_over_learns_it_lost_and_writes_no_more_heartbeats(s3_env: S3Server) -> None:
    store = f"s3://{s3_env.bucket()}/rlv"
    first = acquire(Store.open(store), "s", echo=lambda line: None)
    assert first.heartbeat()
    # its heartbeat stops (a frozen machine): the next launch finds it stale and takes over
    second = acquire(Store.open(store), "s", stale_s=-1, echo=lambda line: None)
    assert not first.heartbeat() and first.lost
    assert first.lost_to is not None and first.lost_to.token == second.claim.token
    first.release()  # a no-op for a lost claim: the holder's file is not touched
    assert ClaimStore(Store.open(store), "s").read(second.number) == second.claim
    assert second.heartbeat()
