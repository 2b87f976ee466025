/**
 * @file engine/model.h
 * @brief Import of safetensors files and model folders, export back to
 *        byte-identical files.
 *
 * Import validates every input file completely before it writes anything.
 * Chunks are written in batches of write transactions; the tensor objects,
 * the model object and the ref are written in one final transaction, so a
 * ref appears only once everything it reaches is committed. An interrupted
 * import leaves at most unreferenced chunks, which `tvs gc` reclaims.
 */
#ifndef TVS_ENGINE_MODEL_H
#define TVS_ENGINE_MODEL_H

#include "engine/store.h"

typedef void (*tvs_progress_fn)(void *payload, uint64_t done, uint64_t total);

typedef struct {
    const char *message;      /**< NULL = "import PATH" */
    const char *author;       /**< NULL = $USER */
    int threads;              /**< encoder threads; 0 = online CPUs */
    int level;                /**< zstd level for non-float data; 0 = default */
    const char *base;         /**< store as a delta of this model (ref, NAME@id, id), or
                                   "auto" to pick the closest stored full model; NULL =
                                   a full model */
    const char *const *parents;  /**< extra lineage parents (refs or ids) */
    size_t n_parents;
    int max_chain;            /**< refuse delta tensors deeper than this; 0 = 15 */
    tvs_progress_fn progress; /**< called with bytes done / total; may be NULL */
    void *progress_payload;
    /* lossy: changed BF16/F16/F32 tensors of the base's layout are stored with
     * the lossy encoder (format/lossy.h); exactly one of the two is set */
    double max_error;         /**< > 0: relative L2 error of each unit's delta, at most */
    double bits;              /**< > 0: average stored bits per parameter of the model */
} tvs_import_opts;

#define TVS_IMPORT_OPTS_INIT { 0 }

typedef struct {
    tvs_id model;
    tvs_id base;              /**< the base used (zero for a full model) */
    char base_reason[256];    /**< with base "auto": why this base */
    uint64_t logical;         /**< bytes of the imported files */
    uint64_t written;         /**< bytes of new objects stored */
    size_t n_tensors, n_unchanged, n_dedup, n_delta, n_full;
    uint64_t own;             /**< bytes of the objects it has and its base has not,
                                   stored now or before (what it costs over its base) */
    size_t n_lossy;           /**< lossy tensors */
    uint64_t params;          /**< elements of the model's tensors */
    uint64_t lossy_params;    /**< ... of its lossy tensors */
    size_t n_units;           /**< lossy units */
    double max_unit_err;      /**< largest measured relative error of a unit */
    double err_l2;            /**< relative L2 error over all lossy tensors' deltas */
} tvs_import_result;

/**
 * Import @p path (a .safetensors file or a model folder) and point ref
 * @p ref at it. If @p ref exists, the new model's first parent is its old
 * head. With o->base, tensors equal to the base's are shared with it,
 * tensors of the same dtype and shape are stored as lossless deltas against
 * it, and the rest in full.
 * @return 0, TVS_ECORRUPT for invalid input (the message names the file,
 *         tensor or byte offset and the rule), TVS_ENOTFOUND, TVS_EINVAL,
 *         TVS_EIO. Nothing is published on failure.
 */
int tvs_import(tvs_import_result *out, tvs_store *s, const char *path, const char *ref,
               const tvs_import_opts *o);

/**
 * Import the PEFT LoRA adapter in folder @p dir (adapter_model.safetensors
 * and adapter_config.json: r, lora_alpha, target_modules) as a delta model
 * of @p base under @p ref: each adapted weight W gets a lossy tensor of one
 * low-rank unit per chunk, d = (lora_alpha / r) · B·A, holding the factors
 * as the adapter stores them; every other tensor is the base's.
 * @return 0, TVS_ECORRUPT (bad adapter files: the message names the file and
 *         rule), TVS_EINVAL (a factor's shape does not fit the base's weight,
 *         or a dtype the lossy format does not take), TVS_ENOTFOUND
 */
int tvs_import_lora(tvs_import_result *out, tvs_store *s, const char *dir, const char *base,
                    const char *ref, const tvs_import_opts *o);

/**
 * The adapter_config.json part of tvs_import_lora (exposed for its fuzz
 * target): @p r and the scale lora_alpha / r (or / sqrt(r)); @p targets gets
 * a new reference to target_modules when it is a list (json_decref it), else
 * NULL. @return 0, TVS_ECORRUPT or TVS_EINVAL naming @p path and the rule
 */
struct json_t;
int tvs__lora_config_parse(uint32_t *r, double *scale, struct json_t **targets,
                           const char *text, size_t len, const char *path);

/**
 * Store model @p b (already in the store) again as a delta of model @p a,
 * under ref @p ref: `tvs diff A B --as REF`.
 */
int tvs_diff(tvs_import_result *out, tvs_store *s, const char *a, const char *b,
             const char *ref, const tvs_import_opts *o);

/**
 * Estimated stored size of @p path as a delta of each of @p bases, as a
 * share of its logical size, from a sample of chunks (used to pick bases).
 * @param[out] ratios   n_bases estimates
 * @param[out] matched  n_bases counts of tensors matching by name and layout
 */
int tvs_delta_estimate(double *ratios, size_t *matched, size_t *n_tensors, tvs_store *s,
                       const char *path, const tvs_id *bases, size_t n_bases);

typedef struct {
    int threads;              /**< decoder threads; 0 = online CPUs */
    tvs_progress_fn progress;
    void *progress_payload;
    int blobs_only;           /**< only the folder's non-tensor files (config,
                                   tokenizer…), not its safetensors or index files */
} tvs_export_opts;

#define TVS_EXPORT_OPTS_INIT { 0, NULL, NULL, 0 }

/**
 * Write model @p spec (ref, NAME@id, or id prefix) to @p path: a file for a
 * model imported from one file ("-" = stdout), else a folder. Files are
 * written to a temporary name and renamed into place.
 * @return 0, TVS_ENOTFOUND, TVS_ECORRUPT (a stored byte failed its
 *         checksum; nothing is left at @p path), TVS_EIO
 */
int tvs_export(tvs_store *s, const char *spec, const char *path, const tvs_export_opts *o);

/** Logical size of a model: the bytes of all its files. */
int tvs_model_logical_size(uint64_t *out, tvs_txn *txn, const tvs_model_obj *m);

/* ---- lineage and checkpoint fleets (engine/lineage.c, engine/backup.c) */

/** Storage depth of a model: the longest delta chain among its tensors (0 = none). */
int tvs_model_depth(int *out, tvs_txn *txn, const tvs_id *model);

/**
 * Visit every ref whose model is a delta based on @p model (the refs that
 * deleting @p model's last ref would leave depending on it).
 */
int tvs_dependents(tvs_txn *txn, const tvs_id *model,
                   int (*cb)(const char *ref, const tvs_id *delta, void *p), void *payload);

typedef struct {
    const char *base;         /**< root base (ref or id); NULL = none */
    int max_chain;            /**< longest delta chain; 0 = 8 */
    int candidates;           /**< earlier checkpoints considered; 0 = 4 */
    tvs_import_opts import;   /**< threads, progress, author */
} tvs_backup_opts;

typedef struct {
    char name[TVS_REF_MAX + 1];   /**< the ref created */
    char base[TVS_REF_MAX + 1];   /**< the base chosen ("" = stored full) */
    double estimate;              /**< estimated stored share of the chosen base */
    int depth;
    tvs_import_result r;
} tvs_backup_item;

/**
 * Import every checkpoint in @p dir (its .safetensors files and model
 * folders, in name order) as PREFIX/<name>, each as a delta of whichever of
 * the root base and the latest earlier checkpoints is estimated cheapest,
 * never deeper than max_chain. @p cb hears about each one as it lands.
 */
int tvs_backup(tvs_store *s, const char *dir, const char *prefix, const tvs_backup_opts *o,
               void (*cb)(const tvs_backup_item *item, void *p), void *payload);

#endif
