"""``orderflow up``: the development supervisor.

Runs the migrations, then the payment gateway, the api, the relay and N workers as child
processes, each in its own process group, their output prefixed line by line. Ctrl-C or
SIGTERM stops them all; if one dies, the rest are stopped and the supervisor exits non-zero.
Children also get SIGTERM from the kernel if the supervisor itself is killed (Linux
``PR_SET_PDEATHSIG``), so nothing is left orphaned.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from orderflow.domain.webhooks import GATEWAY_WEBHOOKS_PATH
from orderflow.kernel.process import die_with_parent, first_of, install_stop_signals

GRACE_S = 10.0


@dataclass(frozen=True)
class ChildSpec:
    """A process to run: its label in the log prefix, its arguments to the CLI, extra env."""

    name: str
    args: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


def plan(
    *,
    port: int,
    workers: int,
    autopilot: bool,
    autopilot_delay_s: float,
    metrics_port: int,
    gateway_url: str = "http://127.0.0.1:8090",
) -> list[ChildSpec]:
    """The children ``orderflow up`` starts. The gateway listens where the workers are told
    to reach it (``gateway_url``) and sends its webhooks to this API."""
    gateway_port = urlsplit(gateway_url).port or 80
    webhooks = f"http://127.0.0.1:{port}{GATEWAY_WEBHOOKS_PATH}"
    children = [
        ChildSpec(
            "gateway",
            ("gateway", "--port", str(gateway_port)),
            {"ORDERFLOW_GATEWAY_WEBHOOK_URL": webhooks},
        ),
        ChildSpec("api", ("api", "--port", str(port))),
        ChildSpec("relay", ("relay", *_metrics(metrics_port, 0))),
    ]
    worker_env = {
        "ORDERFLOW_AUTOPILOT": "true" if autopilot else "false",
        "ORDERFLOW_AUTOPILOT_DELAY_S": str(autopilot_delay_s),
    }
    for i in range(workers):
        name = "worker" if workers == 1 else f"worker.{i + 1}"
        children.append(ChildSpec(name, ("worker", *_metrics(metrics_port, i + 1)), worker_env))
    return children


def _metrics(base: int, offset: int) -> tuple[str, ...]:
    return ("--metrics-port", str(base + offset)) if base else ()


async def _spawn(
    spec: ChildSpec, width: int
) -> tuple[asyncio.subprocess.Process, asyncio.Task[None]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "orderflow.entrypoints.cli",
        *spec.args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **spec.env},
        start_new_session=True,  # its own process group: we signal the whole group
        preexec_fn=die_with_parent,  # runs in the child between fork and exec
    )
    return proc, asyncio.create_task(_pump(proc, spec.name.ljust(width)))


async def _pump(proc: asyncio.subprocess.Process, label: str) -> None:
    assert proc.stdout is not None
    prefix = f"{label} | ".encode()
    while line := await proc.stdout.readline():
        sys.stdout.buffer.write(prefix + line)
        sys.stdout.buffer.flush()


def _signal_group(proc: asyncio.subprocess.Process, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def _stop_all(procs: list[asyncio.subprocess.Process]) -> None:
    for proc in procs:
        if proc.returncode is None:
            _signal_group(proc, signal.SIGTERM)
    waits = [asyncio.ensure_future(p.wait()) for p in procs]
    _, pending = await asyncio.wait(waits, timeout=GRACE_S)
    if pending:
        for proc in procs:
            if proc.returncode is None:
                _signal_group(proc, signal.SIGKILL)
        await asyncio.wait(pending)


async def supervise(children: list[ChildSpec], *, migrate: bool = True) -> int:
    """Run ``children`` until a signal (exit 0) or until one dies (exit 1)."""
    stop = install_stop_signals()
    width = max(len(c.name) for c in [*children, ChildSpec("migrate", ())])
    if migrate:
        proc, pump = await _spawn(ChildSpec("migrate", ("migrate",)), width)
        code = await proc.wait()
        await pump
        if code != 0:
            print(f"migrations failed (exit {code})", file=sys.stderr)
            return 1
    procs: list[asyncio.subprocess.Process] = []
    pumps: list[asyncio.Task[None]] = []
    for spec in children:
        proc, pump = await _spawn(spec, width)
        procs.append(proc)
        pumps.append(pump)
    await first_of(stop.wait(), *(p.wait() for p in procs))
    died = [
        (s.name, p.returncode)
        for s, p in zip(children, procs, strict=True)
        if p.returncode is not None
    ]
    await _stop_all(procs)
    await asyncio.gather(*pumps, return_exceptions=True)
    if died and not stop.is_set():
        for name, code in died:
            print(f"{name} exited with {code}: stopped the others", file=sys.stderr)
        return 1
    return 0
