/*
 * tvs_lossy_svd: the leading singular triplets of a unit's delta, for the
 * LOWRANKQ encoder (format/lossy.h).
 *
 * From the Gram matrix of the matrix's smaller side (see "The plan"
 * below): its eigenvectors, all of them when the side is small, else by a
 * subspace iteration with two power steps and Rayleigh-Ritz; one product
 * with the matrix then gives the other side. The products are f32 matrix
 * products (AVX-512 or AVX2 with FMA where the CPU has them,
 * format/lossy_svd_avx2.c: fused multiply-adds in a fixed order, so every
 * SIMD level and the reference loop give the same bits), the bases kept
 * orthonormal by Cholesky QR, and the small eigenproblems solved by
 * Householder tridiagonalization and implicit QL in f64, in loops the
 * compiler vectorizes element-wise (built for AVX-512, AVX2 and the
 * baseline, chosen at load time). Everything is a fixed sequence of IEEE
 * operations: the output depends only on the input.
 */
#include "format/lossy.h"
#include "format/lossy_int.h"

#include <math.h>
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

/*
 * The plan. P is the tall view of the matrix (R = max(rows, cols) rows
 * of its m = min(rows, cols) columns: the matrix itself, or its
 * transpose), and G = P^T P its m x m Gram matrix, whose eigenvectors are
 * P's right singular vectors (the small side's) and whose eigenvalues are
 * the squared singular values. G costs m/2 multiply-adds per element, one
 * product P S for the big side k more; the rest works on G, m x m, which
 * for the wide row blocks of a large model's chunks (m <= 256 rows of
 * thousands of columns) is cheap next to a pass over the matrix.
 *  - m <= L: G's eigenvectors, all of them (f64 Householder and QL).
 *  - else: a subspace iteration on G from L random sign vectors, SVD_POWER
 *    products each followed by Cholesky QR, then Rayleigh-Ritz on the
 *    basis (one more product): the basis spans G^SVD_POWER Om, as the
 *    randomized SVD's (A A^T)^q A Om does for q = SVD_POWER - 1/2.
 */
#define SVD_POWER 2

/* The layout of tvs_lossy_svd's memory (mp = m rounded up to 8). */
typedef struct {
    float *P, *G, *Q, *Y, *T, *g, *E, *S, *W, *u, *s, *v;
    double *r, *d, *e, *zt;
    size_t *ord;
} svd_mem;

static size_t svd_carve(svd_mem *m, uint8_t *p, uint32_t rows, uint32_t cols, uint32_t k)
{
    const size_t L = svd_width(k), K = R8(k), R = TVS_MAX(rows, cols), s = TVS_MIN(rows, cols),
                 mp = R8(s);
    size_t at = 0;
    svd_mem dummy;   /* for the element sizes */
#define TAKE(f, n)                                \
    do {                                          \
        if (m)                                    \
            m->f = (void *)(p + at);              \
        at += A16((size_t)(n) * sizeof *dummy.f); \
    } while (0)
    TAKE(P, R * mp);
    TAKE(G, s * mp);
    TAKE(Q, s * L);
    TAKE(Y, s * L);
    TAKE(T, s * L);
    TAKE(g, L * L);
    TAKE(E, L * K);
    TAKE(S, s * K);
    TAKE(W, R * K);
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

/* P (R x mp) = the tall view of @p a (rows x cols), its padding columns zero. */
static void tall_view(float *P, const float *a, size_t rows, size_t cols, size_t mp)
{
    if (rows >= cols) {
        for (size_t i = 0; i < rows; i++) {
            memcpy(P + i * mp, a + i * cols, cols * sizeof *P);
            for (size_t j = cols; j < mp; j++)
                P[i * mp + j] = 0;
        }
        return;
    }
    /* the transpose (a copy: the same bits at every level), in blocks of 32
     * rows by 64 columns, whose pages all stay in the TLB, of 4 x 4 tiles */
    size_t i4 = 0;
#if defined(__SSE2__)
    i4 = rows & ~(size_t)3;
    for (size_t ib = 0; ib < i4; ib += 32)
        for (size_t jb = 0; jb < cols; jb += 64) {
            const size_t ie = TVS_MIN(ib + 32, i4), je = TVS_MIN(jb + 64, cols);
            for (size_t i0 = ib; i0 < ie; i0 += 4) {
                const float *a0 = a + i0 * cols;
                size_t j = jb;
                for (; j + 4 <= je; j += 4) {
                    __m128 r0 = _mm_loadu_ps(a0 + j), r1 = _mm_loadu_ps(a0 + cols + j),
                           r2 = _mm_loadu_ps(a0 + 2 * cols + j),
                           r3 = _mm_loadu_ps(a0 + 3 * cols + j);
                    _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
                    _mm_storeu_ps(P + j * mp + i0, r0);
                    _mm_storeu_ps(P + (j + 1) * mp + i0, r1);
                    _mm_storeu_ps(P + (j + 2) * mp + i0, r2);
                    _mm_storeu_ps(P + (j + 3) * mp + i0, r3);
                }
                for (; j < je; j++)
                    for (size_t i = i0; i < i0 + 4; i++)
                        P[j * mp + i] = a[i * cols + j];
            }
        }
#endif
    for (size_t i = i4; i < rows; i++)
        for (size_t j = 0; j < cols; j++)
            P[j * mp + i] = a[i * cols + j];
    for (size_t j = 0; j < cols; j++)
        for (size_t i = rows; i < mp; i++)
            P[j * mp + i] = 0;
}

/* Eigenvalues (into d) and vectors of the symmetric f32 matrix @p h (n x n,
 * row stride ld), by magnitude descending, vector t's entries into column t
 * of @p out (n rows, stride K) for t < k, the other columns up to K zero.
 * The matrix is made exactly symmetric first (the mean of its two halves). */
static int eig_into(float *out, size_t K, const float *h, size_t ld, size_t n, size_t k,
                    svd_mem *m)
{
    double *a = m->r;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++)
            a[i * n + j] = 0.5 * ((double)h[i * ld + j] + (double)h[j * ld + i]);
    if (sym_eig(a, n, m->d, m->e, m->zt, m->r + n * n))
        return -1;
    for (size_t t = 0; t < n; t++)
        m->ord[t] = t;
    for (size_t x = 1; x < n; x++)   /* by eigenvalue, descending; stable */
        for (size_t y = x; y > 0 && m->d[m->ord[y]] > m->d[m->ord[y - 1]]; y--) {
            size_t tmp = m->ord[y];
            m->ord[y] = m->ord[y - 1];
            m->ord[y - 1] = tmp;
        }
    for (size_t q = 0; q < n; q++)
        for (size_t t = 0; t < K; t++)
            out[q * K + t] = t < k ? (float)m->zt[m->ord[t] * n + q] : 0.0f;
    return 0;
}

/*
 * The big side from the small side's k vectors in m->S (sm x K): W = P S,
 * with P's element (j, i) at p[j * prs + i * pks] (the same products,
 * wherever P is read from), whose column t is s_t times its singular
 * vector (s_t = |W e_t|, more exact than the eigenvalue), summed over rows
 * in order for every t at once; then the vectors, transposed, into out.
 */
static void finish(tvs_lossy_svd_t *out, svd_mem *m, const float *p, size_t prs, size_t pks,
                   uint32_t rows, uint32_t cols, uint32_t k)
{
    const size_t K = R8(k), R = TVS_MAX(rows, cols), sm = TVS_MIN(rows, cols);
    const int wide = rows < cols;
    sgemm(m->W, K, p, prs, pks, m->S, K, R, K, sm);
    double *nn = m->d, *inv = m->e;
    for (size_t t = 0; t < k; t++)
        nn[t] = 0;
    for (size_t j = 0; j < R; j++) {
        const float *wj = m->W + j * K;
        for (size_t t = 0; t < k; t++)
            nn[t] += (double)wj[t] * wj[t];
    }
    for (size_t t = 0; t < k; t++) {
        double sg = sqrt(nn[t]);
        m->s[t] = (float)sg;
        inv[t] = sg > 0 ? 1.0 / sg : 0;
    }
    float *big = wide ? m->v : m->u, *small = wide ? m->u : m->v;
    for (size_t j0 = 0; j0 < R; j0 += 16)   /* in blocks of 16 rows, kept in cache */
        for (size_t t = 0; t < k; t++)
            for (size_t j = j0; j < TVS_MIN(j0 + 16, R); j++)
                big[t * R + j] = (float)(m->W[j * K + t] * inv[t]);
    for (size_t i0 = 0; i0 < sm; i0 += 16)
        for (size_t t = 0; t < k; t++)
            for (size_t i = i0; i < TVS_MIN(i0 + 16, sm); i++)
                small[t * sm + i] = m->S[i * K + t];
    *out = (tvs_lossy_svd_t){ rows, cols, k, m->u, m->s, m->v };
}

int tvs_lossy_eigvals(double *a, size_t n, double *ev)
{
    double zt[64 * 64], e[64], w[64];
    if (n < 1 || n > 64)
        return tvs__fail(TVS_EINVAL, "eigenvalues of a %zux%zu matrix: 1 to 64 rows", n, n);
    if (sym_eig(a, n, ev, e, zt, w))
        return tvs__fail(TVS_EINVAL, "eigenvalues: the values are not finite");
    for (size_t x = 1; x < n; x++)   /* descending */
        for (size_t y = x; y > 0 && ev[y] > ev[y - 1]; y--) {
            double t = ev[y];
            ev[y] = ev[y - 1];
            ev[y - 1] = t;
        }
    return 0;
}

int tvs_lossy_svd(tvs_lossy_svd_t *out, const float *a, uint32_t rows, uint32_t cols,
                  uint32_t k, void *mem)
{
    if (!tvs_lossy_svd_size(rows, cols, k))
        return tvs__fail(TVS_EINVAL, "svd of %ux%u to %u triplets is out of range", rows, cols,
                         k);
    const size_t L = svd_width(k), K = R8(k), R = TVS_MAX(rows, cols),
                 sm = TVS_MIN(rows, cols), mp = R8(sm);
    svd_mem m;
    svd_carve(&m, (uint8_t *)A16((uintptr_t)mem), rows, cols, k);
    tall_view(m.P, a, rows, cols, mp);
    /* G = P^T P: its lower triangle in blocks of 8 rows (and up to the next
     * multiple of 8 columns), then mirrored (fmaf(x, y, c) = fmaf(y, x, c):
     * the mirror computes the same bits) */
    for (size_t i0 = 0; i0 < sm; i0 += 8) {
        const size_t mb = TVS_MIN(8, sm - i0);
        sgemm(m.G + i0 * mp, mp, m.P + i0, 1, mp, m.P, mp, mb, R8(i0 + mb), R);
    }
    for (size_t i = 0; i < sm; i++)
        for (size_t t = i + 1; t < sm; t++)
            m.G[i * mp + t] = m.G[t * mp + i];
    int bad;
    if (sm <= L) {
        bad = eig_into(m.S, K, m.G, mp, sm, k, &m);
    } else {
        uint64_t seed = 0x6c6f737379ull;   /* fixed: the output depends only on the input */
        for (size_t i = 0; i < sm * L; i += 64) {   /* 64 signs per draw */
            uint64_t z = (seed += 0x9e3779b97f4a7c15ull);   /* splitmix64 */
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
            z ^= z >> 31;
            const size_t len = TVS_MIN(64, sm * L - i);
            for (size_t b = 0; b < len; b++)   /* bit b: +1, else -1 (branch-free) */
                m.Q[i + b] = (float)((int)((z >> b) & 1) * 2 - 1);
        }
        for (int it = 0; it < SVD_POWER; it++) {
            sgemm(m.Y, L, m.G, mp, 1, m.Q, L, sm, L, sm);
            chol_qr(m.Y, m.T, sm, L, m.g, m.r);
            float *t = m.Q;
            m.Q = m.Y;
            m.Y = t;
        }
        /* Rayleigh-Ritz: the eigenvectors E of Q^T G Q rotate the basis */
        sgemm(m.Y, L, m.G, mp, 1, m.Q, L, sm, L, sm);
        sgemm(m.g, L, m.Q, 1, L, m.Y, L, L, L, sm);
        bad = eig_into(m.E, K, m.g, L, L, k, &m);
        if (!bad)
            sgemm(m.S, K, m.Q, L, 1, m.E, K, sm, K, L);
    }
    if (bad)
        return tvs__fail(TVS_EINVAL, "svd of %ux%u: the values are not finite", rows, cols);
    finish(out, &m, m.P, mp, 1, rows, cols, k);
    return 0;
}

int tvs_lossy_svd_resume(tvs_lossy_svd_t *out, const float *a, uint32_t rows, uint32_t cols,
                         uint32_t k, const float *small, void *mem)
{
    if (!tvs_lossy_svd_size(rows, cols, k))
        return tvs__fail(TVS_EINVAL, "svd of %ux%u to %u triplets is out of range", rows, cols,
                         k);
    const size_t K = R8(k), sm = TVS_MIN(rows, cols);
    svd_mem m;
    svd_carve(&m, (uint8_t *)A16((uintptr_t)mem), rows, cols, k);
    for (size_t i = 0; i < sm; i++)
        for (size_t t = 0; t < K; t++)
            m.S[i * K + t] = t < k ? small[t * sm + i] : 0.0f;
    /* P's rows are the matrix's rows, or its columns: read in place */
    if (rows < cols)
        finish(out, &m, a, 1, cols, rows, cols, k);
    else
        finish(out, &m, a, cols, 1, rows, cols, k);
    return 0;
}
