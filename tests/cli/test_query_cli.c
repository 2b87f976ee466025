/*
 * `tvs materialize` and `tvs explain` (cli/tvs.c), run as a program:
 * output to a file and to stdout, byte-identical `base + delta` (a
 * generated model, and the real base-v1 + ft-math when TVS_SHARED_MODELS
 * is there), EXPLAIN, exit codes and one-line messages for type errors,
 * bad options, and no output file left behind by a failed run.
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "engine/store.h"
#include "format/safetensors.h"
#include "tests/support/support.h"

static char *dir, *env_store, *p_base, *p_ft, *p_b2, *p_u;
static const char *env[2];


static void setup(void)
{
    dir = tt_cli_store(&env_store, env);
    p_base = tt_join(dir, "base.safetensors");
    p_ft = tt_join(dir, "ft.safetensors");
    p_b2 = tt_join(dir, "b2.safetensors");
    p_u = tt_join(dir, "u.safetensors");
    tt_tensor t[] = { { "model.embed.weight", "BF16", 2, { 1024, 640 } },   /* 2 chunks */
                      { "model.layers.0.weight", "BF16", 2, { 128, 128 } },
                      { "model.layers.1.weight", "BF16", 2, { 128, 128 } },
                      { "model.norm", "BF16", 1, { 128 } } };
    cr_assert_eq(tt_write_st_weights(p_base, t, 4, "{\"format\":\"pt\"}", 1), 0);
    cr_assert_eq(tt_write_st_weights(p_u, t, 4, "{\"format\":\"pt\"}", 9), 0);
    tt_write_ft(p_base, p_ft, 7, 2);
    tt_write_ft(p_base, p_b2, 3, 5);
}

static void teardown(void)
{
    tt_rmtree(dir);
    free(dir);
    free(env_store);
    free(p_base);
    free(p_ft);
    free(p_b2);
    free(p_u);
    tt_leak_check();
}

TestSuite(query_cli, .init = setup, .fini = teardown, .timeout = 120);

/* ---- running tvs */

#define run(...) tt_cli(env, 0, __VA_ARGS__, NULL)
#define ok(...) tt_cli_quiet(env, __VA_ARGS__, NULL)

static void import_models(void)
{
    ok("import", p_base, "--as", "base");
    ok("import", p_ft, "--as", "ft", "--base", "base");
    ok("import", p_b2, "--as", "b2", "--parent", "base");
    ok("import", p_u, "--as", "u");
}

static void assert_same_file(const char *a, const char *b)
{
    char why[512];
    cr_assert_eq(tt_files_equal(a, b, why, sizeof why), 1, "%s vs %s: %s", a, b, why);
}

static int leftovers(void) { return tt_count_names(dir, "tvs-tmp"); }

/* ---- materialize */

Test(query_cli, materialize_base_plus_delta_gives_the_fine_tuned_file)
{
    import_models();
    char *out = tt_join(dir, "out.safetensors");
    ok("materialize", "base + ft", "-o", out);
    assert_same_file(out, p_ft);
    unlink(out);
    ok("materialize", "ft on base", "--output", out);
    assert_same_file(out, p_ft);
    cr_assert_eq(leftovers(), 0);
    free(out);
}

Test(query_cli, materialize_to_stdout_writes_the_same_bytes_as_to_a_file)
{
    import_models();
    const char *qs[] = { "base + ft", "base + 0.5*ft", "transfer(ft, onto=b2)" };
    char *out = tt_join(dir, "out.safetensors");
    for (size_t i = 0; i < 3; i++) {
        ok("materialize", qs[i], "-o", out);
        tt_run r = run("materialize", qs[i], "-o", "-");
        cr_assert_eq(r.code, 0, "%s: %s", qs[i], r.err);
        size_t len;
        uint8_t *f = tt_read_file(out, &len);
        cr_assert_eq(r.out_len, len, "%s: stdout %zu bytes, file %zu", qs[i], r.out_len, len);
        cr_assert_eq(memcmp(r.out, f, len), 0, "%s", qs[i]);
        tvs_st_header h;
        tt_ok(tvs_st_parse(&h, (tvs_span){ f, len }));
        cr_assert_eq(h.n, 4);
        tvs_st_header_dispose(&h);
        free(f);
        tt_run_dispose(&r);
        unlink(out);
    }
    free(out);
}

Test(query_cli, materialize_takes_selection_and_dtype_options)
{
    import_models();
    char *out = tt_join(dir, "out.safetensors");
    ok("materialize", "base + 0.5*ft", "-o", out, "--tensors", "^model\\.layers", "--dtype",
       "f32", "--threads", "1");
    size_t len;
    uint8_t *f = tt_read_file(out, &len);
    tvs_st_header h;
    tt_ok(tvs_st_parse(&h, (tvs_span){ f, len }));
    cr_assert_eq(h.n, 2);
    for (size_t i = 0; i < h.n; i++)
        cr_assert_eq(h.tensors[i].dtype, TVS_DTYPE_F32);
    tvs_st_header_dispose(&h);
    free(f);
    unlink(out);
    ok("materialize", "base + 0.5*ft", "-o", out, "--layers", "1-1", "--shard", "0/2");
    f = tt_read_file(out, &len);
    tt_ok(tvs_st_parse(&h, (tvs_span){ f, len }));
    cr_assert(h.n >= 1 && h.n <= 3, "%zu tensors", h.n);
    cr_assert_eq(tvs_st_find(&h, "model.layers.0.weight"), -1);
    tvs_st_header_dispose(&h);
    free(f);
    free(out);
}

Test(query_cli, the_real_base_v1_plus_ft_math_is_byte_identical_to_ft_math)
{
    char *b1 = tt_fmt("%s/base-v1.safetensors", TVS_SHARED_MODELS);
    char *fm = tt_fmt("%s/ft-math.safetensors", TVS_SHARED_MODELS);
    if (!tt_exists(b1) || !tt_exists(fm)) {
        free(b1);
        free(fm);
        cr_skip_test("no shared models in %s", TVS_SHARED_MODELS);
    }
    ok("import", b1, "--as", "base-v1");
    ok("import", fm, "--as", "ft-math", "--base", "base-v1");
    char *out = tt_join(dir, "merged.safetensors");
    ok("materialize", "base-v1 + ft-math", "-o", out);
    assert_same_file(out, fm);
    tt_run r = run("materialize", "base-v1 + ft-math", "-o", "-");
    cr_assert_eq(r.code, 0, "%s", r.err);
    size_t len;
    uint8_t *f = tt_read_file(fm, &len);
    cr_assert_eq(r.out_len, len);
    cr_assert_eq(memcmp(r.out, f, len), 0);
    free(f);
    tt_run_dispose(&r);
    free(out);
    free(b1);
    free(fm);
}

/* ---- explain */

Test(query_cli, explain_prints_the_plan)
{
    import_models();
    tt_run r = run("explain", "base + 0.5*ft");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "output") != NULL, "%s", r.out);
    cr_assert(strstr(r.out, "base") != NULL, "%s", r.out);
    cr_assert(strstr(r.out, "ft") != NULL, "%s", r.out);
    cr_assert(strstr(r.out, "compute") != NULL, "%s", r.out);
    cr_assert_eq(r.err_len, 0, "%s", r.err);
    tt_run_dispose(&r);

    r = run("explain", "base + ft", "--dtype", "f16", "--layers", "0-0");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "output") != NULL, "%s", r.out);
    cr_assert(strstr(r.out, "F16") != NULL, "%s", r.out);
    tt_run_dispose(&r);
}

Test(query_cli, help_exits_zero)
{
    static const char *const cmds[] = { "materialize", "explain" };
    for (size_t i = 0; i < 2; i++) {
        tt_run r = run(cmds[i], "--help");
        cr_assert_eq(r.code, 0, "%s --help exited %d: %s", cmds[i], r.code, r.err);
        cr_assert(strstr(r.out, cmds[i]) != NULL, "%s", r.out);
        tt_run_dispose(&r);
    }
}

/* ---- errors */

/* @p q fails with exit code @p code (or any non-zero if -1), one line on
 * stderr that contains every string in the NULL-terminated list. */
static void assert_fails_(const char *cmd, const char *q, int code, ...)
{
    tt_run r = strcmp(cmd, "materialize") ? run(cmd, q) : run(cmd, q, "-o", "-");
    if (code < 0)
        cr_assert_neq(r.code, 0, "tvs %s '%s' succeeded", cmd, q);
    else
        cr_assert_eq(r.code, code, "tvs %s '%s' exited %d, expected %d: %s", cmd, q, r.code,
                     code, r.err);
    cr_assert_eq(r.out_len, 0, "tvs %s '%s' wrote %zu bytes to stdout", cmd, q, r.out_len);
    cr_assert_eq(tt_count_lines(r.err), 1, "one line on stderr: \"%s\"", r.err);
    va_list ap;
    va_start(ap, code);
    for (const char *w = va_arg(ap, const char *); w; w = va_arg(ap, const char *))
        cr_assert(strstr(r.err, w) != NULL, "stderr \"%s\" does not name %s", r.err, w);
    va_end(ap);
    tt_run_dispose(&r);
}
#define assert_fails(cmd, q, code, ...) assert_fails_(cmd, q, code, __VA_ARGS__, NULL)

Test(query_cli, a_type_error_exits_non_zero_with_one_line_naming_the_ref)
{
    import_models();
    assert_fails("materialize", "base + u", 2, "'u'", "'base'");
    assert_fails("explain", "base + u", 2, "'u'");
    assert_fails("materialize", "2*u", 2, "'u'");
    assert_fails("materialize", "b2 + ft", -1, "'ft'", "'b2'", "'base'");
    assert_fails("explain", "transfer(ft, onto=u)", -1, "'ft'", "'u'");
    assert_fails("materialize", "base + nope", 3, "nope");
    assert_fails("materialize", "base + (ft", 2, "at byte 10");
}

Test(query_cli, bad_options_exit_2)
{
    import_models();
    static const char *const cmds[] = { "materialize", "explain" };
    static const char *const bad[][2] = {
        { "--shard", "3/3" }, { "--shard", "1/0" }, { "--shard", "x" },
        { "--layers", "5-2" }, { "--layers", "-1-3" }, { "--layers", "a" },
        { "--dtype", "int8" }, { "--dtype", "BF16x" },
    };
    for (size_t c = 0; c < 2; c++)
        for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
            tt_run r = c == 0 ? run(cmds[c], "base + ft", "-o", "-", bad[i][0], bad[i][1])
                              : run(cmds[c], "base + ft", bad[i][0], bad[i][1]);
            cr_assert_eq(r.code, 2, "%s %s %s exited %d: %s", cmds[c], bad[i][0], bad[i][1],
                         r.code, r.err);
            cr_assert_eq(r.out_len, 0);
            cr_assert_gt(r.err_len, 0);
            tt_run_dispose(&r);
        }
    tt_run r = run("materialize", "base + ft");   /* no -o */
    cr_assert_eq(r.code, 2, "%s", r.err);
    tt_run_dispose(&r);
    r = run("explain", "base + ft", "-o", "x");
    cr_assert_eq(r.code, 2, "%s", r.err);
    tt_run_dispose(&r);
    r = run("materialize");
    cr_assert_eq(r.code, 2, "%s", r.err);
    tt_run_dispose(&r);
}

static int del_obj(tvs_txn *txn, void *id) { return tvs_obj_del(txn, id); }

Test(query_cli, a_failed_materialize_leaves_no_output_file)
{
    import_models();
    char *out = tt_join(dir, "never.safetensors");
    /* a plan error */
    tt_run r = run("materialize", "base + u", "-o", out);
    cr_assert_neq(r.code, 0);
    tt_run_dispose(&r);
    cr_assert(!tt_exists(out));
    cr_assert_eq(leftovers(), 0);

    /* an error while writing: a chunk of ft's largest tensor is gone */
    tvs_store *st;
    tvs_id chunk;
    tt_ok(tvs_store_open(&st, dir, NULL));
    tt_ok(tt_find_chunk(&chunk, st, "ft", "model.embed.weight", 1));
    tt_ok(tvs_store_write(st, 0, del_obj, &chunk));
    tvs_store_close(st);
    static const char *const qs[] = { "base + ft", "base + 0.5*ft" };
    for (size_t i = 0; i < 2; i++) {
        r = run("materialize", qs[i], "-o", out);
        cr_assert_neq(r.code, 0, "%s succeeded without a chunk", qs[i]);
        cr_assert_eq(tt_count_lines(r.err), 1, "%s", r.err);
        tt_run_dispose(&r);
        cr_assert(!tt_exists(out), "%s left %s", qs[i], out);
        cr_assert_eq(leftovers(), 0, "%s left a temporary file", qs[i]);
    }
    /* an existing file stays as it was */
    cr_assert_eq(tt_write_text(out, "old contents"), 0);
    r = run("materialize", "base + 0.5*ft", "-o", out);
    cr_assert_neq(r.code, 0);
    tt_run_dispose(&r);
    size_t len;
    char *old = (char *)tt_read_file(out, &len);
    cr_assert_str_eq(old, "old contents");
    free(old);
    cr_assert_eq(leftovers(), 0);
    free(out);
}

Test(query_cli, materialize_of_a_damaged_stored_file_fails_like_export)
{
    /* Random bytes are stored raw, so a flipped bit decodes "fine": only the
     * tensor checksum can tell. `tvs export` checks it and fails; a
     * materialized copy of the same file (SPEC 4.3: "its stored file
     * verbatim") must not be written with the damaged bytes either. */
    char *p = tt_join(dir, "raw.safetensors");
    tt_tensor t[] = { { "w", "BF16", 2, { 1024, 640 } } };
    cr_assert_eq(tt_write_st(p, t, 1, NULL, 1), 0);
    ok("import", p, "--as", "raw");
    tvs_store *st;
    tvs_id chunk;
    tt_ok(tvs_store_open(&st, dir, NULL));
    tt_ok(tt_find_chunk(&chunk, st, "raw", "w", 0));
    tvs_store_close(st);
    tt_ok(tt_corrupt_object(dir, &chunk, 5000, 0x10));

    char *exported = tt_join(dir, "exported.safetensors");
    tt_run r = run("export", "raw", "-o", exported);
    cr_assert_eq(r.code, 4, "export of a damaged model exits 4: %d %s", r.code, r.err);
    tt_run_dispose(&r);

    char *out = tt_join(dir, "out.safetensors");
    r = run("materialize", "raw", "-o", out);
    cr_assert_neq(r.code, 0, "materialize wrote a damaged copy and exited 0");
    tt_run_dispose(&r);
    cr_assert(!tt_exists(out));
    free(out);
    free(exported);
    free(p);
}
