/**
 * @file format/base.h
 * @brief The bottom of libtvs: error codes, spans and buffers, byte order,
 *        allocator hooks and the object id type.
 *
 * Every fallible function in libtvs returns `int`: 0 on success or a
 * negative `tvs_err`. The detail of the last failure lives in a fixed-size
 * thread-local buffer (tvs_errmsg()), so recording an error cannot fail.
 * Everything on disk and on the wire is little-endian.
 */
#ifndef TVS_FORMAT_BASE_H
#define TVS_FORMAT_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define TVS_ERRORS(X)                                          \
    X(OK,         0, "success")                                \
    X(ERROR,     -1, "error")                                  \
    X(ENOTFOUND, -2, "no such object or ref")                  \
    X(EEXISTS,   -3, "already exists")                         \
    X(EBUFS,     -4, "destination buffer too small")           \
    X(ECORRUPT,  -5, "stored or received bytes are invalid")   \
    X(ECOLLIDE,  -6, "same id, different bytes")               \
    X(ELINEAGE,  -7, "delta does not apply to this base")      \
    X(EINVAL,    -8, "invalid argument")                       \
    X(ENOMEM,    -9, "out of memory")                          \
    X(EIO,      -10, "I/O error")                              \
    X(EBUSY,    -11, "resource busy")

typedef enum {
#define TVS_X(name, code, text) TVS_##name = code,
    TVS_ERRORS(TVS_X)
#undef TVS_X
} tvs_err;

/** Static text for a code; never NULL. */
const char *tvs_strerror(int err);
/** Detail of this thread's last failure ("" if none recorded). */
const char *tvs_errmsg(void);

/** Record @p err with a printf-style message; returns @p err. */
int tvs__fail(int err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/** Prefix the current message with more context; returns @p err. */
int tvs__failctx(int err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/** Forget the last failure (after handling an inner error). */
void tvs__errclear(void);

/* ---- allocation: every heap use goes through these (tests inject failures) */

void *tvs_malloc(size_t n);
void *tvs_calloc(size_t n, size_t size);
void *tvs_realloc(void *p, size_t n);
void  tvs_free(void *p);
char *tvs_strdup(const char *s);

/* ---- spans and buffers */

typedef struct { const uint8_t *ptr; size_t len; } tvs_span;   /* borrowed */
typedef struct { uint8_t *ptr; size_t len, cap; } tvs_buf;     /* owned */

#define TVS_BUF_INIT { NULL, 0, 0 }

/** Checked sub-range of untrusted bytes: TVS_ECORRUPT on overflow. */
int tvs_span_sub(tvs_span *out, tvs_span s, size_t off, size_t len);

/** Make room for @p extra more bytes; TVS_ENOMEM on failure. */
int tvs_buf_reserve(tvs_buf *b, size_t extra);
int tvs_buf_append(tvs_buf *b, const void *p, size_t n);
int tvs_buf_put_u8(tvs_buf *b, uint8_t v);
int tvs_buf_put_le32(tvs_buf *b, uint32_t v);
int tvs_buf_put_le64(tvs_buf *b, uint64_t v);
/** u32 length then the bytes. */
int tvs_buf_put_str(tvs_buf *b, const void *p, size_t n);
/** Frees what is inside @p b, never the struct; leaves it empty. */
void tvs_buf_dispose(tvs_buf *b);

/* ---- byte order */

static inline uint32_t tvs_load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}
static inline uint64_t tvs_load_le64(const uint8_t *p)
{
    return (uint64_t)tvs_load_le32(p) | (uint64_t)tvs_load_le32(p + 4) << 32;
}
static inline void tvs_store_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}
static inline void tvs_store_le64(uint8_t *p, uint64_t v)
{
    tvs_store_le32(p, (uint32_t)v);
    tvs_store_le32(p + 4, (uint32_t)(v >> 32));
}

/* ---- a cursor over untrusted bytes: every read is bounds-checked */

typedef struct {
    tvs_span s;
    size_t off;
    const char *what;   /**< names the thing being read, for messages */
} tvs_reader;

int tvs_read_u8(tvs_reader *r, uint8_t *out);
int tvs_read_le32(tvs_reader *r, uint32_t *out);
int tvs_read_le64(tvs_reader *r, uint64_t *out);
int tvs_read_bytes(tvs_reader *r, tvs_span *out, size_t len);
/** u32 length then bytes, length at most @p max. */
int tvs_read_str(tvs_reader *r, tvs_span *out, size_t max);
/** TVS_ECORRUPT unless every byte was consumed. */
int tvs_read_end(tvs_reader *r);

/* ---- ids: XXH3-128 of an object's stored bytes */

#define TVS_ID_LEN 16
#define TVS_ID_HEX 32

typedef struct { uint8_t b[TVS_ID_LEN]; } tvs_id;

/** Hash @p n bytes (dispatching XXH3-128, stored big-endian: high64 first). */
void tvs_id_of(tvs_id *out, const void *p, size_t n);
/** 32 lower-case hex digits and a NUL into @p out. */
void tvs_id_hex(char out[TVS_ID_HEX + 1], const tvs_id *id);
/** Parse exactly 32 hex digits; TVS_EINVAL otherwise. */
int tvs_id_parse(tvs_id *out, const char *hex);
int tvs_id_is_zero(const tvs_id *id);
static inline int tvs_id_eq(const tvs_id *a, const tvs_id *b)
{
    return memcmp(a->b, b->b, TVS_ID_LEN) == 0;
}

/** Streaming XXH3-128 (the decoded-bytes checksum of tensors). */
typedef struct tvs_hasher tvs_hasher;
int  tvs_hasher_new(tvs_hasher **out);
void tvs_hasher_reset(tvs_hasher *h);
void tvs_hasher_update(tvs_hasher *h, const void *p, size_t n);
void tvs_hasher_final(tvs_id *out, tvs_hasher *h);
void tvs_hasher_free(tvs_hasher *h);

/** Human-readable byte count ("1.50 MiB") into @p out. */
void tvs_fmt_bytes(char *out, size_t cap, double bytes);

#define TVS_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TVS_MAX(a, b) ((a) > (b) ? (a) : (b))

#endif
