"""Integration tests: the edge is strict where RFC 9112 says so and lenient where it says so.

    cd tests/integration && COILGUN_BUILD=... python3 -m unittest -v test_strict

Raw sockets against a real edge and agent on loopback, with the sample origin as the backend
(its /headers answers with the method, target and fields it received, /echo with the body).
"""

import email.utils
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import get, metrics  # noqa: E402
from test_pair import PairTestCase, raw_exchange  # noqa: E402

IMF_FIXDATE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                         r"\d{4} \d\d:\d\d:\d\d GMT$")


def split_response(out):
    """(status, {lower-case name: value}, body) of the first response in |out|."""
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), fields, body


def backend_saw(port, request):
    """Sends |request| (for /headers, with Connection: close); returns what the backend received:
    {"method", "target", "fields": {lower-case name: value}}."""
    out, _ = raw_exchange(port, request)
    status, _, body = split_response(out)
    if status != 200:
        raise AssertionError(f"status {status}: {out[:200]!r}")
    seen = json.loads(body)
    seen["fields"] = {k.lower(): v for k, v in seen["headers"]}
    return seen


class TestStrictRequests(PairTestCase):
    """What the edge refuses, with the status RFC 9112 and RFC 9110 ask for."""

    def assert_refused(self, port, request, status=b"400"):
        out, closed = raw_exchange(port, request)
        self.assertTrue(out.startswith(b"HTTP/1.1 " + status), (request[:80], out[:80]))
        self.assertEqual(out.count(b"HTTP/1.1 "), 1, out)  # Nothing smuggled past the error.
        self.assertTrue(closed, request[:80])

    def test_a_bare_cr_in_a_head_or_a_chunk_size_line_gets_400(self):
        p = self.pair()
        for bad in (
                # llhttp 8.1 alone ends this head at "\r\n\r" and takes "GET /smuggled" as the body.
                b"GET /status/200 HTTP/1.1\r\nHost: x\r\n\rGET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET / HTTP/1.1\r\nHost: x\r\na: b\rc\r\n\r\n",
                b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\rX\r\nhello\r\n0\r\n\r\n",
                b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\rX\r\nhello\r\n0\r\n\r\n"):
            self.assert_refused(p.http_port, bad)

    def test_an_invalid_host_or_userinfo_gets_400(self):
        p = self.pair()
        for host in (b"a b.com", b"a.com/x", b"a.com, b.com", b"a.com:99999", b"a.com:x", b"[::1"):
            self.assert_refused(p.http_port, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
        for target in (b"http://user@www.example.com/", b"http://user:pw@www.example.com/x",
                       b"http://a.com:99999/", b"http:///x"):
            self.assert_refused(p.http_port, b"GET " + target + b" HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
        # An HTTP/1.1 request whose Host names no host at all.
        out, _ = raw_exchange(p.http_port, b"GET / HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 400"), out[:80])

    def test_a_long_request_target_gets_414_and_a_long_head_431(self):
        p = self.pair()
        self.assert_refused(p.http_port, b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", b"414")
        self.assert_refused(p.http_port, b"GET /" + b"a" * 1000 + b" HTTP/1.1\r\nHost: x\r\nX: "
                            + b"b" * 70000 + b"\r\n\r\n", b"431")

    def test_the_header_count_limit_is_the_config_key(self):
        p = self.pair(edge_env={"COILGUN_LIMITS_MAX_HEADERS": "4"})
        fields = b"".join(b"X-%d: v\r\n" % i for i in range(3))
        out, _ = raw_exchange(p.http_port, b"GET /status/200 HTTP/1.1\r\nHost: x\r\n" + fields
                              + b"Connection: close\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 431"), out[:80])  # Five fields.
        out, _ = raw_exchange(p.http_port, b"GET /status/200 HTTP/1.1\r\nHost: x\r\n" + fields[:8]
                              + b"Connection: close\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 200"), out[:80])  # Three.
        # The default is 128: the 129th field gets the edge's 431 (128 would reach a backend
        # that adds its own fields and has a limit of its own).
        self.assertIn("\nmax_headers = 128\n", subprocess.run(
            [harness.binary("coilgun-edge"), "--print-config", "--agent", "127.0.0.1:1", "--tls-ca", "a",
             "--tls-cert", "b", "--tls-key", "c"], capture_output=True, text=True, check=True).stdout)
        q = self.pair()
        many = b"".join(b"X-%d: v\r\n" % i for i in range(126))
        self.assert_refused(q.http_port, b"GET /status/200 HTTP/1.1\r\nHost: x\r\n" + many
                            + b"X-Last: v\r\nConnection: close\r\n\r\n", b"431")


class TestLenientRequests(PairTestCase):
    """What the edge accepts and forwards although an older parser refused it."""

    def test_any_method_token_is_forwarded(self):
        p = self.pair()
        for method in (b"QUERY", b"PROPFIND", b"MKCOL", b"FOO-BAR", b"get"):
            seen = backend_saw(p.http_port, method + b" /headers?m HTTP/1.1\r\nHost: www.example.com\r\n"
                               b"Content-Length: 2\r\nConnection: close\r\n\r\nhi")
            self.assertEqual(seen["method"], method.decode())
            self.assertEqual(seen["target"], "/headers?m")
            self.assertEqual(seen["fields"]["content-length"], "2")

    def test_the_absolute_form_authority_is_the_host_the_backend_sees(self):
        p = self.pair()
        seen = backend_saw(p.http_port, b"GET HTTP://Abs.Example:8080/headers?x=/y HTTP/1.1\r\n"
                           b"Host: decoy.example\r\nConnection: close\r\n\r\n")
        self.assertEqual(seen["fields"]["host"], "Abs.Example:8080")
        self.assertEqual(seen["target"], "/headers?x=/y")
        seen = backend_saw(p.http_port, b"GET https://[::1]/headers HTTP/1.1\r\nHost: decoy.example\r\n"
                           b"Connection: close\r\n\r\n")
        self.assertEqual(seen["fields"]["host"], "[::1]")
        self.assertEqual(seen["target"], "/headers")

    def test_http10_without_host_takes_the_default_route(self):
        p = self.pair()
        seen = backend_saw(p.http_port, b"GET /headers HTTP/1.0\r\n\r\n")
        self.assertEqual(seen["target"], "/headers")
        self.assertEqual(seen["fields"]["host"], "")  # The target URI has no authority.

    def test_http10_without_host_and_no_default_route_gets_421(self):
        port = self.routed_edge(self.pair(), ["www.example.com"])
        out, _ = raw_exchange(port, b"GET /headers HTTP/1.0\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 421"), out[:80])

    def test_chunk_extensions_are_accepted_and_dropped(self):
        p = self.pair()
        body = (b"5;a=b;c=d\r\nhello\r\n"
                b"6;q=\"quoted \\\" pair; x=y\"\r\n world\r\n"
                b"1 ; name = value ; flag\r\n!\r\n"
                b"0;last=\"1\"\r\n\r\n")
        out, closed = raw_exchange(p.http_port, b"POST /echo HTTP/1.1\r\nHost: www.example.com\r\n"
                                   b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + body)
        status, _, echoed = split_response(out)
        self.assertEqual(status, 200, out[:200])
        self.assertEqual(echoed, b"hello world!")
        self.assertTrue(closed)


class TestResponseDate(PairTestCase):
    def test_a_response_without_date_gets_one(self):
        p = self.pair()  # The sample origin sends no Date.
        for method, path in (("GET", "/"), ("HEAD", "/"), ("GET", "/status/204"), ("GET", "/big?bytes=100")):
            before = time.time()
            status, headers, _ = get(p.http_port, path, method=method)
            after = time.time()
            self.assertIn("date", headers, (method, path, status))
            self.assertRegex(headers["date"], IMF_FIXDATE)
            sent = email.utils.parsedate_to_datetime(headers["date"]).timestamp()
            self.assertGreaterEqual(sent, int(before))
            self.assertLessEqual(sent, after)
        # The edge's own answers carry one too (it is their origin server): a 400 here.
        out, _ = raw_exchange(p.http_port, b"GET / HTTP/1.1\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 400"), out[:60])
        date = re.search(r"\r\nDate: ([^\r]*)\r\n", out.decode("latin-1"))
        self.assertIsNotNone(date, out)
        self.assertRegex(date.group(1), IMF_FIXDATE)


if __name__ == "__main__":
    unittest.main()


class TestClientLimits(PairTestCase):
    """Slow and numerous clients are bounded at the edge (issue #10: 8,000 clients dribbling a
    head byte every 3 s were never closed)."""

    def test_a_head_dribbled_past_client_header_timeout_gets_408(self):
        p = self.pair(edge_env={"COILGUN_LIMITS_CLIENT_HEADER_TIMEOUT": "1s", "COILGUN_WORKERS": "1"})
        head = b"GET /headers HTTP/1.1\r\nHost: www.example.com\r\nX-Slow: " + b"a" * 400
        clients = [socket.create_connection(("127.0.0.1", p.http_port), timeout=10) for _ in range(50)]
        for s in clients:
            self.addCleanup(s.close)
        start = time.monotonic()
        answered = {}
        for i in range(len(head)):  # One byte per client each 50 ms: never a whole head.
            for n, s in enumerate(clients):
                if n in answered:
                    continue
                try:
                    s.sendall(head[i:i + 1])
                except OSError:
                    answered[n] = b""
            ready, _, _ = select.select([s for n, s in enumerate(clients) if n not in answered], [], [], 0.05)
            for s in ready:
                answered[clients.index(s)] = s.recv(4096)
            if len(answered) == len(clients) or time.monotonic() - start > 8:
                break
        elapsed = time.monotonic() - start
        self.assertEqual(len(answered), len(clients), "dribbling clients still open")
        self.assertLess(elapsed, 5)
        self.assertTrue(all(a.startswith(b"HTTP/1.1 408 ") for a in answered.values()),
                        set(a[:20] for a in answered.values()))
        # A client that sends its head whole is served as ever.
        self.assertEqual(get(p.http_port, "/status/200")[0], 200)

    def test_a_body_that_pauses_past_client_body_timeout_gets_408(self):
        p = self.pair(edge_env={"COILGUN_LIMITS_CLIENT_BODY_TIMEOUT": "1s"})
        s = socket.create_connection(("127.0.0.1", p.http_port), timeout=10)
        self.addCleanup(s.close)
        start = time.monotonic()
        s.sendall(b"POST /echo HTTP/1.1\r\nHost: www.example.com\r\nContent-Length: 10\r\n\r\nabc")
        out = b""
        while True:
            data = s.recv(4096)
            if not data:
                break
            out += data
        self.assertTrue(out.startswith(b"HTTP/1.1 408 "), out[:80])
        self.assertLess(time.monotonic() - start, 5)

    def test_client_connections_over_the_cap_are_closed_and_logged(self):
        p = self.pair(edge_env={"COILGUN_LIMITS_MAX_CLIENT_CONNECTIONS": "5", "COILGUN_WORKERS": "1"})
        held = []
        for _ in range(5):  # Each one answered: the edge holds five open connections.
            s = socket.create_connection(("127.0.0.1", p.http_port), timeout=10)
            self.addCleanup(s.close)
            s.sendall(b"GET /status/200 HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
            self.assertTrue(harness.recv_some(s, "an answer").startswith(b"HTTP/1.1 200"))
            held.append(s)
        extra = socket.create_connection(("127.0.0.1", p.http_port), timeout=10)
        self.addCleanup(extra.close)
        try:
            extra.sendall(b"GET /status/200 HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
            self.assertEqual(extra.recv(4096), b"", "the sixth connection was served")
        except ConnectionResetError:
            pass  # Closed with the request unread: a reset, which is as good.
        line = p.edge.wait_for(lambda r: r.get("msg", "").startswith("client connection refused"),
                               what="the connection-limit warning")
        self.assertEqual(line.get("max_client_connections"), 5)
        self.assertGreaterEqual(metrics(p.edge_admin)['coilgun_errors_total{reason="client_connection_limit"}'], 1)
        held.pop().close()  # One goes: a new client is served again.

        def served():
            try:
                return get(p.http_port, "/status/200")[0] == 200
            except OSError:  # Closed at accept: the edge has not seen the close yet.
                return False
        harness.wait_until(served, timeout=5, what="a new client served once one left")
