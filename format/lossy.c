/*
 * Lossy chunks and unit codecs (format/lossy.h, SPEC.md 2.7).
 *
 * Decoding is streaming: a unit decoder (udec) keeps a sequential cursor
 * (mask position, value index, low-rank row) and hands out the delta in
 * pieces of at most PIECE values; apply adds each piece to the base through
 * a stack buffer. Only a LOWRANKQ unit allocates: its factors, dequantized
 * when it is opened (at most one f32 per element of the unit). Every length is checked before the
 * bytes behind it are read, and most content rules (finite floats, padding
 * bits, bitmap popcount) are checked when a unit is opened, so a bad unit
 * usually fails before anything is written; mask varints (INDEX, RUNS) are
 * checked as they are read.
 *
 * Encoders are deterministic: IEEE f32/f64 arithmetic in a fixed order
 * (the build sets -ffp-contract=off), sqrt as the only rounding libm call,
 * a fixed-seed PRNG for the low-rank test matrix. Hot loops are written so
 * the compiler can vectorize them (SSE2 baseline, compiled at -O3); lane
 * order is part of the source, so vectorized or not the bits are the same.
 * LOWRANKQ's product is the one place with fused multiply-adds, written out
 * (fmaf, or the FMA instruction in format/lossy_avx2.c), never contracted
 * by the compiler.
 *
 * Assumes a little-endian host, as the rest of format/ does.
 */
#include "format/lossy.h"
#include "format/lossy_int.h"

#include <math.h>
#include <stdio.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "format/lossy.c assumes a little-endian host"
#endif

#define PIECE 4096u        /* values per decoded piece (a stack buffer of floats) */
#define STRIP 256u         /* low-rank columns per accumulation strip */
#define UNIT_HDR 17u       /* u32 n, f32 err, f32 norm, u8 codec, u32 len */
#define MASK_HDR 9u        /* u8 layout, u32 k, u32 mask_len */
#define BQ_HDR 8u          /* u8 bits, u16 block, u8 flags, f32 mul */
#define LR_HDR 17u         /* u32 rows, u32 cols, u32 rank, u8 dtype, f32 scale */
#define LRQ_HDR 16u        /* u32 rows, u32 cols, u32 rank, f32 scale */
#define LRQ_BLOCK 64u      /* values per scale in the LOWRANKQ bodies the encoder writes */

/* ---- small helpers */

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
static inline uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline int finite32(uint32_t u) { return (u & 0x7f800000u) != 0x7f800000u; }
static inline int finite16(uint16_t h) { return (h & 0x7c00u) != 0x7c00u; }
static inline int finite_bf16(uint16_t h) { return (h & 0x7f80u) != 0x7f80u; }
static inline size_t ceil8(uint64_t bits) { return (size_t)((bits + 7) / 8); }

/* popcount without -mpopcnt (the builtin would be a libgcc call) */
static inline unsigned pop64(uint64_t x)
{
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (unsigned)((x * 0x0101010101010101ull) >> 56);
}

/* c ? x : y with masks, no branch: the compiler keeps the float operations
 * of both sides unconditional (trapping math would stop it speculating them),
 * so loops over these conversions vectorize. */
static inline uint32_t sel(int c, uint32_t x, uint32_t y)
{
    uint32_t m = 0u - (uint32_t)c;
    return (x & m) | (y & ~m);
}

/* f16 -> f32, exact and branch-free (the same bits as tvs_f16_to_f32). */
static inline float h2f(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, a = h & 0x7fffu, e = a & 0x7c00u;
    uint32_t norm = (a << 13) + (112u << 23);
    uint32_t sub = f2u(u2f((a << 13) + (113u << 23)) - u2f(113u << 23));
    uint32_t r = sel(e == 0x7c00u, norm + (112u << 23), sel(e == 0, sub, norm));
    return u2f(r | sign);
}

/* f32 -> f16, round to nearest even (the same bits as tvs_f32_to_f16).
 * Subnormals: adding 0.5 leaves the f16 subnormal units in the low bits,
 * rounded by the FPU. */
static inline uint16_t f2h(float f)
{
    uint32_t u = f2u(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    uint32_t nan = 0x7e00u | ((a >> 13) & 0x3ffu);
    uint32_t m = a - 0x38000000u;
    uint32_t norm = (m + 0xfffu + ((m >> 13) & 1)) >> 13;
    uint32_t sub = f2u(u2f(a) + 0.5f) - 0x3f000000u;
    uint32_t r = sel(a > 0x7f800000u, nan,
                     sel(a >= 0x477ff000u, 0x7c00u, sel(a >= 0x38800000u, norm, sub)));
    return (uint16_t)(sign | r);
}

/* f32 -> bf16, round to nearest even (the same bits as tvs_f32_to_bf16). */
static inline uint16_t f2bf(float f)
{
    uint32_t u = f2u(f);
    uint32_t r = (u + 0x7fffu + ((u >> 16) & 1)) >> 16;
    return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40u : r);
}

/* Bits [pos, pos + nb) of an LSB-first stream of @p len bytes (nb <= 57);
 * bytes past the end read as zero. */
static inline uint64_t bits_at(const uint8_t *p, size_t len, uint64_t pos, unsigned nb)
{
    size_t b = (size_t)(pos >> 3);
    uint64_t v = 0;
    if (b + 8 <= len)
        v = tvs_load_le64(p + b);
    else
        for (size_t i = 0; i < 8 && b + i < len; i++)
            v |= (uint64_t)p[b + i] << (8 * i);
    v >>= pos & 7;
    return v & ((1ull << nb) - 1);
}

static inline void set_bits(uint64_t *w, size_t a, size_t b)   /* bits [a, b) */
{
    while (a < b) {
        size_t i = a / 64, lo = a % 64, hi = TVS_MIN(b - i * 64, 64);
        uint64_t m = (hi == 64 ? ~0ull : (1ull << hi) - 1) & ~((1ull << lo) - 1);
        w[i] |= m;
        a = i * 64 + hi;
    }
}

/* ---- LEB128 */

static size_t leb_len(uint32_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *leb_put(uint8_t *p, uint32_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* One varint at p[*off]: < 2^32, at most 5 bytes, not overlong. */
static int leb_read(uint32_t *out, const uint8_t *p, size_t len, size_t *off)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < 5; i++) {
        if (*off >= len)
            return tvs__fail(TVS_ECORRUPT, "mask varint truncated at mask byte %zu", *off);
        uint8_t b = p[(*off)++];
        if (i == 4 && b > 0x0f)
            return tvs__fail(TVS_ECORRUPT, "mask varint at mask byte %zu exceeds 2^32 - 1",
                             *off - 5);
        v |= (uint32_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            if (b == 0 && i > 0)
                return tvs__fail(TVS_ECORRUPT, "overlong mask varint at mask byte %zu",
                                 *off - i - 1);
            *out = v;
            return 0;
        }
    }
    return tvs__fail(TVS_ECORRUPT, "mask varint longer than 5 bytes");   /* not reached */
}

static inline int leb_next(uint32_t *out, const uint8_t *p, size_t len, size_t *off)
{
    if (*off < len && p[*off] < 0x80) {
        *out = p[(*off)++];
        return 0;
    }
    return leb_read(out, p, len, off);
}

/* ---- reading headers: a cursor whose failures name what was read */

typedef struct {
    const uint8_t *p;
    size_t len, off;
} rd;

static int rd_need(rd *r, size_t k, const char *what)
{
    if (k > r->len - r->off)
        return tvs__fail(TVS_ECORRUPT, "%s truncated (need %zu bytes at byte %zu, have %zu)",
                         what, k, r->off, r->len - r->off);
    return 0;
}

static int rd_u8(rd *r, uint8_t *v, const char *what)
{
    int rc = rd_need(r, 1, what);
    if (!rc)
        *v = r->p[r->off++];
    return rc;
}

static int rd_u16(rd *r, uint16_t *v, const char *what)
{
    int rc = rd_need(r, 2, what);
    if (!rc)
        *v = ld16(r->p + r->off), r->off += 2;
    return rc;
}

static int rd_u32(rd *r, uint32_t *v, const char *what)
{
    int rc = rd_need(r, 4, what);
    if (!rc)
        *v = tvs_load_le32(r->p + r->off), r->off += 4;
    return rc;
}

static int rd_f32(rd *r, float *v, const char *what)
{
    uint32_t u;
    int rc = rd_u32(r, &u, what);
    if (rc)
        return rc;
    if (!finite32(u))
        return tvs__fail(TVS_ECORRUPT, "%s is not finite (0x%08x)", what, u);
    *v = u2f(u);
    return 0;
}

static int rd_take(rd *r, const uint8_t **out, uint64_t k, const char *what)
{
    if (k > r->len - r->off)
        return tvs__fail(TVS_ECORRUPT, "%s truncated (need %llu bytes at byte %zu, have %zu)",
                         what, (unsigned long long)k, r->off, r->len - r->off);
    *out = r->p + r->off;
    r->off += (size_t)k;
    return 0;
}

static int rd_end(rd *r)
{
    if (r->off != r->len)
        return tvs__fail(TVS_ECORRUPT, "%zu trailing bytes after the payload", r->len - r->off);
    return 0;
}

/* ---- names */

const char *tvs_lossy_codec_name(unsigned codec)
{
    static const char *const names[] = { "zero", "sign", "blockq", "sparseq", "lowrank",
                                         "verbatim", "lowrankq" };
    return codec < TVS_LC_COUNT ? names[codec] : "?";
}

const char *tvs_mask_layout_name(unsigned layout)
{
    static const char *const names[] = { "all", "bitmap", "index", "runs" };
    return layout <= TVS_MASK_RUNS ? names[layout] : "?";
}

int tvs_lossy_dtype_ok(tvs_dtype dt)
{
    return dt == TVS_DTYPE_BF16 || dt == TVS_DTYPE_F16 || dt == TVS_DTYPE_F32;
}

static unsigned width_of(tvs_dtype dt) { return dt == TVS_DTYPE_F32 ? 4 : 2; }

/* =====================================================================
 * Masks
 * ===================================================================== */

typedef struct {
    uint8_t layout;
    uint32_t k;            /* kept entries */
    size_t n;              /* entries */
    const uint8_t *p;      /* mask bytes */
    size_t len, off;       /* their count; next varint (INDEX, RUNS) */
    size_t pos;            /* entries handed out */
    uint64_t kept;         /* INDEX: indices read; RUNS: sum of kept runs read */
    uint64_t next;         /* INDEX: the pending kept index (have_next) */
    int have_next;
    int in_kept;           /* RUNS: kind of the current run */
    uint64_t run_end;      /* RUNS: entries covered by the runs read */
} mask_cur;

static int mask_open(mask_cur *c, rd *r, size_t n)
{
    uint32_t mask_len;
    int rc;
    memset(c, 0, sizeof *c);
    c->n = n;
    c->in_kept = 1;   /* so the first run read is an unkept one */
    if ((rc = rd_u8(r, &c->layout, "mask layout")) || (rc = rd_u32(r, &c->k, "mask count")) ||
        (rc = rd_u32(r, &mask_len, "mask length")))
        return rc;
    if (c->layout > TVS_MASK_RUNS)
        return tvs__fail(TVS_ECORRUPT, "unknown mask layout %u", c->layout);
    if (c->k < 1 || c->k > n)
        return tvs__fail(TVS_ECORRUPT, "mask keeps %u of %zu entries (must be 1..%zu)", c->k,
                         n, n);
    if (c->layout == TVS_MASK_ALL && (c->k != n || mask_len != 0))
        return tvs__fail(TVS_ECORRUPT, "mask layout all keeps %u of %zu entries with %u mask "
                         "bytes (must keep all, 0 bytes)", c->k, n, mask_len);
    if (c->layout == TVS_MASK_BITMAP && mask_len != ceil8(n))
        return tvs__fail(TVS_ECORRUPT, "bitmap mask of %u bytes, not %zu", mask_len, ceil8(n));
    if ((rc = rd_take(r, &c->p, mask_len, "mask")))
        return rc;
    c->len = mask_len;
    if (c->layout == TVS_MASK_BITMAP) {
        uint64_t pop = 0;
        size_t i = 0;
        for (; i + 8 <= c->len; i += 8)
            pop += (uint64_t)pop64(tvs_load_le64(c->p + i));
        for (; i < c->len; i++)
            pop += (uint64_t)pop64(c->p[i]);
        if (pop != c->k)
            return tvs__fail(TVS_ECORRUPT, "bitmap mask has %llu bits set, not %u",
                             (unsigned long long)pop, c->k);
        if (n % 8 && (c->p[c->len - 1] >> (n % 8)))
            return tvs__fail(TVS_ECORRUPT, "bitmap mask sets padding bits past entry %zu", n);
    }
    return 0;
}

static int index_next(mask_cur *c, uint64_t *w, size_t m, size_t *kc)
{
    size_t end = c->pos + m, cnt = 0;
    for (;;) {
        if (!c->have_next) {
            if (c->kept == c->k)
                break;
            uint32_t gap;
            int rc = leb_next(&gap, c->p, c->len, &c->off);
            if (rc)
                return tvs__failctx(rc, "mask index list ends after %llu of %u entries",
                                    (unsigned long long)c->kept, c->k);
            c->next = c->kept ? c->next + 1 + gap : gap;
            if (c->next >= c->n)
                return tvs__fail(TVS_ECORRUPT, "mask index %llu is out of range (%zu entries)",
                                 (unsigned long long)c->next, c->n);
            c->have_next = 1;
            if (++c->kept == c->k && c->off != c->len)
                return tvs__fail(TVS_ECORRUPT, "mask index list has %zu trailing bytes",
                                 c->len - c->off);
        }
        if (c->next >= end)
            break;
        size_t i = (size_t)c->next - c->pos;
        w[i / 64] |= 1ull << (i % 64);
        cnt++;
        c->have_next = 0;
    }
    *kc = cnt;
    return 0;
}

static int runs_next(mask_cur *c, uint64_t *w, size_t m, size_t *kc)
{
    size_t cur = c->pos, end = c->pos + m, cnt = 0;
    while (cur < end) {
        if (cur == c->run_end) {
            uint32_t v;
            int rc;
            if (c->off == c->len)
                return tvs__fail(TVS_ECORRUPT, "mask runs sum to %llu, not %zu",
                                 (unsigned long long)c->run_end, c->n);
            if ((rc = leb_next(&v, c->p, c->len, &c->off)))
                return rc;
            c->in_kept = !c->in_kept;
            if (c->in_kept && v == 0)
                return tvs__fail(TVS_ECORRUPT, "mask has an empty kept run at entry %llu",
                                 (unsigned long long)c->run_end);
            c->run_end += v;
            if (c->run_end > c->n)
                return tvs__fail(TVS_ECORRUPT, "mask runs sum to more than %zu entries "
                                 "(%llu so far)", c->n, (unsigned long long)c->run_end);
            if (c->in_kept && (c->kept += v) > c->k)
                return tvs__fail(TVS_ECORRUPT, "mask kept runs sum to more than %u", c->k);
            continue;
        }
        size_t seg = (size_t)TVS_MIN(c->run_end, (uint64_t)end) - cur;
        if (c->in_kept) {
            set_bits(w, cur - c->pos, cur - c->pos + seg);
            cnt += seg;
        }
        cur += seg;
    }
    *kc = cnt;
    return 0;
}

/* Keep bits of the next @p m entries (m <= PIECE) into w[0 .. ceil(m/64)). */
static int mask_next(mask_cur *c, uint64_t *w, size_t m, size_t *kc)
{
    size_t nw = (m + 63) / 64;
    int rc = 0;
    memset(w, 0, nw * 8);
    switch (c->layout) {
    case TVS_MASK_ALL:
        set_bits(w, 0, m);
        *kc = m;
        break;
    case TVS_MASK_BITMAP: {
        /* pieces start at multiples of PIECE, so on a byte boundary; bits
         * past n in the last byte are zero (checked by mask_open) */
        const uint8_t *src = c->p + c->pos / 8;
        size_t cnt = 0, nbytes = ceil8(m);
        for (size_t i = 0; i < nbytes; i++)
            w[i / 8] |= (uint64_t)src[i] << (8 * (i % 8));
        for (size_t i = 0; i < nw; i++)
            cnt += (size_t)pop64(w[i]);
        *kc = cnt;
        break;
    }
    case TVS_MASK_INDEX:
        rc = index_next(c, w, m, kc);
        break;
    case TVS_MASK_RUNS:
        rc = runs_next(c, w, m, kc);
        break;
    }
    c->pos += m;
    return rc;
}

static int mask_finish(mask_cur *c)
{
    if (c->layout == TVS_MASK_INDEX && (c->kept != c->k || c->have_next || c->off != c->len))
        return tvs__fail(TVS_ECORRUPT, "mask index list holds %llu of %u entries",
                         (unsigned long long)c->kept, c->k);
    if (c->layout == TVS_MASK_RUNS) {
        if (c->off < c->len && c->in_kept) {   /* an explicit final unkept run of 0 */
            uint32_t v = 0;
            int rc = leb_next(&v, c->p, c->len, &c->off);
            if (rc)
                return rc;
            if (v != 0)
                return tvs__fail(TVS_ECORRUPT, "mask runs sum to %llu, not %zu",
                                 (unsigned long long)c->run_end + v, c->n);
        }
        if (c->off != c->len)
            return tvs__fail(TVS_ECORRUPT, "mask runs have %zu trailing bytes",
                             c->len - c->off);
        if (c->kept != c->k)
            return tvs__fail(TVS_ECORRUPT, "mask kept runs sum to %llu, not %u",
                             (unsigned long long)c->kept, c->k);
    }
    return 0;
}

/* =====================================================================
 * BLOCKQ bodies
 * ===================================================================== */

typedef struct {
    unsigned bits, flags, block;
    float mul, half;           /* half = (2^bits - 1) / 2 */
    const uint8_t *scales, *zeros, *idx;
    size_t idx_len, m, nb, j;  /* j: next value */
    float lv[256];             /* CODEBOOK levels */
} bq_body;

static int bq_open(bq_body *b, rd *r, size_t m)
{
    uint8_t bits, flags;
    uint16_t block;
    int rc;
    const uint8_t *lv = NULL;
    if ((rc = rd_u8(r, &bits, "blockq bits")) || (rc = rd_u16(r, &block, "blockq block")) ||
        (rc = rd_u8(r, &flags, "blockq flags")) || (rc = rd_f32(r, &b->mul, "blockq mul")))
        return rc;
    if (bits < 1 || bits > 8)
        return tvs__fail(TVS_ECORRUPT, "blockq bits %u not in 1..8", bits);
    if (block < TVS_BQ_MIN_BLOCK || block > TVS_BQ_MAX_BLOCK)
        return tvs__fail(TVS_ECORRUPT, "blockq block %u not in %u..%u", block,
                         TVS_BQ_MIN_BLOCK, TVS_BQ_MAX_BLOCK);
    if (flags & ~(unsigned)(TVS_BQ_ZERO | TVS_BQ_CODEBOOK))
        return tvs__fail(TVS_ECORRUPT, "unknown blockq flags 0x%02x", flags);
    b->bits = bits;
    b->flags = flags;
    b->block = block;
    b->half = (float)((1u << bits) - 1) * 0.5f;
    b->m = m;
    b->j = 0;
    b->nb = (m + block - 1) / block;
    if (flags & TVS_BQ_CODEBOOK) {
        if ((rc = rd_take(r, &lv, 4u << bits, "blockq codebook")))
            return rc;
        for (unsigned q = 0; q < 1u << bits; q++) {
            uint32_t u = tvs_load_le32(lv + 4 * q);
            if (!finite32(u))
                return tvs__fail(TVS_ECORRUPT, "blockq codebook level %u is not finite", q);
            b->lv[q] = u2f(u);
        }
    }
    if ((rc = rd_take(r, &b->scales, 2 * (uint64_t)b->nb, "blockq scales")))
        return rc;
    b->zeros = NULL;
    if ((flags & TVS_BQ_ZERO) && (rc = rd_take(r, &b->zeros, 2 * (uint64_t)b->nb,
                                                   "blockq zero points")))
        return rc;
    b->idx_len = ceil8((uint64_t)m * bits);
    if ((rc = rd_take(r, &b->idx, b->idx_len, "blockq indices")))
        return rc;
    for (size_t i = 0; i < b->nb; i++) {
        if (!finite16(ld16(b->scales + 2 * i)))
            return tvs__fail(TVS_ECORRUPT, "blockq scale of block %zu is not finite", i);
        if (b->zeros && !finite16(ld16(b->zeros + 2 * i)))
            return tvs__fail(TVS_ECORRUPT, "blockq zero point of block %zu is not finite", i);
    }
    unsigned tail = (unsigned)(((uint64_t)m * bits) % 8);
    if (tail && (b->idx[b->idx_len - 1] >> tail))
        return tvs__fail(TVS_ECORRUPT, "blockq index padding bits are not zero");
    return 0;
}

/* Groups of 8 values (exactly `bits` bytes) at a byte boundary, @p avail
 * bytes readable from @p src; @p bits is a constant at every call site, so
 * each width gets its own unrolled code. */
static inline __attribute__((always_inline)) void unpack8(uint8_t *q, const uint8_t *src,
                                                         size_t groups, size_t avail,
                                                         const unsigned bits)
{
    const uint64_t mask = (1u << bits) - 1;
    size_t g = 0;
    for (; g < groups && g * bits + 8 <= avail; g++) {   /* one 8-byte load per group */
        uint64_t v = tvs_load_le64(src + g * bits);
        for (unsigned i = 0; i < 8; i++)
            q[8 * g + i] = (uint8_t)((v >> (i * bits)) & mask);
    }
    for (; g < groups; g++) {
        uint64_t v = 0;
        memcpy(&v, src + g * bits, bits);
        for (unsigned i = 0; i < 8; i++)
            q[8 * g + i] = (uint8_t)((v >> (i * bits)) & mask);
    }
}

/* Indices of @p cnt values starting at bit @p pos of the index stream. */
static void unpack(uint8_t *q, const uint8_t *src, size_t len, uint64_t pos, size_t cnt,
                   unsigned bits)
{
    size_t i = 0;
    for (; i < cnt && (pos & 7); i++, pos += bits)
        q[i] = (uint8_t)bits_at(src, len, pos, bits);
    size_t groups = (cnt - i) / 8, avail = len - (size_t)(pos / 8);
    const uint8_t *s = src + pos / 8;
    if (bits < 8 && tvs__lossy_simd == 1 && tvs__avx512()) {
        size_t g = tvs__unpack8_avx512(q + i, s, groups, avail, bits);
        i += g * 8;
        pos += (uint64_t)g * 8 * bits;
        groups -= g;
        avail -= g * bits;
        s += g * bits;
    }
    switch (bits) {
    case 1: unpack8(q + i, s, groups, avail, 1); break;
    case 2: unpack8(q + i, s, groups, avail, 2); break;
    case 3: unpack8(q + i, s, groups, avail, 3); break;
    case 4: unpack8(q + i, s, groups, avail, 4); break;
    case 5: unpack8(q + i, s, groups, avail, 5); break;
    case 6: unpack8(q + i, s, groups, avail, 6); break;
    case 7: unpack8(q + i, s, groups, avail, 7); break;
    default: memcpy(q + i, s, groups * 8); break;
    }
    i += groups * 8;
    pos += (uint64_t)groups * 8 * bits;
    for (; i < cnt; i++, pos += bits)
        q[i] = (uint8_t)bits_at(src, len, pos, bits);
}

/* The next @p cnt values (cnt <= PIECE): out = mul * (scale * L[q] + zero). */
static int bq_next(bq_body *b, float *out, size_t cnt)
{
    uint8_t q[PIECE];
    if (cnt > b->m - b->j)
        return tvs__fail(TVS_ECORRUPT, "blockq body holds %zu values, more are kept", b->m);
    unpack(q, b->idx, b->idx_len, (uint64_t)b->j * b->bits, cnt, b->bits);
    const float mul = b->mul, h = b->half;
    const int z512 = tvs__lossy_simd == 1 && tvs__avx512();
    size_t t = 0;
    while (t < cnt) {
        size_t jj = b->j + t, blk = jj / b->block;
        size_t seg = TVS_MIN(cnt - t, (blk + 1) * b->block - jj);
        const float s = h2f(ld16(b->scales + 2 * blk));
        const float z = b->zeros ? h2f(ld16(b->zeros + 2 * blk)) : 0.0f;
        float *o = out + t;
        const uint8_t *qq = q + t;
        if (b->flags & TVS_BQ_CODEBOOK)
            for (size_t i = 0; i < seg; i++)
                o[i] = mul * (s * b->lv[qq[i]] + z);
        else
            for (size_t i = z512 ? tvs__bq_deq_avx512(o, qq, seg, s, h, z, mul) : 0; i < seg;
                 i++)
                o[i] = mul * (s * ((float)qq[i] - h) + z);
        t += seg;
    }
    b->j += cnt;
    return 0;
}

/* =====================================================================
 * Unit decoders
 * ===================================================================== */

typedef struct {
    uint8_t codec;
    size_t n;
    mask_cur mk;               /* SIGN, SPARSEQ */
    bq_body bq;                /* BLOCKQ, SPARSEQ */
    /* SIGN */
    float scale;
    const uint8_t *signs;
    size_t signs_len;
    uint64_t sj;               /* kept entries whose sign was used */
    /* LOWRANK, LOWRANKQ */
    uint32_t rows, cols, rank;
    tvs_dtype fdt;
    unsigned fw;
    const uint8_t *u, *v;
    size_t pos;
    float *fac;                /* LOWRANKQ: the dequantized factors (owned) */
    uint8_t version;           /* the lossy chunk's: 1 sums LOWRANKQ by mul+add */
} udec;

static int fdt_ok(unsigned id)
{
    return id == TVS_DTYPE_F16 || id == TVS_DTYPE_BF16 || id == TVS_DTYPE_F32;
}

/* Factor elements to f32. */
static void fac_load(float *dst, const uint8_t *src, size_t cnt, tvs_dtype fdt)
{
    if (fdt == TVS_DTYPE_F32)
        memcpy(dst, src, cnt * 4);
    else if (fdt == TVS_DTYPE_BF16)
        for (size_t i = 0; i < cnt; i++)
            dst[i] = u2f((uint32_t)ld16(src + 2 * i) << 16);
    else
        for (size_t i = 0; i < cnt; i++)
            dst[i] = h2f(ld16(src + 2 * i));
}

static int factors_finite(const uint8_t *p, uint64_t cnt, tvs_dtype fdt, const char *which)
{
    for (uint64_t i = 0; i < cnt; i++) {
        int ok = fdt == TVS_DTYPE_F32    ? finite32(tvs_load_le32(p + 4 * i))
                 : fdt == TVS_DTYPE_BF16 ? finite_bf16(ld16(p + 2 * i))
                                         : finite16(ld16(p + 2 * i));
        if (!ok)
            return tvs__fail(TVS_ECORRUPT, "lowrank factor %s element %llu is not finite",
                             which, (unsigned long long)i);
    }
    return 0;
}

static int lowrank_open(udec *d, rd *r)
{
    uint8_t fdt;
    int rc;
    if ((rc = rd_u32(r, &d->rows, "lowrank rows")) || (rc = rd_u32(r, &d->cols, "lowrank cols")) ||
        (rc = rd_u32(r, &d->rank, "lowrank rank")) || (rc = rd_u8(r, &fdt, "lowrank dtype")) ||
        (rc = rd_f32(r, &d->scale, "lowrank scale")))
        return rc;
    if ((uint64_t)d->rows * d->cols != d->n)
        return tvs__fail(TVS_ECORRUPT, "lowrank shape %ux%u does not hold %zu elements",
                         d->rows, d->cols, d->n);
    if (d->rank < 1 || d->rank > TVS_LOSSY_MAX_RANK)
        return tvs__fail(TVS_ECORRUPT, "lowrank rank %u not in 1..%u", d->rank,
                         TVS_LOSSY_MAX_RANK);
    if (!fdt_ok(fdt))
        return tvs__fail(TVS_ECORRUPT, "lowrank factor dtype %u is not F16, BF16 or F32", fdt);
    d->fdt = (tvs_dtype)fdt;
    d->fw = width_of(d->fdt);
    uint64_t nu = (uint64_t)d->rows * d->rank, nv = (uint64_t)d->rank * d->cols;
    if ((rc = rd_take(r, &d->u, nu * d->fw, "lowrank U")) ||
        (rc = rd_take(r, &d->v, nv * d->fw, "lowrank V")) ||
        (rc = factors_finite(d->u, nu, d->fdt, "U")) ||
        (rc = factors_finite(d->v, nv, d->fdt, "V")))
        return rc;
    d->pos = 0;
    return 0;
}

/*
 * LOWRANKQ: the header, then each factor's BLOCKQ body, dequantized into
 * d->fac in the order stored: U's columns (U transposed, rank x rows), then
 * V's rows (rank x cols).
 */
static int lowrankq_open(udec *d, rd *r)
{
    int rc;
    if ((rc = rd_u32(r, &d->rows, "lowrankq rows")) ||
        (rc = rd_u32(r, &d->cols, "lowrankq cols")) ||
        (rc = rd_u32(r, &d->rank, "lowrankq rank")) || (rc = rd_f32(r, &d->scale, "lowrankq scale")))
        return rc;
    if ((uint64_t)d->rows * d->cols != d->n)
        return tvs__fail(TVS_ECORRUPT, "lowrankq shape %ux%u does not hold %zu elements",
                         d->rows, d->cols, d->n);
    if (d->rank < 1 || d->rank > TVS_LOSSY_MAX_RANK)
        return tvs__fail(TVS_ECORRUPT, "lowrankq rank %u not in 1..%u", d->rank,
                         TVS_LOSSY_MAX_RANK);
    uint64_t nu = (uint64_t)d->rows * d->rank, nf = nu + (uint64_t)d->rank * d->cols;
    if (nf > d->n)
        return tvs__fail(TVS_ECORRUPT, "lowrankq factors hold %llu values, more than the "
                         "unit's %zu elements", (unsigned long long)nf, d->n);
    if ((rc = rd_need(r, 2 * (size_t)d->rank * BQ_HDR, "lowrankq factor bodies")))
        return rc;
    if (!(d->fac = tvs_malloc((size_t)nf * sizeof(float))))
        return tvs__fail(TVS_ENOMEM, "out of memory for %llu lowrankq factor values",
                         (unsigned long long)nf);
    float *o = d->fac;
    bq_body b;
    for (uint32_t t = 0; t < 2 * d->rank; t++) {
        int is_u = t < d->rank;
        size_t m = is_u ? d->rows : d->cols;
        if ((rc = bq_open(&b, r, m)))
            return tvs__failctx(rc, "lowrankq %s factor %u", is_u ? "U" : "V",
                                is_u ? t : t - d->rank);
        for (size_t at = 0; at < m; at += PIECE) {
            size_t cnt = TVS_MIN(m - at, PIECE);
            if ((rc = bq_next(&b, o, cnt)))
                return rc;
            o += cnt;
        }
    }
    uint32_t bad = 0;   /* no early exit: the loop vectorizes */
    for (uint64_t i = 0; i < nf; i++)
        bad |= !finite32(f2u(d->fac[i]));
    if (bad)
        for (uint64_t i = 0; i < nf; i++)
            if (!finite32(f2u(d->fac[i])))
                return tvs__fail(TVS_ECORRUPT, "lowrankq %s factor value %llu is not finite",
                                 i < nu ? "U" : "V", (unsigned long long)(i < nu
                                     ? i % d->rows * d->rank + i / d->rows : i - nu));
    d->u = (const uint8_t *)d->fac;
    d->v = (const uint8_t *)(d->fac + nu);
    d->fdt = TVS_DTYPE_F32;
    d->fw = 4;
    d->pos = 0;
    return 0;
}

static void udec_close(udec *d)
{
    tvs_free(d->fac);
    d->fac = NULL;
}

static int udec_open(udec *d, uint8_t codec, tvs_span payload, size_t n, uint8_t version)
{
    rd r = { payload.ptr, payload.len, 0 };
    int rc = 0;
    d->fac = NULL;
    d->version = version;
    d->codec = codec;
    d->n = n;
    if (n < 1 || n > TVS_LOSSY_MAX_UNIT)
        return tvs__fail(TVS_ECORRUPT, "unit of %zu elements (must be 1..%u)", n,
                         TVS_LOSSY_MAX_UNIT);
    switch (codec) {
    case TVS_LC_ZERO:
        break;
    case TVS_LC_SIGN:
        if ((rc = rd_f32(&r, &d->scale, "sign scale")) || (rc = mask_open(&d->mk, &r, n)))
            return rc;
        d->signs_len = ceil8(d->mk.k);
        if ((rc = rd_take(&r, &d->signs, d->signs_len, "sign bits")))
            return rc;
        if (d->mk.k % 8 && (d->signs[d->signs_len - 1] >> (d->mk.k % 8)))
            return tvs__fail(TVS_ECORRUPT, "sign padding bits are not zero");
        d->sj = 0;
        break;
    case TVS_LC_BLOCKQ:
        rc = bq_open(&d->bq, &r, n);
        break;
    case TVS_LC_SPARSEQ:
        if ((rc = mask_open(&d->mk, &r, n)))
            return rc;
        rc = bq_open(&d->bq, &r, d->mk.k);
        break;
    case TVS_LC_LOWRANK:
        rc = lowrank_open(d, &r);
        break;
    case TVS_LC_LOWRANKQ:
        rc = lowrankq_open(d, &r);
        break;
    case TVS_LC_VERBATIM:
        return tvs__fail(TVS_EINVAL, "verbatim units hold elements, not a delta");
    default:
        return tvs__fail(TVS_ECORRUPT, "unknown unit codec %u", codec);
    }
    return rc ? rc : rd_end(&r);
}

int tvs__lossy_simd = 1;   /* tests set 0 (reference loops), 2 (SSE2, never AVX2) or 3 */

/* dep4[m][x]: the low bits of x deposited at the set bits of the 4-bit mask m. */
static const uint8_t dep4[16][16] = {
    {  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0,  0 },
    {  0,  1,  0,  1,  0,  1,  0,  1,  0,  1,  0,  1,  0,  1,  0,  1 },
    {  0,  2,  0,  2,  0,  2,  0,  2,  0,  2,  0,  2,  0,  2,  0,  2 },
    {  0,  1,  2,  3,  0,  1,  2,  3,  0,  1,  2,  3,  0,  1,  2,  3 },
    {  0,  4,  0,  4,  0,  4,  0,  4,  0,  4,  0,  4,  0,  4,  0,  4 },
    {  0,  1,  4,  5,  0,  1,  4,  5,  0,  1,  4,  5,  0,  1,  4,  5 },
    {  0,  2,  4,  6,  0,  2,  4,  6,  0,  2,  4,  6,  0,  2,  4,  6 },
    {  0,  1,  2,  3,  4,  5,  6,  7,  0,  1,  2,  3,  4,  5,  6,  7 },
    {  0,  8,  0,  8,  0,  8,  0,  8,  0,  8,  0,  8,  0,  8,  0,  8 },
    {  0,  1,  8,  9,  0,  1,  8,  9,  0,  1,  8,  9,  0,  1,  8,  9 },
    {  0,  2,  8, 10,  0,  2,  8, 10,  0,  2,  8, 10,  0,  2,  8, 10 },
    {  0,  1,  2,  3,  8,  9, 10, 11,  0,  1,  2,  3,  8,  9, 10, 11 },
    {  0,  4,  8, 12,  0,  4,  8, 12,  0,  4,  8, 12,  0,  4,  8, 12 },
    {  0,  1,  4,  5,  8,  9, 12, 13,  0,  1,  4,  5,  8,  9, 12, 13 },
    {  0,  2,  4,  6,  8, 10, 12, 14,  0,  2,  4,  6,  8, 10, 12, 14 },
    {  0,  1,  2,  3,  4,  5,  6,  7,  8,  9, 10, 11, 12, 13, 14, 15 },
};

static const uint8_t pop4[16] = { 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4 };

/* Eight SIGN values: keep bits @p k, negative bits @p g (a subset of k). */
static inline void sign8_ref(float *o, unsigned k, unsigned g, uint32_t s)
{
    for (unsigned t = 0; t < 8; t++)
        o[t] = u2f((s & (0u - ((k >> t) & 1u))) ^ ((g >> t) & 1u) << 31);
}

#if defined(__SSE2__)
static inline void sign8_sse2(float *o, unsigned k, unsigned g, __m128i s)
{
    const __m128i lo = _mm_setr_epi32(1, 2, 4, 8), hi = _mm_setr_epi32(16, 32, 64, 128);
    __m128i kk = _mm_set1_epi32((int)k), gg = _mm_set1_epi32((int)g);
    __m128i k0 = _mm_cmpeq_epi32(_mm_and_si128(kk, lo), lo);
    __m128i k1 = _mm_cmpeq_epi32(_mm_and_si128(kk, hi), hi);
    __m128i g0 = _mm_slli_epi32(_mm_cmpeq_epi32(_mm_and_si128(gg, lo), lo), 31);
    __m128i g1 = _mm_slli_epi32(_mm_cmpeq_epi32(_mm_and_si128(gg, hi), hi), 31);
    _mm_storeu_si128((__m128i *)o, _mm_xor_si128(_mm_and_si128(k0, s), g0));
    _mm_storeu_si128((__m128i *)(o + 4), _mm_xor_si128(_mm_and_si128(k1, s), g1));
}
#endif

/*
 * SIGN: per 32 entries, the signs of its kept entries (one read of the sign
 * stream), deposited at the kept positions a nibble at a time; then eight
 * values per mask byte.
 */
static void sign_piece(udec *d, float *out, const uint64_t *w, size_t m)
{
    const uint32_t s = f2u(d->scale);
#if defined(__SSE2__)
    const __m128i sv = _mm_set1_epi32((int)s);
    const int simd = tvs__lossy_simd;
#endif
    for (size_t g = 0; g * 32 < m; g++) {
        uint32_t kw = (uint32_t)(w[g / 2] >> (32 * (g % 2)));
        unsigned c = pop64(kw);
        uint64_t sb = bits_at(d->signs, d->signs_len, d->sj, c);
        d->sj += c;
        size_t e = TVS_MIN(m - g * 32, 32);
        float *o = out + g * 32;
        float tail[8];
        for (size_t j = 0; j < e; j += 8) {
            unsigned kb = (kw >> j) & 0xffu;
            unsigned lo = dep4[kb & 15][sb & 15];
            sb >>= pop4[kb & 15];
            unsigned hi = dep4[kb >> 4][sb & 15];
            sb >>= pop4[kb >> 4];
            unsigned gb = lo | hi << 4;
            float *oo = j + 8 <= e ? o + j : tail;
#if defined(__SSE2__)
            if (simd)
                sign8_sse2(oo, kb, gb, sv);
            else
#endif
                sign8_ref(oo, kb, gb, s);
            if (oo == tail)
                memcpy(o + j, tail, (e - j) * sizeof *o);
        }
    }
}

/*
 * SPARSEQ: the kc kept values sit at out[m - kc .. m); spread them out in
 * place, 64 entries at a time. The j-th kept value never sits before its
 * entry, so the values of a word of entries lie at or past the word and
 * past every earlier word. When they lie past the word too, zero it and
 * copy them in; else copy them aside first.
 */
static void scatter(float *out, const uint64_t *w, size_t m, size_t kc)
{
    size_t src = m - kc;
    for (size_t g = 0; g * 64 < m; g++) {
        size_t e = TVS_MIN(m - g * 64, 64);
        uint64_t kw = w[g], full = e == 64 ? ~0ull : (1ull << e) - 1;
        float *o = out + g * 64, tmp[64];
        const float *from = out + src;
        if (kw == full) {
            memmove(o, from, e * sizeof *o);
            src += e;
            continue;
        }
        unsigned c = pop64(kw);
        if (src < g * 64 + e) {
            memcpy(tmp, from, c * sizeof *tmp);
            from = tmp;
        }
        src += c;
        for (size_t i = 0; i < e; i++)
            o[i] = 0.0f;
        for (unsigned j = 0; kw; j++, kw &= kw - 1)
            o[__builtin_ctzll(kw)] = from[j];
    }
}

/* Factor element x of a row of V. */
static inline float fac_at(const uint8_t *p, size_t x, tvs_dtype fdt)
{
    if (fdt == TVS_DTYPE_F32) {
        float f;
        memcpy(&f, p + 4 * x, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, p + 2 * x, 2);
    return fdt == TVS_DTYPE_BF16 ? u2f((uint32_t)h << 16) : h2f(h);
}

/*
 * o[x] = o[x] + u[r] * V[r][j0 + x] for r = r0 .. r1 in order, four ranks per
 * pass over o (the sums happen in the same order as one rank at a time).
 * @p fdt is a constant at each call site, so each dtype gets its own loops.
 */
static inline __attribute__((always_inline)) void lr_accum(float *o, size_t sl, const float *u,
                                                           const uint8_t *v, size_t stride,
                                                           uint32_t rank, const tvs_dtype fdt)
{
    uint32_t r = 0;
    for (; r + 4 <= rank; r += 4) {
        const uint8_t *v0 = v + r * stride, *v1 = v0 + stride, *v2 = v1 + stride;
        const uint8_t *v3 = v2 + stride;
        const float u0 = u[r], u1 = u[r + 1], u2 = u[r + 2], u3 = u[r + 3];
        for (size_t x = 0; x < sl; x++)
            o[x] = (((o[x] + u0 * fac_at(v0, x, fdt)) + u1 * fac_at(v1, x, fdt)) +
                    u2 * fac_at(v2, x, fdt)) + u3 * fac_at(v3, x, fdt);
    }
    for (; r < rank; r++) {
        const uint8_t *v0 = v + r * stride;
        const float u0 = u[r];
        for (size_t x = 0; x < sl; x++)
            o[x] = o[x] + u0 * fac_at(v0, x, fdt);
    }
}

/*
 * LOWRANKQ, the reference loop: rows [0, nrows) by columns [j0, j1) of
 * scale * U·V, column j of row k at o[k * ldo + j - j0], U[k][r] at
 * u[r * ldu + k] (U transposed), each sum fused multiply-adds in rank order
 * (SPEC.md 2.7). fmaf is exact on every machine (glibc takes the
 * instruction where the CPU has it, else computes it in software, slowly),
 * so every path gives these bits. With @p v1 (a version 1 chunk), each sum
 * is acc = acc + u * v instead, every product and sum rounded to f32, as
 * LOWRANK's loop does: only old objects take it, so it stays this plain
 * loop (vectorized over the strip by the compiler, the bits unchanged:
 * -ffp-contract=off).
 */
static void lrq_ref(float *o, size_t ldo, const float *u, size_t ldu, const float *v,
                    size_t cols, uint32_t rank, size_t nrows, size_t j0, size_t j1, float scale,
                    int v1)
{
    for (size_t k = 0; k < nrows; k++) {
        float *ok = o + k * ldo;
        for (size_t j = j0; j < j1; j += STRIP) {   /* a strip of sums, a rank at a time */
            const size_t sl = TVS_MIN(j1 - j, STRIP);
            float *restrict acc = ok + (j - j0);
            for (size_t x = 0; x < sl; x++)
                acc[x] = 0.0f;
            for (uint32_t r = 0; r < rank; r++) {
                const float ur = u[r * ldu + k], *restrict vr = v + (size_t)r * cols + j;
                if (v1)
                    for (size_t x = 0; x < sl; x++)
                        acc[x] = acc[x] + ur * vr[x];
                else
                    for (size_t x = 0; x < sl; x++)
                        acc[x] = fmaf(ur, vr[x], acc[x]);
            }
            for (size_t x = 0; x < sl; x++)
                acc[x] = scale * acc[x];
        }
    }
}

/* LOWRANKQ's kernels, in order of preference (all give the same bits). */
enum { LRQ_REF, LRQ_AVX2, LRQ_AVX512 };

static int lrq_kernel(void)
{
    if (tvs__lossy_simd == 1 && tvs__avx512())
        return LRQ_AVX512;
    if ((tvs__lossy_simd == 1 || tvs__lossy_simd == 3) && tvs__lrq_fma())
        return LRQ_AVX2;
    return LRQ_REF;
}

/* Rows per register block of the kernel (tiles of a multiple run fastest). */
static size_t lrq_nr(void)
{
    return lrq_kernel() == LRQ_AVX512 ? TVS__LRQ_NR512 : TVS__LRQ_NR;
}

/* Rows [i, i + nrows) by columns [j0, j1) of a LOWRANKQ unit, at o with
 * rows @p ldo apart: the AVX-512 or AVX2+FMA kernel where the CPU has it,
 * else the reference loop (the same bits); a version 1 chunk's rule if it
 * is one. */
static void lrq_tile(float *o, size_t ldo, const udec *d, size_t i, size_t nrows, size_t j0,
                     size_t j1)
{
    const float *u = (const float *)(const void *)d->u + i;   /* U transposed: column i */
    const float *v = (const float *)(const void *)d->v;
    if (d->version == 1) {
        lrq_ref(o, ldo, u, d->rows, v, d->cols, d->rank, nrows, j0, j1, d->scale, 1);
        return;
    }
    switch (lrq_kernel()) {
    case LRQ_AVX512:
        tvs__lrq_rows_avx512(o, ldo, u, d->rows, v, d->cols, d->rank, nrows, j0, j1, d->scale);
        break;
    case LRQ_AVX2:
        tvs__lrq_rows_fma(o, ldo, u, d->rows, v, d->cols, d->rank, nrows, j0, j1, d->scale);
        break;
    default:
        lrq_ref(o, ldo, u, d->rows, v, d->cols, d->rank, nrows, j0, j1, d->scale, 0);
    }
}

/*
 * The next @p m values of a LOWRANKQ unit: a partial row, whole rows
 * together (the AVX2+FMA kernel blocks them), a partial row.
 */
static void lowrankq_rows(udec *d, float *out, size_t m)
{
    const size_t cols = d->cols;
    size_t t = 0;
    while (t < m) {
        size_t i = d->pos / cols, j0 = d->pos % cols, nrows = 1, j1;
        if (j0 == 0 && m - t >= cols) {
            nrows = (m - t) / cols;
            j1 = cols;
        } else
            j1 = TVS_MIN(cols, j0 + (m - t));
        lrq_tile(out + t, cols, d, i, nrows, j0, j1);
        size_t done = nrows == 1 ? j1 - j0 : nrows * cols;
        t += done;
        d->pos += done;
    }
}

static void lowrank_rows(udec *d, float *out, size_t m)
{
    float urow[TVS_LOSSY_MAX_RANK];
    const size_t stride = (size_t)d->cols * d->fw;
    size_t t = 0;
    while (t < m) {
        size_t i = d->pos / d->cols, j0 = d->pos % d->cols;
        size_t len = TVS_MIN(m - t, d->cols - j0);
        fac_load(urow, d->u + (size_t)i * d->rank * d->fw, d->rank, d->fdt);
        for (size_t j = 0; j < len; j += STRIP) {
            size_t sl = TVS_MIN(len - j, STRIP);
            float *o = out + t + j;
            const uint8_t *v = d->v + (j0 + j) * d->fw;
            for (size_t x = 0; x < sl; x++)
                o[x] = 0.0f;
            if (d->fdt == TVS_DTYPE_BF16)
                lr_accum(o, sl, urow, v, stride, d->rank, TVS_DTYPE_BF16);
            else if (d->fdt == TVS_DTYPE_F16)
                lr_accum(o, sl, urow, v, stride, d->rank, TVS_DTYPE_F16);
            else
                lr_accum(o, sl, urow, v, stride, d->rank, TVS_DTYPE_F32);
            const float sc = d->scale;
            for (size_t x = 0; x < sl; x++)
                o[x] = sc * o[x];
        }
        t += len;
        d->pos += len;
    }
}

/* The next @p m (<= PIECE; any for LOWRANK and LOWRANKQ) delta values of the unit. */
static int udec_next(udec *d, float *out, size_t m)
{
    uint64_t w[PIECE / 64];
    size_t kc;
    int rc;
    switch (d->codec) {
    case TVS_LC_ZERO:
        memset(out, 0, m * sizeof *out);
        return 0;
    case TVS_LC_SIGN:
        if ((rc = mask_next(&d->mk, w, m, &kc)))
            return rc;
        sign_piece(d, out, w, m);
        return 0;
    case TVS_LC_BLOCKQ:
        return bq_next(&d->bq, out, m);
    case TVS_LC_SPARSEQ:
        if ((rc = mask_next(&d->mk, w, m, &kc)) || (rc = bq_next(&d->bq, out + m - kc, kc)))
            return rc;
        if (d->mk.layout != TVS_MASK_ALL)
            scatter(out, w, m, kc);
        return 0;
    case TVS_LC_LOWRANK:
        lowrank_rows(d, out, m);
        return 0;
    case TVS_LC_LOWRANKQ:
        lowrankq_rows(d, out, m);
        return 0;
    }
    return tvs__fail(TVS_ECORRUPT, "unknown unit codec %u", d->codec);
}

static int udec_finish(udec *d)
{
    int rc = 0;
    if (d->codec == TVS_LC_SIGN || d->codec == TVS_LC_SPARSEQ)
        rc = mask_finish(&d->mk);
    if (!rc && (d->codec == TVS_LC_BLOCKQ || d->codec == TVS_LC_SPARSEQ) && d->bq.j != d->bq.m)
        rc = tvs__fail(TVS_ECORRUPT, "blockq body holds %zu values, %zu were used", d->bq.m,
                       d->bq.j);
    return rc;
}

int tvs_lossy_unit_decode(float *d, size_t n, uint8_t codec, tvs_span payload)
{
    return tvs__lossy_unit_decode_v(d, n, codec, payload, TVS_LOSSY_VERSION);
}

int tvs__lossy_unit_decode_v(float *d, size_t n, uint8_t codec, tvs_span payload,
                             uint8_t version)
{
    udec dec;
    if (version < TVS_LOSSY_VERSION_MIN || version > TVS_LOSSY_VERSION)
        return tvs__fail(TVS_EINVAL, "lossy unit: chunk version %u (must be %u..%u)", version,
                         TVS_LOSSY_VERSION_MIN, TVS_LOSSY_VERSION);
    int rc = udec_open(&dec, codec, payload, n, version);
    /* LOWRANKQ in one call: its row blocks then never straddle a piece */
    const size_t step = codec == TVS_LC_LOWRANKQ ? n : PIECE;
    for (size_t pos = 0; !rc && pos < n; pos += step)
        rc = udec_next(&dec, d + pos, TVS_MIN(n - pos, step));
    if (!rc)
        rc = udec_finish(&dec);
    udec_close(&dec);
    return rc ? tvs__failctx(rc, "lossy unit (%s)", tvs_lossy_codec_name(codec)) : 0;
}

/* =====================================================================
 * Lossy chunks: framing and apply
 * ===================================================================== */

int tvs_lossy_chunk_begin(tvs_buf *out, uint32_t n_units)
{
    if (n_units < 1)
        return tvs__fail(TVS_EINVAL, "a lossy chunk needs at least one unit");
    int rc = tvs_buf_put_u8(out, TVS_LOSSY_VERSION);
    return rc ? rc : tvs_buf_put_le32(out, n_units);
}

int tvs_lossy_chunk_add(tvs_buf *out, const tvs_lossy_unit *u)
{
    if (u->n < 1 || u->n > TVS_LOSSY_MAX_UNIT)
        return tvs__fail(TVS_EINVAL, "lossy unit of %u elements (must be 1..%u)", u->n,
                         TVS_LOSSY_MAX_UNIT);
    if (u->codec >= TVS_LC_COUNT)
        return tvs__fail(TVS_EINVAL, "unknown unit codec %u", u->codec);
    if (!isfinite(u->err) || !(u->err >= 0) || !isfinite(u->norm) || !(u->norm >= 0))
        return tvs__fail(TVS_EINVAL, "lossy unit err %g / norm %g must be finite and >= 0",
                         (double)u->err, (double)u->norm);
    if (u->payload.len > UINT32_MAX)
        return tvs__fail(TVS_EINVAL, "lossy unit payload of %zu bytes is too large",
                         u->payload.len);
    uint8_t h[UNIT_HDR];
    tvs_store_le32(h, u->n);
    tvs_store_le32(h + 4, f2u(u->err));
    tvs_store_le32(h + 8, f2u(u->norm));
    h[12] = u->codec;
    tvs_store_le32(h + 13, (uint32_t)u->payload.len);
    int rc = tvs_buf_append(out, h, sizeof h);
    return rc ? rc : tvs_buf_append(out, u->payload.ptr, u->payload.len);
}

typedef int (*unit_cb)(const tvs_lossy_unit *u, size_t first, void *p);

/* One pass over the framing; with @p cb NULL, only checks it. */
static int walk(tvs_span chunk, tvs_dtype dt, size_t n, unit_cb cb, void *payload)
{
    if (chunk.len < 5)
        return tvs__fail(TVS_ECORRUPT, "lossy chunk: header truncated (%zu of 5 bytes)",
                         chunk.len);
    if (chunk.ptr[0] < TVS_LOSSY_VERSION_MIN || chunk.ptr[0] > TVS_LOSSY_VERSION)
        return tvs__fail(TVS_ECORRUPT, "lossy chunk: version %u, expected %u..%u",
                         chunk.ptr[0], TVS_LOSSY_VERSION_MIN, TVS_LOSSY_VERSION);
    uint32_t n_units = tvs_load_le32(chunk.ptr + 1);
    if (n_units < 1 || n_units > n || n_units > (chunk.len - 5) / UNIT_HDR)
        return tvs__fail(TVS_ECORRUPT, "lossy chunk: %u units for %zu elements in %zu bytes",
                         n_units, n, chunk.len);
    size_t off = 5, first = 0;
    unsigned w = width_of(dt);
    for (uint32_t i = 0; i < n_units; i++) {
        const uint8_t *h = chunk.ptr + off;
        if (chunk.len - off < UNIT_HDR)
            return tvs__fail(TVS_ECORRUPT, "lossy chunk: unit %u: header truncated (%zu of "
                             "%u bytes)", i, chunk.len - off, UNIT_HDR);
        tvs_lossy_unit u;
        u.n = tvs_load_le32(h);
        uint32_t err = tvs_load_le32(h + 4), norm = tvs_load_le32(h + 8);
        u.err = u2f(err);
        u.norm = u2f(norm);
        u.codec = h[12];
        uint32_t len = tvs_load_le32(h + 13);
        off += UNIT_HDR;
        if (u.n < 1 || u.n > TVS_LOSSY_MAX_UNIT)
            return tvs__fail(TVS_ECORRUPT, "lossy chunk: unit %u: %u elements (must be 1..%u)",
                             i, u.n, TVS_LOSSY_MAX_UNIT);
        if (u.n > n - first)
            return tvs__fail(TVS_ECORRUPT, "lossy chunk: unit %u: elements [%zu, +%u) past "
                             "the chunk's %zu", i, first, u.n, n);
        if (!finite32(err) || (err >> 31 && err != 0x80000000u) || !finite32(norm) ||
            (norm >> 31 && norm != 0x80000000u))
            return tvs__fail(TVS_ECORRUPT, "lossy chunk: unit %u: err or norm is not a "
                             "finite value >= 0", i);
        if (u.codec >= TVS_LC_COUNT)
            return tvs__fail(TVS_ECORRUPT, "lossy chunk: unit %u: unknown codec %u", i, u.codec);
        if (len > chunk.len - off)
            return tvs__fail(TVS_ECORRUPT, "lossy chunk: unit %u: payload of %u bytes truncated "
                             "(%zu left)", i, len, chunk.len - off);
        if (u.codec == TVS_LC_ZERO && len != 0)
            return tvs__fail(TVS_ECORRUPT, "lossy chunk: unit %u: zero unit with %u payload "
                             "bytes", i, len);
        if (u.codec == TVS_LC_VERBATIM && len != (uint64_t)u.n * w)
            return tvs__fail(TVS_ECORRUPT, "lossy chunk: unit %u: verbatim payload of %u "
                             "bytes, not %llu", i, len, (unsigned long long)u.n * w);
        u.payload = (tvs_span){ chunk.ptr + off, len };
        off += len;
        if (cb) {
            int rc = cb(&u, first, payload);
            if (rc)
                return rc;
        }
        first += u.n;
    }
    if (first != n)
        return tvs__fail(TVS_ECORRUPT, "lossy chunk: units cover %zu of %zu elements", first, n);
    if (off != chunk.len)
        return tvs__fail(TVS_ECORRUPT, "lossy chunk: %zu trailing bytes", chunk.len - off);
    return 0;
}

int tvs_lossy_chunk_units(tvs_span chunk, tvs_dtype dt, size_t n, unit_cb cb, void *payload)
{
    if (!tvs_lossy_dtype_ok(dt))
        return tvs__fail(TVS_EINVAL, "lossy chunk of %s elements (must be BF16, F16 or F32)",
                         tvs_dtype_name(dt));
    int rc = walk(chunk, dt, n, NULL, NULL);
    return rc ? rc : walk(chunk, dt, n, cb, payload);
}

/* ---- base + delta, rounded to the element type */

/*
 * A NaN sum becomes the base's NaN, quieted, when the base is NaN, else the
 * canonical quiet NaN: which NaN an addition returns (and the bits of a NaN
 * it makes) differ between machines, the decoded bytes must not.
 */
static void add_bf16_ref(uint8_t *dst, const float *d, size_t m)
{
    for (size_t i = 0; i < m; i++) {
        uint16_t b;
        memcpy(&b, dst + 2 * i, 2);
        uint32_t u = f2u(u2f((uint32_t)b << 16) + d[i]);
        uint16_t nan = (b & 0x7fffu) > 0x7f80u ? (uint16_t)(b | 0x40u) : 0x7fc0u;
        uint16_t o = (u & 0x7fffffffu) > 0x7f800000u ? nan : f2bf(u2f(u));
        memcpy(dst + 2 * i, &o, 2);
    }
}

#if defined(__SSE2__)
/* Eight at a time; a group with an infinite or NaN sum goes to the
 * reference loop (NaNs are quieted, not rounded). Rounding is the integer
 * RNE of f2bf; the arithmetic shift makes the signed pack exact. */
static void add_bf16_sse2(uint8_t *dst, const float *d, size_t m)
{
    const __m128i zero = _mm_setzero_si128(), one = _mm_set1_epi32(1);
    const __m128i bias = _mm_set1_epi32(0x7fff), expm = _mm_set1_epi32(0x7f800000);
    size_t i = 0;
    for (; i + 8 <= m; i += 8) {
        __m128i b = _mm_loadu_si128((const __m128i *)(dst + 2 * i));
        __m128i lo = _mm_castps_si128(_mm_add_ps(_mm_castsi128_ps(_mm_unpacklo_epi16(zero, b)),
                                                 _mm_loadu_ps(d + i)));
        __m128i hi = _mm_castps_si128(_mm_add_ps(_mm_castsi128_ps(_mm_unpackhi_epi16(zero, b)),
                                                 _mm_loadu_ps(d + i + 4)));
        __m128i special = _mm_or_si128(_mm_cmpeq_epi32(_mm_and_si128(lo, expm), expm),
                                       _mm_cmpeq_epi32(_mm_and_si128(hi, expm), expm));
        if (_mm_movemask_epi8(special)) {
            add_bf16_ref(dst + 2 * i, d + i, 8);
            continue;
        }
        lo = _mm_add_epi32(lo, _mm_add_epi32(bias, _mm_and_si128(_mm_srli_epi32(lo, 16), one)));
        hi = _mm_add_epi32(hi, _mm_add_epi32(bias, _mm_and_si128(_mm_srli_epi32(hi, 16), one)));
        _mm_storeu_si128((__m128i *)(dst + 2 * i),
                         _mm_packs_epi32(_mm_srai_epi32(lo, 16), _mm_srai_epi32(hi, 16)));
    }
    add_bf16_ref(dst + 2 * i, d + i, m - i);
}
#endif

static void add_bf16(uint8_t *dst, const float *d, size_t m)
{
#if defined(__SSE2__)
    if (tvs__lossy_simd == 1 && tvs__bq_avx2()) {
        const int z = tvs__avx512();
        const size_t g = z ? 32 : 16;
        size_t i = 0;
        for (;;) {
            i += z ? tvs__add_bf16_avx512(dst + 2 * i, d + i, m - i)
                   : tvs__add_bf16_avx2(dst + 2 * i, d + i, m - i);
            if (m - i < g)
                break;
            add_bf16_ref(dst + 2 * i, d + i, g);   /* a group with an infinite or NaN sum */
            i += g;
        }
        add_bf16_sse2(dst + 2 * i, d + i, m - i);
        return;
    }
    if (tvs__lossy_simd) {
        add_bf16_sse2(dst, d, m);
        return;
    }
#endif
    add_bf16_ref(dst, d, m);
}

static void add_f16(uint8_t *dst, const float *d, size_t m)
{
    for (size_t i = 0; i < m; i++) {
        uint16_t b;
        memcpy(&b, dst + 2 * i, 2);
        uint32_t u = f2u(h2f(b) + d[i]);
        uint32_t nan = sel((b & 0x7fffu) > 0x7c00u, b | 0x200u, 0x7e00u);
        uint16_t o = (uint16_t)sel((u & 0x7fffffffu) > 0x7f800000u, nan, f2h(u2f(u)));
        memcpy(dst + 2 * i, &o, 2);
    }
}

static void add_f32(uint8_t *dst, const float *d, size_t m)
{
    for (size_t i = 0; i < m; i++) {
        uint32_t b;
        memcpy(&b, dst + 4 * i, 4);
        uint32_t u = f2u(u2f(b) + d[i]);
        uint32_t nan = (b & 0x7fffffffu) > 0x7f800000u ? b | 0x400000u : 0x7fc00000u;
        u = (u & 0x7fffffffu) > 0x7f800000u ? nan : u;
        memcpy(dst + 4 * i, &u, 4);
    }
}

static void add_dt(uint8_t *dst, tvs_dtype dt, const float *d, size_t m)
{
    if (dt == TVS_DTYPE_BF16)
        add_bf16(dst, d, m);
    else if (dt == TVS_DTYPE_F16)
        add_f16(dst, d, m);
    else
        add_f32(dst, d, m);
}

int tvs_lossy_add(uint8_t *dst, tvs_dtype dt, const float *d, size_t n)
{
    if (!tvs_lossy_dtype_ok(dt))
        return tvs__fail(TVS_EINVAL, "cannot add a delta to %s elements", tvs_dtype_name(dt));
    add_dt(dst, dt, d, n);
    return 0;
}

typedef struct {
    uint8_t *dst;
    tvs_dtype dt;
    unsigned w;
    uint32_t idx;
    uint8_t version;   /* the chunk's (walk has checked it) */
} apply_ctx;

/*
 * A LOWRANKQ unit into the base, a tile of up to PIECE values at a time:
 * whole rows, a multiple of the kernel's row block (lrq_nr) of them, when
 * that many fit, else one row block by a column range, so the kernel gets
 * full row blocks.
 */
static void lrq_apply(const udec *d, uint8_t *dst, tvs_dtype dt, unsigned w, float *buf)
{
    const size_t rows = d->rows, cols = d->cols, rb = lrq_nr();
    const int whole = cols * rb <= PIECE;
    const size_t nr = whole ? PIECE / cols / rb * rb : rb;
    const size_t wd = whole ? cols : PIECE / rb / 16 * 16;
    for (size_t i = 0; i < rows; i += nr) {
        const size_t h = TVS_MIN(nr, rows - i);
        for (size_t j = 0; j < cols; j += wd) {
            const size_t e = TVS_MIN(cols, j + wd);
            lrq_tile(buf, wd, d, i, h, j, e);
            if (whole)
                add_dt(dst + i * cols * w, dt, buf, h * cols);
            else
                for (size_t k = 0; k < h; k++)
                    add_dt(dst + ((i + k) * cols + j) * w, dt, buf + k * wd, e - j);
        }
    }
}

static int apply_unit(const tvs_lossy_unit *u, size_t first, void *p)
{
    apply_ctx *a = p;
    uint32_t idx = a->idx++;
    uint8_t *dst = a->dst + first * a->w;
    if (u->codec == TVS_LC_VERBATIM) {
        memcpy(dst, u->payload.ptr, (size_t)u->n * a->w);
        return 0;
    }
    float buf[PIECE];
    udec dec;
    int rc = udec_open(&dec, u->codec, u->payload, u->n, a->version);
    if (!rc && u->codec == TVS_LC_LOWRANKQ) {
        lrq_apply(&dec, dst, a->dt, a->w, buf);
    } else {
        for (size_t pos = 0; !rc && pos < u->n; pos += PIECE) {
            size_t m = TVS_MIN(u->n - pos, PIECE);
            if ((rc = udec_next(&dec, buf, m)))
                break;
            add_dt(dst + pos * a->w, a->dt, buf, m);
        }
    }
    if (!rc)
        rc = udec_finish(&dec);
    udec_close(&dec);
    return rc ? tvs__failctx(rc, "lossy chunk: unit %u (%s)", idx,
                             tvs_lossy_codec_name(u->codec))
              : 0;
}

int tvs_lossy_chunk_apply(uint8_t *dst, tvs_dtype dt, size_t n, tvs_span chunk)
{
    apply_ctx a = { dst, dt, tvs_lossy_dtype_ok(dt) ? width_of(dt) : 0, 0,
                    chunk.len ? chunk.ptr[0] : 0 };
    return tvs_lossy_chunk_units(chunk, dt, n, apply_unit, &a);
}

/* ---- describe */

int tvs_lossy_unit_describe(char *out, size_t cap, const tvs_lossy_unit *u)
{
    rd r = { u->payload.ptr, u->payload.len, 0 };
    mask_cur mk;
    int rc = 0, len = 0;
    uint8_t bits = 0, flags = 0, fdt = 0;
    uint16_t block = 0;
    uint32_t rows = 0, cols = 0, rank = 0;
    float f;
    if (!cap)
        return tvs__fail(TVS_EINVAL, "no room to describe a unit");
    out[0] = 0;
    switch (u->codec) {
    case TVS_LC_SIGN:
        if ((rc = rd_f32(&r, &f, "sign scale")) || (rc = mask_open(&mk, &r, u->n)))
            break;
        len = snprintf(out, cap, "density=%.3f mask=%s", (double)mk.k / u->n,
                       tvs_mask_layout_name(mk.layout));
        break;
    case TVS_LC_SPARSEQ:
        if ((rc = mask_open(&mk, &r, u->n)))
            break;
        len = snprintf(out, cap, "density=%.3f mask=%s ", (double)mk.k / u->n,
                       tvs_mask_layout_name(mk.layout));
        /* fall through */
    case TVS_LC_BLOCKQ:
        if (len < 0 || (size_t)len >= cap)
            break;
        if ((rc = rd_u8(&r, &bits, "blockq bits")) || (rc = rd_u16(&r, &block, "blockq block")) ||
            (rc = rd_u8(&r, &flags, "blockq flags")))
            break;
        len += snprintf(out + len, cap - (size_t)len, "bits=%u block=%u%s%s", bits, block,
                        flags & TVS_BQ_ZERO ? " zp" : "", flags & TVS_BQ_CODEBOOK ? " cb" : "");
        break;
    case TVS_LC_LOWRANK:
        if ((rc = rd_u32(&r, &rows, "lowrank rows")) || (rc = rd_u32(&r, &cols, "lowrank cols")) ||
            (rc = rd_u32(&r, &rank, "lowrank rank")) || (rc = rd_u8(&r, &fdt, "lowrank dtype")))
            break;
        len = snprintf(out, cap, "rank=%u %s %ux%u", rank,
                       fdt == TVS_DTYPE_F16 ? "f16" : fdt == TVS_DTYPE_BF16 ? "bf16"
                       : fdt == TVS_DTYPE_F32 ? "f32" : "?", rows, cols);
        break;
    case TVS_LC_LOWRANKQ: {
        float sc;
        if ((rc = rd_u32(&r, &rows, "lowrankq rows")) ||
            (rc = rd_u32(&r, &cols, "lowrankq cols")) ||
            (rc = rd_u32(&r, &rank, "lowrankq rank")) || (rc = rd_f32(&r, &sc, "lowrankq scale")))
            break;
        if (rank < 1 || rank > TVS_LOSSY_MAX_RANK || (uint64_t)rows * cols != u->n ||
            (uint64_t)rank * ((uint64_t)rows + cols) > u->n) {
            rc = tvs__fail(TVS_ECORRUPT, "lowrankq shape %ux%u rank %u for %u elements", rows,
                           cols, rank, u->n);
            break;
        }
        unsigned hi = 0, lo = 8;   /* the terms' widths (U's bodies) */
        bq_body b;
        for (uint32_t t = 0; t < 2 * rank && !rc; t++)
            if (!(rc = bq_open(&b, &r, t < rank ? rows : cols)) && t < rank)
                hi = TVS_MAX(hi, b.bits), lo = TVS_MIN(lo, b.bits);
        if (rc)
            break;
        if (hi == lo)
            len = snprintf(out, cap, "rank=%u bits=%u %ux%u", rank, hi, rows, cols);
        else
            len = snprintf(out, cap, "rank=%u bits=%u..%u %ux%u", rank, hi, lo, rows, cols);
        break;
    }
    case TVS_LC_ZERO:
    case TVS_LC_VERBATIM:
        break;
    default:
        return tvs__fail(TVS_ECORRUPT, "unknown unit codec %u", u->codec);
    }
    if (rc)
        return tvs__failctx(rc, "lossy unit (%s)", tvs_lossy_codec_name(u->codec));
    if (len < 0 || (size_t)len >= cap)
        return tvs__fail(TVS_EBUFS, "unit description needs more than %zu bytes", cap);
    return 0;
}

/* =====================================================================
 * Encoders
 * ===================================================================== */

size_t tvs_lossy_keep_count(float density, size_t n)
{
    if (!(density > 0) || !(density <= 1) || n == 0)
        return 0;
    double k = floor((double)density * (double)n + 0.5);
    return k < 1 ? 1 : k > (double)n ? n : (size_t)k;
}

/* Bytes of a BLOCKQ body over m values (the codebook when @p cb). */
static size_t bq_size(size_t m, unsigned bits, unsigned block, int zp, int cb)
{
    size_t nb = (m + block - 1) / block;
    return BQ_HDR + (cb ? 4u << bits : 0) + nb * (zp ? 4 : 2) + ceil8((uint64_t)m * bits);
}

static int bq_params_ok(const tvs_lossy_params *p)
{
    return p->bits >= 1 && p->bits <= 8 && p->block >= TVS_BQ_MIN_BLOCK &&
           p->block <= TVS_BQ_MAX_BLOCK && !(p->flags & ~(TVS_BQ_ZERO | TVS_BQ_CODEBOOK));
}

static int want_cb(const tvs_lossy_params *p)
{
    return (p->flags & TVS_BQ_CODEBOOK) && p->bits <= 4;
}

/* Effective low-rank rank: at most the smaller side of the matrix. */
static uint32_t lr_rank(const tvs_lossy_params *p)
{
    return TVS_MIN(p->rank, TVS_MIN(p->rows, p->cols));
}

/* LOWRANKQ: the triplets considered (at most the smaller side, and the SVD's). */
static uint32_t lrq_k(const tvs_lossy_params *p)
{
    uint32_t k = TVS_MIN(p->rank, TVS_MIN(p->rows, p->cols));
    return p->svd ? TVS_MIN(k, p->svd->k) : k;
}

static int lrq_params_ok(const tvs_lossy_params *p, size_t n)
{
    return (uint64_t)p->rows * p->cols == n && (uint64_t)p->rows + p->cols <= n &&
           p->rank >= 1 && p->rank <= TVS_LOSSY_MAX_RANK && p->rate > 0 && isfinite(p->rate) &&
           (!p->svd || (p->svd->rows == p->rows && p->svd->cols == p->cols && p->svd->k >= 1));
}

/* LOWRANKQ terms that fit the rule rank * (rows + cols) <= n (params ok: >= 1). */
static uint32_t lrq_max_terms(const tvs_lossy_params *p, size_t n)
{
    size_t cap = n / ((size_t)p->rows + p->cols);
    return (uint32_t)TVS_MAX(1, TVS_MIN(cap, lrq_k(p)));
}

/* Bytes of one LOWRANKQ term at @p bits: its two BLOCKQ bodies. */
static size_t lrq_term_size(const tvs_lossy_params *p, unsigned bits)
{
    return bq_size(p->rows, bits, LRQ_BLOCK, 0, 0) + bq_size(p->cols, bits, LRQ_BLOCK, 0, 0);
}

size_t tvs_lossy_unit_bound(const tvs_lossy_params *p, size_t n, tvs_dtype dt)
{
    if (n < 1 || n > TVS_LOSSY_MAX_UNIT)
        return 0;
    size_t k;
    switch (p->codec) {
    case TVS_LC_ZERO:
        return 0;
    case TVS_LC_SIGN:
        if (!(k = tvs_lossy_keep_count(p->density, n)))
            return 0;
        return 4 + MASK_HDR + ceil8(n) + ceil8(k);
    case TVS_LC_BLOCKQ:
        if (!bq_params_ok(p))
            return 0;
        return bq_size(n, p->bits, p->block, p->flags & TVS_BQ_ZERO, want_cb(p));
    case TVS_LC_SPARSEQ:
        if (!bq_params_ok(p) || !(k = tvs_lossy_keep_count(p->density, n)))
            return 0;
        return MASK_HDR + ceil8(n) + bq_size(k, p->bits, p->block, p->flags & TVS_BQ_ZERO,
                                             want_cb(p));
    case TVS_LC_LOWRANK:
        if ((uint64_t)p->rows * p->cols != n || p->rank < 1 || p->rank > TVS_LOSSY_MAX_RANK ||
            !fdt_ok(p->factor_dtype))
            return 0;
        return LR_HDR + ((size_t)p->rows + p->cols) * lr_rank(p) * width_of(p->factor_dtype);
    case TVS_LC_LOWRANKQ:
        if (!lrq_params_ok(p, n))
            return 0;
        return LRQ_HDR + lrq_max_terms(p, n) * lrq_term_size(p, 8);
    case TVS_LC_VERBATIM:
        return tvs_lossy_dtype_ok(dt) ? n * width_of(dt) : 0;
    }
    return 0;
}

/* ---- scratch: regions carved from the caller's buffer, 16-byte aligned */

#define ALIGN16(x) (((x) + 15) & ~(size_t)15)

typedef struct {
    uint8_t *p;
} carve;

static void *take(carve *c, size_t bytes)
{
    void *r = c->p;
    c->p += ALIGN16(bytes);
    return r;
}

/* Per block: scale, zero point, codebook trial scale. */
static size_t bq_scratch(size_t m, unsigned block)
{
    return ALIGN16(((m + block - 1) / block) * 3 * sizeof(float));
}

static size_t lr_oversample(size_t r, size_t rows, size_t cols)
{
    return TVS_MIN(r + 8, TVS_MIN(rows, cols));
}

/* The codec's own scratch, 16 bytes of alignment slack included. */
static size_t codec_scratch(const tvs_lossy_params *p, size_t n)
{
    size_t k, l;
    switch (p->codec) {
    case TVS_LC_SIGN:
        return 16 + ALIGN16(n * 4) + ALIGN16(ceil8(n) + 8);
    case TVS_LC_BLOCKQ:
        return bq_params_ok(p) ? 16 + bq_scratch(n, p->block) : 0;
    case TVS_LC_SPARSEQ:
        if (!bq_params_ok(p) || !(k = tvs_lossy_keep_count(p->density, n)))
            return 0;
        return 16 + ALIGN16(n * 4) + ALIGN16(ceil8(n) + 8) + bq_scratch(k, p->block);
    case TVS_LC_LOWRANK:
        if ((uint64_t)p->rows * p->cols != n || p->rank < 1)
            return 0;
        l = lr_oversample(lr_rank(p), p->rows, p->cols);
        return 16 + ALIGN16((size_t)p->rows * l * 8) + ALIGN16((size_t)p->cols * l * 8) +
               ALIGN16(l * l * 8) + 2 * ALIGN16(l * 8);
    case TVS_LC_LOWRANKQ:
        if (!lrq_params_ok(p, n))
            return 0;
        k = TVS_MAX(p->rows, p->cols);
        return 16 + (p->svd ? 0 : tvs_lossy_svd_size(p->rows, p->cols, lrq_k(p))) +
               ALIGN16(lrq_k(p)) + 2 * ALIGN16(k * 4) + bq_scratch(k, LRQ_BLOCK);
    }
    return 0;
}

/* ... and after it, room to decode a LOWRANK unit for the scale correction. */
size_t tvs_lossy_scratch_size(const tvs_lossy_params *p, size_t n)
{
    size_t cs = codec_scratch(p, n);
    return cs && p->unbiased && p->codec == TVS_LC_LOWRANK ? cs + ALIGN16(n * 4) : cs;
}

/* ---- top-k selection and masks */

/*
 * The kept set of @p d: the k entries with the largest |d|, ties at the
 * threshold broken by lowest index, as a bitmap (zero past n). Radix
 * select over the f32 bit patterns of |d| (monotone for finite values):
 * three histogram passes over a shrinking candidate list, O(n).
 */
static void top_k(uint64_t *kb, uint32_t *keys, const float *d, size_t n, size_t k)
{
    static const unsigned shift[3] = { 21, 10, 0 }, width[3] = { 11, 11, 10 };
    uint32_t hist[2048];
    size_t cnt = n, need = k, nnz = 0;
    uint32_t prefix = 0;
    for (size_t i = 0; i < n; i++) {
        keys[i] = f2u(d[i]) & 0x7fffffffu;
        nnz += keys[i] != 0;
    }
    if (k == nnz || k == n) {
        /* every nonzero (or every) entry: no selection needed */
        memset(kb, 0, ((n + 63) / 64) * 8);
        for (size_t i = 0; i < n; i++)
            kb[i / 64] |= (uint64_t)(k == n || keys[i] != 0) << (i % 64);
        return;
    }
    for (int lev = 0; lev < 3; lev++) {
        unsigned nbins = 1u << width[lev], sh = shift[lev];
        memset(hist, 0, nbins * sizeof *hist);
        for (size_t i = 0; i < cnt; i++)
            hist[(keys[i] >> sh) & (nbins - 1)]++;
        unsigned b = nbins - 1;
        while (need > hist[b]) {
            need -= hist[b];
            b--;
        }
        prefix |= (uint32_t)b << sh;
        size_t c = 0;
        for (size_t i = 0; i < cnt; i++)
            if (((keys[i] >> sh) & (nbins - 1)) == b)
                keys[c++] = keys[i];
        cnt = c;
    }
    /* prefix is the k-th largest key; `need` entries equal to it are kept */
    /* above the threshold: branch-free, 64 at a time; then the first `need` ties */
    for (size_t w0 = 0; w0 < n; w0 += 64) {
        size_t e = n - w0 < 64 ? n - w0 : 64;
        uint64_t word = 0;
        for (size_t j = 0; j < e; j++)
            word |= (uint64_t)((f2u(d[w0 + j]) & 0x7fffffffu) > prefix) << j;
        kb[w0 / 64] = word;
    }
    for (size_t i = 0; need > 0 && i < n; i++)
        if ((f2u(d[i]) & 0x7fffffffu) == prefix) {
            kb[i / 64] |= (uint64_t)1 << (i % 64);
            need--;
        }
}

/* Iterates the kept runs of a bitmap (bits past n are zero). */
typedef struct {
    const uint64_t *kb;
    size_t n, i;
} run_it;

/* The next kept run [*s, *s + *l); 0 when there is none. */
static int run_next(run_it *it, size_t *s, size_t *l)
{
    size_t i = it->i;
    while (i < it->n) {
        uint64_t w = it->kb[i / 64] >> (i % 64);
        if (w) {
            i += (size_t)__builtin_ctzll(w);
            break;
        }
        i += 64 - i % 64;
    }
    if (i >= it->n)
        return it->i = it->n, 0;
    *s = i;
    while (i < it->n) {
        size_t rem = 64 - i % 64;
        uint64_t w = ~(it->kb[i / 64] >> (i % 64));
        size_t step = w ? (size_t)__builtin_ctzll(w) : 64;
        step = TVS_MIN(step, rem);
        i += step;
        if (step < rem)
            break;
    }
    i = TVS_MIN(i, it->n);
    *l = i - *s;
    it->i = i;
    return 1;
}

typedef struct {
    uint8_t layout;
    size_t len;   /* mask bytes */
} mask_choice;

static int kept_at(const uint64_t *kb, size_t i) { return (int)((kb[i / 64] >> (i % 64)) & 1); }

/* Sizes of every layout; the smallest wins (ties: lower layout id). */
static mask_choice mask_choose(const uint64_t *kb, size_t n, size_t k)
{
    mask_choice c = { TVS_MASK_ALL, 0 };
    if (k == n)
        return c;
    size_t idx = 0, runs = 0, prev_end = 0, last = 0, s, l;
    int any = 0;
    run_it it = { kb, n, 0 };
    while (run_next(&it, &s, &l)) {
        runs += leb_len((uint32_t)(s - prev_end)) + leb_len((uint32_t)l);
        prev_end = s + l;
        idx += leb_len((uint32_t)(any ? s - last - 1 : s)) + (l - 1);
        last = s + l - 1;
        any = 1;
    }
    if (prev_end < n)
        runs += leb_len((uint32_t)(n - prev_end));
    c.layout = TVS_MASK_BITMAP;
    c.len = ceil8(n);
    if (idx < c.len)
        c.layout = TVS_MASK_INDEX, c.len = idx;
    if (runs < c.len)
        c.layout = TVS_MASK_RUNS, c.len = runs;
    return c;
}

static uint8_t *mask_write(uint8_t *o, const uint64_t *kb, size_t n, size_t k, mask_choice c)
{
    *o++ = c.layout;
    tvs_store_le32(o, (uint32_t)k);
    tvs_store_le32(o + 4, (uint32_t)c.len);
    o += 8;
    size_t prev_end = 0, last = 0, s, l;
    int any = 0;
    run_it it = { kb, n, 0 };
    switch (c.layout) {
    case TVS_MASK_BITMAP:
        for (size_t i = 0; i < c.len; i++)
            o[i] = (uint8_t)(kb[i / 8] >> (8 * (i % 8)));
        return o + c.len;
    case TVS_MASK_INDEX:
        while (run_next(&it, &s, &l)) {
            o = leb_put(o, (uint32_t)(any ? s - last - 1 : s));
            for (size_t t = 1; t < l; t++)
                *o++ = 0;
            last = s + l - 1;
            any = 1;
        }
        return o;
    case TVS_MASK_RUNS:
        while (run_next(&it, &s, &l)) {
            o = leb_put(o, (uint32_t)(s - prev_end));
            o = leb_put(o, (uint32_t)l);
            prev_end = s + l;
        }
        if (prev_end < n)
            o = leb_put(o, (uint32_t)(n - prev_end));
        return o;
    }
    return o;
}

/* ---- BLOCKQ encoder */

/* Gaussian-optimal uniform step (in standard deviations) for 2^bits levels. */
static const float gauss_step[9] = { 0, 1.5958f, 0.9957f, 0.5860f, 0.3352f,
                                     0.1881f, 0.1041f, 0.0569f, 0.0308f };
/* Multipliers of the starting step tried per block. */
static const float step_try[] = { 0.85f, 1.0f, 1.15f };
#define STEP_MAX 1.25f
#define REFITS 2
#define LLOYD_ITERS 8
#define LLOYD_MAX_VALUES (1u << 14)

static inline float f16round(float x)
{
    x = x > 65504.0f ? 65504.0f : x;   /* no branches: loops over blocks vectorize */
    x = x < -65504.0f ? -65504.0f : x;
    return h2f(f2h(x));
}

/* Quantization context of one block. */
typedef struct {
    float mul, inv_mul, z, s, inv_s, half, top;
    const float *lv, *thr;    /* codebook levels and midpoints, or NULL */
    unsigned nlev;
} bq_q;

static inline void bq_q_set(bq_q *c, float s)
{
    c->s = s;
    c->inv_s = s > 0 ? 1.0f / s : 0.0f;
}

/* Nearest index of normalized value y (uniform: round and clamp). */
static inline unsigned bq_index(const bq_q *c, float y)
{
    if (c->lv) {
        float u = y * c->inv_s;
        unsigned q = 0;
        for (unsigned k = 0; k + 1 < c->nlev; k++)
            q += u > c->thr[k];
        return q;
    }
    float t = y * c->inv_s + c->half;
    t = t > 0 ? t : 0;
    t = t < c->top ? t : c->top;
    return (unsigned)(int)(t + 0.5f);
}

static inline float bq_level(const bq_q *c, unsigned q)
{
    return c->lv ? c->lv[q] : (float)q - c->half;
}

/* One block quantized with scale c->s: its squared error (exactly as
 * decoded) and the sums of the least-squares scale for that assignment,
 * sum(y L) / sum(L^2), y = x / mul - zero. */
typedef struct {
    float err, num, den;
} bq_ev;

#if defined(__SSE2__)
/* The eight-lane loop of bq_eval (uniform levels), the same operations in
 * the same order per lane; adds into the lane sums; returns values done. */
static size_t bq_eval_sse2(const bq_q *c, const float *x, size_t len, float *ea, float *na,
                           float *da)
{
    const __m128 im = _mm_set1_ps(c->inv_mul), z = _mm_set1_ps(c->z), is = _mm_set1_ps(c->inv_s);
    const __m128 h = _mm_set1_ps(c->half), top = _mm_set1_ps(c->top), zero = _mm_setzero_ps();
    const __m128 half = _mm_set1_ps(0.5f), s = _mm_set1_ps(c->s), mul = _mm_set1_ps(c->mul);
    __m128 e0 = _mm_loadu_ps(ea), e1 = _mm_loadu_ps(ea + 4), n0 = _mm_loadu_ps(na);
    __m128 n1 = _mm_loadu_ps(na + 4), d0 = _mm_loadu_ps(da), d1 = _mm_loadu_ps(da + 4);
    size_t i = 0;
#define BQ_LANES(xv, E, N, D)                                                             \
    do {                                                                                  \
        __m128 y = _mm_sub_ps(_mm_mul_ps(xv, im), z);                                     \
        __m128 t = _mm_add_ps(_mm_mul_ps(y, is), h);                                      \
        t = _mm_min_ps(_mm_max_ps(t, zero), top);                                         \
        __m128 lv = _mm_sub_ps(_mm_cvtepi32_ps(_mm_cvttps_epi32(_mm_add_ps(t, half))), h); \
        __m128 e = _mm_sub_ps(xv, _mm_mul_ps(mul, _mm_add_ps(_mm_mul_ps(s, lv), z)));     \
        E = _mm_add_ps(E, _mm_mul_ps(e, e));                                              \
        N = _mm_add_ps(N, _mm_mul_ps(y, lv));                                             \
        D = _mm_add_ps(D, _mm_mul_ps(lv, lv));                                            \
    } while (0)
    for (; i + 8 <= len; i += 8) {
        __m128 x0 = _mm_loadu_ps(x + i), x1 = _mm_loadu_ps(x + i + 4);
        BQ_LANES(x0, e0, n0, d0);
        BQ_LANES(x1, e1, n1, d1);
    }
#undef BQ_LANES
    _mm_storeu_ps(ea, e0), _mm_storeu_ps(ea + 4, e1);
    _mm_storeu_ps(na, n0), _mm_storeu_ps(na + 4, n1);
    _mm_storeu_ps(da, d0), _mm_storeu_ps(da + 4, d1);
    return i;
}
#endif

static bq_ev bq_eval(const bq_q *c, const float *x, size_t len)
{
    float ea[8] = { 0 }, na[8] = { 0 }, da[8] = { 0 };
    const float mul = c->mul, s = c->s, z = c->z, im = c->inv_mul;
    size_t i = 0;
#if defined(__SSE2__)
    if (!c->lv && tvs__lossy_simd)
        i = bq_eval_sse2(c, x, len, ea, na, da);
#endif
    if (!c->lv) {   /* eight lanes: the SSE2 loop does the same, lane for lane */
        const float is = c->inv_s, h = c->half, top = c->top;
        for (; i + 8 <= len; i += 8)
            for (unsigned l = 0; l < 8; l++) {
                float y = x[i + l] * im - z;
                float t = y * is + h;
                t = t > 0 ? t : 0;
                t = t < top ? t : top;
                float lv = (float)(int)(t + 0.5f) - h;
                float e = x[i + l] - mul * (s * lv + z);
                ea[l] += e * e;
                na[l] += y * lv;
                da[l] += lv * lv;
            }
    }
    if (c->lv) {   /* codebook: the nearest level by counting thresholds, lane-wise */
        const float is = c->inv_s;
        for (; i + 8 <= len; i += 8) {
            float y[8], u[8], lv[8];
            unsigned q[8] = { 0 };
            for (unsigned l = 0; l < 8; l++) {
                y[l] = x[i + l] * im - z;
                u[l] = y[l] * is;
            }
            for (unsigned k = 0; k + 1 < c->nlev; k++)
                for (unsigned l = 0; l < 8; l++)
                    q[l] += u[l] > c->thr[k];
            for (unsigned l = 0; l < 8; l++)
                lv[l] = c->lv[q[l]];
            for (unsigned l = 0; l < 8; l++) {
                float e = x[i + l] - mul * (s * lv[l] + z);
                ea[l] += e * e;
                na[l] += y[l] * lv[l];
                da[l] += lv[l] * lv[l];
            }
        }
    }
    for (; i < len; i++) {
        float y = x[i] * im - z, lv = bq_level(c, bq_index(c, y));
        float e = x[i] - mul * (s * lv + z);
        ea[i % 8] += e * e;
        na[i % 8] += y * lv;
        da[i % 8] += lv * lv;
    }
    bq_ev r;
    r.err = ((ea[0] + ea[1]) + (ea[2] + ea[3])) + ((ea[4] + ea[5]) + (ea[6] + ea[7]));
    r.num = ((na[0] + na[1]) + (na[2] + na[3])) + ((na[4] + na[5]) + (na[6] + na[7]));
    r.den = ((da[0] + da[1]) + (da[2] + da[3])) + ((da[4] + da[5]) + (da[6] + da[7]));
    return r;
}

/*
 * Best f16 scale for one block: a few steps around @p step0 (uniform
 * levels), or @p step0 itself (a codebook, or no spread); then least-squares
 * refits of the best while they lower the error.
 */
static float bq_fit_block(bq_q *c, const float *x, size_t len, float step0, float *err_out)
{
    float best_s = 0;
    bq_ev best = { INFINITY, 0, 0 };
    if (c->lv || step0 <= 0) {
        bq_q_set(c, f16round(step0 > 0 ? step0 : 0));
        best_s = c->s;
        best = bq_eval(c, x, len);
    } else {
        for (size_t t = 0; t < sizeof step_try / sizeof *step_try; t++) {
            bq_q_set(c, f16round(step0 * step_try[t]));
            bq_ev ev = bq_eval(c, x, len);
            if (ev.err < best.err)
                best = ev, best_s = c->s;
        }
    }
    for (int it = 0; it < REFITS && best_s > 0 && best.num > 0 && best.den > 0; it++) {
        bq_q_set(c, f16round(best.num / best.den));
        if (c->s == best_s)
            break;
        bq_ev ev = bq_eval(c, x, len);
        if (!(ev.err < best.err))
            break;
        best = ev, best_s = c->s;
    }
    bq_q_set(c, best_s);
    *err_out = best.err;
    return best_s;
}

/* Weighted Lloyd iterations on block-normalized values, from uniform levels. */
static void bq_lloyd(float *lv, const float *x, size_t m, const float *sc, const float *zs,
                     unsigned block, float mul, unsigned bits)
{
    unsigned nlev = 1u << bits;
    size_t nb = (m + block - 1) / block;
    size_t stride = 1;
    while ((nb / stride) * block > LLOYD_MAX_VALUES)
        stride++;
    float thr[15];
    const float inv_mul = 1.0f / mul;
    for (unsigned q = 0; q < nlev; q++)
        lv[q] = (float)q - (float)(nlev - 1) * 0.5f;
    for (int it = 0; it < LLOYD_ITERS; it++) {
        double sum[16] = { 0 }, wsum[16] = { 0 };
        for (unsigned k = 0; k + 1 < nlev; k++)
            thr[k] = (lv[k] + lv[k + 1]) * 0.5f;
        for (size_t b = 0; b < nb; b += stride) {
            float s = sc[b];
            if (!(s > 0))
                continue;
            double wgt = (double)s * s;
            float inv_s = 1.0f / s;
            size_t lo = b * block, hi = TVS_MIN(lo + block, m);
            for (size_t i = lo; i < hi; i++) {
                float u = (x[i] * inv_mul - zs[b]) * inv_s;
                unsigned q = 0;
                for (unsigned k = 0; k + 1 < nlev; k++)
                    q += u > thr[k];
                sum[q] += wgt * u;
                wsum[q] += wgt;
            }
        }
        for (unsigned q = 0; q < nlev; q++)
            if (wsum[q] > 0)
                lv[q] = (float)(sum[q] / wsum[q]);
    }
}

/* Bit writer, LSB first. */
typedef struct {
    uint8_t *p;
    uint64_t acc;
    unsigned n;
} bitw;

static inline void bw_put(bitw *w, uint32_t v, unsigned bits)
{
    w->acc |= (uint64_t)v << w->n;
    w->n += bits;
    if (w->n >= 32) {
        tvs_store_le32(w->p, (uint32_t)w->acc);
        w->p += 4;
        w->acc >>= 32;
        w->n -= 32;
    }
}

/*
 * Eight indices of @p bits (< 8) each, q[0] lowest, as one 8·bits-bit value:
 * the bytes of one load merged pairwise (SWAR), three times.
 */
static inline uint64_t pack8(const uint8_t *q, unsigned bits)
{
    uint64_t x;
    memcpy(&x, q, 8);   /* little-endian: q[0] is the low byte */
    x = (x & 0x00ff00ff00ff00ffull) | (x & 0xff00ff00ff00ff00ull) >> (8 - bits);
    x = (x & 0x0000ffff0000ffffull) | (x & 0xffff0000ffff0000ull) >> (16 - 2 * bits);
    return (x & 0xffffffffull) | (x >> 32) << (4 * bits);
}

#if defined(__SSE2__)
/* Four lanes of the BLOCKQ sums: acc += (double)r * x, sq += (double)x * x,
 * values 0-1 in a0/s0, 2-3 in a1/s1. */
static inline void sums4_sse2(__m128d *a0, __m128d *a1, __m128d *s0, __m128d *s1, __m128 r,
                              __m128 xv)
{
    __m128d x0 = _mm_cvtps_pd(xv), x1 = _mm_cvtps_pd(_mm_movehl_ps(xv, xv));
    __m128d r0 = _mm_cvtps_pd(r), r1 = _mm_cvtps_pd(_mm_movehl_ps(r, r));
    *a0 = _mm_add_pd(*a0, _mm_mul_pd(r0, x0));
    *a1 = _mm_add_pd(*a1, _mm_mul_pd(r1, x1));
    *s0 = _mm_add_pd(*s0, _mm_mul_pd(x0, x0));
    *s1 = _mm_add_pd(*s1, _mm_mul_pd(x1, x1));
}
#endif

/*
 * acc[l] += (double)(mul * v) * x and sq[l] += (double)x * x in four lanes,
 * l = i % 4, over the groups of four of @p len values; returns the values
 * done. The SSE2 loop does the same, lane for lane.
 */
static size_t bq_sums(double *acc, double *sq, float mul, const float *v, const float *x,
                      size_t len)
{
    size_t i = 0;
#if defined(__SSE2__)
    if (tvs__lossy_simd) {
        const __m128 m = _mm_set1_ps(mul);
        __m128d a0 = _mm_loadu_pd(acc), a1 = _mm_loadu_pd(acc + 2);
        __m128d s0 = _mm_loadu_pd(sq), s1 = _mm_loadu_pd(sq + 2);
        for (; i + 4 <= len; i += 4)
            sums4_sse2(&a0, &a1, &s0, &s1, _mm_mul_ps(m, _mm_loadu_ps(v + i)),
                       _mm_loadu_ps(x + i));
        _mm_storeu_pd(acc, a0), _mm_storeu_pd(acc + 2, a1);
        _mm_storeu_pd(sq, s0), _mm_storeu_pd(sq + 2, s1);
        return i;
    }
#endif
    for (; i + 4 <= len; i += 4)
        for (unsigned l = 0; l < 4; l++) {
            acc[l] += (double)(mul * v[i + l]) * x[i + l];
            sq[l] += (double)x[i + l] * x[i + l];
        }
    return i;
}

#if defined(__SSE2__)
/*
 * bq_write's uniform loop and bq_sums in one SSE2 pass over the groups of
 * four of a block: indices, brackets and both sums, the same operations in
 * the same order per lane; returns the values done.
 */
static size_t bq_quant_sse2(uint8_t *q, float *ib, double *acc, double *sq, const bq_q *c,
                            const float *x, size_t len)
{
    const __m128 im = _mm_set1_ps(c->inv_mul), z = _mm_set1_ps(c->z), is = _mm_set1_ps(c->inv_s);
    const __m128 h = _mm_set1_ps(c->half), top = _mm_set1_ps(c->top), zero = _mm_setzero_ps();
    const __m128 half = _mm_set1_ps(0.5f), s = _mm_set1_ps(c->s), m = _mm_set1_ps(c->mul);
    __m128d a0 = _mm_loadu_pd(acc), a1 = _mm_loadu_pd(acc + 2);
    __m128d s0 = _mm_loadu_pd(sq), s1 = _mm_loadu_pd(sq + 2);
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
        __m128 xv = _mm_loadu_ps(x + i);
        __m128 t = _mm_add_ps(_mm_mul_ps(_mm_sub_ps(_mm_mul_ps(xv, im), z), is), h);
        t = _mm_min_ps(_mm_max_ps(t, zero), top);   /* t > 0 ? t : 0, then t < top ? t : top */
        __m128i qi = _mm_cvttps_epi32(_mm_add_ps(t, half));
        __m128 v = _mm_add_ps(_mm_mul_ps(s, _mm_sub_ps(_mm_cvtepi32_ps(qi), h)), z);
        _mm_storeu_ps(ib + i, v);
        __m128i qb = _mm_packus_epi16(_mm_packs_epi32(qi, qi), _mm_setzero_si128());
        uint32_t q4 = (uint32_t)_mm_cvtsi128_si32(qb);
        memcpy(q + i, &q4, 4);
        sums4_sse2(&a0, &a1, &s0, &s1, _mm_mul_ps(m, v), xv);
    }
    _mm_storeu_pd(acc, a0), _mm_storeu_pd(acc + 2, a1);
    _mm_storeu_pd(sq, s0), _mm_storeu_pd(sq + 2, s1);
    return i;
}
#endif

/* @p cnt indices of @p bits each: eight at a time (in at most two puts of
 * at most 32 bits), the same stream as one put each. */
static void bw_put_all(bitw *w, const uint8_t *q, size_t cnt, unsigned bits)
{
    size_t i = 0;
    if (bits == 8)
        for (; i + 4 <= cnt; i += 4)
            bw_put(w, tvs_load_le32(q + i), 32);
    else if (bits <= 4)
        for (; i + 8 <= cnt; i += 8)
            bw_put(w, (uint32_t)pack8(q + i, bits), 8 * bits);
    else
        for (; i + 8 <= cnt; i += 8) {
            uint64_t v = pack8(q + i, bits);
            bw_put(w, (uint32_t)v, 32);
            bw_put(w, (uint32_t)(v >> 32), 8 * bits - 32);
        }
    for (; i < cnt; i++)
        bw_put(w, q[i], bits);
}

static uint8_t *bw_end(bitw *w)
{
    for (; w->n > 0; w->n = w->n > 8 ? w->n - 8 : 0) {
        *w->p++ = (uint8_t)w->acc;
        w->acc >>= 8;
    }
    return w->p;
}

/* The largest |x[i]| (the inputs are finite): the bits of |x| order like
 * its values, so an integer maximum in lanes, which vectorizes. */
static float absmax(const float *x, size_t n)
{
    int32_t mx[8] = { 0 }, r = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (unsigned l = 0; l < 8; l++) {
            int32_t a = (int32_t)(f2u(x[i + l]) & 0x7fffffffu);
            mx[l] = a > mx[l] ? a : mx[l];
        }
    for (; i < n; i++) {
        int32_t a = (int32_t)(f2u(x[i]) & 0x7fffffffu);
        mx[0] = a > mx[0] ? a : mx[0];
    }
    for (unsigned l = 0; l < 8; l++)
        r = mx[l] > r ? mx[l] : r;
    return u2f((uint32_t)r);
}

/*
 * The starting step of one block, its values y = x - c: 2 mean |y| for one
 * bit, the largest |y| over the outer level for wide steps, else the
 * Gaussian step times the RMS. Sums in f64, in index order.
 */
static double block_step(const float *x, size_t len, double c, unsigned bits, int wide)
{
    double acc = 0;
    if (bits == 1) {
        for (size_t i = 0; i < len; i++)
            acc += fabs(x[i] - c);
        return 2 * acc / (double)len;
    }
    if (wide) {
        if (c == 0)   /* y = x, and f64 holds every f32: the f32 maximum is the same */
            acc = absmax(x, len);
        else
            for (size_t i = 0; i < len; i++)
                acc = TVS_MAX(acc, fabs(x[i] - c));
        return acc / ((double)((1u << bits) - 1) * 0.5);
    }
    for (size_t i = 0; i < len; i++) {
        double y = x[i] - c;
        acc += y * y;
    }
    return gauss_step[bits] * sqrt(acc / (double)len);
}

/*
 * Fit a BLOCKQ body over x[0..m) (scales and zero points into @p work,
 * bq_scratch bytes) and return its size; bq_write then writes it.
 */
typedef struct {
    unsigned bits, block;
    int zp, cb;
    float mul;
    float lv[16];
    float *sc, *zs;
    float *tmp;                /* nb floats of scratch for bq_write */
    size_t m, nb;
} bq_fit;

static size_t bq_fit_body(bq_fit *f, const float *x, size_t m, const tvs_lossy_params *p,
                          float *work)
{
    const unsigned bits = p->bits, block = p->block;
    const int wide = p->wide && bits >= 2;
    size_t nb = (m + block - 1) / block;
    f->bits = bits;
    f->block = block;
    f->zp = (p->flags & TVS_BQ_ZERO) != 0;
    f->cb = 0;
    f->m = m;
    f->nb = nb;
    f->sc = work;
    f->zs = work + nb;
    f->tmp = work + 2 * nb;
    /* per block: centre (mean with a zero point) and starting step, kept in sc/zs for now */
    double top_step = 0, top_c = 0;
    if (wide && !f->zp) {
        /* the common case, blocks side by side: the largest |x| over the outer
         * level; the largest step is the largest maximum's (division by a
         * constant is monotone) */
        const double outer = (double)((1u << bits) - 1) * 0.5;
        float top = 0;
        for (size_t b = 0; b < nb; b++) {
            f->zs[b] = absmax(x + b * block, TVS_MIN(m - b * block, block));
            top = f->zs[b] > top ? f->zs[b] : top;
        }
        for (size_t b = 0; b < nb; b++) {
            f->sc[b] = (float)((double)f->zs[b] / outer);
            f->zs[b] = 0;
        }
        top_step = (double)top / outer;
    } else {
        for (size_t b = 0; b < nb; b++) {
            const float *xb = x + b * block;
            size_t len = TVS_MIN(m - b * block, block);
            double c = 0;
            if (f->zp) {
                double sum = 0;
                for (size_t i = 0; i < len; i++)
                    sum += xb[i];
                c = sum / (double)len;
            }
            double step = block_step(xb, len, c, bits, wide);
            f->sc[b] = (float)step;
            f->zs[b] = (float)c;
            top_step = TVS_MAX(top_step, step);
            top_c = TVS_MAX(top_c, fabs(c));
        }
    }
    /* mul: the largest step tried is 1024 in f16 (full precision); zero points <= 32768 */
    double mul = TVS_MAX(top_step * (bits == 1 ? 1.0 : STEP_MAX) / 1024.0, top_c / 32768.0);
    f->mul = (float)mul;
    if (!(f->mul > 0) || !isfinite(1.0f / f->mul)) {
        /* all zero (or too small to scale): everything decodes to 0 */
        f->mul = 0;
        for (size_t b = 0; b < nb; b++)
            f->sc[b] = f->zs[b] = 0;
        return bq_size(m, bits, block, f->zp, 0);
    }
    bq_q c = { f->mul, 1.0f / f->mul, 0, 0, 0, (float)((1u << bits) - 1) * 0.5f,
               (float)((1u << bits) - 1), NULL, NULL, 1u << bits };
    /* the uniform fit's error matters only against a codebook's */
    const int cb = want_cb(p);
    double err_u = 0;
    if (wide && !f->zp && !cb) {   /* the starting step, to f16, blocks side by side */
        const float fm = f->mul;
        for (size_t b = 0; b < nb; b++)
            f->sc[b] = f16round(f->sc[b] / fm);
        return bq_size(m, bits, block, 0, 0);
    }
    for (size_t b = 0; b < nb; b++) {
        const float *xb = x + b * block;
        size_t len = TVS_MIN(m - b * block, block);
        c.z = f->zp ? f16round(f->zs[b] / f->mul) : 0.0f;
        float e, step0 = f->sc[b] / f->mul;
        if (bits == 1) {
            /* L2-optimal: levels +-mean|y| around the stored zero point */
            double ab = 0;
            for (size_t i = 0; i < len; i++)
                ab += fabs((double)(xb[i] * c.inv_mul - c.z));
            bq_q_set(&c, f16round((float)(2 * ab / (double)len)));
            e = cb ? bq_eval(&c, xb, len).err : 0;
        } else if (wide) {
            bq_q_set(&c, f16round(step0));
            e = cb ? bq_eval(&c, xb, len).err : 0;
        } else {
            bq_fit_block(&c, xb, len, step0, &e);
        }
        f->sc[b] = c.s;
        f->zs[b] = c.z;
        err_u += e;
    }
    if (!cb)
        return bq_size(m, bits, block, f->zp, 0);
    /* a codebook (weighted Lloyd from the uniform levels), the scales refit
     * to it (trial scales in sc_cb), kept only if the total error is lower */
    float thr[15], *sc_cb = work + 2 * nb;
    unsigned nlev = 1u << bits;
    bq_lloyd(f->lv, x, m, f->sc, f->zs, block, f->mul, bits);
    for (unsigned k = 0; k + 1 < nlev; k++)
        thr[k] = (f->lv[k] + f->lv[k + 1]) * 0.5f;
    bq_q cc = c;
    cc.lv = f->lv;
    cc.thr = thr;
    double err_c = 0;
    for (size_t b = 0; b < nb; b++) {
        const float *xb = x + b * block;
        size_t len = TVS_MIN(m - b * block, block);
        float e;
        cc.z = f->zs[b];
        sc_cb[b] = bq_fit_block(&cc, xb, len, f->sc[b], &e);
        err_c += e;
    }
    if (!(err_c < err_u))
        return bq_size(m, bits, block, f->zp, 0);
    memcpy(f->sc, sc_cb, nb * sizeof *sc_cb);
    f->cb = 1;
    return bq_size(m, bits, block, f->zp, 1);
}

/*
 * Write the body of @p f for the values @p x. With @p dot, also <r, x> in
 * f64 for the values r that decoding will give (bq_next's arithmetic: r =
 * mul * (scale * L[q] + zero)), and |x|^2 into @p e2 as dot_with sums it
 * when the block is a multiple of 4 (the lanes line up); with @p inner (m
 * values), the bracket of each: decoding gives the stored mul times it.
 */
static uint8_t *bq_write(uint8_t *o, const bq_fit *f, const float *x, double *dot, double *e2,
                         float *inner)
{
    const unsigned bits = f->bits, nlev = 1u << bits;
    *o++ = (uint8_t)bits;
    o[0] = (uint8_t)f->block;
    o[1] = (uint8_t)(f->block >> 8);
    o += 2;
    *o++ = (uint8_t)((f->zp ? TVS_BQ_ZERO : 0) | (f->cb ? TVS_BQ_CODEBOOK : 0));
    tvs_store_le32(o, f2u(f->mul));
    o += 4;
    if (f->cb)
        for (unsigned q = 0; q < nlev; q++, o += 4)
            tvs_store_le32(o, f2u(f->lv[q]));
    for (size_t b = 0; b < f->nb; b++) {   /* bq_q_set's inverses, blocks side by side */
        float s = f->sc[b], inv = 1.0f / (s > 0 ? s : 1.0f);
        f->tmp[b] = s > 0 ? inv : 0.0f;
    }
    for (size_t b = 0; b < f->nb; b++, o += 2) {
        uint16_t h = f2h(f->sc[b]);
        o[0] = (uint8_t)h, o[1] = (uint8_t)(h >> 8);
    }
    if (f->zp)
        for (size_t b = 0; b < f->nb; b++, o += 2) {
            uint16_t h = f2h(f->zs[b]);
            o[0] = (uint8_t)h, o[1] = (uint8_t)(h >> 8);
        }
    float thr[15];
    if (f->cb)
        for (unsigned k = 0; k + 1 < nlev; k++)
            thr[k] = (f->lv[k] + f->lv[k + 1]) * 0.5f;
    bq_q c = { f->mul, f->mul > 0 ? 1.0f / f->mul : 0, 0, 0, 0,
               (float)(nlev - 1) * 0.5f, (float)(nlev - 1), f->cb ? f->lv : NULL,
               f->cb ? thr : NULL, nlev };
    bitw w = { o, 0, 0 };
    uint8_t q[TVS_BQ_MAX_BLOCK];
    float in_b[TVS_BQ_MAX_BLOCK];
    double acc[4] = { 0 }, sq[4] = { 0 };
    const int avx2 = tvs__lossy_simd == 1 && tvs__bq_avx2();
    for (size_t b = 0; b < f->nb; b++) {
        const float *xb = x + b * f->block;
        size_t len = TVS_MIN(f->m - b * f->block, f->block), i = 0;
        float *ib = inner ? inner + b * f->block : in_b;
        c.z = f->zs[b];
        c.s = f->sc[b];
        c.inv_s = f->tmp[b];
        const float sc = c.s, z = c.z, mul = c.mul;
        if (f->cb) {
            for (i = 0; i < len; i++) {
                q[i] = (uint8_t)bq_index(&c, xb[i] * c.inv_mul - c.z);
                ib[i] = sc * c.lv[q[i]] + z;
            }
            i = 0;
        } else {   /* bq_index and bq_level, uniform, in a loop the compiler vectorizes */
            const float im = c.inv_mul, is = c.inv_s, h = c.half, top = c.top;
#if defined(__SSE2__)
            if (avx2) {
                tvs__bq_quant k = { c.inv_mul, c.z, c.inv_s, c.half, c.top, c.s, c.mul };
                i = tvs__bq_quant_avx2(q, ib, acc, sq, &k, xb, len);
            }
            if (tvs__lossy_simd)
                i += bq_quant_sse2(q + i, ib + i, acc, sq, &c, xb + i, len - i);
#endif
            for (size_t j = i; j < len; j++) {
                float t = (xb[j] * im - z) * is + h;
                t = t > 0 ? t : 0;
                t = t < top ? t : top;
                int qi = (int)(t + 0.5f);
                q[j] = (uint8_t)qi;
                ib[j] = sc * ((float)qi - h) + z;
            }
        }
        i += bq_sums(acc, sq, mul, ib + i, xb + i, len - i);
        for (; i < len; i++) {   /* the last few: lanes i % 4 for <r, x>, lane 0 for |x|^2 */
            acc[i % 4] += (double)(mul * ib[i]) * xb[i];
            sq[0] += (double)xb[i] * xb[i];
        }
        bw_put_all(&w, q, len, bits);
    }
    if (dot)
        *dot = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    if (e2)
        *e2 = (sq[0] + sq[1]) + (sq[2] + sq[3]);
    return bw_end(&w);
}

/* ---- LOWRANK encoder: randomized subspace iteration + one-sided Jacobi */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Orthonormalize the l columns of row-major X (r x l): modified
 * Gram-Schmidt, twice; a column that vanishes becomes zero. */
static void mgs(double *X, size_t r, size_t l)
{
    for (int pass = 0; pass < 2; pass++)
        for (size_t j = 0; j < l; j++) {
            for (size_t p = 0; p < j; p++) {
                double dot = 0;
                for (size_t i = 0; i < r; i++)
                    dot += X[i * l + p] * X[i * l + j];
                for (size_t i = 0; i < r; i++)
                    X[i * l + j] -= dot * X[i * l + p];
            }
            double nn = 0;
            for (size_t i = 0; i < r; i++)
                nn += X[i * l + j] * X[i * l + j];
            double inv = nn > 1e-280 ? 1.0 / sqrt(nn) : 0;
            for (size_t i = 0; i < r; i++)
                X[i * l + j] *= inv;
        }
}

/* Y (rows x l) = A (rows x cols) · X (cols x l) */
static void mul_ax(double *Y, const float *A, const double *X, size_t rows, size_t cols, size_t l)
{
    for (size_t i = 0; i < rows; i++) {
        double *y = Y + i * l;
        for (size_t t = 0; t < l; t++)
            y[t] = 0;
        for (size_t j = 0; j < cols; j++) {
            double a = A[i * cols + j];
            const double *x = X + j * l;
            if (a != 0)
                for (size_t t = 0; t < l; t++)
                    y[t] += a * x[t];
        }
    }
}

/* Z (cols x l) = A^T · Q (rows x l) */
static void mul_atx(double *Z, const float *A, const double *Q, size_t rows, size_t cols, size_t l)
{
    memset(Z, 0, cols * l * sizeof *Z);
    for (size_t i = 0; i < rows; i++) {
        const double *q = Q + i * l;
        for (size_t j = 0; j < cols; j++) {
            double a = A[i * cols + j];
            double *z = Z + j * l;
            if (a != 0)
                for (size_t t = 0; t < l; t++)
                    z[t] += a * q[t];
        }
    }
}

/* One-sided Jacobi on the columns of W (c x l): W·J has orthogonal columns. */
static void jacobi(double *W, double *J, size_t c, size_t l)
{
    for (size_t i = 0; i < l * l; i++)
        J[i] = i % (l + 1) == 0;
    for (int sweep = 0; sweep < 40; sweep++) {
        int rotated = 0;
        for (size_t p = 0; p + 1 < l; p++)
            for (size_t q = p + 1; q < l; q++) {
                double a = 0, b = 0, g = 0;
                for (size_t i = 0; i < c; i++) {
                    double x = W[i * l + p], y = W[i * l + q];
                    a += x * x;
                    b += y * y;
                    g += x * y;
                }
                if (g == 0 || fabs(g) <= 1e-15 * sqrt(a * b))
                    continue;
                rotated = 1;
                double zeta = (b - a) / (2 * g);
                double t = (zeta >= 0 ? 1.0 : -1.0) / (fabs(zeta) + sqrt(1 + zeta * zeta));
                double cs = 1 / sqrt(1 + t * t), sn = cs * t;
                for (size_t i = 0; i < c; i++) {
                    double x = W[i * l + p], y = W[i * l + q];
                    W[i * l + p] = cs * x - sn * y;
                    W[i * l + q] = sn * x + cs * y;
                }
                for (size_t i = 0; i < l; i++) {
                    double x = J[i * l + p], y = J[i * l + q];
                    J[i * l + p] = cs * x - sn * y;
                    J[i * l + q] = sn * x + cs * y;
                }
            }
        if (!rotated)
            break;
    }
}

static void fac_store(uint8_t *o, double v, tvs_dtype fdt)
{
    float f = (float)v;
    if (fdt == TVS_DTYPE_F32) {
        tvs_store_le32(o, f2u(f));
    } else {
        uint16_t h = fdt == TVS_DTYPE_BF16 ? f2bf(f) : f2h(f);
        o[0] = (uint8_t)h, o[1] = (uint8_t)(h >> 8);
    }
}

static void lr_header(uint8_t *o, uint32_t rows, uint32_t cols, uint32_t rank, tvs_dtype fdt,
                      float scale)
{
    tvs_store_le32(o, rows);
    tvs_store_le32(o + 4, cols);
    tvs_store_le32(o + 8, rank);
    o[12] = (uint8_t)fdt;
    tvs_store_le32(o + 13, f2u(scale));
}

/*
 * The randomized subspace iteration: A (rows x cols) ~ (Q J) diag(sig)
 * (Z J / sig)^T over l directions, ord ranking them by sig, descending.
 */
static void rsvd(const float *A, size_t rows, size_t cols, size_t l, double *Q, double *Z,
                 double *J, double *sig, size_t *ord)
{
    uint64_t seed = 0x6c6f737379ull;   /* fixed: the output depends only on the input */
    for (size_t i = 0; i < cols * l; i++)
        Z[i] = (splitmix64(&seed) >> 63) ? 1.0 : -1.0;
    mul_ax(Q, A, Z, rows, cols, l);
    mgs(Q, rows, l);
    for (int it = 0; it < 2; it++) {
        mul_atx(Z, A, Q, rows, cols, l);
        mgs(Z, cols, l);
        mul_ax(Q, A, Z, rows, cols, l);
        mgs(Q, rows, l);
    }
    mul_atx(Z, A, Q, rows, cols, l);   /* Z = B^T, B = Q^T A */
    jacobi(Z, J, cols, l);
    for (size_t t = 0; t < l; t++) {
        double nn = 0;
        for (size_t j = 0; j < cols; j++)
            nn += Z[j * l + t] * Z[j * l + t];
        sig[t] = sqrt(nn);
        ord[t] = t;
    }
    for (size_t a = 1; a < l; a++)   /* by sigma, descending; stable */
        for (size_t b = a; b > 0 && sig[ord[b]] > sig[ord[b - 1]]; b--) {
            size_t tmp = ord[b];
            ord[b] = ord[b - 1];
            ord[b - 1] = tmp;
        }
}

static void lowrank_encode(uint8_t *o, const tvs_lossy_params *p, const float *A, void *scratch)
{
    const size_t rows = p->rows, cols = p->cols, r = lr_rank(p);
    const size_t l = lr_oversample(r, rows, cols);
    carve cv = { (uint8_t *)ALIGN16((uintptr_t)scratch) };
    double *Q = take(&cv, rows * l * 8), *Z = take(&cv, cols * l * 8);
    double *J = take(&cv, l * l * 8);
    double *sig = take(&cv, l * 8);
    size_t *ord = take(&cv, l * sizeof(size_t));
    rsvd(A, rows, cols, l, Q, Z, J, sig, ord);
    /* U[i][t] = (Q J)[i][ord t] (orthonormal columns); V[t][j] = Z[j][ord t]
     * (carries sigma). Balance: each factor scaled by a power of two so its
     * largest magnitude is in [0.5, 1), the product going into `scale`. */
    double umax = 0, vmax = 0;
    for (size_t i = 0; i < rows; i++)
        for (size_t t = 0; t < r; t++) {
            double u = 0;
            for (size_t q = 0; q < l; q++)
                u += Q[i * l + q] * J[q * l + ord[t]];
            umax = TVS_MAX(umax, fabs(u));
        }
    for (size_t t = 0; t < r; t++)
        if (sig[ord[t]] > 0) {
            double mx = 0;
            for (size_t j = 0; j < cols; j++)
                mx = TVS_MAX(mx, fabs(Z[j * l + ord[t]]));
            vmax = TVS_MAX(vmax, mx);   /* V carries sigma: Z columns are sig * v */
        }
    int eu = 0, ev = 0;
    if (umax > 0)
        frexp(umax, &eu);
    if (vmax > 0)
        frexp(vmax, &ev);
    if (eu + ev < -126 || eu + ev > 127)
        eu = ev = 0;
    double cu = ldexp(1.0, -eu), cvv = ldexp(1.0, -ev);
    float scale = (float)ldexp(1.0, eu + ev);
    unsigned fw = width_of(p->factor_dtype);
    lr_header(o, (uint32_t)rows, (uint32_t)cols, (uint32_t)r, p->factor_dtype, scale);
    uint8_t *uo = o + LR_HDR, *vo = uo + rows * r * fw;
    for (size_t i = 0; i < rows; i++)
        for (size_t t = 0; t < r; t++) {
            double u = 0;
            for (size_t q = 0; q < l; q++)
                u += Q[i * l + q] * J[q * l + ord[t]];
            fac_store(uo + (i * r + t) * fw, u * cu, p->factor_dtype);
        }
    for (size_t t = 0; t < r; t++)
        for (size_t j = 0; j < cols; j++)
            fac_store(vo + (t * cols + j) * fw,
                      sig[ord[t]] > 0 ? Z[j * l + ord[t]] * cvv : 0, p->factor_dtype);
}

int tvs_lossy_lowrank_put(uint8_t *dst, size_t cap, size_t *written, uint32_t rows,
                          uint32_t cols, uint32_t rank, tvs_dtype fdt, float scale,
                          const uint8_t *u, const uint8_t *v)
{
    if (rows < 1 || cols < 1 || (uint64_t)rows * cols > TVS_LOSSY_MAX_UNIT)
        return tvs__fail(TVS_EINVAL, "lowrank shape %ux%u (must hold 1..%u elements)", rows,
                         cols, TVS_LOSSY_MAX_UNIT);
    if (rank < 1 || rank > TVS_LOSSY_MAX_RANK)
        return tvs__fail(TVS_EINVAL, "lowrank rank %u not in 1..%u", rank, TVS_LOSSY_MAX_RANK);
    if (!fdt_ok(fdt))
        return tvs__fail(TVS_EINVAL, "lowrank factors of %s (must be F16, BF16 or F32)",
                         tvs_dtype_name(fdt));
    if (!isfinite(scale))
        return tvs__fail(TVS_EINVAL, "lowrank scale is not finite");
    unsigned fw = width_of(fdt);
    size_t nu = (size_t)rows * rank, nv = (size_t)rank * cols;
    size_t need = LR_HDR + (nu + nv) * fw;
    if (factors_finite(u, nu, fdt, "U") || factors_finite(v, nv, fdt, "V"))
        return tvs__failctx(TVS_EINVAL, "lowrank_put");
    if (cap < need)
        return tvs__fail(TVS_EBUFS, "lowrank unit needs %zu bytes, have %zu", need, cap);
    lr_header(dst, rows, cols, rank, fdt, scale);
    memcpy(dst + LR_HDR, u, nu * fw);
    memcpy(dst + LR_HDR + nu * fw, v, nv * fw);
    *written = need;
    return 0;
}

/* ---- encode entry point */

static int check_params(const tvs_lossy_params *p, size_t n, tvs_dtype dt)
{
    if (p->codec >= TVS_LC_COUNT)
        return tvs__fail(TVS_EINVAL, "unknown unit codec %u", p->codec);
    if (n < 1 || n > TVS_LOSSY_MAX_UNIT)
        return tvs__fail(TVS_EINVAL, "unit of %zu elements (must be 1..%u)", n,
                         TVS_LOSSY_MAX_UNIT);
    if (p->codec != TVS_LC_ZERO && !tvs_lossy_unit_bound(p, n, dt))
        return tvs__fail(TVS_EINVAL, "invalid %s parameters (bits %u, block %u, flags 0x%x, "
                         "density %g, %ux%u rank %u, factor dtype %d) for %zu elements",
                         tvs_lossy_codec_name(p->codec), p->bits, p->block, p->flags,
                         (double)p->density, p->rows, p->cols, p->rank, (int)p->factor_dtype,
                         n);
    return 0;
}

static int need_cap(size_t need, size_t cap, unsigned codec)
{
    if (need > cap)
        return tvs__fail(TVS_EBUFS, "%s unit needs %zu bytes, have %zu",
                         tvs_lossy_codec_name(codec), need, cap);
    return 0;
}

/* <a, b> in f64, in independent lanes the compiler vectorizes (built for
 * AVX-512, AVX2 and the baseline: the same sums in the same lanes). */
__attribute__((target_clones("avx512f", "avx2", "default"))) static double
dot_with(const float *a, const float *b, size_t n)
{
    double acc[4] = { 0 };
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (unsigned l = 0; l < 4; l++)
            acc[l] += (double)a[i + l] * b[i + l];
    for (; i < n; i++)
        acc[0] += (double)a[i] * b[i];
    return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

/*
 * The scale correction (params.unbiased). A least-squares fit shrinks: its
 * reconstruction r of a delta d has <r, d> = |r|^2 = |d|^2 - |r - d|^2, so
 * the stored delta is d scaled by alpha = <r, d> / |d|^2 < 1 plus noise
 * orthogonal to d. A fine-tuned model's loss is far more sensitive to that
 * shrinkage (it undoes part of the fine-tune, along the very direction
 * training moved) than to the noise, so the unit's one global scale (SIGN
 * scale, BLOCKQ mul, LOWRANK scale), at @p at, is divided by alpha = @p dot /
 * @p e (when positive): then <r, d> = |d|^2.
 */
static void rescale(uint8_t *at, double dot, double e)
{
    if (!(dot > 0) || !(e > 0))
        return;
    float t = (float)((double)u2f(tvs_load_le32(at)) * e / dot);
    if (isfinite(t) && t != 0)
        tvs_store_le32(at, f2u(t));
}

/* ---- LOWRANKQ encoder */

/*
 * Relative squared error a BLOCKQ body of LRQ_BLOCK values at each width
 * leaves on a Gaussian vector (least-squares steps, f16 scales; measured):
 * what the bit allocation below expects of each factor.
 */
/*
 * An unbiased unit's left-out term costs this many times its energy: like
 * a ZERO unit in the --bits allocation, dropping a direction of the delta
 * undoes that part of the fine-tune. (On ft-code at 1 bit per parameter,
 * 1, 4, 6 and 12 kept 96.8, 97.4, 97.0 and 94.7 % of the gain: more leaves
 * too many 1-bit terms, whose noise costs more than their directions win.)
 */
#define LRQ_DROP 4.0

static const double lrq_noise[9] = { 1.0, 0.3634, 0.1175, 0.0345, 0.0095, 0.0025, 0.00065,
                                     0.00017, 0.00005 };

/*
 * What a term of energy @p s2 costs when its two factors get @p bits each:
 * their noise, s2 (2e + e^2) for a relative error e per factor (unbiased
 * factors: e / (1 - e), since the scale correction amplifies the noise
 * too), or, left out, s2 times @p drop.
 */
static double lrq_term_err(double s2, unsigned bits, int unbiased, double drop)
{
    if (!bits)
        return s2 * drop;
    double e = lrq_noise[bits];
    if (unbiased)
        e = e / (1 - e);
    return s2 * (2 * e + e * e);
}

/* Term t's best upgrade from its width that fits (@p spent of @p budget
 * bytes spent): the gain per byte into *gain (0: none), the width into *to. */
static void lrq_best(double *gain, uint8_t *to, const tvs_lossy_params *p, const float *s,
                     const uint8_t *bits, uint32_t t, double spent, double budget, double drop)
{
    static const uint8_t widths[] = { 1, 2, 3, 4, 5, 6, 8 };
    unsigned b = bits[t];
    double s2 = (double)s[t] * s[t], cur = lrq_term_err(s2, b, p->unbiased, drop);
    double have = b ? (double)lrq_term_size(p, b) : 0;
    *gain = 0;
    *to = 0;
    for (size_t w = 0; w < sizeof widths; w++) {
        unsigned nb = widths[w];
        if (nb <= b)
            continue;
        double more = (double)lrq_term_size(p, nb) - have;
        int forced = t == 0 && b == 0;
        if (spent + more > budget && !(forced && nb == 1))
            continue;
        double g = (cur - lrq_term_err(s2, nb, p->unbiased, drop)) / more;
        if (forced && nb == 1 && spent + more > budget)
            g = HUGE_VAL;
        if (g > *gain)
            *gain = g, *to = (uint8_t)nb;
    }
}

/*
 * Bit widths for the k terms within @p budget bytes: every term starts at
 * 0 (left out) and, repeatedly, the upgrade of one term to a larger width
 * with the largest drop in cost per byte that still fits is taken (ties:
 * the lower term, then the smaller width); the first term gets at least
 * 1 bit even past the budget. Returns the terms kept (a prefix: the drop
 * per byte falls with the singular value). Each term's best upgrade is
 * kept between steps and found again only when it changed or no longer
 * fits (the room only shrinks, so a kept best that fits is still best).
 */
static uint32_t lrq_bits(uint8_t *bits, const tvs_lossy_params *p, const float *s, uint32_t k,
                         double budget)
{
    const double drop = p->unbiased ? LRQ_DROP : 1.0;
    double gain[TVS_LOSSY_MAX_RANK];
    uint8_t to[TVS_LOSSY_MAX_RANK];
    memset(bits, 0, k);
    double spent = LRQ_HDR;
    for (uint32_t t = 0; t < k; t++)
        lrq_best(&gain[t], &to[t], p, s, bits, t, spent, budget, drop);
    for (;;) {
        double best = 0;
        uint32_t at = k;
        for (uint32_t t = 0; t < k; t++) {
            if (!to[t])
                continue;
            double have = bits[t] ? (double)lrq_term_size(p, bits[t]) : 0;
            if (spent + (double)lrq_term_size(p, to[t]) - have > budget || (t == 0 && !bits[0]))
                lrq_best(&gain[t], &to[t], p, s, bits, t, spent, budget, drop);
            if (gain[t] > best)
                best = gain[t], at = t;
        }
        if (at == k)
            break;
        spent += (double)lrq_term_size(p, to[at]) -
                 (bits[at] ? (double)lrq_term_size(p, bits[at]) : 0);
        bits[at] = to[at];
        lrq_best(&gain[at], &to[at], p, s, bits, at, spent, budget, drop);
    }
    if (k && !bits[0])
        bits[0] = 1;
    uint32_t r = 0;
    while (r < k && bits[r])
        r++;
    return r;
}

int tvs_lossy_lowrankq_plan(const tvs_lossy_params *p, size_t n, double norm2, double *bytes,
                            double *tail, double *noise)
{
    if (p->codec != TVS_LC_LOWRANKQ || !p->svd || !lrq_params_ok(p, n))
        return tvs__fail(TVS_EINVAL, "lowrankq plan: bad parameters");
    uint8_t bits[TVS_LOSSY_MAX_RANK];
    const tvs_lossy_svd_t *sv = p->svd;
    uint32_t k = TVS_MIN(lrq_k(p), lrq_max_terms(p, n));
    uint32_t r = lrq_bits(bits, p, sv->s, k, (double)p->rate * (double)n / 8);
    double b = LRQ_HDR, kept = 0, err = 0;
    for (uint32_t t = 0; t < r; t++) {
        double s2 = (double)sv->s[t] * sv->s[t];
        b += (double)lrq_term_size(p, bits[t]);
        kept += s2;
        err += lrq_term_err(s2, bits[t], p->unbiased, 1.0);
    }
    *bytes = b;
    *tail = TVS_MAX(0.0, norm2 - kept);
    *noise = err;
    return 0;
}

/*
 * d ~ sum over the kept terms of (sqrt(s_t) u_t)(sqrt(s_t) v_t)^T, each factor
 * a least-squares BLOCKQ body (blocks of LRQ_BLOCK) at its term's width.
 * Adds to @p r_d and @p r_r (unless NULL) the sums over the terms of
 * <u^, u><v^, v> and |u^|^2 |v^|^2 (u^, v^: what the factors decode to;
 * u, v: the exact ones, sqrt(s_t) long): with the terms' directions
 * orthogonal and the tail orthogonal to them, <r, d> and |r|^2 of the
 * decoded unit r at scale 1, but for products of two factors' noises,
 * which average out.
 */
static uint8_t *lowrankq_encode(uint8_t *o, const tvs_lossy_params *p, const float *d, size_t n,
                                void *scratch, double *r_d, double *r_r)
{
    carve cv = { (uint8_t *)ALIGN16((uintptr_t)scratch) };
    tvs_lossy_svd_t own;
    const tvs_lossy_svd_t *sv = p->svd;
    uint32_t k = lrq_k(p);
    if (!sv) {
        void *mem = take(&cv, tvs_lossy_svd_size(p->rows, p->cols, k) - 16);
        tvs_lossy_svd(&own, d, p->rows, p->cols, k, mem);
        sv = &own;
    }
    size_t mx = TVS_MAX(p->rows, p->cols);
    uint8_t *bits = take(&cv, k);
    float *x = take(&cv, mx * 4), *in = take(&cv, mx * 4);
    void *work = take(&cv, bq_scratch(mx, LRQ_BLOCK));
    double ust[TVS_LOSSY_MAX_RANK][2];   /* each term's u^: <u^, u>, |u^|^2 */
    uint32_t r = lrq_bits(bits, p, sv->s, TVS_MIN(k, lrq_max_terms(p, n)),
                          (double)p->rate * (double)n / 8);
    tvs_store_le32(o, p->rows);
    tvs_store_le32(o + 4, p->cols);
    tvs_store_le32(o + 8, r);
    tvs_store_le32(o + 12, f2u(1.0f));
    o += LRQ_HDR;
    for (uint32_t t = 0; t < 2 * r; t++) {
        int is_u = t < r;
        uint32_t c = is_u ? t : t - r;
        size_t m = is_u ? p->rows : p->cols;
        const float *src = is_u ? sv->u + (size_t)c * p->rows : sv->v + (size_t)c * p->cols;
        const float g = sqrtf(sv->s[c]);
        for (size_t i = 0; i < m; i++)
            x[i] = g * src[i];
        tvs_lossy_params bp;
        memset(&bp, 0, sizeof bp);
        bp.codec = TVS_LC_BLOCKQ;
        bp.bits = bits[c];
        bp.block = LRQ_BLOCK;
        bq_fit f;
        bq_fit_body(&f, x, m, &bp, work);
        uint8_t *body = o;
        double dot = 0;
        o = bq_write(o, &f, x, &dot, NULL, in);
        if (p->unbiased)   /* each factor keeps its full length along itself */
            rescale(body + BQ_HDR - 4, dot, dot_with(x, x, m));
        /* decoding gives the stored mul times the brackets */
        const double mul = u2f(tvs_load_le32(body + BQ_HDR - 4));
        const double xd = f.mul != 0 ? dot * (mul / f.mul) : 0,
                     xx = r_r ? mul * mul * dot_with(in, in, m) : 0;
        if (is_u) {
            ust[c][0] = xd;
            ust[c][1] = xx;
        } else {
            *r_d += ust[c][0] * xd;
            if (r_r)
                *r_r += ust[c][1] * xx;
        }
    }
    return o;
}

/*
 * What decoding gives, from the encoder's state: BLOCKQ and SPARSEQ values
 * are the stored mul times the brackets in @p r (bq_write, the k kept ones
 * first, then spread out from the back: the j-th kept entry never sits
 * before j); SIGN values are +-scale (r unused).
 */
static void reconstruct(float *r, const tvs_lossy_params *p, const uint8_t *scale_at,
                        const float *d, size_t n, const uint64_t *kb, size_t k)
{
    const float s = u2f(tvs_load_le32(scale_at));
    if (p->codec == TVS_LC_SIGN) {
        for (size_t i = 0; i < n; i++)
            r[i] = k == n || kept_at(kb, i) ? (d[i] < 0 ? -s : s) : 0.0f;
        return;
    }
    if (k == n) {
        for (size_t i = 0; i < n; i++)
            r[i] = s * r[i];
        return;
    }
    for (size_t i = n, j = k; i-- > 0;)
        r[i] = kept_at(kb, i) ? s * r[--j] : 0.0f;
}

/* 1 if any of @p d is not finite (no early exit: the loop vectorizes). */
__attribute__((target_clones("avx512f", "avx2", "default"))) static int
any_special(const float *d, size_t n)
{
    uint32_t special = 0;
    for (size_t i = 0; i < n; i++)
        special |= (f2u(d[i]) & 0x7f800000u) == 0x7f800000u;
    return special != 0;
}

static int unit_encode(uint8_t *dst, size_t cap, size_t *written, const tvs_lossy_params *p,
                       const float *d, const uint8_t *ft, tvs_dtype dt, size_t n, void *scratch,
                       float *r, double *est)
{
    int rc = check_params(p, n, dt);
    if (rc)
        return rc;
    if (p->codec == TVS_LC_ZERO) {
        if (r)
            memset(r, 0, n * sizeof *r);
        return *written = 0, 0;
    }
    if (p->codec == TVS_LC_VERBATIM) {
        size_t need = n * width_of(dt);
        if ((rc = need_cap(need, cap, p->codec)))
            return rc;
        memcpy(dst, ft, need);
        return *written = need, 0;
    }
    /* LOWRANKQ from given triplets and |d|^2 does not read d */
    const int reads_d = !(p->codec == TVS_LC_LOWRANKQ && p->svd && p->norm2 > 0);
    if (reads_d && any_special(d, n))
        for (size_t i = 0; i < n; i++)
            if (!finite32(f2u(d[i])))
                return tvs__fail(TVS_EINVAL, "delta element %zu is not finite", i);
    carve cv = { (uint8_t *)ALIGN16((uintptr_t)scratch) };
    size_t need, k = tvs_lossy_keep_count(p->density, n), scale_at = SIZE_MAX;
    double dot = 0;   /* <r, d>, r the decoded unit: for params.unbiased */
    double e2 = -1;   /* |d|^2 as dot_with(d, d, n) sums it, when bq_write did */
    double lrq_rr = 0;   /* LOWRANKQ: |r|^2 at scale 1, estimated (dot: <r, d>) */
    uint8_t *o = dst;
    uint64_t *kb = NULL;
    bq_fit f;
    switch (p->codec) {
    case TVS_LC_BLOCKQ:
        k = n;
        need = bq_fit_body(&f, d, n, p, take(&cv, bq_scratch(n, p->block)));
        if ((rc = need_cap(need, cap, p->codec)))
            return rc;
        o = bq_write(o, &f, d, p->unbiased ? &dot : NULL, f.block % 4 ? NULL : &e2, r);
        scale_at = BQ_HDR - 4;   /* mul */
        break;
    case TVS_LC_SIGN:
    case TVS_LC_SPARSEQ: {
        uint32_t *keys = take(&cv, n * 4);
        kb = take(&cv, ceil8(n) + 8);
        mask_choice mc = { TVS_MASK_ALL, 0 };
        const float *vals = d;
        float *work = NULL;
        double sum = 0;
        if (k == n) {   /* every entry: no selection, no copy */
            for (size_t i = 0; i < n; i++)
                sum += fabs((double)d[i]);
        } else {
            float *kept = (float *)keys;
            size_t j = 0;
            top_k(kb, keys, d, n, k);
            mc = mask_choose(kb, n, k);
            for (size_t i = 0; i < n; i++)
                if (kept_at(kb, i)) {
                    kept[j++] = d[i];
                    sum += fabs((double)d[i]);
                }
            vals = kept;
        }
        if (p->codec == TVS_LC_SIGN) {
            need = 4 + MASK_HDR + mc.len + ceil8(k);
        } else {
            work = take(&cv, bq_scratch(k, p->block));
            need = MASK_HDR + mc.len + bq_fit_body(&f, vals, k, p, work);
        }
        if ((rc = need_cap(need, cap, p->codec)))
            return rc;
        if (p->codec == TVS_LC_SIGN) {
            float sc = (float)(sum / (double)k);
            tvs_store_le32(o, f2u(sc));
            dot = (double)sc * sum;   /* r = ±sc on the kept entries */
            scale_at = 0;
            o = mask_write(o + 4, kb, n, k, mc);
            size_t t = 0;   /* a byte of sign bits at a time */
            for (; t + 8 <= k; t += 8) {
                unsigned byte = 0;
                for (unsigned l = 0; l < 8; l++)
                    byte |= (unsigned)(vals[t + l] < 0) << l;
                *o++ = (uint8_t)byte;
            }
            if (t < k) {
                unsigned byte = 0;
                for (unsigned l = 0; t + l < k; l++)
                    byte |= (unsigned)(vals[t + l] < 0) << l;
                *o++ = (uint8_t)byte;
            }
        } else {
            o = mask_write(o, kb, n, k, mc);
            scale_at = (size_t)(o - dst) + BQ_HDR - 4;
            o = bq_write(o, &f, vals, p->unbiased ? &dot : NULL,   /* r = 0 elsewhere */
                         k == n && f.block % 4 == 0 ? &e2 : NULL, r);
        }
        break;
    }
    case TVS_LC_LOWRANK:
        need = tvs_lossy_unit_bound(p, n, dt);
        if ((rc = need_cap(need, cap, p->codec)))
            return rc;
        lowrank_encode(o, p, d, scratch);
        o += need;
        scale_at = LR_HDR - 4;   /* scale */
        if (p->unbiased) {   /* <r, d> of the product: decode it */
            float *dec = (float *)(ALIGN16((uintptr_t)scratch) + codec_scratch(p, n) - 16);
            if ((rc = tvs_lossy_unit_decode(dec, n, p->codec, (tvs_span){ dst, need })))
                return tvs__failctx(rc, "scale correction");
            dot = dot_with(dec, d, n);
        }
        break;
    case TVS_LC_LOWRANKQ:
        need = tvs_lossy_unit_bound(p, n, dt);
        if ((rc = need_cap(need, cap, p->codec)))
            return rc;
        /* the scale correction from the factors' estimate of <r, d>, so that
         * the product is decoded once, at its final scale, or not at all */
        o = lowrankq_encode(o, p, d, n, scratch, &dot, est ? &lrq_rr : NULL);
        scale_at = 12;   /* scale, 1 so far */
        if (p->unbiased || est)
            e2 = p->norm2 > 0 ? p->norm2 : dot_with(d, d, n);
        break;
    }
    *written = (size_t)(o - dst);
    if (p->unbiased && scale_at != SIZE_MAX)
        rescale(dst + scale_at, dot, e2 >= 0 ? e2 : dot_with(d, d, n));
    if (est && p->codec == TVS_LC_LOWRANKQ) {   /* |d - a r|^2, a the stored scale */
        const double a = u2f(tvs_load_le32(dst + scale_at));
        *est = TVS_MAX(0.0, e2 - 2 * a * dot + a * a * lrq_rr);
    }
    if (!r)
        return 0;
    if (p->codec == TVS_LC_LOWRANK || p->codec == TVS_LC_LOWRANKQ) {
        rc = tvs_lossy_unit_decode(r, n, p->codec, (tvs_span){ dst, *written });
        return rc ? tvs__failctx(rc, "reconstruction") : 0;
    }
    reconstruct(r, p, dst + scale_at, d, n, kb, k);
    return 0;
}

int tvs_lossy_unit_encode(uint8_t *dst, size_t cap, size_t *written, const tvs_lossy_params *p,
                          const float *d, const uint8_t *ft, tvs_dtype dt, size_t n,
                          void *scratch)
{
    return unit_encode(dst, cap, written, p, d, ft, dt, n, scratch, NULL, NULL);
}

int tvs_lossy_unit_encode_r(uint8_t *dst, size_t cap, size_t *written, float *r,
                            const tvs_lossy_params *p, const float *d, const uint8_t *ft,
                            tvs_dtype dt, size_t n, void *scratch)
{
    return unit_encode(dst, cap, written, p, d, ft, dt, n, scratch, r, NULL);
}

int tvs_lossy_lowrankq_estimate(uint8_t *dst, size_t cap, size_t *written, double *err,
                                const tvs_lossy_params *p, const float *d, size_t n,
                                void *scratch)
{
    if (p->codec != TVS_LC_LOWRANKQ)
        return tvs__fail(TVS_EINVAL, "lowrankq estimate of a %s unit",
                         tvs_lossy_codec_name(p->codec));
    return unit_encode(dst, cap, written, p, d, NULL, TVS_DTYPE_F32, n, scratch, NULL, err);
}
