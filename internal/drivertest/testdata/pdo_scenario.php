<?php
// Driver compatibility scenario for PDO_mysql (mysqlnd).
//
// Connection parameters come from DB_HOST, DB_PORT, DB_USER, DB_PASS, DB_NAME;
// DB_TLS=1 asks for TLS without verifying the server certificate.
//
// ATTR_EMULATE_PREPARES=false makes PDO use real server-side prepared
// statements (COM_STMT_PREPARE / COM_STMT_EXECUTE, binary protocol).

declare(strict_types=1);

const DRIVER = 'pdo';
const TABLE = 't_pdo';
const MISSING = 't_pdo_missing';
const S = "h\u{e9}llo \u{1F42C} \u{4e16}\u{754c}"; // 'héllo 🐬 世界'
const DT = '2024-02-29 12:34:56.123456';
const D = '12345678901234.567891';

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
    if (!extension_loaded('pdo_mysql')) {
        fail('the pdo_mysql extension is not loaded (apt-get install -y php-cli php-mysql)');
    }
    $n = 5 * 1024 * 1024;
    $chunk = '';
    for ($i = 0; $i < 251; $i++) {
        $chunk .= chr($i);
    }
    $blob = substr(str_repeat($chunk, intdiv($n, 251) + 1), 0, $n);

    $tls = getenv('DB_TLS') === '1';
    $dsn = sprintf(
        'mysql:host=%s;port=%d;dbname=%s;charset=utf8mb4',
        env('DB_HOST', '127.0.0.1'),
        (int)env('DB_PORT', '3306'),
        env('DB_NAME', 'test')
    );
    $opts = [
        PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION,
        PDO::ATTR_EMULATE_PREPARES => false,
        PDO::ATTR_TIMEOUT => 10,
    ];
    if ($tls) {
        // pdo_mysql turns TLS on when any of the SSL attributes is set; a
        // cipher list is the one that implies no certificate files.
        $opts[PDO::MYSQL_ATTR_SSL_CIPHER] = 'DEFAULT';
        $opts[PDO::MYSQL_ATTR_SSL_VERIFY_SERVER_CERT] = false;
    }
    $pdo = new PDO($dsn, env('DB_USER', 'root'), env('DB_PASS', ''), $opts);

    // 1. table
    $pdo->exec('DROP TABLE IF EXISTS ' . TABLE);
    $pdo->exec('CREATE TABLE ' . TABLE . ' ('
        . ' id INT AUTO_INCREMENT PRIMARY KEY,'
        . ' n INT NULL,'
        . ' s VARCHAR(100) CHARACTER SET utf8mb4,'
        . ' b LONGBLOB,'
        . ' dt DATETIME(6),'
        . ' d DECIMAL(20,6)'
        . ') ENGINE=InnoDB');

    // 2. server-side prepared insert and select by id
    $ins = $pdo->prepare('INSERT INTO ' . TABLE . ' (n, s, b, dt, d) VALUES (?, ?, ?, ?, ?)');
    $ins->bindValue(1, null, PDO::PARAM_NULL);
    $ins->bindValue(2, S, PDO::PARAM_STR);
    $ins->bindValue(3, $blob, PDO::PARAM_LOB);
    $ins->bindValue(4, DT, PDO::PARAM_STR);
    $ins->bindValue(5, D, PDO::PARAM_STR);
    $ins->execute();
    check($ins->rowCount() === 1, 'insert rowCount = ' . $ins->rowCount());

    // 3. last insert id
    $id = (int)$pdo->lastInsertId();
    check($id > 0, 'lastInsertId() = ' . var_export($pdo->lastInsertId(), true));

    $sel = $pdo->prepare('SELECT id, n, s, b, dt, d FROM ' . TABLE . ' WHERE id = ?');
    $sel->bindValue(1, $id, PDO::PARAM_INT);
    $sel->execute();
    $rows = $sel->fetchAll(PDO::FETCH_ASSOC);
    check(count($rows) === 1, 'select by id returned ' . count($rows) . ' rows');
    $r = $rows[0];
    check((int)$r['id'] === $id, 'id = ' . var_export($r['id'], true) . ", want $id");
    check($r['n'] === null, 'n = ' . var_export($r['n'], true) . ', want NULL');
    check($r['s'] === S, 's = ' . var_export($r['s'], true) . ', want ' . var_export(S, true));
    $diff = blob_diff($r['b'], $blob);
    check($diff === null, (string)$diff);
    check($r['dt'] === DT, 'dt = ' . var_export($r['dt'], true) . ', want ' . DT);
    check($r['d'] === D, 'd = ' . var_export($r['d'], true) . ', want ' . D);

    $v = $pdo->query('SELECT LAST_INSERT_ID()')->fetchColumn();
    check((int)$v === $id, "LAST_INSERT_ID() = $v, lastInsertId() = $id");

    // 4. transaction rolled back
    $pdo->beginTransaction();
    $tx = $pdo->prepare('INSERT INTO ' . TABLE . ' (n, s) VALUES (?, ?)');
    $tx->execute([2, 'rolled back']);
    $pdo->rollBack();
    $cnt = $pdo->prepare('SELECT COUNT(*) FROM ' . TABLE . ' WHERE s = ?');
    $cnt->execute(['rolled back']);
    check((int)$cnt->fetchColumn() === 0, 'row inserted in a rolled back transaction is visible');

    // 5. error code, then the same connection is still usable
    try {
        $pdo->query('SELECT * FROM ' . MISSING);
        fail('query on a missing table succeeded');
    } catch (PDOException $e) {
        $code = $e->errorInfo[1] ?? null;
        check($code === 1146, 'error code ' . var_export($code, true) . ', want 1146 (' . $e->getMessage() . ')');
        check(($e->errorInfo[0] ?? '') === '42S02', 'SQLSTATE ' . var_export($e->errorInfo[0] ?? null, true) . ', want 42S02');
    }
    $one = $pdo->query('SELECT 1')->fetchColumn();
    check((int)$one === 1, 'SELECT 1 after the error = ' . var_export($one, true));

    // 6. cleanup
    $pdo->exec('DROP TABLE ' . TABLE);
    $pdo = null;
    fwrite(STDOUT, 'OK ' . DRIVER . "\n");
}

try {
    main();
} catch (Throwable $e) {
    fail(get_class($e) . ': ' . $e->getMessage());
}
