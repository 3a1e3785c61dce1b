#!/usr/bin/env python3
"""What the dashboard costs: its weight, the admin listener's CPU with
dashboards open, and the data plane's p99 with and without them.

    python3 benches/dashboard.py                 # about 5 minutes
    python3 benches/dashboard.py --quick         # one short round
    python3 benches/dashboard.py --binary PATH   # measure that build

What it does, with the helpers of benches/e2e.py (same pinning, same
origins, same cutover config):

- builds `cargo build --release` (unless --binary), starts two nginx
  origins answering "ok" and cutover (one worker) in front of them; cutover
  is pinned to one core (--proxy-cpu), wrk, the origins and every client
  to the other (--load-cpu);
- weighs the page: the bytes of /ui/ and the files it loads;
- opens N dashboards (--dashboards, default 5): each a client reading
  GET /api/v1/stream, the stream the page follows (the page's own drawing
  runs in the browser, not in the proxy), started after /ui/ and its
  files were fetched, as a browser does;
- reads the CPU time of cutover's control thread (`cutover-control`, which
  serves the admin listener) from /proc/<pid>/task/<tid>/schedstat: idle
  for --idle seconds without dashboards and with them, and during every
  loaded run;
- runs interleaved rounds of wrk at 64 connections (--paced: each waiting
  10 ms between requests, as e2e.py's paced run) for --duration seconds,
  with no dashboard and with N open, alternating which goes first, and
  reports the median p99 and req/s of each and their ratio;
- with --screenshot, runs `cutover demo` on the proxy core under a paced
  load, starts its canary, and has headless Chromium (chromedriver) save
  the page mid-canary to target/dashboard-bench/canary.png.

It kills everything it started when it ends. It is not part of the test
suite; the figures go to docs/performance.md.
"""

import argparse
import atexit
import base64
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
spec = importlib.util.spec_from_file_location("e2e", HERE / "e2e.py")
e2e = importlib.util.module_from_spec(spec)
spec.loader.exec_module(e2e)

ROOT = e2e.ROOT
OUT = ROOT / "target" / "dashboard-bench"
PAGE = ("/ui/", "/ui/dashboard.css", "/ui/dashboard.js")


def http(port, path, method="GET", body=None):
    """One admin call; the answer's bytes."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.read()


def control_thread(pid):
    """The tid of the proxy's control thread."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().strip() == "cutover-control":
            return int(task.name)
    e2e.fail("no cutover-control thread")


def on_cpu_ns(pid, tid):
    """Nanoseconds the thread has run."""
    return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])


def open_dashboards(n, admin, cpu, workdir, tag):
    """`n` clients following the stream; each fetched the page first."""
    for path in PAGE:
        http(admin, path)
    return [
        e2e.spawn(
            ["curl", "-sN", "-o", "/dev/null", f"http://127.0.0.1:{admin}/api/v1/stream"],
            cpu,
            f"dashboard-{tag}-{i}",
            workdir,
        )
        for i in range(n)
    ]


def close(procs):
    for p in procs:
        p.kill()
        p.wait()


def idle_cpu(args, pid, tid, admin, workdir):
    """Control-thread CPU per second, idle, without and with dashboards."""
    out = {}
    for tag, n in (("none", 0), ("open", args.dashboards)):
        dashboards = open_dashboards(n, admin, args.load_cpu, workdir, f"idle-{tag}")
        time.sleep(2)
        before = on_cpu_ns(pid, tid)
        time.sleep(args.idle)
        out[tag] = (on_cpu_ns(pid, tid) - before) / 1e6 / args.idle
        close(dashboards)
    return out


def loaded(args, target, tid, admin, workdir):
    """Interleaved wrk rounds without and with dashboards."""
    runs = {"none": [], "open": []}
    for r in range(args.rounds):
        order = ["none", "open"] if r % 2 == 0 else ["open", "none"]
        for mode in order:
            n = args.dashboards if mode == "open" else 0
            dashboards = open_dashboards(n, admin, args.load_cpu, workdir, f"{mode}-{r}")
            time.sleep(1.5)
            before = on_cpu_ns(target.proc.pid, tid)
            res = e2e.wrk(args, target.url, args.conns, args.duration, args.script)
            res["control_ms_per_s"] = (on_cpu_ns(target.proc.pid, tid) - before) / 1e6 / args.duration
            close(dashboards)
            if res["errors"]:
                e2e.log(f"{mode} run had {res['errors']} failed requests")
            runs[mode].append(res)
            e2e.log(
                f"round {r + 1} {mode:>4}: p99 {res['p99']:,.0f} µs, {res['rps']:,.0f} req/s, "
                f"control thread {res['control_ms_per_s']:.2f} ms/s"
            )
    return {
        mode: {k: statistics.median(x[k] for x in rs) for k in ("p99", "rps", "control_ms_per_s")}
        for mode, rs in runs.items()
    }


def webdriver(port, method, path, body=None):
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.load(resp)["value"]


def canary_screenshot(args, binary, workdir):
    """The page mid-canary under a paced load, as a PNG."""
    listen, admin, driver_port = e2e.free_ports(3)
    demo = e2e.spawn(
        [str(binary), "demo", "--listen", f"127.0.0.1:{listen}", "--admin", f"127.0.0.1:{admin}"],
        args.proxy_cpu, "demo", workdir,
    )
    e2e.wait_port(admin, demo)
    for _ in range(100):
        if b'"ready":true' in http(admin, "/api/v1/status"):
            break
        time.sleep(0.1)
    # About 200 req/s: 4 connections, 20 ms apart.
    script = workdir / "demo-paced.lua"
    script.write_text("function delay()\n  return 20\nend\n")
    load = e2e.spawn(
        ["wrk", "-t1", "-c4", "-d40s", "-s", str(script), f"http://127.0.0.1:{listen}/"],
        args.load_cpu, "demo-load", workdir,
    )
    driver = e2e.spawn(["chromedriver", f"--port={driver_port}"], args.load_cpu, "chromedriver", workdir)
    e2e.wait_port(driver_port, driver)
    caps = {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"args": [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--window-size=1280,1000"]}}}}
    session = webdriver(driver_port, "POST", "/session", caps)["sessionId"]
    webdriver(driver_port, "POST", f"/session/{session}/url", {"url": f"http://127.0.0.1:{admin}/"})
    time.sleep(8)  # a few seconds of blue alone in the charts
    http(admin, "/api/v1/services/demo/canary", "POST", {})
    time.sleep(16)  # the first stage (10%) held, the second (50%) running
    png = webdriver(driver_port, "GET", f"/session/{session}/screenshot")
    webdriver(driver_port, "DELETE", f"/session/{session}")
    close([load, driver, demo])
    # Killed, the demo leaves its files behind.
    shutil.rmtree(Path(tempfile.gettempdir()) / f"cutover-demo-{demo.pid}", ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "canary.png"
    path.write_bytes(base64.b64decode(png))
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--duration", type=int, default=10, help="seconds per loaded run")
    ap.add_argument("--idle", type=int, default=20, help="seconds per idle CPU reading")
    ap.add_argument("--conns", type=int, default=64)
    ap.add_argument("--dashboards", type=int, default=5)
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--binary", type=Path, help="the cutover binary (default: build --release)")
    ap.add_argument("--screenshot", action="store_true", help="also a screenshot mid-canary")
    ap.add_argument(
        "--paced",
        action="store_true",
        help=f"paced load (each connection waits {e2e.PACED_DELAY_MS} ms between requests) rather than full",
    )
    ap.add_argument("--quick", action="store_true", help="2 rounds of 3 s, 5 s idle readings")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.duration, args.idle = 2, 3, 5

    atexit.register(e2e.kill_all)
    signal.signal(signal.SIGINT, e2e.on_signal)
    signal.signal(signal.SIGTERM, e2e.on_signal)
    for tool in ("nginx", "wrk", "taskset", "curl"):
        if not e2e.find(tool):
            e2e.fail(f"missing {tool} (apt-get install nginx wrk util-linux curl)")
    binary = args.binary or e2e.cargo_build()
    workdir = Path(tempfile.mkdtemp(prefix="cutover-dashboard-"))
    args.script = e2e.paced_script(workdir) if args.paced else None

    o1, o2, port, admin = e2e.free_ports(4)
    for name, p in (("origin1", o1), ("origin2", o2)):
        proc = e2e.start_nginx(name, e2e.ORIGIN_BODY, args.load_cpu, workdir, port=p)
        e2e.wait_port(p, proc)
    cfg = workdir / "cutover.toml"
    cfg.write_text(e2e.CUTOVER_CFG.format(port=port, admin=admin, dir=workdir, o1=o1, o2=o2))
    proc = e2e.spawn([str(binary), "run", "-c", str(cfg)], args.proxy_cpu, "cutover", workdir)
    e2e.wait_port(port, proc)
    target = e2e.Target("cutover", port, proc)
    e2e.check_ok(target)
    tid = control_thread(proc.pid)

    weights = {path: len(http(admin, path)) for path in PAGE}
    e2e.log(f"page: {sum(weights.values()):,} bytes ({weights})")
    e2e.wrk(args, target.url, args.conns, 3)  # warm-up
    idle = idle_cpu(args, proc.pid, tid, admin, workdir)
    e2e.log(f"control thread idle: {idle['none']:.3f} ms/s, {idle['open']:.3f} ms/s with {args.dashboards} dashboards")
    med = loaded(args, target, tid, admin, workdir)
    shot = canary_screenshot(args, binary, workdir) if args.screenshot else None

    n = args.dashboards
    lines = [
        f"page weight: {sum(weights.values()):,} bytes "
        + ", ".join(f"{p} {b:,}" for p, b in weights.items()),
        f"control thread CPU, idle: {idle['none']:.3f} ms/s without dashboards, "
        f"{idle['open']:.3f} ms/s with {n}",
        f"under {'paced ' if args.paced else ''}load ({args.conns} connections, medians of {args.rounds} interleaved rounds of {args.duration} s):",
        f"  p99 {med['none']['p99']:,.0f} µs without, {med['open']['p99']:,.0f} µs with {n} dashboards "
        f"(ratio {med['open']['p99'] / med['none']['p99']:.3f})",
        f"  req/s {med['none']['rps']:,.0f} without, {med['open']['rps']:,.0f} with "
        f"(ratio {med['open']['rps'] / med['none']['rps']:.3f})",
        f"  control thread {med['none']['control_ms_per_s']:.2f} ms/s without, "
        f"{med['open']['control_ms_per_s']:.2f} ms/s with",
    ]
    if shot:
        lines.append(f"screenshot mid-canary: {shot}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    e2e.kill_all()
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
