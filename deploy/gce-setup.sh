#!/usr/bin/env bash
# First-time setup of a Google Compute Engine VM (Debian 12 or Ubuntu 22.04/24.04,
# e2-micro or e2-small): packages, firewall, automatic security updates, the
# gateway itself, and nginx in front of it. Run as root from a checkout:
#   sudo DOMAIN=gateway.example.org bash deploy/gce-setup.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
DOMAIN=${DOMAIN:-}

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q python3 python3-venv git nginx certbot \
  sqlite3 ufw unattended-upgrades logrotate

# Firewall: SSH and the web, nothing else (the gateway listens on loopback).
ufw allow OpenSSH
ufw allow 'Nginx Full'
ufw --force enable

# Security updates install themselves.
dpkg-reconfigure -f noninteractive unattended-upgrades

bash "$here/install.sh"

site() {  # site NAME FILE: install deploy/FILE for $DOMAIN and enable it
  sed "s/gateway.example.org/$DOMAIN/g" "$here/$2" > "/etc/nginx/sites-available/$1"
  ln -sf "/etc/nginx/sites-available/$1" "/etc/nginx/sites-enabled/$1"
}

if [ -n "$DOMAIN" ]; then
  # Port 80 first, alone: the HTTPS site cannot load before its certificate exists.
  rm -f /etc/nginx/sites-enabled/default
  mkdir -p /var/www/html
  site multiverse-http nginx-http.conf
  nginx -t
  systemctl reload nginx
  certbot certonly --webroot -w /var/www/html --non-interactive --agree-tos \
    --register-unsafely-without-email -d "$DOMAIN" --deploy-hook "systemctl reload nginx"
  site multiverse nginx.conf
  nginx -t
  systemctl reload nginx
fi

# Nightly backups.
echo "0 2 * * * root /opt/multiverse/deploy/backup.sh" > /etc/cron.d/multiverse-backup
echo "done. Admin key: grep ADMIN_API_KEY /etc/multiverse/gateway.env"
