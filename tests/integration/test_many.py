"""Integration tests: tunnels that match the traffic (issue #13).

    python3 -m unittest tests/integration/test_many.py     (COILGUN_BUILD picks the build)

tunnel.connections counts the tunnels per agent of the whole edge process, spread over its
workers; a worker without a share opens one when a request needs it. With tunnel.idle_close an
agent nobody asked for drops its tunnels, and the next request pays one handshake, not a 502.
"""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
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


if __name__ == "__main__":
    unittest.main()
