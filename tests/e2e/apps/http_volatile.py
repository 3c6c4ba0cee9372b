"""An app calling a downstream HTTP service with values it generates, for
``tests/e2e/test_http_volatile.py``: ``python -m tests.e2e.apps.http_volatile PORT
[RESOURCE [QTY]]``.

* ``POST /<RESOURCE>/<uuid4>?at=<epoch>`` (default ``orders``) with an ``Idempotency-Key``
  header and a JSON body (the id, an ISO timestamp, a random nonce and ``QTY``, default
  2) whose keys are sent in a random order; the service answers the order back, and the
  app checks that the reply holds its own id;
* ``GET /<RESOURCE>/<uuid4>``: the service answers the stored order;
* a form ``POST /sessions`` with a random CSRF token the service echoes.

``python -m tests.e2e.apps.http_volatile PORT pin`` sends what no detector can call
generated: ``PUT /jobs/job<n>?n=<4 digits>`` with ``{"ref": <5 digits>}``; the service
echoes both (config.yaml's ``http:`` rules name them).

It prints only what does not change between runs, so a replay prints the same.
"""

from __future__ import annotations

import random
import secrets
import sys
import time
import uuid
from datetime import UTC, datetime

import requests


def main(base: str, resource: str, qty: int) -> None:
    session = requests.Session()
    oid = str(uuid.uuid4())
    fields = [("id", oid), ("created_at", datetime.now(UTC).isoformat()),
              ("nonce", secrets.token_hex(16)), ("qty", qty)]
    random.shuffle(fields)  # JSON object keys in another order in each run
    r = session.post(f"{base}/{resource}/{oid}", params={"at": int(time.time())}, json=dict(fields),
                     headers={"Idempotency-Key": str(uuid.uuid4())}, timeout=20)
    print("created", r.status_code, r.status_code == 201 and r.json().get("id") == oid,
          r.json().get("qty") if r.status_code == 201 else None)
    r = session.get(f"{base}/{resource}/{oid}", timeout=20)
    print("fetched", r.status_code, r.status_code == 200 and r.json().get("id") == oid)
    csrf = secrets.token_hex(16)
    r = session.post(f"{base}/sessions", data={"user": "ann", "csrf": csrf}, timeout=20)
    print("session", r.status_code, r.text == f"ann {csrf}")


def pinned(base: str) -> None:
    job, n, ref = random.randint(100, 999), random.randint(1000, 9999), random.randint(10000, 99999)
    r = requests.put(f"{base}/jobs/job{job}", params={"n": n}, json={"ref": ref}, timeout=20)
    echoed = r.json() if r.status_code == 201 else {}
    print("job", r.status_code, echoed.get("path") == f"/jobs/job{job}", echoed.get("ref") == ref)


if __name__ == "__main__":
    base = f"http://127.0.0.1:{sys.argv[1]}"
    if sys.argv[2:3] == ["pin"]:
        pinned(base)
    else:
        main(base, sys.argv[2] if len(sys.argv) > 2 else "orders",
             int(sys.argv[3]) if len(sys.argv) > 3 else 2)
