/*
 * tvs_lossy_svd: the leading singular triplets of a unit's delta, for the
 * LOWRANKQ encoder (format/lossy.h).
 *
 * A randomized subspace iteration with one power step, laid out so that
 * the four passes over the matrix are f32 matrix products (tvs__sgemm,
 * format/lossy_svd_avx2.c: fused multiply-adds in a fixed order, so every
 * SIMD level and the reference loop give the same bits), the bases kept
 * orthonormal by Cholesky QR, and the small Rayleigh-Ritz problem solved
 * by Householder tridiagonalization and implicit QL in f64. Everything is
 * a fixed sequence of IEEE operations: the output depends only on the input.
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
    if (tvs__lossy_simd == 1 && tvs__fma_avx2()) {
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
static void chol_qr(float *X, float *T, size_t M, size_t L, float *g, double *r)
{
    double *R = r, *Ri = r + L * L;
    sgemm(g, L, X, 1, L, X, L, L, L, M);
    double top = 0;
    for (size_t j = 0; j < L; j++)
        top = fmax(top, (double)g[j * L + j]);
    memset(R, 0, L * L * sizeof *R);
    for (size_t j = 0; j < L; j++) {
        double dj = g[j * L + j];
        for (size_t p = 0; p < j; p++)
            dj -= R[p * L + j] * R[p * L + j];
        if (!(dj > 1e-6 * top))
            continue;   /* a dead column: its row of R stays zero */
        double rj = sqrt(dj);
        R[j * L + j] = rj;
        for (size_t i = j + 1; i < L; i++) {
            double s = g[j * L + i];
            for (size_t p = 0; p < j; p++)
                s -= R[p * L + j] * R[p * L + i];
            R[j * L + i] = s / rj;
        }
    }
    /* Ri = R^-1 over the live columns (upper triangular), by columns */
    memset(Ri, 0, L * L * sizeof *Ri);
    for (size_t j = 0; j < L; j++) {
        if (R[j * L + j] == 0)
            continue;
        Ri[j * L + j] = 1 / R[j * L + j];
        for (size_t i = j; i-- > 0;) {
            if (R[i * L + i] == 0)
                continue;
            double s = 0;
            for (size_t p = i + 1; p <= j; p++)
                s += R[i * L + p] * Ri[p * L + j];
            Ri[i * L + j] = -s / R[i * L + i];
        }
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
 * row j of @p zt (n x n); @p e: n doubles. Returns 0, or -1 if QL did not
 * converge (the matrix held NaNs).
 */
static int sym_eig(double *a, size_t n, double *d, double *e, double *zt)
{
    for (size_t i = n; i-- > 1;) {   /* tridiagonalize: row i, columns < i */
        size_t l = i - 1;
        double h = 0, scale = 0;
        if (l > 0) {
            for (size_t k = 0; k <= l; k++)
                scale += fabs(a[i * n + k]);
            if (scale == 0) {
                e[i] = a[i * n + l];
            } else {
                for (size_t k = 0; k <= l; k++) {
                    a[i * n + k] /= scale;
                    h += a[i * n + k] * a[i * n + k];
                }
                double f = a[i * n + l], g = f >= 0 ? -sqrt(h) : sqrt(h);
                e[i] = scale * g;
                h -= f * g;
                a[i * n + l] = f - g;
                f = 0;
                for (size_t j = 0; j <= l; j++) {
                    a[j * n + i] = a[i * n + j] / h;
                    g = 0;
                    for (size_t k = 0; k <= j; k++)
                        g += a[j * n + k] * a[i * n + k];
                    for (size_t k = j + 1; k <= l; k++)
                        g += a[k * n + j] * a[i * n + k];
                    e[j] = g / h;
                    f += e[j] * a[i * n + j];
                }
                double hh = f / (h + h);
                for (size_t j = 0; j <= l; j++) {
                    f = a[i * n + j];
                    e[j] = g = e[j] - hh * f;
                    for (size_t k = 0; k <= j; k++)
                        a[j * n + k] -= f * e[k] + g * a[i * n + k];
                }
            }
        } else {
            e[i] = a[i * n + l];
        }
        d[i] = h;
    }
    d[0] = 0;
    e[0] = 0;
    for (size_t i = 0; i < n; i++) {   /* accumulate the transformations */
        if (d[i] != 0)
            for (size_t j = 0; j < i; j++) {
                double g = 0;
                for (size_t k = 0; k < i; k++)
                    g += a[i * n + k] * a[k * n + j];
                for (size_t k = 0; k < i; k++)
                    a[k * n + j] -= g * a[k * n + i];
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
    for (size_t i = 0; i < (size_t)cols * L; i++) {
        uint64_t z = (seed += 0x9e3779b97f4a7c15ull);   /* splitmix64 */
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        m.Z[i] = ((z ^ (z >> 31)) >> 63) ? 1.0f : -1.0f;
    }
    /* Y = A Om, Z = A^T Y, Y = A Z, each basis orthonormalized; then Z =
     * A^T Y, so that A ~ Y Z^T */
    sgemm(m.Y, L, a, cols, 1, m.Z, L, rows, L, cols);
    chol_qr(m.Y, m.T, rows, L, m.g, m.r);
    sgemm(m.Z, L, a, 1, cols, m.Y, L, cols, L, rows);
    chol_qr(m.Z, m.T, cols, L, m.g, m.r);
    sgemm(m.Y, L, a, cols, 1, m.Z, L, rows, L, cols);
    chol_qr(m.Y, m.T, rows, L, m.g, m.r);
    chol_qr(m.Y, m.T, rows, L, m.g, m.r);   /* twice: orthonormal to f32 precision */
    sgemm(m.Z, L, a, 1, cols, m.Y, L, cols, L, rows);
    /* the eigenvectors e of Z^T Z rotate Y Z^T into orthogonal terms (Y e)(Z e)^T */
    sgemm(m.g, L, m.Z, 1, L, m.Z, L, L, L, cols);
    for (size_t i = 0; i < L * L; i++)
        m.r[i] = m.g[i];
    if (sym_eig(m.r, L, m.d, m.e, m.zt))
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
    for (size_t t = 0; t < k; t++) {
        double nn = 0;
        for (size_t j = 0; j < cols; j++)
            nn += (double)m.Vt[j * K + t] * m.Vt[j * K + t];
        double sg = sqrt(nn);   /* more exact than the eigenvalue */
        m.s[t] = (float)sg;
        const double inv = sg > 0 ? 1.0 / sg : 0;
        for (size_t j = 0; j < cols; j++)
            m.v[t * cols + j] = (float)(m.Vt[j * K + t] * inv);
        for (size_t i = 0; i < rows; i++)
            m.u[t * rows + i] = m.Ut[i * K + t];
    }
    *out = (tvs_lossy_svd_t){ rows, cols, k, m.u, m.s, m.v };
    return 0;
}
