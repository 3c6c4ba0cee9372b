"""Recording a captured stream the way the proxy does: through ``trproxy.proxy.record.Capture``
(detection, the dialect's recorder, the proxy's numbering: connection, seq, order,
timing), collecting the exchanges instead of writing them.

Time is a counter, not the clock: each chunk is 1 ms after the one before, so recorded
waits are the same on a loaded machine (a test sets a long wait explicitly)."""

from __future__ import annotations

from collections.abc import Iterable

from trproxy.proxy.context import Mode, RunContext
from trproxy.proxy.record import Capture
from trproxy.store import Exchange, MockWriter, load_mocks, recording
from trproxy.store.recording import MOCKS


class _Ticks:
    """A clock that moves 1 ms each time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.001
        return self.now


class Collector:
    """Stands in for the ``MockWriter``: keeps what would be written."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.count = 0

    def write(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)
        self.count += 1

    def room(self) -> None:
        """Never behind: nothing to wait for (``MockWriterProcess.room``)."""
        return None


def capture(*streams: Iterable[tuple[str, bytes]], destination: str = "127.0.0.1:1",
            ctx: RunContext | None = None, close: bool = True) -> list[Exchange]:
    """Each stream (``(side, bytes)`` chunks in wire order) as one recorded connection."""
    ctx = ctx or RunContext(Mode.RECORD)
    collector = Collector()
    ctx.writer = collector  # type: ignore[assignment]
    port = int(destination.rsplit(":", 1)[1])
    clock = _Ticks()
    for chunks in streams:
        cap = Capture(ctx, destination, port, clock=clock)
        for side, data in chunks:
            (cap.client if side == "client" else cap.server)(data)
        if close:
            cap.client(b"")
            cap.server(b"")
    return collector.exchanges


def capture_run(steps: Iterable[tuple[str, str, bytes]], destination: str = "127.0.0.1:1",
                ctx: RunContext | None = None) -> list[Exchange]:
    """Several connections of one run, their chunks interleaved as they happened:
    ``(connection name, side, bytes)``; side ``"server"`` with ``b""`` is the server
    closing, ``"reset"`` the server resetting, ``"client"`` with ``b""`` the client
    closing. Connections still open at the end are closed by their client."""
    ctx = ctx or RunContext(Mode.RECORD)
    collector = Collector()
    ctx.writer = collector  # type: ignore[assignment]
    port = int(destination.rsplit(":", 1)[1])
    caps: dict[str, Capture] = {}
    clock = _Ticks()
    for name, side, data in steps:
        cap = caps.get(name) or caps.setdefault(name, Capture(ctx, destination, port, clock=clock))
        if side == "reset":
            cap.server_reset()
            cap.server(b"")
        else:
            (cap.client if side == "client" else cap.server)(data)
    for cap in caps.values():
        cap.client(b"")
        cap.server(b"")
    return collector.exchanges


def packed_and_parsed(root, monkeypatch, exchanges: Iterable[Exchange]) -> tuple[list[Exchange], list[Exchange]]:
    """``exchanges`` written to ``root/test-set-0`` by the recorder's writer, then loaded
    from its cache (packed) and from its YAML, parsed and checked (as without a cache)."""
    test_set = root / "test-set-0"
    writer = MockWriter(test_set / MOCKS)
    for ex in exchanges:
        writer.write(ex)
    writer.close()
    packed = load_mocks(test_set)
    with monkeypatch.context() as m:
        m.setattr(recording, "_read_cache", lambda *args: None)
        parsed = load_mocks(test_set)
    return packed, parsed
