"""Coverage-guided fuzzing of the codecs with atheris (libFuzzer): ``make fuzz``.

    .venv/bin/python scripts/fuzz.py [--target NAME ...] [--runs N] [--max-len B]

Each target (``tests/fuzz/targets.py``) runs in its own process for ``--runs`` inputs,
starting from a work corpus in ``.fuzz/<target>/corpus``: the repository's corpus
(``tests/fuzz/corpus/<target>``) plus seeds cut from real traffic (``tests/fuzz/seeds.py``).
Only trproxy's own modules (and the parsers the HTTP targets sit on) are instrumented.
An input that raises anything but the target's documented error, takes more than
``--timeout`` CPU seconds (``--guided-timeout`` wall-clock seconds under libFuzzer, which
counts no CPU time) or grows the process past ``--rss-mb`` is a crash: libFuzzer writes
it to ``.fuzz/<target>/crash-*`` and the target stops. Copy it into the
repository's corpus with the fix so CI keeps running it. A summary line per target
(inputs, exec/s, crashes) is printed at the end and kept in ``.fuzz/results.json``.
Exec/s is per wall-clock second, which a niced run on a shared machine mostly spends
waiting for a core; exec/cpu-s (inputs per CPU second of the target's process) is what
the target costs, comparable between runs.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import importlib
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / ".fuzz"
# every trproxy module a target reaches: atheris instruments only what is imported inside
# its ``instrument_imports`` block, so a module a target imports later has no coverage
# feedback (``tests/fuzz/test_corpus.py`` checks this list)
# protocols/http loads its recorder, replayer and their parsers when first used
# (trproxy test's start-up): named here, so guided runs instrument them
MODULES = ("trproxy.protocols.http", "trproxy.protocols.http.recorder", "trproxy.protocols.http.replayer",
           "trproxy.protocols.http.forward", "trproxy.protocols.http.client", "trproxy.protocols.http.websocket",
           "trproxy.protocols.kafka", "trproxy.protocols.kafka.records",
           "trproxy.protocols.postgres", "trproxy.protocols.redis", "trproxy.protocols.mysql",
           "trproxy.protocols.dns", "trproxy.protocols.generic", "trproxy.store.recording",
           "trproxy.tls.endpoint")
INSTRUMENT = {"http1": ["h11", "mitmproxy.net.http"], "http2": ["h2", "hpack"],
              "websocket": ["wsproto"], "tls_client_hello": ["mitmproxy.tls"]}
# imported lazily by the code under test: loaded up front, or the first input pays the
# import (mitmproxy's layers: 12 s on a loaded machine, reported as a timeout)
LAZY = {"tls_client_hello": ["mitmproxy.proxy.layers.tls", "mitmproxy.tls"]}


def child(target: str, plain: bool, args: list[str]) -> None:
    """Inside the fuzzing process: the guided phase under libFuzzer, or the plain loop."""
    sys.path.insert(0, str(ROOT))
    if plain:
        from tests.fuzz.targets import TARGETS

        for module in (*MODULES, *LAZY.get(target, [])):  # not inside the first input's time
            importlib.import_module(module)  # limit
        mutate_loop(TARGETS[target].run, args)
        return
    import atheris

    include = ["trproxy", *INSTRUMENT.get(target, [])]
    with atheris.instrument_imports(include=include):
        from tests.fuzz.targets import TARGETS

        for module in (*MODULES, *LAZY.get(target, [])):  # the targets import lazily: load
            importlib.import_module(module)  # what they use in here
    atheris.Setup([sys.argv[0], *args], TARGETS[target].run)
    atheris.Fuzz()


class Hang(BaseException):
    """One input used more than --timeout seconds of CPU (a BaseException: no ``except
    Exception`` hides it). CPU, not wall-clock time: a niced fuzzer on a busy machine
    waits seconds for a core, which is not a hang of the code."""


INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00", b"\xff\xff", b"\x7f\xff",
               b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff",
               b"\x80\x00\x00\x00", b"\x00\x00\x00\x04", b"\x00\x01\x00\x00", b"\r\n",
               b"-1", b"99999999999", b"\x00" * 8, b"\xff" * 8]


def mutate(rng: random.Random, data: bytes, pool: list[bytes], max_len: int) -> bytes:
    """libFuzzer's kinds of edits: flip, set, erase, insert, copy a part, an interesting
    value, splice with another corpus input."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 4, 8))):
        i = rng.randrange(len(b) + 1)
        op = rng.randrange(7)
        if op == 0 and b:
            b[min(i, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif op == 2:
            del b[i:i + rng.randrange(1, 33)]
        elif op == 3:
            b[i:i] = rng.randbytes(rng.randrange(1, 17))
        elif op == 4 and b:
            j = rng.randrange(len(b))
            b[i:i] = b[j:j + rng.randrange(1, 65)]
        elif op == 5:
            v = rng.choice(INTERESTING)
            b[i:i + (len(v) if rng.random() < 0.7 else 0)] = v
        else:
            other = rng.choice(pool)
            b = b[:i] + other[rng.randrange(len(other) + 1):]
    return bytes(b[:max_len])


def mutate_loop(run: Callable[[bytes], None], args: list[str]) -> None:
    """The plain phase: mutate the corpus without coverage feedback, much faster than
    instrumented code. Same flags and output lines as libFuzzer for the parent."""
    corpus = Path(args[0])
    flags = dict(a.lstrip("-").split("=", 1) for a in args[1:])
    runs, max_len = int(flags["runs"]), int(flags["max_len"])
    timeout, seconds = int(flags["timeout"]), int(flags.get("max_total_time", 0))
    out = flags["artifact_prefix"]
    limit = int(flags["rss_limit_mb"]) << 20
    resource.setrlimit(resource.RLIMIT_AS, (4 * limit, 4 * limit))  # a runaway allocation
    pool = [f.read_bytes() for f in sorted(corpus.iterdir())] or [b""]
    rng = random.Random(int(time.time()))

    def hang(_signum: int, _frame: object) -> None:
        raise Hang()

    signal.signal(signal.SIGPROF, hang)
    start = time.monotonic()
    n = 0
    slowest = 0.0
    data = b""
    try:
        while n < runs and not (seconds and time.monotonic() - start > seconds):
            data = mutate(rng, rng.choice(pool), pool, max_len)
            signal.setitimer(signal.ITIMER_PROF, timeout)
            began = time.process_time()
            run(data)
            took = time.process_time() - began
            signal.setitimer(signal.ITIMER_PROF, 0)
            if took > max(slowest, 1.0):  # not a hang, but worth a look (quadratic work?)
                slowest = took
                Path(f"{out}slow-unit-{hashlib.sha1(data).hexdigest()}").write_bytes(data)
                print(f"slow unit: {took:.1f} s of CPU", flush=True)
            n += 1
            if n & (n - 1) == 0 or n % 100_000 == 0:
                print(f"#{n}\tpulse  exec/s: {n / (time.monotonic() - start):.0f}", flush=True)
    except BaseException as exc:
        kind = "timeout" if isinstance(exc, Hang) else "crash"
        path = f"{out}{kind}-{hashlib.sha1(data).hexdigest()}"
        Path(path).write_bytes(data)
        traceback.print_exc()
        print(f"{kind}: input written to {path}", flush=True)
    elapsed = time.monotonic() - start
    print(f"stat::number_of_executed_units: {n}\n"
          f"stat::average_exec_per_sec:     {int(n / elapsed) if elapsed else 0}", flush=True)


def prepare(target: str) -> Path:
    sys.path.insert(0, str(ROOT))
    from tests.fuzz.seeds import corpus_dir, seeds

    corpus = WORK / target / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    for data in seeds(target):
        (corpus / hashlib.sha1(data).hexdigest()).write_bytes(data)
    repo = corpus_dir(target)
    if repo.is_dir():
        for f in repo.iterdir():
            shutil.copyfile(f, corpus / f.name)
    return corpus


def fuzz(target: str, runs: int, max_len: int, timeout: int, rss_mb: int, seconds: int,
         plain: bool = False, guided_timeout: int = 0) -> dict:
    corpus = prepare(target)
    out = WORK / target
    for old in out.glob("crash-*"):
        old.unlink()
    log = out / ("log-plain.txt" if plain else "log.txt")
    args = [str(corpus), f"-runs={runs}", f"-max_len={max_len}",
            f"-timeout={timeout if plain else max(timeout, guided_timeout)}",
            f"-rss_limit_mb={rss_mb}", f"-artifact_prefix={out}/", "-print_final_stats=1",
            "-reload=0", *([f"-max_total_time={seconds}"] if seconds else [])]
    start = time.monotonic()
    cpu = _children_cpu()
    with log.open("w") as f:
        proc = subprocess.run([sys.executable, __file__, "--child", target,
                           "plain" if plain else "guided", "--", *args],
                              stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
    elapsed = time.monotonic() - start
    cpu = _children_cpu() - cpu
    text = log.read_text(errors="replace")
    done = re.findall(r"stat::number_of_executed_units:\s*(\d+)", text)
    execs = int(done[-1]) if done else max([int(n) for n in re.findall(r"^#(\d+)", text, re.M)]
                                           or [0])
    rate = re.findall(r"stat::average_exec_per_sec:\s*(\d+)", text)
    cov = re.findall(r"cov: (\d+) ft: (\d+)", text)
    crashes = sorted(p.name for p in out.glob("crash-*")) + sorted(
        p.name for p in out.glob("timeout-*")) + sorted(p.name for p in out.glob("oom-*"))
    result = {"target": target, "mode": "plain" if plain else "guided", "runs": execs, "exec_per_s": int(rate[-1]) if rate else
              int(execs / elapsed) if elapsed else 0, "seconds": round(elapsed),
              "cpu_seconds": round(cpu), "exec_per_cpu_s": int(execs / cpu) if cpu else 0,
              "coverage": int(cov[-1][0]) if cov else 0, "exit": proc.returncode,
              "crashes": crashes, "corpus": len(list(corpus.iterdir()))}
    if crashes or proc.returncode not in (0,):
        tail = "\n".join(text.splitlines()[-40:])
        result["tail"] = tail
    return result


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def save(results_path: Path, target: str, phases: list[dict]) -> None:
    """Replace ``target``'s entry of the results file; under a lock, since targets run as
    parallel processes (each reads, updates and writes the whole file)."""
    with (results_path.parent / "results.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = json.loads(results_path.read_text()) if results_path.exists() else {}
        results[target] = phases
        part = results_path.with_suffix(f".{os.getpid()}")  # never read half-written
        part.write_text(json.dumps(results, indent=1))
        os.replace(part, results_path)


def export(target: str, n: int) -> None:
    """N files spread over the work corpus sorted by size (small and large inputs both)."""
    from tests.fuzz.seeds import corpus_dir

    files = sorted(prepare(target).iterdir(), key=lambda f: (f.stat().st_size, f.name))
    chosen = [files[i * len(files) // n] for i in range(min(n, len(files)))]
    repo = corpus_dir(target)
    repo.mkdir(parents=True, exist_ok=True)
    for old in repo.iterdir():
        if not old.name.startswith("crash-"):
            old.unlink()
    for f in chosen:
        shutil.copyfile(f, repo / f.name)
    print(f"{target}: {len(chosen)} of {len(files)} files -> {repo.relative_to(ROOT)}")


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3] == "plain", sys.argv[5:])
        return 0
    sys.path.insert(0, str(ROOT))
    from tests.fuzz.targets import TARGETS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", action="append", choices=sorted(TARGETS),
                   help="a target (repeatable); default: all")
    p.add_argument("--runs", type=int, default=1_000_000, help="inputs per target")
    p.add_argument("--guided-seconds", type=int, default=600,
                   help="coverage-guided phase of each target; the rest of --runs is plain")
    p.add_argument("--plain-seconds", type=int, default=0, help="bound of the plain phase")
    p.add_argument("--max-len", type=int, default=1024, help="largest input, bytes")
    p.add_argument("--timeout", type=int, default=10,
                   help="CPU seconds for one input in the plain phase (a hang)")
    p.add_argument("--guided-timeout", type=int, default=60,
                   help="wall-clock seconds for one input under libFuzzer, which cannot count "
                        "CPU time: room for a niced fuzzer on a busy machine")
    p.add_argument("--rss-mb", type=int, default=2048, help="memory limit of a target")
    p.add_argument("--export", type=int, metavar="N",
                   help="no fuzzing: refresh tests/fuzz/corpus/<target> with N files of the work "
                        "corpus (crash-* files there stay)")
    a = p.parse_args()
    if a.export:
        for target in a.target or list(TARGETS):
            export(target, a.export)
        return 0
    WORK.mkdir(exist_ok=True)
    results_path = WORK / "results.json"
    failed = False
    for target in a.target or list(TARGETS):
        phases = []
        if a.guided_seconds:
            phases.append(fuzz(target, a.runs, a.max_len, a.timeout, a.rss_mb, a.guided_seconds,
                               guided_timeout=a.guided_timeout))
        left = a.runs - sum(r["runs"] for r in phases)
        if left > 0 and not any("tail" in r for r in phases):
            phases.append(fuzz(target, left, a.max_len, a.timeout, a.rss_mb, a.plain_seconds,
                               plain=True))
        save(results_path, target, phases)
        for r in phases:
            print(f"{target:18} {r['mode']:6} {r['runs']:>9} inputs {r['exec_per_s']:>6} exec/s "
                  f"{r['exec_per_cpu_s']:>6} exec/cpu-s {r['seconds']:>6} s  "
                  f"cov {r['coverage']:>5}  corpus {r['corpus']:>5}  "
                  f"crashes {len(r['crashes'])}", flush=True)
            if "tail" in r:
                failed = True
                print(r["tail"], file=sys.stderr)
        print(f"{target:18} total  {sum(r['runs'] for r in phases):>9} inputs", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
