"""Golden decoding of the captures in ../shared/vectors/postgres (no servers needed).

Each stream decodes the same fed whole, one byte at a time and split at any offset;
the decoded result agrees with Zeek's logs (zeek-expected/) and DeepFlow's per-packet
results (deepflow-pgsql-all.result); malformed and non-PostgreSQL captures stop with
DecodeError / are not detected as PostgreSQL.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.protocols.postgres.streams import (
    NOT_DECODABLE,
    VECTORS,
    decode,
    record,
    start_for,
    vector_chunks,
    vector_names,
)
from tests.support.chunking import bytewise, offsets, split_at, total
from trproxy.protocols.base import Direction, ProtocolError
from trproxy.protocols.postgres import DIALECT, PostgresRecorder, detect
from trproxy.protocols.postgres import backend as be
from trproxy.protocols.postgres import frontend as fe
from trproxy.protocols.postgres.readable import item_name

NAMES = vector_names()
DECODABLE = [n for n in NAMES if n not in NOT_DECODABLE]


def test_every_capture_is_accounted_for():
    assert len(NAMES) == 22
    assert set(NOT_DECODABLE) < set(NAMES)


@pytest.mark.parametrize("name", DECODABLE)
def test_decodes_without_error(name):
    for chunks in vector_chunks(name):
        events, error = decode(chunks, start_for(name))
        assert error is None
        assert events
        # every byte was consumed: re-encoding the events gives the stream back
        codec = DIALECT.recorder().codec
        for side in ("client", "server"):
            sent = b"".join(codec.encode(m) for d, m in events if d is Direction(side))
            assert sent == b"".join(d for s, d in chunks if s == side)


@pytest.mark.parametrize("name", sorted(NOT_DECODABLE))
def test_undecodable_captures_stop_with_decode_error(name):
    for chunks in vector_chunks(name):
        _, error = decode(chunks, "startup")
        assert error is not None and error.startswith("DecodeError")
        assert NOT_DECODABLE[name] in error


@pytest.mark.parametrize("name", NAMES)
def test_whole_bytewise_and_split_are_identical(name):
    for chunks in vector_chunks(name):
        start = start_for(name)
        expected = decode(chunks, start)
        assert decode(bytewise(chunks), start) == expected
        # every offset of the psql captures (up to 3.3 KB), 300 spread over the big ones
        for offset in offsets(total(chunks), every_up_to=3500, samples=300, ends=3):
            assert decode(split_at(chunks, offset), start) == expected, offset


@pytest.mark.parametrize("name", NAMES)
def test_recorder_is_split_independent(name):
    for chunks in vector_chunks(name):
        start = start_for(name)
        expected = record(chunks, start)
        assert record(bytewise(chunks), start) == expected
        for offset in offsets(total(chunks), every_up_to=1000, samples=60, ends=3):
            assert record(split_at(chunks, offset), start) == expected, offset


def test_malformed_startup_and_backend_messages():
    _, error = decode(vector_chunks("zeek-bad-startup-message-1.pcap")[0])
    assert error == "DecodeError: invalid startup packet length 3"
    events, error = decode(vector_chunks("zeek-bad-backend-message-1.pcap")[0])
    assert [type(m) for _, m in events] == [fe.StartupMessage]
    assert error == "DecodeError: server message b'Z' has invalid length 1"


@pytest.mark.parametrize("name", ["zeek-http-on-port-5432.pcap", "zeek-mysql-on-port-5432.pcap"])
def test_other_protocols_on_5432_are_not_postgres(name):
    for chunks in vector_chunks(name):
        client = b"".join(d for s, d in chunks if s == "client")
        assert client[:1] != b"\0"
        for n in (1, 4, 8, 64, len(client)):
            assert detect(client[:n], 5432) is False


@pytest.mark.parametrize("name", [n for n in NAMES if n.startswith("zeek-psql")
                                  or n == "zeek-greenhouse-app.pcap"])
def test_real_postgres_clients_are_detected(name):
    for chunks in vector_chunks(name):
        client = b"".join(d for s, d in chunks if s == "client")
        assert detect(client[:4], 5432) is None  # too short to tell
        assert detect(client, 5432) is True
        assert detect(client[:8], 9999) is True  # the port is only a hint


@pytest.mark.parametrize("name", ["zeek-psql-aws-ssl-require.pcap", "zeek-psql-aws-ssl-preferred.pcap"])
def test_tls_upgrade_is_refused_by_the_recorder(name):
    chunks = vector_chunks(name)[0]
    events, _ = decode(chunks)
    assert [m for _, m in events] == [fe.SSLRequest(), be.SSLResponse("S")]
    recorder = PostgresRecorder()
    with pytest.raises(ProtocolError, match="TLS negotiated"):
        for side, data in chunks:
            recorder.feed(Direction(side), data)


# --- Zeek's logs ------------------------------------------------------------------------

ZEEK = {
    "zeek-greenhouse-app.pcap": "greenhouse-app.postgresql.log",
    "zeek-psql-aws-ssl-disable.pcap": "psql-aws-ssl-disable.postgresql.cut",
    "zeek-psql-aws-ssl-disable-15432.pcap": "psql-aws-ssl-disable-15432.postgresql.cut",
    "zeek-psql-create-insert-select-delete-drop.pcap": "psql-create-insert-select.postgresql.cut",
    "zeek-psql-insert-fail-drop-fail.pcap": "psql-insert-fail-drop-fail.postgresql.cut",
    "zeek-psql-login-fail.pcap": "psql-login-fail.postgresql.cut",
    "zeek-psql-login-no-role.pcap": "psql-login-no-role.postgresql.cut",
    "zeek-psql-login-no-sslrequest.pcap": "psql-login-no-sslrequest.postgresql.cut",
    "zeek-psql-select-now.pcap": "psql-select-now.postgresql.cut",
}
_ZEEK_FIELD = {"S": "SeverityLocalized", "V": "Severity", "C": "Code", "M": "Message",
               "D": "Detail", "H": "Hint", "P": "Position", "F": "File", "L": "Line",
               "R": "Routine", "W": "Where"}


def zeek_log(path: Path) -> dict[int, list[tuple]]:
    """Rows per client port: (frontend, frontend_arg, user, database, application_name,
    backend_arg, success, rows)."""
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    header = lines[0].split("\t")
    rows: dict[int, list[tuple]] = {}
    for line in lines[1:]:
        f = dict(zip(header, line.split("\t"), strict=True))
        unesc = re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), f["frontend_arg"])
        rows.setdefault(int(f["id.orig_p"]), []).append(
            (f["frontend"], unesc, f["user"], f["database"], f["application_name"],
             f["backend_arg"], f["success"], f["rows"]))
    return rows


def _fields(mapping: dict) -> str:
    return ",".join(f"{_ZEEK_FIELD.get(k, k)}={v}" for k, v in mapping.items())


def zeek_rows(interactions, terminated: bool) -> list[tuple]:
    """Our recorded interactions in the shape of Zeek's postgresql.log (a login that asked
    for a password is two of ours - up to the request, then the answer - and one of Zeek's)."""
    merged: list[tuple] = []
    for request, responses, *_ in interactions:
        if merged and any(item_name(i) == "PasswordMessage" for i in request):
            merged[-1] = (merged[-1][0], merged[-1][1] + responses)
        else:
            merged.append((request, responses))
    rows = []
    for request, responses in merged:
        names = [item_name(r) for r in responses]
        errors = [r[item_name(r)] for r in responses if item_name(r) in ("ErrorResponse",
                                                                          "NoticeResponse")]
        failed = "ErrorResponse" in names
        if item_name(request[0]) in ("SSLRequest", "StartupMessage"):
            if item_name(request[0]) == "SSLRequest":
                code = responses[0]["SSLResponse"]
                rows.append(("ssl_request", "-", "-", "-", "-", code, "T" if code == "S" else "F", "-"))
            params = next(i["StartupMessage"]["parameters"] for i in request
                          if item_name(i) == "StartupMessage")
            auth = [n[len("Authentication"):] for n in names
                    if n.startswith("Authentication") and n != "AuthenticationOk"]
            arg = ",".join(auth + [_fields(e) for e in errors]) or "-"
            rows.append(("startup", "-", params.get("user", "-"), params.get("database", "-"),
                         params.get("application_name", "-"), arg, "F" if failed else "T", "-"))
        elif item_name(request[0]) == "Query":
            data_rows = names.count("DataRow")
            rows.append(("simple_query", request[0]["Query"], "-", "-", "-",
                         ",".join(_fields(e) for e in errors) or "-", "F" if failed else "T",
                         "-" if failed else str(data_rows)))
    if terminated:
        rows.append(("terminate", "-", "-", "-", "-", "-", "-", "-"))
    return rows


@pytest.mark.parametrize("name", sorted(ZEEK))
def test_agrees_with_zeek(name):
    expected = zeek_log(VECTORS / "zeek-expected" / ZEEK[name])
    from tests.support.pcap import tcp_streams
    streams = tcp_streams(VECTORS / name)
    assert {s.client[1] for s in streams} == set(expected)
    for stream in streams:
        want = [(fr, arg, "-", "-", "-", barg, ok, rows) if fr != "startup"
                else (fr, arg, user, db, app, barg, ok, rows)
                for fr, arg, user, db, app, barg, ok, rows in expected[stream.client[1]]]
        interactions, error = record(stream.chunks)
        assert error is None
        events, _ = decode(stream.chunks)
        terminated = any(isinstance(m, fe.Terminate) for _, m in events)
        if want and want[-1][6] == "-" and want[-1][0] == "startup":
            # Zeek logs a startup that never finished (psql hung up to ask for a password);
            # we record no interaction for it: replaying it would hand out a half handshake.
            assert [type(m) for _, m in events] == [fe.StartupMessage, be.AuthenticationSASL]
            assert interactions == []
            continue
        got = zeek_rows(interactions, terminated)
        # Zeek keeps the first user/database on later rows of the connection; compare those
        # columns on startup rows only
        got = [(r[0], r[1], "-", "-", "-", r[5], r[6], r[7]) if r[0] != "startup" else r for r in got]
        assert got == want


# --- DeepFlow's per-packet results ----------------------------------------------------------


def test_agrees_with_deepflow_pgsql_all():
    chunks = vector_chunks("deepflow-pgsql-all.pcap")[0]
    results = [json.loads(line.split(" is_pgsql")[0]) for line in
               (VECTORS / "deepflow-pgsql-all.result").read_text().splitlines()]
    assert len(results) == len(chunks) == 78
    from trproxy.protocols.postgres import PostgresCodec
    codec = PostgresCodec(start="ready")
    checked = 0
    for (side, data), res in zip(chunks, results, strict=True):
        codec.feed(Direction(side), data)
        msgs = [m for _, m in codec.events()]
        if res["msg_type"] == "Request":
            assert side == "client" and res["captured_request_byte"] == len(data)
            parses = [m.query for m in msgs if isinstance(m, fe.Parse)]
            if res["request_type"] == "P":
                assert parses == [res["request_resource"]]
            else:
                assert res["request_type"] == "E" and not parses
                assert any(isinstance(m, fe.Execute) for m in msgs)
            checked += 1
        elif res["msg_type"] == "Response":
            assert side == "server" and res["captured_response_byte"] == len(data)
            assert res["status"] == "ok"
            assert not any(isinstance(m, be.ErrorResponse) for m in msgs)
            assert isinstance(msgs[-1], be.ReadyForQuery)
            rows = sum(isinstance(m, be.DataRow) for m in msgs)
            assert rows == res.get("sql_affected_rows", 0)
            checked += 1
    assert checked == 59
    interactions, error = record(chunks, start="ready")
    assert error is None and len(interactions) == 32
    assert all(i[0][-1] == {"Sync": {}} for i in interactions)


def test_deepflow_small_captures():
    events, _ = decode(vector_chunks("deepflow-error.pcap")[0], start="ready")
    assert events[0][1] == fe.Query("asdsdfdsf;")
    err = events[1][1]
    assert isinstance(err, be.ErrorResponse)
    assert (err.get("C"), err.get("M")) == ("42601", 'syntax error at or near "asdsdfdsf"')
    events, _ = decode(vector_chunks("deepflow-simple_query.pcap")[0], start="ready")
    assert [m for _, m in events] == [fe.Query("delete  from test;"),
                                      be.CommandComplete("DELETE 1"), be.ReadyForQuery("I")]
    events, _ = decode(vector_chunks("deepflow-prepare_stat.pcap")[0], start="ready")
    assert events[0][1] == fe.Parse("1", "delete from test where id=$1 returning id", ())
    # this capture keeps one packet per side of a longer exchange: the server packet answers
    # a Bind/Execute that is not in it, which the recorder refuses rather than misgroup
    _, error = record(vector_chunks("deepflow-prepare_stat.pcap")[0], start="ready")
    assert error == "UnexpectedMessage: BindComplete does not answer Parse"
