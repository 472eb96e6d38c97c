package session

import (
	"slices"
	"testing"
)

func TestClassifyPins(t *testing.T) {
	tests := []struct {
		name string
		sql  string
		pin  []Reason
	}{
		// User variables.
		{"set user variable", "SET @a = 1", []Reason{PinUserVariable}},
		{"set user variable with :=", "set @a := 1", []Reason{PinUserVariable}},
		{"set without space", "SET@a=1", []Reason{PinUserVariable}},
		{"set quoted user variable", "SET @`my var` = 1", []Reason{PinUserVariable}},
		{"set string-quoted user variable", "SET @'v' = 1", []Reason{PinUserVariable}},
		{"set several with a user variable", "SET sql_mode = '', @b = 2", []Reason{PinUserVariable}},
		{"select assignment", "SELECT @a := 1", []Reason{PinUserVariable}},
		{"select assignment in expression", "SELECT id, @rank := @rank + 1 FROM t", []Reason{PinUserVariable}},
		{"select into", "SELECT id INTO @a FROM t LIMIT 1", []Reason{PinUserVariable}},
		{"select into at the end", "SELECT COUNT(*) FROM t INTO @n", []Reason{PinUserVariable}},
		{"select into several", "SELECT a, b INTO @x, @y FROM t", []Reason{PinUserVariable}},
		{"update with assignment", "UPDATE t SET n = (@v := n + 1)", []Reason{PinUserVariable}},
		{"do assignment", "DO @a := 5", []Reason{PinUserVariable}},
		{"reading a user variable", "SELECT @a", nil},
		{"comparing a user variable", "SELECT * FROM t WHERE id = @a", nil},
		{"system variable", "SET @@session.sql_mode = 'ANSI'", nil},
		{"global system variable", "SET @@GLOBAL.max_connections = 100", nil},
		{"system variable without scope", "SET @@sql_mode = ''", nil},
		{"select system variable", "SELECT @@version, @@session.time_zone", nil},
		{"select into outfile", "SELECT * FROM t INTO OUTFILE '/tmp/x'", nil},
		{"user at host", "SET PASSWORD FOR 'app'@'%' = PASSWORD('x')", nil},
		{"default role for user at host", "SET DEFAULT ROLE r FOR 'app'@'localhost'", nil},
		{"create user", "CREATE USER 'u'@'%' IDENTIFIED BY 'p'", nil},

		// Temporary tables and locks.
		{"create temporary table", "CREATE TEMPORARY TABLE tmp (id INT)", []Reason{PinTemporaryTable}},
		{"create or replace temporary table", "create or replace temporary table if not exists t select 1", []Reason{PinTemporaryTable}},
		{"create temporary sequence", "CREATE TEMPORARY SEQUENCE s", []Reason{PinTemporaryTable}},
		{"create table", "CREATE TABLE t (id INT)", nil},
		{"create table named like temporary", "CREATE TABLE temporary_data (id INT)", nil},
		{"lock tables", "LOCK TABLES t READ", []Reason{PinTableLock}},
		{"lock table", "lock table t write", []Reason{PinTableLock}},
		{"unlock tables", "UNLOCK TABLES", nil},
		{"flush with read lock", "FLUSH TABLES WITH READ LOCK", []Reason{PinTableLock}},
		{"flush for export", "FLUSH TABLES t FOR EXPORT", []Reason{PinTableLock}},
		{"flush privileges", "FLUSH PRIVILEGES", nil},
		{"backup lock", "BACKUP LOCK t", []Reason{PinTableLock}},
		{"get_lock", "SELECT GET_LOCK('job', 10)", []Reason{PinNamedLock}},
		{"get_lock with a space", "SELECT GET_LOCK ('job', 10)", []Reason{PinNamedLock}},
		{"get_lock with a comment before the parenthesis", "SELECT GET_LOCK/**/('job', 10)", []Reason{PinNamedLock}},
		{"release_lock", "SELECT RELEASE_LOCK('job')", nil},

		// Other unmovable state.
		{"sql_calc_found_rows", "SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10", []Reason{PinFoundRows}},
		{"prepare", "PREPARE s FROM 'SELECT ?'", []Reason{PinTextPrepare}},
		{"handler", "HANDLER t OPEN", []Reason{PinHandler}},
		{"xa start", "XA START 'x'", []Reason{PinXA}},
		{"set transaction", "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", []Reason{PinNextTransaction}},
		{"set transaction read only", "set transaction read only", []Reason{PinNextTransaction}},
		{"set next transaction by variable", "SET @@transaction_isolation = 'READ-COMMITTED'", []Reason{PinNextTransaction}},
		{"set next transaction by old variable", "SET @@tx_read_only = 1", []Reason{PinNextTransaction}},
		{"set session transaction", "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED", nil},
		{"set session isolation variable", "SET transaction_isolation = 'READ-COMMITTED'", nil},
		{"set session isolation with scope", "SET @@session.transaction_isolation = 'READ-COMMITTED'", nil},
		{"set global transaction", "SET GLOBAL TRANSACTION ISOLATION LEVEL READ COMMITTED", nil},
		{"session tracking", "SET session_track_schema = OFF", []Reason{PinSessionTracking}},
		{"session tracking by system variable", "SET @@session.session_track_system_variables = ''", []Reason{PinSessionTracking}},
		{"last_insert_id with argument", "SELECT LAST_INSERT_ID(5)", []Reason{PinLastInsertIDSet}},
		{"last_insert_id with expression", "UPDATE seq SET id = LAST_INSERT_ID(id + 1)", []Reason{PinLastInsertIDSet}},
		{"last_insert_id with a space", "SELECT LAST_INSERT_ID (5)", []Reason{PinLastInsertIDSet}},
		{"last_insert_id read then set", "SELECT LAST_INSERT_ID(), LAST_INSERT_ID(7)", []Reason{PinLastInsertIDSet}},
		{"last_insert_id read", "SELECT LAST_INSERT_ID()", nil},
		{"last_insert_id read with spaces", "SELECT last_insert_id( )", nil},
		{"load data local", "LOAD DATA LOCAL INFILE 'x.csv' INTO TABLE t", []Reason{PinLocalInfile}},
		{"load data", "LOAD DATA INFILE '/srv/x.csv' INTO TABLE t", nil},

		// Literals and comments do not count.
		{"string literal", "SELECT 'SET @a = 1; LOCK TABLES t READ'", nil},
		{"double-quoted literal", `SELECT "GET_LOCK('x', 1)"`, nil},
		{"escaped quote in literal", `SELECT 'it\'s @a := 1, GET_LOCK(1)'`, nil},
		{"doubled quote in literal", "SELECT 'it''s @a := 1'", nil},
		{"identifier", "SELECT `@a := 1`, `get_lock(` FROM t", nil},
		{"block comment", "SELECT 1 /* SET @a = 1; SELECT GET_LOCK('x', 1) */", nil},
		{"comment hidden behind multiplication", "SELECT 4*/* GET_LOCK('x',1) */2", nil},
		{"line comment", "SELECT 1 -- , GET_LOCK('x', 1)\n", nil},
		{"hash comment", "SELECT 1 # INTO @a\n", nil},
		{"optimizer hint", "SELECT /*+ MAX_EXECUTION_TIME(1000) */ 1", nil},

		// Executable comments are inspected.
		{"executable comment", "/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE */", []Reason{PinUserVariable}},
		{"executable comment without version", "SELECT /*! SQL_CALC_FOUND_ROWS */ * FROM t", []Reason{PinFoundRows}},
		{"MariaDB executable comment", "/*M!100100 SELECT GET_LOCK('x', 1) */", []Reason{PinNamedLock}},
		{"statement after executable comment", "/*!40014 SET FOREIGN_KEY_CHECKS=0 */; SET @x = 1", []Reason{PinUserVariable}},

		// Several statements.
		{"multi-statement", "SELECT 1; SET @a = 1; LOCK TABLES t WRITE", []Reason{PinUserVariable, PinTableLock}},
		{"semicolon in a literal", "SELECT ';SET @a=1'", nil},
		{"same reason once", "SET @a = 1; SET @b = 2", []Reason{PinUserVariable}},
		{"empty statements", ";;  ; SELECT 1;", nil},
		{"empty", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Classify(tt.sql).Pin
			if !slices.Equal(got, tt.pin) {
				t.Errorf("Classify(%q).Pin = %v, want %v", tt.sql, got, tt.pin)
			}
		})
	}
}

func TestClassifyFlags(t *testing.T) {
	tests := []struct {
		sql  string
		want Class
	}{
		{"SET NAMES utf8mb4", Class{IsSet: true}},
		{"set autocommit = 0", Class{IsSet: true}},
		{"SET @a = 1", Class{IsSet: true, Pin: []Reason{PinUserVariable}}},
		{"SET STATEMENT max_statement_time=1 FOR SELECT 1", Class{IsSet: true}},
		{"USE shop", Class{ChangesSchema: true}},
		{"use `my db`", Class{ChangesSchema: true}},
		{"USE`shop`", Class{ChangesSchema: true}},
		{"SELECT 1; USE other", Class{ChangesSchema: true}},
		{"SELECT * FROM used", Class{}},
		{"SELECT FOUND_ROWS()", Class{UsesPrevious: true}},
		{"select found_rows ()", Class{UsesPrevious: true}},
		{"SELECT ROW_COUNT()", Class{UsesPrevious: true}},
		{"SELECT 'FOUND_ROWS()'", Class{}},
		{"SELECT SQL_CALC_FOUND_ROWS * FROM t", Class{Pin: []Reason{PinFoundRows}}},
		{"CALL p(@out)", Class{MayChangeState: true}},
		{"EXECUTE s USING @a", Class{MayChangeState: true}},
		{"SELECT 1", Class{}},
		{"INSERT INTO t VALUES (1)", Class{}},
		{"BEGIN", Class{}},
	}
	for _, tt := range tests {
		t.Run(tt.sql, func(t *testing.T) {
			got := Classify(tt.sql)
			if got.IsSet != tt.want.IsSet || got.ChangesSchema != tt.want.ChangesSchema || got.UsesPrevious != tt.want.UsesPrevious ||
				got.MayChangeState != tt.want.MayChangeState || !slices.Equal(got.Pin, tt.want.Pin) {
				t.Errorf("Classify(%q) = %+v, want %+v", tt.sql, got, tt.want)
			}
		})
	}
}

func TestSubstitutePrevious(t *testing.T) {
	tests := []struct {
		sql, want string
	}{
		{"SELECT FOUND_ROWS()", "SELECT 42"},
		{"select found_rows(), row_count()", "select 42, -1"},
		{"SELECT ROW_COUNT() AS n", "SELECT -1 AS n"},
		{"SELECT 'FOUND_ROWS()', `row_count()`", "SELECT 'FOUND_ROWS()', `row_count()`"},
		{"SELECT 1 /* FOUND_ROWS() */", "SELECT 1 /* FOUND_ROWS() */"},
		{"SELECT /*! FOUND_ROWS() */", "SELECT /*! 42 */"},
		{"SELECT my_found_rows()", "SELECT my_found_rows()"},
		{"SELECT FOUND_ROWS ()", "SELECT 42"},
		{"SELECT ROW_COUNT( )", "SELECT -1"},
		{"SELECT 'unterminated \\", "SELECT 'unterminated \\"},
		{"SELECT FOUND_ROWS(", "SELECT FOUND_ROWS("},
	}
	for _, tt := range tests {
		if got := SubstitutePrevious(tt.sql, 42, -1); got != tt.want {
			t.Errorf("SubstitutePrevious(%q) = %q, want %q", tt.sql, got, tt.want)
		}
	}
}

// FuzzClassify checks that classification never panics and that whatever
// sits inside a string literal or a comment changes nothing.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{"SET @a = 1", "SELECT GET_LOCK('x', 1)", "/*!40101 SET @x=@@y */", "SELECT 'a\\'b'", "LOCK TABLES t READ; USE db", "SELECT FOUND_ROWS()", "x'"} {
		f.Add(s, "SELECT 1")
	}
	f.Fuzz(func(t *testing.T, hidden, sql string) {
		_ = Classify(hidden)
		_ = SubstitutePrevious(hidden, 1, 2)
		base := Classify(sql)
		// A single-quoted literal with no quote or backslash inside.
		for _, c := range hidden {
			if c == '\'' || c == '\\' {
				return
			}
		}
		in := Classify(sql + " '" + hidden + "'")
		if !slices.Equal(in.Pin, base.Pin) && !(len(sql) > 0 && hasOpenQuoteOrComment(sql)) {
			t.Fatalf("literal %q changed the pins of %q: %v -> %v", hidden, sql, base.Pin, in.Pin)
		}
	})
}

// hasOpenQuoteOrComment reports input whose end is inside a literal or a
// comment, where appending text does not add a literal.
func hasOpenQuoteOrComment(s string) bool {
	n := normalize(s + "\x00")
	return len(n) < 2 || n[len(n)-2] != 0
}

func TestClassifyRerunnable(t *testing.T) {
	for _, tc := range []struct {
		sql  string
		want bool
	}{
		{"SELECT 1", true},
		{"select @@port", true},
		{"  /* hint */ SELECT a FROM t WHERE b = 'x; INTO y'", true},
		{"SHOW TABLES", true},
		{"DESCRIBE t", true},
		{"SELECT * FROM t FOR UPDATE", true},
		{"SELECT * FROM t INTO OUTFILE '/tmp/x'", false},
		{"SELECT a INTO @v FROM t", false},
		{"SELECT `x`INTO OUTFILE '/tmp/f' FROM t", false},
		{"SELECT intone FROM t", true},
		{"SELECT ROW_COUNT()", true},
		{"SELECT NEXTVAL(s)", false},
		{"SELECT NEXT VALUE FOR s", false},
		{"SELECT SETVAL(s, 10)", false},
		{"SELECT GET_LOCK('l', 1)", false},
		{"SELECT RELEASE_LOCK ('l')", false},
		{"SELECT 1; SELECT 2", false},
		{"SELECT 1; DELETE FROM t", false},
		{"INSERT INTO t VALUES (1)", false},
		{"UPDATE t SET a = 1", false},
		{"DELETE FROM t", false},
		{"CALL p()", false},
		{"SET @a = 1", false},
		{"BEGIN", false},
		{"EXPLAIN ANALYZE DELETE FROM t", false},
	} {
		if got := Classify(tc.sql).Rerunnable; got != tc.want {
			t.Errorf("Classify(%q).Rerunnable = %v, want %v", tc.sql, got, tc.want)
		}
	}
}
