#!/usr/bin/env bash
# bench_import.sh: tvs import/export speed and stored size against zstd, on
# the shared tiny-llama files and on a synthetic Llama-style BF16 model.
# Run by hand on an otherwise idle machine; never in CI. Prints one markdown
# table on stdout (progress goes to stderr).
#
#   tests/bench/bench_import.sh
#
# Environment (defaults in brackets):
#   TVS_BENCH_DIR  scratch directory [/tmp/tvs-bench]; deleted at the end
#   KEEP=1         keep the scratch directory (and reuse its generated model)
#   RUNS           runs per measurement, best one kept [3]
#   ZSTD19_BIG=0   skip zstd -19 on the synthetic model (~11 min per run here)
#   GEN_BYTES      size asked of gen_model [1073741824]; GEN_SEED [1]
#   MODELS_DIR     the real models [/work/shared/models]
#   TVS            a tvs binary to use instead of building build-rel
#
# What is timed: wall time (date +%s.%N) of the whole command, nothing
# dropped: `tvs import` into a fresh store (includes its final fsync),
# `tvs export` to a new file, `zstd` compress/decompress file to file (zstd
# does not fsync). Inputs are warm in the page cache. MB = 10^6 bytes.
# Every export and every decompression is checked byte-identical with cmp.
set -Eeuo pipefail
export LC_ALL=C

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BENCH_DIR=${TVS_BENCH_DIR:-/tmp/tvs-bench}
MODELS_DIR=${MODELS_DIR:-/work/shared/models}
RUNS=${RUNS:-3}
ZSTD19_BIG=${ZSTD19_BIG:-1}
GEN_BYTES=${GEN_BYTES:-1073741824}
GEN_SEED=${GEN_SEED:-1}
KEEP=${KEEP:-0}

fsize() { stat -c %s "$1"; }
say() { printf '%s\n' "bench: $*" >&2; }
die() { say "$*"; exit 1; }

for tool in zstd cmp cc awk; do
    command -v "$tool" >/dev/null || die "$tool not found"
done
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die "RUNS must be a positive integer"

# ------------------------------------------------------------ scratch dir
MARK=.tvs-bench-scratch
if [[ -e $BENCH_DIR && ! -e $BENCH_DIR/$MARK && -n $(ls -A "$BENCH_DIR" 2>/dev/null) ]]; then
    die "$BENCH_DIR exists and is not a scratch dir of this script; set TVS_BENCH_DIR"
fi
mkdir -p "$BENCH_DIR/bin"
touch "$BENCH_DIR/$MARK"
LOG=$BENCH_DIR/bench.log
: >"$LOG"
cleanup() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        say "failed (exit $rc); last lines of $LOG:"
        tail -n 15 "$LOG" >&2 || true
    fi
    if [[ $KEEP == 1 ]]; then
        say "kept $BENCH_DIR"
    else
        rm -rf "$BENCH_DIR"
    fi
}
trap cleanup EXIT
trap 'say "failed at line $LINENO: $BASH_COMMAND"' ERR
trap 'exit 130' INT TERM

# ------------------------------------------------------------ binaries
if [[ -z ${TVS:-} ]]; then
    TVS=$ROOT/build-rel/cli/tvs
    if [[ ! -x $TVS ]]; then
        say "building Release tvs in $ROOT/build-rel"
        cmake -S "$ROOT" -B "$ROOT/build-rel" -DCMAKE_BUILD_TYPE=Release -DTVS_TESTS=OFF >>"$LOG" 2>&1
    fi
    # incremental: a stale binary would measure old code
    cmake --build "$ROOT/build-rel" -j2 >>"$LOG" 2>&1
fi
[[ -x $TVS ]] || die "no tvs binary at $TVS"
cc -O2 -o "$BENCH_DIR/bin/gen_model" "$HERE/gen_model.c" -lm
cc -O2 -o "$BENCH_DIR/bin/memcpy_speed" "$HERE/memcpy_speed.c"

# ------------------------------------------------------------ inputs
inputs=() labels=()
if [[ -d $MODELS_DIR ]]; then
    while IFS= read -r f; do
        inputs+=("$f")
        l=${f#"$MODELS_DIR"/}
        labels+=("${l%.safetensors}")
    done < <(find "$MODELS_DIR" -name '*.safetensors' -type f | sort)
fi
n_real=${#inputs[@]}
[[ $n_real -gt 0 ]] || say "no .safetensors under $MODELS_DIR"

GEN=$BENCH_DIR/synthetic.safetensors
stamp="$GEN_BYTES $GEN_SEED $(cksum <"$HERE/gen_model.c")"
if [[ -f $GEN && -f $GEN.stamp && $(cat "$GEN.stamp") == "$stamp" ]]; then
    say "reusing $GEN"
else
    say "generating the synthetic model ($GEN_BYTES bytes asked)"
    rm -f "$GEN.stamp"
    "$BENCH_DIR/bin/gen_model" "$GEN" --bytes "$GEN_BYTES" --seed "$GEN_SEED" >"$BENCH_DIR/gen.txt"
    printf '%s' "$stamp" >"$GEN.stamp"
fi
gen_desc=$(sed 's/^wrote [^:]*: //' "$BENCH_DIR/gen.txt" 2>/dev/null || echo "?")
inputs+=("$GEN")
labels+=("synthetic Llama BF16, $(awk -v b="$(fsize "$GEN")" 'BEGIN { printf "%.2f GiB", b / 2^30 }')")

# ------------------------------------------------------------ timing helpers
# timed CMD...: run CMD (output to the log), print its wall time in seconds.
timed() {
    local t0 t1
    t0=$(date +%s.%N)
    if ! "$@" >>"$LOG" 2>&1; then
        echo "command failed: $*" >>"$LOG"
        return 1
    fi
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }'
}
fmin() { awk -v a="$1" -v b="$2" 'BEGIN { print (a == "" || b + 0 < a + 0) ? b : a }'; }
same() { cmp -s "$1" "$2" || die "$3: output differs from $1"; }

STORE=$BENCH_DIR/store
OUT=$BENCH_DIR/out.bin
ZF=$BENCH_DIR/out.zst

# Results, one entry per input: sizes in bytes, times in seconds (best run).
declare -a R_SIZE R_LOG R_STORED R_TIMP R_TEXP
declare -A Z_CS Z_TC Z_TD      # key "variant,row"
VARIANTS=(z3 z19 zmt)
declare -A ZFLAGS=([z3]="-3 -T1" [z19]="-19 -T1" [zmt]="-3 -T0")

# measure ROW FILE: RUNS rounds, each one run of every measurement, so that
# a change of load on the machine hits tvs and zstd alike; best run kept.
measure() {
    local i=$1 f=$2 r v t json
    local -a vs=() flags
    for v in "${VARIANTS[@]}"; do
        [[ $v == z19 && $f == "$GEN" && $ZSTD19_BIG != 1 ]] || vs+=("$v")
    done
    for ((r = 1; r <= RUNS; r++)); do
        say "[$((i + 1))/$n] ${labels[i]}: round $r/$RUNS: tvs import, export"
        rm -rf "$STORE"
        "$TVS" init "$STORE" >>"$LOG" 2>&1
        t=$(timed "$TVS" --store "$STORE" import "$f" --as bench)
        R_TIMP[i]=$(fmin "${R_TIMP[i]:-}" "$t")
        if [[ $r == 1 ]]; then
            json=$("$TVS" --store "$STORE" stats --json)
            # top-level fields come before the per-ref ones
            R_LOG[i]=$(grep -m1 '"logical_bytes"' <<<"$json" | tr -dc 0-9)
            R_STORED[i]=$(grep -m1 '"reachable_bytes"' <<<"$json" | tr -dc 0-9)
        fi
        rm -f "$OUT"
        t=$(timed "$TVS" --store "$STORE" export bench -o "$OUT")
        same "$f" "$OUT" "tvs export"
        R_TEXP[i]=$(fmin "${R_TEXP[i]:-}" "$t")
        rm -rf "$STORE" "$OUT"
        for v in "${vs[@]}"; do
            say "[$((i + 1))/$n] ${labels[i]}: round $r/$RUNS: zstd ${ZFLAGS[$v]}"
            read -ra flags <<<"${ZFLAGS[$v]}"
            rm -f "$ZF"
            t=$(timed zstd -q "${flags[@]}" -f "$f" -o "$ZF")
            Z_TC[$v,$i]=$(fmin "${Z_TC[$v,$i]:-}" "$t")
            Z_CS[$v,$i]=$(fsize "$ZF")
            rm -f "$OUT"
            t=$(timed zstd -q -d -f "$ZF" -o "$OUT")
            same "$f" "$OUT" "zstd -d"
            Z_TD[$v,$i]=$(fmin "${Z_TD[$v,$i]:-}" "$t")
            rm -f "$ZF" "$OUT"
        done
    done
}

# ------------------------------------------------------------ machine
cpu=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
memcpy_mbs=$("$BENCH_DIR/bin/memcpy_speed" | grep -o '[0-9.]* MB/s' | cut -d' ' -f1)
dd_line=$(dd if=/dev/zero bs=1M count=2048 of=/dev/null 2>&1 | tail -n 1)
load0=$(cut -d' ' -f1-3 /proc/loadavg)
rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    rev="$rev (+ uncommitted changes)"
fi
t_start=$(date +%s)

# ------------------------------------------------------------ run
n=${#inputs[@]}
for ((i = 0; i < n; i++)); do
    R_SIZE[i]=$(fsize "${inputs[i]}")
    measure "$i" "${inputs[i]}"
done
t_total=$(($(date +%s) - t_start))

# ------------------------------------------------------------ table
# row LABEL SIZE LOGICAL STORED T_IMP T_EXP then per variant CS TC TD ("-" = skipped)
row() {
    awk -v label="$1" -v size="$2" -v logi="$3" -v stored="$4" -v timp="$5" -v texp="$6" \
        -v z3="$7 $8 $9" -v z19="${10} ${11} ${12}" -v zmt="${13} ${14} ${15}" '
    function mbs(b, t) { return b / t / 1e6 }
    function fmt(x) { return x >= 100 ? sprintf("%.0f", x) : sprintf("%.1f", x) }
    function zcells(s,   a) {
        split(s, a, " ")
        if (a[1] == "-") return " skipped | skipped | skipped |"
        return sprintf(" %.3f | %s | %s |", a[1] / size, fmt(mbs(size, a[2])), fmt(mbs(size, a[3])))
    }
    BEGIN {
        split(z3, z, " ")
        imp = mbs(logi, timp); exp_ = mbs(logi, texp)
        printf "| %s | %.1f | %.3f | %s | %s |", label, size / 1e6, stored / logi, fmt(imp), fmt(exp_)
        printf "%s%s%s", zcells(z3), zcells(z19), zcells(zmt)
        printf " %.2f | %.2f |\n", imp / mbs(size, z[2]), exp_ / mbs(size, z[3])
    }'
}
zargs() {   # zargs ROW: the nine zstd fields of one row
    local v
    for v in "${VARIANTS[@]}"; do
        if [[ -n ${Z_CS[$v,$1]:-} ]]; then
            printf '%s %s %s ' "${Z_CS[$v,$1]}" "${Z_TC[$v,$1]}" "${Z_TD[$v,$1]}"
        else
            printf -- '- - - '
        fi
    done
}
sum() { awk '{ s += $1 } END { printf "%.6f\n", s }'; }

echo "## tvs import/export vs zstd"
echo
echo "- machine: $(nproc) CPUs (nproc), ${cpu:-unknown CPU}; load average at start $load0; $(uname -sr)"
echo "- baseline: memcpy ${memcpy_mbs} MB/s (1 thread, 256 MiB buffers, best of 10); \`dd if=/dev/zero bs=1M count=2048 of=/dev/null\`: ${dd_line##*, }"
echo "- tvs $rev, Release, default threads (= $(nproc) online CPUs); $(zstd --version | sed 's/^\*\*\* //; s/ \*\*\*$//; s/, by .*//')"
echo "- synthetic model: gen_model --bytes $GEN_BYTES --seed $GEN_SEED: $gen_desc"
echo "- each number is the best of $RUNS runs (interleaved: round k runs every measurement once), wall time of the whole command (import includes the store's fsync; zstd output is not fsynced); MB = 10^6 bytes; inputs warm in the page cache; every export/decompression verified with cmp"
echo "- ratio = stored / logical (tvs: reachable_bytes / logical_bytes of \`tvs stats --json\`, one fresh store per file) or compressed / original (zstd); c = compress, d = decompress, MB/s of original bytes"
echo
echo "| input | MB | tvs ratio | tvs import MB/s | tvs export MB/s | zstd -3 -T1 ratio | c MB/s | d MB/s | zstd -19 -T1 ratio | c MB/s | d MB/s | zstd -3 -T0 ratio | c MB/s | d MB/s | tvs import / zstd -3 c | tvs export / zstd -3 d |"
echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
for ((i = 0; i < n_real; i++)); do
    # shellcheck disable=SC2046  # zargs gives nine words
    row "${labels[i]}" "${R_SIZE[i]}" "${R_LOG[i]}" "${R_STORED[i]}" "${R_TIMP[i]}" "${R_TEXP[i]}" $(zargs "$i")
done
if [[ $n_real -gt 0 ]]; then
    # total over the real files: summed bytes over summed best times
    args=("**total, $n_real files under $MODELS_DIR**"
          "$(printf '%s\n' "${R_SIZE[@]:0:n_real}" | sum)"
          "$(printf '%s\n' "${R_LOG[@]:0:n_real}" | sum)"
          "$(printf '%s\n' "${R_STORED[@]:0:n_real}" | sum)"
          "$(printf '%s\n' "${R_TIMP[@]:0:n_real}" | sum)"
          "$(printf '%s\n' "${R_TEXP[@]:0:n_real}" | sum)")
    for v in "${VARIANTS[@]}"; do
        for a in Z_CS Z_TC Z_TD; do
            declare -n zz=$a
            args+=("$(for ((k = 0; k < n_real; k++)); do echo "${zz[$v,$k]}"; done | sum)")
            unset -n zz
        done
    done
    row "${args[@]}"
fi
g=$((n - 1))
# shellcheck disable=SC2046
row "**${labels[g]}**" "${R_SIZE[g]}" "${R_LOG[g]}" "${R_STORED[g]}" "${R_TIMP[g]}" "${R_TEXP[g]}" $(zargs "$g")
echo
if [[ $ZSTD19_BIG != 1 ]]; then
    echo "zstd -19 on the synthetic model: skipped (ZSTD19_BIG=0)."
    echo
fi
awk -v logi="${R_LOG[g]}" -v stored="${R_STORED[g]}" -v timp="${R_TIMP[g]}" -v texp="${R_TEXP[g]}" \
    -v size="${R_SIZE[g]}" -v zc="${Z_TC[z3,$g]}" '
    function ok(c) { return c ? "met" : "NOT met" }
    BEGIN {
        r = stored / logi; sp = (logi / timp) / (size / zc); ex = logi / texp / 1e6
        printf "Targets on the synthetic model: stored/logical %.3f (<= 0.70: %s); ", r, ok(r <= 0.70)
        printf "tvs import %.2fx zstd -3 -T1 (>= 2x: %s); ", sp, ok(sp >= 2)
        printf "tvs export %.0f MB/s (>= 1000 MB/s: %s).\n", ex, ok(ex >= 1000)
    }'
echo
echo "Run took ${t_total}s; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
