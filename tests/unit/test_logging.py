"""What the logging pipeline does to every record: no secrets, bounded tracebacks."""

from __future__ import annotations

from orderflow.observability.logging import (
    MAX_TRACEBACK_CHARS,
    REDACTED,
    redact,
    redact_text,
    render_exception,
)

KEY = "ofk_49e2eb8bcd6c_" + "S3cr3t" * 7


def test_secrets_in_free_text_are_replaced() -> None:
    text = (
        f"headers=[(b'authorization', b'Bearer {KEY}')] url=postgresql://app:hunter2@db/x "
        "cookie: orderflow_admin=abcDEF123; token pm_approve"
    )
    cleaned = redact_text(text)
    for secret in ("S3cr3t", "hunter2", "abcDEF123", "approve"):
        assert secret not in cleaned
    assert "ofk_49e2eb8bcd6c_" in cleaned  # the public prefix still names the key
    assert "postgresql://app:***@db/x" in cleaned


def test_fields_named_for_a_secret_are_dropped_at_any_depth() -> None:
    record = {
        "event": "x",
        "Authorization": "anything",
        "request": {"headers": {"cookie": "c", "x-ok": "fine"}, "payment_token": "t"},
        "items": [{"password": "p"}],
    }
    cleaned = redact(None, "info", record)
    assert cleaned["Authorization"] == REDACTED
    assert cleaned["request"] == {
        "headers": {"cookie": REDACTED, "x-ok": "fine"},
        "payment_token": REDACTED,
    }
    assert cleaned["items"] == [{"password": REDACTED}]


def _deep(n: int) -> None:
    secret = KEY  # a local variable a traceback renderer with locals would print
    if n:
        _deep(n - 1)
    raise RuntimeError(f"bottom of {len(secret)}")


def test_a_traceback_is_plain_bounded_and_without_locals() -> None:
    try:
        _deep(500)
    except RuntimeError as exc:
        rendered = render_exception(None, "error", {"event": "boom", "exc_info": exc})
    text = rendered["exception"]
    assert "exc_info" not in rendered
    assert len(text) <= MAX_TRACEBACK_CHARS + 100
    assert "S3cr3t" not in text
    assert text.rstrip().endswith("RuntimeError: bottom of 59")  # the end is kept
