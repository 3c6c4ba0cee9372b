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
        if "request" not in spec:
            raise FormatError("spec has no request")
        meta = _field(spec, "metadata", dict, {}, "spec.")
        return cls(
            protocol=_field(doc, "kind", str),
            name=_field(doc, "name", str, ""),
            lifetime=_lifetime(_field(spec, "lifetime", str, "data", "spec.")),
            summary=_field(spec, "summary", str, "", "spec."),
            request=spec.pop("request"),
            responses=_field(spec, "responses", list, [], "spec."),
            destination=_field(meta, "destination", str, "", _META),
            connection=_field(meta, "connection", int, 0, _META),
            seq=_field(meta, "seq", int, 0, _META),
            started=_field(meta, "started", str, "", _META),
            duration_ms=_field(meta, "duration_ms", (int, float), 0.0, _META),
            tests=_tests(_field(meta, "tests", list, [], _META)),
            tls=_field(meta, "tls", bool, False, _META),
            extra={k: v for k, v in spec.items()
                   if k not in ("metadata", "lifetime", "summary", "responses")},
        )


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


def _lifetime(value: str) -> str:
    if value not in _LIFETIMES:
        raise FormatError(f"spec.lifetime must be data or session, not {_short(value)}")
    return value


def _tests(value: list) -> list[str]:
    if not all(isinstance(t, str) for t in value):
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
