/*
 * Store statistics: logical bytes (what the refs' models would be as
 * files), stored bytes, and how much deduplication saves. Each model's
 * standalone size is the bytes of every object it reaches; its own bytes
 * are those no other ref's model reaches.
 */
#include "engine/maint.h"
#include "engine/model.h"
#include "engine/store_int.h"

#include <stdio.h>
#include <sys/stat.h>

typedef struct {
    tvs_txn *txn;
    tvs_stats *st;
    tvs__idset seen;        /* per model */
    tvs__idset all;         /* reached by any ref */
    uint64_t acc;
} stats_state;

static int count_obj(const tvs_id *id, tvs_span b, void *p)
{
    tvs_stats *st = p;
    st->objects++;
    st->stored += b.len;
    int type = b.len ? b.ptr[0] : 0;
    st->chunks += type == TVS_OBJ_CHUNK;
    st->tensors += type == TVS_OBJ_TENSOR;
    st->models += type == TVS_OBJ_MODEL;
    return 0;
}

static int sum_fn(void *p, const tvs_id *id, int type, int status, tvs_span b)
{
    stats_state *s = p;
    s->acc += b.len;
    return 0;
}

static int model_fn(const char *name, const tvs_id *id, void *p)
{
    stats_state *s = p;
    tvs_stats *st = s->st;
    tvs_stats_model *m = tvs_realloc(st->refs, (st->n_refs + 1) * sizeof *m);
    if (!m)
        return tvs__fail(TVS_ENOMEM, "out of memory");
    st->refs = m;
    m = &st->refs[st->n_refs++];
    memset(m, 0, sizeof *m);
    snprintf(m->name, sizeof m->name, "%s", name);
    m->id = *id;
    tvs_model_obj mo;
    int rc = tvs_model_load(&mo, s->txn, id);
    if (rc)
        return tvs__failctx(rc, "ref '%s'", name);
    m->kind = mo.kind;
    m->base = mo.base;
    m->time = mo.time;
    m->flags = mo.flags;
    for (size_t i = 0; i < mo.n_files; i++) {
        m->n_tensors += mo.files[i].n_tensors;
        for (size_t j = 0; j < mo.files[i].n_tensors; j++) {
            tvs_tensor_obj t;
            if (tvs_tensor_load(&t, s->txn, &mo.files[i].tensors[j].id) == 0 &&
                tvs_dtype_bits(t.dtype))
                m->params += t.nbytes * 8 / tvs_dtype_bits(t.dtype);
        }
    }
    rc = tvs_model_logical_size(&m->logical, s->txn, &mo);
    tvs_model_dispose(&mo);
    if (rc)
        return rc;
    tvs__idset_dispose(&s->seen);
    s->acc = 0;
    if ((rc = tvs__walk(s->txn, id, &s->seen, sum_fn, s)))
        return rc;
    m->stored = s->acc;
    m->own = m->stored;
    if (m->kind == TVS_MODEL_DELTA) {
        /* the base's closure is inside the delta's: the difference is its own */
        tvs__idset_dispose(&s->seen);
        s->acc = 0;
        if ((rc = tvs__walk(s->txn, &m->base, &s->seen, sum_fn, s)))
            return rc;
        m->own = m->stored > s->acc ? m->stored - s->acc : 0;
    }
    return 0;
}

int tvs_stats_get(tvs_stats *st, tvs_store *store)
{
    stats_state s = { 0 };
    memset(st, 0, sizeof *st);
    s.st = st;
    int rc = tvs_txn_begin(&s.txn, store, TVS_TXN_READ);
    if (!rc) rc = tvs_obj_foreach(s.txn, count_obj, st);
    if (!rc) rc = tvs_ref_foreach(s.txn, NULL, model_fn, &s);
    for (size_t i = 0; !rc && i < st->n_refs; i++) {
        int dup = 0;
        for (size_t j = 0; j < i; j++)
            dup |= tvs_id_eq(&st->refs[j].id, &st->refs[i].id);
        if (!dup) {
            st->logical += st->refs[i].logical;
            st->standalone += st->refs[i].stored;
        }
        s.acc = 0;
        rc = tvs__walk(s.txn, &st->refs[i].id, &s.all, sum_fn, &s);
        st->reachable += s.acc;
    }
    /* attribute bytes to models, each after its base and parents: what each added */
    size_t *order = NULL;
    tvs_id *ids = NULL;
    uint64_t *added = NULL;
    if (!rc && st->n_refs) {
        order = tvs_calloc(st->n_refs, sizeof *order);
        ids = tvs_calloc(st->n_refs, sizeof *ids);
        added = tvs_calloc(st->n_refs, sizeof *added);
        if (!order || !ids || !added)
            rc = tvs__fail(TVS_ENOMEM, "out of memory");
        for (size_t i = 0; !rc && i < st->n_refs; i++)
            ids[i] = st->refs[i].id;
        if (!rc)
            rc = tvs_models_order(order, s.txn, ids, st->n_refs);
        for (size_t i = 0; !rc && i < st->n_refs; i++)
            ids[i] = st->refs[order[i]].id;
        if (!rc)
            rc = tvs_attribute_bytes(added, s.txn, ids, st->n_refs);
        for (size_t i = 0; !rc && i < st->n_refs; i++)
            st->refs[order[i]].added = added[i];
    }
    tvs_free(order);
    tvs_free(ids);
    tvs_free(added);
    tvs_txn_end(s.txn);
    tvs__idset_dispose(&s.seen);
    tvs__idset_dispose(&s.all);
    char p[4096];
    struct stat sb;
    snprintf(p, sizeof p, "%s/data.mdb", tvs_store_path(store));
    if (!rc && stat(p, &sb) == 0)   /* allocated, not apparent: the map is sparse */
        st->file_bytes = (uint64_t)sb.st_blocks * 512;
    if (rc)
        tvs_stats_dispose(st);
    return rc;
}

void tvs_stats_dispose(tvs_stats *st)
{
    tvs_free(st->refs);
    st->refs = NULL;
    st->n_refs = 0;
}

int tvs_attribute_bytes(uint64_t *added, tvs_txn *txn, const tvs_id *models, size_t n)
{
    stats_state s = { 0 };
    int rc = 0;
    s.txn = txn;
    for (size_t i = 0; !rc && i < n; i++) {
        s.acc = 0;
        rc = tvs__walk(txn, &models[i], &s.seen, sum_fn, &s);
        added[i] = s.acc;
    }
    tvs__idset_dispose(&s.seen);
    return rc;
}

int tvs_models_order(size_t *order, tvs_txn *txn, const tvs_id *ids, size_t n)
{
    int64_t *time = tvs_calloc(n + 1, sizeof *time);
    char *placed = tvs_calloc(n + 1, 1);
    size_t *ups = tvs_calloc(n * 9 + 1, sizeof *ups), *n_ups = tvs_calloc(n + 1, sizeof *n_ups);
    int rc = (!time || !placed || !ups || !n_ups) ? tvs__fail(TVS_ENOMEM, "out of memory") : 0;
    /* up to 8 ups (base, parents) per model that are among the n */
    for (size_t i = 0; !rc && i < n; i++) {
        tvs_model_obj m;
        if ((rc = tvs_model_load(&m, txn, &ids[i])))
            break;
        time[i] = m.time;
        for (size_t j = 0; j < n; j++) {
            int up = m.kind == TVS_MODEL_DELTA && tvs_id_eq(&m.base, &ids[j]);
            for (size_t k = 0; k < m.n_parents; k++)
                up |= tvs_id_eq(&m.parents[k], &ids[j]);
            if (up && j != i && n_ups[i] < 8)
                ups[i * 9 + n_ups[i]++] = j;
        }
        tvs_model_dispose(&m);
    }
    for (size_t k = 0; !rc && k < n; k++) {
        size_t pick = n;
        for (size_t i = 0; i < n; i++) {
            if (placed[i])
                continue;
            int ready = 1;
            for (size_t u = 0; u < n_ups[i]; u++)
                ready &= placed[ups[i * 9 + u]];
            if (ready && (pick == n || time[i] < time[pick]))
                pick = i;
        }
        if (pick == n)   /* a cycle cannot happen with content ids; be safe */
            for (size_t i = 0; i < n && pick == n; i++)
                if (!placed[i])
                    pick = i;
        placed[pick] = 1;
        order[k] = pick;
    }
    tvs_free(time);
    tvs_free(placed);
    tvs_free(ups);
    tvs_free(n_ups);
    return rc;
}
