/*
 * Lossless chunk codecs (format/codec.h).
 *
 * Byte planes: model weights are floats whose exponent bytes are highly
 * skewed and whose low mantissa bytes are close to uniform. Splitting the
 * elements into planes lets zstd's entropy stage see each distribution on
 * its own; a plane that would not shrink is kept raw, judged first by its
 * order-0 entropy (cheap) and then by the real compressed size.
 *
 * The SSE2 merge/split paths are part of the x86-64 baseline, so they need
 * no run-time dispatch; the portable loops stay as the reference and tests
 * compare the two bit for bit.
 */
#include "format/codec.h"

#include <math.h>
#include <zstd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

struct tvs_codec_ctx {
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    int cctx_level;
    uint8_t *scratch;      /* planes during split / decode */
    size_t max_raw;
    uint8_t *view;         /* tvs_chunk_view: decoded chunks of any length */
    size_t view_cap;
};

int tvs_codec_ctx_new(tvs_codec_ctx **out, size_t max_raw)
{
    *out = NULL;
    tvs_codec_ctx *c = tvs_calloc(1, sizeof *c);
    if (!c)
        return tvs__fail(TVS_ENOMEM, "out of memory for a codec context");
    c->cctx = ZSTD_createCCtx();
    c->dctx = ZSTD_createDCtx();
    c->scratch = tvs_malloc(max_raw);
    c->max_raw = max_raw;
    if (!c->cctx || !c->dctx || !c->scratch) {
        tvs_codec_ctx_free(c);
        return tvs__fail(TVS_ENOMEM, "out of memory for a codec context");
    }
    return *out = c, 0;
}

void tvs_codec_ctx_free(tvs_codec_ctx *c)
{
    if (!c)
        return;
    ZSTD_freeCCtx(c->cctx);
    ZSTD_freeDCtx(c->dctx);
    tvs_free(c->scratch);
    tvs_free(c->view);
    tvs_free(c);
}

const char *tvs_codec_name(unsigned codec)
{
    switch (codec) {
    case TVS_CODEC_RAW: return "raw";
    case TVS_CODEC_ZSTD: return "zstd";
    case TVS_CODEC_PLANES: return "planes";
    }
    return "?";
}

size_t tvs_chunk_bound(size_t n)
{
    /* planes: 2 bytes, then per plane (up to 8) 5 bytes + its zstd bound */
    return TVS_CHUNK_HDR + 2 + 8 * 5 + ZSTD_compressBound(n) + 8 * 64;
}

/* ---- plane split / merge */

static inline uint64_t rotl(uint64_t v, unsigned w, unsigned k)
{
    unsigned bits = 8 * w;
    uint64_t mask = bits == 64 ? ~0ull : (1ull << bits) - 1;
    return ((v << k) | (v >> (bits - k))) & mask;
}

static inline uint64_t load_elem(const uint8_t *p, unsigned w)
{
    uint64_t v = 0;
    for (unsigned k = 0; k < w; k++)
        v |= (uint64_t)p[k] << (8 * k);
    return v;
}

static void split_ref(uint8_t *dst, const uint8_t *src, size_t n, unsigned w, int rot)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t v = load_elem(src + i * w, w);
        if (rot)
            v = rotl(v, w, 1);
        for (unsigned k = 0; k < w; k++)
            dst[k * n + i] = (uint8_t)(v >> (8 * k));
    }
}

void tvs_planes_merge_ref(uint8_t *dst, const uint8_t *const *planes, size_t n,
                          unsigned w, int rot)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t v = 0;
        for (unsigned k = 0; k < w; k++)
            v |= (uint64_t)planes[k][i] << (8 * k);
        if (rot)
            v = rotl(v, w, 8 * w - 1);
        for (unsigned k = 0; k < w; k++)
            dst[i * w + k] = (uint8_t)(v >> (8 * k));
    }
}

void tvs_planes_split(uint8_t *dst, const uint8_t *src, size_t n, unsigned w, int rot)
{
    size_t i = 0;
#if defined(__SSE2__)
    if (w == 2) {
        const __m128i lo = _mm_set1_epi16(0xff);
        for (; i + 16 <= n; i += 16) {
            __m128i a = _mm_loadu_si128((const __m128i *)(src + 2 * i));
            __m128i b = _mm_loadu_si128((const __m128i *)(src + 2 * i + 16));
            if (rot) {
                a = _mm_or_si128(_mm_slli_epi16(a, 1), _mm_srli_epi16(a, 15));
                b = _mm_or_si128(_mm_slli_epi16(b, 1), _mm_srli_epi16(b, 15));
            }
            __m128i p0 = _mm_packus_epi16(_mm_and_si128(a, lo), _mm_and_si128(b, lo));
            __m128i p1 = _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8));
            _mm_storeu_si128((__m128i *)(dst + i), p0);
            _mm_storeu_si128((__m128i *)(dst + n + i), p1);
        }
    }
#endif
    if (i == 0) {
        split_ref(dst, src, n, w, rot);
        return;
    }
    /* tail: the reference loop writes plane k at dst + k*n + i */
    for (; i < n; i++) {
        uint64_t v = load_elem(src + i * w, w);
        if (rot)
            v = rotl(v, w, 1);
        for (unsigned k = 0; k < w; k++)
            dst[k * n + i] = (uint8_t)(v >> (8 * k));
    }
}

void tvs_planes_merge(uint8_t *dst, const uint8_t *const *planes, size_t n, unsigned w,
                      int rot)
{
    size_t i = 0;
#if defined(__SSE2__)
    if (w == 2) {
        for (; i + 16 <= n; i += 16) {
            __m128i p0 = _mm_loadu_si128((const __m128i *)(planes[0] + i));
            __m128i p1 = _mm_loadu_si128((const __m128i *)(planes[1] + i));
            __m128i a = _mm_unpacklo_epi8(p0, p1), b = _mm_unpackhi_epi8(p0, p1);
            if (rot) {
                a = _mm_or_si128(_mm_srli_epi16(a, 1), _mm_slli_epi16(a, 15));
                b = _mm_or_si128(_mm_srli_epi16(b, 1), _mm_slli_epi16(b, 15));
            }
            _mm_storeu_si128((__m128i *)(dst + 2 * i), a);
            _mm_storeu_si128((__m128i *)(dst + 2 * i + 16), b);
        }
    } else if (w == 4 && !rot) {
        for (; i + 16 <= n; i += 16) {
            __m128i p0 = _mm_loadu_si128((const __m128i *)(planes[0] + i));
            __m128i p1 = _mm_loadu_si128((const __m128i *)(planes[1] + i));
            __m128i p2 = _mm_loadu_si128((const __m128i *)(planes[2] + i));
            __m128i p3 = _mm_loadu_si128((const __m128i *)(planes[3] + i));
            __m128i a01l = _mm_unpacklo_epi8(p0, p1), a01h = _mm_unpackhi_epi8(p0, p1);
            __m128i a23l = _mm_unpacklo_epi8(p2, p3), a23h = _mm_unpackhi_epi8(p2, p3);
            uint8_t *d = dst + 4 * i;
            _mm_storeu_si128((__m128i *)d, _mm_unpacklo_epi16(a01l, a23l));
            _mm_storeu_si128((__m128i *)(d + 16), _mm_unpackhi_epi16(a01l, a23l));
            _mm_storeu_si128((__m128i *)(d + 32), _mm_unpacklo_epi16(a01h, a23h));
            _mm_storeu_si128((__m128i *)(d + 48), _mm_unpackhi_epi16(a01h, a23h));
        }
    }
#endif
    if (i < n) {
        const uint8_t *tail[8];
        for (unsigned k = 0; k < w; k++)
            tail[k] = planes[k] + i;
        tvs_planes_merge_ref(dst + i * w, tail, n - i, w, rot);
    }
}

/* ---- encode */

/*
 * Order-0 entropy of a sample, in bits per byte: up to 16 KiB, taken as 4
 * contiguous runs spread over the input (cache-friendly). With 16 KiB of
 * uniform bytes the estimate's bias is ~0.01 bit, well clear of the 7.97
 * threshold below.
 */
static double entropy_bits(const uint8_t *p, size_t n)
{
    enum { RUN = 4096, RUNS = 4 };
    uint32_t h[256] = { 0 };
    size_t m = 0;
    if (n <= RUN * RUNS) {
        for (size_t i = 0; i < n; i++)
            h[p[i]]++;
        m = n;
    } else {
        for (size_t r = 0; r < RUNS; r++) {
            const uint8_t *q = p + r * ((n - RUN) / (RUNS - 1));
            for (size_t i = 0; i < RUN; i++)
                h[q[i]]++;
        }
        m = RUN * RUNS;
    }
    double e = 0;
    for (int s = 0; s < 256; s++)
        if (h[s]) {
            double q = (double)h[s] / (double)m;
            e -= q * log2(q);
        }
    return e;
}

/*
 * Two zstd profiles. PROFILE_ENTROPY is for float planes: their bytes are
 * near-independent draws from a skewed distribution, where LZ matches cost
 * time and even hurt (a match of 7 exponent bytes is rare and a short one
 * costs more than its literals), so the match finder is starved (fast
 * strategy, 64-entry hash table, min match 7) and zstd's Huffman stage does
 * the work: on N(0, 0.02) BF16 exponents that is ~2.6x faster than level 1
 * and ~9% smaller. Any other level is a plain zstd level, for bytes with
 * real repeats (integers, text blobs).
 */
#define PROFILE_ENTROPY 1000

static int set_profile(tvs_codec_ctx *c, int profile)
{
    if (c->cctx_level == profile)
        return 0;
    ZSTD_CCtx *z = c->cctx;
    int lvl = profile == PROFILE_ENTROPY ? 1 : profile;
    ZSTD_CCtx_reset(z, ZSTD_reset_session_and_parameters);
    int bad = ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, lvl)) ||
              ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_checksumFlag, 0)) ||
              ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_contentSizeFlag, 1));
    if (!bad && profile == PROFILE_ENTROPY)
        bad = ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_strategy, ZSTD_fast)) ||
              ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_windowLog, 17)) ||
              ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_hashLog, 6)) ||
              ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_minMatch, 7)) ||
              ZSTD_isError(ZSTD_CCtx_setParameter(z, ZSTD_c_targetLength, 0));
    if (bad)
        return tvs__fail(TVS_ERROR, "zstd rejected compression profile %d", profile);
    c->cctx_level = profile;
    return 0;
}

/* Compress @p n bytes into dst; returns the size, or 0 if it does not pay. */
static size_t try_zstd(tvs_codec_ctx *c, uint8_t *dst, size_t cap, const uint8_t *src,
                       size_t n)
{
    if (n < 64 || entropy_bits(src, n) > 7.97)
        return 0;
    size_t r = ZSTD_compress2(c->cctx, dst, cap, src, n);
    if (ZSTD_isError(r) || r >= n - n / 64)
        return 0;
    return r;
}

static void put_hdr(uint8_t *dst, uint8_t codec, size_t n)
{
    dst[0] = 1; /* object type: chunk */
    dst[1] = codec;
    tvs_store_le32(dst + 2, (uint32_t)n);
}

static int encode_planes(uint8_t *dst, size_t cap, size_t *written, tvs_codec_ctx *c,
                         const uint8_t *src, size_t n, unsigned w, int rot)
{
    size_t ne = n / w, pos = TVS_CHUNK_HDR + 2;
    tvs_planes_split(c->scratch, src, ne, w, rot);
    put_hdr(dst, TVS_CODEC_PLANES, n);
    dst[TVS_CHUNK_HDR] = (uint8_t)w;
    dst[TVS_CHUNK_HDR + 1] = (uint8_t)(rot ? TVS_PLANE_ROTL1 : TVS_PLANE_ASIS);
    for (unsigned k = 0; k < w; k++) {
        const uint8_t *plane = c->scratch + k * ne;
        if (cap - pos < 5 + ne)
            return tvs__fail(TVS_EBUFS, "chunk: destination of %zu bytes is too small", cap);
        size_t z = try_zstd(c, dst + pos + 5, cap - pos - 5, plane, ne);
        dst[pos] = z ? 1 : 0;
        if (!z) {
            memcpy(dst + pos + 5, plane, ne);
            z = ne;
        }
        tvs_store_le32(dst + pos + 1, (uint32_t)z);
        pos += 5 + z;
    }
    *written = pos;
    return 0;
}

int tvs_chunk_encode(uint8_t *dst, size_t cap, size_t *written, tvs_codec_ctx *c,
                     const uint8_t *src, size_t n, const tvs_chunk_params *p)
{
    if (n > c->max_raw || n > UINT32_MAX)
        return tvs__fail(TVS_EINVAL, "chunk of %zu bytes is over the context's %zu",
                         n, c->max_raw);
    if (cap < tvs_chunk_bound(n))
        return tvs__fail(TVS_EBUFS, "chunk: destination of %zu bytes is under the bound %zu",
                         cap, tvs_chunk_bound(n));
    unsigned w = p->elem_bytes;
    int planes = (p->is_float || p->delta) && w >= 2 && w <= 8 && n % w == 0 && n >= 64 * w;
    int rot = planes && !p->delta && (w == 2 || w == 4 || w == 8);
    int rc = set_profile(c, planes ? PROFILE_ENTROPY : p->level ? p->level : TVS_ZSTD_LEVEL);
    if (rc)
        return rc;
    if (planes) {
        rc = encode_planes(dst, cap, written, c, src, n, w, rot);
        if (rc || *written < n + TVS_CHUNK_HDR)
            return rc;
        /* every plane stayed raw: a raw chunk is smaller and faster */
    } else {
        size_t z = try_zstd(c, dst + TVS_CHUNK_HDR, cap - TVS_CHUNK_HDR, src, n);
        if (z) {
            put_hdr(dst, TVS_CODEC_ZSTD, n);
            *written = TVS_CHUNK_HDR + z;
            return 0;
        }
    }
    put_hdr(dst, TVS_CODEC_RAW, n);
    if (n)
        memcpy(dst + TVS_CHUNK_HDR, src, n);
    *written = TVS_CHUNK_HDR + n;
    return 0;
}

/* ---- decode */

int tvs_chunk_info(uint8_t *codec, uint32_t *raw_len, tvs_span chunk)
{
    if (chunk.len < TVS_CHUNK_HDR)
        return tvs__fail(TVS_ECORRUPT, "chunk: %zu bytes is shorter than its header",
                         chunk.len);
    if (chunk.ptr[0] != 1)
        return tvs__fail(TVS_ECORRUPT, "chunk: object type %u is not a chunk",
                         chunk.ptr[0]);
    *codec = chunk.ptr[1];
    *raw_len = tvs_load_le32(chunk.ptr + 2);
    return 0;
}

int tvs_chunk_view(tvs_span *out, tvs_span chunk, tvs_codec_ctx *c)
{
    uint8_t codec = 0;
    uint32_t raw_len = 0;
    int rc = tvs_chunk_info(&codec, &raw_len, chunk);
    if (rc)
        return rc;
    if (codec == TVS_CODEC_RAW) {
        if (chunk.len - TVS_CHUNK_HDR != raw_len)
            return tvs__fail(TVS_ECORRUPT, "chunk: raw payload of %zu bytes, declared %u",
                             chunk.len - TVS_CHUNK_HDR, raw_len);
        *out = (tvs_span){ chunk.ptr + TVS_CHUNK_HDR, raw_len };
        return 0;
    }
    if (raw_len > TVS_CHUNK_MAX)
        return tvs__fail(TVS_ECORRUPT, "chunk: %u raw bytes is over the limit of %u",
                         raw_len, TVS_CHUNK_MAX);
    if (c->view_cap < raw_len) {
        uint8_t *p = tvs_realloc(c->view, raw_len);
        if (!p)
            return tvs__fail(TVS_ENOMEM, "out of memory for a %u-byte chunk", raw_len);
        c->view = p;
        c->view_cap = raw_len;
    }
    if ((rc = tvs_chunk_decode(c->view, raw_len, chunk, c)))
        return rc;
    *out = (tvs_span){ c->view, raw_len };
    return 0;
}

static int unzstd(tvs_codec_ctx *c, uint8_t *dst, size_t n, tvs_span src, const char *what)
{
    unsigned long long fcs = ZSTD_getFrameContentSize(src.ptr, src.len);
    if (fcs != n)
        return tvs__fail(TVS_ECORRUPT, "chunk: %s zstd frame declares %lld bytes, "
                         "expected %zu", what, (long long)fcs, n);
    size_t r = ZSTD_decompressDCtx(c->dctx, dst, n, src.ptr, src.len);
    if (ZSTD_isError(r))
        return tvs__fail(TVS_ECORRUPT, "chunk: %s zstd frame: %s", what,
                         ZSTD_getErrorName(r));
    if (r != n)
        return tvs__fail(TVS_ECORRUPT, "chunk: %s zstd frame gave %zu bytes, expected %zu",
                         what, r, n);
    return 0;
}

static int planes_of(const uint8_t **planes, unsigned *w_out, int *rot_out, size_t n,
                     tvs_reader *r, tvs_codec_ctx *c);

static int decode_planes(uint8_t *dst, size_t n, tvs_reader *r, tvs_codec_ctx *c)
{
    const uint8_t *planes[8];
    unsigned w;
    int rot, rc = planes_of(planes, &w, &rot, n, r, c);
    if (!rc)
        tvs_planes_merge(dst, planes, n / w, w, rot);
    return rc;
}

int tvs_chunk_decode_planes(const uint8_t **planes, unsigned *w, int *rot, size_t n,
                            tvs_span chunk, tvs_codec_ctx *c)
{
    uint8_t codec = 0;
    uint32_t raw_len = 0;
    int rc = tvs_chunk_info(&codec, &raw_len, chunk);
    if (rc)
        return rc;
    if (codec != TVS_CODEC_PLANES)
        return 1;
    if (raw_len != n)
        return tvs__fail(TVS_ECORRUPT, "chunk: holds %u bytes, expected %zu", raw_len, n);
    tvs_reader r = { chunk, TVS_CHUNK_HDR, "chunk" };
    return planes_of(planes, w, rot, n, &r, c);
}

/* Decode a planes payload's planes (raw ones point into the chunk). */
static int planes_of(const uint8_t **planes, unsigned *w_out, int *rot_out, size_t n,
                     tvs_reader *r, tvs_codec_ctx *c)
{
    uint8_t w, rot;
    int rc;
    if ((rc = tvs_read_u8(r, &w)) || (rc = tvs_read_u8(r, &rot)))
        return rc;
    if (w < 2 || w > 8 || n % w)
        return tvs__fail(TVS_ECORRUPT, "chunk: plane width %u does not divide %zu bytes",
                         w, n);
    if (rot > TVS_PLANE_ROTL1 || (rot && w != 2 && w != 4 && w != 8))
        return tvs__fail(TVS_ECORRUPT, "chunk: plane transform %u is invalid for width %u",
                         rot, w);
    if (n > c->max_raw)
        return tvs__fail(TVS_ECORRUPT, "chunk: %zu bytes is over the decoder's %zu",
                         n, c->max_raw);
    size_t ne = n / w;
    for (unsigned k = 0; k < w; k++) {
        uint8_t pc;
        uint32_t len;
        tvs_span body;
        if ((rc = tvs_read_u8(r, &pc)) || (rc = tvs_read_le32(r, &len)) ||
            (rc = tvs_read_bytes(r, &body, len)))
            return rc;
        if (pc == 0) {
            if (len != ne)
                return tvs__fail(TVS_ECORRUPT, "chunk: raw plane %u holds %u bytes, "
                                 "expected %zu", k, len, ne);
            planes[k] = body.ptr;
        } else if (pc == 1) {
            if ((rc = unzstd(c, c->scratch + k * ne, ne, body, "plane")))
                return rc;
            planes[k] = c->scratch + k * ne;
        } else {
            return tvs__fail(TVS_ECORRUPT, "chunk: plane %u has unknown codec %u", k, pc);
        }
    }
    if ((rc = tvs_read_end(r)))
        return rc;
    *w_out = w;
    *rot_out = rot;
    return 0;
}

int tvs_chunk_decode(uint8_t *dst, size_t n, tvs_span chunk, tvs_codec_ctx *c)
{
    uint8_t codec = 0;
    uint32_t raw_len = 0;
    int rc = tvs_chunk_info(&codec, &raw_len, chunk);
    if (rc)
        return rc;
    if (raw_len != n)
        return tvs__fail(TVS_ECORRUPT, "chunk: holds %u bytes, expected %zu", raw_len, n);
    tvs_reader r = { chunk, TVS_CHUNK_HDR, "chunk" };
    tvs_span body = { chunk.ptr + TVS_CHUNK_HDR, chunk.len - TVS_CHUNK_HDR };
    switch (codec) {
    case TVS_CODEC_RAW:
        if (body.len != n)
            return tvs__fail(TVS_ECORRUPT, "chunk: raw payload of %zu bytes, expected %zu",
                             body.len, n);
        if (n)
            memcpy(dst, body.ptr, n);
        return 0;
    case TVS_CODEC_ZSTD:
        return unzstd(c, dst, n, body, "payload");
    case TVS_CODEC_PLANES:
        return decode_planes(dst, n, &r, c);
    }
    return tvs__fail(TVS_ECORRUPT, "chunk: unknown codec %u", codec);
}
