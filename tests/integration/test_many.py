"""Integration tests: tunnels that match the traffic (issue #13).

    python3 -m unittest tests/integration/test_many.py     (COILGUN_BUILD picks the build)

tunnel.connections counts the tunnels per agent of the whole edge process, spread over its
workers; a worker without a share opens one when a request needs it. With tunnel.idle_close an
agent nobody asked for drops its tunnels, and the next request pays one handshake, not a 502.
TestManyOrigins runs the bench's shape (tests/bench/many_origins.py) at 300 agent addresses:
one agent listening on 0.0.0.0 (only ever dialled on 127.1.x.y) and an edge with a route to
each address.
"""

import os
import signal
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "bench"))
import harness  # noqa: E402
import many_origins  # noqa: E402
from harness import get, metrics  # noqa: E402
from test_pair import PairTestCase  # noqa: E402

TUNNELS = "coilgun_tunnel_connections"


def errors(port, reason):
    return metrics(port).get(f'coilgun_errors_total{{reason="{reason}"}}', 0)


class TestTunnelsMatchTraffic(PairTestCase):
    def test_connections_count_per_process_and_a_worker_without_one_opens_one(self):
        p = self.pair(workers=2, edge_env={"COILGUN_TUNNEL_CONNECTIONS": "1"})
        self.assertEqual(metrics(p.edge_admin)[TUNNELS], 1)
        # The worker without a share can serve: a request there waits for one handshake.
        self.assertEqual(get(p.edge_admin, "/ready", host="127.0.0.1")[0], 200)
        statuses = [get(p.http_port, "/status/204")[0] for _ in range(40)]  # Fresh connections.
        self.assertEqual(statuses, [204] * 40)
        self.assertEqual(metrics(p.edge_admin)[TUNNELS], 2)
        self.assertEqual(errors(p.edge_admin, "tunnel_down"), 0)

    def test_an_idle_agent_drops_its_tunnels_and_the_next_request_reconnects(self):
        p = self.pair(edge_env={"COILGUN_TUNNEL_IDLE_CLOSE": "1s"})
        self.assertEqual(get(p.http_port, "/status/204")[0], 204)
        harness.wait_until(lambda: metrics(p.edge_admin)[TUNNELS] == 0, timeout=10, what="the tunnels closed")
        # Closing them was no loss, and the edge still counts as ready: it reconnects on demand.
        self.assertEqual(errors(p.edge_admin, "tunnel_lost"), 0)
        self.assertEqual(get(p.edge_admin, "/ready", host="127.0.0.1")[0], 200)
        status, _, body = get(p.http_port, "/")
        self.assertEqual(status, 200)
        self.assertIn(b"The Daily Coil", body)
        self.assertGreaterEqual(metrics(p.edge_admin)[TUNNELS], 1)
        self.assertEqual(errors(p.edge_admin, "tunnel_down"), 0)

    def test_a_request_for_a_dormant_agent_that_is_gone_fails_at_once(self):
        p = self.pair(edge_env={"COILGUN_TUNNEL_IDLE_CLOSE": "1s"})
        harness.wait_until(lambda: metrics(p.edge_admin)[TUNNELS] == 0, timeout=10, what="the tunnels closed")
        p.origin.stop()
        t0 = time.monotonic()
        status, _, body = get(p.http_port, "/")
        self.assertEqual(status, 502)
        self.assertIn(b"tunnel_down", body)
        self.assertLess(time.monotonic() - t0, 3.0)
        # A woken pool counts for /ready only once a tunnel is up: an edge whose quiet agent is
        # gone stays ready (its other routes serve), as /ready says with many agents.
        self.assertEqual(get(p.edge_admin, "/ready", host="127.0.0.1")[0], 200)

    def test_requests_do_not_wait_on_a_tunnel_the_agent_is_draining(self):
        # The agent drains (GOAWAY) while a slow answer keeps its only tunnel open: a new request
        # goes to the fallback or gets 502 at once, not after that answer (a review found it
        # waiting for a tunnel that was not coming).
        p = self.pair(edge_env={"COILGUN_TUNNEL_CONNECTIONS": "1"})
        slow = {}

        def fetch():
            slow["status"] = get(p.http_port, "/slow?ms=4000", timeout=15)[0]
        t = threading.Thread(target=fetch)
        t.start()
        harness.wait_until(lambda: metrics(p.origin_admin)["coilgun_exchanges_in_flight"] >= 1,
                           what="the slow request at the agent")
        p.origin.signal(signal.SIGTERM)
        p.edge.wait_for(lambda r: r.get("msg") == "agent draining this tunnel", what="the GOAWAY")
        t0 = time.monotonic()
        status, _, body = get(p.http_port, "/")
        took = time.monotonic() - t0
        t.join(timeout=15)
        self.assertEqual(status, 502)
        self.assertIn(b"tunnel_down", body)
        self.assertLess(took, 2.0)
        self.assertEqual(slow.get("status"), 200)  # The draining agent finished its answer.


def instrumented(program):
    """True for a sanitizer build, whose RSS says nothing about the release build's."""
    with open(program, "rb") as f:
        return b"__asan_init" in f.read()


class TestManyOrigins(PairTestCase):
    ROUTES = 300
    BOUND_KIB = 48  # Issue #13: memory per idle tunnel on each side, TLS included.

    def edge(self, routes, agent_port, certs, name, env=None):
        config = os.path.join(self.tmp, f"{name}.toml")
        many_origins.edge_config(config, routes, agent_port, certs, workers=1, connections=1)
        e = harness.Process([harness.binary("coilgun-edge"), "-c", config], name, env=harness.merged_env(env))
        self.procs.append(e)
        _, http = e.address("http")
        _, admin = e.address("admin")
        harness.wait_until(lambda: many_origins.stats(admin)["tunnels"] >= routes, timeout=60,
                           what=f"{routes} tunnels on {name}")
        return e, http, admin

    def agent(self, certs, env=None):
        backend = harness.Process([harness.binary("coilgun-sample-origin"), "--listen", "127.0.0.1:0"], "backend")
        self.procs.append(backend)
        _, backend_port = backend.address("origin")
        agent = harness.Process([harness.binary("coilgun-origin"), "--listen", "0.0.0.0:0", "--admin", "127.0.0.1:0",
                                 "--backend", f"http://127.0.0.1:{backend_port}", "--workers", "1"]
                                + certs.agent_flags(), "origin", env=harness.merged_env(env))
        self.procs.append(agent)
        return agent

    def test_three_hundred_agent_addresses_each_answer_within_the_memory_bound(self):
        certs = harness.Certs(os.path.join(self.tmp, "certs"), agent_names=("localhost",))
        agent = self.agent(certs)
        _, agent_port = agent.address("tunnel")
        small, _, _ = self.edge(1, agent_port, certs, "edge-1")
        time.sleep(1)  # Lets the handshakes' leftovers be freed before RSS is read; not a wait for an event.
        agent_before, small_rss = agent.rss_kib(), small.rss_kib()
        edge, http, admin = self.edge(self.ROUTES, agent_port, certs, f"edge-{self.ROUTES}")
        time.sleep(1)  # As above.
        per_tunnel = {"edge": (edge.rss_kib() - small_rss) / (self.ROUTES - 1),
                      "agent": (agent.rss_kib() - agent_before) / self.ROUTES}
        print(f"many origins: {self.ROUTES} tunnels, KiB per idle tunnel {per_tunnel}", file=sys.stderr)
        statuses = {i: get(http, "/status/204", host=f"site{i}.test")[0] for i in range(self.ROUTES)}
        self.assertEqual({i: s for i, s in statuses.items() if s != 204}, {})
        self.assertEqual(get(admin, "/ready", host="127.0.0.1")[0], 200)
        if instrumented(harness.binary("coilgun-edge")):
            return  # ASan's redzones and shadow: the release run of this test checks the bound.
        for side, kib in per_tunnel.items():
            self.assertLess(kib, self.BOUND_KIB, f"{side}: {kib:.1f} KiB per idle tunnel")

    def test_an_edge_starting_with_three_hundred_agents_dials_a_few_at_a_time(self):
        # The agent refuses a source with more than 8 connections in their handshake; an edge
        # dialling every agent at once met that limit (and the agent's warning) at start.
        certs = harness.Certs(os.path.join(self.tmp, "certs"), agent_names=("localhost",))
        agent = self.agent(certs, {"COILGUN_TUNNEL_MAX_PENDING_PER_SOURCE": "8"})
        _, agent_port = agent.address("tunnel")
        _, agent_admin = agent.address("admin")
        self.edge(self.ROUTES, agent_port, certs, "edge", {"COILGUN_TUNNEL_MAX_PENDING_HANDSHAKES": "8"})
        self.assertEqual(metrics(agent_admin).get('coilgun_errors_total{reason="tunnel_handshake_limit"}', 0), 0)
        self.assertEqual([r for r in agent.records() if "too many connections" in r.get("msg", "")], [])


if __name__ == "__main__":
    unittest.main()
