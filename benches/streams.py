#!/usr/bin/env python3
"""Open server-sent-event streams through cutover, nginx and HAProxy.

    python3 benches/streams.py                    # 1,000 streams, 20 s each
    python3 benches/streams.py --streams 10000 --interval 0.5
    python3 benches/streams.py --only cutover --binary target/release/cutover
    python3 benches/streams.py --streams 10000 --interval 0.5 --h2 100

The workload of agent and LLM APIs: N concurrent event streams, each
sending a token (`data: <stream> <i> <sent_ns>`) every `--interval` for
`--duration`. Each proxy is pinned to one core (--proxy-cpu) and the
origin and the clients to the other (--load-cpu), as benches/e2e.py does.
Per proxy it reports:

- RSS per open stream: the proxy's RSS with every stream open (settled)
  minus its RSS before they opened, over N;
- CPU per 1,000 tokens: the proxy's CPU time (utime + stime) over the
  run, per thousand tokens delivered;
- p99 token delay: from the origin's write to the client's read, over
  every token (both on this machine's monotonic clock);
- byte-exact streams: each stream's body, de-chunked, is exactly the
  tokens its origin sent, numbered 0.. with none missing, and properly
  ended.

cutover then runs once more with `--switches` blue/green switches spread
over the run (drain_timeout longer than the run, so streams finish on the
pool they started on): every stream must still arrive byte-exact.

The origin and the clients are Python (asyncio); at about 20,000 tokens a
second they take the load core, so a larger N needs a longer interval.
Every process it starts is killed on exit. Not part of the test suite.

Over HTTP/1.1 a proxy holds two descriptors per stream (the client's and
the upstream's), so the hard limit of open files bounds N (20,000 files:
9,900 streams). `--h2 K` sends the streams K to an HTTP/2 connection
(prior knowledge, h2c; each proxy listens for it), so a proxy holds one
descriptor per stream and one per K: 10,000 streams fit. It needs the
Python `h2` package (Debian's python3-h2, or pip).
"""

import argparse
import asyncio
import atexit
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e  # noqa: E402  (spawn, kill_all, rss_kib, cpu_ticks; nginx settings in e2e.pgo_train)

ROOT = e2e.ROOT

ORIGIN = r'''
import asyncio, sys, time
port_blue, port_green, interval, count = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
streams = []  # [transport, stream id, next token]
HEAD = (b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\ncache-control: no-cache\r\n\r\n")
class Origin(asyncio.Protocol):
    def connection_made(self, t):
        self.t, self.buf = t, b""
    def data_received(self, data):
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            return
        line = self.buf.split(b"\r\n", 1)[0].decode()
        path = line.split()[1]
        self.buf = b""
        if path.startswith("/s/"):
            self.t.write(HEAD)
            streams.append([self.t, path[3:], 0])
        else:
            self.t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n")
    def connection_lost(self, exc):
        pass
async def tick():
    while True:
        await asyncio.sleep(interval)
        now = time.monotonic_ns()
        done = []
        for s in streams:
            t, sid, i = s
            if t.is_closing():
                done.append(s)
                continue
            ev = b"data: %s %d %d\n\n" % (sid.encode(), i, now)
            t.write(b"%x\r\n%s\r\n" % (len(ev), ev))
            s[2] = i + 1
            if s[2] == count:
                t.write(b"0\r\n\r\n")
                done.append(s)
        for s in done:
            streams.remove(s)
async def main():
    loop = asyncio.get_running_loop()
    for port in (port_blue, port_green):
        await loop.create_server(Origin, "127.0.0.1", port, backlog=16384)
    print("ready", flush=True)
    await tick()
asyncio.run(main())
'''

CUTOVER_CFG = """
[server]
listen = "127.0.0.1:{port}"
workers = 1

[server.limits]
idle_timeout = "600s"
response_timeout = "600s"
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
drain_timeout = "10m"

[service.bench.pools.blue]
servers = ["127.0.0.1:{o1}"]

[service.bench.pools.green]
servers = ["127.0.0.1:{o2}"]
"""

NGINX_BODY = """
    upstream origins {{
        server 127.0.0.1:{o1};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=16384{http2};
        location / {{
            proxy_pass http://origins;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
"""

HAPROXY_CFG = """
global
    nbthread 1
    maxconn {maxconn}
{ulimit}    log stderr format raw local0 err

defaults
    mode http
    timeout connect 5s
    timeout client 600s
    timeout server 600s
    option http-keep-alive
    # Streams: every chunk out at once (no MSG_MORE, whose 200 ms shows in the delay).
    option http-no-delay

frontend fe
    bind 127.0.0.1:{port}{proto}
    default_backend origins

backend origins
    server o1 127.0.0.1:{o1}
"""


def log(msg):
    print(f"[streams] {msg}", file=sys.stderr, flush=True)


class Body:
    """A stream's bytes as they arrive, and when each token came."""

    def __init__(self, sid, delays, done):
        self.sid, self.delays, self.done = sid, delays, done
        self.raw = bytearray()
        self.tail = b""

    def take(self, data):
        now = time.monotonic_ns()
        self.raw += data
        # Delays from the tokens whose line ends in this read.
        text = self.tail + data
        lines = text.split(b"\n")
        self.tail = lines.pop()
        for line in lines:
            if line.startswith(b"data: "):
                self.delays.append(now - int(line.rsplit(b" ", 1)[1]))

    def end(self):
        if not self.done.done():
            self.done.set_result(None)


class Stream(Body, asyncio.Protocol):
    """One client stream over its own HTTP/1.1 connection: the raw bytes."""

    def connection_made(self, t):
        t.write(b"GET /s/%d HTTP/1.1\r\nHost: bench\r\n\r\n" % self.sid)

    def data_received(self, data):
        self.take(data)
        if self.raw.endswith(b"\r\n0\r\n\r\n"):
            self.end()

    def connection_lost(self, exc):
        self.end()


def import_h2():
    """The `h2` package, from Debian's python3-h2 when this Python lacks it."""
    try:
        import h2.connection  # noqa: F401
    except ImportError:
        sys.path.append("/usr/lib/python3/dist-packages")
        try:
            import h2.connection  # noqa: F401
        except ImportError:
            sys.exit("--h2 needs the Python h2 package: apt-get install python3-h2, or pip install h2")
    import h2.config
    import h2.connection
    import h2.events
    return h2


class H2Stream(Body):
    """One stream of an HTTP/2 connection: its body, status and end."""

    def __init__(self, sid, delays, done):
        super().__init__(sid, delays, done)
        self.status = None
        self.ended = False


class H2Client(asyncio.Protocol):
    """An HTTP/2 connection (prior knowledge) carrying `streams`."""

    def __init__(self, h2, streams):
        self.h2, self.streams = h2, streams
        self.by_id = {}
        self.conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding=None)
        )

    def connection_made(self, t):
        self.t = t
        self.conn.initiate_connection()
        # A window no stream's tokens fill: every byte is acknowledged below.
        self.conn.increment_flow_control_window(1 << 30)
        for s in self.streams:
            sid = self.conn.get_next_available_stream_id()
            self.by_id[sid] = s
            self.conn.send_headers(
                sid,
                [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"bench"),
                 (b":path", b"/s/%d" % s.sid)],
                end_stream=True,
            )
        t.write(self.conn.data_to_send())

    def data_received(self, data):
        ev = self.h2.events
        for e in self.conn.receive_data(data):
            s = self.by_id.get(getattr(e, "stream_id", None))
            if isinstance(e, ev.ResponseReceived) and s:
                s.status = dict(e.headers).get(b":status")
            elif isinstance(e, ev.DataReceived) and s:
                s.take(e.data)
                self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, ev.StreamEnded) and s:
                s.ended = True
                s.end()
            elif isinstance(e, ev.StreamReset) and s:
                s.end()
        out = self.conn.data_to_send()
        if out:
            self.t.write(out)

    def connection_lost(self, exc):
        for s in self.streams:
            s.end()


def dechunk(body):
    out, i = bytearray(), 0
    while True:
        j = body.index(b"\r\n", i)
        size = int(body[i:j].split(b";")[0], 16)
        if size == 0:
            return bytes(out), body[j + 2 :] == b"\r\n"
        out += body[j + 2 : j + 2 + size]
        if body[j + 2 + size : j + 4 + size] != b"\r\n":
            raise ValueError("bad chunk")
        i = j + 4 + size


def exact(stream, count):
    """Whether the stream's body is exactly its origin's `count` tokens."""
    if isinstance(stream, H2Stream):
        data, ended = bytes(stream.raw), stream.ended and stream.status == b"200"
    else:
        head, sep, body = bytes(stream.raw).partition(b"\r\n\r\n")
        if not sep or not head.startswith(b"HTTP/1.1 200"):
            return False
        try:
            data, ended = dechunk(body)
        except (ValueError, IndexError):
            return False
    events = data.split(b"\n\n")
    if not ended or events.pop() != b"" or len(events) != count:
        return False
    expected = b"".join(
        b"data: %d %d %s\n\n" % (stream.sid, i, e.rsplit(b" ", 1)[-1])
        for i, e in enumerate(events)
    )
    return expected == data


async def drive(port, n, settle, on_open, per_h2=0):
    loop = asyncio.get_running_loop()
    delays = []
    streams = []
    if per_h2:
        h2 = import_h2()
        for first in range(0, n, per_h2):
            group = [H2Stream(sid, delays, loop.create_future()) for sid in range(first, min(n, first + per_h2))]
            await loop.create_connection(lambda g=group: H2Client(h2, g), "127.0.0.1", port)
            streams += group
            # Each connection's streams open before the next connection.
            await asyncio.sleep(0.01)
    for sid in range(n if not per_h2 else 0):
        done = loop.create_future()
        s = Stream(sid, delays, done)
        await loop.create_connection(lambda s=s: s, "127.0.0.1", port)
        streams.append(s)
    await asyncio.sleep(settle)
    await on_open(delays)
    await asyncio.wait_for(asyncio.gather(*(s.done for s in streams)), timeout=600)
    return streams, delays


def admin_switch(admin, to):
    body = json.dumps({"to": to}).encode()
    with socket.create_connection(("127.0.0.1", admin)) as s:
        s.sendall(
            b"POST /api/v1/services/bench/switch HTTP/1.1\r\nHost: admin\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return reply.split(b" ", 2)[1] == b"200"


def run_one(args, name, target, count, switches=0, admin=None):
    pids = target.pids
    measured = {}

    async def main():
        rss_before = e2e.rss_kib(pids)

        async def opened(delays):
            measured["tokens0"] = len(delays)
            measured["rss_open"] = e2e.rss_kib(pids)
            measured["cpu0"] = e2e.cpu_ticks(pids)
            measured["t0"] = time.monotonic()
            if switches:
                loop = asyncio.get_running_loop()
                gap = args.duration / (switches + 1)

                async def switcher():
                    ok = 0
                    for i in range(switches):
                        await asyncio.sleep(gap)
                        to = "green" if i % 2 == 0 else "blue"
                        ok += await loop.run_in_executor(None, admin_switch, admin, to)
                    measured["switched"] = ok

                measured["switcher"] = asyncio.ensure_future(switcher())

        streams, delays = await drive(target.port, args.streams, args.settle, opened, args.h2)
        measured["cpu"] = (e2e.cpu_ticks(pids) - measured["cpu0"]) / e2e.CLK_TCK
        if "switcher" in measured:
            await measured.pop("switcher")
        measured["rss_before"] = rss_before
        return streams, delays

    streams, delays = asyncio.run(main())
    tokens = len(delays) - measured["tokens0"]
    good = sum(exact(s, count) for s in streams)
    delays.sort()
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))] / 1e6 if delays else float("nan")
    row = {
        "proxy": name,
        "streams": args.streams,
        "rss_per_stream_kib": (measured["rss_open"] - measured["rss_before"]) / args.streams,
        "cpu_ms_per_1k_tokens": measured["cpu"] * 1000 / tokens * 1000 if tokens else float("nan"),
        "p99_token_delay_ms": p99,
        "byte_exact": f"{good}/{len(streams)}",
        "switches": measured.get("switched", 0),
        "tokens": tokens,
    }
    log(json.dumps(row))
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--streams", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds between the last open and the RSS reading (within the duration)")
    ap.add_argument("--switches", type=int, default=20)
    ap.add_argument("--binary", default=str(ROOT / "target/release/cutover"))
    ap.add_argument("--only", choices=e2e.PROXIES)
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    ap.add_argument("--h2", type=int, default=0, metavar="K",
                    help="K streams to an HTTP/2 connection (h2c) instead of one HTTP/1.1 connection each")
    args = ap.parse_args()
    if args.h2:
        import_h2()

    # A proxy holds two descriptors per stream (client and upstream), or
    # one and one per HTTP/2 connection; the children inherit this limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    clients = -(-args.streams // args.h2) if args.h2 else args.streams
    if args.streams + clients + 100 > hard:
        sys.exit(f"open files limited to {hard} (hard limit): a proxy needs {args.streams + clients + 100} "
                 f"for {args.streams} streams over {clients} connections (--h2 K shares connections)")

    atexit.register(e2e.kill_all)
    signal.signal(signal.SIGTERM, e2e.on_signal)
    signal.signal(signal.SIGINT, e2e.on_signal)
    # Each stream gets a token every interval from its open, for the
    # duration (which includes the settle time before the measures start).
    count = max(1, int(args.duration / args.interval))
    workdir = Path(tempfile.mkdtemp(prefix="streams-bench-"))
    o1, o2 = e2e.free_ports(2)
    origin = e2e.spawn(
        [sys.executable, "-c", ORIGIN, str(o1), str(o2), str(args.interval), str(count)],
        args.load_cpu, "origin", workdir,
    )
    e2e.wait_port(o2, origin)

    rows = []
    names = [args.only] if args.only else list(e2e.PROXIES)
    for name in names:
        # Picked as each proxy starts: a port free at the bench's start can
        # be an ephemeral source port of the streams of an earlier run.
        p_cut, p_admin, p_nginx, p_hap = e2e.free_ports(4)
        if name == "cutover":
            cfg = workdir / "cutover.toml"
            cfg.write_text(CUTOVER_CFG.format(port=p_cut, admin=p_admin, dir=workdir, o1=o1, o2=o2))
            proc = e2e.spawn([args.binary, "run", "-c", str(cfg)], args.proxy_cpu, "cutover", workdir)
            e2e.wait_port(p_cut, proc)
            port = p_cut
        elif name == "nginx":
            # e2e's nginx settings, with room for two connections per stream
            # and the ones nginx keeps or closes beside them, as files allow.
            common = e2e.pgo_train.NGINX_COMMON.replace("worker_connections 9000", "worker_connections {conns}")
            common = common.replace("worker_rlimit_nofile 19000", "worker_rlimit_nofile {files}")
            conf = workdir / "nginx.conf"
            files = resource.getrlimit(resource.RLIMIT_NOFILE)[1] - 100
            conf.write_text(common.format(
                dir=workdir, name="nginx",
                body=NGINX_BODY.format(port=p_nginx, o1=o1, http2=" http2" if args.h2 else ""),
                conns=min(3 * args.streams + 100, files), files=files,
            ))
            proc = e2e.spawn(
                [e2e.find("nginx"), "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"],
                args.proxy_cpu, "nginx", workdir,
            )
            e2e.wait_port(p_nginx, proc)
            time.sleep(0.5)
            port = p_nginx
        else:
            hcfg = workdir / "haproxy.cfg"
            # maxconn counts streams; HAProxy would want two files for each,
            # while over HTTP/2 one does: it runs on the files there are.
            files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            hcfg.write_text(HAPROXY_CFG.format(
                port=p_hap, o1=o1, maxconn=args.streams + 10,
                ulimit=f"    ulimit-n {files}\n    no strict-limits\n" if args.h2 else "",
                proto=" proto h2" if args.h2 else ""))
            proc = e2e.spawn([e2e.find("haproxy"), "-db", "-f", str(hcfg)], args.proxy_cpu, "haproxy", workdir)
            e2e.wait_port(p_hap, proc)
            port = p_hap
        target = e2e.Target(name, port, proc)
        rows.append(run_one(args, name, target, count))
        if name == "cutover" and args.switches:
            rows.append(
                run_one(args, "cutover, switching", target, count, switches=args.switches, admin=p_admin)
            )
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    over = f"over HTTP/2, {args.h2} to a connection" if args.h2 else "over HTTP/1.1"
    print(f"\n{args.streams} streams {over}, a token every {args.interval * 1000:.0f} ms for "
          f"{args.duration:.0f} s (measured after {args.settle:.0f} s); proxies on one core each\n")
    print("| proxy | RSS per open stream | CPU per 1k tokens | p99 token delay | byte-exact | switches |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['proxy']} | {r['rss_per_stream_kib']:.2f} KiB | {r['cpu_ms_per_1k_tokens']:.2f} ms "
              f"| {r['p99_token_delay_ms']:.2f} ms | {r['byte_exact']} | {r['switches']} |")


if __name__ == "__main__":
    main()
