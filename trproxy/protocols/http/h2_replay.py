"""Replay mode over HTTP/2: we are the server, driven by ``h2`` (RFC 9113).

``feed`` passes the client's bytes to an ``h2`` server connection. Its own frames
(our SETTINGS, SETTINGS/PING ACKs, WINDOW_UPDATEs) come back as one ``Reply``, placed
before the ``Lookup``s of the streams that ended in those bytes. ``respond`` sends a
stream's HEADERS and as much DATA as the client's flow-control windows allow (RFC
9113 §5.2); the rest waits and goes out in a ``Reply`` from a later ``feed`` once the
client grants window (WINDOW_UPDATE, or a SETTINGS raising the initial window).
Streams the client resets are forgotten, with their pending data. A body recorded as
a file is read from its blob a piece at a time (``pull``), never whole.

A gRPC call (``content-type: application/grpc``) that misses is answered the gRPC way:
HTTP 200 with ``grpc-status: 14`` (UNAVAILABLE) and the reason in ``grpc-message``
(Trailers-Only). A recorded ``{"reset": code}`` resets the stream; a response recorded
``truncated`` (the client gave up) is sent as far as it came, without an end.

Bounds: request heads by ``max_head`` (SETTINGS_MAX_HEADER_LIST_SIZE), bodies by
``BodyBuffer``; pending response data is what the recordings hold.
"""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

from ..base import BlobReader, BlobStore, DecodeError, Lookup, LookupContext, Readable, Reply
from .body import BodyBuffer, BodyUnavailable
from .config import HttpConfig
from .forward import http_forward
from .grpc import is_grpc_type, unavailable_trailers
from .h2_record import h2_request_url, split_pseudo
from .readable import field_value, method_text, request_readable, summary
from .render import (
    error_response,
    render_h2_headers,
    render_h2_trailers,
    response_body,
    unavailable_response,
)


@dataclass
class _Incoming:
    method: str
    url: str
    fields: list[tuple[bytes, bytes]]
    body: BodyBuffer
    trailers: list[tuple[bytes, bytes]] | None = None


@dataclass
class _Outgoing:
    """A response body being sent: from memory (``BytesIO``) or from a blob, whose
    pieces are bounded by ``piece`` so a large file never sits whole in ``h2``'s buffer."""

    source: BlobReader | io.BytesIO
    remaining: int
    trailers: list[tuple[bytes, bytes]] | None = None
    piece: int | None = None
    end: bool = True  # False: a response recorded ``truncated`` stays open


_PIECE = 256 * 1024  # bytes of a file body per flush (the proxy drains between pulls)


class H2Replayer:
    """One HTTP/2 client connection in replay mode."""

    def __init__(self, config: HttpConfig, scheme: str = "https", authority: str | None = None,
                 blobs: BlobStore | None = None) -> None:
        self.config = config
        self.blobs = blobs
        self.scheme = scheme
        self.authority = authority
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None))
        self.conn.initiate_connection()
        if config.max_head != self.conn.local_settings.max_header_list_size:
            self.conn.update_settings({
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: config.max_head})
        self._incoming: dict[int, _Incoming] = {}
        self._outgoing: dict[int, _Outgoing] = {}

    def feed(self, data: bytes) -> list[Lookup | Reply]:
        lookups: list[Lookup | Reply] = []
        try:
            events = self.conn.receive_data(data) if data else []
            for event in events:
                self._event(event, lookups)
            self._flush_all()
        except h2.exceptions.H2Error as e:
            raise DecodeError(f"HTTP/2 client bytes: {e!r}") from e
        wire = self.conn.data_to_send()
        return ([Reply(wire)] if wire else []) + lookups

    def _event(self, event: h2.events.Event, lookups: list[Lookup | Reply]) -> None:
        if isinstance(event, h2.events.RequestReceived):
            pseudo, regular = split_pseudo(event.headers)
            url = h2_request_url(pseudo, regular, self.scheme, self.authority, self.config)
            method = method_text(pseudo.get(b":method", b"GET"))
            self._incoming[event.stream_id] = _Incoming(method, url, regular,
                                                        BodyBuffer(self.config.max_body))
            expect = next((v for n, v in regular if n == b"expect"), b"")
            if expect.strip().lower() == b"100-continue" and not event.stream_ended:
                self.conn.send_headers(event.stream_id, [(b":status", b"100")])
        elif isinstance(event, h2.events.DataReceived):
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if (s := self._incoming.get(event.stream_id)) is not None:
                s.body.add(event.data)
        elif isinstance(event, h2.events.TrailersReceived):
            if (s := self._incoming.get(event.stream_id)) is not None:
                s.trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            if (s := self._incoming.pop(event.stream_id, None)) is not None:
                lookups.append(self._lookup(event.stream_id, s))
        elif isinstance(event, h2.events.StreamReset):
            self._incoming.pop(event.stream_id, None)
            self._drop(event.stream_id)

    def _lookup(self, sid: int, s: _Incoming) -> Lookup:
        readable = request_readable(s.method, s.url, "HTTP/2.0", s.fields, s.body, s.trailers,
                                    self.config)
        grpc = is_grpc_type((field_value(s.fields, b"content-type") or b"").decode("latin-1"))
        label = summary(s.method, s.url, grpc=grpc)
        context = LookupContext(
            private={"stream_id": sid, "method": s.method, "http_version": "HTTP/2.0",
                     "grpc": grpc},
            # new-episodes: what to send upstream (over HTTP/1.1) when nothing recorded
            # answers; not a gRPC call, which needs HTTP/2 (a miss, UNAVAILABLE)
            forward=None if grpc else functools.partial(
                http_forward, self.config, self.blobs, readable, label, s.method, None,
                s.fields, s.body, s.url))
        return Lookup(request=readable, lifetime="data", summary=label, expects_reply=True,
                      context=context)

    # -- sending ------------------------------------------------------------------------

    def _stream_open(self, sid: int) -> bool:
        stream = self.conn.streams.get(sid)
        return stream is not None and not stream.closed

    def respond(self, lookup: Lookup, responses: list[Readable]) -> bytes:
        sid = lookup.context.private["stream_id"]
        method = lookup.context.private.get("method", "GET")
        if not self._stream_open(sid):
            return b""  # the client reset the stream meanwhile
        try:
            for response in responses:
                if "reset" in response:  # recorded as the server's RST_STREAM
                    self._flush(sid)  # what it had sent before (as far as windows allow)
                    self._drop(sid)
                    self.conn.reset_stream(sid, int(response["reset"]))
                    break
                status = int(response["status"])
                if status == 100 or status == 101:
                    continue
                if status < 200:
                    self.conn.send_headers(sid, render_h2_headers(response, method, 0))
                    continue
                problem = self._send_final(sid, response, method)
                if problem:
                    lookup.context.unreplayable = problem  # reported by the proxy
                if not response.get("truncated"):
                    break
            self._flush(sid)
        except h2.exceptions.H2Error as e:
            raise DecodeError(f"HTTP/2 response on stream {sid}: {e!r}") from e
        return self.conn.data_to_send()

    def _send_final(self, sid: int, response: dict[str, Any], method: str) -> str | None:
        """Send the final response; returns why it could not be replayed as recorded, if so."""
        problem = None
        body: bytes | BlobReader
        try:
            body = response_body(response, method, self.blobs)
        except BodyUnavailable as e:
            problem = str(e)
            response = unavailable_response(e)
            body = response_body(response, method)
        size = len(body) if isinstance(body, bytes) else body.size
        trailers = render_h2_trailers(response)
        headers = render_h2_headers(response, method, size)
        cut = bool(response.get("truncated"))
        end = not size and not trailers and not cut
        self.conn.send_headers(sid, headers, end_stream=end)
        if isinstance(body, bytes):
            if not end and size:
                self._outgoing[sid] = _Outgoing(io.BytesIO(body), size, trailers, end=not cut)
            elif not end and not cut:
                self._outgoing[sid] = _Outgoing(io.BytesIO(body), size, trailers)
        elif end:
            body.close()
        else:
            self._outgoing[sid] = _Outgoing(body, size, trailers, piece=_PIECE, end=not cut)
        return problem

    def _flush(self, sid: int) -> None:
        out = self._outgoing.get(sid)
        if out is None:
            return
        if not self._stream_open(sid):
            self._drop(sid)
            return
        budget = out.piece
        while out.remaining > 0:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size,
                         out.remaining, budget if budget is not None else out.remaining)
            if window <= 0:
                return
            chunk = out.source.read(window)
            if not chunk:  # the file shrank since it was opened: the body cannot be completed
                self.conn.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
                self._drop(sid)
                return
            self.conn.send_data(sid, chunk)
            out.remaining -= len(chunk)
            if budget is not None:
                budget -= len(chunk)
        if not out.end:
            pass  # cut short when recorded: the stream stays open, as the client left it
        elif out.trailers:
            self.conn.send_headers(sid, out.trailers, end_stream=True)
        else:
            self.conn.end_stream(sid)
        self._drop(sid)

    def _flush_all(self) -> None:
        for sid in list(self._outgoing):
            self._flush(sid)

    def _drop(self, sid: int) -> None:
        if (out := self._outgoing.pop(sid, None)) is not None:
            out.source.close()

    def pull(self) -> bytes:
        """More of the bodies being streamed, as far as the client's windows allow."""
        try:
            self._flush_all()
        except h2.exceptions.H2Error as e:
            raise DecodeError(f"HTTP/2 response data: {e!r}") from e
        return self.conn.data_to_send()

    def close(self) -> None:
        for sid in list(self._outgoing):
            self._drop(sid)

    def miss(self, lookup: Lookup, reason: str) -> bytes:
        text = f"trproxy: no recorded response matches {lookup.summary}\n{reason}\n"
        if lookup.context.private.get("grpc"):  # Trailers-Only, UNAVAILABLE
            first = reason.strip().splitlines()[0] if reason.strip() else ""
            headers = unavailable_trailers(f"trproxy: no recording for {lookup.summary}: {first}")
            return self.respond(lookup, [{"status": 200, "headers": headers, "body": ""}])
        return self.respond(lookup, [error_response(502, text)])
