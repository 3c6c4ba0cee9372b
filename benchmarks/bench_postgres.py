"""PostgreSQL codec throughput on recorded pgbench traffic, beside a bare frame splitter.

Corpora are captured from a real server here, through an in-bench TCP relay that keeps
every chunk in wire order (what the proxy's reads would see):

* ``pgbench-init``: ``pgbench -i`` (DDL and a COPY of 100 000 rows: client-heavy);
* ``select-simple``: ``pgbench -S -M simple`` (Query -> RowDescription/DataRow/...);
* ``select-prepared``: ``pgbench -S -M prepared`` (Bind/Execute/Sync batches).

Contenders, fed the same chunks:

* ``splitter`` (reference, the lower bound): a minimal ``struct`` length-prefix frame
  splitter - one buffer per side, the startup packet and the SSLRequest answer byte
  handled, each frame sliced out as bytes, no message objects;
* ``codec``: ``PostgresCodec`` decoding every message to its dataclass;
* ``recorder``: ``PostgresRecorder`` - decoding, grouping and the readable form
  (what record mode costs);
* ``replayer``: ``PostgresReplayer`` fed the client side, answering every Lookup from
  the recording through ``match_key`` (what replay mode costs, without sockets).

Numbers are MB/s of wire bytes and messages/s, best of several rounds, and each
contender's time as a multiple of the splitter's on the same bytes (1.00x = as fast as
bare framing; 8x = eight times slower). Run:
``.venv/bin/python benchmarks/bench_postgres.py`` (``--quick`` for a smoke run,
``--transactions N`` for the pgbench runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import struct
import sys
import threading
import time
from collections.abc import Callable

from benchmarks.common import check  # noqa: E402  (puts ROOT on sys.path)
from tests.support.services import PostgresServer, _pg_bindir  # noqa: E402
from trproxy.protocols.base import NEED_DATA, Direction, Lookup  # noqa: E402
from trproxy.protocols.postgres import (  # noqa: E402
    PostgresCodec,
    PostgresRecorder,
    PostgresReplayer,
    match_key,
)

Chunks = list[tuple[str, bytes]]


# --- capture ------------------------------------------------------------------------------


class Relay:
    """Loopback relay to the server; keeps each connection's chunks in wire order."""

    def __init__(self, port: int) -> None:
        self.upstream = port
        self.port = 0
        self.streams: list[Chunks] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> Relay:
        self.thread.start()

        async def start() -> None:
            self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
            self.port = self.server.sockets[0].getsockname()[1]

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            self.server.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunks: Chunks = []
        self.streams.append(chunks)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, side: str) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    chunks.append((side, data))
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, "client"), pipe(up_reader, writer, "server"))


def capture(transactions: int) -> dict[str, list[Chunks]]:
    server = PostgresServer().start()
    pgbench = str(_pg_bindir() / "pgbench")
    env = dict(os.environ, PGPASSWORD=server.password, PGSSLMODE="disable")
    corpora: dict[str, list[Chunks]] = {}
    try:
        runs = {"pgbench-init": ["-i", "-q"],
                "select-simple": ["-S", "-M", "simple", "-t", str(transactions)],
                "select-prepared": ["-S", "-M", "prepared", "-t", str(transactions)]}
        for name, args in runs.items():
            with Relay(server.port) as relay:
                check([pgbench, "-h", "127.0.0.1", "-p", str(relay.port), "-U", server.user,
                       *args, server.dbname], env, 300)
                time.sleep(0.2)  # let the relay see both sides close
            corpora[name] = [s for s in relay.streams if s]
    finally:
        server.destroy()
    return corpora


# --- contenders --------------------------------------------------------------------------

_LEN = struct.Struct("!i")


def splitter(streams: list[Chunks]) -> int:
    """The reference: cut frames by their length prefix, nothing else."""
    frames = 0
    for chunks in streams:
        buf = {"client": b"", "server": b""}
        startup, ssl_answer = True, False
        for side, data in chunks:
            b = buf[side] + data
            pos = 0
            while True:
                if side == "server" and ssl_answer:
                    ssl_answer, pos, frames = False, pos + 1, frames + 1
                    continue
                if side == "client" and startup:
                    if len(b) - pos < 8:
                        break
                    n = _LEN.unpack_from(b, pos)[0]
                    if len(b) - pos < n:
                        break
                    startup = _LEN.unpack_from(b, pos + 4)[0] == 80877103  # SSLRequest
                    ssl_answer = startup
                    pos, frames = pos + n, frames + 1
                    continue
                if len(b) - pos < 5:
                    break
                n = _LEN.unpack_from(b, pos + 1)[0]
                if len(b) - pos < n + 1:
                    break
                _frame = b[pos:pos + 1 + n]
                pos, frames = pos + 1 + n, frames + 1
            buf[side] = b[pos:]
    return frames


def codec(streams: list[Chunks]) -> int:
    messages = 0
    for chunks in streams:
        c = PostgresCodec(start="startup")
        for side, data in chunks:
            c.feed(Direction(side), data)
            while c.next_event() is not NEED_DATA:
                messages += 1
    return messages


def recorder(streams: list[Chunks]) -> int:
    n = 0
    for chunks in streams:
        r = PostgresRecorder()
        for side, data in chunks:
            n += len(r.feed(Direction(side), data))
    return n


_AUTH_ANSWERS = ("PasswordMessage", "SASLInitialResponse", "SASLResponse", "GSSResponse")


def replay_client(chunks: Chunks) -> list[bytes]:
    """The client's side as a replayed client sends it: no authentication answers (the
    replayer never asks for a password), in the captured pieces."""
    c = PostgresCodec(start="startup")
    out = []
    for side, data in chunks:
        c.feed(Direction(side), data)
        piece = b""
        while (event := c.next_event()) is not NEED_DATA:
            d, msg = event  # type: ignore[misc]
            if d is Direction.CLIENT and type(msg).__name__ not in _AUTH_ANSWERS:
                piece += c.encode(msg)
        if piece:
            out.append(piece)
    return out


def make_replayer(streams: list[Chunks]) -> tuple[Callable[[list[Chunks]], int], list]:
    answers: dict[str, list] = {}
    for chunks in streams:
        r = PostgresRecorder()
        for side, data in chunks:
            for i in r.feed(Direction(side), data):
                answers.setdefault(json.dumps(match_key(i.request), sort_keys=True), i.responses)
    clients = [replay_client(chunks) for chunks in streams]

    def replayer(_: list[Chunks]) -> int:
        n = 0
        for pieces in clients:
            rp = PostgresReplayer()
            for data in pieces:
                for event in rp.feed(data):
                    if isinstance(event, Lookup):
                        found = answers.get(json.dumps(match_key(event.request), sort_keys=True))
                        rp.respond(event, found) if found is not None else rp.miss(event, "-")
                        n += 1
        return n

    return replayer, clients


def best(fn: Callable[[list[Chunks]], int], streams: list[Chunks], rounds: int) -> tuple[float, int]:
    times, result = [], 0
    for _ in range(rounds):
        start = time.perf_counter()
        result = fn(streams)
        times.append(time.perf_counter() - start)
    return min(times), result


def run(transactions: int, rounds: int) -> None:
    corpora = capture(transactions)
    print(f"{'corpus':16} {'contender':10} {'MB/s':>8} {'msg/s':>11} {'time/splitter':>14}")
    for name, streams in corpora.items():
        size = sum(len(d) for s in streams for _, d in s)
        base, frames = best(splitter, streams, rounds)
        t_codec, messages = best(codec, streams, rounds)
        if messages != frames:
            raise SystemExit(f"{name}: codec decoded {messages} messages, splitter {frames}")
        replay, _ = make_replayer(streams)
        rows = [("splitter", base), ("codec", t_codec),
                ("recorder", best(recorder, streams, rounds)[0]),
                ("replayer", best(replay, streams, rounds)[0])]
        print(f"-- {name}: {size / 1e6:.2f} MB, {frames} messages, {len(streams)} connection(s)")
        for contender, t in rows:
            print(f"{'':16} {contender:10} {size / t / 1e6:8.1f} {frames / t:11,.0f} "
                  f"{t / base:11.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short pgbench runs, one round")
    parser.add_argument("--transactions", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args, _ = parser.parse_known_args(argv if argv is not None else [])
    run(transactions=200 if args.quick else args.transactions, rounds=1 if args.quick else args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
