/* A set of ids (open addressing), for graph walks in gc, fsck and stats. */
#ifndef TVS_ENGINE_IDSET_H
#define TVS_ENGINE_IDSET_H

#include "format/base.h"

typedef struct {
    tvs_id *slots;
    uint8_t *used;
    size_t n, cap;
} tvs__idset;

/** Add @p id. @return 1 if added, 0 if already there, TVS_ENOMEM. */
int tvs__idset_add(tvs__idset *s, const tvs_id *id);
int tvs__idset_has(const tvs__idset *s, const tvs_id *id);
void tvs__idset_dispose(tvs__idset *s);

#endif
