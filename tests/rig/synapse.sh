#!/usr/bin/env bash
# Synapse test rig (adapted from shared/rig/synapse-rig.sh).
#   synapse.sh install              create the venv with matrix-synapse (idempotent)
#   synapse.sh start                start a fresh homeserver in $RIG_DIR and wait until it answers
# Environment: RIG_DIR (required for start), HS_PORT, WATCH_PID (stop Synapse when that process exits),
# VENV (default: target/synapse-venv in the repository), SYNAPSE_VERSION (default: the pin below). Appservice registrations: every
# $RIG_DIR/appservices/*.yaml is registered.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VENV=${VENV:-$ROOT/target/synapse-venv}
PY=${PYTHON:-python3}

# The Synapse the tests run against, pinned so that a new release cannot change a test run
# unnoticed. To move it: set SYNAPSE_VERSION=<version> for one run, then change the default here.
SYNAPSE_VERSION=${SYNAPSE_VERSION:-1.163.2}

install() {
  local have
  have=$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("matrix-synapse"))' 2>/dev/null || true)
  if [ "$have" != "$SYNAPSE_VERSION" ]; then
    [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "matrix-synapse==$SYNAPSE_VERSION"
  fi
}

case "${1:-start}" in
  install) install; exit 0 ;;
  start) ;;
  *) echo "usage: $0 install|start" >&2; exit 2 ;;
esac

install
: "${RIG_DIR:?RIG_DIR must be set}"
HS_PORT=${HS_PORT:-8008}; HS=http://127.0.0.1:$HS_PORT
mkdir -p "$RIG_DIR/appservices"; cd "$RIG_DIR"

cat > log.yaml <<'YAML'
version: 1
formatters: {precise: {format: '%(asctime)s %(name)s %(levelname)s %(request)s %(message)s'}}
handlers: {console: {class: logging.StreamHandler, formatter: precise}}
root: {level: WARNING, handlers: [console]}
disable_existing_loggers: false
YAML

AS_FILES=$(ls "$RIG_DIR"/appservices/*.yaml 2>/dev/null | sed 's/.*/"&"/' | paste -sd, -)
RL='{per_second: 1000, burst_count: 1000}'
cat > homeserver.yaml <<YAML
server_name: localhost
public_baseurl: $HS/
pid_file: $RIG_DIR/homeserver.pid
report_stats: false
listeners:
  - {port: $HS_PORT, bind_addresses: ['127.0.0.1'], type: http, tls: false, x_forwarded: false,
     resources: [{names: [client], compress: false}]}
database: {name: sqlite3, args: {database: $RIG_DIR/homeserver.db}}
log_config: $RIG_DIR/log.yaml
media_store_path: $RIG_DIR/media_store
signing_key_path: $RIG_DIR/localhost.signing.key
trusted_key_servers: []
suppress_key_server_warning: true
enable_registration: true
enable_registration_without_verification: true
registration_shared_secret: rig_shared_secret
macaroon_secret_key: rig_macaroon_secret
form_secret: rig_form_secret
app_service_config_files: [$AS_FILES]
presence: {enabled: false}
url_preview_enabled: false
rc_message: $RL
rc_registration: $RL
rc_login: {address: $RL, account: $RL, failed_attempts: $RL}
rc_joins: {local: $RL, remote: $RL}
rc_joins_per_room: $RL
rc_invites: {per_room: $RL, per_user: $RL, per_issuer: $RL}
rc_room_creation: $RL
rc_admin_redaction: $RL
rc_media_create: $RL
rc_profile: $RL
rc_presence: {per_user: $RL}
YAML

[ -f localhost.signing.key ] || "$VENV/bin/python" -m synapse.app.homeserver -c homeserver.yaml --generate-keys >/dev/null

"$VENV/bin/python" -m synapse.app.homeserver -c homeserver.yaml > synapse.log 2>&1 &
SPID=$!
echo $SPID > synapse.pid
. "$ROOT/tests/rig/common.sh"
serve_until_ready synapse "$SPID" synapse.log 600
echo "synapse ready on $HS (pid $SPID)"
