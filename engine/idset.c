/* Id set (engine/idset.h). Ids are hashes already: their first 8 bytes
 * index the table directly. */
#include "engine/idset.h"

static size_t slot_of(const tvs_id *id, size_t cap)
{
    return (size_t)tvs_load_le64(id->b) & (cap - 1);
}

static int grow(tvs__idset *s)
{
    size_t cap = s->cap ? 2 * s->cap : 1024;
    tvs_id *slots = tvs_malloc(cap * sizeof *slots);
    uint8_t *used = tvs_calloc(cap, 1);
    if (!slots || !used) {
        tvs_free(slots);
        tvs_free(used);
        return tvs__fail(TVS_ENOMEM, "out of memory for a set of %zu ids", cap);
    }
    for (size_t i = 0; i < s->cap; i++) {
        if (!s->used[i])
            continue;
        size_t j = slot_of(&s->slots[i], cap);
        while (used[j])
            j = (j + 1) & (cap - 1);
        used[j] = 1;
        slots[j] = s->slots[i];
    }
    tvs_free(s->slots);
    tvs_free(s->used);
    s->slots = slots;
    s->used = used;
    s->cap = cap;
    return 0;
}

int tvs__idset_add(tvs__idset *s, const tvs_id *id)
{
    if (2 * (s->n + 1) > s->cap) {
        int rc = grow(s);
        if (rc)
            return rc;
    }
    size_t j = slot_of(id, s->cap);
    while (s->used[j]) {
        if (tvs_id_eq(&s->slots[j], id))
            return 0;
        j = (j + 1) & (s->cap - 1);
    }
    s->used[j] = 1;
    s->slots[j] = *id;
    s->n++;
    return 1;
}

int tvs__idset_has(const tvs__idset *s, const tvs_id *id)
{
    if (!s->cap)
        return 0;
    size_t j = slot_of(id, s->cap);
    while (s->used[j]) {
        if (tvs_id_eq(&s->slots[j], id))
            return 1;
        j = (j + 1) & (s->cap - 1);
    }
    return 0;
}

void tvs__idset_dispose(tvs__idset *s)
{
    tvs_free(s->slots);
    tvs_free(s->used);
    s->slots = NULL;
    s->used = NULL;
    s->n = s->cap = 0;
}
