/*
 * Delta transforms (format/delta.h). The portable loops are the reference;
 * the ORD16/ORD32 loops also have SSE2 bodies (part of the x86-64
 * baseline, so no run-time dispatch is needed), tested bit for bit against
 * the reference. Everything is branch-free: the ordering map is an XOR
 * with a mask derived from the sign bit.
 */
#include "format/delta.h"
#include "format/codec.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

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

#if defined(__SSE2__)
/* ord(v) = v ^ (sign ? 0xffff : 0x8000); unord(u) = u ^ (top ? 0x8000 : 0xffff) */
static inline __m128i ord16x8(__m128i v)
{
    return _mm_xor_si128(v, _mm_or_si128(_mm_srai_epi16(v, 15), _mm_set1_epi16(-0x8000)));
}
static inline __m128i unord16x8(__m128i u)
{
    __m128i m = _mm_or_si128(_mm_andnot_si128(_mm_srai_epi16(u, 15), _mm_set1_epi16(-1)),
                             _mm_set1_epi16(-0x8000));
    return _mm_xor_si128(u, m);
}
static inline __m128i ord32x4(__m128i v)
{
    return _mm_xor_si128(v, _mm_or_si128(_mm_srai_epi32(v, 31),
                                         _mm_set1_epi32((int)0x80000000u)));
}
static inline __m128i unord32x4(__m128i u)
{
    __m128i m = _mm_or_si128(_mm_andnot_si128(_mm_srai_epi32(u, 31), _mm_set1_epi32(-1)),
                             _mm_set1_epi32((int)0x80000000u));
    return _mm_xor_si128(u, m);
}

/* Vector part of make/apply; returns how many bytes it did. */
static size_t make_simd(uint8_t *dst, const uint8_t *ft, const uint8_t *base, size_t n, int t)
{
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i f = _mm_loadu_si128((const __m128i *)(ft + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(base + i)), z;
        if (t == TVS_DELTA_ORD16) {
            __m128i d = _mm_sub_epi16(ord16x8(f), ord16x8(b));
            z = _mm_xor_si128(_mm_slli_epi16(d, 1), _mm_srai_epi16(d, 15));
        } else {
            __m128i d = _mm_sub_epi32(ord32x4(f), ord32x4(b));
            z = _mm_xor_si128(_mm_slli_epi32(d, 1), _mm_srai_epi32(d, 31));
        }
        _mm_storeu_si128((__m128i *)(dst + i), z);
    }
    return i;
}

static size_t apply_simd(uint8_t *dst, const uint8_t *s, const uint8_t *base, size_t n, int t)
{
    size_t i = 0;
    const __m128i zero = _mm_setzero_si128();
    for (; i + 16 <= n; i += 16) {
        __m128i z = _mm_loadu_si128((const __m128i *)(s + i));
        __m128i b = _mm_loadu_si128((const __m128i *)(base + i)), o;
        if (t == TVS_DELTA_ORD16) {
            __m128i d = _mm_xor_si128(_mm_srli_epi16(z, 1),
                                      _mm_sub_epi16(zero, _mm_and_si128(z, _mm_set1_epi16(1))));
            o = unord16x8(_mm_add_epi16(ord16x8(b), d));
        } else {
            __m128i d = _mm_xor_si128(_mm_srli_epi32(z, 1),
                                      _mm_sub_epi32(zero, _mm_and_si128(z, _mm_set1_epi32(1))));
            o = unord32x4(_mm_add_epi32(ord32x4(b), d));
        }
        _mm_storeu_si128((__m128i *)(dst + i), o);
    }
    return i;
}
#endif

int tvs__delta_simd = 1;   /* tests turn it off to run the reference loops */

int tvs_delta_make(uint8_t *dst, const uint8_t *ft, const uint8_t *base, size_t n, int t)
{
    int rc = check(n, t);
    if (rc)
        return rc;
#if defined(__SSE2__)
    if (tvs__delta_simd && t != TVS_DELTA_XOR) {
        size_t k = make_simd(dst, ft, base, n, t);
        dst += k;
        ft += k;
        base += k;
        n -= k;
    }
#endif
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
#if defined(__SSE2__)
    if (tvs__delta_simd && t != TVS_DELTA_XOR) {
        size_t k = apply_simd(dst, s, base, n, t);
        dst += k;
        s += k;
        base += k;
        n -= k;
    }
#endif
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

int tvs_delta_apply_planes(uint8_t *dst, const uint8_t *const *planes, unsigned w,
                           const uint8_t *base, size_t n, int t)
{
    int rc = check(n, t);
    if (rc)
        return rc;
    if (w != tvs_delta_width(t) || w < 2)
        return tvs__fail(TVS_ECORRUPT, "delta planes of width %u do not fit transform %d",
                         w, t);
    size_t i = 0, ne = n / w;
#if defined(__SSE2__)
    if (tvs__delta_simd && t == TVS_DELTA_ORD16) {
        const __m128i zero = _mm_setzero_si128(), one = _mm_set1_epi16(1);
        for (; i + 16 <= ne; i += 16) {
            __m128i p0 = _mm_loadu_si128((const __m128i *)(planes[0] + i));
            __m128i p1 = _mm_loadu_si128((const __m128i *)(planes[1] + i));
            __m128i z[2] = { _mm_unpacklo_epi8(p0, p1), _mm_unpackhi_epi8(p0, p1) };
            for (int h = 0; h < 2; h++) {
                __m128i b = _mm_loadu_si128((const __m128i *)(base + 2 * i + 16 * h));
                __m128i d = _mm_xor_si128(_mm_srli_epi16(z[h], 1),
                                          _mm_sub_epi16(zero, _mm_and_si128(z[h], one)));
                _mm_storeu_si128((__m128i *)(dst + 2 * i + 16 * h),
                                 unord16x8(_mm_add_epi16(ord16x8(b), d)));
            }
        }
    }
#endif
    /* the rest: merge a block into a stack buffer, then apply */
    uint8_t tmp[1024];
    while (i < ne) {
        size_t m = TVS_MIN(ne - i, sizeof tmp / w);
        const uint8_t *p[8];
        for (unsigned k = 0; k < w; k++)
            p[k] = planes[k] + i;
        tvs_planes_merge_ref(tmp, p, m, w, 0);
        if ((rc = tvs_delta_apply(dst + i * w, tmp, base + i * w, m * w, t)))
            return rc;
        i += m;
    }
    return 0;
}
