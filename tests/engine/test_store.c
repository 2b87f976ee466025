/*
 * engine/store.c and engine/refs.c: creating, finding and opening stores,
 * object put/get with collision checks, refs and the reflog, resolving
 * what a user typed, and a map that grows from 1 MiB.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/model.h"
#include "engine/store.h"
#include "tests/support/support.h"

static char *dir;
static tvs_store *s;

static void setup(void) { tt_ok(tt_store_new(&dir, &s)); }

static void teardown(void)
{
    tvs_store_close(s);
    tt_rmtree(dir);
    free(dir);
    tt_leak_check();
}

TestSuite(store, .init = setup, .fini = teardown);

/* ---- helpers */

static tvs_id put_bytes(const void *p, size_t n)
{
    tvs_txn *txn;
    tvs_id id;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_WRITE));
    tt_ok(tvs_obj_put_new(&id, txn, (tvs_span){ p, n }));
    tt_ok(tvs_txn_commit(txn));
    return id;
}

/* Encode an empty model object with this time (and parent), without storing it. */
static tvs_buf model_bytes(int64_t time, const tvs_id *parent)
{
    tvs_model_obj m;
    memset(&m, 0, sizeof m);
    m.time = time;
    m.author = (tvs_span){ (const uint8_t *)"test", 4 };
    if (parent) {
        m.parents = (tvs_id *)parent;
        m.n_parents = 1;
    }
    tvs_buf b = TVS_BUF_INIT;
    tt_ok(tvs_model_encode(&b, &m));
    return b;
}

static tvs_id put_model(int64_t time, const tvs_id *parent)
{
    tvs_buf b = model_bytes(time, parent);
    tvs_id id = put_bytes(b.ptr, b.len);
    tvs_buf_dispose(&b);
    return id;
}

static int set_ref(const char *name, const tvs_id *id, const tvs_id *expect, const char *msg)
{
    tvs_txn *txn;
    int rc = tvs_txn_begin(&txn, s, TVS_TXN_WRITE);
    if (rc)
        return rc;
    rc = tvs_ref_set(txn, name, id, expect, msg);
    if (rc) {
        tvs_txn_end(txn);
        return rc;
    }
    return tvs_txn_commit(txn);
}

static int del_ref(const char *name)
{
    tvs_txn *txn;
    int rc = tvs_txn_begin(&txn, s, TVS_TXN_WRITE);
    if (rc)
        return rc;
    rc = tvs_ref_del(txn, name);
    if (rc) {
        tvs_txn_end(txn);
        return rc;
    }
    return tvs_txn_commit(txn);
}

static int get_ref(tvs_id *out, const char *name)
{
    tvs_txn *txn;
    int rc = tvs_txn_begin(&txn, s, TVS_TXN_READ);
    if (!rc)
        rc = tvs_ref_get(out, txn, name);
    tvs_txn_end(txn);
    return rc;
}

static int resolve(tvs_id *out, const char *spec)
{
    tvs_txn *txn;
    int rc = tvs_txn_begin(&txn, s, TVS_TXN_READ);
    if (!rc)
        rc = tvs_resolve(out, txn, spec);
    tvs_txn_end(txn);
    return rc;
}

static void hex_of(char out[TVS_ID_HEX + 1], const tvs_id *id) { tvs_id_hex(out, id); }

/* ---- init, find, open */

Test(store, init_creates_a_dot_tvs_folder_that_opens)
{
    char *p = tt_join(dir, ".tvs/data.mdb"), *l = tt_join(dir, ".tvs/gc.lock");
    cr_assert(tt_exists(p));
    cr_assert(tt_exists(l));
    const char *sp = tvs_store_path(s);
    size_t n = strlen(sp);
    cr_assert(n > 5 && strcmp(sp + n - 5, "/.tvs") == 0, "store path %s", sp);
    free(p);
    free(l);
}

Test(store, init_makes_the_folder_if_missing)
{
    char *sub = tt_join(dir, "fresh");
    tt_ok(tvs_store_init(sub));
    tvs_store *t;
    tt_ok(tvs_store_open(&t, sub, NULL));
    tvs_store_close(t);
    free(sub);
}

Test(store, init_twice_is_eexists)
{
    tt_fails(tvs_store_init(dir), TVS_EEXISTS);
    tt_msg_has("already exists");
}

Test(store, init_in_an_unwritable_place_is_eio)
{
    tt_fails(tvs_store_init("/proc/tvs-cannot-be-here"), TVS_EIO);
}

Test(store, open_of_a_folder_that_is_not_a_store_is_enotfound)
{
    char *plain = tt_mkdtemp();
    tvs_store *t = (tvs_store *)1;
    tt_fails(tvs_store_open(&t, plain, NULL), TVS_ENOTFOUND);
    cr_assert_null(t, "*out is NULL on failure");
    tt_msg_has("not a tvstore store");
    tt_msg_has(plain);
    /* an empty .tvs folder is not a store either */
    char *dot = tt_join(plain, ".tvs");
    cr_assert_eq(mkdir(dot, 0755), 0);
    tt_fails(tvs_store_open(&t, plain, NULL), TVS_ENOTFOUND);
    tt_fails(tvs_store_open(&t, dot, NULL), TVS_ENOTFOUND);
    /* nor is a path that does not exist, or a file */
    char *gone = tt_join(plain, "gone");
    tt_fails(tvs_store_open(&t, gone, NULL), TVS_ENOTFOUND);
    char *file = tt_join(plain, "file");
    tt_write_text(file, "x");
    tt_fails(tvs_store_open(&t, file, NULL), TVS_ENOTFOUND);
    cr_assert_not(tt_exists(gone), "open must not create anything");
    tt_rmtree(plain);
    free(plain);
    free(dot);
    free(gone);
    free(file);
}

Test(store, open_accepts_the_dot_tvs_folder_itself)
{
    tvs_store_close(s);
    s = NULL;
    char *dot = tt_join(dir, ".tvs");
    tt_ok(tvs_store_open(&s, dot, NULL));
    free(dot);
}

Test(store, open_rejects_an_unknown_format_version)
{
    tvs_store_close(s);
    s = NULL;
    char *p = tt_join(dir, ".tvs");
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    uint8_t ver[4] = { 99, 0, 0, 0 };
    MDB_val k = { 6, "format" }, v = { 4, ver };
    cr_assert_eq(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    cr_assert_eq(mdb_env_open(env, p, 0, 0644), 0);
    cr_assert_eq(mdb_txn_begin(env, NULL, 0, &txn), 0);
    cr_assert_eq(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    cr_assert_eq(mdb_put(txn, dbi, &k, &v, 0), 0);
    cr_assert_eq(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    tt_fails(tvs_store_open(&s, dir, NULL), TVS_ECORRUPT);
    tt_msg_has("format version 99");
    cr_assert_null(s);
    free(p);
}

Test(store, find_uses_the_given_folder_then_tvs_store_then_the_current_folders)
{
    char *found = NULL, *want = tt_join(dir, ".tvs"), *real = realpath(dir, NULL);
    char *realwant = tt_join(real, ".tvs");
    tt_ok(tvs_store_find(&found, dir));
    cr_assert_str_eq(found, want);
    tvs_free(found);
    tt_ok(tvs_store_find(&found, want));
    cr_assert_str_eq(found, want);
    tvs_free(found);
    /* $TVS_STORE */
    setenv("TVS_STORE", dir, 1);
    tt_ok(tvs_store_find(&found, NULL));
    cr_assert_str_eq(found, want);
    tvs_free(found);
    /* --store wins over $TVS_STORE */
    char *other = tt_mkdtemp();
    setenv("TVS_STORE", other, 1);
    tt_ok(tvs_store_find(&found, dir));
    cr_assert_str_eq(found, want);
    tvs_free(found);
    tt_fails(tvs_store_find(&found, NULL), TVS_ENOTFOUND);
    tt_msg_has(other);
    cr_assert_null(found);
    unsetenv("TVS_STORE");
    /* the current folder and its parents */
    char *deep = tt_fmt("%s/a/b/c", dir);
    cr_assert_eq(tt_mkdirs(deep), 0);
    cr_assert_eq(chdir(deep), 0);
    tt_ok(tvs_store_find(&found, NULL));
    cr_assert_str_eq(found, realwant);
    tvs_free(found);
    cr_assert_eq(chdir(other), 0);
    tt_fails(tvs_store_find(&found, NULL), TVS_ENOTFOUND);
    tt_msg_has("--store");
    cr_assert_eq(chdir("/"), 0);
    tt_rmtree(other);
    free(other);
    free(deep);
    free(want);
    free(real);
    free(realwant);
}

Test(store, a_read_only_store_refuses_write_transactions)
{
    tvs_store_close(s);
    s = NULL;
    tvs_store_opts o = TVS_STORE_OPTS_INIT;
    o.readonly = 1;
    tt_ok(tvs_store_open(&s, dir, &o));
    tvs_txn *txn = (tvs_txn *)1;
    tt_fails(tvs_txn_begin(&txn, s, TVS_TXN_WRITE), TVS_EINVAL);
    cr_assert_null(txn);
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tvs_txn_end(txn);
}

Test(store, close_and_end_accept_null)
{
    tvs_store_close(NULL);
    tvs_txn_end(NULL);
}

/* ---- objects */

Test(store, put_then_get_returns_the_same_bytes)
{
    const char *obj = "\x01\x00\x05\x00\x00\x00hello";
    tvs_id id = put_bytes(obj, 11), want;
    tvs_id_of(&want, obj, 11);
    cr_assert(tvs_id_eq(&id, &want), "the id is XXH3-128 of the bytes");
    tvs_txn *txn;
    tvs_span b;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tt_ok(tvs_obj_get(&b, txn, &id));
    cr_assert_eq(b.len, 11);
    cr_assert_arr_eq(b.ptr, obj, 11);
    cr_assert(tvs_obj_has(txn, &id));
    cr_assert_eq(tvs_txn_store(txn), s);
    tvs_txn_end(txn);
}

Test(store, get_of_a_missing_object_is_enotfound_naming_it)
{
    tvs_id id;
    char hex[TVS_ID_HEX + 1];
    tvs_id_of(&id, "nothing", 7);
    hex_of(hex, &id);
    tvs_txn *txn;
    tvs_span b;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tt_fails(tvs_obj_get(&b, txn, &id), TVS_ENOTFOUND);
    tt_msg_has(hex);
    cr_assert_not(tvs_obj_has(txn, &id));
    tvs_txn_end(txn);
}

Test(store, putting_the_same_bytes_twice_is_a_no_op)
{
    tvs_id id = put_bytes("\x01same", 5), again;
    tvs_txn *txn;
    int existed = 0;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_WRITE));
    tt_ok(tvs_obj_put(txn, &id, (tvs_span){ (const uint8_t *)"\x01same", 5 }, &existed));
    cr_assert_eq(existed, 1);
    tt_ok(tvs_obj_put_new(&again, txn, (tvs_span){ (const uint8_t *)"\x01same", 5 }));
    cr_assert(tvs_id_eq(&id, &again));
    tvs_id fresh;
    tvs_id_of(&fresh, "\x01new", 4);
    tt_ok(tvs_obj_put(txn, &fresh, (tvs_span){ (const uint8_t *)"\x01new", 4 }, &existed));
    cr_assert_eq(existed, 0);
    tt_ok(tvs_txn_commit(txn));
}

Test(store, putting_different_bytes_under_an_existing_id_is_ecollide_and_changes_nothing)
{
    tvs_id id = put_bytes("\x01original", 9);
    tvs_txn *txn;
    char hex[TVS_ID_HEX + 1];
    hex_of(hex, &id);
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_WRITE));
    tt_fails(tvs_obj_put(txn, &id, (tvs_span){ (const uint8_t *)"\x01impostor", 9 }, NULL),
             TVS_ECOLLIDE);
    tt_msg_has(hex);
    tt_fails(tvs_obj_put(txn, &id, (tvs_span){ (const uint8_t *)"\x01longer impostor", 16 },
                         NULL), TVS_ECOLLIDE);
    tt_fails(tvs_obj_put(txn, &id, (tvs_span){ (const uint8_t *)"\x01", 1 }, NULL),
             TVS_ECOLLIDE);
    tt_ok(tvs_txn_commit(txn));
    tvs_span b;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tt_ok(tvs_obj_get(&b, txn, &id));
    cr_assert_eq(b.len, 9);
    cr_assert_arr_eq(b.ptr, "\x01original", 9, "the stored bytes are unchanged");
    tvs_txn_end(txn);
}

Test(store, delete_removes_an_object)
{
    tvs_id id = put_bytes("\x01gone soon", 10);
    tvs_txn *txn;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_WRITE));
    tt_ok(tvs_obj_del(txn, &id));
    tt_fails(tvs_obj_del(txn, &id), TVS_ENOTFOUND);
    tt_ok(tvs_txn_commit(txn));
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    cr_assert_not(tvs_obj_has(txn, &id));
    tvs_txn_end(txn);
}

Test(store, an_aborted_write_leaves_nothing)
{
    tvs_txn *txn;
    tvs_id id;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_WRITE));
    tt_ok(tvs_obj_put_new(&id, txn, (tvs_span){ (const uint8_t *)"\x01x", 2 }));
    tvs_txn_end(txn);
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    cr_assert_not(tvs_obj_has(txn, &id));
    tvs_txn_end(txn);
}

typedef struct {
    int n;
    tvs_id last;
    int ordered;
    int stop_at;
} visit;

static int visit_obj(const tvs_id *id, tvs_span b, void *p)
{
    visit *v = p;
    (void)b;
    if (v->n && memcmp(v->last.b, id->b, TVS_ID_LEN) >= 0)
        v->ordered = 0;
    v->last = *id;
    v->n++;
    return v->n == v->stop_at ? 7 : 0;
}

Test(store, foreach_visits_every_object_in_id_order_and_stops_when_asked)
{
    for (int i = 0; i < 50; i++) {
        char b[16];
        int n = snprintf(b, sizeof b, "\x01obj%d", i);
        put_bytes(b, (size_t)n);
    }
    tvs_txn *txn;
    visit v = { 0, { { 0 } }, 1, 0 };
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tt_ok(tvs_obj_foreach(txn, visit_obj, &v));
    cr_assert_eq(v.n, 50);
    cr_assert(v.ordered);
    visit w = { 0, { { 0 } }, 1, 10 };
    cr_assert_eq(tvs_obj_foreach(txn, visit_obj, &w), 7);
    cr_assert_eq(w.n, 10);
    tvs_txn_end(txn);
}

/* ---- refs */

Test(store, refs_can_be_set_read_moved_and_deleted)
{
    tvs_id a = put_model(1, NULL), b = put_model(2, NULL), got;
    tt_fails(get_ref(&got, "llama-3.1"), TVS_ENOTFOUND);
    tt_msg_has("llama-3.1");
    tt_ok(set_ref("llama-3.1", &a, NULL, "create"));
    tt_ok(get_ref(&got, "llama-3.1"));
    cr_assert(tvs_id_eq(&got, &a));
    tt_ok(set_ref("llama-3.1", &b, NULL, "move"));
    tt_ok(get_ref(&got, "llama-3.1"));
    cr_assert(tvs_id_eq(&got, &b));
    tt_ok(del_ref("llama-3.1"));
    tt_fails(get_ref(&got, "llama-3.1"), TVS_ENOTFOUND);
    tt_fails(del_ref("llama-3.1"), TVS_ENOTFOUND);
    tt_msg_has("no ref named 'llama-3.1'");
}

Test(store, valid_ref_names_are_accepted)
{
    static const char *ok[] = { "a", "Z", "llama-3.1", "llama-3.1/math", "run7/ckpt-000",
                                "a_b.c-d/e/f.g", "x/y/z/w", "v1..2", "a.", "base/v1.0/ft" };
    tvs_id id = put_model(1, NULL);
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        tt_ok(tvs_ref_check_name(ok[i]));
        tt_ok(set_ref(ok[i], &id, NULL, NULL));
    }
    char longest[TVS_REF_MAX + 1];
    memset(longest, 'n', TVS_REF_MAX);
    longest[TVS_REF_MAX] = 0;
    tt_ok(tvs_ref_check_name(longest));
    tt_ok(set_ref(longest, &id, NULL, NULL));
}

Test(store, invalid_ref_names_are_rejected_with_the_rule)
{
    static const struct { const char *name, *rule; } bad[] = {
        { "", "1 to 255" },           { "1abc", "start with a letter" },
        { "-x", "start with a letter" }, { ".hidden", "start with a letter" },
        { "/abs", "start with a letter" }, { "a/", "non-empty" },
        { "a//b", "non-empty" },      { "a/.b", "not start with '.'" },
        { "a/../b", "not start with '.'" }, { "a b", "' '" },
        { "a@b", "'@'" },             { "a:b", "':'" },
        { "a\\b", "'\\'" },           { "caf\xc3\xa9", "not allowed" },
        { "a\tb", "not allowed" },    { "name~1", "'~'" },
    };
    tvs_id id = put_model(1, NULL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = tvs_ref_check_name(bad[i].name);
        cr_assert_eq(rc, TVS_EINVAL, "'%s' accepted", bad[i].name);
        cr_assert(strstr(tvs_errmsg(), bad[i].rule), "'%s': message \"%s\" lacks \"%s\"",
                  bad[i].name, tvs_errmsg(), bad[i].rule);
        tt_fails(set_ref(bad[i].name, &id, NULL, NULL), TVS_EINVAL);
    }
    char toolong[TVS_REF_MAX + 2];
    memset(toolong, 'n', TVS_REF_MAX + 1);
    toolong[TVS_REF_MAX + 1] = 0;
    tt_fails(tvs_ref_check_name(toolong), TVS_EINVAL);
    tt_msg_has("1 to 255 bytes");
}

Test(store, ref_set_checks_the_expected_old_value)
{
    static const tvs_id zero;
    tvs_id a = put_model(1, NULL), b = put_model(2, NULL), c = put_model(3, NULL), got;
    tt_fails(set_ref("m", &a, &b, NULL), TVS_ENOTFOUND);
    tt_ok(set_ref("m", &a, &zero, "create only"));
    tt_fails(set_ref("m", &b, &zero, "create only"), TVS_EEXISTS);
    tt_msg_has("already exists");
    tt_fails(set_ref("m", &b, &c, "stale"), TVS_EEXISTS);
    tt_msg_has("moved");
    tt_ok(get_ref(&got, "m"));
    cr_assert(tvs_id_eq(&got, &a), "a failed set leaves the ref alone");
    tt_ok(set_ref("m", &b, &a, "compare and swap"));
    tt_ok(get_ref(&got, "m"));
    cr_assert(tvs_id_eq(&got, &b));
}

typedef struct {
    char names[16][64];
    int n, stop_at;
} ref_list;

static int list_ref(const char *name, const tvs_id *id, void *p)
{
    ref_list *l = p;
    (void)id;
    if (l->n < 16)
        snprintf(l->names[l->n], sizeof l->names[0], "%s", name);
    l->n++;
    return l->n == l->stop_at ? 5 : 0;
}

Test(store, refs_are_listed_in_name_order_by_prefix)
{
    static const char *names[] = { "llama-3.1/math", "llama-3.1", "base", "llama-3.1/code",
                                   "llama-3.2", "zeta" };
    tvs_id id = put_model(1, NULL);
    for (size_t i = 0; i < 6; i++)
        tt_ok(set_ref(names[i], &id, NULL, NULL));
    tvs_txn *txn;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    ref_list all = { .n = 0 };
    tt_ok(tvs_ref_foreach(txn, NULL, list_ref, &all));
    cr_assert_eq(all.n, 6);
    static const char *sorted[] = { "base", "llama-3.1", "llama-3.1/code", "llama-3.1/math",
                                    "llama-3.2", "zeta" };
    for (int i = 0; i < 6; i++)
        cr_assert_str_eq(all.names[i], sorted[i]);
    ref_list sub = { .n = 0 };
    tt_ok(tvs_ref_foreach(txn, "llama-3.1/", list_ref, &sub));
    cr_assert_eq(sub.n, 2);
    cr_assert_str_eq(sub.names[0], "llama-3.1/code");
    cr_assert_str_eq(sub.names[1], "llama-3.1/math");
    ref_list none = { .n = 0 };
    tt_ok(tvs_ref_foreach(txn, "q", list_ref, &none));
    cr_assert_eq(none.n, 0);
    tt_ok(tvs_ref_foreach(txn, "zz", list_ref, &none));
    cr_assert_eq(none.n, 0);
    ref_list empty_prefix = { .n = 0 };
    tt_ok(tvs_ref_foreach(txn, "", list_ref, &empty_prefix));
    cr_assert_eq(empty_prefix.n, 6);
    ref_list stop = { .n = 0, .stop_at = 2 };
    cr_assert_eq(tvs_ref_foreach(txn, NULL, list_ref, &stop), 5);
    cr_assert_eq(stop.n, 2);
    tvs_txn_end(txn);
}

Test(store, listing_refs_of_an_empty_store_visits_nothing)
{
    tvs_txn *txn;
    ref_list all = { .n = 0 };
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tt_ok(tvs_ref_foreach(txn, NULL, list_ref, &all));
    tvs_txn_end(txn);
    cr_assert_eq(all.n, 0);
}

typedef struct {
    tvs_reflog_entry e[8];
    char msg[8][32];
    int n;
} log_list;

static int log_entry(const tvs_reflog_entry *e, void *p)
{
    log_list *l = p;
    if (l->n < 8) {
        l->e[l->n] = *e;
        snprintf(l->msg[l->n], sizeof l->msg[0], "%.*s", (int)e->message.len,
                 (const char *)e->message.ptr);
    }
    l->n++;
    return 0;
}

static log_list read_log(const char *name)
{
    log_list l;
    memset(&l, 0, sizeof l);
    tvs_txn *txn;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tt_ok(tvs_reflog_foreach(txn, name, log_entry, &l));
    tvs_txn_end(txn);
    return l;
}

Test(store, the_reflog_lists_changes_newest_first)
{
    static const tvs_id zero;
    tvs_id a = put_model(1, NULL), b = put_model(2, NULL), c = put_model(3, NULL);
    int64_t before = (int64_t)time(NULL);
    tt_ok(set_ref("m", &a, NULL, "first"));
    tt_ok(set_ref("m", &b, NULL, "second"));
    tt_ok(set_ref("m", &c, NULL, "third"));
    /* names that share a prefix keep their own logs */
    tt_ok(set_ref("m/x", &a, NULL, "other"));
    tt_ok(set_ref("mm", &a, NULL, "other"));
    log_list l = read_log("m");
    cr_assert_eq(l.n, 3);
    cr_assert_eq(l.e[0].seq, 3);
    cr_assert_eq(l.e[1].seq, 2);
    cr_assert_eq(l.e[2].seq, 1);
    cr_assert_str_eq(l.msg[0], "third");
    cr_assert_str_eq(l.msg[1], "second");
    cr_assert_str_eq(l.msg[2], "first");
    cr_assert(tvs_id_eq(&l.e[0].new_id, &c) && tvs_id_eq(&l.e[0].old_id, &b));
    cr_assert(tvs_id_eq(&l.e[1].new_id, &b) && tvs_id_eq(&l.e[1].old_id, &a));
    cr_assert(tvs_id_eq(&l.e[2].new_id, &a) && tvs_id_eq(&l.e[2].old_id, &zero),
              "creation has a zero old id");
    cr_assert(l.e[0].time >= before && l.e[0].time <= (int64_t)time(NULL) + 1);
    cr_assert_eq(read_log("m/x").n, 1);
    cr_assert_eq(read_log("mm").n, 1);
    cr_assert_eq(read_log("nope").n, 0);
}

Test(store, deleting_a_ref_deletes_its_reflog_only)
{
    tvs_id a = put_model(1, NULL), b = put_model(2, NULL);
    tt_ok(set_ref("m", &a, NULL, "1"));
    tt_ok(set_ref("m", &b, NULL, "2"));
    tt_ok(set_ref("m/x", &a, NULL, "keep"));
    tt_ok(del_ref("m"));
    cr_assert_eq(read_log("m").n, 0);
    cr_assert_eq(read_log("m/x").n, 1);
    tt_ok(set_ref("m", &b, NULL, "again"));
    log_list l = read_log("m");
    cr_assert_eq(l.n, 1);
    cr_assert_eq(l.e[0].seq, 1, "a recreated ref's log starts over");
}

Test(store, an_empty_or_overlong_ref_name_is_simply_not_found)
{
    char long_name[600];
    memset(long_name, 'a', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = 0;
    char just_over[TVS_REF_MAX + 2];
    memset(just_over, 'b', TVS_REF_MAX + 1);
    just_over[TVS_REF_MAX + 1] = 0;
    const char *names[] = { "", just_over, long_name };
    tvs_id a = put_model(1, NULL), got;
    tt_ok(set_ref("a", &a, NULL, NULL));
    for (int i = 0; i < 3; i++) {
        tt_fails(get_ref(&got, names[i]), TVS_ENOTFOUND);
        tt_fails(del_ref(names[i]), TVS_ENOTFOUND);
        tt_fails(resolve(&got, names[i]), TVS_ENOTFOUND);
        cr_assert_eq(read_log(names[i]).n, 0, "no reflog for a name of %zu bytes",
                     strlen(names[i]));
        tvs_txn *txn;
        ref_list l = { .n = 0 };
        tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
        tt_ok(tvs_ref_foreach(txn, names[i], list_ref, &l));
        tvs_txn_end(txn);
        cr_assert_eq(l.n, i == 0 ? 1 : 0);
    }
}

/* ---- resolve */

Test(store, resolve_takes_a_ref_name)
{
    tvs_id a = put_model(1, NULL), got;
    tt_ok(set_ref("base", &a, NULL, NULL));
    tt_ok(resolve(&got, "base"));
    cr_assert(tvs_id_eq(&got, &a));
}

Test(store, resolve_takes_an_id_or_an_id_prefix)
{
    tvs_id a = put_model(1, NULL), got;
    char hex[TVS_ID_HEX + 1];
    hex_of(hex, &a);
    tt_ok(resolve(&got, hex));
    cr_assert(tvs_id_eq(&got, &a));
    for (size_t n = 4; n <= 32; n += 7) {
        char pre[TVS_ID_HEX + 1];
        snprintf(pre, sizeof pre, "%.*s", (int)n, hex);
        tt_ok(resolve(&got, pre));
        cr_assert(tvs_id_eq(&got, &a), "prefix %s", pre);
    }
    char three[4];
    snprintf(three, sizeof three, "%.3s", hex);
    tt_fails(resolve(&got, three), TVS_ENOTFOUND);
    tt_fails(resolve(&got, "zzzz"), TVS_ENOTFOUND);
    tt_msg_has("zzzz");
}

Test(store, resolve_finds_only_models_by_id)
{
    tvs_id chunk = put_bytes("\x01\x00\x01\x00\x00\x00x", 7), got;
    char hex[TVS_ID_HEX + 1];
    hex_of(hex, &chunk);
    tt_fails(resolve(&got, hex), TVS_ENOTFOUND);
    tvs_txn *txn;
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tt_ok(tvs_obj_find_prefix(&got, txn, hex, TVS_OBJ_CHUNK));
    cr_assert(tvs_id_eq(&got, &chunk));
    tt_fails(tvs_obj_find_prefix(&got, txn, hex, TVS_OBJ_MODEL), TVS_ENOTFOUND);
    tt_fails(tvs_obj_find_prefix(&got, txn, "abc", TVS_OBJ_CHUNK), TVS_EINVAL);
    tt_fails(tvs_obj_find_prefix(&got, txn, "abcx", TVS_OBJ_CHUNK), TVS_EINVAL);
    tt_fails(tvs_obj_find_prefix(&got, txn, "0123456789abcdef0123456789abcdef0",
                                 TVS_OBJ_CHUNK), TVS_EINVAL);
    tvs_txn_end(txn);
}

Test(store, resolve_calls_an_ambiguous_id_prefix_ambiguous)
{
    /* store empty models until two share their first four hex digits */
    tvs_txn *txn;
    char seen[65536] = { 0 }, pre[5] = "";
    tvs_id first = { { 0 } }, second = { { 0 } };
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_WRITE));
    for (int64_t t = 1; t < 100000 && !pre[0]; t++) {
        tvs_buf b = model_bytes(t, NULL);
        tvs_id id;
        tt_ok(tvs_obj_put_new(&id, txn, (tvs_span){ b.ptr, b.len }));
        tvs_buf_dispose(&b);
        unsigned k = (unsigned)id.b[0] << 8 | id.b[1];
        if (seen[k]) {
            snprintf(pre, sizeof pre, "%02x%02x", id.b[0], id.b[1]);
            second = id;
        }
        seen[k] = 1;
    }
    tt_ok(tvs_txn_commit(txn));
    cr_assert(pre[0], "no two models shared a prefix");
    tvs_id got;
    tt_fails(resolve(&got, pre), TVS_EINVAL);
    tt_msg_has("ambiguous");
    tt_ok(tvs_txn_begin(&txn, s, TVS_TXN_READ));
    tt_fails(tvs_obj_find_prefix(&got, txn, pre, TVS_OBJ_MODEL), TVS_EINVAL);
    tt_msg_has("ambiguous");
    char hex[TVS_ID_HEX + 1];
    hex_of(hex, &second);
    tt_ok(tvs_obj_find_prefix(&got, txn, hex, TVS_OBJ_MODEL));
    tvs_txn_end(txn);
    (void)first;
}

Test(store, a_ref_name_wins_over_an_id_prefix)
{
    /* find a model whose id starts with a letter, so its prefix is a valid ref name */
    tvs_id target = { { 0 } }, other = put_model(0, NULL), got;
    char pre[5] = "";
    for (int64_t t = 1; !pre[0]; t++) {
        tvs_buf b = model_bytes(t, NULL);
        tvs_id id;
        tvs_id_of(&id, b.ptr, b.len);
        tvs_buf_dispose(&b);
        if ((id.b[0] >> 4) >= 10) {
            target = put_model(t, NULL);
            snprintf(pre, sizeof pre, "%02x%02x", id.b[0], id.b[1]);
        }
    }
    tt_ok(resolve(&got, pre));
    cr_assert(tvs_id_eq(&got, &target));
    tt_ok(set_ref(pre, &other, NULL, NULL));
    tt_ok(resolve(&got, pre));
    cr_assert(tvs_id_eq(&got, &other), "the ref '%s' must win over the id prefix", pre);
}

Test(store, resolve_takes_name_at_id_from_the_reflog_and_the_parent_chain)
{
    tvs_id v1 = put_model(1, NULL), v2 = put_model(2, &v1), v3 = put_model(3, &v2), got;
    char h1[TVS_ID_HEX + 1], h2[TVS_ID_HEX + 1], spec[64];
    hex_of(h1, &v1);
    hex_of(h2, &v2);
    /* v2 and v3 in the reflog, v1 only as v2's parent */
    tt_ok(set_ref("m", &v2, NULL, NULL));
    tt_ok(set_ref("m", &v3, NULL, NULL));
    snprintf(spec, sizeof spec, "m@%.6s", h2);
    tt_ok(resolve(&got, spec));
    cr_assert(tvs_id_eq(&got, &v2), "from the reflog");
    snprintf(spec, sizeof spec, "m@%.6s", h1);
    tt_ok(resolve(&got, spec));
    cr_assert(tvs_id_eq(&got, &v1), "from the parent chain");
    snprintf(spec, sizeof spec, "m@%s", h1);
    tt_ok(resolve(&got, spec));
    cr_assert(tvs_id_eq(&got, &v1), "a whole id after @");
}

Test(store, resolve_of_name_at_id_fails_on_a_short_or_unknown_prefix_or_name)
{
    tvs_id v1 = put_model(1, NULL), other = put_model(9, NULL), got;
    char h[TVS_ID_HEX + 1], spec[64];
    tt_ok(set_ref("m", &v1, NULL, NULL));
    tt_fails(resolve(&got, "m@abc"), TVS_EINVAL);
    tt_msg_has("at least 4 hex digits");
    tt_fails(resolve(&got, "m@"), TVS_EINVAL);
    hex_of(h, &other);
    snprintf(spec, sizeof spec, "m@%.8s", h);
    tt_fails(resolve(&got, spec), TVS_ENOTFOUND);
    tt_msg_has("no version of 'm'");
    snprintf(spec, sizeof spec, "nope@%.8s", h);
    tt_fails(resolve(&got, spec), TVS_ENOTFOUND);
    tt_msg_has("nope");
}

/* ---- locks */

Test(store, the_store_lock_conflicts_with_another_holder)
{
    char *p = tt_join(dir, ".tvs/gc.lock");
    int fd = open(p, O_RDWR);
    cr_assert_geq(fd, 0);
    cr_assert_eq(flock(fd, LOCK_SH), 0);
    tt_fails(tvs_store_lock(s, 1, 0), TVS_EBUSY);
    tt_msg_has("import in progress");
    tt_ok(tvs_store_lock(s, 0, 0));   /* shared with shared is fine */
    tvs_store_unlock(s);
    flock(fd, LOCK_UN);
    cr_assert_eq(flock(fd, LOCK_EX), 0);
    tt_fails(tvs_store_lock(s, 0, 0), TVS_EBUSY);
    tt_msg_has("garbage collection");
    close(fd);
    tt_ok(tvs_store_lock(s, 1, 0));
    tvs_store_unlock(s);
    free(p);
}

/* ---- map growth */

static int put_big(tvs_txn *txn, void *p)
{
    const uint8_t *data = p;
    tvs_id id;
    return tvs_obj_put_new(&id, txn, (tvs_span){ data, 1u << 20 });
}

Test(store, a_store_opened_with_a_1_mib_map_grows_for_50_mib_of_writes)
{
    tvs_store_close(s);
    s = NULL;
    tvs_store_opts o = TVS_STORE_OPTS_INIT;
    o.map_size = 1u << 20;
    tt_ok(tvs_store_open(&s, dir, &o));
    uint8_t *data = malloc(1u << 20);
    for (int i = 0; i < 50; i++) {
        tt_fill_random(data, 1u << 20, (uint64_t)i + 1);
        data[0] = TVS_OBJ_CHUNK;
        tt_ok(tvs_store_write(s, 0, put_big, data));
    }
    free(data);
    tt_snapshot snap;
    tt_ok(tt_snapshot_take(&snap, s));
    cr_assert_eq(snap.n, 50);
    cr_assert_eq(snap.bytes, 50u << 20);
    tt_snapshot_dispose(&snap);
}

Test(store, a_store_made_with_tvs_map_size_1_mib_imports_50_mb)
{
    tvs_store_close(s);
    s = NULL;
    tt_rmtree(dir);
    free(dir);
    setenv("TVS_MAP_SIZE", "1048576", 1);
    dir = tt_mkdtemp();
    tt_ok(tvs_store_init(dir));
    tt_ok(tvs_store_open(&s, dir, NULL));
    tt_tensor t[] = { { "a", "U8", 1, { 30u << 20 } }, { "b", "F32", 2, { 1280, 4096 } } };
    char *in = tt_join(dir, "big.safetensors"), *out = tt_join(dir, "out.safetensors");
    cr_assert_eq(tt_write_st(in, t, 2, "{\"format\":\"pt\"}", 4242), 0);
    tt_ok(tt_import(NULL, s, in, "big"));
    tt_ok(tt_export(s, "big", out));
    char why[512];
    cr_assert_eq(tt_files_equal(in, out, why, sizeof why), 1, "%s", why);
    unsetenv("TVS_MAP_SIZE");
    free(in);
    free(out);
}
