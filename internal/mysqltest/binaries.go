package mysqltest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// ErrNotInstalled is returned (wrapped) by Start when the MariaDB server
// binaries cannot be found. Tests must fail on it rather than skip: a test run
// that silently skips every database test proves nothing.
var ErrNotInstalled = errors.New(`MariaDB server is not installed; install it with "apt-get install -y mariadb-server mariadb-client"`)

// binaries are the absolute paths of the programs the harness runs.
type binaries struct {
	mariadbd  string
	installDB string
}

// Debian and Ubuntu put mariadbd in /usr/sbin, which is often missing from
// PATH in containers and CI images, so the usual install locations are
// searched as well.
var (
	mariadbdCandidates  = []string{"mariadbd", "/usr/sbin/mariadbd", "/usr/local/sbin/mariadbd", "/usr/local/mysql/bin/mariadbd", "/usr/libexec/mariadbd"}
	installDBCandidates = []string{"mariadb-install-db", "/usr/bin/mariadb-install-db", "/usr/local/bin/mariadb-install-db", "/usr/local/mysql/scripts/mariadb-install-db"}
)

// findBinaries locates mariadbd and mariadb-install-db.
func findBinaries() (binaries, error) {
	var b binaries
	var err error
	if b.mariadbd, err = lookPath(mariadbdCandidates); err != nil {
		return binaries{}, fmt.Errorf("find mariadbd (looked in PATH and %v): %w", mariadbdCandidates[1:], err)
	}
	if b.installDB, err = lookPath(installDBCandidates); err != nil {
		return binaries{}, fmt.Errorf("find mariadb-install-db (looked in PATH and %v): %w", installDBCandidates[1:], err)
	}
	return b, nil
}

func lookPath(candidates []string) (string, error) {
	for _, c := range candidates {
		p, err := exec.LookPath(c)
		if err != nil {
			continue
		}
		if abs, err := filepath.Abs(p); err == nil {
			p = abs
		}
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", ErrNotInstalled
}
