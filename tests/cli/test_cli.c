/*
 * cli/tvs.c, run as a program: help for every command, usage errors exit
 * 2, --json output parses with the expected fields, bad input gives one
 * line on stderr naming the file and the rule, the store is found from
 * --store, $TVS_STORE or the current folder's parents, and the ref
 * commands, log, rm and gc do what they say.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/support/support.h"

static char *dir, *env_store, *model, *model2;
static const char *env[2];

static void setup(void)
{
    dir = tt_cli_store(&env_store, env);
    model = tt_join(dir, "model.safetensors");
    model2 = tt_join(dir, "other.safetensors");
    tt_tensor t[] = { { "lm_head.weight", "BF16", 2, { 256, 256 } },
                      { "model.norm.weight", "F32", 1, { 256 } } };
    cr_assert_eq(tt_write_st_weights(model, t, 2, "{\"format\":\"pt\"}", 1), 0);
    /* other.safetensors shares lm_head.weight's bytes with model.safetensors */
    size_t len;
    uint8_t *m = tt_read_file(model, &len);
    uint8_t *data = malloc(131072 + 4000);
    memcpy(data, m + 8 + tvs_load_le64(m), 131072);
    tt_fill_random(data + 131072, 4000, 2);
    cr_assert_eq(tt_write_st_raw(model2, "{\"extra\":{\"dtype\":\"I32\",\"shape\":[1000],"
                                 "\"data_offsets\":[131072,135072]},\"lm_head.weight\":{"
                                 "\"dtype\":\"BF16\",\"shape\":[256,256],\"data_offsets\":"
                                 "[0,131072]}}", data, 131072 + 4000), 0);
    free(m);
    free(data);
}

static void teardown(void)
{
    tt_rmtree(dir);
    free(dir);
    free(env_store);
    free(model);
    free(model2);
    tt_leak_check();
}

TestSuite(cli, .init = setup, .fini = teardown);

/* ---- helpers */

/* Run tvs with $TVS_STORE set to the test store (run_ok: it must exit 0). */
#define run(...) tt_cli(env, 0, __VA_ARGS__, NULL)
#define run_ok(...) tt_cli(env, 1, __VA_ARGS__, NULL)

static void done(tt_run *r) { tt_run_dispose(r); }

static json_t *parse_json(const tt_run *r)
{
    json_error_t err;
    json_t *j = json_loads(r->out, 0, &err);
    cr_assert_not_null(j, "not JSON (%s at line %d): %s", err.text, err.line, r->out);
    return j;
}

static const char *jstr(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    cr_assert(json_is_string(v), "\"%s\" is not a string", key);
    return json_string_value(v);
}

static json_int_t jint(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    cr_assert(json_is_integer(v), "\"%s\" is not an integer", key);
    return json_integer_value(v);
}

static int is_hex_id(const char *s)
{
    if (strlen(s) != TVS_ID_HEX)
        return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return 0;
    return 1;
}

static off_t file_size(const char *p)
{
    struct stat st;
    cr_assert_eq(stat(p, &st), 0);
    return st.st_size;
}

/* stderr is exactly one line that mentions every given string. */
static void one_line_naming(const tt_run *r, const char *a, const char *b)
{
    cr_assert_eq(tt_count_lines(r->err), 1, "stderr is not one line:\n%s", r->err);
    cr_assert_eq(r->err[r->err_len - 1], '\n');
    cr_assert(strstr(r->err, a), "stderr \"%s\" does not name \"%s\"", r->err, a);
    if (b)
        cr_assert(strstr(r->err, b), "stderr \"%s\" does not name \"%s\"", r->err, b);
}

/* ---- help and usage */

Test(cli, help_works_for_every_command_that_tvs_help_lists)
{
    tt_run r = run_ok("--help");
    const char *p = strstr(r.out, "commands:\n");
    cr_assert_not_null(p, "no command list in: %s", r.out);
    p += strlen("commands:\n");
    int n = 0;
    while (*p == ' ') {
        char cmd[32];
        cr_assert_eq(sscanf(p, " %31s", cmd), 1);
        tt_run h = run(cmd, "--help", NULL);
        cr_assert_eq(h.code, 0, "tvs %s --help exited %d: %s", cmd, h.code, h.err);
        char *want = tt_fmt("usage: tvs %s", cmd);
        cr_assert(strncmp(h.out, want, strlen(want)) == 0, "tvs %s --help: %s", cmd, h.out);
        cr_assert_gt(tt_count_lines(h.out), 2, "tvs %s --help says too little", cmd);
        done(&h);
        h = run(cmd, "-h", NULL);
        cr_assert_eq(h.code, 0, "tvs %s -h exited %d", cmd, h.code);
        done(&h);
        free(want);
        n++;
        p = strchr(p, '\n');
        cr_assert_not_null(p);
        p++;
    }
    cr_assert_geq(n, 12, "only %d commands listed", n);
    done(&r);
    r = run_ok("-h");
    done(&r);
    r = run_ok("--version");
    cr_assert(strstr(r.out, "tvs "), "%s", r.out);
    done(&r);
}

Test(cli, no_command_or_an_unknown_one_exits_2)
{
    tt_run r = run("--store", dir, NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "usage"), "%s", r.err);
    done(&r);
    r = run("frobnicate", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "'frobnicate' is not a command"), "%s", r.err);
    done(&r);
    r = run("--frobnicate", "ls", NULL);
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "--frobnicate"), "%s", r.err);
    done(&r);
    tt_run e;
    cr_assert_eq(tt_tvsl(&e, env, NULL, NULL), 0);
    cr_assert_eq(e.code, 2, "no arguments at all: exit %d", e.code);
    done(&e);
}

Test(cli, missing_or_extra_arguments_exit_2_with_a_pointer_to_help)
{
    static const char *cases[][6] = {
        { "import" },
        { "import", "x.safetensors" },
        { "import", "--as", "m" },
        { "import", "a", "b", "--as", "m" },
        { "import", "x", "--as", "m", "--bogus" },
        { "export" },
        { "export", "m" },
        { "export", "-o", "out" },
        { "ls", "a", "b" },
        { "ls", "--bogus" },
        { "show" },
        { "show", "a", "b" },
        { "log" },
        { "tag", "a" },
        { "tag", "a", "b", "c" },
        { "ref" },
        { "ref", "set", "a" },
        { "ref", "rm" },
        { "ref", "rename", "a" },
        { "ref", "frob", "a" },
        { "rm" },
        { "rm", "a", "b" },
        { "gc", "--bogus" },
        { "fsck", "extra" },
        { "stats", "--bogus" },
        { "init", "a", "b" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *argv[8] = { 0 };
        char line[128] = "";
        for (int k = 0; k < 6 && cases[i][k]; k++) {
            argv[k] = cases[i][k];
            strcat(line, cases[i][k]);
            strcat(line, " ");
        }
        tt_run r;
        cr_assert_eq(tt_tvs(&r, env, NULL, argv), 0);
        cr_assert_eq(r.code, 2, "tvs %s: exit %d, stderr: %s", line, r.code, r.err);
        cr_assert_eq(tt_count_lines(r.err), 1, "tvs %s: stderr is not one line: %s", line,
                     r.err);
        cr_assert(strstr(r.err, "--help"), "tvs %s: %s", line, r.err);
        done(&r);
    }
}

Test(cli, an_unknown_option_is_named_on_one_line)
{
    tt_run r = run("import", model, "--as", "m", "--frobnicate", NULL);
    cr_assert_eq(r.code, 2);
    one_line_naming(&r, "--frobnicate", "tvs import --help");
    done(&r);
    r = run("gc", "-z", NULL);
    cr_assert_eq(r.code, 2);
    one_line_naming(&r, "-z", "tvs gc --help");
    done(&r);
    r = run("export", "m", "-o", NULL);
    cr_assert_eq(r.code, 2);
    one_line_naming(&r, "-o", NULL);
    done(&r);
}

/* ---- JSON output */

Test(cli, ls_json_lists_refs_with_their_fields)
{
    tt_run r = run_ok("import", model, "--as", "llama/base", "-m", "first import");
    done(&r);
    r = run_ok("import", model2, "--as", "llama/other");
    done(&r);
    r = run_ok("ls", "--json");
    json_t *j = parse_json(&r);
    cr_assert(json_is_array(j));
    cr_assert_eq(json_array_size(j), 2);
    json_t *e = json_array_get(j, 0);
    cr_assert_str_eq(jstr(e, "name"), "llama/base");
    cr_assert(is_hex_id(jstr(e, "model")), "model: %s", jstr(e, "model"));
    cr_assert_str_eq(jstr(e, "kind"), "full");
    cr_assert_eq(jint(e, "logical_bytes"), file_size(model));
    cr_assert(strlen(jstr(e, "time")) > 0);
    cr_assert_str_eq(jstr(e, "message"), "first import");
    cr_assert_str_eq(jstr(json_array_get(j, 1), "name"), "llama/other");
    json_decref(j);
    done(&r);
    r = run_ok("ls", "llama/o", "--json");
    j = parse_json(&r);
    cr_assert_eq(json_array_size(j), 1, "a prefix filters: %s", r.out);
    json_decref(j);
    done(&r);
    r = run_ok("ls");
    cr_assert_eq(tt_count_lines(r.out), 2, "%s", r.out);
    done(&r);
}

Test(cli, ls_json_of_an_empty_store_is_an_empty_array)
{
    tt_run r = run_ok("ls", "--json");
    json_t *j = parse_json(&r);
    cr_assert(json_is_array(j));
    cr_assert_eq(json_array_size(j), 0);
    json_decref(j);
    done(&r);
}

Test(cli, show_json_describes_files_and_tensors)
{
    tt_run r = run_ok("import", model, "--as", "m", "-m", "hello");
    done(&r);
    r = run_ok("show", "m", "--json");
    json_t *j = parse_json(&r);
    cr_assert(is_hex_id(jstr(j, "model")));
    cr_assert_str_eq(jstr(j, "kind"), "full");
    cr_assert(json_is_array(json_object_get(j, "parents")));
    cr_assert_eq(json_array_size(json_object_get(j, "parents")), 0);
    cr_assert_str_eq(jstr(j, "message"), "hello");
    jstr(j, "author");
    jstr(j, "time");
    json_t *files = json_object_get(j, "files");
    cr_assert(json_is_array(files));
    cr_assert_eq(json_array_size(files), 1);
    json_t *f = json_array_get(files, 0);
    cr_assert_str_eq(jstr(f, "name"), "model.safetensors");
    cr_assert_str_eq(jstr(f, "kind"), "safetensors");
    cr_assert_eq(jint(f, "logical_bytes"), 256 * 256 * 2 + 256 * 4);
    cr_assert_gt(jint(f, "stored_bytes"), 0);
    json_t *ts = json_object_get(f, "tensors");
    cr_assert_eq(json_array_size(ts), 2);
    json_t *t0 = json_array_get(ts, 0);
    cr_assert_str_eq(jstr(t0, "name"), "lm_head.weight");
    cr_assert_str_eq(jstr(t0, "dtype"), "BF16");
    cr_assert_str_eq(jstr(t0, "shape"), "[256,256]");
    cr_assert_eq(jint(t0, "logical_bytes"), 256 * 256 * 2);
    cr_assert_gt(jint(t0, "stored_bytes"), 0);
    cr_assert_lt(jint(t0, "stored_bytes"), 256 * 256 * 2, "weights compress");
    jstr(t0, "encoding");
    json_decref(j);
    done(&r);
}

Test(cli, log_shows_every_version_after_importing_twice_under_one_name)
{
    tt_run r = run_ok("import", model, "--as", "m", "-m", "version one");
    done(&r);
    r = run_ok("import", model2, "--as", "m", "-m", "version two");
    done(&r);
    r = run_ok("log", "m", "--json");
    json_t *j = parse_json(&r);
    cr_assert(json_is_array(j));
    cr_assert_eq(json_array_size(j), 2, "%s", r.out);
    json_t *newest = json_array_get(j, 0), *oldest = json_array_get(j, 1);
    cr_assert_str_eq(jstr(newest, "message"), "version two");
    cr_assert_str_eq(jstr(oldest, "message"), "version one");
    cr_assert_str_eq(jstr(newest, "kind"), "full");
    jstr(newest, "time");
    jstr(newest, "author");
    char *v1 = strdup(jstr(oldest, "model")), *v2 = strdup(jstr(newest, "model"));
    json_decref(j);
    done(&r);
    /* the text form lists both; the older one still exports */
    r = run_ok("log", "m");
    cr_assert(strstr(r.out, v1) && strstr(r.out, v2), "%s", r.out);
    cr_assert(strstr(r.out, v2) < strstr(r.out, v1), "newest first: %s", r.out);
    done(&r);
    char *spec = tt_fmt("m@%.8s", v1), *out = tt_join(dir, "v1.out"), why[256];
    r = run_ok("export", spec, "-o", out);
    cr_assert_eq(tt_files_equal(model, out, why, sizeof why), 1, "%s", why);
    done(&r);
    r = run_ok("show", "m", "--json");
    j = parse_json(&r);
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(j, "parents"), 0)), v1);
    json_decref(j);
    done(&r);
    free(spec);
    free(out);
    free(v1);
    free(v2);
}

Test(cli, stats_json_counts_objects_and_bytes)
{
    tt_run r = run_ok("import", model, "--as", "a");
    done(&r);
    r = run_ok("import", model2, "--as", "b");
    done(&r);
    r = run_ok("stats", "--json");
    json_t *j = parse_json(&r);
    static const char *keys[] = { "objects", "chunks", "tensors", "models", "logical_bytes",
                                  "stored_bytes", "reachable_bytes", "dedup_saved_bytes",
                                  "file_bytes" };
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        jint(j, keys[i]);
    cr_assert_eq(jint(j, "models"), 2);
    cr_assert_eq(jint(j, "tensors"), 3, "lm_head.weight is shared");
    cr_assert_eq(jint(j, "objects"), jint(j, "chunks") + jint(j, "tensors") + jint(j, "models"));
    cr_assert_eq(jint(j, "logical_bytes"), file_size(model) + file_size(model2));
    cr_assert_gt(jint(j, "dedup_saved_bytes"), 0);
    cr_assert(json_is_number(json_object_get(j, "ratio")));
    json_t *refs = json_object_get(j, "refs");
    cr_assert_eq(json_array_size(refs), 2);
    json_t *a = json_array_get(refs, 0);
    cr_assert_str_eq(jstr(a, "name"), "a");
    cr_assert(is_hex_id(jstr(a, "model")));
    cr_assert_str_eq(jstr(a, "kind"), "full");
    cr_assert_eq(jint(a, "logical_bytes"), file_size(model));
    json_decref(j);
    done(&r);
}

Test(cli, gc_json_reports_what_it_freed)
{
    tt_run r = run_ok("import", model, "--as", "a");
    done(&r);
    r = run_ok("import", model2, "--as", "b");
    done(&r);
    r = run_ok("rm", "b");
    done(&r);
    r = run_ok("gc", "--dry-run", "--json");
    json_t *j = parse_json(&r);
    cr_assert(json_is_true(json_object_get(j, "dry_run")));
    json_int_t would = jint(j, "freed_objects");
    cr_assert_eq(would, 3, "b's own chunk and tensor and its model");
    json_decref(j);
    done(&r);
    r = run_ok("gc", "--json");
    j = parse_json(&r);
    cr_assert(json_is_false(json_object_get(j, "dry_run")));
    cr_assert_eq(jint(j, "freed_objects"), would);
    cr_assert_gt(jint(j, "freed_bytes"), 4000);
    cr_assert_gt(jint(j, "kept_objects"), 0);
    cr_assert_gt(jint(j, "kept_bytes"), 0);
    json_decref(j);
    done(&r);
    r = run_ok("gc", "--json");
    j = parse_json(&r);
    cr_assert_eq(jint(j, "freed_objects"), 0);
    json_decref(j);
    done(&r);
}

Test(cli, json_output_keeps_text_that_is_not_utf8)
{
    const char *latin1_env[] = { env_store, "USER=j\xf6rg", NULL };
    tt_run r;
    cr_assert_eq(tt_tvsl(&r, latin1_env, NULL, "import", model, "--as", "m", "-m",
                         "caf\xe9 au lait", NULL), 0);
    cr_assert_eq(r.code, 0, "%s", r.err);
    done(&r);
    r = run_ok("show", "m", "--json");
    json_t *j = parse_json(&r);
    cr_assert_str_eq(jstr(j, "message"), "caf\xef\xbf\xbd au lait", "invalid bytes become U+FFFD");
    cr_assert_str_eq(jstr(j, "author"), "j\xef\xbf\xbdrg");
    json_decref(j);
    done(&r);
    r = run_ok("ls", "--json");
    j = parse_json(&r);
    cr_assert_eq(json_array_size(j), 1, "the ref must not vanish from the list: %s", r.out);
    json_decref(j);
    done(&r);
    r = run_ok("log", "m", "--json");
    j = parse_json(&r);
    cr_assert_eq(json_array_size(j), 1, "%s", r.out);
    json_decref(j);
    done(&r);
}

/* ---- errors */

Test(cli, bad_input_is_one_line_on_stderr_naming_the_file_and_the_rule)
{
    static const struct { const char *json; size_t data; const char *rule; } bad[] = {
        { "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 7,
          "3 trailing bytes" },
        { "{\"a\":{\"dtype\":\"Q8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
          "unknown dtype \"Q8\"" },
        { "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
          "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", 6, "overlap" },
        { "{not json", 0, "not valid JSON" },
        { "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
          "shape/offset mismatch" },
    };
    char *p = tt_join(dir, "bad model.safetensors");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        uint8_t zeros[16] = { 0 };
        cr_assert_eq(tt_write_st_raw(p, bad[i].json, zeros, bad[i].data), 0);
        tt_run r = run("import", p, "--as", "bad", NULL);
        cr_assert_eq(r.code, 4, "exit %d for %s: %s", r.code, bad[i].rule, r.err);
        one_line_naming(&r, p, bad[i].rule);
        cr_assert_eq(r.out_len, 0, "nothing on stdout: %s", r.out);
        done(&r);
    }
    tt_run r = run("ls", "--json", NULL);
    cr_assert_str_eq(r.out, "[]\n", "no ref was made");
    done(&r);
    free(p);
}

Test(cli, other_errors_are_one_line_with_their_own_exit_codes)
{
    char *missing = tt_join(dir, "missing.safetensors");
    tt_run r = run("import", missing, "--as", "m", NULL);
    cr_assert_eq(r.code, 3);
    one_line_naming(&r, missing, NULL);
    done(&r);
    r = run("import", model, "--as", "9bad", NULL);
    cr_assert_eq(r.code, 2);
    one_line_naming(&r, "9bad", "start with a letter");
    done(&r);
    r = run("export", "nope", "-o", "/tmp/never-written", NULL);
    cr_assert_eq(r.code, 3);
    one_line_naming(&r, "nope", NULL);
    cr_assert_not(tt_exists("/tmp/never-written"));
    done(&r);
    r = run("show", "nope", NULL);
    cr_assert_eq(r.code, 3);
    done(&r);
    r = run("show", "", NULL);
    cr_assert_eq(r.code, 3, "an empty name is not found: exit %d: %s", r.code, r.err);
    done(&r);
    r = run("init", dir, NULL);
    cr_assert_eq(r.code, 6, "init over a store: exit %d", r.code);
    one_line_naming(&r, "already exists", NULL);
    done(&r);
    /* a folder model to stdout */
    char *folder = tt_join(dir, "folder");
    char *shard = tt_join(folder, "m.safetensors");
    cr_assert_eq(tt_mkdirs(folder), 0);
    tt_tensor t[] = { { "w", "F32", 1, { 4 } } };
    cr_assert_eq(tt_write_st(shard, t, 1, NULL, 3), 0);
    r = run_ok("import", folder, "--as", "f");
    done(&r);
    r = run("export", "f", "-o", "-", NULL);
    cr_assert_eq(r.code, 2);
    one_line_naming(&r, "stdout", NULL);
    done(&r);
    free(folder);
    free(shard);
    free(missing);
}

/* ---- finding the store */

Test(cli, the_store_comes_from_store_flag_tvs_store_or_the_current_folders)
{
    tt_run r = run_ok("import", model, "--as", "m");
    done(&r);
    const char *unset[] = { "TVS_STORE", NULL };
    /* --store DIR and --store=DIR */
    char *eq = tt_fmt("--store=%s", dir);
    cr_assert_eq(tt_tvsl(&r, unset, "/", "--store", dir, "ls", NULL), 0);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "m "), "%s", r.out);
    done(&r);
    cr_assert_eq(tt_tvsl(&r, unset, "/", eq, "ls", NULL), 0);
    cr_assert_eq(r.code, 0, "%s", r.err);
    done(&r);
    /* $TVS_STORE */
    cr_assert_eq(tt_tvsl(&r, env, "/", "ls", NULL), 0);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "m "), "%s", r.out);
    done(&r);
    /* the current folder's parents */
    char *deep = tt_fmt("%s/a/b/c", dir);
    cr_assert_eq(tt_mkdirs(deep), 0);
    cr_assert_eq(tt_tvsl(&r, unset, deep, "ls", NULL), 0);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strstr(r.out, "m "), "%s", r.out);
    done(&r);
    /* --store wins over $TVS_STORE, which wins over the current folder */
    char *other = tt_mkdtemp();
    char *other_env = tt_fmt("TVS_STORE=%s", other);
    const char *oenv[] = { other_env, NULL };
    cr_assert_eq(tt_tvsl(&r, oenv, deep, "--store", dir, "ls", NULL), 0);
    cr_assert_eq(r.code, 0, "%s", r.err);
    done(&r);
    cr_assert_eq(tt_tvsl(&r, oenv, deep, "ls", NULL), 0);
    cr_assert_eq(r.code, 3, "$TVS_STORE names a non-store: exit %d", r.code);
    one_line_naming(&r, other, "not a tvstore store");
    done(&r);
    /* nowhere */
    cr_assert_eq(tt_tvsl(&r, unset, other, "ls", NULL), 0);
    cr_assert_eq(r.code, 3);
    one_line_naming(&r, "--store", "TVS_STORE");
    done(&r);
    cr_assert_eq(tt_tvsl(&r, unset, "/", "--store", other, "ls", NULL), 0);
    cr_assert_eq(r.code, 3);
    one_line_naming(&r, other, NULL);
    done(&r);
    char *dot = tt_join(other, ".tvs");
    cr_assert_not(tt_exists(dot), "a failed lookup creates nothing");
    /* tvs init makes one */
    cr_assert_eq(tt_tvsl(&r, unset, other, "init", NULL), 0);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(tt_exists(dot));
    done(&r);
    tt_rmtree(other);
    free(other);
    free(other_env);
    free(deep);
    free(dot);
    free(eq);
}

/* ---- refs, rm, gc */

Test(cli, tag_creates_a_ref_and_moves_it_only_with_force)
{
    tt_run r = run_ok("import", model, "--as", "m");
    done(&r);
    r = run_ok("import", model2, "--as", "m");
    done(&r);
    r = run_ok("log", "m", "--json");
    json_t *j = parse_json(&r);
    char *v2 = strdup(jstr(json_array_get(j, 0), "model"));
    char *v1 = strdup(jstr(json_array_get(j, 1), "model"));
    json_decref(j);
    done(&r);
    char *old = tt_fmt("m@%.10s", v1);
    r = run_ok("tag", "release/1", old);
    done(&r);
    r = run_ok("show", "release/1", "--json");
    j = parse_json(&r);
    cr_assert_str_eq(jstr(j, "model"), v1);
    json_decref(j);
    done(&r);
    r = run("tag", "release/1", "m", NULL);
    cr_assert_eq(r.code, 6, "tag over an existing ref: exit %d", r.code);
    one_line_naming(&r, "release/1", "already exists");
    done(&r);
    r = run_ok("tag", "-f", "release/1", "m");
    done(&r);
    r = run_ok("show", "release/1", "--json");
    j = parse_json(&r);
    cr_assert_str_eq(jstr(j, "model"), v2);
    json_decref(j);
    done(&r);
    r = run("tag", "x", "does-not-exist", NULL);
    cr_assert_eq(r.code, 3);
    done(&r);
    /* a tag by full id */
    r = run_ok("tag", "by-id", v1);
    done(&r);
    free(v1);
    free(v2);
    free(old);
}

static int has_ref(const char *name)
{
    tt_run r = run_ok("ref", "list", "--json");
    json_t *j = parse_json(&r);
    int found = 0;
    for (size_t i = 0; i < json_array_size(j); i++)
        found |= strcmp(jstr(json_array_get(j, i), "name"), name) == 0;
    json_decref(j);
    done(&r);
    return found;
}

Test(cli, ref_set_list_rename_and_rm_manage_refs)
{
    tt_run r = run_ok("import", model, "--as", "m");
    done(&r);
    r = run_ok("ref", "set", "llama-3.1/math", "m");
    done(&r);
    cr_assert(has_ref("llama-3.1/math"));
    r = run_ok("ref", "set", "llama-3.1/math", "m");   /* set moves (or keeps) freely */
    done(&r);
    r = run_ok("ref", "list");
    cr_assert(strstr(r.out, "llama-3.1/math"), "%s", r.out);
    cr_assert_eq(tt_count_lines(r.out), 2);
    done(&r);
    r = run_ok("ref", "list", "llama");
    cr_assert_eq(tt_count_lines(r.out), 1, "%s", r.out);
    done(&r);
    r = run_ok("ref", "rename", "llama-3.1/math", "llama-3.1/arith");
    done(&r);
    cr_assert_not(has_ref("llama-3.1/math"));
    cr_assert(has_ref("llama-3.1/arith"));
    r = run("ref", "rename", "llama-3.1/arith", "m", NULL);
    cr_assert_eq(r.code, 6, "rename onto an existing ref: exit %d", r.code);
    done(&r);
    cr_assert(has_ref("llama-3.1/arith"), "a failed rename keeps the old name");
    r = run("ref", "rename", "nope", "x", NULL);
    cr_assert_eq(r.code, 3);
    done(&r);
    r = run("ref", "set", "bad//name", "m", NULL);
    cr_assert_eq(r.code, 2);
    done(&r);
    r = run_ok("ref", "rm", "llama-3.1/arith");
    done(&r);
    cr_assert_not(has_ref("llama-3.1/arith"));
    r = run("ref", "rm", "llama-3.1/arith", NULL);
    cr_assert_eq(r.code, 3);
    one_line_naming(&r, "llama-3.1/arith", NULL);
    done(&r);
}

Test(cli, rm_then_gc_says_freed)
{
    tt_run r = run_ok("import", model, "--as", "a");
    done(&r);
    r = run_ok("import", model2, "--as", "b");
    done(&r);
    r = run_ok("rm", "b");
    cr_assert(strstr(r.out, "removed ref b"), "%s", r.out);
    done(&r);
    cr_assert_not(has_ref("b"));
    r = run_ok("gc", "--dry-run");
    cr_assert(strncmp(r.out, "would free 3 objects", 20) == 0, "%s", r.out);
    done(&r);
    r = run_ok("gc");
    cr_assert(strncmp(r.out, "freed 3 objects", 15) == 0, "%s", r.out);
    done(&r);
    r = run_ok("gc");
    cr_assert(strncmp(r.out, "freed 0 objects", 15) == 0, "%s", r.out);
    done(&r);
    r = run("rm", "b", NULL);
    cr_assert_eq(r.code, 3);
    done(&r);
    r = run_ok("fsck");
    cr_assert(strstr(r.out, "no problems found"), "%s", r.out);
    done(&r);
}

Test(cli, export_to_stdout_writes_the_exact_bytes)
{
    tt_run r = run_ok("import", model, "--as", "m");
    done(&r);
    r = run_ok("export", "m", "-o", "-");
    size_t len;
    uint8_t *want = tt_read_file(model, &len);
    cr_assert_eq(r.out_len, len);
    cr_assert(memcmp(r.out, want, len) == 0, "stdout differs from the file");
    free(want);
    done(&r);
    char *out = tt_join(dir, "out.safetensors"), why[256];
    r = run_ok("export", "m", "-o", out);
    cr_assert_eq(r.out_len, 0, "nothing on stdout: %s", r.out);
    cr_assert_eq(tt_files_equal(model, out, why, sizeof why), 1, "%s", why);
    done(&r);
    free(out);
}
