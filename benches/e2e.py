#!/usr/bin/env python3
"""End-to-end load benchmark: cutover, nginx and HAProxy on one core each.

    python3 benches/e2e.py            # the full run (about 20 minutes)
    python3 benches/e2e.py --quick    # one short round, to try the setup
    python3 benches/e2e.py --no-pgo   # the plain release build instead
    python3 benches/e2e.py --build-only  # only build the binary it measures
    python3 benches/e2e.py --only cutover --binary PATH  # measure a given build alone

What it does, in one run on this machine:

- checks for nginx, haproxy, wrk, h2load and openssl (installs them with
  apt-get when missing and it may);
- builds cutover with profile-guided optimization, as a release would ship
  it: an instrumented build (target/pgo-gen) proxies a training load for
  about 40 s (see `train`: GETs at full load and paced, POSTs with a JSON
  body, HTTPS, HTTP/2 with and without TLS, switches, admin calls and
  health checks, against origins of its own), and the release build is
  made again with the profile it wrote
  (target/pgo-use). That needs the llvm-profdata of rustc's LLVM version:
  the rustup component llvm-tools, or Debian's llvm-N (installed with
  apt-get when missing and it may). Without one, or with --no-pgo, it
  measures the plain `cargo build --release`;
- starts two nginx origins answering a tiny "ok" on loopback, then cutover
  (one worker), nginx (one worker, upstream keepalive) and HAProxy (nbthread
  1) with equivalent configs: round robin over both origins, X-Forwarded-*
  set, no access log, kept-alive connections on both sides; cutover alone
  also checks its four pool servers' health, at its default 2 s interval
  (each check a new connection: about 0.4 ms of the proxy's CPU);
- pins every proxy to one core (--proxy-cpu, default 1) and wrk, the origins
  and every helper to the other (--load-cpu, default 0);
- warms each proxy up, then runs interleaved rounds: per round and per proxy
  a full-load run (64 connections) and a paced run at about 5,000 req/s,
  reading the proxy's CPU time from /proc around each run;
- measures peak RSS, and RSS per idle keep-alive connection by holding 5,000
  connections open after one request each (read once the RSS has settled:
  3 s after the last connection opened, three readings a second apart
  within 1 %);
- runs cutover alone, with a switcher asking for 100 no-op switches, and with 100
  blue/green switches under load;
- prints one table of medians with ratios to nginx and HAProxy, and writes it
  to target/e2e-bench/report.md.

Every process it starts is in its own process group and is killed on exit,
on Ctrl-C and on errors. It is not part of the test suite.
"""

import argparse
import atexit
import hashlib
import os
import re
import resource
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
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

PROXIES = ("cutover", "nginx", "haproxy")

CHILDREN = []


def log(msg):
    print(f"[e2e] {msg}", file=sys.stderr, flush=True)


def fail(msg):
    log(f"error: {msg}")
    sys.exit(1)


# ---------------------------------------------------------------- processes


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


def group_pids(proc):
    """The process and its children (nginx's master and worker)."""
    pids = [proc.pid]
    try:
        out = subprocess.run(
            ["pgrep", "-g", str(proc.pid)], capture_output=True, text=True
        ).stdout
        pids = sorted({int(p) for p in out.split()} | {proc.pid})
    except FileNotFoundError:
        pass
    # taskset execs the program, so the group leader is the program itself.
    return pids


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


def status_kib(pids, key):
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            continue
    return total


def rss_kib(pids):
    """Resident set, read from statm (status rounds less often)."""
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_KIB
        except FileNotFoundError:
            continue
    return total


# ------------------------------------------------------------------ setup


def ensure_tools(no_install):
    missing = [
        t for t in ("nginx", "haproxy", "wrk", "taskset", "h2load", "openssl") if not find(t)
    ]
    if not missing:
        return
    if no_install:
        fail(
            f"missing: {', '.join(missing)} "
            "(apt-get install nginx haproxy wrk nghttp2-client openssl)"
        )
    log(f"installing {', '.join(missing)} with apt-get")
    if not apt_get("update", "-q") or not apt_get(
        "install", "-y", "-q", "nginx", "haproxy", "wrk", "util-linux", "nghttp2-client", "openssl"
    ):
        fail("apt-get failed")
    still = [t for t in missing if not find(t)]
    if still:
        fail(f"still missing after apt-get: {', '.join(still)}")


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


def cargo_build(target_dir=None, rustflags=None):
    """`cargo build --release`, into `target_dir` with `rustflags` added."""
    env = dict(os.environ)
    if target_dir:
        env["CARGO_TARGET_DIR"] = str(target_dir)
    if rustflags:
        env["RUSTFLAGS"] = f"{env.get('RUSTFLAGS', '')} {rustflags}".strip()
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True, env=env)
    binary = Path(target_dir or ROOT / "target") / "release" / "cutover"
    if not binary.exists():
        fail(f"{binary} was not built")
    return binary


def build_cutover(args, workdir):
    """The binary to measure: the profile-guided build (see `pgo_build`),
    or with --no-pgo, or without an llvm-profdata for rustc's LLVM, the
    plain release build."""
    if not args.no_pgo:
        profdata = find_llvm_profdata(args.no_install)
        if profdata:
            return pgo_build(args, workdir, profdata), "PGO"
        log("no llvm-profdata for rustc's LLVM: measuring the plain release build")
    log("building cutover (cargo build --release)")
    return cargo_build(), "plain"


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


def pgo_build(args, workdir, profdata):
    """cutover built with profile-guided optimization, as a release would
    ship it: an instrumented build serves a training load (below), and the
    release build is made again with the profile it wrote. Each build has
    its own target directory under target/, so the plain build is kept."""
    log("building cutover for PGO: instrumented build (target/pgo-gen)")
    raw = ROOT / "target" / "pgo-gen" / "profiles"
    shutil.rmtree(raw, ignore_errors=True)
    gen = cargo_build(ROOT / "target" / "pgo-gen", f"-Cprofile-generate={raw}")
    train(args, gen, workdir)
    raws = sorted(raw.glob("*.profraw"), key=lambda p: p.stat().st_mtime)
    if not raws:
        fail(f"the instrumented cutover wrote no profile in {raw}")
    merged = workdir / "cutover.profdata"
    # The build scripts were instrumented too; the last file is cutover's.
    subprocess.run([profdata, "merge", "-o", str(merged), str(raws[-1])], check=True)
    # Named by content: a new profile is a new flag, so cargo rebuilds
    # every crate with it rather than keeping builds from an older one.
    digest = hashlib.sha256(merged.read_bytes()).hexdigest()[:12]
    keep = ROOT / "target" / "pgo-use" / f"cutover-{digest}.profdata"
    keep.parent.mkdir(parents=True, exist_ok=True)
    for old in keep.parent.glob("cutover-*.profdata"):
        old.unlink()
    shutil.copy(merged, keep)
    log("building cutover with the profile (target/pgo-use)")
    return cargo_build(ROOT / "target" / "pgo-use", f"-Cprofile-use={keep}")


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

NGINX_PROXY_BODY = """
    upstream origins {{
        server 127.0.0.1:{o1};
        server 127.0.0.1:{o2};
        keepalive 64;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://origins;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
        }}
    }}
"""

HAPROXY_CFG = """
global
    nbthread 1
    maxconn 9000
    log stderr format raw local0 err

defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 60s
    timeout http-keep-alive 300s
    option http-keep-alive
    http-reuse always

frontend fe
    bind 127.0.0.1:{port}
    option forwardfor
    http-request set-header X-Forwarded-Proto http
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    default_backend origins

backend origins
    balance roundrobin
    server o1 127.0.0.1:{o1}
    server o2 127.0.0.1:{o2}
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


class Target:
    def __init__(self, name, port, proc):
        self.name = name
        self.port = port
        self.proc = proc
        self.pids = group_pids(proc)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/"


def start_nginx(name, body, cpu, workdir, **fmt):
    conf = workdir / f"{name}.conf"
    conf.write_text(NGINX_COMMON.format(dir=workdir, name=name, body=body.format(**fmt)))
    return spawn(
        [find("nginx"), "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"],
        cpu,
        name,
        workdir,
    )


def start_all(args, binary, workdir):
    o1, o2, p_cut, p_admin, p_nginx, p_haproxy = free_ports(6)
    origins = []
    for name, port in (("origin1", o1), ("origin2", o2)):
        proc = start_nginx(name, ORIGIN_BODY, args.load_cpu, workdir, port=port)
        wait_port(port, proc)
        origins.append(Target(name, port, proc))

    cfg = workdir / "cutover.toml"
    cfg.write_text(CUTOVER_CFG.format(port=p_cut, admin=p_admin, dir=workdir, o1=o1, o2=o2))
    cut = spawn(
        [str(binary), "run", "-c", str(cfg)],
        args.proxy_cpu,
        "cutover",
        workdir,
    )
    wait_port(p_cut, cut)

    ngx = start_nginx(
        "nginx", NGINX_PROXY_BODY, args.proxy_cpu, workdir, port=p_nginx, o1=o1, o2=o2
    )
    wait_port(p_nginx, ngx)

    hcfg = workdir / "haproxy.cfg"
    hcfg.write_text(HAPROXY_CFG.format(port=p_haproxy, o1=o1, o2=o2))
    hap = spawn([find("haproxy"), "-db", "-f", str(hcfg)], args.proxy_cpu, "haproxy", workdir)
    wait_port(p_haproxy, hap)

    time.sleep(0.5)  # nginx forks its worker after it listens
    targets = {
        "cutover": Target("cutover", p_cut, cut),
        "nginx": Target("nginx", p_nginx, ngx),
        "haproxy": Target("haproxy", p_haproxy, hap),
    }
    for t in targets.values():
        check_ok(t)
    check_ok(origins[0])
    return origins, targets, cfg, p_admin


def get(port, path="/", host="bench"):
    """One GET on a connection of its own, closed after it: the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def check_ok(target):
    data = get(target.port)
    if not data.startswith(b"HTTP/1.1 200") or not data.endswith(b"ok\n"):
        fail(f"{target.name} answered {data[:200]!r}")


# -------------------------------------------------------------------- wrk

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


def measured_run(args, target, conns, seconds, script=None):
    before = cpu_ticks(target.pids)
    res = wrk(args, target.url, conns, seconds, script)
    after = cpu_ticks(target.pids)
    cpu_s = (after - before) / CLK_TCK
    res["cpu_per_100k"] = cpu_s / res["requests"] * 100_000 if res["requests"] else float("nan")
    res["cpu_s"] = cpu_s
    return res


# ------------------------------------------------------------ idle memory

IDLE_CLIENT = r"""
import resource, socket, sys
n, port = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 1000)), hard))
req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
conns = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(req)
    data = b""
    while not data.endswith(b"ok\n"):
        chunk = s.recv(4096)
        if not chunk:
            sys.exit(f"connection {i} closed early: {data!r}")
        data += chunk
    conns.append(s)
print("ready", flush=True)
sys.stdin.readline()
"""


def idle_rss(args, target, workdir):
    """KiB of proxy RSS per idle kept-alive connection (after one request)."""
    time.sleep(1.0)
    before = rss_kib(target.pids)
    client = spawn(
        [sys.executable, "-c", IDLE_CLIENT, str(args.idle_conns), str(target.port)],
        args.load_cpu,
        f"idle-{target.name}",
        workdir,
        stdin=subprocess.PIPE,
    )
    # The client prints "ready" into its log once every connection is open.
    logfile = workdir / f"idle-{target.name}.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if client.poll() is not None:
            fail(f"idle client for {target.name} exited: {logfile.read_text()[-500:]}")
        if "ready" in logfile.read_text():
            break
        time.sleep(0.2)
    else:
        fail(f"idle client for {target.name} did not get ready")
    # Settled: a proxy may let go of per-connection state once connections
    # are idle, and its allocator return the pages a moment later; so the
    # reading is taken no sooner than 3 s after the last connection opened,
    # once three readings a second apart agree within 1 %.
    time.sleep(2.0)
    readings, deadline = [rss_kib(target.pids)], time.monotonic() + 20
    while time.monotonic() < deadline:
        time.sleep(1.0)
        readings.append(rss_kib(target.pids))
        last = readings[-3:]
        if len(last) == 3 and max(last) - min(last) <= max(256, max(last) // 100):
            break
    after = readings[-1]
    client.stdin.close()
    try:
        client.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(client.pid, signal.SIGKILL)
    return (after - before) / args.idle_conns


# --------------------------------------------------------------- switching


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


def switching(args, target, admin_port, workdir):
    """p99 under load with no switcher, with a switcher asking for no-op
    switches, and with one switching blue/green; interleaved rounds.

    The switches go through the admin API on one kept-alive connection, from
    the load CPU, by a bare client whose requests are encoded up front (an
    `http.client` switcher alone moved p99 by about 10%). The switcher starts (and
    its interpreter loads) before the load does. The no-op run carries the
    same switcher (the same requests from the same CPU, answered the same
    way) without a switch, so comparing it with the switching run measures
    what switching itself costs; the switcher's own work on the load CPU
    shows as the difference between the plain and the no-op runs.
    """
    runs = {"plain": [], "noop": [], "switch": []}
    done = []
    for r in range(args.switch_rounds):
        order = list(runs)[r % 3:] + list(runs)[: r % 3]
        for mode in order:
            if mode == "plain":
                runs[mode].append(wrk(args, target.url, args.conns, args.duration)["p99"])
                continue
            interval = args.duration / (args.switches + 1)
            switcher = spawn(
                [sys.executable, "-c", SWITCHER, str(admin_port), str(args.switches),
                 f"{interval:.4f}", mode],
                args.load_cpu,
                f"switcher-{mode}-{r}",
                workdir,
            )
            wait_ready(switcher, workdir / f"switcher-{mode}-{r}.log")
            res = wrk(args, target.url, args.conns, args.duration)
            switcher.wait(timeout=args.duration + 60)
            out = (workdir / f"switcher-{mode}-{r}.log").read_text()
            m = re.search(r"switched (\d+)", out)
            if mode == "switch":
                done.append(int(m.group(1)) if m else 0)
            if res["errors"]:
                log(f"{mode} run had {res['errors']} failed requests")
            runs[mode].append(res["p99"])
        log(
            f"switching round {r + 1}: p99 {runs['plain'][-1]:,.0f} µs plain, "
            f"{runs['noop'][-1]:,.0f} µs with no-op switches, {runs['switch'][-1]:,.0f} µs switching"
        )
    med = {mode: statistics.median(v) for mode, v in runs.items()}
    return med["plain"], med["noop"], med["switch"], min(done)


# ------------------------------------------------------------------ report


BUILDS = {
    "PGO": "profile-guided, trained on the load described in benches/e2e.py `train`",
    "plain": "cargo build --release",
}


def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"


def render(med, origin_rps, switch, args, machine, build):
    rows = [
        ("req/s, 64 connections (higher is better)", "rps", "{:,.0f}"),
        ("p50 latency, µs", "p50", "{:,.0f}"),
        ("p99 latency, µs", "p99", "{:,.0f}"),
        ("CPU s per 100k req, full load", "cpu_full", "{:.2f}"),
        ("CPU s per 100k req, ~5,000 req/s", "cpu_paced", "{:.2f}"),
        ("rate of the paced run, req/s", "paced_rps", "{:,.0f}"),
        ("peak RSS, MiB", "peak_rss", "{:.1f}"),
        (f"RSS per idle keep-alive conn, KiB ({args.idle_conns:,} conns)", "idle_kib", "{:.2f}"),
    ]
    out = []
    out.append(f"Machine: {machine}")
    out.append(f"cutover: the {build} release build ({BUILDS[build]}).")
    out.append(
        f"Proxies on CPU {args.proxy_cpu}, wrk and origins on CPU {args.load_cpu}; "
        f"medians of {args.rounds} interleaved rounds of {args.duration} s; "
        f"origin alone: {origin_rps:,.0f} req/s."
    )
    out.append("")
    out.append("| metric | cutover | nginx | HAProxy | cutover ÷ nginx | cutover ÷ HAProxy |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for label, key, fmt in rows:
        c, n, h = (med[p][key] for p in PROXIES)
        out.append(
            f"| {label} | {fmt.format(c)} | {fmt.format(n)} | {fmt.format(h)} "
            f"| {ratio(c, n)} | {ratio(c, h)} |"
        )
    plain, noop, switched, done = switch
    out.append("")
    out.append(
        f"cutover p99 under load, medians of {args.switch_rounds} interleaved rounds of "
        f"{args.duration} s runs: {plain:,.0f} µs alone; {noop:,.0f} µs with a switcher "
        f"asking for {args.switches} no-op switches; {switched:,.0f} µs with {done} "
        f"blue/green switches. Switching ÷ no-op: {ratio(switched, noop)}×; "
        f"switching ÷ alone: {ratio(switched, plain)}×."
    )
    return "\n".join(out)


def machine_line():
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for cmd in (["nginx", "-v"], ["haproxy", "-v"]):
        r = subprocess.run([find(cmd[0]), *cmd[1:]], capture_output=True, text=True)
        first = (r.stdout + r.stderr).strip().splitlines()[0]
        versions.append(first)
    return f"{model}, {os.cpu_count()} CPUs; " + "; ".join(versions)


# -------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per run")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--rate", type=int, default=5000, help="paced run, req/s")
    ap.add_argument("--idle-conns", type=int, default=5000)
    ap.add_argument("--switches", type=int, default=100)
    ap.add_argument("--switch-rounds", type=int, default=5, help="rounds of runs alone, with no-op switches, switching")
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--only", choices=PROXIES, help="measure one proxy (no ratios)")
    ap.add_argument("--no-install", action="store_true")
    ap.add_argument(
        "--build-only",
        action="store_true",
        help="build the binary it would measure, print its path and stop",
    )
    ap.add_argument(
        "--no-pgo",
        action="store_true",
        help="measure the plain release build rather than the profile-guided one",
    )
    ap.add_argument(
        "--serve",
        action="store_true",
        help="start the origins and proxies, print their addresses and wait (for profiling)",
    )
    ap.add_argument("--quick", action="store_true", help="1 round of 3 s, 1,000 idle conns")
    ap.add_argument("--binary", help="measure this cutover binary instead of building one")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration, args.idle_conns, args.switches = 1, 3, 1000, 20
        args.switch_rounds = 1
    if os.cpu_count() < 2 and args.proxy_cpu != args.load_cpu:
        fail("needs two CPUs (or --proxy-cpu equal to --load-cpu)")

    atexit.register(kill_all)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    # Each proxy holds an idle connection and may open one upstream per
    # client; the idle client runs beside them.
    need = args.idle_conns * 2 + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(hard, 65536), max(hard, 65536)))
    except (ValueError, OSError):
        if hard < need:
            fail(f"open-file limit {hard} is below {need}: raise it (ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    ensure_tools(args.no_install)
    workdir = Path(tempfile.mkdtemp(prefix="cutover-e2e-"))
    log(f"work directory {workdir}")
    if args.binary:
        binary, build = Path(args.binary).resolve(), "given"
    else:
        binary, build = build_cutover(args, workdir)
    if args.build_only:
        print(binary)
        kill_all()
        shutil.rmtree(workdir, ignore_errors=True)
        return
    log(f"measuring {binary} ({build} build)")
    origins, targets, cfg, admin_port = start_all(args, binary, workdir)
    names = [args.only] if args.only else list(PROXIES)
    if args.serve:
        for t in [*origins, *targets.values()]:
            print(f"{t.name} {t.url} pids {' '.join(map(str, t.pids))}", flush=True)
        print(f"cutover config {cfg}; Ctrl-C stops everything", flush=True)
        signal.pause()

    paced_conns = max(1, round(args.rate * PACED_DELAY_MS / 1000))
    paced = paced_script(workdir)

    log("warming up")
    for name in names:
        wrk(args, targets[name].url, args.conns, 3)
    wrk(args, origins[0].url, args.conns, 2)

    runs = {name: [] for name in names}
    origin_rps = []
    for r in range(args.rounds):
        origin_rps.append(wrk(args, origins[0].url, args.conns, args.duration)["rps"])
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            t = targets[name]
            full = measured_run(args, t, args.conns, args.duration)
            slow = measured_run(args, t, paced_conns, args.duration, paced)
            if full["errors"] or slow["errors"]:
                fail(f"{name}: {full['errors'] + slow['errors']} failed requests")
            runs[name].append(
                {
                    "rps": full["rps"],
                    "p50": full["p50"],
                    "p99": full["p99"],
                    "cpu_full": full["cpu_per_100k"],
                    "cpu_paced": slow["cpu_per_100k"],
                    "paced_rps": slow["rps"],
                }
            )
            log(
                f"round {r + 1} {name}: {full['rps']:,.0f} req/s, p99 {full['p99']:,.0f} µs, "
                f"CPU/100k {full['cpu_per_100k']:.2f} s full, {slow['cpu_per_100k']:.2f} s "
                f"at {slow['rps']:,.0f} req/s"
            )

    med = {}
    for name in names:
        med[name] = {k: statistics.median(run[k] for run in runs[name]) for k in runs[name][0]}
        med[name]["peak_rss"] = status_kib(targets[name].pids, "VmHWM") / 1024
    for name in names:
        med[name]["idle_kib"] = idle_rss(args, targets[name], workdir)
        log(f"{name}: {med[name]['idle_kib']:.2f} KiB per idle connection")

    switch = (float("nan"), float("nan"), float("nan"), 0)
    if "cutover" in names:
        log(f"cutover with {args.switches} switches under load")
        switch = switching(args, targets["cutover"], admin_port, workdir)

    if args.only:
        for k, v in med[args.only].items():
            print(f"{args.only} {k}: {v:,.2f}")
        if args.only == "cutover":
            plain, noop, switched, done = switch
            print(
                f"cutover p99 alone / no-op switches / {done} switches: "
                f"{plain:,.0f} / {noop:,.0f} / {switched:,.0f} µs"
            )
        return
    report = render(med, statistics.median(origin_rps), switch, args, machine_line(), build)
    print(report)
    out = ROOT / "target" / "e2e-bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(report + "\n")
    log(f"written to {out / 'report.md'}")
    kill_all()
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
