"""``new-episodes`` for HTTP, per request: what no recording answers is fetched and recorded.

A replayed HTTP connection serves recorded requests from the recordings; a request none
matches is sent to the real server over the connection's own upstream connection
(HTTP/1.1, TLS when the app's connection was TLS, verified like record mode), its
answer is recorded (redacted, like any recording) and sent to the app as the server
sent it (not redacted: the app must see its real cookies and tokens, as in record mode).
So a test that makes one new call records that call alone (VCR.py's ``new_episodes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

import h11

from ..httpclient import Http1Connection
from ..protocols.http import HttpConfig, Redaction
from ..protocols.http.forward import ForwardRequest
from ..protocols.http.readable import redact_message
from ..store import Exchange
from .context import RunContext

log = logging.getLogger("trproxy")


class ForwardError(Exception):
    """The request could not be fetched from the real server (the reason says why)."""


class Upstream:
    """One replayed connection's connection to the real server, opened at the first miss."""

    def __init__(self, ctx: RunContext, host: str, port: int, tls_name: str | None) -> None:
        self.ctx, self.host, self.port, self.tls_name = ctx, host, port, tls_name
        self._conn: Http1Connection | None = None
        self.seq = 0

    async def fetch(self, request: ForwardRequest, config: HttpConfig) -> dict[str, Any]:
        """The server's answer as a readable response, not redacted."""
        unredacted = HttpConfig(redaction=Redaction(frozenset(), frozenset()), noise=config.noise,
                                max_body=config.max_body, max_head=config.max_head)
        headers = list(request.headers)
        if request.body or request.method.upper() in (b"POST", b"PUT", b"PATCH"):
            headers.append((b"content-length", b"%d" % len(request.body)))  # RFC 9110 §8.6
        message = h11.Request(method=request.method, target=request.target, headers=headers)
        for attempt in (1, 2):  # a kept-alive connection the server closed while idle: reopen
            if self._conn is None or not self._conn.reusable:
                await self.close()
                self._conn = await self._open()
            try:
                return await self._conn.exchange(message, request.body, unredacted, self.ctx.blobs)
            except ConnectionResetError:
                await self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _open(self) -> Http1Connection:
        if self.tls_name is None or self.ctx.tls is None:
            return await Http1Connection.open(self.host, self.port)
        from ..tls.ca import upstream_context

        ssl = upstream_context(verify=self.ctx.tls.verify, ca_file=self.ctx.tls.ca_file,
                               alpn=["http/1.1"])
        return await Http1Connection.open(self.host, self.port, ssl, self.tls_name)

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await conn.close()


async def forward(ctx: RunContext, upstream: Upstream, replayer: Any, lookup: Any,
                  destination: str, connection: int) -> list[Any]:
    """Fetch and record one request no recording matched (see the module doc); its live
    responses. ``ForwardError`` when it cannot be forwarded or the server cannot be had."""
    request = lookup.context.forward()
    if request is None:
        raise ForwardError("its body is over max_body (only its digest was kept)")
    config: HttpConfig = replayer.config
    started, t0 = datetime.now(UTC).isoformat(timespec="microseconds"), time.monotonic()
    try:
        response = await asyncio.wait_for(upstream.fetch(request, config), ctx.connect_timeout * 6)
    except (OSError, TimeoutError, h11.ProtocolError, ValueError) as exc:
        await upstream.close()
        raise ForwardError(str(exc) or type(exc).__name__) from exc
    upstream.seq += 1
    ctx.record(Exchange(
        protocol="http", destination=destination, request=lookup.request,
        responses=[redact_message(response, config.redaction)], lifetime="data",
        summary=f"{lookup.summary} -> {response['status']}", connection=connection,
        seq=upstream.seq, started=started, duration_ms=(time.monotonic() - t0) * 1000,
        tests=sorted(ctx.open_tests), tls=upstream.tls_name is not None))
    log.info("new episode %s %s: %s", destination, lookup.summary, response["status"])
    return [response]
