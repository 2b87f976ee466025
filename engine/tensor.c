/* Tensor chains and chunk decoding (engine/tensor.h). */
#include "engine/tensor.h"
#include "format/delta.h"
#include "format/lossy.h"

int tvs_tensor_chain_load(tvs_tensor_chain *c, tvs_txn *txn, const tvs_id *id)
{
    c->depth = 0;
    tvs_id cur = *id;
    for (;;) {
        char hex[TVS_ID_HEX + 1];
        if (c->depth == TVS_MAX_CHAIN) {
            tvs_id_hex(hex, id);
            return tvs__fail(TVS_ECORRUPT, "tensor %s: chain of bases longer than %d "
                             "(or a cycle)", hex, TVS_MAX_CHAIN);
        }
        tvs_tensor_obj *t = &c->t[c->depth];
        int rc = tvs_tensor_load(t, txn, &cur);
        if (rc)
            return rc;
        c->id[c->depth++] = cur;
        if (c->depth > 1) {
            const tvs_tensor_obj *top = &c->t[0];
            if (t->dtype != top->dtype || t->nbytes != top->nbytes ||
                t->chunk_size != top->chunk_size) {
                tvs_id_hex(hex, &cur);
                return tvs__fail(TVS_ECORRUPT, "tensor %s: a base in its chain differs in "
                                 "dtype, size or chunk size", hex);
            }
        }
        if (!tvs_encoding_has_base(t->encoding))
            return 0;
        cur = t->base;
    }
}

int tvs_chunk_plan_make(tvs_chunk_plan *p, tvs_txn *txn, const tvs_tensor_chain *c,
                        uint32_t i)
{
    p->depth = c->depth;
    p->raw_len = tvs_tensor_chunk_len(&c->t[0], i);
    p->dtype = c->t[0].dtype;
    for (uint32_t l = 0; l < c->depth; l++) {
        tvs_id cid;
        tvs_tensor_chunk_id(&cid, &c->t[l], i);
        int rc = tvs_obj_get(&p->chunk[l], txn, &cid);
        if (rc)
            return rc;
        p->transform[l] = c->t[l].encoding == TVS_ENC_LOSSY ? TVS_PLAN_LOSSY
                                                            : c->t[l].transform;
    }
    return 0;
}

int tvs_chunk_plan_decode(uint8_t *dst, uint8_t *scratch, const tvs_chunk_plan *p,
                          tvs_codec_ctx *ctx)
{
    int rc = tvs_chunk_decode(dst, p->raw_len, p->chunk[p->depth - 1], ctx);
    return rc ? rc : tvs_chunk_plan_apply(dst, scratch, p, ctx);
}

int tvs_chunk_plan_apply(uint8_t *dst, uint8_t *scratch, const tvs_chunk_plan *p,
                         tvs_codec_ctx *ctx)
{
    return tvs_chunk_plan_apply_to(dst, dst, scratch, p, ctx);
}

int tvs_chunk_plan_apply_to(uint8_t *dst, const uint8_t *root, uint8_t *scratch,
                            const tvs_chunk_plan *p, tvs_codec_ctx *ctx)
{
    int rc = 0;
    const uint8_t *from = root;   /* the level below's bytes: root, then dst */
    if (p->depth == 1 && dst != root)
        memcpy(dst, root, p->raw_len);
    for (uint32_t l = p->depth - 1; !rc && l-- > 0; from = dst) {
        if (p->transform[l] == TVS_PLAN_LOSSY) {
            tvs_span lc;
            unsigned w = tvs_dtype_bits(p->dtype) / 8;
            if (from != dst)
                memcpy(dst, from, p->raw_len);
            if (!(rc = tvs_chunk_view(&lc, p->chunk[l], ctx)))
                rc = tvs_lossy_chunk_apply(dst, p->dtype, p->raw_len / w, lc);
            continue;
        }
        /* planes of a delta: merge and apply in one pass */
        const uint8_t *planes[8];
        unsigned w;
        int rot;
        rc = tvs_chunk_decode_planes(planes, &w, &rot, p->raw_len, p->chunk[l], ctx);
        if (rc == 0 && !rot && w == tvs_delta_width(p->transform[l])) {
            rc = tvs_delta_apply_planes(dst, planes, w, from, p->raw_len, p->transform[l]);
            continue;
        }
        if (rc < 0)
            return rc;
        rc = tvs_chunk_decode(scratch, p->raw_len, p->chunk[l], ctx);
        if (!rc)
            rc = tvs_delta_apply(dst, scratch, from, p->raw_len, p->transform[l]);
    }
    return rc;
}
