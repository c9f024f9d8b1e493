#!/usr/bin/env bash
# The test command (README "Quick start", and what .ci/run runs): installs the dependencies,
# builds the release and the asan (address + undefined behaviour sanitizer) configurations,
# runs every test in both, then runs each libFuzzer target for a short while.
#
#   bash tests/run.sh
#
# COILGUN_FUZZ_SECONDS (default 20) sets the time per fuzz target; 0 skips fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."

deploy/install-deps.sh

for preset in release asan; do
  echo "== $preset: configure, build, test"
  cmake --preset "$preset"
  cmake --build --preset "$preset"
  ctest --preset "$preset"
done

seconds="${COILGUN_FUZZ_SECONDS:-20}"
if [ "$seconds" -gt 0 ]; then
  echo "== fuzz: clang + libFuzzer, ${seconds}s per target"
  cmake --preset fuzz
  cmake --build --preset fuzz --target fuzzers
  for target in build/fuzz/tests/fuzz/*_fuzz; do
    name=$(basename "$target" _fuzz)
    work=$(mktemp -d)
    cp -r "tests/fuzz/corpus/$name/." "$work/"
    # New inputs go to a scratch copy; a crash leaves its input in build/fuzz and fails the run.
    "$target" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix="build/fuzz/$name-" "$work" 2>&1 | tail -n 2
    rm -rf "$work"
  done
fi
echo "== all tests passed"
