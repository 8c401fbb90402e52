"""The payment gateway's own ledger after a chaos run, read from its API (``GET /v1/ledger``)
as a provider's statement would be: a second capture, refund or void of one order there is
money a customer would see moved twice, whatever our rows say; a capture of an order that was
short of stock is a charge for what could not ship; and every movement must match our
``payment_transactions`` one to one (``orderflow audit --gateway``'s comparison)."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import asyncpg
import httpx

from orderflow.operations import audit_gateway_ledger, gateway_counts

TWICE = {"capture": "captures_twice", "refund": "refunds_twice", "void": "voids_twice"}


def ledger_figures(
    theirs: Counter[tuple[uuid.UUID, str]], *, short_of_stock: set[uuid.UUID]
) -> dict[str, Any]:
    """Movements of one kind made twice for one order, captures of orders short of stock, and
    the ledger's movements by kind (pure)."""
    figures: dict[str, Any] = dict.fromkeys(TWICE.values(), 0)
    for (_, kind), n in theirs.items():
        if kind in TWICE and n > 1:
            figures[TWICE[kind]] += n - 1
    captured = {order for (order, kind), n in theirs.items() if kind == "capture" and n}
    figures["captured_short_of_stock"] = len(captured & short_of_stock)
    movements: Counter[str] = Counter()
    for (_, kind), n in theirs.items():
        movements[kind] += n
    figures["movements"] = dict(sorted(movements.items()))
    return figures


async def gateway_figures(
    pool: asyncpg.Pool, *, base_url: str, api_key: str, short_of_stock: set[uuid.UUID]
) -> dict[str, Any]:
    """The ledger's figures, and the orders whose movements differ from ours (with the first
    few differences named)."""
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30) as client:
        figures = ledger_figures(await gateway_counts(client), short_of_stock=short_of_stock)
        differ = await audit_gateway_ledger(pool, client)
    figures["ledgers_differ"] = len(differ)
    figures["ledgers_differ_first"] = [v.as_dict() for v in differ[:10]]
    return figures
