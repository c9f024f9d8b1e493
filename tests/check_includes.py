#!/usr/bin/env python3
"""The include arrows: fails when a source file includes a header it may not (issue #11).

    python3 tests/check_includes.py [ROOT]        (ROOT: the checkout, by default this one's)
    python3 tests/check_includes.py --self-test   (shows it catches a wrong arrow)

Every "quoted" include in proto/, common/, edge/ and origin/ must name a file that exists
(from the checkout's root) and must point down the tree (common/CMakeLists.txt draws it):

    proto                      <- everything
    common/obs, net, tls, tunnel/session.*   proto only (and their own folder)
    common/http                net, tls (the client's HTTPS)
    common/store               net, obs
    common/tunnel              net, tls, its session; http_fields.* also common/http
    common/daemon              all of common
    edge, origin               all of common, their own folder; never each other
Internal headers (INTERNAL below) may be included only from their own folder: the store's
tiers hide behind make_version_store(). Tests, benchmarks and fixtures may include anything.
"""

import os
import re
import sys
import tempfile

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)
SOURCES = (".h", ".cc")

# (prefix of the including file, prefixes it may include). The longest matching prefix rules.
RULES = [
    ("proto/", ["proto/"]),
    ("common/obs/", ["proto/", "common/obs/"]),
    ("common/net/", ["proto/", "common/net/"]),
    ("common/tls/", ["proto/", "common/tls/"]),
    ("common/store/", ["proto/", "common/store/", "common/net/", "common/obs/"]),
    ("common/http/", ["proto/", "common/http/", "common/net/", "common/tls/"]),
    ("common/tunnel/session.", ["proto/", "common/tunnel/session.h"]),  # Sans-IO: proto only.
    ("common/tunnel/", ["proto/", "common/tunnel/", "common/net/", "common/tls/"]),
    # The http <-> tunnel field mapping (the rest of tunnel/ knows nothing of HTTP).
    ("common/tunnel/http_fields.", ["proto/", "common/tunnel/http_fields.h", "common/http/"]),
    ("common/daemon/", ["proto/", "common/"]),
    ("edge/", ["proto/", "common/", "edge/"]),
    ("origin/", ["proto/", "common/", "origin/"]),
]

# Header -> the only folder (prefix) whose files may include it.
INTERNAL = {
    "common/store/memory_store.h": "common/store/",
    "common/store/memcached_client.h": "common/store/",
    "common/store/shared_store.h": "common/store/",
}


def rule_for(path):
    best = None
    for prefix, allowed in RULES:
        if path.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, allowed)
    return best


def check(root):
    """Every violation under |root|, as 'file: message' lines."""
    problems = []
    for top in ("proto", "common", "edge", "origin"):
        for dirpath, _, names in os.walk(os.path.join(root, top)):
            for name in sorted(names):
                if not name.endswith(SOURCES):
                    continue
                path = os.path.relpath(os.path.join(dirpath, name), root)
                with open(os.path.join(root, path), encoding="utf-8") as f:
                    text = f.read()
                rule = rule_for(path)
                for header in INCLUDE.findall(text):
                    if not os.path.isfile(os.path.join(root, header)):
                        problems.append(f"{path}: includes \"{header}\", which does not exist")
                    elif rule and not any(header.startswith(a) for a in rule[1]):
                        problems.append(f"{path}: includes \"{header}\" (files in {rule[0]} may "
                                        f"include only {', '.join(rule[1])})")
                    elif header in INTERNAL and not path.startswith(INTERNAL[header]):
                        problems.append(f"{path}: includes \"{header}\", which is internal to "
                                        f"{INTERNAL[header]}")
    return problems


def self_test():
    """A tree with two wrong arrows, one missing header and one internal header included from
    outside must give exactly those four."""
    with tempfile.TemporaryDirectory() as root:
        files = {
            "proto/status.h": "",
            "common/net/loop.h": '#include "proto/status.h"\n#include "proto/gone.h"\n',
            "origin/agent.h": '#include "common/net/loop.h"\n',
            "common/tunnel/session.h": '#include "common/net/loop.h"\n',  # Wrong: sans-IO.
            "edge/edge.h": '#include "common/net/loop.h"\n#include "origin/agent.h"\n',
            "common/store/memory_store.h": '#include "proto/status.h"\n',
            "common/store/version_store.cc": '#include "common/store/memory_store.h"\n',
            "origin/main.cc": '#include "common/store/memory_store.h"\n',  # Wrong: internal.
        }
        for path, text in files.items():
            os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
            with open(os.path.join(root, path), "w", encoding="utf-8") as f:
                f.write(text)
        problems = check(root)
    expected = ["common/net/loop.h: includes \"proto/gone.h\", which does not exist",
                "common/tunnel/session.h: includes \"common/net/loop.h\" (files in",
                "edge/edge.h: includes \"origin/agent.h\" (files in",
                "origin/main.cc: includes \"common/store/memory_store.h\", which is internal"]
    ok = len(problems) == 4 and all(any(p.startswith(e) for p in problems) for e in expected)
    print("\n".join(problems))
    print("self-test " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    problems = check(root)
    for p in problems:
        print(p)
    print(f"include arrows: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
