"""Headless Chromium for the tests: Debian's chromium + chromium-driver, driven over the W3C
WebDriver protocol with the standard library, plus chromedriver's two extensions the tests
need (the performance log, which carries the DevTools protocol's Network events, and
executing a DevTools command).
"""

import base64
import json
import shutil
import urllib.request

import harness

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


class WebDriver:
    """The few WebDriver commands the tests need. |network_log|: record the DevTools Network
    events (read them with network_events())."""

    def __init__(self, tmp, network_log=False):
        self.port = harness.free_port()
        self.proc = harness.Process([CHROMEDRIVER, f"--port={self.port}"], "chromedriver")
        harness.wait_until(self._up, timeout=20, what="chromedriver")
        options = {"binary": CHROMIUM,
                   "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                            "--window-size=1280,1000", f"--user-data-dir={tmp}/profile"]}
        caps = {"browserName": "chrome", "goog:chromeOptions": options}
        if network_log:
            options["perfLoggingPrefs"] = {"enableNetwork": True, "enablePage": False}
            caps["goog:loggingPrefs"] = {"performance": "ALL"}
        self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]

    def _up(self):
        try:
            return self._call("GET", "/status")["ready"]
        except OSError:
            return False

    def _call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())["value"]

    def open(self, url):
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def script(self, js):
        return self._call("POST", f"/session/{self.session}/execute/sync", {"script": js, "args": []})

    def screenshot(self):
        return base64.b64decode(self._call("GET", f"/session/{self.session}/screenshot"))

    def network_events(self):
        """The DevTools Network.* events since the last call, as (method, params), in order."""
        entries = self._call("POST", f"/session/{self.session}/se/log", {"type": "performance"})
        events = (json.loads(e["message"])["message"] for e in entries)
        return [(e["method"], e["params"]) for e in events if e["method"].startswith("Network.")]

    def devtools(self, command, params):
        """Runs one DevTools protocol command in the page's target and returns its result."""
        return self._call("POST", f"/session/{self.session}/goog/cdp/execute", {"cmd": command, "params": params})

    def quit(self):
        try:
            self._call("DELETE", f"/session/{self.session}")
        finally:
            self.proc.stop()
