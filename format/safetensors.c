/*
 * safetensors header parsing and validation (format/safetensors.h).
 *
 * JSON is parsed by jansson with duplicate keys rejected. Every rule that
 * makes a file acceptable is checked here, in one place, and every failure
 * names the tensor (or byte offset) and the rule it broke.
 */
#include "format/safetensors.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

int tvs_st_header_len(uint64_t *out, tvs_span prefix, uint64_t file_len)
{
    if (file_len < 8 || prefix.len < 8)
        return tvs__fail(TVS_ECORRUPT, "truncated: %llu bytes, a safetensors file needs "
                         "at least the 8-byte header length",
                         (unsigned long long)file_len);
    uint64_t n = tvs_load_le64(prefix.ptr);
    if (n > TVS_ST_MAX_HEADER)
        return tvs__fail(TVS_ECORRUPT, "header length %llu at byte 0 is over the "
                         "%u-byte limit", (unsigned long long)n, TVS_ST_MAX_HEADER);
    if (n > file_len - 8)
        return tvs__fail(TVS_ECORRUPT, "header length %llu at byte 0 runs past the end "
                         "of the file (%llu bytes)", (unsigned long long)n,
                         (unsigned long long)file_len);
    if (n < 2)
        return tvs__fail(TVS_ECORRUPT, "header length %llu at byte 0 is too short for "
                         "a JSON object", (unsigned long long)n);
    *out = n;
    return 0;
}

static void tensor_dispose(tvs_st_tensor *t)
{
    tvs_free(t->name);
    tvs_free(t->shape);
}

void tvs_st_header_dispose(tvs_st_header *h)
{
    for (size_t i = 0; i < h->n; i++)
        tensor_dispose(&h->tensors[i]);
    tvs_free(h->tensors);
    for (size_t i = 0; i < 2 * h->n_meta; i++)
        tvs_free(h->meta[i]);
    tvs_free(h->meta);
    memset(h, 0, sizeof *h);
}

static int get_u64(uint64_t *out, json_t *v)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

static int parse_meta(tvs_st_header *h, json_t *meta)
{
    if (!json_is_object(meta))
        return tvs__fail(TVS_ECORRUPT, "__metadata__ is not an object of strings");
    size_t n = json_object_size(meta);
    h->meta = tvs_calloc(2 * n, sizeof *h->meta);
    if (!h->meta)
        return tvs__fail(TVS_ENOMEM, "out of memory for __metadata__");
    h->has_meta = 1;
    const char *key;
    json_t *val;
    json_object_foreach(meta, key, val) {
        if (!json_is_string(val))
            return tvs__fail(TVS_ECORRUPT, "__metadata__ value of \"%s\" is not a string "
                             "(metadata must be a string-to-string map)", key);
        char *k = tvs_strdup(key), *v = tvs_strdup(json_string_value(val));
        if (!k || !v) {
            tvs_free(k);
            tvs_free(v);
            return tvs__fail(TVS_ENOMEM, "out of memory for __metadata__");
        }
        h->meta[2 * h->n_meta] = k;
        h->meta[2 * h->n_meta + 1] = v;
        h->n_meta++;
    }
    return 0;
}

static int parse_tensor(tvs_st_tensor *t, const char *name, size_t name_len, json_t *obj)
{
    if (!json_is_object(obj))
        return tvs__fail(TVS_ECORRUPT, "tensor \"%s\": entry is not a JSON object", name);
    t->name = tvs_malloc(name_len + 1);
    if (!t->name)
        return tvs__fail(TVS_ENOMEM, "out of memory for tensor names");
    memcpy(t->name, name, name_len + 1);
    t->name_len = name_len;

    json_t *dt = json_object_get(obj, "dtype");
    if (!json_is_string(dt))
        return tvs__fail(TVS_ECORRUPT, "tensor \"%s\": missing or non-string \"dtype\"", name);
    t->dtype = tvs_dtype_parse(json_string_value(dt), json_string_length(dt));
    if (!t->dtype)
        return tvs__fail(TVS_ECORRUPT, "tensor \"%s\": unknown dtype \"%s\"", name,
                         json_string_value(dt));

    json_t *shape = json_object_get(obj, "shape");
    if (!json_is_array(shape))
        return tvs__fail(TVS_ECORRUPT, "tensor \"%s\": missing or non-array \"shape\"", name);
    size_t rank = json_array_size(shape);
    if (rank > TVS_ST_MAX_RANK)
        return tvs__fail(TVS_ECORRUPT, "tensor \"%s\": rank %zu is over %d", name, rank,
                         TVS_ST_MAX_RANK);
    t->rank = (uint32_t)rank;
    t->shape = tvs_calloc(rank ? rank : 1, sizeof *t->shape);
    if (!t->shape)
        return tvs__fail(TVS_ENOMEM, "out of memory for shapes");
    uint64_t n = 1;
    for (size_t i = 0; i < rank; i++) {
        if (get_u64(&t->shape[i], json_array_get(shape, i)))
            return tvs__fail(TVS_ECORRUPT, "tensor \"%s\": shape[%zu] is not a "
                             "non-negative integer", name, i);
        if (t->shape[i] && n > UINT64_MAX / t->shape[i])
            return tvs__fail(TVS_ECORRUPT, "tensor \"%s\": element count overflows", name);
        n *= t->shape[i];
    }
    t->n_elems = n;

    json_t *off = json_object_get(obj, "data_offsets");
    if (!json_is_array(off) || json_array_size(off) != 2 ||
        get_u64(&t->begin, json_array_get(off, 0)) ||
        get_u64(&t->end, json_array_get(off, 1)))
        return tvs__fail(TVS_ECORRUPT, "tensor \"%s\": \"data_offsets\" is not a pair of "
                         "non-negative integers", name);
    if (t->begin > t->end)
        return tvs__fail(TVS_ECORRUPT, "tensor \"%s\": data_offsets [%llu, %llu] end "
                         "before they begin", name, (unsigned long long)t->begin,
                         (unsigned long long)t->end);
    uint64_t nbytes;
    if (tvs_dtype_nbytes(&nbytes, t->dtype, n))
        return tvs__failctx(TVS_ECORRUPT, "tensor \"%s\"", name);
    if (nbytes != t->end - t->begin)
        return tvs__fail(TVS_ECORRUPT, "tensor \"%s\": shape/offset mismatch: %llu "
                         "elements of %s need %llu bytes, data_offsets [%llu, %llu] hold %llu",
                         name, (unsigned long long)n, tvs_dtype_name(t->dtype),
                         (unsigned long long)nbytes, (unsigned long long)t->begin,
                         (unsigned long long)t->end,
                         (unsigned long long)(t->end - t->begin));
    return 0;
}

static int by_offset(const void *a, const void *b)
{
    const tvs_st_tensor *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* The data region must be covered exactly: sorted, contiguous, complete. */
static int check_coverage(const tvs_st_header *h)
{
    uint64_t pos = 0;
    const char *prev = NULL;
    for (size_t i = 0; i < h->n; i++) {
        const tvs_st_tensor *t = &h->tensors[i];
        if (t->begin < pos)
            return tvs__fail(TVS_ECORRUPT, "tensor \"%s\": data_offsets [%llu, %llu] "
                             "overlap tensor \"%s\" (which ends at %llu)", t->name,
                             (unsigned long long)t->begin, (unsigned long long)t->end,
                             prev, (unsigned long long)pos);
        if (t->begin > pos)
            return tvs__fail(TVS_ECORRUPT, "tensor \"%s\": data_offsets begin at %llu, "
                             "leaving a gap of %llu bytes after %s%s%s", t->name,
                             (unsigned long long)t->begin,
                             (unsigned long long)(t->begin - pos), prev ? "tensor \"" : "",
                             prev ? prev : "the header", prev ? "\"" : "");
        if (t->end > h->data_len)
            return tvs__fail(TVS_ECORRUPT, "tensor \"%s\": data_offsets end at %llu, past "
                             "the end of the data (%llu bytes; file truncated?)", t->name,
                             (unsigned long long)t->end, (unsigned long long)h->data_len);
        pos = t->end;
        prev = t->name;
    }
    if (pos != h->data_len)
        return tvs__fail(TVS_ECORRUPT, "%llu trailing bytes after the last tensor "
                         "(data region is %llu bytes, tensors cover %llu)",
                         (unsigned long long)(h->data_len - pos),
                         (unsigned long long)h->data_len, (unsigned long long)pos);
    return 0;
}

static int parse_root(tvs_st_header *h, json_t *root)
{
    size_t cap = json_object_size(root);
    h->tensors = tvs_calloc(cap ? cap : 1, sizeof *h->tensors);
    if (!h->tensors)
        return tvs__fail(TVS_ENOMEM, "out of memory for %zu tensors", cap);
    const char *key;
    size_t key_len;
    json_t *val;
    json_object_keylen_foreach(root, key, key_len, val) {
        if (memchr(key, 0, key_len))
            return tvs__fail(TVS_ECORRUPT, "a tensor name contains a NUL byte");
        if (strcmp(key, "__metadata__") == 0) {
            int rc = parse_meta(h, val);
            if (rc)
                return rc;
            continue;
        }
        tvs_st_tensor *t = &h->tensors[h->n++];
        int rc = parse_tensor(t, key, key_len, val);
        if (rc)
            return rc;
    }
    qsort(h->tensors, h->n, sizeof *h->tensors, by_offset);
    if (h->data_len == UINT64_MAX)
        h->data_len = h->n ? h->tensors[h->n - 1].end : 0;
    return check_coverage(h);
}

int tvs_st_header_parse(tvs_st_header *out, tvs_span json, uint64_t data_len)
{
    memset(out, 0, sizeof *out);
    out->header_len = json.len;
    out->data_len = data_len;
    if (json.len == 0 || json.ptr[0] != '{')
        return tvs__fail(TVS_ECORRUPT, "header at byte 8 is not a JSON object: it must "
                         "start with '{'");
    json_error_t err;
    json_t *root = json_loadb((const char *)json.ptr, json.len,
                              JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (!root) {
        if (strstr(err.text, "duplicate"))
            return tvs__fail(TVS_ECORRUPT, "header: duplicate tensor name (%s) at byte %d",
                             err.text, err.position + 8);
        return tvs__fail(TVS_ECORRUPT, "header is not valid JSON: %s at byte %d",
                         err.text, err.position + 8);
    }
    int rc = json_is_object(root) ? parse_root(out, root)
           : tvs__fail(TVS_ECORRUPT, "header is JSON but not an object");
    json_decref(root);
    if (rc)
        tvs_st_header_dispose(out);
    return rc;
}

int tvs_st_parse(tvs_st_header *out, tvs_span file)
{
    uint64_t n;
    memset(out, 0, sizeof *out);
    int rc = tvs_st_header_len(&n, file, file.len);
    if (rc)
        return rc;
    tvs_span json;
    if ((rc = tvs_span_sub(&json, file, 8, n)))
        return rc;
    return tvs_st_header_parse(out, json, file.len - 8 - n);
}

long tvs_st_find(const tvs_st_header *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->tensors[i].name, name) == 0)
            return (long)i;
    return -1;
}
