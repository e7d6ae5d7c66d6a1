"""One driver per sweep: a claim in the store, taken atomically before any trial starts.

    STORE/_claims/SWEEP/claim-000001.json   {token, host, pid, since, heartbeat_at, released}
    STORE/_claims/SWEEP/claim-000002.json   the next driver's, after the first released or died

The holder of a sweep is the driver of its highest-numbered claim file. A launch takes the claim
by creating the next number's file, and only one can create it:

- a local folder: the file is written under a temporary name and hard-linked to its name, which
  fails when the name exists (POSIX link is atomic, and the file is complete when it appears);
- S3: one PUT with `If-None-Match: *` (boto3, with the standard AWS configuration:
  AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...), which S3 and S3-compatible servers refuse with
  412 when the key exists; pyarrow's filesystem cannot send it;
- any other filesystem (gs://, fsspec's): write, then read back; the claim is lost to whoever
  wrote last. Not atomic, and `rlv launch` says so when it claims there.

A claim is free when its holder released it (the launch ended), when the holder runs on this host
and its process is gone, or when its heartbeat (rewritten every HEARTBEAT_S by the holder) is older
than the stale limit: the next launch then takes it over, saying whose claim it took. A holder
that finds a higher number than its own has been taken over (its heartbeat stopped, e.g. a frozen
machine): it must stop writing (ClaimHandle.lost). Neither torch nor Ray.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow.fs as pafs

from rlv.errors import RlvError, SweepBusy
from rlv.store.files import HEARTBEAT_S, STALE_S, first_line, read_optional, write_bytes
from rlv.store.store import Store

CLAIMS_DIR = "_claims"
_PREFIX, _SUFFIX = "claim-", ".json"


@dataclass(frozen=True)
class Claim:
    """What a claim file holds."""

    token: str  # this launch's own id: a re-read claim is still ours only if the token matches
    host: str
    pid: int
    since: str  # ISO time the claim was taken
    heartbeat_at: str  # ISO time of the holder's last heartbeat
    released: bool = False

    def holder(self) -> str:
        return f"driver {self.host} pid {self.pid} (since {self.since})"

    def age_s(self, now: datetime) -> float:
        return (now - datetime.fromisoformat(self.heartbeat_at)).total_seconds()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def why_free(claim: Claim, stale_s: float, now: datetime | None = None) -> str:
    """Why `claim` may be taken over ("" while its holder holds it)."""
    if claim.released:
        return "released"
    if claim.host == socket.gethostname() and not _pid_alive(claim.pid):
        return f"its process {claim.pid} on this host is gone"
    age = claim.age_s(now or datetime.now(UTC))
    if age > stale_s:
        return f"no heartbeat for {age:.0f} s (stale after {stale_s:.0f} s)"
    return ""


class ClaimStore:
    """The claim files of one sweep, and the one atomic operation each filesystem offers."""

    def __init__(self, store: Store, sweep: str) -> None:
        self.store, self.sweep = store, sweep
        self.fs = store.fs
        self.folder = store.path(CLAIMS_DIR, sweep)
        s3 = store.location.startswith("s3://")
        self._s3 = _s3_target(store.location, self.folder) if s3 else None

    @property
    def atomic(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem) or self._s3 is not None

    def path(self, number: int) -> str:
        return f"{self.folder}/{_PREFIX}{number:06d}{_SUFFIX}"

    def numbers(self) -> list[int]:
        """The claim numbers in the store, ascending (one LIST)."""
        try:
            infos = self.fs.get_file_info(pafs.FileSelector(self.folder, allow_not_found=True))
        except OSError as exc:
            raise RlvError(f"cannot list the claims of sweep {self.sweep} in {self.store}: "
                           f"{first_line(exc)}") from None
        found = []
        for info in infos:
            name = info.base_name
            if name.startswith(_PREFIX) and name.endswith(_SUFFIX):
                digits = name[len(_PREFIX):-len(_SUFFIX)]
                if digits.isdigit():
                    found.append(int(digits))
        return sorted(found)

    def read(self, number: int) -> Claim | None:
        data = read_optional(self.fs, self.path(number))
        if data is None:
            return None
        try:
            return Claim(**json.loads(data))
        except (ValueError, TypeError) as exc:
            raise RlvError(f"claim file {self.path(number)} is not an rlv claim "
                           f"({first_line(exc)}); remove it if no driver runs this sweep") from None

    def create(self, number: int, claim: Claim) -> bool:
        """Create claim `number` unless it exists; True when this call created it."""
        data = json.dumps(asdict(claim)).encode()
        path = self.path(number)
        if isinstance(self.fs, pafs.LocalFileSystem):
            os.makedirs(self.folder, exist_ok=True)
            tmp = f"{self.folder}/.{_PREFIX}{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, path)  # atomic, and fails when the name exists
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        if self._s3 is not None:
            return self._s3.put_if_absent(path, data)
        if read_optional(self.fs, path) is not None:  # not atomic (module docstring)
            return False
        write_bytes(self.fs, path, data)
        again = self.read(number)
        return again is not None and again.token == claim.token

    def rewrite(self, number: int, claim: Claim) -> None:
        """Replace the holder's own claim file (its heartbeat; its release)."""
        write_bytes(self.fs, self.path(number), json.dumps(asdict(claim)).encode())

    def remove_older(self, number: int) -> None:
        """Delete the claim files below `number`: the history that is no longer the holder's."""
        for old in self.numbers():
            if old < number:
                try:
                    self.fs.delete_file(self.path(old))
                except OSError:
                    pass  # another launch removed it first


class _S3Target:
    """A conditional PUT through boto3 (pyarrow's S3 filesystem has none)."""

    def __init__(self, bucket: str, client: Any) -> None:
        self.bucket, self.client = bucket, client

    def put_if_absent(self, path: str, data: bytes) -> bool:
        from botocore.exceptions import ClientError

        key = path.split("/", 1)[1]  # "BUCKET/KEY" -> KEY
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                return False
            raise RlvError(f"cannot claim the sweep in s3://{path}: {first_line(exc)}") from None


def _s3_target(store: str, folder: str) -> _S3Target:
    try:
        import boto3
    except ImportError:
        raise RlvError("claiming a sweep on S3 needs boto3 (pip install boto3)") from None
    query = parse_qs(urlsplit(store).query)
    kwargs: dict[str, Any] = {}
    if "endpoint_override" in query:  # pyarrow's URI form: s3://B/P?endpoint_override=H:P&scheme=http
        endpoint = query["endpoint_override"][0]
        scheme = query.get("scheme", ["https"])[0]
        kwargs["endpoint_url"] = endpoint if "://" in endpoint else f"{scheme}://{endpoint}"
    if "region" in query:
        kwargs["region_name"] = query["region"][0]
    return _S3Target(folder.split("/", 1)[0], boto3.client("s3", **kwargs))


# the claims this process holds, by (store, sweep): the driver's store writer asks before writing
_held: dict[tuple[str, str], ClaimHandle] = {}


def taken_over(store: Store, sweep: str) -> Claim | None:
    """The claim that replaced this process's claim of `sweep` (None while it still holds it, or
    holds none): a driver whose claim was taken over must write nothing more."""
    handle = _held.get((store.location, sweep))
    return handle.lost_to if handle is not None else None


class ClaimHandle:
    """The claim a launch holds: a thread heartbeats it every HEARTBEAT_S (as `with`), and
    release() (the end of the `with`) frees it for the next launch."""

    def __init__(self, claims: ClaimStore, number: int, claim: Claim) -> None:
        self.claims, self.number, self.claim = claims, number, claim
        self.lost_to: Claim | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _beat_until_stopped(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if not self.heartbeat():
                    return
            except RlvError:
                continue  # the store did not answer this once; the stale limit is 12 beats

    @property
    def lost(self) -> bool:
        return self.lost_to is not None

    def heartbeat(self) -> bool:
        """Rewrite the heartbeat; False (and `lost_to` set) once a later launch has taken over."""
        if self.lost:
            return False
        newer = [n for n in self.claims.numbers() if n > self.number]
        if newer:
            self.lost_to = self.claims.read(newer[-1]) or self.claim
            return False
        self.claim = replace(self.claim, heartbeat_at=_now())
        self.claims.rewrite(self.number, self.claim)
        return True

    def release(self) -> None:
        if self.lost:
            return
        if any(n > self.number for n in self.claims.numbers()):
            return  # taken over meanwhile: the file is history, the new holder's is the claim
        self.claim = replace(self.claim, released=True, heartbeat_at=_now())
        self.claims.rewrite(self.number, self.claim)

    def __enter__(self) -> ClaimHandle:
        _held[(self.claims.store.location, self.claims.sweep)] = self
        self._beat = threading.Thread(target=self._beat_until_stopped, daemon=True,
                                      name=f"rlv-claim-{self.claims.sweep}")
        self._beat.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        _held.pop((self.claims.store.location, self.claims.sweep), None)
        try:
            self.release()
        except RlvError:
            pass  # the store does not answer: the claim goes stale on its own


def held_message(sweep: str, store: Store, claim: Claim, stale_s: float) -> str:
    return (f"sweep {sweep!r} is claimed in store {store} by {claim.holder()}, last heartbeat "
            f"{claim.heartbeat_at}; watch it with `rlv status {sweep} --store {store}`. Once that "
            f"driver is gone (stopped, or killed), launch again: its claim is taken over at once "
            f"on its own host, elsewhere after {stale_s:.0f} s without a heartbeat")


def acquire(store: Store, sweep: str, *, stale_s: float = STALE_S,
            echo: Any = print) -> ClaimHandle:
    """Claim `sweep` in `store` for this process, or raise SweepBusy naming the live holder."""
    claims = ClaimStore(store, sweep)
    numbers = claims.numbers()
    top = numbers[-1] if numbers else 0
    current = claims.read(top) if top else None
    if current is not None:
        reason = why_free(current, stale_s)
        if not reason:
            raise SweepBusy(held_message(sweep, store, current, stale_s))
        if not current.released:
            echo(f"taking over the claim of sweep {sweep} from {current.holder()}: {reason}")
    now = _now()
    mine = Claim(token=uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid(), since=now,
                 heartbeat_at=now)
    if not claims.create(top + 1, mine):  # another launch created it first: it holds the sweep
        winner = claims.read(top + 1)
        if winner is None:
            raise SweepBusy(f"sweep {sweep!r} was claimed in store {store} a moment ago by "
                            "another launch, which has already let it go; launch again")
        raise SweepBusy(held_message(sweep, store, winner, stale_s))
    if not claims.atomic:
        echo(f"note: {store} offers no atomic create; two launches started in the same moment "
             "could both run (use a local folder or s3:// for an exclusive claim)")
    claims.remove_older(top + 1)
    return ClaimHandle(claims, top + 1, mine)
