"""A minimal HTTP/1.1 keep-alive client on raw asyncio streams.

The load generator must not be what limits a benchmark; a general-purpose client spends more
CPU per request than the servers it measures. This one writes a prepared request and reads a
``Content-Length`` framed response, nothing else (no chunked bodies, no redirects, no TLS).
"""

from __future__ import annotations

import asyncio
import time


class HttpError(Exception):
    """The server answered something this client does not parse, or hung up."""


class Connection:
    """One keep-alive connection to ``host:port``."""

    IDLE_REOPEN_S = 3.0  # uvicorn closes idle keep-alive connections after 5 s

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_used = 0.0

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        self.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        self._reader, self._writer = reader, writer
        return reader, writer

    def close(self) -> None:
        """Drop the connection (a later request opens a new one)."""
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one prepared request; returns (status, body)."""
        now = time.monotonic()
        if self._writer is None or now - self._last_used > self.IDLE_REOPEN_S:
            reader, writer = await self._open()
        else:
            assert self._reader is not None
            reader, writer = self._reader, self._writer
        try:
            writer.write(raw)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            lowered = head.lower()
            at = lowered.find(b"\r\ncontent-length:")
            if at >= 0:
                end = lowered.index(b"\r\n", at + 2)
                length = int(lowered[at + 17 : end])
            elif b"transfer-encoding: chunked" in lowered:
                raise HttpError("chunked responses are not supported")
            body = await reader.readexactly(length) if length else b""
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            self.close()
            raise HttpError(str(e) or type(e).__name__) from None
        if b"\r\nconnection: close" in lowered:
            self.close()
        self._last_used = time.monotonic()
        return status, body


def build_request(
    method: str,
    host: str,
    port: int,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> bytes:
    """The bytes of one HTTP/1.1 request with a JSON body."""
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}:{port}"]
    if body:
        lines += ["content-type: application/json", f"content-length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def get(host: str, port: int, path: str, *, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """One GET on a fresh connection (health checks, not load)."""
    conn = Connection(host, port)
    try:
        async with asyncio.timeout(timeout_s):
            return await conn.request(build_request("GET", host, port, path))
    finally:
        conn.close()
