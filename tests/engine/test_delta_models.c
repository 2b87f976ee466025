/*
 * Delta models (SPEC.md 2.2, 2.6): `import --base`, `--base auto`, `diff`,
 * delta chains, reuse through the checksum index, the lineage index, rm
 * protection of bases, gc and fsck around deltas.
 *
 * Models are generated here: a "base" of BF16, F32 and I32 tensors (one of
 * them two chunks long) and a "fine-tune" in which some tensors moved by a
 * few ulps, one is unchanged, one gained vocabulary rows and one is new.
 * Every stored model must export byte-identical to its file. The real
 * model family in TVS_SHARED_MODELS is used too when it is there; those
 * tests skip themselves (saying why) when it is not.
 */
#include <criterion/criterion.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/maint.h"
#include "engine/model.h"
#include "engine/tensor.h"
#include "format/delta.h"
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

TestSuite(delta_models, .init = setup, .fini = teardown, .timeout = 60);

/* ---- generated models */

typedef struct {
    char name[64];
    char dtype[8];
    unsigned rank;
    uint64_t shape[4];
    uint8_t *data;
    size_t len;
} gtensor;

typedef struct {
    gtensor t[16];
    size_t n;
} gmodel;

static unsigned width_of(const char *dtype)
{
    if (!strcmp(dtype, "BF16") || !strcmp(dtype, "F16"))
        return 2;
    if (!strcmp(dtype, "F32") || !strcmp(dtype, "I32"))
        return 4;
    if (!strcmp(dtype, "F64") || !strcmp(dtype, "I64"))
        return 8;
    return 1;
}

/* Values that look like weights: BF16 from tt_fill_bf16, F32 small floats,
 * I32 small integers, anything else random bytes. */
static void fill(gtensor *t, uint8_t *p, size_t len, uint64_t seed)
{
    uint64_t st = seed;
    if (!strcmp(t->dtype, "BF16") || !strcmp(t->dtype, "F16")) {
        tt_fill_bf16(p, len / 2, seed);
    } else if (!strcmp(t->dtype, "F32")) {
        for (size_t i = 0; i + 4 <= len; i += 4) {
            float f = ((float)(int32_t)tt_lcg(&st) / 2147483648.0f) * 0.05f;
            uint32_t u;
            memcpy(&u, &f, 4);
            tvs_store_le32(p + i, u);
        }
    } else if (!strcmp(t->dtype, "I32")) {
        for (size_t i = 0; i + 4 <= len; i += 4)
            tvs_store_le32(p + i, tt_lcg(&st) % 50000);
    } else {
        tt_fill_random(p, len, seed);
    }
}

static gtensor *gm_add(gmodel *m, const char *name, const char *dtype, unsigned rank,
                       uint64_t d0, uint64_t d1, uint64_t seed)
{
    cr_assert(m->n < 16);
    gtensor *t = &m->t[m->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->dtype, sizeof t->dtype, "%s", dtype);
    t->rank = rank;
    t->shape[0] = d0;
    t->shape[1] = d1;
    uint64_t n = rank == 0 ? 1 : rank == 1 ? d0 : d0 * d1;
    t->len = (size_t)n * width_of(dtype);
    t->data = malloc(t->len ? t->len : 1);
    fill(t, t->data, t->len, seed);
    return t;
}

static gtensor *gm_find(gmodel *m, const char *name)
{
    for (size_t i = 0; i < m->n; i++)
        if (!strcmp(m->t[i].name, name))
            return &m->t[i];
    cr_assert_fail("no tensor %s", name);
    return NULL;
}

static void gm_copy(gmodel *dst, const gmodel *src)
{
    *dst = *src;
    for (size_t i = 0; i < src->n; i++) {
        dst->t[i].data = malloc(src->t[i].len ? src->t[i].len : 1);
        memcpy(dst->t[i].data, src->t[i].data, src->t[i].len);
    }
}

static void gm_free(gmodel *m)
{
    for (size_t i = 0; i < m->n; i++)
        free(m->t[i].data);
    m->n = 0;
}

/* Move about @p permille / 1000 of the elements by 1..4 ulps (bit-pattern
 * steps of the magnitude), either way. */
static void gm_perturb(gmodel *m, const char *name, unsigned permille, uint64_t seed)
{
    gtensor *t = gm_find(m, name);
    unsigned w = width_of(t->dtype);
    uint64_t st = seed;
    for (size_t i = 0; i + w <= t->len; i += w) {
        uint32_t r = tt_lcg(&st);
        if (r % 1000 >= permille)
            continue;
        int k = (int)(r >> 12 & 3) + 1, up = r >> 20 & 1;
        if (w == 2) {
            uint16_t v = (uint16_t)(t->data[i] | t->data[i + 1] << 8);
            uint16_t mag = v & 0x7fff;
            if (mag > 8 && mag < 0x7f00)
                v = (uint16_t)((v & 0x8000) | (up ? mag + k : mag - k));
            t->data[i] = (uint8_t)v;
            t->data[i + 1] = (uint8_t)(v >> 8);
        } else if (w == 4) {
            uint32_t v = tvs_load_le32(t->data + i);
            v = up ? v + (uint32_t)k : v - (uint32_t)k;
            tvs_store_le32(t->data + i, v);
        } else {
            t->data[i] ^= (uint8_t)k;
        }
    }
}

/* Give a 2-d tensor more rows (the old rows stay as they are). */
static void gm_add_rows(gmodel *m, const char *name, uint64_t rows, uint64_t seed)
{
    gtensor *t = gm_find(m, name);
    size_t row = t->len / t->shape[0], len = (size_t)(t->shape[0] + rows) * row;
    t->data = realloc(t->data, len);
    fill(t, t->data + t->len, len - t->len, seed);
    t->len = len;
    t->shape[0] += rows;
}

static void gm_write(const gmodel *m, const char *path)
{
    tt_tensor tt[16];
    for (size_t i = 0; i < m->n; i++) {
        tt[i].name = m->t[i].name;
        tt[i].dtype = m->t[i].dtype;
        tt[i].rank = m->t[i].rank;
        memset(tt[i].shape, 0, sizeof tt[i].shape);
        memcpy(tt[i].shape, m->t[i].shape, sizeof m->t[i].shape);
    }
    uint64_t data_len;
    char *json = tt_st_header(tt, m->n, "{\"format\":\"pt\"}", &data_len);
    cr_assert_not_null(json);
    uint8_t *data = malloc(data_len ? data_len : 1);
    size_t off = 0;
    for (size_t i = 0; i < m->n; i++) {
        memcpy(data + off, m->t[i].data, m->t[i].len);
        off += m->t[i].len;
    }
    cr_assert_eq(off, data_len);
    cr_assert_eq(tt_write_st_raw(path, json, data, data_len), 0, "writing %s", path);
    free(json);
    free(data);
}

#define EMBED "model.embed.weight"     /* BF16, two chunks */
#define ATTN "layers.0.attn.weight"    /* BF16 */
#define NORM "layers.0.norm.weight"    /* BF16, never changed */
#define MLP "layers.1.mlp.weight"      /* F32 */
#define POS "positions"                /* I32 */
#define VOCAB "vocab.weight"           /* BF16, gains rows */
#define HEAD "head.new"                /* only in fine-tunes */

static void make_base(gmodel *m, uint64_t seed)
{
    memset(m, 0, sizeof *m);
    gm_add(m, EMBED, "BF16", 2, 1024, 640, seed + 1);
    gm_add(m, ATTN, "BF16", 2, 256, 256, seed + 2);
    gm_add(m, NORM, "BF16", 1, 256, 0, seed + 3);
    gm_add(m, MLP, "F32", 2, 128, 192, seed + 4);
    gm_add(m, POS, "I32", 1, 2000, 0, seed + 5);
    gm_add(m, VOCAB, "BF16", 2, 250, 64, seed + 6);
}

/* A fine-tune of @p base: EMBED, ATTN, MLP and POS moved, NORM unchanged,
 * VOCAB with 10 more rows, HEAD new. */
static void make_ft(gmodel *ft, const gmodel *base, uint64_t seed)
{
    gm_copy(ft, base);
    gm_perturb(ft, EMBED, 100, seed + 1);
    gm_perturb(ft, ATTN, 300, seed + 2);
    gm_perturb(ft, MLP, 200, seed + 3);
    gm_perturb(ft, POS, 50, seed + 4);
    gm_add_rows(ft, VOCAB, 10, seed + 5);
    gm_add(ft, HEAD, "BF16", 2, 64, 32, seed + 6);
}

/* A small step of training: every float tensor moves a little. */
static void make_step(gmodel *next, const gmodel *prev, uint64_t seed)
{
    gm_copy(next, prev);
    gm_perturb(next, EMBED, 40, seed + 1);
    gm_perturb(next, ATTN, 60, seed + 2);
    gm_perturb(next, MLP, 60, seed + 3);
}

/* ---- store helpers */

static char *path_in(const char *name) { return tt_join(dir, name); }

static char *write_model(const gmodel *m, const char *name)
{
    char *p = tt_fmt("%s/%s.safetensors", dir, name);
    gm_write(m, p);
    return p;
}

static void import_as(tvs_import_result *r, const char *path, const char *ref,
                      const char *base)
{
    tvs_import_opts o = TVS_IMPORT_OPTS_INIT;
    tvs_import_result tmp;
    o.base = base;
    tt_ok(tvs_import(r ? r : &tmp, s, path, ref, &o));
}

static void assert_exports(const char *ref, const char *orig)
{
    char *out = tt_fmt("%s/export.%d.out", dir, (int)getpid()), why[1024];
    tt_ok(tt_export(s, ref, out));
    cr_assert_eq(tt_files_equal(orig, out, why, sizeof why), 1, "%s: %s", ref, why);
    unlink(out);
    free(out);
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

/* What a model says about one of its tensors (chunk ids not kept). */
typedef struct {
    tvs_id id;
    tvs_tensor_obj t;
    uint8_t model_kind;
    tvs_id model_base;
} tinfo;

static tinfo tensor_of(const char *ref, const char *name)
{
    tvs_txn *txn;
    tvs_id mid;
    tvs_model_obj m;
    tinfo out;
    memset(&out, 0, sizeof out);
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tt_ok(tvs_resolve(&mid, txn, ref));
    tt_ok(tvs_model_load(&m, txn, &mid));
    out.model_kind = m.kind;
    out.model_base = m.base;
    int found = 0;
    for (size_t i = 0; i < m.n_files; i++)
        for (size_t j = 0; j < m.files[i].n_tensors; j++) {
            const tvs_model_entry *e = &m.files[i].tensors[j];
            if (e->name.len == strlen(name) && !memcmp(e->name.ptr, name, e->name.len)) {
                out.id = e->id;
                tt_ok(tvs_tensor_load(&out.t, txn, &e->id));
                found = 1;
            }
        }
    out.t.chunk_ids = NULL;
    tvs_model_dispose(&m);
    tvs_txn_end(txn);
    cr_assert(found, "%s has no tensor %s", ref, name);
    return out;
}

static int model_depth(const char *ref)
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

static int del_txn(tvs_txn *txn, void *name) { return tvs_ref_del(txn, name); }

static void rm_ref(const char *name) { tt_ok(tvs_store_write(s, 0, del_txn, (void *)name)); }

typedef struct {
    char lines[32][512];
    int n;
} report;

static void collect_line(void *p, const char *line)
{
    report *r = p;
    if (r->n < 32)
        snprintf(r->lines[r->n], sizeof r->lines[0], "%s", line);
    r->n++;
}

static int report_has(const report *r, const char *needle)
{
    for (int i = 0; i < r->n && i < 32; i++)
        if (strstr(r->lines[i], needle))
            return 1;
    return 0;
}

static void assert_fsck_clean(void)
{
    tvs_fsck_result fr;
    report rep = { .n = 0 };
    tt_ok(tvs_fsck(&fr, s, collect_line, &rep));
    cr_assert_eq(fr.problems, 0, "fsck found %llu problems; first: %s",
                 (unsigned long long)fr.problems, rep.n ? rep.lines[0] : "");
}

/* Close the store, run tvs on it, reopen. */
static void run_tvs(tt_run *r, ...)
{
    const char *argv[32];
    size_t n = 0;
    argv[n++] = "--store";
    argv[n++] = dir;
    va_list ap;
    va_start(ap, r);
    for (const char *a; n < 31 && (a = va_arg(ap, const char *));)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    tvs_store_close(s);
    s = NULL;
    cr_assert_eq(tt_tvs(r, NULL, NULL, argv), 0, "could not run %s", TVS_BIN);
    tt_ok(tvs_store_open(&s, dir, NULL));
}

/* The standard pair: "base" stored full, "ft" stored as a delta of it. */
static gmodel g_base, g_ft;
static char *p_base, *p_ft;
static tvs_import_result r_base, r_ft;

static void import_pair(void)
{
    make_base(&g_base, 100);
    make_ft(&g_ft, &g_base, 200);
    p_base = write_model(&g_base, "base");
    p_ft = write_model(&g_ft, "ft");
    import_as(&r_base, p_base, "base", NULL);
    import_as(&r_ft, p_ft, "ft", "base");
}

static void free_pair(void)
{
    gm_free(&g_base);
    gm_free(&g_ft);
    free(p_base);
    free(p_ft);
}

/* ---- import --base */

Test(delta_models, a_delta_import_exports_byte_identical)
{
    import_pair();
    assert_exports("ft", p_ft);
    assert_exports("base", p_base);
    cr_assert_eq(r_ft.n_tensors, 7);
    cr_assert_eq(r_ft.n_unchanged, 1, "only %s is unchanged", NORM);
    cr_assert_eq(r_ft.n_delta, 4, "%s, %s, %s and %s are deltas", EMBED, ATTN, MLP, POS);
    cr_assert_eq(r_ft.n_full, 2, "%s (reshaped) and %s (new) are full", VOCAB, HEAD);
    cr_assert_eq(r_ft.n_dedup, 0);
    cr_assert(tvs_id_eq(&r_ft.base, &r_base.model), "result.base is the base model");
    cr_assert_lt(r_ft.written, r_base.written, "a delta costs less than its base: %llu vs %llu",
                 (unsigned long long)r_ft.written, (unsigned long long)r_base.written);
    free_pair();
}

Test(delta_models, a_delta_model_names_its_base_and_is_kind_delta)
{
    import_pair();
    tinfo e = tensor_of("ft", EMBED);
    cr_assert_eq(e.model_kind, TVS_MODEL_DELTA);
    cr_assert(tvs_id_eq(&e.model_base, &r_base.model));
    tinfo b = tensor_of("base", EMBED);
    cr_assert_eq(b.model_kind, TVS_MODEL_FULL);
    free_pair();
}

Test(delta_models, unchanged_tensors_share_the_base_tensor_id)
{
    import_pair();
    tinfo fb = tensor_of("ft", NORM), bb = tensor_of("base", NORM);
    cr_assert(tvs_id_eq(&fb.id, &bb.id), "the unchanged tensor is the base's object");
    /* and the changed ones are not */
    tinfo fa = tensor_of("ft", ATTN), ba = tensor_of("base", ATTN);
    cr_assert(!tvs_id_eq(&fa.id, &ba.id));
    free_pair();
}

Test(delta_models, changed_tensors_are_delta_tensors_over_the_base_tensor_of_that_name)
{
    import_pair();
    static const struct { const char *name; int transform; } want[] = {
        { EMBED, TVS_DELTA_ORD16 }, { ATTN, TVS_DELTA_ORD16 },
        { MLP, TVS_DELTA_ORD32 }, { POS, TVS_DELTA_XOR } };
    for (size_t i = 0; i < 4; i++) {
        tinfo f = tensor_of("ft", want[i].name), b = tensor_of("base", want[i].name);
        cr_assert_eq(f.t.encoding, TVS_ENC_DELTA, "%s is a delta tensor", want[i].name);
        cr_assert(tvs_id_eq(&f.t.base, &b.id), "%s applies to the base's %s", want[i].name,
                  want[i].name);
        cr_assert_eq(f.t.transform, want[i].transform, "%s: transform %d, want %d",
                     want[i].name, f.t.transform, want[i].transform);
        cr_assert_eq(f.t.nbytes, b.t.nbytes);
        cr_assert_eq(f.t.chunk_size, b.t.chunk_size);
        cr_assert_eq(b.t.encoding, TVS_ENC_CHUNKED);
    }
    cr_assert_eq(tensor_of("ft", EMBED).t.n_chunks, 2, "the two-chunk tensor stays two chunks");
    free_pair();
}

Test(delta_models, a_reshaped_tensor_is_stored_full_and_exports_right)
{
    import_pair();
    tinfo v = tensor_of("ft", VOCAB);
    cr_assert_eq(v.t.encoding, TVS_ENC_CHUNKED);
    cr_assert_eq(v.t.shape[0], 260);
    cr_assert_eq(v.t.shape[1], 64);
    assert_exports("ft", p_ft);
    free_pair();
}

Test(delta_models, a_tensor_only_in_the_fine_tune_is_stored_full)
{
    import_pair();
    tinfo h = tensor_of("ft", HEAD);
    cr_assert_eq(h.t.encoding, TVS_ENC_CHUNKED);
    cr_assert_eq(h.t.dtype, TVS_DTYPE_BF16);
    free_pair();
}

Test(delta_models, a_changed_dtype_is_stored_full)
{
    gmodel b, f;
    memset(&b, 0, sizeof b);
    memset(&f, 0, sizeof f);
    gm_add(&b, "w", "BF16", 2, 64, 64, 1);
    gm_add(&b, "v", "BF16", 2, 64, 64, 2);
    gm_add(&f, "w", "F16", 2, 64, 64, 1);   /* same bytes, other dtype */
    gm_add(&f, "v", "BF16", 2, 64, 64, 3);
    char *pb = write_model(&b, "b"), *pf = write_model(&f, "f");
    tvs_import_result r;
    import_as(NULL, pb, "b", NULL);
    import_as(&r, pf, "f", "b");
    cr_assert_eq(r.n_delta, 1);
    cr_assert_eq(r.n_full, 1);
    cr_assert_eq(tensor_of("f", "w").t.encoding, TVS_ENC_CHUNKED);
    assert_exports("f", pf);
    gm_free(&b);
    gm_free(&f);
    free(pb);
    free(pf);
}

Test(delta_models, f16_f32_i32_u8_and_f64_deltas_round_trip)
{
    gmodel b, f;
    memset(&b, 0, sizeof b);
    gm_add(&b, "f16", "F16", 2, 300, 70, 1);
    gm_add(&b, "f32", "F32", 2, 333, 77, 2);
    gm_add(&b, "i32", "I32", 1, 70001, 0, 3);
    gm_add(&b, "u8", "U8", 1, 100003, 0, 4);   /* odd length */
    gm_add(&b, "f64", "F64", 1, 5000, 0, 5);
    gm_copy(&f, &b);
    gm_perturb(&f, "f16", 200, 11);
    gm_perturb(&f, "f32", 200, 12);
    gm_perturb(&f, "i32", 200, 13);
    gm_perturb(&f, "u8", 200, 14);
    gm_perturb(&f, "f64", 200, 15);
    char *pb = write_model(&b, "b"), *pf = write_model(&f, "f");
    tvs_import_result r;
    import_as(NULL, pb, "b", NULL);
    import_as(&r, pf, "f", "b");
    cr_assert_eq(r.n_delta, 5, "all five are deltas (%zu)", r.n_delta);
    cr_assert_eq(tensor_of("f", "f16").t.transform, TVS_DELTA_ORD16);
    cr_assert_eq(tensor_of("f", "f32").t.transform, TVS_DELTA_ORD32);
    cr_assert_eq(tensor_of("f", "i32").t.transform, TVS_DELTA_XOR);
    cr_assert_eq(tensor_of("f", "u8").t.transform, TVS_DELTA_XOR);
    cr_assert_eq(tensor_of("f", "f64").t.transform, TVS_DELTA_XOR);
    assert_exports("f", pf);
    assert_fsck_clean();
    gm_free(&b);
    gm_free(&f);
    free(pb);
    free(pf);
}

Test(delta_models, empty_tensors_in_a_delta_model_round_trip)
{
    gmodel b, f;
    memset(&b, 0, sizeof b);
    gm_add(&b, "empty", "BF16", 2, 0, 16, 1);
    gm_add(&b, "w", "BF16", 2, 64, 64, 2);
    gm_copy(&f, &b);
    gm_perturb(&f, "w", 300, 3);
    char *pb = write_model(&b, "b"), *pf = write_model(&f, "f");
    import_as(NULL, pb, "b", NULL);
    import_as(NULL, pf, "f", "b");
    assert_exports("f", pf);
    assert_fsck_clean();
    gm_free(&b);
    gm_free(&f);
    free(pb);
    free(pf);
}

Test(delta_models, a_model_folder_with_a_config_is_a_delta_too)
{
    gmodel b, f;
    make_base(&b, 7);
    make_ft(&f, &b, 8);
    char *db = path_in("bdir"), *df = path_in("fdir");
    cr_assert_eq(tt_mkdirs(db), 0);
    cr_assert_eq(tt_mkdirs(df), 0);
    char *mb = tt_join(db, "model.safetensors"), *mf = tt_join(df, "model.safetensors");
    char *cb = tt_join(db, "config.json"), *cf = tt_join(df, "config.json");
    gm_write(&b, mb);
    gm_write(&f, mf);
    cr_assert_eq(tt_write_text(cb, "{\"hidden\": 64}\n"), 0);
    cr_assert_eq(tt_write_text(cf, "{\"hidden\": 64}\n"), 0);
    tvs_import_result r;
    import_as(NULL, db, "bf", NULL);
    import_as(&r, df, "ff", "bf");
    cr_assert_eq(r.n_delta, 4);
    char *out = path_in("ff.out"), why[1024];
    tt_ok(tt_export(s, "ff", out));
    cr_assert(tt_trees_equal(df, out, why, sizeof why), "%s", why);
    gm_free(&b);
    gm_free(&f);
    free(db);
    free(df);
    free(mb);
    free(mf);
    free(cb);
    free(cf);
    free(out);
}

/* ---- refusals change nothing */

static void assert_unchanged(const tt_snapshot *before, const char *what)
{
    tt_snapshot after;
    char why[4096];
    tt_ok(tt_snapshot_take(&after, s));
    cr_assert(tt_snapshot_equal(before, &after, why, sizeof why), "%s changed the store: %s",
              what, why);
    tt_snapshot_dispose(&after);
}

Test(delta_models, a_base_that_does_not_exist_is_enotfound_and_writes_nothing)
{
    gmodel b, f;
    make_base(&b, 1);
    make_ft(&f, &b, 2);
    char *pb = write_model(&b, "b"), *pf = write_model(&f, "f");
    import_as(NULL, pb, "b", NULL);
    tt_snapshot s0;
    tt_ok(tt_snapshot_take(&s0, s));
    tvs_import_opts o = TVS_IMPORT_OPTS_INIT;
    tvs_import_result r;
    o.base = "no-such-base";
    tt_fails(tvs_import(&r, s, pf, "f", &o), TVS_ENOTFOUND);
    tt_msg_has("no-such-base");
    assert_unchanged(&s0, "an import with a missing base");
    o.base = "0123456789abcdef";   /* an id prefix of nothing */
    tt_fails(tvs_import(&r, s, pf, "f", &o), TVS_ENOTFOUND);
    assert_unchanged(&s0, "an import with a base id that is not stored");
    tt_snapshot_dispose(&s0);
    gm_free(&b);
    gm_free(&f);
    free(pb);
    free(pf);
}

Test(delta_models, a_base_with_no_tensor_in_common_is_einval_and_writes_nothing)
{
    gmodel b, f, g;
    memset(&b, 0, sizeof b);
    memset(&f, 0, sizeof f);
    memset(&g, 0, sizeof g);
    gm_add(&b, "a", "BF16", 2, 64, 64, 1);
    gm_add(&b, "b", "F32", 1, 100, 0, 2);
    gm_add(&f, "c", "BF16", 2, 64, 64, 3);    /* other names */
    gm_add(&f, "d", "F32", 1, 100, 0, 4);
    gm_add(&g, "a", "BF16", 2, 32, 128, 5);   /* same names, other shapes */
    gm_add(&g, "b", "I32", 1, 100, 0, 6);
    char *pb = write_model(&b, "b"), *pf = write_model(&f, "f"), *pg = write_model(&g, "g");
    import_as(NULL, pb, "b", NULL);
    tt_snapshot s0;
    tt_ok(tt_snapshot_take(&s0, s));
    tvs_import_opts o = TVS_IMPORT_OPTS_INIT;
    tvs_import_result r;
    o.base = "b";
    tt_fails(tvs_import(&r, s, pf, "f", &o), TVS_EINVAL);
    tt_msg_has("shares no tensor");
    assert_unchanged(&s0, "an import against an unrelated base");
    tt_fails(tvs_import(&r, s, pg, "g", &o), TVS_EINVAL);
    assert_unchanged(&s0, "an import against a base of other shapes");
    tt_snapshot_dispose(&s0);
    gm_free(&b);
    gm_free(&f);
    gm_free(&g);
    free(pb);
    free(pf);
    free(pg);
}

/* ---- --base auto */

Test(delta_models, base_auto_picks_the_base_the_fine_tune_came_from)
{
    gmodel a, b, fa, fb;
    make_base(&a, 1000);
    make_base(&b, 2000);   /* same names and shapes, other values */
    make_ft(&fa, &a, 1100);
    make_ft(&fb, &b, 2100);
    char *pa = write_model(&a, "a"), *pb = write_model(&b, "b");
    char *pfa = write_model(&fa, "fa"), *pfb = write_model(&fb, "fb");
    tvs_import_result ra, rb, r;
    /* B first, so that the first candidate is not the answer for fa */
    import_as(&rb, pb, "base-b", NULL);
    import_as(&ra, pa, "base-a", NULL);
    import_as(&r, pfa, "ft-a", "auto");
    cr_assert(tvs_id_eq(&r.base, &ra.model), "ft-a should be a delta of base-a");
    cr_assert_neq(r.base_reason[0], 0, "base_reason says why");
    tinfo fe = tensor_of("ft-a", EMBED);
    cr_assert(tvs_id_eq(&fe.model_base, &ra.model));
    cr_assert_eq(fe.model_kind, TVS_MODEL_DELTA);
    assert_exports("ft-a", pfa);
    import_as(&r, pfb, "ft-b", "auto");
    cr_assert(tvs_id_eq(&r.base, &rb.model), "ft-b should be a delta of base-b");
    cr_assert_neq(r.base_reason[0], 0);
    assert_exports("ft-b", pfb);
    gm_free(&a);
    gm_free(&b);
    gm_free(&fa);
    gm_free(&fb);
    free(pa);
    free(pb);
    free(pfa);
    free(pfb);
}

Test(delta_models, base_auto_never_picks_a_delta_model)
{
    gmodel a, f, f2;
    make_base(&a, 1);
    make_ft(&f, &a, 2);
    make_step(&f2, &f, 3);   /* closest to f, which is a delta: not eligible */
    char *pa = write_model(&a, "a"), *pf = write_model(&f, "f"), *pf2 = write_model(&f2, "f2");
    tvs_import_result ra, r;
    import_as(&ra, pa, "a", NULL);
    import_as(NULL, pf, "f", "a");
    import_as(&r, pf2, "f2", "auto");
    cr_assert(tvs_id_eq(&r.base, &ra.model), "only full models are candidates");
    assert_exports("f2", pf2);
    gm_free(&a);
    gm_free(&f);
    gm_free(&f2);
    free(pa);
    free(pf);
    free(pf2);
}

Test(delta_models, base_auto_in_a_store_without_a_fitting_model_is_enotfound)
{
    gmodel a, f;
    make_base(&a, 1);
    memset(&f, 0, sizeof f);
    gm_add(&f, "unrelated", "BF16", 2, 64, 64, 9);
    char *pa = write_model(&a, "a"), *pf = write_model(&f, "f");
    tvs_import_opts o = TVS_IMPORT_OPTS_INIT;
    tvs_import_result r;
    o.base = "auto";
    tt_snapshot s0;
    tt_ok(tt_snapshot_take(&s0, s));
    tt_fails(tvs_import(&r, s, pa, "x", &o), TVS_ENOTFOUND);   /* empty store */
    assert_unchanged(&s0, "--base auto in an empty store");
    tt_snapshot_dispose(&s0);
    import_as(NULL, pa, "a", NULL);
    tt_ok(tt_snapshot_take(&s0, s));
    tt_fails(tvs_import(&r, s, pf, "f", &o), TVS_ENOTFOUND);
    assert_unchanged(&s0, "--base auto with nothing in common");
    tt_snapshot_dispose(&s0);
    gm_free(&a);
    gm_free(&f);
    free(pa);
    free(pf);
}

/* ---- chains */

Test(delta_models, a_delta_of_a_delta_of_a_delta_exports_right)
{
    gmodel m[4];
    char *p[4];
    const char *names[4] = { "c0", "c1", "c2", "c3" };
    make_base(&m[0], 50);
    for (int i = 1; i < 4; i++)
        make_step(&m[i], &m[i - 1], 50 + (uint64_t)i * 10);
    for (int i = 0; i < 4; i++) {
        p[i] = write_model(&m[i], names[i]);
        import_as(NULL, p[i], names[i], i ? names[i - 1] : NULL);
    }
    for (int i = 0; i < 4; i++) {
        assert_exports(names[i], p[i]);
        cr_assert_eq(model_depth(names[i]), i, "%s has depth %d", names[i], model_depth(names[i]));
    }
    /* the chain of the big tensor: three deltas over one chunked tensor */
    tvs_txn *txn;
    tvs_tensor_chain *c = malloc(sizeof *c);
    tinfo e = tensor_of("c3", EMBED), e0 = tensor_of("c0", EMBED);
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tt_ok(tvs_tensor_chain_load(c, txn, &e.id));
    cr_assert_eq(c->depth, 4);
    cr_assert(tvs_id_eq(&c->id[3], &e0.id));
    cr_assert_eq(c->t[3].encoding, TVS_ENC_CHUNKED);
    for (int l = 0; l < 3; l++)
        cr_assert_eq(c->t[l].encoding, TVS_ENC_DELTA);
    tvs_txn_end(txn);
    free(c);
    assert_fsck_clean();
    for (int i = 0; i < 4; i++) {
        gm_free(&m[i]);
        free(p[i]);
    }
}

Test(delta_models, max_chain_stores_a_tensor_full_rather_than_deeper)
{
    gmodel m[4];
    char *p[4];
    const char *names[4] = { "c0", "c1", "c2", "c3" };
    make_base(&m[0], 60);
    for (int i = 1; i < 4; i++)
        make_step(&m[i], &m[i - 1], 60 + (uint64_t)i * 10);
    tvs_import_result r;
    for (int i = 0; i < 4; i++) {
        p[i] = write_model(&m[i], names[i]);
        tvs_import_opts o = TVS_IMPORT_OPTS_INIT;
        o.base = i ? names[i - 1] : NULL;
        o.max_chain = 2;
        tt_ok(tvs_import(&r, s, p[i], names[i], &o));
    }
    cr_assert_eq(model_depth("c2"), 2);
    cr_assert_leq(model_depth("c3"), 2, "max_chain 2, depth %d", model_depth("c3"));
    cr_assert_eq(r.n_delta, 0, "c3's changed tensors would be 3 deep");
    cr_assert_eq(r.n_full, 3);
    for (int i = 0; i < 4; i++)
        assert_exports(names[i], p[i]);
    for (int i = 0; i < 4; i++) {
        gm_free(&m[i]);
        free(p[i]);
    }
}

/* Readers follow 16 tensors (15 deltas over one chunked tensor): by
 * default a writer goes that deep and no deeper. */
Test(delta_models, a_long_chain_stops_at_15_deltas_and_every_version_exports)
{
    enum { N = 18 };
    gmodel m[N];
    char *p[N], name[N][16];
    memset(&m[0], 0, sizeof m[0]);
    gm_add(&m[0], "w", "BF16", 2, 64, 64, 70);
    gm_add(&m[0], "v", "F32", 1, 100, 0, 71);
    for (int i = 1; i < N; i++) {
        gm_copy(&m[i], &m[i - 1]);
        gm_perturb(&m[i], "w", 100, 80 + (uint64_t)i);
        gm_perturb(&m[i], "v", 100, 180 + (uint64_t)i);
    }
    for (int i = 0; i < N; i++) {
        snprintf(name[i], sizeof name[i], "v%02d", i);
        p[i] = write_model(&m[i], name[i]);
        import_as(NULL, p[i], name[i], i ? name[i - 1] : NULL);
    }
    int depth[N];
    for (int i = 0; i < N; i++)
        depth[i] = model_depth(name[i]);
    for (int i = 0; i < N; i++)
        assert_exports(name[i], p[i]);
    for (int i = 0; i < N; i++) {
        gm_free(&m[i]);
        free(p[i]);
    }
    for (int i = 0; i <= 15; i++)
        cr_assert_eq(depth[i], i, "v%02d has depth %d", i, depth[i]);
    cr_assert_eq(depth[16], 0, "v16 would be 16 deltas deep: its changed tensors are full");
    cr_assert_eq(depth[17], 1);
    assert_fsck_clean();
}

/* `import ft --as base --base base`: the new head is a delta of the old one. */
Test(delta_models, a_fine_tune_imported_over_its_base_ref_keeps_the_old_head_as_its_base)
{
    gmodel b, f;
    make_base(&b, 600);
    make_ft(&f, &b, 601);
    char *pb = write_model(&b, "b"), *pf = write_model(&f, "f");
    tvs_import_result rb, rf;
    import_as(&rb, pb, "m", NULL);
    import_as(&rf, pf, "m", "m");
    tinfo e = tensor_of("m", EMBED);
    int kind_ok = e.model_kind == TVS_MODEL_DELTA, base_ok = tvs_id_eq(&e.model_base, &rb.model);
    tvs_gc_result g;
    tt_ok(tvs_gc(&g, s, 0));
    assert_exports("m", pf);
    assert_fsck_clean();
    gm_free(&b);
    gm_free(&f);
    free(pb);
    free(pf);
    cr_assert(kind_ok && base_ok, "m is a delta of its previous head");
    cr_assert_eq(g.freed_objects, 0, "gc keeps the old head: the delta needs it");
}

/* ---- diff */

Test(delta_models, diff_restores_a_full_model_as_a_smaller_delta_that_exports_identical)
{
    gmodel a, b;
    make_base(&a, 300);
    make_ft(&b, &a, 301);
    char *pa = write_model(&a, "a"), *pb = write_model(&b, "b");
    tvs_import_result ra, rb, rc;
    import_as(&ra, pa, "a", NULL);
    import_as(&rb, pb, "b", NULL);
    tt_ok(tvs_diff(&rc, s, "a", "b", "b-on-a", NULL));
    assert_exports("b-on-a", pb);
    cr_assert_lt(rc.written, rb.written, "the delta (%llu bytes) is smaller than the full "
                 "model (%llu)", (unsigned long long)rc.written, (unsigned long long)rb.written);
    cr_assert_eq(rc.n_delta, 4);
    cr_assert_eq(rc.n_unchanged, 1);
    tinfo e = tensor_of("b-on-a", EMBED);
    cr_assert_eq(e.model_kind, TVS_MODEL_DELTA);
    cr_assert(tvs_id_eq(&e.model_base, &ra.model));
    tinfo ae = tensor_of("a", EMBED);
    cr_assert(tvs_id_eq(&e.t.base, &ae.id));
    /* the delta no longer needs b */
    rm_ref("b");
    tvs_gc_result g;
    tt_ok(tvs_gc(&g, s, 0));
    assert_exports("b-on-a", pb);
    gm_free(&a);
    gm_free(&b);
    free(pa);
    free(pb);
}

Test(delta_models, diff_of_refs_that_do_not_exist_is_enotfound_and_writes_nothing)
{
    gmodel a;
    make_base(&a, 1);
    char *pa = write_model(&a, "a");
    import_as(NULL, pa, "a", NULL);
    tt_snapshot s0;
    tvs_import_result r;
    tt_ok(tt_snapshot_take(&s0, s));
    tt_fails(tvs_diff(&r, s, "a", "nope", "d", NULL), TVS_ENOTFOUND);
    tt_fails(tvs_diff(&r, s, "nope", "a", "d", NULL), TVS_ENOTFOUND);
    tt_fails(tvs_diff(&r, s, "a", "a", "bad name!", NULL), TVS_EINVAL);
    assert_unchanged(&s0, "a failed diff");
    tt_snapshot_dispose(&s0);
    gm_free(&a);
    free(pa);
}

/* The checksum index must keep naming a live tensor for every checksum:
 * here b's full tensors are collected while the delta tensors of b-on-a,
 * which have the same checksums, stay. */
Test(delta_models, gc_after_diff_keeps_the_checksum_index_complete)
{
    gmodel a, b;
    make_base(&a, 310);
    make_ft(&b, &a, 311);
    char *pa = write_model(&a, "a"), *pb = write_model(&b, "b");
    gm_free(&a);
    gm_free(&b);
    import_as(NULL, pa, "a", NULL);
    import_as(NULL, pb, "b", NULL);
    tvs_import_result r;
    tt_ok(tvs_diff(&r, s, "a", "b", "b-on-a", NULL));
    rm_ref("b");
    tvs_gc_result g;
    tt_ok(tvs_gc(&g, s, 0));
    char *out = tt_fmt("%s/b-on-a.out", dir);
    tt_ok(tt_export(s, "b-on-a", out));
    char why[512];
    int same = tt_files_equal(pb, out, why, sizeof why);
    free(out);
    free(pa);
    free(pb);
    cr_assert_eq(same, 1, "%s", why);
    assert_fsck_clean();
}

/* ... so that the file of b is still recognized after b's ref is gone:
 * importing it again stores no tensor. */
Test(delta_models, after_diff_and_gc_the_same_file_still_deduplicates)
{
    gmodel a, b;
    make_base(&a, 320);
    make_ft(&b, &a, 321);
    char *pa = write_model(&a, "a"), *pb = write_model(&b, "b");
    gm_free(&a);
    gm_free(&b);
    import_as(NULL, pa, "a", NULL);
    import_as(NULL, pb, "b", NULL);
    tvs_import_result r;
    tt_ok(tvs_diff(&r, s, "a", "b", "b-on-a", NULL));
    rm_ref("b");
    tvs_gc_result g;
    tt_ok(tvs_gc(&g, s, 0));
    import_as(&r, pb, "b-again", NULL);
    assert_exports("b-again", pb);
    free(pa);
    free(pb);
    cr_assert_eq(r.n_dedup + r.n_unchanged, r.n_tensors,
                 "re-importing b: %zu of %zu tensors reused (%llu bytes written)",
                 r.n_dedup + r.n_unchanged, r.n_tensors, (unsigned long long)r.written);
}

/* ---- reuse through the checksum index */

Test(delta_models, an_identical_file_imported_again_stores_no_new_tensor)
{
    import_pair();
    tt_snapshot s0, s1;
    tt_ok(tt_snapshot_take(&s0, s));
    tvs_import_result r;
    import_as(&r, p_ft, "ckpt-007", NULL);   /* full import of the fine-tune's file */
    cr_assert_eq(r.n_dedup + r.n_unchanged, r.n_tensors, "%zu dedup + %zu unchanged of %zu",
                 r.n_dedup, r.n_unchanged, r.n_tensors);
    cr_assert_eq(r.n_delta + r.n_full, 0);
    cr_assert_lt(r.written, 10240, "wrote %llu bytes", (unsigned long long)r.written);
    tt_ok(tt_snapshot_take(&s1, s));
    cr_assert_eq(s1.chunks, s0.chunks, "no new chunk");
    cr_assert_eq(s1.tensors, s0.tensors, "no new tensor");
    cr_assert_eq(s1.models, s0.models + 1, "one new model");
    assert_exports("ckpt-007", p_ft);
    /* the same, as a delta of base */
    import_as(&r, p_ft, "ckpt-007b", "base");
    cr_assert_eq(r.n_dedup + r.n_unchanged, r.n_tensors);
    cr_assert_lt(r.written, 10240);
    assert_exports("ckpt-007b", p_ft);
    tt_snapshot_dispose(&s0);
    tt_snapshot_dispose(&s1);
    free_pair();
}

Test(delta_models, the_checksum_index_names_a_tensor_with_that_checksum)
{
    import_pair();
    const char *names[] = { EMBED, ATTN, NORM, MLP, POS, VOCAB, HEAD };
    tvs_txn *txn;
    for (size_t i = 0; i < 7; i++) {
        tinfo t = tensor_of("ft", names[i]);
        tvs_id found;
        tvs_tensor_obj ft;
        tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
        tt_ok(tvs_sums_get(&found, txn, &t.t.checksum));
        tt_ok(tvs_tensor_load(&ft, txn, &found));
        cr_assert(tvs_id_eq(&ft.checksum, &t.t.checksum), "%s: the entry names a tensor "
                  "with other bytes", names[i]);
        tvs_txn_end(txn);
    }
    /* a checksum nothing has */
    tvs_id none;
    memset(&none, 0x5a, sizeof none);
    tvs_id found;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    cr_assert_eq(tvs_sums_get(&found, txn, &none), TVS_ENOTFOUND);
    tvs_txn_end(txn);
    free_pair();
}

/* ---- the lineage index */

typedef struct {
    tvs_id to[16];
    int rel[16];
    size_t n;
} edges;

static int collect_edge(const tvs_id *from, int rel, const tvs_id *to, void *p)
{
    edges *e = p;
    if (e->n < 16) {
        e->to[e->n] = *to;
        e->rel[e->n] = rel;
    }
    e->n++;
    return 0;
}

static edges lineage_of(const tvs_id *from, int rel)
{
    edges e;
    tvs_txn *txn;
    memset(&e, 0, sizeof e);
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tt_ok(tvs_lineage_foreach(txn, from, rel, collect_edge, &e));
    tvs_txn_end(txn);
    return e;
}

static int has_edge(const edges *e, const tvs_id *to)
{
    for (size_t i = 0; i < e->n && i < 16; i++)
        if (tvs_id_eq(&e->to[i], to))
            return 1;
    return 0;
}

typedef struct {
    char names[512];
    int n;
} dep_list;

static int collect_dep(const char *ref, const tvs_id *delta, void *p)
{
    dep_list *d = p;
    size_t len = strlen(d->names);
    snprintf(d->names + len, sizeof d->names - len, "%s%s", len ? "," : "", ref);
    d->n++;
    return 0;
}

static dep_list dependents_of(const char *ref)
{
    dep_list d = { "", 0 };
    tvs_id id = ref_id(ref);
    tvs_txn *txn;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tt_ok(tvs_dependents(txn, &id, collect_dep, &d));
    tvs_txn_end(txn);
    return d;
}

Test(delta_models, the_lineage_index_lists_exactly_the_deltas_of_a_base)
{
    gmodel b, f1, f2, f3, o;
    make_base(&b, 400);
    make_ft(&f1, &b, 401);
    make_ft(&f2, &b, 402);
    make_step(&f3, &f1, 403);
    make_base(&o, 404);
    char *pb = write_model(&b, "b"), *p1 = write_model(&f1, "f1"), *p2 = write_model(&f2, "f2");
    char *p3 = write_model(&f3, "f3"), *po = write_model(&o, "o");
    tvs_import_result rb, r1, r2, r3, ro;
    import_as(&rb, pb, "base", NULL);
    import_as(&r1, p1, "ft1", "base");
    import_as(&r2, p2, "ft2", "base");
    import_as(&r3, p3, "ft3", "ft1");   /* a delta of a delta: not base's */
    import_as(&ro, po, "other", NULL);

    edges e = lineage_of(&rb.model, TVS_REL_DELTA);
    cr_assert_eq(e.n, 2, "base has two deltas, found %zu", e.n);
    cr_assert(has_edge(&e, &r1.model));
    cr_assert(has_edge(&e, &r2.model));
    e = lineage_of(&r1.model, TVS_REL_DELTA);
    cr_assert_eq(e.n, 1);
    cr_assert(has_edge(&e, &r3.model));
    e = lineage_of(&ro.model, 0);
    cr_assert_eq(e.n, 0, "nothing derives from other");
    e = lineage_of(&r3.model, 0);
    cr_assert_eq(e.n, 0);

    dep_list d = dependents_of("base");
    cr_assert_eq(d.n, 2, "dependents of base: %s", d.names);
    cr_assert(strstr(d.names, "ft1") && strstr(d.names, "ft2"), "%s", d.names);
    d = dependents_of("ft1");
    cr_assert_eq(d.n, 1);
    cr_assert_str_eq(d.names, "ft3");
    d = dependents_of("other");
    cr_assert_eq(d.n, 0);

    /* a dead delta's entry goes with it */
    rm_ref("ft2");
    tvs_gc_result g;
    tt_ok(tvs_gc(&g, s, 0));
    e = lineage_of(&rb.model, TVS_REL_DELTA);
    cr_assert_eq(e.n, 1, "after gc base has one delta, found %zu", e.n);
    cr_assert(has_edge(&e, &r1.model));
    d = dependents_of("base");
    cr_assert_str_eq(d.names, "ft1");
    assert_fsck_clean();

    gm_free(&b);
    gm_free(&f1);
    gm_free(&f2);
    gm_free(&f3);
    gm_free(&o);
    free(pb);
    free(p1);
    free(p2);
    free(p3);
    free(po);
}

Test(delta_models, a_new_version_and_a_parent_are_parent_edges)
{
    gmodel b, b2;
    make_base(&b, 500);
    make_step(&b2, &b, 501);
    char *pb = write_model(&b, "b"), *pb2 = write_model(&b2, "b2");
    tvs_import_result r1, r2, r3;
    import_as(&r1, pb, "v1", NULL);
    tvs_import_opts o = TVS_IMPORT_OPTS_INIT;
    const char *parents[] = { "v1" };
    o.parents = parents;
    o.n_parents = 1;
    tt_ok(tvs_import(&r2, s, pb2, "v2", &o));
    /* --parent without --base: a full model, stored against its parent */
    tinfo e = tensor_of("v2", EMBED);
    cr_assert_eq(e.model_kind, TVS_MODEL_FULL);
    cr_assert_eq(e.t.encoding, TVS_ENC_DELTA);
    tinfo v1e = tensor_of("v1", EMBED);
    cr_assert(tvs_id_eq(&e.t.base, &v1e.id));
    cr_assert_gt(r2.n_delta, 0);
    edges p = lineage_of(&r1.model, TVS_REL_PARENT);
    cr_assert_eq(p.n, 1);
    cr_assert(has_edge(&p, &r2.model));
    cr_assert_eq(lineage_of(&r1.model, TVS_REL_DELTA).n, 0, "a full model is no delta");
    assert_exports("v2", pb2);
    /* removing v1 is not refused (v2 is no delta), and gc keeps what v2 needs */
    cr_assert_eq(dependents_of("v1").n, 0);
    rm_ref("v1");
    tvs_gc_result g;
    tt_ok(tvs_gc(&g, s, 0));
    assert_exports("v2", pb2);
    assert_fsck_clean();
    /* re-importing under the same name: the old head is the new one's parent */
    tt_ok(tvs_import(&r3, s, pb, "v2", NULL));
    p = lineage_of(&r2.model, TVS_REL_PARENT);
    cr_assert(has_edge(&p, &r3.model));
    gm_free(&b);
    gm_free(&b2);
    free(pb);
    free(pb2);
}

/* ---- rm, gc, fsck around deltas */

Test(delta_models, rm_of_a_base_is_refused_while_a_delta_uses_it)
{
    import_pair();
    tt_run r;
    run_tvs(&r, "rm", "base", NULL);
    cr_assert_eq(r.code, 7, "exit %d, stderr: %s", r.code, r.err);
    cr_assert(strstr(r.err, "ft"), "the message names the delta: %s", r.err);
    tt_run_dispose(&r);
    ref_id("base");   /* still there */
    /* with a second name for the same model, removing one name is fine */
    tvs_id bid = ref_id("base");
    tvs_txn *txn;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_WRITE));
    tt_ok(tvs_ref_set(txn, "base-alias", &bid, NULL, "alias"));
    tt_ok(tvs_txn_commit(txn));
    run_tvs(&r, "rm", "base", NULL);
    cr_assert_eq(r.code, 0, "exit %d, stderr: %s", r.code, r.err);
    tt_run_dispose(&r);
    run_tvs(&r, "rm", "base-alias", NULL);
    cr_assert_eq(r.code, 7, "the last name of the base is protected: %s", r.err);
    tt_run_dispose(&r);
    free_pair();
}

Test(delta_models, rm_force_then_gc_keeps_everything_the_delta_needs)
{
    import_pair();
    tt_run r;
    run_tvs(&r, "rm", "--force", "base", NULL);
    cr_assert_eq(r.code, 0, "exit %d, stderr: %s", r.code, r.err);
    tt_run_dispose(&r);
    run_tvs(&r, "gc", NULL);
    cr_assert_eq(r.code, 0, "exit %d, stderr: %s", r.code, r.err);
    tt_run_dispose(&r);
    assert_exports("ft", p_ft);
    assert_fsck_clean();
    run_tvs(&r, "fsck", NULL);
    cr_assert_eq(r.code, 0, "tvs fsck: %s", r.err);
    tt_run_dispose(&r);
    free_pair();
}

Test(delta_models, gc_after_deleting_a_delta_frees_its_objects_and_keeps_the_base)
{
    make_base(&g_base, 100);
    make_ft(&g_ft, &g_base, 200);
    p_base = write_model(&g_base, "base");
    p_ft = write_model(&g_ft, "ft");
    import_as(&r_base, p_base, "base", NULL);
    tt_snapshot s0, s1, s2;
    tt_ok(tt_snapshot_take(&s0, s));
    import_as(&r_ft, p_ft, "ft", "base");
    tt_ok(tt_snapshot_take(&s1, s));
    size_t added = tt_snapshot_minus(&s1, &s0);
    cr_assert_gt(s1.chunks, s0.chunks, "the delta added chunks");
    rm_ref("ft");
    tvs_gc_result g;
    tt_ok(tvs_gc(&g, s, 0));
    cr_assert_eq(g.freed_objects, added, "freed %llu objects, the delta added %zu",
                 (unsigned long long)g.freed_objects, added);
    cr_assert_eq(g.freed_bytes, s1.bytes - s0.bytes);
    tt_ok(tt_snapshot_take(&s2, s));
    char why[4096];
    cr_assert(tt_snapshot_equal(&s0, &s2, why, sizeof why), "after gc: %s", why);
    assert_exports("base", p_base);
    cr_assert_eq(lineage_of(&r_base.model, 0).n, 0, "the delta's lineage entry is gone");
    assert_fsck_clean();
    tt_snapshot_dispose(&s0);
    tt_snapshot_dispose(&s1);
    tt_snapshot_dispose(&s2);
    free_pair();
}

Test(delta_models, a_corrupted_delta_chunk_is_found_by_fsck_and_export_refuses)
{
    import_pair();
    tvs_id cid;
    tt_ok(tt_find_chunk(&cid, s, "ft", ATTN, 0));
    tvs_store_close(s);
    s = NULL;
    tt_ok(tt_corrupt_object(dir, &cid, -3, 0x10));
    tt_ok(tvs_store_open(&s, dir, NULL));
    tvs_fsck_result fr;
    report rep = { .n = 0 };
    tt_ok(tvs_fsck(&fr, s, collect_line, &rep));
    cr_assert_gt(fr.problems, 0, "fsck must find the damaged delta chunk");
    cr_assert(report_has(&rep, "ref 'ft'"), "a problem is reported under ref 'ft'; first: %s",
              rep.n ? rep.lines[0] : "");
    char *out = path_in("ft.out");
    tt_fails(tt_export(s, "ft", out), TVS_ECORRUPT);
    cr_assert(!tt_exists(out), "no file is left behind");
    assert_exports("base", p_base);   /* the base does not need the delta */
    free(out);
    free_pair();
}

Test(delta_models, a_corrupted_base_chunk_breaks_the_delta_too)
{
    import_pair();
    tvs_id cid;
    tt_ok(tt_find_chunk(&cid, s, "base", ATTN, 0));
    tvs_store_close(s);
    s = NULL;
    tt_ok(tt_corrupt_object(dir, &cid, -3, 0x10));
    tt_ok(tvs_store_open(&s, dir, NULL));
    tvs_fsck_result fr;
    report rep = { .n = 0 };
    tt_ok(tvs_fsck(&fr, s, collect_line, &rep));
    cr_assert(report_has(&rep, "ref 'ft'") || report_has(&rep, "ref 'base'"));
    char *out = path_in("ft.out");
    tt_fails(tt_export(s, "ft", out), TVS_ECORRUPT);
    cr_assert(!tt_exists(out));
    free(out);
    free_pair();
}

/* ---- the real model family */

static int have_models(void)
{
    struct stat st;
    return stat(TVS_SHARED_MODELS "/base-v1.safetensors", &st) == 0 &&
           stat(TVS_SHARED_MODELS "/ft-math.safetensors", &st) == 0;
}

#define SKIP_WITHOUT_MODELS()                                                         \
    do {                                                                              \
        if (!have_models()) {                                                         \
            printf("skipped: no shared models in %s\n", TVS_SHARED_MODELS);           \
            cr_skip_test("no shared models: %s/base-v1.safetensors is missing",      \
                         TVS_SHARED_MODELS);                                          \
        }                                                                             \
    } while (0)

#define SM(f) TVS_SHARED_MODELS "/" f

Test(delta_models, real_fine_tunes_are_deltas_that_export_identical)
{
    SKIP_WITHOUT_MODELS();
    tvs_import_result rb, rm, rc;
    import_as(&rb, SM("base-v1.safetensors"), "base-v1", NULL);
    import_as(&rm, SM("ft-math.safetensors"), "ft-math", "base-v1");
    import_as(&rc, SM("ft-code.safetensors"), "ft-code", "base-v1");
    assert_exports("ft-math", SM("ft-math.safetensors"));
    assert_exports("ft-code", SM("ft-code.safetensors"));
    cr_assert_eq(rm.n_tensors, 39);
    cr_assert_eq(rm.n_full, 0, "every tensor of ft-math matches base-v1's layout");
    cr_assert_lt(rm.written, rb.written * 85 / 100, "ft-math as a delta: %llu bytes, base-v1 "
                 "%llu", (unsigned long long)rm.written, (unsigned long long)rb.written);
    /* ckpt-007 is ft-math: it costs only its model object */
    struct stat st;
    if (stat(SM("ckpt/ckpt-007.safetensors"), &st) == 0) {
        tvs_import_result r7;
        import_as(&r7, SM("ckpt/ckpt-007.safetensors"), "ckpt-007", NULL);
        cr_assert_eq(r7.n_dedup + r7.n_unchanged, r7.n_tensors);
        cr_assert_lt(r7.written, 10240, "ckpt-007 wrote %llu bytes",
                     (unsigned long long)r7.written);
        assert_exports("ckpt-007", SM("ckpt/ckpt-007.safetensors"));
    }
    edges e = lineage_of(&rb.model, TVS_REL_DELTA);
    cr_assert_eq(e.n, 2);
    assert_fsck_clean();
}

Test(delta_models, real_base_auto_picks_base_v2_for_ft_math_v2_and_base_v1_for_ft_math)
{
    SKIP_WITHOUT_MODELS();
    struct stat st;
    if (stat(SM("base-v2.safetensors"), &st) || stat(SM("ft-math-v2.safetensors"), &st))
        cr_skip_test("base-v2 or ft-math-v2 is missing from %s", TVS_SHARED_MODELS);
    tvs_import_result r1, r2, r;
    import_as(&r2, SM("base-v2.safetensors"), "base-v2", NULL);
    import_as(&r1, SM("base-v1.safetensors"), "base-v1", NULL);
    import_as(&r, SM("ft-math-v2.safetensors"), "ft-math-v2", "auto");
    cr_assert(tvs_id_eq(&r.base, &r2.model), "ft-math-v2 came from base-v2 (%s)", r.base_reason);
    cr_assert_neq(r.base_reason[0], 0);
    import_as(&r, SM("ft-math.safetensors"), "ft-math", "auto");
    cr_assert(tvs_id_eq(&r.base, &r1.model), "ft-math came from base-v1 (%s)", r.base_reason);
    assert_exports("ft-math", SM("ft-math.safetensors"));
    assert_exports("ft-math-v2", SM("ft-math-v2.safetensors"));
}

Test(delta_models, real_diff_of_two_full_models_is_smaller_and_identical)
{
    SKIP_WITHOUT_MODELS();
    tvs_import_result ra, rb, rc;
    import_as(&ra, SM("base-v1.safetensors"), "base-v1", NULL);
    import_as(&rb, SM("ft-math.safetensors"), "ft-math", NULL);
    tt_ok(tvs_diff(&rc, s, "base-v1", "ft-math", "ft-math-delta", NULL));
    assert_exports("ft-math-delta", SM("ft-math.safetensors"));
    cr_assert_lt(rc.written, rb.written * 85 / 100, "diff %llu bytes, full %llu",
                 (unsigned long long)rc.written, (unsigned long long)rb.written);
}
