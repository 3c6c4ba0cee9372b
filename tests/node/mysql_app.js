// mysql2 the way applications use it: a promise pool, text queries with placeholders,
// server-side prepared statements (execute), a transaction, an error, the common types.
// `node mysql_app.js HOST PORT` prints one JSON line per result.
'use strict';
const mysql = require('mysql2/promise');
const { out, fail } = require('./lib');

const [host, port] = process.argv.slice(2);

async function main() {
  const pool = mysql.createPool({ host, port: Number(port), user: 'trproxy', password: 'trproxy',
    database: 'trproxy', connectionLimit: 2, timezone: 'Z', supportBigNumbers: true, bigNumberStrings: true,
    ssl: undefined });
  await pool.query('DROP TABLE IF EXISTS node_items');
  await pool.query(`CREATE TABLE node_items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(40) UNIQUE,
    price DECIMAL(10,2), tags JSON, created DATETIME(3), data BLOB, big BIGINT)`);
  const [res] = await pool.query('INSERT INTO node_items (name, price, tags, created, data, big) VALUES ?', [[
    ['apple', '1.25', JSON.stringify(['red', 'fruit']), new Date(Date.UTC(2024, 1, 29, 12, 30, 45, 123)),
      Buffer.from([0, 1, 255]), '9007199254740993'],
    ['pear', '2.50', JSON.stringify({ ripe: true }), new Date(Date.UTC(2024, 2, 1)), null, '-1']]]);
  out('insert', res.affectedRows, res.insertId);
  const [rows] = await pool.query('SELECT * FROM node_items WHERE price > ? ORDER BY id', [1]);
  out('text rows', rows.map((r) => ({ ...r, created: r.created.toISOString(), data: r.data && r.data.toString('hex') })));

  // execute(): COM_STMT_PREPARE once per connection, then the binary protocol
  for (const name of ['apple', 'pear', 'plum']) {
    const [r] = await pool.execute('SELECT id, name, price, created, big FROM node_items WHERE name = ?', [name]);
    out('execute', name, r.map((x) => ({ ...x, created: x.created.toISOString() })));
  }

  const conn = await pool.getConnection();
  try {
    await conn.beginTransaction();
    await conn.execute('UPDATE node_items SET price = price * 2 WHERE name = ?', ['apple']);
    await conn.commit();
    await conn.beginTransaction();
    await conn.query('DELETE FROM node_items');
    await conn.rollback();
  } finally {
    conn.release();
  }
  out('after', (await pool.query('SELECT name, price FROM node_items ORDER BY id'))[0]);

  try {
    await pool.execute('INSERT INTO node_items (name) VALUES (?)', ['apple']);
    out('duplicate', 'no error');
  } catch (e) {
    out('duplicate', e.code, e.errno, e.sqlState, e.sqlMessage);
  }
  try {
    await pool.query('SELECT * FROM no_such_table');
  } catch (e) {
    out('missing table', e.code, e.errno, e.sqlMessage);
  }
  await pool.end();
}

main().catch(fail);
