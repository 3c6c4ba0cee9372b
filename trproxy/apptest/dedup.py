"""``trproxy dedup``: remove test cases that exercise nothing another test does not.

Two tests are duplicates when they have the same *signature*: method, route shape
(path segments that are numbers, UUIDs or hex ids collapsed to ``{n}``/``{uuid}``/``{id}``,
query keys without values), request body shape, response status and response body shape
(JSON: keys and value types, recursively; lists: the set of their element shapes;
text/binary/empty otherwise). The first test of each signature (lowest number) is kept,
and so is every test a kept test's ``chain`` takes a value from (the page that served
the CSRF token a later form posts is a duplicate in shape, not in what it hands on).

Keeping the recording consistent (DESIGN.md pitfall: deleting a test desynchronized the
mocks of the others):

* kept tests keep their names (no renumbering), so the ``metadata.tests`` of their mocks
  still name them and their mock windows are unchanged;
* removed tests lose their file and the ``data`` mocks that only they list (consumed
  once, only ever meant for those tests' windows); a data mock that also lists a kept
  test (concurrent requests) stays, its list untouched (an emptied list would turn it
  into start-up traffic);
* ``session`` mocks of removed tests stay: they may be served to any test (the first
  Postgres connection's handshake, a catalog query), and at replay a kept test may be the
  first to need them. Mocks outside any test (start-up) stay.

Order of writes: test files are deleted first, then ``mocks.yaml`` is rewritten
atomically; a crash in between leaves extra mocks that no test window claims, which
replay ignores unless a live request has no better candidate.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..store import safeio
from ..store.recording import MOCKS, DocumentWriter, has_mocks, load_documents
from .noise import normalize_body
from .testcase import TestCase, load_tests, tests_dir

_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEXID = re.compile(r"(?=.*\d)[0-9a-fA-F]{8,}")


@dataclass
class DedupResult:
    kept: list[str] = field(default_factory=list)
    removed: dict[str, str] = field(default_factory=dict)  # removed test -> the test it duplicates
    mocks_dropped: int = 0
    mocks_kept: int = 0

    def describe(self) -> str:
        lines = [f"kept {len(self.kept)} tests, removed {len(self.removed)}, "
                 f"dropped {self.mocks_dropped} mocks ({self.mocks_kept} left)"]
        lines += [f"  removed {name} (same as {same})" for name, same in self.removed.items()]
        return "\n".join(lines)


def _segment_shape(segment: str) -> str:
    if segment.isdigit():
        return "{n}"
    if _UUID.fullmatch(segment):
        return "{uuid}"
    if _HEXID.fullmatch(segment):
        return "{id}"
    return segment


def route_shape(url: str) -> str:
    """``/orders/42?expand=1`` -> ``/orders/{n}?expand``."""
    parts = urlsplit(url)
    path = "/".join(_segment_shape(s) for s in (parts.path or "/").split("/"))
    keys = sorted({k for k, _v in parse_qsl(parts.query, keep_blank_values=True)})
    return path + ("?" + "&".join(keys) if keys else "")


def value_shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): value_shape(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list):
        shapes = {json.dumps(value_shape(v), sort_keys=True) for v in value}
        return [json.loads(s) for s in sorted(shapes)]
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return "string"


def body_shape(body: Any) -> Any:
    body = normalize_body(body)
    if body == "":
        return "empty"
    if isinstance(body, dict) and "json" in body:
        return {"json": value_shape(body["json"])}
    if isinstance(body, str):
        return "text"
    return "binary"


def signature(test: TestCase) -> str:
    req, resp = test.request, test.response
    return json.dumps([
        str(req.get("method", "")).upper(),
        route_shape(str(req.get("url", ""))),
        body_shape(req.get("body")),
        resp.get("status", resp.get("status_code")),
        body_shape(resp.get("body")),
    ], sort_keys=True)


def find_duplicates(tests: list[TestCase]) -> dict[str, str]:
    """Removed test name -> name of the earlier test with the same signature."""
    first: dict[str, str] = {}
    removed: dict[str, str] = {}
    for test in tests:
        sig = signature(test)
        if sig in first:
            removed[test.name] = first[sig]
        else:
            first[sig] = test.name
    for test in reversed(tests):  # sources come before the tests that use them
        if test.name not in removed:
            for link in test.chain:
                removed.pop(link.source, None)
    return removed


def dedup(test_set: Path, dry_run: bool = False) -> DedupResult:
    """Remove duplicate tests of a test set and their data mocks; ``dry_run`` only reports."""
    tests = load_tests(test_set)
    result = DedupResult(removed=find_duplicates(tests))
    result.kept = [t.name for t in tests if t.name not in result.removed]
    mocks_path = test_set / MOCKS
    docs = load_documents(mocks_path) if has_mocks(test_set) else []
    keep = [d for d in docs if not _belongs_to_removed(d, result.removed)]
    result.mocks_dropped, result.mocks_kept = len(docs) - len(keep), len(keep)
    if dry_run or not result.removed:
        return result
    with safeio.open_dir(tests_dir(test_set), test_set.parent) as folder:
        for test in tests:
            if test.name in result.removed and test.path is not None:
                with contextlib.suppress(FileNotFoundError):
                    folder.unlink(test.path.name)
    if result.mocks_dropped:
        DocumentWriter(mocks_path, header=keep).close()
    return result


def _belongs_to_removed(doc: Any, removed: dict[str, str]) -> bool:
    """A data mock whose tests (``metadata.tests``) were all removed."""
    spec = doc.get("spec") if isinstance(doc, dict) else None
    if not isinstance(spec, dict) or spec.get("lifetime", "data") != "data":
        return False
    meta = spec.get("metadata")
    if not isinstance(meta, dict):
        return False
    tests = meta.get("tests") or ([meta["test"]] if meta.get("test") else [])  # early files: one name
    return bool(tests) and all(t in removed for t in tests)
