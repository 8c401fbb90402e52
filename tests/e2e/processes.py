"""Running the real processes of a test on a database of their own: start, wait, stop."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from orderflow.kernel.database import database_name, drop_database, ensure_database, with_database
from orderflow.settings import Settings
from tests.conftest import migrate

CLI = [sys.executable, "-m", "orderflow.entrypoints.cli"]


@asynccontextmanager
async def own_database(settings: Settings, suffix: str) -> AsyncIterator[str]:
    """A migrated database named after this run's and ``suffix``; dropped afterwards."""
    dsn = with_database(settings.dsn(), f"{database_name(settings.dsn())}_{suffix}")
    await ensure_database(dsn)
    await migrate(dsn)
    try:
        yield dsn
    finally:
        if not os.environ.get("ORDERFLOW_KEEP_TEST_DB"):
            await drop_database(dsn)


def start(args: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``orderflow <args>`` in a session of its own, its output in ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [*CLI, *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


async def wait_ready(
    urls: Sequence[str], procs: Sequence[subprocess.Popen[bytes]], log: Path, timeout_s: float = 60
) -> None:
    """Until every URL answers 200; fails if a process exits first or time runs out."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert all(p.poll() is None for p in procs), f"a process exited:\n{_tail(log)}"
        assert time.monotonic() < deadline, f"not ready in {timeout_s} s:\n{_tail(log)}"
        try:
            if all(httpx.get(url, timeout=1).status_code == 200 for url in urls):
                return
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)


def stop(procs: Sequence[subprocess.Popen[bytes]], timeout_s: float = 20) -> None:
    """SIGCONT (one may be paused) and SIGTERM to each; SIGKILL to what is left after that."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGCONT)
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive free ports (``up`` numbers its metrics ports so)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count > 65535:
            continue
        try:
            for port in range(first, first + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise AssertionError(f"no {count} consecutive free ports")
