/*
 * format/codec.c: chunk round trips for every codec, element width and
 * many lengths; the SSE2 plane paths against the portable loops bit for
 * bit; decoders reject malformed chunks; encoding is deterministic; and a
 * golden vector whose chunk id must never change.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <zstd.h>

#include "format/codec.h"
#include "tests/support/support.h"

#define MAX_RAW (1u << 20)

static tvs_codec_ctx *ctx;

static void ctx_open(void) { tt_ok(tvs_codec_ctx_new(&ctx, MAX_RAW)); }
static void ctx_close(void)
{
    tvs_codec_ctx_free(ctx);
    tt_leak_check();
}

TestSuite(codec, .init = ctx_open, .fini = ctx_close);

/* ---- data */

enum { D_RANDOM, D_ZEROS, D_PATTERN, D_WEIGHTS };

/* Elements of @p w bytes whose top byte takes few values (like a float's
 * sign and exponent) and whose other bytes are random. */
static void fill_weights(uint8_t *p, size_t n, unsigned w, uint64_t seed)
{
    uint64_t st = seed;
    for (size_t i = 0; i < n; i++) {
        uint32_t r = tt_lcg(&st);
        if (w == 1 || i % w != w - 1)
            p[i] = (uint8_t)(r >> 8);
        else
            p[i] = (uint8_t)((r >> 31) << 7 | (0x3c + (r >> 4 & 3)));
    }
}

static void fill(uint8_t *p, size_t n, int kind, unsigned w, uint64_t seed)
{
    switch (kind) {
    case D_RANDOM: tt_fill_random(p, n, seed); break;
    case D_ZEROS: memset(p, 0, n); break;
    case D_PATTERN:
        for (size_t i = 0; i < n; i++)
            p[i] = (uint8_t)("tvstore!"[i % 8] + (i / 4096));
        break;
    case D_WEIGHTS: fill_weights(p, n, w, seed); break;
    }
}

/* Encode @p n bytes, decode them back, compare; returns the codec used. */
static int round_trip(const uint8_t *src, size_t n, unsigned w, int is_float,
                      size_t *written_out)
{
    size_t cap = tvs_chunk_bound(n), written = 0;
    uint8_t *enc = malloc(cap), *dec = malloc(n ? n : 1);
    cr_assert(enc && dec);
    tvs_chunk_params p = { .elem_bytes = w, .is_float = is_float };
    int rc = tvs_chunk_encode(enc, cap, &written, ctx, src, n, &p);
    cr_assert_eq(rc, 0, "encode of %zu bytes, w=%u float=%d: %s", n, w, is_float,
                 tvs_errmsg());
    cr_assert_leq(written, cap);
    cr_assert_geq(written, TVS_CHUNK_HDR);
    uint8_t codec;
    uint32_t raw_len;
    tt_ok(tvs_chunk_info(&codec, &raw_len, (tvs_span){ enc, written }));
    cr_assert_eq(raw_len, n);
    cr_assert_eq(enc[0], TVS_OBJ_CHUNK);
    memset(dec, 0xa5, n);
    rc = tvs_chunk_decode(dec, n, (tvs_span){ enc, written }, ctx);
    cr_assert_eq(rc, 0, "decode of %zu bytes, w=%u float=%d codec %s: %s", n, w, is_float,
                 tvs_codec_name(codec), tvs_errmsg());
    cr_assert(n == 0 || memcmp(src, dec, n) == 0,
              "round trip of %zu bytes, w=%u float=%d codec %s changed the bytes", n, w,
              is_float, tvs_codec_name(codec));
    if (written_out)
        *written_out = written;
    free(enc);
    free(dec);
    return codec;
}

/* Encode into a fresh malloc'd buffer (caller frees). */
static uint8_t *encode(const uint8_t *src, size_t n, unsigned w, int is_float, size_t *len)
{
    size_t cap = tvs_chunk_bound(n);
    uint8_t *enc = malloc(cap);
    tvs_chunk_params p = { .elem_bytes = w, .is_float = is_float };
    cr_assert_not_null(enc);
    tt_ok(tvs_chunk_encode(enc, cap, len, ctx, src, n, &p));
    return enc;
}

/* ---- round trips */

Test(codec, round_trips_every_width_kind_and_length)
{
    static const size_t lens[] = { 0, 1, 2, 3, 5, 7, 8, 15, 16, 17, 63, 64, 65, 127, 128,
                                   255, 256, 511, 512, 513, 1000, 1001, 4093, 4096, 65535,
                                   65536 + 7, 300001 };
    uint8_t *src = malloc(MAX_RAW);
    unsigned seen[3] = { 0 };
    for (unsigned w = 1; w <= 8; w++)
        for (int kind = D_RANDOM; kind <= D_WEIGHTS; kind++)
            for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
                for (int fl = 0; fl <= 1; fl++) {
                    fill(src, lens[i], kind, w, lens[i] * 31 + w);
                    int c = round_trip(src, lens[i], w, fl, NULL);
                    cr_assert_lt(c, 3);
                    seen[c]++;
                }
    cr_assert_gt(seen[TVS_CODEC_RAW], 0);
    cr_assert_gt(seen[TVS_CODEC_ZSTD], 0);
    cr_assert_gt(seen[TVS_CODEC_PLANES], 0);
    free(src);
}

Test(codec, round_trips_a_full_mebibyte_at_every_width)
{
    uint8_t *src = malloc(MAX_RAW);
    for (unsigned w = 1; w <= 8; w++)
        for (int kind = D_RANDOM; kind <= D_WEIGHTS; kind++) {
            fill(src, MAX_RAW, kind, w, 1000 + w);
            round_trip(src, MAX_RAW, w, 1, NULL);
            round_trip(src, MAX_RAW, w, 0, NULL);
        }
    free(src);
}

Test(codec, stores_random_bytes_raw)
{
    uint8_t src[4096];
    size_t written;
    tt_fill_random(src, sizeof src, 5);
    for (unsigned w = 1; w <= 8; w++) {
        cr_assert_eq(round_trip(src, sizeof src, w, 1, &written), TVS_CODEC_RAW, "w=%u", w);
        cr_assert_eq(written, sizeof src + TVS_CHUNK_HDR);
        cr_assert_eq(round_trip(src, sizeof src, w, 0, NULL), TVS_CODEC_RAW);
    }
    cr_assert_eq(round_trip(src, 0, 1, 0, &written), TVS_CODEC_RAW);
    cr_assert_eq(written, TVS_CHUNK_HDR, "an empty chunk is just its header");
}

Test(codec, stores_repetitive_non_float_bytes_as_zstd)
{
    uint8_t src[8192];
    size_t written;
    fill(src, sizeof src, D_PATTERN, 1, 0);
    for (unsigned w = 1; w <= 8; w++) {
        cr_assert_eq(round_trip(src, sizeof src, w, 0, &written), TVS_CODEC_ZSTD, "w=%u", w);
        cr_assert_lt(written, sizeof src / 4);
    }
}

Test(codec, stores_float_weights_as_byte_planes_with_the_right_transform)
{
    uint8_t src[64 * 8 * 8];
    for (unsigned w = 2; w <= 8; w++) {
        size_t n = sizeof src / w * w;
        fill_weights(src, n, w, 77 + w);
        size_t len;
        uint8_t *enc = encode(src, n, w, 1, &len);
        cr_assert_eq(enc[1], TVS_CODEC_PLANES, "w=%u: codec %u", w, enc[1]);
        cr_assert_eq(enc[TVS_CHUNK_HDR], w, "plane width");
        int rot = (w == 2 || w == 4 || w == 8);
        cr_assert_eq(enc[TVS_CHUNK_HDR + 1], rot ? TVS_PLANE_ROTL1 : TVS_PLANE_ASIS, "w=%u", w);
        cr_assert_lt(len, n + TVS_CHUNK_HDR);
        free(enc);
        round_trip(src, n, w, 1, NULL);
    }
}

Test(codec, does_not_use_planes_when_the_length_is_not_whole_elements_or_short)
{
    uint8_t src[4096 + 3];
    fill_weights(src, sizeof src, 4, 3);
    cr_assert_neq(round_trip(src, 4096 + 3, 4, 1, NULL), TVS_CODEC_PLANES);
    cr_assert_neq(round_trip(src, 64 * 4 - 4, 4, 1, NULL), TVS_CODEC_PLANES);
    cr_assert_neq(round_trip(src, 4096, 4, 0, NULL), TVS_CODEC_PLANES, "not a float");
    cr_assert_neq(round_trip(src, 4096, 1, 1, NULL), TVS_CODEC_PLANES, "width 1");
}

Test(codec, bound_covers_the_worst_case)
{
    for (size_t n = 0; n < 100000; n = n * 3 + 1)
        cr_assert_geq(tvs_chunk_bound(n), n + TVS_CHUNK_HDR + 2 + 8 * 5);
}

Test(codec, encode_refuses_a_small_destination_or_a_large_chunk)
{
    uint8_t src[256] = { 0 }, dst[512];
    size_t written = 12345;
    tvs_chunk_params p = { .elem_bytes = 1 };
    tt_fails(tvs_chunk_encode(dst, sizeof dst, &written, ctx, src, sizeof src, &p),
             TVS_EBUFS);
    cr_assert_eq(written, 12345, "written is set only on success");
    tvs_codec_ctx *small;
    tt_ok(tvs_codec_ctx_new(&small, 128));
    uint8_t *big = malloc(tvs_chunk_bound(256));
    tt_fails(tvs_chunk_encode(big, tvs_chunk_bound(256), &written, small, src, 256, &p),
             TVS_EINVAL);
    tvs_codec_ctx_free(small);
    free(big);
}

Test(codec, context_new_reports_enomem_and_free_accepts_null)
{
    extern long tvs__alloc_fail_after;
    tvs_codec_ctx *c = (tvs_codec_ctx *)1;
    tvs__alloc_fail_after = 0;
    int rc = tvs_codec_ctx_new(&c, 1024);
    tvs__alloc_fail_after = -1;
    cr_assert_eq(rc, TVS_ENOMEM);
    cr_assert_null(c);
    tvs_codec_ctx_free(NULL);
}

Test(codec, names_each_codec_and_keeps_its_on_disk_id)
{
    cr_assert_str_eq(tvs_codec_name(TVS_CODEC_RAW), "raw");
    cr_assert_str_eq(tvs_codec_name(TVS_CODEC_ZSTD), "zstd");
    cr_assert_str_eq(tvs_codec_name(TVS_CODEC_PLANES), "planes");
    cr_assert_str_eq(tvs_codec_name(0x7f), "?");
    cr_assert_eq(TVS_CODEC_RAW, 0, "codec ids are on disk");
    cr_assert_eq(TVS_CODEC_ZSTD, 1);
    cr_assert_eq(TVS_CODEC_PLANES, 2);
}

/* ---- planes: SIMD against the portable loops */

/* The split, written out from the format description (codec.h). */
static void split_model(uint8_t *dst, const uint8_t *src, size_t n, unsigned w, int rot)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 0;
        for (unsigned k = 0; k < w; k++)
            v |= (uint64_t)src[i * w + k] << (8 * k);
        if (rot) {
            unsigned bits = 8 * w;
            uint64_t mask = bits == 64 ? ~0ull : (1ull << bits) - 1;
            v = ((v << 1) | (v >> (bits - 1))) & mask;
        }
        for (unsigned k = 0; k < w; k++)
            dst[k * n + i] = (uint8_t)(v >> (8 * k));
    }
}

static const size_t plane_lens[] = { 0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 47, 48, 63,
                                     64, 65, 100, 127, 128, 129, 1000, 4095, 4096, 4097,
                                     65536 + 15 };

Test(codec, simd_merge_equals_the_reference_bit_for_bit)
{
    size_t max = 65536 + 15;
    uint8_t *store = malloc(8 * (max + 1)), *a = malloc(8 * max + 64), *b = malloc(8 * max + 64);
    tt_fill_random(store, 8 * (max + 1), 11);
    for (unsigned w = 1; w <= 8; w++)
        for (int rot = 0; rot <= 1; rot++)
            for (size_t li = 0; li < sizeof plane_lens / sizeof plane_lens[0]; li++)
                for (size_t mis = 0; mis <= 1; mis++) {
                    size_t n = plane_lens[li];
                    const uint8_t *planes[8];
                    /* misaligned plane pointers on the second pass */
                    for (unsigned k = 0; k < w; k++)
                        planes[k] = store + k * (max + 1) + mis;
                    memset(a, 0xee, 8 * max + 64);
                    memset(b, 0xee, 8 * max + 64);
                    tvs_planes_merge(a + mis, planes, n, w, rot);
                    tvs_planes_merge_ref(b + mis, planes, n, w, rot);
                    cr_assert(memcmp(a, b, 8 * max + 64) == 0,
                              "merge w=%u rot=%d n=%zu misaligned=%zu differs from the "
                              "reference", w, rot, n, mis);
                }
    free(store);
    free(a);
    free(b);
}

Test(codec, simd_split_equals_the_format_description)
{
    size_t max = 65536 + 15;
    uint8_t *src = malloc(8 * max + 1), *a = malloc(8 * max + 64), *b = malloc(8 * max + 64);
    tt_fill_random(src, 8 * max + 1, 12);
    for (unsigned w = 1; w <= 8; w++)
        for (int rot = 0; rot <= 1; rot++)
            for (size_t li = 0; li < sizeof plane_lens / sizeof plane_lens[0]; li++) {
                size_t n = plane_lens[li];
                memset(a, 0xee, 8 * max + 64);
                memset(b, 0xee, 8 * max + 64);
                tvs_planes_split(a, src + 1, n, w, rot);
                split_model(b, src + 1, n, w, rot);
                cr_assert(memcmp(a, b, 8 * max + 64) == 0,
                          "split w=%u rot=%d n=%zu differs from the description", w, rot, n);
            }
    free(src);
    free(a);
    free(b);
}

Test(codec, split_then_merge_gives_back_the_input)
{
    size_t max = 4097;
    uint8_t *src = malloc(8 * max), *planes = malloc(8 * max), *back = malloc(8 * max);
    tt_fill_random(src, 8 * max, 13);
    for (unsigned w = 1; w <= 8; w++)
        for (int rot = 0; rot <= 1; rot++)
            for (size_t n = 0; n <= max; n = n ? n * 2 + 1 : 1) {
                const uint8_t *p[8];
                tvs_planes_split(planes, src, n, w, rot);
                for (unsigned k = 0; k < w; k++)
                    p[k] = planes + k * n;
                tvs_planes_merge(back, p, n, w, rot);
                cr_assert(n == 0 || memcmp(src, back, n * w) == 0, "w=%u rot=%d n=%zu", w,
                          rot, n);
            }
    free(src);
    free(planes);
    free(back);
}

Test(codec, rotation_moves_the_sign_bit_to_the_bottom)
{
    /* bf16 -1.0 = 0xbf80: rotl1 = 0x7f01, so plane 0 = 0x01, plane 1 = 0x7f */
    const uint8_t src[2] = { 0x80, 0xbf };
    uint8_t planes[2];
    tvs_planes_split(planes, src, 1, 2, 1);
    cr_assert_eq(planes[0], 0x01);
    cr_assert_eq(planes[1], 0x7f);
}

/* ---- decoding malformed chunks */

static int decode_n(const uint8_t *chunk, size_t len, size_t n)
{
    uint8_t *dst = malloc(n ? n : 1);
    int rc = tvs_chunk_decode(dst, n, (tvs_span){ chunk, len }, ctx);
    free(dst);
    return rc;
}

/* A planes chunk, a zstd chunk and a raw chunk of @p n bytes. */
static uint8_t *sample(int codec, size_t n, size_t *len)
{
    uint8_t *src = malloc(n);
    uint8_t *enc;
    if (codec == TVS_CODEC_PLANES) {
        fill_weights(src, n, 2, 9);
        enc = encode(src, n, 2, 1, len);
    } else if (codec == TVS_CODEC_ZSTD) {
        fill(src, n, D_PATTERN, 1, 0);
        enc = encode(src, n, 1, 0, len);
    } else {
        tt_fill_random(src, n, 9);
        enc = encode(src, n, 1, 0, len);
    }
    cr_assert_eq(enc[1], codec, "sample for codec %d came out as %d", codec, enc[1]);
    free(src);
    return enc;
}

Test(codec, decode_rejects_every_truncation)
{
    for (int codec = 0; codec <= 2; codec++) {
        size_t len, n = 2048;
        uint8_t *enc = sample(codec, n, &len);
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *copy = malloc(cut ? cut : 1);
            memcpy(copy, enc, cut);
            int rc = decode_n(copy, cut, n);
            cr_assert_eq(rc, TVS_ECORRUPT, "%s chunk cut to %zu of %zu bytes decoded: %d",
                         tvs_codec_name(codec), cut, len, rc);
            free(copy);
        }
        free(enc);
    }
}

Test(codec, decode_rejects_trailing_bytes)
{
    for (int codec = 0; codec <= 2; codec++) {
        size_t len, n = 2048;
        uint8_t *enc = sample(codec, n, &len);
        uint8_t *longer = calloc(1, len + 3);
        memcpy(longer, enc, len);
        tt_fails(decode_n(longer, len + 3, n), TVS_ECORRUPT);
        free(longer);
        free(enc);
    }
}

Test(codec, decode_rejects_a_wrong_raw_length)
{
    for (int codec = 0; codec <= 2; codec++) {
        size_t len, n = 2048;
        uint8_t *enc = sample(codec, n, &len);
        tt_fails(decode_n(enc, len, n - 2), TVS_ECORRUPT);
        tt_msg_has("holds 2048 bytes, expected 2046");
        tt_fails(decode_n(enc, len, n + 2), TVS_ECORRUPT);
        tt_fails(decode_n(enc, len, 0), TVS_ECORRUPT);
        /* the header's length changed instead */
        tvs_store_le32(enc + 2, (uint32_t)n + 2);
        tt_fails(decode_n(enc, len, n + 2), TVS_ECORRUPT);
        free(enc);
    }
}

Test(codec, decode_rejects_an_unknown_codec_and_object_type)
{
    size_t len;
    uint8_t *enc = sample(TVS_CODEC_RAW, 100, &len);
    enc[1] = 0x7f;
    tt_fails(decode_n(enc, len, 100), TVS_ECORRUPT);
    tt_msg_has("unknown codec 127");
    enc[1] = 0xff;
    tt_fails(decode_n(enc, len, 100), TVS_ECORRUPT);
    enc[1] = TVS_CODEC_RAW;
    tt_ok(decode_n(enc, len, 100));
    enc[0] = TVS_OBJ_TENSOR;
    tt_fails(decode_n(enc, len, 100), TVS_ECORRUPT);
    tt_msg_has("not a chunk");
    uint8_t codec;
    uint32_t raw;
    tt_fails(tvs_chunk_info(&codec, &raw, (tvs_span){ enc, len }), TVS_ECORRUPT);
    tt_fails(tvs_chunk_info(&codec, &raw, (tvs_span){ enc, 5 }), TVS_ECORRUPT);
    tt_msg_has("shorter than its header");
    free(enc);
}

Test(codec, decode_rejects_a_bad_plane_width)
{
    size_t len, n = 2048;
    uint8_t *enc = sample(TVS_CODEC_PLANES, n, &len);
    static const uint8_t widths[] = { 0, 1, 3, 9, 255 };
    for (size_t i = 0; i < sizeof widths; i++) {
        enc[TVS_CHUNK_HDR] = widths[i];
        int rc = decode_n(enc, len, n);
        cr_assert_eq(rc, TVS_ECORRUPT, "plane width %u accepted", widths[i]);
    }
    enc[TVS_CHUNK_HDR] = 1;
    decode_n(enc, len, n);
    tt_msg_has("plane width 1");
    free(enc);
}

Test(codec, decode_rejects_a_bad_plane_transform_or_plane_codec)
{
    size_t len, n = 2048;
    uint8_t *enc = sample(TVS_CODEC_PLANES, n, &len);
    enc[TVS_CHUNK_HDR + 1] = 2;
    tt_fails(decode_n(enc, len, n), TVS_ECORRUPT);
    tt_msg_has("transform 2");
    enc[TVS_CHUNK_HDR + 1] = TVS_PLANE_ROTL1;
    enc[TVS_CHUNK_HDR + 2] = 2;   /* plane 0's codec byte */
    tt_fails(decode_n(enc, len, n), TVS_ECORRUPT);
    tt_msg_has("unknown codec 2");
    free(enc);
}

/* Build a planes chunk by hand: width @p w, transform @p rot, raw planes. */
static uint8_t *hand_planes(size_t n, uint8_t w, uint8_t rot, uint32_t plane_len, size_t *len)
{
    size_t cap = TVS_CHUNK_HDR + 2 + (size_t)w * (5 + plane_len);
    uint8_t *c = calloc(1, cap);
    c[0] = TVS_OBJ_CHUNK;
    c[1] = TVS_CODEC_PLANES;
    tvs_store_le32(c + 2, (uint32_t)n);
    c[6] = w;
    c[7] = rot;
    size_t pos = 8;
    for (unsigned k = 0; k < w; k++) {
        c[pos] = 0;
        tvs_store_le32(c + pos + 1, plane_len);
        pos += 5 + plane_len;
    }
    *len = pos;
    return c;
}

Test(codec, decode_accepts_a_hand_built_planes_chunk_and_rejects_its_variants)
{
    size_t len;
    uint8_t *c = hand_planes(30, 3, TVS_PLANE_ASIS, 10, &len);
    tt_ok(decode_n(c, len, 30));
    free(c);
    /* rotation is defined only for widths 2, 4 and 8 */
    c = hand_planes(30, 3, TVS_PLANE_ROTL1, 10, &len);
    tt_fails(decode_n(c, len, 30), TVS_ECORRUPT);
    tt_msg_has("invalid for width 3");
    free(c);
    /* a raw plane of the wrong length */
    c = hand_planes(30, 3, TVS_PLANE_ASIS, 9, &len);
    tt_fails(decode_n(c, len, 30), TVS_ECORRUPT);
    free(c);
    /* width that does not divide the length */
    c = hand_planes(31, 2, TVS_PLANE_ASIS, 15, &len);
    tt_fails(decode_n(c, len, 31), TVS_ECORRUPT);
    tt_msg_has("does not divide");
    free(c);
}

Test(codec, decode_rejects_a_planes_chunk_larger_than_the_context)
{
    tvs_codec_ctx *small;
    tt_ok(tvs_codec_ctx_new(&small, 64));
    size_t len;
    uint8_t *c = hand_planes(128, 2, TVS_PLANE_ASIS, 64, &len);
    uint8_t dst[128];
    tt_fails(tvs_chunk_decode(dst, 128, (tvs_span){ c, len }, small), TVS_ECORRUPT);
    tt_msg_has("over the decoder");
    tt_ok(tvs_chunk_decode(dst, 128, (tvs_span){ c, len }, ctx));
    tvs_codec_ctx_free(small);
    free(c);
}

Test(codec, decode_rejects_corrupted_zstd_frames)
{
    size_t len, n = 8192;
    uint8_t *enc = sample(TVS_CODEC_ZSTD, n, &len);
    uint8_t *bad = malloc(len);
    /* the frame's magic number */
    memcpy(bad, enc, len);
    bad[TVS_CHUNK_HDR] ^= 0xff;
    tt_fails(decode_n(bad, len, n), TVS_ECORRUPT);
    /* a frame whose declared size is not the chunk's */
    uint8_t src[100], frame[256];
    memset(src, 7, sizeof src);
    size_t z = ZSTD_compress(frame, sizeof frame, src, sizeof src, 1);
    cr_assert(!ZSTD_isError(z));
    uint8_t chunk[300] = { TVS_OBJ_CHUNK, TVS_CODEC_ZSTD };
    tvs_store_le32(chunk + 2, 99);
    memcpy(chunk + TVS_CHUNK_HDR, frame, z);
    tt_fails(decode_n(chunk, TVS_CHUNK_HDR + z, 99), TVS_ECORRUPT);
    tt_msg_has("declares 100 bytes, expected 99");
    tvs_store_le32(chunk + 2, 100);
    tt_ok(decode_n(chunk, TVS_CHUNK_HDR + z, 100));
    /* an empty frame */
    tt_fails(decode_n(chunk, TVS_CHUNK_HDR, 100), TVS_ECORRUPT);
    /* any single damaged byte: an error or (if zstd cannot tell) some bytes, never a crash */
    for (size_t i = TVS_CHUNK_HDR; i < len; i++)
        for (int bit = 0; bit < 8; bit += 3) {
            memcpy(bad, enc, len);
            bad[i] ^= (uint8_t)(1u << bit);
            int rc = decode_n(bad, len, n);
            cr_assert(rc == 0 || rc == TVS_ECORRUPT, "byte %zu: %d", i, rc);
        }
    free(bad);
    free(enc);
}

Test(codec, decode_survives_any_single_damaged_byte_of_a_planes_chunk)
{
    size_t len, n = 4096;
    uint8_t *enc = sample(TVS_CODEC_PLANES, n, &len);
    uint8_t *bad = malloc(len);
    for (size_t i = 0; i < len; i++) {
        memcpy(bad, enc, len);
        bad[i] ^= 0x41;
        int rc = decode_n(bad, len, n);
        cr_assert(rc == 0 || rc == TVS_ECORRUPT, "byte %zu: %d", i, rc);
        if (i < TVS_CHUNK_HDR + 2)
            cr_assert_eq(rc, TVS_ECORRUPT, "damaged header byte %zu was accepted", i);
    }
    free(bad);
    free(enc);
}

/* ---- determinism */

Test(codec, encoding_is_deterministic_across_calls_contexts_and_levels)
{
    size_t n = 300000;
    uint8_t *src = malloc(n);
    for (int kind = D_RANDOM; kind <= D_WEIGHTS; kind++) {
        fill(src, n, kind, 4, 21);
        size_t la, lb, lc;
        uint8_t *a = encode(src, n, 4, 1, &la);
        uint8_t *b = encode(src, n, 4, 1, &lb);
        /* the same context after encoding at another level */
        size_t cap = tvs_chunk_bound(n), lx;
        uint8_t *x = malloc(cap);
        tvs_chunk_params p9 = { .elem_bytes = 4, .is_float = 1, .level = 9 };
        tt_ok(tvs_chunk_encode(x, cap, &lx, ctx, src, n, &p9));
        tt_ok(tvs_chunk_decode(src, n, (tvs_span){ x, lx }, ctx));
        uint8_t *c = encode(src, n, 4, 1, &lc);
        /* a fresh context with another capacity */
        tvs_codec_ctx *other;
        tt_ok(tvs_codec_ctx_new(&other, 2 * MAX_RAW));
        tvs_chunk_params p = { .elem_bytes = 4, .is_float = 1 };
        size_t ld;
        uint8_t *d = malloc(cap);
        tt_ok(tvs_chunk_encode(d, cap, &ld, other, src, n, &p));
        cr_assert(la == lb && la == lc && la == ld, "kind %d: lengths %zu %zu %zu %zu", kind,
                  la, lb, lc, ld);
        cr_assert(memcmp(a, b, la) == 0 && memcmp(a, c, la) == 0 && memcmp(a, d, la) == 0,
                  "kind %d: encodings differ", kind);
        tvs_codec_ctx_free(other);
        free(a);
        free(b);
        free(c);
        free(d);
        free(x);
    }
    free(src);
}

/* ---- golden vector */

/* 4096 BF16 values from a fixed LCG, built with integer arithmetic only.
 * This generator is part of the golden vector: never change it. */
static void golden_input(uint8_t out[8192])
{
    uint64_t s = 0x7476737430303031ull; /* "tvst0001" */
    for (int i = 0; i < 4096; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        uint32_t r = (uint32_t)(s >> 32);
        uint16_t sign = (uint16_t)(r >> 31);
        uint16_t exp = (uint16_t)(119 + (r >> 24 & 7) % 5);
        uint16_t mant = (uint16_t)(r & 0x7f);
        uint16_t v = (uint16_t)(sign << 15 | exp << 7 | mant);
        out[2 * i] = (uint8_t)v;
        out[2 * i + 1] = (uint8_t)(v >> 8);
    }
}

static char *read_golden(const char *name)
{
    char *path = tt_fmt("%s/tests/data/golden/%s", TVS_SOURCE_DIR, name);
    size_t len;
    char *s = (char *)tt_read_file(path, &len);
    cr_assert_not_null(s, "cannot read the golden file %s", path);
    free(path);
    for (size_t i = 0; i < len; i++)
        if (s[i] == '\n' || s[i] == ' ' || s[i] == '\r')
            s[i] = 0;
    return s;
}

Test(codec, golden_bf16_chunk_id_never_changes)
{
    uint8_t src[8192];
    golden_input(src);
    size_t len;
    uint8_t *enc = encode(src, sizeof src, 2, 1, &len);
    tvs_id id;
    char hex[TVS_ID_HEX + 1];
    tvs_id_of(&id, enc, len);
    tvs_id_hex(hex, &id);
    char *want = read_golden("chunk_bf16_4096.id");
    cr_assert_eq(enc[1], TVS_CODEC_PLANES, "the golden chunk should use byte planes");
    cr_assert_str_eq(hex, want,
                     "the chunk id of the golden BF16 input changed to %s (expected %s; "
                     "%zu bytes, zstd %s): encoding is on disk and must not change", hex,
                     want, len, ZSTD_versionString());
    uint8_t back[8192];
    tt_ok(tvs_chunk_decode(back, sizeof back, (tvs_span){ enc, len }, ctx));
    cr_assert_arr_eq(back, src, sizeof src);
    free(want);
    free(enc);
}

Test(codec, golden_raw_chunk_id_never_changes)
{
    /* random bytes stay raw: this id depends on nothing but the chunk layout */
    uint8_t src[1000];
    uint64_t s = 0x5eed;
    for (size_t i = 0; i < sizeof src; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        src[i] = (uint8_t)(s >> 56);
    }
    size_t len;
    uint8_t *enc = encode(src, sizeof src, 1, 0, &len);
    cr_assert_eq(enc[1], TVS_CODEC_RAW);
    tvs_id id;
    char hex[TVS_ID_HEX + 1];
    tvs_id_of(&id, enc, len);
    tvs_id_hex(hex, &id);
    char *want = read_golden("chunk_raw_1000.id");
    cr_assert_str_eq(hex, want, "the raw chunk layout changed: id %s, expected %s", hex,
                     want);
    free(want);
    free(enc);
}
