"""Shared fixtures: real servers on loopback, the CI rule that root tests never skip,
deterministic property tests in CI, and what makes the suite safe under pytest-xdist
(docs/testing.md): ports held per fixture or test, tests grouped per worker by what they share.

With ``TRPROXY_REQUIRE_ROOT=1`` (set by ``.ci/run``) a test that skips — no privileges,
no eBPF, a missing tool such as a C compiler or bcc — is reported as a failure instead,
so CI cannot go green by silently not running part of the suite.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from tests.support.docker import DockerDaemon
from tests.support.services import (
    MariaDBServer,
    PostgresServer,
    RedisServer,
    held_ports,
    release_ports,
)

# CI runs the property tests with a fixed seed, so a run never fails on a new random
# example it happened to draw; developers' runs stay random and keep finding bugs.
# No per-example deadline: on a loaded shared machine an example's time says nothing
# (test_emit's streams failed at 330 ms of the default 200 ms), and speed is `make bench`'s.
settings.register_profile("ci", derandomize=True, print_blob=True, deadline=None)
settings.register_profile("local", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "local")


def _no_skips_in_ci(report) -> None:
    if report.skipped and os.environ.get("TRPROXY_REQUIRE_ROOT") == "1":
        report.outcome = "failed"
        report.longrepr = f"skipped, but TRPROXY_REQUIRE_ROOT=1 (CI) runs everything: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A whole module skipped at import (``pytest.skip(allow_module_level=True)``) too."""
    outcome = yield
    _no_skips_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _no_skips_in_ci(outcome.get_result())


# free_port() holds each port for this process until released: ports taken while a fixture
# is set up are released once it is torn down (a module's servers may stop and start again on
# theirs between tests), ports taken by a test itself after its teardown.
_fixture_ports: dict[int, set[int]] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    before = held_ports()
    yield
    _fixture_ports.setdefault(id(fixturedef), set()).update(held_ports() - before)


def pytest_fixture_post_finalizer(fixturedef, request):
    release_ports(_fixture_ports.pop(id(fixturedef), set()))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    before = held_ports()
    yield
    item.stash[_CALL_PORTS] = held_ports() - before


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield
    release_ports(item.stash.get(_CALL_PORTS, set()))


_CALL_PORTS = pytest.StashKey[set]()


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup`` (scripts/test.sh): tests sharing a module- or class-scoped
    fixture of ours go to one worker, so it is set up once; the users of the private dockerd
    and of the session's MariaDB too (one of each per run). Slow tests first, so no worker ends on a long one alone."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        defs = [d[-1] for d in info.name2fixturedefs.values() if d] if info else []
        if "docker_daemon" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("docker"))
        elif "mariadb_server" in item.fixturenames:  # one MariaDB per run, not per worker
            item.add_marker(pytest.mark.xdist_group("mariadb"))
        elif any(d.scope in ("class", "module", "package") and d.func.__module__.startswith("tests.")
                 for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    yield server
    server.destroy()


@pytest.fixture
def postgres_server():
    server = PostgresServer().start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def docker_daemon():
    """One private dockerd for the whole session (tests.support.docker), torn down after."""
    if os.geteuid() != 0:
        pytest.skip("a private dockerd needs root")
    daemon = DockerDaemon().start()
    yield daemon
    daemon.destroy()


@pytest.fixture(scope="session")
def mariadb_server():
    """One MariaDB for the whole session (tests may stop it to replay, then ``start`` it
    again on the same port and datadir), with TLS for the clients that ask for it."""
    server = MariaDBServer(ssl=True).start()
    yield server
    server.destroy()
