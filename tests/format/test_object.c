/*
 * format/object.c: tensor and model objects round-trip, their byte layout
 * is the one SPEC.md describes, and the decoders accept only the canonical
 * form (sorted unique names, exact counts, no trailing bytes, known type,
 * version, kind and flags) and fail cleanly on every truncation.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>

#include "format/object.h"
#include "tests/support/support.h"

extern long tvs__alloc_fail_after;

/* ---- fixtures */

static uint8_t chunk_ids[5 * TVS_ID_LEN];

static tvs_tensor_obj sample_tensor(void)
{
    tvs_tensor_obj t;
    memset(&t, 0, sizeof t);
    for (size_t i = 0; i < sizeof chunk_ids; i++)
        chunk_ids[i] = (uint8_t)(i * 7 + 1);
    t.dtype = TVS_DTYPE_BF16;
    t.encoding = TVS_ENC_CHUNKED;
    t.rank = 2;
    t.shape[0] = 300;
    t.shape[1] = 7;
    t.nbytes = 300 * 7 * 2;
    for (int i = 0; i < TVS_ID_LEN; i++)
        t.checksum.b[i] = (uint8_t)(0xc0 + i);
    t.chunk_size = 1000;
    t.n_chunks = 5;
    t.chunk_ids = chunk_ids;
    return t;
}

static tvs_buf encode_tensor(const tvs_tensor_obj *t)
{
    tvs_buf b = TVS_BUF_INIT;
    tt_ok(tvs_tensor_encode(&b, t));
    return b;
}

static void assert_tensor_eq(const tvs_tensor_obj *a, const tvs_tensor_obj *b)
{
    cr_assert_eq(a->dtype, b->dtype);
    cr_assert_eq(a->encoding, b->encoding);
    cr_assert_eq(a->rank, b->rank);
    for (uint32_t i = 0; i < a->rank; i++)
        cr_assert_eq(a->shape[i], b->shape[i]);
    cr_assert_eq(a->nbytes, b->nbytes);
    cr_assert(tvs_id_eq(&a->checksum, &b->checksum));
    cr_assert_eq(a->chunk_size, b->chunk_size);
    cr_assert_eq(a->n_chunks, b->n_chunks);
    cr_assert(a->n_chunks == 0 ||
              memcmp(a->chunk_ids, b->chunk_ids, (size_t)a->n_chunks * TVS_ID_LEN) == 0);
}

static tvs_span span_of(const char *s) { return (tvs_span){ (const uint8_t *)s, strlen(s) }; }

static tvs_id id_n(int n)
{
    tvs_id id;
    for (int i = 0; i < TVS_ID_LEN; i++)
        id.b[i] = (uint8_t)(n * 31 + i);
    return id;
}

/* A model with two parents, a safetensors file of three tensors and two blobs. */
static tvs_model_entry entries[3];
static tvs_model_file files[3];
static tvs_id parents[2];

static tvs_model_obj sample_model(void)
{
    tvs_model_obj m;
    memset(&m, 0, sizeof m);
    entries[0] = (tvs_model_entry){ span_of("lm_head.weight"), id_n(1) };
    entries[1] = (tvs_model_entry){ span_of("model.embed_tokens.weight"), id_n(2) };
    entries[2] = (tvs_model_entry){ span_of("model.norm.weight"), id_n(3) };
    files[0] = (tvs_model_file){ .name = span_of("config.json"), .kind = TVS_FILE_BLOB,
                                 .blob = id_n(4) };
    files[1] = (tvs_model_file){ .name = span_of("model.safetensors"),
                                 .kind = TVS_FILE_SAFETENSORS,
                                 .header = span_of("{\"__metadata__\":{\"format\":\"pt\"}}   "),
                                 .tensors = entries, .n_tensors = 3 };
    files[2] = (tvs_model_file){ .name = span_of("sub/notes.txt"), .kind = TVS_FILE_BLOB,
                                 .blob = id_n(5) };
    parents[0] = id_n(6);
    parents[1] = id_n(7);
    m.kind = TVS_MODEL_FULL;
    m.flags = 0;
    m.parents = parents;
    m.n_parents = 2;
    m.time = 1764000000;
    m.author = span_of("ada");
    m.message = span_of("import /models/x");
    m.files = files;
    m.n_files = 3;
    return m;
}

static int span_eq(tvs_span a, tvs_span b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static void assert_model_eq(const tvs_model_obj *a, const tvs_model_obj *b)
{
    cr_assert_eq(a->kind, b->kind);
    cr_assert_eq(a->flags, b->flags);
    cr_assert(tvs_id_eq(&a->base, &b->base));
    cr_assert_eq(a->n_parents, b->n_parents);
    for (size_t i = 0; i < a->n_parents; i++)
        cr_assert(tvs_id_eq(&a->parents[i], &b->parents[i]));
    cr_assert_eq(a->time, b->time);
    cr_assert(span_eq(a->author, b->author));
    cr_assert(span_eq(a->message, b->message));
    cr_assert_eq(a->n_files, b->n_files);
    for (size_t i = 0; i < a->n_files; i++) {
        const tvs_model_file *x = &a->files[i], *y = &b->files[i];
        cr_assert(span_eq(x->name, y->name));
        cr_assert_eq(x->kind, y->kind);
        if (x->kind == TVS_FILE_BLOB) {
            cr_assert(tvs_id_eq(&x->blob, &y->blob));
            continue;
        }
        cr_assert(span_eq(x->header, y->header));
        cr_assert_eq(x->n_tensors, y->n_tensors);
        for (size_t j = 0; j < x->n_tensors; j++) {
            cr_assert(span_eq(x->tensors[j].name, y->tensors[j].name));
            cr_assert(tvs_id_eq(&x->tensors[j].id, &y->tensors[j].id));
        }
    }
}

static tvs_buf encode_model(const tvs_model_obj *m)
{
    tvs_buf b = TVS_BUF_INIT;
    tt_ok(tvs_model_encode(&b, m));
    return b;
}

/* decode, compare, encode again: the same bytes */
static void model_round_trip(const tvs_model_obj *m)
{
    tvs_buf b = encode_model(m);
    tvs_model_obj d;
    tt_ok(tvs_model_decode(&d, (tvs_span){ b.ptr, b.len }));
    assert_model_eq(m, &d);
    tvs_buf again = encode_model(&d);
    cr_assert_eq(again.len, b.len);
    cr_assert_arr_eq(again.ptr, b.ptr, b.len);
    tvs_model_dispose(&d);
    tvs_buf_dispose(&again);
    tvs_buf_dispose(&b);
}

static int decode_model_bytes(const uint8_t *p, size_t n)
{
    tvs_model_obj d;
    int rc = tvs_model_decode(&d, (tvs_span){ p, n });
    if (rc == 0)
        tvs_model_dispose(&d);
    else
        cr_assert(d.files == NULL && d.parents == NULL && d.n_files == 0,
                  "a failed decode leaves the model empty");
    return rc;
}

static int decode_tensor_bytes(const uint8_t *p, size_t n)
{
    tvs_tensor_obj t;
    return tvs_tensor_decode(&t, (tvs_span){ p, n });
}

typedef struct {
    int chunks, tensors, models;
} kids_t;

static int count_types(const tvs_id *id, int type, void *p)
{
    kids_t *k = p;
    (void)id;
    k->chunks += type == TVS_OBJ_CHUNK;
    k->tensors += type == TVS_OBJ_TENSOR;
    k->models += type == TVS_OBJ_MODEL;
    return 0;
}

/* ---- tensors */


TestSuite(object, .fini = tt_leak_check);

Test(object, tensor_round_trips)
{
    tvs_tensor_obj t = sample_tensor(), d;
    tvs_buf b = encode_tensor(&t);
    tt_ok(tvs_tensor_decode(&d, (tvs_span){ b.ptr, b.len }));
    assert_tensor_eq(&t, &d);
    cr_assert_eq(d.chunk_ids, b.ptr + b.len - 5 * TVS_ID_LEN, "chunk ids borrow the bytes");
    tvs_buf again = encode_tensor(&d);
    cr_assert_eq(again.len, b.len);
    cr_assert_arr_eq(again.ptr, b.ptr, b.len);
    cr_assert_eq(tvs_object_type((tvs_span){ b.ptr, b.len }), TVS_OBJ_TENSOR);
    tvs_buf_dispose(&b);
    tvs_buf_dispose(&again);
}

Test(object, tensor_layout_is_the_one_in_the_spec)
{
    tvs_tensor_obj t = sample_tensor();
    tvs_buf b = encode_tensor(&t);
    const uint8_t *p = b.ptr;
    cr_assert_eq(b.len, 6 + 2 * 8 + 8 + 16 + 4 + 4 + 5 * 16);
    cr_assert_eq(p[0], 2, "type");
    cr_assert_eq(p[1], 1, "version");
    cr_assert_eq(p[2], 11, "dtype BF16");
    cr_assert_eq(p[3], 0, "encoding chunked");
    cr_assert_eq(p[4], 2, "rank");
    cr_assert_eq(p[5], 0, "flags");
    cr_assert_eq(tvs_load_le64(p + 6), 300);
    cr_assert_eq(tvs_load_le64(p + 14), 7);
    cr_assert_eq(tvs_load_le64(p + 22), 4200, "nbytes");
    cr_assert_arr_eq(p + 30, t.checksum.b, 16);
    cr_assert_eq(tvs_load_le32(p + 46), 1000, "chunk size");
    cr_assert_eq(tvs_load_le32(p + 50), 5, "chunk count");
    cr_assert_arr_eq(p + 54, chunk_ids, 5 * 16);
    tvs_buf_dispose(&b);
}

Test(object, tensor_golden_id_never_changes)
{
    tvs_tensor_obj t = sample_tensor();
    tvs_buf b = encode_tensor(&t);
    tvs_id id;
    char hex[TVS_ID_HEX + 1];
    tvs_id_of(&id, b.ptr, b.len);
    tvs_id_hex(hex, &id);
    char *path = tt_fmt("%s/tests/data/golden/tensor_object.id", TVS_SOURCE_DIR);
    char *want = (char *)tt_read_file(path, NULL);
    cr_assert_not_null(want, "cannot read %s", path);
    want[strcspn(want, "\r\n ")] = 0;
    cr_assert_str_eq(hex, want, "the id of the golden tensor object changed to %s (expected %s)",
                     hex, want);
    free(want);
    free(path);
    tvs_buf_dispose(&b);
}

Test(object, tensor_edge_shapes_round_trip)
{
    tvs_tensor_obj t = sample_tensor(), d;
    /* a scalar */
    t.rank = 0;
    t.nbytes = 2;
    t.chunk_size = 1u << 20;
    t.n_chunks = 1;
    tvs_buf b = encode_tensor(&t);
    tt_ok(tvs_tensor_decode(&d, (tvs_span){ b.ptr, b.len }));
    assert_tensor_eq(&t, &d);
    tvs_buf_dispose(&b);
    /* no bytes, no chunks */
    t.rank = 1;
    t.shape[0] = 0;
    t.nbytes = 0;
    t.n_chunks = 0;
    b = encode_tensor(&t);
    tt_ok(tvs_tensor_decode(&d, (tvs_span){ b.ptr, b.len }));
    assert_tensor_eq(&t, &d);
    tvs_buf_dispose(&b);
    /* rank 64 of ones, F4 with whole bytes */
    t.rank = TVS_ST_MAX_RANK;
    for (int i = 0; i < TVS_ST_MAX_RANK; i++)
        t.shape[i] = 1;
    t.shape[0] = 6;
    t.dtype = TVS_DTYPE_F4;
    t.nbytes = 3;
    t.n_chunks = 1;
    b = encode_tensor(&t);
    tt_ok(tvs_tensor_decode(&d, (tvs_span){ b.ptr, b.len }));
    assert_tensor_eq(&t, &d);
    tvs_buf_dispose(&b);
}

Test(object, chunk_lengths_cover_the_tensor)
{
    tvs_tensor_obj t = sample_tensor();
    cr_assert_eq(tvs_chunks_for(4200, 1000), 5);
    cr_assert_eq(tvs_chunks_for(4000, 1000), 4);
    cr_assert_eq(tvs_chunks_for(0, 1000), 0);
    cr_assert_eq(tvs_chunks_for(1, 1u << 20), 1);
    uint64_t sum = 0;
    for (uint32_t i = 0; i < t.n_chunks; i++)
        sum += tvs_tensor_chunk_len(&t, i);
    cr_assert_eq(sum, t.nbytes);
    cr_assert_eq(tvs_tensor_chunk_len(&t, 0), 1000);
    cr_assert_eq(tvs_tensor_chunk_len(&t, 4), 200, "the last chunk is short");
    tvs_id id;
    tvs_tensor_chunk_id(&id, &t, 2);
    cr_assert_arr_eq(id.b, chunk_ids + 32, 16);
}

Test(object, tensor_encode_refuses_an_inconsistent_tensor)
{
    tvs_tensor_obj t = sample_tensor();
    tvs_buf b = TVS_BUF_INIT;
    t.n_chunks = 4;
    tt_fails(tvs_tensor_encode(&b, &t), TVS_EINVAL);
    t = sample_tensor();
    t.rank = TVS_ST_MAX_RANK + 1;
    tt_fails(tvs_tensor_encode(&b, &t), TVS_EINVAL);
    tvs_buf_dispose(&b);
}

static tvs_tensor_obj sample_delta(void)
{
    tvs_tensor_obj t = sample_tensor();
    t.encoding = TVS_ENC_DELTA;
    t.base = id_n(42);
    t.transform = 2;   /* ORD16: width 2 divides 4200 bytes and chunks of 1000 */
    return t;
}

Test(object, a_delta_tensor_round_trips_with_its_base_and_transform)
{
    tvs_tensor_obj t = sample_delta(), d;
    tvs_buf b = encode_tensor(&t);
    cr_assert_eq(b.len, 6 + 2 * 8 + 8 + 16 + 4 + 4 + 5 * 16 + 16 + 1, "base and transform last");
    cr_assert_eq(b.ptr[3], TVS_ENC_DELTA);
    cr_assert_arr_eq(b.ptr + b.len - 17, t.base.b, 16);
    cr_assert_eq(b.ptr[b.len - 1], 2);
    tt_ok(tvs_tensor_decode(&d, (tvs_span){ b.ptr, b.len }));
    assert_tensor_eq(&t, &d);
    cr_assert(tvs_id_eq(&d.base, &t.base));
    cr_assert_eq(d.transform, 2);
    tvs_buf again = encode_tensor(&d);
    cr_assert_eq(again.len, b.len);
    cr_assert_arr_eq(again.ptr, b.ptr, b.len);
    tvs_buf_dispose(&again);
    for (size_t n = 0; n < b.len; n++)
        cr_assert_eq(decode_tensor_bytes(b.ptr, n), TVS_ECORRUPT, "cut to %zu bytes", n);
    tt_ok(tvs_buf_put_u8(&b, 0));
    tt_fails(decode_tensor_bytes(b.ptr, b.len), TVS_ECORRUPT);
    tvs_buf_dispose(&b);
}

Test(object, a_delta_tensor_needs_a_known_transform_that_fits_its_sizes)
{
    tvs_tensor_obj t = sample_delta();
    tvs_buf b = encode_tensor(&t);
    b.ptr[b.len - 1] = 0;
    tt_fails(decode_tensor_bytes(b.ptr, b.len), TVS_ECORRUPT);
    tt_msg_has("transform 0");
    b.ptr[b.len - 1] = 0x7f;
    tt_fails(decode_tensor_bytes(b.ptr, b.len), TVS_ECORRUPT);
    /* ORD32 (width 4) divides both 4200 and 1000: accepted */
    b.ptr[b.len - 1] = 3;
    tt_ok(decode_tensor_bytes(b.ptr, b.len));
    tvs_buf_dispose(&b);
    /* a chunk size that is not a multiple of the width */
    t = sample_delta();
    t.chunk_size = 1001;
    t.n_chunks = 5;
    b = encode_tensor(&t);
    tt_fails(decode_tensor_bytes(b.ptr, b.len), TVS_ECORRUPT);
    tt_msg_has("does not fit");
    tvs_buf_dispose(&b);
    /* a chunked tensor carries no base */
    t = sample_tensor();
    b = encode_tensor(&t);
    b.ptr[3] = TVS_ENC_DELTA;
    tt_fails(decode_tensor_bytes(b.ptr, b.len), TVS_ECORRUPT);
    tvs_buf_dispose(&b);
}

Test(object, a_delta_tensors_children_include_its_base)
{
    tvs_tensor_obj t = sample_delta();
    tvs_buf b = encode_tensor(&t);
    kids_t k = { 0 };
    tt_ok(tvs_object_children((tvs_span){ b.ptr, b.len }, count_types, &k));
    cr_assert_eq(k.chunks, 5);
    cr_assert_eq(k.tensors, 1, "the base tensor");
    tvs_buf_dispose(&b);
}

/* A lossy tensor: the base's id last, no transform; BF16/F16/F32 only. */
Test(object, a_lossy_tensor_round_trips_and_names_its_base)
{
    tvs_tensor_obj t = sample_tensor(), d;
    t.dtype = TVS_DTYPE_BF16;
    t.encoding = TVS_ENC_LOSSY;
    t.base = id_n(7);
    tvs_buf b = encode_tensor(&t);
    cr_assert_eq(b.ptr[3], TVS_ENC_LOSSY);
    cr_assert_arr_eq(b.ptr + b.len - 16, t.base.b, 16, "the base id last");
    tt_ok(tvs_tensor_decode(&d, (tvs_span){ b.ptr, b.len }));
    assert_tensor_eq(&t, &d);
    cr_assert(tvs_id_eq(&d.base, &t.base));
    kids_t k = { 0 };
    tt_ok(tvs_object_children((tvs_span){ b.ptr, b.len }, count_types, &k));
    cr_assert_eq(k.tensors, 1, "the base tensor");
    for (size_t n = 0; n < b.len; n++)
        cr_assert_eq(decode_tensor_bytes(b.ptr, n), TVS_ECORRUPT, "cut to %zu bytes", n);
    b.ptr[2] = TVS_DTYPE_I16;
    tt_fails(decode_tensor_bytes(b.ptr, b.len), TVS_ECORRUPT);
    tt_msg_has("lossy tensor of dtype I16");
    tvs_buf_dispose(&b);
}

/* Mutate byte @p at of the sample tensor's encoding; expect ECORRUPT. */
static void tensor_rejects(size_t at, uint8_t value, const char *needle)
{
    tvs_tensor_obj t = sample_tensor();
    tvs_buf b = encode_tensor(&t);
    b.ptr[at] = value;
    int rc = decode_tensor_bytes(b.ptr, b.len);
    cr_assert_eq(rc, TVS_ECORRUPT, "byte %zu = %u accepted (%d)", at, value, rc);
    if (needle)
        tt_msg_has(needle);
    tvs_buf_dispose(&b);
}

Test(object, tensor_decode_rejects_a_wrong_type_version_dtype_encoding_rank_or_flags)
{
    tensor_rejects(0, TVS_OBJ_CHUNK, "not a tensor");
    tensor_rejects(0, TVS_OBJ_MODEL, "not a tensor");
    tensor_rejects(0, 0, "not a tensor");
    tensor_rejects(1, 0, "version 0");
    tensor_rejects(1, 2, "version 2");
    tensor_rejects(2, 0, "unknown dtype");
    tensor_rejects(2, TVS_DTYPE_MAX_, "unknown dtype");
    tensor_rejects(3, 0x7f, "unknown encoding");
    tensor_rejects(4, TVS_ST_MAX_RANK + 1, "rank");
    tensor_rejects(5, 1, "flags");
}

Test(object, tensor_decode_rejects_bytes_that_do_not_match_the_shape)
{
    tvs_tensor_obj t = sample_tensor();
    tvs_buf b = encode_tensor(&t);
    tvs_store_le64(b.ptr + 22, 4201);
    tt_fails(decode_tensor_bytes(b.ptr, b.len), TVS_ECORRUPT);
    tt_msg_has("do not match its shape");
    tvs_buf_dispose(&b);
    /* the same shape read as another dtype */
    tensor_rejects(2, TVS_DTYPE_F32, "do not match");
    /* a sub-byte type whose elements do not fill whole bytes */
    t = sample_tensor();
    t.dtype = TVS_DTYPE_F4;
    t.rank = 1;
    t.shape[0] = 3;
    t.nbytes = 2;
    t.n_chunks = 1;
    b = encode_tensor(&t);
    tt_fails(decode_tensor_bytes(b.ptr, b.len), TVS_ECORRUPT);
    tvs_buf_dispose(&b);
    /* a shape whose element count overflows */
    t = sample_tensor();
    t.shape[0] = UINT64_MAX / 2;
    t.shape[1] = 4;
    b = encode_tensor(&t);
    tt_fails(decode_tensor_bytes(b.ptr, b.len), TVS_ECORRUPT);
    tt_msg_has("overflow");
    tvs_buf_dispose(&b);
}

Test(object, tensor_decode_rejects_a_wrong_chunk_size_or_count)
{
    tvs_tensor_obj t = sample_tensor();
    tvs_buf b = encode_tensor(&t);
    tvs_store_le32(b.ptr + 46, 0);
    tt_fails(decode_tensor_bytes(b.ptr, b.len), TVS_ECORRUPT);
    tt_msg_has("chunk size 0");
    tvs_store_le32(b.ptr + 46, (64u << 20) + 1);
    tt_fails(decode_tensor_bytes(b.ptr, b.len), TVS_ECORRUPT);
    tvs_store_le32(b.ptr + 46, 1000);
    tvs_store_le32(b.ptr + 50, 4);
    tt_fails(decode_tensor_bytes(b.ptr, b.len), TVS_ECORRUPT);
    tt_msg_has("4 chunks cannot hold 4200 bytes");
    tvs_store_le32(b.ptr + 50, 6);
    tt_fails(decode_tensor_bytes(b.ptr, b.len), TVS_ECORRUPT);
    tvs_store_le32(b.ptr + 50, UINT32_MAX);
    tt_fails(decode_tensor_bytes(b.ptr, b.len), TVS_ECORRUPT);
    tvs_buf_dispose(&b);
}

Test(object, tensor_decode_rejects_trailing_bytes)
{
    tvs_tensor_obj t = sample_tensor();
    tvs_buf b = encode_tensor(&t);
    tt_ok(tvs_buf_put_u8(&b, 0));
    tt_fails(decode_tensor_bytes(b.ptr, b.len), TVS_ECORRUPT);
    tt_msg_has("trailing");
    tvs_buf_dispose(&b);
}

Test(object, tensor_decode_rejects_truncation_at_every_length)
{
    tvs_tensor_obj t = sample_tensor();
    tvs_buf b = encode_tensor(&t);
    for (size_t n = 0; n < b.len; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, b.ptr, n);
        int rc = decode_tensor_bytes(copy, n);
        cr_assert_eq(rc, TVS_ECORRUPT, "tensor cut to %zu of %zu bytes: %d", n, b.len, rc);
        free(copy);
    }
    tvs_buf_dispose(&b);
}

typedef struct {
    int n, bad_type;
    uint8_t ids[5 * TVS_ID_LEN];
} chunk_kids;

static int collect_chunk(const tvs_id *id, int type, void *p)
{
    chunk_kids *s = p;
    if (type != TVS_OBJ_CHUNK)
        s->bad_type++;
    if (s->n < 5)
        memcpy(s->ids + s->n * TVS_ID_LEN, id->b, TVS_ID_LEN);
    s->n++;
    return 0;
}

Test(object, tensor_children_are_its_chunks)
{
    tvs_tensor_obj t = sample_tensor();
    tvs_buf b = encode_tensor(&t);
    chunk_kids seen = { 0 };
    tt_ok(tvs_object_children((tvs_span){ b.ptr, b.len }, collect_chunk, &seen));
    cr_assert_eq(seen.n, 5);
    cr_assert_eq(seen.bad_type, 0);
    cr_assert_arr_eq(seen.ids, chunk_ids, sizeof chunk_ids);
    tvs_buf_dispose(&b);
}

/* ---- models */

Test(object, model_round_trips)
{
    tvs_model_obj m = sample_model();
    model_round_trip(&m);
    cr_assert_eq(tvs_object_type((tvs_span){ (const uint8_t *)"\x03", 1 }), TVS_OBJ_MODEL);
}

Test(object, models_of_every_shape_round_trip)
{
    tvs_model_obj m = sample_model();
    /* nothing at all */
    tvs_model_obj empty;
    memset(&empty, 0, sizeof empty);
    model_round_trip(&empty);
    /* a delta with a base, one parent, a single file, a negative time */
    m.kind = TVS_MODEL_DELTA;
    m.base = id_n(9);
    m.flags = TVS_MODEL_SINGLE_FILE;
    m.n_parents = 1;
    m.time = -5;
    m.files = &files[1];
    m.n_files = 1;
    model_round_trip(&m);
    /* a safetensors file without tensors */
    tvs_model_file f = { .name = span_of("empty.safetensors"), .kind = TVS_FILE_SAFETENSORS,
                         .header = span_of("{}      ") };
    m = sample_model();
    m.files = &f;
    m.n_files = 1;
    model_round_trip(&m);
}

Test(object, a_model_with_a_tiny_safetensors_file_round_trips)
{
    /* the smallest valid file entry: a short name, "{}" and no tensors */
    tvs_model_file f = { .name = span_of("e"), .kind = TVS_FILE_SAFETENSORS,
                         .header = span_of("{}") };
    tvs_model_obj m;
    memset(&m, 0, sizeof m);
    m.flags = TVS_MODEL_SINGLE_FILE;
    m.files = &f;
    m.n_files = 1;
    model_round_trip(&m);
    tvs_model_file two[2] = { f, f };
    two[1].name = span_of("f");
    m.files = two;
    m.n_files = 2;
    m.flags = 0;
    model_round_trip(&m);
}

Test(object, model_layout_is_the_one_in_the_spec)
{
    tvs_model_file f = { .name = span_of("c.json"), .kind = TVS_FILE_BLOB, .blob = id_n(4) };
    tvs_model_obj m;
    memset(&m, 0, sizeof m);
    m.kind = TVS_MODEL_FULL;
    m.flags = TVS_MODEL_SINGLE_FILE;
    m.parents = parents;
    parents[0] = id_n(6);
    m.n_parents = 1;
    m.time = 0x0102030405060708ll;
    m.author = span_of("a");
    m.message = span_of("mm");
    m.files = &f;
    m.n_files = 1;
    tvs_buf b = encode_model(&m);
    const uint8_t *p = b.ptr;
    size_t at = 0;
    cr_assert_eq(p[0], 3, "type");
    cr_assert_eq(p[1], 1, "version");
    cr_assert_eq(p[2], 0, "kind");
    cr_assert_eq(p[3], 1, "flags");
    at = 4;
    for (int i = 0; i < 16; i++)
        cr_assert_eq(p[at + i], 0, "a full model's base is zero");
    at += 16;
    cr_assert_eq(tvs_load_le32(p + at), 1, "n_parents");
    cr_assert_arr_eq(p + at + 4, parents[0].b, 16);
    at += 20;
    cr_assert_eq(tvs_load_le64(p + at), 0x0102030405060708ull, "time");
    at += 8;
    cr_assert_eq(tvs_load_le32(p + at), 1);
    cr_assert_eq(p[at + 4], 'a');
    at += 5;
    cr_assert_eq(tvs_load_le32(p + at), 2);
    at += 6;
    cr_assert_eq(tvs_load_le32(p + at), 1, "n_files");
    at += 4;
    cr_assert_eq(tvs_load_le32(p + at), 6);
    cr_assert_arr_eq(p + at + 4, "c.json", 6);
    at += 10;
    cr_assert_eq(p[at], TVS_FILE_BLOB);
    cr_assert_arr_eq(p + at + 1, f.blob.b, 16);
    at += 17;
    cr_assert_eq(at, b.len);
    tvs_buf_dispose(&b);
}

Test(object, model_golden_id_never_changes)
{
    tvs_model_obj m = sample_model();
    tvs_buf b = encode_model(&m);
    tvs_id id;
    char hex[TVS_ID_HEX + 1];
    tvs_id_of(&id, b.ptr, b.len);
    tvs_id_hex(hex, &id);
    char *path = tt_fmt("%s/tests/data/golden/model_object.id", TVS_SOURCE_DIR);
    char *want = (char *)tt_read_file(path, NULL);
    cr_assert_not_null(want, "cannot read %s", path);
    want[strcspn(want, "\r\n ")] = 0;
    cr_assert_str_eq(hex, want, "the id of the golden model object changed to %s (expected %s)",
                     hex, want);
    free(want);
    free(path);
    tvs_buf_dispose(&b);
}

Test(object, model_encode_refuses_unsorted_or_duplicate_names)
{
    tvs_model_obj m = sample_model();
    tvs_buf b = TVS_BUF_INIT;
    tvs_model_file f[2] = { files[2], files[0] };
    m.files = f;
    m.n_files = 2;
    tt_fails(tvs_model_encode(&b, &m), TVS_EINVAL);
    f[1] = files[2];
    tvs_buf_dispose(&b);
    tt_fails(tvs_model_encode(&b, &m), TVS_EINVAL);
    tvs_buf_dispose(&b);
    m = sample_model();
    tvs_model_entry e[2] = { entries[1], entries[0] };
    files[1].tensors = e;
    files[1].n_tensors = 2;
    tt_fails(tvs_model_encode(&b, &m), TVS_EINVAL);
    tvs_buf_dispose(&b);
    e[1] = entries[1];
    tt_fails(tvs_model_encode(&b, &m), TVS_EINVAL);
    tvs_buf_dispose(&b);
}

/* Offsets inside the sample model's encoding. */
#define M_KIND 2
#define M_FLAGS 3
#define M_BASE 4
#define M_NPARENTS 20

static size_t find(const tvs_buf *b, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i + n <= b->len; i++)
        if (memcmp(b->ptr + i, s, n) == 0)
            return i;
    cr_assert_fail("'%s' not found in the encoding", s);
    return 0;
}

static void model_rejects(tvs_buf *b, const char *needle, const char *what)
{
    int rc = decode_model_bytes(b->ptr, b->len);
    cr_assert_eq(rc, TVS_ECORRUPT, "%s: got %d (%s)", what, rc, tvs_errmsg());
    if (needle)
        cr_assert(strstr(tvs_errmsg(), needle), "%s: message \"%s\" lacks \"%s\"", what,
                  tvs_errmsg(), needle);
}

Test(object, model_decode_rejects_a_wrong_type_version_kind_or_flags)
{
    tvs_model_obj m = sample_model();
    tvs_buf b = encode_model(&m);
    b.ptr[0] = TVS_OBJ_TENSOR;
    model_rejects(&b, "not a model", "type");
    b.ptr[0] = TVS_OBJ_MODEL;
    b.ptr[1] = 2;
    model_rejects(&b, "version 2", "version");
    b.ptr[1] = 1;
    b.ptr[M_KIND] = 2;
    model_rejects(&b, "kind 2", "kind");
    b.ptr[M_KIND] = 0;
    b.ptr[M_FLAGS] = 4;
    model_rejects(&b, "flags 4", "flags");
    b.ptr[M_FLAGS] = TVS_MODEL_LOSSY;   /* known: some tensors are lossy */
    tt_ok(decode_model_bytes(b.ptr, b.len));
    b.ptr[M_FLAGS] = 0x81;
    model_rejects(&b, "flags", "flags");
    b.ptr[M_FLAGS] = 0;
    tt_ok(decode_model_bytes(b.ptr, b.len));
    tvs_buf_dispose(&b);
}

Test(object, model_decode_rejects_a_full_model_with_a_base)
{
    tvs_model_obj m = sample_model();
    tvs_buf b = encode_model(&m);
    b.ptr[M_BASE + 3] = 1;
    model_rejects(&b, "names a base", "full model with a base");
    b.ptr[M_KIND] = TVS_MODEL_DELTA;
    tt_ok(decode_model_bytes(b.ptr, b.len));
    tvs_buf_dispose(&b);
}

Test(object, model_decode_rejects_unsorted_or_duplicate_file_names)
{
    /* two blobs with names of equal length, renamed in the encoded bytes */
    tvs_model_file f[2] = { { .name = span_of("aaaa"), .kind = TVS_FILE_BLOB, .blob = id_n(1) },
                            { .name = span_of("bbbb"), .kind = TVS_FILE_BLOB, .blob = id_n(2) } };
    tvs_model_obj m;
    memset(&m, 0, sizeof m);
    m.files = f;
    m.n_files = 2;
    tvs_buf b = encode_model(&m);
    size_t a = find(&b, "aaaa"), c = find(&b, "bbbb");
    memcpy(b.ptr + a, "cccc", 4);
    model_rejects(&b, "file names not sorted", "unsorted files");
    memcpy(b.ptr + a, "bbbb", 4);
    model_rejects(&b, "file names not sorted and unique", "duplicate files");
    memcpy(b.ptr + a, "aaaa", 4);
    memcpy(b.ptr + c, "aaab", 4);
    tt_ok(decode_model_bytes(b.ptr, b.len));
    tvs_buf_dispose(&b);
}

Test(object, model_decode_rejects_unsorted_or_duplicate_tensor_names)
{
    tvs_model_entry e[3] = { { span_of("w1"), id_n(1) }, { span_of("w2"), id_n(2) },
                             { span_of("w3"), id_n(3) } };
    tvs_model_file f = { .name = span_of("m.safetensors"), .kind = TVS_FILE_SAFETENSORS,
                         .header = span_of("{}"), .tensors = e, .n_tensors = 3 };
    tvs_model_obj m;
    memset(&m, 0, sizeof m);
    m.files = &f;
    m.n_files = 1;
    tvs_buf b = encode_model(&m);
    size_t at = find(&b, "w2");
    b.ptr[at + 1] = '4';
    model_rejects(&b, "tensor names not sorted and unique at entry 2", "unsorted tensors");
    b.ptr[at + 1] = '1';
    model_rejects(&b, "tensor names not sorted and unique at entry 1", "duplicate tensors");
    b.ptr[at + 1] = '2';
    tt_ok(decode_model_bytes(b.ptr, b.len));
    tvs_buf_dispose(&b);
}

Test(object, model_decode_rejects_an_unknown_file_kind)
{
    tvs_model_obj m = sample_model();
    tvs_buf b = encode_model(&m);
    size_t at = find(&b, "config.json") + strlen("config.json");
    cr_assert_eq(b.ptr[at], TVS_FILE_BLOB);
    b.ptr[at] = 2;
    model_rejects(&b, "file kind 2", "file kind");
    tvs_buf_dispose(&b);
}

Test(object, model_decode_rejects_counts_the_bytes_cannot_hold)
{
    tvs_model_obj m = sample_model();
    tvs_buf b = encode_model(&m);
    tvs_store_le32(b.ptr + M_NPARENTS, 1000000);
    model_rejects(&b, "parents cannot fit", "parent count");
    tvs_store_le32(b.ptr + M_NPARENTS, UINT32_MAX);
    model_rejects(&b, NULL, "parent count");
    tvs_store_le32(b.ptr + M_NPARENTS, 3);
    model_rejects(&b, NULL, "one parent too many");
    tvs_store_le32(b.ptr + M_NPARENTS, 2);
    tt_ok(decode_model_bytes(b.ptr, b.len));
    /* the file count sits right after the message */
    size_t at = find(&b, "import /models/x") + strlen("import /models/x");
    cr_assert_eq(tvs_load_le32(b.ptr + at), 3);
    tvs_store_le32(b.ptr + at, UINT32_MAX);
    model_rejects(&b, "files cannot fit", "file count");
    tvs_store_le32(b.ptr + at, 4);
    model_rejects(&b, NULL, "one file too many");
    tvs_store_le32(b.ptr + at, 2);
    model_rejects(&b, "trailing", "one file too few");
    tvs_buf_dispose(&b);
}

Test(object, model_decode_rejects_a_wrong_tensor_count)
{
    tvs_model_entry e[2] = { { span_of("w1"), id_n(1) }, { span_of("w2"), id_n(2) } };
    tvs_model_file f = { .name = span_of("m.safetensors"), .kind = TVS_FILE_SAFETENSORS,
                         .header = span_of("{}"), .tensors = e, .n_tensors = 2 };
    tvs_model_obj m;
    memset(&m, 0, sizeof m);
    m.files = &f;
    m.n_files = 1;
    tvs_buf b = encode_model(&m);
    size_t at = find(&b, "w1") - 8;   /* u32 n_tensors, then u32 name length */
    cr_assert_eq(tvs_load_le32(b.ptr + at), 2);
    tvs_store_le32(b.ptr + at, 3);
    model_rejects(&b, NULL, "too many tensors");
    tvs_store_le32(b.ptr + at, 1);
    model_rejects(&b, "trailing", "too few tensors");
    tvs_store_le32(b.ptr + at, UINT32_MAX);
    model_rejects(&b, "cannot fit", "huge tensor count");
    tvs_buf_dispose(&b);
}

Test(object, model_decode_rejects_trailing_bytes)
{
    tvs_model_obj m = sample_model();
    tvs_buf b = encode_model(&m);
    tt_ok(tvs_buf_put_u8(&b, 0));
    model_rejects(&b, "trailing", "trailing byte");
    tvs_buf_dispose(&b);
}

Test(object, model_decode_rejects_truncation_at_every_length)
{
    tvs_model_obj m = sample_model();
    tvs_buf b = encode_model(&m);
    for (size_t n = 0; n < b.len; n++) {
        uint8_t *copy = malloc(n ? n : 1);
        memcpy(copy, b.ptr, n);
        int rc = decode_model_bytes(copy, n);
        cr_assert_eq(rc, TVS_ECORRUPT, "model cut to %zu of %zu bytes: %d (%s)", n, b.len, rc,
                     tvs_errmsg());
        free(copy);
    }
    tvs_buf_dispose(&b);
}

Test(object, model_decode_survives_an_allocation_failure_at_every_step)
{
    tvs_model_obj m = sample_model();
    tvs_buf b = encode_model(&m);
    int ok = 0;
    for (long k = 0; k < 50 && !ok; k++) {
        tvs_model_obj d;
        tvs__alloc_fail_after = k;
        int rc = tvs_model_decode(&d, (tvs_span){ b.ptr, b.len });
        tvs__alloc_fail_after = -1;
        if (rc == 0) {
            assert_model_eq(&m, &d);
            tvs_model_dispose(&d);
            ok = 1;
        } else {
            cr_assert_eq(rc, TVS_ENOMEM, "allocation %ld: %d (%s)", k, rc, tvs_errmsg());
        }
    }
    cr_assert(ok);
    tvs_buf_dispose(&b);
}

typedef struct {
    int n, models, tensors, other;
} kids;

static int count_kid(const tvs_id *id, int type, void *p)
{
    kids *k = p;
    (void)id;
    k->n++;
    k->models += type == TVS_OBJ_MODEL;
    k->tensors += type == TVS_OBJ_TENSOR;
    k->other += type != TVS_OBJ_MODEL && type != TVS_OBJ_TENSOR;
    return 0;
}

static int stop_at_two(const tvs_id *id, int type, void *p)
{
    (void)id;
    (void)type;
    return ++*(int *)p == 2 ? 42 : 0;
}

Test(object, model_children_are_base_parents_blobs_and_tensors)
{
    tvs_model_obj m = sample_model();
    m.kind = TVS_MODEL_DELTA;
    m.base = id_n(9);
    tvs_buf b = encode_model(&m);
    kids k = { 0 };
    tt_ok(tvs_object_children((tvs_span){ b.ptr, b.len }, count_kid, &k));
    cr_assert_eq(k.models, 3, "the base and two parents");
    cr_assert_eq(k.tensors, 5, "two blobs and three tensors");
    cr_assert_eq(k.other, 0);
    int calls = 0;
    cr_assert_eq(tvs_object_children((tvs_span){ b.ptr, b.len }, stop_at_two, &calls), 42,
                 "the callback's non-zero return stops the walk");
    cr_assert_eq(calls, 2);
    b.ptr[b.len - 1] ^= 1;
    tt_ok(tvs_object_children((tvs_span){ b.ptr, b.len }, count_kid, &k));
    tt_ok(tvs_buf_put_u8(&b, 0));
    tt_fails(tvs_object_children((tvs_span){ b.ptr, b.len }, count_kid, &k), TVS_ECORRUPT);
    tvs_buf_dispose(&b);
}

Test(object, children_of_a_chunk_are_none_and_of_junk_an_error)
{
    kids k = { 0 };
    tt_ok(tvs_object_children((tvs_span){ (const uint8_t *)"\x01\x00\x00\x00\x00\x00", 6 },
                              count_kid, &k));
    cr_assert_eq(k.n, 0);
    tt_fails(tvs_object_children((tvs_span){ (const uint8_t *)"\x09", 1 }, count_kid, &k),
             TVS_ECORRUPT);
    tt_fails(tvs_object_children((tvs_span){ NULL, 0 }, count_kid, &k), TVS_ECORRUPT);
    tt_fails(tvs_object_type((tvs_span){ NULL, 0 }), TVS_ECORRUPT);
    cr_assert_str_eq(tvs_object_type_name(TVS_OBJ_CHUNK), "chunk");
    cr_assert_str_eq(tvs_object_type_name(TVS_OBJ_TENSOR), "tensor");
    cr_assert_str_eq(tvs_object_type_name(TVS_OBJ_MODEL), "model");
    cr_assert_str_eq(tvs_object_type_name(0), "?");
}
