"""Starts real Coilgun processes on loopback: for coilgun-replay, the integration tests and
the benchmarks.

Everything listens on 127.0.0.1 with port 0; the ports come from the processes' own
"listening" log lines. Certificates are made on the spot with coilgun-certs. Waits are on
events (a log line, a socket) bounded by deadlines; nothing sleeps to synchronise.
Standard library only.
"""

import http.client
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

# The source tree, when running from it (tests/replay/coilgun_replay/launch.py).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
# Installed packages put the helper programs here (the daemons and coilgun-certs are on PATH).
LIBEXEC = "/usr/lib/coilgun"


def binary(name):
    """The path of a Coilgun program: from $COILGUN_BUILD or the source tree's release build,
    the source tree's deploy/, then an installed copy."""
    builds = [os.environ["COILGUN_BUILD"]] if os.environ.get("COILGUN_BUILD") else []
    builds.append(os.path.join(ROOT, "build", "release"))
    for build in builds:
        for sub in ("origin", "edge", "tests/fixtures", "tests/replay", "tests/bench", ""):
            path = os.path.join(build, sub, name)
            if os.path.isfile(path):
                return path
    for path in (os.path.join(ROOT, "deploy", name), os.path.join(LIBEXEC, name)):
        if os.path.isfile(path):
            return path
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError(f"{name} not found: build it (cmake --build --preset release), "
                            "set COILGUN_BUILD, or install the coilgun package")


class Certs:
    """A CA, an agent certificate for 127.0.0.1/localhost and edge client certificates."""

    def __init__(self, directory, edges=("edge",), agent_names=("127.0.0.1", "localhost")):
        self.dir = directory
        args = [binary("coilgun-certs"), "--dir", directory, "--quiet"]
        for a in agent_names:
            args += ["--agent", a]
        for e in edges:
            args += ["--edge", e]
        subprocess.run(args, check=True)

    def path(self, name):
        return os.path.join(self.dir, name)

    def agent_flags(self):
        return ["--tls-ca", self.path("ca.pem"), "--tls-cert", self.path("agent.pem"),
                "--tls-key", self.path("agent.key")]

    def edge_flags(self, edge="edge"):
        return ["--tls-ca", self.path("ca.pem"), "--tls-cert", self.path(f"edge-{edge}.pem"),
                "--tls-key", self.path(f"edge-{edge}.key")]


class Process:
    """A child process whose stderr JSON lines are collected and can be waited on."""

    def __init__(self, args, name=None, env=None):
        self.name = name or os.path.basename(args[0])
        self.args = args
        self.lines = []
        self._events = queue.Queue()
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._out = threading.Thread(target=self._drain_stdout, daemon=True)
        self._out.start()

    def _drain_stdout(self):
        for _ in self.proc.stdout:
            pass

    def _read(self):
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            try:
                record = json.loads(line)
            except ValueError:
                record = {"msg": line, "raw": True}
            with self._lock:
                self.lines.append(record)
            self._events.put(record)
        self._events.put(None)

    def records(self):
        with self._lock:
            return list(self.lines)

    SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")

    def sanitizer_report(self):
        """What a sanitizer (ASan, LSan, UBSan in the asan build) wrote on stderr, from its first
        line on; empty if none wrote anything. Read it after stop(): leaks show at exit."""
        lines = [r["msg"] for r in self.records() if r.get("raw")]
        for i, line in enumerate(lines):
            if any(m in line for m in self.SANITIZER_MARKERS):
                return "\n".join(lines[i:i + 60])
        return ""

    def wait_for(self, predicate, timeout=10.0, what="log line"):
        """Returns the first record (seen before or after this call) matching |predicate|."""
        for record in self.records():
            if predicate(record):
                return record
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.name}: no {what} within {timeout}s; log:\n" + self.tail())
            try:
                record = self._events.get(timeout=left)
            except queue.Empty:
                continue
            if record is None:
                raise RuntimeError(f"{self.name} exited ({self.proc.wait()}) before {what}; log:\n" + self.tail())
            if predicate(record):
                return record

    def address(self, role):
        rec = self.wait_for(lambda r: r.get("msg") == "listening" and r.get("role") == role,
                            what=f"listening {role}")
        host, port = rec["address"].rsplit(":", 1)
        return host, int(port)

    def tail(self, n=40):
        return "\n".join(json.dumps(r) if not r.get("raw") else r["msg"] for r in self.records()[-n:])

    def signal(self, signum):
        """Sends |signum|. A daemon drops SIGHUP and SIGUSR1 until it watches them, which its
        "started" line says: for those, waits for that line first."""
        if signum in (signal.SIGHUP, signal.SIGUSR1):
            self.wait_for(lambda r: r.get("msg") == "started", what="started")
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def stop(self, timeout=10.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # The readers end at EOF once the process (and any child holding its pipes) is gone.
        for t, pipe in ((self._reader, self.proc.stderr), (self._out, self.proc.stdout)):
            t.join(timeout=5)
            if not t.is_alive():
                pipe.close()
        return self.proc.returncode

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0


def get(port, path, host="www.example.com", method="GET", body=None, headers=None, timeout=10.0,
        address="127.0.0.1"):
    """One HTTP/1.1 request; returns (status, headers dict, body bytes)."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        h = {"Host": host}
        h.update(headers or {})
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


def recv_some(sock, what):
    """One recv() that fails loudly when the peer has closed (recv returns b"" at once then, so a
    loop waiting for more bytes would never end)."""
    data = sock.recv(1 << 20)
    if not data:
        raise ConnectionError(f"connection closed before {what}")
    return data


def metrics(port, address="127.0.0.1"):
    """The admin /metrics page as {"name{labels}": value}."""
    status, _, body = get(port, "/metrics", host=address, address=address)
    assert status == 200, status
    out = {}
    for line in body.decode().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def wait_until(predicate, timeout=10.0, what="condition"):
    """Polls |predicate| (for state only visible by asking, like an admin endpoint)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise TimeoutError(f"no {what} within {timeout}s")


class Pair:
    """A backend, an agent and an edge on loopback, with fresh certificates. The backend is
    started from |backend_args| (a program logging its "listening" origin address), or is
    already listening on |backend_port|. The agent listens on |agent_host| (the origin side of
    a slow link: tests/bench/link_emulator.py), started with |origin_prefix| before its argv.
    With |via| (an object whose start(agent_port) returns a port, such as the integration
    tests' FaultRelay), the edge dials that port instead of the agent's."""

    def __init__(self, tmp, backend_args=None, origin_args=(), edge_args=(), backend_port=None,
                 workers=1, start_origin=True, origin_env=None, edge_env=None, agent_host="127.0.0.1",
                 origin_prefix=(), via=None):
        self.tmp = tmp
        self.origin_env = merged_env(origin_env)
        self.edge_env = merged_env(edge_env)
        self.agent_host, self.origin_prefix = agent_host, list(origin_prefix)
        self.via = via
        self.site = self.origin = self.edge = None
        self.agent_port = None
        try:
            self._start(backend_args, origin_args, edge_args, backend_port, workers, start_origin, edge_env)
        except BaseException:
            self.stop()  # Nothing started is left running when a later step fails.
            raise

    def _start(self, backend_args, origin_args, edge_args, backend_port, workers, start_origin, edge_env):
        self.certs = Certs(os.path.join(self.tmp, "certs"),
                           agent_names=sorted({"127.0.0.1", "localhost", self.agent_host}))
        if backend_port is None:
            self.site = Process(backend_args, "backend")
            _, backend_port = self.site.address("origin")
        self.backend_port = backend_port
        self.origin_args = list(origin_args)
        self.workers = workers
        self.tunnels = int((edge_env or {}).get("COILGUN_TUNNEL_CONNECTIONS", 2))  # Per process.
        if start_origin:
            self.start_origin()
        else:
            self.agent_port = free_port()  # Where the agent will listen once started.
        dial = self.via.start(self.agent_port) if self.via is not None else self.agent_port
        self.edge = Process([binary("coilgun-edge"), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                             "--agent", f"{self.agent_host}:{dial}", "--workers", str(workers)]
                            + self.certs.edge_flags() + list(edge_args), "edge", env=self.edge_env)
        _, self.http_port = self.edge.address("http")
        _, self.edge_admin = self.edge.address("admin")
        if start_origin:
            self.wait_ready()

    def start_origin(self):
        """Starts the agent: on a port of its choosing the first time, on the same port again
        after it was stopped (the edge dials that one)."""
        self.origin = Process(self.origin_prefix + [
                              binary("coilgun-origin"), "--listen", f"{self.agent_host}:{self.agent_port or 0}",
                              "--admin", "127.0.0.1:0", "--backend", f"http://127.0.0.1:{self.backend_port}",
                              "--workers", str(self.workers)] + self.certs.agent_flags() + self.origin_args,
                              "origin", env=self.origin_env)
        _, self.agent_port = self.origin.address("tunnel")
        _, self.origin_admin = self.origin.address("admin")

    @property
    def tunnel_port(self):
        return self.agent_port

    def wait_ready(self, timeout=10.0):
        """Until the edge has every tunnel connection up, so that no late TLS handshake lands in
        a test's byte counts."""
        self.edge.wait_for(lambda r: r.get("msg") == "tunnel up", timeout=timeout, what="tunnel up")
        wait_until(lambda: metrics(self.edge_admin)["coilgun_tunnel_connections"] >= self.tunnels,
                   timeout=timeout, what=f"{self.tunnels} tunnel connections")

    def stop(self):
        for p in (self.edge, self.origin, self.site):
            if p is not None:
                p.stop()


class Memcached:
    """A real memcached on a free loopback port; kill() stops it at once."""

    def __init__(self):
        for _ in range(5):  # The port is free when picked; another process may take it first.
            self.port = free_port()
            args = ["/usr/bin/memcached", "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-m", "64"]
            if os.geteuid() == 0:
                args += ["-u", "nobody"]
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return
                except OSError:
                    time.sleep(0.01)
            self.kill()
        raise RuntimeError("memcached did not start")

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def merged_env(extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("COILGUN_")}
    env.update(extra or {})
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempDir:
    def __enter__(self):
        self.path = tempfile.mkdtemp(prefix="coilgun-it-")
        return self.path

    def __exit__(self, *exc):
        shutil.rmtree(self.path, ignore_errors=True)
