"""End-to-end redirect tests: real cgroups, real eBPF, real sockets on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from tests.redirect.conftest import (
    EchoServer,
    RelayProxy,
    bind_pair,
    free_port,
    require_root,
    run_client,
)
from trproxy.bpf import loader
from trproxy.redirect import Redirector

pytestmark = pytest.mark.root


def _only_accept(proxy: RelayProxy, wait: float = 5.0):
    deadline = time.monotonic() + wait
    while not proxy.accepted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(proxy.accepted) == 1, proxy.accepted
    return proxy.accepted[0]


@pytest.mark.parametrize(
    ("host", "how", "expect_host"),
    [
        ("127.0.0.1", "v4", "127.0.0.1"),
        ("::1", "v6", "::1"),
        ("::ffff:127.0.0.1", "v6", "127.0.0.1"),  # IPv4-mapped on an AF_INET6 socket
        ("localhost", "name", None),  # whichever loopback address localhost resolves to first
    ],
)
def test_child_lands_on_proxy_with_original_destination(
    redirected: Redirector,
    proxy: RelayProxy,
    echo: EchoServer,
    host: str,
    how: str,
    expect_host: str | None,
) -> None:
    out = run_client(host, echo.port, how, preexec=redirected.enter)

    assert out["reply"] == f"echo {echo.port} hello\n"  # relayed to the real server
    acc = _only_accept(proxy)
    assert acc.original is not None
    assert acc.original[1] == echo.port
    if expect_host:
        assert acc.original[0] == expect_host
    else:
        assert acc.original[0] in ("127.0.0.1", "::1")
    # The app still sees its original peer ...
    assert out["peer"] == [host if how != "name" else acc.original[0], echo.port]
    # ... while the kernel has the socket connected to the proxy.
    remote_host, remote_port = out["kernel_remote"]
    assert remote_port == proxy.port
    assert remote_host in ("127.0.0.1", "::1", "::ffff:127.0.0.1")
    assert acc.peer[1] == out["local"][1]


def test_grandchildren_are_redirected(
    redirected: Redirector, proxy: RelayProxy, echo: EchoServer
) -> None:
    out = run_client("127.0.0.1", echo.port, "v4", preexec=redirected.enter, shell=True)
    assert out["reply"] == f"echo {echo.port} hello\n"
    assert out["kernel_remote"][1] == proxy.port
    assert _only_accept(proxy).original == ("127.0.0.1", echo.port)


def test_processes_outside_are_not_redirected(
    redirected: Redirector, proxy: RelayProxy, echo: EchoServer
) -> None:
    out = run_client("127.0.0.1", echo.port, "v4")  # no preexec: not in the cgroup
    assert out["kernel_remote"] == ["127.0.0.1", echo.port]
    with socket.create_connection(("::1", echo.port), timeout=5) as s:  # this process
        s.sendall(b"hi\n")
        assert s.makefile("rb").readline() == b"echo %d hi\n" % echo.port
    time.sleep(0.1)
    assert proxy.accepted == []


SERVER_THEN_CLIENT = r"""
import socket, sys
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()
print(srv.getsockname()[1], flush=True)
sys.stdin.readline()  # the test checks listening_ports()
c = socket.create_connection(("127.0.0.1", srv.getsockname()[1]), timeout=5)
conn, _ = srv.accept()
print(c.getpeername()[1], flush=True)
sys.stdin.readline()
srv.close()
print("closed", flush=True)
sys.stdin.readline()
"""


def test_ports_the_cgroup_listens_on_are_not_redirected(
    redirected: Redirector, proxy: RelayProxy
) -> None:
    p = subprocess.Popen(
        [sys.executable, "-c", SERVER_THEN_CLIENT],
        preexec_fn=redirected.enter,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdin and p.stdout
        port = int(p.stdout.readline())  # bound to port 0: the kernel picked it
        assert port in redirected.listening_ports()
        p.stdin.write("\n")
        p.stdin.flush()
        assert int(p.stdout.readline()) == port  # connected directly
        assert proxy.accepted == []
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline() == "closed\n"
        assert port not in redirected.listening_ports()  # forgotten when the listener closed
    finally:
        p.kill()
        p.wait()


def test_connections_to_the_proxy_port_are_not_redirected(
    redirected: Redirector, proxy: RelayProxy
) -> None:
    out = run_client("127.0.0.1", proxy.port, "v4", preexec=redirected.enter)
    assert out["reply"] == "direct\n"
    assert out["kernel_remote"] == ["127.0.0.1", proxy.port]
    assert _only_accept(proxy).original is None


def test_two_redirectors_do_not_interfere(echo: EchoServer) -> None:
    require_root()
    p1, p2 = RelayProxy.start(), RelayProxy.start()
    r1 = Redirector.create(p1.port)
    r2 = Redirector.create(p2.port)
    p1.redirector, p2.redirector = r1, r2
    try:
        assert r1.cgroup_path != r2.cgroup_path
        procs = []
        for r in (r1, r2, r1, r2):  # interleaved and concurrent
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        "import socket,sys; s=socket.create_connection(('127.0.0.1', "
                        f"{echo.port})); s.sendall(b'x\\n'); sys.stdout.write(s.makefile().readline())",
                    ],
                    preexec_fn=r.enter,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for child in procs:
            out, _ = child.communicate(timeout=30)
            assert out == f"echo {echo.port} x\n"
        for proxy in (p1, p2):
            assert len(proxy.accepted) == 2
            assert all(a.original == ("127.0.0.1", echo.port) for a in proxy.accepted)
        # A peer of one run is unknown to the other run.
        assert r2.original_destination(p1.accepted[0].peer, ("127.0.0.1", p1.port)) is None
    finally:
        r1.close()
        r2.close()
        p1.close()
        p2.close()


def test_close_detaches_removes_cgroup_and_is_idempotent(
    proxy: RelayProxy, echo: EchoServer
) -> None:
    require_root()
    r = Redirector.create(proxy.port)
    proxy.redirector = r
    path = r.cgroup_path
    sleeper = subprocess.Popen(["sleep", "30"], preexec_fn=r.enter)
    try:
        r.close()
        r.close()
        assert not os.path.exists(path)
        assert sleeper.poll() is None  # survivors are moved, not killed
        out = run_client("127.0.0.1", echo.port, "v4")
        assert out["kernel_remote"] == ["127.0.0.1", echo.port]
    finally:
        sleeper.kill()
        sleeper.wait()


def test_shadow_ports(proxy: RelayProxy) -> None:
    require_root()
    x, s = free_port(), free_port()
    r = Redirector.create(proxy.port, shadow_ports={x: s})
    proxy.redirector = r
    code = (
        "import socket,sys; srv=socket.socket(); "
        f"srv.bind(('127.0.0.1', {x})); srv.listen(); print(srv.getsockname()[1], flush=True); "
        "c,_=srv.accept(); c.sendall(b'shadow\\n'); sys.stdin.readline()"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code],
        preexec_fn=r.enter,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert p.stdout and p.stdin
        assert int(p.stdout.readline()) == s  # bind(x) became bind(s)
        assert r.shadow_ports() == {x: s}
        assert r.listening_ports() == {x}
        assert r.shadowed_ports() == {x: s}
        with socket.create_connection(("127.0.0.1", s), timeout=5) as c:  # from outside
            assert c.makefile().readline() == "shadow\n"
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(10)
    finally:
        p.kill()
        p.wait()
        r.close()


def test_attach_existing_cgroup(proxy: RelayProxy, echo: EchoServer) -> None:
    require_root()
    from trproxy.redirect import cgroup

    path = cgroup.require_mount() / f"trproxy-test-attach-{time.monotonic_ns()}"
    path.mkdir()
    try:
        rel = "/" + str(path.relative_to(cgroup.require_mount()))  # as in /proc/<pid>/cgroup
        r = Redirector.attach(rel, proxy.port)
        proxy.redirector = r
        assert r.cgroup_path == str(path)
        with pytest.raises(Exception, match="already redirected"):
            Redirector.attach(str(path), proxy.port)

        def enter() -> None:
            with open(path / "cgroup.procs", "w") as f:
                f.write("0")

        out = run_client("127.0.0.1", echo.port, "v4", preexec=enter)
        assert out["kernel_remote"][1] == proxy.port
        assert _only_accept(proxy).original == ("127.0.0.1", echo.port)
        r.close()
        assert path.is_dir()  # not ours to remove
        out = run_client("127.0.0.1", echo.port, "v4", preexec=enter)
        assert out["kernel_remote"] == ["127.0.0.1", echo.port]  # detached
    finally:
        path.rmdir()


def test_nested_cgroups_of_a_run_are_redirected(
    redirected: Redirector, proxy: RelayProxy, echo: EchoServer
) -> None:
    """A process that moved into a sub-cgroup of the run (systemd in a container, docker in
    docker) is found through its cgroup ancestry."""
    sub = os.path.join(redirected.cgroup_path, "sub", "deeper")
    os.makedirs(sub)

    def enter_sub() -> None:
        with open(os.path.join(sub, "cgroup.procs"), "w") as f:
            f.write("0")

    out = run_client("127.0.0.1", echo.port, "v4", preexec=enter_sub)
    assert out["kernel_remote"][1] == proxy.port
    assert _only_accept(proxy).original == ("127.0.0.1", echo.port)
    # close() (by the fixture) removes the sub-cgroups too.


def test_attach_refuses_the_cgroup_trproxy_runs_in(proxy: RelayProxy) -> None:
    require_root()
    from trproxy.redirect import RedirectError, cgroup

    with pytest.raises(RedirectError, match="loop back"):
        Redirector.attach(cgroup.own_cgroup(), proxy.port)


def test_asyncio_proxy_usage(echo: EchoServer) -> None:
    """How the proxy uses it: peername from the transport -> original destination."""
    require_root()
    import asyncio

    from tests.redirect.conftest import free_port

    async def main() -> list[tuple[str, int] | None]:
        found: list[tuple[str, int] | None] = []
        port = free_port()
        redirector: Redirector | None = None

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            assert redirector is not None
            found.append(redirector.original_destination(
                writer.get_extra_info("peername"), writer.get_extra_info("sockname")))
            await reader.readline()
            writer.write(b"recorded\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, host=["127.0.0.1", "::1"], port=port)
        redirector = Redirector.create(port)
        try:
            for host in ("127.0.0.1", "::1"):
                child = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    "import socket,sys; s=socket.create_connection((sys.argv[1], int(sys.argv[2]))); "
                    "s.sendall(b'q\\n'); sys.stdout.write(s.makefile().readline())",
                    host,
                    str(echo.port),
                    preexec_fn=redirector.enter,
                    stdout=asyncio.subprocess.PIPE,
                )
                out, _ = await child.communicate()
                assert out == b"recorded\n"
        finally:
            redirector.close()
            server.close()
            await server.wait_closed()
        return found

    assert asyncio.run(main()) == [("127.0.0.1", echo.port), ("::1", echo.port)]


def test_attach_turns_the_owner_check_off_for_another_netns(proxy: RelayProxy) -> None:
    """The owner's marker is looked up in the connecting process's network namespace: a
    cgroup whose processes live in another one (a container) gets the check off."""
    require_root()
    from trproxy.bpf import loader
    from trproxy.redirect import cgroup

    path = cgroup.require_mount() / f"trproxy-test-netns-{time.monotonic_ns()}"
    path.mkdir()
    procs: list[subprocess.Popen] = []
    try:
        def enter() -> None:
            with open(path / "cgroup.procs", "w") as f:
                f.write("0")

        procs.append(subprocess.Popen(["sleep", "30"], preexec_fn=enter))
        with Redirector.attach(str(path), proxy.port) as same:
            assert same._maps.config(same.cgroup_id).flags & loader.FLAG_CHECK_OWNER
        procs.append(subprocess.Popen(["unshare", "--net", "sleep", "30"], preexec_fn=enter))
        deadline = time.monotonic() + 10
        while not cgroup.other_netns(path) and time.monotonic() < deadline:
            time.sleep(0.02)  # unshare(2) happens after the fork
        with Redirector.attach(str(path), proxy.port) as other:
            assert not other._maps.config(other.cgroup_id).flags & loader.FLAG_CHECK_OWNER
        with Redirector.attach(str(path), proxy.port, check_owner=True) as forced:
            assert forced._maps.config(forced.cgroup_id).flags & loader.FLAG_CHECK_OWNER
    finally:
        for p in procs:
            p.kill()
            p.wait()
        path.rmdir()


def test_attach_replaces_the_run_of_a_dead_trproxy(proxy: RelayProxy, echo: EchoServer) -> None:
    """A cgroup trproxy did not create keeps a killed owner's pinned run (cut off) until
    someone attaches it again: the new run replaces the dead one. A process stays in the
    cgroup throughout: a dead run with none left is a leftover that any trproxy starting
    meanwhile (another test's) rightly removes."""
    require_root()
    from tests.redirect.conftest import ROOT, enter_cgroup, try_connect
    from trproxy.redirect import cgroup
    from trproxy.redirect.cleanup import cleanup_leftovers

    path = cgroup.require_mount() / f"trproxy-test-reattach-{time.monotonic_ns()}"
    path.mkdir()
    enter = enter_cgroup(str(path))
    resident = subprocess.Popen(["sleep", "120"], preexec_fn=enter)
    owner = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from trproxy.redirect import Redirector; "
         "Redirector.attach(sys.argv[1], int(sys.argv[2])); print('up', flush=True); time.sleep(60)",
         str(path), str(free_port())],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=ROOT), cwd=ROOT,
    )
    try:
        assert owner.stdout and owner.stdout.readline() == "up\n"
        owner.kill()
        owner.wait()
        assert try_connect("127.0.0.1", echo.port, enter) == "EPERM"
        cleanup_leftovers()  # as any trproxy starting now does: the run keeps its process cut off
        assert try_connect("127.0.0.1", echo.port, enter) == "EPERM"
        with Redirector.attach(str(path), proxy.port) as r:
            proxy.redirector = r
            out = run_client("127.0.0.1", echo.port, "v4", preexec=enter)
            assert out["reply"] == f"echo {echo.port} hello\n"
        assert try_connect("127.0.0.1", echo.port, enter) == "connected"  # detached: direct
    finally:
        for p in (owner, resident):
            if p.poll() is None:
                p.kill()
                p.wait()
        path.rmdir()


CAPTURED_APP = """
import socket, sys, threading
srv = socket.socket()
srv.bind(('127.0.0.1', int(sys.argv[1])))
srv.listen()
print(srv.getsockname()[1], flush=True)
def serve():
    while True:
        c, _ = srv.accept()
        c.sendall(b'app\\n')
        c.close()
threading.Thread(target=serve, daemon=True).start()
for line in sys.stdin:  # each line: connect to itself, report what answered
    with socket.create_connection(('127.0.0.1', srv.getsockname()[1]), timeout=5) as c:
        print(c.makefile().readline().strip(), flush=True)
"""


@pytest.mark.parametrize("kernel_chosen", [False, True])
def test_capture_sockets_take_outside_connections_to_every_listening_port(
    proxy: RelayProxy, kernel_chosen: bool
) -> None:
    """The app binds its real port (or 0: the kernel picks one, captured as well);
    connections from outside land on the capture socket (which sees the port dialed), the
    app's own and the owner's announced relay reach the app; after close, outside
    connections reach the app and the run's entries are gone."""
    require_root()
    c4, c6 = bind_pair()
    for s in (c4, c6):
        s.settimeout(10)
    r = Redirector.create(proxy.port, capture_sockets=[c4, c6])
    proxy.redirector = r
    asked = 0 if kernel_chosen else free_port()
    p = subprocess.Popen([sys.executable, "-c", CAPTURED_APP, str(asked)], preexec_fn=r.enter,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout and p.stdin
        x = int(p.stdout.readline())
        assert x == asked or (kernel_chosen and x > 0)  # never rewritten
        assert r.captured_ports() == {x}
        with socket.create_connection(("127.0.0.1", x), timeout=5):  # from outside: captured
            conn, _ = c4.accept()
            assert conn.getsockname() == ("127.0.0.1", x)
            conn.close()
        relay = socket.socket()
        relay.bind(("127.0.0.1", 0))
        with r.to_app(relay, "127.0.0.1", x):
            relay.connect(("127.0.0.1", x))
        assert relay.makefile().readline() == "app\n"  # the owner's relay reached the app
        relay.close()
        p.stdin.write("self\n")
        p.stdin.flush()
        assert p.stdout.readline() == "app\n"  # the app's own connection reached the app
        assert proxy.accepted == []
        r.close()
        with socket.create_connection(("127.0.0.1", x), timeout=5) as c:  # owner gone: the app
            assert c.makefile().readline() == "app\n"
        assert loader.load().maps.capturing(r.cgroup_id) == set()
    finally:
        p.kill()
        p.wait()
        r.close()
        c4.close()
        c6.close()
