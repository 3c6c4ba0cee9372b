"""The shop example against real Postgres, Redis, Kafka and pricing service: every endpoint."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from tests.support.proc import stop
from tests.support.services import wait_port

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"
pytestmark = pytest.mark.slow


def _services_module():
    spec = importlib.util.spec_from_file_location("shop_services", SHOP / "services.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def shop():
    services = _services_module().ShopServices().start()
    env = services.env()
    app = subprocess.Popen([sys.executable, str(SHOP / "app.py")], env=dict(os.environ, **env),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_port("127.0.0.1", int(env["PORT"]), timeout=60, proc=app)
        yield services, env
    finally:
        stop(app)
        services.stop()
    assert app.returncode == 0, app.stdout.read() if app.stdout else ""  # clean shutdown


def test_every_endpoint(shop):
    services, env = shop
    with httpx.Client(base_url=f"http://127.0.0.1:{env['PORT']}", timeout=10) as http:
        assert http.get("/health").json() == {"status": "ok"}
        products = http.get("/products").json()["products"]
        assert [p["sku"] for p in products] == ["KB-1", "MS-1", "MN-1"]  # seeded at start-up
        first = http.get("/products/1").json()
        assert first == {"product": products[0], "cached": False}
        assert http.get("/products/1").json() == {"product": products[0], "cached": True}
        assert http.get("/products/99").status_code == 404
        assert http.get("/products/abc").status_code == 400

        made = http.post("/products", json={"sku": "HS-1", "name": "Headset", "price_cents": 5999})
        assert made.status_code == 201 and made.json()["product"]["id"] == 4
        assert http.post("/products", json={"sku": "HS-1", "name": "Again", "price_cents": 1}).status_code == 409
        assert http.post("/products", json={"sku": "x"}).status_code == 400

        assert http.get("/products/1/price").json() == {
            "product_id": 1, "sku": "KB-1", "base_cents": 4999, "price_cents": 4499,
            "currency": "EUR", "rule": "keyboards -10%"}
        assert http.get("/products/2/price").json()["rule"] == "list price"

        order = http.post("/orders", json={"product_id": 1, "quantity": 2})
        assert order.status_code == 201
        body = order.json()
        assert body["orders_so_far"] == 1
        assert body["order"]["total_cents"] == 9998 and body["order"]["created_at"].endswith("+00:00")
        assert http.post("/orders", json={"product_id": 99}).status_code == 404
        assert http.post("/orders", json={"product_id": 1, "quantity": 0}).status_code == 400
        assert http.get("/orders/1").json() == {"order": body["order"]}
        assert http.get("/orders/999").status_code == 404
        assert http.get("/stats").json() == {"orders_counted": 1, "orders_stored": 1}

        now = http.get("/now")
        data = now.json()
        assert now.headers["X-Request-Id"] == data["request_id"] and len(data["request_id"]) == 36
        assert data["now"][:10] == data["today"]

    # the side effects are in the real servers
    assert services.redis.cli("GET", "orders:count").strip() == "1"
    assert json.loads(services.redis.cli("GET", "product:1")) == products[0]
    assert services.postgres.psql("SELECT count(*) FROM orders").strip() == "1"
    event = asyncio.run(_first_event(env["KAFKA_BOOTSTRAP"]))
    assert json.loads(event) == body["order"]


async def _first_event(bootstrap: str) -> bytes:
    consumer = AIOKafkaConsumer("order-created", bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", group_id="test-shop")
    await consumer.start()
    try:
        msg = await asyncio.wait_for(consumer.getone(), 30)
        return msg.value
    finally:
        await consumer.stop()


def test_traffic_script_covers_every_endpoint(shop):
    _services, env = shop
    out = subprocess.run(["bash", str(SHOP / "traffic.sh"), f"http://127.0.0.1:{env['PORT']}"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    calls = [line[2:] for line in out.splitlines() if line.startswith("> ")]
    assert len(calls) >= 12
    routes = {c.split()[0] + " " + "/".join("{n}" if s.isdigit() else s for s in c.split()[1].split("/"))
              for c in calls}
    assert routes == {"GET /health", "GET /products", "GET /products/{n}", "POST /products",
                      "GET /products/{n}/price", "POST /orders", "GET /orders/{n}", "GET /stats",
                      "GET /now"}
    statuses = [line.rsplit("[", 1)[1].rstrip("]") for line in out.splitlines() if line.endswith("]")]
    assert len(statuses) == len(calls) and "000" not in statuses
    assert {"200", "201", "400", "404"} <= set(statuses)
