#!/bin/sh
# The main job on data that ships in the repository: import a small base
# model and a fine-tune, show what is stored, export both and check that
# they come back byte-identical, then check the store. Usage:
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
"$TVS" import "$DATA/ft-math.safetensors" --as demo/ft-math -m "arithmetic fine-tune"
"$TVS" ls
"$TVS" show demo/base-v1 | head -12
"$TVS" stats
"$TVS" export demo/base-v1 -o "$WORK/base-v1.safetensors"
"$TVS" export demo/ft-math -o "$WORK/ft-math.safetensors"
cmp "$WORK/base-v1.safetensors" "$DATA/base-v1.safetensors"
cmp "$WORK/ft-math.safetensors" "$DATA/ft-math.safetensors"
"$TVS" fsck
set +x
echo "demo: both models exported byte-identical; fsck clean"
