"""Mutation fuzzing: whatever the bytes, only ProtocolError may escape the codec, the
recorder and the replayer (the proxy relies on it to stop capturing and keep relaying)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.protocols.postgres.streams import (
    NOT_DECODABLE,
    record,
    start_for,
    vector_chunks,
    vector_names,
)
from trproxy.protocols.base import Direction, Interaction, Interrupt, Lookup, ProtocolError, Pushed
from trproxy.protocols.postgres import PostgresCodec, PostgresRecorder, PostgresReplayer

FUZZED = [n for n in vector_names() if n not in NOT_DECODABLE] + ["zeek-bad-backend-message-1.pcap"]


def mutate(data: bytes, rng: random.Random) -> bytes:
    if not data:
        return bytes([rng.randrange(256)])
    b = bytearray(data)
    i = rng.randrange(len(b))
    op = rng.randrange(6)
    if op == 0:
        b[i] ^= 1 << rng.randrange(8)
    elif op == 1:
        b[i] = rng.choice([0, 0xFF, 0x7F, 0x80, ord("Z"), ord("p")])
    elif op == 2:
        del b[i:i + rng.randrange(1, 16)]
    elif op == 3:
        b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
    elif op == 4:
        j = rng.randrange(len(b))
        b[i:i] = b[j:j + rng.randrange(1, 32)]
    else:  # an extreme length field
        b[i:i + 4] = rng.choice([b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff",
                                 b"\x00\x00\x00\x03", b"\x00\x00\x00\x04"])
    return bytes(b)


def run_codec(chunks, start) -> None:
    codec = PostgresCodec(start=start, max_message_size=1 << 20)
    try:
        for side, data in chunks:
            codec.feed(Direction(side), data)
            codec.events()
    except ProtocolError:
        pass


def run_recorder(chunks, start) -> None:
    recorder = PostgresRecorder(start=start)
    try:
        for side, data in [*chunks, ("client", b""), ("server", b"")]:
            for i in recorder.feed(Direction(side), data):
                assert isinstance(i.request, list) if isinstance(i, Interaction) else isinstance(
                    i, (Pushed, Interrupt))
    except ProtocolError:
        pass


def run_replayer(client: bytes, answers: list[list]) -> None:
    """Client bytes in, in pieces; every Lookup answered from ``answers`` in turn, or missed."""
    replayer = PostgresReplayer()
    n = 0
    try:
        for pos in range(0, len(client), 37):
            for event in replayer.feed(client[pos:pos + 37]):
                if isinstance(event, Lookup):
                    if answers and n % 3 != 2:
                        assert isinstance(replayer.respond(event, answers[n % len(answers)]), bytes)
                    else:
                        assert isinstance(replayer.miss(event, "fuzz"), bytes)
                    n += 1
                else:
                    assert isinstance(event.data, bytes)
    except ProtocolError:
        pass


@pytest.mark.parametrize("name", FUZZED)
def test_mutated_vectors_only_raise_protocol_error(name):
    rng = random.Random(name)  # deterministic per capture
    start = start_for(name)
    for chunks in vector_chunks(name):
        recorded, _ = record(chunks, start)
        answers = [responses for _, responses, _, _ in recorded]
        rounds = 60 if sum(len(d) for _, d in chunks) < 20000 else 12
        for _ in range(rounds):
            k = rng.randrange(len(chunks))
            mutated = list(chunks)
            mutated[k] = (chunks[k][0], mutate(chunks[k][1], rng))
            run_codec(mutated, start)
            run_recorder(mutated, start)
            client = b"".join(d for s, d in mutated if s == "client")
            if start == "startup":
                run_replayer(client, answers)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["client", "server"]), st.binary(min_size=1, max_size=40)),
                max_size=12), st.sampled_from(["startup", "ready", "auto"]))
def test_random_bytes_only_raise_protocol_error(chunks, start):
    run_codec(chunks, start)
    run_recorder(chunks, start)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), st.lists(st.lists(st.dictionaries(
    st.sampled_from(["DataRow", "ReadyForQuery", "CommandComplete", "RowDescription",
                     "ErrorResponse", "ParseComplete", "CopyInResponse", "Bogus"]),
    st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3),
              st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
    min_size=1, max_size=1), max_size=5), max_size=3))
def test_garbage_recordings_only_raise_protocol_error(tail, answers):
    """A hand-edited or corrupted recording must not crash the replayer."""
    startup = (b"\x00\x00\x00\x13\x00\x03\x00\x00user\x00bob\x00\x00"
               b"Q\x00\x00\x00\x0dSELECT 1\x00P\x00\x00\x00\x08\x00x\x00\x00\x00S\x00\x00\x00\x04")
    run_replayer(startup + tail, answers)


readable = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["Query", "Bind", "Parse", "Execute", "Describe", "Sync",
                                       "StartupMessage", "parameters", "query", "statement",
                                       "binary", "hex", "value", "x"]), children, max_size=3),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(readable)
def test_match_key_never_raises_on_hand_edited_recordings(request):
    import json

    from trproxy.protocols.postgres import match_key
    key = match_key(request)
    json.dumps(key)  # the store compares keys as JSON
