"""Shared fixtures: real servers on loopback, the CI rule that root tests never skip, and
deterministic property tests in CI.

With ``TRPROXY_REQUIRE_ROOT=1`` (set by ``.ci/run``) a test that skips — no privileges,
no eBPF, a missing tool such as a C compiler or bcc — is reported as a failure instead,
so CI cannot go green by silently not running part of the suite.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from tests.support.docker import DockerDaemon
from tests.support.services import MariaDBServer, PostgresServer, RedisServer

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
