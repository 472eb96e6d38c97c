#!/usr/bin/env bash
# Installs what the driver compatibility scenarios of internal/drivertest need
# on a Debian 12 machine: the runtimes and drivers from Debian packages, the
# MariaDB server binaries this package's own tests start, and the pinned
# mysql2 from npm into the cache directory that drivertest reads.
#
# Idempotent: packages already installed are not touched, and nothing is
# fetched when everything is present.
#
#   bash internal/drivertest/install.sh               # install what is missing
#   bash internal/drivertest/install.sh --mysql2-dir  # print the mysql2 cache dir
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Must match mysql2Dir and cacheRoot in drivertest.go.
mysql2_dir() {
	local base root sum
	if [[ -n "${DRIVERTEST_CACHE_DIR:-}" ]]; then
		root="$DRIVERTEST_CACHE_DIR"
	else
		if [[ "${XDG_CACHE_HOME:-}" == /* ]]; then
			base="$XDG_CACHE_HOME"
		elif [[ -n "${HOME:-}" ]]; then
			base="$HOME/.cache"
		else
			base="${TMPDIR:-/tmp}"
		fi
		root="$base/dbproxy/drivertest"
	fi
	sum="$({ cat "$here/testdata/package.json"; printf '\0'; cat "$here/testdata/package-lock.json"; } | sha256sum | cut -c1-16)"
	printf '%s\n' "$root/mysql2-$sum"
}

if [[ "${1:-}" == "--mysql2-dir" ]]; then
	mysql2_dir
	exit 0
fi

sudo=()
if [[ "$(id -u)" != 0 ]]; then
	sudo=(sudo)
fi

installed() {
	[[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" == installed ]]
}

want=()
need() {
	local p
	for p in "$@"; do
		installed "$p" || want+=("$p")
	done
}

# Python drivers: Debian's /usr/bin/python3 (not a pyenv one) sees them.
need python3 python3-pymysql python3-mysqldb
# PHP: the CLI with mysqlnd, pdo_mysql and mysqli.
need php-cli php-mysql
# Java: a JDK (the single-file source launcher needs jdk.compiler) and
# MariaDB Connector/J in /usr/share/java/mariadb-java-client.jar.
if ! { command -v java >/dev/null && java --list-modules 2>/dev/null | grep -q '^jdk\.compiler@'; }; then
	need openjdk-17-jdk-headless
fi
need libmariadb-java
# Node: keep a node and npm that are already there (e.g. nodejs from
# NodeSource, which bundles npm and conflicts with Debian's npm package).
command -v node >/dev/null || need nodejs
command -v npm >/dev/null || need npm
# The servers this package's tests start (mariadbd, mariadb-install-db, and
# my_print_defaults, which mariadb-install-db runs).
need mariadb-server-core mariadb-client-core

if ((${#want[@]})); then
	echo "drivertest: apt-get install ${want[*]}"
	export DEBIAN_FRONTEND=noninteractive
	"${sudo[@]}" apt-get update -q
	"${sudo[@]}" apt-get install -y -q --no-install-recommends "${want[@]}"
else
	echo "drivertest: all Debian packages present"
fi

# mysql2, exactly as pinned by testdata/package-lock.json, into the cache
# directory that drivertest would otherwise fill on first use.
dir="$(mysql2_dir)"
if [[ -f "$dir/node_modules/mysql2/package.json" ]]; then
	echo "drivertest: mysql2 present in $dir"
else
	echo "drivertest: npm ci mysql2 into $dir"
	mkdir -p "$(dirname "$dir")"
	tmp="$(mktemp -d "$(dirname "$dir")/tmp-mysql2-XXXXXX")"
	trap 'rm -rf "$tmp"' EXIT
	cp "$here/testdata/package.json" "$here/testdata/package-lock.json" "$tmp/"
	(cd "$tmp" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
	mv -T "$tmp" "$dir" 2>/dev/null || [[ -f "$dir/node_modules/mysql2/package.json" ]]
fi
