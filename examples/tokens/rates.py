"""The rates service the tokens app calls: sign in with an API key, then convert prices.

``POST /v1/session`` (``X-Api-Key`` must equal ``RATES_API_KEY``) answers a session token
in JSON and a ``rates_sid`` cookie; ``POST /v1/convert?session=TOKEN`` {amount_cents, to}
needs both and answers the converted amount. Both are fresh random values per sign-in, as a
real service's are. ``PORT`` says where it listens (loopback).
"""

from __future__ import annotations

import os
import secrets

from aiohttp import web

RATES = {"EUR": 0.92, "GBP": 0.79, "JPY": 151.3}
sessions: dict[str, str] = {}  # session token -> cookie


async def new_session(request: web.Request) -> web.Response:
    if request.headers.get("X-Api-Key") != os.environ["RATES_API_KEY"]:
        return web.json_response({"error": "bad api key"}, status=403)
    token, cookie = secrets.token_urlsafe(24), secrets.token_hex(16)
    sessions[token] = cookie
    answer = web.json_response({"session_token": token})
    answer.set_cookie("rates_sid", cookie, httponly=True)
    return answer


async def convert(request: web.Request) -> web.Response:
    body = await request.json()
    if sessions.get(request.query.get("session", "")) != request.cookies.get("rates_sid"):
        return web.json_response({"error": "no session"}, status=401)
    rate = RATES.get(body.get("to"))
    if rate is None:
        return web.json_response({"error": "unknown currency"}, status=400)
    return web.json_response({"amount": round(body["amount_cents"] * rate / 100, 2), "rate": rate})


if __name__ == "__main__":
    app = web.Application()
    app.add_routes([web.post("/v1/session", new_session), web.post("/v1/convert", convert)])
    web.run_app(app, host="127.0.0.1", port=int(os.environ["PORT"]), print=None)
