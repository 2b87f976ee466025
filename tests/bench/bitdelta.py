#!/usr/bin/python3
"""The BitDelta-style baseline for bench_lossy.sh: every entry of the delta
replaced by its sign times one scale per tensor, the mean |delta| of that
tensor (1 bit per parameter plus one scale per tensor), added to the base in
F32 and rounded to BF16.

  /usr/bin/python3 tests/bench/bitdelta.py BASE FT OUT   (prints stored bytes)

Uses the loader and writer of ../shared/models/tinyllama.py.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "shared", "models"))
import tinyllama as tl  # noqa: E402
import torch  # noqa: E402

base, _, _ = tl.load_safetensors(sys.argv[1])
ft, dts, meta = tl.load_safetensors(sys.argv[2])
out, params = {}, 0
for name, w in ft.items():
    d = w - base[name]
    scale = d.abs().mean()
    out[name] = base[name] + torch.sign(d) * scale
    params += d.numel()
tl.save_safetensors(sys.argv[3], out, "BF16", meta)
# stored: one bit per parameter and one BF16 scale per tensor
print(params // 8 + 2 * len(ft))
