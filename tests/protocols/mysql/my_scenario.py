"""What one MySQL client does against a server, printed deterministically, so that a
recorded run and its replay can be compared line by line.

``python -m tests.protocols.mysql.my_scenario CLIENT HOST PORT [PASSWORD]`` with CLIENT
one of pymysql, mysqlclient, connector (prepared statements: the binary protocol),
sqlalchemy (a pool of PyMySQL connections). Each uses its own table.
"""

from __future__ import annotations

import datetime
import decimal
import sys
import threading

ROWS = [("apple", decimal.Decimal("1.50"), datetime.datetime(2024, 1, 2, 3, 4, 5, 678901),
         b"\x00\x01bin", 2.5, 2**63 + 5, datetime.date(2024, 2, 29), datetime.timedelta(hours=-30, seconds=7)),
        ("pear", None, None, None, None, 0, None, datetime.timedelta(microseconds=5))]
DDL = ("CREATE TABLE {t} (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(50), "
       "price DECIMAL(10,2), created DATETIME(6), data BLOB, f DOUBLE, u BIGINT UNSIGNED, "
       "d DATE, t TIME(6))")
INSERT = "INSERT INTO {t} (name, price, created, data, f, u, d, t) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"


def out(*parts: object) -> None:
    print(*[repr(p) for p in parts], flush=True)


def dbapi(module, connect, table: str, multi: bool = True) -> None:  # type: ignore[no-untyped-def]
    conn = connect()
    cur = conn.cursor()
    cur.execute("SELECT @@version_comment IS NOT NULL, DATABASE()")
    out("session", cur.fetchall())
    cur.execute(f"DROP TABLE IF EXISTS {table}")
    cur.execute(DDL.format(t=table))
    cur.executemany(INSERT.format(t=table), ROWS)
    out("inserted", cur.rowcount, cur.lastrowid)
    conn.commit()
    cur.execute(f"SELECT * FROM {table} ORDER BY id")
    out("description", [d[:2] for d in cur.description])
    out("rows", cur.fetchall())
    cur.execute(f"UPDATE {table} SET price = price * 2 WHERE name = %s", ("apple",))
    out("updated", cur.rowcount)
    conn.rollback()
    try:
        cur.execute("SELECT * FROM no_such_table")
    except module.Error as exc:
        out("error", exc.args[0], str(exc.args[1])[:60])
    if multi:
        cur.execute(f"SELECT 1 AS one; SELECT name FROM {table} ORDER BY id; UPDATE {table} SET f = 1")
        sets = []
        while True:
            sets.append(cur.fetchall() if cur.description else cur.rowcount)
            if not cur.nextset():
                break
        out("multi", sets)
        conn.rollback()
    conn.ping()
    conn.select_db("trproxy")
    cur.execute("SELECT COUNT(*) FROM " + table)
    out("count", cur.fetchall())
    conn.close()


def pymysql_client(host: str, port: int, password: str) -> None:
    import pymysql
    from pymysql.constants import CLIENT

    dbapi(pymysql, lambda: pymysql.connect(host=host, port=port, user="trproxy", password=password,
                                           database="trproxy", client_flag=CLIENT.MULTI_STATEMENTS),
          "t_pymysql")


def pymysql_tls_client(host: str, port: int, password: str) -> None:
    """PyMySQL asking for TLS (not verified: the test server's certificate is self-signed);
    prints whether the server saw this connection encrypted."""
    import pymysql

    conn = pymysql.connect(host=host, port=port, user="trproxy", password=password, database="trproxy",
                           ssl={"check_hostname": False})
    cur = conn.cursor()
    cur.execute("SHOW SESSION STATUS LIKE 'Ssl_version'")
    out("tls", [(name, bool(value)) for name, value in cur.fetchall()])
    cur.execute("SELECT 40 + %s AS n", (2,))
    out("rows", cur.fetchall())
    conn.close()


def volatile_client(host: str, port: int, password: str) -> None:
    """A fresh uuid4 primary key each run, inserted through a prepared statement and
    looked up again in SQL text: replay must pair the new value with the recorded one."""
    import uuid

    import mysql.connector

    conn = mysql.connector.connect(host=host, port=port, user="trproxy", password=password,
                                   database="trproxy", use_pure=True, ssl_disabled=True)
    cur = conn.cursor()
    cur.execute("CREATE TABLE IF NOT EXISTS t_volatile (id CHAR(36) PRIMARY KEY, n INT)")
    key = str(uuid.uuid4())
    prepared = conn.cursor(prepared=True)
    prepared.execute("INSERT INTO t_volatile (id, n) VALUES (%s, %s)", (key, 7))
    conn.commit()
    cur.execute(f"SELECT id, n FROM t_volatile WHERE id = '{key}'")
    [(found, n)] = cur.fetchall()
    out("same key back", found == key, n)
    conn.close()


def mysqlclient_client(host: str, port: int, password: str) -> None:
    import MySQLdb
    from MySQLdb.constants import CLIENT

    dbapi(MySQLdb, lambda: MySQLdb.connect(host=host, port=port, user="trproxy", password=password,
                                           database="trproxy", client_flag=CLIENT.MULTI_STATEMENTS),
          "t_mysqlclient")


def connector_client(host: str, port: int, password: str) -> None:
    import mysql.connector

    conn = mysql.connector.connect(host=host, port=port, user="trproxy", password=password,
                                   database="trproxy", use_pure=True, ssl_disabled=True)
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS t_connector")
    cur.execute(DDL.format(t="t_connector"))
    prepared = conn.cursor(prepared=True)
    for row in ROWS:
        prepared.execute(INSERT.format(t="t_connector"), row)
    conn.commit()
    prepared.execute("SELECT * FROM t_connector WHERE id >= %s ORDER BY id", (1,))
    out("binary rows", prepared.fetchall())
    prepared.execute("SELECT name, u FROM t_connector WHERE name = %s", ("pear",))
    out("again", prepared.fetchall())
    try:
        prepared.execute("SELECT nope FROM t_connector WHERE id = %s", (1,))
    except mysql.connector.Error as exc:
        out("error", exc.errno, exc.sqlstate)
    cur.execute("SELECT name, price FROM t_connector ORDER BY id")
    out("text rows", cur.fetchall())
    conn.cmd_reset_connection()
    conn.ping()
    prepared.close()
    conn.close()


def sqlalchemy_client(host: str, port: int, password: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(f"mysql+pymysql://trproxy:{password}@{host}:{port}/trproxy",
                              pool_size=2, max_overflow=0, pool_pre_ping=True)
    meta = sa.MetaData()
    items = sa.Table("t_sqlalchemy", meta, sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("name", sa.String(50)), sa.Column("qty", sa.Integer))
    meta.drop_all(engine)
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(items.insert(), [{"name": f"n{i}", "qty": i} for i in range(5)])
    results: dict[int, object] = {}

    def work(i: int) -> None:
        with engine.connect() as conn:
            results[i] = conn.execute(sa.select(items.c.name).where(items.c.qty == i)).scalar()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out("pooled", sorted(results.items()))
    with engine.connect() as conn:
        out("sum", conn.execute(sa.select(sa.func.sum(items.c.qty))).scalar())
    engine.dispose()


CLIENTS = {"pymysql": pymysql_client, "pymysql_tls": pymysql_tls_client, "mysqlclient": mysqlclient_client,
           "connector": connector_client, "volatile": volatile_client, "sqlalchemy": sqlalchemy_client}

if __name__ == "__main__":
    client, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    CLIENTS[client](host, port, sys.argv[4] if len(sys.argv) > 4 else "trproxy")
