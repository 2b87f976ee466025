/*
 * Fuzz target: a whole safetensors file (prefix, JSON header, data region)
 * through tvs_st_parse.
 *
 * When the parser accepts a file, what it promises is checked too: tensors
 * in offset order, contiguous, covering the data region exactly, each one's
 * byte length equal to its dtype width times its element count, names
 * unique and NUL-free; and the same header parsed as the store does
 * (data_len = UINT64_MAX) is accepted with the same layout.
 */
#include "fuzz/fuzz.h"

#include <string.h>

#include "format/safetensors.h"

/* tvs_st_find is linear; looking every name up is quadratic. */
#define FIND_MAX 64

static void check_header(const tvs_st_header *h, size_t file_len)
{
    FUZZ_CHECK(h->header_len >= 2 && h->header_len <= TVS_ST_MAX_HEADER);
    FUZZ_CHECK(8 + h->header_len + h->data_len == file_len);
    FUZZ_CHECK(h->n == 0 || h->tensors);
    uint64_t pos = 0;
    for (size_t i = 0; i < h->n; i++) {
        const tvs_st_tensor *t = &h->tensors[i];
        FUZZ_CHECK(t->name && strlen(t->name) == t->name_len);
        FUZZ_CHECK(strcmp(t->name, "__metadata__") != 0);
        FUZZ_CHECK(tvs_dtype_bits(t->dtype) != 0);
        FUZZ_CHECK(t->rank <= TVS_ST_MAX_RANK && t->shape);
        uint64_t n = 1;
        for (uint32_t k = 0; k < t->rank; k++)
            n *= t->shape[k];   /* the parser rejected overflow */
        FUZZ_CHECK(n == t->n_elems);
        uint64_t nbytes;
        FUZZ_CHECK(tvs_dtype_nbytes(&nbytes, t->dtype, n) == 0);
        FUZZ_CHECK(t->begin == pos);             /* sorted, no gap, no overlap */
        FUZZ_CHECK(t->end - t->begin == nbytes);
        pos = t->end;
        if (h->n <= FIND_MAX)
            FUZZ_CHECK(tvs_st_find(h, t->name) == (long)i);
    }
    FUZZ_CHECK(pos == h->data_len);              /* covers the data region */
    FUZZ_CHECK(h->has_meta || h->n_meta == 0);
    for (size_t i = 0; i < 2 * h->n_meta; i++)
        FUZZ_CHECK(h->meta[i] != NULL);
}

/* The store keeps the header and parses it without the data region. */
static void check_store_parse(const tvs_st_header *h, const uint8_t *data)
{
    tvs_st_header g;
    tvs_span json = { data + 8, (size_t)h->header_len };
    FUZZ_CHECK(tvs_st_header_parse(&g, json, UINT64_MAX) == 0);
    FUZZ_CHECK(g.n == h->n && g.data_len == h->data_len && g.n_meta == h->n_meta);
    for (size_t i = 0; i < g.n; i++) {
        FUZZ_CHECK(strcmp(g.tensors[i].name, h->tensors[i].name) == 0);
        FUZZ_CHECK(g.tensors[i].begin == h->tensors[i].begin);
        FUZZ_CHECK(g.tensors[i].end == h->tensors[i].end);
    }
    tvs_st_header_dispose(&g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tvs_st_header h;
    int rc = tvs_st_parse(&h, (tvs_span){ data, size });
    if (rc == 0) {
        check_header(&h, size);
        check_store_parse(&h, data);
        tvs_st_header_dispose(&h);
    } else {
        FUZZ_CHECK(rc == TVS_ECORRUPT || rc == TVS_ENOMEM);
        /* On failure the header is left empty (safetensors.h). */
        FUZZ_CHECK(h.n == 0 && h.tensors == NULL && h.meta == NULL && h.n_meta == 0);
    }
    return 0;
}
