"""Seeds until the question is answered (`until:` in a sweep file).

Every expected number is computed here, independently of rlv/analysis/plan.py: sigma as the
residual sd of the cell means (numpy), the noncentrality as the sum of squares of Cohen's pattern
(two level means delta apart, the others at the grand mean) over sigma^2, the power as
scipy.stats.ncf's tail beyond scipy.stats.f's critical value, the plan's seeds by counting up.
Two real sweeps run on the session's Ray cluster (tiny data, fid_samples 0): one whose delta is
answered by the first round, one whose delta needs more seeds than max_seeds, with its driver
killed in round 2 and launched again.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from analysis_helpers import synthetic_trials
from gates import Gates, alive, descends_from, wait_for
from scipy import stats
from typer.testing import CliRunner

from rlv import columns as col
from rlv.analysis.adaptive import decide, next_seeds
from rlv.analysis.plan import MAX_SEEDS
from rlv.analysis.render import Heading, Para, Table
from rlv.analysis.report import write_report
from rlv.analysis.rounds import rounds_blocks
from rlv.cli import app
from rlv.errors import RlvError
from rlv.store.rounds import (
    GROW,
    MAX_SEEDS_REACHED,
    NO_ANALYSIS,
    PLAN_REACHED,
    POWER_REACHED,
    Round,
    read_rounds,
    write_round,
)
from rlv.store.store import Store
from rlv.sweep.spec import parse_sweep
from rlv.sweep.until import Until, grow_seeds

# --- the independent computation --------------------------------------------------------------


def cell_sigma(trials: pd.DataFrame, metric: str, factors: list[str]) -> tuple[float, int]:
    """(residual sd, cells) of the full factorial of `factors`: deviations from the cell means."""
    y = trials[metric].to_numpy(float)
    means = trials.groupby(factors, observed=True)[metric].transform("mean").to_numpy(float)
    cells = int(trials.groupby(factors, observed=True).ngroups)
    return math.sqrt(float(((y - means) ** 2).sum()) / (len(y) - cells)), cells


def power_at(levels: list[str], per_level: np.ndarray, cells: int, sigma: float, delta: float,
             alpha: float) -> np.ndarray:
    """The F test's power of a factor with `levels` (balanced: `per_level` trials at each), for
    two level means delta apart and the rest at the grand mean; df2 = N - cells."""
    a = len(levels)
    pattern = np.array([delta / 2, -delta / 2] + [0.0] * (a - 2))  # centred: sums to 0
    noncentrality = per_level * float((pattern**2).sum()) / sigma**2
    df1, df2 = a - 1, per_level * a - cells
    critical = stats.f.ppf(1 - alpha, df1, df2)
    return 1 - stats.ncf.cdf(critical, df1, df2, noncentrality)


def planned(levels: list[str], cells: int, sigma: float, until: Until) -> int | None:
    """The fewest seeds per cell whose power reaches the target (None: not below MAX_SEEDS)."""
    n = np.arange(2, MAX_SEEDS + 1)  # one seed per cell leaves a full factorial no residual df
    per_level = n * cells // len(levels)
    reached = power_at(levels, per_level, cells, sigma, until.delta, until.alpha) >= until.power
    return int(n[np.argmax(reached)]) if reached.any() else None


def question(**changes: Any) -> Until:
    values: dict[str, Any] = {"metric": col.TEST_RE, "factor": col.ENCODER, "delta": 1.0,
                              "power": 0.8, "alpha": 0.01, "max_seeds": 40, "step": 3}
    return Until(**{**values, **changes})


# --- the decision, pure -----------------------------------------------------------------------

LEVELS = ["L", "PNL", "NL"]


@pytest.fixture(scope="module")
def trials() -> pd.DataFrame:
    # 3 encoders x 2 layers, 3 seeds: test_re's model is the full factorial encoder * layer
    return synthetic_trials(encoders=LEVELS, priors=("normal",), seeds=range(3), noise=2.0,
                            rng_seed=5)


@pytest.mark.parametrize("delta_sd,max_seeds,step", [
    (1.0, 40, 3),   # grows by step
    (0.8, 40, 50),  # a big step stops at the plan's seeds
    (0.3, 7, 10),   # ... or at max_seeds
    (20.0, 40, 3),  # the first round answers it
])  # fmt: skip
def test_a_round_matches_the_independent_power_and_plan(
        trials: pd.DataFrame, delta_sd: float, max_seeds: int, step: int) -> None:
    sigma, cells = cell_sigma(trials, col.TEST_RE, [col.ENCODER, col.LAYER])
    until = question(delta=delta_sd * sigma, max_seeds=max_seeds, step=step)
    got = decide(trials, until, seeds=3, number=2)
    power = float(power_at(LEVELS, np.array(len(trials) // 3), cells, sigma, until.delta,
                           until.alpha))
    plan = planned(LEVELS, cells, sigma, until)
    assert got.round == 2 and got.seeds == 3 and got.trials == len(trials)
    assert got.sigma == pytest.approx(sigma, rel=1e-9)
    assert got.power == pytest.approx(power, rel=1e-7)
    assert got.planned_seeds == plan
    assert json.loads(got.until) == until.to_dict()
    if power >= until.power:
        assert (got.next_seeds, got.decision) == (3, POWER_REACHED)
    else:
        assert plan is not None and plan > 3
        assert (got.next_seeds, got.decision) == (min(3 + step, max_seeds, plan), GROW)


def test_the_observed_effect_changes_nothing(trials: pd.DataFrame) -> None:
    """Shifting a level's values moves its mean (the observed effect), not the residuals: the
    round is the same, because only sigma is re-estimated."""
    until = question(delta=1.0)
    shifted = trials.assign(**{col.TEST_RE: trials[col.TEST_RE]
                               + np.where(trials[col.ENCODER] == "NL", 100.0, 0.0)})
    same, moved = decide(trials, until, 3), decide(shifted, until, 3)
    assert moved.sigma == pytest.approx(same.sigma, rel=1e-9)
    assert moved.power == pytest.approx(same.power, rel=1e-9)
    assert (moved.planned_seeds, moved.next_seeds, moved.decision) == (
        same.planned_seeds, same.next_seeds, same.decision)


def test_one_seed_per_cell_has_no_sigma_and_grows_by_step() -> None:
    one = synthetic_trials(encoders=LEVELS, priors=("normal",), seeds=[0], rng_seed=1)
    got = decide(one, question(step=2), seeds=1)
    assert math.isnan(got.sigma) and math.isnan(got.power) and got.planned_seeds is None
    assert (got.next_seeds, got.decision) == (3, GROW)


def test_a_constant_metric_stops_with_a_note() -> None:
    flat = synthetic_trials(encoders=LEVELS, priors=("normal",), seeds=range(2))
    flat[col.TEST_RE] = 7.0
    got = decide(flat, question(), seeds=2)
    assert got.done and got.decision.startswith(f"{NO_ANALYSIS}: constant metric")


@pytest.mark.parametrize("seeds,power,plan,expected", [
    (4, 0.95, 30, (4, POWER_REACHED)),
    (4, 0.80, 30, (4, POWER_REACHED)),    # reaching the target is enough
    (9, 0.10, 30, (9, MAX_SEEDS_REACHED)),
    (4, 0.10, 30, (6, GROW)),             # step 2
    (8, 0.10, 30, (9, GROW)),             # never past max_seeds 9
    (4, 0.10, 5, (5, GROW)),              # never past the plan
    (4, 0.10, None, (6, GROW)),           # no plan (beyond its bound): step
    (4, math.nan, None, (6, GROW)),       # no sigma yet: step
    (5, 0.70, 5, (5, PLAN_REACHED)),      # the plan's seeds, power short of it (missing trials)
])  # fmt: skip
def test_the_next_seed_count(seeds: int, power: float, plan: int | None,
                             expected: tuple[int, str]) -> None:
    assert next_seeds(seeds, power, plan, question(max_seeds=9, step=2)) == expected


# --- the sweep file ------------------------------------------------------------------------------

BASE: dict[str, Any] = {"name": "u", "factors": {"encoder": ["L", "NL"], "layer": ["fc"]},
                        "seeds": 2, "settings": {"eval": {"fid_samples": 0}}}


def until_of(**until: Any) -> dict[str, Any]:
    return {**BASE, "until": {"metric": "test_re", "factor": "encoder", "delta": 1.0,
                              "max_seeds": 5, **until}}


def test_until_parses_with_defaults_and_round_trips() -> None:
    spec = parse_sweep(until_of(step=2), source="u.yaml")
    assert spec.until == Until(metric="test_re", factor="encoder", delta=1.0, power=0.8,
                               alpha=0.01, max_seeds=5, step=2)
    assert parse_sweep(spec.to_dict()) == spec  # what the store's manifest keeps
    assert "until" not in parse_sweep(BASE).to_dict()  # sweeps without it: manifests as before
    latent = {**until_of(factor="model.latent_dim"),
              "factors": {"encoder": ["L"], "model.latent_dim": [8, 16]}}
    assert parse_sweep(latent).until.factor == "latent_dim"  # type: ignore[union-attr]


@pytest.mark.parametrize("until,message", [
    ({"steps": 2}, "unknown until key 'steps'; allowed: metric, factor, delta, max_seeds, power"),
    ({"metric": "test_rx"}, "until.metric = 'test_rx' is not allowed; metrics with a model: "),
    ({"metric": "fid"}, "until.metric = 'fid' needs FID: eval.fid_samples is 0"),
    ({"factor": "layer"}, "until.factor = 'layer' is not allowed; the sweep's factors with two "
                          "or more levels: encoder"),
    ({"delta": 0}, "until.delta = 0 is not allowed; it must be > 0"),
    ({"delta": "big"}, "until.delta = 'big' is not allowed; it must be > 0"),
    ({"power": 1.0}, "until.power = 1.0 is not allowed; it must be strictly between 0 and 1"),
    ({"alpha": 0}, "until.alpha = 0 is not allowed; it must be strictly between 0 and 1"),
    ({"step": 0}, "until.step = 0 is not allowed; it must be an integer >= 1"),
    ({"max_seeds": 1}, "until.max_seeds = 1 is not allowed; it must be an integer >= 2 (the "
                       "file's seeds: 2)"),
    ({"max_seeds": 10**7}, "until.max_seeds = 10,000,000 gives 20,000,000 trials"),
])  # fmt: skip
def test_a_bad_until_is_one_line_naming_the_value(until: dict[str, Any], message: str) -> None:
    with pytest.raises(RlvError) as refused:
        parse_sweep(until_of(**until), source="u.yaml")
    text = str(refused.value)
    assert text.startswith("u.yaml: ") and message in text and "\n" not in text


def test_until_needs_its_keys() -> None:
    with pytest.raises(RlvError, match=r"until needs delta, max_seeds \(keys: metric, factor"):
        parse_sweep({**BASE, "until": {"metric": "test_re", "factor": "encoder"}})
    with pytest.raises(RlvError, match="until must be a mapping"):
        parse_sweep({**BASE, "until": [1, 2]})


def test_seeds_grow_by_the_smallest_unused() -> None:
    assert grow_seeds((0, 1), 4) == (0, 1, 2, 3)
    assert grow_seeds((0, 3), 4) == (0, 3, 1, 2)
    assert grow_seeds((0, 1, 2), 2) == (0, 1, 2)  # never fewer


def test_a_round_is_written_once(tmp_path: Path) -> None:
    first = Round(1, 2, 4, 1.5, 30, 0.1, 4, GROW, question().to_json())
    written = write_round(Store.open(tmp_path), "u", first)
    again = write_round(Store.open(tmp_path), "u", Round(1, 2, 4, 9.9, 1, 0.9, 2, POWER_REACHED))
    assert again == written and written.decided_at is not None
    second = write_round(Store.open(tmp_path), "u", Round(2, 4, 8, 1.4, 28, 0.2, 4, POWER_REACHED,
                                                     question().to_json()))
    assert read_rounds(Store.open(tmp_path), "u") == [written, second]
    assert read_rounds(Store.open(tmp_path), "other") == []
    table = pd.read_parquet(tmp_path / col.ROUNDS_TABLE)
    assert list(table[col.ROUND]) == [1, 2] and set(table[col.SWEEP]) == {"u"}
    # the report's section: the question, why only sigma, and one row per round
    heading, why, rows = rounds_blocks(Store.open(tmp_path), ["u", "other"])
    assert isinstance(heading, Heading) and heading.text.endswith("(u)")
    assert isinstance(why, Para) and "Wittes and Brittain" in why.text and "delta 1.0" in why.text
    assert isinstance(rows, Table)
    assert list(rows.frame[col.DECISION]) == [GROW, POWER_REACHED]
    assert list(rows.frame[col.PLANNED_SEEDS]) == ["30", "28"]


# --- real sweeps on the session's Ray ------------------------------------------------------------


def write_sweep(path: Path, store: Path, epochs: int, **until: Any) -> Path:
    data = {"name": path.stem, "store": str(store),
            "factors": {"encoder": ["L", "NL"], "layer": ["fc"], "prior": ["normal"]},
            "seeds": 2,
            "settings": {"data": {"train_size": 256, "test_size": 128},
                         "train": {"epochs": epochs, "batch_size": 64, "checkpoint_every": 1},
                         "eval": {"fid_samples": 0, "samples": 16, "interpolation_pairs": 2}},
            "resources": {"cpu": 1, "gpu": 0}, "max_failures": 0,
            "until": {"metric": "test_re", "factor": "encoder", **until}}
    path.write_text(yaml.safe_dump(data))
    return path


def stored(store: Path, table: str, sweep: str) -> pd.DataFrame:
    return pd.read_parquet(store / table, filters=[(col.SWEEP, "=", sweep)])


def names(seeds: int) -> list[str]:
    return sorted(f"{e}-fc-normal-s{s}" for e in ("L", "NL") for s in range(seeds))


def assert_exactly_once(store: Path, sweep: str, seeds: int, epochs: int) -> pd.DataFrame:
    trials = stored(store, col.TRIALS_TABLE, sweep)
    assert sorted(trials[col.TRIAL_ID]) == names(seeds), "a trial row is missing or doubled"
    keys = stored(store, col.EPOCHS_TABLE, sweep)
    got = sorted(zip(keys[col.TRIAL_ID], keys[col.EPOCH].astype(int), strict=True))
    assert got == sorted((n, e) for n in names(seeds) for e in range(1, epochs + 1))
    return trials


def assert_round(round_: Round, trials: pd.DataFrame, until: Until) -> None:
    """A stored round against the independent computation on the trials it ran."""
    ran = trials[trials[col.SEED] < round_.seeds]
    sigma, cells = cell_sigma(ran, col.TEST_RE, [col.ENCODER])
    power = float(power_at(["L", "NL"], np.array(len(ran) // 2), cells, sigma, until.delta,
                           until.alpha))
    assert round_.trials == len(ran) == 2 * round_.seeds
    assert round_.sigma == pytest.approx(sigma, rel=1e-9)
    assert round_.power == pytest.approx(power, rel=1e-7, abs=1e-12)
    assert round_.planned_seeds == planned(["L", "NL"], cells, sigma, until)


def test_a_delta_the_first_round_answers_stops_there(tmp_path: Path, ray_cluster) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    path = write_sweep(tmp_path / "answered.yaml", store, epochs=1, delta=1000.0, max_seeds=4)
    runner = CliRunner()
    out = runner.invoke(app, ["launch", str(path)])
    assert out.exit_code == 0, out.output
    trials = assert_exactly_once(store, "answered", seeds=2, epochs=1)
    (only,) = read_rounds(Store.open(store), "answered")
    until = parse_sweep(yaml.safe_load(path.read_text())).until
    assert until is not None
    assert_round(only, trials, until)
    assert (only.round, only.seeds, only.next_seeds, only.decision) == (1, 2, 2, POWER_REACHED)
    assert only.describe() in out.output
    status = runner.invoke(app, ["status", "answered", "--store", str(store)])
    assert status.exit_code == 0 and f"  {only.describe()}" in status.output
    assert "(of 4)" in status.output
    check = runner.invoke(app, ["check", str(path)])
    assert check.exit_code == 0, check.output
    assert "worst case, max_seeds 4: 8 trials, 4 of them not in the store; remaining: about" \
        in check.output
    # launched again: nothing runs and no round is added
    again = runner.invoke(app, ["launch", str(path)])
    assert again.exit_code == 0 and "nothing to run, all 4 trials are in the store" in again.output
    assert read_rounds(Store.open(store), "answered") == [only]
    report = write_report(store, tmp_path / "report", sweep="answered").markdown.read_text()
    assert "## Seeds until the question is answered (answered)" in report
    assert f"| 1 | 2 | 4 | {only.sigma:.4g} |" in report


def test_a_delta_beyond_max_seeds_stops_there_and_a_killed_driver_continues_its_rounds(
        tmp_path: Path, ray_cluster) -> None:  # type: ignore[no-untyped-def]
    store = tmp_path / "store"
    path = write_sweep(tmp_path / "beyond.yaml", store, epochs=2, delta=0.2, max_seeds=4, step=2)
    until = parse_sweep(yaml.safe_load(path.read_text())).until
    assert until is not None
    # round 2 (4 seeds per cell) holds one of its new trials once epoch 1 is checkpointed
    gates = Gates(tmp_path / "gates")
    held = "L-fc-normal-s2"
    gates.hold(held, 1)
    command = ["rlv", "launch", str(path), "--address", ray_cluster.address]
    env = {**os.environ, **gates.env}
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True, env=env)
    wait_for(lambda: held in gates.held() or driver.poll() is not None, 480,
             f"{held} held in round 2")
    assert driver.poll() is None, driver.communicate()[0]
    first = read_rounds(Store.open(store), "beyond")
    assert [(r.round, r.seeds, r.next_seeds, r.decision) for r in first] == [(1, 2, 4, GROW)]
    round_file = store / col.ROUNDS_TABLE / "sweep=beyond" / "round-00001.parquet"
    written = round_file.read_bytes()
    os.killpg(driver.pid, signal.SIGKILL)
    driver.communicate(timeout=60)
    pid = gates.held()[held]  # the session cluster's worker: ours to stop
    assert descends_from(pid, ray_cluster.pid) or not alive(pid)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:  # Ray ended the dead driver's workers first
        pass
    wait_for(lambda: not alive(pid), 60, f"trial process {pid} to end")
    gates.release(held)
    status = CliRunner().invoke(app, ["status", "beyond", "--store", str(store)])
    assert status.exit_code == 0, status.output
    assert "(of 8)" in status.stdout and "  round 2 runs 4 seeds per cell" in status.stdout
    assert "driver" in status.stdout and "gone (rlv launch resumes the sweep)" in status.stdout

    again = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "round 2, 4 seeds per cell" in again.stdout and "round 1," not in again.stdout
    assert not [s for s in range(2) if f"] L-fc-normal-s{s} started" in again.stdout]
    assert gates.attempts(held) == [[1], [2]]  # resumed after its checkpoint
    trials = assert_exactly_once(store, "beyond", seeds=4, epochs=2)
    rounds = read_rounds(Store.open(store), "beyond")
    assert [(r.round, r.seeds, r.next_seeds, r.decision) for r in rounds] == [
        (1, 2, 4, GROW), (2, 4, 4, MAX_SEEDS_REACHED)]
    assert round_file.read_bytes() == written  # round 1 was not written again
    for round_ in rounds:
        assert_round(round_, trials, until)
        assert round_.power < until.power
        assert round_.planned_seeds is None or round_.planned_seeds > until.max_seeds
    table = stored(store, col.ROUNDS_TABLE, "beyond")
    assert list(table[col.ROUND]) == [1, 2]  # one row per round, as pandas reads it
