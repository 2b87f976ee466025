/*
 * Merge values (SPEC.md 4.3), bit for bit. Tiny BF16 tensors with chosen
 * bit patterns are stored as a base B, a continued base B2 (--parent B),
 * three fine-tunes d1, d2, d3 (deltas of B) and the first two fine-tunes
 * again as full models F1, F2. Each query's output is compared with values
 * computed here, independently, from the SPEC: f32 arithmetic in the order
 * written, one rounding per product and per sum, then rounding to the
 * output dtype to nearest, ties to even.
 *
 * Tensors (names in bytewise order):
 *   d  64 weight-like values; fine-tunes move some by 1-4 ulps (dare masks)
 *   r  16 values for rounding: results exactly halfway between two BF16
 *      numbers, F16 subnormals and F16 overflow
 *   t  8 values, base 3.0 and deltas k/64 (exact), for ties/breadcrumbs by hand
 */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/model.h"
#include "format/dtype.h"
#include "format/safetensors.h"
#include "query/plan.h"
#include "tests/support/support.h"

static char *dir;
static tvs_store *s;

enum { TD, TR, TT, NTENS };
enum { MB, M1, M2, M3, MB2, NMOD };
static const char *const TNAME[NTENS] = { "d", "r", "t" };
static const size_t TLEN[NTENS] = { 64, 16, 8 };
static uint16_t V[NMOD][NTENS][64];   /* BF16 bit patterns */

/* ties/breadcrumbs deltas of tensor t, in units of 1/64 */
static const int TK[3][8] = {
    { 8, -4, 2, 4, -6, 5, 0, 1 },
    { -2, 3, 7, -4, 6, -5, 0, 2 },
    { 1, -1, 1, 1, 1, 0, -3, -1 },
};

/* ---- reference conversions (independent of format/dtype.c) */

static float bf(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* f32 -> BF16, round to nearest, ties to even */
static uint16_t ref_bf16(float f)
{
    uint32_t u = bits_of(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)(u >> 16 | 0x40);
    u += 0x7fffu + (u >> 16 & 1);
    return (uint16_t)(u >> 16);
}

/* f32 -> F16, round to nearest, ties to even (exact in double) */
static uint16_t ref_f16(float f)
{
    uint16_t sign = (uint16_t)(bits_of(f) >> 31 << 15);
    double a = fabs((double)f);
    if (isnan(f))
        return (uint16_t)(sign | 0x7e00);
    if (a < ldexp(1.0, -14)) {               /* subnormal (or zero) */
        double q = nearbyint(a * ldexp(1.0, 24));
        return (uint16_t)(sign | (uint16_t)q);   /* q == 1024 is the smallest normal */
    }
    int e;
    frexp(a, &e);
    e -= 1;                                   /* a in [2^e, 2^(e+1)) */
    double q = nearbyint(a * ldexp(1.0, 10 - e));
    if (q == 2048) {
        q = 1024;
        e++;
    }
    if (e + 15 >= 31)
        return (uint16_t)(sign | 0x7c00);
    return (uint16_t)(sign | (uint16_t)((e + 15) << 10) | (uint16_t)(q - 1024));
}

/* ---- the models */

static void make_values(void)
{
    uint64_t st = 12345;
    /* d: weights; fine-tunes move two of three elements by 1-4 ulps */
    tt_fill_bf16(V[MB][TD], 64, 77);
    for (int m = M1; m <= M3; m++)
        for (int i = 0; i < 64; i++) {
            uint32_t r = tt_lcg(&st);
            uint16_t v = V[MB][TD][i];
            int k = (int)(r >> 8 & 3) + 1;
            if (r % 3)
                v = (uint16_t)(r >> 12 & 1 ? v + k : v - k);
            V[m][TD][i] = v;
        }
    for (int i = 0; i < 64; i++)
        V[MB2][TD][i] = (uint16_t)(V[MB][TD][i] + (i % 4 == 0));

    /* r: hand-picked rounding cases, then a ramp */
    static const uint16_t rb[9] = { 0x3f80, 0x3f81, 0xbf80, 0x33c0, 0x3300,
                                    0x33a0, 0x477f, 0x4780, 0x3f80 };
    static const uint16_t r1[9] = { 0x3f81, 0x3f82, 0xbf81, 0x33c0, 0x3300,
                                    0x33a0, 0x477f, 0x4780, 0x3f82 };
    static const uint16_t r2[9] = { 0x3f80, 0x3f81, 0xbf80, 0x33c0, 0x3300,
                                    0x33a0, 0x477f, 0x4780, 0x3f7f };
    for (int i = 0; i < 16; i++) {
        uint16_t b = i < 9 ? rb[i] : (uint16_t)(0x3e00 + 17 * i);
        V[MB][TR][i] = b;
        V[M1][TR][i] = i < 9 ? r1[i] : (uint16_t)(b + (i % 5) - 2);
        V[M2][TR][i] = i < 9 ? r2[i] : (uint16_t)(b + (i % 3) - 1);
        V[M3][TR][i] = i < 9 ? (uint16_t)(b + (i == 8 ? 3 : 0)) : (uint16_t)(b + 3);
        V[MB2][TR][i] = (uint16_t)(b + (i % 2));
    }

    /* t: base 3.0, fine-tunes 3 + k/64 (bit pattern 0x4040 + k in [2, 4)) */
    for (int i = 0; i < 8; i++) {
        V[MB][TT][i] = 0x4040;
        V[MB2][TT][i] = 0x4041;
        for (int k = 0; k < 3; k++)
            V[M1 + k][TT][i] = (uint16_t)(0x4040 + TK[k][i]);
    }
}

static void write_model(int m, const char *name)
{
    tt_tensor t[NTENS];
    for (int k = 0; k < NTENS; k++)
        t[k] = (tt_tensor){ TNAME[k], "BF16", 1, { TLEN[k] } };
    uint64_t len;
    char *json = tt_st_header(t, NTENS, "{\"format\":\"pt\"}", &len);
    uint8_t data[2 * (64 + 16 + 8)];
    cr_assert_eq(len, sizeof data);
    size_t o = 0;
    for (int k = 0; k < NTENS; k++)
        for (size_t i = 0; i < TLEN[k]; i++) {
            data[o++] = (uint8_t)V[m][k][i];
            data[o++] = (uint8_t)(V[m][k][i] >> 8);
        }
    char *path = tt_fmt("%s/%s.safetensors", dir, name);
    cr_assert_eq(tt_write_st_raw(path, json, data, len), 0);
    free(path);
    free(json);
}

static void import(const char *file, const char *ref, const char *base, const char *parent)
{
    char *path = tt_fmt("%s/%s.safetensors", dir, file);
    tt_ok(tt_import_with(s, path, ref, base, parent, 1));
    free(path);
}

static void setup(void)
{
    tt_ok(tt_store_new(&dir, &s));
    make_values();
    write_model(MB, "B");
    write_model(M1, "ft1");
    write_model(M2, "ft2");
    write_model(M3, "ft3");
    write_model(MB2, "B2");
    import("B", "B", NULL, NULL);
    import("B2", "B2", NULL, "B");
    import("ft1", "d1", "B", NULL);
    import("ft2", "d2", "B", NULL);
    import("ft3", "d3", "B", NULL);
    import("ft1", "F1", NULL, NULL);
    import("ft2", "F2", NULL, NULL);
}

static void teardown(void)
{
    tvs_store_close(s);
    tt_rmtree(dir);
    free(dir);
    tt_leak_check();
}

TestSuite(merge, .init = setup, .fini = teardown, .timeout = 120);

/* ---- running queries */

static tvs_buf run_q(const char *q, int dtype, int threads)
{
    tvs_plan_opts o = TVS_PLAN_OPTS_INIT;
    o.dtype = dtype;
    o.threads = threads;
    tvs_txn *txn;
    tvs_plan *p;
    char msg[1024];
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    int rc = tvs_plan_build(&p, txn, q, &o);
    if (rc) {
        snprintf(msg, sizeof msg, "%s", tvs_errmsg());
        tvs_txn_end(txn);
        cr_assert_fail("planning \"%.100s\": %d (%s)", q, rc, msg);
    }
    tvs_buf b = TVS_BUF_INIT;
    rc = tvs_plan_exec(p, 0, UINT64_MAX, tt_sink_buf, &b);
    snprintf(msg, sizeof msg, "%s", tvs_errmsg());
    uint64_t size = tvs_plan_size(p);
    tvs_plan_free(p);
    tvs_txn_end(txn);
    if (rc)   /* clean up first: a failed assertion skips the rest */
        tvs_buf_dispose(&b);
    cr_assert_eq(rc, 0, "running \"%.100s\": %d (%s)", q, rc, msg);
    cr_assert_eq(b.len, size);
    return b;
}

/* Element values of output tensor @p name as 16-bit patterns. */
static void out_u16(const tvs_buf *b, const char *name, uint16_t *dst, size_t n, tvs_dtype dt)
{
    tvs_st_header h;
    tt_ok(tvs_st_parse(&h, (tvs_span){ b->ptr, b->len }));
    long i = tvs_st_find(&h, name);
    cr_assert_geq(i, 0, "no tensor %s in the output", name);
    cr_assert_eq(h.tensors[i].dtype, dt, "%s: dtype %d", name, h.tensors[i].dtype);
    cr_assert_eq(h.tensors[i].end - h.tensors[i].begin, 2 * n);
    const uint8_t *p = b->ptr + 8 + h.header_len + h.tensors[i].begin;
    for (size_t k = 0; k < n; k++)
        dst[k] = (uint16_t)(p[2 * k] | p[2 * k + 1] << 8);
    tvs_st_header_dispose(&h);
}

typedef float (*elem_fn)(int t, size_t i, const void *ctx);

/* Every tensor of @p q's output (BF16 or F16) equals @p f rounded. */
static void check_query(const char *q, int dtype, elem_fn f, const void *ctx)
{
    tvs_buf b = run_q(q, dtype, 2);
    for (int t = 0; t < NTENS; t++) {
        uint16_t got[64];
        out_u16(&b, TNAME[t], got, TLEN[t], dtype ? (tvs_dtype)dtype : TVS_DTYPE_BF16);
        for (size_t i = 0; i < TLEN[t]; i++) {
            float e = f(t, i, ctx);
            uint16_t want = dtype == TVS_DTYPE_F16 ? ref_f16(e) : ref_bf16(e);
            cr_assert_eq(got[i], want, "%.100s: tensor %s[%zu] is 0x%04x, expected 0x%04x (%.9g)", q,
                         TNAME[t], i, got[i], want, (double)e);
        }
    }
    tvs_buf_dispose(&b);
}

static float v(int m, int t, size_t i) { return bf(V[m][t][i]); }
static float delta(int k, int t, size_t i) { return v(M1 + k, t, i) - v(MB, t, i); }

/* ---- tvs_f32_to_bf16 / tvs_f32_to_f16 */

Test(merge, bf16_rounding_is_to_nearest_with_ties_to_even)
{
    static const struct { uint32_t in; uint16_t out; } cases[] = {
        { 0x3f800000, 0x3f80 },   /* 1 */
        { 0x3f808000, 0x3f80 },   /* 1 + 2^-8: halfway, to the even 1 */
        { 0x3f818000, 0x3f82 },   /* halfway between 0x3f81 and 0x3f82: up to even */
        { 0x3f808001, 0x3f81 },   /* just above halfway */
        { 0x3f807fff, 0x3f80 },   /* just below */
        { 0xbf818000, 0xbf82 },
        { 0xbf808000, 0xbf80 },
        { 0x00000000, 0x0000 },
        { 0x80000000, 0x8000 },
        { 0x00008000, 0x0000 },   /* f32 subnormal, halfway: to even 0 */
        { 0x00018000, 0x0002 },
        { 0x7f7fffff, 0x7f80 },   /* FLT_MAX rounds to infinity */
        { 0x7f7f7fff, 0x7f7f },
        { 0x7f800000, 0x7f80 },
        { 0xff800000, 0xff80 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint16_t got = tvs_f32_to_bf16(from_bits(cases[i].in));
        cr_assert_eq(got, cases[i].out, "0x%08x -> 0x%04x, expected 0x%04x", cases[i].in, got,
                     cases[i].out);
        cr_assert_eq(ref_bf16(from_bits(cases[i].in)), cases[i].out);
    }
    /* NaN stays NaN, even with only low payload bits */
    uint32_t nans[] = { 0x7fc00000, 0x7f800001, 0xff800001, 0x7fffffff };
    for (size_t i = 0; i < 4; i++) {
        uint16_t h = tvs_f32_to_bf16(from_bits(nans[i]));
        cr_assert((h & 0x7f80) == 0x7f80 && (h & 0x7f), "NaN 0x%08x -> 0x%04x", nans[i], h);
    }
    /* every BF16 value converts back to itself */
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7f80) == 0x7f80 && (h & 0x7f))
            continue;
        cr_assert_eq(tvs_f32_to_bf16(tvs_bf16_to_f32((uint16_t)h)), h);
        cr_assert_eq(bits_of(tvs_bf16_to_f32((uint16_t)h)), (uint32_t)h << 16);
    }
}

Test(merge, f16_rounding_is_to_nearest_with_ties_to_even_subnormals_included)
{
    static const struct { double in; uint16_t out; } cases[] = {
        { 1.0, 0x3c00 },
        { 1.0 + 0x1p-11, 0x3c00 },             /* halfway: to even */
        { 1.0 + 3 * 0x1p-11, 0x3c02 },
        { 1.0 + 0x1p-11 + 0x1p-23, 0x3c01 },   /* just above halfway */
        { 65504.0, 0x7bff },
        { 65519.0, 0x7bff },
        { 65520.0, 0x7c00 },                   /* halfway to 65536: to even (infinity) */
        { 0x1p-24, 0x0001 },                   /* smallest subnormal */
        { 0x1p-25, 0x0000 },                   /* halfway between 0 and it: to even 0 */
        { 0x1p-25 + 0x1p-40, 0x0001 },
        { 3 * 0x1p-25, 0x0002 },               /* 1.5 ulps: to even 2 */
        { 5 * 0x1p-25, 0x0002 },               /* 2.5 ulps: to even 2 */
        { 7 * 0x1p-25, 0x0004 },               /* 3.5 ulps: to even 4 */
        { 5 * 0x1p-26, 0x0001 },               /* 1.25 ulps */
        { 1023 * 0x1p-24, 0x03ff },            /* largest subnormal */
        { 0x1p-14 - 0x1p-25, 0x0400 },         /* halfway to the smallest normal */
        { 0x1p-14, 0x0400 },
        { 0x1p-30, 0x0000 },
        { -3 * 0x1p-25, 0x8002 },
        { -0.0, 0x8000 },
        { 0x1p-149, 0x0000 },                  /* an f32 subnormal */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        float f = (float)cases[i].in;
        cr_assert_eq((double)f, cases[i].in, "case %zu is an f32", i);
        uint16_t got = tvs_f32_to_f16(f);
        cr_assert_eq(got, cases[i].out, "%a -> 0x%04x, expected 0x%04x", cases[i].in, got,
                     cases[i].out);
        cr_assert_eq(ref_f16(f), cases[i].out, "reference for %a", cases[i].in);
    }
    uint16_t h = tvs_f32_to_f16(from_bits(0x7f800001));
    cr_assert((h & 0x7c00) == 0x7c00 && (h & 0x3ff), "NaN -> 0x%04x", h);
    /* every finite F16 value converts back to itself */
    for (uint32_t x = 0; x < 0x10000; x++) {
        if ((x & 0x7c00) == 0x7c00)
            continue;
        cr_assert_eq(tvs_f32_to_f16(tvs_f16_to_f32((uint16_t)x)), x, "0x%04x", x);
        cr_assert_eq(ref_f16(tvs_f16_to_f32((uint16_t)x)), x, "reference 0x%04x", x);
    }
}

/* ---- linear merges */

static float ta(int t, size_t i, const void *ctx)
{
    float b = v(MB, t, i);
    float x = 0.5f * delta(0, t, i);
    float y = 0.5f * delta(1, t, i);
    float r = b + x;
    return r + y;
}

Test(merge, task_arithmetic_rounds_each_step_in_f32)
{
    check_query("B + 0.5*d1 + 0.5*d2", 0, ta, NULL);
    /* the hand-picked halfway cases of tensor r */
    tvs_buf b = run_q("B + 0.5*d1 + 0.5*d2", 0, 2);
    uint16_t got[16];
    out_u16(&b, "r", got, 16, TVS_DTYPE_BF16);
    cr_assert_eq(got[0], 0x3f80, "1 + 2^-8 rounds to the even 1.0: 0x%04x", got[0]);
    cr_assert_eq(got[1], 0x3f82, "0x%04x", got[1]);
    cr_assert_eq(got[2], 0xbf80, "0x%04x", got[2]);
    tvs_buf_dispose(&b);
}

Test(merge, the_same_merge_in_f16_rounds_to_f16_with_subnormals)
{
    check_query("B + 0.5*d1 + 0.5*d2", TVS_DTYPE_F16, ta, NULL);
    tvs_buf b = run_q("B + 0.5*d1 + 0.5*d2", TVS_DTYPE_F16, 2);
    uint16_t got[16];
    out_u16(&b, "r", got, 16, TVS_DTYPE_F16);
    cr_assert_eq(got[0], 0x3c04, "1 + 2^-8 is an F16: 0x%04x", got[0]);
    cr_assert_eq(got[3], 0x0002, "3*2^-25 rounds to the even subnormal 2: 0x%04x", got[3]);
    cr_assert_eq(got[4], 0x0000, "2^-25 rounds to the even 0: 0x%04x", got[4]);
    cr_assert_eq(got[5], 0x0001, "5*2^-26: 0x%04x", got[5]);
    cr_assert_eq(got[6], 0x7bf8, "65280: 0x%04x", got[6]);
    cr_assert_eq(got[7], 0x7c00, "65536 overflows F16: 0x%04x", got[7]);
    tvs_buf_dispose(&b);
}

static float plain_b(int t, size_t i, const void *ctx) { return v(MB, t, i); }

Test(merge, a_copied_tensor_converted_to_f16_is_rounded_the_same_way)
{
    check_query("B", TVS_DTYPE_F16, plain_b, NULL);
    check_query("B", TVS_DTYPE_BF16, plain_b, NULL);
}

static float ta_f32(int t, size_t i, const void *ctx)
{
    return ta(t, i, ctx);
}

Test(merge, f32_output_keeps_the_f32_result)
{
    tvs_buf b = run_q("B + 0.5*d1 + 0.5*d2", TVS_DTYPE_F32, 2);
    tvs_st_header h;
    tt_ok(tvs_st_parse(&h, (tvs_span){ b.ptr, b.len }));
    for (int t = 0; t < NTENS; t++) {
        long k = tvs_st_find(&h, TNAME[t]);
        cr_assert_geq(k, 0);
        cr_assert_eq(h.tensors[k].dtype, TVS_DTYPE_F32);
        const uint8_t *p = b.ptr + 8 + h.header_len + h.tensors[k].begin;
        for (size_t i = 0; i < TLEN[t]; i++)
            cr_assert_eq(tvs_load_le32(p + 4 * i), bits_of(ta_f32(t, i, NULL)), "%s[%zu]",
                         TNAME[t], i);
    }
    tvs_st_header_dispose(&h);
    tvs_buf_dispose(&b);
}

static float ft_minus_base(int t, size_t i, const void *ctx) { return v(M1, t, i) - v(MB, t, i); }

Test(merge, a_full_model_minus_its_base_is_the_task_vector)
{
    check_query("F1 - B", 0, ft_minus_base, NULL);
    check_query("d1", 0, ft_minus_base, NULL);
}

static float scaled_sum(int t, size_t i, const void *ctx)
{
    /* 2*d1 - d2 + d3*0.25, each a delta of B */
    float a = 2.0f * delta(0, t, i);
    float c = a - delta(1, t, i);
    float d = 0.25f * delta(2, t, i);
    return c + d;
}

Test(merge, delta_arithmetic_goes_left_to_right)
{
    check_query("2*d1 - d2 + d3*0.25", 0, scaled_sum, NULL);
}

static float soup3(int t, size_t i, const void *ctx)
{
    float w = (float)(1.0 / 3.0);
    float a = w * v(MB, t, i);
    float b = w * v(M1, t, i);
    float c = w * v(M2, t, i);
    float r = a + b;
    return r + c;
}

Test(merge, soup_averages_with_weights_one_over_n)
{
    check_query("soup(B, F1, F2)", 0, soup3, NULL);
}

static float lerp_full(int t, size_t i, const void *ctx)
{
    float wa = (float)(1.0 - 0.3), wb = (float)0.3;
    float a = wa * v(MB, t, i);
    float b = wb * v(M1, t, i);
    return a + b;
}

static float lerp_delta(int t, size_t i, const void *ctx)
{
    float a = 0.75f * delta(0, t, i);
    float b = 0.25f * delta(1, t, i);
    return a + b;
}

Test(merge, lerp_weights_are_computed_in_double_then_rounded)
{
    check_query("lerp(B, F1, 0.3)", 0, lerp_full, NULL);
    check_query("lerp(d1, d2, 0.25)", 0, lerp_delta, NULL);
}

static float transferred(int t, size_t i, const void *ctx)
{
    return v(MB2, t, i) + delta(0, t, i);
}

Test(merge, transfer_adds_the_delta_to_the_other_base)
{
    check_query("transfer(d1, onto=B2)", 0, transferred, NULL);
}

static float long_sum(int t, size_t i, const void *ctx)
{
    int terms = *(const int *)ctx;
    float r = v(MB, t, i);
    for (int k = 0; k < terms; k++)
        r = r + delta(k % 3, t, i);
    return r;
}

Test(merge, a_sum_of_150_deltas_evaluates)
{
    /* B + d1 + d2 + d3 + d1 + ... : a flat sum (no nesting in the text),
     * evaluated left to right */
    char q[2048];
    size_t n = (size_t)snprintf(q, sizeof q, "B");
    int terms = 150;
    for (int k = 0; k < terms; k++)
        n += (size_t)snprintf(q + n, sizeof q - n, " + d%d", k % 3 + 1);
    check_query(q, 0, long_sum, &terms);
}

static float right_nested(int t, size_t i, const void *ctx)
{
    int terms = *(const int *)ctx;
    float r = delta((terms - 1) % 3, t, i);
    for (int k = terms - 2; k >= 0; k--)
        r = delta(k % 3, t, i) + r;
    return v(MB, t, i) + r;
}

Test(merge, a_query_nested_190_deep_evaluates)
{
    /* B + (d1 + (d2 + (d3 + ... (d1) ...))): 190 levels of parentheses, under
     * SPEC 4.1's limit of 200 */
    char q[4096];
    int terms = 191;
    size_t n = (size_t)snprintf(q, sizeof q, "B");
    for (int k = 0; k < terms - 1; k++)
        n += (size_t)snprintf(q + n, sizeof q - n, " + (d%d", k % 3 + 1);
    n += (size_t)snprintf(q + n, sizeof q - n, " + d%d", (terms - 1) % 3 + 1);
    for (int k = 0; k < terms - 1; k++)
        q[n++] = ')';
    q[n] = 0;
    check_query(q, 0, right_nested, &terms);
}

/* ---- ties */

/* SPEC: per delta, keep elements whose magnitude is at least the m-th
 * largest (m = floor(density * N)); elect the sign of the sum of the kept
 * values; average the kept values of that sign; 0 where the sum is 0. */
static float ties_ref(int t, size_t i, int nk, const int *ks, double density, float lambda)
{
    size_t N = TLEN[t], m = (size_t)floor(density * (double)N);
    float kept_v[64];
    for (int k = 0; k < nk; k++) {
        float d = delta(ks[k], t, i), thr = INFINITY;
        if (m) {
            float mags[64];
            for (size_t j = 0; j < N; j++)
                mags[j] = fabsf(delta(ks[k], t, j));
            /* the m-th largest */
            for (size_t a = 0; a < N; a++)
                for (size_t b = a + 1; b < N; b++)
                    if (mags[b] > mags[a]) {
                        float x = mags[a];
                        mags[a] = mags[b];
                        mags[b] = x;
                    }
            thr = mags[m - 1];
        }
        kept_v[k] = m && fabsf(d) >= thr ? d : 0.0f;
    }
    float sum = 0.0f, kept = 0.0f, cnt = 0.0f;
    for (int k = 0; k < nk; k++)
        sum = sum + kept_v[k];
    for (int k = 0; k < nk; k++)
        if ((sum > 0.0f && kept_v[k] > 0.0f) || (sum < 0.0f && kept_v[k] < 0.0f)) {
            kept = kept + kept_v[k];
            cnt = cnt + 1.0f;
        }
    float r = cnt > 0.0f ? kept / cnt : 0.0f;
    return lambda * r;
}

typedef struct {
    int nk;
    int ks[64];
    double density;
    float lambda;
    int plus_base;
} ties_ctx;

static float ties_elem(int t, size_t i, const void *ctx)
{
    const ties_ctx *c = ctx;
    float r = ties_ref(t, i, c->nk, c->ks, c->density, c->lambda);
    return c->plus_base ? v(MB, t, i) + r : r;
}

Test(merge, ties_trims_elects_a_sign_and_averages_the_agreeing_values)
{
    /* by hand, tensor t (units of 1/64), density 0.5: m = 4
     *   d1 |8 4 2 4 6 5 0 1|: 4th largest 4, kept 8 -4 . 4 -6 5 . .  (both 4s: a tie)
     *   d2 |2 3 7 4 6 5 0 2|: 4th largest 4, kept . . 7 -4 6 -5 . .
     *   d3 |1 1 1 1 1 0 3 1|: 4th largest 1, kept all but the 0
     *   sums 9 -5 8 1 1 0 -3 -1 -> means of the agreeing values:
     *   4.5 -2.5 4 2.5 3.5 0 -3 -1 */
    static const float want[8] = { 4.5f, -2.5f, 4.0f, 2.5f, 3.5f, 0.0f, -3.0f, -1.0f };
    tvs_buf b = run_q("ties(d1, d2, d3; density=0.5)", 0, 2);
    uint16_t got[8];
    out_u16(&b, "t", got, 8, TVS_DTYPE_BF16);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(got[i], ref_bf16(want[i] / 64.0f), "t[%d] = %g/64, expected %g/64", i,
                     (double)bf(got[i]) * 64, (double)want[i]);
    tvs_buf_dispose(&b);

    ties_ctx c = { 3, { 0, 1, 2 }, 0.5, 1.0f, 0 };
    check_query("ties(d1, d2, d3; density=0.5)", 0, ties_elem, &c);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(ties_ref(TT, (size_t)i, 3, c.ks, 0.5, 1.0f), want[i] / 64.0f,
                     "the reference agrees with the hand values at %d", i);
}

Test(merge, ties_on_a_base_with_lambda)
{
    /* B + 2*merged: 3 + 9/64 etc., several results halfway between BF16 numbers */
    ties_ctx c = { 3, { 0, 1, 2 }, 0.5, 2.0f, 1 };
    check_query("B + ties(d1, d2, d3; density=0.5, lambda=2)", 0, ties_elem, &c);
    ties_ctx c1 = { 3, { 0, 1, 2 }, 0.5, 1.0f, 1 };
    check_query("B + ties(d1, d2, d3; density=0.5)", 0, ties_elem, &c1);
    tvs_buf b = run_q("B + ties(d1, d2, d3; density=0.5)", 0, 2);
    uint16_t got[8];
    out_u16(&b, "t", got, 8, TVS_DTYPE_BF16);
    cr_assert_eq(got[0], 0x4044, "3 + 4.5/64 is halfway: to the even 3 + 4/64, got 0x%04x", got[0]);
    cr_assert_eq(got[1], 0x403e, "3 - 2.5/64 is halfway: to the even 3 - 2/64, got 0x%04x", got[1]);
    cr_assert_eq(got[5], 0x4040, "sign 0 adds nothing: 0x%04x", got[5]);
    tvs_buf_dispose(&b);
}

Test(merge, ties_density_edges)
{
    ties_ctx all = { 2, { 0, 1 }, 1.0, 1.0f, 0 };
    check_query("ties(d1, d2; density=1)", 0, ties_elem, &all);
    ties_ctx none = { 2, { 0, 1 }, 0.0, 1.0f, 0 };
    check_query("ties(d1, d2; density=0)", 0, ties_elem, &none);
    ties_ctx def = { 3, { 0, 1, 2 }, 0.2, 1.0f, 0 };
    check_query("ties(d1, d2, d3)", 0, ties_elem, &def);
    ties_ctx neg = { 2, { 1, 2 }, 0.75, -1.0f, 0 };
    check_query("ties(d2, d3; density=0.75, lambda=-1)", 0, ties_elem, &neg);
}

Test(merge, ties_of_64_deltas_evaluates)
{
    /* 64 arguments, the most a call takes */
    ties_ctx c = { 64, { 0 }, 0.5, 1.0f, 1 };
    char q[1024];
    size_t n = (size_t)snprintf(q, sizeof q, "B + ties(");
    for (int k = 0; k < 64; k++) {
        c.ks[k] = k % 3;
        n += (size_t)snprintf(q + n, sizeof q - n, "%sd%d", k ? ", " : "", k % 3 + 1);
    }
    snprintf(q + n, sizeof q - n, "; density=0.5)");
    check_query(q, 0, ties_elem, &c);
}

/* ---- breadcrumbs */

typedef struct {
    int nk;
    int ks[4];
    double top, bottom;
    float lambda;
} crumbs_ctx;

static float crumbs_elem(int t, size_t i, const void *ctx)
{
    const crumbs_ctx *c = ctx;
    size_t N = TLEN[t];
    size_t mb = (size_t)floor(c->bottom * (double)N), mt = (size_t)floor(c->top * (double)N);
    float acc = 0.0f;
    for (int k = 0; k < c->nk; k++) {
        float srt[64];
        for (size_t j = 0; j < N; j++)
            srt[j] = fabsf(delta(c->ks[k], t, j));
        for (size_t a = 0; a < N; a++)
            for (size_t b = a + 1; b < N; b++)
                if (srt[b] < srt[a]) {
                    float x = srt[a];
                    srt[a] = srt[b];
                    srt[b] = x;
                }
        float lo = mb < N ? srt[mb] : INFINITY;
        float hi = mt ? (mt < N ? srt[N - mt - 1] : -1.0f) : INFINITY;
        float d = delta(c->ks[k], t, i);
        acc = acc + (fabsf(d) >= lo && fabsf(d) <= hi ? d : 0.0f);
    }
    return c->lambda * acc;
}

Test(merge, breadcrumbs_drop_the_largest_and_the_smallest_magnitudes)
{
    /* by hand, tensor t, top=0.125 (mt = 1), bottom=0.25 (mb = 2):
     *   d1 sorted |0 1 2 4 4 5 6 8|: keep 2 <= |d| <= 6 -> . -4 2 4 -6 5 . .
     *   d2 sorted |0 2 2 3 4 5 6 7|: keep 2 <= |d| <= 6 (both 2s) -> -2 3 . -4 6 -5 . 2
     *   sums -2 -1 2 0 0 0 0 2 */
    static const float want[8] = { -2, -1, 2, 0, 0, 0, 0, 2 };
    tvs_buf b = run_q("breadcrumbs(d1, d2; top=0.125, bottom=0.25)", 0, 2);
    uint16_t got[8];
    out_u16(&b, "t", got, 8, TVS_DTYPE_BF16);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(got[i], ref_bf16(want[i] / 64.0f), "t[%d] = %g/64, expected %g/64", i,
                     (double)bf(got[i]) * 64, (double)want[i]);
    tvs_buf_dispose(&b);

    crumbs_ctx c = { 2, { 0, 1 }, 0.125, 0.25, 1.0f };
    check_query("breadcrumbs(d1, d2; top=0.125, bottom=0.25)", 0, crumbs_elem, &c);
    for (int i = 0; i < 8; i++)
        cr_assert_eq(crumbs_elem(TT, (size_t)i, &c), want[i] / 64.0f);
}

Test(merge, breadcrumbs_edges_and_lambda)
{
    crumbs_ctx def = { 3, { 0, 1, 2 }, 0.01, 0.9, 1.0f };
    check_query("breadcrumbs(d1, d2, d3)", 0, crumbs_elem, &def);
    crumbs_ctx none = { 2, { 0, 1 }, 0.0, 0.0, 0.5f };
    check_query("breadcrumbs(d1, d2; top=0, bottom=0, lambda=0.5)", 0, crumbs_elem, &none);
    crumbs_ctx all = { 1, { 2 }, 0.0, 1.0, 1.0f };
    check_query("breadcrumbs(d3; top=0, bottom=1)", 0, crumbs_elem, &all);
    crumbs_ctx top = { 1, { 0 }, 1.0, 0.0, 1.0f };
    check_query("breadcrumbs(d1; top=1, bottom=0)", 0, crumbs_elem, &top);
}

/* ---- dare */

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t fnv1a(const char *str)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *str; str++) {
        h ^= (uint8_t)*str;
        h *= 0x100000001b3ull;
    }
    return h;
}

static int keep(uint64_t seed, int k, const char *tensor, uint64_t i, double p)
{
    uint64_t key = mix(mix(seed ^ (uint64_t)(k + 1) * 0xd1b54a32d192ed03ull) ^ fnv1a(tensor));
    return (mix(key + i) >> 11) >= (uint64_t)floor(p * 9007199254740992.0);
}

typedef struct {
    int nk;
    int ks[4];
    double p;
    uint64_t seed;
    float lambda;
    int plus_base;
} dare_ctx;

static float dare_elem(int t, size_t i, const void *ctx)
{
    const dare_ctx *c = ctx;
    float acc = 0.0f;
    for (int k = 0; k < c->nk; k++) {
        /* p is 0.5 or 0.75 here: 1/(1-p) is exact, so D/(1-p) is one rounding */
        float d = delta(c->ks[k], t, i);
        float x = keep(c->seed, k, TNAME[t], i, c->p) ? d / (float)(1.0 - c->p) : 0.0f;
        acc = acc + x;
    }
    acc = c->lambda * acc;
    return c->plus_base ? v(MB, t, i) + acc : acc;
}

Test(merge, dare_keeps_the_elements_the_seeded_hash_picks)
{
    /* the hash itself: splitmix64 of 0 is a published value */
    cr_assert_eq(mix(0), 0xe220a8397b1dcdafull);
    cr_assert_eq(fnv1a(""), 0xcbf29ce484222325ull);
    cr_assert_eq(fnv1a("a"), 0xaf63dc4c8601ec8cull);

    dare_ctx c = { 2, { 0, 1 }, 0.5, 7, 1.0f, 0 };
    check_query("dare(d1, d2; drop=0.5, seed=7)", 0, dare_elem, &c);
    /* the mask is not trivial: some elements kept, some dropped, per delta */
    int kept = 0;
    for (uint64_t i = 0; i < 64; i++)
        kept += keep(7, 0, "d", i, 0.5);
    cr_assert(kept > 16 && kept < 48, "%d of 64 kept", kept);

    dare_ctx c2 = { 3, { 0, 1, 2 }, 0.75, 123456789, 0.5f, 1 };
    check_query("B + dare(d1, d2, d3; drop=0.75, seed=123456789, lambda=0.5)", 0, dare_elem, &c2);
    dare_ctx c3 = { 1, { 2 }, 0.5, 0, 1.0f, 0 };
    check_query("dare(d3; drop=0.5)", 0, dare_elem, &c3);
    dare_ctx c4 = { 2, { 1, 0 }, 0.0, 5, -2.0f, 0 };
    check_query("dare(d2, d1; drop=0, seed=5, lambda=-2)", 0, dare_elem, &c4);
}

Test(merge, dare_gives_the_same_bytes_for_a_seed_and_other_bytes_for_another)
{
    tvs_buf a = run_q("dare(d1, d2, d3; drop=0.5, seed=1)", 0, 1);
    tvs_buf b = run_q("dare(d1, d2, d3; drop=0.5, seed=1)", 0, 2);
    tvs_buf c = run_q("dare(d1, d2, d3; drop=0.5, seed=2)", 0, 2);
    cr_assert_eq(a.len, b.len);
    cr_assert_eq(memcmp(a.ptr, b.ptr, a.len), 0, "same seed, same bytes");
    /* the header records the query, so compare the data regions */
    tvs_st_header ha, hc;
    tt_ok(tvs_st_parse(&ha, (tvs_span){ a.ptr, a.len }));
    tt_ok(tvs_st_parse(&hc, (tvs_span){ c.ptr, c.len }));
    cr_assert_eq(ha.data_len, hc.data_len);
    cr_assert_neq(memcmp(a.ptr + 8 + ha.header_len, c.ptr + 8 + hc.header_len, ha.data_len), 0,
                  "another seed, other bytes");
    tvs_st_header_dispose(&ha);
    tvs_st_header_dispose(&hc);
    tvs_buf_dispose(&a);
    tvs_buf_dispose(&b);
    tvs_buf_dispose(&c);
}

/* ---- determinism across thread counts */

Test(merge, the_thread_count_never_changes_the_bytes)
{
    /* tensors of several blocks (524,288 elements each), so that threads
     * really split the work */
    tt_tensor t[] = { { "big", "BF16", 1, { 1100000 } }, { "small", "BF16", 2, { 30, 50 } } };
    char *pg = tt_fmt("%s/G.safetensors", dir);
    cr_assert_eq(tt_write_st_weights(pg, t, 2, NULL, 5), 0);
    size_t len;
    uint8_t *base = tt_read_file(pg, &len);
    for (int k = 1; k <= 3; k++) {
        uint8_t *b = malloc(len);
        memcpy(b, base, len);
        uint64_t st = (uint64_t)k * 1000;
        size_t data0 = 8 + (size_t)tvs_load_le64(b);
        for (size_t i = data0 + 2 * (size_t)k; i + 2 <= len; i += 2 * (size_t)(k + 2)) {
            uint16_t x = (uint16_t)(b[i] | b[i + 1] << 8);
            x = (uint16_t)(x + (tt_lcg(&st) % 7) - 3);
            b[i] = (uint8_t)x;
            b[i + 1] = (uint8_t)(x >> 8);
        }
        char *p = tt_fmt("%s/g%d.safetensors", dir, k);
        cr_assert_eq(tt_write_file(p, b, len), 0);
        free(p);
        free(b);
    }
    free(base);
    free(pg);
    import("G", "G", NULL, NULL);
    import("g1", "g1", "G", NULL);
    import("g2", "g2", "G", NULL);
    import("g3", "g3", "G", NULL);

    const char *q = "G + ties(g1, g2, g3; density=0.3) + dare(g1, g2; drop=0.5, seed=3) - "
                    "0.5*breadcrumbs(g2, g3) + lerp(g1, g3, 0.3)";
    tvs_buf one = run_q(q, 0, 1);
    int threads[] = { 2, 4 };
    for (int k = 0; k < 2; k++) {
        tvs_buf b = run_q(q, 0, threads[k]);
        cr_assert_eq(b.len, one.len);
        cr_assert_eq(memcmp(b.ptr, one.ptr, one.len), 0, "%d threads differ from 1",
                     threads[k]);
        tvs_buf_dispose(&b);
    }
    tvs_buf_dispose(&one);
}

static float lerp_extrapolated(int t, size_t i, const void *ctx)
{
    float wa = (float)(1.0 - -0.5), wb = (float)-0.5;
    float a = wa * v(MB, t, i);
    float b = wb * v(M1, t, i);
    return a + b;
}

Test(merge, lerp_extrapolates_with_a_negative_t)
{
    check_query("lerp(B, F1, -0.5)", 0, lerp_extrapolated, NULL);
}
