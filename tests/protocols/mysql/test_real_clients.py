"""Real clients against a real MariaDB through a tee relay, then against the replayer.

Each scenario (``my_scenario``) runs once through ``Relay`` (bytes to MariaDB, teed into
``MySQLRecorder``), then against ``ReplayServer`` (``MySQLReplayer`` + the recorded
interactions in the real store, after a trip through YAML): the client prints the same.
The captured streams also decode the same whole, byte by byte and split anywhere.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.chunking import CLOSE, Chunks, bytewise, offsets, split_at, total
from tests.support.replay_server import ReplayServer
from tests.support.services import MariaDBServer
from tests.support.tee import Relay
from trproxy.protocols.base import NEED_DATA, Direction, ProtocolError
from trproxy.protocols.mysql import MySQLCodec, MySQLRecorder

pytestmark = pytest.mark.slow


def run(client: str, port: int) -> str:
    done = subprocess.run([sys.executable, "-m", "tests.protocols.mysql.my_scenario", client,
                           "127.0.0.1", str(port)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def decode(chunks: Chunks) -> tuple[list, str | None]:
    codec = MySQLCodec()
    events: list = []
    try:
        for side, data in chunks + CLOSE:
            codec.feed(Direction(side), data)
            while (event := codec.next_event()) is not NEED_DATA:
                events.append(event)
    except ProtocolError as exc:
        return events, f"{type(exc).__name__}: {exc}"
    return events, None


def record(chunks: Chunks) -> tuple[list, str | None]:
    recorder = MySQLRecorder()
    out: list = []
    try:
        for side, data in chunks + CLOSE:
            out += [(i.request, i.responses, i.lifetime) for i in recorder.feed(Direction(side), data)]
    except ProtocolError as exc:
        return out, str(exc)
    return out, None


@pytest.fixture(scope="module")
def captured():
    """PyMySQL (text protocol, multi-results) and mysql-connector-python (prepared
    statements) through the tee, once for the module, against a MariaDB without TLS (the
    session's offers it, and PyMySQL takes it: the tee reads no TLS)."""
    server = MariaDBServer().start()
    relay = Relay((server.host, server.port), recorder=MySQLRecorder).start()
    try:
        printed = {client: run(client, relay.port) for client in ("pymysql", "connector")}
        relay.wait()
    finally:
        relay.close()
        server.destroy()
    assert [s.error for s in relay.streams] == [None] * len(relay.streams)
    return printed, relay


def test_replayer_answers_real_clients_as_the_server_did(captured) -> None:
    printed, relay = captured
    replay = ReplayServer("mysql", relay.interactions()).start()
    try:
        replayed = {client: run(client, replay.port) for client in printed}
    finally:
        replay.close()
    assert replay.errors == []
    assert replayed == printed
    assert replay.misses == []
    execute = [i for i in relay.interactions() if "COM_STMT_EXECUTE" in i.request]
    assert execute and all("statement" not in i.request["COM_STMT_EXECUTE"] for i in execute)


def test_decoding_does_not_depend_on_how_tcp_cut_the_bytes(captured) -> None:
    _printed, relay = captured
    for stream in relay.streams:
        chunks = stream.data_chunks()
        expected = decode(chunks)
        assert expected[1] is None and expected[0]
        assert decode(bytewise(chunks)) == expected
        interactions = record(chunks)
        assert interactions[1] is None and interactions[0]
        assert record(bytewise(chunks)) == interactions
        for offset in offsets(total(chunks), every_up_to=600, samples=200, ends=3):
            assert record(split_at(chunks, offset)) == interactions
