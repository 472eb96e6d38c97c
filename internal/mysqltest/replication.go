package mysqltest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"time"
)

const (
	// replicationTimeout bounds replication waits when the caller's context
	// has no deadline.
	replicationTimeout = 30 * time.Second
	// pollInterval is the pause between checks of replication state.
	pollInterval = 20 * time.Millisecond
)

// StartReplicated starts a primary and replicas GTID replicas of it. The
// replicas run with read_only=ON. Servers get server ids opts.ServerID (1 if
// 0) upwards; with opts.Port set they get consecutive ports from it, and with
// opts.Dir set they live in its subdirectories primary, replica1, replica2...
// On error every server started is closed.
func StartReplicated(ctx context.Context, replicas int, opts Options) (primary *Server, reps []*Server, err error) {
	if replicas < 0 {
		return nil, nil, fmt.Errorf("mysqltest: start replicated: negative replica count %d", replicas)
	}
	baseID := opts.ServerID
	if baseID == 0 {
		baseID = 1
	}
	all := make([]*Server, replicas+1)
	errs := make([]error, replicas+1)
	var wg sync.WaitGroup
	for i := range all {
		name := "primary"
		if i > 0 {
			name = "replica" + strconv.Itoa(i)
		}
		o := opts
		o.ServerID = baseID + i
		if opts.Port != 0 {
			o.Port = opts.Port + i
		}
		if opts.Dir != "" {
			o.Dir = filepath.Join(opts.Dir, name)
		}
		if opts.Logger != nil {
			o.Logger = opts.Logger.Named(name)
		}
		wg.Go(func() {
			all[i], errs[i] = start(ctx, o, i > 0)
		})
	}
	wg.Wait()
	defer func() {
		if err != nil {
			for _, s := range all {
				if s != nil {
					s.Close()
				}
			}
		}
	}()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, err
	}
	primary, reps = all[0], all[1:]
	for _, r := range reps {
		if err := r.ReplicateFrom(ctx, primary); err != nil {
			return nil, nil, err
		}
	}
	return primary, reps, nil
}

// ReplicateFrom makes s a read-only GTID replica of primary (CHANGE MASTER
// TO ... MASTER_USE_GTID=slave_pos; START SLAVE), replacing any previous
// source, and waits until both replication threads run. slave_pos rather
// than current_pos lets a replica on which a test wrote locally still follow
// a new primary.
func (s *Server) ReplicateFrom(ctx context.Context, primary *Server) error {
	ctx, cancel := withDefaultTimeout(ctx, replicationTimeout)
	defer cancel()
	change := fmt.Sprintf("CHANGE MASTER TO MASTER_HOST=%s, MASTER_PORT=%d, MASTER_USER=%s, MASTER_PASSWORD=%s, MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1",
		quote(primary.Host), primary.Port, quote(RootUser), quote(RootPassword))
	err := s.execQuiet(ctx, "replicate from "+primary.Addr(),
		"STOP SLAVE",
		"SET GLOBAL read_only=ON",
		change,
		"START SLAVE")
	if err != nil {
		return err
	}
	s.setReadOnly(true)
	return s.withConn(ctx, func(conn *sql.Conn) error {
		return poll(ctx, func() (bool, error) {
			st, err := slaveStatus(ctx, conn)
			switch {
			case err != nil:
				return false, err
			case st == nil:
				return false, errors.New("SHOW SLAVE STATUS is empty after START SLAVE")
			case st["Slave_IO_Running"] == "Yes" && st["Slave_SQL_Running"] == "Yes":
				return true, nil
			case st["Slave_SQL_Running"] == "No" && st["Last_SQL_Errno"] != "0":
				return false, fmt.Errorf("replication SQL thread stopped: %s", st["Last_SQL_Error"])
			}
			return false, nil
		}, func(err error) error {
			return fmt.Errorf("mysqltest %s: replicate from %s: waiting for replication to run: %w%s", s.Addr(), primary.Addr(), err, statusSummary(ctx, conn))
		})
	})
}

// Promote turns a replica into a writer: it stops fetching from the old
// primary, lets the SQL thread apply what was already fetched, then STOP
// SLAVE, RESET SLAVE ALL and SET GLOBAL read_only=OFF. Promote on a server
// that is not a replica just clears read_only.
func (s *Server) Promote(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx, replicationTimeout)
	defer cancel()
	err := s.withConn(ctx, func(conn *sql.Conn) error {
		st, err := slaveStatus(ctx, conn)
		if err != nil {
			return fmt.Errorf("mysqltest %s: promote: %w", s.Addr(), err)
		}
		if st == nil {
			return nil
		}
		if _, err := conn.ExecContext(ctx, "STOP SLAVE IO_THREAD"); err != nil {
			return fmt.Errorf("mysqltest %s: promote: stop IO thread: %w", s.Addr(), err)
		}
		err = poll(ctx, func() (bool, error) {
			st, err := slaveStatus(ctx, conn)
			if err != nil || st == nil {
				return st == nil, err
			}
			applied := st["Relay_Master_Log_File"] == st["Master_Log_File"] &&
				st["Exec_Master_Log_Pos"] == st["Read_Master_Log_Pos"]
			return applied || st["Slave_SQL_Running"] != "Yes", nil
		}, func(err error) error {
			return fmt.Errorf("mysqltest %s: promote: waiting for the relay log to be applied: %w%s", s.Addr(), err, statusSummary(ctx, conn))
		})
		if err != nil {
			return err
		}
		for _, q := range []string{"STOP SLAVE", "RESET SLAVE ALL"} {
			if _, err := conn.ExecContext(ctx, q); err != nil {
				return fmt.Errorf("mysqltest %s: promote: %s: %w", s.Addr(), q, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := s.Exec(ctx, "SET GLOBAL read_only=OFF"); err != nil {
		return fmt.Errorf("mysqltest %s: promote: %w", s.Addr(), err)
	}
	s.setReadOnly(false)
	s.log.Info("promoted to writer", "addr", s.Addr())
	return nil
}

// WaitCaughtUp waits until replica s has applied everything in primary's
// binary log (MASTER_GTID_WAIT on primary's gtid_binlog_pos). It fails early
// when replication is not configured or its SQL thread stopped on an error.
func (s *Server) WaitCaughtUp(ctx context.Context, primary *Server) error {
	ctx, cancel := withDefaultTimeout(ctx, replicationTimeout)
	defer cancel()
	pos, err := primary.QueryValue(ctx, "SELECT @@GLOBAL.gtid_binlog_pos")
	if err != nil {
		return fmt.Errorf("mysqltest %s: wait caught up: %w", s.Addr(), err)
	}
	if pos == "" {
		return nil // nothing was ever written
	}
	return s.withConn(ctx, func(conn *sql.Conn) error {
		for {
			// A short server-side wait per round keeps failures detectable
			// and ctx cancellation prompt.
			var res sql.NullInt64
			if err := conn.QueryRowContext(ctx, "SELECT MASTER_GTID_WAIT(?, 0.5)", pos).Scan(&res); err != nil {
				return fmt.Errorf("mysqltest %s: wait for %s from %s: %w%s", s.Addr(), pos, primary.Addr(), err, statusSummary(context.Background(), conn))
			}
			if res.Valid && res.Int64 == 0 {
				return nil
			}
			st, err := slaveStatus(ctx, conn)
			switch {
			case err != nil:
				return fmt.Errorf("mysqltest %s: wait for %s from %s: %w", s.Addr(), pos, primary.Addr(), err)
			case st == nil:
				return fmt.Errorf("mysqltest %s: wait for %s from %s: not a replica", s.Addr(), pos, primary.Addr())
			case st["Slave_SQL_Running"] == "No" && st["Last_SQL_Errno"] != "0":
				return fmt.Errorf("mysqltest %s: wait for %s from %s: replication SQL thread stopped: %s", s.Addr(), pos, primary.Addr(), st["Last_SQL_Error"])
			}
			if ctx.Err() != nil {
				return fmt.Errorf("mysqltest %s: wait for %s from %s: %w%s", s.Addr(), pos, primary.Addr(), ctx.Err(), statusSummary(context.Background(), conn))
			}
		}
	})
}

func (s *Server) setReadOnly(ro bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mu.readOnly = ro
}

// slaveStatus returns SHOW SLAVE STATUS as column name -> value, or nil when
// the server is not configured as a replica.
func slaveStatus(ctx context.Context, conn *sql.Conn) (map[string]string, error) {
	rows, err := conn.QueryContext(ctx, "SHOW SLAVE STATUS")
	if err != nil {
		return nil, fmt.Errorf("show slave status: %w", err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, fmt.Errorf("show slave status: %w", err)
	}
	if !rows.Next() {
		return nil, rows.Err()
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, fmt.Errorf("show slave status: %w", err)
	}
	st := make(map[string]string, len(cols))
	for i, c := range cols {
		st[c] = vals[i].String
	}
	return st, rows.Err()
}

// statusSummary describes replication state for error messages.
func statusSummary(ctx context.Context, conn *sql.Conn) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, err := slaveStatus(ctx, conn)
	if err != nil || st == nil {
		return ""
	}
	return fmt.Sprintf(" (io=%s sql=%s gtid_io_pos=%s last_io_error=%q last_sql_error=%q)",
		st["Slave_IO_Running"], st["Slave_SQL_Running"], st["Gtid_IO_Pos"], st["Last_IO_Error"], st["Last_SQL_Error"])
}

// poll calls check until it reports done, fails, or ctx ends; onErr wraps
// the failure.
func poll(ctx context.Context, check func() (bool, error), onErr func(error) error) error {
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		done, err := check()
		if err != nil {
			return onErr(err)
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return onErr(ctx.Err())
		case <-tick.C:
		}
	}
}
