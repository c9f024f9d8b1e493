"""Chaos: load through a real pair while the agent and the edge are killed (-9) and restarted,
and the link between them is cut, corrupted and throttled (issue #10). Every 200 body is checked
against the digest its backend embedded in it, every request against a deadline.

    python3 tests/integration/chaos.py --minutes 60     (a soak: the faults on the link repeat
                                                       with both daemons alive, and their RSS
                                                       is printed every 10 s; --kills adds the
                                                       kill -9 faults)

test_chaos.py runs one cycle in .ci/run. The backend (in this process) serves text pages that
change a little on every request, so most answers cross the link as deltas:

    GET /page/<key>   "sha256:<hex of the rest>\\n" then about 20 KB of text
"""

import argparse
import hashlib
import http.client
import http.server
import os
import random
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from fault_relay import FaultRelay  # noqa: E402

DEADLINE = 10.0  # Seconds a request may take, whatever its answer.
KEYS = 16


class DigestBackend(http.server.ThreadingHTTPServer):
    """Pages whose first line is the sha256 of the rest; each request changes one line."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), DigestHandler)
        self.counter = 0
        self.lock = threading.Lock()
        base = random.Random(7)
        self.lines = [f"<p>{base.getrandbits(128):032x} paragraph {i} of the page</p>\n" for i in range(400)]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def handle_error(self, request, client_address):
        pass  # Clients cut off by the faults: expected, and not worth a traceback each.

    def page(self, key):
        with self.lock:
            self.counter += 1
            n = self.counter
        lines = list(self.lines)
        lines[n % len(lines)] = f"<p>changed by request {n} for {key}</p>\n"
        rest = f"<html><body><h1>{key}</h1>\n{''.join(lines)}</body></html>\n".encode()
        return b"sha256:" + hashlib.sha256(rest).hexdigest().encode() + b"\n" + rest


class DigestHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802 (the http.server API)
        body = self.server.page(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def verified(body):
    """True if |body| carries the right digest of itself."""
    head, _, rest = body.partition(b"\n")
    return head == b"sha256:" + hashlib.sha256(rest).hexdigest().encode()


class Load:
    """|clients| threads sending GETs to the edge until stopped, counting outcomes."""

    def __init__(self, port, clients=8):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = self.failed = self.wrong = self.late = 0
        self.last_ok = 0.0
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self, i):
        rng = random.Random(i)
        conn = None
        while not self.stop.is_set():
            start = time.monotonic()
            status, body = None, b""
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=DEADLINE)
                conn.request("GET", f"/page/{rng.randrange(KEYS)}", headers={"Host": "www.example.com"})
                r = conn.getresponse()
                status, body = r.status, r.read()
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            took = time.monotonic() - start
            with self.lock:
                if took > DEADLINE + 1:
                    self.late += 1
                if status == 200 and verified(body):
                    self.ok += 1
                    self.last_ok = time.monotonic()
                elif status == 200:
                    self.wrong += 1
                else:
                    self.failed += 1
            if status != 200:
                time.sleep(0.02)  # A client's pace after a failure, not a wait for an event.
        if conn is not None:
            conn.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=DEADLINE + 5)

    def ok_since(self, when):
        with self.lock:
            return self.last_ok > when


class Chaos:
    """A backend, an agent, a relay and an edge on fixed ports (restarts come back on them)."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.backend = DigestBackend()
        self.certs = harness.Certs(os.path.join(tmp, "certs"))
        self.agent_port = harness.free_port()
        self.http_port = harness.free_port()
        self.relay = FaultRelay()
        self.origin = self.edge = None
        self.start_origin()
        self.relay_port = self.relay.start(self.agent_port)
        self.start_edge()

    def start_origin(self):
        self.origin = harness.Process([
            harness.binary("coilgun-origin"), "--listen", f"127.0.0.1:{self.agent_port}", "--admin", "127.0.0.1:0",
            "--backend", f"http://127.0.0.1:{self.backend.server_address[1]}", "--workers", "1"]
            + self.certs.agent_flags(), "origin")
        self.origin.address("tunnel")

    def start_edge(self):
        # While the agent is down each tunnel slot reconnects on a doubling backoff, jittered into
        # the upper half of 100 ms .. tunnel.backoff_max: with the default cap (5 s) the attempt
        # after a 2 s outage comes up to 3 s after the agent is back. "Back within a second" is a
        # claim about the daemons once an attempt is made, so the cap here is 400 ms (CI failed
        # on 1.96 s with the default).
        self.edge = harness.Process([
            harness.binary("coilgun-edge"), "--listen", f"127.0.0.1:{self.http_port}", "--admin", "127.0.0.1:0",
            "--agent", f"127.0.0.1:{self.relay_port}", "--workers", "1"] + self.certs.edge_flags(), "edge",
            env=harness.merged_env({"COILGUN_TUNNEL_BACKOFF_MAX": "400ms"}))
        self.edge.address("http")

    def kill(self, which):
        p = getattr(self, which)
        p.proc.send_signal(signal.SIGKILL)
        p.stop()

    def rss_mib(self):
        return tuple(p.rss_kib() / 1024 for p in (self.edge, self.origin))

    def stop(self):
        for p in (self.edge, self.origin):
            if p is not None:
                p.stop()
        self.relay.stop()
        self.backend.shutdown()
        self.backend.server_close()


def back_within(load, ended, timeout=10.0):
    """Seconds from |ended| until a verified answer came after it (None: none within |timeout|)."""
    deadline = ended + timeout
    while time.monotonic() < deadline:
        if load.ok_since(ended):
            with load.lock:
                return load.last_ok - ended
        time.sleep(0.01)  # Polls the load's counters, which only its threads move.
    return None


def cycle(chaos, load, hold=2.0, kills=True):
    """One round of every fault, each held for |hold| seconds (the daemons' kill -9 only with
    |kills|); returns {fault: seconds until a verified answer after it ended}."""
    recovered = {}

    def fault(name, start, end):
        start()
        time.sleep(hold)  # The fault's length, not a wait for an event.
        end()
        recovered[name] = back_within(load, time.monotonic())

    if kills:
        fault("agent killed", lambda: chaos.kill("origin"), chaos.start_origin)
    fault("tunnels cut", chaos.relay.cut, lambda: None)
    fault("bits flipped", lambda: chaos.relay.flip(0.02), chaos.relay.clear)
    fault("throttled", lambda: chaos.relay.throttle(200_000), chaos.relay.clear)
    fault("stalled", chaos.relay.stall, chaos.relay.clear)
    if kills:
        fault("edge killed", lambda: chaos.kill("edge"), chaos.start_edge)
    return recovered


def sample_rss(chaos, load, every=10.0):
    """Prints both daemons' RSS and the load's counters every |every| seconds until the load
    stops."""
    while not load.stop.wait(every):
        try:
            edge, origin = chaos.rss_mib()
        except (OSError, AttributeError):
            continue  # A daemon between kill and restart.
        print(f"{time.strftime('%H:%M:%S')} rss edge {edge:.1f} MiB origin {origin:.1f} MiB "
              f"ok {load.ok} failed {load.failed} wrong {load.wrong} late {load.late}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--kills", action="store_true",
                        help="kill -9 and restart both daemons in every round too (their RSS then "
                             "starts again each round)")
    args = parser.parse_args()
    with harness.TempDir() as tmp:
        chaos = Chaos(tmp)
        load = Load(chaos.http_port)
        sampler = threading.Thread(target=sample_rss, args=(chaos, load), daemon=True)
        sampler.start()
        end = time.monotonic() + args.minutes * 60
        try:
            while time.monotonic() < end:
                recovered = cycle(chaos, load, kills=args.kills)
                print(f"{time.strftime('%H:%M:%S')} round: recovered after {recovered}", flush=True)
        finally:
            load.finish()
            sampler.join()
            chaos.stop()
        print(f"ok {load.ok} failed {load.failed} wrong {load.wrong} late {load.late}")
        return 1 if load.wrong or load.late else 0


if __name__ == "__main__":
    sys.exit(main())
