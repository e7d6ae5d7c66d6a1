"""A real S3 API on loopback for the tests: moto's standalone server (`moto[server]`, dev extra).

The server runs as a process of the test's own, on a free 127.0.0.1 port, and is stopped through
its Popen handle. Clients reach it the standard AWS way (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION): pyarrow's S3 filesystem and boto3 both read them,
in this process and in every process it starts (rlv launch, Ray's workers). The server logs one
line per request, which is how the tests count what a trial costs in S3 requests.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import free_port, stop_process_group

# "127.0.0.1 - - [06/Dec/2026 08:50:46] "PUT /bucket/key HTTP/1.1" 200 -"
_REQUEST = re.compile(r'"(?P<method>[A-Z]+) (?P<target>\S+) HTTP/[0-9.]+" (?P<status>\d{3})')


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # /BUCKET/KEY?QUERY
    status: int


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    env: dict[str, str]  # the AWS variables a client needs
    log: Path

    def bucket(self) -> str:
        """A new, empty bucket of its own for one test."""
        import boto3

        name = f"rlv-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                     aws_access_key_id="testing", aws_secret_access_key="testing",
                     ).create_bucket(Bucket=name)
        return name

    def requests(self, bucket: str) -> list[Request]:
        """Every request the server has logged for `bucket`, in order."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            m = _REQUEST.search(line)
            if m and (m["target"].startswith(f"/{bucket}/") or m["target"].startswith(f"/{bucket}?")
                      or m["target"] == f"/{bucket}"):
                found.append(Request(m["method"], m["target"], int(m["status"])))
        return found


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "requests.log"
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                   str(port)], stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):  # the observable state: the port accepts connections
            if server.poll() is not None or time.monotonic() > deadline:
                fail = pytest.fail if os.environ.get("CI") else pytest.skip
                fail(f"moto's S3 server did not start: {log.read_text()[-500:]}")
            time.sleep(0.2)
        endpoint = f"http://127.0.0.1:{port}"
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true"}
        yield S3Server(endpoint, env, log)
    finally:
        stop_process_group(server)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The server's AWS variables in this test's environment (and its children's)."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return s3_server
