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
    int level;                /**< zstd level; 0 = default */
    tvs_progress_fn progress; /**< called with bytes done / total; may be NULL */
    void *progress_payload;
} tvs_import_opts;

#define TVS_IMPORT_OPTS_INIT { NULL, NULL, 0, 0, NULL, NULL }

/**
 * Import @p path (a .safetensors file or a model folder) and point ref
 * @p ref at it. If @p ref exists, the new model's parent is its old head.
 * @param[out] out  the new model's id
 * @return 0, TVS_ECORRUPT for invalid input (the message names the file,
 *         tensor or byte offset and the rule), TVS_EIO, TVS_EINVAL
 */
int tvs_import(tvs_id *out, tvs_store *s, const char *path, const char *ref,
               const tvs_import_opts *o);

typedef struct {
    int threads;              /**< decoder threads; 0 = online CPUs */
    tvs_progress_fn progress;
    void *progress_payload;
} tvs_export_opts;

#define TVS_EXPORT_OPTS_INIT { 0, NULL, NULL }

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

#endif
