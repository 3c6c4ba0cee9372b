"""Real dependencies of the notes and tokens examples, for their demo, tests and benchmark.

``WebAppServices("notes")`` / ``("tokens")`` starts PostgreSQL and Redis on free loopback
ports (the throwaway servers of ``tests/support/services.py``; tokens also starts its
rates service), creates the example's user with its password, and gives the environment
the app and its traffic script read (``env()``). ``stop()`` stops what it started.

The secrets planted here (``SECRETS``) are what a grep of a recording must never find.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # the repository root, for tests.support

from tests.support.services import PostgresServer, RedisServer, free_port, wait_port  # noqa: E402

SECRETS = {
    "password": "Corr3ct-Horse-Battery!",  # the user's, typed into a login
    "secret_key": "flask-session-signing-key-7f3a",  # notes: signs the session cookie
    "jwt_secret": "jwt-hs256-signing-key-9c1e-4b7d2a8f0e",  # tokens: signs the JWTs
    "rates_api_key": "rk_live_51d0c8e2a7f94b36",  # tokens: the app's key for the rates service
}


@dataclass
class WebAppServices:
    app: str  # "notes" | "tokens"
    postgres: PostgresServer = field(default_factory=PostgresServer)
    redis: RedisServer = field(default_factory=RedisServer)
    port: int = field(default_factory=free_port)
    rates_port: int = field(default_factory=free_port)
    rates: subprocess.Popen | None = None

    @property
    def command(self) -> list[str]:
        return [sys.executable, str(HERE / self.app / "app.py")]

    @property
    def traffic(self) -> list[str]:
        return [sys.executable, str(HERE / self.app / "traffic.py"), f"http://127.0.0.1:{self.port}"]

    def env(self) -> dict[str, str]:
        """What the app needs (no password: the app never reads it) ..."""
        env = {"DATABASE_URL": self.postgres.dsn, "REDIS_URL": f"redis://127.0.0.1:{self.redis.port}/0",
               "PORT": str(self.port)}
        if self.app == "notes":
            env["SECRET_KEY"] = SECRETS["secret_key"]
        else:
            env.update(JWT_SECRET=SECRETS["jwt_secret"], RATES_URL=f"http://127.0.0.1:{self.rates_port}",
                       RATES_API_KEY=SECRETS["rates_api_key"])
        return env

    def traffic_env(self) -> dict[str, str]:
        """... and what the traffic script needs: who signs in, with which password."""
        user = {"notes": ("NOTES_EMAIL", "ann@example.com"), "tokens": ("TOKENS_USER", "ann")}[self.app]
        return {user[0]: user[1], f"{self.app.upper()}_PASSWORD": SECRETS["password"]}

    def start(self) -> WebAppServices:
        try:
            self.postgres.start()
            self.redis.start()
            if self.app == "tokens":
                self.rates = subprocess.Popen([sys.executable, str(HERE / "tokens" / "rates.py")],
                                              env=dict(os.environ, PORT=str(self.rates_port),
                                                       RATES_API_KEY=SECRETS["rates_api_key"]))
                wait_port("127.0.0.1", self.rates_port, proc=self.rates)
            user = self.traffic_env()
            name = user.get("NOTES_EMAIL") or user["TOKENS_USER"]
            subprocess.run([*self.command, "--add-user", name], check=True,
                           env=dict(os.environ, **self.env(), **user))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.rates is not None and self.rates.poll() is None:
            self.rates.terminate()
            try:
                self.rates.wait(10)
            except subprocess.TimeoutExpired:
                self.rates.kill()
                self.rates.wait()
        self.rates = None
        self.redis.destroy()
        self.postgres.destroy()
