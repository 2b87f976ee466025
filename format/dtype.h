/**
 * @file format/dtype.h
 * @brief The safetensors element types: names, widths, stable on-disk ids.
 *
 * The numeric value of each tvs_dtype is stored in tensor objects, so it
 * never changes; new types take new numbers. Sub-byte types (F4, F6_*) have
 * a width in bits; a tensor of them must fill whole bytes.
 */
#ifndef TVS_FORMAT_DTYPE_H
#define TVS_FORMAT_DTYPE_H

#include "format/base.h"

/* X(enum name, on-disk id, safetensors name, bits per element, is float) */
#define TVS_DTYPES(X)                        \
    X(BOOL,         1, "BOOL",          8, 0) \
    X(U8,           2, "U8",            8, 0) \
    X(I8,           3, "I8",            8, 0) \
    X(I16,          4, "I16",          16, 0) \
    X(U16,          5, "U16",          16, 0) \
    X(I32,          6, "I32",          32, 0) \
    X(U32,          7, "U32",          32, 0) \
    X(I64,          8, "I64",          64, 0) \
    X(U64,          9, "U64",          64, 0) \
    X(F16,         10, "F16",          16, 1) \
    X(BF16,        11, "BF16",         16, 1) \
    X(F32,         12, "F32",          32, 1) \
    X(F64,         13, "F64",          64, 1) \
    X(F8_E5M2,     14, "F8_E5M2",       8, 1) \
    X(F8_E4M3,     15, "F8_E4M3",       8, 1) \
    X(F8_E8M0,     16, "F8_E8M0",       8, 1) \
    X(F8_E4M3FNUZ, 17, "F8_E4M3FNUZ",   8, 1) \
    X(F8_E5M2FNUZ, 18, "F8_E5M2FNUZ",   8, 1) \
    X(F4,          19, "F4",            4, 1) \
    X(F6_E2M3,     20, "F6_E2M3",       6, 1) \
    X(F6_E3M2,     21, "F6_E3M2",       6, 1) \
    X(C64,         22, "C64",          64, 1)

typedef enum {
    TVS_DTYPE_NONE = 0,
#define TVS_X(e, id, name, bits, fl) TVS_DTYPE_##e = id,
    TVS_DTYPES(TVS_X)
#undef TVS_X
    TVS_DTYPE_MAX_
} tvs_dtype;

/** Parse a safetensors dtype name (exact, case-sensitive); NONE if unknown. */
tvs_dtype tvs_dtype_parse(const char *name, size_t len);
/** The safetensors name; "?" for an unknown id. */
const char *tvs_dtype_name(tvs_dtype t);
/** Bits per element; 0 for an unknown id. */
unsigned tvs_dtype_bits(tvs_dtype t);
/** 1 for floating-point types. */
int tvs_dtype_is_float(tvs_dtype t);
/**
 * Bytes of @p n elements; TVS_EINVAL if they do not fill whole bytes or
 * overflow.
 */
int tvs_dtype_nbytes(uint64_t *out, tvs_dtype t, uint64_t n);

/* ---- float conversion (round to nearest, ties to even; NaN stays NaN) */

/** @p n elements of @p t (BF16, F16 or F32) to f32. TVS_EINVAL for other types. */
int tvs_dtype_to_f32(float *dst, const uint8_t *src, size_t n, tvs_dtype t);
/** @p n f32 values to @p t (BF16, F16 or F32), round-to-nearest-even. */
int tvs_dtype_from_f32(uint8_t *dst, const float *src, size_t n, tvs_dtype t);
/** 1 if tvs_dtype_to_f32 / _from_f32 handle @p t. */
int tvs_dtype_convertible(tvs_dtype t);

uint16_t tvs_f32_to_bf16(float f);
float tvs_bf16_to_f32(uint16_t h);
uint16_t tvs_f32_to_f16(float f);
float tvs_f16_to_f32(uint16_t h);

#endif
