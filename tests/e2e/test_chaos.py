"""``orderflow chaos`` end to end: a one-minute run with every fault once (the system's
processes, the payment gateway's included, killed, RabbitMQ's app stopped, PostgreSQL and Redis
restarted) loses no accepted order, duplicates no effect in the database or at the gateway,
leaves every order terminal and the audit clean, and leaves every shared service running. It
stops the machine's services: ``-m 'not stops_services'`` skips it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orderflow.settings import Settings

pytestmark = [pytest.mark.e2e, pytest.mark.chaos, pytest.mark.stops_services]

EVERY_FAULT = {
    "kill-api",
    "kill-gateway",
    "kill-relay",
    "kill-worker",
    "broker",
    "postgresql",
    "redis",
}


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return False
    return True


def test_a_minute_of_chaos_with_every_fault_loses_and_duplicates_nothing(
    settings: Settings, tmp_path: Path
) -> None:
    out = tmp_path / "chaos.json"
    command = ["orderflow.entrypoints.cli", "chaos", "--duration", "60", "--json", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", *command],
        # Base URLs only: the run makes (and drops) a database of its own.
        env={**os.environ, "ORDERFLOW_DATABASE_URL": settings.dsn()},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.exists(), done.stdout[-3000:] + done.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert {f["fault"] for f in doc["faults"]} >= EVERY_FAULT
    assert not [f for f in doc["faults"] if f["error"]]
    assert doc["orders"]["accepted"] > 500  # about 20 orders/s for a minute and more
    assert doc["orders"]["short_of_stock"] > 0
    assert doc["requests"]["pay"]["ok"] > 0  # declined, then paid again
    assert doc["orders"]["by_status"].get("cancelled", 0) > 0
    assert doc["invariants"] == dict.fromkeys(doc["invariants"], 0), doc["invariants"]
    # The gateway's own ledger was read: it authorized, captured, voided (short of stock) and
    # refunded (cancelled once paid), each movement once and matching our payments.
    assert {"authorize", "capture", "void", "refund"} <= set(doc["gateway"]["movements"])
    assert doc["audit"]["ok"], doc["audit"]
    assert doc["recovery"]["open_orders"] == 0
    # Every fault was followed by orders placed and moving again.
    for fault in doc["faults"]:
        assert fault["recover_placement_s"] is not None, fault
        assert fault["recover_progress_s"] is not None, fault
    assert done.returncode == 0, done.stdout[-3000:]
    assert all(_answers(port) for port in (5432, 5672, 6379))
