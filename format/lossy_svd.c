/*
 * tvs_lossy_svd: the leading singular triplets of a unit's delta, for the
 * LOWRANKQ encoder (format/lossy.h).
 *
 * A randomized subspace iteration with one power step, laid out so that
 * the four passes over the matrix are f32 matrix products (AVX-512 or
 * AVX2 with FMA where the CPU has them, format/lossy_svd_avx2.c: fused
 * multiply-adds in a fixed order, so every SIMD level and the reference
 * loop give the same bits), the bases kept
 * orthonormal by Cholesky QR, and the small Rayleigh-Ritz problem solved
 * by Householder tridiagonalization and implicit QL in f64, in loops the
 * compiler vectorizes element-wise (built for AVX-512, AVX2 and the
 * baseline, chosen at load time). Everything is a fixed sequence of IEEE
 * operations: the output depends only on the input.
 */
#include "format/lossy.h"
#include "format/lossy_int.h"

#include <math.h>
#include <string.h>

#define A16(x) (((x) + 15) & ~(size_t)15)
#define R8(x) (((x) + 7) & ~(size_t)7)

/* Oversampled width of the bases: k + 8, in whole groups of eight. */
static size_t svd_width(uint32_t k) { return R8((size_t)k + 8); }

/* C (M x N, row stride ldc) = sum over kk of A[i*ars + kk*aks] * B[kk*ldb + t]. */
static void sgemm(float *C, size_t ldc, const float *A, size_t ars, size_t aks, const float *B,
                  size_t ldb, size_t M, size_t N, size_t K)
{
    if (tvs__lossy_simd == 1 && tvs__avx512()) {
        tvs__sgemm_avx512(C, ldc, A, ars, aks, B, ldb, M, N, K);
        return;
    }
    if ((tvs__lossy_simd == 1 || tvs__lossy_simd == 3) && tvs__fma_avx2()) {
        tvs__sgemm_avx2(C, ldc, A, ars, aks, B, ldb, M, N, K);
        return;
    }
    for (size_t i = 0; i < M; i++) {
        float *c = C + i * ldc;
        for (size_t t = 0; t < N; t++)
            c[t] = 0.0f;
        for (size_t kk = 0; kk < K; kk++) {
            const float a = A[i * ars + kk * aks], *b = B + kk * ldb;
            for (size_t t = 0; t < N; t++)
                c[t] = fmaf(a, b[t], c[t]);
        }
    }
}

/*
 * Orthonormalize the L columns of X (M x L, row-major) by Cholesky QR:
 * G = X^T X (f32 products), G = R^T R in f64, X <- X R^-1 (through @p T,
 * M x L). A column whose pivot falls below 1e-6 of the largest diagonal
 * (dependent on the others, or zero) becomes zero. @p g: L*L floats,
 * @p r: 2*L*L doubles.
 */
__attribute__((target_clones("avx512f", "avx2", "default"))) static void
chol_qr(float *X, float *T, size_t M, size_t L, float *g, double *r)
{
    double *R = r, *Ri = r + L * L;
    sgemm(g, L, X, 1, L, X, L, L, L, M);
    double top = 0;
    for (size_t j = 0; j < L; j++)
        top = fmax(top, (double)g[j * L + j]);
    /* right-looking: row j of R, then the rest of the upper triangle loses
     * its outer product (each entry still subtracts in the order j = 0, 1, ...;
     * every inner loop is element-wise) */
    for (size_t i = 0; i < L * L; i++)
        R[i] = g[i];
    for (size_t j = 0; j < L; j++) {
        double *rj = R + j * L;
        if (!(rj[j] > 1e-6 * top)) {   /* a dead column: its row of R is zero */
            for (size_t i = j; i < L; i++)
                rj[i] = 0;
            continue;
        }
        const double piv = sqrt(rj[j]), inv = 1 / piv;
        rj[j] = piv;
        for (size_t i = j + 1; i < L; i++)
            rj[i] *= inv;
        for (size_t q = j + 1; q < L; q++) {
            const double f = rj[q];
            double *rq = R + q * L;
            for (size_t i = q; i < L; i++)
                rq[i] -= f * rj[i];
        }
    }
    /* Ri = R^-1 over the live columns (upper triangular), row by row from
     * the last: row j = (e_j - sum over q > j of R[j][q] row q) / R[j][j] */
    for (size_t j = L; j-- > 0;) {
        double *ri = Ri + j * L;
        memset(ri, 0, L * sizeof *ri);
        if (R[j * L + j] == 0)
            continue;
        ri[j] = 1;
        for (size_t q = j + 1; q < L; q++) {
            const double f = R[j * L + q];
            const double *rq = Ri + q * L;
            for (size_t i = q; i < L; i++)
                ri[i] -= f * rq[i];
        }
        const double inv = 1 / R[j * L + j];
        for (size_t i = j; i < L; i++)
            ri[i] *= inv;
    }
    for (size_t i = 0; i < L * L; i++)
        g[i] = (float)Ri[i];
    sgemm(T, L, X, L, 1, g, L, M, L, L);
    memcpy(X, T, M * L * sizeof *X);
}

/*
 * Eigen-decomposition of the symmetric n x n matrix @p a (row-major, f64):
 * Householder reduction to tridiagonal form with the transformation
 * accumulated, then implicit QL. Eigenvalues into @p d, eigenvector j into
 * row j of @p zt (n x n); @p e, @p w: n doubles. Returns 0, or -1 if QL did not
 * converge (the matrix held NaNs).
 */
__attribute__((target_clones("avx512f", "avx2", "default"))) static int
sym_eig(double *a, size_t n, double *d, double *e, double *zt, double *w)
{
    /* tridiagonalize from the last row up; the leading block is kept whole
     * (both triangles), so that its products are row operations */
    for (size_t i = n; i-- > 1;) {
        size_t l = i - 1;
        double h = 0, scale = 0;
        double *ui = a + i * n;   /* row i: the Householder vector u */
        if (l > 0) {
            for (size_t k = 0; k <= l; k++)
                scale += fabs(ui[k]);
            if (scale == 0) {
                e[i] = ui[l];
            } else {
                for (size_t k = 0; k <= l; k++) {
                    ui[k] /= scale;
                    h += ui[k] * ui[k];
                }
                double f = ui[l], g = f >= 0 ? -sqrt(h) : sqrt(h);
                e[i] = scale * g;
                h -= f * g;
                ui[l] = f - g;
                /* p = A u / h (in e), K = u.p / 2h, q = p - K u (in e) */
                for (size_t j = 0; j <= l; j++)
                    e[j] = 0;
                for (size_t k = 0; k <= l; k++) {
                    const double uk = ui[k], *ak = a + k * n;
                    for (size_t j = 0; j <= l; j++)
                        e[j] += uk * ak[j];
                }
                f = 0;
                for (size_t j = 0; j <= l; j++) {
                    a[j * n + i] = ui[j] / h;
                    e[j] /= h;
                    f += e[j] * ui[j];
                }
                const double hh = f / (h + h);
                for (size_t j = 0; j <= l; j++)
                    e[j] -= hh * ui[j];
                for (size_t j = 0; j <= l; j++) {   /* A -= u q^T + q u^T */
                    const double fj = ui[j], gj = e[j];
                    double *aj = a + j * n;
                    for (size_t k = 0; k <= l; k++)
                        aj[k] -= fj * e[k] + gj * ui[k];
                }
            }
        } else {
            e[i] = ui[l];
        }
        d[i] = h;
    }
    d[0] = 0;
    e[0] = 0;
    for (size_t i = 0; i < n; i++) {   /* accumulate the transformations */
        if (d[i] != 0) {
            /* w_j = sum over k < i of a[i][k] a[k][j]; then a[k][j] -= w_j a[k][i] */
            for (size_t j = 0; j < i; j++)
                w[j] = 0;
            for (size_t k = 0; k < i; k++) {
                const double f = a[i * n + k], *ak = a + k * n;
                for (size_t j = 0; j < i; j++)
                    w[j] += f * ak[j];
            }
            for (size_t k = 0; k < i; k++) {
                const double f = a[k * n + i];
                double *ak = a + k * n;
                for (size_t j = 0; j < i; j++)
                    ak[j] -= f * w[j];
            }
        }
        d[i] = a[i * n + i];
        a[i * n + i] = 1;
        for (size_t j = 0; j < i; j++)
            a[j * n + i] = a[i * n + j] = 0;
    }
    for (size_t i = 0; i < n; i++)   /* the eigenvectors are columns: keep them as rows */
        for (size_t k = 0; k < n; k++)
            zt[i * n + k] = a[k * n + i];
    for (size_t i = 1; i < n; i++)
        e[i - 1] = e[i];
    e[n - 1] = 0;
    for (size_t l = 0; l < n; l++) {
        int iter = 0;
        size_t m;
        do {
            for (m = l; m + 1 < n; m++) {
                double dd = fabs(d[m]) + fabs(d[m + 1]);
                if (fabs(e[m]) <= 0x1p-53 * dd)
                    break;
            }
            if (m == l)
                break;
            if (iter++ == 60)
                return -1;
            double g = (d[l + 1] - d[l]) / (2 * e[l]);
            double r = sqrt(g * g + 1);
            g = d[m] - d[l] + e[l] / (g + (g >= 0 ? r : -r));
            double s = 1, c = 1, p = 0;
            size_t i = m;
            int early = 0;
            while (i-- > l) {
                double f = s * e[i], b = c * e[i];
                e[i + 1] = r = sqrt(f * f + g * g);   /* no libm beyond sqrt */
                if (r == 0) {   /* underflow: deflate here */
                    d[i + 1] -= p;
                    e[m] = 0;
                    early = 1;
                    break;
                }
                s = f / r;
                c = g / r;
                g = d[i + 1] - p;
                r = (d[i] - g) * s + 2 * c * b;
                d[i + 1] = g + (p = s * r);
                g = c * r - b;
                double *z0 = zt + i * n, *z1 = z0 + n;
                for (size_t k = 0; k < n; k++) {
                    double f1 = z1[k];
                    z1[k] = s * z0[k] + c * f1;
                    z0[k] = c * z0[k] - s * f1;
                }
            }
            if (early)
                continue;
            d[l] -= p;
            e[l] = g;
            e[m] = 0;
        } while (m != l);
    }
    return 0;
}

/* The layout of tvs_lossy_svd's memory. */
typedef struct {
    float *Y, *Z, *T, *g, *E, *Ut, *Vt, *u, *s, *v;
    double *r, *d, *e, *zt;
    size_t *ord;
} svd_mem;

static size_t svd_carve(svd_mem *m, uint8_t *p, uint32_t rows, uint32_t cols, uint32_t k)
{
    const size_t L = svd_width(k), K = R8(k), mx = TVS_MAX(rows, cols);
    size_t at = 0;
    svd_mem dummy;   /* for the element sizes */
#define TAKE(f, n)                                \
    do {                                          \
        if (m)                                    \
            m->f = (void *)(p + at);              \
        at += A16((size_t)(n) * sizeof *dummy.f); \
    } while (0)
    TAKE(Y, (size_t)rows * L);
    TAKE(Z, (size_t)cols * L);
    TAKE(T, mx * L);
    TAKE(g, L * L);
    TAKE(E, L * K);
    TAKE(Ut, (size_t)rows * K);
    TAKE(Vt, (size_t)cols * K);
    TAKE(u, (size_t)k * rows);
    TAKE(s, k);
    TAKE(v, (size_t)k * cols);
    TAKE(r, 2 * L * L);
    TAKE(d, L);
    TAKE(e, L);
    TAKE(zt, L * L);
    TAKE(ord, L);
#undef TAKE
    return at;
}

size_t tvs_lossy_svd_size(uint32_t rows, uint32_t cols, uint32_t k)
{
    if (rows < 1 || cols < 1 || (uint64_t)rows * cols > TVS_LOSSY_MAX_UNIT || k < 1 ||
        k > TVS_MIN(rows, cols) || k > TVS_LOSSY_MAX_RANK)
        return 0;
    return 16 + svd_carve(NULL, NULL, rows, cols, k);
}

int tvs_lossy_svd(tvs_lossy_svd_t *out, const float *a, uint32_t rows, uint32_t cols,
                  uint32_t k, void *mem)
{
    if (!tvs_lossy_svd_size(rows, cols, k))
        return tvs__fail(TVS_EINVAL, "svd of %ux%u to %u triplets is out of range", rows, cols,
                         k);
    const size_t L = svd_width(k), K = R8(k);
    svd_mem m;
    svd_carve(&m, (uint8_t *)A16((uintptr_t)mem), rows, cols, k);
    uint64_t seed = 0x6c6f737379ull;   /* fixed: the output depends only on the input */
    for (size_t i = 0; i < (size_t)cols * L; i += 64) {   /* 64 signs per draw */
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);      /* splitmix64 */
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        const size_t len = TVS_MIN(64, (size_t)cols * L - i);
        for (size_t b = 0; b < len; b++)   /* bit b: +1, else -1 (branch-free) */
            m.Z[i + b] = (float)((int)((z >> b) & 1) * 2 - 1);
    }
    /* Y = A Om, Z = A^T Y, Y = A Z, each basis orthonormalized; then Z =
     * A^T Y, so that A ~ Y Z^T */
    sgemm(m.Y, L, a, cols, 1, m.Z, L, rows, L, cols);
    chol_qr(m.Y, m.T, rows, L, m.g, m.r);
    sgemm(m.Z, L, a, 1, cols, m.Y, L, cols, L, rows);
    chol_qr(m.Z, m.T, cols, L, m.g, m.r);
    sgemm(m.Y, L, a, cols, 1, m.Z, L, rows, L, cols);
    chol_qr(m.Y, m.T, rows, L, m.g, m.r);   /* Y = A Z is well conditioned: once is enough */
    sgemm(m.Z, L, a, 1, cols, m.Y, L, cols, L, rows);
    /* the eigenvectors e of Z^T Z rotate Y Z^T into orthogonal terms (Y e)(Z e)^T */
    sgemm(m.g, L, m.Z, 1, L, m.Z, L, L, L, cols);
    for (size_t i = 0; i < L * L; i++)
        m.r[i] = m.g[i];
    if (sym_eig(m.r, L, m.d, m.e, m.zt, m.r + L * L))
        return tvs__fail(TVS_EINVAL, "svd of %ux%u: the values are not finite", rows, cols);
    for (size_t t = 0; t < L; t++)
        m.ord[t] = t;
    for (size_t x = 1; x < L; x++)   /* by eigenvalue, descending; stable */
        for (size_t y = x; y > 0 && m.d[m.ord[y]] > m.d[m.ord[y - 1]]; y--) {
            size_t tmp = m.ord[y];
            m.ord[y] = m.ord[y - 1];
            m.ord[y - 1] = tmp;
        }
    memset(m.E, 0, L * K * sizeof *m.E);
    for (size_t t = 0; t < k; t++)
        for (size_t q = 0; q < L; q++)
            m.E[q * K + t] = (float)m.zt[m.ord[t] * L + q];
    sgemm(m.Ut, K, m.Y, L, 1, m.E, K, rows, K, L);
    sgemm(m.Vt, K, m.Z, L, 1, m.E, K, cols, K, L);
    /* s_t = |Z e_t| (more exact than the eigenvalue), summed over j in order
     * for every t at once; then the vectors, transposed */
    double *nn = m.d, *inv = m.e;
    for (size_t t = 0; t < k; t++)
        nn[t] = 0;
    for (size_t j = 0; j < cols; j++) {
        const float *vj = m.Vt + j * K;
        for (size_t t = 0; t < k; t++)
            nn[t] += (double)vj[t] * vj[t];
    }
    for (size_t t = 0; t < k; t++) {
        double sg = sqrt(nn[t]);
        m.s[t] = (float)sg;
        inv[t] = sg > 0 ? 1.0 / sg : 0;
    }
    for (size_t j0 = 0; j0 < cols; j0 += 16)   /* in blocks of 16 rows, kept in cache */
        for (size_t t = 0; t < k; t++)
            for (size_t j = j0; j < TVS_MIN(j0 + 16, cols); j++)
                m.v[t * cols + j] = (float)(m.Vt[j * K + t] * inv[t]);
    for (size_t i0 = 0; i0 < rows; i0 += 16)
        for (size_t t = 0; t < k; t++)
            for (size_t i = i0; i < TVS_MIN(i0 + 16, rows); i++)
                m.u[t * rows + i] = m.Ut[i * K + t];
    *out = (tvs_lossy_svd_t){ rows, cols, k, m.u, m.s, m.v };
    return 0;
}
