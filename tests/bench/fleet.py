#!/usr/bin/env python3
"""The `fleet` section of tests/bench/bench_pairs.py (issue #12): what sharing versions on
memcached buys edges behind one load balancer, and what it costs each request.

    bash tests/bench/run-pairs.sh --sections fleet [--fleet-passes N] [--index-fresh D] [--json]
    COILGUN_BUILD=DIR python3 tests/bench/bench_pairs.py --sections fleet [--fleet-passes N] [--json]

Every version of every series of the corpus ($COILGUN_CORPUS, bench_pairs.corpus_requests), in
series order, one client, one request at a time, the requests dealt round-robin over the edges
(request i to edge i mod N). The backend is coilgun-sample-origin --corpus, which serves a
series' versions in order, one per request, whichever agent asks. Four setups, each with fresh
processes, a fresh backend and, where named, fresh memcached servers:

  one-edge           1 edge, 1 agent, memory only: the reference for link/body
  one-edge-memcached the same, both daemons' [store] memcached naming 2 local servers: what
                     memcached costs a request when it changes nothing else
  fleet-memory       4 edges, 2 agents, memory only: each edge sees every 4th version
  fleet-memcached    4 edges, 2 agents, all six sharing 2 memcached servers

Each edge names both agents (`--agent A,B`) when this build's edge takes several; with
an edge that takes one, edge i names agent i mod 2 (the report says which). Every body is
checked byte for byte against the corpus file.

With --fleet-passes N every setup runs N times, the setups taking turns (each pass a fresh fleet),
and the figures below are taken over all N passes (latencies pooled).

Figures, over every request after each series' first version (that one crosses in full
everywhere): the share of responses coded as deltas and tunnel bytes into the edges over body
bytes served (each request's difference in the serving edge's coilgun_delta_responses_total,
coilgun_link_bytes_total{direction="in"} and coilgun_body_bytes_total), and the latency the
client saw, p50 and p99 (request sent to last body byte, keep-alive connection per edge).

The corpus's versions were minutes to hours apart; back to back, a version an edge just stored
may still be in its memcached write queue when the next edge asks. With memcached, after each
response the bench waits (bounded by SETTLE_S, polling /stats every 1 ms) until every daemon
whose store took a version in (store.inserts moved) has written it to memcached or given up
(store.shared writes or dropped moved), as the hours between versions would have; that wait is
outside the latency measured, and no wait is made for a version no daemon stored (the agent kept
no new base). The report counts the waits that ran out. Memory-only setups ask the same /stats
between requests (once), so the client does the same work in every setup.
"""

import http.client
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "replay"))
from coilgun_replay import launch  # noqa: E402

LINK_IN = 'coilgun_link_bytes_total{direction="in"}'
BODY = "coilgun_body_bytes_total"
CODED = 'coilgun_delta_responses_total{{result="{}"}}'
SHARED = 'coilgun_store_shared_events{{event="{}"}}'
HOST = "www.example.com"

SETUPS = [  # name, edges, agents, memcached servers
    ("one-edge", 1, 1, 0),
    ("one-edge-memcached", 1, 1, 2),
    ("fleet-memory", 4, 2, 0),
    ("fleet-memcached", 4, 2, 2),
]
SETTLE_S = 2.0  # The longest wait for a version's memcached writes after its response.
# Edges without access logs; agents with, for the reason a response streamed ("trickle": the
# backend paused past delta.stream_after).
ENV = {"COILGUN_LOG_ACCESS": "false"}
AGENT_ENV = {"COILGUN_LOG_ACCESS": "true"}


def several_agents_supported(certs):
    """Whether this build's edge takes a list of agents (issue #12 §3): --print-config shows both
    agents of `--agent A,B` (an edge taking one agent refuses the comma)."""
    r = subprocess.run([launch.binary("coilgun-edge"), "--print-config", "--agent", "127.0.0.1:1,127.0.0.1:2"]
                       + certs.edge_flags(), capture_output=True, text=True, env=launch.merged_env(None))
    return r.returncode == 0 and "127.0.0.1:1" in r.stdout and "127.0.0.1:2" in r.stdout


class Fleet:
    """A corpus backend, |agents| agents and |edges| edges (one worker each) on loopback, all
    naming |memcached| fresh memcached servers in [store] (none: memory only). With
    |several_agents| every edge names every agent; otherwise edge i names agent i mod |agents|."""

    def __init__(self, certs, corpus, edges, agents, memcached, several_agents, shared_env=None):
        self.shared_env = shared_env or {}
        self.procs, self.servers = [], []
        self.backend, self.agents, self.edges = None, [], []
        try:
            self._start(certs, corpus, edges, agents, memcached, several_agents)
        except BaseException:
            self.stop()  # Nothing started is left running when a later step fails.
            raise

    def _start(self, certs, corpus, edges, agents, memcached, several_agents):
        for _ in range(memcached):
            self.servers.append(launch.Memcached())  # One by one: stop() kills those started.
        shared = ({"COILGUN_STORE_MEMCACHED": ",".join(m.address for m in self.servers), **self.shared_env}
                  if self.servers else {})
        env, agent_env = launch.merged_env({**ENV, **shared}), launch.merged_env({**AGENT_ENV, **shared})
        self.backend = self._process([launch.binary("coilgun-sample-origin"), "--listen", "127.0.0.1:0",
                                      "--corpus", corpus], "corpus-backend")
        _, backend_port = self.backend.address("origin")
        tunnels = []
        for i in range(agents):
            a = self._process([launch.binary("coilgun-origin"), "--listen", "127.0.0.1:0", "--admin",
                               "127.0.0.1:0", "--backend", f"http://127.0.0.1:{backend_port}", "--workers", "1"]
                              + certs.agent_flags(), f"agent-{i + 1}", agent_env)
            tunnels.append(a.address("tunnel")[1])
            self.agents.append({"proc": a, "admin": a.address("admin")[1]})
        for i in range(edges):
            named = tunnels if several_agents else [tunnels[i % agents]]
            agent_flags = ["--agent", ",".join(f"127.0.0.1:{port}" for port in named)]
            e = self._process([launch.binary("coilgun-edge"), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                               "--workers", "1"] + agent_flags + certs.edge_flags(), f"edge-{i + 1}", env)
            self.edges.append({"proc": e, "port": e.address("http")[1], "admin": e.address("admin")[1],
                               "agents": len(named)})
        for e in self.edges:
            # Every tunnel of every agent the edge names (tunnel.connections = 2 per agent), so
            # that no late handshake lands in the byte counts.
            want = 2 * e["agents"]
            launch.wait_until(lambda: launch.metrics(e["admin"])["coilgun_tunnel_connections"] >= want,
                              timeout=15, what=f"{want} tunnel connections on {e['proc'].name}")
            launch.wait_until(lambda: launch.get(e["admin"], "/ready", host="127.0.0.1")[0] == 200,
                              timeout=15, what=f"{e['proc'].name} ready")

    def _process(self, args, name, env=None):
        p = launch.Process(args, name, env=env)
        self.procs.append(p)
        return p

    def stop(self):
        for p in reversed(self.procs):
            p.stop()
        for m in self.servers:
            m.kill()


def store_counts(admin):
    """(versions a daemon's store took in, versions it has written to memcached or given up
    writing) so far, from its /stats."""
    status, _, body = launch.get(admin, "/stats", host="127.0.0.1")
    assert status == 200, status
    s = json.loads(body)["store"]
    return s["inserts"], s["shared"]["writes"] + s["shared"]["dropped"]


def run_setup(certs, corpus, requests, edges, agents, memcached, several_agents, shared_env=None):
    """The corpus through one fleet; returns its figures."""
    fleet = Fleet(certs, corpus, edges, agents, memcached, several_agents, shared_env)
    conns = {}
    rows = []  # (seconds, link bytes, body bytes, result) per request after a series' first.
    not_delta = []  # Which of those crossed otherwise than as a delta, and how.
    mismatches = settle_timeouts = 0
    try:
        previous_path = None
        for i, (path, expected) in enumerate(requests):
            e = fleet.edges[i % len(fleet.edges)]
            first = path != previous_path
            previous_path = path
            before = launch.metrics(e["admin"])
            before_all = [store_counts(d["admin"]) for d in [e] + fleet.agents]
            conn = conns.get(e["port"]) or http.client.HTTPConnection("127.0.0.1", e["port"], timeout=60)
            conns[e["port"]] = conn
            t0 = time.perf_counter()
            conn.request("GET", path, headers={"Host": HOST})
            r = conn.getresponse()
            body = r.read()
            seconds = time.perf_counter() - t0
            after = launch.metrics(e["admin"])
            if r.status != 200 or body != expected:
                mismatches += 1
                print(f"  fleet: MISMATCH {path} (request {i}): status {r.status}, {len(body)} bytes vs "
                      f"{len(expected)}", file=sys.stderr)
            result = next((k for k in ("delta", "full", "stream", "direct")
                           if after.get(CODED.format(k), 0) > before.get(CODED.format(k), 0)), "none")
            def written():
                # Each daemon whose store took the version in has written it (or given up); one
                # that took nothing in (the agent kept no new base) has nothing to write.
                now_all = [store_counts(d["admin"]) for d in [e] + fleet.agents]
                return not memcached or all(now[0] == then[0] or now[1] > then[1]
                                            for now, then in zip(now_all, before_all))
            if result in ("delta", "full") and not settled(written):
                settle_timeouts += 1
            if first:
                continue
            if result != "delta":
                not_delta.append({"request": i, "path": path, "edge": i % len(fleet.edges) + 1, "result": result,
                                  "ms": round(1000 * seconds, 2)})
            rows.append((seconds, after[LINK_IN] - before[LINK_IN], after[BODY] - before[BODY], result))
        shared = {"hits": 0, "errors": 0, "dropped": 0, "corrupt": 0}
        for d in fleet.edges + fleet.agents:
            m = launch.metrics(d["admin"])
            for k, event in (("hits", "hit"), ("errors", "error"), ("dropped", "dropped"), ("corrupt", "corrupt")):
                shared[k] += int(m.get(SHARED.format(event), 0))
    finally:
        for c in conns.values():
            c.close()
        fleet.stop()
    streamed = [{"agent": a["proc"].name, "path": r.get("path") or r.get("target"), "why": r["stream"]}
                for a in fleet.agents for r in a["proc"].records() if r.get("type") == "access" and r.get("stream")]
    link, body = sum(r[1] for r in rows), sum(r[2] for r in rows)
    ms = sorted(1000 * r[0] for r in rows)
    return {"edges": edges, "agents": agents, "memcached": memcached,
            "agents_per_edge": fleet.edges[0]["agents"], "responses": len(rows),
            "delta_share": sum(r[3] == "delta" for r in rows) / max(1, len(rows)),
            "coded": {k: sum(r[3] == k for r in rows) for k in ("delta", "full", "stream", "direct", "none")},
            "not_delta": not_delta, "agents_streamed": streamed,
            "link_bytes": int(link), "body_bytes": int(body), "link_over_body": link / body if body else 0,
            "p50_ms": pick(ms, 0.50), "p99_ms": pick(ms, 0.99), "mean_ms": sum(ms) / max(1, len(ms)),
            "shared": shared, "settle_timeouts": settle_timeouts, "mismatches": mismatches, "ms": ms}


def pooled(runs):
    """One setup's figures over several passes (each a fresh fleet): counts and bytes summed, the
    latencies pooled before p50 and p99 are taken (the p99 of one pass is its 9th slowest request,
    which moves by milliseconds between runs on a shared machine)."""
    r = dict(runs[0])
    for k in ("responses", "link_bytes", "body_bytes", "settle_timeouts", "mismatches"):
        r[k] = sum(x[k] for x in runs)
    for k in ("coded", "shared"):
        r[k] = {name: sum(x[k][name] for x in runs) for name in runs[0][k]}
    for k in ("not_delta", "agents_streamed"):
        r[k] = [item for x in runs for item in x[k]]
    ms = sorted(m for x in runs for m in x["ms"])
    r.update({"passes": len(runs), "delta_share": r["coded"]["delta"] / max(1, r["responses"]),
              "link_over_body": r["link_bytes"] / r["body_bytes"] if r["body_bytes"] else 0,
              "p50_ms": pick(ms, 0.50), "p99_ms": pick(ms, 0.99), "mean_ms": sum(ms) / max(1, len(ms))})
    del r["ms"]
    return r


def settled(written):
    """Polls |written| (a version's memcached writes done; at once true with memory only, so that
    every setup asks the daemons the same between requests) for up to SETTLE_S. The polls are 1 ms
    apart, not launch.wait_until's 20: a machine left idle longer answers the next request slower,
    which would count against memcached alone."""
    deadline = time.monotonic() + SETTLE_S
    while not written():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)
    return True


def pick(values, q):
    """The |q| quantile of sorted |values|, nearest rank."""
    return values[min(len(values) - 1, int(len(values) * q))] if values else 0.0


def fleet_section(tmp, certs, corpus, requests, passes=1, shared_env=None):
    """Runs every setup of SETUPS on |requests| ((path, body) in series order, from |corpus|),
    |passes| times, the setups taking turns; returns the report's "fleet" entry."""
    several = several_agents_supported(certs)
    out = {"corpus": os.path.abspath(corpus), "requests": len(requests), "several_agents_per_edge": several,
           "passes": passes, "setups": {}}
    runs = {name: [] for name, *_ in SETUPS}
    for _ in range(passes):
        for name, edges, agents, memcached in SETUPS:
            runs[name].append(run_setup(certs, corpus, requests, edges, agents, memcached, several, shared_env))
    for name in runs:
        r = out["setups"][name] = pooled(runs[name])
        print(f"  fleet {name:<19} link/body {r['link_over_body']:.3%}, deltas {r['delta_share']:.1%}, "
              f"p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms", file=sys.stderr)
    s = out["setups"]
    out["link_over_body_vs_one_edge"] = {k: s[k]["link_over_body"] / s["one-edge"]["link_over_body"]
                                         for k in ("fleet-memory", "fleet-memcached")}
    out["memcached_adds_ms"] = {
        "fleet": {"p50": s["fleet-memcached"]["p50_ms"] - s["fleet-memory"]["p50_ms"],
                  "p99": s["fleet-memcached"]["p99_ms"] - s["fleet-memory"]["p99_ms"]},
        "one_edge": {"p50": s["one-edge-memcached"]["p50_ms"] - s["one-edge"]["p50_ms"],
                     "p99": s["one-edge-memcached"]["p99_ms"] - s["one-edge"]["p99_ms"]}}
    out["targets_met"] = {"link_over_body_within_1.1x": out["link_over_body_vs_one_edge"]["fleet-memcached"] <= 1.1,
                          "p99_added_under_1ms": out["memcached_adds_ms"]["fleet"]["p99"] < 1.0}
    return out


def table(f):
    print(f"\nfleet: the corpus ({f['requests']} requests, one at a time, {f['passes']} pass(es) per setup, "
          "latencies pooled) dealt round-robin over the edges; one worker per daemon;\n"
          + ("every edge names both agents" if f["several_agents_per_edge"] else
             "this edge takes one agent: edge i names agent i mod 2") + "; figures over every version after "
          "each series' first")
    print(f"{'setup':<19} {'edges':>5} {'agents':>6} {'memc':>4} {'deltas':>7} {'full':>5} {'other':>5} "
          f"{'link/body':>9} {'link B':>10} "
          f"{'body B':>11} {'p50 ms':>7} {'p99 ms':>7} {'shared hits':>11} {'mc errors':>9} {'mismatch':>8}")
    for name, r in f["setups"].items():
        other = r["responses"] - r["coded"]["delta"] - r["coded"]["full"]
        print(f"{name:<19} {r['edges']:>5} {r['agents']:>6} {r['memcached']:>4} {r['delta_share']:>7.1%} "
              f"{r['coded']['full']:>5} {other:>5} {r['link_over_body']:>9.3%} {r['link_bytes']:>10} "
              f"{r['body_bytes']:>11} {r['p50_ms']:>7.2f} "
              f"{r['p99_ms']:>7.2f} {r['shared']['hits']:>11} {r['shared']['errors']:>9} {r['mismatches']:>8}")
    v = f["link_over_body_vs_one_edge"]
    a = f["memcached_adds_ms"]
    t = f["targets_met"]
    print(f"link/body against one edge's: fleet-memcached {v['fleet-memcached']:.3f}x (target <= 1.1x: "
          f"{'met' if t['link_over_body_within_1.1x'] else 'NOT met'}), fleet-memory {v['fleet-memory']:.3f}x")
    print(f"latency memcached adds: 4 edges p50 {a['fleet']['p50']:+.2f} ms, p99 {a['fleet']['p99']:+.2f} ms "
          f"(target p99 < 1 ms: {'met' if t['p99_added_under_1ms'] else 'NOT met'}); one edge p50 "
          f"{a['one_edge']['p50']:+.2f} ms, p99 {a['one_edge']['p99']:+.2f} ms")
    print("deltas: share of the responses coded as deltas; full, other: how many crossed whole (zstd) or\n"
          "otherwise (stream: passed through uncoded, e.g. a body that paused past delta.stream_after)")
    timeouts = {k: r["settle_timeouts"] for k, r in f["setups"].items() if r["settle_timeouts"]}
    if timeouts:
        print(f"memcached writes not seen within {SETTLE_S:g} s of a response: {timeouts}")


if __name__ == "__main__":
    sys.exit("run it through bench_pairs.py: python3 tests/bench/bench_pairs.py --sections fleet")
