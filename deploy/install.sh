#!/usr/bin/env bash
# Install the gateway as two systemd services on this machine. Run as root
# from a checkout; safe to run again (every step checks before it acts).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=deploy/common.sh
. "$here/common.sh"
SOURCE=$(cd "$here/.." && pwd)
PYTHON=${PYTHON:-python3}

say "service user $SERVICE_USER"
if [ "${SKIP_USER:-0}" != 1 ] && ! id "$SERVICE_USER" >/dev/null 2>&1; then
  useradd --system --home-dir "$DATA_DIR" --shell /usr/sbin/nologin "$SERVICE_USER"
fi
owner=()
[ "${SKIP_USER:-0}" = 1 ] || owner=(-o "$SERVICE_USER" -g "$SERVICE_USER")

say "folders"
install -d -m 0755 "$PREFIX" "$ETC_DIR"
install -d -m 0750 "${owner[@]}" "$DATA_DIR" "$LOG_DIR"
install -d -m 0750 "$BACKUP_DIR"

say "code in $PREFIX"
if [ "$SOURCE" != "$PREFIX" ] && [ ! -d "$PREFIX/.git" ]; then
  git clone --quiet "$SOURCE" "$PREFIX"
fi

say "virtualenv in $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e "$PREFIX"

say "settings in $ENV_FILE"
if [ ! -f "$ENV_FILE" ]; then
  key=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))')
  umask 027
  cat > "$ENV_FILE" <<ENV
# Settings of the gateway and healthd (see $PREFIX/README.md, "Settings").
HOST=127.0.0.1
PORT=8000
ADMIN_API_KEY=$key
DATABASE_URL=sqlite:///$DATA_DIR/multiverse.db
LOG_DIR=$LOG_DIR
LOG_LEVEL=INFO
HEALTH_CHECK_INTERVAL_SECONDS=60
ENV
  [ "${SKIP_USER:-0}" = 1 ] || chgrp "$SERVICE_USER" "$ENV_FILE"
  say "a new admin key is in $ENV_FILE (ADMIN_API_KEY)"
fi

say "systemd units"
for unit in "$PREFIX"/deploy/systemd/*; do
  sed -e "s#/opt/multiverse#$PREFIX#g" -e "s#/etc/multiverse#$ETC_DIR#g" \
      -e "s#/var/lib/multiverse#$DATA_DIR#g" -e "s#/var/log/multiverse#$LOG_DIR#g" \
      -e "s#^User=multiverse#User=$SERVICE_USER#" -e "s#^Group=multiverse#Group=$SERVICE_USER#" \
      "$unit" > "$SYSTEMD_DIR/$(basename "$unit")"
done
install -d "$LOGROTATE_DIR"
sed "s#/var/log/multiverse#$LOG_DIR#g" "$PREFIX/deploy/logrotate/multiverse" \
  > "$LOGROTATE_DIR/multiverse"

say "starting"
"$SYSTEMCTL" daemon-reload
"$SYSTEMCTL" enable --now multiverse-gateway.socket
"$SYSTEMCTL" enable --now multiverse-migrate.service multiverse-healthd.service \
  multiverse-gateway.service
say "done: the gateway listens on 127.0.0.1:8000; put nginx or Caddy in front of it"
