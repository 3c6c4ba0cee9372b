"""DNS questions and answers as readable recording data (``kind: dns`` documents).

A question is ``{name, type}`` (``class`` only when not IN), the name in lower case
(no final dot, as the codec gives names), so that matching ignores case as DNS does (RFC 4343). An answer is
``{rcode, answers: [...]}`` plus ``authority``/``additional`` when not empty; a record is
``{name, type, ttl, data}``: the address for A/AAAA, the name for CNAME/NS/PTR,
``{priority, weight, port, target}`` for SRV, ``{preference, exchange}`` for MX, and the
RFC 3597 generic form ``"\\# <length> <hex>"`` for every other type. EDNS OPT records are
per-message transport options, not data: they are left out.
"""

from __future__ import annotations

from typing import Any

from .codec import (
    AA,
    CLASS_CODES,
    CLASSES,
    QR,
    RA,
    RCODE_CODES,
    RCODES,
    RD,
    Message,
    Question,
    Record,
    type_code,
    type_name,
)

OPT = 41


def normal_name(name: str) -> str:
    """Lower case (RFC 4343). Decoded names have no final dot (the root is "."); an
    escaped dot at the end (``a\\.``) is part of the last label and stays."""
    return name.lower()


def question(q: Question) -> dict[str, Any]:
    out: dict[str, Any] = {"name": normal_name(q.name), "type": type_name(q.type)}
    if q.cls != 1:
        out["class"] = CLASSES.get(q.cls, f"CLASS{q.cls}")
    return out


def summary(q: dict[str, Any]) -> str:
    return f"{q.get('type')} {q.get('name')}"


def answer(msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"rcode": RCODES.get(msg.rcode, msg.rcode),
                           "answers": [record(r) for r in msg.answers]}
    if msg.flags & AA:
        out["authoritative"] = True
    for section in ("authority", "additional"):
        records = [record(r) for r in getattr(msg, section) if r.type != OPT]
        if records:
            out[section] = records
    return out


def record(r: Record) -> dict[str, Any]:
    out: dict[str, Any] = {"name": r.name, "type": type_name(r.type), "ttl": r.ttl}
    if r.cls != 1:
        out["class"] = CLASSES.get(r.cls, f"CLASS{r.cls}")
    data = r.data
    if isinstance(data, bytes):
        out["data"] = f"\\# {len(data)} {data.hex()}".rstrip()
    elif r.type == 33:
        out["data"] = dict(zip(("priority", "weight", "port", "target"), data, strict=True))
    elif r.type == 15:
        out["data"] = {"preference": data[0], "exchange": data[1]}
    else:
        out["data"] = data
    return out


# --- back to messages (replay) -----------------------------------------------------------

def reply(query: Message, recorded: dict[str, Any]) -> Message:
    """The answer to ``query`` (its id, its questions as asked) from a recorded answer.
    ValueError says what in the recording is wrong."""
    if not isinstance(recorded, dict):
        raise ValueError(f"a DNS answer must be a mapping, not {type(recorded).__name__}")
    rcode = recorded.get("rcode", "NOERROR")
    code = RCODE_CODES.get(rcode) if isinstance(rcode, str) else rcode
    if not isinstance(code, int) or not 0 <= code < 16:
        raise ValueError(f"unknown DNS rcode {rcode!r}")
    flags = QR | RA | (query.flags & RD) | (query.flags & 0x7800) | code
    if recorded.get("authoritative"):
        flags |= AA
    msg = Message(query.id, flags, list(query.questions))
    for section in ("answers", "authority", "additional"):
        items = recorded.get(section) or []
        if not isinstance(items, list):
            raise ValueError(f"DNS {section} must be a list")
        getattr(msg, section).extend(from_record(r) for r in items)
    return msg


def failure(query: Message, rcode: str) -> Message:
    """SERVFAIL/REFUSED/... to ``query`` with no records."""
    return Message(query.id, QR | RA | (query.flags & RD) | (query.flags & 0x7800) | RCODE_CODES[rcode],
                   list(query.questions))


def from_record(r: Any) -> Record:
    if not isinstance(r, dict):
        raise ValueError(f"a DNS record must be a mapping, not {type(r).__name__}")
    name, kind, ttl, data = r.get("name"), r.get("type"), r.get("ttl", 0), r.get("data")
    if not isinstance(name, str) or not isinstance(kind, str):
        raise ValueError(f"a DNS record needs a name and a type: {r!r:.80}")
    if not isinstance(ttl, int) or not 0 <= ttl < 2**32:
        raise ValueError(f"DNS ttl must be a number of seconds: {ttl!r}")
    code = type_code(kind)
    cls = r.get("class", "IN")
    cls_code = CLASS_CODES.get(cls) if isinstance(cls, str) else None
    if cls_code is None:
        if isinstance(cls, str) and cls.startswith("CLASS") and cls[5:].isdigit():
            cls_code = int(cls[5:]) & 0xFFFF
        else:
            raise ValueError(f"unknown DNS class {cls!r}")
    return Record(name, code, cls_code, ttl, _data(code, data))


def _data(code: int, data: Any) -> Any:
    if isinstance(data, str) and data.startswith("\\#"):
        parts = data.split()
        try:
            raw = bytes.fromhex("".join(parts[2:]))
        except ValueError as exc:
            raise ValueError(f"bad RFC 3597 data {data!r:.80}") from exc
        if len(parts) < 2 or not parts[1].isdigit() or int(parts[1]) != len(raw):
            raise ValueError(f"RFC 3597 data length does not match: {data!r:.80}")
        return raw
    if code == 33 and isinstance(data, dict):
        return tuple(_int(data.get(k)) for k in ("priority", "weight", "port")) + (str(data.get("target", ".")),)
    if code == 15 and isinstance(data, dict):
        return (_int(data.get("preference")), str(data.get("exchange", ".")))
    if code in (1, 28, 2, 5, 12) and isinstance(data, str):
        return data
    raise ValueError(f"bad data for a DNS {type_name(code)} record: {data!r:.80}")


def _int(value: Any) -> int:
    if not isinstance(value, int) or not 0 <= value < 65536:
        raise ValueError(f"DNS SRV/MX numbers are 0..65535, not {value!r}")
    return value
