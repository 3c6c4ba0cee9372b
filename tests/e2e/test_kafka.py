"""Kafka through the real CLI: ``trproxy record`` a producer and a consumer group against
the librdkafka mock broker, stop the broker, ``trproxy replay`` the same program, and
compare what it printed (produce acknowledgements and consumed messages).

Both real clients: aiokafka and confluent-kafka (librdkafka). The eBPF redirect brings
the clients' connections to the broker addresses from Metadata back to the proxy, so
these tests need root (CI requires them to run).
"""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest

from tests.support.kafka_broker import KafkaBroker
from tests.support.proc import ROOT, run_trproxy

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)

CLIENT = textwrap.dedent("""
    import asyncio, json, sys
    sys.path.insert(0, {root!r})
    from tests.protocols.kafka import capture
    client, bootstrap, tag = sys.argv[1:4]
    if client == "aiokafka":
        seen = asyncio.run(capture.aiokafka_session(bootstrap, "t-" + tag, "g-" + tag))
    else:
        seen = capture.confluent_session(bootstrap, "t-" + tag, "g-" + tag)
    print(json.dumps(seen))
""")


@pytest.mark.parametrize("client", ["aiokafka", "confluent"])
def test_record_then_replay_with_the_broker_stopped(client, tmp_path):
    script = tmp_path / "client.py"
    script.write_text(CLIENT.format(root=str(ROOT)))
    recording = tmp_path / "rec"
    broker = KafkaBroker().start()
    try:
        cmd = [sys.executable, str(script), client, broker.bootstrap, client]
        recorded = run_trproxy("record", "--dir", str(recording), "--", *cmd, timeout=180)
    finally:
        broker.stop()
    assert recorded.returncode == 0, recorded.stderr
    seen = json.loads(recorded.stdout)
    assert [a[:3] for a in seen["acks"]] == [[f"t-{client}", 0, i] for i in range(3)]
    assert [c[:3] for c in seen["consumed"]] == [[m[0].decode(), m[1].decode(), i]
                                                 for i, m in enumerate(_messages())]
    mocks = (recording / "test-set-0" / "mocks.yaml").read_text()
    for api in ("ApiVersions", "Metadata", "Produce", "Fetch", "JoinGroup", "SyncGroup",
                "OffsetCommit"):
        assert f"api: {api}" in mocks, api
    assert "kind: kafka" in mocks

    # the broker is gone: everything now comes from the recording
    replayed = run_trproxy("replay", "--dir", str(recording), "--", *cmd, timeout=180)
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == seen
    # fetching past the recording (timing differs at replay) gets the last recorded answer
    # again, as from a broker, not a miss
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr


def _messages():
    from tests.protocols.kafka.capture import MESSAGES

    return MESSAGES
