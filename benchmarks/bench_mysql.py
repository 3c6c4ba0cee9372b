"""MySQL resultset decode throughput of trproxy's codec beside PyMySQL's.

The same server bytes (the answer to one COM_QUERY: column definitions, then text rows
ending in an EOF packet) go, in 64 KiB pieces as a socket read returns them, to
trproxy's ``MySQLCodec`` (rows decoded to readable values, numbers where they print
back the same) and to PyMySQL's own reader: ``MySQLResult.read()`` on a
``Connection`` whose socket file is the bytes in memory (PyMySQL's packet framing,
``FieldDescriptorPacket`` and row conversion to Python values). Both must decode the
same number of rows, else the run fails. Binary rows (COM_STMT_EXECUTE) have no PyMySQL
reference (it has no server-side prepared statements): only ours is shown.

Run: ``.venv/bin/python benchmarks/bench_mysql.py`` (``--quick`` for a smoke run).
Numbers are MB/s of wire bytes, best of several rounds, and ours / PyMySQL.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pymysql
from pymysql.connections import MySQLResult

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trproxy.protocols.base import NEED_DATA, Direction  # noqa: E402
from trproxy.protocols.mysql import MySQLCodec  # noqa: E402
from trproxy.protocols.mysql import packets as p  # noqa: E402
from trproxy.protocols.mysql.wire import CLIENT_PROTOCOL_41, frame, frames, lenenc  # noqa: E402

CHUNK = 65536
CAPS = CLIENT_PROTOCOL_41 | 0x8000 | 0x80000  # PROTOCOL_41, SECURE_CONNECTION, PLUGIN_AUTH: EOF packets
COLUMNS = [
    {"schema": "shop", "table": "item", "org_table": "item", "name": "id", "org_name": "id",
     "charset": 63, "length": 11, "type": "LONG", "flags": 16899, "decimals": 0},
    {"schema": "shop", "table": "item", "org_table": "item", "name": "name", "org_name": "name",
     "charset": 45, "length": 200, "type": "VAR_STRING", "flags": 0, "decimals": 0},
    {"schema": "shop", "table": "item", "org_table": "item", "name": "price", "org_name": "price",
     "charset": 63, "length": 12, "type": "NEWDECIMAL", "flags": 0, "decimals": 2},
    {"schema": "shop", "table": "item", "org_table": "item", "name": "added", "org_name": "added",
     "charset": 63, "length": 26, "type": "DATETIME", "flags": 0, "decimals": 6},
    {"schema": "shop", "table": "item", "org_table": "item", "name": "note", "org_name": "note",
     "charset": 45, "length": 262140, "type": "BLOB", "flags": 16, "decimals": 0},
]


def resultset(rows: int, note: int) -> tuple[bytes, int]:
    """The server's answer to one query of ``rows`` rows (``note``: bytes of text each)."""
    payloads = [lenenc(len(COLUMNS))] + [p.build_column(c, CAPS) for c in COLUMNS]
    payloads.append(p.build_eof(0, 2))
    for i in range(rows):
        payloads.append(p.build_text_row([i, f"item-{i:06d}", f"{i % 1000}.{i % 100:02d}",
                                          "2024-01-02 03:04:05.678901", "n" * note]))
    payloads.append(p.build_eof(0, 2))
    return frames(payloads, 1)[0], rows


def binary_resultset(rows: int) -> bytes:
    payloads = [lenenc(len(COLUMNS))] + [p.build_column(c, CAPS) for c in COLUMNS]
    payloads.append(p.build_eof(0, 2))
    for i in range(rows):
        payloads.append(p.build_binary_row([i, f"item-{i:06d}", f"{i % 1000}.{i % 100:02d}",
                                            "2024-01-02 03:04:05.678901", "n" * 40], COLUMNS))
    payloads.append(p.build_eof(0, 2))
    return frames(payloads, 1)[0]


def pieces(data: bytes) -> list[bytes]:
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]


def _codec(command: bytes, statement: int | None = None) -> MySQLCodec:
    codec = MySQLCodec()
    codec.authenticated(CAPS)
    if statement is not None:
        from trproxy.protocols.mysql.codec import Statement

        codec.add_statement(statement, Statement("SELECT ...", 0, COLUMNS))
    codec.feed(Direction.CLIENT, frame(command, 0)[0])
    codec.next_event()
    return codec


def decode_ours(chunks: list[bytes], command: bytes = b"\x03SELECT * FROM item") -> int:
    codec = _codec(command, 1 if command[0] == 0x17 else None)
    for chunk in chunks:
        codec.feed(Direction.SERVER, chunk)
    event = codec.next_event()
    assert event is not NEED_DATA and codec.next_event() is NEED_DATA
    return len(event[1]["ResultSet"]["rows"])


def decode_pymysql(chunks: list[bytes]) -> int:
    conn = pymysql.connect(defer_connect=True)
    conn._rfile = io.BytesIO(b"".join(chunks))  # (its reads are served from memory)
    conn._next_seq_id = 1
    conn._current_timeout = conn._read_timeout
    conn.client_flag = CAPS
    conn.server_capabilities = CAPS
    conn.encoding, conn.charset = "utf8", "utf8mb4"
    result = MySQLResult(conn)
    result.read()
    return len(result.rows)


def best(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run(scale: float = 1.0, rounds: int = 3, out=sys.stdout) -> list[dict]:  # type: ignore[no-untyped-def]
    rows_out = []
    print(f"{'decode':40} {'MB':>6} {'ours MB/s':>10} {'PyMySQL':>9} {'ours/PyMySQL':>13}", file=out)
    for name, rows, note in (("text rows, 5 columns, 40 B note", 20_000, 40),
                             ("text rows, 5 columns, 4 KiB note", 2_000, 4096)):
        data, expected = resultset(max(10, int(rows * scale)), note)
        chunks = pieces(data)
        counts = (decode_ours(chunks), decode_pymysql(chunks))
        if counts != (expected, expected):
            raise SystemExit(f"{name}: decoded {counts} rows, expected {expected}")
        mb = len(data) / 1e6
        ours = mb / best(lambda c=chunks: decode_ours(c), rounds)
        ref = mb / best(lambda c=chunks: decode_pymysql(c), rounds)
        rows_out.append({"name": name, "mb": mb, "ours": ours, "pymysql": ref, "ratio": ours / ref})
        print(f"{name:40} {mb:6.2f} {ours:10.1f} {ref:9.1f} {ours / ref:13.2f}", file=out)
    data = binary_resultset(max(10, int(20_000 * scale)))
    chunks = pieces(data)
    mb = len(data) / 1e6
    ours = mb / best(lambda: decode_ours(chunks, b"\x17\x01\0\0\0\0\x01\0\0\0"), rounds)
    rows_out.append({"name": "binary rows (prepared)", "mb": mb, "ours": ours})
    print(f"{'binary rows, 5 columns (no reference)':40} {mb:6.2f} {ours:10.1f}", file=out)
    return rows_out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs, one round")
    args = parser.parse_args(argv if argv is not None else [])
    run(0.05, 1) if args.quick else run()


if __name__ == "__main__":
    main(sys.argv[1:])
