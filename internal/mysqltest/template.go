package mysqltest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// templateFormat is part of the template cache key; bump it whenever
// installArgs or initSQL change so that stale templates are not reused.
const templateFormat = "3"

// innodbArgs must be the same at install time and at every server start:
// InnoDB would otherwise resize its redo log on the first start of every
// copy. The default 96M redo log would also make each copy ~110 MB instead of
// ~22 MB.
var innodbArgs = []string{
	"--innodb-log-file-size=4M",
	"--innodb-buffer-pool-size=16M",
}

// initSQL runs at the end of mariadb-install-db, in bootstrap mode (grant
// tables not loaded, hence the FLUSH PRIVILEGES first). install-db with
// --auth-root-authentication-method=normal creates password-less root
// accounts for localhost, 127.0.0.1, ::1 and the build host's name; with
// --skip-name-resolve a TCP client from 127.0.0.1 matches root@127.0.0.1
// before root@'%', so the host-specific accounts are dropped and every
// remaining root account gets RootPassword.
var initSQL = `FLUSH PRIVILEGES;
DELETE FROM mysql.global_priv WHERE Host <> 'localhost';
DELETE FROM mysql.proxies_priv WHERE Host <> 'localhost';
FLUSH PRIVILEGES;
ALTER USER 'root'@'localhost' IDENTIFIED BY '` + RootPassword + `';
CREATE USER 'root'@'%' IDENTIFIED BY '` + RootPassword + `';
GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;
`

// templates is the per-process cache of initialized data directories. It is
// package-level state because Start is a plain function that many tests call
// independently and the point of the cache is to share one install-db run
// between all of them; nothing else in this package is global. The cache is
// also persisted under os.TempDir() (keyed by binary identity and install
// arguments) so that the separate test binaries of `go test ./...` share it.
var templates templateCache

type templateCache struct {
	mu   sync.Mutex
	dirs map[string]string // cache key -> data directory to copy
}

// get returns a data directory initialized by mariadb-install-db, creating it
// on first use. Callers copy it; they must never modify it.
func (c *templateCache) get(ctx context.Context, bins binaries, log hclog.Logger) (string, error) {
	key, err := templateKey(bins)
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// Re-check the disk: a tmp cleaner may have removed the template.
	if dir, ok := c.dirs[key]; ok && templateComplete(filepath.Dir(dir)) {
		return dir, nil
	}
	root := filepath.Join(os.TempDir(), fmt.Sprintf("dbproxy-mysqltest-%d", os.Geteuid()))
	final := filepath.Join(root, "template-"+key)
	data := filepath.Join(final, "data")
	if !templateComplete(final) {
		if err := createTemplate(ctx, bins, root, final, log); err != nil {
			return "", err
		}
	}
	if c.dirs == nil {
		c.dirs = make(map[string]string)
	}
	c.dirs[key] = data
	return data, nil
}

// templateKey identifies the binaries and the install arguments, so that an
// upgraded MariaDB or a change in this package never reuses an old template.
func templateKey(bins binaries) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "format=%s uid=%d\n", templateFormat, os.Geteuid())
	for _, p := range []string{bins.mariadbd, bins.installDB} {
		st, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("stat %s: %w", p, err)
		}
		fmt.Fprintf(h, "%s %d %d\n", p, st.Size(), st.ModTime().UnixNano())
	}
	fmt.Fprintf(h, "%q\n%s", innodbArgs, initSQL)
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

const templateMarker = "complete"

func templateComplete(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, templateMarker))
	return err == nil
}

// createTemplate runs mariadb-install-db into a fresh directory next to final
// and renames it into place, so that concurrent processes never see a half
// written template: the loser of a rename race discards its copy.
func createTemplate(ctx context.Context, bins binaries, root, final string, log hclog.Logger) error {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return fmt.Errorf("create template cache dir: %w", err)
	}
	tmp, err := os.MkdirTemp(root, "building-")
	if err != nil {
		return fmt.Errorf("create template build dir: %w", err)
	}
	defer os.RemoveAll(tmp) // no-op after a successful rename

	initFile := filepath.Join(tmp, "init.sql")
	if err := os.WriteFile(initFile, []byte(initSQL), 0o600); err != nil {
		return fmt.Errorf("write template init.sql: %w", err)
	}
	args := []string{
		"--no-defaults",
		"--datadir=" + filepath.Join(tmp, "data"),
		"--auth-root-authentication-method=normal",
		"--skip-test-db",
		"--skip-name-resolve",
		"--extra-file=" + initFile,
	}
	if os.Geteuid() == 0 {
		args = append(args, "--user=root")
	}
	args = append(args, innodbArgs...)

	start := time.Now()
	out, err := runGroup(ctx, bins.installDB, args, tmp)
	if err != nil {
		return fmt.Errorf("run %s: %w\n%s", filepath.Base(bins.installDB), err, tailLines(out, 30))
	}
	if err := os.WriteFile(filepath.Join(tmp, templateMarker), nil, 0o600); err != nil {
		return fmt.Errorf("mark template complete: %w", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		if templateComplete(final) {
			return nil // another process won the race
		}
		return fmt.Errorf("install template: %w", err)
	}
	log.Info("created data directory template", "dir", final, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// runGroup runs a program in its own process group and returns its combined
// output. mariadb-install-db is a shell script that starts mariadbd, so on
// cancellation the whole group is killed rather than just the script.
func runGroup(ctx context.Context, path string, args []string, dir string) ([]byte, error) {
	// Pdeathsig follows the starting thread; see startProcess.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = dir
	cmd.SysProcAttr = sysProcAttr()
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	cmd.WaitDelay = 5 * time.Second
	var buf strings.Builder
	cmd.Stdout = &buf
	cmd.Stderr = &buf
	err := cmd.Run()
	return []byte(buf.String()), err
}

// copyTree copies the regular files and directories of src into dst, which
// must not exist yet. On Linux io.Copy between files uses copy_file_range, so
// this is a fast in-kernel copy (or a reflink on filesystems that have them).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			return os.Mkdir(target, info.Mode().Perm())
		case info.Mode().IsRegular():
			return copyFile(path, target, info.Mode().Perm())
		default:
			return nil // sockets, pid files and the like are not data
		}
	})
}

func copyFile(src, dst string, perm fs.FileMode) (err error) {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := out.Close(); err == nil {
			err = cerr
		}
	}()
	if _, err := io.Copy(out, in); err != nil {
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return nil
}

// tailLines returns at most the last n lines of b.
func tailLines(b []byte, n int) string {
	s := strings.TrimRight(string(b), "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
