#!/usr/bin/env python3
"""Fails when a unittest class of tests/integration or tests/replay is not registered with
ctest in tests/CMakeLists.txt (coilgun_python_tests): such a class never runs in CI.

    python3 tests/check_registered.py
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DIRS = ("integration", "replay")
CLASS = re.compile(r"^class (Test\w+)\(", re.M)
CALL = re.compile(r"coilgun_python_tests\(\s*\"[^\"]*\"\s+(\w+)\s+(\w+)([^)]*)\)", re.S)


def registered():
    with open(os.path.join(HERE, "CMakeLists.txt")) as f:
        text = f.read()
    return {(d, m, c) for d, m, rest in CALL.findall(text) for c in rest.split()}


def defined():
    out = set()
    for d in DIRS:
        for name in sorted(os.listdir(os.path.join(HERE, d))):
            if name.startswith("test_") and name.endswith(".py"):
                with open(os.path.join(HERE, d, name)) as f:
                    out |= {(d, name[:-3], c) for c in CLASS.findall(f.read())}
    return out


def main():
    missing = sorted(defined() - registered())
    for d, m, c in missing:
        print(f"tests/{d}/{m}.py: {c} is not in a coilgun_python_tests() of tests/CMakeLists.txt")
    unknown = sorted(registered() - defined())
    for d, m, c in unknown:
        print(f"tests/CMakeLists.txt registers {d}/{m}.{c}, which does not exist")
    if not defined():
        print("no test classes found: the checker is broken")
        return 1
    return 1 if missing or unknown else 0


if __name__ == "__main__":
    sys.exit(main())
