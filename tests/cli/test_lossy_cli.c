/*
 * Lossy task vectors through the tvs program: `import --lossy`, `compress`,
 * `import --lora`, `show --units`, `stats`, queries over lossy deltas, and
 * what bad input gets. Outcomes are measured on the files: the relative
 * error of every tensor's delta, the stored bits per parameter, bytes equal
 * where they must be, the store unchanged after a refused command.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "format/dtype.h"
#include "engine/lossy_int.h"
#include "format/safetensors.h"
#include "tests/support/support.h"

static char *dir, *env_store;
static const char *env[2];

#define SHARED(f) TVS_SHARED_MODELS "/" f

static void setup(void)
{
    dir = tt_cli_store(&env_store, env);
}

static void teardown(void)
{
    tt_rmtree(dir);
    free(dir);
    free(env_store);
    tt_leak_check();
}

TestSuite(lossy_cli, .init = setup, .fini = teardown, .timeout = 240);

/* ---- running tvs */

#define run(...) tt_cli(env, 0, __VA_ARGS__, NULL)
#define ok(...) tt_cli_quiet(env, __VA_ARGS__, NULL)

/* The command fails with a message containing @p needle on stderr. */
#define refused(needle, ...)                                                          \
    do {                                                                              \
        tt_run r_ = run(__VA_ARGS__);                                                 \
        cr_assert_neq(r_.code, 0, "should fail: %s", r_.out);                         \
        cr_assert(strstr(r_.err, needle), "stderr \"%s\" lacks \"%s\"", r_.err, needle); \
        tt_run_dispose(&r_);                                                          \
    } while (0)

static json_t *run_json_(const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    tt_run r = tt_cli_va(env, 1, first, ap);
    va_end(ap);
    json_error_t e;
    json_t *j = json_loads(r.out, 0, &e);
    cr_assert_not_null(j, "not JSON (%s): %s", e.text, r.out);
    tt_run_dispose(&r);
    return j;
}
#define run_json(...) run_json_(__VA_ARGS__, NULL)

/* stats --json: the entry of ref @p name (a new reference). */
static json_t *stats_ref(const char *name)
{
    json_t *st = run_json("stats", "--json"), *refs = json_object_get(st, "refs"), *v;
    size_t i;
    json_array_foreach(refs, i, v) {
        if (strcmp(json_string_value(json_object_get(v, "name")), name) == 0) {
            json_incref(v);
            json_decref(st);
            return v;
        }
    }
    cr_assert_fail("no ref %s in stats", name);
    return NULL;
}

static double num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    cr_assert(json_is_number(v), "no number %s", key);
    return json_number_value(v);
}

/* ---- reading tensors from safetensors files */

typedef struct {
    uint8_t *file;
    size_t len;
    tvs_st_header h;
} stfile;

static void st_open(stfile *f, const char *path)
{
    f->file = tt_read_file(path, &f->len);
    cr_assert_not_null(f->file, "cannot read %s", path);
    tt_ok(tvs_st_parse(&f->h, (tvs_span){ f->file, f->len }));
}

static void st_close(stfile *f)
{
    tvs_st_header_dispose(&f->h);
    free(f->file);
}

/* Tensor @p i as f32 (malloc'd); its element count in @p n. */
static float *st_f32(const stfile *f, size_t i, size_t *n)
{
    const tvs_st_tensor *t = &f->h.tensors[i];
    *n = t->n_elems;
    float *x = malloc((*n ? *n : 1) * sizeof *x);
    cr_assert_not_null(x);
    tt_ok(tvs_dtype_to_f32(x, f->file + 8 + f->h.header_len + t->begin, *n, t->dtype));
    return x;
}

/*
 * Relative L2 error of each tensor's delta in @p got against @p ft, both
 * over @p base: the largest in @p worst, over all of them returned.
 */
static double rel_error(const char *base, const char *ft, const char *got, double *worst)
{
    stfile b, f, g;
    st_open(&b, base);
    st_open(&f, ft);
    st_open(&g, got);
    cr_assert_eq(f.h.n, g.h.n);
    double e2 = 0, n2 = 0;
    *worst = 0;
    for (size_t i = 0; i < f.h.n; i++) {
        long bi = tvs_st_find(&b.h, f.h.tensors[i].name);
        long gi = tvs_st_find(&g.h, f.h.tensors[i].name);
        cr_assert(bi >= 0 && gi >= 0);
        size_t n, m, k;
        float *xb = st_f32(&b, (size_t)bi, &n), *xf = st_f32(&f, i, &m),
              *xg = st_f32(&g, (size_t)gi, &k);
        cr_assert(n == m && m == k);
        double te = 0, tn = 0;
        for (size_t j = 0; j < n; j++) {
            double d = (double)xf[j] - xb[j], e = (double)xg[j] - xf[j];
            tn += d * d;
            te += e * e;
        }
        if (tn > 0 && sqrt(te / tn) > *worst)
            *worst = sqrt(te / tn);
        e2 += te;
        n2 += tn;
        free(xb), free(xf), free(xg);
    }
    st_close(&b), st_close(&f), st_close(&g);
    return n2 > 0 ? sqrt(e2 / n2) : 0;
}

static char *path(const char *name) { return tt_join(dir, name); }

static void import_family(void)
{
    ok("import", SHARED("base-v1.safetensors"), "--as", "base-v1");
    ok("import", SHARED("ft-math.safetensors"), "--base", "base-v1", "--as", "ft-math");
}

/* ---- tests */

Test(lossy_cli, bits_budget_is_met_and_error_falls_with_bits)
{
    import_family();
    /* Low budgets use mixed-precision low rank (LOWRANKQ), whose error is mostly
     * the spectral tail; from 2 bits up, unbiased wide blocks, whose larger but
     * orthogonal error costs the model less (SPEC 2.8): the error falls with
     * the bits within each regime. */
    static const char *const bits[] = { "0.5", "1", "2", "4" };
    double prev_err = 2;
    for (size_t i = 0; i < 4; i++) {
        if (atof(bits[i]) > TVS__LRQ_MAX_BITS && atof(bits[i - 1]) <= TVS__LRQ_MAX_BITS)
            prev_err = 2;
        char *as = tt_fmt("m-b%s", bits[i]), *out = path("out.safetensors");
        ok("compress", "ft-math", "--as", as, "--bits", bits[i]);
        json_t *r = stats_ref(as);
        double b = num(r, "bits_per_param"), want = atof(bits[i]);
        cr_assert(json_is_true(json_object_get(r, "lossy")));
        /* everything counted (objects, headers), at most the budget, and most of it used */
        cr_assert(b <= want && b >= 0.75 * want, "--bits %s gave %.3f", bits[i], b);
        cr_assert(fabs(num(r, "bf16_ratio") - 16 / b) < 0.01 * 16 / b);
        json_decref(r);
        ok("export", as, "-o", out);
        double worst, err = rel_error(SHARED("base-v1.safetensors"),
                                      SHARED("ft-math.safetensors"), out, &worst);
        cr_assert(err < prev_err, "error %.4f at %s bits, %.4f with fewer", err, bits[i],
                  prev_err);
        prev_err = err;
        if (want >= 4)
            cr_assert(err < 0.12, "4 bits: relative error %.4f", err);
        if (want == 1) {
            /* 1-bit blocks or signs, kept unbiased, leave sqrt(0.36 / 0.64) = 0.75:
             * the low-rank terms do far better, and carry the dense layers */
            cr_assert(err < 0.4, "1 bit: relative error %.4f", err);
            json_t *units = run_json("show", as, "--units", "--json"), *u;
            size_t k, lrq = 0;
            double head = -1, head_bits = 0, others = 2;
            json_array_foreach(units, k, u) {
                int is_lrq = !strcmp(json_string_value(json_object_get(u, "codec")), "lowrankq");
                lrq += is_lrq;
                if (!strcmp(json_string_value(json_object_get(u, "tensor")), "lm_head.weight")) {
                    head = num(u, "rel_error");
                    head_bits = num(u, "bits_per_param");
                }
                else if (is_lrq)
                    others = fmin(others, num(u, "rel_error"));
            }
            cr_assert(lrq >= 28, "%zu of %zu units are lowrankq", lrq, json_array_size(units));
            /* the output head counts more in the allocation (it writes the logits):
             * counted like any other unit, it got 0.24 bits per parameter here
             * (relative error 0.16); weighted, about 0.5 (0.12) */
            cr_assert(head >= 0 && head < 0.6 * others && head_bits >= 0.4,
                      "lm_head: relative error %.4f at %.3f bits, the other low-rank units' "
                      "least %.4f", head, head_bits, others);
            json_decref(units);
        }
        free(as);
        free(out);
    }
    /* the lossless delta is untouched: still byte-identical */
    char *out = path("ft.safetensors");
    ok("export", "ft-math", "-o", out);
    char why[256];
    cr_assert_eq(tt_files_equal(out, SHARED("ft-math.safetensors"), why, sizeof why), 1, "%s",
                 why);
    free(out);
    tt_run r = run("fsck");
    cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
    tt_run_dispose(&r);
}

Test(lossy_cli, low_budgets_never_pick_low_rank_that_is_worse_than_its_estimate)
{
    /* At a quarter bit, LOWRANKQ keeps few terms, and an unbiased unit's
     * final scale (|d|^2 / <r, d>) inflates their noise: its rates are
     * estimated from the triplets, and an estimate that forgets that scale
     * picks the fewest terms, whose error passes 1 by far (the whole delta's
     * relative error reached 1.31; with that scale estimated, 0.98). */
    ok("import", SHARED("base-v1.safetensors"), "--as", "base-v1");
    ok("import", SHARED("ft-code.safetensors"), "--base", "base-v1", "--as", "ft-code");
    ok("compress", "ft-code", "--as", "q", "--bits", "0.25");
    char *out = path("q.safetensors");
    ok("export", "q", "-o", out);
    double worst, err = rel_error(SHARED("base-v1.safetensors"),
                                  SHARED("ft-code.safetensors"), out, &worst);
    cr_assert(err < 1.1, "--bits 0.25: relative error %.4f", err);
    free(out);
}

Test(lossy_cli, max_error_holds_in_every_unit_and_tensor)
{
    ok("import", SHARED("base-v1.safetensors"), "--as", "base-v1");
    ok("import", SHARED("ft-code.safetensors"), "--base", "base-v1", "--lossy", "--max-error",
       "0.2", "--as", "c");
    json_t *units = run_json("show", "c", "--units", "--json"), *u;
    size_t i;
    cr_assert(json_array_size(units) >= 38);
    json_array_foreach(units, i, u) {
        cr_assert(num(u, "rel_error") <= 0.2, "unit %zu: %.4f", i, num(u, "rel_error"));
        cr_assert(num(u, "bits_per_param") > 0);
    }
    json_decref(units);
    char *out = path("c.safetensors");
    ok("export", "c", "-o", out);
    double worst, err = rel_error(SHARED("base-v1.safetensors"),
                                  SHARED("ft-code.safetensors"), out, &worst);
    cr_assert(worst <= 0.2 && err <= 0.2, "worst tensor %.4f, overall %.4f", worst, err);
    /* materializing base + delta gives the same bytes as exporting it */
    char *q = path("q.safetensors"), why[256];
    ok("materialize", "base-v1 + c", "-o", q);
    cr_assert_eq(tt_files_equal(out, q, why, sizeof why), 1, "%s", why);
    /* the show table names codecs and the totals line */
    tt_run r = run("show", "c", "--units");
    cr_assert_eq(r.code, 0);
    cr_assert(strstr(r.out, "bits per parameter") && strstr(r.out, "rel.err"));
    tt_run_dispose(&r);
    free(out);
    free(q);
}

Test(lossy_cli, encoding_is_deterministic)
{
    import_family();
    ok("compress", "ft-math", "--as", "a", "--bits", "1", "--threads", "1");
    ok("compress", "ft-math", "--as", "b", "--bits", "1", "--threads", "2");
    char *pa = path("a.safetensors"), *pb = path("b.safetensors"), why[256];
    ok("export", "a", "-o", pa);
    ok("export", "b", "-o", pb);
    cr_assert_eq(tt_files_equal(pa, pb, why, sizeof why), 1, "%s", why);
    json_t *ra = stats_ref("a"), *rb = stats_ref("b");
    cr_assert_eq(num(ra, "own_bytes"), num(rb, "own_bytes"));
    json_decref(ra), json_decref(rb);
    /* the same bytes whether the low-rank chunks' triplets were kept whole
     * from measuring to encoding, only by their smaller side (rebuilt from the
     * delta), or not at all (computed again): with 2 MB, the shared model's 29
     * LOWRANKQ chunks take all three ways */
    static const char *const keeps[] = { "TVS_LRQ_KEEP=0", "TVS_LRQ_KEEP=2000000" };
    for (size_t k = 0; k < 2; k++) {
        const char *ek[3] = { env[0], keeps[k], NULL };
        char name[8];
        snprintf(name, sizeof name, "k%zu", k);
        tt_cli_quiet(ek, "compress", "ft-math", "--as", name, "--bits", "1", "--threads", "1",
                     NULL);
        ok("export", name, "-o", pb);
        cr_assert_eq(tt_files_equal(pa, pb, why, sizeof why), 1, "%s: %s", keeps[k], why);
    }
    free(pa), free(pb);
}

Test(lossy_cli, merges_decode_lossy_deltas)
{
    import_family();
    ok("import", SHARED("ft-code.safetensors"), "--base", "base-v1", "--as", "ft-code");
    ok("compress", "ft-math", "--as", "m4", "--bits", "4");
    ok("compress", "ft-code", "--as", "c4", "--bits", "4");
    /* TIES re-selects entries by magnitude and sign: small changes move more */
    static const char *const q[][3] = {
        { "base-v1 + 0.5*m4 + 0.5*c4", "base-v1 + 0.5*ft-math + 0.5*ft-code", "0.15" },
        { "base-v1 + ties(m4, c4; density=0.5)", "base-v1 + ties(ft-math, ft-code; density=0.5)",
          "0.35" },
        { "dare(m4, c4; drop=0.3, seed=3) on base-v1",
          "dare(ft-math, ft-code; drop=0.3, seed=3) on base-v1", "0.15" },
    };
    char *a = path("a.safetensors"), *b = path("b.safetensors");
    for (size_t i = 0; i < sizeof q / sizeof *q; i++) {
        ok("materialize", q[i][0], "-o", a);
        ok("materialize", q[i][1], "-o", b);
        double worst, err = rel_error(SHARED("base-v1.safetensors"), b, a, &worst);
        cr_assert(err < atof(q[i][2]), "%s: relative error %.4f against the lossless merge",
                  q[i][0], err);
    }
    free(a), free(b);
}

/* A fine-tune that changes 2 % of the base's elements: the sparse codecs win. */
Test(lossy_cli, sparse_deltas_take_sparse_codecs)
{
    char *pb = path("b.safetensors"), *pf = path("f.safetensors");
    tt_tensor t[] = { { "w1", "BF16", 2, { 512, 512 } }, { "w2", "BF16", 2, { 256, 1024 } } };
    cr_assert_eq(tt_write_st_weights(pb, t, 2, NULL, 5), 0);
    size_t len;
    uint8_t *f = tt_read_file(pb, &len);
    size_t data0 = 8 + (size_t)tvs_load_le64(f);
    uint64_t st = 9;
    for (size_t i = data0; i + 2 <= len; i += 2)
        if (tt_lcg(&st) % 50 == 0) {
            float x = tvs_bf16_to_f32((uint16_t)(f[i] | f[i + 1] << 8));
            uint16_t v = tvs_f32_to_bf16(x + 0.05f * ((tt_lcg(&st) & 1) ? 1 : -1));
            f[i] = (uint8_t)v, f[i + 1] = (uint8_t)(v >> 8);
        }
    cr_assert_eq(tt_write_file(pf, f, len), 0);
    free(f);
    ok("import", pb, "--as", "b");
    ok("import", pf, "--base", "b", "--lossy", "--max-error", "0.05", "--as", "s");
    json_t *units = run_json("show", "s", "--units", "--json"), *u;
    size_t i;
    json_array_foreach(units, i, u) {
        const char *codec = json_string_value(json_object_get(u, "codec"));
        cr_assert(strcmp(codec, "sign") == 0 || strcmp(codec, "sparseq") == 0,
                  "unit %zu took %s", i, codec);
        cr_assert(strstr(json_string_value(json_object_get(u, "params")), "mask="));
    }
    json_decref(units);
    json_t *r = stats_ref("s");
    cr_assert(num(r, "bits_per_param") < 0.5, "%.3f bits", num(r, "bits_per_param"));
    json_decref(r);
    char *out = path("o.safetensors");
    ok("export", "s", "-o", out);
    double worst, err = rel_error(pb, pf, out, &worst);
    cr_assert(worst <= 0.05, "%.4f", worst);
    (void)err;
    free(pb), free(pf), free(out);
}

/*
 * A fine-tune whose tensors span several chunks, of rows unlike each other
 * (bands of small and large dense changes, and of a few large ones), so
 * that a --bits budget takes a second (or third) pass in which some chunks
 * keep their candidates and others move.
 */
static void write_banded_ft(const char *pb, const char *pf)
{
    tt_tensor t[] = { { "a", "BF16", 2, { 768, 1024 } }, { "b", "BF16", 2, { 1024, 384 } } };
    cr_assert_eq(tt_write_st_weights(pb, t, 2, NULL, 21), 0);
    size_t len;
    uint8_t *f = tt_read_file(pb, &len);
    size_t data0 = 8 + (size_t)tvs_load_le64(f), a_len = 768 * 1024 * 2;
    uint64_t st = 22;
    for (size_t i = data0; i + 2 <= len; i += 2) {
        size_t e = (i - data0) / 2, row = i - data0 < a_len ? e / 1024 : (e - 768 * 1024) / 384;
        /* the sum of four uniforms: near-Gaussian, in exact arithmetic */
        float g = 0;
        for (int k = 0; k < 4; k++)
            g += (float)(tt_lcg(&st) % 2001) / 1000.0f - 1.0f;
        float d = (row / 64) % 3 == 1 ? 0.0032f * g : 0.0008f * g;
        if ((row / 32) % 5 == 4)
            d = tt_lcg(&st) % 20 == 0 ? 0.01f * g : 0.0f;
        float x = tvs_bf16_to_f32((uint16_t)(f[i] | f[i + 1] << 8));
        uint16_t v = tvs_f32_to_bf16(x + d);
        f[i] = (uint8_t)v, f[i + 1] = (uint8_t)(v >> 8);
    }
    cr_assert_eq(tt_write_file(pf, f, len), 0);
    free(f);
}

Test(lossy_cli, bits_passes_that_keep_or_rebuild_chunks_stay_consistent)
{
    char *pb = path("b.safetensors"), *pf = path("f.safetensors"), *o1 = path("o1.safetensors"),
         *o2 = path("o2.safetensors"), why[256];
    write_banded_ft(pb, pf);
    ok("import", pb, "--as", "b");
    static const char *const bits[] = { "1", "1.5", "2.5", "5" };
    for (size_t k = 0; k < sizeof bits / sizeof *bits; k++) {
        char a[32], c[32];
        snprintf(a, sizeof a, "a%zu", k);
        snprintf(c, sizeof c, "c%zu", k);
        ok("import", pf, "--base", "b", "--lossy", "--bits", bits[k], "--threads", "1", "--as", a);
        ok("import", pf, "--base", "b", "--lossy", "--bits", bits[k], "--threads", "2", "--as", c);
        ok("export", a, "-o", o1);
        ok("export", c, "-o", o2);
        cr_assert_eq(tt_files_equal(o1, o2, why, sizeof why), 1, "--bits %s: %s", bits[k], why);
        json_t *ra = stats_ref(a), *rc = stats_ref(c);
        cr_assert_eq(num(ra, "own_bytes"), num(rc, "own_bytes"));
        cr_assert(num(ra, "bits_per_param") <= atof(bits[k]), "--bits %s: %.3f", bits[k],
                  num(ra, "bits_per_param"));
        json_decref(ra), json_decref(rc);
    }
    /* every lossy tensor's checksum is of its decoded bytes, kept or rebuilt ones too */
    tt_run r = run("fsck");
    cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
    tt_run_dispose(&r);
    free(pb), free(pf), free(o1), free(o2);
}

/* base + scale * B·A, rounded once to BF16, computed here independently. */
static void lora_reference(const char *base, const char *adapter, const char *out)
{
    stfile b, a;
    st_open(&b, base);
    st_open(&a, adapter);
    uint8_t *o = malloc(b.len);
    memcpy(o, b.file, b.len);
    const double scale = 16.0 / 8;
    for (size_t i = 0; i < a.h.n; i++) {
        const char *name = a.h.tensors[i].name;
        const char *suffix = strstr(name, ".lora_A.weight");
        if (!suffix)
            continue;
        char mod[256], wname[300], bname[300];
        snprintf(mod, sizeof mod, "%.*s", (int)(suffix - name), name);
        snprintf(wname, sizeof wname, "%s.weight", mod + strlen("base_model.model."));
        snprintf(bname, sizeof bname, "%s.lora_B.weight", mod);
        long wi = tvs_st_find(&b.h, wname), bi = tvs_st_find(&a.h, bname);
        cr_assert(wi >= 0 && bi >= 0, "%s", wname);
        size_t nw, na, nb;
        float *W = st_f32(&b, (size_t)wi, &nw), *A = st_f32(&a, i, &na),
              *B = st_f32(&a, (size_t)bi, &nb);
        size_t out_dim = b.h.tensors[wi].shape[0], in = b.h.tensors[wi].shape[1], r = 8;
        uint8_t *dst = o + 8 + b.h.header_len + b.h.tensors[wi].begin;
        for (size_t y = 0; y < out_dim; y++)
            for (size_t x = 0; x < in; x++) {
                float acc = 0;
                for (size_t k = 0; k < r; k++)
                    acc += B[y * r + k] * A[k * in + x];
                float v = W[y * in + x] + (float)scale * acc;
                uint16_t h = tvs_f32_to_bf16(v);
                dst[2 * (y * in + x)] = (uint8_t)h;
                dst[2 * (y * in + x) + 1] = (uint8_t)(h >> 8);
            }
        free(W), free(A), free(B);
    }
    cr_assert_eq(tt_write_file(out, o, b.len), 0);
    free(o);
    st_close(&b), st_close(&a);
}

Test(lossy_cli, lora_adapter_imports_as_low_rank_delta)
{
    ok("import", SHARED("base-v1.safetensors"), "--as", "base-v1");
    tt_run r = run("import", SHARED("lora-code"), "--lora", "--base", "base-v1", "--as", "lc");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "8 tensors"), "%s", r.out);
    tt_run_dispose(&r);
    char *got = path("lc.safetensors"), *want = path("ref.safetensors");
    ok("materialize", "base-v1 + lc", "-o", got);
    lora_reference(SHARED("base-v1.safetensors"), SHARED("lora-code/adapter_model.safetensors"),
                   want);
    /* the same sums in the same order: equal up to a rare last-bit tie */
    stfile g, w;
    st_open(&g, got);
    st_open(&w, want);
    size_t diff = 0, total = 0;
    for (size_t i = 0; i < w.h.n; i++) {
        size_t n, m;
        float *x = st_f32(&g, i, &n), *y = st_f32(&w, i, &m);
        for (size_t j = 0; j < n; j++)
            diff += x[j] != y[j];
        total += n;
        free(x), free(y);
    }
    cr_assert(diff * 10000 < total, "%zu of %zu elements differ", diff, total);
    st_close(&g), st_close(&w);
    json_t *units = run_json("show", "lc", "--units", "--json"), *u;
    size_t i;
    cr_assert_eq(json_array_size(units), 8);
    json_array_foreach(units, i, u)
        cr_assert_str_eq(json_string_value(json_object_get(u, "codec")), "lowrank");
    json_decref(units);
    /* tiny next to the model: rank 8 of 256x256 in 8 of 38 tensors */
    json_t *s = stats_ref("lc");
    cr_assert(num(s, "bits_per_param") < 0.3, "%.3f", num(s, "bits_per_param"));
    json_decref(s);
    /* compress turns it into another encoding; the low rank stays the cheapest */
    ok("compress", "lc", "--as", "lc2", "--max-error", "0.1");
    char *c2 = path("lc2.safetensors");
    ok("export", "lc2", "-o", c2);
    double worst;
    rel_error(SHARED("base-v1.safetensors"), got, c2, &worst);
    cr_assert(worst <= 0.1, "%.4f", worst);
    free(got), free(want), free(c2);
}

Test(lossy_cli, bad_input_is_refused_and_nothing_is_written)
{
    import_family();
    tt_run before = run("ls");
    refused("0 < B <= 16", "import", SHARED("ft-code.safetensors"), "--base", "base-v1",
            "--lossy", "--bits", "0", "--as", "x");
    refused("0 < B <= 16", "compress", "ft-math", "--as", "x", "--bits", "17");
    refused("0 < E < 1", "compress", "ft-math", "--as", "x", "--max-error", "1.5");
    refused("not a number", "compress", "ft-math", "--as", "x", "--max-error", "0.1x");
    refused("one of", "compress", "ft-math", "--as", "x", "--max-error", "0.1", "--bits", "2");
    refused("--lossy needs", "import", SHARED("ft-code.safetensors"), "--base", "base-v1",
            "--lossy", "--as", "x");
    refused("give --base", "import", SHARED("ft-code.safetensors"), "--lossy", "--bits", "2",
            "--as", "x");
    refused("is a full model", "compress", "base-v1", "--as", "x", "--bits", "2");
    refused("at least", "compress", "ft-math", "--as", "x", "--bits", "0.001");
    /* a LoRA whose factors do not fit the base: r = 8 factors under a config saying 4 */
    char *ad = path("bad-lora"), *cfg = tt_join(ad, "adapter_config.json");
    char *st = tt_join(ad, "adapter_model.safetensors");
    cr_assert_eq(tt_mkdirs(ad), 0);
    size_t len;
    uint8_t *b = tt_read_file(SHARED("lora-code/adapter_model.safetensors"), &len);
    cr_assert_eq(tt_write_file(st, b, len), 0);
    free(b);
    cr_assert_eq(tt_write_text(cfg, "{\"peft_type\": \"LORA\", \"r\": 4, \"lora_alpha\": 8, "
                                    "\"target_modules\": [\"q_proj\", \"v_proj\"]}"), 0);
    refused("do not fit r = 4", "import", ad, "--lora", "--base", "base-v1", "--as", "x");
    /* an adapter for a model with other shapes */
    cr_assert_eq(tt_write_text(cfg, "{\"r\": 8, \"lora_alpha\": 16, \"target_modules\": "
                                    "[\"q_proj\"]}"), 0);
    refused("not in the config's target_modules", "import", ad, "--lora", "--base", "base-v1",
            "--as", "x");
    cr_assert_eq(tt_write_text(cfg, "{\"r\": 8, \"lora_alpha\": 16}"), 0);
    refused("re-encode it afterwards", "import", ad, "--lora", "--base", "base-v1", "--as", "x",
            "--bits", "1");
    tt_tensor small[] = { { "model.layers.0.self_attn.q_proj.weight", "BF16", 2, { 128, 256 } },
                          { "model.layers.0.self_attn.v_proj.weight", "BF16", 2, { 256, 256 } },
                          { "model.layers.1.self_attn.q_proj.weight", "BF16", 2, { 256, 256 } },
                          { "model.layers.1.self_attn.v_proj.weight", "BF16", 2, { 256, 256 } },
                          { "model.layers.2.self_attn.q_proj.weight", "BF16", 2, { 256, 256 } },
                          { "model.layers.2.self_attn.v_proj.weight", "BF16", 2, { 256, 256 } },
                          { "model.layers.3.self_attn.q_proj.weight", "BF16", 2, { 256, 256 } },
                          { "model.layers.3.self_attn.v_proj.weight", "BF16", 2, { 256, 256 } } };
    char *other = path("other.safetensors");
    cr_assert_eq(tt_write_st_weights(other, small, 8, NULL, 3), 0);
    ok("import", other, "--as", "other");
    refused("do not fit", "import", ad, "--lora", "--base", "other", "--as", "x");
    cr_assert_eq(tt_write_text(cfg, "{\"r\": 8, \"lora_alpha\": 16, \"use_dora\": true}"), 0);
    refused("DoRA", "import", ad, "--lora", "--base", "base-v1", "--as", "x");
    cr_assert_eq(tt_write_text(cfg, "{\"r\": 8, "), 0);
    refused("adapter_config.json", "import", ad, "--lora", "--base", "base-v1", "--as", "x");
    /* nothing was written: the same refs, and fsck is clean */
    ok("rm", "other");
    tt_run after = run("ls");
    cr_assert_str_eq(before.out, after.out);
    tt_run_dispose(&before), tt_run_dispose(&after);
    tt_run f = run("fsck");
    cr_assert_eq(f.code, 0, "%s%s", f.out, f.err);
    tt_run_dispose(&f);
    free(ad), free(cfg), free(st), free(other);
}

/* Non-finite values in a fine-tune: their units are stored exactly. */
Test(lossy_cli, non_finite_values_survive_exactly)
{
    char *pb = path("b.safetensors"), *pf = path("f.safetensors"), *out = path("o.safetensors");
    tt_tensor t[] = { { "w", "BF16", 2, { 1024, 256 } } };   /* 16 units */
    cr_assert_eq(tt_write_st_weights(pb, t, 1, NULL, 11), 0);
    size_t len;
    uint8_t *f = tt_read_file(pb, &len);
    size_t data0 = 8 + (size_t)tvs_load_le64(f);
    uint64_t st = 3;
    for (size_t i = data0; i + 2 <= len; i += 2) {
        float x = tvs_bf16_to_f32((uint16_t)(f[i] | f[i + 1] << 8));
        uint16_t v = tvs_f32_to_bf16(x * (1.0f + 0.05f * ((tt_lcg(&st) % 3) - 1.0f)));
        f[i] = (uint8_t)v, f[i + 1] = (uint8_t)(v >> 8);
    }
    static const uint16_t odd[] = { 0x7fc0, 0x7f80, 0xff80, 0x7fc1 };   /* NaN, ±inf */
    static const size_t at[] = { 5, 40000, 40001, 65535 };
    for (int k = 0; k < 4; k++) {
        f[data0 + 2 * at[k]] = (uint8_t)odd[k];
        f[data0 + 2 * at[k] + 1] = (uint8_t)(odd[k] >> 8);
    }
    cr_assert_eq(tt_write_file(pf, f, len), 0);
    ok("import", pb, "--as", "b");
    /* three of the 16 units hold a non-finite value: 3 x 16 bits, the rest share 3 */
    ok("import", pf, "--base", "b", "--lossy", "--bits", "6", "--as", "nf");
    ok("export", "nf", "-o", out);
    size_t olen;
    uint8_t *o = tt_read_file(out, &olen);
    cr_assert_eq(olen, len);
    for (int k = 0; k < 4; k++)
        cr_assert_eq(o[data0 + 2 * at[k]] | o[data0 + 2 * at[k] + 1] << 8, odd[k],
                     "element %zu", at[k]);
    json_t *units = run_json("show", "nf", "--units", "--json"), *u;
    size_t i, verbatim = 0;
    json_array_foreach(units, i, u) {
        verbatim += strcmp(json_string_value(json_object_get(u, "codec")), "verbatim") == 0;
        cr_assert(isfinite(num(u, "rel_error")));
    }
    cr_assert(verbatim >= 1 && verbatim <= 3, "%zu verbatim units", verbatim);
    json_decref(units);
    free(f), free(o), free(pb), free(pf), free(out);
}
