"""Captured traffic in, replay entries out: HAR 1.2, WARC 1.0/1.1 and the corpus layout.

Every reader yields Entry objects in capture order. Bodies are bytes exactly as the client
received them (HAR: content.text, decoded from base64 when its encoding says so; WARC: the
archived HTTP body, de-chunked, content-coding kept; corpus: the version files). Responses
that carry no body by definition (1xx, 204, 304, and answers to HEAD) have an empty one
whatever the capture says (browsers record a 304's cached body); a HAR entry with no
content.text and content.size 0 (a redirect, as Chromium saves it) has an empty one too.

HAR entries are named by their position in log.entries counted from 1, as HAR viewers number
them (entries skipped as never sent keep their numbers).

Bad input raises CaptureError naming the file and the entry; every size is bounded before
anything is read into memory. Standard library only.
"""

import base64
import binascii
import gzip
import json
import os
import zlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_BODY = 256 << 20         # One recorded body.
MAX_HEAD = 256 << 10         # One HTTP head inside a WARC record, or one WARC header block.
MAX_ENTRIES = 1_000_000      # Entries in one capture.
MAX_HAR_FILE = 2 << 30       # A HAR is one JSON document: read whole, so bounded.

# Never written anywhere by the replay (reports, the mock origin's files, messages).
SECRET_HEADERS = frozenset({"cookie", "set-cookie", "authorization", "proxy-authorization"})

# Framing and hop-by-hop fields of the recording: the mock origin frames bodies itself.
FRAMING_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive",
                             "proxy-connection", "te", "trailer", "upgrade"})


class CaptureError(Exception):
    pass


@dataclass
class Entry:
    """One recorded exchange."""
    name: str                 # Where it came from, for messages ("capture.har entry 12").
    method: str
    host: str                 # Lower case, without the port.
    target: str               # Path and query.
    status: int
    content_type: str
    body: bytes
    request_headers: list = field(default_factory=list)   # [(name, value)], secrets removed.
    response_headers: list = field(default_factory=list)  # [(name, value)], secrets removed.
    request_body: bytes = b""
    scheme: str = "http"      # As recorded; the replay itself always speaks http to the edge.

    @property
    def url(self):
        return f"{self.scheme}://{self.host}{self.target}"


def scrub(headers):
    """The headers without Cookie, Set-Cookie and Authorization."""
    return [(n, v) for n, v in headers if n.lower() not in SECRET_HEADERS]


def _split_url(url, where):
    """(scheme, host, target) of an absolute http(s) URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CaptureError(f"{where}: not an http(s) URL: {url[:200]!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return parts.scheme, parts.hostname.lower(), target


def bodyless(method, status):
    """Whether a response to |method| with |status| has no body, whatever its headers say
    (RFC 9110 sections 6.4.1, 15.3.5 and 15.4.5)."""
    return method == "HEAD" or status < 200 or status in (204, 304)


def _content_type(headers, fallback=""):
    for n, v in headers:
        if n.lower() == "content-type":
            return v
    return fallback


def load(path):
    """Entries of the capture at |path|: a corpus directory, a HAR or a WARC (by content)."""
    if os.path.isdir(path):
        return list(read_corpus(path))
    with open(path, "rb") as f:
        start = f.read(4)
    if start[:2] == b"\x1f\x8b" or start == b"WARC":
        return list(read_warc(path))
    return list(read_har(path))


# ---- HAR 1.2 ------------------------------------------------------------------------------

def read_har(path):
    size = os.path.getsize(path)
    if size > MAX_HAR_FILE:
        raise CaptureError(f"{path}: {size} bytes, over the {MAX_HAR_FILE} byte HAR limit")
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
        entries = doc["log"]["entries"]
    except (ValueError, KeyError, TypeError) as e:
        raise CaptureError(f"{path}: not a HAR file ({e})") from None
    if not isinstance(entries, list) or len(entries) > MAX_ENTRIES:
        raise CaptureError(f"{path}: log.entries must be a list of at most {MAX_ENTRIES}")
    for i, e in enumerate(entries, start=1):
        entry = _har_entry(e, f"{os.path.basename(path)} entry {i}")
        if entry is not None:
            yield entry


def _har_headers(items, where):
    if not isinstance(items, list):
        raise CaptureError(f"{where}: headers must be a list")
    out = []
    for h in items:
        try:
            out.append((str(h["name"]), str(h["value"])))
        except (KeyError, TypeError):
            raise CaptureError(f"{where}: a header without name or value") from None
    return out


def _har_entry(e, where):
    try:
        req, resp = e["request"], e["response"]
        method, url, status = str(req["method"]).upper(), str(req["url"]), int(resp["status"])
        content = resp.get("content") or {}
    except (KeyError, TypeError, ValueError):
        raise CaptureError(f"{where}: request.method, request.url or response.status missing") from None
    if status <= 0 or urlsplit(url).scheme.lower() not in ("http", "https"):
        # Blocked or failed in the browser, or not from the network (data:, blob:, the
        # browser's own chrome:// and extension pages): nothing crossed.
        return None
    scheme, host, target = _split_url(url, where)
    text = content.get("text")
    if bodyless(method, status) or (text is None and content.get("size") == 0):
        text = ""
    elif text is None:
        raise CaptureError(f"{where} ({url[:200]}): the HAR holds no body (content.text); "
                           "export it with content")
    if text and content.get("encoding") == "base64":
        if len(text) > MAX_BODY * 4 // 3 + 4:
            raise CaptureError(f"{where}: body over {MAX_BODY} bytes")
        try:
            body = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise CaptureError(f"{where}: content.text is not valid base64") from None
    else:
        body = str(text).encode("utf-8")
    if len(body) > MAX_BODY:
        raise CaptureError(f"{where}: body over {MAX_BODY} bytes")
    resp_headers = _har_headers(resp.get("headers", []), where)
    # content.text is the decoded body: the recorded content-coding no longer applies.
    resp_headers = [(n, v) for n, v in resp_headers
                    if n.lower() not in FRAMING_HEADERS and n.lower() != "content-encoding"
                    and not n.startswith(":")]
    req_headers = [(n, v) for n, v in _har_headers(req.get("headers", []), where)
                   if not n.startswith(":")]
    post = req.get("postData") or {}
    mime = str(content.get("mimeType", ""))
    return Entry(name=where, method=method, scheme=scheme, host=host, target=target, status=status,
                 content_type=_content_type(resp_headers, "" if mime == "x-unknown" else mime),
                 body=body, request_headers=scrub(req_headers),
                 response_headers=scrub(resp_headers),
                 request_body=str(post.get("text", "")).encode("utf-8"))


# ---- WARC 1.0 / 1.1 -----------------------------------------------------------------------

class _Reader:
    """Bounded line and block reads over a (maybe gzip-member-per-record) stream."""

    def __init__(self, f, where):
        self.f, self.where = f, where

    def line(self):
        line = self.f.readline(MAX_HEAD + 1)
        if len(line) > MAX_HEAD:
            raise CaptureError(f"{self.where}: a header line over {MAX_HEAD} bytes")
        return line

    def exactly(self, n):
        data = self.f.read(n)
        if len(data) != n:
            raise CaptureError(f"{self.where}: truncated record ({len(data)} of {n} bytes)")
        return data


def _parse_fields(lines, where):
    out = []
    for raw in lines:
        text = raw.decode("latin-1").rstrip("\r\n")
        if text[:1] in (" ", "\t") and out:  # Folded continuation.
            out[-1] = (out[-1][0], out[-1][1] + " " + text.strip())
            continue
        name, sep, value = text.partition(":")
        if not sep or not name.strip():
            raise CaptureError(f"{where}: malformed header line {text[:80]!r}")
        out.append((name.strip(), value.strip()))
    return out


def _warc_records(f, where):
    r = _Reader(f, where)
    index = 0
    while True:
        line = r.line()
        while line in (b"\r\n", b"\n"):
            line = r.line()
        if not line:
            return
        version = line.decode("latin-1").strip()
        if version not in ("WARC/1.0", "WARC/1.1"):
            raise CaptureError(f"{where} record {index}: not a WARC/1.0 or 1.1 record "
                               f"({version[:40]!r})")
        lines, total = [], 0
        while True:
            line = r.line()
            if line in (b"\r\n", b"\n", b""):
                break
            total += len(line)
            if total > MAX_HEAD:
                raise CaptureError(f"{where} record {index}: WARC header over {MAX_HEAD} bytes")
            lines.append(line)
        fields = {n.lower(): v for n, v in _parse_fields(lines, f"{where} record {index}")}
        try:
            length = int(fields["content-length"])
        except (KeyError, ValueError):
            raise CaptureError(f"{where} record {index}: no valid Content-Length") from None
        if length < 0 or length > MAX_BODY + MAX_HEAD:
            raise CaptureError(f"{where} record {index}: block of {length} bytes over the limit")
        yield index, fields, r.exactly(length)
        index += 1


def _dechunk(body, where):
    out, pos = bytearray(), 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            raise CaptureError(f"{where}: truncated chunked body")
        try:
            size = int(body[pos:end].split(b";")[0].strip(), 16)
        except ValueError:
            raise CaptureError(f"{where}: bad chunk size") from None
        pos = end + 2
        if size == 0:
            return bytes(out)
        if size > MAX_BODY - len(out) or pos + size > len(body):
            raise CaptureError(f"{where}: chunk beyond the body")
        out += body[pos:pos + size]
        pos += size + 2


def _split_http(block, where):
    """(start line, header fields, body) of an archived HTTP message."""
    end = block.find(b"\r\n\r\n")
    sep = 4
    if end < 0:
        end, sep = block.find(b"\n\n"), 2
    if end < 0 or end > MAX_HEAD:
        raise CaptureError(f"{where}: no HTTP head within {MAX_HEAD} bytes")
    lines = block[:end].split(b"\n")
    return lines[0].decode("latin-1").strip(), _parse_fields(
        [l + b"\n" for l in lines[1:]], where), block[end + sep:]


def read_warc(path):
    with open(path, "rb") as f:
        opener = gzip.open if f.read(2) == b"\x1f\x8b" else open
    name = os.path.basename(path)
    requests = {}  # WARC-Record-ID / Target-URI -> (method, headers, body) of request records
    count = 0
    try:
        with opener(path, "rb") as f:
            for index, fields, block in _warc_records(f, name):
                where = f"{name} record {index}"
                kind = fields.get("warc-type", "")
                uri = fields.get("warc-target-uri", "").strip("<>")
                if kind == "request" and fields.get("content-type", "").startswith("application/http"):
                    start, headers, body = _split_http(block, where)
                    req = (start.split(" ")[0].upper(), headers, body)
                    requests[fields.get("warc-concurrent-to", "")] = req
                    requests[uri] = req
                    continue
                if kind != "response" or not fields.get("content-type", "").startswith("application/http"):
                    continue  # warcinfo, metadata, resource, revisit: nothing to replay.
                count += 1
                if count > MAX_ENTRIES:
                    raise CaptureError(f"{name}: over {MAX_ENTRIES} response records")
                yield _warc_entry(fields, block, uri, requests, where)
    except (OSError, EOFError, zlib.error) as e:
        raise CaptureError(f"{name}: unreadable ({e})") from None


def _warc_entry(fields, block, uri, requests, where):
    scheme, host, target = _split_url(uri, where)
    start, headers, body = _split_http(block, where)
    parts = start.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise CaptureError(f"{where}: bad status line {start[:80]!r}")
    lower = {n.lower(): v for n, v in headers}
    if "chunked" in lower.get("transfer-encoding", "").lower():
        body = _dechunk(body, where)
    elif "content-length" in lower:
        try:
            declared = int(lower["content-length"])
        except ValueError:
            raise CaptureError(f"{where}: bad Content-Length") from None
        if declared < len(body):
            body = body[:declared]
    req = requests.get(fields.get("warc-record-id", "")) or requests.get(uri)
    method, req_headers, req_body = req if req else ("GET", [], b"")
    status = int(parts[1])
    if bodyless(method, status):
        body = b""
    resp_headers = [(n, v) for n, v in headers if n.lower() not in FRAMING_HEADERS]
    return Entry(name=where, method=method, scheme=scheme, host=host, target=target, status=status,
                 content_type=_content_type(headers), body=body,
                 request_headers=scrub(req_headers), response_headers=scrub(resp_headers),
                 request_body=req_body)


# ---- The corpus layout (../shared/corpus) -------------------------------------------------

def read_corpus(directory):
    manifest = os.path.join(directory, "manifest.json")
    try:
        with open(manifest, "rb") as f:
            series = json.load(f)["series"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CaptureError(f"{manifest}: not a corpus manifest ({e})") from None
    for s in series:
        try:
            name, host = s["name"], s.get("host") or "corpus.local"
            path = s.get("request_path") or f"/{name}"
            ctype = s.get("content_type", "application/octet-stream")
            versions = s["versions"]
        except (KeyError, TypeError):
            raise CaptureError(f"{manifest}: a series without name or versions") from None
        for v in versions:
            file = os.path.join(directory, name, v["file"])
            if os.path.getsize(file) > MAX_BODY:
                raise CaptureError(f"{file}: over {MAX_BODY} bytes")
            with open(file, "rb") as f:
                body = f.read()
            yield Entry(name=f"{name}/{v['file']}", method="GET", host=host.lower(),
                        target=path, status=200, content_type=ctype, body=body,
                        response_headers=[("Content-Type", ctype)])
