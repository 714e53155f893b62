#!/usr/bin/env bash
# Builds the whole project with sanitizers into its own directory and runs the whole ctest suite
# there (every test binary and every daemon, sink and CLI they start is instrumented).
# Usage: tools/sanitize.sh [address,undefined|thread] [ctest arguments...]
#   tools/sanitize.sh            # ASan + UBSan: every test binary, the whole suite (CI)
#   tools/sanitize.sh thread     # TSan: the journal, intake and dispatch tests only (CI), the
#                                # ones labelled `threaded` (the writer, listener, poller and
#                                # dispatcher threads), with the programs they start
# Sets everything up first (tools/setup.sh installs the packages and builds build/). The
# benchmarks are not built here (-DIARELAY_BENCH=OFF): no test runs them. Line tables only
# (-g1): a report's stack still names each file and line, and the build takes less time. -O1,
# as ASan's documentation advises: GCC compiles the Beast listener with ASan+UBSan in 141 s at
# -O1 against 204 s at -O2 (37 s without sanitizers), and the builds, not the tests, fill CI.
set -euo pipefail
cd "$(dirname "$0")/.."
sanitizers=${1:-address,undefined}
shift || true
tools/setup.sh >/dev/null
dir=build-${sanitizers//,/-}
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
  -DIARELAY_SANITIZE="$sanitizers" -DIARELAY_BENCH=OFF >/dev/null
if [[ $sanitizers == thread ]]; then
  cmake --build "$dir" --target journal_tests intake_unit_tests intake_integration_tests \
    dispatch_unit_tests dispatch_integration_tests
  set -- -L threaded "$@"
else
  cmake --build "$dir"
fi
# Any report fails the test that caused it: UBSan stops at its first finding (it only prints by
# default); ASan's leak check runs at exit. verify_asan_link_order=0: the fault tests preload
# their own shims (tests/support/fail_sync.cpp, tests/powerloss) ahead of the ASan runtime,
# which is harmless for these shims (they only wrap fsync/write calls).
# The power-loss harness checks 50 crash points here (200 in the plain suite, tools/test.sh):
# under ASan every process it starts runs several times slower, and what this run adds is the
# sanitizers' view of the same code paths, which 50 points cover.
export IARELAY_POWERLOSS_POINTS=${IARELAY_POWERLOSS_POINTS:-50}
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=1
export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1
if [[ $sanitizers == thread ]]; then
  # Reports inside the uninstrumented libcpp-httplib.so (test stand-ins only): each line of
  # tools/tsan.supp says why it is not a race. TSAN_OPTIONS reaches every program a test starts.
  TSAN_OPTIONS+=:suppressions=$PWD/tools/tsan.supp
fi
cd "$dir"
# The package test builds and installs a .deb with dpkg (120 s under ASan, its slowest test):
# what it checks is the packaging, which the plain suite covers.
ctest --output-on-failure --timeout 900 -j 2 -E '^Packaging\.' "$@"
