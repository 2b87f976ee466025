/*
 * Import of a safetensors file or a model folder (engine/model.h).
 *
 * 1. Gather: list the input files, read and validate every safetensors
 *    header and every index.json against the shards. Nothing is written
 *    until all of it passes.
 * 2. Encode: every tensor (and every other file, as a U8 blob) is cut into
 *    TVS_CHUNK_SIZE chunks; a pool of threads reads (pread) and encodes
 *    them, the calling thread receives them in order, hashes the raw bytes
 *    into each tensor's checksum and writes chunks in batched transactions.
 * 3. Publish: tensor objects, the model object and the ref go in one
 *    final transaction, then the environment is synced.
 */
#include "engine/model.h"
#include "engine/pipe.h"
#include "engine/store_int.h"
#include "format/codec.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BATCH_BYTES (256u << 20)   /* stored bytes per chunk transaction */
#define MAX_DEPTH 16               /* folder nesting */

typedef struct {
    char *name;                /* relative to the import root */
    char *path;
    int fd;
    uint64_t size;
    int is_st;
    uint8_t *json;             /* safetensors header bytes */
    tvs_st_header h;
    size_t first_tensor;       /* index into imp.tensors */
} in_file;

typedef struct {
    size_t file;
    uint64_t off, len;         /* absolute offset in the file */
    size_t tensor;
    uint32_t chunk;
} job;

typedef struct {
    tvs_tensor_obj t;
    uint8_t *ids;
    tvs_id id;                 /* of the tensor object, once built */
} tensor_build;

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

/* ---- plan the chunk jobs */

static int plan(imp *m)
{
    size_t nt = 0, nj = 0;
    for (size_t i = 0; i < m->n_files; i++) {
        in_file *f = &m->files[i];
        size_t k = f->is_st ? f->h.n : 1;
        for (size_t j = 0; j < k; j++) {
            uint64_t len = f->is_st ? f->h.tensors[j].end - f->h.tensors[j].begin : f->size;
            nj += (size_t)tvs_chunks_for(len, TVS_CHUNK_SIZE);
        }
        nt += k;
    }
    m->tensors = tvs_calloc(nt ? nt : 1, sizeof *m->tensors);
    m->jobs = tvs_calloc(nj ? nj : 1, sizeof *m->jobs);
    if (!m->tensors || !m->jobs)
        return tvs__fail(TVS_ENOMEM, "out of memory planning %zu chunks", nj);
    for (size_t i = 0; i < m->n_files; i++) {
        in_file *f = &m->files[i];
        f->first_tensor = m->n_tensors;
        uint64_t data0 = f->is_st ? 8 + f->h.header_len : 0;
        size_t k = f->is_st ? f->h.n : 1;
        for (size_t j = 0; j < k; j++) {
            tensor_build *tb = &m->tensors[m->n_tensors];
            tvs_tensor_obj *t = &tb->t;
            uint64_t off = data0;
            if (f->is_st) {
                const tvs_st_tensor *s = &f->h.tensors[j];
                t->dtype = s->dtype;
                t->rank = s->rank;
                memcpy(t->shape, s->shape, s->rank * sizeof *s->shape);
                t->nbytes = s->end - s->begin;
                off += s->begin;
            } else {
                t->dtype = TVS_DTYPE_U8;
                t->rank = 1;
                t->shape[0] = f->size;
                t->nbytes = f->size;
            }
            t->encoding = TVS_ENC_CHUNKED;
            t->chunk_size = TVS_CHUNK_SIZE;
            t->n_chunks = (uint32_t)tvs_chunks_for(t->nbytes, TVS_CHUNK_SIZE);
            tb->ids = tvs_malloc((size_t)t->n_chunks * TVS_ID_LEN + 1);
            if (!tb->ids)
                return tvs__fail(TVS_ENOMEM, "out of memory planning chunks");
            t->chunk_ids = tb->ids;
            for (uint32_t c = 0; c < t->n_chunks; c++) {
                job *jb = &m->jobs[m->n_jobs++];
                jb->file = i;
                jb->off = off + (uint64_t)c * TVS_CHUNK_SIZE;
                jb->len = tvs_tensor_chunk_len(t, c);
                jb->tensor = m->n_tensors;
                jb->chunk = c;
            }
            m->n_tensors++;
        }
    }
    return 0;
}

/* ---- encode (pool threads) */

/* Slot: raw bytes at 0, chunk id at TVS_CHUNK_SIZE, encoded chunk after it. */
#define SLOT_ID TVS_CHUNK_SIZE
#define SLOT_ENC (TVS_CHUNK_SIZE + TVS_ID_LEN)

static int encode_job(void *payload, int worker, size_t j, uint8_t *slot, size_t cap,
                      size_t *len)
{
    imp *m = payload;
    const job *jb = &m->jobs[j];
    const in_file *f = &m->files[jb->file];
    int rc = read_full(f->fd, slot, (size_t)jb->len, jb->off, f->path);
    if (rc)
        return rc;
    const tvs_tensor_obj *t = &m->tensors[jb->tensor].t;
    unsigned bits = tvs_dtype_bits(t->dtype);
    tvs_chunk_params p = { bits >= 8 ? bits / 8 : 1, tvs_dtype_is_float(t->dtype),
                           m->level };
    size_t w;
    if ((rc = tvs_chunk_encode(slot + SLOT_ENC, cap - SLOT_ENC, &w, m->ctx[worker], slot,
                               (size_t)jb->len, &p)))
        return rc;
    tvs_id id;
    tvs_id_of(&id, slot + SLOT_ENC, w);
    memcpy(slot + SLOT_ID, id.b, TVS_ID_LEN);
    *len = w;
    return 0;
}

/* ---- write chunks in order (calling thread) */

static int write_chunks(imp *m, tvs_store *s, const tvs_import_opts *o)
{
    tvs__pipe *pipe = NULL;
    tvs_hasher *h = NULL;
    tvs_txn *txn = NULL;
    uint64_t done = 0, batch = 0;
    int rc = tvs_hasher_new(&h);
    if (rc)
        return rc;
    if (m->n_jobs && (rc = tvs__pipe_start(&pipe, m->threads, m->n_jobs, 4 * m->threads + 4,
                                           SLOT_ENC + tvs_chunk_bound(TVS_CHUNK_SIZE),
                                           encode_job, m)))
        goto out;
    for (size_t i = 0; i < m->n_jobs; i++) {
        size_t j, len;
        uint8_t *slot;
        if ((rc = tvs__pipe_next(pipe, &j, &slot, &len)))
            goto out;
        const job *jb = &m->jobs[j];
        tensor_build *tb = &m->tensors[jb->tensor];
        if (jb->chunk == 0)
            tvs_hasher_reset(h);
        tvs_hasher_update(h, slot, (size_t)jb->len);
        if (jb->chunk + 1 == tb->t.n_chunks)
            tvs_hasher_final(&tb->t.checksum, h);
        if (!txn && (rc = tvs_txn_begin_room(&txn, s, 2 * BATCH_BYTES)))
            goto out;
        tvs_id id;
        memcpy(id.b, slot + SLOT_ID, TVS_ID_LEN);
        memcpy(tb->ids + (size_t)jb->chunk * TVS_ID_LEN, id.b, TVS_ID_LEN);
        if ((rc = tvs_obj_put(txn, &id, (tvs_span){ slot + SLOT_ENC, len }, NULL))) {
            tvs__failctx(rc, "%s", m->files[jb->file].path);
            goto out;
        }
        batch += len;
        done += jb->len;
        if (batch >= BATCH_BYTES) {
            rc = tvs_txn_commit(txn);
            txn = NULL;
            batch = 0;
            if (rc)
                goto out;
        }
        if (o->progress)
            o->progress(o->progress_payload, done, m->total);
    }
    if (txn) {
        rc = tvs_txn_commit(txn);
        txn = NULL;
    }
    /* tensors of zero bytes have no chunks: their checksum is of nothing */
    for (size_t i = 0; !rc && i < m->n_tensors; i++)
        if (m->tensors[i].t.n_chunks == 0)
            tvs_id_of(&m->tensors[i].t.checksum, "", 0);
out:
    tvs_txn_end(txn);
    tvs__pipe_stop(pipe);
    tvs_hasher_free(h);
    return rc;
}

/* ---- publish */

typedef struct {
    imp *m;
    tvs_model_obj model;
    tvs_buf tensor_bytes;       /* all tensor objects, back to back */
    size_t *tensor_len;
    tvs_buf model_bytes;
    tvs_id model_id, head;
    int has_head;
    const char *ref;
    char msg[512];
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

static int build_objects(publish *p, int single, const tvs_import_opts *o)
{
    imp *m = p->m;
    int rc = 0;
    p->tensor_len = tvs_calloc(m->n_tensors ? m->n_tensors : 1, sizeof *p->tensor_len);
    p->model.files = tvs_calloc(m->n_files, sizeof *p->model.files);
    if (!p->tensor_len || !p->model.files)
        return tvs__fail(TVS_ENOMEM, "out of memory building the model");
    for (size_t i = 0; i < m->n_tensors; i++) {
        size_t before = p->tensor_bytes.len;
        if ((rc = tvs_tensor_encode(&p->tensor_bytes, &m->tensors[i].t)))
            return rc;
        p->tensor_len[i] = p->tensor_bytes.len - before;
        tvs_id_of(&m->tensors[i].id, p->tensor_bytes.ptr + before, p->tensor_len[i]);
    }
    p->model.kind = TVS_MODEL_FULL;
    p->model.flags = single ? TVS_MODEL_SINGLE_FILE : 0;
    p->model.time = (int64_t)time(NULL);
    const char *author = o->author ? o->author : getenv("USER");
    if (!author) {
        struct passwd *pw = getpwuid(getuid());
        author = pw ? pw->pw_name : "unknown";
    }
    p->model.author = (tvs_span){ (const uint8_t *)author, strlen(author) };
    p->model.message = (tvs_span){ (const uint8_t *)p->msg, strlen(p->msg) };
    if (p->has_head) {
        p->model.parents = &p->head;
        p->model.n_parents = 1;
    }
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
    int rc = 0;
    for (size_t i = 0; !rc && i < p->m->n_tensors; i++) {
        rc = tvs_obj_put(txn, &p->m->tensors[i].id,
                         (tvs_span){ p->tensor_bytes.ptr + off, p->tensor_len[i] }, NULL);
        off += p->tensor_len[i];
    }
    if (!rc)
        rc = tvs_obj_put(txn, &p->model_id,
                         (tvs_span){ p->model_bytes.ptr, p->model_bytes.len }, NULL);
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
    for (size_t i = 0; i < m->n_tensors; i++)
        tvs_free(m->tensors[i].ids);
    tvs_free(m->tensors);
    tvs_free(m->jobs);
    for (int i = 0; m->ctx && i < m->threads; i++)
        tvs_codec_ctx_free(m->ctx[i]);
    tvs_free(m->ctx);
}

int tvs_import(tvs_id *out, tvs_store *s, const char *path, const char *ref,
               const tvs_import_opts *o)
{
    static const tvs_import_opts defaults = TVS_IMPORT_OPTS_INIT;
    imp m = { 0 };
    publish p = { 0 };
    int single = 0, locked = 0, rc;
    tvs_txn *txn = NULL;
    if (!o)
        o = &defaults;
    if ((rc = tvs_ref_check_name(ref)))
        return rc;
    if ((rc = gather(&m, path, &single)) || (rc = plan(&m)))
        goto out;
    /* the ref's current head becomes the parent; checked again at publish */
    if ((rc = tvs_txn_begin(&txn, s, TVS_TXN_READ)))
        goto out;
    rc = tvs_ref_get(&p.head, txn, ref);
    tvs_txn_end(txn);
    p.has_head = rc == 0;
    if (rc && rc != TVS_ENOTFOUND)
        goto out;
    tvs__errclear();
    m.threads = o->threads > 0 ? o->threads : tvs__ncpu();
    m.level = o->level;
    m.ctx = tvs_calloc((size_t)m.threads, sizeof *m.ctx);
    if (!m.ctx) {
        rc = tvs__fail(TVS_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < m.threads; i++)
        if ((rc = tvs_codec_ctx_new(&m.ctx[i], TVS_CHUNK_SIZE)))
            goto out;
    /* gc must not sweep chunks we wrote but have not published yet */
    if ((rc = tvs_store_lock(s, 0, 1)))
        goto out;
    locked = 1;
    if ((rc = write_chunks(&m, s, o)))
        goto out;
    snprintf(p.msg, sizeof p.msg, "%s", o->message ? o->message : "");
    if (!o->message)
        snprintf(p.msg, sizeof p.msg, "import %s", path);
    p.m = &m;
    p.ref = ref;
    if ((rc = build_objects(&p, single, o)))
        goto out;
    if ((rc = tvs_store_write(s, p.tensor_bytes.len + p.model_bytes.len + (1u << 20),
                              publish_txn, &p)))
        goto out;
    *out = p.model_id;
out:
    if (locked)
        tvs_store_unlock(s);
    for (size_t i = 0; p.model.files && i < p.model.n_files; i++)
        tvs_free(p.model.files[i].tensors);
    tvs_free(p.model.files);
    tvs_free(p.tensor_len);
    tvs_buf_dispose(&p.tensor_bytes);
    tvs_buf_dispose(&p.model_bytes);
    imp_dispose(&m);
    return rc;
}
