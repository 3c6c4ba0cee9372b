"""Connection-level events end to end (real servers, real clients, the real CLI through
eBPF): recorded once, the server stopped, replayed; the app must print the same.

Each scenario fails on a replay that answers every request but ignores what happened
to the connections: a server that hung up (pg_terminate_backend, CLIENT KILL, HTTP/1.0),
a request never answered (a cancelled BRPOP), an answer that took long (asyncpg's
``timeout=`` against pg_sleep, cancelled), messages pushed because of another connection
(pub/sub, LISTEN/NOTIFY), a port that refused. And a stuck connection never keeps the
run alive after the command exited.
"""

from __future__ import annotations

import http.server
import os
import signal
import socket
import struct
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.support.proc import run_trproxy
from tests.support.services import free_port

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)


def _script(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "app.py"
    path.write_text(textwrap.dedent(text))
    return [sys.executable, str(path)]


def _record_then_replay(tmp_path: Path, app: list[str], stop, *args: str):  # type: ignore[no-untyped-def]
    rec = tmp_path / "rec"
    recorded = run_trproxy("record", "--dir", str(rec), "--", *app, *args)
    assert recorded.returncode == 0, recorded.stderr
    stop()
    replayed = run_trproxy("replay", "--dir", str(rec), "--", *app, *args)
    assert replayed.returncode == 0, replayed.stderr
    docs = [d for d in yaml.safe_load_all((rec / "test-set-0" / "mocks.yaml").read_text()) if d]
    return recorded, replayed, docs


def _events(docs: list[dict]) -> list[str]:
    return [d["spec"]["event"] for d in docs if d["spec"].get("lifetime") == "event"]


PG_TERMINATE = """
import select, sys, psycopg
dsn = sys.argv[1]
a = psycopg.connect(dsn, autocommit=True)
b = psycopg.connect(dsn, autocommit=True)
pid = b.execute("SELECT pg_backend_pid()").fetchone()[0]
print(a.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone())
# the FATAL reaches b before b sends anything more: a push, not an answer to SELECT 1
select.select([b.fileno()], [], [], 30)
try:
    b.execute("SELECT 1")
    print("b still answers")
except psycopg.OperationalError as e:
    print("b:", type(e).__name__, str(e).splitlines()[0])
print(a.execute("SELECT 2").fetchone())
"""


def test_pg_terminate_backend_closes_the_other_connection(tmp_path, postgres_server):
    recorded, replayed, docs = _record_then_replay(tmp_path, _script(tmp_path, PG_TERMINATE),
                                                   postgres_server.stop, postgres_server.dsn)
    assert "b: AdminShutdown terminating connection" in recorded.stdout
    assert replayed.stdout == recorded.stdout
    # the FATAL, then the server's end of b: a close, or a reset when b's next query
    # reached the closed socket first (which one is the machine's timing; so is a's close
    # at exit, recorded when the server's FIN came before the client's end completed)
    events = _events(docs)
    assert events[0] == "push" and {"close", "reset"} & set(events[1:]), events
    assert "trproxy: 0 misses" in replayed.stderr


REDIS_KILL = """
import sys, threading, time, redis
from redis.backoff import NoBackoff
from redis.retry import Retry
port = int(sys.argv[1])
a = redis.Redis(port=port, protocol=2)
b = redis.Redis(port=port, protocol=2, retry=Retry(NoBackoff(), 0), single_connection_client=True)
victim = b.client_id()
got = []
def blocked():
    try:
        got.append(b.blpop("queue", 0))
    except redis.ConnectionError as e:
        got.append(type(e).__name__)
t = threading.Thread(target=blocked)
t.start()
time.sleep(0.5)  # b is blocked in BLPOP
print(a.client_kill_filter(_id=victim))
t.join(20)
print("b:", *got)
print("joined", not t.is_alive())
"""


def test_client_kill_closes_the_killed_connection(tmp_path, redis_server):
    recorded, replayed, docs = _record_then_replay(tmp_path, _script(tmp_path, REDIS_KILL),
                                                   redis_server.stop, str(redis_server.port))
    assert recorded.stdout.splitlines() == ["1", "b: ConnectionError", "joined True"]
    assert replayed.stdout == recorded.stdout  # not a miss for the BLPOP, not a hang
    assert "close" in _events(docs)
    blpop = next(d for d in docs if d["spec"].get("summary") == "BLPOP")
    assert blpop["spec"]["metadata"]["unanswered"]  # the server closed with it pending


class _Http10(http.server.BaseHTTPRequestHandler):
    """HTTP/1.0, no Content-Length: the body ends when the server closes."""

    protocol_version = "HTTP/1.0"

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(b"delimited by the close " + self.path.encode())

    def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
        pass


REQUESTS = """
import sys, requests
for path in ("/a", "/b"):
    r = requests.get(f"http://127.0.0.1:{sys.argv[1]}{path}", timeout=20)
    print(r.status_code, r.headers.get("Content-Length"), r.text)
"""


def _against_http_server(tmp_path, handler, script: str):
    """``script`` recorded against a stdlib HTTP server with ``handler``, then replayed
    with the server stopped (``_record_then_replay``)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    try:
        return _record_then_replay(tmp_path, _script(tmp_path, script), stop,
                                   str(server.server_address[1]))
    finally:
        stop()


def test_requests_against_an_http_1_0_server(tmp_path):
    recorded, replayed, docs = _against_http_server(tmp_path, _Http10, REQUESTS)
    assert recorded.stdout.splitlines() == ["200 None delimited by the close /a",
                                            "200 None delimited by the close /b"]
    assert replayed.stdout == recorded.stdout  # delimited by the close, as recorded
    assert _events(docs) == ["close", "close"]


ASYNCPG_TIMEOUT = """
import asyncio, sys, asyncpg
async def main():
    c = await asyncpg.connect(sys.argv[1])
    try:
        await c.fetch("SELECT pg_sleep(5)", timeout=1)
        print("no timeout")
    except Exception as e:
        print(type(e).__name__)
    print(await c.fetchval("SELECT 40 + 2"))
    await c.close()
asyncio.run(main())
"""


def test_asyncpg_timeout_against_pg_sleep_times_out_again(tmp_path, postgres_server):
    """Recorded: asyncpg's timeout fired after 1 s and it cancelled the query (a
    CancelRequest on a new connection). Replayed: the answer is held until that cancel,
    so the app times out again, instead of getting QueryCanceledError at once."""
    start = time.monotonic()
    recorded, replayed, docs = _record_then_replay(tmp_path, _script(tmp_path, ASYNCPG_TIMEOUT),
                                                   postgres_server.stop, postgres_server.dsn)
    assert recorded.stdout.splitlines() == ["TimeoutError", "42"]
    assert replayed.stdout == recorded.stdout
    slow = next(d for d in docs if "57014" in str(d["spec"]["responses"]))
    # its answer came when the cancel did, about the 1 s timeout after the query left
    assert slow["spec"]["metadata"]["interrupted"] and slow["spec"]["metadata"]["wait_ms"] >= 900
    assert time.monotonic() - start > 2  # both runs waited for the timeout


REDIS_PUBSUB = """
import sys, redis
port = int(sys.argv[1])
r = redis.Redis(port=port, protocol=2)
p = r.pubsub()
p.subscribe("news")
print(p.get_message(timeout=5))
print(p.get_message(timeout=0.5))  # nothing was published yet
print(r.publish("news", "hi"))
print(p.get_message(timeout=5))
"""


def test_pubsub_messages_arrive_after_the_publish(tmp_path, redis_server):
    recorded, replayed, docs = _record_then_replay(tmp_path, _script(tmp_path, REDIS_PUBSUB),
                                                   redis_server.stop, str(redis_server.port))
    lines = recorded.stdout.splitlines()
    assert lines[1] == "None" and "'data': b'hi'" in lines[3]
    assert replayed.stdout == recorded.stdout
    assert "push" in _events(docs)


PG_NOTIFY = """
import sys, psycopg
dsn = sys.argv[1]
listener = psycopg.connect(dsn, autocommit=True)
notifier = psycopg.connect(dsn, autocommit=True)
listener.execute("LISTEN jobs")
print([n.payload for n in listener.notifies(timeout=0.5)])  # nothing yet
notifier.execute("NOTIFY jobs, 'job 1'")
print([(n.channel, n.payload) for n in listener.notifies(timeout=5, stop_after=1)])
"""


def test_listen_notify_across_two_connections(tmp_path, postgres_server):
    recorded, replayed, docs = _record_then_replay(tmp_path, _script(tmp_path, PG_NOTIFY),
                                                   postgres_server.stop, postgres_server.dsn)
    assert recorded.stdout.splitlines() == ["[]", "[('jobs', 'job 1')]"]
    assert replayed.stdout == recorded.stdout
    assert "push" in _events(docs)


BRPOP = """
import sys, redis
from redis.backoff import NoBackoff
from redis.retry import Retry
r = redis.Redis(port=int(sys.argv[1]), protocol=2, socket_timeout=0.5, retry=Retry(NoBackoff(), 0))
print(r.set("k", "v"))
try:
    print(r.brpop("nothing", 0))
except redis.TimeoutError as e:
    print(type(e).__name__)
"""


def test_a_request_the_client_gave_up_on_is_not_answered_again(tmp_path, redis_server):
    recorded, replayed, docs = _record_then_replay(tmp_path, _script(tmp_path, BRPOP),
                                                   redis_server.stop, str(redis_server.port))
    assert recorded.stdout.splitlines() == ["True", "TimeoutError"]
    assert replayed.stdout == recorded.stdout  # not a ResponseError for a miss
    brpop = next(d for d in docs if d["spec"].get("summary") == "BRPOP")
    assert brpop["spec"]["metadata"]["unanswered"] and brpop["spec"]["responses"] == []
    assert "trproxy: 0 misses" in replayed.stderr


REFUSED = """
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10)
    print("connected", s.recv(1))
except OSError as e:
    print(type(e).__name__)
"""


def test_a_refused_port_is_refused_again_and_an_unknown_one_is_reported(tmp_path):
    port, other = free_port(), free_port()
    app = _script(tmp_path, REFUSED)
    rec = tmp_path / "rec"
    recorded = run_trproxy("record", "--dir", str(rec), "--", *app, str(port))
    replayed = run_trproxy("replay", "--dir", str(rec), "--", *app, str(port))
    unknown = run_trproxy("replay", "--dir", str(rec), "--", *app, str(other))
    assert recorded.returncode == replayed.returncode == 0
    # recording, the proxy accepted and reset once the server refused it; at replay the
    # redirect refuses at connect (Redirector.refuse / allow_only), as the server did
    assert recorded.stdout.strip() in ("ConnectionRefusedError", "ConnectionResetError")
    assert replayed.stdout.strip() == "ConnectionRefusedError"
    assert "trproxy: 0 misses" in replayed.stderr
    assert unknown.stdout.strip() == "ConnectionRefusedError"
    assert "trproxy: 1 misses" in unknown.stderr and "nothing was recorded for this destination" \
        in unknown.stderr
    docs = list(yaml.safe_load_all((rec / "test-set-0" / "mocks.yaml").read_text()))
    assert [d["spec"]["event"] for d in docs if d] == ["refused"]


STUCK = """
import os, subprocess, sys
# a grandchild keeps a connection whose request is never answered, and outlives us
code = ("import redis, sys; r = redis.Redis(port=int(sys.argv[1]), protocol=2); "
        "r.set('k', 'v'); print('blocking', flush=True); r.brpop('nothing', 0)")
child = subprocess.Popen([sys.executable, "-c", code, sys.argv[1]], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
print(child.stdout.readline().strip(), child.pid, flush=True)
"""


def test_the_run_ends_when_the_command_exits_even_with_a_stuck_connection(tmp_path, redis_server):
    app = _script(tmp_path, STUCK)
    rec = tmp_path / "rec"
    pids: list[int] = []
    try:
        for mode in ("record", "replay"):
            # ends after the proxy's grace period (2 s), never waiting for the stuck BRPOP
            # (forever): a run that waited would fail by the timeout, however loaded the machine
            out = run_trproxy(mode, "--dir", str(rec), "--", *app, str(redis_server.port),
                              timeout=180)
            pids.append(int(out.stdout.split()[-1]))
            assert out.returncode == 0, out.stderr
            assert out.stdout.split()[0] == "blocking"
            if mode == "record":
                os.kill(pids[-1], signal.SIGKILL)  # the record-time BRPOP: given up
                time.sleep(0.5)
                redis_server.stop()
    finally:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class _CutByReset(http.server.BaseHTTPRequestHandler):
    """Promises 100 bytes, sends 30, resets the connection (a crashed backend)."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", "100")
        self.end_headers()
        self.wfile.write(b"only thirty bytes of a hundred")
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()  # RST now (socketserver would send a FIN first)
        self.close_connection = True

    def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
        pass


CUT = """
import sys, requests
try:
    r = requests.get(f"http://127.0.0.1:{sys.argv[1]}/big", timeout=20)
    print(r.status_code, len(r.content))
except requests.RequestException as e:
    print(type(e).__name__)
"""


def test_an_http_response_cut_by_a_reset_is_cut_again(tmp_path):
    recorded, replayed, docs = _against_http_server(tmp_path, _CutByReset, CUT)
    assert recorded.stdout.strip() == "ChunkedEncodingError"  # the body ended short
    assert replayed.stdout == recorded.stdout  # not a 502 for a request never recorded
    assert "reset" in _events(docs)
    cut = next(d for d in docs if d["spec"].get("responses"))
    assert cut["spec"]["responses"][0]["truncated"] is True
