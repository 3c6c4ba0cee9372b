"""The proxy's DNS listener: the app's name lookups over UDP, recorded and replayed.

The redirect (``bpf/redirect.bpf.c``: connect4/6 and sendmsg4/6 of UDP to port 53) sends
every DNS query of the run to this listener, on 127.0.0.1 and ::1 with one port, and
keeps the server the app asked; ``server_of`` (``Redirector.dns_server``) gives it back
for a datagram, and only for a socket of the run. Record forwards each query there and
keeps the question with its answer (a ``kind: dns`` document, ``session``: the same name
is looked up again and again, so its last answer repeats). Replay answers from those
documents and asks no resolver, so the recorded names need not exist; a question nothing
answers gets SERVFAIL and a miss naming the closest recorded name. A query that is not
DNS is forwarded (record) or dropped (replay), never a crash.
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

from ..protocols.dns import codec, readable
from ..store import Exchange
from ..store.errors import NoMatch
from .context import Mode, RunContext, format_destination

log = logging.getLogger("trproxy")
PROTOCOL = "dns"
TIMEOUT = 5.0  # how long record waits for the server's answer (glibc's default timeout)
ServerOf = Callable[[tuple, tuple], "tuple[str, int] | None"]  # (sender, our address)


class DnsListener:
    """UDP sockets on 127.0.0.1:port and [::1]:port that answer the app's queries."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.port = 0
        self.server_of: ServerOf | None = None
        self._transports: list[asyncio.DatagramTransport] = []
        self._tasks: set[asyncio.Task] = set()
        self._recorded: set[str] = set()  # (question, answer) pairs written this run
        self._places: list[str] | None = None  # replay: where DNS answers were recorded

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
        if server is None:
            log.warning("DNS query from %s was not redirected from the app's cgroup: dropped", sender[:2])
            return
        task = asyncio.ensure_future(self._answer(transport, data, sender, server))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, transport: asyncio.DatagramTransport, data: bytes, sender: tuple,
                      server: tuple[str, int]) -> None:
        destination = format_destination(*server)
        try:
            query = codec.parse(data)
        except codec.DnsError as exc:
            query = None
            log.warning("not a DNS query from %s to %s: %s", sender[:2], destination, exc)
        try:
            reply = None
            if query is not None and self.ctx.mode is not Mode.RECORD:
                reply = self._replay(query, destination, fallback=self.ctx.mode is Mode.NEW_EPISODES)
            if reply is None and self.ctx.mode in (Mode.RECORD, Mode.NEW_EPISODES):
                reply = await self._record(data, query, server, destination)
            if reply is not None:
                transport.sendto(reply, sender)
        except Exception:  # one bad query must not take the listener down
            log.exception("DNS query to %s failed", destination)

    # --- replay ---------------------------------------------------------------------------
    def _replay(self, query: codec.Message, destination: str, fallback: bool) -> bytes | None:
        """The recorded answer to ``query`` (None with ``fallback`` when there is none: new
        episodes records it); SERVFAIL and a miss otherwise."""
        if len(query.questions) != 1 or query.is_response:
            return None if fallback else codec.serialize(readable.failure(query, "FORMERR"))
        request = readable.question(query.questions[0])
        summary = readable.summary(request)
        pool = self.ctx.pool
        if self._places is None:
            self._places = sorted({e.exchange.destination for e in pool.entries()
                                   if e.exchange.protocol == PROTOCOL})
        places = [destination] + [d for d in self._places if d != destination]
        why = None
        for place in places:  # the app may ask another server at replay (another machine's)
            try:
                served = pool.find(PROTOCOL, place, request, summary)
            except NoMatch as miss:
                why = why or miss.reason
                continue
            try:
                reply = codec.serialize(readable.reply(query, served.exchange.responses[0]))
            except (ValueError, IndexError) as exc:
                why = f"the recorded answer is not valid: {exc}"
                break
            self.ctx.served(PROTOCOL, destination, served.exchange)
            return reply
        if fallback:
            return None
        closest = difflib.get_close_matches(request["name"], self._names(), n=1, cutoff=0)
        reason = (why or "nothing recorded") + (f"; closest recorded name: {closest[0]}" if closest else
                                                "; no DNS answers were recorded")
        self.ctx.missed({"protocol": PROTOCOL, "destination": destination, "request": summary,
                         "reason": reason, "nearest": list(closest), "test": self.ctx.test})
        return codec.serialize(readable.failure(query, "SERVFAIL"))

    def _names(self) -> list[str]:
        return sorted({e.exchange.request.get("name", "") for e in self.ctx.pool.entries()
                       if e.exchange.protocol == PROTOCOL and isinstance(e.exchange.request, dict)})

    # --- record ---------------------------------------------------------------------------
    async def _record(self, data: bytes, query: codec.Message | None, server: tuple[str, int],
                      destination: str) -> bytes | None:
        """Ask the server the app asked; keep the question and its answer."""
        started = datetime.now(UTC)
        t0 = time.monotonic()
        answer = await ask(server, data, query.id if query is not None else None)
        if answer is None:
            return None  # no answer: the app times out and retries, as without trproxy
        if query is None or len(query.questions) != 1:
            return answer
        try:
            reply = codec.parse(answer)
        except codec.DnsError as exc:
            self.ctx.problems.append(f"a DNS answer from {destination} could not be decoded: {exc}")
            return answer
        request = readable.question(query.questions[0])
        response = readable.answer(reply)
        seen = json.dumps([destination, request, response], sort_keys=True)
        if seen not in self._recorded:  # the same answer again adds nothing to replay
            self._recorded.add(seen)
            self.ctx.record(Exchange(PROTOCOL, destination, request, [response], lifetime="session",
                                     summary=readable.summary(request), started=started.isoformat(),
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


async def ask(server: tuple[str, int], data: bytes, ident: int | None) -> bytes | None:
    """One query to ``server`` over UDP: its answer (the one with the query's id), or None
    after ``TIMEOUT``."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[bytes] = loop.create_future()

    class Client(asyncio.DatagramProtocol):
        def datagram_received(self, reply: bytes, addr: Any) -> None:
            if not got.done() and (ident is None or reply[:2] == ident.to_bytes(2, "big")):
                got.set_result(reply)

        def error_received(self, exc: Exception) -> None:  # ICMP unreachable: nobody there
            if not got.done():
                got.set_exception(exc)

    transport, _ = await loop.create_datagram_endpoint(Client, remote_addr=server)
    try:
        transport.sendto(data)
        return await asyncio.wait_for(got, TIMEOUT)
    except (TimeoutError, OSError) as exc:
        log.warning("DNS server %s did not answer: %s", format_destination(*server), exc or "timeout")
        return None
    finally:
        transport.close()


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, listener: DnsListener) -> None:
        self.listener = listener
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.transport is not None:
            self.listener.received(self.transport, data, addr)
