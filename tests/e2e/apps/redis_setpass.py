"""A redis-py client for ``tests/e2e/test_redis_volatile.py`` that sets passwords of its
own choosing, as redis-py's ``test_credential_provider_with_supplier`` does:
``python -m tests.e2e.apps.redis_setpass PORT same|other`` sets a fresh random
``requirepass`` and a random password for the ACL user ``app``, then logs in on new
connections (RESP2 ``AUTH`` and RESP3 ``HELLO 3 AUTH``) with those passwords (``same``)
or with other random ones (``other``), and once with a wrong fixed one; prints ``ok`` or
``refused`` per login; resets both at the end.
"""

from __future__ import annotations

import secrets
import sys

import redis


def main(port: int, mode: str) -> None:
    admin = redis.Redis(host="127.0.0.1", port=port, socket_timeout=10)
    password, user_password = secrets.token_hex(8), secrets.token_hex(8)  # new every run
    admin.config_set("requirepass", password)
    admin.acl_setuser("app", enabled=True, passwords=["+" + user_password], keys="~*",
                      commands=["+ping"])
    if mode == "other":
        password, user_password = secrets.token_hex(8), secrets.token_hex(8)
    for protocol in (2, 3):
        for user, login in ((None, password), ("app", user_password), (None, "wrong-password")):
            client = redis.Redis(host="127.0.0.1", port=port, username=user, password=login,
                                 protocol=protocol, socket_timeout=10)
            try:
                print("ok" if client.ping() else "no", protocol, user)
            except redis.AuthenticationError as exc:
                print("refused", protocol, user, type(exc).__name__)
            client.close()
    admin.config_set("requirepass", "")  # the admin connection stays logged in
    admin.acl_deluser("app")
    admin.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
