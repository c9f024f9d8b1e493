"""Integration test: one round of chaos.py (issue #10): load through a real pair while the agent
is killed -9 and restarted, every tunnel is cut, bits are flipped on the link, the link is
throttled and the edge is killed -9 and restarted. No wrong body, no request past its deadline,
both daemons alive, and service back within a second of each fault ending.

    cd tests/integration && COILGUN_BUILD=... python3 -m unittest -v test_chaos
    python3 tests/integration/chaos.py --minutes 60     (the soak, with RSS every 10 s)
"""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from chaos import Chaos, Load, cycle  # noqa: E402


class TestChaos(unittest.TestCase):
    def test_one_round_of_every_fault_under_load(self):
        with harness.TempDir() as tmp:
            chaos = Chaos(tmp)
            try:
                load = Load(chaos.http_port)
                try:
                    harness.wait_until(lambda: load.ok >= 50, timeout=20, what="the load under way")
                    recovered = cycle(chaos, load)
                    time.sleep(1)  # Load after the last fault, not a wait for an event.
                finally:
                    load.finish()
                alive = {name: p.proc.poll() is None for name, p in (("edge", chaos.edge), ("origin", chaos.origin))}
            finally:
                chaos.stop()
            reports = [f"{p.name}:\n{r}" for p in (chaos.edge, chaos.origin) if (r := p.sanitizer_report())]
        print(f"chaos: ok {load.ok} failed {load.failed} wrong {load.wrong} late {load.late}; "
              f"back after {recovered}", file=sys.stderr)
        self.assertEqual(reports, [])
        self.assertEqual(load.wrong, 0, "a wrong body was served")
        self.assertEqual(load.late, 0, "a request outlived its deadline")
        self.assertEqual(alive, {"edge": True, "origin": True})
        slow = {name: t for name, t in recovered.items() if t is None or t > 1.0}
        self.assertEqual(slow, {}, "service not back within a second of a fault ending")


if __name__ == "__main__":
    unittest.main()
