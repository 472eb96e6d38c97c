// Driver compatibility scenario for MariaDB Connector/J. This file is kept
// ASCII-only: the source launcher compiles it in the platform encoding.
//
// Connection parameters come from DB_HOST, DB_PORT, DB_USER, DB_PASS, DB_NAME;
// DB_TLS=1 asks for TLS without verifying the server certificate.
//
// useServerPrepStmts=true makes PreparedStatement a real server-side prepare
// (binary protocol). Run as a single-file source program:
//   java -cp /usr/share/java/mariadb-java-client.jar Scenario.java

import java.math.BigDecimal;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Timestamp;
import java.sql.Types;
import java.time.LocalDateTime;
import java.util.Arrays;
import java.util.Properties;

public class Scenario {
    static final String DRIVER = "connectorj";
    static final String TABLE = "t_connectorj";
    static final String MISSING = "t_connectorj_missing";
    static final String S = "h\u00e9llo \uD83D\uDC2C \u4e16\u754c"; // h-e-acute-llo dolphin shi-jie
    static final LocalDateTime DT = LocalDateTime.of(2024, 2, 29, 12, 34, 56, 123456000);
    static final String D = "12345678901234.567891";

    static final class Failure extends RuntimeException {
        Failure(String msg) {
            super(msg);
        }
    }

    static void check(boolean cond, String msg) {
        if (!cond) {
            throw new Failure(msg);
        }
    }

    static String env(String name, String def) {
        String v = System.getenv(name);
        return v == null || v.isEmpty() ? def : v;
    }

    static String blobDiff(byte[] got, byte[] want) {
        if (got == null) {
            return "blob is NULL";
        }
        if (got.length != want.length) {
            return "blob length " + got.length + ", want " + want.length;
        }
        int i = Arrays.mismatch(got, want);
        if (i >= 0) {
            return "blob differs at byte " + i + ": " + (got[i] & 0xff) + " != " + (want[i] & 0xff);
        }
        return null;
    }

    public static void main(String[] args) {
        try {
            run();
            System.out.println("OK " + DRIVER);
        } catch (Failure f) {
            System.out.println("FAIL " + DRIVER + ": " + f.getMessage());
            System.exit(1);
        } catch (SQLException e) {
            System.out.println("FAIL " + DRIVER + ": SQLException (errorCode " + e.getErrorCode()
                    + ", SQLState " + e.getSQLState() + "): " + e.getMessage());
            System.exit(1);
        } catch (Throwable e) {
            System.out.println("FAIL " + DRIVER + ": " + e);
            System.exit(1);
        }
    }

    static void run() throws Exception {
        try {
            Class.forName("org.mariadb.jdbc.Driver");
        } catch (ClassNotFoundException e) {
            throw new Failure("MariaDB Connector/J is not on the classpath (apt-get install -y libmariadb-java)");
        }
        byte[] blob = new byte[5 * 1024 * 1024];
        for (int i = 0; i < blob.length; i++) {
            blob[i] = (byte) (i % 251);
        }

        boolean tls = "1".equals(System.getenv("DB_TLS"));
        String url = "jdbc:mariadb://" + env("DB_HOST", "127.0.0.1") + ":" + env("DB_PORT", "3306")
                + "/" + env("DB_NAME", "test");
        Properties p = new Properties();
        p.setProperty("user", env("DB_USER", "root"));
        p.setProperty("password", env("DB_PASS", ""));
        p.setProperty("useServerPrepStmts", "true");
        p.setProperty("connectTimeout", "10000");
        if (tls) {
            // Connector/J 2.x names; 3.x maps them to sslMode=trust.
            p.setProperty("useSsl", "true");
            p.setProperty("trustServerCertificate", "true");
        }

        try (Connection c = DriverManager.getConnection(url, p)) {
            c.setAutoCommit(true);
            try (Statement st = c.createStatement()) {
                // 1. table
                st.execute("DROP TABLE IF EXISTS " + TABLE);
                st.execute("CREATE TABLE " + TABLE + " ("
                        + " id INT AUTO_INCREMENT PRIMARY KEY,"
                        + " n INT NULL,"
                        + " s VARCHAR(100) CHARACTER SET utf8mb4,"
                        + " b LONGBLOB,"
                        + " dt DATETIME(6),"
                        + " d DECIMAL(20,6)"
                        + ") ENGINE=InnoDB");
            }

            // 2. server-side prepared insert; 3. generated key
            long id;
            try (PreparedStatement ps = c.prepareStatement(
                    "INSERT INTO " + TABLE + " (n, s, b, dt, d) VALUES (?, ?, ?, ?, ?)",
                    Statement.RETURN_GENERATED_KEYS)) {
                ps.setNull(1, Types.INTEGER);
                ps.setString(2, S);
                ps.setBytes(3, blob);
                ps.setTimestamp(4, Timestamp.valueOf(DT));
                ps.setBigDecimal(5, new BigDecimal(D));
                int n = ps.executeUpdate();
                check(n == 1, "insert update count = " + n);
                try (ResultSet keys = ps.getGeneratedKeys()) {
                    check(keys.next(), "getGeneratedKeys() returned no row");
                    id = keys.getLong(1);
                }
            }
            check(id > 0, "generated key = " + id);

            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT id, n, s, b, dt, d FROM " + TABLE + " WHERE id = ?")) {
                ps.setLong(1, id);
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next(), "select by id returned no row");
                    check(rs.getLong("id") == id, "id = " + rs.getLong("id") + ", want " + id);
                    int n = rs.getInt("n");
                    check(n == 0 && rs.wasNull(), "n = " + n + ", want NULL");
                    String s = rs.getString("s");
                    check(S.equals(s), "s = " + s + ", want " + S);
                    String diff = blobDiff(rs.getBytes("b"), blob);
                    check(diff == null, diff);
                    Timestamp ts = rs.getTimestamp("dt");
                    check(ts != null && ts.toLocalDateTime().equals(DT),
                            "dt = " + ts + ", want " + Timestamp.valueOf(DT));
                    BigDecimal d = rs.getBigDecimal("d");
                    check(d != null && d.toPlainString().equals(D), "d = " + d + ", want " + D);
                    check(!rs.next(), "select by id returned more than one row");
                }
            }

            try (Statement st = c.createStatement();
                    ResultSet rs = st.executeQuery("SELECT LAST_INSERT_ID()")) {
                check(rs.next() && rs.getLong(1) == id, "LAST_INSERT_ID() differs from the generated key");
            }

            // 4. transaction rolled back
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement(
                    "INSERT INTO " + TABLE + " (n, s) VALUES (?, ?)")) {
                ps.setInt(1, 2);
                ps.setString(2, "rolled back");
                ps.executeUpdate();
            }
            c.rollback();
            c.setAutoCommit(true);
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT COUNT(*) FROM " + TABLE + " WHERE s = ?")) {
                ps.setString(1, "rolled back");
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next() && rs.getInt(1) == 0, "row inserted in a rolled back transaction is visible");
                }
            }

            // 5. error code on both protocols, then the same connection is still usable
            try (PreparedStatement ps = c.prepareStatement("SELECT * FROM " + MISSING + " WHERE 1 = ?")) {
                ps.setInt(1, 1);
                ps.executeQuery().close();
                throw new Failure("prepared query on a missing table succeeded");
            } catch (SQLException e) {
                check(e.getErrorCode() == 1146, "prepared: error code " + e.getErrorCode()
                        + ", want 1146 (" + e.getMessage() + ")");
                check("42S02".equals(e.getSQLState()), "prepared: SQLState " + e.getSQLState() + ", want 42S02");
            }
            try (Statement st = c.createStatement()) {
                st.executeQuery("SELECT * FROM " + MISSING).close();
                throw new Failure("query on a missing table succeeded");
            } catch (SQLException e) {
                check(e.getErrorCode() == 1146, "text: error code " + e.getErrorCode()
                        + ", want 1146 (" + e.getMessage() + ")");
            }
            try (PreparedStatement ps = c.prepareStatement("SELECT 1");
                    ResultSet rs = ps.executeQuery()) {
                check(rs.next() && rs.getInt(1) == 1, "SELECT 1 after the error");
            }

            // 6. cleanup
            try (Statement st = c.createStatement()) {
                st.execute("DROP TABLE " + TABLE);
            }
        }
    }
}
