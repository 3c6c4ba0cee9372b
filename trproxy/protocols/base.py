"""Interfaces every protocol package implements; the proxy only talks to these.

Two layers, both sans-I/O (no sockets, clocks, files, randomness or logging):

* a **codec** turns bytes into protocol messages and back (``feed`` /
  ``next_message`` / ``encode``), one instance per connection, both directions;
* a **dialect** builds on the codec and speaks in *interactions*: in record mode a
  ``Recorder`` pairs requests with their responses as readable, YAML-ready data; in
  replay mode a ``Replayer`` turns the client's bytes into ``Lookup`` events that the
  proxy answers from the store, and renders the recorded responses back to bytes.

The one seam to storage: payloads too large for memory or for a readable recording
(HTTP bodies over ``max_body``) go through a ``BlobStore`` the proxy passes in.
Dialects only call its methods; they never open files themselves.

Readable data means plain ``dict``/``list``/``str``/``int``/``float``/``bool``/``None``;
bytes that are not text go in as ``{"hex": ...}`` or ``{"base64": ...}`` (see
``blob``/``unblob``), never as Python ``bytes``, so a recording is safe YAML.
"""

from __future__ import annotations

import base64
import enum
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

Readable = Any  # a JSON/YAML-safe value: dict, list, str, int, float, bool, None
Lifetime = Literal["session", "data"]


class Direction(enum.Enum):
    """Which peer sent the bytes: the app (client) or its dependency (server)."""

    CLIENT = "client"
    SERVER = "server"


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


class ProtocolError(Exception):
    """Base of every error a codec or dialect raises."""


class DecodeError(ProtocolError):
    """The bytes do not follow the protocol; the codec is now in its error state."""


class EncodeError(ProtocolError):
    """A message cannot be turned into bytes (out-of-range value, missing field)."""


class UnexpectedMessage(ProtocolError):
    """A well-formed message arrived in a state where the protocol forbids it."""


class Codec(Protocol):
    """One connection, both directions. ``feed(direction, b"")`` means that side closed."""

    def feed(self, direction: Direction, data: bytes) -> None: ...

    def next_message(self) -> Any: ...  # a Message or NEED_DATA

    def encode(self, message: Any) -> bytes: ...


@dataclass
class Interaction:
    """One request and the response(s) it got, as readable data (record mode).

    ``responses`` is empty for requests that get no reply (Redis ``CLIENT REPLY OFF``).
    ``summary`` is a short human label for logs and reports ("GET", "Query", "Produce").
    """

    request: Readable
    responses: list[Readable]
    lifetime: Lifetime = "data"
    summary: str = ""
    # the connection ended before any answer (the client gave up waiting: a cancelled
    # BRPOP 0, a client timeout): replay answers nothing and holds what follows
    unanswered: bool = False


@dataclass
class Pushed:
    """Messages the server sent on its own, as no answer to a request (record mode):
    pub/sub messages, RESP3 pushes, Postgres NotificationResponse, a FATAL before the
    server hangs up. The proxy records when they arrived relative to every connection's
    requests, and replay sends them (``Replayer.push``) once the replay got that far."""

    responses: list[Readable]
    summary: str = ""


@dataclass
class LookupContext:
    """What a dialect and the replay engine agree on about one lookup; ``private`` holds
    the dialect's own live values (correlation ids, statement names...), which the engine
    never reads.

    * ``handshake``: the replayer answers a miss itself (synthesized handshake), so the
      miss is not reported;
    * ``partial``: an empty ``miss``/``respond`` answer means "nothing yet" (one part of a
      request answered as a whole later, a Kafka Fetch split per partition), not "close";
    * ``repeat_last``: once every recorded answer of this request was used, the last one
      is served again instead of a miss (a Kafka Fetch of an offset asked again, which a
      broker answers the same way); ``repeat`` (set by the engine) tells ``respond`` so;
    * ``hold_ms`` (set by ``respond``): send the answer that much later, as the server
      would (a Kafka Fetch with no new records waits ``max_wait_ms``);
    * ``unreplayable`` (set by ``respond``): matched, but could not be served as recorded
      (an HTTP body whose file is gone); reported;
    * ``forward`` (new-episodes): called on a miss, gives the ``ForwardConversation``
      that fetches this request from the real server (None: it cannot be forwarded);
    * ``tentative``: served only when a recording matches; a miss is nothing at all (no
      answer, no report): the request may not be complete yet (Postgres extended messages
      without Sync, which a server answers only when it flushes: at an error);
    * ``recorded`` (set by the engine before ``respond``): the recorded request that
      answers, for an answer that follows its request's order where matching ignored it
      (Redis ``SMISMEMBER`` of a set sent in another order); ``connection``: the recorded
      connection it comes from (Postgres: which recorded backend the live one plays);
    * ``ends`` (set by ``respond``): the answer ends another connection (Postgres
      ``pg_terminate_backend``): (the recorded connection it ended, the ``identity`` of
      the live one it ends); what the replay releases of the first goes to the second;
    * ``timed``: the request waits on purpose (Postgres ``pg_sleep``): how long its answer
      took is part of the answer, so replay holds it for its recorded wait, however short
      (tests of timeouts and of "another operation is in progress" depend on it);
    * ``same_as``: a hashable value that only lookups with equal requests share (the
      request's bytes, or the arguments they were parsed into): the mock pool computes
      the match key once per distinct value instead of once per lookup.
    """

    handshake: bool = False
    partial: bool = False
    repeat_last: bool = False
    repeat: bool = False
    hold_ms: float | None = None
    unreplayable: str | None = None
    forward: Callable[[], ForwardConversation | None] | None = None
    tentative: bool = False
    recorded: Readable = None
    connection: int | None = None
    ends: tuple[int, bytes] | None = None
    timed: bool = False
    private: dict[str, Any] = field(default_factory=dict)
    same_as: Hashable | None = None


@dataclass
class Lookup:
    """A live request the proxy must answer from the recordings (replay mode).

    ``request`` is readable data in the same shape a Recorder emits, so the store can
    compare it with recorded requests through the dialect's ``match_key``.
    ``expects_reply`` is False for requests the server would not answer.
    """

    request: Readable
    lifetime: Lifetime = "data"
    summary: str = ""
    expects_reply: bool = True
    context: LookupContext = field(default_factory=LookupContext)


@dataclass(frozen=True)
class Failure:
    """A failure injected at replay (``proxy/faults.py``), rendered by ``Replayer.fault``
    in the protocol's own terms: ``error`` is the protocol's code (a Postgres SQLSTATE, a
    Redis error prefix such as ``LOADING``, a Kafka error name or number, an HTTP
    status); ``message`` replaces the server's usual text; ``retry_after`` (seconds)
    goes with an HTTP status."""

    error: str
    message: str | None = None
    retry_after: int | None = None


@dataclass
class Reply:
    """Bytes a Replayer synthesizes on its own (handshakes, ``SSLRequest`` -> ``N``)."""

    data: bytes


@dataclass
class Interrupt:
    """From ``Replayer.feed``: the client asks another connection, the one whose
    ``Replayer.identity`` is ``identity``, to stop what it is doing (Postgres
    CancelRequest, which carries the backend's process id and secret key)."""

    identity: bytes


class Recorder(Protocol):
    """Record mode, one connection: sees both directions, emits completed interactions,
    and ``Pushed`` messages as they arrive (so the proxy knows when).

    Optional: ``identity`` (bytes, None until known) names the connection the way an
    ``Interrupt`` from another connection does (Postgres: the BackendKeyData the server
    sent), and ``feed`` may return such an ``Interrupt`` (a CancelRequest): the proxy
    then notes that the named connection's pending answer came after an interrupt.
    ``farewell`` (bool) is true once the client said it is leaving (Postgres Terminate or
    CancelRequest): the server's close then answers the client and is not recorded as an
    event, which replay would deliver to whichever live connection follows this one.

    Raises ``ProtocolError`` on bytes it cannot follow; the proxy then stops capturing
    that connection but keeps relaying it.
    """

    def feed(self, direction: Direction, data: bytes) -> Sequence[Interaction | Pushed | Interrupt]: ...


class Replayer(Protocol):
    """Replay mode, one connection: only the client exists.

    ``feed`` returns, in order, ``Reply`` (send these bytes now), ``Lookup`` and
    ``Interrupt`` events. For each ``Lookup`` the proxy calls ``respond`` with the
    matched recorded responses, or ``miss`` with a one-line reason, and sends the
    returned bytes. A replayer that sets an attribute ``close_after = True`` (Postgres
    Terminate, CancelRequest) has the proxy close the connection once those bytes are
    written, as the server would.

    Optional, for protocols whose server speaks first (``Dialect.greeting``): ``opened()
    -> Sequence[Lookup | Reply]``, what the server says before the client speaks.

    Optional, for what servers do between connections: ``push(responses) -> bytes``
    renders recorded ``Pushed`` messages on this connection; ``identity`` (bytes, or
    None until known) names the connection for ``Interrupt`` (the Postgres backend key
    the replayed startup sent).

    Optional, for responses too large to build at once (bodies read from a
    ``BlobStore``): ``pull() -> bytes`` gives the next piece to send, ``b""`` when
    nothing more is ready; the proxy calls it after every ``feed`` round, writing and
    draining each piece, so memory holds one piece at a time. ``close()`` releases what
    the replayer still holds (open blobs) when the connection ends.
    """

    def feed(self, data: bytes) -> Sequence[Lookup | Reply | Interrupt]: ...

    def respond(self, lookup: Lookup, responses: list[Readable]) -> bytes: ...

    def miss(self, lookup: Lookup, reason: str) -> bytes: ...

    # Optional: ``fault(lookup, failure) -> bytes``, the answer of a server failing this
    # request as ``failure`` says (fault injection), in the connection's current state.


class ForwardConversation(Protocol):
    """new-episodes: one request no recording answers, fetched from the real server over a
    connection the proxy opens and pumps (``Lookup.context.forward`` makes it).

    The proxy connects (over TLS offering ``alpn`` when the app's connection was TLS),
    writes ``send()``, feeds every byte the server sends to ``receive`` (``b""`` when it
    closed) until ``done``, then records ``result()[0]`` (redacted, like any recording)
    and answers the app with ``result()[1]`` (the live responses, unredacted: the app must
    see its real tokens). ``answered`` says whether any byte came back (a kept-alive
    connection closed while idle is retried once); ``reusable`` whether the connection
    can carry the next one. ``receive`` raises ``ProtocolError`` on a broken answer.
    """

    @property
    def alpn(self) -> tuple[str, ...]: ...

    @property
    def answered(self) -> bool: ...

    @property
    def done(self) -> bool: ...

    @property
    def reusable(self) -> bool: ...

    def send(self) -> bytes: ...

    def receive(self, data: bytes) -> None: ...

    def result(self) -> tuple[Interaction, list[Readable]]: ...


class BlobUnavailable(ProtocolError):
    """A blob named by a recording cannot be read (missing, or outside the test set)."""


class BlobWriter(Protocol):
    """One payload being written. ``commit`` returns its reference for the recording,
    or None when the bytes could not be kept (disk full): the recording then says so,
    and the app's traffic is never affected."""

    def write(self, data: bytes) -> None: ...

    def commit(self, sha256: str) -> str | None: ...

    def abort(self) -> None: ...


class BlobReader(Protocol):
    """A stored payload opened for replay; ``size`` is its actual length."""

    size: int

    def read(self, n: int) -> bytes: ...

    def close(self) -> None: ...


class BlobStore(Protocol):
    """Where large payloads live beside a recording (``store.blobs.DirBlobStore``)."""

    def create(self) -> BlobWriter: ...

    def open(self, ref: str) -> BlobReader: ...  # raises BlobUnavailable


@dataclass(frozen=True)
class Datagrams:
    """A protocol that also runs over UDP (DNS): one message per datagram, on these
    ``ports``. ``frame`` makes a datagram the bytes of one message of the stream form
    (DNS: its TCP length prefix) and ``unframe`` takes one back, so the dialect's recorder
    and replayer serve both."""

    ports: tuple[int, ...]
    frame: Callable[[bytes], bytes]
    unframe: Callable[[bytes], bytes]


@dataclass(frozen=True)
class Dialect:
    """What a protocol package exports as ``DIALECT`` for the proxy and the store.

    ``detect`` answers True/False from the client's first bytes and the destination
    port, or None when it needs more bytes. ``match_key`` maps a readable request to
    the normalized form compared at replay (drop correlation ids, fold whitespace...).
    With ``connection_aware``, ``recorder``/``replayer`` take keyword arguments
    ``scheme`` ("https" when the proxy terminated TLS), ``authority`` ("host:port") and
    ``blobs`` (a ``BlobStore`` for large payloads, or None: keep only their digest).
    """

    name: str
    default_ports: tuple[int, ...]
    detect: Callable[[bytes, int], bool | None]
    recorder: Callable[..., Recorder]
    replayer: Callable[..., Replayer]
    match_key: Callable[[Readable], Readable]
    connection_aware: bool = False
    # client bytes the proxy answers itself instead of forwarding them, before the
    # protocol starts (Postgres SSLRequest/GSSENCRequest -> "N": go on in plaintext)
    local_reply: Callable[[bytes], bytes | None] | None = None
    # with TLS interception: the answer accepting an in-band TLS request (Postgres
    # SSLRequest -> "S"), after which the proxy terminates TLS and reads the plaintext
    tls_upgrade: Callable[[bytes], bytes | None] | None = None
    # the dialect built from this protocol's section of the user's ``config.yaml``
    # (``http:`` secrets and noise); raises ValueError naming the field that is wrong
    configure: Callable[[dict], Dialect] | None = None
    # the values the app generated in a request (ids, tokens, times: ``volatile.py``), in
    # order, given the time it was sent: listed at record time, masked at replay
    volatile: Callable[[Readable, datetime], list[str]] | None = None
    # the values the user's rules (config.yaml) call volatile in a request: applied to
    # recordings made before the rule too
    volatile_rules: Callable[[Readable], list[str]] | None = None
    # TLS ALPN protocol ids that name this protocol: a connection that negotiated one is
    # this protocol whoever speaks first (an HTTP/2 server sends SETTINGS first)
    alpn: tuple[str, ...] = ()
    # the server spoke first with these bytes, which this protocol's servers send before
    # the client's first bytes (HTTP/2 SETTINGS): detection waits for the client's bytes
    server_first: Callable[[bytes], bool] | None = None
    # the server speaks first, and these are its first bytes (MySQL's greeting): a recorded
    # connection is this protocol whatever the client says later; at replay a silent
    # client of a destination recorded with it gets the replayer's ``opened()`` answer
    greeting: Callable[[bytes], bool] | None = None
    # with TLS interception, for a ``greeting`` protocol: the length of the request for TLS
    # inside the protocol the client's first bytes after the greeting start with (MySQL
    # SSLRequest), else 0; record mode forwards it and intercepts the TLS that follows on
    # both sides, replay (when that destination was recorded over TLS) intercepts it
    tls_request: Callable[[bytes], int] | None = None
    # fault injection: raises ValueError when this protocol cannot fail as ``failure``
    # says (an unknown Kafka error name, an HTTP status out of range); None: no errors
    check_fault: Callable[[Failure], None] | None = None
    # the form of a request in which its volatile values pair up with a recording's by
    # position, once its objects' keys are sorted (None: the request itself); Kafka's
    # match key, whose JSON record values are data, not text in the producer's key order
    pairing: Callable[[Readable], Readable] | None = None
    # the protocol over UDP too (the proxy's datagram listener; DNS)
    datagrams: Datagrams | None = None

    def recorder_for(self, tls: bool, authority: str, blobs: BlobStore | None = None) -> Recorder:
        if self.connection_aware:
            return self.recorder(scheme="https" if tls else "http", authority=authority,
                                 blobs=blobs)
        return self.recorder()

    def replayer_for(self, tls: bool, authority: str, blobs: BlobStore | None = None) -> Replayer:
        if self.connection_aware:
            return self.replayer(scheme="https" if tls else "http", authority=authority,
                                 blobs=blobs)
        return self.replayer()


def digest_form(value: Readable) -> dict[str, Any] | None:
    """``{size, sha256}`` of a payload kept as a blob (``{file, size, sha256}``) or only as
    a digest (``{omitted, size, sha256}``), how such payloads are compared (a live one
    over the limit is only digested); None for any other value."""
    if isinstance(value, dict) and "sha256" in value and ("file" in value or value.get("omitted")):
        return {"size": value.get("size"), "sha256": value.get("sha256")}
    return None


def blob(data: bytes) -> Readable:
    """Readable form of bytes: text as ``str`` when it is clean UTF-8, else ``{"hex": ...}``."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": data.hex()}
    if text.isprintable() or all(c.isprintable() or c in "\r\n\t" for c in text):
        return text
    return {"hex": data.hex()}


def unblob(value: Readable) -> bytes:
    """Inverse of ``blob`` (also accepts ``{"base64": ...}``)."""
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and "hex" in value:
        return bytes.fromhex(value["hex"])
    if isinstance(value, dict) and "base64" in value:
        return base64.b64decode(value["base64"])
    raise EncodeError(f"not a readable byte string: {value!r}")
