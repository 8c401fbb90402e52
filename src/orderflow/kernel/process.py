"""What the long-running processes (api, relay, worker) share: signals, metrics, the event loop,
the garbage collector's settings."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import signal
import threading
from collections.abc import Callable, Coroutine, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import make_wsgi_app

from orderflow.observability.metrics import ProcessRegistry

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux ``prctl``), so
    that a supervisor killed outright leaves no orphans."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def install_stop_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, for a graceful stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def settle_heap() -> None:
    """Call once a process has started: what exists now lives as long as the process.

    CPython's full collections walk every tracked object: an API process holds about 100,000
    of them once started (FastAPI, pydantic, the routes' models). Under ``place`` each full
    collection of an API worker took 50-90 ms, one or two a second: they were the p99
    latency. Freezing the start-up heap leaves it out of every later collection. Reference
    counting still frees everything that is not in a cycle, and cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def serve_metrics(
    port: int | None,
    *,
    process: str,
    health: Callable[[], dict[str, Any]] | None = None,
    ready: Callable[[], dict[str, Any]] | None = None,
) -> None:
    """Expose /metrics (``process``'s own metrics: ``metrics.ProcessRegistry``), /healthz when
    ``health`` is given and /readyz when ``ready`` is given, on ``port`` (in a background
    thread) when one is given.

    /healthz answers 200 while ``health()["status"]`` is "ok", 503 otherwise; /readyz answers
    200 while ``ready()["status"]`` is "ready" (the process can do its work: for the relay and
    the worker, the broker is connected), 503 otherwise. Being a thread,
    it still answers (503) while the event loop is blocked: that is how a stuck loop is seen
    (``kernel.duties.LoopWatch``); a paused or dead process does not answer at all.
    """
    if not port:
        return
    metrics_app = make_wsgi_app(ProcessRegistry(process))

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO")
        probe = {"/healthz": (health, "ok"), "/readyz": (ready, "ready")}.get(path or "")
        if probe is not None and probe[0] is not None:
            body = probe[0]()
            status = "200 OK" if body.get("status") == probe[1] else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [orjson.dumps(body)]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]

    server = make_server(
        "0.0.0.0", port, app, server_class=_ThreadingServer, handler_class=_QuietHandler
    )
    threading.Thread(target=server.serve_forever, name="ops-http", daemon=True).start()


def broker_readiness(connected: Callable[[], asyncio.Event | None]) -> Callable[[], dict[str, Any]]:
    """The /readyz body of a process that needs the broker to work: ready while the event
    ``connected()`` returns is set (None: not started yet)."""

    def ready() -> dict[str, Any]:
        event = connected()
        up = event is not None and event.is_set()
        return {"status": "ready" if up else "not_ready", "broker": "up" if up else "down"}

    return ready


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes are not logged (one line each, every few seconds)."""


async def first_of(*aws: Coroutine[Any, Any, Any]) -> None:
    """Wait until the first of ``aws`` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop."""
    import uvloop

    uvloop.run(main)
