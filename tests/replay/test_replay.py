"""coilgun-replay end to end: HAR and WARC captures made from real pages (the corpus, or the
sample site's pages when no corpus is at hand) replay byte-exact through the real pair with a
correct report; mismatches are caught and named; secrets never reach what it writes; bad
captures fail cleanly.

    COILGUN_BUILD=build/release python3 -m unittest -v test_replay      (from tests/replay)
"""

import base64
import gzip
import io
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from coilgun_replay import capture, launch  # noqa: E402

REPLAY = os.path.join(HERE, "coilgun-replay")
CORPUS = os.environ.get("COILGUN_CORPUS", os.path.join(launch.ROOT, "..", "shared", "corpus"))
SECRETS = ("cookie-secret-4711", "Bearer token-secret-0815", "set-cookie-secret-1234")


def real_pages():
    """[(host, path, content type, [versions])]: three corpus series (6 versions each), or the
    sample site's changing pages when there is no corpus."""
    manifest = os.path.join(CORPUS, "manifest.json")
    if os.path.exists(manifest):
        with open(manifest) as f:
            series = json.load(f)["series"]
        picked = [s for s in series if s["content_type"].startswith(("text/html", "application/json"))][:3]
        out = []
        for s in picked:
            bodies = []
            for v in s["versions"][:6]:
                with open(os.path.join(CORPUS, s["name"], v["file"]), "rb") as f:
                    bodies.append(f.read())
            out.append((s["host"], s["request_path"], s["content_type"], bodies))
        return out
    with launch.TempDir() as tmp:
        site = launch.Process([launch.binary("coilgun-sample-origin"), "--listen", "127.0.0.1:0"])
        try:
            _, port = site.address("origin")
            out = []
            for path, ctype in (("/", "text/html; charset=utf-8"), ("/api/headlines", "application/json"),
                                ("/news/7", "text/html; charset=utf-8")):
                out.append(("www.example.com", path, ctype,
                            [launch.get(port, path)[2] for _ in range(6)]))
            return out
        finally:
            site.stop()


def interleaved(pages):
    """Capture order: version i of every page, then version i + 1 (as a crawler would see)."""
    for i in range(max(len(b) for *_, b in pages)):
        for host, path, ctype, bodies in pages:
            if i < len(bodies):
                yield host, path, ctype, bodies[i]


PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def make_har(path, pages):
    def headers(d):
        return [{"name": k, "value": v} for k, v in d]

    entries = []
    for host, target, ctype, body in interleaved(pages):
        entries.append({
            "request": {"method": "GET", "url": f"https://{host}{target}", "httpVersion": "HTTP/1.1",
                        "headers": headers([("Accept", "text/html"), ("Cookie", f"session={SECRETS[0]}"),
                                            ("Authorization", SECRETS[1])])},
            "response": {"status": 200, "statusText": "OK", "httpVersion": "HTTP/1.1",
                         "headers": headers([("Content-Type", ctype), ("Content-Encoding", "gzip"),
                                             ("Set-Cookie", f"id={SECRETS[2]}")]),
                         "content": {"size": len(body), "mimeType": ctype, "text": body.decode("utf-8")}},
        })
    entries.append({  # A binary body, base64 in the HAR.
        "request": {"method": "GET", "url": "https://static.example.com/pixel.png", "headers": []},
        "response": {"status": 200, "headers": headers([("Content-Type", "image/png")]),
                     "content": {"size": len(PNG), "mimeType": "image/png",
                                 "text": base64.b64encode(PNG).decode(), "encoding": "base64"}}})
    entries.append({  # A POST with a body, answered with JSON.
        "request": {"method": "POST", "url": "https://api.example.com/v1/search?q=coilgun",
                    "headers": headers([("Content-Type", "application/json")]),
                    "postData": {"mimeType": "application/json", "text": '{"q": "coilgun"}'}},
        "response": {"status": 201, "headers": headers([("Content-Type", "application/json")]),
                     "content": {"size": 12, "mimeType": "application/json", "text": '{"hits": 3}\n'}}})
    entries.append({  # Blocked in the browser: nothing crossed, nothing to replay.
        "request": {"method": "GET", "url": "https://ads.example.com/x.js", "headers": []},
        "response": {"status": 0, "headers": [], "content": {"size": 0, "mimeType": ""}}})
    with open(path, "w") as f:
        json.dump({"log": {"version": "1.2", "creator": {"name": "test", "version": "1"},
                           "entries": entries}}, f)
    return [e for e in entries if e["response"]["status"] > 0]


def warc_record(fields, block):
    head = "WARC/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields) + f"Content-Length: {len(block)}\r\n\r\n"
    return head.encode() + block + b"\r\n\r\n"


def chunked(body, size=1000):
    out = b""
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out += b"%x\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\n\r\n"


def make_warc(path, pages, gzip_records):
    """Request and response records, one gzip member per record or plain; every other
    response chunked as archived. Returns [(url, body)] of the responses in order."""
    records = [warc_record([("WARC-Type", "warcinfo"), ("Content-Type", "application/warc-fields")],
                           b"software: coilgun test\r\n")]
    expected = []
    for n, (host, target, ctype, body) in enumerate(interleaved(pages)):
        uri = f"https://{host}{target}"
        rid = f"<urn:uuid:00000000-0000-0000-0000-{n:012d}>"
        req = (f"GET {target} HTTP/1.1\r\nHost: {host}\r\nCookie: a={SECRETS[0]}\r\n\r\n").encode()
        records.append(warc_record([("WARC-Type", "request"), ("WARC-Target-URI", uri),
                                    ("WARC-Concurrent-To", rid),
                                    ("Content-Type", "application/http; msgtype=request")], req))
        if n % 2:
            http_block = (f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n"
                          f"Set-Cookie: s={SECRETS[2]}\r\n\r\n").encode() + chunked(body)
        else:
            http_block = (f"HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n").encode() + body
        records.append(warc_record([("WARC-Type", "response"), ("WARC-Record-ID", rid),
                                    ("WARC-Target-URI", uri),
                                    ("Content-Type", "application/http; msgtype=response")], http_block))
        expected.append((uri, body))
    with open(path, "wb") as f:
        for r in records:
            f.write(gzip.compress(r) if gzip_records else r)
    return expected


def run_replay(*args, timeout=600):
    r = subprocess.run([sys.executable, REPLAY, *args], capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def har_entry(url, status, content, headers=()):
    """One HAR entry: a GET of |url| answered with |status|, |content| and |headers|."""
    return {"request": {"method": "GET", "url": url, "headers": []},
            "response": {"status": status, "headers": [{"name": n, "value": v} for n, v in headers],
                         "content": content}}


def replay_against_sample_site(har, entries):
    """Replays a HAR of |entries(pair)| through a running pair in front of the sample site, with
    --edge and --edge-admin; returns (exit code, stdout, stderr)."""
    with launch.TempDir() as tmp:
        pair = launch.Pair(tmp, backend_args=[launch.binary("coilgun-sample-origin"), "--listen", "127.0.0.1:0"])
        try:
            with open(har, "w") as f:
                json.dump({"log": {"version": "1.2", "entries": entries(pair)}}, f)
            return run_replay(har, "--edge", f"http://127.0.0.1:{pair.http_port}",
                              "--edge-admin", f"http://127.0.0.1:{pair.edge_admin}", "--json")
        finally:
            pair.stop()


class ReplayTestCase(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.pages = real_pages()

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="coilgun-replay-test-")
        self.tmp = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def assert_no_secrets(self, *texts, directory=None):
        blobs = list(texts)
        if directory:
            for root, _, files in os.walk(directory):
                for name in files:
                    with open(os.path.join(root, name), "rb") as f:
                        blobs.append(f.read().decode("latin-1"))
        for blob in blobs:
            for secret in SECRETS:
                self.assertNotIn(secret, blob)

    def check_report(self, report, bodies, versions):
        t = report["total"]
        self.assertEqual(t["entries"], len(bodies))
        self.assertEqual(t["mismatches"], 0, report["mismatches"])
        self.assertEqual(t["body_bytes"], sum(len(b) for b in bodies))
        self.assertEqual(t["gzip6_bytes"], sum(len(gzip.compress(b, 6, mtime=0)) for b in bodies))
        # Every page after its first version crossed as a delta.
        self.assertGreaterEqual(t["delta"], versions - len(self.pages))
        self.assertLess(t["link_bytes"], t["gzip6_bytes"])
        self.assertGreater(t["link_bytes"], 0)
        self.assertEqual(sum(g["entries"] for g in report["by_host"].values()), len(bodies))
        self.assertEqual(sum(g["body_bytes"] for g in report["by_content_type"].values()), t["body_bytes"])
        for p in ("p50", "p90", "p99", "max"):
            self.assertGreater(t["latency_ms"][p], 0)
        self.assertLessEqual(t["latency_ms"]["p50"], t["latency_ms"]["p99"])


class TestHar(ReplayTestCase):
    def test_a_har_of_real_pages_replays_byte_exact(self):
        har = os.path.join(self.tmp, "capture.har")
        entries = make_har(har, self.pages)
        keep = os.path.join(self.tmp, "kept")
        code, out, err = run_replay(har, "--json", "--keep", keep)
        self.assertEqual(code, 0, err)
        report = json.loads(out)
        bodies = [e["response"]["content"]["text"].encode() if e["response"]["content"].get("encoding") != "base64"
                  else base64.b64decode(e["response"]["content"]["text"]) for e in entries]
        versions = sum(len(b) for *_, b in self.pages)
        self.check_report(report, bodies, versions)
        self.assertIn("image/png", report["by_content_type"])
        self.assertEqual(report["by_host"]["api.example.com"]["entries"], 1)
        self.assert_no_secrets(out, err, directory=keep)

    def test_the_table_names_every_group(self):
        har = os.path.join(self.tmp, "capture.har")
        make_har(har, self.pages)
        code, out, err = run_replay(har)
        self.assertEqual(code, 0, err)
        for host, *_ in self.pages:
            self.assertIn(host, out)
        self.assertIn("TOTAL", out)
        self.assertIn("0 not byte-exact", out)


class TestWarc(ReplayTestCase):
    def replay_warc(self, gzip_records):
        warc = os.path.join(self.tmp, "capture.warc" + (".gz" if gzip_records else ""))
        expected = make_warc(warc, self.pages, gzip_records)
        keep = os.path.join(self.tmp, "kept")
        code, out, err = run_replay(warc, "--json", "--keep", keep)
        self.assertEqual(code, 0, err)
        self.check_report(json.loads(out), [b for _, b in expected], len(expected))
        self.assert_no_secrets(out, err, directory=keep)

    def test_a_gzip_per_record_warc_replays_byte_exact(self):
        self.replay_warc(True)

    def test_a_plain_warc_replays_byte_exact(self):
        self.replay_warc(False)


class TestAgainstARunningEdge(ReplayTestCase):
    def test_mismatches_are_caught_and_named(self):
        def entries(pair):
            css = launch.get(pair.http_port, "/static/site.css")[2].decode()
            return [har_entry("http://www.example.com/static/site.css", 200,
                              {"size": len(css), "mimeType": "text/css", "text": css},
                              [("Content-Type", "text/css")]),
                    har_entry("http://www.example.com/news/3", 200,
                              {"size": 24, "mimeType": "text/html", "text": "not what the site serves"},
                              [("Content-Type", "text/html; charset=utf-8")])]

        code, out, err = replay_against_sample_site(os.path.join(self.tmp, "drifted.har"), entries)
        self.assertEqual(code, 1, err)
        report = json.loads(out)
        self.assertEqual(report["total"]["entries"], 2)
        self.assertEqual(report["total"]["mismatches"], 1)
        self.assertEqual(report["mismatches"][0]["entry"], "drifted.har entry 2")  # Counted from 1.
        self.assertIn("/news/3", report["mismatches"][0]["url"])
        self.assertEqual(report["mode"], "edge")
        self.assertGreater(report["total"]["link_bytes"], 0)


class TestRealCaptureShapes(ReplayTestCase):
    """What real captures hold (issue #14, 4): a redirect saved without a body, 204s, a 304 whose
    entry carries the cached body, https URLs, entries skipped as never sent; and an edge that
    is not there."""

    def test_bodyless_answers_replay_and_entries_keep_their_numbers_and_scheme(self):
        code, out, err = replay_against_sample_site(os.path.join(self.tmp, "shapes.har"), lambda pair: [
            har_entry("data:image/png;base64,AAAA", 200, {"size": 4, "mimeType": "image/png"}),
            har_entry("https://www.example.com/status/301", 301, {"size": 0, "mimeType": "x-unknown"}),
            har_entry("https://www.example.com/status/204", 204, {"size": 0, "mimeType": "text/plain"},
                      [("Content-Type", "text/plain")]),
            har_entry("https://www.example.com/status/304", 304,
                      {"size": 11, "mimeType": "text/plain", "text": "cached page"}, [("Content-Type", "text/plain")]),
            har_entry("https://www.example.com/news/3", 200, {"size": 4, "mimeType": "text/html", "text": "nope"}),
            har_entry("https://www.example.com/status/204", 204, {"size": 0, "mimeType": "x-unknown"},
                      [("Content-Type", "application/json")]),
        ])
        self.assertEqual(code, 1, err)
        report = json.loads(out)
        self.assertEqual(report["total"]["entries"], 5)  # The data: URL never crossed.
        self.assertEqual(report["total"]["errors"], 0)
        self.assertEqual([(m["entry"], m["url"]) for m in report["mismatches"]],
                         [("shapes.har entry 5", "https://www.example.com/news/3"),
                          ("shapes.har entry 6", "https://www.example.com/status/204")])
        self.assertIn("body", report["mismatches"][0]["reason"])
        # The recorded Content-Type is checked even where there is no body.
        self.assertIn("content-type: 'text/plain', recorded 'application/json'", report["mismatches"][1]["reason"])

    def test_an_edge_that_is_not_there_is_one_line(self):
        har = os.path.join(self.tmp, "one.har")
        make_har(har, self.pages)
        port = launch.free_port()
        started = time.monotonic()
        code, out, err = run_replay(har, "--edge", f"http://127.0.0.1:{port}", timeout=60)
        self.assertEqual(code, 2, err)
        self.assertEqual(out, "")
        self.assertEqual(err.strip().splitlines(),
                         [f"coilgun-replay: cannot connect to the edge (--edge) at http://127.0.0.1:{port}: "
                          "Connection refused"])
        self.assertLess(time.monotonic() - started, 30)


class TestBadCaptures(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="coilgun-replay-test-")
        self.tmp = self._tmp.name

    def tearDown(self):
        self._tmp.cleanup()

    def write(self, name, data):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def test_bad_captures_exit_2_with_a_clear_error(self):
        good = warc_record([("WARC-Type", "response"), ("WARC-Target-URI", "http://a.example/"),
                            ("Content-Type", "application/http; msgtype=response")],
                           b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        cases = {
            "not-json.har": (b"{\"log\": ", "not a HAR file"),
            "no-body.har": (json.dumps({"log": {"entries": [{"request": {"method": "GET", "url": "http://a.example/"},
                                                            "response": {"status": 200, "content": {}}}]}}).encode(),
                            "no body"),
            "bad-base64.har": (json.dumps({"log": {"entries": [{"request": {"method": "GET", "url": "http://a.example/"},
                                                                "response": {"status": 200, "content": {
                                                                    "text": "%%%", "encoding": "base64"}}}]}}).encode(),
                               "base64"),
            "truncated.warc": (good[:-30], "truncated"),
            "huge.warc": (b"WARC/1.0\r\nWARC-Type: response\r\nContent-Length: 99999999999\r\n\r\n", "over the limit"),
            "bad-gzip.warc.gz": (gzip.compress(good)[:-9] + b"garbage!!", "unreadable"),
            "wrong-version.warc": (b"WARC/9.9\r\nContent-Length: 0\r\n\r\n", "not a WARC"),
            "bad-chunks.warc": (warc_record([("WARC-Type", "response"), ("WARC-Target-URI", "http://a.example/"),
                                             ("Content-Type", "application/http")],
                                            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
                                "chunk"),
        }
        for name, (data, message) in cases.items():
            with self.subTest(name):
                code, out, err = run_replay(self.write(name, data), timeout=60)
                self.assertEqual(code, 2, err)
                self.assertIn(message, err)
                self.assertNotIn("Traceback", err)

    def test_readers_keep_capture_order_and_scrub(self):
        data = b"".join(warc_record([("WARC-Type", "response"), ("WARC-Target-URI", "http://a.example/p"),
                                     ("Content-Type", "application/http")],
                                    b"HTTP/1.1 200 OK\r\nSet-Cookie: x=1\r\nX-Folded: a\r\n b\r\n\r\nv%d" % i)
                        for i in range(3))
        entries = list(capture.read_warc(self.write("three.warc", data)))
        self.assertEqual([e.body for e in entries], [b"v0", b"v1", b"v2"])
        self.assertEqual(entries[0].response_headers, [("X-Folded", "a b")])
        self.assertEqual(entries[0].method, "GET")


if __name__ == "__main__":
    unittest.main()
