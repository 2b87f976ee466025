/*
 * Fuzz target: one stored object (chunk, tensor or model) as untrusted
 * bytes, the way fsck, gc and sync read them.
 *
 * Tensors and models: decode, and when decoding succeeds, check that the
 * bytes were canonical (encoding the decoded struct gives them back; object.c
 * promises the decoders accept only the canonical form, which is what makes
 * ids well defined) and that tvs_object_children agrees with the decoder.
 * Chunks: decode into a buffer of exactly the declared raw length, so ASan
 * sees any write past it, and check tvs_chunk_decode_planes agrees. A delta tensor's children are its chunks and its
 * base.
 *
 * The codec context is created once and kept: it is an allocation cache
 * (zstd contexts, scratch), not state that changes results.
 */
#include "fuzz/fuzz.h"

#include <string.h>

#include "format/codec.h"
#include "format/delta.h"
#include "format/object.h"

static tvs_codec_ctx *ctx;

typedef struct {
    size_t n;
    size_t bad_hint;
} child_count;

static int count_child(const tvs_id *id, int type_hint, void *payload)
{
    child_count *c = payload;
    (void)id;
    c->n++;
    if (type_hint != TVS_OBJ_CHUNK && type_hint != TVS_OBJ_TENSOR &&
        type_hint != TVS_OBJ_MODEL)
        c->bad_hint++;
    return 0;
}

static void check_chunk(tvs_span in)
{
    uint8_t codec;
    uint32_t raw_len;
    if (tvs_chunk_info(&codec, &raw_len, in) != 0 || raw_len > FUZZ_MAX_RAW)
        return;
    if (!ctx && tvs_codec_ctx_new(&ctx, FUZZ_MAX_RAW) != 0)
        abort();
    uint8_t *dst = malloc(raw_len);   /* exact size: overruns hit a redzone */
    if (!dst && raw_len)
        abort();
    int rc = tvs_chunk_decode(dst, raw_len, in, ctx);
    FUZZ_CHECK(rc == 0 || rc == TVS_ECORRUPT);
    if (rc == 0) {
        FUZZ_CHECK(codec <= TVS_CODEC_PLANES);
        if (codec == TVS_CODEC_RAW)
            FUZZ_CHECK(raw_len == 0 ||
                       memcmp(dst, in.ptr + TVS_CHUNK_HDR, raw_len) == 0);
    }
    /* The unmerged planes agree with the merged decode. */
    const uint8_t *planes[8];
    unsigned w = 0;
    int rot = 0, prc = tvs_chunk_decode_planes(planes, &w, &rot, raw_len, in, ctx);
    if (codec != TVS_CODEC_PLANES) {
        FUZZ_CHECK(prc == 1);
    } else {
        FUZZ_CHECK(prc == 0 || prc == TVS_ECORRUPT);
        FUZZ_CHECK((prc == 0) == (rc == 0));
        if (prc == 0) {
            FUZZ_CHECK(w >= 2 && w <= 8 && raw_len % w == 0 && (rot == 0 || rot == 1));
            uint8_t *merged = malloc(raw_len);
            if (!merged)
                abort();
            tvs_planes_merge_ref(merged, planes, raw_len / w, w, rot);
            FUZZ_CHECK(memcmp(merged, dst, raw_len) == 0);
            free(merged);
        }
    }
    /* The wrong expected length is always refused. */
    if (raw_len > 0)
        FUZZ_CHECK(tvs_chunk_decode(dst, raw_len - 1, in, ctx) == TVS_ECORRUPT);
    free(dst);
}

static void check_canonical(const tvs_buf *b, tvs_span in)
{
    FUZZ_CHECK(b->len == in.len);
    FUZZ_CHECK(memcmp(b->ptr, in.ptr, in.len) == 0);
}

static size_t check_tensor(tvs_span in)
{
    tvs_tensor_obj t;
    if (tvs_tensor_decode(&t, in) != 0)
        return (size_t)-1;
    FUZZ_CHECK(t.rank <= TVS_ST_MAX_RANK && tvs_dtype_bits(t.dtype) != 0);
    FUZZ_CHECK(t.chunk_size > 0);
    /* The chunks hold exactly nbytes, every one full but the last. */
    uint64_t sum = 0;
    for (uint32_t i = 0; i < t.n_chunks; i++) {
        size_t len = tvs_tensor_chunk_len(&t, i);
        FUZZ_CHECK(len > 0 && len <= t.chunk_size);
        FUZZ_CHECK(i + 1 == t.n_chunks || len == t.chunk_size);
        sum += len;
    }
    FUZZ_CHECK(sum == t.nbytes);
    size_t children = t.n_chunks;
    if (t.encoding == TVS_ENC_DELTA) {
        /* chunks hold whole elements of the transform */
        unsigned w = tvs_delta_width(t.transform);
        FUZZ_CHECK(w != 0 && t.nbytes % w == 0 && t.chunk_size % w == 0);
        children++;   /* the base tensor */
    }
    if (t.encoding == TVS_ENC_LOSSY) {
        unsigned w = tvs_dtype_bits(t.dtype) / 8;
        FUZZ_CHECK((w == 2 || w == 4) && t.chunk_size % w == 0);
        children++;   /* the base tensor */
    }
    tvs_buf b = TVS_BUF_INIT;
    FUZZ_CHECK(tvs_tensor_encode(&b, &t) == 0);
    check_canonical(&b, in);
    tvs_buf_dispose(&b);
    return children;
}

static int span_lt(tvs_span a, tvs_span b)
{
    int c = memcmp(a.ptr, b.ptr, a.len < b.len ? a.len : b.len);
    return c ? c < 0 : a.len < b.len;
}

static size_t check_model(tvs_span in)
{
    tvs_model_obj m;
    if (tvs_model_decode(&m, in) != 0)
        return (size_t)-1;
    FUZZ_CHECK(m.kind <= TVS_MODEL_DELTA);
    FUZZ_CHECK(m.kind == TVS_MODEL_DELTA || tvs_id_is_zero(&m.base));
    size_t children = tvs_id_is_zero(&m.base) ? 0 : 1;
    children += m.n_parents;
    for (size_t i = 0; i < m.n_files; i++) {
        const tvs_model_file *f = &m.files[i];
        FUZZ_CHECK(f->kind == TVS_FILE_SAFETENSORS || f->kind == TVS_FILE_BLOB);
        FUZZ_CHECK(i == 0 || span_lt(m.files[i - 1].name, f->name));
        for (size_t j = 1; j < f->n_tensors; j++)
            FUZZ_CHECK(span_lt(f->tensors[j - 1].name, f->tensors[j].name));
        children += f->kind == TVS_FILE_BLOB ? 1 : f->n_tensors;
    }
    tvs_buf b = TVS_BUF_INIT;
    FUZZ_CHECK(tvs_model_encode(&b, &m) == 0);
    check_canonical(&b, in);
    tvs_buf_dispose(&b);
    tvs_model_dispose(&m);
    return children;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tvs_span in = { data, size };
    int type = tvs_object_type(in);
    if (type < 0) {
        FUZZ_CHECK(size == 0 && type == TVS_ECORRUPT);
        return 0;
    }
    size_t want = (size_t)-1;   /* children the decoder saw; -1: it refused */
    switch (type) {
    case TVS_OBJ_CHUNK: check_chunk(in); want = 0; break;
    case TVS_OBJ_TENSOR: want = check_tensor(in); break;
    case TVS_OBJ_MODEL: want = check_model(in); break;
    }
    child_count c = { 0, 0 };
    int rc = tvs_object_children(in, count_child, &c);
    if (want == (size_t)-1) {
        FUZZ_CHECK(rc == TVS_ECORRUPT || rc == TVS_ENOMEM);
    } else {
        FUZZ_CHECK(rc == 0);
        FUZZ_CHECK(c.n == want && c.bad_hint == 0);
    }
    return 0;
}
