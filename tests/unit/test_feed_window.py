"""The feed hub's window: what streams read from memory, and when they must ask PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, cast

from orderflow.domain.model import FeedEntry
from orderflow.domain.orders import OrderStatus
from orderflow.ordering.feed_hub import FeedHub


def _entry(position: int) -> FeedEntry:
    return FeedEntry(
        position=position,
        id=1000 - position,  # ids need not follow positions
        order_id=uuid.uuid4(),
        customer_id=uuid.uuid4(),
        event_id=uuid.uuid4(),
        event="order.created",
        actor="test",
        status=OrderStatus.CREATED,
        at=datetime.now(UTC),
        data={},
    )


def _hub(head: int, window: int = 8) -> FeedHub:
    hub = FeedHub(cast(Any, None), "", None, None, window_size=window)
    hub.head = head
    return hub


def test_a_contiguous_message_extends_the_window_and_a_gap_is_refused() -> None:
    hub = _hub(10)
    assert hub.recent_after(10) == []
    assert hub.recent_after(9) is None  # before the window: PostgreSQL
    assert hub._advance([_entry(11), _entry(12)])
    assert [e.position for e in hub.recent_after(10) or []] == [11, 12]
    assert [e.position for e in hub.recent_after(11) or []] == [12]
    # A message that skips 13 (one was lost) is not taken: the hub reads the gap instead.
    assert not hub._advance([_entry(14)])
    assert hub.head == 12
    # Repeats are ignored.
    assert hub._advance([_entry(12)])
    assert hub.head == 12


def test_what_postgresql_says_passes_a_hole_for_good() -> None:
    hub = _hub(10)
    hub._advance([_entry(11)])
    hub._advance([_entry(13)], upto=15)  # 12 is gone (its order was deleted), nothing after 13
    assert hub.head == 15
    assert [e.position for e in hub.recent_after(10) or []] == [11, 13]
    assert hub.recent_after(13) == []


def test_a_stream_that_fell_out_of_the_window_reads_postgresql() -> None:
    hub = _hub(0, window=4)
    hub._advance([_entry(p) for p in range(1, 9)])
    assert [e.position for e in hub.recent_after(4) or []] == [5, 6, 7, 8]
    assert hub.recent_after(3) is None
