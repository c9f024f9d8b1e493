"""Integration tests: the tunnel under faults on the link (issue #10), through a relay between
the edge and the agent that stalls or throttles (fault_relay.py), with the sample origin behind
the agent.

    cd tests/integration && COILGUN_BUILD=... python3 -m unittest -v test_faults
"""

import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from fault_relay import FaultRelay  # noqa: E402
from harness import get, metrics  # noqa: E402
from test_pair import PairTestCase  # noqa: E402

LOST = 'coilgun_errors_total{reason="tunnel_lost"}'


class RelayTestCase(PairTestCase):
    def relayed_pair(self, edge_env=None, origin_env=None):
        relay = FaultRelay()
        self.addCleanup(relay.stop)
        p = self.pair(via=relay, edge_env=edge_env, origin_env=origin_env)
        return p, relay


class TestStalledLink(RelayTestCase):
    def test_a_request_on_a_tunnel_that_died_silently_fails_within_a_second(self):
        """A link that stops carrying bytes without closing (a dead middlebox, a corrupted TLS
        record length): the edge used to wait for the 30 s ping timeout, and clients for their
        own. tunnel.answer_timeout (1 s) bounds it."""
        p, relay = self.relayed_pair(edge_env={"COILGUN_TUNNEL_CONNECTIONS": "1"})
        self.assertEqual(get(p.http_port, "/static/site.css")[0], 200)
        relay.stall()
        start = time.monotonic()
        status, _, _ = get(p.http_port, "/news/1", timeout=20)
        self.assertEqual(status, 502)
        self.assertLess(time.monotonic() - start, 2.5)
        # The link carries bytes again: the edge's new tunnel serves.
        relay.clear()
        harness.wait_until(lambda: get(p.http_port, "/news/2", timeout=5)[0] == 200, timeout=10,
                           what="service back after the stall")


class TestSlowLink(RelayTestCase):
    def test_a_slow_link_busy_with_bulk_stays_up_and_serves_small_requests(self):
        """100 KB/s with a download in flight, pings every second and a link declared dead after
        3 s without an answer: the PING answers and a small response used to queue behind the
        bulk (20 s), and the link was taken for dead."""
        fast_pings = {"COILGUN_TUNNEL_PING_INTERVAL": "1s", "COILGUN_TUNNEL_CONNECTIONS": "1"}
        p, relay = self.relayed_pair(edge_env=fast_pings, origin_env=fast_pings)
        self.assertEqual(get(p.http_port, "/static/site.css")[0], 200)
        relay.throttle(100_000)
        bulk = {}

        def download():
            bulk["status"], _, body = get(p.http_port, "/big?bytes=1500000", timeout=60)
            bulk["bytes"] = len(body)
        t = threading.Thread(target=download)
        t.start()
        harness.wait_until(lambda: metrics(p.edge_admin)["coilgun_body_bytes_total"] > 100_000,
                           what="the download under way")
        waits = []
        for i in range(3):  # Small requests while the bulk fills the link.
            start = time.monotonic()
            self.assertEqual(get(p.http_port, f"/news/{i}", timeout=30)[0], 200)
            waits.append(time.monotonic() - start)
        t.join(timeout=60)
        self.assertFalse(t.is_alive())
        self.assertEqual((bulk.get("status"), bulk.get("bytes")), (200, 1500000))
        print(f"slow link: small requests took {', '.join(f'{w:.2f}' for w in waits)} s",
              file=sys.stderr)
        self.assertLess(max(waits), 8)
        self.assertEqual(metrics(p.edge_admin).get(LOST, 0), 0, "the tunnel was taken for dead")
        self.assertEqual(metrics(p.edge_admin)["coilgun_tunnel_connections"], 1)


if __name__ == "__main__":
    unittest.main()
