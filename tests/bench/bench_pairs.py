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
from coilgun_replay import launch  # noqa: E402

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


def wrk(url, args, extra=()):
    cmd = [WRK, f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration:g}s", "--latency",
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

    def stop(self):
        pass


class Direct(Setup):
    name = "direct"

    def __init__(self, backend_port):
        self.port = backend_port


# What both nginx configs start with: one worker, no access log, files in the run directory.
NGINX_HEAD = """
worker_processes 1;
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
    listen 127.0.0.1:{port} ssl;
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
  upstream origin {{ server 127.0.0.1:{origin}; keepalive 128; keepalive_requests 1000000; }}
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
    def __init__(self, tmp, certs, backend_port, gzip_level):
        self.name = f"nginx-gzip{gzip_level}" if gzip_level else "nginx"
        user = "user root;" if os.geteuid() == 0 else ""
        gzip = (f"gzip on; gzip_comp_level {gzip_level}; gzip_proxied any; gzip_min_length 0; "
                "gzip_types text/html text/css application/json application/javascript;"
                if gzip_level else "gzip off;")
        self.link_port = launch.free_port()  # The nginx origin's TLS listener.
        self.port = launch.free_port()
        self.procs = []
        self.procs.append(self._nginx(tmp, "origin", NGINX_ORIGIN.format(
            user=user, dir="{dir}", backend=backend_port, port=self.link_port, certs=certs, gzip=gzip)))
        accept = 'proxy_set_header Accept-Encoding "gzip";' if gzip_level else 'proxy_set_header Accept-Encoding "";'
        self.procs.append(self._nginx(tmp, "edge", NGINX_EDGE.format(
            user=user, dir="{dir}", origin=self.link_port, port=self.port, certs=certs, accept=accept)))
        for port in (self.link_port, self.port):
            launch.wait_until(lambda: port_open(port), what=f"nginx on {port}")

    def _nginx(self, tmp, role, conf):
        d = os.path.join(tmp, f"{self.name}-{role}")
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf.replace("{dir}", d))
        return subprocess.Popen([NGINX, "-p", d, "-c", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def pids(self):
        out = []
        for p in self.procs:
            out += [p.pid] + children(p.pid)
        return out

    def origin_pids(self):
        return [self.procs[0].pid] + children(self.procs[0].pid)

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGQUIT)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class CoilgunPair(Setup):
    def __init__(self, tmp, backend_port, workers):
        self.name = "coilgun" if workers == 1 else f"coilgun-{workers}w"
        self.pair = launch.Pair(os.path.join(tmp, self.name), backend_port=backend_port, workers=workers,
                                edge_env={"COILGUN_LOG_ACCESS": "false"},
                                origin_env={"COILGUN_LOG_ACCESS": "false"})
        self.port = self.pair.http_port

    def pids(self):
        return [self.pair.edge.proc.pid, self.pair.origin.proc.pid]

    def origin_pids(self):
        return [self.pair.origin.proc.pid]

    def stop(self):
        self.pair.stop()


def port_open(port):
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def measure(setup, kb, args, backend_pid):
    """One wrk run. Link bytes: what the origin side wrote (TLS included) less what it wrote to
    the backend (the backend's reads), from /proc/PID/io: exact whatever connections come and
    go, logs aside (access logs are off)."""
    # Warm up (connections, TLS, the edge's first version of the page), then measure.
    subprocess.run([WRK, "-t1", "-c2", "-d1s", "-H", f"Host: {HOST}", setup.url(kb)], capture_output=True)
    written = io_bytes(setup.origin_pids(), "wchar") - io_bytes([backend_pid], "rchar")
    cpu_before = cpu_seconds(setup.pids())
    r = wrk(setup.url(kb), args)
    cpu = cpu_seconds(setup.pids()) - cpu_before
    if setup.origin_pids():
        link = io_bytes(setup.origin_pids(), "wchar") - io_bytes([backend_pid], "rchar") - written
        r["link_bytes_per_response"] = link / max(1, r["requests"])
    else:
        r["link_bytes_per_response"] = None
    r["cpu_s_per_1000"] = 1000 * cpu / max(1, r["requests"]) if setup.pids() else None
    return r


def default_template():
    path = os.path.join(CORPUS, "news-fr-home", "0000.html")
    return path if os.path.exists(path) else None


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    for tool in (NGINX, WRK):
        if not os.path.exists(tool):
            sys.exit(f"bench_pairs: {tool} is missing (deploy/install-deps.sh installs it)")
    sizes = [int(x) for x in args.sizes.split(",")]
    template = args.template or default_template()
    only = set(args.only.split(",")) if args.only else None
    results = {}
    tmp = tempfile.mkdtemp(prefix="coilgun-bench-")
    try:
        certs = launch.Certs(os.path.join(tmp, "certs"))
        backend_args = [launch.binary("coilgun-sample-origin"), "--listen", "127.0.0.1:0"]
        if template:
            backend_args += ["--template", template]
        backend = launch.Process(backend_args, "backend")
        _, backend_port = backend.address("origin")
        makers = [
            ("direct", lambda: Direct(backend_port)),
            ("nginx", lambda: NginxPair(tmp, certs.dir, backend_port, 0)),
            ("nginx-gzip1", lambda: NginxPair(tmp, certs.dir, backend_port, 1)),
            ("nginx-gzip6", lambda: NginxPair(tmp, certs.dir, backend_port, 6)),
            ("coilgun", lambda: CoilgunPair(tmp, backend_port, 1)),
            ("coilgun-2w", lambda: CoilgunPair(tmp, backend_port, 2)),
        ]
        for name, make in makers:
            if only and name not in only:
                continue
            setup = make()
            try:
                for kb in sizes:
                    results.setdefault(str(kb), {})[name] = measure(setup, kb, args, backend.proc.pid)
                    print(f"  {name:<12} {kb:>4} KB: {results[str(kb)][name]['rps']:9.0f} req/s",
                          file=sys.stderr)
            finally:
                setup.stop()
        backend.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = {"template": template, "duration_s": args.duration, "connections": args.connections,
              "sizes_kb": sizes, "throughput": results, "ratios": ratios(results)}
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        table(report)
    return 0


def ratios(results):
    out = {}
    for kb, r in results.items():
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
        out[kb] = o
    return out


def table(report):
    print(f"\nthroughput and latency: wrk -t? -c{report['connections']} -d{report['duration_s']}s, "
          f"template {report['template'] or '(generated)'}")
    print(f"{'size':>6} {'setup':<12} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU s/1k':>9} "
          f"{'link B/resp':>12} {'non-2xx':>8}")
    for kb, r in report["throughput"].items():
        for name, m in r.items():
            link = f"{m['link_bytes_per_response']:.0f}" if m["link_bytes_per_response"] is not None else "-"
            cpu = f"{m['cpu_s_per_1000']:.3f}" if m["cpu_s_per_1000"] is not None else "-"
            print(f"{kb + ' KB':>6} {name:<12} {m['rps']:9.0f} {m['p50_ms']:8.2f} {m['p99_ms']:8.2f} "
                  f"{cpu:>9} {link:>12} {m['non_2xx']:>8}")
    print()
    for kb, o in report["ratios"].items():
        print(f"{kb} KB: " + ", ".join(f"{k} {v:.3f}" for k, v in o.items()))


if __name__ == "__main__":
    sys.exit(main())
