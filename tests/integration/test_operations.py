"""Running the daemons like a production service: the example configs, --print-config, config
errors naming file and line, SIGHUP reload (validated first, old kept on failure, tunnels
stay up), SIGUSR1 log reopening, the systemd notification protocol and the origin's bound on
connections in the TLS handshake. Real processes on 127.0.0.1, certificates made per test.

    COILGUN_BUILD=build/release python3 -m unittest -v test_operations
"""

import http.client
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import harness
from harness import get, metrics

DEPLOY = os.path.join(harness.ROOT, "deploy")


def toml_str(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


class OpsTestCase(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="coilgun-ops-")
        self.tmp = self._tmp.name
        self.procs = []

    def tearDown(self):
        for p in self.procs:
            p.stop()
        self._tmp.cleanup()

    def start(self, args, name, env=None):
        p = harness.Process(args, name, env=harness.merged_env(env))
        self.procs.append(p)
        return p

    def site_and_origin(self, certs):
        site = self.start([harness.binary("coilgun-sample-origin"), "--listen", "127.0.0.1:0"], "site")
        _, backend = site.address("origin")
        origin = self.start([harness.binary("coilgun-origin"), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                             "--backend", f"http://127.0.0.1:{backend}", "--workers", "1"] + certs.agent_flags(),
                            "origin")
        _, tunnel = origin.address("tunnel")
        return origin, tunnel

    def write_edge_config(self, path, certs, tunnel, hosts, edge="edge", extra=""):
        with open(path, "w") as f:
            f.write(f'listen = "127.0.0.1:0"\nadmin = "127.0.0.1:0"\nworkers = 1\n{extra}\n'
                    f'[tls]\nca = {toml_str(certs.path("ca.pem"))}\n'
                    f'cert = {toml_str(certs.path(f"edge-{edge}.pem"))}\n'
                    f'key = {toml_str(certs.path(f"edge-{edge}.key"))}\n\n'
                    f'[[route]]\nhosts = [{", ".join(toml_str(h) for h in hosts)}]\n'
                    f'agent = "127.0.0.1:{tunnel}"\n')


class TestConfigFiles(OpsTestCase):
    def test_the_example_configs_are_valid(self):
        certs = harness.Certs(os.path.join(self.tmp, "c"))
        for daemon, example, flags in (
                ("coilgun-origin", "coilgun-origin.toml", certs.agent_flags()),
                ("coilgun-edge", "coilgun-edge.toml", certs.edge_flags()),
                ("coilgun-origin", "fleet/origin-1.toml", certs.agent_flags()),
                ("coilgun-origin", "fleet/origin-2.toml", certs.agent_flags()),
                ("coilgun-edge", "fleet/edge-1.toml", certs.edge_flags()),
                ("coilgun-edge", "fleet/edge-2.toml", certs.edge_flags())):
            path = os.path.join(DEPLOY, example)
            # The example's certificate paths exist only once installed: point them here.
            r = subprocess.run([harness.binary(daemon), "-c", path, "--check"] + flags, capture_output=True)
            self.assertEqual(r.returncode, 0, r.stderr)
            printed = subprocess.run([harness.binary(daemon), "-c", path, "--print-config"], capture_output=True)
            self.assertEqual(printed.returncode, 0, printed.stderr)
            # What --print-config prints is itself a valid config file, saying the same.
            again_path = os.path.join(self.tmp, "again-" + example.replace("/", "-"))
            with open(again_path, "wb") as f:
                f.write(printed.stdout)
            again = subprocess.run([harness.binary(daemon), "-c", again_path, "--print-config"], capture_output=True)
            self.assertEqual(again.stdout, printed.stdout)
        edge = subprocess.run([harness.binary("coilgun-edge"), "-c", os.path.join(DEPLOY, "coilgun-edge.toml"),
                               "--print-config"], capture_output=True, text=True).stdout
        self.assertEqual(edge.count("[[route]]"), 2)  # Multi-host routing is in the example.
        self.assertIn('"*.static.example.com"', edge)

    def test_flags_and_environment_show_in_print_config(self):
        r = subprocess.run([harness.binary("coilgun-edge"), "-c", os.path.join(DEPLOY, "coilgun-edge.toml"),
                            "--print-config", "--listen", "127.0.0.1:18080"],
                           capture_output=True, text=True, env=harness.merged_env({"COILGUN_TUNNEL_CONNECTIONS": "5"}))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('listen = "127.0.0.1:18080"', r.stdout)
        self.assertIn("connections = 5", r.stdout)

    def test_unknown_keys_are_errors_naming_file_and_line(self):
        path = os.path.join(self.tmp, "edge.toml")
        with open(path, "w") as f:
            f.write('agent = "127.0.0.1:2408"\n\n[tunnel]\nconections = 3\n')
        r = subprocess.run([harness.binary("coilgun-edge"), "-c", path, "--check"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{path}:4", r.stderr)
        self.assertIn("conections", r.stderr)


    def test_small_cli_mistakes_get_one_clear_line(self):
        # Issue #14 (7): an unknown flag said the program's name twice; an unquoted string
        # gave only toml11's "unknown value appeared"; --check kept quiet about a misspelt
        # COILGUN_* variable that a start warns about.
        edge = harness.binary("coilgun-edge")
        r = subprocess.run([edge, "--bogus"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.count("coilgun-edge:"), 1, r.stderr)
        path = os.path.join(self.tmp, "auto.toml")
        with open(path, "w") as f:
            f.write('agent = "127.0.0.1:2408"\nworkers = auto\n')
        r = subprocess.run([edge, "-c", path, "--check"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{path}:2", r.stderr)
        self.assertIn('workers = "auto"', r.stderr)
        certs = harness.Certs(os.path.join(self.tmp, "c"))
        r = subprocess.run([edge, "--agent", "127.0.0.1:2408", "--check"] + certs.edge_flags(), capture_output=True,
                           text=True, env=harness.merged_env({"COILGUN_TUNNEL_CONECTIONS": "3"}))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("warning: unknown environment variable COILGUN_TUNNEL_CONECTIONS", r.stdout)
        self.assertIn("COILGUN_TUNNEL_CONNECTIONS", r.stdout)  # The suggestion.


class TestAddressInUse(OpsTestCase):
    """Issue #14 (1): a daemon refuses an address anything else holds, naming it and the OS's
    error; SO_REUSEPORT joins only the workers of one process."""

    def refused(self, args, address):
        """Runs a daemon that must refuse to start on |address|; returns its "cannot listen" record."""
        r = subprocess.run(args, capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1, r.stderr)
        records = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
        failed = [rec for rec in records if rec.get("msg") == "cannot listen"]
        self.assertEqual(len(failed), 1, r.stderr)
        self.assertEqual(failed[0]["address"], address, r.stderr)
        self.assertEqual(failed[0]["error"], "address already in use", r.stderr)
        self.assertNotIn("listening", [rec.get("msg") for rec in records if rec.get("role") == failed[0]["role"]])
        return failed[0]

    def test_a_second_copy_and_another_program_are_refused(self):
        certs = harness.Certs(os.path.join(self.tmp, "c"))
        edge_args = [harness.binary("coilgun-edge"), "--agent", "127.0.0.1:1", "--workers", "2"] + certs.edge_flags()
        first = self.start(edge_args + ["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"], "edge")
        _, port = first.address("http")
        _, admin = first.address("admin")
        self.assertEqual(len([r for r in first.records() if r.get("msg") == "listening" and r.get("role") == "http"]), 2)
        # A second copy on the same HTTP port (its own admin port), then on the same admin port.
        self.assertEqual(self.refused(edge_args + ["--listen", f"127.0.0.1:{port}", "--admin", "127.0.0.1:0"],
                                      f"127.0.0.1:{port}")["role"], "http")
        self.assertEqual(self.refused(edge_args + ["--listen", "127.0.0.1:0", "--admin", f"127.0.0.1:{admin}"],
                                      f"127.0.0.1:{admin}")["role"], "admin")
        # The first copy alone answers every connection.
        for _ in range(20):
            get(port, "/", timeout=10)
        self.assertEqual(metrics(admin)['coilgun_requests_total{code="5xx"}'], 20)  # No agent: 502s, all its own.
        # Another program, with or without SO_REUSEPORT: the agent refuses its address too.
        for reuse_port in (False, True):
            with socket.socket() as other:
                if reuse_port:
                    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                other.bind(("127.0.0.1", 0))
                other.listen()
                taken = other.getsockname()[1]
                self.assertEqual(self.refused([harness.binary("coilgun-origin"), "--listen", f"127.0.0.1:{taken}",
                                               "--admin", "127.0.0.1:0", "--backend", "http://127.0.0.1:1"]
                                              + certs.agent_flags(), f"127.0.0.1:{taken}")["role"], "tunnel")


class TestCerts(OpsTestCase):
    """coilgun-certs, the script a first install runs (issue #14, 6)."""

    def certs(self, *args):
        return subprocess.run([os.path.join(DEPLOY, "coilgun-certs"), "--dir", os.path.join(self.tmp, "c")]
                              + list(args), capture_output=True, text=True)

    def names(self):
        r = subprocess.run(["openssl", "x509", "-in", os.path.join(self.tmp, "c", "agent.pem"), "-noout",
                            "-ext", "subjectAltName"], capture_output=True, text=True, check=True)
        return set(re.findall(r"(?:DNS|IP Address):([^,\s]+)", r.stdout))

    def test_a_new_agent_name_is_not_claimed_for_a_kept_certificate(self):
        self.assertEqual(self.certs().returncode, 0)
        self.assertEqual(self.names(), {"127.0.0.1", "localhost"})
        r = self.certs("--agent", "agent.example", "--agent", "10.1.2.3")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("kept the existing", r.stderr)
        self.assertIn("agent.example 10.1.2.3", r.stderr)
        self.assertIn("--force", r.stderr)
        self.assertIn("agent certificate names: localhost 127.0.0.1", r.stdout)
        self.assertNotIn("--agent-name agent.example", r.stdout)
        self.assertEqual(self.names(), {"127.0.0.1", "localhost"})
        r = self.certs("--agent", "agent.example", "--agent", "10.1.2.3", "--force")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.names(), {"agent.example", "10.1.2.3"})
        self.assertIn("--agent-name agent.example", r.stdout)
        # Asking again for what it holds, or for nothing, keeps it quietly.
        self.assertEqual(self.certs("--agent", "agent.example").returncode, 0)
        self.assertEqual(self.certs().returncode, 0)

    def test_bad_option_values_get_one_clear_line(self):
        for args, says in ((["--days", "abc"], "--days must be a whole number"),
                           (["--days", "0"], "--days must be a whole number"),
                           (["--dir"], "--dir needs a value"),
                           (["--agent", "--edge", "x"], "--agent needs a value"),
                           (["--group", ""], "--group needs a value"),
                           (["--frobnicate"], "unknown argument --frobnicate")):
            r = subprocess.run([os.path.join(DEPLOY, "coilgun-certs")] + args, capture_output=True, text=True,
                               cwd=self.tmp)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            lines = r.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, (args, r.stderr))
            self.assertTrue(lines[0].startswith(f"coilgun-certs: {says}"), (args, r.stderr))
            self.assertFalse(os.path.exists(os.path.join(self.tmp, "coilgun-certs")), args)


class TestDemo(OpsTestCase):
    """deploy/demo.sh's last step (issue #14, 5): a corpus serves each version once, and without a
    terminal the demo says it stopped instead of printing addresses that are already dead."""

    def test_each_version_crosses_once_and_the_end_is_told(self):
        corpus = os.path.join(self.tmp, "corpus")
        series = {"short": 3, "long": 7}
        manifest = {"series": []}
        for name, count in series.items():
            os.makedirs(os.path.join(corpus, name))
            versions = []
            for v in range(count):
                body = "".join(f"<p>{name} item {i} of version {v if i % 9 == 0 else 0}</p>\n"
                               for i in range(200)).encode()
                with open(os.path.join(corpus, name, f"{v:03d}.html"), "wb") as f:
                    f.write(body)
                versions.append({"file": f"{v:03d}.html"})
            manifest["series"].append({"name": name, "content_type": "text/html", "versions": versions})
        with open(os.path.join(corpus, "manifest.json"), "w") as f:
            json.dump(manifest, f)
        r = subprocess.run([sys.executable, os.path.join(harness.ROOT, "tests", "integration", "demo.py"),
                            "--corpus", corpus], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                           timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        for name, count in series.items():
            row = re.search(rf"^{name}\s+(\d+)\s", r.stdout, re.M)
            self.assertIsNotNone(row, r.stdout)
            self.assertEqual(int(row.group(1)), count, r.stdout)
        counted = re.search(r"responses as deltas: (\d+), full: (\d+), streamed: (\d+)", r.stdout)
        self.assertEqual(sum(int(n) for n in counted.groups()), sum(series.values()), r.stdout)
        self.assertNotIn("the pair is running", r.stdout)
        self.assertNotIn("127.0.0.1:", r.stdout)  # No address that is no longer served.
        self.assertIn("the pair has stopped (no terminal", r.stdout)


class TestReload(OpsTestCase):
    def test_sighup_applies_routes_and_keeps_tunnels_up(self):
        certs = harness.Certs(os.path.join(self.tmp, "c"))
        _, tunnel = self.site_and_origin(certs)
        conf = os.path.join(self.tmp, "edge.toml")
        self.write_edge_config(conf, certs, tunnel, ["www.example.com"])
        edge = self.start([harness.binary("coilgun-edge"), "-c", conf], "edge")
        _, port = edge.address("http")
        _, admin = edge.address("admin")
        harness.wait_until(lambda: metrics(admin)["coilgun_tunnel_connections"] == 2, what="2 tunnels")
        self.assertEqual(get(port, "/", host="news.example.org")[0], 421)

        self.write_edge_config(conf, certs, tunnel, ["www.example.com", "news.example.org"])
        edge.signal(signal.SIGHUP)
        edge.wait_for(lambda r: r.get("msg") == "reloaded", what="reloaded")
        self.assertEqual(get(port, "/", host="news.example.org")[0], 200)
        self.assertEqual(metrics(admin)["coilgun_tunnel_connections"], 2)
        ups = [r for r in edge.records() if r.get("msg") == "tunnel up"]
        self.assertEqual(len(ups), 2)  # No tunnel was rebuilt.

        # A route to another agent: its tunnels come up with the reload, not with its first
        # request (which would find none and get a 502).
        _, tunnel2 = self.site_and_origin(certs)
        with open(conf, "a") as f:
            f.write(f'\n[[route]]\nhosts = ["api.example.net"]\nagent = "127.0.0.1:{tunnel2}"\n')
        edge.signal(signal.SIGHUP)
        harness.wait_until(lambda: metrics(admin)["coilgun_tunnel_connections"] == 4,
                           what="2 tunnels to the new agent, before any request for it")
        self.assertEqual(get(port, "/", host="api.example.net")[0], 200)

        # A broken file: the reload is refused, named, and the running config stays.
        with open(conf, "a") as f:
            f.write("\n[limits]\nrequest_timeut = \"5s\"\n")
        edge.signal(signal.SIGHUP)
        failed = edge.wait_for(lambda r: r.get("msg") == "reload: invalid configuration or certificates",
                               what="reload refused")
        self.assertIn("request_timeut", failed["error"])
        self.assertIn("edge.toml:", failed["error"])
        edge.wait_for(lambda r: r.get("msg") == "reload failed: keeping the running configuration",
                      what="keeping the old config")
        self.assertEqual(get(port, "/", host="news.example.org")[0], 200)

    def test_restart_only_keys_compare_against_the_running_process(self):
        # Issue #14 (7): a key that waits for a restart is named at every reload until the
        # restart, not only at the first; setting it back names nothing.
        certs = harness.Certs(os.path.join(self.tmp, "c"))
        conf = os.path.join(self.tmp, "edge.toml")
        self.write_edge_config(conf, certs, 1, ["www.example.com"])
        edge = self.start([harness.binary("coilgun-edge"), "-c", conf], "edge")
        edge.address("admin")

        def reload(workers, reloads):
            with open(conf) as f:
                text = re.sub(r"(?m)^workers = \d+$", f"workers = {workers}", f.read())
            with open(conf, "w") as f:
                f.write(text)
            edge.signal(signal.SIGHUP)
            harness.wait_until(lambda: sum(r.get("msg") == "reloaded" for r in edge.records()) == reloads,
                               what=f"reload {reloads}")
            return sum(r.get("msg") == "reload: this change applies after a restart" and r.get("key") == "workers"
                       for r in edge.records())

        self.assertEqual(reload(2, 1), 1)
        self.assertEqual(reload(2, 2), 2)  # Still not applied: said again.
        self.assertEqual(reload(1, 3), 2)  # Back to what runs: nothing to say.

    def test_sighup_and_sigusr1_during_start_up_never_kill_the_daemon(self):
        # The fresh-clone ASan run: a SIGHUP sent as the admin listener came up found no
        # watcher yet, and its default action ended the edge. logrotate's SIGUSR1 or systemd's
        # reload can come at any moment of a start just the same.
        certs = harness.Certs(os.path.join(self.tmp, "c"))
        for daemon, flags in (("coilgun-edge", ["--agent", "127.0.0.1:1"] + certs.edge_flags()),
                              ("coilgun-origin", ["--backend", "http://127.0.0.1:1"] + certs.agent_flags())):
            p = self.start([harness.binary(daemon), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                            "--workers", "2"] + flags, daemon)
            p.wait_for(lambda r: True, what="its first line")  # main() runs: the process is ours.
            deadline = time.monotonic() + 10
            while not any(r.get("msg") == "started" for r in p.records()):
                self.assertIsNone(p.proc.poll(), f"{daemon} died of a signal during start-up")
                self.assertLess(time.monotonic(), deadline, f"{daemon}: no 'started' line")
                for sig in (signal.SIGHUP, signal.SIGUSR1):
                    os.kill(p.proc.pid, sig)  # Not p.signal(): that waits for "started".
                time.sleep(0.001)  # Signals at a steady pace through the start, not an event.
            _, admin = p.address("admin")
            self.assertEqual(get(admin, "/healthz", host="127.0.0.1")[0], 200)
            self.assertIsNone(p.proc.poll())

    def test_a_backend_changed_to_https_waits_for_the_restart(self):
        # A review found the reload turning TLS on towards the http:// backend the agent still
        # dials (backend is restart-only): every request then failed.
        certs = harness.Certs(os.path.join(self.tmp, "c"))
        site = self.start([harness.binary("coilgun-sample-origin"), "--listen", "127.0.0.1:0"], "site")
        _, backend = site.address("origin")
        conf = os.path.join(self.tmp, "origin.toml")
        with open(conf, "w") as f:
            f.write(f'backend = "http://127.0.0.1:{backend}"\n')
        origin = self.start([harness.binary("coilgun-origin"), "-c", conf, "--listen", "127.0.0.1:0",
                             "--admin", "127.0.0.1:0", "--workers", "1"] + certs.agent_flags(), "origin")
        _, tunnel = origin.address("tunnel")
        edge_conf = os.path.join(self.tmp, "edge.toml")
        self.write_edge_config(edge_conf, certs, tunnel, ["www.example.com"])
        edge = self.start([harness.binary("coilgun-edge"), "-c", edge_conf], "edge")
        _, port = edge.address("http")
        self.assertEqual(get(port, "/")[0], 200)
        with open(conf, "w") as f:
            f.write(f'backend = "https://localhost:{backend}"\n[backend_tls]\nca = {toml_str(certs.path("ca.pem"))}\n')
        origin.signal(signal.SIGHUP)
        origin.wait_for(lambda r: r.get("msg") == "reload: this change applies after a restart"
                        and r.get("key") == "backend", what="the restart warning")
        origin.wait_for(lambda r: r.get("msg") == "reloaded", what="reloaded")
        for _ in range(3):
            self.assertEqual(get(port, "/")[0], 200)

    def test_sighup_reloads_certificates_and_refuses_a_bad_key(self):
        certs = harness.Certs(os.path.join(self.tmp, "c"), edges=("edge", "edge2"))
        origin, tunnel = self.site_and_origin(certs)
        conf = os.path.join(self.tmp, "edge.toml")
        self.write_edge_config(conf, certs, tunnel, ["www.example.com"])
        edge = self.start([harness.binary("coilgun-edge"), "-c", conf, "--log-level", "debug"], "edge")
        _, port = edge.address("http")
        origin.wait_for(lambda r: r.get("msg") == "tunnel up" and r.get("edge") == "CN=edge", what="CN=edge")
        # The edge's side is up once the agent's SETTINGS came, a moment after the agent's.
        edge.wait_for(lambda r: r.get("msg") == "tunnel up", what="the edge's tunnel up")

        # A key that does not match the certificate: refused before anything changes.
        with open(conf) as f:
            text = f.read()
        with open(conf, "w") as f:
            f.write(text.replace("edge-edge.key", "edge-edge2.key"))
        edge.signal(signal.SIGHUP)
        failed = edge.wait_for(lambda r: r.get("msg") == "reload: invalid configuration or certificates",
                               what="reload refused")
        self.assertIn("TLS", failed["error"])
        self.assertEqual(get(port, "/")[0], 200)

        # The second edge certificate: new tunnels present it, the live ones stay.
        self.write_edge_config(conf, certs, tunnel, ["www.example.com"], edge="edge2")
        edge.signal(signal.SIGHUP)
        edge.wait_for(lambda r: r.get("msg") == "reloaded", what="reloaded")
        self.assertEqual(get(port, "/")[0], 200)
        self.assertFalse(any(r.get("edge") == "CN=edge2" for r in origin.records()))
        origin.stop()  # The tunnels drop; the edge reconnects with what it now holds.
        origin2 = self.start([harness.binary("coilgun-origin"), "--listen", f"127.0.0.1:{tunnel}", "--admin",
                              "127.0.0.1:0", "--backend", origin.args[origin.args.index("--backend") + 1],
                              "--workers", "1"] + certs.agent_flags(), "origin2")
        origin2.wait_for(lambda r: r.get("msg") == "tunnel up" and r.get("edge") == "CN=edge2",
                         timeout=15, what="a tunnel from CN=edge2")


class TestLogFiles(OpsTestCase):
    def test_sigusr1_reopens_the_log_file(self):
        certs = harness.Certs(os.path.join(self.tmp, "c"))
        _, tunnel = self.site_and_origin(certs)
        log_path = os.path.join(self.tmp, "edge.log")
        conf = os.path.join(self.tmp, "edge.toml")
        port, admin = harness.free_port(), harness.free_port()
        self.write_edge_config(conf, certs, tunnel, ["www.example.com"])
        with open(conf) as f:
            text = f.read().replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"').replace(
                'admin = "127.0.0.1:0"', f'admin = "127.0.0.1:{admin}"')
        with open(conf, "w") as f:
            f.write(text + f"\n[log]\nfile = {toml_str(log_path)}\n")
        edge = self.start([harness.binary("coilgun-edge"), "-c", conf], "edge")

        def log_has(path, needle):
            return os.path.exists(path) and needle in open(path).read()

        harness.wait_until(lambda: log_has(log_path, '"tunnel up"'), what="the log file")
        harness.wait_until(lambda: log_has(log_path, '"started"'), what="signals watched")
        self.assertEqual(get(port, "/static/site.css")[0], 200)
        harness.wait_until(lambda: log_has(log_path, "/static/site.css"), what="an access line")
        os.rename(log_path, log_path + ".1")  # What logrotate does, then it signals.
        os.kill(edge.proc.pid, signal.SIGUSR1)  # Its "started" line is in the file, not on stderr.
        harness.wait_until(lambda: log_has(log_path, "log file reopened"), what="a new log file")
        self.assertEqual(get(port, "/api/headlines")[0], 200)
        harness.wait_until(lambda: log_has(log_path, "/api/headlines"), what="access line in the new file")
        self.assertNotIn("/api/headlines", open(log_path + ".1").read())
        self.assertEqual(edge.records(), [])  # Nothing on stderr once the file is set.


class TestSystemdNotify(OpsTestCase):
    def test_ready_status_reloading_stopping(self):
        certs = harness.Certs(os.path.join(self.tmp, "c"))
        _, tunnel = self.site_and_origin(certs)
        sock_path = os.path.join(self.tmp, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(sock_path)
        sock.settimeout(10)
        self.addCleanup(sock.close)
        conf = os.path.join(self.tmp, "edge.toml")
        self.write_edge_config(conf, certs, tunnel, ["www.example.com"])
        edge = self.start([harness.binary("coilgun-edge"), "-c", conf], "edge",
                          env={"NOTIFY_SOCKET": sock_path})

        def next_message(want):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                msg = dict(line.split("=", 1) for line in sock.recv(4096).decode().split("\n") if line)
                if want in msg:
                    return msg
            self.fail(f"no {want} from the daemon")

        ready = next_message("READY")
        self.assertEqual(ready["READY"], "1")
        self.assertIn("tunnel", ready["STATUS"])
        self.assertIn("link/body", ready["STATUS"])
        edge.signal(signal.SIGHUP)
        reloading = next_message("RELOADING")
        self.assertGreater(int(reloading["MONOTONIC_USEC"]), 0)
        self.assertEqual(next_message("READY")["READY"], "1")
        edge.signal(signal.SIGTERM)
        self.assertEqual(next_message("STOPPING")["STOPPING"], "1")
        self.assertEqual(edge.proc.wait(timeout=15), 0)


class TestDrain(OpsTestCase):
    def slow_request_in_flight(self, pair):
        result = {}

        def slow():
            try:
                result["status"] = get(pair.http_port, "/slow?ms=8000", timeout=15)[0]
            except (OSError, http.client.HTTPException) as e:
                result["error"] = e

        t = threading.Thread(target=slow)
        t.start()
        harness.wait_until(lambda: metrics(pair.edge_admin)["coilgun_exchanges_in_flight"] >= 1,
                           what="the request in flight")
        return t, result

    def test_the_drain_deadline_bounds_a_stuck_request(self):
        pair = harness.Pair(self.tmp, edge_env={"COILGUN_DRAIN_TIMEOUT": "500ms"})
        self.addCleanup(pair.stop)
        t, result = self.slow_request_in_flight(pair)
        t0 = time.monotonic()
        pair.edge.signal(signal.SIGTERM)
        pair.edge.wait_for(lambda r: r.get("msg") == "draining", what="draining")
        self.assertEqual(get(pair.edge_admin, "/ready", host="127.0.0.1")[0], 503)
        self.assertEqual(pair.edge.proc.wait(timeout=10), 0)
        self.assertLess(time.monotonic() - t0, 3.0)  # The deadline, not the 8 s request.
        pair.edge.wait_for(lambda r: r.get("msg") == "drain deadline passed: closing what is left",
                           what="the deadline log line")
        t.join(timeout=10)
        self.assertFalse(t.is_alive(), "the client is still waiting")
        # Cut: no response, or an error status, never the 200 of a finished request.
        self.assertTrue("error" in result or result.get("status", 0) >= 500, result)

    def test_a_second_signal_exits_at_once(self):
        pair = harness.Pair(self.tmp)
        self.addCleanup(pair.stop)
        t, _ = self.slow_request_in_flight(pair)
        t0 = time.monotonic()
        pair.edge.signal(signal.SIGTERM)
        pair.edge.wait_for(lambda r: r.get("msg") == "draining", what="draining")
        pair.edge.signal(signal.SIGINT)
        self.assertEqual(pair.edge.proc.wait(timeout=5), 1)
        self.assertLess(time.monotonic() - t0, 2.0)  # Not the 10 s drain, not the 8 s request.
        t.join(timeout=10)


class TestDocs(OpsTestCase):
    def test_the_metrics_reference_lists_every_metric(self):
        with open(os.path.join(DEPLOY, "METRICS.md")) as f:
            reference = f.read()
        pair = harness.Pair(self.tmp)
        self.addCleanup(pair.stop)
        get(pair.http_port, "/")
        names = set()
        for admin in (pair.edge_admin, pair.origin_admin):
            text = get(admin, "/metrics", host="127.0.0.1")[2].decode()
            names |= {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}
        self.assertGreaterEqual(len(names), 10)
        for name in sorted(names):
            self.assertIn(f"`{name}`", reference, f"{name} is not in deploy/METRICS.md")

    def test_every_error_reason_and_the_process_are_there_from_the_start(self):
        # Issue #14 ("Missing"): an alert on a rate needs the series before the first error;
        # build_info and the process's own figures, as every Prometheus exporter has them.
        with open(os.path.join(DEPLOY, "METRICS.md")) as f:
            row = next(line for line in f if line.startswith("| `coilgun_errors_total`"))
        edge_part, origin_part = row.split("Edge reasons:")[1].split("Origin reasons:")
        # A reason opens a list item: after "reasons:", a comma or a slash ("`no_host`/`bad_target`").
        item = re.compile(r"(?:^|[:,/]) ?`([a-z_]+)`")
        documented = {"edge": set(item.findall(edge_part)), "origin": set(item.findall(origin_part))}
        pair = harness.Pair(self.tmp)
        self.addCleanup(pair.stop)
        version = subprocess.run([harness.binary("coilgun-edge"), "--version"], capture_output=True,
                                 text=True).stdout.split()[-1]
        for role, admin in (("edge", pair.edge_admin), ("origin", pair.origin_admin)):
            m = metrics(admin)
            reasons = {k[len('coilgun_errors_total{reason="'):-2]: v for k, v in m.items()
                       if k.startswith("coilgun_errors_total{")}
            self.assertEqual(set(reasons), documented[role], role)
            self.assertEqual(set(reasons.values()), {0.0}, role)
            self.assertEqual(m[f'coilgun_build_info{{daemon="coilgun-{role}",version="{version}"}}'], 1.0)
            self.assertGreater(m["process_resident_memory_bytes"], 1 << 20)
            self.assertGreater(m["process_open_fds"], 3)
            self.assertGreaterEqual(m["process_cpu_seconds_total"], 0.0)
            self.assertGreater(m["process_max_fds"], m["process_open_fds"])
            self.assertLess(abs(m["process_start_time_seconds"] - time.time()), 600)
            # Bounded with thousands of agents: no per-agent series unless metrics.per_agent.
            self.assertEqual([k for k in m if k.startswith("coilgun_agent_")], [])


class TestContainers(OpsTestCase):
    """No container runtime runs here: the Dockerfiles are checked for what they promise, and
    their health check command is run against a real daemon."""

    def test_dockerfiles_run_non_root_on_bookworm_slim_with_a_working_health_check(self):
        pair = harness.Pair(self.tmp)
        self.addCleanup(pair.stop)
        # Each role's health check against that role's own admin listener.
        for role, default_admin, admin in (("origin", 9408, pair.origin_admin), ("edge", 9080, pair.edge_admin)):
            with open(os.path.join(DEPLOY, "docker", f"Dockerfile.{role}")) as f:
                text = f.read()
            final = text[text.rindex("\nFROM "):]
            self.assertTrue(final.startswith("\nFROM debian:bookworm-slim"))
            user = re.search(r"^USER (\S+)", final, re.M)
            self.assertIsNotNone(user)
            self.assertNotIn(user.group(1).split(":")[0], ("root", "0"))
            self.assertIn(f'"/usr/bin/coilgun-{role}"', final)
            check = json.loads(re.search(r"^\s*CMD (\[.*\])$", final, re.M).group(1))
            live = [a.replace(f"127.0.0.1:{default_admin}", f"127.0.0.1:{admin}") for a in check]
            self.assertEqual(subprocess.run(live, capture_output=True).returncode, 0)
            dead = [a.replace(f"127.0.0.1:{default_admin}", f"127.0.0.1:{harness.free_port()}") for a in check]
            self.assertNotEqual(subprocess.run(dead, capture_output=True).returncode, 0)


LIMITED = 'coilgun_errors_total{reason="tunnel_handshake_limit"}'
HANDSHAKE = 'coilgun_errors_total{reason="tunnel_handshake"}'
WARNING = "tunnel refused: too many connections in the TLS handshake"
# How early a timer may fire against the time measured here (the loop's clock is read once per
# turn), and how late a close may come on a loaded machine.
EARLY = 0.05
LATE = 2.0


def wait_closed(socks, timeout, count=None):
    """Waits until the peer has closed |count| (default: all) of |socks|, by EOF or reset, or
    |timeout| seconds pass. Returns {socket: time.monotonic() when its close was seen}. Fails if
    a peer sends anything: the origin has no reason to write to a client that said nothing."""
    want = len(socks) if count is None else count
    closed = {}
    deadline = time.monotonic() + timeout
    while len(closed) < want:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        readable, _, _ = select.select([s for s in socks if s not in closed], [], [], left)
        now = time.monotonic()
        for s in readable:
            try:
                data = s.recv(1)
            except ConnectionResetError:
                data = b""
            if data:
                raise AssertionError(f"the origin sent {data!r} to a client that never spoke TLS")
            closed[s] = now
    return closed


class TestHandshakeLimit(OpsTestCase):
    """[tunnel] max_pending_handshakes, max_pending_per_source and handshake_timeout on the
    origin: raw TCP connections that never speak TLS hold the slots; one more makes the oldest
    give way (closed at once and counted), one more from a source over its share is closed at
    once, the rest are closed when the handshake timeout passes, and real edges connect during
    and after a flood."""

    def connect(self, port):
        """A raw TCP connection to the tunnel port that sends nothing, and when it was made."""
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(s.close)
        return s, time.monotonic()

    def origin_alone(self, certs, workers, env=None, config=None):
        args = [harness.binary("coilgun-origin"), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                "--backend", "http://127.0.0.1:9", "--workers", str(workers)] + certs.agent_flags()
        origin = self.start(args + (["-c", config] if config else []), "origin", env=env)
        for w in range(workers):  # Every worker's listener, so connections can go to any.
            origin.wait_for(lambda r, w=w: r.get("msg") == "listening" and r.get("role") == "tunnel"
                            and r.get("worker") == w, what=f"worker {w} listening")
        _, port = origin.address("tunnel")
        _, admin = origin.address("admin")
        return origin, port, admin

    def test_the_oldest_gives_way_the_rest_time_out_and_edges_connect_after(self):
        timeout, limit = 1.0, 4
        pair = harness.Pair(self.tmp, origin_env={"COILGUN_TUNNEL_MAX_PENDING_HANDSHAKES": str(limit),
                                                  "COILGUN_TUNNEL_HANDSHAKE_TIMEOUT": f"{int(timeout * 1000)}ms"})
        self.addCleanup(pair.stop)
        port, admin = pair.tunnel_port, pair.origin_admin
        # The edge's tunnels are up (the agent finishes TLS 1.3 after the edge: wait for it too).
        # They hold no slot, so |limit| strays still fit.
        harness.wait_until(lambda: metrics(admin)["coilgun_tunnel_connections"] == 2, what="2 tunnels")
        before = metrics(admin)
        self.assertEqual(before.get(LIMITED, 0), 0)

        strays = [self.connect(port) for _ in range(limit)]
        # (a) Each newer connection makes the oldest pending one close at once: the four strays,
        # then the first two probes; the last four probes hold the slots.
        probes = [self.connect(port) for _ in range(6)]
        gone = [s for s, _ in strays] + [s for s, _ in probes[:2]]
        closed = wait_closed(gone, timeout=timeout / 2)
        self.assertEqual(len(closed), len(gone), "an old pending connection did not give way")
        span = max(closed.values()) - probes[0][1]
        harness.wait_until(lambda: metrics(admin).get(LIMITED, 0) == len(probes), what="6 give-ways counted")

        # (b) The last probes are closed once the handshake timeout has passed, not before.
        kept = probes[2:]
        closed = wait_closed([s for s, _ in kept], timeout=timeout + LATE)
        self.assertEqual(len(closed), len(kept), "a stray outlived the handshake timeout")
        for s, t in kept:
            self.assertGreaterEqual(closed[s] - t, timeout - EARLY)
            self.assertLess(closed[s] - t, timeout + LATE)
        harness.wait_until(lambda: metrics(admin).get(HANDSHAKE, 0) == before.get(HANDSHAKE, 0) + len(kept),
                           what="4 handshake timeouts counted")
        self.assertEqual(metrics(admin).get(LIMITED, 0), len(probes))
        # The timed-out strays are logged after the give-ways (the first of them at once, the
        # rest within the same second held back: failed handshakes are logged at most once a
        # second): once that line is read, so is every give-way warning. Those too come at most
        # one a second, the first one for the first give-way.
        harness.wait_until(lambda: any("timed out" in str(r.get("reason")) for r in pair.origin.records()),
                           what="the timed-out handshakes logged")
        timed_out = [r for r in pair.origin.records() if "timed out" in str(r.get("reason"))]
        self.assertEqual(len(timed_out), 1)
        self.assertEqual(timed_out[0].get("count"), 1)
        warnings = [r for r in pair.origin.records() if r.get("msg") == WARNING]
        self.assertGreaterEqual(len(warnings), 1)
        self.assertLessEqual(len(warnings), 1 + int(span))
        self.assertEqual(warnings[0]["refused"], 1)
        self.assertEqual(warnings[0]["max_pending_handshakes"], limit)
        self.assertLessEqual(sum(w["refused"] for w in warnings), len(probes))

        # (c) The tunnels that were up stayed up, and a new edge connects and serves.
        self.assertEqual(metrics(admin)["coilgun_tunnel_connections"], 2)
        self.assertEqual(get(pair.http_port, "/")[0], 200)
        edge2 = self.start([harness.binary("coilgun-edge"), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                            "--agent", f"127.0.0.1:{port}", "--workers", "1"] + pair.certs.edge_flags(), "edge2")
        _, http2 = edge2.address("http")
        edge2.wait_for(lambda r: r.get("msg") == "tunnel up", what="a tunnel from the new edge")
        self.assertEqual(get(http2, "/")[0], 200)
        harness.wait_until(lambda: metrics(admin)["coilgun_tunnel_connections"] == 4, what="4 tunnels")

    def test_one_source_cannot_take_every_slot(self):
        certs = harness.Certs(os.path.join(self.tmp, "c"))
        _, port, admin = self.origin_alone(certs, workers=1, env={
            "COILGUN_TUNNEL_MAX_PENDING_PER_SOURCE": "2", "COILGUN_TUNNEL_HANDSHAKE_TIMEOUT": "10s"})

        def from_source(ip):
            s = socket.socket()
            self.addCleanup(s.close)
            s.bind((ip, 0))
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
            return s
        mine = [from_source("127.0.0.2") for _ in range(2)]
        third = from_source("127.0.0.2")
        self.assertEqual(len(wait_closed([third], timeout=LATE)), 1, "a third from one source was kept")
        other = from_source("127.0.0.3")  # Another source still gets in.
        self.assertEqual(wait_closed(mine + [other], timeout=0.5), {})
        self.assertEqual(metrics(admin).get(LIMITED, 0), 1)

    def test_an_edge_gets_its_tunnels_through_a_flood_of_silent_connections(self):
        """400 silent connections from 100 addresses against 256 slots and a 10 s handshake
        timeout: the edge starts during the flood and has its tunnels within 5 s (it needed 38 s
        and more when new connections were refused until the strays timed out)."""
        pair = harness.Pair(self.tmp, origin_env={"COILGUN_TUNNEL_HANDSHAKE_TIMEOUT": "10s"})
        self.addCleanup(pair.stop)
        flood = []
        for i in range(400):
            s = socket.socket()
            self.addCleanup(s.close)
            s.bind((f"127.0.1.{1 + i % 100}", 0))
            s.connect(("127.0.0.1", pair.tunnel_port))
            flood.append(s)
        harness.wait_until(lambda: metrics(pair.origin_admin).get(LIMITED, 0) >= 400 - 256,
                           what="the flood over the limit")
        start = time.monotonic()
        edge2 = self.start([harness.binary("coilgun-edge"), "--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0",
                            "--agent", f"127.0.0.1:{pair.tunnel_port}", "--workers", "1"]
                           + pair.certs.edge_flags(), "edge2")
        _, admin2 = edge2.address("admin")
        harness.wait_until(lambda: metrics(admin2)["coilgun_tunnel_connections"] == 2, timeout=10,
                           what="the new edge's two tunnels")
        self.assertLess(time.monotonic() - start, 5)

    def test_the_limit_counts_the_connections_of_every_worker_together(self):
        certs = harness.Certs(os.path.join(self.tmp, "c"))
        # The kernel spreads connections over the workers' listeners (SO_REUSEPORT) by their
        # ports: with 24, both workers get some but for a chance of 2^-23.
        limit, total = 2, 24
        _, port, admin = self.origin_alone(certs, workers=2, env={
            "COILGUN_TUNNEL_MAX_PENDING_HANDSHAKES": str(limit), "COILGUN_TUNNEL_HANDSHAKE_TIMEOUT": "5s"})
        socks = [s for s, _ in (self.connect(port) for _ in range(total))]
        # Counted per worker, two workers would let in up to 2 x limit.
        harness.wait_until(lambda: metrics(admin).get(LIMITED, 0) >= total - limit, what="refusals counted")
        closed = wait_closed(socks, timeout=LATE, count=total - limit)
        self.assertEqual(len(closed), total - limit)
        still_open = [s for s in socks if s not in closed]
        self.assertEqual(select.select(still_open, [], [], 0)[0], [])  # In the handshake, silent.
        self.assertEqual(metrics(admin).get(LIMITED, 0), total - limit)

    def test_a_reload_applies_new_limits_to_new_connections(self):
        certs = harness.Certs(os.path.join(self.tmp, "c"))
        conf = os.path.join(self.tmp, "origin.toml")

        def write_config(limit, timeout):
            with open(conf, "w") as f:
                f.write(f'[tunnel]\nmax_pending_handshakes = {limit}\nhandshake_timeout = "{timeout}"\n')

        write_config(1, "5s")
        origin, port, admin = self.origin_alone(certs, workers=1, config=conf)
        old, _ = self.connect(port)
        probe, t_probe = self.connect(port)  # Over the limit of 1: |old| gives way at once.
        self.assertIn(old, wait_closed([old], timeout=LATE))
        self.assertLess(time.monotonic() - t_probe, 1.0)
        harness.wait_until(lambda: metrics(admin).get(LIMITED, 0) == 1, what="the give-way counted")

        write_config(3, "1s")
        origin.signal(signal.SIGHUP)
        origin.wait_for(lambda r: r.get("msg") == "reloaded", what="reloaded")
        self.assertFalse([r for r in origin.records() if r.get("msg") == "reload: this change applies after a restart"])
        new = [self.connect(port) for _ in range(2)]  # With |probe|: 3 pending, the new limit.

        # The new connections time out after the new 1 s; the one from before keeps its 5 s.
        closed = wait_closed([s for s, _ in new] + [probe], timeout=1.0 + LATE, count=2)
        self.assertNotIn(probe, closed)
        self.assertLess(time.monotonic() - t_probe, 5.0 - EARLY)
        for s, t in new:
            self.assertIn(s, closed)
            self.assertGreaterEqual(closed[s] - t, 1.0 - EARLY)
            self.assertLess(closed[s] - t, 1.0 + LATE)
        self.assertEqual(metrics(admin).get(LIMITED, 0), 1)

        # The new limit: with |probe| pending, two more fit and a third makes it give way.
        more = [self.connect(port) for _ in range(3)]
        self.assertIn(probe, wait_closed([probe], timeout=LATE))
        self.assertEqual(wait_closed([s for s, _ in more], timeout=0), {})
        harness.wait_until(lambda: metrics(admin).get(LIMITED, 0) == 2, what="the second give-way counted")


if __name__ == "__main__":
    unittest.main()
