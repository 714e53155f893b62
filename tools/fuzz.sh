#!/usr/bin/env bash
# Fuzzing (issue 10 §2, docs/reliability.md "Fuzzing"): installs clang and libFuzzer, builds the
# targets of fuzz/ into build-fuzz/ (ASan+UBSan, -DIARELAY_FUZZ=ON), replays their inputs in
# fuzz/regressions (each once failed its target) and runs each for SECONDS seconds (default
# 30). Seeds: tests/fixtures (wrapped as requests and feeds where needed) and fuzz/seeds; what
# the fuzzer finds is kept in build-fuzz/corpus/TARGET, failing inputs in
# build-fuzz/artifacts/TARGET. Exit 1 when a regression input fails or a target found a failing
# input.
#   tools/fuzz.sh [SECONDS] [TARGET...]     e.g. tools/fuzz.sh 30; tools/fuzz.sh 600 feed
# IARELAY_FUZZ_RUNS=N stops each target after N executions (or SECONDS, whichever comes first):
#   IARELAY_FUZZ_RUNS=10000000 tools/fuzz.sh 86400 feed     (a long run, docs/reliability.md)
# IARELAY_FUZZ_TIMEOUT=S: an input running longer than S seconds of wall time is a finding
# (default 25). libFuzzer measures wall time: a long run at `nice 19` beside other work can
# wait that long for a CPU, so long runs on a shared machine give 600.
# IARELAY_FUZZ_FAST=1 (long runs): ASan still checks every access, but records no allocation
# stacks (malloc_context_size=0), does not fill new memory (max_malloc_fill_size=0) and keeps
# 16 MiB of freed memory in quarantine instead of 256 MiB (fewer fresh pages to fault in);
# libFuzzer does not re-read its corpus directory every second (-reload=0). 1.2-2.4 times the
# executions per CPU second (docs/reliability.md); replay a finding without it for the full
# report: build-fuzz/bin/fuzz_TARGET INPUT.
# IARELAY_FUZZ_SANITIZE=undefined: the targets without ASan (UBSan only; build-fuzz-undefined/),
# 1.4-3.5 times the executions per second in the long runs; they miss memory errors that do not crash (docs/reliability.md).
# Run after tools/setup.sh (the project's other build dependencies), as CI does.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-30}"
shift || true
all_targets=(http_parser intake_request payload ia_format feed config cli_time cli_filter)
targets=("$@")
((${#targets[@]})) || targets=("${all_targets[@]}")

packages=(clang-14 libfuzzer-14-dev libclang-rt-14-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "fuzz: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

sanitize="${IARELAY_FUZZ_SANITIZE:-address,undefined}"
case $sanitize in
  address,undefined) build=build-fuzz ;;
  undefined) build=build-fuzz-undefined ;;
  *) echo "fuzz: IARELAY_FUZZ_SANITIZE must be address,undefined or undefined" >&2; exit 2 ;;
esac
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIARELAY_FUZZ=ON \
  -DIARELAY_FUZZ_SANITIZE="$sanitize" -DCMAKE_CXX_COMPILER=clang++-14 >/dev/null
# Only the fuzz targets: the rest of the tree is not built with libFuzzer's runtime.
cmake --build "$build" --target "${targets[@]/#/fuzz_}"

# Seeds from the test fixtures, shaped as each target reads its input.
fixtures=(tests/fixtures/xmatters/*.json)
seeds="$build/seeds"
rm -rf "$seeds"
for t in "${all_targets[@]}"; do mkdir -p "$seeds/$t"; done
for f in "${fixtures[@]}"; do
  name="$(basename "$f" .json)"
  len="$(stat -c %s "$f")"
  cp "$f" "$seeds/payload/$name"
  cp "$f" "$seeds/ia_format/$name"
  for t in http_parser intake_request; do
    {
      printf 'POST /v1/webhooks/hpnnmi?agent=ws-198%%2F10.2.0.121%%3A8081 HTTP/1.1\r\n'
      printf 'Host: relay\r\nContent-Type: application/json\r\nContent-Length: %s\r\n\r\n' "$len"
      cat "$f"
    } >"$seeds/$t/$name"
    {
      printf 'POST /v1/webhooks/applications|remedy HTTP/1.1\r\nHost: relay\r\n'
      printf 'Idempotency-Key: %s\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n' "$name" "$len"
      cat "$f"
      printf '\r\n0\r\n\r\n'
    } >"$seeds/$t/$name.chunked"
  done
  {
    printf '{"messages":[{"seq":17,"id":"01JD%s","service":"hpnnmi","agent":null,' "$name"
    printf '"type":"","received_at":"2026-11-29T14:39:31.123Z","payload":'
    cat "$f"
    printf '}],"next":17,"newest":20}'
  } >"$seeds/feed/$name"
  printf '%s\x1fhpnnmi\x1fws-198/10.2.0.121:8081\x1f\x1f' "$name" >"$seeds/feed/$name.rows"
  cat "$f" >>"$seeds/feed/$name.rows"
done
cp fuzz/seeds/http/* "$seeds/http_parser/"
cp fuzz/seeds/http/* "$seeds/intake_request/"
cp examples/iarelay.conf fuzz/seeds/config/* "$seeds/config/"
cp fuzz/seeds/cli_time/* "$seeds/cli_time/"
cp fuzz/seeds/cli_filter/* "$seeds/cli_filter/"

fast_asan=
fast_flags=()
if [[ ${IARELAY_FUZZ_FAST:-0} == 1 ]]; then
  fast_asan=:malloc_context_size=0:max_malloc_fill_size=0:quarantine_size_mb=16
  fast_flags=(-reload=0)
fi
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1$fast_asan}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
failed=()
# First the inputs of fuzz/regressions/TARGET-* for these targets (ctest label `fuzz`).
pattern="^fuzz_regression\\.($(IFS='|'; echo "${targets[*]}"))-"
if ! ctest --test-dir "$build" -L fuzz -R "$pattern" --output-on-failure \
  >"$build/regressions.log" 2>&1; then
  failed+=(regressions)
  tail -n 60 "$build/regressions.log"
fi
grep -E 'tests passed|tests failed' "$build/regressions.log" | sed 's/^/fuzz: regressions: /' ||
  true
for t in "${targets[@]}"; do
  mkdir -p "$build/corpus/$t" "$build/artifacts/$t"
  max_len=8192
  [[ $t == http_parser || $t == intake_request ]] && max_len=20000  # past the 16 KiB header limit
  echo "fuzz: $t for ${seconds}s"
  if ! "$build/bin/fuzz_$t" -max_total_time="$seconds" -runs="${IARELAY_FUZZ_RUNS:--1}" \
    -max_len="$max_len" -timeout="${IARELAY_FUZZ_TIMEOUT:-25}" \
    -print_final_stats=1 "${fast_flags[@]}" -artifact_prefix="$build/artifacts/$t/" \
    "$build/corpus/$t" "$seeds/$t" >"$build/artifacts/$t.log" 2>&1; then
    failed+=("$t")
    tail -n 60 "$build/artifacts/$t.log"
  fi
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)|cov: ' "$build/artifacts/$t.log" |
    tail -n 3 | sed "s/^/fuzz: $t: /"
done
if ((${#failed[@]})); then
  echo "fuzz: failing inputs found by: ${failed[*]} (see $build/artifacts/)"
  exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a finding"
