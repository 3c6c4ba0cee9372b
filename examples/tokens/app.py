"""Tokens: a JSON API with a password login that returns a JWT, and items in Postgres.

Written the way aiohttp APIs are: ``POST /api/login`` checks a JSON password against a
PBKDF2 hash in PostgreSQL (asyncpg) and answers a JWT (PyJWT, HS256, with a random
``jti``); every other call needs ``Authorization: Bearer <token>``. Items have UUIDs
Postgres makes; a created item's id is used in later URLs. Redis caches items. Prices
are converted through a downstream rates service (``rates.py``): the app signs in to it
with an API key, gets a session token and a cookie back, and sends both with each
quote request (the token in the query, the cookie kept by httpx).

Configuration (environment): ``DATABASE_URL``, ``REDIS_URL``, ``JWT_SECRET``,
``RATES_URL``, ``RATES_API_KEY``, ``PORT`` (default 8000), ``HOST`` (default 127.0.0.1).
``python app.py --add-user NAME`` (password from ``TOKENS_PASSWORD``) creates the schema
and a user before the app runs.

Endpoints::

    POST   /api/login                {username, password} -> {access_token, token_type}
    GET    /api/me                   the signed-in user
    POST   /api/items                {name, price_cents} -> 201 {id, ...}
    GET    /api/items                the user's items
    GET    /api/items/{id}           one item (Redis, then Postgres; 404)
    PATCH  /api/items/{id}           {name?, price_cents?}
    GET    /api/items/{id}/quote?currency=EUR   the price in another currency (rates service)
    DELETE /api/items/{id}           204
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import sys
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import jwt
import redis.asyncio as aioredis
from aiohttp import web

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TABLE IF NOT EXISTS api_users (
    id       serial PRIMARY KEY,
    username text UNIQUE NOT NULL,
    salt     text NOT NULL,
    pw_hash  text NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner       integer NOT NULL REFERENCES api_users (id),
    name        text NOT NULL,
    price_cents integer NOT NULL CHECK (price_cents >= 0)
);
"""
TOKEN_MINUTES = 30
routes = web.RouteTableDef()


def hash_password(password: str, salt: str) -> str:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), 100_000).hex()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _item(row: asyncpg.Record) -> dict:
    return {"id": str(row["id"]), "name": row["name"], "price_cents": row["price_cents"]}


@web.middleware
async def authenticate(request: web.Request, handler):
    if request.path == "/api/login":
        return await handler(request)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        return _error(401, "missing bearer token")
    try:
        claims = jwt.decode(token, request.app["jwt_secret"], algorithms=["HS256"])
    except jwt.InvalidTokenError as exc:
        return _error(401, f"invalid token: {exc}")
    request["user_id"] = int(claims["sub"])
    request["username"] = claims["name"]
    return await handler(request)


@routes.post("/api/login")
async def login(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        username, password = str(body["username"]), str(body["password"])
    except (ValueError, KeyError, TypeError):
        return _error(400, "expected JSON {username, password}")
    row = await request.app["pg"].fetchrow(
        "SELECT id, salt, pw_hash FROM api_users WHERE username = $1", username)
    if row is None or not hmac.compare_digest(row["pw_hash"], hash_password(password, row["salt"])):
        return _error(401, "wrong username or password")
    now = datetime.now(UTC)
    token = jwt.encode({"sub": str(row["id"]), "name": username, "iat": now,
                        "exp": now + timedelta(minutes=TOKEN_MINUTES), "jti": uuid.uuid4().hex},
                       request.app["jwt_secret"], algorithm="HS256")
    return web.json_response({"access_token": token, "token_type": "bearer",
                              "expires_in": TOKEN_MINUTES * 60})


@routes.get("/api/me")
async def me(request: web.Request) -> web.Response:
    return web.json_response({"id": request["user_id"], "username": request["username"]})


def _fields(body: object, partial: bool) -> dict:
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    out = {}
    if "name" in body or not partial:
        out["name"] = str(body["name"])
    if "price_cents" in body or not partial:
        out["price_cents"] = int(body["price_cents"])
    return out


@routes.post("/api/items")
async def create_item(request: web.Request) -> web.Response:
    try:
        fields = _fields(await request.json(), partial=False)
    except (ValueError, KeyError, TypeError):
        return _error(400, "expected JSON {name, price_cents}")
    row = await request.app["pg"].fetchrow(
        "INSERT INTO items (owner, name, price_cents) VALUES ($1, $2, $3) RETURNING id, name, price_cents",
        request["user_id"], fields["name"], fields["price_cents"])
    return web.json_response(_item(row), status=201)


@routes.get("/api/items")
async def list_items(request: web.Request) -> web.Response:
    rows = await request.app["pg"].fetch(
        "SELECT id, name, price_cents FROM items WHERE owner = $1 ORDER BY name, id", request["user_id"])
    return web.json_response({"items": [_item(r) for r in rows]})


async def _find(request: web.Request) -> dict | None:
    try:
        item_id = uuid.UUID(request.match_info["id"])
    except ValueError:
        return None
    cache: aioredis.Redis = request.app["redis"]
    key = f"item:{request['user_id']}:{item_id}"
    cached = await cache.get(key)
    if cached is not None:
        return json.loads(cached)
    row = await request.app["pg"].fetchrow(
        "SELECT id, name, price_cents FROM items WHERE id = $1 AND owner = $2", item_id, request["user_id"])
    if row is None:
        return None
    item = _item(row)
    await cache.set(key, json.dumps(item), ex=300)
    return item


@routes.get("/api/items/{id}")
async def get_item(request: web.Request) -> web.Response:
    item = await _find(request)
    return web.json_response(item) if item else _error(404, "no such item")


@routes.patch("/api/items/{id}")
async def update_item(request: web.Request) -> web.Response:
    item = await _find(request)
    if item is None:
        return _error(404, "no such item")
    try:
        fields = _fields(await request.json(), partial=True)
    except (ValueError, KeyError, TypeError):
        return _error(400, "expected JSON {name?, price_cents?}")
    item.update(fields)
    await request.app["pg"].execute("UPDATE items SET name = $1, price_cents = $2 WHERE id = $3",
                                    item["name"], item["price_cents"], uuid.UUID(item["id"]))
    await request.app["redis"].delete(f"item:{request['user_id']}:{item['id']}")
    return web.json_response(item)


@routes.get("/api/items/{id}/quote")
async def quote(request: web.Request) -> web.Response:
    item = await _find(request)
    if item is None:
        return _error(404, "no such item")
    currency = request.query.get("currency", "EUR")
    rates: RatesClient = request.app["rates"]
    converted = await rates.convert(item["price_cents"], currency)
    return web.json_response({"id": item["id"], "currency": currency, "price": converted})


@routes.delete("/api/items/{id}")
async def delete_item(request: web.Request) -> web.Response:
    item = await _find(request)
    if item is None:
        return _error(404, "no such item")
    await request.app["pg"].execute("DELETE FROM items WHERE id = $1", uuid.UUID(item["id"]))
    await request.app["redis"].delete(f"item:{request['user_id']}:{item['id']}")
    return web.Response(status=204)


class RatesClient:
    """The downstream rates service: sign in once with the API key, then send the session
    token it gave (in the query) and its cookie (kept by httpx) with each conversion."""

    def __init__(self, base: str, api_key: str) -> None:
        self.http = httpx.AsyncClient(base_url=base, timeout=10)
        self.api_key = api_key
        self.session: str | None = None
        self.lock = asyncio.Lock()

    async def convert(self, cents: int, currency: str) -> dict:
        async with self.lock:
            if self.session is None:
                answer = await self.http.post("/v1/session", headers={"X-Api-Key": self.api_key})
                answer.raise_for_status()
                self.session = answer.json()["session_token"]
            answer = await self.http.post("/v1/convert", params={"session": self.session},
                                          json={"amount_cents": cents, "to": currency})
            answer.raise_for_status()
            return answer.json()


async def _startup(app: web.Application) -> None:
    app["pg"] = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=1, max_size=4)
    app["redis"] = aioredis.from_url(os.environ["REDIS_URL"])
    app["rates"] = RatesClient(os.environ["RATES_URL"], os.environ["RATES_API_KEY"])


async def _cleanup(app: web.Application) -> None:
    await app["rates"].http.aclose()
    await app["redis"].aclose()
    await app["pg"].close()


def make_app() -> web.Application:
    app = web.Application(middlewares=[authenticate])
    app["jwt_secret"] = os.environ["JWT_SECRET"]
    app.add_routes(routes)
    app.on_startup.append(_startup)
    app.on_cleanup.append(_cleanup)
    return app


async def add_user(username: str, password: str) -> None:
    conn = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        await conn.execute(SCHEMA)
        salt = secrets.token_hex(8)
        await conn.execute("INSERT INTO api_users (username, salt, pw_hash) VALUES ($1, $2, $3)",
                           username, salt, hash_password(password, salt))
    finally:
        await conn.close()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--add-user"]:
        asyncio.run(add_user(sys.argv[2], os.environ["TOKENS_PASSWORD"]))
        sys.exit(0)
    web.run_app(make_app(), host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8000")),
                print=None)
