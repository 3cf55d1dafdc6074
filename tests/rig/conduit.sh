#!/usr/bin/env bash
# Conduit test rig (adapted from shared/conduit/conduit-rig.sh): a throwaway Conduit (SQLite) on
# 127.0.0.1 with server name `localhost`, open registration behind a token, no federation.
#   conduit.sh start               start a fresh homeserver in $RIG_DIR, wait until it answers,
#                                  register the admin (the first user) and write $RIG_DIR/env.sh
#   conduit.sh register FILE.yaml  register an appservice through the admin room (the only way
#                                  Conduit offers); the test harness does the same in Rust
#   conduit.sh stop                stop it
# Environment: RIG_DIR (required), HS_PORT (6167), WATCH_PID (stop Conduit when that process exits),
# CONDUIT_BIN (default: ../shared/conduit/conduit beside the repository). Needs curl and python3.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CONDUIT_BIN=${CONDUIT_BIN:-$ROOT/../shared/conduit/conduit}
: "${RIG_DIR:?RIG_DIR must be set}"
HS_PORT=${HS_PORT:-6167}; HS=http://127.0.0.1:$HS_PORT
SERVER_NAME=localhost
ADMIN_USER=admin; ADMIN_PASS=admin-password
REG_TOKEN=rig-registration-token

api() { # api METHOD PATH [JSON] -> body; uses $TOKEN when set
  local m=$1 p=$2 d=${3:-}
  curl -sS -X "$m" "$HS$p" -H 'Content-Type: application/json' \
    ${TOKEN:+-H "Authorization: Bearer $TOKEN"} ${d:+--data "$d"}
}
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }

case "${1:-start}" in
stop)
  [ -f "$RIG_DIR/conduit.pid" ] && kill "$(cat "$RIG_DIR/conduit.pid")" 2>/dev/null || true
  rm -f "$RIG_DIR/conduit.pid"; exit 0 ;;
register)
  reg=${2:?usage: conduit.sh register REGISTRATION.yaml}
  . "$RIG_DIR/env.sh"
  TOKEN=$ADMIN_TOKEN
  room=$(api GET "/_matrix/client/v3/directory/room/%23admins:$SERVER_NAME" | json "['room_id']")
  body=$(python3 - "$reg" "$SERVER_NAME" <<'PY'
import json, sys
yaml = open(sys.argv[1]).read().rstrip("\n")
cmd = f"@conduit:{sys.argv[2]}: register-appservice\n```\n{yaml}\n```"
print(json.dumps({"msgtype": "m.text", "body": cmd}))
PY
)
  api PUT "/_matrix/client/v3/rooms/$room/send/m.room.message/rig$(date +%s%N)" "$body" >/dev/null
  # The server bot answers in the admin room; wait for its reply.
  for _ in $(seq 1 50); do
    reply=$(api GET "/_matrix/client/v3/rooms/$room/messages?dir=b&limit=5" \
      | python3 -c "import json,sys; ev=json.load(sys.stdin)['chunk']; print(next((e['content'].get('body','') for e in ev if e['sender'].startswith('@conduit:')), ''))")
    case "$reply" in *"Appservice registered"*) echo "$reply"; exit 0 ;;
      *rror*|*ailed*) echo "conduit refused the registration: $reply" >&2; exit 1 ;; esac
    sleep 0.2
  done
  echo "no answer from @conduit:$SERVER_NAME in the admin room" >&2; exit 1 ;;
start) ;;
*) echo "usage: $0 start|register FILE|stop" >&2; exit 2 ;;
esac

[ -x "$CONDUIT_BIN" ] || { echo "no Conduit binary at $CONDUIT_BIN (set CONDUIT_BIN)" >&2; exit 1; }
mkdir -p "$RIG_DIR/db"; cd "$RIG_DIR"
cat > conduit.toml <<TOML
[global]
server_name = "$SERVER_NAME"
database_backend = "sqlite"
database_path = "$RIG_DIR/db"
address = "127.0.0.1"
port = $HS_PORT
max_request_size = 60_000_000
allow_registration = true
registration_token = "$REG_TOKEN"
allow_federation = false
allow_check_for_updates = false
enable_lightning_bolt = false
trusted_servers = []
log = "warn,conduit=info"
TOML
CONDUIT_CONFIG="$RIG_DIR/conduit.toml" "$CONDUIT_BIN" >> conduit.log 2>&1 &
CPID=$!
echo $CPID > conduit.pid
. "$ROOT/tests/rig/common.sh"
serve_until_ready conduit "$CPID" conduit.log 300

# The admin: the first registered user (user-interactive auth with the registration token); Conduit
# joins it to #admins:localhost, where the server bot @conduit:localhost takes commands.
session=$(api POST /_matrix/client/v3/register "{\"username\":\"$ADMIN_USER\",\"password\":\"$ADMIN_PASS\"}" | json "['session']")
token=$(api POST /_matrix/client/v3/register "{\"username\":\"$ADMIN_USER\",\"password\":\"$ADMIN_PASS\",\"auth\":{\"type\":\"m.login.registration_token\",\"token\":\"$REG_TOKEN\",\"session\":\"$session\"}}" | json "['access_token']")
cat > env.sh <<ENV
HS=$HS
SERVER_NAME=$SERVER_NAME
ADMIN_USER=@$ADMIN_USER:$SERVER_NAME
ADMIN_TOKEN=$token
REG_TOKEN=$REG_TOKEN
ENV
echo "conduit ready on $HS (pid $CPID)"
