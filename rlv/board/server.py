"""The board's web server: aiohttp on 127.0.0.1, the page, its static files and two JSON routes.

    GET /                         the page (static/board.html)
    GET /static/{board.js,charts.js,board.css}
    GET /static/{bokeh.min.js,bokeh-api.min.js}   BokehJS, from the installed `bokeh` package
    GET /api/state?metric=M[&since=V]   the page's JSON document (data.py)
    GET /api/anova?metric=M       the metric's ANOVA (data.py), fitted apart: it may take seconds

Why aiohttp: it is a small, complete asyncio HTTP server that rlv already installs (Ray's
dashboard runs on it: ray[default] depends on it), so the board adds no server dependency of its
own and needs no separate ASGI server. Reading the store and fitting the ANOVA are blocking
pandas and statsmodels work: they run in a worker thread, so the server keeps answering.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib.util
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from rlv.board.config import HOST, BoardConfig
from rlv.board.data import BoardData
from rlv.board.stats import METRICS
from rlv.errors import RlvError
from rlv.store.files import first_line

STATIC = Path(__file__).resolve().parent / "static"
PAGE_FILES = {"board.js": "text/javascript", "charts.js": "text/javascript",
              "board.css": "text/css"}
CACHE = "public, max-age=86400"  # BokehJS does not change while rlv's pins hold
BOKEH_FILES = ("bokeh.min.js", "bokeh-api.min.js")  # the library, and its plotting API

BOARD_KEY = web.AppKey("board", BoardData)


def bokeh_js(name: str) -> Path:
    """A BokehJS file as the `bokeh` Python package ships it (found without importing bokeh:
    the board builds no figure in Python)."""
    found = importlib.util.find_spec("bokeh")
    for folder in list(found.submodule_search_locations or []) if found else []:
        path = Path(folder) / "server" / "static" / "js" / name
        if path.is_file():
            return path
    raise RlvError(f"{name} not found: install rlv's dependencies (pip install -e .), which "
                   "include the bokeh package that ships it")


async def _page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "board.html", headers={"Cache-Control": "no-cache"})


async def _no_icon(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204)  # no icon: said at once, so browsers do not log a 404


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name in BOKEH_FILES:
        return web.FileResponse(bokeh_js(name), headers={"Cache-Control": CACHE,
                                                         "Content-Type": "text/javascript"})
    if name not in PAGE_FILES:
        raise web.HTTPNotFound(text=f"no file {name}")
    return web.FileResponse(STATIC / name, headers={"Cache-Control": "no-cache",
                                                    "Content-Type": PAGE_FILES[name]})


async def _answer(request: web.Request, work: Callable[..., dict[str, Any]],
                  *args: str) -> web.Response:
    """JSON from `work(metric, *args)`, run in a worker thread (it reads the store and fits)."""
    metric = request.query.get("metric", METRICS[0])
    if metric not in METRICS:
        return web.json_response({"error": f"unknown metric {metric!r}; the board shows "
                                           f"{', '.join(METRICS)}"}, status=400)
    loop = asyncio.get_running_loop()
    try:
        document = await loop.run_in_executor(None, work, metric, *args)
    except RlvError as exc:  # shown on the page, which keeps polling (a store back online heals)
        return web.json_response({"error": str(exc)}, status=503)
    # allow_nan=False: JSON has no NaN (a browser refuses the whole document); data.py sends None
    return web.json_response(document, headers={"Cache-Control": "no-store"},
                             dumps=functools.partial(json.dumps, allow_nan=False))


async def _state(request: web.Request) -> web.Response:
    board = request.app[BOARD_KEY]
    return await _answer(request, board.poll, request.query.get("since", ""))


async def _anova(request: web.Request) -> web.Response:
    return await _answer(request, request.app[BOARD_KEY].anova)


def make_app(board: BoardData) -> web.Application:
    app = web.Application()
    app[BOARD_KEY] = board
    app.router.add_get("/", _page)
    app.router.add_get("/static/{name}", _static)
    app.router.add_get("/api/state", _state)
    app.router.add_get("/api/anova", _anova)
    app.router.add_get("/favicon.ico", _no_icon)
    return app


def absolute_store(store: str) -> str:
    """A local store as an absolute path (the lines the page shows work from any folder)."""
    return store if "://" in store else str(Path(store).expanduser().resolve())


async def _serve(board: BoardData, port: int, echo: Callable[[str], None]) -> None:
    runner = web.AppRunner(make_app(board), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, HOST, port)
        try:
            await site.start()
        except OSError as exc:
            raise RlvError(f"cannot serve the board on {HOST}:{port}: {first_line(exc)}; give "
                           "another --port (0: any free one)") from None
        bound = runner.addresses[0][1]  # the port itself where 0 asked for any free one
        echo(f"rlv board: http://{HOST}:{bound}  (sweep {board.sweep} in store "
             f"{board.config.store}; Ctrl-C stops it)")
        await asyncio.Event().wait()  # serve until interrupted
    finally:
        await runner.cleanup()


def _quietly(work: Callable[[str], Any], metric: str) -> None:
    try:
        work(metric)
    except RlvError:
        pass


def serve_board(config: BoardConfig, echo: Callable[[str], None]) -> None:
    """Serve the board of `config` until Ctrl-C. The store is read (and refused in one line if it
    is missing or no store) before the server listens, so the first page is drawn at once."""
    config = dataclasses.replace(config, store=absolute_store(config.store))
    for name in BOKEH_FILES:  # a missing bokeh is one line now, not a broken page later
        bokeh_js(name)
    board = BoardData(config)
    board.poll(METRICS[0])  # the first snapshot: reads the store, warms the cache
    # the first ANOVA is fitted meanwhile; a failure here is the page's to show when it asks
    threading.Thread(target=_quietly, args=(board.anova, METRICS[0]), daemon=True).start()
    try:
        asyncio.run(_serve(board, config.port, echo))
    except KeyboardInterrupt:
        echo("rlv board stopped")
