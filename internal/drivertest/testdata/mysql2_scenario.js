'use strict';
// Driver compatibility scenario for mysql2 (Node).
//
// Connection parameters come from DB_HOST, DB_PORT, DB_USER, DB_PASS, DB_NAME;
// DB_TLS=1 asks for TLS without verifying the server certificate.
//
// connection.execute() is a real server-side prepare (binary protocol);
// connection.query() is client-side interpolation (text protocol).
// Run with NODE_PATH pointing at the node_modules that holds mysql2.

const DRIVER = 'mysql2';
const TABLE = 't_mysql2';
const MISSING = 't_mysql2_missing';
const S = 'h\u00e9llo \u{1F42C} \u4e16\u754c'; // 'héllo 🐬 世界'
const DT = '2024-02-29 12:34:56.123456';
const D = '12345678901234.567891';

function fail(msg) {
  process.stdout.write(`FAIL ${DRIVER}: ${msg}\n`);
  process.exit(1);
}

function check(cond, msg) {
  if (!cond) fail(typeof msg === 'function' ? msg() : msg);
}

function blobDiff(got, want) {
  if (!Buffer.isBuffer(got)) return `blob has type ${typeof got}, want Buffer`;
  if (got.length !== want.length) return `blob length ${got.length}, want ${want.length}`;
  if (!got.equals(want)) {
    for (let i = 0; i < want.length; i++) {
      if (got[i] !== want[i]) return `blob differs at byte ${i}: ${got[i]} != ${want[i]}`;
    }
  }
  return null;
}

async function main() {
  let mysql;
  try {
    mysql = require('mysql2/promise');
  } catch (e) {
    fail(`cannot load mysql2 (npm install in internal/drivertest/testdata): ${e.message}`);
  }
  const blob = Buffer.alloc(5 * 1024 * 1024);
  for (let i = 0; i < blob.length; i++) blob[i] = i % 251;

  const tls = process.env.DB_TLS === '1';
  const conn = await mysql.createConnection({
    host: process.env.DB_HOST || '127.0.0.1',
    port: Number(process.env.DB_PORT || '3306'),
    user: process.env.DB_USER || 'root',
    password: process.env.DB_PASS || '',
    database: process.env.DB_NAME || 'test',
    charset: 'UTF8MB4_UNICODE_CI',
    connectTimeout: 10000,
    // Keep DATETIME as text (a JS Date drops microseconds) and DECIMAL as text.
    dateStrings: true,
    decimalNumbers: false,
    supportBigNumbers: true,
    bigNumberStrings: true,
    ssl: tls ? { rejectUnauthorized: false } : undefined,
  });
  if (tls) {
    check(conn.connection.stream && conn.connection.stream.encrypted === true,
      'DB_TLS=1 but the connection is not TLS');
  }

  // 1. table
  await conn.query(`DROP TABLE IF EXISTS ${TABLE}`);
  await conn.query(`CREATE TABLE ${TABLE} (
    id INT AUTO_INCREMENT PRIMARY KEY,
    n INT NULL,
    s VARCHAR(100) CHARACTER SET utf8mb4,
    b LONGBLOB,
    dt DATETIME(6),
    d DECIMAL(20,6)
  ) ENGINE=InnoDB`);

  // 2. server-side prepared insert and select by id
  const [ins] = await conn.execute(
    `INSERT INTO ${TABLE} (n, s, b, dt, d) VALUES (?, ?, ?, ?, ?)`,
    [null, S, blob, DT, D],
  );
  check(ins.affectedRows === 1, `insert affectedRows = ${ins.affectedRows}`);

  // 3. last insert id
  const id = ins.insertId;
  check(Number.isInteger(id) && id > 0, `insertId = ${id}`);

  const [rows] = await conn.execute(`SELECT id, n, s, b, dt, d FROM ${TABLE} WHERE id = ?`, [id]);
  check(rows.length === 1, `select by id returned ${rows.length} rows`);
  const r = rows[0];
  check(r.id === id, `id = ${r.id}, want ${id}`);
  check(r.n === null, `n = ${JSON.stringify(r.n)}, want NULL`);
  check(r.s === S, () => `s = ${JSON.stringify(r.s)}, want ${JSON.stringify(S)}`);
  const diff = blobDiff(r.b, blob);
  check(diff === null, diff);
  check(r.dt === DT, `dt = ${JSON.stringify(r.dt)}, want ${DT}`);
  check(r.d === D, `d = ${JSON.stringify(r.d)}, want ${D}`);

  const [[lid]] = await conn.query('SELECT LAST_INSERT_ID() AS v');
  check(Number(lid.v) === id, `LAST_INSERT_ID() = ${lid.v}, insertId = ${id}`);

  // 4. transaction rolled back
  await conn.beginTransaction();
  await conn.execute(`INSERT INTO ${TABLE} (n, s) VALUES (?, ?)`, [2, 'rolled back']);
  await conn.rollback();
  const [[cnt]] = await conn.execute(`SELECT COUNT(*) AS c FROM ${TABLE} WHERE s = ?`, ['rolled back']);
  check(Number(cnt.c) === 0, 'row inserted in a rolled back transaction is visible');

  // 5. error code on both protocols, then the same connection is still usable
  for (const how of ['execute', 'query']) {
    try {
      await conn[how](`SELECT * FROM ${MISSING}`);
      fail(`${how} on a missing table succeeded`);
    } catch (e) {
      check(e.errno === 1146, `${how}: errno ${e.errno}, want 1146 (${e.message})`);
      check(e.code === 'ER_NO_SUCH_TABLE', `${how}: code ${e.code}, want ER_NO_SUCH_TABLE`);
      check(e.sqlState === '42S02', `${how}: sqlState ${e.sqlState}, want 42S02`);
    }
  }
  const [[one]] = await conn.execute('SELECT 1 AS v');
  check(Number(one.v) === 1, `SELECT 1 after the error = ${one.v}`);

  // 6. cleanup
  await conn.query(`DROP TABLE ${TABLE}`);
  await conn.end();
  process.stdout.write(`OK ${DRIVER}\n`);
}

main().catch((e) => fail(`${e.name} (errno ${e.errno}): ${e.message}`));
