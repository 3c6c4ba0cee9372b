"""DNS end to end: an app configured with host names that exist only while recording.

The test starts a real DNS server (dnsmasq) on a loopback address of its own and runs
trproxy and the app in a mount namespace whose /etc/resolv.conf names that server and
whose /etc/hosts has one extra name (``unshare --mount``; the machine's files are not
touched). The app resolves its names with glibc and talks to Redis and Postgres by name.
Record; stop the DNS server (the names are gone: without trproxy they no longer resolve)
and the servers; replay gives the same output with 0 misses. localhost and the /etc/hosts
name never reach DNS.
"""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
import yaml

from tests.support.dnsserver import DnsServer
from tests.support.proc import ROOT, TRPROXY

pytestmark = [pytest.mark.slow, pytest.mark.root]


def _namespace(tmp_path, nameserver: str) -> list[str]:
    """The prefix that runs a command with our resolv.conf and hosts (a private mount
    namespace, so nothing changes for anyone else)."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {nameserver}\noptions timeout:1 attempts:2\n")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.1 cache.local\n")
    script = 'mount --bind "$0" /etc/resolv.conf && mount --bind "$1" /etc/hosts && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(resolv), str(hosts)]


def _run(prefix: list[str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=180, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"})


def test_names_that_exist_only_at_record_time_replay(tmp_path, redis_server, postgres_server):
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("the eBPF redirect and mount namespaces need root")
    nameserver = f"127.53.{random.randrange(1, 255)}.{random.randrange(1, 255)}"
    prefix = _namespace(tmp_path, nameserver)
    dsn = postgres_server.dsn.replace(f"@{postgres_server.host}:", "@pg.internal:")
    app = [sys.executable, "tests/e2e/apps/dns_app.py", str(redis_server.port), dsn]
    rec = tmp_path / "rec"
    records = ["host-record=redis.internal,127.0.0.1", "host-record=pg.internal,127.0.0.1",
               "cname=www.internal,pg.internal"]
    with DnsServer(records, host=nameserver, port=53):
        direct = _run(prefix, *app)
        recorded = _run(prefix, *TRPROXY, "record", "--dir", str(rec), "--", *app)
    assert direct.returncode == 0, direct.stderr
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout == direct.stdout
    lines = recorded.stdout.splitlines()
    assert lines[:6] == ["redis.internal 127.0.0.1", "pg.internal 127.0.0.1", "www.internal 127.0.0.1",
                         "localhost 127.0.0.1", "cache.local 127.0.0.1",
                         f"missing.internal error {-2}"]  # EAI_NONAME: NXDOMAIN
    assert lines[6:] == ["b'hello from a name'", "(42, 'trproxy')"]

    docs = list(yaml.safe_load_all((rec / "test-set-0" / "mocks.yaml").read_text()))
    dns = [d for d in docs if d["kind"] == "dns"]
    asked = {(d["spec"]["request"]["name"], d["spec"]["request"]["type"]) for d in dns}
    assert {("redis.internal", "A"), ("pg.internal", "A"), ("www.internal", "A"),
            ("missing.internal", "A")} <= asked
    assert not {n for n, _t in asked} & {"localhost", "cache.local"}  # /etc/hosts: no query
    assert all(d["spec"]["metadata"]["destination"] == f"{nameserver}:53" for d in dns)
    www = next(d for d in dns if d["spec"]["request"] == {"name": "www.internal", "type": "A"})
    assert [a["type"] for a in www["spec"]["responses"][0]["answers"]] == ["CNAME", "A"]
    assert {d["kind"] for d in docs} >= {"redis", "postgres"}

    redis_server.stop()
    postgres_server.stop()
    gone = _run(prefix, *app[:2])  # no trproxy: the names do not resolve any more
    assert "redis.internal error" in gone.stdout and "pg.internal error" in gone.stdout, gone.stdout
    replayed = _run(prefix, *TRPROXY, "replay", "--dir", str(rec), "--", *app)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == recorded.stdout
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    assert "dns" in replayed.stderr.split("served", 1)[1].splitlines()[0]


def test_a_name_never_recorded_is_a_miss_naming_the_closest(tmp_path):
    if subprocess.run(["id", "-u"], capture_output=True, text=True).stdout.strip() != "0":
        pytest.skip("the eBPF redirect and mount namespaces need root")
    nameserver = f"127.53.{random.randrange(1, 255)}.{random.randrange(1, 255)}"
    prefix = _namespace(tmp_path, nameserver)
    rec = tmp_path / "rec"
    lookup = "import socket, sys\ntry:\n    print(socket.gethostbyname(sys.argv[1]))\nexcept OSError as e:\n    print('error', e.errno)"
    with DnsServer(["host-record=db.internal,127.0.0.7"], host=nameserver, port=53):
        recorded = _run(prefix, *TRPROXY, "record", "--dir", str(rec), "--", sys.executable, "-c", lookup,
                        "db.internal")
    assert recorded.returncode == 0 and recorded.stdout == "127.0.0.7\n", recorded.stderr
    replayed = _run(prefix, *TRPROXY, "replay", "--dir", str(rec), "--", sys.executable, "-c", lookup,
                    "dbx.internal")
    assert replayed.stdout.startswith("error"), replayed.stdout  # SERVFAIL: the lookup fails
    assert "dns" in replayed.stderr and "closest recorded: A db.internal" in replayed.stderr, replayed.stderr


TCP_APP = """
import random, socket, sys
from trproxy.protocols.dns import codec, readable
from tests.support.dnsserver import query
with socket.create_connection((sys.argv[1], 53), timeout=5) as s:
    ident = random.randrange(65536)  # another id at every run
    s.sendall(codec.tcp_frame(query(sys.argv[2], 1, ident)))
    framer, got = codec.TcpFramer(), []
    while not got:
        got = framer.feed(s.recv(4096))
answer = codec.parse(got[0])
print(answer.id == ident, readable.answer(answer))
"""


def test_dns_over_tcp_replays_with_the_live_query_id(tmp_path):
    nameserver = f"127.53.{random.randrange(1, 255)}.{random.randrange(1, 255)}"
    rec = tmp_path / "rec"
    app = [sys.executable, "-c", TCP_APP, nameserver, "www.internal"]
    with DnsServer(["host-record=db.internal,127.0.0.1", "cname=www.internal,db.internal"], host=nameserver,
                   port=53):
        recorded = _run([], *TRPROXY, "record", "--dir", str(rec), "--", *app)
    assert recorded.returncode == 0, recorded.stderr
    assert recorded.stdout.startswith("True {'rcode': 'NOERROR', 'answers': [{'name': 'www.internal', 'type': 'CNAME'")
    assert "kind: dns" in (rec / "test-set-0" / "mocks.yaml").read_text()
    replayed = _run([], *TRPROXY, "replay", "--dir", str(rec), "--", *app)
    assert replayed.stdout == recorded.stdout, replayed.stderr
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr


HTTP_APP = """
import json, signal, socket, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        name = self.path.rpartition("=")[2]
        try:
            found = socket.gethostbyname(name)
        except OSError as exc:
            found = f"error {exc.errno}"
        body = json.dumps({"name": name, "address": found}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def test_trproxy_test_answers_the_apps_names_from_the_recording(tmp_path):
    """An inbound call whose handler resolves a name: recorded as a test case with its DNS
    answer; ``trproxy test`` passes after the name is gone."""
    import json
    import urllib.request

    from tests.support.services import free_port, wait_port

    nameserver = f"127.53.{random.randrange(1, 255)}.{random.randrange(1, 255)}"
    prefix = _namespace(tmp_path, nameserver)
    rec, port = tmp_path / "rec", free_port()
    app = [sys.executable, "-c", HTTP_APP, str(port)]
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    with DnsServer(["host-record=api.internal,127.0.0.8"], host=nameserver, port=53):
        proc = subprocess.Popen([*prefix, *TRPROXY, "record", "--dir", str(rec), "--app-port", str(port), "--",
                                 *app], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            wait_port("127.0.0.1", port, timeout=60, proc=proc)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/resolve?name=api.internal", timeout=30) as resp:
                assert json.loads(resp.read()) == {"name": "api.internal", "address": "127.0.0.8"}
        finally:
            proc.terminate()
            _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    tested = _run(prefix, *TRPROXY, "test", "--dir", str(rec), "--", *app)
    assert tested.returncode == 0, tested.stderr
    assert "1 tests: 1 passed, 0 failed, 0 errors" in tested.stderr, tested.stderr
