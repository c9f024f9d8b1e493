#!/usr/bin/env bash
# The delta benchmark on the corpus: installs dependencies, builds the release configuration,
# and runs coilgun-bench-delta (every version of every series against its predecessor).
#
#   bash tests/bench/run-delta.sh [CORPUS_DIR] [coilgun-bench-delta options]
#
# CORPUS_DIR defaults to $COILGUN_CORPUS, else ../shared/corpus next to the checkout.
set -euo pipefail
cd "$(dirname "$0")/../.."

deploy/install-deps.sh
cmake --preset release
cmake --build --preset release --target coilgun-bench-delta

corpus="${COILGUN_CORPUS:-$(cd .. && pwd)/shared/corpus}"
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then corpus="$1"; shift; fi
exec build/release/tests/bench/coilgun-bench-delta "$corpus" "$@"
