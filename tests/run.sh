#!/bin/sh
# The whole test suite, as CI runs it (README: "run the tests"):
#  1. build with AddressSanitizer + UndefinedBehaviorSanitizer and run every
#     Criterion test and every fuzz-corpus replay under ctest;
#  2. build the libFuzzer harnesses with clang and run each one briefly.
# FUZZ_SECONDS (default 20) sets how long each fuzzer runs; 0 skips step 2.
set -eu
cd "$(dirname "$0")/.."
JOBS=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build-asan -DTVS_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-asan -j "$JOBS"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j "$JOBS"
if [ "${FUZZ_SECONDS:-20}" != 0 ]; then
  fuzz/run.sh "${FUZZ_SECONDS:-20}"
fi
echo "all tests passed"
