"""Many origins per edge (issue #13): one agent listening on 0.0.0.0, one edge with N routes,
each to a distinct 127.x.y.z address of that agent, as a CDN edge carrying N small sites.

    COILGUN_BUILD=build/release python3 tests/bench/many_origins.py --counts 100,1000
    bash tests/bench/run-pairs.sh --sections many-origins --many-counts 100,1000,5000 --many-requests

For each N it prints the time until every tunnel is up, how long a reload (SIGHUP) of the same
file takes, both daemons' RSS, the memory each idle
tunnel costs on each side (the RSS difference against a run with --base routes, over the
difference in tunnels), idle CPU over --idle seconds, and with --requests the p50/p99 of a first
and of a second request to each host and what those left behind per route once idle again.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "replay"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from coilgun_replay.launch import Certs, Process, binary, free_port, merged_env, wait_until  # noqa: E402


def agent_address(i):
    """The i-th agent address: 127.1.0.1, 127.1.0.2, ... (never 127.0.0.1, which the edge's own
    listeners use)."""
    return f"127.{1 + i // 65025}.{(i // 255) % 255}.{1 + i % 255}"


def edge_config(path, n, agent_port, certs, workers, connections, extra=""):
    lines = [f'listen = "127.0.0.1:0"', 'admin = "127.0.0.1:0"', f"workers = {workers}",
             "[tunnel]", f"connections = {connections}",
             "[tls]", f'ca = "{certs.path("ca.pem")}"', f'cert = "{certs.path("edge-edge.pem")}"',
             f'key = "{certs.path("edge-edge.key")}"', extra]
    for i in range(n):
        lines += ["[[route]]", f'hosts = ["site{i}.test"]', f'agent = "{agent_address(i)}:{agent_port}"',
                  'agent_name = "localhost"']
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as r:
        return json.load(r)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fetch_ms(port, host, path):
    """Milliseconds for one GET of |path| on |host| through the edge (a new connection each
    time)."""
    start = time.monotonic()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()
        if r.status >= 300:
            raise RuntimeError(f"{host}: {r.status}")
    return (time.monotonic() - start) * 1000


def pick(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


class Setup:
    """A backend, the agent on 0.0.0.0 and an edge with |n| routes."""

    def __init__(self, tmp, n, args, backend_port, certs):
        self.n = n
        self.tunnels = n * args.many_connections  # tunnel.connections counts per process.
        self.origin = Process([binary("coilgun-origin"), "--listen", "0.0.0.0:0", "--admin", "127.0.0.1:0",
                               "--backend", f"http://127.0.0.1:{backend_port}", "--workers", str(args.many_workers)]
                              + certs.agent_flags(), "origin", env=merged_env({}))
        _, self.agent_port = self.origin.address("tunnel")
        _, self.origin_admin = self.origin.address("admin")
        config = os.path.join(tmp, f"edge-{n}.toml")
        edge_config(config, n, self.agent_port, certs, args.many_workers, args.many_connections, args.many_edge_extra)
        self.started = time.monotonic()
        self.edge = Process([binary("coilgun-edge"), "-c", config], "edge", env=merged_env({}))
        _, self.http_port = self.edge.address("http")
        _, self.edge_admin = self.edge.address("admin")
        wait_until(lambda: stats(self.edge_admin)["tunnels"] >= self.tunnels, timeout=max(30, n / 20),
                   what=f"{self.tunnels} tunnels up")
        self.up_s = time.monotonic() - self.started

    def stop(self):
        for p in (self.edge, self.origin):
            p.stop()


def measure(tmp, n, args, backend_port, certs):
    s = Setup(tmp, n, args, backend_port, certs)
    try:
        time.sleep(1)  # Lets the handshakes' leftovers be freed before RSS is read; not a wait for an event.
        out = {"n": n, "tunnels": s.tunnels, "up_s": s.up_s,
               "edge_rss_kib": s.edge.rss_kib(), "origin_rss_kib": s.origin.rss_kib()}
        # A reload of the same file: read, validated, compared and applied by every worker.
        start = time.monotonic()
        s.edge.signal(signal.SIGHUP)
        s.edge.wait_for(lambda r: r.get("msg") == "reloaded", timeout=60, what="reloaded")
        out["reload_s"] = time.monotonic() - start
        if args.many_idle > 0:
            c0 = (cpu_seconds(s.edge.proc.pid), cpu_seconds(s.origin.proc.pid))
            time.sleep(args.many_idle)  # The idle period measured.
            c1 = (cpu_seconds(s.edge.proc.pid), cpu_seconds(s.origin.proc.pid))
            out["idle_cpu_pct"] = [100 * (b - a) / args.many_idle for a, b in zip(c0, c1)]
        if args.many_requests:
            hosts = [f"site{i}.test" for i in range(n)]
            first = [fetch_ms(s.http_port, h, args.many_path) for h in hosts]
            second = [fetch_ms(s.http_port, h, args.many_path) for h in hosts]
            out["first_ms"] = [pick(first, 0.5), pick(first, 0.99)]
            out["second_ms"] = [pick(second, 0.5), pick(second, 0.99)]
            time.sleep(1)  # As above: the tunnels idle again before RSS is read.
            out["after_kib"] = [s.edge.rss_kib(), s.origin.rss_kib()]
        return out
    finally:
        s.stop()


NGINX_MANY_EDGE_SERVER = """
  upstream up{i} {{ server {addr}:{port}; keepalive 2; }}
  server {{
    listen 127.0.0.1:{listen};
    server_name site{i}.test;
    location / {{
      proxy_pass https://up{i};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_ssl_protocols TLSv1.3;
      proxy_ssl_certificate {certs}/edge-edge.pem;
      proxy_ssl_certificate_key {certs}/edge-edge.key;
      proxy_ssl_trusted_certificate {certs}/ca.pem;
      proxy_ssl_verify on;
      proxy_ssl_name localhost;
      proxy_ssl_session_reuse on;
    }}
  }}
"""


def established_to(port):
    """TCP connections established to local port |port| (counted on the connecting side)."""
    out = subprocess.run(["ss", "-Htn", "state", "established", f"( dport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return len([line for line in out.splitlines() if line.strip()])


def nginx_peer(tmp, n, args, backend_port, certs):
    """The same shape through nginx: an nginx origin (mutual TLS, like the agent) on 0.0.0.0 in
    front of the backend, and an nginx edge with one server and one keep-alive TLS upstream per
    host (127.1.x.y). nginx opens upstream connections on demand, so its figures are taken
    after one request to each host: RSS per idle upstream connection (against the RSS before
    any request) and the first and second request's latency."""
    import bench_pairs  # Here, not at the top: bench_pairs imports this module.
    user = "user root;" if os.geteuid() == 0 else ""
    origin_port, edge_port = free_port(), free_port()
    head = bench_pairs.NGINX_HEAD.format(user=user, workers=args.many_workers, dir="{dir}")
    origin_conf = bench_pairs.NGINX_ORIGIN.format(user=user, workers=args.many_workers, dir="{dir}",
                                                  backend=backend_port, host="0.0.0.0", port=origin_port,
                                                  certs=certs.dir, gzip="gzip off;")
    servers = "".join(NGINX_MANY_EDGE_SERVER.format(i=i, addr=agent_address(i), port=origin_port, listen=edge_port,
                                                    certs=certs.dir) for i in range(n))
    procs = []
    try:
        for role, conf in (("origin", origin_conf), ("edge", head + servers + "}\n")):
            d = os.path.join(tmp, f"nginx-many-{n}-{role}")
            os.makedirs(d, exist_ok=True)
            path = os.path.join(d, "nginx.conf")
            with open(path, "w") as f:
                f.write(conf.replace("{dir}", d))
            procs.append(subprocess.Popen([bench_pairs.NGINX, "-p", d, "-c", path], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        for port in (origin_port, edge_port):
            wait_until(lambda: bench_pairs.port_open(port), timeout=60, what=f"nginx on {port}")
        pids = [[p.pid] + bench_pairs.children(p.pid) for p in procs]
        before = [bench_pairs.rss_kib(x) for x in pids]
        hosts = [f"site{i}.test" for i in range(n)]
        first = [fetch_ms(edge_port, h, args.many_path) for h in hosts]
        second = [fetch_ms(edge_port, h, args.many_path) for h in hosts]
        time.sleep(1)  # As for Coilgun: idle again before RSS is read.
        after = [bench_pairs.rss_kib(x) for x in pids]
        conns = established_to(origin_port)
        return {"n": n, "connections": conns, "rss_kib": after,
                "per_connection_kib": [(a - b) / max(1, conns) for a, b in zip(after, before)],
                "first_ms": [pick(first, 0.5), pick(first, 0.99)], "second_ms": [pick(second, 0.5), pick(second, 0.99)]}
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=10)


def check_seconds(tmp, n, certs):
    """Seconds `coilgun-edge -c FILE --check` takes on a file with |n| routes (best of 3)."""
    config = os.path.join(tmp, f"check-{n}.toml")
    edge_config(config, n, 2408, certs, 2, 2)
    times = []
    for _ in range(3):
        start = time.monotonic()
        subprocess.run([binary("coilgun-edge"), "-c", config, "--check"], check=True, capture_output=True)
        times.append(time.monotonic() - start)
    return min(times)


def section(tmp, backend_port, args):
    """The runs for --base and each of --counts; returns (base, [result])."""
    certs = Certs(os.path.join(tmp, "many-certs"), agent_names=("localhost",))
    if args.many_check:
        print(f"many origins: --check of {args.many_check} routes: {check_seconds(tmp, args.many_check, certs):.2f} s",
              flush=True)
    base = measure(tmp, args.many_base, argparse.Namespace(**{**vars(args), "many_idle": 0, "many_requests": False}),
                   backend_port, certs)
    rows = []
    for c in str(args.many_counts).split(","):
        r = measure(tmp, int(c), args, backend_port, certs)
        if args.many_nginx:
            r["nginx"] = nginx_peer(tmp, int(c), args, backend_port, certs)
        rows.append(r)
    return base, rows


def table(base, rows):
    print(f"\nmany origins: one agent, an edge with N routes to distinct 127.1.x.y addresses "
          f"(base {base['n']} routes: edge {base['edge_rss_kib'] / 1024:.1f} MiB, "
          f"agent {base['origin_rss_kib'] / 1024:.1f} MiB)")
    for r in rows:
        extra = r["tunnels"] - base["tunnels"]
        per = [(r[k] - base[k]) / extra for k in ("edge_rss_kib", "origin_rss_kib")]
        line = (f"{r['n']} routes, {r['tunnels']} tunnels: up in {r['up_s']:.2f} s, reload {r['reload_s']:.2f} s; "
                f"RSS edge {r['edge_rss_kib'] / 1024:.1f} MiB, agent {r['origin_rss_kib'] / 1024:.1f} MiB; "
                f"per tunnel edge {per[0]:.1f} KiB, agent {per[1]:.1f} KiB")
        if "idle_cpu_pct" in r:
            line += f"; idle CPU edge {r['idle_cpu_pct'][0]:.2f}%, agent {r['idle_cpu_pct'][1]:.2f}%"
        if "first_ms" in r:
            grown = [(a - r[k]) / r["n"] for a, k in zip(r["after_kib"], ("edge_rss_kib", "origin_rss_kib"))]
            line += (f"; first request p50/p99 {r['first_ms'][0]:.2f}/{r['first_ms'][1]:.2f} ms, "
                     f"second {r['second_ms'][0]:.2f}/{r['second_ms'][1]:.2f} ms; idle again, RSS grew "
                     f"{grown[0]:.1f} KiB (edge) and {grown[1]:.1f} KiB (agent) per route")
        print(line, flush=True)
        if "nginx" in r:
            x = r["nginx"]
            print(f"  nginx, {x['n']} upstreams: {x['connections']} keep-alive TLS upstream connections after the "
                  f"requests; RSS edge {x['rss_kib'][1] / 1024:.1f} MiB, origin {x['rss_kib'][0] / 1024:.1f} MiB; "
                  f"per idle connection edge {x['per_connection_kib'][1]:.1f} KiB, origin "
                  f"{x['per_connection_kib'][0]:.1f} KiB; first request p50/p99 {x['first_ms'][0]:.2f}/"
                  f"{x['first_ms'][1]:.2f} ms, second {x['second_ms'][0]:.2f}/{x['second_ms'][1]:.2f} ms", flush=True)


def add_arguments(p, prefix=""):
    p.add_argument(f"--{prefix}counts", dest="many_counts", default="100,1000")
    p.add_argument(f"--{prefix}base", dest="many_base", type=int, default=10,
                   help="routes of the run the others are compared with")
    p.add_argument(f"--{prefix}workers", dest="many_workers", type=int, default=2)
    p.add_argument(f"--{prefix}connections", dest="many_connections", type=int, default=2)
    p.add_argument(f"--{prefix}idle", dest="many_idle", type=float, default=30.0,
                   help="seconds of idle CPU measured (0: none)")
    p.add_argument(f"--{prefix}requests", dest="many_requests", action="store_true",
                   help="a first and a second request to each host")
    p.add_argument(f"--{prefix}path", dest="many_path", default="/",
                   help="what the requests ask for: / is the sample site's front page (both daemons then "
                        "keep its versions); /status/204 has no body (what a request leaves in the tunnels alone)")
    p.add_argument(f"--{prefix}nginx", dest="many_nginx", action="store_true",
                   help="the same shape through nginx (one keep-alive TLS upstream per host) after each N")
    p.add_argument(f"--{prefix}check", dest="many_check", type=int, default=10000,
                   help="also time --check on a file with this many routes (0: not)")
    p.add_argument(f"--{prefix}edge-extra", dest="many_edge_extra", default="",
                   help="TOML lines added to the edge's config")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        backend = Process([binary("coilgun-sample-origin"), "--listen", "127.0.0.1:0"], "backend")
        try:
            _, backend_port = backend.address("origin")
            table(*section(tmp, backend_port, args))
        finally:
            backend.stop()


if __name__ == "__main__":
    main()
