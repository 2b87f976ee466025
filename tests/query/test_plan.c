/*
 * Planning queries (query/plan.c) against the type rules of SPEC.md 4.2:
 * which combinations of full models, deltas and numbers are allowed, the
 * exact error code of each that is not (TVS_EINVAL for a type error,
 * TVS_ELINEAGE for a delta applied to another base, TVS_ENOTFOUND for a
 * missing ref), what the message names, and what a plan reports: its type,
 * whether it copies a stored file, its exact size, and its EXPLAIN text.
 *
 * The store holds small generated BF16 models (plus one I32 tensor):
 *   B    a base                      B2   B continued (full, --parent B)
 *   dB1  a fine-tune of B (delta)    dB2  another fine-tune of B (delta)
 *   dC   a fine-tune of B2 (delta)   U    an unrelated full model
 *   F1   dB1's file imported again as a full model
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/model.h"
#include "format/dtype.h"
#include "format/safetensors.h"
#include "query/plan.h"
#include "tests/support/support.h"

static char *dir;
static tvs_store *s;

static const tt_tensor SHAPE[] = {
    { "embed", "BF16", 2, { 64, 32 } },
    { "layers.0.w", "BF16", 2, { 32, 32 } },
    { "layers.1.w", "BF16", 2, { 32, 32 } },
    { "norm", "BF16", 1, { 32 } },
    { "pos", "I32", 1, { 16 } },
};
#define N_SHAPE (sizeof SHAPE / sizeof *SHAPE)

/* ---- generated models */

static char *model_path(const char *name) { return tt_fmt("%s/%s.safetensors", dir, name); }

/* Copy file @p from to @p to, moving every @p step-th BF16 element of the
 * tensors named in @p names (NULL-terminated) by one or two ulps. */
static void derive(const char *from, const char *to, const char *const *names, int step,
                   uint64_t seed)
{
    size_t len;
    uint8_t *b = tt_read_file(from, &len);
    cr_assert_not_null(b);
    tvs_st_header h;
    tt_ok(tvs_st_parse(&h, (tvs_span){ b, len }));
    uint8_t *data = b + 8 + h.header_len;
    uint64_t st = seed;
    for (size_t i = 0; i < h.n; i++) {
        int hit = 0;
        for (size_t k = 0; names[k]; k++)
            hit |= !strcmp(names[k], h.tensors[i].name);
        if (!hit || h.tensors[i].dtype != TVS_DTYPE_BF16)
            continue;
        for (uint64_t o = h.tensors[i].begin; o + 2 <= h.tensors[i].end; o += 2 * (uint64_t)step) {
            uint16_t v = (uint16_t)(data[o] | data[o + 1] << 8);
            if ((v & 0x7fff) > 8 && (v & 0x7fff) < 0x7f00)
                v = (uint16_t)(v + 1 + (tt_lcg(&st) & 1));
            data[o] = (uint8_t)v;
            data[o + 1] = (uint8_t)(v >> 8);
        }
    }
    tvs_st_header_dispose(&h);
    cr_assert_eq(tt_write_file(to, b, len), 0);
    free(b);
}

static void import(const char *name, const char *base, const char *parent)
{
    char *p = model_path(name);
    tt_ok(tt_import_with(s, p, name, base, parent, 1));
    free(p);
}

static void setup(void)
{
    tt_ok(tt_store_new(&dir, &s));
    char *pb = model_path("B"), *pb2 = model_path("B2"), *pu = model_path("U");
    char *p1 = model_path("dB1"), *p2 = model_path("dB2"), *pc = model_path("dC");
    char *pf = model_path("F1");
    cr_assert_eq(tt_write_st_weights(pb, SHAPE, N_SHAPE, "{\"format\":\"pt\"}", 11), 0);
    cr_assert_eq(tt_write_st_weights(pu, SHAPE, N_SHAPE, "{\"format\":\"pt\"}", 99), 0);
    static const char *const all[] = { "embed", "layers.0.w", "layers.1.w", "norm", NULL };
    static const char *const ft1[] = { "embed", "layers.0.w", NULL };   /* norm unchanged */
    static const char *const ft2[] = { "layers.0.w", "layers.1.w", NULL };
    derive(pb, pb2, all, 3, 21);
    derive(pb, p1, ft1, 5, 31);
    derive(pb, p2, ft2, 4, 41);
    derive(pb2, pc, ft1, 6, 51);
    size_t len;
    uint8_t *b = tt_read_file(p1, &len);
    cr_assert_eq(tt_write_file(pf, b, len), 0);
    free(b);
    import("B", NULL, NULL);
    import("B2", NULL, "B");
    import("dB1", "B", NULL);
    import("dB2", "B", NULL);
    import("dC", "B2", NULL);
    import("U", NULL, NULL);
    import("F1", NULL, NULL);
    free(pb);
    free(pb2);
    free(pu);
    free(p1);
    free(p2);
    free(pc);
    free(pf);
}

static void teardown(void)
{
    tvs_store_close(s);
    tt_rmtree(dir);
    free(dir);
    tt_leak_check();
}

TestSuite(plan, .init = setup, .fini = teardown, .timeout = 120);

/* ---- helpers */

static tvs_plan_opts opts(void)
{
    tvs_plan_opts o = TVS_PLAN_OPTS_INIT;
    o.threads = 2;
    return o;
}

/* Build @p q, free the plan, return the code (the message stays in tvs_errmsg()). */
static int plan_rc(const char *q, const tvs_plan_opts *o)
{
    tvs_txn *txn;
    tvs_plan *p = NULL;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    int rc = tvs_plan_build(&p, txn, q, o);
    if (rc)
        cr_assert_null(p, "a failed build leaves no plan");
    tvs_plan_free(p);
    tvs_txn_end(txn);
    return rc;
}

#define assert_plans(q)                                                            \
    do {                                                                           \
        tvs_plan_opts o_ = opts();                                                 \
        int rc_ = plan_rc((q), &o_);                                               \
        cr_assert_eq(rc_, 0, "\"%s\" returned %d: %s", (q), rc_, tvs_errmsg());    \
    } while (0)

#define assert_plan_fails(q, code)                                                 \
    do {                                                                           \
        tvs_plan_opts o_ = opts();                                                 \
        int rc_ = plan_rc((q), &o_);                                               \
        cr_assert_eq(rc_, (code), "\"%s\" returned %d (%s), expected %d", (q), rc_, \
                     tvs_errmsg(), (int)(code));                                   \
    } while (0)

static tt_planned plan_of(const char *q, const tvs_plan_opts *o)
{
    tvs_plan_opts d = opts();
    return tt_plan_of(s, q, o ? o : &d);
}

/* The whole output of @p q. */
static tvs_buf output_of(const char *q, const tvs_plan_opts *o, uint64_t *planned_size)
{
    tt_planned r = plan_of(q, o);
    tvs_buf b = TVS_BUF_INIT;
    tt_ok(tvs_plan_exec(r.p, 0, UINT64_MAX, tt_sink_buf, &b));
    if (planned_size)
        *planned_size = tvs_plan_size(r.p);
    tt_planned_free(&r);
    return b;
}

static char *explain_of(const char *q)
{
    tt_planned r = plan_of(q, NULL);
    tvs_buf b = TVS_BUF_INIT;
    tt_ok(tvs_plan_explain(&b, r.p));
    char *t = tt_fmt("%.*s", (int)b.len, (const char *)b.ptr);
    tvs_buf_dispose(&b);
    tt_planned_free(&r);
    return t;
}

static tvs_id ref_id(const char *ref)
{
    tvs_txn *txn;
    tvs_id id;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tt_ok(tvs_resolve(&id, txn, ref));
    tvs_txn_end(txn);
    return id;
}

/* ---- type rules that hold */

Test(plan, the_allowed_combinations_plan)
{
    static const char *const ok[] = {
        "B",
        "dB1",
        "B + dB1",
        "dB1 + B",
        "B - dB1",
        "dB1 on B",
        "B + 0.5*dB1 + 0.5*dB2",
        "B + dB1*0.5 - 0.25*dB2",
        "dB1 + dB2",
        "dB1 - dB2",
        "-dB1",
        "2*-dB1",
        "F1 - B",
        "B + (F1 - B)",
        "B2 - B",
        "soup(B, U)",
        "soup(B, B + dB1, F1)",
        "lerp(B, U, 0.3)",
        "lerp(dB1, dB2, 0.5)",
        "transfer(dB1, onto=B2)",
        "transfer(dC, onto=B)",
        "transfer(dB1, onto=B)",
        "transfer(F1 - B, onto=B2)",
        "dare(dB1, dB2; drop=0.5, seed=7, lambda=2)",
        "ties(dB1, dB2; density=0.5)",
        "breadcrumbs(dB1, dB2; top=0.1, bottom=0.5)",
        "B + ties(dB1, 0.5*dB2)",
        "B2 + dC",
        "(B + 0.5*dB1) + 0.5*dB1",
    };
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++)
        assert_plans(ok[i]);
}

Test(plan, each_query_has_the_type_of_its_result)
{
    static const struct { const char *q, *type; } cases[] = {
        { "B", "full" },
        { "dB1", "delta" },
        { "B + dB1", "full" },
        { "dB1 on B", "full" },
        { "dB1 + dB2", "delta" },
        { "0.5*dB1", "delta" },
        { "-dB1", "delta" },
        { "F1 - B", "delta" },
        { "B2 - B", "delta" },
        { "soup(B, U)", "full" },
        { "lerp(B, U, 0.3)", "full" },
        { "lerp(dB1, dB2, 0.3)", "delta" },
        { "transfer(dB1, onto=B2)", "full" },
        { "dare(dB1, dB2)", "delta" },
        { "ties(dB1, dB2)", "delta" },
        { "breadcrumbs(dB1, dB2)", "delta" },
        { "B + ties(dB1, dB2)", "full" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tt_planned r = plan_of(cases[i].q, NULL);
        cr_assert_str_eq(tvs_plan_type(r.p), cases[i].type, "%s", cases[i].q);
        tt_planned_free(&r);
    }
}

/* ---- type errors */

Test(plan, adding_two_full_models_is_a_type_error)
{
    assert_plan_fails("B + U", TVS_EINVAL);
    tt_msg_has("'B'");
    tt_msg_has("'U'");
    tt_msg_has("soup");
    assert_plan_fails("B + B2", TVS_EINVAL);
    assert_plan_fails("B on U", TVS_EINVAL);
    assert_plan_fails("soup(B, U) + B", TVS_EINVAL);
}

Test(plan, scaling_a_full_model_is_a_type_error)
{
    assert_plan_fails("2*B", TVS_EINVAL);
    tt_msg_has("'B'");
    assert_plan_fails("B*0.5", TVS_EINVAL);
    assert_plan_fails("-B", TVS_EINVAL);
    assert_plan_fails("B * dB1", TVS_EINVAL);
    assert_plan_fails("dB1 * dB2", TVS_EINVAL);
    assert_plan_fails("0.5*soup(B, U)", TVS_EINVAL);
}

Test(plan, a_number_is_not_a_model)
{
    assert_plan_fails("2", TVS_EINVAL);
    assert_plan_fails("2 + 3*4", TVS_EINVAL);
    assert_plan_fails("B + 2", TVS_EINVAL);
    assert_plan_fails("dB1 - 1", TVS_EINVAL);
}

Test(plan, subtracting_a_full_model_from_a_delta_is_a_type_error)
{
    assert_plan_fails("dB1 - B", TVS_EINVAL);
    tt_msg_has("'B'");
    tt_msg_has("'dB1'");
}

Test(plan, a_delta_of_one_base_does_not_apply_to_another)
{
    assert_plan_fails("B2 + dB1", TVS_ELINEAGE);
    tt_msg_has("'dB1'");
    tt_msg_has("'B'");
    tt_msg_has("'B2'");
    tt_msg_has("transfer");
    assert_plan_fails("dB1 + B2", TVS_ELINEAGE);
    tt_msg_has("'dB1'");
    tt_msg_has("'B2'");
    assert_plan_fails("B2 - dB1", TVS_ELINEAGE);
    assert_plan_fails("dB1 on B2", TVS_ELINEAGE);
    assert_plan_fails("U + dB1", TVS_ELINEAGE);
    assert_plan_fails("B + dC", TVS_ELINEAGE);
    tt_msg_has("'dC'");
    tt_msg_has("'B2'");
    /* a full model with no single anchor takes no delta */
    assert_plan_fails("soup(B, U) + dB1", TVS_ELINEAGE);
    /* deltas of two bases do not combine */
    assert_plan_fails("dB1 + dC", TVS_ELINEAGE);
    tt_msg_has("'dB1'");
    tt_msg_has("'dC'");
    assert_plan_fails("dB1 - dC", TVS_ELINEAGE);
    assert_plan_fails("lerp(dB1, dC, 0.5)", TVS_ELINEAGE);
    /* F1 - B is a delta of B */
    assert_plan_fails("B2 + (F1 - B)", TVS_ELINEAGE);
}

Test(plan, transfer_moves_a_delta_within_one_lineage)
{
    tt_planned r = plan_of("transfer(dB1, onto=B2)", NULL);
    cr_assert_str_eq(tvs_plan_type(r.p), "full");
    cr_assert_eq(tvs_plan_is_copy(r.p), 0);
    tt_planned_free(&r);

    assert_plan_fails("transfer(dB1, onto=U)", TVS_ELINEAGE);
    tt_msg_has("'dB1'");
    tt_msg_has("'U'");
    assert_plan_fails("transfer(dC, onto=U)", TVS_ELINEAGE);
}

Test(plan, transfer_takes_one_delta_onto_a_full_model)
{
    assert_plan_fails("transfer(B, onto=B2)", TVS_EINVAL);
    assert_plan_fails("transfer(dB1, onto=dC)", TVS_EINVAL);
    assert_plan_fails("transfer(dB1)", TVS_EINVAL);
    assert_plan_fails("transfer(dB1, dB2, onto=B2)", TVS_EINVAL);
    assert_plan_fails("transfer(dB1, onto=2)", TVS_EINVAL);
}

Test(plan, merges_of_deltas_of_different_bases_are_lineage_errors)
{
    static const char *const qs[] = {
        "ties(dB1, dC)",
        "ties(dB1, dB2, dC; density=0.5)",
        "dare(dB1, dC)",
        "dare(dC, dB2; drop=0.5)",
        "breadcrumbs(dB1, dC)",
        "breadcrumbs(dB1, B - B2)",
    };
    for (size_t i = 0; i < sizeof qs / sizeof *qs; i++) {
        assert_plan_fails(qs[i], TVS_ELINEAGE);
        tt_msg_has("'B'");
        tt_msg_has("'B2'");
    }
}

Test(plan, merge_functions_take_the_kinds_they_need)
{
    assert_plan_fails("ties(dB1, B)", TVS_EINVAL);
    tt_msg_has("'B'");
    assert_plan_fails("dare(B)", TVS_EINVAL);
    assert_plan_fails("breadcrumbs(dB1, 2)", TVS_EINVAL);
    assert_plan_fails("soup(B, dB1)", TVS_EINVAL);
    tt_msg_has("'dB1'");
    assert_plan_fails("soup()", TVS_EINVAL);
    assert_plan_fails("lerp(B, dB1, 0.5)", TVS_EINVAL);
    assert_plan_fails("lerp(B, U)", TVS_EINVAL);
    assert_plan_fails("lerp(B, U, B)", TVS_EINVAL);
}

Test(plan, an_unknown_function_is_named_with_the_known_ones)
{
    assert_plan_fails("merge(dB1, dB2)", TVS_EINVAL);
    tt_msg_has("'merge'");
    static const char *const known[] = { "soup", "lerp", "transfer", "ties", "dare",
                                         "breadcrumbs" };
    for (size_t i = 0; i < sizeof known / sizeof *known; i++)
        tt_msg_has(known[i]);
}

Test(plan, an_unknown_keyword_argument_is_an_error)
{
    assert_plan_fails("dare(dB1; dropp=0.5)", TVS_EINVAL);
    tt_msg_has("'dropp'");
    assert_plan_fails("ties(dB1; drop=0.5)", TVS_EINVAL);
    tt_msg_has("'drop'");
    assert_plan_fails("breadcrumbs(dB1; density=0.5)", TVS_EINVAL);
    assert_plan_fails("soup(B, U; lambda=1)", TVS_EINVAL);
    assert_plan_fails("lerp(B, U, 0.5; t=1)", TVS_EINVAL);
    assert_plan_fails("transfer(dB1, onto=B2, seed=1)", TVS_EINVAL);
    tt_msg_has("'seed'");
}

Test(plan, keyword_values_out_of_range_are_errors)
{
    static const char *const bad[] = {
        "dare(dB1; drop=1)",
        "dare(dB1; drop=-0.1)",
        "dare(dB1; drop=B)",
        "dare(dB1; seed=1.5)",
        "dare(dB1; seed=-1)",
        "dare(dB1; lambda=1000)",
        "ties(dB1; density=1.5)",
        "ties(dB1; density=-0.1)",
        "breadcrumbs(dB1; top=2)",
        "breadcrumbs(dB1; bottom=-1)",
        "breadcrumbs(dB1; top=0.6, bottom=0.5)",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_plan_fails(bad[i], TVS_EINVAL);
    static const char *const edge[] = {
        "dare(dB1; drop=0)",
        "dare(dB1; drop=0.999, seed=9007199254740992)",
        "ties(dB1; density=0)",
        "ties(dB1; density=1)",
        "breadcrumbs(dB1; top=0.5, bottom=0.5)",
        "breadcrumbs(dB1; top=0, bottom=0, lambda=-100)",
    };
    for (size_t i = 0; i < sizeof edge / sizeof *edge; i++)
        assert_plans(edge[i]);
}

Test(plan, a_missing_ref_is_not_found_and_named)
{
    assert_plan_fails("B + nope", TVS_ENOTFOUND);
    tt_msg_has("nope");
    assert_plan_fails("transfer(dB1, onto=nowhere)", TVS_ENOTFOUND);
    tt_msg_has("nowhere");
    assert_plan_fails("soup(B, U, gone/model)", TVS_ENOTFOUND);
    tt_msg_has("gone/model");
}

Test(plan, a_ref_at_an_id_prefix_names_that_version)
{
    tvs_id id = ref_id("B");
    char hex[TVS_ID_HEX + 1];
    tvs_id_hex(hex, &id);
    char *q = tt_fmt("B@%.8s + dB1", hex);
    assert_plans(q);
    free(q);
    /* an id prefix that no version of B has */
    tvs_id other = ref_id("U");
    tvs_id_hex(hex, &other);
    q = tt_fmt("B@%.12s + dB1", hex);
    assert_plan_fails(q, TVS_ENOTFOUND);
    free(q);
}

Test(plan, a_syntax_error_is_einval_with_its_offset)
{
    assert_plan_fails("B + (dB1", TVS_EINVAL);
    tt_msg_has("at byte 8");
}

/* ---- copies */

Test(plan, base_plus_its_delta_copies_the_fine_tuned_file)
{
    static const struct { const char *q; int copy; } cases[] = {
        { "B + dB1", 1 },
        { "dB1 + B", 1 },
        { "dB1 on B", 1 },
        { "B", 1 },
        { "U", 1 },
        { "transfer(dB1, onto=B)", 1 },
        { "B2 + dC", 1 },
        { "B + dB1 - dB1", 1 },
        { "B + (F1 - B)", 1 },
        { "B + 0.5*dB1", 0 },
        { "B + dB1 + dB2", 0 },
        { "dB1", 0 },
        { "F1 - B", 0 },
        { "soup(B, U)", 0 },
        { "transfer(dB1, onto=B2)", 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        tt_planned r = plan_of(cases[i].q, NULL);
        cr_assert_eq(tvs_plan_is_copy(r.p), cases[i].copy, "%s", cases[i].q);
        tt_planned_free(&r);
    }
}

Test(plan, options_that_change_the_file_turn_a_copy_into_a_rebuilt_file)
{
    tvs_plan_opts o = opts();
    o.dtype = TVS_DTYPE_F32;
    tt_planned r = plan_of("B + dB1", &o);
    cr_assert_eq(tvs_plan_is_copy(r.p), 0);
    tt_planned_free(&r);

    o = opts();
    o.dtype = TVS_DTYPE_BF16;   /* the stored dtype, but still a new header */
    r = plan_of("B + dB1", &o);
    cr_assert_eq(tvs_plan_is_copy(r.p), 0);
    tt_planned_free(&r);

    o = opts();
    o.tensors = "^layers";
    r = plan_of("B + dB1", &o);
    cr_assert_eq(tvs_plan_is_copy(r.p), 0);
    cr_assert_eq(tvs_plan_tensors(r.p), 2);
    tt_planned_free(&r);

    o = opts();
    o.layer_lo = 0;
    o.layer_hi = 0;
    r = plan_of("B + dB1", &o);
    cr_assert_eq(tvs_plan_is_copy(r.p), 0);
    cr_assert_eq(tvs_plan_tensors(r.p), 4);   /* embed, layers.0.w, norm, pos */
    tt_planned_free(&r);

    o = opts();
    o.shard_i = 0;
    o.shard_n = 2;
    r = plan_of("B + dB1", &o);
    cr_assert_eq(tvs_plan_is_copy(r.p), 0);
    tt_planned_free(&r);
}

Test(plan, bad_options_are_einval)
{
    tvs_plan_opts o = opts();
    o.shard_i = 3;
    o.shard_n = 3;
    cr_assert_eq(plan_rc("B + dB1", &o), TVS_EINVAL);
    o = opts();
    o.dtype = TVS_DTYPE_I32;
    cr_assert_eq(plan_rc("B + dB1", &o), TVS_EINVAL);
    o = opts();
    o.tensors = "(unclosed";
    cr_assert_eq(plan_rc("B + dB1", &o), TVS_EINVAL);
    o = opts();
    o.tensors = "^nothing-matches$";
    cr_assert_eq(plan_rc("B + dB1", &o), TVS_EINVAL);
}

/* ---- sizes and the output layout */

Test(plan, the_planned_size_is_the_number_of_bytes_produced)
{
    static const char *const qs[] = {
        "B",
        "B + dB1",
        "B + 0.5*dB1 + 0.5*dB2",
        "dB1",
        "F1 - B",
        "soup(B, U)",
        "transfer(dB1, onto=B2)",
        "ties(dB1, dB2; density=0.5)",
        "B + dare(dB1, dB2; drop=0.5)",
    };
    int dtypes[] = { 0, TVS_DTYPE_F32, TVS_DTYPE_F16 };
    for (size_t i = 0; i < sizeof qs / sizeof *qs; i++)
        for (size_t k = 0; k < 3; k++) {
            tvs_plan_opts o = opts();
            o.dtype = dtypes[k];
            uint64_t size = 0;
            tvs_buf b = output_of(qs[i], &o, &size);
            cr_assert_eq(b.len, size, "%s (dtype %d): planned %llu bytes, produced %zu", qs[i],
                         dtypes[k], (unsigned long long)size, b.len);
            tvs_st_header h;
            int rc = tvs_st_parse(&h, (tvs_span){ b.ptr, b.len });
            cr_assert_eq(rc, 0, "%s: output does not parse: %s", qs[i], tvs_errmsg());
            tvs_st_header_dispose(&h);
            tvs_buf_dispose(&b);
        }
}

Test(plan, a_delta_result_leaves_integer_tensors_out)
{
    tvs_buf b = output_of("dB1", NULL, NULL);
    tvs_st_header h;
    tt_ok(tvs_st_parse(&h, (tvs_span){ b.ptr, b.len }));
    cr_assert_eq(h.n, 4);
    cr_assert_eq(tvs_st_find(&h, "pos"), -1);
    cr_assert_geq(tvs_st_find(&h, "norm"), 0);
    tvs_st_header_dispose(&h);
    tvs_buf_dispose(&b);

    /* a full result copies them from the anchor as stored */
    b = output_of("B + 0.5*dB1", NULL, NULL);
    tt_ok(tvs_st_parse(&h, (tvs_span){ b.ptr, b.len }));
    cr_assert_eq(h.n, 5);
    long i = tvs_st_find(&h, "pos");
    cr_assert_geq(i, 0);
    cr_assert_eq(h.tensors[i].dtype, TVS_DTYPE_I32);
    size_t len;
    char *pb = model_path("B");
    uint8_t *orig = tt_read_file(pb, &len);
    tvs_st_header ho;
    tt_ok(tvs_st_parse(&ho, (tvs_span){ orig, len }));
    long j = tvs_st_find(&ho, "pos");
    cr_assert_eq(memcmp(b.ptr + 8 + h.header_len + h.tensors[i].begin,
                        orig + 8 + ho.header_len + ho.tensors[j].begin, 64), 0);
    tvs_st_header_dispose(&ho);
    tvs_st_header_dispose(&h);
    free(orig);
    free(pb);
    tvs_buf_dispose(&b);
}

Test(plan, the_output_header_records_the_query)
{
    const char *q = "B + 0.5*dB1";
    tvs_buf b = output_of(q, NULL, NULL);
    tvs_st_header h;
    tt_ok(tvs_st_parse(&h, (tvs_span){ b.ptr, b.len }));
    cr_assert_eq(h.header_len % 8, 0);
    int found = 0;
    for (size_t i = 0; i < h.n_meta; i++) {
        if (!strcmp(h.meta[2 * i], "tvs_query")) {
            cr_assert_str_eq(h.meta[2 * i + 1], q);
            found = 1;
        }
        if (!strcmp(h.meta[2 * i], "format"))
            cr_assert_str_eq(h.meta[2 * i + 1], "pt");
    }
    cr_assert(found, "no tvs_query in __metadata__");
    const char *json = (const char *)b.ptr + 8;
    const char *want = "{\"__metadata__\":{\"format\":\"pt\",\"tvs_query\":\"B + 0.5*dB1\"},";
    cr_assert_eq(strncmp(json, want, strlen(want)), 0, "header starts %.80s", json);
    /* tensors in bytewise name order */
    for (size_t i = 1; i < h.n; i++)
        cr_assert_lt(strcmp(h.tensors[i - 1].name, h.tensors[i].name), 0);
    tvs_st_header_dispose(&h);
    tvs_buf_dispose(&b);
}

Test(plan, transfer_takes_the_tensors_of_the_model_it_lands_on)
{
    /* B2's tensors plus (dB1 - B): where dB1 did not change a tensor, B2's own bytes */
    tvs_buf b = output_of("transfer(dB1, onto=B2)", NULL, NULL);
    tvs_st_header h;
    tt_ok(tvs_st_parse(&h, (tvs_span){ b.ptr, b.len }));
    size_t len;
    char *pb2 = model_path("B2");
    uint8_t *orig = tt_read_file(pb2, &len);
    tvs_st_header ho;
    tt_ok(tvs_st_parse(&ho, (tvs_span){ orig, len }));
    static const char *const same[] = { "layers.1.w", "norm", "pos" };
    for (size_t k = 0; k < 3; k++) {
        long i = tvs_st_find(&h, same[k]), j = tvs_st_find(&ho, same[k]);
        cr_assert_geq(i, 0);
        cr_assert_geq(j, 0);
        cr_assert_eq(h.tensors[i].end - h.tensors[i].begin, ho.tensors[j].end - ho.tensors[j].begin);
        cr_assert_eq(memcmp(b.ptr + 8 + h.header_len + h.tensors[i].begin,
                            orig + 8 + ho.header_len + ho.tensors[j].begin,
                            (size_t)(ho.tensors[j].end - ho.tensors[j].begin)), 0,
                     "%s is B2's", same[k]);
    }
    tvs_st_header_dispose(&ho);
    tvs_st_header_dispose(&h);
    free(orig);
    free(pb2);
    tvs_buf_dispose(&b);
}

/* ---- EXPLAIN */

Test(plan, explain_names_every_ref_and_how_each_tensor_is_made)
{
    char *t = explain_of("B + 0.5*dB1");
    cr_assert(strstr(t, "B") != NULL, "%s", t);
    cr_assert(strstr(t, "dB1") != NULL, "%s", t);
    cr_assert(strstr(t, "output") != NULL, "%s", t);
    cr_assert(strstr(t, "copy") != NULL, "norm and pos are copied:\n%s", t);
    cr_assert(strstr(t, "compute") != NULL, "embed is computed:\n%s", t);
    char hex[TVS_ID_HEX + 1];
    tvs_id id = ref_id("dB1");
    tvs_id_hex(hex, &id);
    cr_assert(strstr(t, hex) != NULL, "explain shows dB1's id %s:\n%s", hex, t);
    free(t);

    t = explain_of("transfer(dC, onto=B) + 0.5*dB2");
    cr_assert(strstr(t, "dC") != NULL, "%s", t);
    cr_assert(strstr(t, "dB2") != NULL, "%s", t);
    cr_assert(strstr(t, "B2") != NULL, "%s", t);
    free(t);

    t = explain_of("B + dB1");
    cr_assert(strstr(t, "copy") != NULL, "%s", t);
    cr_assert(strstr(t, "compute\n") == NULL, "nothing is computed:\n%s", t);
    free(t);
}

/* ---- fine-tunes that add tensors */

Test(plan, base_plus_a_fine_tune_that_added_a_tensor_is_a_valid_query)
{
    /* dE: B with embed changed and one more tensor. The query is well typed
     * (a delta of B applied to B); its output has at least B's tensors,
     * each with dE's bytes. */
    tt_tensor t[N_SHAPE + 1];
    memcpy(t, SHAPE, sizeof SHAPE);
    t[N_SHAPE] = (tt_tensor){ "zz.extra", "BF16", 2, { 8, 8 } };
    char *pe0 = model_path("dE0"), *pe = model_path("dE");
    cr_assert_eq(tt_write_st_weights(pe0, t, N_SHAPE + 1, "{\"format\":\"pt\"}", 11), 0);
    static const char *const which[] = { "embed", NULL };
    derive(pe0, pe, which, 3, 61);
    import("dE", "B", NULL);

    tvs_txn *txn;
    tvs_plan *p = NULL;
    tvs_plan_opts o = opts();
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    int rc = tvs_plan_build(&p, txn, "B + dE", &o);
    cr_assert_eq(rc, 0, "B + dE: %d (%s)", rc, tvs_errmsg());
    tvs_buf b = TVS_BUF_INIT;
    tt_ok(tvs_plan_exec(p, 0, UINT64_MAX, tt_sink_buf, &b));
    cr_assert_eq(b.len, tvs_plan_size(p));
    tvs_plan_free(p);
    tvs_txn_end(txn);

    size_t len;
    uint8_t *orig = tt_read_file(pe, &len);
    tvs_st_header h, ho;
    tt_ok(tvs_st_parse(&h, (tvs_span){ b.ptr, b.len }));
    tt_ok(tvs_st_parse(&ho, (tvs_span){ orig, len }));
    for (size_t k = 0; k < N_SHAPE; k++) {
        long i = tvs_st_find(&h, SHAPE[k].name), j = tvs_st_find(&ho, SHAPE[k].name);
        cr_assert_geq(i, 0, "%s is in the output", SHAPE[k].name);
        cr_assert_eq(memcmp(b.ptr + 8 + h.header_len + h.tensors[i].begin,
                            orig + 8 + ho.header_len + ho.tensors[j].begin,
                            (size_t)(ho.tensors[j].end - ho.tensors[j].begin)), 0,
                     "%s has dE's bytes", SHAPE[k].name);
    }
    tvs_st_header_dispose(&h);
    tvs_st_header_dispose(&ho);
    tvs_buf_dispose(&b);
    free(orig);
    free(pe0);
    free(pe);
}

/* ---- more rules */

Test(plan, lerp_takes_any_number_for_t)
{
    /* t is a number; -0.5 and 2*0.25 are numbers (SPEC 4.2: x * D, -D of scalars fold) */
    assert_plans("lerp(B, U, -0.5)");
    assert_plans("lerp(dB1, dB2, 2*0.25)");
    assert_plans("lerp(dB1, dB2, (0.5))");
}

Test(plan, the_header_escapes_whitespace_of_the_query)
{
    const char *q = "B +\n\t0.5*dB1";
    tvs_buf b = output_of(q, NULL, NULL);
    tvs_st_header h;
    tt_ok(tvs_st_parse(&h, (tvs_span){ b.ptr, b.len }));
    int found = 0;
    for (size_t i = 0; i < h.n_meta; i++)
        if (!strcmp(h.meta[2 * i], "tvs_query")) {
            cr_assert_str_eq(h.meta[2 * i + 1], q);
            found = 1;
        }
    cr_assert(found);
    tvs_st_header_dispose(&h);
    tvs_buf_dispose(&b);
}

Test(plan, transfer_finds_a_base_many_versions_back)
{
    /* L0 <- L1 <- ... <- L261 (each import of "L" has the previous head as
     * its first parent); dL is a delta of L0. L0 is an ancestor of the
     * head, so transfer(dL, onto=L) is within one lineage. */
    tt_tensor t[] = { { "w", "BF16", 1, { 4 } } };
    char *pl = model_path("L"), *pd = model_path("dL");
    cr_assert_eq(tt_write_st_weights(pl, t, 1, NULL, 3), 0);
    cr_assert_eq(tt_write_st_weights(pd, t, 1, NULL, 4), 0);
    tvs_import_opts o = TVS_IMPORT_OPTS_INIT;
    tvs_import_result r;
    o.threads = 1;
    tt_ok(tvs_import(&r, s, pl, "L", &o));
    o.base = "L";
    tt_ok(tvs_import(&r, s, pd, "dL", &o));
    o.base = NULL;
    for (int i = 1; i < 262; i++) {
        char msg[32];
        snprintf(msg, sizeof msg, "version %d", i);
        o.message = msg;
        tt_ok(tvs_import(&r, s, pl, "L", &o));
    }
    free(pl);
    free(pd);
    assert_plans("transfer(dL, onto=L)");
}

Test(plan, a_number_that_overflows_is_an_error)
{
    /* SPEC 4.1: numbers are finite; a product of numbers that overflows is
     * not a number a merge can use (inf * 0 is NaN) */
    assert_plan_fails("1e200*1e200*dB1", TVS_EINVAL);
    assert_plan_fails("B + (1e300*1e300)*dB1", TVS_EINVAL);
    assert_plan_fails("lerp(B, U, 1e200*1e200)", TVS_EINVAL);
}
