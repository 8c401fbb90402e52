"""The ``orderflow relay`` process: the relay core (``kernel.relay``) with its pool, metrics
and stop signals."""

from __future__ import annotations

import structlog

from orderflow.domain.events import EVENT_TYPES
from orderflow.kernel.database import create_pool
from orderflow.kernel.duties import Duties
from orderflow.kernel.process import (
    broker_readiness,
    install_stop_signals,
    serve_metrics,
    settle_heap,
)
from orderflow.kernel.relay import Relay
from orderflow.kernel.scheduled import REASONS
from orderflow.observability import metrics
from orderflow.settings import Settings

log = structlog.get_logger(__name__)


async def run_relay(settings: Settings, *, metrics_port: int | None = None) -> None:
    """The ``orderflow relay`` process: until SIGTERM or SIGINT."""
    duties = Duties("relay")
    for counter in (metrics.EVENTS_PUBLISHED, metrics.EVENTS_UNROUTABLE):
        metrics.start_at_zero(counter, EVENT_TYPES)
    metrics.start_at_zero(metrics.SCHEDULED_PUBLISHED, REASONS)
    relay: Relay | None = None
    ready = broker_readiness(lambda: relay.connected if relay else None)
    serve_metrics(metrics_port, process="relay", health=duties.health, ready=ready)
    stop = install_stop_signals()
    pool = await create_pool(settings, min_size=1, max_size=4, process="relay")
    settle_heap()
    try:
        relay = Relay(settings, pool, duties=duties)
        await relay.run(stop)
    finally:
        await pool.close()
    log.info("relay_stopped")
