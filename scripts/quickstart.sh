#!/usr/bin/env bash
# One command: a local Synapse with tgmx registered, and the daemon running on a config of its
# own in the quick start's directory. Needs TGMX_TELEGRAM_TOKEN (a bot from @BotFather).
#
#   HS_PORT     the homeserver's port        (default 8008)
#   TGMX_PORT   tgmx's appservice port       (default 29317)
#   TGMX_QUICKSTART_DIR  where state lives   (default target/quickstart)
#
# The config it writes ($TGMX_QUICKSTART_DIR/config.yaml) is yours to edit: add rooms and save,
# the running daemon picks the change up. Stop with Ctrl-C.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${TGMX_QUICKSTART_DIR:-$ROOT/target/quickstart}
HS_PORT=${HS_PORT:-8008}
TGMX_PORT=${TGMX_PORT:-29317}
: "${TGMX_TELEGRAM_TOKEN:?export TGMX_TELEGRAM_TOKEN=<your bot token from @BotFather> first}"

for tool in cargo cc curl python3; do
  command -v "$tool" >/dev/null || { echo "quickstart: $tool not found (needs Rust, a C compiler, curl, Python 3 with venv)" >&2; exit 1; }
done
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if port_taken "$TGMX_PORT"; then
  echo "quickstart: port $TGMX_PORT (tgmx's appservice port) is taken; pick another: TGMX_PORT=29318 $0" >&2
  exit 1
fi

echo "building tgmx (release; the first build takes 15-30 minutes on 2 cores)..."
cargo build --release --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release/tgmx
mkdir -p "$WORK/synapse/appservices"
cd "$WORK"
if [ ! -f config.yaml ]; then
  sed -e "s|http://127.0.0.1:8008|http://127.0.0.1:$HS_PORT|" \
      -e "s|127.0.0.1:29317|127.0.0.1:$TGMX_PORT|g" "$ROOT/config.example.yaml" > config.yaml
fi
[ -f registration.yaml ] || "$BIN" generate-registration -c config.yaml
cp registration.yaml synapse/appservices/tgmx.yaml

if curl -sf -o /dev/null "http://127.0.0.1:$HS_PORT/_matrix/client/versions"; then
  echo "a homeserver already answers on 127.0.0.1:$HS_PORT; using it (it must load $WORK/registration.yaml)"
elif port_taken "$HS_PORT"; then
  echo "quickstart: port $HS_PORT is taken by something that is not a homeserver; pick another: HS_PORT=8018 $0" >&2
  exit 1
else
  echo "starting Synapse on 127.0.0.1:$HS_PORT (installed into target/synapse-venv on first use)..."
  RIG_DIR=$WORK/synapse HS_PORT=$HS_PORT WATCH_PID=$$ bash "$ROOT/tests/rig/synapse.sh" start
  # Stop Synapse when tgmx (this process, after the exec below) ends, Ctrl-C included: the rig's
  # watcher does not outlive Ctrl-C (its `sleep` gets the SIGINT and its loop ends early).
  SYNAPSE_PID=$(cat "$WORK/synapse/synapse.pid")
  ( trap '' INT; while kill -0 $$ 2>/dev/null; do sleep 1; done; kill "$SYNAPSE_PID" ) >/dev/null 2>&1 &
  "$ROOT/target/synapse-venv/bin/register_new_matrix_user" -k rig_shared_secret -u admin -p admin --admin \
    "http://127.0.0.1:$HS_PORT" >/dev/null 2>&1 || true
  echo "Matrix account: admin / admin on http://127.0.0.1:$HS_PORT"
fi
echo "Your config: $WORK/config.yaml (add rooms and save: the daemon reloads it)"
exec "$BIN" run -c config.yaml
