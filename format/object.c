/*
 * Tensor and model object encoding (format/object.h).
 *
 * Encoders write the canonical form; decoders accept only the canonical
 * form (sorted, unique names, exact lengths, no trailing bytes), so that
 * decode(encode(x)) is the identity and ids are well defined.
 */
#include "format/object.h"
#include "format/delta.h"

#include <stdlib.h>
#include <string.h>

#define MAX_NAME (64u << 10)
#define MAX_TEXT (16u << 20)
/* Smallest file entry: name length, kind, then (safetensors) header length
 * and tensor count, which is shorter than a blob's 16-byte id. */
#define MIN_FILE_ENTRY (4 + 1 + 4 + 4)

uint64_t tvs_chunks_for(uint64_t nbytes, uint32_t chunk_size)
{
    return chunk_size ? (nbytes + chunk_size - 1) / chunk_size : 0;
}

size_t tvs_tensor_chunk_len(const tvs_tensor_obj *t, uint32_t i)
{
    uint64_t off = (uint64_t)i * t->chunk_size;
    return (size_t)TVS_MIN((uint64_t)t->chunk_size, t->nbytes - off);
}

int tvs_object_type(tvs_span b)
{
    if (b.len < 1)
        return tvs__fail(TVS_ECORRUPT, "object is empty");
    return b.ptr[0];
}

const char *tvs_object_type_name(int type)
{
    switch (type) {
    case TVS_OBJ_CHUNK: return "chunk";
    case TVS_OBJ_TENSOR: return "tensor";
    case TVS_OBJ_MODEL: return "model";
    }
    return "?";
}

/* ---- tensors */

int tvs_tensor_encode(tvs_buf *b, const tvs_tensor_obj *t)
{
    int rc = 0;
    if (t->rank > TVS_ST_MAX_RANK)
        return tvs__fail(TVS_EINVAL, "tensor rank %u is over %d", t->rank, TVS_ST_MAX_RANK);
    if (t->chunk_size == 0 || t->chunk_size > (64u << 20))
        return tvs__fail(TVS_EINVAL, "tensor chunk size %u is out of range", t->chunk_size);
    if (tvs_chunks_for(t->nbytes, t->chunk_size) != t->n_chunks)
        return tvs__fail(TVS_EINVAL, "tensor of %llu bytes needs %llu chunks, has %u",
                         (unsigned long long)t->nbytes,
                         (unsigned long long)tvs_chunks_for(t->nbytes, t->chunk_size),
                         t->n_chunks);
    uint8_t hdr[6] = { TVS_OBJ_TENSOR, TVS_OBJ_VERSION, (uint8_t)t->dtype, t->encoding,
                       (uint8_t)t->rank, 0 };
    rc = tvs_buf_append(b, hdr, sizeof hdr);
    for (uint32_t i = 0; !rc && i < t->rank; i++)
        rc = tvs_buf_put_le64(b, t->shape[i]);
    if (!rc) rc = tvs_buf_put_le64(b, t->nbytes);
    if (!rc) rc = tvs_buf_append(b, t->checksum.b, TVS_ID_LEN);
    if (!rc) rc = tvs_buf_put_le32(b, t->chunk_size);
    if (!rc) rc = tvs_buf_put_le32(b, t->n_chunks);
    if (!rc) rc = tvs_buf_append(b, t->chunk_ids, (size_t)t->n_chunks * TVS_ID_LEN);
    if (!rc && t->encoding == TVS_ENC_DELTA) {
        rc = tvs_buf_append(b, t->base.b, TVS_ID_LEN);
        if (!rc) rc = tvs_buf_put_u8(b, t->transform);
    }
    if (!rc && t->encoding == TVS_ENC_LOSSY)
        rc = tvs_buf_append(b, t->base.b, TVS_ID_LEN);
    return rc;
}

int tvs_tensor_decode(tvs_tensor_obj *t, tvs_span bytes)
{
    tvs_reader r = { bytes, 0, "tensor object" };
    uint8_t type, ver, dtype, rank, flags;
    tvs_span s;
    int rc;
    memset(t, 0, sizeof *t);
    if ((rc = tvs_read_u8(&r, &type)) || (rc = tvs_read_u8(&r, &ver)) ||
        (rc = tvs_read_u8(&r, &dtype)) || (rc = tvs_read_u8(&r, &t->encoding)) ||
        (rc = tvs_read_u8(&r, &rank)) || (rc = tvs_read_u8(&r, &flags)))
        return rc;
    if (type != TVS_OBJ_TENSOR)
        return tvs__fail(TVS_ECORRUPT, "object type %u is not a tensor", type);
    if (ver != TVS_OBJ_VERSION)
        return tvs__fail(TVS_ECORRUPT, "tensor object version %u is not supported", ver);
    if (!tvs_dtype_bits(dtype))
        return tvs__fail(TVS_ECORRUPT, "tensor object: unknown dtype id %u", dtype);
    if (t->encoding > TVS_ENC_LOSSY)
        return tvs__fail(TVS_ECORRUPT, "tensor object: unknown encoding %u", t->encoding);
    if (rank > TVS_ST_MAX_RANK || flags)
        return tvs__fail(TVS_ECORRUPT, "tensor object: rank %u / flags %u out of range",
                         rank, flags);
    t->dtype = dtype;
    t->rank = rank;
    uint64_t n = 1;
    for (uint32_t i = 0; i < rank; i++) {
        if ((rc = tvs_read_le64(&r, &t->shape[i])))
            return rc;
        if (t->shape[i] && n > UINT64_MAX / t->shape[i])
            return tvs__fail(TVS_ECORRUPT, "tensor object: element count overflows");
        n *= t->shape[i];
    }
    uint64_t want;
    if ((rc = tvs_read_le64(&r, &t->nbytes)) ||
        (rc = tvs_read_bytes(&r, &s, TVS_ID_LEN)))
        return rc;
    memcpy(t->checksum.b, s.ptr, TVS_ID_LEN);
    if (tvs_dtype_nbytes(&want, t->dtype, n) || want != t->nbytes)
        return tvs__fail(TVS_ECORRUPT, "tensor object: %llu bytes do not match its "
                         "shape and dtype %s", (unsigned long long)t->nbytes,
                         tvs_dtype_name(t->dtype));
    if ((rc = tvs_read_le32(&r, &t->chunk_size)) || (rc = tvs_read_le32(&r, &t->n_chunks)))
        return rc;
    if (t->chunk_size == 0 || t->chunk_size > (64u << 20))
        return tvs__fail(TVS_ECORRUPT, "tensor object: chunk size %u out of range",
                         t->chunk_size);
    if (tvs_chunks_for(t->nbytes, t->chunk_size) != t->n_chunks)
        return tvs__fail(TVS_ECORRUPT, "tensor object: %u chunks cannot hold %llu bytes "
                         "at %u per chunk", t->n_chunks, (unsigned long long)t->nbytes,
                         t->chunk_size);
    if ((rc = tvs_read_bytes(&r, &s, (size_t)t->n_chunks * TVS_ID_LEN)))
        return rc;
    t->chunk_ids = s.ptr;
    if (t->encoding == TVS_ENC_DELTA) {
        if ((rc = tvs_read_bytes(&r, &s, TVS_ID_LEN)) || (rc = tvs_read_u8(&r, &t->transform)))
            return rc;
        memcpy(t->base.b, s.ptr, TVS_ID_LEN);
        unsigned w = tvs_delta_width(t->transform);
        if (!w || t->nbytes % w || t->chunk_size % w)
            return tvs__fail(TVS_ECORRUPT, "tensor object: delta transform %u does not fit "
                             "%llu bytes in chunks of %u", t->transform,
                             (unsigned long long)t->nbytes, t->chunk_size);
    }
    if (t->encoding == TVS_ENC_LOSSY) {
        if ((rc = tvs_read_bytes(&r, &s, TVS_ID_LEN)))
            return rc;
        memcpy(t->base.b, s.ptr, TVS_ID_LEN);
        unsigned w = tvs_dtype_bits(t->dtype) / 8;
        if (t->dtype != TVS_DTYPE_BF16 && t->dtype != TVS_DTYPE_F16 && t->dtype != TVS_DTYPE_F32)
            return tvs__fail(TVS_ECORRUPT, "tensor object: a lossy tensor of dtype %s "
                             "(only BF16, F16 and F32)", tvs_dtype_name(t->dtype));
        if (t->chunk_size % w)
            return tvs__fail(TVS_ECORRUPT, "tensor object: lossy chunks of %u bytes do not "
                             "hold whole %s elements", t->chunk_size, tvs_dtype_name(t->dtype));
    }
    return tvs_read_end(&r);
}

/* ---- models */

static int span_cmp(tvs_span a, tvs_span b)
{
    int c = memcmp(a.ptr, b.ptr, TVS_MIN(a.len, b.len));
    return c ? c : (a.len < b.len ? -1 : a.len > b.len);
}

const tvs_model_entry *tvs_model_file_find(const tvs_model_file *f, const char *name)
{
    tvs_span key = { (const uint8_t *)name, strlen(name) };
    size_t lo = 0, hi = f->n_tensors;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = span_cmp(f->tensors[mid].name, key);
        if (c == 0)
            return &f->tensors[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const tvs_model_entry *tvs_model_find(const tvs_model_obj *m, const char *name)
{
    for (size_t i = 0; i < m->n_files; i++) {
        const tvs_model_entry *e = tvs_model_file_find(&m->files[i], name);
        if (e)
            return e;
    }
    return NULL;
}

static int put_file(tvs_buf *b, const tvs_model_file *f)
{
    int rc = tvs_buf_put_str(b, f->name.ptr, f->name.len);
    if (!rc) rc = tvs_buf_put_u8(b, f->kind);
    if (rc)
        return rc;
    if (f->kind == TVS_FILE_BLOB)
        return tvs_buf_append(b, f->blob.b, TVS_ID_LEN);
    if ((rc = tvs_buf_put_str(b, f->header.ptr, f->header.len)) ||
        (rc = tvs_buf_put_le32(b, (uint32_t)f->n_tensors)))
        return rc;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const tvs_model_entry *e = &f->tensors[i];
        if (i && span_cmp(f->tensors[i - 1].name, e->name) >= 0)
            return tvs__fail(TVS_EINVAL, "model encode: tensor names not sorted/unique");
        if ((rc = tvs_buf_put_str(b, e->name.ptr, e->name.len)) ||
            (rc = tvs_buf_append(b, e->id.b, TVS_ID_LEN)))
            return rc;
    }
    return 0;
}

int tvs_model_encode(tvs_buf *b, const tvs_model_obj *m)
{
    uint8_t hdr[4] = { TVS_OBJ_MODEL, TVS_OBJ_VERSION, m->kind, m->flags };
    int rc = tvs_buf_append(b, hdr, sizeof hdr);
    if (!rc) rc = tvs_buf_append(b, m->base.b, TVS_ID_LEN);
    if (!rc) rc = tvs_buf_put_le32(b, (uint32_t)m->n_parents);
    for (size_t i = 0; !rc && i < m->n_parents; i++)
        rc = tvs_buf_append(b, m->parents[i].b, TVS_ID_LEN);
    if (!rc) rc = tvs_buf_put_le64(b, (uint64_t)m->time);
    if (!rc) rc = tvs_buf_put_str(b, m->author.ptr, m->author.len);
    if (!rc) rc = tvs_buf_put_str(b, m->message.ptr, m->message.len);
    if (!rc) rc = tvs_buf_put_le32(b, (uint32_t)m->n_files);
    for (size_t i = 0; !rc && i < m->n_files; i++) {
        if (i && span_cmp(m->files[i - 1].name, m->files[i].name) >= 0)
            return tvs__fail(TVS_EINVAL, "model encode: file names not sorted/unique");
        rc = put_file(b, &m->files[i]);
    }
    return rc;
}

void tvs_model_dispose(tvs_model_obj *m)
{
    for (size_t i = 0; m->files && i < m->n_files; i++)
        tvs_free(m->files[i].tensors);
    tvs_free(m->files);
    tvs_free(m->parents);
    memset(m, 0, sizeof *m);
}

static int read_id(tvs_reader *r, tvs_id *out)
{
    tvs_span s;
    int rc = tvs_read_bytes(r, &s, TVS_ID_LEN);
    if (!rc)
        memcpy(out->b, s.ptr, TVS_ID_LEN);
    return rc;
}

/* A count must be coverable by the remaining bytes at @p min_each per item. */
static int check_count(tvs_reader *r, uint32_t n, size_t min_each, const char *what)
{
    if ((uint64_t)n * min_each > r->s.len - r->off)
        return tvs__fail(TVS_ECORRUPT, "model object: %u %s cannot fit in %zu bytes",
                         n, what, r->s.len - r->off);
    return 0;
}

static int get_file(tvs_reader *r, tvs_model_file *f)
{
    int rc;
    uint32_t n;
    if ((rc = tvs_read_str(r, &f->name, MAX_NAME)) || (rc = tvs_read_u8(r, &f->kind)))
        return rc;
    if (f->kind == TVS_FILE_BLOB)
        return read_id(r, &f->blob);
    if (f->kind != TVS_FILE_SAFETENSORS)
        return tvs__fail(TVS_ECORRUPT, "model object: file kind %u unknown", f->kind);
    if ((rc = tvs_read_str(r, &f->header, TVS_ST_MAX_HEADER)) ||
        (rc = tvs_read_le32(r, &n)) || (rc = check_count(r, n, 4 + TVS_ID_LEN, "tensors")))
        return rc;
    f->tensors = tvs_calloc(n ? n : 1, sizeof *f->tensors);
    if (!f->tensors)
        return tvs__fail(TVS_ENOMEM, "out of memory for %u tensor entries", n);
    for (uint32_t i = 0; i < n; i++) {
        tvs_model_entry *e = &f->tensors[i];
        if ((rc = tvs_read_str(r, &e->name, MAX_NAME)) || (rc = read_id(r, &e->id)))
            return rc;
        f->n_tensors++;
        if (i && span_cmp(f->tensors[i - 1].name, e->name) >= 0)
            return tvs__fail(TVS_ECORRUPT, "model object: tensor names not sorted and "
                             "unique at entry %u", i);
    }
    return 0;
}

int tvs_model_decode(tvs_model_obj *m, tvs_span bytes)
{
    tvs_reader r = { bytes, 0, "model object" };
    uint8_t type, ver;
    uint32_t n;
    uint64_t t;
    int rc;
    memset(m, 0, sizeof *m);
    if ((rc = tvs_read_u8(&r, &type)) || (rc = tvs_read_u8(&r, &ver)) ||
        (rc = tvs_read_u8(&r, &m->kind)) || (rc = tvs_read_u8(&r, &m->flags)))
        return rc;
    if (type != TVS_OBJ_MODEL)
        return tvs__fail(TVS_ECORRUPT, "object type %u is not a model", type);
    if (ver != TVS_OBJ_VERSION)
        return tvs__fail(TVS_ECORRUPT, "model object version %u is not supported", ver);
    if (m->kind > TVS_MODEL_DELTA || (m->flags & ~(TVS_MODEL_SINGLE_FILE | TVS_MODEL_LOSSY)))
        return tvs__fail(TVS_ECORRUPT, "model object: kind %u / flags %u unknown",
                         m->kind, m->flags);
    if ((rc = read_id(&r, &m->base)) || (rc = tvs_read_le32(&r, &n)) ||
        (rc = check_count(&r, n, TVS_ID_LEN, "parents")))
        goto out;
    m->parents = tvs_calloc(n ? n : 1, sizeof *m->parents);
    if (!m->parents) {
        rc = tvs__fail(TVS_ENOMEM, "out of memory for parents");
        goto out;
    }
    for (; m->n_parents < n; m->n_parents++)
        if ((rc = read_id(&r, &m->parents[m->n_parents])))
            goto out;
    if ((rc = tvs_read_le64(&r, &t)) || (rc = tvs_read_str(&r, &m->author, MAX_TEXT)) ||
        (rc = tvs_read_str(&r, &m->message, MAX_TEXT)) || (rc = tvs_read_le32(&r, &n)) ||
        (rc = check_count(&r, n, MIN_FILE_ENTRY, "files")))
        goto out;
    m->time = (int64_t)t;
    m->files = tvs_calloc(n ? n : 1, sizeof *m->files);
    if (!m->files) {
        rc = tvs__fail(TVS_ENOMEM, "out of memory for files");
        goto out;
    }
    for (uint32_t i = 0; i < n; i++) {
        m->n_files++;
        if ((rc = get_file(&r, &m->files[i])))
            goto out;
        if (i && span_cmp(m->files[i - 1].name, m->files[i].name) >= 0) {
            rc = tvs__fail(TVS_ECORRUPT, "model object: file names not sorted and unique");
            goto out;
        }
    }
    if (m->kind == TVS_MODEL_FULL && !tvs_id_is_zero(&m->base))
        rc = tvs__fail(TVS_ECORRUPT, "model object: a full model names a base");
    if (!rc)
        rc = tvs_read_end(&r);
out:
    if (rc)
        tvs_model_dispose(m);
    return rc;
}

/* ---- children */

int tvs_object_children(tvs_span b, int (*cb)(const tvs_id *, int, void *), void *payload)
{
    int type = tvs_object_type(b), rc = 0;
    if (type < 0)
        return type;
    if (type == TVS_OBJ_CHUNK)
        return 0;
    if (type == TVS_OBJ_TENSOR) {
        tvs_tensor_obj t;
        if ((rc = tvs_tensor_decode(&t, b)))
            return rc;
        for (uint32_t i = 0; !rc && i < t.n_chunks; i++) {
            tvs_id id;
            tvs_tensor_chunk_id(&id, &t, i);
            rc = cb(&id, TVS_OBJ_CHUNK, payload);
        }
        if (!rc && tvs_encoding_has_base(t.encoding))
            rc = cb(&t.base, TVS_OBJ_TENSOR, payload);
        return rc;
    }
    if (type != TVS_OBJ_MODEL)
        return tvs__fail(TVS_ECORRUPT, "unknown object type %d", type);
    tvs_model_obj m;
    if ((rc = tvs_model_decode(&m, b)))
        return rc;
    if (!tvs_id_is_zero(&m.base))
        rc = cb(&m.base, TVS_OBJ_MODEL, payload);
    for (size_t i = 0; !rc && i < m.n_parents; i++)
        rc = cb(&m.parents[i], TVS_OBJ_MODEL, payload);
    for (size_t i = 0; !rc && i < m.n_files; i++) {
        const tvs_model_file *f = &m.files[i];
        if (f->kind == TVS_FILE_BLOB)
            rc = cb(&f->blob, TVS_OBJ_TENSOR, payload);
        for (size_t j = 0; !rc && j < f->n_tensors; j++)
            rc = cb(&f->tensors[j].id, TVS_OBJ_TENSOR, payload);
    }
    tvs_model_dispose(&m);
    return rc;
}
