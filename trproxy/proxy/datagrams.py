"""The proxy's datagram listener: the app's UDP messages of a protocol that runs over UDP
(``Dialect.datagrams``: DNS on port 53), recorded and replayed.

The redirect (``bpf/redirect.bpf.c``: connect4/6 and sendmsg4/6 of UDP to port 53) sends
them to this listener, on 127.0.0.1 and ::1 with one port, and keeps the server the app
asked; ``server_of`` (``Redirector.dns_server``) gives it back for a datagram, and only
for a socket of the run. Each datagram is framed as one message of the protocol's stream
form and goes through the dialect's recorder or replayer, so UDP and TCP record the same
documents. Record forwards the datagram to the server and keeps what the recorder makes
of the pair (each distinct one once). Replay answers from the recording and asks nobody,
so the recorded names need not exist: it tries the server the app asks, then every
server of that protocol something was recorded from (another machine's resolver); a
miss gets the dialect's error (DNS: SERVFAIL) and a report line naming the closest
recorded request. A datagram the dialect cannot read is forwarded unrecorded (record)
or dropped (replay), never a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..protocols.base import Dialect, Direction, Interaction, Lookup, ProtocolError
from ..protocols.registry import by_udp_port
from ..store import Exchange
from ..store.errors import NoMatch
from .context import Mode, RunContext, format_destination

log = logging.getLogger("trproxy")
TIMEOUT = 5.0  # how long record waits for the server's answer (a stub resolver's timeout)
ServerOf = Callable[[tuple, tuple], "tuple[str, int] | None"]  # (sender, our address)


class DatagramListener:
    """UDP sockets on 127.0.0.1:port and [::1]:port that answer the app's datagrams."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.port = 0
        self.server_of: ServerOf | None = None
        self._transports: list[asyncio.DatagramTransport] = []
        self._tasks: set[asyncio.Task] = set()
        self._recorded: set[str] = set()  # (destination, request, responses) written this run
        self._places: dict[str, list[str]] = {}  # replay: protocol -> destinations recorded

    async def start(self) -> int:
        """Listen on one free port of both loopback addresses; returns it."""
        loop = asyncio.get_running_loop()
        for _attempt in range(20):
            v4, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), local_addr=("127.0.0.1", 0))
            self.port = v4.get_extra_info("sockname")[1]
            try:
                v6, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), local_addr=("::1", self.port))
            except OSError:
                v4.close()
                continue
            self._transports = [v4, v6]  # type: ignore[list-item]
            return self.port
        raise OSError("no UDP port free on both 127.0.0.1 and ::1")

    def received(self, transport: asyncio.DatagramTransport, data: bytes, sender: tuple) -> None:
        local = transport.get_extra_info("sockname")
        server = self.server_of(sender, local) if self.server_of is not None else None
        dialect = by_udp_port(server[1]) if server is not None else None
        if server is None or dialect is None or dialect.datagrams is None:
            log.warning("datagram from %s was not redirected from the app's cgroup: dropped", sender[:2])
            return
        task = asyncio.ensure_future(self._answer(transport, dialect, data, sender, server))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, transport: asyncio.DatagramTransport, dialect: Dialect, data: bytes,
                      sender: tuple, server: tuple[str, int]) -> None:
        destination = format_destination(*server)
        try:
            reply = None
            if self.ctx.mode is not Mode.RECORD:
                reply = self._replay(dialect, data, destination, fallback=self.ctx.mode is Mode.NEW_EPISODES)
            if reply is None and self.ctx.mode in (Mode.RECORD, Mode.NEW_EPISODES):
                reply = await self._record(dialect, data, server, destination)
            if reply is not None:
                transport.sendto(reply, sender)
        except Exception:  # one bad datagram must not take the listener down
            log.exception("%s datagram to %s failed", dialect.name, destination)

    # --- replay ---------------------------------------------------------------------------
    def _replay(self, dialect: Dialect, data: bytes, destination: str, fallback: bool) -> bytes | None:
        """The recorded answer (None with ``fallback`` when there is none: new episodes
        records it); the dialect's error and a miss otherwise."""
        assert dialect.datagrams is not None
        replayer = dialect.replayer_for(False, destination)
        try:
            lookups = [e for e in replayer.feed(dialect.datagrams.frame(data)) if isinstance(e, Lookup)]
        except ProtocolError as exc:
            log.warning("%s datagram to %s cannot be read: %s", dialect.name, destination, exc)
            return None
        out = b""
        for lookup in lookups:
            answer = self._answer_one(dialect, replayer, lookup, destination, fallback)
            if answer is None:
                return None
            out += answer
        return dialect.datagrams.unframe(out) if out else None

    def _answer_one(self, dialect: Dialect, replayer: Any, lookup: Lookup, destination: str,
                    fallback: bool) -> bytes | None:
        pool, protocol = self.ctx.pool, dialect.name
        if protocol not in self._places:
            self._places[protocol] = sorted(pool.recorded_destinations(protocol))
        why = None
        for place in [destination] + [d for d in self._places[protocol] if d != destination]:
            try:
                served = pool.find(protocol, place, lookup.request, lookup.summary)
            except NoMatch as miss:
                why = why or miss.reason
                continue
            try:
                answer: bytes = replayer.respond(lookup, served.exchange.responses)
            except Exception as exc:  # a recording is untrusted input
                why = f"the recorded answer cannot be replayed: {exc}"
                break
            self.ctx.served(protocol, destination, served.exchange)
            return answer
        if fallback:
            return None
        recorded = sorted({e.exchange.summary for e in pool.entries(protocol)})
        closest = difflib.get_close_matches(lookup.summary, recorded, n=1, cutoff=0)
        reason = (why or "nothing recorded") + (f"; closest recorded: {closest[0]}" if closest else "")
        self.ctx.missed({"protocol": protocol, "destination": destination, "request": lookup.summary,
                         "reason": reason, "nearest": list(closest), "test": self.ctx.test})
        return bytes(replayer.miss(lookup, reason))

    # --- record ---------------------------------------------------------------------------
    async def _record(self, dialect: Dialect, data: bytes, server: tuple[str, int],
                      destination: str) -> bytes | None:
        """Ask the server the app asked; keep what the dialect's recorder makes of it."""
        assert dialect.datagrams is not None
        started = datetime.now(UTC)
        t0 = time.monotonic()
        answer = await ask(server, data)
        if answer is None:
            return None  # no answer: the app times out and retries, as without trproxy
        recorder = dialect.recorder_for(False, destination)
        try:
            items = [*recorder.feed(Direction.CLIENT, dialect.datagrams.frame(data)),
                     *recorder.feed(Direction.SERVER, dialect.datagrams.frame(answer))]
        except ProtocolError as exc:
            self.ctx.problems.append(f"a {dialect.name} datagram exchange with {destination} "
                                     f"could not be recorded: {exc}")
            return answer
        for item in items:
            if not isinstance(item, Interaction):
                continue
            seen = json.dumps([destination, item.request, item.responses], sort_keys=True, default=str)
            if seen in self._recorded:  # the same answer again adds nothing to replay
                continue
            self._recorded.add(seen)
            self.ctx.record(Exchange(dialect.name, destination, item.request, item.responses,
                                     lifetime=item.lifetime, summary=item.summary,
                                     started=started.isoformat(),
                                     duration_ms=(time.monotonic() - t0) * 1000,
                                     order=self.ctx.next_order(), tests=sorted(self.ctx.open_tests)))
        return answer

    async def close(self) -> None:
        for transport in self._transports:
            transport.close()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


async def ask(server: tuple[str, int], data: bytes) -> bytes | None:
    """One datagram to ``server``: the first answer, or None after ``TIMEOUT``."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, reply: bytes, addr: Any) -> None:
            if not got.done():
                got.set_result(reply)

        def error_received(self, exc: Exception) -> None:  # ICMP unreachable: nobody there
            if not got.done():
                got.set_exception(exc)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=server)
    try:
        transport.sendto(data)
        return await asyncio.wait_for(got, TIMEOUT)
    except (TimeoutError, OSError) as exc:
        log.warning("%s did not answer: %s", format_destination(*server), exc or "timeout")
        return None
    finally:
        transport.close()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, listener: DatagramListener) -> None:
        self.listener = listener
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.transport is not None:
            self.listener.received(self.transport, data, addr)
