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
 * LOWRANKQ: rows [0, nrows) by columns [j0, j1) of scale * U·V: o[k * ldo
 * + j - j0] = scale * acc, where acc = fmaf(u[r * ldu + k], v[r * cols +
 * j], acc) for r = 0 .. rank - 1 from +0 (SPEC.md 2.7), the bits of the
 * scalar fmaf loop. @p u is U transposed (rank x ldu) from the first row's
 * column on. Rows go TVS__LRQ_NR at a time, so tiles of that many rows or
 * more run fastest. Call only if tvs__lrq_fma().
 */
void tvs__lrq_rows_fma(float *o, size_t ldo, const float *u, size_t ldu, const float *v,
                       size_t cols, uint32_t rank, size_t nrows, size_t j0, size_t j1,
                       float scale);

#define TVS__LRQ_NR 6   /* output rows per register block of tvs__lrq_rows_fma */

/** The same product in AVX-512 (the same bits), rows TVS__LRQ_NR512 at a
 *  time. Call only if tvs__avx512(). */
void tvs__lrq_rows_avx512(float *o, size_t ldo, const float *u, size_t ldu, const float *v,
                          size_t cols, uint32_t rank, size_t nrows, size_t j0, size_t j1,
                          float scale);

#define TVS__LRQ_NR512 8   /* output rows per register block of tvs__lrq_rows_avx512 */

/** 1 if the CPU runs AVX2 code with FMA. */
int tvs__lrq_fma(void);

/*
 * tvs_lossy_unit_decode by the rules of a lossy chunk of @p version
 * (TVS_LOSSY_VERSION_MIN .. TVS_LOSSY_VERSION, else TVS_EINVAL): version 1
 * sums LOWRANKQ's products by mul+add. For a caller walking a chunk's units
 * (its version is the chunk's byte 0) that must get what apply gets.
 */
int tvs__lossy_unit_decode_v(float *d, size_t n, uint8_t codec, tvs_span payload,
                             uint8_t version);

/*
 * dst (BF16) = round(f32(dst) + d) for the groups of sixteen of @p m
 * values, up to the first group with an infinite or NaN sum; returns the
 * values done. Call only if tvs__bq_avx2().
 */
size_t tvs__add_bf16_avx2(uint8_t *dst, const float *d, size_t m);

/* The same, thirty-two values at a time. Call only if tvs__avx512(). */
size_t tvs__add_bf16_avx512(uint8_t *dst, const float *d, size_t m);

/** 1 if the CPU runs AVX2 code. */
int tvs__bq_avx2(void);

/*
 * BLOCKQ decoding in AVX-512 (call only if tvs__avx512()): the indices of
 * @p groups groups of eight @p bits-bit values (1..7) from @p src (@p avail
 * bytes readable), returning the groups done; and one block's values
 * mul * (s * (q - h) + z) sixteen at a time, returning the values done.
 */
size_t tvs__unpack8_avx512(uint8_t *q, const uint8_t *src, size_t groups, size_t avail,
                           unsigned bits);
size_t tvs__bq_deq_avx512(float *o, const uint8_t *q, size_t len, float s, float h, float z,
                          float mul);

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
