"""Integration tests for the shared tier (issue #12 §2): edges and agents sharing their versions
through real memcached servers (Debian's memcached, on ephemeral loopback ports).

    python3 -m unittest tests/integration/test_fleet.py     (COILGUN_BUILD picks the build)
"""

import concurrent.futures
import json
import os
import signal
import http.client
import socketserver
import ssl
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Memcached, get, metrics  # noqa: E402
from test_pair import PairTestCase, make_corpus, news_versions  # noqa: E402


class GarbageMemcached(socketserver.ThreadingTCPServer):
    """Speaks memcached's text protocol and answers every get with garbage of the right frame,
    and every write with STORED: a poisoned cache."""
    daemon_threads = True
    allow_reuse_address = True

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            n = 0
            for line in self.rfile:
                words = line.split()
                if not words:
                    continue
                cmd = words[0]
                if cmd in (b"get", b"gets"):
                    out = b""
                    for key in words[1:]:
                        n += 1
                        # An index-looking prefix on some: the parser must still refuse it.
                        value = (b"CGI1" if n % 2 else b"") + os.urandom(16 * (n % 5) + 3)
                        out += b"VALUE %s 0 %d %d\r\n%s\r\n" % (key, len(value), n, value)
                    self.wfile.write(out + b"END\r\n")
                elif cmd in (b"set", b"add", b"append", b"cas", b"replace", b"prepend"):
                    self.rfile.read(int(words[4]) + 2)
                    self.wfile.write(b"STORED\r\n")
                elif cmd == b"version":
                    self.wfile.write(b"VERSION 1.6.18\r\n")
                else:
                    self.wfile.write(b"ERROR\r\n")

    def __init__(self):
        super().__init__(("127.0.0.1", 0), GarbageMemcached.Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self):
        return f"127.0.0.1:{self.server_address[1]}"

    def stop(self):
        self.shutdown()
        self.server_close()


class CloseDelimitedTls(socketserver.ThreadingTCPServer):
    """An HTTPS origin whose every answer is a 200 delimited by the end of the connection:
    ended with TLS's close_notify for /clean, by a bare FIN (what a forged FIN looks like) for
    any other path. Python's SSLSocket.close() sends no close_notify; unwrap() does."""
    daemon_threads = True
    allow_reuse_address = True
    BODY = b"close-delimited body " * 500

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            conn = self.server.tls.wrap_socket(self.request, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n"
                         + CloseDelimitedTls.BODY)
            if head.split(b" ")[1] == b"/clean":
                conn = conn.unwrap()
            conn.close()

    def __init__(self, cert, key):
        super().__init__(("127.0.0.1", 0), CloseDelimitedTls.Handler)
        self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.tls.load_cert_chain(cert, key)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self):
        return self.server_address[1]

    def stop(self):
        self.shutdown()
        self.server_close()


def stats(admin_port):
    status, _, body = get(admin_port, "/stats", host="127.0.0.1")
    assert status == 200, status
    return json.loads(body)


class FleetTestCase(PairTestCase):
    def setUp(self):
        super().setUp()
        self.memcached = []

    def tearDown(self):
        super().tearDown()
        for m in self.memcached:
            m.kill() if isinstance(m, Memcached) else m.stop()

    def shared_pair(self, servers, versions, **kw):
        corpus = os.path.join(self.tmp, "corpus")
        make_corpus(corpus, versions)
        env = {"COILGUN_STORE_MEMCACHED": ",".join(s.address for s in servers)}
        return self.pair(corpus=corpus, edge_env=env, origin_env=env, **kw)

    def edge(self, p, servers, name):
        """Another edge for |p|'s agent, sharing |servers|; returns (process, http port, admin)."""
        env = harness.launch.merged_env({"COILGUN_STORE_MEMCACHED": ",".join(s.address for s in servers)})
        e = harness.Process([harness.binary("coilgun-edge"), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                             "--agent", f"127.0.0.1:{p.tunnel_port}", "--workers", "1"] + p.certs.edge_flags(),
                            name, env=env)
        self.procs.append(e)
        _, port = e.address("http")
        _, admin = e.address("admin")
        e.wait_for(lambda r: r.get("msg") == "tunnel up", what="tunnel up")
        return e, port, admin

    def agent_results(self, p):
        return [r["delta"] for r in p.origin.records() if r.get("type") == "access"]


class TestSharedVersions(FleetTestCase):
    def first_two_versions(self):
        """A pair sharing one memcached that has served the first 2 of 3 versions of /page."""
        versions = news_versions(3)
        m = Memcached()
        self.memcached.append(m)
        p = self.shared_pair([m], versions)
        for v in versions[:2]:
            self.assertEqual(get(p.http_port, "/page")[::2], (200, v))
        return m, p, versions

    def test_an_edge_that_never_saw_a_page_gets_its_next_version_as_a_delta(self):
        m, p, versions = self.first_two_versions()
        harness.wait_until(lambda: stats(p.edge_admin)["store"]["shared"]["writes"] >= 2,
                           what="the first edge's versions in memcached")
        _, port, admin = self.edge(p, [m], "edge2")
        self.assertEqual(get(port, "/page")[::2], (200, versions[2]))
        harness.wait_until(lambda: len(self.agent_results(p)) == 3, what="3 access lines")
        self.assertEqual(self.agent_results(p), ["full", "delta", "delta"])
        self.assertEqual(stats(admin)["store"]["shared"]["hits"], 1)  # The base came from memcached.

    def test_an_edge_restarted_with_an_empty_memory_gets_the_next_version_as_a_delta(self):
        m, p, versions = self.first_two_versions()
        p.edge.stop()  # Stopping writes what it still had queued.
        _, port, _ = self.edge(p, [m], "edge-restarted")
        self.assertEqual(get(port, "/page")[::2], (200, versions[2]))
        harness.wait_until(lambda: len(self.agent_results(p)) == 3, what="3 access lines")
        self.assertEqual(self.agent_results(p), ["full", "delta", "delta"])

    def test_without_memcached_the_second_edge_starts_cold(self):
        """The control for the two tests above: the same steps with memory only give a full body."""
        versions = news_versions(3)
        corpus = os.path.join(self.tmp, "corpus")
        make_corpus(corpus, versions)
        p = self.pair(corpus=corpus)
        for v in versions[:2]:
            self.assertEqual(get(p.http_port, "/page")[::2], (200, v))
        _, port, _ = self.edge(p, [], "edge2")
        self.assertEqual(get(port, "/page")[::2], (200, versions[2]))
        harness.wait_until(lambda: len(self.agent_results(p)) == 3, what="3 access lines")
        self.assertEqual(self.agent_results(p), ["full", "delta", "full"])


class TestSharedTierFaults(FleetTestCase):
    def test_with_one_memcached_killed_under_load_no_request_fails(self):
        versions = news_versions(60)
        a, b = Memcached(), Memcached()
        self.memcached += [a, b]
        p = self.shared_pair([a, b], versions, workers=2)
        done = []

        def fetch(i):
            status, _, body = get(p.http_port, "/page")
            done.append(i)
            return status, body

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(fetch, i) for i in range(len(versions))]
            harness.wait_until(lambda: len(done) >= 15, what="15 answers before the kill")
            a.kill()
            results = [f.result() for f in futures]
        self.assertEqual([s for s, _ in results], [200] * len(versions))
        self.assertEqual(sorted(b for _, b in results), sorted(versions))  # Each version once.
        # The edge noticed, said so once, and counted it.
        warned = [r for r in p.edge.records() if r.get("msg", "").startswith("memcached unavailable")]
        self.assertLessEqual(len(warned), 1)

    def test_with_memcached_answering_garbage_every_body_is_byte_exact(self):
        versions = news_versions(12)
        g = GarbageMemcached()
        self.memcached.append(g)
        p = self.shared_pair([g], versions)
        for v in versions:
            self.assertEqual(get(p.http_port, "/page")[::2], (200, v))
        edge, agent = stats(p.edge_admin)["store"]["shared"], stats(p.origin_admin)["store"]["shared"]
        self.assertGreater(edge["corrupt"] + agent["corrupt"], 0)
        self.assertEqual(edge["hits"] + agent["hits"], 0)


def access(process):
    return [r for r in process.records() if r.get("type") == "access"]


class TestSeveralAgents(FleetTestCase):
    """A route naming two agents (issue #12 §3): keys spread by consistent hashing, a killed
    agent's keys move to the other, and the fallback URL when no agent is up."""

    def two_agents(self, versions, workers=1):
        """A pair whose edge names its own agent and a second one (started here, on a port
        chosen before the edge starts); returns (pair, second agent)."""
        corpus = os.path.join(self.tmp, "corpus")
        make_corpus(corpus, versions)
        port = harness.free_port()
        p = self.pair(corpus=corpus, workers=workers, edge_args=("--agent", f"127.0.0.1:{port}"),
                      start_origin=True)
        second = harness.Process([harness.binary("coilgun-origin"), "--listen", f"127.0.0.1:{port}",
                                  "--admin", "127.0.0.1:0", "--backend", f"http://127.0.0.1:{p.backend_port}",
                                  "--workers", str(workers)] + p.certs.agent_flags(), "origin2")
        self.procs.append(second)
        harness.wait_until(lambda: metrics(p.edge_admin)["coilgun_tunnel_connections"] >= 4,
                           what="the tunnels to both agents")
        return p, second

    def test_keys_spread_over_the_agents_and_each_stays_with_one(self):
        series = {f"s{i}": news_versions(3) for i in range(12)}
        p, second = self.two_agents(series)
        for _ in range(3):
            for name, bodies in series.items():
                self.assertEqual(get(p.http_port, f"/{name}")[0], 200)
        harness.wait_until(lambda: len(access(p.origin)) + len(access(second)) == 36, what="36 access lines")
        by_agent = [{r["path"]: [] for r in access(a)} for a in (p.origin, second)]
        for agent, paths in zip((p.origin, second), by_agent):
            for r in access(agent):
                paths[r["path"]].append(r["delta"])
        self.assertTrue(by_agent[0] and by_agent[1], f"one agent took every key: {by_agent}")
        self.assertEqual(set(by_agent[0]) & set(by_agent[1]), set(), "a key went to both agents")
        # Each key's versions met the same agent, so the second and third crossed as deltas.
        for paths in by_agent:
            for path, results in paths.items():
                self.assertEqual(results, ["full", "delta", "delta"], path)

    def test_with_one_agent_killed_under_load_every_request_succeeds_and_its_keys_move(self):
        series = {f"s{i}": news_versions(12) for i in range(8)}
        p, second = self.two_agents(series, workers=2)
        done = []

        def fetch(name):
            status, _, body = get(p.http_port, f"/{name}")
            done.append(name)
            return name, status, body

        names = [n for _ in range(12) for n in series]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(fetch, n) for n in names]
            harness.wait_until(lambda: len(done) >= 24, what="24 answers before the kill")
            p.origin.signal(signal.SIGKILL)
            results = [f.result() for f in futures]
        self.assertEqual([s for _, s, _ in results], [200] * len(names))
        for name, _, body in results:
            self.assertIn(body, series[name])  # Byte-exact: some version of its own page.
        # Every key now goes to the agent left, and is answered.
        before = len(access(second))
        for name in series:
            self.assertEqual(get(p.http_port, f"/{name}")[0], 200)
        harness.wait_until(lambda: len(access(second)) == before + len(series), what="the moved keys")
        self.assertEqual({r["path"] for r in access(second)[before:]}, {f"/{n}" for n in series})

    def test_with_no_agent_up_the_fallback_answers_until_a_tunnel_is_up(self):
        p = self.pair(start_origin=False)
        # Without a fallback: 502 at once.
        self.assertEqual(get(p.http_port, "/")[::2], (502, b"Bad Gateway (tunnel_down)\n"))
        # The backend's port is known only now: a second edge with the fallback set to it.
        conf = os.path.join(self.tmp, "edge-fallback.toml")
        with open(conf, "w") as f:
            f.write(f'agent = "127.0.0.1:{p.agent_port}"\nfallback = "http://127.0.0.1:{p.backend_port}"\n')
        edge = harness.Process([harness.binary("coilgun-edge"), "-c", conf, "--listen", "127.0.0.1:0",
                                "--admin", "127.0.0.1:0", "--workers", "1"] + p.certs.edge_flags(), "edge-fb")
        self.procs.append(edge)
        _, port = edge.address("http")
        _, admin = edge.address("admin")

        status, headers, page = get(port, "/")
        self.assertEqual(status, 200)
        self.assertIn(b"<html", page)
        big = get(port, "/big?bytes=3000000")
        self.assertEqual((big[0], len(big[2])), (200, 3000000))
        body = os.urandom(200000)
        self.assertEqual(get(port, "/echo", method="POST", body=body)[::2], (200, body))
        self.assertEqual(get(port, "/", method="HEAD")[::2], (200, b""))
        harness.wait_until(lambda: len(access(edge)) == 4, what="4 access lines")
        self.assertEqual([r["delta"] for r in access(edge)], ["direct"] * 4)
        self.assertEqual(metrics(admin)['coilgun_delta_responses_total{result="direct"}'], 4)

        p.start_origin()  # On the port the edge dials.
        edge.wait_for(lambda r: r.get("msg") == "tunnel up", what="tunnel up")
        self.assertEqual(get(port, "/")[0], 200)
        harness.wait_until(lambda: len(access(edge)) == 5, what="5 access lines")
        self.assertEqual(access(edge)[-1]["delta"], "full")
        self.assertEqual(metrics(admin)['coilgun_delta_responses_total{result="direct"}'], 4)



class TestHttpsFallback(FleetTestCase):
    """An https:// fallback (issue #12 §3): a real nginx terminating TLS with a certificate from
    the test's CA, in front of the pair's backend. The edge speaks TLS to it, and verifies the
    certificate: against fallback_ca, and for the name it dials."""

    def nginx_tls(self, backend_port):
        """nginx on 127.0.0.1 and 127.0.0.2 (one port), serving the agent's certificate (names
        127.0.0.1 and localhost) and proxying to the backend; returns the port."""
        cert, key = self.certs.path("agent.pem"), self.certs.path("agent.key")
        nginx = harness.Nginx(self.tmp, f"""
    listen 127.0.0.1:{{port}} ssl; listen 127.0.0.2:{{port}} ssl;
    ssl_certificate {cert}; ssl_certificate_key {key}; ssl_protocols TLSv1.2 TLSv1.3;
    client_max_body_size 10m;
    location / {{{{ proxy_pass http://127.0.0.1:{backend_port}; proxy_http_version 1.1;
                   proxy_set_header Host $host; proxy_request_buffering off; }}}}""")
        self.addCleanup(nginx.stop)
        return nginx.port

    def edge_with_fallback(self, p, name, fallback, ca=None):
        conf = os.path.join(self.tmp, f"{name}.toml")
        with open(conf, "w") as f:
            f.write(f'agent = "127.0.0.1:{p.agent_port}"\nfallback = "{fallback}"\n')
            if ca:
                f.write(f'fallback_ca = "{ca}"\n')
        edge = harness.Process([harness.binary("coilgun-edge"), "-c", conf, "--listen", "127.0.0.1:0",
                                "--admin", "127.0.0.1:0", "--workers", "1"] + p.certs.edge_flags(), name)
        self.procs.append(edge)
        return edge, edge.address("http")[1], edge.address("admin")[1]

    def test_an_https_fallback_is_verified_and_answers_byte_exact(self):
        p = self.pair(start_origin=False)
        self.certs = p.certs
        port = self.nginx_tls(p.backend_port)
        edge, http_port, admin = self.edge_with_fallback(p, "edge-https", f"https://localhost:{port}",
                                                         p.certs.path("ca.pem"))
        status, _, page = get(http_port, "/")
        self.assertEqual(status, 200)
        self.assertIn(b"<html", page)
        big = get(http_port, "/big?bytes=3000000")
        self.assertEqual((big[0], big[2]), (200, get(p.backend_port, "/big?bytes=3000000")[2]))
        body = os.urandom(200000)
        self.assertEqual(get(http_port, "/echo", method="POST", body=body)[::2], (200, body))
        for _ in range(3):  # Kept alive and reused.
            self.assertEqual(get(http_port, "/")[0], 200)
        harness.wait_until(lambda: len(access(edge)) == 6, what="6 access lines")
        self.assertEqual([r["delta"] for r in access(edge)], ["direct"] * 6)
        self.assertEqual(metrics(admin)['coilgun_delta_responses_total{result="direct"}'], 6)

        # The system's trust store does not hold the test's CA: refused, never served.
        untrusted_edge, untrusted, untrusted_admin = self.edge_with_fallback(p, "edge-untrusted",
                                                                f"https://localhost:{port}")
        self.assertEqual(get(untrusted, "/")[::2], (502, b"Bad Gateway (direct_failed)\n"))
        self.assertEqual(metrics(untrusted_admin)['coilgun_errors_total{reason="direct_failed"}'], 1)
        # A certificate for other names than the one dialled: refused.
        other_edge, other_name, _ = self.edge_with_fallback(p, "edge-other-name", f"https://127.0.0.2:{port}",
                                                   p.certs.path("ca.pem"))
        self.assertEqual(get(other_name, "/")[::2], (502, b"Bad Gateway (direct_failed)\n"))
        # The warning says why, as OpenSSL does (issue #14, 7: it gave the code alone).
        for edge, why, detail in ((untrusted_edge, "tls: peer certificate not trusted",
                                   "certificate: unable to get local issuer certificate"),
                                  (other_edge, "tls: peer certificate does not carry the expected name",
                                   "expected 127.0.0.2, the certificate carries: ")):
            warned = edge.wait_for(lambda r: r.get("msg") == "fallback failed" and r.get("error") == why, what=why)
            self.assertIn(detail, warned.get("tls", ""))
        self.assertIn("localhost", warned["tls"])


    def test_a_tls_stream_cut_without_close_notify_is_no_complete_body(self):
        p = self.pair(start_origin=False)
        origin = CloseDelimitedTls(p.certs.path("agent.pem"), p.certs.path("agent.key"))
        self.addCleanup(origin.stop)
        edge, port, _ = self.edge_with_fallback(p, "edge-cut", f"https://localhost:{origin.port}",
                                                p.certs.path("ca.pem"))
        # Ended with close_notify: the whole body, ended cleanly. (Python's unwrap() waits for
        # the edge's own close_notify before its FIN: an edge that did not answer it would hang
        # this request past get()'s 10 s timeout.)
        self.assertEqual(get(port, "/clean")[::2], (200, CloseDelimitedTls.BODY))
        # Ended by a bare FIN: the client never sees the response end as complete.
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.request("GET", "/cut", headers={"Host": "www.example.com"})
        r = conn.getresponse()
        self.assertEqual(r.status, 200)
        with self.assertRaises(http.client.IncompleteRead):
            r.read()
        conn.close()
        edge.wait_for(lambda r: r.get("msg") == "fallback failed" and
                      r.get("error") == "closed: backend's TLS stream ended without close_notify",
                      what="the cut reported")


if __name__ == "__main__":
    unittest.main()
