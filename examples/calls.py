"""What the example apps' traffic scripts share: a call that prints itself and fails on an
unexpected status, and the CSRF token of an HTML form (requests or httpx alike)."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any


def checked(send: Callable[..., Any]) -> Callable[..., Any]:
    """``call(method, path, expect, **kw)``: ``send(method, path, **kw)``, printed as
    ``> METHOD PATH  [STATUS]``; the script ends if the status is not ``expect``."""

    def call(method: str, path: str, expect: int, **kw: Any) -> Any:
        answer = send(method, path, **kw)
        print(f"> {method} {path}  [{answer.status_code}]")
        if answer.status_code != expect:
            sys.exit(f"expected {expect}, got {answer.status_code}: {answer.text[:300]}")
        return answer

    return call


def csrf_of(page: Any, field: re.Pattern[str]) -> str:
    """The token ``field`` (a pattern with one group) finds in the page's HTML."""
    match = field.search(page.text)
    if match is None:
        sys.exit(f"no CSRF token in {page.url}")
    return match.group(1)
