"""The Debian package, installed for real: cpack -G DEB builds it; dpkg installs it on this
machine inside a private mount namespace whose /usr, /etc and /var are overlays, so the
install is real (maintainer scripts, the system user, conffiles) and vanishes with the test.
Then the installed units pass `systemd-analyze verify`, and each unit's ExecStartPre and
ExecStart run as the unit would run them (as user coilgun, with $NOTIFY_SOCKET) against
certificates made by the installed coilgun-certs: both daemons report READY and serve.

systemd itself is not PID 1 here, so the units' sandboxing is checked by `verify`, not
exercised. Needs root (run.sh uses sudo -n otherwise) and overlayfs.

    tests/package/run.sh build/release
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "replay"))
from coilgun_replay import launch  # noqa: E402

BUILD = os.environ["COILGUN_BUILD"]


def sh(*args, **kw):
    return subprocess.run(args, capture_output=True, text=True, **kw)


class TestDebianPackage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="coilgun-deb-")
        os.chmod(cls.tmp, 0o711)  # The daemons (user coilgun) reach their notify sockets here.
        r = sh("cpack", "-G", "DEB", "-B", cls.tmp, cwd=BUILD)
        assert r.returncode == 0, r.stdout + r.stderr
        cls.deb = next(os.path.join(cls.tmp, f) for f in os.listdir(cls.tmp) if f.endswith(".deb"))
        # This process runs in its own mount namespace (run.sh): these mounts are ours alone.
        for d in ("usr", "etc", "var"):
            upper, work = os.path.join(cls.tmp, d + "-up"), os.path.join(cls.tmp, d + "-work")
            os.makedirs(upper)
            os.makedirs(work)
            r = sh("mount", "-t", "overlay", "overlay", "-o",
                   f"lowerdir=/{d},upperdir={upper},workdir={work}", f"/{d}")
            assert r.returncode == 0, r.stderr
        cls.install = sh("dpkg", "-i", cls.deb)

    @classmethod
    def tearDownClass(cls):
        for d in ("var", "etc", "usr"):
            sh("umount", "-l", f"/{d}")
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_it_installs_with_user_conffiles_and_units(self):
        self.assertEqual(self.install.returncode, 0, self.install.stdout + self.install.stderr)
        self.assertIn("coilgun-certs --dir /etc/coilgun/certs", self.install.stdout)
        self.assertEqual(sh("getent", "passwd", "coilgun").returncode, 0)
        conffiles = sh("dpkg-query", "-W", "-f=${Conffiles}", "coilgun").stdout
        self.assertIn("/etc/coilgun/origin.toml", conffiles)
        self.assertIn("/etc/coilgun/edge.toml", conffiles)
        for f in ("/usr/bin/coilgun-origin", "/usr/bin/coilgun-edge", "/usr/bin/coilgun-replay",
                  "/usr/bin/coilgun-certs", "/usr/lib/coilgun/coilgun-replay-origin"):
            self.assertTrue(os.access(f, os.X_OK), f)
        st = os.stat("/etc/coilgun/certs")
        self.assertEqual(oct(st.st_mode & 0o777), "0o750")
        units = ["/usr/lib/systemd/system/coilgun-origin.service", "/usr/lib/systemd/system/coilgun-edge.service"]
        r = sh("systemd-analyze", "verify", *units)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr.strip(), "")  # Clean: not even a warning.
        self.assertIn("usage: coilgun-replay", sh("/usr/bin/coilgun-replay", "--help").stdout)

    def test_man_pages_copyright_and_logrotate(self):
        # Issue #14 ("Packaging").
        self.assertEqual(self.install.returncode, 0, self.install.stderr)
        for program in ("coilgun-origin", "coilgun-edge", "coilgun-certs", "coilgun-replay"):
            page = sh("zcat", f"/usr/share/man/man1/{program}.1.gz").stdout
            self.assertIn(f".TH {program.upper()} \"1\"", page)
            self.assertIn("\\-\\-", page)  # Its options, from --help.
        with open("/usr/share/doc/coilgun/copyright") as f:
            self.assertIn("License: Expat", f.read())
        self.assertIn("/etc/logrotate.d/coilgun", sh("dpkg-query", "-W", "-f=${Conffiles}", "coilgun").stdout)
        r = sh("logrotate", "--debug", "/etc/logrotate.d/coilgun")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("/var/log/coilgun/*.log", r.stderr)
        self.assertNotIn("error", r.stderr.lower())

    def test_the_units_start_as_the_coilgun_user(self):
        self.assertEqual(self.install.returncode, 0, self.install.stderr)
        r = sh("coilgun-certs", "--dir", "/etc/coilgun/certs", "--group", "coilgun",
               "--agent", "127.0.0.1", "--edge", "edge1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("/etc/coilgun/certs/ca.pem", r.stdout)
        site = launch.Process([os.path.join(BUILD, "tests/fixtures/coilgun-sample-origin"), "--listen", "127.0.0.1:0"])
        self.addCleanup(site.stop)
        _, backend = site.address("origin")
        # What an operator edits in the installed configs.
        edit("/etc/coilgun/origin.toml", {"listen": "127.0.0.1:0", "admin": "127.0.0.1:0",
                                          "backend": f"http://127.0.0.1:{backend}"})
        origin = self.start_unit("coilgun-origin")
        _, tunnel = origin.address("tunnel")
        edit("/etc/coilgun/edge.toml", {"listen": "127.0.0.1:0", "admin": "127.0.0.1:0",
                                        "agent": f"127.0.0.1:{tunnel}", "cert": "/etc/coilgun/certs/edge-edge1.pem",
                                        "key": "/etc/coilgun/certs/edge-edge1.key"}, drop_routes=True)
        edge = self.start_unit("coilgun-edge")
        _, port = edge.address("http")
        _, admin = edge.address("admin")
        # READY means started; /ready says a tunnel is up (what a load balancer checks).
        launch.wait_until(lambda: launch.get(admin, "/ready", host="127.0.0.1")[0] == 200,
                          what="the edge's tunnel")
        status, _, body = launch.get(port, "/api/headlines")
        self.assertEqual(status, 200)
        self.assertTrue(body.startswith(b"{") and b"\"stories\"" in body, body[:200])
        for p in (edge, origin):
            self.assertEqual(p.stop(), 0)

    def start_unit(self, name):
        """Runs the unit's ExecStartPre and ExecStart as the unit would (User=coilgun,
        Type=notify) and waits for READY=1."""
        with open(f"/usr/lib/systemd/system/{name}.service") as f:
            unit = f.read()
        self.assertIn("User=coilgun", unit)
        self.assertIn("Type=notify", unit)
        as_user = ["setpriv", "--reuid=coilgun", "--regid=coilgun", "--init-groups"]
        pre = re.search(r"^ExecStartPre=(.*)$", unit, re.M).group(1).split()
        r = sh(*as_user, *pre)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        notify_path = os.path.join(self.tmp, name + ".notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(notify_path)
        os.chmod(notify_path, 0o777)  # The daemon runs as coilgun.
        sock.settimeout(10)
        self.addCleanup(sock.close)
        start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).split()
        p = launch.Process(as_user + start, name, env=dict(os.environ, NOTIFY_SOCKET=notify_path))
        self.addCleanup(p.stop)
        try:
            self.assertIn("READY=1", sock.recv(4096).decode())
        except socket.timeout:
            self.fail(f"{name} sent no READY=1; its log:\n{p.tail()}")
        return p


def edit(path, values, drop_routes=False):
    """Sets top-level and [tls] keys of an installed TOML config (the line 'key = ...')."""
    with open(path) as f:
        text = f.read()
    if drop_routes:
        text = re.sub(r"\[\[route\]\]\n(?:[^\[\n].*\n|\n)*", "", text)
    for key, value in values.items():
        text, n = re.subn(rf"^{key} = .*$", f"{key} = {json.dumps(value)}", text, count=1, flags=re.M)
        assert n == 1, key
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    unittest.main()
