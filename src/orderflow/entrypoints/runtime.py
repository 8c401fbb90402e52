"""What the long-running processes (relay, worker) share: signals, metrics, the event loop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any

from prometheus_client import start_http_server


def install_stop_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT, for a graceful stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def serve_metrics(port: int | None) -> None:
    """Expose /metrics on ``port`` (in a background thread) when one is given."""
    if port:
        start_http_server(port, addr="0.0.0.0")


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
