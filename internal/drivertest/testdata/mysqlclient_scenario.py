#!/usr/bin/python3
"""Driver compatibility scenario for mysqlclient (MySQLdb).

Connection parameters come from DB_HOST, DB_PORT, DB_USER, DB_PASS, DB_NAME;
DB_TLS=1 asks for TLS without verifying the server certificate.

mysqlclient has no server-side prepared statements: its parameter API
interpolates values into the query text on the client (text protocol). It
talks through the system's libmariadb (MariaDB Connector/C).
"""
import datetime
import decimal
import os
import sys

DRIVER = "mysqlclient"
TABLE = "t_mysqlclient"
MISSING = "t_mysqlclient_missing"

S = "h\u00e9llo \U0001F42C \u4e16\u754c"  # 'héllo 🐬 世界'
DT = datetime.datetime(2024, 2, 29, 12, 34, 56, 123456)
D = "12345678901234.567891"
BLOB = bytes(i % 251 for i in range(5 * 1024 * 1024))


def fail(msg):
    print("FAIL %s: %s" % (DRIVER, msg), flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def blob_diff(got, want):
    if not isinstance(got, (bytes, bytearray)):
        return "blob has type %s, want bytes" % type(got).__name__
    if len(got) != len(want):
        return "blob length %d, want %d" % (len(got), len(want))
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return "blob differs at byte %d: %d != %d" % (i, a, b)
    return None


def ssl_cipher(conn):
    """Returns mysql_get_ssl_cipher() of the connection's MYSQL handle."""
    import ctypes
    import MySQLdb._mysql

    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    handle = get_pointer(conn._get_native_connection(), b"_mysql.connection.native_connection")
    # dlsym on the extension module also searches the client library it links.
    fn = ctypes.CDLL(MySQLdb._mysql.__file__).mysql_get_ssl_cipher
    fn.restype = ctypes.c_char_p
    fn.argtypes = [ctypes.c_void_p]
    return fn(handle)


def main():
    try:
        import MySQLdb
    except ImportError as e:
        fail("cannot import MySQLdb (apt-get install -y python3-mysqldb): %s" % e)

    tls = os.environ.get("DB_TLS") == "1"
    kwargs = dict(
        host=os.environ.get("DB_HOST", "127.0.0.1"),
        port=int(os.environ.get("DB_PORT", "3306")),
        user=os.environ.get("DB_USER", "root"),
        passwd=os.environ.get("DB_PASS", ""),
        db=os.environ.get("DB_NAME", "test"),
        charset="utf8mb4",
        autocommit=True,
        connect_timeout=10,
        # Send bytes as _binary'...' so that the blob is not read as utf8mb4.
        binary_prefix=True,
    )
    if tls:
        # Any ssl dict makes MySQLdb call mysql_ssl_set(), which turns TLS on;
        # Connector/C 3.3 does not verify the server certificate unless asked.
        kwargs["ssl"] = {"cipher": None}

    conn = MySQLdb.connect(**kwargs)
    if tls:
        # Connector/C silently stays in plain text when the server does not
        # offer TLS, and MySQLdb 1.4 has no get_ssl_cipher(): ask the C
        # library itself.
        check(ssl_cipher(conn), "DB_TLS=1 but the connection is not TLS")
    cur = conn.cursor()

    # 1. table
    cur.execute("DROP TABLE IF EXISTS " + TABLE)
    cur.execute(
        "CREATE TABLE " + TABLE + " ("
        " id INT AUTO_INCREMENT PRIMARY KEY,"
        " n INT NULL,"
        " s VARCHAR(100) CHARACTER SET utf8mb4,"
        " b LONGBLOB,"
        " dt DATETIME(6),"
        " d DECIMAL(20,6)"
        ") ENGINE=InnoDB"
    )

    # 2. parameterised insert (client-side interpolation) and select by id
    cur.execute(
        "INSERT INTO " + TABLE + " (n, s, b, dt, d) VALUES (%s, %s, %s, %s, %s)",
        (None, S, BLOB, DT, decimal.Decimal(D)),
    )
    # 3. last insert id, from both the cursor and the connection
    row_id = cur.lastrowid
    check(row_id is not None and row_id > 0, "cursor.lastrowid = %r" % (row_id,))
    check(conn.insert_id() == row_id, "conn.insert_id() = %r, cursor.lastrowid = %r" % (conn.insert_id(), row_id))

    cur.execute("SELECT id, n, s, b, dt, d FROM " + TABLE + " WHERE id = %s", (row_id,))
    rows = cur.fetchall()
    check(len(rows) == 1, "select by id returned %d rows" % len(rows))
    rid, n, s, b, dt, d = rows[0]
    check(rid == row_id, "id = %r, want %r" % (rid, row_id))
    check(n is None, "n = %r, want NULL" % (n,))
    check(s == S, "s = %r, want %r" % (s, S))
    diff = blob_diff(b, BLOB)
    check(diff is None, diff)
    check(dt == DT, "dt = %r, want %r" % (dt, DT))
    check(isinstance(d, decimal.Decimal) and str(d) == D, "d = %r, want %s" % (d, D))

    cur.execute("SELECT LAST_INSERT_ID()")
    check(cur.fetchone()[0] == row_id, "LAST_INSERT_ID() differs from the driver's insert id")

    # 4. transaction rolled back
    cur.execute("BEGIN")
    cur.execute("INSERT INTO " + TABLE + " (n, s) VALUES (%s, %s)", (2, "rolled back"))
    conn.rollback()
    cur.execute("SELECT COUNT(*) FROM " + TABLE + " WHERE s = %s", ("rolled back",))
    check(cur.fetchone()[0] == 0, "row inserted in a rolled back transaction is visible")

    # 5. error code, then the same connection is still usable
    try:
        cur.execute("SELECT * FROM " + MISSING)
        fail("query on a missing table succeeded")
    except MySQLdb.MySQLError as e:
        code = e.args[0] if e.args else None
        check(code == 1146, "error code %r, want 1146 (%s)" % (code, e))
    cur.execute("SELECT 1")
    check(cur.fetchone()[0] == 1, "SELECT 1 after the error")

    # 6. cleanup
    cur.execute("DROP TABLE " + TABLE)
    cur.close()
    conn.close()
    print("OK " + DRIVER, flush=True)


if __name__ == "__main__":
    try:
        main()
    except SystemExit:
        raise
    except BaseException as e:  # any driver exception is a failure with a message
        fail("%s: %s" % (type(e).__name__, e))
