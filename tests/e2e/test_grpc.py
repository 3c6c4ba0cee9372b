"""gRPC end to end: a grpcio server and client (``apps/grpc/app.py``; stubs generated
from ``apps/grpc/echo.proto`` by ``grpc_tools.protoc`` at test time) through the real CLI.

The client makes a unary call with metadata, a server-streaming, a client-streaming and
a bidi call, one that fails NOT_FOUND and one that passes its deadline, over an insecure
channel (cleartext HTTP/2, prior knowledge). It runs under ``trproxy record`` against
the server, then under ``trproxy replay`` with the server stopped: the same output, 0
misses. A call never recorded gets UNAVAILABLE naming the reason, and a miss line.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.proc import run_trproxy
from tests.support.services import free_port

pytestmark = pytest.mark.slow

APP = Path(__file__).parent / "apps" / "grpc"
ROOT_ONLY = [pytest.mark.root,
             pytest.mark.skipif(os.geteuid() != 0, reason="the eBPF redirect needs root")]


@pytest.fixture
def stubs(tmp_path: Path) -> Path:
    from grpc_tools import protoc

    out = tmp_path / "stubs"
    out.mkdir()
    code = protoc.main(["protoc", f"-I{APP}", f"--python_out={out}", f"--grpc_python_out={out}",
                        f"--descriptor_set_out={out / 'echo.pb'}", str(APP / "echo.proto")])
    assert code == 0
    return out


def _client(port: int, stubs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tests.e2e.apps.grpc.app", "client", str(port), str(stubs), *extra]


@pytest.mark.parametrize("mode", [pytest.param("ebpf", marks=ROOT_ONLY), "forward"])
def test_grpc_calls_replay_with_the_server_stopped(tmp_path: Path, stubs: Path, mode: str) -> None:
    from tests.e2e.apps.grpc.app import serve

    server_port = free_port()
    server = serve(server_port, str(stubs))
    recording = tmp_path / "rec"
    recording.mkdir()
    (recording / "echo.pb").write_bytes((stubs / "echo.pb").read_bytes())
    (recording / "config.yaml").write_text("http:\n  grpc_descriptors: [echo.pb]\n")
    port, options = server_port, []
    if mode == "forward":
        port = free_port()
        options = ["--no-redirect", "--forward", f"127.0.0.1:{port}=127.0.0.1:{server_port}"]
    try:
        recorded = run_trproxy("record", "--dir", str(recording), *options, "--",
                               *_client(port, stubs))
    finally:
        server.stop(0).wait()
    assert recorded.returncode == 0, recorded.stderr
    replayed = run_trproxy("replay", "--dir", str(recording), *options, "--", *_client(port, stubs))
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == recorded.stdout
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    results = yaml.safe_load(recorded.stdout)
    assert [r[0] for r in results] == ["unary", "server-streaming", "client-streaming", "bidi",
                                       "not-found", "deadline", "unary-after"]
    assert results[4] == ["not-found", "error", "StatusCode.NOT_FOUND", "no item missing"]
    assert results[5] == ["deadline", "StatusCode.DEADLINE_EXCEEDED"]

    docs = [d for d in yaml.safe_load_all((recording / "test-set-0" / "mocks.yaml").read_text()) if d]
    calls = {d["spec"]["summary"].split()[2]: d["spec"] for d in docs if d["kind"] == "http"}
    assert set(calls) >= {"trproxy.echo.Echo/Get", "trproxy.echo.Echo/List",
                          "trproxy.echo.Echo/Collect", "trproxy.echo.Echo/Chat",
                          "trproxy.echo.Echo/Slow"}, calls
    chat = calls["trproxy.echo.Echo/Chat"]
    # the client's two messages and the server's two, decoded, with the schema's names
    assert chat["request"]["body"] == {"grpc": [[[1, "hi", "text"], [2, 1, "limit"]],
                                                [[1, "there", "text"], [2, 2, "limit"]]]}
    assert [m[0][:3] for m in chat["responses"][-1]["body"]["grpc"]] == [[1, "HI", "name"],
                                                                        [1, "THERE", "name"]]
    assert "grpc-status" in str(chat["responses"][-1]["trailers"])

    missed = run_trproxy("replay", "--dir", str(recording), *options, "--",
                         *_client(port, stubs, "miss"))
    assert missed.returncode == 0, missed.stderr
    [[error, code, details]] = yaml.safe_load(missed.stdout)
    assert code == "StatusCode.UNAVAILABLE" and "trproxy: no recording for gRPC" in details, details
    assert "trproxy.echo.Echo/Get" in details
    assert "1 miss" in missed.stderr, missed.stderr
    report = yaml.safe_load(sorted((recording / "reports").glob("run-*-replay.yaml"))[-1].read_text())
    [miss] = report["misses"]
    assert miss["request"].endswith("trproxy.echo.Echo/Get")
    # the closest candidate: a recorded Get, with a diff showing the text that differs
    assert miss["nearest"] and "trproxy.echo.Echo/Get" in miss["nearest"][0], miss
    assert "never recorded" in miss["nearest"][0], miss


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0, reason="the eBPF redirect needs root")
def test_grpc_over_tls_replays(tmp_path: Path, stubs: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """TLS with ALPN h2: the server's certificate from a test CA (given with --tls-ca), the
    client trusting trproxy's CA through SSL_CERT_FILE."""
    from tests.e2e.apps.grpc.app import serve
    from trproxy.tls.ca import CertificateAuthority

    monkeypatch.setenv("TRPROXY_HOME", str(tmp_path / "home"))
    upstream = CertificateAuthority(tmp_path / "upstream-ca")
    port = free_port()
    server = serve(port, str(stubs), (upstream.key_path.read_bytes(),
                                      upstream.leaf_path("127.0.0.1").read_bytes()))
    recording = tmp_path / "rec"
    try:
        recorded = run_trproxy("record", "--dir", str(recording), "--tls-ca",
                               str(upstream.cert_path), "--", *_client(port, stubs, "tls"))
    finally:
        server.stop(0).wait()
    assert recorded.returncode == 0, recorded.stderr
    replayed = run_trproxy("replay", "--dir", str(recording), "--", *_client(port, stubs, "tls"))
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == recorded.stdout and "DEADLINE_EXCEEDED" in recorded.stdout
    assert "trproxy: 0 misses" in replayed.stderr, replayed.stderr
    mocks = (recording / "test-set-0" / "mocks.yaml").read_text()
    assert "url: https://127.0.0.1:" in mocks and "grpc:" in mocks
