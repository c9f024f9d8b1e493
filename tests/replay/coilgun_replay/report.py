"""What a replay measured: per entry results folded into per content type, per host and total
figures, printed as a table or as one JSON object (a stable format: scripts depend on it).

total (and each group) holds: entries, mismatches, errors, body_bytes, link_bytes (null when
the edge's admin was not reachable), gzip6_bytes, link_ratio, gzip6_ratio, delta, full, stream,
latency_ms {p50, p90, p99, max}. mismatches counts every entry not served as recorded, errors
those among them that got no response at all.
"""

from dataclasses import dataclass

REQUEST_FAILED = "request failed"  # Prefix of the error of an exchange that got no response.


@dataclass
class Result:
    name: str            # The entry ("capture.har entry 12").
    url: str
    host: str
    content_type: str    # Media type without parameters.
    ok: bool             # Status and body as recorded.
    error: str           # Why not ok ("" when ok).
    body_bytes: int      # Recorded body size.
    gzip6_bytes: int     # gzip -6 of the recorded body.
    link_bytes: object   # Tunnel bytes into the edge for this exchange, or None when unknown.
    kind: str            # "delta", "full", "stream" or "" (no body, or unknown).
    latency_ms: float    # Request sent to last body byte, at the client.


def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * p // 100))  # ceil(n * p / 100)
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


def summarize(results):
    latencies = sorted(r.latency_ms for r in results)
    known = [r.link_bytes for r in results if r.link_bytes is not None]
    link = sum(known) if results and len(known) == len(results) else None
    body = sum(r.body_bytes for r in results)
    gzip6 = sum(r.gzip6_bytes for r in results)
    return {
        "entries": len(results),
        "mismatches": sum(1 for r in results if not r.ok),  # Failed requests included.
        "errors": sum(1 for r in results if r.error.startswith(REQUEST_FAILED)),
        "body_bytes": body,
        "link_bytes": link,
        "gzip6_bytes": gzip6,
        "link_ratio": (link / body if body else 0.0) if link is not None else None,
        "gzip6_ratio": gzip6 / body if body else 0.0,
        "delta": sum(1 for r in results if r.kind == "delta"),
        "full": sum(1 for r in results if r.kind == "full"),
        "stream": sum(1 for r in results if r.kind == "stream"),
        "latency_ms": {"p50": round(percentile(latencies, 50), 3),
                       "p90": round(percentile(latencies, 90), 3),
                       "p99": round(percentile(latencies, 99), 3),
                       "max": round(latencies[-1] if latencies else 0.0, 3)},
    }


def build(results, capture, mode):
    def grouped(key):
        groups = {}
        for r in results:
            groups.setdefault(key(r), []).append(r)
        return {k: summarize(v) for k, v in sorted(groups.items())}

    return {
        "capture": capture,
        "mode": mode,
        "total": summarize(results),
        "by_content_type": grouped(lambda r: r.content_type or "(none)"),
        "by_host": grouped(lambda r: r.host),
        "mismatches": [{"entry": r.name, "url": r.url, "reason": r.error}
                       for r in results if not r.ok],
    }


def _size(n):
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _pct(x):
    return "-" if x is None else f"{100 * x:.2f}%"


def table(report, out):
    cols = ("entries", "body", "link", "link/body", "gzip -6", "gzip/body",
            "delta", "full", "stream", "p50 ms", "p99 ms")
    widths = (8, 10, 10, 10, 10, 10, 6, 6, 7, 8, 8)

    def row(label, s):
        cells = (s["entries"], _size(s["body_bytes"]), _size(s["link_bytes"]),
                 _pct(s["link_ratio"]), _size(s["gzip6_bytes"]), _pct(s["gzip6_ratio"]),
                 s["delta"], s["full"], s["stream"], f'{s["latency_ms"]["p50"]:.1f}',
                 f'{s["latency_ms"]["p99"]:.1f}')
        out.write(f"{label[:34]:<34}" + "".join(f"{str(c):>{w}}" for c, w in zip(cells, widths)) + "\n")

    header = f"{'':<34}" + "".join(f"{c:>{w}}" for c, w in zip(cols, widths)) + "\n"
    for title, key in (("content type", "by_content_type"), ("host", "by_host")):
        out.write(f"\nby {title}\n" + header)
        for label, s in report[key].items():
            row(label, s)
    out.write("\n" + header)
    row("TOTAL", report["total"])
    t = report["total"]
    out.write(f"\n{t['entries']} entries replayed ({report['mode']}), "
              f"{t['mismatches']} not byte-exact\n")
    for m in report["mismatches"][:20]:
        out.write(f"  MISMATCH {m['entry']} {m['url']}: {m['reason']}\n")
    if len(report["mismatches"]) > 20:
        out.write(f"  ... and {len(report['mismatches']) - 20} more (--json lists them all)\n")
