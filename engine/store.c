/*
 * The LMDB environment, transactions, map growth, objects and discovery.
 *
 * The environment is opened with MDB_NOTLS (read transactions are not tied
 * to threads) and MDB_NOMETASYNC (a commit syncs its data pages but not the
 * meta page; tvs__store_sync() forces both after a ref is published, so a
 * published ref never points at data that is not on disk).
 *
 * mdb_env_set_mapsize() needs every transaction of this process to be
 * closed, so each transaction holds `txn_lock` shared and growing the map
 * takes it exclusively.
 */
#include "engine/store_int.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define DEFAULT_MAP (1ull << 30)
#define ROOM_MARGIN (16u << 20)

int tvs__mdb_fail(int mrc, const char *what)
{
    if (mrc == MDB_MAP_FULL)
        return tvs__fail(TVS__EMAPFULL, "%s: store map is full", what);
    if (mrc == MDB_NOTFOUND)
        return tvs__fail(TVS_ENOTFOUND, "%s: not found", what);
    if (mrc == MDB_CORRUPTED || mrc == MDB_PAGE_NOTFOUND || mrc == MDB_INVALID)
        return tvs__fail(TVS_ECORRUPT, "%s: LMDB: %s", what, mdb_strerror(mrc));
    if (mrc == MDB_READERS_FULL)
        return tvs__fail(TVS_EBUSY, "%s: LMDB: %s", what, mdb_strerror(mrc));
    return tvs__fail(TVS_EIO, "%s: LMDB: %s", what, mdb_strerror(mrc));
}

/* ---- discovery */

static int is_file(const char *dir, const char *name)
{
    char p[4096];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* If @p dir is a store or holds one, the malloc'd path of the .tvs folder. */
static char *store_at(const char *dir)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/" TVS_STORE_DIR, dir);
    if (is_file(p, "data.mdb"))
        return tvs_strdup(p);
    if (is_file(dir, "data.mdb") && is_file(dir, "gc.lock"))
        return tvs_strdup(dir);
    return NULL;
}

int tvs_store_find(char **out, const char *given)
{
    *out = NULL;
    if (!given || !*given)
        given = getenv("TVS_STORE");
    if (given && *given) {
        if (!(*out = store_at(given)))
            return tvs__fail(TVS_ENOTFOUND, "not a tvstore store: %s (no %s/data.mdb); "
                             "create one with 'tvs init %s'", given, TVS_STORE_DIR, given);
        return 0;
    }
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd))
        return tvs__fail(TVS_EIO, "cannot read the current folder: %s", strerror(errno));
    for (;;) {
        if ((*out = store_at(cwd)))
            return 0;
        char *slash = strrchr(cwd, '/');
        if (!slash || slash == cwd) {
            if ((*out = store_at("/")))
                return 0;
            break;
        }
        *slash = 0;
    }
    return tvs__fail(TVS_ENOTFOUND, "not in a tvstore store (no %s in this folder or any "
                     "parent); use --store DIR, set TVS_STORE, or run 'tvs init'",
                     TVS_STORE_DIR);
}

/* ---- open / init */

static size_t initial_map(const tvs_store_opts *o)
{
    if (o && o->map_size)
        return o->map_size;
    const char *e = getenv("TVS_MAP_SIZE");
    if (e && *e) {
        unsigned long long v = strtoull(e, NULL, 0);
        if (v >= (1u << 20))
            return (size_t)v;
    }
    return DEFAULT_MAP;
}

static int open_dbs(tvs_store *s, int create)
{
    MDB_txn *txn;
    int mrc = mdb_txn_begin(s->env, NULL, create ? 0 : MDB_RDONLY, &txn);
    if (mrc)
        return tvs__mdb_fail(mrc, "opening the store");
    unsigned f = create ? MDB_CREATE : 0;
    const char *names[] = { "meta", "objects", "refs", "reflog", "sums", "lineage" };
    MDB_dbi *dbis[] = { &s->meta, &s->objects, &s->refs, &s->reflog, &s->sums, &s->lineage };
    for (int i = 0; i < 6; i++) {
        if ((mrc = mdb_dbi_open(txn, names[i], f, dbis[i]))) {
            mdb_txn_abort(txn);
            if (mrc == MDB_NOTFOUND)
                return tvs__fail(TVS_ENOTFOUND, "not a tvstore store: %s (no '%s' database)",
                                 s->path, names[i]);
            return tvs__mdb_fail(mrc, "opening the store");
        }
    }
    MDB_val k = { 6, "format" }, v;
    if (create) {
        uint8_t ver[4];
        tvs_store_le32(ver, TVS_FORMAT_VERSION);
        v.mv_size = 4;
        v.mv_data = ver;
        if ((mrc = mdb_put(txn, s->meta, &k, &v, 0)) || (mrc = mdb_txn_commit(txn)))
            return tvs__mdb_fail(mrc, "creating the store");
        return 0;
    }
    mrc = mdb_get(txn, s->meta, &k, &v);
    uint32_t ver = (!mrc && v.mv_size == 4) ? tvs_load_le32(v.mv_data) : 0;
    /* commit, not abort: an aborted transaction closes the handles it opened */
    if ((mrc = mdb_txn_commit(txn)))
        return tvs__mdb_fail(mrc, "opening the store");
    if (ver != TVS_FORMAT_VERSION)
        return tvs__fail(TVS_ECORRUPT, "store %s has format version %u; this tvs reads "
                         "version %u", s->path, ver, TVS_FORMAT_VERSION);
    return 0;
}

static int env_open(tvs_store **out, const char *path, const tvs_store_opts *o, int create)
{
    *out = NULL;
    tvs_store *s = tvs_calloc(1, sizeof *s);
    if (!s)
        return tvs__fail(TVS_ENOMEM, "out of memory opening a store");
    s->lockfd = -1;
    s->readonly = o && o->readonly;
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&s->txn_lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    int rc = 0, mrc;
    if (!(s->path = tvs_strdup(path))) {
        rc = tvs__fail(TVS_ENOMEM, "out of memory opening a store");
        goto out;
    }
    if ((mrc = mdb_env_create(&s->env)) || (mrc = mdb_env_set_maxdbs(s->env, 16)) ||
        (mrc = mdb_env_set_maxreaders(s->env, 512)) ||
        (mrc = mdb_env_set_mapsize(s->env, initial_map(o)))) {
        rc = tvs__mdb_fail(mrc, path);
        goto out;
    }
    unsigned flags = MDB_NOTLS | MDB_NOMETASYNC | MDB_WRITEMAP | (s->readonly ? MDB_RDONLY : 0);
    if ((mrc = mdb_env_open(s->env, path, flags, 0644))) {
        rc = mrc == ENOENT ? tvs__fail(TVS_ENOTFOUND, "not a tvstore store: %s", path)
                           : tvs__mdb_fail(mrc, path);
        goto out;
    }
    if ((rc = open_dbs(s, create)))
        goto out;
    char lp[4096];
    snprintf(lp, sizeof lp, "%s/gc.lock", path);
    s->lockfd = open(lp, (s->readonly ? O_RDONLY : O_RDWR | O_CREAT) | O_CLOEXEC, 0644);
out:
    if (rc)
        tvs_store_close(s);
    else
        *out = s;
    return rc;
}

int tvs_store_init(const char *dir)
{
    char p[4096];
    if (mkdir(dir, 0755) && errno != EEXIST)
        return tvs__fail(TVS_EIO, "cannot create %s: %s", dir, strerror(errno));
    snprintf(p, sizeof p, "%s/" TVS_STORE_DIR, dir);
    if (is_file(p, "data.mdb"))
        return tvs__fail(TVS_EEXISTS, "a store already exists in %s", dir);
    if (mkdir(p, 0755) && errno != EEXIST)
        return tvs__fail(TVS_EIO, "cannot create %s: %s", p, strerror(errno));
    tvs_store *s;
    int rc = env_open(&s, p, NULL, 1);
    tvs_store_close(s);
    return rc;
}

int tvs_store_open(tvs_store **out, const char *path, const tvs_store_opts *opts)
{
    *out = NULL;
    char *p = store_at(path);
    if (!p)
        return tvs__fail(TVS_ENOTFOUND, "not a tvstore store: %s (no %s/data.mdb)", path,
                         TVS_STORE_DIR);
    int rc = env_open(out, p, opts, 0);
    tvs_free(p);
    return rc;
}

void tvs_store_close(tvs_store *s)
{
    if (!s)
        return;
    if (s->env)
        mdb_env_close(s->env);
    if (s->lockfd >= 0)
        close(s->lockfd);
    pthread_rwlock_destroy(&s->txn_lock);
    tvs_free(s->path);
    tvs_free(s);
}

const char *tvs_store_path(const tvs_store *s) { return s->path; }

/* ---- map growth */

static int grow(tvs_store *s, size_t room);

static size_t room_left(tvs_store *s, size_t *map_out)
{
    MDB_envinfo info;
    MDB_stat st;
    mdb_env_info(s->env, &info);
    mdb_env_stat(s->env, &st);
    size_t used = (info.me_last_pgno + 1) * (size_t)st.ms_psize;
    *map_out = info.me_mapsize;
    return info.me_mapsize > used ? info.me_mapsize - used : 0;
}

/* Grow the map so that at least @p room bytes are free. Takes txn_lock. */
static int lock_for_resize(tvs_store *s)
{
    /* Resizing remaps: it must not happen under a live transaction of this
     * process (its spans would dangle), and waiting for one could deadlock
     * a thread that holds one itself. */
    for (int i = 0; i < 200; i++) {
        if (pthread_rwlock_trywrlock(&s->txn_lock) == 0)
            return 0;
        usleep(5000);
    }
    return tvs__fail(TVS_EBUSY, "the store map must grow, but this process holds a read "
                     "transaction; retry the command");
}

int tvs_store_reserve(tvs_store *s, size_t room)
{
    size_t map;
    if (room_left(s, &map) >= room + ROOM_MARGIN)
        return 0;
    return grow(s, room);
}

static int grow(tvs_store *s, size_t room)
{
    int lrc = lock_for_resize(s);
    if (lrc)
        return lrc;
    size_t map, left = room_left(s, &map);
    int mrc = 0;
    if (left < room + ROOM_MARGIN) {
        size_t want = map * 2;
        if (want - map < room + ROOM_MARGIN)
            want = map + 2 * (room + ROOM_MARGIN);
        want = (want + (1u << 20) - 1) & ~(size_t)((1u << 20) - 1);
        mrc = mdb_env_set_mapsize(s->env, want);
    }
    pthread_rwlock_unlock(&s->txn_lock);
    return mrc ? tvs__mdb_fail(mrc, "growing the store map") : 0;
}

static int adopt_resize(tvs_store *s)
{
    int lrc = lock_for_resize(s);
    if (lrc)
        return lrc;
    int mrc = mdb_env_set_mapsize(s->env, 0);
    pthread_rwlock_unlock(&s->txn_lock);
    return mrc ? tvs__mdb_fail(mrc, "adopting the store's new map size") : 0;
}

/* ---- transactions */

static int txn_begin(tvs_txn **out, tvs_store *s, uint32_t flags, size_t room)
{
    *out = NULL;
    int write = flags & TVS_TXN_WRITE;
    if (write && s->readonly)
        return tvs__fail(TVS_EINVAL, "store %s is open read-only", s->path);
    tvs_txn *t = tvs_calloc(1, sizeof *t);
    if (!t)
        return tvs__fail(TVS_ENOMEM, "out of memory for a transaction");
    t->s = s;
    t->write = write;
    for (int tries = 0;; tries++) {
        pthread_rwlock_rdlock(&s->txn_lock);
        int mrc = mdb_txn_begin(s->env, NULL, write ? 0 : MDB_RDONLY, &t->txn);
        if (mrc == 0 && write && room) {
            size_t map;
            if (room_left(s, &map) < room + ROOM_MARGIN) {
                mdb_txn_abort(t->txn);
                pthread_rwlock_unlock(&s->txn_lock);
                int rc = tries < 8 ? grow(s, room) : tvs__fail(TVS_EIO, "cannot grow map");
                if (rc) {
                    tvs_free(t);
                    return rc;
                }
                continue;
            }
        }
        if (mrc == 0)
            break;
        pthread_rwlock_unlock(&s->txn_lock);
        int rc = (mrc == MDB_MAP_RESIZED && tries < 8) ? adopt_resize(s)
                                                       : tvs__mdb_fail(mrc, "begin transaction");
        if (rc) {
            tvs_free(t);
            return rc;
        }
    }
    *out = t;
    return 0;
}

int tvs_txn_begin(tvs_txn **out, tvs_store *s, uint32_t flags)
{
    return txn_begin(out, s, flags, (flags & TVS_TXN_WRITE) ? (1u << 20) : 0);
}

int tvs_txn_begin_room(tvs_txn **out, tvs_store *s, size_t room)
{
    return txn_begin(out, s, TVS_TXN_WRITE, room);
}

int tvs_txn_commit(tvs_txn *t)
{
    int mrc = mdb_txn_commit(t->txn);
    t->txn = NULL;
    tvs_txn_end(t);
    return mrc ? tvs__mdb_fail(mrc, "commit") : 0;
}

void tvs_txn_end(tvs_txn *t)
{
    if (!t)
        return;
    if (t->txn)
        mdb_txn_abort(t->txn);
    pthread_rwlock_unlock(&t->s->txn_lock);
    tvs_free(t);
}

tvs_store *tvs_txn_store(tvs_txn *t) { return t->s; }

int tvs_store_write(tvs_store *s, size_t room, int (*fn)(tvs_txn *, void *), void *payload)
{
    for (int tries = 0;; tries++) {
        tvs_txn *t;
        int rc = tvs_txn_begin_room(&t, s, room);
        if (rc)
            return rc;
        rc = fn(t, payload);
        if (rc) {
            tvs_txn_end(t);
        } else {
            rc = tvs_txn_commit(t);
            if (!rc)
                return tvs__store_sync(s);
        }
        if (rc != TVS__EMAPFULL || tries >= 8)
            return rc == TVS__EMAPFULL ? tvs__fail(TVS_EIO, "store map still full after "
                                                   "growing %d times", tries)
                                       : rc;
        size_t map;
        room_left(s, &map);
        if ((rc = grow(s, TVS_MAX(room, map))))
            return rc;
    }
}

int tvs__store_sync(tvs_store *s)
{
    int mrc = mdb_env_sync(s->env, 1);
    return mrc ? tvs__mdb_fail(mrc, "sync") : 0;
}

/* ---- objects */

int tvs_obj_get(tvs_span *out, tvs_txn *t, const tvs_id *id)
{
    MDB_val k = { TVS_ID_LEN, (void *)id->b }, v;
    int mrc = mdb_get(t->txn, t->s->objects, &k, &v);
    if (mrc == MDB_NOTFOUND) {
        char hex[TVS_ID_HEX + 1];
        tvs_id_hex(hex, id);
        return tvs__fail(TVS_ENOTFOUND, "object %s is not in the store", hex);
    }
    if (mrc)
        return tvs__mdb_fail(mrc, "reading an object");
    out->ptr = v.mv_data;
    out->len = v.mv_size;
    return 0;
}

int tvs_obj_has(tvs_txn *t, const tvs_id *id)
{
    MDB_val k = { TVS_ID_LEN, (void *)id->b }, v;
    return mdb_get(t->txn, t->s->objects, &k, &v) == 0;
}

int tvs_obj_put(tvs_txn *t, const tvs_id *id, tvs_span bytes, int *existed)
{
    MDB_val k = { TVS_ID_LEN, (void *)id->b }, v = { bytes.len, (void *)bytes.ptr };
    int mrc = mdb_put(t->txn, t->s->objects, &k, &v, MDB_NOOVERWRITE);
    if (existed)
        *existed = mrc == MDB_KEYEXIST;
    if (mrc == MDB_KEYEXIST) {
        if (v.mv_size == bytes.len && memcmp(v.mv_data, bytes.ptr, bytes.len) == 0)
            return 0;
        char hex[TVS_ID_HEX + 1];
        tvs_id_hex(hex, id);
        return tvs__fail(TVS_ECOLLIDE, "hash collision: object %s is already stored with "
                         "different bytes (%zu stored, %zu new); nothing was overwritten",
                         hex, v.mv_size, bytes.len);
    }
    return mrc ? tvs__mdb_fail(mrc, "writing an object") : 0;
}

int tvs_obj_put_new(tvs_id *out, tvs_txn *t, tvs_span bytes)
{
    tvs_id_of(out, bytes.ptr, bytes.len);
    return tvs_obj_put(t, out, bytes, NULL);
}

int tvs_obj_del(tvs_txn *t, const tvs_id *id)
{
    MDB_val k = { TVS_ID_LEN, (void *)id->b };
    int mrc = mdb_del(t->txn, t->s->objects, &k, NULL);
    return mrc ? tvs__mdb_fail(mrc, "deleting an object") : 0;
}

int tvs_obj_foreach(tvs_txn *t, int (*cb)(const tvs_id *, tvs_span, void *), void *payload)
{
    MDB_cursor *c;
    MDB_val k, v;
    int mrc = mdb_cursor_open(t->txn, t->s->objects, &c), rc = 0;
    if (mrc)
        return tvs__mdb_fail(mrc, "listing objects");
    for (mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST); !mrc && !rc;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        tvs_id id = { { 0 } };
        if (k.mv_size != TVS_ID_LEN) {
            rc = tvs__fail(TVS_ECORRUPT, "objects database holds a key of %zu bytes",
                           k.mv_size);
            break;
        }
        memcpy(id.b, k.mv_data, TVS_ID_LEN);
        rc = cb(&id, (tvs_span){ v.mv_data, v.mv_size }, payload);
    }
    mdb_cursor_close(c);
    if (!rc && mrc != MDB_NOTFOUND)
        rc = tvs__mdb_fail(mrc, "listing objects");
    return rc;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int tvs_obj_find_prefix(tvs_id *out, tvs_txn *t, const char *prefix, int type)
{
    size_t n = strlen(prefix);
    if (n < 4 || n > TVS_ID_HEX)
        return tvs__fail(TVS_EINVAL, "id prefix '%s' must be 4 to 32 hex digits", prefix);
    uint8_t lo[TVS_ID_LEN] = { 0 };
    for (size_t i = 0; i < n; i++) {
        int h = hexval(prefix[i]);
        if (h < 0)
            return tvs__fail(TVS_EINVAL, "id prefix '%s' is not hexadecimal", prefix);
        lo[i / 2] |= (uint8_t)(i % 2 ? h : h << 4);
    }
    MDB_cursor *c;
    MDB_val k = { TVS_ID_LEN, lo }, v;
    int mrc = mdb_cursor_open(t->txn, t->s->objects, &c), found = 0;
    if (mrc)
        return tvs__mdb_fail(mrc, "looking up an id");
    for (mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); !mrc;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        char hex[TVS_ID_HEX + 1];
        tvs_id id;
        memcpy(id.b, k.mv_data, TVS_ID_LEN);
        tvs_id_hex(hex, &id);
        if (strncasecmp(hex, prefix, n) != 0)
            break;
        if (v.mv_size && ((const uint8_t *)v.mv_data)[0] == type) {
            if (found++) {
                mdb_cursor_close(c);
                return tvs__fail(TVS_EINVAL, "id prefix '%s' is ambiguous", prefix);
            }
            *out = id;
        }
    }
    mdb_cursor_close(c);
    if (!found)
        return tvs__fail(TVS_ENOTFOUND, "no %s with id starting '%s'",
                         tvs_object_type_name(type), prefix);
    return 0;
}

/* ---- whole-store lock */

int tvs_store_lock(tvs_store *s, int exclusive, int wait)
{
    if (s->lockfd < 0)
        return 0;
    int op = (exclusive ? LOCK_EX : LOCK_SH) | (wait ? 0 : LOCK_NB);
    while (flock(s->lockfd, op)) {
        if (errno == EINTR)
            continue;
        if (errno == EWOULDBLOCK)
            return tvs__fail(TVS_EBUSY, exclusive ? "another tvs process is writing to the "
                             "store (import in progress); try again when it finishes"
                             : "garbage collection is running; try again when it finishes");
        return tvs__fail(TVS_EIO, "locking the store: %s", strerror(errno));
    }
    return 0;
}

void tvs_store_unlock(tvs_store *s)
{
    if (s->lockfd >= 0)
        flock(s->lockfd, LOCK_UN);
}

/* ---- models and tensors */

int tvs_model_load(tvs_model_obj *out, tvs_txn *t, const tvs_id *id)
{
    tvs_span b;
    int rc = tvs_obj_get(&b, t, id);
    if (!rc && (rc = tvs_model_decode(out, b))) {
        char hex[TVS_ID_HEX + 1];
        tvs_id_hex(hex, id);
        tvs__failctx(rc, "model %s", hex);
    }
    return rc;
}

int tvs_tensor_load(tvs_tensor_obj *out, tvs_txn *t, const tvs_id *id)
{
    tvs_span b;
    int rc = tvs_obj_get(&b, t, id);
    if (!rc && (rc = tvs_tensor_decode(out, b))) {
        char hex[TVS_ID_HEX + 1];
        tvs_id_hex(hex, id);
        tvs__failctx(rc, "tensor %s", hex);
    }
    return rc;
}
