"""A minimal replay server for dialect tests: PostgresReplayer behind a loopback socket.

It stands in for the lead's proxy and store with their documented rules, so real
clients can be replayed without a PostgreSQL server: a live request matches recorded
ones with an equal ``match_key`` (on any recorded connection); ``data`` interactions
are consumed once in recorded order; ``session`` ones in recorded order and then the
last one repeats. Interactions go through YAML first, as the store keeps them. Events
are answered in order; ``close_after`` closes the connection like a server would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import defaultdict

import yaml

from trproxy.protocols.base import Interaction, Lookup
from trproxy.protocols.postgres import DIALECT, PostgresReplayer


def through_yaml(interactions: list[Interaction]) -> list[Interaction]:
    out = []
    for i in interactions:
        text = yaml.safe_dump({"request": i.request, "responses": i.responses},
                              allow_unicode=True)
        doc = yaml.safe_load(text)
        out.append(Interaction(doc["request"], doc["responses"], i.lifetime, i.summary))
    return out


class MiniStore:
    def __init__(self, interactions: list[Interaction]) -> None:
        self.queues: dict[str, list[Interaction]] = defaultdict(list)
        self.served: dict[str, int] = defaultdict(int)
        for i in through_yaml(interactions):
            self.queues[self.key(i.request)].append(i)

    @staticmethod
    def key(request) -> str:
        return json.dumps(DIALECT.match_key(request), sort_keys=True)

    def find(self, lookup: Lookup) -> Interaction | None:
        key = self.key(lookup.request)
        queue = self.queues.get(key, [])
        n = self.served[key]
        if n < len(queue):
            self.served[key] = n + 1
            return queue[n]
        if queue and queue[-1].lifetime == "session":
            return queue[-1]
        return None


class ReplayServer:
    def __init__(self, store: MiniStore, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store = store
        self.host, self.port = host, port
        self.misses: list[str] = []
        self.lookups: list[Lookup] = []
        self.errors: list[BaseException] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def dsn(self, user: str = "trproxy", db: str = "trproxy") -> str:
        return f"postgresql://{user}:trproxy@{self.host}:{self.port}/{db}?sslmode=disable"

    def start(self) -> ReplayServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def _stop() -> None:
            if self._server is not None:
                self._server.close()
            await asyncio.sleep(0.05)

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        replayer = PostgresReplayer()
        try:
            while data := await reader.read(65536):
                for event in replayer.feed(data):
                    if isinstance(event, Lookup):
                        self.lookups.append(event)
                        found = self.store.find(event)
                        if found is None:
                            self.misses.append(event.summary)
                            out = replayer.miss(event, "no recorded request matches")
                        else:
                            out = replayer.respond(event, found.responses)
                    else:
                        out = event.data
                    writer.write(out)
                await writer.drain()
                if replayer.close_after:
                    break
        except Exception as exc:  # surfaced by the tests through .errors
            self.errors.append(exc)
        finally:
            with contextlib.suppress(Exception):
                writer.close()
