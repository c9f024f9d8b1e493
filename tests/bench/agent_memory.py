#!/usr/bin/env python3
"""Where the agent's memory goes, and what bounds it (issue #10: a soak saw the agent grow from
235 to 268 MB with 64 keys in its store).

    python3 tests/bench/agent_memory.py [--keys 64] [--kb 1024] [--budgets 64,256]
                                        [--seconds 60] [--workers 2] [--clients 8]

For each store budget (store.max_bytes, MiB) a pair is started on loopback, with the sample
origin as backend and |workers| workers on each side; |clients| threads fetch
/bench?kb=KB&key=K for random K of |keys| (each a page of KB KiB that differs on every
request, so every answer is a new version the agent stores) for |seconds|. Every 5 s it prints
the agent's RSS next to what its store holds (/stats: bytes charged, versions, keys), and
what is left: the agent's own code and buffers, per-worker zstd contexts and the malloc heap.
"""

import argparse
import json
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "replay"))
from coilgun_replay.launch import Pair, TempDir, binary, get  # noqa: E402

MIB = 1024 * 1024


def load(port, keys, kb, stop, counts, seed):
    rng = random.Random(seed)
    while not stop.is_set():
        try:
            status, _, body = get(port, f"/bench?kb={kb}&key={rng.randrange(keys)}", timeout=30)
        except OSError:
            status, body = None, b""
        counts["ok" if status == 200 and len(body) == kb * 1024 else "failed"] += 1


def store_stats(admin):
    status, _, body = get(admin, "/stats", host="127.0.0.1")
    assert status == 200, status
    return json.loads(body)["store"]


def run(budget_mib, args):
    print(f"\nstore.max_bytes = {budget_mib} MiB, {args.keys} keys of {args.kb} KiB, "
          f"{args.workers} workers, {args.clients} clients")
    print(f"{'s':>4} {'requests':>9} {'agent RSS MiB':>14} {'store MiB':>10} {'versions':>9} "
          f"{'keys':>5} {'RSS - store':>12}")
    with TempDir() as tmp:
        pair = Pair(tmp, backend_args=[binary("coilgun-sample-origin"), "--listen", "127.0.0.1:0"],
                    workers=args.workers,
                    origin_env={"COILGUN_STORE_MAX_BYTES": f"{budget_mib}MiB",
                                **dict(e.split("=", 1) for e in args.env)})
        stop = threading.Event()
        counts = {"ok": 0, "failed": 0}
        threads = [threading.Thread(target=load, args=(pair.http_port, args.keys, args.kb, stop, counts, i),
                                    daemon=True) for i in range(args.clients)]
        try:
            for t in threads:
                t.start()
            start = time.monotonic()
            rows = []
            while time.monotonic() - start < args.seconds:
                stop.wait(5)  # The sampling period, not a wait for an event.
                rss = pair.origin.rss_kib() / 1024
                s = store_stats(pair.origin_admin)
                rows.append((rss, s["bytes"] / MIB))
                print(f"{time.monotonic() - start:4.0f} {counts['ok']:9d} {rss:14.1f} {s['bytes'] / MIB:10.1f} "
                      f"{s['versions']:9d} {s['keys']:5d} {rss - s['bytes'] / MIB:12.1f}", flush=True)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=35)
            pair.stop()
        print(f"failed requests: {counts['failed']}")
        return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=64)
    parser.add_argument("--kb", type=int, default=1024)
    parser.add_argument("--budgets", default="64,256", help="store.max_bytes values, MiB")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="more environment for the agent (e.g. GLIBC_TUNABLES=...)")
    args = parser.parse_args()
    summary = []
    for budget in (int(b) for b in args.budgets.split(",")):
        rows = run(budget, args)
        last = rows[-1] if rows else (0, 0)
        summary.append((budget, max(r[0] for r in rows) if rows else 0, last[0], last[1]))
    print(f"\n{'budget MiB':>10} {'peak RSS MiB':>13} {'final RSS MiB':>14} {'final store MiB':>16}")
    for budget, peak, rss, store in summary:
        print(f"{budget:10d} {peak:13.1f} {rss:14.1f} {store:16.1f}")


if __name__ == "__main__":
    main()
