/**
 * @file query/plan.h
 * @brief Plans and executes queries: syntax tree -> typed plan (refs
 *        resolved, lineage checked) -> the output's safetensors layout ->
 *        bytes, streamed tensor block by tensor block into a sink.
 *
 * A plan borrows from the read transaction it was built in: keep the
 * transaction open until the plan is freed. Execution runs on a pool of
 * threads (ordered pipeline) and holds a bounded number of blocks in
 * memory, never a whole model. Semantics and operation order: SPEC.md,
 * "Queries".
 */
#ifndef TVS_QUERY_PLAN_H
#define TVS_QUERY_PLAN_H

#include "engine/store.h"
#include "query/parse.h"

typedef struct tvs_plan tvs_plan;

typedef struct {
    const char *const *names; /**< keep exactly these tensors (n_names of them), or NULL */
    size_t n_names;
    const char *tensors;      /**< POSIX extended regex on tensor names, or NULL */
    int layer_lo, layer_hi;   /**< keep layers lo..hi (tensors "layers.N."); hi < 0 = all */
    unsigned shard_i, shard_n;/**< keep shard i of n (balanced by bytes); n = 0: all */
    int dtype;                /**< output dtype of float tensors (TVS_DTYPE_*), 0 = as stored */
    int threads;              /**< 0 = online CPUs */
} tvs_plan_opts;

#define TVS_PLAN_OPTS_INIT { NULL, 0, NULL, 0, -1, 0, 0, 0, 0 }

/**
 * Plan query @p text against the store seen by @p txn.
 * @return 0, TVS_EINVAL (syntax or type error), TVS_ENOTFOUND (a ref),
 *         TVS_ELINEAGE (a delta applied to another base); the message names
 *         the ref, the rule and the fix.
 */
int tvs_plan_build(tvs_plan **out, tvs_txn *txn, const char *text, const tvs_plan_opts *o);
void tvs_plan_free(tvs_plan *p);

/** Exact size in bytes of the output safetensors file. */
uint64_t tvs_plan_size(const tvs_plan *p);
/** Number of output tensors. */
size_t tvs_plan_tensors(const tvs_plan *p);
/** "full" or "delta": what the query evaluates to. */
const char *tvs_plan_type(const tvs_plan *p);
/** Output tensor @p i (in file order): its name and byte size. */
void tvs_plan_tensor(const tvs_plan *p, size_t i, const char **name, uint64_t *nbytes);
/** The model whose tensor names and shapes the output takes (SPEC 4.4). */
void tvs_plan_anchor(const tvs_plan *p, tvs_id *out);

/** 1 if the output is a stored model's file copied verbatim (byte-identical). */
int tvs_plan_is_copy(const tvs_plan *p);

/** Human-readable plan (EXPLAIN): refs, ids, lineage, kernels, sizes, memory. */
int tvs_plan_explain(tvs_buf *out, const tvs_plan *p);

/** Receives output bytes in order; non-zero stops the execution. */
typedef int (*tvs_sink_fn)(void *payload, const uint8_t *p, size_t n);

/**
 * Produce bytes [@p off, @p off + @p len) of the output, computing only the
 * tensor blocks that overlap them. len = UINT64_MAX: to the end.
 */
int tvs_plan_exec(tvs_plan *p, uint64_t off, uint64_t len, tvs_sink_fn sink, void *payload);

#endif
