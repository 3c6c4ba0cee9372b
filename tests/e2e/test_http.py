"""HTTP and HTTPS end to end through the real ``trproxy`` CLI.

Each test runs a real client program under ``trproxy record``, stops the real
server(s), runs the same program under ``trproxy replay`` and compares what the
program printed. With root the eBPF redirect is used (``trproxy record -- CMD``);
``test_forward_fallback_*`` uses the documented no-eBPF fallback (``--no-redirect
--forward LISTEN=UPSTREAM``). Servers run in this test process, outside the child's
cgroup, on 127.0.0.1. ``TRPROXY_HOME`` points at a temporary directory, so the CA
is created there and never in the user's home.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.protocols.http.servers import H1Server, H2Server, _Handler
from tests.support.proc import run_trproxy
from tests.support.services import free_port
from trproxy.protocols.secrets import standin
from trproxy.tls.ca import CertificateAuthority

pytestmark = pytest.mark.slow

# eBPF tests: marked root (CI turns their skip into a failure, see tests/conftest.py)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="the eBPF redirect needs root")

SECRETS = ("e2e-secret-token", "s3cr3t-cookie", "hunter2-password")

H1_CLIENT = r'''
import json, sys, subprocess, urllib.request
import requests
base = sys.argv[1]
extra = sys.argv[2:]
out = []
with requests.Session() as s:
    s.headers["Authorization"] = "Bearer e2e-secret-token"
    s.cookies.set("sid", "s3cr3t-cookie")
    for path in ["/json", "/cookies", "/chunked", "/gzip", "/br", "/binary", "/nocontent"] + extra:
        r = s.get(base + path)
        out.append(["requests", path, r.status_code, r.content.hex(), r.headers.get("content-type"),
                    r.raw.headers.getlist("set-cookie") and len(r.raw.headers.getlist("set-cookie"))])
    r = s.head(base + "/json")
    out.append(["requests", "HEAD /json", r.status_code, r.headers.get("content-length")])
    r = s.post(base + "/echo?b=2&a=1", json={"user": "ann", "password": "hunter2-password"})
    out.append(["requests", "/echo", r.status_code, r.json()["received"]["user"]])
with urllib.request.urlopen(base + "/text") as r:
    out.append(["urllib", "/text", r.status, r.read().decode()])
curl = subprocess.run(["curl", "-sS", "-H", "Expect: 100-continue", "--data-binary", "@-",
                       "-H", "Content-Type: text/plain", base + "/echo"],
                      input=b"x" * 5000, capture_output=True, check=True)
out.append(["curl", "/echo", json.loads(curl.stdout)["received"][:10]])
print(json.dumps(out, indent=1))
'''

TLS_CLIENT = r'''
import hashlib, json, sys, httpx, requests
h2, h1 = sys.argv[1], sys.argv[2]
out = []
with httpx.Client(http2=True, timeout=60) as c:  # trusts trproxy's CA through SSL_CERT_FILE
    for path in ["/json", "/cookies", "/gzip", "/big?n=70000", "/trailers", "/early",
                 "/big?n=9000000"]:
        r = c.get(h2 + path, headers={"authorization": "Bearer e2e-secret-token"})
        out.append([r.http_version, path, r.status_code, r.content.hex()[:200], len(r.content),
                    hashlib.sha256(r.content).hexdigest(),
                    r.headers.get_list("set-cookie") and len(r.headers.get_list("set-cookie")),
                    dict(r.headers).get("content-type")])
    r = c.post(h2 + "/echo", json={"password": "hunter2-password", "n": 1})
    out.append([r.http_version, "/echo", r.status_code, r.json()["received"]["n"]])
with requests.Session() as s:  # trusts it through REQUESTS_CA_BUNDLE
    for path in ["/json", "/chunked", "/cookies"]:
        r = s.get(h1 + path)
        out.append(["requests", path, r.status_code, r.text])
print(json.dumps(out, indent=1))
'''


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "trproxy-home"
    monkeypatch.setenv("TRPROXY_HOME", str(path))
    return path


def _script(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "client.py"
    path.write_text(textwrap.dedent(text))
    return path


def _trproxy(mode: str, rec: Path, *args: str, env: dict | None = None):
    result = run_trproxy(mode, "--dir", str(rec), *args, env=env or {}, timeout=120)
    assert result.returncode == 0, f"trproxy {mode} failed\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result


def _exchanges(mocks: str) -> int:
    """HTTP exchanges in a recording (connection events, such as a server's close, aside)."""
    return mocks.count("kind: http") - mocks.count("lifetime: event")


def _mocks(rec: Path) -> str:
    return (rec / "test-set-0" / "mocks.yaml").read_text()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
@pytest.mark.usefixtures("home")
@pytest.mark.root
@needs_root
def test_http_record_then_replay_with_ebpf(tmp_path, host):
    client = _script(tmp_path, H1_CLIENT)
    server = H1Server().start()
    base = f"http://{host}:{server.port}"
    rec = tmp_path / "rec"
    try:
        recorded = _trproxy("record", rec, "--", sys.executable, str(client), base)
    finally:
        server.close()
    mocks = _mocks(rec)
    assert _exchanges(mocks) == 11, recorded.stderr  # 7 GET, HEAD, POST, urllib, curl
    for secret in SECRETS:
        assert secret not in mocks
    assert "<secret:" in mocks and "style: spaced" in mocks
    replayed = _trproxy("replay", rec, "--", sys.executable, str(client), base)
    assert replayed.stdout == recorded.stdout
    assert json.loads(replayed.stdout)[2][3] == b"first second third".hex()
    assert "trproxy: 0 misses" in replayed.stderr


@pytest.mark.usefixtures("home")
@pytest.mark.root
@needs_root
def test_replay_miss_is_a_502_and_reported(tmp_path):
    client = _script(tmp_path, H1_CLIENT)
    server = H1Server().start()
    base = f"http://127.0.0.1:{server.port}"
    rec = tmp_path / "rec"
    try:
        _trproxy("record", rec, "--", sys.executable, str(client), base)
    finally:
        server.close()
    replayed = _trproxy("replay", rec, "--", sys.executable, str(client), base, "/never-recorded?x=1")
    rows = {row[1]: row for row in json.loads(replayed.stdout)}
    miss = rows["/never-recorded?x=1"]
    assert miss[2] == 502
    assert "no recorded response matches GET 127.0.0.1" in bytes.fromhex(miss[3]).decode()
    assert "trproxy: 1 misses" in replayed.stderr
    assert rows["/json"][2] == 200  # the rest is still served


def _tls_servers(upstream_ca: CertificateAuthority) -> tuple[H2Server, ThreadingHTTPServer]:
    h2 = H2Server(ssl_context=upstream_ca.server_context("localhost", ["h2"])).start()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.socket = upstream_ca.server_context("localhost", ["http/1.1"]).wrap_socket(
        httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return h2, httpd


@pytest.mark.root
@needs_root
def test_https_and_h2_record_then_replay_with_ebpf(tmp_path, home):
    """TLS intercepted with our CA (trusted by the child through ca_env), upstream
    verified against the test CA given with --tls-ca; HTTP/2 chosen by ALPN on both
    sides; replay with the servers gone returns the same bytes. A 9 MB body (over
    max_body) is recorded as a file and streamed back over HTTP/2 + TLS."""
    upstream_ca = CertificateAuthority(tmp_path / "upstream-ca")
    client = _script(tmp_path, TLS_CLIENT)
    h2, httpd = _tls_servers(upstream_ca)
    args = [f"https://localhost:{h2.port}", f"https://localhost:{httpd.server_address[1]}"]
    rec = tmp_path / "rec"
    try:
        recorded = _trproxy("record", rec, "-v", "--tls-ca", str(upstream_ca.cert_path), "--",
                            sys.executable, str(client), *args)
    finally:
        h2.close()
        httpd.shutdown()
        httpd.server_close()
    assert "TLS intercepted for localhost (ALPN h2)" in recorded.stderr
    assert "TLS intercepted for localhost (ALPN http/1.1)" in recorded.stderr
    mocks = _mocks(rec)
    assert _exchanges(mocks) == 11
    assert "url: https://localhost:" in mocks and "http_version: HTTP/2.0" in mocks
    for secret in SECRETS:
        assert secret not in mocks
    assert (home / "trproxy-ca.pem").stat().st_mode & 0o777 == 0o600
    rows = json.loads(recorded.stdout)
    assert rows[0][0] == "HTTP/2" and rows[3][4] == 70000 and rows[6][4] == 9_000_000
    big = rows[6][5]
    assert f"file: bodies/{big}" in mocks
    assert hashlib.sha256((rec / "test-set-0" / "bodies" / big).read_bytes()).hexdigest() == big
    replayed = _trproxy("replay", rec, "--", sys.executable, str(client), *args)
    assert replayed.stdout == recorded.stdout


PINNED_CLIENT = r'''
import json, ssl, sys, urllib.request
url, pinned_ca = sys.argv[1], sys.argv[2]
ctx = ssl.create_default_context(cafile=pinned_ca)  # trusts only the server's own CA
out = []
for attempt in range(2):
    try:
        with urllib.request.urlopen(url, context=ctx) as r:
            out.append(["ok", r.read().decode()])
    except Exception as e:
        out.append(["error", type(e).__name__])
print(json.dumps(out))
'''


@pytest.mark.root
@needs_root
def test_pinning_client_falls_back_to_passthrough(tmp_path, home):
    """An app that refuses our certificate fails once; trproxy then passes that host
    through untouched and says so; the retry reaches the real server."""
    upstream_ca = CertificateAuthority(tmp_path / "upstream-ca")
    client = _script(tmp_path, PINNED_CLIENT)
    _, httpd = _tls_servers(upstream_ca)
    try:
        recorded = _trproxy("record", tmp_path / "rec", "--tls-ca", str(upstream_ca.cert_path), "--",
                            sys.executable, str(client),
                            f"https://localhost:{httpd.server_address[1]}/text", str(upstream_ca.cert_path))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert json.loads(recorded.stdout) == [["error", "URLError"], ["ok", "hello, world\n"]], recorded.stderr
    # told by its process, found before our certificate went out (after, the refusing
    # client may be gone: its retry was then "another" client, refused again)
    assert re.search(r"process \d+ refused trproxy's certificate for localhost", recorded.stderr)
    assert "the app refused" not in recorded.stderr


@pytest.mark.root
@needs_root
def test_a_refusal_is_per_client_a_later_client_that_trusts_us_is_intercepted(tmp_path, home):
    """curl trusting only the server's CA refuses our certificate; a second curl in the
    same run trusts trproxy's CA (CURL_CA_BUNDLE, set for the run): it is intercepted and
    recorded, not passed through to a server whose certificate it does not trust."""
    upstream_ca = CertificateAuthority(tmp_path / "upstream-ca")
    _, httpd = _tls_servers(upstream_ca)
    url = f"https://localhost:{httpd.server_address[1]}/text"
    script = (f"curl -sS --cacert {upstream_ca.cert_path} {url}; echo rc=$?; "
              f"curl -sS {url}; echo rc=$?; curl -sS {url}; echo rc=$?")
    try:
        recorded = _trproxy("record", tmp_path / "rec", "--tls-ca", str(upstream_ca.cert_path), "--",
                            "sh", "-c", script)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert recorded.stdout.splitlines() == ["rc=60", "hello, world", "rc=0", "hello, world", "rc=0"]
    assert "refused trproxy's certificate for localhost" in recorded.stderr
    assert "refused our certificate" in recorded.stderr and "passed through for process" in recorded.stderr
    assert _exchanges(_mocks(tmp_path / "rec")) == 2


FORWARD_CLIENT = r'''
import json, sys, httpx
base = sys.argv[1]
out = []
with httpx.Client(timeout=60) as c:
    for path in ["/json", "/cookies", "/chunked", "/zstd", "/early", "/notmodified"]:
        r = c.get(base + path)
        out.append([path, r.status_code, r.text, r.headers.get_list("set-cookie")])
print(json.dumps(out))
'''


@pytest.mark.usefixtures("home")
def test_forward_fallback_without_ebpf(tmp_path):
    """No root needed: the app is pointed at the --forward listener."""
    client = _script(tmp_path, FORWARD_CLIENT)
    server = H1Server().start()
    listen = free_port()
    forward = f"127.0.0.1:{listen}=127.0.0.1:{server.port}"
    base = f"http://127.0.0.1:{listen}"
    rec = tmp_path / "rec"
    try:
        recorded = _trproxy("record", rec, "--no-redirect", "--forward", forward, "--",
                            sys.executable, str(client), base)
    finally:
        server.close()
    assert _exchanges(_mocks(rec)) == 6
    replayed = _trproxy("replay", rec, "--no-redirect", "--forward", forward, "--",
                        sys.executable, str(client), base)
    rows = json.loads(recorded.stdout)
    assert rows[0][1] == 200 and rows[4][2] == "<html>hi</html>"
    # cookie values are secrets in the recording: replay sends stand-ins for them
    for live, again in zip(rows, json.loads(replayed.stdout), strict=True):
        assert live[:3] == again[:3]
        assert [c.split("=")[0] for c in live[3]] == [c.split("=")[0] for c in again[3]]
    assert rows[1][3] and json.loads(replayed.stdout)[1][3][0].startswith(f"session={standin('cookie.session')};")



NEW_EPISODES_CLIENT = r'''
import json, sys, requests
base = sys.argv[1]
out = []
with requests.Session() as s:  # one keep-alive connection: replayed and fetched requests mix on it
    for path in sys.argv[2:]:
        r = s.get(base + path, headers={"Authorization": "Bearer e2e-secret-token"})
        out.append([path, r.status_code, r.json(), r.headers.get("set-cookie")])
print(json.dumps(out))
'''


class _Counting(BaseHTTPRequestHandler):
    """Counts the requests per path; answers a token and a session cookie (both secrets)."""

    protocol_version = "HTTP/1.1"
    hits: dict[str, int] = {}

    def do_GET(self) -> None:
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        body = json.dumps({"path": self.path, "hit": self.hits[self.path],
                           "access_token": f"tok{self.path}"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", f"sid=real{self.path}; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.usefixtures("home")
@pytest.mark.root
@needs_root
def test_new_episodes_fetches_and_records_only_the_new_request(tmp_path):
    """A recorded host, one new call: the recorded call is replayed (the server never sees
    it), the new one alone goes to the server, reaches the app unredacted, and is recorded
    redacted; then both replay with the server gone."""
    client = _script(tmp_path, NEW_EPISODES_CLIENT)
    _Counting.hits = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    rec = tmp_path / "rec"
    try:
        first = _trproxy("record", rec, "--", sys.executable, str(client), base, "/a")
        both = _trproxy("run", rec, "--mode", "new-episodes", "--test-set", "test-set-0", "--",
                        sys.executable, str(client), base, "/a", "/b")
    finally:
        server.shutdown()
        server.server_close()
    assert _Counting.hits == {"/a": 1, "/b": 1}  # /a was replayed, /b fetched
    rows = json.loads(both.stdout)
    assert json.loads(first.stdout)[0][2]["access_token"] == "tok/a"  # recording: the real answer
    assert rows[0] == ["/a", 200, {"path": "/a", "hit": 1, "access_token": standin("access_token")},
                       f"sid={standin('cookie.sid')}; Path=/"]  # replayed: secrets as stand-ins
    assert rows[1] == ["/b", 200, {"path": "/b", "hit": 1, "access_token": "tok/b"}, "sid=real/b; Path=/"]
    assert "trproxy: recorded 1 http" in both.stderr and "trproxy: 0 misses" in both.stderr
    mocks = _mocks(rec)
    assert _exchanges(mocks) == 2 and "summary: GET 127.0.0.1" in mocks
    for secret in ("tok/b", "real/b", "e2e-secret-token"):
        assert secret not in mocks
    replayed = _trproxy("replay", rec, "--", sys.executable, str(client), base, "/a", "/b")
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    again = json.loads(replayed.stdout)
    assert again[0] == rows[0]
    assert again[1][:2] == ["/b", 200] and again[1][2]["hit"] == 1
    assert again[1][2]["access_token"] == standin("access_token-2")  # another value: another name


TLS_EPISODES_CLIENT = r'''
import json, sys, requests
base = sys.argv[1]
with requests.Session() as s:  # trusts trproxy's CA through REQUESTS_CA_BUNDLE
    answers = [(p, s.get(base + p)) for p in sys.argv[2:]]
    print(json.dumps([[p, r.status_code, r.text] for p, r in answers]))
'''


@pytest.mark.root
@needs_root
def test_new_episodes_over_https_fetches_from_the_verified_server(tmp_path, home):
    upstream_ca = CertificateAuthority(tmp_path / "upstream-ca")
    client = _script(tmp_path, TLS_EPISODES_CLIENT)
    h2, httpd = _tls_servers(upstream_ca)
    base = f"https://localhost:{httpd.server_address[1]}"
    rec = tmp_path / "rec"
    trust = ("--tls-ca", str(upstream_ca.cert_path))
    try:
        _trproxy("record", rec, *trust, "--", sys.executable, str(client), base, "/json")
        both = _trproxy("run", rec, "--mode", "new-episodes", "--test-set", "test-set-0", *trust,
                        "--", sys.executable, str(client), base, "/json", "/text")
        # without --tls-ca the server's certificate is not trusted: the new call is a miss
        refused = _trproxy("run", rec, "--mode", "new-episodes", "--test-set", "test-set-0", "--",
                           sys.executable, str(client), base, "/chunked")
    finally:
        h2.close()
        httpd.shutdown()
        httpd.server_close()
    rows = json.loads(both.stdout)
    assert rows[1] == ["/text", 200, "hello, world\n"] and rows[0][1] == 200
    assert "trproxy: recorded 1 http" in both.stderr and "trproxy: 0 misses" in both.stderr
    assert json.loads(refused.stdout)[0][1] == 502
    assert "fetching it from the server failed" in refused.stderr and "CERTIFICATE_VERIFY_FAILED" in refused.stderr
    replayed = _trproxy("replay", rec, "--", sys.executable, str(client), base, "/json", "/text")
    assert json.loads(replayed.stdout) == rows and "trproxy: 0 misses" in replayed.stderr


H2_CONNECTIONS = r'''
import json, sys
import httpx
url, tls = sys.argv[1], sys.argv[2] == "tls"
out = []
for i in range(20):  # 20 connections: the server sends its SETTINGS first on each
    with httpx.Client(http2=True, http1=tls, timeout=60) as c:  # h2c: prior knowledge
        r = c.get(f"{url}/echo?n={i}")
        out.append([r.http_version, r.status_code, r.json()["method"]])
print(json.dumps(out))
'''


@pytest.mark.root
@needs_root
@pytest.mark.parametrize("tls", ["tls", "h2c"])
def test_h2_server_speaking_first_is_always_http(tmp_path, home, tls):
    """An HTTP/2 server that sends SETTINGS before the client's preface (h2's
    initiate_connection on accept), over TLS (ALPN h2) and cleartext with prior
    knowledge: 20 connections recorded, every one as http, replayed with 0 misses."""
    upstream_ca = CertificateAuthority(tmp_path / "upstream-ca")
    context = upstream_ca.server_context("localhost", ["h2"]) if tls == "tls" else None
    server = H2Server(ssl_context=context).start()
    url = f"{'https' if tls == 'tls' else 'http'}://localhost:{server.port}"
    client = _script(tmp_path, H2_CONNECTIONS)
    rec = tmp_path / "rec"
    try:
        recorded = _trproxy("record", rec, "--tls-ca", str(upstream_ca.cert_path), "--",
                            sys.executable, str(client), url, tls)
    finally:
        server.close()
    assert json.loads(recorded.stdout) == [["HTTP/2", 200, "GET"]] * 20
    mocks = _mocks(rec)
    assert "kind: generic" not in mocks
    assert _exchanges(mocks) == 20
    replayed = _trproxy("replay", rec, "--", sys.executable, str(client), url, tls)
    assert replayed.stdout == recorded.stdout
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
