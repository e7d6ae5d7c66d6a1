"""The launch's third step: the grid's trials that the store does not hold, run as one Tune
experiment on Ray. Tune's own files are this launch's scratch, deleted at the end: the store
holds the truth. The driver's one Tune callback is the recorder (rlv/service/recorder.py); its
sinks write the store, the curves, the dashboard's progress and the terminal, and the outcome is
read from its view of the trials."""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

from rlv.config import TrialConfig
from rlv.envvars import temporary_env
from rlv.service.launch.claim import stop_if_taken_over
from rlv.service.launch.plan import Launch, heal_checkpoints
from rlv.service.launch.ray_session import LaunchOptions, start_ray
from rlv.service.launch.report import SweepOutcome
from rlv.store.manifest import write_manifest
from rlv.store.plan import SweepPlan, plan_sweep
from rlv.sweep.spec import TRIAL_KEY


@contextlib.contextmanager
def quiet_tune() -> Iterator[None]:
    """While Tune runs: no result.json/CSV per trial (the store is the record) and no progress
    lines but ours. The process's environment and loggers are as they were afterwards."""
    names = ("ray.tune", "ray.train")
    levels = [logging.getLogger(name).level for name in names]
    for name in names:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with temporary_env("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1"):  # read by Tuner.fit, here
            yield
    finally:
        for name, level in zip(names, levels, strict=True):
            logging.getLogger(name).setLevel(level)


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


def run_grid(launch: Launch, options: LaunchOptions,
             echo: Callable[[str], None]) -> SweepOutcome:
    """Run the trials of the launch's grid (its seeds as they are) that the store does not
    hold. Called under the claim: the grid is planned again here, as the store is now."""
    spec, store = launch.spec, launch.store
    plan = plan_sweep(spec, store)  # refuses a changed setting before anything runs
    trials = plan.trial_configs()
    outcome = SweepOutcome(spec.name, str(store), skipped=len(plan.done))
    if plan.outside:
        echo(f"{plan.outside} stored trials of sweep {spec.name} are no longer in its grid "
             "(kept as they are)")
    heal_checkpoints(plan)
    if not trials:
        return outcome
    with quiet_tune():
        return _run_trials(launch, plan, trials, options, echo, outcome)


def _run_trials(launch: Launch, plan: SweepPlan, trials: list[TrialConfig],
                options: LaunchOptions, echo: Callable[[str], None],
                outcome: SweepOutcome) -> SweepOutcome:
    import ray
    from ray import tune

    from rlv.board.config import board_command, board_url
    from rlv.service.curves import CurvesSink
    from rlv.service.dashboard_sink import DashboardSink
    from rlv.service.recorder import SweepRecorder, SweepView
    from rlv.service.resources import alive_nodes, concurrency, trial_resources
    from rlv.service.store_sink import StoreSink
    from rlv.service.terminal import TerminalSink
    from rlv.service.trainable import run_sweep_trial, trial_name
    from rlv.service.watch import watch_lines
    from rlv.store.status import FAILED, FINISHED

    spec, store = launch.spec, launch.store
    dashboard = start_ray(options, launch.trial_env, spec.name, str(store))
    if dashboard:
        echo(f"Ray dashboard: {dashboard}")
    echo(f"live board: {board_command(str(store), spec.name, dashboard)}  (then {board_url()})")
    for line in watch_lines(dashboard, str(store), spec.name):
        echo(line)
    per_trial = trial_resources(spec.resources, alive_nodes(ray.nodes()), echo)
    # Ray is up and accepts the trials: only now does the manifest record the launch (a launch
    # that failed before this leaves it as it was, so an edited sweep file can be launched)
    write_manifest(store, plan.manifest, trials_run=len(trials))
    echo(f"sweep {spec.name}: {len(trials)} trials to run ({plan.resumable()} resume from "
         f"checkpoints, {len(plan.done)} in the store already), each {per_trial['cpu']:g} CPU "
         f"+ {per_trial['gpu']:g} GPU; store {store}")

    trainable = tune.with_resources(
        tune.with_parameters(run_sweep_trial, store=store, keep_model=spec.keep_model), per_trial)
    view = SweepView(spec.name, str(store), plan.total, tuple(sorted(plan.done.values())))
    recorder = SweepRecorder(view, [StoreSink(store, spec.name, spec.keep_model),
                                    CurvesSink(store, spec.name), DashboardSink(spec.name),
                                    TerminalSink(echo)])
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
            callbacks=[recorder],
            verbose=0,
        ),
    )
    start = time.monotonic()
    try:
        tuner.fit()
    except Exception:
        stop_if_taken_over(store, spec.name)  # the writer's refusal, named
        raise
    finally:
        outcome.wall_s = time.monotonic() - start
        shutil.rmtree(scratch, ignore_errors=True)
    stop_if_taken_over(store, spec.name)
    outcome.slots = min(len(trials), concurrency(per_trial, ray.cluster_resources()))
    outcome.finished = view.names(FINISHED)
    outcome.failed = {name: view.trials[name].error for name in view.names(FAILED)}
    ended = {*outcome.finished, *outcome.failed}
    outcome.stopped = sorted(cfg.name for cfg in trials if cfg.name not in ended)
    outcome.trial_s = view.trial_s
    return outcome
