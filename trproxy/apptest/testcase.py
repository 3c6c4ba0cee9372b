"""Inbound test cases on disk: ``<test set>/tests/test-K.yaml``, one HTTP call each.

A test case is one API call the app received while recording: the request as sent,
the response the app gave, and the parts of that response that may change between runs
(``noise``, see ``apptest/noise.py``). Document envelope, like the mocks::

    version: trproxy/v1
    kind: http-test
    name: test-3
    spec:
      request:  {method, url, http_version, headers: [[name, value], ...], body}
      response: {status, reason, http_version, headers, body}
      noise: [header.etag, body.json.created_at]   # edit by hand; [] when none
      chain:                                        # values taken from earlier answers
      - {value: "<secret:login.token>", from: test-1, at: body.json.token}
      created: "2024-05-01T10:00:00.123456+00:00"   # when the request arrived (UTC)
      port: 8080                                    # the app port it arrived on
    curl: |                                         # to send it by hand (informational)
      curl -X POST ...

Request and response are the HTTP dialect's readable form (``protocols/http/readable.py``),
secrets as named placeholders (``apptest/secretfile.py``); ``chain`` is
``apptest/chain.py``'s (absent when empty).
Unknown ``spec`` keys are kept on a round trip (``extra``).

Invariants: a test file is replaced atomically (temp file + rename, ``store/safeio.py``), so a reader
sees the old or the new file, never half of one; tests are listed in numeric order
(``test-2`` before ``test-10``); names are never reused within a test set while their
file exists, and ``dedup`` keeps the names of the tests it keeps.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..store import safeio
from ..store.errors import FormatError
from ..store.model import FORMAT_VERSION
from ..store.yamlio import dump, read_document
from .chain import Link
from .noise import Noise, detect_noise

KIND = "http-test"
TESTS = "tests"
_NAME = re.compile(r"^test-(\d+)\.ya?ml$")


@dataclass
class TestCase:
    name: str
    request: dict[str, Any]
    response: dict[str, Any]
    noise: list[str] = field(default_factory=list)
    created: str = ""  # ISO 8601 UTC, when the request arrived
    port: int | None = None  # the port the app received it on
    chain: list[Link] = field(default_factory=list)  # values from earlier tests' answers
    extra: dict[str, Any] = field(default_factory=dict)
    path: Path | None = field(default=None, compare=False)

    __test__ = False  # not a pytest class

    @property
    def number(self) -> int:
        return test_number(self.name)

    @property
    def created_at(self) -> datetime | None:
        """``created`` as an aware datetime (None when absent or unreadable)."""
        if not self.created:
            return None
        try:
            moment = datetime.fromisoformat(str(self.created).replace("Z", "+00:00"))
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)

    @property
    def title(self) -> str:
        """``GET /orders/1`` (path and query only)."""
        req = self.request
        return f"{req.get('method', '?')} {target_of(str(req.get('url', '')))}"

    def to_doc(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "request": self.request,
            "response": self.response,
            "noise": list(self.noise),
            "created": self.created,
        }
        if self.port is not None:
            spec["port"] = self.port
        if self.chain:
            spec["chain"] = [link.to_doc() for link in self.chain]
        spec.update(self.extra)
        return {"version": FORMAT_VERSION, "kind": KIND, "name": self.name, "spec": spec,
                "curl": curl_command(self.request, self.port)}

    @classmethod
    def from_doc(cls, doc: Any, path: Path | None = None) -> TestCase:
        try:
            return cls._from_doc(doc, path)
        except FormatError as exc:
            raise exc.at(path) from None

    @classmethod
    def _from_doc(cls, doc: Any, path: Path | None) -> TestCase:
        if not isinstance(doc, dict) or not isinstance(doc.get("spec"), dict):
            raise FormatError("not a trproxy test document")
        if doc.get("version") != FORMAT_VERSION:
            raise FormatError(f"unsupported version {doc.get('version')!r} "
                              f"(this trproxy reads {FORMAT_VERSION})")
        if doc.get("kind") != KIND:
            raise FormatError(f"kind {doc.get('kind')!r} is not {KIND}")
        spec = dict(doc["spec"])
        try:
            request, response = spec.pop("request"), spec.pop("response")
        except KeyError as exc:
            raise FormatError(f"spec has no {exc.args[0]}") from exc
        if not isinstance(request, dict) or not isinstance(response, dict):
            raise FormatError("request and response must be mappings")
        port = spec.pop("port", None)
        if port is not None and (isinstance(port, bool) or not isinstance(port, int)):
            raise FormatError(f"spec.port must be a port number, not {str(port)[:40]!r}")
        chain = spec.pop("chain", None) or []
        try:
            if not isinstance(chain, list):
                raise ValueError("chain must be a list")
            links = [Link.from_doc(doc) for doc in chain]
        except ValueError as exc:
            raise FormatError(str(exc)) from exc
        return cls(
            name=str(doc.get("name") or (path.stem if path else "")),
            request=request,
            response=response,
            noise=noise_list(spec.pop("noise", None)),
            created=str(spec.pop("created", "") or ""),
            port=port,
            chain=links,
            extra=spec,
            path=path,
        )


def noise_list(value: Any) -> list[str]:
    """``noise`` as a list of paths; a Keploy-style mapping ``{path: []}`` gives its keys."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [str(k) for k in value]
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str):
        return [value]
    raise FormatError(f"noise must be a list of paths, not {type(value).__name__}")


def test_number(name: str) -> int:
    tail = name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else -1


def app_port(test: TestCase, ports: Mapping[int, int], default_port: int | None) -> int | None:
    """Where to send a test: its recorded port (or its URL's), mapped through ``ports``."""
    recorded = test.port
    if recorded is None:
        try:
            recorded = urlsplit(str(test.request.get("url", ""))).port
        except ValueError:  # a port out of range
            pass
    if recorded is None:
        return default_port
    return ports.get(recorded, recorded)


def target_of(url: str) -> str:
    """Origin-form target (``/path?query``) of an absolute or origin-form URL."""
    if "://" in url:
        rest = url.split("://", 1)[1]
        slash = rest.find("/")
        query = rest.find("?")
        if slash == -1 or (query != -1 and query < slash):
            return "/" + rest[query:] if query != -1 else "/"
        return rest[slash:]
    return url or "/"


def tests_dir(test_set: Path) -> Path:
    return test_set / TESTS


def list_tests(test_set: Path) -> list[Path]:
    """Test files of a test set in numeric order (a test set is a child of the root)."""
    try:
        with safeio.open_dir(tests_dir(test_set), test_set.parent) as d:
            names = [entry.name for entry in d.entries()]
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = [(int(m.group(1)), name) for name in names if (m := _NAME.match(name))]
    return [tests_dir(test_set) / name for _n, name in sorted(found)]


def load_test(path: Path) -> TestCase:
    """``<root>/<test set>/tests/<name>.yaml``, read from the root without following links."""
    return TestCase.from_doc(read_document(path, path.parents[2]), path)


def load_tests(test_set: Path) -> list[TestCase]:
    return [load_test(p) for p in list_tests(test_set)]


def next_test_name(test_set: Path) -> str:
    numbers = [test_number(p.stem) for p in list_tests(test_set)]
    return f"test-{max(numbers, default=0) + 1}"


def write_test(test_set: Path, case: TestCase) -> Path:
    """Write ``tests/<name>.yaml`` atomically; returns its path (also set on ``case``)."""
    path = tests_dir(test_set) / f"{case.name}.yaml"
    safeio.write_bytes(path, test_set.parent, dump(case.to_doc()).encode("utf-8"))
    case.path = path
    return path


def record_test(test_set: Path, name: str, request: dict[str, Any], response: dict[str, Any],
                created: str, port: int | None, noise: Noise | None = None,
                chain: list[Link] | None = None) -> TestCase:
    """Store one inbound call (record mode) with the noise its response values show.

    ``created`` is when the request arrived (ISO 8601); ``noise`` the run's global rules:
    paths they already cover and headers they ignore are not repeated in the file.
    """
    noise = noise or Noise()
    moment = TestCase(name, request, response, created=created).created_at
    found = [p for p in detect_noise(response, moment, noise.volatile_headers) if not noise.ignores(p)]
    case = TestCase(name, request, response, found, created, port, list(chain or []))
    write_test(test_set, case)
    return case


def add_noise(path: Path, paths: list[str]) -> list[str]:
    """Add noise paths to a test file (kept if already there); returns the ones added."""
    case = load_test(path)
    added = [p for p in paths if p not in case.noise]
    if added:
        case.noise = case.noise + added
        write_test(path.parent.parent, case)
    return added


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def curl_command(request: dict[str, Any], port: int | None = None) -> str:
    """A curl command line that sends the recorded request (body as recorded, readable)."""
    url = str(request.get("url", "/"))
    if "://" not in url:
        url = f"http://127.0.0.1:{port or 80}{url}"
    parts = ["curl", "-X", str(request.get("method", "GET")), shlex.quote(url)]
    for name, value in request.get("headers") or []:
        if str(name).lower() in ("host", "content-length", "transfer-encoding", "connection"):
            continue
        if isinstance(value, str):
            parts += ["-H", shlex.quote(f"{name}: {value}")]
    body = request.get("body")
    if isinstance(body, dict) and "json" in body:
        parts += ["--data-raw", shlex.quote(json.dumps(body["json"], ensure_ascii=False))]
    elif isinstance(body, str) and body:
        parts += ["--data-raw", shlex.quote(body)]
    return " \\\n  ".join([" ".join(parts[:4])] + [" ".join(parts[i:i + 2]) for i in range(4, len(parts), 2)]) + "\n"
