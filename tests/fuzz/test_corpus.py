"""The fuzz corpus in CI: every file of ``corpus/<target>/`` through its target.

The corpus holds seeds cut from real traffic, inputs the coverage-guided runs
(``make fuzz``) found interesting, and every input that once crashed a target (named
``crash-*``), so a fixed crash stays fixed. Only the target's documented error may
escape (the targets catch it); anything else fails here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import MAX_PIECES, TARGETS, frame, unframe

CORPUS = Path(__file__).parent / "corpus"
FILES = sorted((d.name, f) for d in CORPUS.iterdir() if d.is_dir() for f in sorted(d.iterdir()))


def test_every_target_has_a_corpus():
    assert sorted({name for name, _ in FILES}) == sorted(TARGETS)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_corpus_runs_clean(target):
    files = [f for name, f in FILES if name == target]
    for f in files:
        try:
            TARGETS[target].run(f.read_bytes())
        except Exception as exc:  # name the file, so the input can be found and replayed
            raise AssertionError(f"{f.relative_to(CORPUS)}: {type(exc).__name__}: {exc}") from exc


def test_framing_keeps_sides_order_and_ends():
    chunks = [("client", b"abcdef"), ("server", b"xyz"), ("client", b""), ("server", b"q" * 70000)]
    out = unframe(frame(chunks, step=4))
    assert [(s.value, d) for s, d in out][:5] == [("client", b"abcd"), ("client", b"ef"),
                                                  ("server", b"xyz"), ("client", b""),
                                                  ("server", b"q" * 4)]
    assert b"".join(d for s, d in out if s.value == "server") == b"xyz" + b"q" * 70000
    assert unframe(frame(chunks)[:-5])[-1][1] == b"q" * (70000 - 65535 - 5)  # torn tail kept


def test_a_long_payload_is_cut_in_a_bounded_number_of_places():
    data = bytes(range(256)) * 4
    out = unframe(frame([("server", data)], step=1))
    assert b"".join(d for _, d in out) == data
    assert len(out) == 2 * MAX_PIECES  # a 1-byte piece at each of MAX_PIECES places
    assert sum(len(d) == 1 for _, d in out) == MAX_PIECES
    short = unframe(frame([("client", data[:MAX_PIECES])], step=1))
    assert [d for _, d in short] == [bytes([i]) for i in range(MAX_PIECES)]  # every byte


def test_fuzz_py_loads_every_module_a_target_reaches():
    """Guided fuzzing instruments only the modules ``scripts/fuzz.py`` imports up front
    (``MODULES``): one a target imports on its own runs without coverage feedback."""
    root = Path(__file__).parents[2]
    probe = (
        "import importlib, sys\n"
        f"sys.path[:0] = [{str(root)!r}, {str(root / 'scripts')!r}]\n"
        "import fuzz\n"
        "from tests.fuzz.targets import TARGETS\n"
        "for m in fuzz.MODULES: importlib.import_module(m)\n"
        "before = set(sys.modules)\n"
        f"for f in sorted(__import__('pathlib').Path({str(CORPUS)!r}).glob('*/*')):\n"
        "    try: TARGETS[f.parent.name].run(f.read_bytes())\n"
        "    except Exception: pass\n"
        "print(sorted(m for m in set(sys.modules) - before if m.startswith('trproxy')))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
