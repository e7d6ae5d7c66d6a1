"""`rlv board` in a real headless Chromium (Debian's `chromium`, driven by Playwright, launched as
tests/test_dashboard_browser.py launches it) while a real sweep runs on the session's watch
cluster: the grid goes from pending to running to done, the ANOVA appears provisional once every
cell has two seeds and final when the sweep is done, and picking another metric redraws the
cell means (BokehJS), whose numbers are checked against pandas on the store. The board runs as
`rlv launch` prints it, in a process where torch and Ray cannot be imported (tests/blocked.py).

No guessed waits: every trial is held after its first epoch (rlv/service/hold.py), so that two
run and four wait; the test releases them one by one and waits for what the page shows.
Screenshots go to the test's temporary folder; the test prints where.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from blocked import LEAK, make_shims, start_rlv
from conftest import stop_process_group
from gates import Gates, wait_for
from scipy import stats
from test_dashboard_browser import WAIT_MS, browser, shoot  # noqa: F401 (browser: a fixture)
from test_watch import write_sweep

from rlv import columns as col
from rlv.board.config import board_command

pytestmark = pytest.mark.slow

SWEEP = "boarded"
CELLS = ("L-fc-normal", "NL-fc-normal")
TRIALS = [f"{cell}-s{seed}" for cell in CELLS for seed in range(3)]
LAUNCH_TIMEOUT_S = 600


def square(page: Any, trial: str, state: str, text: str | None = None) -> Any:
    """The trial's square in the grid once it shows `state` (and `text`: a running trial's
    epoch); waits for it."""
    locator = page.locator(f'td[data-trial="{trial}"][data-state="{state}"]')
    if text is not None:
        locator = locator.filter(has_text=re.compile(f"^{re.escape(text)}$"))
    locator.wait_for(timeout=WAIT_MS)
    return locator


def state_of(page: Any, trial: str) -> str:
    return str(page.locator(f'td[data-trial="{trial}"]').get_attribute("data-state"))


def board_line(log: Path) -> str:
    """The `rlv board` command `rlv launch` printed (waits for the line)."""
    found: list[str] = []

    def printed() -> bool:
        found[:] = re.findall(r"^live board: (rlv board .+?)  \(then http://127\.0\.0\.1:8266\)$",
                              log.read_text(), flags=re.M)
        return bool(found)

    wait_for(printed, 120, "rlv launch to print the rlv board line")
    return found[0]


def served(url: str, metric: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/api/state?metric={metric}", timeout=60) as response:
        return dict(json.loads(response.read()))


def test_the_board_fills_in_while_a_sweep_runs_in_a_browser(
        tmp_path: Path, watch_cluster, browser, capsys) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with capsys.disabled():
        print(f"\nscreenshots under {shots}")
    store = tmp_path / "store"
    path = write_sweep(tmp_path, SWEEP, factors={"encoder": ["L", "NL"], "layer": ["fc"],
                                                  "prior": ["normal"]}, seeds=3,
                       settings={"train": {"epochs": 2, "batch_size": 128,
                                           "checkpoint_every": 1}})
    gates = Gates(tmp_path / "gates")
    for trial in TRIALS:  # every trial stops after epoch 1 until the test lets it go on
        gates.hold(trial, 1)
    log = tmp_path / "launch.log"
    with log.open("w") as out:
        launch = subprocess.Popen(["rlv", "launch", str(path), "--address", watch_cluster.address],
                                  stdout=out, stderr=subprocess.STDOUT, text=True,
                                  env={**os.environ, **gates.env})
    shims = make_shims(tmp_path / "shims")
    board = None
    try:
        # `rlv launch` prints the board's line beside the dashboard's, and its job carries it
        line = board_line(log)  # this cluster's dashboard is not on Ray's port: named
        assert line == board_command(str(store), SWEEP, watch_cluster.dashboard)
        assert line.endswith(f" --dashboard {watch_cluster.dashboard}")
        text = log.read_text()
        assert text.index(f"Ray dashboard: {watch_cluster.dashboard}") < text.index("live board: ")
        from ray.job_submission import JobSubmissionClient

        jobs = JobSubmissionClient(watch_cluster.dashboard).list_jobs()
        assert [(j.metadata or {}).get("rlv_board") for j in jobs  # set before Ray knew its port
                if (j.metadata or {}).get("rlv_sweep") == SWEEP] == [board_command(str(store),
                                                                                   SWEEP)]
        # the board, as printed (on a free port), once the launch has put the sweep in the store
        wait_for(lambda: (store / "_sweeps" / SWEEP / "spec.json").exists(), 120,
                 "the sweep's manifest in the store")
        board = start_rlv(shims, *shlex.split(line)[1:], "--port", "0", cwd=tmp_path)
        assert board.stdout is not None
        started = board.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", started)
        assert url, started + (board.communicate(timeout=30)[1] if board.poll() is not None
                               else "")
        page = browser.new_page()
        page.goto(url.group(0))

        # two trials run (held after epoch 1), four wait
        wait_for(lambda: len(gates.held()) == 2, 300, "two trials held after their first epoch")
        running = sorted(gates.held())
        for trial in running:  # with its epoch, once the driver's status file has it
            square(page, trial, "running", "1")
        waiting = [t for t in TRIALS if t not in running]
        for trial in waiting:
            square(page, trial, "pending")
        assert "the ANOVA shows once every cell has 2 finished seeds: 2 of 2 cells have fewer" \
            in page.locator("#anova").inner_text()
        shoot(page, shots, "1-running-and-pending")

        # five trials finish, the sixth stays held: every cell has two seeds, the sweep runs on
        released: list[str] = []
        while len(released) < 5:
            wait_for(lambda: bool(set(gates.held()) - set(released)), 300, "the next trial held")
            trial = sorted(set(gates.held()) - set(released))[0]
            gates.release(trial)
            released.append(trial)
        for trial in released:
            square(page, trial, "done")
        wait_for(lambda: len(gates.held()) == 6, 300, "the last trial held")
        last = (set(gates.held()) - set(released)).pop()
        square(page, last, "running")
        assert "5 finished, 1 running, 0 failed, 0 pending (of 6)" in page.locator(
            "#progress-text").inner_text()
        page.locator("#anova-table").wait_for(timeout=WAIT_MS)
        assert page.locator("#anova-mark").inner_text() == "provisional: the sweep is still running"
        shoot(page, shots, "2-anova-provisional")

        # another metric: the cell means are the store's, by pandas
        page.select_option("#metric", col.TEST_RE)
        page.locator(f'body[data-metric="{col.TEST_RE}"]').wait_for(timeout=WAIT_MS)
        assert page.locator("#interaction-title").inner_text() == (
            "Reconstruction error RE (test): cell means and 95% intervals")
        rows = pd.read_parquet(store / col.TRIALS_TABLE)
        assert len(rows) == 5
        doc = served(url.group(0), col.TEST_RE)
        page.locator("details summary").click()  # "the numbers", as a user opens them
        for cell, values in rows.groupby(col.ENCODER)[col.TEST_RE]:
            mine = next(s for s in doc["stats"] if s["levels"]["encoder"] == cell)
            n = len(values)
            half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
            assert mine["n"] == n and mine["mean"] == pytest.approx(values.mean(), rel=1e-12)
            assert (mine["lower"], mine["upper"]) == pytest.approx(
                (values.mean() - half, values.mean() + half), rel=1e-12)
            shown = page.locator(f'#stats tr[data-cell="{cell}-fc-normal"] td').all_inner_texts()
            assert shown[1] == str(n) and float(shown[2]) == pytest.approx(values.mean(),
                                                                          rel=1e-4)
        # the ANOVA of RE: with encoder the one factor that varies, scipy's one-way ANOVA
        f_value, p_value = stats.f_oneway(*(v for _, v in rows.groupby(col.ENCODER)[col.TEST_RE]))
        row = page.locator(f'#anova-table[data-metric="{col.TEST_RE}"] tr').nth(1)
        row.filter(has_text="mnist").wait_for(timeout=WAIT_MS)
        dataset, model, term, df, resid_df, f_shown, p_shown, _ = row.locator("td").all_inner_texts()
        assert (dataset, model, term, df, resid_df) == ("mnist", "encoder", "encoder", "1", "3")
        assert float(f_shown) == pytest.approx(f_value, rel=1e-4)
        assert float(p_shown) == pytest.approx(p_value, rel=1e-4)
        shoot(page, shots, "3-another-metric")

        # the last trial finishes: every square done, the ANOVA final
        gates.release(last)
        assert launch.wait(timeout=LAUNCH_TIMEOUT_S) == 0, log.read_text()
        for trial in TRIALS:
            square(page, trial, "done")
        page.get_by_text("6 finished, 0 running, 0 failed, 0 pending (of 6): the sweep is done").wait_for(
            timeout=WAIT_MS)
        page.get_by_text("final: every trial is in").wait_for(timeout=WAIT_MS)
        assert all(state_of(page, t) == "done" for t in waiting)  # from pending to done
        # learning curves: a panel per cell, each with the seeds' mean over both epochs
        curves = served(url.group(0), col.TEST_RE)["curves"]["cells"]
        epochs = pd.read_parquet(store / col.EPOCHS_TABLE)
        for cell, curve in zip(CELLS, curves, strict=True):
            rows_ = epochs[epochs[col.TRIAL_ID].str.startswith(f"{cell}-s")]
            assert curve["name"] == cell and curve["mean"] == pytest.approx(
                list(rows_.groupby(col.EPOCH)[col.TRAIN_RE].mean()), rel=1e-12)
        # BokehJS drew both charts: a canvas per panel (in Bokeh's shadow DOM, which Playwright's
        # CSS locators pierce)
        assert page.locator("#interaction canvas").count() > 0
        assert page.locator("#curves canvas").count() > 0
        assert np.isfinite(page.evaluate("window.rlvBoard.firstCurvesMs"))
        shoot(page, shots, "4-done")
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
        if board is not None:
            stop_process_group(board)  # type: ignore[arg-type]
            _, stderr = board.communicate(timeout=30)
            assert LEAK not in stderr, stderr
