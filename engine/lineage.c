/* Model lineage queries: delta depth, and who depends on a base. */
#include "engine/model.h"
#include "engine/store_int.h"
#include "engine/tensor.h"

#include <stdio.h>

int tvs_model_depth(int *out, tvs_txn *txn, const tvs_id *model)
{
    tvs_model_obj m;
    tvs_tensor_chain *c = tvs_malloc(sizeof *c);
    int rc = c ? tvs_model_load(&m, txn, model) : tvs__fail(TVS_ENOMEM, "out of memory");
    if (rc) {
        tvs_free(c);
        return rc;
    }
    *out = 0;
    for (size_t i = 0; !rc && i < m.n_files; i++)
        for (size_t j = 0; !rc && j < m.files[i].n_tensors; j++)
            if (!(rc = tvs_tensor_chain_load(c, txn, &m.files[i].tensors[j].id)))
                *out = TVS_MAX(*out, (int)c->depth - 1);
    tvs_model_dispose(&m);
    tvs_free(c);
    return rc;
}

typedef struct {
    tvs_txn *txn;
    const tvs_id *deltas;
    size_t n;
    int (*cb)(const char *, const tvs_id *, void *);
    void *payload;
} dep_ctx;

static int dep_ref(const char *name, const tvs_id *id, void *p)
{
    dep_ctx *d = p;
    for (size_t i = 0; i < d->n; i++)
        if (tvs_id_eq(&d->deltas[i], id))
            return d->cb(name, id, d->payload);
    return 0;
}

typedef struct { tvs_id *ids; size_t n, cap; } id_list;

static int collect(const tvs_id *from, int rel, const tvs_id *to, void *p)
{
    id_list *l = p;
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        tvs_id *n = tvs_realloc(l->ids, cap * sizeof *n);
        if (!n)
            return tvs__fail(TVS_ENOMEM, "out of memory");
        l->ids = n;
        l->cap = cap;
    }
    l->ids[l->n++] = *to;
    return 0;
}

int tvs_dependents(tvs_txn *txn, const tvs_id *model,
                   int (*cb)(const char *, const tvs_id *, void *), void *payload)
{
    id_list l = { 0 };
    int rc = tvs_lineage_foreach(txn, model, TVS_REL_DELTA, collect, &l);
    if (!rc && l.n) {
        dep_ctx d = { txn, l.ids, l.n, cb, payload };
        rc = tvs_ref_foreach(txn, NULL, dep_ref, &d);
    }
    tvs_free(l.ids);
    return rc;
}
