/* Element type table: one row per safetensors dtype (format/dtype.h). */
#include "format/dtype.h"

#include <string.h>
#include <math.h>

static const struct {
    const char *name;
    unsigned bits;
    int is_float;
} table[TVS_DTYPE_MAX_] = {
#define TVS_X(e, id, name, bits, fl) [id] = { name, bits, fl },
    TVS_DTYPES(TVS_X)
#undef TVS_X
};

tvs_dtype tvs_dtype_parse(const char *name, size_t len)
{
    for (int t = 1; t < TVS_DTYPE_MAX_; t++)
        if (table[t].name && strlen(table[t].name) == len &&
            memcmp(table[t].name, name, len) == 0)
            return (tvs_dtype)t;
    return TVS_DTYPE_NONE;
}

static int known(tvs_dtype t) { return t > 0 && t < TVS_DTYPE_MAX_ && table[t].name; }

const char *tvs_dtype_name(tvs_dtype t) { return known(t) ? table[t].name : "?"; }
unsigned tvs_dtype_bits(tvs_dtype t) { return known(t) ? table[t].bits : 0; }
int tvs_dtype_is_float(tvs_dtype t) { return known(t) && table[t].is_float; }

int tvs_dtype_nbytes(uint64_t *out, tvs_dtype t, uint64_t n)
{
    unsigned bits = tvs_dtype_bits(t);
    if (!bits)
        return tvs__fail(TVS_EINVAL, "unknown dtype id %d", (int)t);
    if (n > UINT64_MAX / bits)
        return tvs__fail(TVS_EINVAL, "%llu elements of %s overflow",
                         (unsigned long long)n, table[t].name);
    uint64_t total = n * bits;
    if (total % 8)
        return tvs__fail(TVS_EINVAL, "%llu elements of %s (%u bits) do not fill whole bytes",
                         (unsigned long long)n, table[t].name, bits);
    *out = total / 8;
    return 0;
}

/* ---- float conversion */

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

uint16_t tvs_f32_to_bf16(float f)
{
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u)          /* NaN: keep it quiet, keep the sign */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);                /* ties to even; overflow goes to inf */
    return (uint16_t)(u >> 16);
}

float tvs_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }

uint16_t tvs_f32_to_f16(float f)
{
    uint32_t u = f2u(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u)
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));   /* NaN */
    if (a >= 0x477ff000u)                 /* rounds to >= 65520: infinity */
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) {               /* normal f16 */
        uint32_t m = a - 0x38000000u;     /* rebias exponent 127 -> 15 */
        m += 0xfffu + ((m >> 13) & 1);
        return (uint16_t)(sign | (m >> 13));
    }
    if (a < 0x33000000u)                  /* below half the smallest subnormal */
        return (uint16_t)sign;
    /* subnormal: shift the full mantissa right, rounding to nearest even */
    uint32_t e = a >> 23, mant = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126 - e;             /* 14 .. 24 */
    uint32_t h = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1)))
        h++;
    return (uint16_t)(sign | h);
}

float tvs_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ffu;
    if (e == 0x1f)
        return u2f(sign | 0x7f800000u | (m << 13));
    if (e)
        return u2f(sign | ((e + 112) << 23) | (m << 13));
    return sign ? -ldexpf((float)m, -24) : ldexpf((float)m, -24);
}

int tvs_dtype_convertible(tvs_dtype t)
{
    return t == TVS_DTYPE_BF16 || t == TVS_DTYPE_F16 || t == TVS_DTYPE_F32;
}

int tvs_dtype_to_f32(float *dst, const uint8_t *src, size_t n, tvs_dtype t)
{
    switch (t) {
    case TVS_DTYPE_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = u2f((uint32_t)(src[2 * i] | src[2 * i + 1] << 8) << 16);
        return 0;
    case TVS_DTYPE_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = tvs_f16_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        return 0;
    case TVS_DTYPE_F32:
        memcpy(dst, src, n * 4);
        return 0;
    default:
        return tvs__fail(TVS_EINVAL, "cannot convert %s to f32", tvs_dtype_name(t));
    }
}

int tvs_dtype_from_f32(uint8_t *dst, const float *src, size_t n, tvs_dtype t)
{
    switch (t) {
    case TVS_DTYPE_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = tvs_f32_to_bf16(src[i]);
            dst[2 * i] = (uint8_t)h;
            dst[2 * i + 1] = (uint8_t)(h >> 8);
        }
        return 0;
    case TVS_DTYPE_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h = tvs_f32_to_f16(src[i]);
            dst[2 * i] = (uint8_t)h;
            dst[2 * i + 1] = (uint8_t)(h >> 8);
        }
        return 0;
    case TVS_DTYPE_F32:
        memcpy(dst, src, n * 4);
        return 0;
    default:
        return tvs__fail(TVS_EINVAL, "cannot convert f32 to %s", tvs_dtype_name(t));
    }
}
