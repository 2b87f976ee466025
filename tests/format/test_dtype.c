/*
 * format/dtype.c: every dtype of the safetensors spec, with its stable
 * on-disk id, its width and the whole-byte rule for sub-byte types.
 */
#include <criterion/criterion.h>
#include <stdint.h>

#include "format/dtype.h"
#include "tests/support/support.h"

typedef struct {
    const char *name;
    int id;            /* on disk: must never change */
    unsigned bits;
    int is_float;
} row;

/* The safetensors spec's dtypes, written out by hand (not from the table). */
static const row spec[] = {
    { "BOOL", 1, 8, 0 },        { "U8", 2, 8, 0 },           { "I8", 3, 8, 0 },
    { "I16", 4, 16, 0 },        { "U16", 5, 16, 0 },         { "I32", 6, 32, 0 },
    { "U32", 7, 32, 0 },        { "I64", 8, 64, 0 },         { "U64", 9, 64, 0 },
    { "F16", 10, 16, 1 },       { "BF16", 11, 16, 1 },       { "F32", 12, 32, 1 },
    { "F64", 13, 64, 1 },       { "F8_E5M2", 14, 8, 1 },     { "F8_E4M3", 15, 8, 1 },
    { "F8_E8M0", 16, 8, 1 },    { "F8_E4M3FNUZ", 17, 8, 1 }, { "F8_E5M2FNUZ", 18, 8, 1 },
    { "F4", 19, 4, 1 },         { "F6_E2M3", 20, 6, 1 },     { "F6_E3M2", 21, 6, 1 },
    { "C64", 22, 64, 1 },
};
#define N_SPEC (sizeof spec / sizeof spec[0])


TestSuite(dtype, .fini = tt_leak_check);

Test(dtype, every_spec_dtype_parses_to_its_stable_id)
{
    for (size_t i = 0; i < N_SPEC; i++) {
        tvs_dtype t = tvs_dtype_parse(spec[i].name, strlen(spec[i].name));
        cr_assert_eq((int)t, spec[i].id, "%s parsed to %d, its on-disk id is %d",
                     spec[i].name, (int)t, spec[i].id);
    }
}

Test(dtype, every_dtype_has_its_name_width_and_kind)
{
    for (size_t i = 0; i < N_SPEC; i++) {
        tvs_dtype t = (tvs_dtype)spec[i].id;
        cr_assert_str_eq(tvs_dtype_name(t), spec[i].name);
        cr_assert_eq(tvs_dtype_bits(t), spec[i].bits, "%s", spec[i].name);
        cr_assert_eq(tvs_dtype_is_float(t), spec[i].is_float, "%s", spec[i].name);
    }
}

Test(dtype, the_table_holds_exactly_the_spec_dtypes)
{
    cr_assert_eq((int)TVS_DTYPE_MAX_, (int)N_SPEC + 1);
    for (int t = 1; t < TVS_DTYPE_MAX_; t++)
        cr_assert_str_neq(tvs_dtype_name((tvs_dtype)t), "?", "id %d has no name", t);
}

Test(dtype, parse_is_exact_and_case_sensitive)
{
    static const char *bad[] = { "", "bf16", "Bf16", "F8", "BF1", "BF16 ", " BF16",
                                 "F8_E4M3FN", "F8_E4M3FNUZZ", "C128", "F4x", "U128",
                                 "__metadata__" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_eq(tvs_dtype_parse(bad[i], strlen(bad[i])), TVS_DTYPE_NONE, "'%s'", bad[i]);
}

Test(dtype, parse_uses_the_given_length_not_the_nul)
{
    cr_assert_eq(tvs_dtype_parse("BF16xyz", 4), TVS_DTYPE_BF16);
    cr_assert_eq(tvs_dtype_parse("F16", 2), TVS_DTYPE_NONE);
    cr_assert_eq(tvs_dtype_parse("F8_E4M3FNUZ", 9), TVS_DTYPE_NONE);
    cr_assert_eq(tvs_dtype_parse("F8_E4M3FNUZ", 7), TVS_DTYPE_F8_E4M3);
    cr_assert_eq(tvs_dtype_parse("F8_E4M3FNUZ", 11), TVS_DTYPE_F8_E4M3FNUZ);
}

Test(dtype, unknown_ids_have_no_name_width_or_kind)
{
    static const int ids[] = { 0, 23, 99, 255, -1 };
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        tvs_dtype t = (tvs_dtype)ids[i];
        cr_assert_str_eq(tvs_dtype_name(t), "?");
        cr_assert_eq(tvs_dtype_bits(t), 0);
        cr_assert_eq(tvs_dtype_is_float(t), 0);
    }
}

Test(dtype, nbytes_is_width_times_count_for_every_dtype)
{
    for (size_t i = 0; i < N_SPEC; i++) {
        uint64_t n;
        tt_ok(tvs_dtype_nbytes(&n, (tvs_dtype)spec[i].id, 24));
        cr_assert_eq(n, 24 * spec[i].bits / 8, "%s", spec[i].name);
        tt_ok(tvs_dtype_nbytes(&n, (tvs_dtype)spec[i].id, 0));
        cr_assert_eq(n, 0, "%s: zero elements are zero bytes", spec[i].name);
    }
}

Test(dtype, sub_byte_types_must_fill_whole_bytes)
{
    uint64_t n = 12345;
    /* F4: two per byte */
    tt_ok(tvs_dtype_nbytes(&n, TVS_DTYPE_F4, 2));
    cr_assert_eq(n, 1);
    tt_ok(tvs_dtype_nbytes(&n, TVS_DTYPE_F4, 1000));
    cr_assert_eq(n, 500);
    for (uint64_t k = 1; k < 40; k += 2) {
        n = 12345;
        tt_fails(tvs_dtype_nbytes(&n, TVS_DTYPE_F4, k), TVS_EINVAL);
        cr_assert_eq(n, 12345, "output untouched on failure");
    }
    tt_msg_has("whole bytes");
    tt_msg_has("F4");
    /* F6: four per three bytes */
    static const tvs_dtype f6[] = { TVS_DTYPE_F6_E2M3, TVS_DTYPE_F6_E3M2 };
    for (int j = 0; j < 2; j++) {
        for (uint64_t k = 0; k < 64; k++) {
            int rc = tvs_dtype_nbytes(&n, f6[j], k);
            if (k % 4 == 0) {
                cr_assert_eq(rc, 0, "%s x %llu", tvs_dtype_name(f6[j]), (unsigned long long)k);
                cr_assert_eq(n, k / 4 * 3);
            } else {
                cr_assert_eq(rc, TVS_EINVAL, "%s x %llu must not fill whole bytes",
                             tvs_dtype_name(f6[j]), (unsigned long long)k);
            }
        }
    }
}

Test(dtype, nbytes_rejects_overflow_and_unknown_types)
{
    uint64_t n;
    tt_fails(tvs_dtype_nbytes(&n, TVS_DTYPE_F64, UINT64_MAX / 8), TVS_EINVAL);
    tt_msg_has("overflow");
    tt_fails(tvs_dtype_nbytes(&n, TVS_DTYPE_U8, UINT64_MAX), TVS_EINVAL);
    tt_ok(tvs_dtype_nbytes(&n, TVS_DTYPE_U8, UINT64_MAX / 8));
    cr_assert_eq(n, UINT64_MAX / 8);
    tt_fails(tvs_dtype_nbytes(&n, TVS_DTYPE_NONE, 4), TVS_EINVAL);
    tt_msg_has("unknown dtype");
    tt_fails(tvs_dtype_nbytes(&n, (tvs_dtype)200, 4), TVS_EINVAL);
}
