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
        try:
            if doc.get("version") != FORMAT_VERSION:
                raise FormatError(f"unsupported recording version {doc.get('version')!r}"
                                  f" (this trproxy reads {FORMAT_VERSION})")
            spec = dict(doc["spec"])
            meta = spec.pop("metadata", {}) or {}
            event = spec.pop("event", None)
            return cls(
                protocol=doc["kind"],
                name=doc.get("name", ""),
                lifetime=spec.pop("lifetime", "data"),
                summary=spec.pop("summary", ""),
                request=spec.pop("request", None) if event else spec.pop("request"),
                responses=spec.pop("responses", []) or [],
                destination=meta.get("destination", ""),
                connection=meta.get("connection", 0),
                seq=meta.get("seq", 0),
                started=meta.get("started", ""),
                duration_ms=meta.get("duration_ms", 0.0),
                tests=list(meta.get("tests") or []),
                tls=bool(meta.get("tls", False)),
                alpn=meta["alpn"] if isinstance(meta.get("alpn"), str) else None,
                order=meta["order"] if isinstance(meta.get("order"), int) else 0,
                wait_ms=meta["wait_ms"] if isinstance(meta.get("wait_ms"), (int, float)) else None,
                unanswered=meta.get("unanswered") is True,
                interrupted=meta.get("interrupted") is True,
                answered_after=meta["answered_after"] if isinstance(meta.get("answered_after"), int)
                else 0,
                event=str(event) if event else None,
                after=meta["after"] if isinstance(meta.get("after"), int) else 0,
                extra=spec,
            )
        except (AttributeError, KeyError, TypeError) as exc:
            raise FormatError(f"not a trproxy exchange document: {exc}") from exc
