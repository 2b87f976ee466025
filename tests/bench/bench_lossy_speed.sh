#!/bin/bash
# Lossy encoder and decoder speed (run by hand, never in CI), on a generated
# BF16 model (SIZE, default 1g) and a dense fine-tune of it with Gaussian
# deltas of ~8 % of the weights' RMS (like the shared fine-tunes), one thread:
#
#   - encode: `tvs compress FT --bits B` and `tvs import FT --lossy --bits B`,
#     in MB/s of delta input (the fine-tune's bytes) per core of CPU time,
#     next to `zstd -3 -T1` compressing the same file;
#   - decode: `tvs materialize "base + lossy" -o -` in GB/s of output per core,
#     next to the base alone and memcpy of the same bytes;
#   - LOWRANKQ (which white synthetic deltas never take): the same on a
#     generated fine-tune whose deltas have a steep spectrum (gen_model
#     --lowrank 32), and compress and decode of the shared ft-math at --bits
#     1; the decode in MB/s of the LOWRANKQ units' BF16 output per
#     core-second over materializing the base alone.
#
#   tests/bench/bench_lossy_speed.sh          (SCRATCH, SIZE, BITS="2 1", KEEP=1)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
SCRATCH=${SCRATCH:-/tmp/tvs-bench-lossy-speed}
SIZE=${SIZE:-1g}
BITS=${BITS:-"2 1"}
BUILD=$ROOT/build-rel
TVS=$BUILD/cli/tvs
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTVS_TESTS=OFF >/dev/null
cmake --build "$BUILD" -j >/dev/null
mkdir -p "$SCRATCH"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$SCRATCH"' EXIT
cc -O2 -o "$SCRATCH/gen_model" tests/bench/gen_model.c -lm
cc -O2 -o "$SCRATCH/memcpy_speed" tests/bench/memcpy_speed.c
[ -f "$SCRATCH/base.safetensors" ] ||
  "$SCRATCH/gen_model" "$SCRATCH/base.safetensors" --bytes "$SIZE" --seed 1 >/dev/null
[ -f "$SCRATCH/ft.safetensors" ] ||
  "$SCRATCH/gen_model" "$SCRATCH/ft.safetensors" --delta-of "$SCRATCH/base.safetensors" \
    --scale 0.0016 --frac 1 --seed 2 --additive >/dev/null
bytes=$(stat -c %s "$SCRATCH/ft.safetensors")
export TVS_STORE=$SCRATCH/store
rm -rf "$TVS_STORE"
$TVS init "$TVS_STORE" >/dev/null
$TVS import "$SCRATCH/base.safetensors" --as base >/dev/null
$TVS import "$SCRATCH/ft.safetensors" --base base --as ft >/dev/null
cat "$SCRATCH/ft.safetensors" "$SCRATCH/base.safetensors" > /dev/null   # page cache

# CPU seconds (user + sys) of a command
cpu() { /usr/bin/time -f "%U %S" -o "$SCRATCH/t" "$@" > /dev/null 2>&1
        awk '{print $1 + $2}' "$SCRATCH/t"; }
rate() { awk -v b="$1" -v s="$2" -v u="$3" 'BEGIN { printf "%.0f", b / s / u }'; }

z=$(cpu zstd -3 -T1 -c "$SCRATCH/ft.safetensors")
mem=$("$SCRATCH/memcpy_speed" | awk '{print $2}')
printf "| what | CPU s | per core | baseline in the same run |\n|---|--:|--:|---|\n"
printf "| zstd -3 -T1 of the fine-tune | %s | %s MB/s | |\n" "$z" "$(rate "$bytes" "$z" 1e6)"
base_s=$(cpu $TVS materialize base -o - --threads 1)
for b in $BITS; do
  c=$(cpu $TVS compress ft --as "ft-b$b" --bits "$b" --threads 1)
  i=$(cpu $TVS import "$SCRATCH/ft.safetensors" --base base --lossy --bits "$b" \
      --as "ft-i$b" --threads 1)
  d=$(cpu $TVS materialize "base + ft-b$b" -o - --threads 1)
  printf "| compress --bits %s | %s | %s MB/s | %.2fx zstd -3 |\n" "$b" "$c" \
    "$(rate "$bytes" "$c" 1e6)" "$(echo "$z / $c" | bc -l)"
  printf "| import --lossy --bits %s | %s | %s MB/s | %.2fx zstd -3 |\n" "$b" "$i" \
    "$(rate "$bytes" "$i" 1e6)" "$(echo "$z / $i" | bc -l)"
  printf "| materialize base + ft-b%s | %s | %s MB/s | memcpy %s MB/s |\n" "$b" "$d" \
    "$(rate "$bytes" "$d" 1e6)" "$mem"
  printf "| ... of which the lossy decode | %s | %s MB/s | |\n" "$(echo "$d - $base_s" | bc)" \
    "$(rate "$bytes" "$(echo "$d - $base_s" | bc)" 1e6)"
done
printf "| materialize base | %s | %s MB/s | |\n" "$base_s" "$(rate "$bytes" "$base_s" 1e6)"

# LOWRANKQ at scale: a fine-tune of the same base whose 2-D deltas have a
# steep spectrum (gen_model --lowrank 32: rank 32 plus 5 % white noise, like
# the shared fine-tunes'), so that at --bits 1 most of it is LOWRANKQ.
[ -f "$SCRATCH/ftlr.safetensors" ] ||
  "$SCRATCH/gen_model" "$SCRATCH/ftlr.safetensors" --delta-of "$SCRATCH/base.safetensors" \
    --scale 0.0016 --frac 1 --seed 3 --lowrank 32 >/dev/null
lbytes=$(stat -c %s "$SCRATCH/ftlr.safetensors")
$TVS import "$SCRATCH/ftlr.safetensors" --base base --as ftlr >/dev/null
zl=$(cpu zstd -3 -T1 -c "$SCRATCH/ftlr.safetensors")
# the least of three runs each, taking turns (this machine's noise is in
# the neighbours it shares its cores with, never below the figure)
least() { awk -v a="$1" -v b="$2" 'BEGIN { print (a < b ? a : b) }'; }
c=1000000; i=1000000
for r in 1 2 3; do
  c=$(least "$c" "$(cpu $TVS compress ftlr --as "ftlr-b1-$r" --bits 1 --threads 1)")
  i=$(least "$i" "$(cpu $TVS import "$SCRATCH/ftlr.safetensors" --base base --lossy --bits 1 \
                    --as "ftlr-i1-$r" --threads 1)")
done
$TVS tag ftlr-b1 ftlr-b1-1 >/dev/null
# the least of three runs each, taking turns (the output's system time varies)
d=1000000; bl=1000000
for _ in 1 2 3; do
  x=$(cpu $TVS materialize "base + ftlr-b1" -o - --threads 1)
  y=$(cpu $TVS materialize base -o - --threads 1)
  d=$(least "$x" "$d")
  bl=$(least "$y" "$bl")
done
lqs=$($TVS show ftlr-b1 --units | awk '/ lowrankq / { for (i = 4; i <= NF; i++)
       if ($i ~ /^[0-9]+x[0-9]+$/) { split($i, s, "x"); n += s[1] * s[2] } }
       END { print n + 0 }')
printf "| zstd -3 -T1 of the low-rank fine-tune | %s | %s MB/s | |\n" "$zl" \
  "$(rate "$lbytes" "$zl" 1e6)"
printf "| compress low-rank --bits 1 (%s%% of the elements LOWRANKQ) | %s | %s MB/s | %.2fx zstd -3 |\n" \
  "$(awk -v a="$lqs" -v b="$lbytes" 'BEGIN { printf "%.0f", 200 * a / b }')" "$c" \
  "$(rate "$lbytes" "$c" 1e6)" "$(echo "$zl / $c" | bc -l)"
printf "| import --lossy low-rank --bits 1 | %s | %s MB/s | %.2fx zstd -3 |\n" "$i" \
  "$(rate "$lbytes" "$i" 1e6)" "$(echo "$zl / $i" | bc -l)"
printf "| ... its lossy decode (all units, per LOWRANKQ BF16 byte; least of 3) | %s | %s MB/s | base alone %s MB/s, memcpy %s MB/s |\n" \
  "$(echo "$d - $bl" | bc)" "$(rate "$((2 * lqs))" "$(echo "$d - $bl" | bc)" 1e6)" \
  "$(rate "$lbytes" "$bl" 1e6)" "$mem"

# LOWRANKQ: the generated deltas above are white (flat spectrum), so the
# encoder never tries it there; the shared ft-math's is steep, and below 1.5
# bits per parameter nearly every unit is LOWRANKQ. Thirty materializations,
# so the decode is not lost in the process's start-up and the 10 ms ticks of
# the CPU times.
SHARED=$ROOT/../shared/models
if [ -f "$SHARED/ft-math.safetensors" ]; then
  fbytes=$(stat -c %s "$SHARED/ft-math.safetensors")
  $TVS import "$SHARED/base-v1.safetensors" --as sbase >/dev/null
  $TVS import "$SHARED/ft-math.safetensors" --base sbase --as sft >/dev/null
  zs=$(cpu zstd -3 -T1 -c "$SHARED/ft-math.safetensors")
  c=$(cpu $TVS compress sft --as sft-b1 --bits 1 --threads 1)
  runs='for _ in $(seq 30); do "$0" materialize "$1" -o - --threads 1 > /dev/null; done'
  b30=$(cpu bash -c "$runs" "$TVS" sbase)
  d30=$(cpu bash -c "$runs" "$TVS" "sbase + sft-b1")
  printf "| compress shared ft-math --bits 1 (LOWRANKQ) | %s | %s MB/s | zstd -3 %s MB/s |\n" \
    "$c" "$(rate "$fbytes" "$c" 1e6)" "$(rate "$fbytes" "$zs" 1e6)"
  # the figure: BF16 bytes of the LOWRANKQ units' elements per core-second of
  # the CPU the lossy tensors add over materializing the base alone
  lq=$($TVS show sft-b1 --units | awk '/ lowrankq / { for (i = 4; i <= NF; i++)
         if ($i ~ /^[0-9]+x[0-9]+$/) { split($i, s, "x"); n += s[1] * s[2] } } END { print n + 0 }')
  x30=$(echo "$d30 - $b30" | bc)
  printf "| ... its LOWRANKQ decode (30 materializations less 30 of the base; %s elements) | %s | %s MB/s | base alone %s MB/s, memcpy %s MB/s |\n" \
    "$lq" "$x30" "$(rate "$((60 * lq))" "$x30" 1e6)" "$(rate "$((30 * fbytes))" "$b30" 1e6)" "$mem"
fi
