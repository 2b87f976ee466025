/*
 * The lineage commands of cli/tvs.c, run as a program: `tvs lineage`
 * draws bases with their deltas under them, `tvs log --graph` has a line
 * per model, `tvs stats --json` reports per-ref kind, base, added bytes
 * and share, `tvs import --base auto` says which base it picked, `tvs rm`
 * protects bases, and `tvs diff` / `tvs backup` check their arguments.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/support.h"

static char *dir, *env_store, *p_base, *p_ft, *p_other;
static const char *env[2];


static void setup(void)
{
    dir = tt_cli_store(&env_store, env);
    p_base = tt_join(dir, "base.safetensors");
    p_ft = tt_join(dir, "ft.safetensors");
    p_other = tt_join(dir, "other.safetensors");
    tt_tensor t[] = { { "model.embed.weight", "BF16", 2, { 512, 256 } },
                      { "layers.0.weight", "BF16", 2, { 256, 256 } },
                      { "layers.0.norm", "BF16", 1, { 256 } } };
    cr_assert_eq(tt_write_st_weights(p_base, t, 3, "{\"format\":\"pt\"}", 1), 0);
    tt_write_ft(p_base, p_ft, 7, 2);
    tt_tensor o[] = { { "unrelated.weight", "BF16", 2, { 128, 128 } } };
    cr_assert_eq(tt_write_st_weights(p_other, o, 1, NULL, 3), 0);
}

static void teardown(void)
{
    tt_rmtree(dir);
    free(dir);
    free(env_store);
    free(p_base);
    free(p_ft);
    free(p_other);
    tt_leak_check();
}

TestSuite(lineage_cli, .init = setup, .fini = teardown, .timeout = 60);

/* ---- helpers */

#define run(...) tt_cli(env, 0, __VA_ARGS__, NULL)
#define run_ok(...) tt_cli(env, 1, __VA_ARGS__, NULL)

static void done(tt_run *r) { tt_run_dispose(r); }

#define ok(...) tt_cli_quiet(env, __VA_ARGS__, NULL)

/* The line of @p out that contains @p needle (a copy, or NULL). */
static char *line_with(const char *out, const char *needle, int *index)
{
    int i = 0;
    for (const char *p = out; *p; i++) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        char *line = strndup(p, n);
        if (strstr(line, needle)) {
            if (index)
                *index = i;
            return line;
        }
        free(line);
        p += n + (nl != NULL);
    }
    return NULL;
}

/* 12 hex digits of the model a ref names. */
static void short_id(char out[13], const char *ref)
{
    tt_run r = run_ok("ls", "--json");
    json_error_t err;
    json_t *j = json_loads(r.out, 0, &err);
    cr_assert_not_null(j, "ls --json: %s", r.out);
    int found = 0;
    for (size_t i = 0; i < json_array_size(j); i++) {
        json_t *e = json_array_get(j, i);
        if (!strcmp(json_string_value(json_object_get(e, "name")), ref)) {
            const char *id = json_string_value(json_object_get(e, "model"));
            cr_assert_not_null(id, "ls --json has no \"model\" field: %s", r.out);
            snprintf(out, 13, "%.12s", id);
            found = 1;
        }
    }
    cr_assert(found, "no ref %s in %s", ref, r.out);
    json_decref(j);
    done(&r);
}

/* A store with base, its delta ft, a delta of that (ft2) and an unrelated full model. */
static void populate(void)
{
    char *p_ft2 = tt_join(dir, "ft2.safetensors");
    tt_write_ft(p_ft, p_ft2, 11, 4);
    ok("import", p_base, "--as", "base");
    ok("import", p_ft, "--as", "ft", "--base", "base");
    ok("import", p_ft2, "--as", "ft2", "--base", "ft");
    ok("import", p_other, "--as", "other");
    free(p_ft2);
}

/* ---- lineage */

Test(lineage_cli, lineage_prints_each_base_first_with_its_deltas_indented_under_it)
{
    populate();
    tt_run r = run_ok("lineage");
    int ib = -1, if1 = -1, if2 = -1, io = -1;
    char *lb = line_with(r.out, "base ", &ib), *l1 = line_with(r.out, "ft ", &if1);
    char *l2 = line_with(r.out, "ft2 ", &if2), *lo = line_with(r.out, "other ", &io);
    cr_assert(lb && l1 && l2 && lo, "every ref has a line:\n%s", r.out);
    cr_assert_eq(tt_count_lines(r.out), 4, "one line per model:\n%s", r.out);
    cr_assert(strncmp(lb, "base ", 5) == 0, "base is a root, not indented: '%s'", lb);
    cr_assert(strncmp(lo, "other ", 6) == 0, "other is a root: '%s'", lo);
    cr_assert_lt(ib, if1, "the base comes before its delta:\n%s", r.out);
    cr_assert_lt(if1, if2, "ft comes before its own delta:\n%s", r.out);
    size_t ind1 = (size_t)(strstr(l1, "ft ") - l1), ind2 = (size_t)(strstr(l2, "ft2 ") - l2);
    cr_assert_gt(ind1, 0, "ft is indented under base: '%s'", l1);
    cr_assert_gt(ind2, ind1, "ft2 is indented deeper than ft:\n%s\n%s", l1, l2);
    cr_assert(strstr(l1, "delta") && strstr(l2, "delta") && strstr(lb, "full"),
              "kinds are shown:\n%s", r.out);
    /* the delta line comes right under its base (before the other tree) */
    cr_assert(!(io > ib && io < if1), "other's tree is not between base and ft:\n%s", r.out);
    free(lb);
    free(l1);
    free(l2);
    free(lo);
    done(&r);
}

Test(lineage_cli, lineage_name_prints_only_the_tree_of_that_name)
{
    populate();
    tt_run r = run_ok("lineage", "ft2");
    cr_assert(strstr(r.out, "base "), "the root of ft2's tree is shown:\n%s", r.out);
    cr_assert(strstr(r.out, "ft2 "), "%s", r.out);
    cr_assert(!strstr(r.out, "other"), "other is another tree:\n%s", r.out);
    cr_assert_eq(tt_count_lines(r.out), 3, "%s", r.out);
    done(&r);
    r = run_ok("lineage", "other");
    cr_assert_eq(tt_count_lines(r.out), 1, "%s", r.out);
    cr_assert(strstr(r.out, "other"));
    done(&r);
    r = run("lineage", "no-such-model");
    cr_assert_eq(r.code, 3, "an unknown name exits 3, got %d: %s", r.code, r.err);
    cr_assert(strstr(r.err, "no-such-model"), "%s", r.err);
    done(&r);
    r = run("lineage", "a", "b");
    cr_assert_eq(r.code, 2);
    done(&r);
}

/* ---- log --graph */

Test(lineage_cli, log_graph_has_one_starred_line_per_model)
{
    populate();
    ok("import", p_base, "--as", "base", "-m", "second version of base");
    tt_run r = run_ok("log", "--graph");
    const char *refs[] = { "base", "ft", "ft2", "other" };
    int stars = 0;
    for (const char *p = r.out; *p;) {
        const char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        stars += memchr(p, '*', n) != NULL;
        p += n + (nl != NULL);
    }
    /* five models: base (two versions), ft, ft2, other */
    cr_assert_eq(stars, 5, "five models, five '*' lines:\n%s", r.out);
    for (size_t i = 0; i < 4; i++) {
        char id[13];
        short_id(id, refs[i]);
        char *l = line_with(r.out, id, NULL);
        cr_assert_not_null(l, "%s (%s) has a line:\n%s", refs[i], id, r.out);
        cr_assert(strchr(l, '*'), "%s's line has a '*': %s", refs[i], l);
        char *again = line_with(strstr(r.out, id) + 12, id, NULL);
        cr_assert_null(again, "%s appears once:\n%s", id, r.out);
        free(l);
    }
    /* children are drawn before (above) what they come from */
    int ib = -1, if1 = -1, if2 = -1;
    char id[13];
    short_id(id, "ft2");
    free(line_with(r.out, id, &if2));
    short_id(id, "ft");
    free(line_with(r.out, id, &if1));
    char *l = line_with(r.out, "second version", &ib);
    cr_assert_not_null(l);
    free(l);
    cr_assert_lt(if2, if1, "ft2 above ft:\n%s", r.out);
    done(&r);
}

/* ---- stats --json */

static json_t *stats_json(void)
{
    tt_run r = run_ok("stats", "--json");
    json_error_t err;
    json_t *j = json_loads(r.out, 0, &err);
    cr_assert_not_null(j, "not JSON (%s): %s", err.text, r.out);
    done(&r);
    return j;
}

static json_t *ref_entry(json_t *j, const char *name)
{
    json_t *refs = json_object_get(j, "refs");
    cr_assert(json_is_array(refs), "stats --json has a \"refs\" array");
    for (size_t i = 0; i < json_array_size(refs); i++) {
        json_t *e = json_array_get(refs, i);
        if (!strcmp(json_string_value(json_object_get(e, "name")), name))
            return e;
    }
    cr_assert_fail("no ref %s in stats --json", name);
    return NULL;
}

Test(lineage_cli, stats_json_gives_kind_base_added_bytes_and_share_per_ref)
{
    populate();
    json_t *j = stats_json();
    json_t *b = ref_entry(j, "base"), *f = ref_entry(j, "ft"), *o = ref_entry(j, "other");
    cr_assert_str_eq(json_string_value(json_object_get(b, "kind")), "full");
    cr_assert_str_eq(json_string_value(json_object_get(f, "kind")), "delta");
    cr_assert_str_eq(json_string_value(json_object_get(o, "kind")), "full");
    json_t *fb = json_object_get(f, "base");
    cr_assert(json_is_string(fb), "a delta has a \"base\"");
    char id[13];
    short_id(id, "base");
    cr_assert(strncmp(json_string_value(fb), id, 12) == 0, "ft's base is base's model: %s",
              json_string_value(fb));
    json_t *bb = json_object_get(b, "base");
    cr_assert(bb == NULL || json_is_null(bb), "a full model has no base");
    const char *all[] = { "base", "ft", "ft2", "other" };
    for (size_t i = 0; i < 4; i++) {
        json_t *e = ref_entry(j, all[i]);
        cr_assert(json_is_integer(json_object_get(e, "added_bytes")), "%s", all[i]);
        cr_assert(json_is_number(json_object_get(e, "share")), "%s", all[i]);
    }
    double share = json_number_value(json_object_get(f, "share"));
    double bshare = json_number_value(json_object_get(b, "share"));
    cr_assert_lt(share, 1.0, "a delta's share is below 1: %f", share);
    cr_assert_lt(share, bshare, "the delta adds less than the base: %f vs %f", share, bshare);
    json_int_t fadd = json_integer_value(json_object_get(f, "added_bytes"));
    json_int_t flog = json_integer_value(json_object_get(f, "logical_bytes"));
    cr_assert_gt(fadd, 0);
    cr_assert_lt(fadd, flog);
    json_decref(j);
}

/* The time stamps have one-second resolution: a base and its delta
 * imported in the same second must still be ordered base first when
 * bytes are attributed, whatever their names. */
Test(lineage_cli, stats_charges_the_base_bytes_to_the_base_even_when_the_delta_sorts_first)
{
    /* start at a fresh second so both imports very likely share it */
    time_t t0 = time(NULL);
    while (time(NULL) == t0)
        usleep(2000);
    ok("import", p_base, "--as", "zz-base");
    ok("import", p_ft, "--as", "aa-ft", "--base", "zz-base");
    json_t *j = stats_json();
    json_t *b = ref_entry(j, "zz-base"), *f = ref_entry(j, "aa-ft");
    json_int_t badd = json_integer_value(json_object_get(b, "added_bytes"));
    json_int_t fadd = json_integer_value(json_object_get(f, "added_bytes"));
    json_decref(j);
    tt_run r = run_ok("lineage");
    char *l = line_with(r.out, "zz-base", NULL);
    int base_added_nothing = l && strstr(l, "added 0 B") != NULL;
    char line[512];
    snprintf(line, sizeof line, "%s", l ? l : "(none)");
    free(l);
    done(&r);
    cr_assert_lt(fadd, badd, "stats: the delta aa-ft is charged %lld bytes, its base zz-base "
                 "%lld", (long long)fadd, (long long)badd);
    cr_assert(!base_added_nothing, "lineage: the base added its own bytes: %s", line);
}

/* ---- import --base auto, rm */

Test(lineage_cli, import_base_auto_says_which_base_it_picked)
{
    ok("import", p_other, "--as", "other");
    ok("import", p_base, "--as", "base");
    tt_run r = run_ok("import", p_ft, "--as", "ft", "--base", "auto");
    char *l = line_with(r.out, "auto", NULL);
    cr_assert_not_null(l, "the output says what --base auto did:\n%s", r.out);
    cr_assert(strstr(l, "base") && !strstr(l, "other"), "it names base: %s", l);
    free(l);
    done(&r);
    json_t *j = stats_json();
    cr_assert_str_eq(json_string_value(json_object_get(ref_entry(j, "ft"), "kind")), "delta");
    json_decref(j);
}

Test(lineage_cli, rm_of_a_base_exits_7_naming_its_deltas_unless_forced)
{
    populate();
    tt_run r = run("rm", "base");
    cr_assert_eq(r.code, 7, "exit %d: %s", r.code, r.err);
    cr_assert(strstr(r.err, "ft"), "the message names the delta: %s", r.err);
    done(&r);
    r = run("rm", "ft");   /* ft is the base of ft2 */
    cr_assert_eq(r.code, 7, "exit %d: %s", r.code, r.err);
    cr_assert(strstr(r.err, "ft2"), "%s", r.err);
    done(&r);
    ok("rm", "ft2");
    ok("rm", "ft");
    ok("rm", "base");   /* nothing depends on it any more */
    ok("gc");
    ok("fsck");
}

/* ---- diff and backup */

Test(lineage_cli, diff_and_backup_have_help_that_exits_0)
{
    tt_run r = run_ok("diff", "--help");
    cr_assert(strstr(r.out, "diff"), "%s", r.out);
    cr_assert(strstr(r.out, "--as"), "%s", r.out);
    done(&r);
    r = run_ok("backup", "--help");
    cr_assert(strstr(r.out, "--max-chain"), "%s", r.out);
    done(&r);
    r = run_ok("lineage", "--help");
    done(&r);
}

Test(lineage_cli, diff_stores_a_model_again_as_a_delta)
{
    ok("import", p_base, "--as", "base");
    ok("import", p_ft, "--as", "ft-full");
    tt_run r = run_ok("diff", "base", "ft-full", "--as", "ft");
    done(&r);
    char *out = tt_join(dir, "ft.out"), why[512];
    ok("export", "ft", "-o", out);
    cr_assert_eq(tt_files_equal(p_ft, out, why, sizeof why), 1, "%s", why);
    json_t *j = stats_json();
    json_t *f = ref_entry(j, "ft");
    cr_assert_str_eq(json_string_value(json_object_get(f, "kind")), "delta");
    json_decref(j);
    r = run("diff", "base", "ft-full");
    cr_assert_eq(r.code, 2, "--as is required: %d", r.code);
    done(&r);
    r = run("diff", "base", "--as", "x");
    cr_assert_eq(r.code, 2, "two models are required: %d", r.code);
    done(&r);
    r = run("diff", "base", "nope", "--as", "x");
    cr_assert_eq(r.code, 3, "%d: %s", r.code, r.err);
    done(&r);
    free(out);
}

Test(lineage_cli, backup_imports_each_checkpoint_and_prints_a_line_for_it)
{
    char *cdir = tt_join(dir, "ckpts");
    cr_assert_eq(tt_mkdirs(cdir), 0);
    char *c0 = tt_join(cdir, "step-0.safetensors"), *c1 = tt_join(cdir, "step-1.safetensors");
    tt_write_ft(p_base, c0, 5, 10);
    tt_write_ft(c0, c1, 9, 11);
    ok("import", p_base, "--as", "base");
    tt_run r = run_ok("backup", cdir, "--as", "run", "--base", "base", "--max-chain", "3");
    cr_assert_eq(tt_count_lines(r.out), 2, "%s", r.out);
    cr_assert(strstr(r.out, "run/step-0") && strstr(r.out, "run/step-1"), "%s", r.out);
    done(&r);
    char *out = tt_join(dir, "s1.out"), why[512];
    ok("export", "run/step-1", "-o", out);
    cr_assert_eq(tt_files_equal(c1, out, why, sizeof why), 1, "%s", why);
    char *empty = tt_join(dir, "empty");
    cr_assert_eq(tt_mkdirs(empty), 0);
    r = run("backup", empty, "--as", "y");
    cr_assert_eq(r.code, 3, "a folder without checkpoints: exit %d: %s", r.code, r.err);
    done(&r);
    r = run("backup", cdir);
    cr_assert_eq(r.code, 2, "--as is required");
    done(&r);
    free(cdir);
    free(c0);
    free(c1);
    free(out);
    free(empty);
}

Test(lineage_cli, backup_max_chain_out_of_range_exits_2)
{
    char *cdir = tt_join(dir, "ckpts");
    cr_assert_eq(tt_mkdirs(cdir), 0);
    const char *bad[] = { "99", "16", "-1" };
    for (size_t i = 0; i < 3; i++) {
        tt_run r = run("backup", cdir, "--as", "run", "--max-chain", bad[i]);
        cr_assert_eq(r.code, 2, "--max-chain %s: exit %d", bad[i], r.code);
        cr_assert(strstr(r.err, "max-chain"), "the message names the option: %s", r.err);
        done(&r);
    }
    free(cdir);
}

/* The usage message says "--max-chain must be 1 to 15": 0 and words are
 * out of range too (atoi turns both into 0, which silently means 8). */
Test(lineage_cli, backup_max_chain_0_or_not_a_number_exits_2)
{
    char *cdir = tt_join(dir, "ckpts");
    cr_assert_eq(tt_mkdirs(cdir), 0);
    char *c0 = tt_join(cdir, "step-0.safetensors");
    tt_write_ft(p_base, c0, 5, 10);
    const char *bad[] = { "0", "abc", "" };
    int code[3];
    for (size_t i = 0; i < 3; i++) {
        tt_run r = run("backup", cdir, "--as", "run", "--max-chain", bad[i]);
        code[i] = r.code;
        done(&r);
    }
    free(cdir);
    free(c0);
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(code[i], 2, "--max-chain '%s': exit %d, not a usage error", bad[i],
                     code[i]);
}
