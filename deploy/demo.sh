#!/usr/bin/env bash
# The demo (README "Quick start"): installs dependencies, builds Coilgun, and runs the pair on
# loopback with a sample site, certificates made on the spot and traffic through the edge,
# then prints what crossed the tunnel and the admin URLs.
#
#   bash deploy/demo.sh [--requests N] [--corpus DIR] [--once]
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh
cmake --preset release
cmake --build --preset release --target coilgun-origin coilgun-edge coilgun-sample-origin
exec python3 tests/integration/demo.py "$@"
