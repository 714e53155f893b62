#!/usr/bin/env bash
# The long run of the reliability scenarios (issue 10 §4; docs/reliability.md, "Load, faults and
# bad input: the figures"): builds reliability_tests and the programs it starts, runs every
# scenario at the long sizes below and prints the RESULT lines the table's figures come from.
# Any IARELAY_RELIABILITY_* variable set in the environment wins over the size below. The
# disk-full scenario mounts a tmpfs, so it needs root (without root it is skipped, and says so).
#   tools/reliability.sh                          # after tools/setup.sh; builds into build/
#   BUILD_DIR=build-rel JOBS=2 tools/reliability.sh
#   IARELAY_RELIABILITY_KILLS=100 tools/reliability.sh Sigkill.*   # one scenario (gtest filter)
# The full log is kept in BUILD_DIR/reliability.log. Exit status: the test binary's.
set -euo pipefail
cd "$(dirname "$0")/.."

build="${BUILD_DIR:-build}"
if [[ ! -f "$build/build.ninja" ]]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
fi
cmake --build "$build" ${JOBS:+-j "$JOBS"} \
  --target reliability_tests iarelayd iarelay-sink iarelay-loadgen

export IARELAY_RELIABILITY_KILLS="${IARELAY_RELIABILITY_KILLS:-25}"          # SIGKILLs
export IARELAY_RELIABILITY_RATE="${IARELAY_RELIABILITY_RATE:-500}"           # webhooks/s meanwhile
export IARELAY_RELIABILITY_DISK_CYCLES="${IARELAY_RELIABILITY_DISK_CYCLES:-3}"  # fill and free
export IARELAY_RELIABILITY_DISK_MIB="${IARELAY_RELIABILITY_DISK_MIB:-128}"    # the tmpfs's size
export IARELAY_RELIABILITY_DISK_FULL_SECONDS="${IARELAY_RELIABILITY_DISK_FULL_SECONDS:-10}"
export IARELAY_RELIABILITY_HANG_SECONDS="${IARELAY_RELIABILITY_HANG_SECONDS:-60}"
export IARELAY_RELIABILITY_QUEUED="${IARELAY_RELIABILITY_QUEUED:-100000}"    # queued while down
export IARELAY_RELIABILITY_DOWN_SECONDS="${IARELAY_RELIABILITY_DOWN_SECONDS:-120}"  # then still down

filter="${1:-*}"
log="$build/reliability.log"
env | grep '^IARELAY_RELIABILITY_' | sort
start=$(date +%s)
status=0
"$build/bin/reliability_tests" --gtest_filter="$filter" 2>&1 | tee "$log" || status=$?
echo
echo "reliability: $(($(date +%s) - start)) s, $(date -u +%Y-%m-%d), exit $status"
grep -E '^RESULT|SKIPPED|FAILED' "$log" || true
exit "$status"
