/*
 * Query fixtures: a plan built inside its own read transaction, and an
 * output sink into a tvs_buf (tests/support/support.h).
 */
#include "tests/support/support.h"

tt_planned tt_plan_of(tvs_store *s, const char *q, const tvs_plan_opts *o)
{
    tt_planned r;
    tt_ok(tvs_txn_begin(&r.txn, s, TVS_TXN_READ));
    int rc = tvs_plan_build(&r.p, r.txn, q, o);
    cr_assert_eq(rc, 0, "planning \"%s\": %d (%s)", q, rc, tvs_errmsg());
    return r;
}

void tt_planned_free(tt_planned *r)
{
    tvs_plan_free(r->p);
    tvs_txn_end(r->txn);
}

int tt_sink_buf(void *payload, const uint8_t *p, size_t n)
{
    return tvs_buf_append(payload, p, n);
}
