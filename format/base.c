/*
 * Errors, allocation hooks, spans, buffers, the checked reader and ids.
 *
 * The error message buffer is thread-local and fixed-size so that recording
 * a failure never allocates. tvs__alloc_fail_after lets tests make the n-th
 * allocation from now fail (negative = never).
 */
#include "format/base.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <xxhash.h>
#include <xxh_x86dispatch.h>

static _Thread_local char errbuf[512];

const char *tvs_strerror(int err)
{
    switch (err) {
#define TVS_X(name, code, text) case code: return text;
        TVS_ERRORS(TVS_X)
#undef TVS_X
    }
    return "unknown error";
}

const char *tvs_errmsg(void) { return errbuf; }

int tvs__fail(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, sizeof errbuf, fmt, ap);
    va_end(ap);
    return err;
}

int tvs__failctx(int err, const char *fmt, ...)
{
    char prev[sizeof errbuf], pre[sizeof errbuf];
    va_list ap;
    memcpy(prev, errbuf, sizeof prev);
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    if (prev[0])
        snprintf(errbuf, sizeof errbuf, "%s: %s", pre, prev);
    else
        snprintf(errbuf, sizeof errbuf, "%s", pre);
    return err;
}

void tvs__errclear(void) { errbuf[0] = 0; }

/* ---- allocation */

long tvs__alloc_fail_after = -1;

static int alloc_should_fail(void)
{
    if (tvs__alloc_fail_after < 0)
        return 0;
    if (tvs__alloc_fail_after == 0)
        return 1;
    tvs__alloc_fail_after--;
    return 0;
}

void *tvs_malloc(size_t n)
{
    return alloc_should_fail() ? NULL : malloc(n ? n : 1);
}

void *tvs_calloc(size_t n, size_t size)
{
    return alloc_should_fail() ? NULL : calloc(n ? n : 1, size ? size : 1);
}

void *tvs_realloc(void *p, size_t n)
{
    return alloc_should_fail() ? NULL : realloc(p, n ? n : 1);
}

void tvs_free(void *p) { free(p); }

char *tvs_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = tvs_malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* ---- spans and buffers */

int tvs_span_sub(tvs_span *out, tvs_span s, size_t off, size_t len)
{
    if (off > s.len || len > s.len - off)
        return tvs__fail(TVS_ECORRUPT, "range [%zu, +%zu) is past the end (%zu bytes)",
                         off, len, s.len);
    out->ptr = s.ptr ? s.ptr + off : NULL;
    out->len = len;
    return 0;
}

int tvs_buf_reserve(tvs_buf *b, size_t extra)
{
    if (extra <= b->cap - b->len)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len)
        return tvs__fail(TVS_ENOMEM, "buffer of %zu + %zu bytes is too large", b->len, extra);
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->len < extra)
        cap *= 2;
    uint8_t *p = tvs_realloc(b->ptr, cap);
    if (!p)
        return tvs__fail(TVS_ENOMEM, "out of memory growing a buffer to %zu bytes", cap);
    b->ptr = p;
    b->cap = cap;
    return 0;
}

int tvs_buf_append(tvs_buf *b, const void *p, size_t n)
{
    int rc = tvs_buf_reserve(b, n);
    if (rc)
        return rc;
    if (n)
        memcpy(b->ptr + b->len, p, n);
    b->len += n;
    return 0;
}

int tvs_buf_put_u8(tvs_buf *b, uint8_t v) { return tvs_buf_append(b, &v, 1); }

int tvs_buf_put_le32(tvs_buf *b, uint32_t v)
{
    uint8_t t[4];
    tvs_store_le32(t, v);
    return tvs_buf_append(b, t, 4);
}

int tvs_buf_put_le64(tvs_buf *b, uint64_t v)
{
    uint8_t t[8];
    tvs_store_le64(t, v);
    return tvs_buf_append(b, t, 8);
}

int tvs_buf_put_str(tvs_buf *b, const void *p, size_t n)
{
    if (n > UINT32_MAX)
        return tvs__fail(TVS_EINVAL, "string of %zu bytes is too long", n);
    int rc = tvs_buf_put_le32(b, (uint32_t)n);
    return rc ? rc : tvs_buf_append(b, p, n);
}

void tvs_buf_dispose(tvs_buf *b)
{
    tvs_free(b->ptr);
    b->ptr = NULL;
    b->len = b->cap = 0;
}

/* ---- reader */

static int short_read(tvs_reader *r, size_t need)
{
    return tvs__fail(TVS_ECORRUPT, "%s: truncated at byte %zu (need %zu more, have %zu)",
                     r->what ? r->what : "input", r->off, need, r->s.len - r->off);
}

int tvs_read_bytes(tvs_reader *r, tvs_span *out, size_t len)
{
    if (len > r->s.len - r->off)
        return short_read(r, len);
    out->ptr = r->s.ptr + r->off;
    out->len = len;
    r->off += len;
    return 0;
}

int tvs_read_u8(tvs_reader *r, uint8_t *out)
{
    tvs_span s = { NULL, 0 };
    int rc = tvs_read_bytes(r, &s, 1);
    if (!rc)
        *out = s.ptr[0];
    return rc;
}

int tvs_read_le32(tvs_reader *r, uint32_t *out)
{
    tvs_span s = { NULL, 0 };
    int rc = tvs_read_bytes(r, &s, 4);
    if (!rc)
        *out = tvs_load_le32(s.ptr);
    return rc;
}

int tvs_read_le64(tvs_reader *r, uint64_t *out)
{
    tvs_span s = { NULL, 0 };
    int rc = tvs_read_bytes(r, &s, 8);
    if (!rc)
        *out = tvs_load_le64(s.ptr);
    return rc;
}

int tvs_read_str(tvs_reader *r, tvs_span *out, size_t max)
{
    uint32_t n;
    int rc = tvs_read_le32(r, &n);
    if (rc)
        return rc;
    if (n > max)
        return tvs__fail(TVS_ECORRUPT, "%s: string of %u bytes at byte %zu exceeds %zu",
                         r->what ? r->what : "input", n, r->off - 4, max);
    return tvs_read_bytes(r, out, n);
}

int tvs_read_end(tvs_reader *r)
{
    if (r->off != r->s.len)
        return tvs__fail(TVS_ECORRUPT, "%s: %zu trailing bytes at byte %zu",
                         r->what ? r->what : "input", r->s.len - r->off, r->off);
    return 0;
}

/* ---- ids */

static void id_from_xxh(tvs_id *out, XXH128_hash_t h)
{
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(out->b, c.digest, TVS_ID_LEN);
}

void tvs_id_of(tvs_id *out, const void *p, size_t n)
{
    id_from_xxh(out, XXH3_128bits_dispatch(p, n));
}

void tvs_id_hex(char out[TVS_ID_HEX + 1], const tvs_id *id)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < TVS_ID_LEN; i++) {
        out[2 * i] = hex[id->b[i] >> 4];
        out[2 * i + 1] = hex[id->b[i] & 15];
    }
    out[TVS_ID_HEX] = 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int tvs_id_parse(tvs_id *out, const char *s)
{
    if (strlen(s) != TVS_ID_HEX)
        return tvs__fail(TVS_EINVAL, "id '%s' is not %d hex digits", s, TVS_ID_HEX);
    for (int i = 0; i < TVS_ID_LEN; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return tvs__fail(TVS_EINVAL, "id '%s' is not hexadecimal", s);
        out->b[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int tvs_id_is_zero(const tvs_id *id)
{
    static const tvs_id zero;
    return tvs_id_eq(id, &zero);
}

struct tvs_hasher { XXH3_state_t *st; };

int tvs_hasher_new(tvs_hasher **out)
{
    *out = NULL;
    tvs_hasher *h = tvs_malloc(sizeof *h);
    if (!h)
        return tvs__fail(TVS_ENOMEM, "out of memory for a hasher");
    h->st = XXH3_createState();
    if (!h->st) {
        tvs_free(h);
        return tvs__fail(TVS_ENOMEM, "out of memory for a hasher");
    }
    XXH3_128bits_reset(h->st);
    *out = h;
    return 0;
}

void tvs_hasher_reset(tvs_hasher *h) { XXH3_128bits_reset(h->st); }

void tvs_hasher_update(tvs_hasher *h, const void *p, size_t n)
{
    XXH3_128bits_update_dispatch(h->st, p, n);
}

void tvs_hasher_final(tvs_id *out, tvs_hasher *h)
{
    id_from_xxh(out, XXH3_128bits_digest(h->st));
}

void tvs_hasher_free(tvs_hasher *h)
{
    if (!h)
        return;
    XXH3_freeState(h->st);
    tvs_free(h);
}

void tvs_fmt_bytes(char *out, size_t cap, double bytes)
{
    static const char *unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    int u = 0;
    while (bytes >= 1024 && u < 4) {
        bytes /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, cap, "%.0f B", bytes);
    else
        snprintf(out, cap, "%.2f %s", bytes, unit[u]);
}
