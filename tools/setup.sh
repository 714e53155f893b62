#!/usr/bin/env bash
# Installs the Debian 12 packages iarelay needs to build, test, benchmark and package, then
# configures and builds into build/. Idempotent: when everything is present it only builds.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build pkg-config ccache
  libsqlitecpp-dev libsqlite3-dev sqlite3 libcurl4-openssl-dev curl
  nlohmann-json3-dev libboost-program-options-dev libgtest-dev
  libcpp-httplib-dev libspdlog-dev libfmt-dev libssl-dev
  nginx-light wrk python3 procps dpkg-dev file systemd nodejs node-acorn rhino
  postgresql libpq-dev
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build
