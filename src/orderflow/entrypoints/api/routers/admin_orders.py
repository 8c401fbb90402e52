"""The back office's orders: search, one order's whole story, why it waits, and actions.

Staff actions go through the same service functions as the API's routes (same rules, same
events); each is also recorded in ``admin_actions`` with who did it. The re-drive fixes only
what is safe to fix (``operations.stuck``): it republishes events and replays the order's dead
letters, and records what it did.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from orderflow.access.sessions import Session
from orderflow.domain.errors import InvalidRequest, NotFound
from orderflow.domain.model import Order
from orderflow.domain.orders import OrderStatus
from orderflow.entrypoints.api.deps import AppState, State
from orderflow.entrypoints.api.problems import SESSION_RESPONSES, ProblemRoute
from orderflow.entrypoints.api.routers.admin import (
    AdminAction,
    BackOffice,
    StaffAction,
    actor,
)
from orderflow.entrypoints.api.routers.admin_dead_letters import letters, record_letters
from orderflow.entrypoints.api.routers.admin_ops import saga_map
from orderflow.entrypoints.api.schemas import CancelIn, PayIn, ShipIn
from orderflow.fulfilment import steps as fulfilment
from orderflow.operations import backoffice, dead_letters, stuck
from orderflow.operations.redrive import republish_event
from orderflow.ordering import cancellation
from orderflow.payments import attempts as payments

router = APIRouter(
    prefix="/admin/api/orders",
    tags=["back office"],
    route_class=ProblemRoute,
    responses=SESSION_RESPONSES,
)


@router.get("", summary="Search orders (newest first, keyset-paged)")
async def search(
    state: State,
    _session: BackOffice,
    id_prefix: Annotated[str | None, Query(max_length=36, description="hex digits")] = None,
    email: Annotated[str | None, Query(max_length=320)] = None,
    status: OrderStatus | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    total_min: Annotated[int | None, Query(ge=0)] = None,
    total_max: Annotated[int | None, Query(ge=0)] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> dict[str, Any]:
    query = backoffice.OrderQuery(
        id_prefix=id_prefix or None,
        email=email or None,
        status=status,
        created_from=created_from,
        created_to=created_to,
        total_min=total_min,
        total_max=total_max,
    )
    items, next_cursor = await backoffice.search_orders(
        state.pool, query=query, cursor=cursor, limit=limit
    )
    return {"items": items, "next_cursor": next_cursor}


async def _diagnosis(
    state: AppState, order_id: uuid.UUID
) -> tuple[backoffice.Dossier, list[stuck.Reason]]:
    dossier = await backoffice.order_dossier(state.pool, order_id=order_id)
    if dossier.order.status in (OrderStatus.DELIVERED, OrderStatus.CANCELLED):
        return dossier, []
    saga = await saga_map(state)
    found = await letters(state, action="list", where=dead_letters.Filter(order_id=str(order_id)))
    reasons = stuck.diagnose(
        dossier,
        bindings=saga.bindings,
        dead_letters=[letter.as_dict() for letter in found],
        queue_of=saga.queue_of,
    )
    return dossier, reasons


@router.get(
    "/{order_id}",
    summary="One order: lines, payments, stock, notifications, timeline, why it waits",
)
async def order_page(order_id: uuid.UUID, state: State, _session: BackOffice) -> dict[str, Any]:
    dossier, reasons = await _diagnosis(state, order_id)
    order = dossier.order
    return {
        "order": {
            "id": str(order.id),
            "status": order.status.value,
            "currency": order.currency,
            "subtotal": order.subtotal,
            "discount": order.discount,
            "tax": order.tax,
            "total": order.total,
            "pricing": order.pricing,
            "cancel_reason": order.cancel_reason,
            "created_at": order.created_at,
            "updated_at": order.updated_at,
            "lines": [
                {
                    "line_no": line.line_no,
                    "sku": line.sku,
                    "name": line.name,
                    "unit_price": line.unit_price,
                    "quantity": line.quantity,
                    "line_total": line.line_total,
                }
                for line in order.lines
            ],
        },
        "customer": {k: str(v) for k, v in dossier.customer.items()},
        "payments": dossier.payments,
        "transactions": dossier.transactions,
        "stock_movements": dossier.stock_movements,
        "notifications": dossier.notifications,
        "timeline": dossier.steps,
        "actions": dossier.actions,
        "overdue": dossier.overdue,
        "stuck": [r.as_dict() for r in reasons],
        "now": dossier.now,
    }


async def _recorded(
    state: AppState, session: Session, order_id: uuid.UUID, action: str, **detail: Any
) -> None:
    await backoffice.record_action(
        state.pool, actor=actor(session), action=action, order_id=order_id, detail=detail
    )


@router.post("/{order_id}/redrive", summary="Fix what is safe to fix: republish, replay")
async def redrive(order_id: uuid.UUID, state: State, session: AdminAction) -> dict[str, Any]:
    _, reasons = await _diagnosis(state, order_id)
    done: list[dict[str, Any]] = []
    republished: set[str] = set()
    for reason in reasons:
        if reason.remedy == "republish" and reason.event_id and reason.event_id not in republished:
            republished.add(reason.event_id)
            try:
                outcome = await republish_event(state.pool, event_id=uuid.UUID(reason.event_id))
            except NotFound as exc:
                done.append(
                    {"remedy": "republish", "event_id": reason.event_id, "result": exc.detail}
                )
                continue
            done.append(
                {"remedy": "republish", "event_id": reason.event_id, "result": outcome.value}
            )
        elif reason.remedy == "replay" and reason.event_id:
            replayed = await letters(
                state,
                action="replay",
                ids=[reason.event_id],
                where=dead_letters.Filter(order_id=str(order_id), handler=reason.handler),
            )
            await record_letters(
                state, actor=actor(session), action="replay", letters=replayed, why="re-drive"
            )
            done.append(
                {
                    "remedy": "replay",
                    "event_id": reason.event_id,
                    "result": f"{len(replayed)} replayed",
                }
            )
    await _recorded(state, session, order_id, "order.redrive", done=done)
    return {"done": done, "reasons": [r.as_dict() for r in reasons]}


class Confirmed(BaseModel):
    """A staff action's body: the page asked the user to confirm."""

    model_config = ConfigDict(extra="forbid")
    confirm: bool = Field(description="must be true: the user confirmed the action")


def _confirmed(confirm: bool) -> None:
    if not confirm:
        raise InvalidRequest('confirm the action: {"confirm": true}')


class ShipConfirmed(ShipIn):
    confirm: bool


class CancelConfirmed(CancelIn):
    confirm: bool


class PayConfirmed(PayIn):
    confirm: bool


async def _staff_action(
    state: AppState,
    session: Session,
    confirm: bool,
    action: str,
    act: Callable[[], Awaitable[Order]],
    **detail: Any,
) -> dict[str, str]:
    """A confirmed staff action: ``act``, then recorded as ``action`` with ``detail`` in
    ``admin_actions``; the answer is the order's new status."""
    _confirmed(confirm)
    order = await act()
    await _recorded(state, session, order.id, action, **detail)
    return {"status": order.status.value}


@router.post("/{order_id}/prepare", summary="Warehouse: packed (staff)")
async def prepare(
    order_id: uuid.UUID, body: Confirmed, state: State, session: StaffAction
) -> dict[str, str]:
    act = partial(fulfilment.prepare_order, state.pool, order_id=order_id, actor=actor(session))
    return await _staff_action(state, session, body.confirm, "order.prepare", act)


@router.post("/{order_id}/ship", summary="Carrier: picked up, with carrier and tracking (staff)")
async def ship(
    order_id: uuid.UUID, body: ShipConfirmed, state: State, session: StaffAction
) -> dict[str, str]:
    carrier, tracking, who = body.carrier, body.tracking_number, actor(session)
    act = partial(
        fulfilment.ship_order,
        state.pool,
        order_id=order_id,
        carrier=carrier,
        tracking=tracking,
        actor=who,
    )
    return await _staff_action(
        state, session, body.confirm, "order.ship", act, carrier=carrier, tracking=tracking
    )


@router.post("/{order_id}/deliver", summary="Carrier: delivered (staff)")
async def deliver(
    order_id: uuid.UUID, body: Confirmed, state: State, session: StaffAction
) -> dict[str, str]:
    act = partial(
        fulfilment.deliver_order,
        state.pool,
        order_id=order_id,
        carrier="back office",
        actor=actor(session),
    )
    return await _staff_action(state, session, body.confirm, "order.deliver", act)


@router.post("/{order_id}/cancel", summary="Cancel; the refund and stock release follow (admin)")
async def cancel(
    order_id: uuid.UUID, body: CancelConfirmed, state: State, session: AdminAction
) -> dict[str, str]:
    reason = body.reason if body.reason != "customer_request" else "admin"
    who = actor(session)
    act = partial(
        cancellation.cancel_order, state.pool, order_id=order_id, reason=reason, actor=who
    )
    return await _staff_action(state, session, body.confirm, "order.cancel", act, reason=reason)


@router.post("/{order_id}/pay", summary="Pay again with another payment method (admin)")
async def pay(
    order_id: uuid.UUID, body: PayConfirmed, state: State, session: AdminAction
) -> dict[str, str]:
    token = body.payment_token
    act = partial(payments.pay_order, state.pool, order_id=order_id, token=token)
    return await _staff_action(state, session, body.confirm, "order.pay", act, payment_token=token)
