/*
 * tvs: the command line. Each command parses its arguments, calls libtvs,
 * and prints for humans or (--json) for programs. Errors print one line,
 * "tvs: <what>: <why>", and map to an exit code in one table (exit_code).
 */
#include <errno.h>
#include <math.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cli/progress.h"
#include "engine/maint.h"
#include "engine/model.h"
#include "engine/outfile.h"
#include "engine/store.h"
#include "format/codec.h"
#include "format/dtype.h"
#include "format/lossy.h"
#include "query/plan.h"

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

static char **g_cmd_argv;   /* the running command's arguments, to name a bad option */

static int usage_error(const char *cmd, const char *msg)
{
    /* getopt prints nothing (opterr = 0): say here which option it stopped at */
    if (!strcmp(msg, "unknown option") && g_cmd_argv && optind > 0) {
        char opt[3] = { '-', (char)optopt, 0 };
        fprintf(stderr, "tvs %s: unknown option, or option without its value: '%s' (see "
                "'tvs %s --help')\n", cmd, optopt ? opt : g_cmd_argv[optind - 1], cmd);
        return EXIT_USAGE;
    }
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

/* Length of the valid UTF-8 sequence at @p p (as jansson checks it), or 0. */
static size_t utf8_seq(const uint8_t *p, size_t avail)
{
    uint8_t c = p[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0)
        n = 2, cp = c & 0x1f;
    else if ((c & 0xf0) == 0xe0)
        n = 3, cp = c & 0x0f;
    else if ((c & 0xf8) == 0xf0)
        n = 4, cp = c & 0x07;
    else
        return 0;
    if (n > avail)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* A JSON string of stored text that may not be UTF-8 (messages, authors,
 * file names): json_pack would fail on it and silently drop the whole
 * value, so invalid bytes become U+FFFD instead. */
static json_t *json_text(tvs_span t)
{
    json_t *j = json_stringn((const char *)t.ptr, t.len);
    if (j)
        return j;
    char *u = malloc(3 * t.len + 1);
    size_t n = 0;
    if (!u)
        return NULL;
    for (size_t i = 0; i < t.len;) {
        size_t k = utf8_seq(t.ptr + i, t.len - i);
        if (k) {
            memcpy(u + n, t.ptr + i, k);
            n += k;
            i += k;
        } else {
            memcpy(u + n, "\xef\xbf\xbd", 3);
            n += 3;
            i++;
        }
    }
    j = json_stringn(u, n);
    free(u);
    return j;
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

/* Names of the refs pointing at @p id, comma-separated, into @p out. */
typedef struct { const tvs_id *id; char *out; size_t cap; } names_ctx;

static int name_cb(const char *name, const tvs_id *id, void *p)
{
    names_ctx *c = p;
    if (!tvs_id_eq(id, c->id))
        return 0;
    size_t n = strlen(c->out);
    snprintf(c->out + n, c->cap - n, "%s%s", n ? ", " : "", name);
    return 0;
}

static void ref_names(char *out, size_t cap, tvs_store *s, const tvs_id *id)
{
    tvs_txn *txn;
    names_ctx c = { id, out, cap };
    out[0] = 0;
    if (tvs_txn_begin(&txn, s, TVS_TXN_READ) == 0) {
        tvs_ref_foreach(txn, NULL, name_cb, &c);
        tvs_txn_end(txn);
    }
    if (!out[0])
        tvs_id_hex(out, id);
}

static void print_import(const char *what, const char *as, const tvs_import_result *r)
{
    char h[TVS_ID_HEX + 1], w[32], l[32];
    tvs_fmt_bytes(w, sizeof w, (double)r->written);
    tvs_fmt_bytes(l, sizeof l, (double)r->logical);
    printf("imported %s as %s (model %s)\n", what, as, hex(&r->model, h));
    printf("  %zu tensors: %zu unchanged from base, %zu deduplicated, %zu delta, %zu full; "
           "%s logical, %s newly stored (%.4f)\n", r->n_tensors, r->n_unchanged, r->n_dedup,
           r->n_delta, r->n_full, l, w, r->logical ? (double)r->written / r->logical : 0);
    if (r->n_lossy)
        printf("  lossy: %zu tensors in %zu units; %.3f bits per parameter (1/%.1f of BF16); "
               "relative error %.4f overall, %.4f in the worst unit\n", r->n_lossy,
               r->n_units, r->params ? (double)r->own * 8 / (double)r->params : 0,
               r->own ? (double)r->params * 2 / (double)r->own : 0, r->err_l2,
               r->max_unit_err);
}

/* A number for a lossy option: the whole argument, finite. */
static int parse_real(double *out, const char *s, const char *opt)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v)) {
        fprintf(stderr, "tvs: %s \"%s\" is not a number\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* --max-error (opt 'E') or --bits ('B') into @p o: 0, or an exit code. */
static int lossy_budget(tvs_import_opts *o, int opt, const char *arg, const char *cmd)
{
    if (opt == 'E') {
        if (parse_real(&o->max_error, arg, "--max-error"))
            return 2;
        if (!(o->max_error > 0 && o->max_error < 1))
            return usage_error(cmd, "--max-error E is a relative L2 error: 0 < E < 1");
        return 0;
    }
    if (parse_real(&o->bits, arg, "--bits"))
        return 2;
    if (!(o->bits > 0 && o->bits <= 16))
        return usage_error(cmd, "--bits B is an average of bits per parameter: 0 < B <= 16");
    return 0;
}

#define MAX_PARENTS 16

static int cmd_import(int argc, char **argv)
{
    static const struct option opts[] = {
        { "as", required_argument, 0, 'a' }, { "message", required_argument, 0, 'm' },
        { "threads", required_argument, 0, 't' }, { "level", required_argument, 0, 'l' },
        { "base", required_argument, 0, 'b' }, { "parent", required_argument, 0, 'p' },
        { "lossy", no_argument, 0, 'L' }, { "max-error", required_argument, 0, 'E' },
        { "bits", required_argument, 0, 'B' }, { "lora", no_argument, 0, 'R' },
        { 0, 0, 0, 0 } };
    const char *as = NULL, *parents[MAX_PARENTS];
    tvs_import_opts o = TVS_IMPORT_OPTS_INIT;
    int c, lossy = 0, lora = 0, budget = 0;
    while ((c = getopt_long(argc, argv, "a:m:t:b:p:", opts, NULL)) != -1) {
        switch (c) {
        case 'L': lossy = 1; break;
        case 'R': lora = 1; break;
        case 'E':
        case 'B':
            budget++;
            if ((c = lossy_budget(&o, c, optarg, "import")))
                return c;
            break;
        case 'a': as = optarg; break;
        case 'm': o.message = optarg; break;
        case 't': o.threads = atoi(optarg); break;
        case 'l': o.level = atoi(optarg); break;
        case 'b': o.base = optarg; break;
        case 'p':
            if (o.n_parents == MAX_PARENTS)
                return usage_error("import", "too many --parent");
            parents[o.n_parents++] = optarg;
            break;
        default: return usage_error("import", "unknown option");
        }
    }
    o.parents = parents;
    if (optind + 1 != argc)
        return usage_error("import", "give exactly one PATH");
    if (!as)
        return usage_error("import", "--as NAME is required");
    if (lossy != (budget > 0) && !lora)
        return usage_error("import", lossy ? "--lossy needs --max-error E or --bits B"
                                           : "--max-error and --bits go with --lossy");
    if (budget > 1)
        return usage_error("import", "give one of --max-error and --bits");
    if ((lossy || lora) && (!o.base || (strcmp(o.base, "auto") == 0 && lora)))
        return usage_error("import", lora ? "--lora needs --base BASE: the model the adapter "
                                            "was trained on"
                                          : "--lossy stores a delta: give --base BASE (the "
                                            "model it was fine-tuned from); a full model "
                                            "cannot be stored lossy");
    if (lora && budget)
        return usage_error("import", "--lora stores the adapter's factors exactly; re-encode "
                           "it afterwards with tvs compress");
    tvs_store *s;
    int rc = open_store(&s, 0);
    if (rc)
        return fail(rc, "import");
    if (lora) {
        tvs_import_result r;
        rc = tvs_import_lora(&r, s, argv[optind], o.base, as, &o);
        tvs_store_close(s);
        if (rc)
            return fail(rc, "import");
        print_import(argv[optind], as, &r);
        return 0;
    }
    progress p;
    progress_init(&p, "importing");
    o.progress = progress_cb;
    o.progress_payload = &p;
    tvs_import_result r;
    rc = tvs_import(&r, s, argv[optind], as, &o);
    progress_done(&p);
    if (!rc && o.base) {
        char names[512];
        ref_names(names, sizeof names, s, &r.base);
        if (r.base_reason[0])
            printf("base auto: picked %s: %s\n", names, r.base_reason);
        else
            printf("delta of %s\n", names);
    }
    tvs_store_close(s);
    if (rc)
        return fail(rc, "import");
    print_import(argv[optind], as, &r);
    return 0;
}

static int cmd_diff(int argc, char **argv)
{
    static const struct option opts[] = {
        { "as", required_argument, 0, 'a' }, { "message", required_argument, 0, 'm' },
        { 0, 0, 0, 0 } };
    const char *as = NULL;
    tvs_import_opts o = TVS_IMPORT_OPTS_INIT;
    int c;
    while ((c = getopt_long(argc, argv, "a:m:", opts, NULL)) != -1) {
        switch (c) {
        case 'a': as = optarg; break;
        case 'm': o.message = optarg; break;
        default: return usage_error("diff", "unknown option");
        }
    }
    if (optind + 2 != argc)
        return usage_error("diff", "give A and B");
    if (!as)
        return usage_error("diff", "--as NAME is required");
    tvs_store *s;
    tvs_import_result r;
    int rc = open_store(&s, 0);
    if (!rc)
        rc = tvs_diff(&r, s, argv[optind], argv[optind + 1], as, &o);
    tvs_store_close(s);
    if (rc)
        return fail(rc, "diff");
    print_import(argv[optind + 1], as, &r);
    return 0;
}

static int cmd_compress(int argc, char **argv)
{
    static const struct option opts[] = {
        { "as", required_argument, 0, 'a' }, { "message", required_argument, 0, 'm' },
        { "threads", required_argument, 0, 't' }, { "max-error", required_argument, 0, 'E' },
        { "bits", required_argument, 0, 'B' }, { 0, 0, 0, 0 } };
    const char *as = NULL;
    tvs_import_opts o = TVS_IMPORT_OPTS_INIT;
    int c, budget = 0;
    char msg[600];
    while ((c = getopt_long(argc, argv, "a:m:t:", opts, NULL)) != -1) {
        switch (c) {
        case 'a': as = optarg; break;
        case 'm': o.message = optarg; break;
        case 't': o.threads = atoi(optarg); break;
        case 'E':
        case 'B':
            budget++;
            if ((c = lossy_budget(&o, c, optarg, "compress")))
                return c;
            break;
        default: return usage_error("compress", "unknown option");
        }
    }
    if (optind + 1 != argc)
        return usage_error("compress", "give exactly one NAME");
    if (!as)
        return usage_error("compress", "--as NAME2 is required");
    if (budget != 1)
        return usage_error("compress", "give one of --max-error E and --bits B");
    const char *name = argv[optind];
    tvs_store *s;
    tvs_txn *txn = NULL;
    tvs_id id;
    tvs_model_obj m;
    char base[TVS_ID_HEX + 1];
    int rc = open_store(&s, 0);
    if (rc)
        return fail(rc, "compress");
    if (!(rc = tvs_txn_begin(&txn, s, TVS_TXN_READ)) && !(rc = tvs_resolve(&id, txn, name)) &&
        !(rc = tvs_model_load(&m, txn, &id))) {
        if (m.kind != TVS_MODEL_DELTA)
            rc = tvs__fail(TVS_EINVAL, "'%s' is a full model; lossy encodings are deltas: "
                           "store it as a delta first (tvs diff BASE %s --as NAME) or import "
                           "it with --lossy --base BASE", name, name);
        else
            tvs_id_hex(base, &m.base);
        tvs_model_dispose(&m);
    }
    tvs_txn_end(txn);
    if (!rc) {
        snprintf(msg, sizeof msg, "compress %s (%s %g)", name,
                 o.bits > 0 ? "--bits" : "--max-error", o.bits > 0 ? o.bits : o.max_error);
        if (!o.message)
            o.message = msg;
        progress p;
        progress_init(&p, "compressing");
        o.progress = progress_cb;
        o.progress_payload = &p;
        tvs_import_result r;
        rc = tvs_diff(&r, s, base, name, as, &o);
        progress_done(&p);
        if (!rc)
            print_import(name, as, &r);
    }
    tvs_store_close(s);
    return rc ? fail(rc, "compress") : 0;
}

static void backup_item(const tvs_backup_item *it, void *p)
{
    char w[32];
    tvs_fmt_bytes(w, sizeof w, (double)it->r.written);
    printf("%-40s base %-32s depth %d  est %.3f  stored %s (%.4f)\n", it->name,
           it->base[0] ? it->base : "(full)", it->depth, it->estimate, w,
           it->r.logical ? (double)it->r.written / it->r.logical : 0);
    fflush(stdout);
}

static int cmd_backup(int argc, char **argv)
{
    static const struct option opts[] = {
        { "as", required_argument, 0, 'a' }, { "base", required_argument, 0, 'b' },
        { "max-chain", required_argument, 0, 'c' }, { "threads", required_argument, 0, 't' },
        { 0, 0, 0, 0 } };
    const char *as = NULL;
    tvs_backup_opts o = { 0 };
    int c;
    while ((c = getopt_long(argc, argv, "a:b:t:", opts, NULL)) != -1) {
        switch (c) {
        case 'a': as = optarg; break;
        case 'b': o.base = optarg; break;
        case 'c': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (!*optarg || *end || v < 1 || v > 15)
                return usage_error("backup", "--max-chain must be 1 to 15");
            o.max_chain = (int)v;
            break;
        }
        case 't': o.import.threads = atoi(optarg); break;
        default: return usage_error("backup", "unknown option");
        }
    }
    if (optind + 1 != argc)
        return usage_error("backup", "give exactly one DIR");
    if (!as)
        return usage_error("backup", "--as PREFIX is required");
    if (o.max_chain < 0 || o.max_chain > 15)
        return usage_error("backup", "--max-chain must be 1 to 15");
    tvs_store *s;
    int rc = open_store(&s, 0);
    if (!rc)
        rc = tvs_backup(s, argv[optind], as, &o, backup_item, NULL);
    tvs_store_close(s);
    return rc ? fail(rc, "backup") : 0;
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
            "{s:s, s:s, s:s, s:I, s:s, s:o}", "name", name, "model", hex(id, h),
            "kind", m.kind == TVS_MODEL_DELTA ? "delta" : "full", "logical_bytes",
            (json_int_t)size, "time", when, "message", json_text(m.message)));
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

/* "planes", "delta ord16 (planes)", or "= base" for a tensor shared with the base. */
static void encoding_str(char *out, size_t cap, const tvs_tensor_obj *t, unsigned codecs,
                         const tvs_model_obj *base, const tvs_model_entry *e)
{
    static const char *const tname[] = { "?", "xor", "ord16", "ord32" };
    char cl[64];
    if (base && e) {
        const tvs_model_entry *be = NULL;
        char name[4096];
        snprintf(name, sizeof name, "%.*s", (int)e->name.len, (const char *)e->name.ptr);
        be = tvs_model_find(base, name);
        if (be && tvs_id_eq(&be->id, &e->id)) {
            snprintf(out, cap, "= base");
            return;
        }
    }
    codec_list(cl, sizeof cl, codecs);
    if (t->encoding == TVS_ENC_LOSSY)
        snprintf(out, cap, "lossy (see --units)");
    else if (t->encoding == TVS_ENC_DELTA)
        snprintf(out, cap, "delta %s (%s)", t->transform <= 3 ? tname[t->transform] : "?", cl);
    else
        snprintf(out, cap, "%s", cl);
}

static int show_file(tvs_txn *txn, const tvs_model_file *f, json_t *jfiles, int *first,
                     const tvs_model_obj *base)
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
        char shape[256], enc[96], lg[32], st[32];
        shape_str(shape, sizeof shape, &t);
        encoding_str(enc, sizeof enc, &t, ti.codecs, base,
                     f->kind == TVS_FILE_SAFETENSORS ? &f->tensors[i] : NULL);
        if (!strcmp(enc, "= base"))
            ti.stored = 0;   /* shared with the base: stores nothing of its own */
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
            "{s:o, s:s, s:I, s:I, s:o}", "name", json_text(f->name), "kind",
            f->kind == TVS_FILE_BLOB ? "blob" : "safetensors", "logical_bytes",
            (json_int_t)logical, "stored_bytes", (json_int_t)stored, "tensors", jt));
    else
        json_decref(jt);
    return rc;
}

/* --units: one line (or JSON object) per unit of every lossy tensor */
typedef struct {
    const char *tensor;
    size_t name_len;
    const tvs_tensor_obj *t;
    uint64_t first;            /* element index of the chunk */
    double stored_per_raw;     /* chunk stored bytes / lossy chunk bytes */
    json_t *arr;
    uint64_t params;
    double bits, e2, n2;
} units_ctx;

static int show_unit(const tvs_lossy_unit *u, size_t first, void *p)
{
    units_ctx *c = p;
    char desc[128];
    tvs_lossy_unit_describe(desc, sizeof desc, u);
    uint64_t e0 = c->first + first;
    double bits = (double)(u->payload.len + 17) * c->stored_per_raw * 8 / u->n;
    uint64_t cols = 1;
    for (uint32_t i = 1; i < c->t->rank; i++)
        cols *= c->t->shape[i];
    char where[64];
    if (c->t->rank >= 2 && cols && e0 % cols == 0 && u->n % cols == 0)
        snprintf(where, sizeof where, "rows %llu-%llu", (unsigned long long)(e0 / cols),
                 (unsigned long long)((e0 + u->n) / cols - 1));
    else
        snprintf(where, sizeof where, "elems %llu-%llu", (unsigned long long)e0,
                 (unsigned long long)(e0 + u->n - 1));
    c->params += u->n;
    c->bits += bits * u->n;
    c->e2 += (double)u->err * u->err * u->norm * u->norm;
    c->n2 += (double)u->norm * u->norm;
    if (c->arr)
        json_array_append_new(c->arr, json_pack(
            "{s:s%, s:s, s:I, s:I, s:s, s:s, s:f, s:f, s:f}", "tensor", c->tensor,
            c->name_len, "range", where, "first", (json_int_t)e0, "n", (json_int_t)u->n,
            "codec", tvs_lossy_codec_name(u->codec), "params", desc, "bits_per_param", bits,
            "rel_error", (double)u->err, "delta_norm", (double)u->norm));
    else
        printf("%-44.*s %-16s %-8s %-30s %7.3f %8.5f\n", (int)c->name_len, c->tensor, where,
               tvs_lossy_codec_name(u->codec), desc, bits, (double)u->err);
    return 0;
}

static int show_units(tvs_txn *txn, const tvs_model_obj *m, json_t *arr)
{
    tvs_codec_ctx *ctx;
    int rc = tvs_codec_ctx_new(&ctx, TVS_CHUNK_SIZE);
    if (rc)
        return rc;
    units_ctx c = { .arr = arr };
    if (!arr)
        printf("%-44s %-16s %-8s %-30s %7s %8s\n", "tensor", "unit", "codec", "parameters",
               "bits/p", "rel.err");
    for (size_t i = 0; !rc && i < m->n_files; i++)
        for (size_t j = 0; !rc && j < m->files[i].n_tensors; j++) {
            tvs_tensor_obj t;
            const tvs_model_entry *e = &m->files[i].tensors[j];
            if ((rc = tvs_tensor_load(&t, txn, &e->id)) || t.encoding != TVS_ENC_LOSSY)
                continue;
            unsigned w = tvs_dtype_bits(t.dtype) / 8;
            c.tensor = (const char *)e->name.ptr;
            c.name_len = e->name.len;
            c.t = &t;
            for (uint32_t k = 0; !rc && k < t.n_chunks; k++) {
                tvs_id id;
                tvs_span b, v;
                tvs_tensor_chunk_id(&id, &t, k);
                if ((rc = tvs_obj_get(&b, txn, &id)) || (rc = tvs_chunk_view(&v, b, ctx)))
                    break;
                c.first = (uint64_t)k * (t.chunk_size / w);
                c.stored_per_raw = v.len ? (double)b.len / (double)v.len : 1;
                rc = tvs_lossy_chunk_units(v, t.dtype, tvs_tensor_chunk_len(&t, k) / w,
                                           show_unit, &c);
            }
        }
    tvs_codec_ctx_free(ctx);
    if (!rc && !arr && c.params)
        printf("\n%llu parameters in lossy units: %.3f bits per parameter (units only), "
               "relative error %.4f overall\n", (unsigned long long)c.params,
               c.bits / (double)c.params, c.n2 > 0 ? sqrt(c.e2 / c.n2) : 0.0);
    else if (!rc && !arr)
        printf("(no lossy tensors)\n");
    return rc;
}

static int cmd_show(int argc, char **argv)
{
    static const struct option opts[] = { { "json", no_argument, 0, OPT_JSON },
                                          { "units", no_argument, 0, 'u' },
                                          { 0, 0, 0, 0 } };
    int json = 0, units = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == OPT_JSON)
            json = 1;
        else if (c == 'u')
            units = 1;
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
    if (units) {
        json_t *arr = json ? json_array() : NULL;
        rc = show_units(txn, &m, arr);
        if (!rc && arr)
            print_json(arr);
        else
            json_decref(arr);
        goto out;
    }
    fmt_time(when, sizeof when, m.time);
    json_t *jm = NULL, *jfiles = NULL;
    if (json) {
        json_t *parents = json_array();
        for (size_t i = 0; i < m.n_parents; i++)
            json_array_append_new(parents, json_string(hex(&m.parents[i], h)));
        jfiles = json_array();
        jm = json_pack("{s:s, s:s, s:o, s:s, s:o, s:o, s:o}", "model", hex(&id, h), "kind",
                       m.kind == TVS_MODEL_DELTA ? "delta" : "full", "parents", parents,
                       "time", when, "author", json_text(m.author), "message",
                       json_text(m.message), "files", jfiles);
    } else {
        printf("model    %s\nkind     %s\n", hex(&id, h),
               m.kind == TVS_MODEL_DELTA ? "delta" : "full");
        if (m.kind == TVS_MODEL_DELTA)
            printf("base     %s\n", hex(&m.base, h));
        for (size_t i = 0; i < m.n_parents; i++)
            printf("parent   %s\n", hex(&m.parents[i], h));
        printf("date     %s\nauthor   %.*s\nmessage  %.*s\n\n", when, (int)m.author.len,
               (const char *)m.author.ptr, (int)m.message.len, (const char *)m.message.ptr);
    }
    int first = 1;
    tvs_model_obj base = { 0 };
    int has_base = m.kind == TVS_MODEL_DELTA && tvs_model_load(&base, txn, &m.base) == 0;
    tvs__errclear();
    for (size_t i = 0; !rc && i < m.n_files; i++)
        rc = show_file(txn, &m.files[i], jfiles, &first, has_base ? &base : NULL);
    tvs_model_dispose(&base);
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

static int cmd_log_graph(const char *name);

static int cmd_log(int argc, char **argv)
{
    static const struct option opts[] = { { "json", no_argument, 0, OPT_JSON },
                                          { "graph", no_argument, 0, 'g' },
                                          { 0, 0, 0, 0 } };
    int json = 0, graph = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == OPT_JSON)
            json = 1;
        else if (c == 'g')
            graph = 1;
        else
            return usage_error("log", "unknown option");
    }
    if (graph && optind + 1 >= argc)
        return cmd_log_graph(optind < argc ? argv[optind] : NULL);
    if (optind + 1 != argc)
        return usage_error("log", "give exactly one NAME (or --graph)");
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
                "{s:s, s:s, s:s, s:o, s:o}", "model", hex(&id, h), "kind",
                m.kind == TVS_MODEL_DELTA ? "delta" : "full", "time", when, "author",
                json_text(m.author), "message", json_text(m.message)));
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

/* --------------------------------------------------------------- lineage */

typedef struct {
    tvs_id id, up;           /* up: base for a delta, else first parent */
    int has_up, kind, depth;
    int64_t time;
    char refs[256];
    char msg[80];
    uint64_t own, logical;
} node;

typedef struct {
    node *v;
    size_t n, cap;
    tvs_txn *txn;
} graph;

static long node_find(const graph *g, const tvs_id *id)
{
    for (size_t i = 0; i < g->n; i++)
        if (tvs_id_eq(&g->v[i].id, id))
            return (long)i;
    return -1;
}

static int node_add(graph *g, const tvs_id *id, const char *ref)
{
    long k = node_find(g, id);
    if (k < 0) {
        tvs_model_obj m;
        if (!tvs_obj_has(g->txn, id))
            return 0;   /* history collected by gc */
        int rc = tvs_model_load(&m, g->txn, id);
        if (rc)
            return rc;
        if (g->n == g->cap) {
            size_t cap = g->cap ? 2 * g->cap : 32;
            node *v = realloc(g->v, cap * sizeof *v);
            if (!v) {
                tvs_model_dispose(&m);
                return tvs__fail(TVS_ENOMEM, "out of memory");
            }
            g->v = v;
            g->cap = cap;
        }
        node *n = &g->v[g->n];
        memset(n, 0, sizeof *n);
        n->id = *id;
        n->kind = m.kind;
        n->time = m.time;
        snprintf(n->msg, sizeof n->msg, "%.*s", (int)m.message.len, (const char *)m.message.ptr);
        if (m.kind == TVS_MODEL_DELTA) {
            n->up = m.base;
            n->has_up = 1;
        } else if (m.n_parents) {
            n->up = m.parents[0];
            n->has_up = 1;
        }
        rc = tvs_model_logical_size(&n->logical, g->txn, &m);
        tvs_model_dispose(&m);
        if (rc)
            return rc;
        k = (long)g->n++;
        tvs_id up = g->v[k].up;
        if (g->v[k].has_up && (rc = node_add(g, &up, NULL)))
            return rc;
        k = node_find(g, id);
    }
    if (ref) {
        node *n = &g->v[k];
        size_t len = strlen(n->refs);
        snprintf(n->refs + len, sizeof n->refs - len, "%s%s", len ? ", " : "", ref);
    }
    return 0;
}

static int graph_ref(const char *name, const tvs_id *id, void *p)
{
    return node_add(p, id, name);
}

static void print_node(const graph *g, size_t i, const char *prefix, int last, int root)
{
    const node *n = &g->v[i];
    char own[32], lg[32], h[TVS_ID_HEX + 1];
    tvs_fmt_bytes(own, sizeof own, (double)n->own);
    tvs_fmt_bytes(lg, sizeof lg, (double)n->logical);
    tvs_id_hex(h, &n->id);
    printf("%s%s%s %.12s  %s  added %s of %s (%.1f%%)\n", prefix,
           root ? "" : last ? "\u2514\u2500 " : "\u251c\u2500 ",
           n->refs[0] ? n->refs : "(no ref)", h, n->kind == TVS_MODEL_DELTA ? "delta" : "full",
           own, lg, n->logical ? 100.0 * n->own / n->logical : 0);
    char sub[512];
    snprintf(sub, sizeof sub, "%s%s", prefix, root ? "" : last ? "   " : "\u2502  ");
    size_t kids[1024], nk = 0;
    for (size_t j = 0; j < g->n && nk < 1024; j++)
        if (g->v[j].has_up && tvs_id_eq(&g->v[j].up, &n->id))
            kids[nk++] = j;
    for (size_t k = 0; k < nk; k++)
        print_node(g, kids[k], sub, k + 1 == nk, 0);
}

/* Bytes each node added, attributing shared objects to the oldest model. */
static int attribute(graph *g)
{
    size_t *order = calloc(g->n + 1, sizeof *order);
    tvs_id *ids = calloc(g->n + 1, sizeof *ids);
    uint64_t *added = calloc(g->n + 1, sizeof *added);
    int rc = (!order || !ids || !added) ? tvs__fail(TVS_ENOMEM, "out of memory") : 0;
    for (size_t i = 0; !rc && i < g->n; i++)
        ids[i] = g->v[i].id;
    if (!rc)
        rc = tvs_models_order(order, g->txn, ids, g->n);
    for (size_t i = 0; !rc && i < g->n; i++)
        ids[i] = g->v[order[i]].id;
    if (!rc)
        rc = tvs_attribute_bytes(added, g->txn, ids, g->n);
    for (size_t i = 0; !rc && i < g->n; i++)
        g->v[order[i]].own = added[i];
    free(order);
    free(ids);
    free(added);
    return rc;
}

static int cmd_lineage(int argc, char **argv)
{
    if (argc > 2)
        return usage_error("lineage", "at most one NAME");
    tvs_store *s;
    graph g = { 0 };
    int rc = open_store(&s, 1);
    if (rc)
        return fail(rc, "lineage");
    if (!(rc = tvs_txn_begin(&g.txn, s, TVS_TXN_READ)))
        rc = tvs_ref_foreach(g.txn, NULL, graph_ref, &g);
    long only = -1;
    if (!rc && argc == 2) {
        tvs_id id;
        if (!(rc = tvs_resolve(&id, g.txn, argv[1]))) {
            only = node_find(&g, &id);
            /* climb to the root of its tree */
            while (only >= 0 && g.v[only].has_up) {
                long up = node_find(&g, &g.v[only].up);
                if (up < 0)
                    break;
                only = up;
            }
        }
    }
    if (!rc)
        rc = attribute(&g);
    for (size_t i = 0; !rc && i < g.n; i++) {
        int root = !g.v[i].has_up || node_find(&g, &g.v[i].up) < 0;
        if (root && (only < 0 || (size_t)only == i))
            print_node(&g, i, "", 1, 1);
    }
    tvs_txn_end(g.txn);
    tvs_store_close(s);
    free(g.v);
    return rc ? fail(rc, "lineage") : 0;
}

static int by_time_desc(const void *a, const void *b)
{
    const node *x = a, *y = b;
    return x->time < y->time ? 1 : x->time > y->time ? -1 : memcmp(&x->id, &y->id, 16);
}

/* Children before their bases and parents: the attribution order
 * (tvs_models_order: every model after its ups, oldest first), reversed.
 * Timestamps have one-second resolution, so time alone cannot order a
 * series imported in one go. */
static void topo_order(graph *g)
{
    size_t n = g->n, *order = calloc(n + 1, sizeof *order);
    tvs_id *ids = calloc(n + 1, sizeof *ids);
    node *out = malloc((n + 1) * sizeof *out);
    int ok = order && ids && out;
    for (size_t i = 0; ok && i < n; i++)
        ids[i] = g->v[i].id;
    if (ok && tvs_models_order(order, g->txn, ids, n) == 0) {
        for (size_t k = 0; k < n; k++)
            out[k] = g->v[order[n - 1 - k]];
        memcpy(g->v, out, n * sizeof *out);
    } else {
        qsort(g->v, g->n, sizeof *g->v, by_time_desc);
    }
    free(order);
    free(ids);
    free(out);
}

/* Draw the graph newest first, one lane per line of descent, like git. */
static void draw_graph(graph *g)
{
    tvs_id lanes[64];
    size_t nl = 0;
    topo_order(g);
    for (size_t i = 0; i < g->n; i++) {
        const node *n = &g->v[i];
        size_t col = nl;
        for (size_t l = 0; l < nl; l++)
            if (tvs_id_eq(&lanes[l], &n->id)) {
                col = l;
                break;
            }
        if (col == nl && nl < 64)
            lanes[nl++] = n->id;
        char h[TVS_ID_HEX + 1], when[64];
        tvs_id_hex(h, &n->id);
        fmt_time(when, sizeof when, n->time);
        for (size_t l = 0; l < nl; l++)
            printf("%s ", l == col ? "*" : "|");
        printf("%.12s%s%s%s %s  %s  %s\n", h, n->refs[0] ? " (" : "", n->refs,
               n->refs[0] ? ")" : "", n->kind == TVS_MODEL_DELTA ? "delta" : "full", when,
               n->msg);
        /* lanes that also waited for this node end here */
        size_t merged = 0;
        for (size_t l = nl; l-- > col + 1;)
            if (tvs_id_eq(&lanes[l], &n->id)) {
                memmove(&lanes[l], &lanes[l + 1], (nl - l - 1) * sizeof *lanes);
                nl--;
                merged++;
            }
        if (merged) {
            for (size_t l = 0; l < nl; l++)
                printf("| ");
            for (size_t m = 0; m < merged; m++)
                printf("%s", m ? " /" : "/");
            printf("\n");
        }
        int up = n->has_up && node_find(g, &n->up) >= 0;
        if (col < nl) {
            if (up) {
                lanes[col] = n->up;
            } else {
                memmove(&lanes[col], &lanes[col + 1], (nl - col - 1) * sizeof *lanes);
                nl--;
            }
        }
    }
}

static int cmd_log_graph(const char *name)
{
    tvs_store *s;
    graph g = { 0 };
    int rc = open_store(&s, 1);
    if (rc)
        return fail(rc, "log");
    if (!(rc = tvs_txn_begin(&g.txn, s, TVS_TXN_READ))) {
        tvs_id id;
        if (name && !(rc = tvs_resolve(&id, g.txn, name)))
            rc = node_add(&g, &id, name);
        else if (!name)
            rc = tvs_ref_foreach(g.txn, NULL, graph_ref, &g);
    }
    if (!rc)
        draw_graph(&g);
    tvs_txn_end(g.txn);
    tvs_store_close(s);
    free(g.v);
    return rc ? fail(rc, "log") : 0;
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

typedef struct {
    const char *name;
    int force;
    char deps[1024];
    size_t n_deps;
} rm_op;

static int dep_cb(const char *ref, const tvs_id *delta, void *p)
{
    rm_op *op = p;
    if (strcmp(ref, op->name) == 0)
        return 0;
    size_t n = strlen(op->deps);
    snprintf(op->deps + n, sizeof op->deps - n, "%s%s", n ? ", " : "", ref);
    op->n_deps++;
    return 0;
}

/* Still reachable from another ref? Then its deltas keep working anyway. */
typedef struct { const tvs_id *id; const char *skip; int found; } other_ref;

static int other_cb(const char *name, const tvs_id *id, void *p)
{
    other_ref *o = p;
    if (strcmp(name, o->skip) != 0 && tvs_id_eq(id, o->id))
        o->found = 1;
    return 0;
}

static int rm_txn(tvs_txn *txn, void *p)
{
    rm_op *op = p;
    tvs_id id;
    op->deps[0] = 0;
    op->n_deps = 0;
    int rc = tvs_ref_get(&id, txn, op->name);
    if (rc)
        return rc;
    other_ref o = { &id, op->name, 0 };
    if (!op->force && !(rc = tvs_ref_foreach(txn, NULL, other_cb, &o)) && !o.found)
        rc = tvs_dependents(txn, &id, dep_cb, op);
    if (rc)
        return rc;
    if (op->n_deps)
        return tvs__fail(TVS_EBUSY, "'%s' is the base of %zu delta model%s (%s); delete "
                         "them first, or use --force to delete the ref and keep its objects "
                         "for them", op->name, op->n_deps, op->n_deps == 1 ? "" : "s",
                         op->deps);
    return tvs_ref_del(txn, op->name);
}

static int cmd_rm(int argc, char **argv)
{
    static const struct option opts[] = { { "force", no_argument, 0, 'f' },
                                          { 0, 0, 0, 0 } };
    rm_op op = { 0 };
    int c;
    while ((c = getopt_long(argc, argv, "f", opts, NULL)) != -1) {
        if (c == 'f')
            op.force = 1;
        else
            return usage_error("rm", "unknown option");
    }
    if (optind + 1 != argc)
        return usage_error("rm", "give exactly one NAME");
    op.name = argv[optind];
    tvs_store *s;
    int rc = open_store(&s, 0);
    if (!rc)
        rc = tvs_store_write(s, 1u << 20, rm_txn, &op);
    tvs_store_close(s);
    if (rc)
        return fail(rc, "rm");
    printf("removed ref %s; run 'tvs gc' to reclaim what only it used\n", op.name);
    return 0;
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
            char bh[TVS_ID_HEX + 1];
            json_array_append_new(models, json_pack(
                "{s:s, s:s, s:s, s:s?, s:b, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:f}", "name",
                m->name, "model", hex(&m->id, h), "kind",
                m->kind == TVS_MODEL_DELTA ? "delta" : "full", "base",
                m->kind == TVS_MODEL_DELTA ? hex(&m->base, bh) : NULL, "lossy",
                !!(m->flags & TVS_MODEL_LOSSY), "logical_bytes", (json_int_t)m->logical,
                "added_bytes", (json_int_t)m->added, "restore_bytes", (json_int_t)m->stored,
                "own_bytes", (json_int_t)m->own, "params", (json_int_t)m->params, "share",
                ratio(m->added, m->logical), "bits_per_param",
                m->params ? (double)m->own * 8 / (double)m->params : 0.0, "bf16_ratio",
                m->own ? (double)m->params * 2 / (double)m->own : 0.0));
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
        /* added: bytes this model brought in (objects no earlier model reaches);
         * share: added / logical, i.e. a delta's size as a share of its full model */
        printf("\n%-28s %-5s %-20s %10s %10s %6s %10s %9s %8s\n", "ref", "kind", "base",
               "logical", "added", "share", "restore", "bits/par", "vs BF16");
        for (size_t i = 0; i < st.n_refs; i++) {
            const tvs_stats_model *m = &st.refs[i];
            char base[64] = "-";
            if (m->kind == TVS_MODEL_DELTA) {
                char bh[TVS_ID_HEX + 1];
                tvs_id_hex(bh, &m->base);
                snprintf(base, sizeof base, "%.12s", bh);
                for (size_t j = 0; j < st.n_refs; j++)
                    if (tvs_id_eq(&st.refs[j].id, &m->base)) {
                        snprintf(base, sizeof base, "%s", st.refs[j].name);
                        break;
                    }
            }
            tvs_fmt_bytes(a, sizeof a, (double)m->logical);
            tvs_fmt_bytes(b, sizeof b, (double)m->added);
            tvs_fmt_bytes(d, sizeof d, (double)m->stored);
            printf("%-28s %-5s %-20s %10s %10s %5.1f%% %10s %9.3f %7.1fx\n", m->name,
                   m->flags & TVS_MODEL_LOSSY ? "lossy"
                   : m->kind == TVS_MODEL_DELTA ? "delta" : "full", base, a, b,
                   100 * ratio(m->added, m->logical), d,
                   m->params ? (double)m->own * 8 / (double)m->params : 0.0,
                   m->own ? (double)m->params * 2 / (double)m->own : 0.0);
        }
    }
    tvs_stats_dispose(&st);
    return 0;
}

/* ----------------------------------------------------- materialize, explain */

/* Options shared by materialize and explain; returns 0, or an exit code. */
static int plan_options(const char *cmd, int argc, char **argv, tvs_plan_opts *po,
                        const char **out)
{
    static const struct option opts[] = {
        { "output", required_argument, 0, 'o' }, { "tensors", required_argument, 0, 'T' },
        { "layers", required_argument, 0, 'L' }, { "shard", required_argument, 0, 'S' },
        { "dtype", required_argument, 0, 'D' }, { "threads", required_argument, 0, 't' },
        { 0, 0, 0, 0 } };
    int c;
    while ((c = getopt_long(argc, argv, "o:t:", opts, NULL)) != -1) {
        switch (c) {
        case 'o':
            if (!out)
                return usage_error(cmd, "-o is for materialize");
            *out = optarg;
            break;
        case 'T': po->tensors = optarg; break;
        case 'L':
            if (sscanf(optarg, "%d-%d", &po->layer_lo, &po->layer_hi) != 2 ||
                po->layer_lo < 0 || po->layer_hi < po->layer_lo)
                return usage_error(cmd, "--layers takes A-B, e.g. 0-15");
            break;
        case 'S':
            if (sscanf(optarg, "%u/%u", &po->shard_i, &po->shard_n) != 2 || !po->shard_n ||
                po->shard_i >= po->shard_n)
                return usage_error(cmd, "--shard takes I/N with 0 <= I < N, e.g. 0/8");
            break;
        case 'D':
            if (!strcmp(optarg, "bf16")) po->dtype = TVS_DTYPE_BF16;
            else if (!strcmp(optarg, "f16")) po->dtype = TVS_DTYPE_F16;
            else if (!strcmp(optarg, "f32")) po->dtype = TVS_DTYPE_F32;
            else return usage_error(cmd, "--dtype takes bf16, f16 or f32");
            break;
        case 't': po->threads = atoi(optarg); break;
        default: return usage_error(cmd, "unknown option");
        }
    }
    if (optind + 1 != argc)
        return usage_error(cmd, "give exactly one EXPR (quote it)");
    return 0;
}

static int write_out(void *payload, const uint8_t *p, size_t n)
{
    return tvs_outfile_write(payload, p, n);
}

/* Write the plan's output to @p path ("-" = stdout), through a temporary name. */
static int write_plan(tvs_plan *p, const char *path)
{
    tvs_outfile out;
    int rc = tvs_outfile_open(&out, path);
    if (rc)
        return rc;
    rc = tvs_plan_exec(p, 0, UINT64_MAX, write_out, &out);
    return tvs_outfile_close(&out, rc);
}

static int parse_size(uint64_t *out, const char *s)
{
    char *end;
    double v = strtod(s, &end);
    uint64_t mul = 1;
    if (!strcasecmp(end, "") || !strcasecmp(end, "B")) mul = 1;
    else if (!strcasecmp(end, "KB")) mul = 1000;
    else if (!strcasecmp(end, "MB")) mul = 1000 * 1000;
    else if (!strcasecmp(end, "GB")) mul = 1000ull * 1000 * 1000;
    else if (!strcasecmp(end, "KiB")) mul = 1024;
    else if (!strcasecmp(end, "MiB")) mul = 1024 * 1024;
    else if (!strcasecmp(end, "GiB")) mul = 1024ull * 1024 * 1024;
    else return -1;
    if (end == s || !(v >= 1))
        return -1;
    *out = (uint64_t)(v * (double)mul);
    return 0;
}

/*
 * A sharded folder: tensors in name order, a new shard whenever the next
 * tensor would push one past @p max (Hugging Face's rule), each shard
 * planned on its own; then model.safetensors.index.json and the anchor
 * model's other files (config, tokenizer).
 */
static int write_sharded(tvs_store *s, tvs_txn *txn, tvs_plan *full, const char *text,
                         const tvs_plan_opts *po, uint64_t max, const char *dir)
{
    size_t n = tvs_plan_tensors(full), n_shards = 0;
    size_t *shard_of = calloc(n + 1, sizeof *shard_of);
    const char **names = calloc(n + 1, sizeof *names);
    json_t *wm = json_object();
    int rc = (!shard_of || !names || !wm) ? tvs__fail(TVS_ENOMEM, "out of memory") : 0;
    uint64_t acc = 0, total = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        const char *name;
        uint64_t nb;
        tvs_plan_tensor(full, i, &name, &nb);
        if (i == 0 || (acc && acc + nb > max)) {
            n_shards++;
            acc = 0;
        }
        acc += nb;
        total += nb;
        shard_of[i] = n_shards - 1;
    }
    if (!rc && mkdir(dir, 0755) && errno != EEXIST)
        rc = tvs__fail(TVS_EIO, "cannot create folder %s: %s", dir, strerror(errno));
    for (size_t sh = 0; !rc && sh < n_shards; sh++) {
        size_t k = 0;
        char file[64], path[4200];
        if (n_shards == 1)
            snprintf(file, sizeof file, "model.safetensors");
        else
            snprintf(file, sizeof file, "model-%05zu-of-%05zu.safetensors", sh + 1, n_shards);
        for (size_t i = 0; i < n; i++) {
            uint64_t nb;
            if (shard_of[i] != sh)
                continue;
            tvs_plan_tensor(full, i, &names[k], &nb);
            json_object_set_new(wm, names[k], json_string(file));
            k++;
        }
        tvs_plan_opts so = *po;
        so.names = names;
        so.n_names = k;
        tvs_plan *p = NULL;
        snprintf(path, sizeof path, "%s/%s", dir, file);
        if (!(rc = tvs_plan_build(&p, txn, text, &so)))
            rc = write_plan(p, path);
        tvs_plan_free(p);
    }
    if (!rc && n_shards > 1) {
        char path[4200];
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
        json_t *idx = json_pack("{s:{s:I}, s:O}", "metadata", "total_size", (json_int_t)total,
                                "weight_map", wm);
        if (!idx || json_dump_file(idx, path, JSON_INDENT(2) | JSON_SORT_KEYS))
            rc = tvs__fail(TVS_EIO, "cannot write %s", path);
        json_decref(idx);
    }
    if (!rc) {
        tvs_id anchor;
        char hex[TVS_ID_HEX + 1];
        tvs_plan_anchor(full, &anchor);
        tvs_id_hex(hex, &anchor);
        tvs_export_opts eo = TVS_EXPORT_OPTS_INIT;
        eo.blobs_only = 1;
        rc = tvs_export(s, hex, dir, &eo);
    }
    json_decref(wm);
    free(shard_of);
    free(names);
    return rc;
}

static int cmd_materialize(int argc, char **argv)
{
    tvs_plan_opts po = TVS_PLAN_OPTS_INIT;
    const char *out = NULL;
    uint64_t max_shard = 0;
    /* --max-shard-size is materialize's own option; the rest are shared */
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "--max-shard-size", 16)) {
            const char *v = argv[i][16] == '=' ? argv[i] + 17 : i + 1 < argc ? argv[i + 1] : "";
            if (parse_size(&max_shard, v))
                return usage_error("materialize", "--max-shard-size takes a size such as "
                                   "5GB, 500MB or 2GiB");
            int drop = argv[i][16] == '=' ? 1 : 2;
            for (int j = i; j + drop <= argc; j++)
                argv[j] = argv[j + drop];
            argc -= drop;
            break;
        }
    int urc = plan_options("materialize", argc, argv, &po, &out);
    if (urc)
        return urc;
    if (!out)
        return usage_error("materialize", "-o FILE is required ('-' for stdout)");
    tvs_store *s;
    tvs_txn *txn = NULL;
    tvs_plan *p = NULL;
    int to_stdout = strcmp(out, "-") == 0;
    int rc = open_store(&s, 1);
    if (rc)
        return fail(rc, "materialize");
    if ((rc = tvs_txn_begin(&txn, s, TVS_TXN_READ)) ||
        (rc = tvs_plan_build(&p, txn, argv[optind], &po)))
        goto out;
    if (max_shard) {
        if (to_stdout) {
            rc = tvs__fail(TVS_EINVAL, "--max-shard-size writes a folder; give -o DIR");
            goto out;
        }
        rc = write_sharded(s, txn, p, argv[optind], &po, max_shard, out);
    } else {
        rc = write_plan(p, out);
    }
out:
    tvs_plan_free(p);
    tvs_txn_end(txn);
    tvs_store_close(s);
    return rc ? fail(rc, "materialize") : 0;
}

static int cmd_explain(int argc, char **argv)
{
    tvs_plan_opts po = TVS_PLAN_OPTS_INIT;
    int urc = plan_options("explain", argc, argv, &po, NULL);
    if (urc)
        return urc;
    tvs_store *s;
    tvs_txn *txn = NULL;
    tvs_plan *p = NULL;
    tvs_buf b = TVS_BUF_INIT;
    int rc = open_store(&s, 1);
    if (rc)
        return fail(rc, "explain");
    if (!(rc = tvs_txn_begin(&txn, s, TVS_TXN_READ)) &&
        !(rc = tvs_plan_build(&p, txn, argv[optind], &po)) && !(rc = tvs_plan_explain(&b, p)))
        fwrite(b.ptr, 1, b.len, stdout);
    tvs_buf_dispose(&b);
    tvs_plan_free(p);
    tvs_txn_end(txn);
    tvs_store_close(s);
    return rc ? fail(rc, "explain") : 0;
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
    { "import", cmd_import,
      "import PATH --as NAME [--base BASE|auto] [--parent P]... [-m MSG] [--threads N] "
      "[--lossy (--max-error E | --bits B)] [--lora]",
      "Import a .safetensors file or a model folder (shards, index.json, config and\n"
      "tokenizer files) as NAME. If NAME exists, the new model is its next version.\n"
      "--base BASE stores it as a lossless delta of the stored model BASE: tensors\n"
      "equal to BASE's are shared, changed ones are stored as bit-exact deltas, new or\n"
      "reshaped ones in full. --base auto picks the closest stored full model and\n"
      "says why. --parent records lineage (e.g. base-v2 continued from base-v1).\n"
      "--lossy stores changed BF16/F16/F32 tensors with the lossy encoder instead\n"
      "(--max-error E or --bits B: see tvs help compress); exporting the model then\n"
      "gives the approximation. --lora imports a PEFT LoRA adapter folder\n"
      "(adapter_model.safetensors + adapter_config.json) as a low-rank delta of BASE:\n"
      "materializing BASE + NAME gives the merged weights." },
    { "diff", cmd_diff, "diff A B --as NAME [-m MSG]",
      "Store model B again as a lossless delta of model A, under NAME." },
    { "compress", cmd_compress, "compress NAME --as NAME2 (--max-error E | --bits B) "
      "[--threads N] [-m MSG]",
      "Store the delta model NAME again, lossy, as NAME2 (NAME stays as it is).\n"
      "--max-error E: each unit (a row block of about 64K values) gets the smallest\n"
      "encoding whose relative L2 error on the delta is at most E (0 < E < 1).\n"
      "--bits B: the model gets B bits per parameter on average (0 < B <= 16),\n"
      "allocated across units to minimize the total squared error. Encodings: sign\n"
      "with a sparse mask and one scale (T-Switch), 1-8-bit blocks with per-block\n"
      "scales, sparse top-k with k-bit values, the exact values; masks stored as\n"
      "bitmap, index gaps or runs, whichever is smallest. See tvs show NAME2 --units." },
    { "backup", cmd_backup, "backup DIR --as PREFIX [--base BASE] [--max-chain N]",
      "Import every checkpoint in DIR (its .safetensors files and model folders, in\n"
      "name order) as PREFIX/<name>, each as a delta of the cheapest of BASE and the\n"
      "latest earlier checkpoints, with delta chains at most N deep (default 8)." },
    { "lineage", cmd_lineage, "lineage [NAME]",
      "Print the lineage tree: bases, their versions and their deltas, with the\n"
      "bytes each one adds to the store (of its logical size)." },
    { "export", cmd_export, "export NAME -o PATH [--threads N]",
      "Write NAME back out: one file (PATH, or PATH/<original name> if PATH is a\n"
      "folder; '-' = stdout) or a folder, byte-identical to what was imported." },
    { "materialize", cmd_materialize,
      "materialize EXPR -o FILE|-|DIR [--max-shard-size SIZE] [--tensors RE] [--layers A-B] "
      "[--shard I/N] [--dtype bf16|f16|f32]",
      "Evaluate a query and write the result as one .safetensors file ('-' = stdout),\n"
      "streaming tensor block by tensor block; with --max-shard-size, as a folder of\n"
      "model-0000N-of-0000M.safetensors shards, model.safetensors.index.json and the\n"
      "base model's config and tokenizer files. EXPR: refs, numbers, +, -, *, ( ),\n"
      "soup(m, ...), lerp(a, b, t), transfer(delta, onto=BASE),\n"
      "dare(d, ...; drop=0.9, seed=0, lambda=1); see SPEC.md, Queries. Examples:\n"
      "  'base-v1 + ft-math'   'base-v1 + 0.5*ft-math + 0.5*ft-code'   'ft - base'" },
    { "explain", cmd_explain, "explain EXPR [--tensors RE] [--layers A-B] [--shard I/N] [--dtype T]",
      "Print the plan of a query: resolved refs and ids, the operations, each output\n"
      "tensor (copied bit-exact or computed), the output size and the memory bound." },
    { "ls", cmd_ls, "ls [PREFIX] [--json]", "List refs (optionally those starting with PREFIX)." },
    { "show", cmd_show, "show NAME [--units] [--json]",
      "Show a model: files, tensors (dtype, shape, logical and stored size, encoding).\n"
      "--units: every unit of its lossy tensors: codec, parameters, stored bits per\n"
      "parameter and the relative L2 error measured when it was encoded." },
    { "log", cmd_log, "log NAME [--json] | log --graph [NAME]",
      "Show the versions of NAME, newest first; --graph draws the history and\n"
      "lineage of every ref (or of NAME) like git log --graph." },
    { "tag", cmd_tag, "tag NEW-NAME TARGET [-f]",
      "Create ref NEW-NAME pointing at TARGET (a ref, NAME@id or id); -f moves it." },
    { "ref", cmd_ref, "ref list [PREFIX] | set NAME TARGET | rm NAME | rename OLD NEW",
      "Manage refs: names like llama-3.1/math are allowed." },
    { "rm", cmd_rm, "rm NAME [--force]",
      "Delete ref NAME; 'tvs gc' then reclaims what only it used. Refused while\n"
      "delta models still use it as their base, unless --force (their objects stay)." },
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
        opterr = 0;
        g_cmd_argv = argv + i;
        return commands[c].fn(argc - i, argv + i);
    }
    fprintf(stderr, "tvs: '%s' is not a command\n", argv[i]);
    usage(stderr);
    return EXIT_USAGE;
}
