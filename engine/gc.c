/*
 * The reachability walk, and garbage collection.
 *
 * gc runs mark and sweep inside one write transaction, so no ref can move
 * between the two; it also takes the store lock exclusively, because an
 * import writes its chunks before the ref that makes them reachable.
 */
#include "engine/maint.h"
#include "engine/store_int.h"

typedef struct {
    tvs_id *ids;
    int *types;
    size_t n, cap;
} stack;

static int push(stack *s, const tvs_id *id, int type)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 256;
        tvs_id *ids = tvs_realloc(s->ids, cap * sizeof *ids);
        if (!ids)
            return tvs__fail(TVS_ENOMEM, "out of memory walking the store");
        s->ids = ids;
        int *types = tvs_realloc(s->types, cap * sizeof *types);
        if (!types)
            return tvs__fail(TVS_ENOMEM, "out of memory walking the store");
        s->types = types;
        s->cap = cap;
    }
    s->ids[s->n] = *id;
    s->types[s->n++] = type;
    return 0;
}

typedef struct { stack *st; tvs__idset *seen; } push_ctx;

static int push_child(const tvs_id *id, int type, void *p)
{
    push_ctx *c = p;
    int added = tvs__idset_add(c->seen, id);
    if (added < 0)
        return added;
    return added ? push(c->st, id, type) : 0;
}

int tvs__walk(tvs_txn *txn, const tvs_id *root, tvs__idset *seen, tvs__walk_fn fn,
              void *payload)
{
    stack st = { 0 };
    push_ctx pc = { &st, seen };
    int rc = push_child(root, TVS_OBJ_MODEL, &pc);
    while (!rc && st.n) {
        tvs_id id = st.ids[--st.n];
        int type = st.types[st.n];
        tvs_span b;
        rc = tvs_obj_get(&b, txn, &id);
        if (rc == TVS_ENOTFOUND) {
            rc = fn(payload, &id, type, TVS_ENOTFOUND, (tvs_span){ NULL, 0 });
            continue;
        }
        if (rc)
            break;
        if (b.len == 0 || b.ptr[0] != type) {
            tvs__fail(TVS_ECORRUPT, "expected a %s, found object type %d",
                      tvs_object_type_name(type), b.len ? b.ptr[0] : -1);
            rc = fn(payload, &id, type, TVS_ECORRUPT, b);
            continue;
        }
        int crc = tvs_object_children(b, push_child, &pc);
        if (crc == TVS_ENOMEM) {
            rc = crc;
            break;
        }
        rc = fn(payload, &id, type, crc ? TVS_ECORRUPT : 0, b);
    }
    tvs_free(st.ids);
    tvs_free(st.types);
    return rc;
}

/* ---- gc */

typedef struct {
    tvs_txn *txn;
    tvs__idset seen;
    tvs_gc_result *res;
    int dry;
    tvs_id *dead;
    size_t n_dead, cap_dead;
} gc_state;

static int mark_fn(void *p, const tvs_id *id, int type, int status, tvs_span b)
{
    gc_state *g = p;
    char hex[TVS_ID_HEX + 1];
    if (status) {
        tvs_id_hex(hex, id);
        return tvs__fail(TVS_ECORRUPT, "%s %s reached from a ref is %s; nothing was "
                         "collected (run 'tvs fsck')", tvs_object_type_name(type), hex,
                         status == TVS_ENOTFOUND ? "missing" : "damaged");
    }
    g->res->kept_objects++;
    g->res->kept_bytes += b.len;
    return 0;
}

static int mark_ref(const char *name, const tvs_id *id, void *p)
{
    gc_state *g = p;
    int rc = tvs__walk(g->txn, id, &g->seen, mark_fn, g);
    return rc ? tvs__failctx(rc, "ref '%s'", name) : 0;
}

static int sweep_fn(const tvs_id *id, tvs_span b, void *p)
{
    gc_state *g = p;
    if (tvs__idset_has(&g->seen, id))
        return 0;
    g->res->freed_objects++;
    g->res->freed_bytes += b.len;
    if (g->n_dead == g->cap_dead) {
        size_t cap = g->cap_dead ? 2 * g->cap_dead : 1024;
        tvs_id *d = tvs_realloc(g->dead, cap * sizeof *d);
        if (!d)
            return tvs__fail(TVS_ENOMEM, "out of memory collecting garbage");
        g->dead = d;
        g->cap_dead = cap;
    }
    g->dead[g->n_dead++] = *id;
    return 0;
}

/* Drop the index entries that name a dead object. */
static int unindex(tvs_txn *txn, const tvs_id *id)
{
    tvs_span b;
    int rc = tvs_obj_get(&b, txn, id);
    if (rc)
        return rc;
    int type = b.len ? b.ptr[0] : 0;
    if (type == TVS_OBJ_TENSOR) {
        tvs_tensor_obj t;
        if (tvs_tensor_decode(&t, b) == 0)
            rc = tvs_sums_del(txn, &t.checksum, id);
    } else if (type == TVS_OBJ_MODEL) {
        tvs_model_obj m;
        if (tvs_model_decode(&m, b) == 0) {
            if (m.kind == TVS_MODEL_DELTA)
                rc = tvs_lineage_del(txn, &m.base, TVS_REL_DELTA, id);
            for (size_t i = 0; !rc && i < m.n_parents; i++)
                rc = tvs_lineage_del(txn, &m.parents[i], TVS_REL_PARENT, id);
            tvs_model_dispose(&m);
        }
    }
    return rc;
}

static int reindex(const tvs_id *id, tvs_span b, void *p)
{
    tvs_txn *txn = p;
    tvs_tensor_obj t;
    if (b.len == 0 || b.ptr[0] != TVS_OBJ_TENSOR || tvs_tensor_decode(&t, b))
        return 0;
    return tvs_sums_put(txn, &t.checksum, id);
}

static int gc_txn(tvs_txn *txn, void *p)
{
    gc_state *g = p;
    memset(g->res, 0, sizeof *g->res);
    tvs__idset_dispose(&g->seen);
    g->n_dead = 0;
    g->txn = txn;
    int rc = tvs_ref_foreach(txn, NULL, mark_ref, g);
    if (!rc)
        rc = tvs_obj_foreach(txn, sweep_fn, g);
    for (size_t i = 0; !rc && !g->dry && i < g->n_dead; i++) {
        if ((rc = unindex(txn, &g->dead[i])))
            break;
        rc = tvs_obj_del(txn, &g->dead[i]);
    }
    /* a checksum whose entry named a swept tensor may still be held by a
     * surviving one (a full tensor and a delta tensor of the same bytes):
     * point the entry at a survivor so imports keep deduplicating */
    if (!rc && !g->dry && g->n_dead)
        rc = tvs_obj_foreach(txn, reindex, txn);
    return rc;
}

int tvs_gc(tvs_gc_result *out, tvs_store *s, int dry_run)
{
    gc_state g = { 0 };
    g.res = out;
    g.dry = dry_run;
    int rc = tvs_store_lock(s, 1, 0);
    if (rc)
        return rc;
    if (dry_run) {
        tvs_txn *txn;
        if (!(rc = tvs_txn_begin(&txn, s, TVS_TXN_READ))) {
            rc = gc_txn(txn, &g);
            tvs_txn_end(txn);
        }
    } else {
        rc = tvs_store_write(s, 1u << 20, gc_txn, &g);
    }
    tvs_store_unlock(s);
    tvs__idset_dispose(&g.seen);
    tvs_free(g.dead);
    return rc;
}
