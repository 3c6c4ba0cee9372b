"""Record batches: every compression codec (xerial snappy too), CRC checks, bounds."""

from __future__ import annotations

import pytest

from trproxy.protocols.base import DecodeError
from trproxy.protocols.kafka.records import (
    XERIAL_MAGIC,
    crc32c,
    decode_record_set,
    encode_batch,
    encode_record_set,
)
from trproxy.protocols.kafka.schema import Context

RECORDS = [{"timestamp_delta": i, "offset_delta": i, "key": f"k{i}", "value": "v" * 300,
            "headers": [{"key": "trace", "value": {"hex": "00ff"}}]} for i in range(3)]


def batch(compression: str, **extra) -> dict:
    return {"base_offset": 7, "partition_leader_epoch": 0, "compression": compression,
            "timestamp_type": "create", "transactional": False, "control": False,
            "last_offset_delta": 2, "base_timestamp": 1700000000000,
            "max_timestamp": 1700000000002, "producer_id": -1, "producer_epoch": -1,
            "base_sequence": -1, **extra, "records": RECORDS}


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_each_codec_roundtrips(compression):
    raw = encode_record_set([batch(compression)])
    if compression != "none":
        assert len(raw) < 600  # the 900 bytes of values were really compressed
    assert decode_record_set(raw, Context()) == [batch(compression)]


def test_xerial_snappy_as_java_clients_write_it():
    raw = encode_batch(batch("snappy", snappy_framing="xerial"))
    assert XERIAL_MAGIC in raw
    assert decode_record_set(raw, Context()) == [batch("snappy", snappy_framing="xerial")]


def test_crc_mismatch_is_a_decode_error():
    raw = bytearray(encode_batch(batch("none")))
    raw[-1] ^= 0xFF
    with pytest.raises(DecodeError, match="CRC"):
        decode_record_set(bytes(raw), Context())


@pytest.mark.parametrize("compression", ["gzip", "snappy", "lz4", "zstd"])
def test_decompressed_size_is_bounded(compression):
    big = dict(batch(compression), records=[dict(RECORDS[0], value="x" * 100_000)])
    raw = encode_batch(big)
    with pytest.raises(DecodeError, match="beyond"):
        decode_record_set(raw, Context(max_decompressed=10_000))
    assert decode_record_set(raw, Context(max_decompressed=200_000)) == [big]


def test_partial_trailing_batch_is_kept_as_bytes():
    raw = encode_batch(batch("none"))
    entries = decode_record_set(raw + raw[:30], Context())
    assert entries[0] == batch("none")
    assert entries[1] == {"truncated": {"hex": raw[:30].hex()}}
    assert encode_record_set(entries) == raw + raw[:30]


def test_legacy_message_set_is_kept_as_bytes():
    legacy = (0).to_bytes(8, "big") + (14).to_bytes(4, "big") + b"\x00" * 4 + b"\x01" + b"\x00" * 9
    assert decode_record_set(legacy, Context()) == [{"legacy": {"hex": legacy.hex()}, "magic": 1}]
