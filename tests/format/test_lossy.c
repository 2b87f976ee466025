/*
 * format/lossy.c: the unit codecs and lossy chunks (SPEC.md 2.7).
 *
 * Round trips on Gaussian and Laplacian deltas within error bounds per
 * codec and bit width; the exact properties the SPEC promises (1-bit levels
 * are +-mean|x| per block, the SIGN scale is the mean |kept|, top-k with
 * ties by lowest index, the smallest mask layout wins and every layout
 * decodes the same, exact-rank input is recovered by LOWRANK); apply rounds
 * exactly like the scalar conversions of format/dtype.c for BF16, F16 and
 * F32, SSE2 or not; encoders never write past their bound and are
 * deterministic; every corrupt-input rule gives TVS_ECORRUPT naming the
 * rule (with exactly-sized buffers, so ASan sees any overrun); golden ids
 * pin the encoders' bytes.
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "format/lossy.h"
#include "format/lossy_int.h"
#include "tests/support/support.h"

static void fini(void)
{
    tvs__lossy_simd = 1;
    tt_leak_check();
}

TestSuite(lossy, .fini = fini);

/* ---- data */

static double uni(uint64_t *st)
{
    return ((double)tt_lcg(st) + 0.5) / 4294967296.0;
}

static void fill_gauss(float *d, size_t n, double sd, uint64_t seed)
{
    uint64_t st = seed;
    for (size_t i = 0; i < n; i++)
        d[i] = (float)(sd * sqrt(-2 * log(uni(&st))) * cos(6.283185307179586 * uni(&st)));
}

static void fill_laplace(float *d, size_t n, double b, uint64_t seed)
{
    uint64_t st = seed;
    for (size_t i = 0; i < n; i++) {
        double u = uni(&st) - 0.5;
        d[i] = (float)(b * (u < 0 ? 1 : -1) * log(1 - 2 * fabs(u)));
    }
}

static double rel_mse(const float *d, const float *dh, size_t n)
{
    double e = 0, s = 0;
    for (size_t i = 0; i < n; i++) {
        double x = (double)d[i] - dh[i];
        e += x * x;
        s += (double)d[i] * d[i];
    }
    return s > 0 ? e / s : e;
}

/* ---- encode / decode helpers */

/*
 * Encode @p d with @p p into a malloc'd buffer of exactly the bound plus
 * guard bytes, checking that the encoder wrote at most the bound and
 * nothing past it.
 */
static uint8_t *enc(size_t *len, const tvs_lossy_params *p, const float *d, size_t n)
{
    size_t bound = tvs_lossy_unit_bound(p, n, TVS_DTYPE_BF16);
    cr_assert(bound > 0 || p->codec == TVS_LC_ZERO, "bound is 0 for codec %u", p->codec);
    size_t ss = tvs_lossy_scratch_size(p, n);
    uint8_t *out = malloc(bound + 16), *scratch = malloc(ss + 1);
    cr_assert(out && scratch);
    memset(out, 0xa5, bound + 16);
    tt_ok(tvs_lossy_unit_encode(out, bound, len, p, d, NULL, TVS_DTYPE_BF16, n, scratch));
    cr_assert_leq(*len, bound, "wrote %zu bytes, bound %zu (codec %u)", *len, bound, p->codec);
    for (size_t i = bound; i < bound + 16; i++)
        cr_assert_eq(out[i], 0xa5, "wrote past the bound");
    free(scratch);
    return out;
}

static float *dec(const uint8_t *e, size_t len, uint8_t codec, size_t n)
{
    float *d = malloc(n * sizeof *d);
    cr_assert(d);
    tt_ok(tvs_lossy_unit_decode(d, n, codec, (tvs_span){ e, len }));
    return d;
}

/* Encode then decode; returns the decoded delta. */
static float *round_trip(const tvs_lossy_params *p, const float *d, size_t n, size_t *len_out)
{
    size_t len;
    uint8_t *e = enc(&len, p, d, n);
    float *dh = dec(e, len, p->codec, n);
    free(e);
    if (len_out)
        *len_out = len;
    return dh;
}

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static tvs_lossy_params bq(unsigned bits, unsigned block, unsigned flags)
{
    tvs_lossy_params p = { .codec = TVS_LC_BLOCKQ, .bits = (uint8_t)bits,
                           .block = (uint16_t)block, .flags = (uint8_t)flags };
    return p;
}

/* ---- BLOCKQ quality */

Test(lossy, blockq_on_gaussian_data_meets_the_error_bound_of_each_width)
{
    /* about the Gaussian-optimal uniform quantizer's error, with a margin */
    static const double bound[9] = { 0, 0.365, 0.125, 0.036, 0.0100, 0.0030, 0.0009, 0.00026,
                                     0.00008 };
    size_t n = 1 << 16;
    float *d = malloc(n * sizeof *d);
    fill_gauss(d, n, 1e-3, 1);
    for (unsigned bits = 1; bits <= 8; bits++) {
        tvs_lossy_params p = bq(bits, 64, 0);
        size_t len;
        float *dh = round_trip(&p, d, n, &len);
        double e = rel_mse(d, dh, n);
        cr_assert_leq(e, bound[bits], "%u bits: relative MSE %g > %g", bits, e, bound[bits]);
        /* header + f16 scales + packed indices, nothing else */
        cr_assert_eq(len, 8 + (n / 64) * 2 + n * bits / 8);
        free(dh);
    }
    free(d);
}

static double dot_ratio(const float *d, const float *r, size_t n)
{
    double dot = 0, e = 0;
    for (size_t i = 0; i < n; i++) {
        dot += (double)r[i] * d[i];
        e += (double)d[i] * d[i];
    }
    return dot / e;
}

Test(lossy, unbiased_units_keep_the_full_length_of_the_delta)
{
    size_t n = 128 * 128;
    float *d = malloc(n * sizeof *d);
    fill_gauss(d, n, 0.01, 21);
    tvs_lossy_params ps[] = {
        { .codec = TVS_LC_SIGN, .density = 1.0f },
        { .codec = TVS_LC_SIGN, .density = 0.25f },
        bq(1, 64, 0), bq(2, 64, 0), bq(2, 256, TVS_BQ_ZERO), bq(3, 64, TVS_BQ_CODEBOOK),
        { .codec = TVS_LC_SPARSEQ, .bits = 2, .block = 64, .density = 0.5f },
        { .codec = TVS_LC_LOWRANK, .rows = 128, .cols = 128, .rank = 8,
          .factor_dtype = TVS_DTYPE_BF16 },
    };
    for (size_t t = 0; t < sizeof ps / sizeof *ps; t++) {
        tvs_lossy_params p = ps[t];
        float *r = round_trip(&p, d, n, NULL);
        double a = dot_ratio(d, r, n), e = rel_mse(d, r, n);
        /* least squares shrinks: <r, d> = |r|^2 = (1 - err) |d|^2 */
        cr_assert_lt(a, 0.995, "case %zu: least squares kept %.4f of the length", t, a);
        cr_assert(fabs(a - (1 - e)) < 0.02, "case %zu: <r,d> %.4f, 1 - err %.4f", t, a, 1 - e);
        free(r);
        p.unbiased = 1;
        size_t lu;
        r = round_trip(&p, d, n, &lu);
        a = dot_ratio(d, r, n);
        cr_assert(fabs(a - 1) < 1e-4, "case %zu: unbiased unit kept %.6f of the length", t, a);
        /* the error left is orthogonal to d: err = 1/alpha - 1 */
        double eu = rel_mse(d, r, n);
        cr_assert(fabs(eu - e / (1 - e)) < 0.02 * (1 + eu), "case %zu: err %.4f vs %.4f", t,
                  eu, e / (1 - e));
        free(r);
    }
    /* an all-zero delta stays all zero */
    memset(d, 0, n * sizeof *d);
    tvs_lossy_params p = bq(2, 64, 0);
    p.unbiased = 1;
    float *r = round_trip(&p, d, n, NULL);
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(r[i], 0.0f);
    free(r);
    free(d);
}

Test(lossy, wide_steps_clip_nothing_and_make_outer_levels_rare)
{
    size_t n = 1 << 15;
    float *d = malloc(n * sizeof *d);
    fill_gauss(d, n, 0.01, 22);
    for (unsigned bits = 2; bits <= 4; bits++)
        for (unsigned block = 64; block <= 256; block *= 4) {
            tvs_lossy_params p = bq(bits, block, 0);
            p.wide = 1;
            size_t len;
            uint8_t *e = enc(&len, &p, d, n);
            float *r = dec(e, len, p.codec, n);
            /* each block's largest |d| lands on an outer level (f16 step rounding) */
            for (size_t b = 0; b < n / block; b++) {
                float mx = 0, mr = 0;
                for (size_t i = b * block; i < (b + 1) * block; i++) {
                    mx = fmaxf(mx, fabsf(d[i]));
                    mr = fmaxf(mr, fabsf(r[i]));
                }
                cr_assert(fabsf(mr - mx) <= 2e-3f * mx, "%u bits, block %zu: max %g vs %g",
                          bits, b, mr, mx);
            }
            /* 2 bits: most indices are the inner levels 1 and 2 */
            if (bits == 2) {
                const uint8_t *idx = e + len - n / 4;
                size_t outer = 0;
                for (size_t i = 0; i < n; i++) {
                    unsigned q = (idx[i / 4] >> (2 * (i % 4))) & 3;
                    outer += q == 0 || q == 3;
                }
                cr_assert_lt(outer, n / 6, "block %u: %zu of %zu outer", block, outer, n);
            }
            /* wider steps cost squared error (least squares wins there) */
            tvs_lossy_params pl = bq(bits, block, 0);
            float *rl = round_trip(&pl, d, n, NULL);
            cr_assert_gt(rel_mse(d, r, n), rel_mse(d, rl, n));
            free(rl);
            free(r);
            free(e);
        }
    free(d);
}

Test(lossy, blockq_2_and_4_bits_on_gaussian_data_stay_within_the_promised_bounds)
{
    size_t n = 1 << 16;
    float *d = malloc(n * sizeof *d);
    fill_gauss(d, n, 0.02, 2);
    tvs_lossy_params p2 = bq(2, 64, 0), p4 = bq(4, 64, 0);
    float *d2 = round_trip(&p2, d, n, NULL), *d4 = round_trip(&p4, d, n, NULL);
    cr_assert_leq(rel_mse(d, d2, n), 0.125);
    cr_assert_leq(rel_mse(d, d4, n), 0.012);
    free(d2);
    free(d4);
    free(d);
}

Test(lossy, blockq_on_laplacian_data_meets_error_bounds_and_the_codebook_helps)
{
    static const double bound[5] = { 0, 0.50, 0.19, 0.062, 0.018 };
    size_t n = 1 << 16;
    float *d = malloc(n * sizeof *d);
    fill_laplace(d, n, 1e-3, 3);
    for (unsigned bits = 1; bits <= 4; bits++) {
        tvs_lossy_params p = bq(bits, 64, 0), pc = bq(bits, 64, TVS_BQ_CODEBOOK);
        float *du = round_trip(&p, d, n, NULL), *dc = round_trip(&pc, d, n, NULL);
        double eu = rel_mse(d, du, n), ec = rel_mse(d, dc, n);
        cr_assert_leq(eu, bound[bits], "%u bits: %g", bits, eu);
        cr_assert_leq(ec, eu, "%u bits: codebook %g worse than uniform %g", bits, ec, eu);
        if (bits >= 2)   /* Laplacian: non-uniform levels are clearly better */
            cr_assert_lt(ec, 0.95 * eu, "%u bits: codebook %g vs uniform %g", bits, ec, eu);
        free(du);
        free(dc);
    }
    free(d);
}

Test(lossy, codebook_is_never_worse_than_uniform_levels)
{
    size_t n = 5000;   /* a ragged last block */
    float *d = malloc(n * sizeof *d);
    for (uint64_t seed = 10; seed < 14; seed++) {
        if (seed % 2)
            fill_gauss(d, n, 1.0, seed);
        else
            fill_laplace(d, n, 1.0, seed);
        for (unsigned bits = 1; bits <= 8; bits++) {
            for (unsigned block = 8; block <= 512; block *= 4) {
                tvs_lossy_params p = bq(bits, block, 0), pc = bq(bits, block, TVS_BQ_CODEBOOK);
                size_t lu, lc;
                float *du = round_trip(&p, d, n, &lu), *dc = round_trip(&pc, d, n, &lc);
                cr_assert_leq(rel_mse(d, dc, n), rel_mse(d, du, n) * (1 + 1e-6));
                /* no codebook above 4 bits: the same bytes as uniform */
                if (bits > 4)
                    cr_assert_eq(lc, lu);
                free(du);
                free(dc);
            }
        }
    }
    free(d);
}

Test(lossy, one_bit_blockq_decodes_to_plus_or_minus_the_mean_magnitude_of_each_block)
{
    size_t n = 1000, block = 64;   /* 16 blocks, the last one short */
    float *d = malloc(n * sizeof *d);
    fill_gauss(d, n, 1.0, 4);
    for (size_t i = 0; i < n; i++)   /* blocks of very different scales */
        d[i] *= (float)(1 + (i / block) * 3);
    tvs_lossy_params p = bq(1, (unsigned)block, 0);
    float *dh = round_trip(&p, d, n, NULL);
    for (size_t b = 0; b * block < n; b++) {
        size_t lo = b * block, hi = TVS_MIN(lo + block, n);
        double mean = 0;
        for (size_t i = lo; i < hi; i++)
            mean += fabs(d[i]);
        mean /= (double)(hi - lo);
        for (size_t i = lo; i < hi; i++) {
            cr_assert_eq(dh[i] < 0, d[i] < 0, "element %zu: sign", i);
            cr_assert(fabs(fabs(dh[i]) - mean) <= 1.5e-3 * mean, "element %zu: %g vs mean %g",
                      i, (double)dh[i], mean);
        }
    }
    free(dh);
    free(d);
}

Test(lossy, blockq_zero_points_are_written_only_when_asked_and_follow_the_mean)
{
    size_t n = 4096;
    float *d = malloc(n * sizeof *d);
    fill_gauss(d, n, 0.1, 5);
    for (size_t i = 0; i < n; i++)
        d[i] += (float)(1.0 + (double)(i / 64));   /* each block has its own offset */
    tvs_lossy_params p = bq(2, 64, 0), pz = bq(2, 64, TVS_BQ_ZERO);
    size_t len, lz;
    uint8_t *e = enc(&len, &p, d, n), *ez = enc(&lz, &pz, d, n);
    cr_assert_eq(e[3] & TVS_BQ_ZERO, 0);
    cr_assert_eq(ez[3] & TVS_BQ_ZERO, TVS_BQ_ZERO);
    cr_assert_eq(lz, len + (n / 64) * 2);
    float *dh = dec(e, len, TVS_LC_BLOCKQ, n), *dz = dec(ez, lz, TVS_LC_BLOCKQ, n);
    double eu = rel_mse(d, dh, n), ez2 = rel_mse(d, dz, n);
    cr_assert_lt(ez2, eu / 5, "zero points: %g vs %g without", ez2, eu);
    free(e);
    free(ez);
    free(dh);
    free(dz);
    free(d);
}

Test(lossy, blockq_of_all_zeros_decodes_to_zeros)
{
    float d[100] = { 0 };
    for (unsigned flags = 0; flags < 4; flags++) {
        tvs_lossy_params p = bq(3, 16, flags);
        size_t len;
        uint8_t *e = enc(&len, &p, d, 100);
        float *dh = dec(e, len, TVS_LC_BLOCKQ, 100);
        for (size_t i = 0; i < 100; i++)
            cr_assert_eq(dh[i], 0.0f);
        free(e);
        free(dh);
    }
}

Test(lossy, blockq_handles_tiny_units_and_odd_blocks_at_every_width)
{
    float d[301];
    fill_gauss(d, 301, 2.0, 6);
    for (size_t n = 1; n <= 301; n += 25)
        for (unsigned bits = 1; bits <= 8; bits++)
            for (unsigned flags = 0; flags < 4; flags++) {
                tvs_lossy_params p = bq(bits, 9 + bits, flags);
                float *dh = round_trip(&p, d, n, NULL);
                double e = rel_mse(d, dh, n);
                cr_assert_leq(e, 0.55, "n %zu bits %u flags %u: %g", n, bits, flags, e);
                free(dh);
            }
}

/*
 * Decoding BLOCKQ and SPARSEQ bodies (their indices and values) gives the
 * same bits at every SIMD level, for every width and flag, blocks that are
 * and are not multiples of 16, a SPARSEQ body's pieces starting mid-byte,
 * and an index stream whose last group is short.
 */
Test(lossy, blockq_and_sparseq_decode_the_same_bits_at_every_simd_level)
{
    const size_t n = 3 * 4096 + 77;
    float *d = malloc(n * sizeof *d), *want = malloc(n * sizeof *want);
    float *got = malloc(n * sizeof *got);
    cr_assert(d && want && got);
    fill_laplace(d, n, 0.5, 31);
    static const int levels[] = { 2, 3, 1 };
    for (unsigned bits = 1; bits <= 8; bits++)
        for (unsigned flags = 0; flags < 4; flags++)
            for (int sparse = 0; sparse < 2; sparse++) {
                tvs_lossy_params p = bq(bits, flags & 1 ? 64 : 8 + 3 * bits, flags);
                if (sparse) {
                    p.codec = TVS_LC_SPARSEQ;
                    p.density = 0.37f;
                }
                size_t len;
                tvs__lossy_simd = 0;
                uint8_t *e = enc(&len, &p, d, n);
                tt_ok(tvs_lossy_unit_decode(want, n, p.codec, (tvs_span){ e, len }));
                for (size_t k = 0; k < 3; k++) {
                    tvs__lossy_simd = levels[k];
                    memset(got, 0xff, n * sizeof *got);
                    tt_ok(tvs_lossy_unit_decode(got, n, p.codec, (tvs_span){ e, len }));
                    for (size_t i = 0; i < n; i++)
                        cr_assert_eq(fbits(got[i]), fbits(want[i]), "bits %u flags %u %s, simd "
                                     "%d: value %zu is %a, not %a", bits, flags,
                                     sparse ? "sparseq" : "blockq", levels[k], i,
                                     (double)got[i], (double)want[i]);
                }
                tvs__lossy_simd = 1;
                free(e);
            }
    free(d), free(want), free(got);
}

/* ---- SIGN, SPARSEQ and top-k */

/* The reference kept set: the k largest |d|, ties by lowest index. */
static uint8_t *ref_kept(const float *d, size_t n, size_t k)
{
    uint8_t *kept = calloc(n, 1);
    for (size_t c = 0; c < k; c++) {
        size_t best = n;
        for (size_t i = 0; i < n; i++)
            if (!kept[i] && (best == n || fabsf(d[i]) > fabsf(d[best])))
                best = i;
        kept[best] = 1;
    }
    return kept;
}

Test(lossy, keep_count_rounds_density_times_n_and_clamps)
{
    cr_assert_eq(tvs_lossy_keep_count(0.1f, 100), 10);
    cr_assert_eq(tvs_lossy_keep_count(0.5f, 7), 4);     /* 3.5 rounds up */
    cr_assert_eq(tvs_lossy_keep_count(1e-9f, 100), 1);
    cr_assert_eq(tvs_lossy_keep_count(1.0f, 100), 100);
    cr_assert_eq(tvs_lossy_keep_count(0.0f, 100), 0);
    cr_assert_eq(tvs_lossy_keep_count(1.5f, 100), 0);
    cr_assert_eq(tvs_lossy_keep_count(NAN, 100), 0);
}

Test(lossy, sign_keeps_the_top_k_by_magnitude_with_ties_by_lowest_index)
{
    size_t n = 997;
    float *d = malloc(n * sizeof *d);
    uint64_t st = 7;
    for (size_t i = 0; i < n; i++)   /* few distinct magnitudes: many ties */
        d[i] = (float)((int)(tt_lcg(&st) % 9) - 4) * 0.25f;
    static const float dens[] = { 0.01f, 0.1f, 0.33f, 0.5f, 0.9f, 1.0f };
    for (size_t t = 0; t < sizeof dens / sizeof *dens; t++) {
        tvs_lossy_params p = { .codec = TVS_LC_SIGN, .density = dens[t] };
        size_t k = tvs_lossy_keep_count(dens[t], n);
        uint8_t *kept = ref_kept(d, n, k);
        float *dh = round_trip(&p, d, n, NULL);
        double sum = 0;
        for (size_t i = 0; i < n; i++)
            sum += kept[i] ? fabs(d[i]) : 0;
        float scale = (float)(sum / (double)k);
        for (size_t i = 0; i < n; i++) {
            if (!kept[i]) {
                cr_assert_eq(dh[i], 0.0f, "density %g: element %zu not kept", dens[t], i);
                continue;
            }
            cr_assert_eq(fabsf(dh[i]), scale, "density %g: element %zu: %g, scale %g",
                         dens[t], i, (double)dh[i], (double)scale);
            cr_assert_eq(dh[i] < 0, d[i] < 0, "element %zu: sign", i);
        }
        free(kept);
        free(dh);
    }
    free(d);
}

Test(lossy, sign_scale_is_the_mean_magnitude_of_the_kept_entries)
{
    size_t n = 20000;
    float *d = malloc(n * sizeof *d);
    fill_gauss(d, n, 1.0, 8);
    tvs_lossy_params p = { .codec = TVS_LC_SIGN, .density = 0.2f };
    size_t len;
    uint8_t *e = enc(&len, &p, d, n);
    uint8_t *kept = calloc(n, 1);
    float *dh = dec(e, len, TVS_LC_SIGN, n);
    size_t k = 0;
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        if (dh[i] != 0) {
            k++;
            sum += fabs(d[i]);
        }
    cr_assert_eq(k, 4000);
    float scale;
    memcpy(&scale, e, 4);
    cr_assert_eq(scale, (float)(sum / 4000));
    free(kept);
    free(dh);
    free(e);
    free(d);
}

/* Encode with SIGN or SPARSEQ; return the mask layout byte. */
static unsigned layout_of(const uint8_t *e, uint8_t codec)
{
    return codec == TVS_LC_SIGN ? e[4] : e[0];
}

Test(lossy, the_smallest_mask_layout_is_chosen_and_every_layout_decodes_the_same)
{
    size_t n = 4096;
    float *d = malloc(n * sizeof *d);
    struct {
        const char *name;
        float density;
        int clustered;
        unsigned want;
    } cases[] = {
        { "all", 1.0f, 0, TVS_MASK_ALL },
        { "dense", 0.6f, 0, TVS_MASK_BITMAP },
        { "sparse", 0.01f, 0, TVS_MASK_INDEX },
        { "clustered", 0.25f, 1, TVS_MASK_RUNS },
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        fill_gauss(d, n, 1e-3, 20 + c);
        if (cases[c].clustered)   /* the large values sit in 4 runs */
            for (size_t i = 0; i < n; i++)
                if ((i / 256) % 4 == 1)
                    d[i] *= 1000;
        for (uint8_t codec = TVS_LC_SIGN; codec <= TVS_LC_SPARSEQ; codec += 2) {
            tvs_lossy_params p = { .codec = codec, .density = cases[c].density, .bits = 4,
                                   .block = 64 };
            size_t len;
            uint8_t *e = enc(&len, &p, d, n);
            cr_assert_eq(layout_of(e, codec), cases[c].want, "%s (%s): layout %u, want %u",
                         cases[c].name, tvs_lossy_codec_name(codec), layout_of(e, codec),
                         cases[c].want);
            free(e);
        }
    }
    free(d);
}

/* Hand-built masks: the same kept set in every layout decodes to the same values. */
static void put_u16(tvs_buf *b, uint16_t v)
{
    tt_ok(tvs_buf_put_u8(b, (uint8_t)v));
    tt_ok(tvs_buf_put_u8(b, (uint8_t)(v >> 8)));
}

static void put_f32(tvs_buf *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    tt_ok(tvs_buf_put_le32(b, u));
}

static void put_leb(tvs_buf *b, uint32_t v)
{
    while (v >= 0x80) {
        tt_ok(tvs_buf_put_u8(b, (uint8_t)(v | 0x80)));
        v >>= 7;
    }
    tt_ok(tvs_buf_put_u8(b, (uint8_t)v));
}

static void put_mask(tvs_buf *b, unsigned layout, const uint8_t *kept, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += kept[i];
    tvs_buf m = TVS_BUF_INIT;
    if (layout == TVS_MASK_BITMAP) {
        for (size_t i = 0; i < (n + 7) / 8; i++) {
            uint8_t v = 0;
            for (size_t j = 0; j < 8 && 8 * i + j < n; j++)
                v |= (uint8_t)(kept[8 * i + j] << j);
            tt_ok(tvs_buf_put_u8(&m, v));
        }
    } else if (layout == TVS_MASK_INDEX) {
        size_t last = 0;
        int any = 0;
        for (size_t i = 0; i < n; i++)
            if (kept[i]) {
                put_leb(&m, (uint32_t)(any ? i - last - 1 : i));
                last = i;
                any = 1;
            }
    } else if (layout == TVS_MASK_RUNS) {
        size_t i = 0;
        while (i < n) {
            size_t u = 0, r = 0;
            while (i < n && !kept[i])
                i++, u++;
            while (i < n && kept[i])
                i++, r++;
            put_leb(&m, (uint32_t)u);
            if (r)
                put_leb(&m, (uint32_t)r);
        }
    }
    tt_ok(tvs_buf_put_u8(b, (uint8_t)layout));
    tt_ok(tvs_buf_put_le32(b, (uint32_t)k));
    tt_ok(tvs_buf_put_le32(b, (uint32_t)m.len));
    tt_ok(tvs_buf_append(b, m.ptr, m.len));
    tvs_buf_dispose(&m);
}

/* A SIGN payload over a hand-made kept set: scale 0.5, every third kept negative. */
static void put_sign(tvs_buf *b, unsigned layout, const uint8_t *kept, size_t n)
{
    put_f32(b, 0.5f);
    put_mask(b, layout, kept, n);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += kept[i];
    for (size_t j = 0; j < (k + 7) / 8; j++) {
        uint8_t v = 0;
        for (size_t t = 0; t < 8 && 8 * j + t < k; t++)
            v |= (uint8_t)(((8 * j + t) % 3 == 0) << t);
        tt_ok(tvs_buf_put_u8(b, v));
    }
}

Test(lossy, every_mask_layout_of_the_same_set_decodes_identically)
{
    size_t n = 9000;   /* more than two pieces, a ragged end */
    uint8_t *kept = malloc(n);
    float *ref = malloc(n * sizeof *ref), *dh = malloc(n * sizeof *dh);
    for (int pattern = 0; pattern < 4; pattern++) {
        uint64_t st = 30 + pattern;
        for (size_t i = 0; i < n; i++) {
            uint32_t r = tt_lcg(&st);
            kept[i] = pattern == 0   ? r % 2
                      : pattern == 1 ? r % 97 == 0
                      : pattern == 2 ? (i / 700) % 2
                                     : i >= n - 3;
        }
        for (unsigned layout = TVS_MASK_BITMAP; layout <= TVS_MASK_RUNS; layout++) {
            tvs_buf b = TVS_BUF_INIT;
            put_sign(&b, layout, kept, n);
            tt_ok(tvs_lossy_unit_decode(dh, n, TVS_LC_SIGN, (tvs_span){ b.ptr, b.len }));
            if (layout == TVS_MASK_BITMAP)
                memcpy(ref, dh, n * sizeof *ref);
            else
                cr_assert_arr_eq(dh, ref, n * sizeof *ref, "pattern %d layout %u", pattern,
                                 layout);
            size_t j = 0;
            for (size_t i = 0; i < n; i++) {
                float want = kept[i] ? (j % 3 == 0 ? -0.5f : 0.5f) : 0.0f;
                cr_assert_eq(dh[i], want, "pattern %d layout %u element %zu", pattern, layout,
                             i);
                j += kept[i];
            }
            tvs_buf_dispose(&b);
        }
    }
    free(kept);
    free(ref);
    free(dh);
}

Test(lossy, runs_may_end_with_an_explicit_empty_unkept_run)
{
    tvs_buf b = TVS_BUF_INIT;
    put_f32(&b, 1.0f);
    tt_ok(tvs_buf_put_u8(&b, TVS_MASK_RUNS));
    tt_ok(tvs_buf_put_le32(&b, 6));
    tt_ok(tvs_buf_put_le32(&b, 3));
    put_leb(&b, 2);   /* unkept 2, kept 6, unkept 0 */
    put_leb(&b, 6);
    put_leb(&b, 0);
    tt_ok(tvs_buf_put_u8(&b, 0x01));   /* first kept negative */
    float dh[8];
    tt_ok(tvs_lossy_unit_decode(dh, 8, TVS_LC_SIGN, (tvs_span){ b.ptr, b.len }));
    float want[8] = { 0, 0, -1, 1, 1, 1, 1, 1 };
    cr_assert_arr_eq(dh, want, sizeof want);
    tvs_buf_dispose(&b);
}

Test(lossy, sparseq_keeps_the_top_k_and_quantizes_them)
{
    size_t n = 30000;
    float *d = malloc(n * sizeof *d);
    fill_gauss(d, n, 1e-3, 40);
    static const float dens[] = { 0.02f, 0.1f, 0.5f, 1.0f };
    for (size_t t = 0; t < sizeof dens / sizeof *dens; t++) {
        size_t k = tvs_lossy_keep_count(dens[t], n);
        uint8_t *kept = ref_kept(d, n, k);
        float *top = malloc(n * sizeof *top);
        for (size_t i = 0; i < n; i++)
            top[i] = kept[i] ? d[i] : 0;
        for (unsigned bits = 2; bits <= 8; bits += 2) {
            tvs_lossy_params p = { .codec = TVS_LC_SPARSEQ, .density = dens[t],
                                   .bits = (uint8_t)bits, .block = 64 };
            float *dh = round_trip(&p, d, n, NULL);
            for (size_t i = 0; i < n; i++)
                if (!kept[i])
                    cr_assert_eq(dh[i], 0.0f, "element %zu is not kept", i);
            /* the error against the exact top-k values is a BLOCKQ error */
            double e = rel_mse(top, dh, n);
            cr_assert_leq(e, bits == 2 ? 0.15 : bits == 4 ? 0.015 : 0.002,
                          "density %g bits %u: %g", dens[t], bits, e);
            free(dh);
        }
        free(top);
        free(kept);
    }
    free(d);
}

/* ---- LOWRANK */

/* d = A B, A rows x r, B r x cols, Gaussian. */
static float *rank_r(size_t rows, size_t cols, size_t r, uint64_t seed)
{
    float *a = malloc(rows * r * sizeof *a), *b = malloc(r * cols * sizeof *b);
    float *d = malloc(rows * cols * sizeof *d);
    fill_gauss(a, rows * r, 1.0, seed);
    fill_gauss(b, r * cols, 1e-3, seed + 1);
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
            double s = 0;
            for (size_t t = 0; t < r; t++)
                s += (double)a[i * r + t] * b[t * cols + j];
            d[i * cols + j] = (float)s;
        }
    free(a);
    free(b);
    return d;
}

Test(lossy, lowrank_recovers_an_exact_rank_input)
{
    static const struct {
        uint32_t rows, cols, r;
    } shapes[] = { { 64, 48, 4 }, { 200, 30, 8 }, { 17, 300, 3 }, { 40, 40, 1 } };
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        size_t n = (size_t)shapes[s].rows * shapes[s].cols;
        float *d = rank_r(shapes[s].rows, shapes[s].cols, shapes[s].r, 50 + s);
        for (int fdt = TVS_DTYPE_F16; fdt <= TVS_DTYPE_F32; fdt++) {
            tvs_lossy_params p = { .codec = TVS_LC_LOWRANK, .rows = shapes[s].rows,
                                   .cols = shapes[s].cols, .rank = shapes[s].r,
                                   .factor_dtype = (tvs_dtype)fdt };
            float *dh = round_trip(&p, d, n, NULL);
            double e = sqrt(rel_mse(d, dh, n));
            double lim = fdt == TVS_DTYPE_F32 ? 1e-4 : fdt == TVS_DTYPE_F16 ? 2e-3 : 1.5e-2;
            cr_assert_lt(e, lim, "%ux%u rank %u dtype %d: relative error %g",
                         shapes[s].rows, shapes[s].cols, shapes[s].r, fdt, e);
            free(dh);
        }
        free(d);
    }
}

Test(lossy, lowrank_truncation_keeps_the_largest_singular_directions)
{
    /* rank 2 plus a small rank-6 part: rank 2 leaves about the small part */
    size_t rows = 96, cols = 80, n = rows * cols;
    float *big = rank_r(rows, cols, 2, 60), *small = rank_r(rows, cols, 6, 62);
    float *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++)
        d[i] = big[i] + 0.01f * small[i];
    tvs_lossy_params p = { .codec = TVS_LC_LOWRANK, .rows = (uint32_t)rows,
                           .cols = (uint32_t)cols, .rank = 2, .factor_dtype = TVS_DTYPE_F32 };
    float *dh = round_trip(&p, d, n, NULL);
    double e = rel_mse(d, dh, n), floor_ = rel_mse(d, big, n);
    cr_assert_leq(e, floor_ * 1.01, "rank 2: %g, the large part alone: %g", e, floor_);
    free(dh);
    free(big);
    free(small);
    free(d);
}

Test(lossy, lowrank_rank_above_the_matrix_size_is_clamped)
{
    size_t rows = 5, cols = 7, n = 35;
    float *d = rank_r(rows, cols, 5, 70);
    tvs_lossy_params p = { .codec = TVS_LC_LOWRANK, .rows = 5, .cols = 7, .rank = 64,
                           .factor_dtype = TVS_DTYPE_F32 };
    size_t len;
    uint8_t *e = enc(&len, &p, d, n);
    cr_assert_eq(tvs_load_le32(e + 8), 5);
    cr_assert_eq(len, 17 + (5 + 7) * 5 * 4);
    float *dh = dec(e, len, TVS_LC_LOWRANK, n);
    cr_assert_lt(sqrt(rel_mse(d, dh, n)), 1e-4);
    free(e);
    free(dh);
    free(d);
}

Test(lossy, lowrank_put_stores_the_factors_and_decodes_to_their_product)
{
    uint32_t rows = 33, cols = 21, rank = 5;
    for (int fdt = TVS_DTYPE_F16; fdt <= TVS_DTYPE_F32; fdt++) {
        unsigned w = fdt == TVS_DTYPE_F32 ? 4 : 2;
        uint8_t *u = malloc(rows * rank * w), *v = malloc(rank * cols * w);
        float *uf = malloc(rows * rank * 4), *vf = malloc(rank * cols * 4);
        fill_gauss(uf, rows * rank, 1.0, 80);
        fill_gauss(vf, rank * cols, 1.0, 81);
        tt_ok(tvs_dtype_from_f32(u, uf, rows * rank, (tvs_dtype)fdt));
        tt_ok(tvs_dtype_from_f32(v, vf, rank * cols, (tvs_dtype)fdt));
        tt_ok(tvs_dtype_to_f32(uf, u, rows * rank, (tvs_dtype)fdt));
        tt_ok(tvs_dtype_to_f32(vf, v, rank * cols, (tvs_dtype)fdt));
        size_t need = 17 + (rows * rank + rank * cols) * w, len;
        uint8_t *out = malloc(need);
        tt_fails(tvs_lossy_lowrank_put(out, need - 1, &len, rows, cols, rank, (tvs_dtype)fdt,
                                       0.25f, u, v),
                 TVS_EBUFS);
        tt_ok(tvs_lossy_lowrank_put(out, need, &len, rows, cols, rank, (tvs_dtype)fdt, 0.25f,
                                    u, v));
        cr_assert_eq(len, need);
        cr_assert_arr_eq(out + 17, u, rows * rank * w);
        cr_assert_arr_eq(out + 17 + rows * rank * w, v, rank * cols * w);
        float *dh = dec(out, len, TVS_LC_LOWRANK, rows * cols);
        for (uint32_t i = 0; i < rows; i++)
            for (uint32_t j = 0; j < cols; j++) {
                float acc = 0;   /* f32, r ascending, then the scale: bit for bit */
                for (uint32_t r = 0; r < rank; r++)
                    acc = acc + uf[i * rank + r] * vf[r * cols + j];
                cr_assert_eq(dh[i * cols + j], 0.25f * acc, "dtype %d (%u, %u)", fdt, i, j);
            }
        free(dh);
        free(out);
        free(u);
        free(v);
        free(uf);
        free(vf);
    }
}

Test(lossy, lowrank_put_refuses_bad_arguments)
{
    uint8_t u[8] = { 0 }, v[8] = { 0 }, out[64];
    size_t len;
    tt_fails(tvs_lossy_lowrank_put(out, 64, &len, 0, 2, 1, TVS_DTYPE_F16, 1, u, v), TVS_EINVAL);
    tt_fails(tvs_lossy_lowrank_put(out, 64, &len, 2, 2, 0, TVS_DTYPE_F16, 1, u, v), TVS_EINVAL);
    tt_fails(tvs_lossy_lowrank_put(out, 64, &len, 2, 2, 1, TVS_DTYPE_I8, 1, u, v), TVS_EINVAL);
    tt_fails(tvs_lossy_lowrank_put(out, 64, &len, 2, 2, 1, TVS_DTYPE_F16, INFINITY, u, v),
             TVS_EINVAL);
    u[1] = 0x7c;   /* f16 infinity */
    tt_fails(tvs_lossy_lowrank_put(out, 64, &len, 2, 2, 1, TVS_DTYPE_F16, 1, u, v), TVS_EINVAL);
}

/* ---- LOWRANKQ */

Test(lossy, svd_finds_the_singular_triplets_of_an_exact_rank_matrix)
{
    size_t rows = 64, cols = 48, n = rows * cols;
    float *d = rank_r(rows, cols, 4, 90);
    size_t need = tvs_lossy_svd_size(64, 48, 4);
    cr_assert_gt(need, 0);
    cr_assert_eq(tvs_lossy_svd_size(64, 48, 49), 0, "more triplets than the smaller side");
    cr_assert_eq(tvs_lossy_svd_size(0, 48, 1), 0);
    void *mem = malloc(need);
    tvs_lossy_svd_t sv;
    tt_ok(tvs_lossy_svd(&sv, d, 64, 48, 4, mem));
    tt_fails(tvs_lossy_svd(&sv, d, 64, 48, 0, mem), TVS_EINVAL);
    cr_assert_eq(sv.k, 4);
    for (uint32_t t = 0; t < 4; t++) {
        if (t)
            cr_assert_geq(sv.s[t - 1], sv.s[t], "singular values descend");
        for (uint32_t q = 0; q < 4; q++) {
            double uu = 0, vv = 0;
            for (size_t i = 0; i < rows; i++)
                uu += (double)sv.u[t * rows + i] * sv.u[q * rows + i];
            for (size_t j = 0; j < cols; j++)
                vv += (double)sv.v[t * cols + j] * sv.v[q * cols + j];
            cr_assert_float_eq(uu, t == q, 1e-5, "u%u.u%u = %g", t, q, uu);
            cr_assert_float_eq(vv, t == q, 1e-5, "v%u.v%u = %g", t, q, vv);
        }
    }
    float *r = calloc(n, sizeof *r);
    for (uint32_t t = 0; t < 4; t++)
        for (size_t i = 0; i < rows; i++)
            for (size_t j = 0; j < cols; j++)
                r[i * cols + j] += sv.s[t] * sv.u[t * rows + i] * sv.v[t * cols + j];
    cr_assert_lt(rel_mse(d, r, n), 1e-10, "rank 4 rebuilt: %g", rel_mse(d, r, n));
    free(r);
    free(mem);
    free(d);
}

/* rows x cols with singular values 0.8^t (random, nearly orthogonal directions) */
static float *decaying(size_t rows, size_t cols, uint64_t seed)
{
    size_t k = TVS_MIN(rows, cols);
    float *a = malloc(rows * sizeof *a), *b = malloc(cols * sizeof *b);
    float *d = calloc(rows * cols, sizeof *d);
    for (size_t t = 0; t < k; t++) {
        fill_gauss(a, rows, 1.0 / sqrt((double)rows), seed + 2 * t);
        fill_gauss(b, cols, pow(0.8, (double)t) / sqrt((double)cols), seed + 2 * t + 1);
        for (size_t i = 0; i < rows; i++)
            for (size_t j = 0; j < cols; j++)
                d[i * cols + j] += a[i] * b[j];
    }
    free(a);
    free(b);
    return d;
}

/* tvs_lossy_svd of a rows x cols matrix with spectrum 0.8^t, to k triplets:
 * the same bits at every SIMD level, and nearly all the leading energy */
static void svd_levels(size_t rows, size_t cols, size_t k)
{
    size_t n = rows * cols;
    float *d = decaying(rows, cols, 500);
    size_t need = tvs_lossy_svd_size((uint32_t)rows, (uint32_t)cols, (uint32_t)k);
    void *m0 = malloc(need), *m1 = malloc(need);
    tvs_lossy_svd_t a, b;
    tvs__lossy_simd = 0;   /* the reference loops, fmaf */
    tt_ok(tvs_lossy_svd(&a, d, (uint32_t)rows, (uint32_t)cols, (uint32_t)k, m0));
    for (int level = 3; level >= 1; level -= 2) {   /* AVX2, then the best (AVX-512) */
        tvs__lossy_simd = level;
        memset(m1, 0, need);   /* nothing left from the last level */
        tt_ok(tvs_lossy_svd(&b, d, (uint32_t)rows, (uint32_t)cols, (uint32_t)k, m1));
        cr_assert_eq(memcmp(a.s, b.s, k * 4), 0, "%zux%zu: singular values, level %d", rows,
                     cols, level);
        cr_assert_eq(memcmp(a.u, b.u, k * rows * 4), 0, "left vectors, level %d", level);
        cr_assert_eq(memcmp(a.v, b.v, k * cols * 4), 0, "right vectors, level %d", level);
    }
    /* resumed from the smaller side's vectors: the same triplets again */
    const float *small = rows < cols ? a.u : a.v;
    float *keep = malloc(k * TVS_MIN(rows, cols) * sizeof *keep);
    memcpy(keep, small, k * TVS_MIN(rows, cols) * sizeof *keep);
    for (int level = 0; level <= 1; level++) {
        tvs_lossy_svd_t c;
        tvs__lossy_simd = level;
        memset(m1, 0, need);
        tt_ok(tvs_lossy_svd_resume(&c, d, (uint32_t)rows, (uint32_t)cols, (uint32_t)k, keep,
                                   m1));
        cr_assert_eq(memcmp(a.s, c.s, k * 4), 0, "%zux%zu resumed: singular values", rows, cols);
        cr_assert_eq(memcmp(a.u, c.u, k * rows * 4), 0, "resumed: left vectors");
        cr_assert_eq(memcmp(a.v, c.v, k * cols * 4), 0, "resumed: right vectors");
    }
    tt_fails(tvs_lossy_svd_resume(&b, d, (uint32_t)rows, (uint32_t)cols, 0, keep, m1),
             TVS_EINVAL);
    free(keep);
    tvs__lossy_simd = 1;
    tt_ok(tvs_lossy_svd(&b, d, (uint32_t)rows, (uint32_t)cols, (uint32_t)k, m1));
    /* the k leading terms hold nearly all of the energy the best rank k holds
     * (here about 1 - 0.64^k of it, the directions being nearly orthogonal) */
    double total = 0, got = 0;
    for (size_t i = 0; i < n; i++)
        total += (double)d[i] * d[i];
    for (size_t t = 0; t < k; t++)
        got += (double)b.s[t] * b.s[t];
    cr_assert_gt(got / total, 0.995, "captured %g", got / total);
    cr_assert_leq(got / total, 1.0 + 1e-5);
    free(m0);
    free(m1);
    free(d);
}

Test(lossy, svd_gives_the_same_bits_at_every_simd_level_and_captures_the_leading_energy)
{
    /* rows and k not multiples of the kernels' tiles: bases of 48 and 64
     * columns, rotations of 40 and 56 */
    svd_levels(99, 203, 37);
    svd_levels(61, 70, 50);
    /* and tall: the Gram matrix of the columns, not of the rows */
    svd_levels(203, 99, 37);
    svd_levels(70, 61, 50);
}

Test(lossy, lowrankq_spends_about_its_rate_and_its_error_falls_as_the_rate_rises)
{
    size_t rows = 128, cols = 96, n = rows * cols;
    float *d = decaying(rows, cols, 300);
    static const float rates[] = { 0.25f, 0.5f, 1.0f, 2.0f };
    double prev = 1;
    for (size_t i = 0; i < sizeof rates / sizeof *rates; i++) {
        tvs_lossy_params p = { .codec = TVS_LC_LOWRANKQ, .rows = 128, .cols = 96, .rank = 96,
                               .rate = rates[i] };
        size_t len;
        float *dh = round_trip(&p, d, n, &len);
        double e = rel_mse(d, dh, n);
        cr_assert_leq(len, rates[i] * n / 8 + 16, "rate %g: %zu bytes", rates[i], len);
        cr_assert_geq(len, rates[i] * n / 8 * 0.8, "rate %g: only %zu bytes", rates[i], len);
        cr_assert_lt(e, prev * 0.7, "rate %g: error %g, %g at the rate before", rates[i], e,
                     prev);
        prev = e;
        free(dh);
    }
    /* decoding gives the same bits with AVX2, SSE2 only and the reference loops */
    {
        tvs_lossy_params p = { .codec = TVS_LC_LOWRANKQ, .rows = 128, .cols = 96, .rank = 96,
                               .rate = 1.5f, .unbiased = 1 };
        size_t len;
        uint8_t *e = enc(&len, &p, d, n);
        float *ref = NULL;
        for (int level = 0; level <= 2; level++) {
            tvs__lossy_simd = level;
            float *dh = dec(e, len, TVS_LC_LOWRANKQ, n);
            if (!ref)
                ref = dh;
            else {
                cr_assert_arr_eq(dh, ref, n * sizeof *dh, "simd level %d decodes differently",
                                 level);
                free(dh);
            }
        }
        tvs__lossy_simd = 1;
        free(ref);
        free(e);
    }
    /* about 1 bit: far below what 1-bit blocks leave on the same data */
    tvs_lossy_params one = { .codec = TVS_LC_LOWRANKQ, .rows = 128, .cols = 96, .rank = 96,
                             .rate = 1.0f };
    tvs_lossy_params b1 = bq(1, 64, 0);
    float *a = round_trip(&one, d, n, NULL), *b = round_trip(&b1, d, n, NULL);
    cr_assert_lt(rel_mse(d, a, n), rel_mse(d, b, n) / 4, "lowrankq %g, 1-bit blocks %g",
                 rel_mse(d, a, n), rel_mse(d, b, n));
    free(a);
    free(b);
    free(d);
}

Test(lossy, lowrankq_from_given_triplets_equals_lowrankq_computing_them)
{
    size_t rows = 40, cols = 72, n = rows * cols;
    float *d = decaying(rows, cols, 400);
    void *mem = malloc(tvs_lossy_svd_size(40, 72, 40));
    tvs_lossy_svd_t sv;
    tt_ok(tvs_lossy_svd(&sv, d, 40, 72, 40, mem));
    tvs_lossy_params p = { .codec = TVS_LC_LOWRANKQ, .rows = 40, .cols = 72, .rank = 40,
                           .rate = 1.5f, .unbiased = 1 };
    size_t l1, l2;
    uint8_t *a = enc(&l1, &p, d, n);
    p.svd = &sv;
    uint8_t *b = enc(&l2, &p, d, n);
    cr_assert_eq(l1, l2);
    cr_assert_arr_eq(a, b, l1);
    /* bad triplets: another shape */
    sv.rows = 41;
    cr_assert_eq(tvs_lossy_unit_bound(&p, n, TVS_DTYPE_BF16), 0);
    free(a);
    free(b);
    free(mem);
    free(d);
}

/* ---- chunks and apply */

typedef struct {
    tvs_buf chunk;
    uint32_t n_units;
    size_t n;
} chunk_b;

static void chunk_unit(tvs_buf *b, uint32_t n, uint8_t codec, const void *p, size_t len)
{
    tvs_lossy_unit u = { n, 0.5f, 1.0f, codec, { p, len } };
    tt_ok(tvs_lossy_chunk_add(b, &u));
}

/* Base elements of @p dt with special patterns (NaN, inf, -0, subnormals). */
static void fill_base(uint8_t *base, size_t n, tvs_dtype dt, uint64_t seed)
{
    uint64_t st = seed;
    float *f = malloc(n * sizeof *f);
    fill_gauss(f, n, 0.02, seed);
    for (size_t i = 0; i < n; i++) {
        uint32_t r = tt_lcg(&st);
        switch (r % 16) {
        case 0: f[i] = NAN; break;
        case 1: f[i] = r & 16 ? INFINITY : -INFINITY; break;
        case 2: f[i] = -0.0f; break;
        case 3: f[i] = (float)(r % 64) * 1e-41f; break;       /* f32 subnormal */
        case 4: f[i] = (float)(r % 64) * 6e-8f; break;        /* f16 subnormal */
        case 5: f[i] = r & 16 ? 65504.0f : 3.3e38f; break;
        default: break;
        }
    }
    tt_ok(tvs_dtype_from_f32(base, f, n, dt));
    if (dt != TVS_DTYPE_F32)   /* signalling NaN patterns too */
        for (size_t i = 0; i < n; i += 97) {
            base[2 * i] = 0x01;
            base[2 * i + 1] = dt == TVS_DTYPE_BF16 ? 0x7f : 0x7c;
            if (dt == TVS_DTYPE_BF16)
                base[2 * i] = 0x81, base[2 * i + 1] = 0x7f;
        }
    free(f);
}

/* round(f32(base) + d) with the scalar conversions of format/dtype.c; a NaN
 * sum is the base's NaN quieted, or the canonical quiet NaN (SPEC 2.7) */
static void ref_apply(uint8_t *out, const uint8_t *base, const float *d, size_t n, tvs_dtype dt)
{
    for (size_t i = 0; i < n; i++) {
        if (dt == TVS_DTYPE_F32) {
            float b;
            uint32_t bu, o;
            memcpy(&b, base + 4 * i, 4);
            memcpy(&bu, base + 4 * i, 4);
            float sum = b + d[i];
            memcpy(&o, &sum, 4);
            if (isnan(sum))
                o = isnan(b) ? bu | 0x400000u : 0x7fc00000u;
            memcpy(out + 4 * i, &o, 4);
            continue;
        }
        uint16_t h = (uint16_t)(base[2 * i] | base[2 * i + 1] << 8), o;
        float b = dt == TVS_DTYPE_BF16 ? tvs_bf16_to_f32(h) : tvs_f16_to_f32(h);
        float sum = b + d[i];
        if (isnan(sum))
            o = isnan(b) ? (uint16_t)(h | (dt == TVS_DTYPE_BF16 ? 0x40 : 0x200))
                         : (dt == TVS_DTYPE_BF16 ? 0x7fc0 : 0x7e00);
        else
            o = dt == TVS_DTYPE_BF16 ? tvs_f32_to_bf16(sum) : tvs_f32_to_f16(sum);
        out[2 * i] = (uint8_t)o;
        out[2 * i + 1] = (uint8_t)(o >> 8);
    }
}

/* A BLOCKQ payload whose values reach +-inf and NaN (codebook levels near the
 * f32 maximum, mul 0 on some). */
static void put_extreme_blockq(tvs_buf *b, size_t n, float mul)
{
    tt_ok(tvs_buf_put_u8(b, 2));
    put_u16(b, 8);
    tt_ok(tvs_buf_put_u8(b, TVS_BQ_CODEBOOK | TVS_BQ_ZERO));
    put_f32(b, mul);
    put_f32(b, -3e38f);
    put_f32(b, 1e-3f);
    put_f32(b, 2.5f);
    put_f32(b, 3e38f);
    size_t nb = (n + 7) / 8;
    for (size_t i = 0; i < nb; i++)
        put_u16(b, i % 3 ? 0x3c00 : 0x7bff);   /* 1.0, 65504 */
    for (size_t i = 0; i < nb; i++)
        put_u16(b, i % 2 ? 0x8001 : 0x3800);   /* -subnormal, 0.5 */
    uint64_t st = 90;
    for (size_t i = 0; i < (n * 2 + 7) / 8; i++) {
        uint8_t v = (uint8_t)tt_lcg(&st);
        if (i == (n * 2 + 7) / 8 - 1 && (n * 2) % 8)
            v &= (uint8_t)((1u << ((n * 2) % 8)) - 1);
        tt_ok(tvs_buf_put_u8(b, v));
    }
}

Test(lossy, apply_rounds_like_the_scalar_conversions_bit_for_bit)
{
    const tvs_dtype dts[] = { TVS_DTYPE_BF16, TVS_DTYPE_F16, TVS_DTYPE_F32 };
    size_t n = 12345;
    float *d = malloc(n * sizeof *d), *dh = malloc(n * sizeof *dh);
    for (size_t t = 0; t < 3; t++) {
        tvs_dtype dt = dts[t];
        unsigned w = dt == TVS_DTYPE_F32 ? 4 : 2;
        uint8_t *base = malloc(n * w), *got = malloc(n * w), *want = malloc(n * w);
        fill_base(base, n, dt, 100 + t);
        for (int kind = 0; kind < 6; kind++) {
            tvs_buf unit = TVS_BUF_INIT;
            uint8_t codec;
            size_t len;
            uint8_t *e = NULL;
            if (kind < 4) {
                /* deltas at the scale of the base's rounding, and much larger */
                fill_gauss(d, n, kind % 2 ? 1e-4 : 3.0, 110 + kind);
                tvs_lossy_params p = bq(kind < 2 ? 2 : 8, 64, kind == 3 ? TVS_BQ_ZERO : 0);
                if (kind == 1) {
                    p.codec = TVS_LC_SPARSEQ;
                    p.density = 0.3f;
                }
                e = enc(&len, &p, d, n);
                codec = p.codec;
            } else {
                put_extreme_blockq(&unit, n, kind == 4 ? 1.0f : 0.0f);
                e = unit.ptr;
                len = unit.len;
                codec = TVS_LC_BLOCKQ;
            }
            tt_ok(tvs_lossy_unit_decode(dh, n, codec, (tvs_span){ e, len }));
            ref_apply(want, base, dh, n, dt);
            tvs_buf chunk = TVS_BUF_INIT;
            tt_ok(tvs_lossy_chunk_begin(&chunk, 1));
            chunk_unit(&chunk, (uint32_t)n, codec, e, len);
            for (int simd = 0; simd < 3; simd++) {   /* reference, best (AVX2), SSE2 */
                tvs__lossy_simd = simd;
                memcpy(got, base, n * w);
                tt_ok(tvs_lossy_chunk_apply(got, dt, n, (tvs_span){ chunk.ptr, chunk.len }));
                for (size_t i = 0; i < n * w; i++)
                    cr_assert_eq(got[i], want[i], "%s kind %d simd %d: byte %zu",
                                 tvs_dtype_name(dt), kind, simd, i);
            }
            tvs__lossy_simd = 1;
            tvs_buf_dispose(&chunk);
            if (kind < 4)
                free(e);
            tvs_buf_dispose(&unit);
        }
        free(base);
        free(got);
        free(want);
    }
    free(d);
    free(dh);
}

Test(lossy, apply_to_every_f16_and_bf16_pattern_matches_the_reference)
{
    size_t n = 65536;
    uint8_t *base = malloc(2 * n), *got = malloc(2 * n), *want = malloc(2 * n);
    float *d = malloc(n * sizeof *d), *dh = malloc(n * sizeof *dh);
    for (size_t i = 0; i < n; i++) {
        base[2 * i] = (uint8_t)i;
        base[2 * i + 1] = (uint8_t)(i >> 8);
    }
    fill_laplace(d, n, 1e-3, 120);
    tvs_lossy_params p = bq(4, 32, 0);
    size_t len;
    uint8_t *e = enc(&len, &p, d, n);
    tt_ok(tvs_lossy_unit_decode(dh, n, TVS_LC_BLOCKQ, (tvs_span){ e, len }));
    tvs_buf chunk = TVS_BUF_INIT;
    tt_ok(tvs_lossy_chunk_begin(&chunk, 1));
    chunk_unit(&chunk, (uint32_t)n, TVS_LC_BLOCKQ, e, len);
    for (int dt = TVS_DTYPE_F16; dt <= TVS_DTYPE_BF16; dt++)
        for (int simd = 0; simd < 3; simd++) {   /* reference, best (AVX2), SSE2 */
            tvs__lossy_simd = simd;
            ref_apply(want, base, dh, n, (tvs_dtype)dt);
            memcpy(got, base, 2 * n);
            tt_ok(tvs_lossy_chunk_apply(got, (tvs_dtype)dt, n,
                                        (tvs_span){ chunk.ptr, chunk.len }));
            cr_assert_arr_eq(got, want, 2 * n, "%s simd %d", tvs_dtype_name((tvs_dtype)dt),
                             simd);
        }
    tvs_buf_dispose(&chunk);
    free(e);
    free(base);
    free(got);
    free(want);
    free(d);
    free(dh);
}

Test(lossy, lossy_add_is_exactly_what_apply_does_to_each_element)
{
    const tvs_dtype dts[] = { TVS_DTYPE_BF16, TVS_DTYPE_F16, TVS_DTYPE_F32 };
    size_t n = 3001;
    float *d = malloc(n * sizeof *d);
    fill_laplace(d, n, 0.5, 125);
    d[7] = NAN;
    d[8] = INFINITY;
    d[9] = -INFINITY;
    for (size_t t = 0; t < 3; t++) {
        unsigned w = dts[t] == TVS_DTYPE_F32 ? 4 : 2;
        uint8_t *base = malloc(n * w), *got = malloc(n * w), *want = malloc(n * w);
        fill_base(base, n, dts[t], 126 + t);
        ref_apply(want, base, d, n, dts[t]);
        for (int simd = 0; simd < 3; simd++) {   /* reference, best (AVX2), SSE2 */
            tvs__lossy_simd = simd;
            memcpy(got, base, n * w);
            tt_ok(tvs_lossy_add(got, dts[t], d, n));
            cr_assert_arr_eq(got, want, n * w, "%s simd %d", tvs_dtype_name(dts[t]), simd);
        }
        free(base);
        free(got);
        free(want);
    }
    tt_fails(tvs_lossy_add(NULL, TVS_DTYPE_I8, d, 0), TVS_EINVAL);
    free(d);
}

Test(lossy, a_chunk_of_every_codec_applies_unit_by_unit)
{
    size_t n = 7000;
    uint32_t un[6] = { 1000, 1500, 500, 1200, 1800, 1000 };   /* sums to n */
    float *d = malloc(n * sizeof *d), *dh = malloc(n * sizeof *dh);
    fill_gauss(d, n, 1e-2, 130);
    uint8_t *base = malloc(2 * n), *got = malloc(2 * n), *want = malloc(2 * n);
    fill_base(base, n, TVS_DTYPE_BF16, 131);
    tvs_lossy_params ps[6] = {
        { .codec = TVS_LC_ZERO },
        { .codec = TVS_LC_SIGN, .density = 0.2f },
        { .codec = TVS_LC_BLOCKQ, .bits = 3, .block = 32, .flags = TVS_BQ_CODEBOOK },
        { .codec = TVS_LC_SPARSEQ, .density = 0.05f, .bits = 4, .block = 16 },
        { .codec = TVS_LC_LOWRANK, .rows = 30, .cols = 60, .rank = 4,
          .factor_dtype = TVS_DTYPE_BF16 },
        { .codec = TVS_LC_VERBATIM },
    };
    tvs_buf chunk = TVS_BUF_INIT;
    tt_ok(tvs_lossy_chunk_begin(&chunk, 6));
    size_t off = 0;
    for (int u = 0; u < 6; u++) {
        size_t len = 0;
        uint8_t *e = NULL;
        if (ps[u].codec == TVS_LC_VERBATIM) {
            uint64_t st = 132;
            e = malloc(2 * un[u]);
            for (size_t i = 0; i < un[u]; i++) {
                uint16_t h = (uint16_t)tt_lcg(&st);
                e[2 * i] = (uint8_t)h;
                e[2 * i + 1] = (uint8_t)(h >> 8);
            }
            len = 2 * un[u];
            memcpy(want + 2 * off, e, len);
            /* unit_decode refuses VERBATIM: it holds elements, not a delta */
            tt_fails(tvs_lossy_unit_decode(dh, un[u], TVS_LC_VERBATIM, (tvs_span){ e, len }),
                     TVS_EINVAL);
        } else {
            e = ps[u].codec == TVS_LC_ZERO ? malloc(1) : enc(&len, &ps[u], d + off, un[u]);
            tt_ok(tvs_lossy_unit_decode(dh + off, un[u], ps[u].codec, (tvs_span){ e, len }));
            ref_apply(want + 2 * off, base + 2 * off, dh + off, un[u], TVS_DTYPE_BF16);
        }
        chunk_unit(&chunk, un[u], ps[u].codec, e, len);
        free(e);
        off += un[u];
    }
    memcpy(got, base, 2 * n);
    tt_ok(tvs_lossy_chunk_apply(got, TVS_DTYPE_BF16, n, (tvs_span){ chunk.ptr, chunk.len }));
    cr_assert_arr_eq(got, want, 2 * n);
    tvs_buf_dispose(&chunk);
    free(d);
    free(dh);
    free(base);
    free(got);
    free(want);
}

typedef struct {
    size_t calls, next_first, stop_at;
    uint8_t codecs[8];
} walk_state;

static int walk_cb(const tvs_lossy_unit *u, size_t first, void *p)
{
    walk_state *w = p;
    cr_assert_eq(first, w->next_first);
    w->codecs[w->calls] = u->codec;
    w->next_first += u->n;
    if (++w->calls == w->stop_at)
        return 42;
    return 0;
}

Test(lossy, chunk_units_walks_the_units_in_order_and_stops_when_asked)
{
    tvs_buf chunk = TVS_BUF_INIT;
    uint8_t payload[20] = { 0 };
    tt_ok(tvs_lossy_chunk_begin(&chunk, 3));
    chunk_unit(&chunk, 4, TVS_LC_ZERO, NULL, 0);
    chunk_unit(&chunk, 10, TVS_LC_VERBATIM, payload, 20);
    chunk_unit(&chunk, 6, TVS_LC_ZERO, NULL, 0);
    walk_state w = { 0, 0, 0, { 0 } };
    tt_ok(tvs_lossy_chunk_units((tvs_span){ chunk.ptr, chunk.len }, TVS_DTYPE_F16, 20, walk_cb,
                                &w));
    cr_assert_eq(w.calls, 3);
    cr_assert_eq(w.codecs[1], TVS_LC_VERBATIM);
    walk_state s = { 0, 0, 2, { 0 } };
    cr_assert_eq(tvs_lossy_chunk_units((tvs_span){ chunk.ptr, chunk.len }, TVS_DTYPE_F16, 20,
                                       walk_cb, &s),
                 42);
    cr_assert_eq(s.calls, 2);
    /* framing is checked before the first call: a bad total calls nothing */
    walk_state z = { 0, 0, 0, { 0 } };
    tt_fails(tvs_lossy_chunk_units((tvs_span){ chunk.ptr, chunk.len }, TVS_DTYPE_F16, 21,
                                   walk_cb, &z),
             TVS_ECORRUPT);
    cr_assert_eq(z.calls, 0);
    tt_fails(tvs_lossy_chunk_units((tvs_span){ chunk.ptr, chunk.len }, TVS_DTYPE_I8, 20, walk_cb,
                                   &z),
             TVS_EINVAL);
    tvs_buf_dispose(&chunk);
}

Test(lossy, chunk_add_refuses_bad_units)
{
    tvs_buf b = TVS_BUF_INIT;
    tvs_lossy_unit u = { 0, 0, 0, TVS_LC_ZERO, { NULL, 0 } };
    tt_fails(tvs_lossy_chunk_add(&b, &u), TVS_EINVAL);
    u.n = 4;
    u.codec = TVS_LC_COUNT;
    tt_fails(tvs_lossy_chunk_add(&b, &u), TVS_EINVAL);
    u.codec = TVS_LC_ZERO;
    u.err = NAN;
    tt_fails(tvs_lossy_chunk_add(&b, &u), TVS_EINVAL);
    u.err = -1;
    tt_fails(tvs_lossy_chunk_add(&b, &u), TVS_EINVAL);
    tt_fails(tvs_lossy_chunk_begin(&b, 0), TVS_EINVAL);
    tvs_buf_dispose(&b);
}

/* ---- encoder contracts */

Test(lossy, encoders_never_write_past_the_bound_and_report_ebufs_below_it)
{
    float d[700];
    uint8_t ft[2800];
    for (size_t n = 1; n <= 700; n += 53) {
        fill_gauss(d, n, 1.0, 140 + n);
        if (n % 2)   /* sometimes exact zeros and ties */
            for (size_t i = 0; i < n; i += 3)
                d[i] = 0;
        tt_fill_random(ft, sizeof ft, n);
        tvs_lossy_params ps[] = {
            { .codec = TVS_LC_ZERO },
            { .codec = TVS_LC_SIGN, .density = 0.01f },
            { .codec = TVS_LC_SIGN, .density = 0.5f },
            { .codec = TVS_LC_SIGN, .density = 1.0f },
            { .codec = TVS_LC_BLOCKQ, .bits = 1, .block = 8, .flags = 3 },
            { .codec = TVS_LC_BLOCKQ, .bits = 5, .block = 4096, .flags = 1 },
            { .codec = TVS_LC_BLOCKQ, .bits = 4, .block = 100, .flags = 2 },
            { .codec = TVS_LC_SPARSEQ, .density = 0.3f, .bits = 3, .block = 8, .flags = 3 },
            { .codec = TVS_LC_SPARSEQ, .density = 1.0f, .bits = 8, .block = 64 },
            { .codec = TVS_LC_LOWRANK, .rows = 1, .cols = (uint32_t)n, .rank = 2,
              .factor_dtype = TVS_DTYPE_F16 },
            { .codec = TVS_LC_VERBATIM },
        };
        for (size_t t = 0; t < sizeof ps / sizeof *ps; t++) {
            tvs_dtype dt = t % 2 ? TVS_DTYPE_F32 : TVS_DTYPE_BF16;
            size_t bound = tvs_lossy_unit_bound(&ps[t], n, dt);
            size_t ss = tvs_lossy_scratch_size(&ps[t], n), len, len2;
            uint8_t *out = malloc(bound + 8), *scratch = malloc(ss + 1);
            memset(out, 0x5a, bound + 8);
            tt_ok(tvs_lossy_unit_encode(out, bound, &len, &ps[t], d, ft, dt, n, scratch));
            cr_assert_leq(len, bound, "n %zu params %zu: %zu > %zu", n, t, len, bound);
            for (size_t i = bound; i < bound + 8; i++)
                cr_assert_eq(out[i], 0x5a);
            if (len > 0) {
                uint8_t *small = malloc(len - 1 ? len - 1 : 1);
                tt_fails(tvs_lossy_unit_encode(small, len - 1, &len2, &ps[t], d, ft, dt, n,
                                               scratch),
                         TVS_EBUFS);
                free(small);
            }
            free(out);
            free(scratch);
        }
    }
}

Test(lossy, encoding_is_deterministic_and_does_not_depend_on_simd)
{
    size_t n = 3000;
    float *d = malloc(n * sizeof *d), *r = malloc(n * sizeof *r), *r0 = malloc(n * sizeof *r0);
    fill_laplace(d, n, 1e-3, 150);
    tvs_lossy_params ps[] = {
        bq(2, 64, 0), bq(3, 64, TVS_BQ_CODEBOOK), bq(4, 16, TVS_BQ_ZERO), bq(7, 256, 3),
        bq(2, 256, 0), bq(5, 24, 0), bq(8, 64, 0),
        { .codec = TVS_LC_SIGN, .density = 0.1f },
        { .codec = TVS_LC_SPARSEQ, .density = 0.25f, .bits = 2, .block = 32, .flags = 2 },
        { .codec = TVS_LC_SPARSEQ, .density = 1, .bits = 4, .block = 64 },
        { .codec = TVS_LC_LOWRANK, .rows = 50, .cols = 60, .rank = 6,
          .factor_dtype = TVS_DTYPE_BF16 },
        { .codec = TVS_LC_LOWRANKQ, .rows = 50, .cols = 60, .rank = 50, .rate = 1.0f,
          .unbiased = 1 },
    };
    /* the encoder's variants (unbiased, wide steps) under every SIMD level:
     * 1 (SSE2, and AVX2 where the CPU has it), 2 (SSE2 only), 0 (reference) */
    for (size_t t = 0; t < sizeof ps / sizeof *ps; t++)
        for (int v = 0; v < 4; v++) {
            tvs_lossy_params p = ps[t];
            p.unbiased = v & 1;
            p.wide = v >> 1 && p.bits >= 2;
            size_t l0, l1;
            uint8_t *a = enc(&l0, &p, d, n);
            size_t bound = tvs_lossy_unit_bound(&p, n, TVS_DTYPE_F32);
            void *scratch = malloc(tvs_lossy_scratch_size(&p, n) + 1);
            uint8_t *b = malloc(bound + 1);
            cr_assert(scratch && b);
            tt_ok(tvs_lossy_unit_encode_r(b, bound, &l1, r0, &p, d, NULL, TVS_DTYPE_F32, n,
                                          scratch));
            static const int levels[] = { 1, 2, 0 };
            for (size_t k = 0; k < 3; k++) {
                tvs__lossy_simd = levels[k];
                size_t l2, l3;
                uint8_t *c = enc(&l2, &p, d, n);
                tt_ok(tvs_lossy_unit_encode_r(b, bound, &l3, r, &p, d, NULL, TVS_DTYPE_F32, n,
                                              scratch));
                tvs__lossy_simd = 1;
                cr_assert_eq(l0, l2);
                cr_assert_arr_eq(a, c, l0, "params %zu/%d: simd %d encodes differently", t, v,
                                 levels[k]);
                cr_assert_eq(l1, l3);
                cr_assert_arr_eq(r0, r, n * sizeof *r, "params %zu/%d: simd %d reconstructs "
                                 "differently", t, v, levels[k]);
                free(c);
            }
            free(a);
            free(b);
            free(scratch);
        }
    free(d);
    free(r);
    free(r0);
}

Test(lossy, encode_r_gives_the_payload_and_bit_for_bit_what_decoding_gives)
{
    size_t n = 3001;
    float *d = malloc(n * sizeof *d), *r = malloc(n * sizeof *r), *z = calloc(n, sizeof *z);
    cr_assert(d && r && z);
    fill_laplace(d, n, 1e-3, 151);
    for (size_t i = 0; i < n; i += 7)
        d[i] = i % 14 ? 0.0f : -0.0f;   /* zeros of both signs */
    tvs_lossy_params ps[] = {
        bq(1, 64, 0), bq(2, 64, 0), bq(3, 256, 0), bq(3, 64, TVS_BQ_CODEBOOK),
        bq(4, 16, TVS_BQ_ZERO), bq(5, 24, 3), bq(7, 100, 0), bq(8, 64, 0),
        { .codec = TVS_LC_ZERO },
        { .codec = TVS_LC_SIGN, .density = 1 },
        { .codec = TVS_LC_SIGN, .density = 0.1f },
        { .codec = TVS_LC_SPARSEQ, .density = 1, .bits = 2, .block = 64 },
        { .codec = TVS_LC_SPARSEQ, .density = 0.25f, .bits = 2, .block = 32, .flags = 2 },
        { .codec = TVS_LC_SPARSEQ, .density = 0.5f, .bits = 4, .block = 64, .flags = 1 },
        { .codec = TVS_LC_LOWRANK, .rows = 3001, .cols = 1, .rank = 1,
          .factor_dtype = TVS_DTYPE_BF16 },
    };
    for (int zero = 0; zero < 2; zero++)
        for (size_t t = 0; t < sizeof ps / sizeof *ps; t++)
            for (int v = 0; v < 4; v++) {
                tvs_lossy_params p = ps[t];
                p.unbiased = v & 1;
                p.wide = v >> 1 && p.bits >= 2;
                const float *x = zero ? z : d;
                size_t bound = tvs_lossy_unit_bound(&p, n, TVS_DTYPE_F32), l1, l2;
                uint8_t *a = malloc(bound + 1), *b = malloc(bound + 1);
                void *scratch = malloc(tvs_lossy_scratch_size(&p, n) + 1);
                cr_assert(a && b && scratch);
                tt_ok(tvs_lossy_unit_encode(a, bound, &l1, &p, x, NULL, TVS_DTYPE_F32, n,
                                            scratch));
                tt_ok(tvs_lossy_unit_encode_r(b, bound, &l2, r, &p, x, NULL, TVS_DTYPE_F32, n,
                                              scratch));
                cr_assert_eq(l1, l2);
                cr_assert_arr_eq(a, b, l1, "params %zu/%d: the payloads differ", t, v);
                float *dh = dec(a, l1, p.codec, n);
                cr_assert_arr_eq(r, dh, n * sizeof *r,
                                 "params %zu/%d (zero %d): r is not what decoding gives", t, v,
                                 zero);
                free(dh);
                free(a);
                free(b);
                free(scratch);
            }
    free(d);
    free(r);
    free(z);
}

Test(lossy, lowrankq_encode_r_gives_bit_for_bit_what_decoding_gives)
{
    size_t rows = 48, cols = 40, n = rows * cols;
    float *d = decaying(rows, cols, 77), *z = calloc(n, sizeof *z), *r = malloc(n * 4);
    for (int zero = 0; zero < 2; zero++)
        for (int v = 0; v < 4; v++) {
            tvs_lossy_params p = { .codec = TVS_LC_LOWRANKQ, .rows = (uint32_t)rows,
                                   .cols = (uint32_t)cols, .rank = 20 };
            p.rate = v >> 1 ? 2.0f : 0.5f;
            p.unbiased = v & 1;   /* unbiased: rescaled by the factors' estimate */
            const float *x = zero ? z : d;
            size_t bound = tvs_lossy_unit_bound(&p, n, TVS_DTYPE_F32), l1;
            uint8_t *a = malloc(bound);
            void *scratch = malloc(tvs_lossy_scratch_size(&p, n));
            tt_ok(tvs_lossy_unit_encode_r(a, bound, &l1, r, &p, x, NULL, TVS_DTYPE_F32, n,
                                          scratch));
            float *dh = dec(a, l1, p.codec, n);
            cr_assert_arr_eq(r, dh, n * sizeof *r, "rate %g unbiased %d zero %d", p.rate,
                             p.unbiased, zero);
            if (!zero && p.unbiased) {   /* and the correction held: <r, d> = |d|^2,
                                          * to the estimate's cross terms (a 48 x 40
                                          * matrix: a few in ten thousand) */
                double rd = 0, dd = 0;
                for (size_t i = 0; i < n; i++)
                    rd += (double)r[i] * d[i], dd += (double)d[i] * d[i];
                cr_assert_float_eq(rd / dd, 1.0, 3e-3, "<r, d> / |d|^2 = %g", rd / dd);
            }
            free(dh);
            free(a);
            free(scratch);
        }
    free(d);
    free(z);
    free(r);
}

Test(lossy, eigvals_of_a_rotated_diagonal_matrix_come_back_descending)
{
    /* Q diag(l) Q^T for a Householder reflection Q = I - 2 w w^T / |w|^2 */
    enum { N = 24 };
    double a[N * N], ev[N], l[N], w[N], ww = 0;
    for (int i = 0; i < N; i++) {
        l[i] = (i * 7) % N - 3.5;   /* a permutation, some negative */
        w[i] = 1.0 + i % 5;
        ww += w[i] * w[i];
    }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < N; k++) {
                double qik = (i == k) - 2 * w[i] * w[k] / ww, qjk = (j == k) - 2 * w[j] * w[k] / ww;
                s += qik * l[k] * qjk;
            }
            a[i * N + j] = s;
        }
    tt_ok(tvs_lossy_eigvals(a, N, ev));
    for (int i = 0; i < N; i++)
        cr_assert_float_eq(ev[i], N - 1 - i - 3.5, 1e-9, "eigenvalue %d: %g", i, ev[i]);
    double x[4] = { 1, 0, 0, NAN };
    tt_fails(tvs_lossy_eigvals(x, 2, ev), TVS_EINVAL);
    tt_fails(tvs_lossy_eigvals(a, 65, ev), TVS_EINVAL);
    tt_fails(tvs_lossy_eigvals(a, 0, ev), TVS_EINVAL);
}

/* the estimate of a LOWRANKQ unit's error against its real error, decoded */
static void lrq_estimate_holds(size_t rows, size_t cols, double tol)
{
    size_t n = rows * cols;
    float *d = decaying(rows, cols, 41);
    double dd = 0;
    for (size_t i = 0; i < n; i++)
        dd += (double)d[i] * d[i];
    static const float rates[] = { 0.25f, 0.5f, 1.0f, 2.0f };
    for (size_t i = 0; i < sizeof rates / sizeof *rates; i++)
        for (int unb = 0; unb < 2; unb++) {
            tvs_lossy_params p = { .codec = TVS_LC_LOWRANKQ, .rows = (uint32_t)rows,
                                   .cols = (uint32_t)cols, .rank = 64, .rate = rates[i],
                                   .unbiased = (uint8_t)unb };
            size_t bound = tvs_lossy_unit_bound(&p, n, TVS_DTYPE_F32), l1, l2;
            uint8_t *a = malloc(bound), *b = malloc(bound);
            void *scratch = malloc(tvs_lossy_scratch_size(&p, n));
            double est = -1;
            tt_ok(tvs_lossy_lowrankq_estimate(a, bound, &l1, &est, &p, d, n, scratch));
            tt_ok(tvs_lossy_unit_encode(b, bound, &l2, &p, d, NULL, TVS_DTYPE_F32, n, scratch));
            cr_assert_eq(l1, l2);
            cr_assert_arr_eq(a, b, l1, "the estimate encodes what encoding does");
            float *dh = dec(a, l1, p.codec, n);
            double e = 0;
            for (size_t j = 0; j < n; j++)
                e += ((double)dh[j] - d[j]) * ((double)dh[j] - d[j]);
            cr_assert_float_eq(est / dd, e / dd, tol * e / dd,
                               "%zux%zu rate %g unbiased %d: estimated %g, real %g", rows, cols,
                               rates[i], unb, est / dd, e / dd);
            free(dh);
            free(a);
            free(b);
            free(scratch);
        }
    free(d);
}

Test(lossy, lowrankq_estimates_its_error_from_its_factors)
{
    lrq_estimate_holds(128, 96, 0.02);
    lrq_estimate_holds(64, 300, 0.02);
    tvs_lossy_params p = { .codec = TVS_LC_BLOCKQ, .bits = 2, .block = 64 };
    uint8_t buf[64];
    size_t len;
    double est;
    float x[64] = { 0 };
    tt_fails(tvs_lossy_lowrankq_estimate(buf, sizeof buf, &len, &est, &p, x, 64, buf),
             TVS_EINVAL);
}

Test(lossy, encoders_refuse_bad_params_and_non_finite_deltas)
{
    float d[64] = { 0 };
    uint8_t out[1024], scratch[4096];
    size_t len;
    tvs_lossy_params bad[] = {
        { .codec = TVS_LC_COUNT },
        { .codec = TVS_LC_SIGN, .density = 0 },
        { .codec = TVS_LC_SIGN, .density = 1.5f },
        { .codec = TVS_LC_BLOCKQ, .bits = 0, .block = 64 },
        { .codec = TVS_LC_BLOCKQ, .bits = 9, .block = 64 },
        { .codec = TVS_LC_BLOCKQ, .bits = 2, .block = 7 },
        { .codec = TVS_LC_BLOCKQ, .bits = 2, .block = 4097 },
        { .codec = TVS_LC_BLOCKQ, .bits = 2, .block = 64, .flags = 4 },
        { .codec = TVS_LC_LOWRANK, .rows = 8, .cols = 9, .rank = 1,
          .factor_dtype = TVS_DTYPE_F16 },
        { .codec = TVS_LC_LOWRANK, .rows = 8, .cols = 8, .rank = 0,
          .factor_dtype = TVS_DTYPE_F16 },
        { .codec = TVS_LC_LOWRANK, .rows = 8, .cols = 8, .rank = 1,
          .factor_dtype = TVS_DTYPE_I32 },
    };
    for (size_t t = 0; t < sizeof bad / sizeof *bad; t++) {
        cr_assert_eq(tvs_lossy_unit_bound(&bad[t], 64, TVS_DTYPE_BF16), 0, "params %zu", t);
        tt_fails(tvs_lossy_unit_encode(out, sizeof out, &len, &bad[t], d, NULL, TVS_DTYPE_BF16,
                                       64, scratch),
                 TVS_EINVAL);
    }
    tvs_lossy_params p = bq(2, 64, 0);
    tt_fails(tvs_lossy_unit_encode(out, sizeof out, &len, &p, d, NULL, TVS_DTYPE_BF16, 0,
                                   scratch),
             TVS_EINVAL);
    d[17] = NAN;
    tt_fails(tvs_lossy_unit_encode(out, sizeof out, &len, &p, d, NULL, TVS_DTYPE_BF16, 64,
                                   scratch),
             TVS_EINVAL);
    tt_msg_has("element 17");
    tvs_lossy_params v = { .codec = TVS_LC_VERBATIM };
    cr_assert_eq(tvs_lossy_unit_bound(&v, 64, TVS_DTYPE_I8), 0);
}

/* ---- corrupt input */

/* Apply @p chunk into an exactly-sized buffer: the code and message. */
static int apply_n(const tvs_buf *chunk, size_t n)
{
    uint8_t *dst = malloc(2 * n);
    memset(dst, 0, 2 * n);
    int rc = tvs_lossy_chunk_apply(dst, TVS_DTYPE_BF16, n, (tvs_span){ chunk->ptr, chunk->len });
    free(dst);
    return rc;
}

/* One-unit chunk of @p payload; apply and unit_decode must both say ECORRUPT
 * with a message containing @p rule. */
static void expect_corrupt(uint8_t codec, const tvs_buf *payload, size_t n, const char *rule)
{
    tvs_buf chunk = TVS_BUF_INIT;
    tt_ok(tvs_lossy_chunk_begin(&chunk, 1));
    chunk_unit(&chunk, (uint32_t)n, codec, payload->ptr, payload->len);
    tt_fails(apply_n(&chunk, n), TVS_ECORRUPT);
    tt_msg_has("lossy chunk: unit 0");
    tt_msg_has(rule);
    float *d = malloc(n * sizeof *d);
    tt_fails(tvs_lossy_unit_decode(d, n, codec, (tvs_span){ payload->ptr, payload->len }),
             TVS_ECORRUPT);
    tt_msg_has(rule);
    free(d);
    tvs_buf_dispose(&chunk);
}

/* A valid chunk holding every codec and mask layout (n elements). */
static void valid_chunk(tvs_buf *chunk, size_t *n_out)
{
    size_t n = 4 * 256 + 400;
    float *d = malloc(n * sizeof *d);
    fill_gauss(d, n, 1e-2, 160);
    for (size_t i = 0; i < 89; i++)   /* unit 3's top quarter in one run, for RUNS */
        d[450 + i] *= 100;
    tvs_lossy_params ps[] = {
        { .codec = TVS_LC_SIGN, .density = 1.0f },                      /* ALL */
        { .codec = TVS_LC_SIGN, .density = 0.5f },                      /* BITMAP */
        { .codec = TVS_LC_SPARSEQ, .density = 0.02f, .bits = 3, .block = 8, .flags = 3 },
        { .codec = TVS_LC_SPARSEQ, .density = 0.25f, .bits = 5, .block = 9, .flags = 1 },
        { .codec = TVS_LC_BLOCKQ, .bits = 2, .block = 16, .flags = 2 },
        { .codec = TVS_LC_LOWRANK, .rows = 10, .cols = 10, .rank = 2,
          .factor_dtype = TVS_DTYPE_F16 },
        { .codec = TVS_LC_ZERO },
        { .codec = TVS_LC_VERBATIM },
    };
    size_t un[] = { 100, 100, 200, 256 + 100, 300, 100, 50, 94 };
    tt_ok(tvs_lossy_chunk_begin(chunk, 8));
    size_t off = 0;
    uint8_t ft[200] = { 0x3f, 0x80 };
    for (size_t u = 0; u < 8; u++) {
        size_t len = 0;
        uint8_t *e = NULL;
        if (ps[u].codec == TVS_LC_VERBATIM)
            chunk_unit(chunk, (uint32_t)un[u], TVS_LC_VERBATIM, ft, 2 * un[u]);
        else if (ps[u].codec == TVS_LC_ZERO)
            chunk_unit(chunk, (uint32_t)un[u], TVS_LC_ZERO, NULL, 0);
        else {
            e = enc(&len, &ps[u], d + off, un[u]);
            chunk_unit(chunk, (uint32_t)un[u], ps[u].codec, e, len);
        }
        free(e);
        off += un[u];
    }
    *n_out = off;
    free(d);
}

Test(lossy, the_valid_chunk_holds_every_mask_layout)
{
    tvs_buf chunk = TVS_BUF_INIT;
    size_t n;
    valid_chunk(&chunk, &n);
    tt_ok(apply_n(&chunk, n));
    /* units 0..3 have mask layouts all, bitmap, index, runs */
    size_t off = 5;
    unsigned seen = 0;
    for (int u = 0; u < 4; u++) {
        uint8_t codec = chunk.ptr[off + 12];
        uint32_t len = tvs_load_le32(chunk.ptr + off + 13);
        const uint8_t *pl = chunk.ptr + off + 17;
        seen |= 1u << (codec == TVS_LC_SIGN ? pl[4] : pl[0]);
        off += 17 + len;
    }
    cr_assert_eq(seen, 0xf, "layouts seen: 0x%x", seen);
    tvs_buf_dispose(&chunk);
}

Test(lossy, apply_rejects_every_truncation_and_every_extension_of_a_valid_chunk)
{
    tvs_buf chunk = TVS_BUF_INIT;
    size_t n;
    valid_chunk(&chunk, &n);
    for (size_t len = 0; len < chunk.len; len++) {
        uint8_t *copy = malloc(len ? len : 1);   /* exact size: ASan sees overreads */
        memcpy(copy, chunk.ptr, len);
        tvs_buf t = { copy, len, len };
        tt_fails(apply_n(&t, n), TVS_ECORRUPT);
        free(copy);
    }
    tt_ok(tvs_buf_put_u8(&chunk, 0));
    tt_fails(apply_n(&chunk, n), TVS_ECORRUPT);
    tt_msg_has("trailing");
    tvs_buf_dispose(&chunk);
}

Test(lossy, apply_rejects_a_unit_whose_payload_is_cut_or_extended)
{
    /* every unit: its payload one byte short and one byte long, lengths adjusted */
    tvs_buf chunk = TVS_BUF_INIT;
    size_t n;
    valid_chunk(&chunk, &n);
    size_t off = 5;
    for (int u = 0; u < 8; u++) {
        uint32_t len = tvs_load_le32(chunk.ptr + off + 13);
        for (int delta = -1; delta <= 1; delta += 2) {
            if (len == 0 && delta < 0)
                continue;
            tvs_buf b = TVS_BUF_INIT;
            tt_ok(tvs_buf_append(&b, chunk.ptr, off + 13));
            tt_ok(tvs_buf_put_le32(&b, len + (uint32_t)delta));
            tt_ok(tvs_buf_append(&b, chunk.ptr + off + 17, delta < 0 ? len - 1 : len));
            if (delta > 0)
                tt_ok(tvs_buf_put_u8(&b, 0));
            tt_ok(tvs_buf_append(&b, chunk.ptr + off + 17 + len, chunk.len - off - 17 - len));
            tt_fails(apply_n(&b, n), TVS_ECORRUPT);
            tt_msg_has("lossy chunk: unit");
            tvs_buf_dispose(&b);
        }
        off += 17 + len;
    }
    tvs_buf_dispose(&chunk);
}

Test(lossy, apply_rejects_bad_framing)
{
    uint8_t zero_payload[1] = { 0 };
    struct {
        uint8_t version;
        uint32_t n_units;
        uint32_t un[3];
        uint8_t codec[3];
        float err;
        size_t n;
        const char *rule;
    } cases[] = {
        { 3, 1, { 8 }, { 0 }, 0, 8, "version 3, expected 1..2" },
        { 0, 1, { 8 }, { 0 }, 0, 8, "version 0, expected 1..2" },
        { 1, 0, { 0 }, { 0 }, 0, 8, "0 units" },
        { 1, 2, { 4, 5 }, { 0, 0 }, 0, 8, "past the chunk" },
        { 1, 2, { 4, 3 }, { 0, 0 }, 0, 8, "cover 7 of 8" },
        { 1, 1, { 0 }, { 0 }, 0, 8, "0 elements" },
        { 1, 1, { 8 }, { 7 }, 0, 8, "unknown codec 7" },
        { 1, 1, { 8 }, { 0 }, -1.0f, 8, "err or norm" },
        { 1, 1, { 8 }, { 0 }, NAN, 8, "err or norm" },
        { 1, 3, { 2, 2, 2 }, { 0, 0, 0 }, 0, 2, "3 units for 2 elements" },
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        tvs_buf b = TVS_BUF_INIT;
        tt_ok(tvs_buf_put_u8(&b, cases[c].version));
        tt_ok(tvs_buf_put_le32(&b, cases[c].n_units));
        for (uint32_t u = 0; u < TVS_MAX(cases[c].n_units, 1); u++) {
            tt_ok(tvs_buf_put_le32(&b, cases[c].un[u]));
            put_f32(&b, cases[c].err);
            put_f32(&b, 1);
            tt_ok(tvs_buf_put_u8(&b, cases[c].codec[u]));
            tt_ok(tvs_buf_put_le32(&b, 0));
        }
        tt_fails(apply_n(&b, cases[c].n), TVS_ECORRUPT);
        tt_msg_has(cases[c].rule);
        tvs_buf_dispose(&b);
    }
    /* ZERO with a payload; VERBATIM of the wrong length; too many elements */
    tvs_buf b = TVS_BUF_INIT;
    tt_ok(tvs_lossy_chunk_begin(&b, 1));
    chunk_unit(&b, 8, TVS_LC_ZERO, zero_payload, 1);
    tt_fails(apply_n(&b, 8), TVS_ECORRUPT);
    tt_msg_has("zero unit with 1 payload bytes");
    tvs_buf_dispose(&b);
    uint8_t v[16] = { 0 };
    tt_ok(tvs_lossy_chunk_begin(&b, 1));
    chunk_unit(&b, 8, TVS_LC_VERBATIM, v, 15);
    tt_fails(apply_n(&b, 8), TVS_ECORRUPT);
    tt_msg_has("verbatim payload of 15 bytes, not 16");
    tvs_buf_dispose(&b);
    tt_ok(tvs_buf_put_u8(&b, 1));
    tt_ok(tvs_buf_put_le32(&b, 1));
    tt_ok(tvs_buf_put_le32(&b, TVS_LOSSY_MAX_UNIT + 1));
    put_f32(&b, 0);
    put_f32(&b, 0);
    tt_ok(tvs_buf_put_u8(&b, 0));
    tt_ok(tvs_buf_put_le32(&b, 0));
    tt_fails(apply_n(&b, 8), TVS_ECORRUPT);
    tvs_buf_dispose(&b);
}

/* A mask header and raw mask bytes. */
static void put_raw_mask(tvs_buf *b, uint8_t layout, uint32_t k, const uint8_t *m, size_t len)
{
    tt_ok(tvs_buf_put_u8(b, layout));
    tt_ok(tvs_buf_put_le32(b, k));
    tt_ok(tvs_buf_put_le32(b, (uint32_t)len));
    tt_ok(tvs_buf_append(b, m, len));
}

/* A SIGN unit of n entries with the given raw mask and enough zero sign bytes. */
static void sign_case(size_t n, uint8_t layout, uint32_t k, const uint8_t *m, size_t len,
                      const char *rule)
{
    tvs_buf b = TVS_BUF_INIT;
    put_f32(&b, 1.0f);
    put_raw_mask(&b, layout, k, m, len);
    for (uint32_t i = 0; i < (k + 7) / 8; i++)
        tt_ok(tvs_buf_put_u8(&b, 0));
    expect_corrupt(TVS_LC_SIGN, &b, n, rule);
    tvs_buf_dispose(&b);
}

Test(lossy, masks_that_break_a_rule_are_corrupt)
{
    static const uint8_t bm[2] = { 0xff, 0x00 };
    sign_case(16, 4, 4, NULL, 0, "unknown mask layout 4");
    sign_case(16, TVS_MASK_BITMAP, 0, bm, 2, "keeps 0 of 16");
    sign_case(16, TVS_MASK_BITMAP, 17, bm, 2, "keeps 17 of 16");
    sign_case(16, TVS_MASK_ALL, 15, NULL, 0, "mask layout all keeps 15");
    sign_case(16, TVS_MASK_ALL, 16, bm, 1, "mask layout all");
    sign_case(16, TVS_MASK_BITMAP, 8, bm, 1, "bitmap mask of 1 bytes, not 2");
    sign_case(16, TVS_MASK_BITMAP, 7, bm, 2, "has 8 bits set, not 7");
    static const uint8_t pad[2] = { 0xff, 0x10 };   /* n = 12: bit 12 is padding */
    sign_case(12, TVS_MASK_BITMAP, 9, pad, 2, "padding bits");
    /* INDEX */
    static const uint8_t idx_oob[3] = { 3, 4, 8 };   /* 3, 8, 17 of 16 */
    sign_case(16, TVS_MASK_INDEX, 3, idx_oob, 3, "index 17 is out of range");
    static const uint8_t idx_short[2] = { 1, 2 };
    sign_case(16, TVS_MASK_INDEX, 3, idx_short, 2, "ends after 2 of 3");
    static const uint8_t idx_trail[3] = { 1, 2, 0 };
    sign_case(16, TVS_MASK_INDEX, 2, idx_trail, 3, "trailing");
    static const uint8_t overlong[3] = { 0x81, 0x00, 0x00 };
    sign_case(16, TVS_MASK_INDEX, 2, overlong, 3, "overlong");
    static const uint8_t big[6] = { 0xff, 0xff, 0xff, 0xff, 0x1f, 0x00 };
    sign_case(16, TVS_MASK_INDEX, 2, big, 6, "exceeds 2^32");
    static const uint8_t cut[2] = { 0x00, 0x80 };
    sign_case(16, TVS_MASK_INDEX, 2, cut, 2, "truncated");
    /* RUNS */
    static const uint8_t short_runs[2] = { 2, 4 };   /* 6 of 16 */
    sign_case(16, TVS_MASK_RUNS, 4, short_runs, 2, "mask runs sum to 6, not 16");
    static const uint8_t long_runs[3] = { 2, 4, 11 };   /* 17 of 16 */
    sign_case(16, TVS_MASK_RUNS, 4, long_runs, 3, "more than 16");
    static const uint8_t empty_kept[3] = { 2, 0, 14 };
    sign_case(16, TVS_MASK_RUNS, 1, empty_kept, 3, "empty kept run");
    static const uint8_t kept_sum[2] = { 2, 14 };
    sign_case(16, TVS_MASK_RUNS, 13, kept_sum, 2, "kept runs sum to more than 13");
    sign_case(16, TVS_MASK_RUNS, 15, kept_sum, 2, "kept runs sum to 14, not 15");
    static const uint8_t trail_runs[4] = { 2, 14, 0, 0 };
    sign_case(16, TVS_MASK_RUNS, 14, trail_runs, 4, "trailing");
    static const uint8_t nonzero_tail[3] = { 2, 14, 1 };
    sign_case(16, TVS_MASK_RUNS, 14, nonzero_tail, 3, "mask runs sum to 17, not 16");
    static const uint8_t overlong_run[4] = { 0x82, 0x00, 14, 0 };
    sign_case(16, TVS_MASK_RUNS, 14, overlong_run, 3, "overlong");
}

Test(lossy, sign_payloads_that_break_a_rule_are_corrupt)
{
    tvs_buf b = TVS_BUF_INIT;
    put_f32(&b, INFINITY);
    put_raw_mask(&b, TVS_MASK_ALL, 8, NULL, 0);
    tt_ok(tvs_buf_put_u8(&b, 0));
    expect_corrupt(TVS_LC_SIGN, &b, 8, "sign scale is not finite");
    tvs_buf_dispose(&b);
    put_f32(&b, 1);
    put_raw_mask(&b, TVS_MASK_ALL, 6, NULL, 0);
    tt_ok(tvs_buf_put_u8(&b, 0x40));   /* bit 6 of 6 kept */
    expect_corrupt(TVS_LC_SIGN, &b, 6, "sign padding bits");
    tvs_buf_dispose(&b);
    put_f32(&b, 1);
    put_raw_mask(&b, TVS_MASK_ALL, 9, NULL, 0);
    tt_ok(tvs_buf_put_u8(&b, 0));   /* 2 sign bytes needed */
    expect_corrupt(TVS_LC_SIGN, &b, 9, "sign bits truncated");
    tvs_buf_dispose(&b);
}

/* A BLOCKQ body of m values with the given header, scales and indices. */
static void put_body(tvs_buf *b, uint8_t bits, uint16_t block, uint8_t flags, float mul,
                     size_t m, uint16_t scale, uint8_t idx_last)
{
    tt_ok(tvs_buf_put_u8(b, bits));
    put_u16(b, block);
    tt_ok(tvs_buf_put_u8(b, flags));
    put_f32(b, mul);
    if (flags & TVS_BQ_CODEBOOK)
        for (unsigned q = 0; q < (1u << bits); q++)
            put_f32(b, (float)q);
    size_t nb = (m + block - 1) / block;
    for (size_t i = 0; i < nb; i++)
        put_u16(b, scale);
    if (flags & TVS_BQ_ZERO)
        for (size_t i = 0; i < nb; i++)
            put_u16(b, 0x3c00);
    size_t nbytes = (m * bits + 7) / 8;
    for (size_t i = 0; i + 1 < nbytes; i++)
        tt_ok(tvs_buf_put_u8(b, 0x55));
    tt_ok(tvs_buf_put_u8(b, idx_last));
}

static void bq_case(uint8_t bits, uint16_t block, uint8_t flags, float mul, uint16_t scale,
                    uint8_t idx_last, const char *rule)
{
    tvs_buf b = TVS_BUF_INIT;
    put_body(&b, bits, block, flags, mul, 20, scale, idx_last);
    expect_corrupt(TVS_LC_BLOCKQ, &b, 20, rule);
    tvs_buf_dispose(&b);
}

Test(lossy, blockq_bodies_that_break_a_rule_are_corrupt)
{
    tvs_buf ok = TVS_BUF_INIT;
    put_body(&ok, 3, 8, 3, 1.0f, 20, 0x3c00, 0x0f);   /* 60 bits: 4 used in the last byte */
    float d[20];
    tt_ok(tvs_lossy_unit_decode(d, 20, TVS_LC_BLOCKQ, (tvs_span){ ok.ptr, ok.len }));
    tvs_buf_dispose(&ok);
    bq_case(0, 8, 0, 1, 0x3c00, 0, "bits 0 not in 1..8");
    bq_case(9, 8, 0, 1, 0x3c00, 0, "bits 9 not in 1..8");
    bq_case(2, 7, 0, 1, 0x3c00, 0, "block 7 not in 8..4096");
    bq_case(2, 4097, 0, 1, 0x3c00, 0, "block 4097");
    bq_case(2, 8, 4, 1, 0x3c00, 0, "unknown blockq flags 0x04");
    bq_case(2, 8, 0, NAN, 0x3c00, 0, "blockq mul is not finite");
    bq_case(2, 8, 0, 1, 0x7c00, 0, "scale of block 0 is not finite");
    bq_case(2, 8, 0, 1, 0xfe00, 0, "scale of block 0 is not finite");
    bq_case(3, 8, 0, 1, 0x3c00, 0x10, "padding bits");
    /* a NaN codebook level, a NaN zero point */
    tvs_buf b = TVS_BUF_INIT;
    put_body(&b, 1, 8, TVS_BQ_CODEBOOK, 1, 20, 0x3c00, 0);
    memcpy(b.ptr + 8 + 4, (uint8_t[]){ 0, 0, 0xc0, 0x7f }, 4);
    expect_corrupt(TVS_LC_BLOCKQ, &b, 20, "codebook level 1 is not finite");
    tvs_buf_dispose(&b);
    put_body(&b, 2, 8, TVS_BQ_ZERO, 1, 20, 0x3c00, 0);
    memcpy(b.ptr + 8 + 3 * 2 + 2 * 2, (uint8_t[]){ 0x01, 0x7c }, 2);
    expect_corrupt(TVS_LC_BLOCKQ, &b, 20, "zero point of block 2 is not finite");
    tvs_buf_dispose(&b);
    /* SPARSEQ: the body covers the k kept values, not n */
    put_raw_mask(&b, TVS_MASK_ALL, 20, NULL, 0);
    put_body(&b, 2, 8, 0, 1, 21, 0x3c00, 0);
    expect_corrupt(TVS_LC_SPARSEQ, &b, 20, "trailing");
    tvs_buf_dispose(&b);
    put_raw_mask(&b, TVS_MASK_ALL, 20, NULL, 0);
    put_body(&b, 2, 8, 0, 1, 16, 0x3c00, 0);
    expect_corrupt(TVS_LC_SPARSEQ, &b, 20, "blockq indices truncated");
    tvs_buf_dispose(&b);
}

Test(lossy, lowrankq_decodes_to_the_scaled_product_of_its_dequantized_factors)
{
    /* 4 x 5, rank 2: U's columns, then V's rows, each an 8-bit body */
    tvs_buf b = TVS_BUF_INIT;
    tt_ok(tvs_buf_put_le32(&b, 4));
    tt_ok(tvs_buf_put_le32(&b, 5));
    tt_ok(tvs_buf_put_le32(&b, 2));
    put_f32(&b, 0.75f);
    float u[2][4], v[2][5];
    static const float mul[4] = { 0.5f, -0.25f, 2.0f, 0.125f };
    static const uint8_t last[4] = { 200, 7, 255, 0 };
    for (int t = 0; t < 4; t++) {
        size_t m = t < 2 ? 4 : 5;
        put_body(&b, 8, 8, 0, mul[t], m, 0x3c00, last[t]);
        for (size_t i = 0; i < m; i++) {
            float q = (float)(i + 1 < m ? 0x55 : last[t]) - 127.5f;
            if (t < 2)
                u[t][i] = mul[t] * (1.0f * q + 0.0f);
            else
                v[t - 2][i] = mul[t] * (1.0f * q + 0.0f);
        }
    }
    float dh[20];
    tt_ok(tvs_lossy_unit_decode(dh, 20, TVS_LC_LOWRANKQ, (tvs_span){ b.ptr, b.len }));
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 5; j++) {
            float acc = 0;
            acc = fmaf(u[0][i], v[0][j], acc);
            acc = fmaf(u[1][i], v[1][j], acc);
            cr_assert_eq(dh[i * 5 + j], 0.75f * acc, "(%d, %d): %g", i, j, (double)dh[i * 5 + j]);
        }
    tvs_lossy_unit lu = { 20, 0, 0, TVS_LC_LOWRANKQ, { b.ptr, b.len } };
    char s[80];
    tt_ok(tvs_lossy_unit_describe(s, sizeof s, &lu));
    cr_assert_str_eq(s, "rank=2 bits=8 4x5");
    tvs_buf_dispose(&b);
}


/*
 * A LOWRANKQ payload of 8-bit bodies with pseudo-random indices and
 * scales, so the products are inexact and fused multiply-adds differ from
 * a product then a sum; the dequantized factors go to u (rows x rank) and
 * v (rank x cols), computed as SPEC.md 2.7 says.
 */
static void put_lrq_random(tvs_buf *b, float *u, float *v, uint32_t rows, uint32_t cols,
                           uint32_t rank, float scale, uint64_t seed)
{
    uint64_t st = seed;
    tt_ok(tvs_buf_put_le32(b, rows));
    tt_ok(tvs_buf_put_le32(b, cols));
    tt_ok(tvs_buf_put_le32(b, rank));
    put_f32(b, scale);
    for (uint32_t t = 0; t < 2 * rank; t++) {
        int is_u = t < rank;
        size_t m = is_u ? rows : cols, nb = (m + 7) / 8;
        float mul = 0.01f * (float)(tt_lcg(&st) % 1000 + 1) / 997.0f;
        uint16_t sc[8192 / 8];
        tt_ok(tvs_buf_put_u8(b, 8));
        put_u16(b, 8);
        tt_ok(tvs_buf_put_u8(b, 0));
        put_f32(b, mul);
        for (size_t k = 0; k < nb; k++) {   /* f16 in [0.5, 2): exponent 14 or 15 */
            sc[k] = (uint16_t)(0x3800 | (tt_lcg(&st) & 0x7ff));
            put_u16(b, sc[k]);
        }
        for (size_t x = 0; x < m; x++) {
            uint8_t q = (uint8_t)tt_lcg(&st);
            tt_ok(tvs_buf_put_u8(b, q));
            float val = mul * (tvs_f16_to_f32(sc[x / 8]) * ((float)q - 127.5f) + 0.0f);
            if (is_u)
                u[x * rank + t] = val;
            else
                v[(size_t)(t - rank) * cols + x] = val;
        }
    }
}

/*
 * The two rules' products, straight from SPEC.md 2.7: fused[i][j] =
 * scale * (fmaf over the ranks), plain[i][j] = scale * (each product, then
 * each sum, rounded: the version 1 rule). Returns the elements where the
 * two sums differ (before the scale).
 */
static size_t lrq_products(float *fused, float *plain, const float *u, const float *v,
                           uint32_t rows, uint32_t cols, uint32_t rank, float scale)
{
    size_t differ = 0;
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++) {
            float acc = 0.0f, sum = 0.0f;
            for (uint32_t r = 0; r < rank; r++) {
                acc = fmaf(u[i * rank + r], v[(size_t)r * cols + j], acc);
                float p = u[i * rank + r] * v[(size_t)r * cols + j];
                sum = sum + p;
            }
            fused[i * cols + j] = scale * acc;
            if (plain)
                plain[i * cols + j] = scale * sum;
            differ += fbits(acc) != fbits(sum);
        }
    return differ;
}

Test(lossy, lowrankq_decodes_with_fused_multiply_adds_at_every_simd_level)
{
    /* rows and columns off the kernels' blocks (AVX2: 6 rows, 16 and 8
     * columns, slabs of 64; AVX-512: 8 rows, 48 columns and masked tails of
     * 1 to 47, slabs of 192), ranks of every residue, units wider than a
     * piece's six or eight rows */
    static const uint32_t shapes[][3] = {
        { 2, 16, 1 },     { 7, 9, 3 },      { 13, 37, 9 },     { 6, 24, 4 },
        { 25, 41, 15 },   { 19, 131, 16 },  { 12, 600, 11 },   { 100, 100, 50 },
        { 31, 64, 20 },   { 7, 700, 6 },    { 13, 1500, 12 },  { 40, 257, 33 },
        { 17, 48, 5 },    { 9, 96, 7 },     { 8, 200, 3 },     { 15, 193, 10 },
        { 23, 47, 8 },    { 16, 33, 2 },    { 3, 385, 2 },     { 64, 240, 17 },
    };
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++) {
        const uint32_t rows = shapes[c][0], cols = shapes[c][1], rank = shapes[c][2];
        const size_t n = (size_t)rows * cols;
        float *u = malloc((size_t)rows * rank * sizeof *u);
        float *v = malloc((size_t)rank * cols * sizeof *v);
        float *want = malloc(n * sizeof *want), *got = malloc(n * sizeof *got);
        uint8_t *base = malloc(n * 4), *out = malloc(n * 4), *ref = malloc(n * 4);
        cr_assert(u && v && want && got && base && out && ref);
        tvs_buf b = TVS_BUF_INIT, chunk = TVS_BUF_INIT;
        put_lrq_random(&b, u, v, rows, cols, rank, 0.7f + 0.01f * (float)c, 500 + c);
        size_t inexact =
            lrq_products(want, NULL, u, v, rows, cols, rank, 0.7f + 0.01f * (float)c);
        if (rank > 1)
            cr_assert_gt(inexact, 0, "shape %zu: fma and mul+add agree everywhere", c);
        fill_base(base, n, TVS_DTYPE_BF16, 600 + c);
        ref_apply(ref, base, want, n, TVS_DTYPE_BF16);
        tt_ok(tvs_lossy_chunk_begin(&chunk, 1));
        chunk_unit(&chunk, (uint32_t)n, TVS_LC_LOWRANKQ, b.ptr, b.len);
        static const int levels[] = { 0, 2, 3, 1 };
        for (size_t k = 0; k < 4; k++) {
            tvs__lossy_simd = levels[k];
            memset(got, 0xff, n * sizeof *got);   /* NaNs: nothing left from the last level */
            tt_ok(tvs_lossy_unit_decode(got, n, TVS_LC_LOWRANKQ, (tvs_span){ b.ptr, b.len }));
            for (size_t i = 0; i < n; i++)
                cr_assert_eq(fbits(got[i]), fbits(want[i]), "%ux%u rank %u, simd %d: element "
                             "%zu is %a, not %a", rows, cols, rank, levels[k], i,
                             (double)got[i], (double)want[i]);
            memcpy(out, base, n * 2);
            tt_ok(tvs_lossy_chunk_apply(out, TVS_DTYPE_BF16, n,
                                        (tvs_span){ chunk.ptr, chunk.len }));
            cr_assert_arr_eq(out, ref, n * 2, "%ux%u rank %u, simd %d: apply differs", rows,
                             cols, rank, levels[k]);
        }
        tvs__lossy_simd = 1;
        tvs_buf_dispose(&b);
        tvs_buf_dispose(&chunk);
        free(u);
        free(v);
        free(want);
        free(got);
        free(base);
        free(out);
        free(ref);
    }
}

/*
 * Chunks written before version 2 keep decoding to what they decoded to
 * then: in a version 1 chunk, LOWRANKQ sums its products by mul+add (each
 * product and sum rounded, like LOWRANK), in version 2 by fused
 * multiply-adds; the same payload, only the version byte differs.
 */
Test(lossy, a_version_1_chunk_decodes_lowrankq_by_mul_add_and_version_2_by_fma)
{
    const uint32_t rows = 21, cols = 53, rank = 9;
    const size_t n = (size_t)rows * cols;
    const float scale = 0.8125f;
    float *u = malloc((size_t)rows * rank * sizeof *u), *v = malloc((size_t)rank * cols * 4);
    float *fused = malloc(n * 4), *plain = malloc(n * 4), *got = malloc(n * 4);
    uint8_t *base = malloc((n + 5) * 4), *out = malloc((n + 5) * 4), *ref = malloc((n + 5) * 4);
    cr_assert(u && v && fused && plain && got && base && out && ref);
    tvs_buf b = TVS_BUF_INIT, chunk = TVS_BUF_INIT;
    put_lrq_random(&b, u, v, rows, cols, rank, scale, 77);
    size_t differ = 0;
    lrq_products(fused, plain, u, v, rows, cols, rank, scale);
    for (size_t i = 0; i < n; i++)
        differ += fbits(fused[i]) != fbits(plain[i]);
    cr_assert_gt(differ, n / 10, "fma and mul+add differ at only %zu of %zu", differ, n);
    /* a ZERO unit first, so the LOWRANKQ unit starts mid-chunk */
    tt_ok(tvs_lossy_chunk_begin(&chunk, 2));
    cr_assert_eq(chunk.ptr[0], 2, "chunks are written at version 2");
    chunk_unit(&chunk, 5, TVS_LC_ZERO, NULL, 0);
    chunk_unit(&chunk, (uint32_t)n, TVS_LC_LOWRANKQ, b.ptr, b.len);
    static const int levels[] = { 0, 2, 3, 1 };
    for (uint8_t version = 1; version <= 2; version++) {
        const float *want = version == 1 ? plain : fused;
        chunk.ptr[0] = version;
        for (tvs_dtype dt = TVS_DTYPE_F16; dt <= TVS_DTYPE_F32; dt++) {
            const size_t w = dt == TVS_DTYPE_F32 ? 4 : 2;
            fill_base(base, n + 5, dt, 90 + dt);
            float zero5[5] = { 0 };
            ref_apply(ref, base, zero5, 5, dt);
            ref_apply(ref + 5 * w, base + 5 * w, want, n, dt);
            for (size_t k = 0; k < 4; k++) {
                tvs__lossy_simd = levels[k];
                memcpy(out, base, (n + 5) * w);
                tt_ok(tvs_lossy_chunk_apply(out, dt, n + 5, (tvs_span){ chunk.ptr, chunk.len }));
                cr_assert_arr_eq(out, ref, (n + 5) * w, "version %u, %s, simd %d: apply differs",
                                 version, tvs_dtype_name(dt), levels[k]);
            }
        }
        for (size_t k = 0; k < 4; k++) {
            tvs__lossy_simd = levels[k];
            memset(got, 0xff, n * sizeof *got);
            tt_ok(tvs__lossy_unit_decode_v(got, n, TVS_LC_LOWRANKQ, (tvs_span){ b.ptr, b.len },
                                           version));
            for (size_t i = 0; i < n; i++)
                cr_assert_eq(fbits(got[i]), fbits(want[i]), "version %u, simd %d: element %zu "
                             "is %a, not %a", version, levels[k], i, (double)got[i],
                             (double)want[i]);
        }
        tvs__lossy_simd = 1;
    }
    /* the public unit decoder has no version: the current rule */
    tt_ok(tvs_lossy_unit_decode(got, n, TVS_LC_LOWRANKQ, (tvs_span){ b.ptr, b.len }));
    cr_assert_arr_eq(got, fused, n * 4);
    /* a version no chunk has is refused, by apply, the walk and the versioned decoder */
    for (int version = 0; version <= 3; version += 3) {
        chunk.ptr[0] = (uint8_t)version;
        tt_fails(tvs_lossy_chunk_apply(out, TVS_DTYPE_F32, n + 5,
                                       (tvs_span){ chunk.ptr, chunk.len }), TVS_ECORRUPT);
        tt_msg_has(version ? "lossy chunk: version 3, expected 1..2"
                           : "lossy chunk: version 0, expected 1..2");
        tt_fails(tvs_lossy_chunk_units((tvs_span){ chunk.ptr, chunk.len }, TVS_DTYPE_F32, n + 5,
                                       walk_cb, NULL), TVS_ECORRUPT);
        tt_msg_has("expected 1..2");
        tt_fails(tvs__lossy_unit_decode_v(got, n, TVS_LC_LOWRANKQ, (tvs_span){ b.ptr, b.len },
                                          (uint8_t)version), TVS_EINVAL);
    }
    tvs_buf_dispose(&b);
    tvs_buf_dispose(&chunk);
    free(u), free(v), free(fused), free(plain), free(got);
    free(base), free(out), free(ref);
}

static void lrq_case(uint32_t rows, uint32_t cols, uint32_t rank, size_t n, uint8_t bits,
                     float mul, uint16_t scale, int cut, const char *rule)
{
    tvs_buf b = TVS_BUF_INIT;
    tt_ok(tvs_buf_put_le32(&b, rows));
    tt_ok(tvs_buf_put_le32(&b, cols));
    tt_ok(tvs_buf_put_le32(&b, rank));
    put_f32(&b, 1);
    for (uint32_t t = 0; t < 2 * TVS_MIN(rank, 4); t++)
        put_body(&b, bits, 8, 0, mul, t < rank ? rows : cols, scale, 0);
    if (cut > 0)
        b.len -= (size_t)cut;
    else if (cut < 0)
        tt_ok(tvs_buf_put_u8(&b, 0));
    expect_corrupt(TVS_LC_LOWRANKQ, &b, n, rule);
    tvs_buf_dispose(&b);
}

Test(lossy, lowrankq_payloads_that_break_a_rule_are_corrupt)
{
    lrq_case(4, 5, 1, 21, 2, 1, 0x3c00, 0, "lowrankq shape 4x5 does not hold 21 elements");
    lrq_case(4, 5, 0, 20, 2, 1, 0x3c00, 0, "lowrankq rank 0 not in 1..1024");
    lrq_case(4, 5, 3, 20, 2, 1, 0x3c00, 0, "factors hold 27 values, more than the unit's 20");
    lrq_case(4, 5, 2, 20, 9, 1, 0x3c00, 0, "blockq bits 9");
    lrq_case(4, 5, 2, 20, 2, 1, 0x3c00, 1, "truncated");
    lrq_case(4, 5, 2, 20, 2, 1, 0x3c00, -1, "trailing");
    lrq_case(4, 5, 2, 20, 2, 1, 0x7c00, 0, "blockq scale of block 0 is not finite");
    lrq_case(4, 5, 2, 20, 8, 3e38f, 0x7bff, 0, "lowrankq U factor value 0 is not finite");
    lrq_case(4, 5, 2, 20, 2, 1, 0x3c00, 20, "lowrankq factor bodies truncated");
}

Test(lossy, lowrank_payloads_that_break_a_rule_are_corrupt)
{
    struct {
        uint32_t rows, cols, rank;
        uint8_t fdt;
        float scale;
        uint16_t bad;   /* one factor element */
        const char *rule;
    } cases[] = {
        { 4, 5, 1, TVS_DTYPE_F16, 1, 0x3c00, "does not hold 24 elements" },
        { 4, 6, 0, TVS_DTYPE_F16, 1, 0x3c00, "rank 0 not in" },
        { 4, 6, 1025, TVS_DTYPE_F16, 1, 0x3c00, "rank 1025" },
        { 4, 6, 1, TVS_DTYPE_F64, 1, 0x3c00, "dtype 13" },
        { 4, 6, 1, TVS_DTYPE_F16, NAN, 0x3c00, "lowrank scale is not finite" },
        { 4, 6, 1, TVS_DTYPE_F16, 1, 0x7e00, "factor U element 2 is not finite" },
        { 4, 6, 1, TVS_DTYPE_BF16, 1, 0xff80, "factor U element 2 is not finite" },
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        tvs_buf b = TVS_BUF_INIT;
        tt_ok(tvs_buf_put_le32(&b, cases[c].rows));
        tt_ok(tvs_buf_put_le32(&b, cases[c].cols));
        tt_ok(tvs_buf_put_le32(&b, cases[c].rank));
        tt_ok(tvs_buf_put_u8(&b, cases[c].fdt));
        put_f32(&b, cases[c].scale);
        uint32_t r = TVS_MIN(cases[c].rank, 4);
        for (uint32_t i = 0; i < (cases[c].rows + cases[c].cols) * r; i++)
            put_u16(&b, i == 2 ? cases[c].bad : 0x3c00);
        expect_corrupt(TVS_LC_LOWRANK, &b, 24, cases[c].rule);
        tvs_buf_dispose(&b);
    }
    /* an f32 factor that is not finite; a truncated V */
    tvs_buf b = TVS_BUF_INIT;
    tt_ok(tvs_buf_put_le32(&b, 2));
    tt_ok(tvs_buf_put_le32(&b, 3));
    tt_ok(tvs_buf_put_le32(&b, 1));
    tt_ok(tvs_buf_put_u8(&b, TVS_DTYPE_F32));
    put_f32(&b, 1);
    put_f32(&b, 1);
    put_f32(&b, 1);
    put_f32(&b, 1);
    put_f32(&b, INFINITY);
    put_f32(&b, 1);
    expect_corrupt(TVS_LC_LOWRANK, &b, 6, "factor V element 1 is not finite");
    b.len -= 4;
    expect_corrupt(TVS_LC_LOWRANK, &b, 6, "lowrank V truncated");
    tvs_buf_dispose(&b);
}

Test(lossy, unit_decode_refuses_unknown_codecs_and_bad_sizes)
{
    float d[4];
    uint8_t p[4] = { 0 };
    tt_fails(tvs_lossy_unit_decode(d, 4, TVS_LC_COUNT, (tvs_span){ p, 4 }), TVS_ECORRUPT);
    tt_msg_has("unknown unit codec 7");
    tt_fails(tvs_lossy_unit_decode(d, 0, TVS_LC_ZERO, (tvs_span){ p, 0 }), TVS_ECORRUPT);
    tt_fails(tvs_lossy_unit_decode(d, 4, TVS_LC_ZERO, (tvs_span){ p, 1 }), TVS_ECORRUPT);
    tt_msg_has("trailing");
    tt_fails(tvs_lossy_unit_decode(d, 4, TVS_LC_VERBATIM, (tvs_span){ p, 4 }), TVS_EINVAL);
    tt_ok(tvs_lossy_unit_decode(d, 4, TVS_LC_ZERO, (tvs_span){ p, 0 }));
    for (int i = 0; i < 4; i++)
        cr_assert_eq(d[i], 0.0f);
}

Test(lossy, apply_refuses_dtypes_other_than_bf16_f16_and_f32)
{
    tvs_buf chunk = TVS_BUF_INIT;
    tt_ok(tvs_lossy_chunk_begin(&chunk, 1));
    chunk_unit(&chunk, 4, TVS_LC_ZERO, NULL, 0);
    uint8_t dst[32] = { 0 };
    tt_fails(tvs_lossy_chunk_apply(dst, TVS_DTYPE_F64, 4, (tvs_span){ chunk.ptr, chunk.len }),
             TVS_EINVAL);
    cr_assert(tvs_lossy_dtype_ok(TVS_DTYPE_BF16) && tvs_lossy_dtype_ok(TVS_DTYPE_F16) &&
              tvs_lossy_dtype_ok(TVS_DTYPE_F32) && !tvs_lossy_dtype_ok(TVS_DTYPE_I16));
    tvs_buf_dispose(&chunk);
}

/* ---- names and descriptions */

Test(lossy, names_and_descriptions_say_what_is_stored)
{
    cr_assert_str_eq(tvs_lossy_codec_name(TVS_LC_SPARSEQ), "sparseq");
    cr_assert_str_eq(tvs_lossy_codec_name(99), "?");
    cr_assert_str_eq(tvs_mask_layout_name(TVS_MASK_RUNS), "runs");
    cr_assert_str_eq(tvs_mask_layout_name(9), "?");
    size_t n = 1000;
    float *d = malloc(n * sizeof *d);
    fill_gauss(d, n, 1.0, 170);
    struct {
        tvs_lossy_params p;
        const char *want;
    } cases[] = {
        { bq(2, 64, TVS_BQ_ZERO), "bits=2 block=64 zp" },
        { { .codec = TVS_LC_SIGN, .density = 0.1f }, "density=0.100 mask=index" },
        { { .codec = TVS_LC_SPARSEQ, .density = 0.5f, .bits = 4, .block = 32 },
          "density=0.500 mask=bitmap bits=4 block=32" },
        { { .codec = TVS_LC_LOWRANK, .rows = 20, .cols = 50, .rank = 8,
            .factor_dtype = TVS_DTYPE_BF16 },
          "rank=8 bf16 20x50" },
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        size_t len;
        uint8_t *e = enc(&len, &cases[c].p, d, n);
        tvs_lossy_unit u = { (uint32_t)n, 0, 0, cases[c].p.codec, { e, len } };
        char s[80];
        tt_ok(tvs_lossy_unit_describe(s, sizeof s, &u));
        cr_assert_str_eq(s, cases[c].want);
        tt_fails(tvs_lossy_unit_describe(s, 5, &u), TVS_EBUFS);
        u.payload.len = 3;
        tt_fails(tvs_lossy_unit_describe(s, sizeof s, &u), TVS_ECORRUPT);
        free(e);
    }
    free(d);
}

/* ---- golden vectors: these ids pin the encoders' bytes */

Test(lossy, golden_encodings_never_change)
{
    /* the data come from the LCG alone (no libm), so they are the same everywhere */
    size_t n = 2048;
    float *d = malloc(n * sizeof *d);
    uint64_t st = 999;
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (int k = 0; k < 4; k++)
            s += uni(&st);
        d[i] = (float)((s - 2) * (i % 7 == 0 ? 1e-2 : 1e-3));
    }
    struct {
        tvs_lossy_params p;
        const char *id;
    } cases[] = {
        { bq(2, 64, 0), "6947cf4750ce8ca140e917e496cdcc65" },
        { bq(4, 64, TVS_BQ_CODEBOOK | TVS_BQ_ZERO), "b31566781a5ab535fecba3c65ad6ccc5" },
        { { .codec = TVS_LC_SIGN, .density = 0.1f }, "66879242e0c4e6b104c6789356a4b45f" },
        { { .codec = TVS_LC_SPARSEQ, .density = 0.3f, .bits = 3, .block = 32 },
          "a253de1fb2dc69e5ba23e89e9bc7ea12" },
        { { .codec = TVS_LC_LOWRANK, .rows = 32, .cols = 64, .rank = 4,
            .factor_dtype = TVS_DTYPE_BF16 },
          "e4d6493f1efc957e5ba6b2bd387fec34" },
        { { .codec = TVS_LC_LOWRANKQ, .rows = 32, .cols = 64, .rank = 21, .rate = 1.0f },
          "a91fb45141988e9d1ba85b69629a02e8" },
        /* tall, and the subspace iteration (the other all eigenvectors), unbiased */
        { { .codec = TVS_LC_LOWRANKQ, .rows = 64, .cols = 32, .rank = 8, .rate = 1.5f,
            .unbiased = 1 },
          "6f453cb9388df582846f1969d4c0eb04" },
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        size_t len;
        uint8_t *e = enc(&len, &cases[c].p, d, n);
        tvs_id id;
        char hex[TVS_ID_HEX + 1];
        tvs_id_of(&id, e, len);
        tvs_id_hex(hex, &id);
        cr_assert_str_eq(hex, cases[c].id, "golden %zu (%s): id %s", c,
                         tvs_lossy_codec_name(cases[c].p.codec), hex);
        free(e);
    }
    free(d);
}
