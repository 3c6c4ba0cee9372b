"""Values the app generates in produced Kafka records (issue 12): a uuid4 key, a random
``trace-id`` header and a JSON value with the id, the time and a nonce (its keys in a
random order). Recorded with aiokafka against librdkafka's mock broker, replayed with
the broker stopped: the same output and no miss; the consumer then reads the recorded
Fetch answer rewritten with the live keys and ids. Another quantity still misses, with
a diff showing what was masked. The eBPF redirect brings the clients' connections to
the advertised broker back to the proxy, so this needs root (CI requires it to run)."""

from __future__ import annotations

import os
import re
import sys

import pytest

from tests.support.kafka_broker import KafkaBroker
from tests.support.proc import run_trproxy

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)


def misses(stderr: str) -> int:
    found = re.findall(r"^trproxy: (\d+) misses", stderr, re.MULTILINE)
    assert len(found) == 1, stderr
    return int(found[0])


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):  # type: ignore[no-untyped-def]
    recording = tmp_path_factory.mktemp("kafka-volatile") / "rec"
    broker = KafkaBroker().start()

    def run(mode: str, *args: str):  # type: ignore[no-untyped-def]
        return run_trproxy(mode, "--dir", str(recording), "--", sys.executable, "-m",
                           "tests.e2e.apps.kafka_volatile", broker.bootstrap, "orders", *args,
                           timeout=180)

    try:
        first = run("record")
    finally:
        broker.stop()
    return run, first, (recording / "test-set-0" / "mocks.yaml").read_text()


def test_keys_headers_and_json_values_replay_without_the_broker(recorded) -> None:  # type: ignore[no-untyped-def]
    run, first, mocks = recorded
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == ["produced 0", "produced 1", "consumed True True"]
    assert mocks.count("volatile:") == 2, mocks  # the two Produce requests
    replayed = run("replay")
    assert replayed.stdout == first.stdout, replayed.stderr
    assert misses(replayed.stderr) == 0, replayed.stderr


def test_another_quantity_still_misses(recorded) -> None:  # type: ignore[no-untyped-def]
    run, _first, _mocks = recorded
    replayed = run("replay", "3")
    assert misses(replayed.stderr) >= 1, replayed.stderr
    assert "produced 0" not in replayed.stdout, replayed.stdout
    closest = replayed.stderr[replayed.stderr.index("closest to Produce"):].split("trproxy:")[0]
    assert "<volatile>" in closest and "qty: 2" in closest and "qty: 3" in closest, closest
