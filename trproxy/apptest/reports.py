"""What a test run tells people and CI: progress, summary, JSON report, JUnit XML.

* ``Progress``: one line per test as it finishes (``[ 3/12] PASS test-3 GET /orders/1``);
  on a terminal the running test is shown first and overwritten in place.
* ``summary``: counts, then for every failure its differences and a unified diff
  (recorded -> live, noise masked), then the mock misses with their nearest recordings.
* ``write_reports``: ``<reports dir>/test-<UTC stamp>.json`` (everything above as data)
  and ``test-<UTC stamp>.xml`` (JUnit: one ``testcase`` per test, ``failure`` / ``error``
  carrying the diff, misses in ``system-out``).

Mock misses come from the proxy as data: dicts with ``protocol``, ``destination``,
``request``, ``reason``, ``nearest`` (list of strings) and ``test`` (the test name that
was running, or None for start-up). A miss is listed under its test and in the run.

Invariant: rendering only; nothing here runs tests or reads recordings.
"""

from __future__ import annotations

import json
import re
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from ..store.safeio import write_bytes
from .testcase import TestCase
from .testrun import ERROR, FAILED, NEEDS_SECRET, PASSED, TestResult, TestRun

Miss = dict[str, Any]
_LABEL = {PASSED: "PASS", FAILED: "FAIL", ERROR: "ERROR", NEEDS_SECRET: "SECRET"}
_COLOR = {PASSED: "\033[32m", FAILED: "\033[31m", ERROR: "\033[33m", NEEDS_SECRET: "\033[35m"}
_MAX_DIFFS = 20
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


class Progress:
    """``on_start`` / ``on_result`` callbacks for ``run_tests`` that print to ``stream``."""

    def __init__(self, stream: TextIO | None = None, color: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.color = self.tty if color is None else color

    def start(self, test: TestCase, index: int, total: int) -> None:
        if self.tty:
            self.stream.write(f"\r\033[K{_counter(index, total)} ....  {test.name} {test.title}")
            self.stream.flush()

    def result(self, result: TestResult, index: int, total: int) -> None:
        label = _LABEL[result.status]
        if self.color:
            label = f"{_COLOR[result.status]}{label}\033[0m"
        line = f"{_counter(index, total)} {label:5} {result.name} {result.test.title}  " \
               f"({result.duration_ms:.0f} ms)"
        if result.error:
            line += f": {result.error}"
        elif result.differences:
            line += f": {len(result.differences)} difference(s)"
        self.stream.write(("\r\033[K" if self.tty else "") + line + "\n")
        self.stream.flush()


def _counter(index: int, total: int) -> str:
    width = len(str(total))
    return f"[{index:>{width}}/{total}]"


def _misses_of(misses: Iterable[Miss], test: str | None) -> list[Miss]:
    return [m for m in misses if m.get("test") == test]


def _miss_lines(miss: Miss, nearest: int = 1) -> list[str]:
    lines = [f"  - {miss.get('protocol')} {miss.get('destination')}: {miss.get('request')}: "
             f"{miss.get('reason')}"]
    for near in list(miss.get("nearest") or [])[:nearest]:
        lines += ["      nearest: " + str(near).splitlines()[0]]
        lines += ["        " + line for line in str(near).splitlines()[1:]]
    return lines


def summary(run: TestRun, misses: Iterable[Miss] = ()) -> str:
    """The human summary printed at the end of ``trproxy test``."""
    misses = list(misses)
    counts = f"{run.count(PASSED)} passed, {run.count(FAILED)} failed, {run.count(ERROR)} errors"
    if run.count(NEEDS_SECRET):
        counts += f", {run.count(NEEDS_SECRET)} need a secret"
    out = [f"test set {run.test_set.name}: {len(run.results)} tests: {counts} "
           f"({run.duration_ms / 1000:.1f} s: app start-up {run.startup_ms / 1000:.1f} s, "
           f"tests {(run.duration_ms - run.startup_ms) / 1000:.1f} s)"]
    for r in run.results:
        if r.passed:
            continue
        out.append("")
        out.append(f"{_LABEL[r.status]} {r.name}: {r.test.title}")
        if r.error:
            out.append(f"  {r.error}")
        for d in r.differences[:_MAX_DIFFS]:
            out.append(f"  {d}")
        if len(r.differences) > _MAX_DIFFS:
            out.append(f"  ... {len(r.differences) - _MAX_DIFFS} more in the report")
        diff = r.diff()
        if diff:
            out += ["  " + line for line in diff.rstrip("\n").splitlines()]
        test_misses = _misses_of(misses, r.name)
        if test_misses:
            out.append("  mock misses during this test:")
            for m in test_misses:
                out += ["  " + line for line in _miss_lines(m)]
        if r.test.path:
            out.append(f"  (to accept a difference as noise, add its path to `noise:` in {r.test.path})")
    if misses:
        out += ["", f"{len(misses)} mock misses:"]
        for m in misses:
            where = m.get("test") or "start-up"
            out += [f"  [{where}]"] + ["  " + line for line in _miss_lines(m, nearest=3)]
    return "\n".join(out)


def _result_dict(r: TestResult, misses: list[Miss]) -> dict[str, Any]:
    return {
        "name": r.name,
        "status": r.status,
        "request": r.test.title,
        "file": str(r.test.path) if r.test.path else None,
        "started": r.started,
        "duration_ms": round(r.duration_ms, 3),
        "error": r.error,
        "differences": [{"path": d.path, "expected": d.expected, "actual": d.actual}
                        for d in r.differences],
        "diff": r.diff(),
        "noise": list(r.noise.paths),
        "misses": _misses_of(misses, r.name),
        "expected": r.test.response,
        "actual": r.actual,
    }


def report_dict(run: TestRun, misses: Iterable[Miss] = (),
                faults: Iterable[dict[str, Any]] = ()) -> dict[str, Any]:
    misses = list(misses)
    return {
        "test_set": str(run.test_set),
        "started": run.started,
        "duration_ms": round(run.duration_ms, 3),
        "startup_ms": round(run.startup_ms, 3),
        "total": len(run.results),
        "passed": run.count(PASSED),
        "failed": run.count(FAILED),
        "errors": run.count(ERROR),
        "needs_secret": run.count(NEEDS_SECRET),
        "tests": [_result_dict(r, misses) for r in run.results],
        "misses": misses,
        "faults": list(faults),  # injected on purpose (--fault, a fault profile)
    }


def _x(text: str | None) -> str:
    """Text XML 1.0 can carry (control characters in bodies would make it unparsable)."""
    return _NOT_XML.sub("\ufffd", text or "")


def junit_xml(run: TestRun, misses: Iterable[Miss] = ()) -> str:
    misses = list(misses)
    suites = ET.Element("testsuites", name="trproxy", tests=str(len(run.results)),
                        failures=str(run.count(FAILED)), errors=str(run.count(ERROR)),
                        time=f"{run.duration_ms / 1000:.3f}")
    suite = ET.SubElement(suites, "testsuite", name=run.test_set.name, tests=str(len(run.results)),
                          failures=str(run.count(FAILED)), errors=str(run.count(ERROR)),
                          skipped=str(run.count(NEEDS_SECRET)), time=f"{run.duration_ms / 1000:.3f}",
                          timestamp=run.started)
    for r in run.results:
        case = ET.SubElement(suite, "testcase", name=_x(f"{r.name} {r.test.title}"),
                             classname=f"trproxy.{run.test_set.name}",
                             time=f"{r.duration_ms / 1000:.3f}")
        if r.status == FAILED:
            message = "; ".join(str(d) for d in r.differences[:3])
            detail = "\n".join(str(d) for d in r.differences) + "\n\n" + r.diff()
            ET.SubElement(case, "failure", message=_x(message), type="ResponseMismatch").text = _x(detail)
        elif r.status == ERROR:
            ET.SubElement(case, "error", message=_x(r.error), type="NoResponse").text = _x(r.error)
        elif r.status == NEEDS_SECRET:  # not run: not a failure of the app
            ET.SubElement(case, "skipped", message=_x(r.error))
        test_misses = _misses_of(misses, r.name)
        if test_misses:
            out = ET.SubElement(case, "system-out")
            out.text = _x("\n".join(line for m in test_misses for line in _miss_lines(m, nearest=3)))
    startup = _misses_of(misses, None)
    if startup:
        ET.SubElement(suite, "system-out").text = _x("mock misses at start-up:\n" + "\n".join(
            line for m in startup for line in _miss_lines(m, nearest=3)))
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def write_reports(run: TestRun, reports_dir: Path, misses: Iterable[Miss] = (),
                  faults: Iterable[dict[str, Any]] = ()) -> tuple[Path, Path]:
    """Write the JSON report and the JUnit XML of one run into ``<root>/reports`` (made
    without following links from the root); returns both paths."""
    misses = list(misses)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    base = reports_dir / f"test-{stamp}"
    json_path, xml_path = base.with_suffix(".json"), base.with_suffix(".xml")
    text = json.dumps(report_dict(run, misses, faults), indent=2, ensure_ascii=False, default=str) + "\n"
    write_bytes(json_path, reports_dir.parent, text.encode("utf-8"))
    write_bytes(xml_path, reports_dir.parent, junit_xml(run, misses).encode("utf-8"))
    return json_path, xml_path
