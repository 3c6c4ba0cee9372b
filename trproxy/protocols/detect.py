"""Protocol detection: which dialect speaks on a new connection.

Each dialect judges the client's first bytes (and the destination port as a hint);
the first that says True wins, in the order of ``DIALECTS``. ``generic`` takes the
rest. A dialect that raises ImportError (optional dependency missing) is skipped.
"""

from __future__ import annotations

import importlib

from .base import Dialect

_ORDER = ("postgres", "redis", "kafka", "http", "generic")


def _load() -> list[Dialect]:
    found = []
    for name in _ORDER:
        try:
            module = importlib.import_module(f"{__package__}.{name}")
        except ImportError:
            continue
        dialect = getattr(module, "DIALECT", None)
        if dialect is not None:
            found.append(dialect)
    return found


DIALECTS: list[Dialect] = _load()
BY_NAME: dict[str, Dialect] = {d.name: d for d in DIALECTS}


def detect(first_bytes: bytes, port: int, final: bool = False) -> Dialect | None:
    """The dialect for this connection, or None while more bytes could change the answer.

    ``final`` means no more bytes will come soon (the client is waiting for the server,
    or closed): undecided dialects then count as a no.
    """
    # a dialect whose default port matches gets the first say
    ordered = sorted(DIALECTS, key=lambda d: port not in d.default_ports)
    for dialect in ordered:
        verdict = dialect.detect(first_bytes, port)
        if verdict is None and not final:
            return None
        if verdict:
            return dialect
    return BY_NAME["generic"]
