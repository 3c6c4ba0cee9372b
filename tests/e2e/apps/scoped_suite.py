"""A small pytest suite that ``tests/e2e/test_pytest_scoping.py`` records whole and replays
in parts (``-k``) and in another order, with the servers stopped.

Every test uses the same Redis keys and the same SQL with values of its own, so a test
served another test's recordings gets wrong answers. A session fixture (Redis) and a
module fixture (a Postgres table) are set up inside whichever test needs them first, and
the module's import makes a call outside any test. ``REDIS_PORT`` and ``PG_DSN`` say
where the servers are; ``SUITE_SKEW=1`` changes what the Postgres tests insert (a test
asking for what its recordings do not have).
"""

from __future__ import annotations

import os

import psycopg
import pytest
import redis


def _redis() -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=int(os.environ["REDIS_PORT"]), decode_responses=True,
                       socket_timeout=10)


with _redis() as _client:  # at collection, outside any test
    IMPORTS = _client.incr("suite:imports")


@pytest.fixture(scope="session")
def r():
    client = _redis()
    client.set("suite:run", "started")
    yield client
    client.delete("suite:run")
    client.close()


@pytest.fixture(scope="module")
def db():
    with psycopg.connect(os.environ["PG_DSN"], autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS scoped_items")
        conn.execute("CREATE TABLE scoped_items (name text PRIMARY KEY, qty int)")
        yield conn
        conn.execute("DROP TABLE scoped_items")


@pytest.fixture
def clean(r):
    r.delete("color", "visits")


@pytest.mark.parametrize(("color", "visits"), [("red", 1), ("green", 2), ("blue", 3)])
def test_redis(r, clean, color, visits):
    assert IMPORTS == 1
    assert r.get("suite:run") == "started"
    r.set("color", color)
    assert [r.incr("visits") for _ in range(visits)] == list(range(1, visits + 1))
    assert r.get("color") == color
    assert r.get("visits") == str(visits)


@pytest.mark.parametrize(("name", "qty"), [("apple", 5), ("pear", 7), ("plum", 9)])
def test_postgres(db, name, qty):
    qty += int(os.environ.get("SUITE_SKEW", "0"))
    db.execute("DELETE FROM scoped_items")
    db.execute("INSERT INTO scoped_items VALUES (%s, %s)", (name, qty))
    assert db.execute("SELECT name, qty FROM scoped_items").fetchall() == [(name, qty)]
    db.execute("UPDATE scoped_items SET qty = qty + 1")
    assert db.execute("SELECT sum(qty) FROM scoped_items").fetchone()[0] == qty + 1
