#!/usr/bin/env bash
# One command: a local Synapse with tgmx registered, and the daemon running on the embedded
# default config (config.example.yaml). Needs TGMX_TELEGRAM_TOKEN (a bot from @BotFather).
# State lives in target/quickstart/ (or $TGMX_QUICKSTART_DIR). Stop with Ctrl-C.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${TGMX_QUICKSTART_DIR:-$ROOT/target/quickstart}
: "${TGMX_TELEGRAM_TOKEN:?export TGMX_TELEGRAM_TOKEN=<your bot token from @BotFather> first}"

cargo build --release --manifest-path "$ROOT/Cargo.toml"
BIN=$ROOT/target/release/tgmx
mkdir -p "$WORK/synapse/appservices"
cd "$WORK"
[ -f registration.yaml ] || "$BIN" generate-registration
cp registration.yaml synapse/appservices/tgmx.yaml

if curl -sf -o /dev/null http://127.0.0.1:8008/_matrix/client/versions; then
  echo "a homeserver already answers on 127.0.0.1:8008; using it (it must load $WORK/registration.yaml)"
else
  RIG_DIR=$WORK/synapse HS_PORT=8008 WATCH_PID=$$ bash "$ROOT/tests/rig/synapse.sh" start
  "$ROOT/target/synapse-venv/bin/register_new_matrix_user" -k rig_shared_secret -u admin -p admin --admin \
    http://127.0.0.1:8008 >/dev/null 2>&1 || true
  echo "Matrix account: admin / admin on http://127.0.0.1:8008"
fi
echo "Add rooms to a copy of config.example.yaml and run: $BIN run -c <that file>"
exec "$BIN" run
