"""Ordering: placing orders, moving them along the state machine, their timeline and feed.

Public face: what other capabilities may use. Everything else in this package is its own.
"""

from orderflow.ordering.feed_json import entry_json
from orderflow.ordering.feed_store import read_after as read_feed_after
from orderflow.ordering.feed_store import sequence as sequence_feed
from orderflow.ordering.order_queries import decode_cursor, encode_cursor
from orderflow.ordering.store import get as get_order
from orderflow.ordering.store import shipping_carrier
from orderflow.ordering.transitions import (
    Step,
    act_on_order,
    advance,
    annotate,
    claim_and_lock_orders,
    emit_off_timeline,
    lock_order,
    status_step,
)

__all__ = [
    "Step",
    "act_on_order",
    "advance",
    "annotate",
    "claim_and_lock_orders",
    "decode_cursor",
    "emit_off_timeline",
    "encode_cursor",
    "entry_json",
    "get_order",
    "lock_order",
    "read_feed_after",
    "sequence_feed",
    "shipping_carrier",
    "status_step",
]
