"""The system under chaos: each process of ``orderflow up`` started on its own, so that any one
of them can be killed (SIGKILL, its whole process group) and started again.

The process table is data (``plan``): a name, the CLI arguments and the port whose probe says
it is ready. Every incarnation logs to a file of its own (``api.1.log``, ``api.2.log``, ...).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from orderflow.bench.servers import Server, free_port, free_ports, orderflow_command, start_server


@dataclass(frozen=True, slots=True)
class Role:
    """One process of the system: its name, its ``orderflow`` arguments, the port of its probe
    (the API's and the gateway's own port; the metrics port of the relay and the workers).

    The probe is ``/healthz`` (the process is up and its duties run), not ``/readyz``: a worker
    restarted under a backlog reports ready only once every consumer is set up, which took
    minutes in a long run while its first consumers were already busy."""

    name: str
    args: tuple[str, ...]
    port: int
    ready_path: str = "/healthz"


def plan(*, workers: int, gateway_port: int | None = None) -> list[Role]:
    """The processes ``orderflow chaos`` runs: the payment gateway (on ``gateway_port``, where
    the workers are told to reach it), api, relay, ``workers`` workers."""
    api = free_port()
    metrics = free_ports(workers + 1)
    gateway = gateway_port or free_port()
    roles = [
        Role("gateway", ("gateway", "--port", str(gateway)), gateway, "/healthz"),
        Role("api", ("api", "--port", str(api)), api, "/healthz"),
        Role("relay", ("relay", "--metrics-port", str(metrics)), metrics),
    ]
    for i in range(workers):
        name = "worker" if i == 0 else f"worker.{i + 1}"
        roles.append(
            Role(name, ("worker", "--metrics-port", str(metrics + 1 + i)), metrics + 1 + i)
        )
    return roles


@dataclass
class System:
    """The running processes, by role name."""

    roles: list[Role]
    env: dict[str, str]
    log_dir: Path
    running: dict[str, Server] = field(default_factory=dict)
    incarnations: Counter[str] = field(default_factory=Counter)

    def role(self, name: str) -> Role:
        """The role called ``name``."""
        for role in self.roles:
            if role.name == name:
                return role
        raise KeyError(name)

    @property
    def api_port(self) -> int:
        """The API's port."""
        return self.role("api").port

    async def start(self, name: str, *, timeout_s: float = 180.0) -> None:
        """Start ``name`` and wait until its probe answers 200."""
        role = self.role(name)
        self.incarnations[name] += 1
        self.running[name] = await start_server(
            f"{name}.{self.incarnations[name]}",
            orderflow_command(*role.args),
            port=role.port,
            env=self.env,
            log_dir=self.log_dir,
            ready_path=role.ready_path,
            timeout_s=timeout_s,
        )

    def log_lines(self, event: str) -> int:
        """Lines naming ``event`` in the logs of every process and incarnation."""
        count = 0
        for path in self.log_dir.glob("*.log"):
            with contextlib.suppress(OSError):
                text = path.read_text(errors="replace")
                count += sum(event in line for line in text.splitlines())
        return count

    async def start_all(self) -> None:
        """Start every process, the API first."""
        for role in self.roles:
            await self.start(role.name)

    async def kill(self, name: str) -> None:
        """SIGKILL ``name`` and every process of its group; wait until it is gone."""
        server = self.running.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        await server.process.wait()

    async def stop_all(self) -> None:
        """SIGTERM every process (SIGKILL after 10 s), all at once."""
        servers = list(self.running.values())
        self.running.clear()
        await asyncio.gather(*(s.stop() for s in servers), return_exceptions=True)
