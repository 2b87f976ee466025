#!/usr/bin/python3
"""Reference merges in PyTorch, following SPEC.md section 4 (run by hand).

    merge_ref.py OUT.safetensors METHOD BASE FT1 [FT2 ...] [--param k=v ...]

METHOD: ta (base + lambda * sum(ft_i - base)), ties, dare, breadcrumbs,
soup (average of the FT files), transfer (FT1's delta over BASE applied to
--onto FILE). Everything in float32, then rounded to BF16 (nearest even),
the way tvstore computes it; used to check `tvs materialize` and to time a
PyTorch merge next to it. Needs Debian's python3-torch.
"""
import json
import struct
import sys
import time

import torch


def read_st(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        dt = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}[info["dtype"]]
        t = torch.frombuffer(bytearray(data[b:e]), dtype=dt).reshape(info["shape"])
        out[name] = t
    return out


def write_st(path, tensors):
    names = sorted(tensors)
    header = {"__metadata__": {"format": "pt"}}
    off = 0
    blobs = []
    for n in names:
        t = tensors[n].contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[n] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        off += len(raw)
        blobs.append(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def kth_largest_abs(d, m):
    """The m-th largest |d| (m >= 1), as SPEC.md's threshold."""
    a = d.abs().flatten()
    return torch.kthvalue(a, a.numel() - m + 1).values


def mix(x):
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def mix_t(x):
    """splitmix64 over an int64 tensor holding uint64 bit patterns."""
    m = lambda a, b: a * b  # int64 multiply wraps like uint64 in two's complement
    x = x + (0x9E3779B97F4A7C15 - (1 << 64))
    x = m(x ^ ((x >> 30) & ((1 << 34) - 1)), 0xBF58476D1CE4E5B9 - (1 << 64))
    x = m(x ^ ((x >> 27) & ((1 << 37) - 1)), 0x94D049BB133111EB - (1 << 64))
    return x ^ ((x >> 31) & ((1 << 33) - 1))


def fnv1a(s):
    h = 0xCBF29CE484222325
    for c in s.encode():
        h = ((h ^ c) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def to_i64(u):
    return u - (1 << 64) if u >= 1 << 63 else u


def merge(method, base, fts, p, name):
    deltas = [f - base for f in fts]
    lam = float(p.get("lambda", 1.0))
    if method == "ta":
        out = base.clone()
        for d in deltas:
            out = out + lam * d
        return out
    if method == "ties":
        rho = float(p.get("density", 0.2))
        n = base.numel()
        m = int(rho * n)
        trimmed = []
        for d in deltas:
            if m == 0:
                trimmed.append(torch.zeros_like(d))
            else:
                thr = kth_largest_abs(d, m)
                trimmed.append(torch.where(d.abs() >= thr, d, torch.zeros_like(d)))
        s = torch.zeros_like(base)
        for t in trimmed:
            s = s + t
        kept = torch.zeros_like(base)
        cnt = torch.zeros_like(base)
        for t in trimmed:
            match = ((s > 0) & (t > 0)) | ((s < 0) & (t < 0))
            kept = kept + torch.where(match, t, torch.zeros_like(t))
            cnt = cnt + match.float()
        merged = torch.where(cnt > 0, kept / cnt, torch.zeros_like(kept))
        return base + lam * merged if lam != 1 else base + merged
    if method == "breadcrumbs":
        top, bottom = float(p.get("top", 0.01)), float(p.get("bottom", 0.9))
        n = base.numel()
        acc = torch.zeros_like(base)
        for d in deltas:
            a = d.abs().flatten()
            srt = torch.sort(a).values
            mb, mt = int(bottom * n), int(top * n)
            lo = srt[mb] if mb < n else float("inf")
            hi = srt[n - mt - 1] if mt else float("inf")
            keep = (d.abs() >= lo) & (d.abs() <= hi)
            acc = acc + torch.where(keep, d, torch.zeros_like(d))
        return base + (lam * acc if lam != 1 else acc)
    if method == "dare":
        drop, seed = float(p.get("drop", 0.9)), int(p.get("seed", 0))
        scale = torch.tensor(1.0 / (1.0 - drop), dtype=torch.float32)
        thr = int(drop * 9007199254740992.0)
        h = fnv1a(name)
        idx = torch.arange(base.numel(), dtype=torch.int64)
        acc = torch.zeros(base.numel(), dtype=torch.float32)
        for k, d in enumerate(deltas):
            key = mix(mix(seed ^ (((k + 1) * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF)) ^ h)
            r = mix_t(idx + to_i64(key))
            r = (r >> 11) & ((1 << 53) - 1)
            keep = r >= thr
            acc = acc + torch.where(keep, d.flatten() * scale, torch.zeros_like(acc))
        acc = acc.reshape(base.shape)
        return base + (lam * acc if lam != 1 else acc)
    raise SystemExit("unknown method " + method)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    params = dict(a[2:].split("=", 1) for a in sys.argv[1:] if a.startswith("--"))
    out, method, base_path, ft_paths = args[0], args[1], args[2], args[3:]
    t0 = time.time()
    base = read_st(base_path)
    fts = [read_st(f) for f in ft_paths]
    res = {}
    for name, b in base.items():
        b32 = b.float()
        f32 = [f[name].float() for f in fts]
        if method == "soup":
            acc = f32[0] * (1.0 / len(f32))
            for f in f32[1:]:
                acc = acc + f * (1.0 / len(f32))
            r = acc
        else:
            r = merge(method, b32, f32, params, name)
        res[name] = r.to(torch.bfloat16)
    write_st(out, res)
    print("%.3f s" % (time.time() - t0))


if __name__ == "__main__":
    main()
