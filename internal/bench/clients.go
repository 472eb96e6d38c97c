package main

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-sql-driver/mysql"
)

// ipBindAddressNoPort is Linux's IP_BIND_ADDRESS_NO_PORT: bind the source
// address now, pick the port at connect time (so TIME_WAIT ports can be
// reused per destination).
const ipBindAddressNoPort = 24

var (
	dialOnce sync.Once
	srcNext  atomic.Uint64
)

// connector returns a go-sql-driver/mysql connector for the bench account at
// addr. With -src-addrs > 1, connections rotate over loopback source
// addresses 127.0.0.1..N.
func (b *bench) connector(addr string) (driver.Connector, error) {
	cfg := mysql.NewConfig()
	cfg.User, cfg.Passwd, cfg.DBName = benchUser, benchPassword, benchDB
	cfg.Net, cfg.Addr = "tcp", addr
	cfg.Timeout = 30 * time.Second
	cfg.ReadTimeout = 90 * time.Second
	cfg.WriteTimeout = 90 * time.Second
	cfg.Logger = nopLogger{}
	if b.o.srcAddrs > 1 {
		n := b.o.srcAddrs
		dialOnce.Do(func() {
			mysql.RegisterDialContext("benchtcp", func(ctx context.Context, addr string) (net.Conn, error) {
				i := srcNext.Add(1) % uint64(n)
				d := net.Dialer{
					LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i))},
					Control: func(_, _ string, c syscall.RawConn) error {
						return c.Control(func(fd uintptr) {
							_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
						})
					},
				}
				return d.DialContext(ctx, "tcp", addr)
			})
		})
		cfg.Net = "benchtcp"
	}
	return mysql.NewConnector(cfg)
}

type nopLogger struct{}

func (nopLogger) Print(...any) {}

// query runs q on c and reads the whole result.
func query(ctx context.Context, c driver.Conn, q string) error {
	qc, ok := c.(driver.QueryerContext)
	if !ok {
		return errors.New("driver connection cannot query")
	}
	rows, err := qc.QueryContext(ctx, q, nil)
	if err != nil {
		return err
	}
	dest := make([]driver.Value, len(rows.Columns()))
	n := 0
	for {
		err := rows.Next(dest)
		if err == io.EOF {
			break
		}
		if err != nil {
			rows.Close()
			return err
		}
		n++
	}
	if err := rows.Close(); err != nil {
		return err
	}
	if n != 1 {
		return fmt.Errorf("%s returned %d rows", q, n)
	}
	return nil
}

// oneShot connects, runs SELECT 1 and closes.
func oneShot(ctx context.Context, c driver.Connector) error {
	conn, err := c.Connect(ctx)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	qerr := query(ctx, conn, "SELECT 1")
	cerr := conn.Close()
	if qerr != nil {
		return fmt.Errorf("SELECT 1: %w", qerr)
	}
	return cerr
}

// errSample keeps the first few distinct errors.
type errSample struct {
	mu    sync.Mutex
	count int64
	first []string
}

func (e *errSample) add(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.count++
	msg := err.Error()
	for _, f := range e.first {
		if f == msg {
			return
		}
	}
	if len(e.first) < 5 {
		e.first = append(e.first, msg)
	}
}

// stormResult is one connect→query→close storm run.
type stormResult struct {
	Target        string   `json:"target"`
	Round         int      `json:"round"`
	Workers       int      `json:"workers"`
	Seconds       float64  `json:"seconds"`
	Connections   int64    `json:"connections"`
	PerSecond     float64  `json:"connections_per_second"`
	Errors        int64    `json:"errors"`
	FirstErrors   []string `json:"first_errors,omitempty"`
	PeakPoolConns int      `json:"peak_pool_connections,omitempty"` // node /metrics idle+borrowed
	PeakServer    int      `json:"peak_server_sessions"`            // server process list, bench user
	PeakWaiting   int      `json:"peak_waiting_clients,omitempty"`
	OpenedDelta   float64  `json:"backend_connections_opened,omitempty"`
}

// storm runs workers that each loop: open a new connection, SELECT 1,
// close, until dur has passed.
func storm(ctx context.Context, c driver.Connector, workers int, dur time.Duration) (ok int64, errs *errSample, elapsed time.Duration) {
	errs = &errSample{}
	var n atomic.Int64
	sctx, cancel := context.WithTimeout(ctx, dur)
	defer cancel()
	begin := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sctx.Err() == nil {
				// The connection itself gets the outer context so that the
				// end of the run does not cut an iteration in half.
				if err := oneShot(ctx, c); err != nil {
					if ctx.Err() != nil {
						return
					}
					errs.add(err)
					continue
				}
				n.Add(1)
			}
		}()
	}
	wg.Wait()
	return n.Load(), errs, time.Since(begin)
}

// parallel calls fn for every index below n from workers goroutines and
// returns how long that took; it stops handing out indexes when ctx ends.
func parallel(ctx context.Context, n, workers int, fn func(i int)) time.Duration {
	var next atomic.Int64
	begin := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				fn(i)
			}
		}()
	}
	wg.Wait()
	return time.Since(begin)
}

// openMany opens n connections with workers in parallel (nil where opening
// failed).
func openMany(ctx context.Context, c driver.Connector, n, workers int) ([]driver.Conn, *errSample, time.Duration) {
	conns := make([]driver.Conn, n)
	errs := &errSample{}
	took := parallel(ctx, n, workers, func(i int) {
		conn, err := c.Connect(ctx)
		if err != nil {
			errs.add(err)
			return
		}
		conns[i] = conn
	})
	return conns, errs, took
}

// queryEach runs SELECT 1 once on every non-nil connection with workers.
func queryEach(ctx context.Context, conns []driver.Conn, workers int) (int64, *errSample, time.Duration) {
	errs := &errSample{}
	var ok atomic.Int64
	took := parallel(ctx, len(conns), workers, func(i int) {
		if conns[i] == nil {
			return
		}
		if err := query(ctx, conns[i], "SELECT 1"); err != nil {
			errs.add(err)
			return
		}
		ok.Add(1)
	})
	return ok.Load(), errs, took
}

// closeAll closes connections in parallel.
func closeAll(conns []driver.Conn, workers int) {
	parallel(context.Background(), len(conns), workers, func(i int) {
		if conns[i] != nil {
			_ = conns[i].Close()
			conns[i] = nil
		}
	})
}
