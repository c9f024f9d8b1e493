"""Integration tests for the shared tier (issue #12 §2): edges and agents sharing their versions
through real memcached servers (Debian's memcached, on ephemeral loopback ports).

    python3 -m unittest tests/integration/test_fleet.py     (COILGUN_BUILD picks the build)
"""

import concurrent.futures
import json
import os
import socketserver
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import Memcached, get  # noqa: E402
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


if __name__ == "__main__":
    unittest.main()
