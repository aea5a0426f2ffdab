"""The nginx site files pass `nginx -t` (Debian 12's nginx, as deploy/README.md installs).

Both states gce-setup.sh goes through are checked: the plain-HTTP site alone
(while certbot fetches the certificate through it) and both sites with the
certificate in place (here a throwaway one from trustme). Only `nginx -t`
runs: nothing listens, nothing is fetched.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import trustme

from tests.support import REPO

DEPLOY = REPO / "deploy"
LIVE = "/etc/letsencrypt/live/gateway.example.edu"


def nginx_test(tmp_path: Path, sites: list[str]) -> subprocess.CompletedProcess[str]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert Path(nginx).exists(), "nginx is missing (make test installs Debian's nginx-light)"
    cert = trustme.CA().issue_cert("gateway.example.edu")
    (tmp_path / "fullchain.pem").write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(tmp_path / "privkey.pem"))
    included = []
    (tmp_path / "sites").mkdir()
    for site in sites:
        text = (DEPLOY / site).read_text().replace(LIVE, str(tmp_path))
        text = text.replace("/var/log/nginx/", f"{tmp_path}/")
        (tmp_path / "sites" / site).write_text(text)
        included.append(f"include {tmp_path / 'sites' / site};")
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
    [["nginx-http.conf"], ["nginx-http.conf", "nginx.conf"]],
    ids=["before the certificate", "with the certificate"],
)
def test_nginx_accepts_the_sites(tmp_path: Path, sites: list[str]) -> None:
    checked = nginx_test(tmp_path, sites)
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr
