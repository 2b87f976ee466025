/*
 * Planning (query/plan.h): type-check the syntax tree into ops, resolve
 * refs to models, bind every output tensor to the stored tensors it reads,
 * and lay out the output file.
 *
 * Types: a full model (anchored at the model deltas may be applied to), a
 * delta (with its base) or a scalar. Rules, each failure naming the ref:
 *   full(A) + delta(B)   needs A == B            -> full(A)
 *   delta(B) + delta(B)                          -> delta(B)
 *   full(A) - full(C)                            -> delta(C)
 *   full(A) - delta(B)   needs A == B            -> full(A)
 *   scalar * delta                               -> delta
 *   soup(full...), lerp(full, full, t)           -> full (no anchor unless all agree)
 *   lerp(delta, delta, t), dare(delta...)        -> delta (one base)
 *   transfer(delta(B), onto=full(A))  needs A and B in one lineage -> full(A)
 */
#include "query/plan_int.h"

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/idset.h"
#include "engine/model.h"
#include "format/dtype.h"
#include "format/safetensors.h"

/* ---- ops */

static qop *new_op(tvs_plan *p, qop_kind k, qtype t, size_t pos)
{
    if (p->n_ops == p->cap_ops)
        return NULL;
    qop *o = &p->ops[p->n_ops++];
    memset(o, 0, sizeof *o);
    o->op = k;
    o->type = t;
    o->pos = pos;
    return o;
}

static int lin(tvs_plan *p, qop **out, size_t pos, qtype t, qop *a, double wa, qop *b,
               double wb)
{
    qop *o = new_op(p, OP_LIN, t, pos);
    qop **kids = tvs_calloc(2, sizeof *kids);
    double *w = tvs_calloc(2, sizeof *w);
    if (!o || !kids || !w) {
        tvs_free(kids);
        tvs_free(w);
        return tvs__fail(TVS_ENOMEM, "query: out of memory");
    }
    kids[0] = a;
    kids[1] = b;
    w[0] = wa;
    w[1] = wb;
    o->kids = kids;
    o->w = w;
    o->n = b ? 2 : 1;
    *out = o;
    return 0;
}

static const char *tname(qtype t)
{
    return t == T_FULL ? "a full model" : t == T_DELTA ? "a delta" : "a scalar";
}

static void hex12(char out[13], const tvs_id *id)
{
    char h[TVS_ID_HEX + 1];
    tvs_id_hex(h, id);
    memcpy(out, h, 12);
    out[12] = 0;
}

/* The label of the leaf an op came from, or "the expression at byte N". */
static void what(char *out, size_t cap, const tvs_plan *p, const qop *o)
{
    if (o->op == OP_FULL || o->op == OP_DELTA)
        snprintf(out, cap, "'%s'", p->leaves[o->leaf].label);
    else
        snprintf(out, cap, "the expression at byte %zu", o->pos);
}

typedef struct { const tvs_id *id; char *out; size_t cap; } name_search;

static int name_cb(const char *name, const tvs_id *id, void *p)
{
    name_search *n = p;
    if (!tvs_id_eq(id, n->id))
        return 0;
    snprintf(n->out, n->cap, "'%s'", name);
    return 1;
}

/* The ref name (or short id) of a model, for messages. */
static void model_name(char *out, size_t cap, const tvs_plan *p, const tvs_id *id)
{
    for (size_t i = 0; i < p->n_leaves; i++)
        if (tvs_id_eq(&p->leaves[i].id, id)) {
            snprintf(out, cap, "'%s'", p->leaves[i].label);
            return;
        }
    name_search ns = { id, out, cap };
    if (tvs_ref_foreach(p->txn, NULL, name_cb, &ns) == 1)
        return;
    char h[13];
    hex12(h, id);
    snprintf(out, cap, "model %s", h);
}

static int add_leaf(tvs_plan *p, const tvs_ast_node *n, qop **out)
{
    char spec[TVS_REF_MAX + 64];
    snprintf(spec, sizeof spec, "%s%s%s", n->name, n->at ? "@" : "", n->at ? n->at : "");
    tvs_id id;
    int rc = tvs_resolve(&id, p->txn, spec);
    if (rc)
        return tvs__failctx(rc, "query: ref '%s' at byte %zu", spec, n->pos);
    size_t k = p->n_leaves;
    for (size_t i = 0; i < p->n_leaves; i++)
        if (tvs_id_eq(&p->leaves[i].id, &id))
            k = i;
    if (k == p->n_leaves) {
        qleaf *l = tvs_realloc(p->leaves, (p->n_leaves + 1) * sizeof *l);
        if (!l)
            return tvs__fail(TVS_ENOMEM, "query: out of memory");
        p->leaves = l;
        l = &p->leaves[p->n_leaves];
        memset(l, 0, sizeof *l);
        l->id = id;
        snprintf(l->label, sizeof l->label, "%s", spec);
        if ((rc = tvs_model_load(&l->m, p->txn, &id)))
            return rc;
        p->n_leaves++;
        l->is_delta = l->m.kind == TVS_MODEL_DELTA;
        if (l->is_delta && (rc = tvs_model_load(&l->base, p->txn, &l->m.base)))
            return tvs__failctx(rc, "query: base of '%s'", spec);
    }
    qleaf *l = &p->leaves[k];
    qop *o = new_op(p, l->is_delta ? OP_DELTA : OP_FULL, l->is_delta ? T_DELTA : T_FULL,
                    n->pos);
    if (!o)
        return tvs__fail(TVS_ENOMEM, "query: out of memory");
    o->leaf = k;
    o->anchor = l->is_delta ? l->m.base : l->id;
    o->has_anchor = 1;
    *out = o;
    return 0;
}

/* Mark every ancestor of @p start (through bases and parents) in @p seen. */
static int ancestors(tvs__idset *seen, tvs_txn *txn, const tvs_id *start)
{
    tvs_id *queue = tvs_malloc(64 * sizeof *queue);
    size_t head = 0, n = 0, cap = 64;
    int rc = queue ? 0 : tvs__fail(TVS_ENOMEM, "query: out of memory");
    if (!rc && (rc = tvs__idset_add(seen, start)) > 0) {
        queue[n++] = *start;
        rc = 0;
    }
    while (rc >= 0 && head < n) {
        tvs_model_obj m;
        tvs_id cur = queue[head++];
        if (!tvs_obj_has(txn, &cur) || tvs_model_load(&m, txn, &cur))
            continue;   /* collected history: the walk ends there */
        for (size_t k = 0; rc >= 0 && k <= m.n_parents; k++) {
            const tvs_id *up = k < m.n_parents ? &m.parents[k]
                             : m.kind == TVS_MODEL_DELTA ? &m.base : NULL;
            if (!up || (rc = tvs__idset_add(seen, up)) <= 0)
                continue;
            if (n == cap) {
                tvs_id *q = tvs_realloc(queue, 2 * cap * sizeof *q);
                if (!q) {
                    rc = tvs__fail(TVS_ENOMEM, "query: out of memory");
                    break;
                }
                queue = q;
                cap *= 2;
            }
            queue[n++] = *up;
            rc = 0;
        }
        tvs_model_dispose(&m);
    }
    tvs_free(queue);
    tvs__errclear();
    return rc < 0 ? rc : 0;
}

/* Do models a and b belong to one lineage (one an ancestor of the other, or
 * a common ancestor through parents and bases)? */
static int same_lineage(tvs_txn *txn, const tvs_id *a, const tvs_id *b)
{
    tvs__idset A = { 0 }, B = { 0 };
    int shared = 0;
    if (ancestors(&A, txn, a) == 0 && ancestors(&B, txn, b) == 0)
        for (size_t i = 0; i < B.cap && !shared; i++)
            shared = B.used[i] && tvs__idset_has(&A, &B.slots[i]);
    tvs__idset_dispose(&A);
    tvs__idset_dispose(&B);
    return shared;
}

static const tvs_ast_node *kwarg(const tvs_ast_node *n, const char *key)
{
    for (size_t i = 0; i < n->n_kwargs; i++)
        if (strcmp(n->kwargs[i].key, key) == 0)
            return n->kwargs[i].value;
    return NULL;
}

static int num_kwarg(double *out, const tvs_ast_node *n, const char *key, double def,
                     double lo, double hi)
{
    const tvs_ast_node *v = kwarg(n, key);
    *out = def;
    if (!v)
        return 0;
    if (v->kind != TVS_AST_NUM)
        return tvs__fail(TVS_EINVAL, "query: %s(%s=…) at byte %zu takes a number", n->name,
                         key, v->pos);
    if (!(v->num >= lo && v->num <= hi))
        return tvs__fail(TVS_EINVAL, "query: %s(%s=%g) at byte %zu: must be in [%g, %g]",
                         n->name, key, v->num, v->pos, lo, hi);
    *out = v->num;
    return 0;
}

static int check_kwargs(const tvs_ast_node *n, const char *const *known)
{
    for (size_t i = 0; i < n->n_kwargs; i++) {
        int ok = 0;
        for (size_t k = 0; known[k]; k++)
            ok |= strcmp(known[k], n->kwargs[i].key) == 0;
        if (!ok)
            return tvs__fail(TVS_EINVAL, "query: %s() at byte %zu has no parameter '%s'",
                             n->name, n->pos, n->kwargs[i].key);
    }
    return 0;
}

static int build(tvs_plan *p, const tvs_ast_node *n, qop **out);

/* All arguments deltas of one base; the base comes back in @p base. */
static int deltas_of_one_base(tvs_plan *p, const tvs_ast_node *n, qop **kids, tvs_id *base)
{
    for (size_t i = 0; i < n->n_args; i++) {
        int rc = build(p, n->args[i], &kids[i]);
        if (rc)
            return rc;
        char w[320], a[320], b[320];
        what(w, sizeof w, p, kids[i]);
        if (kids[i]->type != T_DELTA)
            return tvs__fail(TVS_EINVAL, "query: %s() takes deltas, but argument %zu (%s) is "
                             "%s; pass 'ft - base' or a delta model", n->name, i + 1, w,
                             tname(kids[i]->type));
        if (i && !tvs_id_eq(&kids[i]->anchor, base)) {
            model_name(a, sizeof a, p, &kids[i]->anchor);
            model_name(b, sizeof b, p, base);
            return tvs__fail(TVS_ELINEAGE, "query: %s() merges deltas of one base, but %s is "
                             "a delta of %s and the first argument of %s; use transfer() "
                             "to move one of them", n->name, w, a, b);
        }
        *base = kids[i]->anchor;
    }
    return 0;
}

static int build_call(tvs_plan *p, const tvs_ast_node *n, qop **out)
{
    int rc;
    const char *name = n->name;
    if (n->n_args == 0)
        return tvs__fail(TVS_EINVAL, "query: %s() at byte %zu needs arguments", name, n->pos);
    qop **kids = tvs_calloc(n->n_args, sizeof *kids);
    double *w = tvs_calloc(n->n_args, sizeof *w);
    if (!kids || !w) {
        tvs_free(kids);
        tvs_free(w);
        return tvs__fail(TVS_ENOMEM, "query: out of memory");
    }
    qop *o = NULL;
    if (strcmp(name, "soup") == 0) {
        static const char *const known[] = { NULL };
        if ((rc = check_kwargs(n, known)))
            goto fail;
        o = new_op(p, OP_LIN, T_FULL, n->pos);
        for (size_t i = 0; o && i < n->n_args; i++) {
            if ((rc = build(p, n->args[i], &kids[i])))
                goto fail;
            if (kids[i]->type != T_FULL) {
                char wh[320];
                what(wh, sizeof wh, p, kids[i]);
                rc = tvs__fail(TVS_EINVAL, "query: soup() averages full models, but argument "
                               "%zu (%s) is %s; write base + delta", i + 1, wh,
                               tname(kids[i]->type));
                goto fail;
            }
            w[i] = 1.0 / (double)n->n_args;
        }
        if (o) {
            o->has_anchor = 1;
            o->anchor = kids[0]->anchor;
            for (size_t i = 1; i < n->n_args; i++)
                if (!kids[i]->has_anchor || !tvs_id_eq(&kids[i]->anchor, &o->anchor))
                    o->has_anchor = 0;
        }
    } else if (strcmp(name, "lerp") == 0) {
        static const char *const known[] = { NULL };
        if ((rc = check_kwargs(n, known)))
            goto fail;
        qop *tq = NULL;
        if (n->n_args != 3 || (rc = build(p, n->args[2], &tq)) || tq->type != T_SCALAR) {
            if (!rc)
                rc = tvs__fail(TVS_EINVAL, "query: lerp(a, b, t) at byte %zu takes two models "
                               "(or two deltas) and a number", n->pos);
            goto fail;
        }
        if ((rc = build(p, n->args[0], &kids[0])) || (rc = build(p, n->args[1], &kids[1])))
            goto fail;
        double t = tq->num;
        qop *a = kids[0], *b = kids[1];
        if (kids[0]->type != kids[1]->type || kids[0]->type == T_SCALAR) {
            rc = tvs__fail(TVS_EINVAL, "query: lerp() at byte %zu interpolates two full "
                           "models or two deltas, not %s and %s", n->pos,
                           tname(kids[0]->type), tname(kids[1]->type));
            goto fail;
        }
        if (kids[0]->type == T_DELTA && !tvs_id_eq(&kids[0]->anchor, &kids[1]->anchor)) {
            rc = tvs__fail(TVS_ELINEAGE, "query: lerp() at byte %zu: the two deltas have "
                           "different bases; use transfer() first", n->pos);
            goto fail;
        }
        tvs_free(kids);
        tvs_free(w);
        if ((rc = lin(p, &o, n->pos, a->type, a, 1.0 - t, b, t)))
            return rc;
        o->has_anchor = a->has_anchor && b->has_anchor && tvs_id_eq(&a->anchor, &b->anchor);
        o->anchor = a->anchor;
        *out = o;
        return 0;
    } else if (strcmp(name, "transfer") == 0) {
        static const char *const known[] = { "onto", NULL };
        const tvs_ast_node *onto = kwarg(n, "onto");
        if ((rc = check_kwargs(n, known)))
            goto fail;
        if (n->n_args != 1 || !onto || onto->kind != TVS_AST_REF) {
            rc = tvs__fail(TVS_EINVAL, "query: transfer(delta, onto=BASE) at byte %zu takes "
                           "one delta and a ref", n->pos);
            goto fail;
        }
        qop *b;
        if ((rc = build(p, n->args[0], &kids[0])) || (rc = add_leaf(p, onto, &b)))
            goto fail;
        char wh[320], x[320], y[320];
        what(wh, sizeof wh, p, kids[0]);
        if (kids[0]->type != T_DELTA || b->type != T_FULL) {
            rc = tvs__fail(TVS_EINVAL, "query: transfer() at byte %zu moves a delta onto a "
                           "full model; got %s (%s) onto %s", n->pos, tname(kids[0]->type), wh,
                           tname(b->type));
            goto fail;
        }
        if (!same_lineage(p->txn, &kids[0]->anchor, &b->anchor)) {
            model_name(x, sizeof x, p, &kids[0]->anchor);
            model_name(y, sizeof y, p, &b->anchor);
            rc = tvs__fail(TVS_ELINEAGE, "query: transfer() at byte %zu: %s was made on %s, "
                           "which shares no lineage with %s (record it with 'tvs import "
                           "--parent')", n->pos, wh, x, y);
            goto fail;
        }
        qop *d = kids[0];
        tvs_free(kids);
        tvs_free(w);
        if ((rc = lin(p, &o, n->pos, T_FULL, b, 1.0, d, 1.0)))
            return rc;
        o->has_anchor = 1;
        o->anchor = b->anchor;
        *out = o;
        return 0;
    } else if (strcmp(name, "dare") == 0) {
        static const char *const known[] = { "drop", "seed", "lambda", NULL };
        double drop, seed, lambda;
        tvs_id base;
        if ((rc = check_kwargs(n, known)) ||
            (rc = num_kwarg(&drop, n, "drop", 0.9, 0.0, 0.999)) ||
            (rc = num_kwarg(&seed, n, "seed", 0, 0, 9007199254740992.0)) ||
            (rc = num_kwarg(&lambda, n, "lambda", 1.0, -100, 100)) ||
            (rc = deltas_of_one_base(p, n, kids, &base)))
            goto fail;
        if (floor(seed) != seed) {
            rc = tvs__fail(TVS_EINVAL, "query: dare(seed=%g) must be an integer", seed);
            goto fail;
        }
        if ((o = new_op(p, OP_DARE, T_DELTA, n->pos))) {
            o->drop = drop;
            o->seed = (uint64_t)seed;
            o->lambda = lambda;
            o->anchor = base;
            o->has_anchor = 1;
        }
    } else if (strcmp(name, "ties") == 0 || strcmp(name, "breadcrumbs") == 0) {
        int ties = name[0] == 't';
        static const char *const kt[] = { "density", "lambda", NULL };
        static const char *const kb[] = { "top", "bottom", "lambda", NULL };
        double density = 1, lambda, top = 0, bottom = 0;
        tvs_id base;
        if ((rc = check_kwargs(n, ties ? kt : kb)) ||
            (ties && (rc = num_kwarg(&density, n, "density", 0.2, 0.0, 1.0))) ||
            (!ties && (rc = num_kwarg(&top, n, "top", 0.01, 0.0, 1.0))) ||
            (!ties && (rc = num_kwarg(&bottom, n, "bottom", 0.9, 0.0, 1.0))) ||
            (rc = num_kwarg(&lambda, n, "lambda", 1.0, -100, 100)) ||
            (rc = deltas_of_one_base(p, n, kids, &base)))
            goto fail;
        if (!ties && top + bottom > 1.0) {
            rc = tvs__fail(TVS_EINVAL, "query: breadcrumbs() at byte %zu drops top=%g and "
                           "bottom=%g, more than everything", n->pos, top, bottom);
            goto fail;
        }
        if ((o = new_op(p, ties ? OP_TIES : OP_CRUMBS, T_DELTA, n->pos))) {
            o->drop = density;
            o->top = top;
            o->bottom = bottom;
            o->lambda = lambda;
            o->anchor = base;
            o->has_anchor = 1;
            o->sel = p->sel_slots;
            p->n_sel++;
            p->sel_slots += 2 * n->n_args;
        }
    } else {
        rc = tvs__fail(TVS_EINVAL, "query: unknown function '%s' at byte %zu (known: soup, "
                       "lerp, transfer, ties, dare, breadcrumbs)", name, n->pos);
        goto fail;
    }
    if (!o) {
        rc = tvs__fail(TVS_ENOMEM, "query: out of memory");
        goto fail;
    }
    o->kids = kids;
    o->w = w;
    o->n = n->n_args;
    *out = o;
    return 0;
fail:
    tvs_free(kids);
    tvs_free(w);
    return rc;
}

static int build_add(tvs_plan *p, const tvs_ast_node *n, qop *a, qop *b, int sub, qop **out)
{
    char x[320], y[320], ax[320], by[320];
    what(x, sizeof x, p, a);
    what(y, sizeof y, p, b);
    const char *op = sub ? "-" : "+";
    if (a->type == T_SCALAR || b->type == T_SCALAR) {
        if (a->type == T_SCALAR && b->type == T_SCALAR) {
            qop *o = new_op(p, OP_SCALAR, T_SCALAR, n->pos);
            if (!o)
                return tvs__fail(TVS_ENOMEM, "query: out of memory");
            o->num = sub ? a->num - b->num : a->num + b->num;
            *out = o;
            return 0;
        }
        return tvs__fail(TVS_EINVAL, "query: '%s' at byte %zu adds a number to a model; "
                         "scale with '*' instead", op, n->pos);
    }
    qtype t;
    tvs_id anchor = { { 0 } };
    int has = 1;
    if (a->type == T_FULL && b->type == T_FULL) {
        if (!sub)
            return tvs__fail(TVS_EINVAL, "query: '+' at byte %zu adds two full models (%s and "
                             "%s); for an average use soup(a, b), for a delta write 'a - b'",
                             n->pos, x, y);
        t = T_DELTA;   /* ft - base */
        anchor = b->anchor;
        has = b->has_anchor;
        if (!has)
            return tvs__fail(TVS_EINVAL, "query: '-' at byte %zu: %s has no single base to be "
                             "the delta's base", n->pos, y);
    } else if (a->type == T_DELTA && b->type == T_FULL) {
        if (sub)
            return tvs__fail(TVS_EINVAL, "query: '-' at byte %zu subtracts a full model (%s) "
                             "from a delta (%s); write 'base + delta - other' or 'ft - base'",
                             n->pos, y, x);
        return build_add(p, n, b, a, 0, out);   /* delta + full == full + delta */
    } else if (a->type == T_FULL) {   /* full +/- delta */
        if (!a->has_anchor || !tvs_id_eq(&a->anchor, &b->anchor)) {
            model_name(by, sizeof by, p, &b->anchor);
            if (a->has_anchor)
                model_name(ax, sizeof ax, p, &a->anchor);
            else
                snprintf(ax, sizeof ax, "a model with no single base");
            return tvs__fail(TVS_ELINEAGE, "query: '%s' at byte %zu applies %s, a delta of %s, "
                             "to %s (based on %s); a delta applies to its own base: write "
                             "%s %s %s, or transfer(%s, onto=…) if the bases share lineage",
                             op, n->pos, y, by, x, ax, by, op, y, y);
        }
        t = T_FULL;
        anchor = a->anchor;
    } else {   /* delta +/- delta */
        if (!tvs_id_eq(&a->anchor, &b->anchor)) {
            model_name(ax, sizeof ax, p, &a->anchor);
            model_name(by, sizeof by, p, &b->anchor);
            return tvs__fail(TVS_ELINEAGE, "query: '%s' at byte %zu combines %s (a delta of %s) "
                             "with %s (a delta of %s); deltas combine only on one base: use "
                             "transfer()", op, n->pos, x, ax, y, by);
        }
        t = T_DELTA;
        anchor = a->anchor;
    }
    int rc;
    if (a->op == OP_LIN) {
        /* a left-leaning chain a + b + c … becomes one sum: the same operations
         * in the same order (the inner sum's weight is 1), one buffer deep */
        qop **kids = tvs_realloc(a->kids, (a->n + 1) * sizeof *kids);
        if (kids)
            a->kids = kids;
        double *w = kids ? tvs_realloc(a->w, (a->n + 1) * sizeof *w) : NULL;
        if (!w)
            return tvs__fail(TVS_ENOMEM, "query: out of memory");
        a->w = w;
        a->kids[a->n] = b;
        a->w[a->n++] = sub ? -1.0 : 1.0;
        a->type = t;
        *out = a;
    } else if ((rc = lin(p, out, n->pos, t, a, 1.0, b, sub ? -1.0 : 1.0))) {
        return rc;
    }
    (*out)->anchor = anchor;
    (*out)->has_anchor = has;
    return 0;
}

static int build_(tvs_plan *p, const tvs_ast_node *n, qop **out);

/* Every number the planner folds must stay finite (SPEC 4.1). */
static int build(tvs_plan *p, const tvs_ast_node *n, qop **out)
{
    int rc = build_(p, n, out);
    if (!rc && (*out)->type == T_SCALAR && !isfinite((*out)->num))
        return tvs__fail(TVS_EINVAL, "query: the number at byte %zu overflows", n->pos);
    return rc;
}

static int build_(tvs_plan *p, const tvs_ast_node *n, qop **out)
{
    qop *a = NULL, *b = NULL;
    int rc = 0;
    switch (n->kind) {
    case TVS_AST_NUM:
        if (!(*out = new_op(p, OP_SCALAR, T_SCALAR, n->pos)))
            return tvs__fail(TVS_ENOMEM, "query: out of memory");
        (*out)->num = n->num;
        return 0;
    case TVS_AST_REF:
        return add_leaf(p, n, out);
    case TVS_AST_CALL:
        return build_call(p, n, out);
    case TVS_AST_NEG:
        if ((rc = build(p, n->a, &a)))
            return rc;
        if (a->type == T_SCALAR) {
            if (!(*out = new_op(p, OP_SCALAR, T_SCALAR, n->pos)))
                return tvs__fail(TVS_ENOMEM, "query: out of memory");
            (*out)->num = -a->num;
            return 0;
        }
        if (a->type == T_FULL)
            return tvs__fail(TVS_EINVAL, "query: '-' at byte %zu negates a full model; negate "
                             "a delta instead", n->pos);
        if ((rc = lin(p, out, n->pos, T_DELTA, a, -1.0, NULL, 0)))
            return rc;
        (*out)->anchor = a->anchor;
        (*out)->has_anchor = 1;
        return 0;
    case TVS_AST_MUL: {
        if ((rc = build(p, n->a, &a)) || (rc = build(p, n->b, &b)))
            return rc;
        if (a->type != T_SCALAR && b->type != T_SCALAR)
            return tvs__fail(TVS_EINVAL, "query: '*' at byte %zu multiplies two models; one "
                             "side must be a number", n->pos);
        if (a->type != T_SCALAR) {
            qop *t = a;
            a = b;
            b = t;
        }
        if (b->type == T_SCALAR) {
            if (!(*out = new_op(p, OP_SCALAR, T_SCALAR, n->pos)))
                return tvs__fail(TVS_ENOMEM, "query: out of memory");
            (*out)->num = a->num * b->num;
            return 0;
        }
        if (b->type == T_FULL) {
            char x[320];
            what(x, sizeof x, p, b);
            return tvs__fail(TVS_EINVAL, "query: '*' at byte %zu scales %s, a full model; "
                             "scale a delta ('%g*(ft - base)'), or use soup()/lerp()",
                             n->pos, x, a->num);
        }
        if ((rc = lin(p, out, n->pos, T_DELTA, b, a->num, NULL, 0)))
            return rc;
        (*out)->anchor = b->anchor;
        (*out)->has_anchor = 1;
        return 0;
    }
    case TVS_AST_ADD:
    case TVS_AST_SUB:
        if ((rc = build(p, n->a, &a)) || (rc = build(p, n->b, &b)))
            return rc;
        return build_add(p, n, a, b, n->kind == TVS_AST_SUB, out);
    case TVS_AST_ON:   /* a on b == b + a */
        if ((rc = build(p, n->a, &a)) || (rc = build(p, n->b, &b)))
            return rc;
        return build_add(p, n, b, a, 0, out);
    }
    return tvs__fail(TVS_EINVAL, "query: unknown node");
}

/* ---- normalization: the query as Σ weight · stored tensor */

typedef struct {
    tvs_id id[64];
    double w[64];
    size_t n;
    int nonlinear;
} linform;

static void lf_add(linform *f, const tvs_id *id, double w)
{
    for (size_t i = 0; i < f->n; i++)
        if (tvs_id_eq(&f->id[i], id)) {
            f->w[i] += w;
            return;
        }
    if (f->n < 64) {
        f->id[f->n] = *id;
        f->w[f->n++] = w;
    } else {
        f->nonlinear = 1;
    }
}

/* Per model (file == 0) or per tensor (the leaf tensors of qtensor t). */
static void normalize(linform *f, const tvs_plan *p, const qop *o, double w, const qtensor *t)
{
    switch (o->op) {
    case OP_SCALAR:
        f->nonlinear = 1;
        return;
    case OP_FULL:
        lf_add(f, t ? &t->leaf_t[o->leaf] : &p->leaves[o->leaf].id, w);
        return;
    case OP_DELTA:
        lf_add(f, t ? &t->leaf_t[o->leaf] : &p->leaves[o->leaf].id, w);
        lf_add(f, t ? &t->leaf_b[o->leaf] : &p->leaves[o->leaf].m.base, -w);
        return;
    case OP_LIN:
        for (size_t i = 0; i < o->n; i++)
            normalize(f, p, o->kids[i], w * o->w[i], t);
        return;
    case OP_DARE:
    case OP_TIES:
    case OP_CRUMBS:
        f->nonlinear = 1;
        return;
    }
}

/* The one stored thing with weight exactly 1 (all others exactly 0), if any. */
static const tvs_id *single(const linform *f)
{
    const tvs_id *one = NULL;
    if (f->nonlinear)
        return NULL;
    for (size_t i = 0; i < f->n; i++) {
        if (f->w[i] == 1.0 && !one)
            one = &f->id[i];
        else if (f->w[i] != 0.0)
            return NULL;
    }
    return one;
}

/* ---- output tensors */

/* The N of the first "layers.N." in @p name, or -1 if there is none. */
static int layer_of(const char *name)
{
    for (const char *s = strstr(name, "layers."); s; s = strstr(s + 1, "layers.")) {
        const char *d = s + 7, *e = d;
        while (*e >= '0' && *e <= '9')
            e++;
        if (e > d && e - d <= 9 && *e == '.')
            return atoi(d);
    }
    return -1;
}

static int keep_tensor(const tvs_plan *p, const char *name, regex_t *re)
{
    if (p->opts.names) {
        int listed = 0;
        for (size_t i = 0; i < p->opts.n_names && !listed; i++)
            listed = strcmp(p->opts.names[i], name) == 0;
        if (!listed)
            return 0;
    }
    if (re && regexec(re, name, 0, NULL, 0) != 0)
        return 0;
    if (p->opts.layer_hi >= 0) {
        int l = layer_of(name);
        if (l >= 0 && (l < p->opts.layer_lo || l > p->opts.layer_hi))
            return 0;
    }
    return 1;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(((const qtensor *)a)->name, ((const qtensor *)b)->name);
}

static int size_desc(const void *a, const void *b)
{
    const qtensor *x = *(qtensor *const *)a, *y = *(qtensor *const *)b;
    if (x->nbytes != y->nbytes)
        return x->nbytes < y->nbytes ? 1 : -1;
    return strcmp(x->name, y->name);
}

/* Keep only shard i of n: tensors dealt, largest first, to the lightest shard. */
static int shard(tvs_plan *p)
{
    unsigned n = p->opts.shard_n, me = p->opts.shard_i;
    if (!n)
        return 0;
    qtensor **order = tvs_calloc(p->n_tensors + 1, sizeof *order);
    uint64_t *load = tvs_calloc(n, sizeof *load);
    char *mine = tvs_calloc(p->n_tensors + 1, 1);
    if (!order || !load || !mine) {
        tvs_free(order);
        tvs_free(load);
        tvs_free(mine);
        return tvs__fail(TVS_ENOMEM, "query: out of memory");
    }
    for (size_t i = 0; i < p->n_tensors; i++)
        order[i] = &p->tensors[i];
    qsort(order, p->n_tensors, sizeof *order, size_desc);
    for (size_t i = 0; i < p->n_tensors; i++) {
        unsigned best = 0;
        for (unsigned s = 1; s < n; s++)
            if (load[s] < load[best])
                best = s;
        load[best] += order[i]->nbytes;
        if (best == me)
            mine[order[i] - p->tensors] = 1;
    }
    size_t k = 0;
    for (size_t i = 0; i < p->n_tensors; i++) {
        if (mine[i])
            p->tensors[k++] = p->tensors[i];
        else {
            tvs_free(p->tensors[i].name);
            tvs_free(p->tensors[i].leaf_t);
            tvs_free(p->tensors[i].leaf_b);
            tvs_free(p->tensors[i].leaf_dt);
        }
    }
    p->n_tensors = k;
    tvs_free(order);
    tvs_free(load);
    tvs_free(mine);
    return 0;
}

/* Bind leaf tensors of one output tensor; decide copy or evaluate. */
static int bind(tvs_plan *p, qtensor *t, const tvs_tensor_obj *shape_t)
{
    t->leaf_t = tvs_calloc(p->n_leaves + 1, sizeof *t->leaf_t);
    t->leaf_b = tvs_calloc(p->n_leaves + 1, sizeof *t->leaf_b);
    t->leaf_dt = tvs_calloc(p->n_leaves + 1, sizeof *t->leaf_dt);
    if (!t->leaf_t || !t->leaf_b || !t->leaf_dt)
        return tvs__fail(TVS_ENOMEM, "query: out of memory");
    for (size_t i = 0; i < p->n_leaves; i++) {
        const qleaf *l = &p->leaves[i];
        const tvs_model_entry *e = tvs_model_find(&l->m, t->name);
        const tvs_model_entry *eb = l->is_delta ? tvs_model_find(&l->base, t->name) : NULL;
        if (!e || (l->is_delta && !eb))
            return tvs__fail(TVS_EINVAL, "query: tensor \"%s\" is not in '%s'%s; the models "
                             "of a query must have the same tensors (select with --tensors)",
                             t->name, l->label, e ? "'s base" : "");
        tvs_tensor_obj lt, bt;
        int rc = tvs_tensor_load(&lt, p->txn, &e->id);
        if (!rc && eb)
            rc = tvs_tensor_load(&bt, p->txn, &eb->id);
        if (rc)
            return rc;
        if (lt.rank != shape_t->rank ||
            memcmp(lt.shape, shape_t->shape, lt.rank * sizeof *lt.shape) != 0 ||
            (eb && (bt.rank != lt.rank ||
                    memcmp(bt.shape, lt.shape, lt.rank * sizeof *lt.shape) != 0)))
            return tvs__fail(TVS_EINVAL, "query: tensor \"%s\" has another shape in '%s'; "
                             "a merge needs equal shapes", t->name, l->label);
        if (!tvs_dtype_convertible(lt.dtype) || (eb && !tvs_dtype_convertible(bt.dtype)))
            return tvs__fail(TVS_EINVAL, "query: tensor \"%s\" of '%s' is %s; merges work on "
                             "BF16, F16 and F32", t->name, l->label, tvs_dtype_name(lt.dtype));
        t->leaf_t[i] = e->id;
        t->leaf_dt[i] = lt.dtype;
        if (eb)
            t->leaf_b[i] = eb->id;
    }
    linform f = { .n = 0 };
    normalize(&f, p, p->root, 1.0, t);
    const tvs_id *one = single(&f);
    if (one) {
        tvs_tensor_obj ct;
        int rc = tvs_tensor_load(&ct, p->txn, one);
        if (rc)
            return rc;
        t->src = SRC_COPY;
        t->copy = *one;
        t->src_dtype = ct.dtype;
    } else {
        t->src = SRC_EVAL;
    }
    return 0;
}

static int add_out_tensor(tvs_plan *p, const char *name, const tvs_tensor_obj *st,
                          size_t *cap)
{
    if (p->n_tensors == *cap) {
        *cap = *cap ? 2 * *cap : 64;
        qtensor *n = tvs_realloc(p->tensors, *cap * sizeof *n);
        if (!n)
            return tvs__fail(TVS_ENOMEM, "query: out of memory");
        p->tensors = n;
    }
    qtensor *t = &p->tensors[p->n_tensors];
    memset(t, 0, sizeof *t);
    if (!(t->name = tvs_strdup(name)))
        return tvs__fail(TVS_ENOMEM, "query: out of memory");
    p->n_tensors++;
    t->rank = st->rank;
    memcpy(t->shape, st->shape, st->rank * sizeof *st->shape);
    t->n_elems = 1;
    for (uint32_t i = 0; i < st->rank; i++)
        t->n_elems *= st->shape[i];
    t->dtype = st->dtype;
    if (p->opts.dtype && tvs_dtype_is_float(st->dtype) && tvs_dtype_convertible(st->dtype))
        t->dtype = (tvs_dtype)p->opts.dtype;
    uint64_t nb = 0;
    tvs_dtype_nbytes(&nb, t->dtype, t->n_elems);
    t->nbytes = nb;
    if (p->root->type == T_DELTA && !tvs_dtype_convertible(st->dtype)) {
        /* a delta of an integer tensor means nothing: leave it out */
        tvs_free(t->name);
        p->n_tensors--;
        return 0;
    }
    if (!tvs_dtype_convertible(st->dtype)) {
        /* integers and other non-float tensors come from the shape model as stored */
        t->src = SRC_COPY;
        return 1;
    }
    return bind(p, t, st);
}

/* The model whose tensor names and shapes the output takes. */
static const tvs_model_obj *shape_model(const tvs_plan *p, tvs_id *id)
{
    const qop *r = p->root;
    for (size_t i = 0; r->has_anchor && i < p->n_leaves; i++) {
        const qleaf *l = &p->leaves[i];
        if (tvs_id_eq(&l->id, &r->anchor)) {
            *id = l->id;
            return &l->m;
        }
        if (l->is_delta && tvs_id_eq(&l->m.base, &r->anchor)) {
            *id = l->m.base;
            return &l->base;
        }
    }
    *id = p->leaves[0].is_delta ? p->leaves[0].m.base : p->leaves[0].id;
    return p->leaves[0].is_delta ? &p->leaves[0].base : &p->leaves[0].m;
}

static int layout(tvs_plan *p)
{
    regex_t re, *rep = NULL;
    if (p->opts.tensors) {
        int rrc = regcomp(&re, p->opts.tensors, REG_EXTENDED | REG_NOSUB);
        if (rrc) {
            char msg[128];
            regerror(rrc, &re, msg, sizeof msg);
            return tvs__fail(TVS_EINVAL, "--tensors '%s': %s", p->opts.tensors, msg);
        }
        rep = &re;
    }
    tvs_id sid;
    const tvs_model_obj *sm = shape_model(p, &sid);
    size_t cap = 0;
    int rc = 0;
    for (size_t i = 0; !rc && i < sm->n_files; i++) {
        const tvs_model_file *f = &sm->files[i];
        for (size_t j = 0; !rc && j < f->n_tensors; j++) {
            char name[4096];
            snprintf(name, sizeof name, "%.*s", (int)f->tensors[j].name.len,
                     (const char *)f->tensors[j].name.ptr);
            if (!keep_tensor(p, name, rep))
                continue;
            tvs_tensor_obj st;
            if ((rc = tvs_tensor_load(&st, p->txn, &f->tensors[j].id)))
                break;
            rc = add_out_tensor(p, name, &st, &cap);
            if (rc == 1) {   /* copied from the shape model as stored */
                p->tensors[p->n_tensors - 1].copy = f->tensors[j].id;
                p->tensors[p->n_tensors - 1].src_dtype = st.dtype;
                rc = 0;
            }
        }
    }
    if (rep)
        regfree(rep);
    if (rc)
        return rc;
    if (p->n_tensors == 0)
        return tvs__fail(TVS_EINVAL, "query: no tensor is selected (check --tensors / --layers)");
    qsort(p->tensors, p->n_tensors, sizeof *p->tensors, name_cmp);
    return shard(p);
}

/* ---- the header */

static int json_str(tvs_buf *b, const char *s)
{
    int rc = tvs_buf_put_u8(b, '"');
    for (; !rc && *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\')
            snprintf(esc, sizeof esc, "\\%c", c);
        else if (c < 0x20)
            snprintf(esc, sizeof esc, "\\u%04x", c);
        else {
            rc = tvs_buf_put_u8(b, c);
            continue;
        }
        rc = tvs_buf_append(b, esc, strlen(esc));
    }
    return rc ? rc : tvs_buf_put_u8(b, '"');
}

static int make_header(tvs_plan *p)
{
    tvs_buf b = TVS_BUF_INIT;
    char tmp[128];
    int rc = tvs_buf_append(&b, "\0\0\0\0\0\0\0\0", 8);
    if (!rc) rc = tvs_buf_append(&b, "{\"__metadata__\":{\"format\":\"pt\",\"tvs_query\":", 43);
    if (!rc) rc = json_str(&b, p->text);
    if (!rc) rc = tvs_buf_append(&b, "}", 1);
    uint64_t off = 0;
    for (size_t i = 0; !rc && i < p->n_tensors; i++) {
        qtensor *t = &p->tensors[i];
        rc = tvs_buf_append(&b, ",", 1);
        if (!rc) rc = json_str(&b, t->name);
        snprintf(tmp, sizeof tmp, ":{\"dtype\":\"%s\",\"shape\":[", tvs_dtype_name(t->dtype));
        if (!rc) rc = tvs_buf_append(&b, tmp, strlen(tmp));
        for (uint32_t k = 0; !rc && k < t->rank; k++) {
            snprintf(tmp, sizeof tmp, "%s%llu", k ? "," : "", (unsigned long long)t->shape[k]);
            rc = tvs_buf_append(&b, tmp, strlen(tmp));
        }
        snprintf(tmp, sizeof tmp, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                 (unsigned long long)(off + t->nbytes));
        if (!rc) rc = tvs_buf_append(&b, tmp, strlen(tmp));
        t->offset = off;
        off += t->nbytes;
    }
    if (!rc) rc = tvs_buf_append(&b, "}", 1);
    while (!rc && (b.len - 8) % 8)
        rc = tvs_buf_put_u8(&b, ' ');
    if (rc) {
        tvs_buf_dispose(&b);
        return rc;
    }
    tvs_store_le64(b.ptr, b.len - 8);
    for (size_t i = 0; i < p->n_tensors; i++)
        p->tensors[i].offset += b.len;
    p->header = b.ptr;
    p->header_len = b.len;
    p->size = b.len + off;
    return 0;
}

/*
 * Copy mode: the output is one stored single-file model, header verbatim.
 * Its tensors are that file's (a fine-tune may add or drop tensors of its
 * base): the list is rebuilt from the file, every tensor copied as stored.
 */
static int copy_header(tvs_plan *p, const tvs_model_obj *m)
{
    const tvs_model_file *f = &m->files[0];
    tvs_st_header h;
    int rc = tvs_st_header_parse(&h, f->header, UINT64_MAX);
    if (rc)
        return tvs__failctx(TVS_ECORRUPT, "stored header");
    qtensor *list = tvs_calloc(h.n + 1, sizeof *list);
    if (!list) {
        tvs_st_header_dispose(&h);
        return tvs__fail(TVS_ENOMEM, "query: out of memory");
    }
    for (size_t i = 0; !rc && i < h.n; i++) {
        const tvs_st_tensor *ht = &h.tensors[i];
        const tvs_model_entry *e = tvs_model_find(m, ht->name);
        qtensor *t = &list[i];
        if (!e) {
            rc = tvs__fail(TVS_ECORRUPT, "stored header names \"%s\", which the model lacks",
                           ht->name);
            break;
        }
        if (!(t->name = tvs_strdup(ht->name))) {
            rc = tvs__fail(TVS_ENOMEM, "query: out of memory");
            break;
        }
        t->dtype = t->src_dtype = ht->dtype;
        t->rank = ht->rank;
        memcpy(t->shape, ht->shape, ht->rank * sizeof *ht->shape);
        t->n_elems = ht->n_elems;
        t->nbytes = ht->end - ht->begin;
        t->offset = 8 + f->header.len + ht->begin;
        t->src = SRC_COPY;
        t->copy = e->id;
    }
    if (!rc && !(p->header = tvs_malloc(8 + f->header.len)))
        rc = tvs__fail(TVS_ENOMEM, "query: out of memory");
    if (rc) {
        for (size_t i = 0; i < h.n; i++)
            tvs_free(list[i].name);
        tvs_free(list);
        tvs_st_header_dispose(&h);
        return rc;
    }
    for (size_t i = 0; i < p->n_tensors; i++) {
        tvs_free(p->tensors[i].name);
        tvs_free(p->tensors[i].leaf_t);
        tvs_free(p->tensors[i].leaf_b);
        tvs_free(p->tensors[i].leaf_dt);
    }
    tvs_free(p->tensors);
    p->tensors = list;
    p->n_tensors = h.n;
    p->header_len = 8 + f->header.len;
    tvs_store_le64(p->header, f->header.len);
    memcpy(p->header + 8, f->header.ptr, f->header.len);
    p->size = p->header_len + h.data_len;
    tvs_st_header_dispose(&h);
    return 0;
}

/* ---- build */

int tvs_plan_build(tvs_plan **out, tvs_txn *txn, const char *text, const tvs_plan_opts *o)
{
    static const tvs_plan_opts defaults = TVS_PLAN_OPTS_INIT;
    *out = NULL;
    tvs_plan *p = tvs_calloc(1, sizeof *p);
    if (!p)
        return tvs__fail(TVS_ENOMEM, "query: out of memory");
    p->txn = txn;
    p->store = tvs_txn_store(txn);
    p->opts = o ? *o : defaults;
    if (p->opts.shard_n && p->opts.shard_i >= p->opts.shard_n) {
        int rc = tvs__fail(TVS_EINVAL, "--shard %u/%u: the index must be below the count",
                           p->opts.shard_i, p->opts.shard_n);
        tvs_plan_free(p);
        return rc;
    }
    if (p->opts.dtype && !tvs_dtype_convertible((tvs_dtype)p->opts.dtype)) {
        tvs_plan_free(p);
        return tvs__fail(TVS_EINVAL, "--dtype must be bf16, f16 or f32");
    }
    size_t len = strlen(text);
    int rc = tvs_query_parse(&p->ast, text, len);
    if (!rc && !(p->text = tvs_strdup(text)))
        rc = tvs__fail(TVS_ENOMEM, "query: out of memory");
    if (!rc) {
        p->cap_ops = 2 * len + 16;
        if (!(p->ops = tvs_calloc(p->cap_ops, sizeof *p->ops)))
            rc = tvs__fail(TVS_ENOMEM, "query: out of memory");
    }
    if (!rc) rc = build(p, p->ast.root, &p->root);
    if (!rc && p->root->type == T_SCALAR)
        rc = tvs__fail(TVS_EINVAL, "query: '%s' is a number, not a model", text);
    if (!rc) {
        /* copy mode first: it must not depend on the anchor's tensor list */
        linform f = { .n = 0 };
        normalize(&f, p, p->root, 1.0, NULL);
        const tvs_id *one = single(&f);
        int whole = !p->opts.tensors && !p->opts.names && p->opts.layer_hi < 0 &&
                    !p->opts.shard_n && !p->opts.dtype;
        const tvs_model_obj *cm = NULL;
        for (size_t i = 0; one && i < p->n_leaves; i++) {
            if (tvs_id_eq(&p->leaves[i].id, one))
                cm = &p->leaves[i].m;
            if (p->leaves[i].is_delta && tvs_id_eq(&p->leaves[i].m.base, one))
                cm = &p->leaves[i].base;
        }
        if (whole && cm && (cm->flags & TVS_MODEL_SINGLE_FILE) && cm->n_files == 1) {
            p->copy_file = 1;
            p->copy_model = *one;
            rc = copy_header(p, cm);
        } else if (!(rc = layout(p))) {
            rc = make_header(p);
        }
    }
    if (!rc) {
        uint64_t blocks = 0;
        for (size_t i = 0; i < p->n_tensors; i++) {
            qtensor *t = &p->tensors[i];
            t->first_block = blocks;
            t->n_blocks = (t->n_elems + TVS_BLOCK_ELEMS - 1) / TVS_BLOCK_ELEMS;
            if (!tvs_dtype_convertible(t->dtype) || t->src == SRC_COPY) {
                /* copies go by bytes: blocks of one stored chunk's size */
                t->n_blocks = (t->nbytes + TVS_CHUNK_SIZE - 1) / TVS_CHUNK_SIZE;
                if (t->src == SRC_COPY && t->dtype != t->src_dtype)
                    t->n_blocks = (t->n_elems + TVS_BLOCK_ELEMS - 1) / TVS_BLOCK_ELEMS;
            }
            blocks += t->n_blocks;
        }
        p->n_blocks = blocks;
        p->threads = p->opts.threads;
    }
    if (rc) {
        tvs_plan_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

void tvs_plan_free(tvs_plan *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_ops; i++) {
        if (p->ops[i].op >= OP_LIN) {
            tvs_free(p->ops[i].kids);
            tvs_free(p->ops[i].w);
        }
    }
    tvs_free(p->ops);
    for (size_t i = 0; i < p->n_leaves; i++) {
        tvs_model_dispose(&p->leaves[i].m);
        tvs_model_dispose(&p->leaves[i].base);
    }
    tvs_free(p->leaves);
    for (size_t i = 0; i < p->n_tensors; i++) {
        tvs_free(p->tensors[i].name);
        tvs_free(p->tensors[i].leaf_t);
        tvs_free(p->tensors[i].leaf_b);
        tvs_free(p->tensors[i].leaf_dt);
        tvs_free(p->tensors[i].thr);
    }
    tvs_free(p->tensors);
    tvs_free(p->header);
    tvs_free(p->text);
    tvs_ast_dispose(&p->ast);
    tvs_free(p);
}

uint64_t tvs_plan_size(const tvs_plan *p) { return p->size; }

void tvs_plan_tensor(const tvs_plan *p, size_t i, const char **name, uint64_t *nbytes)
{
    *name = p->tensors[i].name;
    *nbytes = p->tensors[i].nbytes;
}

void tvs_plan_anchor(const tvs_plan *p, tvs_id *out)
{
    shape_model(p, out);
}
size_t tvs_plan_tensors(const tvs_plan *p) { return p->n_tensors; }
const char *tvs_plan_type(const tvs_plan *p) { return p->root->type == T_FULL ? "full" : "delta"; }
int tvs_plan_is_copy(const tvs_plan *p) { return p->copy_file; }

/* ---- EXPLAIN */

static int explain_op(tvs_buf *b, const tvs_plan *p, const qop *o, int depth)
{
    char line[512], h[13];
    int n = snprintf(line, sizeof line, "%*s", 2 * depth + 2, "");
    switch (o->op) {
    case OP_SCALAR:
        snprintf(line + n, sizeof line - n, "scalar %g\n", o->num);
        break;
    case OP_FULL:
        hex12(h, &p->leaves[o->leaf].id);
        snprintf(line + n, sizeof line - n, "full model %s (%s)\n", p->leaves[o->leaf].label, h);
        break;
    case OP_DELTA: {
        char bh[13];
        hex12(h, &p->leaves[o->leaf].id);
        hex12(bh, &p->leaves[o->leaf].m.base);
        snprintf(line + n, sizeof line - n, "delta %s (%s) = its fine-tuned tensors - base %s, "
                 "in f32\n", p->leaves[o->leaf].label, h, bh);
        break;
    }
    case OP_LIN: {
        int k = snprintf(line + n, sizeof line - n, "%s = sum of", tname(o->type));
        for (size_t i = 0; i < o->n && k > 0 && (size_t)(n + k) < sizeof line; i++)
            k += snprintf(line + n + k, sizeof line - n - k, " %+g*[%zu]", o->w[i], i + 1);
        snprintf(line + n + k, sizeof line - n - k, " (f32, in this order)\n");
        break;
    }
    case OP_DARE:
        snprintf(line + n, sizeof line - n, "dare(drop=%g, seed=%llu, lambda=%g): each delta "
                 "keeps an element with probability %g, scaled by 1/%g; then summed\n",
                 o->drop, (unsigned long long)o->seed, o->lambda, 1 - o->drop, 1 - o->drop);
        break;
    case OP_TIES:
        snprintf(line + n, sizeof line - n, "ties(density=%g, lambda=%g): per tensor, keep each "
                 "delta's top %g by magnitude, elect the sign of the summed kept values, "
                 "average the kept values of that sign (two passes to find thresholds)\n",
                 o->drop, o->lambda, o->drop);
        break;
    case OP_CRUMBS:
        snprintf(line + n, sizeof line - n, "breadcrumbs(top=%g, bottom=%g, lambda=%g): per "
                 "tensor, drop each delta's largest %g and smallest %g by magnitude, sum the "
                 "rest (two passes to find thresholds)\n", o->top, o->bottom, o->lambda,
                 o->top, o->bottom);
        break;
    }
    int rc = tvs_buf_append(b, line, strlen(line));
    for (size_t i = 0; !rc && o->op >= OP_LIN && i < o->n; i++)
        rc = explain_op(b, p, o->kids[i], depth + 1);
    return rc;
}

/* "lineage  a <- b <- c": a model and its first-parent / base chain, named. */
static int explain_lineage(tvs_buf *b, const tvs_plan *p, const tvs_id *start)
{
    char line[1024], name[320];
    size_t n = (size_t)snprintf(line, sizeof line, "        lineage");
    tvs_id cur = *start;
    for (int hop = 0; hop < 8 && n < sizeof line - 340; hop++) {
        model_name(name, sizeof name, p, &cur);
        n += (size_t)snprintf(line + n, sizeof line - n, "%s %s", hop ? " <-" : "", name);
        tvs_model_obj m;
        if (!tvs_obj_has(p->txn, &cur) || tvs_model_load(&m, p->txn, &cur))
            break;
        int up = m.kind == TVS_MODEL_DELTA || m.n_parents;
        if (up)
            cur = m.kind == TVS_MODEL_DELTA ? m.base : m.parents[0];
        tvs_model_dispose(&m);
        if (!up)
            break;
    }
    tvs__errclear();
    snprintf(line + n, sizeof line - n, "\n");
    return tvs_buf_append(b, line, strlen(line));
}

int tvs_plan_explain(tvs_buf *b, const tvs_plan *p)
{
    char line[1024], h[TVS_ID_HEX + 1];
    tvs_buf q = TVS_BUF_INIT;
    int rc = tvs_ast_print(&q, p->ast.root);
    snprintf(line, sizeof line, "query   %s\nparsed  %.*s\ntype    %s\n", p->text,
             (int)q.len, q.ptr ? (const char *)q.ptr : "", tvs_plan_type(p));
    tvs_buf_dispose(&q);
    if (!rc) rc = tvs_buf_append(b, line, strlen(line));
    for (size_t i = 0; !rc && i < p->n_leaves; i++) {
        const qleaf *l = &p->leaves[i];
        tvs_id_hex(h, &l->id);
        int n = snprintf(line, sizeof line, "ref     %s = %s model %s", l->label,
                         l->is_delta ? "delta" : "full", h);
        if (l->is_delta) {
            tvs_id_hex(h, &l->m.base);
            n += snprintf(line + n, sizeof line - n, ", base %s", h);
        }
        snprintf(line + n, sizeof line - n, "\n");
        rc = tvs_buf_append(b, line, strlen(line));
        if (!rc)
            rc = explain_lineage(b, p, l->is_delta ? &l->m.base : &l->id);
    }
    if (!rc) rc = tvs_buf_append(b, "plan\n", 5);
    if (!rc) rc = explain_op(b, p, p->root, 0);
    size_t copies = 0, evals = 0;
    uint64_t largest = 0;
    for (size_t i = 0; i < p->n_tensors; i++) {
        copies += p->tensors[i].src == SRC_COPY;
        evals += p->tensors[i].src == SRC_EVAL;
        largest = TVS_MAX(largest, p->tensors[i].nbytes);
    }
    char sz[32], mem[32], lg[32];
    tvs_fmt_bytes(sz, sizeof sz, (double)p->size);
    tvs_fmt_bytes(lg, sizeof lg, (double)largest);
    tvs_fmt_bytes(mem, sizeof mem, (double)tvs__exec_block_bytes(p));
    snprintf(line, sizeof line,
             "output  %zu tensors, %llu bytes (%s)%s\n"
             "kernels %zu copied bit-exact (a single stored tensor with weight 1), %zu "
             "computed in f32 and rounded to nearest even\n"
             "memory  at most %s in flight, whatever the model size (largest tensor %s)\n",
             p->n_tensors, (unsigned long long)p->size, sz,
             p->copy_file ? ", a stored file copied byte for byte" : "", copies, evals, mem, lg);
    if (!rc) rc = tvs_buf_append(b, line, strlen(line));
    for (size_t i = 0; !rc && i < p->n_tensors; i++) {
        const qtensor *t = &p->tensors[i];
        snprintf(line, sizeof line, "  %-52s %-5s %12llu bytes at %-12llu %s\n", t->name,
                 tvs_dtype_name(t->dtype), (unsigned long long)t->nbytes,
                 (unsigned long long)t->offset, t->src == SRC_COPY ? "copy" : "compute");
        rc = tvs_buf_append(b, line, strlen(line));
    }
    return rc;
}
