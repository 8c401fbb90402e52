"""The machine's shared services, driven as an operator would: RabbitMQ's app stopped and
started, PostgreSQL's cluster and Redis restarted, and every one of them running again at the
end whatever happened (``ensure_running``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

REDIS_START = (
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "-::1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
    "--dir",
    "/var/lib/redis",
    "--logfile",
    "/var/log/redis/ci.log",
)


class ServiceError(RuntimeError):
    """A service command failed or did not answer in time."""


async def command(*args: str, timeout_s: float = 60.0) -> str:
    """Run ``args``; its output, or ServiceError if it fails or hangs (then it is ended with
    every process it started: ``rabbitmqctl`` runs its CLI under ``su`` in a session of its
    own)."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except TimeoutError:
        end_tree(proc.pid)
        await proc.wait()
        raise ServiceError(f"{' '.join(args)}: no answer in {timeout_s:g} s") from None
    if proc.returncode != 0:
        raise ServiceError(f"{' '.join(args)}: exit {proc.returncode}: {err.decode()[-500:]}")
    return out.decode()


def end_tree(root: int) -> None:
    """SIGKILL ``root`` and every process descending from it, the youngest first."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [root], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    for pid in reversed(found):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def answers(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return False
    return True


def postgresql_version() -> str:
    """The installed PostgreSQL cluster's major version (``ls /etc/postgresql``)."""
    versions = sorted(p.name for p in Path("/etc/postgresql").iterdir() if p.is_dir())
    if not versions:
        raise ServiceError("no PostgreSQL cluster under /etc/postgresql")
    return versions[-1]


# --- RabbitMQ ---


async def broker_stop_app() -> None:
    """``rabbitmqctl stop_app``: the node stays up, the broker's application stops."""
    await command("rabbitmqctl", "stop_app")


async def broker_start_app() -> None:
    """``start_app`` and wait for the boot; a node that is gone is started afresh."""
    try:
        await command("rabbitmqctl", "start_app")
        await broker_await_startup()
    except ServiceError:
        if answers(5672):
            raise
        await broker_restart_node()


async def broker_restart_node() -> None:
    """A full node restart (``stop``, ``rabbitmq-server -detached``, ``await_startup``)."""
    with contextlib.suppress(ServiceError):
        await command("rabbitmqctl", "stop", timeout_s=120)
    await command("rabbitmq-server", "-detached")
    await broker_await_startup()


async def broker_await_startup(*, timeout_s: float = 180.0) -> None:
    """``rabbitmqctl await_startup`` until it succeeds: a node just started with ``-detached``
    is not reachable at once, and ``await_startup`` fails rather than waits for it."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await command("rabbitmqctl", "await_startup", timeout_s=timeout_s)
            return
        except ServiceError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(2.0)


async def broker_dead_lettering_works() -> bool:
    """Whether quorum dead-lettering's supervisor runs: RabbitMQ 3.10 loses it after repeated
    ``stop_app``/``start_app`` (docs/runbooks), and only a node restart brings it back."""
    out = await command("rabbitmqctl", "eval", "whereis(rabbit_fifo_dlx_sup).")
    return "undefined" not in out


# --- PostgreSQL and Redis ---


async def postgresql(action: str) -> None:
    """``pg_ctlcluster <version> main ACTION`` (start, restart)."""
    await command(
        "pg_ctlcluster",
        "--skip-systemctl-redirect",
        postgresql_version(),
        "main",
        action,
        timeout_s=120,
    )


async def redis_stop() -> None:
    """``redis-cli shutdown nosave``: Redis holds nothing that cannot be rebuilt."""
    with contextlib.suppress(ServiceError):  # it closes the connection as it goes
        await command("redis-cli", "shutdown", "nosave")
    for _ in range(50):
        if not answers(6379):
            return
        await asyncio.sleep(0.1)
    raise ServiceError("redis did not stop")


async def redis_start() -> None:
    """Start Redis as ``make services`` does, and wait until it answers."""
    await command(*REDIS_START)
    for _ in range(100):
        if answers(6379):
            return
        await asyncio.sleep(0.1)
    raise ServiceError("redis did not start")


async def ensure_running() -> list[str]:
    """Start whichever shared service does not answer, and restart a broker whose quorum
    dead-lettering is gone; what was done (empty when all was well)."""
    done: list[str] = []
    if not answers(5432):
        await postgresql("start")
        done.append("started PostgreSQL")
    if not answers(6379):
        await redis_start()
        done.append("started Redis")
    if not answers(5672):
        await broker_start_app()
        done.append("started RabbitMQ")
    if not await broker_dead_lettering_works():
        log.warning("broker_dead_lettering_lost", action="node restart")
        await broker_restart_node()
        done.append("restarted the RabbitMQ node (quorum dead-lettering was gone)")
    return done
