# Shared by the homeserver rigs (sourced): after starting a server in the background,
#   serve_until_ready NAME PID LOGFILE TRIES
# stops it when $WATCH_PID (the test process) exits, however that ends, and waits until $HS
# answers /_matrix/client/versions (TRIES × 0.1 s), printing the server's log if it dies or
# never answers.
serve_until_ready() {
  local name=$1 pid=$2 log=$3 tries=$4
  if [ -n "${WATCH_PID:-}" ]; then
    ( while kill -0 "$WATCH_PID" 2>/dev/null; do sleep 1; done; kill "$pid" 2>/dev/null ) >/dev/null 2>&1 &
    disown
  fi
  for _ in $(seq 1 "$tries"); do
    curl -sf -o /dev/null "$HS/_matrix/client/versions" && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  curl -sf -o /dev/null "$HS/_matrix/client/versions" || { echo "$name not ready" >&2; cat "$log" >&2; exit 1; }
}
