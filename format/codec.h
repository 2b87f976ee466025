/**
 * @file format/codec.h
 * @brief Lossless chunk codecs: the bytes of a chunk object.
 *
 * A chunk object is `u8 type (=1) | u8 codec | u32 raw_len | payload`; its
 * id is the XXH3-128 of all of it. Codecs (ids are on disk, never reused):
 *
 *   0 RAW     the raw bytes
 *   1 ZSTD    one zstd frame
 *   2 PLANES  elements of `w` bytes split into byte planes (byte k of every
 *             element), optionally after rotating each element left by one
 *             bit so a float's sign leaves its exponent byte; each plane
 *             stored raw or as one zstd frame, whichever is smaller.
 *
 * Encoding is deterministic: same bytes and parameters give the same chunk
 * on every machine and thread count. Byte layouts: SPEC.md, "Chunks".
 *
 * A tvs_codec_ctx carries the zstd contexts and scratch space; one per
 * thread. It is the only thing here that allocates, and it says so.
 */
#ifndef TVS_FORMAT_CODEC_H
#define TVS_FORMAT_CODEC_H

#include "format/base.h"

enum {
    TVS_CODEC_RAW = 0,
    TVS_CODEC_ZSTD = 1,
    TVS_CODEC_PLANES = 2,
};

enum {
    TVS_PLANE_ASIS = 0,      /**< plane k = byte k of each element */
    TVS_PLANE_ROTL1 = 1,     /**< rotate each element left 1 bit first */
};

#define TVS_CHUNK_HDR 6               /**< type, codec, raw_len */
#define TVS_CHUNK_MAX (64u << 20)     /**< largest raw chunk a decoder accepts */

typedef struct tvs_codec_ctx tvs_codec_ctx;

typedef struct {
    unsigned elem_bytes;   /**< element width in bytes (1 for sub-byte types) */
    int is_float;          /**< float elements: byte planes, sign rotated */
    int level;             /**< zstd level for non-plane data; 0 = TVS_ZSTD_LEVEL */
    int delta;             /**< delta-transformed integers: byte planes, no rotation */
} tvs_chunk_params;

#define TVS_ZSTD_LEVEL 3

/** Make a context able to encode and decode chunks of up to @p max_raw bytes. */
int  tvs_codec_ctx_new(tvs_codec_ctx **out, size_t max_raw);
void tvs_codec_ctx_free(tvs_codec_ctx *ctx);

/** Largest chunk object for @p n raw bytes. */
size_t tvs_chunk_bound(size_t n);

/**
 * Encode @p n bytes into a whole chunk object at @p dst.
 * @return 0, TVS_EBUFS if @p dst_cap is under the need, TVS_EINVAL if @p n
 *         is over the context's max_raw.
 */
int tvs_chunk_encode(uint8_t *dst, size_t dst_cap, size_t *written, tvs_codec_ctx *ctx,
                     const uint8_t *src, size_t n, const tvs_chunk_params *p);

/**
 * Decode the chunk object @p chunk (untrusted) into exactly @p n bytes.
 * @return 0, or TVS_ECORRUPT naming the check that failed.
 */
int tvs_chunk_decode(uint8_t *dst, size_t n, tvs_span chunk, tvs_codec_ctx *ctx);

/**
 * For a `planes` chunk: decode its planes without merging them, so a caller
 * can fuse the merge with its next step. Raw planes point into @p chunk;
 * the others into @p ctx's scratch (valid until the next call on @p ctx).
 * @return 0, 1 if the chunk is not a planes chunk, TVS_ECORRUPT
 */
int tvs_chunk_decode_planes(const uint8_t **planes, unsigned *w, int *rot, size_t n,
                            tvs_span chunk, tvs_codec_ctx *ctx);

/** Read the header of a chunk object: codec id and raw length. */
int tvs_chunk_info(uint8_t *codec, uint32_t *raw_len, tvs_span chunk);

/**
 * The raw bytes of @p chunk, whatever their length: in place for a raw
 * chunk, else decoded into a buffer owned by @p ctx (valid until the next
 * call with the same ctx). For chunks that are not a byte range of a tensor
 * (lossy chunks). @return 0, TVS_ECORRUPT, TVS_ENOMEM
 */
int tvs_chunk_view(tvs_span *out, tvs_span chunk, tvs_codec_ctx *ctx);

/** Name of a codec id ("raw", "zstd", "planes"), "?" if unknown. */
const char *tvs_codec_name(unsigned codec);

/* Plane split/merge, exposed so the SIMD paths can be tested against the
 * portable loops. */
void tvs_planes_split(uint8_t *dst, const uint8_t *src, size_t n, unsigned w, int rot);
void tvs_planes_merge(uint8_t *dst, const uint8_t *const *planes, size_t n, unsigned w,
                      int rot);
void tvs_planes_merge_ref(uint8_t *dst, const uint8_t *const *planes, size_t n,
                          unsigned w, int rot);

#endif
