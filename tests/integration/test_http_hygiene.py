"""What every HTTP answer carries, and how the edge refuses bodies it will not read."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from tests.integration.tables import snapshot


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


async def test_a_chunked_body_over_the_limit_is_a_413(
    client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    before = await snapshot(pool)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"lines": [], "padding": "'
        for _ in range(40):
            yield b"x" * 4096
        yield b'"}'

    answer = await client.post(
        "/api/v1/orders", content=chunks(), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["type"].endswith("/body-too-large")
    assert await snapshot(pool) == before


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml"]
)
async def test_a_body_that_is_not_json_is_a_415(
    content_type: str, client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    before = await snapshot(pool)
    answer = await client.post(
        "/api/v1/customers",
        content=b'{"email": "a@example.com", "name": "A"}',
        headers={"content-type": content_type},
    )
    assert answer.status_code == 415, answer.text
    assert answer.json()["type"].endswith("/unsupported-media-type")
    assert await snapshot(pool) == before
    # JSON under another name is JSON; a POST without a body needs no type at all.
    fine = await client.post(
        "/api/v1/customers",
        content=b'{"email": "' + uuid.uuid4().hex.encode() + b'@example.com", "name": "A"}',
        headers={"content-type": "application/json; charset=utf-8"},
    )
    assert fine.status_code == 201, fine.text


@pytest.mark.parametrize(
    "name",
    [
        "Mallory\x1b[2J\x1b[31mADMIN",  # ANSI escape sequences: clear screen, red
        "invoice\u202efdp.exe",  # right-to-left override
        "a\u2066b",  # bidi isolate
        "tab\there",
        "line\nbreak",
        "c1\x9bcontrol",
    ],
)
async def test_control_characters_in_names_are_refused(
    name: str, client: httpx.AsyncClient, pool: asyncpg.Pool
) -> None:
    before = await snapshot(pool)
    for path, body in (
        ("/api/v1/customers", {"email": f"{uuid.uuid4().hex}@example.com", "name": name}),
        ("/api/v1/products", {"sku": f"CC-{uuid.uuid4().hex[:8]}", "name": name, "price": 1,
                              "stock": 1}),
    ):  # fmt: skip
        answer = await client.post(path, json=body)
        assert answer.status_code == 422, (path, answer.text)
        assert "control characters" in answer.text
    assert await snapshot(pool) == before


async def test_names_in_any_script_and_emoji_are_accepted(client: httpx.AsyncClient) -> None:
    for name in ("Zoë Ω", "محمد", "山田 太郎", "Ana 👩\u200d💻"):  # ZWJ is not a control
        answer = await client.post(
            "/api/v1/customers", json={"email": f"{uuid.uuid4().hex}@example.com", "name": name}
        )
        assert answer.status_code == 201, (name, answer.text)
        assert answer.json()["name"] == name
