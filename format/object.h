/**
 * @file format/object.h
 * @brief Canonical bytes of tensor and model objects.
 *
 * Every object starts with `u8 type`; its id is the XXH3-128 of all its
 * bytes. Chunks (type 1) are in format/codec.h. Tensors (type 2) describe
 * one array of elements and list the chunks holding its bytes; model
 * objects (type 3) name tensors and blobs. Decoded structs borrow from the
 * bytes they were decoded from: they live as long as those bytes (for a
 * store read, until the transaction ends). Layouts: SPEC.md, "Objects".
 */
#ifndef TVS_FORMAT_OBJECT_H
#define TVS_FORMAT_OBJECT_H

#include "format/base.h"
#include "format/dtype.h"
#include "format/safetensors.h"

enum { TVS_OBJ_CHUNK = 1, TVS_OBJ_TENSOR = 2, TVS_OBJ_MODEL = 3 };

#define TVS_OBJ_VERSION 1
#define TVS_CHUNK_SIZE (1u << 20)   /**< raw bytes per chunk when importing */

/* Tensor encodings (on disk, never reused). */
enum {
    TVS_ENC_CHUNKED = 0,   /**< the decoded bytes, cut into lossless chunks */
    TVS_ENC_DELTA = 1,     /**< chunks hold t(bytes, base bytes) (format/delta.h) */
    TVS_ENC_LOSSY = 2,     /**< chunks hold lossy chunks over the base (format/lossy.h) */
};

/** Encodings whose chunks are applied to a base tensor's bytes. */
static inline int tvs_encoding_has_base(unsigned enc)
{
    return enc == TVS_ENC_DELTA || enc == TVS_ENC_LOSSY;
}

typedef struct {
    tvs_dtype dtype;
    uint8_t encoding;
    uint32_t rank;
    uint64_t shape[TVS_ST_MAX_RANK];
    uint64_t nbytes;            /**< decoded bytes */
    tvs_id checksum;            /**< XXH3-128 of the decoded bytes */
    uint32_t chunk_size;        /**< raw bytes per chunk; the last may be short */
    uint32_t n_chunks;
    const uint8_t *chunk_ids;   /**< n_chunks ids of 16 bytes, borrowed */
    tvs_id base;                /**< DELTA, LOSSY: the base tensor (same dtype, size and
                                     chunk size) */
    uint8_t transform;          /**< DELTA: TVS_DELTA_* */
} tvs_tensor_obj;

/** Id of chunk @p i of a tensor. */
static inline void tvs_tensor_chunk_id(tvs_id *out, const tvs_tensor_obj *t, uint32_t i)
{
    memcpy(out->b, t->chunk_ids + (size_t)i * TVS_ID_LEN, TVS_ID_LEN);
}
/** Raw bytes held by chunk @p i. */
size_t tvs_tensor_chunk_len(const tvs_tensor_obj *t, uint32_t i);
/** Chunks needed for @p nbytes at @p chunk_size. */
uint64_t tvs_chunks_for(uint64_t nbytes, uint32_t chunk_size);

int tvs_tensor_encode(tvs_buf *out, const tvs_tensor_obj *t);
/** Decode and validate untrusted bytes; TVS_ECORRUPT names the rule. */
int tvs_tensor_decode(tvs_tensor_obj *out, tvs_span bytes);

enum { TVS_MODEL_FULL = 0, TVS_MODEL_DELTA = 1 };
enum {
    TVS_MODEL_SINGLE_FILE = 1,   /**< flags: imported from one file */
    TVS_MODEL_LOSSY = 2,         /**< flags: some tensors are lossy (export rebuilds
                                      approximations of the imported files) */
};
enum { TVS_FILE_SAFETENSORS = 0, TVS_FILE_BLOB = 1 };

typedef struct {
    tvs_span name;
    tvs_id id;
} tvs_model_entry;

typedef struct {
    tvs_span name;              /**< path relative to the model folder */
    uint8_t kind;               /**< TVS_FILE_* */
    tvs_id blob;                /**< blob: id of a U8 tensor holding the file */
    tvs_span header;            /**< safetensors: the JSON header, verbatim */
    tvs_model_entry *tensors;   /**< safetensors: sorted by name, unique */
    size_t n_tensors;
} tvs_model_file;

typedef struct {
    uint8_t kind;               /**< TVS_MODEL_* */
    uint8_t flags;
    tvs_id base;                /**< delta: the base model; else zero */
    tvs_id *parents;
    size_t n_parents;
    int64_t time;               /**< seconds since the epoch */
    tvs_span author, message;
    tvs_model_file *files;      /**< sorted by name, unique */
    size_t n_files;
} tvs_model_obj;

/** The entry of tensor @p name in file @p f (binary search), or NULL. */
const tvs_model_entry *tvs_model_file_find(const tvs_model_file *f, const char *name);
/** The entry of tensor @p name in any file of @p m, or NULL. */
const tvs_model_entry *tvs_model_find(const tvs_model_obj *m, const char *name);

int tvs_model_encode(tvs_buf *out, const tvs_model_obj *m);
/**
 * Decode untrusted bytes. Allocates the file and tensor tables (free them
 * with tvs_model_dispose); names and headers borrow from @p bytes.
 */
int tvs_model_decode(tvs_model_obj *out, tvs_span bytes);
void tvs_model_dispose(tvs_model_obj *m);

/** Object type byte, or TVS_ECORRUPT for an empty object. */
int tvs_object_type(tvs_span bytes);
const char *tvs_object_type_name(int type);

/**
 * Call @p cb for every id the object @p bytes references (a tensor's
 * chunks; a model's tensors, blobs, base and parents).
 * @return 0, TVS_ECORRUPT, or the first non-zero value @p cb returns.
 */
int tvs_object_children(tvs_span bytes, int (*cb)(const tvs_id *id, int type_hint,
                                                  void *payload), void *payload);

#endif
