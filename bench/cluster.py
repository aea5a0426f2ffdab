"""1, 2 and 3 gateway instances on PostgreSQL (+ Redis) behind nginx, on this machine.

    python -m bench.cluster [--rounds 3] [--seconds 5] [--connections 64]

Each instance is a `gateway` process (one worker) on one PostgreSQL database
(a fresh one, dropped at the end; BENCH_POSTGRES_URL names the server) and
Redis (BENCH_REDIS_URL, keys under a prefix of the run's own, removed at the
end); nginx spreads wrk's requests over them (least_conn, keep-alive). For
each count: requests/s and p99 (the median of the rounds), and the CPU time
per request of the gateway instances together and of nginx, read from /proc.

On a 2-core machine that also runs wrk, nginx and the backend, the total
cannot grow with the instances: the CPU µs per request is the figure that
tells what more cores would give (requests/s per core = 1e6 / µs).
Everything runs on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from sqlalchemy import create_engine, make_url, text

from bench.ab import cpu_seconds
from bench.run import (
    ADMIN_KEY,
    REQUEST,
    WRK_SCRIPT,
    free_port,
    register_bench_backend,
    start,
    stop,
    wait_http,
    wrk,
)

BIN = Path(sys.executable).parent
POSTGRES = os.environ.get(
    "BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

NGINX_CONF = """
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    upstream cluster {{
        least_conn;
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://cluster;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_next_upstream error timeout;
        }}
    }}
}}
"""


def make_database() -> tuple[str, str]:
    """A new database on the bench's PostgreSQL server: (name, URL)."""
    name = f"bench_cluster_{os.getpid()}"
    engine = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        connection.execute(text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return name, make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)


def drop_database(name: str) -> None:
    engine = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    engine.dispose()


def environment(folder: Path, port: int, database_url: str, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": REDIS,
        "REDIS_KEY_PREFIX": prefix,
        "ADMIN_API_KEY": ADMIN_KEY,
        "ALLOW_PRIVATE_BACKENDS": "true",
        "RATE_LIMIT_PER_MINUTE": "0",
        "LOG_DIR": str(folder / "logs"),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WORKERS": "1",
        "HEALTH_CHECK_INTERVAL_SECONDS": "60",
    }


def start_nginx(folder: Path, gateway_ports: list[int]) -> tuple[subprocess.Popen[bytes], int]:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    port = free_port()
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=0;" for p in gateway_ports)
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(folder=folder, servers=servers, port=port))
    process = start(
        [nginx, "-p", str(folder), "-c", str(conf)], {**os.environ}, folder / "nginx.out"
    )
    wait_http(f"http://127.0.0.1:{port}/health")
    return process, port


def family_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its children (nginx's master and its worker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return cpu_seconds(pid) + sum(cpu_seconds(int(child)) for child in children)


def forget_redis_keys(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS)
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--instances", default="1,2,3")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    arguments = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="gateway-cluster-"))
    script = workdir / "post.lua"
    script.write_text(WRK_SCRIPT)
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    name, database_url = make_database()
    backend_port = free_port()
    processes: list[subprocess.Popen[bytes]] = []
    rows = []
    try:
        subprocess.run(
            [str(BIN / "gateway-admin"), "db", "upgrade"],
            env=environment(workdir, 8000, database_url, prefix),
            check=True,
        )
        processes.append(
            start(
                [sys.executable, "-m", "bench.backend", "--port", str(backend_port)],
                {**os.environ},
                workdir / "backend.log",
            )
        )
        registered = False
        for count in (int(n) for n in arguments.instances.split(",")):
            folder = workdir / f"n{count}"
            folder.mkdir()
            gateways: list[tuple[int, subprocess.Popen[bytes]]] = []
            for n in range(count):
                port = free_port()
                instance = folder / f"gateway-{n}"
                instance.mkdir()
                env = environment(instance, port, database_url, prefix)
                gateways.append((port, start([str(BIN / "gateway")], env, instance / "out.log")))
                wait_http(f"http://127.0.0.1:{port}/health")
            if not registered:
                register_bench_backend(gateways[0][0], backend_port)
                registered = True
            nginx, nginx_port = start_nginx(folder, [port for port, _ in gateways])
            url = f"http://127.0.0.1:{nginx_port}/v1/chat/completions"
            deadline = time.monotonic() + 10
            while httpx.post(url, content=REQUEST).status_code != 200:
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster never routed to the bench backend")
                time.sleep(0.1)
            wrk(url, arguments.connections, 2, script)  # warm-up
            rates, p99s, gateway_us, nginx_us, errors = [], [], [], [], 0
            for _ in range(arguments.rounds):
                pids = [process.pid for _, process in gateways]
                before = [cpu_seconds(pid) for pid in pids]
                nginx_before = family_cpu_seconds(nginx.pid)
                result = wrk(url, arguments.connections, arguments.seconds, script)
                requests = result.requests_per_second * arguments.seconds
                used = sum(cpu_seconds(pid) - b for pid, b in zip(pids, before, strict=True))
                rates.append(result.requests_per_second)
                p99s.append(result.p99_ms)
                gateway_us.append(used / requests * 1e6)
                nginx_us.append((family_cpu_seconds(nginx.pid) - nginx_before) / requests * 1e6)
                errors += result.errors
            rows.append(
                (
                    count,
                    statistics.median(rates),
                    statistics.median(p99s),
                    statistics.median(gateway_us),
                    statistics.median(nginx_us),
                    errors,
                )
            )
            stop(nginx)
            for _, process in gateways:
                stop(process)
        print(
            f"{arguments.rounds} rounds of {arguments.seconds} s, {arguments.connections} "
            "connections through nginx; PostgreSQL + Redis; medians"
        )
        print(
            "| instances | requests/s | p99 ms | gateway CPU µs/request | nginx CPU µs/request "
            "| errors |"
        )
        print("|---|---|---|---|---|---|")
        for count, rate, p99, gw, ngx, errs in rows:
            print(f"| {count} | {rate:,.0f} | {p99:.2f} | {gw:.0f} | {ngx:.0f} | {errs} |")
    finally:
        for process in reversed(processes):
            stop(process)
        forget_redis_keys(prefix)
        drop_database(name)


if __name__ == "__main__":
    main()
