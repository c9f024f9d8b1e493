#!/usr/bin/env python3
"""Every version of every corpus series, fetched in order through a real edge/agent pair.

    python3 tests/bench/pair_corpus.py [CORPUS_DIR] [--json] [--workers=N]

A sample origin serves each series' versions in order (one per request); the edge and the agent
run on loopback with fresh certificates. Every body is checked byte for byte against the
corpus file. The figure: bytes that crossed the tunnel's TCP socket into the edge (TLS,
framing, pings and window updates included, from the edge's coilgun_link_bytes_total) over
the body bytes served, counting every version after the first of each series; and what
gzip -6 of the same bodies would have been. Exits 1 on any mismatch.
"""

import gzip
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402

LINK_IN = 'coilgun_link_bytes_total{direction="in"}'


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    as_json = "--json" in sys.argv
    workers = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--workers=")), 1)
    corpus = args[0] if args else os.environ.get("COILGUN_CORPUS", os.path.join(harness.ROOT, "..", "shared", "corpus"))
    corpus = os.path.abspath(corpus)
    with open(os.path.join(corpus, "manifest.json")) as f:
        manifest = json.load(f)

    rows = []
    mismatches = 0
    with harness.TempDir() as tmp:
        pair = harness.Pair(tmp, corpus=corpus, workers=workers)
        try:
            for series in manifest["series"]:
                name, host = series["name"], series.get("host", "www.example.com")
                body_total = link_total = gzip_total = 0
                for k, version in enumerate(series["versions"]):
                    with open(os.path.join(corpus, name, version["file"]), "rb") as f:
                        expected = f.read()
                    before = harness.metrics(pair.edge_admin)[LINK_IN]
                    status, _, body = harness.get(pair.http_port, "/" + name, host=host)
                    after = harness.metrics(pair.edge_admin)[LINK_IN]
                    if status != 200 or body != expected:
                        mismatches += 1
                        print(f"MISMATCH {name}/{version['file']}: status {status}, "
                              f"{len(body)} bytes vs {len(expected)}", file=sys.stderr)
                        continue
                    if k == 0:
                        continue  # The first version crosses in full: nothing to delta against.
                    body_total += len(body)
                    link_total += after - before
                    gzip_total += len(gzip.compress(body, 6))
                rows.append({"series": name, "versions": len(series["versions"]),
                             "body_bytes": body_total, "link_bytes": int(link_total),
                             "gzip6_bytes": gzip_total})
        finally:
            pair.stop()

    total = {k: sum(r[k] for r in rows) for k in ("versions", "body_bytes", "link_bytes", "gzip6_bytes")}
    total["link_over_body"] = total["link_bytes"] / total["body_bytes"] if total["body_bytes"] else 0
    total["gzip6_over_body"] = total["gzip6_bytes"] / total["body_bytes"] if total["body_bytes"] else 0
    total["mismatches"] = mismatches
    if as_json:
        print(json.dumps({"corpus": corpus, "series": rows, "total": total}, indent=2))
    else:
        print(f"{'series':24} {'versions':>8} {'body':>11} {'link':>9} {'link/body':>9} {'gzip-6/body':>11}")
        for r in rows:
            lb = r["link_bytes"] / r["body_bytes"] if r["body_bytes"] else 0
            gb = r["gzip6_bytes"] / r["body_bytes"] if r["body_bytes"] else 0
            print(f"{r['series']:24} {r['versions']:8} {r['body_bytes']:11} {r['link_bytes']:9} {lb:9.3%} {gb:11.2%}")
        print(f"{'TOTAL':24} {total['versions']:8} {total['body_bytes']:11} {total['link_bytes']:9} "
              f"{total['link_over_body']:9.3%} {total['gzip6_over_body']:11.2%}")
        print(f"\ntunnel bytes into the edge / body bytes served, after each series' first version: "
              f"{total['link_over_body']:.3%} (target <= 1.0%); mismatches: {mismatches}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
