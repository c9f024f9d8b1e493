"""A slow link between two network namespaces, at the packet level.

    with SlowLink(rtt_ms=80, mbit=10) as link:
        with link.edge_side():          # this thread's sockets and children: the edge side
            origin = Popen(link.origin_side(["coilgun-origin", "--listen", f"{ORIGIN}:0", ...]))
            edge = Popen(["coilgun-edge", "--agent", f"{ORIGIN}:{port}", ...])

Two namespaces of our own, each with its loopback and one TUN device (10.77.0.1 on the edge
side, 10.77.0.2 on the origin side, MTU 1500). A thread forwards every IP packet from one TUN
to the other: each direction is a bottleneck of |mbit| with a drop-tail queue of four
bandwidth-delay products (at least 64 KiB), then half the round-trip time of propagation. The
endpoints' own TCP sees the emulated path: its handshake, slow start, congestion window,
delayed ACKs and Nagle all pay the delay, as over a real link. |congestion| picks the TCP
congestion control inside both namespaces (e.g. "cubic", Linux's and Debian's default, where
the host runs BBR). The kernel's netem is not
available here, and a qdisc cannot add delay; a TUN pair needs root and /dev/net/tun only.

Standard library only (ctypes for setns(2)). Written by hand because no Debian package
emulates a link in userspace at the packet level.
"""

import collections
import contextlib
import ctypes
import fcntl
import os
import select
import struct
import subprocess
import threading
import time

EDGE_ADDR = "10.77.0.1"
ORIGIN_ADDR = "10.77.0.2"
_TUNSETIFF = 0x400454CA
_IFF_TUN, _IFF_NO_PI = 0x0001, 0x1000
_CLONE_NEWNET = 0x40000000
_DEVICE = "cgl0"
_ALLOWED = "/proc/sys/net/ipv4/tcp_allowed_congestion_control"


def available():
    """Why the emulator cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root (network namespaces and TUN devices)"
    if not os.path.exists("/dev/net/tun"):
        return "needs /dev/net/tun"
    return None


def _setns(path):
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def _in_netns(path):
    """Runs the body with this thread in the network namespace at |path|, then moves back."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(path)
        try:
            yield
        finally:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.setns(home, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(home)


class _Direction:
    """One way across the link: the bottleneck's departure schedule and the packets in flight."""

    def __init__(self, delay_s, bytes_per_s, queue_limit):
        self.delay_s, self.bytes_per_s, self.queue_limit = delay_s, bytes_per_s, queue_limit
        self.link_free_at = 0.0  # When the bottleneck has sent every packet queued so far.
        self.in_flight = collections.deque()  # (due time at the far end, packet), in due order.
        self.dropped = 0
        self.delivered = 0  # Bytes of IP packets delivered at the far end.

    def offer(self, packet, now):
        backlog = max(0.0, self.link_free_at - now) * self.bytes_per_s
        if backlog + len(packet) > self.queue_limit:
            self.dropped += 1
            return
        self.link_free_at = max(now, self.link_free_at) + len(packet) / self.bytes_per_s
        self.in_flight.append((self.link_free_at + self.delay_s, packet))

    def next_due(self):
        return self.in_flight[0][0] if self.in_flight else None


class SlowLink:
    def __init__(self, rtt_ms, mbit, congestion=None):
        tag = f"{os.getpid()}-{threading.get_ident() % 10000}"
        self.namespaces = {"edge": f"cg-edge-{tag}", "origin": f"cg-origin-{tag}"}
        delay_s, bytes_per_s = rtt_ms / 2000.0, mbit * 1e6 / 8
        queue_limit = max(64 * 1024, int(4 * bytes_per_s * rtt_ms / 1000))
        self._ways = {"edge": _Direction(delay_s, bytes_per_s, queue_limit),  # edge -> origin
                      "origin": _Direction(delay_s, bytes_per_s, queue_limit)}
        self._fds = {}
        self._congestion = congestion  # TCP congestion control in both namespaces, or the host's.
        self._allowed_before = None
        self._error = None  # What stopped the forwarder thread, if anything did.
        self._stop_r, self._stop_w = os.pipe()
        self._thread = threading.Thread(target=self._forward, daemon=True)

    def __enter__(self):
        try:
            if self._congestion:
                self._allow_congestion()
            for side, ns in self.namespaces.items():
                subprocess.run(["ip", "netns", "add", ns], check=True)
                self._fds[side] = self._open_tun(ns)
                here, there = (EDGE_ADDR, ORIGIN_ADDR) if side == "edge" else (ORIGIN_ADDR, EDGE_ADDR)
                for cmd in (["link", "set", "lo", "up"], ["addr", "add", here, "peer", there, "dev", _DEVICE],
                            ["link", "set", _DEVICE, "up", "mtu", "1500"]):
                    subprocess.run(["ip", "-n", ns] + cmd, check=True)
                if self._congestion:
                    subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                                    f"net.ipv4.tcp_congestion_control={self._congestion}"], check=True)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        self._thread.start()
        return self

    def __exit__(self, *exc):
        try:
            if self._allowed_before is not None:  # The host's setting first: it matters most.
                with open(_ALLOWED, "w") as f:
                    f.write(self._allowed_before)
                self._allowed_before = None
        finally:
            os.write(self._stop_w, b"x")
            if self._thread.is_alive():
                self._thread.join(timeout=10)
            for fd in list(self._fds.values()) + [self._stop_r, self._stop_w]:
                os.close(fd)
            self._fds.clear()
            for ns in self.namespaces.values():
                subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        if self._error is not None and exc[0] is None:
            raise RuntimeError("slow link forwarder failed") from self._error

    def _check(self):
        if self._error is not None:
            raise RuntimeError("slow link forwarder failed") from self._error

    def _allow_congestion(self):
        """A namespace may only pick an algorithm the host allows (the kernel refuses others
        with EPERM); allows ours until __exit__ if it is not."""
        with open(_ALLOWED) as f:
            allowed = f.read().strip()
        if self._congestion not in allowed.split():
            self._allowed_before = allowed
            with open(_ALLOWED, "w") as f:
                f.write(f"{allowed} {self._congestion}")

    def dropped(self):
        """Packets dropped so far, by the side that sent them."""
        return {side: way.dropped for side, way in self._ways.items()}

    def delivered(self):
        """IP bytes (headers included) carried so far, by the side that sent them."""
        self._check()
        return {side: way.delivered for side, way in self._ways.items()}

    def edge_side(self):
        """A context in which this thread's sockets and the processes it starts are on the
        edge side of the link."""
        return _in_netns(f"/run/netns/{self.namespaces['edge']}")

    def origin_side(self, argv):
        """|argv| run on the origin side of the link."""
        return ["ip", "netns", "exec", self.namespaces["origin"]] + list(argv)

    @staticmethod
    def _open_tun(ns):
        with _in_netns(f"/run/netns/{ns}"):
            fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
            fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", _DEVICE.encode(), _IFF_TUN | _IFF_NO_PI))
        return fd

    def _forward(self):
        try:
            self._forward_packets()
        except BaseException as e:  # Reported by delivered() and __exit__, not lost with the thread.
            self._error = e

    def _forward_packets(self):
        """Reads packets as they leave either side, writes each to the other side when due."""
        other = {"edge": "origin", "origin": "edge"}
        side_of = {fd: side for side, fd in self._fds.items()}
        poller = select.poll()
        for fd in list(side_of) + [self._stop_r]:
            poller.register(fd, select.POLLIN)
        while True:
            dues = [d for d in (w.next_due() for w in self._ways.values()) if d is not None]
            wait_ms = max(0, (min(dues) - time.monotonic()) * 1000) if dues else None
            for fd, _ in poller.poll(None if wait_ms is None else wait_ms):
                if fd == self._stop_r:
                    return
                self._read_all(fd, self._ways[side_of[fd]])
            now = time.monotonic()
            for side, way in self._ways.items():
                while way.in_flight and way.in_flight[0][0] <= now:
                    _, packet = way.in_flight.popleft()
                    try:
                        os.write(self._fds[other[side]], packet)
                        way.delivered += len(packet)
                    except BlockingIOError:
                        way.dropped += 1  # The receiving side's TUN queue is full.

    @staticmethod
    def _read_all(fd, way):
        while True:
            try:
                packet = os.read(fd, 65536)
            except BlockingIOError:
                return
            way.offer(packet, time.monotonic())
