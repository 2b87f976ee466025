#!/bin/sh
# Build the libFuzzer harnesses (clang, ASan + UBSan) and run each one for
# SECONDS (default 20), one after another, on a temporary copy of its seed
# corpus so the committed corpus is never modified.
#
#   fuzz/run.sh [SECONDS]
#
# Environment: BUILD_DIR (default <repo>/build-fuzz), CC (default clang),
# FUZZ_ARTIFACTS (where crash/leak/timeout/oom inputs go; default a new
# temporary directory, kept only if something was found), FUZZ_TARGETS
# (default: all). Exits 1 if any target finds a crash, printing the
# reproducer path; replay one with build-fuzz/fuzz/fuzz_<target> FILE.
set -eu

secs=${1:-20}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD_DIR:-$root/build-fuzz}
targets=${FUZZ_TARGETS:-"st_header object_decode chunk_roundtrip delta_roundtrip query_parse lossy_decode lora_config"}
jobs=$(nproc 2>/dev/null || echo 2)

CC=${CC:-clang} cmake -S "$root" -B "$build" -DTVS_FUZZ=ON -DTVS_TESTS=ON >/dev/null
cmake --build "$build" -j"$jobs" --target $(for t in $targets; do printf 'fuzz_%s ' "$t"; done)

work=$(mktemp -d "${TMPDIR:-/tmp}/tvs-fuzz.XXXXXX")
artifacts=${FUZZ_ARTIFACTS:-$work/artifacts}
mkdir -p "$artifacts"
trap 'rm -rf "$work/corpus"' EXIT

# Abort on the first UBSan report (the root builds UBSan in recover mode
# under TVS_FUZZ), with a stack; ASan leaks fail the run too.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}

failed=0
for t in $targets; do
    corpus=$work/corpus/$t
    mkdir -p "$corpus"
    cp -R "$root/fuzz/corpus/$t/." "$corpus/"
    echo "== fuzz_$t: ${secs}s on a copy of fuzz/corpus/$t"
    set +e
    "$build/fuzz/fuzz_$t" "$corpus" -max_total_time="$secs" -max_len=65536 \
        -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$artifacts/$t-" 2>"$work/$t.log"
    rc=$?
    set -e
    grep -E '^(#[0-9]+[[:space:]]+DONE|stat::number_of_executed_units|stat::average_exec_per_sec|Done )' \
        "$work/$t.log" || true
    found=$(ls "$artifacts" 2>/dev/null | grep "^$t-" || true)
    if [ "$rc" -ne 0 ] || [ -n "$found" ]; then
        failed=1
        echo "!! fuzz_$t failed (exit $rc); log: $work/$t.log"
        grep -E 'ERROR|SUMMARY|invariant failed|runtime error' "$work/$t.log" | head -20 || true
        grep -E '^ +#[0-9]+ 0x' "$work/$t.log" | head -15 || true
        for f in $found; do
            echo "!! reproducer: $artifacts/$f"
        done
    fi
done

if [ "$failed" -ne 0 ]; then
    echo "fuzzing found a problem; artifacts and logs kept in $work" >&2
    exit 1
fi
rm -rf "$work"
echo "all fuzz targets ran ${secs}s without a finding"
