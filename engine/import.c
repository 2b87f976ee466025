/*
 * Import of a safetensors file or a model folder (engine/model.h).
 *
 * 1. Gather: list the input files, read and validate every safetensors
 *    header and every index.json against the shards. Nothing is written
 *    until all of it passes.
 * 2. Hash: every tensor's checksum (XXH3-128 of its bytes), read once.
 * 3. Decide, per tensor: equal to the base's tensor of that name, or to any
 *    stored tensor (checksum index) -> reuse it, after a byte comparison
 *    (XXH3 is not a cryptographic hash); same dtype and shape as the base's
 *    -> a delta tensor; otherwise a full tensor.
 * 4. Encode: tensors are cut into TVS_CHUNK_SIZE chunks; a pool of threads
 *    reads, transforms and encodes them (or compares them, for reuse), and
 *    the calling thread writes chunks in order in batched transactions.
 * 5. Publish: tensor objects, the model object, index entries and the ref
 *    go in one final transaction, then the environment is synced.
 *
 * A read transaction stays open from step 3 to the end: delta and reuse
 * jobs decode stored chunks through spans that borrow from it. The map is
 * grown up front for the whole import, because it cannot be remapped under
 * that transaction.
 */
#include "engine/lossy_int.h"
#include "engine/model.h"
#include "engine/pipe.h"
#include "engine/store_int.h"
#include "engine/tensor.h"
#include "format/codec.h"
#include "format/delta.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BATCH_BYTES (64u << 20)    /* stored bytes per chunk transaction */
#define MAX_DEPTH 16               /* folder nesting */
#define CH TVS_CHUNK_SIZE

typedef struct {
    char *name;                /* relative to the import root */
    char *path;                /* NULL for a file of a stored model (diff) */
    int fd;
    uint64_t size;
    int is_st;
    uint8_t *json;             /* safetensors header bytes */
    tvs_st_header h;
    size_t first_tensor;       /* index into imp.tensors */
    const tvs_model_file *stored;  /* diff: the file in the source model */
} in_file;

enum { MODE_FULL, MODE_DELTA, MODE_REUSE, MODE_LOSSY };
enum { JOB_ENCODE, JOB_DELTA, JOB_VERIFY, JOB_LOSSY };

typedef struct {
    tvs_tensor_obj t;          /* the object to write (FULL, DELTA) */
    uint8_t *ids;
    tvs_id id;                 /* its id; for REUSE, the reused tensor */
    int mode, verify;
    int no_reuse;              /* reuse was refused (too deep a chain) */
    const char *name;
    size_t file;
    uint64_t off;              /* file offset of the bytes (files on disk) */
    tvs_tensor_chain *src;     /* diff: the source tensor's chain */
    tvs_tensor_chain *other;   /* DELTA: the base tensor; REUSE: the reused one */
    int keep;                  /* LOSSY, a later --bits pass: its chunks stand */
} tensor_build;

typedef struct {
    int kind;
    size_t tensor;
    uint32_t chunk;
    uint32_t len;
    size_t unit0;              /* LOSSY: its units, imp.units[unit0, unit0 + n_units) */
    uint32_t n_units;
    tvs_chunk_plan other;      /* DELTA, LOSSY: base chunk; VERIFY: the stored chunk */
    tvs_chunk_plan src;        /* diff: the source chunk */
    size_t stored;             /* LOSSY: bytes of the chunk last written */
    int again;                 /* LOSSY, a later --bits pass: the same picks as that chunk */
} job;

typedef struct {
    in_file *files;
    size_t n_files, cap_files;
    tensor_build *tensors;
    size_t n_tensors;
    job *jobs;
    size_t n_jobs;
    tvs_codec_ctx **ctx;
    int threads;
    int level;
    uint64_t total;
    int single;
    tvs_txn *rtxn;             /* read transaction for base and reuse reads */
    tvs_model_obj base;        /* the base model, if any */
    int has_base;              /* tensors are encoded against base (if it pays) */
    int delta_model;           /* ... and the model is a delta (task vector) of it */
    tvs_id base_id;
    tvs_model_obj source;      /* diff: the model being re-encoded */
    int has_source;
    double max_error, bits;    /* lossy (one of them > 0) */
    tvs__lunit *units;         /* lossy units, in job order */
    size_t n_units;
    tvs__lworker **lw;         /* per worker */
    uint64_t own;              /* bytes of the chunks written, new or not */
    tvs_buf *lbuf;             /* per worker: a lossy chunk's bytes */
} imp;

/* ---- gather */

static int add_file(imp *m, const char *root, const char *rel)
{
    if (m->n_files == m->cap_files) {
        size_t cap = m->cap_files ? 2 * m->cap_files : 16;
        in_file *f = tvs_realloc(m->files, cap * sizeof *f);
        if (!f)
            return tvs__fail(TVS_ENOMEM, "out of memory listing files");
        m->files = f;
        m->cap_files = cap;
    }
    in_file *f = &m->files[m->n_files];
    memset(f, 0, sizeof *f);
    f->fd = -1;
    size_t n = strlen(root) + strlen(rel) + 2;
    f->name = tvs_strdup(rel);
    f->path = tvs_malloc(n);
    if (!f->name || !f->path) {
        tvs_free(f->name);
        tvs_free(f->path);
        return tvs__fail(TVS_ENOMEM, "out of memory listing files");
    }
    if (*root)
        snprintf(f->path, n, "%s/%s", root, rel);
    else
        snprintf(f->path, n, "%s", rel);
    size_t len = strlen(rel);
    f->is_st = len > 12 && strcmp(rel + len - 12, ".safetensors") == 0;
    m->n_files++;
    return 0;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int walk(imp *m, const char *root, const char *rel, int depth)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s%s%s", root, *rel ? "/" : "", rel);
    if (depth > MAX_DEPTH)
        return tvs__fail(TVS_EINVAL, "%s: folders nested deeper than %d", dir, MAX_DEPTH);
    DIR *d = opendir(dir);
    if (!d)
        return tvs__fail(TVS_EIO, "%s: cannot read folder: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;   /* ., .., and hidden files such as .git or .cache */
        if (n == cap) {
            cap = cap ? 2 * cap : 32;
            char **nn = tvs_realloc(names, cap * sizeof *nn);
            if (!nn) {
                rc = tvs__fail(TVS_ENOMEM, "out of memory listing %s", dir);
                break;
            }
            names = nn;
        }
        if (!(names[n] = tvs_strdup(e->d_name))) {
            rc = tvs__fail(TVS_ENOMEM, "out of memory listing %s", dir);
            break;
        }
        n++;
    }
    closedir(d);
    if (!rc)
        qsort(names, n, sizeof *names, name_cmp);
    for (size_t i = 0; !rc && i < n; i++) {
        char sub[4096], full[4096];
        snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", names[i]);
        snprintf(full, sizeof full, "%s/%s", root, sub);
        struct stat st;
        if (stat(full, &st))
            rc = tvs__fail(TVS_EIO, "%s: %s", full, strerror(errno));
        else if (S_ISDIR(st.st_mode))
            rc = walk(m, root, sub, depth + 1);
        else if (S_ISREG(st.st_mode))
            rc = add_file(m, root, sub);
    }
    for (size_t i = 0; i < n; i++)
        tvs_free(names[i]);
    tvs_free(names);
    return rc;
}

static int read_full(int fd, uint8_t *dst, size_t len, uint64_t off, const char *path)
{
    while (len) {
        ssize_t r = pread(fd, dst, len, (off_t)off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return tvs__fail(TVS_EIO, "%s: read at byte %llu: %s", path,
                             (unsigned long long)off, strerror(errno));
        if (r == 0)
            return tvs__fail(TVS_ECORRUPT, "%s: truncated: ends before byte %llu "
                             "(did it change during the import?)", path,
                             (unsigned long long)off);
        dst += r;
        len -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

static int open_file(in_file *f)
{
    struct stat st;
    f->fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (f->fd < 0)
        return tvs__fail(errno == ENOENT ? TVS_ENOTFOUND : TVS_EIO, "%s: %s", f->path,
                         strerror(errno));
    if (fstat(f->fd, &st))
        return tvs__fail(TVS_EIO, "%s: %s", f->path, strerror(errno));
    f->size = (uint64_t)st.st_size;
    if (!f->is_st)
        return 0;
    uint8_t pre[8];
    uint64_t n;
    int rc = 0;
    if (f->size >= 8)
        rc = read_full(f->fd, pre, 8, 0, f->path);
    if (!rc)
        rc = tvs_st_header_len(&n, (tvs_span){ pre, f->size >= 8 ? 8 : 0 }, f->size);
    if (!rc && !(f->json = tvs_malloc(n)))
        rc = tvs__fail(TVS_ENOMEM, "out of memory for a %llu-byte header",
                       (unsigned long long)n);
    if (!rc)
        rc = read_full(f->fd, f->json, n, 8, f->path);
    if (!rc)
        rc = tvs_st_header_parse(&f->h, (tvs_span){ f->json, n }, f->size - 8 - n);
    if (rc)
        return tvs__failctx(rc, "%s", f->path);
    return 0;
}

/* Every shard an index names must be here and hold the tensors it lists. */
static int check_index(imp *m, const in_file *idx)
{
    json_error_t err;
    json_t *root = json_load_file(idx->path, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return tvs__fail(TVS_ECORRUPT, "%s: not valid JSON: %s at line %d", idx->path,
                         err.text, err.line);
    int rc = 0;
    json_t *wm = json_object_get(root, "weight_map");
    if (!json_is_object(wm)) {
        rc = tvs__fail(TVS_ECORRUPT, "%s: no \"weight_map\" object", idx->path);
        goto out;
    }
    char dir[4096] = "";
    const char *slash = strrchr(idx->name, '/');
    if (slash)
        snprintf(dir, sizeof dir, "%.*s/", (int)(slash - idx->name), idx->name);
    const char *tensor;
    json_t *shard;
    json_object_foreach(wm, tensor, shard) {
        if (!json_is_string(shard)) {
            rc = tvs__fail(TVS_ECORRUPT, "%s: weight_map entry \"%s\" is not a file name",
                           idx->path, tensor);
            goto out;
        }
        char want[4096];
        snprintf(want, sizeof want, "%s%s", dir, json_string_value(shard));
        const in_file *f = NULL;
        for (size_t i = 0; i < m->n_files && !f; i++)
            if (strcmp(m->files[i].name, want) == 0)
                f = &m->files[i];
        if (!f || !f->is_st) {
            rc = tvs__fail(TVS_ENOTFOUND, "%s: shard \"%s\" named for tensor \"%s\" is "
                           "missing from the folder", idx->path, want, tensor);
            goto out;
        }
        if (tvs_st_find(&f->h, tensor) < 0) {
            rc = tvs__fail(TVS_ECORRUPT, "%s: tensor \"%s\" is listed in shard \"%s\", "
                           "which does not hold it", idx->path, tensor, want);
            goto out;
        }
    }
out:
    json_decref(root);
    return rc;
}

static int gather(imp *m, const char *path, int *single)
{
    struct stat st;
    int rc;
    if (stat(path, &st))
        return tvs__fail(errno == ENOENT ? TVS_ENOTFOUND : TVS_EIO, "%s: %s", path,
                         strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        *single = 0;
        if ((rc = walk(m, path, "", 0)))
            return rc;
    } else {
        *single = 1;
        const char *base = strrchr(path, '/');
        if ((rc = add_file(m, "", path)))
            return rc;
        in_file *f = &m->files[0];
        char *nm = tvs_strdup(base ? base + 1 : path);
        if (!nm)
            return tvs__fail(TVS_ENOMEM, "out of memory");
        tvs_free(f->name);
        f->name = nm;
        f->is_st = 1;   /* a single file must be safetensors, whatever its name */
    }
    size_t n_st = 0;
    for (size_t i = 0; i < m->n_files; i++) {
        if ((rc = open_file(&m->files[i])))
            return rc;
        n_st += m->files[i].is_st;
        m->total += m->files[i].size;
    }
    if (!n_st)
        return tvs__fail(TVS_EINVAL, "%s: no .safetensors files to import", path);
    for (size_t i = 0; i < m->n_files; i++) {
        size_t len = strlen(m->files[i].name);
        if (len >= 11 && strcmp(m->files[i].name + len - 11, ".index.json") == 0 &&
            strstr(m->files[i].name, ".safetensors.index.json") &&
            (rc = check_index(m, &m->files[i])))
            return rc;
    }
    return 0;
}

/* ---- hashing and lookups */

/* Checksum of every tensor read from disk (stored sources carry theirs). */
static int hash_tensors(imp *m)
{
    tvs_hasher *h;
    uint8_t *buf = tvs_malloc(4u << 20);
    int rc = tvs_hasher_new(&h);
    if (!rc && !buf)
        rc = tvs__fail(TVS_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < m->n_tensors; i++) {
        tensor_build *tb = &m->tensors[i];
        if (tb->src)
            continue;
        const in_file *f = &m->files[tb->file];
        tvs_hasher_reset(h);
        for (uint64_t o = 0; !rc && o < tb->t.nbytes; o += 4u << 20) {
            size_t n = (size_t)TVS_MIN((uint64_t)4u << 20, tb->t.nbytes - o);
            if (!(rc = read_full(f->fd, buf, n, tb->off + o, f->path)))
                tvs_hasher_update(h, buf, n);
        }
        tvs_hasher_final(&tb->t.checksum, h);
    }
    tvs_hasher_free(h);
    tvs_free(buf);
    return rc;
}


static int same_layout(const tvs_tensor_obj *a, const tvs_tensor_obj *b)
{
    return a->dtype == b->dtype && a->rank == b->rank && a->nbytes == b->nbytes &&
           memcmp(a->shape, b->shape, a->rank * sizeof *a->shape) == 0;
}

static int load_chain(tvs_tensor_chain **out, tvs_txn *txn, const tvs_id *id)
{
    if (!*out && !(*out = tvs_malloc(sizeof **out)))
        return tvs__fail(TVS_ENOMEM, "out of memory");
    return tvs_tensor_chain_load(*out, txn, id);
}

/* ---- plan: one tensor_build per tensor, in file order */

static int plan_tensors(imp *m)
{
    size_t nt = 0;
    for (size_t i = 0; i < m->n_files; i++)
        nt += m->files[i].is_st ? m->files[i].h.n : 1;
    m->tensors = tvs_calloc(nt ? nt : 1, sizeof *m->tensors);
    if (!m->tensors)
        return tvs__fail(TVS_ENOMEM, "out of memory planning %zu tensors", nt);
    for (size_t i = 0; i < m->n_files; i++) {
        in_file *f = &m->files[i];
        f->first_tensor = m->n_tensors;
        uint64_t data0 = f->is_st ? 8 + f->h.header_len : 0;
        size_t k = f->is_st ? f->h.n : 1;
        for (size_t j = 0; j < k; j++) {
            tensor_build *tb = &m->tensors[m->n_tensors++];
            tvs_tensor_obj *t = &tb->t;
            tb->file = i;
            tb->off = data0;
            if (f->is_st) {
                const tvs_st_tensor *s = &f->h.tensors[j];
                t->dtype = s->dtype;
                t->rank = s->rank;
                memcpy(t->shape, s->shape, s->rank * sizeof *s->shape);
                t->nbytes = s->end - s->begin;
                tb->off += s->begin;
                tb->name = s->name;
            } else {
                t->dtype = TVS_DTYPE_U8;
                t->rank = 1;
                t->shape[0] = f->size;
                t->nbytes = f->size;
                tb->name = f->name;
            }
            t->encoding = TVS_ENC_CHUNKED;
            t->chunk_size = CH;
            t->n_chunks = (uint32_t)tvs_chunks_for(t->nbytes, CH);
        }
    }
    return 0;
}

/* For a stored source (diff): each tensor's chain, and its checksum. */
static int bind_source(imp *m)
{
    for (size_t i = 0; i < m->n_files; i++) {
        in_file *f = &m->files[i];
        for (size_t j = 0; j < (f->is_st ? f->h.n : 1); j++) {
            tensor_build *tb = &m->tensors[f->first_tensor + j];
            tvs_id id = f->stored->blob;
            if (f->is_st) {
                const tvs_model_entry *e = tvs_model_file_find(f->stored, tb->name);
                if (!e)
                    return tvs__fail(TVS_ECORRUPT, "source model: tensor \"%s\" is in the "
                                     "header but not in the model", tb->name);
                id = e->id;
            }
            int rc = load_chain(&tb->src, m->rtxn, &id);
            if (rc)
                return rc;
            if (!same_layout(&tb->src->t[0], &tb->t))
                return tvs__fail(TVS_ECORRUPT, "source model: tensor \"%s\" differs from its "
                                 "header", tb->name);
            if (tb->src->t[0].chunk_size != CH)
                return tvs__fail(TVS_EINVAL, "source tensor \"%s\" uses %u-byte chunks; "
                                 "only %u are supported here", tb->name,
                                 tb->src->t[0].chunk_size, CH);
            tb->t.checksum = tb->src->t[0].checksum;
            tb->id = id;   /* reused as is unless a delta pays */
        }
    }
    return 0;
}

/*
 * Decide FULL / DELTA / REUSE for every tensor, in this order: equal to the
 * base's tensor -> reuse it; equal to any stored tensor -> reuse that (free,
 * where a delta would cost bytes); same layout as the base's -> delta;
 * a stored source (diff) -> keep its tensor; else full.
 */
static int decide(imp *m, int max_chain, size_t *matched)
{
    int rc = 0;
    *matched = 0;
    for (size_t i = 0; !rc && i < m->n_tensors; i++) {
        tensor_build *tb = &m->tensors[i];
        const tvs_model_entry *be = m->has_base && m->files[tb->file].is_st
                                        ? tvs_model_find(&m->base, tb->name) : NULL;
        tvs_tensor_obj bt;
        if (be && (rc = tvs_tensor_load(&bt, m->rtxn, &be->id)))
            return rc;
        int layout = be && same_layout(&bt, &tb->t);
        *matched += layout;
        tvs_id cand;
        uint64_t elems = tb->t.nbytes * 8 / TVS_MAX(tvs_dtype_bits(tb->t.dtype), 1u);
        /* matrices only: vectors (norm gains, biases) are few values that each scale
         * a whole channel, and stay exact */
        int lossy = (m->max_error > 0 || m->bits > 0) && layout && bt.chunk_size == CH &&
                    tvs_lossy_dtype_ok(tb->t.dtype) && elems >= TVS__LMIN_ELEMS &&
                    tb->t.rank >= 2;
        tb->mode = MODE_FULL;
        if (tb->no_reuse) {
            /* decided already that reuse would be too deep */
        } else if (layout && tvs_id_eq(&bt.checksum, &tb->t.checksum)) {
            tb->mode = MODE_REUSE;
            tb->id = be->id;
        } else if (lossy) {
            /* a stored tensor with the same bytes is the exact one: not wanted */
            if ((rc = load_chain(&tb->other, m->rtxn, &be->id)))
                return rc;
            if ((int)tb->other->depth <= max_chain) {
                tb->mode = MODE_LOSSY;
                tb->t.encoding = TVS_ENC_LOSSY;
                tb->t.base = be->id;
                continue;
            }
        } else if (tvs_sums_get(&cand, m->rtxn, &tb->t.checksum) == 0 &&
                   !(tb->src && tvs_id_eq(&cand, &tb->src->id[0]))) {
            tvs_tensor_obj ct;
            if ((rc = tvs_tensor_load(&ct, m->rtxn, &cand)))
                return rc;
            if (same_layout(&ct, &tb->t) && tvs_id_eq(&ct.checksum, &tb->t.checksum) &&
                ct.chunk_size <= CH) {
                tb->mode = MODE_REUSE;
                tb->id = cand;
            }
        }
        if (tb->mode == MODE_FULL && layout && bt.chunk_size == CH && tb->t.nbytes > 0) {
            if ((rc = load_chain(&tb->other, m->rtxn, &be->id)))
                return rc;
            if ((int)tb->other->depth <= max_chain) {
                tb->mode = MODE_DELTA;
                tb->t.encoding = TVS_ENC_DELTA;
                tb->t.base = be->id;
                tb->t.transform = (uint8_t)tvs_delta_transform_for(tb->t.dtype);
                continue;
            }
        }
        if (tb->mode == MODE_FULL && tb->src) {
            tb->mode = MODE_REUSE;
            tb->id = tb->src->id[0];
        }
        if (tb->mode == MODE_REUSE) {
            /* an identical object needs no check; equal checksums get one */
            tb->verify = !(tb->src && tvs_id_eq(&tb->id, &tb->src->id[0]));
            if ((rc = load_chain(&tb->other, m->rtxn, &tb->id)))
                return rc;
            int own = tb->src && tvs_id_eq(&tb->id, &tb->src->id[0]);
            if (!own && (int)tb->other->depth - 1 > max_chain) {
                /* reusing it would make this model deeper than allowed */
                tb->mode = MODE_FULL;
                tb->verify = 0;
                tb->no_reuse = 1;
                *matched -= layout;
                i--;   /* decide again, without reuse */
                continue;
            }
        }
    }
    return rc;
}

/* ---- jobs */

/* Elements per row: the product of all but the first dimension. */
/*
 * The model's output head (Hugging Face `lm_head.weight`, GGUF-style
 * `output.weight`): it writes the logits, so its error reaches the loss
 * directly.
 */
static int is_output_head(const char *name)
{
    if (!name)
        return 0;
    size_t n = strlen(name);
    return !strcmp(name, "lm_head.weight") || !strcmp(name, "output.weight") ||
           (n > 15 && !strcmp(name + n - 15, ".lm_head.weight"));
}

static uint64_t tensor_cols(const tvs_tensor_obj *t)
{
    uint64_t cols = 1;
    for (uint32_t i = 1; i < t->rank; i++)
        cols *= t->shape[i];
    if (t->rank < 2)
        cols = t->nbytes * 8 / TVS_MAX(tvs_dtype_bits(t->dtype), 1u);
    return TVS_MAX(cols, 1u);
}

static int plan_jobs(imp *m)
{
    size_t nj = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const tensor_build *tb = &m->tensors[i];
        if (tb->mode != MODE_REUSE)
            nj += tb->t.n_chunks;
        else if (tb->verify)
            nj += tb->other->t[0].n_chunks;
    }
    m->jobs = tvs_calloc(nj ? nj : 1, sizeof *m->jobs);
    if (!m->jobs)
        return tvs__fail(TVS_ENOMEM, "out of memory planning %zu chunks", nj);
    size_t nu = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const tensor_build *tb = &m->tensors[i];
        unsigned w = tvs_dtype_bits(tb->t.dtype) / 8;
        for (uint32_t c = 0; tb->mode == MODE_LOSSY && c < tb->t.n_chunks; c++)
            nu += tvs__lossy_units(NULL, (uint64_t)c * (CH / w),
                                   tvs_tensor_chunk_len(&tb->t, c) / w, tensor_cols(&tb->t));
    }
    if (nu && !(m->units = tvs_calloc(nu, sizeof *m->units)))
        return tvs__fail(TVS_ENOMEM, "out of memory planning %zu lossy units", nu);
    for (size_t i = 0; i < m->n_tensors; i++) {
        tensor_build *tb = &m->tensors[i];
        if (tb->mode == MODE_REUSE && !tb->verify)
            continue;
        if (tb->mode != MODE_REUSE && !(tb->ids = tvs_malloc((size_t)tb->t.n_chunks * TVS_ID_LEN + 1)))
            return tvs__fail(TVS_ENOMEM, "out of memory planning chunks");
        tb->t.chunk_ids = tb->ids;
        const tvs_tensor_obj *shape = tb->mode == MODE_REUSE ? &tb->other->t[0] : &tb->t;
        for (uint32_t c = 0; c < shape->n_chunks; c++) {
            job *jb = &m->jobs[m->n_jobs++];
            jb->kind = tb->mode == MODE_REUSE ? JOB_VERIFY
                     : tb->mode == MODE_DELTA ? JOB_DELTA
                     : tb->mode == MODE_LOSSY ? JOB_LOSSY : JOB_ENCODE;
            jb->tensor = i;
            jb->chunk = c;
            jb->len = (uint32_t)tvs_tensor_chunk_len(shape, c);
            if (jb->kind == JOB_LOSSY) {
                unsigned w = tvs_dtype_bits(tb->t.dtype) / 8;
                jb->unit0 = m->n_units;
                jb->n_units = tvs__lossy_units(m->units + m->n_units,
                                               (uint64_t)c * (CH / w), jb->len / w,
                                               tensor_cols(&tb->t));
                for (uint32_t k = 0; k < jb->n_units; k++)
                    m->units[m->n_units + k].head = is_output_head(tb->name);
                m->n_units += jb->n_units;
            }
            int rc = 0;
            if (jb->kind != JOB_ENCODE)
                rc = tvs_chunk_plan_make(&jb->other, m->rtxn, tb->other, c);
            if (!rc && tb->src)
                rc = tvs_chunk_plan_make(&jb->src, m->rtxn, tb->src, c);
            if (rc)
                return tvs__failctx(rc, "tensor \"%s\"", tb->name);
        }
    }
    return 0;
}

/* Slot: source bytes, other (base or stored) bytes, scratch, id, encoded. */
#define SLOT_OTHER CH
#define SLOT_SCRATCH (2 * CH)
#define SLOT_ID (3 * CH)
#define SLOT_ENC (3 * CH + TVS_ID_LEN)
/* a lossy chunk may be a little longer than the bytes it covers */
#define SLOT_CAP (SLOT_ENC + tvs_chunk_bound(CH + (64u << 10)))

/* The level of plan @p a from which its chunks (the same objects) and
 * transforms are those of plan @p b, so it decodes to b's bytes; 0 if none. */
static uint32_t plan_via(const tvs_chunk_plan *a, const tvs_chunk_plan *b)
{
    if (a->depth <= b->depth || a->raw_len != b->raw_len || a->dtype != b->dtype)
        return 0;
    uint32_t l = a->depth - b->depth;
    for (uint32_t k = 0; k < b->depth; k++)
        if (a->chunk[l + k].ptr != b->chunk[k].ptr || a->chunk[l + k].len != b->chunk[k].len ||
            (k + 1 < b->depth && a->transform[l + k] != b->transform[k]))
            return 0;
    return l;
}

/*
 * The job's source bytes into @p src and, unless it only encodes, the other
 * chunk's into @p other. A stored source whose chain of bases runs through
 * the other chunk (compress: a fine-tune stored as a delta of the base it
 * is made lossy against) is rebuilt from the other's bytes, decoded once.
 */
static int load_job(const imp *m, tvs_codec_ctx *ctx, const job *jb, const tensor_build *tb,
                    uint8_t *src, uint8_t *other, uint8_t *scratch, uint64_t off)
{
    const in_file *f = &m->files[tb->file];
    uint32_t via = tb->src && jb->kind != JOB_ENCODE ? plan_via(&jb->src, &jb->other) : 0;
    int rc;
    if (jb->kind != JOB_ENCODE && (rc = tvs_chunk_plan_decode(other, scratch, &jb->other, ctx)))
        return tvs__failctx(rc, "tensor \"%s\"", tb->name);
    if (via) {
        tvs_chunk_plan top = jb->src;   /* the levels above the other tensor */
        top.depth = via + 1;
        return tvs_chunk_plan_apply_to(src, other, scratch, &top, ctx);
    }
    return tb->src ? tvs_chunk_plan_decode(src, scratch, &jb->src, ctx)
                   : read_full(f->fd, src, jb->len, tb->off + off, f->path);
}

/* Read, transform and encode (or compare) one chunk; @p tb is its tensor. */
static int do_job(const imp *m, int worker, const job *jb, const tensor_build *tb,
                  uint8_t *slot, size_t cap, size_t *len)
{
    tvs_codec_ctx *ctx = m->ctx[worker];
    uint8_t *src = slot, *other = slot + SLOT_OTHER, *scratch = slot + SLOT_SCRATCH;
    uint64_t off = (uint64_t)jb->chunk *
                   (tb->mode == MODE_REUSE ? tb->other->t[0].chunk_size : CH);
    *len = 0;
    int rc = load_job(m, ctx, jb, tb, src, other, scratch, off);
    if (rc)
        return rc;
    if (jb->kind == JOB_LOSSY) {
        /* the lossy chunk's bytes; the decoded elements replace the base's in other */
        tvs_buf *lb = &m->lbuf[worker];
        lb->len = 0;
        if ((rc = tvs__lossy_encode(m->lw[worker], lb, m->units + jb->unit0, jb->n_units,
                                    src, other, tb->t.dtype, m->max_error)))
            return tvs__failctx(rc, "tensor \"%s\"", tb->name);
        tvs_chunk_params lp = { 1, 0, m->level, 0 };
        size_t w;
        if ((rc = tvs_chunk_encode(slot + SLOT_ENC, cap - SLOT_ENC, &w, ctx, lb->ptr, lb->len,
                                   &lp)))
            return rc;
        tvs_id id;
        tvs_id_of(&id, slot + SLOT_ENC, w);
        memcpy(slot + SLOT_ID, id.b, TVS_ID_LEN);
        *len = w;
        return 0;
    }
    if (jb->kind == JOB_VERIFY) {
        if (memcmp(src, other, jb->len) != 0)
            return tvs__fail(TVS_ECOLLIDE, "tensor \"%s\": same XXH3-128 checksum as a "
                             "stored tensor but different bytes (chunk %u); nothing was "
                             "stored", tb->name, jb->chunk);
        return 0;
    }
    unsigned bits = tvs_dtype_bits(tb->t.dtype);
    tvs_chunk_params p = { bits >= 8 ? bits / 8 : 1, tvs_dtype_is_float(tb->t.dtype),
                           m->level, 0 };
    const uint8_t *in = src;
    if (jb->kind == JOB_DELTA) {
        if ((rc = tvs_delta_make(scratch, src, other, jb->len, tb->t.transform)))
            return rc;
        in = scratch;
        p.elem_bytes = tvs_delta_width(tb->t.transform);
        p.is_float = 0;
        p.delta = 1;
    }
    size_t w;
    if ((rc = tvs_chunk_encode(slot + SLOT_ENC, cap - SLOT_ENC, &w, ctx, in, jb->len, &p)))
        return rc;
    tvs_id id;
    tvs_id_of(&id, slot + SLOT_ENC, w);
    memcpy(slot + SLOT_ID, id.b, TVS_ID_LEN);
    *len = w;
    return 0;
}

static int run_job(void *payload, int worker, size_t j, uint8_t *slot, size_t cap,
                   size_t *len)
{
    imp *m = payload;
    const job *jb = &m->jobs[j];
    const tensor_build *tb = &m->tensors[jb->tensor];
    *len = 0;
    if (tb->keep)
        return 0;
    if (jb->again) {   /* the base's bytes, for write_chunks to rebuild the stored chunk on */
        int rc = tvs_chunk_plan_decode(slot + SLOT_OTHER, slot + SLOT_SCRATCH, &jb->other,
                                       m->ctx[worker]);
        return rc ? tvs__failctx(rc, "tensor \"%s\"", tb->name) : 0;
    }
    return do_job(m, worker, jb, tb, slot, cap, len);
}

/* ---- lossy: measure every unit, then choose */

/* Elements of the model's safetensors tensors. */
static uint64_t res_params(const imp *m)
{
    uint64_t params = 0;
    for (size_t i = 0; i < m->n_tensors; i++)
        if (m->files[m->tensors[i].file].is_st)
            params += m->tensors[i].t.nbytes * 8 /
                      TVS_MAX(tvs_dtype_bits(m->tensors[i].t.dtype), 1u);
    return params;
}

static int analyze_job(void *payload, int worker, size_t j, uint8_t *slot, size_t cap,
                       size_t *len)
{
    imp *m = payload;
    const job *jb = &m->jobs[j];
    const tensor_build *tb = &m->tensors[jb->tensor];
    (void)cap;
    *len = 0;
    if (jb->kind != JOB_LOSSY)
        return 0;
    uint8_t *src = slot, *other = slot + SLOT_OTHER, *scratch = slot + SLOT_SCRATCH;
    int rc = load_job(m, m->ctx[worker], jb, tb, src, other, scratch, (uint64_t)jb->chunk * CH);
    if (!rc)
        rc = tvs__lossy_analyze(m->lw[worker], m->units + jb->unit0, jb->n_units, src, other,
                                tb->t.dtype);
    return rc ? tvs__failctx(rc, "tensor \"%s\"", tb->name) : 0;
}

/* Bytes of the model and tensor objects (not their chunks). */
static double objects_cost(const imp *m)
{
    double b = 256;
    for (size_t i = 0; i < m->n_files; i++)
        b += 64 + strlen(m->files[i].name) + (m->files[i].is_st ? m->files[i].h.header_len : 0);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const tensor_build *tb = &m->tensors[i];
        b += 20 + strlen(tb->name);
        if (tb->mode != MODE_REUSE)
            b += 64 + 8.0 * tb->t.rank + TVS_ID_LEN * (double)tb->t.n_chunks;
    }
    return b;
}

/* Bytes the model costs outside its lossy units: objects, headers, other tensors. */
static double fixed_cost(const imp *m)
{
    double b = objects_cost(m);
    for (size_t i = 0; i < m->n_tensors; i++) {
        const tensor_build *tb = &m->tensors[i];
        if (tb->mode == MODE_REUSE)
            continue;
        /* per chunk: its header, and (lossy) the zstd frame and Huffman table */
        b += (TVS_CHUNK_HDR + 5) * (double)tb->t.n_chunks;
        if (tb->mode == MODE_LOSSY)
            b += 100.0 * tb->t.n_chunks;
        else
            b += 0.75 * (double)tb->t.nbytes;   /* stored exactly: about 3/4 of its size */
    }
    return b;
}

static int lossy_choose(imp *m, double cut, int analyzed)
{
    tvs__pipe *pipe = NULL;
    int rc = 0;
    if (!m->n_units)
        return 0;
    if (analyzed)
        goto choose;
    if ((rc = tvs__pipe_start(&pipe, m->threads, m->n_jobs, 2 * m->threads + 2, SLOT_ENC,
                              analyze_job, m)))
        return rc;
    for (size_t i = 0; !rc && i < m->n_jobs; i++) {
        size_t j, len;
        uint8_t *slot;
        rc = tvs__pipe_next(pipe, &j, &slot, &len);
    }
    tvs__pipe_stop(pipe);
    if (rc)
        return rc;
choose:
    if (m->max_error > 0) {
        tvs__lossy_pick_error(m->units, m->n_units, m->max_error);
        return 0;
    }
    uint64_t params = 0;
    for (size_t i = 0; i < m->n_tensors; i++)
        if (m->files[m->tensors[i].file].is_st)
            params += m->tensors[i].t.nbytes * 8 /
                      TVS_MAX(tvs_dtype_bits(m->tensors[i].t.dtype), 1u);
    /* 0.5 % of slack: rates are estimates (entropy of sampled bytes) */
    double budget = 0.995 * m->bits * (double)params / 8 - fixed_cost(m) - cut, least = 0;
    for (size_t k = 0; k < m->n_units; k++)
        least += m->units[k].n_cand ? m->units[k].cand[0].rate : 0;
    if (budget < least)
        return tvs__fail(TVS_EINVAL, "--bits %g: this model needs at least %.3f bits per "
                         "parameter (%zu lossy units, every other tensor exact)", m->bits,
                         (least + fixed_cost(m)) * 8 / (double)TVS_MAX(params, 1u),
                         m->n_units);
    tvs__lunit **order = tvs_malloc(m->n_units * sizeof *order);
    if (!order)
        return tvs__fail(TVS_ENOMEM, "out of memory");
    /*
     * The total minimized: each unit's squared error relative to its own
     * delta's energy, times its values -- so a unit that changed little
     * counts as much, per value, as one that changed a lot. (Plain squared
     * error starves units with small deltas, which measurably hurt the task
     * loss more than the same bits spent evenly.)
     */
    for (size_t k = 0; k < m->n_units; k++) {
        tvs__lunit *u = &m->units[k];
        u->weight = u->norm2 > 0 ? u->n / u->norm2 : 1;
        if (u->head)
            u->weight *= TVS__LHEAD_WEIGHT;
    }
    for (size_t k = 0; k < m->n_units; k++)
        order[k] = &m->units[k];
    rc = tvs__lossy_allocate(order, m->n_units, budget);
    tvs_free(order);
    return rc;
}

/*
 * Before a later --bits pass: a lossy chunk whose every unit starts from
 * the pick its last encoding started from would come out the same again
 * (encoding depends only on the picks and the bytes), so its units keep
 * their results, and it is not encoded again: a tensor of such chunks
 * keeps its chunks, ids and checksum; in another tensor, write_chunks
 * rebuilds its decoded bytes (for the checksum) from the stored chunk.
 */
static void keep_unchanged(imp *m)
{
    for (size_t i = 0; i < m->n_tensors; i++)
        m->tensors[i].keep = m->tensors[i].mode == MODE_LOSSY;
    for (size_t j = 0; j < m->n_jobs; j++) {
        job *jb = &m->jobs[j];
        jb->again = jb->kind == JOB_LOSSY;
        for (uint32_t k = 0; jb->again && k < jb->n_units; k++)
            jb->again = m->units[jb->unit0 + k].pick == m->units[jb->unit0 + k].from;
        if (jb->kind == JOB_LOSSY && !jb->again)
            m->tensors[jb->tensor].keep = 0;
        for (uint32_t k = 0; jb->again && k < jb->n_units; k++)
            m->units[jb->unit0 + k].pick = m->units[jb->unit0 + k].written;
    }
}

/* The decoded bytes of a lossy chunk stored by an earlier pass: the base's
 * bytes in @p base_io (@p len of them) become the chunk's. */
static int rebuild(uint8_t *base_io, tvs_txn *txn, tvs_codec_ctx *ctx, const tensor_build *tb,
                   uint32_t chunk, size_t len)
{
    tvs_id id;
    tvs_span c, raw;
    memcpy(id.b, tb->ids + (size_t)chunk * TVS_ID_LEN, TVS_ID_LEN);
    int rc = tvs_obj_get(&c, txn, &id);
    if (!rc && !(rc = tvs_chunk_view(&raw, c, ctx)))
        rc = tvs_lossy_chunk_apply(base_io, tb->t.dtype, len / (tvs_dtype_bits(tb->t.dtype) / 8),
                                   raw);
    return rc ? tvs__failctx(rc, "tensor \"%s\", chunk %u of an earlier pass", tb->name, chunk)
              : 0;
}

static int write_chunks(imp *m, tvs_store *s, const tvs_import_opts *o, uint64_t *written)
{
    tvs__pipe *pipe = NULL;
    tvs_txn *txn = NULL;
    tvs_codec_ctx *ctx = NULL;   /* for chunks rebuilt from an earlier pass */
    uint64_t done = 0, batch = 0;
    int rc = 0;
    tvs_hasher *h = NULL;
    if (m->n_units && (rc = tvs_hasher_new(&h)))
        return rc;
    if (m->n_jobs && (rc = tvs__pipe_start(&pipe, m->threads, m->n_jobs, 4 * m->threads + 4,
                                           SLOT_CAP, run_job, m))) {
        tvs_hasher_free(h);
        return rc;
    }
    for (size_t i = 0; i < m->n_jobs; i++) {
        size_t j, len;
        uint8_t *slot;
        if ((rc = tvs__pipe_next(pipe, &j, &slot, &len)))
            break;
        const job *jb = &m->jobs[j];
        done += jb->len;
        if (o->progress)
            o->progress(o->progress_payload, done, m->total);
        if (jb->kind == JOB_VERIFY)
            continue;
        tensor_build *tb = &m->tensors[jb->tensor];
        if (tb->keep) {
            m->own += jb->stored;
            continue;
        }
        if (jb->again && ((!txn && (rc = tvs_txn_begin_room(&txn, s, 0))) ||
                          (!ctx && (rc = tvs_codec_ctx_new(&ctx, CH))) ||
                          (rc = rebuild(slot + SLOT_OTHER, txn, ctx, tb, jb->chunk, jb->len))))
            break;
        if (jb->kind == JOB_LOSSY) {
            /* a lossy tensor's checksum is of its decoded bytes, in order */
            if (jb->chunk == 0)
                tvs_hasher_reset(h);
            tvs_hasher_update(h, slot + SLOT_OTHER, jb->len);
            if (jb->chunk + 1 == tb->t.n_chunks)
                tvs_hasher_final(&tb->t.checksum, h);
        }
        if (jb->again) {   /* stored already */
            m->own += jb->stored;
            continue;
        }
        if (!txn && (rc = tvs_txn_begin_room(&txn, s, 0)))
            break;
        tvs_id id;
        int existed;
        memcpy(id.b, slot + SLOT_ID, TVS_ID_LEN);
        memcpy(tb->ids + (size_t)jb->chunk * TVS_ID_LEN, id.b, TVS_ID_LEN);
        if ((rc = tvs_obj_put(txn, &id, (tvs_span){ slot + SLOT_ENC, len }, &existed))) {
            tvs__failctx(rc, "tensor \"%s\"", tb->name);
            break;
        }
        if (!existed)
            *written += len;
        m->own += len;
        m->jobs[j].stored = len;
        batch += len;
        if (batch >= BATCH_BYTES) {
            rc = tvs_txn_commit(txn);
            txn = NULL;
            batch = 0;
            if (rc)
                break;
        }
    }
    if (!rc && txn) {
        rc = tvs_txn_commit(txn);
        txn = NULL;
    }
    tvs_txn_end(txn);
    tvs__pipe_stop(pipe);
    tvs_hasher_free(h);
    tvs_codec_ctx_free(ctx);
    if (rc == TVS__EMAPFULL)
        rc = tvs__fail(TVS_EIO, "the store map filled up during the import (another writer "
                       "used the room reserved for it); nothing was published, try again");
    return rc;
}

/* ---- publish */

const char *tvs__author(const char *given)
{
    const char *author = given ? given : getenv("USER");
    if (!author) {
        struct passwd *pw = getpwuid(getuid());
        author = pw ? pw->pw_name : "unknown";
    }
    return author;
}

typedef struct {
    imp *m;
    tvs_model_obj model;
    tvs_buf tensor_bytes;       /* new tensor objects, back to back */
    size_t *tensor_len;
    tvs_buf model_bytes;
    tvs_id model_id, head;
    tvs_id *parents;
    int has_head;
    const char *ref;
    char msg[512];
    uint64_t written;
} publish;

static int entry_cmp(const void *a, const void *b)
{
    const tvs_model_entry *x = a, *y = b;
    int c = memcmp(x->name.ptr, y->name.ptr, TVS_MIN(x->name.len, y->name.len));
    return c ? c : (x->name.len < y->name.len ? -1 : x->name.len > y->name.len);
}

static int file_cmp(const void *a, const void *b)
{
    const tvs_model_file *x = a, *y = b;
    int c = memcmp(x->name.ptr, y->name.ptr, TVS_MIN(x->name.len, y->name.len));
    return c ? c : (x->name.len < y->name.len ? -1 : x->name.len > y->name.len);
}

static int build_objects(publish *p, const tvs_import_opts *o)
{
    imp *m = p->m;
    int rc = 0;
    p->tensor_len = tvs_calloc(m->n_tensors ? m->n_tensors : 1, sizeof *p->tensor_len);
    p->model.files = tvs_calloc(m->n_files, sizeof *p->model.files);
    if (!p->tensor_len || !p->model.files)
        return tvs__fail(TVS_ENOMEM, "out of memory building the model");
    for (size_t i = 0; i < m->n_tensors; i++) {
        tensor_build *tb = &m->tensors[i];
        if (tb->mode == MODE_REUSE)
            continue;
        if (tb->t.n_chunks == 0)
            tvs_id_of(&tb->t.checksum, "", 0);
        size_t before = p->tensor_bytes.len;
        if ((rc = tvs_tensor_encode(&p->tensor_bytes, &tb->t)))
            return rc;
        p->tensor_len[i] = p->tensor_bytes.len - before;
        tvs_id_of(&tb->id, p->tensor_bytes.ptr + before, p->tensor_len[i]);
    }
    p->model.kind = m->delta_model ? TVS_MODEL_DELTA : TVS_MODEL_FULL;
    if (m->delta_model)
        p->model.base = m->base_id;
    p->model.flags = m->single ? TVS_MODEL_SINGLE_FILE : 0;
    if (m->n_units)
        p->model.flags |= TVS_MODEL_LOSSY;
    p->model.time = (int64_t)time(NULL);
    const char *author = tvs__author(o->author);
    p->model.author = (tvs_span){ (const uint8_t *)author, strlen(author) };
    p->model.message = (tvs_span){ (const uint8_t *)p->msg, strlen(p->msg) };
    p->model.parents = p->parents;
    for (size_t i = 0; i < m->n_files; i++) {
        in_file *f = &m->files[i];
        tvs_model_file *mf = &p->model.files[p->model.n_files++];
        mf->name = (tvs_span){ (const uint8_t *)f->name, strlen(f->name) };
        if (!f->is_st) {
            mf->kind = TVS_FILE_BLOB;
            mf->blob = m->tensors[f->first_tensor].id;
            continue;
        }
        mf->kind = TVS_FILE_SAFETENSORS;
        mf->header = (tvs_span){ f->json, f->h.header_len };
        mf->tensors = tvs_calloc(f->h.n ? f->h.n : 1, sizeof *mf->tensors);
        if (!mf->tensors)
            return tvs__fail(TVS_ENOMEM, "out of memory building the model");
        for (size_t j = 0; j < f->h.n; j++) {
            mf->tensors[j].name = (tvs_span){ (const uint8_t *)f->h.tensors[j].name,
                                              f->h.tensors[j].name_len };
            mf->tensors[j].id = m->tensors[f->first_tensor + j].id;
        }
        mf->n_tensors = f->h.n;
        qsort(mf->tensors, mf->n_tensors, sizeof *mf->tensors, entry_cmp);
    }
    qsort(p->model.files, p->model.n_files, sizeof *p->model.files, file_cmp);
    if ((rc = tvs_model_encode(&p->model_bytes, &p->model)))
        return rc;
    tvs_id_of(&p->model_id, p->model_bytes.ptr, p->model_bytes.len);
    return 0;
}

static int publish_txn(tvs_txn *txn, void *payload)
{
    publish *p = payload;
    size_t off = 0;
    int rc = 0, existed;
    p->written = 0;
    for (size_t i = 0; !rc && i < p->m->n_tensors; i++) {
        tensor_build *tb = &p->m->tensors[i];
        if (tb->mode == MODE_REUSE)
            continue;
        rc = tvs_obj_put(txn, &tb->id, (tvs_span){ p->tensor_bytes.ptr + off,
                                                   p->tensor_len[i] }, &existed);
        if (!rc && !existed)
            p->written += p->tensor_len[i];
        if (!rc)
            rc = tvs_sums_put(txn, &tb->t.checksum, &tb->id);
        off += p->tensor_len[i];
    }
    if (!rc)
        rc = tvs_obj_put(txn, &p->model_id,
                         (tvs_span){ p->model_bytes.ptr, p->model_bytes.len }, NULL);
    p->written += p->model_bytes.len;
    if (!rc && p->m->delta_model)
        rc = tvs_lineage_add(txn, &p->m->base_id, TVS_REL_DELTA, &p->model_id);
    for (size_t i = 0; !rc && i < p->model.n_parents; i++)
        rc = tvs_lineage_add(txn, &p->model.parents[i], TVS_REL_PARENT, &p->model_id);
    if (!rc) {
        static const tvs_id zero;
        rc = tvs_ref_set(txn, p->ref, &p->model_id, p->has_head ? &p->head : &zero, p->msg);
    }
    return rc;
}

static void imp_dispose(imp *m)
{
    for (size_t i = 0; i < m->n_files; i++) {
        in_file *f = &m->files[i];
        if (f->fd >= 0)
            close(f->fd);
        tvs_free(f->name);
        tvs_free(f->path);
        tvs_free(f->json);
        tvs_st_header_dispose(&f->h);
    }
    tvs_free(m->files);
    for (size_t i = 0; i < m->n_tensors; i++) {
        tvs_free(m->tensors[i].ids);
        tvs_free(m->tensors[i].src);
        tvs_free(m->tensors[i].other);
    }
    tvs_free(m->tensors);
    tvs_free(m->jobs);
    tvs__lossy_units_release(m->units, m->n_units);
    tvs_free(m->units);
    for (int i = 0; m->lw && i < m->threads; i++)
        tvs__lworker_free(m->lw[i]);
    tvs_free(m->lw);
    for (int i = 0; m->lbuf && i < m->threads; i++)
        tvs_buf_dispose(&m->lbuf[i]);
    tvs_free(m->lbuf);
    for (int i = 0; m->ctx && i < m->threads; i++)
        tvs_codec_ctx_free(m->ctx[i]);
    tvs_free(m->ctx);
    tvs_model_dispose(&m->base);
    tvs_model_dispose(&m->source);
    tvs_txn_end(m->rtxn);
    memset(m, 0, sizeof *m);
}

/* ---- choosing a base */

typedef struct {
    tvs_id ids[256];
    size_t n;
    tvs_txn *txn;
} full_models;

static int collect_full(const char *name, const tvs_id *id, void *p)
{
    full_models *fm = p;
    for (size_t i = 0; i < fm->n; i++)
        if (tvs_id_eq(&fm->ids[i], id))
            return 0;
    tvs_span b;
    if (fm->n < 256 && tvs_obj_get(&b, fm->txn, id) == 0 && b.len > 2 && b.ptr[0] == TVS_OBJ_MODEL &&
        b.ptr[2] == TVS_MODEL_FULL)
        fm->ids[fm->n++] = *id;
    return 0;
}

/*
 * Estimated stored bytes of the import as a delta of @p base, per byte of
 * tensors: tensors equal to the base's cost nothing; changed tensors of the
 * same layout cost what a sample of their chunks (one chunk from up to 8
 * tensors) costs as deltas; the rest cost what they cost as full tensors.
 */
static int sample_cost(double *ratio, size_t *matched, imp *m, const tvs_model_obj *base)
{
    double full = 0, delta = 0;
    size_t sampled_raw = 0, sampled_enc = 0, changed = 0, n_changed = 0;
    int rc = 0;
    *matched = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        tensor_build *tb = &m->tensors[i];
        const tvs_model_entry *be = m->files[tb->file].is_st ? tvs_model_find(base, tb->name)
                                                             : NULL;
        tvs_tensor_obj bt;
        if (be && (rc = tvs_tensor_load(&bt, m->rtxn, &be->id)))
            return rc;
        if (be && same_layout(&bt, &tb->t)) {
            ++*matched;
            if (!tvs_id_eq(&bt.checksum, &tb->t.checksum)) {
                changed += tb->t.nbytes;
                n_changed++;
            }
        } else {
            full += (double)tb->t.nbytes;
        }
    }
    uint8_t *slot = tvs_malloc(SLOT_ENC + tvs_chunk_bound(CH));
    tvs_tensor_chain *chain = NULL;
    if (!slot)
        return tvs__fail(TVS_ENOMEM, "out of memory");
    size_t step = n_changed > 8 ? n_changed / 8 : 1, k = 0;
    for (size_t i = 0; !rc && i < m->n_tensors; i++) {
        tensor_build *tb = &m->tensors[i];
        const tvs_model_entry *be = m->files[tb->file].is_st ? tvs_model_find(base, tb->name)
                                                             : NULL;
        tvs_tensor_obj bt;
        if (!be || tvs_tensor_load(&bt, m->rtxn, &be->id) || !same_layout(&bt, &tb->t) ||
            tvs_id_eq(&bt.checksum, &tb->t.checksum) || bt.chunk_size != CH)
            continue;
        if (k++ % step)
            continue;
        job jb = { .kind = JOB_DELTA, .tensor = i, .chunk = 0,
                   .len = (uint32_t)tvs_tensor_chunk_len(&tb->t, 0) };
        if ((rc = load_chain(&chain, m->rtxn, &be->id)) ||
            (rc = tvs_chunk_plan_make(&jb.other, m->rtxn, chain, 0)) ||
            (tb->src && (rc = tvs_chunk_plan_make(&jb.src, m->rtxn, tb->src, 0))))
            break;
        tensor_build as_delta = *tb;   /* the tensor as if it were a delta */
        as_delta.mode = MODE_DELTA;
        as_delta.t.transform = (uint8_t)tvs_delta_transform_for(tb->t.dtype);
        size_t len = 0;
        rc = do_job(m, 0, &jb, &as_delta, slot, SLOT_ENC + tvs_chunk_bound(CH), &len);
        sampled_raw += jb.len;
        sampled_enc += len;
    }
    tvs_free(chain);
    tvs_free(slot);
    if (rc)
        return rc;
    if (sampled_raw)
        delta = (double)changed * (double)sampled_enc / (double)sampled_raw;
    *ratio = m->total ? (delta + 0.7 * full) / (double)m->total : 0;
    return 0;
}

static int pick_base(imp *m, char *reason, size_t cap)
{
    full_models fm = { .txn = m->rtxn };
    int rc = tvs_ref_foreach(m->rtxn, NULL, collect_full, &fm);
    if (rc)
        return rc;
    double best = 2;
    size_t best_matched = 0;
    for (size_t i = 0; i < fm.n; i++) {
        tvs_model_obj cand;
        double r;
        size_t matched;
        if ((rc = tvs_model_load(&cand, m->rtxn, &fm.ids[i])))
            return rc;
        rc = sample_cost(&r, &matched, m, &cand);
        tvs_model_dispose(&cand);
        if (rc)
            return rc;
        if (matched && r < best) {
            best = r;
            best_matched = matched;
            m->base_id = fm.ids[i];
        }
    }
    if (best_matched == 0)
        return tvs__fail(TVS_ENOTFOUND, "--base auto: no stored full model shares a tensor "
                         "name and shape with this model (%zu candidates); import it "
                         "without --base", fm.n);
    snprintf(reason, cap, "%zu of %zu tensors match by name, dtype and shape; sampled "
             "delta cost %.3f of the logical size, lowest of %zu full model%s",
             best_matched, m->n_tensors, best, fm.n, fm.n == 1 ? "" : "s");
    return 0;
}

/* ---- the whole import */

static int run(tvs_import_result *res, tvs_store *s, imp *m, const char *ref,
               const char *what, const tvs_import_opts *o)
{
    publish p = { 0 };
    tvs_txn *txn = NULL;
    int locked = 0, rc;
    memset(res, 0, sizeof *res);
    /* the ref's current head becomes the first parent; checked again at publish */
    if ((rc = tvs_txn_begin(&txn, s, TVS_TXN_READ)))
        return rc;
    rc = tvs_ref_get(&p.head, txn, ref);
    tvs_txn_end(txn);
    p.has_head = rc == 0;
    if (rc && rc != TVS_ENOTFOUND)
        return rc;
    tvs__errclear();
    m->threads = o->threads > 0 ? o->threads : tvs__ncpu();
    m->level = o->level;
    m->max_error = o->max_error;
    m->bits = o->bits;
    if (o->max_error != 0 || o->bits != 0) {
        if ((o->max_error != 0) == (o->bits != 0))
            return tvs__fail(TVS_EINVAL, "a lossy import takes one of --max-error and --bits, "
                             "not both");
        if (!(o->max_error > 0 && o->max_error < 1) && o->max_error != 0)
            return tvs__fail(TVS_EINVAL, "--max-error %g is out of range: it is a relative "
                             "L2 error, 0 < E < 1 (0.1 = 10 %%)", o->max_error);
        if (!(o->bits > 0 && o->bits <= 16) && o->bits != 0)
            return tvs__fail(TVS_EINVAL, "--bits %g is out of range: average bits per "
                             "parameter, 0 < B <= 16", o->bits);
        if (!o->base)
            return tvs__fail(TVS_EINVAL, "a lossy encoding is a delta: give the base the "
                             "model was fine-tuned from (--base BASE)");
    }
    if (!(m->ctx = tvs_calloc((size_t)m->threads, sizeof *m->ctx)))
        return tvs__fail(TVS_ENOMEM, "out of memory");
    for (int i = 0; i < m->threads; i++)
        if ((rc = tvs_codec_ctx_new(&m->ctx[i], CH)))
            return rc;
    /* gc must not sweep chunks written here before the ref is published */
    if ((rc = tvs_store_lock(s, 0, 1)))
        return rc;
    locked = 1;
    if (!m->rtxn && ((rc = tvs_store_reserve(s, m->total + m->total / 8 + (64u << 20))) ||
                     (rc = tvs_txn_begin(&m->rtxn, s, TVS_TXN_READ))))
        goto out;
    if (m->has_source && (rc = bind_source(m)))
        goto out;
    if (!m->has_source && (rc = hash_tensors(m)))
        goto out;
    if (o->base && strcmp(o->base, "auto") == 0) {
        if ((rc = pick_base(m, res->base_reason, sizeof res->base_reason)))
            goto out;
        m->has_base = m->delta_model = 1;
    } else if (o->base) {
        if ((rc = tvs_resolve(&m->base_id, m->rtxn, o->base)))
            goto out;
        m->has_base = m->delta_model = 1;
    }
    size_t n_parents = (size_t)p.has_head + o->n_parents;
    p.parents = tvs_calloc(n_parents ? n_parents : 1, sizeof *p.parents);
    if (!p.parents) {
        rc = tvs__fail(TVS_ENOMEM, "out of memory");
        goto out;
    }
    if (p.has_head)
        p.parents[p.model.n_parents++] = p.head;
    for (size_t i = 0; i < o->n_parents; i++) {
        tvs_id *pid = &p.parents[p.model.n_parents];
        if ((rc = tvs_resolve(pid, m->rtxn, o->parents[i])))
            goto out;
        p.model.n_parents++;
        /* a full model continued from a parent is stored against it */
        if (!m->has_base) {
            m->base_id = *pid;
            m->has_base = 1;
        }
    }
    if (m->has_base && (rc = tvs_model_load(&m->base, m->rtxn, &m->base_id)))
        goto out;
    size_t matched;
    if ((rc = decide(m, o->max_chain > 0 ? o->max_chain : TVS_MAX_CHAIN - 1, &matched)))
        goto out;
    if (m->delta_model && matched == 0) {
        rc = tvs__fail(TVS_EINVAL, "%s shares no tensor (same name, dtype and shape) with "
                       "base '%s'; it is not a fine-tune of it", what, o->base);
        goto out;
    }
    if ((rc = plan_jobs(m)))
        goto out;
    if (m->n_units) {
        m->lw = tvs_calloc((size_t)m->threads, sizeof *m->lw);
        m->lbuf = tvs_calloc((size_t)m->threads, sizeof *m->lbuf);
        if (!m->lw || !m->lbuf) {
            rc = tvs__fail(TVS_ENOMEM, "out of memory");
            goto out;
        }
        int lrq = (m->bits > 0 && m->bits <= TVS__LRQ_MAX_BITS) ||
                  m->max_error >= TVS__LRQ_MIN_ERROR;
        for (int i = 0; i < m->threads; i++) {
            if ((rc = tvs__lworker_new(&m->lw[i])))
                goto out;
            tvs__lworker_set_lowrankq(m->lw[i], lrq);
        }
    }
    /*
     * --bits: the rates chosen are estimates; if the chunks come out over
     * the budget, allocate again with less (the first pass's chunks are left
     * for gc) -- rare, since the estimates lean high.
     */
    double cut = 0;
    for (int pass = 0;; pass++) {
        if ((rc = lossy_choose(m, cut, pass > 0)))
            goto out;
        if (pass > 0)
            keep_unchanged(m);
        m->own = 0;
        if ((rc = write_chunks(m, s, o, &res->written)))
            goto out;
        double target = m->bits * (double)res_params(m) / 8,
               total = (double)m->own + objects_cost(m);
        if (!(m->bits > 0 && m->n_units) || total <= target || pass == 3)
            break;
        cut += (total - target) * 1.2 + 64;
    }
    if (o->message)
        snprintf(p.msg, sizeof p.msg, "%s", o->message);
    else
        snprintf(p.msg, sizeof p.msg, "import %s", what);
    p.m = m;
    p.ref = ref;
    if ((rc = build_objects(&p, o)))
        goto out;
    if ((rc = tvs_store_write(s, 0, publish_txn, &p)))
        goto out;
    res->model = p.model_id;
    if (m->has_base)
        res->base = m->base_id;
    res->logical = m->total;
    res->written += p.written;
    res->own = m->own + p.tensor_bytes.len + p.model_bytes.len;
    res->n_tensors = m->n_tensors;
    double e2 = 0, n2 = 0;
    for (size_t k = 0; k < m->n_units; k++) {
        const tvs__lunit *u = &m->units[k];
        res->n_units += u->n != 0;
        res->max_unit_err = TVS_MAX(res->max_unit_err, (double)u->err);
        e2 += (double)u->err * u->err * u->norm2;
        n2 += u->norm2;
    }
    res->err_l2 = n2 > 0 ? sqrt(e2 / n2) : 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const tensor_build *tb = &m->tensors[i];
        uint64_t elems = tb->t.nbytes * 8 / TVS_MAX(tvs_dtype_bits(tb->t.dtype), 1u);
        if (m->files[tb->file].is_st)
            res->params += elems;
        if (tb->mode == MODE_LOSSY) {
            res->n_lossy++;
            res->lossy_params += elems;
        }
        res->n_full += tb->mode == MODE_FULL;
        res->n_delta += tb->mode == MODE_DELTA;
        if (tb->mode == MODE_REUSE) {
            const tvs_model_entry *be = m->has_base ? tvs_model_find(&m->base, tb->name) : NULL;
            if (be && tvs_id_eq(&be->id, &tb->id))
                res->n_unchanged++;
            else
                res->n_dedup++;
        }
    }
out:
    /* the read transaction must end before the store is unlocked */
    tvs_txn_end(m->rtxn);
    m->rtxn = NULL;
    if (locked)
        tvs_store_unlock(s);
    for (size_t i = 0; p.model.files && i < p.model.n_files; i++)
        tvs_free(p.model.files[i].tensors);
    tvs_free(p.model.files);
    tvs_free(p.parents);
    tvs_free(p.tensor_len);
    tvs_buf_dispose(&p.tensor_bytes);
    tvs_buf_dispose(&p.model_bytes);
    return rc;
}

int tvs_import(tvs_import_result *res, tvs_store *s, const char *path, const char *ref,
               const tvs_import_opts *o)
{
    static const tvs_import_opts defaults = TVS_IMPORT_OPTS_INIT;
    imp m = { 0 };
    if (!o)
        o = &defaults;
    int rc = tvs_ref_check_name(ref);
    if (!rc) rc = gather(&m, path, &m.single);
    if (!rc) rc = plan_tensors(&m);
    if (!rc) rc = run(res, s, &m, ref, path, o);
    imp_dispose(&m);
    return rc;
}

/* diff: the source is a stored model; its files become the import's files */
static int files_from_model(imp *m, const tvs_model_obj *src)
{
    m->files = tvs_calloc(src->n_files ? src->n_files : 1, sizeof *m->files);
    if (!m->files)
        return tvs__fail(TVS_ENOMEM, "out of memory");
    m->single = !!(src->flags & TVS_MODEL_SINGLE_FILE);
    for (size_t i = 0; i < src->n_files; i++) {
        const tvs_model_file *sf = &src->files[i];
        in_file *f = &m->files[m->n_files++];
        f->fd = -1;
        f->stored = sf;
        f->is_st = sf->kind == TVS_FILE_SAFETENSORS;
        if (!(f->name = tvs_malloc(sf->name.len + 1)))
            return tvs__fail(TVS_ENOMEM, "out of memory");
        memcpy(f->name, sf->name.ptr, sf->name.len);
        f->name[sf->name.len] = 0;
        if (!f->is_st) {
            tvs_tensor_obj t;
            int rc = tvs_tensor_load(&t, m->rtxn, &sf->blob);
            if (rc)
                return rc;
            f->size = t.nbytes;
            m->total += t.nbytes;
            continue;
        }
        if (!(f->json = tvs_malloc(sf->header.len ? sf->header.len : 1)))
            return tvs__fail(TVS_ENOMEM, "out of memory");
        memcpy(f->json, sf->header.ptr, sf->header.len);
        int rc = tvs_st_header_parse(&f->h, (tvs_span){ f->json, sf->header.len }, UINT64_MAX);
        if (rc)
            return tvs__failctx(rc, "stored header of %s", f->name);
        m->total += 8 + sf->header.len + f->h.data_len;
    }
    return 0;
}

int tvs_diff(tvs_import_result *res, tvs_store *s, const char *a, const char *b,
             const char *ref, const tvs_import_opts *o)
{
    static const tvs_import_opts defaults = TVS_IMPORT_OPTS_INIT;
    imp m = { 0 };
    tvs_import_opts opts = o ? *o : defaults;
    tvs_id bid;
    uint64_t total = 0;
    char what[600];
    snprintf(what, sizeof what, "diff %s %s", a, b);
    opts.base = a;
    if (!opts.message)
        opts.message = what;
    /* size the map first: it cannot grow under the read transaction that
     * the source model borrows from */
    int rc = tvs_ref_check_name(ref);
    if (!rc) rc = tvs_txn_begin(&m.rtxn, s, TVS_TXN_READ);
    if (!rc) rc = tvs_resolve(&bid, m.rtxn, b);
    if (!rc) rc = tvs_model_load(&m.source, m.rtxn, &bid);
    if (!rc) rc = tvs_model_logical_size(&total, m.rtxn, &m.source);
    tvs_model_dispose(&m.source);
    tvs_txn_end(m.rtxn);
    m.rtxn = NULL;
    if (!rc) rc = tvs_store_reserve(s, total + total / 8 + (64u << 20));
    if (!rc) rc = tvs_txn_begin(&m.rtxn, s, TVS_TXN_READ);
    if (!rc) rc = tvs_model_load(&m.source, m.rtxn, &bid);
    if (!rc) {
        m.has_source = 1;
        rc = files_from_model(&m, &m.source);
    }
    if (!rc) rc = plan_tensors(&m);
    if (!rc) rc = run(res, s, &m, ref, b, &opts);
    imp_dispose(&m);
    return rc;
}

int tvs_delta_estimate(double *ratios, size_t *matched, size_t *n_tensors, tvs_store *s,
                       const char *path, const tvs_id *bases, size_t n_bases)
{
    imp m = { 0 };
    int rc = gather(&m, path, &m.single);
    if (!rc) rc = plan_tensors(&m);
    if (!rc) rc = hash_tensors(&m);
    if (!rc && !(m.ctx = tvs_calloc(1, sizeof *m.ctx)))
        rc = tvs__fail(TVS_ENOMEM, "out of memory");
    if (!rc) {
        m.threads = 1;
        rc = tvs_codec_ctx_new(&m.ctx[0], CH);
    }
    if (!rc) rc = tvs_txn_begin(&m.rtxn, s, TVS_TXN_READ);
    for (size_t i = 0; !rc && i < n_bases; i++) {
        tvs_model_obj b;
        if (!(rc = tvs_model_load(&b, m.rtxn, &bases[i]))) {
            rc = sample_cost(&ratios[i], &matched[i], &m, &b);
            tvs_model_dispose(&b);
        }
    }
    *n_tensors = m.n_tensors;
    imp_dispose(&m);
    return rc;
}
