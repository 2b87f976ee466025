/*
 * Store fixtures: a fresh store in a temporary folder, a snapshot of every
 * object id and ref (to check that a failed operation changed nothing), and
 * damaging a stored value through liblmdb directly, the way a disk error
 * would, so that fsck and export have something to find
 * (tests/support/support.h).
 */
#include "tests/support/support.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/model.h"
#include "format/codec.h"

int tt_store_new(char **dir_out, tvs_store **store_out)
{
    *dir_out = tt_mkdtemp();
    *store_out = NULL;
    if (!*dir_out)
        return tvs__fail(TVS_EIO, "mkdtemp failed");
    int rc = tvs_store_init(*dir_out);
    if (!rc)
        rc = tvs_store_open(store_out, *dir_out, NULL);
    return rc;
}

static int id_cmp(const void *a, const void *b) { return memcmp(a, b, TVS_ID_LEN); }

static int snap_obj(const tvs_id *id, tvs_span b, void *p)
{
    tt_snapshot *s = p;
    tvs_id *ids = realloc(s->ids, (s->n + 1) * sizeof *ids);
    if (!ids)
        return TVS_ENOMEM;
    s->ids = ids;
    s->ids[s->n++] = *id;
    s->bytes += b.len;
    int type = b.len ? b.ptr[0] : 0;
    s->chunks += type == TVS_OBJ_CHUNK;
    s->tensors += type == TVS_OBJ_TENSOR;
    s->models += type == TVS_OBJ_MODEL;
    return 0;
}

static int snap_ref(const char *name, const tvs_id *id, void *p)
{
    tt_snapshot *s = p;
    char hex[TVS_ID_HEX + 1];
    tvs_id_hex(hex, id);
    char *line = tt_fmt("%s%s %s\n", s->refs ? s->refs : "", name, hex);
    if (!line)
        return TVS_ENOMEM;
    free(s->refs);
    s->refs = line;
    return 0;
}

int tt_snapshot_take(tt_snapshot *out, tvs_store *s)
{
    tvs_txn *txn;
    memset(out, 0, sizeof *out);
    int rc = tvs_txn_begin(&txn, s, TVS_TXN_READ);
    if (rc)
        return rc;
    rc = tvs_obj_foreach(txn, snap_obj, out);
    if (!rc)
        rc = tvs_ref_foreach(txn, NULL, snap_ref, out);
    tvs_txn_end(txn);
    if (!out->refs)
        out->refs = strdup("");
    if (out->n)
        qsort(out->ids, out->n, sizeof *out->ids, id_cmp);
    return rc;
}

int tt_snapshot_equal(const tt_snapshot *a, const tt_snapshot *b, char *why, size_t cap)
{
    if (strcmp(a->refs, b->refs)) {
        snprintf(why, cap, "refs changed:\n--- before\n%s--- after\n%s", a->refs, b->refs);
        return 0;
    }
    if (a->n != b->n || a->bytes != b->bytes) {
        snprintf(why, cap, "objects changed: %zu objects / %llu bytes before, %zu / %llu "
                 "after", a->n, (unsigned long long)a->bytes, b->n,
                 (unsigned long long)b->bytes);
        return 0;
    }
    for (size_t i = 0; i < a->n; i++)
        if (!tvs_id_eq(&a->ids[i], &b->ids[i])) {
            snprintf(why, cap, "object ids changed (same count)");
            return 0;
        }
    return 1;
}

size_t tt_snapshot_minus(const tt_snapshot *b, const tt_snapshot *a)
{
    size_t n = 0;
    for (size_t i = 0; i < b->n; i++)
        n += a->n == 0 || bsearch(&b->ids[i], a->ids, a->n, sizeof *a->ids, id_cmp) == NULL;
    return n;
}

void tt_snapshot_dispose(tt_snapshot *s)
{
    free(s->ids);
    free(s->refs);
    memset(s, 0, sizeof *s);
}

int tt_corrupt_object(const char *dir, const tvs_id *id, long off, uint8_t mask)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/" TVS_STORE_DIR, dir);
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    int mrc;
    if ((mrc = mdb_env_create(&env)) || (mrc = mdb_env_set_maxdbs(env, 16)) ||
        (mrc = mdb_env_open(env, path, 0, 0644)) ||
        (mrc = mdb_txn_begin(env, NULL, 0, &txn)) ||
        (mrc = mdb_dbi_open(txn, "objects", 0, &dbi)))
        goto out;
    MDB_val k = { TVS_ID_LEN, (void *)id->b }, v;
    if ((mrc = mdb_get(txn, dbi, &k, &v)))
        goto out;
    size_t at = off < 0 ? v.mv_size - (size_t)(-off) : (size_t)off;
    if (at >= v.mv_size) {
        mrc = EINVAL;
        goto out;
    }
    uint8_t *copy = malloc(v.mv_size);
    if (!copy) {
        mrc = ENOMEM;
        goto out;
    }
    memcpy(copy, v.mv_data, v.mv_size);
    copy[at] ^= mask;
    MDB_val nv = { v.mv_size, copy };
    mrc = mdb_put(txn, dbi, &k, &nv, 0);
    free(copy);
    if (!mrc) {
        mrc = mdb_txn_commit(txn);
        txn = NULL;
    }
out:
    if (txn)
        mdb_txn_abort(txn);
    if (env)
        mdb_env_close(env);
    if (mrc)
        return tvs__fail(TVS_EIO, "corrupting an object: %s", mdb_strerror(mrc));
    return 0;
}

int tt_find_chunk(tvs_id *out, tvs_store *s, const char *ref, const char *tensor_name,
                  uint32_t chunk)
{
    tvs_txn *txn;
    tvs_id mid;
    tvs_model_obj m;
    int rc = tvs_txn_begin(&txn, s, TVS_TXN_READ);
    if (rc)
        return rc;
    if ((rc = tvs_resolve(&mid, txn, ref)) || (rc = tvs_model_load(&m, txn, &mid))) {
        tvs_txn_end(txn);
        return rc;
    }
    rc = tvs__fail(TVS_ENOTFOUND, "no tensor '%s' in '%s'", tensor_name, ref);
    for (size_t i = 0; i < m.n_files; i++) {
        const tvs_model_file *f = &m.files[i];
        for (size_t j = 0; j < f->n_tensors; j++) {
            const tvs_span *nm = &f->tensors[j].name;
            if (nm->len != strlen(tensor_name) || memcmp(nm->ptr, tensor_name, nm->len))
                continue;
            tvs_tensor_obj t;
            if ((rc = tvs_tensor_load(&t, txn, &f->tensors[j].id)))
                goto out;
            if (chunk >= t.n_chunks) {
                rc = tvs__fail(TVS_ENOTFOUND, "tensor '%s' has %u chunks", tensor_name,
                               t.n_chunks);
                goto out;
            }
            tvs_tensor_chunk_id(out, &t, chunk);
            rc = 0;
            goto out;
        }
    }
out:
    tvs_model_dispose(&m);
    tvs_txn_end(txn);
    return rc;
}

int tt_import(tvs_id *out, tvs_store *s, const char *path, const char *ref)
{
    tvs_import_result res;
    memset(&res, 0, sizeof res);
    int rc = tvs_import(&res, s, path, ref, NULL);
    if (!rc && out)
        *out = res.model;
    return rc;
}

int tt_import_with(tvs_store *s, const char *path, const char *ref, const char *base,
                   const char *parent, int threads)
{
    tvs_import_opts o = TVS_IMPORT_OPTS_INIT;
    tvs_import_result r;
    const char *parents[1] = { parent };
    o.base = base;
    if (parent) {
        o.parents = parents;
        o.n_parents = 1;
    }
    o.threads = threads;
    return tvs_import(&r, s, path, ref, &o);
}

int tt_export(tvs_store *s, const char *spec, const char *path)
{
    return tvs_export(s, spec, path, NULL);
}
