"""Time to first render of `rlv board` on a store of thousands of trials, in Debian's chromium.

    python benchmarks/board_first_render.py                    # builds a 2,016-trial store
    python benchmarks/board_first_render.py --store S --sweep scale   # e.g. sweep_scale.py's

The store built by default (by benchmarks/synthetic_store.py, store_read.py's builder too) has
the shape of benchmarks/sweep_scale.py's big sweep, written the way its driver writes it: the
thesis's 24 cells x 84 seeds (2,016 trials), one epoch each, rows flushed by rlv's own
StoreWriter in batches of 40 trials (about 50 files per table, as the driver's 10-second flushes
left them), the sweep's manifest, and an ended status file (or, --mid-run, one with trials
running, one failed and the rest pending); the metrics follow a planted additive model with
noise. (sweep_scale.py makes the same store by running the trials, which takes 10 minutes of the
machine; --store times the board on that.)

Then `rlv board STORE --port 0` runs as a process (its start-up, to the line naming its address,
is timed too), and each run opens the page in a fresh headless chromium profile (nothing cached)
and reads, from the page itself (window.rlvBoard), when the grid and tables were shown, when the
first screen was drawn (the cell means' chart too) and when the learning curves below it were, in
ms after the page was opened; then it picks another metric and times its redraw, and opens the
page again in the same browser. Prints one line per number; the README's board paragraph quotes them.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, too

from synthetic_store import PER_FLUSH, build_store  # noqa: E402

from rlv import columns as col  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def start_board(store: Path | str, sweep: str) -> tuple[subprocess.Popen[str], str, float]:
    start = time.perf_counter()
    board = subprocess.Popen([sys.executable, "-m", "rlv.cli", "board", str(store), "--sweep",
                              sweep, "--port", "0"], stdout=subprocess.PIPE, text=True,
                             start_new_session=True)
    assert board.stdout is not None
    line = board.stdout.readline()
    found = re.search(r"http://127\.0\.0\.1:\d+", line)
    if not found:
        board.kill()
        raise SystemExit(f"rlv board did not start: {line}{board.communicate()[0]}")
    return board, found.group(0), time.perf_counter() - start


def one_run(playwright: Any, url: str, folder: Path, screenshot: Path | None) -> dict[str, float]:
    """A fresh browser profile opens the board; when the page says it drew the first document."""
    context = playwright.chromium.launch_persistent_context(
        tempfile.mkdtemp(dir=folder), executable_path=CHROMIUM, headless=True, args=FLAGS,
        viewport={"width": 1600, "height": 1000})
    try:
        page = context.new_page()
        page.goto(url)
        page.wait_for_function("window.rlvBoard && window.rlvBoard.renders > 0", timeout=120_000)
        board = page.evaluate("({tables: window.rlvBoard.firstTablesMs, "
                              "charts: window.rlvBoard.firstRenderMs, "
                              "curves: window.rlvBoard.firstCurvesMs, "
                              "draw: window.rlvBoard.lastDraw})")
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=True)
        # another metric: the document is computed (statistics, ANOVA) and drawn anew
        start = page.evaluate("performance.now()")
        page.select_option("#metric", col.TEST_RE)
        page.wait_for_function(f"document.body.dataset.metric === '{col.TEST_RE}'",
                               timeout=120_000)
        switched = page.evaluate("performance.now()") - start
        # the same page opened again in this browser: BokehJS (and its compiled code) cached
        page = context.new_page()
        page.goto(url)
        page.wait_for_function("window.rlvBoard && window.rlvBoard.renders > 0", timeout=120_000)
        again = page.evaluate("window.rlvBoard.firstRenderMs")
        return {"tables": board["tables"], "charts": board["charts"], "curves": board["curves"],
                "switch": switched, "again": again}
    finally:
        context.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=2016, help="trials of the built store")
    parser.add_argument("--store", default=None, help="time this store instead of building one")
    parser.add_argument("--sweep", default="scale", help="the sweep to show")
    parser.add_argument("--runs", type=int, default=5, help="page loads, each in a fresh profile")
    parser.add_argument("--screenshot", type=Path, default=None, help="PNG of the first run")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trial of the built store")
    parser.add_argument("--mid-run", action="store_true",
                        help="build the store as a sweep mid-run leaves it (README's screenshot: "
                             "--trials 120 --epochs 20 --mid-run --sweep demo --runs 1 "
                             "--screenshot ...)")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    folder = Path(tempfile.mkdtemp(prefix="rlv-board-bench-"))
    store: Path | str = args.store or folder / "store"
    if args.store is None:
        start = time.perf_counter()
        files = build_store(Path(store), args.trials, args.sweep, args.epochs, args.mid_run,
                            flush=PER_FLUSH)
        print(f"built {store}: {args.trials:,} trials, {files} batch files per table, in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
    print(f"load average before: {os.getloadavg()[0]:.2f} (on {os.cpu_count()} CPUs)", flush=True)
    board, url, started = start_board(store, args.sweep)
    print(f"rlv board start-up (process start to listening, store read, first document "
          f"computed): {started:.2f} s", flush=True)
    runs = []
    try:
        with sync_playwright() as playwright:
            for k in range(args.runs):
                runs.append(one_run(playwright, url, folder, args.screenshot if k == 0 else None))
                print(f"run {k + 1}: grid and tables {runs[-1]['tables']:.0f} ms, first "
                      f"screen (cell means drawn) {runs[-1]['charts']:.0f} ms, curves too "
                      f"{runs[-1]['curves']:.0f} ms, another metric {runs[-1]['switch']:.0f} ms, "
                      f"opened again {runs[-1]['again']:.0f} ms", flush=True)
    finally:
        board.terminate()
        board.wait(timeout=30)
    for key, what in (("tables", "grid and tables shown"),
                      ("charts", "first render (the first screen: grid, tables, cell means)"),
                      ("curves", "the learning curves below it drawn too"),
                      ("switch", "another metric drawn"),
                      ("again", "first render, opened again in the same browser")):
        values = [r[key] for r in runs]
        print(f"{what}: median {statistics.median(values):.0f} ms (min {min(values):.0f}, max "
              f"{max(values):.0f}, {len(values)} runs)", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
