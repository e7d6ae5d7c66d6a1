"""What a trial costs on S3: requests per finished trial and bytes written per trial, for a sweep
of 4 trials and one of 32 trials with the same settings, on a real S3 API (moto's standalone
server on loopback, started and stopped here; `moto[server]` is in the dev extra).

    python benchmarks/s3_requests.py            # about 5 minutes on a 2-core CPU

Requests come from the server's log (one line per request). Bytes: what the bucket holds at the
end plus what was written and deleted on the way (the trials' checkpoints, whose count is the
number of checkpoint uploads in the log and whose size is measured on the same model here).
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

SETTINGS = """\
name: {name}
factors: {{dataset: [mnist], encoder: [L, PNL, NL, RKS], layer: [fc], prior: [normal]}}
seeds: {seeds}
settings:
  data: {{train_size: 128, test_size: 64}}
  train: {{epochs: 2, batch_size: 64, checkpoint_every: 1}}
  eval: {{fid_samples: 0, samples: 16, interpolation_pairs: 2}}
resources: {{cpu: 1, gpu: 0}}
max_failures: 0
"""
REQUEST = re.compile(r'"(?P<method>[A-Z]+) /(?P<bucket>[^/? ]+)(?P<rest>\S*) HTTP')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def state_bytes() -> int:
    """The size of one checkpoint of each of the four fc models (a Trainer.state_dict())."""
    import torch

    from rlv.config import TrialConfig, from_dict
    from rlv.levels import DATASETS
    from rlv.trial.loop import Trainer
    from rlv.trial.run import build_model

    sizes = []
    for encoder in ("L", "PNL", "NL", "RKS"):
        cfg = from_dict(TrialConfig, {"model": {"encoder": encoder}})
        model = build_model(cfg, DATASETS.build("mnist"), torch.device("cpu"))
        trainer = Trainer(model, torch.rand(2, 1, 32, 32), cfg.train, 0)
        trainer.run_epoch()  # one step: Adam's moments exist from then on, as in a checkpoint
        buffer = io.BytesIO()
        torch.save(trainer.state_dict(), buffer)
        sizes.append(len(buffer.getvalue()))
    return sum(sizes) // len(sizes)


def main() -> None:
    import boto3

    work = Path(tempfile.mkdtemp(prefix="rlv-s3-bench-"))
    port = free_port()
    log = work / "requests.log"
    env = {**os.environ, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
           "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    env.pop("RAY_ADDRESS", None)
    with open(log, "wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                   str(port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name="us-east-1",
                              aws_access_key_id="bench", aws_secret_access_key="bench")
        deadline = time.monotonic() + 60
        while True:
            try:
                client.list_buckets()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        one_state = state_bytes()
        for seeds in (1, 8):
            bucket = f"rlv-bench-{seeds}"
            client.create_bucket(Bucket=bucket)
            sweep = work / f"bench{seeds}.yaml"
            sweep.write_text(SETTINGS.format(name=f"bench{seeds}", seeds=seeds))
            done = subprocess.run([str(Path(sys.executable).parent / "rlv"), "launch", str(sweep),
                                   "--store", f"s3://{bucket}/rlv", "--num-cpus", "2"],
                                  capture_output=True, text=True, env=env)
            if done.returncode != 0:
                sys.exit(f"rlv launch failed:\n{done.stdout}\n{done.stderr}")
            trials = 4 * seeds
            methods: Counter[str] = Counter()
            checkpoints = 0
            for line in log.read_text(errors="replace").splitlines():
                m = REQUEST.search(line)
                if m and m["bucket"] == bucket:
                    methods[m["method"]] += 1
                    if "/state-" in m["rest"] and (m["method"] == "PUT" and "partNumber" not in
                                                   m["rest"] or m["rest"].endswith("?uploads")):
                        checkpoints += 1  # one upload of a checkpoint (a PUT, or a multipart's start)
            kept = sum(o["Size"] for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket) for o in page.get("Contents", []))
            written = kept + checkpoints * one_state
            total = sum(methods.values())
            print(f"{trials:>3} trials: {total / trials:.1f} requests per trial "
                  f"({', '.join(f'{k} {v / trials:.1f}' for k, v in sorted(methods.items()))}); "
                  f"{written / trials / 1e6:.2f} MB written per trial "
                  f"({checkpoints / trials:.1f} checkpoints of {one_state / 1e6:.2f} MB; "
                  f"{kept / trials / 1e6:.2f} MB kept)")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
