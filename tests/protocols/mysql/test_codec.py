"""The MySQL codec, recorder and replayer on bytes built here (no server): framing with
16 MiB continuation, length-encoded integers, binary values, the authentication
exchanges replay plays (caching_sha2_password's fast and full auth), the greeting that
identifies the protocol, SQL lifetimes; and a real MySQL 8.4 capture (pcap vector)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import pytest

from tests.support.chunking import CLOSE, bytewise, split_at
from tests.support.pcap import tcp_streams, vector
from tests.support.replay_server import Mocks
from trproxy.protocols.base import DecodeError, Direction, Failure, Interaction, ProtocolError
from trproxy.protocols.mysql import MySQLRecorder, MySQLReplayer, greeting
from trproxy.protocols.mysql import packets as p
from trproxy.protocols.mysql.matching import lifetime_of, match_key, volatile
from trproxy.protocols.mysql.replayer import check_fault
from trproxy.protocols.mysql.sql import is_session_sql, normalize_sql
from trproxy.protocols.mysql.wire import (
    CLIENT_DEPRECATE_EOF,
    CLIENT_PROTOCOL_41,
    CLIENT_SESSION_TRACK,
    CLIENT_SSL,
    MAX_PAYLOAD,
    PacketBuffer,
    Reader,
    frame,
    frames,
    lenenc,
)
from trproxy.proxy.engine import Opened, Send

SERVER_CAPS = 0x1F_F7FFFE  # MariaDB 10.11
GREETING = {"server_version": "5.5.5-10.11.6-MariaDB", "capabilities": SERVER_CAPS, "charset": 45,
            "status": 2, "auth_plugin": "mysql_native_password"}
CLIENT_CAPS = 0x3A_A20F | CLIENT_DEPRECATE_EOF  # PyMySQL's, with DEPRECATE_EOF


def login(plugin: str = "mysql_native_password", caps: int = CLIENT_CAPS) -> bytes:
    response = {"capabilities": caps, "user": "ann", "database": "shop", "auth_plugin": plugin}
    return frame(p.build_handshake_response(response, b"\x01" * 20), 1)[0]


def session_bytes(*commands: tuple[bytes, list[bytes]]) -> list[tuple[str, bytes]]:
    """A whole connection: greeting, login, OK, then each command and its answer."""
    chunks = [("server", frame(p.build_greeting(GREETING, b"s" * 20, 7), 0)[0]),
              ("client", login()), ("server", frame(p.build_ok({"status": 2}, CLIENT_CAPS), 2)[0])]
    for command, answer in commands:
        chunks += [("client", frame(command, 0)[0]), ("server", frames(answer, 1)[0])]
    return chunks


def record(chunks):  # type: ignore[no-untyped-def]
    recorder = MySQLRecorder()
    out = []
    for side, data in chunks + CLOSE:
        out += [(i.request, i.responses) for i in recorder.feed(Direction(side), data)]
    return out


# --- framing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [0, 250, MAX_PAYLOAD, MAX_PAYLOAD + 5])
def test_payloads_of_16_mib_continue_in_the_next_packet(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    data, seq = frame(payload, 3)
    packets = size // MAX_PAYLOAD + 1  # exactly 16 MiB: an empty packet ends it
    assert seq == 3 + packets and len(data) == size + 4 * packets
    cuts = [1, 3, 4, 5, len(data) // 2, len(data) - 1] + ([MAX_PAYLOAD + 4 + i for i in (-1, 0, 1, 2, 3, 4)]
                                                           if size >= MAX_PAYLOAD else [])
    for cut in cuts:
        buf = PacketBuffer()
        buf.feed(data[:cut])
        first = buf.next()
        buf.feed(data[cut:])
        assert (first or buf.next()) == (3, payload)
        assert buf.next() is None and buf.pending() == 0


def test_a_packet_over_the_limit_is_refused_not_buffered() -> None:
    buf = PacketBuffer(max_packet=1000)
    buf.feed(b"\xe9\x03\x00\x00")  # 1001 bytes announced
    with pytest.raises(DecodeError, match="more than 1000"):
        buf.next()


@pytest.mark.parametrize("n", [0, 250, 251, 0xFFFF, 0x10000, 0xFFFFFF, 0x1000000, 2**64 - 1])
def test_length_encoded_integers(n: int) -> None:
    assert Reader(lenenc(n)).lenenc() == n


# --- values ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "unsigned", "value"), [
    ("TINY", False, -5), ("TINY", True, 250), ("SHORT", False, -30000), ("YEAR", True, 2024),
    ("LONG", False, -2**31), ("INT24", True, 2**24 - 1), ("LONGLONG", True, 2**64 - 1),
    ("LONGLONG", False, -2**63), ("DOUBLE", False, 2.5), ("FLOAT", False, 0.5),
    ("DATE", False, "2024-02-29"), ("DATE", False, "0000-00-00"),
    ("DATETIME", False, "2024-01-02 03:04:05"), ("DATETIME", False, "2024-01-02 03:04:05.678901"),
    ("TIMESTAMP", False, "0000-00-00 00:00:00"), ("TIME", False, "-30:00:07"),
    ("TIME", False, "00:00:00.000005"), ("TIME", False, "00:00:00"), ("TIME", False, "838:59:59"),
    ("NEWDECIMAL", False, "1.50"), ("BLOB", False, {"hex": "00016200"}), ("VAR_STRING", False, "påron"),
])
def test_binary_values_decode_to_what_encodes_them(kind: str, unsigned: bool, value: object) -> None:
    data = p.build_binary_value(value, kind, unsigned)
    reader = Reader(data)
    assert p.parse_binary_value(reader, kind, unsigned) == value and reader.left() == 0


def test_text_values_become_numbers_only_when_they_print_back_the_same() -> None:
    columns = [{"type": "LONG", "flags": 0}, {"type": "LONG", "flags": 64}, {"type": "DOUBLE"},
               {"type": "DOUBLE"}, {"type": "NEWDECIMAL"}, {"type": "VAR_STRING"}]
    row = b"".join(p.lenenc_str(v) for v in (b"42", b"007", b"2.5", b"1e20", b"1.50", b"x")) + b"\xfb"
    parsed = p.parse_text_row(row[:-1], columns)
    assert parsed == [42, "007", 2.5, "1e20", "1.50", "x"]
    assert p.build_text_row(parsed) == row[:-1]


# --- recorder --------------------------------------------------------------------------------

RESULTSET = [lenenc(1), p.build_column({"name": "n", "type": "LONGLONG", "flags": 129, "charset": 63},
                                       CLIENT_CAPS),
             p.build_text_row([7]), p.build_ok({"status": 2}, CLIENT_CAPS, header=0xFE)]


def test_a_connection_records_the_same_whole_byte_by_byte_and_split_anywhere() -> None:
    chunks = session_bytes((b"\x03SELECT 7", RESULTSET),
                           (b"\x03SELECT * FROM nope", [p.build_err({"code": 1146, "state": "42S02",
                                                                     "message": "no table"})]))
    expected = record(chunks)
    assert [r for r, _ in expected] == [{"Connect": {}}, {"HandshakeResponse": {
        "capabilities": CLIENT_CAPS, "max_packet": 1 << 24, "charset": 45, "user": "ann",
        "database": "shop", "auth_plugin": "mysql_native_password", "attributes": {},
        "auth_response": "<redacted>"}},
        {"COM_QUERY": "SELECT 7"}, {"COM_QUERY": "SELECT * FROM nope"}]
    assert expected[2][1][0]["ResultSet"]["rows"] == [[7]]
    assert expected[3][1] == [{"ERR": {"code": 1146, "state": "42S02", "message": "no table"}}]
    assert record(bytewise(chunks)) == expected
    size = sum(len(d) for _, d in chunks)
    for offset in range(1, size):
        assert record(split_at(chunks, offset)) == expected


def test_a_query_of_more_than_16_mib_is_one_request() -> None:
    sql = "SELECT '" + "x" * MAX_PAYLOAD + "'"
    recorded = record(session_bytes((b"\x03" + sql.encode(), [p.build_ok({"status": 2}, CLIENT_CAPS)])))
    assert recorded[-1][0] == {"COM_QUERY": sql}


def test_tls_and_unknown_commands_stop_capture_with_a_clear_error() -> None:
    ssl = {"capabilities": CLIENT_CAPS | CLIENT_SSL, "ssl_request": True}
    chunks = session_bytes()[:1] + [("client", frame(p.build_handshake_response(ssl, b""), 1)[0])]
    with pytest.raises(ProtocolError, match="TLS"):
        record(chunks)
    with pytest.raises(ProtocolError, match="unknown command 0x99"):
        record(session_bytes((b"\x99", [])))


# --- replayer --------------------------------------------------------------------------------

def replay(recorded: list[Interaction], *client_packets: bytes) -> list[bytes]:
    """What a replaying proxy answers: the greeting, then each client packet's answer."""
    mocks = Mocks("mysql", recorded)
    session = mocks.session(MySQLReplayer())
    out = [b"".join(c.data for c in mocks.step(session, Opened(), 0.0) if isinstance(c, Send))]
    out += [mocks.replay(session, packet)[0] for packet in client_packets]
    return out


def packets(data: bytes) -> list[tuple[int, bytes]]:
    buf = PacketBuffer()
    buf.feed(data)
    found = []
    while (packet := buf.next()) is not None:
        found.append(packet)
    return found


def test_replay_greets_as_recorded_without_what_it_cannot_play_and_takes_any_password() -> None:
    recorded = [Interaction({"Connect": {}}, [{"Greeting": dict(GREETING, capabilities=SERVER_CAPS | CLIENT_SSL)}],
                            "session")]
    hello, answer = replay(recorded, login())
    [(seq, payload)] = packets(hello)
    greeted, scramble = p.parse_greeting(payload)
    assert seq == 0 and greeted["server_version"] == GREETING["server_version"]
    assert not greeted["capabilities"] & CLIENT_SSL and len(scramble) == 20
    assert packets(answer) == [(2, p.build_ok({"status": 2}, CLIENT_CAPS & SERVER_CAPS))]


def test_replay_plays_caching_sha2_full_authentication_step_by_step() -> None:
    pem = "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n"
    greeting_ = dict(GREETING, auth_plugin="caching_sha2_password")
    recorded = [Interaction({"Connect": {}}, [{"Greeting": greeting_}], "session"),
                Interaction({"HandshakeResponse": {"user": "ann", "database": "shop"}},
                            [{"AuthMoreData": {"hex": "04"}}, {"AuthMoreData": pem},
                             {"OK": {"status": 2}}], "session")]
    _hello, perform_full, key, ok = replay(recorded, login("caching_sha2_password"),
                                           frame(b"\x02", 3)[0], frame(b"rsa-encrypted", 5)[0])
    assert packets(perform_full) == [(2, b"\x01\x04")]
    assert packets(key) == [(4, b"\x01" + pem.encode())]
    assert [seq for seq, _ in packets(ok)] == [6] and packets(ok)[0][1][0] == 0


def test_replay_plays_caching_sha2_fast_auth_and_an_auth_switch() -> None:
    recorded = [Interaction({"HandshakeResponse": {"user": "ann", "database": "shop"}},
                            [{"AuthSwitchRequest": {"plugin": "caching_sha2_password"}},
                             {"AuthMoreData": {"hex": "03"}}, {"OK": {"status": 2}}], "session")]
    hello, switch, fast = replay(recorded, login(), frame(hashlib.sha256(b"x").digest(), 3)[0])
    scramble = p.parse_greeting(packets(hello)[0][1])[1]
    assert packets(switch) == [(2, b"\xfecaching_sha2_password\0" + scramble + b"\0")]
    assert [payload[:1] for _, payload in packets(fast)] == [b"\x01", b"\x00"]


def test_statement_ids_at_replay_are_the_replays_own() -> None:
    column = {"name": "n", "type": "LONGLONG", "flags": 129, "charset": 63}
    param = {"name": "?", "type": "NULL", "charset": 63}
    sql = "SELECT n FROM t WHERE n = ?"
    execute = {"sql": sql, "params": [7], "types": ["LONGLONG"]}
    recorded = [Interaction({"COM_STMT_PREPARE": sql},
                            [{"PrepareOK": {"statement": 90, "params": [param], "columns": [column],
                                            "warnings": 0}}], "session"),
                Interaction({"COM_STMT_EXECUTE": execute},
                            [{"ResultSet": {"columns": [column], "rows": [[7]], "binary": True,
                                            "status": 2}}])]
    _hello, _ok, prepared, executed = replay(
        recorded, login(), frame(b"\x16" + sql.encode(), 0)[0], frame(p.build_execute(1, execute), 0)[0])
    assert p.parse_prepare_ok(packets(prepared)[0][1])["statement"] == 1  # not 90
    rows = [payload for _, payload in packets(executed)][2:-1]
    assert [p.parse_binary_row(r, [column]) for r in rows] == [[7]]


def test_a_miss_is_an_err_packet_and_the_connection_goes_on() -> None:
    _hello, _ok, missed, pong = replay([], login(), frame(b"\x03SELECT 1", 0)[0], frame(b"\x0e", 0)[0])
    [(seq, payload)] = packets(missed)
    err = p.parse_err(payload)
    assert seq == 1 and err["code"] == 1105 and "no recording for Query SELECT 1" in err["message"]
    assert packets(pong)[0][1][0] == 0  # COM_PING answered here


# --- detection, matching, lifetimes -------------------------------------------------------------

def test_the_server_greeting_identifies_mysql() -> None:
    hello = frame(p.build_greeting(GREETING, b"s" * 20, 1), 0)[0]
    assert greeting(hello)
    for other in (b"HTTP/1.1 200 OK\r\n", b"+OK\r\n", b"N", b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
                  hello[:5], b"\x16\x03\x01\x02\x00" + b"\0" * 40):
        assert not greeting(other)


def test_sql_lifetimes_and_whitespace_insensitive_matching() -> None:
    assert normalize_sql("SELECT  'a  b' ,\n`x  y`  # note\n;") == "SELECT 'a  b' , `x  y` # note"
    assert normalize_sql("SELECT 'it\\'s  x'") == "SELECT 'it\\'s  x'"
    for sql in ("SET NAMES utf8mb4", "SELECT @@version_comment LIMIT 1", "SHOW VARIABLES LIKE 'x'",
                "SELECT DATABASE()", "SELECT * FROM information_schema.tables"):
        assert is_session_sql(sql), sql
    for sql in ("SELECT * FROM t", "SET autocommit=0", "SELECT @@x; DELETE FROM t", "INSERT INTO t VALUES (1)"):
        assert not is_session_sql(sql), sql
    assert lifetime_of({"COM_QUERY": "SELECT 1 FROM t"}) == "data"
    assert match_key({"HandshakeResponse": {"user": "a", "database": "d", "attributes": {"_pid": "9"}}}) == \
        {"Login": {"user": "a", "database": "d"}}
    # a set of literals in another order (a hash set joined by the app) is the same set
    assert match_key({"COM_QUERY": "SELECT 1 FROM t WHERE m IN ('b', 'a')"}) == \
        match_key({"COM_QUERY": "SELECT 1 FROM t WHERE m IN ('a','b')"})
    assert match_key({"COM_STMT_EXECUTE": {"sql": "SELECT  ?", "params": [1], "types": ["TINY"]}}) == \
        match_key({"COM_STMT_EXECUTE": {"sql": "SELECT ?", "params": [1], "types": ["LONGLONG"]}})


def test_a_real_mysql_8_capture_decodes_with_its_auth_switch_and_change_user() -> None:
    [stream] = tcp_streams(vector("postgres", "zeek-mysql-on-port-5432.pcap"))
    recorded = record(stream.chunks)
    assert [request for request, _ in recorded][3:] == [
        {"COM_QUERY": "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_0900_ai_ci'"},
        {"COM_QUERY": "SET @@session.autocommit = OFF"}]
    greeted, login_, change = recorded[:3]
    assert greeted[1][0]["Greeting"]["auth_plugin"] == "caching_sha2_password"
    assert login_[1] == change[1] == [{"AuthSwitchRequest": {"plugin": "mysql_native_password"}},
                                      {"OK": {"affected_rows": 0, "last_insert_id": 0, "status": 2,
                                              "warnings": 0}}]
    assert change[0]["COM_CHANGE_USER"]["user"] == "root2"
    assert change[0]["COM_CHANGE_USER"]["auth_response"] == "<redacted>"
    # replayed: the change of user plays the recorded switch with the live scramble
    replayer = Mocks("mysql", [Interaction(change[0], change[1], "session")])
    session = replayer.session(MySQLReplayer())
    replayer.step(session, Opened(), 0.0)
    replayer.replay(session, login())
    switch, _ = replayer.replay(session, frame(b"\x11root2\0\x14" + b"p" * 20 + b"\0\xff\0", 0)[0])
    assert packets(switch)[0][1].startswith(b"\xfemysql_native_password\0")
    ok, _ = replayer.replay(session, frame(b"p" * 20, 2)[0])
    assert packets(ok)[0] == (3, p.build_ok({"status": 2}, CLIENT_CAPS & SERVER_CAPS))


def test_an_injected_fault_is_the_err_packet_mariadb_sends() -> None:
    replayer = MySQLReplayer()
    replayer.respond(replayer.opened()[0], [])
    [login_] = replayer.feed(login())
    replayer.respond(login_, [])
    [query] = replayer.feed(frame(b"\x03UPDATE t SET n = 1", 0)[0])
    [(seq, payload)] = packets(replayer.fault(query, Failure("1213")))
    assert seq == 1 and p.parse_err(payload) == {
        "code": 1213, "state": "40001",
        "message": "Deadlock found when trying to get lock; try restarting transaction"}
    assert not replayer.close_after
    replayer.fault(query, Failure("1927", message="bye"))
    assert replayer.close_after  # the server hangs up after "Connection was killed"
    with pytest.raises(ValueError, match="error number"):
        check_fault(Failure("40001x"))


def test_values_the_app_generated_are_volatile_in_sql_and_parameters() -> None:
    now = datetime.now(UTC)
    token = str(uuid.uuid4())
    query = {"COM_QUERY": f"INSERT INTO s (id, at) VALUES ('{token}', '{now:%Y-%m-%d %H:%M:%S}')"}
    assert volatile(query, now) == [token, f"{now:%Y-%m-%d %H:%M:%S}"]
    execute = {"COM_STMT_EXECUTE": {"sql": "INSERT INTO s VALUES (?, ?, ?)",
                                    "params": [token, 7, int(now.timestamp())], "types": []}}
    assert volatile(execute, now) == [token, str(int(now.timestamp()))]
    assert volatile({"HandshakeResponse": {"user": token}}, now) == []


@pytest.mark.parametrize("tail", [b"", b"\x02hi"])
def test_an_ok_announcing_session_state_without_it_round_trips(tail: bytes) -> None:
    # fuzzing: status 0x7F02 (SESSION_STATE_CHANGED set) and no state bytes after the
    # info; build_ok drops the flag without a state, so parse_ok must not keep it either
    caps = CLIENT_SESSION_TRACK | CLIENT_PROTOCOL_41
    ok = p.parse_ok(b"\x00\x00\x00\x02\x7f\x00\x00" + tail, caps)
    assert ok["status"] == 0x3F02 and "session_state" not in ok
    assert p.parse_ok(p.build_ok(ok, caps), caps) == ok
    with_state = p.parse_ok(b"\x00\x00\x00\x02\x7f\x00\x00\x00\x03abc", caps)
    assert with_state["status"] == 0x7F02 and with_state["session_state"] == {"hex": "616263"}
