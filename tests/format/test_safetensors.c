/*
 * format/safetensors.c: valid headers parse; every malformed input gets
 * TVS_ECORRUPT with a message that names the tensor or byte offset and the
 * rule it broke.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "format/safetensors.h"
#include "tests/support/support.h"

extern long tvs__alloc_fail_after;

/* A whole file in memory: u64 header length, @p json, @p data_len zero bytes. */
static uint8_t *make_file(const char *json, size_t data_len, size_t *len)
{
    size_t n = strlen(json);
    uint8_t *p = calloc(1, 8 + n + data_len + 1);
    cr_assert_not_null(p);
    tvs_store_le64(p, n);
    memcpy(p + 8, json, n);
    *len = 8 + n + data_len;
    return p;
}

/* Parse @p json as a file with @p data_len bytes of data; returns the code. */
static int parse(tvs_st_header *h, const char *json, size_t data_len)
{
    size_t len;
    uint8_t *f = make_file(json, data_len, &len);
    int rc = tvs_st_parse(h, (tvs_span){ f, len });
    free(f);
    if (rc) {
        cr_assert_eq(h->n, 0, "a failed parse leaves the header empty");
        cr_assert_null(h->tensors);
        cr_assert_null(h->meta);
    }
    return rc;
}

/* Expect ECORRUPT and a message holding every one of the given strings. */
static void expect_corrupt(const char *json, size_t data_len, const char *a, const char *b)
{
    tvs_st_header h;
    int rc = parse(&h, json, data_len);
    if (rc == 0)
        tvs_st_header_dispose(&h);
    cr_assert_eq(rc, TVS_ECORRUPT, "header %s: got %d (%s), expected ECORRUPT", json, rc,
                 tvs_errmsg());
    cr_assert(strstr(tvs_errmsg(), a), "message \"%s\" should mention \"%s\"", tvs_errmsg(), a);
    if (b)
        cr_assert(strstr(tvs_errmsg(), b), "message \"%s\" should mention \"%s\"",
                  tvs_errmsg(), b);
}

/* ---- valid files */


TestSuite(safetensors, .fini = tt_leak_check);

Test(safetensors, parses_a_hugging_face_style_header)
{
    tt_tensor t[] = {
        { "lm_head.weight", "BF16", 2, { 4, 8 } },
        { "model.norm.weight", "F32", 1, { 8 } },
        { "step", "I64", 0, { 0 } },
    };
    uint64_t data_len;
    char *json = tt_st_header(t, 3, "{\"format\":\"pt\"}", &data_len);
    cr_assert_eq(strlen(json) % 8, 0, "padded to a multiple of 8");
    cr_assert_eq(data_len, 64 + 32 + 8);
    tvs_st_header h;
    tt_ok(parse(&h, json, data_len));
    cr_assert_eq(h.n, 3);
    cr_assert_eq(h.header_len, strlen(json));
    cr_assert_eq(h.data_len, data_len);
    cr_assert_str_eq(h.tensors[0].name, "lm_head.weight");
    cr_assert_eq(h.tensors[0].name_len, 14);
    cr_assert_eq(h.tensors[0].dtype, TVS_DTYPE_BF16);
    cr_assert_eq(h.tensors[0].rank, 2);
    cr_assert_eq(h.tensors[0].shape[0], 4);
    cr_assert_eq(h.tensors[0].shape[1], 8);
    cr_assert_eq(h.tensors[0].n_elems, 32);
    cr_assert_eq(h.tensors[0].begin, 0);
    cr_assert_eq(h.tensors[0].end, 64);
    cr_assert_eq(h.tensors[1].dtype, TVS_DTYPE_F32);
    cr_assert_eq(h.tensors[1].begin, 64);
    cr_assert_eq(h.tensors[2].rank, 0, "a scalar has rank 0");
    cr_assert_eq(h.tensors[2].n_elems, 1, "a scalar has one element");
    cr_assert_eq(h.tensors[2].end - h.tensors[2].begin, 8);
    cr_assert(h.has_meta);
    cr_assert_eq(h.n_meta, 1);
    cr_assert_str_eq(h.meta[0], "format");
    cr_assert_str_eq(h.meta[1], "pt");
    cr_assert_eq(tvs_st_find(&h, "model.norm.weight"), 1);
    cr_assert_eq(tvs_st_find(&h, "missing"), -1);
    tvs_st_header_dispose(&h);
    cr_assert_eq(h.n, 0);
    cr_assert_null(h.tensors);
    free(json);
}

Test(safetensors, orders_tensors_by_data_offset_not_by_json_order)
{
    const char *json = "{\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[3,5]},"
                       "\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}}";
    tvs_st_header h;
    tt_ok(parse(&h, json, 5));
    cr_assert_str_eq(h.tensors[0].name, "a");
    cr_assert_str_eq(h.tensors[1].name, "b");
    cr_assert_eq(h.has_meta, 0);
    tvs_st_header_dispose(&h);
}

Test(safetensors, accepts_an_empty_header_and_padding)
{
    tvs_st_header h;
    tt_ok(parse(&h, "{}", 0));
    cr_assert_eq(h.n, 0);
    cr_assert_eq(h.data_len, 0);
    tvs_st_header_dispose(&h);
    tt_ok(parse(&h, "{}      ", 0));
    tvs_st_header_dispose(&h);
    tt_ok(parse(&h, "{\"__metadata__\":{}}", 0));
    cr_assert(h.has_meta);
    cr_assert_eq(h.n_meta, 0);
    tvs_st_header_dispose(&h);
}

Test(safetensors, accepts_zero_element_tensors_anywhere)
{
    const char *json = "{\"e1\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},"
                       "\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                       "\"e2\":{\"dtype\":\"BF16\",\"shape\":[3,0],\"data_offsets\":[8,8]}}";
    tvs_st_header h;
    tt_ok(parse(&h, json, 8));
    cr_assert_eq(h.n, 3);
    cr_assert_eq(h.tensors[2].n_elems, 0);
    tvs_st_header_dispose(&h);
}

Test(safetensors, accepts_every_dtype_of_the_spec)
{
    static const char *names[] = { "BOOL", "U8", "I8", "I16", "U16", "I32", "U32", "I64",
                                   "U64", "F16", "BF16", "F32", "F64", "F8_E5M2",
                                   "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F4",
                                   "F6_E2M3", "F6_E3M2", "C64" };
    size_t n = sizeof names / sizeof names[0];
    tt_tensor t[32];
    char tname[32][16];
    for (size_t i = 0; i < n; i++) {
        snprintf(tname[i], sizeof tname[i], "t%02zu", i);
        t[i] = (tt_tensor){ tname[i], names[i], 2, { 4, 6 } };
    }
    uint64_t len;
    char *json = tt_st_header(t, n, NULL, &len);
    tvs_st_header h;
    tt_ok(parse(&h, json, len));
    cr_assert_eq(h.n, n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(tvs_dtype_name(h.tensors[i].dtype), names[i]);
        cr_assert_eq(h.tensors[i].end - h.tensors[i].begin, 24 * tvs_dtype_bits(h.tensors[i].dtype) / 8);
    }
    tvs_st_header_dispose(&h);
    free(json);
}

Test(safetensors, header_read_back_from_the_store_takes_its_length_from_the_tensors)
{
    const char *json = "{\"w\":{\"dtype\":\"F16\",\"shape\":[5],\"data_offsets\":[0,10]}}";
    tvs_st_header h;
    tt_ok(tvs_st_header_parse(&h, (tvs_span){ (const uint8_t *)json, strlen(json) },
                              UINT64_MAX));
    cr_assert_eq(h.data_len, 10);
    tvs_st_header_dispose(&h);
    tt_ok(tvs_st_header_parse(&h, (tvs_span){ (const uint8_t *)"{}", 2 }, UINT64_MAX));
    cr_assert_eq(h.data_len, 0);
    tvs_st_header_dispose(&h);
}

Test(safetensors, header_len_reads_the_prefix)
{
    uint8_t pre[8];
    uint64_t n = 0;
    tvs_store_le64(pre, 16);
    tt_ok(tvs_st_header_len(&n, (tvs_span){ pre, 8 }, 24));
    cr_assert_eq(n, 16);
}

/* ---- the length prefix */

Test(safetensors, rejects_a_file_shorter_than_8_bytes)
{
    uint8_t b[8] = { 2, 0, 0, 0, 0, 0, 0, 0 };
    for (size_t len = 0; len < 8; len++) {
        tvs_st_header h;
        tt_fails(tvs_st_parse(&h, (tvs_span){ b, len }), TVS_ECORRUPT);
        tt_msg_has("8-byte header length");
        tt_msg_has("truncated");
    }
}

Test(safetensors, rejects_a_header_longer_than_the_file)
{
    uint8_t b[58] = { 0 };
    tvs_store_le64(b, 51);
    b[8] = '{';
    tvs_st_header h;
    tt_fails(tvs_st_parse(&h, (tvs_span){ b, sizeof b }), TVS_ECORRUPT);
    tt_msg_has("header length 51 at byte 0 runs past the end");
    tvs_store_le64(b, UINT64_MAX);
    tt_fails(tvs_st_parse(&h, (tvs_span){ b, sizeof b }), TVS_ECORRUPT);
}

Test(safetensors, rejects_a_header_over_100_mb)
{
    uint8_t b[64] = { 0 };
    uint64_t n;
    tvs_store_le64(b, 100000001);
    tvs_st_header h;
    tt_fails(tvs_st_parse(&h, (tvs_span){ b, sizeof b }), TVS_ECORRUPT);
    tt_msg_has("over the 100000000-byte limit");
    tt_msg_has("at byte 0");
    /* exactly 100 MB is allowed by the limit; this file is just too short */
    tvs_store_le64(b, 100000000);
    tt_fails(tvs_st_header_len(&n, (tvs_span){ b, 8 }, 64), TVS_ECORRUPT);
    tt_msg_has("runs past the end");
    tt_ok(tvs_st_header_len(&n, (tvs_span){ b, 8 }, 100000008));
}

Test(safetensors, rejects_a_header_too_short_for_an_object)
{
    uint8_t b[9] = { 1, 0, 0, 0, 0, 0, 0, 0, '{' };
    tvs_st_header h;
    tt_fails(tvs_st_parse(&h, (tvs_span){ b, sizeof b }), TVS_ECORRUPT);
    tt_msg_has("too short");
    tvs_store_le64(b, 0);
    tt_fails(tvs_st_parse(&h, (tvs_span){ b, 8 }), TVS_ECORRUPT);
}

/* ---- the JSON */

Test(safetensors, rejects_a_header_that_is_not_json)
{
    expect_corrupt("{not json}", 0, "not valid JSON", "at byte");
    expect_corrupt("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}", 1,
                   "not valid JSON", NULL);
    expect_corrupt("{} trailing", 0, "not valid JSON", NULL);
    expect_corrupt("\x01\x02\x03", 0, "not", "JSON");
}

Test(safetensors, rejects_json_that_is_not_an_object)
{
    expect_corrupt("[1,2,3]", 0, "object", NULL);
    expect_corrupt("\"a string\"", 0, "object", NULL);
    expect_corrupt("12345678", 0, "object", NULL);
    expect_corrupt(" {}", 0, "object", NULL);
}

Test(safetensors, rejects_an_entry_that_is_not_an_object)
{
    expect_corrupt("{\"w\":5}", 0, "tensor \"w\"", "not a JSON object");
}

Test(safetensors, rejects_an_unknown_dtype)
{
    expect_corrupt("{\"w\":{\"dtype\":\"F128\",\"shape\":[1],\"data_offsets\":[0,16]}}", 16,
                   "tensor \"w\"", "unknown dtype \"F128\"");
    expect_corrupt("{\"w\":{\"dtype\":\"bf16\",\"shape\":[1],\"data_offsets\":[0,2]}}", 2,
                   "tensor \"w\"", "unknown dtype");
}

Test(safetensors, rejects_a_missing_or_non_string_dtype)
{
    expect_corrupt("{\"w\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "tensor \"w\"",
                   "\"dtype\"");
    expect_corrupt("{\"w\":{\"dtype\":3,\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
                   "tensor \"w\"", "\"dtype\"");
}

Test(safetensors, rejects_a_shape_offset_mismatch)
{
    expect_corrupt("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20,
                   "tensor \"w\"", "shape/offset mismatch");
    tvs_st_header h;
    cr_assert_eq(parse(&h, "{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],"
                           "\"data_offsets\":[0,28]}}", 28), TVS_ECORRUPT);
    tt_msg_has("need 24 bytes");
}

Test(safetensors, rejects_sub_byte_tensors_that_do_not_fill_whole_bytes)
{
    expect_corrupt("{\"w\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2,
                   "tensor \"w\"", "whole bytes");
    expect_corrupt("{\"w\":{\"dtype\":\"F6_E2M3\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
                   "tensor \"w\"", "whole bytes");
}

Test(safetensors, rejects_overlapping_data_offsets)
{
    expect_corrupt("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                   "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}", 6,
                   "tensor \"b\"", "overlap tensor \"a\"");
    /* the same range twice */
    expect_corrupt("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                   "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4,
                   "overlap", NULL);
    /* an empty tensor inside another one */
    expect_corrupt("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                   "\"e\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,2]}}", 4,
                   "tensor \"e\"", "overlap");
}

Test(safetensors, rejects_gapped_data_offsets)
{
    expect_corrupt("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                   "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[6,10]}}", 10,
                   "tensor \"b\"", "gap of 2 bytes after tensor \"a\"");
    expect_corrupt("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[3,7]}}", 7,
                   "tensor \"a\"", "gap of 3 bytes after the header");
}

Test(safetensors, rejects_trailing_bytes_after_the_last_tensor)
{
    expect_corrupt("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 9,
                   "5 trailing bytes after the last tensor", NULL);
    expect_corrupt("{}", 1, "1 trailing bytes", NULL);
}

Test(safetensors, rejects_tensor_data_past_the_end_of_the_file)
{
    expect_corrupt("{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}", 5,
                   "tensor \"a\"", "past the end of the data");
}

Test(safetensors, rejects_duplicate_tensor_names)
{
    expect_corrupt("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                   "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}", 2,
                   "duplicate tensor name", "at byte");
    expect_corrupt("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "duplicate", NULL);
}

Test(safetensors, rejects_metadata_that_is_not_a_string_map)
{
    expect_corrupt("{\"__metadata__\":{\"format\":1}}", 0, "__metadata__",
                   "\"format\" is not a string");
    expect_corrupt("{\"__metadata__\":{\"a\":\"b\",\"c\":{\"d\":\"e\"}}}", 0, "__metadata__",
                   "\"c\"");
    expect_corrupt("{\"__metadata__\":{\"a\":null}}", 0, "__metadata__", NULL);
    expect_corrupt("{\"__metadata__\":\"pt\"}", 0, "__metadata__", "not an object");
    expect_corrupt("{\"__metadata__\":[\"a\",\"b\"]}", 0, "__metadata__", "not an object");
}

Test(safetensors, rejects_negative_or_non_integer_shapes)
{
    static const char *shapes[] = { "[-1]", "[2,-3]", "[2.5]", "[2.0]", "[\"2\"]", "[true]",
                                    "[null]", "[[2]]", "[1e3]" };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        char json[256];
        snprintf(json, sizeof json,
                 "{\"w\":{\"dtype\":\"U8\",\"shape\":%s,\"data_offsets\":[0,2]}}", shapes[i]);
        expect_corrupt(json, 2, "tensor \"w\"", "not a non-negative integer");
    }
}

Test(safetensors, rejects_a_missing_or_non_array_shape)
{
    expect_corrupt("{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1, "tensor \"w\"",
                   "\"shape\"");
    expect_corrupt("{\"w\":{\"dtype\":\"U8\",\"shape\":4,\"data_offsets\":[0,4]}}", 4,
                   "tensor \"w\"", "\"shape\"");
}

Test(safetensors, rejects_a_rank_over_64)
{
    char json[1024], *p = json;
    p += sprintf(p, "{\"w\":{\"dtype\":\"U8\",\"shape\":[");
    for (int i = 0; i < 65; i++)
        p += sprintf(p, "%s1", i ? "," : "");
    sprintf(p, "],\"data_offsets\":[0,1]}}");
    expect_corrupt(json, 1, "tensor \"w\"", "rank 65");
}

Test(safetensors, rejects_an_element_count_that_overflows)
{
    expect_corrupt("{\"w\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,2],"
                   "\"data_offsets\":[0,0]}}", 0, "tensor \"w\"", "overflow");
    expect_corrupt("{\"w\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],"
                   "\"data_offsets\":[0,0]}}", 0, "tensor \"w\"", "overflow");
}

Test(safetensors, rejects_bad_data_offsets)
{
    static const char *offs[] = { "[0]", "[0,1,2]", "[-1,1]", "[0,1.5]", "\"0,1\"", "[\"0\",1]",
                                  "null" };
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        char json[256];
        snprintf(json, sizeof json,
                 "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":%s}}", offs[i]);
        expect_corrupt(json, 1, "tensor \"w\"", "data_offsets");
    }
    expect_corrupt("{\"w\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,2]}}", 4,
                   "tensor \"w\"", "end before they begin");
}

Test(safetensors, rejects_a_tensor_name_with_a_nul_byte)
{
    expect_corrupt("{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
                   "NUL", NULL);
}

Test(safetensors, survives_an_allocation_failure_at_every_step)
{
    const char *json = "{\"__metadata__\":{\"format\":\"pt\",\"x\":\"y\"},"
                       "\"a\":{\"dtype\":\"U8\",\"shape\":[2,2],\"data_offsets\":[0,4]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}";
    size_t len;
    uint8_t *f = make_file(json, 8, &len);
    int ok = 0;
    for (long k = 0; k < 100 && !ok; k++) {
        tvs_st_header h;
        tvs__alloc_fail_after = k;
        int rc = tvs_st_parse(&h, (tvs_span){ f, len });
        tvs__alloc_fail_after = -1;
        if (rc == 0) {
            cr_assert_eq(h.n, 2);
            tvs_st_header_dispose(&h);
            ok = 1;
        } else {
            cr_assert_eq(rc, TVS_ENOMEM, "failing allocation %ld gave %d: %s", k, rc,
                         tvs_errmsg());
            cr_assert_eq(h.n, 0);
        }
    }
    cr_assert(ok, "parse never succeeded");
    free(f);
}
