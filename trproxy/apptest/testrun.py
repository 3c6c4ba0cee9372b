"""The test runner: send each recorded API call to the app and compare its answer.

``run_tests`` loads a test set's test cases (``apptest/testcase.py``), waits until the app
accepts connections, then for each test in order: calls ``before_test(test)`` (the CLI
switches the mock window and the faked clock there), prepares the recorded request
(``prepare``: secrets from the environment, values chained from earlier tests' live
answers and the cookie jar (``apptest/chain.py``), the user's ``Overrides``, then the
secrets file), sends it over an HTTP/1.1 keep-alive connection (h11; headers as
recorded, body as recorded with framing recomputed), reads the response within
``timeout`` seconds, reads from it what later tests chain on, redacts it as recording
did, compares it with the recorded one under the noise rules (``apptest/noise.py``),
calls ``after_test(test)`` and ``on_result(result)``.

A test *fails* when the response differs outside the noise, and is an *error* when no
response came (connection refused or reset, timeout, a request that cannot be rebuilt).
A request holding a secret placeholder nothing fills is not sent: the test *needs a
secret* (``NEEDS_SECRET``), and says which and how to give it.
An error closes the connection; the next test opens a new one. A kept-alive connection
that the app closed while idle is reopened and the request sent again, once, and only
when not a byte of response had arrived on the old one.

``mark_noise`` turns the differences between two runs of the same tests into noise in
the test files (``noise_between``): what differs between two replays is not behaviour.

Invariant: the runner only talks to the app (``host``, loopback by default); it never
edits recordings except through ``mark_noise``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import h11

from ..httpclient import Http1Connection, Unanswered
from ..protocols.base import BlobReader, BlobStore, DecodeError
from ..protocols.http.body import BodyUnavailable, body_file, open_body
from ..protocols.http.config import NO_REDACTION, HttpConfig, Redaction
from ..protocols.http.readable import (
    body_bytes,
    header_value,
    headers_from_readable,
    lenient_urlsplit,
    redact_message,
)
from ..protocols.secrets import PLACEHOLDER, hint_of, placeholder
from ..store.blobs import DirBlobStore
from .chain import LiveChains, fill_placeholders, substitute
from .noise import Difference, Noise, compare, noise_between, parse_path, render_diff
from .secretfile import SECRETS, env_name, from_env
from .testcase import TestCase, add_noise, app_port, load_tests, now_iso, target_of

PASSED, FAILED, ERROR, NEEDS_SECRET = "passed", "failed", "error", "needs-secret"
_NOT_SENT = frozenset({b"content-length", b"transfer-encoding", b"expect", b"te", b"upgrade"})

Hook = Callable[[TestCase], Awaitable[None] | None]


@dataclass
class TestResult:
    test: TestCase
    status: str
    actual: dict[str, Any] | None = None
    differences: list[Difference] = field(default_factory=list)
    noise: Noise = field(default_factory=Noise)
    error: str | None = None
    started: str = ""
    duration_ms: float = 0.0

    __test__ = False

    @property
    def name(self) -> str:
        return self.test.name

    @property
    def passed(self) -> bool:
        return self.status == PASSED

    def diff(self) -> str:
        """Unified diff recorded -> live with noise masked ("" when passed or no response)."""
        if self.actual is None or self.passed:
            return ""
        return render_diff(self.test.response, self.actual, self.noise)


@dataclass
class TestRun:
    test_set: Path
    results: list[TestResult] = field(default_factory=list)
    started: str = ""
    duration_ms: float = 0.0  # from the app's start to the last answer
    startup_ms: float = 0.0  # of which: until the app listened (and ``delay``)

    __test__ = False

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.results)


class AppNotListening(Exception):
    """The app did not accept connections in time (or exited first)."""


async def wait_listening(host: str | Sequence[str], port: int, timeout: float = 60.0,
                         alive: Callable[[], bool] | None = None) -> str:
    """Poll-connect until one of ``host`` (a host or several, tried in order) accepts on
    ``port``; returns the host that did."""
    hosts = [host] if isinstance(host, str) else list(host)
    where = " or ".join(f"{h}:{port}" for h in hosts)
    start = time.monotonic()
    while True:
        if alive is not None and not alive():
            raise AppNotListening(f"the app exited before listening on {where}")
        for candidate in hosts:
            try:
                _r, w = await asyncio.wait_for(asyncio.open_connection(candidate, port), 1.0)
            except (TimeoutError, OSError):
                continue
            w.close()
            with contextlib.suppress(OSError):
                await w.wait_closed()
            return candidate
        if time.monotonic() - start > timeout:
            raise AppNotListening(f"nothing listens on {where} after {timeout:.0f}s")
        await asyncio.sleep(0.01)  # a refused connect costs microseconds: notice the app soon


class HttpClient:
    """Keep-alive connections to the app, one per address, reopened when needed. Responses
    come back as readable data with ``config``'s redaction (default: none)."""

    def __init__(self, config: HttpConfig | None = None, blobs: BlobStore | None = None) -> None:
        self.config = config or HttpConfig(redaction=NO_REDACTION)
        self.blobs = blobs  # request bodies recorded as files
        self._conns: dict[tuple[str, int], Http1Connection] = {}

    async def send(self, request: dict[str, Any], host: str, port: int) -> dict[str, Any]:
        """Send a readable request; returns the readable response."""
        for attempt in (1, 2):
            h11_request, body = build_request(request, host, port, blobs=self.blobs)
            conn = self._conns.get((host, port))
            if conn is None or not conn.reusable:
                await self._drop(host, port)
                conn = self._conns[(host, port)] = await Http1Connection.open(host, port)
            reused = conn.used
            try:
                return await conn.exchange(h11_request, body, self.config)
            except Unanswered:
                await self._drop(host, port)
                if not reused or attempt == 2:  # a fresh connection failing is the app's answer
                    raise
            except (ConnectionError, DecodeError):
                await self._drop(host, port)
                raise
        raise AssertionError("unreachable")

    async def _drop(self, host: str, port: int) -> None:
        conn = self._conns.pop((host, port), None)
        if conn is not None:
            await conn.close()

    async def close(self) -> None:
        for host, port in list(self._conns):
            await self._drop(host, port)


def build_request(request: dict[str, Any], host: str, port: int,
                  override: Sequence[tuple[str, str]] = (),
                  blobs: BlobStore | None = None) -> tuple[h11.Request, bytes | BlobReader]:
    """The h11 request and its body for a readable request (framing recomputed): bytes,
    or an open blob for a body recorded as a file (streamed, not loaded).

    ``override`` headers replace recorded ones of the same name (credentials that were
    redacted at record time: ``Authorization``, ``Cookie``).
    """
    body: bytes | BlobReader
    if body_file(request.get("body")) is not None:
        body = open_body(request["body"], blobs)
    else:
        body = body_bytes(request)
    size = len(body) if isinstance(body, bytes) else body.size
    replaced = {name.lower().encode() for name, _v in override}
    headers = [(n, v) for n, v in headers_from_readable(request.get("headers") or [])
               if n.lower() not in _NOT_SENT and n.lower() not in replaced]
    headers += [(n.encode(), v.encode()) for n, v in override]
    if not any(n.lower() == b"host" for n, _v in headers):
        headers.insert(0, (b"Host", f"{host}:{port}".encode()))
    method = str(request.get("method", "GET")).upper()
    if size or method in ("POST", "PUT", "PATCH"):
        headers.append((b"Content-Length", str(size).encode()))
    target = target_of(str(request.get("url", "/")))
    return h11.Request(method=method, target=target.encode(), headers=headers), body


async def _call(hook: Callable[..., Any] | None, *args: Any) -> None:
    if hook is not None:
        result = hook(*args)
        if inspect.isawaitable(result):
            await result


@dataclass(frozen=True)
class Overrides:
    """What the user changes in every request: ``replace_headers`` only where the recorded
    request has that header, ``add_headers`` everywhere (replacing), ``body_fields``
    (``path=value``: a JSON path or a form field) only where the body has that field."""

    replace_headers: tuple[tuple[str, str], ...] = ()
    add_headers: tuple[tuple[str, str], ...] = ()
    body_fields: tuple[tuple[str, str], ...] = ()

    def apply(self, request: dict[str, Any]) -> dict[str, Any]:
        if not (self.replace_headers or self.add_headers or self.body_fields):
            return request
        headers = [list(h) for h in request.get("headers") or []]
        for name, value in self.replace_headers:
            headers = [[n, value if isinstance(n, str) and n.lower() == name.lower() else v] for n, v in headers]
        for name, value in self.add_headers:
            headers = [h for h in headers if not (isinstance(h[0], str) and h[0].lower() == name.lower())]
            headers.append([name, value])
        out = dict(request, headers=headers)
        for path, value in self.body_fields:
            out = set_body_field(out, path, value)
        return out


def set_body_field(request: dict[str, Any], path: str, value: str) -> dict[str, Any]:
    """``request`` with a JSON body's ``path`` (``user.password``, ``items[0].qty``) or a
    form body's field set to ``value`` (JSON-decoded when it is JSON: ``42``, ``true``),
    where the recorded body has it; otherwise unchanged."""
    body = request.get("body")
    if isinstance(body, dict) and "json" in body:
        steps = parse_path(path)
        try:
            parsed: Any = json.loads(value)
        except ValueError:
            parsed = value
        data = _set_at(body["json"], steps, parsed)
        return request if data is None else dict(request, body=dict(body, json=data))
    ctype = header_value(request.get("headers") or [], "content-type") or ""
    if isinstance(body, str) and "x-www-form-urlencoded" in ctype:
        pairs = parse_qsl(body, keep_blank_values=True)
        if any(k == path for k, _v in pairs):
            return dict(request, body=urlencode([(k, value if k == path else v) for k, v in pairs]))
    return request


def _set_at(data: Any, steps: tuple[Any, ...], value: Any) -> Any:
    """A copy of ``data`` with ``steps`` set to ``value``; None when the path is absent."""
    if not steps:
        return value
    step, rest = steps[0], steps[1:]
    if isinstance(data, dict) and isinstance(step, str) and step in data:
        inner = _set_at(data[step], rest, value)
        return None if inner is None and rest else {**data, step: inner}
    if isinstance(data, list) and isinstance(step, int) and 0 <= step < len(data):
        inner = _set_at(data[step], rest, value)
        if inner is None and rest:
            return None
        return [inner if i == step else v for i, v in enumerate(data)]
    return None


@dataclass
class Preparer:
    """Turns a recorded request into the one to send: see the module docstring's order."""

    chains: LiveChains
    secrets: Mapping[str, str] = field(default_factory=dict)  # the secrets file
    environ: Mapping[str, str] | None = None  # default os.environ
    overrides: Overrides = field(default_factory=Overrides)

    def prepare(self, test: TestCase) -> tuple[dict[str, Any], list[str]]:
        """The request to send, and the secrets nothing could fill."""
        request = test.request
        for name in _placeholders(request):
            value = from_env(name, self.environ)
            if value is not None:
                self._known(name, value)
                request = substitute(request, placeholder(name), value)
        request = self.chains.apply(request, test.chain)
        request = self.chains.fill_cookies(request)
        request = self.overrides.apply(request)
        return fill_placeholders(request, lambda name: self._known(name, self.secrets.get(name)))

    def _known(self, name: str, value: str | None) -> str | None:
        """A value sent for ``name``: the app may echo it, redaction must know it."""
        if value is not None and self.chains.vault is not None:
            self.chains.vault.alias(name, value)
        return value


def _placeholders(request: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(m.group(1) for m in PLACEHOLDER.finditer(json.dumps(request, ensure_ascii=False))))


def needs_secret_message(names: list[str]) -> str:
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return (f"needs secret {shown}: set {env_name(names[0])}{' (etc.)' if len(names) > 1 else ''} "
            f"or add it to the recording directory's {SECRETS}")


async def run_tests(
    test_set: Path,
    *,
    tests: Sequence[TestCase] | None = None,
    app_started: float | None = None,
    host: str = "127.0.0.1",
    ports: Mapping[int, int] | None = None,
    default_port: int | None = None,
    delay: float = 0.0,
    timeout: float = 10.0,
    startup_timeout: float = 60.0,
    global_noise: Noise | None = None,
    names: list[str] | None = None,
    http_config: HttpConfig | None = None,
    overrides: Overrides | None = None,
    secrets: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    app_alive: Callable[[], bool] | None = None,
    before_test: Hook | None = None,
    after_test: Hook | None = None,
    on_start: Callable[[TestCase, int, int], Any] | None = None,
    on_result: Callable[[TestResult, int, int], Any] | None = None,
) -> TestRun:
    """Run a test set's tests (all, or those in ``names``) against the app; ``tests``: the
    set's tests when the caller has loaded them already; ``app_started``: when the app was
    started (``time.monotonic()``; default now), where its start-up time counts from.

    ``ports`` maps recorded app ports to live ones (default: the same port);
    ``delay`` is waited once the app listens, before the first test (apps that listen
    before they are ready); ``app_alive`` lets the wait stop early when the app exits.
    ``http_config``'s redaction (with the run's secret vault) is applied to live answers
    before they are compared; ``secrets`` is the secrets file, ``environ`` where
    ``TRPROXY_SECRET_*`` are read (default ``os.environ``); ``overrides`` the user's
    header and body changes. ``on_start(test, i, n)`` / ``on_result(result, i, n)`` feed
    the progress display.
    """
    ports = ports or {}
    config = http_config or HttpConfig()
    tests = [t for t in (load_tests(test_set) if tests is None else tests) if names is None or t.name in names]
    run = TestRun(test_set, started=now_iso())
    t0 = time.monotonic() if app_started is None else app_started
    addresses = sorted({p for t in tests if (p := app_port(t, ports, default_port)) is not None})
    # an app may listen on either loopback address (``localhost`` is ::1 first for some)
    candidates = (host, "::1") if host == "127.0.0.1" else (host,)
    hosts: dict[int, str] = {}
    for port in addresses:
        hosts[port] = await wait_listening(candidates, port, startup_timeout, app_alive)
    if delay > 0:
        await asyncio.sleep(delay)
    run.startup_ms = (time.monotonic() - t0) * 1000
    preparer = Preparer(LiveChains({t.name: t.chain for t in tests}, config.redaction.vault),
                        secrets or {}, environ, overrides or Overrides())
    client = HttpClient(replace(config, redaction=NO_REDACTION), DirBlobStore(test_set))
    try:
        for i, test in enumerate(tests, 1):
            await _call(on_start, test, i, len(tests))
            await _call(before_test, test)
            try:
                target = app_port(test, ports, default_port)
                live_host = hosts.get(target, host) if target is not None else host
                result = await _run_one(client, preparer, config.redaction, test, live_host, target,
                                        timeout, global_noise or Noise())
            finally:
                await _call(after_test, test)
            run.results.append(result)
            await _call(on_result, result, i, len(tests))
    finally:
        await client.close()
    run.duration_ms = (time.monotonic() - t0) * 1000
    return run


async def _run_one(client: HttpClient, preparer: Preparer, redaction: Redaction, test: TestCase,
                   host: str, port: int | None, timeout: float, global_noise: Noise) -> TestResult:
    noise = global_noise.with_paths(test.noise, test.created_at)
    result = TestResult(test, ERROR, noise=noise, started=now_iso())
    t0 = time.monotonic()
    request, missing = preparer.prepare(test)
    if missing:
        result.status = NEEDS_SECRET
        result.error = needs_secret_message(missing)
        return result
    try:
        if port is None:
            raise ValueError("the test has no port and no default port was given")
        raw = await asyncio.wait_for(client.send(request, host, port), timeout)
    except TimeoutError:
        await client.close()
        result.error = f"no response within {timeout:g}s"
    except (OSError, h11.ProtocolError, DecodeError, BodyUnavailable, ValueError) as exc:
        await client.close()
        result.error = f"{type(exc).__name__}: {exc}"
    else:
        preparer.chains.learn(test.name, raw)
        context = hint_of(lenient_urlsplit(str(test.request.get("url", ""))).path)
        actual = redact_message(raw, redaction, context)
        result.actual = actual
        result.differences = compare(test.response, actual, noise)
        result.status = FAILED if result.differences else PASSED
    result.duration_ms = (time.monotonic() - t0) * 1000
    return result


def mark_noise(first: TestRun, second: TestRun) -> dict[str, list[str]]:
    """Write into each test file the parts where two runs' live responses differ.

    Returns test name -> paths added. Tests without a response in both runs are skipped.
    """
    by_name = {r.name: r for r in second.results}
    added: dict[str, list[str]] = {}
    for a in first.results:
        b = by_name.get(a.name)
        if a.actual is None or b is None or b.actual is None or a.test.path is None:
            continue
        new = add_noise(a.test.path, noise_between(a.actual, b.actual))
        if new:
            added[a.name] = new
    return added
