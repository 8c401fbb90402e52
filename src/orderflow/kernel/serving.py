"""Serving an ASGI app factory under uvicorn, in one process or in several (ADR 0021).

uvicorn's own supervisor binds one listening socket and shares it between its workers. The
kernel then gives each new connection to whichever worker accepts first, and an idle worker
accepts every connection waiting: when 32 keep-alive clients connect at once, one worker can
take all 32 while the other idles (seen under ``bench place``: one worker at 89-94 % of a
core, the other at 0 %). Here every worker binds a socket of its own to the same address with
``SO_REUSEPORT``, and the kernel spreads the connections over the sockets by a hash of their
addresses. The parent only watches: it restarts a worker that dies, stops them all on SIGTERM
or SIGINT, and gives up if a worker cannot start.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import sys
import threading
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

import structlog
import uvicorn
from uvicorn.config import STARTUP_FAILURE  # exit code of a server that could not start

from orderflow.kernel.process import die_with_parent
from orderflow.observability.logging import configure_logging
from orderflow.observability.tracing import configure_tracing
from orderflow.settings import get_settings

log = structlog.get_logger()

GRACE_S = 10.0


@dataclass(frozen=True)
class Target:
    """What to serve: an app factory's import path, where, and how."""

    factory: str
    host: str
    port: int
    process: str  # the ``process`` field of the logs
    access_log: bool = False

    def config(self) -> uvicorn.Config:
        """The project's server settings, the same in every worker."""
        trusted = get_settings().trusted_proxy_list
        return uvicorn.Config(
            self.factory,
            factory=True,
            host=self.host,
            port=self.port,
            access_log=self.access_log,
            log_config=None,
            loop="uvloop",
            http="httptools",
            # Forwarded headers only from the configured proxies: from anyone else they
            # would let a client choose the address it is rate-limited by.
            proxy_headers=bool(trusted),
            forwarded_allow_ips=trusted,
            server_header=False,  # no "server: uvicorn": nothing to fingerprint
        )


def serve(target: Target, *, workers: int) -> None:
    """Serve ``target`` in ``workers`` processes until SIGTERM or SIGINT."""
    if workers > 1:
        sys.exit(Workers(target, workers).run())
    configure_tracing(get_settings(), process=target.process)
    server = uvicorn.Server(target.config())
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to (host, port) in the address's ``SO_REUSEPORT`` group."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _worker(target: Target) -> None:  # the body of each worker process
    die_with_parent()
    configure_logging(get_settings(), process=target.process)
    configure_tracing(get_settings(), process=target.process)
    try:
        sock = listening_socket(target.host, target.port)
    except OSError as exc:
        log.error("server_bind_failed", host=target.host, port=target.port, error=repr(exc))
        sys.exit(STARTUP_FAILURE)
    server = uvicorn.Server(target.config())
    server.run(sockets=[sock])
    if not server.started:
        sys.exit(STARTUP_FAILURE)


class Workers:
    """``count`` worker processes serving ``target``, each on its own socket."""

    def __init__(self, target: Target, count: int) -> None:
        self.target = target
        self.count = count
        self._context = multiprocessing.get_context("spawn")
        self._stop = threading.Event()
        self.processes: list[BaseProcess] = []

    def _start(self) -> BaseProcess:
        process = self._context.Process(target=_worker, args=(self.target,), daemon=False)
        process.start()
        return process

    def run(self) -> int:
        """Until a signal (0), or until a worker fails to start (1)."""
        try:  # fail here, not in every worker, when the address cannot be had at all
            listening_socket(self.target.host, self.target.port).close()
        except OSError as exc:
            log.error("server_bind_failed", port=self.target.port, error=repr(exc))
            return 1
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        self.processes = [self._start() for _ in range(self.count)]
        log.info("server_workers_started", workers=[p.pid for p in self.processes])
        failed = False
        while not self._stop.wait(0.5):
            failed = self._replace_dead()
            if failed:
                break
        self._stop_all()
        return 1 if failed else 0

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._stop.set()

    def _replace_dead(self) -> bool:
        """Start a new worker for each one that died; True if one could not start."""
        for i, process in enumerate(self.processes):
            if process.is_alive() or self._stop.is_set():
                continue
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                log.error("server_worker_failed_to_start", pid=process.pid)
                return True
            log.warning("server_worker_died", pid=process.pid, exitcode=process.exitcode)
            self.processes[i] = self._start()
        return False

    def _stop_all(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: uvicorn finishes the requests in flight
        for process in self.processes:
            process.join(GRACE_S)
            if process.is_alive():
                process.kill()
                process.join()
