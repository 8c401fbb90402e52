"""``HttpGateway``: the payment gateway port over HTTP, against ``orderflow gateway`` (or any
provider with its API). 503s, 5xx, timeouts and connection errors are transient (the delivery
is retried with the same idempotency key); a 409 answers "not in that state"; any other 4xx is
permanent."""

from __future__ import annotations

from typing import Any

import httpx

from orderflow.kernel.handlers import PermanentError, TransientError
from orderflow.payments.gateway import Authorization, AuthorizationStatus
from orderflow.settings import Settings

_STATUS = {
    "requires_capture": AuthorizationStatus.AUTHORIZED,
    "captured": AuthorizationStatus.AUTHORIZED,
    "refunded": AuthorizationStatus.AUTHORIZED,
    "voided": AuthorizationStatus.AUTHORIZED,  # it was authorized; a void came later
    "declined": AuthorizationStatus.DECLINED,
    "processing": AuthorizationStatus.PENDING,
}


class HttpGateway:
    """The provider at ``url``; its HTTP client is opened on first use, closed by ``aclose``."""

    def __init__(self, url: str, *, api_key: str, timeout_s: float, connections: int = 100):
        self._url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {api_key}"}
        self._timeout_s = timeout_s
        self._connections = connections
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpGateway:
        return cls(
            settings.gateway_url,
            api_key=settings.gateway_api_key.get_secret_value(),
            timeout_s=settings.payment_timeout_s,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _post(
        self, path: str, key: str, body: dict[str, Any] | None = None
    ) -> tuple[int, dict[str, Any]]:
        if self._client is None:
            limits = httpx.Limits(max_connections=self._connections)
            self._client = httpx.AsyncClient(
                base_url=self._url, headers=self._headers, timeout=self._timeout_s, limits=limits
            )
        try:
            response = await self._client.post(path, json=body, headers={"Idempotency-Key": key})
        except httpx.TimeoutException:
            raise TransientError(f"payment gateway: no answer to {path} in time") from None
        except httpx.HTTPError as exc:
            raise TransientError(f"payment gateway unreachable: {type(exc).__name__}") from None
        status = response.status_code
        if status == 503 or status >= 500 or status == 429:
            raise TransientError(f"payment gateway: HTTP {status} on {path}")
        payload: dict[str, Any] = response.json()
        if status >= 400 and status != 409:
            raise PermanentError(f"payment gateway refused {path}: {payload.get('detail')}")
        return status, payload

    async def authorize(
        self,
        *,
        idempotency_key: str,
        token: str,
        amount: int,
        currency: str,
        metadata: dict[str, str],
    ) -> Authorization:
        body = {
            "amount": amount,
            "currency": currency,
            "payment_method": token,
            "metadata": metadata,
        }
        _, intent = await self._post("/v1/payment_intents", idempotency_key, body)
        return authorization_of(intent)

    async def capture(self, *, idempotency_key: str, reference: str) -> bool:
        path = f"/v1/payment_intents/{reference}/capture"
        status, answer = await self._post(path, idempotency_key)
        if status == 409 and answer.get("payment_intent", {}).get("status") == "processing":
            raise TransientError(f"payment gateway: {reference} is not authorized yet")
        return status < 400

    async def void(self, *, idempotency_key: str, reference: str) -> bool:
        status, _ = await self._post(f"/v1/payment_intents/{reference}/void", idempotency_key)
        return status < 400

    async def refund(self, *, idempotency_key: str, reference: str) -> str:
        status, refund = await self._post(
            "/v1/refunds", idempotency_key, {"payment_intent": reference}
        )
        if status >= 400:
            raise PermanentError(f"payment gateway cannot refund {reference}: {refund['detail']}")
        return str(refund["id"])


def authorization_of(intent: dict[str, Any]) -> Authorization:
    """What a payment intent (the gateway's JSON) says of its authorization."""
    return Authorization(
        status=_STATUS[intent["status"]],
        reference=str(intent["id"]),
        decline_reason=intent.get("decline_reason") or "",
    )
