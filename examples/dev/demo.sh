#!/usr/bin/env bash
# The whole system on this machine, driven by Terraform: `dbproxy dev` starts
# a control plane, one data-plane node per zone (a, b, c on 127.0.1.1,
# 127.0.2.1, 127.0.3.1) and a MariaDB server; `terraform apply` of
# examples/quickstart declares a secret, a proxy in the three zones, its
# target group, target and read-only endpoint, and an IAM user whose key
# signs connect tokens, and returns when every node serves it. Then: logins
# through the proxy with a connect token (the password is refused while
# iam_auth is REQUIRED) and, after an apply that sets iam_auth DISABLED, with
# the password through every zone's node over TLS verified against the
# control plane's CA; a pool change applied and seen by a node; `terraform
# destroy`. Everything lives in a temporary directory and is removed on exit,
# also on Ctrl-C.
#
#   bash examples/dev/demo.sh [path/to/dbproxy]    (make demo builds and runs this)
#
# Terraform uses the provider that path/to/dbproxy serves, through a CLI
# configuration with dev_overrides that this script writes (nothing of
# ~/.terraformrc is used). Needs terraform (1.11 or later) on PATH, and
# mariadbd, mariadb-install-db and the mariadb client: run as root on Debian,
# the script installs MariaDB itself when it is missing.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
quickstart="$(cd "$here/../quickstart" && pwd)"
dbproxy="${1:-$here/../../bin/dbproxy}"

if [[ -t 1 ]]; then
	say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
else
	say() { printf '\n== %s\n' "$*"; }
fi
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

[[ -x "$dbproxy" ]] || die "$dbproxy is not an executable; run 'make build' first (or 'make demo')"
dbproxy="$(cd "$(dirname "$dbproxy")" && pwd)/$(basename "$dbproxy")"
command -v terraform >/dev/null || die "terraform is not on PATH (Terraform 1.11 or later: https://developer.hashicorp.com/terraform/install)"

# MariaDB: the server (for dbproxy dev's database) and the client.
have_mariadb() {
	command -v mariadb >/dev/null && command -v mariadb-install-db >/dev/null &&
		{ command -v mariadbd >/dev/null || [[ -x /usr/sbin/mariadbd ]]; }
}
if ! have_mariadb; then
	if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null; then
		die "MariaDB is missing; install it with: sudo apt-get install -y mariadb-server mariadb-client"
	fi
	say "Installing mariadb-server and mariadb-client (apt-get)"
	export DEBIAN_FRONTEND=noninteractive
	# The package scripts must not start a system MariaDB: dbproxy dev starts
	# its own server. policy-rc.d exit 101 forbids service starts during this
	# install (only when none is in place).
	policy=/usr/sbin/policy-rc.d
	own_policy=false
	if [[ ! -e "$policy" ]]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		own_policy=true
	fi
	apt-get update -q
	apt-get install -y -q --no-install-recommends mariadb-server mariadb-client </dev/null
	if $own_policy; then
		rm -f "$policy"
	fi
	have_mariadb || die "mariadb-server and mariadb-client were installed, but mariadbd, mariadb-install-db or mariadb is still missing"
fi

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
	# A second Ctrl-C must not cut the clean-up short; dbproxy dev's own
	# shutdown bounds it.
	trap - EXIT
	trap '' INT TERM
	if ((rc != 0)) && [[ -s "$tmp/dev.log" ]]; then
		echo "---- last lines of the dbproxy dev log ----" >&2
		tail -n 30 "$tmp/dev.log" >&2
	fi
	say "Stopping dbproxy dev"
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

# Terraform runs the provider that $dbproxy serves: dev_overrides maps the
# source address to a directory holding terraform-provider-dbproxy, here a
# link to $dbproxy. No registry is asked.
mkdir -p "$tmp/plugins" "$tmp/tf"
ln -s "$dbproxy" "$tmp/plugins/terraform-provider-dbproxy"
cat >"$tmp/terraformrc" <<EOF
provider_installation {
  dev_overrides {
    "dbproxy/dbproxy" = "$tmp/plugins"
  }
  direct {}
}
EOF
export TF_CLI_CONFIG_FILE="$tmp/terraformrc" TF_IN_AUTOMATION=1 CHECKPOINT_DISABLE=1
export TF_VAR_credentials_file="$creds" TF_VAR_database_port="$db_port" TF_VAR_ca_file="$ca"
# Ephemeral and sensitive: in neither the plan nor the state.
export TF_VAR_database_password="$db_password"
cp "$quickstart"/*.tf "$tmp/tf/"
cd "$tmp/tf"

# since prints the seconds since $1 (an $EPOCHREALTIME value).
since() {
	local us=$((${EPOCHREALTIME/./} - ${1/./}))
	printf '%d.%03d' $((us / 1000000)) $((us % 1000000 / 1000))
}

# apply runs terraform apply with the given -var flags, shows its summary
# and how long it took (the nodes serve the change when it returns).
apply() {
	local start=$EPOCHREALTIME rc=0
	terraform apply -auto-approve -input=false -no-color "$@" >"$tmp/apply.log" 2>&1 || rc=$?
	if ((rc != 0)); then
		cat "$tmp/apply.log" >&2
		die "terraform apply failed"
	fi
	grep -E '^(dbproxy_|terraform_data|ephemeral)[^ ]*: (Creat|Modif|Destr|Open)[a-z]* complete|^Apply complete|token login' "$tmp/apply.log" | sed 's/^/  /' || true
	echo "demo: terraform apply took $(since "$start")s, from its start until every node of the zones served the change"
}

# No `terraform init`: the quickstart needs only dbproxy/dbproxy, which
# dev_overrides provides, and the built-in terraform_data. Terraform says to
# skip init with dev_overrides; init would ask the registry for
# dbproxy/dbproxy anyway and fail where it cannot be reached.
say "terraform validate (the provider is $dbproxy, through dev_overrides in $TF_CLI_CONFIG_FILE)"
terraform validate -no-color >"$tmp/validate.log" 2>&1 || { cat "$tmp/validate.log" >&2; die "terraform validate failed"; }
grep -E 'Success' "$tmp/validate.log" | sed 's/^/  /' || true

say "terraform apply of examples/quickstart (iam_auth REQUIRED: clients log in with connect tokens)"
apply
endpoint="$(terraform output -raw endpoint)"
host="${endpoint%:*}"
port="${endpoint##*:}"
echo "demo: proxy main is $endpoint (every node listens on port $port); read-only endpoint $(terraform output -raw read_only_endpoint)"
echo "demo: target db1 is $(terraform output -raw target_health)"

say "A login with a connect token (dbproxy token, signed with the access key from the state)"
(umask 077 && terraform output -raw app_key_file >"$tmp/app-key.json")
token="$("$dbproxy" token --credentials "$tmp/app-key.json" --hostname "$host" --port "$port" --username app)"
echo "demo: a 15-minute token: ${token%%&X-Amz-Credential*}&X-Amz-Credential=..."
mariadb --no-defaults -h "$host" -P "$port" -uapp -p"$token" --ssl --ssl-ca="$ca" --ssl-verify-server-cert app --table \
	-e "SELECT 'logged in with a connect token' AS message, @@version AS server, CURRENT_USER() AS db_user"
if mariadb --no-defaults -h "$host" -P "$port" -uapp -p"$db_password" --ssl --ssl-ca="$ca" app -e 'SELECT 1' 2>"$tmp/pw.err"; then
	die "the database password logs in although iam_auth is REQUIRED"
fi
echo "demo: the password is refused while iam_auth is REQUIRED:"
cat "$tmp/pw.err"

say "terraform apply -var iam_auth=DISABLED: clients log in with the password"
apply -var iam_auth=DISABLED
for i in 1 2 3; do
	zone_host="127.0.$i.1"
	say "A query with the password through the node in zone $(printf "\\x$(printf %x $((96 + i)))") ($zone_host:$port, TLS verified against the control plane CA)"
	mariadb --no-defaults -h "$zone_host" -P "$port" -uapp -p"$db_password" --ssl --ssl-ca="$ca" --ssl-verify-server-cert app --table \
		-e "SELECT 'hello through dbproxy' AS message, @@version AS server, CURRENT_USER() AS db_user"
done

ro="$(terraform output -raw read_only_endpoint)"
say "A query through the read-only endpoint ($ro: readers first, else the writer)"
mariadb --no-defaults -h "${ro%:*}" -P "${ro##*:}" -uapp -p"$db_password" --ssl --ssl-ca="$ca" --ssl-verify-server-cert app --table \
	-e "SELECT 'through the read-only endpoint' AS message, @@global.read_only AS server_read_only"

say "require_tls: a client without TLS is refused with a MySQL error"
if mariadb --no-defaults -h "$host" -P "$port" -uapp -p"$db_password" --skip-ssl app -e 'SELECT 1' 2>"$tmp/plain.err"; then
	die "a plain-text client was let in"
fi
cat "$tmp/plain.err"

say "A pool change (connection_borrow_timeout 30s, an init_query) applied and seen by the node in zone c"
apply -var iam_auth=DISABLED -var connection_borrow_timeout=30 -var 'init_query=SET SESSION wait_timeout = 600'
mariadb --no-defaults -h 127.0.3.1 -P "$port" -uapp -p"$db_password" --ssl --ssl-ca="$ca" app --table \
	-e "SELECT @@session.wait_timeout AS wait_timeout_from_init_query"
wt="$(mariadb --no-defaults -h 127.0.3.1 -P "$port" -uapp -p"$db_password" --ssl --ssl-ca="$ca" app -N -e 'SELECT @@session.wait_timeout')"
[[ "$wt" == 600 ]] || die "the node in zone c does not run the new init_query (wait_timeout is $wt)"
terraform plan -detailed-exitcode -input=false -no-color -var iam_auth=DISABLED -var connection_borrow_timeout=30 \
	-var 'init_query=SET SESSION wait_timeout = 600' >"$tmp/plan.log" 2>&1 ||
	{ cat "$tmp/plan.log" >&2; die "the plan after the apply is not empty"; }
echo "demo: the next plan is empty"

say "The nodes as the control plane sees them (GET /v1/nodes)"
api GET /v1/nodes | grep -E '"(id|zone|connected|acked_version)"'

say "terraform destroy"
start=$EPOCHREALTIME
terraform destroy -auto-approve -input=false -no-color >"$tmp/destroy.log" 2>&1 ||
	{ cat "$tmp/destroy.log" >&2; die "terraform destroy failed"; }
grep -E '^Destroy complete' "$tmp/destroy.log" | sed 's/^/  /'
echo "demo: terraform destroy took $(since "$start")s"
api GET /v1/proxies >"$tmp/proxies.json"
if grep -q '"name"' "$tmp/proxies.json"; then
	cat "$tmp/proxies.json" >&2
	die "proxies are left on the control plane after terraform destroy"
fi
echo "demo: the control plane has no proxy left"
