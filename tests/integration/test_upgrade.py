"""Integration tests: upgrades and interim responses through the pair (issue #9, items 5 and 6).

    python3 -m unittest tests/integration/test_upgrade.py     (COILGUN_BUILD picks the build)

A client's HTTP/1.1 request asking for an upgrade (RFC 9110 §7.8) reaches the backend with its
Upgrade field and "upgrade" in Connection; the backend's 101 reaches the client, and from then
on the client's connection is a byte pipe to the backend's, through the tunnel, flow-controlled
both ways, until either side closes it or the tunnel goes. Interim responses (RFC 9110 §15.2)
reach HTTP/1.1 clients before the final response, and never HTTP/1.0 ones.

The backends are real programs: websockets' own asyncio server (python3-websockets), and a
raw-socket HTTP/1.1 server in this process that refuses, switches, hints and stalls on purpose.
The clients are websockets' asyncio client and raw sockets.
"""

import asyncio
import hashlib
import os
import queue
import select
import socket
import sys
import threading
import time
import unittest

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import get, metrics  # noqa: E402
from test_backend import BackendTestCase, RawServer, read_head  # noqa: E402

IN_FLIGHT = "coilgun_exchanges_in_flight"


def run(coro, timeout):
    """Runs |coro| on a fresh event loop, cancelled after |timeout| seconds (a TimeoutError)."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


def parse_head(head):
    """(status, [(name lowercased, value)]) of a response head (bytes, without the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ")[:2]
    assert version.startswith("HTTP/1."), lines[0]
    fields = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields.append((name.strip().lower(), value.strip()))
    return int(status), fields


def field(fields, name):
    """The values of field |name| joined by ", " as RFC 9110 §5.3 combines them; None if absent."""
    values = [v for n, v in fields if n == name]
    return ", ".join(values) if values else None


def tokens(value):
    """The lowercased members of a comma-separated list field (Connection, Upgrade)."""
    return [t.strip().lower() for t in (value or "").split(",") if t.strip()]


def read_response(sock, buf):
    """Reads one response from |sock| (|buf|, a bytearray, holds bytes already received and keeps
    what follows the response). Returns (interim, status, fields, body): |interim| lists each 1xx
    before the final response as (status, fields, monotonic time its head was complete). A 101
    ends the response at its head: what follows it stays in |buf|, the switched protocol's."""
    interim = []
    while True:
        while b"\r\n\r\n" not in buf:
            buf += harness.recv_some(sock, "a response head")
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        buf[:] = rest
        status, fields = parse_head(head)
        if 100 <= status < 200 and status != 101:
            interim.append((status, fields, time.monotonic()))
            continue
        break
    if status in (101, 204, 304):
        return interim, status, fields, b""
    if "chunked" in tokens(field(fields, "transfer-encoding")):
        body = bytearray()
        while True:
            while b"\r\n" not in buf:
                buf += harness.recv_some(sock, "a chunk size")
            size_line, _, rest = bytes(buf).partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            while len(rest) < size + 2:
                rest += harness.recv_some(sock, "a chunk")
            body += rest[:size]
            buf[:] = rest[size + 2:]
            if size == 0:  # No trailers from these backends: the last chunk's CRLF ends it.
                return interim, status, fields, bytes(body)
    length = field(fields, "content-length")
    if length is None:  # Delimited by the close.
        while True:
            data = sock.recv(1 << 20)
            if not data:
                body = bytes(buf)
                buf[:] = b""
                return interim, status, fields, body
            buf += data
    while len(buf) < int(length):
        buf += harness.recv_some(sock, "the response body")
    body = bytes(buf[:int(length)])
    del buf[:int(length)]
    return interim, status, fields, body


def upgrade_request(path, protocol, host="www.example.com"):
    """A bodiless HTTP/1.1 GET asking to switch to |protocol| (RFC 9110 §7.8)."""
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: {protocol}\r\nConnection: Upgrade\r\n"
            f"\r\n").encode()


class WebSocketBackend:
    """websockets' asyncio server (python3-websockets) on 127.0.0.1, on an event loop of its own
    in a background thread. By path:

      /echo     sends every message back as it came (text as text, binary as binary)
      /big      first sends BIG (1 MiB of random bytes), then echoes
      /bye      closes at once with code 4001, reason "bye"

    As each connection ends, (path, close code, close reason) goes to |closes|."""

    BIG = 1 << 20

    def __init__(self):
        self.big = os.urandom(self.BIG)
        self.closes = queue.Queue()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = asyncio.run_coroutine_threadsafe(self._serve(), self.loop).result(timeout=10)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self):
        return await websockets.serve(self._handler, "127.0.0.1", 0, max_size=None)

    async def _handler(self, ws):
        path = ws.path
        try:
            if path == "/big":
                await ws.send(self.big)
            if path == "/bye":
                await ws.close(4001, "bye")
            else:
                async for message in ws:
                    await ws.send(message)
        except websockets.ConnectionClosed:
            pass
        finally:
            try:
                await asyncio.wait_for(ws.wait_closed(), 10)
            except asyncio.TimeoutError:
                pass
            self.closes.put((path, ws.close_code, ws.close_reason))

    def stop(self):
        async def close():
            self.server.close()
            await asyncio.wait_for(self.server.wait_closed(), 10)
        try:
            asyncio.run_coroutine_threadsafe(close(), self.loop).result(timeout=15)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            if not self.thread.is_alive():
                self.loop.close()


def run_ws(test, coro, timeout):
    """run() for WebSocket clients: a refused handshake is a test failure, not an error."""
    try:
        return run(coro, timeout)
    except websockets.InvalidHandshake as e:
        test.fail(f"the WebSocket handshake failed: {e!r}")


def connect(port, path):
    """A websockets client connection to the edge (Host: 127.0.0.1:|port|), bounded waits."""
    return websockets.connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=10,
                              close_timeout=5)


class PairBehind(BackendTestCase):
    """A pair in front of self.b, an instance of the class's |backend|."""

    backend = None

    def setUp(self):
        super().setUp()
        try:
            self.b = self.backend()
            self.addCleanup(self.b.stop)
            self.p = self.backend_pair(self.b.port)
        except BaseException:
            self.tearDown()  # unittest skips tearDown when setUp fails.
            raise


class TestWebSocket(PairBehind):
    """WebSockets through the pair: websockets' asyncio client plays the browser, its asyncio
    server (WebSocketBackend) the application server behind the agent. The edge routes every
    Host (it is started with --agent), so the client's "Host: 127.0.0.1:PORT" is served."""

    backend = WebSocketBackend

    def test_text_and_binary_messages_round_trip(self):
        messages = ["hello", b"\x00\x01\x02\xff binary", "é ünïcødé ✓", b"", "x" * 70000]

        async def exchange():
            async with connect(self.p.http_port, "/echo") as ws:
                got = []
                for m in messages:
                    await ws.send(m)
                    got.append(await ws.recv())
                return got

        got = run_ws(self, exchange(), 20)
        self.assertEqual(got, messages)
        self.assertEqual([type(g) for g in got], [type(m) for m in messages])

    def test_a_mebibyte_each_way(self):
        payload = os.urandom(1 << 20)

        async def exchange():
            async with connect(self.p.http_port, "/echo") as ws:
                await ws.send(payload)
                echoed = await ws.recv()
            async with connect(self.p.http_port, "/big") as ws:
                first = await ws.recv()
            return echoed, first

        echoed, first = run_ws(self, exchange(), 30)
        self.assertEqual(len(echoed), len(payload))
        self.assertEqual(hashlib.sha256(echoed).hexdigest(), hashlib.sha256(payload).hexdigest())
        self.assertEqual(len(first), len(self.b.big))
        self.assertEqual(hashlib.sha256(first).hexdigest(), hashlib.sha256(self.b.big).hexdigest())

    def test_a_hundred_concurrent_websockets(self):
        async def one(i):
            sent, got = [], []
            async with connect(self.p.http_port, "/echo") as ws:
                for j in range(5):
                    m = f"socket {i} message {j} " * (i + 1) if j % 2 == 0 else os.urandom(100 * i + j)
                    await ws.send(m)
                    sent.append(m)
                    got.append(await ws.recv())
            return sent == got

        async def all_of_them():
            return await asyncio.gather(*(one(i) for i in range(100)), return_exceptions=True)

        results = run_ws(self, all_of_them(), 60)
        failed = [(i, r) for i, r in enumerate(results) if r is not True]
        if failed:
            self.fail(f"{len(failed)} of 100 sockets failed; the first: {failed[0]}")

    def test_a_close_from_the_client_reaches_the_server_and_frees_the_exchange(self):
        """An open WebSocket is an exchange in flight at the edge until it is closed."""
        async def exchange():
            async with connect(self.p.http_port, "/echo") as ws:
                await ws.send("before closing")
                echoed = await ws.recv()
                open_in_flight = (await asyncio.to_thread(metrics, self.p.edge_admin))[IN_FLIGHT]
                await ws.close(4000, "client done")
            return echoed, open_in_flight

        echoed, open_in_flight = run_ws(self, exchange(), 20)
        self.assertEqual(echoed, "before closing")
        self.assertEqual(open_in_flight, 1)
        try:
            closed = self.b.closes.get(timeout=10)
        except queue.Empty:
            self.fail("the server never saw the connection end")
        self.assertEqual(closed, ("/echo", 4000, "client done"))
        for name, admin in (("edge", self.p.edge_admin), ("agent", self.p.origin_admin)):
            harness.wait_until(lambda: metrics(admin)[IN_FLIGHT] == 0, timeout=5,
                               what=f"the {name}'s exchanges in flight back to 0")

    def test_a_close_from_the_server_reaches_the_client(self):
        async def exchange():
            async with connect(self.p.http_port, "/bye") as ws:
                with self.assertRaises(websockets.ConnectionClosed):
                    await ws.recv()
                await asyncio.wait_for(ws.wait_closed(), 5)
                return ws.close_code, ws.close_reason

        self.assertEqual(run_ws(self, exchange(), 20), (4001, "bye"))
        harness.wait_until(lambda: metrics(self.p.edge_admin)[IN_FLIGHT] == 0, timeout=5,
                           what="the edge's exchanges in flight back to 0")

    def test_the_agent_going_closes_every_websocket_and_new_ones_work_once_it_is_back(self):
        p = self.p

        async def exchange():
            sockets = []
            try:
                for _ in range(5):
                    sockets.append(await connect(p.http_port, "/echo"))
                for i, ws in enumerate(sockets):
                    await ws.send(f"hello {i}")
                    self.assertEqual(await ws.recv(), f"hello {i}")
                p.origin.proc.kill()
                killed = time.monotonic()
                waits = [asyncio.wait_for(ws.wait_closed(), 5) for ws in sockets]
                outcomes = await asyncio.gather(*waits, return_exceptions=True)
                open_still = [i for i, o in enumerate(outcomes) if o is not None]
                self.assertEqual(open_still, [], "client sockets still open 5 s after the agent died")
                self.assertLess(time.monotonic() - killed, 5.0)
            finally:
                for ws in sockets:
                    ws.transport.abort()
            # The agent comes back on its port; the edge reconnects by itself.
            await asyncio.to_thread(harness.wait_until,
                                    lambda: metrics(p.edge_admin)["coilgun_tunnel_connections"] == 0,
                                    timeout=5, what="the edge noticing the tunnels gone")
            old = p.origin
            await asyncio.to_thread(old.stop)  # Reaps the killed process.
            await asyncio.to_thread(p.start_origin)
            await asyncio.to_thread(
                harness.wait_until,
                lambda: (get(p.edge_admin, "/ready", host="127.0.0.1")[0] == 200
                         and metrics(p.edge_admin)["coilgun_tunnel_connections"] >= p.tunnels),
                timeout=15, what="the edge's tunnels back up")
            async with connect(p.http_port, "/echo") as ws:
                await ws.send(b"after the restart")
                return await ws.recv()

        self.assertEqual(run_ws(self, exchange(), 45), b"after the restart")


class RawBackend(RawServer):
    """A keep-alive HTTP/1.1 backend on loopback on raw sockets, answering by path:

      /plain      200 "plain"
      /refuse     426 Upgrade Required (Upgrade: websocket, Connection: Upgrade), body "nope!"
      /pipe       101 Switching Protocols to test-pipe; the connection then goes to |pipes|, not
                  read by the backend until the test says
      /greet      the same, with GREETING in the same write as the 101's head
      /switch     a 101 to a request that asked for no upgrade; then holds the connection open
                  until the agent closes it (at most 15 s)
      /other      the same, but a 101 to another protocol than test-pipe
      /bare101    the same, but a 101 without an Upgrade field
      /hints      103 Early Hints with a Link field, then HINT_DELAY later a 200 (its send time
                  goes to |final_sent|)
      /continue   100 Continue as soon as the head is in, Expect or not; then reads the body
                  and answers 200 with it

    The last request head for each path goes to |heads|."""

    GREETING = b"greeting written with the 101\n"
    HINT_DELAY = 0.2
    LINK = "</style.css>; rel=preload"
    SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: test-pipe\r\nConnection: Upgrade\r\n\r\n"
    WRONG_SWITCHES = {
        "/switch": SWITCH,
        "/other": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: other-proto\r\nConnection: Upgrade\r\n\r\n",
        "/bare101": b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n",
    }

    def __init__(self):
        self.heads = {}
        self.pipes = queue.Queue()
        self.final_sent = None
        super().__init__()

    def _serve(self, conn):
        buf = bytearray()
        handed_off = False
        try:
            while True:
                head = read_head(conn, buf)
                if head is None:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ")
                fields = [(n.strip().lower(), v.strip()) for n, _, v in (l.partition(":") for l in lines[1:])]
                with self.lock:
                    self.heads[path] = fields
                if path == "/continue":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                length = int(field(fields, "content-length") or 0)
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                body = bytes(buf[:length])
                del buf[:length]
                if path in ("/pipe", "/greet"):
                    conn.sendall(self.SWITCH + (self.GREETING if path == "/greet" else b""))
                    self.pipes.put((conn, bytes(buf)))  # Bytes already past the head are the pipe's.
                    handed_off = True
                    return
                if path in self.WRONG_SWITCHES:
                    conn.sendall(self.WRONG_SWITCHES[path])
                    conn.settimeout(15)
                    while conn.recv(65536):
                        pass
                    return
                self._answer(conn, path, body)
        except OSError:
            return
        finally:
            if not handed_off:
                conn.close()

    def _answer(self, conn, path, body):
        if path == "/plain":
            conn.sendall(self.response(b"plain"))
        elif path == "/refuse":
            conn.sendall(self.response(b"nope!", status="426 Upgrade Required",
                                       extra="Upgrade: websocket\r\nConnection: Upgrade\r\n"))
        elif path == "/hints":
            conn.sendall(f"HTTP/1.1 103 Early Hints\r\nLink: {self.LINK}\r\n\r\n".encode())
            time.sleep(self.HINT_DELAY)  # The backend's pace, not a wait for an event.
            self.final_sent = time.monotonic()
            conn.sendall(self.response(b"styled page"))
        elif path == "/continue":
            conn.sendall(self.response(body))
        else:
            conn.sendall(self.response(b"no such path", status="404 Not Found"))

    def pipe(self, timeout=10):
        """The next switched connection and the bytes read past its request."""
        try:
            return self.pipes.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no switched connection at the backend within {timeout}s") from None



TOTAL = 64 << 20  # What each flow-control test pushes one way.
BOUND = 32 << 20  # What may be in flight (socket buffers on every hop included) when it stalls.
STALL = 1.0       # No progress for this long: the writer is stalled.


def write_until_stalled(sock, data, offset, deadline):
    """Writes |data| from |offset| on to the non-blocking |sock| until it is all written or the
    socket stays unwritable for STALL seconds; returns the new offset."""
    while offset < len(data) and time.monotonic() < deadline:
        _, writable, _ = select.select([], [sock], [], STALL)
        if not writable:
            return offset
        try:
            offset += sock.send(data[offset:offset + (1 << 18)])
        except BlockingIOError:
            continue
    return offset


def write_all(sock, data, offset, deadline):
    """Writes the rest of |data| to the non-blocking |sock| before |deadline|; returns the offset
    reached (len(data) when done)."""
    while offset < len(data) and time.monotonic() < deadline:
        _, writable, _ = select.select([], [sock], [], max(0.0, min(1.0, deadline - time.monotonic())))
        if writable:
            try:
                offset += sock.send(data[offset:offset + (1 << 18)])
            except BlockingIOError:
                continue
    return offset


def read_to_eof(sock, result, deadline, prefix=b""):
    """Reads |sock| until EOF or |deadline|, hashing as it goes: result gets "bytes", "sha256" and
    "eof" (True when the peer's FIN came)."""
    h = hashlib.sha256(prefix)
    n = len(prefix)
    result["eof"] = False
    sock.setblocking(False)
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], max(0.0, min(1.0, deadline - time.monotonic())))
        if not readable:
            continue
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            continue
        except OSError as e:
            result["error"] = repr(e)
            break
        if not data:
            result["eof"] = True
            break
        h.update(data)
        n += len(data)
    result["bytes"], result["sha256"] = n, h.hexdigest()


class TestUpgradePipe(PairBehind):
    """Upgrades other than WebSocket, on raw sockets: the client is a raw socket in this process,
    the backend RawBackend, an application server that refuses, switches or stalls."""

    backend = RawBackend

    def client(self, timeout=10):
        s = socket.create_connection(("127.0.0.1", self.p.http_port), timeout=timeout)
        self.addCleanup(s.close)
        return s

    def switch(self, path):
        """Asks the edge for an upgrade to test-pipe on |path|; returns the client socket, what it
        received past the 101's head, and the backend's end of the pipe with what it received past
        the request."""
        s = self.client()
        s.sendall(upgrade_request(path, "test-pipe"))
        buf = bytearray()
        interim, status, fields, _ = read_response(s, buf)
        self.assertEqual((interim, status), ([], 101), fields)
        self.assertEqual(tokens(field(fields, "upgrade")), ["test-pipe"])
        self.assertIn("upgrade", tokens(field(fields, "connection")))
        conn, extra = self.b.pipe()
        self.addCleanup(conn.close)
        head = dict(self.b.heads[path])
        self.assertEqual(tokens(head.get("upgrade")), ["test-pipe"])
        self.assertIn("upgrade", tokens(head.get("connection")))
        return s, buf, conn, extra

    def test_a_refused_upgrade_is_an_ordinary_response_and_the_connection_stays(self):
        s = self.client()
        s.sendall(upgrade_request("/refuse", "websocket"))
        buf = bytearray()
        interim, status, fields, body = read_response(s, buf)
        self.assertEqual((interim, status, body), ([], 426, b"nope!"))
        self.assertEqual(tokens(field(fields, "upgrade")), ["websocket"])
        head = self.b.heads["/refuse"]
        self.assertEqual(tokens(field(head, "upgrade")), ["websocket"])
        self.assertIn("upgrade", tokens(field(head, "connection")))
        # Keep-alive: the same client connection serves an ordinary GET.
        s.sendall(b"GET /plain HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
        interim, status, _, body = read_response(s, buf)
        self.assertEqual((interim, status, body), ([], 200, b"plain"))

    def test_a_101_to_a_request_that_asked_for_no_upgrade_is_a_502(self):
        status, _, _ = get(self.p.http_port, "/switch")
        self.assertEqual(status, 502)
        self.assertEqual(tokens(field(self.b.heads["/switch"], "upgrade")), [])

    def test_a_101_to_another_protocol_or_to_none_is_a_502(self):
        for path in ("/other", "/bare101"):
            s = self.client()
            s.sendall(upgrade_request(path, "test-pipe"))
            interim, status, _, _ = read_response(s, bytearray())
            self.assertEqual((path, interim, status), (path, [], 502))

    def test_head_and_h2c_are_never_upgrades(self):
        """A HEAD's answer has no content to switch in, and h2c would let the client speak HTTP/2 to
        the backend past the edge (RFC 9113 §3.1 deprecates it): both go on as plain requests."""
        s = self.client()
        buf = bytearray()
        s.sendall(b"HEAD /plain HTTP/1.1\r\nHost: www.example.com\r\nUpgrade: test-pipe\r\n"
                  b"Connection: Upgrade\r\n\r\n")
        self.assertEqual(read_head(s, buf).split(b"\r\n")[0], b"HTTP/1.1 200 OK")
        self.assertIsNone(field(self.b.heads["/plain"], "upgrade"))
        s.sendall(b"GET /plain HTTP/1.1\r\nHost: www.example.com\r\nUpgrade: h2c\r\n"
                  b"Connection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
        interim, status, fields, body = read_response(s, buf)
        self.assertEqual((interim, status, body), ([], 200, b"plain"))
        self.assertIsNone(field(fields, "upgrade"))
        head = self.b.heads["/plain"]
        self.assertEqual((field(head, "upgrade"), field(head, "http2-settings")), (None, None))

    def test_bytes_written_with_the_101_reach_the_client(self):
        s, buf, conn, extra = self.switch("/greet")
        self.assertEqual(extra, b"")
        while len(buf) < len(self.b.GREETING):
            buf += harness.recv_some(s, "the bytes written with the 101")
        self.assertEqual(bytes(buf), self.b.GREETING)
        # And the pipe carries both ways afterwards.
        s.sendall(b"ping")
        got = b""
        conn.settimeout(10)
        while len(got) < 4:
            got += harness.recv_some(conn, "the client's bytes")
        self.assertEqual(got, b"ping")
        conn.sendall(b"pong")
        self.assertEqual(harness.recv_some(s, "the backend's bytes"), b"pong")

    def test_a_pipe_whose_client_sends_but_never_reads_is_closed_at_the_idle_limit(self):
        """Bytes waiting for a client that takes none are a stall, even while it sends: else the
        pipe would hold its share of the tunnel's window for ever (request_timeout, 2 s here)."""
        self.p = self.backend_pair(self.b.port, edge_env={"COILGUN_LIMITS_REQUEST_TIMEOUT": "2s"})
        s, buf, conn, _ = self.switch("/pipe")
        conn.setblocking(False)
        start = time.monotonic()
        write_until_stalled(conn, os.urandom(16 << 20), 0, start + 20)
        closed_after = None
        while time.monotonic() - start < 15 and closed_after is None:
            try:
                s.sendall(b"x")  # The client keeps sending, a byte every 100 ms.
            except OSError:
                closed_after = time.monotonic() - start
            time.sleep(0.1)  # The client's pace, not a wait for an event.
        self.assertIsNotNone(closed_after, "the pipe was never closed")
        self.assertLess(closed_after, 10)

    def push_through(self, writer, reader, already, label):
        """Pushes TOTAL random bytes from |writer| to |reader|, the two ends of a switched pipe
        (|already|: what |reader| received past the heads). While |reader| does not read, the
        pair must stop taking them well before the end; then all arrive in order, and the
        writer's side ends (a FIN from the client, a close from the backend) ends |reader|'s."""
        data = os.urandom(TOTAL)
        writer.setblocking(False)
        deadline = time.monotonic() + 60
        written = write_until_stalled(writer, data, 0, deadline)
        print(f"{label}: {written / 2**20:.1f} MiB accepted before the stall", file=sys.stderr)
        self.assertLess(written, BOUND, f"{label}: the pair took the bytes with nobody reading")
        result = {}
        thread = threading.Thread(target=read_to_eof, args=(reader, result, deadline, already))
        thread.start()
        written = write_all(writer, data, written, deadline)
        self.assertEqual(written, TOTAL, f"{label}: the rest could not be written")
        writer.shutdown(socket.SHUT_WR)
        thread.join(timeout=max(1.0, deadline - time.monotonic()))
        self.assertFalse(thread.is_alive())
        self.assertEqual(result.get("bytes"), TOTAL)
        self.assertEqual(result.get("sha256"), hashlib.sha256(data).hexdigest())
        self.assertTrue(result.get("eof"), f"{label}: the reader never saw the writer's end")

    def test_client_to_backend_is_flow_controlled_and_exact(self):
        s, buf, conn, extra = self.switch("/pipe")
        self.assertEqual((bytes(buf), extra), (b"", b""))
        self.push_through(s, conn, extra, "client to backend")
        # The backend closes in turn: the edge closes the client's connection.
        conn.close()
        s.setblocking(True)
        s.settimeout(10)
        self.assertEqual(s.recv(4096), b"", "the client's connection stayed open")

    def test_backend_to_client_is_flow_controlled_and_exact(self):
        s, buf, conn, extra = self.switch("/pipe")
        self.assertEqual((bytes(buf), extra), (b"", b""))
        self.push_through(conn, s, bytes(buf), "backend to client")


class TestInterim(PairBehind):
    """Interim responses (RFC 9110 §15.2): RawBackend sends a 103 Early Hints before its 200, and
    a 100 Continue of its own; raw-socket clients speak HTTP/1.1 and HTTP/1.0."""

    backend = RawBackend

    def client(self):
        s = socket.create_connection(("127.0.0.1", self.p.http_port), timeout=10)
        self.addCleanup(s.close)
        return s

    def test_early_hints_reach_an_http11_client_before_the_final_response(self):
        s = self.client()
        s.sendall(b"GET /hints HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
        interim, status, _, body = read_response(s, bytearray())
        self.assertEqual([(i[0], field(i[1], "link")) for i in interim], [(103, self.b.LINK)])
        self.assertEqual((status, body), (200, b"styled page"))
        # The 103 came as the backend sent it, not held back with the final response.
        self.assertLess(interim[0][2], self.b.final_sent)

    def test_an_http10_client_gets_no_interim_response(self):
        s = self.client()
        s.sendall(b"GET /hints HTTP/1.0\r\nHost: www.example.com\r\n\r\n")
        first = b""
        while b"\r\n\r\n" not in first:
            first += harness.recv_some(s, "the response head")
        self.assertTrue(first.startswith(b"HTTP/1.1 200 ") or first.startswith(b"HTTP/1.0 200 "), first[:80])
        interim, status, _, body = read_response(s, bytearray(first))
        self.assertEqual((interim, status, body), ([], 200, b"styled page"))

    def test_an_expecting_client_gets_exactly_one_100_continue(self):
        s = self.client()
        payload = os.urandom(100000)
        s.sendall(b"POST /continue HTTP/1.1\r\nHost: www.example.com\r\nExpect: 100-continue\r\n"
                  b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % len(payload))
        # As curl does: wait a while for the 100, then send the body anyway.
        readable, _, _ = select.select([s], [], [], 2.0)
        self.assertTrue(readable, "no 100 Continue within 2 s")
        s.sendall(payload)
        received = bytearray()
        interim, status, _, body = read_response(s, received)
        self.assertEqual([i[0] for i in interim], [100])
        self.assertEqual(status, 200)
        self.assertEqual(body, payload)
        self.assertEqual(bytes(received), b"", "bytes after the final response")


if __name__ == "__main__":
    unittest.main()
