"""The ``trproxy`` command line: parse arguments, set up logging, hand over to the runner."""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import sys
import threading
from pathlib import Path

from .proxy.context import Mode
from .proxy.runner import RunError, RunOptions, run
from .proxy.server import parse_hostport
from .store.errors import StoreError

EPILOG = """\
examples:
  trproxy record -- python app.py          record every outbound call of the app
                                            and every API call it receives (as test cases)
  trproxy test -- python app.py             replay those calls as tests, dependencies mocked
  trproxy replay -- pytest tests/           replay them: no database, cache or broker needed
  trproxy run --mode auto -- ./app          record the first time, replay afterwards
  trproxy attach --container web           redirect a running container (name, id, prefix)
  trproxy compose --service app -- ./e2e.sh record a Compose project's app while e2e.sh runs
  trproxy doctor                            check that this machine can run trproxy
"""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", type=Path, default=Path(os.environ.get("TRPROXY_DIR", "trproxy")),
                   help="recording directory (default ./trproxy, or $TRPROXY_DIR)")
    p.add_argument("--test-set", help="test set to record into / replay from "
                   "(default: the newest, or test-set-0)")
    p.add_argument("--forward", action="append", default=[], metavar="LISTEN=UPSTREAM",
                   help="also listen on LISTEN (host:port) and treat its connections as going to "
                   "UPSTREAM; works without eBPF (point the app at LISTEN)")
    p.add_argument("--no-redirect", action="store_true",
                   help="do not install the eBPF redirect (only --forward listeners)")
    p.add_argument("--no-tls", action="store_true",
                   help="do not intercept TLS (HTTPS and other TLS traffic is relayed, not recorded)")
    p.add_argument("--tls-insecure", action="store_true",
                   help="record mode: do not verify upstream certificates")
    p.add_argument("--tls-ca", type=Path, metavar="FILE",
                   help="record mode: also trust this CA for upstream certificates")
    p.add_argument("-v", "--verbose", action="count", default=0,
                   help="-v: log each connection and its original destination; -vv: every exchange")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="trproxy", description="Record and replay an application's "
                                  "traffic to its dependencies.", epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = top.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run a command with its outbound connections redirected")
    run_p.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.PASSTHROUGH.value)
    for name, help_ in (("record", "run a command and record its outbound traffic"),
                        ("replay", "run a command with its outbound traffic served from recordings")):
        sub.add_parser(name, help=help_)
    att = sub.add_parser("attach", help="redirect processes trproxy did not start (a cgroup "
                         "or a Docker container) until Ctrl-C")
    att.add_argument("--mode", choices=[m.value for m in Mode], default=Mode.RECORD.value)
    target = att.add_mutually_exclusive_group(required=True)
    target.add_argument("--cgroup", help="cgroup v2 path (absolute, or relative to the cgroup2 mount)")
    target.add_argument("--container", help="Docker container id")
    att.add_argument("--install-ca", action="store_true",
                     help="write trproxy's CA into the container's trust store while attached "
                     "(its system CA bundles and /etc/trproxy/trproxy-ca-cert.pem; taken out at exit)")
    comp = sub.add_parser("compose", help="start a Compose project with its services redirected "
                          "(record, or replay without the services not chosen), take it down after")
    comp.add_argument("--mode", choices=[Mode.RECORD.value, Mode.REPLAY.value], default=Mode.RECORD.value)
    comp.add_argument("-f", "--file", action="append", default=[], type=Path,
                      help="Compose file (repeatable; default ./docker-compose.yml)")
    comp.add_argument("-p", "--project-name", help="project name (default: the file's directory)")
    comp.add_argument("--service", action="append", default=[],
                      help="service to redirect (repeatable; default: all); replay starts only these")
    for name in ("run", "record", "replay", "attach", "compose"):
        _common(sub.choices[name])
    for name in ("run", "record"):
        sub.choices[name].add_argument(
            "--app-port", type=int, action="append", default=[], metavar="PORT",
            help="record mode: only calls to PORT (repeatable) become test cases "
                 "(default: calls to every port the app listens on)")
    test = sub.add_parser("test", help="start the app with its dependencies replayed, send the "
                          "recorded requests, compare the responses")
    test.add_argument("--dir", type=Path, default=Path(os.environ.get("TRPROXY_DIR", "trproxy")))
    test.add_argument("--test-set", action="append", default=[], help="test set(s) to run (default: all)")
    test.add_argument("--delay", type=float, default=0.0,
                      help="seconds to wait after the app listens, before the first test")
    test.add_argument("--timeout", type=float, default=10.0, help="seconds per test")
    test.add_argument("--startup-timeout", type=float, default=60.0,
                      help="seconds to wait for the app to listen")
    test.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                      help="replace this header in every request recorded with it")
    test.add_argument("--add-header", action="append", default=[], metavar="'NAME: VALUE'",
                      help="set this header in every request (added where it was not recorded)")
    test.add_argument("--body-field", action="append", default=[], metavar="PATH=VALUE",
                      help="set a JSON body field (user.password, items[0].qty) or a form field "
                      "in every request whose body has it; VALUE is JSON when it parses as JSON")
    test.add_argument("--no-freeze-time", action="store_true",
                      help="do not fake the app's clock to each test's recorded time")
    test.add_argument("--mark-noise", action="store_true",
                      help="run twice and mark what differs between the runs as noise in the test files")
    test.add_argument("--no-tls", action="store_true", help="do not intercept TLS")
    test.add_argument("-v", "--verbose", action="count", default=0)
    dedup = sub.add_parser("dedup", help="remove test cases that add nothing (same route and shapes)")
    dedup.add_argument("--dir", type=Path, default=Path(os.environ.get("TRPROXY_DIR", "trproxy")))
    dedup.add_argument("--test-set", action="append", default=[], help="test set(s) (default: all)")
    dedup.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    for name in ("run", "replay", "test"):
        sub.choices[name].add_argument(
            "--strict", action="store_true",
            help="fail the run (exit status 1, even if the command succeeded) on any miss, "
            "recording never used, or answer served out of its recorded order")
    for name in ("run", "replay", "attach", "test"):
        sub.choices[name].add_argument(
            "--fault", action="append", default=[], metavar="RULE",
            help="replay: make matching requests fail as the server would (repeatable), e.g. "
            "'postgres error=40001 match=UPDATE first=1', 'redis error=LOADING nth=2', "
            "'http error=503 retry_after=1', 'kafka error=NOT_LEADER_OR_FOLLOWER', "
            "'redis reset', 'http delay=500', 'postgres hang' (docs/format.md, Fault injection)")
        sub.choices[name].add_argument(
            "--fault-profile", metavar="NAME",
            help="replay: also inject the faults of this profile of config.yaml's fault_profiles")
    for name in ("run", "record", "replay", "test", "compose"):
        sub.choices[name].add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    sub.add_parser("doctor", help="check root, cgroup v2, BTF, bcc and kernel headers")
    return top


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="trproxy: %(message)s", stream=sys.stderr)


def _doctor() -> int:
    from .redirect import doctor

    ok = True
    for check in doctor():
        mark = "ok " if check.ok else "FAIL"
        print(f"[{mark}] {check.name}: {check.detail}")
        if not check.ok:
            ok = False
            if check.fix:
                print(f"       fix: {check.fix}")
    return 0 if ok else 1


def _dedup(args: argparse.Namespace) -> int:
    from .apptest.dedup import dedup
    from .store import existing_test_sets, test_set_dir

    sets = [test_set_dir(args.dir, n) for n in args.test_set] or existing_test_sets(args.dir)
    for test_set in sets:
        print(f"{test_set.name}: {dedup(test_set, dry_run=args.dry_run).describe()}")
    return 0


def _pairs(items: list[str], separator: str, usage: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        name, sep, value = item.partition(separator)
        if not sep or not name.strip():
            raise ValueError(usage)
        out.append((name.strip(), value.strip()))
    return out


def _test(args: argparse.Namespace, cmd: list[str]) -> int:
    from .apptest.command import TestOptions, run_test_command

    try:
        headers = _pairs(args.header, ":", "--header takes 'NAME: VALUE'")
        add_headers = _pairs(args.add_header, ":", "--add-header takes 'NAME: VALUE'")
        body_fields = _pairs(args.body_field, "=", "--body-field takes PATH=VALUE")
    except ValueError as exc:
        print(f"trproxy: {exc}", file=sys.stderr)
        return 2
    opts = TestOptions(command=cmd, root=args.dir, test_sets=args.test_set, delay=args.delay,
                       timeout=args.timeout, startup_timeout=args.startup_timeout, headers=headers,
                       add_headers=add_headers, body_fields=body_fields,
                       freeze_time=not args.no_freeze_time, mark_noise=args.mark_noise,
                       tls=not args.no_tls, strict=args.strict, faults=args.fault,
                       fault_profile=args.fault_profile)
    return run_test_command(opts)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except (RunError, StoreError) as exc:  # what is wrong and what to do: one line, no traceback
        print(f"trproxy: {exc}", file=sys.stderr)
        return 2


_QUICK_EXIT = frozenset({"test"})  # commands whose run leaves nothing open to finalize


def entry(argv: list[str] | None = None) -> None:
    """The ``trproxy`` command: ``main()``, then, after ``trproxy test``, end the process
    without tearing the interpreter down. Finalization (collecting and freeing the objects
    of every module loaded: mitmproxy, cryptography, the codecs) took ~0.3 s after each
    test run and frees nothing the kernel would not. The exit handlers still run (the
    redirect's, logging's) and the output is flushed; when another thread still runs,
    the ordinary exit waits for it as always, and so it does under a profiler or a tracer
    (cProfile, coverage: they write their data after the run)."""
    args = sys.argv[1:] if argv is None else argv
    code = main(args)
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if (not args or args[0] not in _QUICK_EXIT or any(t.is_alive() for t in others)
            or sys.getprofile() is not None or sys.gettrace() is not None):
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more to say
            pass
    os._exit(code)


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    if args.command == "doctor":
        return _doctor()
    if args.command == "dedup":
        return _dedup(args)
    _setup_logging(args.verbose)
    cmd = list(getattr(args, "cmd", []) or [])
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if os.geteuid() != 0 and args.command == "test":
        print("trproxy: trproxy test needs root for the eBPF redirect", file=sys.stderr)
        return 2
    if args.command == "test":
        if not cmd:
            print("trproxy: no command given (usage: trproxy test -- COMMAND [ARGS...])", file=sys.stderr)
            return 2
        return _test(args, cmd)
    mode = Mode(args.mode) if hasattr(args, "mode") else Mode(args.command)
    if args.command in ("attach", "compose") and args.no_redirect:
        print(f"trproxy: {args.command} redirects the container's connections: --no-redirect "
              "leaves nothing to do (use `trproxy run --no-redirect --forward ...`)", file=sys.stderr)
        return 2
    if getattr(args, "install_ca", False) and (args.no_tls or args.mode == Mode.PASSTHROUGH.value):
        print("trproxy: --install-ca is for TLS interception (record or replay, without --no-tls)",
              file=sys.stderr)
        return 2
    if args.command not in ("attach", "compose") and not cmd:
        print("trproxy: no command given (usage: trproxy run -- COMMAND [ARGS...])", file=sys.stderr)
        return 2
    try:
        forwards = []
        for item in args.forward:
            listen, _, upstream = item.partition("=")
            forwards.append((parse_hostport(listen), parse_hostport(upstream)))
    except ValueError:
        print("trproxy: --forward takes LISTEN_HOST:PORT=UPSTREAM_HOST:PORT", file=sys.stderr)
        return 2
    opts = RunOptions(
        command=cmd, mode=mode, root=args.dir, test_set=args.test_set, forwards=forwards,
        redirect=not args.no_redirect,
        cgroup=getattr(args, "cgroup", None) or getattr(args, "container", None),
        tls=not args.no_tls, tls_verify=not args.tls_insecure, tls_ca_file=args.tls_ca,
        app_ports=getattr(args, "app_port", []), strict=getattr(args, "strict", False),
        faults=getattr(args, "fault", []), fault_profile=getattr(args, "fault_profile", None),
        install_ca=getattr(args, "install_ca", False),
    )
    if opts.redirect and os.geteuid() != 0:
        print("trproxy: the eBPF redirect needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN): "
              "run as root, or use --no-redirect with --forward", file=sys.stderr)
        return 2
    if args.command == "compose":
        from .compose import run_compose

        return run_compose(args.file, args.project_name, args.service, opts)
    return run(opts)


if __name__ == "__main__":
    entry()
