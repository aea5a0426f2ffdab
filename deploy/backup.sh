#!/usr/bin/env bash
# A consistent copy of the SQLite database, taken with SQLite's online backup
# API while gateway and healthd keep writing (WAL is fine), checked with
# PRAGMA integrity_check, compressed, and rotated (KEEP newest, default 14).
# Cron: 0 2 * * * /opt/multiverse/deploy/backup.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=deploy/common.sh
. "$here/common.sh"
KEEP=${KEEP:-14}
PYTHON=${PYTHON:-$VENV/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3

database=$(database_path)
[ -f "$database" ] || fail "no database at $database"
install -d -m 0750 "$BACKUP_DIR"
target="$BACKUP_DIR/multiverse-$(date -u +%Y%m%dT%H%M%SZ).db"

"$PYTHON" - "$database" "$target" <<'PY'
import sqlite3
import sys

source, target = sys.argv[1], sys.argv[2]
with sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30) as src:
    src.execute("PRAGMA busy_timeout = 30000")
    dst = sqlite3.connect(target)
    src.backup(dst, pages=1024)  # in steps, so writers are never blocked for long
    verdict = dst.execute("PRAGMA integrity_check").fetchone()[0]
    dst.close()
if verdict != "ok":
    sys.exit(f"integrity check of {target} failed: {verdict}")
PY

gzip -f "$target"
say "backup written: $target.gz"

# Rotation: keep the newest $KEEP backups.
find "$BACKUP_DIR" -maxdepth 1 -name 'multiverse-*.db.gz' -printf '%f\n' | sort -r \
  | tail -n +"$((KEEP + 1))" | while read -r old; do rm -f -- "$BACKUP_DIR/$old"; done
