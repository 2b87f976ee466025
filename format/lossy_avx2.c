/*
 * The AVX2 loop of BLOCKQ's uniform quantizer (format/lossy.c, bq_write),
 * compiled for AVX2 and called only when the CPU has it (tvs__bq_avx2 says
 * so). Eight values per step; the same f32 operations per value as the
 * reference loop, and the f64 sums in the same four lanes in the same
 * order, so the bytes are the same with or without it.
 *
 * Also apply's BF16 rounding, sixteen elements at a time, the same integer
 * rounding as the SSE2 loop. And LOWRANKQ's product, compiled for AVX2 with
 * FMA and called only when the CPU has both (tvs__lrq_fma): fused
 * multiply-adds are the rule there (SPEC.md 2.7), so it gives the bits of
 * the scalar fmaf loop; and the same product in AVX-512, called only when
 * the CPU has AVX-512F (tvs__avx512).
 */
#include "format/lossy_int.h"

#include <math.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

__attribute__((target("avx2"))) size_t tvs__bq_quant_avx2(uint8_t *q, float *ib, double *acc,
                                                           double *sq, const tvs__bq_quant *c,
                                                           const float *x, size_t len)
{
    const __m256 im = _mm256_set1_ps(c->inv_mul), z = _mm256_set1_ps(c->z);
    const __m256 is = _mm256_set1_ps(c->inv_s), h = _mm256_set1_ps(c->half);
    const __m256 top = _mm256_set1_ps(c->top), zero = _mm256_setzero_ps();
    const __m256 half = _mm256_set1_ps(0.5f), s = _mm256_set1_ps(c->s);
    const __m256 m = _mm256_set1_ps(c->mul);
    __m256d a = _mm256_loadu_pd(acc), e = _mm256_loadu_pd(sq);
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        __m256 xv = _mm256_loadu_ps(x + i);
        __m256 t = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_mul_ps(xv, im), z), is), h);
        t = _mm256_min_ps(_mm256_max_ps(t, zero), top);   /* t > 0 ? t : 0, t < top ? t : top */
        __m256i qi = _mm256_cvttps_epi32(_mm256_add_ps(t, half));
        __m256 v = _mm256_add_ps(_mm256_mul_ps(s, _mm256_sub_ps(_mm256_cvtepi32_ps(qi), h)), z);
        _mm256_storeu_ps(ib + i, v);
        __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(qi), _mm256_extracti128_si256(qi, 1));
        _mm_storel_epi64((__m128i *)(q + i), _mm_packus_epi16(w, w));
        __m256 r = _mm256_mul_ps(m, v);
        __m256d x0 = _mm256_cvtps_pd(_mm256_castps256_ps128(xv));
        __m256d x1 = _mm256_cvtps_pd(_mm256_extractf128_ps(xv, 1));
        /* values i .. i + 3, then i + 4 .. i + 7: lanes 0 .. 3 each time */
        a = _mm256_add_pd(a, _mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(r)), x0));
        a = _mm256_add_pd(a, _mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(r, 1)), x1));
        e = _mm256_add_pd(e, _mm256_mul_pd(x0, x0));
        e = _mm256_add_pd(e, _mm256_mul_pd(x1, x1));
    }
    _mm256_storeu_pd(acc, a);
    _mm256_storeu_pd(sq, e);
    return i;
}

/*
 * LOWRANKQ: a register-blocked product, like a GEMM micro-kernel. A block
 * of NR (<= 6) output rows by 16 columns keeps its NR x 2 sums in registers
 * for the whole rank loop: per rank, two loads of V's row r, one broadcast
 * of U[k][r] per row (neighbours in U's column r), 2 NR fused
 * multiply-adds. Each sum is acc = fma(u, v, acc) in rank order from +0,
 * then scale * acc, lane by lane, so the bits are those of the scalar fmaf
 * loop (which takes the columns left over, compiled here so fmaf is the
 * instruction, not a libm call).
 */
#define LRQ_NR TVS__LRQ_NR

static inline __attribute__((always_inline, target("avx2,fma"))) void
lrq_block16(const int nr, float *o, size_t ldo, const float *u, size_t ldu, const float *v,
            size_t cols, uint32_t rank, __m256 sc)
{
    __m256 a[LRQ_NR][2];
    for (int k = 0; k < nr; k++)
        a[k][0] = a[k][1] = _mm256_setzero_ps();
    const float *vp = v, *up = u;
    for (uint32_t r = 0; r < rank; r++, vp += cols, up += ldu) {
        const __m256 p = _mm256_loadu_ps(vp), q = _mm256_loadu_ps(vp + 8);
        for (int k = 0; k < nr; k++) {
            const __m256 b = _mm256_broadcast_ss(up + k);
            a[k][0] = _mm256_fmadd_ps(b, p, a[k][0]);
            a[k][1] = _mm256_fmadd_ps(b, q, a[k][1]);
        }
    }
    for (int k = 0; k < nr; k++) {
        _mm256_storeu_ps(o + (size_t)k * ldo, _mm256_mul_ps(sc, a[k][0]));
        _mm256_storeu_ps(o + (size_t)k * ldo + 8, _mm256_mul_ps(sc, a[k][1]));
    }
}

static inline __attribute__((always_inline, target("avx2,fma"))) void
lrq_block8(const int nr, float *o, size_t ldo, const float *u, size_t ldu, const float *v,
           size_t cols, uint32_t rank, __m256 sc)
{
    __m256 a[LRQ_NR];
    for (int k = 0; k < nr; k++)
        a[k] = _mm256_setzero_ps();
    const float *vp = v, *up = u;
    for (uint32_t r = 0; r < rank; r++, vp += cols, up += ldu) {
        const __m256 p = _mm256_loadu_ps(vp);
        for (int k = 0; k < nr; k++)
            a[k] = _mm256_fmadd_ps(_mm256_broadcast_ss(up + k), p, a[k]);
    }
    for (int k = 0; k < nr; k++)
        _mm256_storeu_ps(o + (size_t)k * ldo, _mm256_mul_ps(sc, a[k]));
}

/* Rows [0, nr) by columns [j0, j1) of one row block; column j of row k at
 * o[k * ldo + j - j0]. */
static inline __attribute__((always_inline, target("avx2,fma"))) void
lrq_rows(const int nr, float *o, size_t ldo, const float *u, size_t ldu, const float *v,
         size_t cols, uint32_t rank, size_t j0, size_t j1, float scale)
{
    const __m256 sc = _mm256_set1_ps(scale);
    size_t j = j0;
    for (; j + 16 <= j1; j += 16)
        lrq_block16(nr, o + (j - j0), ldo, u, ldu, v + j, cols, rank, sc);
    if (j + 8 <= j1) {
        lrq_block8(nr, o + (j - j0), ldo, u, ldu, v + j, cols, rank, sc);
        j += 8;
    }
    for (int k = 0; k < nr; k++)
        for (size_t x = j; x < j1; x++) {
            float acc = 0.0f;
            for (uint32_t r = 0; r < rank; r++)
                acc = fmaf(u[(size_t)r * ldu + k], v[(size_t)r * cols + x], acc);
            o[(size_t)k * ldo + (x - j0)] = scale * acc;
        }
}

__attribute__((target("avx2,fma"))) void tvs__lrq_rows_fma(float *o, size_t ldo,
                                                           const float *u, size_t ldu,
                                                           const float *v, size_t cols,
                                                           uint32_t rank, size_t nrows,
                                                           size_t j0, size_t j1, float scale)
{
    /* row blocks inside column slabs: a slab of V (rank x 64 columns) stays
     * in L1 while every row block of the call passes over it */
    for (size_t s = j0; s < j1; s += 64) {
        const size_t e = j1 - s < 64 ? j1 : s + 64;
        size_t i = 0;
        float *os = o + (s - j0);
        for (; i + LRQ_NR <= nrows; i += LRQ_NR)
            lrq_rows(LRQ_NR, os + i * ldo, ldo, u + i, ldu, v, cols, rank, s, e, scale);
        switch (nrows - i) {
#define REST(n)                                                                      \
    case n:                                                                          \
        lrq_rows(n, os + i * ldo, ldo, u + i, ldu, v, cols, rank, s, e, scale);     \
        break;
        REST(1) REST(2) REST(3) REST(4) REST(5)
#undef REST
        default: break;
        }
    }
}

/*
 * The same product in AVX-512: blocks of ZMR output rows by ZNV groups of
 * sixteen columns (8 x 3: 24 sums, 3 loads of V's row r, 1 broadcast, 28 of
 * the 32 registers), the last group of a row's columns masked, so any width
 * takes the vector loop (masked lanes load nothing and store nothing). The
 * sums are the same fused multiply-adds lane by lane in rank order, so the
 * bits are again those of the scalar fmaf loop.
 */
#define Z_TARGET __attribute__((target("avx512f")))
#define ZMR TVS__LRQ_NR512
#define ZNV 3
#define ZSLAB (4 * 16 * ZNV)   /* columns per slab of V (48 to 384 measured the same) */

static inline __attribute__((always_inline)) Z_TARGET void
lrq_ztile(const int mr, const int nv, __mmask16 last, float *o, size_t ldo, const float *u,
          size_t ldu, const float *v, size_t cols, uint32_t rank, __m512 sc)
{
    __m512 a[ZMR][ZNV];
    for (int k = 0; k < mr; k++)
        for (int x = 0; x < nv; x++)
            a[k][x] = _mm512_setzero_ps();
    const float *vp = v, *up = u;
    for (uint32_t r = 0; r < rank; r++, vp += cols, up += ldu) {
        __m512 b[ZNV];
        for (int x = 0; x < nv; x++)
            b[x] = x + 1 < nv ? _mm512_loadu_ps(vp + 16 * x)
                              : _mm512_maskz_loadu_ps(last, vp + 16 * x);
        for (int k = 0; k < mr; k++) {
            const __m512 w = _mm512_set1_ps(up[k]);
            for (int x = 0; x < nv; x++)
                a[k][x] = _mm512_fmadd_ps(w, b[x], a[k][x]);
        }
    }
    for (int k = 0; k < mr; k++)
        for (int x = 0; x < nv; x++) {
            float *p = o + (size_t)k * ldo + 16 * x;
            if (x + 1 < nv)
                _mm512_storeu_ps(p, _mm512_mul_ps(sc, a[k][x]));
            else
                _mm512_mask_storeu_ps(p, last, _mm512_mul_ps(sc, a[k][x]));
        }
}

/* Rows [0, mr) by columns [j0, j1) (at most ZSLAB) of one row block. */
static inline __attribute__((always_inline)) Z_TARGET void
lrq_zrows(const int mr, float *o, size_t ldo, const float *u, size_t ldu, const float *v,
          size_t cols, uint32_t rank, size_t j0, size_t j1, __m512 sc)
{
    size_t j = j0;
    for (; j + 16 * ZNV <= j1; j += 16 * ZNV)
        lrq_ztile(mr, ZNV, 0xffff, o + (j - j0), ldo, u, ldu, v + j, cols, rank, sc);
    const size_t rest = j1 - j;
    if (!rest)
        return;
    const __mmask16 last = (__mmask16)(rest % 16 ? (1u << rest % 16) - 1 : 0xffff);
    switch ((rest + 15) / 16) {
#define TAIL(n)                                                                               case n:                                                                                       lrq_ztile(mr, n, last, o + (j - j0), ldo, u, ldu, v + j, cols, rank, sc);                break;
        TAIL(1) TAIL(2) TAIL(3)
#if ZNV > 3
        TAIL(4)
#endif
#undef TAIL
    default: break;
    }
}

Z_TARGET void tvs__lrq_rows_avx512(float *o, size_t ldo, const float *u, size_t ldu,
                                   const float *v, size_t cols, uint32_t rank, size_t nrows,
                                   size_t j0, size_t j1, float scale)
{
    const __m512 sc = _mm512_set1_ps(scale);
    for (size_t s = j0; s < j1; s += ZSLAB) {
        const size_t e = j1 - s < ZSLAB ? j1 : s + ZSLAB;
        size_t i = 0;
        float *os = o + (s - j0);
        for (; i + ZMR <= nrows; i += ZMR)
            lrq_zrows(ZMR, os + i * ldo, ldo, u + i, ldu, v, cols, rank, s, e, sc);
        switch (nrows - i) {
#define REST(n)                                                                          case n:                                                                                  lrq_zrows(n, os + i * ldo, ldo, u + i, ldu, v, cols, rank, s, e, sc);               break;
        REST(1) REST(2) REST(3) REST(4) REST(5)
#if ZMR > 6
        REST(6) REST(7)
#endif
#undef REST
        default: break;
        }
    }
}

/*
 * Apply to BF16 elements, sixteen at a time, the integer RNE of
 * add_bf16_sse2 (format/lossy.c) in 256-bit registers. Stops before the
 * first group of sixteen with an infinite or NaN sum, which the reference
 * loop takes (NaNs are quieted, not rounded).
 */
__attribute__((target("avx2"))) size_t tvs__add_bf16_avx2(uint8_t *dst, const float *d,
                                                           size_t m)
{
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
    const __m256i expm = _mm256_set1_epi32(0x7f800000);
    size_t i = 0;
    for (; i + 16 <= m; i += 16) {
        __m256i b0 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(dst + 2 * i)));
        __m256i b1 = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(dst + 2 * i + 16)));
        __m256i s0 = _mm256_castps_si256(_mm256_add_ps(
            _mm256_castsi256_ps(_mm256_slli_epi32(b0, 16)), _mm256_loadu_ps(d + i)));
        __m256i s1 = _mm256_castps_si256(_mm256_add_ps(
            _mm256_castsi256_ps(_mm256_slli_epi32(b1, 16)), _mm256_loadu_ps(d + i + 8)));
        __m256i special = _mm256_or_si256(_mm256_cmpeq_epi32(_mm256_and_si256(s0, expm), expm),
                                          _mm256_cmpeq_epi32(_mm256_and_si256(s1, expm), expm));
        if (_mm256_movemask_epi8(special))
            break;
        __m256i r0 = _mm256_and_si256(_mm256_srli_epi32(s0, 16), one);
        __m256i r1 = _mm256_and_si256(_mm256_srli_epi32(s1, 16), one);
        s0 = _mm256_add_epi32(s0, _mm256_add_epi32(bias, r0));
        s1 = _mm256_add_epi32(s1, _mm256_add_epi32(bias, r1));
        /* the pack works within 128-bit lanes: 0-3 8-11 4-7 12-15, then in order */
        __m256i p = _mm256_packs_epi32(_mm256_srai_epi32(s0, 16), _mm256_srai_epi32(s1, 16));
        _mm256_storeu_si256((__m256i *)(dst + 2 * i), _mm256_permute4x64_epi64(p, 0xd8));
    }
    return i;
}

/*
 * BLOCKQ indices, AVX-512: each group of 8 values (exactly @p bits bytes at
 * a byte boundary) read as one 64-bit word, copied to eight lanes, shifted
 * lane by lane (0, bits, 2 bits, ...) and masked; the low bytes are the
 * indices. The same integers as unpack8 (format/lossy.c).
 */
Z_TARGET size_t tvs__unpack8_avx512(uint8_t *q, const uint8_t *src, size_t groups,
                                    size_t avail, unsigned bits)
{
    const long long b1 = bits;
    const __m512i sh = _mm512_set_epi64(7 * b1, 6 * b1, 5 * b1, 4 * b1, 3 * b1, 2 * b1, b1, 0);
    const __m512i mask = _mm512_set1_epi64((long long)((1u << bits) - 1));
    size_t g = 0;
    for (; g < groups && g * bits + 8 <= avail; g++) {   /* one 8-byte load per group */
        const __m512i w = _mm512_set1_epi64((long long)tvs_load_le64(src + g * bits));
        const __m128i b = _mm512_cvtepi64_epi8(_mm512_and_si512(_mm512_srlv_epi64(w, sh), mask));
        _mm_storel_epi64((__m128i *)(q + 8 * g), b);
    }
    return g;
}

/*
 * BLOCKQ values of one block, sixteen at a time: o = mul * (s * (q - h) +
 * z), the f32 operations of the reference loop in its order (no fused
 * multiply-add: the build sets -ffp-contract=off). Returns the values done.
 */
Z_TARGET size_t tvs__bq_deq_avx512(float *o, const uint8_t *q, size_t len, float s, float h,
                                   float z, float mul)
{
    const __m512 sv = _mm512_set1_ps(s), hv = _mm512_set1_ps(h), zv = _mm512_set1_ps(z);
    const __m512 mv = _mm512_set1_ps(mul);
    size_t i = 0;
    for (; i + 16 <= len; i += 16) {
        const __m512 x = _mm512_cvtepi32_ps(
            _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(q + i))));
        const __m512 y = _mm512_add_ps(_mm512_mul_ps(sv, _mm512_sub_ps(x, hv)), zv);
        _mm512_storeu_ps(o + i, _mm512_mul_ps(mv, y));
    }
    return i;
}

/*
 * The same in AVX-512, thirty-two elements at a time: the top halves of the
 * rounded sums taken by truncating moves (vpmovdw), which for a finite sum
 * are the bits of the signed pack above (a finite f32 pattern plus 0x8000
 * never passes 2^32). Stops before the first group of thirty-two with an
 * infinite or NaN sum.
 */
Z_TARGET size_t tvs__add_bf16_avx512(uint8_t *dst, const float *d, size_t m)
{
    const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff);
    const __m512i expm = _mm512_set1_epi32(0x7f800000);
    size_t i = 0;
    for (; i + 32 <= m; i += 32) {
        __m512i b0 = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(dst + 2 * i)));
        __m512i b1 = _mm512_cvtepu16_epi32(
            _mm256_loadu_si256((const __m256i *)(dst + 2 * i + 32)));
        __m512i s0 = _mm512_castps_si512(_mm512_add_ps(
            _mm512_castsi512_ps(_mm512_slli_epi32(b0, 16)), _mm512_loadu_ps(d + i)));
        __m512i s1 = _mm512_castps_si512(_mm512_add_ps(
            _mm512_castsi512_ps(_mm512_slli_epi32(b1, 16)), _mm512_loadu_ps(d + i + 16)));
        __mmask16 special = _mm512_cmpeq_epi32_mask(_mm512_and_si512(s0, expm), expm) |
                            _mm512_cmpeq_epi32_mask(_mm512_and_si512(s1, expm), expm);
        if (special)
            break;
        s0 = _mm512_add_epi32(
            s0, _mm512_add_epi32(bias, _mm512_and_si512(_mm512_srli_epi32(s0, 16), one)));
        s1 = _mm512_add_epi32(
            s1, _mm512_add_epi32(bias, _mm512_and_si512(_mm512_srli_epi32(s1, 16), one)));
        _mm256_storeu_si256((__m256i *)(dst + 2 * i),
                            _mm512_cvtepi32_epi16(_mm512_srli_epi32(s0, 16)));
        _mm256_storeu_si256((__m256i *)(dst + 2 * i + 32),
                            _mm512_cvtepi32_epi16(_mm512_srli_epi32(s1, 16)));
    }
    return i;
}

int tvs__bq_avx2(void)
{
    return __builtin_cpu_supports("avx2") != 0;   /* the CPU and the OS (saved state) */
}

int tvs__lrq_fma(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
size_t tvs__bq_quant_avx2(uint8_t *q, float *ib, double *acc, double *sq,
                          const tvs__bq_quant *c, const float *x, size_t len)
{
    (void)q, (void)ib, (void)acc, (void)sq, (void)c, (void)x, (void)len;
    return 0;
}

void tvs__lrq_rows_fma(float *o, size_t ldo, const float *u, size_t ldu, const float *v,
                       size_t cols, uint32_t rank, size_t nrows, size_t j0, size_t j1,
                       float scale)
{
    (void)o, (void)ldo, (void)u, (void)ldu, (void)v, (void)cols, (void)rank, (void)nrows;
    (void)j0, (void)j1, (void)scale;
}

void tvs__lrq_rows_avx512(float *o, size_t ldo, const float *u, size_t ldu, const float *v,
                          size_t cols, uint32_t rank, size_t nrows, size_t j0, size_t j1,
                          float scale)
{
    tvs__lrq_rows_fma(o, ldo, u, ldu, v, cols, rank, nrows, j0, j1, scale);
}

size_t tvs__add_bf16_avx2(uint8_t *dst, const float *d, size_t m)
{
    (void)dst, (void)d, (void)m;
    return 0;
}

size_t tvs__add_bf16_avx512(uint8_t *dst, const float *d, size_t m)
{
    (void)dst, (void)d, (void)m;
    return 0;
}

size_t tvs__unpack8_avx512(uint8_t *q, const uint8_t *src, size_t groups, size_t avail,
                           unsigned bits)
{
    (void)q, (void)src, (void)groups, (void)avail, (void)bits;
    return 0;
}

size_t tvs__bq_deq_avx512(float *o, const uint8_t *q, size_t len, float s, float h, float z,
                          float mul)
{
    (void)o, (void)q, (void)len, (void)s, (void)h, (void)z, (void)mul;
    return 0;
}

int tvs__bq_avx2(void) { return 0; }
int tvs__lrq_fma(void) { return 0; }
#endif
