"""Customer endpoints."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from orderflow.domain.errors import NotFound
from orderflow.entrypoints.api.deps import Admin, Pool, Reader
from orderflow.entrypoints.api.problems import EDGE_RESPONSES, ProblemRoute, documented
from orderflow.entrypoints.api.schemas import CustomerIn, CustomerOut
from orderflow.ordering import customers

router = APIRouter(
    prefix="/api/v1/customers",
    tags=["customers"],
    responses=EDGE_RESPONSES,
    route_class=ProblemRoute,
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=CustomerOut,
    summary="Register a customer",
    responses={409: documented("A customer with this email exists already")},
)
async def create_customer(body: CustomerIn, pool: Pool, _admin: Admin) -> CustomerOut:
    found = await customers.create_customer(pool, email=str(body.email), name=body.name)
    return CustomerOut(id=found.id, email=found.email, name=found.name, created_at=found.created_at)


@router.get(
    "/{customer_id}",
    response_model=CustomerOut,
    summary="One customer",
    description="A customer key sees its own customer only (others answer 404).",
)
async def get_customer(customer_id: uuid.UUID, pool: Pool, principal: Reader) -> CustomerOut:
    if principal.owner not in (None, customer_id):
        raise NotFound(f"customer {customer_id} does not exist")
    found = await customers.get_customer(pool, customer_id=customer_id)
    return CustomerOut(id=found.id, email=found.email, name=found.name, created_at=found.created_at)
