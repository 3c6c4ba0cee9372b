"""RESP decode/encode throughput of trproxy's Redis codec beside hiredis and redis-py.

Every decoder gets the same bytes in the same 64 KiB pieces (what a socket read
returns): trproxy's ``RedisCodec``, ``hiredis.Reader`` (C) and redis-py's pure-Python
``_RESP2Parser``/``_RESP3Parser`` (fed from memory through its own ``SocketBuffer``).
Each must decode the same number of messages, else the run fails. Encoding compares
requests (``Command`` vs ``hiredis.pack_command`` vs redis-py's ``PythonRespSerializer``);
replies have no reference encoder (clients never send them), so only ours is shown.

Run: ``.venv/bin/python benchmarks/bench_redis.py`` (``--quick`` for a smoke run).
Numbers are MB/s of wire bytes, best of several rounds, and the ratio to hiredis.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import hiredis
from redis._parsers.encoders import Encoder
from redis._parsers.resp2 import _RESP2Parser
from redis._parsers.resp3 import _RESP3Parser
from redis._parsers.socket import SocketBuffer
from redis.connection import PythonRespSerializer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trproxy.protocols.base import NEED_DATA, Direction  # noqa: E402
from trproxy.protocols.redis import Command, RedisCodec  # noqa: E402
from trproxy.protocols.redis.resp import encode_command, encode_value  # noqa: E402

CHUNK = 65536
VECTORS = ROOT.parent / "shared" / "vectors" / "redis"


# --- corpora ---------------------------------------------------------------------------


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


def small_replies(n: int) -> bytes:
    parts = [b"+OK\r\n", b":12345\r\n", _bulk(b"value-0001"), b"$-1\r\n", _bulk(b"x" * 100)]
    return b"".join(parts) * (n // len(parts))


def arrays(n: int) -> bytes:
    one = b"*100\r\n" + _bulk(b"element-0000001") * 100
    return one * n


def large_values(n: int) -> bytes:
    return _bulk(bytes(range(256)) * 4096) * n  # 1 MiB each


def requests(n: int) -> bytes:
    out = []
    for i in range(n):
        out.append(encode_command(Command((b"SET", b"user:%d" % i, b"v" * 32, b"EX", b"60"))))
        out.append(encode_command(Command((b"GET", b"user:%d" % i))))
    return b"".join(out)


def server_bytes(name: str) -> bytes:
    """Server side of a capture's first stream (a dependency of tests.support.pcap: dpkt)."""
    from tests.support.pcap import tcp_streams

    stream = tcp_streams(VECTORS / name)[0]
    return stream.data("server")


def corpora(scale: float) -> list[tuple[str, bytes, int]]:
    """(name, bytes, RESP version) with about 2-4 MB each at scale 1."""
    def times(data: bytes, target: float) -> bytes:
        return data * max(1, int(target * scale / len(data)))

    out = [
        ("small replies (RESP2)", small_replies(max(5, int(100_000 * scale))), 2),
        ("LRANGE arrays 100x15B (RESP2)", arrays(max(1, int(1000 * scale))), 2),
        ("1 MiB values (RESP2)", large_values(max(1, int(4 * scale))), 2),
        ("pipelined SET/GET requests", requests(max(1, int(20_000 * scale))), 2),
    ]
    if VECTORS.is_dir():
        out.append(("COMMAND DOCS, nested (RESP2 capture)",
                    times(server_bytes("zeek-large-requests-responses.pcap"), 3e6), 2))
        # the RESP3 capture: its HELLO map and COMMAND DOCS (maps, sets); pushes left out
        resp3 = server_bytes("zeek-pubsub-resp3.pcap")
        codec = RedisCodec()
        codec.feed(Direction.SERVER, resp3)
        first_two = b"".join(encode_value(codec.next_message()) for _ in range(2))
        out.append(("COMMAND DOCS, maps/sets (RESP3 capture)", times(first_two, 3e6), 3))
    return out


# --- decoders --------------------------------------------------------------------------


def pieces(data: bytes) -> list[bytes]:
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]


def decode_ours(chunks: list[bytes], client: bool) -> int:
    codec = RedisCodec()
    direction = Direction.CLIENT if client else Direction.SERVER
    count = 0
    for chunk in chunks:
        codec.feed(direction, chunk)
        while codec.next_message() is not NEED_DATA:
            count += 1
    return count


def decode_hiredis(chunks: list[bytes], client: bool) -> int:
    reader = hiredis.Reader()
    count = 0
    for chunk in chunks:
        reader.feed(chunk)
        while reader.gets() is not False:
            count += 1
    return count


class _MemorySocket:
    """What redis-py's SocketBuffer needs of a socket, serving bytes from memory."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = iter(chunks)

    def recv(self, size: int) -> bytes:
        return next(self._chunks, b"")

    def settimeout(self, timeout: float | None) -> None:
        pass


def redis_py_decoder(resp: int) -> Callable[[list[bytes], int], int]:
    def decode(chunks: list[bytes], expected: int) -> int:
        parser = (_RESP3Parser if resp == 3 else _RESP2Parser)(CHUNK)
        parser._buffer = SocketBuffer(_MemorySocket(chunks), CHUNK, None)  # type: ignore[arg-type]
        parser.encoder = Encoder("utf-8", "strict", False)
        for _ in range(expected):  # it reads from the "socket" on demand
            parser.read_response(disable_decoding=True)
        return expected

    return decode


def best(fns: list[Callable[[], object]], rounds: int) -> list[float]:
    """Best time of each function; rounds interleave them so load changes hit all alike."""
    times = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            times[i] = min(times[i], time.perf_counter() - start)
    return times


# --- report ----------------------------------------------------------------------------


def run(scale: float = 1.0, rounds: int = 3, out=sys.stdout) -> list[dict]:  # type: ignore[no-untyped-def]
    rows = []
    print(f"{'decode':42} {'MB':>6} {'ours MB/s':>10} {'hiredis':>9} {'redis-py':>9} "
          f"{'ours/hiredis':>13} {'redis-py/hiredis':>17}", file=out)
    for name, data, resp in corpora(scale):
        chunks = pieces(data)
        client = name.startswith("pipelined")
        n_ours = decode_ours(chunks, client)
        n_hiredis = decode_hiredis(chunks, client)
        if n_ours != n_hiredis:
            raise SystemExit(f"{name}: ours decoded {n_ours} messages, hiredis {n_hiredis}")
        redis_py = redis_py_decoder(resp)
        mb = len(data) / 1e6
        t_ours, t_hi, t_py = best([lambda: decode_ours(chunks, client),  # noqa: B023
                                   lambda: decode_hiredis(chunks, client),  # noqa: B023
                                   lambda: redis_py(chunks, n_ours)], rounds)  # noqa: B023
        row = {"name": name, "mb": mb, "ours": mb / t_ours, "hiredis": mb / t_hi, "redis-py": mb / t_py}
        rows.append(row)
        print(f"{name:42} {mb:6.2f} {row['ours']:10.1f} {row['hiredis']:9.1f} {row['redis-py']:9.1f} "
              f"{row['ours'] / row['hiredis']:13.3f} {row['redis-py'] / row['hiredis']:17.3f}", file=out)

    print(f"\n{'encode':42} {'MB':>6} {'ours MB/s':>10} {'hiredis':>9} {'redis-py':>9} "
          f"{'ours/hiredis':>13} {'redis-py/hiredis':>17}", file=out)
    args = [(b"SET", b"user:%d" % i, b"v" * 32, b"EX", b"60") for i in range(max(1, int(20_000 * scale)))]
    commands = [Command(a) for a in args]
    serializer = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)
    size = sum(len(encode_command(c)) for c in commands) / 1e6
    t_ours, t_hi, t_py = best([lambda: [encode_command(c) for c in commands],
                               lambda: [hiredis.pack_command(a) for a in args],
                               lambda: [serializer.pack(*a) for a in args]], rounds)
    row = {"name": "requests (SET k v EX 60)", "mb": size, "ours": size / t_ours,
           "hiredis": size / t_hi, "redis-py": size / t_py}
    rows.append(row)
    print(f"{row['name']:42} {size:6.2f} {row['ours']:10.1f} {row['hiredis']:9.1f} "
          f"{row['redis-py']:9.1f} {row['ours'] / row['hiredis']:13.3f} "
          f"{row['redis-py'] / row['hiredis']:17.3f}", file=out)
    for name, data, _ in corpora(scale):
        if name.startswith("pipelined"):
            continue
        codec = RedisCodec()
        codec.feed(Direction.SERVER, data)
        messages = []
        while (m := codec.next_message()) is not NEED_DATA:
            messages.append(m)
        mb = len(data) / 1e6
        (t,) = best([lambda: [encode_value(m) for m in messages]], rounds)  # noqa: B023
        rows.append({"name": f"replies: {name}", "mb": mb, "ours": mb / t})
        print(f"{'replies: ' + name:42} {mb:6.2f} {mb / t:10.1f} {'n/a':>9} {'n/a':>9}", file=out)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny corpora, one round (smoke run)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args([] if argv is None else argv)  # ``make bench`` calls main()
    run(scale=0.02 if args.quick else 1.0, rounds=1 if args.quick else args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
