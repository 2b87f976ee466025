/*
 * Fuzz target: a lossy chunk (format/lossy.h) as untrusted bytes, the way
 * materializing a lossy tensor reads it.
 *
 * Input: byte 0 picks the element type (value % 3: BF16, F16, F32); bytes
 * 1-4 are the chunk's element count n, little-endian, clamped to
 * LOSSY_MAX_N; the rest is the chunk. (make_corpus.c writes seeds in this
 * layout.)
 *
 * Checks: tvs_lossy_chunk_apply into a buffer of exactly n elements (ASan
 * sees any write past it) returns 0 or TVS_ECORRUPT; walking the units with
 * tvs_lossy_chunk_units and decoding every non-VERBATIM unit into a buffer
 * of exactly its n floats, by the rules of the chunk's version (byte 0: 1
 * sums LOWRANKQ by mul+add, 2 by fma), agrees with it (apply succeeds iff the framing is
 * valid and every unit decodes); when it succeeds, every element equals
 * round(base + d) computed from the decoded units with the scalar
 * conversions of format/dtype.c (VERBATIM: the stored elements); the SSE2
 * and reference loops give the same bytes; describing a unit never fails
 * with anything but TVS_ECORRUPT or TVS_EBUFS. tvs__lossy_simd is always
 * switched back, so no state survives an input.
 */
#include "fuzz/fuzz.h"

#include <math.h>
#include <string.h>

#include "format/lossy.h"
#include "format/lossy_int.h"

#define LOSSY_MAX_N 65536u

static const tvs_dtype dtypes[3] = { TVS_DTYPE_BF16, TVS_DTYPE_F16, TVS_DTYPE_F32 };

/* Base elements: a fixed pattern that includes NaNs, infinities, zeros. */
static void fill_base(uint8_t *b, size_t nbytes)
{
    uint32_t x = 0x9e3779b9u;
    for (size_t i = 0; i < nbytes; i++) {
        x = x * 1664525u + 1013904223u;
        b[i] = (uint8_t)(x >> 24);
    }
}

/* round(base + d) for one element, as SPEC 2.7 says (NaN sums included). */
static void ref_elem(uint8_t *out, const uint8_t *base, float d, tvs_dtype dt)
{
    if (dt == TVS_DTYPE_F32) {
        uint32_t bu = tvs_load_le32(base), o;
        float b;
        memcpy(&b, &bu, 4);
        float sum = b + d;
        memcpy(&o, &sum, 4);
        if (isnan(sum))
            o = isnan(b) ? bu | 0x400000u : 0x7fc00000u;
        tvs_store_le32(out, o);
        return;
    }
    uint16_t h = (uint16_t)(base[0] | base[1] << 8), o;
    int bf = dt == TVS_DTYPE_BF16;
    float b = bf ? tvs_bf16_to_f32(h) : tvs_f16_to_f32(h), sum = b + d;
    if (isnan(sum))
        o = isnan(b) ? (uint16_t)(h | (bf ? 0x40u : 0x200u)) : (bf ? 0x7fc0u : 0x7e00u);
    else
        o = bf ? tvs_f32_to_bf16(sum) : tvs_f32_to_f16(sum);
    out[0] = (uint8_t)o;
    out[1] = (uint8_t)(o >> 8);
}

typedef struct {
    tvs_dtype dt;
    unsigned w;
    const uint8_t *base;
    uint8_t *want;    /* the reference result, built unit by unit */
    int all_ok;       /* every unit decoded */
    size_t units;
    uint8_t version;  /* the chunk's (the walk has checked it) */
} walk_state;

static int check_unit(const tvs_lossy_unit *u, size_t first, void *p)
{
    walk_state *s = p;
    char desc[96];
    int drc = tvs_lossy_unit_describe(desc, sizeof desc, u);
    FUZZ_CHECK(drc == 0 || drc == TVS_ECORRUPT || drc == TVS_EBUFS);
    FUZZ_CHECK(u->n >= 1 && u->codec < TVS_LC_COUNT);
    s->units++;
    uint8_t *want = s->want + first * s->w;
    if (u->codec == TVS_LC_VERBATIM) {
        FUZZ_CHECK(u->payload.len == (size_t)u->n * s->w);
        memcpy(want, u->payload.ptr, u->payload.len);
        float one;
        FUZZ_CHECK(tvs_lossy_unit_decode(&one, 1, TVS_LC_VERBATIM, u->payload) == TVS_EINVAL);
        return 0;
    }
    float *d = malloc((size_t)u->n * sizeof *d);   /* exact size */
    if (!d)
        abort();
    int rc = tvs__lossy_unit_decode_v(d, u->n, u->codec, u->payload, s->version);
    FUZZ_CHECK(rc == 0 || rc == TVS_ECORRUPT);
    if (rc == 0)
        for (size_t i = 0; i < u->n; i++)
            ref_elem(want + i * s->w, s->base + (first + i) * s->w, d[i], s->dt);
    else
        s->all_ok = 0;
    free(d);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 5)
        return 0;
    tvs_dtype dt = dtypes[data[0] % 3];
    unsigned w = dt == TVS_DTYPE_F32 ? 4 : 2;
    size_t n = TVS_MIN(tvs_load_le32(data + 1), LOSSY_MAX_N);
    tvs_span chunk = { data + 5, size - 5 };

    uint8_t *base = malloc(n * w + 1), *dst = malloc(n * w + 1), *ref = malloc(n * w + 1);
    if (!base || !dst || !ref)
        abort();
    fill_base(base, n * w);

    memcpy(dst, base, n * w);
    int rc = tvs_lossy_chunk_apply(dst, dt, n, chunk);
    FUZZ_CHECK(rc == 0 || rc == TVS_ECORRUPT);

    walk_state s = { dt, w, base, ref, 1, 0, chunk.len ? chunk.ptr[0] : 0 };
    int wrc = tvs_lossy_chunk_units(chunk, dt, n, check_unit, &s);
    FUZZ_CHECK(wrc == 0 || wrc == TVS_ECORRUPT);
    FUZZ_CHECK((rc == 0) == (wrc == 0 && s.all_ok));
    if (rc == 0) {
        FUZZ_CHECK(n > 0 && s.units >= 1);
        FUZZ_CHECK(memcmp(dst, ref, n * w) == 0);
        /* the reference loops give the same bytes */
        memcpy(dst, base, n * w);
        tvs__lossy_simd = 0;
        int rrc = tvs_lossy_chunk_apply(dst, dt, n, chunk);
        tvs__lossy_simd = 1;
        FUZZ_CHECK(rrc == 0 && memcmp(dst, ref, n * w) == 0);
        /* a different element count is refused */
        FUZZ_CHECK(tvs_lossy_chunk_apply(dst, dt, n - 1, chunk) == TVS_ECORRUPT);
    }
    free(base);
    free(dst);
    free(ref);
    return 0;
}
