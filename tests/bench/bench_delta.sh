#!/bin/bash
# Fleet storage benchmark (run by hand, never in CI): total stored bytes and
# wall time to store and to restore a model family, for tvstore and its
# peers, all in one run:
#   tvstore (lossless deltas keyed by lineage, checkpoints by `tvs backup`),
#   zstd -19 on each file,
#   zstd -19 --long=27 --patch-from=BASE (fine-tunes against their base,
#     base-v2 against base-v1, each checkpoint against the previous one),
#   xdelta3 -9 -s BASE (same pairs),
#   restic backup of the folder, borg create --compression zstd,19.
# Every restore is checked byte-identical with cmp.
#
#   tests/bench/bench_delta.sh [shared|family|all]     (default: all)
#
# "shared" is ../shared/models (base-v1, base-v2, ft-math, ft-code,
# ft-math-v2, ckpt-000..007); "family" is a generated 1 GiB BF16 base plus
# three synthetic fine-tunes (deltas ~N(0, 1e-3|w|) on 70% of tensors).
# Env: SCRATCH (default /tmp/tvs-bench-delta), FAMILY_BYTES (default 1g),
# KEEP=1 keeps the scratch folder, PEERS="xdelta restic" runs only those peers
# (of zstd19 patch xdelta restic borg). Installs restic, borgbackup, xdelta3 and
# zstd from Debian if missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
WHAT=${1:-all}
SCRATCH=${SCRATCH:-/tmp/tvs-bench-delta}
SHARED=${SHARED:-$ROOT/../shared/models}
BUILD=$ROOT/build-rel
TVS=$BUILD/cli/tvs

need=""
for t in restic borg xdelta3 zstd; do command -v $t >/dev/null || need="$need $t"; done
if [ -n "$need" ]; then
  pk=$(echo "$need" | sed 's/borg/borgbackup/')
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pk >/dev/null
fi
if [ ! -x "$TVS" ]; then
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DTVS_TESTS=OFF >/dev/null
  cmake --build "$BUILD" -j >/dev/null
fi
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$SCRATCH"' EXIT

now() { date +%s.%N; }
# PEERS selects the peers to run (default: all): zstd19 patch xdelta restic borg
want() { [ -z "${PEERS:-}" ] || [[ " $PEERS " == *" $1 "* ]]; }
secs() { printf '%.2f' "$(echo "$2 - $1" | bc)"; }
bytes_of() { du -sb "$@" | awk '{s+=$1} END {print s}'; }
mb() { echo "scale=1; $1 / 1000000" | bc; }

# A family: FULL files stored plain, PAIRS "file:base" stored against a base.
# Arrays set by the callers: NAMES (ref name:file:kind:base), LOGICAL.
declare -a ROWS

row() { ROWS+=("$(printf '| %-34s | %10s | %8s | %8s | %8s |' "$1" "$(mb "$2")" "$3" "$4" "$5")"); }

run_family() {
  local label=$1
  local dir=$2
  local work=$SCRATCH/$label
  mkdir -p "$work"
  ROWS=()
  local logical=0
  for spec in "${SPECS[@]}"; do
    IFS=: read -r name file kind base <<<"$spec"
    logical=$((logical + $(stat -c %s "$dir/$file")))
  done

  # ---- tvstore
  local st=$work/tvs t0 t1 t2
  "$TVS" init "$st" >/dev/null
  export TVS_STORE=$st
  t0=$(now)
  for spec in "${SPECS[@]}"; do
    IFS=: read -r name file kind base <<<"$spec"
    case $kind in
      full) "$TVS" import "$dir/$file" --as "$name" >/dev/null ;;
      parent) "$TVS" import "$dir/$file" --as "$name" --parent "$base" >/dev/null ;;
      delta) "$TVS" import "$dir/$file" --as "$name" --base "$base" >/dev/null ;;
      ckpt) ;;
    esac
  done
  if [ -n "${CKPT_DIR:-}" ]; then
    "$TVS" backup "$dir/$CKPT_DIR" --as run --base "$CKPT_BASE" >/dev/null
  fi
  t1=$(now)
  local stored
  stored=$("$TVS" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["reachable_bytes"])')
  local file_bytes
  file_bytes=$(du -s --block-size=1 "$st/.tvs/data.mdb" | cut -f1)   # allocated: the map is sparse
  mkdir -p "$work/out"
  t2=$(now)
  for spec in "${SPECS[@]}"; do
    IFS=: read -r name file kind base <<<"$spec"
    [ "$kind" = ckpt ] && name="run/$(basename "$file" .safetensors)"
    "$TVS" export "$name" -o "$work/out/x.safetensors"
    cmp "$work/out/x.safetensors" "$dir/$file"
  done
  local t3
  t3=$(now)
  row "tvstore (objects)" "$stored" "$(secs "$t0" "$t1")" "$(secs "$t2" "$t3")" "$(printf %.3f "$(echo "$stored / $logical" | bc -l)")"
  row "tvstore (data.mdb on disk)" "$file_bytes" "" "" "$(printf %.3f "$(echo "$file_bytes / $logical" | bc -l)")"
  unset TVS_STORE
  rm -rf "$st" "$work/out"

  if want zstd19; then
  # ---- zstd -19 per file
  mkdir -p "$work/z"
  t0=$(now)
  for spec in "${SPECS[@]}"; do
    IFS=: read -r name file kind base <<<"$spec"
    zstd -q -19 -T1 "$dir/$file" -o "$work/z/$name.zst"
  done
  t1=$(now)
  stored=$(bytes_of "$work/z")
  t2=$(now)
  for spec in "${SPECS[@]}"; do
    IFS=: read -r name file kind base <<<"$spec"
    zstd -q -d "$work/z/$name.zst" -o "$work/z/x" -f
    cmp "$work/z/x" "$dir/$file"
  done
  t3=$(now)
  rm -f "$work/z/x"
  row "zstd -19" "$stored" "$(secs "$t0" "$t1")" "$(secs "$t2" "$t3")" "$(printf %.3f "$(echo "$stored / $logical" | bc -l)")"
  rm -rf "$work/z"
  fi

  # ---- zstd --patch-from and xdelta3, against the same bases
  for tool in patch xdelta; do
    want $tool || continue
    mkdir -p "$work/$tool"
    t0=$(now)
    for spec in "${SPECS[@]}"; do
      IFS=: read -r name file kind base <<<"$spec"
      local src=""
      [ "$kind" != full ] && src="$dir/$(base_file "$base" "$file")"
      if [ "$tool" = patch ]; then
        if [ -n "$src" ]; then
          zstd -q -19 -T1 --long=27 --patch-from="$src" "$dir/$file" -o "$work/$tool/$name" 2>/dev/null
        else
          zstd -q -19 -T1 --long=27 "$dir/$file" -o "$work/$tool/$name"
        fi
      else
        if [ -n "$src" ]; then
          xdelta3 -9 -e -s "$src" "$dir/$file" "$work/$tool/$name"
        else
          xdelta3 -9 -e "$dir/$file" "$work/$tool/$name"
        fi
      fi
    done
    t1=$(now)
    stored=$(bytes_of "$work/$tool")
    t2=$(now)
    # restore in order: a base is restored before what is stored against it
    mkdir -p "$work/$tool.out"
    for spec in "${SPECS[@]}"; do
      IFS=: read -r name file kind base <<<"$spec"
      local out="$work/$tool.out/$(basename "$file")" src=""
      [ "$kind" != full ] && src="$work/$tool.out/$(basename "$(base_file "$base" "$file")")"
      if [ "$tool" = patch ]; then
        if [ -n "$src" ]; then
          zstd -q -d --long=27 --patch-from="$src" "$work/$tool/$name" -o "$out"
        else
          zstd -q -d --long=27 "$work/$tool/$name" -o "$out"
        fi
      else
        if [ -n "$src" ]; then
          xdelta3 -d -s "$src" "$work/$tool/$name" "$out"
        else
          xdelta3 -d "$work/$tool/$name" "$out"
        fi
      fi
      cmp "$out" "$dir/$file"
    done
    t3=$(now)
    local label2="zstd -19 --long=27 --patch-from"
    [ "$tool" = xdelta ] && label2="xdelta3 -9 -s BASE"
    row "$label2" "$stored" "$(secs "$t0" "$t1")" "$(secs "$t2" "$t3")" "$(printf %.3f "$(echo "$stored / $logical" | bc -l)")"
    rm -rf "$work/$tool" "$work/$tool.out"
  done

  # ---- restic and borg on a folder holding the family
  mkdir -p "$work/folder"
  for spec in "${SPECS[@]}"; do
    IFS=: read -r name file kind base <<<"$spec"
    ln "$dir/$file" "$work/folder/$(basename "$file")" 2>/dev/null ||
      cp "$dir/$file" "$work/folder/$(basename "$file")"
  done
  if want restic; then
  export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR=$work/restic-cache
  restic init -q -r "$work/restic" >/dev/null
  t0=$(now)
  restic -q -r "$work/restic" backup "$work/folder" >/dev/null
  t1=$(now)
  stored=$(bytes_of "$work/restic")
  t2=$(now)
  restic -q -r "$work/restic" restore latest --target "$work/restic.out" >/dev/null
  t3=$(now)
  for f in "$work/folder"/*; do cmp "$f" "$work/restic.out/$work/folder/$(basename "$f")"; done
  row "restic backup" "$stored" "$(secs "$t0" "$t1")" "$(secs "$t2" "$t3")" "$(printf %.3f "$(echo "$stored / $logical" | bc -l)")"
  rm -rf "$work/restic" "$work/restic.out" "$work/restic-cache"
  fi

  if want borg; then
  export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_BASE_DIR=$work/borg-home
  borg init --encryption=none "$work/borg" >/dev/null 2>&1
  t0=$(now)
  (cd "$work" && borg create --compression zstd,19 "$work/borg::a" folder)
  t1=$(now)
  stored=$(bytes_of "$work/borg")
  mkdir -p "$work/borg.out"
  t2=$(now)
  (cd "$work/borg.out" && borg extract "$work/borg::a")
  t3=$(now)
  for f in "$work/folder"/*; do cmp "$f" "$work/borg.out/folder/$(basename "$f")"; done
  row "borg create --compression zstd,19" "$stored" "$(secs "$t0" "$t1")" "$(secs "$t2" "$t3")" "$(printf %.3f "$(echo "$stored / $logical" | bc -l)")"
  fi
  rm -rf "$work/borg" "$work/borg.out" "$work/borg-home" "$work/folder"

  echo
  echo "### $label: $(echo "${#SPECS[@]}") files, $(mb "$logical") MB logical"
  echo
  echo "| method | stored MB | store s | restore s | stored/logical |"
  echo "|---|---:|---:|---:|---:|"
  printf '%s\n' "${ROWS[@]}"
}

# The file a spec's base names (a ref of the family, or "prev" for checkpoints).
base_file() {
  local base=$1 file=$2
  for spec in "${SPECS[@]}"; do
    IFS=: read -r n f k b <<<"$spec"
    if [ "$n" = "$base" ]; then echo "$f"; return; fi
  done
  echo "$base"
}

echo "## Fleet storage benchmark ($(date -u +%Y-%m-%d), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"

if [ "$WHAT" = shared ] || [ "$WHAT" = all ]; then
  SPECS=(
    "base-v1:base-v1.safetensors:full:"
    "base-v2:base-v2.safetensors:parent:base-v1"
    "ft-math:ft-math.safetensors:delta:base-v1"
    "ft-code:ft-code.safetensors:delta:base-v1"
    "ft-math-v2:ft-math-v2.safetensors:delta:base-v2"
    "ckpt-000:ckpt/ckpt-000.safetensors:ckpt:base-v1"
  )
  for i in 1 2 3 4 5 6 7; do
    SPECS+=("ckpt-00$i:ckpt/ckpt-00$i.safetensors:ckpt:ckpt-00$((i - 1))")
  done
  CKPT_DIR=ckpt CKPT_BASE=base-v1 run_family shared "$SHARED"
fi

if [ "$WHAT" = family ] || [ "$WHAT" = all ]; then
  fam=$SCRATCH/family-src
  mkdir -p "$fam"
  cc -O2 -o "$SCRATCH/gen_model" tests/bench/gen_model.c -lm
  "$SCRATCH/gen_model" "$fam/base.safetensors" --bytes "${FAMILY_BYTES:-1g}" --seed 1
  for i in 1 2 3; do
    "$SCRATCH/gen_model" "$fam/ft$i.safetensors" --delta-of "$fam/base.safetensors" \
      --scale 1e-3 --frac 0.7 --seed $((i + 1))
  done
  SPECS=(
    "base:base.safetensors:full:"
    "ft1:ft1.safetensors:delta:base"
    "ft2:ft2.safetensors:delta:base"
    "ft3:ft3.safetensors:delta:base"
  )
  CKPT_DIR="" run_family family "$fam"
fi
