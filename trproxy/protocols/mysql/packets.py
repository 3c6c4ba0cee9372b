"""MySQL packets <-> readable dicts, one function pair per packet type (sans-I/O).

The readable form *is* the message: plain dicts of str/int/None and ``{"hex": ...}`` for
bytes that are not UTF-8 text (``base.blob``), so what the codec decodes goes into a
recording as it is and what a recording holds is encoded back. Packets whose layout
depends on the negotiated capabilities (OK, column definitions) take them as ``caps``.

Values: a text-protocol row holds strings, shown as numbers where the column is an
integer or floating type and the number prints back to the same text; a binary row
(prepared statements) is decoded by column type (integers, floats, dates and times as
text in MySQL's own format) and encoded back from the same types.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from ..base import DecodeError, EncodeError, Readable, blob, unblob
from .wire import (
    CLIENT_CONNECT_ATTRS,
    CLIENT_CONNECT_WITH_DB,
    CLIENT_MYSQL,
    CLIENT_PLUGIN_AUTH,
    CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA,
    CLIENT_PROTOCOL_41,
    CLIENT_SECURE_CONNECTION,
    CLIENT_SESSION_TRACK,
    INTEGER_TYPES,
    MARIADB_CLIENT_EXTENDED_TYPE_INFO,
    SERVER_SESSION_STATE_CHANGED,
    UNSIGNED_FLAG,
    ZEROFILL_FLAG,
    Reader,
    lenenc,
    lenenc_str,
    type_code,
    type_name,
    u16,
    u32,
)

REDACTED = "<redacted>"


def text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def raw(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


# --- handshake ----------------------------------------------------------------------------

def parse_greeting(payload: bytes) -> tuple[dict[str, Any], bytes]:
    """HandshakeV10 -> (readable greeting, scramble). The scramble is random per
    connection and stays out of the readable form."""
    r = Reader(payload)
    if r.u8() != 10:
        raise DecodeError("not a protocol 10 handshake")
    version = text(r.nul_str())
    connection_id = r.u32()
    part1 = r.take(8)
    r.u8()
    caps = r.u16()
    greeting: dict[str, Any] = {"server_version": version, "connection_id": connection_id}
    charset = status = 0
    plugin = ""
    part2 = b""
    if r.left():
        charset, status = r.u8(), r.u16()
        caps |= r.u16() << 16
        data_len = r.u8()
        reserved = r.take(10)
        if not caps & CLIENT_MYSQL:  # MariaDB: extended capabilities in the last 4
            caps |= int.from_bytes(reserved[6:], "little") << 32
        if caps & CLIENT_SECURE_CONNECTION:
            part2 = r.take(max(13, data_len - 8))
        if caps & CLIENT_PLUGIN_AUTH:
            plugin = text(r.nul_str(lenient=True))
    greeting.update(capabilities=caps, charset=charset, status=status, auth_plugin=plugin)
    return greeting, (part1 + part2).rstrip(b"\0")


def build_greeting(g: Readable, scramble: bytes, connection_id: int) -> bytes:
    caps = int(g.get("capabilities", 0))
    plugin = raw(str(g.get("auth_plugin") or ""))
    ext = (caps >> 32) if not caps & CLIENT_MYSQL else 0
    return b"".join([
        b"\x0a", raw(str(g.get("server_version", ""))), b"\0", u32(connection_id),
        scramble[:8], b"\0", u16(caps), bytes((int(g.get("charset", 45)) & 0xFF,)),
        u16(int(g.get("status", 2))), u16(caps >> 16),
        bytes((len(scramble) + 1 if caps & CLIENT_PLUGIN_AUTH else 0,)),
        b"\0" * 6, u32(ext),
        scramble[8:] + b"\0" if caps & CLIENT_SECURE_CONNECTION else b"",
        plugin + b"\0" if caps & CLIENT_PLUGIN_AUTH else b"",
    ])


def parse_handshake_response(payload: bytes) -> dict[str, Any]:
    """HandshakeResponse41 (or the 32-byte SSLRequest that starts TLS instead)."""
    r = Reader(payload)
    caps = r.u32()
    if not caps & CLIENT_PROTOCOL_41:
        raise DecodeError("HandshakeResponse320 (pre-4.1 clients) is not supported")
    max_packet, charset = r.u32(), r.u8()
    filler = r.take(23)
    if not caps & CLIENT_MYSQL:
        caps |= int.from_bytes(filler[19:], "little") << 32
    out: dict[str, Any] = {"capabilities": caps, "max_packet": max_packet, "charset": charset}
    if not r.left():
        out["ssl_request"] = True
        return out
    out["user"] = text(r.nul_str())
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        auth = r.lenenc_str()
    elif caps & CLIENT_SECURE_CONNECTION:
        auth = r.take(r.u8())
    else:
        auth = r.nul_str()
    out["auth_response"] = auth
    if caps & CLIENT_CONNECT_WITH_DB and r.left():
        out["database"] = text(r.nul_str(lenient=True))
    if caps & CLIENT_PLUGIN_AUTH and r.left():
        out["auth_plugin"] = text(r.nul_str(lenient=True))
    if caps & CLIENT_CONNECT_ATTRS and r.left():
        attrs = Reader(r.lenenc_str())
        pairs = {}
        while attrs.left():
            key = text(attrs.lenenc_str())
            pairs[key] = text(attrs.lenenc_str())
        out["attributes"] = pairs
    return out


def parse_change_user(payload: bytes, caps: int) -> dict[str, Any]:
    """COM_CHANGE_USER: a new login on the same connection (the auth exchange follows)."""
    r = Reader(payload, 1)
    out: dict[str, Any] = {"user": text(r.nul_str())}
    out["auth_response"] = r.take(r.u8()) if caps & CLIENT_SECURE_CONNECTION else r.nul_str()
    out["database"] = text(r.nul_str(lenient=True))
    if r.left() >= 2:
        out["charset"] = r.u16()
    if caps & CLIENT_PLUGIN_AUTH and r.left():
        out["auth_plugin"] = text(r.nul_str(lenient=True))
    return out


def build_handshake_response(h: Readable, auth: bytes) -> bytes:
    """(For tests and benchmarks: what a client sends.)"""
    caps = int(h["capabilities"])
    parts = [u32(caps), u32(int(h.get("max_packet", 1 << 24))), bytes((int(h.get("charset", 45)),)),
             b"\0" * 19, u32(caps >> 32 if not caps & CLIENT_MYSQL else 0)]
    if h.get("ssl_request"):
        return b"".join(parts)
    parts += [raw(h.get("user", "")), b"\0"]
    if caps & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA:
        parts.append(lenenc_str(auth))
    else:
        parts += [bytes((len(auth),)), auth]
    if caps & CLIENT_CONNECT_WITH_DB:
        parts += [raw(h.get("database", "")), b"\0"]
    if caps & CLIENT_PLUGIN_AUTH:
        parts += [raw(h.get("auth_plugin", "")), b"\0"]
    if caps & CLIENT_CONNECT_ATTRS:
        attrs = b"".join(lenenc_str(raw(k)) + lenenc_str(raw(v))
                         for k, v in (h.get("attributes") or {}).items())
        parts.append(lenenc_str(attrs))
    return b"".join(parts)


# --- generic responses ----------------------------------------------------------------------

def parse_ok(payload: bytes, caps: int) -> dict[str, Any]:
    """OK_Packet (header 0x00, or 0xFE ending a resultset under CLIENT_DEPRECATE_EOF)."""
    r = Reader(payload, 1)
    ok: dict[str, Any] = {"affected_rows": r.lenenc_int(), "last_insert_id": r.lenenc_int(),
                          "status": r.u16(), "warnings": r.u16()}
    if caps & CLIENT_SESSION_TRACK:
        if r.left():
            info = r.lenenc_str()
            if info:
                ok["info"] = blob(info)
        if ok["status"] & SERVER_SESSION_STATE_CHANGED:
            if r.left():
                ok["session_state"] = {"hex": r.lenenc_str().hex()}
            else:  # the flag without the state it announces says nothing: dropped, as
                ok["status"] &= ~SERVER_SESSION_STATE_CHANGED  # build_ok never sends it
    elif r.left():
        ok["info"] = blob(r.rest())
    return ok


def build_ok(ok: Readable, caps: int, header: int = 0) -> bytes:
    status = int(ok.get("status", 0))
    info = unblob(ok["info"]) if ok.get("info") is not None else b""
    parts = [bytes((header,)), lenenc(int(ok.get("affected_rows", 0))),
             lenenc(int(ok.get("last_insert_id", 0)))]
    if caps & CLIENT_SESSION_TRACK:
        state = ok.get("session_state")
        if state is None:
            status &= ~SERVER_SESSION_STATE_CHANGED
        parts += [u16(status), u16(int(ok.get("warnings", 0))), lenenc_str(info)]
        if state is not None:
            parts.append(lenenc_str(unblob(state)))
    else:
        parts += [u16(status), u16(int(ok.get("warnings", 0))), info]
    return b"".join(parts)


def parse_err(payload: bytes) -> dict[str, Any]:
    r = Reader(payload, 1)
    code = r.u16()
    if code == 0xFFFF:
        raise DecodeError("MariaDB progress reports are not supported")
    err: dict[str, Any] = {"code": code}
    if r.left() and r.data[r.pos:r.pos + 1] == b"#":
        r.take(1)
        err["state"] = text(r.take(5))
    err["message"] = text(r.rest())
    return err


def build_err(err: Readable) -> bytes:
    state = raw(str(err.get("state", "HY000")))[:5].ljust(5, b"0")
    return b"\xff" + u16(int(err.get("code", 1105))) + b"#" + state + raw(str(err.get("message", "")))


def parse_eof(payload: bytes) -> dict[str, Any]:
    r = Reader(payload, 1)
    if r.left() < 4:
        return {"warnings": 0, "status": 0}
    return {"warnings": r.u16(), "status": r.u16()}


def build_eof(warnings: int, status: int) -> bytes:
    return b"\xfe" + u16(warnings) + u16(status)


def is_eof(payload: bytes) -> bool:
    """An EOF_Packet (or the OK that replaces it): 0xFE and too short to be a row."""
    return payload[:1] == b"\xfe" and len(payload) < 0xFFFFFF


def is_err(payload: bytes) -> bool:
    return payload[:1] == b"\xff"


# --- resultsets -------------------------------------------------------------------------------

_COLUMN_TEXT = ("schema", "table", "org_table", "name", "org_name")


def parse_column(payload: bytes, caps: int) -> dict[str, Any]:
    """ColumnDefinition41 (with MariaDB's extended type info when negotiated)."""
    r = Reader(payload)
    catalog = text(r.lenenc_str())
    col: dict[str, Any] = {} if catalog == "def" else {"catalog": catalog}
    for key in _COLUMN_TEXT:
        col[key] = text(r.lenenc_str())
    if caps & MARIADB_CLIENT_EXTENDED_TYPE_INFO:
        ext = r.lenenc_str()
        if ext:
            col["extended"] = {"hex": ext.hex()}
    r.lenenc_int()  # length of the fixed fields: 0x0c
    col["charset"] = r.u16()
    col["length"] = r.u32()
    col["type"] = type_name(r.u8())
    col["flags"] = r.u16()
    col["decimals"] = r.u8()
    return col


def build_column(col: Readable, caps: int) -> bytes:
    parts = [lenenc_str(raw(str(col.get("catalog", "def"))))]
    parts += [lenenc_str(raw(str(col.get(key, "")))) for key in _COLUMN_TEXT]
    if caps & MARIADB_CLIENT_EXTENDED_TYPE_INFO:
        ext = col.get("extended")
        parts.append(lenenc_str(unblob(ext) if ext else b""))
    parts += [b"\x0c", u16(int(col.get("charset", 63))), u32(int(col.get("length", 0))),
              bytes((type_code(col.get("type", "VAR_STRING")),)), u16(int(col.get("flags", 0))),
              bytes((int(col.get("decimals", 0)),)), b"\0\0"]
    return b"".join(parts)


def _int_from_text(data: bytes) -> Readable:
    digits = data[1:] if data[:1] == b"-" else data
    if digits.isdigit() and (digits[0] != 0x30 or len(digits) == 1) and data != b"-0":
        return int(data)
    return blob(data)


def _float_from_text(data: bytes) -> Readable:
    try:
        number = float(data)
    except ValueError:
        return blob(data)
    return number if repr(number).encode() == data else blob(data)


def text_converters(columns: list[Readable]) -> list[Callable[[bytes], Readable]]:
    """Per column: text-protocol value -> int/float when that prints back to the same
    bytes (not ZEROFILL integers, not DECIMAL), else text (``blob``)."""
    out: list[Callable[[bytes], Readable]] = []
    for col in columns:
        kind = col.get("type")
        if kind in INTEGER_TYPES and not int(col.get("flags", 0)) & ZEROFILL_FLAG:
            out.append(_int_from_text)
        elif kind in ("DOUBLE", "FLOAT"):
            out.append(_float_from_text)
        else:
            out.append(blob)
    return out


def _text_value(value: Readable) -> bytes:
    if isinstance(value, bool):
        raise EncodeError("a boolean is not a MySQL text value")
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return repr(value).encode()
    return unblob(value)


def parse_text_row(payload: bytes, columns: list[Readable],
                   converters: list[Callable[[bytes], Readable]] | None = None) -> list[Readable]:
    """A text-protocol row (the hot loop of a resultset: inlined length-encoded strings)."""
    row: list[Readable] = []
    pos, n = 0, len(payload)
    for convert in converters or text_converters(columns):
        if pos >= n:
            raise DecodeError("text row shorter than its columns")
        first = payload[pos]
        if first < 0xFB:
            length, pos = first, pos + 1
        elif first == 0xFB:
            row.append(None)
            pos += 1
            continue
        else:
            size = {0xFC: 2, 0xFD: 3, 0xFE: 8}.get(first)
            if size is None or pos + 1 + size > n:
                raise DecodeError("bad length in a text row")
            length = int.from_bytes(payload[pos + 1:pos + 1 + size], "little")
            pos += 1 + size
        end = pos + length
        if end > n:
            raise DecodeError("text row value longer than its packet")
        row.append(convert(payload[pos:end]))
        pos = end
    if pos != n:
        raise DecodeError("text row longer than its columns")
    return row


def build_text_row(row: list[Readable]) -> bytes:
    return b"".join(b"\xfb" if v is None else lenenc_str(_text_value(v)) for v in row)


_INTS = {"TINY": (1, "b", "B"), "SHORT": (2, "<h", "<H"), "YEAR": (2, "<h", "<H"),
         "INT24": (4, "<i", "<I"), "LONG": (4, "<i", "<I"), "LONGLONG": (8, "<q", "<Q")}
_DATE_TYPES = {"DATE", "NEWDATE"}
_DATETIME_TYPES = {"DATETIME", "TIMESTAMP", "DATETIME2", "TIMESTAMP2"}
_TIME_TYPES = {"TIME", "TIME2"}


def parse_binary_value(r: Reader, kind: str, unsigned: bool) -> Readable:
    """One value of the binary protocol (rows of COM_STMT_EXECUTE, its parameters)."""
    if kind in _INTS:
        size, signed_fmt, unsigned_fmt = _INTS[kind]
        return struct.unpack(unsigned_fmt if unsigned else signed_fmt, r.take(size))[0]
    if kind == "FLOAT":
        return struct.unpack("<f", r.take(4))[0]
    if kind == "DOUBLE":
        return struct.unpack("<d", r.take(8))[0]
    if kind == "NULL":
        return None
    if kind in _DATE_TYPES or kind in _DATETIME_TYPES:
        d = Reader(r.take(r.u8()))
        year, month, day = (d.u16(), d.u8(), d.u8()) if d.left() >= 4 else (0, 0, 0)
        hour, minute, second = (d.u8(), d.u8(), d.u8()) if d.left() >= 3 else (0, 0, 0)
        micro = d.u32() if d.left() >= 4 else None
        out = f"{year:04d}-{month:02d}-{day:02d}"
        if kind in _DATETIME_TYPES:
            out += f" {hour:02d}:{minute:02d}:{second:02d}"
            if micro is not None:
                out += f".{micro:06d}"
        return out
    if kind in _TIME_TYPES:
        d = Reader(r.take(r.u8()))
        if not d.left():
            return "00:00:00"
        negative, days, hour, minute, second = d.u8(), d.u32(), d.u8(), d.u8(), d.u8()
        micro = d.u32() if d.left() >= 4 else None
        out = f"{'-' if negative else ''}{days * 24 + hour:02d}:{minute:02d}:{second:02d}"
        return out + (f".{micro:06d}" if micro is not None else "")
    data = r.lenenc_bytes()
    return None if data is None else blob(data)


def build_binary_value(value: Readable, kind: str, unsigned: bool) -> bytes:
    try:
        if kind in _INTS:
            size, signed_fmt, unsigned_fmt = _INTS[kind]
            return struct.pack(unsigned_fmt if unsigned else signed_fmt, int(value))
        if kind == "FLOAT":
            return struct.pack("<f", float(value))
        if kind == "DOUBLE":
            return struct.pack("<d", float(value))
    except (struct.error, TypeError, ValueError) as exc:
        raise EncodeError(f"{value!r} is not a {kind}: {exc}") from None
    if kind == "NULL":
        return b""
    if kind in _DATE_TYPES or kind in _DATETIME_TYPES:
        return _build_datetime(str(value))
    if kind in _TIME_TYPES:
        return _build_time(str(value))
    return lenenc_str(_text_value(value))


def _numbers(text_: str, seps: str) -> list[int]:
    for sep in seps:
        text_ = text_.replace(sep, " ")
    try:
        return [int(p) for p in text_.split()]
    except ValueError:
        raise EncodeError(f"{text_!r} is not a MySQL date or time") from None


def _build_datetime(value: str) -> bytes:
    date, _, clock = value.partition(" ")
    y, mo, d = (_numbers(date, "-") + [0, 0, 0])[:3]
    whole, _, frac = clock.partition(".")
    h, mi, s = (_numbers(whole, ":") + [0, 0, 0])[:3] if whole else (0, 0, 0)
    body = struct.pack("<HBB", y, mo, d)
    if frac:
        body += struct.pack("<BBBI", h, mi, s, int(frac.ljust(6, "0")[:6]))
    elif clock:
        body += struct.pack("<BBB", h, mi, s)
    if not any((y, mo, d, h, mi, s)) and not frac:
        body = b""
    return bytes((len(body),)) + body


def _build_time(value: str) -> bytes:
    negative = value.startswith("-")
    whole, _, frac = value.lstrip("-").partition(".")
    h, mi, s = (_numbers(whole, ":") + [0, 0, 0])[:3]
    body = struct.pack("<BIBBB", int(negative), h // 24, h % 24, mi, s)
    if frac:
        body += struct.pack("<I", int(frac.ljust(6, "0")[:6]))
    elif not (negative or h or mi or s):
        body = b""
    return bytes((len(body),)) + body


def _unsigned(col: Readable) -> bool:
    return bool(int(col.get("flags", 0)) & UNSIGNED_FLAG)


def parse_binary_row(payload: bytes, columns: list[Readable]) -> list[Readable]:
    r = Reader(payload, 1)
    bitmap = r.take((len(columns) + 9) // 8)
    row: list[Readable] = []
    for i, col in enumerate(columns):
        bit = i + 2
        if bitmap[bit // 8] & (1 << (bit % 8)):
            row.append(None)
        else:
            row.append(parse_binary_value(r, str(col.get("type")), _unsigned(col)))
    if r.left():
        raise DecodeError("binary row longer than its columns")
    return row


def build_binary_row(row: list[Readable], columns: list[Readable]) -> bytes:
    if len(row) != len(columns):
        raise EncodeError(f"a row of {len(row)} values for {len(columns)} columns")
    bitmap = bytearray((len(columns) + 9) // 8)
    values = []
    for i, (value, col) in enumerate(zip(row, columns, strict=True)):
        if value is None:
            bit = i + 2
            bitmap[bit // 8] |= 1 << (bit % 8)
        else:
            values.append(build_binary_value(value, str(col.get("type")), _unsigned(col)))
    return b"\0" + bytes(bitmap) + b"".join(values)


# --- prepared statements ------------------------------------------------------------------------

def parse_prepare_ok(payload: bytes) -> dict[str, Any]:
    r = Reader(payload, 1)
    statement, columns, params = r.u32(), r.u16(), r.u16()
    warnings = 0
    if r.left() >= 3:
        r.u8()
        warnings = r.u16()
    return {"statement": statement, "columns": columns, "params": params, "warnings": warnings}


def build_prepare_ok(statement: int, columns: int, params: int, warnings: int) -> bytes:
    return b"\0" + u32(statement) + u16(columns) + u16(params) + b"\0" + u16(warnings)


def parse_execute(payload: bytes, params: int, types: list[tuple[str, bool]] | None,
                  long_data: dict[int, bytes]) -> tuple[dict[str, Any], list[tuple[str, bool]] | None]:
    """COM_STMT_EXECUTE after its statement id -> (flags, params, types) and the parameter
    types now bound (a client sends them once; later executions may reuse them)."""
    r = Reader(payload, 5)
    flags = r.u8()
    r.u32()  # iteration count: always 1
    out: dict[str, Any] = {"flags": flags} if flags else {}
    if not params:
        return out, types
    bitmap = r.take((params + 7) // 8)
    if r.u8():  # new-params-bound flag
        types = []
        for _ in range(params):
            code, flag = r.u8(), r.u8()
            types.append((type_name(code), bool(flag & 0x80)))
    if types is None or len(types) != params:
        raise DecodeError("COM_STMT_EXECUTE without parameter types")
    values: list[Readable] = []
    for i, (kind, unsigned) in enumerate(types):
        if bitmap[i // 8] & (1 << (i % 8)):
            values.append(None)
        elif i in long_data:
            values.append(blob(long_data[i]))
        else:
            values.append(parse_binary_value(r, kind, unsigned))
    out["params"] = values
    out["types"] = [f"{kind} UNSIGNED" if unsigned else kind for kind, unsigned in types]
    return out, types


def build_execute(statement: int, execute: Readable) -> bytes:
    """(For tests and benchmarks: what a client sends.)"""
    params = execute.get("params") or []
    parts = [b"\x17", u32(statement), bytes((int(execute.get("flags", 0)),)), u32(1)]
    if params:
        bitmap = bytearray((len(params) + 7) // 8)
        types, values = [], []
        for i, (value, kind) in enumerate(zip(params, execute["types"], strict=True)):
            name, _, unsigned = str(kind).partition(" ")
            types.append(bytes((type_code(name), 0x80 if unsigned else 0)))
            if value is None:
                bitmap[i // 8] |= 1 << (i % 8)
            else:
                values.append(build_binary_value(value, name, bool(unsigned)))
        parts += [bytes(bitmap), b"\x01", *types, *values]
    return b"".join(parts)


def redacted_response(handshake: dict[str, Any]) -> dict[str, Any]:
    """The readable handshake response: the password proof never goes on disk (it is
    derived from a random scramble, so replay could not check it anyway)."""
    out = {k: v for k, v in handshake.items() if k != "auth_response"}
    if handshake.get("auth_response"):
        out["auth_response"] = REDACTED
    return out
