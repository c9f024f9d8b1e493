#!/usr/bin/env bash
# Runs the package test in a private mount namespace (its overlays vanish with it), as root.
#   tests/package/run.sh BUILD_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export COILGUN_BUILD="$(cd "$1" && pwd)" PYTHONDONTWRITEBYTECODE=1
sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo -n --preserve-env=COILGUN_BUILD,PYTHONDONTWRITEBYTECODE)
cd "$here"
exec "${sudo[@]}" unshare --mount --propagation private python3 -m unittest -v test_package
