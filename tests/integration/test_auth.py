"""Authentication and roles: who may call what, and what others' data looks like."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import asyncpg
import httpx

from orderflow.access.keys import KeyVerifier, revoke_key
from orderflow.domain.access import Role
from orderflow.entrypoints.api.app import create_app
from orderflow.settings import Settings
from tests.factories import make_customer, make_customer_with_key, make_product, place_order
from tests.integration.conftest import ClientFor, bearer, running


async def test_catalogue_reads_and_probes_are_public(client_for: ClientFor) -> None:
    anonymous = await client_for(None)
    assert (await anonymous.get("/api/v1/products")).status_code == 200
    for path in ("/healthz", "/readyz", "/openapi.json"):
        assert (await anonymous.get(path)).status_code == 200, path


async def test_writes_and_orders_without_a_key_are_401_with_a_challenge(
    client: httpx.AsyncClient, client_for: ClientFor
) -> None:
    anonymous = await client_for(None)
    product = await make_product(client)
    calls = [
        ("POST", "/api/v1/products", {"sku": "X-1", "name": "x", "price": 1, "stock": 1}),
        ("PATCH", f"/api/v1/products/{product['id']}", {"price": 2}),
        ("DELETE", f"/api/v1/products/{product['id']}", None),
        ("POST", "/api/v1/customers", {"email": "a@example.com", "name": "A"}),
        ("POST", "/api/v1/orders", {"lines": [{"product_id": product["id"], "quantity": 1}]}),
        ("GET", "/api/v1/orders", None),
        ("GET", f"/api/v1/orders/{uuid.uuid4()}", None),
        ("POST", f"/api/v1/orders/{uuid.uuid4()}/cancel", None),
    ]
    for method, path, body in calls:
        response = await anonymous.request(method, path, json=body)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert (await client.get(f"/api/v1/products/{product['id']}")).json()["price"] == 1250


async def test_malformed_unknown_and_forged_keys_are_401(
    client_for: ClientFor, pool: asyncpg.Pool
) -> None:
    anonymous = await client_for(None)
    real = await bearer(pool, Role.ADMIN)
    forged = real[:-4] + ("AAAA" if not real.endswith("AAAA") else "BBBB")
    for header in (
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer not-a-key",
        f"Bearer ofk_{'0' * 12}_{'A' * 43}",  # well-formed, unknown prefix
        f"Bearer {forged}",  # known prefix, wrong secret
    ):
        response = await anonymous.get("/api/v1/products", headers={"Authorization": header})
        assert response.status_code == 401, header
        assert response.json()["type"].endswith("/unauthenticated")
    ok = await anonymous.get("/api/v1/products", headers={"Authorization": f"Bearer {real}"})
    assert ok.status_code == 200


async def test_revoked_key_is_refused_once_the_cache_ttl_has_passed(
    client_for: ClientFor, pool: asyncpg.Pool
) -> None:
    token = await bearer(pool, Role.STAFF)
    now = [1000.0]
    verifier = KeyVerifier(pool, ttl_s=5, max_entries=10, clock=lambda: now[0])
    assert (await verifier.verify(token)) is not None
    await revoke_key(pool, ident=token.split("_")[1])
    now[0] += 4.9
    assert (await verifier.verify(token)) is not None  # still cached: the documented bound
    now[0] += 0.2
    assert (await verifier.verify(token)) is None


async def test_revoked_key_is_refused_by_the_api_within_the_cache_ttl(
    app_settings: Callable[..., Settings], pool: asyncpg.Pool
) -> None:
    token = await bearer(pool, Role.ADMIN)
    async with running(create_app(app_settings(auth_cache_ttl_s=0.3))) as transport:
        http = httpx.AsyncClient(
            transport=transport,
            base_url="http://test",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert (await http.get("/api/v1/orders")).status_code == 200
        await revoke_key(pool, ident=token.split("_")[1])
        await asyncio.sleep(0.35)
        refused = await http.get("/api/v1/orders")
        assert refused.status_code == 401
        assert refused.json()["detail"] == "the API key is unknown or revoked"
        # a revoked key is refused on public endpoints too: a bad credential is never ignored
        assert (await http.get("/api/v1/products")).status_code == 401


async def test_customer_places_reads_and_cancels_only_their_own_orders(
    client: httpx.AsyncClient, client_for: ClientFor
) -> None:
    product = await make_product(client)
    alice, as_alice = await make_customer_with_key(client, client_for)
    bob, as_bob = await make_customer_with_key(client, client_for)

    # customer_id may be omitted: the key says whose order it is
    placed = await as_alice.post(
        "/api/v1/orders", json={"lines": [{"product_id": product["id"], "quantity": 1}]}
    )
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["customer_id"] == alice["id"]
    assert (await as_alice.get(f"/api/v1/orders/{order['id']}")).status_code == 200

    for_bob = await as_alice.post(
        "/api/v1/orders",
        json={"customer_id": bob["id"], "lines": [{"product_id": product["id"], "quantity": 1}]},
    )
    assert for_bob.status_code == 403

    # Bob probing Alice's order: it does not exist for him
    for path in (f"/api/v1/orders/{order['id']}", f"/api/v1/orders/{order['id']}/events"):
        probe = await as_bob.get(path)
        assert probe.status_code == 404, path
        assert probe.json()["type"].endswith("/not-found")
    assert (await as_bob.post(f"/api/v1/orders/{order['id']}/cancel")).status_code == 404
    assert (await as_bob.get(f"/api/v1/customers/{alice['id']}")).status_code == 404
    listing = await as_bob.get("/api/v1/orders", params={"customer_id": alice["id"]})
    assert listing.json()["items"] == []
    assert (await as_bob.get("/api/v1/orders")).json()["items"] == []

    mine = (await as_alice.get("/api/v1/orders")).json()["items"]
    assert [o["id"] for o in mine] == [order["id"]]
    assert (await as_alice.get(f"/api/v1/customers/{alice['id']}")).status_code == 200
    cancelled = await as_alice.post(f"/api/v1/orders/{order['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["timeline"][-1]["actor"] == "customer"


async def test_customer_and_staff_keys_cannot_write_the_catalogue_or_customers(
    client: httpx.AsyncClient, client_for: ClientFor
) -> None:
    product = await make_product(client)
    _, as_customer = await make_customer_with_key(client, client_for)
    staff = await client_for(Role.STAFF)
    for caller in (as_customer, staff):
        assert (await caller.get(f"/api/v1/products/{product['id']}")).status_code == 200
        for method, path, body in (
            ("POST", "/api/v1/products", {"sku": "X-2", "name": "x", "price": 1, "stock": 1}),
            ("PATCH", f"/api/v1/products/{product['id']}", {"price": 1}),
            ("DELETE", f"/api/v1/products/{product['id']}", None),
            ("POST", "/api/v1/customers", {"email": "b@example.com", "name": "B"}),
        ):
            response = await caller.request(method, path, json=body)
            assert response.status_code == 403, (method, path)
            assert response.json()["type"].endswith("/forbidden")


async def test_staff_reads_orders_but_neither_places_nor_cancels_them(
    client: httpx.AsyncClient, client_for: ClientFor
) -> None:
    product = await make_product(client)
    customer = await make_customer(client)
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    staff = await client_for(Role.STAFF)
    assert (await staff.get(f"/api/v1/orders/{order['id']}")).status_code == 200
    assert (await staff.get("/api/v1/orders")).status_code == 200
    body = {"customer_id": customer["id"], "lines": [{"product_id": product["id"], "quantity": 1}]}
    assert (await staff.post("/api/v1/orders", json=body)).status_code == 403
    assert (await staff.post(f"/api/v1/orders/{order['id']}/cancel")).status_code == 403


async def test_admin_places_orders_for_any_customer_but_must_name_one(
    client: httpx.AsyncClient,
) -> None:
    product = await make_product(client)
    nameless = await client.post(
        "/api/v1/orders", json={"lines": [{"product_id": product["id"], "quantity": 1}]}
    )
    assert nameless.status_code == 422
    customer = await make_customer(client)
    order = await place_order(client, customer_id=customer["id"], lines=[(product["id"], 1)])
    assert order["timeline"][0]["actor"] == "admin"


async def test_openapi_documents_the_bearer_scheme(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["ApiKey"]["scheme"] == "bearer"
    assert {"ApiKey": []} in spec["paths"]["/api/v1/orders"]["post"]["security"]
    assert "security" not in spec["paths"]["/api/v1/products"]["get"]
    params = spec["paths"]["/api/v1/orders"]["post"]["parameters"]
    assert any(p["name"] == "Idempotency-Key" for p in params)


async def test_openapi_lists_the_problems_each_route_can_answer(
    client: httpx.AsyncClient,
) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    place = paths["/api/v1/orders"]["post"]["responses"]
    assert {"201", "400", "401", "403", "409", "413", "422", "429"} <= set(place)
    for code in ("400", "409", "413"):
        assert "application/problem+json" in place[code]["content"], code
    assert {"400", "409", "413"} <= set(
        paths["/api/v1/orders/{order_id}/cancel"]["post"]["responses"]
    )
    assert {"400", "413"} <= set(paths["/api/v1/products"]["post"]["responses"])
    # Conflicts with what exists: a duplicate SKU or email, a product orders still reference.
    for path, method in (
        ("/api/v1/products", "post"),
        ("/api/v1/products/{product_id}", "patch"),
        ("/api/v1/products/{product_id}", "delete"),
        ("/api/v1/customers", "post"),
    ):
        conflict = paths[path][method]["responses"]["409"]
        assert "application/problem+json" in conflict["content"], (path, method)
    assert not {"400", "409", "413"} & set(paths["/api/v1/orders"]["get"]["responses"])
    # Validation errors are documented as the problem+json this API sends, not FastAPI's own.
    listing = paths["/api/v1/orders"]["get"]["responses"]
    assert set(listing["422"]["content"]) == {"application/problem+json"}
    assert "HTTPValidationError" not in str(paths)
    # The fulfilment actions document the refusal of an illegal transition.
    for action in ("prepare", "ship", "deliver"):
        assert "409" in paths[f"/api/v1/orders/{{order_id}}/{action}"]["post"]["responses"]


async def test_concurrent_first_uses_of_a_key_share_one_lookup(pool: asyncpg.Pool) -> None:
    token = await bearer(pool, Role.ADMIN)
    verifier = KeyVerifier(pool, ttl_s=5, max_entries=10)
    lookups = 0

    async def count() -> None:
        nonlocal lookups
        lookups += 1

    found = await asyncio.gather(*(verifier.verify(token, before_lookup=count) for _ in range(20)))
    assert all(p is not None and p.role is Role.ADMIN for p in found)
    assert lookups == 1
