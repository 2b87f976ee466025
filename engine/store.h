/**
 * @file engine/store.h
 * @brief The store: an LMDB environment holding content-addressed objects,
 *        refs and their reflog.
 *
 * A store is a directory `.tvs/` (inside the folder given to tvs_store_init)
 * holding LMDB's data.mdb and lock.mdb plus `gc.lock`. Named databases:
 * `meta` (format version), `objects` (id -> object bytes), `refs` (name ->
 * model id), `reflog` (name, seq -> old, new, time, message). SPEC.md gives
 * every key and value layout.
 *
 * Threading: one tvs_store per process, shared by its threads. A
 * transaction belongs to one thread at a time, but spans read through it
 * point into the memory map and may be read from any thread until the
 * transaction ends. Readers never block the writer (LMDB MVCC); writers
 * from all processes are serialized by LMDB.
 *
 * The map grows by itself: writers check the room left before each write
 * transaction and double the map when it runs short, and a write that still
 * hits MDB_MAP_FULL is retried after growing (tvs_store_write()).
 */
#ifndef TVS_ENGINE_STORE_H
#define TVS_ENGINE_STORE_H

#include "format/base.h"
#include "format/object.h"

#define TVS_FORMAT_VERSION 1
#define TVS_STORE_DIR ".tvs"
#define TVS_REF_MAX 255

typedef struct tvs_store tvs_store;
typedef struct tvs_txn tvs_txn;

typedef struct {
    size_t map_size;   /**< initial map size; 0 = default (or $TVS_MAP_SIZE) */
    int readonly;      /**< open read-only */
} tvs_store_opts;

#define TVS_STORE_OPTS_INIT { 0, 0 }

/**
 * Create a store in @p dir (created if missing): `dir/.tvs/`.
 * @return 0, TVS_EEXISTS if a store is already there, TVS_EIO.
 */
int tvs_store_init(const char *dir);

/**
 * Find the store to use: @p given (a store folder or its parent) if not
 * NULL, else $TVS_STORE, else the current folder and its parents.
 * @param[out] out  malloc'd path of the `.tvs` folder; free with tvs_free
 * @return 0, or TVS_ENOTFOUND with a message naming where it looked
 */
int tvs_store_find(char **out, const char *given);

/**
 * Open the store at @p path (a `.tvs` folder, or the folder holding one).
 * @return 0, TVS_ENOTFOUND if @p path is not a store, TVS_ECORRUPT if its
 *         format version is unknown, TVS_EIO.
 */
int tvs_store_open(tvs_store **out, const char *path, const tvs_store_opts *opts);
void tvs_store_close(tvs_store *s);
/** The `.tvs` folder of an open store. */
const char *tvs_store_path(const tvs_store *s);

enum { TVS_TXN_READ = 0, TVS_TXN_WRITE = 1 };

/**
 * Begin a transaction. A write transaction first makes sure the map has
 * at least @p room bytes free (tvs_txn_begin_room), growing it if needed.
 */
int tvs_txn_begin(tvs_txn **out, tvs_store *s, uint32_t flags);
int tvs_txn_begin_room(tvs_txn **out, tvs_store *s, size_t room);
/** Commit and free @p txn (freed even on failure). */
int tvs_txn_commit(tvs_txn *txn);
/** Abort (if still open) and free; NULL is a no-op. */
void tvs_txn_end(tvs_txn *txn);
tvs_store *tvs_txn_store(tvs_txn *txn);

/**
 * Run @p fn in a write transaction and commit it. If the map fills up,
 * the transaction is aborted, the map grown and @p fn run again, so @p fn
 * must do nothing outside the transaction that cannot be repeated.
 */
int tvs_store_write(tvs_store *s, size_t room, int (*fn)(tvs_txn *txn, void *payload),
                    void *payload);

/* ---- objects */

/**
 * Read object @p id. The span points into the map: valid until @p txn ends.
 * @return 0 or TVS_ENOTFOUND
 */
int tvs_obj_get(tvs_span *out, tvs_txn *txn, const tvs_id *id);
int tvs_obj_has(tvs_txn *txn, const tvs_id *id);
/**
 * Store @p bytes under @p id (= XXH3-128 of @p bytes, computed by the
 * caller). If @p id is present its bytes are compared.
 * @param[out] existed  optional: 1 if it was already stored
 * @return 0, TVS_ECOLLIDE if the stored bytes differ, TVS_EIO
 */
int tvs_obj_put(tvs_txn *txn, const tvs_id *id, tvs_span bytes, int *existed);
/** Hash @p bytes and store them; the id comes back in @p out. */
int tvs_obj_put_new(tvs_id *out, tvs_txn *txn, tvs_span bytes);
int tvs_obj_del(tvs_txn *txn, const tvs_id *id);
/** Visit every object (id, bytes); stop at the first non-zero return. */
int tvs_obj_foreach(tvs_txn *txn, int (*cb)(const tvs_id *id, tvs_span bytes, void *p),
                    void *payload);
/**
 * Find the one object of @p type whose hex id starts with @p prefix (at
 * least 4 hex digits).
 * @return 0, TVS_ENOTFOUND, or TVS_EINVAL if the prefix is ambiguous
 */
int tvs_obj_find_prefix(tvs_id *out, tvs_txn *txn, const char *prefix, int type);

/* ---- refs */

/** Is @p name a valid ref name (SPEC.md, "Refs")? TVS_EINVAL says why not. */
int tvs_ref_check_name(const char *name);
/** @return 0 or TVS_ENOTFOUND */
int tvs_ref_get(tvs_id *out, tvs_txn *txn, const char *name);
/**
 * Point @p name at @p id and append a reflog entry.
 * @param[in] expect  if not NULL, the id the ref must hold now (zero id =
 *                    must not exist); else TVS_EEXISTS / TVS_ENOTFOUND
 */
int tvs_ref_set(tvs_txn *txn, const char *name, const tvs_id *id, const tvs_id *expect,
                const char *message);
/** Delete @p name and its reflog. @return 0 or TVS_ENOTFOUND */
int tvs_ref_del(tvs_txn *txn, const char *name);
/** Visit refs in name order (only those starting with @p prefix if not NULL). */
int tvs_ref_foreach(tvs_txn *txn, const char *prefix,
                    int (*cb)(const char *name, const tvs_id *id, void *p), void *payload);

typedef struct {
    uint64_t seq;
    tvs_id old_id, new_id;
    int64_t time;
    tvs_span message;   /**< borrowed from the map */
} tvs_reflog_entry;

/** Visit the reflog of @p name, newest first. */
int tvs_reflog_foreach(tvs_txn *txn, const char *name,
                       int (*cb)(const tvs_reflog_entry *e, void *p), void *payload);

/**
 * Resolve what a user typed: a ref name, `NAME@<id prefix>` (a model in
 * the history of NAME), or a model id (prefix).
 * @return 0, or TVS_ENOTFOUND naming what was looked up
 */
int tvs_resolve(tvs_id *out, tvs_txn *txn, const char *spec);

/* ---- indexes */

/**
 * The checksum index: decoded-bytes checksum -> a tensor holding those
 * bytes, so an import can reuse a stored tensor without encoding it again.
 * @return 0 or TVS_ENOTFOUND
 */
int tvs_sums_get(tvs_id *tensor, tvs_txn *txn, const tvs_id *checksum);
/** Record @p tensor for @p checksum unless one is recorded already. */
int tvs_sums_put(tvs_txn *txn, const tvs_id *checksum, const tvs_id *tensor);
/** Drop the entry for @p checksum if it names @p tensor. */
int tvs_sums_del(tvs_txn *txn, const tvs_id *checksum, const tvs_id *tensor);

/* The lineage index: (from, relation, to) triples over model ids, so that
 * "all deltas of base X" or "all children of X" is one range scan. */
enum {
    TVS_REL_DELTA = 1,    /**< `to` is a delta model whose base is `from` */
    TVS_REL_PARENT = 2,   /**< `from` is a parent of `to` (history, lineage) */
};

int tvs_lineage_add(tvs_txn *txn, const tvs_id *from, int rel, const tvs_id *to);
int tvs_lineage_del(tvs_txn *txn, const tvs_id *from, int rel, const tvs_id *to);
/**
 * Visit entries whose `from` is @p from (every entry if NULL), optionally
 * only relation @p rel (0 = any).
 */
int tvs_lineage_foreach(tvs_txn *txn, const tvs_id *from, int rel,
                        int (*cb)(const tvs_id *from, int rel, const tvs_id *to, void *p),
                        void *payload);

/**
 * Make sure the map has @p room free bytes now (grows it if not). Call it
 * before taking a long read transaction that write transactions of the
 * same process will run under.
 */
int tvs_store_reserve(tvs_store *s, size_t room);

/* ---- whole-store locks: an import holds it shared, gc exclusively */

int tvs_store_lock(tvs_store *s, int exclusive, int wait);
void tvs_store_unlock(tvs_store *s);

/* ---- reading models and tensors */

/** Read and decode model @p id (borrowing from @p txn). */
int tvs_model_load(tvs_model_obj *out, tvs_txn *txn, const tvs_id *id);
int tvs_tensor_load(tvs_tensor_obj *out, tvs_txn *txn, const tvs_id *id);

#endif
