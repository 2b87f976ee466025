/*
 * engine/backup.c (tvs_backup): a folder of checkpoints becomes refs
 * PREFIX/<stem>, each a full model stored against the cheapest of the root
 * base and the latest earlier checkpoints, with delta chains no deeper
 * than max_chain. Every checkpoint must export byte-identical.
 *
 * The checkpoints are generated here: a root model, then a series in
 * which each checkpoint moves a few percent of the previous one's
 * elements by a few ulps. The real checkpoint series in TVS_SHARED_MODELS
 * is backed up too when it is there (the test skips itself otherwise).
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

TestSuite(backup, .init = setup, .fini = teardown, .timeout = 60);

/* ---- generated checkpoints */

enum { NT = 4 };
static const char *const names[NT] = { "model.embed.weight", "layers.0.attn.weight",
                                       "layers.0.norm.weight", "layers.1.mlp.weight" };
static const char *const dtypes[NT] = { "BF16", "BF16", "BF16", "F32" };
static const uint64_t rows[NT] = { 1024, 256, 1, 128 }, cols[NT] = { 640, 256, 256, 192 };

typedef struct {
    uint8_t *data[NT];
    size_t len[NT];
} ckpt;

static void ck_root(ckpt *c, uint64_t seed)
{
    for (int i = 0; i < NT; i++) {
        unsigned w = strcmp(dtypes[i], "F32") ? 2 : 4;
        c->len[i] = (size_t)(rows[i] * cols[i] * w);
        c->data[i] = malloc(c->len[i]);
        if (w == 2) {
            tt_fill_bf16(c->data[i], c->len[i] / 2, seed + (uint64_t)i);
        } else {
            uint64_t st = seed + (uint64_t)i;
            for (size_t k = 0; k < c->len[i]; k += 4) {
                float f = ((float)(int32_t)tt_lcg(&st) / 2147483648.0f) * 0.05f;
                uint32_t u;
                memcpy(&u, &f, 4);
                tvs_store_le32(c->data[i] + k, u);
            }
        }
    }
}

static void ck_free(ckpt *c)
{
    for (int i = 0; i < NT; i++)
        free(c->data[i]);
}

/* The next checkpoint: about @p permille / 1000 of the elements of every
 * tensor but the norm move by 1..3 ulps. */
static void ck_step(ckpt *next, const ckpt *prev, unsigned permille, uint64_t seed)
{
    uint64_t st = seed;
    for (int i = 0; i < NT; i++) {
        next->len[i] = prev->len[i];
        next->data[i] = malloc(prev->len[i]);
        memcpy(next->data[i], prev->data[i], prev->len[i]);
        if (i == 2)
            continue;
        unsigned w = strcmp(dtypes[i], "F32") ? 2 : 4;
        uint8_t *p = next->data[i];
        for (size_t k = 0; k < next->len[i]; k += w) {
            uint32_t r = tt_lcg(&st);
            if (r % 1000 >= permille)
                continue;
            int d = (int)(r >> 12 & 1) ? (int)(r >> 13 & 3) + 1 : -((int)(r >> 13 & 3) + 1);
            if (w == 2) {
                uint16_t v = (uint16_t)(p[k] | p[k + 1] << 8);
                uint16_t mag = v & 0x7fff;
                if (mag > 8 && mag < 0x7f00)
                    v = (uint16_t)((v & 0x8000) | (uint16_t)(mag + d));
                p[k] = (uint8_t)v;
                p[k + 1] = (uint8_t)(v >> 8);
            } else {
                tvs_store_le32(p + k, tvs_load_le32(p + k) + (uint32_t)d);
            }
        }
    }
}

static void ck_write(const ckpt *c, const char *path)
{
    tt_tensor t[NT];
    size_t total = 0;
    for (int i = 0; i < NT; i++) {
        memset(&t[i], 0, sizeof t[i]);
        t[i].name = names[i];
        t[i].dtype = dtypes[i];
        t[i].rank = rows[i] == 1 ? 1 : 2;
        t[i].shape[0] = rows[i] == 1 ? cols[i] : rows[i];
        t[i].shape[1] = cols[i];
        total += c->len[i];
    }
    uint64_t data_len;
    char *json = tt_st_header(t, NT, "{\"format\":\"pt\"}", &data_len);
    cr_assert_eq(data_len, total);
    uint8_t *data = malloc(total);
    size_t off = 0;
    for (int i = 0; i < NT; i++) {
        memcpy(data + off, c->data[i], c->len[i]);
        off += c->len[i];
    }
    cr_assert_eq(tt_write_st_raw(path, json, data, total), 0, "writing %s", path);
    free(json);
    free(data);
}

/* ---- helpers */

typedef struct {
    tvs_backup_item items[16];
    int n;
} heard;

static void on_item(const tvs_backup_item *it, void *p)
{
    heard *h = p;
    if (h->n < 16)
        h->items[h->n] = *it;
    h->n++;
}

/* Write the root as DIR/root.safetensors and @p n checkpoints as
 * DIR/ckpts/c-00i.safetensors; returns the checkpoint folder. */
static char *make_series(int n, unsigned permille, uint64_t seed, int import_root)
{
    ckpt c[16];
    ck_root(&c[0], seed);
    char *root = tt_fmt("%s/root.safetensors", dir);
    ck_write(&c[0], root);
    if (import_root)
        tt_ok(tt_import(NULL, s, root, "root"));
    char *cdir = tt_fmt("%s/ckpts", dir);
    cr_assert_eq(tt_mkdirs(cdir), 0);
    /* c-000 moves further from the root than the later steps move each time */
    for (int i = 1; i <= n; i++) {
        ck_step(&c[i], &c[i - 1], i == 1 ? 3 * permille : permille, seed + 100 * (uint64_t)i);
        char *p = tt_fmt("%s/c-%03d.safetensors", cdir, i - 1);
        ck_write(&c[i], p);
        free(p);
    }
    for (int i = 0; i <= n; i++)
        ck_free(&c[i]);
    free(root);
    return cdir;
}

static void assert_exports(const char *ref, const char *orig)
{
    char *out = tt_fmt("%s/export.out", dir), why[1024];
    tt_ok(tt_export(s, ref, out));
    cr_assert_eq(tt_files_equal(orig, out, why, sizeof why), 1, "%s: %s", ref, why);
    unlink(out);
    free(out);
}

static void assert_all_export(const char *cdir, const char *prefix, int n)
{
    for (int i = 0; i < n; i++) {
        char *ref = tt_fmt("%s/c-%03d", prefix, i);
        char *p = tt_fmt("%s/c-%03d.safetensors", cdir, i);
        assert_exports(ref, p);
        free(ref);
        free(p);
    }
}

static int depth_of(const char *ref)
{
    tvs_txn *txn;
    tvs_id id;
    int d = -1;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tt_ok(tvs_resolve(&id, txn, ref));
    tt_ok(tvs_model_depth(&d, txn, &id));
    tvs_txn_end(txn);
    return d;
}

static tvs_id ref_id(const char *ref)
{
    tvs_txn *txn;
    tvs_id id;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tt_ok(tvs_ref_get(&id, txn, ref));
    tvs_txn_end(txn);
    return id;
}

/* Kind and first parent of the model @p ref names. */
static void model_info(const char *ref, uint8_t *kind, tvs_id *parent0, size_t *n_parents)
{
    tvs_txn *txn;
    tvs_model_obj m;
    tvs_id id = ref_id(ref);
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tt_ok(tvs_model_load(&m, txn, &id));
    *kind = m.kind;
    *n_parents = m.n_parents;
    if (m.n_parents)
        *parent0 = m.parents[0];
    tvs_model_dispose(&m);
    tvs_txn_end(txn);
}

static void backup(heard *h, const char *cdir, const char *prefix, const char *base,
                   int max_chain)
{
    tvs_backup_opts o;
    memset(&o, 0, sizeof o);
    o.base = base;
    o.max_chain = max_chain;
    memset(h, 0, sizeof *h);
    tt_ok(tvs_backup(s, cdir, prefix, &o, on_item, h));
}

/* ---- tests */

Test(backup, every_checkpoint_becomes_a_ref_that_exports_byte_identical)
{
    char *cdir = make_series(5, 40, 1, 1);
    heard h;
    backup(&h, cdir, "run", "root", 0);
    cr_assert_eq(h.n, 5, "the callback heard %d checkpoints", h.n);
    for (int i = 0; i < 5; i++) {
        char want[64];
        snprintf(want, sizeof want, "run/c-%03d", i);
        cr_assert_str_eq(h.items[i].name, want, "in name order");
        tvs_id id = ref_id(want);
        cr_assert(tvs_id_eq(&id, &h.items[i].r.model), "%s names the model imported", want);
        uint8_t kind;
        tvs_id p0;
        size_t np;
        model_info(want, &kind, &p0, &np);
        cr_assert_eq(kind, TVS_MODEL_FULL, "a checkpoint is a full model");
    }
    assert_all_export(cdir, "run", 5);
    free(cdir);
}

Test(backup, each_checkpoint_is_stored_against_the_previous_one_when_that_is_closer)
{
    char *cdir = make_series(5, 40, 2, 1);
    heard h;
    backup(&h, cdir, "run", "root", 0);
    cr_assert_str_eq(h.items[0].base, "root", "the first checkpoint is stored against root");
    for (int i = 1; i < 5; i++) {
        char prev[64];
        snprintf(prev, sizeof prev, "run/c-%03d", i - 1);
        cr_assert_str_eq(h.items[i].base, prev, "%s: base %s, want %s (estimate %.3f)",
                         h.items[i].name, h.items[i].base, prev, h.items[i].estimate);
        uint8_t kind;
        tvs_id p0, want = ref_id(prev);
        size_t np;
        model_info(h.items[i].name, &kind, &p0, &np);
        cr_assert_eq(np, 1);
        cr_assert(tvs_id_eq(&p0, &want), "%s's parent is %s", h.items[i].name, prev);
        cr_assert_gt(h.items[i].r.n_delta, 0, "%s stores deltas", h.items[i].name);
        cr_assert_lt(h.items[i].estimate, 0.67);
        cr_assert_eq(depth_of(h.items[i].name), i + 1);
    }
    /* the estimate agrees: c-004 is cheaper against c-003 than against root */
    double ratios[2];
    size_t matched[2], nt;
    tvs_id bases[2] = { ref_id("root"), ref_id("run/c-003") };
    char *p4 = tt_fmt("%s/c-004.safetensors", cdir);
    tt_ok(tvs_delta_estimate(ratios, matched, &nt, s, p4, bases, 2));
    cr_assert_eq(nt, NT);
    cr_assert_eq(matched[0], NT);
    cr_assert_eq(matched[1], NT);
    cr_assert_lt(ratios[1], ratios[0], "against c-003 %.3f, against root %.3f", ratios[1],
                 ratios[0]);
    free(p4);
    free(cdir);
}

Test(backup, with_max_chain_2_no_checkpoint_is_deeper_than_2)
{
    char *cdir = make_series(5, 40, 3, 1);
    heard h;
    backup(&h, cdir, "run", "root", 2);
    cr_assert_eq(h.n, 5);
    for (int i = 0; i < 5; i++) {
        int d = depth_of(h.items[i].name);
        cr_assert_leq(d, 2, "%s has depth %d", h.items[i].name, d);
        cr_assert_leq(h.items[i].depth, 2);
    }
    assert_all_export(cdir, "run", 5);
    free(cdir);
}

/* A store that already holds the same checkpoints in a deeper chain: the
 * reuse of stored tensors must not make a model deeper than max_chain. */
Test(backup, max_chain_holds_even_when_a_deeper_copy_is_already_stored)
{
    char *cdir = make_series(5, 40, 4, 1);
    heard h;
    backup(&h, cdir, "deep", "root", 0);
    cr_assert_eq(depth_of("deep/c-004"), 5);
    backup(&h, cdir, "shallow", "root", 2);
    assert_all_export(cdir, "shallow", 5);
    free(cdir);
    for (int i = 0; i < 5; i++) {
        int d = depth_of(h.items[i].name);
        cr_assert_leq(d, 2, "%s has depth %d with max_chain 2 (the callback said %d)",
                      h.items[i].name, d, h.items[i].depth);
    }
}

Test(backup, without_a_base_the_first_checkpoint_is_stored_full)
{
    char *cdir = make_series(3, 40, 5, 0);
    heard h;
    backup(&h, cdir, "run", NULL, 0);
    cr_assert_eq(h.n, 3);
    cr_assert_str_eq(h.items[0].base, "");
    cr_assert_eq(depth_of("run/c-000"), 0);
    cr_assert_eq(h.items[0].r.n_delta, 0);
    cr_assert_str_eq(h.items[1].base, "run/c-000");
    assert_all_export(cdir, "run", 3);
    free(cdir);
}

Test(backup, a_checkpoint_identical_to_an_earlier_one_costs_almost_nothing)
{
    char *cdir = make_series(3, 40, 6, 1);
    /* c-003 is a copy of c-001 */
    char *p1 = tt_fmt("%s/c-001.safetensors", cdir), *p3 = tt_fmt("%s/c-003.safetensors", cdir);
    size_t len;
    uint8_t *b = tt_read_file(p1, &len);
    cr_assert_eq(tt_write_file(p3, b, len), 0);
    free(b);
    heard h;
    backup(&h, cdir, "run", "root", 0);
    cr_assert_eq(h.n, 4);
    cr_assert_lt(h.items[3].r.written, 10240, "the copy wrote %llu bytes",
                 (unsigned long long)h.items[3].r.written);
    cr_assert_eq(h.items[3].r.n_dedup + h.items[3].r.n_unchanged, h.items[3].r.n_tensors);
    assert_all_export(cdir, "run", 4);
    free(p1);
    free(p3);
    free(cdir);
}

Test(backup, model_folders_and_other_files_in_the_folder)
{
    ckpt a, b;
    ck_root(&a, 7);
    ck_step(&b, &a, 40, 8);
    char *cdir = tt_fmt("%s/ckpts", dir);
    char *s1 = tt_fmt("%s/step-1", cdir), *s2 = tt_fmt("%s/step-2", cdir);
    cr_assert_eq(tt_mkdirs(s1), 0);
    cr_assert_eq(tt_mkdirs(s2), 0);
    char *m1 = tt_join(s1, "model.safetensors"), *m2 = tt_join(s2, "model.safetensors");
    char *c1 = tt_join(s1, "config.json"), *c2 = tt_join(s2, "config.json");
    char *notes = tt_join(cdir, "notes.txt");
    ck_write(&a, m1);
    ck_write(&b, m2);
    cr_assert_eq(tt_write_text(c1, "{\"step\": 1}\n"), 0);
    cr_assert_eq(tt_write_text(c2, "{\"step\": 2}\n"), 0);
    cr_assert_eq(tt_write_text(notes, "not a checkpoint\n"), 0);
    heard h;
    backup(&h, cdir, "run", NULL, 0);
    cr_assert_eq(h.n, 2, "two checkpoints (notes.txt is none)");
    cr_assert_str_eq(h.items[0].name, "run/step-1");
    cr_assert_str_eq(h.items[1].name, "run/step-2");
    cr_assert_str_eq(h.items[1].base, "run/step-1");
    char *out = tt_fmt("%s/out2", dir), why[1024];
    tt_ok(tt_export(s, "run/step-2", out));
    cr_assert(tt_trees_equal(s2, out, why, sizeof why), "%s", why);
    ck_free(&a);
    ck_free(&b);
    free(cdir);
    free(s1);
    free(s2);
    free(m1);
    free(m2);
    free(c1);
    free(c2);
    free(notes);
    free(out);
}

Test(backup, a_folder_without_checkpoints_is_an_error_and_writes_nothing)
{
    tt_snapshot s0, s1;
    char why[4096];
    tt_ok(tt_snapshot_take(&s0, s));
    char *empty = tt_fmt("%s/empty", dir), *other = tt_fmt("%s/other", dir);
    char *readme = tt_fmt("%s/other/README.txt", dir), *missing = tt_fmt("%s/missing", dir);
    cr_assert_eq(tt_mkdirs(empty), 0);
    cr_assert_eq(tt_mkdirs(other), 0);
    cr_assert_eq(tt_write_text(readme, "no weights here\n"), 0);
    tvs_backup_opts o;
    memset(&o, 0, sizeof o);
    heard h = { .n = 0 };
    tt_fails(tvs_backup(s, empty, "run", &o, on_item, &h), TVS_ENOTFOUND);
    tt_msg_has(empty);
    tt_fails(tvs_backup(s, other, "run", &o, on_item, &h), TVS_ENOTFOUND);
    tt_fails(tvs_backup(s, missing, "run", &o, on_item, &h), TVS_ENOTFOUND);
    cr_assert_eq(h.n, 0);
    tt_ok(tt_snapshot_take(&s1, s));
    cr_assert(tt_snapshot_equal(&s0, &s1, why, sizeof why), "%s", why);
    tt_snapshot_dispose(&s0);
    tt_snapshot_dispose(&s1);
    free(empty);
    free(other);
    free(readme);
    free(missing);
}

Test(backup, a_base_that_does_not_exist_is_enotfound_and_writes_nothing)
{
    char *cdir = make_series(2, 40, 9, 0);
    tt_snapshot s0, s1;
    char why[4096];
    tt_ok(tt_snapshot_take(&s0, s));
    tvs_backup_opts o;
    memset(&o, 0, sizeof o);
    o.base = "no-such-base";
    tt_fails(tvs_backup(s, cdir, "run", &o, NULL, NULL), TVS_ENOTFOUND);
    tt_ok(tt_snapshot_take(&s1, s));
    cr_assert(tt_snapshot_equal(&s0, &s1, why, sizeof why), "%s", why);
    tt_snapshot_dispose(&s0);
    tt_snapshot_dispose(&s1);
    free(cdir);
}

/* ---- the real checkpoint series */

Test(backup, the_real_checkpoints_back_up_small_and_identical)
{
    struct stat st;
    const char *ck = TVS_SHARED_MODELS "/ckpt";
    if (stat(ck, &st) || stat(TVS_SHARED_MODELS "/base-v1.safetensors", &st)) {
        printf("skipped: no shared checkpoints in %s\n", ck);
        cr_skip_test("no shared models: %s is missing", ck);
    }
    tt_ok(tt_import(NULL, s, TVS_SHARED_MODELS "/base-v1.safetensors", "base-v1"));
    heard h;
    backup(&h, ck, "run", "base-v1", 0);
    cr_assert_eq(h.n, 8, "eight checkpoints, heard %d", h.n);
    for (int i = 0; i < 8; i++) {
        char *ref = tt_fmt("run/ckpt-%03d", i);
        char *p = tt_fmt("%s/ckpt-%03d.safetensors", ck, i);
        assert_exports(ref, p);
        cr_assert_leq(depth_of(ref), 8);
        free(ref);
        free(p);
    }
    tvs_stats stt;
    tt_ok(tvs_stats_get(&stt, s));
    cr_assert_lt(stt.reachable, 20000000, "base-v1 and 8 checkpoints take %llu bytes",
                 (unsigned long long)stt.reachable);
    tvs_stats_dispose(&stt);
}
