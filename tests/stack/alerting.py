"""Asking the stack's Prometheus, its Alertmanager and the test's webhook receiver about alerts.

An alert counts as raised by a fault only when all three agree: Prometheus fires it, Alertmanager
holds it active, and a webhook notification delivered it as firing after the fault began.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.stack.stack import Stack, wait_for


def in_prometheus(stack: Stack, state: str = "firing") -> set[str]:
    """Names of the alerts Prometheus has in ``state`` (firing or pending) now."""
    return {r["metric"]["alertname"] for r in stack.query(f'ALERTS{{alertstate="{state}"}}')}


def in_alertmanager(stack: Stack) -> set[str]:
    """Names of the alerts Alertmanager holds as active now."""
    response = stack.http.get(stack.url("alertmanager", "/api/v2/alerts"))
    response.raise_for_status()
    return {
        a["labels"]["alertname"]
        for a in response.json()
        if a.get("status", {}).get("state") == "active"
    }


def fired_between(stack: Stack, start: float, end: float) -> dict[str, list[dict[str, Any]]]:
    """Every alert Prometheus had firing at any evaluation between two instants, with its
    labels: from its own record (the ALERTS series), not from polling."""
    response = stack.http.get(
        stack.url("prometheus", "/api/v1/query_range"),
        params={"query": 'ALERTS{alertstate="firing"}', "start": start, "end": end, "step": 1},
    )
    response.raise_for_status()
    fired: dict[str, list[dict[str, Any]]] = {}
    for series in response.json()["data"]["result"]:
        fired.setdefault(series["metric"]["alertname"], []).append(series["metric"])
    return fired


def quiet(stack: Stack, names: set[str], *, timeout: float = 120) -> int:
    """Wait until none of ``names`` fires anywhere (Prometheus, Alertmanager, or a firing
    notification not yet followed by its resolution); return the receiver's mark from which a
    new firing notification counts."""

    def calm() -> bool:
        loud = in_prometheus(stack) | in_alertmanager(stack) | stack.receiver.still_firing()
        return not loud & names

    wait_for(f"{sorted(names)} to be resolved before the fault", calm, timeout=timeout, every=2)
    return stack.receiver.mark()


def wait_fired(stack: Stack, names: set[str], *, since: int, timeout: float) -> None:
    """Wait until each of ``names`` fires in Prometheus, is active in Alertmanager and was
    delivered as firing to the webhook receiver after the mark ``since``."""
    steps: list[tuple[str, Callable[[], set[str]], float]] = [
        ("firing in Prometheus", lambda: in_prometheus(stack), timeout),
        ("active in Alertmanager", lambda: in_alertmanager(stack), 30),
        ("delivered to the webhook receiver", lambda: stack.receiver.firing_since(since), 30),
    ]
    for where, seen, wait in steps:
        try:
            wait_for(f"{sorted(names)} {where}", covers(names, seen), timeout=wait, every=2)
        except pytest.fail.Exception as exc:
            pending = sorted(in_prometheus(stack, "pending"))
            pytest.fail(
                f"{exc.msg}; missing {sorted(names - seen())}; firing in Prometheus "
                f"{sorted(in_prometheus(stack))}, pending {pending}",
                pytrace=False,
            )


def covers(names: set[str], seen: Callable[[], set[str]]) -> Callable[[], bool]:
    """A probe: are all of ``names`` in what ``seen`` returns now?"""
    return lambda: names <= seen()


def wait_resolved(stack: Stack, names: set[str], *, timeout: float) -> None:
    """Wait until Prometheus fires none of ``names`` any more (the fault is repaired)."""
    wait_for(
        f"{sorted(names)} to resolve after the repair",
        lambda: not in_prometheus(stack) & names,
        timeout=timeout,
        every=2,
    )


def settle(stack: Stack, *, timeout: float = 120) -> None:
    """Wait for a just-started stack to have no alert pending or firing, and note when (the
    healthy run is measured from there)."""
    try:
        wait_for("no alert pending or firing", lambda: not stack.query("ALERTS"), timeout=timeout)
    except pytest.fail.Exception as exc:
        left = [
            (r["metric"]["alertname"], r["metric"]["alertstate"]) for r in stack.query("ALERTS")
        ]
        pytest.fail(f"{exc.msg}: {left}", pytrace=False)
    stack.quiet_since = time.time()
    stack.quiet_mark = stack.receiver.mark()
