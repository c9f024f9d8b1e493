#!/usr/bin/env bash
# Installs every Debian bookworm package Coilgun's build, tests and benchmarks need.
# Idempotent and non-interactive; runs as root or through sudo.
# Usage: deploy/install-deps.sh
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build pkg-config git ca-certificates
  # libraries
  libuv1-dev libzstd-dev libxxhash-dev libssl-dev node-llhttp catch2
  libtoml11-dev libcli11-dev nlohmann-json3-dev zlib1g-dev libmemcached-dev
  # fuzzing (libFuzzer ships in clang's runtime package)
  clang libclang-rt-14-dev
  # peers and tools used by tests and benchmarks
  openssl xdelta3 zstd gzip python3 nginx-light wrk memcached
  # memcached with SASL in the shared tier's tests: saslpasswd2 makes their password database
  sasl2-bin
  # the slow-link benchmark (network namespaces, sysctl) and profiles
  iproute2 procps linux-perf
  # the package: man pages from --help; its test: cpack's dependency scan, the units' checks,
  # the install's user and sandbox, the logrotate snippet
  help2man dpkg-dev systemd adduser util-linux sudo logrotate
  # the dashboard test: a real headless browser
  chromium chromium-driver
  # the WebSocket tests: a real client and server (Debian's python3)
  python3-websockets
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed'; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo" >&2; exit 1; }
  sudo_cmd=(sudo)
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
