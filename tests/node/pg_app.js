// node-postgres the way applications use it: a Pool, parameterized and named prepared
// statements, transactions, an error, the common types, LISTEN/NOTIFY; TLS if asked.
// `node pg_app.js HOST PORT` prints one JSON line per result (the e2e test compares them).
'use strict';
const { Pool, Client } = require('pg');
const { out, fail } = require('./lib');

const [host, port] = process.argv.slice(2);
// PG_TLS=verify: TLS verified against Node's CAs and NODE_EXTRA_CA_CERTS (trproxy sets it);
// PG_TLS=any: TLS, any certificate (the test server's own is self-signed)
const ssl = { verify: true, any: { rejectUnauthorized: false } }[process.env.PG_TLS];
const config = { host, port: Number(port), user: 'trproxy', password: 'trproxy', database: 'trproxy', ssl };

async function main() {
  const pool = new Pool({ ...config, max: 3 });
  await pool.query('DROP TABLE IF EXISTS node_items, node_types');
  await pool.query('CREATE TABLE node_items (id serial PRIMARY KEY, name text UNIQUE NOT NULL, price numeric(10,2))');
  out('insert', (await pool.query(
    'INSERT INTO node_items (name, price) VALUES ($1, $2), ($3, $4) RETURNING id, name, price',
    ['apple', '1.25', 'pear', 2.5])).rows);

  // three queries at once: the pool spreads them over its connections
  const counts = await Promise.all([1, 2, 3].map((n) =>
    pool.query('SELECT $1::int * count(*) AS n FROM node_items', [n])));
  out('parallel', counts.map((r) => r.rows[0].n));

  // a transaction on one checked-out client, committed; another rolled back
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    await client.query('UPDATE node_items SET price = price * 2 WHERE name = $1', ['apple']);
    await client.query('COMMIT');
    await client.query('BEGIN');
    await client.query('DELETE FROM node_items');
    out('inside rollback', (await client.query('SELECT count(*)::int AS n FROM node_items')).rows);
    await client.query('ROLLBACK');
  } finally {
    client.release();
  }
  out('after', (await pool.query('SELECT name, price FROM node_items ORDER BY id')).rows);

  try {  // a unique violation: the error fields the app sees
    await pool.query('INSERT INTO node_items (name) VALUES ($1)', ['apple']);
    out('unique', 'no error');
  } catch (e) {
    out('unique', { code: e.code, constraint: e.constraint, detail: e.detail, message: e.message });
  }
  try {  // an error inside a transaction, then the rollback the app must do
    const c = await pool.connect();
    try {
      await c.query('BEGIN');
      await c.query('SELECT 1/0');
    } catch (e) {
      out('in tx', { code: e.code, message: e.message });
      await c.query('ROLLBACK');
      out('after rollback', (await c.query('SELECT 1 AS one')).rows);
    } finally {
      c.release();
    }
  } catch (e) { fail(e); }

  // a named prepared statement: parsed once per connection, then Bind/Execute only
  for (const name of ['apple', 'pear', 'plum']) {
    const r = await pool.query({ name: 'price-of', text: 'SELECT price FROM node_items WHERE name = $1', values: [name] });
    out('named', name, r.rows);
  }
  // rowMode array, fields metadata
  const arr = await pool.query({ text: 'SELECT id, name FROM node_items ORDER BY id', rowMode: 'array' });
  out('array rows', arr.rows, arr.fields.map((f) => [f.name, f.dataTypeID]));

  // the common types, written through parameters and read back
  await pool.query(`CREATE TABLE node_types (j json, jb jsonb, ts timestamptz, n numeric, b bytea,
    ia int[], ta text[], u uuid, d date, f float8, bo bool, bi bigint, iv interval)`);
  await pool.query('INSERT INTO node_types VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)', [
    JSON.stringify({ a: [1, 2, { b: null }] }), { k: 'v', n: 1.5 }, new Date(Date.UTC(2024, 1, 29, 12, 30, 45, 123)),
    '12345678901234567890.000000001', Buffer.from([0, 1, 2, 254, 255]), [1, 2, 3], ['a', 'b,c', 'd"e', null],
    '6f1c7e2a-3b4d-4e5f-8a9b-0c1d2e3f4a5b', '2024-03-01', 0.1 + 0.2, true, '9007199254740993', '1 day 02:03:04']);
  const t = (await pool.query('SELECT *, ts AT TIME ZONE \'UTC\' AS ts_utc FROM node_types')).rows[0];
  out('types', {
    j: t.j, jb: t.jb, ts: t.ts.toISOString(), ts_utc: t.ts_utc.toISOString ? 'date' : t.ts_utc, n: t.n,
    b: t.b.toString('hex'), ia: t.ia, ta: t.ta, u: t.u, d: t.d instanceof Date, f: t.f, bo: t.bo, bi: t.bi,
    iv: t.iv.toPostgres ? t.iv.toPostgres() : t.iv,
  });

  // LISTEN on one connection, NOTIFY from another: the notification arrives unasked
  const listener = new Client(config);
  await listener.connect();
  const got = new Promise((resolve) => listener.on('notification', (m) => resolve([m.channel, m.payload])));
  await listener.query('LISTEN node_events');
  await pool.query("SELECT pg_notify('node_events', $1)", ['item added']);
  out('notify', await got);
  await listener.end();
  await pool.end();
}

main().catch(fail);
