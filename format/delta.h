/**
 * @file format/delta.h
 * @brief Lossless transforms of a fine-tuned tensor against its base.
 *
 * A delta tensor stores t(ft, base) and rebuilds ft = t^-1(stored, base),
 * bit-exactly, on the elements' bit patterns (a float subtraction would not
 * round-trip). Transform ids are on disk (SPEC.md, "Delta transforms"):
 *
 *   1 XOR      stored = ft ^ base, bytewise (any dtype)
 *   2 ORD16    16-bit floats: map each bit pattern to an integer that
 *              orders like the float, subtract (mod 2^16), zigzag-encode;
 *              a change of k ulps becomes the small integer 2k or 2k-1
 *   3 ORD32    the same on 32-bit floats
 *
 * Pure functions over caller buffers; @p dst may alias @p src (in place).
 */
#ifndef TVS_FORMAT_DELTA_H
#define TVS_FORMAT_DELTA_H

#include "format/base.h"
#include "format/dtype.h"

enum {
    TVS_DELTA_XOR = 1,
    TVS_DELTA_ORD16 = 2,
    TVS_DELTA_ORD32 = 3,
};

/** The transform used for @p dtype. */
int tvs_delta_transform_for(tvs_dtype dtype);
/** Bytes per element the transform works on (1, 2 or 4); 0 if unknown. */
unsigned tvs_delta_width(int transform);

/** dst = t(ft, base) over @p n bytes (a multiple of the width). */
int tvs_delta_make(uint8_t *dst, const uint8_t *ft, const uint8_t *base, size_t n,
                   int transform);
/** dst = t^-1(stored, base): rebuilds ft. */
int tvs_delta_apply(uint8_t *dst, const uint8_t *stored, const uint8_t *base, size_t n,
                    int transform);

/**
 * dst = t^-1(stored, base) where the stored bytes come as @p w byte planes
 * (format/codec.h, no rotation): the plane merge fused with the transform.
 */
int tvs_delta_apply_planes(uint8_t *dst, const uint8_t *const *planes, unsigned w,
                           const uint8_t *base, size_t n, int transform);

/** Tests set this to 0 to run the portable reference loops instead of SSE2. */
extern int tvs__delta_simd;

#endif
