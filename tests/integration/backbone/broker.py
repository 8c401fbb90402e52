"""Driving the local RabbitMQ node from tests: bounded ``rabbitmqctl`` calls, and a restart
that never leaves the broker stopped."""

from __future__ import annotations

import asyncio
import socket

from orderflow.bench.chaos.services import end_tree


async def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    """Run ``rabbitmqctl ARGS``; fail (and end the call) if it does not answer in time."""
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # so that a hung call can be ended with its children
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        await _end(proc)
        raise AssertionError(f"rabbitmqctl {' '.join(args)}: no answer in {timeout} s") from None
    assert proc.returncode == 0, f"rabbitmqctl {' '.join(args)}: {err.decode()}"
    return out.decode()


async def _end(proc: asyncio.subprocess.Process) -> None:
    # `su` inside rabbitmqctl starts the CLI in a session of its own: end every descendant.
    end_tree(proc.pid)
    await proc.wait()


def _amqp_port_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError:
        return False
    return True


async def start_broker_app() -> None:
    """``start_app`` and wait for the boot; if the node itself is gone, start it."""
    try:
        await rabbitmqctl("start_app", timeout=60)
        await rabbitmqctl("await_startup", timeout=120)
    except AssertionError:
        if _amqp_port_answers():
            raise
        proc = await asyncio.create_subprocess_exec("rabbitmq-server", "-detached")
        await proc.wait()
        await rabbitmqctl("await_startup", timeout=120)
        raise
