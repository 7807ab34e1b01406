# Sourced by scripts/test.sh: a throwaway PostgreSQL server for the PostgreSQL store and
# multi-node tests, from Debian's packages.
#
#   start_test_postgres   installs `postgresql` if missing, initdb's a cluster in a temporary
#                         directory (as the `postgres` user when running as root), starts it on a
#                         Unix socket in that directory (no TCP port), exports
#                         KEYFORT_TEST_PG_URL, and stops and removes it when the shell exits.
#
# Tests that need the server fail, loudly, when KEYFORT_TEST_PG_URL is unset or unreachable.

start_test_postgres() {
  local bindir
  bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)"
  if [ -z "$bindir" ] || [ ! -x "$bindir/pg_ctl" ]; then
    printf '\n==> installing Debian package: postgresql\n'
    local sudo_cmd=""
    [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postgresql
    bindir="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
  fi

  KEYFORT_TEST_PG_DIR="$(mktemp -d /tmp/keyfort-pg.XXXXXX)"
  local as=()
  if [ "$(id -u)" -eq 0 ]; then
    # PostgreSQL refuses to run as root: the Debian package's `postgres` user runs it.
    chown postgres: "$KEYFORT_TEST_PG_DIR"
    as=(runuser -u postgres --)
  fi
  local dir="$KEYFORT_TEST_PG_DIR"
  printf '\n==> starting a throwaway PostgreSQL in %s\n' "$dir"
  "${as[@]}" "$bindir/initdb" -D "$dir/data" -U keyfort -A trust --no-sync -E UTF8 \
    --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log"; return 1; }
  "${as[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start \
    -o "-c listen_addresses='' -c unix_socket_directories=$dir -p 5432 -c max_connections=400" \
    >/dev/null || { cat "$dir/server.log"; return 1; }
  KEYFORT_TEST_PG_BINDIR="$bindir"
  export KEYFORT_TEST_PG_URL="postgres://keyfort@localhost/postgres?host=$dir&port=5432"
  trap stop_test_postgres EXIT
}

stop_test_postgres() {
  [ -n "${KEYFORT_TEST_PG_DIR:-}" ] || return 0
  local as=()
  [ "$(id -u)" -eq 0 ] && as=(runuser -u postgres --)
  "${as[@]}" "$KEYFORT_TEST_PG_BINDIR/pg_ctl" -D "$KEYFORT_TEST_PG_DIR/data" -m immediate -w \
    stop >/dev/null 2>&1 || true
  rm -rf "$KEYFORT_TEST_PG_DIR"
  KEYFORT_TEST_PG_DIR=""
}
