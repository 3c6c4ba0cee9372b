"""Real dependencies of the web-app examples, for their demo, tests and benchmark.

``WebAppServices("notes")`` / ``("tokens")`` / ``("blog")`` / ``("tasks")`` starts
PostgreSQL and Redis on free loopback ports (the throwaway servers of
``tests/support/services.py``; tokens also starts its rates service), creates the
example's user with its password, and gives the environment the app and its traffic
script read (``env()``). ``stop()`` stops what it started. The blog (Django) applies its
migrations when it starts, so its database is empty until then: its user is made by
``add_user()`` once the app listens (``createsuperuser``, as an operator would).

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
    "django_secret_key": "django-insecure-4q$w9v!k2m#p8x7r3t6y1u0z5",  # blog: SECRET_KEY
    "fastapi_jwt_secret": "fastapi-jwt-hs256-key-3d9e-71a4c0b2f5",  # tasks: signs the JWTs
}
USERS = {"notes": ("NOTES_EMAIL", "ann@example.com"), "tokens": ("TOKENS_USER", "ann"),
         "blog": ("BLOG_USER", "ann"), "tasks": ("TASKS_USER", "ann")}


@dataclass
class WebAppServices:
    app: str  # "notes" | "tokens" | "blog" | "tasks"
    postgres: PostgresServer = field(default_factory=PostgresServer)
    redis: RedisServer = field(default_factory=RedisServer)
    port: int = field(default_factory=free_port)
    rates_port: int = field(default_factory=free_port)
    rates: subprocess.Popen | None = None

    @property
    def command(self) -> list[str]:
        if self.app == "blog":  # migrate, then Django's runserver (start.sh)
            return ["sh", str(HERE / "blog" / "start.sh")]
        if self.app == "tasks":
            return [sys.executable, "-m", "uvicorn", "app:app", "--app-dir", str(HERE / "tasks"),
                    "--host", "127.0.0.1", "--port", str(self.port)]
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
        elif self.app == "blog":
            env.update(SECRET_KEY=SECRETS["django_secret_key"], PYTHON=sys.executable)
        elif self.app == "tasks":
            env["JWT_SECRET"] = SECRETS["fastapi_jwt_secret"]
        else:
            env.update(JWT_SECRET=SECRETS["jwt_secret"], RATES_URL=f"http://127.0.0.1:{self.rates_port}",
                       RATES_API_KEY=SECRETS["rates_api_key"])
        return env

    def traffic_env(self) -> dict[str, str]:
        """... and what the traffic script needs: who signs in, with which password."""
        user = USERS[self.app]
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
            if self.app != "blog":
                self.add_user()
        except BaseException:
            self.stop()
            raise
        return self

    def add_user(self) -> None:
        """The example's user, with the password the traffic script signs in with."""
        env = dict(os.environ, **self.env(), **self.traffic_env())
        name = USERS[self.app][1]
        if self.app == "blog":
            manage = [sys.executable, str(HERE / "blog" / "manage.py")]
            subprocess.run([*manage, "createsuperuser", "--noinput", "--username", name,
                            "--email", f"{name}@example.com"], check=True,
                           env=dict(env, DJANGO_SUPERUSER_PASSWORD=SECRETS["password"]))
        elif self.app == "tasks":
            subprocess.run([sys.executable, str(HERE / "tasks" / "app.py"), "--add-user", name], check=True, env=env)
        else:
            subprocess.run([*self.command, "--add-user", name], check=True, env=env)

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
