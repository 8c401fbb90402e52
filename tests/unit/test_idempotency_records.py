"""Idempotency records: what the first response stores, what a duplicate gets back, and the
parameters that answer a claimed record inside the effect's own statement."""

from __future__ import annotations

import re

from orderflow.domain.idempotency import IdempotentRequest, RecordedResponse, Replay
from orderflow.kernel.idempotency import respond_args, respond_cte


def _request(**overrides: object) -> IdempotentRequest:
    fields: dict[str, object] = {
        "scope": "key:k1",
        "key": "abc",
        "request_hash": b"\x01" * 32,
        "status_code": 201,
        "render": lambda result: f'{{"id":"{result}"}}'.encode(),
        "ttl_s": 86400.0,
        "wait_s": 5.0,
    }
    return IdempotentRequest(**{**fields, **overrides})  # type: ignore[arg-type]


def test_the_record_holds_the_rendered_result_with_the_routes_status() -> None:
    recorded = _request().record("o-1")
    assert recorded == RecordedResponse(
        status_code=201, body=b'{"id":"o-1"}', headers={"content-type": "application/json"}
    )


def test_a_route_that_sets_its_own_headers_keeps_them_in_the_record() -> None:
    headers = {"content-type": "application/json", "location": "/api/v1/orders/o-1"}
    assert _request(headers=headers).record("o-1").headers == headers


def test_a_replay_carries_the_first_response_unchanged() -> None:
    first = _request().record("o-1")
    replay = Replay(first)
    assert replay.response is first


def test_the_answer_is_numbered_from_where_the_effects_parameters_end() -> None:
    cte = respond_cte(7)
    assert sorted(int(n) for n in re.findall(r"\$(\d+)", cte)) == [7, 8, 9, 10, 11]


def test_each_answer_parameter_lands_in_its_own_column() -> None:
    # respond_args must list values in the order respond_cte numbers its columns, or a
    # replay would answer with the key as its body.
    request = _request()
    response = request.record("o-1")
    args = respond_args(request, response)
    cte = respond_cte(3)
    columns = dict(re.findall(r"(\w+) = \$(\d+)", cte))
    by_column = {column: args[int(n) - 3] for column, n in columns.items()}
    assert by_column == {
        "status_code": 201,
        "response_body": b'{"id":"o-1"}',
        "response_headers": {"content-type": "application/json"},
        "scope": "key:k1",
        "key": "abc",
    }
