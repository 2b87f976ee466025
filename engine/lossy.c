/* The lossy encoder: candidates, measurement, choice (engine/lossy_int.h). */
#include "engine/lossy_int.h"

#include <math.h>
#ifndef M_LN2
#define M_LN2 0.69314718055994530942
#endif
#include <stdlib.h>

struct tvs__lworker {
    float *base, *d, *dhat, *sample;         /* unit-sized f32 buffers */
    size_t cap;                              /* elements each holds */
    uint8_t *enc, *scratch;
    size_t enc_cap, scratch_cap;
    uint8_t *elems;                          /* decoded elements of one unit */
    size_t elems_cap;
    uint8_t *svd_mem;                        /* LOWRANKQ: the unit's triplets */
    size_t svd_cap;
    tvs_lossy_svd_t svd;
    int lrq;                                 /* try LOWRANKQ candidates */
    size_t keep;                             /* bytes of triplets it may keep, each kind */
    size_t kept, kept_small;                 /* ... kept with units: whole, smaller side */
};

/*
 * Triplets a worker keeps from analysis for encoding: whole, up to
 * LRQ_KEEP bytes ($TVS_LRQ_KEEP overrides it), then only their smaller
 * side's vectors (about a ninth of them, for a wide chunk), up to as many
 * bytes again (encoding then takes the other side from the delta in one
 * product), then none (encoding computes them again): the same bits
 * each way, only slower.
 */
#define LRQ_KEEP ((size_t)1 << 30)

int tvs__lworker_new(tvs__lworker **out)
{
    *out = tvs_calloc(1, sizeof **out);
    if (!*out)
        return tvs__fail(TVS_ENOMEM, "out of memory for the lossy encoder");
    const char *e = getenv("TVS_LRQ_KEEP");
    (*out)->keep = e && *e ? (size_t)strtoull(e, NULL, 0) : LRQ_KEEP;
    return 0;
}

void tvs__lworker_set_lowrankq(tvs__lworker *w, int on) { w->lrq = on; }

void tvs__lworker_free(tvs__lworker *w)
{
    if (!w)
        return;
    tvs_free(w->base);
    tvs_free(w->d);
    tvs_free(w->dhat);
    tvs_free(w->sample);
    tvs_free(w->enc);
    tvs_free(w->scratch);
    tvs_free(w->elems);
    tvs_free(w->svd_mem);
    tvs_free(w);
}

static int grow(void **p, size_t *cap, size_t n)
{
    if (*cap >= n)
        return 0;
    void *q = tvs_realloc(*p, n);
    if (!q)
        return tvs__fail(TVS_ENOMEM, "out of memory for the lossy encoder (%zu bytes)", n);
    *p = q;
    *cap = n;
    return 0;
}

static int ensure_floats(tvs__lworker *w, size_t n)
{
    if (w->cap >= n)
        return 0;
    float **bufs[] = { &w->base, &w->d, &w->dhat, &w->sample };
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) {
        float *q = tvs_realloc(*bufs[i], n * sizeof(float));
        if (!q)
            return tvs__fail(TVS_ENOMEM, "out of memory for the lossy encoder");
        *bufs[i] = q;
    }
    w->cap = n;
    return 0;
}

/*
 * The loops over a unit's elements below are built for AVX-512, AVX2 and
 * the baseline (chosen at load time): their lanes are written out, so every
 * build sums in the same order and gives the same bits.
 */
#define TVS_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))

/* One block of sq_dist: at most 256 values x - y (y NULL: x), in eight f32 lanes. */
static inline __attribute__((always_inline)) double sq_block(const float *x, const float *y,
                                                             size_t len)
{
    float acc[8] = { 0 };
    size_t j = 0;
    if (y)   /* two loops, so that each vectorizes */
        for (; j + 8 <= len; j += 8)
            for (int l = 0; l < 8; l++) {
                float t = x[j + l] - y[j + l];
                acc[l] += t * t;
            }
    else   /* x - 0 is x */
        for (; j + 8 <= len; j += 8)
            for (int l = 0; l < 8; l++)
                acc[l] += x[j + l] * x[j + l];
    for (; j < len; j++) {
        float t = x[j] - (y ? y[j] : 0.0f);
        acc[0] += t * t;
    }
    return (double)(((acc[0] + acc[1]) + (acc[2] + acc[3])) +
                    ((acc[4] + acc[5]) + (acc[6] + acc[7])));
}

/*
 * Sum of (a[i] - b[i])^2 (b NULL: of a[i]^2): eight float lanes over blocks
 * of 256 values, blocks summed in double -- vectorizable, and within 1e-6.
 */
TVS_CLONES static double sq_dist(const float *a, const float *b, size_t n)
{
    double total = 0;
    for (size_t at = 0; at < n; at += 256)
        total += sq_block(a + at, b ? b + at : NULL, TVS_MIN(n - at, 256));
    return total;
}

static inline float u2f(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* Entries that are not +-0 (compared as bits: vectorizable, 32-bit counts). */
static inline __attribute__((always_inline)) size_t count_nonzero(const float *x, size_t n)
{
    size_t z = 0;
    for (size_t at = 0; at < n; at += 1u << 20) {
        size_t len = TVS_MIN(n - at, 1u << 20);
        uint32_t c = 0;
        for (size_t i = 0; i < len; i++) {
            uint32_t u;
            memcpy(&u, &x[at + i], 4);
            c += (u & 0x7fffffffu) != 0;
        }
        z += c;
    }
    return z;
}

/* BF16 element i as f32 bits. */
static inline uint32_t bf16_at(const uint8_t *p, size_t i)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint16_t v;
    memcpy(&v, p + 2 * i, 2);   /* a plain load: the loops below vectorize */
    return (uint32_t)v << 16;
#else
    return (uint32_t)(p[2 * i] | p[2 * i + 1] << 8) << 16;
#endif
}

/*
 * d = ft - base as f32 for @p n elements (BF16, the common dtype, in one
 * pass; @p tmp, n floats, is scratch for the others). Returns the nonzeros
 * of d.
 */
TVS_CLONES static size_t load_delta(float *d, float *tmp, const uint8_t *ft,
                                    const uint8_t *base, tvs_dtype dt, size_t n)
{
    if (dt == TVS_DTYPE_BF16) {
        float *restrict dd = d;
        for (size_t i = 0; i < n; i++)
            dd[i] = u2f(bf16_at(ft, i)) - u2f(bf16_at(base, i));
    } else {
        const float *restrict b = tmp;
        tvs_dtype_to_f32(d, ft, n, dt);
        tvs_dtype_to_f32(tmp, base, n, dt);
        for (size_t i = 0; i < n; i++)
            d[i] = d[i] - b[i];
    }
    return count_nonzero(d, n);
}

/* ---- units */

uint32_t tvs__lossy_units(tvs__lunit *u, uint64_t first, size_t n, uint64_t cols)
{
    uint64_t per = cols >= TVS__LUNIT ? cols : (TVS__LUNIT / cols) * cols;
    uint32_t k = 0;
    for (uint64_t at = first, end = first + n; at < end; k++) {
        uint64_t stop = TVS_MIN(end, (at / per + 1) * per);
        if (u) {
            memset(&u[k], 0, sizeof u[k]);
            u[k].first = at;
            u[k].n = (uint32_t)(stop - at);
            if (at % cols == 0 && (stop - at) % cols == 0 && cols <= UINT32_MAX)
                u[k].cols = (uint32_t)cols;
        }
        at = stop;
    }
    return k;
}

/* ---- candidates */

static const float densities[] = { 1.0f, 0.5f, 0.25f, 0.1f, 0.03f, 0.01f };
static const float sparse_densities[] = { 0.3f, 0.1f };
static const uint8_t sparse_bits[] = { 2, 4, 8 };
/*
 * Top-k masks that drop nonzero entries are tried only on units that are
 * mostly zeros already. On a dense delta, dropping its small entries costs
 * a model far more than their share of the squared error says (measured on
 * the fine-tunes of ../shared/models), while keeping every entry at a
 * coarse level costs it little.
 */
#define TOPK_MAX_NZ 0.5
/*
 * Every other candidate keeps the delta's full length (params.unbiased),
 * so its error is noise; leaving a changed unit out (ZERO) undoes its part
 * of the fine-tune, which costs a model several times more per unit of
 * squared error. The allocation counts it so.
 */
#define ZERO_COST 4.0

static void add_nz(tvs__lunit *u, tvs_lossy_params p, int all_nz)
{
    /* every lossy codec keeps the delta's full length (see params.unbiased) */
    p.unbiased = p.codec != TVS_LC_ZERO && p.codec != TVS_LC_VERBATIM;
    if (u->n_cand < TVS__LCAND_MAX) {
        u->cand[u->n_cand].all_nz = (uint8_t)all_nz;
        u->cand[u->n_cand++].p = p;
    }
}

static void add(tvs__lunit *u, tvs_lossy_params p) { add_nz(u, p, 0); }

/* The candidate list of a unit whose delta has a fraction @p nz of nonzeros. */
static void candidates(tvs__lunit *u, double nz)
{
    tvs_lossy_params p;
    u->n_cand = 0;

    memset(&p, 0, sizeof p);
    p.codec = TVS_LC_ZERO;
    add(u, p);
    if (nz == 0)
        return;
    p.codec = TVS_LC_VERBATIM;
    add(u, p);
    for (unsigned bits = 1; bits <= 8; bits++) {
        memset(&p, 0, sizeof p);
        p.codec = TVS_LC_BLOCKQ;
        p.bits = (uint8_t)bits;
        p.block = 64;
        p.wide = bits >= 2;
        add(u, p);
        if (bits <= 3) {
            p.block = 256;
            add(u, p);
        }
    }
    memset(&p, 0, sizeof p);
    p.codec = TVS_LC_SIGN;
    /* density 1 even with zeros in the delta (they get ±scale): no mask at all */
    for (size_t i = 0; i < sizeof densities / sizeof *densities; i++)
        if (densities[i] == 1.0f || (nz < TOPK_MAX_NZ && densities[i] <= nz + 1e-9)) {
            p.density = densities[i];
            add(u, p);
        }
    if (nz < 1) {
        p.density = (float)nz;
        add_nz(u, p, 1);
    }
    p.codec = TVS_LC_SPARSEQ;
    p.block = 64;
    p.wide = 1;
    for (size_t b = 0; b < sizeof sparse_bits; b++) {
        p.bits = sparse_bits[b];
        if (nz < 1) {
            p.density = (float)nz;
            add_nz(u, p, 1);
        }
        for (size_t i = 0; p.bits < 8 && i < sizeof sparse_densities / sizeof *sparse_densities;
             i++)
            if (nz < TOPK_MAX_NZ && sparse_densities[i] < nz) {
                p.density = sparse_densities[i];
                add(u, p);
            }
    }
}

/*
 * Low rank: a cheap probe, the spectrum of up to LR_ROWS of the chunk's
 * changed rows (their Gram matrix's eigenvalues). A delta of rank r has
 * rank <= r on any rows, so when a few components hold nearly all the
 * sampled energy, LOWRANK candidates join at those ranks -- fitted on the
 * whole unit and measured, since a long spectral tail can hide from a few
 * rows.
 */
#define LR_ROWS 32
#define LR_COLS 512   /* columns sampled: runs of 64 spread over the row */

/*
 * The spectrum of up to LR_ROWS of the changed rows [0, rows) of @p d (cols
 * elements each): their Gram matrix's eigenvalues, descending, into @p ev;
 * returns how many (0 when too few rows changed), with their sum in @p total.
 */
static unsigned probe_spectrum(const float *d, uint32_t rows, uint32_t cols, double *ev,
                               double *total)
{
    *total = 0;
    if (rows < 8 || cols < 8)
        return 0;
    /* rows that changed at all (a matrix with few changed rows has few
     * components, but evenly spaced rows would mostly be unchanged ones) */
    static _Thread_local uint32_t live[1u << 16];
    uint32_t n_live = 0;
    for (uint32_t i = 0; i < rows && n_live < (1u << 16); i++) {
        const float *row = d + (size_t)i * cols;
        uint32_t k = 0;
        while (k < cols && row[k] == 0)
            k++;
        if (k < cols)
            live[n_live++] = i;
    }
    if (n_live < 8)
        return 0;
    unsigned m = n_live < LR_ROWS ? n_live : LR_ROWS;
    double g[LR_ROWS * LR_ROWS];
    static _Thread_local float r[LR_ROWS][LR_COLS];
    uint32_t nc = cols < LR_COLS ? cols : LR_COLS, runs = nc / 64;
    for (unsigned i = 0; i < m; i++) {
        uint32_t pick = live[(size_t)i * (n_live - 1) / (m > 1 ? m - 1 : 1)];
        const float *row = d + (size_t)pick * cols;
        if (nc == cols)
            memcpy(r[i], row, nc * sizeof(float));
        else
            for (uint32_t k = 0; k < runs; k++)
                memcpy(r[i] + k * 64, row + (size_t)k * ((cols - 64) / (runs - 1)),
                       64 * sizeof(float));
    }
    for (unsigned i = 0; i < m; i++)
        for (unsigned j = 0; j <= i; j += 2) {
            /* rows j and j + 1 side by side (independent sums, each in its order) */
            unsigned j2 = j + 1 <= i ? j + 1 : j;
            double acc[4] = { 0, 0, 0, 0 }, acc2[4] = { 0, 0, 0, 0 };
            uint32_t k = 0;
            for (; k + 4 <= nc; k += 4)
                for (int l = 0; l < 4; l++) {
                    acc[l] += (double)r[i][k + l] * r[j][k + l];
                    acc2[l] += (double)r[i][k + l] * r[j2][k + l];
                }
            for (; k < nc; k++) {
                acc[0] += (double)r[i][k] * r[j][k];
                acc2[0] += (double)r[i][k] * r[j2][k];
            }
            g[i * m + j] = g[j * m + i] = acc[0] + acc[1] + acc[2] + acc[3];
            g[i * m + j2] = g[j2 * m + i] = acc2[0] + acc2[1] + acc2[2] + acc2[3];
        }
    *total = 0;
    for (unsigned i = 0; i < m; i++)
        *total += g[i * m + i];
    if (*total <= 0)
        return 0;
    if (tvs_lossy_eigvals(g, m, ev))
        return 0;   /* not finite: no spectrum */
    for (unsigned i = 0; i < m; i++)
        ev[i] = ev[i] > 0 ? ev[i] : 0;
    return m;
}

/* The rank r (<= m/2) whose sampled rows leave at most a share @p left of
 * their energy; 0 if none. */
static unsigned lowrank_rank(const double *ev, unsigned m, double total, double left)
{
    double left_e = total;
    for (unsigned k = 0; k < m / 2; k++) {
        left_e -= ev[k];
        if (left_e <= left * total)
            return k + 1;
    }
    return 0;
}

/*
 * LOWRANKQ (mixed-precision low rank, the way Delta-CoMe stores deltas):
 * tried on a chunk of whole rows when the probe's top quarter of
 * components holds at least LRQ_MIN_SHARE of the sampled energy (a flat,
 * noise-like spectrum gives about 0.4 on 32 rows), at these rates (bits
 * per element), with at most LRQ_K triplets.
 */
#define LRQ_MIN_SHARE 0.55
#define LRQ_K 96u
static const float lrq_rates[] = { 0.125f, 0.25f, 0.5f, 0.75f, 1.0f, 1.5f, 2.0f };
#define LRQ_MEASURED 4   /* 1 bit per element */

/* The triplets of @p d (rows x cols) into w->svd. */
static int unit_svd(tvs__lworker *w, const float *d, uint32_t rows, uint32_t cols)
{
    uint32_t k = TVS_MIN(TVS_MIN(rows, cols), LRQ_K);
    size_t fit = (size_t)rows * cols / ((size_t)rows + cols);
    k = (uint32_t)TVS_MAX(1, TVS_MIN(k, fit));
    size_t need = tvs_lossy_svd_size(rows, cols, k);
    int rc = grow((void **)&w->svd_mem, &w->svd_cap, need);
    return rc ? rc : tvs_lossy_svd(&w->svd, d, rows, cols, k, w->svd_mem);
}

/*
 * The squared error of a LOWRANKQ encoding of a unit of energy @p d2 that
 * keeps terms of energy d2 - @p tail with quantization noise @p noise. An
 * unbiased unit is scaled by alpha = d2 / <r, d> at the end, and <r, d> is
 * about the kept energy K (each factor is unbiased too), |r|^2 about K +
 * noise: the error |d - alpha r|^2 is then d2 (d2 (K + noise) / K^2 - 1),
 * which for a small tail and noise is tail + noise, but grows past d2 when
 * few terms are kept (alpha inflates the noise with them).
 */
static double lrq_err(double d2, double tail, double noise, int unbiased)
{
    double k = d2 - tail;
    if (!unbiased)
        return tail + noise;
    if (!(k > 0))
        return d2 * ZERO_COST;
    return TVS_MAX(0.0, d2 * (d2 * (k + noise) / (k * k) - 1));
}

/* Keep w->svd with unit @p u for encoding, within the worker's allowance. */
static void keep_svd(tvs__lworker *w, tvs__lunit *u)
{
    const tvs_lossy_svd_t *sv = &w->svd;
    const size_t sm = TVS_MIN(sv->rows, sv->cols);
    size_t floats = (size_t)sv->k * ((size_t)sv->rows + sv->cols + 1);
    int whole = w->kept + floats * 4 <= w->keep;
    if (!whole)
        floats = (size_t)sv->k * sm;
    if (u->svd || (!whole && w->kept_small + floats * 4 > w->keep))
        return;
    float *f = tvs_malloc(floats * sizeof *f);
    if (!f)
        return;   /* encoding computes them again */
    if (whole) {
        memcpy(f, sv->u, (size_t)sv->k * sv->rows * 4);
        memcpy(f + (size_t)sv->k * sv->rows, sv->s, (size_t)sv->k * 4);
        memcpy(f + (size_t)sv->k * (sv->rows + 1), sv->v, (size_t)sv->k * sv->cols * 4);
        w->kept += floats * 4;
    } else {
        memcpy(f, sv->rows < sv->cols ? sv->u : sv->v, floats * 4);
        w->kept_small += floats * 4;
    }
    u->svd = f;
    u->svd_k = sv->k;
    u->svd_small = (uint8_t)!whole;
}

/*
 * The triplets kept with @p u (rows x cols) into w->svd: 1 if whole, 2 if
 * only their smaller side was kept (then tvs_lossy_svd_resume rebuilds them
 * from the delta), 0 if none.
 */
static int kept_svd(const tvs__lunit *u, uint32_t rows, uint32_t cols, tvs_lossy_svd_t *sv)
{
    if (!u->svd)
        return 0;
    if (u->svd_small)
        return 2;
    const size_t k = u->svd_k;
    *sv = (tvs_lossy_svd_t){ rows, cols, u->svd_k, u->svd, u->svd + k * rows,
                             u->svd + k * (rows + 1) };
    return 1;
}

void tvs__lossy_units_release(tvs__lunit *u, size_t n)
{
    for (size_t k = 0; u && k < n; k++) {
        tvs_free(u[k].svd);
        u[k].svd = NULL;
    }
}

static int cand_cmp(const void *a, const void *b)
{
    const tvs__lcand *x = a, *y = b;
    if (x->rate != y->rate)
        return x->rate < y->rate ? -1 : 1;
    if (x->dist != y->dist)
        return x->dist < y->dist ? -1 : 1;
    return 0;
}

/*
 * Bytes @p b is expected to take inside a zstd-compressed lossy chunk: its
 * order-0 entropy (Miller-Madow corrected for the sample's size), since
 * zstd's Huffman stage is what compresses index and mask bytes.
 */
static double entropy_bytes(const uint8_t *b, size_t n)
{
    uint32_t h[256] = { 0 };
    for (size_t i = 0; i < n; i++)
        h[b[i]]++;
    double e = 0;
    unsigned used = 0;
    for (unsigned k = 0; k < 256; k++)
        if (h[k]) {
            double p = (double)h[k] / (double)n;
            e -= p * log2(p);
            used++;
        }
    if (n)
        e += (used - 1) / (2.0 * (double)n * M_LN2);
    return (double)n * TVS_MIN(8.0, e + 0.05) / 8;
}

/* Room in w->enc and w->scratch to encode n values with @p p. */
static int enc_room(tvs__lworker *w, const tvs_lossy_params *p, size_t n)
{
    size_t bound = tvs_lossy_unit_bound(p, n, TVS_DTYPE_F32);
    size_t ss = tvs_lossy_scratch_size(p, n);
    int rc = grow((void **)&w->enc, &w->enc_cap, bound + 64);
    return rc ? rc : grow((void **)&w->scratch, &w->scratch_cap, ss + 64);
}

/* Encode @p d (n values) with @p p into w->enc, and into @p dhat what it decodes to. */
static int roundtrip(tvs__lworker *w, size_t *bytes, const tvs_lossy_params *p,
                     const float *d, float *dhat, size_t n)
{
    int rc = enc_room(w, p, n);
    return rc ? rc
              : tvs_lossy_unit_encode_r(w->enc, w->enc_cap, bytes, dhat, p, d, NULL,
                                        TVS_DTYPE_F32, n, w->scratch);
}

/* A LOWRANKQ encoding of @p d (n values) into w->enc, its squared error estimated. */
static int lrq_estimate(tvs__lworker *w, size_t *bytes, double *err, const tvs_lossy_params *p,
                        const float *d, size_t n)
{
    int rc = enc_room(w, p, n);
    return rc ? rc
              : tvs_lossy_lowrankq_estimate(w->enc, w->enc_cap, bytes, err, p, d, n,
                                            w->scratch);
}

/*
 * Measure every candidate of @p proto on up to @p cap values of @p d (n
 * values, nnz of them nonzero; evenly spaced runs of TVS__LRUN):
 * rel = squared error / energy, bpe = expected stored bytes per value.
 */
static int measure(tvs__lworker *w, const tvs__lunit *proto, const float *d, size_t n,
                   size_t nnz, size_t cap, double *rel, double *bpe)
{
    const float *s = d;
    size_t m = n;
    int rc;
    if (n > cap) {
        size_t runs = cap / TVS__LRUN;
        for (size_t r = 0; r < runs; r++)
            memcpy(w->sample + r * TVS__LRUN, d + r * ((n - TVS__LRUN) / (runs - 1)),
                   TVS__LRUN * sizeof(float));
        s = w->sample;
        m = runs * TVS__LRUN;
    }
    double s_norm2 = sq_dist(s, NULL, m);
    size_t s_nnz = count_nonzero(s, m);
    for (uint8_t c = 0; c < proto->n_cand; c++) {
        const tvs__lcand *cd = &proto->cand[c];
        rel[c] = bpe[c] = 0;
        if (cd->p.codec == TVS_LC_ZERO || cd->p.codec == TVS_LC_VERBATIM)
            continue;
        tvs_lossy_params sp = cd->p;
        if (cd->all_nz || sp.density > 0) {
            double dens = cd->all_nz ? (double)s_nnz / (double)m : sp.density;
            if (!s_nnz) {   /* none sampled: exact, at about 3 bytes a nonzero */
                bpe[c] = 3.0 * (double)nnz / (double)n;
                continue;
            }
            sp.density = (float)TVS_MAX(dens, 1.0 / (double)m);
        }
        size_t bytes;
        if ((rc = roundtrip(w, &bytes, &sp, s, w->dhat, m)))
            return rc;
        double e = sq_dist(s, w->dhat, m);
        rel[c] = s_norm2 > 0 ? e / s_norm2 : (e > 0 ? 1 : 0);
        bpe[c] = entropy_bytes(w->enc, bytes) / (double)m;
    }
    return 0;
}

/*
 * One chunk at a time: every candidate is measured once, on a sample of the
 * chunk's delta (evenly spaced runs of TVS__LRUN values), as a rate per
 * value and an error relative to the sample's energy; each unit then gets
 * those candidates scaled to its own size and energy (units of a chunk are
 * rows of one tensor, alike in distribution), with its own exact ZERO and
 * VERBATIM points and its own count of nonzero entries. A chunk whose rows
 * are (nearly) of low rank becomes a single unit with LOWRANK candidates.
 */
int tvs__lossy_analyze(tvs__lworker *w, tvs__lunit *units, uint32_t n_units, const uint8_t *ft,
                       const uint8_t *base, tvs_dtype dt)
{
    unsigned width = tvs_dtype_bits(dt) / 8;
    size_t n = 0;
    int rc;
    for (uint32_t k = 0; k < n_units; k++)
        n += units[k].n;
    if ((rc = ensure_floats(w, n)))
        return rc;
    /* per unit, while it is in cache: the delta, its energy and nonzeros */
    size_t unnz[4096], nnz = 0;
    if (n_units > 4096)
        return tvs__fail(TVS_EINVAL, "lossy: %u units in one chunk", n_units);
    uint8_t odd[4096];   /* non-finite values: stored exactly */
    int any_odd = 0;
    for (uint32_t k = 0, at = 0; k < n_units; at += units[k++].n) {
        size_t z = load_delta(w->d + at, w->base + at, ft + (size_t)at * width,
                              base + (size_t)at * width, dt, units[k].n);
        double e = sq_dist(w->d + at, NULL, units[k].n);
        nnz += z;
        odd[k] = !isfinite(e);
        any_odd |= odd[k];
        units[k].norm2 = odd[k] ? 0 : e;
        unnz[k] = z;
    }
    if (any_odd)   /* the sample must be finite: zero the odd units' deltas */
        for (uint32_t k = 0, at = 0; k < n_units; at += units[k++].n)
            if (odd[k])
                memset(w->d + at, 0, units[k].n * sizeof(float));
    /* a chunk of whole rows that is (nearly) low rank: one unit */
    uint32_t cols = units[0].cols;
    int rows_ok = cols != 0;
    for (uint32_t k = 0; k < n_units; k++)
        rows_ok &= units[k].cols == cols;
    unsigned lr_rank[2] = { 0, 0 };
    int lrq = 0;
    if (rows_ok && nnz) {
        static const double left[2] = { 0.0025, 0.001 };
        double ev[LR_ROWS], total = 0, top = 0;
        unsigned m = probe_spectrum(w->d, (uint32_t)(n / cols), cols, ev, &total);
        for (int i = 0; m && i < 2; i++)
            lr_rank[i] = lowrank_rank(ev, m, total, left[i]);
        for (unsigned i = 0; i < m / 4; i++)
            top += ev[i];
        lrq = w->lrq && m >= 16 && n / cols >= 16 && cols >= 16 && !any_odd &&
              top >= LRQ_MIN_SHARE * total;
    }
    if ((lr_rank[0] || lrq) && n_units > 1 && !any_odd) {
        units[0].n = (uint32_t)n;   /* keeps its own energy, and adds the others' */
        unnz[0] = nnz;
        for (uint32_t k = 1; k < n_units; k++) {
            units[0].norm2 += units[k].norm2;
            units[k].n = 0;   /* merged into unit 0 */
            units[k].n_cand = 0;
        }
        n_units = 1;
    }
    /* the chunk's candidates, measured on a sample of the whole chunk */
    tvs__lunit proto;
    memset(&proto, 0, sizeof proto);
    candidates(&proto, (double)nnz / (double)n);
    double rel[TVS__LCAND_MAX], bpe[TVS__LCAND_MAX];
    double urel[TVS__LCAND_MAX], ubpe[TVS__LCAND_MAX];
    size_t nnz_finite = 0;   /* the odd units' deltas are zero now */
    for (uint32_t k = 0; k < n_units; k++)
        nnz_finite += odd[k] ? 0 : unnz[k];
    if ((rc = measure(w, &proto, w->d, n, nnz_finite, TVS__LSAMPLE, rel, bpe)))
        return rc;
    double mean2 = 0;
    for (uint32_t k = 0; k < n_units; k++)
        mean2 += units[k].norm2;
    mean2 /= (double)n;
    for (uint32_t k = 0, at = 0; k < n_units; at += units[k++].n) {
        tvs__lunit *u = &units[k];
        /* a unit unlike its chunk (rows left unchanged, much larger or smaller
         * changes) is measured on its own */
        const double *r = rel, *b = bpe;
        double un2 = u->n ? u->norm2 / u->n : 0;
        if (n_units > 1 && u->n && !odd[k] &&
            (fabs((double)unnz[k] / u->n - (double)nnz / n) > 0.1 || un2 > 4 * mean2 ||
             un2 < mean2 / 4)) {
            if ((rc = measure(w, &proto, w->d + at, u->n, unnz[k], TVS__LSAMPLE / 4, urel,
                              ubpe)))
                return rc;
            r = urel, b = ubpe;
        }
        u->n_cand = 0;
        u->pick = 0;
        if (odd[k]) {
            tvs__lcand *x = &u->cand[u->n_cand++];
            memset(x, 0, sizeof *x);
            x->p.codec = TVS_LC_VERBATIM;
            x->rate = TVS__LUNIT_HDR + (double)u->n * width;
            continue;
        }
        if (u->norm2 == 0 && unnz[k] == 0) {
            u->cand[u->n_cand++] = proto.cand[0];   /* ZERO, exact */
            u->cand[0].rate = TVS__LUNIT_HDR;
            u->cand[0].dist = 0;
            continue;
        }
        for (uint8_t c = 0; c < proto.n_cand; c++) {
            tvs__lcand x = proto.cand[c];
            x.rate = TVS__LUNIT_HDR;
            if (x.p.codec == TVS_LC_ZERO) {
                x.dist = ZERO_COST * u->norm2;
            } else if (x.p.codec == TVS_LC_VERBATIM) {
                x.rate += (double)u->n * width;
                x.dist = 0;
            } else {
                x.rate += b[c] * u->n;
                x.dist = r[c] * u->norm2;
            }
            u->cand[u->n_cand++] = x;
        }
        for (int i = 0; i < 2 && u->n == n && lr_rank[i]; i++) {
            uint32_t rows = (uint32_t)(n / cols);
            double bytes = 21.0 + (double)(rows + cols) * lr_rank[i] * 2;
            if (bytes >= (double)n * width / 2 || u->n_cand >= TVS__LCAND_MAX ||
                (i == 1 && lr_rank[1] == lr_rank[0]))
                continue;
            tvs__lcand *x = &u->cand[u->n_cand++];
            memset(x, 0, sizeof *x);
            x->p.codec = TVS_LC_LOWRANK;
            x->p.rows = rows;
            x->p.cols = cols;
            x->p.rank = lr_rank[i];
            x->p.factor_dtype = TVS_DTYPE_BF16;
            x->p.unbiased = 1;
            /* the probe sees a few rows only: fit the factors on the whole unit and
             * measure (a matrix with a long spectral tail hides it from 32 rows) */
            size_t got;
            if ((rc = roundtrip(w, &got, &x->p, w->d, w->dhat, n)))
                return rc;
            x->rate = TVS__LUNIT_HDR + (double)got;
            x->dist = sq_dist(w->d, w->dhat, n);
        }
        if (lrq && u->n == n) {
            if ((rc = unit_svd(w, w->d, (uint32_t)(n / cols), cols)))
                return rc;
            keep_svd(w, u);
        }
        /*
         * Each rate's size and error from the triplets, by the model its bit
         * widths are chosen with; one rate (LRQ_MEASURED) is encoded, its
         * error measured from its factors' real quantization errors
         * (tvs_lossy_lowrankq_estimate: no product decoded), and it
         * calibrates the others: what zstd takes off the bodies, and how far
         * the model's noise is from the real one (factors of a delta with
         * many unchanged rows, an embedding's, are far from Gaussian).
         */
        double squeeze = 1, calib = 1, exact = -1, exact_rate = 0;
        if (lrq && u->n == n) {
            tvs_lossy_params pp;
            memset(&pp, 0, sizeof pp);
            pp.codec = TVS_LC_LOWRANKQ;
            pp.rows = (uint32_t)(n / cols);
            pp.cols = cols;
            pp.rank = w->svd.k;
            pp.rate = lrq_rates[LRQ_MEASURED];
            pp.unbiased = 1;
            pp.svd = &w->svd;
            pp.norm2 = u->norm2;
            size_t got;
            double pb, tail, noise;
            if ((rc = lrq_estimate(w, &got, &exact, &pp, w->d, n)) ||
                (rc = tvs_lossy_lowrankq_plan(&pp, n, u->norm2, &pb, &tail, &noise)))
                return rc;
            exact_rate = TVS__LUNIT_HDR + entropy_bytes(w->enc, got);
            squeeze = got ? (exact_rate - TVS__LUNIT_HDR) / (double)got : 1;
            /* the noise that makes lrq_err exact at this rate */
            double d2 = u->norm2, kept = d2 - tail;
            if (noise > 0 && kept > 0 && d2 > 0)
                calib = TVS_MIN(
                    TVS_MAX(((exact / d2 + 1) * kept * kept / d2 - kept) / noise, 0.5), 8.0);
        }
        for (size_t i = 0; lrq && u->n == n && i < sizeof lrq_rates / sizeof *lrq_rates; i++) {
            if (u->n_cand >= TVS__LCAND_MAX)
                break;
            tvs__lcand *x = &u->cand[u->n_cand++];
            memset(x, 0, sizeof *x);
            x->p.codec = TVS_LC_LOWRANKQ;
            x->p.rows = (uint32_t)(n / cols);
            x->p.cols = cols;
            x->p.rank = w->svd.k;
            x->p.rate = lrq_rates[i];
            x->p.unbiased = 1;
            x->p.svd = &w->svd;
            double bytes, tail, noise;
            if ((rc = tvs_lossy_lowrankq_plan(&x->p, n, u->norm2, &bytes, &tail, &noise)))
                return rc;
            x->p.svd = NULL;   /* kept with the unit, or computed again */
            x->rate = (float)(TVS__LUNIT_HDR + bytes * squeeze);
            x->dist = (float)lrq_err(u->norm2, tail, noise * calib, 1);
            if (i == LRQ_MEASURED)
                x->rate = (float)exact_rate, x->dist = (float)exact;
        }
        qsort(u->cand, u->n_cand, sizeof *u->cand, cand_cmp);
    }
    return 0;
}

/* ---- choice */

void tvs__lossy_pick_error(tvs__lunit *u, size_t n, double e)
{
    for (size_t k = 0; k < n; k++) {
        tvs__lunit *x = &u[k];
        if (!x->n_cand)
            continue;   /* merged into another unit */
        x->pick = x->n_cand - 1;
        for (uint8_t c = 0; c < x->n_cand; c++)
            if (x->norm2 == 0 || x->cand[c].dist <= e * e * x->norm2) {
                x->pick = c;
                break;
            }
    }
}

typedef struct {
    double slope;
    size_t unit;
} step;

/* max-heap by slope, ties to the lower unit index */
static int step_before(const step *a, const step *b)
{
    return a->slope > b->slope || (a->slope == b->slope && a->unit < b->unit);
}

static void heap_push(step *h, size_t *n, step s)
{
    size_t i = (*n)++;
    while (i > 0 && step_before(&s, &h[(i - 1) / 2])) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = s;
}

static step heap_pop(step *h, size_t *n)
{
    step top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && step_before(&h[c + 1], &h[c]))
            c++;
        if (!step_before(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

/*
 * The next point on unit @p u's lower convex hull after its pick: the
 * candidate of larger rate with the steepest drop in distortion per byte.
 */
/* What a candidate's error costs in the total minimized. */
static double cost(const tvs__lunit *u, const tvs__lcand *c)
{
    return u->weight * c->dist;
}

static int next_point(const tvs__lunit *u, uint8_t *out, double *slope)
{
    const tvs__lcand *cur = &u->cand[u->pick];
    double best = 0, cc = cost(u, cur);
    int found = 0;
    for (uint8_t c = u->pick + 1; c < u->n_cand; c++) {
        const tvs__lcand *x = &u->cand[c];
        double cx = cost(u, x);
        if (x->rate <= cur->rate || cx >= cc)
            continue;
        double s = (cc - cx) / (x->rate - cur->rate);
        if (!found || s > best) {
            best = s;
            *out = c;
            found = 1;
        }
    }
    *slope = best;
    return found;
}

int tvs__lossy_allocate(tvs__lunit *const *u, size_t n, double budget)
{
    step *h = tvs_malloc((n ? n : 1) * sizeof *h);
    if (!h)
        return tvs__fail(TVS_ENOMEM, "out of memory allocating bits");
    size_t hn = 0;
    double spent = 0;

    for (size_t k = 0; k < n; k++) {
        u[k]->pick = 0;   /* the cheapest: ZERO */
        if (u[k]->n_cand)
            spent += u[k]->cand[0].rate;
    }
    for (size_t k = 0; k < n; k++) {
        uint8_t c = 0;
        double s;
        if (u[k]->n_cand && next_point(u[k], &c, &s))
            heap_push(h, &hn, (step){ s, k });
    }
    while (hn) {
        step st = heap_pop(h, &hn);
        tvs__lunit *x = u[st.unit];
        uint8_t c = 0;
        double s;
        if (!next_point(x, &c, &s))
            continue;
        double more = x->cand[c].rate - x->cand[x->pick].rate;
        if (spent + more > budget)
            continue;   /* does not fit; neither do this unit's larger points */
        spent += more;
        x->pick = c;
        if (next_point(x, &c, &s))
            heap_push(h, &hn, (step){ s, st.unit });
    }
    tvs_free(h);
    return 0;
}

/* ---- encoding */

/*
 * The decoded elements round(base + dhat) into @p out, exactly what
 * decoding will make, and the real error: the squared distance of their
 * values to the fine-tune's elements @p ft, as sq_dist sums it. Block by
 * block, while each is in cache.
 */
TVS_CLONES static int apply_dist(double *e, uint8_t *out, const uint8_t *base, const float *dhat,
                      const uint8_t *ft, tvs_dtype dt, size_t n)
{
    unsigned width = tvs_dtype_bits(dt) / 8;
    float v[256], f[256];
    double total = 0;
    int rc = 0;
    for (size_t at = 0; !rc && at < n; at += 256) {
        size_t len = TVS_MIN(n - at, 256);
        uint8_t *o = out + at * width;
        memcpy(o, base + at * width, len * width);
        if ((rc = tvs_lossy_add(o, dt, dhat + at, len)))
            break;
        if (dt == TVS_DTYPE_BF16) {   /* sq_block's lanes, converting as it goes */
            const uint8_t *fb = ft + at * width;
            float acc[8] = { 0 };
            size_t j = 0;
            for (; j + 8 <= len; j += 8)
                for (int l = 0; l < 8; l++) {
                    float t = u2f(bf16_at(o, j + l)) - u2f(bf16_at(fb, j + l));
                    acc[l] += t * t;
                }
            for (; j < len; j++) {
                float t = u2f(bf16_at(o, j)) - u2f(bf16_at(fb, j));
                acc[0] += t * t;
            }
            total += (double)(((acc[0] + acc[1]) + (acc[2] + acc[3])) +
                              ((acc[4] + acc[5]) + (acc[6] + acc[7])));
        } else if (!(rc = tvs_dtype_to_f32(v, o, len, dt)) &&
                   !(rc = tvs_dtype_to_f32(f, ft + at * width, len, dt))) {
            total += sq_block(v, f, len);
        }
    }
    *e = total;
    return rc;
}

int tvs__lossy_encode(tvs__lworker *w, tvs_buf *out, tvs__lunit *units, uint32_t n_units,
                      const uint8_t *ft, uint8_t *base_io, tvs_dtype dt, double max_err)
{
    unsigned width = tvs_dtype_bits(dt) / 8;
    size_t off = 0;
    uint32_t live = 0;
    for (uint32_t k = 0; k < n_units; k++)
        live += units[k].n != 0;
    int rc = tvs_lossy_chunk_begin(out, live);
    for (uint32_t k = 0; !rc && k < n_units; k++) {
        tvs__lunit *u = &units[k];
        size_t n = u->n;
        if (!n)
            continue;   /* merged into an earlier unit */
        const uint8_t *uft = ft + off * width;
        uint8_t *ubase = base_io + off * width;
        off += n;
        if ((rc = ensure_floats(w, n)) ||
            (rc = grow((void **)&w->elems, &w->elems_cap, n * width)))
            return rc;
        /* the delta, unless LOWRANKQ from kept triplets is all this unit needs */
        size_t nnz = 0;
        int have_d = 0, have_svd = 0;
        u->from = u->pick;
        for (uint8_t c = u->pick;; c++) {
            tvs_lossy_params pp = u->cand[c].p;
            const tvs_lossy_params *p = &pp;
            if (pp.codec == TVS_LC_LOWRANKQ && !have_svd)
                have_svd = kept_svd(u, pp.rows, pp.cols, &w->svd);
            if (!have_d && !(pp.codec == TVS_LC_LOWRANKQ && have_svd == 1 && u->norm2 > 0)) {
                nnz = load_delta(w->d, w->base, uft, ubase, dt, n);
                have_d = 1;
            }
            if (pp.codec == TVS_LC_LOWRANKQ) {
                if (have_svd == 2) {   /* from the smaller side kept */
                    size_t need = tvs_lossy_svd_size(pp.rows, pp.cols, u->svd_k);
                    if ((rc = grow((void **)&w->svd_mem, &w->svd_cap, need)) ||
                        (rc = tvs_lossy_svd_resume(&w->svd, w->d, pp.rows, pp.cols, u->svd_k,
                                                   u->svd, w->svd_mem)))
                        return rc;
                } else if (!have_svd && (rc = unit_svd(w, w->d, pp.rows, pp.cols))) {
                    return rc;
                }
                have_svd = 1;
                pp.svd = &w->svd;
                pp.norm2 = u->norm2;
            }
            if (u->cand[c].all_nz)
                pp.density = (float)((double)TVS_MAX(nnz, 1u) / (double)n);
            size_t bytes = 0;
            double e = 0;
            if (p->codec == TVS_LC_VERBATIM) {
                if ((rc = grow((void **)&w->enc, &w->enc_cap, n * width)))
                    return rc;
                memcpy(w->enc, uft, n * width);
                bytes = n * width;
                memcpy(w->elems, uft, n * width);
            } else {
                if (p->codec == TVS_LC_ZERO)
                    memset(w->dhat, 0, n * sizeof(float));
                else if ((rc = roundtrip(w, &bytes, p, w->d, w->dhat, n)))
                    return rc;
                if ((rc = apply_dist(&e, w->elems, ubase, w->dhat, uft, dt, n)))
                    return rc;
            }
            double rel = u->norm2 > 0 ? sqrt(e / u->norm2) : (e > 0 ? 1e30 : 0);
            if (!(rel <= 1e30))
                rel = 1e30;   /* stored, so finite */
            if (max_err > 0 && rel > max_err && c + 1 < u->n_cand)
                continue;
            /* an estimate gone badly wrong (data unlike its sample): the next one */
            double est = u->norm2 > 0 ? u->cand[c].dist / u->norm2 : 0;
            if (max_err == 0 && rel * rel > 4 * est + 0.01 && c + 1 < u->n_cand &&
                u->cand[c + 1].dist < u->cand[c].dist)
                continue;
            u->pick = u->written = c;
            u->err = (float)rel;
            u->codec = p->codec;
            u->bytes = (uint32_t)(bytes + TVS__LUNIT_HDR);
            tvs_lossy_unit lu = { (uint32_t)n, u->err, (float)sqrt(u->norm2), p->codec,
                                  { w->enc, bytes } };
            if ((rc = tvs_lossy_chunk_add(out, &lu)))
                return rc;
            memcpy(ubase, w->elems, n * width);
            break;
        }
    }
    return rc;
}
