"""Drive the tasks API the way a client of an OAuth2-protected API does, with httpx.

Usage: ``traffic.py BASE_URL`` with ``TASKS_USER`` and ``TASKS_PASSWORD`` set. Gets a
token from ``POST /token`` (the OAuth2 password form), sends it as a Bearer token,
creates tasks and uses the ids the API answered in later URLs, updates one, reads the
activity the background tasks wrote to Redis, and checks the errors: a task that is not
there (404), a bad body and a bad id (422), no token (401). Prints each call with its
status; fails on a status other than the one expected.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/
from calls import checked  # noqa: E402


def main(base: str) -> None:
    with httpx.Client(base_url=base, timeout=30) as http:
        call = checked(http.request)

        call("GET", "/users/me", 401)
        token = call("POST", "/token", 200, data={"username": os.environ["TASKS_USER"],
                                                   "password": os.environ["TASKS_PASSWORD"]}).json()
        http.headers["Authorization"] = f"Bearer {token['access_token']}"
        call("GET", "/users/me", 200)
        first = call("POST", "/tasks", 201, json={"title": "Write the Django example", "priority": 2}).json()
        second = call("POST", "/tasks", 201, json={"title": "Write the FastAPI example"}).json()
        call("GET", f"/tasks/{first['id']}", 200)
        call("PATCH", f"/tasks/{second['id']}", 200, json={"done": True})
        call("GET", f"/tasks/{second['id']}", 200)
        call("GET", "/tasks", 200)
        call("GET", "/tasks/6f1c9a52-2f4e-4c1e-9d55-0b7e4c7c1a11", 404)
        call("POST", "/tasks", 422, json={"title": "", "priority": 9})
        call("GET", "/tasks/not-a-uuid", 422)
        call("GET", "/activity", 200)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000")
