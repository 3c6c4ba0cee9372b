"""The pricing service the shop calls over HTTP (a separate process on 127.0.0.1).

``GET /price?sku=KB-1&base=4999`` -> ``{"sku", "base_cents", "price_cents", "currency",
"rule"}``: 10 % off keyboards (``KB-``), 5 % off above 100.00, else the base price.
``GET /health`` -> ``{"status": "ok"}``. Port from ``PORT``.
"""

from __future__ import annotations

import os

from aiohttp import web

routes = web.RouteTableDef()


def quote(sku: str, base: int) -> tuple[int, str]:
    if sku.startswith("KB-"):
        return round(base * 0.9), "keyboards -10%"
    if base > 10000:
        return round(base * 0.95), "above 100.00 -5%"
    return base, "list price"


@routes.get("/price")
async def price(request: web.Request) -> web.Response:
    try:
        sku, base = request.query["sku"], int(request.query["base"])
    except (KeyError, ValueError):
        return web.json_response({"error": "expected ?sku=...&base=<cents>"}, status=400)
    cents, rule = quote(sku, base)
    return web.json_response({"sku": sku, "base_cents": base, "price_cents": cents,
                              "currency": "EUR", "rule": rule})


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


if __name__ == "__main__":
    app = web.Application()
    app.add_routes(routes)
    web.run_app(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8081")), print=None)
