# shellcheck shell=bash
# Paths and tools shared by the deploy scripts. Every one can be overridden
# from the environment (the tests run the scripts against a temporary folder).
PREFIX=${PREFIX:-/opt/multiverse}
ETC_DIR=${ETC_DIR:-/etc/multiverse}
DATA_DIR=${DATA_DIR:-/var/lib/multiverse}
LOG_DIR=${LOG_DIR:-/var/log/multiverse}
BACKUP_DIR=${BACKUP_DIR:-/var/backups/multiverse}
SYSTEMD_DIR=${SYSTEMD_DIR:-/etc/systemd/system}
LOGROTATE_DIR=${LOGROTATE_DIR:-/etc/logrotate.d}
SERVICE_USER=${SERVICE_USER:-multiverse}
SYSTEMCTL=${SYSTEMCTL:-systemctl}
VENV=${VENV:-$PREFIX/.venv}
ENV_FILE=${ENV_FILE:-$ETC_DIR/gateway.env}

say() { printf '==> %s\n' "$*"; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

# The value of KEY in the env file (empty if absent).
env_value() {
  sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1
}

# The SQLite file behind DATABASE_URL (sqlite:///relative or sqlite:////absolute).
database_path() {
  local url
  url=$(env_value DATABASE_URL)
  case "$url" in
    sqlite:///*) printf '%s\n' "${url#sqlite:///}" ;;
    *) fail "DATABASE_URL in $ENV_FILE is not an SQLite URL: backups need one" ;;
  esac
}
