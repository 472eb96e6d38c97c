#!/usr/bin/env bash
# The whole system on this machine: `dbproxy dev` starts a control plane, one
# data-plane node per zone (a, b, c on 127.0.1.1, 127.0.2.1, 127.0.3.1) and a
# MariaDB server; the admin API (SigV4-signed, through `dbproxy api`)
# declares a secret, a proxy in the three zones and its database target;
# the control plane pushes that over xDS; then the mariadb client queries
# through every zone's node over TLS verified against the control plane's
# CA. Everything lives in a temporary directory and is removed on exit.
#
#   bash examples/dev/demo.sh [path/to/dbproxy]    (make demo does this)
#
# Needs mariadbd, mariadb-install-db and mariadb (Debian: apt-get install
# mariadb-server mariadb-client).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dbproxy="${1:-$here/../../bin/dbproxy}"

if [[ -t 1 ]]; then
	say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
	say() { printf '\n== %s\n' "$*"; }
fi
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

command -v mariadb >/dev/null || die "the mariadb client is not installed; apt-get install -y mariadb-client"
[[ -x "$dbproxy" ]] || die "$dbproxy is not an executable; run 'make build' first (or 'make demo')"

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
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

tmp="$(mktemp -d "${TMPDIR:-/tmp}/dbproxy-demo-XXXXXX")"
dev_pid=""
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if ((rc != 0)) && [[ -s "$tmp/dev.log" ]]; then
		echo "---- last lines of the dbproxy dev log ----" >&2
		tail -n 30 "$tmp/dev.log" >&2
	fi
	say "Stopping"
	if [[ -n "$dev_pid" ]] && kill -0 "$dev_pid" 2>/dev/null; then
		kill -TERM "$dev_pid" 2>/dev/null || true
		wait "$dev_pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
	echo "demo: removed $tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

api_port="$(free_port)"
xds_port="$(free_port)"
proxy_base="$(free_port)"
say "Starting dbproxy dev (control plane, nodes in zones a, b, c, MariaDB) in $tmp"
"$dbproxy" dev --dir "$tmp/dev" --api-address "127.0.0.1:$api_port" --xds-address "127.0.0.1:$xds_port" \
	--port-range "$proxy_base-$((proxy_base + 9))" >"$tmp/dev.out" 2>"$tmp/dev.log" &
dev_pid=$!
for ((i = 0; i < 300; i++)); do
	[[ -s "$tmp/dev/dev.json" ]] && break
	kill -0 "$dev_pid" 2>/dev/null || die "dbproxy dev exited"
	sleep 0.1
done
[[ -s "$tmp/dev/dev.json" ]] || die "dbproxy dev did not start within 30s"
cat "$tmp/dev.out"

# dev.json is written by dbproxy dev; these two fields are all we need.
db_port="$(sed -n '/"database"/,/}/s/.*"port": \([0-9]*\).*/\1/p' "$tmp/dev/dev.json")"
db_password="$(sed -n '/"database"/,/}/s/.*"password": "\([^"]*\)".*/\1/p' "$tmp/dev/dev.json")"
[[ -n "$db_port" && -n "$db_password" ]] || die "cannot read the database from dev.json"
creds="$tmp/dev/controlplane/root-credentials.json"
ca="$tmp/dev/controlplane/ca.pem"
api() { "$dbproxy" api --credentials "$creds" "$@"; }

say "Declaring a secret, a proxy in zones a, b, c and its target (dbproxy api, SigV4-signed)"
api PUT /v1/secrets/app "{\"username\": \"app\", \"password\": \"$db_password\"}" >/dev/null
api PUT /v1/proxies/main '{"zones": ["a", "b", "c"], "auth": [{"secret": "app"}], "require_tls": true}' >"$tmp/proxy.json"
port="$(sed -n 's/^  "port": \([0-9]*\),/\1/p' "$tmp/proxy.json")"
out="$(api PUT /v1/proxies/main/targets/db1 "{\"host\": \"127.0.0.1\", \"port\": $db_port, \"zone\": \"a\"}")"
rev="$(printf '%s\n' "$out" | sed -n 's/^  "revision": \([0-9]*\),/\1/p')"
echo "demo: proxy main listens on port $port of every node; the target is revision $rev"

say "Waiting until every node serves revision $rev"
api GET "/v1/rollout?revision=$rev&zones=a,b,c&wait=60s" >"$tmp/rollout.json"
grep -q '"complete": true' "$tmp/rollout.json" || { cat "$tmp/rollout.json" >&2; die "the rollout did not complete"; }
echo "demo: every node acked"

for i in 1 2 3; do
	host="127.0.$i.1"
	say "A query through the node in zone $(printf "\\x$(printf %x $((96 + i)))") ($host:$port, TLS verified against the control plane CA)"
	mariadb --no-defaults -h "$host" -P "$port" -uapp -p"$db_password" --ssl --ssl-ca="$ca" --ssl-verify-server-cert app --table \
		-e "SELECT 'hello through dbproxy' AS message, @@version AS server, CURRENT_USER() AS db_user"
done

say "require_tls: a client without TLS is refused with a MySQL error"
if mariadb --no-defaults -h 127.0.1.1 -P "$port" -uapp -p"$db_password" --skip-ssl app -e 'SELECT 1' 2>"$tmp/plain.err"; then
	die "a plain-text client was let in"
fi
cat "$tmp/plain.err"

say "A pool change reaches every node (connection_borrow_timeout 30s, init_query)"
out="$(api PUT /v1/proxies/main/target-group '{"connection_pool_config": {"connection_borrow_timeout": 30, "init_query": "SET SESSION wait_timeout = 600"}}')"
rev="$(printf '%s\n' "$out" | sed -n 's/^  "revision": \([0-9]*\),/\1/p')"
api GET "/v1/rollout?revision=$rev&wait=60s" | grep -q '"complete": true' || die "the pool change did not roll out"
mariadb --no-defaults -h 127.0.3.1 -P "$port" -uapp -p"$db_password" --ssl --ssl-ca="$ca" app --table \
	-e "SELECT @@session.wait_timeout AS wait_timeout_from_init_query"

say "IAM authentication: app may now log in only with a connect token"
api PUT /v1/iam/users/reporter '{}' >/dev/null
api PUT /v1/iam/policies/connect-app '{"policy": "{\"Version\": \"2012-10-17\", \"Statement\": [{\"Effect\": \"Allow\", \"Action\": \"dbproxy:Connect\", \"Resource\": \"proxy/main/dbuser/app\"}]}"}' >/dev/null
api PUT /v1/iam/users/reporter/policies/connect-app '{}' >/dev/null
api POST /v1/iam/users/reporter/access-keys >"$tmp/key.json"
key_id="$(sed -n 's/^  "access_key_id": "\([^"]*\)".*/\1/p' "$tmp/key.json")"
key_secret="$(sed -n 's/^  "secret_access_key": "\([^"]*\)".*/\1/p' "$tmp/key.json")"
[[ -n "$key_id" && -n "$key_secret" ]] || die "cannot read the new access key"
(umask 077 && printf '{"access_key_id": "%s", "secret_access_key": "%s"}\n' "$key_id" "$key_secret" >"$tmp/reporter.json")
out="$(api PUT /v1/proxies/main '{"zones": ["a", "b", "c"], "auth": [{"secret": "app", "iam_auth": "REQUIRED"}], "require_tls": true}')"
rev="$(printf '%s\n' "$out" | sed -n 's/^  "revision": \([0-9]*\),/\1/p')"
api GET "/v1/rollout?revision=$rev&wait=60s" | grep -q '"complete": true' || die "iam_auth REQUIRED did not roll out"
token="$("$dbproxy" token --credentials "$tmp/reporter.json" --hostname 127.0.2.1 --port "$port" --username app)"
echo "demo: dbproxy token printed a 15-minute token: ${token%%&X-Amz-Credential*}&X-Amz-Credential=..."
mariadb --no-defaults -h 127.0.2.1 -P "$port" -uapp -p"$token" --ssl --ssl-ca="$ca" --ssl-verify-server-cert app --table \
	-e "SELECT 'logged in with a connect token' AS message, CURRENT_USER() AS db_user"
if mariadb --no-defaults -h 127.0.2.1 -P "$port" -uapp -p"$db_password" --ssl --ssl-ca="$ca" app -e 'SELECT 1' 2>"$tmp/pw.err"; then
	die "the database password still logs in"
fi
echo "demo: the password is refused now:"
cat "$tmp/pw.err"

say "The target's health as the nodes report it (GET /v1/proxies/main/targets/db1)"
for ((i = 0; i < 100; i++)); do
	api GET /v1/proxies/main/targets/db1 >"$tmp/target.json"
	grep -q '"health": "AVAILABLE"' "$tmp/target.json" && break
	sleep 0.1
done
grep -E '"(health|discovered_role)"' "$tmp/target.json"

say "The nodes as the control plane sees them (GET /v1/nodes)"
api GET /v1/nodes | grep -E '"(id|zone|connected|acked_version)"'
