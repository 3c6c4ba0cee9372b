"""A pytest suite shaped like psycopg's own type tests (``tests/types/test_enum.py``,
``test_range.py``, ``tests/test_typeinfo.py``), which ``tests/e2e/test_record_shortcuts.py``
records and replays.

Every test creates its types again (new OIDs, other labels) on a session connection and
asks for them on a connection of its own with the same queries (psycopg's ``TypeInfo``
lookups): the same requests with other answers in every test, so a test served another
test's recordings sees an OID or labels that are not its own. Within a test the server's
answers are checked against each other (the OID by two queries, the labels round-tripped
as text and binary). ``PG_DSN`` says where the server is.
"""

from __future__ import annotations

import os

import psycopg
import pytest
from psycopg.types import TypeInfo
from psycopg.types.enum import EnumInfo, register_enum
from psycopg.types.range import Range, RangeInfo, register_range


@pytest.fixture(scope="session")
def svcconn():
    # never prepared: psycopg prepares a query on its 6th execution on a connection, so a
    # subset or another order would send a session connection's queries another way
    with psycopg.connect(os.environ["PG_DSN"], autocommit=True, prepare_threshold=None) as conn:
        yield conn


@pytest.fixture
def conn():
    with psycopg.connect(os.environ["PG_DSN"]) as conn:
        yield conn


def _oid(conn: psycopg.Connection, name: str) -> int:
    return conn.execute("select oid from pg_type where typname = %s", [name]).fetchone()[0]


@pytest.mark.parametrize("n", range(6))
def test_enum(svcconn, conn, n):
    labels = [f"l{n}_{i}" for i in range(n + 2)]
    svcconn.execute("drop type if exists mood cascade")
    svcconn.execute("create type mood as enum ({})".format(", ".join(f"'{x}'" for x in labels)))
    info = EnumInfo.fetch(conn, "mood")
    assert info.oid == _oid(conn, "mood")
    assert info.labels == labels
    register_enum(info, conn)
    for binary in (False, True):
        got = conn.execute("select %s::mood", [labels[-1]], binary=binary).fetchone()[0]
        assert got.name == labels[-1]


@pytest.mark.parametrize("n", range(6))
def test_range(svcconn, conn, n):
    svcconn.execute("drop type if exists floatrange cascade")
    svcconn.execute("create type floatrange as range (subtype = float8)")
    info = RangeInfo.fetch(conn, "floatrange")
    assert info.oid == _oid(conn, "floatrange")
    assert info.subtype_oid == TypeInfo.fetch(conn, "float8").oid
    register_range(info, conn)
    for binary in (False, True):
        got = conn.execute("select %s::floatrange", [Range(n + 0.25, n + 0.5)], binary=binary).fetchone()[0]
        assert got == Range(n + 0.25, n + 0.5)
