"""The integration tests' harness: coilgun_replay.launch (shared with coilgun-replay), plus a
pair whose backend is the sample origin (tests/fixtures)."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "replay"))

from coilgun_replay import launch  # noqa: E402
from coilgun_replay.launch import (ROOT, Certs, Memcached, Process, TempDir, binary, free_port, get,  # noqa: E402,F401
                                   merged_env, metrics, recv_some, wait_until)


class Pair(launch.Pair):
    """The sample origin (its news site, or |corpus| one version per request), an agent and an
    edge on loopback, with fresh certificates."""

    def __init__(self, tmp, corpus=None, **kw):
        args = [binary("coilgun-sample-origin"), "--listen", "127.0.0.1:0"]
        if corpus:
            args += ["--corpus", corpus]
        super().__init__(tmp, backend_args=args, **kw)
