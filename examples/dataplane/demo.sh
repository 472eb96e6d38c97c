#!/usr/bin/env bash
# Runs the data plane end to end on this machine: a throwaway MariaDB server,
# a dbproxy node in front of it configured from demo.json, and a few queries
# through the node with the mariadb command-line client. Everything lives in
# a temporary directory on free 127.0.0.1 ports and is removed on exit.
#
#   bash examples/dataplane/demo.sh [path/to/dbproxy]
#
# Needs mariadbd, mariadb-install-db and mariadb (Debian: apt-get install
# mariadb-server mariadb-client). `make demo` runs the whole system instead
# (examples/dev/demo.sh: control plane, zone nodes, the admin API).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dbproxy="${1:-$here/../../bin/dbproxy}"

if [[ -t 1 ]]; then
	say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
	say() { printf '\n== %s\n' "$*"; }
fi
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# find NAME DIR... prints the first executable NAME in PATH or in DIRs;
# mariadbd lives in /usr/sbin, which is often not on PATH.
find_bin() {
	local name="$1" dir
	shift
	if command -v "$name" >/dev/null; then
		command -v "$name"
		return
	fi
	for dir in "$@"; do
		if [[ -x "$dir/$name" ]]; then
			printf '%s\n' "$dir/$name"
			return
		fi
	done
	return 1
}

hint="install it with: apt-get install -y mariadb-server mariadb-client"
mariadbd="$(find_bin mariadbd /usr/sbin /usr/local/sbin /usr/libexec)" || die "mariadbd not found; $hint"
install_db="$(find_bin mariadb-install-db /usr/bin /usr/local/bin)" || die "mariadb-install-db not found; $hint"
client="$(find_bin mariadb /usr/bin /usr/local/bin)" || die "mariadb (the client) not found; $hint"
[[ -x "$dbproxy" ]] || die "$dbproxy is not an executable; run 'make build' first (or 'make demo')"

# port_free reports whether nothing accepts connections on 127.0.0.1:PORT.
port_free() {
	! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# free_port prints a port in the ephemeral-free range 20000-29999 that
# nothing listens on and that this script has not handed out yet.
taken=" "
free_port() {
	local p i
	for ((i = 0; i < 200; i++)); do
		p=$((20000 + RANDOM % 10000))
		if [[ "$taken" != *" $p "* ]] && port_free "$p"; then
			taken+="$p "
			printf '%s\n' "$p"
			return
		fi
	done
	die "no free port found"
}

# wait_for PID SECONDS DESCRIPTION COMMAND... retries COMMAND until it
# succeeds; gives up when process PID exits or SECONDS pass.
wait_for() {
	local pid="$1" secs="$2" what="$3"
	shift 3
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "demo: $what exited" >&2
			return 1
		fi
		if ((SECONDS >= deadline)); then
			echo "demo: $what is not up after ${secs}s" >&2
			return 1
		fi
		sleep 0.2
	done
	echo "demo: $what is up"
}

# http_get PORT PATH prints the body of a GET on 127.0.0.1:PORT (no curl
# needed).
http_get() {
	local port="$1" path="$2" resp
	exec 4<>"/dev/tcp/127.0.0.1/$port" || return 1
	printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&4
	resp="$(cat <&4)"
	exec 4<&-
	[[ "$resp" == "HTTP/1."?" 200"* ]] || return 1
	printf '%s\n' "${resp#*$'\r\n\r\n'}"
}

tmp="$(mktemp -d "${TMPDIR:-/tmp}/dbproxy-demo-XXXXXX")"
db_pid=""
node_pid=""

# stop PID NAME sends SIGTERM and waits (up to 30 s) before SIGKILL.
stop() {
	local pid="$1" name="$2" i
	[[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for ((i = 0; i < 150; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.2
	done
	if kill -0 "$pid" 2>/dev/null; then
		echo "demo: $name did not stop; killing it" >&2
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if ((rc != 0)); then
		for log in node.log mariadbd.err; do
			if [[ -s "$tmp/$log" ]]; then
				echo "---- last lines of $log ----" >&2
				tail -n 20 "$tmp/$log" >&2
			fi
		done
	fi
	say "Stopping"
	stop "$node_pid" "dbproxy node"
	stop "$db_pid" "mariadbd"
	rm -rf "$tmp"
	echo "demo: removed $tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

run_as_root=()
if [[ "$(id -u)" == 0 ]]; then
	run_as_root=(--user=root) # mariadbd refuses to run as root otherwise
fi
innodb=(--innodb-log-file-size=4M --innodb-buffer-pool-size=16M)

say "Starting MariaDB ($("$mariadbd" --version | awk '{print $3}')) in $tmp"
db_port="$(free_port)"
sock="$tmp/mysqld.sock"
"$install_db" --no-defaults --datadir="$tmp/data" --auth-root-authentication-method=normal \
	--skip-test-db --skip-name-resolve "${run_as_root[@]}" "${innodb[@]}" >"$tmp/install-db.log" 2>&1 || {
	tail -n 30 "$tmp/install-db.log" >&2
	die "mariadb-install-db failed"
}
"$mariadbd" --no-defaults --datadir="$tmp/data" --socket="$sock" --pid-file="$tmp/mysqld.pid" \
	--log-error="$tmp/mariadbd.err" --bind-address=127.0.0.1 --port="$db_port" --skip-name-resolve \
	--skip-log-bin --performance-schema=OFF "${run_as_root[@]}" "${innodb[@]}" >/dev/null 2>&1 &
db_pid=$!
wait_for "$db_pid" 60 "MariaDB on 127.0.0.1:$db_port" "$client" --no-defaults --socket="$sock" -uroot -e 'SELECT 1' ||
	die "MariaDB did not start"

# The node logs in to the database with the credentials of its secret, so
# the database needs that user (demo.json: app / app-secret).
"$client" --no-defaults --socket="$sock" -uroot <<'SQL'
DELETE FROM mysql.global_priv WHERE User = '';
FLUSH PRIVILEGES;
CREATE DATABASE demo;
CREATE USER 'app'@'%' IDENTIFIED BY 'app-secret';
GRANT ALL PRIVILEGES ON demo.* TO 'app'@'%';
CREATE TABLE demo.greetings (id INT AUTO_INCREMENT PRIMARY KEY, said_by VARCHAR(64), said_at DATETIME(6));
SQL

say "Starting a dbproxy node with examples/dataplane/demo.json"
proxy_port="$(free_port)"
admin_port="$(free_port)"
# demo.json names fixed ports; point them at the free ones picked above.
sed -e "s/127\.0\.0\.1:16033/127.0.0.1:$proxy_port/" \
	-e "s/127\.0\.0\.1:19100/127.0.0.1:$admin_port/" \
	-e "s/\"port\": 13306/\"port\": $db_port/" \
	"$here/demo.json" >"$tmp/demo.json"
for want in "127.0.0.1:$proxy_port" "127.0.0.1:$admin_port" "\"port\": $db_port"; do
	grep -qF "$want" "$tmp/demo.json" || die "could not set $want in the demo configuration"
done
"$dbproxy" dataplane --config "$tmp/demo.json" >"$tmp/node.log" 2>&1 &
node_pid=$!
wait_for "$node_pid" 30 "dbproxy node (admin on 127.0.0.1:$admin_port)" http_get "$admin_port" /healthz ||
	die "the node did not start"
echo "demo: clients connect to 127.0.0.1:$proxy_port"

mysql_via_node=("$client" --no-defaults -h127.0.0.1 -P"$proxy_port" -uapp -papp-secret demo)

say "Queries through the node (mariadb -h127.0.0.1 -P$proxy_port -uapp demo)"
"${mysql_via_node[@]}" --table <<'SQL'
INSERT INTO greetings (said_by, said_at) VALUES ('dbproxy demo', NOW(6));
SELECT 'hello through dbproxy' AS message, @@version AS server_version, DATABASE() AS db,
       (SELECT COUNT(*) FROM greetings) AS greetings, CURRENT_USER() AS db_user;
SQL

say "Five more clients, one after another: the pool reuses one database connection"
for i in 1 2 3 4 5; do
	id="$("${mysql_via_node[@]}" --batch --skip-column-names -e 'SELECT CONNECTION_ID()')"
	echo "client $i ran on database connection id $id"
done

say "A few node metrics (http://127.0.0.1:$admin_port/metrics)"
http_get "$admin_port" /metrics | grep -E '^dbproxy_(client_connections_total|queries_total|database_connections_opened_total|database_connections\{)' || true

say "Node log"
cat "$tmp/node.log"
