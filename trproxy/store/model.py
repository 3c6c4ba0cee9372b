"""The recorded exchange: one request and its responses on one connection.

Times come from the proxy (never from a codec): ``started`` is wall-clock ISO 8601
UTC, ``duration_ms`` the time from the request's first byte to the last response byte.
``to_doc``/``from_doc`` give the YAML document envelope (``version``, ``kind``,
``name``, ``spec``) that Keploy users know.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import FormatError

FORMAT_VERSION = "trproxy/v1"


@dataclass
class Exchange:
    protocol: str
    destination: str  # "host:port" as the app dialled it ("[::1]:6379" for IPv6)
    request: Any
    responses: list[Any]
    lifetime: str = "data"
    summary: str = ""
    connection: int = 0
    seq: int = 0
    started: str = ""
    duration_ms: float = 0.0
    tests: list[str] = field(default_factory=list)  # inbound test cases open when it started
    tls: bool = False  # the connection was TLS, terminated by trproxy (replay offers it again)
    alpn: str | None = None  # the application protocol TLS negotiated (replay selects it again)
    order: int = 0  # run-wide number of the client request it came from (0: not recorded)
    wait_ms: float | None = None  # from the request's first byte to the answer's first byte
    unanswered: bool = False  # the client gave up before any answer came (replay holds it)
    interrupted: bool = False  # its answer came after another connection interrupted it
    answered_after: int = 0  # the run-wide order reached when its answer started, if later
    # an event document instead of an exchange: "push" (messages the server sent on its
    # own), "close"/"reset" (the server ended the connection), "refused" (at connect);
    # ``after``: the run-wide request ``order`` reached when it happened
    event: str | None = None
    after: int = 0
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_doc(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "destination": self.destination,
            "connection": self.connection,
            "seq": self.seq,
            "started": self.started,
            "duration_ms": round(self.duration_ms, 3),
        }
        if self.tests:
            meta["tests"] = list(self.tests)
        if self.tls:
            meta["tls"] = True
        if self.alpn:
            meta["alpn"] = self.alpn
        if self.order:
            meta["order"] = self.order
        if self.wait_ms is not None:
            meta["wait_ms"] = round(self.wait_ms, 3)
        if self.unanswered:
            meta["unanswered"] = True
        if self.interrupted:
            meta["interrupted"] = True
        if self.answered_after > self.order:
            meta["answered_after"] = self.answered_after
        if self.event:
            meta["after"] = self.after
            del meta["duration_ms"]
            return {"version": FORMAT_VERSION, "kind": self.protocol, "name": self.name,
                    "spec": {"lifetime": "event", "event": self.event, "summary": self.summary,
                             "metadata": meta, "responses": self.responses, **self.extra}}
        spec: dict[str, Any] = {
            "lifetime": self.lifetime,
            "summary": self.summary,
            "metadata": meta,
            "request": self.request,
            "responses": self.responses,
        }
        spec.update(self.extra)
        return {"version": FORMAT_VERSION, "kind": self.protocol, "name": self.name, "spec": spec}

    @classmethod
    def from_doc(cls, doc: Any) -> Exchange:
        """The exchange of a document whose envelope is checked field by field, so a
        wrong-typed field is a ``FormatError`` at load, not a crash at replay (what a
        protocol makes of ``request``/``responses`` is its codec's business)."""
        if not isinstance(doc, dict):
            raise FormatError(f"not a trproxy exchange document: a {_kind(doc)}, not a mapping")
        version = doc.get("version")
        if version != FORMAT_VERSION:
            raise FormatError(f"unsupported recording version {_short(version)}"
                              f" (this trproxy reads {FORMAT_VERSION})")
        spec = dict(_field(doc, "spec", dict))
        event = _field(spec, "event", str, None, "spec.")  # an event document has no request
        if "request" not in spec and event is None:
            raise FormatError("spec has no request")
        meta = _field(spec, "metadata", dict, {}, "spec.")
        return cls(
            protocol=_field(doc, "kind", str),
            name=_field(doc, "name", str, ""),
            lifetime=_lifetime(_field(spec, "lifetime", str, "data", "spec."), event),
            summary=_field(spec, "summary", str, "", "spec."),
            request=spec.pop("request", None),
            responses=_field(spec, "responses", list, [], "spec."),
            destination=_field(meta, "destination", str, "", _META),
            connection=_field(meta, "connection", int, 0, _META),
            seq=_field(meta, "seq", int, 0, _META),
            started=_field(meta, "started", str, "", _META),
            duration_ms=_field(meta, "duration_ms", (int, float), 0.0, _META),
            tests=_tests(_field(meta, "tests", list, [], _META)),
            tls=_field(meta, "tls", bool, False, _META),
            alpn=_field(meta, "alpn", str, None, _META),
            order=_field(meta, "order", int, 0, _META),
            wait_ms=_field(meta, "wait_ms", (int, float), None, _META),
            unanswered=_field(meta, "unanswered", bool, False, _META),
            interrupted=_field(meta, "interrupted", bool, False, _META),
            answered_after=_field(meta, "answered_after", int, 0, _META),
            event=event,
            after=_field(meta, "after", int, 0, _META),
            extra=extra_of(spec),
        )


_NOT_EXTRA = frozenset(("metadata", "lifetime", "summary", "request", "responses", "event"))


def extra_of(spec: dict[str, Any]) -> dict[str, Any]:
    """A document's ``spec`` keys that are not the exchange's own fields (``extra``)."""
    return {k: v for k, v in spec.items() if k not in _NOT_EXTRA}

_META = "spec.metadata."
_REQUIRED = object()
_LIFETIMES = ("data", "session")


def _field(doc: dict, key: str, kind: type | tuple[type, ...], default: Any = _REQUIRED,
           prefix: str = "") -> Any:
    """``doc[key]`` when it is a ``kind`` (bools are not numbers); ``default`` when absent
    or null, if there is one."""
    value = doc.get(key)
    if value is None:
        if default is _REQUIRED:
            raise FormatError(f"{prefix}{key} is missing")
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise FormatError(f"{prefix}{key} must be {_TYPE_NAMES[kind]}, not {_kind(value)} {_short(value)}")
    return value


def _lifetime(value: str, event: str | None) -> str:
    if event is not None:  # an event document's lifetime is "event"
        return value
    if value not in _LIFETIMES:
        raise FormatError(f"spec.lifetime must be data or session, not {_short(value)}")
    return value


def _tests(value: list) -> list[str]:
    if value and not all(isinstance(t, str) for t in value):  # (most lists are empty)
        raise FormatError(f"{_META}tests must be a list of test names (text), not {_short(value)}")
    return list(value)


_TYPE_NAMES: dict[Any, str] = {dict: "a mapping", list: "a list", str: "text", int: "an integer",
                               (int, float): "a number", bool: "true or false"}


def _kind(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "text", bool: "boolean", int: "integer",
            float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters: an error message stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
