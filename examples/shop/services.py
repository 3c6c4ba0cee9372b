"""Real dependencies of the shop on loopback free ports, for the demo and the tests.

``python examples/shop/services.py --env-file FILE`` starts PostgreSQL, Redis, the
librdkafka mock Kafka broker and the pricing service, writes ``FILE`` (``KEY=value``
lines the shop reads: ``DATABASE_URL``, ``REDIS_URL``, ``KAFKA_BOOTSTRAP``,
``PRICING_URL``, ``PORT`` — a free port for the shop itself), then waits; SIGTERM or
SIGINT stops every server it started (by its own process handle) and removes their data.

The servers come from the test support code (``tests/support/services.py``,
``tests/support/kafka_broker.py``): the same throwaway instances the test suite uses.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository root, for tests.support

from tests.support.kafka_broker import KafkaBroker  # noqa: E402
from tests.support.services import PostgresServer, RedisServer, free_port, wait_port  # noqa: E402


@dataclass
class ShopServices:
    postgres: PostgresServer = field(default_factory=PostgresServer)
    redis: RedisServer = field(default_factory=RedisServer)
    kafka: KafkaBroker = field(default_factory=KafkaBroker)
    pricing_port: int = field(default_factory=free_port)
    shop_port: int = field(default_factory=free_port)
    pricing: subprocess.Popen | None = None

    def start(self) -> ShopServices:
        try:
            self.postgres.start()
            self.redis.start()
            self.kafka.start()
            self.pricing = subprocess.Popen([sys.executable, str(HERE / "pricing.py")],
                                            env=dict(os.environ, PORT=str(self.pricing_port)))
            wait_port("127.0.0.1", self.pricing_port, proc=self.pricing)
        except BaseException:
            self.stop()
            raise
        return self

    def env(self) -> dict[str, str]:
        return {
            "DATABASE_URL": self.postgres.dsn,
            "REDIS_URL": f"redis://{self.redis.host}:{self.redis.port}/0",
            "KAFKA_BOOTSTRAP": self.kafka.bootstrap,
            "PRICING_URL": f"http://127.0.0.1:{self.pricing_port}",
            "PORT": str(self.shop_port),
        }

    def stop(self) -> None:
        if self.pricing is not None and self.pricing.poll() is None:
            self.pricing.terminate()
            try:
                self.pricing.wait(10)
            except subprocess.TimeoutExpired:
                self.pricing.kill()
                self.pricing.wait()
        self.pricing = None
        self.kafka.stop()
        self.redis.destroy()
        self.postgres.destroy()


def write_env(path: Path, env: dict[str, str]) -> None:
    """``KEY=value`` lines, values single-quoted for ``sh``; published atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(f"{k}='{v}'\n" for k, v in env.items()), "utf-8")
    tmp.replace(path)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, required=True)
    args = parser.parse_args()
    for sig in (signal.SIGTERM, signal.SIGINT):  # also while starting: start() cleans up
        signal.signal(sig, _interrupt)
    try:
        services = ShopServices().start()
    except KeyboardInterrupt:
        return 1
    try:
        write_env(args.env_file, services.env())
        print(f"services: up; environment in {args.env_file}", file=sys.stderr, flush=True)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        services.stop()
        args.env_file.unlink(missing_ok=True)
        print("services: stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
