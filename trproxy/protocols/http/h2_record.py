"""Record mode over HTTP/2: each stream becomes one interaction (RFC 9113 §8.1).

The recorder watches a conversation it takes no part in, so it runs two ``h2``
state machines: ``server_view`` (server role) reads the client's bytes and
``client_view`` (client role) reads the server's. Each needs to know what "its"
side sent, so request HEADERS/END_STREAM/RST_STREAM seen by ``server_view`` are
replayed into ``client_view`` (which then accepts the server's response frames on
that stream), and server RST_STREAM / PUSH_PROMISE go the other way. What the views
write in answer (SETTINGS ACKs, WINDOW_UPDATEs) is thrown away.

Both views run with permissive *local* settings (largest windows and frame size,
no concurrency limit) and acknowledge every DATA frame at once, so they check framing,
HPACK and stream states but never reject a frame that the real endpoints accepted
under their own (unknown to us) flow-control bookkeeping. Header lists are bounded by
``max_head`` and the HPACK table by ``max_header_table``; bodies by ``BodyBuffer``
(streamed to ``blobs`` beyond ``max_body``).
Server-pushed streams (RFC 9113 §8.4) are not recorded.

A stream reset after its request was complete is recorded too (a gRPC call whose
client gave up at its deadline, or that the server cancelled): the client's reset keeps
what the server had answered so far, ``truncated`` (nothing at all when no HEADERS came);
the server's adds ``{"reset": <error code>}`` as the last response.

Invariant: bytes are fed in the order the proxy relays them, which is causal (a
response never precedes its request), the only ordering assumption made here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings

from ..base import BlobStore, DecodeError, Direction, Interaction
from .body import BodyBuffer
from .config import HttpConfig
from .grpc import is_grpc_type
from .readable import (
    field_value,
    make_url,
    method_text,
    request_readable,
    response_readable,
    summary,
    wire_text,
)

_MAX_WINDOW = 2**31 - 1
_MAX_FRAME = 2**24 - 1


def permissive(conn: h2.connection.H2Connection, config: HttpConfig) -> None:
    """Apply generous local settings immediately (as if the peer had ACKed them)."""
    conn.local_settings.update({
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _MAX_WINDOW,
        h2.settings.SettingCodes.MAX_FRAME_SIZE: _MAX_FRAME,
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: _MAX_WINDOW,
        h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: config.max_head,
        h2.settings.SettingCodes.HEADER_TABLE_SIZE: config.max_header_table,
    })
    conn._local_settings_acked()  # h2 has no public "apply now"; this is what an ACK does
    conn.initiate_connection()
    conn.increment_flow_control_window(_MAX_WINDOW - 65535)
    conn.data_to_send()


def split_pseudo(headers: list[tuple[bytes, bytes]]) -> tuple[dict[bytes, bytes], list[tuple[bytes, bytes]]]:
    pseudo: dict[bytes, bytes] = {}
    regular: list[tuple[bytes, bytes]] = []
    for name, value in headers:
        if name.startswith(b":"):
            pseudo[name] = value
        else:
            regular.append((name, value))
    return pseudo, regular


def h2_request_url(pseudo: dict[bytes, bytes], regular: list[tuple[bytes, bytes]],
                   default_scheme: str, authority: str | None, config: HttpConfig) -> str:
    """RFC 9113 §8.3.1: :scheme, :authority (or Host), :path."""
    scheme = wire_text(pseudo.get(b":scheme", default_scheme.encode()))
    auth = pseudo.get(b":authority")
    if auth is None:
        auth = next((v for n, v in regular if n.lower() == b"host"), None)
    host = wire_text(auth) if auth else (authority or "unknown")
    path = wire_text(pseudo.get(b":path", b"/"))
    return make_url(scheme, host, path, config.redaction)


@dataclass
class _Stream:
    method: str
    url: str
    fields: list[tuple[bytes, bytes]]
    body: BodyBuffer
    trailers: list[tuple[bytes, bytes]] | None = None
    done: bool = False
    responses: list[dict[str, Any]] = field(default_factory=list)
    status: int = 0
    response_fields: list[tuple[bytes, bytes]] = field(default_factory=list)
    response_body: BodyBuffer | None = None
    response_trailers: list[tuple[bytes, bytes]] | None = None
    final: bool = False
    end_mirrored: bool = False  # client_view has sent END_STREAM for it


def _config(client_side: bool) -> h2.config.H2Configuration:
    return h2.config.H2Configuration(
        client_side=client_side, header_encoding=None,
        validate_outbound_headers=False, normalize_outbound_headers=False,
        validate_inbound_headers=True, normalize_inbound_headers=False)


class H2Recorder:
    """One HTTP/2 connection in record mode (both directions)."""

    def __init__(self, config: HttpConfig, scheme: str = "https", authority: str | None = None,
                 blobs: BlobStore | None = None) -> None:
        self.config = config
        self.blobs = blobs
        self.scheme = scheme
        self.authority = authority
        self.server_view = h2.connection.H2Connection(_config(client_side=False))
        self.client_view = h2.connection.H2Connection(_config(client_side=True))
        permissive(self.server_view, config)
        permissive(self.client_view, config)
        self.streams: dict[int, _Stream] = {}
        self.closed = False

    def feed(self, direction: Direction, data: bytes, out: list[Interaction]) -> None:
        """Append completed interactions to ``out`` (kept even if a later frame fails)."""
        if not data:
            out.extend(self._flush())
            return
        if self.closed:
            return
        try:
            if direction is Direction.CLIENT:
                for event in self.server_view.receive_data(data):
                    self._client_event(event, out)
            else:
                for event in self.client_view.receive_data(data):
                    self._server_event(event, out)
        except h2.exceptions.H2Error as e:
            self.closed = True
            raise DecodeError(f"HTTP/2 {direction.value} bytes: {e!r}") from e
        finally:
            self.server_view.data_to_send()
            self.client_view.data_to_send()

    # -- the client's frames (read by server_view) ------------------------------------

    def _client_event(self, event: h2.events.Event, out: list[Interaction]) -> None:
        if isinstance(event, h2.events.RequestReceived):
            pseudo, regular = split_pseudo(event.headers)
            url = h2_request_url(pseudo, regular, self.scheme, self.authority, self.config)
            sid = event.stream_id
            new = _Stream(method_text(pseudo.get(b":method", b"GET")), url, regular,
                          BodyBuffer(self.config.max_body, self.blobs), end_mirrored=bool(event.stream_ended))
            self.streams[sid] = new
            self.client_view.send_headers(sid, event.headers, end_stream=new.end_mirrored)
        elif isinstance(event, h2.events.DataReceived):
            self.server_view.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if (s := self.streams.get(event.stream_id)) is not None:
                s.body.add(event.data)
        elif isinstance(event, h2.events.TrailersReceived):
            if (s := self.streams.get(event.stream_id)) is not None:
                s.trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            if (s := self.streams.get(event.stream_id)) is not None and not s.done:
                s.done = True
                if not s.end_mirrored and self._open_in(self.client_view, event.stream_id):
                    s.end_mirrored = True
                    self.client_view.end_stream(event.stream_id)
                self._maybe_emit(event.stream_id, out)
        elif isinstance(event, h2.events.StreamReset):
            s = self.streams.pop(event.stream_id, None)
            if s is not None and s.done and not s.final:  # the client gave up waiting
                if s.response_body is not None:
                    s.responses.append(self._response(s, truncated=True))
                out.append(self._interaction(s))
            if self._open_in(self.client_view, event.stream_id):
                self.client_view.reset_stream(event.stream_id, event.error_code or 0)

    # -- the server's frames (read by client_view) ------------------------------------

    def _server_event(self, event: h2.events.Event, out: list[Interaction]) -> None:
        sid = getattr(event, "stream_id", None)
        s = self.streams.get(sid) if sid is not None else None
        if isinstance(event, h2.events.InformationalResponseReceived):
            if s is not None:
                pseudo, regular = split_pseudo(event.headers)
                s.responses.append(response_readable(
                    int(pseudo.get(b":status", b"100")), "", "HTTP/2.0", regular, None, None,
                    self.config))
        elif isinstance(event, h2.events.ResponseReceived):
            if s is not None:
                pseudo, regular = split_pseudo(event.headers)
                s.status = int(pseudo.get(b":status", b"0"))
                s.response_fields = regular
                s.response_body = BodyBuffer(self.config.max_body, self.blobs)
        elif isinstance(event, h2.events.DataReceived):
            self.client_view.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if s is not None and s.response_body is not None:
                s.response_body.add(event.data)
        elif isinstance(event, h2.events.TrailersReceived):
            if s is not None:
                s.response_trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            if s is not None and s.response_body is not None:
                s.responses.append(self._response(s))
                s.final = True
                self._maybe_emit(event.stream_id, out)
        elif isinstance(event, h2.events.StreamReset):
            self.streams.pop(event.stream_id, None)
            if s is not None and s.done and not s.final:  # the server reset an answered call
                if s.response_body is not None:
                    s.responses.append(self._response(s, truncated=True))
                s.responses.append({"reset": int(event.error_code or 0)})
                out.append(self._interaction(s))
            if self._open_in(self.server_view, event.stream_id):
                self.server_view.reset_stream(event.stream_id, event.error_code or 0)
        elif isinstance(event, h2.events.PushedStreamReceived):
            # keep server_view's stream table in step so the client's later frames on the
            # promised stream (RST_STREAM, WINDOW_UPDATE) are legal; pushes are not recorded
            if self._open_in(self.server_view, event.parent_stream_id):
                self.server_view.push_stream(event.parent_stream_id, event.pushed_stream_id,
                                             event.headers)
                self.server_view.reset_stream(event.pushed_stream_id)

    # -- helpers ---------------------------------------------------------------------

    @staticmethod
    def _open_in(conn: h2.connection.H2Connection, sid: int) -> bool:
        stream = conn.streams.get(sid)
        return stream is not None and not stream.closed

    def _maybe_emit(self, sid: int, out: list[Interaction]) -> None:
        s = self.streams.get(sid)
        if s is None or not (s.done and s.final):
            return
        out.append(self._interaction(s))
        del self.streams[sid]
        # the server_view stream would stay half-closed forever (it never sees the
        # response): close it so h2 frees it
        if self._open_in(self.server_view, sid):
            self.server_view.reset_stream(sid)

    def _response(self, s: _Stream, truncated: bool = False) -> dict[str, Any]:
        response = response_readable(s.status, "", "HTTP/2.0", s.response_fields,
                                     s.response_body, s.response_trailers, self.config, s.url)
        if truncated:
            response["truncated"] = True
        return response

    def _interaction(self, s: _Stream, truncated: bool = False) -> Interaction:
        request = request_readable(s.method, s.url, "HTTP/2.0", s.fields, s.body, s.trailers,
                                   self.config)
        if truncated:
            request["truncated"] = True
        grpc = is_grpc_type((field_value(s.fields, b"content-type") or b"").decode("latin-1"))
        status: int | str = s.status
        if grpc:  # the call's status: in the trailers, or alone in the headers (Trailers-Only)
            code = field_value(s.response_trailers or [], b"grpc-status") \
                or field_value(s.response_fields, b"grpc-status")
            status = f"grpc-status {code.decode('latin-1')}" if code else "no grpc-status"
        return Interaction(request=request, responses=s.responses, lifetime="data",
                           summary=summary(s.method, s.url, status, grpc=grpc))

    def _flush(self) -> list[Interaction]:
        out = []
        for sid in sorted(self.streams):
            s = self.streams[sid]
            if s.final:
                out.append(self._interaction(s, truncated=not s.done))
                del self.streams[sid]
        return out
