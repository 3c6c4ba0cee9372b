"""The shop: a small aiohttp web service that uses every dependency trproxy knows.

Postgres (asyncpg pool: products and orders), Redis (a product cache and an order
counter), Kafka (aiokafka producer: an ``order-created`` event per order) and a
downstream HTTP service (httpx: the pricing service, ``pricing.py``). ``GET /now``
answers with the current time and a fresh UUID, to show noise and time freezing.

Configuration (environment): ``DATABASE_URL``, ``REDIS_URL``, ``KAFKA_BOOTSTRAP``,
``PRICING_URL``, ``PORT`` (default 8080), ``HOST`` (default 127.0.0.1). The schema is
created at start-up when missing, and three products are seeded: start-up traffic that
a recording must hold for the app to start in replay.

Endpoints::

    GET  /health                 no dependency
    GET  /products               Postgres
    GET  /products/{id}          Redis cache, Postgres on a miss (404 when unknown)
    POST /products               Postgres insert {sku, name, price_cents} -> 201 (400 when invalid)
    GET  /products/{id}/price    Postgres + the pricing service
    POST /orders                 Postgres transaction, Kafka event, Redis counter -> 201
    GET  /orders/{id}            Postgres (404 when unknown)
    GET  /stats                  Redis counter + Postgres count
    GET  /now                    the time and a UUID (noise)
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
import redis.asyncio as aioredis
from aiohttp import web
from aiokafka import AIOKafkaProducer

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    id          serial PRIMARY KEY,
    sku         text UNIQUE NOT NULL,
    name        text NOT NULL,
    price_cents integer NOT NULL CHECK (price_cents >= 0)
);
CREATE TABLE IF NOT EXISTS orders (
    id          serial PRIMARY KEY,
    product_id  integer NOT NULL REFERENCES products (id),
    quantity    integer NOT NULL CHECK (quantity > 0),
    total_cents integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
"""
SEED = [("KB-1", "Keyboard", 4999), ("MS-1", "Mouse", 1999), ("MN-1", "Monitor", 18999)]
TOPIC = "order-created"
CACHE_SECONDS = 60

routes = web.RouteTableDef()


def _product(row: asyncpg.Record) -> dict:
    return {"id": row["id"], "sku": row["sku"], "name": row["name"], "price_cents": row["price_cents"]}


def _order(row: asyncpg.Record) -> dict:
    return {"id": row["id"], "product_id": row["product_id"], "quantity": row["quantity"],
            "total_cents": row["total_cents"], "created_at": row["created_at"].isoformat()}


def _int(request: web.Request, name: str) -> int:
    try:
        return int(request.match_info[name])
    except ValueError:
        raise web.HTTPBadRequest(text=json.dumps({"error": f"{name} must be a number"}),
                                 content_type="application/json") from None


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/products")
async def list_products(request: web.Request) -> web.Response:
    rows = await request.app["pg"].fetch("SELECT id, sku, name, price_cents FROM products ORDER BY id")
    return web.json_response({"products": [_product(r) for r in rows]})


@routes.get("/products/{id}")
async def get_product(request: web.Request) -> web.Response:
    product_id = _int(request, "id")
    cache: aioredis.Redis = request.app["redis"]
    key = f"product:{product_id}"
    cached = await cache.get(key)
    if cached is not None:
        return web.json_response({"product": json.loads(cached), "cached": True})
    row = await request.app["pg"].fetchrow(
        "SELECT id, sku, name, price_cents FROM products WHERE id = $1", product_id)
    if row is None:
        return _error(404, f"no product {product_id}")
    product = _product(row)
    await cache.set(key, json.dumps(product), ex=CACHE_SECONDS)
    return web.json_response({"product": product, "cached": False})


@routes.post("/products")
async def create_product(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        sku, name, price = str(body["sku"]), str(body["name"]), int(body["price_cents"])
    except (ValueError, KeyError, TypeError):
        return _error(400, "expected JSON {sku, name, price_cents}")
    try:
        row = await request.app["pg"].fetchrow(
            "INSERT INTO products (sku, name, price_cents) VALUES ($1, $2, $3) "
            "RETURNING id, sku, name, price_cents", sku, name, price)
    except asyncpg.UniqueViolationError:
        return _error(409, f"sku {sku} exists")
    except asyncpg.CheckViolationError:
        return _error(400, "price_cents must be >= 0")
    return web.json_response({"product": _product(row)}, status=201)


@routes.get("/products/{id}/price")
async def price(request: web.Request) -> web.Response:
    product_id = _int(request, "id")
    row = await request.app["pg"].fetchrow("SELECT sku, price_cents FROM products WHERE id = $1", product_id)
    if row is None:
        return _error(404, f"no product {product_id}")
    resp = await request.app["http"].get("/price", params={"sku": row["sku"], "base": row["price_cents"]})
    if resp.status_code != 200:
        return _error(502, f"pricing service answered {resp.status_code}")
    return web.json_response({"product_id": product_id, **resp.json()})


@routes.post("/orders")
async def create_order(request: web.Request) -> web.Response:
    try:
        body = await request.json()
        product_id, quantity = int(body["product_id"]), int(body.get("quantity", 1))
    except (ValueError, KeyError, TypeError):
        return _error(400, "expected JSON {product_id, quantity}")
    if quantity <= 0:
        return _error(400, "quantity must be positive")
    async with request.app["pg"].acquire() as conn, conn.transaction():
        product = await conn.fetchrow("SELECT id, price_cents FROM products WHERE id = $1 FOR UPDATE",
                                      product_id)
        if product is None:
            return _error(404, f"no product {product_id}")
        row = await conn.fetchrow(
            "INSERT INTO orders (product_id, quantity, total_cents) VALUES ($1, $2, $3) "
            "RETURNING id, product_id, quantity, total_cents, created_at",
            product_id, quantity, product["price_cents"] * quantity)
    order = _order(row)
    await request.app["kafka"].send_and_wait(TOPIC, json.dumps(order).encode(),
                                             key=str(order["id"]).encode())
    count = await request.app["redis"].incr("orders:count")
    return web.json_response({"order": order, "orders_so_far": count}, status=201)


@routes.get("/orders/{id}")
async def get_order(request: web.Request) -> web.Response:
    order_id = _int(request, "id")
    row = await request.app["pg"].fetchrow(
        "SELECT id, product_id, quantity, total_cents, created_at FROM orders WHERE id = $1", order_id)
    if row is None:
        return _error(404, f"no order {order_id}")
    return web.json_response({"order": _order(row)})


@routes.get("/stats")
async def stats(request: web.Request) -> web.Response:
    counted = await request.app["redis"].get("orders:count")
    stored = await request.app["pg"].fetchval("SELECT count(*) FROM orders")
    return web.json_response({"orders_counted": int(counted or 0), "orders_stored": stored})


@routes.get("/now")
async def now(request: web.Request) -> web.Response:
    moment = datetime.now(UTC)
    request_id = str(uuid.uuid4())
    return web.json_response(
        {"now": moment.isoformat(), "epoch_ms": int(moment.timestamp() * 1000),
         "today": moment.date().isoformat(), "request_id": request_id, "greeting": "hello"},
        headers={"X-Request-Id": request_id})


async def dependencies(app: web.Application):
    """Open every client at start-up (creating the schema), close them at shutdown."""
    app["pg"] = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=1, max_size=4)
    async with app["pg"].acquire() as conn:
        await conn.execute(SCHEMA)
        await conn.executemany("INSERT INTO products (sku, name, price_cents) VALUES ($1, $2, $3) "
                               "ON CONFLICT (sku) DO NOTHING", SEED)
    app["redis"] = aioredis.from_url(os.environ["REDIS_URL"], decode_responses=True)
    app["kafka"] = AIOKafkaProducer(bootstrap_servers=os.environ["KAFKA_BOOTSTRAP"],
                                    client_id="shop", acks=1)
    await app["kafka"].start()
    app["http"] = httpx.AsyncClient(base_url=os.environ["PRICING_URL"], timeout=10)
    yield
    await app["http"].aclose()
    await app["kafka"].stop()
    await app["redis"].aclose()
    await app["pg"].close()


def make_app() -> web.Application:
    app = web.Application()
    app.add_routes(routes)
    app.cleanup_ctx.append(dependencies)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host=os.environ.get("HOST", "127.0.0.1"),
                port=int(os.environ.get("PORT", "8080")), print=None)
