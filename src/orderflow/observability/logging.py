"""Structured logging: JSON lines in production, readable console output in development.

Whatever the mode, every record passes the same last two steps before it is rendered:

- an exception becomes a plain traceback (never local variables: they hold request headers,
  keys and tokens, and rendering them took seconds and ~38,000 lines per error), cut to
  ``MAX_TRACEBACK_CHARS``, so that one error is one record of bounded size;
- ``redact`` removes secrets from every value: bearer keys, passwords in URLs, session
  cookies, payment tokens, and any field whose name says it holds one.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from typing import Any

import structlog

from orderflow.settings import Settings

MAX_TRACEBACK_CHARS = 8_000
MAX_VALUE_CHARS = 4_000
REDACTED = "[redacted]"

# Field names whose values are secrets, whatever they hold (compared lower-cased, "-" as "_").
SECRET_FIELDS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "password",
        "passwd",
        "secret",
        "token",
        "api_key",
        "apikey",
        "key_secret",
        "payment_token",
        "access_token",
        "refresh_token",
        "client_secret",
        "session",
        "session_id",
    }
)

# Secrets inside free text (messages, reprs, tracebacks), each with what replaces it.
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # An API key: the public prefix stays (it names the key), the secret goes.
    (re.compile(r"\b(ofk_[0-9a-f]{12})_[A-Za-z0-9_\-]+"), r"\1_" + REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+(?!ofk_)[A-Za-z0-9._~+/=\-]+"), r"\1 " + REDACTED),
    # user:password@ in any URL
    (re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*):[^\s@/'\"]+@"), r"\1:***@"),
    # cookies of the admin dashboard (or any session cookie) in a header dump
    (re.compile(r"(?i)\b([\w\-]*session[\w\-]*|orderflow_admin)=[^;\s'\",]+"), r"\1=" + REDACTED),
    # payment method tokens (the simulator's pm_..., a provider's tok_...)
    (re.compile(r"\b(pm|tok)_[A-Za-z0-9_\-]+"), r"\1_" + REDACTED),
)


def redact_text(text: str) -> str:
    """``text`` with every secret the patterns know replaced."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return redact_text(_cut(value, MAX_VALUE_CHARS))
    if depth > 4:
        return value if isinstance(value, int | float | bool | None) else "[nested]"
    if isinstance(value, dict):
        return {
            k: REDACTED if _is_secret_field(k) else _redact_value(v, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_value(v, depth + 1) for v in value]
    return value


def _is_secret_field(name: object) -> bool:
    return isinstance(name, str) and name.lower().replace("-", "_") in SECRET_FIELDS


def redact(
    _logger: object, _name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """A structlog processor: no secret in any value of the record."""
    return {
        key: REDACTED if _is_secret_field(key) else _redact_value(value)
        for key, value in event_dict.items()
    }


def _cut(text: str, limit: int) -> str:
    """At most ``limit`` characters: the head and the tail (a traceback's end says most)."""
    if len(text) <= limit:
        return text
    head = limit // 4
    tail = limit - head
    return f"{text[:head]}\n... [{len(text) - limit} characters cut] ...\n{text[-tail:]}"


def render_exception(
    _logger: object, _name: str, event_dict: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """A structlog processor: ``exc_info`` becomes ``exception``, a plain traceback without
    local variables, of bounded size."""
    exc_info = event_dict.pop("exc_info", None)
    if not exc_info:
        return event_dict
    if isinstance(exc_info, BaseException):
        exc: BaseException | None = exc_info
    elif isinstance(exc_info, tuple):
        exc = exc_info[1]
    else:
        exc = sys.exc_info()[1]
    if exc is not None:
        text = "".join(traceback.format_exception(exc, limit=30))
        event_dict["exception"] = _cut(text, MAX_TRACEBACK_CHARS)
    return event_dict


def configure_logging(settings: Settings, *, process: str) -> None:
    """Route stdlib and structlog records through one structlog pipeline."""
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if settings.json_logs
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            render_exception,
            redact,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in ("uvicorn.access", "aiormq", "aio_pika"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    structlog.contextvars.bind_contextvars(process=process)
