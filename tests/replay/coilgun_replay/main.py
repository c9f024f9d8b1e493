"""coilgun-replay: replays captured traffic through coilgun-origin and coilgun-edge and checks
every body byte for byte against the recording.

    coilgun-replay CAPTURE [--json] [--workers N] [--keep DIR]
    coilgun-replay CAPTURE --edge http://HOST:PORT [--edge-admin http://HOST:PORT] [--json]

CAPTURE is a HAR 1.2 file, a WARC 1.0/1.1 file (plain or gzip per record) or a corpus
directory (series of versions + manifest.json). Without --edge, it starts a mock origin that
answers each recorded request with its recorded response (in capture order when one URL was
recorded several times), the real coilgun-origin and coilgun-edge on loopback with
certificates made on the spot, and sends the recorded requests through the edge one at a
time. With --edge, it drives an edge that is already running (its agent's backend must serve
the recorded content); --edge-admin gives that edge's admin listener, for link bytes.

Each entry's status and the recorded Location, ETag, Last-Modified and Content-Type fields are
checked too; a response with no body by definition (204, 304, a redirect saved without one)
is checked for that alone.

Exit status: 0 when every entry was byte-exact, 1 when any was not (each is named), 2 on bad
usage, an unreadable capture, or an edge given with --edge that cannot be reached (before or
during the run: requests that never reached it are not reported as results). Cookie, Set-Cookie, Authorization and Proxy-Authorization
never reach anything it writes (the mock origin's files, the report) nor the requests it
sends.
"""

import argparse
import gzip
import http.client
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from urllib.parse import urlsplit

from . import capture, launch, report

# Request fields not replayed: hop-by-hop and framing (http.client frames the body itself).
DROPPED_REQUEST_HEADERS = capture.FRAMING_HEADERS | {"host", "expect"}
# Response fields a proxy passes on unchanged, checked where the capture recorded them.
CHECKED_HEADERS = ("location", "etag", "last-modified", "content-type")
LINK_IN = 'coilgun_link_bytes_total{direction="in"}'
KINDS = ("delta", "full", "stream")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="coilgun-replay", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("capture", help="HAR file, WARC file or corpus directory")
    p.add_argument("--edge", help="drive this running edge (http://HOST:PORT) instead of a local pair")
    p.add_argument("--edge-admin", help="the running edge's admin listener (http://HOST:PORT), for link bytes")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    p.add_argument("--workers", type=int, default=1, help="worker threads of the local daemons")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    p.add_argument("--keep", metavar="DIR", help="keep the mock origin's files and the daemons' logs here")
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="progress bar on stderr (auto: when stderr is a terminal)")
    return p.parse_args(argv)


class Unreachable(Exception):
    """The edge given with --edge refused or dropped a connection: nothing after it is a result."""


def host_port(url, what):
    parts = urlsplit(url if "//" in url else "http://" + url)
    if parts.scheme != "http" or not parts.hostname:
        raise SystemExit(f"coilgun-replay: {what} must be http://HOST:PORT, not {url!r}")
    return parts.hostname, parts.port or 80


def reachable(address, port, what, timeout):
    """Raises Unreachable naming |what| when nothing accepts a connection at address:port."""
    try:
        socket.create_connection((address, port), timeout=min(timeout, 5.0)).close()
    except OSError as e:
        raise Unreachable(f"cannot connect to {what} at http://{address}:{port}: "
                          f"{e.strerror or e}") from None


class Staged:
    """An entry whose body is on disk, where the mock origin serves it from; the driver reads it
    back to check what the edge served. (The capture itself is loaded whole: replaying one
    larger than memory is not supported.)"""

    def __init__(self, entry, body_file):
        self.name, self.method, self.host, self.target = entry.name, entry.method, entry.host, entry.target
        self.url, self.status, self.body_file = entry.url, entry.status, body_file
        lower = {n.lower(): v for n, v in entry.response_headers}
        self.checked_headers = {n: lower[n] for n in CHECKED_HEADERS if n in lower}
        self.content_type = entry.content_type.split(";")[0].strip().lower()
        self.request_headers = [(n, v) for n, v in entry.request_headers
                                if n.lower() not in DROPPED_REQUEST_HEADERS]
        self.request_body = entry.request_body
        self.body_bytes = len(entry.body)
        self.gzip6_bytes = len(gzip.compress(entry.body, 6, mtime=0))

    def body(self):
        with open(self.body_file, "rb") as f:
            return f.read()


def stage(entries, directory):
    """Writes each recorded response (secrets already scrubbed) and the mock origin's index."""
    os.makedirs(os.path.join(directory, "bodies"), exist_ok=True)
    staged, index = [], []
    for i, e in enumerate(entries):
        rel = os.path.join("bodies", f"{i:07d}")
        with open(os.path.join(directory, rel), "wb") as f:
            f.write(e.body)
        index.append({"method": e.method, "host": e.host, "target": e.target, "status": e.status,
                      "headers": capture.scrub(e.response_headers), "body": rel})
        staged.append(Staged(e, os.path.join(directory, rel)))
    with open(os.path.join(directory, "index.json"), "w") as f:
        json.dump({"entries": index}, f)
    return staged


class Progress:
    def __init__(self, total, enabled):
        self.total, self.enabled, self.last = total, enabled, 0.0

    def update(self, done, mismatches):
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.1 and done < self.total):
            return
        self.last = now
        width = 30
        filled = width * done // max(1, self.total)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} entries"
                         f", {mismatches} mismatches ")
        if done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


class Driver:
    """Sends entries to the edge over one keep-alive connection, one at a time, and reads the
    edge's counters around each exchange to attribute link bytes and the delta result."""

    def __init__(self, address, port, admin, timeout):
        self.address, self.port, self.admin, self.timeout = address, port, admin, timeout
        self.conn = None

    def counters(self):
        if self.admin is None:
            return None
        try:
            m = launch.metrics(self.admin[1], address=self.admin[0])
        except OSError as e:
            raise Unreachable(f"cannot read the edge's /metrics at http://{self.admin[0]}:{self.admin[1]}: "
                              f"{e.strerror or e}") from None
        return {"link": m.get(LINK_IN, 0.0),
                **{k: m.get(f'coilgun_delta_responses_total{{result="{k}"}}', 0.0) for k in KINDS}}

    def exchange(self, s):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.address, self.port, timeout=self.timeout)
        headers = dict(s.request_headers)
        headers["Host"] = s.host
        body = s.request_body if s.request_body or s.method in ("POST", "PUT", "PATCH") else None
        try:
            self.conn.request(s.method, s.target, body=body, headers=headers)
            r = self.conn.getresponse()
            data = r.read()
            if r.will_close:
                self.close()
            return r.status, {n.lower(): v for n, v in r.getheaders()}, data
        except ConnectionRefusedError as e:
            self.close()
            raise Unreachable(f"the edge at http://{self.address}:{self.port} refused a connection "
                              f"at {s.name}: {e.strerror}") from None
        except (OSError, http.client.HTTPException) as e:
            self.close()
            return None, {}, f"{report.REQUEST_FAILED}: {e}"

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def run(self, s):
        before = self.counters()
        t0 = time.perf_counter()
        status, headers, data = self.exchange(s)
        latency_ms = (time.perf_counter() - t0) * 1000
        after = self.counters()
        link, kind = None, ""
        if before is not None and after is not None:
            link = int(after["link"] - before["link"])
            kind = next((k for k in KINDS if after[k] > before[k]), "")
        if status is None:
            error = data
        elif status != s.status:
            error = f"status {status}, recorded {s.status}"
        else:
            error = next((f"{n}: {headers.get(n)!r}, recorded {v!r}" for n, v in s.checked_headers.items()
                          if headers.get(n) != v), "")
            error = error or ("" if data == s.body() else first_difference(data, s.body()))
        return report.Result(name=s.name, url=s.url, host=s.host, content_type=s.content_type,
                             ok=not error, error=error, body_bytes=s.body_bytes,
                             gzip6_bytes=s.gzip6_bytes, link_bytes=link, kind=kind,
                             latency_ms=latency_ms)


def first_difference(got, want):
    at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), None)
    if at is not None:
        return f"body differs at byte {at} ({len(got)} bytes, recorded {len(want)})"
    return f"body is {len(got)} bytes, recorded {len(want)}"


def replay(staged, driver, progress):
    results = []
    bar = Progress(len(staged), progress)
    for s in staged:
        results.append(driver.run(s))
        bar.update(len(results), sum(1 for r in results if not r.ok))
    driver.close()
    return results


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        entries = capture.load(args.capture)
    except (capture.CaptureError, OSError) as e:
        print(f"coilgun-replay: {e}", file=sys.stderr)
        return 2
    if not entries:
        print(f"coilgun-replay: {args.capture}: no entries to replay", file=sys.stderr)
        return 2
    progress = args.progress == "always" or (args.progress == "auto" and sys.stderr.isatty())
    work = args.keep or tempfile.mkdtemp(prefix="coilgun-replay-")
    try:
        staged = stage(entries, os.path.join(work, "capture"))
        del entries
        if args.edge:
            address, port = host_port(args.edge, "--edge")
            admin = host_port(args.edge_admin, "--edge-admin") if args.edge_admin else None
            reachable(address, port, "the edge (--edge)", args.timeout)
            if admin:
                reachable(*admin, "the edge's admin (--edge-admin)", args.timeout)
            results = replay(staged, Driver(address, port, admin, args.timeout), progress)
            mode = "edge"
        else:
            results = replay_locally(staged, work, args, progress)
            mode = "local pair"
    except Unreachable as e:
        print(f"coilgun-replay: {e}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    out = report.build(results, args.capture, mode)
    if args.json:
        json.dump(out, sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        report.table(out, sys.stdout)
    return 1 if out["total"]["mismatches"] else 0


def replay_locally(staged, work, args, progress):
    backend = [launch.binary("coilgun-replay-origin"), "--listen", "127.0.0.1:0",
               "--index", os.path.join(work, "capture", "index.json")]
    pair = launch.Pair(work, backend_args=backend, workers=args.workers)
    try:
        return replay(staged, Driver("127.0.0.1", pair.http_port, ("127.0.0.1", pair.edge_admin),
                                     args.timeout), progress)
    finally:
        pair.stop()
        if args.keep:
            for p in (pair.site, pair.origin, pair.edge):
                with open(os.path.join(work, f"{p.name}.log"), "w") as f:
                    f.write(p.tail(n=10**9) + "\n")
