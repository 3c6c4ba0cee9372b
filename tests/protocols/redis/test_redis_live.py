"""Real redis-server, real redis-py (RESP2 and RESP3): record through a tee relay, replay.

A loopback relay keeps every byte redis-py and redis-server exchange. Each connection's
bytes must record without error and pair correctly - checked by replaying that
connection's client bytes against its own recording, which must give back exactly the
server's bytes. Then the server is stopped and the same redis-py scenario runs against a
loopback replay server built on ``RedisReplayer``: every result must be identical.
"""

from __future__ import annotations

import pytest

from tests.protocols.redis.redis_scenario import scenario
from tests.protocols.redis.redis_support import record, redis_offsets
from tests.support.chunking import bytewise, side_bytes, split_at
from tests.support.recording import capture
from tests.support.replay_server import Mocks, ReplayServer
from tests.support.tee import Relay
from trproxy.protocols.credentials import hashed
from trproxy.protocols.redis import RedisReplayer
from trproxy.proxy.context import Mode, RunContext

redis = pytest.importorskip("redis")

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("protocol", [2, 3])
def test_redis_py_records_pairs_and_replays(redis_server, protocol: int) -> None:
    relay = Relay(("127.0.0.1", redis_server.port)).start()
    try:
        recorded = scenario(relay.port, protocol)
        relay.wait()
    finally:
        relay.close()
    connections = [s.data_chunks() for s in relay.streams]
    assert len(connections) >= 3
    everything = []
    ctx = RunContext(Mode.RECORD)  # one run: the connections' requests numbered in turn
    for chunks in connections:
        rec = record(chunks)
        assert rec.error is None and rec.unanswered == []
        total = sum(len(d) for _, d in chunks)
        cuts = [bytewise(chunks)] if total < 100_000 else [split_at(chunks, k) for k in redis_offsets(total)]
        for variant in cuts:  # how TCP cut the bytes does not matter
            assert record(variant).plain() == rec.plain()
        client, server = side_bytes(chunks, "client"), side_bytes(chunks, "server")
        # pairing is right iff replaying this connection (recorded as the proxy records,
        # pushed messages as events) gives back the server's bytes
        exchanges = capture(chunks, ctx=ctx)
        assert Mocks("redis", exchanges).replay_bytes(RedisReplayer(), client) == server
        everything += exchanges

    requests = [i.request for i in everything if not i.event]
    assert ["CLIENT", "REPLY", "OFF"] in requests and ["SET", "silent", "1"] in requests
    silent = next(i for i in everything if i.request == ["SET", "silent", "1"])
    assert silent.responses == []
    queued = [i for i in everything if i.responses == [{"simple": "QUEUED"}]]
    assert len(queued) == 5
    messages = [r for i in everything if i.event == "push" for r in i.responses if "message" in str(r)]
    assert len(messages) == 2

    redis_server.stop()  # replay never touches the network
    server = ReplayServer("redis", everything).start()
    try:
        replayed = scenario(server.port, protocol)
    finally:
        server.close()
    assert server.errors == []
    assert replayed == recorded
    assert server.misses == []


def test_password_never_reaches_the_recording(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import yaml

    from tests.support.services import RedisServer

    server = RedisServer(password="hunter2-secret").start()
    try:
        relay = Relay(("127.0.0.1", server.port)).start()
        for protocol in (2, 3):
            client = redis.Redis(port=relay.port, password="hunter2-secret", protocol=protocol)
            assert client.set("k", "v")
            client.close()
        wrong = redis.Connection(port=relay.port, password="wrong-pw-42", protocol=2)
        with pytest.raises(redis.AuthenticationError):  # the connection, not Redis: no retries
            wrong.connect()
        wrong.disconnect()
        relay.wait()
        relay.close()
    finally:
        server.destroy()
    interactions = [i for s in relay.streams for i in record(s.data_chunks()).interactions]
    text = yaml.safe_dump([{"request": i.request, "responses": i.responses} for i in interactions])
    assert "hunter2" not in text and "wrong-pw-42" not in text
    secret = hashed(b"hunter2-secret", "redis default")
    assert ["AUTH", secret] in [i.request for i in interactions]
    assert ["HELLO", "3", "AUTH", "default", secret] in [i.request for i in interactions]
    # replay: logins are matched on their (hashed) credentials
    replay = ReplayServer("redis", interactions).start()
    try:
        for protocol in (2, 3):
            client = redis.Redis(port=replay.port, password="hunter2-secret", protocol=protocol)
            assert client.set("k", "v")
            client.close()
            refused = redis.Redis(port=replay.port, password="another-one", protocol=protocol)
            with pytest.raises(redis.AuthenticationError, match="no recording for (AUTH|HELLO)"):
                refused.set("k", "v")
            refused.close()
        wrong = redis.Connection(port=replay.port, password="wrong-pw-42", protocol=2)
        with pytest.raises(redis.AuthenticationError, match="invalid username-password pair"):
            wrong.connect()  # the recorded refusal, for the same wrong password
        wrong.disconnect()
    finally:
        replay.close()
    assert {m["request"] for m in replay.misses} == {"AUTH", "HELLO"}  # logins only; redis-py retries


def test_replay_miss_is_a_redis_error_and_handshakes_are_synthesized() -> None:
    replay = ReplayServer("redis").start()
    try:
        for protocol in (2, 3):
            client = redis.Redis(port=replay.port, protocol=protocol, client_name="app")
            with pytest.raises(redis.ResponseError, match="trproxy: no recording for GET k"):
                client.get("k")
            assert client.ping()
            client.close()
            with pytest.raises(redis.AuthenticationError):  # credentials nobody recorded
                redis.Redis(port=replay.port, protocol=protocol, password="x").ping()
    finally:
        replay.close()
