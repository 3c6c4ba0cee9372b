"""Kafka record sets: record batches (magic 2) decoded, legacy message sets kept opaque.

Spec: https://kafka.apache.org/documentation/#recordbatch. A record set (the ``records``
field of Produce and Fetch) is a sequence of entries that all start with
``baseOffset int64, length int32``; byte 16 is the magic. Magic 2 batches are decoded:

    baseOffset int64, batchLength int32, partitionLeaderEpoch int32, magic int8,
    crc uint32 (CRC-32C of everything after it), attributes int16, lastOffsetDelta int32,
    baseTimestamp int64, maxTimestamp int64, producerId int64, producerEpoch int16,
    baseSequence int32, recordCount int32, records (compressed as a whole if
    attributes & 7 != 0)

and each record: ``length varint, attributes int8, timestampDelta varlong, offsetDelta
varint, key varint-bytes, value varint-bytes, headers [varint count](key, value)``.

Readable form: a list of entries, each one of
``{base_offset, ..., compression, records: [{offset_delta, timestamp_delta, key, value,
headers}]}`` (a batch), ``{legacy: blob, magic: 0|1}`` (message set v0/v1, opaque) or
``{truncated: blob}`` (a partial trailing batch, which brokers may send in a Fetch
response when the size limit cuts one). Encoding recomputes lengths and the CRC;
compressed batches are recompressed with the same codec (so the bytes may differ from
the original, the records do not). Snappy keeps the framing it came with: raw (librdkafka)
or xerial (Java clients). Decompressed sizes are bounded by ``Context.max_decompressed``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

from ..base import DecodeError, EncodeError, blob, unblob
from .primitives import Reader, Writer

_crc32c_fast: Callable[[bytes], int] | None
try:  # a C implementation when installed; the table below otherwise
    from crc32c import crc32c as _crc32c_fast
except ImportError:  # pragma: no cover - depends on the environment
    _crc32c_fast = None

COMPRESSION = ("none", "gzip", "snappy", "lz4", "zstd")
TIMESTAMP_TYPES = ("create", "log_append")
XERIAL_MAGIC = b"\x82SNAPPY\x00"
_ENTRY_HEADER = 12  # baseOffset + length
_BATCH_OVERHEAD = 49  # magic-2 header size after baseOffset/length: 61 - 12

_TABLE: list[int] = []


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as record batches use."""
    if _crc32c_fast is not None:
        return _crc32c_fast(data)
    if not _TABLE:
        for n in range(256):
            c = n
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            _TABLE.append(c)
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# -- decoding -----------------------------------------------------------------------------

def decode_record_set(data: bytes, ctx: Any) -> list:
    limit = getattr(ctx, "max_decompressed", 64 << 20)
    out: list = []
    pos = 0
    while pos < len(data):
        left = len(data) - pos
        if left < _ENTRY_HEADER + 5:
            out.append({"truncated": {"hex": data[pos:].hex()}})
            break
        r = Reader(data, pos)
        r.int64()
        length = r.int32()
        if length < 5:  # every entry holds at least a 4-byte epoch/CRC and the magic
            raise DecodeError(f"record batch length {length} is too short")
        if left < _ENTRY_HEADER + length:
            out.append({"truncated": {"hex": data[pos:].hex()}})
            break
        entry = data[pos:pos + _ENTRY_HEADER + length]
        magic = entry[16]
        if magic == 2:
            out.append(decode_batch(entry, limit))
        elif magic in (0, 1):
            out.append({"legacy": {"hex": entry.hex()}, "magic": magic})
        else:
            raise DecodeError(f"unknown record batch magic {magic}")
        pos += _ENTRY_HEADER + length
    return out


def decode_batch(entry: bytes, limit: int) -> dict:
    r = Reader(entry)
    base_offset = r.int64()
    length = r.int32()
    if length < _BATCH_OVERHEAD:
        raise DecodeError(f"record batch length {length} is below its header size")
    leader_epoch = r.int32()
    r.int8()  # magic, checked by the caller
    crc = r.uint32()
    if crc32c(entry[21:]) != crc:
        raise DecodeError(f"record batch at offset {base_offset}: CRC-32C mismatch")
    attributes = r.int16()
    batch: dict[str, Any] = {"base_offset": base_offset, "partition_leader_epoch": leader_epoch}
    codec = attributes & 0x07
    if codec >= len(COMPRESSION):
        raise DecodeError(f"unknown compression codec {codec}")
    batch["compression"] = COMPRESSION[codec]
    batch["timestamp_type"] = TIMESTAMP_TYPES[(attributes >> 3) & 1]
    batch["transactional"] = bool(attributes & 0x10)
    batch["control"] = bool(attributes & 0x20)
    if attributes & ~0x3F:
        batch["attributes_rest"] = attributes & ~0x3F  # delete horizon and future bits
    batch["last_offset_delta"] = r.int32()
    batch["base_timestamp"] = r.int64()
    batch["max_timestamp"] = r.int64()
    batch["producer_id"] = r.int64()
    batch["producer_epoch"] = r.int16()
    batch["base_sequence"] = r.int32()
    count = r.int32()
    payload = r.take(r.remaining())
    if codec:
        payload, framing = decompress(codec, payload, limit)
        if framing:
            batch["snappy_framing"] = framing
    if count < 0 or count > len(payload):
        raise DecodeError(f"record count {count} does not fit {len(payload)} bytes")
    rr = Reader(payload)
    batch["records"] = [_decode_record(rr) for _ in range(count)]
    if rr.remaining():
        raise DecodeError(f"{rr.remaining()} bytes after the last record of a batch")
    return batch


def _zigzag(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """A signed varint at ``pos``: (value, next pos). One-byte values take the fast path."""
    if pos < end:
        b = buf[pos]
        if b < 0x80:
            return (b >> 1) ^ -(b & 1), pos + 1
    r = Reader(buf, pos, end)
    value = r.varlong()
    return value, r.pos


def _text_or_blob(raw: bytes) -> Any:
    """``blob(raw)``, with the common case (printable UTF-8) first."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"hex": raw.hex()}
    return text if text.isprintable() else blob(raw)


def _varbytes(buf: bytes, pos: int, end: int) -> tuple[Any, int]:
    n, pos = _zigzag(buf, pos, end)
    if n == -1:
        return None, pos
    if n < 0 or pos + n > end:
        raise DecodeError(f"record field of {n} bytes with {end - pos} left")
    return _text_or_blob(buf[pos:pos + n]), pos + n


def _decode_record(r: Reader) -> dict:
    # length varint, attributes int8, timestampDelta varlong, offsetDelta varint,
    # key, value (varint length, -1 = null), headers (varint count of key/value pairs)
    buf = r.buf
    length, pos = _zigzag(buf, r.pos, r.end)
    if length < 1 or pos + length > r.end:
        raise DecodeError(f"record length {length} with {r.end - pos} bytes left")
    end = pos + length
    r.pos = end
    attributes = buf[pos] - 256 if buf[pos] > 127 else buf[pos]
    rec: dict[str, Any] = {"attributes": attributes} if attributes else {}
    rec["timestamp_delta"], pos = _zigzag(buf, pos + 1, end)
    offset_delta, pos = _zigzag(buf, pos, end)
    if not -(1 << 31) <= offset_delta < (1 << 31):
        raise DecodeError("offset delta out of int32 range")
    rec["offset_delta"] = offset_delta
    rec["key"], pos = _varbytes(buf, pos, end)
    rec["value"], pos = _varbytes(buf, pos, end)
    n, pos = _zigzag(buf, pos, end)
    if n < 0 or n > end - pos:
        raise DecodeError(f"record header count {n}")
    headers = []
    for _ in range(n):
        key, pos = _varbytes(buf, pos, end)
        if key is None:
            raise DecodeError("record header with a null key")
        value, pos = _varbytes(buf, pos, end)
        headers.append({"key": key, "value": value})
    rec["headers"] = headers
    if pos != end:
        raise DecodeError(f"{end - pos} bytes left inside a record")
    return rec


def decompress(codec: int, data: bytes, limit: int) -> tuple[bytes, str | None]:
    """Inflate one batch's records; (bytes, snappy framing or None). Bounded by ``limit``."""
    name = COMPRESSION[codec]
    try:
        if name == "gzip":
            d = zlib.decompressobj(wbits=31)
            out = d.decompress(data, limit + 1)
            if len(out) > limit or d.unconsumed_tail:
                raise DecodeError(f"gzip batch inflates beyond {limit} bytes")
            return out, None
        if name == "snappy":
            import cramjam

            if data.startswith(XERIAL_MAGIC):
                return _xerial_decode(data, limit), "xerial"
            if _snappy_len(data) > limit:
                raise DecodeError(f"snappy batch inflates beyond {limit} bytes")
            return bytes(cramjam.snappy.decompress_raw(data)), None
        if name == "lz4":
            import lz4.frame

            dec = lz4.frame.LZ4FrameDecompressor()
            out = dec.decompress(data, max_length=limit + 1)
            if len(out) > limit or not dec.eof:
                raise DecodeError(f"lz4 batch inflates beyond {limit} bytes or is cut short")
            return out, None
        if name == "zstd":
            import zstandard

            chunks, size = [], 0
            with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as rd:
                while size <= limit:
                    chunk = rd.read(limit + 1 - size)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    size += len(chunk)
            if size > limit:
                raise DecodeError(f"zstd batch inflates beyond {limit} bytes")
            return b"".join(chunks), None
    except DecodeError:
        raise
    except Exception as e:  # the codecs raise their own error types
        raise DecodeError(f"cannot decompress {name} batch: {e}") from None
    raise DecodeError(f"unknown compression {codec}")


def _snappy_len(data: bytes) -> int:
    """The uncompressed length a raw snappy block announces (its leading uvarint)."""
    r = Reader(data)
    return r.uvarint()


def _xerial_decode(data: bytes, limit: int) -> bytes:
    import cramjam

    # xerial snappy-java framing: 8-byte magic, int32 version, int32 compatible version,
    # then blocks of (int32 size, raw snappy)
    r = Reader(data, 16)
    out = bytearray()
    while r.remaining():
        block = r.take(r.int32())
        if len(out) + _snappy_len(block) > limit:
            raise DecodeError(f"snappy batch inflates beyond {limit} bytes")
        out += cramjam.snappy.decompress_raw(block)
    return bytes(out)


# -- encoding -----------------------------------------------------------------------------

def encode_record_set(entries: Any) -> bytes:
    if not isinstance(entries, list):
        raise EncodeError(f"a record set needs a list, got {entries!r}")
    out = bytearray()
    for entry in entries:
        if not isinstance(entry, dict):
            raise EncodeError(f"record set entry needs a mapping, got {entry!r}")
        if "legacy" in entry:
            out += unblob(entry["legacy"])
        elif "truncated" in entry:
            out += unblob(entry["truncated"])
        else:
            out += encode_batch(entry)
    return bytes(out)


def encode_batch(batch: dict) -> bytes:
    try:
        codec = COMPRESSION.index(batch.get("compression", "none"))
        ts_type = TIMESTAMP_TYPES.index(batch.get("timestamp_type", "create"))
    except ValueError as e:
        raise EncodeError(f"bad batch attributes: {e}") from None
    attributes = (codec | ts_type << 3 | bool(batch.get("transactional")) << 4
                  | bool(batch.get("control")) << 5 | batch.get("attributes_rest", 0))
    records = batch.get("records", [])
    if not isinstance(records, list):
        raise EncodeError("batch records need a list")
    body = Writer()
    for rec in records:
        _encode_record(body, rec)
    payload = body.getvalue()
    if codec:
        payload = compress(codec, payload, batch.get("snappy_framing"))
    tail = Writer()  # from attributes to the end: what the CRC covers
    tail.int16(attributes)
    tail.int32(batch.get("last_offset_delta", max(len(records) - 1, 0)))
    tail.int64(batch.get("base_timestamp", -1))
    tail.int64(batch.get("max_timestamp", -1))
    tail.int64(batch.get("producer_id", -1))
    tail.int16(batch.get("producer_epoch", -1))
    tail.int32(batch.get("base_sequence", -1))
    tail.int32(len(records))
    tail.raw(payload)
    crc_part = tail.getvalue()
    w = Writer()
    w.int64(batch.get("base_offset", 0))
    w.int32(9 + len(crc_part))  # leader epoch + magic + crc + the rest
    w.int32(batch.get("partition_leader_epoch", -1))
    w.int8(2)
    w.uint32(crc32c(crc_part))
    w.raw(crc_part)
    return w.getvalue()


def _put_varbytes(w: Writer, value: Any) -> None:
    if value is None:
        w.varint(-1)
        return
    raw = unblob(value)
    w.varint(len(raw))
    w.raw(raw)


def _encode_record(out: Writer, rec: Any) -> None:
    if not isinstance(rec, dict):
        raise EncodeError(f"a record needs a mapping, got {rec!r}")
    w = Writer()
    w.int8(rec.get("attributes", 0))
    w.varlong(rec.get("timestamp_delta", 0))
    w.varint(rec.get("offset_delta", 0))
    _put_varbytes(w, rec.get("key"))
    _put_varbytes(w, rec.get("value"))
    headers = rec.get("headers", [])
    w.varint(len(headers))
    for h in headers:
        if h.get("key") is None:
            raise EncodeError("record header with a null key")
        _put_varbytes(w, h["key"])
        _put_varbytes(w, h.get("value"))
    data = w.getvalue()
    out.varint(len(data))
    out.raw(data)


def compress(codec: int, data: bytes, snappy_framing: str | None = None) -> bytes:
    name = COMPRESSION[codec]
    if name == "gzip":
        c = zlib.compressobj(wbits=31)  # gzip container, mtime 0: deterministic
        return c.compress(data) + c.flush()
    if name == "snappy":
        import cramjam

        if snappy_framing == "xerial":
            out = bytearray(XERIAL_MAGIC)
            out += (1).to_bytes(4, "big") + (1).to_bytes(4, "big")
            for i in range(0, len(data), 32 * 1024) or [0]:
                block = bytes(cramjam.snappy.compress_raw(data[i:i + 32 * 1024]))
                out += len(block).to_bytes(4, "big") + block
            return bytes(out)
        return bytes(cramjam.snappy.compress_raw(data))
    if name == "lz4":
        import lz4.frame

        return lz4.frame.compress(data)
    if name == "zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(data)
    raise EncodeError(f"unknown compression {codec}")
