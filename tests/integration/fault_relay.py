"""A TCP relay between the edge and the agent that misbehaves on command (issue #10): it cuts
every connection, stalls (holds every byte, closes nothing), flips bits, or throttles to a rate,
in both directions. Between faults it passes bytes as they come.

    relay = FaultRelay()
    port = relay.start(agent_port)   # The edge dials |port|.
    relay.stall(); ...; relay.clear()
    relay.throttle(100_000); relay.flip(0.01); relay.cut()
    relay.stop()

Its sockets have small kernel buffers, so that a throttled relay pushes back on the daemons the
way a slow link's bottleneck does, instead of soaking megabytes up itself.
"""

import random
import socket
import threading
import time

BUFFER = 64 * 1024


class FaultRelay:
    def __init__(self):
        self._cond = threading.Condition()
        self._stalled = False
        self._rate = None         # Bytes per second each way, or None.
        self._flip = 0.0          # Probability that a chunk gets one bit flipped.
        self._conns = []
        self._listener = None
        self._target = None
        self._rng = random.Random(1)
        self.flipped = 0          # Chunks corrupted so far.

    def start(self, target_port):
        self._target = ("127.0.0.1", target_port)
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()
        return self._listener.getsockname()[1]

    def stall(self):
        with self._cond:
            self._stalled = True

    def throttle(self, bytes_per_second):
        with self._cond:
            self._rate = bytes_per_second

    def flip(self, probability):
        with self._cond:
            self._flip = probability

    def clear(self):
        """Back to passing bytes as they come."""
        with self._cond:
            self._stalled, self._rate, self._flip = False, None, 0.0
            self._cond.notify_all()

    def cut(self):
        """Closes every connection now (new ones are relayed)."""
        with self._cond:
            conns, self._conns = self._conns, []
        for s in conns:
            _close(s)

    def stop(self):
        if self._listener is not None:
            self._listener.close()
        self.clear()
        self.cut()

    def _accept(self):
        while True:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(self._target, timeout=5)
            except OSError:
                down.close()
                continue
            for s in (down, up):
                s.settimeout(None)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
            with self._cond:
                self._conns += [down, up]
            threading.Thread(target=self._pump, args=(down, up), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, down), daemon=True).start()

    def _pump(self, src, dst):
        while True:
            try:
                data = src.recv(16 * 1024)
            except OSError:
                data = b""
            if not data:
                _close(src)
                _close(dst)
                return
            with self._cond:
                while self._stalled:  # Holds the bytes; the connection stays up.
                    self._cond.wait(0.5)
                rate, flip = self._rate, self._flip
                if flip and self._rng.random() < flip:
                    i = self._rng.randrange(len(data))
                    data = data[:i] + bytes([data[i] ^ (1 << self._rng.randrange(8))]) + data[i + 1:]
                    self.flipped += 1
            if rate:
                time.sleep(len(data) / rate)  # The link's pace, not a wait for an event.
            try:
                dst.sendall(data)
            except OSError:
                _close(src)
                _close(dst)
                return


def _close(s):
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
