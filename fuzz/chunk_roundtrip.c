/*
 * Fuzz target: chunk codec round trip. The first byte picks the parameters
 * (fuzz.h: element width 1..8, is_float, zstd level 1..3, delta); the rest
 * is the raw data.
 *
 * Encode into a buffer of exactly tvs_chunk_bound(n) bytes (the bound must
 * be enough), decode into exactly n bytes and compare (also through
 * tvs_chunk_decode_planes and the reference merge), then encode again
 * with a fresh context and check the bytes are identical: chunk ids hash
 * the encoded bytes, so encoding must not depend on which context (which
 * thread, what it encoded before) did it.
 *
 * The first context is created once and kept: it is an allocation cache
 * (zstd contexts, scratch), not state that may change results -- which is
 * exactly what comparing it with a fresh one checks.
 */
#include "fuzz/fuzz.h"

#include <string.h>

#include "format/codec.h"

static tvs_codec_ctx *ctx;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (!ctx && tvs_codec_ctx_new(&ctx, FUZZ_MAX_RAW) != 0)
        abort();
    fuzz_chunk_params fp = fuzz_chunk_params_of(data[0]);
    tvs_chunk_params p = { .elem_bytes = fp.elem_bytes, .is_float = fp.is_float,
                          .level = fp.level, .delta = fp.delta };
    const uint8_t *src = data + 1;
    size_t n = size - 1;
    if (n > FUZZ_MAX_RAW)
        n = FUZZ_MAX_RAW;

    size_t cap = tvs_chunk_bound(n), len1 = 0, len2 = 0;
    uint8_t *enc1 = malloc(cap), *enc2 = malloc(cap), *dec = malloc(n ? n : 1);
    tvs_codec_ctx *fresh = NULL;
    if (!enc1 || !enc2 || !dec || tvs_codec_ctx_new(&fresh, n) != 0)
        abort();

    FUZZ_CHECK(tvs_chunk_encode(enc1, cap, &len1, ctx, src, n, &p) == 0);
    FUZZ_CHECK(len1 >= TVS_CHUNK_HDR && len1 <= cap);
    /* The encoder falls back to a raw chunk when nothing shrinks. */
    FUZZ_CHECK(len1 <= TVS_CHUNK_HDR + n);
    tvs_span chunk = { enc1, len1 };

    uint8_t codec;
    uint32_t raw_len;
    FUZZ_CHECK(tvs_chunk_info(&codec, &raw_len, chunk) == 0);
    FUZZ_CHECK(raw_len == n && codec <= TVS_CODEC_PLANES);

    FUZZ_CHECK(tvs_chunk_decode(dec, n, chunk, ctx) == 0);
    FUZZ_CHECK(n == 0 || memcmp(dec, src, n) == 0);

    /* The unmerged planes, merged by the reference loop, give the data too
     * (tvs_chunk_decode merged them with the SSE2 path). */
    const uint8_t *planes[8];
    unsigned w = 0;
    int rot = 0, rc = tvs_chunk_decode_planes(planes, &w, &rot, n, chunk, ctx);
    FUZZ_CHECK(rc == (codec == TVS_CODEC_PLANES ? 0 : 1));
    if (rc == 0) {
        FUZZ_CHECK(w >= 2 && w <= 8 && n % w == 0 && (rot == 0 || rot == 1));
        FUZZ_CHECK(w == p.elem_bytes && (p.is_float || p.delta));
        FUZZ_CHECK(rot == (!p.delta && (w == 2 || w == 4 || w == 8)));
        memset(dec, 0, n);
        tvs_planes_merge_ref(dec, planes, n / w, w, rot);
        FUZZ_CHECK(memcmp(dec, src, n) == 0);
    }

    FUZZ_CHECK(tvs_chunk_encode(enc2, cap, &len2, fresh, src, n, &p) == 0);
    FUZZ_CHECK(len2 == len1 && memcmp(enc1, enc2, len1) == 0);

    tvs_codec_ctx_free(fresh);
    free(enc1);
    free(enc2);
    free(dec);
    return 0;
}
