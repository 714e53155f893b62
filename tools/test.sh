#!/usr/bin/env bash
# Sets everything up (tools/setup.sh), then runs the whole test suite with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cd build
ctest --output-on-failure --timeout 600 -j 2 "$@"
