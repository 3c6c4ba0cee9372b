"""Replay fidelity on real client test suites (psycopg 3, redis-py): optional, not in ``make test``.

    .venv/bin/python scripts/suites.py psycopg --source /work/.mirror/psycopg+psycopg/repo --work /work/thirdparty
    .venv/bin/python scripts/suites.py redis --source /work/.mirror/redis+redis-py/repo --work /work/thirdparty --resp 3
        [--rev REV] [--modes direct,record,replay] [-k EXPR] [--timeout S] [--recording DIR]
        [--direct RESULTS] [--trproxy CHECKOUT] [-- PYTEST ARGS]

The suite runs up to three times: ``direct`` against real servers, under ``trproxy record``
(fresh servers on the same ports), then under ``trproxy replay`` with the servers stopped,
so nothing can reach them. Every run loads trproxy's pytest plugin, so record tags each
exchange with its test and replay serves each test its own recordings. A test that passes
direct but not in replay is where replay is not a faithful stand-in for the server.

The client is checked out from a git dir (a bare mirror is fine) into ``WORK/<suite>/src``
with its own venv (``WORK/<suite>/venv``, kept while the revision is the same). Each mode
writes ``WORK/results/<suite>-<mode>-<time>/`` (junit.xml, pytest.log, the recording);
the summary (counts per mode, tests that pass direct but not in replay or record, with
their failure's first line and replay's misses under their name) is printed and written
beside them as ``<suite>-<time>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.support.services import PostgresServer, RedisServer, free_port  # noqa: E402

PYTHON = ROOT / ".venv" / "bin" / "python"  # runs trproxy (``-m trproxy.cli``) from the checkout chosen
MODES = ("direct", "record", "replay")
SEED = "20261203"  # pytest-randomly: the same random data (psycopg's faker) in every mode


@dataclass
class Suite:
    """How to install a client's test suite and run it against its server."""

    server: str  # "postgres" or "redis"
    install: list[list[str]]  # pip arguments, run in the checkout
    pytest: list[str]  # arguments after ``python -m pytest``
    env: dict[str, str] = field(default_factory=dict)


SUITES = {
    # tests/README.rst and .github/workflows/tests.yml: ./psycopg[test] ./psycopg_pool, PSYCOPG_TEST_DSN
    "psycopg": Suite(
        server="postgres",
        install=[["./psycopg[test]", "./psycopg_pool", "pytest-timeout"]],
        pytest=["tests", "-p", "randomly", f"--randomly-seed={SEED}", "--randomly-dont-reorganize"],
        env={"PSYCOPG_IMPL": "python"},
    ),
    # tasks.py standalone_tests: no cluster, sentinel, module or multi-db servers here
    "redis": Suite(
        server="redis",
        install=[["-e", ".", "-r", "dev_requirements.txt"]],
        pytest=["tests", "--ignore=tests/test_scenario", "--ignore=tests/test_asyncio/test_scenario",
                "--ignore=tests/test_multidb", "--ignore=tests/test_asyncio/test_multidb",
                "-m", "not onlycluster and not fixed_client and not multidb_integration and not redismod"
                      " and not ssl and not replica and not cp_integration"],
    ),
}


def sh(cmd: list, **kw) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run(list(map(str, cmd)), check=True, **kw)


def checkout(source: Path, rev: str, base: Path) -> tuple[Path, str]:
    """``base/src`` holding ``rev`` of the git dir ``source`` (extracted again when it changed)."""
    sha = subprocess.run(["git", "--git-dir", source, "rev-parse", f"{rev}^{{commit}}"],
                         check=True, capture_output=True, text=True).stdout.strip()
    src, stamp = base / "src", base / "src.rev"
    if not (stamp.exists() and stamp.read_text() == sha):
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir(parents=True)
        archive = subprocess.Popen(["git", "--git-dir", source, "archive", sha], stdout=subprocess.PIPE)
        sh(["tar", "-x", "-C", src], stdin=archive.stdout)
        if archive.wait():
            raise SystemExit(f"git archive {sha} failed")
        stamp.write_text(sha)
        (base / "venv.rev").unlink(missing_ok=True)
    return src, sha


def venv(suite: Suite, src: Path, sha: str, base: Path) -> Path:
    """``base/venv`` with the client and its test dependencies, made once per revision."""
    env_dir, stamp = base / "venv", base / "venv.rev"
    python = env_dir / "bin" / "python"
    if stamp.exists() and stamp.read_text() == sha and python.exists():
        return python
    shutil.rmtree(env_dir, ignore_errors=True)
    sh(["python3.11", "-m", "venv", env_dir])
    pip = [python, "-m", "pip", "install", "-q"]
    sh(pip + ["-U", "pip"])
    for args in suite.install:
        sh(pip + args, cwd=src)
    stamp.write_text(sha)
    return python


class Servers:
    """The suite's server on one port for the whole run: started fresh for each mode."""

    def __init__(self, kind: str) -> None:
        self.kind, self.port, self.server = kind, free_port(), None

    def start(self) -> None:
        if self.kind == "postgres":
            self.server = PostgresServer(port=self.port).start()
            conf = self.server.datadir / "data" / "postgresql.conf"
            with conf.open("a") as f:  # two-phase commit tests (psycopg's CI does the same)
                f.write("max_prepared_transactions = 10\n")
            self.server.stop()
            self.server.start()
            self.server.psql("CREATE EXTENSION IF NOT EXISTS hstore")
        else:
            self.server = RedisServer(port=self.port).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.destroy()
            self.server = None

    def env_and_args(self, name: str, resp: int) -> tuple[dict[str, str], list[str]]:
        """What points the suite at the server (the same in every mode, replay included)."""
        if self.kind == "postgres":
            dsn = f"host=127.0.0.1 port={self.port} user=trproxy password=trproxy dbname=trproxy"
            env = {"PSYCOPG_TEST_DSN": dsn, "PGHOST": "127.0.0.1", "PGPORT": str(self.port),
                   "PGUSER": "trproxy", "PGPASSWORD": "trproxy", "PGDATABASE": "trproxy"}
            return env, []
        return {}, [f"--redis-url=redis://127.0.0.1:{self.port}", f"--protocol={resp}"]


def plugin_path(work: Path, checkout: Path) -> Path:
    """A directory with a link to ``checkout``'s ``trproxy`` package: on ``PYTHONPATH``, it is the
    trproxy that runs (ahead of the venv's editable install) and the pytest plugin the suite loads."""
    package = (checkout / "trproxy").resolve()
    path = work / f"trproxy-path-{hashlib.sha1(str(package).encode()).hexdigest()[:10]}"
    path.mkdir(parents=True, exist_ok=True)
    if not (path / "trproxy").is_symlink():
        (path / "trproxy").symlink_to(package)
    return path


def run_mode(mode: str, python: Path, src: Path, out: Path, recording: Path, env: dict[str, str],
             args: list[str]) -> int:
    """One pytest run, wrapped in ``trproxy record|replay`` except ``direct``; output in ``out``."""
    out.mkdir(parents=True)
    cmd = [python, "-m", "pytest", "-p", "trproxy.pytest_plugin", f"--junitxml={out / 'junit.xml'}",
           "-o", f"cache_dir={out / 'pytest-cache'}", *args]
    if mode != "direct":
        cmd = [PYTHON, "-m", "trproxy.cli", mode, "--dir", recording, "--", *cmd]
    print(f"== {mode}: {' '.join(map(str, cmd))}\n   log: {out / 'pytest.log'}", flush=True)
    started = time.monotonic()
    with (out / "pytest.log").open("wb") as log:
        proc = subprocess.Popen(list(map(str, cmd)), cwd=src, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        try:
            rc = proc.wait()
        finally:  # stopped ourselves (SIGTERM, Ctrl-C): stop the run too, then the servers
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    (out / "run.json").write_text(json.dumps({"mode": mode, "cmd": list(map(str, cmd)), "exit": rc,
                                              "seconds": round(time.monotonic() - started, 1)}))
    print(f"   exit {rc} after {time.monotonic() - started:.0f} s", flush=True)
    return rc


def junit(path: Path) -> dict[str, tuple[str, str]]:
    """Test id (``file.py::Class::name``) -> (passed|failed|error|skipped, first line of the reason)."""
    results: dict[str, tuple[str, str]] = {}
    if not path.exists():
        return results
    rank = {"passed": 0, "skipped": 1, "failed": 2, "error": 3}
    for case in ET.parse(path).getroot().iter("testcase"):
        cls, name = case.get("classname", ""), case.get("name", "")
        status, message = "passed", ""
        for child in case:
            kind = {"failure": "failed", "error": "error", "skipped": "skipped"}.get(child.tag)
            if kind and rank[kind] > rank[status]:
                text = child.get("message") or (child.text or "")
                status, message = kind, (text.strip().splitlines() or [""])[0][:300]
        key = f"{cls}::{name}"
        if key in results and rank[results[key][0]] >= rank[status]:
            continue
        results[key] = (status, message)
    return results


def junit_id(nodeid: str) -> str:
    """pytest's node id as junit.xml names it (``tests/a.py::C::t`` -> ``tests.a.C::t``)."""
    parts = nodeid.split("::")
    module = parts[0].removesuffix(".py").replace("/", ".")
    return ".".join([module, *parts[1:-1]]) + "::" + parts[-1]


def keep_report(recording: Path, out: Path) -> None:
    """The replay's report (trproxy writes one a run into the recording) beside its junit.xml."""
    reports = sorted((recording / "reports").glob("run-*-replay.yaml"))
    if reports:
        shutil.copy(reports[-1], out / "replay-report.yaml")


def replay_report(out: Path) -> dict:
    path = out / "replay-report.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}


def replay_misses(doc: dict) -> dict[str, list[str]]:
    """Test id -> the report's misses under it, one line each (``(no test)``: outside tests)."""
    misses: dict[str, list[str]] = collections.defaultdict(list)
    for miss in doc.get("misses") or []:
        test = miss.get("test") or ""
        key = junit_id(test.removeprefix("pytest:")) if test.startswith("pytest:") else (test or "(no test)")
        request = str(miss.get("request", "")).splitlines()[0][:160] if miss.get("request") else ""
        misses[key].append(f"{miss.get('protocol')} {request!r}: {miss.get('reason')}")
    return dict(misses)


def summarize(name: str, runs: dict[str, Path]) -> dict:
    """Counts per mode and the tests that pass direct but not under record or replay."""
    results = {mode: junit(out / "junit.xml") for mode, out in runs.items()}
    summary: dict = {"suite": name, "runs": {m: str(p) for m, p in runs.items()}, "counts": {}}
    for mode, res in results.items():
        counts = collections.Counter(status for status, _ in res.values())
        summary["counts"][mode] = {k: counts.get(k, 0) for k in ("passed", "failed", "error", "skipped")}
    report = replay_report(runs["replay"]) if "replay" in runs else {}
    misses = replay_misses(report)
    if report:
        summary["replay_report"] = {k: len(report.get(k) or []) for k in ("misses", "unused", "out_of_order",
                                                                         "similar", "problems")}
    summary["misses_outside_tests"] = misses.get("(no test)", [])
    direct = results.get("direct", {})
    for mode in ("record", "replay"):
        if mode not in results or not direct:
            continue
        # a test this run did not report (deselected by -k against an earlier direct run) is counted apart
        passed = [t for t, (status, _) in sorted(direct.items()) if status == "passed"]
        summary[f"direct_pass_{mode}_missing"] = sum(t not in results[mode] for t in passed)
        summary[f"direct_pass_{mode}_not"] = [
            {"test": t, "status": results[mode][t][0], "message": results[mode][t][1],
             **({"misses": misses.get(t, [])} if mode == "replay" else {})}
            for t in passed if t in results[mode] and results[mode][t][0] != "passed"]
    return summary


def render(summary: dict) -> str:
    lines = [f"# {summary['suite']}", "", "| mode | passed | failed | error | skipped |", "|---|---:|---:|---:|---:|"]
    for mode, c in summary["counts"].items():
        lines.append(f"| {mode} | {c['passed']} | {c['failed']} | {c['error']} | {c['skipped']} |")
    if "replay_report" in summary:
        lines += ["", "Replay report: " + ", ".join(f"{k} {v}" for k, v in summary["replay_report"].items())]
    for mode in ("record", "replay"):
        lost = summary.get(f"direct_pass_{mode}_not")
        if lost is None:
            continue
        lines += ["", f"## Pass direct, not in {mode}: {len(lost)}", ""]
        if missing := summary.get(f"direct_pass_{mode}_missing"):
            lines += [f"({missing} direct passes not run in {mode})", ""]
        for item in lost:
            lines.append(f"- `{item['test']}` {item['status']}: {item['message']}")
            lines += [f"    - miss: {m}" for m in item.get("misses", [])[:3]]
            if len(item.get("misses", [])) > 3:
                lines.append(f"    - ... {len(item['misses']) - 3} more misses")
    if summary.get("misses_outside_tests"):
        lines += ["", f"## Replay misses outside any test: {len(summary['misses_outside_tests'])}", ""]
        lines += [f"- {m}" for m in summary["misses_outside_tests"][:20]]
    lines += ["", "Runs: " + ", ".join(f"{m}: {p}" for m, p in summary["runs"].items())]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog="-- ARGS: more pytest arguments")
    ap.add_argument("suite", choices=sorted(SUITES))
    ap.add_argument("--source", type=Path, required=True, help="git dir of the client (a bare mirror is fine)")
    ap.add_argument("--work", type=Path, required=True, help="checkouts, venvs and results go here")
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("-k", dest="k", help="pytest -k EXPR")
    ap.add_argument("--resp", type=int, default=2, choices=(2, 3), help="redis: RESP protocol version")
    ap.add_argument("--timeout", type=int, default=120, help="pytest-timeout seconds a test (a hang fails it)")
    ap.add_argument("--trproxy", type=Path, default=ROOT,
                    help="the trproxy checkout to run (a worktree of main for a before/after); default this one")
    ap.add_argument("--recording", type=Path, help="replay alone: the recording of an earlier record run")
    ap.add_argument("--direct", type=Path, help="compare with this earlier direct run's results dir")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []  # after --: more pytest arguments
    opts = ap.parse_args(argv[:len(argv) - len(extra) - (1 if "--" in argv else 0)])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the servers are stopped
    modes = [m for m in opts.modes.split(",") if m]
    if set(modes) - set(MODES):
        ap.error(f"--modes: choose among {', '.join(MODES)}")
    if "replay" in modes and "record" not in modes and not opts.recording:
        ap.error("replay without record needs --recording DIR")
    suite = SUITES[opts.suite]
    name = opts.suite + (f"-resp{opts.resp}" if opts.suite == "redis" else "")
    work = opts.work.resolve()
    base = work / opts.suite
    src, sha = checkout(opts.source, opts.rev, base)
    python = venv(suite, src, sha, base)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    servers = Servers(suite.server)
    if opts.recording:  # the replay must see the ports that were recorded
        servers.port = json.loads((opts.recording.parent / "run.json").read_text())["port"]
    server_env, server_args = servers.env_and_args(opts.suite, opts.resp)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRPROXY_", "PYTEST_"))}
    env.update(**suite.env, **server_env, PYTHONPATH=str(plugin_path(work, opts.trproxy)),
               PATH=f"{python.parent}:{env.get('PATH', '')}", VIRTUAL_ENV=str(python.parent.parent))
    args = [*suite.pytest, *server_args, f"--timeout={opts.timeout}", *(["-k", opts.k] if opts.k else []),
            *extra]
    runs: dict[str, Path] = {"direct": opts.direct} if opts.direct else {}
    recording = opts.recording
    print(f"{name} at {sha[:12]}, server port {servers.port}", flush=True)
    try:
        for mode in modes:
            out = work / "results" / f"{name}-{mode}-{stamp}"
            if mode == "record":
                recording = out / "recording"
            servers.stop()
            if mode != "replay":
                servers.start()
            run_mode(mode, python, src, out, recording, env, args)
            if mode == "replay":
                keep_report(recording, out)
            data = json.loads((out / "run.json").read_text())
            (out / "run.json").write_text(json.dumps({**data, "port": servers.port, "rev": sha}))
            runs[mode] = out
    finally:
        servers.stop()
    summary = summarize(name, runs)
    text = render(summary)
    print(text)
    dest = work / "results" / f"{name}-{stamp}"
    dest.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    dest.with_suffix(".md").write_text(text)
    print(f"summary: {dest}.md, {dest}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
