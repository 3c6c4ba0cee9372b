"""``new-episodes``, per request: what no recording answers is fetched and recorded.

A replayed connection serves recorded requests from the recordings; a request none
matches, whose dialect can forward it (``Lookup.context.forward``, HTTP's), is sent to
the real server over the replayed connection's own upstream connection (TLS when the
app's connection was TLS, verified like record mode). The dialect's
``ForwardConversation`` does the protocol work, sans-I/O; this module only opens the
connection and pumps bytes. The answer is recorded redacted, like any recording, and the
app gets it as the server sent it (its real cookies and tokens, as in record mode). So a
test that makes one new call records that call alone (VCR.py's ``new_episodes``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from ..protocols.base import ForwardConversation, Lookup, ProtocolError
from ..store import Exchange
from .context import RunContext
from .netns import open_upstream
from .relay import CHUNK

log = logging.getLogger("trproxy")


class ForwardError(Exception):
    """The request could not be fetched from the real server (the reason says why)."""


class _Unanswered(Exception):
    """The connection ended before any byte of the answer (kept alive, closed while idle)."""


class Upstream:
    """One replayed connection's connection to the real server, opened at the first miss."""

    def __init__(self, ctx: RunContext, host: str, port: int, tls_name: str | None) -> None:
        self.ctx, self.host, self.port, self.tls_name = ctx, host, port, tls_name
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.reused = False  # the open connection already carried an exchange
        self.seq = 0

    async def exchange(self, conversation: ForwardConversation) -> None:
        """Pump one conversation to its end (``_Unanswered``: no byte came back)."""
        if self._streams is None:
            self._streams = await self._open(conversation.alpn)
            self.reused = False
        reader, writer = self._streams
        try:
            writer.write(conversation.send())
            await writer.drain()
            while not conversation.done:
                data = await reader.read(CHUNK)
                if not data and not conversation.answered:
                    raise _Unanswered("the server closed the connection without answering")
                conversation.receive(data)
        except ConnectionError as exc:
            if not conversation.answered:
                raise _Unanswered(str(exc)) from exc
            raise
        self.reused = True
        if not conversation.reusable:
            await self.close()

    async def _open(self, alpn: tuple[str, ...]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.tls_name is None or self.ctx.tls is None:
            return await open_upstream(self.ctx.upstream_netns, self.host, self.port, limit=CHUNK)
        from ..tls.ca import upstream_context

        ssl = upstream_context(verify=self.ctx.tls.verify, ca_file=self.ctx.tls.ca_file,
                               alpn=list(alpn))
        return await open_upstream(self.ctx.upstream_netns, self.host, self.port, limit=CHUNK, ssl=ssl,
                                   server_hostname=self.tls_name)

    async def close(self) -> None:
        if self._streams is not None:
            _reader, writer = self._streams
            self._streams = None
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def forward(ctx: RunContext, upstream: Upstream, protocol: str, lookup: Lookup,
                  destination: str, connection: int, alpn: str | None = None) -> list[Any]:
    """Fetch and record one request no recording matched (see the module doc); its live
    responses. ``ForwardError`` when it cannot be forwarded or the server cannot be had.
    ``alpn``: what the app's own TLS connection negotiated (recorded as usual)."""
    assert lookup.context.forward is not None
    started, t0 = datetime.now(UTC).isoformat(timespec="microseconds"), time.monotonic()
    conversation: ForwardConversation | None = None
    for attempt in (1, 2):  # a kept-alive connection the server closed while idle: reopen
        conversation = lookup.context.forward()
        if conversation is None:
            raise ForwardError("it cannot be sent again (its body is over max_body: only its "
                               "digest was kept)")
        reused = upstream.reused
        try:
            await asyncio.wait_for(upstream.exchange(conversation), ctx.connect_timeout * 6)
            break
        except _Unanswered as exc:
            await upstream.close()
            if not reused or attempt == 2:
                raise ForwardError(str(exc)) from exc
        except (OSError, TimeoutError, ProtocolError, ValueError) as exc:
            await upstream.close()
            raise ForwardError(str(exc) or type(exc).__name__) from exc
    assert conversation is not None
    try:
        interaction, live = conversation.result()
    except ProtocolError as exc:
        raise ForwardError(str(exc)) from exc
    upstream.seq += 1
    ctx.record(Exchange(
        protocol=protocol, destination=destination, request=interaction.request,
        responses=interaction.responses, lifetime=interaction.lifetime,
        summary=interaction.summary, connection=connection, seq=upstream.seq, started=started,
        duration_ms=(time.monotonic() - t0) * 1000, tests=sorted(ctx.open_tests),
        tls=upstream.tls_name is not None, alpn=alpn))
    log.info("new episode %s %s", destination, interaction.summary)
    return live
