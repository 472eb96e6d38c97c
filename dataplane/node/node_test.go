package node_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/go-sql-driver/mysql"

	"github.com/dbproxy/dbproxy/internal/mysqltest"
	"github.com/dbproxy/dbproxy/internal/nodetest"
)

func mustExec(t *testing.T, db interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, q string, args ...any) sql.Result {
	t.Helper()
	r, err := db.ExecContext(t.Context(), q, args...)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return r
}

func queryString(t *testing.T, db interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, q string, args ...any) string {
	t.Helper()
	var s sql.NullString
	if err := db.QueryRowContext(t.Context(), q, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if !s.Valid {
		return "NULL"
	}
	return s.String
}

func TestBasicQueries(t *testing.T) {
	env := nodetest.StartSimple(t)
	for _, params := range []string{"", "interpolateParams=true", "tls=skip-verify", "multiStatements=true&tls=skip-verify"} {
		t.Run("params="+params, func(t *testing.T) {
			db := env.Open(t, params)
			mustExec(t, db, "CREATE TABLE IF NOT EXISTS basic (id INT AUTO_INCREMENT PRIMARY KEY, v VARCHAR(64), b LONGBLOB, n INT NULL)")
			res := mustExec(t, db, "INSERT INTO basic (v, b) VALUES (?, ?)", "héllo 🐬", []byte{0, 1, 2})
			id, _ := res.LastInsertId()
			if got := queryString(t, db, "SELECT v FROM basic WHERE id = ?", id); got != "héllo 🐬" {
				t.Fatalf("v = %q", got)
			}
			if got := queryString(t, db, "SELECT n FROM basic WHERE id = ?", id); got != "NULL" {
				t.Fatalf("n = %q", got)
			}
			var e *mysql.MySQLError
			if _, err := db.Exec("SELECT * FROM no_such_table"); !errors.As(err, &e) || e.Number != 1146 {
				t.Fatalf("want error 1146, got %v", err)
			}
			if got := queryString(t, db, "SELECT 1"); got != "1" {
				t.Fatalf("SELECT 1 = %q", got)
			}
		})
	}
}

func TestLargePackets(t *testing.T) {
	env := nodetest.StartSimple(t)
	direct := env.OpenDirect(t, 0, "")
	mustExec(t, direct, "SET GLOBAL max_allowed_packet = 64*1024*1024")
	for _, params := range []string{"", "interpolateParams=true", "tls=skip-verify"} {
		t.Run("params="+params, func(t *testing.T) {
			db := env.Open(t, params+"&maxAllowedPacket=0")
			db.SetMaxOpenConns(1)
			mustExec(t, db, "CREATE TABLE IF NOT EXISTS big (id INT PRIMARY KEY, b LONGBLOB)")
			mustExec(t, db, "DELETE FROM big")
			blob := make([]byte, 20<<20)
			for i := range blob {
				blob[i] = byte(i % 251)
			}
			mustExec(t, db, "INSERT INTO big VALUES (1, ?)", blob)
			var got []byte
			if err := db.QueryRow("SELECT b FROM big WHERE id = 1").Scan(&got); err != nil {
				t.Fatal(err)
			}
			if len(got) != len(blob) || string(got) != string(blob) {
				t.Fatalf("blob mismatch: len %d want %d", len(got), len(blob))
			}
			if got := queryString(t, db, "SELECT LENGTH(b) FROM big WHERE id = 1"); got != fmt.Sprint(len(blob)) {
				t.Fatalf("length %s", got)
			}
		})
	}
}

func TestMultiStatements(t *testing.T) {
	env := nodetest.StartSimple(t)
	db := env.Open(t, "multiStatements=true")
	conn, err := db.Conn(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mustExec(t, conn, "CREATE TABLE ms (a INT); INSERT INTO ms VALUES (1),(2); INSERT INTO ms VALUES (3)")
	rows, err := conn.QueryContext(t.Context(), "SELECT COUNT(*) FROM ms; SELECT SUM(a) FROM ms")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		for rows.Next() {
			var s string
			if err := rows.Scan(&s); err != nil {
				rows.Close()
				t.Fatal(err)
			}
			got = append(got, s)
		}
		if !rows.NextResultSet() {
			break
		}
	}
	rows.Close()
	if strings.Join(got, ",") != "3,6" {
		t.Fatalf("results %v", got)
	}
	// Without multiStatements the server refuses a second statement.
	db2 := env.Open(t, "")
	if _, err := db2.Exec("SELECT 1; SELECT 2"); err == nil {
		t.Fatal("multi-statement accepted for a client that did not enable it")
	}
}

// TestTransactionsMultiplex runs many clients through a pool of two
// database connections.
func TestTransactionsMultiplex(t *testing.T) {
	s := mysqltest.StartT(t, mysqltest.Options{})
	nodetest.PrepareServer(t, s)
	cfg := nodetest.Config(s)
	cfg.Proxies[0].Pool.MaxConnectionsPercent = 2 // 151 * 2% = 3 connections
	env := nodetest.Start(t, cfg, s)
	db := env.Open(t, "")
	db.SetMaxOpenConns(40)
	mustExec(t, db, "CREATE TABLE IF NOT EXISTS tx (id INT AUTO_INCREMENT PRIMARY KEY, c INT)")
	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for w := 0; w < 20; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				tx, err := db.Begin()
				if err != nil {
					errs <- err
					return
				}
				if _, err := tx.Exec("INSERT INTO tx (c) VALUES (?)", w); err != nil {
					errs <- err
					return
				}
				if i%2 == 0 {
					err = tx.Commit()
				} else {
					err = tx.Rollback()
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := queryString(t, db, "SELECT COUNT(*) FROM tx"); got != "200" {
		t.Fatalf("rows = %s, want 200", got)
	}
	// 3 pooled + 1 health monitor + 1 for this query.
	if got := queryString(t, env.OpenDirect(t, 0, ""), "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'app'"); got > "5" {
		t.Fatalf("database connections = %s, want <= 5", got)
	}
}
