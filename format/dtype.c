/* Element type table: one row per safetensors dtype (format/dtype.h). */
#include "format/dtype.h"

#include <string.h>

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
