"""A Postgres server that offers TLS is still recorded: trproxy declines the SSLRequest."""

from __future__ import annotations

import os

import pytest

from tests.support.proc import run_trproxy
from tests.support.services import PostgresServer

pytestmark = [pytest.mark.slow, pytest.mark.root]

if os.geteuid() != 0:
    pytest.skip("the eBPF redirect needs root", allow_module_level=True)


def test_sslmode_prefer_client_is_recorded_in_plaintext_and_replayed(tmp_path):
    server = PostgresServer(ssl=True, password="s3cret-pw").start()
    try:
        dsn = f"host=127.0.0.1 port={server.port} user=trproxy dbname=trproxy sslmode=prefer"
        sql = "select 'plain' || 'text', current_setting('ssl')"
        cmd = ["psql", "-X", "-A", "-t", dsn, "-c", sql,
               "-c", "select ssl from pg_stat_ssl where pid = pg_backend_pid()"]
        env = {"PGPASSWORD": server.password}
        import subprocess

        direct = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, **env))
        assert direct.stdout.split() == ["plaintext|on", "t"], direct.stderr  # TLS when direct
        recorded = run_trproxy("record", "--dir", str(tmp_path), "--", *cmd, env=env)
        assert recorded.returncode == 0, recorded.stderr
        assert recorded.stdout.split() == ["plaintext|on", "f"]  # through trproxy: plaintext
        mocks = (tmp_path / "test-set-0" / "mocks.yaml").read_text()
        assert "plain' || 'text" in mocks and "s3cret-pw" not in mocks
    finally:
        server.destroy()
    replayed = run_trproxy("replay", "--dir", str(tmp_path), "--", *cmd, env=env)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout == recorded.stdout
    assert "trproxy: 0 misses" in replayed.stderr
