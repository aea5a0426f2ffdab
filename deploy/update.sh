#!/usr/bin/env bash
# Update to REF (default: origin/main) without dropping requests: back up,
# check out, install, migrate, restart healthd, then the gateway (its socket
# stays open in systemd, so connections queue), and check /health. On any
# failure: back to the previous commit and the backed-up database.
set -Eeuo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=deploy/common.sh
. "$here/common.sh"
REF=${1:-origin/main}
HEALTH_URL=${HEALTH_URL:-http://127.0.0.1:$(env_value PORT)/health}

cd "$PREFIX"
previous=$(git rev-parse HEAD)
database=$(database_path)

say "backup first"
"$here/backup.sh"
latest_backup=$(find "$BACKUP_DIR" -maxdepth 1 -name 'multiverse-*.db.gz' -printf '%f\n' \
  | sort -r | head -n 1)

restart_all() {
  "$SYSTEMCTL" restart multiverse-migrate.service
  "$SYSTEMCTL" restart multiverse-healthd.service
  "$SYSTEMCTL" restart multiverse-gateway.service
}

healthy() {
  "$VENV/bin/python" - "$HEALTH_URL" <<'PY'
import sys
import time

import httpx

deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        if httpx.get(sys.argv[1], timeout=2).status_code == 200:
            sys.exit(0)
    except httpx.HTTPError:
        pass
    time.sleep(0.5)
sys.exit(1)
PY
}

rollback() {
  say "update failed: rolling back to $previous"
  "$SYSTEMCTL" stop multiverse-gateway.service multiverse-healthd.service || true
  git checkout --quiet --detach "$previous"
  [ "${SKIP_INSTALL:-0}" = 1 ] || "$VENV/bin/python" -m pip install --quiet -e "$PREFIX"
  gunzip -c "$BACKUP_DIR/$latest_backup" > "$database.restore"
  rm -f "$database-wal" "$database-shm"
  mv "$database.restore" "$database"
  # The restored database already fits the old code: no migration to run.
  "$SYSTEMCTL" restart multiverse-healthd.service
  "$SYSTEMCTL" restart multiverse-gateway.service
  fail "rolled back to $previous; the database was restored from $latest_backup"
}
trap rollback ERR

if git remote get-url origin >/dev/null 2>&1; then
  say "fetching"
  git fetch --quiet origin
fi
say "checking out $REF"
git checkout --quiet --detach "$REF"
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  say "installing"
  "$VENV/bin/python" -m pip install --quiet -e "$PREFIX"
fi
say "migrating and restarting"
restart_all
say "checking $HEALTH_URL"
healthy
trap - ERR
say "updated $previous -> $(git rev-parse HEAD)"
