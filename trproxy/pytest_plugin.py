"""pytest plugin: tells the trproxy running around pytest where each test starts and ends.

Loaded through the ``pytest11`` entry point (or ``-p trproxy``), it does nothing unless
``TRPROXY_CONTROL`` is set, i.e. unless pytest runs under ``trproxy record|replay|run``
(``trproxy/proxy/control.py`` has the protocol). Only the standard library and pytest are
imported, so ``-p trproxy.pytest_plugin`` with trproxy on ``PYTHONPATH`` also works in a
virtual environment trproxy is not installed in.

Windows: a test's window (``pytest:<node id>``) spans its setup, call and teardown, so
function-scoped fixtures belong to the test. A fixture of a wider scope (class, module,
package, session) is set up inside whichever test first needs it, and torn down inside
the last one: its setup and teardown get a window of their own
(``pytest-fixture:<scope node id>::<name>``), so a subset (``-k``) or another order
finds them whatever test runs them. Each attempt of a rerun test
(pytest-rerunfailures) opens its window again.
"""

from __future__ import annotations

import os
import socket
import warnings

import pytest

ENV = "TRPROXY_CONTROL"
TEST = "pytest:"
FIXTURE = "pytest-fixture:"
_TIMEOUT = 60.0  # seconds to wait for the proxy's answer (a busy 2-core machine is slow)


class ControlError(Exception):
    """The proxy refused a message or went away."""


class Channel:
    """The connection to the proxy: one line out, one line back."""

    def __init__(self, address: str) -> None:
        token, sep, path = address.partition(":")
        if not sep or not path:
            raise ControlError(f"{ENV} is not <token>:<socket path>")
        self.pid = os.getpid()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(_TIMEOUT)
        try:
            self.sock.connect(path)
        except OSError as exc:
            self.sock.close()
            raise ControlError(f"cannot reach trproxy at {path}: {exc}") from exc
        self.file = self.sock.makefile("rb")
        self.call("hello", token)

    def call(self, verb: str, arg: str) -> None:
        line = f"{verb} {arg.replace(chr(10), chr(92) + 'n')}\n".encode()
        try:
            self.sock.sendall(line)
            answer = self.file.readline().decode("utf-8", "replace").strip()
        except OSError as exc:
            raise ControlError(f"trproxy's control channel failed: {exc}") from exc
        if answer != "ok":
            raise ControlError(f"the proxy answered '{answer}' to {verb}" if answer
                               else f"the proxy went away ({verb})")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Scoper:
    """The hooks, registered only when a proxy listens."""

    def __init__(self, channel: Channel) -> None:
        self.channel: Channel | None = channel

    def _send(self, verb: str, name: str) -> None:
        channel = self.channel
        if channel is None or channel.pid != os.getpid():  # off, or a forked child
            return
        try:
            channel.call(verb, name)
        except ControlError as exc:
            self.channel = None
            channel.close()
            warnings.warn(pytest.PytestWarning(f"trproxy: {exc}; the following tests are not scoped"),
                          stacklevel=1)

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item):
        self._send("open", TEST + item.nodeid)
        yield

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item, nextitem):
        yield
        self._send("close", TEST + item.nodeid)

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_fixture_setup(self, fixturedef, request):
        if fixturedef.scope == "function":
            yield
            return
        name = fixture_window(fixturedef, request)
        # the fixture's finalizers run last-in first-out: this one after its teardown...
        fixturedef.addfinalizer(lambda: self._send("close", name))
        self._send("open", name)
        yield
        self._send("close", name)
        # ...and this one before it (teardown code registered during setup sits between)
        fixturedef.addfinalizer(lambda: self._send("open", name))

    def pytest_unconfigure(self, config):
        if self.channel is not None:
            self.channel.close()
            self.channel = None


def fixture_window(fixturedef, request) -> str:
    """``pytest-fixture:<node id of its scope>::<name>[<param index>]``; a session
    fixture's scope node id is empty."""
    scope_id = request.node.nodeid
    name = f"{scope_id}::{fixturedef.argname}" if scope_id else fixturedef.argname
    if fixturedef.params is not None:
        name += f"[{request.param_index}]"
    return FIXTURE + name


def pytest_configure(config):
    address = os.environ.get(ENV)
    if not address or config.pluginmanager.has_plugin("trproxy-scoper"):
        return
    try:
        channel = Channel(address)
    except ControlError as exc:
        config.issue_config_time_warning(
            pytest.PytestConfigWarning(f"trproxy: {exc}; tests are not scoped"), stacklevel=2)
        return
    config.pluginmanager.register(Scoper(channel), "trproxy-scoper")
