"""``trproxy test -- CMD``: replay recorded API calls against the app, dependencies mocked.

Per test set: the replay proxy and the redirect go up, the app starts with the CA and
the faked clock in its environment, each test's request is sent once the app listens
(its mocks first in line, the clock at the test's recorded time), the responses are
compared under the noise rules, and the app is stopped whatever happened. A summary,
a JSON report and JUnit XML follow; the exit status is 0 only if every test passed.

Start-up order: the app is started as soon as the proxy listens and the redirect is
installed; the recording, config.yaml's settings, the codecs and the HTTP client
(mitmproxy, h2, cryptography: ~1 s of trproxy's start on a loaded machine) are loaded
right after, while the app imports its own modules on another core. Nothing awaits
between the two: a connection the app makes meanwhile waits in the kernel's queue until
the context it is served from is complete. A recording or a config.yaml that cannot be
read stops the app again and fails the run as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..proxy.context import Mode, RunContext
from ..proxy.datagrams import DatagramListener
from ..proxy.runner import RunError, RunOptions, build_context, dies_with_us, loop_factory
from ..proxy.server import Proxy
from ..redirect.errors import RedirectError
from ..store import existing_test_sets, recover, test_set_dir
from ..store.errors import FormatError
from .ports import wait_free
from .testcase import TestCase, app_port, list_tests, load_tests, now_iso
from .timefreeze import TimeFreeze, TimeFreezeError

if TYPE_CHECKING:  # the rest is imported once the app is started (see the docstring)
    from ..protocols.http.config import HttpConfig
    from .testrun import TestRun

log = logging.getLogger("trproxy")
_STOP_GRACE = 10.0


@dataclass
class TestOptions:
    command: list[str]
    root: Path = Path("trproxy")
    test_sets: list[str] = field(default_factory=list)
    delay: float = 0.0
    timeout: float = 10.0
    startup_timeout: float = 60.0
    headers: list[tuple[str, str]] = field(default_factory=list)  # replace where recorded
    add_headers: list[tuple[str, str]] = field(default_factory=list)  # set in every request
    body_fields: list[tuple[str, str]] = field(default_factory=list)  # path=value where present
    freeze_time: bool = True
    mark_noise: bool = False
    tls: bool = True
    strict: bool = False  # also fail on a miss, an unused recording, an answer out of order
    faults: list[str] = field(default_factory=list)  # --fault rules (proxy/faults.py)
    fault_profile: str | None = None  # a profile of config.yaml's fault_profiles


@dataclass
class _Settings:
    """config.yaml's settings and the secrets, read once: by the first test set's run,
    once its app is started."""

    root: Path
    _read: tuple[HttpConfig, dict[str, str]] | None = None

    def read(self) -> tuple[HttpConfig, dict[str, str]]:
        """(the HTTP settings with the run's secret vault, the secrets file)."""
        if self._read is None:
            from ..store.config import configure_protocols
            from .capture import http_config
            from .secretfile import load_secrets, use_secrets

            try:
                configure_protocols(self.root)
                vault = use_secrets(self.root, record=False)  # outbound stand-ins map back to names
                secrets = load_secrets(self.root)
                config = http_config(self.root)
            except FormatError as exc:
                raise RunError(str(exc)) from exc
            self._read = (replace(config, redaction=replace(config.redaction, vault=vault)), secrets)
        return self._read


def run_test_command(opts: TestOptions) -> int:
    for line in recover(opts.root):
        log.warning("%s", line)
    settings = _Settings(opts.root)
    sets = ([test_set_dir(opts.root, name) for name in opts.test_sets] if opts.test_sets
            else [s for s in existing_test_sets(opts.root) if list_tests(s)])
    if not sets:
        raise RunError(f"no test cases under {opts.root} (record with `trproxy record -- CMD` while calling the app)")
    ok = True
    for test_set in sets:
        if not list_tests(test_set):
            raise RunError(f"{test_set} has no test cases")
        print(f"trproxy: {test_set.name}: {len(list_tests(test_set))} tests", file=sys.stderr)
        first, failures = _run_set(opts, test_set, settings)
        if opts.mark_noise:
            from .testrun import mark_noise

            second, _ = _run_set(opts, test_set, settings)
            for name, paths in mark_noise(first, second).items():
                print(f"trproxy: {name}: marked as noise: {', '.join(paths)}", file=sys.stderr)
        if opts.strict and failures:
            print(f"trproxy: --strict: {test_set.name} fails: {', '.join(failures)}", file=sys.stderr)
        ok = ok and first.ok and not (opts.strict and failures)
    return 0 if ok else 1


def _run_set(opts: TestOptions, test_set: Path, settings: _Settings) -> tuple[TestRun, list[str]]:
    """Run one test set; its results, and what ``--strict`` fails on."""
    run_opts = RunOptions(command=opts.command, mode=Mode.REPLAY, root=opts.root,
                          test_set=test_set.name, tls=opts.tls, faults=opts.faults,
                          fault_profile=opts.fault_profile, strict=opts.strict)
    ctx = RunContext(Mode.REPLAY, similar_fallback=not opts.strict)  # loaded once the app started
    with tempfile.TemporaryDirectory(prefix="trproxy-test-") as state:
        freeze = None
        if opts.freeze_time:
            try:
                freeze = TimeFreeze(Path(state))
            except TimeFreezeError as exc:
                print(f"trproxy: time is not frozen: {exc}", file=sys.stderr)
        env = dict(os.environ, **_ca_env(opts.tls))
        if freeze is not None:
            env = freeze.child_env(env)
        try:
            with asyncio.Runner(loop_factory=loop_factory()) as runner:
                run = runner.run(_test_set(opts, test_set, run_opts, ctx, env, freeze, settings))
        except RedirectError as exc:
            raise RunError(str(exc)) from exc
        finally:
            if freeze is not None:
                freeze.close()
    from .reports import summary, write_reports

    ctx.finish_searches()
    print(summary(run, ctx.misses), file=sys.stderr)
    for fault in ctx.injected:
        print(f"trproxy: fault injected: [{fault['test']}] {fault['protocol']} "
              f"{fault['destination']}: {fault['request']}: {fault['fault']}", file=sys.stderr)
    json_path, xml_path = write_reports(run, opts.root / "reports", ctx.misses, ctx.injected)
    print(f"trproxy: reports: {json_path} {xml_path}", file=sys.stderr)
    return run, ctx.strict_failures()


def _ca_env(tls: bool) -> dict[str, str]:
    """What makes the app trust trproxy's CA, from the CA's files when it exists (its
    certificates are loaded with the recording, once the app is started)."""
    if not tls:
        return {}
    from ..tls.ca import CertificateAuthority, ca_env, installed_ca_env

    return installed_ca_env() or ca_env(CertificateAuthority())


async def _test_set(opts: TestOptions, test_set: Path, run_opts: RunOptions, ctx: RunContext,
                    env: dict[str, str], freeze: TimeFreeze | None, settings: _Settings) -> TestRun:
    from ..redirect import Redirector

    proxy = Proxy(ctx)
    port = await proxy.listen_redirect()
    dns = DatagramListener(ctx)  # the app's DNS, answered from the recording
    await dns.start()
    redirector = Redirector.create(port, dns_port=dns.port)
    proxy.resolver = redirector.original_destination
    dns.server_of = redirector.dns_server
    child: subprocess.Popen[bytes] | None = None

    def before(test: TestCase) -> None:
        ctx.current_test = test.name
        if freeze is not None:
            freeze.set_time(test.created_at)

    def after(test: TestCase) -> None:
        ctx.current_test = None

    try:
        tests = load_tests(test_set)
        busy = await wait_free(p for t in tests if (p := app_port(t, {}, None)) is not None)
        if busy is not None:
            return _not_started(test_set, busy)
        if freeze is not None:  # start-up code sees the recorded clock too
            freeze.set_time(tests[0].created_at if tests else None)
        started = time.monotonic()
        # killed with trproxy (SIGKILL, OOM): the app never runs on unserved (``dies_with_us``)
        child = subprocess.Popen(opts.command, env=env, preexec_fn=dies_with_us(redirector.enter))
        # no await from here until the context is complete (see the docstring)
        config, secrets = settings.read()
        build_context(Mode.REPLAY, test_set, run_opts, ctx)
        from ..protocols.registry import dialects
        from .noise import load_config
        from .reports import Progress
        from .testrun import AppNotListening, Overrides, run_tests

        dialects()  # every codec: the app's first connection need not wait for their import
        progress = Progress()
        try:
            return await run_tests(
                test_set, tests=tests, app_started=started, delay=opts.delay, timeout=opts.timeout,
                startup_timeout=opts.startup_timeout, global_noise=load_config(opts.root),
                http_config=config, secrets=secrets,
                overrides=Overrides(tuple(opts.headers), tuple(opts.add_headers), tuple(opts.body_fields)),
                app_alive=lambda: child is not None and child.poll() is None,
                before_test=before, after_test=after, on_start=progress.start, on_result=progress.result,
            )
        except AppNotListening as exc:  # every test is an error; summary and reports say why
            return _not_started(test_set, str(exc))
    finally:
        if child is not None:
            await _stop(child)
        _kill_rest(redirector.cgroup_path)
        redirector.close()
        await dns.close()
        await proxy.close()


def _not_started(test_set: Path, reason: str) -> TestRun:
    """The run of an app that never listened: each test an error carrying ``reason``."""
    from .testrun import ERROR, TestResult, TestRun

    run = TestRun(test_set, started=now_iso())
    run.results = [TestResult(t, ERROR, error=reason, started=run.started) for t in load_tests(test_set)]
    return run


def _kill_rest(cgroup: str) -> None:
    """Workers the app forked and left behind die with the run (cgroup v2 ``cgroup.kill``)."""
    with contextlib.suppress(OSError):
        if Path(cgroup, "cgroup.procs").read_text().strip():
            Path(cgroup, "cgroup.kill").write_text("1")


async def _stop(child: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after a grace period: the app never outlives the test run."""
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGTERM)  # not reaped yet (poll), so the pid is still the app's
    if not await _exited(child, _STOP_GRACE):
        log.warning("the app ignored SIGTERM for %.0f s; killing it", _STOP_GRACE)
        child.kill()
        await _exited(child, None)


async def _exited(child: subprocess.Popen[bytes], timeout: float | None) -> bool:
    """Whether the app ended within ``timeout`` seconds (then it is reaped). Woken by the
    app's pidfd, which becomes readable when it ends: no polling, no thread."""
    loop = asyncio.get_running_loop()
    pidfd = os.pidfd_open(child.pid)  # the child is not reaped before this returns: its pid
    ended: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not ended.done():
            ended.set_result(None)

    loop.add_reader(pidfd, readable)
    try:
        await asyncio.wait_for(ended, timeout)
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    child.wait()  # reaps what has ended
    return True
