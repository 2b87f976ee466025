/*
 * engine/gc.c and engine/fsck.c: gc frees exactly what no ref reaches and
 * keeps what a remaining model shares; fsck passes on a healthy store and
 * finds a stored byte flipped behind the library's back (through liblmdb),
 * after which export refuses the damaged model and leaves no file.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
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

TestSuite(gc_fsck, .init = setup, .fini = teardown);

/* ---- helpers */

static char *path_in(const char *name) { return tt_join(dir, name); }

/* Model A: tensors "shared" (two chunks) and "only_a"; model B: the same
 * "shared" bytes and "only_b". */
static char *pa, *pb;

static void make_models(void)
{
    tt_tensor a[] = { { "shared", "BF16", 2, { 1024, 768 } }, { "only_a", "F32", 1, { 5000 } } };
    pa = path_in("a.safetensors");
    pb = path_in("b.safetensors");
    cr_assert_eq(tt_write_st_weights(pa, a, 2, "{\"format\":\"pt\"}", 1), 0);
    size_t alen;
    uint8_t *ab = tt_read_file(pa, &alen);
    uint64_t hlen = tvs_load_le64(ab);
    size_t shared_len = 1024 * 768 * 2;
    uint8_t *data = malloc(shared_len + 6000);
    memcpy(data, ab + 8 + hlen, shared_len);
    tt_fill_random(data + shared_len, 6000, 2);
    char *json = tt_fmt("{\"shared\":{\"dtype\":\"BF16\",\"shape\":[1024,768],\"data_offsets\":"
                        "[0,%zu]},\"only_b\":{\"dtype\":\"U8\",\"shape\":[6000],"
                        "\"data_offsets\":[%zu,%zu]}}", shared_len, shared_len,
                        shared_len + 6000);
    cr_assert_eq(tt_write_st_raw(pb, json, data, shared_len + 6000), 0);
    free(json);
    free(data);
    free(ab);
}

static void free_models(void)
{
    free(pa);
    free(pb);
}

static int del_txn(tvs_txn *txn, void *name) { return tvs_ref_del(txn, name); }

static void rm_ref(const char *name)
{
    tt_ok(tvs_store_write(s, 0, del_txn, (void *)name));
}

static void assert_exports(const char *ref, const char *orig)
{
    char *out = tt_fmt("%s/%s.out", dir, ref), why[512];
    tt_ok(tt_export(s, ref, out));
    cr_assert_eq(tt_files_equal(orig, out, why, sizeof why), 1, "%s", why);
    unlink(out);
    free(out);
}

typedef struct {
    char lines[16][512];
    int n;
} report;

static void collect(void *p, const char *line)
{
    report *r = p;
    if (r->n < 16)
        snprintf(r->lines[r->n], sizeof r->lines[0], "%s", line);
    r->n++;
}

static int report_has(const report *r, const char *needle)
{
    for (int i = 0; i < r->n && i < 16; i++)
        if (strstr(r->lines[i], needle))
            return 1;
    return 0;
}

/* Close the store, flip one byte of object @p id through liblmdb, reopen. */
static void corrupt(const tvs_id *id, long off)
{
    tvs_store_close(s);
    s = NULL;
    tt_ok(tt_corrupt_object(dir, id, off, 0x20));
    tt_ok(tvs_store_open(&s, dir, NULL));
}

/* ---- gc */

Test(gc_fsck, rm_then_gc_frees_exactly_what_only_that_model_used)
{
    make_models();
    tt_snapshot s0, s1, s2;
    tt_ok(tt_import(NULL, s, pa, "a"));
    tt_ok(tt_snapshot_take(&s0, s));
    tt_ok(tt_import(NULL, s, pb, "b"));
    tt_ok(tt_snapshot_take(&s1, s));
    size_t only_b = tt_snapshot_minus(&s1, &s0);
    cr_assert_eq(only_b, 3, "b adds a chunk, a tensor and a model");
    rm_ref("b");
    tvs_gc_result r;
    tt_ok(tvs_gc(&r, s, 0));
    cr_assert_eq(r.freed_objects, only_b);
    cr_assert_eq(r.freed_bytes, s1.bytes - s0.bytes);
    cr_assert_eq(r.kept_objects, s0.n);
    cr_assert_eq(r.kept_bytes, s0.bytes);
    tt_ok(tt_snapshot_take(&s2, s));
    char why[4096];
    cr_assert(tt_snapshot_equal(&s0, &s2, why, sizeof why), "after gc: %s", why);
    assert_exports("a", pa);
    /* a second gc has nothing to do */
    tt_ok(tvs_gc(&r, s, 0));
    cr_assert_eq(r.freed_objects, 0);
    cr_assert_eq(r.freed_bytes, 0);
    tt_snapshot_dispose(&s0);
    tt_snapshot_dispose(&s1);
    tt_snapshot_dispose(&s2);
    free_models();
}

Test(gc_fsck, gc_keeps_objects_shared_with_a_remaining_model)
{
    make_models();
    tt_ok(tt_import(NULL, s, pa, "a"));
    tt_ok(tt_import(NULL, s, pb, "b"));
    tt_snapshot before, after;
    tt_ok(tt_snapshot_take(&before, s));
    rm_ref("a");
    tvs_gc_result r;
    tt_ok(tvs_gc(&r, s, 0));
    cr_assert_eq(r.freed_objects, 3, "only_a's chunk and tensor, and a's model");
    tt_ok(tt_snapshot_take(&after, s));
    cr_assert_eq(after.n, before.n - 3);
    cr_assert_eq(r.freed_bytes, before.bytes - after.bytes);
    assert_exports("b", pb);
    tvs_fsck_result f;
    tt_ok(tvs_fsck(&f, s, NULL, NULL));
    cr_assert_eq(f.problems, 0);
    cr_assert_eq(f.unreachable, 0);
    tt_snapshot_dispose(&before);
    tt_snapshot_dispose(&after);
    free_models();
}

Test(gc_fsck, gc_keeps_the_history_of_a_ref)
{
    make_models();
    tvs_id v1;
    tt_ok(tt_import(&v1, s, pa, "m"));
    tt_ok(tt_import(NULL, s, pb, "m"));
    tvs_gc_result r;
    tt_ok(tvs_gc(&r, s, 0));
    cr_assert_eq(r.freed_objects, 0, "v1 is v2's parent: still reachable");
    char spec[64], hex[TVS_ID_HEX + 1];
    tvs_id_hex(hex, &v1);
    snprintf(spec, sizeof spec, "m@%.10s", hex);
    assert_exports(spec, pa);
    free_models();
}

Test(gc_fsck, a_dry_run_reports_without_deleting)
{
    make_models();
    tt_ok(tt_import(NULL, s, pa, "a"));
    tt_ok(tt_import(NULL, s, pb, "b"));
    rm_ref("b");
    tt_snapshot before, after;
    tt_ok(tt_snapshot_take(&before, s));
    tvs_gc_result dry, real;
    tt_ok(tvs_gc(&dry, s, 1));
    tt_ok(tt_snapshot_take(&after, s));
    char why[4096];
    cr_assert(tt_snapshot_equal(&before, &after, why, sizeof why), "dry run: %s", why);
    cr_assert_eq(dry.freed_objects, 3);
    tt_ok(tvs_gc(&real, s, 0));
    cr_assert_eq(real.freed_objects, dry.freed_objects);
    cr_assert_eq(real.freed_bytes, dry.freed_bytes);
    cr_assert_eq(real.kept_bytes, dry.kept_bytes);
    tt_snapshot_dispose(&before);
    tt_snapshot_dispose(&after);
    free_models();
}

Test(gc_fsck, gc_of_an_empty_store_frees_everything_unreferenced)
{
    make_models();
    tt_ok(tt_import(NULL, s, pa, "a"));
    rm_ref("a");
    tvs_gc_result r;
    tt_ok(tvs_gc(&r, s, 0));
    cr_assert_eq(r.freed_objects, 6, "three chunks, two tensors and a model");
    cr_assert_eq(r.kept_objects, 0);
    tt_snapshot after;
    tt_ok(tt_snapshot_take(&after, s));
    cr_assert_eq(after.n, 0);
    tt_snapshot_dispose(&after);
    free_models();
}

Test(gc_fsck, gc_refuses_while_an_import_holds_the_store)
{
    make_models();
    tt_ok(tt_import(NULL, s, pa, "a"));
    tt_ok(tt_import(NULL, s, pb, "b"));
    rm_ref("b");
    char *lock = path_in(".tvs/gc.lock");
    int fd = open(lock, O_RDWR);
    cr_assert_geq(fd, 0);
    cr_assert_eq(flock(fd, LOCK_SH), 0, "an import holds the lock shared");
    tt_snapshot before, after;
    tt_ok(tt_snapshot_take(&before, s));
    tvs_gc_result r;
    tt_fails(tvs_gc(&r, s, 0), TVS_EBUSY);
    tt_ok(tt_snapshot_take(&after, s));
    cr_assert_eq(after.n, before.n, "nothing was collected");
    close(fd);
    tt_ok(tvs_gc(&r, s, 0));
    cr_assert_eq(r.freed_objects, 3);
    tt_snapshot_dispose(&before);
    tt_snapshot_dispose(&after);
    free(lock);
    free_models();
}

static int del_obj_txn(tvs_txn *txn, void *id) { return tvs_obj_del(txn, id); }

Test(gc_fsck, gc_refuses_to_sweep_when_a_ref_reaches_a_missing_object)
{
    make_models();
    tt_ok(tt_import(NULL, s, pa, "a"));
    tt_ok(tt_import(NULL, s, pb, "b"));
    rm_ref("b");
    tvs_id chunk;
    tt_ok(tt_find_chunk(&chunk, s, "a", "only_a", 0));
    tt_ok(tvs_store_write(s, 0, del_obj_txn, &chunk));
    tt_snapshot before, after;
    tt_ok(tt_snapshot_take(&before, s));
    tvs_gc_result r;
    tt_fails(tvs_gc(&r, s, 0), TVS_ECORRUPT);
    tt_msg_has("missing");
    tt_msg_has("nothing was collected");
    tt_ok(tt_snapshot_take(&after, s));
    cr_assert_eq(after.n, before.n);
    tt_snapshot_dispose(&before);
    tt_snapshot_dispose(&after);
    free_models();
}

/* ---- fsck */

Test(gc_fsck, fsck_passes_on_a_healthy_store)
{
    make_models();
    tt_ok(tt_import(NULL, s, pa, "a"));
    tt_ok(tt_import(NULL, s, pb, "b"));
    tt_snapshot snap;
    tt_ok(tt_snapshot_take(&snap, s));
    tvs_fsck_result f;
    report rep = { .n = 0 };
    tt_ok(tvs_fsck(&f, s, collect, &rep));
    cr_assert_eq(f.problems, 0, "first problem: %s", rep.lines[0]);
    cr_assert_eq(rep.n, 0);
    cr_assert_eq(f.objects, snap.n);
    cr_assert_eq(f.bytes, snap.bytes);
    cr_assert_eq(f.tensors_checked, snap.tensors);
    cr_assert_eq(f.unreachable, 0);
    cr_assert_geq(f.decoded_bytes, (uint64_t)1024 * 768 * 2 + 5000 * 4 + 6000);
    tt_snapshot_dispose(&snap);
    free_models();
}

Test(gc_fsck, fsck_of_an_empty_store_passes)
{
    tvs_fsck_result f;
    tt_ok(tvs_fsck(&f, s, NULL, NULL));
    cr_assert_eq(f.objects, 0);
    cr_assert_eq(f.problems, 0);
}

Test(gc_fsck, fsck_counts_unreachable_objects_without_calling_them_problems)
{
    make_models();
    tt_ok(tt_import(NULL, s, pa, "a"));
    tt_ok(tt_import(NULL, s, pb, "b"));
    rm_ref("b");
    tvs_fsck_result f;
    tt_ok(tvs_fsck(&f, s, NULL, NULL));
    cr_assert_eq(f.problems, 0);
    cr_assert_eq(f.unreachable, 3);
    cr_assert_gt(f.unreachable_bytes, 6000);
    free_models();
}

Test(gc_fsck, fsck_finds_a_flipped_byte_in_a_stored_chunk)
{
    make_models();
    tt_ok(tt_import(NULL, s, pa, "a"));
    tvs_id chunk;
    char hex[TVS_ID_HEX + 1];
    tt_ok(tt_find_chunk(&chunk, s, "a", "shared", 1));
    tvs_id_hex(hex, &chunk);
    corrupt(&chunk, -1);
    tvs_fsck_result f;
    report rep = { .n = 0 };
    tt_ok(tvs_fsck(&f, s, collect, &rep));
    cr_assert_gt(f.problems, 0);
    cr_assert_eq(rep.n, (int)f.problems, "one report line per problem");
    cr_assert(report_has(&rep, hex), "no report line names chunk %s; first: %s", hex,
              rep.lines[0]);
    free_models();
}

Test(gc_fsck, fsck_reports_a_missing_chunk)
{
    make_models();
    tt_ok(tt_import(NULL, s, pa, "a"));
    tvs_id chunk;
    tt_ok(tt_find_chunk(&chunk, s, "a", "only_a", 0));
    tt_ok(tvs_store_write(s, 0, del_obj_txn, &chunk));
    tvs_fsck_result f;
    report rep = { .n = 0 };
    tt_ok(tvs_fsck(&f, s, collect, &rep));
    cr_assert_gt(f.problems, 0);
    cr_assert(report_has(&rep, "missing"), "first: %s", rep.lines[0]);
    cr_assert(report_has(&rep, "ref 'a'"), "first: %s", rep.lines[0]);
    free_models();
}

/* Id of tensor @p name in the model @p ref points at. */
static tvs_id tensor_of(const char *ref, const char *name)
{
    tvs_txn *txn;
    tvs_id mid, out = { { 0 } };
    tvs_model_obj m;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tt_ok(tvs_resolve(&mid, txn, ref));
    tt_ok(tvs_model_load(&m, txn, &mid));
    int found = 0;
    for (size_t i = 0; i < m.n_files; i++)
        for (size_t j = 0; j < m.files[i].n_tensors; j++)
            if (m.files[i].tensors[j].name.len == strlen(name) &&
                !memcmp(m.files[i].tensors[j].name.ptr, name, strlen(name))) {
                out = m.files[i].tensors[j].id;
                found = 1;
            }
    tvs_model_dispose(&m);
    tvs_txn_end(txn);
    cr_assert(found, "no tensor %s in %s", name, ref);
    return out;
}

Test(gc_fsck, fsck_finds_a_damaged_tensor_object)
{
    make_models();
    tt_ok(tt_import(NULL, s, pa, "a"));
    tvs_id t = tensor_of("a", "only_a");
    char hex[TVS_ID_HEX + 1];
    tvs_id_hex(hex, &t);
    corrupt(&t, 6);   /* the first byte of its shape */
    tvs_fsck_result f;
    report rep = { .n = 0 };
    tt_ok(tvs_fsck(&f, s, collect, &rep));
    cr_assert_gt(f.problems, 0);
    cr_assert(report_has(&rep, hex), "no line names tensor %s; first: %s", hex, rep.lines[0]);
    char *out = path_in("a.out");
    tt_fails(tt_export(s, "a", out), TVS_ECORRUPT);
    cr_assert_not(tt_exists(out));
    free(out);
    free_models();
}

Test(gc_fsck, a_corrupted_model_does_not_export_and_leaves_no_file)
{
    make_models();
    tt_ok(tt_import(NULL, s, pa, "a"));
    tt_ok(tt_import(NULL, s, pb, "b"));
    tvs_id chunk;
    tt_ok(tt_find_chunk(&chunk, s, "a", "only_a", 0));
    corrupt(&chunk, -1);
    char *out = path_in("a.out");
    tt_fails(tt_export(s, "a", out), TVS_ECORRUPT);
    tt_msg_has("only_a");
    cr_assert_not(tt_exists(out), "a failed export must leave no file");
    cr_assert_eq(tt_count_names(dir, "tvs-tmp"), 0, "nor a temporary one");
    /* the other model does not use that chunk and still exports */
    assert_exports("b", pb);
    free(out);
    free_models();
}

Test(gc_fsck, a_damaged_chunk_header_is_found_too)
{
    make_models();
    tt_ok(tt_import(NULL, s, pa, "a"));
    tvs_id chunk;
    tt_ok(tt_find_chunk(&chunk, s, "a", "shared", 0));
    corrupt(&chunk, 2);   /* the raw length */
    tvs_fsck_result f;
    tt_ok(tvs_fsck(&f, s, NULL, NULL));
    cr_assert_gt(f.problems, 0);
    char *out = path_in("a.out");
    tt_fails(tt_export(s, "a", out), TVS_ECORRUPT);
    cr_assert_not(tt_exists(out));
    free(out);
    free_models();
}

Test(gc_fsck, tvs_fsck_exits_non_zero_on_a_damaged_store)
{
    make_models();
    tt_ok(tt_import(NULL, s, pa, "a"));
    tvs_store_close(s);
    s = NULL;
    const char *env[] = { NULL };
    tt_run r;
    cr_assert_eq(tt_tvsl(&r, env, NULL, "--store", dir, "fsck", NULL), 0);
    cr_assert_eq(r.code, 0, "healthy: exit %d, stderr: %s", r.code, r.err);
    cr_assert(strstr(r.out, "no problems found"), "stdout: %s", r.out);
    tt_run_dispose(&r);
    tt_ok(tvs_store_open(&s, dir, NULL));
    tvs_id chunk;
    tt_ok(tt_find_chunk(&chunk, s, "a", "shared", 0));
    tvs_store_close(s);
    s = NULL;
    tt_ok(tt_corrupt_object(dir, &chunk, 100, 0x01));
    cr_assert_eq(tt_tvsl(&r, env, NULL, "--store", dir, "fsck", NULL), 0);
    cr_assert_neq(r.code, 0, "fsck passed a damaged store: %s", r.out);
    cr_assert_eq(r.code, 4, "damage exits with the ECORRUPT code; got %d", r.code);
    cr_assert(strstr(r.err, "problem"), "stderr: %s", r.err);
    tt_run_dispose(&r);
    free_models();
}
