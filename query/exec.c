/*
 * Execution (query/plan.h, tvs_plan_exec): the output is cut into blocks
 * (a stored chunk's bytes for copied tensors, TVS_BLOCK_ELEMS elements for
 * computed ones); a pool of threads computes blocks into reused buffers and
 * the calling thread hands them to the sink in order. Each worker reads the
 * store through its own read transaction, and the store's gc lock is held
 * shared for the whole run, so nothing the plan names can be collected
 * under it.
 *
 * Arithmetic is f32, in the order SPEC.md gives ("Queries", operation
 * order): products and sums rounded one at a time (the build disables FMA
 * contraction), results rounded to the output dtype to nearest even. The
 * bytes are the same for any thread count.
 */
#include "query/plan_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/pipe.h"
#include "engine/tensor.h"
#include "format/codec.h"
#include "format/dtype.h"

#define MAX_BUFS 256         /* f32 block buffers per worker (lazily): op tree depth + merge width */
#define ROOT_CACHE 4         /* decoded root chunks kept per worker */

typedef struct {
    tvs_txn *txn;
    tvs_codec_ctx *ctx;
    uint8_t *raw;            /* one decoded chunk, for partial reads */
    uint8_t *scratch;        /* chunk decode scratch */
    size_t chunk_cap;        /* bytes of raw and of scratch */
    uint8_t *stage;          /* a block of stored elements before conversion */
    float *buf[MAX_BUFS];    /* block buffers, allocated when first used */
    tvs_tensor_chain *chain; /* cache: the last tensor's chain */
    tvs_id chain_id;
    int has_chain;
    struct {                 /* decoded root chunks: a base read as a leaf and again
                                under a delta is decoded once */
        const uint8_t *key;  /* the stored chunk's address in the map */
        uint8_t *buf;
        size_t len;
        uint64_t used;
    } cache[ROOT_CACHE];
    uint64_t tick;
} worker;

typedef struct {
    tvs_plan *p;
    worker *w;
    int n_workers;
    uint64_t first_block;
    size_t *prep;             /* tensors whose thresholds the prepare phase computes */
    size_t n_prep;
} exec_state;

size_t tvs__exec_block_bytes(const tvs_plan *p)
{
    int threads = p->threads > 0 ? p->threads : tvs__ncpu();
    size_t depth = 4 * (size_t)threads + 4;
    size_t slot = (size_t)TVS_BLOCK_ELEMS * 8;
    size_t per_worker = 6u * TVS_CHUNK_SIZE + 2u * TVS_CHUNK_SIZE +
                        (size_t)4 * TVS_BLOCK_ELEMS * 4;
    return depth * slot + (size_t)threads * per_worker;
}

static unsigned width(tvs_dtype t) { return tvs_dtype_bits(t) / 8; }

static int chain_of(worker *w, const tvs_id *id)
{
    if (w->has_chain && tvs_id_eq(&w->chain_id, id))
        return 0;
    w->has_chain = 0;
    int rc = tvs_tensor_chain_load(w->chain, w->txn, id);
    if (!rc) {
        w->chain_id = *id;
        w->has_chain = 1;
    }
    return rc;
}

/* The root level of a planned chunk into @p dst, through the cache. */
static int decode_root(worker *w, uint8_t *dst, const tvs_chunk_plan *plan)
{
    tvs_span root = plan->chunk[plan->depth - 1];
    size_t victim = 0;
    for (size_t i = 0; i < ROOT_CACHE; i++) {
        if (w->cache[i].key == root.ptr && w->cache[i].len == plan->raw_len) {
            w->cache[i].used = ++w->tick;
            memcpy(dst, w->cache[i].buf, plan->raw_len);
            return 0;
        }
        if (w->cache[i].used < w->cache[victim].used)
            victim = i;
    }
    int rc = tvs_chunk_decode(dst, plan->raw_len, root, w->ctx);
    if (!rc && plan->raw_len <= TVS_CHUNK_SIZE) {
        memcpy(w->cache[victim].buf, dst, plan->raw_len);
        w->cache[victim].key = root.ptr;
        w->cache[victim].len = plan->raw_len;
        w->cache[victim].used = ++w->tick;
    }
    return rc;
}

/* Make raw and scratch hold a chunk of @p n bytes (stores may use up to 64 MiB). */
static int chunk_room(worker *w, size_t n)
{
    if (n <= w->chunk_cap)
        return 0;
    uint8_t *r = tvs_realloc(w->raw, n), *sc = r ? tvs_realloc(w->scratch, n) : NULL;
    if (r)
        w->raw = r;
    if (sc)
        w->scratch = sc;
    if (!r || !sc)
        return tvs__fail(TVS_ENOMEM, "query: out of memory for a %zu-byte chunk", n);
    w->chunk_cap = n;
    return 0;
}

/* Block buffer @p k, allocated the first time it is asked for. */
static float *buf_of(worker *w, int k)
{
    if (k < 0 || k >= MAX_BUFS)
        return NULL;
    if (!w->buf[k])
        w->buf[k] = tvs_malloc((size_t)TVS_BLOCK_ELEMS * sizeof(float));
    return w->buf[k];
}

/* Bytes [lo, hi) of stored tensor @p id into @p dst. */
static int read_bytes(worker *w, uint8_t *dst, const tvs_id *id, uint64_t lo, uint64_t hi)
{
    int rc = chain_of(w, id);
    if (rc)
        return rc;
    const tvs_tensor_obj *t = &w->chain->t[0];
    if ((rc = chunk_room(w, t->chunk_size)))
        return rc;
    if (hi > t->nbytes || lo > hi)
        return tvs__fail(TVS_ECORRUPT, "query: read past the end of a tensor");
    uint64_t cs = t->chunk_size;
    for (uint64_t c = lo / cs; lo < hi; c++) {
        uint64_t c0 = c * cs, c1 = TVS_MIN(c0 + cs, t->nbytes);
        uint64_t a = TVS_MAX(lo, c0), b = TVS_MIN(hi, c1);
        tvs_chunk_plan plan;
        if ((rc = tvs_chunk_plan_make(&plan, w->txn, w->chain, (uint32_t)c)))
            return rc;
        uint8_t *out = (a == c0 && b == c1) ? dst : w->raw;   /* whole chunk: in place */
        if (!(rc = decode_root(w, out, &plan)))
            rc = tvs_chunk_plan_apply(out, w->scratch, &plan, w->ctx);
        if (!rc && out != dst)
            memcpy(dst, w->raw + (a - c0), (size_t)(b - a));
        if (rc)
            return rc;
        dst += b - a;
        lo = b;
    }
    return 0;
}

static int read_f32(worker *w, float *dst, const tvs_id *id, tvs_dtype dt, uint64_t e0,
                    uint64_t e1, uint8_t *stage)
{
    unsigned wd = width(dt);
    int rc = read_bytes(w, stage, id, e0 * wd, e1 * wd);
    return rc ? rc : tvs_dtype_to_f32(dst, stage, (size_t)(e1 - e0), dt);
}

static inline uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t name_hash(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;   /* FNV-1a 64 */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ull;
    return h;
}

static int eval_select(worker *w, const tvs_plan *p, const qtensor *t, const qop *o,
                       uint64_t e0, uint64_t e1, float *dst, int depth, uint8_t *stage);

/* Evaluate op @p o over elements [e0, e1) of tensor @p t into @p dst. */
static int eval(worker *w, const tvs_plan *p, const qtensor *t, const qop *o, uint64_t e0,
                uint64_t e1, float *dst, int depth, uint8_t *stage)
{
    size_t n = (size_t)(e1 - e0);
    int rc = 0;
    float *tmp = buf_of(w, depth + 1);
    if (!tmp)
        return tvs__fail(depth + 1 >= MAX_BUFS ? TVS_EINVAL : TVS_ENOMEM,
                         "query: expression needs more than %d block buffers", MAX_BUFS);
    switch (o->op) {
    case OP_SCALAR:
        return tvs__fail(TVS_EINVAL, "query: a bare number cannot be evaluated as a tensor");
    case OP_FULL:
        return read_f32(w, dst, &t->leaf_t[o->leaf], t->leaf_dt[o->leaf], e0, e1, stage);
    case OP_DELTA: {
        tvs_tensor_obj bt;
        if ((rc = read_f32(w, dst, &t->leaf_t[o->leaf], t->leaf_dt[o->leaf], e0, e1, stage)))
            return rc;
        if ((rc = tvs_tensor_load(&bt, w->txn, &t->leaf_b[o->leaf])) ||
            (rc = read_f32(w, tmp, &t->leaf_b[o->leaf], bt.dtype, e0, e1, stage)))
            return rc;
        for (size_t i = 0; i < n; i++)
            dst[i] = dst[i] - tmp[i];
        return 0;
    }
    case OP_LIN:
        if ((rc = eval(w, p, t, o->kids[0], e0, e1, dst, depth + 1, stage)))
            return rc;
        if (o->w[0] != 1.0) {
            float w0 = (float)o->w[0];
            for (size_t i = 0; i < n; i++)
                dst[i] = w0 * dst[i];
        }
        for (size_t k = 1; k < o->n; k++) {
            if ((rc = eval(w, p, t, o->kids[k], e0, e1, tmp, depth + 1, stage)))
                return rc;
            float wk = (float)o->w[k];
            if (wk == 1.0f)
                for (size_t i = 0; i < n; i++)
                    dst[i] = dst[i] + tmp[i];
            else
                for (size_t i = 0; i < n; i++)
                    dst[i] = dst[i] + wk * tmp[i];
        }
        return 0;
    case OP_DARE: {
        float scale = (float)(1.0 / (1.0 - o->drop)), lambda = (float)o->lambda;
        uint64_t thr = (uint64_t)(o->drop * 9007199254740992.0);   /* drop * 2^53 */
        uint64_t nh = name_hash(t->name);
        for (size_t i = 0; i < n; i++)
            dst[i] = 0.0f;
        for (size_t k = 0; k < o->n; k++) {
            if ((rc = eval(w, p, t, o->kids[k], e0, e1, tmp, depth + 1, stage)))
                return rc;
            uint64_t key = splitmix64(splitmix64(o->seed ^ (k + 1) * 0xd1b54a32d192ed03ull) ^ nh);
            for (size_t i = 0; i < n; i++) {
                uint64_t r = splitmix64(key + e0 + i) >> 11;   /* uniform in [0, 2^53) */
                float v = r >= thr ? tmp[i] * scale : 0.0f;
                dst[i] = dst[i] + v;
            }
        }
        if (lambda != 1.0f)
            for (size_t i = 0; i < n; i++)
                dst[i] = lambda * dst[i];
        return 0;
    }
    case OP_TIES:
    case OP_CRUMBS:
        return eval_select(w, p, t, o, e0, e1, dst, depth, stage);
    }
    return tvs__fail(TVS_EINVAL, "query: unknown op");
}

static inline uint32_t mag_bits(float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    return u & 0x7fffffffu;
}

/* TIES and breadcrumbs over one block, thresholds already in t->thr. */
static int eval_select(worker *w, const tvs_plan *p, const qtensor *t, const qop *o,
                       uint64_t e0, uint64_t e1, float *dst, int depth, uint8_t *stage)
{
    size_t n = (size_t)(e1 - e0);
    float lambda = (float)o->lambda;
    if (!t->thr)
        return tvs__fail(TVS_ERROR, "query: thresholds of \"%s\" were not computed", t->name);
    const float *thr = t->thr + o->sel;
    if (o->op == OP_CRUMBS) {
        float *tmp = buf_of(w, depth + 1);
        if (!tmp)
            return tvs__fail(TVS_ENOMEM, "query: out of block buffers");
        for (size_t i = 0; i < n; i++)
            dst[i] = 0.0f;
        for (size_t k = 0; k < o->n; k++) {
            int rc = eval(w, p, t, o->kids[k], e0, e1, tmp, depth + 1, stage);
            if (rc)
                return rc;
            uint32_t lo, hi;
            memcpy(&lo, &thr[2 * k], 4);
            memcpy(&hi, &thr[2 * k + 1], 4);
            for (size_t i = 0; i < n; i++) {   /* branch-free: vectorizes */
                uint32_t u, a;
                memcpy(&u, &tmp[i], 4);
                a = u & 0x7fffffffu;
                u &= (uint32_t)-(uint32_t)(a >= lo && a <= hi);
                float v;
                memcpy(&v, &u, 4);
                dst[i] = dst[i] + v;
            }
        }
    } else {
        /* TIES: every trimmed delta of the block at once */
        for (size_t k = 0; k <= o->n; k++)
            if (!buf_of(w, depth + 1 + (int)k))
                return tvs__fail(TVS_EINVAL, "query: ties() of %zu deltas at this depth needs "
                                 "more than %d block buffers", o->n, MAX_BUFS);
        for (size_t k = 0; k < o->n; k++) {
            float *v = w->buf[depth + 1 + k];
            int rc = eval(w, p, t, o->kids[k], e0, e1, v, depth + 1 + (int)o->n, stage);
            if (rc)
                return rc;
            uint32_t lo;
            memcpy(&lo, &thr[2 * k], 4);
            for (size_t i = 0; i < n; i++) {   /* branch-free: vectorizes */
                uint32_t u;
                memcpy(&u, &v[i], 4);
                u &= (uint32_t)-(uint32_t)((u & 0x7fffffffu) >= lo);
                memcpy(&v[i], &u, 4);
            }
        }
        /* the elected sign: the sum of the trimmed values, kid by kid over
         * the block; then per element the mean of the values of that sign
         * (a select, not a branch: adding 0 leaves the sums as they were) */
        float *const *v = (float *const *)&w->buf[depth + 1];
        for (size_t i = 0; i < n; i++)
            dst[i] = v[0][i];
        for (size_t k = 1; k < o->n; k++)
            for (size_t i = 0; i < n; i++)
                dst[i] = dst[i] + v[k][i];
        for (size_t i = 0; i < n; i++) {
            float sum = dst[i], kept = 0.0f, c = 0.0f;
            for (size_t k = 0; k < o->n; k++) {
                float x = v[k][i];
                int match = (sum > 0.0f && x > 0.0f) || (sum < 0.0f && x < 0.0f);
                kept = kept + (match ? x : 0.0f);
                c = c + (match ? 1.0f : 0.0f);
            }
            dst[i] = c > 0.0f ? kept / c : 0.0f;
        }
    }
    if (lambda != 1.0f)
        for (size_t i = 0; i < n; i++)
            dst[i] = lambda * dst[i];
    return 0;
}

/* ---- thresholds: exact order statistics of |delta| by a two-pass radix select */

typedef struct {
    uint64_t rank;      /* 1-based rank among all elements, ascending; 0 = none */
    uint32_t value;     /* the result: magnitude bits */
    uint32_t bin;       /* pass 1 result: the high 16 bits */
    uint64_t below;     /* elements in lower bins */
} selection;

/*
 * One pass over the tensor for every argument of a selecting op at once, so
 * the arguments' shared base chunk is decoded once per block (the worker's
 * root cache), not once per argument. Pass 1 counts the high 16 bits of
 * each |value|; pass 2 counts the low 16 bits inside the bin pass 1 chose.
 */
static int select_pass(worker *w, const tvs_plan *p, const qtensor *t, const qop *o,
                       selection (*sel)[2], int pass, uint32_t *hist)
{
    int rc = 0;
    memset(hist, 0, o->n * 2 * 65536 * sizeof *hist);
    float *v = buf_of(w, 0);   /* the prepare phase runs before any block: buf[0] is free */
    if (!v)
        return tvs__fail(TVS_ENOMEM, "query: out of memory");
    for (uint64_t e0 = 0; !rc && e0 < t->n_elems; e0 += TVS_BLOCK_ELEMS) {
        uint64_t e1 = TVS_MIN(e0 + TVS_BLOCK_ELEMS, t->n_elems);
        for (size_t k = 0; !rc && k < o->n; k++) {
            if ((rc = eval(w, p, t, o->kids[k], e0, e1, v, 0, w->stage)))
                break;
            uint32_t *h = hist + k * 2 * 65536;
            for (size_t i = 0; i < e1 - e0; i++) {
                uint32_t a = mag_bits(v[i]);
                if (pass == 1) {
                    h[a >> 16]++;
                } else {
                    for (size_t s = 0; s < 2; s++)
                        if (sel[k][s].rank && (a >> 16) == sel[k][s].bin)
                            h[s * 65536 + (a & 0xffff)]++;
                }
            }
        }
    }
    if (rc)
        return rc;
    for (size_t k = 0; k < o->n; k++)
        for (size_t s = 0; s < 2; s++) {
            selection *x = &sel[k][s];
            if (!x->rank)
                continue;
            uint64_t c = pass == 1 ? 0 : x->below;
            const uint32_t *h = hist + k * 2 * 65536 + (pass == 1 ? 0 : s * 65536);
            for (uint32_t b = 0; b < 65536; b++) {
                if (c + h[b] >= x->rank) {
                    if (pass == 1) {
                        x->bin = b;
                        x->below = c;
                    } else {
                        x->value = x->bin << 16 | b;
                    }
                    break;
                }
                c += h[b];
            }
        }
    return 0;
}

static void put_bits(float *dst, uint32_t bits) { memcpy(dst, &bits, 4); }

static int prepare_op(worker *w, const tvs_plan *p, qtensor *t, const qop *o)
{
    for (size_t k = 0; o->op >= OP_LIN && k < o->n; k++) {
        int rc = prepare_op(w, p, t, o->kids[k]);
        if (rc)
            return rc;
    }
    if (o->op != OP_TIES && o->op != OP_CRUMBS)
        return 0;
    uint64_t N = t->n_elems;
    selection (*sel)[2] = tvs_calloc(o->n, sizeof *sel);
    uint32_t *hist = tvs_malloc(o->n * 2 * 65536 * sizeof *hist);
    int rc = (!sel || !hist) ? tvs__fail(TVS_ENOMEM, "query: out of memory") : 0;
    for (size_t k = 0; !rc && k < o->n; k++) {
        if (o->op == OP_TIES) {
            uint64_t m = (uint64_t)floor(o->drop * (double)N);
            sel[k][0].rank = m ? N - m + 1 : 0;    /* the m-th largest */
        } else {
            uint64_t mb = (uint64_t)floor(o->bottom * (double)N);
            uint64_t mt = (uint64_t)floor(o->top * (double)N);
            sel[k][0].rank = mb < N ? mb + 1 : 0;
            sel[k][1].rank = mt ? (N > mt ? N - mt : 0) : 0;
        }
    }
    if (!rc)
        rc = select_pass(w, p, t, o, sel, 1, hist);
    if (!rc)
        rc = select_pass(w, p, t, o, sel, 2, hist);
    for (size_t k = 0; !rc && k < o->n; k++) {
        float *thr = t->thr + o->sel + 2 * k;
        /* no element reaches 0xffffffff: "keep none"; 0x7fffffff: "no upper cut" */
        put_bits(&thr[0], sel[k][0].rank ? sel[k][0].value : 0xffffffffu);
        if (o->op == OP_CRUMBS) {
            uint64_t mt = (uint64_t)floor(o->top * (double)N);
            put_bits(&thr[1], mt == 0 ? 0x7fffffffu : sel[k][1].rank ? sel[k][1].value : 0u);
        }
    }
    tvs_free(sel);
    tvs_free(hist);
    return rc;
}

static int prepare_tensor(void *payload, int wi, size_t job, uint8_t *slot, size_t cap,
                          size_t *len)
{
    exec_state *e = payload;
    qtensor *t = &e->p->tensors[e->prep[job]];
    *len = 0;
    int rc = prepare_op(&e->w[wi], e->p, t, e->p->root);
    return rc ? tvs__failctx(rc, "tensor \"%s\"", t->name) : 0;
}

/* Thresholds for every computed tensor in [b0, b1) that needs them, in parallel. */
static int prepare(exec_state *e, uint64_t b0, uint64_t b1, int threads)
{
    tvs_plan *p = e->p;
    if (!p->n_sel)
        return 0;
    e->prep = tvs_calloc(p->n_tensors + 1, sizeof *e->prep);
    if (!e->prep)
        return tvs__fail(TVS_ENOMEM, "query: out of memory");
    for (size_t i = 0; i < p->n_tensors; i++) {
        qtensor *t = &p->tensors[i];
        if (t->src != SRC_EVAL || t->thr || !t->n_blocks || t->first_block >= b1 ||
            t->first_block + t->n_blocks <= b0)
            continue;
        if (!(t->thr = tvs_calloc(p->sel_slots, sizeof *t->thr)))
            return tvs__fail(TVS_ENOMEM, "query: out of memory");
        e->prep[e->n_prep++] = i;
    }
    if (!e->n_prep)
        return 0;
    tvs__pipe *pipe;
    int rc = tvs__pipe_start(&pipe, threads, e->n_prep, 2 * (size_t)threads, 1,
                             prepare_tensor, e);
    for (size_t i = 0; !rc && i < e->n_prep; i++) {
        size_t job, n;
        uint8_t *data;
        rc = tvs__pipe_next(pipe, &job, &data, &n);
    }
    if (pipe)
        tvs__pipe_stop(pipe);
    if (rc)   /* half-computed thresholds must not be used by a later run */
        for (size_t i = 0; i < e->n_prep; i++) {
            tvs_free(p->tensors[e->prep[i]].thr);
            p->tensors[e->prep[i]].thr = NULL;
        }
    return rc;
}

/* The tensor that block @p b (global index) belongs to. */
static size_t tensor_of(const tvs_plan *p, uint64_t b)
{
    size_t lo = 0, hi = p->n_tensors;
    while (hi - lo > 1) {
        size_t mid = (lo + hi) / 2;
        if (p->tensors[mid].first_block <= b)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

/* Output bytes of block k of tensor t, relative to the tensor's start. */
static void block_range(const qtensor *t, uint64_t k, uint64_t *lo, uint64_t *hi)
{
    uint64_t bb;
    if (t->src == SRC_COPY && t->dtype == t->src_dtype)
        bb = TVS_CHUNK_SIZE;
    else
        bb = (uint64_t)TVS_BLOCK_ELEMS * width(t->dtype);
    *lo = k * bb;
    *hi = TVS_MIN(*lo + bb, t->nbytes);
}

static int run_block(void *payload, int wi, size_t job, uint8_t *slot, size_t cap,
                     size_t *len)
{
    exec_state *e = payload;
    const tvs_plan *p = e->p;
    worker *w = &e->w[wi];
    uint64_t b = e->first_block + job;
    const qtensor *t = &p->tensors[tensor_of(p, b)];
    uint64_t k = b - t->first_block, lo, hi;
    block_range(t, k, &lo, &hi);
    *len = (size_t)(hi - lo);
    if (*len > cap)
        return tvs__fail(TVS_ERROR, "query: block of %zu bytes over the %zu-byte slot", *len,
                         cap);
    int rc;
    if (t->src == SRC_COPY && t->dtype == t->src_dtype) {
        rc = read_bytes(w, slot, &t->copy, lo, hi);
    } else {
        unsigned ow = width(t->dtype);
        uint64_t e0 = lo / ow, e1 = hi / ow;
        float *acc = buf_of(w, 0);
        if (!acc)
            return tvs__fail(TVS_ENOMEM, "query: out of memory");
        if (t->src == SRC_COPY)
            rc = read_f32(w, acc, &t->copy, t->src_dtype, e0, e1, w->stage);
        else
            rc = eval(w, p, t, p->root, e0, e1, acc, 0, w->stage);
        if (!rc)
            rc = tvs_dtype_from_f32(slot, acc, (size_t)(e1 - e0), t->dtype);
    }
    return rc ? tvs__failctx(rc, "tensor \"%s\"", t->name) : 0;
}

static void workers_free(exec_state *e)
{
    for (int i = 0; e->w && i < e->n_workers; i++) {
        worker *w = &e->w[i];
        tvs_txn_end(w->txn);
        tvs_codec_ctx_free(w->ctx);
        tvs_free(w->raw);
        tvs_free(w->scratch);
        tvs_free(w->stage);
        tvs_free(w->chain);
        for (int k = 0; k < ROOT_CACHE; k++)
            tvs_free(w->cache[k].buf);
        for (int k = 0; k < MAX_BUFS; k++)
            tvs_free(w->buf[k]);
    }
    tvs_free(e->w);
}

static int workers_new(exec_state *e, tvs_store *s, int n)
{
    if (!(e->w = tvs_calloc((size_t)n, sizeof *e->w)))
        return tvs__fail(TVS_ENOMEM, "query: out of memory");
    e->n_workers = n;
    for (int i = 0; i < n; i++) {
        worker *w = &e->w[i];
        int rc = tvs_txn_begin(&w->txn, s, TVS_TXN_READ);
        if (!rc)
            rc = tvs_codec_ctx_new(&w->ctx, TVS_CHUNK_MAX);
        if (rc)
            return rc;
        w->stage = tvs_malloc((size_t)TVS_BLOCK_ELEMS * 8);
        w->chain = tvs_malloc(sizeof *w->chain);
        if ((rc = chunk_room(w, TVS_CHUNK_SIZE)))
            return rc;
        for (int k = 0; k < ROOT_CACHE; k++)
            if (!(w->cache[k].buf = tvs_malloc(TVS_CHUNK_SIZE)))
                return tvs__fail(TVS_ENOMEM, "query: out of memory");
        if (!w->stage || !w->chain)
            return tvs__fail(TVS_ENOMEM, "query: out of memory");
    }
    return 0;
}

/*
 * A stored tensor copied as it is, and wholly inside the range, is checked
 * against its checksum as its blocks go by, like export does: damaged
 * stored bytes fail the run instead of reaching the output.
 */
static int check_copy(const tvs_plan *p, const qtensor *t, uint64_t k, const uint8_t *data,
                      size_t n, uint64_t a, uint64_t end, tvs_hasher *h)
{
    if (t->src != SRC_COPY || t->dtype != t->src_dtype || t->offset < a ||
        t->offset + t->nbytes > end)
        return 0;
    if (k == 0)
        tvs_hasher_reset(h);
    tvs_hasher_update(h, data, n);
    if (k + 1 < t->n_blocks)
        return 0;
    tvs_tensor_obj ct;
    tvs_id sum;
    int rc = tvs_tensor_load(&ct, p->txn, &t->copy);
    if (rc)
        return rc;
    tvs_hasher_final(&sum, h);
    if (!tvs_id_eq(&sum, &ct.checksum))
        return tvs__fail(TVS_ECORRUPT, "tensor \"%s\": decoded bytes do not match the stored "
                         "checksum; the store is damaged (run 'tvs fsck')", t->name);
    return 0;
}

int tvs_plan_exec(tvs_plan *p, uint64_t off, uint64_t len, tvs_sink_fn sink, void *payload)
{
    uint64_t end = off <= p->size && len <= p->size - off ? off + len : p->size;
    int rc = 0;
    if (off > p->size)
        return tvs__fail(TVS_EINVAL, "query: range starts at %llu, past the end (%llu)",
                         (unsigned long long)off, (unsigned long long)p->size);
    if (off < p->header_len && off < end) {
        uint64_t h1 = TVS_MIN(end, (uint64_t)p->header_len);
        if ((rc = sink(payload, p->header + off, (size_t)(h1 - off))))
            return rc;
    }
    if (end <= p->header_len || p->n_tensors == 0)
        return 0;
    /* the blocks overlapping [max(off, header), end) */
    uint64_t a = TVS_MAX(off, (uint64_t)p->header_len);
    uint64_t b0 = UINT64_MAX, b1 = 0;
    for (size_t i = 0; i < p->n_tensors; i++) {
        const qtensor *t = &p->tensors[i];
        if (t->offset + t->nbytes <= a || t->offset >= end || t->nbytes == 0)
            continue;
        uint64_t lo, hi;
        block_range(t, 0, &lo, &hi);
        uint64_t bb = hi - lo;
        uint64_t k0 = (TVS_MAX(a, t->offset) - t->offset) / bb;
        uint64_t k1 = (TVS_MIN(end, t->offset + t->nbytes) - t->offset - 1) / bb;
        b0 = TVS_MIN(b0, t->first_block + k0);
        b1 = TVS_MAX(b1, t->first_block + k1 + 1);
    }
    if (b0 == UINT64_MAX)
        return 0;
    exec_state e = { p, NULL, 0, b0, NULL, 0 };
    int threads = p->threads > 0 ? p->threads : tvs__ncpu();
    tvs__pipe *pipe = NULL;
    tvs_hasher *hasher = NULL;
    tvs_store *s = p->store;
    int locked = 0;
    if ((rc = tvs_store_lock(s, 0, 1)))
        return rc;
    locked = 1;
    if ((rc = workers_new(&e, s, threads)) || (rc = prepare(&e, b0, b1, threads)))
        goto out;
    if ((rc = tvs__pipe_start(&pipe, threads, (size_t)(b1 - b0), 4 * (size_t)threads + 4,
                              (size_t)TVS_BLOCK_ELEMS * 8, run_block, &e)))
        goto out;
    if ((rc = tvs_hasher_new(&hasher)))
        goto out;
    for (uint64_t i = b0; i < b1; i++) {
        size_t job, n;
        uint8_t *data;
        if ((rc = tvs__pipe_next(pipe, &job, &data, &n)))
            break;
        const qtensor *t = &p->tensors[tensor_of(p, b0 + job)];
        uint64_t k = b0 + job - t->first_block, lo, hi;
        block_range(t, k, &lo, &hi);
        uint64_t s0 = t->offset + lo, s1 = t->offset + hi;   /* file bytes of this block */
        uint64_t c0 = TVS_MAX(s0, a), c1 = TVS_MIN(s1, end);
        if ((rc = check_copy(p, t, k, data, n, a, end, hasher)))
            break;
        if (c0 < c1 && (rc = sink(payload, data + (c0 - s0), (size_t)(c1 - c0))))
            break;
    }
out:
    tvs__pipe_stop(pipe);
    tvs_hasher_free(hasher);
    workers_free(&e);
    tvs_free(e.prep);
    if (locked)
        tvs_store_unlock(s);
    return rc;
}
