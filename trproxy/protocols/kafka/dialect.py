"""The Kafka dialect: record (pair requests with responses) and replay (answer from recordings).

Recording: one ``KafkaCodec`` per connection sees both directions; each request waits,
keyed by correlation id, for its response, and the pair becomes an ``Interaction`` in the
readable form of ``readable``. Produce with ``acks=0`` gets no response and is emitted at
once with ``responses=[]``; ``data`` requests still waiting when either side closes (a
consumer's long-poll Fetch, typically) are emitted with ``responses=[]``, so that replay
answers them the same way: with nothing. Not ``unanswered`` (which would hold what
follows): a Fetch is split per partition, and an idle partition's part at an unchanged
offset matches the cut poll's part in any later Fetch, which would then never be
answered. Unanswered ``session`` requests are
dropped: served again and again, "no answer" would hang every later client.

Lifetimes: ``session`` for ApiVersions, Metadata, FindCoordinator, the SASL handshake,
Heartbeat (a timer-driven keep-alive) and client telemetry (``apis.Api.lifetime``);
``data`` for everything else.

Fetch and Produce are recorded and looked up one partition at a time and reassembled
(``split``): which partitions a client groups into one request depends on timing.

Replay: the client's requests become ``Lookup`` events whose ``context`` holds the live
correlation id; ``respond`` renders the recorded response with that id (broker addresses
in Metadata/FindCoordinator stay as recorded: the redirect brings connections to them
back to the proxy). ``miss`` answers with the API's own error response (``errors``).
Lookups that are parts of one request (``split``) carry ``context.partial``: all but
the last answer ``b""`` from ``respond``/``miss`` — nothing to send yet, not a hang-up.

A consumer that polls past the end of the recording asks for offsets whose recorded
answers were all used: Fetch lookups carry ``repeat_last``, so the last recorded answer
for that partition and offset is served again (what a broker answers too; not a miss),
and when none of them has records the whole answer is held ``max_wait_ms``
(``hold_ms``), as a broker holds a Fetch with nothing new, instead of letting the
consumer spin.
"""

from __future__ import annotations

from typing import Any

from ..base import (
    NEED_DATA,
    Direction,
    Failure,
    Interaction,
    Lifetime,
    Lookup,
    LookupContext,
    ProtocolError,
    Readable,
    Reply,
)
from .apis import APIS
from .codec import KafkaCodec, KafkaRequest, KafkaResponse, encode_response, is_opaque_body
from .errors import UNKNOWN_SERVER_ERROR, error_code, miss_response
from .readable import (
    readable_to_request,
    readable_to_response,
    request_to_readable,
    response_to_readable,
)
from .split import LAYOUTS, Assembly, split_request, split_response


def _has_records(body: Any) -> bool:
    """Whether a readable Fetch response body carries any record batch."""
    if not isinstance(body, dict):
        return True  # opaque: assume it does (never held)
    return any(p.get("records") for t in body.get("responses") or []
               for p in t.get("partitions") or [] if isinstance(p, dict))


def lifetime_of(api_key: int) -> Lifetime:
    a = APIS.get(api_key)
    return "session" if a is not None and a.lifetime == "session" else "data"


def summary_of(req: KafkaRequest) -> str:
    """``Produce orders``, ``JoinGroup g1``, ``Fetch``: the API and what it is about."""
    body = req.body if isinstance(req.body, dict) and not req.opaque else {}
    topics = body.get("topic_data") or body.get("topics") or []
    names: list[str] = [n for n in (t.get("name") or t.get("topic") for t in topics
                                     if isinstance(t, dict)) if isinstance(n, str)]
    if names:
        return f"{req.api} {','.join(dict.fromkeys(names))}"[:80]
    group = body.get("group_id") or body.get("key")
    return f"{req.api} {group}" if isinstance(group, str) and group else req.api


class KafkaRecorder:
    def __init__(self, **codec_args: Any) -> None:
        self.codec = KafkaCodec(**codec_args)
        self.pending: dict[int, tuple[KafkaRequest, dict]] = {}

    def feed(self, direction: Direction, data: bytes) -> list[Interaction]:
        self.codec.feed(direction, data)
        out: list[Interaction] = []
        while True:
            m = self.codec.next_message()
            if m is NEED_DATA:
                break
            if isinstance(m, KafkaRequest):
                readable = request_to_readable(m)
                if m.expects_response:
                    self.pending[m.correlation_id] = (m, readable)
                else:
                    out += self._interactions(m, readable, [])
            else:
                waiting = self.pending.pop(m.correlation_id, None)
                if waiting is None:  # recorded unanswered when the client closed (below)
                    continue
                req, readable = waiting
                out += self._interactions(req, readable, [response_to_readable(m)])
        if not data:  # that side closed: what is still waiting will never be answered
            for req, readable in self.pending.values():
                # a session exchange without its answer would be served as "no answer"
                # from then on (it repeats): only data ones (a cut long poll) are kept
                if lifetime_of(req.api_key) == "data":
                    out += self._interactions(req, readable, [])
            self.pending.clear()
        return out

    @staticmethod
    def _interactions(req: KafkaRequest, readable: dict, responses: list) -> list[Interaction]:
        lifetime, summary = lifetime_of(req.api_key), summary_of(req)
        layout = LAYOUTS.get(req.api)
        if layout is None or req.opaque or is_opaque_body(readable["body"]) \
                or any(is_opaque_body(r.get("body")) for r in responses):
            return [Interaction(readable, responses, lifetime, summary)]
        # Fetch and Produce: one interaction per partition (see ``split``)
        parts = split_request(layout, readable["body"])
        bodies: list = [None] * len(parts)
        if responses:
            bodies = split_response(layout, parts, responses[0]["body"])
        return [Interaction({**readable, "body": part},
                            [{**responses[0], "body": body}] if responses else [],
                            lifetime, summary)
                for part, body in zip(parts, bodies, strict=True)]


class KafkaReplayer:
    def __init__(self, **codec_args: Any) -> None:
        self.codec = KafkaCodec(track_responses=False, **codec_args)

    def feed(self, data: bytes) -> list[Lookup | Reply]:
        self.codec.feed(Direction.CLIENT, data)
        out: list[Lookup | Reply] = []
        while True:
            m = self.codec.next_message()
            if m is NEED_DATA:
                return out
            readable = request_to_readable(m)
            parts = [readable["body"]]
            layout = LAYOUTS.get(m.api)
            if layout is not None and not m.opaque:
                parts = split_request(layout, readable["body"])
            assembly = None
            if layout is not None and len(parts) > 1:  # answers are put back together
                assembly = Assembly(layout, m.correlation_id, m.api_key, m.api_version,
                                    len(parts))
            for i, part in enumerate(parts):
                context = self._context(m)
                if assembly is not None:
                    # all but the last part answer b"" (nothing to send yet), also on a
                    # miss: "partial" tells the proxy that this b"" is not a hang-up
                    context.private.update(assembly=assembly, part=i)
                    context.partial = i < len(parts) - 1
                out.append(Lookup(
                    request={**readable, "body": part}, lifetime=lifetime_of(m.api_key),
                    summary=summary_of(m), expects_reply=m.expects_response, context=context))

    @staticmethod
    def _context(m: KafkaRequest) -> LookupContext:
        context = LookupContext(private={"correlation_id": m.correlation_id, "api_key": m.api_key,
                                         "api_version": m.api_version})
        if m.api == "Fetch" and isinstance(m.body, dict) and not m.opaque:
            # a consumer asks for the same offset again once the recorded answers are used
            # up (it polls past the end of the recording): a broker answers the same way
            context.repeat_last = True
            context.private["max_wait_ms"] = m.body.get("max_wait_ms")
        return context

    @staticmethod
    def _hold(lookup: Lookup, bodies: list[Any]) -> None:
        """A repeated Fetch answer without records goes out after ``max_wait_ms``, as a
        broker with nothing new answers, so a consumer past the recording does not spin."""
        wait = lookup.context.private.get("max_wait_ms")
        if isinstance(wait, int) and wait > 0 and not any(_has_records(b) for b in bodies):
            lookup.context.hold_ms = wait

    def respond(self, lookup: Lookup, responses: list[Readable]) -> bytes:
        """The recorded response(s), with the live correlation id; none -> no bytes."""
        cid = lookup.context.private["correlation_id"]
        try:
            assembly = lookup.context.private.get("assembly")
            if assembly is not None:
                body = responses[0]["body"] if responses else None
                assembly.repeats += bool(lookup.context.repeat)
                whole = assembly.add(lookup.context.private["part"], body)
                if whole is None:
                    return b""
                if assembly.repeats == len(assembly.parts):  # every partition: nothing new
                    self._hold(lookup, [whole.body])
                return encode_response(whole, self.codec.ctx)
            if lookup.context.repeat:
                self._hold(lookup, [r.get("body") for r in responses])
            return b"".join(encode_response(readable_to_response(r, cid), self.codec.ctx)
                            for r in responses)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ProtocolError(f"recorded Kafka response cannot be encoded: {e}") from e

    def miss(self, lookup: Lookup, reason: str) -> bytes:
        """The API's error response (see ``errors``); b"" for APIs we cannot build one for."""
        return self._error(lookup, reason, UNKNOWN_SERVER_ERROR)

    def fault(self, lookup: Lookup, failure: Failure) -> bytes:
        """The API's response carrying the error code ``failure`` names (fault injection)."""
        code = error_code(failure.error)
        return self._error(lookup, failure.message or failure.error.upper(), code)

    def _error(self, lookup: Lookup, reason: str, code: int) -> bytes:
        if not lookup.expects_reply:
            return b""
        req = readable_to_request({**lookup.request,
                                   "correlation_id": lookup.context.private["correlation_id"]})
        resp: KafkaResponse | None = miss_response(req, reason, code)
        assembly = lookup.context.private.get("assembly")
        if assembly is not None and resp is not None:
            whole = assembly.add(lookup.context.private["part"], resp.body)
            return b"" if whole is None else encode_response(whole, self.codec.ctx)
        return b"" if resp is None else encode_response(resp, self.codec.ctx)


def check_fault(failure: Failure) -> None:
    error_code(failure.error)  # raises ValueError naming the known errors
