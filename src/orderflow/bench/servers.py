"""Servers under test as subprocesses: start, wait until ready, measure memory, stop.

Each server runs in its own session (process group) so that stopping it reaches every worker
process uvicorn or ``orderflow up`` forked, and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from orderflow.bench.http import HttpError, get


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive TCP ports nobody listens on right now."""
    for _ in range(100):
        base = free_port()
        try:
            for port in range(base + 1, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except (OSError, OverflowError):  # taken, or past the last port
            continue
        return base
    raise RuntimeError(f"found no {count} consecutive free ports")


def orderflow_command(*args: str) -> list[str]:
    """``orderflow ARGS`` with this interpreter (works in a virtualenv that is not active)."""
    return [sys.executable, "-m", "orderflow.entrypoints.cli", *args]


def rss_kb(pid: int) -> int | None:
    """Resident memory of ``pid`` from /proc (VmRSS), None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def command_line(pid: int) -> str:
    """A short name for a process: its command line without the interpreter path."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    words = [w.decode(errors="replace") for w in raw if w]
    words = [w for w in words if not w.endswith(("python", "python3")) and w not in ("-m", "-c")]
    text = " ".join(words).replace("orderflow.entrypoints.cli", "orderflow")
    return text[:80]


@dataclass
class Server:
    """A server process group started by the bench."""

    name: str
    port: int
    process: asyncio.subprocess.Process
    log_path: Path
    rss_start: dict[int, int] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def sample_rss(self) -> dict[int, int]:
        """RSS in kB of every process of the server now."""
        out = {}
        for pid in process_tree(self.pid):
            kb = rss_kb(pid)
            if kb is not None:
                out[pid] = kb
        return out

    def mark_rss_start(self) -> None:
        """Remember the memory of each process once the server is warm."""
        self.rss_start = self.sample_rss()

    def rss_report(self) -> list[dict[str, object]]:
        """Per process: start and end RSS in MB and whether it grew (> 10 % and > 5 MB)."""
        end = self.sample_rss()
        rows = []
        for pid, kb in sorted(end.items()):
            start = self.rss_start.get(pid)
            grew = start is not None and kb - start > max(5 * 1024, start // 10)
            rows.append(
                {
                    "pid": pid,
                    "process": command_line(pid),
                    "rss_start_mb": round(start / 1024, 1) if start is not None else None,
                    "rss_end_mb": round(kb / 1024, 1),
                    "grew": grew,
                }
            )
        return rows

    def log_count(self, event: str) -> int:
        """How many lines of the server's log name ``event``."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return 0
        return sum(event in line for line in text.splitlines())

    async def stop(self) -> None:
        """SIGTERM the whole group, then SIGKILL whoever is left after 10 s."""
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                await self.process.wait()


def _open_log(path: Path) -> BinaryIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("wb")


async def start_server(
    name: str,
    args: list[str],
    *,
    port: int,
    env: dict[str, str],
    log_dir: Path,
    ready_path: str = "/healthz",
    timeout_s: float = 60.0,
) -> Server:
    """Start ``args`` in its own session and wait until ``ready_path`` answers 200."""
    log_path = log_dir / f"{name}.log"
    log = await asyncio.to_thread(_open_log, log_path)
    try:
        process = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT, start_new_session=True
        )
    finally:
        log.close()
    server = Server(name, port, process, log_path)
    deadline = time.monotonic() + timeout_s
    ready = False
    try:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                break
            with contextlib.suppress(HttpError, OSError, TimeoutError):
                status, _ = await get("127.0.0.1", port, ready_path, timeout_s=2)
                if status == 200:
                    ready = True
                    return server
            await asyncio.sleep(0.2)
    finally:
        if not ready:
            await server.stop()  # not ready in time, or the bench is stopping meanwhile
    tail = (await asyncio.to_thread(log_path.read_text, errors="replace"))[-2000:]
    raise RuntimeError(f"{name} did not become ready on port {port}:\n{tail}")
