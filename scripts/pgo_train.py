#!/usr/bin/env python3
"""The training load of cutover's profile-optimized build, and the process
helpers it shares with benches/e2e.py.

    python3 scripts/pgo_train.py BINARY [--proxy-cpu N] [--load-cpu N]

BINARY is cutover built with `-Cprofile-generate=DIR`; it proxies the load
below for about 40 s, stops on SIGINT and writes its profile into DIR at
exit. scripts/release.sh runs this between the instrumented and the
optimized build.

The load (see `train`): two nginx origins on loopback; GETs at full load
(64 connections) and paced (about 5,000 req/s), POSTs with a JSON body,
HTTPS, HTTP/2 with and without TLS (h2load), a switcher asking for
blue/green switches through the admin API, admin reads, and health checks
every 100 ms. It needs nginx, wrk, h2load (nghttp2-client), openssl and
taskset. Every process it starts is in its own process group and is killed
on exit, on Ctrl-C and on errors.
"""

import argparse
import atexit
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The tag of log lines; benches/e2e.py sets its own.
LOG_PREFIX = "pgo"

CHILDREN = []


def log(msg):
    print(f"[{LOG_PREFIX}] {msg}", file=sys.stderr, flush=True)


def fail(msg):
    log(f"error: {msg}")
    sys.exit(1)


def spawn(args, cpu, name, workdir, stdin=None):
    """Starts `args` pinned to `cpu`, in its own process group."""
    out = open(workdir / f"{name}.log", "wb")
    proc = subprocess.Popen(
        ["taskset", "-c", str(cpu), *args],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        start_new_session=True,
    )
    proc.bench_name = name
    CHILDREN.append(proc)
    return proc


def kill_all():
    for proc in CHILDREN:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for proc in CHILDREN:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    CHILDREN.clear()


def on_signal(signum, _frame):
    kill_all()
    sys.exit(128 + signum)


def wait_port(port, proc, timeout=15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"{proc.bench_name} exited with {proc.returncode}; see its log")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    fail(f"{proc.bench_name} did not listen on 127.0.0.1:{port} within {timeout}s")


def apt_get(*args):
    """Runs apt-get (through sudo unless root); true when it succeeded."""
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    return subprocess.run([*sudo, "apt-get", *args], env=env).returncode == 0


def find(tool):
    return shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/sbin/{tool}") if os.access(p, os.X_OK)),
        None,
    )


def rustc(*args):
    return subprocess.run(["rustc", *args], capture_output=True, text=True, check=True).stdout


def find_llvm_profdata(no_install):
    """An llvm-profdata that reads the profiles rustc's LLVM writes: the
    rustup component's, or Debian's llvm-N of the same major version
    (installed with apt-get when missing and allowed)."""
    version = dict(
        line.split(": ", 1) for line in rustc("-vV").splitlines() if ": " in line
    )
    major = version.get("LLVM version", "").split(".")[0]
    if not major.isdigit():
        return None
    sysroot = rustc("--print", "sysroot").strip()
    host = version.get("host", "")
    candidates = [
        Path(sysroot) / "lib" / "rustlib" / host / "bin" / "llvm-profdata",
        Path(f"/usr/lib/llvm-{major}/bin/llvm-profdata"),
    ]

    def found():
        return next((str(c) for c in candidates if os.access(c, os.X_OK)), None)

    if found() or no_install:
        return found()
    log(f"installing llvm-{major} with apt-get (llvm-profdata, for the PGO build)")
    if not apt_get("install", "-y", "-q", f"llvm-{major}"):
        log(f"apt-get could not install llvm-{major}")
    return found()


# A POST with a small JSON body, for the training load.
POST_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"m","messages":[{"role":"user","content":"' .. string.rep("x", 900) .. '"}]}'
"""


def train(args, binary, workdir):
    """The training load of the PGO build: the instrumented cutover proxies
    for origins of its own, as in the measured runs, plus POSTs with a
    body, HTTPS, HTTP/2 (h2c and over TLS), admin calls (status, metrics,
    switches) and health checks; then it stops on SIGINT and writes its
    profile at exit. A path left out of the training is laid out as cold
    code: trained on HTTP/1.1 alone, HTTP/2 cost about 15% more CPU than in
    the plain build."""
    tdir = workdir / "pgo"
    tdir.mkdir()
    o1, o2, port, admin, tls = free_ports(5)
    origins = []
    for name, p in (("pgo-origin1", o1), ("pgo-origin2", o2)):
        origins.append(start_nginx(name, ORIGIN_BODY, args.load_cpu, tdir, port=p))
        wait_port(p, origins[-1])
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(tdir / "key.pem"), "-out", str(tdir / "cert.pem")],
        check=True,
        capture_output=True,
    )
    cfg = tdir / "cutover.toml"
    text = CUTOVER_CFG.format(port=port, admin=admin, dir=tdir, o1=o1, o2=o2)
    text = text.replace('interval = "2s"', 'interval = "100ms"').replace(
        "[server.limits]",
        f'[server.tls]\nlisten = "127.0.0.1:{tls}"\ncert = "{tdir}/cert.pem"\n'
        f'key = "{tdir}/key.pem"\n\n[server.limits]',
    )
    cfg.write_text(text)
    proc = spawn([str(binary), "run", "-c", str(cfg)], args.proxy_cpu, "cutover-pgo", tdir)
    wait_port(port, proc)
    wait_port(tls, proc)
    url = f"http://127.0.0.1:{port}/"
    log("training the instrumented build (about 40 s)")
    post = tdir / "post.lua"
    post.write_text(POST_LUA)
    paced = paced_script(tdir)
    switcher = spawn(
        [sys.executable, "-c", SWITCHER, str(admin), "40", "0.25", "switch"],
        args.load_cpu,
        "pgo-switcher",
        tdir,
    )
    wait_ready(switcher, tdir / "pgo-switcher.log")
    wrk(args, url, args.conns, 8)
    wrk(args, url, 50, 4, paced)
    wrk(args, url, 16, 4, post)
    wrk(args, f"https://127.0.0.1:{tls}/", 16, 4)
    for h2_url in (url, f"https://127.0.0.1:{tls}/"):
        done = subprocess.run(
            ["taskset", "-c", str(args.load_cpu), "h2load", "-c4", "-m16", "-D4", h2_url],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode != 0 or not re.search(r"\b0 failed", done.stdout):
            fail(f"h2load against {h2_url} failed:\n{done.stdout}{done.stderr}")
    switcher.wait(timeout=60)
    for path in ("/metrics", "/api/v1/status", "/api/v1/services/bench", "/api/v1/events"):
        get(admin, path, host="admin")
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        fail("the instrumented cutover did not stop within 30 s of SIGINT")
    if proc.returncode != 0:
        fail(f"the instrumented cutover exited with {proc.returncode}; see {tdir}")
    for origin in origins:
        os.killpg(origin.pid, signal.SIGKILL)
        origin.wait(timeout=5)


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


NGINX_COMMON = """
worker_processes 1;
worker_rlimit_nofile 19000;
error_log {dir}/{name}-error.log warn;
pid {dir}/{name}.pid;
events {{ worker_connections 9000; }}
http {{
    access_log off;
    client_body_temp_path {dir}/{name}-tmp-body;
    proxy_temp_path {dir}/{name}-tmp-proxy;
    fastcgi_temp_path {dir}/{name}-tmp-fastcgi;
    uwsgi_temp_path {dir}/{name}-tmp-uwsgi;
    scgi_temp_path {dir}/{name}-tmp-scgi;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
{body}
}}
"""


ORIGIN_BODY = """
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ return 200 "ok\\n"; }}
    }}
"""


CUTOVER_CFG = """
[server]
listen = "127.0.0.1:{port}"
workers = 1

[server.limits]
idle_timeout = "300s"
max_connections = 40000

[admin]
listen = "127.0.0.1:{admin}"
socket = "{dir}/cutover.sock"

[state]
path = "{dir}/cutover-state.json"

[[route]]
path_prefix = "/"
service = "bench"

[service.bench]
active = "blue"
drain_timeout = "5s"

[service.bench.health]
path = "/"
interval = "2s"
timeout = "1s"
healthy_threshold = 1
unhealthy_threshold = 3

[service.bench.pools.blue]
servers = ["127.0.0.1:{o1}", "127.0.0.1:{o2}"]

[service.bench.pools.green]
servers = ["127.0.0.1:{o1}", "127.0.0.1:{o2}"]
"""


def start_nginx(name, body, cpu, workdir, **fmt):
    conf = workdir / f"{name}.conf"
    conf.write_text(NGINX_COMMON.format(dir=workdir, name=name, body=body.format(**fmt)))
    return spawn(
        [find("nginx"), "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"],
        cpu,
        name,
        workdir,
    )


def get(port, path="/", host="bench"):
    """One GET on a connection of its own, closed after it: the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


UNITS = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def parse_latency(text, pct):
    m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        fail(f"no {pct}% latency in wrk output:\n{text}")
    return float(m.group(1)) * UNITS[m.group(2)]


def wrk(args, url, conns, seconds, script=None):
    cmd = [
        "taskset", "-c", str(args.load_cpu),
        "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
    ]
    if script:
        cmd += ["-s", str(script)]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    text = out.stdout
    if out.returncode != 0:
        fail(f"wrk failed: {out.stderr}{text}")
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not m or not rps:
        fail(f"unexpected wrk output:\n{text}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    bad = int(errors.group(1)) if errors else 0
    if sock:
        bad += sum(int(x) for x in sock.groups()[:3])
    return {
        "requests": int(m.group(1)),
        "rps": float(rps.group(1)),
        "p50": parse_latency(text, 50),
        "p99": parse_latency(text, 99),
        "errors": bad,
    }


# Each connection of a paced run waits this long between requests.
PACED_DELAY_MS = 10


def paced_script(directory):
    """The wrk script of a paced run, written in `directory`."""
    path = directory / "paced.lua"
    path.write_text(f"function delay()\n  return {PACED_DELAY_MS}\nend\n")
    return path


SWITCHER = r"""
import json, socket, sys, time
port, n, interval, mode = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
# A bare HTTP/1.1 client on one kept-alive connection, its requests encoded
# up front: the switcher shares the load CPU, so the less it costs there, the
# more the runs measure the proxy rather than the switcher.
sock = socket.create_connection(("127.0.0.1", port), timeout=10)
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def call(request):
    sock.sendall(request)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            sys.exit("admin API closed the connection")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            sys.exit("admin API closed the connection")
        body += chunk
    return int(lines[0].split()[1]), body
status, body = call(b"GET /api/v1/services/bench HTTP/1.1\r\nHost: admin\r\n\r\n")
active = json.loads(body)["active"]
other = "green" if active == "blue" else "blue"
def switch_to(pool):
    body = json.dumps({"to": pool}).encode()
    return (b"POST /api/v1/services/bench/switch HTTP/1.1\r\nHost: admin\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
requests = {pool: switch_to(pool) for pool in (active, other)}
# Started and connected: the load starts now, and the first switch comes
# one interval into it.
print("ready", flush=True)
ok = 0
for i in range(n):
    time.sleep(interval)
    # "noop" asks for the pool already active: the same request, answered
    # the same way, with nothing switched.
    to = active if mode == "noop" else (other if i % 2 == 0 else active)
    status, _ = call(requests[to])
    ok += status == 200
print(f"switched {ok}", flush=True)
"""


def wait_ready(proc, log_path, bound=30.0):
    """Waits until `proc` wrote "ready" to its log."""
    deadline = time.monotonic() + bound
    while b"ready" not in log_path.read_bytes():
        if proc.poll() is not None:
            sys.exit(f"{proc.bench_name} exited early: {log_path.read_text()}")
        if time.monotonic() > deadline:
            sys.exit(f"{proc.bench_name} not ready within {bound:.0f} s")
        time.sleep(0.01)


TOOLS = ("nginx", "wrk", "h2load", "openssl", "taskset")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("binary", help="cutover built with -Cprofile-generate")
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--conns", type=int, default=64)
    args = ap.parse_args()
    if (os.cpu_count() or 1) < 2:
        args.proxy_cpu = args.load_cpu = 0
    missing = [t for t in TOOLS if not find(t)]
    if missing:
        fail(f"missing: {', '.join(missing)} (apt-get install nginx wrk nghttp2-client openssl)")
    binary = Path(args.binary).resolve()
    if not os.access(binary, os.X_OK):
        fail(f"{binary} is not an executable (expected the instrumented cutover)")
    atexit.register(kill_all)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    workdir = Path(tempfile.mkdtemp(prefix="cutover-pgo-"))
    try:
        train(args, binary, workdir)
    finally:
        kill_all()
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
