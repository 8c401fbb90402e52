"""The chaos run's reading of the payment gateway's own ledger."""

from __future__ import annotations

import uuid
from collections import Counter

from orderflow.bench.chaos.gateway import ledger_figures

A, B, C = (uuid.UUID(int=n) for n in (1, 2, 3))


def test_a_ledger_with_each_movement_once_has_no_duplicate() -> None:
    theirs = Counter(
        {(A, "authorize"): 1, (A, "capture"): 1, (B, "authorize"): 1, (B, "void"): 1}
        | {(C, "decline"): 1, (C, "authorize"): 1, (C, "capture"): 1, (C, "refund"): 1}
    )
    figures = ledger_figures(theirs, short_of_stock={B})
    assert figures == {
        "captures_twice": 0,
        "refunds_twice": 0,
        "voids_twice": 0,
        "captured_short_of_stock": 0,
        "movements": {"authorize": 3, "capture": 2, "decline": 1, "refund": 1, "void": 1},
    }


def test_second_captures_refunds_and_voids_of_one_order_are_counted() -> None:
    theirs = Counter({(A, "capture"): 2, (A, "refund"): 3, (B, "void"): 2, (C, "capture"): 1})
    figures = ledger_figures(theirs, short_of_stock=set())
    assert (figures["captures_twice"], figures["refunds_twice"], figures["voids_twice"]) == (
        1,
        2,
        1,
    )


def test_a_capture_of_an_order_short_of_stock_is_counted() -> None:
    theirs = Counter({(A, "authorize"): 1, (A, "capture"): 1, (B, "authorize"): 1})
    assert ledger_figures(theirs, short_of_stock={A, B})["captured_short_of_stock"] == 1
