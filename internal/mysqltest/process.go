package mysqltest

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
)

// process is one run of mariadbd.
type process struct {
	pid  int
	done chan struct{} // closed once the process has exited and been reaped
	err  error         // result of Wait; read only after done is closed
}

// exited reports whether the process has already exited.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// startProcess starts path with args, its stdout and stderr appended to
// stdioPath. The goroutine that starts the child stays locked to its OS thread
// until the child exits: Pdeathsig fires when the starting *thread* exits, and
// an unlocked thread can be retired by the Go runtime at any time.
func startProcess(path string, args []string, stdioPath string) (*process, error) {
	stdio, err := os.OpenFile(stdioPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", stdioPath, err)
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout = stdio // an *os.File is handed to the child as is: no copying goroutine
	cmd.Stderr = stdio
	cmd.SysProcAttr = sysProcAttr()

	p := &process{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		err := cmd.Start()
		stdio.Close() // the child holds its own descriptor
		if err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	return p, nil
}

// freePort asks the kernel for a port that is free on host right now. Another
// process can take it before mariadbd binds it; Start retries on that.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("find free port on %s: %w", host, err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find free port on %s: %w", host, err)
	}
	return port, nil
}

// readFrom returns the content of path from offset on, at most max bytes
// from its end.
func readFrom(path string, offset int64, max int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	if st.Size()-offset > max {
		offset = st.Size() - max
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return ""
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return ""
	}
	return string(b)
}

// fileSize returns the size of path, or 0 if it does not exist.
func fileSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

// isBindFailure reports whether a mariadbd error log says the TCP port was
// already taken. Matching log text is the only signal mariadbd gives.
func isBindFailure(log string) bool {
	return strings.Contains(log, "Address already in use") ||
		strings.Contains(log, "Can't start server: Bind on TCP/IP port")
}
