<?php
// Driver compatibility scenario for mysqli (mysqlnd).
//
// Connection parameters come from DB_HOST, DB_PORT, DB_USER, DB_PASS, DB_NAME;
// DB_TLS=1 asks for TLS without verifying the server certificate.
//
// mysqli::prepare is a real server-side prepare. The blob is bound with type
// 'b' and streamed with send_long_data (COM_STMT_SEND_LONG_DATA) in chunks.

declare(strict_types=1);

const DRIVER = 'mysqli';
const TABLE = 't_mysqli';
const MISSING = 't_mysqli_missing';
const S = "h\u{e9}llo \u{1F42C} \u{4e16}\u{754c}"; // 'héllo 🐬 世界'
const DT = '2024-02-29 12:34:56.123456';
const D = '12345678901234.567891';
const CHUNK = 1024 * 1024;

function fail(string $msg): void
{
    fwrite(STDOUT, 'FAIL ' . DRIVER . ': ' . $msg . "\n");
    exit(1);
}

function check(bool $cond, string $msg): void
{
    if (!$cond) {
        fail($msg);
    }
}

function blob_diff($got, string $want): ?string
{
    if (!is_string($got)) {
        return 'blob has type ' . gettype($got) . ', want string';
    }
    if (strlen($got) !== strlen($want)) {
        return sprintf('blob length %d, want %d', strlen($got), strlen($want));
    }
    if ($got !== $want) {
        $n = strlen($want);
        for ($i = 0; $i < $n; $i++) {
            if ($got[$i] !== $want[$i]) {
                return sprintf('blob differs at byte %d: %d != %d', $i, ord($got[$i]), ord($want[$i]));
            }
        }
    }
    return null;
}

function env(string $name, string $def): string
{
    $v = getenv($name);
    return ($v === false || $v === '') ? $def : $v;
}

function main(): void
{
    if (!extension_loaded('mysqli')) {
        fail('the mysqli extension is not loaded (apt-get install -y php-cli php-mysql)');
    }
    $n = 5 * 1024 * 1024;
    $chunk = '';
    for ($i = 0; $i < 251; $i++) {
        $chunk .= chr($i);
    }
    $blob = substr(str_repeat($chunk, intdiv($n, 251) + 1), 0, $n);

    // Errors become mysqli_sql_exception, whose code is the server's errno.
    mysqli_report(MYSQLI_REPORT_ERROR | MYSQLI_REPORT_STRICT);

    $tls = getenv('DB_TLS') === '1';
    $m = mysqli_init();
    $m->options(MYSQLI_OPT_CONNECT_TIMEOUT, 10);
    $flags = 0;
    if ($tls) {
        $m->ssl_set(null, null, null, null, null);
        $m->options(MYSQLI_OPT_SSL_VERIFY_SERVER_CERT, false);
        $flags = MYSQLI_CLIENT_SSL | MYSQLI_CLIENT_SSL_DONT_VERIFY_SERVER_CERT;
    }
    $m->real_connect(
        env('DB_HOST', '127.0.0.1'),
        env('DB_USER', 'root'),
        env('DB_PASS', ''),
        env('DB_NAME', 'test'),
        (int)env('DB_PORT', '3306'),
        null,
        $flags
    );
    $m->set_charset('utf8mb4');

    // 1. table
    $m->query('DROP TABLE IF EXISTS ' . TABLE);
    $m->query('CREATE TABLE ' . TABLE . ' ('
        . ' id INT AUTO_INCREMENT PRIMARY KEY,'
        . ' n INT NULL,'
        . ' s VARCHAR(100) CHARACTER SET utf8mb4,'
        . ' b LONGBLOB,'
        . ' dt DATETIME(6),'
        . ' d DECIMAL(20,6)'
        . ') ENGINE=InnoDB');

    // 2. server-side prepared insert with the blob sent as long data
    $ins = $m->prepare('INSERT INTO ' . TABLE . ' (n, s, b, dt, d) VALUES (?, ?, ?, ?, ?)');
    check($ins->param_count === 5, 'param_count = ' . $ins->param_count);
    $nv = null;
    $sv = S;
    $bv = null;
    $dtv = DT;
    $dv = D;
    $ins->bind_param('isbss', $nv, $sv, $bv, $dtv, $dv);
    for ($off = 0; $off < strlen($blob); $off += CHUNK) {
        $ins->send_long_data(2, substr($blob, $off, CHUNK));
    }
    $ins->execute();
    check($ins->affected_rows === 1, 'insert affected_rows = ' . $ins->affected_rows);

    // 3. last insert id, from the statement and the connection
    $id = $ins->insert_id;
    check(is_int($id) && $id > 0, 'stmt insert_id = ' . var_export($id, true));
    check($m->insert_id === $id, 'mysqli insert_id = ' . var_export($m->insert_id, true) . ", stmt insert_id = $id");
    $ins->close();

    $sel = $m->prepare('SELECT id, n, s, b, dt, d FROM ' . TABLE . ' WHERE id = ?');
    $sel->bind_param('i', $id);
    $sel->execute();
    $res = $sel->get_result();
    $rows = $res->fetch_all(MYSQLI_ASSOC);
    $sel->close();
    check(count($rows) === 1, 'select by id returned ' . count($rows) . ' rows');
    $r = $rows[0];
    check($r['id'] === $id, 'id = ' . var_export($r['id'], true) . ", want $id");
    check($r['n'] === null, 'n = ' . var_export($r['n'], true) . ', want NULL');
    check($r['s'] === S, 's = ' . var_export($r['s'], true) . ', want ' . var_export(S, true));
    $diff = blob_diff($r['b'], $blob);
    check($diff === null, (string)$diff);
    check($r['dt'] === DT, 'dt = ' . var_export($r['dt'], true) . ', want ' . DT);
    check($r['d'] === D, 'd = ' . var_export($r['d'], true) . ', want ' . D);

    // The same row read again with bind_result, the other fetch path.
    $sel = $m->prepare('SELECT n, s, dt, d FROM ' . TABLE . ' WHERE id = ?');
    $sel->bind_param('i', $id);
    $sel->execute();
    $sel->bind_result($rn, $rs, $rdt, $rd);
    check($sel->fetch() === true, 'bind_result fetch found no row');
    check($rn === null && $rs === S && $rdt === DT && $rd === D,
        'bind_result row = ' . var_export([$rn, $rs, $rdt, $rd], true));
    $sel->close();

    $v = $m->query('SELECT LAST_INSERT_ID()')->fetch_row()[0];
    check((int)$v === $id, "LAST_INSERT_ID() = $v, insert_id = $id");

    // 4. transaction rolled back
    $m->begin_transaction();
    $tx = $m->prepare('INSERT INTO ' . TABLE . ' (n, s) VALUES (?, ?)');
    $two = 2;
    $rb = 'rolled back';
    $tx->bind_param('is', $two, $rb);
    $tx->execute();
    $tx->close();
    $m->rollback();
    $cnt = $m->prepare('SELECT COUNT(*) FROM ' . TABLE . ' WHERE s = ?');
    $cnt->bind_param('s', $rb);
    $cnt->execute();
    $c = $cnt->get_result()->fetch_row()[0];
    $cnt->close();
    check($c === 0, 'row inserted in a rolled back transaction is visible (count ' . var_export($c, true) . ')');

    // 5. error code on both paths, then the same connection is still usable
    try {
        $m->prepare('SELECT * FROM ' . MISSING);
        fail('prepare on a missing table succeeded');
    } catch (mysqli_sql_exception $e) {
        check($e->getCode() === 1146, 'prepare error code ' . $e->getCode() . ', want 1146 (' . $e->getMessage() . ')');
        check($e->getSqlState() === '42S02', 'SQLSTATE ' . $e->getSqlState() . ', want 42S02');
    }
    try {
        $m->query('SELECT * FROM ' . MISSING);
        fail('query on a missing table succeeded');
    } catch (mysqli_sql_exception $e) {
        check($e->getCode() === 1146, 'query error code ' . $e->getCode() . ', want 1146 (' . $e->getMessage() . ')');
        check($m->errno === 1146, 'mysqli errno ' . $m->errno . ', want 1146');
    }
    $one = $m->query('SELECT 1')->fetch_row()[0];
    check((int)$one === 1, 'SELECT 1 after the error = ' . var_export($one, true));

    // 6. cleanup
    $m->query('DROP TABLE ' . TABLE);
    $m->close();
    fwrite(STDOUT, 'OK ' . DRIVER . "\n");
}

try {
    main();
} catch (Throwable $e) {
    fail(get_class($e) . ' (code ' . $e->getCode() . '): ' . $e->getMessage());
}
