"""The payment simulator remembers results by idempotency key, within a bounded memory."""

from __future__ import annotations

from orderflow.payments.simulator import SimulatedGateway


async def _charge(gateway: SimulatedGateway, key: str) -> str | None:
    result = await gateway.charge(
        idempotency_key=key, token="pm_approve", amount=100, currency="EUR", attempt=1
    )
    assert result.captured
    return result.reference


async def test_a_repeated_charge_gets_the_first_answer() -> None:
    gateway = SimulatedGateway()
    first = await _charge(gateway, "charge:1")
    assert await _charge(gateway, "charge:1") == first
    assert await _charge(gateway, "charge:2") != first


async def test_only_the_most_recent_keys_are_remembered() -> None:
    gateway = SimulatedGateway(remember=3)
    references = {key: await _charge(gateway, key) for key in ("a", "b", "c", "d")}
    assert len(gateway._charges) == 3
    assert await _charge(gateway, "d") == references["d"]  # recent: the same answer
    assert await _charge(gateway, "a") != references["a"]  # forgotten: charged anew
    refunds = [
        await gateway.refund(
            idempotency_key=f"refund:{i}", reference="ch", amount=1, currency="EUR"
        )
        for i in range(5)
    ]
    assert len(set(refunds)) == 5
    assert len(gateway._refunds) == 3
