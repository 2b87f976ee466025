/**
 * @file engine/maint.h
 * @brief Maintenance: garbage collection, integrity checks, statistics.
 */
#ifndef TVS_ENGINE_MAINT_H
#define TVS_ENGINE_MAINT_H

#include "engine/store.h"

typedef struct {
    uint64_t freed_objects, freed_bytes;   /**< swept (or would be, dry run) */
    uint64_t kept_objects, kept_bytes;     /**< reachable from a ref */
} tvs_gc_result;

/**
 * Delete every object no ref reaches, in one write transaction. Refuses
 * (TVS_EBUSY) while an import holds the store, and refuses (TVS_ECORRUPT)
 * to sweep anything if a ref reaches a missing or undecodable object.
 */
int tvs_gc(tvs_gc_result *out, tvs_store *s, int dry_run);

typedef struct {
    uint64_t objects, bytes;          /**< objects re-hashed */
    uint64_t tensors_checked;         /**< tensors decoded and checksummed */
    uint64_t decoded_bytes;
    uint64_t unreachable, unreachable_bytes;
    uint64_t problems;
} tvs_fsck_result;

/**
 * Re-hash every object, decode every object, follow every ref and check
 * that what it reaches exists with the right type, and decode every
 * reachable tensor against its checksum. Each problem goes to @p report
 * as one line. @return 0 (even with problems: see out->problems), or an
 * error that stopped the check.
 */
int tvs_fsck(tvs_fsck_result *out, tvs_store *s,
             void (*report)(void *payload, const char *line), void *payload);

typedef struct {
    char name[TVS_REF_MAX + 1];
    tvs_id id, base;
    uint8_t kind;
    int64_t time;
    uint64_t logical;       /**< bytes of its files */
    uint64_t stored;        /**< bytes of every object it reaches (to restore it) */
    uint64_t added;         /**< bytes it added: objects no earlier model reaches */
    uint64_t own;           /**< a delta: bytes it reaches that its base does not
                                 (what it costs over its base); a full model: stored */
    uint64_t params;        /**< elements of its tensors */
    uint8_t flags;          /**< TVS_MODEL_* flags (lossy…) */
    uint64_t n_tensors;
} tvs_stats_model;

typedef struct {
    uint64_t objects, chunks, tensors, models;
    uint64_t stored;              /**< bytes of all objects */
    uint64_t reachable;           /**< bytes of objects some ref reaches */
    uint64_t logical;             /**< sum of the refs' models' file bytes */
    uint64_t standalone;          /**< sum of each model's stored bytes alone */
    uint64_t file_bytes;          /**< size of data.mdb */
    tvs_stats_model *refs;        /**< one per ref, in name order */
    size_t n_refs;
} tvs_stats;

int tvs_stats_get(tvs_stats *out, tvs_store *s);

/**
 * Attribute every stored byte to the first of @p models (in the order
 * given, usually oldest first) that reaches it: @p added[i] is what model
 * i adds on top of models 0..i-1. The sum is the bytes all of them reach.
 */
int tvs_attribute_bytes(uint64_t *added, tvs_txn *txn, const tvs_id *models, size_t n);

/**
 * Order @p n models for attribution: every model after its base and parents
 * (those among the @p n), otherwise oldest first. @p order gets indexes.
 */
int tvs_models_order(size_t *order, tvs_txn *txn, const tvs_id *models, size_t n);
void tvs_stats_dispose(tvs_stats *st);

/* ---- shared graph walk (engine-internal, used by the three above) */

#include "engine/idset.h"

/**
 * Called once per object reached: @p status is 0 (present, @p bytes valid),
 * TVS_ENOTFOUND (missing) or TVS_ECORRUPT (wrong type or undecodable;
 * tvs_errmsg() says why). A non-zero return stops the walk.
 */
typedef int (*tvs__walk_fn)(void *payload, const tvs_id *id, int type, int status,
                            tvs_span bytes);

int tvs__walk(tvs_txn *txn, const tvs_id *root, tvs__idset *seen, tvs__walk_fn fn,
              void *payload);

#endif
