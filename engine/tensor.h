/**
 * @file engine/tensor.h
 * @brief Decoding stored tensors, whatever their encoding: a delta tensor's
 *        chunk is rebuilt from its base's chunk, down a chain of bases.
 *
 * Decoding is split in two so that it can run on a thread pool: planning
 * (on the thread that owns the read transaction) resolves a chunk's spans
 * at every level of its base chain; decoding (on any thread) needs only
 * the plan, a codec context and scratch space. Plans borrow from the
 * transaction.
 */
#ifndef TVS_ENGINE_TENSOR_H
#define TVS_ENGINE_TENSOR_H

#include "engine/store.h"
#include "format/codec.h"

#define TVS_MAX_CHAIN 16   /**< longest base chain a reader follows */

/** A tensor and its bases: level 0 is the tensor, the last is chunked. */
typedef struct {
    tvs_tensor_obj t[TVS_MAX_CHAIN];
    tvs_id id[TVS_MAX_CHAIN];
    uint32_t depth;
} tvs_tensor_chain;

/**
 * Load tensor @p id and its chain of bases; every base must have the same
 * dtype, size and chunk size. @return 0, TVS_ENOTFOUND, TVS_ECORRUPT
 */
int tvs_tensor_chain_load(tvs_tensor_chain *out, tvs_txn *txn, const tvs_id *id);

#define TVS_PLAN_LOSSY 0xff   /**< plan transform of a lossy level (format/lossy.h) */

typedef struct {
    tvs_span chunk[TVS_MAX_CHAIN];   /**< chunk i at each level */
    uint8_t transform[TVS_MAX_CHAIN];   /**< TVS_DELTA_* or TVS_PLAN_LOSSY */
    tvs_dtype dtype;
    uint32_t depth;
    size_t raw_len;
} tvs_chunk_plan;

/** Resolve chunk @p i of @p chain. */
int tvs_chunk_plan_make(tvs_chunk_plan *out, tvs_txn *txn, const tvs_tensor_chain *chain,
                        uint32_t i);

/**
 * Decode a planned chunk into @p dst (raw_len bytes), using @p scratch
 * (raw_len bytes) for delta levels. Thread-safe given distinct ctx/buffers.
 */
int tvs_chunk_plan_decode(uint8_t *dst, uint8_t *scratch, const tvs_chunk_plan *p,
                          tvs_codec_ctx *ctx);

/**
 * The delta levels only: @p dst holds the decoded root chunk (the last
 * level) and gets the tensor's bytes. For callers that cache root chunks.
 */
int tvs_chunk_plan_apply(uint8_t *dst, uint8_t *scratch, const tvs_chunk_plan *p,
                         tvs_codec_ctx *ctx);

/**
 * tvs_chunk_plan_apply with the decoded root chunk in @p root (raw_len
 * bytes, left as they are; may be @p dst) rather than in @p dst: spares a
 * copy when the caller keeps the root's bytes.
 */
int tvs_chunk_plan_apply_to(uint8_t *dst, const uint8_t *root, uint8_t *scratch,
                            const tvs_chunk_plan *p, tvs_codec_ctx *ctx);

#endif
