"""A HAR recorded by a real browser replays (issue #14, 4): headless Chromium loads a site
through the pair (a stock nginx behind it: a redirect, a page with assets, a 204 beacon, then
a second visit that revalidates with 304s); its DevTools Network events are written out as a
HAR the way DevTools' own exporter writes one (HARLog: a redirect's response with
content {size: 0, mimeType: "x-unknown"}, bodies from Network.getResponseBody, entries in
request order); coilgun-replay then replays that capture through a fresh pair.

    COILGUN_BUILD=build/release python3 -m unittest -v test_har
"""

import base64
import json
import os
import subprocess
import sys
import tempfile
import unittest
from urllib.parse import urlsplit

import harness
from chromium import WebDriver

REPLAY = os.path.join(harness.ROOT, "tests", "replay", "coilgun-replay")

PAGE = b"""<!doctype html>
<html><head><title>shop</title><link rel="stylesheet" href="/site.css"></head>
<body><h1>Shop</h1><img src="/logo.svg" alt="logo"><ul id="items"></ul>
<script src="/app.js"></script></body></html>
"""
SCRIPT = b"""fetch('/api/items.json').then((r) => r.json()).then((items) => {
  for (const i of items) document.getElementById('items').insertAdjacentHTML('beforeend', `<li>${i}</li>`);
  return fetch('/beacon', {method: 'POST', body: 'seen'});
}).then((r) => r.text().then(() => { document.body.dataset.done = String(r.status); }));
"""
FILES = {
    "index.html": PAGE,
    "site.css": b"body { font-family: sans-serif; } li { color: #333; }\n" * 20,
    "app.js": SCRIPT,
    "logo.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>\n',
    "api/items.json": json.dumps([f"item {i}" for i in range(50)]).encode(),
}


def har_headers(headers):
    return [{"name": n, "value": v} for n, v in headers.items()]


def response_part(response, content):
    return {"status": response["status"], "statusText": response.get("statusText", ""),
            "httpVersion": response.get("protocol", "http/1.1").upper(),
            "headers": har_headers(response.get("headers", {})), "cookies": [], "content": content,
            "redirectURL": response.get("headers", {}).get("Location", response.get("headers", {})
                                                                .get("location", "")),
            "headersSize": -1, "bodySize": -1}


def build_har(events, body_of):
    """A HAR 1.2 document from DevTools Network events (in order): an entry per request sent,
    a redirect closing the entry of the request it answered. |body_of(request_id)| returns
    Network.getResponseBody's result, or None when it has none."""
    entries, open_by_id = [], {}
    for method, p in events:
        rid = p.get("requestId")
        if method == "Network.requestWillBeSent":
            if "redirectResponse" in p and rid in open_by_id:
                # DevTools' exporter saves a redirect without its body.
                open_by_id[rid]["response"] = response_part(p["redirectResponse"],
                                                            {"size": 0, "mimeType": "x-unknown"})
            req = p["request"]
            entry = {"startedDateTime": "", "time": 0, "cache": {}, "timings": {},
                     "request": {"method": req["method"], "url": req["url"], "httpVersion": "HTTP/1.1",
                                 "headers": har_headers(req.get("headers", {})), "queryString": [],
                                 "cookies": [], "headersSize": -1, "bodySize": len(req.get("postData", ""))}}
            if "postData" in req:
                entry["request"]["postData"] = {"mimeType": req.get("headers", {}).get("Content-Type", ""),
                                                "text": req["postData"]}
            entries.append(entry)
            open_by_id[rid] = entry
        elif method == "Network.responseReceived" and rid in open_by_id:
            open_by_id[rid]["_response"] = p["response"]
        elif method == "Network.loadingFinished" and rid in open_by_id:
            entry = open_by_id.pop(rid)
            response = entry.pop("_response")
            content = {"size": 0, "mimeType": response.get("mimeType", "")}
            body = body_of(rid)
            if body is not None:
                content["text"] = body["body"]
                content["size"] = len(body["body"])
                if body.get("base64Encoded"):
                    content["encoding"] = "base64"
            entry["response"] = response_part(response, content)
    done = [e for e in entries if "response" in e]
    return {"log": {"version": "1.2", "creator": {"name": "test_har (DevTools events)", "version": "1"},
                    "pages": [], "entries": done}}


class TestChromiumHar(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="coilgun-har-")
        self.addCleanup(self._tmp.cleanup)
        self.tmp = self._tmp.name
        site = os.path.join(self.tmp, "site")
        for name, data in FILES.items():
            os.makedirs(os.path.dirname(os.path.join(site, name)), exist_ok=True)
            with open(os.path.join(site, name), "wb") as f:
                f.write(data)
        # Every answer revalidated (no-cache), so the second visit gets 304s with ETags; a
        # relative Location, as behind any proxy (nginx would name its own port).
        nginx = harness.Nginx(self.tmp, f"""
    listen 127.0.0.1:{{port}}; root {site}; absolute_redirect off;
    types {{{{ text/html html; text/css css; application/javascript js; image/svg+xml svg;
              application/json json; }}}}
    add_header Cache-Control no-cache;
    location = /old {{{{ return 301 /index.html; }}}}
    location = /beacon {{{{ return 204; }}}}""")
        self.addCleanup(nginx.stop)
        self.pair = harness.launch.Pair(os.path.join(self.tmp, "pair"), backend_port=nginx.port)
        self.addCleanup(self.pair.stop)

    def record(self):
        """Two visits of /old in headless Chromium; returns the HAR of both."""
        browser = WebDriver(self.tmp, network_log=True)
        self.addCleanup(browser.quit)
        browser.network_events()  # The new-tab page's own loads are not the site's.
        events, bodies = [], {}
        for _ in range(2):
            browser.open(f"http://127.0.0.1:{self.pair.http_port}/old")
            harness.wait_until(lambda: browser.script("return document.body.dataset.done || ''") == "204",
                               timeout=20, what="the page's script finishing")
            started, ended = set(), set()

            def settled():
                # Until every request sent has finished (or failed): its last event can come
                # after the script saw the answer. Bodies are fetched while the page is open.
                for method, p in browser.network_events():
                    events.append((method, p))
                    if method == "Network.requestWillBeSent":
                        started.add(p["requestId"])
                    elif method in ("Network.loadingFinished", "Network.loadingFailed"):
                        ended.add(p["requestId"])
                    if method == "Network.loadingFinished":
                        try:
                            bodies[p["requestId"]] = browser.devtools("Network.getResponseBody",
                                                                      {"requestId": p["requestId"]})
                        except OSError:
                            bodies[p["requestId"]] = None  # No body (a 204).
                return started and started <= ended

            harness.wait_until(settled, timeout=20, what="every request of the visit finishing")
        return build_har(events, bodies.get)

    def test_a_chromium_capture_replays_byte_exact(self):
        har = self.record()
        # What crossed the network: the page's own data: image and the new-tab page's chrome://
        # loads are in the capture too, and are skipped, as entries that never crossed.
        site = [e for e in har["log"]["entries"] if e["request"]["url"].startswith("http://")]
        self.assertLess(len(site), len(har["log"]["entries"]))
        statuses = [e["response"]["status"] for e in site]
        for status in (301, 200, 204, 304):
            self.assertIn(status, statuses)  # The capture holds each shape this test is about.
        path = os.path.join(self.tmp, "chromium.har")
        with open(path, "w") as f:
            json.dump(har, f)
        r = subprocess.run([sys.executable, REPLAY, path, "--json"], capture_output=True, text=True,
                           timeout=300, env=harness.merged_env({}))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        report = json.loads(r.stdout)
        self.assertEqual(report["total"]["entries"], len(statuses))
        self.assertEqual(report["total"]["mismatches"], 0, report["mismatches"])
        # The capture holds the site's files as Chromium received them (304s: the cached copy,
        # which the replay counts as no body), and the replay counted exactly what it held.
        counted = 0
        for e in site:
            content = e["response"]["content"]
            body = content.get("text", "").encode()
            if content.get("encoding") == "base64":
                body = base64.b64decode(body)
            name = urlsplit(e["request"]["url"]).path.lstrip("/")
            if e["response"]["status"] in (200, 304):
                self.assertEqual(body, FILES[name], name)
            if e["response"]["status"] not in (204, 304):
                counted += len(body)
        self.assertEqual(report["total"]["body_bytes"], counted)

if __name__ == "__main__":
    unittest.main()
