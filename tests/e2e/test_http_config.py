"""config.yaml's `http:` section: extra secrets redacted, configured noise ignored in matching."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.support.proc import run_trproxy, stop
from tests.support.services import free_port, wait_port

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)

SERVER = textwrap.dedent("""
    import http.server, json, sys
    class Echo(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            out = json.dumps({"path": self.path, "got": json.loads(body)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
        def log_message(self, *a): pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
""")

CLIENT = textwrap.dedent("""
    import json, sys, urllib.request
    port, ts = sys.argv[1], sys.argv[2]
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/people?ts={ts}&kind=a",
                                 data=json.dumps({"name": "ann", "ssn": "078-05-1120"}).encode(),
                                 headers={"Content-Type": "application/json"})
    print(urllib.request.urlopen(req).read().decode())
""")


def test_configured_secrets_are_redacted_and_noise_is_ignored(tmp_path):
    (tmp_path / "config.yaml").write_text(
        "version: trproxy/v1\nhttp:\n  secret_fields: [ssn]\n  match:\n    ignore_query: [ts]\n")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        wait_port("127.0.0.1", port, proc=server)
        recorded = run_trproxy("record", "--dir", str(tmp_path), "--", sys.executable, "-c", CLIENT,
                               str(port), "111")
    finally:
        stop(server)
    assert recorded.returncode == 0, recorded.stderr
    mocks = (tmp_path / "test-set-0" / "mocks.yaml").read_text()
    assert "078-05-1120" not in mocks and "ssn: <secret:people.ssn>" in mocks
    # another timestamp in the query: ignored by the configured noise, so it still matches
    replayed = run_trproxy("replay", "--dir", str(tmp_path), "--", sys.executable, "-c", CLIENT,
                           str(port), "222")
    assert replayed.returncode == 0, replayed.stderr
    assert "trproxy: 0 misses" in replayed.stderr
    assert json.loads(replayed.stdout)["path"] == "/v1/people?ts=111&kind=a"
    # without the rule it is a miss: the noise setting is what made it match
    (tmp_path / "config.yaml").write_text("version: trproxy/v1\nhttp:\n  secret_fields: [ssn]\n")
    missed = run_trproxy("replay", "--dir", str(tmp_path), "--", sys.executable, "-c", CLIENT,
                         str(port), "333")
    assert "trproxy: 1 misses" in missed.stderr and "+- [ts, '333']" in missed.stderr, missed.stderr
