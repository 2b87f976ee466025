#!/bin/bash
# Query benchmark (run by hand, never in CI): throughput of `base + delta`
# and of a 3-way TIES merge on a generated model, in GB/s of output, next to
# memcpy of the same bytes and a PyTorch script doing the same merge, all in
# one run; and peak anonymous memory (RssAnon: mapped store pages are page
# cache, not the process's own) of a materialization with two deltas.
#
#   tests/bench/bench_query.sh            (SIZE=4g by default; THREADS=2)
#
# Env: SCRATCH (default /tmp/tvs-bench-query), SIZE, KEEP=1, SKIP_TORCH=1.
# Needs Debian's python3-torch for the PyTorch column (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
SCRATCH=${SCRATCH:-/tmp/tvs-bench-query}
SIZE=${SIZE:-4g}
THREADS=${THREADS:-$(nproc)}
BUILD=$ROOT/build-rel
TVS=$BUILD/cli/tvs

if [ "${SKIP_TORCH:-0}" != 1 ] && ! /usr/bin/python3 -c 'import torch' 2>/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-torch python3-numpy >/dev/null
fi
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTVS_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j >/dev/null
mkdir -p "$SCRATCH"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$SCRATCH"' EXIT
cc -O2 -o "$SCRATCH/gen_model" tests/bench/gen_model.c -lm
cc -O2 -o "$SCRATCH/memcpy_speed" tests/bench/memcpy_speed.c

now() { date +%s.%N; }
gbps() { echo "scale=3; $1 / ($3 - $2) / 1000000000" | bc; }

# Peak RssAnon (kB) of a command, sampled every 10 ms.
peak_anon() {
  "$@" &
  local pid=$! peak=0 v
  while kill -0 $pid 2>/dev/null; do
    v=$(awk '/^RssAnon:/ {print $2}' /proc/$pid/status 2>/dev/null || echo 0)
    [ -n "$v" ] && [ "$v" -gt "$peak" ] && peak=$v
    sleep 0.01
  done
  wait $pid
  echo "$peak"
}

M=$SCRATCH/models
mkdir -p "$M"
[ -f "$M/base.safetensors" ] || "$SCRATCH/gen_model" "$M/base.safetensors" --bytes "$SIZE" --seed 1
for i in 1 2 3; do
  [ -f "$M/ft$i.safetensors" ] ||
    "$SCRATCH/gen_model" "$M/ft$i.safetensors" --delta-of "$M/base.safetensors" \
      --scale 1e-2 --frac 0.7 --seed $((i + 1))
done
BYTES=$(stat -c %s "$M/base.safetensors")

export TVS_STORE=$SCRATCH/store
if [ ! -d "$TVS_STORE/.tvs" ]; then
  "$TVS" init "$TVS_STORE" >/dev/null
  "$TVS" import "$M/base.safetensors" --as base >/dev/null
  for i in 1 2 3; do "$TVS" import "$M/ft$i.safetensors" --as ft$i --base base >/dev/null; done
fi
largest=$("$TVS" explain "base + ft1" | awk '/largest tensor/ {print}' | sed 's/.*largest tensor //; s/).*//')

echo "## Query benchmark ($(date -u +%Y-%m-%d), $(nproc) cores, $THREADS threads, model $(echo "scale=2; $BYTES/1073741824" | bc) GiB BF16)"
echo
memcpy=$("$SCRATCH/memcpy_speed" | grep -o '[0-9][0-9.]*' | head -1 || true)
echo "memcpy (1 thread): $memcpy MB/s"
echo
echo "| query | tvs GB/s of output | tvs wall s | PyTorch s | tvs / PyTorch | output identical |"
echo "|---|---:|---:|---:|---:|---|"

run_q() {
  local label=$1 q=$2 method=$3
  shift 3
  local best=999999 t0 t1
  for rep in 1 2 3; do
    t0=$(now)
    "$TVS" materialize "$q" --threads "$THREADS" -o - > /dev/null
    t1=$(now)
    best=$(echo "if ($t1 - $t0 < $best) $t1 - $t0 else $best" | bc)
  done
  "$TVS" materialize "$q" -o "$SCRATCH/out.safetensors"
  local torch="skipped" ratio="" same=""
  if [ "${SKIP_TORCH:-0}" != 1 ]; then
    t0=$(now)
    /usr/bin/python3 tests/bench/merge_ref.py "$SCRATCH/ref.safetensors" "$method" \
      "$M/base.safetensors" "$@" >/dev/null
    t1=$(now)
    torch=$(echo "$t1 - $t0" | bc)
    ratio=$(echo "scale=1; $torch / $best" | bc)
    same=$(/usr/bin/python3 - "$SCRATCH/out.safetensors" "$SCRATCH/ref.safetensors" <<'EOF'
import sys
sys.path.insert(0, "tests/bench")
from merge_ref import read_st
import torch
a, b = read_st(sys.argv[1]), read_st(sys.argv[2])
d = sum(int((a[n].view(torch.int16) != b[n].view(torch.int16)).sum()) for n in b)
print("yes" if d == 0 else f"{d} elements differ")
EOF
)
  fi
  echo "| $label | $(gbps "$BYTES" 0 "$best") | $best | $torch | $ratio | $same |"
}

run_q 'base + ft1 (lossless delta)' 'base + ft1' ta "$M/ft1.safetensors"
run_q 'base + 0.5*ft1 + 0.5*ft2' 'base + 0.5*ft1 + 0.5*ft2' ta "$M/ft1.safetensors" "$M/ft2.safetensors" --lambda=0.5
run_q 'base + ties(ft1, ft2, ft3; density=0.2)' 'base + ties(ft1, ft2, ft3; density=0.2)' ties \
  "$M/ft1.safetensors" "$M/ft2.safetensors" "$M/ft3.safetensors" --density=0.2

echo
peak=$(peak_anon "$TVS" materialize 'base + 0.5*ft1 + 0.5*ft2' --threads "$THREADS" -o "$SCRATCH/out.safetensors")
echo "peak RssAnon of 'base + 0.5*ft1 + 0.5*ft2': $((peak / 1024)) MiB (largest tensor $largest; bound 3 x largest + 64 MiB)"
peak=$(peak_anon "$TVS" materialize 'base + ties(ft1, ft2, ft3; density=0.2)' --threads "$THREADS" -o "$SCRATCH/out.safetensors")
echo "peak RssAnon of the 3-way TIES: $((peak / 1024)) MiB"
