"""Process configuration: ``Settings`` (every knob, from ``ORDERFLOW_*`` environment variables)
and what goes with it."""

from orderflow.settings.knobs import Settings, get_settings
from orderflow.settings.values import (
    DEFAULT_RATE_LIMITS,
    Environment,
    PricingName,
    parse_rate,
    redact_url,
)

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "Environment",
    "PricingName",
    "Settings",
    "get_settings",
    "parse_rate",
    "redact_url",
]
