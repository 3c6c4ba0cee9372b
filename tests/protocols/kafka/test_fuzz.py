"""Mutation fuzzing: golden streams with bytes flipped, replaced, cut and inserted.
Whatever the codec, recorder or replayer make of them, only ``ProtocolError`` escapes."""

from __future__ import annotations

import random

import pytest

from tests.protocols.kafka.streams import all_streams, drain
from trproxy.protocols.base import Direction, ProtocolError
from trproxy.protocols.kafka import KafkaRecorder, KafkaReplayer
from trproxy.protocols.kafka.codec import KafkaCodec

STREAMS = all_streams()


def mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        i = rng.randrange(len(b)) if b else 0
        if op == 0 and b:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[i] = rng.choice([0x00, 0x01, 0x7F, 0x80, 0xFF])
        elif op == 2:
            b[i:i] = rng.randbytes(rng.randint(1, 4))
        elif op == 3 and b:
            del b[i:i + rng.randint(1, 8)]
        elif b:
            b[i:i + 4] = rng.choice([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x00"])
    return bytes(b)


@pytest.mark.parametrize("seed", range(8))
def test_mutated_streams_raise_only_protocol_errors(seed):
    rng = random.Random(seed)
    runs = 0
    for _name, chunks in STREAMS:
        for _ in range(8):
            target = rng.randrange(len(chunks))
            mutated = [(s, mutate(rng, d) if i == target else d) for i, (s, d) in enumerate(chunks)]
            codec, recorder, replayer = KafkaCodec(max_frame_size=1 << 20), KafkaRecorder(), KafkaReplayer()
            for target_obj in ("codec", "recorder", "replayer"):
                try:
                    for side, data in mutated:
                        if target_obj == "codec":
                            codec.feed(Direction(side), data)
                            drain(codec)
                        elif target_obj == "recorder":
                            recorder.feed(Direction(side), data)
                        elif side == "client":
                            for event in replayer.feed(data):
                                replayer.miss(event, "fuzz")
                    if target_obj == "recorder":
                        recorder.feed(Direction.CLIENT, b"")
                except ProtocolError:
                    pass
            runs += 1
    assert runs == 8 * len(STREAMS)


def test_error_state_is_final():
    codec = KafkaCodec()
    codec.feed(Direction.CLIENT, b"\xff\xff\xff\xff")
    with pytest.raises(ProtocolError):
        codec.next_message()
    with pytest.raises(ProtocolError):
        codec.feed(Direction.CLIENT, b"\x00")
    with pytest.raises(ProtocolError):
        codec.next_message()


def test_frame_size_is_bounded():
    codec = KafkaCodec(max_frame_size=1000)
    codec.feed(Direction.CLIENT, (1001).to_bytes(4, "big"))
    with pytest.raises(ProtocolError, match="frame size"):
        codec.next_message()


def test_close_inside_a_frame_is_an_error():
    codec = KafkaCodec()
    codec.feed(Direction.CLIENT, (20).to_bytes(4, "big") + b"\x00\x12")
    codec.feed(Direction.CLIENT, b"")
    with pytest.raises(ProtocolError, match="closed inside"):
        codec.next_message()


def test_response_to_nothing_is_an_error():
    codec = KafkaCodec()
    codec.feed(Direction.SERVER, (8).to_bytes(4, "big") + (5).to_bytes(4, "big") + b"\x00\x00\x00\x00")
    with pytest.raises(ProtocolError, match="answers no request"):
        codec.next_message()
