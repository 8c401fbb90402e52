"""``orderflow chaos``'s arithmetic: the fault schedule and the verdict over its figures."""

from __future__ import annotations

from typing import Any

from orderflow.bench.chaos.faults import spaced
from orderflow.bench.chaos.report import INVARIANTS, document


def _figures(**overrides: Any) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "orders": {"lost": 0, "not_terminal": 0, "unresolved_placements": 0},
        "duplicates": {
            "charges": 0,
            "refunds": 0,
            "stock_movements": 0,
            "notifications": 0,
            "events_applied_twice": 0,
        },
        "gateway": {
            "captures_twice": 0,
            "refunds_twice": 0,
            "voids_twice": 0,
            "ledgers_differ": 0,
            "captured_short_of_stock": 0,
        },
        "faults": [{"fault": "broker", "error": ""}],
        "audit": {"ok": True},
    }
    for dotted, value in overrides.items():
        section, key = dotted.split("__")
        figures[section][key] = value
    return figures


def test_faults_are_spread_evenly_between_the_first_and_the_last_moment() -> None:
    assert spaced(["a", "b", "c", "d"], start_s=5, end_s=45) == [
        (5.0, "a"),
        (15.0, "b"),
        (25.0, "c"),
        (35.0, "d"),
    ]
    assert spaced([], start_s=5, end_s=45) == []


def test_a_run_with_every_figure_at_zero_and_a_clean_audit_is_ok() -> None:
    doc = document(_figures())
    assert doc["ok"]
    assert doc["broken"] == []
    assert set(doc["invariants"]) == {f"{s}.{k}" for s, k, _ in INVARIANTS} | {
        "faults_not_injected"
    }


def test_one_duplicated_charge_breaks_the_run() -> None:
    doc = document(_figures(duplicates__charges=1))
    assert not doc["ok"]
    assert doc["broken"] == ["duplicates.charges"]


def test_a_second_capture_in_the_gateway_ledger_breaks_the_run() -> None:
    doc = document(_figures(gateway__captures_twice=1))
    assert doc["broken"] == ["gateway.captures_twice"]


def test_a_lost_order_an_unclean_audit_and_a_failed_fault_are_each_named() -> None:
    figures = _figures(orders__lost=2)
    figures["audit"] = {"ok": False}
    figures["faults"] = [{"fault": "postgresql", "error": "ServiceError: no answer"}]
    doc = document(figures)
    assert doc["broken"] == ["orders.lost", "faults_not_injected", "audit"]
