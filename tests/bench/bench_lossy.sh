#!/bin/bash
# Lossy task vectors: quality against size (run by hand, never in CI).
#
# For each fine-tune of ../shared/models (ft-math, ft-code, ft-math-lowlr),
# imported losslessly over base-v1 and then re-encoded with `tvs compress` at
# --bits 4 2 1 0.5 0.25 and --max-error 0.1 0.3 0.5: the stored size (every
# object the compressed model reaches that base-v1 does not: chunks with
# masks, scales and headers, tensor and model objects) as a share of the
# full BF16 model, and the task loss of `base-v1 + compressed delta`
# (materialized by tvs, scored by ../shared/models/eval.py), next to the
# uncompressed fine-tune, the base and a BitDelta-style baseline
# (tests/bench/bitdelta.py). kept = (loss(base) - loss) / (loss(base) - loss(ft)).
#
#   tests/bench/bench_lossy.sh
#
# Env: SCRATCH (default /tmp/tvs-bench-lossy), MODELS, BITS, ERRS, JOBS
# (parallel eval.py runs, default 2), KEEP=1. One eval.py run of one task
# takes ~2.5 CPU-minutes here, so the full table (~35 runs) takes ~45 min on
# two cores. Needs Debian's python3-torch (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
SHARED=$ROOT/../shared/models
SCRATCH=${SCRATCH:-/tmp/tvs-bench-lossy}
MODELS=${MODELS:-"ft-math ft-code ft-math-lowlr"}
BITS=${BITS:-"4 2 1 0.5 0.25"}
ERRS=${ERRS:-"0.1 0.3 0.5"}
JOBS=${JOBS:-2}
BUILD=$ROOT/build-rel
TVS=$BUILD/cli/tvs

if ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch python3-numpy >/dev/null
fi
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTVS_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j >/dev/null
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH/out"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$SCRATCH"' EXIT
export TVS_STORE=$SCRATCH/store
$TVS init "$TVS_STORE" >/dev/null
$TVS import "$SHARED/base-v1.safetensors" --as base-v1 >/dev/null

task_of() { case $1 in *code*) echo code ;; *) echo math ;; esac; }

# name -> file to evaluate, and its stored bytes
: > "$SCRATCH/list"
add() { echo "$1 $2 $3 $4" >> "$SCRATCH/list"; }   # model label file bytes
params=$(/usr/bin/python3 -c "
import json, struct
f = open('$SHARED/base-v1.safetensors', 'rb'); n = struct.unpack('<Q', f.read(8))[0]
h = json.loads(f.read(n)); h.pop('__metadata__', None)
import math; print(sum(math.prod(v['shape']) for v in h.values()))")
bf16=$((params * 2))

own_bytes() { $TVS stats --json | /usr/bin/python3 -c "
import json, sys
print([r for r in json.load(sys.stdin)['refs'] if r['name'] == '$1'][0]['own_bytes'])"; }

for m in $MODELS; do add "$m" base "$SHARED/base-v1.safetensors" $bf16; done
for m in $MODELS; do
  $TVS import "$SHARED/$m.safetensors" --base base-v1 --as "$m" >/dev/null
  add "$m" fine-tune "$SHARED/$m.safetensors" "$(own_bytes "$m")"
  b=$(/usr/bin/python3 tests/bench/bitdelta.py "$SHARED/base-v1.safetensors" \
      "$SHARED/$m.safetensors" "$SCRATCH/out/$m-bitdelta.safetensors")
  add "$m" BitDelta-baseline "$SCRATCH/out/$m-bitdelta.safetensors" "$b"
  for b in $BITS; do
    /usr/bin/time -f "%e s, %M KB peak" -o "$SCRATCH/time" \
      $TVS compress "$m" --as "$m-b$b" --bits "$b" >/dev/null
    echo "compress $m --bits $b: $(cat "$SCRATCH/time")" >&2
    $TVS materialize "base-v1 + $m-b$b" -o "$SCRATCH/out/$m-b$b.safetensors"
    add "$m" "--bits=$b" "$SCRATCH/out/$m-b$b.safetensors" "$(own_bytes "$m-b$b")"
  done
  for e in $ERRS; do
    $TVS compress "$m" --as "$m-e$e" --max-error "$e" >/dev/null
    $TVS materialize "base-v1 + $m-e$e" -o "$SCRATCH/out/$m-e$e.safetensors"
    add "$m" "--max-error=$e" "$SCRATCH/out/$m-e$e.safetensors" "$(own_bytes "$m-e$e")"
  done
done

# every (file, task) pair once, JOBS at a time
while read -r m _ f _; do echo "$f $(task_of "$m")"; done < "$SCRATCH/list" | sort -u \
  > "$SCRATCH/pairs"
echo "$(wc -l < "$SCRATCH/pairs") eval.py runs, $JOBS at a time" >&2
mkdir -p "$SCRATCH/loss"
xargs -P "$JOBS" -L 1 sh -c '/usr/bin/python3 "$0/eval.py" "$1" --tasks "$2" --threads 1 \
  > "$3/loss/$(basename "$1").$2"' "$SHARED" < <(sed "s|\$| $SCRATCH|" "$SCRATCH/pairs")

loss() { awk -v t="$2" '$1 == t {print $2}' "$SCRATCH/loss/$(basename "$1").$2"; }
printf "| model (task) | encoding | stored bytes | share of BF16 | 1/x | task loss | kept |\n"
printf "|---|---|--:|--:|--:|--:|--:|\n"
for m in $MODELS; do
  t=$(task_of "$m")
  lb=$(loss "$SHARED/base-v1.safetensors" "$t")
  lf=$(loss "$SHARED/$m.safetensors" "$t")
  awk -v m="$m" '$1 == m' "$SCRATCH/list" | while read -r _ label f bytes; do
    l=$(loss "$f" "$t")
    awk -v m="$m ($t)" -v lab="$label" -v b="$bytes" -v bf="$bf16" -v l="$l" -v lb="$lb" \
        -v lf="$lf" 'BEGIN { printf "| %s | %s | %d | %.4f | %.1f | %s | %.1f %% |\n",
        m, lab, b, b / bf, bf / b, l, 100 * (lb - l) / (lb - lf) }'
  done
done
