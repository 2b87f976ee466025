/*
 * format/base.c: error codes and messages, spans, buffers, the checked
 * reader, byte order, ids and the streaming hasher.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>

#include "format/base.h"
#include "tests/support/support.h"

extern long tvs__alloc_fail_after;

/* ---- errors */


TestSuite(base, .fini = tt_leak_check);

Test(base, every_error_code_has_its_own_text)
{
    static const int codes[] = { TVS_OK, TVS_ERROR, TVS_ENOTFOUND, TVS_EEXISTS,
                                 TVS_EBUFS, TVS_ECORRUPT, TVS_ECOLLIDE, TVS_ELINEAGE,
                                 TVS_EINVAL, TVS_ENOMEM, TVS_EIO, TVS_EBUSY };
    size_t n = sizeof codes / sizeof codes[0];
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_neq(tvs_strerror(codes[i]), "unknown error", "code %d", codes[i]);
        for (size_t j = 0; j < i; j++)
            cr_assert_str_neq(tvs_strerror(codes[i]), tvs_strerror(codes[j]));
    }
    cr_assert_str_eq(tvs_strerror(TVS_OK), "success");
    cr_assert_str_eq(tvs_strerror(TVS_ECOLLIDE), "same id, different bytes");
}

Test(base, error_codes_keep_their_numbers)
{
    cr_assert_eq(TVS_OK, 0);
    cr_assert_eq(TVS_ERROR, -1);
    cr_assert_eq(TVS_ENOTFOUND, -2);
    cr_assert_eq(TVS_EEXISTS, -3);
    cr_assert_eq(TVS_EBUFS, -4);
    cr_assert_eq(TVS_ECORRUPT, -5);
    cr_assert_eq(TVS_ECOLLIDE, -6);
    cr_assert_eq(TVS_ELINEAGE, -7);
    cr_assert_eq(TVS_EINVAL, -8);
    cr_assert_eq(TVS_ENOMEM, -9);
    cr_assert_eq(TVS_EIO, -10);
    cr_assert_eq(TVS_EBUSY, -11);
}

Test(base, an_unknown_code_says_so_and_is_never_null)
{
    cr_assert_str_eq(tvs_strerror(-999), "unknown error");
    cr_assert_str_eq(tvs_strerror(42), "unknown error");
}

Test(base, fail_records_the_message_and_returns_the_code)
{
    int rc = tvs__fail(TVS_ECORRUPT, "tensor \"%s\": rule %d", "w", 7);
    cr_assert_eq(rc, TVS_ECORRUPT);
    cr_assert_str_eq(tvs_errmsg(), "tensor \"w\": rule 7");
}

Test(base, failctx_prefixes_the_previous_message)
{
    tvs__fail(TVS_EIO, "inner");
    int rc = tvs__failctx(TVS_EIO, "outer %d", 1);
    cr_assert_eq(rc, TVS_EIO);
    cr_assert_str_eq(tvs_errmsg(), "outer 1: inner");
    tvs__errclear();
    tvs__failctx(TVS_EIO, "alone");
    cr_assert_str_eq(tvs_errmsg(), "alone");
}

Test(base, errclear_forgets_the_last_failure)
{
    tvs__fail(TVS_ERROR, "something");
    tvs__errclear();
    cr_assert_str_eq(tvs_errmsg(), "");
}

Test(base, a_very_long_message_is_truncated_not_overflowed)
{
    char big[4096];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    tvs__fail(TVS_ERROR, "%s", big);
    size_t n = strlen(tvs_errmsg());
    cr_assert(n > 100 && n < sizeof big, "length %zu", n);
    tvs__failctx(TVS_ERROR, "%s", big);
    cr_assert(strlen(tvs_errmsg()) < sizeof big);
}

/* ---- spans */

Test(base, span_sub_takes_an_inner_range)
{
    static const uint8_t b[10] = { 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 };
    tvs_span s = { b, sizeof b }, out;
    tt_ok(tvs_span_sub(&out, s, 3, 4));
    cr_assert_eq(out.ptr, b + 3);
    cr_assert_eq(out.len, 4);
    tt_ok(tvs_span_sub(&out, s, 10, 0));
    cr_assert_eq(out.len, 0);
    tt_ok(tvs_span_sub(&out, s, 0, 10));
    cr_assert_eq(out.len, 10);
}

Test(base, span_sub_rejects_ranges_past_the_end_and_overflow)
{
    static const uint8_t b[10] = { 0 };
    tvs_span s = { b, sizeof b }, out = { NULL, 0 };
    tt_fails(tvs_span_sub(&out, s, 11, 0), TVS_ECORRUPT);
    tt_fails(tvs_span_sub(&out, s, 5, 6), TVS_ECORRUPT);
    tt_msg_has("past the end");
    tt_fails(tvs_span_sub(&out, s, 1, SIZE_MAX), TVS_ECORRUPT);
    tt_fails(tvs_span_sub(&out, s, SIZE_MAX, 2), TVS_ECORRUPT);
    cr_assert_null(out.ptr, "a failed sub-range must not be filled in");
}

/* ---- buffers */

Test(base, buf_appends_and_writes_little_endian)
{
    tvs_buf b = TVS_BUF_INIT;
    tt_ok(tvs_buf_put_u8(&b, 0xab));
    tt_ok(tvs_buf_put_le32(&b, 0x01020304));
    tt_ok(tvs_buf_put_le64(&b, 0x1122334455667788ull));
    tt_ok(tvs_buf_put_str(&b, "hi", 2));
    tt_ok(tvs_buf_append(&b, NULL, 0));
    static const uint8_t want[] = { 0xab, 4, 3, 2, 1, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33,
                                    0x22, 0x11, 2, 0, 0, 0, 'h', 'i' };
    cr_assert_eq(b.len, sizeof want);
    cr_assert_arr_eq(b.ptr, want, sizeof want);
    cr_assert_geq(b.cap, b.len);
    tvs_buf_dispose(&b);
    cr_assert_null(b.ptr);
    cr_assert_eq(b.len, 0);
    cr_assert_eq(b.cap, 0);
}

Test(base, buf_grows_across_many_appends)
{
    tvs_buf b = TVS_BUF_INIT;
    for (uint32_t i = 0; i < 100000; i++)
        tt_ok(tvs_buf_put_le32(&b, i));
    cr_assert_eq(b.len, 400000);
    for (uint32_t i = 0; i < 100000; i += 9973)
        cr_assert_eq(tvs_load_le32(b.ptr + 4 * i), i);
    tvs_buf_dispose(&b);
}

Test(base, buf_reports_enomem_and_keeps_its_bytes)
{
    tvs_buf b = TVS_BUF_INIT;
    tt_ok(tvs_buf_append(&b, "abc", 3));
    tt_fails(tvs_buf_reserve(&b, SIZE_MAX - 8), TVS_ENOMEM);
    tvs__alloc_fail_after = 0;
    int rc = tvs_buf_reserve(&b, 1 << 20);
    tvs__alloc_fail_after = -1;
    cr_assert_eq(rc, TVS_ENOMEM);
    cr_assert_eq(b.len, 3);
    cr_assert_arr_eq(b.ptr, "abc", 3);
    tvs_buf_dispose(&b);
}

Test(base, dispose_of_an_empty_buf_is_harmless)
{
    tvs_buf b = TVS_BUF_INIT;
    tvs_buf_dispose(&b);
    tvs_buf_dispose(&b);
    cr_assert_null(b.ptr);
}

/* ---- byte order */

Test(base, le_loads_and_stores_are_inverse_and_little_endian)
{
    uint8_t p[8];
    tvs_store_le32(p, 0xdeadbeef);
    cr_assert_eq(p[0], 0xef);
    cr_assert_eq(p[3], 0xde);
    cr_assert_eq(tvs_load_le32(p), 0xdeadbeef);
    tvs_store_le64(p, 0x0102030405060708ull);
    cr_assert_eq(p[0], 8);
    cr_assert_eq(p[7], 1);
    cr_assert_eq(tvs_load_le64(p), 0x0102030405060708ull);
}

/* ---- reader */

Test(base, reader_reads_fields_in_order)
{
    static const uint8_t b[] = { 7, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 'x', 'y',
                                 'z' };
    tvs_reader r = { { b, sizeof b }, 0, "test" };
    uint8_t u8;
    uint32_t u32;
    uint64_t u64;
    tvs_span s;
    tt_ok(tvs_read_u8(&r, &u8));
    tt_ok(tvs_read_le32(&r, &u32));
    tt_ok(tvs_read_le64(&r, &u64));
    tt_ok(tvs_read_str(&r, &s, 16));
    tt_ok(tvs_read_end(&r));
    cr_assert_eq(u8, 7);
    cr_assert_eq(u32, 1);
    cr_assert_eq(u64, 2);
    cr_assert_eq(s.len, 3);
    cr_assert_arr_eq(s.ptr, "xyz", 3);
}

Test(base, reader_rejects_every_read_past_the_end_naming_the_thing_and_offset)
{
    static const uint8_t b[3] = { 1, 2, 3 };
    tvs_reader r = { { b, sizeof b }, 0, "widget" };
    uint32_t u32 = 0xffffffff;
    uint64_t u64;
    uint8_t u8;
    tvs_span s;
    tt_fails(tvs_read_le32(&r, &u32), TVS_ECORRUPT);
    tt_msg_has("widget");
    tt_msg_has("byte 0");
    cr_assert_eq(u32, 0xffffffff, "output must be untouched on failure");
    cr_assert_eq(r.off, 0, "a failed read must not advance");
    tt_fails(tvs_read_le64(&r, &u64), TVS_ECORRUPT);
    tt_fails(tvs_read_bytes(&r, &s, 4), TVS_ECORRUPT);
    tt_fails(tvs_read_bytes(&r, &s, SIZE_MAX), TVS_ECORRUPT);
    tt_ok(tvs_read_bytes(&r, &s, 3));
    tt_fails(tvs_read_u8(&r, &u8), TVS_ECORRUPT);
    tt_msg_has("byte 3");
}

Test(base, reader_rejects_a_string_longer_than_its_limit_or_the_input)
{
    uint8_t b[8] = { 4, 0, 0, 0, 'a', 'b', 'c', 'd' };
    tvs_span s;
    tvs_reader r = { { b, sizeof b }, 0, "name" };
    tt_fails(tvs_read_str(&r, &s, 3), TVS_ECORRUPT);
    tt_msg_has("exceeds 3");
    r.off = 0;
    tt_ok(tvs_read_str(&r, &s, 4));
    tvs_store_le32(b, 5);
    r.off = 0;
    tt_fails(tvs_read_str(&r, &s, 100), TVS_ECORRUPT);
    tt_msg_has("truncated");
    tvs_store_le32(b, 0xffffffff);
    r.off = 0;
    tt_fails(tvs_read_str(&r, &s, SIZE_MAX), TVS_ECORRUPT);
}

Test(base, reader_end_rejects_trailing_bytes)
{
    static const uint8_t b[5] = { 0 };
    tvs_reader r = { { b, sizeof b }, 0, NULL };
    uint8_t u8;
    tt_ok(tvs_read_u8(&r, &u8));
    tt_fails(tvs_read_end(&r), TVS_ECORRUPT);
    tt_msg_has("4 trailing bytes at byte 1");
    tt_msg_has("input");
}

Test(base, reader_over_an_empty_span_fails_cleanly)
{
    tvs_reader r = { { NULL, 0 }, 0, "empty" };
    uint8_t u8;
    tt_fails(tvs_read_u8(&r, &u8), TVS_ECORRUPT);
    tt_ok(tvs_read_end(&r));
}

/* ---- ids */

Test(base, id_hex_prints_32_lowercase_digits_and_parses_back)
{
    tvs_id id, back;
    char hex[TVS_ID_HEX + 1];
    for (int i = 0; i < TVS_ID_LEN; i++)
        id.b[i] = (uint8_t)(i * 17 + 0xa0);
    tvs_id_hex(hex, &id);
    cr_assert_eq(strlen(hex), 32);
    cr_assert_str_eq(hex, "a0b1c2d3e4f5061728394a5b6c7d8e9f");
    tt_ok(tvs_id_parse(&back, hex));
    cr_assert(tvs_id_eq(&id, &back));
}

Test(base, id_parse_accepts_upper_case)
{
    tvs_id a, b;
    tt_ok(tvs_id_parse(&a, "A0B1C2D3E4F5061728394A5B6C7D8E9F"));
    tt_ok(tvs_id_parse(&b, "a0b1c2d3e4f5061728394a5b6c7d8e9f"));
    cr_assert(tvs_id_eq(&a, &b));
}

Test(base, id_parse_rejects_wrong_lengths_and_non_hex)
{
    tvs_id id;
    tt_fails(tvs_id_parse(&id, ""), TVS_EINVAL);
    tt_fails(tvs_id_parse(&id, "a0b1"), TVS_EINVAL);
    tt_msg_has("32 hex digits");
    tt_fails(tvs_id_parse(&id, "a0b1c2d3e4f5061728394a5b6c7d8e9f0"), TVS_EINVAL);
    tt_fails(tvs_id_parse(&id, "a0b1c2d3e4f5061728394a5b6c7d8e9g"), TVS_EINVAL);
    tt_msg_has("not hexadecimal");
    tt_fails(tvs_id_parse(&id, "a0b1c2d3e4f5061728394a5b6c7d8e9 "), TVS_EINVAL);
    tt_fails(tvs_id_parse(&id, "-0b1c2d3e4f5061728394a5b6c7d8e9f"), TVS_EINVAL);
}

Test(base, id_of_is_xxh3_128_high_half_first)
{
    /* XXH3-128 of the empty input: high64 99aa06d3014798d8, low64 6001c324468d497f */
    tvs_id id;
    char hex[TVS_ID_HEX + 1];
    tvs_id_of(&id, "", 0);
    tvs_id_hex(hex, &id);
    cr_assert_str_eq(hex, "99aa06d3014798d86001c324468d497f");
}

Test(base, tells_the_zero_id_from_any_other)
{
    tvs_id z = { { 0 } }, nz = { { 0 } };
    nz.b[15] = 1;
    cr_assert(tvs_id_is_zero(&z));
    cr_assert_not(tvs_id_is_zero(&nz));
    cr_assert_not(tvs_id_eq(&z, &nz));
}

Test(base, streaming_hasher_equals_one_shot_hash_for_any_split)
{
    uint8_t data[5000];
    tt_fill_random(data, sizeof data, 99);
    tvs_hasher *h;
    tt_ok(tvs_hasher_new(&h));
    tvs_id whole, parts;
    tvs_id_of(&whole, data, sizeof data);
    static const size_t cuts[] = { 0, 1, 7, 64, 240, 241, 1024, 4999, 5000 };
    for (size_t c = 0; c < sizeof cuts / sizeof cuts[0]; c++) {
        tvs_hasher_reset(h);
        tvs_hasher_update(h, data, cuts[c]);
        tvs_hasher_update(h, data + cuts[c], sizeof data - cuts[c]);
        tvs_hasher_final(&parts, h);
        cr_assert(tvs_id_eq(&whole, &parts), "split at %zu", cuts[c]);
    }
    tvs_hasher_reset(h);
    tvs_hasher_final(&parts, h);
    tvs_id_of(&whole, "", 0);
    cr_assert(tvs_id_eq(&whole, &parts), "the hash of nothing");
    tvs_hasher_free(h);
    tvs_hasher_free(NULL);
}

Test(base, hasher_new_reports_enomem)
{
    tvs_hasher *h = (tvs_hasher *)1;
    tvs__alloc_fail_after = 0;
    int rc = tvs_hasher_new(&h);
    tvs__alloc_fail_after = -1;
    cr_assert_eq(rc, TVS_ENOMEM);
    cr_assert_null(h);
}

/* ---- allocation hooks and helpers */

Test(base, alloc_fail_after_fails_exactly_the_nth_allocation)
{
    tvs__alloc_fail_after = 2;
    void *a = tvs_malloc(8), *b = tvs_calloc(2, 8), *c = tvs_malloc(8);
    tvs__alloc_fail_after = -1;
    cr_assert_not_null(a);
    cr_assert_not_null(b);
    cr_assert_null(c);
    tvs_free(a);
    tvs_free(b);
    char *s = tvs_strdup("copy");
    cr_assert_str_eq(s, "copy");
    tvs_free(s);
}

Test(base, fmt_bytes_picks_a_binary_unit)
{
    char s[32];
    tvs_fmt_bytes(s, sizeof s, 0);
    cr_assert_str_eq(s, "0 B");
    tvs_fmt_bytes(s, sizeof s, 1023);
    cr_assert_str_eq(s, "1023 B");
    tvs_fmt_bytes(s, sizeof s, 1536);
    cr_assert_str_eq(s, "1.50 KiB");
    tvs_fmt_bytes(s, sizeof s, 3.0 * 1024 * 1024 * 1024);
    cr_assert_str_eq(s, "3.00 GiB");
    tvs_fmt_bytes(s, sizeof s, 5.0 * 1024 * 1024 * 1024 * 1024 * 1024);
    cr_assert_str_eq(s, "5120.00 TiB");
}
