"""Order endpoints."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from orderflow.domain.access import Principal
from orderflow.domain.bounds import INT64_MAX
from orderflow.domain.errors import Forbidden, InvalidRequest
from orderflow.domain.orders import OrderStatus
from orderflow.entrypoints.api.deps import OrderActor, Pool, Reader, Staff, State
from orderflow.entrypoints.api.idempotency import IdempotencyKey
from orderflow.entrypoints.api.problems import EDGE_RESPONSES, TRANSITION_RESPONSES, ProblemRoute
from orderflow.entrypoints.api.schemas import (
    CancelIn,
    DeliverIn,
    Instant,
    OrderIn,
    OrderOut,
    OrderPage,
    OrderSummary,
    PayIn,
    ShipIn,
    TimelineOut,
    TimelinePage,
)
from orderflow.fulfilment import steps as fulfilment
from orderflow.observability.metrics import ORDERS_PLACED
from orderflow.ordering import cancellation, order_queries, placement
from orderflow.payments import attempts as payments

router = APIRouter(
    prefix="/api/v1/orders", tags=["orders"], responses=EDGE_RESPONSES, route_class=ProblemRoute
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=OrderOut,
    summary="Place an order",
    description="Prices are computed server-side from the catalogue. The order, its "
    "lines and its `order.created` event are stored atomically (one statement, which may also "
    "store other orders placed at the same moment; with an `Idempotency-Key`, one transaction "
    "that also records the answer). Prices come from the "
    "product cache and are confirmed against PostgreSQL by the statement that stores the order "
    "(409 if the products kept changing meanwhile: try again).",
)
async def place_order(
    body: OrderIn, state: State, principal: OrderActor, idem: IdempotencyKey
) -> Response:
    order = await placement.place_order(
        state.pool,
        customer_id=_ordering_customer(principal, body.customer_id),
        lines=[placement.LineRequest(line.product_id, line.quantity) for line in body.lines],
        payment_token=body.payment_token,
        pricing=state.pricing,
        actor=principal.role.value,
        idempotency=idem.recording(OrderOut.of, status_code=status.HTTP_201_CREATED),
        cache=state.price_cache,
        batcher=state.placements,
    )
    ORDERS_PLACED.inc()
    # Serialised once, here: the model is already valid, and the hottest endpoint need not
    # have FastAPI validate and encode it a second time (``response_model`` documents it).
    return Response(
        OrderOut.of(order).model_dump_json(),
        status_code=status.HTTP_201_CREATED,
        media_type="application/json",
        headers={"Location": f"/api/v1/orders/{order.id}"},
    )


def _ordering_customer(principal: Principal, requested: uuid.UUID | None) -> uuid.UUID:
    """Whom an order is for: a customer key orders for its own customer only."""
    own = principal.owner
    if own is None:
        if requested is None:
            raise InvalidRequest("customer_id is required")
        return requested
    if requested is not None and requested != own:
        raise Forbidden("a customer key places orders for its own customer only")
    return own


@router.get(
    "",
    response_model=OrderPage,
    summary="List orders, newest first",
    description="A customer key sees its own orders only.",
)
async def list_orders(
    pool: Pool,
    principal: Reader,
    status_: Annotated[OrderStatus | None, Query(alias="status")] = None,
    customer_id: uuid.UUID | None = None,
    created_from: Instant | None = None,
    created_to: Instant | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> OrderPage:
    own = principal.owner
    if own is not None and customer_id not in (None, own):
        return OrderPage(items=[], next_cursor=None)  # another customer's orders: none visible
    page = await order_queries.list_orders(
        pool,
        customer_id=own or customer_id,
        status=status_,
        created_from=created_from,
        created_to=created_to,
        cursor=cursor,
        limit=limit,
    )
    return OrderPage(
        items=[
            OrderSummary(**{f: getattr(o, f) for f in OrderSummary.model_fields})
            for o in page.items
        ],
        next_cursor=page.next_cursor,
    )


@router.get("/{order_id}", response_model=OrderOut, summary="One order with its lines and timeline")
async def get_order(order_id: uuid.UUID, pool: Pool, principal: Reader) -> OrderOut:
    return OrderOut.of(
        await order_queries.get_order(pool, order_id=order_id, owner=principal.owner)
    )


@router.get(
    "/{order_id}/events",
    response_model=TimelinePage,
    summary="Page through an order's timeline, oldest first",
)
async def order_events(
    order_id: uuid.UUID,
    pool: Pool,
    principal: Reader,
    cursor: Annotated[int, Query(ge=0, le=INT64_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> TimelinePage:
    page = await order_queries.order_timeline(
        pool, order_id=order_id, after=cursor, limit=limit, owner=principal.owner
    )
    return TimelinePage(
        items=[
            TimelineOut(**{f: getattr(t, f) for f in TimelineOut.model_fields}) for t in page.items
        ],
        next_cursor=page.next_cursor,
    )


@router.post(
    "/{order_id}/cancel",
    response_model=OrderOut,
    summary="Cancel an order that has not shipped",
    description="Allowed until the order ships; 409 afterwards. Writes "
    "`order.cancelled`; refunds and stock release follow from it.",
)
async def cancel_order(
    order_id: uuid.UUID,
    pool: Pool,
    principal: OrderActor,
    idem: IdempotencyKey,
    body: CancelIn | None = None,
) -> OrderOut:
    reason = body.reason if body else "customer_request"
    order = await cancellation.cancel_order(
        pool,
        order_id=order_id,
        reason=reason,
        actor=principal.role.value,
        owner=principal.owner,
        idempotency=idem.recording(OrderOut.of, status_code=status.HTTP_200_OK),
    )
    return OrderOut.of(order)


@router.post(
    "/{order_id}/pay",
    response_model=OrderOut,
    summary="Pay, or pay again after a declined payment",
    description="Starts a payment with the given method for an order that awaits "
    "payment (no method given at creation, or the last one was declined); 409 in any "
    "other status.",
)
async def pay_order(
    order_id: uuid.UUID, body: PayIn, pool: Pool, principal: OrderActor, idem: IdempotencyKey
) -> OrderOut:
    order = await payments.pay_order(
        pool,
        order_id=order_id,
        token=body.payment_token,
        owner=principal.owner,
        idempotency=idem.recording(OrderOut.of, status_code=status.HTTP_200_OK),
    )
    return OrderOut.of(order)


@router.post(
    "/{order_id}/prepare",
    response_model=OrderOut,
    responses=TRANSITION_RESPONSES,
    tags=["fulfilment"],
    summary="Warehouse: the order is packed and ready to ship",
    description="Allowed once stock is reserved (status `reserved`); 409 otherwise.",
)
async def prepare_order(order_id: uuid.UUID, pool: Pool, principal: Staff) -> OrderOut:
    return OrderOut.of(
        await fulfilment.prepare_order(pool, order_id=order_id, actor=principal.role.value)
    )


@router.post(
    "/{order_id}/ship",
    response_model=OrderOut,
    responses=TRANSITION_RESPONSES,
    tags=["fulfilment"],
    summary="Carrier: the parcel was picked up",
    description="Allowed once prepared; records carrier and tracking number.",
)
async def ship_order(order_id: uuid.UUID, body: ShipIn, pool: Pool, principal: Staff) -> OrderOut:
    return OrderOut.of(
        await fulfilment.ship_order(
            pool,
            order_id=order_id,
            carrier=body.carrier,
            tracking=body.tracking_number,
            actor=principal.role.value,
        )
    )


@router.post(
    "/{order_id}/deliver",
    response_model=OrderOut,
    responses=TRANSITION_RESPONSES,
    tags=["fulfilment"],
    summary="Carrier: delivery confirmed",
    description="Allowed once shipped.",
)
async def deliver_order(
    order_id: uuid.UUID, pool: Pool, principal: Staff, body: DeliverIn | None = None
) -> OrderOut:
    carrier = body.carrier if body else None  # None: the carrier it was shipped with
    return OrderOut.of(
        await fulfilment.deliver_order(
            pool, order_id=order_id, carrier=carrier, actor=principal.role.value
        )
    )
