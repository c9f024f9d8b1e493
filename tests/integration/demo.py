#!/usr/bin/env python3
"""The demo: a sample site behind coilgun-origin and coilgun-edge on loopback.

    python3 tests/integration/demo.py [--requests N] [--corpus DIR] [--once]

Makes certificates, starts the sample origin (a news site whose pages change as they are read,
or a corpus served one version per request), the agent and the edge, sends traffic through
the edge, and prints what crossed the tunnel next to what gzip would have sent. With
--corpus, each series is requested once per version it has, in order, so every version
crosses once (as coilgun-replay of the same corpus sends them). From a terminal it then keeps
the pair running for you to explore until Ctrl-C; with --once or without a terminal it stops
and says so.
"""

import argparse
import gzip
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

LINK_IN = 'coilgun_link_bytes_total{direction="in"}'


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=40, help="rounds of traffic (default 40)")
    ap.add_argument("--corpus", help="serve this corpus directory instead of the sample site")
    ap.add_argument("--once", action="store_true", help="exit after the summary")
    args = ap.parse_args()

    stopped = ""  # Why the demo did not keep the pair up, once it is down.
    with harness.TempDir() as tmp:
        print("starting the sample origin, coilgun-origin and coilgun-edge on 127.0.0.1 ...")
        pair = harness.Pair(tmp, corpus=os.path.abspath(args.corpus) if args.corpus else None)
        try:
            if args.corpus:
                with open(os.path.join(args.corpus, "manifest.json")) as f:
                    manifest = json.load(f)
                # (path, host, label, how many requests): one per version of each series.
                paths = [("/" + s["name"], s.get("host", "www.example.com"), s["name"], len(s["versions"]))
                         for s in manifest["series"]]
            else:
                paths = [(path, "www.example.com", label, args.requests) for path, label in (
                    ("/", "front page (HTML)"), ("/api/headlines", "headlines API (JSON)"),
                    ("/news/1003", "article (HTML)"), ("/static/site.css", "stylesheet (CSS)"))]
            rows = {label: {"requests": 0, "body": 0, "link": 0, "gzip": 0} for _, _, label, _ in paths}
            for round in range(max(n for _, _, _, n in paths)):
                for path, host, label, n in paths:
                    if round >= n:
                        continue
                    before = harness.metrics(pair.edge_admin)[LINK_IN]
                    status, _, body = harness.get(pair.http_port, path, host=host)
                    after = harness.metrics(pair.edge_admin)[LINK_IN]
                    if status != 200:
                        raise RuntimeError(f"{path}: HTTP {status}")
                    r = rows[label]
                    r["requests"] += 1
                    r["body"] += len(body)
                    r["link"] += int(after - before)
                    r["gzip"] += len(gzip.compress(body, 6))
            m = harness.metrics(pair.edge_admin)

            print(f"\n{'resource':26} {'requests':>8} {'body bytes':>12} {'tunnel bytes':>12} "
                  f"{'tunnel/body':>11} {'gzip-6/body':>11}")
            tot = {"requests": 0, "body": 0, "link": 0, "gzip": 0}
            for label, r in rows.items():
                for k in tot:
                    tot[k] += r[k]
                print(f"{label:26} {r['requests']:8} {r['body']:12} {r['link']:12} "
                      f"{r['link'] / r['body']:11.2%} {r['gzip'] / r['body']:11.2%}")
            print(f"{'TOTAL':26} {tot['requests']:8} {tot['body']:12} {tot['link']:12} "
                  f"{tot['link'] / tot['body']:11.2%} {tot['gzip'] / tot['body']:11.2%}")
            count = {k: int(m['coilgun_delta_responses_total{result="%s"}' % k])
                     for k in ("delta", "full", "stream")}
            print(f"\nresponses as deltas: {count['delta']}, full: {count['full']}, "
                  f"streamed: {count['stream']}; "
                  f"tunnel bytes saved against gzip: {1 - tot['link'] / tot['gzip']:.1%}")
            if args.once or not sys.stdin.isatty():
                stopped = "--once" if args.once else "no terminal to keep it running for"
                return 0
            print(f"""
the pair is running:
  site through the edge   curl -H 'Host: www.example.com' http://127.0.0.1:{pair.http_port}/
  edge admin              http://127.0.0.1:{pair.edge_admin}/stats  /metrics  /ready
  origin admin            http://127.0.0.1:{pair.origin_admin}/stats  /metrics  /ready
  certificates            {pair.certs.dir}

Ctrl-C stops it.""")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print()
        finally:
            pair.stop()
            if stopped:
                print(f"\nthe pair has stopped ({stopped}); run the demo from a terminal to explore it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
