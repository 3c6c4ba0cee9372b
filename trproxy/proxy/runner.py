"""One run of ``trproxy run``: proxy up, redirect installed, child run, everything undone.

Order matters: the proxy listens before the redirect exists (no connection can land
nowhere); the child is moved into the cgroup before it execs (every descendant is
covered); on the way out, whatever happened (exit, Ctrl-C, SIGTERM, an error), the
redirect is removed, the recording published and the summary printed. If trproxy itself
dies (SIGKILL, OOM) the child is killed with it (PR_SET_PDEATHSIG) and whatever else runs
in the cgroup can reach nothing (see trproxy.redirect).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..apptest.noise import write_default_config
from ..protocols.registry import match_key
from ..redirect.errors import RedirectError
from ..store import (
    DirBlobStore,
    MockPool,
    MockWriter,
    load_mocks,
    next_test_set,
    recover,
    test_set_dir,
)
from ..store.config import configure_protocols
from ..store.errors import FormatError
from ..store.recording import MOCKS, DocumentWriter
from .context import Mode, RunContext
from .server import Proxy

log = logging.getLogger("trproxy")


@dataclass
class RunOptions:
    command: list[str]
    mode: Mode = Mode.PASSTHROUGH
    root: Path = Path("trproxy")
    test_set: str | None = None
    forwards: list[tuple[tuple[str, int], tuple[str, int]]] = field(default_factory=list)
    redirect: bool = True
    cgroup: str | None = None  # attach to an existing cgroup / container instead of a child
    env: dict[str, str] = field(default_factory=dict)
    app_ports: list[int] = field(default_factory=list)  # record: inbound calls become tests
    tls: bool = True  # intercept TLS in record/replay (our CA, trusted by the child)
    tls_verify: bool = True
    tls_ca_file: Path | None = None


class RunError(Exception):
    """The run cannot start; the message says why and what to do."""


def resolve_mode(opts: RunOptions) -> tuple[Mode, Path]:
    """The mode to run in and its test set: record makes a new set unless one is named;
    the others use the named set, else the newest."""
    newest = test_set_dir(opts.root, opts.test_set)
    mode = opts.mode
    if mode is Mode.AUTO:
        mode = Mode.REPLAY if (newest / MOCKS).exists() else Mode.RECORD
        return mode, newest
    if mode is Mode.RECORD:
        return mode, opts.root / opts.test_set if opts.test_set else next_test_set(opts.root)
    if mode is Mode.REPLAY and not (newest / MOCKS).exists():
        raise RunError(f"nothing to replay: {newest / MOCKS} does not exist (record first)")
    return mode, newest


def build_context(mode: Mode, test_set: Path, opts: RunOptions | None = None) -> RunContext:
    ctx = RunContext(mode)
    if opts is not None and opts.tls and mode is not Mode.PASSTHROUGH:
        from ..tls.ca import (  # mitmproxy/cryptography: only when needed
            CertificateAuthority,
            ca_env,
        )
        from ..tls.stream import TlsSettings

        ctx.tls = TlsSettings(CertificateAuthority(), verify=opts.tls_verify, ca_file=opts.tls_ca_file)
        opts.env = {**ca_env(ctx.tls.ca), **opts.env}
    if mode is not Mode.PASSTHROUGH:
        ctx.blobs = DirBlobStore(test_set)
    if mode in (Mode.REPLAY, Mode.NEW_EPISODES) and (test_set / MOCKS).exists():
        ctx.pool = MockPool.build(load_mocks(test_set), match_key)
    if mode is Mode.RECORD:
        ctx.writer = MockWriter(test_set / MOCKS)
    elif mode is Mode.NEW_EPISODES:
        old = [e.to_doc() for e in load_mocks(test_set)] if (test_set / MOCKS).exists() else []
        ctx.writer = MockWriter(test_set / MOCKS, header=old)
    return ctx


async def _run(opts: RunOptions, ctx: RunContext, test_set: Path) -> int:
    proxy = Proxy(ctx)
    redirector = None
    inbound = None
    try:
        for listen, upstream in opts.forwards:
            await proxy.listen_forward(listen, upstream)
        shadows: dict[int, int] = {}
        if opts.app_ports and ctx.mode is Mode.RECORD:
            inbound, shadows = await _capture_inbound(opts, ctx, test_set)
        if opts.redirect:
            from ..redirect import Redirector  # bcc is imported only when needed

            port = await proxy.listen_redirect()
            if opts.cgroup:
                redirector = Redirector.attach(opts.cgroup, port, shadow_ports=shadows)
            else:
                redirector = Redirector.create(port, shadow_ports=shadows)
            proxy.resolver = redirector.original_destination
            log.info("proxy on 127.0.0.1:%d and [::1]:%d, cgroup %s", port, port, redirector.cgroup_path)
        if opts.cgroup:
            return await _wait_for_signal()
        return await _run_child(opts, redirector.enter if redirector else None)
    finally:
        if inbound is not None:
            inbound.close()
        if redirector is not None:
            redirector.close()
        await proxy.close()


async def _capture_inbound(opts: RunOptions, ctx: RunContext, test_set: Path):
    """Listen on the app's ports (the app is moved to shadow ports); calls become tests."""
    from ..apptest.capture import InboundCapture
    from ..apptest.noise import load_config, write_default_config
    from ..apptest.testcase import record_test

    write_default_config(opts.root)
    noise = load_config(opts.root)
    test_set.mkdir(parents=True, exist_ok=True)

    def on_test(name: str, interaction, started: str, port: int) -> None:
        if interaction.responses:
            record_test(test_set, name, interaction.request, interaction.responses[-1], started, port, noise)
            ctx.tests_recorded += 1

    inbound = InboundCapture(ctx, on_test)
    shadows = {port: free_port() for port in opts.app_ports}
    for port, shadow in shadows.items():
        await inbound.listen(port, shadow)
    return inbound, shadows


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _wait_for_signal() -> int:
    """``attach`` mode: serve until Ctrl-C or SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("trproxy: attached; press Ctrl-C to stop", file=sys.stderr)
    await stop.wait()
    return 0


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def dies_with_us(enter=None):
    """A ``preexec_fn`` for the app: SIGKILL it when trproxy dies (PR_SET_PDEATHSIG), then
    ``enter`` (the redirect's cgroup).

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process
    (prctl(2)): spawn from a thread that lives as long as the run. asyncio spawns from its
    loop thread, and trproxy runs its loop in the main thread (``_run_child`` checks).
    """
    parent = os.getpid()

    def preexec() -> None:
        if _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            os._exit(126)
        if os.getppid() != parent:  # trproxy died before the prctl: nobody to die with
            os._exit(126)
        if enter is not None:
            enter()

    return preexec


_FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)


async def _run_child(opts: RunOptions, enter) -> int:
    loop = asyncio.get_running_loop()
    env = dict(os.environ, **opts.env)
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("trproxy spawns the app from the main thread (PR_SET_PDEATHSIG)")
    interactive = sys.stdin is not None and sys.stdin.isatty()
    child: asyncio.subprocess.Process | None = None
    early: list[signal.Signals] = []  # arrived while the child was being started

    def forward(sig: signal.Signals) -> None:
        # Ctrl-C on a terminal reaches the child already (same process group)
        if sig is signal.SIGINT and interactive:
            return
        if child is None:
            early.append(sig)
            return
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(sig)

    # Installed before the child exists: once it runs, a signal to trproxy reaches it.
    for sig in _FORWARDED:
        loop.add_signal_handler(sig, forward, sig)
    try:
        try:
            child = await asyncio.create_subprocess_exec(*opts.command, env=env,
                                                         preexec_fn=dies_with_us(enter))
        except FileNotFoundError:
            print(f"trproxy: command not found: {opts.command[0]}", file=sys.stderr)
            return 127
        except PermissionError:
            print(f"trproxy: permission denied: {opts.command[0]}", file=sys.stderr)
            return 126
        for sig in early:
            forward(sig)
        status = await child.wait()
    finally:
        for sig in _FORWARDED:
            loop.remove_signal_handler(sig)
    return 128 - status if status < 0 else status


def _event_loop_policy() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run(opts: RunOptions) -> int:
    """Run a command (or attach) under trproxy; returns the command's exit status."""
    for line in recover(opts.root):
        log.warning("%s", line)
    mode, test_set = resolve_mode(opts)
    if mode is Mode.RECORD:
        write_default_config(opts.root)  # a commented template to edit (never overwritten)
    try:
        configure_protocols(opts.root)
    except FormatError as exc:
        raise RunError(str(exc)) from exc
    ctx = build_context(mode, test_set, opts)
    if mode is not opts.mode:
        log.warning("mode %s: %s %s", opts.mode.value, mode.value, test_set)
    _event_loop_policy()
    status: int | None = None
    try:
        status = asyncio.run(_run(opts, ctx, test_set))
    except KeyboardInterrupt:
        status = 130
    except RedirectError as exc:  # not root, no cgroup2, no bcc...: what to do, not a traceback
        raise RunError(str(exc)) from exc
    finally:
        if ctx.blobs is not None:
            ctx.blobs.close()  # bodies of messages that never completed
        if ctx.writer is not None:
            path = ctx.writer.close()
            print(f"trproxy: wrote {ctx.writer.count} exchanges to {path}", file=sys.stderr)
        if mode is not Mode.PASSTHROUGH:
            print(ctx.summary(), file=sys.stderr)
            _write_report(opts.root, ctx, test_set, status)
    return status if status is not None else 1


def _write_report(root: Path, ctx: RunContext, test_set: Path, status: int | None) -> None:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    writer = DocumentWriter(root / "reports" / f"run-{stamp}-{ctx.mode.value}.yaml",
                            header=[ctx.report(test_set, status)])
    path = writer.close()
    if ctx.misses:
        print(f"trproxy: report with the misses and their nearest recordings: {path}", file=sys.stderr)
