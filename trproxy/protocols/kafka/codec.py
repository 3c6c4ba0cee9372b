"""Sans-I/O codec of one Kafka connection: size-prefixed frames, headers, bodies.

Spec: https://kafka.apache.org/protocol#protocol_messages. Every frame is ``int32 size``
then ``size`` bytes. Requests start with a request header:

* v0: ``api_key int16, api_version int16, correlation_id int32``
* v1: v0 + ``client_id`` (nullable int16-length string, even in flexible versions)
* v2: v1 + tagged fields — used by every flexible (KIP-482) request version

Responses start with ``correlation_id int32`` (header v0), plus tagged fields in flexible
versions (header v1) — except ApiVersions, whose responses always use header v0 so that a
client can read them before it knows which versions the broker speaks (KIP-511).

A response does not say which API it answers: the codec remembers each request's
correlation id, api key and version until its response arrives (``max_in_flight``
bounded). Produce with ``acks=0`` gets no response and is not remembered.

APIs and versions not in ``apis.APIS`` are not errors: their bodies travel as opaque
``{"hex": ...}`` (header v1 / v0 assumed, which is a prefix of v2 / v1, so the bytes are
kept exactly). States: each direction is ``open`` until ``feed(d, b"")`` closes it;
any illegal input raises ``DecodeError`` and leaves the codec in ``error`` for good.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from ..base import NEED_DATA, DecodeError, Direction, EncodeError, unblob
from .apis import API_KEYS, API_NAMES, APIS, Api
from .primitives import Reader, Writer
from .schema import (
    Context,
    compile_struct,
    decode_cut_short,
    encode_cut_short,
    read_tags,
    within,
    write_tags,
)

API_VERSIONS_KEY = 18
PRODUCE_KEY = 0
UNSUPPORTED_VERSION = 35


def api_name(key: int) -> str:
    return API_NAMES.get(key, f"Unknown{key}")


def api_key_of(name: str) -> int:
    if name in API_KEYS:
        return API_KEYS[name]
    if name.startswith("Unknown") and name[7:].lstrip("-").isdigit():
        return int(name[7:])
    raise EncodeError(f"unknown Kafka API {name!r}")


def schema_for(key: int, version: int) -> Api | None:
    """The table for this api key and version, or None: then the body stays opaque."""
    a = APIS.get(key)
    return a if a is not None and within(version, a.versions) else None


def is_opaque_body(body: Any) -> bool:
    """An opaque body is exactly ``{"hex": ...}`` (or base64): no schema has such a field."""
    return isinstance(body, dict) and len(body) == 1 and ("hex" in body or "base64" in body)


@dataclass(frozen=True)
class KafkaRequest:
    """One request frame. ``body`` is the readable dict, or ``{"hex"}`` when opaque."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: Any
    header_tagged: list | None = None  # unknown request-header tagged fields, if any
    opaque: bool = False
    direction = Direction.CLIENT

    @property
    def api(self) -> str:
        return api_name(self.api_key)

    @property
    def expects_response(self) -> bool:
        return not (self.api_key == PRODUCE_KEY and produce_acks(self) == 0)


@dataclass(frozen=True)
class KafkaResponse:
    """One response frame, decoded with the version of the request it answers."""

    api_key: int
    api_version: int
    correlation_id: int
    body: Any
    header_tagged: list | None = None
    opaque: bool = False
    direction = Direction.SERVER

    @property
    def api(self) -> str:
        return api_name(self.api_key)


class State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"
    ERROR = "error"


def produce_acks(req: KafkaRequest) -> int | None:
    if not req.opaque:
        return req.body.get("acks") if isinstance(req.body, dict) else None
    # an unknown Produce version: assume the v9+ layout (compact transactional id, acks)
    try:
        r = Reader(unblob(req.body))
        if req.api_version >= 3:
            r.string(compact=req.api_version >= 9, nullable=True)
        return r.int16()
    except Exception:
        return None


@dataclass
class _Side:
    buf: bytearray = field(default_factory=bytearray)
    state: State = State.OPEN


class KafkaCodec:
    """Both directions of one connection: ``feed`` bytes, ``next_message`` frames out."""

    def __init__(self, max_frame_size: int = 128 << 20, max_in_flight: int = 4096,
                 max_decompressed: int = 64 << 20, track_responses: bool = True) -> None:
        self.max_frame_size = max_frame_size
        # a replayer sees only the client: nothing answers, so nothing is remembered
        self.track_responses = track_responses
        self.max_in_flight = max_in_flight
        self.ctx = Context(max_decompressed)
        self.sides = {Direction.CLIENT: _Side(), Direction.SERVER: _Side()}
        self.in_flight: dict[int, tuple[int, int]] = {}  # correlation id -> (key, version)
        self.error: DecodeError | None = None

    # -- input --------------------------------------------------------------------------
    def feed(self, direction: Direction, data: bytes) -> None:
        self._check()
        side = self.sides[direction]
        if not data:
            side.state = State.CLOSED
            return
        if side.state is State.CLOSED:
            self._fail(f"{direction.value} sent bytes after closing")
        side.buf += data

    def next_message(self) -> Any:
        """The next complete frame, client side first, else ``NEED_DATA``."""
        self._check()
        for direction in (Direction.CLIENT, Direction.SERVER):
            frame = self._frame(direction)
            if frame is not None:
                try:
                    if direction is Direction.CLIENT:
                        return self.decode_request(frame)
                    return self.decode_response(frame)
                except DecodeError as e:
                    self._fail(str(e))
        return NEED_DATA

    def _frame(self, direction: Direction) -> bytes | None:
        side = self.sides[direction]
        buf = side.buf
        if len(buf) < 4:
            if buf and side.state is State.CLOSED:
                self._fail(f"{direction.value} closed inside a frame size")
            return None
        size = int.from_bytes(buf[:4], "big", signed=True)
        if size < 4 or size > self.max_frame_size:
            self._fail(f"{direction.value} frame size {size} outside 4..{self.max_frame_size}")
        if len(buf) < 4 + size:
            if side.state is State.CLOSED:
                self._fail(f"{direction.value} closed inside a {size}-byte frame")
            return None
        frame = bytes(buf[4:4 + size])
        del buf[:4 + size]
        return frame

    def _check(self) -> None:
        if self.error is not None:
            raise DecodeError(f"codec is in its error state: {self.error}")

    def _fail(self, reason: str) -> None:
        self.error = DecodeError(reason)
        raise self.error

    # -- frames <-> messages ------------------------------------------------------------
    def decode_request(self, frame: bytes) -> KafkaRequest:
        r = Reader(frame)
        key, version, cid = r.int16(), r.int16(), r.int32()
        if version < 0:
            raise DecodeError(f"negative api version {version}")
        client_id = r.string(compact=False, nullable=True)
        schema = schema_for(key, version)
        tagged = None
        if schema is None:
            req = KafkaRequest(key, version, cid, client_id, blob_hex(r.take(r.remaining())),
                               opaque=True)
        else:
            flex = within(version, schema.flexible)
            if flex:
                tagged = _header_tags(r)
            body = compile_struct(schema.request, version, flex)[0](r, self.ctx)
            _keep_trailing(r, body)
            req = KafkaRequest(key, version, cid, client_id, body, tagged)
        if req.expects_response and self.track_responses:
            if cid in self.in_flight:
                raise DecodeError(f"correlation id {cid} reused while in flight")
            if len(self.in_flight) >= self.max_in_flight:
                raise DecodeError(f"more than {self.max_in_flight} requests in flight")
            self.in_flight[cid] = (key, version)
        return req

    def decode_response(self, frame: bytes) -> KafkaResponse:
        r = Reader(frame)
        cid = r.int32()
        pending = self.in_flight.pop(cid, None)
        if pending is None:
            raise DecodeError(f"response with correlation id {cid} answers no request")
        key, version = pending
        return decode_response_body(key, version, cid, r, self.ctx)

    def encode(self, message: KafkaRequest | KafkaResponse) -> bytes:
        if isinstance(message, KafkaRequest):
            return encode_request(message, self.ctx)
        if isinstance(message, KafkaResponse):
            return encode_response(message, self.ctx)
        raise EncodeError(f"not a Kafka message: {message!r}")


def blob_hex(data: bytes) -> dict:
    """Opaque bodies are always hex (not text) so their kind is obvious when read."""
    return {"hex": data.hex()}


def _header_tags(r: Reader) -> list | None:
    """Request header v2 / response header v1 tagged fields: none are defined, keep any."""
    out: dict = {}
    read_tags(r, None, {}, out)
    return out.get("_tagged")


def _write_header_tags(w: Writer, tagged: list | None) -> None:
    write_tags(w, {"_tagged": tagged or []}, None, {}, {})


def decode_response_body(key: int, version: int, cid: int, r: Reader, ctx: Any) -> KafkaResponse:
    schema = schema_for(key, version)
    if schema is None:
        return KafkaResponse(key, version, cid, blob_hex(r.take(r.remaining())), opaque=True)
    if key == API_VERSIONS_KEY and version > 0 and r.remaining() >= 2 \
            and int.from_bytes(r.buf[r.pos:r.pos + 2], "big", signed=True) == UNSUPPORTED_VERSION:
        # a broker that does not support the ApiVersions version asked answers in v0
        # (UNSUPPORTED_VERSION and its ranges) so that the client can retry lower (KIP-511)
        start = r.pos
        try:
            resp = _decode_known_response(schema, 0, cid, r, ctx)
            if "_trailing" not in resp.body:
                return resp
        except DecodeError:
            pass
        # some (the librdkafka mock) send a body no version parses; the client only reads
        # the error code and retries lower. Keep those bytes exactly, as opaque hex.
        r.pos = start
        return KafkaResponse(key, version, cid, blob_hex(r.take(r.remaining())), opaque=True)
    return _decode_known_response(schema, version, cid, r, ctx)


def _decode_known_response(schema: Api, version: int, cid: int, r: Reader,
                           ctx: Any) -> KafkaResponse:
    flex = within(version, schema.flexible)
    tagged = _header_tags(r) if flex and schema.key != API_VERSIONS_KEY else None
    start = r.pos
    try:
        body = compile_struct(schema.response, version, flex)[0](r, ctx)
    except DecodeError:
        r.pos = start
        short = decode_cut_short(schema.response, version, flex, r, ctx)
        if short is None:
            raise
        body = short
    _keep_trailing(r, body)
    return KafkaResponse(schema.key, version, cid, body, tagged)


def _keep_trailing(r: Reader, body: dict) -> None:
    """Bytes after a complete body are kept, not refused: peers ignore them (the
    librdkafka mock broker sends one extra byte after Metadata v13), and keeping them
    under ``_trailing`` keeps the recording byte-exact."""
    if r.remaining():
        body["_trailing"] = blob_hex(r.take(r.remaining()))


def _write_trailing(w: Writer, body: Any) -> None:
    if isinstance(body, dict) and "_trailing" in body:
        w.raw(unblob(body["_trailing"]))


def _frame(w: Writer) -> bytes:
    payload = w.getvalue()
    return len(payload).to_bytes(4, "big") + payload


def encode_request(m: KafkaRequest, ctx: Any = None) -> bytes:
    w = Writer()
    w.int16(m.api_key)
    w.int16(m.api_version)
    w.int32(m.correlation_id)
    w.string(m.client_id, compact=False, nullable=True)
    schema = schema_for(m.api_key, m.api_version)
    if m.opaque or schema is None:
        w.raw(unblob(m.body))
    else:
        flex = within(m.api_version, schema.flexible)
        if flex:
            _write_header_tags(w, m.header_tagged)
        compile_struct(schema.request, m.api_version, flex)[1](w, m.body, ctx or Context())
        _write_trailing(w, m.body)
    return _frame(w)


def encode_response(m: KafkaResponse, ctx: Any = None) -> bytes:
    w = Writer()
    w.int32(m.correlation_id)
    schema = schema_for(m.api_key, m.api_version)
    if m.opaque or schema is None:
        w.raw(unblob(m.body))
    else:
        flex = within(m.api_version, schema.flexible)
        if flex and m.api_key != API_VERSIONS_KEY:
            _write_header_tags(w, m.header_tagged)
        if isinstance(m.body, dict) and m.body.get("_cut_short") is True:
            encode_cut_short(schema.response, m.api_version, flex, w, m.body, ctx or Context())
        else:
            compile_struct(schema.response, m.api_version, flex)[1](w, m.body, ctx or Context())
        _write_trailing(w, m.body)
    return _frame(w)
