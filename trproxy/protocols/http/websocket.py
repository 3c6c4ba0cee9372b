"""WebSocket messages (RFC 6455) after an HTTP/1.1 upgrade, as readable interactions.

Sans-I/O. Frames are parsed and built by ``wsproto.frame_protocol`` (client frames
are masked, server frames are not, RFC 6455 §5.3), with ``permessage-deflate``
(RFC 7692) when the 101's ``Sec-WebSocket-Extensions`` negotiated it. This module
only reassembles messages and groups them into interactions.

Recorded shape: one interaction per client message::

    request:   {method: WEBSOCKET, url: http://host/path, message: text, body: {json: {n: 1}}}
    responses: [{message: text, body: {json: {count: 1}}}, {message: binary, body: {base64: AQI=}}]

* ``message: text | binary`` is one data message, fragments reassembled and
  decompressed. ``body`` is body.py's readable form, secrets redacted: JSON text as
  ``{json: ...}``, other text as text, binary always ``{base64: ...}``; a message over
  ``HttpConfig.max_body`` keeps only ``{omitted, size, sha256, note}``.
* A response is a server message, or the server's Close as ``{close: code, reason: text}``.
  An interaction's responses are the server messages that arrived after its request
  and before the client's next message: a server push lands on the message before it.
* ``message: open`` (no body): the server's messages before the client's first message
  (a greeting). Recorded only when there was a greeting.
* ``message: close``: the client's Close, ``body: {close: code, reason: text}``; its
  responses normally hold the server's echoed Close.
* Ping and pong are not recorded; replay answers pings itself.

Interactions are emitted when the client's next message completes, the last ones
once both directions have ended. The HTTP ``match_key`` compares method WEBSOCKET,
host, path, query, ``message`` and body, so open, text, binary and close never match
one another.
"""

from __future__ import annotations

import base64
from typing import Any, cast

from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameProtocol, Opcode, ParseFailed

from ..base import (
    DecodeError,
    Direction,
    Interaction,
    Lookup,
    LookupContext,
    ProtocolError,
    Readable,
    Reply,
)
from .body import BodyBuffer, body_from_readable, body_to_readable
from .config import HttpConfig
from .readable import split_url

METHOD = "WEBSOCKET"
MAX_CLOSE_REASON = 123  # bytes: a control frame's payload is at most 125 (RFC 6455 §5.5)
# bytes handed to wsproto at a time: it inflates each piece whole, and deflate expands at
# most ~1032x, so a compressed bomb costs about 8 MB at once, however large it claims to be
SLICE = 8 * 1024


def is_websocket_upgrade(upgrade: str | None) -> bool:
    """``Upgrade: websocket`` (a list of case-insensitive tokens, RFC 9110 §7.8)."""
    return upgrade is not None and any(
        t.strip().lower() == "websocket" for t in upgrade.split(","))


def open_request(url: str) -> dict[str, Any]:
    """The request whose responses are the server's greeting."""
    return {"method": METHOD, "url": url, "message": "open"}


def summary(request: dict[str, Any]) -> str:
    """``WS /path text`` (``open``, ``binary``, ``close 1000``)."""
    path = split_url(request.get("url", ""))[2].split("?", 1)[0]
    if len(path) > 60:
        path = path[:57] + "..."
    kind = request.get("message", "")
    if kind == "close":
        kind = f"close {request.get('body', {}).get('close', '')}"
    return f"WS {path} {kind}"


def open_lookup(url: str) -> Lookup:
    """Asked right after a replayed 101: a miss means "no greeting", sent nothing, not reported."""
    request = open_request(url)
    return Lookup(request=request, summary=summary(request),
                  context=LookupContext(handshake=True, partial=True, private={"websocket": True}))


def _protocol(client: bool, extensions_header: str | None) -> FrameProtocol:
    """Frames as one side sees them, with the ``permessage-deflate`` the 101 accepted
    (each protocol gets its own instance: it holds the compression context)."""
    extensions: list[Extension] = []
    for offer in (extensions_header or "").split(","):
        if offer.split(";", 1)[0].strip().lower() == PerMessageDeflate.name:
            pmd = PerMessageDeflate()
            try:
                pmd.finalize(offer)
            except (ValueError, IndexError) as e:
                raise DecodeError(f"WebSocket: bad permessage-deflate parameters {offer!r}") from e
            extensions.append(pmd)
            break
    return FrameProtocol(client=client, extensions=extensions)


class _Message:
    """A data message being reassembled (bounded like an HTTP body: ``BodyBuffer``)."""

    def __init__(self, opcode: Opcode, limit: int) -> None:
        self.opcode = opcode
        self.buffer = BodyBuffer(limit)

    def add(self, payload: bytes | str) -> None:
        self.buffer.add(payload.encode() if isinstance(payload, str) else bytes(payload))

    def readable(self, config: HttpConfig) -> dict[str, Any]:
        kind = "text" if self.opcode is Opcode.TEXT else "binary"
        body: Readable
        if self.buffer.overflow:
            body = self.buffer.stored(f"message larger than {self.buffer.limit} bytes: only "
                                      "its size and digest are kept")
        elif kind == "text":
            body = body_to_readable(self.buffer.data(), "", config.redaction)
        else:
            body = {"base64": base64.b64encode(self.buffer.data()).decode("ascii")}
        return {"message": kind, "body": body}


class _Reader:
    """One direction's frames -> ``(opcode, value, size)``: a data message's readable form
    and its size in bytes, a Close's ``{close, reason}`` or a ping/pong payload (size 0)."""

    def __init__(self, protocol: FrameProtocol, config: HttpConfig) -> None:
        self.protocol = protocol
        self.config = config
        self.message: _Message | None = None
        self.closed = False  # a Close arrived: nothing after it is parsed (RFC 6455 §5.5.1)

    def read(self, data: bytes) -> list[tuple[Opcode, Any, int]]:
        out: list[tuple[Opcode, Any, int]] = []
        for start in range(0, len(data), SLICE):
            if self.closed:
                break
            self._read(data[start:start + SLICE], out)
        return out

    def _read(self, data: bytes, out: list[tuple[Opcode, Any, int]]) -> None:
        self.protocol.receive_bytes(data)
        try:
            for frame in self.protocol.received_frames():
                if frame.opcode is Opcode.CLOSE:
                    code, reason = cast(tuple[int, str], frame.payload)
                    out.append((Opcode.CLOSE, {"close": int(code), "reason": reason}, 0))
                    self.closed = True
                elif frame.opcode in (Opcode.PING, Opcode.PONG):
                    out.append((frame.opcode, bytes(cast(bytes, frame.payload)), 0))
                else:
                    if self.message is None:
                        self.message = _Message(frame.opcode, self.config.max_body)
                    self.message.add(cast(bytes | str, frame.payload))
                    if frame.message_finished:
                        message, self.message = self.message, None
                        out.append((message.opcode, message.readable(self.config),
                                    message.buffer.size))
        except ParseFailed as e:
            raise DecodeError(f"WebSocket: {e}") from e


def _request(url: str, kind: Opcode, value: dict[str, Any]) -> dict[str, Any]:
    if kind is Opcode.CLOSE:
        return {"method": METHOD, "url": url, "message": "close", "body": value}
    return {"method": METHOD, "url": url, **value}


class WsRecorder:
    """Record mode: both directions of one WebSocket connection (see module docstring)."""

    def __init__(self, url: str, extensions_header: str | None, config: HttpConfig) -> None:
        self.url = url
        # client frames are decoded as a server would, server frames as a client would
        self._client = _Reader(_protocol(False, extensions_header), config)
        self._server = _Reader(_protocol(True, extensions_header), config)
        self._request: dict[str, Any] | None = None  # None: no client message yet
        self._responses: list[Readable] = []
        self._limit = config.max_body  # bytes of server messages held for one interaction
        self._held = 0
        self._dropped = [0, 0]  # server messages (count, bytes) past the limit
        self._ended: set[Direction] = set()

    def feed(self, direction: Direction, data: bytes) -> list[Interaction]:
        if not data:
            self._ended.add(direction)
            return self._flush() if len(self._ended) == 2 else []
        out: list[Interaction] = []
        if direction is Direction.SERVER:
            for kind, value, size in self._server.read(data):
                if kind in (Opcode.PING, Opcode.PONG):
                    continue
                if self._held + size > self._limit:  # a Close has size 0: always kept
                    # a server that streams without the client speaking: memory stays bounded
                    self._dropped[0] += 1
                    self._dropped[1] += size
                    continue
                self._held += size
                self._responses.append(value)
            return out
        for kind, value, _size in self._client.read(data):
            if kind not in (Opcode.PING, Opcode.PONG):
                out.extend(self._flush())
                self._request = _request(self.url, kind, value)
        return out

    def _flush(self) -> list[Interaction]:
        """The pending interaction (the greeting as ``open``, if any, before the first message)."""
        request, responses = self._request, self._responses
        self._request, self._responses, self._held = None, [], 0
        if self._dropped[0]:
            count, size = self._dropped
            responses.append({"dropped": count, "size": size,
                              "note": f"{count} later server messages ({size} bytes) were not "
                                      f"kept: more than max_body before the client's next message"})
            self._dropped = [0, 0]
        if request is None:
            if not responses:
                return []
            request = open_request(self.url)
        return [Interaction(request=request, responses=responses, lifetime="data",
                            summary=summary(request))]


class WsReplayer:
    """Replay mode: the client's frames in, ``Lookup`` per message, recorded messages out.

    The greeting is ``respond(open_lookup(url), responses)``, right after the 101.
    ``close_after`` is set once we sent a Close (recorded, or the answer to a miss) or
    answered the client's Close; after that nothing more is sent (RFC 6455 §5.5.1) and
    the client's bytes are ignored.
    """

    def __init__(self, url: str, extensions_header: str | None, config: HttpConfig) -> None:
        self.url = url
        # one server-side protocol: decodes masked client frames, encodes unmasked ones
        self._protocol = _protocol(False, extensions_header)
        self._reader = _Reader(self._protocol, config)
        self.close_after = False

    def feed(self, data: bytes) -> list[Lookup | Reply]:
        out: list[Lookup | Reply] = []
        if self.close_after:
            return out
        for kind, value, _size in self._reader.read(data):
            if kind is Opcode.PING:
                out.append(Reply(bytes(self._protocol.pong(value))))  # RFC 6455 §5.5.3
            elif kind is not Opcode.PONG:
                request = _request(self.url, kind, value)
                out.append(Lookup(request=request, summary=summary(request),
                                  context=LookupContext(private={"websocket": True})))
        return out

    def respond(self, lookup: Lookup, responses: list[Readable]) -> bytes:
        """The recorded server messages; a recorded Close ends the connection."""
        if self.close_after:
            return b""
        out = []
        for response in responses:
            if "dropped" in response:  # the recording kept only the start of a long stream
                lookup.context.unreplayable = response.get("note", "server messages dropped")
                continue
            if "close" in response:
                out.append(self._close(int(response["close"]), str(response.get("reason", ""))))
                break
            try:
                payload = body_from_readable(response.get("body"))
            except (ValueError, ProtocolError) as e:  # only a digest was kept, or bad YAML
                lookup.context.unreplayable = str(e)
                out.append(self._close(CloseReason.INTERNAL_ERROR, "trproxy: cannot replay this message"))
                break
            if response.get("message") == "text":
                out.append(self._protocol.send_data(payload.decode("utf-8", "replace")))
            else:
                out.append(self._protocol.send_data(payload))
        if lookup.request.get("message") == "close":
            self.close_after = True  # answered the client's Close (or it got none)
        return b"".join(out)

    def miss(self, lookup: Lookup, reason: str) -> bytes:
        """Close 1011 (internal error, RFC 6455 §7.4.1) saying there is no recording."""
        if lookup.context.handshake or self.close_after:
            return b""  # no greeting recorded, or closed already: send nothing
        return self._close(CloseReason.INTERNAL_ERROR,
                           f"trproxy: no recording for {lookup.summary}: {reason}")

    def _close(self, code: int, reason: str) -> bytes:
        self.close_after = True
        if code == CloseReason.NO_STATUS_RCVD:  # 1005: the recorded Close had no payload
            return bytes(self._protocol.close())
        reason = reason.encode()[:MAX_CLOSE_REASON].decode("utf-8", "ignore")
        return bytes(self._protocol.close(code, reason))  # wsproto builds bytearrays
