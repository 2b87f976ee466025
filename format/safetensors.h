/**
 * @file format/safetensors.h
 * @brief Reading and validating safetensors headers.
 *
 * A safetensors file is: u64 LE header length N, N bytes of JSON (an object
 * of tensor name -> {dtype, shape, data_offsets} plus an optional
 * "__metadata__" string map, often padded with spaces), then the data
 * region. tvstore accepts a file only if the data region is covered exactly:
 * offsets sorted, no gaps, no overlap, no trailing bytes, and each tensor's
 * byte length equal to its dtype width times its element count. That is
 * what makes export byte-identical: the header is kept verbatim and the data
 * region is rebuilt from the tensors in offset order.
 *
 * The parser allocates the tensor table (through tvs_malloc) and frees it in
 * tvs_st_header_dispose(). Pure otherwise: no I/O, safe from any thread.
 */
#ifndef TVS_FORMAT_SAFETENSORS_H
#define TVS_FORMAT_SAFETENSORS_H

#include "format/base.h"
#include "format/dtype.h"

#define TVS_ST_MAX_HEADER (100u * 1000u * 1000u) /**< 100 MB, as upstream */
#define TVS_ST_MAX_RANK 64

typedef struct {
    char *name;               /**< NUL-terminated, owned by the header */
    size_t name_len;
    tvs_dtype dtype;
    uint32_t rank;
    uint64_t *shape;          /**< rank entries, owned by the header */
    uint64_t n_elems;
    uint64_t begin, end;      /**< offsets in the data region */
} tvs_st_tensor;

typedef struct {
    tvs_st_tensor *tensors;   /**< in data-offset order */
    size_t n;
    uint64_t header_len;      /**< N: JSON bytes after the 8-byte prefix */
    uint64_t data_len;        /**< bytes after the header */
    char **meta;              /**< __metadata__ as key, value, key, value… */
    size_t n_meta;            /**< number of pairs */
    int has_meta;             /**< 1 if __metadata__ was present */
} tvs_st_header;

/**
 * Read the 8-byte length prefix of a file of @p file_len bytes.
 * @return 0, or TVS_ECORRUPT if the file is shorter than 8 bytes, the
 *         header is over TVS_ST_MAX_HEADER, or it runs past the end.
 */
int tvs_st_header_len(uint64_t *out, tvs_span prefix, uint64_t file_len);

/**
 * Parse and validate the JSON header @p json against a data region of
 * @p data_len bytes (UINT64_MAX: whatever the tensors cover, for headers
 * read back from the store).
 * @return 0, TVS_ECORRUPT with a message naming the tensor and the rule,
 *         or TVS_ENOMEM. On failure @p out is left empty.
 */
int tvs_st_header_parse(tvs_st_header *out, tvs_span json, uint64_t data_len);

/** Parse a whole file held in memory (prefix, header, data region). */
int tvs_st_parse(tvs_st_header *out, tvs_span file);

/** Index of tensor @p name, or -1. Linear; callers that loop build a map. */
long tvs_st_find(const tvs_st_header *h, const char *name);

void tvs_st_header_dispose(tvs_st_header *h);

#endif
