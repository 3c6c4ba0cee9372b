"""A redis-py client for ``tests/e2e/test_redis_fidelity.py``:
``python -m tests.e2e.apps.redis_auth PORT PROTOCOL PASSWORD...`` logs in once per
password (RESP2: ``AUTH``; RESP3: ``HELLO 3 AUTH default ...``) and prints ``refused``
with the error class, or ``ok`` and the results of a few commands whose answers hold
secrets (``ACL LIST``, ``CONFIG GET requirepass``: their values are redacted in the
recording, so only their shape is printed).
"""

from __future__ import annotations

import sys

import redis


def main(port: int, protocol: int, passwords: list[str]) -> None:
    for password in passwords:
        client = redis.Redis(host="127.0.0.1", port=port, password=password, protocol=protocol,
                             socket_timeout=10)
        try:
            client.ping()
        except redis.AuthenticationError as exc:
            print("refused", type(exc).__name__)
            continue
        client.incr("logins")
        print("ok", client.get("logins"), len(client.acl_list()), sorted(client.config_get("requirepass")))
        client.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
