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
import functools
import gc
import logging
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..apptest.noise import write_default_config
from ..apptest.secretfile import use_secrets
from ..protocols.registry import dialects, has_volatile_rules, match_key, volatile_rules
from ..protocols.secrets import map_strings
from ..redirect import containers
from ..redirect.errors import RedirectError
from ..store import (
    DirBlobStore,
    Exchange,
    MockPool,
    load_mocks,
    next_test_set,
    recover,
    test_set_dir,
)
from ..store.config import configure_protocols, read_config
from ..store.errors import FormatError, StoreError
from ..store.offload import MockWriterProcess
from ..store.packed import no_gc
from ..store.recording import MOCKS, REPORTS, DocumentWriter, has_mocks, rewrite_documents
from .attach import Attachment
from .context import Mode, RunContext, format_destination
from .control import ENV as CONTROL_ENV
from .control import start as start_control
from .datagrams import DatagramListener
from .faults import FaultPlan, plan_from
from .record import record_refused
from .server import Proxy

if TYPE_CHECKING:
    from ..redirect import Redirector  # bcc: imported at run time only when redirecting

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
    # attach: where the cgroup's processes reach the host (IPv4, IPv6) when it has none yet
    attach_hosts: tuple[str, str] | None = None
    attached: Callable[[], None] | None = None  # attach: run (in a thread) once redirected
    install_ca: bool = False  # attach: write our CA into the container's trust store
    env: dict[str, str] = field(default_factory=dict)
    app_ports: list[int] = field(default_factory=list)  # record: inbound calls become tests
    tls: bool = True  # intercept TLS in record/replay (our CA, trusted by the child)
    tls_verify: bool = True
    tls_ca_file: Path | None = None
    strict: bool = False  # replay: a miss, an unused recording or an answer out of order fails the run
    faults: list[str] = field(default_factory=list)  # replay: --fault rules (proxy/faults.py)
    fault_profile: str | None = None  # replay: a profile of config.yaml's fault_profiles


class RunError(Exception):
    """The run cannot start; the message says why and what to do."""


def resolve_mode(opts: RunOptions) -> tuple[Mode, Path]:
    """The mode to run in and its test set: record makes a new set unless one is named;
    the others use the named set, else the newest."""
    newest = test_set_dir(opts.root, opts.test_set)
    mode = opts.mode
    if mode is Mode.AUTO:
        mode = Mode.REPLAY if has_mocks(newest) else Mode.RECORD
        return mode, newest
    if mode is Mode.RECORD:
        return mode, newest if opts.test_set else next_test_set(opts.root)
    if mode is Mode.REPLAY and not has_mocks(newest):
        raise RunError(f"nothing to replay: {newest / MOCKS} does not exist (record first)")
    return mode, newest


def build_context(mode: Mode, test_set: Path, opts: RunOptions | None = None,
                  ctx: RunContext | None = None) -> RunContext:
    """The run's context: its recording loaded, TLS, faults, blobs, writer. ``ctx``: fill
    this one instead of a new one (``trproxy test`` loads once the app is started)."""
    if ctx is None:
        ctx = RunContext(mode, similar_fallback=not (opts is not None and opts.strict))
    mocks: Sequence[Exchange] = []  # loaded first: a recording that cannot be read stops the run here
    if mode in (Mode.REPLAY, Mode.NEW_EPISODES) and has_mocks(test_set):
        with no_gc():
            mocks = load_mocks(test_set)
            ctx.pool = MockPool.build(mocks, match_key, volatile_rules, has_volatile_rules)
    if opts is not None and opts.tls and mode is not Mode.PASSTHROUGH:
        from ..tls.ca import (  # mitmproxy/cryptography: only when needed
            CertificateAuthority,
            ca_env,
        )
        from ..tls.stream import TlsSettings

        ctx.tls = TlsSettings(CertificateAuthority(), verify=opts.tls_verify, ca_file=opts.tls_ca_file)
        opts.env = {**ca_env(ctx.tls.ca), **opts.env}
    if opts is not None and mode in (Mode.REPLAY, Mode.NEW_EPISODES):
        ctx.faults = fault_plan(opts)
    if mode is not Mode.PASSTHROUGH:
        ctx.blobs = DirBlobStore(test_set)
    if mode is Mode.RECORD:
        ctx.writer = MockWriterProcess(test_set / MOCKS)
    elif mode is Mode.NEW_EPISODES:
        ctx.writer = MockWriterProcess(test_set / MOCKS, header=[e.to_doc() for e in mocks])
    return ctx


def fault_plan(opts: RunOptions) -> FaultPlan | None:
    """The failures this replay injects: config.yaml's ``faults:`` and the profile
    named, then ``--fault`` rules; RunError naming the rule that is wrong."""
    try:
        return plan_from(opts.faults, read_config(opts.root), opts.fault_profile)
    except (ValueError, FormatError) as exc:
        raise RunError(str(exc)) from exc


async def _run(opts: RunOptions, ctx: RunContext, test_set: Path) -> int:
    proxy = Proxy(ctx)
    redirector = None
    attachment: Attachment | None = None
    inbound = None
    control = None
    dns: DatagramListener | None = None
    try:
        if ctx.mode is not Mode.PASSTHROUGH and not opts.cgroup:  # test runners in the child
            if (control := await start_control(ctx)) is not None:
                opts.env = {**opts.env, CONTROL_ENV: control.address}
        for listen, upstream in opts.forwards:
            await proxy.listen_forward(listen, upstream)
        shadows: dict[int, int] = {}
        # record: HTTP calls to the app become tests; every port it listens on, unless
        # --app-port names them (the capture of every port needs a cgroup of our own)
        if ctx.mode is Mode.RECORD and (opts.app_ports or (opts.redirect and not opts.cgroup)):
            from ..apptest.capture import start_capture

            inbound, shadows = await start_capture(opts.root, opts.app_ports, ctx, test_set, ctx.vault)
        if opts.redirect and opts.cgroup:
            attachment = Attachment(opts.cgroup, proxy, shadows,
                                    pass_closed=_dials_servers(ctx),
                                    on_attach=lambda r: _fence(r, ctx),
                                    on_detach=lambda r: _report_refused(r, ctx),
                                    hosts=opts.attach_hosts,
                                    install_ca=ctx.tls.ca.cert_path.read_bytes()
                                    if opts.install_ca and ctx.tls is not None else None)
            redirector = await attachment.start()
            log.info("proxy on port %d of %s", proxy.port, ", ".join(["127.0.0.1", *proxy.addresses]))
        elif opts.redirect:
            from ..redirect import Redirector  # bcc is imported only when needed

            port = await proxy.listen_redirect()
            capture = inbound.capture_sockets if inbound is not None else []
            if ctx.mode is not Mode.PASSTHROUGH:  # the app's DNS too (proxy/datagrams.py)
                dns = DatagramListener(ctx)
                await dns.start()
            redirector = Redirector.create(port, shadow_ports=shadows, capture_sockets=capture,
                                           dns_port=dns.port if dns is not None else 0,
                                           pass_closed=_dials_servers(ctx))
            if dns is not None:
                dns.server_of = redirector.dns_server
            if inbound is not None:
                inbound.to_app = redirector.to_app
            proxy.resolver = redirector.original_destination
            log.info("proxy on 127.0.0.1:%d and [::1]:%d, cgroup %s", port, port, redirector.cgroup_path)
            _fence(redirector, ctx)
        if redirector is not None and ctx.tls is not None:  # who refused our certificate
            ctx.tls.identify = functools.partial(containers.socket_owner, Path(redirector.cgroup_path))
        # what startup built (the mock pool, bcc's tables) lives as long as the run: out of
        # the collector's way, so full collections do not stall every connection over it
        gc.freeze()
        # a full collection walks every open connection's objects (1,000 connections:
        # ~115k, 98-265 ms under load in the soak); 10x rarer than the default (700, 10, 10)
        gc.set_threshold(700, 10, 100)
        if attachment is not None and opts.attached is not None:
            await asyncio.to_thread(opts.attached)
        if attachment is not None and not opts.command:
            return await _wait_for_signal(attachment)
        if attachment is not None:  # a driver on the host (not redirected) meanwhile
            follow = asyncio.create_task(attachment.follow())
            try:
                return await _run_child(opts, None)
            finally:
                follow.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follow
        return await _run_child(opts, redirector.enter if redirector else None)
    finally:
        if inbound is not None:
            inbound.close()
        if dns is not None:
            await dns.close()
        if control is not None:
            await control.close()
        if attachment is not None:
            attachment.close()
        elif redirector is not None:
            _report_refused(redirector, ctx)
            redirector.close()
        await proxy.close()


def _dials_servers(ctx: RunContext) -> bool:
    """Every connection of the run goes to its real destination (record, passthrough), so
    a connect to a local port nothing listens on is left to the kernel, which refuses it
    as without trproxy, not accepted by the proxy and reset (``Redirector.create(
    pass_closed=)``). Not in replay, where nothing listens by design, nor new-episodes,
    which replays the destinations it knows."""
    return ctx.mode in (Mode.RECORD, Mode.PASSTHROUGH)


def _fence(redirector: Redirector, ctx: RunContext) -> None:
    """Replay: connects to destinations refused when recording are refused again, and so
    are connects to destinations with no recording at all (reported at the end), by the
    redirect at connect (ECONNREFUSED). Without the redirect (``--forward``) the proxy
    refuses by resetting such connections once accepted (``replay.refuse``)."""
    if ctx.mode is not Mode.REPLAY:
        return
    redirector.refuse([_address(d) for d in ctx.pool.refused_destinations()])
    redirector.allow_only([_address(d) for d in ctx.pool.destinations()])


def _report_refused(redirector: Redirector, ctx: RunContext) -> None:
    """Replay: connects the redirect refused that the recording did not refuse: misses.
    Record, passthrough: connects to local ports nothing listened on, left to the kernel:
    refused as without trproxy (recorded as refused connects, so replay refuses them
    too), or forwarded by NAT (then never seen by the proxy: said in the summary)."""
    if _dials_servers(ctx):
        closed: dict[tuple[str, int], int] = {}
        reached: dict[tuple[str, int], int] = {}
        with contextlib.suppress(Exception):
            closed, reached = redirector.closed(), redirector.reached()
        for (ip, port), count in closed.items():
            destination = format_destination(ip, port)
            ctx.closed[destination] += count
            log.info("%d connect(s) to %s refused: nothing listened (as direct)", count, destination)
            if ctx.mode is Mode.RECORD:
                record_refused(ctx, destination, f"connection refused: nothing listened ({count}x)")
        for (ip, port), count in reached.items():
            note = (f"{count} connection(s) to {format_destination(ip, port)} reached a port nothing "
                    "listened on (NAT forwards it: a container's port published without docker-proxy, "
                    "an iptables REDIRECT?): made by the kernel, not seen by trproxy; dial the "
                    "server's own address to have them recorded")
            log.info("%s", note)
            if ctx.mode is Mode.RECORD:
                ctx.problems.append(note)
    if ctx.mode is not Mode.REPLAY:
        return
    with contextlib.suppress(Exception):
        for (ip, port), count in redirector.refused().items():
            destination = format_destination(ip, port)
            if not ctx.pool.refused(destination):
                ctx.missed({"protocol": "tcp", "destination": destination, "request": "connect",
                            "reason": f"nothing was recorded for this destination: {count} "
                            "connection(s) refused", "nearest": [], "test": ctx.test})


def _address(destination: str) -> tuple[str, int]:
    """``(ip, port)`` of a recorded destination (``loopback:P`` is 127.0.0.1)."""
    host, _, port = destination.rpartition(":")
    host = host.strip("[]")
    return ("127.0.0.1" if host == "loopback" else host), int(port)


async def _wait_for_signal(attachment: Attachment) -> int:
    """``attach`` mode: serve (following the container across restarts) until Ctrl-C or
    SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    follow = asyncio.create_task(attachment.follow())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({follow, stopped}, return_when=asyncio.FIRST_COMPLETED)
    for task in (follow, stopped):
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await follow  # raises what made following fail (e.g. no listening on a new address)
    return 0


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def dies_with_us(enter=None, sig: signal.Signals = signal.SIGKILL):
    """A ``preexec_fn`` for the app: ``sig`` (SIGKILL) when trproxy dies (PR_SET_PDEATHSIG),
    then ``enter`` (the redirect's cgroup).

    PR_SET_PDEATHSIG fires when the *thread* that forked the child ends, not the process
    (prctl(2)): spawn from a thread that lives as long as the run. asyncio spawns from its
    loop thread, and trproxy runs its loop in the main thread (``_run_child`` checks).
    """
    parent = os.getpid()

    def preexec() -> None:
        if _libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
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


LOOP_ENV = "TRPROXY_LOOP"  # "uvloop" (the default when installed) or "asyncio"
_LOOPS = ("uvloop", "asyncio")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The proxy's event loop: uvloop when installed (its transports cost less CPU a
    request), the stdlib's with ``TRPROXY_LOOP=asyncio`` (the reference, and a way out
    should uvloop misbehave); None means the stdlib's."""
    choice = os.environ.get(LOOP_ENV, "").strip().lower()
    if choice and choice not in _LOOPS:
        raise RunError(f"{LOOP_ENV}={choice}: the event loop is one of {', '.join(_LOOPS)}")
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise RunError(f"{LOOP_ENV}=uvloop: uvloop is not installed (pip install uvloop)") from None
        return None
    return uvloop.new_event_loop


def run(opts: RunOptions) -> int:
    """Run a command (or attach) under trproxy; returns the command's exit status."""
    factory = loop_factory()  # a wrong TRPROXY_LOOP stops the run before anything starts
    for line in recover(opts.root):
        log.warning("%s", line)
    mode, test_set = resolve_mode(opts)
    if mode is Mode.RECORD:
        write_default_config(opts.root)  # a commented template to edit (never overwritten)
    try:
        configure_protocols(opts.root)
        vault = None
        if mode is not Mode.PASSTHROUGH:  # named secrets; recording saves their values aside
            vault = use_secrets(opts.root, record=mode in (Mode.RECORD, Mode.NEW_EPISODES))
    except FormatError as exc:
        raise RunError(str(exc)) from exc
    ctx = build_context(mode, test_set, opts)
    ctx.vault = vault
    if (opts.faults or opts.fault_profile) and ctx.faults is None and mode is not Mode.REPLAY:
        log.warning("--fault and --fault-profile act at replay only: this %s run ignores them",
                    mode.value)
    if mode in (Mode.RECORD, Mode.NEW_EPISODES):
        dialects()  # imported now, not while timing the first request (metadata.wait_ms)
    if mode is not opts.mode:
        log.warning("mode %s: %s %s", opts.mode.value, mode.value, test_set)
    status: int | None = None
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            status = runner.run(_run(opts, ctx, test_set))
    except KeyboardInterrupt:
        status = 130
    except RedirectError as exc:  # not root, no cgroup2, no bcc...: what to do, not a traceback
        raise RunError(str(exc)) from exc
    finally:
        if ctx.blobs is not None:
            ctx.blobs.close()  # bodies of messages that never completed
        if ctx.writer is not None:
            path = ctx.writer.close()
            if _discard_failed_recording(opts, ctx, test_set, status):
                print(f"trproxy: the run failed and recorded nothing: {test_set} not kept", file=sys.stderr)
            else:
                _scrub_secrets(path, opts.root, ctx)
                print(f"trproxy: wrote {ctx.writer.count} exchanges to {path}", file=sys.stderr)
        if mode is not Mode.PASSTHROUGH:
            ctx.finish_searches()
            print(ctx.summary(), file=sys.stderr)
            _write_report(opts.root, ctx, test_set, status)
    if opts.strict and status == 0 and (failures := ctx.strict_failures()):
        print(f"trproxy: --strict: the run fails: {', '.join(failures)}", file=sys.stderr)
        status = 1
    return status if status is not None else 1


def _scrub_secrets(path: Path, root: Path, ctx: RunContext) -> None:
    """The secrets named in this run (a session cookie, a token) out of every protocol's
    mocks: the app stores its session key in Postgres or Redis before its answer names
    it (Django's ``django_session``), so only the finished recording can be scrubbed."""
    vault = ctx.vault
    if vault is None or not len(vault):
        return
    try:
        changed = rewrite_documents(path, vault.values.values(), lambda doc: map_strings(doc, vault.scrub), root)
    except (OSError, StoreError, FormatError) as exc:
        log.warning("could not remove the secrets from %s: %s", path, exc)
        return
    if changed:
        log.info("%d recorded exchanges held a secret the app was given or gave: now placeholders", changed)


def _discard_failed_recording(opts: RunOptions, ctx: RunContext, test_set: Path,
                              status: int | None) -> bool:
    """A new test set of a failed run that recorded nothing (attach failed, the command was
    not found...) is removed: the next replay would take it as the newest."""
    if ctx.mode is not Mode.RECORD or opts.test_set or status == 0 or ctx.writer is None or ctx.writer.count:
        return False
    shutil.rmtree(test_set, ignore_errors=True)
    return True


def _write_report(root: Path, ctx: RunContext, test_set: Path, status: int | None) -> None:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    try:
        writer = DocumentWriter(root / REPORTS / f"run-{stamp}-{ctx.mode.value}.yaml",
                                header=[ctx.report(test_set, status)], root=root)
        path = writer.close()
    except (StoreError, OSError) as exc:  # the run's own status still counts
        log.warning("could not write the run's report: %s", exc)
        return
    if ctx.misses:
        print(f"trproxy: report with the misses and their nearest recordings: {path}", file=sys.stderr)
