/*
 * Refs and the reflog.
 *
 * refs:   key = name bytes (no NUL)            value = model id (16)
 * reflog: key = name, 0x00, u64 BE sequence    value = old id (16), new id
 *         (16), i64 LE time, message bytes
 * Big-endian sequence numbers make a cursor walk them in order.
 */
#include "engine/store_int.h"

#include <stdio.h>
#include <time.h>

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.' || c == '/';
}

int tvs_ref_check_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > TVS_REF_MAX)
        return tvs__fail(TVS_EINVAL, "ref name '%s' must be 1 to %d bytes", name, TVS_REF_MAX);
    if (!((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= 'A' && name[0] <= 'Z')))
        return tvs__fail(TVS_EINVAL, "ref name '%s' must start with a letter", name);
    for (size_t i = 0; i < n; i++) {
        if (!name_char(name[i]))
            return tvs__fail(TVS_EINVAL, "ref name '%s': character '%c' is not allowed "
                             "(use letters, digits, '-', '_', '.', '/')", name, name[i]);
        if (name[i] == '/' && (i + 1 == n || name[i + 1] == '/' || name[i + 1] == '.'))
            return tvs__fail(TVS_EINVAL, "ref name '%s': each part after '/' must be "
                             "non-empty and not start with '.'", name);
    }
    return 0;
}

/* No ref can have this name: LMDB would refuse the key, and reflog keys
 * have room for TVS_REF_MAX bytes of name. */
static int impossible_name(const char *name)
{
    size_t n = strlen(name);
    return n == 0 || n > TVS_REF_MAX;
}

int tvs_ref_get(tvs_id *out, tvs_txn *t, const char *name)
{
    if (impossible_name(name))
        return tvs__fail(TVS_ENOTFOUND, "no ref named '%s'", name);
    MDB_val k = { strlen(name), (void *)name }, v;
    int mrc = mdb_get(t->txn, t->s->refs, &k, &v);
    if (mrc == MDB_NOTFOUND)
        return tvs__fail(TVS_ENOTFOUND, "no ref named '%s'", name);
    if (mrc)
        return tvs__mdb_fail(mrc, "reading a ref");
    if (v.mv_size != TVS_ID_LEN)
        return tvs__fail(TVS_ECORRUPT, "ref '%s' holds %zu bytes, not an id", name, v.mv_size);
    memcpy(out->b, v.mv_data, TVS_ID_LEN);
    return 0;
}

static void reflog_key(uint8_t *key, size_t *len, const char *name, uint64_t seq)
{
    size_t n = strlen(name);
    memcpy(key, name, n);
    key[n] = 0;
    for (int i = 0; i < 8; i++)
        key[n + 1 + i] = (uint8_t)(seq >> (56 - 8 * i));
    *len = n + 9;
}

/* Highest sequence number in the reflog of @p name, 0 if none. */
static int last_seq(uint64_t *out, tvs_txn *t, const char *name)
{
    uint8_t key[TVS_REF_MAX + 9];
    size_t klen;
    reflog_key(key, &klen, name, UINT64_MAX);
    MDB_cursor *c;
    MDB_val k = { klen, key }, v;
    int mrc = mdb_cursor_open(t->txn, t->s->reflog, &c);
    if (mrc)
        return tvs__mdb_fail(mrc, "reading the reflog");
    *out = 0;
    mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    mrc = mrc == MDB_NOTFOUND ? mdb_cursor_get(c, &k, &v, MDB_LAST)
                              : mdb_cursor_get(c, &k, &v, MDB_PREV);
    size_t n = strlen(name);
    if (!mrc && k.mv_size == n + 9 && memcmp(k.mv_data, name, n + 1) == 0) {
        const uint8_t *p = (const uint8_t *)k.mv_data + n + 1;
        for (int i = 0; i < 8; i++)
            *out = *out << 8 | p[i];
    }
    mdb_cursor_close(c);
    return 0;
}

int tvs_ref_set(tvs_txn *t, const char *name, const tvs_id *id, const tvs_id *expect,
                const char *message)
{
    int rc = tvs_ref_check_name(name);
    if (rc)
        return rc;
    tvs_id old = { { 0 } };
    rc = tvs_ref_get(&old, t, name);
    if (rc && rc != TVS_ENOTFOUND)
        return rc;
    if (expect && !tvs_id_eq(expect, &old)) {
        if (tvs_id_is_zero(expect))
            return tvs__fail(TVS_EEXISTS, "ref '%s' already exists", name);
        if (rc == TVS_ENOTFOUND)
            return tvs__fail(TVS_ENOTFOUND, "no ref named '%s'", name);
        return tvs__fail(TVS_EEXISTS, "ref '%s' moved while this command ran", name);
    }
    tvs__errclear();
    MDB_val k = { strlen(name), (void *)name }, v = { TVS_ID_LEN, (void *)id->b };
    int mrc = mdb_put(t->txn, t->s->refs, &k, &v, 0);
    if (mrc)
        return tvs__mdb_fail(mrc, "writing a ref");

    uint64_t seq;
    if ((rc = last_seq(&seq, t, name)))
        return rc;
    uint8_t key[TVS_REF_MAX + 9];
    size_t klen, mlen = message ? strlen(message) : 0;
    reflog_key(key, &klen, name, seq + 1);
    tvs_buf val = TVS_BUF_INIT;
    if ((rc = tvs_buf_append(&val, old.b, TVS_ID_LEN)) ||
        (rc = tvs_buf_append(&val, id->b, TVS_ID_LEN)) ||
        (rc = tvs_buf_put_le64(&val, (uint64_t)time(NULL))) ||
        (rc = tvs_buf_append(&val, message, mlen))) {
        tvs_buf_dispose(&val);
        return rc;
    }
    MDB_val lk = { klen, key }, lv = { val.len, val.ptr };
    mrc = mdb_put(t->txn, t->s->reflog, &lk, &lv, 0);
    tvs_buf_dispose(&val);
    return mrc ? tvs__mdb_fail(mrc, "writing the reflog") : 0;
}

int tvs_ref_del(tvs_txn *t, const char *name)
{
    if (impossible_name(name))
        return tvs__fail(TVS_ENOTFOUND, "no ref named '%s'", name);
    MDB_val k = { strlen(name), (void *)name };
    int mrc = mdb_del(t->txn, t->s->refs, &k, NULL);
    if (mrc == MDB_NOTFOUND)
        return tvs__fail(TVS_ENOTFOUND, "no ref named '%s'", name);
    if (mrc)
        return tvs__mdb_fail(mrc, "deleting a ref");
    /* drop its reflog, like git does when a branch is deleted */
    uint8_t key[TVS_REF_MAX + 9];
    size_t klen, n = strlen(name);
    reflog_key(key, &klen, name, 0);
    MDB_cursor *c;
    MDB_val lk = { klen, key }, lv;
    if ((mrc = mdb_cursor_open(t->txn, t->s->reflog, &c)))
        return tvs__mdb_fail(mrc, "deleting a reflog");
    for (;;) {
        lk.mv_size = klen;
        lk.mv_data = key;
        mrc = mdb_cursor_get(c, &lk, &lv, MDB_SET_RANGE);
        if (mrc || lk.mv_size != n + 9 || memcmp(lk.mv_data, name, n + 1) != 0)
            break;
        if ((mrc = mdb_cursor_del(c, 0)))
            break;
    }
    mdb_cursor_close(c);
    return (mrc && mrc != MDB_NOTFOUND) ? tvs__mdb_fail(mrc, "deleting a reflog") : 0;
}

int tvs_ref_foreach(tvs_txn *t, const char *prefix,
                    int (*cb)(const char *, const tvs_id *, void *), void *payload)
{
    size_t plen = prefix ? strlen(prefix) : 0;
    MDB_cursor *c;
    MDB_val k = { plen, (void *)prefix }, v;
    int mrc = mdb_cursor_open(t->txn, t->s->refs, &c), rc = 0;
    if (mrc)
        return tvs__mdb_fail(mrc, "listing refs");
    for (mrc = mdb_cursor_get(c, &k, &v, plen ? MDB_SET_RANGE : MDB_FIRST); !mrc && !rc;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (plen && (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0))
            break;
        char name[TVS_REF_MAX + 1];
        if (k.mv_size > TVS_REF_MAX || v.mv_size != TVS_ID_LEN) {
            rc = tvs__fail(TVS_ECORRUPT, "refs database holds a malformed entry");
            break;
        }
        memcpy(name, k.mv_data, k.mv_size);
        name[k.mv_size] = 0;
        tvs_id id;
        memcpy(id.b, v.mv_data, TVS_ID_LEN);
        rc = cb(name, &id, payload);
    }
    mdb_cursor_close(c);
    return rc;
}

int tvs_reflog_foreach(tvs_txn *t, const char *name,
                       int (*cb)(const tvs_reflog_entry *, void *), void *payload)
{
    if (impossible_name(name))
        return 0;
    uint64_t seq;
    int rc = last_seq(&seq, t, name);
    for (; !rc && seq > 0; seq--) {
        uint8_t key[TVS_REF_MAX + 9];
        size_t klen;
        reflog_key(key, &klen, name, seq);
        MDB_val k = { klen, key }, v;
        int mrc = mdb_get(t->txn, t->s->reflog, &k, &v);
        if (mrc == MDB_NOTFOUND)
            continue;
        if (mrc)
            return tvs__mdb_fail(mrc, "reading the reflog");
        if (v.mv_size < 40)
            return tvs__fail(TVS_ECORRUPT, "reflog entry %llu of '%s' is truncated",
                             (unsigned long long)seq, name);
        const uint8_t *p = v.mv_data;
        tvs_reflog_entry e;
        e.seq = seq;
        memcpy(e.old_id.b, p, TVS_ID_LEN);
        memcpy(e.new_id.b, p + 16, TVS_ID_LEN);
        e.time = (int64_t)tvs_load_le64(p + 32);
        e.message = (tvs_span){ p + 40, v.mv_size - 40 };
        rc = cb(&e, payload);
    }
    return rc;
}

/* ---- resolving what a user typed */

typedef struct {
    const char *prefix;
    tvs_id found;
    int n;
} hist_search;

static int match_prefix(const tvs_id *id, const char *prefix)
{
    char hex[TVS_ID_HEX + 1];
    tvs_id_hex(hex, id);
    return strncasecmp(hex, prefix, strlen(prefix)) == 0;
}

static int hist_cb(const tvs_reflog_entry *e, void *p)
{
    hist_search *h = p;
    if (match_prefix(&e->new_id, h->prefix) && !(h->n && tvs_id_eq(&h->found, &e->new_id))) {
        h->found = e->new_id;
        h->n++;
    }
    return 0;
}

int tvs_resolve(tvs_id *out, tvs_txn *t, const char *spec)
{
    const char *at = strchr(spec, '@');
    if (at) {
        char name[TVS_REF_MAX + 1];
        size_t n = (size_t)(at - spec);
        if (n > TVS_REF_MAX)
            return tvs__fail(TVS_EINVAL, "'%s' is not a ref", spec);
        memcpy(name, spec, n);
        name[n] = 0;
        tvs_id head;
        int rc = tvs_ref_get(&head, t, name);
        if (rc)
            return rc;
        hist_search h = { at + 1, { { 0 } }, 0 };
        if (strlen(h.prefix) < 4)
            return tvs__fail(TVS_EINVAL, "'%s': give at least 4 hex digits after '@'", spec);
        /* the ref's history: its reflog, then the parent chain of its head */
        if ((rc = tvs_reflog_foreach(t, name, hist_cb, &h)))
            return rc;
        for (tvs_id cur = head; !h.n;) {
            if (match_prefix(&cur, h.prefix)) {
                h.found = cur;
                h.n = 1;
                break;
            }
            tvs_model_obj m;
            if (tvs_model_load(&m, t, &cur))
                break;
            int more = m.n_parents > 0;
            if (more)
                cur = m.parents[0];
            tvs_model_dispose(&m);
            if (!more)
                break;
        }
        if (h.n == 0)
            return tvs__fail(TVS_ENOTFOUND, "no version of '%s' has an id starting '%s'",
                             name, h.prefix);
        if (h.n > 1)
            return tvs__fail(TVS_EINVAL, "'%s' is ambiguous: several versions of '%s' "
                             "match; give more digits", spec, name);
        *out = h.found;
        return 0;
    }
    int rc = tvs_ref_get(out, t, spec);
    if (rc != TVS_ENOTFOUND)
        return rc;
    size_t n = strlen(spec);
    int hex = n >= 4 && n <= TVS_ID_HEX;
    for (size_t i = 0; hex && i < n; i++)
        hex = (spec[i] >= '0' && spec[i] <= '9') || (spec[i] >= 'a' && spec[i] <= 'f');
    if (hex) {
        /* found, or ambiguous (EINVAL): say so rather than "no such model" */
        rc = tvs_obj_find_prefix(out, t, spec, TVS_OBJ_MODEL);
        if (rc != TVS_ENOTFOUND)
            return rc;
    }
    return tvs__fail(TVS_ENOTFOUND, "no ref or model id '%s' (see 'tvs ls')", spec);
}
