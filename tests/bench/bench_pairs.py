#!/usr/bin/env python3
"""Coilgun against the pair a user would build instead, side by side in one run.

    python3 tests/bench/bench_pairs.py [--sizes 10,100,400] [--duration 10] [--connections 32]
                                       [--template FILE] [--json]

The backend is coilgun-sample-origin serving /bench?kb=N: a page that differs on every
response (a per-request token and timestamp at its top and middle), made of a real news page
(--template, default the corpus's news-fr-home 0000.html when ../shared/corpus is there, else
the sample site's own generated page). For each page size, wrk drives, with the same
connections and duration:

  direct       the backend itself
  nginx        nginx edge -> keep-alive mutual TLS -> nginx origin -> backend, no compression
  nginx-gzip1  the same with gzip level 1 at the origin (the edge gunzips for clients)
  nginx-gzip6  the same with gzip level 6
  coilgun      coilgun-edge -> tunnel -> coilgun-origin -> backend (one worker each)
  coilgun-2w   the same with two workers each (scaling)
  coilgun-memcached  coilgun with both daemons' versions also in a local memcached
               ([store] memcached): what the shared tier costs
  nginx-2w, nginx-gzip1-2w   the nginx pairs with two worker processes each (like for like)

then, for nginx, nginx-gzip1 and coilgun at 100 KB, a paced run at the same offered load
(--rate, default 1000 req/s) to compare p99 latency.

and it reports requests/s, p50/p99 latency, CPU seconds per 1,000 requests (edge and origin
processes, from /proc) and link bytes per response (bytes the origin side
wrote towards the edge, TLS included, from /proc/PID/io). Ratios against the nginx pairs
are printed below the table. Everything runs on this machine's loopback; nginx and wrk are
Debian packages (deploy/install-deps.sh installs them).
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "replay"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from coilgun_replay import launch  # noqa: E402
import many_origins  # noqa: E402

CORPUS = os.environ.get("COILGUN_CORPUS", os.path.join(launch.ROOT, "..", "shared", "corpus"))
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
HOST = "www.example.com"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10,100,400", help="page sizes in KB")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    p.add_argument("--connections", type=int, default=32, help="wrk connections")
    p.add_argument("--threads", type=int, default=2, help="wrk threads")
    p.add_argument("--template", help="the real page /bench pages are made of")
    p.add_argument("--only", help="comma-separated subset of the setups")
    p.add_argument("--sections", default="throughput,slowlink,memory",
                   help="comma-separated: throughput, slowlink, memory, fleet (tests/bench/fleet.py), "
                        "many-origins (tests/bench/many_origins.py, its options prefixed --many-)")
    p.add_argument("--slow-versions", type=int, default=20,
                   help="versions of each corpus series fetched back to back over each slow link")
    p.add_argument("--slow-idle", type=float, default=2.0,
                   help="seconds between fetches in the second, idle-link run (0 skips it)")
    p.add_argument("--slow-idle-versions", type=int, default=3,
                   help="versions of each corpus series fetched in the idle-link run")
    p.add_argument("--slow-congestion", default="cubic",
                   help="TCP congestion control on the slow link's hosts (cubic: Debian's default; "
                        "'' keeps this machine's)")
    p.add_argument("--index-fresh",
                   help="store.memcached_index_fresh of the daemons that use memcached, e.g. 50ms "
                        "(0ms: every request reads its page's index; default: the daemons' own)")
    many_origins.add_arguments(p, "many-")
    p.add_argument("--fleet-passes", type=int, default=1,
                   help="times each fleet setup runs (the setups taking turns); latencies pooled")
    p.add_argument("--idle-connections", type=int, default=10000)
    p.add_argument("--rate", type=int, default=1000,
                   help="offered load (req/s) of the paced 100 KB run comparing p99; 0 skips it")
    p.add_argument("--store-mib", type=int, default=64, help="store budget for the memory section")
    p.add_argument("--perf", metavar="DIR",
                   help="record each wrk run machine-wide with perf (DIR/SETUP-KB.data; adds perf's "
                        "own overhead to the figures): `perf report -i F --sort comm,dso,sym`")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


# ---- processes and measurements ---------------------------------------------------------

def cpu_seconds(pids):
    """User + system CPU seconds of |pids| and their threads so far."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except FileNotFoundError:
            pass
    return total


def thread_cpu(pids):
    """CPU seconds so far of every thread of |pids|, by (pid, tid)."""
    out = {}
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except FileNotFoundError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                out[(pid, tid)] = (int(fields[11]) + int(fields[12])) / tick
            except FileNotFoundError:
                pass
    return out


def machine_cpu():
    """(busy, total) CPU seconds of the whole machine so far, all cores, from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / tick, sum(ticks) / tick


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def io_bytes(pids, field):
    """Sum of /proc/PID/io |field| ("rchar", "wchar": bytes through read/write syscalls)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/io") as f:
                total += int(re.search(rf"^{field}: (\d+)$", f.read(), re.M).group(1))
        except FileNotFoundError:
            pass
    return total


def wrk(url, args, extra=(), prefix=()):
    cmd = [*prefix, WRK, f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration:g}s", "--latency",
           "-H", f"Host: {HOST}", *extra, url]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60)
    out = run.stdout
    if "Requests/sec:" not in out:
        raise RuntimeError(f"wrk failed: {' '.join(cmd)}\n{out}{run.stderr}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)

    def pct(p):
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return {"rps": rps, "requests": total, "p50_ms": pct(50), "p99_ms": pct(99),
            "non_2xx": int(errors.group(1)) if errors else 0,
            "socket_errors": socket_errors.group(1) if socket_errors else ""}


class Setup:
    """Something wrk can drive: its URL, the processes whose CPU counts (edge and origin) and
    those of the origin side alone."""
    name = ""

    def url(self, kb):
        return f"http://127.0.0.1:{self.port}/bench?kb={kb}"

    def pids(self):
        return []

    def origin_pids(self):
        return []

    def store_pids(self):
        """A shared tier's servers (memcached), whose CPU is reported apart."""
        return []

    def stop(self):
        pass


class Direct(Setup):
    name = "direct"

    def __init__(self, backend_port):
        self.port = backend_port


# What both nginx configs start with: one worker, no access log, files in the run directory.
NGINX_HEAD = """
worker_processes {workers};
daemon off;
{user}
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
"""

NGINX_ORIGIN = NGINX_HEAD + """
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 128; keepalive_requests 1000000; }}
  server {{
    listen {host}:{port} ssl;
    ssl_protocols TLSv1.3;
    ssl_certificate {certs}/agent.pem;
    ssl_certificate_key {certs}/agent.key;
    ssl_client_certificate {certs}/ca.pem;
    ssl_verify_client on;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    {gzip}
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
    }}
  }}
}}
"""

NGINX_EDGE = NGINX_HEAD + """
  upstream origin {{ server {origin}; keepalive 128; keepalive_requests 1000000; }}
  server {{
    listen 127.0.0.1:{port};
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    gunzip on;
    location / {{
      proxy_pass https://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      {accept}
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_certificate {certs}/edge-edge.pem;
      proxy_ssl_certificate_key {certs}/edge-edge.key;
      proxy_ssl_trusted_certificate {certs}/ca.pem;
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_ssl_session_reuse on;
    }}
  }}
}}
"""


class NginxPair(Setup):
    """nginx edge -> keep-alive mutual TLS -> nginx origin. The origin listens on |agent_host|,
    started with |origin_prefix| before its argv (the origin side of a slow link)."""

    def __init__(self, tmp, certs, backend_port, gzip_level, agent_host="127.0.0.1", origin_prefix=(),
                 workers=1):
        self.name = (f"nginx-gzip{gzip_level}" if gzip_level else "nginx") + (f"-{workers}w" if workers > 1 else "")
        user = "user root;" if os.geteuid() == 0 else ""
        gzip = (f"gzip on; gzip_comp_level {gzip_level}; gzip_proxied any; gzip_min_length 0; "
                "gzip_types text/html text/css application/json application/javascript;"
                if gzip_level else "gzip off;")
        self.link_port = launch.free_port()  # The nginx origin's TLS listener.
        self.port = launch.free_port()
        self.procs = []
        accept = 'proxy_set_header Accept-Encoding "gzip";' if gzip_level else 'proxy_set_header Accept-Encoding "";'
        try:
            self.procs.append(self._nginx(tmp, "origin", NGINX_ORIGIN.format(
                user=user, workers=workers, dir="{dir}", backend=backend_port, host=agent_host, port=self.link_port,
                certs=certs, gzip=gzip), origin_prefix))
            self.procs.append(self._nginx(tmp, "edge", NGINX_EDGE.format(
                user=user, workers=workers, dir="{dir}", origin=f"{agent_host}:{self.link_port}", port=self.port,
                certs=certs, accept=accept)))
            for host, port in ((agent_host, self.link_port), ("127.0.0.1", self.port)):
                launch.wait_until(lambda: port_open(port, host), what=f"nginx on {host}:{port}")
        except BaseException:
            self.stop()  # No nginx left running when a later step fails.
            raise

    def _nginx(self, tmp, role, conf, prefix=()):
        d = os.path.join(tmp, f"{self.name}-{role}")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf.replace("{dir}", d))
        return subprocess.Popen(list(prefix) + [NGINX, "-p", d, "-c", path], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    def pids(self):
        out = []
        for p in self.procs:
            out += [p.pid] + children(p.pid)
        return out

    def origin_pids(self):
        return [self.procs[0].pid] + children(self.procs[0].pid)

    def edge_pids(self):
        return [self.procs[1].pid] + children(self.procs[1].pid)

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGQUIT)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# More [store] settings for every daemon configured with memcached (--index-fresh).
SHARED_ENV = {}


class CoilgunPair(Setup):
    def __init__(self, tmp, backend_port, workers, memcached=False):
        self.name = ("coilgun" if workers == 1 else f"coilgun-{workers}w") + ("-memcached" if memcached else "")
        env = {"COILGUN_LOG_ACCESS": "false"}
        self.memcached = launch.Memcached() if memcached else None
        if self.memcached:
            env["COILGUN_STORE_MEMCACHED"] = self.memcached.address
            env.update(SHARED_ENV)
        self.pair = launch.Pair(os.path.join(tmp, self.name), backend_port=backend_port, workers=workers,
                                edge_env=env, origin_env=env)
        self.port = self.pair.http_port

    def pids(self):
        return [self.pair.edge.proc.pid, self.pair.origin.proc.pid]

    def origin_pids(self):
        return [self.pair.origin.proc.pid]

    def store_pids(self):
        return [self.memcached.proc.pid] if self.memcached else []

    def stop(self):
        self.pair.stop()
        if self.memcached:
            self.memcached.kill()


def port_open(port, host="127.0.0.1"):
    import socket
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def measure(setup, kb, args, backend_pid, extra=()):
    """One wrk run. Link bytes: what the origin side wrote (TLS included) less what it wrote to
    the backend (the backend's reads), from /proc/PID/io: exact whatever connections come and
    go, logs aside (access logs are off)."""
    # Warm up (connections, TLS, the edge's first version of the page), then measure.
    warm = subprocess.run([WRK, "-t1", "-c2", "-d1s", "-H", f"Host: {HOST}", setup.url(kb)],
                          capture_output=True, text=True, timeout=60)
    if "Requests/sec:" not in warm.stdout:
        raise RuntimeError(f"{setup.name}: the warm-up run failed\n{warm.stdout}{warm.stderr}")
    written = io_bytes(setup.origin_pids(), "wchar") - io_bytes([backend_pid], "rchar")
    cpu_before, backend_before, machine_before = cpu_seconds(setup.pids()), cpu_seconds([backend_pid]), machine_cpu()
    store_before = cpu_seconds(setup.store_pids())
    threads_before, started = thread_cpu(setup.pids()), time.monotonic()
    prefix = ()
    if args.perf:
        os.makedirs(args.perf, exist_ok=True)
        label = f"{setup.name}-{kb}" + ("-paced" if extra else "")
        prefix = ("perf", "record", "-q", "-a", "-g", "-F", "499", "-o", os.path.join(args.perf, f"{label}.data"))
    r = wrk(setup.url(kb), args, extra, prefix)
    threads = thread_cpu(setup.pids())
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(setup.pids()) - cpu_before
    backend_cpu = cpu_seconds([backend_pid]) - backend_before
    store_cpu = cpu_seconds(setup.store_pids()) - store_before
    busy, total = (after - before for after, before in zip(machine_cpu(), machine_before))
    if setup.origin_pids():
        link = io_bytes(setup.origin_pids(), "wchar") - io_bytes([backend_pid], "rchar") - written
        r["link_bytes_per_response"] = link / max(1, r["requests"])
    else:
        r["link_bytes_per_response"] = None
    r["cpu_s_per_1000"] = 1000 * cpu / max(1, r["requests"]) if setup.pids() else None
    # Where the rest of the machine went: the backend, and wrk with the kernel (the remainder).
    r["backend_cpu_s_per_1000"] = 1000 * backend_cpu / max(1, r["requests"])
    r["store_cpu_s_per_1000"] = 1000 * store_cpu / max(1, r["requests"]) if setup.store_pids() else None
    r["machine_busy_pct"] = 100 * os.cpu_count() * busy / max(total, 1e-9)
    # The busiest edge or origin thread, in % of one core: below 100, no worker was the limit.
    r["busiest_thread_pct"] = (100 * max(t - threads_before.get(k, 0) for k, t in threads.items()) / elapsed
                               if threads else None)
    return r


# ---- memory -------------------------------------------------------------------------------

def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                total += int(re.search(r"^VmRSS:\s+(\d+)", f.read(), re.M).group(1))
        except (FileNotFoundError, AttributeError):
            pass
    return total


def read_response(sock):
    """Reads one HTTP/1.1 response with a Content-Length; returns its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        body += chunk
    return int(head.split(b" ")[1])


IDLE_S = 3.0


def idle_connections(port, edge_pids, count):
    """Opens |count| keep-alive connections, makes one request on each, leaves them idle
    IDLE_S seconds and returns the edge's RSS growth (KiB) with them all open."""
    import socket
    before = rss_kib(edge_pids)
    socks = []
    try:
        for i in range(count):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(f"GET /bench?kb=10 HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
            socks.append(s)
            if len(socks) % 500 == 0:  # Read as we go: the edge never holds many at once.
                for t in socks[-500:]:
                    assert read_response(t) == 200
        for t in socks[len(socks) - len(socks) % 500:]:
            assert read_response(t) == 200
        time.sleep(IDLE_S)  # The state measured: every connection idle, not just answered.
        after = rss_kib(edge_pids)
    finally:
        for s in socks:
            s.close()
    return {"connections": count, "rss_before_kib": before, "rss_with_idle_kib": after,
            "kib_per_connection": (after - before) / count}


def memory_section(tmp, certs, backend_port, args):
    import resource
    # This process holds the client sockets; the edge (a child) inherits the limit for its own.
    want = args.idle_connections + 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        if hard < want:
            sys.exit(f"bench_pairs: {args.idle_connections} idle connections need {want} file "
                     f"descriptors; the hard limit is {hard} (ulimit -Hn)")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    out = {}
    nginx = NginxPair(tmp, certs.dir, backend_port, 0)
    try:
        out["nginx_idle"] = idle_connections(nginx.port, nginx.edge_pids(), args.idle_connections)
    finally:
        nginx.stop()
    budget = args.store_mib << 20
    env = {"COILGUN_LOG_ACCESS": "false", "COILGUN_STORE_MAX_BYTES": str(budget)}
    pair = launch.Pair(os.path.join(tmp, "coilgun-mem"), backend_port=backend_port,
                       edge_env=env, origin_env=env)
    try:
        edge, origin = [pair.edge.proc.pid], [pair.origin.proc.pid]
        out["coilgun_idle"] = idle_connections(pair.http_port, edge, args.idle_connections)
        # Ten times the store budget of distinct 100 KiB pages, then the RSS of both daemons.
        pages = 10 * budget // (100 << 10)
        peak = {"edge": 0, "origin": 0}
        conn = None
        import http.client
        for i in range(pages):
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", pair.http_port, timeout=30)
            conn.request("GET", f"/bench?kb=100&page={i}", headers={"Host": HOST})
            r = conn.getresponse()
            r.read()
            if r.status != 200:
                raise RuntimeError(f"page {i}: status {r.status}")
            if i % 200 == 0:
                peak["edge"] = max(peak["edge"], rss_kib(edge))
                peak["origin"] = max(peak["origin"], rss_kib(origin))
        conn.close()
        store = json.loads(launch.get(pair.edge_admin, "/stats", host="127.0.0.1")[2])["store"]
        out["coilgun_cache"] = {
            "store_budget_mib": args.store_mib, "distinct_pages": pages,
            "edge_rss_mib": rss_kib(edge) / 1024, "origin_rss_mib": rss_kib(origin) / 1024,
            "edge_peak_rss_mib": peak["edge"] / 1024, "origin_peak_rss_mib": peak["origin"] / 1024,
            "edge_store_mib": store["bytes"] / (1 << 20), "edge_evictions": store["evictions"]}
        out["coilgun_stream"] = stream_rss(pair, edge, origin)
    finally:
        pair.stop()
    return out


def stream_rss(pair, edge, origin, size=1 << 30):
    """RSS of both daemons sampled while |size| bytes stream through."""
    import socket
    samples = []
    with socket.create_connection(("127.0.0.1", pair.http_port), timeout=30) as s:
        s.sendall(f"GET /big?bytes={size} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        got, next_sample = 0, 0
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
            if got >= next_sample:
                samples.append((got, rss_kib(edge), rss_kib(origin)))
                next_sample += 32 << 20
    return {"bytes": got, "edge_rss_mib_first": samples[0][1] / 1024,
            "edge_rss_mib_max": max(x[1] for x in samples) / 1024,
            "origin_rss_mib_first": samples[0][2] / 1024,
            "origin_rss_mib_max": max(x[2] for x in samples) / 1024}


# ---- slow link ----------------------------------------------------------------------------

PROFILES = [(80, 10), (30, 50), (150, 2)]  # (RTT ms, Mbit/s)


def corpus_requests(versions):
    """(path, expected body) for the first |versions| versions of every corpus series, in
    series order: what a per-series "next version" origin serves, one request each."""
    with open(os.path.join(CORPUS, "manifest.json")) as f:
        series = json.load(f)["series"]
    out = []
    for s in series:
        for v in s["versions"][:versions]:
            with open(os.path.join(CORPUS, s["name"], v["file"]), "rb") as f:
                out.append(("/" + s["name"], f.read()))
    return out


def time_to_last_byte(port, requests, link, idle_s):
    """Fetches |requests| in order over one keep-alive connection, |idle_s| apart; returns,
    for each, the seconds from sending the request to its last body byte and the IP bytes
    that crossed |link| each way meanwhile. Checks every body."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    out = []
    for path, expected in requests:
        if idle_s and out:
            time.sleep(idle_s)  # The scenario's think time, not a wait for anything.
        before = link.delivered()
        t0 = time.perf_counter()
        conn.request("GET", path, headers={"Host": HOST})
        r = conn.getresponse()
        body = r.read()
        seconds = time.perf_counter() - t0
        after = link.delivered()
        out.append((seconds, after["edge"] - before["edge"], after["origin"] - before["origin"]))
        if r.status != 200 or body != expected:
            raise RuntimeError(f"{path}: status {r.status}, {len(body)} bytes, not the corpus version")
    conn.close()
    return out


def slow_link_section(tmp, certs, args):
    import link_emulator
    why_not = link_emulator.available()
    if why_not:
        sys.exit(f"bench_pairs: the slow-link section {why_not}; run as root or choose --sections")
    # Back to back, the links stay busy and TCP's windows stay open; |slow_idle| apart, as when
    # visitors come and go, each connection has idled past its retransmission timeout and
    # starts again from its initial window (RFC 5681 4.1, Linux's tcp_slow_start_after_idle;
    # not with BBR, which paces at its bandwidth estimate instead).
    pacings = [(0.0, args.slow_versions)] + ([(args.slow_idle, args.slow_idle_versions)] if args.slow_idle else [])
    out = []
    for idle_s, versions in pacings:
        requests = corpus_requests(versions)
        for rtt, mbit in PROFILES:
            out.append(slow_link_row(tmp, certs, rtt, mbit, requests, idle_s, args.slow_congestion))
    return out


def slow_link_row(tmp, certs, rtt, mbit, requests, idle_s, congestion):
    import link_emulator
    row = {"rtt_ms": rtt, "mbit": mbit, "idle_s": idle_s, "responses": len(requests),
           "congestion": congestion or "host default"}
    for name in ("nginx-gzip6", "coilgun"):
        # A fresh link (its own namespaces, empty queues) for each pair.
        with link_emulator.SlowLink(rtt, mbit, congestion) as link, link.edge_side():
            runs = slow_link_run(os.path.join(tmp, f"slow-{rtt}-{idle_s}-{name}"), certs, name, link,
                                 requests, idle_s)
            dropped = link.dropped()
        row[name] = slow_link_figures(runs, rtt, mbit)
        row[name]["dropped_packets"] = dropped
        print(f"  slow link {rtt} ms / {mbit} Mbit/s, {idle_s:g} s apart: {name:<12} median "
              f"{row[name]['median_ms']:.0f} ms", file=sys.stderr)
    row["median_speedup_vs_nginx_gzip6"] = row["nginx-gzip6"]["median_ms"] / row["coilgun"]["median_ms"]
    row["beyond_rtt_speedup_vs_nginx_gzip6"] = (row["nginx-gzip6"]["median_beyond_rtt_ms"] /
                                                max(0.1, row["coilgun"]["median_beyond_rtt_ms"]))
    # What no design can beat: an answer that sends no bytes still waits one round trip.
    row["zero_byte_bound_vs_nginx_gzip6"] = row["nginx-gzip6"]["median_ms"] / rtt
    return row


def slow_link_figures(runs, rtt, mbit):
    """Median and p90 of the times to last byte, and what the link alone explains: one round
    trip plus each answer's bytes (IP headers included) at the rate."""
    def pick(values, q):
        values = sorted(values)
        return values[min(len(values) - 1, int(len(values) * q))]

    ms = [1000 * t for t, _, _ in runs]
    # Each direction has its own bottleneck: the answer's bytes at the rate, after one RTT
    # (what goes up meanwhile, ACKs, overlaps it; the request itself is left out: a floor).
    floor = [rtt + down * 8 / (mbit * 1000) for _, _, down in runs]
    median = pick(ms, 0.5)
    # No design answers in under one round trip: what each adds beyond it is the transfer
    # (and processing) time the link encoding decides.
    return {"median_ms": median, "p90_ms": pick(ms, 0.9), "median_beyond_rtt_ms": median - rtt,
            "median_link_bytes": pick([up + down for _, up, down in runs], 0.5),
            "median_floor_ms": pick(floor, 0.5)}


def slow_link_run(tmp, certs, name, link, requests, idle_s):
    """Times to last byte of |requests| through pair |name| across |link|: the backend
    and the origin daemon on the link's origin side, the edge and the client on this side."""
    from link_emulator import ORIGIN_ADDR
    backend = launch.Process(link.origin_side([launch.binary("coilgun-sample-origin"), "--listen",
                                               "127.0.0.1:0", "--corpus", CORPUS]), "corpus-backend")
    try:
        _, backend_port = backend.address("origin")
        if name == "coilgun":
            setup = launch.Pair(tmp, backend_port=backend_port, agent_host=ORIGIN_ADDR,
                                origin_prefix=link.origin_side([]),
                                edge_env={"COILGUN_LOG_ACCESS": "false", "COILGUN_TUNNEL_CONNECTIONS": "1"},
                                origin_env={"COILGUN_LOG_ACCESS": "false"}, )
            port = setup.http_port
        else:
            setup = NginxPair(tmp, certs.dir, backend_port, 6, agent_host=ORIGIN_ADDR,
                              origin_prefix=link.origin_side([]))
            port = setup.port
        try:
            return time_to_last_byte(port, requests, link, idle_s)
        finally:
            setup.stop()
    finally:
        backend.stop()


def default_template():
    path = os.path.join(CORPUS, "news-fr-home", "0000.html")
    return path if os.path.exists(path) else None


def throughput_section(tmp, certs, backend, backend_port, sizes, args):
    only = set(args.only.split(",")) if args.only else None
    makers = [
        ("direct", lambda: Direct(backend_port)),
        ("nginx", lambda: NginxPair(tmp, certs.dir, backend_port, 0)),
        ("nginx-gzip1", lambda: NginxPair(tmp, certs.dir, backend_port, 1)),
        ("nginx-gzip6", lambda: NginxPair(tmp, certs.dir, backend_port, 6)),
        ("coilgun", lambda: CoilgunPair(tmp, backend_port, 1)),
        ("coilgun-2w", lambda: CoilgunPair(tmp, backend_port, 2)),
        ("coilgun-memcached", lambda: CoilgunPair(tmp, backend_port, 1, memcached=True)),
        ("nginx-2w", lambda: NginxPair(tmp, certs.dir, backend_port, 0, workers=2)),
        ("nginx-gzip1-2w", lambda: NginxPair(tmp, certs.dir, backend_port, 1, workers=2)),
    ]
    results = {}
    for name, make in makers:
        if only and name not in only:
            continue
        setup = make()
        try:
            for kb in sizes:
                results.setdefault(str(kb), {})[name] = measure(setup, kb, args, backend.proc.pid)
                r = results[str(kb)][name]
                store = (f" (memcached {r['store_cpu_s_per_1000']:.3f} CPU s/1k)"
                         if r["store_cpu_s_per_1000"] is not None else "")
                print(f"  {name:<12} {kb:>4} KB: {r['rps']:9.0f} req/s{store}", file=sys.stderr)
            if args.rate and name in ("nginx", "nginx-gzip1", "coilgun"):
                # The same offered load for every pair: each connection waits 1000*C/R ms
                # between a response and its next request (wrk's delay() hook).
                script = os.path.join(tmp, "paced.lua")
                with open(script, "w") as f:
                    f.write(f"function delay() return {1000 * args.connections / args.rate:.3f} end\n")
                kb = 100
                paced = measure(setup, kb, args, backend.proc.pid, extra=("-s", script))
                results.setdefault(f"{kb}@{args.rate}/s", {})[name] = paced
                print(f"  {name:<12} {kb:>4} KB at ~{args.rate}/s: p99 {paced['p99_ms']:.2f} ms",
                      file=sys.stderr)
        finally:
            setup.stop()
    return results


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # A plain kill (or timeout) unwinds like Ctrl-C: every process stopped, the slow link's
    # namespaces deleted and the host's TCP setting put back.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for tool in (NGINX, WRK):
        if not os.path.exists(tool):
            sys.exit(f"bench_pairs: {tool} is missing (deploy/install-deps.sh installs it)")
    sizes = [int(x) for x in args.sizes.split(",")]
    if args.index_fresh:
        SHARED_ENV["COILGUN_STORE_MEMCACHED_INDEX_FRESH"] = args.index_fresh
    template = args.template or default_template()
    results, memory, slow, fleet_report, many = {}, None, None, None, None
    tmp = tempfile.mkdtemp(prefix="coilgun-bench-")
    try:
        certs = launch.Certs(os.path.join(tmp, "certs"))
        backend_args = [launch.binary("coilgun-sample-origin"), "--listen", "127.0.0.1:0"]
        if template:
            backend_args += ["--template", template]
        backend = launch.Process(backend_args, "backend")
        try:
            _, backend_port = backend.address("origin")
            sections = set(args.sections.split(","))
            if "throughput" in sections:
                results = throughput_section(tmp, certs, backend, backend_port, sizes, args)
            if "slowlink" in sections:
                slow = slow_link_section(tmp, certs, args)
            memory = memory_section(tmp, certs, backend_port, args) if "memory" in sections else None
            if "fleet" in sections:
                import fleet
                fleet_report = fleet.fleet_section(tmp, certs, CORPUS, corpus_requests(1 << 30),
                                                   args.fleet_passes, SHARED_ENV)
            if "many-origins" in sections:
                many = many_origins.section(tmp, backend_port, args)
        finally:
            backend.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = {"template": template, "duration_s": args.duration, "connections": args.connections,
              "sizes_kb": sizes, "throughput": results, "ratios": ratios(results), "slow_link": slow,
              "memory": memory, "fleet": fleet_report,
              "many_origins": {"base": many[0], "runs": many[1]} if many else None}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        table(report)
        if many:
            many_origins.table(*many)
    return 0


def ratios(results):
    out = {}
    for kb, r in results.items():
        if "@" in kb:  # Paced runs: compare latency, not throughput.
            c = r.get("coilgun")
            if c:
                out[kb] = {f"p99_vs_{peer}": c["p99_ms"] / r[peer]["p99_ms"]
                           for peer in ("nginx", "nginx-gzip1") if peer in r}
            continue
        c = r.get("coilgun")
        if not c:
            continue
        o = {}
        for peer in ("nginx", "nginx-gzip1", "nginx-gzip6"):
            if peer in r:
                o[f"rps_vs_{peer}"] = c["rps"] / r[peer]["rps"]
                if r[peer]["link_bytes_per_response"]:
                    o[f"link_vs_{peer}"] = c["link_bytes_per_response"] / r[peer]["link_bytes_per_response"]
        if "coilgun-2w" in r:
            o["two_workers_vs_one"] = r["coilgun-2w"]["rps"] / c["rps"]
            # Like for like: two workers (processes) each side for nginx too.
            for peer in ("nginx-2w", "nginx-gzip1-2w"):
                if peer in r:
                    o[f"2w_rps_vs_{peer}"] = r["coilgun-2w"]["rps"] / r[peer]["rps"]
        for one, two in (("nginx", "nginx-2w"), ("nginx-gzip1", "nginx-gzip1-2w")):
            if one in r and two in r:
                o[f"{two}_vs_{one}"] = r[two]["rps"] / r[one]["rps"]
        out[kb] = o
    return out


def table(report):
    if report["throughput"]:
        throughput_table(report)
    slow_and_memory_tables(report)
    if report["fleet"]:
        import fleet
        fleet.table(report["fleet"])


def throughput_table(report):
    print(f"\nthroughput and latency: wrk -t? -c{report['connections']} -d{report['duration_s']}s, "
          f"template {report['template'] or '(generated)'}")
    print(f"{'size':>6} {'setup':<12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU s/1k':>9} "
          f"{'link B/resp':>12} {'non-2xx':>8} {'backend s/1k':>13} {'machine %':>10} {'thread %':>9}")
    for kb, r in report["throughput"].items():
        for name, m in r.items():
            link = f"{m['link_bytes_per_response']:.0f}" if m["link_bytes_per_response"] is not None else "-"
            cpu = f"{m['cpu_s_per_1000']:.3f}" if m["cpu_s_per_1000"] is not None else "-"
            thread = f"{m['busiest_thread_pct']:.0f}" if m.get("busiest_thread_pct") is not None else "-"
            print(f"{kb.replace('@', ' KB @') if '@' in kb else kb + ' KB':>6} {name:<12} {m['rps']:9.0f} {m['p50_ms']:8.2f} {m['p99_ms']:8.2f} "
                  f"{cpu:>9} {link:>12} {m['non_2xx']:>8} {m['backend_cpu_s_per_1000']:>13.3f} "
                  f"{m['machine_busy_pct']:>10.0f} {thread:>9}")
    print("CPU s/1k: edge and origin processes; backend s/1k: the backend; machine %: every core's busy\n"
          f"time over the run (100% = one core of {os.cpu_count()}), wrk and the kernel included; thread %: the\n"
          "busiest edge or origin thread (nginx: process), in % of one core\n")
    for kb, o in report["ratios"].items():
        label = kb.replace("@", " KB at ") if "@" in kb else kb + " KB"
        print(f"{label}: " + ", ".join(f"{k} {v:.3f}" for k, v in o.items()))


def slow_and_memory_tables(report):
    if report["slow_link"]:
        print("\nslow link: time to last byte per response, corpus versions in order; edge and origin in\n"
              "network namespaces of their own, every packet between them through the bandwidth limit\n"
              "(drop-tail queue of 4 BDP) and RTT/2 each way (tests/bench/link_emulator.py); TCP "
              f"{report['slow_link'][0]['congestion']}")
        print(f"{'apart':>6} {'RTT':>6} {'Mbit/s':>7} {'setup':<12} {'median ms':>10} {'p90 ms':>8} "
              f"{'beyond RTT':>11} {'link B':>8} {'link floor':>11}")
        for row in report["slow_link"]:
            for name in ("nginx-gzip6", "coilgun"):
                x = row[name]
                print(f"{row['idle_s']:>5g}s {row['rtt_ms']:>6} {row['mbit']:>7} {name:<12} {x['median_ms']:>10.1f} "
                      f"{x['p90_ms']:>8.1f} "
                      f"{x['median_beyond_rtt_ms']:>11.1f} {x['median_link_bytes']:>8} {x['median_floor_ms']:>11.1f}")
            print(f"{'':>22}median speed-up against nginx-gzip6: {row['median_speedup_vs_nginx_gzip6']:.2f}x "
                  f"(beyond the round trip: {row['beyond_rtt_speedup_vs_nginx_gzip6']:.1f}x; "
                  f"an answer of zero bytes: {row['zero_byte_bound_vs_nginx_gzip6']:.2f}x)")
        print("apart: from one response's last byte to the next request (0: back to back); link B: median\n"
              "IP bytes across the link per response, both ways; link floor: median of RTT + the answer's\n"
              "bytes at the link rate, what the link alone costs each response")
    m = report["memory"]
    if m:
        print("\nmemory")
        for name in ("nginx_idle", "coilgun_idle"):
            x = m[name]
            print(f"  {name.split('_')[0]:<8} edge RSS with {x['connections']} keep-alive connections idle {IDLE_S:g} s: "
                  f"{x['rss_with_idle_kib'] / 1024:.1f} MiB ({x['kib_per_connection']:.2f} KiB each)")
        c = m["coilgun_cache"]
        print(f"  coilgun after {c['distinct_pages']} distinct 100 KiB pages (10x a {c['store_budget_mib']} MiB "
              f"store): edge {c['edge_rss_mib']:.1f} MiB (peak {c['edge_peak_rss_mib']:.1f}), origin "
              f"{c['origin_rss_mib']:.1f} MiB (peak {c['origin_peak_rss_mib']:.1f}); edge store "
              f"{c['edge_store_mib']:.1f} MiB, {c['edge_evictions']} evictions")
        st = m["coilgun_stream"]
        print(f"  coilgun streaming {st['bytes'] >> 20} MiB: edge {st['edge_rss_mib_first']:.1f} -> "
              f"{st['edge_rss_mib_max']:.1f} MiB, origin {st['origin_rss_mib_first']:.1f} -> "
              f"{st['origin_rss_mib_max']:.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())
