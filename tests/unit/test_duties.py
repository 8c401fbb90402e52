"""Supervised duties: restarted after any exception, reported when they keep failing."""

from __future__ import annotations

import asyncio
import time

import pytest

from orderflow.kernel.duties import Duties, DutyState


async def _until(condition: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_duty_that_raises_is_started_again() -> None:
    duties = Duties("test", max_backoff_s=0.01)
    runs: list[int] = []
    done = asyncio.Event()

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("cannot switch to state 15")  # any exception, named or not
        done.set()
        await asyncio.Event().wait()  # then it keeps working

    duties.supervise("flaky", flaky)
    try:
        await asyncio.wait_for(done.wait(), 5)
        status = duties.status["flaky"]
        assert status.restarts == 2
        assert status.state is DutyState.RUNNING
        assert status.last_error == "RuntimeError"
        assert duties.healthy()
    finally:
        await duties.stop()


async def test_a_duty_that_keeps_failing_makes_the_process_unhealthy() -> None:
    duties = Duties("test", max_backoff_s=0.01, failing_after=3)

    async def broken() -> None:
        raise ValueError("always")

    duties.supervise("broken", broken)
    try:
        await _until(lambda: duties.status["broken"].restarts >= 3)
        assert duties.failing() == ["broken"]
        health = duties.health()
        assert health["status"] == "failing"
        assert health["duties"]["broken"]["state"] == "failing"
        assert "always" not in str(health)  # only the type name: errors may hold data
        await _until(lambda: duties.status["broken"].restarts >= 6)  # still retried
    finally:
        await duties.stop()


async def test_a_failing_duty_is_healthy_again_after_a_long_enough_run() -> None:
    duties = Duties("test", max_backoff_s=0.01, failing_after=2, healthy_after_s=0.2)
    failures = 0

    async def recovers() -> None:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise OSError("down")
        await asyncio.Event().wait()

    duties.supervise("recovers", recovers)
    try:
        await _until(lambda: duties.status["recovers"].restarts == 2)
        assert duties.failing() == ["recovers"]
        await asyncio.sleep(0.3)
        assert duties.failing() == []
        assert duties.healthy()
    finally:
        await duties.stop()


async def test_a_duty_that_returns_is_finished_not_restarted() -> None:
    duties = Duties("test", max_backoff_s=0.01)
    runs = 0

    async def once() -> None:
        nonlocal runs
        runs += 1

    duties.supervise("once", once)
    try:
        await _until(lambda: duties.status["once"].state is DutyState.FINISHED)
        await asyncio.sleep(0.05)
        assert runs == 1
        assert duties.healthy()
    finally:
        await duties.stop()


async def test_stop_cancels_every_duty() -> None:
    duties = Duties("test")
    cancelled = asyncio.Event()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    duties.supervise("forever", forever)
    await asyncio.sleep(0)
    await duties.stop()
    assert cancelled.is_set()


async def test_two_duties_may_not_share_a_name() -> None:
    duties = Duties("test")

    async def idle() -> None:
        await asyncio.Event().wait()

    duties.supervise("same", idle)
    try:
        with pytest.raises(ValueError, match="same"):
            duties.supervise("same", idle)
    finally:
        await duties.stop()


async def test_a_blocked_event_loop_is_reported_as_stalled() -> None:
    duties = Duties("test", stall_after_s=0.2)
    duties.loop.interval_s = 0.05

    async def idle() -> None:
        await asyncio.Event().wait()

    duties.supervise("idle", idle)
    try:
        await asyncio.sleep(0.1)
        assert not duties.stalled()
        time.sleep(0.4)  # synchronous work holding the loop, as a bug would
        assert duties.stalled()  # what a thread (the ops server) sees during the stall
        assert duties.health()["event_loop"]["stalled"] is True
        await asyncio.sleep(0.1)  # the loop runs again: it ticks
        assert not duties.stalled()
        assert duties.loop.max_lag_s >= 0.3
    finally:
        await duties.stop()
