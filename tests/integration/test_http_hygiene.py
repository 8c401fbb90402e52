"""What every HTTP answer carries, and how the edge refuses bodies it will not read."""

from __future__ import annotations

import uuid

import httpx


async def test_every_answer_carries_the_security_headers(client: httpx.AsyncClient) -> None:
    for method, path in (
        ("GET", "/api/v1/products"),
        ("GET", f"/api/v1/orders/{uuid.uuid4()}"),  # a 404 problem
        ("POST", "/api/v1/orders"),  # a 422 problem
        ("GET", "/healthz"),
    ):
        answer = await client.request(method, path, json={} if method == "POST" else None)
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["x-frame-options"] == "DENY", path
        assert answer.headers["referrer-policy"] == "no-referrer", path
        assert answer.headers["content-security-policy"].startswith("default-src 'none'"), path
        assert "server" not in answer.headers
    docs = await client.get("/docs")  # an HTML page: its own policy, not the JSON one
    assert docs.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" not in docs.headers.get("content-security-policy", "")
