/*
 * The AVX2 loop of BLOCKQ's uniform quantizer (format/lossy.c, bq_write),
 * compiled for AVX2 and called only when the CPU has it (tvs__bq_avx2 says
 * so). Eight values per step; the same f32 operations per value as the
 * reference loop, and the f64 sums in the same four lanes in the same
 * order, so the bytes are the same with or without it.
 */
#include "format/lossy_int.h"

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

__attribute__((target("avx2"))) size_t tvs__lr_rows4_avx2(float *o0, size_t cols, size_t sl,
                                                           const float *const u[4],
                                                           const float *v, size_t vcols,
                                                           uint32_t rank)
{
    float *o1 = o0 + cols, *o2 = o1 + cols, *o3 = o2 + cols;
    size_t done = sl - sl % 8;
    for (uint32_t r = 0; r + 2 <= rank; r += 2) {
        const float *va = v + (size_t)r * vcols, *vb = va + vcols;
        const __m256 a0 = _mm256_set1_ps(u[0][r]), a1 = _mm256_set1_ps(u[1][r]);
        const __m256 a2 = _mm256_set1_ps(u[2][r]), a3 = _mm256_set1_ps(u[3][r]);
        const __m256 b0 = _mm256_set1_ps(u[0][r + 1]), b1 = _mm256_set1_ps(u[1][r + 1]);
        const __m256 b2 = _mm256_set1_ps(u[2][r + 1]), b3 = _mm256_set1_ps(u[3][r + 1]);
        for (size_t x = 0; x < done; x += 8) {
            const __m256 p = _mm256_loadu_ps(va + x), q = _mm256_loadu_ps(vb + x);
#define ROW8(o, A, B)                                                                       \
    _mm256_storeu_ps(o + x, _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(o + x),             \
                                                        _mm256_mul_ps(A, p)),               \
                                          _mm256_mul_ps(B, q)))
            ROW8(o0, a0, b0);
            ROW8(o1, a1, b1);
            ROW8(o2, a2, b2);
            ROW8(o3, a3, b3);
#undef ROW8
        }
    }
    return done;
}

int tvs__bq_avx2(void)
{
    return __builtin_cpu_supports("avx2") != 0;   /* the CPU and the OS (saved state) */
}
#else
size_t tvs__bq_quant_avx2(uint8_t *q, float *ib, double *acc, double *sq,
                          const tvs__bq_quant *c, const float *x, size_t len)
{
    (void)q, (void)ib, (void)acc, (void)sq, (void)c, (void)x, (void)len;
    return 0;
}

size_t tvs__lr_rows4_avx2(float *o0, size_t cols, size_t sl, const float *const u[4],
                          const float *v, size_t vcols, uint32_t rank)
{
    (void)o0, (void)cols, (void)sl, (void)u, (void)v, (void)vcols, (void)rank;
    return 0;
}

int tvs__bq_avx2(void) { return 0; }
#endif
