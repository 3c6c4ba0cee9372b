"""Golden streams for the Kafka codec tests, and decoding them as fed (cut them with
``tests.support.chunking``).

Streams come from two places: the DeepFlow captures in ``shared/vectors/kafka`` (with
DeepFlow's decoded ``.result`` files) and the captures made here from the librdkafka mock
broker with aiokafka and confluent-kafka (``data/*.json``, see ``capture.py``).
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.protocols.kafka.capture import DATA, load
from tests.support.chunking import Chunks
from tests.support.pcap import VECTORS, tcp_streams
from trproxy.protocols.base import NEED_DATA, Direction
from trproxy.protocols.kafka.codec import KafkaCodec

VECTOR_FILES = sorted((VECTORS / "kafka").glob("*.pcap"))
CAPTURE_FILES = sorted(DATA.glob("*.json"))


def vector_streams(path: Path) -> list[Chunks]:
    return [s.chunks for s in tcp_streams(path, server_port=9092)]


def capture_streams(path: Path) -> list[Chunks]:
    return load(path)[0]


def all_streams() -> list[tuple[str, Chunks]]:
    out = []
    for p in VECTOR_FILES:
        out += [(f"{p.name}#{i}", s) for i, s in enumerate(vector_streams(p))]
    for p in CAPTURE_FILES:
        out += [(f"{p.name}#{i}", s) for i, s in enumerate(capture_streams(p))]
    return out


def drain(codec: KafkaCodec) -> list:
    out = []
    while (m := codec.next_message()) is not NEED_DATA:
        out.append(m)
    return out


def decode(chunks: Chunks, **codec_args) -> list:
    """Every message, the chunks fed to one codec as they are cut."""
    codec = KafkaCodec(**codec_args)
    out = []
    for side, data in chunks:
        codec.feed(Direction(side), data)
        out += drain(codec)
    return out


# -- DeepFlow .result files -------------------------------------------------------------

_FIELD = re.compile(r'(\w+): (Some\(("?)(.*?)\3\)|None|"(.*?)"|[\w-]+)')


def parse_result(path: Path) -> list[dict]:
    """One dict per ``KafkaInfo`` line: msg_type, correlation_id, api_key, api_version..."""
    out = []
    for line in path.read_text().splitlines():
        if not line.startswith("KafkaInfo"):
            continue
        fields: dict = {}
        for m in _FIELD.finditer(line):
            name, raw = m.group(1), m.group(2)
            if raw == "None":
                value = None
            elif raw.startswith("Some("):
                value = m.group(4)
            elif raw.startswith('"'):
                value = m.group(5)
            else:
                value = raw
            fields.setdefault(name, value)
        out.append(fields)
    return out
