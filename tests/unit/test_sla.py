"""Service-level deadlines: one per open status, overridable, and refused when they make no
sense."""

from __future__ import annotations

import pytest

from orderflow.domain import sla
from orderflow.domain.orders import TERMINAL, OrderStatus
from orderflow.domain.sla import DAY, DEFAULT_DEADLINES_S, FALLBACK_DEADLINE_S, HOUR, deadlines


def test_every_open_status_has_a_deadline_and_no_finished_one_does() -> None:
    found = deadlines()
    assert set(found) == {s.value for s in OrderStatus if s not in TERMINAL}
    assert not {s.value for s in TERMINAL} & set(found)


def test_the_defaults_give_machines_minutes_and_people_days() -> None:
    found = deadlines()
    assert found["payment_pending"] == 15 * 60
    assert found["awaiting_payment"] == HOUR  # longer than the 30-minute unpaid-order expiry
    assert found["prepared"] == DAY
    assert found["shipped"] == 7 * DAY


def test_an_override_replaces_only_its_own_status() -> None:
    found = deadlines({"paid": 30})
    assert found["paid"] == 30.0
    assert isinstance(found["paid"], float)
    assert {k: v for k, v in found.items() if k != "paid"} == {
        k: v for k, v in deadlines().items() if k != "paid"
    }
    assert DEFAULT_DEADLINES_S["paid"] == 15 * 60  # the defaults themselves are untouched


@pytest.mark.parametrize("status", ["delivered", "cancelled", "lost"])
def test_a_deadline_for_a_finished_or_unknown_status_is_refused(status: str) -> None:
    with pytest.raises(ValueError, match=f"no deadline for '{status}'"):
        deadlines({status: 60})


@pytest.mark.parametrize("seconds", [0, -1.5])
def test_a_deadline_that_is_not_in_the_future_is_refused(seconds: float) -> None:
    with pytest.raises(ValueError, match="must be > 0 seconds"):
        deadlines({"paid": seconds})


def test_a_status_the_defaults_do_not_know_yet_gets_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    without_reserved = {k: v for k, v in DEFAULT_DEADLINES_S.items() if k != "reserved"}
    monkeypatch.setattr(sla, "DEFAULT_DEADLINES_S", without_reserved)
    assert deadlines()["reserved"] == FALLBACK_DEADLINE_S
