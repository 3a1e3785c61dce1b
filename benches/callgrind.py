#!/usr/bin/env python3
"""Instructions per proxied request, counted by callgrind.

    python3 benches/callgrind.py                     # build release, N=20000
    python3 benches/callgrind.py --binary PATH       # measure another build
    python3 benches/callgrind.py -n 50000 --repeat 3
    python3 benches/callgrind.py --keep DIR       # keep the outputs for callgrind_annotate

The machine is shared and noisy; an instruction count is not. This runs an
nginx origin answering a tiny "ok" on loopback, and cutover (one worker,
kept-alive upstream connections, no health checks) under
`valgrind --tool=callgrind`, twice:

- idle: cutover starts, its listener answers a TCP connect, and it is
  stopped with SIGTERM (start-up, the control thread and the drain);
- loaded: the same, with exactly N tiny GETs in between, sent by the client
  below over 8 kept-alive connections (N/8 each, one at a time per
  connection, each answer read whole before the next request).

It prints (loaded Ir - idle Ir) / N: the instructions the whole process
(every thread) spends per proxied request, connection set-up included
(8 connections, amortized over N). With `--repeat`, each count is the
median of that many runs. nginx is installed with apt-get when missing.

Every process it starts is killed on exit. It is not part of the test suite.
"""

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 8
CHILDREN = []

NGINX_CONF = """
worker_processes 1;
error_log {dir}/origin-error.log warn;
pid {dir}/origin.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp-body;
    proxy_temp_path {dir}/tmp-proxy;
    fastcgi_temp_path {dir}/tmp-fastcgi;
    uwsgi_temp_path {dir}/tmp-uwsgi;
    scgi_temp_path {dir}/tmp-scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""

CUTOVER_CONF = """
[server]
listen = "127.0.0.1:{port}"
workers = 1

[server.limits]
idle_timeout = "300s"

[admin]
socket = "{dir}/cutover.sock"

[state]
path = "{dir}/cutover-state.json"

[[route]]
path_prefix = "/"
service = "bench"

[service.bench]
active = "blue"

[service.bench.pools.blue]
servers = ["127.0.0.1:{origin}"]

[service.bench.pools.green]
servers = ["127.0.0.1:{origin}"]
"""

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: callgrind-bench\r\n\r\n"


def log(msg):
    print(f"[callgrind] {msg}", file=sys.stderr, flush=True)


def kill_all():
    for proc in CHILDREN:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def spawn(args, out):
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    CHILDREN.append(proc)
    return proc


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, bound=120.0):
    end = time.monotonic() + bound
    while time.monotonic() < end:
        if proc.poll() is not None:
            sys.exit(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listened on {port} within {bound}s")


def ensure_nginx():
    if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
        return shutil.which("nginx") or "/usr/sbin/nginx"
    log("installing nginx")
    subprocess.run(["apt-get", "install", "-y", "nginx"], check=True, stdout=subprocess.DEVNULL)
    return shutil.which("nginx") or "/usr/sbin/nginx"


async def one_connection(port, count):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for _ in range(count):
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise RuntimeError(f"status {status!r}: {head!r}")
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        if length is None:
            raise RuntimeError(f"no content-length: {head!r}")
        await reader.readexactly(int(length.group(1)))
    writer.close()
    await writer.wait_closed()


async def load(port, n):
    per = n // CONNECTIONS
    await asyncio.gather(*(one_connection(port, per) for _ in range(CONNECTIONS)))


def total_ir(path):
    text = Path(path).read_text()
    for key in ("totals", "summary"):
        m = re.search(rf"^{key}: (\d+)", text, re.M)
        if m:
            return int(m.group(1))
    sys.exit(f"no totals in {path}")


def run_once(binary, origin, workdir, n, tag):
    port = free_port()
    conf = workdir / f"cutover-{tag}.toml"
    run_dir = workdir / tag
    run_dir.mkdir(exist_ok=True)
    conf.write_text(CUTOVER_CONF.format(port=port, dir=run_dir, origin=origin))
    out = workdir / f"callgrind-{tag}.out"
    logf = open(workdir / f"cutover-{tag}.log", "w")
    proc = spawn(
        [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={out}",
            "--dump-instr=no",
            str(binary),
            "run",
            "-c",
            str(conf),
        ],
        logf,
    )
    wait_port(port, proc)
    if n:
        asyncio.run(load(port, n))
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        sys.exit("cutover did not stop within 120 s of SIGTERM")
    return total_ir(out)


def build():
    log("cargo build --release")
    subprocess.run(["cargo", "build", "--release", "--bin", "cutover"], cwd=ROOT, check=True)
    return ROOT / "target" / "release" / "cutover"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", help="cutover binary to measure (default: build release)")
    ap.add_argument("-n", type=int, default=20000, help="requests (a multiple of 8)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per count; the median is kept")
    ap.add_argument("--keep", help="copy callgrind's output files here (for callgrind_annotate)")
    args = ap.parse_args()
    if args.n % CONNECTIONS:
        sys.exit(f"-n must be a multiple of {CONNECTIONS}")
    if not shutil.which("valgrind"):
        sys.exit("valgrind is missing: apt-get install -y valgrind")
    binary = Path(args.binary) if args.binary else build()
    nginx = ensure_nginx()
    with tempfile.TemporaryDirectory(prefix="callgrind-bench-") as tmp:
        workdir = Path(tmp)
        origin = free_port()
        (workdir / "origin.conf").write_text(NGINX_CONF.format(dir=workdir, port=origin))
        ngx = spawn(
            [nginx, "-c", str(workdir / "origin.conf"), "-p", str(workdir), "-g", "daemon off;"],
            subprocess.DEVNULL,
        )
        wait_port(origin, ngx)
        idle, loaded = [], []
        for i in range(args.repeat):
            idle.append(run_once(binary, origin, workdir, 0, f"idle{i}"))
            loaded.append(run_once(binary, origin, workdir, args.n, f"loaded{i}"))
            log(f"run {i + 1}: idle {idle[-1]:,} Ir, loaded {loaded[-1]:,} Ir")
        if args.keep:
            Path(args.keep).mkdir(parents=True, exist_ok=True)
            for out in workdir.glob("callgrind-*.out"):
                shutil.copy(out, args.keep)
        per = (statistics.median(loaded) - statistics.median(idle)) / args.n
        print(f"binary: {binary}")
        print(f"requests: {args.n} over {CONNECTIONS} connections, runs: {args.repeat}")
        print(f"idle Ir: {statistics.median(idle):,.0f}")
        print(f"loaded Ir: {statistics.median(loaded):,.0f}")
        print(f"Ir per request: {per:,.0f}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        main()
    finally:
        kill_all()
