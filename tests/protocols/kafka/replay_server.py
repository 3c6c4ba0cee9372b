"""A minimal replay server for codec-level tests: the Kafka replayer behind a socket.

It stands in for the lead's proxy and store, with their documented rules, so that real
clients can be replayed before the proxy exists: candidates are all recorded
interactions (one destination); a live request matches a recorded one when their
``match_key``s are equal; ``data`` interactions are consumed once, in recorded order;
``session`` ones are served in recorded order and the last one repeats. Misses are
answered with ``Replayer.miss`` and counted in ``misses``.
"""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict

import yaml

from trproxy.protocols.base import Interaction, Lookup, Reply
from trproxy.protocols.kafka import DIALECT


class MiniStore:
    def __init__(self, interactions: list[Interaction]) -> None:
        self.queues: dict[str, list[Interaction]] = defaultdict(list)
        self.served: dict[str, int] = defaultdict(int)
        for i in interactions:
            # through YAML, as the real store keeps them
            doc = yaml.safe_load(yaml.safe_dump({"request": i.request, "responses": i.responses}))
            kept = Interaction(doc["request"], doc["responses"], i.lifetime, i.summary)
            self.queues[self._key(kept.request)].append(kept)

    @staticmethod
    def _key(request) -> str:
        return yaml.safe_dump(DIALECT.match_key(request), sort_keys=True)

    def find(self, lookup: Lookup) -> Interaction | None:
        key = self._key(lookup.request)
        queue = self.queues.get(key, [])
        n = self.served[key]
        if n < len(queue):
            self.served[key] = n + 1
            return queue[n]
        if queue and queue[-1].lifetime == "session":
            return queue[-1]
        return None


class ReplayServer:
    def __init__(self, store: MiniStore, port: int, host: str = "127.0.0.1") -> None:
        self.store = store
        self.host, self.port = host, port
        self.misses: list[dict] = []
        self.lookups = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def start(self) -> ReplayServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port,
                                                  reuse_address=True)

    def stop(self) -> None:
        async def _stop() -> None:
            if self._server is not None:
                self._server.close()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        replayer = DIALECT.replayer()
        try:
            while data := await reader.read(65536):
                for event in replayer.feed(data):
                    if isinstance(event, Reply):
                        writer.write(event.data)
                        continue
                    self.lookups += 1
                    found = self.store.find(event)
                    if found is None:
                        self.misses.append(event.request)
                        out = replayer.miss(event, "no recording matches")
                    else:
                        out = replayer.respond(event, found.responses)
                    if out and event.expects_reply:
                        writer.write(out)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
