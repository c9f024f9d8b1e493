"""Integration tests: what real backends do to the agent's keep-alive pool (issue #9).

    python3 -m unittest tests/integration/test_backend.py     (COILGUN_BUILD picks the build)

The backends are real programs: nginx serving files, Python's http.server (which ignores a GET's
body), and a raw-socket backend in this process that misbehaves on purpose (a 204 with a body, a
second answer nobody asked for, a connection closed after reading a request). Every pair runs
one worker on each side, so that consecutive requests share the agent's one backend pool.
"""

import hashlib
import http.client
import http.server
import json
import os
import socket
import struct
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import get, metrics  # noqa: E402
from test_pair import PairTestCase, raw_exchange  # noqa: E402



def read_head(conn, buf):
    """Reads from |conn| until a request head is in |buf| (a bytearray); returns the head
    (bytes, without the blank line) and leaves what follows in |buf|, or None at EOF."""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None
        buf += data
    head, _, rest = bytes(buf).partition(b"\r\n\r\n")
    buf[:] = rest
    return head


class RawServer:
    """A TCP server on loopback whose subclass speaks on raw sockets: each accepted connection
    (TCP_NODELAY, as servers that stream set it, or a first piece waits for the head's ACK) is
    served by _serve(conn) in a thread of its own. |connections| counts them; stop() closes the
    listener and shuts every connection down."""

    def __init__(self):
        self.lock = threading.Lock()
        self.connections = 0
        self.conns = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.connections += 1
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        raise NotImplementedError

    @staticmethod
    def response(body, status="200 OK", ctype="text/plain", extra=""):
        """A whole response with |body|; |extra|: more field lines, each ending in CRLF."""
        return (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n{extra}"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    def stop(self):
        self.sock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                c.close()


class MisbehavingBackend(RawServer):
    """A keep-alive HTTP/1.1 backend on loopback that answers each request by its path:

      /ok/NAME     200 with body "ok NAME"
      /204body     a 204 that carries a body anyway, in the same write
      /stray       200 "first", then 300 ms later a second, unasked-for response; sets
                   |stray_sent| once it is out
      /streamed    a 4 MiB application/octet-stream body, then a stray response in the same
                   connection right after it
      /vanish      reads the request, counts it, and closes the connection without a byte
      /204late     a 204 that announces a body (Content-Length: 6) and sends it 300 ms later
      /slowbody    a text/html head, then its 11-byte body 200 ms later
      /late        200 after two seconds (a long poll)
      /private     a page marked Cache-Control: private that changes on every request
      /early       a 413 as soon as the head is in, before reading the body (as a server that
                   refuses an upload does), then reads and counts the body (|early_read|) until
                   the agent closes the connection
      /reset, /short, /badchunk, /hugeheader
                   a page cut by an RST, cut short by a close, with a broken chunk size line,
                   or with a 100 KiB header field (see BROKEN)
      /events, /trickle, /unbuffered
                   a chunked body in PIECES pieces, one each INTERVAL seconds: server-sent
                   events, text/plain, and text/html marked "X-Accel-Buffering: no"; the time
                   each piece was sent goes to |sent|

    It counts requests per method and path, and connections accepted."""

    def __init__(self):
        self.seen = {}  # "METHOD /path" -> count
        self.stray_sent = threading.Event()
        self.sent = {}  # path -> monotonic times each piece was sent
        self.early_read = None  # Body bytes /early read after its answer, once it has closed.
        super().__init__()

    def count(self, key):
        with self.lock:
            return self.seen.get(key, 0)

    def _serve(self, conn):
        buf = bytearray()
        try:
            while True:
                head = read_head(conn, buf)
                if head is None:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ")
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value.strip())
                if path == "/early":
                    return self._answer_early(conn, buf)
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                del buf[:length]
                with self.lock:
                    key = f"{method} {path}"
                    self.seen[key] = self.seen.get(key, 0) + 1
                if not self._answer(conn, method, path):
                    return
        except OSError:
            return
        finally:
            conn.close()
    def _answer_early(self, conn, buf):
        with self.lock:
            self.seen["POST /early"] = self.seen.get("POST /early", 0) + 1
        conn.sendall(self.response(b"too large", status="413 Content Too Large", extra="Connection: close\r\n"))
        read = len(buf)
        try:
            while True:  # A lingering close: read what comes until the agent closes its side.
                data = conn.recv(65536)
                if not data:
                    break
                read += len(data)
        except OSError:
            pass  # A reset instead of a FIN: the agent has closed all the same.
        with self.lock:
            self.early_read = read

    def _answer(self, conn, method, path):
        """Answers one request; False to close the connection."""
        if path.startswith("/ok/"):
            conn.sendall(self.response(b"ok " + path[4:].encode()))
        elif path == "/204body":
            conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 6\r\n\r\nSTRAY!")
        elif path == "/stray":
            conn.sendall(self.response(b"first"))
            time.sleep(0.3)
            conn.sendall(self.response(b"STRAY!"))
            self.stray_sent.set()
        elif path == "/streamed":
            conn.sendall(self.response(b"\x07" * (4 << 20), ctype="application/octet-stream")
                         + self.response(b"STRAY!"))
        elif path == "/vanish":
            return False
        elif path == "/204late":
            conn.sendall(b"HTTP/1.1 204 No Content\r\nContent-Length: 6\r\n\r\n")
            time.sleep(0.3)
            conn.sendall(b"STRAY!")
        elif path == "/slowbody":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 11\r\n\r\n")
            time.sleep(0.2)
            conn.sendall(b"late body\r\n")
        elif path == "/late":
            time.sleep(2.0)
            conn.sendall(self.response(b"late answer"))
        elif path == "/private":
            with self.lock:
                self.private_served = getattr(self, "private_served", 0) + 1
                n = self.private_served
            body = b"<p>your account, visit %d</p>" % n + b"<li>the same long list</li>" * 200
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nCache-Control: private\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        elif path in self.STREAMS:
            self._trickle(conn, path)
        elif path in self.BROKEN:
            conn.sendall(self.BROKEN[path])
            if path == "/reset":  # An RST, not a FIN: SO_LINGER 0 and close.
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        else:
            conn.sendall(self.response(b"no such path", status="404 Not Found"))
        return True

    # Answers cut or broken, then the connection closes (/reset with an RST).
    BROKEN = {
        "/reset": b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100\r\n\r\npart",
        "/short": b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100\r\n\r\nonly ten b",
        "/badchunk": b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"zz\r\nnot a chunk size\r\n0\r\n\r\n",
        "/hugeheader": b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * (100 * 1024) + b"\r\nContent-Length: 2\r\n\r\nok",
    }
    PIECES, INTERVAL = 4, 0.4
    STREAMS = {"/events": "Content-Type: text/event-stream",
               "/trickle": "Content-Type: text/plain",
               "/unbuffered": "Content-Type: text/html\r\nX-Accel-Buffering: no"}

    def _trickle(self, conn, path):
        conn.sendall(f"HTTP/1.1 200 OK\r\n{self.STREAMS[path]}\r\nTransfer-Encoding: chunked\r\n\r\n"
                     .encode())
        for i in range(self.PIECES):
            if i:
                time.sleep(self.INTERVAL)
            piece = f"data: piece-{i}\n\n".encode()
            with self.lock:
                self.sent.setdefault(path, []).append(time.monotonic())
            conn.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        conn.sendall(b"0\r\n\r\n")



class IgnoresGetBodies(http.server.BaseHTTPRequestHandler):
    """Python's own keep-alive server, as application servers are: do_GET never reads a body.
    /slow answers after a second, so that its late answer could meet the next request."""
    protocol_version = "HTTP/1.1"
    seen = []
    DATE = "Sun, 06 Nov 1994 08:49:37 GMT"

    def do_GET(self):  # noqa: N802 (http.server's naming)
        IgnoresGetBodies.seen.append(self.path)
        if self.path == "/dated":  # A Date of the backend's own, which must reach the client as is.
            self.send_response_only(200)
            self.send_header("Date", self.DATE)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/slow":
            time.sleep(1.0)
        body = f"answer for {self.path}".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class BackendTestCase(PairTestCase):
    def backend_pair(self, backend_port, edge_env=None, origin_env=None):
        env = {"COILGUN_BACKEND_POOL_RESPONSE_TIMEOUT": "5s"}
        env.update(origin_env or {})
        return self.pair(backend_port=backend_port, edge_env=edge_env, origin_env=env)

    def misbehaving(self):
        b = MisbehavingBackend()
        self.addCleanup(b.stop)
        return b


def slow_get(port, path, timeout=60.0):
    """GET |path| read by a slow client (a small receive buffer, 64 KiB every 2 ms), so that the
    pair's flow control pauses the agent's reading of the backend; returns (status, body)."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.sock = s
    try:
        conn.request("GET", path, headers={"Host": "www.example.com"})
        r = conn.getresponse()
        body = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            piece = r.read(65536)
            if not piece:
                break
            body += piece
            time.sleep(0.002)  # The client's pace, not a wait for an event.
        return r.status, bytes(body)
    finally:
        conn.close()


def post(port, path):
    """A POST with a body: never retried by the agent, so a connection left broken shows."""
    status, _, body = get(port, path, method="POST", body=b"form=1")
    return status, body


class TestPoolReuse(BackendTestCase):
    """What follows each misbehaviour is a POST with a body, which the agent never sends twice:
    a broken pooled connection shows as a 502 or a wrong answer, not as a silent retry."""

    def test_a_204_with_a_body_does_not_answer_the_next_request(self):
        b = self.misbehaving()
        p = self.backend_pair(b.port)
        status, _, body = get(p.http_port, "/204body")
        self.assertEqual((status, body), (204, b""))
        for name in ("a", "b", "c"):
            self.assertEqual(post(p.http_port, f"/ok/{name}"), (200, b"ok " + name.encode()))
        # The connection that carried the 204 was not used again.
        self.assertGreaterEqual(b.connections, 2)

    def test_a_204_that_announces_a_body_is_not_reused_before_the_body_comes(self):
        """The POST follows at once, before the late body: sent on the 204's connection it would
        be answered by "STRAY!" (a 502, as the POST is never retried)."""
        b = self.misbehaving()
        p = self.backend_pair(b.port)
        self.assertEqual(get(p.http_port, "/204late")[0], 204)
        self.assertEqual(post(p.http_port, "/ok/a"), (200, b"ok a"))
        self.assertEqual(b.connections, 2)

    def test_a_stray_second_answer_closes_the_idle_connection(self):
        b = self.misbehaving()
        p = self.backend_pair(b.port)
        status, _, body = get(p.http_port, "/stray")
        self.assertEqual((status, body), (200, b"first"))
        self.assertTrue(b.stray_sent.wait(5), "the backend never sent its stray answer")
        # The stray answer reached the agent's idle connection; the next request is not given it.
        self.assertEqual(post(p.http_port, "/ok/next"), (200, b"ok next"))
        self.assertEqual(b.connections, 2)

    def test_bytes_after_a_streamed_body_are_never_an_answer(self):
        b = self.misbehaving()
        p = self.backend_pair(b.port)
        status, body = slow_get(p.http_port, "/streamed")
        self.assertEqual(status, 200)
        self.assertEqual(len(body), 4 << 20)
        self.assertEqual(post(p.http_port, "/ok/after"), (200, b"ok after"))


def arrivals(port, path, pieces, timeout=10.0):
    """GETs |path| over a raw socket; returns the monotonic time each "piece-N" marker arrived,
    and whether the response then ended (the last chunk)."""
    seen = []
    data = b""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: www.example.com\r\n\r\n".encode())
        while time.monotonic() < deadline and not data.endswith(b"\r\n0\r\n\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            now = time.monotonic()
            while len(seen) < pieces and b"piece-%d" % len(seen) in data:
                seen.append(now)
    return seen, data.endswith(b"\r\n0\r\n\r\n")


class TestStreaming(BackendTestCase):
    """Bodies that must not wait for their end: each piece reaches the client as it is sent, and
    a stream that keeps moving outlives limits.request_timeout (1 s here)."""

    def check_streams(self, path, stream_after="20ms"):
        b = self.misbehaving()
        p = self.backend_pair(b.port, edge_env={"COILGUN_LIMITS_REQUEST_TIMEOUT": "1s"},
                              origin_env={"COILGUN_DELTA_STREAM_AFTER": stream_after})
        got, ended = arrivals(p.http_port, path, b.PIECES)
        self.assertTrue(ended, f"{path}: the response did not end")
        self.assertEqual(len(got), b.PIECES)
        lags = sorted(g - s for g, s in zip(got, b.sent[path]))
        print(f"{path}: lag per piece (ms): {[round(x * 1000, 1) for x in lags]}", file=sys.stderr)
        # Buffered until its end, the first piece would be 1.2 s late.
        self.assertLess(lags[-1], b.INTERVAL / 2, lags)
        self.assertLess(lags[len(lags) // 2], 0.05, lags)
        m = metrics(p.edge_admin)
        self.assertEqual(m['coilgun_delta_responses_total{result="stream"}'], 1)

    # Events and unbuffered responses stream from their head on: with delta.stream_after at a
    # minute, waiting for a pause instead would be late by far.
    def test_server_sent_events_stream(self):
        self.check_streams("/events", stream_after="60s")

    def test_an_unbuffered_response_streams(self):
        self.check_streams("/unbuffered", stream_after="60s")

    def test_a_trickling_page_streams(self):
        self.check_streams("/trickle")

    def test_a_body_that_comes_after_a_pause_still_arrives(self):
        """The head alone, then a pause: the coded body turns into a stream before its first
        byte, and the backend must still be read."""
        b = self.misbehaving()
        p = self.backend_pair(b.port)
        status, _, body = get(p.http_port, "/slowbody", timeout=5)
        self.assertEqual((status, body), (200, b"late body\r\n"))
        m = metrics(p.edge_admin)
        self.assertEqual(m['coilgun_delta_responses_total{result="stream"}'], 1)


class TestRouteOptions(BackendTestCase):
    """[[route]] request_timeout, backend_timeout and private_deltas."""

    def route_edge(self, p, options):
        """Replaces |p|'s edge with one whose route for www.example.com carries |options|."""
        p.edge.stop()
        conf = os.path.join(self.tmp, "edge.toml")
        with open(conf, "w") as f:
            f.write(f'listen = "127.0.0.1:0"\nadmin = "127.0.0.1:0"\nworkers = 1\n[tls]\n'
                    f'ca = "{p.certs.path("ca.pem")}"\ncert = "{p.certs.path("edge-edge.pem")}"\n'
                    f'key = "{p.certs.path("edge-edge.key")}"\n[[route]]\nhosts = ["www.example.com"]\n'
                    f'agent = "127.0.0.1:{p.agent_port}"\n{options}\n')
        p.edge = harness.Process([harness.binary("coilgun-edge"), "-c", conf], "edge")
        _, p.http_port = p.edge.address("http")
        _, p.edge_admin = p.edge.address("admin")
        p.wait_ready()

    def test_a_long_poll_waits_as_long_as_its_route_says(self):
        b = self.misbehaving()
        p = self.backend_pair(b.port, origin_env={"COILGUN_BACKEND_POOL_RESPONSE_TIMEOUT": "1s"})
        self.assertEqual(get(p.http_port, "/late")[0], 504)
        self.route_edge(p, 'backend_timeout = "5s"\nrequest_timeout = "1s"')
        status, _, body = get(p.http_port, "/late")
        self.assertEqual((status, body), (200, b"late answer"))

    def test_private_responses_are_deltas_unless_the_route_says_no(self):
        b = self.misbehaving()
        p = self.backend_pair(b.port)
        for _ in range(2):
            self.assertEqual(get(p.http_port, "/private")[0], 200)
        m = metrics(p.edge_admin)
        self.assertEqual(m['coilgun_delta_responses_total{result="delta"}'], 1)
        self.route_edge(p, "private_deltas = false")
        for _ in range(2):
            status, headers, body = get(p.http_port, "/private")
            self.assertEqual(status, 200)
            self.assertEqual(headers["cache-control"], "private")
        m = metrics(p.edge_admin)
        self.assertEqual(m['coilgun_delta_responses_total{result="stream"}'], 2)
        self.assertEqual(m.get('coilgun_delta_responses_total{result="delta"}', 0), 0)


class TestNginxBackend(BackendTestCase):
    """A stock nginx: a 16 MB file then a small one on one keep-alive connection, and its DAV
    module."""

    def setUp(self):
        super().setUp()
        site = os.path.join(self.tmp, "site")
        os.makedirs(site)
        self.big = os.urandom(16 << 20)
        with open(os.path.join(site, "big.bin"), "wb") as f:
            f.write(self.big)
        with open(os.path.join(site, "small.txt"), "wb") as f:
            f.write(b"small file\n")
        nginx = harness.Nginx(self.tmp, f"""
    listen 127.0.0.1:{{port}}; root {site}; keepalive_requests 10000;
    location /dav/ {{{{ dav_methods PUT DELETE; create_full_put_path on; }}}}""")
        self.addCleanup(nginx.stop)
        self.port = nginx.port

    def test_a_large_streamed_file_then_a_small_one(self):
        p = self.backend_pair(self.port)
        for _ in range(2):
            status, body = slow_get(p.http_port, "/big.bin")
            started = time.monotonic()
            self.assertEqual(status, 200)
            self.assertEqual(hashlib.sha256(body).digest(), hashlib.sha256(self.big).digest())
            status, _, body = get(p.http_port, "/small.txt", timeout=20)
            self.assertEqual((status, body), (200, b"small file\n"))
            # Far below the 5 s backend timeout a connection left paused would wait out.
            self.assertLess(time.monotonic() - started, 4.5)
        errors = {k: v for k, v in metrics(p.origin_admin).items() if k.startswith("coilgun_errors_total")}
        self.assertEqual(sum(errors.values()), 0, errors)


    def test_an_empty_put_keeps_its_content_length(self):
        """nginx's DAV module refuses a PUT without a length; "Content-Length: 0" is one."""
        p = self.backend_pair(self.port)
        out, _ = raw_exchange(p.http_port, b"PUT /dav/empty.txt HTTP/1.1\r\nHost: www.example.com\r\n"
                                           b"Content-Length: 0\r\nConnection: close\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 201"), out[:200])
        status, _, body = get(p.http_port, "/dav/empty.txt")
        self.assertEqual((status, body), (200, b""))


class TestHttpsBackend(BackendTestCase):
    """An https:// backend (issue #14, "Missing"): a stock nginx terminating TLS with a
    certificate from the test's CA (names 127.0.0.1 and localhost) in front of the sample site,
    verified against backend_tls.ca; a client certificate for an nginx that asks for one."""

    def https_pair(self, tag, verify_client=False, ca=True, client_cert=False):
        """The site behind nginx (TLS) behind a pair; returns the pair and the site's port."""
        tmp = os.path.join(self.tmp, tag)
        os.makedirs(tmp)
        site = harness.Process([harness.binary("coilgun-sample-origin"), "--listen", "127.0.0.1:0"], "site")
        self.addCleanup(site.stop)
        _, site_port = site.address("origin")
        certs = harness.Certs(os.path.join(tmp, "certs"))
        verify = f"ssl_verify_client on; ssl_client_certificate {certs.path('ca.pem')};" if verify_client else ""
        nginx = harness.Nginx(tmp, f"""
    listen 127.0.0.1:{{port}} ssl; keepalive_requests 10000;
    ssl_certificate {certs.path('agent.pem')}; ssl_certificate_key {certs.path('agent.key')};
    ssl_protocols TLSv1.2 TLSv1.3; {verify}
    location / {{{{ proxy_pass http://127.0.0.1:{site_port}; proxy_http_version 1.1;
                   proxy_set_header Host $host; }}}}""")
        self.addCleanup(nginx.stop)
        conf = os.path.join(tmp, "origin.toml")
        with open(conf, "w") as f:
            f.write(f'backend = "https://localhost:{nginx.port}"\n[backend_tls]\n')
            if ca:
                f.write(f'ca = "{certs.path("ca.pem")}"\n')
            if client_cert:  # A clientAuth certificate from the same CA.
                f.write(f'cert = "{certs.path("edge-edge.pem")}"\nkey = "{certs.path("edge-edge.key")}"\n')
        # The last --backend flag wins over the pair's own (http://) one and over the file.
        p = self.pair(backend_port=nginx.port, origin_args=["-c", conf, "--backend", f"https://localhost:{nginx.port}"])
        return p, site_port

    def test_an_https_backend_is_verified_and_answers_byte_exact(self):
        p, site_port = self.https_pair("verified")
        for _ in range(3):
            status, _, page = get(p.http_port, "/")
            self.assertEqual(status, 200)
            self.assertIn(b"<html", page)
        self.assertGreaterEqual(metrics(p.edge_admin)['coilgun_delta_responses_total{result="delta"}'], 1)
        big = get(p.http_port, "/big?bytes=3000000", timeout=30)
        self.assertEqual((big[0], big[2]), (200, get(site_port, "/big?bytes=3000000", timeout=30)[2]))
        body = os.urandom(200000)
        self.assertEqual(get(p.http_port, "/echo", method="POST", body=body)[::2], (200, body))
        errors = {k: v for k, v in metrics(p.origin_admin).items() if k.startswith("coilgun_errors_total")}
        self.assertEqual(sum(errors.values()), 0, errors)

    def test_a_backend_certificate_that_fails_verification_is_never_used(self):
        # The system's trust store does not hold the test's CA.
        p, _ = self.https_pair("untrusted", ca=False)
        self.assertEqual(get(p.http_port, "/")[::2], (502, b"Bad Gateway (backend_failed)\n"))
        warned = p.origin.wait_for(lambda r: r.get("msg") == "backend TLS failed", what="the TLS warning")
        self.assertIn("certificate: unable to get local issuer certificate", warned["tls"])

    def test_a_client_certificate_for_a_backend_that_asks(self):
        p, _ = self.https_pair("no-client-cert", verify_client=True)
        self.assertEqual(get(p.http_port, "/")[0], 400)  # nginx: "No required SSL certificate was sent".
        p2, _ = self.https_pair("client-cert", verify_client=True, client_cert=True)
        self.assertEqual(get(p2.http_port, "/")[0], 200)


class TestBackendHealth(BackendTestCase):
    """[backend_health] (issue #14, "Missing"): the agent's /ready follows whether its backend
    answers GET <path>; /stats, coilgun_backend_up and the log say so."""

    def ready(self, p):
        return get(p.origin_admin, "/ready", host="127.0.0.1")[0]

    def health(self, p):
        return json.loads(get(p.origin_admin, "/stats", host="127.0.0.1")[2])["backend_health"]

    def test_ready_follows_the_backend_down_and_back(self):
        p = self.pair(origin_env={"COILGUN_BACKEND_HEALTH_PATH": "/status/204",
                                  "COILGUN_BACKEND_HEALTH_INTERVAL": "100ms",
                                  "COILGUN_BACKEND_HEALTH_TIMEOUT": "500ms"})
        harness.wait_until(lambda: self.ready(p) == 200, timeout=5, what="ready with the backend up")
        self.assertEqual(self.health(p)["state"], "up")
        self.assertEqual(metrics(p.origin_admin)["coilgun_backend_up"], 1.0)
        site_port = p.backend_port
        p.site.stop()
        harness.wait_until(lambda: self.ready(p) == 503, timeout=5, what="not ready with the backend gone")
        h = self.health(p)
        self.assertEqual(h["state"], "down")
        self.assertIn("refused", h["last_error"])
        self.assertEqual(metrics(p.origin_admin)["coilgun_backend_up"], 0.0)
        p.origin.wait_for(lambda r: r.get("msg") == "backend unhealthy: the agent is not ready", what="the warning")
        p.site = harness.Process([harness.binary("coilgun-sample-origin"), "--listen", f"127.0.0.1:{site_port}"],
                                 "backend")
        harness.wait_until(lambda: self.ready(p) == 200, timeout=5, what="ready again")
        ups = [r for r in p.origin.records() if r.get("msg") == "backend healthy"]
        self.assertEqual(len(ups), 2)  # At start and after the outage: once per change.
        self.assertEqual(get(p.http_port, "/")[0], 200)

    def test_an_error_status_is_unhealthy_and_checks_are_off_by_default(self):
        p = self.pair(origin_env={"COILGUN_BACKEND_HEALTH_PATH": "/status/500",
                                  "COILGUN_BACKEND_HEALTH_INTERVAL": "100ms"})
        harness.wait_until(lambda: self.health(p)["state"] == "down", timeout=5, what="down on a 500")
        self.assertEqual(self.health(p)["last_error"], "status 500")
        self.assertEqual(self.ready(p), 503)
        plain = self.pair()
        self.assertEqual(self.health(plain), {"state": "off"})
        self.assertEqual(self.ready(plain), 200)
        self.assertNotIn("coilgun_backend_up", metrics(plain.origin_admin))


class TestRetries(BackendTestCase):
    """A request that fails on a reused connection before any byte of its answer: sent again only
    when it is safe (RFC 9110 §9.2.1), so that the backend never runs a DELETE or a POST twice."""

    def fail_on_a_reused_connection(self, method, body=None):
        """Sends |method| /vanish on the connection a first request left in the pool; returns the
        status and how often the backend saw the request."""
        b = self.misbehaving()
        p = self.backend_pair(b.port)
        self.assertEqual(get(p.http_port, "/ok/warm")[2], b"ok warm")
        self.assertEqual(b.connections, 1)
        status, _, _ = get(p.http_port, "/vanish", method=method, body=body)
        return status, b.count(f"{method} /vanish")

    def test_a_delete_is_never_sent_twice(self):
        self.assertEqual(self.fail_on_a_reused_connection("DELETE"), (502, 1))

    def test_an_empty_post_is_never_sent_twice(self):
        self.assertEqual(self.fail_on_a_reused_connection("POST", body=b""), (502, 1))

    def test_a_get_is_retried_once_on_a_fresh_connection(self):
        # Sent twice (the reused connection, then a fresh one), and both vanished: 502.
        self.assertEqual(self.fail_on_a_reused_connection("GET"), (502, 2))


class TestRequestBodies(BackendTestCase):
    def python_backend_pair(self):
        IgnoresGetBodies.seen = []
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), IgnoresGetBodies)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        return self.backend_pair(server.server_address[1])

    def test_the_backends_date_is_kept_and_not_doubled(self):
        p = self.python_backend_pair()
        out, _ = raw_exchange(p.http_port, b"GET /dated HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        self.assertTrue(out.startswith(b"HTTP/1.1 200"), out[:60])
        self.assertEqual(out.lower().count(b"\r\ndate:"), 1, out)
        self.assertIn(b"\r\ndate: " + IgnoresGetBodies.DATE.encode() + b"\r\n", out)

    def test_a_get_body_never_becomes_a_request_answered_to_another_client(self):
        p = self.python_backend_pair()
        smuggled = b"GET /slow HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
        request = (b"GET /first HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(smuggled)) + smuggled
        out, _ = raw_exchange(p.http_port, request)
        self.assertIn(b"answer for /first", out)
        self.assertNotIn(b"/slow", out)
        # Another client, at once: within the second the smuggled /slow takes to answer.
        for name in ("/second", "/third"):
            status, _, body = get(p.http_port, name)
            self.assertEqual((status, body), (200, b"answer for " + name.encode()))



if __name__ == "__main__":
    unittest.main()


class TestTeardown(BackendTestCase):
    """Exchanges that end while the agent still waits on the backend for them (issue #10: the
    agent crashed in tunnel teardown, reading a freed exchange when its backend connection came).
    The asan build's report fails the test; the release build checks the agent lives on."""

    def test_a_request_abandoned_while_the_agent_connects_to_the_backend(self):
        backend = socket.socket()
        self.addCleanup(backend.close)
        backend.bind(("127.0.0.1", 0))
        backend.listen(0)
        # One connection nobody accepts fills the accept queue: the agent's connect then waits
        # (its SYN is dropped and sent again a second later) until the queue is drained.
        filler = socket.create_connection(backend.getsockname(), timeout=5)
        self.addCleanup(filler.close)
        p = self.backend_pair(backend.getsockname()[1],
                              origin_env={"COILGUN_BACKEND_POOL_CONNECT_TIMEOUT": "10s"})
        client = socket.create_connection(("127.0.0.1", p.http_port), timeout=10)
        client.sendall(b"GET /ok/x HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
        harness.wait_until(lambda: metrics(p.origin_admin)["coilgun_exchanges_in_flight"] == 1,
                           what="the agent's exchange waiting for its backend connection")
        # The client resets its connection (a FIN would be a half-close, and the edge would wait
        # for the answer); the edge resets the stream, the agent drops the exchange.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()
        harness.wait_until(
            lambda: metrics(p.origin_admin).get('coilgun_errors_total{reason="client_gone"}', 0) == 1,
            what="the agent dropping the exchange")
        # Drained, the queue lets the agent's connection in; the agent, its exchange gone, closes
        # it without a request.
        backend.settimeout(10)
        backend.accept()[0].close()  # The filler.
        conn, _ = backend.accept()
        self.addCleanup(conn.close)
        conn.settimeout(10)
        self.assertEqual(conn.recv(65536), b"", "the agent sent a request nobody waits for")
        self.assertIsNone(p.origin.proc.poll(), "the agent died")
        self.assertEqual(get(p.origin_admin, "/healthz", host="127.0.0.1")[0], 200)

    def test_a_response_cut_by_a_lost_tunnel_is_blamed_on_the_tunnel(self):
        """Not on the client (it was counted client_gone, status 499, before issue #10)."""
        b = self.misbehaving()
        p = self.backend_pair(b.port)
        s = socket.create_connection(("127.0.0.1", p.http_port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"GET /events HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
        buf = bytearray()
        self.assertIsNotNone(read_head(s, buf))
        while not buf:
            buf += harness.recv_some(s, "the first event")
        p.origin.proc.kill()
        for _ in range(1000):  # The edge closes the client's connection: the response is cut.
            if not s.recv(65536):
                break
        errors = lambda: {k: v for k, v in metrics(p.edge_admin).items()  # noqa: E731
                          if k.startswith("coilgun_errors_total") and v}
        harness.wait_until(lambda: 'coilgun_errors_total{reason="tunnel_lost"}' in errors(),
                           what="the edge counting tunnel_lost")
        self.assertNotIn('coilgun_errors_total{reason="client_gone"}', errors())


class TestEarlyAnswer(BackendTestCase):
    """A backend that answers an upload before reading it (a 413 on the head). The agent ends
    the tunnel stream once its answer is out (Session::reset_after_data); the edge closes the
    client's connection after the answer but lingers, reading and dropping the rest of the
    upload, so that its close does not reset the connection: a reset makes the client's kernel
    drop the answer it has not read yet (it did, before this test, whenever the FIN was out
    before the socket closed)."""

    def test_an_answer_before_the_body_reaches_a_client_that_reads_after_uploading(self):
        b = self.misbehaving()
        p = self.backend_pair(b.port)
        total = 16 << 20  # Far more than the tunnel's windows.
        s = socket.create_connection(("127.0.0.1", p.http_port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"POST /early HTTP/1.1\r\nHost: www.example.com\r\nContent-Type: application/octet-stream\r\n"
                  b"Content-Length: %d\r\n\r\n" % total)
        # The whole body, as a client that reads nothing before its upload is out (curl does).
        s.sendall(b"u" * total)
        buf = bytearray()
        head = read_head(s, buf)
        self.assertIsNotNone(head)
        self.assertTrue(head.startswith(b"HTTP/1.1 413"), head[:100])
        while len(buf) < len(b"too large"):
            buf += harness.recv_some(s, "the answer's body")
        self.assertEqual(bytes(buf), b"too large")
        self.assertEqual(s.recv(65536), b"", "the connection stays open after the answer")
        harness.wait_until(lambda: metrics(p.edge_admin)["coilgun_exchanges_in_flight"] == 0
                           and metrics(p.origin_admin)["coilgun_exchanges_in_flight"] == 0,
                           what="both daemons done with the exchange")
        harness.wait_until(lambda: b.early_read is not None, what="the agent closing the backend connection")
        print(f"the backend read {b.early_read} body bytes after its answer", file=sys.stderr)
        self.assertLess(b.early_read, total // 2, "the agent went on sending the body")
        self.assertEqual(get(p.http_port, "/ok/after")[2], b"ok after")


class TestBackendFaults(BackendTestCase):
    """A backend that breaks its answer gets the client a clean 502, and the agent's pool is
    left able to serve (issue #10 asks to keep these as tests)."""

    def test_broken_answers_are_502_and_the_next_request_is_served(self):
        b = self.misbehaving()
        p = self.backend_pair(b.port)
        for path in MisbehavingBackend.BROKEN:
            status, _, body = get(p.http_port, path)
            self.assertEqual((path, status), (path, 502), body[:200])
            self.assertEqual(get(p.http_port, "/ok/after")[2], b"ok after", path)

    def test_a_backend_that_stalls_is_504(self):
        b = self.misbehaving()
        p = self.backend_pair(b.port, origin_env={"COILGUN_BACKEND_POOL_RESPONSE_TIMEOUT": "1s"})
        start = time.monotonic()
        self.assertEqual(get(p.http_port, "/late")[0], 504)  # /late answers after 2 s.
        self.assertLess(time.monotonic() - start, 1.9)
