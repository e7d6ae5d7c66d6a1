"""A newcomer's view of a running sweep, in a real headless Chromium (Debian's `chromium`, which
`scripts/install.sh --dev` installs, driven by Playwright through its executable_path).

At the Ray dashboard: sign in with the token the way `rlv launch` says (paste it into the token
box), find the sweep by name on the Jobs page, and read its progress on its progress actor's page
while it runs, then again after. At TensorBoard: a trial's curve is listed. Screenshots go to the
test's temporary folder; the test prints where.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, stop_process_group
from gates import Gates
from test_watch import write_sweep

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
# headless, loopback only, nothing fetched in the background, a new empty profile (given below)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
WAIT_MS = 120_000


def required(module: str) -> Any:
    """The module; in CI a missing one fails (install.sh --dev installs it), elsewhere it skips."""
    if os.environ.get("CI"):
        # import_module, not __import__: the latter returns the top package, not module itself
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"{module} is missing: bash scripts/install.sh --dev")


@pytest.fixture
def browser(tmp_path: Path):  # type: ignore[no-untyped-def]
    sync_api = required("playwright.sync_api")
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing: bash scripts/install.sh --dev installs Debian's chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=FLAGS,
            viewport={"width": 1600, "height": 1000})
        try:
            yield context
        finally:
            context.close()


def shoot(page: Any, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def see(page: Any, text: str | re.Pattern[str], folder: Path, name: str) -> None:
    """Wait until `text` shows on the page; if it never does, a screenshot and the page's text."""
    try:
        page.get_by_text(text).filter(visible=True).first.wait_for(timeout=WAIT_MS)
    except Exception as exc:
        shoot(page, folder, f"{name}-FAILED")
        raise AssertionError(f"{text!r} never showed; the page said:\n{page.inner_text('body')}"
                             ) from exc


def see_in_log(page: Any, keyword: str, folder: Path, name: str) -> None:
    """On an actor's page: its STDOUT log, searched for `keyword` until a line holds it. The
    viewer loads the log once: a user presses REFRESH for newer lines (which clears the search)."""
    page.get_by_role("tab", name="STDOUT").click()
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        # each load replaces the tab's search box; the other tabs' boxes are hidden
        field = page.get_by_label("Keyword").filter(visible=True)
        field.wait_for(timeout=WAIT_MS)
        field.fill(keyword)
        try:
            page.get_by_text(keyword).filter(visible=True).first.wait_for(timeout=3000)
            return
        except Exception:
            if time.monotonic() > deadline:
                see(page, keyword, folder, name)  # fails, with a screenshot and the page's text
        page.get_by_role("button", name="Refresh", exact=True).filter(visible=True).click()


def board_actor_id(cluster: Any, sweep: str, timeout_s: float) -> str:
    from ray.util.state import list_actors

    from rlv.service.dashboard import board_name

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        actors = list_actors(address=cluster.address, filters=[("name", "=", board_name(sweep))])
        if actors:
            return str(actors[0].actor_id)
        time.sleep(1)
    raise AssertionError(f"no progress actor for sweep {sweep} after {timeout_s:.0f} s")


def test_a_newcomer_finds_the_sweep_its_progress_and_its_curves_in_a_browser(
        tmp_path: Path, watch_cluster, browser, capsys) -> None:  # type: ignore[no-untyped-def]
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with capsys.disabled():  # shown on a passing run too: that is when they are worth a look
        print(f"\nscreenshots under {shots}")
    # L-fc-normal-s0 is held after its second epoch (rlv/service/hold.py) until the page has
    # shown it running: looked at while it runs, however fast this machine is
    path = write_sweep(tmp_path, "browsed", factors={"encoder": ["L", "NL"], "prior": ["normal"]},
                       settings={"train": {"epochs": 6, "checkpoint_every": 2}})
    gates = Gates(tmp_path / "gates")
    gates.hold("L-fc-normal-s0", 2)
    log = (tmp_path / "launch.log").open("w")
    launch = subprocess.Popen(["rlv", "launch", str(path), "--address", watch_cluster.address],
                              stdout=log, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, **gates.env})
    try:
        page = browser.new_page()
        page.goto(f"{watch_cluster.dashboard}/#/jobs")
        # the token box, filled in as `rlv launch` tells a user to: with `ray get-auth-token`
        token = subprocess.run([str(Path(sys.executable).parent / "ray"), "get-auth-token"],
                               capture_output=True, text=True, check=True).stdout.strip()
        box = page.get_by_placeholder("Enter your authentication token")
        box.wait_for(timeout=WAIT_MS)
        shoot(page, shots, "1-token-box")
        box.fill(token)
        page.get_by_role("button", name="Submit").click()
        # the Jobs page: the sweep's job by its name
        see(page, "rlv sweep browsed", shots, "2-jobs")
        shoot(page, shots, "2-jobs")

        # the progress actor's page, while the sweep runs: trials running, and where
        actor_id = board_actor_id(watch_cluster, "browsed", timeout_s=120)
        page.goto(f"{watch_cluster.dashboard}/#/actors/{actor_id}")
        see(page, "rlv-sweep:browsed", shots, "3-progress-running")
        # its log, as a user reads it: the STDOUT tab, searched for one trial's progress lines
        see_in_log(page, "running  L-fc-normal-s0 (epoch", shots, "3-progress-running")
        # where: "on IP pid N" (a regex: Playwright's plain-text match ignores case and spacing)
        see(page, re.compile(r"L-fc-normal-s0 \(epoch \d+, on \d+\.\d+\.\d+\.\d+ pid \d+\)"),
            shots, "3-progress-running")
        assert launch.poll() is None, "the sweep ended before its progress was seen running"
        shoot(page, shots, "3-progress-running")
        gates.release("L-fc-normal-s0")

        assert launch.wait(timeout=600) == 0, (tmp_path / "launch.log").read_text()
        page.reload()
        see_in_log(page, "sweep browsed: 2 finished, 0 running, 0 failed, 0 pending (of 2)", shots,
                   "4-progress-finished")
        shoot(page, shots, "4-progress-finished")
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
        log.close()

    # TensorBoard on the sweep's folder, as `rlv launch` prints it: a trial's curve is listed
    tensorboard = shutil.which("tensorboard", path=str(Path(sys.executable).parent)) or \
        shutil.which("tensorboard")
    if tensorboard is None:
        required("tensorboard")
        tensorboard_cmd = [sys.executable, "-m", "tensorboard.main"]
    else:
        tensorboard_cmd = [tensorboard]
    port = free_port()
    logdir = tmp_path / "store" / "tensorboard" / "browsed"
    board = subprocess.Popen([*tensorboard_cmd, "--logdir", str(logdir), "--host", "127.0.0.1",
                              "--port", str(port)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        page = browser.new_page()
        deadline = time.monotonic() + 120
        while True:
            try:
                page.goto(f"http://127.0.0.1:{port}/#timeseries")
                break
            except Exception:  # not listening yet
                if time.monotonic() > deadline or board.poll() is not None:
                    raise
                time.sleep(1)
        # TensorBoard draws only the cards in view: filter the tags as a user would
        page.get_by_role("combobox", name="Filter tags (regex)").fill("train/neg_elbo")
        card = page.locator("scalar-card").filter(has_text="train/neg_elbo")
        try:  # the card's table lists each run (trial) that has points on the curve
            card.locator("scalar-card-data-table").get_by_text("NL-fc-normal-s0").wait_for(
                timeout=WAIT_MS)
            card.locator("scalar-card-data-table").get_by_text("L-fc-normal-s0", exact=True
                                                               ).wait_for(timeout=WAIT_MS)
        except Exception:
            shoot(page, shots, "5-tensorboard-FAILED")
            raise
        shoot(page, shots, "5-tensorboard")
    finally:
        stop_process_group(board)
