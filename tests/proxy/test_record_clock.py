"""Record's wall-clock stamps (``started``): the text ``datetime.isoformat`` gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from trproxy.proxy.record import _iso, _now

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@given(st.integers(0, 2**63 - 1).filter(lambda ns: ns < 253402300800 * 10**9))  # before year 10000
def test_a_stamp_is_what_datetime_writes(ns) -> None:
    expected = (_EPOCH + timedelta(microseconds=ns // 1000)).isoformat(timespec="microseconds")
    assert _iso(ns) == expected
    assert _iso(ns + 1000) == (_EPOCH + timedelta(microseconds=ns // 1000 + 1)).isoformat(timespec="microseconds")


def test_now_is_now() -> None:
    before = datetime.now(UTC)
    stamp = datetime.fromisoformat(_now())
    assert before - timedelta(seconds=1) <= stamp <= datetime.now(UTC)
    assert _now().endswith("+00:00") and len(_now()) == 32
