/*
 * Writing safetensors files for tests: a raw header string with raw data
 * (for the malformed cases), or a valid header built from a tensor list the
 * way Hugging Face writes them (tests/support/support.h).
 */
#include "tests/support/support.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "format/dtype.h"

uint64_t tt_tensor_bytes(const tt_tensor *t)
{
    tvs_dtype d = tvs_dtype_parse(t->dtype, strlen(t->dtype));
    uint64_t n = 1, bytes = 0;
    for (unsigned i = 0; i < t->rank; i++)
        n *= t->shape[i];
    if (!d || tvs_dtype_nbytes(&bytes, d, n))
        return 0;
    return bytes;
}

typedef struct {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_put(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void sb_put(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0)
            return;
        if (b->p && (size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len <= (size_t)n)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (!np)
            return;
        b->p = np;
        b->cap = cap;
    }
}

char *tt_st_header(const tt_tensor *t, size_t n, const char *meta_json, uint64_t *data_len)
{
    sbuf b = { 0 };
    uint64_t off = 0;
    sb_put(&b, "{");
    if (meta_json)
        sb_put(&b, "\"__metadata__\":%s%s", meta_json, n ? "," : "");
    for (size_t i = 0; i < n; i++) {
        uint64_t len = tt_tensor_bytes(&t[i]);
        sb_put(&b, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", t[i].name,
               t[i].dtype);
        for (unsigned k = 0; k < t[i].rank; k++)
            sb_put(&b, "%s%llu", k ? "," : "", (unsigned long long)t[i].shape[k]);
        sb_put(&b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
               (unsigned long long)(off + len));
        off += len;
    }
    sb_put(&b, "}");
    while (b.p && b.len % 8)
        sb_put(&b, " ");
    if (data_len)
        *data_len = off;
    return b.p;
}

int tt_write_st_raw(const char *path, const char *json, const void *data, size_t data_len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    uint8_t pre[8];
    tvs_store_le64(pre, strlen(json));
    int ok = fwrite(pre, 1, 8, f) == 8;
    ok &= fwrite(json, 1, strlen(json), f) == strlen(json);
    if (data_len)
        ok &= fwrite(data, 1, data_len, f) == data_len;
    ok &= fclose(f) == 0;
    return ok ? 0 : -1;
}

static int write_st(const char *path, const tt_tensor *t, size_t n, const char *meta_json,
                    uint64_t seed, int weights)
{
    uint64_t len;
    char *json = tt_st_header(t, n, meta_json, &len);
    uint8_t *data = malloc(len ? len : 1);
    int rc = -1;
    if (json && data) {
        if (weights) {
            tt_fill_bf16(data, len / 2, seed);
            if (len % 2)
                data[len - 1] = 0x3c;
        } else {
            tt_fill_random(data, len, seed);
        }
        rc = tt_write_st_raw(path, json, data, len);
    }
    free(json);
    free(data);
    return rc;
}

int tt_write_st(const char *path, const tt_tensor *t, size_t n, const char *meta_json,
                uint64_t seed)
{
    return write_st(path, t, n, meta_json, seed, 0);
}

int tt_write_st_weights(const char *path, const tt_tensor *t, size_t n, const char *meta_json,
                        uint64_t seed)
{
    return write_st(path, t, n, meta_json, seed, 1);
}

void tt_write_ft(const char *from, const char *to, int step, uint64_t seed)
{
    size_t len;
    uint8_t *b = tt_read_file(from, &len);
    cr_assert_not_null(b);
    size_t data0 = 8 + (size_t)tvs_load_le64(b);
    uint64_t st = seed;
    for (size_t i = data0; i + 2 <= len; i += 2 * (size_t)step) {
        uint16_t v = (uint16_t)(b[i] | b[i + 1] << 8);
        if ((v & 0x7fff) > 8 && (v & 0x7fff) < 0x7f00)
            v = (uint16_t)(v + 1 + (tt_lcg(&st) & 1));
        b[i] = (uint8_t)v;
        b[i + 1] = (uint8_t)(v >> 8);
    }
    cr_assert_eq(tt_write_file(to, b, len), 0);
    free(b);
}
