"""A real Kafka broker for tests: the librdkafka mock cluster in a child process.

The confluent-kafka wheel bundles librdkafka, whose mock cluster speaks the Kafka
protocol well enough for producers, consumer groups and offset commits. A producer
created with ``test.mock.num.brokers=1`` starts it inside the creating process; the
child prints the broker's ``host:port`` (from its own Metadata) and stays alive until
terminated, so the broker lives exactly as long as that child.

The mock broker always binds ``127.0.0.1:0`` (``rd_kafka_mock_broker_new`` in
``rdkafka_mock.c``): its port cannot be fixed from the Python client, so a stopped
broker cannot come back at the same address. Replay tests do not need it to.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass

from tests.support.services import ends_with_tests

_CHILD = r"""
import signal, sys
import confluent_kafka
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM, signal.SIGINT])
producer = confluent_kafka.Producer({
    "test.mock.num.brokers": 1, "bootstrap.servers": "127.0.0.1:1", "log_level": 3,
})
metadata = producer.list_topics(timeout=20)
broker = next(iter(metadata.brokers.values()))
print(f"{broker.host}:{broker.port}", flush=True)
signal.sigwait([signal.SIGTERM, signal.SIGINT])
"""


@dataclass
class KafkaBroker:
    """``KafkaBroker().start()``; ``.bootstrap`` is ``"127.0.0.1:PORT"``; ``.stop()``."""

    bootstrap: str = ""
    proc: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return self.bootstrap.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.bootstrap.rsplit(":", 1)[1])

    def start(self, timeout: float = 30.0) -> KafkaBroker:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, preexec_fn=ends_with_tests(),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line:
            self.stop()
            raise RuntimeError("the librdkafka mock broker did not start")
        host, port = line.rsplit(":", 1)
        if not (host.startswith("127.") or host == "::1"):
            self.stop()
            raise RuntimeError(f"mock broker is not on loopback: {line}")
        self.bootstrap = f"{host}:{int(port)}"
        return self

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
