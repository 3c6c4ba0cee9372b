"""The redirect of the app's DNS over UDP: connect4/6 and sendmsg4/6 to port 53 go to the
proxy's DNS port, which learns the server asked (``Redirector.dns_server``), and
recvmsg4/6 make the answer come from that server. Real cgroup, real eBPF; every address
is loopback (if the redirect did not happen, the query would go to 127.0.0.1:53 or ::1:53
on this machine, and the test fails on its missing answer)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from tests.redirect.conftest import free_port, require_root
from trproxy.protocols.dns import codec
from trproxy.redirect import Redirector

pytestmark = pytest.mark.root

CHILD = r"""
import json, socket, sys
how, host = sys.argv[1], sys.argv[2]
family = socket.AF_INET if how == "v4" else socket.AF_INET6
query = bytes.fromhex("beef01000001000000000000") + b"\x02db\x08internal\x00\x00\x01\x00\x01"
s = socket.socket(family, socket.SOCK_DGRAM)
s.settimeout(5)
out = {}
if sys.argv[3] == "connected":
    s.connect((host, 53))
    s.send(query)
    out["peer"] = s.getpeername()[:2]
else:
    s.sendto(query, (host, 53))
data, sender = s.recvfrom(512)
out.update(answer=data.hex(), sender=list(sender[:2]), local=list(s.getsockname()[:2]))
print(json.dumps(out))
"""


class FakeServerSide:
    """The proxy's side of the redirect: UDP on 127.0.0.1:P and [::1]:P; it asks the
    redirector where each datagram was going and answers with that server in the data."""

    def __init__(self) -> None:
        self.port = free_port()
        self.socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM), socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)]
        self.socks[0].bind(("127.0.0.1", self.port))
        self.socks[1].bind(("::1", self.port))
        self.redirector: Redirector | None = None
        self.seen: list[tuple[tuple, tuple[str, int] | None]] = []
        self.threads = [threading.Thread(target=self._serve, args=(s,), daemon=True) for s in self.socks]
        for t in self.threads:
            t.start()

    def _serve(self, s: socket.socket) -> None:
        while True:
            try:
                data, sender = s.recvfrom(512)
            except OSError:
                return
            assert self.redirector is not None
            server = self.redirector.dns_server(sender, s.getsockname())
            self.seen.append((sender[:2], server))
            if server is None:
                continue
            query = codec.parse(data)
            answer = codec.Message(query.id, 0x8180, query.questions,
                                   [codec.Record("db.internal", 1, 1, 0, "127.0.0.9")])
            s.sendto(codec.serialize(answer), sender)

    def close(self) -> None:
        for s in self.socks:
            s.close()


@pytest.fixture
def side() -> Iterator[FakeServerSide]:
    require_root()
    side = FakeServerSide()
    r = Redirector.create(free_port(), dns_port=side.port)
    side.redirector = r
    yield side
    r.close()
    side.close()


@pytest.mark.parametrize("how, host", [("v4", "127.0.0.1"), ("v6", "::1"), ("v6", "::ffff:127.0.0.1")])
@pytest.mark.parametrize("style", ["connected", "sendto"])
def test_dns_queries_reach_the_proxy_and_answers_come_from_the_server_asked(side, how, host, style):
    out = json.loads(subprocess.run([sys.executable, "-c", CHILD, how, host, style], capture_output=True,
                                    text=True, timeout=30, check=True, preexec_fn=side.redirector.enter).stdout)
    answer = codec.parse(bytes.fromhex(out["answer"]))
    assert answer.id == 0xBEEF and answer.answers[0].data == "127.0.0.9"
    assert out["sender"] == [host, 53]  # recvmsg: from the server the app asked
    if style == "connected":
        assert out["peer"] == [host, 53]  # getpeername: the server asked
    expected = host.removeprefix("::ffff:")
    assert side.seen == [(side.seen[0][0], (expected, 53))]


def test_a_query_from_outside_the_run_is_not_served(side):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        s.sendto(b"\0" * 12, ("127.0.0.1", side.port))
        with pytest.raises(TimeoutError):
            s.recvfrom(512)
    assert len(side.seen) == 1 and side.seen[0][1] is None


def test_other_udp_is_left_alone(side):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        code = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                f"s.sendto(b'hi', ('127.0.0.1', {port}))")
        subprocess.run([sys.executable, "-c", code], check=True, timeout=30, preexec_fn=side.redirector.enter)
        server.settimeout(5)
        assert server.recvfrom(16)[0] == b"hi"
    assert side.seen == []
