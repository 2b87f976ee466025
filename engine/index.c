/*
 * The checksum index and the lineage index.
 *
 * sums:    key = checksum (16)                     value = tensor id (16)
 * lineage: key = from id (16), u8 relation, to id (16)   value = empty
 */
#include "engine/store_int.h"

int tvs_sums_get(tvs_id *out, tvs_txn *t, const tvs_id *sum)
{
    MDB_val k = { TVS_ID_LEN, (void *)sum->b }, v;
    int mrc = mdb_get(t->txn, t->s->sums, &k, &v);
    if (mrc == MDB_NOTFOUND)
        return TVS_ENOTFOUND;
    if (mrc)
        return tvs__mdb_fail(mrc, "reading the checksum index");
    if (v.mv_size != TVS_ID_LEN)
        return tvs__fail(TVS_ECORRUPT, "checksum index holds a value of %zu bytes", v.mv_size);
    memcpy(out->b, v.mv_data, TVS_ID_LEN);
    return 0;
}

int tvs_sums_put(tvs_txn *t, const tvs_id *sum, const tvs_id *tensor)
{
    MDB_val k = { TVS_ID_LEN, (void *)sum->b }, v = { TVS_ID_LEN, (void *)tensor->b };
    int mrc = mdb_put(t->txn, t->s->sums, &k, &v, MDB_NOOVERWRITE);
    return (mrc && mrc != MDB_KEYEXIST) ? tvs__mdb_fail(mrc, "writing the checksum index")
                                        : 0;
}

int tvs_sums_del(tvs_txn *t, const tvs_id *sum, const tvs_id *tensor)
{
    tvs_id cur;
    int rc = tvs_sums_get(&cur, t, sum);
    if (rc == TVS_ENOTFOUND)
        return 0;
    if (rc || !tvs_id_eq(&cur, tensor))
        return rc;
    MDB_val k = { TVS_ID_LEN, (void *)sum->b };
    int mrc = mdb_del(t->txn, t->s->sums, &k, NULL);
    return mrc ? tvs__mdb_fail(mrc, "updating the checksum index") : 0;
}

static void lkey(uint8_t *k, const tvs_id *from, int rel, const tvs_id *to)
{
    memcpy(k, from->b, TVS_ID_LEN);
    k[TVS_ID_LEN] = (uint8_t)rel;
    memcpy(k + TVS_ID_LEN + 1, to->b, TVS_ID_LEN);
}

int tvs_lineage_add(tvs_txn *t, const tvs_id *from, int rel, const tvs_id *to)
{
    uint8_t key[2 * TVS_ID_LEN + 1];
    lkey(key, from, rel, to);
    MDB_val k = { sizeof key, key }, v = { 0, "" };
    int mrc = mdb_put(t->txn, t->s->lineage, &k, &v, 0);
    return mrc ? tvs__mdb_fail(mrc, "writing the lineage index") : 0;
}

int tvs_lineage_del(tvs_txn *t, const tvs_id *from, int rel, const tvs_id *to)
{
    uint8_t key[2 * TVS_ID_LEN + 1];
    lkey(key, from, rel, to);
    MDB_val k = { sizeof key, key };
    int mrc = mdb_del(t->txn, t->s->lineage, &k, NULL);
    return (mrc && mrc != MDB_NOTFOUND) ? tvs__mdb_fail(mrc, "updating the lineage index")
                                        : 0;
}

int tvs_lineage_foreach(tvs_txn *t, const tvs_id *from, int rel,
                        int (*cb)(const tvs_id *, int, const tvs_id *, void *), void *payload)
{
    uint8_t start[TVS_ID_LEN + 1] = { 0 };
    size_t slen = 0;
    if (from) {
        memcpy(start, from->b, TVS_ID_LEN);
        start[TVS_ID_LEN] = (uint8_t)rel;
        slen = rel ? TVS_ID_LEN + 1 : TVS_ID_LEN;
    }
    MDB_cursor *c;
    MDB_val k = { slen, start }, v;
    int mrc = mdb_cursor_open(t->txn, t->s->lineage, &c), rc = 0;
    if (mrc)
        return tvs__mdb_fail(mrc, "reading the lineage index");
    for (mrc = mdb_cursor_get(c, &k, &v, slen ? MDB_SET_RANGE : MDB_FIRST); !mrc && !rc;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 2 * TVS_ID_LEN + 1) {
            rc = tvs__fail(TVS_ECORRUPT, "lineage index holds a key of %zu bytes", k.mv_size);
            break;
        }
        const uint8_t *p = k.mv_data;
        if (slen && memcmp(p, start, slen) != 0)
            break;
        tvs_id a, b;
        memcpy(a.b, p, TVS_ID_LEN);
        memcpy(b.b, p + TVS_ID_LEN + 1, TVS_ID_LEN);
        if (!rel || p[TVS_ID_LEN] == rel)
            rc = cb(&a, p[TVS_ID_LEN], &b, payload);
    }
    mdb_cursor_close(c);
    return rc;
}
