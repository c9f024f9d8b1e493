"""Integration tests: real coilgun-origin, coilgun-edge and sample-origin processes on loopback.

    python3 -m unittest tests/integration/test_pair.py     (COILGUN_BUILD picks the build)

Each test starts its own processes with ports from the kernel and certificates made for it.
"""

import concurrent.futures
import datetime
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import get, metrics  # noqa: E402

LINK_IN = 'coilgun_link_bytes_total{direction="in"}'


def raw_exchange(port, data, timeout=5.0):
    """Sends raw bytes; returns everything received until the server closes (or the timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            if not chunk:
                return out, True  # Closed by the server.
            out += chunk
        return out, False


def make_corpus(directory, versions):
    """A corpus from a list of bodies (one series, "page") or a dict of series name to bodies."""
    series = versions if isinstance(versions, dict) else {"page": versions}
    manifest = []
    for series_name, bodies in series.items():
        os.makedirs(os.path.join(directory, series_name))
        files = []
        for i, body in enumerate(bodies):
            name = f"{i:04d}.html"
            with open(os.path.join(directory, series_name, name), "wb") as f:
                f.write(body)
            files.append({"file": name})
        manifest.append({"name": series_name, "content_type": "text/html", "versions": files})
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump({"series": manifest}, f)


def news_versions(n):
    base = [f"<article id=a{i}><h2>Headline number {i} about the river and the market</h2>"
            f"<p>{'lorem ipsum dolor sit amet ' * 12}</p></article>\n" for i in range(400)]
    out = []
    for v in range(n):
        page = list(base)
        page[v * 7 % 400] = f"<article><h2>Breaking: version {v}</h2></article>\n"
        out.append(("<html><body><p>Updated 10:%02d</p>\n" % v + "".join(page) + "</body></html>\n").encode())
    return out


def project_version():
    """The version CMakeLists.txt gives the project (what --version must print)."""
    with open(os.path.join(harness.ROOT, "CMakeLists.txt")) as f:
        return re.search(r"project\(coilgun VERSION ([0-9.]+)", f.read()).group(1)


class PairTestCase(unittest.TestCase):
    def setUp(self):
        self._tmp = harness.TempDir()
        self.tmp = self._tmp.__enter__()
        self.pairs = []
        self.procs = []

    def tearDown(self):
        for p in self.pairs:
            p.stop()
        for p in self.procs:
            p.stop()
        self._tmp.__exit__(None, None, None)
        # A sanitizer report from a daemon (the asan build) fails the test that caused it, even
        # when it came at exit (a leak, a use after free in teardown).
        daemons = [d for p in self.pairs for d in (p.edge, p.origin) if d is not None] + self.procs
        reports = [f"{d.name}:\n{r}" for d in daemons if (r := d.sanitizer_report())]
        if reports:
            self.fail("sanitizer reports:\n" + "\n\n".join(reports))

    def pair(self, **kw):
        p = harness.Pair(self.tmp, **kw)
        self.pairs.append(p)
        return p

    def routed_edge(self, p, hosts):
        """A second edge for |p|'s agent with one [[route]] for |hosts| and no default route;
        returns its HTTP port once a tunnel is up."""
        conf = os.path.join(self.tmp, "edge.toml")
        with open(conf, "w") as f:
            f.write(f'[[route]]\nhosts = {json.dumps(hosts)}\nagent = "127.0.0.1:{p.tunnel_port}"\n'
                    f'agent_name = "127.0.0.1"\n')
        edge = harness.Process([harness.binary("coilgun-edge"), "-c", conf, "--listen", "127.0.0.1:0",
                                "--admin", "127.0.0.1:0", "--workers", "1"] + p.certs.edge_flags(), "edge2")
        self.procs.append(edge)
        _, port = edge.address("http")
        edge.wait_for(lambda r: r.get("msg") == "tunnel up", what="tunnel up")
        return port


class TestDeltas(PairTestCase):
    def test_pages_cross_as_small_deltas_byte_exact(self):
        versions = news_versions(8)
        corpus = os.path.join(self.tmp, "corpus")
        make_corpus(corpus, versions)
        p = self.pair(corpus=corpus)
        link = []
        for v in versions:
            before = metrics(p.edge_admin)[LINK_IN]
            status, headers, body = get(p.http_port, "/page")
            link.append(metrics(p.edge_admin)[LINK_IN] - before)
            self.assertEqual(status, 200)
            self.assertEqual(body, v)
            self.assertEqual(int(headers["content-length"]), len(v))
        m = metrics(p.edge_admin)
        self.assertEqual(m['coilgun_delta_responses_total{result="full"}'], 1)
        self.assertEqual(m['coilgun_delta_responses_total{result="delta"}'], len(versions) - 1)
        # A ~110 KB page after the first: well under 1 KB on the wire.
        self.assertLess(max(link[1:]), 1000)
        self.assertGreater(link[0], 1000)
        self.assertEqual(m["coilgun_body_bytes_total"], sum(len(v) for v in versions))

    def test_a_sequential_client_gets_the_same_deltas_in_every_run(self):
        """Issue #12 §0: with two workers on each side, the same versions fetched one after
        another crossed in different sizes from run to run (a worker that had not seen the
        previous request kept no base). Each version after a series' first must be a delta
        against the version before it, so two runs give the same coded sizes."""
        series = {f"s{i}": news_versions(20) for i in range(6)}
        corpus = os.path.join(self.tmp, "corpus")
        make_corpus(corpus, series)
        total = sum(len(v) for v in series.values())
        runs = []
        for run in range(2):
            # A body that pauses for delta.stream_after streams instead (a slow ASan run once
            # did): not what this test is about.
            p = self.pair(corpus=corpus, workers=2, origin_env={"COILGUN_DELTA_STREAM_AFTER": "10s"})
            for name, versions in series.items():
                for v in versions:
                    self.assertEqual(get(p.http_port, "/" + name)[::2], (200, v))
            access = lambda: [r for r in p.origin.records() if r.get("type") == "access"]  # noqa: E731
            harness.wait_until(lambda: len(access()) == total, what=f"{total} access lines")
            runs.append([(r["path"], r["delta"], r["link_bytes"]) for r in access()])
            p.stop()
            self.pairs.remove(p)
        first = {"/" + name for name in series}
        for path, delta, _ in runs[0]:
            if path in first:
                first.discard(path)
                self.assertEqual(delta, "full")
            else:
                self.assertEqual(delta, "delta", path)
        # The series are the same pages under six URLs: their versions cross in the same sizes
        # when each is coded against the one before.
        sizes = {name: [b for path, _, b in runs[0] if path == "/" + name] for name in series}
        self.assertEqual(len(set(map(tuple, sizes.values()))), 1, sizes)
        self.assertEqual(runs[0], runs[1])

    def test_concurrent_requests_for_one_changing_page_stay_deltas(self):
        """16 clients at once on a page that differs on every response (a per-request token):
        bases advance once per round trip (PROTOCOL.md section 6), so after the first answers
        nearly every response is a small delta."""
        # A body that pauses for delta.stream_after streams instead, counted neither delta nor
        # full (the ASan run of 6ba3804 streamed 3 of 400): not what this test is about.
        p = self.pair(origin_env={"COILGUN_DELTA_STREAM_AFTER": "10s"})
        self.assertEqual(get(p.http_port, "/bench?kb=64")[0], 200)  # The first base.
        before = metrics(p.edge_admin)

        def client(_):
            sizes = []
            for _ in range(25):
                status, _, body = get(p.http_port, "/bench?kb=64", timeout=30)
                sizes.append((status, len(body)))
            return sizes

        with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
            results = [r for rs in pool.map(client, range(16)) for r in rs]
        self.assertEqual(results, [(200, 64 * 1024)] * 400)
        after = metrics(p.edge_admin)
        delta = after['coilgun_delta_responses_total{result="delta"}'] - before['coilgun_delta_responses_total{result="delta"}']
        full = after['coilgun_delta_responses_total{result="full"}'] - before['coilgun_delta_responses_total{result="full"}']
        link = after[LINK_IN] - before[LINK_IN]
        self.assertEqual(delta + full, 400)
        self.assertGreaterEqual(delta, 380, f"{full} of 400 sent in full")
        self.assertLess(link / 400, 2048)  # A 64 KiB page: well under 2 KiB a response.

    def test_the_changing_site_is_served_through_the_pair(self):
        p = self.pair()
        seen = set()
        for _ in range(6):
            status, headers, body = get(p.http_port, "/")
            self.assertEqual(status, 200)
            self.assertIn(b"The Daily Coil", body)
            seen.add(body)
        self.assertEqual(len(seen), 6)  # Every request saw a different page.
        m = metrics(p.edge_admin)
        self.assertGreaterEqual(m['coilgun_delta_responses_total{result="delta"}'], 5)
        status, _, body = get(p.http_port, "/api/headlines")
        self.assertEqual(status, 200)
        self.assertEqual(len(json.loads(body)["stories"]), 40)

    def test_the_backend_sees_identity_encoding_via_and_forwarded_for(self):
        p = self.pair()
        status, _, body = get(p.http_port, "/headers", headers={"Accept-Encoding": "gzip, br",
                                                                "Connection": "keep-alive, x-drop",
                                                                "X-Drop": "secret", "X-Keep": "1"})
        self.assertEqual(status, 200)
        fields = {k.lower(): v for k, v in json.loads(body)["headers"]}
        self.assertEqual(fields["accept-encoding"], "identity")
        self.assertIn("coilgun", fields["via"])
        self.assertEqual(fields["x-forwarded-for"], "127.0.0.1")
        self.assertEqual(fields["host"], "www.example.com")
        self.assertEqual(fields["x-keep"], "1")
        self.assertNotIn("x-drop", fields)  # Named in Connection: hop-by-hop.


class TestHttp(PairTestCase):
    def test_request_ids_forwarded_fields_and_the_access_line(self):
        # Issue #14 ("Missing"): what an nginx or Envoy user reads in an access line, and what
        # their backend reads in a request.
        p = self.pair()
        cases = (({"User-Agent": "probe/1.0"}, None),
                 ({"X-Request-ID": "lb-4711", "X-Forwarded-Proto": "https"}, "lb-4711"),
                 ({"X-Request-ID": "x" * 200}, None),       # Too long to be anyone's id.
                 ({"X-Request-ID": "two words"}, None))     # Not one visible token.
        seen = []
        for headers, kept in cases:
            status, _, body = get(p.http_port, "/headers", headers=headers)
            self.assertEqual(status, 200)
            got = {n.lower(): v for n, v in json.loads(body)["headers"]}
            rid = got["x-request-id"]
            if kept:
                self.assertEqual(rid, kept)
            else:
                self.assertRegex(rid, r"^[0-9a-f]{32}$")
            self.assertEqual(got["x-forwarded-proto"], "http")  # The client's claim is not passed on.
            self.assertEqual(got["x-forwarded-for"], "127.0.0.1")
            seen.append(rid)
        self.assertEqual(len(set(seen)), len(seen))
        # Each daemon writes its line once its side is done, maybe after the client has its answer.
        for daemon in (p.origin, p.edge):
            harness.wait_until(lambda: len([r for r in daemon.records() if r.get("type") == "access"]) == 4,
                               what=f"4 {daemon.name} access lines")
        edge_lines = [r for r in p.edge.records() if r.get("type") == "access"]
        origin_lines = [r for r in p.origin.records() if r.get("type") == "access"]
        self.assertEqual([r["request_id"] for r in edge_lines], seen)
        self.assertEqual([r["request_id"] for r in origin_lines], seen)
        self.assertEqual({(r["client"], r["protocol"]) for r in edge_lines}, {("127.0.0.1", "HTTP/1.1")})
        self.assertEqual(edge_lines[0]["user_agent"], "probe/1.0")

    def test_pipelined_requests_are_answered_in_order(self):
        p = self.pair()
        req = b"".join(b"GET /status/%d HTTP/1.1\r\nHost: www.example.com\r\n\r\n" % c for c in (201, 202, 203))
        req += b"GET /status/204 HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n"
        out, closed = raw_exchange(p.http_port, req)
        statuses = [line.split()[1] for line in out.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
        self.assertEqual(statuses, [b"201", b"202", b"203", b"204"])
        self.assertTrue(closed)

    def test_head_204_and_post_with_expect_continue(self):
        p = self.pair()
        status, headers, body = get(p.http_port, "/", method="HEAD")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"")
        self.assertGreater(int(headers["content-length"]), 10000)
        status, _, body = get(p.http_port, "/status/204")
        self.assertEqual((status, body), (204, b""))
        payload = os.urandom(300000)
        status, _, body = get(p.http_port, "/echo", method="POST", body=payload,
                              headers={"Expect": "100-continue", "Content-Type": "application/octet-stream"})
        self.assertEqual(status, 200)
        self.assertEqual(body, payload)

    def test_chunked_request_body_crosses_intact(self):
        p = self.pair()
        chunks = [os.urandom(n) for n in (1, 1000, 70000, 5)]
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
        req = (b"POST /echo HTTP/1.1\r\nHost: www.example.com\r\nTransfer-Encoding: chunked\r\n"
               b"Connection: close\r\n\r\n" + body)
        out, closed = raw_exchange(p.http_port, req)
        head, _, rest = out.partition(b"\r\n\r\n")
        self.assertIn(b"200", head.split(b"\r\n")[0])
        self.assertEqual(rest, b"".join(chunks))


class TestBadInput(PairTestCase):
    def test_malformed_request_gets_400_and_close(self):
        p = self.pair()
        for bad in (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                    b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n"):
            out, closed = raw_exchange(p.http_port, bad)
            self.assertTrue(out.startswith(b"HTTP/1.1 400"), out[:60])
            self.assertTrue(closed, bad)

    def test_oversized_headers_get_431(self):
        p = self.pair()
        req = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n"
        out, closed = raw_exchange(p.http_port, req)
        self.assertTrue(out.startswith(b"HTTP/1.1 431"), out[:60])
        self.assertTrue(closed)

    def test_unknown_host_gets_421(self):
        port = self.routed_edge(self.pair(), ["www.example.com", "*.example.org"])
        self.assertEqual(get(port, "/", host="www.example.com")[0], 200)
        self.assertEqual(get(port, "/", host="news.example.org:8080")[0], 200)
        self.assertEqual(get(port, "/", host="www.other.net")[0], 421)


class TestFaults(PairTestCase):
    def test_backend_refusing_gives_502(self):
        p = self.pair(backend_port=harness.free_port())
        t0 = time.monotonic()
        status, _, body = get(p.http_port, "/")
        self.assertEqual(status, 502)
        self.assertIn(b"backend_refused", body)
        self.assertLess(time.monotonic() - t0, 3.0)
        # One event, one name on both sides (issue #14, 7: the edge said backend_failed).
        self.assertGreaterEqual(metrics(p.origin_admin)['coilgun_errors_total{reason="backend_refused"}'], 1)
        self.assertEqual(metrics(p.edge_admin)['coilgun_errors_total{reason="backend_refused"}'], 1)
        self.assertEqual(metrics(p.edge_admin).get('coilgun_errors_total{reason="backend_failed"}', 0), 0)

    def test_slow_backend_gives_504(self):
        p = self.pair(origin_env={"COILGUN_BACKEND_POOL_RESPONSE_TIMEOUT": "400ms"})
        t0 = time.monotonic()
        status, _, body = get(p.http_port, "/slow?ms=5000")
        elapsed = time.monotonic() - t0
        self.assertEqual(status, 504)
        self.assertLess(elapsed, 2.0)
        self.assertGreaterEqual(metrics(p.edge_admin)['coilgun_errors_total{reason="backend_timeout"}'], 1)

    def test_request_timeout_cuts_a_stall_but_not_a_slow_transfer(self):
        p = self.pair(edge_env={"COILGUN_LIMITS_REQUEST_TIMEOUT": "500ms"})
        # 8 KiB, one KiB every 150 ms: 1.2 s in all, more than twice the timeout, but moving.
        status, _, body = get(p.http_port, "/drip?chunks=8&ms=150", timeout=15)
        self.assertEqual(status, 200)
        self.assertEqual(body, b"d" * 8192)
        t0 = time.monotonic()
        status, _, _ = get(p.http_port, "/slow?ms=5000", timeout=15)
        self.assertEqual(status, 504)
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertEqual(metrics(p.edge_admin)['coilgun_errors_total{reason="request_timeout"}'], 1)

    def test_unreachable_agent_fails_fast_and_service_resumes(self):
        p = self.pair(start_origin=False)
        t0 = time.monotonic()
        status, _, body = get(p.http_port, "/")
        self.assertEqual(status, 502)
        self.assertIn(b"tunnel_down", body)
        self.assertLess(time.monotonic() - t0, 1.0)
        # Issue #14 (2): at the default level the log says which agent cannot be reached and
        # why, and the 502's access line names it.
        agent = f"127.0.0.1:{p.tunnel_port}"
        warned = p.edge.wait_for(lambda r: r.get("msg") == "cannot reach agent", what="the warning")
        self.assertEqual((warned.get("level"), warned.get("agent")), ("warn", agent))
        self.assertIn("refused", warned.get("error", ""))
        line = p.edge.wait_for(lambda r: r.get("type") == "access" and r.get("status") == 502, what="the access line")
        self.assertEqual(line.get("agent"), agent)
        self.assertEqual(get(p.edge_admin, "/ready", host="127.0.0.1")[0], 503)
        # The agent comes (back): the edge reconnects by itself.
        p.start_origin()
        p.wait_ready(timeout=15)
        self.assertEqual(get(p.http_port, "/")[0], 200)
        self.assertEqual(get(p.edge_admin, "/ready", host="127.0.0.1")[0], 200)

    def test_ready_means_every_worker_can_serve(self):
        # Two workers reconnect on their own jittered backoffs once the agent comes: /ready must
        # wait for both, since a client's connection may land on either.
        p = self.pair(start_origin=False, workers=2)
        self.assertEqual(get(p.edge_admin, "/ready", host="127.0.0.1")[0], 503)
        p.start_origin()
        harness.wait_until(lambda: get(p.edge_admin, "/ready", host="127.0.0.1")[0] == 200, timeout=15,
                           what="/ready")
        statuses = [get(p.http_port, "/status/204")[0] for _ in range(40)]  # Fresh connections.
        self.assertEqual(statuses, [204] * 40)

    def test_tunnel_lost_mid_request_gives_502_within_a_second(self):
        p = self.pair()
        result = {}

        def slow():
            result["status"], _, result["body"] = get(p.http_port, "/slow?ms=8000", timeout=15)
            result["done"] = time.monotonic()

        t = threading.Thread(target=slow)
        t.start()
        harness.wait_until(lambda: metrics(p.origin_admin)["coilgun_exchanges_in_flight"] >= 1,
                           what="the request reaching the agent")
        killed = time.monotonic()
        p.origin.proc.kill()
        t.join(timeout=10)
        self.assertFalse(t.is_alive(), "the client got no answer")
        self.assertEqual(result.get("status"), 502)
        self.assertIn(b"tunnel_lost", result["body"])
        self.assertLess(result["done"] - killed, 1.0)
        # And it recovers when the agent is back.
        p.start_origin()
        harness.wait_until(lambda: get(p.http_port, "/")[0] == 200, timeout=15, what="recovery")

    def test_the_agent_counts_and_logs_a_lost_tunnel_as_tunnel_lost(self):
        p = self.pair()
        with socket.create_connection(("127.0.0.1", p.http_port), timeout=5) as s:
            s.sendall(b"GET /slow?ms=8000 HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
            harness.wait_until(lambda: metrics(p.origin_admin)["coilgun_exchanges_in_flight"] >= 1,
                               what="the request reaching the agent")
            p.edge.proc.kill()
            harness.wait_until(lambda: metrics(p.origin_admin).get('coilgun_errors_total{reason="tunnel_lost"}', 0) == 1,
                               timeout=5, what="the agent counting the lost tunnel")
        m = metrics(p.origin_admin)
        self.assertEqual(m["coilgun_exchanges_in_flight"], 0)
        self.assertEqual(m.get('coilgun_errors_total{reason="client_gone"}', 0), 0)
        self.assertEqual(m.get('coilgun_requests_total{code="2xx"}', 0), 0)  # Not an answered request.
        line = p.origin.wait_for(lambda r: r.get("type") == "access" and r.get("path") == "/slow?ms=8000",
                                 what="the exchange's access line")
        self.assertEqual(line.get("error"), "tunnel_lost")

    def test_an_agent_draining_cleanly_is_no_lost_tunnel_on_the_edge(self):
        # Issue #14: an agent's graceful stop (GOAWAY, its streams finished, then the close)
        # counted tunnel_lost and warned "tunnel down" once per tunnel on the edge.
        p = self.pair()
        self.assertEqual(get(p.http_port, "/status/204")[0], 204)
        p.origin.signal(signal.SIGTERM)
        self.assertEqual(p.origin.proc.wait(timeout=15), 0)
        harness.wait_until(lambda: metrics(p.edge_admin)["coilgun_tunnel_connections"] == 0,
                           what="the edge seeing the tunnels close")
        self.assertEqual(metrics(p.edge_admin).get('coilgun_errors_total{reason="tunnel_lost"}', 0), 0)
        self.assertEqual([r for r in p.edge.records() if r.get("msg") == "tunnel down"], [])

    def test_a_delta_whose_base_the_edge_evicted_meanwhile_is_fetched_again_in_full(self):
        # The edge's store holds one 20 KiB page: a page of another URL stored while a request
        # is out evicts the base that request listed, so the delta that comes back cannot be
        # used and the edge asks again for the whole body, once.
        p = self.pair(edge_env={"COILGUN_STORE_MAX_BYTES": "30000", "COILGUN_TUNNEL_CONNECTIONS": "1"})
        url = "/slow?ms=2000&kb=20"  # Ample time to store another page while it is out.
        self.assertEqual(get(p.http_port, url)[0], 200)
        harness.wait_until(lambda: json.loads(get(p.edge_admin, "/stats", host="127.0.0.1")[2])["store"]["versions"] == 1,
                           what="the first version kept by the edge")
        result = {}

        def slow():
            result["status"], _, result["body"] = get(p.http_port, url, timeout=20)

        t = threading.Thread(target=slow)
        t.start()
        harness.wait_until(lambda: metrics(p.origin_admin)["coilgun_exchanges_in_flight"] >= 1,
                           what="the second request reaching the agent")
        self.assertEqual(get(p.http_port, "/bench?kb=20")[0], 200)  # Evicts the listed base.
        t.join(timeout=10)
        self.assertFalse(t.is_alive(), "the client got no answer")
        self.assertEqual(result.get("status"), 200)
        self.assertEqual(len(result["body"]), 20 * 1024)
        m = metrics(p.edge_admin)
        self.assertEqual(m.get('coilgun_errors_total{reason="refetch"}', 0), 1)
        self.assertEqual(m.get('coilgun_errors_total{reason="verify_failed"}', 0), 0)
        rec = p.edge.wait_for(lambda r: r.get("msg") == "delta not usable, fetching in full", what="the refetch warning")
        self.assertEqual(rec.get("reason"), "base_not_held")

    def test_failed_handshakes_are_all_counted_but_logged_at_most_once_a_second(self):
        p = self.pair()
        started = time.monotonic()
        for _ in range(20):  # Not TLS at all: each fails at its first record.
            with socket.create_connection(("127.0.0.1", p.tunnel_port), timeout=5) as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                for _ in range(100):  # Until the agent closes (a TLS alert at most before).
                    try:
                        if not s.recv(4096):
                            break
                    except ConnectionResetError:
                        break
                else:
                    self.fail("the agent kept a non-TLS connection open")
        harness.wait_until(lambda: metrics(p.origin_admin).get('coilgun_errors_total{reason="tunnel_handshake"}', 0) >= 20,
                           what="20 failed handshakes counted")
        elapsed = time.monotonic() - started
        lines = [r for r in p.origin.records() if r.get("msg") == "tunnel refused"]
        self.assertGreaterEqual(len(lines), 1)
        self.assertEqual(lines[0].get("count"), 1)  # The first is logged at once, with its peer.
        self.assertIn("127.0.0.1", lines[0].get("peer", ""))
        self.assertLessEqual(len(lines), 1 + int(elapsed))  # Then at most one a second.

    def test_an_edge_with_a_certificate_from_another_ca_gets_nothing(self):
        p = self.pair()
        other = harness.Certs(os.path.join(self.tmp, "other"), edges=("intruder",))
        edge = harness.Process([harness.binary("coilgun-edge"), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                                "--agent", f"127.0.0.1:{p.tunnel_port}", "--agent-name", "127.0.0.1",
                                "--workers", "1", "--tls-ca", p.certs.path("ca.pem"),
                                "--tls-cert", other.path("edge-intruder.pem"),
                                "--tls-key", other.path("edge-intruder.key")], "intruder",
                               env=harness.merged_env({"COILGUN_TUNNEL_CONNECTIONS": "1"}))
        self.procs.append(edge)
        _, port = edge.address("http")
        p.origin.wait_for(lambda r: r.get("msg") == "tunnel refused", what="tunnel refused")
        status, _, body = get(port, "/headers")
        self.assertEqual(status, 502)
        # The intruder never had a request forwarded: the agent's request counter did not move.
        before = metrics(p.origin_admin)['coilgun_requests_total{code="2xx"}']
        self.assertEqual(before, 0)
        # Its TLS 1.3 handshake completes before the agent refuses it: that is not a tunnel up,
        # and each refusal is a failed connect, so the backoff of its one tunnel slot grows
        # (100, 200, 400 ms jittered
        # into their upper halves: the fourth refusal comes 350 ms or more after the first; it
        # came within a few ms, 25 times a second, when each was taken for a tunnel up).
        failed = []

        def refusals():
            failed[:] = [r for r in edge.records() if r.get("msg") == "tunnel failed"]
            return len(failed) >= 4
        harness.wait_until(refusals, timeout=10, what="four refused connects")
        self.assertEqual([r for r in edge.records() if r.get("msg") == "tunnel up"], [])
        first, fourth = (datetime.datetime.fromisoformat(r["ts"].replace("Z", "+00:00"))
                         for r in (failed[0], failed[3]))
        self.assertGreaterEqual((fourth - first).total_seconds(), 0.35)

    def test_a_client_leaving_mid_response_frees_its_stream(self):
        p = self.pair()
        with socket.create_connection(("127.0.0.1", p.http_port), timeout=5) as s:
            s.sendall(b"GET /big?bytes=1073741824 HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
            got = 0
            while got < 2_000_000:
                got += len(harness.recv_some(s, "2 MB of the body"))
        # The edge resets the stream; the agent drops the backend exchange at once, and nothing
        # stays in flight on either side.
        harness.wait_until(lambda: metrics(p.origin_admin).get('coilgun_errors_total{reason="client_gone"}', 0) >= 1,
                           timeout=5, what="the agent dropping the stream")
        for admin in (p.edge_admin, p.origin_admin):
            harness.wait_until(lambda: metrics(admin)["coilgun_exchanges_in_flight"] == 0,
                               timeout=5, what="no exchange left in flight")
        self.assertEqual(get(p.http_port, "/status/200")[0], 200)  # The tunnel is fine.


class TestLoad(PairTestCase):
    def test_200_concurrent_clients_through_one_tunnel(self):
        p = self.pair(edge_env={"COILGUN_TUNNEL_CONNECTIONS": "1"})
        self.assertEqual(metrics(p.edge_admin)["coilgun_tunnel_connections"], 1)

        def one(i):
            payload = (f"client {i} " * (50 + i)).encode()
            return get(p.http_port, "/echo", method="POST", body=payload, timeout=30), payload

        with concurrent.futures.ThreadPoolExecutor(max_workers=200) as pool:
            results = list(pool.map(one, range(200)))
        for (status, _, body), payload in results:
            self.assertEqual(status, 200)
            self.assertEqual(body, payload)
        self.assertEqual(metrics(p.edge_admin)['coilgun_requests_total{code="2xx"}'], 200)

    def test_a_gibibyte_streams_through_with_flat_memory(self):
        """RSS of both daemons, sampled while 1 GiB streams through: once the first 64 MiB
        have passed (buffers, TLS and allocator arenas warmed up), it must stay flat. In the
        asan build, AddressSanitizer's quarantine of freed blocks (256 MiB by default) would
        be counted as growth: it is made small for this test (release builds ignore this)."""
        asan = {"ASAN_OPTIONS": ":".join(filter(None, [os.environ.get("ASAN_OPTIONS", ""),
                                                       "quarantine_size_mb=8"]))}
        p = self.pair(origin_env=asan, edge_env=asan)
        size, warm = 1 << 30, 64 << 20
        samples = []  # (bytes received so far, edge RSS KiB, origin RSS KiB)
        got = 0
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                samples.append((got, p.edge.rss_kib(), p.origin.rss_kib()))
                stop.wait(0.05)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            with socket.create_connection(("127.0.0.1", p.http_port), timeout=30) as s:
                s.sendall(b"GET /big?bytes=%d HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n" % size)
                head = b""
                while b"\r\n\r\n" not in head:
                    head += harness.recv_some(s, "the response head")
                head, _, rest = head.partition(b"\r\n\r\n")
                self.assertIn(b" 200 ", head.split(b"\r\n")[0])
                self.assertIn(b"content-length: %d" % size, head.lower())
                got = len(rest)
                while True:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        break
                    got += len(chunk)
        finally:
            stop.set()
            sampler.join()
        self.assertEqual(got, size)
        after_warmup = [x for x in samples if x[0] >= warm]
        self.assertGreater(len(after_warmup), 2, "too few RSS samples")
        trace = ", ".join(f"{b >> 20}MiB:{e >> 10}/{o >> 10}" for b, e, o in samples[:: max(1, len(samples) // 20)])
        for i, name in ((1, "edge"), (2, "origin")):
            base = after_warmup[0][i]
            growth_mib = (max(x[i] for x in after_warmup) - base) / 1024
            self.assertLess(growth_mib, 32, f"{name} grew {growth_mib:.1f} MiB while streaming "
                            f"(received:edge/origin RSS MiB: {trace})")
            total_mib = (max(x[i] for x in samples) - samples[0][i]) / 1024
            self.assertLess(total_mib, 64, f"{name} grew {total_mib:.1f} MiB in all ({trace})")
        self.assertEqual(metrics(p.edge_admin)['coilgun_delta_responses_total{result="stream"}'], 1)


class TestOperations(PairTestCase):
    def test_the_edge_admin_lists_its_agents(self):
        # Issue #14 ("Missing"): each agent with its state, tunnels, RTT and last error.
        p = self.pair(edge_env={"COILGUN_TUNNEL_PING_INTERVAL": "100ms", "COILGUN_METRICS_PER_AGENT": "true"})

        def agents():
            return json.loads(get(p.edge_admin, "/stats", host="127.0.0.1")[2])["agents"]

        address = f"127.0.0.1:{p.agent_port}"
        harness.wait_until(lambda: "rtt_ms" in agents()["list"][0], timeout=5, what="a ping answered")
        a = agents()
        self.assertEqual((a["up"], a["down"], a["idle"]), (1, 0, 0))
        self.assertEqual({k: a["list"][0][k] for k in ("agent", "state", "tunnels")},
                         {"agent": address, "state": "up", "tunnels": 2})
        self.assertLess(a["list"][0]["rtt_ms"], 1000)
        up_since = a["list"][0]["since"]
        # metrics.per_agent: the same per agent in /metrics (off by default: TestDocs).
        m = metrics(p.edge_admin)
        self.assertEqual(m[f'coilgun_agent_tunnels{{agent="{address}"}}'], 2.0)
        self.assertLess(m[f'coilgun_agent_rtt_seconds{{agent="{address}"}}'], 1.0)
        p.origin.stop()  # Drains: a GOAWAY, no loss, then nothing to reconnect to.
        harness.wait_until(lambda: agents()["list"][0]["state"] == "down", timeout=10, what="the agent down")
        gone = agents()["list"][0]
        self.assertEqual(gone["tunnels"], 0)
        self.assertIn("refused", gone["last_error"])
        self.assertGreaterEqual(gone["since"], up_since)

    def test_sigterm_drains_in_flight_requests(self):
        p = self.pair()
        result = {}

        def slow():
            result["status"], _, result["body"] = get(p.http_port, "/slow?ms=1500", timeout=15)

        t = threading.Thread(target=slow)
        t.start()
        harness.wait_until(lambda: metrics(p.edge_admin)["coilgun_exchanges_in_flight"] >= 1,
                           what="the request in flight")
        p.edge.signal(signal.SIGTERM)
        p.edge.wait_for(lambda r: r.get("msg") == "draining", what="draining")
        self.assertEqual(get(p.edge_admin, "/ready", host="127.0.0.1")[0], 503)
        t.join(timeout=10)
        self.assertEqual(result.get("status"), 200)
        self.assertEqual(p.edge.proc.wait(timeout=10), 0)

    def test_check_version_and_help(self):
        certs = harness.Certs(os.path.join(self.tmp, "c"))
        origin, edge = harness.binary("coilgun-origin"), harness.binary("coilgun-edge")
        ok = subprocess.run([origin, "--check", "--backend", "http://127.0.0.1:1"] + certs.agent_flags(),
                            capture_output=True)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        bad = subprocess.run([origin, "--check", "--backend", "http://127.0.0.1:1", "--tls-ca", certs.path("ca.pem"),
                              "--tls-cert", certs.path("agent.pem"), "--tls-key", certs.path("edge-edge.key")],
                             capture_output=True)
        self.assertEqual(bad.returncode, 1)
        ok = subprocess.run([edge, "--check", "--agent", "127.0.0.1:2408"] + certs.edge_flags(), capture_output=True)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        for b in (origin, edge):
            v = subprocess.run([b, "--version"], capture_output=True)
            self.assertEqual(v.returncode, 0)
            self.assertIn(b" " + project_version().encode() + b"\n", v.stdout)
            h = subprocess.run([b, "--help"], capture_output=True)
            self.assertEqual(h.returncode, 0)
            self.assertIn(b"--tls-ca", h.stdout)

    def test_admin_endpoints_publish_the_metrics(self):
        p = self.pair()
        get(p.http_port, "/")
        get(p.http_port, "/")
        for port in (p.edge_admin, p.origin_admin):
            m = metrics(port)
            for name in ('coilgun_requests_total{code="2xx"}', "coilgun_body_bytes_total",
                         'coilgun_link_bytes_total{direction="in"}', 'coilgun_link_bytes_total{direction="out"}',
                         'coilgun_delta_responses_total{result="delta"}', "coilgun_tunnel_connections",
                         "coilgun_request_duration_seconds_count"):
                self.assertIn(name, m)
            self.assertEqual(m['coilgun_requests_total{code="2xx"}'], 2)
            self.assertEqual(get(port, "/healthz", host="127.0.0.1")[0], 200)
            self.assertEqual(get(port, "/ready", host="127.0.0.1")[0], 200)
            stats = json.loads(get(port, "/stats", host="127.0.0.1")[2])
            self.assertIn("metrics", stats)
        self.assertEqual(metrics(p.edge_admin)["coilgun_tunnel_connections"], 2)


if __name__ == "__main__":
    unittest.main()
