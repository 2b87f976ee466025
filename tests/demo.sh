#!/bin/sh
# The main job on data that ships in the repository: import a small base
# model, and a fine-tune of it as a lossless delta; show what is stored and
# the lineage; export both and materialize "base + fine-tune", checking that
# each comes back byte-identical; merge the two; store the fine-tune again at
# 2 bits per parameter (lossy) and materialize it; check the store. Usage:
#   tests/demo.sh [BUILD_DIR]      (default: build)
set -eu
cd "$(dirname "$0")/.."
TVS="$(pwd)/${1:-build}/cli/tvs"
DATA="$(pwd)/tests/data/models"
WORK=$(mktemp -d /tmp/tvs-demo.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
export TVS_STORE="$WORK/store"
set -x
"$TVS" init "$WORK/store"
"$TVS" import "$DATA/base-v1.safetensors" --as demo/base-v1 -m "tiny Llama base"
"$TVS" import "$DATA/ft-math.safetensors" --as demo/ft-math --base demo/base-v1 -m "arithmetic fine-tune"
"$TVS" ls
"$TVS" show demo/base-v1 | head -12
"$TVS" stats
"$TVS" lineage
"$TVS" export demo/base-v1 -o "$WORK/base-v1.safetensors"
"$TVS" export demo/ft-math -o "$WORK/ft-math.safetensors"
cmp "$WORK/base-v1.safetensors" "$DATA/base-v1.safetensors"
cmp "$WORK/ft-math.safetensors" "$DATA/ft-math.safetensors"
"$TVS" materialize "demo/base-v1 + demo/ft-math" -o "$WORK/sum.safetensors"
cmp "$WORK/sum.safetensors" "$DATA/ft-math.safetensors"
"$TVS" explain "demo/base-v1 + 0.5*demo/ft-math" | head -12
"$TVS" materialize "demo/base-v1 + 0.5*demo/ft-math" -o "$WORK/half.safetensors"
"$TVS" compress demo/ft-math --as demo/ft-math-2bit --bits 2
"$TVS" show demo/ft-math-2bit --units | tail -n 4
"$TVS" materialize "demo/base-v1 + demo/ft-math-2bit" -o "$WORK/lossy.safetensors"
"$TVS" stats | tail -n 4
"$TVS" fsck
set +x
echo "demo: both models and 'base + fine-tune' came back byte-identical; a 2-bit copy of the"
echo "fine-tune decodes; fsck clean"
