"""The reverse-proxy files pass their server's own checks (Debian 12's packages,
the system deploy/README.md creates).

nginx: `nginx -t` in both states gce-setup.sh goes through, the plain-HTTP
site alone (while certbot fetches the certificate through it) and both sites
with the certificate in place (here a throwaway one from trustme). Caddy:
`caddy adapt`. Nothing listens, nothing is fetched.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import trustme

from tests.support import REPO

DEPLOY = REPO / "deploy"
LIVE = "/etc/letsencrypt/live/gateway.example.org"


def nginx_test(tmp_path: Path, sites: list[str]) -> subprocess.CompletedProcess[str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).exists(), "nginx is missing (make test installs Debian's nginx-light)"
    cert = trustme.CA().issue_cert("gateway.example.org")
    (tmp_path / "fullchain.pem").write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(tmp_path / "privkey.pem"))
    included = []
    (tmp_path / "sites").mkdir()
    for site in sites:
        text = (DEPLOY / site).read_text().replace(LIVE, str(tmp_path))
        text = text.replace("/var/log/nginx/", f"{tmp_path}/")
        (tmp_path / "sites" / Path(site).name).write_text(text)
        included.append(f"include {tmp_path / 'sites' / Path(site).name};")
    temp = "\n".join(
        f"{kind}_temp_path {tmp_path}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp_path / "main.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\naccess_log {tmp_path}/access.log;\n{temp}\n" + "\n".join(included) + "\n}\n"
    )
    return subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "main.conf")],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    "sites",
    [
        ["nginx-http.conf"],
        ["nginx-http.conf", "nginx.conf"],
        ["nginx-http.conf", "cluster/nginx-cluster.conf"],
    ],
    ids=["before the certificate", "with the certificate", "several instances"],
)
def test_nginx_accepts_the_sites(tmp_path: Path, sites: list[str]) -> None:
    checked = nginx_test(tmp_path, sites)
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


def handlers(config: object, name: str) -> list[dict[str, object]]:
    """Every handler called `name` anywhere in Caddy's JSON configuration."""
    found: list[dict[str, object]] = []
    if isinstance(config, dict):
        if config.get("handler") == name:
            found.append(config)
        for value in config.values():
            found += handlers(value, name)
    elif isinstance(config, list):
        for value in config:
            found += handlers(value, name)
    return found


def test_caddy_adapts_the_caddyfile(tmp_path: Path) -> None:
    """Debian 12's Caddy (2.6) turns the Caddyfile into its JSON configuration: no
    certificates, listeners or network, just the parser and every directive's checks."""
    caddy = shutil.which("caddy") or "/usr/bin/caddy"
    assert Path(caddy).exists(), "caddy is missing (make test installs Debian's caddy)"
    adapted = subprocess.run(
        [caddy, "adapt", "--config", str(DEPLOY / "Caddyfile"), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert adapted.returncode == 0, adapted.stderr
    assert "not formatted" not in adapted.stderr  # `caddy fmt` leaves it as it is
    config = json.loads(adapted.stdout)
    (encode,) = handlers(config, "encode")
    types = encode["match"]["headers"]["Content-Type"]  # type: ignore[index]
    assert not any(t.startswith(("text/event-stream", "text/*")) for t in types)
    (proxy,) = handlers(config, "reverse_proxy")
    assert proxy["flush_interval"] == -1  # stream chunks go out at once
