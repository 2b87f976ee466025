/*
 * Fuzz target: delta transforms round trip (format/delta.h). The first byte
 * picks the transform (fuzz.h); the rest is split into a fine-tuned tensor
 * and its base, of equal length, cut to whole elements.
 *
 * Checks: apply(make(ft, base), base) == ft; the SSE2 paths give the same
 * bytes as the reference loops, both ways; both work in place (dst == src,
 * as delta.h allows); and the fused plane merge (tvs_delta_apply_planes)
 * rebuilds ft from the byte planes of the stored bytes, as a planes chunk
 * would hold them.
 *
 * tvs__delta_simd is switched off for the reference runs and always
 * switched back, so no state survives an input.
 */
#include "fuzz/fuzz.h"

#include <string.h>

#include "format/codec.h"
#include "format/delta.h"

static void make(uint8_t *dst, const uint8_t *ft, const uint8_t *base, size_t n, int t,
                 int simd)
{
    tvs__delta_simd = simd;
    int rc = tvs_delta_make(dst, ft, base, n, t);
    tvs__delta_simd = 1;
    FUZZ_CHECK(rc == 0);
}

static void apply(uint8_t *dst, const uint8_t *s, const uint8_t *base, size_t n, int t,
                  int simd)
{
    tvs__delta_simd = simd;
    int rc = tvs_delta_apply(dst, s, base, n, t);
    tvs__delta_simd = 1;
    FUZZ_CHECK(rc == 0);
}

static void apply_planes(uint8_t *dst, const uint8_t *const *planes, unsigned w,
                         const uint8_t *base, size_t n, int t, int simd)
{
    tvs__delta_simd = simd;
    int rc = tvs_delta_apply_planes(dst, planes, w, base, n, t);
    tvs__delta_simd = 1;
    FUZZ_CHECK(rc == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int t = fuzz_delta_transform_of(data[0]);
    unsigned w = tvs_delta_width(t);
    FUZZ_CHECK(w != 0);
    size_t n = (size - 1) / 2 / w * w;
    const uint8_t *ft = data + 1, *base = data + 1 + n;

    /* exact sizes, so ASan sees any access past n */
    size_t m = n ? n : 1;
    uint8_t *s = malloc(m), *s_ref = malloc(m), *out = malloc(m), *planes_buf = malloc(m);
    if (!s || !s_ref || !out || !planes_buf)
        abort();

    make(s, ft, base, n, t, 1);
    make(s_ref, ft, base, n, t, 0);
    FUZZ_CHECK(n == 0 || memcmp(s, s_ref, n) == 0);

    for (int simd = 0; simd <= 1; simd++) {
        apply(out, s, base, n, t, simd);
        FUZZ_CHECK(n == 0 || memcmp(out, ft, n) == 0);
        /* in place: make over a copy of ft, then apply over the result */
        if (n)
            memcpy(out, ft, n);
        make(out, out, base, n, t, simd);
        FUZZ_CHECK(n == 0 || memcmp(out, s, n) == 0);
        apply(out, out, base, n, t, simd);
        FUZZ_CHECK(n == 0 || memcmp(out, ft, n) == 0);
    }

    if (w >= 2) {
        /* stored bytes as a planes chunk holds them: no rotation */
        const uint8_t *planes[8];
        tvs_planes_split(planes_buf, s, n / w, w, 0);
        for (unsigned k = 0; k < w; k++)
            planes[k] = planes_buf + k * (n / w);
        for (int simd = 0; simd <= 1; simd++) {
            memset(out, 0, m);
            apply_planes(out, planes, w, base, n, t, simd);
            FUZZ_CHECK(n == 0 || memcmp(out, ft, n) == 0);
        }
    }

    free(s);
    free(s_ref);
    free(out);
    free(planes_buf);
    return 0;
}
