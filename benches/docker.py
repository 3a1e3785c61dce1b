#!/usr/bin/env python3
"""The Docker provider, measured against the real engine.

    python3 benches/docker.py                 # everything (about 5 minutes)
    python3 benches/docker.py --only kill     # one part: kill, image, startup, seed
    python3 benches/docker.py --fast-image    # the test image instead of a release build

Parts:

- image: builds the release image with scripts/build-image.sh (static,
  FROM scratch) and reports its size;
- kill: cutover (`run --docker`, in a container from that image) in front
  of replicas of `cutover demo-upstream` under a steady load; a replica is
  started, takes traffic, and is stopped (`docker stop`), 20 times. The
  replicas keep accepting for 1 s after SIGTERM (CUTOVER_DEMO_STOP_DELAY)
  and log when their last request arrived, so the figure is the time from
  the engine's `kill` event (its timeNano, read from `docker events`) to the
  last new request that reached the stopped replica: cutover's reaction.
  A negative time means no request arrived after the event at all. Also
  counts the load's failed requests (none expected);
- startup: 50 labelled containers (25 services, blue and green) running,
  then cutover's release binary started on the host with `run --docker`:
  the time from its start to `/readyz` answering 200, 5 times (median);
- seed: examples/compose (seed 000's stack, only `traefik` replaced) under
  ~100 req/s: switch, rollback, a second blue replica, `docker stop` of
  one; the requests sent and failed.

Everything it creates is labelled cutover-bench (compose project
cutover-bench) and removed at the end, and before it starts. Results go
to stdout and target/docker-bench/report.md. Not part of the tests.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABEL = "cutover-bench"
IMAGE = "cutover-bench:release"
NET = "cutover-bench-net"
PROJECT = "cutover-bench"
HOST = "kill.bench"


def sh(*args, check=True, env=None, capture=True):
    """Runs a command; its stdout (stripped)."""
    full_env = dict(os.environ, **(env or {}))
    out = subprocess.run(args, check=False, env=full_env, text=True,
                         stdout=subprocess.PIPE if capture else None,
                         stderr=subprocess.PIPE if capture else None)
    if check and out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {out.stderr}")
    return (out.stdout or "").strip()


def cleanup():
    ids = sh("docker", "ps", "-aq", "--filter", f"label={LABEL}").split()
    ids += sh("docker", "ps", "-aq", "--filter",
              f"label=com.docker.compose.project={PROJECT}").split()
    if ids:
        sh("docker", "rm", "-f", "-v", *ids, check=False)
    for net in (NET, f"{PROJECT}_default"):
        sh("docker", "network", "rm", net, check=False)
    sh("docker", "volume", "rm", "-f", f"{PROJECT}_cutover-state", check=False)


def build_image(fast):
    env = {"CUTOVER_IMAGE_LABELS": f"{LABEL}=1"}
    args = ["bash", os.path.join(ROOT, "scripts/build-image.sh")]
    if fast:
        args.append("--fast")
    start = time.monotonic()
    out = sh(*args, IMAGE, env=env)
    took = time.monotonic() - start
    size = int(sh("docker", "image", "inspect", "-f", "{{.Size}}", IMAGE))
    return {"size_bytes": size, "build_s": took, "line": out}


class Load:
    """GET / with a Host header from a few threads, each on a kept-alive
    connection, `rate` requests a second in all (0: as fast as they go)."""

    def __init__(self, port, host, rate, threads=4):
        self.port, self.host = port, host
        self.every = threads / rate if rate else 0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failed = []
        self.by = {}
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        conn = None
        next_at = time.monotonic()
        while not self.stop.is_set():
            if self.every:
                next_at += self.every
                pause = next_at - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", "/", headers={"Host": self.host})
                resp = conn.getresponse()
                body = resp.read()
                with self.lock:
                    if resp.status == 200:
                        self.ok += 1
                        who = json.loads(body).get("pool", "?")
                        self.by[who] = self.by.get(who, 0) + 1
                    else:
                        self.failed.append(f"{resp.status} {body[:80]!r}")
            except Exception as e:  # noqa: BLE001: a failed request is counted
                with self.lock:
                    self.failed.append(repr(e))
                conn = None

    def count(self, who=None):
        with self.lock:
            return self.ok if who is None else self.by.get(who, 0)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join()
        return {"ok": self.ok, "failed": len(self.failed), "by_pool": self.by,
                "failures": self.failed[:5]}


def wait_for(what, check, bound=60):
    start = time.monotonic()
    while time.monotonic() - start < bound:
        if check():
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out: {what}")


def published_port(container, port=80):
    return int(sh("docker", "port", container, str(port)).splitlines()[0].rsplit(":", 1)[1])


def ctl_status(container, service):
    out = sh("docker", "exec", container, "cutover", "ctl", "--json", "status", service, check=False)
    try:
        return json.loads(out)
    except ValueError:
        return {}


def labels_for(colour, host, port):
    return [f"traefik.http.routers.{colour}.rule=Host(`{host}`)",
            f"traefik.http.routers.{colour}.service={colour}",
            f"traefik.http.services.{colour}.loadbalancer.server.port={port}"]


def agent(name, router, host, port, extra_env=()):
    """A demo upstream whose router (and Traefik service) is `router`; its
    pool is the colour the name ends in."""
    colour = "green" if router.endswith("green") else "blue"
    args = ["docker", "run", "-d", "--name", name, "--network", NET, "--label", LABEL]
    for label in labels_for(router, host, port):
        args += ["--label", label]
    for env in extra_env:
        args += ["-e", env]
    args += [IMAGE, "demo-upstream", "--listen", f"0.0.0.0:{port}", "--pool", colour]
    return sh(*args)


def bench_kill(rounds, rate):
    sh("docker", "network", "create", "--label", LABEL, NET)
    proxy = "cutover-bench-proxy"
    sh("docker", "run", "-d", "--name", proxy, "--network", NET, "--label", LABEL,
       "-v", "/var/run/docker.sock:/var/run/docker.sock:ro", "-p", "127.0.0.1::80",
       "-e", "CUTOVER_LOG=info", IMAGE, "run", "--docker")
    agent("cutover-bench-keep", "blue", HOST, 5000)
    port = published_port(proxy)
    wait_for("the kept replica serves",
             lambda: ctl_status(proxy, HOST).get("pools", {}).get("blue", {}).get("healthy"))
    load = Load(port, HOST, rate=rate, threads=8)
    deltas = []
    for i in range(rounds):
        name = f"cutover-bench-stop-{i}"
        agent(name, "blue", HOST, 5000, extra_env=["CUTOVER_DEMO_STOP_DELAY=1s"])

        def serving():
            servers = ctl_status(proxy, HOST).get("pools", {}).get("blue", {}).get("servers", [])
            return any(s.get("container") == name and s.get("state") == "healthy" for s in servers)
        wait_for(f"{name} healthy", serving)
        time.sleep(0.5)  # pacing: the replica takes traffic a while before it is stopped
        events = subprocess.Popen(
            ["docker", "events", "--format", "{{json .}}", "--filter", f"container={name}",
             "--filter", "event=kill"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.2)  # pacing: the subscription is in place before the stop
        sh("docker", "stop", "-t", "10", name)
        kill_ns = int(json.loads(events.stdout.readline())["timeNano"])
        events.kill()
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True)
        lines = (logs.stdout + logs.stderr).splitlines()
        last = [line for line in lines if "last_request_unix_ns=" in line]
        if not last:
            raise SystemExit(f"{name}: no stop line in its log:\n" + "\n".join(lines))
        last_ns = int(last[-1].split("last_request_unix_ns=")[1].split()[0])
        served = int(last[-1].split("requests=")[1].split()[0])
        delta_ms = (last_ns - kill_ns) / 1e6
        deltas.append(delta_ms)
        print(f"  stop {i + 1:2}: served {served}, last request {delta_ms:+.2f} ms after the kill event",
              flush=True)
        sh("docker", "rm", "-f", name)
    result = load.finish()
    ordered = sorted(deltas)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"stops": rounds, "deltas_ms": deltas, "p50_ms": statistics.median(deltas),
            "p99_ms": p99, "max_ms": max(deltas), "load": result}


def bench_startup(binary, n_containers=50, runs=5):
    sh("docker", "network", "create", "--label", LABEL, NET, check=False)
    for i in range(n_containers):
        colour = "blue" if i % 2 == 0 else "green"
        host = f"svc{i // 2}.bench"
        agent(f"cutover-bench-s{i}", f"s{i // 2}-{colour}", host, 5000 if colour == "blue" else 5001)
    times = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as state:
            listen = free_port()
            admin = free_port()
            start = time.monotonic()
            proc = subprocess.Popen([binary, "run", "--docker", "--listen", f"127.0.0.1:{listen}",
                                     "--admin", f"127.0.0.1:{admin}", "--state-dir", state],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                def ready():
                    try:
                        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as r:
                            return r.status == 200
                    except Exception:  # noqa: BLE001: not up yet
                        return False
                wait_for("ready", ready)
                took = time.monotonic() - start
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/v1/status") as r:
                    status = json.load(r)
                healthy = sum(1 for s in status["services"] for p in s["pools"].values()
                              for srv in p["servers"] if srv.get("state") == "healthy")
                if healthy != n_containers:
                    raise SystemExit(f"ready with {healthy} healthy servers of {n_containers}")
                times.append(took * 1000)
                print(f"  ready after {took * 1000:.0f} ms, {len(status['services'])} services, "
                      f"{healthy} healthy servers", flush=True)
            finally:
                proc.terminate()
                proc.wait()
    return {"containers": n_containers, "ready_ms": times, "median_ms": statistics.median(times)}


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bench_seed():
    compose = ["docker-compose", "-p", PROJECT, "-f", os.path.join(ROOT, "examples/compose/docker-compose.yml")]
    env = {"CUTOVER_IMAGE": IMAGE, "BLUE_IMAGE": IMAGE, "GREEN_IMAGE": IMAGE,
           "CUTOVER_PUBLISH": "127.0.0.1:0"}
    sh(*compose, "up", "-d", env=env)
    proxy = f"{PROJECT}_cutover_1"
    port = published_port(proxy)
    host = "your-domain.com"
    wait_for("both colours healthy", lambda: all(
        p.get("healthy") for p in ctl_status(proxy, host).get("pools", {}).values()))
    load = Load(port, host, rate=100)
    steps = []

    def step(what, action, then_pool):
        before = load.count(then_pool)
        start = time.monotonic()
        action()
        wait_for(f"{what}: 100 answers from {then_pool}", lambda: load.count(then_pool) >= before + 100)
        steps.append(f"{what} ({time.monotonic() - start:.1f} s)")

    time.sleep(2)  # pacing: a steady load before the first step
    step("switch", lambda: sh("docker", "exec", proxy, "cutover", "ctl", "switch", host), "green")
    step("rollback", lambda: sh("docker", "exec", proxy, "cutover", "ctl", "rollback", host), "blue")
    sh(*compose, "up", "-d", "--no-recreate", "--scale", "blue=2", env=env)
    wait_for("two healthy blue servers", lambda: sum(
        1 for s in ctl_status(proxy, host).get("pools", {}).get("blue", {}).get("servers", [])
        if s.get("state") == "healthy") == 2)
    step("docker stop of one of two blue replicas",
         lambda: sh("docker", "stop", f"{PROJECT}_blue_1"), "blue")
    result = load.finish()
    result["steps"] = steps
    sh(*compose, "down", "-v", env=env, check=False)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["image", "kill", "startup", "seed"])
    parser.add_argument("--fast-image", action="store_true")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--rate", type=int, default=1000,
                        help="requests a second during the kill part (finer timing when higher)")
    args = parser.parse_args()
    parts = [args.only] if args.only else ["image", "kill", "startup", "seed"]
    cleanup()
    report = {}
    try:
        print("== image", flush=True)
        report["image"] = build_image(args.fast_image)
        print(f"  {report['image']['line']} (built in {report['image']['build_s']:.0f} s)")
        if "kill" in parts:
            print("== kill event → last new request, over", args.rounds, "stops", flush=True)
            report["kill"] = bench_kill(args.rounds, args.rate)
            cleanup()
        if "startup" in parts:
            print("== start-up to ready with 50 labelled containers", flush=True)
            binary = os.path.join(ROOT, "target/static/x86_64-unknown-linux-gnu/release/cutover")
            if args.fast_image or not os.path.exists(binary):
                binary = os.path.join(ROOT, "target/debug/cutover")
            report["startup"] = bench_startup(binary)
            report["startup"]["binary"] = os.path.relpath(binary, ROOT)
            cleanup()
        if "seed" in parts:
            print("== seed 000 under ~100 req/s: switch, rollback, docker stop", flush=True)
            report["seed"] = bench_seed()
    finally:
        cleanup()
        sh("docker", "rmi", "-f", IMAGE, check=False)
    out_dir = os.path.join(ROOT, "target/docker-bench")
    os.makedirs(out_dir, exist_ok=True)
    text = json.dumps(report, indent=2)
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
