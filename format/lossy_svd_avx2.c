/*
 * The f32 matrix product of the LOWRANKQ encoder's SVD (format/lossy_svd.c),
 * compiled for AVX2 with FMA and called only when the CPU has both
 * (tvs__fma_avx2). Four output rows by up to 24 columns of accumulators
 * stay in registers over the whole inner dimension; each output sums its
 * products with fused multiply-adds in the order kk = 0, 1, ... from 0,
 * exactly as the reference loop's fmaf does, so the bits are the same.
 */
#include "format/lossy_int.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define FMA_TARGET __attribute__((target("avx2,fma")))

/* One tile: MR rows (of A's ars stride) by NV groups of eight columns. */
static inline __attribute__((always_inline)) FMA_TARGET void
tile(float *C, size_t ldc, const float *A, size_t ars, size_t aks, const float *B, size_t ldb,
     size_t K, const int MR, const int NV)
{
    __m256 acc[4][3];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++)
            acc[r][v] = _mm256_setzero_ps();
    for (size_t kk = 0; kk < K; kk++) {
        const float *b = B + kk * ldb, *a = A + kk * aks;
        __m256 bv[3];
        for (int v = 0; v < NV; v++)
            bv[v] = _mm256_loadu_ps(b + 8 * v);
        for (int r = 0; r < MR; r++) {
            const __m256 av = _mm256_broadcast_ss(a + r * ars);
            for (int v = 0; v < NV; v++)
                acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
        }
    }
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++)
            _mm256_storeu_ps(C + r * ldc + 8 * v, acc[r][v]);
}

/* Rows [i0, i0 + MR) for every column group, N a multiple of 8. */
static inline __attribute__((always_inline)) FMA_TARGET void
row_block(float *C, size_t ldc, const float *A, size_t ars, size_t aks, const float *B,
          size_t ldb, size_t N, size_t K, const int MR)
{
    size_t t = 0;
    for (; t + 24 <= N; t += 24)
        tile(C + t, ldc, A, ars, aks, B + t, ldb, K, MR, 3);
    if (N - t == 16)
        tile(C + t, ldc, A, ars, aks, B + t, ldb, K, MR, 2);
    else if (N - t == 8)
        tile(C + t, ldc, A, ars, aks, B + t, ldb, K, MR, 1);
}

FMA_TARGET void tvs__sgemm_avx2(float *C, size_t ldc, const float *A, size_t ars, size_t aks,
                                const float *B, size_t ldb, size_t M, size_t N, size_t K)
{
    size_t i = 0;
    for (; i + 4 <= M; i += 4)
        row_block(C + i * ldc, ldc, A + i * ars, ars, aks, B, ldb, N, K, 4);
    for (; i < M; i++)
        row_block(C + i * ldc, ldc, A + i * ars, ars, aks, B, ldb, N, K, 1);
}

#define Z_TARGET __attribute__((target("avx512f")))

/* AVX-512: MR rows by NV groups of sixteen columns, the last group masked. */
static inline __attribute__((always_inline)) Z_TARGET void
ztile(float *C, size_t ldc, const float *A, size_t ars, size_t aks, const float *B, size_t ldb,
      size_t K, const int MR, const int NV, __mmask16 last)
{
    __m512 acc[8][4];
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++)
            acc[r][v] = _mm512_setzero_ps();
    for (size_t kk = 0; kk < K; kk++) {
        const float *b = B + kk * ldb, *a = A + kk * aks;
        __m512 bv[4];
        for (int v = 0; v < NV; v++)
            bv[v] = v + 1 < NV ? _mm512_loadu_ps(b + 16 * v)
                               : _mm512_maskz_loadu_ps(last, b + 16 * v);
        for (int r = 0; r < MR; r++) {
            const __m512 av = _mm512_set1_ps(a[r * ars]);
            for (int v = 0; v < NV; v++)
                acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
        }
    }
    for (int r = 0; r < MR; r++)
        for (int v = 0; v < NV; v++) {
            if (v + 1 < NV)
                _mm512_storeu_ps(C + r * ldc + 16 * v, acc[r][v]);
            else
                _mm512_mask_storeu_ps(C + r * ldc + 16 * v, last, acc[r][v]);
        }
}

static inline __attribute__((always_inline)) Z_TARGET void
zrow_block(float *C, size_t ldc, const float *A, size_t ars, size_t aks, const float *B,
           size_t ldb, size_t N, size_t K, const int MR)
{
    size_t t = 0;
    if (MR > 4)   /* 8 x 3 accumulators, 3 of B, 1 of A: 28 of the 32 registers */
        for (; t + 48 <= N; t += 48)
            ztile(C + t, ldc, A, ars, aks, B + t, ldb, K, MR, 3, 0xffff);
    else
        for (; t + 64 <= N; t += 64)
            ztile(C + t, ldc, A, ars, aks, B + t, ldb, K, MR, 4, 0xffff);
    const size_t rest = N - t;   /* a multiple of 8, < 48 or < 64 */
    const __mmask16 last = rest % 16 ? 0x00ff : 0xffff;
    switch ((rest + 15) / 16) {
    case 4:   /* only after 64-column tiles (MR <= 4) */
        if (MR <= 4)
            ztile(C + t, ldc, A, ars, aks, B + t, ldb, K, MR, 4, last);
        break;
    case 3:
        ztile(C + t, ldc, A, ars, aks, B + t, ldb, K, MR, 3, last);
        break;
    case 2:
        ztile(C + t, ldc, A, ars, aks, B + t, ldb, K, MR, 2, last);
        break;
    case 1:
        ztile(C + t, ldc, A, ars, aks, B + t, ldb, K, MR, 1, last);
        break;
    }
}

Z_TARGET void tvs__sgemm_avx512(float *C, size_t ldc, const float *A, size_t ars, size_t aks,
                                const float *B, size_t ldb, size_t M, size_t N, size_t K)
{
    size_t i = 0;
    for (; i + 8 <= M; i += 8)   /* 32 registers: eight rows share each load of B */
        zrow_block(C + i * ldc, ldc, A + i * ars, ars, aks, B, ldb, N, K, 8);
    for (; i + 4 <= M; i += 4)
        zrow_block(C + i * ldc, ldc, A + i * ars, ars, aks, B, ldb, N, K, 4);
    for (; i < M; i++)
        zrow_block(C + i * ldc, ldc, A + i * ars, ars, aks, B, ldb, N, K, 1);
}

int tvs__avx512(void) { return __builtin_cpu_supports("avx512f") != 0; }

int tvs__fma_avx2(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
void tvs__sgemm_avx2(float *C, size_t ldc, const float *A, size_t ars, size_t aks,
                     const float *B, size_t ldb, size_t M, size_t N, size_t K)
{
    (void)C, (void)ldc, (void)A, (void)ars, (void)aks, (void)B, (void)ldb, (void)M, (void)N,
        (void)K;
}

int tvs__fma_avx2(void) { return 0; }

void tvs__sgemm_avx512(float *C, size_t ldc, const float *A, size_t ars, size_t aks,
                       const float *B, size_t ldb, size_t M, size_t N, size_t K)
{
    (void)C, (void)ldc, (void)A, (void)ars, (void)aks, (void)B, (void)ldb, (void)M, (void)N,
        (void)K;
}

int tvs__avx512(void) { return 0; }
#endif
