/*
 * fsck: every object's bytes against its id, every object's encoding,
 * every ref's graph, every reachable tensor's decoded checksum.
 */
#include "engine/maint.h"
#include "engine/store_int.h"
#include "engine/tensor.h"
#include "format/codec.h"

#include <stdarg.h>
#include <stdio.h>

typedef struct {
    tvs_txn *txn;
    tvs_fsck_result *res;
    void (*report)(void *, const char *);
    void *payload;
    tvs__idset seen;
    tvs_codec_ctx *ctx;
    uint8_t *buf;
    tvs_hasher *h;
    const char *ref;
    tvs_tensor_chain chain;
    tvs_chunk_plan plan;
} fsck_state;

static void problem(fsck_state *f, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void problem(fsck_state *f, const char *fmt, ...)
{
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    f->res->problems++;
    if (f->report)
        f->report(f->payload, line);
}

/* Pass 1: each object's bytes hash to its key and decode as their type. */
static int object_fn(const tvs_id *id, tvs_span b, void *p)
{
    fsck_state *f = p;
    char hex[TVS_ID_HEX + 1], got[TVS_ID_HEX + 1];
    tvs_id h;
    f->res->objects++;
    f->res->bytes += b.len;
    tvs_id_of(&h, b.ptr, b.len);
    tvs_id_hex(hex, id);
    if (!tvs_id_eq(&h, id)) {
        tvs_id_hex(got, &h);
        problem(f, "object %s: stored bytes hash to %s (%zu bytes damaged)", hex, got, b.len);
        return 0;
    }
    int type = b.len ? b.ptr[0] : 0, rc = 0;
    uint8_t codec;
    uint32_t raw;
    tvs_tensor_obj t;
    tvs_model_obj m;
    switch (type) {
    case TVS_OBJ_CHUNK:
        rc = tvs_chunk_info(&codec, &raw, b);
        break;
    case TVS_OBJ_TENSOR:
        rc = tvs_tensor_decode(&t, b);
        break;
    case TVS_OBJ_MODEL:
        if (!(rc = tvs_model_decode(&m, b)))
            tvs_model_dispose(&m);
        break;
    default:
        rc = tvs__fail(TVS_ECORRUPT, "unknown object type %d", type);
    }
    if (rc == TVS_ENOMEM)
        return rc;
    if (rc)
        problem(f, "object %s: %s", hex, tvs_errmsg());
    return 0;
}

static int check_tensor(fsck_state *f, const tvs_id *id, tvs_span b)
{
    char hex[TVS_ID_HEX + 1];
    tvs_id_hex(hex, id);
    if (tvs_tensor_chain_load(&f->chain, f->txn, id)) {
        problem(f, "ref '%s': tensor %s: %s", f->ref, hex, tvs_errmsg());
        return 0;
    }
    const tvs_tensor_obj *t = &f->chain.t[0];
    tvs_hasher_reset(f->h);
    for (uint32_t c = 0; c < t->n_chunks; c++) {
        if (tvs_chunk_plan_make(&f->plan, f->txn, &f->chain, c))
            return 0;   /* a missing chunk is reported by the walk */
        if (tvs_chunk_plan_decode(f->buf, f->buf + TVS_CHUNK_MAX, &f->plan, f->ctx)) {
            problem(f, "ref '%s': tensor %s chunk %u does not decode: %s", f->ref, hex, c,
                    tvs_errmsg());
            return 0;
        }
        tvs_hasher_update(f->h, f->buf, f->plan.raw_len);
        f->res->decoded_bytes += f->plan.raw_len;
    }
    tvs_id sum;
    tvs_hasher_final(&sum, f->h);
    f->res->tensors_checked++;
    if (!tvs_id_eq(&sum, &t->checksum))
        problem(f, "ref '%s': tensor %s: decoded bytes do not match its checksum", f->ref,
                hex);
    return 0;
}

static int walk_fn(void *p, const tvs_id *id, int type, int status, tvs_span b)
{
    fsck_state *f = p;
    char hex[TVS_ID_HEX + 1];
    tvs_id_hex(hex, id);
    if (status == TVS_ENOTFOUND) {
        problem(f, "ref '%s': %s %s is missing", f->ref, tvs_object_type_name(type), hex);
        return 0;
    }
    if (status) {
        problem(f, "ref '%s': %s %s is damaged: %s", f->ref, tvs_object_type_name(type), hex,
                tvs_errmsg());
        return 0;
    }
    return type == TVS_OBJ_TENSOR ? check_tensor(f, id, b) : 0;
}

static int ref_fn(const char *name, const tvs_id *id, void *p)
{
    fsck_state *f = p;
    f->ref = name;
    return tvs__walk(f->txn, id, &f->seen, walk_fn, f);
}

/* The indexes: every entry names objects that exist and says what they do. */
static int check_lineage(const tvs_id *from, int rel, const tvs_id *to, void *p)
{
    fsck_state *f = p;
    char a[TVS_ID_HEX + 1], b[TVS_ID_HEX + 1];
    tvs_id_hex(a, from);
    tvs_id_hex(b, to);
    tvs_model_obj m;
    if (tvs_model_load(&m, f->txn, to)) {
        problem(f, "lineage index: %s -> %s names a missing or damaged model", a, b);
        return 0;
    }
    int ok = rel == TVS_REL_DELTA ? m.kind == TVS_MODEL_DELTA && tvs_id_eq(&m.base, from) : 0;
    for (size_t i = 0; rel == TVS_REL_PARENT && i < m.n_parents; i++)
        ok |= tvs_id_eq(&m.parents[i], from);
    tvs_model_dispose(&m);
    if (!ok)
        problem(f, "lineage index: %s -> %s (relation %d) does not match the model", a, b,
                rel);
    return 0;
}

static int check_sum(const tvs_id *id, tvs_span b, void *p)
{
    fsck_state *f = p;
    if (b.len == 0 || b.ptr[0] != TVS_OBJ_TENSOR)
        return 0;
    tvs_tensor_obj t;
    tvs_id found;
    if (tvs_tensor_decode(&t, b))
        return 0;
    if (tvs_sums_get(&found, f->txn, &t.checksum) != 0) {
        char h[TVS_ID_HEX + 1];
        tvs_id_hex(h, id);
        problem(f, "checksum index: no entry for tensor %s", h);
        return 0;
    }
    tvs_span fb;
    tvs_tensor_obj ft;
    if (tvs_obj_get(&fb, f->txn, &found) || tvs_tensor_decode(&ft, fb) ||
        !tvs_id_eq(&ft.checksum, &t.checksum)) {
        char h[TVS_ID_HEX + 1];
        tvs_id_hex(h, &found);
        problem(f, "checksum index: entry names tensor %s, which is missing or holds "
                "other bytes", h);
    }
    return 0;
}

static int count_unreachable(const tvs_id *id, tvs_span b, void *p)
{
    fsck_state *f = p;
    if (!tvs__idset_has(&f->seen, id)) {
        f->res->unreachable++;
        f->res->unreachable_bytes += b.len;
    }
    return 0;
}

int tvs_fsck(tvs_fsck_result *out, tvs_store *s, void (*report)(void *, const char *),
             void *payload)
{
    fsck_state *f = tvs_calloc(1, sizeof *f);   /* holds a tensor chain: off the stack */
    memset(out, 0, sizeof *out);
    if (!f)
        return tvs__fail(TVS_ENOMEM, "out of memory");
    f->res = out;
    f->report = report;
    f->payload = payload;
    int rc = tvs_txn_begin(&f->txn, s, TVS_TXN_READ);
    if (!rc) rc = tvs_codec_ctx_new(&f->ctx, TVS_CHUNK_MAX);
    if (!rc) rc = tvs_hasher_new(&f->h);
    if (!rc && !(f->buf = tvs_malloc(2 * (size_t)TVS_CHUNK_MAX)))
        rc = tvs__fail(TVS_ENOMEM, "out of memory");
    if (!rc) rc = tvs_obj_foreach(f->txn, object_fn, f);
    if (!rc) rc = tvs_ref_foreach(f->txn, NULL, ref_fn, f);
    if (!rc) rc = tvs_obj_foreach(f->txn, count_unreachable, f);
    if (!rc) rc = tvs_lineage_foreach(f->txn, NULL, 0, check_lineage, f);
    if (!rc) rc = tvs_obj_foreach(f->txn, check_sum, f);
    tvs_txn_end(f->txn);
    tvs_codec_ctx_free(f->ctx);
    tvs_hasher_free(f->h);
    tvs_free(f->buf);
    tvs__idset_dispose(&f->seen);
    tvs_free(f);
    return rc;
}
