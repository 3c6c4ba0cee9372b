"""Replay sessions: no upstream is ever opened.

The dialect's replayer turns the client's bytes into lookups; the mock pool answers
them, and a miss becomes the protocol's own error plus a report entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from ..protocols.base import Dialect, Lookup, ProtocolError, Reply
from ..protocols.registry import detect, pre_protocol
from ..store import Affinity, NoMatch
from ..tls.errors import TlsError
from .context import Mode, format_destination
from .record import conn_ids
from .relay import CHUNK, reset

if TYPE_CHECKING:
    from .context import RunContext

log = logging.getLogger("trproxy")
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
_SERVER_FIRST_WAIT = 0.5  # how long replay waits for a client that expects the server to speak
_MAX_HOLD_MS = 5000  # bound of a held answer (Lookup.context["hold_ms"])
FORWARD = object()  # _answer: fetch this request from the real server (new-episodes)


async def replay(ctx: RunContext, client: Streams, host: str, port: int) -> None:
    reader, writer = client
    destination = format_destination(host, port)
    connection = next(conn_ids)
    buffered = b""
    dialect: Dialect | None = None
    replayer = None
    tls = False
    server_name = host  # the TLS server name the app asked for (its SNI)
    upstream: Any = None  # new-episodes: forward.Upstream, the real server, at the first miss
    try:
        while dialect is None:
            try:
                data = await asyncio.wait_for(reader.read(CHUNK), _SERVER_FIRST_WAIT if not buffered else None)
            except TimeoutError:
                data = None
            buffered += data or b""
            while not tls and ctx.tls is not None and (pre := pre_protocol(buffered)) is not None:
                # Postgres SSLRequest -> "S" when the recording was TLS, else "N" (as the server
                # answered, and plaintext replays faster); GSSENCRequest -> "N"
                answer, accept = pre
                accept = accept if ctx.pool.recorded_tls(destination) else None
                writer.write(accept or answer)
                await writer.drain()
                buffered = data = await reader.read(CHUNK)
                if accept:
                    break  # the ClientHello follows
            if not tls and ctx.tls is not None and buffered[:1] == b"\x16":
                from ..tls.stream import intercept_replay, read_client_hello

                hello, buffered = await read_client_hello(reader, buffered)
                if hello is not None:
                    server_name = hello.sni or host
                    stream = await intercept_replay(ctx.tls, (reader, writer), hello, buffered,
                                                    server_name, ctx.pool.recorded_h2(destination))
                    reader = writer = stream  # type: ignore[assignment]
                    tls, buffered = True, await stream.read(CHUNK)
                    data = buffered
            dialect = detect(buffered, port, final=not data)
            if not data and dialect is None:
                return
        assert dialect is not None
        replayer = dialect.replayer_for(tls, destination, ctx.blobs)
        pull = getattr(replayer, "pull", None)  # bodies streamed from files
        affinity = Affinity()
        data = buffered
        while data:
            for event in replayer.feed(data):
                if isinstance(event, Reply):
                    writer.write(event.data)
                else:
                    out = _answer(ctx, dialect, replayer, event, destination, affinity)
                    if out is FORWARD:
                        if upstream is None:
                            from .new_episodes import (
                                Upstream,  # h11 and the HTTP dialect: only here
                            )

                            upstream = Upstream(ctx, host, port, server_name if tls else None)
                        out = await _forward_or_miss(ctx, dialect, replayer, event, destination,
                                                     upstream, connection)
                    if out is None:
                        reset(writer)
                        return
                    assert isinstance(out, bytes)
                    if out and (hold := event.context.get("hold_ms")):
                        await writer.drain()  # what came before goes out now
                        await asyncio.sleep(min(hold, _MAX_HOLD_MS) / 1000)
                    writer.write(out)
            await writer.drain()
            while pull is not None and (more := pull()):
                writer.write(more)
                await writer.drain()
            if getattr(replayer, "close_after", False):
                break  # the server would hang up now (Terminate, CancelRequest)
            data = await reader.read(CHUNK)
        log.debug("replay conn %d to %s (%s) closed by client", connection, destination, dialect.name)
    except (ProtocolError, TlsError) as exc:
        ctx.replay_failed(destination, dialect, exc)
        reset(writer)
    except (ConnectionError, OSError):
        pass
    finally:
        if upstream is not None:
            await upstream.close()
        if replayer is not None and hasattr(replayer, "close"):
            replayer.close()
        with contextlib.suppress(Exception):
            writer.close()


def _answer(ctx: RunContext, dialect: Dialect, replayer, lookup: Lookup, destination: str,
            affinity: Affinity) -> bytes | None | object:
    """Bytes for one lookup; None means close the connection (no protocol-native error);
    ``FORWARD``: new-episodes, fetch it from the real server (``forward``)."""
    try:
        served = ctx.pool.find(dialect.name, destination, lookup.request, lookup.summary,
                               affinity, ctx.current_test,
                               repeat_last=bool(lookup.context.get("repeat_last")))
    except NoMatch as miss:
        if ctx.mode is Mode.NEW_EPISODES and lookup.context.get("forward") is not None:
            return FORWARD  # HTTP: this request alone is fetched and recorded
        return _miss(ctx, dialect, replayer, lookup, destination, miss)
    ctx.served(dialect.name, destination, served.exchange)
    if served.repeat:
        lookup.context["repeat"] = True
    out = replayer.respond(lookup, served.exchange.responses) if lookup.expects_reply else b""
    if problem := lookup.context.get("unreplayable"):  # matched, but not served as recorded
        ctx.problems.append(f"{dialect.name} {destination}: {lookup.summary}: {problem}")
        log.warning("could not replay %s %s as recorded: %s", destination, lookup.summary, problem)
    return out


def _miss(ctx: RunContext, dialect: Dialect, replayer, lookup: Lookup, destination: str,
          miss: NoMatch) -> bytes | None:
    if not lookup.context.get("handshake"):  # handshakes the replayer answers itself
        ctx.missed(dialect.name, destination, miss)
    if not lookup.expects_reply:
        return b""
    out = replayer.miss(lookup, miss.reason)
    # b"": no protocol-native error exists, close; unless the lookup is one part of a
    # request answered as a whole later (a Kafka Fetch split per partition)
    return out if out or lookup.context.get("partial") else None


async def _forward_or_miss(ctx: RunContext, dialect: Dialect, replayer, lookup: Lookup,
                           destination: str, upstream: Any, connection: int) -> bytes | None:
    """new-episodes: the real server's answer, recorded; a miss when it cannot be had."""
    from .new_episodes import ForwardError, forward

    try:
        return await forward(ctx, upstream, replayer, lookup, destination, connection)
    except ForwardError as exc:
        reason = f"not recorded, and fetching it from the server failed: {exc}"
        return _miss(ctx, dialect, replayer, lookup, destination, NoMatch(lookup.summary, reason, []))
