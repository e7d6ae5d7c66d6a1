"""`rlv launch`: run the trials of a sweep's grid x seeds that the store does not hold yet.

The store is the sweep's truth (rlv/store/plan.py): each launch matches the grid against it by
content, leaves out every trial whose row is there, and runs exactly the rest as a new Tune
experiment (Tune runs the trials of one launch; its own files are scratch, deleted at the end). A
trial that started before resumes from its checkpoint in the store, on any node. A grown sweep
file (more seeds, a new level) runs only the new trials; a changed setting is refused before
anything runs. Ray is the embedded local cluster by default (started here, dashboard on
127.0.0.1), or the one at `address` / $RAY_ADDRESS. The cluster path (a cluster.yaml, or an
http:// address) submits this same command as a Ray Job: see cluster.py.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import resource
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlv import columns as col
from rlv.config import TrialConfig
from rlv.errors import RlvError
from rlv.store import checkpoints, claim
from rlv.store.files import first_line, open_store
from rlv.store.manifest import write_manifest
from rlv.store.plan import SweepPlan, plan_sweep
from rlv.sweep.spec import TRIAL_KEY, SweepSpec

# rlv's environment that trials must see as the driver does (paths made absolute first);
# RLV_HOLD_DIR is the tests' hook (rlv/service/hold.py)
PATH_ENV = ("RLV_CACHE_DIR", "RLV_DATA_DIR", "RLV_FID_WEIGHTS", "RLV_HOLD_DIR")


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
    wall_s: float = 0.0  # this launch's time in Tune
    trial_s: float = 0.0  # sum of the wall times of the trials this launch ran
    slots: int = 1  # trials that fit on the cluster at once
    skipped: int = 0  # grid trials already in the store (not run by this launch)

    @property
    def overhead_per_trial_s(self) -> float:
        """What Ray and Tune add per trial this launch ran: its slot-seconds not spent inside a
        trial, per trial (trials of earlier launches count in neither)."""
        n = len(self.finished)
        return (self.wall_s * self.slots - self.trial_s) / n if n else 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> list[str]:
        """What `rlv launch` prints at the end: counts, times, memory, the store, failures."""
        n = len(self.finished) + len(self.failed)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        if not n:
            return [f"sweep {self.sweep}: nothing to run, all {self.skipped} trials are in the "
                    f"store", f"store: {self.store}  (pandas: pd.read_parquet('{self.store}/trials'))"]
        lines = [f"sweep {self.sweep}: {len(self.finished)}/{n} trials finished in "
                 f"{self.wall_s:.0f} s; trials' own time {self.trial_s:.0f} s on {self.slots} "
                 f"slots, Ray adds {self.overhead_per_trial_s:.2f} s per trial; driver peak "
                 f"memory {peak_mb:.0f} MB",
                 f"store: {self.store}  (pandas: pd.read_parquet('{self.store}/trials'))"]
        lines += [f"FAILED {trial}: {error}" for trial, error in sorted(self.failed.items())]
        if self.failed:
            lines.append("rerun the same command to retry the failed trials from their last "
                         "checkpoints")
        if self.skipped:
            lines.append(f"{self.skipped} trials of the grid were in the store already (not run)")
        return lines


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
    """Fail before any trial starts when this node's cache folder is unusable, or a data set or
    the FID weights are missing or broken here."""
    from rlv.levels import DATASETS
    from rlv.paths import cache_dir

    cache_dir()
    seen = set()
    for cfg in trials:
        key = (cfg.data.dataset, cfg.data.data_dir)
        if key not in seen:
            seen.add(key)
            DATASETS.build(cfg.data.dataset).locate(cfg.data.data_dir)
    if any(cfg.eval.fid_samples > 0 for cfg in trials):
        from rlv.trial.fid_weights import check_weights_available

        check_weights_available()


def heal_checkpoints(plan: SweepPlan) -> None:
    """Slim the checkpoints of finished trials whose driver died between writing the trial's
    row and slimming its checkpoint (the row is the truth: the trial is done)."""
    fs, root = open_store(plan.store)
    for trial_id in plan.done.values():
        if checkpoints.unfinished(plan.checkpoints.get(trial_id, set())):
            checkpoints.finish(fs, root, plan.spec.name, trial_id, plan.spec.keep_model)


def _stop_if_taken_over(store: str, sweep: str) -> None:
    taken = claim.taken_over(store, sweep)
    if taken is not None:
        raise RlvError(f"sweep {sweep!r} was taken over by {taken.holder()} while this driver's "
                       "heartbeat was late; this driver stopped writing to the store")


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


def start_ray(options: LaunchOptions, sweep: str = "", store: str = "") -> str:
    """Start the embedded cluster or join one; return the dashboard URL ("" if there is none).
    The driver's job carries the sweep's name (the dashboard's Job name column) and the
    `rlv board` line of its store."""
    import ray

    from rlv.service.dashboard import job_config

    if ray.is_initialized():
        return ""
    address = options.address or os.environ.get("RAY_ADDRESS")
    env = {name: os.environ[name] for name in PATH_ENV if os.environ.get(name)}
    runtime_env = {"env_vars": env} if env else None  # workers of a joined cluster see them too
    if address:
        check_reachable(address)
    try:
        if address:
            context = ray.init(address=address, log_to_driver=False, runtime_env=runtime_env,
                               job_config=job_config(sweep, store))
        else:
            # "local": a new cluster of our own, even where another one runs on this machine
            context = ray.init(address="local", num_cpus=options.num_cpus,
                               num_gpus=options.num_gpus, include_dashboard=True,
                               dashboard_host="127.0.0.1", log_to_driver=False,
                               runtime_env=runtime_env, job_config=job_config(sweep, store))
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray cluster"
        raise RlvError(f"cannot reach Ray at {where}: {first_line(exc)}") from None
    url = context.dashboard_url or ""
    if url and not url.startswith("http"):
        url = f"http://{url}"
    return url


def quiet_tune() -> None:
    """The store is the record (no result.json/CSV per trial) and the progress lines are ours."""
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    for name in ("ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)


def trial_search(trials: list[TrialConfig]) -> tuple[dict[str, Any], Any]:
    """Tune's param space and search for exactly these trials, each config one preset point.

    Not one `grid_search` over the configs: Tune deep-copies the whole grid for every variant it
    generates, so starting 2,000 trials took minutes (quadratic); a preset point costs a copy of
    itself. The param space is one trial's config, a template of the keys the presets fill."""
    from ray.tune.search import BasicVariantGenerator

    configs = trial_points(trials)
    return dict(configs[0]), BasicVariantGenerator(points_to_evaluate=configs)


def trial_points(trials: list[TrialConfig]) -> list[dict[str, Any]]:
    """What Tune hands each trial: its resolved TrialConfig as a plain dict, under TRIAL_KEY."""
    return [{TRIAL_KEY: cfg.to_dict()} for cfg in trials]


def run_sweep(spec: SweepSpec, options: LaunchOptions, echo: Callable[[str], None]) -> SweepOutcome:
    """Run the grid's trials that the store does not hold; returns which finished and which
    failed (of this launch's trials). A sweep with `until:` runs in rounds, each one run_grid
    (rlv/service/adaptive.py)."""
    spec = absolute_paths(spec)
    store = spec.store_location(options.store)
    # refused before the store is touched at all: a changed setting, an unusable cache folder,
    # a missing data set or broken FID weights
    preflight(plan_sweep(spec, store).trial_configs())
    # one driver per sweep: the claim is taken before anything runs and held to the end (the
    # grid is planned again under it: another driver may have changed the store meanwhile)
    with claim.acquire(store, spec.name, echo=echo):
        if spec.until is not None:
            from rlv.service.adaptive import run_until

            return run_until(spec, options, echo)
        return run_grid(spec, options, echo)


def run_grid(spec: SweepSpec, options: LaunchOptions, echo: Callable[[str], None]) -> SweepOutcome:
    """Run the trials of the spec's grid (its seeds as they are) that the store does not hold."""
    spec = absolute_paths(spec)
    store = spec.store_location(options.store)
    plan = plan_sweep(spec, store)  # refuses a changed setting before anything runs
    trials = plan.trial_configs()
    outcome = SweepOutcome(spec.name, store, skipped=len(plan.done))
    if plan.outside:
        echo(f"{plan.outside} stored trials of sweep {spec.name} are no longer in its grid "
             "(kept as they are)")
    heal_checkpoints(plan)
    if not trials:
        return outcome
    return _run_trials(spec, plan, trials, options, echo, outcome)


def _run_trials(spec: SweepSpec, plan: SweepPlan, trials: list[TrialConfig],
                options: LaunchOptions, echo: Callable[[str], None],
                outcome: SweepOutcome) -> SweepOutcome:
    quiet_tune()
    import ray
    from ray import tune

    from rlv.board.config import board_command, board_url
    from rlv.service.callbacks import ProgressCallback, StoreCallback, last_line
    from rlv.service.resources import alive_nodes, concurrency, trial_resources
    from rlv.service.trainable import ROW_KEY, run_sweep_trial, trial_name
    from rlv.service.watch import watch_callbacks, watch_lines

    store = plan.store
    dashboard = start_ray(options, spec.name, store)
    if dashboard:
        echo(f"Ray dashboard: {dashboard}")
    echo(f"live board: {board_command(store, spec.name, dashboard)}  (then {board_url()})")
    for line in watch_lines(dashboard, store, spec.name):
        echo(line)
    per_trial = trial_resources(spec.resources, alive_nodes(ray.nodes()), echo)
    # Ray is up and accepts the trials: only now does the store claim the sweep (a launch that
    # failed before this leaves it as it was, so an edited sweep file can be launched after it)
    write_manifest(store, plan.manifest, trials_run=len(trials))
    resumed = plan.resumable()
    echo(f"sweep {spec.name}: {len(trials)} trials to run ({resumed} resume from checkpoints, "
         f"{len(plan.done)} in the store already), each {per_trial['cpu']:g} CPU "
         f"+ {per_trial['gpu']:g} GPU; store {store}")

    trainable = tune.with_resources(
        tune.with_parameters(run_sweep_trial, store=store, keep_model=spec.keep_model), per_trial)
    callbacks = [StoreCallback(store, spec.name, spec.keep_model),
                 ProgressCallback(len(trials), echo),
                 *watch_callbacks(store, spec.name, tuple(sorted(plan.done.values())))]
    # Tune's experiment files are this launch's scratch, on the driver: the store holds the truth
    scratch = tempfile.mkdtemp(prefix=f"rlv-tune-{spec.name}-")
    param_space, search = trial_search(trials)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=search, num_samples=len(trials),
                                    reuse_actors=True, trial_name_creator=trial_name,
                                    trial_dirname_creator=trial_name),
        run_config=tune.RunConfig(
            name=spec.name,
            storage_path=scratch,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            callbacks=callbacks,
            verbose=0,
        ),
    )
    start = time.monotonic()
    try:
        grid = tuner.fit()
    except Exception:
        _stop_if_taken_over(store, spec.name)  # the writer's refusal, named
        raise
    finally:
        outcome.wall_s = time.monotonic() - start
        shutil.rmtree(scratch, ignore_errors=True)
    _stop_if_taken_over(store, spec.name)
    outcome.slots = min(len(trials), concurrency(per_trial, ray.cluster_resources()))
    for result in (grid[i] for i in range(len(grid))):
        name = result.path.rstrip("/").rsplit("/", 1)[-1]  # the trial's folder: its name
        if result.error is not None:
            outcome.failed[name] = last_line(str(result.error)) or type(result.error).__name__
        else:
            outcome.finished.append(name)
            row = (result.metrics or {}).get(ROW_KEY) or {}
            outcome.trial_s += float(row.get(col.TRIAL_SECONDS, 0.0))
    return outcome
