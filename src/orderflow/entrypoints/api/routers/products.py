"""Catalogue endpoints."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Response, status
from pydantic import AfterValidator

from orderflow.catalogue import products as catalogue
from orderflow.entrypoints.api.deps import Admin, Pool, State
from orderflow.entrypoints.api.problems import EDGE_RESPONSES, ProblemRoute, documented
from orderflow.entrypoints.api.schemas import (
    MAX_MONEY,
    ProductIn,
    ProductOut,
    ProductPage,
    ProductPatch,
    no_nul,
)

router = APIRouter(
    prefix="/api/v1/products", tags=["products"], responses=EDGE_RESPONSES, route_class=ProblemRoute
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ProductOut,
    summary="Add a product to the catalogue",
    responses={409: documented("A product with this SKU exists already")},
)
async def create_product(body: ProductIn, state: State, _admin: Admin) -> ProductOut:
    product = await catalogue.create_product(
        state.pool,
        sku=body.sku,
        name=body.name,
        price=body.price,
        stock=body.stock,
        currency=body.currency or state.settings.currency,
        description=body.description,
    )
    return ProductOut.of(product)


@router.get("", response_model=ProductPage, summary="Search and page through the catalogue")
async def list_products(
    pool: Pool,
    q: Annotated[
        str | None,
        Query(max_length=100, description="text in name or SKU"),
        AfterValidator(lambda v: v if v is None else no_nul(v)),
    ] = None,
    min_price: Annotated[int | None, Query(ge=0, le=MAX_MONEY)] = None,
    max_price: Annotated[int | None, Query(ge=0, le=MAX_MONEY)] = None,
    in_stock: Annotated[bool | None, Query(description="true: stock > 0, false: sold out")] = None,
    sort: Literal["name", "price", "created_at", "stock"] = "name",
    order: Literal["asc", "desc"] = "asc",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> ProductPage:
    page = await catalogue.list_products(
        pool,
        min_price=min_price,
        max_price=max_price,
        in_stock=in_stock,
        text=q,
        sort=sort,
        descending=order == "desc",
        limit=limit,
        offset=offset,
    )
    return ProductPage(
        items=[ProductOut.of(p) for p in page.items],
        total=page.total or 0,
        next_offset=int(page.next_cursor) if page.next_cursor else None,
    )


@router.get("/{product_id}", response_model=ProductOut, summary="One product")
async def get_product(product_id: uuid.UUID, state: State) -> ProductOut:
    return ProductOut.of(
        await catalogue.get_product(state.pool, product_id=product_id, cache=state.product_cache)
    )


@router.patch(
    "/{product_id}",
    response_model=ProductOut,
    summary="Change a product's SKU, name, price, stock or description",
    responses={409: documented("Another product has this SKU already")},
)
async def update_product(
    product_id: uuid.UUID, body: ProductPatch, state: State, _admin: Admin
) -> ProductOut:
    changes = body.model_dump(exclude_unset=True, exclude_none=True)
    return ProductOut.of(
        await catalogue.update_product(
            state.pool, product_id=product_id, changes=changes, cache=state.product_cache
        )
    )


@router.delete(
    "/{product_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a product (409 while orders reference it)",
    responses={409: documented("Orders reference this product")},
)
async def delete_product(product_id: uuid.UUID, state: State, _admin: Admin) -> Response:
    await catalogue.delete_product(state.pool, product_id=product_id, cache=state.product_cache)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
