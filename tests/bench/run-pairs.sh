#!/usr/bin/env bash
# Coilgun against the nginx pair, side by side (issue #5): installs dependencies (nginx, wrk),
# builds the release configuration and runs tests/bench/bench_pairs.py: throughput and latency
# at 10/100/400 KB, the corpus over emulated slow links (needs root: network namespaces and TUN
# devices), memory. About 25 minutes. --sections fleet: 4 edges, 2 agents, 2 memcached
# (tests/bench/fleet.py). --sections many-origins: one agent, one edge with N routes to distinct
# addresses (tests/bench/many_origins.py; --many-counts 100,1000,5000 --many-requests).
#
#   bash tests/bench/run-pairs.sh [bench_pairs.py options, e.g. --json or --sections memory]
#
# The corpus (for the page template and the slow-link section) is $COILGUN_CORPUS, else
# ../shared/corpus next to the checkout.
set -euo pipefail
cd "$(dirname "$0")/../.."

deploy/install-deps.sh
cmake --preset release
cmake --build --preset release
export COILGUN_CORPUS="${COILGUN_CORPUS:-$(cd .. && pwd)/shared/corpus}"
exec python3 tests/bench/bench_pairs.py "$@"
