/*
 * Executing plans (query/exec.c, tvs_plan_exec) and the output layout of
 * SPEC.md 4.4: any byte range [off, off + len) equals the same slice of the
 * whole output, for computed tensors, copied tensors and verbatim file
 * copies; `base + delta` is byte-identical to the fine-tuned file it was
 * imported from (a generated model, and the real ft-math over base-v1 when
 * TVS_SHARED_MODELS is there); --tensors / --layers / --shard select
 * exactly the tensors the SPEC says, shards partition the tensors and are
 * dealt by bytes; every output parses as safetensors and its tensors cover
 * the file.
 *
 * The generated base "B" has one tensor of three 1 MiB chunks (three blocks
 * when computed), small BF16 layers named model.layers.N.*, an F32 norm, an
 * I32 table and an empty tensor; "ft" and "ft2" are fine-tunes stored as
 * deltas of B.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "engine/model.h"
#include "format/codec.h"
#include "format/dtype.h"
#include "format/object.h"
#include "format/safetensors.h"
#include "query/plan.h"
#include "tests/support/support.h"

static char *dir;
static tvs_store *s;

#define BIG "model.embed.weight"
static const tt_tensor SHAPE[] = {
    { BIG, "BF16", 2, { 1536, 1024 } },   /* 3 MiB: three chunks, three blocks */
    { "model.layers.0.attn.weight", "BF16", 2, { 64, 64 } },
    { "model.layers.1.attn.weight", "BF16", 2, { 64, 64 } },
    { "model.layers.10.mlp.weight", "BF16", 2, { 32, 16 } },
    { "model.layers.2.mlp.weight", "BF16", 2, { 128, 64 } },
    { "model.layers.3.empty", "BF16", 2, { 0, 4 } },
    { "model.norm.weight", "F32", 1, { 64 } },
    { "model.positions", "I32", 1, { 10 } },
    { "z.head", "BF16", 2, { 256, 96 } },
};
#define N_SHAPE (sizeof SHAPE / sizeof *SHAPE)

/* ---- fixtures */

static char *path_of(const char *name) { return tt_fmt("%s/%s.safetensors", dir, name); }

/* A fine-tune: every @p step-th element of the BF16 tensors but z.head moved
 * up by one to three ulps. */
static void derive(const char *from, const char *to, int step, uint64_t seed)
{
    size_t len;
    uint8_t *b = tt_read_file(from, &len);
    cr_assert_not_null(b);
    tvs_st_header h;
    tt_ok(tvs_st_parse(&h, (tvs_span){ b, len }));
    uint8_t *data = b + 8 + h.header_len;
    uint64_t st = seed;
    for (size_t i = 0; i < h.n; i++) {
        if (h.tensors[i].dtype != TVS_DTYPE_BF16 || !strcmp(h.tensors[i].name, "z.head"))
            continue;   /* z.head stays as it is: copied even in computed queries */
        for (uint64_t o = h.tensors[i].begin; o + 2 <= h.tensors[i].end; o += 2 * (uint64_t)step) {
            uint16_t v = (uint16_t)(data[o] | data[o + 1] << 8);
            v = (uint16_t)(v + 1 + (tt_lcg(&st) % 3));
            data[o] = (uint8_t)v;
            data[o + 1] = (uint8_t)(v >> 8);
        }
    }
    tvs_st_header_dispose(&h);
    cr_assert_eq(tt_write_file(to, b, len), 0);
    free(b);
}

static void import_file(const char *path, const char *ref, const char *base, const char *parent)
{
    tt_ok(tt_import_with(s, path, ref, base, parent, 0));
}

static void setup(void)
{
    tt_ok(tt_store_new(&dir, &s));
    char *pb = path_of("B"), *pf = path_of("ft"), *pf2 = path_of("ft2");
    cr_assert_eq(tt_write_st_weights(pb, SHAPE, N_SHAPE, "{\"format\":\"pt\"}", 3), 0);
    derive(pb, pf, 3, 7);
    derive(pb, pf2, 5, 8);
    import_file(pb, "B", NULL, NULL);
    import_file(pf, "ft", "B", NULL);
    import_file(pf2, "ft2", "B", NULL);
    free(pb);
    free(pf);
    free(pf2);
}

static void teardown(void)
{
    tvs_store_close(s);
    tt_rmtree(dir);
    free(dir);
    tt_leak_check();
}

TestSuite(exec, .init = setup, .fini = teardown, .timeout = 120);

/* ---- helpers */

static tt_planned plan_of(const char *q, const tvs_plan_opts *o)
{
    tvs_plan_opts d = TVS_PLAN_OPTS_INIT;
    d.threads = 2;
    return tt_plan_of(s, q, o ? o : &d);
}

static tvs_buf exec_range(tvs_plan *p, uint64_t off, uint64_t len)
{
    tvs_buf b = TVS_BUF_INIT;
    int rc = tvs_plan_exec(p, off, len, tt_sink_buf, &b);
    cr_assert_eq(rc, 0, "exec [%llu, +%llu): %d (%s)", (unsigned long long)off,
                 (unsigned long long)len, rc, tvs_errmsg());
    return b;
}

static tvs_buf output_of(const char *q, const tvs_plan_opts *o)
{
    tt_planned r = plan_of(q, o);
    tvs_buf b = exec_range(r.p, 0, UINT64_MAX);
    cr_assert_eq(b.len, tvs_plan_size(r.p), "%s: %zu bytes, planned %llu", q, b.len,
                 (unsigned long long)tvs_plan_size(r.p));
    tt_planned_free(&r);
    return b;
}

/* The output parses, its tensors tile the data region (tvs_st_parse checks
 * that), in name order; returns the header. */
static tvs_st_header parse_output(const tvs_buf *b, int name_order)
{
    tvs_st_header h;
    int rc = tvs_st_parse(&h, (tvs_span){ b->ptr, b->len });
    cr_assert_eq(rc, 0, "the output is not a valid safetensors file: %s", tvs_errmsg());
    cr_assert_eq(8 + h.header_len + h.data_len, b->len);
    cr_assert_eq(h.header_len % 8, 0);
    for (size_t i = 1; name_order && i < h.n; i++)
        cr_assert_lt(strcmp(h.tensors[i - 1].name, h.tensors[i].name), 0,
                     "%s before %s", h.tensors[i - 1].name, h.tensors[i].name);
    return h;
}

static int has_tensor(const tvs_st_header *h, const char *name) { return tvs_st_find(h, name) >= 0; }

/* ---- byte ranges */

static void check_range(tvs_plan *p, const tvs_buf *full, uint64_t off, uint64_t len)
{
    tvs_buf b = exec_range(p, off, len);
    uint64_t end = len > full->len - off ? full->len : off + len;
    cr_assert_eq(b.len, end - off, "[%llu, +%llu): %zu bytes, expected %llu",
                 (unsigned long long)off, (unsigned long long)len, b.len,
                 (unsigned long long)(end - off));
    if (b.len)
        cr_assert_eq(memcmp(b.ptr, full->ptr + off, b.len), 0, "[%llu, +%llu) differs",
                     (unsigned long long)off, (unsigned long long)len);
    tvs_buf_dispose(&b);
}

static void check_ranges(const char *q, int expect_copy)
{
    tt_planned r = plan_of(q, NULL);
    cr_assert_eq(tvs_plan_is_copy(r.p), expect_copy, "%s", q);
    tvs_buf full = exec_range(r.p, 0, UINT64_MAX);
    uint64_t size = tvs_plan_size(r.p);
    cr_assert_eq(full.len, size);
    tvs_st_header h = parse_output(&full, !expect_copy);
    uint64_t hl = 8 + h.header_len;

    uint64_t pairs[128][2];
    size_t n = 0;
#define PAIR(o, l) (pairs[n][0] = (o), pairs[n][1] = (l), n++)
    PAIR(0, 0);
    PAIR(0, 1);
    PAIR(0, 8);
    PAIR(3, 20);                    /* inside the header */
    PAIR(0, hl);                    /* exactly the header */
    PAIR(hl - 3, 10);               /* straddling header and data */
    PAIR(hl - 1, 1);
    PAIR(hl, 1);
    PAIR(hl, 0);
    PAIR(hl + 1, 0);                /* len 0 inside a tensor */
    PAIR(size - 1, 1);              /* the last byte */
    PAIR(size - 1, 100);            /* clipped at the end */
    PAIR(size, 0);                  /* off == size */
    PAIR(size, 10);
    PAIR(size, UINT64_MAX);
    PAIR(5, UINT64_MAX);
    PAIR(hl + 12345, UINT64_MAX);
    for (size_t i = 0; i < h.n; i++) {
        uint64_t b0 = hl + h.tensors[i].begin, b1 = hl + h.tensors[i].end;
        if (b1 == b0)
            continue;
        PAIR(b0, b1 - b0);          /* one tensor */
        PAIR(b0 - 1, 2);            /* across the start of a tensor */
        PAIR(b1 - 3, 9);            /* its last bytes and the next tensor's first */
    }
    long big = tvs_st_find(&h, BIG);
    cr_assert_geq(big, 0);
    uint64_t bb = hl + h.tensors[big].begin;
    PAIR(bb + (1u << 20) - 7, 14);          /* across a chunk / block boundary */
    PAIR(bb + (1u << 20), 1u << 20);        /* exactly the second block */
    PAIR(bb + (2u << 20) + 3, 1u << 20);    /* the third block and what follows */
    PAIR(bb + 100, 3u << 20);               /* three blocks */
    uint64_t st = 42;
    for (int k = 0; k < 12; k++) {
        uint64_t o = ((uint64_t)tt_lcg(&st) << 16 ^ tt_lcg(&st)) % (size + 1);
        uint64_t l = tt_lcg(&st) % (tt_lcg(&st) % 2 ? 64 : 1u << 21);
        PAIR(o, l);
    }
#undef PAIR
    for (size_t i = 0; i < n; i++)
        check_range(r.p, &full, pairs[i][0], pairs[i][1]);

    /* past the end */
    tvs_buf b = TVS_BUF_INIT;
    cr_assert_eq(tvs_plan_exec(r.p, size + 1, 1, tt_sink_buf, &b), TVS_EINVAL);
    cr_assert_eq(tvs_plan_exec(r.p, size + 1, 0, tt_sink_buf, &b), TVS_EINVAL);
    cr_assert_eq(tvs_plan_exec(r.p, UINT64_MAX, UINT64_MAX, tt_sink_buf, &b), TVS_EINVAL);
    cr_assert_eq(b.len, 0);
    tvs_buf_dispose(&b);

    tvs_st_header_dispose(&h);
    tvs_buf_dispose(&full);
    tt_planned_free(&r);
}

Test(exec, byte_ranges_of_a_computed_query_are_slices_of_its_output)
{
    check_ranges("B + 0.5*ft + 0.25*ft2", 0);
}

Test(exec, byte_ranges_of_a_ties_merge_are_slices_of_its_output)
{
    /* thresholds are per tensor: a range must see the same ones as the whole */
    check_ranges("B + ties(ft, ft2; density=0.3)", 0);
}

Test(exec, byte_ranges_of_a_copied_file_are_slices_of_it)
{
    check_ranges("B + ft", 1);
}

Test(exec, a_range_computed_first_gives_the_same_bytes_as_a_fresh_plan)
{
    const char *q = "B + breadcrumbs(ft, ft2; top=0.05, bottom=0.5) - 0.5*ties(ft2; density=0.2)";
    tvs_buf fresh = output_of(q, NULL);
    tt_planned r = plan_of(q, NULL);
    tvs_st_header h = parse_output(&fresh, 1);
    long i = tvs_st_find(&h, "model.layers.2.mlp.weight");
    uint64_t off = 8 + h.header_len + h.tensors[i].begin + 100;
    tvs_buf part = exec_range(r.p, off, 50);
    cr_assert_eq(memcmp(part.ptr, fresh.ptr + off, 50), 0);
    tvs_buf all = exec_range(r.p, 0, UINT64_MAX);
    cr_assert_eq(all.len, fresh.len);
    cr_assert_eq(memcmp(all.ptr, fresh.ptr, all.len), 0);
    tvs_st_header_dispose(&h);
    tvs_buf_dispose(&part);
    tvs_buf_dispose(&all);
    tvs_buf_dispose(&fresh);
    tt_planned_free(&r);
}

Test(exec, a_length_past_the_end_is_clipped_even_when_off_plus_len_overflows)
{
    tt_planned r = plan_of("B + 0.5*ft", NULL);
    tvs_buf full = exec_range(r.p, 0, UINT64_MAX);
    tvs_buf a = exec_range(r.p, 10, UINT64_MAX - 5);
    tvs_buf b = exec_range(r.p, full.len - 2, UINT64_MAX - 1);
    size_t n = full.len, na = a.len, nb = b.len;
    int same_a = na == n - 10 && memcmp(a.ptr, full.ptr + 10, na) == 0;
    int same_b = nb == 2 && memcmp(b.ptr, full.ptr + n - 2, 2) == 0;
    tvs_buf_dispose(&a);
    tvs_buf_dispose(&b);
    tvs_buf_dispose(&full);
    tt_planned_free(&r);
    cr_assert(same_a, "[10, +2^64-6): %zu bytes, expected bytes 10..%zu of the output", na, n);
    cr_assert(same_b, "[size-2, +2^64-2): %zu bytes, expected the last 2", nb);
}

static int sink_fail_after(void *payload, const uint8_t *p, size_t n)
{
    int *left = payload;
    return --*left < 0 ? TVS_EIO : 0;
}

Test(exec, a_sink_error_stops_the_run_and_is_returned)
{
    tt_planned r = plan_of("B + 0.5*ft + 0.5*ft2", NULL);
    for (int k = 0; k < 4; k++) {
        int left = k;
        cr_assert_eq(tvs_plan_exec(r.p, 0, UINT64_MAX, sink_fail_after, &left), TVS_EIO);
    }
    /* the plan still works afterwards */
    tvs_buf b = exec_range(r.p, 0, UINT64_MAX);
    cr_assert_eq(b.len, tvs_plan_size(r.p));
    tvs_buf_dispose(&b);
    tt_planned_free(&r);
}

/* ---- base + delta is the fine-tuned file */

static void assert_output_is_file(const char *q, const char *file)
{
    tvs_buf b = output_of(q, NULL);
    size_t len;
    uint8_t *orig = tt_read_file(file, &len);
    cr_assert_not_null(orig, "%s", file);
    cr_assert_eq(b.len, len, "%s: %zu bytes, %s has %zu", q, b.len, file, len);
    size_t at = 0;
    while (at < len && b.ptr[at] == orig[at])
        at++;
    cr_assert_eq(at, len, "%s differs from %s at byte %zu", q, file, at);
    free(orig);
    tvs_buf_dispose(&b);
}

Test(exec, base_plus_delta_is_byte_identical_to_the_fine_tuned_file)
{
    char *pf = path_of("ft"), *pf2 = path_of("ft2"), *pb = path_of("B");
    assert_output_is_file("B + ft", pf);
    assert_output_is_file("ft on B", pf);
    assert_output_is_file("ft2 + B", pf2);
    assert_output_is_file("B", pb);
    assert_output_is_file("B + ft - ft", pb);
    free(pf);
    free(pf2);
    free(pb);
}

/* Each tensor of @p out holds the same bytes as the tensor of that name in @p file. */
static void assert_tensors_from(const tvs_buf *out, const char *file)
{
    size_t len;
    uint8_t *orig = tt_read_file(file, &len);
    cr_assert_not_null(orig);
    tvs_st_header ho, h = parse_output(out, 1);
    tt_ok(tvs_st_parse(&ho, (tvs_span){ orig, len }));
    for (size_t i = 0; i < h.n; i++) {
        long j = tvs_st_find(&ho, h.tensors[i].name);
        cr_assert_geq(j, 0, "%s", h.tensors[i].name);
        uint64_t n = h.tensors[i].end - h.tensors[i].begin;
        cr_assert_eq(n, ho.tensors[j].end - ho.tensors[j].begin);
        cr_assert_eq(memcmp(out->ptr + 8 + h.header_len + h.tensors[i].begin,
                            orig + 8 + ho.header_len + ho.tensors[j].begin, (size_t)n), 0,
                     "tensor %s", h.tensors[i].name);
    }
    tvs_st_header_dispose(&h);
    tvs_st_header_dispose(&ho);
    free(orig);
}

Test(exec, with_a_selection_base_plus_delta_copies_each_tensor_bit_exact)
{
    tvs_plan_opts o = TVS_PLAN_OPTS_INIT;
    o.tensors = ".";
    o.threads = 2;
    tt_planned r = plan_of("B + ft", &o);
    cr_assert_eq(tvs_plan_is_copy(r.p), 0);
    cr_assert_eq(tvs_plan_tensors(r.p), N_SHAPE);
    tt_planned_free(&r);
    tvs_buf b = output_of("B + ft", &o);
    char *pf = path_of("ft");
    assert_tensors_from(&b, pf);
    free(pf);
    tvs_buf_dispose(&b);
}

static char *shared_file(const char *name)
{
    char *p = tt_fmt("%s/%s", TVS_SHARED_MODELS, name);
    if (!tt_exists(p)) {
        free(p);
        return NULL;
    }
    return p;
}

Test(exec, the_real_ft_math_over_base_v1_is_rebuilt_byte_identical)
{
    char *b1 = shared_file("base-v1.safetensors"), *fm = shared_file("ft-math.safetensors");
    if (!b1 || !fm) {
        free(b1);
        free(fm);
        cr_skip_test("no shared models in %s", TVS_SHARED_MODELS);
    }
    import_file(b1, "base-v1", NULL, NULL);
    import_file(fm, "ft-math", "base-v1", NULL);
    assert_output_is_file("base-v1 + ft-math", fm);
    assert_output_is_file("ft-math on base-v1", fm);
    /* tensor by tensor, with a generated header */
    tvs_plan_opts o = TVS_PLAN_OPTS_INIT;
    o.tensors = "^(model|lm_head)";
    tvs_buf b = output_of("base-v1 + ft-math", &o);
    assert_tensors_from(&b, fm);
    tvs_st_header h = parse_output(&b, 1);
    cr_assert_eq(h.n, 39);   /* the README says 38; the file has 39 */
    tvs_st_header_dispose(&h);
    tvs_buf_dispose(&b);
    free(b1);
    free(fm);
}

static float bf(const uint8_t *p)
{
    uint32_t u = (uint32_t)(p[0] | p[1] << 8) << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    u += 0x7fffu + (u >> 16 & 1);
    return (uint16_t)(u >> 16);
}

Test(exec, the_real_transfer_of_ft_math_to_base_v2_is_computed_exactly)
{
    char *b1 = shared_file("base-v1.safetensors"), *b2 = shared_file("base-v2.safetensors");
    char *fm = shared_file("ft-math.safetensors");
    if (!b1 || !b2 || !fm) {
        free(b1);
        free(b2);
        free(fm);
        cr_skip_test("no shared models in %s", TVS_SHARED_MODELS);
    }
    import_file(b1, "base-v1", NULL, NULL);
    import_file(b2, "base-v2", NULL, "base-v1");
    import_file(fm, "ft-math", "base-v1", NULL);
    tvs_buf out = output_of("transfer(ft-math, onto=base-v2)", NULL);
    tvs_st_header h = parse_output(&out, 1);
    size_t l1, l2, lm;
    uint8_t *d1 = tt_read_file(b1, &l1), *d2 = tt_read_file(b2, &l2), *dm = tt_read_file(fm, &lm);
    tvs_st_header h1, h2, hm;
    tt_ok(tvs_st_parse(&h1, (tvs_span){ d1, l1 }));
    tt_ok(tvs_st_parse(&h2, (tvs_span){ d2, l2 }));
    tt_ok(tvs_st_parse(&hm, (tvs_span){ dm, lm }));
    cr_assert_eq(h.n, h2.n);
    for (size_t i = 0; i < h.n; i++) {
        const char *name = h.tensors[i].name;
        long i1 = tvs_st_find(&h1, name), i2 = tvs_st_find(&h2, name), im = tvs_st_find(&hm, name);
        cr_assert(i1 >= 0 && i2 >= 0 && im >= 0, "%s", name);
        const uint8_t *o = out.ptr + 8 + h.header_len + h.tensors[i].begin;
        const uint8_t *p1 = d1 + 8 + h1.header_len + h1.tensors[i1].begin;
        const uint8_t *p2 = d2 + 8 + h2.header_len + h2.tensors[i2].begin;
        const uint8_t *pm = dm + 8 + hm.header_len + hm.tensors[im].begin;
        for (uint64_t e = 0; e < h.tensors[i].n_elems; e++) {
            float d = bf(pm + 2 * e) - bf(p1 + 2 * e);
            uint16_t want = to_bf16(bf(p2 + 2 * e) + d);
            uint16_t got = (uint16_t)(o[2 * e] | o[2 * e + 1] << 8);
            cr_assert_eq(got, want, "%s[%llu]: 0x%04x, expected 0x%04x", name,
                         (unsigned long long)e, got, want);
        }
    }
    tvs_st_header_dispose(&h);
    tvs_st_header_dispose(&h1);
    tvs_st_header_dispose(&h2);
    tvs_st_header_dispose(&hm);
    free(d1);
    free(d2);
    free(dm);
    tvs_buf_dispose(&out);
    free(b1);
    free(b2);
    free(fm);
}

/* ---- selection */

static tvs_st_header select_(const char *q, const char *re, int lo, int hi, unsigned si,
                             unsigned sn, int dtype, tvs_buf *keep)
{
    tvs_plan_opts o = TVS_PLAN_OPTS_INIT;
    o.tensors = re;
    o.layer_lo = lo;
    o.layer_hi = hi;
    o.shard_i = si;
    o.shard_n = sn;
    o.dtype = dtype;
    o.threads = 2;
    *keep = output_of(q, &o);
    return parse_output(keep, 1);
}

Test(exec, tensors_selects_names_matching_an_extended_regex)
{
    tvs_buf b;
    tvs_st_header h = select_("B + 0.5*ft", "layers\\.(0|2)\\.|norm\\.weight$", 0, -1, 0, 0, 0, &b);
    cr_assert_eq(h.n, 3);
    cr_assert(has_tensor(&h, "model.layers.0.attn.weight"));
    cr_assert(has_tensor(&h, "model.layers.2.mlp.weight"));
    cr_assert(has_tensor(&h, "model.norm.weight"));
    tvs_st_header_dispose(&h);
    tvs_buf_dispose(&b);
}

Test(exec, layers_keeps_the_range_and_every_tensor_without_a_layer)
{
    tvs_buf b;
    tvs_st_header h = select_("B + 0.5*ft", NULL, 1, 2, 0, 0, 0, &b);
    static const char *const want[] = { BIG, "model.layers.1.attn.weight",
                                        "model.layers.2.mlp.weight", "model.norm.weight",
                                        "model.positions", "z.head" };
    cr_assert_eq(h.n, 6);
    for (size_t i = 0; i < 6; i++)
        cr_assert(has_tensor(&h, want[i]), "%s", want[i]);
    tvs_st_header_dispose(&h);
    tvs_buf_dispose(&b);

    /* layer 1 is not layer 10 */
    h = select_("B + 0.5*ft", NULL, 1, 1, 0, 0, 0, &b);
    cr_assert(has_tensor(&h, "model.layers.1.attn.weight"));
    cr_assert(!has_tensor(&h, "model.layers.10.mlp.weight"));
    cr_assert(!has_tensor(&h, "model.layers.0.attn.weight"));
    tvs_st_header_dispose(&h);
    tvs_buf_dispose(&b);

    h = select_("B + 0.5*ft", NULL, 3, 10, 0, 0, 0, &b);
    cr_assert(has_tensor(&h, "model.layers.10.mlp.weight"));
    cr_assert(has_tensor(&h, "model.layers.3.empty"));
    cr_assert(!has_tensor(&h, "model.layers.2.mlp.weight"));
    tvs_st_header_dispose(&h);
    tvs_buf_dispose(&b);

    /* with a regex too: both must hold */
    h = select_("B + 0.5*ft", "^model\\.layers", 0, 1, 0, 0, 0, &b);
    cr_assert_eq(h.n, 2);
    tvs_st_header_dispose(&h);
    tvs_buf_dispose(&b);
}

Test(exec, layers_reads_the_layer_number_of_layers_dot_n_dot)
{
    /* SPEC 4.4: "tensors whose name has layers.N." are kept when A <= N <= B,
     * "and every tensor without a layer number" */
    tt_tensor t[] = { { "a.layers.x.layers.5.w", "BF16", 1, { 8 } },   /* layer 5 */
                      { "layers.2.w", "BF16", 1, { 8 } },              /* layer 2 */
                      { "layers.3x.w", "BF16", 1, { 8 } },             /* no layer number */
                      { "layers.9.w", "BF16", 1, { 8 } },              /* layer 9 */
                      { "model.layers.7", "BF16", 1, { 8 } } };        /* no "layers.7." */
    char *p = path_of("Y");
    cr_assert_eq(tt_write_st_weights(p, t, 5, NULL, 8), 0);
    import_file(p, "Y", NULL, NULL);
    free(p);
    tvs_buf b;
    tvs_st_header h = select_("Y", NULL, 0, 2, 0, 0, 0, &b);
    int ok2 = has_tensor(&h, "layers.2.w"), no9 = !has_tensor(&h, "layers.9.w");
    int no5 = !has_tensor(&h, "a.layers.x.layers.5.w");
    int has3x = has_tensor(&h, "layers.3x.w"), has7 = has_tensor(&h, "model.layers.7");
    tvs_st_header_dispose(&h);
    tvs_buf_dispose(&b);
    cr_assert(ok2 && no9, "layers.2.w kept, layers.9.w dropped");
    cr_assert(no5 && has3x && has7,
              "a.layers.x.layers.5.w (layer 5) %s, layers.3x.w (no layer number) %s, "
              "model.layers.7 (no 'layers.7.') %s",
              no5 ? "dropped" : "KEPT", has3x ? "kept" : "DROPPED", has7 ? "kept" : "DROPPED");
}

Test(exec, a_folder_model_gives_one_file_with_the_tensors_of_every_shard)
{
    char *fd = tt_join(dir, "folder"), *fd2 = tt_join(dir, "folder2");
    tt_ok(tt_mkdirs(fd));
    tt_ok(tt_mkdirs(fd2));
    tt_tensor t1[] = { { "a.weight", "BF16", 2, { 64, 64 } }, { "c.weight", "BF16", 1, { 64 } } };
    tt_tensor t2[] = { { "b.weight", "BF16", 2, { 32, 64 } } };
    char *s1 = tt_join(fd, "model-00001-of-00002.safetensors");
    char *s2 = tt_join(fd, "model-00002-of-00002.safetensors");
    char *f1 = tt_join(fd2, "model-00001-of-00002.safetensors");
    char *f2 = tt_join(fd2, "model-00002-of-00002.safetensors");
    char *cfg = tt_join(fd, "config.json"), *cfg2 = tt_join(fd2, "config.json");
    cr_assert_eq(tt_write_st_weights(s1, t1, 2, "{\"format\":\"pt\"}", 1), 0);
    cr_assert_eq(tt_write_st_weights(s2, t2, 1, "{\"format\":\"pt\"}", 2), 0);
    cr_assert_eq(tt_write_text(cfg, "{\"hidden\": 64}\n"), 0);
    cr_assert_eq(tt_write_text(cfg2, "{\"hidden\": 64}\n"), 0);
    derive(s1, f1, 2, 5);
    derive(s2, f2, 3, 6);
    import_file(fd, "Fo", NULL, NULL);
    import_file(fd2, "dFo", "Fo", NULL);

    tvs_buf b = output_of("Fo + dFo", NULL);
    tvs_st_header h = parse_output(&b, 1);
    cr_assert_eq(h.n, 3);
    /* each tensor is dFo's, bit for bit */
    const char *files[] = { f1, f2 };
    for (int k = 0; k < 2; k++) {
        size_t len;
        uint8_t *orig = tt_read_file(files[k], &len);
        tvs_st_header ho;
        tt_ok(tvs_st_parse(&ho, (tvs_span){ orig, len }));
        for (size_t j = 0; j < ho.n; j++) {
            long i = tvs_st_find(&h, ho.tensors[j].name);
            cr_assert_geq(i, 0, "%s", ho.tensors[j].name);
            cr_assert_eq(memcmp(b.ptr + 8 + h.header_len + h.tensors[i].begin,
                                orig + 8 + ho.header_len + ho.tensors[j].begin,
                                (size_t)(ho.tensors[j].end - ho.tensors[j].begin)), 0, "%s",
                         ho.tensors[j].name);
        }
        tvs_st_header_dispose(&ho);
        free(orig);
    }
    tvs_st_header_dispose(&h);
    tvs_buf_dispose(&b);
    free(fd);
    free(fd2);
    free(s1);
    free(s2);
    free(f1);
    free(f2);
    free(cfg);
    free(cfg2);
}

Test(exec, tensor_names_are_escaped_in_the_output_header)
{
    /* a name with a quote, a backslash, a control character and UTF-8 */
    const char *json = "{\"__metadata__\":{\"format\":\"pt\"},"
                       "\"a\\\"b\\\\c\\u0001d\\u00e9\":"
                       "{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[0,8]}}       ";
    uint8_t data[8] = { 0x80, 0x3f, 0x00, 0x40, 0x40, 0x40, 0x80, 0x40 };
    char *p = path_of("N");
    cr_assert_eq(strlen(json) % 8, 0, "%zu", strlen(json));
    cr_assert_eq(tt_write_st_raw(p, json, data, 8), 0);
    import_file(p, "N", NULL, NULL);
    free(p);
    tvs_plan_opts o = TVS_PLAN_OPTS_INIT;
    o.dtype = TVS_DTYPE_F32;   /* not a copy: the header is generated */
    tvs_buf b = output_of("N", &o);
    tvs_st_header h = parse_output(&b, 1);
    cr_assert_eq(h.n, 1);
    cr_assert_str_eq(h.tensors[0].name, "a\"b\\c\001d\xc3\xa9");
    cr_assert_eq(tvs_load_le32(b.ptr + 8 + h.header_len), 0x3f800000);
    tvs_st_header_dispose(&h);
    tvs_buf_dispose(&b);
}

typedef struct {
    char name[64];
    uint64_t bytes;
} sized;

static int by_size_then_name(const void *a, const void *b)
{
    const sized *x = a, *y = b;
    if (x->bytes != y->bytes)
        return x->bytes < y->bytes ? 1 : -1;
    return strcmp(x->name, y->name);
}

/* Shards of @p q partition its tensors, each dealt by SPEC 4.4. */
static void check_shards(const char *q, unsigned N, int dtype)
{
    tvs_buf whole;
    tvs_st_header hw = select_(q, NULL, 0, -1, 0, 0, dtype, &whole);
    sized t[32];
    size_t n = hw.n;
    cr_assert_leq(n, 32);
    for (size_t i = 0; i < n; i++) {
        snprintf(t[i].name, sizeof t[i].name, "%s", hw.tensors[i].name);
        t[i].bytes = hw.tensors[i].end - hw.tensors[i].begin;
    }
    /* the SPEC's dealing: largest first (then name), to the lightest shard,
     * lowest index on ties */
    qsort(t, n, sizeof *t, by_size_then_name);
    unsigned owner[32];
    uint64_t load[16] = { 0 };
    for (size_t i = 0; i < n; i++) {
        unsigned best = 0;
        for (unsigned k = 1; k < N; k++)
            if (load[k] < load[best])
                best = k;
        load[best] += t[i].bytes;
        owner[i] = best;
    }
    size_t seen = 0;
    for (unsigned k = 0; k < N; k++) {
        tvs_buf b;
        tvs_st_header h = select_(q, NULL, 0, -1, k, N, dtype, &b);
        uint64_t bytes = 0;
        for (size_t i = 0; i < h.n; i++) {
            size_t j = 0;
            while (j < n && strcmp(t[j].name, h.tensors[i].name))
                j++;
            cr_assert_lt(j, n, "shard %u has %s, which the whole output has not", k,
                         h.tensors[i].name);
            cr_assert_eq(owner[j], k, "%s is in shard %u, expected %u", t[j].name, k,
                         owner[j]);
            bytes += h.tensors[i].end - h.tensors[i].begin;
            /* the same bytes as in the unsharded output */
            long w = tvs_st_find(&hw, t[j].name);
            cr_assert_eq(memcmp(b.ptr + 8 + h.header_len + h.tensors[i].begin,
                                whole.ptr + 8 + hw.header_len + hw.tensors[w].begin,
                                (size_t)t[j].bytes), 0, "%s", t[j].name);
        }
        cr_assert_eq(bytes, load[k], "shard %u holds %llu bytes, expected %llu", k,
                     (unsigned long long)bytes, (unsigned long long)load[k]);
        seen += h.n;
        tvs_st_header_dispose(&h);
        tvs_buf_dispose(&b);
    }
    cr_assert_eq(seen, n, "every tensor in exactly one shard");
    tvs_st_header_dispose(&hw);
    tvs_buf_dispose(&whole);
}

Test(exec, shards_partition_the_tensors_balanced_by_bytes)
{
    check_shards("B + 0.5*ft", 3, 0);
    check_shards("B + ft", 3, 0);
    check_shards("B + ft", 2, TVS_DTYPE_F32);
    check_shards("ft + ft2", 4, 0);
}

Test(exec, the_output_covers_the_file_for_every_dtype)
{
    int dtypes[] = { 0, TVS_DTYPE_BF16, TVS_DTYPE_F16, TVS_DTYPE_F32 };
    for (size_t k = 0; k < 4; k++) {
        tvs_buf b;
        tvs_st_header h = select_("B + 0.5*ft", NULL, 0, -1, 0, 0, dtypes[k], &b);
        cr_assert_eq(h.n, N_SHAPE);
        for (size_t i = 0; i < h.n; i++) {
            tvs_dtype want = !strcmp(h.tensors[i].name, "model.positions") ? TVS_DTYPE_I32
                           : !dtypes[k] && !strcmp(h.tensors[i].name, "model.norm.weight")
                               ? TVS_DTYPE_F32
                           : dtypes[k] ? (tvs_dtype)dtypes[k] : TVS_DTYPE_BF16;
            cr_assert_eq(h.tensors[i].dtype, want, "%s: dtype %d, expected %d",
                         h.tensors[i].name, h.tensors[i].dtype, want);
        }
        tvs_st_header_dispose(&h);
        tvs_buf_dispose(&b);
    }
}

/* ---- tensors stored with other chunk sizes */

typedef struct {
    const uint8_t *data;
    size_t nbytes;
    uint32_t chunk_size;
    const char *header;
    tvs_id model;
} handmade;

/* Store a one-file model "M" holding tensor "w" cut into raw chunks of
 * hm->chunk_size bytes (SPEC 2.2 allows 1 byte to 64 MiB; import writes
 * 1 MiB, but a reader must take any valid object). */
static int put_handmade(tvs_txn *txn, void *payload)
{
    handmade *hm = payload;
    uint32_t n = (uint32_t)((hm->nbytes + hm->chunk_size - 1) / hm->chunk_size);
    uint8_t *ids = malloc((size_t)n * TVS_ID_LEN);
    uint8_t *obj = malloc(TVS_CHUNK_HDR + hm->chunk_size);
    int rc = 0;
    for (uint32_t i = 0; !rc && i < n; i++) {
        size_t off = (size_t)i * hm->chunk_size;
        size_t len = TVS_MIN((size_t)hm->chunk_size, hm->nbytes - off);
        obj[0] = 1;   /* chunk */
        obj[1] = 0;   /* raw */
        tvs_store_le32(obj + 2, (uint32_t)len);
        memcpy(obj + TVS_CHUNK_HDR, hm->data + off, len);
        tvs_id id;
        rc = tvs_obj_put_new(&id, txn, (tvs_span){ obj, TVS_CHUNK_HDR + len });
        memcpy(ids + (size_t)i * TVS_ID_LEN, id.b, TVS_ID_LEN);
    }
    free(obj);
    tvs_tensor_obj t;
    memset(&t, 0, sizeof t);
    t.dtype = TVS_DTYPE_BF16;
    t.encoding = TVS_ENC_CHUNKED;
    t.rank = 1;
    t.shape[0] = hm->nbytes / 2;
    t.nbytes = hm->nbytes;
    tvs_id_of(&t.checksum, hm->data, hm->nbytes);
    t.chunk_size = hm->chunk_size;
    t.n_chunks = n;
    t.chunk_ids = ids;
    tvs_buf tb = TVS_BUF_INIT, mb = TVS_BUF_INIT;
    tvs_id tid;
    if (!rc) rc = tvs_tensor_encode(&tb, &t);
    if (!rc) rc = tvs_obj_put_new(&tid, txn, (tvs_span){ tb.ptr, tb.len });
    tvs_model_entry e = { { (const uint8_t *)"w", 1 }, tid };
    tvs_model_file f;
    memset(&f, 0, sizeof f);
    f.name = (tvs_span){ (const uint8_t *)"m.safetensors", 13 };
    f.kind = TVS_FILE_SAFETENSORS;
    f.header = (tvs_span){ (const uint8_t *)hm->header, strlen(hm->header) };
    f.tensors = &e;
    f.n_tensors = 1;
    tvs_model_obj m;
    memset(&m, 0, sizeof m);
    m.kind = TVS_MODEL_FULL;
    m.flags = TVS_MODEL_SINGLE_FILE;
    m.author = (tvs_span){ (const uint8_t *)"test", 4 };
    m.message = (tvs_span){ (const uint8_t *)"hand-made", 9 };
    m.files = &f;
    m.n_files = 1;
    if (!rc) rc = tvs_model_encode(&mb, &m);
    if (!rc) rc = tvs_obj_put_new(&hm->model, txn, (tvs_span){ mb.ptr, mb.len });
    if (!rc) rc = tvs_ref_set(txn, "M", &hm->model, NULL, "hand-made");
    tvs_buf_dispose(&tb);
    tvs_buf_dispose(&mb);
    free(ids);
    return rc;
}

static void check_chunk_size(uint32_t chunk_size, size_t nbytes)
{
    uint8_t *data = malloc(nbytes);
    tt_fill_bf16(data, nbytes / 2, 17);
    tt_tensor t = { "w", "BF16", 1, { nbytes / 2 } };
    char *json = tt_st_header(&t, 1, "{\"format\":\"pt\"}", NULL);
    handmade hm = { data, nbytes, chunk_size, json, { { 0 } } };
    tt_ok(tvs_store_write(s, nbytes + (4u << 20), put_handmade, &hm));

    /* the stored file, verbatim */
    tvs_buf out = output_of("M", NULL);
    size_t hl = strlen(json);
    cr_assert_eq(out.len, 8 + hl + nbytes);
    cr_assert_eq(tvs_load_le64(out.ptr), hl);
    cr_assert_eq(memcmp(out.ptr + 8, json, hl), 0);
    cr_assert_eq(memcmp(out.ptr + 8 + hl, data, nbytes), 0, "chunk size %u", chunk_size);
    tvs_buf_dispose(&out);

    /* converted to F32: every element read through the computed path */
    tvs_plan_opts o = TVS_PLAN_OPTS_INIT;
    o.dtype = TVS_DTYPE_F32;
    o.threads = 2;
    out = output_of("M", &o);
    tvs_st_header h = parse_output(&out, 1);
    const uint8_t *p = out.ptr + 8 + h.header_len;
    size_t bad = 0;
    for (size_t i = 0; i < nbytes / 2; i++)
        bad += tvs_load_le32(p + 4 * i) != (uint32_t)(data[2 * i] | data[2 * i + 1] << 8) << 16;
    cr_assert_eq(bad, 0, "chunk size %u: %zu elements differ", chunk_size, bad);
    tvs_st_header_dispose(&h);
    tvs_buf_dispose(&out);
    free(json);
    free(data);
}

Test(exec, tensors_stored_in_small_chunks_are_read_back)
{
    check_chunk_size(65536 + 2, 3u << 20);   /* chunks that straddle every block */
}

Test(exec, tensors_stored_in_5_5_mib_chunks_are_read_back)
{
    check_chunk_size(11u << 19, 14u << 20);
}

Test(exec, tensors_stored_in_16_mib_chunks_are_read_back)
{
    check_chunk_size(16u << 20, 20u << 20);
}
