"""The integration tests' harness: coilgun_replay.launch (shared with coilgun-replay), plus a
pair whose backend is the sample origin (tests/fixtures)."""

import os
import shutil
import socket
import subprocess
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


class Nginx:
    """A stock nginx (Debian's) on a free loopback port, running |server| (the body of one
    server {} block, which must listen on {port}) with its files under |tmp|; stop() ends it."""

    BINARY = shutil.which("nginx") or "/usr/sbin/nginx"

    def __init__(self, tmp, server):
        self.port = free_port()
        conf = os.path.join(tmp, "nginx.conf")
        user = "user root;" if os.geteuid() == 0 else ""
        with open(conf, "w") as f:
            f.write(f"""
worker_processes 1; daemon off; {user}
pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body; proxy_temp_path {tmp}/proxy;
  fastcgi_temp_path {tmp}/fcgi; uwsgi_temp_path {tmp}/uwsgi; scgi_temp_path {tmp}/scgi;
  default_type application/octet-stream;
  server {{ {server.format(port=self.port)} }}
}}
""")
        self.proc = subprocess.Popen([self.BINARY, "-p", tmp, "-c", conf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(self._up, what=f"nginx on port {self.port}")
        except BaseException:
            self.stop()
            raise

    def _up(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(timeout=10)
