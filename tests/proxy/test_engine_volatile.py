"""Replay of requests carrying values the app generates (``protocols/volatile.py``), as
transcripts: a recording listed as volatile matches through them, the pairs recorded ->
live are kept for later requests and replies, and a contradiction is a miss."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.support.playbook import Playbook, client, miss, send
from trproxy.protocols.redis.resp import Command, encode_command
from trproxy.store import Exchange

TOKEN = "1dd943eaeebc11f1bb1402fc00000001"  # recorded
LIVE = "7c21b0e4a9d811f1a3b502fc00000002"  # what the app sends at replay
OTHER = "0a9b8c7d6e5f11f1a3b502fc00000003"


def ex(request: list[str], responses: list, volatile: bool = True) -> Exchange:
    return Exchange("redis", "127.0.0.1:1", request, responses, summary=request[0],
                    connection=1, extra={"volatile": [TOKEN]} if volatile else {})


def cmd(*args: str) -> bytes:
    return encode_command(Command(tuple(a.encode() for a in args)))


RECORDED = [ex(["SET", "lock", TOKEN, "NX", "PX", "10000"], [{"simple": "OK"}]),
            ex(["GET", "lock"], [TOKEN], volatile=False),
            ex(["EVALSHA", "c3f8721cbb97f72bc19e972846bd7aaf91901658", "1", "lock", TOKEN],
               [{"int": 1}])]


def test_a_lock_token_is_matched_mapped_and_echoed_live():
    assert (Playbook("redis", RECORDED)
            >> client(cmd("SET", "lock", LIVE, "NX", "PX", "10000")) << send(b"+OK\r\n")
            >> client(cmd("GET", "lock")) << send(f"${len(LIVE)}\r\n{LIVE}\r\n".encode())
            >> client(cmd("EVALSHA", "c3f8721cbb97f72bc19e972846bd7aaf91901658", "1", "lock", LIVE))
            << send(b":1\r\n"))


def test_a_value_that_contradicts_the_mapping_misses():
    reason = (f"the recording that matches with its volatile values masked does not fit the "
              f"values seen so far: recorded {TOKEN} already stands for {LIVE}")
    assert (Playbook("redis", RECORDED)
            >> client(cmd("SET", "lock", LIVE, "NX", "PX", "10000")) << send(b"+OK\r\n")
            >> client(cmd("GET", "lock")) << send(f"${len(LIVE)}\r\n{LIVE}\r\n".encode())
            >> client(cmd("EVALSHA", "c3f8721cbb97f72bc19e972846bd7aaf91901658", "1", "lock", OTHER))
            << miss("EVALSHA", reason) << send(lambda data: data.startswith(b"-ERR trproxy:")))


def test_without_a_volatile_list_the_values_must_be_equal():
    recorded = [ex(["SET", "lock", TOKEN, "NX", "PX", "10000"], [{"simple": "OK"}], volatile=False)]
    assert (Playbook("redis", recorded)
            >> client(cmd("SET", "lock", LIVE, "NX", "PX", "10000"))
            << miss("SET", "no recorded request matches")
            << send(lambda data: data.startswith(b"-ERR trproxy:")))


# -- a password the run sets itself (CONFIG SET requirepass <random>, then AUTH with it) --

def _login_recordings() -> list[Exchange]:
    """As recorded: connection 1 sets a random password, connection 2 logs in with a wrong
    one (WRONGPASS) and then with the one set."""
    from trproxy.protocols.redis.commands import redact_request, volatile

    def rec(args: tuple[bytes, ...], responses: list, connection: int) -> Exchange:
        request = [a.decode() for a in redact_request(args)]
        values = volatile(request, datetime.now(UTC))
        return Exchange("redis", "127.0.0.1:1", request, responses, summary=request[0],
                        connection=connection, extra={"volatile": values} if values else {})

    return [rec((b"CONFIG", b"SET", b"requirepass", b"recorded-Pw-41x"), [{"simple": "OK"}], 1),
            rec((b"AUTH", b"wrong-pw"), [{"error": "WRONGPASS invalid username-password pair"}], 2),
            rec((b"AUTH", b"recorded-Pw-41x"), [{"simple": "OK"}], 2)]


def test_a_password_the_run_set_itself_is_mapped_so_its_login_matches():
    book = Playbook("redis", _login_recordings())
    assert book >> client(cmd("CONFIG", "SET", "requirepass", "live-Pw-97q")) << send(b"+OK\r\n")
    login = book.connection()
    assert (login >> client(cmd("AUTH", "wrong-pw"))
            << send(b"-WRONGPASS invalid username-password pair\r\n")
            >> client(cmd("AUTH", "live-Pw-97q")) << send(b"+OK\r\n"))


def test_other_credentials_and_the_replaced_password_are_refused():
    book = Playbook("redis", _login_recordings())
    assert book >> client(cmd("CONFIG", "SET", "requirepass", "live-Pw-97q")) << send(b"+OK\r\n")
    login = book.connection()
    assert (login >> client(cmd("AUTH", "another-pw")) << miss("AUTH", "no recorded request matches")
            << send(lambda data: data.startswith(b"-WRONGPASS trproxy:"))
            # the recorded password is no longer the server's: this run set another one
            >> client(cmd("AUTH", "recorded-Pw-41x"))
            << miss("AUTH", "1 credential(s) recorded here were replaced by the ones this run "
                    "set itself: the old one is wrong now")
            << send(lambda data: data.startswith(b"-WRONGPASS trproxy:")))


def test_without_the_password_set_first_the_login_does_not_match():
    recorded = _login_recordings()
    assert (Playbook("redis", recorded) >> client(cmd("AUTH", "live-Pw-97q"))
            << miss("AUTH", "no recorded request matches")
            << send(lambda data: data.startswith(b"-WRONGPASS trproxy:")))


# -- an id made in one test and sent again in a later one --------------------------------

ID_A, ID_B = "5b0f0a52-7d0e-4c7f-9a0e-6a2b3c4d5e6f", "8c9faca0-0655-4111-9fca-0488191da224"
LIVE_A = "da799d08-8025-4990-9782-0558361c1db3"


def test_an_id_paired_in_an_earlier_test_keeps_its_recorded_value_in_later_ones():
    """FastAPI's BackgroundTasks run after the answer: the event of the item created in
    test-1 reaches Redis during test-2, before test-2's own. Looked up through masks alone
    it would take the first event of test-2 (item B's) and pair B with item A's live id."""
    def tagged(request: list[str], responses: list, test: str) -> Exchange:
        return Exchange("redis", "127.0.0.1:1", request, responses, summary=request[0], connection=1,
                        extra={"volatile": [v for v in (ID_A, ID_B) if v in " ".join(request)]},
                        tests=[test])

    recorded = [tagged(["SET", f"item:{ID_A}", "a"], [{"simple": "OK"}], "test-1"),
                tagged(["LPUSH", "events", ID_B], [{"int": 1}], "test-2"),
                tagged(["LPUSH", "events", ID_A], [{"int": 2}], "test-2")]
    book = Playbook("redis", recorded)
    book.mocks.ctx.current_test = "test-1"
    assert book >> client(cmd("SET", f"item:{LIVE_A}", "a")) << send(b"+OK\r\n")
    book.mocks.ctx.current_test = "test-2"
    assert book >> client(cmd("LPUSH", "events", LIVE_A)) << send(b":2\r\n")
