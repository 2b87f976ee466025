/*
 * Delta transforms (format/delta.h). The loops are plain C written so the
 * compiler vectorizes them (no branches in the bodies: the ordering map is
 * an XOR with a mask derived from the sign bit).
 */
#include "format/delta.h"

int tvs_delta_transform_for(tvs_dtype dtype)
{
    switch (dtype) {
    case TVS_DTYPE_BF16:
    case TVS_DTYPE_F16:
        return TVS_DELTA_ORD16;
    case TVS_DTYPE_F32:
        return TVS_DELTA_ORD32;
    default:
        return TVS_DELTA_XOR;
    }
}

unsigned tvs_delta_width(int t)
{
    switch (t) {
    case TVS_DELTA_XOR: return 1;
    case TVS_DELTA_ORD16: return 2;
    case TVS_DELTA_ORD32: return 4;
    }
    return 0;
}

/* Order-preserving map of a sign-magnitude pattern: negative values are
 * inverted, positive ones get the top bit set. Self-inverse up to the top
 * bit, see unord. */
static inline uint16_t ord16(uint16_t v) { return v ^ (uint16_t)(-(int16_t)(v >> 15) | 0x8000); }
static inline uint16_t unord16(uint16_t u) { return u ^ (uint16_t)((u >> 15) ? 0x8000 : 0xffff); }
static inline uint32_t ord32(uint32_t v) { return v ^ (uint32_t)(-(int32_t)(v >> 31) | 0x80000000u); }
static inline uint32_t unord32(uint32_t u) { return u ^ ((u >> 31) ? 0x80000000u : 0xffffffffu); }

static inline uint16_t ld16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static inline void st16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

static int check(size_t n, int t)
{
    unsigned w = tvs_delta_width(t);
    if (!w)
        return tvs__fail(TVS_ECORRUPT, "unknown delta transform %d", t);
    if (n % w)
        return tvs__fail(TVS_ECORRUPT, "delta of %zu bytes is not whole %u-byte elements",
                         n, w);
    return 0;
}

int tvs_delta_make(uint8_t *dst, const uint8_t *ft, const uint8_t *base, size_t n, int t)
{
    int rc = check(n, t);
    if (rc)
        return rc;
    if (t == TVS_DELTA_XOR) {
        for (size_t i = 0; i < n; i++)
            dst[i] = ft[i] ^ base[i];
    } else if (t == TVS_DELTA_ORD16) {
        for (size_t i = 0; i < n; i += 2) {
            uint16_t d = (uint16_t)(ord16(ld16(ft + i)) - ord16(ld16(base + i)));
            st16(dst + i, (uint16_t)((uint16_t)(d << 1) ^ (uint16_t)-(d >> 15)));
        }
    } else {
        for (size_t i = 0; i < n; i += 4) {
            uint32_t d = ord32(tvs_load_le32(ft + i)) - ord32(tvs_load_le32(base + i));
            tvs_store_le32(dst + i, (d << 1) ^ (uint32_t)-(d >> 31));
        }
    }
    return 0;
}

int tvs_delta_apply(uint8_t *dst, const uint8_t *s, const uint8_t *base, size_t n, int t)
{
    int rc = check(n, t);
    if (rc)
        return rc;
    if (t == TVS_DELTA_XOR) {
        for (size_t i = 0; i < n; i++)
            dst[i] = s[i] ^ base[i];
    } else if (t == TVS_DELTA_ORD16) {
        for (size_t i = 0; i < n; i += 2) {
            uint16_t z = ld16(s + i), d = (uint16_t)((z >> 1) ^ (uint16_t)-(z & 1));
            st16(dst + i, unord16((uint16_t)(ord16(ld16(base + i)) + d)));
        }
    } else {
        for (size_t i = 0; i < n; i += 4) {
            uint32_t z = tvs_load_le32(s + i), d = (z >> 1) ^ (uint32_t)-(z & 1);
            tvs_store_le32(dst + i, unord32(ord32(tvs_load_le32(base + i)) + d));
        }
    }
    return 0;
}
