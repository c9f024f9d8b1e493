"""The admin dashboard in a real headless Chromium (Debian's chromium + chromium-driver, driven
over the W3C WebDriver protocol with the standard library): the page renders its charts, the
totals it shows are /stats's figures, and it fetches nothing but its own admin listener.

    COILGUN_BUILD=build/release python3 -m unittest -v test_dashboard
"""

import json
import os
import tempfile
import unittest

import harness
from chromium import WebDriver
from harness import get, metrics


class TestDashboard(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="coilgun-dash-")
        self.tmp = self._tmp.name
        self.pair = harness.Pair(self.tmp)
        self.addCleanup(self._tmp.cleanup)
        self.addCleanup(self.pair.stop)

    def test_the_dashboard_renders_and_agrees_with_stats(self):
        p = self.pair
        for path in ("/", "/", "/", "/api/headlines", "/static/site.css", "/news/3", "/"):
            self.assertEqual(get(p.http_port, path)[0], 200)
        # Some history to plot: the daemon samples once a second.
        harness.wait_until(lambda: len(json.loads(get(p.edge_admin, "/stats/history", host="127.0.0.1")[2])
                                       ["samples"]) >= 3, timeout=10, what="3 history samples")
        admin = f"http://127.0.0.1:{p.edge_admin}"
        status, headers, _ = get(p.edge_admin, "/", host="127.0.0.1")
        self.assertEqual(status, 200)
        self.assertIn("default-src 'none'", headers["content-security-policy"])

        browser = WebDriver(self.tmp)
        self.addCleanup(browser.quit)
        browser.open(admin + "/")
        harness.wait_until(lambda: int(browser.script("return document.body.dataset.rendered || 0")) >= 2,
                           timeout=20, what="the dashboard rendering twice")
        shown = browser.script("""
            const v = (id) => document.getElementById(id).dataset.value;
            const t = (id) => document.getElementById(id).textContent;
            return {
              daemon: t('daemon'), state: t('state'), tunnels: t('tunnels'),
              body: Number(v('total-body')), link: Number(v('total-link')), ratio: Number(v('total-ratio')),
              requests: Number(v('total-requests')), kinds: v('total-kinds'),
              ratio_text: t('total-ratio'),
              points: [...document.querySelectorAll('svg polyline')].map(
                  (p) => p.getAttribute('points').trim().split(/\\s+/).filter(Boolean).length),
              first_x: [...document.querySelectorAll('svg polyline')].map(
                  (p) => Math.min(...p.getAttribute('points').trim().split(/\\s+/).filter(Boolean)
                                     .map((xy) => Number(xy.split(',')[0])))),
              saved: Number(v('total-saved')),
              axis_labels: [...document.querySelectorAll('svg')].map((s) => s.querySelectorAll('text').length),
              boxes: [...document.querySelectorAll('.chart, .total')].map((e) => {
                  const r = e.getBoundingClientRect();
                  return [e.querySelector('h2, .k').textContent, r.left, r.top, r.right, r.bottom]; }),
              peers: [...document.querySelectorAll('#peers tr')].map(
                  (tr) => [...tr.children].map((c) => c.textContent)),
              reasons: [...document.querySelectorAll('#reasons tr')].length,
              resources: performance.getEntriesByType('resource').map((r) => r.name),
            };""")
        stats = json.loads(get(p.edge_admin, "/stats", host="127.0.0.1")[2])
        m = stats["metrics"]
        self.assertEqual(shown["daemon"], "coilgun-edge")
        self.assertEqual(shown["state"], "ready")
        self.assertEqual(int(shown["tunnels"]), m["coilgun_tunnel_connections"])
        self.assertEqual(shown["body"], m["coilgun_body_bytes_total"])
        self.assertEqual(shown["link"], m["coilgun_link_bytes_total"]["direction=in"])
        self.assertEqual(shown["requests"], sum(m["coilgun_requests_total"].values()))
        self.assertEqual(shown["requests"], 7)
        self.assertAlmostEqual(shown["ratio"], stats["link_over_body"], places=9)
        self.assertEqual(shown["kinds"], ",".join(str(m["coilgun_delta_responses_total"][k])
                                                  for k in ("result=delta", "result=full", "result=stream")))
        self.assertTrue(shown["ratio_text"].endswith("%"))
        # body, link (own panel: ~1% of the body), ratio, requests, 4xx and 5xx, mean and p99.
        self.assertEqual(len(shown["points"]), 8)
        self.assertGreaterEqual(max(shown["points"]), 2)  # Lines, not empty charts.
        # A daemon seconds old fills the width instead of the window's right-hand end.
        self.assertLess(min(x for x, n in zip(shown["first_x"], shown["points"]) if n >= 2), 150)
        self.assertEqual(shown["saved"], m["coilgun_body_bytes_total"] - m["coilgun_link_bytes_total"]["direction=in"])
        self.assertTrue(all(n >= 9 for n in shown["axis_labels"]), shown["axis_labels"])  # 4 values, 5 times.
        # The layout: the headline first, and no two panels overlapping.
        self.assertEqual(shown["boxes"][0][0], "link bytes saved")
        boxes = shown["boxes"]
        for i, a in enumerate(boxes):
            self.assertGreater(a[3] - a[1], 100, a)
            for b in boxes[i + 1:]:
                apart = a[3] <= b[1] or b[3] <= a[1] or a[4] <= b[2] or b[4] <= a[2]
                self.assertTrue(apart, (a, b))
        self.assertEqual(shown["peers"][1][:3], [f"127.0.0.1:{p.agent_port}", "up", "2"])
        self.assertGreaterEqual(shown["reasons"], 2)
        for url in shown["resources"]:
            self.assertTrue(url.startswith(admin + "/"), url)  # Nothing fetched from elsewhere.
        self.assertIn(admin + "/stats/history", shown["resources"])
        png = browser.screenshot()
        self.assertTrue(png.startswith(b"\x89PNG"))
        # Kept for a human to look at: the last run's dashboard.
        with open(os.path.join(os.environ.get("COILGUN_BUILD", self.tmp), "dashboard.png"), "wb") as f:
            f.write(png)

    def test_the_dashboard_follows_live_traffic(self):
        p = self.pair
        browser = WebDriver(self.tmp)
        self.addCleanup(browser.quit)
        browser.open(f"http://127.0.0.1:{p.edge_admin}/")
        harness.wait_until(lambda: int(browser.script("return document.body.dataset.rendered || 0")) >= 1,
                           timeout=20, what="the dashboard rendering")
        before = int(browser.script("return Number(document.getElementById('total-requests').dataset.value)"))
        for _ in range(5):
            get(p.http_port, "/")
        harness.wait_until(
            lambda: int(browser.script("return Number(document.getElementById('total-requests').dataset.value)"))
            == before + 5, timeout=10, what="the page showing 5 more requests")
        self.assertEqual(metrics(p.edge_admin)['coilgun_requests_total{code="2xx"}'], before + 5)


if __name__ == "__main__":
    unittest.main()
