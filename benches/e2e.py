#!/usr/bin/env python3
"""End-to-end load benchmark: cutover, nginx and HAProxy on one core each.

    python3 benches/e2e.py            # the full run (about 20 minutes)
    python3 benches/e2e.py --quick    # one short round, to try the setup
    python3 benches/e2e.py --plain    # with the plain release build beside it
    python3 benches/e2e.py --no-pgo   # the release script's plain binary instead
    python3 benches/e2e.py --build-only  # only build the binary it measures
    python3 benches/e2e.py --binary PATH [--plain PATH]  # measure given builds

What it does, in one run on this machine:

- checks for nginx, haproxy, wrk, h2load and openssl (installs them with
  apt-get when missing and it may);
- builds cutover as it ships, with `scripts/release.sh --no-image`: the
  profile-optimized, static, stripped binary (the training load is
  scripts/pgo_train.py's), or with --no-pgo, or where no llvm-profdata for
  rustc's LLVM can be had, the plain one; the report names the build with
  the binary's own `--version`;
- with --plain, measures the plain `cargo build --release` (what a build
  from source without the profile gives; or the binary at PATH) beside it,
  with a config of its own on the same origins, so the gain the profile gives shows
  in the same run as nginx and HAProxy;
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import pgo_train  # noqa: E402
from pgo_train import (  # noqa: E402
    CUTOVER_CFG,
    ORIGIN_BODY,
    PACED_DELAY_MS,
    SWITCHER,
    apt_get,
    fail,
    find,
    free_ports,
    get,
    kill_all,
    log,
    on_signal,
    paced_script,
    spawn,
    start_nginx,
    wait_port,
    wait_ready,
    wrk,
)

pgo_train.LOG_PREFIX = "e2e"

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024

PROXIES = ("cutover", "nginx", "haproxy")







# ---------------------------------------------------------------- processes










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


def build_cutover(args):
    """The binary to measure: the one scripts/release.sh ships (without the
    image), profile-optimized unless --no-pgo or no llvm-profdata."""
    log("building cutover as released (scripts/release.sh --no-image)")
    out = ROOT / "target" / "e2e-bench" / "release"
    cmd = [str(ROOT / "scripts" / "release.sh"), "--no-image", "--out", str(out)]
    if args.no_pgo:
        cmd.insert(1, "--no-pgo")
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=sys.stderr)
    return out / "cutover"


def describe(binary):
    """What the binary says it is (`cutover --version`)."""
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"{binary} --version exited with {done.returncode}: {done.stderr.strip()}")
    return done.stdout.strip()


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



class Target:
    def __init__(self, name, port, proc):
        self.name = name
        self.port = port
        self.proc = proc
        self.pids = group_pids(proc)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/"




def start_all(args, binary, workdir, plain=None):
    o1, o2, p_cut, p_admin, p_nginx, p_haproxy, p_plain, p_plain_admin = free_ports(8)
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

    plain_target = None
    if plain:
        # Its own admin port, socket and state file, the same origins.
        pdir = workdir / "plain"
        pdir.mkdir()
        pcfg = pdir / "cutover.toml"
        pcfg.write_text(
            CUTOVER_CFG.format(port=p_plain, admin=p_plain_admin, dir=pdir, o1=o1, o2=o2)
        )
        pcut = spawn([str(plain), "run", "-c", str(pcfg)], args.proxy_cpu, "plain", workdir)
        wait_port(p_plain, pcut)
        plain_target = ("plain", p_plain, pcut)

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
    if plain_target:
        targets["plain"] = Target(*plain_target)
    for t in targets.values():
        check_ok(t)
    check_ok(origins[0])
    return origins, targets, cfg, p_admin




def check_ok(target):
    data = get(target.port)
    if not data.startswith(b"HTTP/1.1 200") or not data.endswith(b"ok\n"):
        fail(f"{target.name} answered {data[:200]!r}")


# -------------------------------------------------------------------- wrk











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


def ratio(a, b):
    return f"{a / b:.2f}" if b else "n/a"


def render(med, origin_rps, switch, args, machine, builds):
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
    plain = "plain" in med
    out = []
    out.append(f"Machine: {machine}")
    out.append(f"cutover: `{builds['cutover']}`, made by scripts/release.sh.")
    if plain:
        out.append(f"cutover plain: `{builds['plain']}`, `cargo build --release`.")
    out.append(
        f"Proxies on CPU {args.proxy_cpu}, wrk and origins on CPU {args.load_cpu}; "
        f"medians of {args.rounds} interleaved rounds of {args.duration} s; "
        f"origin alone: {origin_rps:,.0f} req/s."
    )
    out.append("")
    names = ["cutover", *(["plain"] if plain else []), "nginx", "haproxy"]
    heads = {"cutover": "cutover", "plain": "cutover plain", "nginx": "nginx", "haproxy": "HAProxy"}
    ratios = [("cutover", "nginx"), ("cutover", "haproxy")]
    if plain:
        ratios += [("plain", "nginx"), ("cutover", "plain")]
    out.append(
        "| metric | "
        + " | ".join(heads[n] for n in names)
        + " | "
        + " | ".join(f"{heads[a]} ÷ {heads[b]}" for a, b in ratios)
        + " |"
    )
    out.append("|---|" + "---:|" * (len(names) + len(ratios)))
    for label, key, fmt in rows:
        cells = [fmt.format(med[n][key]) if key in med[n] else "n/a" for n in names]
        cells += [
            ratio(med[a][key], med[b][key]) if key in med[a] and key in med[b] else "n/a"
            for a, b in ratios
        ]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    plain_p99, noop, switched, done = switch
    out.append("")
    out.append(
        f"cutover p99 under load, medians of {args.switch_rounds} interleaved rounds of "
        f"{args.duration} s runs: {plain_p99:,.0f} µs alone; {noop:,.0f} µs with a switcher "
        f"asking for {args.switches} no-op switches; {switched:,.0f} µs with {done} "
        f"blue/green switches. Switching ÷ no-op: {ratio(switched, noop)}×; "
        f"switching ÷ alone: {ratio(switched, plain_p99)}×."
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
        help="measure the release script's plain binary rather than the profile-optimized one",
    )
    ap.add_argument(
        "--plain",
        nargs="?",
        const="build",
        metavar="PATH",
        help="also measure the plain `cargo build --release` (built when no PATH is given)",
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
    binary = Path(args.binary).resolve() if args.binary else build_cutover(args)
    plain = None
    if args.plain == "build":
        log("building the plain release build (cargo build --release)")
        plain = cargo_build()
    elif args.plain:
        plain = Path(args.plain).resolve()
    if args.build_only:
        print(binary)
        if plain:
            print(plain)
        kill_all()
        shutil.rmtree(workdir, ignore_errors=True)
        return
    builds = {"cutover": describe(binary)}
    log(f"measuring {binary}: {builds['cutover']}")
    if plain:
        builds["plain"] = describe(plain)
        log(f"beside {plain}: {builds['plain']}")
    origins, targets, cfg, admin_port = start_all(args, binary, workdir, plain)
    names = [args.only] if args.only else list(PROXIES)
    if plain and not args.only:
        names.insert(1, "plain")
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
    report = render(med, statistics.median(origin_rps), switch, args, machine_line(), builds)
    print(report)
    out = ROOT / "target" / "e2e-bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(report + "\n")
    log(f"written to {out / 'report.md'}")
    kill_all()
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
