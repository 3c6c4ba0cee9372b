"""Messages <-> readable data (the YAML a recording holds).

Every message becomes a one-key mapping named as in the spec, e.g.
``{"Query": "SELECT 1"}``, ``{"DataRow": ["1", "alice", None]}``,
``{"ErrorResponse": {"S": "ERROR", "C": "42P01", "M": "..."}}``,
``{"ReadyForQuery": "I"}``; messages without fields map to ``{}``.

Secrets never reach this form: passwords in SQL text are ``'<redacted>'``
(``sql.redact_sql``), SASL and GSS messages become ``"<redacted>"`` (replay
skips those exchanges), a cleartext password or MD5 answer becomes a salted slow hash
(``password_item``: replay asks the same question and compares the hashes), and
BackendKeyData's secret key becomes ``"<redacted>"`` (replay derives one from the pid,
``identity.cancel_key``). The MD5 salt is kept: it is what replay asks with again.

Backend messages are invertible (``response_message``) so a replayer can render
recorded responses back to bytes; frontend messages are only ever turned into
readable data (their match key is what replay compares).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..base import EncodeError, Readable, blob
from ..credentials import hashed
from . import backend as be
from . import frontend as fe
from .identity import cancel_key
from .sql import redact_sql
from .values import readable_value, wire_value

REDACTED = "<redacted>"


def text(s: str) -> Readable:
    """A protocol string: itself when it is valid UTF-8 that YAML keeps as is, else
    ``{"hex": ...}`` (undecodable bytes; U+0085, which YAML reads back as a line break)."""
    if s.isascii():  # neither a surrogate nor U+0085: the checks below pass
        return s
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return {"hex": s.encode("utf-8", "surrogateescape").hex()}
    if "\x85" in s:
        return {"hex": s.encode("utf-8").hex()}
    return s


def _key(s: str) -> str:
    """A mapping key: the text itself, or ``<hex:...>`` when it is not clean text."""
    t = text(s)
    return t if isinstance(t, str) else f"<hex:{t['hex']}>"


def untext(v: Readable) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, dict) and "hex" in v:
        return bytes.fromhex(v["hex"]).decode("utf-8", "surrogateescape")
    raise EncodeError(f"not a readable string: {v!r}")


@dataclass(frozen=True)
class RowShape:
    """How to read DataRow values: per column format code and type oid."""

    formats: tuple[int, ...] = ()
    oids: tuple[int, ...] = ()

    @property
    def all_text(self) -> bool:
        return not any(self.formats)

    def column(self, i: int) -> tuple[int, int]:
        fmt = fe.format_code(self.formats, i)
        oid = self.oids[i] if i < len(self.oids) else 0
        return fmt, oid


TEXT_ROWS = RowShape()


# --- frontend ------------------------------------------------------------------------


def request_item(msg: Any, query: str | None = None,
                 param_oids: tuple[int, ...] = ()) -> dict[str, Readable]:
    """Readable form of a client message. ``query`` is the SQL a Bind/Describe/Execute/
    Close refers to through a statement or portal name (known from an earlier Parse on
    this connection); ``param_oids`` types binary Bind parameters."""
    name = type(msg).__name__
    if isinstance(msg, (fe.PasswordMessage, fe.SASLResponse, fe.GSSResponse)):
        return {name: REDACTED}
    if isinstance(msg, fe.SASLInitialResponse):
        return {name: {"mechanism": msg.mechanism, "data": REDACTED}}
    if isinstance(msg, fe.StartupMessage):
        version = f"{msg.protocol_version >> 16}.{msg.protocol_version & 0xFFFF}"
        return {name: {"protocol": version,
                       "parameters": {_key(k): text(v) for k, v in msg.parameters}}}
    if isinstance(msg, fe.CancelRequest):
        return {name: {"process_id": msg.process_id, "secret_key": REDACTED}}
    if query is not None:
        query = redact_sql(query)
    if isinstance(msg, fe.Query):
        return {name: text(redact_sql(msg.query))}
    if isinstance(msg, fe.Parse):
        return {name: {"statement": text(msg.name), "query": text(redact_sql(msg.query)),
                       "param_types": list(msg.param_types)}}
    if isinstance(msg, fe.Bind):
        params = []
        for i, v in enumerate(msg.params):
            oid = msg_oid(param_oids, i)
            params.append(readable_value(v, msg.param_format(i), oid))
        out: dict[str, Readable] = {"portal": text(msg.portal), "statement": text(msg.statement)}
        if query is not None:
            out["query"] = text(query)
        out["parameters"] = params
        out["result_formats"] = list(msg.result_formats)
        return {name: out}
    if isinstance(msg, (fe.Describe, fe.Close)):
        key = "statement" if msg.kind == "S" else "portal"
        out = {key: text(msg.name)}
        if query is not None:
            out["query"] = text(query)
        return {name: out}
    if isinstance(msg, fe.Execute):
        out = {"portal": text(msg.portal), "max_rows": msg.max_rows}
        if query is not None:
            out["query"] = text(query)
        return {name: out}
    if isinstance(msg, fe.FunctionCall):
        args = [readable_value(a, fe.format_code(msg.arg_formats, i), 0)
                for i, a in enumerate(msg.args)]
        return {name: {"function_oid": msg.function_oid, "arguments": args,
                       "result_format": msg.result_format}}
    if isinstance(msg, fe.CopyData):
        return {name: readable_value(msg.data)}
    if isinstance(msg, fe.CopyFail):
        return {name: text(msg.message)}
    return {name: {}}  # SSLRequest, GSSENCRequest, Sync, Flush, CopyDone, Terminate


def password_item(msg: fe.PasswordMessage, params: dict[str, str]) -> dict[str, Readable]:
    """A cleartext password or MD5 answer, hashed for the account of the StartupMessage
    ``params`` (``credentials.hashed``): the live one hashes the same when it is the same."""
    user = params.get("user", "")
    account = f"postgres {user}@{params.get('database', user)}"
    return {"PasswordMessage": hashed(msg.password, account)}


def msg_oid(oids: tuple[int, ...], i: int) -> int:
    return oids[i] if i < len(oids) else 0


# --- backend -------------------------------------------------------------------------


def response_item(msg: Any, shape: RowShape = TEXT_ROWS) -> dict[str, Readable]:
    """Readable form of a server message; ``shape`` reads DataRow values."""
    name = type(msg).__name__
    if isinstance(msg, be.DataRow):  # the bulk of most answers: text rows take a short cut
        if shape.all_text:
            return {name: [None if v is None else blob(v) for v in msg.values]}
        return {name: [readable_value(v, *shape.column(i)) for i, v in enumerate(msg.values)]}
    if isinstance(msg, be.CommandComplete):
        return {name: text(msg.tag)}
    if isinstance(msg, be.ReadyForQuery):
        return {name: msg.status}
    if isinstance(msg, (be.SSLResponse, be.GSSENCResponse)):
        return {name: msg.code}
    if isinstance(msg, be.AuthenticationSASL):
        return {name: [text(m) for m in msg.mechanisms]}
    if isinstance(msg, (be.AuthenticationSASLContinue, be.AuthenticationSASLFinal,
                        be.AuthenticationGSSContinue)):
        return {name: REDACTED}
    if isinstance(msg, be.AuthenticationMD5Password):
        return {name: {"salt": msg.salt.hex()}}
    if isinstance(msg, be.ParameterStatus):
        key = text(msg.name)
        if isinstance(key, str) and key not in ("name", "value"):
            return {name: {key: text(msg.value)}}
        return {name: {"name": key, "value": text(msg.value)}}
    if isinstance(msg, be.BackendKeyData):
        return {name: {"process_id": msg.process_id, "secret_key": REDACTED}}
    if isinstance(msg, be.ReadyForQuery):
        return {name: msg.status}
    if isinstance(msg, (be.ErrorResponse, be.NoticeResponse)):
        return {name: {code: text(value) for code, value in msg.fields}}
    if isinstance(msg, be.NotificationResponse):
        return {name: {"process_id": msg.process_id, "channel": text(msg.channel),
                       "payload": text(msg.payload)}}
    if isinstance(msg, be.RowDescription):
        return {name: [{"name": text(f.name), "table_oid": f.table_oid, "column": f.column,
                        "type_oid": f.type_oid, "type_size": f.type_size,
                        "type_modifier": f.type_modifier, "format": f.format}
                       for f in msg.fields]}
    if isinstance(msg, be.CommandComplete):
        return {name: text(msg.tag)}
    if isinstance(msg, be.ParameterDescription):
        return {name: list(msg.type_oids)}
    if isinstance(msg, be.FunctionCallResponse):
        return {name: readable_value(msg.result)}
    if isinstance(msg, (be.CopyInResponse, be.CopyOutResponse, be.CopyBothResponse)):
        return {name: {"format": msg.format, "column_formats": list(msg.column_formats)}}
    if isinstance(msg, fe.CopyData):
        return {name: readable_value(msg.data)}
    if isinstance(msg, be.NegotiateProtocolVersion):
        return {name: {"newest_minor": msg.newest_minor,
                       "unrecognized": [text(o) for o in msg.unrecognized]}}
    return {name: {}}


def item_name(item: Readable) -> str:
    """The message name of a readable item (its single key)."""
    if isinstance(item, dict) and len(item) == 1:
        for name in item:
            return name
    raise EncodeError(f"not a readable message: {item!r}")


_EMPTY = {cls.__name__: cls for cls in (
    be.AuthenticationOk, be.AuthenticationCleartextPassword, be.AuthenticationKerberosV5,
    be.AuthenticationSCMCredential, be.AuthenticationGSS, be.AuthenticationSSPI,
    be.EmptyQueryResponse, be.ParseComplete, be.BindComplete, be.CloseComplete, be.NoData,
    be.PortalSuspended, fe.CopyDone)}


def response_message(item: Readable) -> Any:
    """The backend message a readable item stands for (inverse of ``response_item``)."""
    name = item_name(item)
    v = item[name]
    try:
        if name == "DataRow":  # the bulk of most answers: text values need no wire_value
            return be.DataRow(tuple([x.encode("utf-8") if type(x) is str else wire_value(x) for x in v]))
        if name in _EMPTY:
            return _EMPTY[name]()
        if name == "CommandComplete":
            return be.CommandComplete(untext(v))
        if name == "ReadyForQuery":
            return be.ReadyForQuery(v)
        if name == "RowDescription":
            return be.RowDescription(tuple(
                be.FieldDescription(untext(f["name"]), f["table_oid"], f["column"], f["type_oid"],
                                    f["type_size"], f["type_modifier"], f["format"])
                for f in v))
        if name in ("ErrorResponse", "NoticeResponse"):
            fields = tuple((str(code), untext(val)) for code, val in v.items())
            return (be.ErrorResponse if name == "ErrorResponse" else be.NoticeResponse)(fields)
        if name == "ParameterStatus":
            if len(v) == 2 and "name" in v and "value" in v:
                return be.ParameterStatus(untext(v["name"]), untext(v["value"]))
            ((key, value),) = v.items()
            return be.ParameterStatus(untext(key), untext(value))
        if name == "BackendKeyData":  # recordings made before keys were redacted: hex
            key = v["secret_key"]
            pid = v["process_id"]
            return be.BackendKeyData(pid, cancel_key(pid) if key == REDACTED else bytes.fromhex(key))
        if name == "AuthenticationMD5Password":
            return be.AuthenticationMD5Password(bytes.fromhex(v["salt"]))
        if name == "ParameterDescription":
            return be.ParameterDescription(tuple(v))
        if name == "NotificationResponse":
            return be.NotificationResponse(v["process_id"], untext(v["channel"]),
                                           untext(v["payload"]))
        if name == "FunctionCallResponse":
            return be.FunctionCallResponse(wire_value(v))
        if name in ("CopyInResponse", "CopyOutResponse", "CopyBothResponse"):
            cls = getattr(be, name)
            return cls(v["format"], tuple(v["column_formats"]))
        if name == "CopyData":
            return fe.CopyData(wire_value(v) or b"")
        if name == "NegotiateProtocolVersion":
            return be.NegotiateProtocolVersion(v["newest_minor"],
                                               tuple(untext(o) for o in v["unrecognized"]))
        if name in ("SSLResponse", "GSSENCResponse"):
            return getattr(be, name)(v)
        if name == "AuthenticationSASL":
            return be.AuthenticationSASL(tuple(untext(m) for m in v))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise EncodeError(f"malformed recorded {name}: {exc}") from exc
    raise EncodeError(f"cannot render recorded {name} (redacted or not a server message)")
