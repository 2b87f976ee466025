/*
 * What format/lossy.c shares with its SIMD loops (format/lossy_avx2.c).
 */
#ifndef TVS_FORMAT_LOSSY_INT_H
#define TVS_FORMAT_LOSSY_INT_H

#include "format/base.h"

/* One BLOCKQ block's uniform quantizer: q = round(clamp((x * inv_mul - z) *
 * inv_s + half, 0, top)), its bracket s * (q - half) + z. */
typedef struct {
    float inv_mul, z, inv_s, half, top, s, mul;
} tvs__bq_quant;

/*
 * Indices, brackets and the sums acc[l] += (double)(mul * bracket) * x,
 * sq[l] += (double)x * x (l = i % 4) for the groups of eight of @p len
 * values; returns the values done. Call only if tvs__bq_avx2().
 */
size_t tvs__bq_quant_avx2(uint8_t *q, float *ib, double *acc, double *sq,
                          const tvs__bq_quant *c, const float *x, size_t len);

/*
 * Four rows of a LOWRANKQ product, columns [0, sl) of a strip: for r = 0,
 * 2, 4 ... (pairs of ranks; rank even here) o_k[x] = (o_k[x] + u_k[r] *
 * va[x]) + u_k[r + 1] * vb[x], eight columns per step, no FMA: the same
 * bits as the scalar loop. Returns the columns done. Call only if
 * tvs__bq_avx2().
 */
size_t tvs__lr_rows4_avx2(float *o0, size_t cols, size_t sl, const float *const u[4],
                          const float *v, size_t vcols, uint32_t rank);

/** 1 if the CPU runs AVX2 code. */
int tvs__bq_avx2(void);

/*
 * C (M x N, row stride ldc) = A B with A[i][kk] at A[i * ars + kk * aks]
 * and B[kk][t] at B[kk * ldb + t] (so A^T B too): each output the fused
 * multiply-adds fmaf(A[i][kk], B[kk][t], acc) for kk = 0 .. K - 1 from 0.
 * N a multiple of 8. Call only if tvs__fma_avx2() (format/lossy_svd_avx2.c).
 */
void tvs__sgemm_avx2(float *C, size_t ldc, const float *A, size_t ars, size_t aks,
                     const float *B, size_t ldb, size_t M, size_t N, size_t K);

/** 1 if the CPU runs AVX2 code with FMA. */
int tvs__fma_avx2(void);

/** The same product in AVX-512 (the same bits). Call only if tvs__avx512(). */
void tvs__sgemm_avx512(float *C, size_t ldc, const float *A, size_t ars, size_t aks,
                       const float *B, size_t ldb, size_t M, size_t N, size_t K);

/** 1 if the CPU (and the OS) run AVX-512F code. */
int tvs__avx512(void);

#endif
