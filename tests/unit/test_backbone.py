"""Pure parts of the event backbone: names, retry schedule, failure classes, supervisor plan."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import asyncpg
import pytest

from orderflow.entrypoints.supervisor import plan
from orderflow.kernel.batches import acks_only
from orderflow.kernel.broker import traceparent
from orderflow.kernel.failures import is_transient
from orderflow.kernel.handlers import (
    CallStep,
    PermanentError,
    StatementStep,
    Subscription,
    TransactionStep,
    TransientError,
)
from orderflow.kernel.scheduled import json_headers
from orderflow.kernel.settling import retry_delay_s
from orderflow.kernel.topology import Names
from orderflow.kernel.waiting_rooms import retry_delays_ms, waiting_rooms
from orderflow.settings import Settings


def _settings(**kw: object) -> Settings:
    return Settings(queue_prefix="of", exchange="ex", **kw)  # type: ignore[arg-type]


def test_retry_delays_double_per_attempt_then_stay_on_the_longest() -> None:
    settings = _settings(retry_base_delay_ms=100, retry_max_attempts=4)
    assert [retry_delay_s(settings, a) for a in (1, 2, 3, 9)] == [0.1, 0.2, 0.4, 0.4]
    # One attempt allowed: a retry (never scheduled) would wait the base delay.
    assert retry_delay_s(_settings(retry_max_attempts=1), 1) == 1.0


def test_queue_names_derive_from_prefix_and_handler() -> None:
    names = Names.from_settings(_settings())
    assert names.handler("payments").work == "of.payments"
    assert names.dead_letters == "of.dead-letters"


def test_the_old_waiting_rooms_are_named_as_they_were_declared() -> None:
    names = Names.from_settings(_settings())
    delays = retry_delays_ms(_settings(retry_base_delay_ms=250, retry_max_attempts=3))
    assert delays == [250, 500]
    assert waiting_rooms(names, "payments", delays) == [
        "of.payments.retry.250ms",
        "of.payments.retry.500ms",
        "of.payments.delay",
        "of.payments.retry.250ms.q",
        "of.payments.retry.500ms.q",
        "of.payments.delay.q",
    ]


def test_a_scheduled_deliverys_headers_are_kept_as_json_can_keep_them() -> None:
    kept = json_headers(
        {"attempt": 2, "trace": "00-ab", "raw": b"caf\xc3\xa9", "ok": True, "nan": float("nan")}
    )
    assert kept == {"attempt": 2, "trace": "00-ab", "raw": "café", "ok": True, "nan": "nan"}


def test_handler_is_recovered_from_any_of_its_queue_names() -> None:
    names = Names.from_settings(_settings())
    assert names.handler_of("of.payments") == "payments"
    assert names.handler_of("of.payments.retry.1000ms.q") == "payments"
    assert names.handler_of("of.payments.delay.q") == "payments"
    # The waiting rooms of before ADR 0028, whose dead letters may still be around.
    assert names.handler_of("of.payments.retry.1000ms") == "payments"
    assert names.handler_of("of.payments.delay") == "payments"
    assert names.handler_of("other.payments") is None


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (TransientError("partner down"), True),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
        (asyncpg.exceptions.SerializationError("x"), True),
        (asyncpg.exceptions.DeadlockDetectedError("x"), True),
        (asyncpg.exceptions.ConnectionDoesNotExistError("x"), True),
        (asyncpg.exceptions.InternalClientError("x"), True),
        (asyncpg.InterfaceError("the underlying connection is closed"), True),
        (PermanentError("bad data"), False),
        (ValueError("a bug"), False),
        (KeyError("a bug"), False),
        (asyncpg.exceptions.UniqueViolationError("x"), False),
    ],
)
def test_failures_are_classified_as_transient_or_permanent(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_traceparent_uses_the_conversation_as_trace_and_the_event_as_span() -> None:
    corr = "0b3c1a52-0f8e-4a61-9f62-1a2b3c4d5e6f"
    event = "11111111-2222-3333-4444-555555555555"
    assert traceparent(corr, event) == ("00-0b3c1a520f8e4a619f621a2b3c4d5e6f-1111111122223333-01")
    assert traceparent(None, event) is None


def test_up_plans_gateway_api_relay_and_workers_with_autopilot_settings() -> None:
    children = plan(
        port=9000,
        workers=2,
        autopilot=True,
        autopilot_delay_s=1.5,
        metrics_port=9100,
        gateway_url="http://127.0.0.1:8123",
    )
    assert [c.name for c in children] == ["gateway", "api", "relay", "worker.1", "worker.2"]
    gateway, api, relay, first, second = children
    assert gateway.args == ("gateway", "--port", "8123")
    # Its webhooks go to this API.
    assert gateway.env == {
        "ORDERFLOW_GATEWAY_WEBHOOK_URL": "http://127.0.0.1:9000/api/v1/payment-gateway/webhooks"
    }
    assert api.args == ("api", "--port", "9000")
    assert relay.args == ("relay", "--metrics-port", "9100")
    assert second.args == ("worker", "--metrics-port", "9102")
    assert first.env == {
        "ORDERFLOW_AUTOPILOT": "true",
        "ORDERFLOW_AUTOPILOT_DELAY_S": "1.5",
    }
    quiet = plan(port=1, workers=1, autopilot=False, autopilot_delay_s=0, metrics_port=0)
    assert quiet[3].args == ("worker",)
    assert quiet[3].env["ORDERFLOW_AUTOPILOT"] == "false"


def test_a_batch_is_acked_by_one_frame_only_when_that_acks_nothing_else() -> None:
    # Tags 1-4 unsettled; the batch is 1, 2, 3: the multiple-ack of 3 acks exactly them.
    assert acks_only({1, 2, 3}, {1, 2, 3, 4})
    # Tag 2 (say, a poison message whose dead-letter copy is not confirmed yet) is unsettled
    # below the batch's highest tag: acking "up to 3" would ack it on its behalf.
    assert not acks_only({1, 3}, {1, 2, 3})
    # Tags already settled on their own do not count; a single delivery is acked plainly.
    assert acks_only({5, 6}, {5, 6, 9})
    assert not acks_only({7}, {7})


async def _noop(*_: object) -> None:
    return None


async def _claim_nothing(*_: object) -> set[uuid.UUID]:
    return set()


_ON = Subscription("h", ("order.placed",))


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: StatementStep(_ON, apply=_claim_nothing, batched=False), "takes batches"),
        (lambda: TransactionStep(_ON, apply=_noop, batched=False, window_s=0.05), "needs batches"),
        (lambda: TransactionStep(_ON, apply=_noop, window_s=-1.0), "not negative"),
        (lambda: CallStep(_ON, call=_noop, record=_noop, batched=False, window_s=0.0), "needs"),
    ],
)
def test_a_handler_refuses_settings_its_kind_cannot_keep(
    make: Callable[[], object], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        make()
