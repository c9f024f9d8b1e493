"""A slow link between two processes on loopback: a TCP relay that delays every byte by half
the round-trip time in each direction and lets it through no faster than the bandwidth, with a
bottleneck queue of a few bandwidth-delay products. The kernel's netem is not available here;
this works at the level of TCP payload, so the endpoints' own TCP sees loopback, but what
arrives does so as over the emulated link: a response of N bytes takes RTT/2 + N / bandwidth
after its first byte left, and a request/response exchange at least one RTT.

    with LinkEmulator(target_port=ORIGIN, rtt_ms=80, mbit=10) as link:
        ...connect to 127.0.0.1:link.port...

Standard library only (asyncio in a thread of its own).
"""

import asyncio
import collections
import threading
import time


class _Direction:
    """One direction of one connection: a queue of (due time, bytes) drained at the rate."""

    def __init__(self, delay_s, bytes_per_s, queue_limit):
        self.delay_s, self.bytes_per_s, self.queue_limit = delay_s, bytes_per_s, queue_limit
        self.queue = collections.deque()
        self.queued = 0
        self.wake = asyncio.Event()
        self.link_free_at = 0.0  # When the emulated wire finishes the bytes already sent.

    async def pump(self, reader, writer):
        """Reads from |reader| into the queue while it has room (the bottleneck buffer)."""
        try:
            while True:
                while self.queued >= self.queue_limit:
                    await asyncio.sleep(0.001)
                data = await reader.read(16384)
                if not data:
                    break
                self.queue.append((time.monotonic(), data))
                self.queued += len(data)
                self.wake.set()
        finally:
            self.queue.append((time.monotonic(), b""))  # EOF marker.
            self.wake.set()

    async def deliver(self, writer):
        """Writes each chunk once the wire has carried it and it has travelled the delay."""
        try:
            while True:
                while not self.queue:
                    self.wake.clear()
                    await self.wake.wait()
                arrived, data = self.queue.popleft()
                self.queued -= len(data)
                if not data:
                    break
                start = max(arrived, self.link_free_at)
                self.link_free_at = start + len(data) / self.bytes_per_s
                wait = self.link_free_at + self.delay_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.write_eof()
            except (OSError, RuntimeError):
                pass


class LinkEmulator:
    def __init__(self, target_port, rtt_ms, mbit, target_host="127.0.0.1"):
        self.target = (target_host, target_port)
        self.delay_s = rtt_ms / 2000.0
        self.bytes_per_s = mbit * 1e6 / 8
        # Four bandwidth-delay products of buffer, at least 64 KiB.
        self.queue_limit = max(64 * 1024, int(4 * self.bytes_per_s * rtt_ms / 1000))
        self.port = None
        self._ready = threading.Event()
        self._loop = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("link emulator did not start")
        return self

    def __exit__(self, *exc):
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def _run(self):
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._connection, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _connection(self, client_reader, client_writer):
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        up = _Direction(self.delay_s, self.bytes_per_s, self.queue_limit)
        down = _Direction(self.delay_s, self.bytes_per_s, self.queue_limit)
        await asyncio.gather(up.pump(client_reader, server_writer), up.deliver(server_writer),
                             down.pump(server_reader, client_writer), down.deliver(client_writer),
                             return_exceptions=True)
        for w in (client_writer, server_writer):
            w.close()
