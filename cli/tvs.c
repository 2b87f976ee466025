/*
 * tvs: the command line. Each command parses its arguments, calls libtvs,
 * and prints for humans or (--json) for programs. Errors print one line,
 * "tvs: <what>: <why>", and map to an exit code in one table (exit_code).
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli/progress.h"
#include "engine/maint.h"
#include "engine/model.h"
#include "engine/store.h"
#include "format/codec.h"

static const char *g_store;   /* --store */

enum { EXIT_USAGE = 2 };

static int exit_code(int err)
{
    switch (err) {
    case TVS_OK: return 0;
    case TVS_EINVAL: return EXIT_USAGE;
    case TVS_ENOTFOUND: return 3;
    case TVS_ECORRUPT: return 4;
    case TVS_ECOLLIDE: return 5;
    case TVS_EEXISTS: return 6;
    case TVS_EBUSY: return 7;
    case TVS_EIO: return 8;
    }
    return 1;
}

static int fail(int err, const char *what)
{
    const char *msg = tvs_errmsg();
    fprintf(stderr, "tvs: %s: %s\n", what, *msg ? msg : tvs_strerror(err));
    return exit_code(err);
}

static int usage_error(const char *cmd, const char *msg)
{
    fprintf(stderr, "tvs %s: %s (see 'tvs %s --help')\n", cmd, msg, cmd);
    return EXIT_USAGE;
}

static int open_store(tvs_store **out, int readonly)
{
    char *path;
    int rc = tvs_store_find(&path, g_store);
    if (rc)
        return rc;
    tvs_store_opts o = TVS_STORE_OPTS_INIT;
    o.readonly = readonly;
    rc = tvs_store_open(out, path, &o);
    tvs_free(path);
    return rc;
}

static void print_json(json_t *j)
{
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s)
        puts(s);
    free(s);
    json_decref(j);
}

static const char *hex(const tvs_id *id, char buf[TVS_ID_HEX + 1])
{
    tvs_id_hex(buf, id);
    return buf;
}

static void fmt_time(char *out, size_t cap, int64_t t)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, cap, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static int want_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return 1;
    return 0;
}

/* Common getopt loop for commands whose only options are flags/values. */
#define OPT_JSON 1000

/* ------------------------------------------------------------------ init */

static int cmd_init(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";
    if (argc > 2)
        return usage_error("init", "too many arguments");
    int rc = tvs_store_init(dir);
    if (rc)
        return fail(rc, "init");
    printf("initialized empty tvstore store in %s/%s\n", dir, TVS_STORE_DIR);
    return 0;
}

/* ---------------------------------------------------------------- import */

static int cmd_import(int argc, char **argv)
{
    static const struct option opts[] = {
        { "as", required_argument, 0, 'a' }, { "message", required_argument, 0, 'm' },
        { "threads", required_argument, 0, 't' }, { "level", required_argument, 0, 'l' },
        { 0, 0, 0, 0 } };
    const char *as = NULL;
    tvs_import_opts o = TVS_IMPORT_OPTS_INIT;
    int c;
    while ((c = getopt_long(argc, argv, "a:m:t:", opts, NULL)) != -1) {
        switch (c) {
        case 'a': as = optarg; break;
        case 'm': o.message = optarg; break;
        case 't': o.threads = atoi(optarg); break;
        case 'l': o.level = atoi(optarg); break;
        default: return usage_error("import", "unknown option");
        }
    }
    if (optind + 1 != argc)
        return usage_error("import", "give exactly one PATH");
    if (!as)
        return usage_error("import", "--as NAME is required");
    tvs_store *s;
    int rc = open_store(&s, 0);
    if (rc)
        return fail(rc, "import");
    progress p;
    progress_init(&p, "importing");
    o.progress = progress_cb;
    o.progress_payload = &p;
    tvs_id id;
    rc = tvs_import(&id, s, argv[optind], as, &o);
    progress_done(&p);
    tvs_store_close(s);
    if (rc)
        return fail(rc, "import");
    char h[TVS_ID_HEX + 1];
    printf("imported %s as %s (model %s)\n", argv[optind], as, hex(&id, h));
    return 0;
}

/* ---------------------------------------------------------------- export */

static int cmd_export(int argc, char **argv)
{
    static const struct option opts[] = {
        { "output", required_argument, 0, 'o' }, { "threads", required_argument, 0, 't' },
        { 0, 0, 0, 0 } };
    const char *out = NULL;
    tvs_export_opts o = TVS_EXPORT_OPTS_INIT;
    int c;
    while ((c = getopt_long(argc, argv, "o:t:", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 't': o.threads = atoi(optarg); break;
        default: return usage_error("export", "unknown option");
        }
    }
    if (optind + 1 != argc)
        return usage_error("export", "give exactly one NAME");
    if (!out)
        return usage_error("export", "-o PATH is required");
    tvs_store *s;
    int rc = open_store(&s, 1);
    if (rc)
        return fail(rc, "export");
    progress p;
    progress_init(&p, "exporting");
    if (strcmp(out, "-") != 0) {
        o.progress = progress_cb;
        o.progress_payload = &p;
    }
    rc = tvs_export(s, argv[optind], out, &o);
    progress_done(&p);
    tvs_store_close(s);
    return rc ? fail(rc, "export") : 0;
}

/* -------------------------------------------------------------------- ls */

typedef struct {
    tvs_txn *txn;
    json_t *arr;
} ls_ctx;

static int ls_one(const char *name, const tvs_id *id, void *p)
{
    ls_ctx *c = p;
    tvs_model_obj m;
    uint64_t size = 0;
    char h[TVS_ID_HEX + 1], when[64], sz[32];
    int rc = tvs_model_load(&m, c->txn, id);
    if (rc)
        return tvs__failctx(rc, "ref '%s'", name);
    rc = tvs_model_logical_size(&size, c->txn, &m);
    fmt_time(when, sizeof when, m.time);
    if (!rc && c->arr) {
        json_array_append_new(c->arr, json_pack(
            "{s:s, s:s, s:s, s:I, s:s, s:s%}", "name", name, "model", hex(id, h),
            "kind", m.kind == TVS_MODEL_DELTA ? "delta" : "full", "logical_bytes",
            (json_int_t)size, "time", when, "message", (const char *)m.message.ptr,
            m.message.len));
    } else if (!rc) {
        tvs_fmt_bytes(sz, sizeof sz, (double)size);
        printf("%-32s %.12s  %-5s %11s  %s  %.*s\n", name, hex(id, h),
               m.kind == TVS_MODEL_DELTA ? "delta" : "full", sz, when, (int)m.message.len,
               (const char *)m.message.ptr);
    }
    tvs_model_dispose(&m);
    return rc;
}

static int cmd_ls(int argc, char **argv)
{
    static const struct option opts[] = { { "json", no_argument, 0, OPT_JSON },
                                          { 0, 0, 0, 0 } };
    int json = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == OPT_JSON)
            json = 1;
        else
            return usage_error("ls", "unknown option");
    }
    if (optind + 1 < argc)
        return usage_error("ls", "at most one PREFIX");
    tvs_store *s;
    tvs_txn *txn = NULL;
    int rc = open_store(&s, 1);
    if (rc)
        return fail(rc, "ls");
    ls_ctx ctx = { NULL, json ? json_array() : NULL };
    if (!(rc = tvs_txn_begin(&txn, s, TVS_TXN_READ))) {
        ctx.txn = txn;
        rc = tvs_ref_foreach(txn, optind < argc ? argv[optind] : NULL, ls_one, &ctx);
    }
    tvs_txn_end(txn);
    tvs_store_close(s);
    if (rc) {
        json_decref(ctx.arr);
        return fail(rc, "ls");
    }
    if (json)
        print_json(ctx.arr);
    return 0;
}

/* ------------------------------------------------------------------ show */

typedef struct {
    uint64_t stored;
    unsigned codecs;   /* bit per codec id seen */
} tensor_info;

static int tensor_stored(tensor_info *out, tvs_txn *txn, const tvs_tensor_obj *t)
{
    memset(out, 0, sizeof *out);
    for (uint32_t c = 0; c < t->n_chunks; c++) {
        tvs_id id;
        tvs_span b;
        uint8_t codec;
        uint32_t raw;
        tvs_tensor_chunk_id(&id, t, c);
        int rc = tvs_obj_get(&b, txn, &id);
        if (!rc)
            rc = tvs_chunk_info(&codec, &raw, b);
        if (rc)
            return rc;
        out->stored += b.len;
        if (codec < 16)
            out->codecs |= 1u << codec;
    }
    return 0;
}

static void codec_list(char *out, size_t cap, unsigned codecs)
{
    out[0] = 0;
    for (unsigned c = 0; c < 16; c++)
        if (codecs & (1u << c)) {
            size_t n = strlen(out);
            snprintf(out + n, cap - n, "%s%s", n ? "+" : "", tvs_codec_name(c));
        }
    if (!out[0])
        snprintf(out, cap, "empty");
}

static void shape_str(char *out, size_t cap, const tvs_tensor_obj *t)
{
    size_t n = (size_t)snprintf(out, cap, "[");
    for (uint32_t i = 0; i < t->rank && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s%llu", i ? "," : "",
                              (unsigned long long)t->shape[i]);
    if (n < cap)
        snprintf(out + n, cap - n, "]");
}

static int show_file(tvs_txn *txn, const tvs_model_file *f, json_t *jfiles, int *first)
{
    json_t *jt = json_array();
    uint64_t logical = 0, stored = 0;
    int rc = 0;
    if (!jfiles) {
        printf("%sfile %.*s (%s)\n", *first ? "" : "\n", (int)f->name.len,
               (const char *)f->name.ptr, f->kind == TVS_FILE_BLOB ? "blob" : "safetensors");
        if (f->kind == TVS_FILE_SAFETENSORS)
            printf("  %-48s %-6s %-14s %11s %11s  %s\n", "tensor", "dtype", "shape",
                   "logical", "stored", "encoding");
    }
    *first = 0;
    size_t n = f->kind == TVS_FILE_BLOB ? 1 : f->n_tensors;
    for (size_t i = 0; !rc && i < n; i++) {
        const tvs_id *id = f->kind == TVS_FILE_BLOB ? &f->blob : &f->tensors[i].id;
        tvs_tensor_obj t;
        tensor_info ti;
        if ((rc = tvs_tensor_load(&t, txn, id)) || (rc = tensor_stored(&ti, txn, &t)))
            break;
        char shape[256], enc[64], lg[32], st[32];
        shape_str(shape, sizeof shape, &t);
        codec_list(enc, sizeof enc, ti.codecs);
        logical += t.nbytes;
        stored += ti.stored;
        if (f->kind == TVS_FILE_BLOB) {
            if (!jfiles) {
                tvs_fmt_bytes(lg, sizeof lg, (double)t.nbytes);
                tvs_fmt_bytes(st, sizeof st, (double)ti.stored);
                printf("  %s logical, %s stored, %s\n", lg, st, enc);
            }
            continue;
        }
        if (jfiles) {
            json_array_append_new(jt, json_pack(
                "{s:s%, s:s, s:s, s:I, s:I, s:s}", "name", f->tensors[i].name.ptr,
                f->tensors[i].name.len, "dtype", tvs_dtype_name(t.dtype), "shape", shape,
                "logical_bytes", (json_int_t)t.nbytes, "stored_bytes", (json_int_t)ti.stored,
                "encoding", enc));
        } else {
            tvs_fmt_bytes(lg, sizeof lg, (double)t.nbytes);
            tvs_fmt_bytes(st, sizeof st, (double)ti.stored);
            printf("  %-48.*s %-6s %-14s %11s %11s  %s\n", (int)f->tensors[i].name.len,
                   (const char *)f->tensors[i].name.ptr, tvs_dtype_name(t.dtype), shape, lg,
                   st, enc);
        }
    }
    if (!rc && jfiles)
        json_array_append_new(jfiles, json_pack(
            "{s:s%, s:s, s:I, s:I, s:o}", "name", f->name.ptr, f->name.len, "kind",
            f->kind == TVS_FILE_BLOB ? "blob" : "safetensors", "logical_bytes",
            (json_int_t)logical, "stored_bytes", (json_int_t)stored, "tensors", jt));
    else
        json_decref(jt);
    return rc;
}

static int cmd_show(int argc, char **argv)
{
    static const struct option opts[] = { { "json", no_argument, 0, OPT_JSON },
                                          { 0, 0, 0, 0 } };
    int json = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == OPT_JSON)
            json = 1;
        else
            return usage_error("show", "unknown option");
    }
    if (optind + 1 != argc)
        return usage_error("show", "give exactly one NAME");
    tvs_store *s;
    tvs_txn *txn = NULL;
    tvs_model_obj m = { 0 };
    tvs_id id;
    char h[TVS_ID_HEX + 1], when[64];
    int rc = open_store(&s, 1);
    if (rc)
        return fail(rc, "show");
    if ((rc = tvs_txn_begin(&txn, s, TVS_TXN_READ)) ||
        (rc = tvs_resolve(&id, txn, argv[optind])) || (rc = tvs_model_load(&m, txn, &id)))
        goto out;
    fmt_time(when, sizeof when, m.time);
    json_t *jm = NULL, *jfiles = NULL;
    if (json) {
        json_t *parents = json_array();
        for (size_t i = 0; i < m.n_parents; i++)
            json_array_append_new(parents, json_string(hex(&m.parents[i], h)));
        jfiles = json_array();
        jm = json_pack("{s:s, s:s, s:o, s:s, s:s%, s:s%, s:o}", "model", hex(&id, h), "kind",
                       m.kind == TVS_MODEL_DELTA ? "delta" : "full", "parents", parents,
                       "time", when, "author", m.author.ptr, m.author.len, "message",
                       m.message.ptr, m.message.len, "files", jfiles);
    } else {
        printf("model    %s\nkind     %s\n", hex(&id, h),
               m.kind == TVS_MODEL_DELTA ? "delta" : "full");
        for (size_t i = 0; i < m.n_parents; i++)
            printf("parent   %s\n", hex(&m.parents[i], h));
        printf("date     %s\nauthor   %.*s\nmessage  %.*s\n\n", when, (int)m.author.len,
               (const char *)m.author.ptr, (int)m.message.len, (const char *)m.message.ptr);
    }
    int first = 1;
    for (size_t i = 0; !rc && i < m.n_files; i++)
        rc = show_file(txn, &m.files[i], jfiles, &first);
    if (json && !rc)
        print_json(jm);
    else
        json_decref(jm);
out:
    tvs_model_dispose(&m);
    tvs_txn_end(txn);
    tvs_store_close(s);
    return rc ? fail(rc, "show") : 0;
}

/* ------------------------------------------------------------------- log */

static int cmd_log(int argc, char **argv)
{
    static const struct option opts[] = { { "json", no_argument, 0, OPT_JSON },
                                          { 0, 0, 0, 0 } };
    int json = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == OPT_JSON)
            json = 1;
        else
            return usage_error("log", "unknown option");
    }
    if (optind + 1 != argc)
        return usage_error("log", "give exactly one NAME");
    tvs_store *s;
    tvs_txn *txn = NULL;
    tvs_id id;
    int rc = open_store(&s, 1);
    if (rc)
        return fail(rc, "log");
    json_t *arr = json ? json_array() : NULL;
    if ((rc = tvs_txn_begin(&txn, s, TVS_TXN_READ)) ||
        (rc = tvs_resolve(&id, txn, argv[optind])))
        goto out;
    for (int first = 1;; first = 0) {
        tvs_model_obj m;
        char h[TVS_ID_HEX + 1], when[64];
        if ((rc = tvs_model_load(&m, txn, &id)))
            break;
        fmt_time(when, sizeof when, m.time);
        if (json)
            json_array_append_new(arr, json_pack(
                "{s:s, s:s, s:s, s:s%, s:s%}", "model", hex(&id, h), "kind",
                m.kind == TVS_MODEL_DELTA ? "delta" : "full", "time", when, "author",
                m.author.ptr, m.author.len, "message", m.message.ptr, m.message.len));
        else
            printf("%smodel %s (%s)\nDate:   %s\nAuthor: %.*s\n\n    %.*s\n", first ? "" : "\n",
                   hex(&id, h), m.kind == TVS_MODEL_DELTA ? "delta" : "full", when,
                   (int)m.author.len, (const char *)m.author.ptr, (int)m.message.len,
                   (const char *)m.message.ptr);
        int more = m.n_parents > 0;
        if (more)
            id = m.parents[0];
        tvs_model_dispose(&m);
        if (!more)
            break;
        if (!tvs_obj_has(txn, &id))
            break;   /* history before this version was collected */
    }
out:
    tvs_txn_end(txn);
    tvs_store_close(s);
    if (rc) {
        json_decref(arr);
        return fail(rc, "log");
    }
    if (json)
        print_json(arr);
    return 0;
}

/* ------------------------------------------------------------ refs: tag */

typedef struct {
    const char *name, *target, *msg;
    int force;
    tvs_id id;
} ref_op;

static int tag_txn(tvs_txn *txn, void *p)
{
    ref_op *op = p;
    static const tvs_id zero;
    int rc = tvs_resolve(&op->id, txn, op->target);
    if (!rc && !tvs_obj_has(txn, &op->id))
        rc = tvs__fail(TVS_ENOTFOUND, "model for '%s' is no longer stored", op->target);
    if (!rc)
        rc = tvs_ref_set(txn, op->name, &op->id, op->force ? NULL : &zero, op->msg);
    return rc;
}

static int do_ref_set(const char *cmd, const char *name, const char *target, int force)
{
    char msg[600];
    snprintf(msg, sizeof msg, "%s %s %s", cmd, name, target);
    ref_op op = { name, target, msg, force, { { 0 } } };
    tvs_store *s;
    int rc = open_store(&s, 0);
    if (!rc)
        rc = tvs_store_write(s, 1u << 20, tag_txn, &op);
    tvs_store_close(s);
    return rc ? fail(rc, cmd) : 0;
}

static int cmd_tag(int argc, char **argv)
{
    static const struct option opts[] = { { "force", no_argument, 0, 'f' },
                                          { 0, 0, 0, 0 } };
    int force = 0, c;
    while ((c = getopt_long(argc, argv, "f", opts, NULL)) != -1) {
        if (c == 'f')
            force = 1;
        else
            return usage_error("tag", "unknown option");
    }
    if (optind + 2 != argc)
        return usage_error("tag", "give NEW-NAME and TARGET");
    return do_ref_set("tag", argv[optind], argv[optind + 1], force);
}

static int del_txn(tvs_txn *txn, void *p)
{
    return tvs_ref_del(txn, (const char *)p);
}

static int do_ref_del(const char *cmd, const char *name)
{
    tvs_store *s;
    int rc = open_store(&s, 0);
    if (!rc)
        rc = tvs_store_write(s, 1u << 20, del_txn, (void *)name);
    tvs_store_close(s);
    return rc ? fail(rc, cmd) : 0;
}

typedef struct { const char *from, *to; } rename_op;

static int rename_txn(tvs_txn *txn, void *p)
{
    rename_op *r = p;
    static const tvs_id zero;
    tvs_id id;
    char msg[600];
    snprintf(msg, sizeof msg, "rename %s %s", r->from, r->to);
    int rc = tvs_ref_get(&id, txn, r->from);
    if (!rc) rc = tvs_ref_set(txn, r->to, &id, &zero, msg);
    if (!rc) rc = tvs_ref_del(txn, r->from);
    return rc;
}

static int cmd_ref(int argc, char **argv)
{
    if (argc < 2)
        return usage_error("ref", "give a subcommand: list, set, rm, rename");
    const char *sub = argv[1];
    if (!strcmp(sub, "list") || !strcmp(sub, "ls")) {
        char *av[] = { "ls", argc > 2 ? argv[2] : NULL, NULL };
        optind = 1;
        return cmd_ls(argc > 2 ? 2 : 1, av);
    }
    if (!strcmp(sub, "set") && argc == 4)
        return do_ref_set("ref set", argv[2], argv[3], 1);
    if (!strcmp(sub, "rm") && argc == 3)
        return do_ref_del("ref rm", argv[2]);
    if (!strcmp(sub, "rename") && argc == 4) {
        rename_op r = { argv[2], argv[3] };
        tvs_store *s;
        int rc = open_store(&s, 0);
        if (!rc)
            rc = tvs_store_write(s, 1u << 20, rename_txn, &r);
        tvs_store_close(s);
        return rc ? fail(rc, "ref rename") : 0;
    }
    return usage_error("ref", "expected 'list [PREFIX]', 'set NAME TARGET', 'rm NAME' or "
                       "'rename OLD NEW'");
}

static int cmd_rm(int argc, char **argv)
{
    if (argc != 2)
        return usage_error("rm", "give exactly one NAME");
    int rc = do_ref_del("rm", argv[1]);
    if (!rc)
        printf("removed ref %s; run 'tvs gc' to reclaim what only it used\n", argv[1]);
    return rc;
}

/* -------------------------------------------------------------------- gc */

static int cmd_gc(int argc, char **argv)
{
    static const struct option opts[] = { { "dry-run", no_argument, 0, 'n' },
                                          { "json", no_argument, 0, OPT_JSON },
                                          { 0, 0, 0, 0 } };
    int dry = 0, json = 0, c;
    while ((c = getopt_long(argc, argv, "n", opts, NULL)) != -1) {
        if (c == 'n')
            dry = 1;
        else if (c == OPT_JSON)
            json = 1;
        else
            return usage_error("gc", "unknown option");
    }
    tvs_store *s;
    tvs_gc_result r;
    int rc = open_store(&s, 0);
    if (!rc)
        rc = tvs_gc(&r, s, dry);
    tvs_store_close(s);
    if (rc)
        return fail(rc, "gc");
    if (json) {
        print_json(json_pack("{s:b, s:I, s:I, s:I, s:I}", "dry_run", dry, "freed_objects",
                             (json_int_t)r.freed_objects, "freed_bytes",
                             (json_int_t)r.freed_bytes, "kept_objects",
                             (json_int_t)r.kept_objects, "kept_bytes",
                             (json_int_t)r.kept_bytes));
        return 0;
    }
    char fb[32], kb[32];
    tvs_fmt_bytes(fb, sizeof fb, (double)r.freed_bytes);
    tvs_fmt_bytes(kb, sizeof kb, (double)r.kept_bytes);
    printf("%s %llu objects, %s (%llu bytes); kept %llu objects, %s\n",
           dry ? "would free" : "freed", (unsigned long long)r.freed_objects, fb,
           (unsigned long long)r.freed_bytes, (unsigned long long)r.kept_objects, kb);
    return 0;
}

/* ------------------------------------------------------------------ fsck */

static void fsck_line(void *p, const char *line)
{
    fprintf(stderr, "fsck: %s\n", line);
}

static int cmd_fsck(int argc, char **argv)
{
    if (argc > 1)
        return usage_error("fsck", "takes no arguments");
    tvs_store *s;
    tvs_fsck_result r;
    int rc = open_store(&s, 1);
    if (!rc)
        rc = tvs_fsck(&r, s, fsck_line, NULL);
    tvs_store_close(s);
    if (rc)
        return fail(rc, "fsck");
    char b[32], d[32], u[32];
    tvs_fmt_bytes(b, sizeof b, (double)r.bytes);
    tvs_fmt_bytes(d, sizeof d, (double)r.decoded_bytes);
    tvs_fmt_bytes(u, sizeof u, (double)r.unreachable_bytes);
    printf("checked %llu objects (%s), decoded %llu tensors (%s); %llu unreachable (%s)\n",
           (unsigned long long)r.objects, b, (unsigned long long)r.tensors_checked, d,
           (unsigned long long)r.unreachable, u);
    if (r.problems) {
        fprintf(stderr, "fsck: %llu problem%s found\n", (unsigned long long)r.problems,
                r.problems == 1 ? "" : "s");
        return exit_code(TVS_ECORRUPT);
    }
    printf("no problems found\n");
    return 0;
}

/* ----------------------------------------------------------------- stats */

static double ratio(uint64_t a, uint64_t b) { return b ? (double)a / (double)b : 0; }

static int cmd_stats(int argc, char **argv)
{
    static const struct option opts[] = { { "json", no_argument, 0, OPT_JSON },
                                          { 0, 0, 0, 0 } };
    int json = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == OPT_JSON)
            json = 1;
        else
            return usage_error("stats", "unknown option");
    }
    tvs_store *s;
    tvs_stats st;
    int rc = open_store(&s, 1);
    if (!rc)
        rc = tvs_stats_get(&st, s);
    tvs_store_close(s);
    if (rc)
        return fail(rc, "stats");
    uint64_t saved = st.standalone > st.reachable ? st.standalone - st.reachable : 0;
    if (json) {
        json_t *models = json_array();
        for (size_t i = 0; i < st.n_refs; i++) {
            const tvs_stats_model *m = &st.refs[i];
            char h[TVS_ID_HEX + 1];
            json_array_append_new(models, json_pack(
                "{s:s, s:s, s:s, s:I, s:I, s:I, s:f}", "name", m->name, "model",
                hex(&m->id, h), "kind", m->kind == TVS_MODEL_DELTA ? "delta" : "full",
                "logical_bytes", (json_int_t)m->logical, "stored_bytes", (json_int_t)m->stored,
                "own_bytes", (json_int_t)m->own, "ratio", ratio(m->stored, m->logical)));
        }
        print_json(json_pack(
            "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:f, s:I, s:I, s:o}", "objects",
            (json_int_t)st.objects, "chunks", (json_int_t)st.chunks, "tensors",
            (json_int_t)st.tensors, "models", (json_int_t)st.models, "logical_bytes",
            (json_int_t)st.logical, "stored_bytes", (json_int_t)st.stored,
            "reachable_bytes", (json_int_t)st.reachable, "ratio",
            ratio(st.reachable, st.logical), "dedup_saved_bytes", (json_int_t)saved,
            "file_bytes", (json_int_t)st.file_bytes, "refs", models));
        tvs_stats_dispose(&st);
        return 0;
    }
    char a[32], b[32], d[32], f[32], u[32];
    tvs_fmt_bytes(a, sizeof a, (double)st.logical);
    tvs_fmt_bytes(b, sizeof b, (double)st.reachable);
    tvs_fmt_bytes(d, sizeof d, (double)saved);
    tvs_fmt_bytes(f, sizeof f, (double)st.file_bytes);
    tvs_fmt_bytes(u, sizeof u, (double)(st.stored - st.reachable));
    printf("refs %zu, models %llu, tensors %llu, chunks %llu\n", st.n_refs,
           (unsigned long long)st.models, (unsigned long long)st.tensors,
           (unsigned long long)st.chunks);
    printf("logical bytes   %12s  (%llu)\n", a, (unsigned long long)st.logical);
    printf("stored bytes    %12s  (%llu), ratio %.4f\n", b, (unsigned long long)st.reachable,
           ratio(st.reachable, st.logical));
    printf("dedup saved     %12s  (%llu)\n", d, (unsigned long long)saved);
    printf("unreachable     %12s  (run 'tvs gc')\n", u);
    printf("store file      %12s\n", f);
    if (st.n_refs) {
        printf("\n%-32s %-5s %11s %11s %7s %11s\n", "ref", "kind", "logical", "stored",
               "ratio", "own");
        for (size_t i = 0; i < st.n_refs; i++) {
            const tvs_stats_model *m = &st.refs[i];
            tvs_fmt_bytes(a, sizeof a, (double)m->logical);
            tvs_fmt_bytes(b, sizeof b, (double)m->stored);
            tvs_fmt_bytes(d, sizeof d, (double)m->own);
            printf("%-32s %-5s %11s %11s %7.4f %11s\n", m->name,
                   m->kind == TVS_MODEL_DELTA ? "delta" : "full", a, b,
                   ratio(m->stored, m->logical), d);
        }
    }
    tvs_stats_dispose(&st);
    return 0;
}

/* ------------------------------------------------------------- the table */

typedef struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *usage;
    const char *help;
} command;

static const command commands[] = {
    { "init", cmd_init, "init [DIR]",
      "Create a store in DIR (default: the current folder), in DIR/.tvs." },
    { "import", cmd_import, "import PATH --as NAME [-m MSG] [--threads N]",
      "Import a .safetensors file or a model folder (shards, index.json, config and\n"
      "tokenizer files) as NAME. If NAME exists, the new model is its next version." },
    { "export", cmd_export, "export NAME -o PATH [--threads N]",
      "Write NAME back out: one file (PATH, or PATH/<original name> if PATH is a\n"
      "folder; '-' = stdout) or a folder, byte-identical to what was imported." },
    { "ls", cmd_ls, "ls [PREFIX] [--json]", "List refs (optionally those starting with PREFIX)." },
    { "show", cmd_show, "show NAME [--json]",
      "Show a model: files, tensors (dtype, shape, logical and stored size, encoding)." },
    { "log", cmd_log, "log NAME [--json]", "Show the versions of NAME, newest first." },
    { "tag", cmd_tag, "tag NEW-NAME TARGET [-f]",
      "Create ref NEW-NAME pointing at TARGET (a ref, NAME@id or id); -f moves it." },
    { "ref", cmd_ref, "ref list [PREFIX] | set NAME TARGET | rm NAME | rename OLD NEW",
      "Manage refs: names like llama-3.1/math are allowed." },
    { "rm", cmd_rm, "rm NAME", "Delete ref NAME; 'tvs gc' then reclaims what only it used." },
    { "gc", cmd_gc, "gc [--dry-run] [--json]",
      "Delete every object no ref reaches; report the bytes freed." },
    { "fsck", cmd_fsck, "fsck",
      "Re-hash every object, check every ref's objects and every tensor's decoded\n"
      "checksum. Exits non-zero and lists each problem if anything is wrong." },
    { "stats", cmd_stats, "stats [--json]",
      "Logical and stored bytes, ratio, dedup savings, and a line per ref." },
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: tvs [--store DIR] COMMAND [ARGS]\n\n"
               "tvstore: a versioned, content-addressed store for model weights.\n"
               "The store is DIR (--store), else $TVS_STORE, else found in the current\n"
               "folder or a parent (like git).\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %s\n", commands[i].usage);
    fprintf(f, "\n'tvs COMMAND --help' tells more.\n");
}

int main(int argc, char **argv)
{
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
        if (!strcmp(argv[i], "--version")) {
            printf("tvs 0.1.0 (store format %d)\n", TVS_FORMAT_VERSION);
            return 0;
        }
        if (!strcmp(argv[i], "--store") && i + 1 < argc) {
            g_store = argv[++i];
            continue;
        }
        if (!strncmp(argv[i], "--store=", 8)) {
            g_store = argv[i] + 8;
            continue;
        }
        fprintf(stderr, "tvs: unknown option '%s'\n", argv[i]);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (i >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    for (size_t c = 0; c < N_COMMANDS; c++) {
        if (strcmp(argv[i], commands[c].name))
            continue;
        if (want_help(argc - i, argv + i)) {
            printf("usage: tvs %s\n\n%s\n", commands[c].usage, commands[c].help);
            return 0;
        }
        optind = 1;
        return commands[c].fn(argc - i, argv + i);
    }
    fprintf(stderr, "tvs: '%s' is not a command\n", argv[i]);
    usage(stderr);
    return EXIT_USAGE;
}
