"""Growing a sweep in place on a real Ray: more seeds, a new level, a killed driver, a refused
setting change; the store keeps every (sweep, trial) and (sweep, trial, epoch) row exactly once
and finished trials keep their weights only."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml
from gates import Gates, alive, checkpoint_epoch, descends_from, wait_for

from rlv import columns as col
from rlv.errors import RlvError
from rlv.levels import DATASETS
from rlv.service.launch import LaunchOptions, run_sweep
from rlv.store.store import Store
from rlv.sweep.spec import parse_sweep
from rlv.trial.run import build_model
from rlv.trial.saved import load_model

pytestmark = pytest.mark.slow


def write_sweep(path: Path, store: Path, encoders: list[str], seeds: int, epochs: int = 2,
                train_size: int = 256, **extra: Any) -> Path:
    data = {"name": "grow", "store": str(store),
            "factors": {"encoder": encoders, "layer": ["fc"], "prior": ["normal"]},
            "seeds": seeds,
            "settings": {"data": {"train_size": train_size, "test_size": 128},
                         "train": {"epochs": epochs, "batch_size": 64, "checkpoint_every": 1},
                         "eval": {"fid_samples": 0, "samples": 16, "interpolation_pairs": 2}},
            "resources": {"cpu": 1, "gpu": 0}, "max_failures": 0, **extra}
    path.write_text(yaml.safe_dump(data))
    return path


def load(path: Path):  # type: ignore[no-untyped-def]
    return parse_sweep(yaml.safe_load(path.read_text()), source=str(path))


def stored_rows(store: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """Trial ids and (trial, epoch) keys of sweep `grow`, as pandas reads them."""
    trials = pd.read_parquet(store / "trials", filters=[(col.SWEEP, "=", "grow")])
    epochs = pd.read_parquet(store / "epochs", filters=[(col.SWEEP, "=", "grow")])
    return (list(trials[col.TRIAL_ID]),
            list(zip(epochs[col.TRIAL_ID], epochs[col.EPOCH].astype(int), strict=True)))


def assert_exactly_once(store: Path, names: list[str], epochs: int) -> None:
    trial_ids, epoch_keys = stored_rows(store)
    assert sorted(trial_ids) == sorted(names), "a trial row is missing or doubled"
    expected = sorted((n, e) for n in names for e in range(1, epochs + 1))
    assert sorted(epoch_keys) == expected, "an epoch row is missing or doubled"


def trial_files(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (store / "trials" / "sweep=grow").glob("*.parquet")}


def test_seeds_and_levels_grow_in_place_and_finished_trials_keep_weights_only(
        tmp_path: Path, ray_cluster) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    path = write_sweep(tmp_path / "grow.yaml", store, ["L"], seeds=1)
    first = run_sweep(load(path), LaunchOptions(), lambda line: None)
    assert first.ok and first.finished == ["L-fc-normal-s0"]
    assert_exactly_once(store, ["L-fc-normal-s0"], 2)
    # the finished trial keeps its trained weights, and nothing else
    folder = store / "_checkpoints" / "grow" / "L-fc-normal-s0"
    assert sorted(p.name for p in folder.iterdir()) == ["model.pt"]
    weights = torch.load(io.BytesIO((folder / "model.pt").read_bytes()), weights_only=True)
    # model.pt is a state dict of that trial's model: the keys of a model built fresh from its
    # config, each a tensor of that shape (no training state beside them, nothing missing)
    fresh = load(path).trials()[0]
    untrained = build_model(fresh, DATASETS.build("mnist"), torch.device("cpu"))
    shapes = {name: tuple(p.shape) for name, p in untrained.state_dict().items()}
    assert sorted(weights) == sorted(shapes)
    assert {name: tuple(v.shape) for name, v in weights.items()
            if isinstance(v, torch.Tensor)} == shapes, "a kept weight is no tensor of its shape"
    # the library loads it back: the config of its row, the weights it kept
    model = load_model(str(store), "grow", "L-fc-normal-s0")
    assert all(torch.equal(p, weights[name]) for name, p in model.state_dict().items())
    assert any(not torch.equal(p, untrained.state_dict()[name])
               for name, p in model.state_dict().items()), "the kept weights never trained"
    with torch.inference_mode():
        assert model.generate(4, torch.Generator().manual_seed(0)).shape == (4, 1, 32, 32)
    before = trial_files(store)

    # two seeds and a new encoder level: only the three new trials run
    write_sweep(path, store, ["L", "NL"], seeds=2)
    lines: list[str] = []
    grown = run_sweep(load(path), LaunchOptions(), lines.append)
    assert grown.ok and sorted(grown.finished) == ["L-fc-normal-s1", "NL-fc-normal-s0",
                                                   "NL-fc-normal-s1"]
    assert grown.skipped == 1 and not [ln for ln in lines if "] L-fc-normal-s0 started" in ln]
    names = ["L-fc-normal-s0", "L-fc-normal-s1", "NL-fc-normal-s0", "NL-fc-normal-s1"]
    assert_exactly_once(store, names, 2)
    after = trial_files(store)
    assert all(after.get(name) == data for name, data in before.items()), "a file was rewritten"
    # the summary's overhead counts this launch's trials only: their own times, from the store
    rows = pd.read_parquet(store / "trials", filters=[(col.SWEEP, "=", "grow")])
    new = rows[rows[col.TRIAL_ID].isin(grown.finished)]
    assert grown.trial_s == pytest.approx(float(new[col.TRIAL_SECONDS].sum()))
    assert grown.overhead_per_trial_s == pytest.approx(
        (grown.wall_s * grown.slots - float(new[col.TRIAL_SECONDS].sum())) / 3)

    # the same file again: nothing to run, and Tune is not even asked
    again = run_sweep(load(path), LaunchOptions(), lines.append)
    assert again.ok and not again.finished and again.skipped == 4
    assert trial_files(store) == after

    # keep_model: false: a new trial keeps nothing once its row is written
    write_sweep(path, store, ["L", "NL"], seeds=3, keep_model=False)
    slim = run_sweep(load(path), LaunchOptions(), lambda line: None)
    assert slim.ok and sorted(slim.finished) == ["L-fc-normal-s2", "NL-fc-normal-s2"]
    assert not (store / "_checkpoints" / "grow" / "L-fc-normal-s2").exists()
    assert (store / "_checkpoints" / "grow" / "L-fc-normal-s1" / "model.pt").exists()
    assert_exactly_once(store, names + ["L-fc-normal-s2", "NL-fc-normal-s2"], 2)


def test_a_changed_setting_is_refused_before_anything_runs(tmp_path: Path, ray_cluster) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    path = write_sweep(tmp_path / "grow.yaml", store, ["RKS"], seeds=1, epochs=2)
    assert run_sweep(load(path), LaunchOptions(), lambda line: None).ok
    manifest = (store / "_sweeps" / "grow" / "spec.json").read_bytes()
    listing = sorted(str(p) for p in store.rglob("*"))
    write_sweep(path, store, ["RKS"], seeds=2, epochs=3)  # more seeds, fine; epochs, not
    with pytest.raises(RlvError) as refused:
        run_sweep(load(path), LaunchOptions(), lambda line: None)
    message = str(refused.value)
    assert "train.epochs = 2" in message and "now says 3" in message
    assert "another name, or another --store" in message
    assert sorted(str(p) for p in store.rglob("*")) == listing  # nothing ran, nothing written
    assert (store / "_sweeps" / "grow" / "spec.json").read_bytes() == manifest
    # the CLI says the same in one line, and `rlv check` warns before a launch is tried
    from typer.testing import CliRunner

    from rlv.cli import app

    out = CliRunner().invoke(app, ["check", str(path)])
    assert out.exit_code == 2 and out.stderr.count("\n") == 1 and "train.epochs = 2" in out.stderr


def launch_held(path: Path, store: Path, gates: Gates, names: list[str], epoch: int,
                address: str) -> tuple[list[str], subprocess.Popen[str]]:
    """`rlv launch` of the sweep file as its own process group, waited on until each of `names`
    is held after `epoch` and its checkpoint of that epoch is committed; (command, driver)."""
    for name in names:
        gates.hold(name, epoch)
    command = ["rlv", "launch", str(path), "--address", address]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True, env={**os.environ, **gates.env})
    wait_for(lambda: set(gates.held()) == set(names) or driver.poll() is not None, 240,
             f"the trials held at epoch {epoch}")
    assert driver.poll() is None, driver.communicate()[0]
    wait_for(lambda: all(checkpoint_epoch(store, "grow", n) == epoch for n in names), 60,
             f"the driver to commit the checkpoints of epoch {epoch}")
    return command, driver


def test_ctrl_c_stops_a_launch_with_exit_130_naming_what_the_same_command_resumes(
        tmp_path: Path, ray_cluster) -> None:  # type: ignore[no-untyped-def]
    """Ctrl-C in the terminal (SIGINT to the launch's process group): Tune stops the trials, the
    summary says the run stopped with its trials unfinished (not that they finished, nor that
    there was nothing to run), the exit code is a shell's for Ctrl-C, and the same command
    resumes each trial after its last checkpoint, each epoch stored once."""
    store = tmp_path / "store"
    path = write_sweep(tmp_path / "grow.yaml", store, ["L", "NL"], seeds=1, epochs=4)
    names = ["L-fc-normal-s0", "NL-fc-normal-s0"]
    gates = Gates(tmp_path / "gates")
    command, driver = launch_held(path, store, gates, names, 2, ray_cluster.address)
    os.killpg(driver.pid, signal.SIGINT)
    out, _ = driver.communicate(timeout=180)
    assert driver.returncode == 130, out
    assert "sweep grow: stopped (Ctrl-C) with 2 trials unfinished; 0/2 trials finished" in out, out
    assert "rerun the same command to resume the 2 unfinished trials" in out, out
    for pid in gates.held().values():  # the trials were the stopped driver's: ended with it
        assert descends_from(pid, ray_cluster.pid) or not alive(pid)
        wait_for(lambda pid=pid: not alive(pid), 120, f"trial process {pid} to end")
    for name in names:
        gates.release(name)
    status = subprocess.run(["rlv", "status", "grow", "--store", str(store)],
                            capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert "0 finished, 0 running, 0 failed, 2 pending (of 2)" in status.stdout, status.stdout
    assert "2 unfinished trials resume from their checkpoints" in status.stdout, status.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=600,
                           env={**os.environ, **gates.env})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(2 resume from checkpoints, 0 in the store already)" in again.stdout
    for name in names:
        assert gates.attempts(name) == [[1, 2], [3, 4]]
        assert f"] {name} resumed after epoch 2 (its last checkpoint)" in again.stdout
    assert_exactly_once(store, names, 4)


def test_a_driver_killed_during_a_grown_run_resumes_from_the_store_checkpoints(
        tmp_path: Path, ray_cluster) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    path = write_sweep(tmp_path / "grow.yaml", store, ["L"], seeds=1, epochs=6)
    assert run_sweep(load(path), LaunchOptions(), lambda line: None).ok
    write_sweep(path, store, ["L"], seeds=3, epochs=6)
    # the new trials are held once epoch 3 is checkpointed: the kill finds both mid-run
    gates = Gates(tmp_path / "gates")
    new = ["L-fc-normal-s1", "L-fc-normal-s2"]
    command, driver = launch_held(path, store, gates, new, 3, ray_cluster.address)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.communicate(timeout=60)
    # the trials it ran are the session cluster's: they are ours to stop, by their pids
    for pid in gates.held().values():
        assert descends_from(pid, ray_cluster.pid) or not alive(pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:  # Ray ended the dead driver's workers first
            pass
    for pid in gates.held().values():
        wait_for(lambda pid=pid: not alive(pid), 60, f"trial process {pid} to end")
    for name in new:
        gates.release(name)
    status = subprocess.run(["rlv", "status", "grow", "--store", str(store)],
                            capture_output=True, text=True)  # the store alone: no sweep file
    assert status.returncode == 0, status.stderr
    assert "(of 3)" in status.stdout and "2 unfinished trials resume from their checkpoints" in status.stdout
    again = subprocess.run(command, capture_output=True, text=True, timeout=600,
                           env={**os.environ, **gates.env})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(2 resume from checkpoints, 1 in the store already)" in again.stdout
    assert "] L-fc-normal-s0 started" not in again.stdout
    for name in new:  # each resumed right after its checkpoint
        assert gates.attempts(name) == [[1, 2, 3], [4, 5, 6]]
    assert_exactly_once(store, ["L-fc-normal-s0", *new], 6)
    manifest = json.loads((store / "_sweeps" / "grow" / "spec.json").read_text())
    assert sorted(manifest["trials"]) == ["L-fc-normal-s0", *new]
    checkpoints = store / "_checkpoints" / "grow"
    assert all(not (checkpoints / f"L-fc-normal-s{s}" / "state.pt").exists() for s in range(3))


def test_trials_from_before_a_setting_became_a_factor_count_as_their_level_in_the_analysis(
        tmp_path: Path) -> None:
    """Grown with `model.latent_dim: [16, 32]` after runs at MNIST's default latent size: the old
    rows (never rewritten) have no latent_dim value; the analysis reads it from their config."""
    from rlv.analysis import load_store
    from rlv.analysis.design import varying_factors
    from rlv.store.manifest import write_manifest
    from rlv.store.plan import plan_sweep
    from rlv.store.writer import StoreWriter
    from rlv.trial.run import factor_values

    store = tmp_path / "store"

    def run(path: Path) -> list[str]:  # what a launch stores, without training: rows by config
        plan = plan_sweep(load(path), Store.open(store))
        configs = plan.trial_configs()
        write_manifest(Store.open(store), plan.manifest, trials_run=len(configs))
        writer = StoreWriter(Store.open(store), "grow")
        for cfg in configs:
            factors = factor_values(cfg)
            writer.queue_trial({col.TRIAL_ID: cfg.name, col.TEST_NEG_ELBO: 90.0 + cfg.seed,
                                col.SWEEP_FACTORS: ",".join(cfg.factor_columns()),
                                col.CONFIG: cfg.to_json(), **factors}, {})
            writer.queue_epochs([{col.TRIAL_ID: cfg.name, col.EPOCH: 1,
                                  col.TRAIN_NEG_ELBO: 95.0, **factors}])
        writer.flush()
        return [cfg.name for cfg in configs]

    before = run(write_sweep(tmp_path / "grow.yaml", store, ["L"], seeds=2))
    grown = write_sweep(tmp_path / "grow.yaml", store, ["L"], seeds=2)
    data = yaml.safe_load(grown.read_text())
    data["factors"]["model.latent_dim"] = [16, 32]
    grown.write_text(yaml.safe_dump(data))
    after = run(grown)
    assert len(before) == 2 and len(after) == 2  # the old trials count as latent 16: not rerun

    results = load_store(store)
    latent = results.trials.set_index(col.TRIAL_ID)["latent_dim"]
    mnist_latent = DATASETS.get("mnist").cls.latent_dim  # MNIST's default latent size (the thesis's)
    assert {name: int(latent[name]) for name in before} == dict.fromkeys(before, mnist_latent)
    assert {name: int(latent[name]) for name in after} == dict.fromkeys(after, 32)
    assert "latent_dim" in varying_factors(results.trials)
    epochs = results.epochs.set_index(col.TRIAL_ID)["latent_dim"]
    assert {name: int(epochs[name]) for name in before + after} == {
        **dict.fromkeys(before, mnist_latent), **dict.fromkeys(after, 32)}
