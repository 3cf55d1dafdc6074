#!/usr/bin/env bash
# PostgreSQL test rig: a throwaway cluster on 127.0.0.1 (a free port), data under $RIG_DIR, no
# durability (fsync off: it is thrown away), trust authentication for the superuser `tgmx`.
#   postgres.sh start   initdb + start (a cluster already running in $RIG_DIR is reused) and print
#                       its URL, postgres://tgmx@127.0.0.1:<port>/postgres (also in $RIG_DIR/url)
#   postgres.sh stop    stop it
#   postgres.sh url     print the URL of the running cluster
# Environment: RIG_DIR (default target/pg-rig), WATCH_PID (stop the cluster when that process
# exits, as the homeserver rigs do; with RIG_CLEANUP=1 also delete $RIG_DIR then), PG_BIN (directory of initdb/pg_ctl; default: from PATH, else
# the newest /usr/lib/postgresql/*/bin).
# As root (CI), the cluster runs as the system user `postgres` (the Debian package creates it;
# initdb refuses root), so $RIG_DIR is handed to that user.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
RIG_DIR=$(realpath -m "${RIG_DIR:-$ROOT/target/pg-rig}")

find_bin() {
  if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
  if command -v initdb >/dev/null 2>&1; then dirname "$(readlink -f "$(command -v initdb)")"; return; fi
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$d" ] && [ -x "$d/initdb" ] && { echo "$d"; return; }
  echo "no PostgreSQL here (initdb not found; Debian: apt-get install postgresql)" >&2
  exit 1
}

as_owner() { # run a command as the cluster's owner
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

running() {
  [ -f "$RIG_DIR/url" ] && [ -f "$RIG_DIR/data/postmaster.pid" ] &&
    kill -0 "$(head -1 "$RIG_DIR/data/postmaster.pid")" 2>/dev/null
}

case "${1:-start}" in
stop)
  if running; then as_owner "$(find_bin)/pg_ctl" -D "$RIG_DIR/data" -m immediate stop >/dev/null || true; fi
  rm -f "$RIG_DIR/url"; exit 0 ;;
url)
  running || { echo "no cluster running in $RIG_DIR" >&2; exit 1; }
  cat "$RIG_DIR/url"; exit 0 ;;
start) ;;
*) echo "usage: $0 start|stop|url" >&2; exit 2 ;;
esac

if running; then cat "$RIG_DIR/url"; exit 0; fi
BIN=$(find_bin)
rm -rf "$RIG_DIR"; mkdir -p "$RIG_DIR"
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  chown postgres "$RIG_DIR"
  # The cluster's owner must be able to reach $RIG_DIR.
  d=$RIG_DIR; while [ "$d" != / ]; do d=$(dirname "$d"); chmod o+x "$d" 2>/dev/null || true; done
fi
as_owner "$BIN/initdb" -D "$RIG_DIR/data" -U tgmx --auth=trust -E UTF8 --locale=C.UTF-8 >"$RIG_DIR/initdb.log" 2>&1 ||
  as_owner "$BIN/initdb" -D "$RIG_DIR/data" -U tgmx --auth=trust -E UTF8 --no-locale >"$RIG_DIR/initdb.log" 2>&1 ||
  { cat "$RIG_DIR/initdb.log" >&2; exit 1; }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_owner "$BIN/pg_ctl" -D "$RIG_DIR/data" -l "$RIG_DIR/postgres.log" -w -t 60 start \
  -o "-h 127.0.0.1 -p $port -k $RIG_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
  >/dev/null || { cat "$RIG_DIR/postgres.log" >&2; exit 1; }
url="postgres://tgmx@127.0.0.1:$port/postgres"
echo "$url" > "$RIG_DIR/url"
if [ -n "${WATCH_PID:-}" ]; then
  pid=$(head -1 "$RIG_DIR/data/postmaster.pid")
  ( while kill -0 "$WATCH_PID" 2>/dev/null; do sleep 1; done
    kill -QUIT "$pid" 2>/dev/null; rm -f "$RIG_DIR/url"
    if [ -n "${RIG_CLEANUP:-}" ]; then
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      rm -rf "$RIG_DIR"
    fi ) >/dev/null 2>&1 &
  disown
fi
echo "$url"
