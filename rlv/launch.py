"""`rlv launch`: run a sweep's grid x seeds as Ray Tune trials, writing the store.

Ray is the embedded local cluster by default (started here, dashboard on 127.0.0.1), or the one
at `address` / $RAY_ADDRESS. Tune's own state lives in STORE/_tune/SWEEP: running the same command
again after the driver was killed restores it (finished trials are not re-run, unfinished and
failed ones resume from their last checkpoints). The cluster path (a cluster.yaml, or an http://
address) submits this same command as a Ray Job: see cluster.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rlv.config import TrialConfig
from rlv.errors import RlvError
from rlv.status import driver_alive
from rlv.store import open_store, read_json, read_status, write_bytes
from rlv.sweep import SweepSpec

TUNE_DIR = "_tune"  # STORE/_tune/SWEEP: Tune's experiment state and checkpoints
# rlv's environment that trials must see as the driver does (paths made absolute first)
PATH_ENV = ("RLV_CACHE_DIR", "RLV_DATA_DIR", "RLV_FID_WEIGHTS")


@dataclass(frozen=True)
class LaunchOptions:
    store: str | None = None  # overrides the sweep file's store
    address: str | None = None  # join this Ray cluster instead of starting one
    num_cpus: int | None = None  # the embedded cluster's CPUs (default: all)
    num_gpus: int | None = None  # the embedded cluster's GPUs (default: detected)


@dataclass
class SweepOutcome:
    sweep: str
    store: str
    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # trial -> its error, one line
    wall_s: float = 0.0
    trial_s: float = 0.0  # sum of the trials' own wall times
    slots: int = 1  # trials that fit on the cluster at once

    @property
    def overhead_per_trial_s(self) -> float:
        """What Ray and Tune add per trial: slot-seconds not spent inside a trial, per trial."""
        n = len(self.finished)
        return (self.wall_s * self.slots - self.trial_s) / n if n else 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> list[str]:
        """What `rlv launch` prints at the end: counts, times, memory, the store, failures."""
        n = len(self.finished) + len(self.failed)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        lines = [f"sweep {self.sweep}: {len(self.finished)}/{n} trials finished in "
                 f"{self.wall_s:.0f} s; trials' own time {self.trial_s:.0f} s on {self.slots} "
                 f"slots, Ray adds {self.overhead_per_trial_s:.2f} s per trial; driver peak "
                 f"memory {peak_mb:.0f} MB",
                 f"store: {self.store}  (pandas: pd.read_parquet('{self.store}/trials'))"]
        lines += [f"FAILED {trial}: {error}" for trial, error in sorted(self.failed.items())]
        if self.failed:
            lines.append("rerun the same command to retry the failed trials from their last "
                         "checkpoints")
        return lines


def store_location(spec: SweepSpec, override: str | None) -> str:
    """The sweep's store: the override or the file's, local folders made absolute."""
    store = override or spec.store
    return store if "://" in store else str(Path(store).expanduser().resolve())


def absolute_paths(spec: SweepSpec) -> SweepSpec:
    """The spec with a relative data_dir made absolute, and rlv's path variables likewise:
    trials resolve paths after Tune has moved them into their own folders."""
    for name in PATH_ENV:
        value = os.environ.get(name)
        if value and "://" not in value and not os.path.isabs(os.path.expanduser(value)):
            os.environ[name] = str(Path(value).expanduser().resolve())
    data = spec.settings.get("data", {})
    data_dir = data.get("data_dir")
    if not data_dir or os.path.isabs(os.path.expanduser(data_dir)):
        return spec
    settings = {**spec.settings, "data": {**data, "data_dir": str(Path(data_dir).resolve())}}
    return dataclasses.replace(spec, settings=settings)


def preflight(trials: list[TrialConfig]) -> None:
    """Fail before any trial starts when a data set or the FID weights are missing here."""
    from rlv.data import DATASETS

    seen = set()
    for cfg in trials:
        key = (cfg.data.dataset, cfg.data.data_dir)
        if key not in seen:
            seen.add(key)
            DATASETS.build(cfg.data.dataset).locate(cfg.data.data_dir)
    if any(cfg.eval.fid_samples > 0 for cfg in trials):
        from rlv.fid_weights import check_weights_available

        check_weights_available()


def check_not_running(store: str, spec: SweepSpec) -> None:
    """One driver per sweep: a second one would run every trial again beside the first."""
    status = read_status(store, spec.name)
    if driver_alive(status):
        raise RlvError(f"sweep {spec.name!r} is already running in store {store} (driver "
                       f"{status.get('driver')}, last heard at {status['updated_at']}); watch it "
                       "with `rlv status`, or stop that driver first")


def check_fingerprint(store: str, spec: SweepSpec) -> None:
    """Refuse to resume a sweep whose grid or settings changed since it started in this store."""
    fs, root = open_store(store)
    path = f"{root}/{TUNE_DIR}/{spec.name}.sweep.json"
    fingerprint = spec.fingerprint()
    saved = read_json(fs, path)
    if saved is None:
        write_bytes(fs, path, json.dumps({"fingerprint": fingerprint, "spec": spec.to_dict()},
                                         indent=1).encode())
    elif not isinstance(saved, dict) or saved.get("fingerprint") != fingerprint:
        # starting over in place would mix two settings' rows under one sweep name
        raise RlvError(f"store {store} holds sweep {spec.name!r} started with other factors, "
                       f"seeds or settings (see {path}); give the changed sweep another name, "
                       "or use another --store")


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """RlvError unless host:port answers: ray.init would retry an unreachable GCS for minutes."""
    target = address.split("://", 1)[-1]
    if target == "auto" or ":" not in target:
        return  # "auto" finds the local cluster (or fails at once); no port to probe
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        raise RlvError(f"cannot reach Ray at {address}: {exc}; is the cluster up (ray status) "
                       "and the address host:port of its head?") from None


def start_ray(options: LaunchOptions) -> str:
    """Start the embedded cluster or join one; return the dashboard URL ("" if there is none)."""
    import ray

    if ray.is_initialized():
        return ""
    address = options.address or os.environ.get("RAY_ADDRESS")
    env = {name: os.environ[name] for name in PATH_ENV if os.environ.get(name)}
    runtime_env = {"env_vars": env} if env else None  # workers of a joined cluster see them too
    if address:
        check_reachable(address)
    try:
        if address:
            context = ray.init(address=address, log_to_driver=False, runtime_env=runtime_env)
        else:
            # "local": a new cluster of our own, even where another one runs on this machine
            context = ray.init(address="local", num_cpus=options.num_cpus,
                               num_gpus=options.num_gpus, include_dashboard=True,
                               dashboard_host="127.0.0.1", log_to_driver=False,
                               runtime_env=runtime_env)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray cluster"
        raise RlvError(f"cannot reach Ray at {where}: {str(exc).splitlines()[0]}") from None
    url = context.dashboard_url or ""
    if url and not url.startswith("http"):
        url = f"http://{url}"
    return url


def quiet_tune() -> None:
    """The store is the record (no result.json/CSV per trial) and the progress lines are ours."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # with num_to_keep=1 each checkpoint snapshots Tune's state, which keeps a resume exact;
    # Tune warns about that cost (milliseconds here) on every quick checkpoint
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    for name in ("ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_sweep(spec: SweepSpec, options: LaunchOptions, echo: Callable[[str], None]) -> SweepOutcome:
    """Run (or resume) the sweep on Ray; returns which trials finished and which failed."""
    quiet_tune()
    import ray
    from ray import tune

    from rlv.callbacks import ProgressCallback, StoreCallback, last_line
    from rlv.resources import concurrency, trial_resources
    from rlv.trainable import run_sweep_trial, trial_name
    from rlv.tune_state import mark_finished

    spec = absolute_paths(spec)
    store = store_location(spec, options.store)
    trials = spec.trials()
    preflight(trials)
    check_not_running(store, spec)
    check_fingerprint(store, spec)
    dashboard = start_ray(options)
    if dashboard:
        echo(f"Ray dashboard: {dashboard}")
    per_trial = trial_resources(spec.resources, ray.cluster_resources(), echo)
    echo(f"sweep {spec.name}: {len(trials)} trials, each {per_trial['cpu']:g} CPU "
         f"+ {per_trial['gpu']:g} GPU; store {store}")

    trainable = tune.with_resources(run_sweep_trial, per_trial)
    writer = StoreCallback(store, spec.name)
    callbacks = [writer, ProgressCallback(len(trials), echo)]
    failures = tune.FailureConfig(max_failures=spec.max_failures)
    experiment = f"{store.rstrip('/')}/{TUNE_DIR}/{spec.name}"
    start = time.monotonic()
    if tune.Tuner.can_restore(experiment):
        echo(f"resuming sweep {spec.name} from {experiment}")
        mark_finished(experiment, writer.writer.trials_written)
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_errored=True)
        # the run config is pickled with the experiment: give the restored run live callbacks
        # and this file's retries (trials keep the resources they were created with)
        assert tuner._local_tuner is not None, "Tuner.restore ran without a local tuner"
        tuner._local_tuner._run_config.callbacks = callbacks  # noqa: SLF001
        tuner._local_tuner._run_config.failure_config = failures  # noqa: SLF001
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=spec.param_space(),
            tune_config=tune.TuneConfig(reuse_actors=True, trial_name_creator=trial_name,
                                        trial_dirname_creator=trial_name),
            run_config=tune.RunConfig(
                name=spec.name,
                storage_path=f"{store.rstrip('/')}/{TUNE_DIR}",
                failure_config=failures,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=callbacks,
                verbose=0,
            ),
        )
    grid = tuner.fit()
    outcome = SweepOutcome(spec.name, store, wall_s=time.monotonic() - start,
                           slots=min(len(trials), concurrency(per_trial, ray.cluster_resources())))
    for result in (grid[i] for i in range(len(grid))):
        name = result.path.rstrip("/").rsplit("/", 1)[-1]  # the trial's folder: its name
        if result.error is not None:
            outcome.failed[name] = last_line(str(result.error)) or type(result.error).__name__
        else:
            outcome.finished.append(name)
            row = (result.metrics or {}).get("rlv_row") or {}
            outcome.trial_s += float(row.get("trial_seconds", 0.0))
    return outcome
