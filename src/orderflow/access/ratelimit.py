"""GCRA rate limiting in Redis: one atomic script per decision, the decisions a process needs
at the same moment sent together in one pipeline (one round trip)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from redis.exceptions import NoScriptError

from orderflow.kernel.batching import Coalescer
from orderflow.kernel.redis import RedisLink
from orderflow.observability.metrics import RATE_LIMIT_FAIL_OPEN

# Generic cell rate algorithm. The key holds the "theoretical arrival time" (TAT) in
# microseconds of Redis's own clock, so that every API replica shares one clock. Each request
# moves the TAT one emission interval (window / quota) into the future; a request is refused
# when that would put the TAT more than one window ahead of now. A full quota can therefore
# be spent at once, and it refills evenly over the window.
# ARGV: emission interval (µs, fractional: a quota may exceed the window's microseconds),
# window (µs), "1" to peek (answer without spending). Returns {allowed, remaining, retry_after_us,
# reset_us}: reset is when the whole quota is available again.
_GCRA = """
local t = redis.call('TIME')
-- Microseconds since 2023-11-14 rather than 1970: doubles then keep a resolution far finer
-- than the smallest emission interval (a quota of millions per second).
local now = (tonumber(t[1]) - 1700000000) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local ahead = new_tat - now
if ahead > window then
    return {0, 0, ahead - window, tat - now}
end
if ARGV[3] == '1' then  -- peek: would it be allowed? (spends nothing)
    return {1, math.floor((window - ahead) / interval), 0, tat - now}
end
local ttl_ms = math.max(1, math.ceil(ahead / 1000))
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', ttl_ms)
return {1, math.floor((window - ahead) / interval), 0, ahead}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one rate-limit check, in the terms of the RateLimit headers."""

    allowed: bool
    quota: int
    window_s: float
    remaining: int
    retry_after_s: float
    reset_s: float


@dataclass(frozen=True, slots=True)
class _Check:
    key: str
    interval_us: str  # repr of a float: a quota may exceed the window's microseconds
    window_us: int
    peek: bool = False


# The script's answer: allowed, remaining, retry after (µs), reset (µs); None: failed open.
_Answer = list[int] | None


class RateLimiter:
    """Decides per (group, identity) whether a request may proceed.

    Decisions asked for while others are on their way to Redis wait and go together in the
    next pipeline (natural batching, ``kernel.batching``): a busy API process pays one round
    trip for many requests, an idle one one per request. Each decision is still its own
    atomic script run.
    """

    def __init__(self, link: RedisLink, *, max_batch: int = 64) -> None:
        self._link = link
        self._sha = link.client.register_script(_GCRA).sha  # sent by EVALSHA in pipelines
        self._batches: Coalescer[_Check, _Answer] = Coalescer(
            self._decide_batch, max_batch=max_batch
        )

    async def decide(
        self, *, group: str, identity: str, quota: int, window_s: float, peek: bool = False
    ) -> Decision | None:
        """The decision, or None when Redis cannot answer (the caller then lets it through).
        With ``peek``, whether one more would be allowed, spending nothing."""
        if not self._link.available:
            RATE_LIMIT_FAIL_OPEN.inc()
            return None
        window_us = int(window_s * 1_000_000)
        check = _Check(
            self._link.key("rl", group, identity), repr(window_us / quota), window_us, peek
        )
        answer = await self._batches.submit(check)
        if answer is None:
            return None
        allowed, remaining, retry_us, reset_us = answer
        return Decision(
            allowed=bool(allowed),
            quota=quota,
            window_s=window_s,
            remaining=int(remaining),
            retry_after_s=int(retry_us) / 1_000_000,
            reset_s=int(reset_us) / 1_000_000,
        )

    async def _decide_batch(self, checks: list[_Check]) -> list[_Answer]:
        try:
            try:
                return await self._run(checks)
            except NoScriptError:  # Redis restarted or was flushed: nothing ran; load, again
                await self._link.client.script_load(_GCRA)
                return await self._run(checks)
        except Exception as exc:  # any Redis failure: fail open (ADR 0005)
            self._link.failed("rate_limit", exc)
            RATE_LIMIT_FAIL_OPEN.inc(len(checks))
            return [None] * len(checks)

    async def _run(self, checks: list[_Check]) -> list[_Answer]:
        async with self._link.client.pipeline(transaction=False) as pipe:
            for check in checks:
                pipe.evalsha(
                    self._sha, 1, check.key, check.interval_us, check.window_us, int(check.peek)
                )
            answers: list[_Answer] = await pipe.execute()
        return answers

    def headers(self, group: str, decision: Decision) -> list[tuple[bytes, bytes]]:
        """RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers), Retry-After."""
        window = f"{decision.window_s:g}"
        out = [
            (b"ratelimit-policy", f'"{group}";q={decision.quota};w={window}'.encode()),
            (
                b"ratelimit",
                f'"{group}";r={decision.remaining};t={math.ceil(decision.reset_s)}'.encode(),
            ),
        ]
        if not decision.allowed:
            out.append((b"retry-after", str(max(1, math.ceil(decision.retry_after_s))).encode()))
        return out
