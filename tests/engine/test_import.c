/*
 * engine/import.c and engine/export.c: files and model folders come back
 * byte-identical, identical tensors are stored once, and every invalid
 * input is refused with a message naming the file and the rule while the
 * store stays exactly as it was.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/maint.h"
#include "engine/model.h"
#include "tests/support/support.h"

static char *dir;
static tvs_store *s;

static void setup(void) { tt_ok(tt_store_new(&dir, &s)); }

static void teardown(void)
{
    tvs_store_close(s);
    tt_rmtree(dir);
    free(dir);
    tt_leak_check();
}

TestSuite(import, .init = setup, .fini = teardown);

/* ---- helpers */

static char *path_in(const char *name) { return tt_join(dir, name); }

static void assert_same_file(const char *a, const char *b)
{
    char why[1024];
    int eq = tt_files_equal(a, b, why, sizeof why);
    cr_assert_eq(eq, 1, "%s", why);
}

static void assert_same_tree(const char *a, const char *b)
{
    char why[1024];
    cr_assert(tt_trees_equal(a, b, why, sizeof why), "%s", why);
}

static void write_text(const char *folder, const char *name, const char *text)
{
    char *p = tt_join(folder, name);
    char *slash = strrchr(p, '/');
    *slash = 0;
    cr_assert_eq(tt_mkdirs(p), 0);
    *slash = '/';
    cr_assert_eq(tt_write_text(p, text), 0);
    free(p);
}

/* Import @p file, export it, compare. */
static void round_trip_file(const char *file, const char *ref)
{
    char *out = tt_fmt("%s.out", file);
    tt_ok(tt_import(NULL, s, file, ref));
    tt_ok(tt_export(s, ref, out));
    assert_same_file(file, out);
    free(out);
}

static void snapshot(tt_snapshot *snap) { tt_ok(tt_snapshot_take(snap, s)); }

/* The store must be exactly as in @p before. */
static void assert_unchanged(const tt_snapshot *before, const char *what)
{
    tt_snapshot after;
    char why[4096];
    snapshot(&after);
    cr_assert(tt_snapshot_equal(before, &after, why, sizeof why), "%s changed the store: %s",
              what, why);
    tt_snapshot_dispose(&after);
}

/* A model already in the store, so that "nothing changed" means something. */
static void seed_store(void)
{
    tt_tensor t[] = { { "w", "BF16", 2, { 64, 64 } }, { "b", "F32", 1, { 64 } } };
    char *p = path_in("seed.safetensors");
    cr_assert_eq(tt_write_st_weights(p, t, 2, "{\"format\":\"pt\"}", 1), 0);
    tt_ok(tt_import(NULL, s, p, "seed"));
    free(p);
}

/* Import must fail with @p code, name @p path and @p rule, and change nothing. */
static void expect_refused(const char *path, const char *ref, int code, const char *rule)
{
    tt_snapshot before;
    snapshot(&before);
    tvs_id id;
    int rc = tt_import(&id, s, path, ref);
    cr_assert_eq(rc, code, "import of %s gave %d (%s), expected %d: %s", path, rc,
                 tvs_strerror(rc), code, tvs_errmsg());
    if (rule)
        cr_assert(strstr(tvs_errmsg(), rule), "message \"%s\" lacks the rule \"%s\"",
                  tvs_errmsg(), rule);
    assert_unchanged(&before, path);
    tt_snapshot_dispose(&before);
}

/* ---- byte-identical round trips */

Test(import, a_single_file_exports_byte_identical)
{
    tt_tensor t[] = {
        { "lm_head.weight", "BF16", 2, { 1024, 1300 } },   /* 2.5 MiB: three chunks */
        { "model.embed_tokens.weight", "BF16", 2, { 256, 256 } },
        { "model.norm.weight", "F32", 1, { 256 } },
        { "tiny", "BF16", 1, { 3 } },                        /* odd byte count */
    };
    char *p = path_in("model.safetensors");
    cr_assert_eq(tt_write_st_weights(p, t, 4, "{\"format\":\"pt\"}", 2), 0);
    round_trip_file(p, "m");
    free(p);
}

Test(import, random_bytes_export_byte_identical)
{
    tt_tensor t[] = { { "noise", "U8", 1, { 3000001 } }, { "f", "F16", 2, { 33, 65 } } };
    char *p = path_in("noise.safetensors");
    cr_assert_eq(tt_write_st(p, t, 2, NULL, 3), 0);
    round_trip_file(p, "noise");
    free(p);
}

Test(import, a_single_file_exports_into_a_folder_under_its_own_name)
{
    tt_tensor t[] = { { "w", "F32", 1, { 100 } } };
    char *p = path_in("orig.safetensors"), *outdir = path_in("out"), *out;
    cr_assert_eq(tt_write_st(p, t, 1, NULL, 4), 0);
    cr_assert_eq(mkdir(outdir, 0755), 0);
    tt_ok(tt_import(NULL, s, p, "m"));
    tt_ok(tt_export(s, "m", outdir));
    out = tt_join(outdir, "orig.safetensors");
    assert_same_file(p, out);
    free(p);
    free(outdir);
    free(out);
}

Test(import, export_replaces_an_existing_file_and_leaves_no_temporary)
{
    tt_tensor t[] = { { "w", "F32", 1, { 100 } } };
    char *p = path_in("a.safetensors"), *out = path_in("out.safetensors");
    cr_assert_eq(tt_write_st(p, t, 1, NULL, 5), 0);
    cr_assert_eq(tt_write_text(out, "old contents that are longer than nothing"), 0);
    tt_ok(tt_import(NULL, s, p, "m"));
    tt_ok(tt_export(s, "m", out));
    assert_same_file(p, out);
    cr_assert_eq(tt_count_names(dir, "tvs-tmp"), 0);
    free(p);
    free(out);
}

/* Two shards, their index, config and tokenizer files, a nested file and an
 * empty one: what a Hugging Face model folder looks like. */
static char *make_model_folder(const char *name, uint64_t seed)
{
    char *folder = path_in(name);
    cr_assert_eq(tt_mkdirs(folder), 0);
    tt_tensor s1[] = { { "model.embed_tokens.weight", "BF16", 2, { 512, 256 } },
                       { "model.layers.0.mlp.up_proj.weight", "BF16", 2, { 1024, 600 } } };
    tt_tensor s2[] = { { "lm_head.weight", "BF16", 2, { 512, 256 } },
                       { "model.norm.weight", "F32", 1, { 256 } } };
    char *p1 = tt_join(folder, "model-00001-of-00002.safetensors");
    char *p2 = tt_join(folder, "model-00002-of-00002.safetensors");
    cr_assert_eq(tt_write_st_weights(p1, s1, 2, "{\"format\":\"pt\"}", seed), 0);
    cr_assert_eq(tt_write_st_weights(p2, s2, 2, "{\"format\":\"pt\"}", seed + 1), 0);
    write_text(folder, "model.safetensors.index.json",
               "{\n  \"metadata\": {\"total_size\": 1757184},\n  \"weight_map\": {\n"
               "    \"lm_head.weight\": \"model-00002-of-00002.safetensors\",\n"
               "    \"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\",\n"
               "    \"model.layers.0.mlp.up_proj.weight\": \"model-00001-of-00002.safetensors\",\n"
               "    \"model.norm.weight\": \"model-00002-of-00002.safetensors\"\n  }\n}\n");
    write_text(folder, "config.json", "{\"architectures\": [\"LlamaForCausalLM\"], "
                                      "\"hidden_size\": 256}\n");
    write_text(folder, "tokenizer.json", "{\"version\": \"1.0\", \"model\": {\"type\": "
                                         "\"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}}}");
    write_text(folder, "sub/dir/notes.txt", "nested file\n");
    write_text(folder, "empty.txt", "");
    free(p1);
    free(p2);
    return folder;
}

Test(import, a_model_folder_exports_as_the_same_set_of_files)
{
    char *folder = make_model_folder("model", 10), *out = path_in("exported");
    tvs_import_result res;
    memset(&res, 0, sizeof res);
    tt_ok(tvs_import(&res, s, folder, "llama/v1", NULL));
    cr_assert_eq(res.n_tensors, 4 + 5, "four tensors and five blobs");
    tt_ok(tt_export(s, "llama/v1", out));
    assert_same_tree(folder, out);
    /* and again into a folder that already exists */
    tt_ok(tt_export(s, "llama/v1", out));
    assert_same_tree(folder, out);
    free(folder);
    free(out);
}

Test(import, file_names_with_double_dots_inside_them_export_too)
{
    char *folder = make_model_folder("model", 14), *out = path_in("exported");
    write_text(folder, "notes..v2.txt", "two dots, but not a parent folder\n");
    write_text(folder, "sub/x..y/z.json", "{}");
    tt_ok(tt_import(NULL, s, folder, "m"));
    tt_ok(tt_export(s, "m", out));
    assert_same_tree(folder, out);
    free(folder);
    free(out);
}

static int put_model_txn(tvs_txn *txn, void *p)
{
    tvs_buf *bufs = p;
    tvs_id tid, mid;
    int rc = tvs_obj_put_new(&tid, txn, (tvs_span){ bufs[0].ptr, bufs[0].len });
    if (!rc)
        rc = tvs_obj_put_new(&mid, txn, (tvs_span){ bufs[1].ptr, bufs[1].len });
    if (!rc)
        rc = tvs_ref_set(txn, "crafted", &mid, NULL, "crafted");
    return rc;
}

Test(import, a_stored_file_name_that_leaves_the_folder_is_refused_at_export)
{
    static const char *bad[] = { "../evil.txt", "/etc/evil", "a/../../evil", "a//b", "./x",
                                 "a/", "a/.." };
    /* an empty blob tensor, and a model naming it under a hostile name */
    tvs_tensor_obj t;
    memset(&t, 0, sizeof t);
    t.dtype = TVS_DTYPE_U8;
    t.rank = 1;
    t.chunk_size = 1u << 20;
    tvs_id_of(&t.checksum, "", 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tvs_buf bufs[2] = { TVS_BUF_INIT, TVS_BUF_INIT };
        tt_ok(tvs_tensor_encode(&bufs[0], &t));
        tvs_model_file f = { .name = { (const uint8_t *)bad[i], strlen(bad[i]) },
                             .kind = TVS_FILE_BLOB };
        tvs_id_of(&f.blob, bufs[0].ptr, bufs[0].len);
        tvs_model_obj m;
        memset(&m, 0, sizeof m);
        m.files = &f;
        m.n_files = 1;
        tt_ok(tvs_model_encode(&bufs[1], &m));
        tt_ok(tvs_store_write(s, 0, put_model_txn, bufs));
        char *out = path_in("x/y"), *evil = path_in("x/evil.txt");
        tt_fails(tt_export(s, "crafted", out), TVS_ECORRUPT);
        tt_msg_has("leaves the folder");
        cr_assert_not(tt_exists(evil), "'%s' was written outside the folder", bad[i]);
        free(out);
        free(evil);
        tvs_buf_dispose(&bufs[0]);
        tvs_buf_dispose(&bufs[1]);
    }
}

Test(import, a_folder_model_cannot_go_to_stdout)
{
    char *folder = make_model_folder("model", 11);
    tt_ok(tt_import(NULL, s, folder, "m"));
    tt_fails(tt_export(s, "m", "-"), TVS_EINVAL);
    tt_msg_has("stdout");
    free(folder);
}

Test(import, a_file_with_every_dtype_exports_identically)
{
    static const char *names[] = { "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64",
                                   "U64", "F16", "BF16", "F32", "F64", "F8_E5M2",
                                   "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F4",
                                   "F6_E2M3", "F6_E3M2", "C64" };
    size_t n = sizeof names / sizeof names[0];
    tt_tensor t[64];
    char tn[64][32];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        /* small (raw or zstd) and large enough for byte planes */
        snprintf(tn[k], sizeof tn[k], "small.%s", names[i]);
        t[k] = (tt_tensor){ tn[k], names[i], 2, { 3, 4 } };
        k++;
        snprintf(tn[k], sizeof tn[k], "large.%s", names[i]);
        t[k] = (tt_tensor){ tn[k], names[i], 2, { 128, 40 } };
        k++;
    }
    t[k++] = (tt_tensor){ "scalar", "F64", 0, { 0 } };
    t[k++] = (tt_tensor){ "empty", "BF16", 2, { 0, 7 } };
    char *p = path_in("dtypes.safetensors");
    cr_assert_eq(tt_write_st_weights(p, t, k, "{\"format\":\"pt\",\"note\":\"all\"}", 12), 0);
    round_trip_file(p, "dtypes");
    free(p);
}

Test(import, a_file_with_no_tensors_and_a_short_name_round_trips)
{
    char *p = path_in("e");
    cr_assert_eq(tt_write_st_raw(p, "{}", NULL, 0), 0);
    round_trip_file(p, "empty");
    free(p);
    p = path_in("m.st");
    cr_assert_eq(tt_write_st_raw(p, "{\"__metadata__\":{}}     ", NULL, 0), 0);
    round_trip_file(p, "meta-only");
    free(p);
}

Test(import, headers_are_kept_verbatim_whatever_their_spacing_and_order)
{
    const char *json = "{ \"b\" : {\"data_offsets\":[0,4], \"shape\":[2], \"dtype\":\"BF16\","
                       " \"extra\": [1,2,3]},\n \"a\":{\"dtype\":\"U8\",\"shape\":[2],"
                       "\"data_offsets\":[4,6]} ,\"__metadata__\":{\"z\":\"1\",\"a\":\"2\"}}"
                       "\t\n   ";
    char *p = path_in("odd.safetensors");
    cr_assert_eq(tt_write_st_raw(p, json, "ABCDEF", 6), 0);
    round_trip_file(p, "odd");
    free(p);
}

Test(import, hidden_files_of_a_folder_are_not_imported)
{
    char *folder = make_model_folder("model", 13), *out = path_in("exported");
    write_text(folder, ".gitattributes", "*.safetensors filter=lfs\n");
    write_text(folder, ".cache/x", "cache\n");
    tt_ok(tt_import(NULL, s, folder, "m"));
    tt_ok(tt_export(s, "m", out));
    char *ga = tt_join(out, ".gitattributes"), *cache = tt_join(out, ".cache");
    cr_assert_not(tt_exists(ga));
    cr_assert_not(tt_exists(cache));
    free(ga);
    free(cache);
    char *hidden = tt_join(folder, ".gitattributes");
    unlink(hidden);
    free(hidden);
    hidden = tt_join(folder, ".cache");
    tt_rmtree(hidden);
    free(hidden);
    assert_same_tree(folder, out);
    free(folder);
    free(out);
}

/* ---- deduplication and history */

Test(import, identical_tensors_across_two_models_are_stored_once)
{
    tt_tensor a[] = { { "shared", "BF16", 2, { 1024, 768 } },   /* 1.5 MiB: two chunks */
                      { "only_a", "F32", 1, { 1000 } } };
    char *pa = path_in("a.safetensors"), *pb = path_in("b.safetensors");
    cr_assert_eq(tt_write_st_weights(pa, a, 2, NULL, 20), 0);
    /* b: the same "shared" bytes at another offset, next to a new tensor */
    size_t alen;
    uint8_t *abytes = tt_read_file(pa, &alen);
    uint64_t hlen = tvs_load_le64(abytes);
    const uint8_t *shared = abytes + 8 + hlen;
    size_t shared_len = 1024 * 768 * 2;
    uint8_t *bdata = malloc(4000 + shared_len);
    tt_fill_random(bdata, 4000, 21);
    memcpy(bdata + 4000, shared, shared_len);
    char *bjson = tt_fmt("{\"only_b\":{\"dtype\":\"I32\",\"shape\":[1000],\"data_offsets\":"
                         "[0,4000]},\"shared\":{\"dtype\":\"BF16\",\"shape\":[1024,768],"
                         "\"data_offsets\":[4000,%zu]}}", 4000 + shared_len);
    cr_assert_eq(tt_write_st_raw(pb, bjson, bdata, 4000 + shared_len), 0);

    tt_snapshot s0, s1, s2;
    snapshot(&s0);
    round_trip_file(pa, "a");
    snapshot(&s1);
    cr_assert_eq(s1.chunks - s0.chunks, 3, "two chunks for 'shared', one for 'only_a'");
    cr_assert_eq(s1.tensors - s0.tensors, 2);
    cr_assert_eq(s1.models - s0.models, 1);
    round_trip_file(pb, "b");
    snapshot(&s2);
    cr_assert_eq(s2.chunks - s1.chunks, 1, "only 'only_b' adds a chunk");
    cr_assert_eq(s2.tensors - s1.tensors, 1, "only 'only_b' adds a tensor");
    cr_assert_eq(s2.models - s1.models, 1);

    tvs_stats st;
    tt_ok(tvs_stats_get(&st, s));
    cr_assert_eq(st.n_refs, 2);
    cr_assert_eq(st.chunks, s2.chunks);
    cr_assert_eq(st.tensors, s2.tensors);
    cr_assert_eq(st.models, 2);
    cr_assert_eq(st.logical, (uint64_t)alen + 8 + strlen(bjson) + 4000 + shared_len);
    cr_assert_lt(st.reachable, st.standalone, "sharing must show in the stats");
    cr_assert_eq(st.refs[0].added + st.refs[1].added, st.reachable,
                 "what each model added sums to the reachable bytes");
    cr_assert_eq(st.refs[0].added, st.refs[0].stored, "'a' came first: it added everything");
    cr_assert_lt(st.refs[1].added, st.refs[1].stored, "'b' shares 'a's tensor");
    tvs_stats_dispose(&st);
    tt_snapshot_dispose(&s0);
    tt_snapshot_dispose(&s1);
    tt_snapshot_dispose(&s2);
    free(abytes);
    free(bdata);
    free(bjson);
    free(pa);
    free(pb);
}

Test(import, importing_the_same_file_again_stores_no_new_chunks_or_tensors)
{
    tt_tensor t[] = { { "w", "BF16", 2, { 512, 512 } } };
    char *p = path_in("m.safetensors");
    cr_assert_eq(tt_write_st_weights(p, t, 1, NULL, 30), 0);
    tt_ok(tt_import(NULL, s, p, "one"));
    tt_snapshot before, after;
    snapshot(&before);
    tt_ok(tt_import(NULL, s, p, "two"));
    snapshot(&after);
    cr_assert_eq(after.chunks, before.chunks);
    cr_assert_eq(after.tensors, before.tensors);
    cr_assert_leq(after.models, before.models + 1);
    tt_snapshot_dispose(&before);
    tt_snapshot_dispose(&after);
    free(p);
}

Test(import, importing_under_an_existing_name_makes_the_old_head_the_parent)
{
    tt_tensor t[] = { { "w", "F32", 1, { 64 } } };
    char *p = path_in("m.safetensors");
    cr_assert_eq(tt_write_st(p, t, 1, NULL, 31), 0);
    tvs_id v1, v2;
    tt_ok(tt_import(&v1, s, p, "m"));
    cr_assert_eq(tt_write_st(p, t, 1, NULL, 32), 0);
    tt_ok(tt_import(&v2, s, p, "m"));
    cr_assert_not(tvs_id_eq(&v1, &v2));
    tvs_txn *txn;
    tvs_model_obj m;
    tvs_id head;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tt_ok(tvs_ref_get(&head, txn, "m"));
    cr_assert(tvs_id_eq(&head, &v2));
    tt_ok(tvs_model_load(&m, txn, &v2));
    cr_assert_geq(m.n_parents, 1);
    cr_assert(tvs_id_eq(&m.parents[0], &v1), "the first parent is the previous version");
    tvs_model_dispose(&m);
    tvs_txn_end(txn);
    /* both versions still export */
    char spec[64], hex[TVS_ID_HEX + 1], *out = path_in("v1.out");
    tvs_id_hex(hex, &v1);
    snprintf(spec, sizeof spec, "m@%.8s", hex);
    tt_ok(tt_export(s, spec, out));
    free(out);
    free(p);
}

/* ---- invalid input: refused, named, and nothing changes */

typedef struct {
    const char *rule_name;
    const char *json;
    size_t data_len;
    const char *rule;
} bad_case;

static const bad_case bad_files[] = {
    { "header length past the end", NULL, 0, "runs past the end" },
    { "non-JSON header", "{this is not json}", 0, "not valid JSON" },
    { "JSON that is not an object", "[\"w\", 1, 2]", 0, "object" },
    { "unknown dtype", "{\"w\":{\"dtype\":\"F12\",\"shape\":[2],\"data_offsets\":[0,3]}}", 3,
      "unknown dtype \"F12\"" },
    { "shape/offset mismatch",
      "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}", 12,
      "shape/offset mismatch" },
    { "overlapping data_offsets",
      "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
      "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[3,7]}}", 7, "overlap" },
    { "gapped data_offsets",
      "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
      "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[5,9]}}", 9, "gap of 1 bytes" },
    { "trailing bytes",
      "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 6,
      "2 trailing bytes after the last tensor" },
    { "truncated data",
      "{\"a\":{\"dtype\":\"U8\",\"shape\":[40],\"data_offsets\":[0,40]}}", 30,
      "past the end of the data" },
    { "duplicate tensor names",
      "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
      "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2,
      "duplicate tensor name" },
    { "__metadata__ not a string map", "{\"__metadata__\":{\"format\":[\"pt\"]}}", 0,
      "__metadata__ value of \"format\" is not a string" },
    { "negative shape", "{\"w\":{\"dtype\":\"U8\",\"shape\":[-2],\"data_offsets\":[0,2]}}", 2,
      "shape[0] is not a non-negative integer" },
    { "non-integer shape",
      "{\"w\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,2]}}", 2,
      "shape[0] is not a non-negative integer" },
    { "sub-byte tensor not filling bytes",
      "{\"w\":{\"dtype\":\"F4\",\"shape\":[5],\"data_offsets\":[0,3]}}", 3, "whole bytes" },
};

Test(import, every_invalid_file_is_refused_by_name_and_rule_and_changes_nothing)
{
    seed_store();
    char *p = path_in("bad.safetensors");
    for (size_t i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++) {
        const bad_case *c = &bad_files[i];
        if (c->json) {
            uint8_t *data = calloc(1, c->data_len + 1);
            cr_assert_eq(tt_write_st_raw(p, c->json, data, c->data_len), 0);
            free(data);
        } else {
            uint8_t b[20] = { 200 };
            memcpy(b + 8, "{}          ", 12);
            cr_assert_eq(tt_write_file(p, b, sizeof b), 0);
        }
        cr_log_info("case: %s", c->rule_name);
        expect_refused(p, "bad", TVS_ECORRUPT, c->rule);
        tt_msg_has(p);
    }
    free(p);
}

Test(import, a_file_shorter_than_8_bytes_is_refused)
{
    seed_store();
    char *p = path_in("short.safetensors");
    for (size_t n = 0; n < 8; n++) {
        cr_assert_eq(tt_write_file(p, "\x02\0\0\0\0\0\0", n), 0);
        expect_refused(p, "bad", TVS_ECORRUPT, "8-byte header length");
        tt_msg_has(p);
    }
    free(p);
}

Test(import, a_header_over_100_mb_is_refused)
{
    seed_store();
    char *p = path_in("huge.safetensors");
    uint8_t b[64] = { 0 };
    tvs_store_le64(b, 100000001);
    cr_assert_eq(tt_write_file(p, b, sizeof b), 0);
    expect_refused(p, "bad", TVS_ECORRUPT, "100000000-byte limit");
    tt_msg_has(p);
    free(p);
}

Test(import, a_folder_with_one_bad_shard_imports_nothing)
{
    seed_store();
    char *folder = make_model_folder("model", 40);
    char *bad = tt_join(folder, "model-00002-of-00002.safetensors");
    cr_assert_eq(truncate(bad, 100000), 0);
    expect_refused(folder, "m", TVS_ECORRUPT, "model-00002-of-00002.safetensors");
    free(bad);
    free(folder);
}

Test(import, a_missing_shard_named_in_the_index_is_refused)
{
    seed_store();
    char *folder = make_model_folder("model", 41);
    char *shard = tt_join(folder, "model-00002-of-00002.safetensors");
    cr_assert_eq(unlink(shard), 0);
    expect_refused(folder, "m", TVS_ENOTFOUND, "shard \"model-00002-of-00002.safetensors\"");
    tt_msg_has("model.safetensors.index.json");
    free(shard);
    free(folder);
}

Test(import, an_index_that_names_the_wrong_shard_is_refused)
{
    seed_store();
    char *folder = make_model_folder("model", 42);
    write_text(folder, "model.safetensors.index.json",
               "{\"weight_map\": {\"lm_head.weight\": \"model-00001-of-00002.safetensors\"}}");
    expect_refused(folder, "m", TVS_ECORRUPT, "does not hold it");
    tt_msg_has("lm_head.weight");
    free(folder);
}

Test(import, an_index_that_is_not_json_or_has_no_weight_map_is_refused)
{
    seed_store();
    char *folder = make_model_folder("model", 43);
    write_text(folder, "model.safetensors.index.json", "{\"weight_map\": ");
    expect_refused(folder, "m", TVS_ECORRUPT, "not valid JSON");
    write_text(folder, "model.safetensors.index.json", "{\"metadata\": {}}");
    expect_refused(folder, "m", TVS_ECORRUPT, "weight_map");
    write_text(folder, "model.safetensors.index.json", "{\"weight_map\": {\"x\": 3}}");
    expect_refused(folder, "m", TVS_ECORRUPT, "not a file name");
    free(folder);
}

Test(import, a_folder_without_safetensors_is_refused)
{
    seed_store();
    char *folder = path_in("nothing");
    write_text(folder, "config.json", "{}");
    expect_refused(folder, "m", TVS_EINVAL, "no .safetensors");
    free(folder);
}

Test(import, a_path_that_does_not_exist_is_refused)
{
    seed_store();
    char *p = path_in("no-such-file.safetensors");
    expect_refused(p, "m", TVS_ENOTFOUND, "no-such-file.safetensors");
    free(p);
}

Test(import, an_invalid_ref_name_is_refused_before_reading_anything)
{
    seed_store();
    tt_tensor t[] = { { "w", "F32", 1, { 4 } } };
    char *p = path_in("ok.safetensors");
    cr_assert_eq(tt_write_st(p, t, 1, NULL, 44), 0);
    expect_refused(p, "1-bad name", TVS_EINVAL, "ref name");
    expect_refused(p, "a//b", TVS_EINVAL, "ref name");
    free(p);
}

Test(import, exporting_a_ref_that_does_not_exist_writes_nothing)
{
    seed_store();
    char *out = path_in("out.safetensors");
    tt_snapshot before;
    snapshot(&before);
    tt_fails(tt_export(s, "does-not-exist", out), TVS_ENOTFOUND);
    tt_msg_has("does-not-exist");
    cr_assert_not(tt_exists(out));
    tt_fails(tt_export(s, "seed@0000", out), TVS_ENOTFOUND);
    cr_assert_not(tt_exists(out));
    cr_assert_eq(tt_count_names(dir, "tvs-tmp"), 0);
    assert_unchanged(&before, "a failed export");
    tt_snapshot_dispose(&before);
    free(out);
}

Test(import, a_folder_that_is_not_a_store_is_enotfound_and_stays_untouched)
{
    char *plain = tt_mkdtemp();
    tvs_store *t = NULL;
    tt_fails(tvs_store_open(&t, plain, NULL), TVS_ENOTFOUND);
    char **names;
    size_t n;
    cr_assert_eq(tt_list_files(&names, &n, plain), 0);
    cr_assert_eq(n, 0, "nothing was created in %s", plain);
    tt_free_list(names, n);
    char *dot = tt_join(plain, ".tvs");
    cr_assert_not(tt_exists(dot));
    free(dot);
    tt_rmtree(plain);
    free(plain);
}
