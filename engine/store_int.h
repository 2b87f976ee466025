/* Shared inside engine/ only: the store and transaction structs. */
#ifndef TVS_ENGINE_STORE_INT_H
#define TVS_ENGINE_STORE_INT_H

#include <lmdb.h>
#include <pthread.h>

#include "engine/store.h"

/* Internal: a write hit MDB_MAP_FULL; tvs_store_write() grows and retries. */
#define TVS__EMAPFULL (-100)

struct tvs_store {
    MDB_env *env;
    MDB_dbi meta, objects, refs, reflog, sums, lineage;
    char *path;
    int lockfd;
    int readonly;
    pthread_rwlock_t txn_lock;   /* shared by every txn; exclusive to resize */
};

struct tvs_txn {
    tvs_store *s;
    MDB_txn *txn;
    int write;
};

int tvs__mdb_fail(int mrc, const char *what);
/** Force data and meta pages to disk (after publishing a ref). */
int tvs__store_sync(tvs_store *s);

/** Author of a new model: @p given, else $USER, else the login name. */
const char *tvs__author(const char *given);

#endif
