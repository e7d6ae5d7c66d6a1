"""`rlv board`'s data and server, on a store written by rlv's own StoreWriter (real Parquet
batches, the sweep's manifest from rlv's planner, a driver's status file): what the page is
served is checked against independent computations on the store's files (pandas group-bys, a
t interval, statsmodels' own ANOVA), and the server runs as a process where torch and Ray cannot
be imported (tests/blocked.py), listening on 127.0.0.1 only.

The browser, driving the board during a real sweep, is tests/test_board_browser.py.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from blocked import LEAK, make_shims, run_rlv, start_rlv
from conftest import stop_process_group
from scipy import stats
from statsmodels.stats.anova import anova_lm
from typer.testing import CliRunner, Result

from rlv import columns as col
from rlv.board.config import BoardConfig, board_command
from rlv.board.data import BoardData
from rlv.board.server import BOKEH_FILES, bokeh_js
from rlv.cli import app
from rlv.store.manifest import write_manifest
from rlv.store.plan import plan_sweep
from rlv.store.store import Store
from rlv.store.writer import StoreWriter
from rlv.sweep.spec import parse_sweep

SWEEP = "boarded"
FACTORS = {"encoder": ["L", "NL"], "layer": ["fc", "conv"], "prior": ["normal", "flow2"]}
FACTOR_COLUMNS = list(FACTORS)
SEEDS = 3
EPOCHS = 4
EFFECT = {"L": 0.0, "NL": 6.0, "fc": 0.0, "conv": 2.0, "normal": 0.0, "flow2": -3.0}
BASE = {col.TEST_NEG_ELBO: 100.0, col.TEST_RE: 90.0, col.TEST_RT: -10.0, col.FID: 40.0,
        col.EPOCH_TIME_S: 20.0}
# the trials of seed 2 beyond the finished ones: one running, one failed, the rest pending
RUNNING, RUNNING_EPOCH = "L-conv-flow2-s2", 2
FAILED, REASON = "NL-fc-normal-s2", "RlvError: the loss diverged (nan) at epoch 3"
NO_FID = "L-fc-normal-s1"  # its FID is NaN (not measured): left out, not counted
INFINITE_RT = "NL-conv-flow2-s0"  # its RT is inf (diverged): left out, not counted


def sweep_spec(store: Path | str) -> Any:
    return parse_sweep({"name": SWEEP, "store": str(store), "factors": FACTORS, "seeds": SEEDS,
                        "settings": {"train": {"epochs": EPOCHS}},
                        "resources": {"cpu": 1, "gpu": 0}}, source=SWEEP)


def write_board_store(store: Path | str, finished: set[str], running: dict[str, int],
                      failed: dict[str, str], ended: bool = False) -> dict[str, str]:
    """The store a driver leaves mid-sweep; returns each grid trial's state as the board should
    show it (what this test decided, not what the board computes)."""
    spec = sweep_spec(store)
    plan = plan_sweep(spec, Store.open(store))
    configs = plan.trial_configs()
    write_manifest(Store.open(store), plan.manifest, trials_run=len(configs))
    writer = StoreWriter(Store.open(store), SWEEP)
    rng = np.random.default_rng(7)
    expected = {}
    for k, cfg in enumerate(configs):
        m = cfg.model
        levels = {col.ENCODER: m.encoder, col.LAYER: m.layer, col.PRIOR: m.prior,
                  col.DATASET: cfg.data.dataset, col.OBJECTIVE: cfg.train.objective,
                  col.SEED: cfg.seed}
        effect = EFFECT[m.encoder] + EFFECT[m.layer] + EFFECT[m.prior]
        epochs = EPOCHS if cfg.name in finished else running.get(cfg.name, 0)
        writer.queue_epochs([{col.TRIAL_ID: cfg.name, col.EPOCH: e, **levels,
                              col.TRAIN_NEG_ELBO: 100 + effect + 20 / e + rng.normal(),
                              col.TRAIN_RE: 90 + effect + 20 / e + rng.normal(),
                              col.TRAIN_RT: -10 - effect + rng.normal(),
                              col.EPOCH_TIME_S: 2 + rng.normal(0, 0.1)}
                             for e in range(1, epochs + 1)])
        if cfg.name in finished:
            row = {col.TRIAL_ID: cfg.name, **levels, col.SWEEP_FACTORS: ",".join(FACTORS),
                   col.EPOCHS: EPOCHS, col.FID_SAMPLES: 100, col.TRIAL_SECONDS: 10.0,
                   col.CONFIG: cfg.to_json()}
            row.update({m_: base + effect + rng.normal() for m_, base in BASE.items()})
            if cfg.name == NO_FID:
                row[col.FID] = float("nan")
            if cfg.name == INFINITE_RT:
                row[col.TEST_RT] = float("inf")
            writer.queue_trial(row, {})
            expected[cfg.name] = "done"
        else:
            expected[cfg.name] = ("running" if cfg.name in running else
                                  "failed" if cfg.name in failed else "pending")
        if k == len(configs) // 2:
            writer.flush()  # two batch files per table, as two of the driver's flushes
    writer.flush()
    trials = {name: {"status": "RUNNING", "epoch": epoch, "node": "127.0.0.1 pid 1"}
              for name, epoch in running.items()}
    trials.update({name: {"status": "ERROR", "error": reason} for name, reason in failed.items()})
    # the driver: this test's own process, alive while the test runs
    writer.write_status({"sweep": SWEEP, "updated_at": datetime.now(UTC).isoformat(),
                         "ended": ended, "driver": f"{socket.gethostname()}:{os.getpid()}",
                         "trials": trials})
    return expected


def grid_names() -> list[str]:
    cells = [f"{e}-{la}-{p}" for e in FACTORS["encoder"] for la in FACTORS["layer"]
             for p in FACTORS["prior"]]
    return [f"{cell}-s{seed}" for cell in cells for seed in range(SEEDS)]


def mid_sweep(store: Path) -> dict[str, str]:
    """Seeds 0 and 1 of every cell finished (the ANOVA is due), seed 2 of three cells too."""
    finished = {n for n in grid_names() if not n.endswith("-s2")}
    finished |= {"L-fc-normal-s2", "L-fc-flow2-s2", "L-conv-normal-s2"}
    return write_board_store(store, finished, {RUNNING: RUNNING_EPOCH}, {FAILED: REASON})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("board") / "store"
    return root, mid_sweep(root)


@pytest.fixture(scope="module")
def board(store: tuple[Path, dict[str, str]]) -> BoardData:
    return BoardData(BoardConfig(store=str(store[0])))


def finite(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    return frame[np.isfinite(frame[metric].astype(float))]


def test_the_grid_shows_every_trial_in_its_state_and_the_progress(
        store: tuple[Path, dict[str, str]], board: BoardData) -> None:
    _, expected = store
    doc = board.poll(col.TEST_NEG_ELBO)
    assert doc["sweep"] == SWEEP and doc["grid"]["seeds"] == list(range(SEEDS))
    shown = {t["id"]: t for cell in doc["grid"]["cells"] for t in cell["trials"]}
    assert {name: t["state"] for name, t in shown.items()} == expected
    assert shown[RUNNING]["epoch"] == RUNNING_EPOCH and shown[FAILED]["reason"] == REASON
    # one row per cell in the sweep's order, its trials in seed order
    assert [c["name"] for c in doc["grid"]["cells"]] == list(dict.fromkeys(
        n.rsplit("-s", 1)[0] for n in grid_names()))
    assert [t["id"] for c in doc["grid"]["cells"] for t in c["trials"]] == grid_names()
    counts = pd.Series(expected).value_counts()
    progress = doc["progress"]
    assert {k: progress[k] for k in ("done", "running", "failed", "pending", "total")} == {
        "done": counts["done"], "running": 1, "failed": 1, "pending": counts["pending"],
        "total": len(expected)}
    # in the words of `rlv status` and the terminal
    assert progress["text"] == (f"{counts['done']} finished, 1 running, 1 failed, "
                                f"{counts['pending']} pending (of {len(expected)})")
    assert not progress["complete"] and progress["remaining"].startswith("remaining: about ")
    assert progress["driver"].endswith(": running")
    store_path = str(store[0])
    assert doc["links"]["tensorboard"] == (f"tensorboard --logdir {store_path}/tensorboard/"
                                           f"{SWEEP} --host 127.0.0.1")
    assert doc["links"]["dashboard"] == "http://127.0.0.1:8265"


@pytest.mark.parametrize("metric", [col.TEST_NEG_ELBO, col.TEST_RE, col.TEST_RT, col.FID,
                                    col.EPOCH_TIME_S])
def test_cell_means_and_intervals_are_pandas_group_means_with_t_intervals(
        store: tuple[Path, dict[str, str]], board: BoardData, metric: str) -> None:
    trials = finite(pd.read_parquet(store[0] / col.TRIALS_TABLE), metric)
    groups = trials.groupby(FACTOR_COLUMNS)[metric]
    served = {tuple(s["levels"][f] for f in FACTOR_COLUMNS): s
              for s in board.poll(metric)["stats"]}
    assert len(served) == 8
    for levels, values in groups:
        s = served[levels]
        n = len(values)
        assert s["n"] == n and s["mean"] == pytest.approx(values.mean(), rel=1e-12)
        if n == 1:  # no interval from one value
            assert s["lower"] is None and s["upper"] is None
            continue
        half = stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / math.sqrt(n)
        assert s["lower"] == pytest.approx(values.mean() - half, rel=1e-12)
        assert s["upper"] == pytest.approx(values.mean() + half, rel=1e-12)
    # left out and not counted: a NaN FID, an infinite RT
    if metric in (col.FID, col.TEST_RT):
        assert sum(s["n"] for s in served.values()) == 18
    # the interaction plot: encoder on x, a line per prior, a panel per layer
    chart = board.poll(metric)["interaction"]
    assert (chart["x_factor"], chart["x_levels"]) == ("encoder", FACTORS["encoder"])
    assert (chart["line_factor"], chart["lines"]) == ("prior", FACTORS["prior"])
    assert [p["title"] for p in chart["panels"]] == ["layer = fc", "layer = conv"]
    for panel, layer in zip(chart["panels"], FACTORS["layer"], strict=True):
        for series, prior in zip(panel["series"], FACTORS["prior"], strict=True):
            cells = [served[(e, layer, prior)] for e in FACTORS["encoder"]]
            assert series["line"] == prior and series["x"] == FACTORS["encoder"]
            for key in ("mean", "lower", "upper", "n"):
                assert series[key] == [c[key] for c in cells]


@pytest.mark.parametrize("metric,column", [(col.TEST_NEG_ELBO, col.TRAIN_NEG_ELBO),
                                           (col.TEST_RE, col.TRAIN_RE),
                                           (col.FID, col.TRAIN_NEG_ELBO)])
def test_learning_curves_are_the_seeds_mean_and_range_per_epoch(
        store: tuple[Path, dict[str, str]], board: BoardData, metric: str, column: str) -> None:
    epochs = pd.read_parquet(store[0] / col.EPOCHS_TABLE)
    chart = board.poll(metric)["curves"]
    names = [c["name"] for c in chart["cells"]]
    assert names == list(dict.fromkeys(n.rsplit("-s", 1)[0] for n in grid_names()))
    assert chart["epoch_step"] == 1
    for cell in chart["cells"]:
        encoder, layer, prior = cell["name"].split("-")
        rows = epochs[(epochs[col.ENCODER] == encoder) & (epochs[col.LAYER] == layer)
                      & (epochs[col.PRIOR] == prior)]
        per_epoch = rows.groupby(col.EPOCH)[column].agg(["mean", "min", "max", "count"])
        assert cell["epoch"] == list(per_epoch.index)
        assert cell["mean"] == pytest.approx(list(per_epoch["mean"]), rel=1e-12)
        # the band: between the lowest and the highest seed
        assert cell["low"] == pytest.approx(list(per_epoch["min"]), rel=1e-12)
        assert cell["high"] == pytest.approx(list(per_epoch["max"]), rel=1e-12)
        assert cell["seeds"] == list(per_epoch["count"])
    # the running trial's committed epochs are drawn: its cell has a third seed at epoch 1
    running = chart["cells"][names.index(RUNNING.rsplit("-s", 1)[0])]
    assert running["seeds"][:RUNNING_EPOCH] == [3] * RUNNING_EPOCH


@pytest.mark.parametrize("metric,terms", [
    (col.TEST_RE, "C(encoder, Sum) * C(layer, Sum) * C(prior, Sum)"),  # the thesis's models
    (col.TEST_NEG_ELBO, "C(encoder, Sum) * C(layer, Sum) + C(prior, Sum)"),
])
def test_the_anova_is_statsmodels_type_iii_and_provisional_while_the_sweep_runs(
        store: tuple[Path, dict[str, str]], board: BoardData, metric: str, terms: str) -> None:
    doc = board.poll(metric)
    assert doc["anova"]["due"] and doc["anova"]["key"].endswith(f":{metric}")
    anova = board.anova(metric)
    assert anova["shown"] and anova["provisional"] and anova["key"] == doc["anova"]["key"]
    trials = finite(pd.read_parquet(store[0] / col.TRIALS_TABLE), metric)
    fit = smf.ols(f"{metric} ~ {terms}", trials).fit()
    expected = anova_lm(fit, typ=3)
    served = {r["term"]: r for r in anova["rows"]}
    for name, row in expected.iterrows():
        factors = re.findall(r"C\((\w+), Sum\)", str(name))
        if not factors:
            continue  # the intercept and the residual
        r = served[":".join(factors)]
        assert r["df"] == row["df"] and r["resid_df"] == fit.df_resid
        assert r["F"] == pytest.approx(row["F"], rel=1e-9)
        assert r["p"] == pytest.approx(row["PR(>F)"], rel=1e-6, abs=1e-300)
    assert len(served) == len(expected) - 2


def test_the_anova_waits_until_every_cell_has_two_seeds_and_is_final_when_all_are_in(
        tmp_path: Path) -> None:
    # one cell has a single finished seed: no ANOVA yet, and the page says why
    names = grid_names()
    finished = {n for n in names if n.endswith("-s0")} | {n for n in names if n.endswith("-s1")}
    finished.discard("NL-conv-normal-s1")
    write_board_store(tmp_path / "early", finished, {}, {})
    early = BoardData(BoardConfig(store=str(tmp_path / "early")))
    due = early.poll(col.TEST_RE)["anova"]
    assert not due["due"]
    assert due["note"] == ("the ANOVA shows once every cell has 2 finished seeds: 1 of 8 cells "
                           "have fewer")
    assert not early.anova(col.TEST_RE)["shown"]
    # every trial in: the ANOVA is final
    write_board_store(tmp_path / "done", set(names), {}, {}, ended=True)
    done = BoardData(BoardConfig(store=str(tmp_path / "done")))
    doc = done.poll(col.TEST_RE)
    assert doc["progress"]["complete"] and doc["progress"]["done"] == len(names)
    anova = done.anova(col.TEST_RE)
    assert anova["shown"] and not anova["provisional"] and anova["rows"]


def test_a_poll_that_names_its_version_gets_nothing_new_until_the_store_moves(
        tmp_path: Path) -> None:
    root = tmp_path / "store"
    names = grid_names()
    write_board_store(root, {names[0]}, {names[1]: 1}, {})
    board = BoardData(BoardConfig(store=str(root)))
    first = board.poll(col.TEST_RE)
    assert board.poll(col.TEST_RE, since=first["version"]) == {"version": first["version"],
                                                               "unchanged": True}
    assert board.poll(col.FID, since=first["version"])["metric"] == col.FID  # another metric
    # the driver writes the next trial's row: the grid moves, and the document with it
    write_board_store(root, {names[0], names[1]}, {names[2]: 3}, {})
    moved = board.poll(col.TEST_RE, since=first["version"])
    assert moved["version"] != first["version"]
    states = {t["id"]: t["state"] for c in moved["grid"]["cells"] for t in c["trials"]}
    assert (states[names[1]], states[names[2]]) == ("done", "running")


def test_a_store_given_as_a_uri_is_read_through_its_filesystem() -> None:
    # fsspec's memory:// goes through the same pyarrow filesystem calls as s3:// or gs://
    root = "memory://rlv-board-test/store"
    names = grid_names()
    expected = write_board_store(root, set(names[:4]), {names[4]: 2}, {names[5]: REASON})
    doc = BoardData(BoardConfig(store=root)).poll(col.TEST_NEG_ELBO)
    assert {t["id"]: t["state"] for c in doc["grid"]["cells"] for t in c["trials"]} == expected
    assert doc["links"]["tensorboard"].startswith(f"tensorboard --logdir {root}/tensorboard/")
    assert [s["n"] for s in doc["stats"]][:2] == [3, 1]


# --- the server, as a process that cannot import torch or Ray ---------------------------------


@pytest.fixture(scope="module")
def shims(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_shims(tmp_path_factory.mktemp("shims"))


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_rlv_board_serves_the_page_bokehjs_and_the_data_on_127_0_0_1_without_torch_or_ray(
        store: tuple[Path, dict[str, str]], board: BoardData, shims: Path,
        tmp_path: Path) -> None:
    import psutil

    server = start_rlv(shims, "board", str(store[0]), "--port", "0", cwd=tmp_path)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        found = re.fullmatch(r"rlv board: (http://127\.0\.0\.1:(\d+))  \(sweep boarded in store "
                             r"(.+); Ctrl-C stops it\)\n", line)
        assert found, line + (server.communicate(timeout=30)[1] if server.poll() is not None
                              else "")
        url, port = found.group(1), int(found.group(2))
        assert found.group(3) == str(store[0])
        # listening on the loopback address only
        listening = [c.laddr for c in psutil.Process(server.pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN]
        assert [(a.ip, a.port) for a in listening] == [("127.0.0.1", port)]

        status, page = get(f"{url}/")
        assert status == 200 and b'src="/static/bokeh.min.js"' in page
        for name in BOKEH_FILES:  # from the installed package
            status, script = get(f"{url}/static/{name}")
            assert status == 200 and script == bokeh_js(name).read_bytes()
        status, body = get(f"{url}/static/charts.js")
        assert status == 200 and b"Bokeh.Plotting.figure" in body
        status, body = get(f"{url}/api/state?metric={col.TEST_RE}")
        served = json.loads(body)
        assert status == 200 and served == json.loads(json.dumps(board.poll(col.TEST_RE)))
        status, body = get(f"{url}/api/anova?metric={col.TEST_RE}")
        assert status == 200 and json.loads(body) == json.loads(json.dumps(
            board.anova(col.TEST_RE)))
        status, body = get(f"{url}/api/state?metric=accuracy")
        assert status == 400 and json.loads(body)["error"].startswith("unknown metric 'accuracy'")
        status, _ = get(f"{url}/static/secrets.txt")
        assert status == 404
    finally:
        stop_process_group(server)  # type: ignore[arg-type]
        _, stderr = server.communicate(timeout=30)
    assert LEAK not in stderr, stderr


def one_error_line(out: Any) -> str:
    """A user mistake: exit code 2, nothing on stdout, one line on stderr (no traceback)."""
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == "" and len(out.stderr.splitlines()) == 1, out.stderr
    return str(out.stderr.strip())


def test_a_missing_store_or_a_folder_that_is_no_store_is_one_line_without_torch_or_ray(
        shims: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no-store"
    error = one_error_line(run_rlv(shims, "board", str(missing), cwd=tmp_path))
    assert error == (f"error: store {missing} does not exist (nothing was launched into it); "
                     "check the path or URI")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.png").write_bytes(b"\x89PNG")
    error = one_error_line(run_rlv(shims, "board", str(folder), cwd=tmp_path))
    assert error == (f"error: {folder} is not an rlv store: it holds none of _sweeps/, trials/, "
                     "epochs/, _status/; name the folder or URI that `rlv launch` wrote")


def rlv(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def one_line(out: Result) -> str:
    assert out.exit_code == 2, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stdout + out.stderr, out.stderr
    return lines[0]


def test_other_mistakes_are_one_line_each(store: tuple[Path, dict[str, str]],
                                          tmp_path: Path) -> None:
    root = str(store[0])
    file = tmp_path / "results.txt"
    file.write_text("not a store")
    assert one_line(rlv("board", str(file))).startswith(f"error: store '{file}' is a file, not a "
                                                        "folder")
    assert one_line(rlv("board", root, "--sweep", "nope")) == (
        f"error: store {root} holds no sweep 'nope' (sweeps there: {SWEEP})")
    assert one_line(rlv("board", root, "--port", "70000")) == (
        "error: --port 70000: a port is a number from 1 to 65535 (0: any free one)")
    # two sweeps in one store: which one is for the user to say
    two = tmp_path / "two"
    for name in ("a", "b"):
        spec = parse_sweep({"name": name, "factors": {"encoder": ["L"]}}, source=name)
        write_manifest(Store.open(two), plan_sweep(spec, Store.open(two)).manifest, trials_run=1)
    assert one_line(rlv("board", str(two))) == (
        f"error: store {two} holds several sweeps (a, b): name one with --sweep")
    # a port that is taken
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        error = one_line(rlv("board", root, "--port", str(port)))
    assert error.startswith(f"error: cannot serve the board on 127.0.0.1:{port}: ")
    assert error.endswith("; give another --port (0: any free one)")


def test_the_board_line_names_the_store_and_sweep_and_a_dashboard_that_is_not_the_default(
        ) -> None:
    assert board_command("/data/my results", "quick") == "rlv board '/data/my results' --sweep quick"
    assert board_command("s3://b/rlv", "quick", "http://127.0.0.1:8265") == (
        "rlv board s3://b/rlv --sweep quick")
    assert board_command("s3://b/rlv", "quick", "http://127.0.0.1:8270/") == (
        "rlv board s3://b/rlv --sweep quick --dashboard http://127.0.0.1:8270")


def test_the_jobs_metadata_carries_the_board_line() -> None:
    from rlv.service.dashboard import job_metadata

    assert job_metadata("quick", "s3://b/rlv") == {
        "job_name": "rlv sweep quick", "rlv_sweep": "quick",
        "rlv_board": "rlv board s3://b/rlv --sweep quick"}
    assert "rlv_board" not in job_metadata("quick")  # no store known: no line
