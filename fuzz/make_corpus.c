/*
 * Writes the seed corpora of the fuzz targets, using the library itself so
 * the seeds are real encodings:
 *
 *   st_header/        small valid safetensors files (HF layout, every
 *                     dtype, empty and scalar tensors, metadata) and one
 *                     invalid variant per rule the parser checks; with
 *                     MODEL_DIR, the real headers of the test models too
 *                     (prefix and JSON only: their data is megabytes, so
 *                     they parse fully and then fail the coverage check)
 *   object_decode/    chunk objects (raw, zstd, byte planes of widths
 *                     2, 3, 4 and 8, delta planes), tensor objects (plain
 *                     and delta), model objects
 *   chunk_roundtrip/  parameter byte (fuzz.h) + raw data
 *   delta_roundtrip/  transform byte (fuzz.h) + fine-tune + base
 *   lossy_decode/     dtype byte, u32 n, then a lossy chunk (format/lossy.h)
 *                     of n elements: every unit codec, every mask layout,
 *                     every BLOCKQ width and flag, LOWRANKQ, LOWRANK factors of every
 *                     dtype, VERBATIM, a chunk of them all per dtype, and
 *                     one LOWRANKQ chunk at versions 1 and 2
 *
 * Usage: make_corpus OUT_DIR [MODEL_DIR]. MODEL_DIR holds
 * base-v1.safetensors (BF16), base-v1.f32.safetensors and
 * ft-math-lowlr.safetensors (/work/shared/models); with it, the float and
 * delta chunks hold real weights, else a deterministic pseudo-random
 * stand-in. Output is deterministic. Not run by CI: run it by hand and
 * commit the files when a format changes (see fuzz/run.sh for the rest).
 */
#include "fuzz/fuzz.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

#include "format/codec.h"
#include "format/delta.h"
#include "format/lossy.h"
#include "format/object.h"
#include "format/safetensors.h"

static const char *out_dir;
static tvs_codec_ctx *ctx;

static void die(const char *what, int rc)
{
    fprintf(stderr, "make_corpus: %s: %s (%s)\n", what, tvs_strerror(rc), tvs_errmsg());
    exit(1);
}

static void put(const char *target, const char *name, const void *p, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", out_dir, target);
    if (mkdir(path, 0777) != 0 && errno != EEXIST) {
        perror(path);
        exit(1);
    }
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
    printf("%8zu  %s/%s\n", n, target, name);
}

/* ---- data: real weights when a model folder is given, else a stand-in */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* Roughly normal, sd 0.02: what trained weights look like. */
static float weight(void)
{
    double s = 0;
    for (int i = 0; i < 4; i++)
        s += (double)(next() >> 11) / 9007199254740992.0;
    return (float)((s - 2.0) * 0.0346);
}

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

/* @p n bytes of data region from @p file, or NULL if it cannot be read. */
static uint8_t *model_bytes(const char *dir, const char *file, size_t off, size_t n)
{
    if (!dir)
        return NULL;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t pre[8];
    uint64_t hlen;
    uint8_t *buf = NULL;
    if (fread(pre, 1, 8, f) == 8 &&
        tvs_st_header_len(&hlen, (tvs_span){ pre, 8 }, UINT64_MAX) == 0 &&
        fseek(f, (long)(8 + hlen + off), SEEK_SET) == 0 && (buf = malloc(n)) &&
        fread(buf, 1, n, f) != n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    return buf;
}

/* The real header of @p file: prefix and JSON, no data region. */
static void real_header(const char *dir, const char *file, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    uint8_t pre[8];
    uint64_t hlen;
    if (fread(pre, 1, 8, f) == 8 &&
        tvs_st_header_len(&hlen, (tvs_span){ pre, 8 }, UINT64_MAX) == 0 && hlen < 60000) {
        uint8_t *buf = malloc(8 + hlen);
        memcpy(buf, pre, 8);
        if (fread(buf + 8, 1, hlen, f) == hlen)
            put("st_header", name, buf, 8 + hlen);
        free(buf);
    }
    fclose(f);
}

static uint8_t *bf16_data(const char *dir, size_t n)
{
    uint8_t *b = model_bytes(dir, "base-v1.safetensors", 3 * 131072, n);
    if (b)
        return b;
    b = malloc(n);
    for (size_t i = 0; i + 1 < n; i += 2) {
        uint16_t v = to_bf16(weight());
        b[i] = (uint8_t)v;
        b[i + 1] = (uint8_t)(v >> 8);
    }
    return b;
}

static uint8_t *f32_data(const char *dir, size_t n)
{
    uint8_t *b = model_bytes(dir, "base-v1.f32.safetensors", 6 * 131072, n);
    if (b)
        return b;
    b = malloc(n);
    for (size_t i = 0; i + 3 < n; i += 4) {
        float v = weight();
        memcpy(b + i, &v, 4);
    }
    return b;
}

/* A fine-tune of @p base (BF16 when @p w is 2, F32 when 4) as delta.h
 * stores it: the ORD transform of ft against base. Real when the model
 * folder has the fine-tune, else a few ulps of drift on the stand-in. */
static uint8_t *delta_data(const char *dir, const uint8_t *base, size_t n, unsigned w)
{
    uint8_t *ft = w == 2 ? model_bytes(dir, "ft-math-lowlr.safetensors", 3 * 131072, n)
                         : NULL;
    if (!ft) {
        ft = malloc(n);
        memcpy(ft, base, n);
        for (size_t i = 0; i < n; i += w)
            ft[i] = (uint8_t)(ft[i] + (int)(next() % 7) - 3);
    }
    uint8_t *d = malloc(n);
    int rc = tvs_delta_make(d, ft, base, n, w == 2 ? TVS_DELTA_ORD16 : TVS_DELTA_ORD32);
    if (rc)
        die("tvs_delta_make", rc);
    free(ft);
    return d;
}

static uint8_t *f64_data(size_t n)
{
    uint8_t *b = malloc(n);
    for (size_t i = 0; i + 7 < n; i += 8) {
        double v = weight();
        memcpy(b + i, &v, 8);
    }
    return b;
}

/* 3-byte elements with a constant top byte: planes win, no rotation. */
static uint8_t *w3_data(size_t n)
{
    uint8_t *b = malloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = i % 3 == 2 ? 0x3f : i % 3 == 1 ? (uint8_t)(0x80 + next() % 4)
                                              : (uint8_t)next();
    return b;
}

static uint8_t *text_data(size_t n)
{
    uint8_t *b = malloc(n);
    size_t k = 0;
    for (int line = 0; k < n; line++) {
        char s[80];
        int m = snprintf(s, sizeof s, "model.layers.%d.self_attn.q_proj.weight\n", line % 7);
        for (int j = 0; j < m && k < n; j++)
            b[k++] = (uint8_t)s[j];
    }
    return b;
}

static uint8_t *random_data(size_t n)
{
    uint8_t *b = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)next();
    return b;
}

/* ---- chunks */

static size_t encode_chunk(uint8_t **out, const uint8_t *src, size_t n, unsigned w,
                           int is_float, int level, int delta)
{
    tvs_chunk_params p = { .elem_bytes = w, .is_float = is_float, .level = level,
                           .delta = delta };
    size_t cap = tvs_chunk_bound(n), len;
    *out = malloc(cap);
    int rc = tvs_chunk_encode(*out, cap, &len, ctx, src, n, &p);
    if (rc)
        die("tvs_chunk_encode", rc);
    return len;
}

static void chunk_seed(const char *name, const uint8_t *src, size_t n, unsigned w,
                       int is_float, int level, int delta, int want_codec)
{
    uint8_t *c;
    size_t len = encode_chunk(&c, src, n, w, is_float, level, delta);
    if (c[1] != want_codec)
        fprintf(stderr, "make_corpus: %s came out as codec %s, not %s\n", name,
                tvs_codec_name(c[1]), tvs_codec_name((unsigned)want_codec));
    put("object_decode", name, c, len);
    free(c);

    uint8_t *in = malloc(n + 1);
    in[0] = fuzz_chunk_param_byte((fuzz_chunk_params){ w, is_float, level, delta });
    if (n)
        memcpy(in + 1, src, n);
    put("chunk_roundtrip", name, in, n + 1);
    free(in);
}

static void chunks(const char *model_dir)
{
    uint8_t *bf16 = bf16_data(model_dir, 4096), *f32 = f32_data(model_dir, 4096);
    uint8_t *f64 = f64_data(4096), *w3 = w3_data(1536), *text = text_data(4096);
    uint8_t *rnd = random_data(1024);
    chunk_seed("chunk-planes-bf16", bf16, 4096, 2, 1, 1, 0, TVS_CODEC_PLANES);
    chunk_seed("chunk-planes-f32", f32, 4096, 4, 1, 3, 0, TVS_CODEC_PLANES);
    chunk_seed("chunk-planes-f64", f64, 4096, 8, 1, 2, 0, TVS_CODEC_PLANES);
    chunk_seed("chunk-planes-w3", w3, 1536, 3, 1, 1, 0, TVS_CODEC_PLANES);
    chunk_seed("chunk-zstd-text", text, 4096, 1, 0, 1, 0, TVS_CODEC_ZSTD);
    chunk_seed("chunk-zstd-bf16-as-int", bf16, 2048, 2, 0, 3, 0, TVS_CODEC_ZSTD);
    chunk_seed("chunk-raw-random", rnd, 1024, 2, 1, 1, 0, TVS_CODEC_RAW);
    chunk_seed("chunk-raw-short", text, 40, 1, 0, 1, 0, TVS_CODEC_RAW);
    chunk_seed("chunk-raw-empty", text, 0, 1, 0, 1, 0, TVS_CODEC_RAW);
    /* float data whose length is not a multiple of the width: no planes */
    chunk_seed("chunk-zstd-f32-ragged", f32, 4095, 4, 1, 1, 0, TVS_CODEC_ZSTD);
    /* delta-transformed fine-tunes: byte planes without rotation */
    uint8_t *d16 = delta_data(model_dir, bf16, 4096, 2), *d32 = delta_data(NULL, f32, 4096, 4);
    chunk_seed("chunk-planes-delta-ord16", d16, 4096, 2, 0, 1, 1, TVS_CODEC_PLANES);
    chunk_seed("chunk-planes-delta-ord32", d32, 4096, 4, 0, 1, 1, TVS_CODEC_PLANES);
    free(bf16), free(f32), free(f64), free(w3), free(text), free(rnd), free(d16), free(d32);

    /* over 16 KiB: the encoder samples the entropy instead of counting all */
    uint8_t *big = bf16_data(model_dir, 20480), *in = malloc(20481);
    in[0] = fuzz_chunk_param_byte((fuzz_chunk_params){ 2, 1, 1, 0 });
    memcpy(in + 1, big, 20480);
    put("chunk_roundtrip", "bf16-20k-sampled-entropy", in, 20481);
    free(big), free(in);
}

/* ---- delta transforms: ft and base, each half of the input */

static void delta_seed(const char *name, int transform, const uint8_t *ft,
                       const uint8_t *base, size_t n)
{
    uint8_t *in = malloc(1 + 2 * n);
    in[0] = fuzz_delta_param_byte(transform);
    memcpy(in + 1, ft, n);
    memcpy(in + 1 + n, base, n);
    put("delta_roundtrip", name, in, 1 + 2 * n);
    free(in);
}

static void deltas(const char *model_dir)
{
    uint8_t *base = bf16_data(model_dir, 2048);
    uint8_t *ft = model_bytes(model_dir, "ft-math-lowlr.safetensors", 3 * 131072, 2048);
    if (!ft) {
        ft = malloc(2048);
        memcpy(ft, base, 2048);
        for (size_t i = 0; i < 2048; i += 2)
            ft[i] = (uint8_t)(ft[i] + (int)(next() % 7) - 3);
    }
    delta_seed("ord16-bf16-finetune", TVS_DELTA_ORD16, ft, base, 2048);
    delta_seed("ord16-odd-tail", TVS_DELTA_ORD16, ft, base, 2 * 37);
    delta_seed("xor-bf16-finetune", TVS_DELTA_XOR, ft, base, 1001);
    free(base), free(ft);

    base = f32_data(model_dir, 2048);
    ft = malloc(2048);
    memcpy(ft, base, 2048);
    for (size_t i = 0; i < 2048; i += 4) {  /* a few ulps, some sign flips */
        ft[i] = (uint8_t)(ft[i] + (int)(next() % 9) - 4);
        if (i % 256 == 0)
            ft[i + 3] ^= 0x80;
    }
    delta_seed("ord32-f32-drift", TVS_DELTA_ORD32, ft, base, 2048);
    free(base), free(ft);
    static const uint8_t edge[] = { 0x00, 0x80, 0xff, 0x7f, 0x00, 0x00, 0xff, 0xff,
                                    0x00, 0x00, 0x00, 0x80, 0x01, 0x00, 0xfe, 0x7f };
    delta_seed("ord32-edges", TVS_DELTA_ORD32, edge, edge + 8, 8);
    delta_seed("ord16-edges", TVS_DELTA_ORD16, edge, edge + 8, 8);
}

/* ---- tensors */

/* A tensor of @p data; with @p base, a delta tensor whose chunks hold
 * @p data = t(ft, base) (tvs_delta_transform_for the dtype). */
static void tensor_seed(const char *name, tvs_dtype dtype, uint32_t rank,
                        const uint64_t *shape, uint32_t chunk_size, const uint8_t *data,
                        const tvs_id *base)
{
    tvs_tensor_obj t = { .dtype = dtype, .encoding = TVS_ENC_CHUNKED, .rank = rank,
                         .chunk_size = chunk_size };
    if (base) {
        t.encoding = TVS_ENC_DELTA;
        t.base = *base;
        t.transform = (uint8_t)tvs_delta_transform_for(dtype);
    }
    uint64_t n = 1;
    for (uint32_t i = 0; i < rank; i++)
        n *= (t.shape[i] = shape[i]);
    int rc = tvs_dtype_nbytes(&t.nbytes, dtype, n);
    if (rc)
        die(name, rc);
    t.n_chunks = (uint32_t)tvs_chunks_for(t.nbytes, chunk_size);
    uint8_t *ids = malloc((size_t)t.n_chunks * TVS_ID_LEN + 1);
    tvs_id_of(&t.checksum, data, (size_t)t.nbytes);
    for (uint32_t i = 0; i < t.n_chunks; i++) {
        size_t off = (size_t)i * chunk_size, len = tvs_tensor_chunk_len(&t, i);
        uint8_t *c;
        size_t clen = encode_chunk(&c, data + off, len, (tvs_dtype_bits(dtype) + 7) / 8,
                                   tvs_dtype_is_float(dtype) && !base, 1, base != NULL);
        tvs_id id;
        tvs_id_of(&id, c, clen);
        memcpy(ids + (size_t)i * TVS_ID_LEN, id.b, TVS_ID_LEN);
        free(c);
    }
    t.chunk_ids = ids;
    tvs_buf b = TVS_BUF_INIT;
    if ((rc = tvs_tensor_encode(&b, &t)))
        die(name, rc);
    put("object_decode", name, b.ptr, b.len);
    tvs_buf_dispose(&b);
    free(ids);
}

static void tensors(const char *model_dir)
{
    uint8_t *bf16 = bf16_data(model_dir, 4096), *rnd = random_data(600);
    uint8_t *d16 = delta_data(model_dir, bf16, 4096, 2);
    tvs_id base;
    tvs_id_of(&base, "base tensor", 11);
    static const uint64_t s2[] = { 32, 64 }, s2t[] = { 64, 32 }, s0[] = { 0, 16 },
                          s600[] = { 600 }, s46[] = { 4, 6 }, s8[] = { 1, 2, 1, 2, 1, 2, 1, 2 };
    tensor_seed("tensor-bf16-4chunks", TVS_DTYPE_BF16, 2, s2, 1024, bf16, NULL);
    tensor_seed("tensor-bf16-64chunks", TVS_DTYPE_BF16, 2, s2t, 64, bf16, NULL);
    tensor_seed("tensor-f32-scalar", TVS_DTYPE_F32, 0, NULL, TVS_CHUNK_SIZE, bf16, NULL);
    tensor_seed("tensor-f32-empty", TVS_DTYPE_F32, 2, s0, TVS_CHUNK_SIZE, bf16, NULL);
    tensor_seed("tensor-u8-blob-short-tail", TVS_DTYPE_U8, 1, s600, 256, rnd, NULL);
    tensor_seed("tensor-f4", TVS_DTYPE_F4, 2, s46, TVS_CHUNK_SIZE, rnd, NULL);
    tensor_seed("tensor-i32-rank8", TVS_DTYPE_I32, 8, s8, TVS_CHUNK_SIZE, rnd, NULL);
    tensor_seed("tensor-bf16-delta-ord16", TVS_DTYPE_BF16, 2, s2, 2048, d16, &base);
    tensor_seed("tensor-u8-delta-xor", TVS_DTYPE_U8, 1, s600, 256, rnd, &base);
    free(bf16), free(rnd), free(d16);
}

/* ---- safetensors files */

typedef struct {
    char name[96];
    const char *dtype;
    uint32_t rank;
    uint64_t shape[8];
} st_spec;

static uint64_t spec_bytes(const st_spec *s)
{
    uint64_t n = 1, nbytes;
    for (uint32_t i = 0; i < s->rank; i++)
        n *= s->shape[i];
    int rc = tvs_dtype_nbytes(&nbytes, tvs_dtype_parse(s->dtype, strlen(s->dtype)), n);
    if (rc)
        die(s->name, rc);
    return nbytes;
}

static void append(tvs_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void append(tvs_buf *b, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp || tvs_buf_append(b, tmp, (size_t)n))
        die("append", TVS_ENOMEM);
}

/* JSON header for @p specs laid out in array order; @p meta is a JSON object
 * or NULL. Returns the data region length. */
static uint64_t st_json(tvs_buf *json, const st_spec *specs, size_t n, const char *meta)
{
    uint64_t off = 0;
    append(json, "{");
    if (meta)
        append(json, "\"__metadata__\":%s%s", meta, n ? "," : "");
    for (size_t i = 0; i < n; i++) {
        const st_spec *s = &specs[i];
        uint64_t nb = spec_bytes(s);
        append(json, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", s->name,
               s->dtype);
        for (uint32_t k = 0; k < s->rank; k++)
            append(json, "%s%llu", k ? "," : "", (unsigned long long)s->shape[k]);
        append(json, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
               (unsigned long long)(off + nb));
        off += nb;
    }
    append(json, "}");
    return off;
}

/* A file: u64 length, @p json (padded with spaces to a multiple of 8 if
 * @p pad, as HF writes it), then @p data_len bytes of data. */
static void st_file(const char *name, const char *json, size_t json_len, uint64_t data_len,
                    int pad)
{
    size_t hlen = json_len + (pad ? (8 - json_len % 8) % 8 : 0);
    size_t total = 8 + hlen + (size_t)data_len;
    uint8_t *f = calloc(1, total);
    tvs_store_le64(f, hlen);
    memcpy(f + 8, json, json_len);
    memset(f + 8 + json_len, ' ', hlen - json_len);
    for (size_t i = 0; i < data_len; i++)   /* arbitrary, not all zero */
        f[8 + hlen + i] = (uint8_t)(i * 37);
    put("st_header", name, f, total);
    free(f);
}

/* A hand-written header with @p data_len data bytes. */
static void st_raw(const char *name, const char *json, uint64_t data_len)
{
    st_file(name, json, strlen(json), data_len, 0);
}

static int spec_cmp(const void *a, const void *b)
{
    return strcmp(((const st_spec *)a)->name, ((const st_spec *)b)->name);
}

/* The tiny Llama layout of tests/data/models, shrunk: HF names sorted, data
 * in name order, metadata first, padding. Also used as a model's header. */
static size_t llama_specs(st_spec *s)
{
    static const char *attn[] = { "k_proj", "o_proj", "q_proj", "v_proj" };
    size_t n = 0;
    s[n++] = (st_spec){ "lm_head.weight", "BF16", 2, { 8, 4 } };
    s[n++] = (st_spec){ "model.embed_tokens.weight", "BF16", 2, { 8, 4 } };
    s[n++] = (st_spec){ "model.norm.weight", "BF16", 1, { 4 } };
    for (int l = 0; l < 4; l++) {
        st_spec *t;
        t = &s[n++], *t = (st_spec){ "", "BF16", 1, { 4 } };
        snprintf(t->name, sizeof t->name, "model.layers.%d.input_layernorm.weight", l);
        t = &s[n++], *t = (st_spec){ "", "BF16", 1, { 4 } };
        snprintf(t->name, sizeof t->name, "model.layers.%d.post_attention_layernorm.weight", l);
        t = &s[n++], *t = (st_spec){ "", "BF16", 2, { 4, 8 } };
        snprintf(t->name, sizeof t->name, "model.layers.%d.mlp.down_proj.weight", l);
        t = &s[n++], *t = (st_spec){ "", "BF16", 2, { 8, 4 } };
        snprintf(t->name, sizeof t->name, "model.layers.%d.mlp.gate_proj.weight", l);
        t = &s[n++], *t = (st_spec){ "", "BF16", 2, { 8, 4 } };
        snprintf(t->name, sizeof t->name, "model.layers.%d.mlp.up_proj.weight", l);
        for (int a = 0; a < 4; a++) {
            t = &s[n++], *t = (st_spec){ "", "BF16", 2, { 4, 4 } };
            snprintf(t->name, sizeof t->name, "model.layers.%d.self_attn.%s.weight", l,
                     attn[a]);
        }
    }
    qsort(s, n, sizeof *s, spec_cmp);
    return n;
}

static void st_valid(void)
{
    st_spec s[64];
    tvs_buf j = TVS_BUF_INIT;
    size_t n = llama_specs(s);
    uint64_t d = st_json(&j, s, n, "{\"format\":\"pt\"}");
    st_file("st-llama-tiny-bf16", (const char *)j.ptr, j.len, d, 1);
    tvs_buf_dispose(&j);

    /* every dtype, odd shapes, offsets not in name order, more metadata */
    static const st_spec all[] = {
        { "z.bool", "BOOL", 1, { 3 } },          { "y.u8", "U8", 2, { 2, 2 } },
        { "x.i8", "I8", 1, { 5 } },              { "w.i16", "I16", 1, { 3 } },
        { "v.u16", "U16", 1, { 2 } },            { "u.i32", "I32", 2, { 1, 3 } },
        { "t.u32", "U32", 1, { 1 } },            { "s.i64", "I64", 1, { 2 } },
        { "r.u64", "U64", 1, { 1 } },            { "q.f16", "F16", 2, { 2, 3 } },
        { "p.bf16", "BF16", 3, { 1, 2, 3 } },    { "o.f32", "F32", 0, { 0 } },
        { "n.f64", "F64", 1, { 2 } },            { "m.e5m2", "F8_E5M2", 1, { 4 } },
        { "l.e4m3", "F8_E4M3", 1, { 4 } },       { "k.e8m0", "F8_E8M0", 1, { 2 } },
        { "j.e4m3fnuz", "F8_E4M3FNUZ", 1, { 3 } }, { "i.e5m2fnuz", "F8_E5M2FNUZ", 1, { 3 } },
        { "h.f4", "F4", 2, { 2, 3 } },           { "g.f6e2m3", "F6_E2M3", 1, { 4 } },
        { "f.f6e3m2", "F6_E3M2", 1, { 8 } },     { "e.c64", "C64", 1, { 2 } },
        { "d.empty", "F32", 2, { 0, 5 } },       { "c.empty2", "BF16", 1, { 0 } },
        { "b.rank8", "I8", 8, { 1, 2, 1, 2, 1, 2, 1, 2 } },
    };
    d = st_json(&j, all, sizeof all / sizeof all[0],
                "{\"format\":\"pt\",\"note\":\"seed \\u00e9\\n\",\"empty\":\"\"}");
    st_file("st-all-dtypes", (const char *)j.ptr, j.len, d, 1);
    tvs_buf_dispose(&j);

    st_raw("st-empty-object", "{}", 0);
    st_raw("st-metadata-only", "{\"__metadata__\":{}}", 0);
    st_raw("st-one-tensor-no-meta",
           "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16);
    st_raw("st-whitespace-inside",
           "{\n  \"w\" : { \"shape\" : [ 3 ] , \"data_offsets\" : [ 0 , 6 ] ,"
           " \"dtype\" : \"F16\" }\n}\n", 6);
}

static void st_invalid(void)
{
    const char *two = "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                      "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[%d,%d]}}";
    char j[512];
    snprintf(j, sizeof j, two, 5, 9);
    /* a leading space is invalid: the header must start with '{' */
    st_raw("bad-leading-space",
           " {\n  \"w\" : { \"shape\" : [ 3 ] , \"data_offsets\" : [ 0 , 6 ] ,"
           " \"dtype\" : \"F16\" }\n}\n", 6);
    st_raw("bad-gap", j, 9);
    snprintf(j, sizeof j, two, 3, 7);
    st_raw("bad-overlap", j, 7);
    snprintf(j, sizeof j, two, 4, 8);
    st_raw("bad-trailing-byte", j, 9);
    st_raw("bad-truncated-data", j, 7);
    st_raw("bad-dtype", "{\"a\":{\"dtype\":\"F12\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
    st_raw("bad-shape-negative",
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1);
    st_raw("bad-shape-float",
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[1.0],\"data_offsets\":[0,1]}}", 1);
    st_raw("bad-shape-mismatch",
           "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4);
    st_raw("bad-offsets-reversed",
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[1,0]}}", 1);
    st_raw("bad-offsets-three",
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1);
    st_raw("bad-duplicate-name",
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
           "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2);
    st_raw("bad-nul-in-name",
           "{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
    st_raw("bad-meta-not-string", "{\"__metadata__\":{\"n\":1}}", 0);
    st_raw("bad-meta-not-object", "{\"__metadata__\":[\"a\"]}", 0);
    st_raw("bad-f4-half-byte",
           "{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,1]}}", 1);
    st_raw("bad-rank-65",
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,"
           "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,"
           "1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1);
    st_raw("bad-elem-overflow",
           "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],"
           "\"data_offsets\":[0,0]}}", 0);
    st_raw("bad-bytes-overflow",
           "{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],"
           "\"data_offsets\":[0,0]}}", 0);
    st_raw("bad-entry-not-object", "{\"a\":[1,2]}", 0);
    st_raw("bad-root-array", "[{}]", 0);
    st_raw("bad-not-json", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_of", 0);
    st_raw("bad-missing-dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1);

    uint8_t b[16] = { 0 };
    tvs_store_le64(b, 1000);          /* header runs past the end */
    memcpy(b + 8, "{}      ", 8);
    put("st_header", "bad-header-len-past-end", b, 16);
    tvs_store_le64(b, 1);             /* too short for a JSON object */
    put("st_header", "bad-header-len-1", b, 9);
    tvs_store_le64(b, UINT64_MAX);    /* over the limit */
    put("st_header", "bad-header-len-huge", b, 16);
    put("st_header", "bad-short-prefix", b, 5);
}

/* ---- models */

static tvs_id name_id(const char *s)
{
    tvs_id id;
    tvs_id_of(&id, s, strlen(s));
    return id;
}

static tvs_span str(const char *s) { return (tvs_span){ (const uint8_t *)s, strlen(s) }; }

static void model_seed(const char *name, const tvs_model_obj *m)
{
    tvs_buf b = TVS_BUF_INIT;
    int rc = tvs_model_encode(&b, m);
    if (rc)
        die(name, rc);
    put("object_decode", name, b.ptr, b.len);
    tvs_buf_dispose(&b);
}

/* A safetensors file entry for @p specs (sorted by name). */
static void st_entry(tvs_model_file *f, tvs_buf *json, const char *name,
                     const st_spec *specs, size_t n)
{
    st_json(json, specs, n, "{\"format\":\"pt\"}");
    f->name = str(name);
    f->kind = TVS_FILE_SAFETENSORS;
    f->header = (tvs_span){ json->ptr, json->len };
    f->tensors = calloc(n ? n : 1, sizeof *f->tensors);
    f->n_tensors = n;
    for (size_t i = 0; i < n; i++) {
        f->tensors[i].name = str(specs[i].name);
        f->tensors[i].id = name_id(specs[i].name);
    }
}

static void models(void)
{
    st_spec s[64];
    size_t n = llama_specs(s);
    tvs_buf j1 = TVS_BUF_INIT, j2 = TVS_BUF_INIT, j3 = TVS_BUF_INIT;
    tvs_model_file files[3];
    tvs_id parents[2] = { name_id("parent-1"), name_id("parent-2") };

    memset(files, 0, sizeof files);
    st_entry(&files[0], &j1, "model.safetensors", s, n);
    tvs_model_obj m = { .kind = TVS_MODEL_FULL, .flags = TVS_MODEL_SINGLE_FILE,
                        .time = 1732760000, .author = str("tvs fuzz"),
                        .message = str("import base-v1.safetensors"), .files = files,
                        .n_files = 1 };
    model_seed("model-full-single-file", &m);

    /* delta on a base, two parents */
    m.kind = TVS_MODEL_DELTA;
    m.flags = 0;
    m.base = name_id("base");
    m.parents = parents;
    m.n_parents = 2;
    m.message = str("merge ft-math and ft-code\n\nlambda = 0.5");
    model_seed("model-delta-two-parents", &m);
    free(files[0].tensors);

    /* a folder: a blob and two shards */
    memset(files, 0, sizeof files);
    files[0] = (tvs_model_file){ .name = str("config.json"), .kind = TVS_FILE_BLOB,
                                 .blob = name_id("config.json") };
    st_entry(&files[1], &j2, "model-00001-of-00002.safetensors", s, n / 2);
    st_entry(&files[2], &j3, "model-00002-of-00002.safetensors", s + n / 2, n - n / 2);
    m = (tvs_model_obj){ .kind = TVS_MODEL_FULL, .parents = parents, .n_parents = 1,
                         .time = -1, .author = str(""), .message = str("sharded"),
                         .files = files, .n_files = 3 };
    model_seed("model-folder-blob-and-shards", &m);
    free(files[1].tensors);
    free(files[2].tensors);

    m = (tvs_model_obj){ .kind = TVS_MODEL_FULL, .author = str(""), .message = str("") };
    model_seed("model-empty", &m);
    tvs_buf_dispose(&j1), tvs_buf_dispose(&j2), tvs_buf_dispose(&j3);
}

/* ---- lossy_decode: dtype byte (value % 3: BF16, F16, F32), u32 n, chunk */

typedef struct {
    uint32_t n;
    tvs_lossy_params p;
    int clustered;   /* large entries in runs (a RUNS mask), else spread out */
} lossy_unit_spec;

/* A delta that looks like a fine-tune's: small, with some large entries. */
static void lossy_delta(float *d, size_t n, int clustered)
{
    for (size_t i = 0; i < n; i++)
        d[i] = weight() * (clustered ? (i % 1000 < 40 ? 5.0f : 0.05f)
                                     : (i % 37 == 0 ? 0.5f : 0.05f));
}

/* The seed (dtype byte, n, chunk) of a chunk of @p n_units encoded units, into @p b. */
static void lossy_input(tvs_buf *b, const char *name, int dt_sel, const lossy_unit_spec *u,
                        size_t n_units)
{
    static const tvs_dtype dts[3] = { TVS_DTYPE_BF16, TVS_DTYPE_F16, TVS_DTYPE_F32 };
    tvs_dtype dt = dts[dt_sel];
    unsigned w = dt == TVS_DTYPE_F32 ? 4 : 2;
    uint32_t n = 0;
    for (size_t k = 0; k < n_units; k++)
        n += u[k].n;
    int rc = tvs_buf_put_u8(b, (uint8_t)dt_sel);
    if (!rc)
        rc = tvs_buf_put_le32(b, n);
    if (!rc)
        rc = tvs_lossy_chunk_begin(b, (uint32_t)n_units);
    for (size_t k = 0; !rc && k < n_units; k++) {
        size_t cap = tvs_lossy_unit_bound(&u[k].p, u[k].n, dt), len = 0;
        float *d = malloc(u[k].n * sizeof *d);
        uint8_t *e = malloc(cap + 1), *ft = malloc((size_t)u[k].n * w);
        void *scratch = malloc(tvs_lossy_scratch_size(&u[k].p, u[k].n) + 1);
        if (!d || !e || !ft || !scratch)
            die("lossy seed", TVS_ENOMEM);
        lossy_delta(d, u[k].n, u[k].clustered);
        for (size_t i = 0; i < (size_t)u[k].n * w; i++)
            ft[i] = (uint8_t)next();
        rc = tvs_lossy_unit_encode(e, cap, &len, &u[k].p, d, ft, dt, u[k].n, scratch);
        if (!rc) {
            tvs_lossy_unit lu = { u[k].n, 0.25f, 1.0f, u[k].p.codec, { e, len } };
            rc = tvs_lossy_chunk_add(b, &lu);
        }
        free(d), free(e), free(ft), free(scratch);
    }
    if (rc)
        die(name, rc);
}

static void lossy_seed(const char *name, int dt_sel, const lossy_unit_spec *u, size_t n_units)
{
    tvs_buf b = TVS_BUF_INIT;
    lossy_input(&b, name, dt_sel, u, n_units);
    put("lossy_decode", name, b.ptr, b.len);
    tvs_buf_dispose(&b);
}

static void lossy(void)
{
    const tvs_lossy_params zero = { .codec = TVS_LC_ZERO };
    const tvs_lossy_params verbatim = { .codec = TVS_LC_VERBATIM };
    const tvs_lossy_params sign_all = { .codec = TVS_LC_SIGN, .density = 1.0f };
    const tvs_lossy_params sign_bitmap = { .codec = TVS_LC_SIGN, .density = 0.5f };
    const tvs_lossy_params sign_index = { .codec = TVS_LC_SIGN, .density = 0.02f };
    const tvs_lossy_params sparse_runs = { .codec = TVS_LC_SPARSEQ, .density = 0.03f,
                                           .bits = 4, .block = 16 };
    const tvs_lossy_params sparse_bitmap = { .codec = TVS_LC_SPARSEQ, .density = 0.4f,
                                             .bits = 3, .block = 9, .flags = 3 };
    const tvs_lossy_params lowrank = { .codec = TVS_LC_LOWRANK, .rows = 16, .cols = 24,
                                       .rank = 3, .factor_dtype = TVS_DTYPE_BF16 };
    static const char *const dt_names[3] = { "bf16", "f16", "f32" };
    char name[64];
    for (int dt = 0; dt < 3; dt++) {
        tvs_lossy_params bq = { .codec = TVS_LC_BLOCKQ, .bits = 2, .block = 64,
                                .flags = TVS_BQ_ZERO | TVS_BQ_CODEBOOK };
        lossy_unit_spec all[] = {
            { 100, zero, 0 }, { 200, sign_all, 0 }, { 300, sign_bitmap, 0 }, { 500, sign_index, 0 },
            { 600, sparse_runs, 1 }, { 300, sparse_bitmap, 0 }, { 700, bq, 0 }, { 384, lowrank, 0 },
            { 50, verbatim, 0 },
        };
        snprintf(name, sizeof name, "chunk-every-codec-%s", dt_names[dt]);
        lossy_seed(name, dt, all, sizeof all / sizeof *all);
    }
    for (unsigned bits = 1; bits <= 8; bits++) {
        lossy_unit_spec u = { 4096 + 7, { .codec = TVS_LC_BLOCKQ, .bits = (uint8_t)bits,
                                          .block = (uint16_t)(bits % 2 ? 64 : 13),
                                          .flags = (uint8_t)(bits % 4) }, 0 };
        snprintf(name, sizeof name, "blockq-b%u-flags%u", bits, bits % 4);
        lossy_seed(name, (int)bits % 3, &u, 1);
    }
    lossy_unit_spec s1[] = { { 5000, sign_index, 0 }, { 3000, sign_bitmap, 0 } };
    lossy_seed("sign-index-then-bitmap-f16", 1, s1, 2);
    /* RUNS: the kept entries of a SPARSEQ unit in a few clusters */
    lossy_unit_spec s2[] = { { 9000, sparse_runs, 1 } };
    lossy_seed("sparseq-9000-bf16", 0, s2, 1);
    lossy_unit_spec s3[] = { { 4200, { .codec = TVS_LC_SPARSEQ, .density = 1.0f, .bits = 8,
                                       .block = 4096 }, 0 } };
    lossy_seed("sparseq-all-b8-f32", 2, s3, 1);
    for (int f = TVS_DTYPE_F16; f <= TVS_DTYPE_F32; f++) {
        lossy_unit_spec lr[] = { { 40 * 50, { .codec = TVS_LC_LOWRANK, .rows = 40, .cols = 50,
                                              .rank = 5, .factor_dtype = (tvs_dtype)f }, 0 } };
        snprintf(name, sizeof name, "lowrank-r5-%s", tvs_dtype_name((tvs_dtype)f));
        lossy_seed(name, f - TVS_DTYPE_F16, lr, 1);
    }
    /* LOWRANKQ: terms of several widths, and a one-term unit among others */
    lossy_unit_spec lq[] = { { 48 * 40, { .codec = TVS_LC_LOWRANKQ, .rows = 48, .cols = 40,
                                          .rank = 40, .rate = 1.5f, .unbiased = 1 }, 0 } };
    lossy_seed("lowrankq-48x40-bf16", 0, lq, 1);
    lossy_unit_spec lq2[] = { { 100, zero, 0 },
                              { 12 * 10, { .codec = TVS_LC_LOWRANKQ, .rows = 12, .cols = 10,
                                           .rank = 5, .rate = 0.25f }, 0 },
                              { 50, verbatim, 0 } };
    lossy_seed("lowrankq-one-term-f16", 1, lq2, 3);
    lossy_unit_spec v[] = { { 33, verbatim, 0 }, { 31, zero, 0 } };
    lossy_seed("verbatim-then-zero-f32", 2, v, 2);
    /* LOWRANK from given factors (an imported adapter) */
    uint8_t u8[2 * 8 * 2], v8[2 * 2 * 6], unit[17 + sizeof u8 + sizeof v8];
    for (size_t i = 0; i < sizeof u8; i += 2)
        u8[i] = (uint8_t)next(), u8[i + 1] = 0x3c;
    for (size_t i = 0; i < sizeof v8; i += 2)
        v8[i] = (uint8_t)next(), v8[i + 1] = 0xbb;
    size_t len;
    int rc = tvs_lossy_lowrank_put(unit, sizeof unit, &len, 8, 6, 2, TVS_DTYPE_BF16, 0.5f, u8,
                                   v8);
    tvs_buf b = TVS_BUF_INIT;
    tvs_lossy_unit lu = { 48, 0, 0, TVS_LC_LOWRANK, { unit, len } };
    if (rc || (rc = tvs_buf_put_u8(&b, 1)) || (rc = tvs_buf_put_le32(&b, 48)) ||
        (rc = tvs_lossy_chunk_begin(&b, 1)) || (rc = tvs_lossy_chunk_add(&b, &lu)))
        die("lowrank put seed", rc);
    put("lossy_decode", "lowrank-put-8x6-bf16-factors", b.ptr, b.len);
    tvs_buf_dispose(&b);
    /* one LOWRANKQ chunk as written (version 2: fused multiply-adds) and as
     * a version 1 chunk (mul+add): the same bytes but the version */
    lossy_unit_spec lq3[] = { { 30 * 70, { .codec = TVS_LC_LOWRANKQ, .rows = 30, .cols = 70,
                                           .rank = 12, .rate = 4.0f }, 0 } };
    lossy_input(&b, "lowrankq-30x70", 0, lq3, 1);
    put("lossy_decode", "lowrankq-30x70-bf16-v2", b.ptr, b.len);
    b.ptr[5] = 1;   /* dtype byte, u32 n, then the chunk's version */
    put("lossy_decode", "lowrankq-30x70-bf16-v1", b.ptr, b.len);
    tvs_buf_dispose(&b);
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: %s OUT_DIR [MODEL_DIR]\n", argv[0]);
        return 2;
    }
    out_dir = argv[1];
    const char *model_dir = argc > 2 ? argv[2] : NULL;
    int rc = tvs_codec_ctx_new(&ctx, 1u << 20);
    if (rc)
        die("tvs_codec_ctx_new", rc);
    chunks(model_dir);
    deltas(model_dir);
    tensors(model_dir);
    models();
    st_valid();
    st_invalid();
    if (model_dir) {
        real_header(model_dir, "base-v1.safetensors", "real-base-v1-header-only");
        real_header(model_dir, "base-v1.f32.safetensors", "real-base-v1-f32-header-only");
    }
    static const uint8_t junk[] = { 4, 1, 2, 3 };
    put("object_decode", "unknown-type", junk, sizeof junk);
    put("object_decode", "empty", junk, 0);
    lossy();   /* last: it draws from the data generator after every other target */
    tvs_codec_ctx_free(ctx);
    return 0;
}
