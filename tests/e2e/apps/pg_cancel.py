"""psycopg cancels a query that takes too long (argv: DSN, seconds): prints its result or
the SQLSTATE of the cancel, then shows the connection goes on."""

import sys
import threading

import psycopg

with psycopg.connect(sys.argv[1], autocommit=True) as conn:
    print(conn.execute("select 1").fetchone())
    timer = threading.Timer(float(sys.argv[2]), conn.cancel)
    timer.start()
    try:
        print(conn.execute("select 'slow', pg_sleep(0.1)").fetchone())
    except psycopg.errors.QueryCanceled as exc:
        print("canceled:", exc.sqlstate)
    timer.cancel()
    print(conn.execute("select 2").fetchone())
