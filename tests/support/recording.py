"""Recording a captured stream the way the proxy does: through ``trproxy.proxy.record.Capture``
(detection, the dialect's recorder, the proxy's numbering: connection, seq, order,
timing), collecting the exchanges instead of writing them."""

from __future__ import annotations

from collections.abc import Iterable

from trproxy.proxy.context import Mode, RunContext
from trproxy.proxy.record import Capture
from trproxy.store import Exchange


class Collector:
    """Stands in for the ``MockWriter``: keeps what would be written."""

    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.count = 0

    def write(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)
        self.count += 1


def capture(*streams: Iterable[tuple[str, bytes]], destination: str = "127.0.0.1:1",
            ctx: RunContext | None = None, close: bool = True) -> list[Exchange]:
    """Each stream (``(side, bytes)`` chunks in wire order) as one recorded connection."""
    ctx = ctx or RunContext(Mode.RECORD)
    collector = Collector()
    ctx.writer = collector  # type: ignore[assignment]
    port = int(destination.rsplit(":", 1)[1])
    for chunks in streams:
        cap = Capture(ctx, destination, port)
        for side, data in chunks:
            (cap.client if side == "client" else cap.server)(data)
        if close:
            cap.client(b"")
            cap.server(b"")
    return collector.exchanges
