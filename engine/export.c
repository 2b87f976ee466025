/*
 * Export of a stored model to its original files (engine/model.h).
 *
 * A safetensors file is rebuilt as: the 8-byte length, the stored header
 * verbatim, then every tensor's decoded bytes in data-offset order. Import
 * accepted only files whose data region the tensors cover exactly, so this
 * is byte-identical to the input. Chunks are decoded by a pool of threads
 * into reused buffers; the calling thread checks each tensor's checksum
 * while it writes, and a mismatch aborts the file before it is renamed into
 * place.
 */
#include "engine/model.h"
#include "engine/outfile.h"
#include "engine/pipe.h"
#include "engine/store_int.h"
#include "engine/tensor.h"
#include "format/codec.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    tvs_chunk_plan plan;
    size_t tensor;      /* index into exp.tensors */
    uint32_t index;
} xjob;

typedef struct {
    tvs_tensor_obj t;
    const char *name;   /* tensor name or file name, for messages */
} xtensor;

typedef struct {
    xjob *jobs;
    size_t n_jobs, cap_jobs;
    xtensor *tensors;
    size_t n_tensors, cap_tensors;
    tvs_codec_ctx **ctx;
    int threads;
    size_t max_chunk;
    tvs_tensor_chain chain;     /* scratch for planning */
} exp_state;

static int decode_job(void *payload, int worker, size_t j, uint8_t *slot, size_t cap,
                      size_t *len)
{
    exp_state *e = payload;
    const xjob *jb = &e->jobs[j];
    if (2 * jb->plan.raw_len > cap)
        return tvs__fail(TVS_ECORRUPT, "chunk of %zu bytes is over the %zu-byte buffer",
                         jb->plan.raw_len, cap / 2);
    *len = jb->plan.raw_len;
    return tvs_chunk_plan_decode(slot, slot + cap / 2, &jb->plan, e->ctx[worker]);
}


static int add_tensor(exp_state *e, tvs_txn *txn, const tvs_id *id, const char *name)
{
    if (e->n_tensors == e->cap_tensors) {
        size_t cap = e->cap_tensors ? 2 * e->cap_tensors : 64;
        xtensor *t = tvs_realloc(e->tensors, cap * sizeof *t);
        if (!t)
            return tvs__fail(TVS_ENOMEM, "out of memory");
        e->tensors = t;
        e->cap_tensors = cap;
    }
    xtensor *x = &e->tensors[e->n_tensors];
    int rc = tvs_tensor_chain_load(&e->chain, txn, id);
    if (rc)
        return tvs__failctx(rc, "%s", name);
    x->t = e->chain.t[0];
    x->name = name;
    e->max_chunk = TVS_MAX(e->max_chunk, (size_t)x->t.chunk_size);
    for (uint32_t c = 0; c < x->t.n_chunks; c++) {
        if (e->n_jobs == e->cap_jobs) {
            size_t cap = e->cap_jobs ? 2 * e->cap_jobs : 1024;
            xjob *j = tvs_realloc(e->jobs, cap * sizeof *j);
            if (!j)
                return tvs__fail(TVS_ENOMEM, "out of memory");
            e->jobs = j;
            e->cap_jobs = cap;
        }
        xjob *j = &e->jobs[e->n_jobs];
        if ((rc = tvs_chunk_plan_make(&j->plan, txn, &e->chain, c)))
            return tvs__failctx(rc, "%s: chunk %u", name, c);
        j->tensor = e->n_tensors;
        j->index = c;
        e->n_jobs++;
    }
    e->n_tensors++;
    return 0;
}

/* Stream the planned jobs to @p fd, checking each tensor's checksum. */
static int stream(exp_state *e, tvs_outfile *out, const tvs_export_opts *o,
                  uint64_t *done, uint64_t total)
{
    tvs__pipe *pipe = NULL;
    tvs_hasher *h = NULL;
    int rc = tvs_hasher_new(&h);
    if (!rc && e->n_jobs)
        rc = tvs__pipe_start(&pipe, e->threads, e->n_jobs, 4 * e->threads + 4,
                             2 * e->max_chunk, decode_job, e);
    for (size_t i = 0; !rc && i < e->n_jobs; i++) {
        size_t j, len;
        uint8_t *buf;
        if ((rc = tvs__pipe_next(pipe, &j, &buf, &len))) {
            /* a chunk that does not decode: say whose it is */
            tvs__failctx(rc, "%s: chunk %u", e->tensors[e->jobs[j].tensor].name,
                         e->jobs[j].index);
            break;
        }
        const xjob *jb = &e->jobs[j];
        const xtensor *x = &e->tensors[jb->tensor];
        if (jb->index == 0)
            tvs_hasher_reset(h);
        tvs_hasher_update(h, buf, len);
        if (jb->index + 1 == x->t.n_chunks) {
            tvs_id sum;
            tvs_hasher_final(&sum, h);
            if (!tvs_id_eq(&sum, &x->t.checksum))
                rc = tvs__fail(TVS_ECORRUPT, "%s: decoded bytes do not match the stored "
                               "checksum; the store is damaged (run 'tvs fsck')", x->name);
        }
        if (!rc)
            rc = tvs_outfile_write(out, buf, len);
        *done += len;
        if (o->progress)
            o->progress(o->progress_payload, *done, total);
    }
    tvs__pipe_stop(pipe);
    tvs_hasher_free(h);
    return rc;
}

static int mkdirs(const char *path)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, 0755) && errno != EEXIST)
            return tvs__fail(TVS_EIO, "cannot create folder %s: %s", p, strerror(errno));
        *s = '/';
    }
    if (mkdir(p, 0755) && errno != EEXIST)
        return tvs__fail(TVS_EIO, "cannot create folder %s: %s", p, strerror(errno));
    return 0;
}

/* Plan and write one file of the model to @p path ("-" = stdout). */
static int export_file(exp_state *e, tvs_txn *txn, const tvs_model_file *f,
                       const char *path, const tvs_export_opts *o, uint64_t *done,
                       uint64_t total)
{
    tvs_st_header h = { 0 };
    char fname[4096];
    int rc = 0;
    snprintf(fname, sizeof fname, "%.*s", (int)f->name.len, (const char *)f->name.ptr);
    e->n_jobs = e->n_tensors = 0;
    if (f->kind == TVS_FILE_BLOB) {
        rc = add_tensor(e, txn, &f->blob, fname);
    } else {
        rc = tvs_st_header_parse(&h, f->header, UINT64_MAX);
        if (rc)
            return tvs__failctx(TVS_ECORRUPT, "stored header of %s", fname);
        for (size_t i = 0; !rc && i < h.n; i++) {
            const tvs_model_entry *en = tvs_model_file_find(f, h.tensors[i].name);
            if (!en) {
                rc = tvs__fail(TVS_ECORRUPT, "%s: tensor \"%s\" is in the header but not "
                               "in the model", fname, h.tensors[i].name);
                break;
            }
            rc = add_tensor(e, txn, &en->id, h.tensors[i].name);
            if (!rc && e->tensors[e->n_tensors - 1].t.nbytes !=
                           h.tensors[i].end - h.tensors[i].begin)
                rc = tvs__fail(TVS_ECORRUPT, "%s: tensor \"%s\" holds a different size "
                               "than its header says", fname, h.tensors[i].name);
        }
    }
    if (rc)
        goto out;

    tvs_outfile out;
    if ((rc = tvs_outfile_open(&out, path)))
        goto out;
    if (f->kind == TVS_FILE_SAFETENSORS) {
        uint8_t pre[8];
        tvs_store_le64(pre, f->header.len);
        rc = tvs_outfile_write(&out, pre, 8);
        if (!rc)
            rc = tvs_outfile_write(&out, f->header.ptr, f->header.len);
        *done += 8 + f->header.len;
    }
    if (!rc)
        rc = stream(e, &out, o, done, total);
    rc = tvs_outfile_close(&out, rc);
out:
    tvs_st_header_dispose(&h);
    return rc;
}

int tvs_model_logical_size(uint64_t *out, tvs_txn *txn, const tvs_model_obj *m)
{
    uint64_t total = 0;
    for (size_t i = 0; i < m->n_files; i++) {
        const tvs_model_file *f = &m->files[i];
        tvs_id id = f->kind == TVS_FILE_BLOB ? f->blob : (tvs_id){ { 0 } };
        if (f->kind == TVS_FILE_SAFETENSORS)
            total += 8 + f->header.len;
        for (size_t j = 0; j < (f->kind == TVS_FILE_BLOB ? 1 : f->n_tensors); j++) {
            tvs_tensor_obj t;
            int rc = tvs_tensor_load(&t, txn, f->kind == TVS_FILE_BLOB ? &id
                                                                       : &f->tensors[j].id);
            if (rc)
                return rc;
            total += t.nbytes;
        }
    }
    *out = total;
    return 0;
}

/* A stored file name stays inside the export folder: relative, no empty,
 * "." or ".." component, no NUL. ("notes..v2.txt" is fine.) */
static int safe_name(tvs_span name)
{
    if (name.len == 0 || name.ptr[0] == '/' || memchr(name.ptr, 0, name.len))
        return 0;
    for (size_t i = 0; i <= name.len;) {
        size_t j = i;
        while (j < name.len && name.ptr[j] != '/')
            j++;
        size_t n = j - i;
        if (n == 0 || (n <= 2 && memcmp(name.ptr + i, "..", n) == 0))
            return 0;
        i = j + 1;
    }
    return 1;
}

int tvs_export(tvs_store *s, const char *spec, const char *path, const tvs_export_opts *o)
{
    static const tvs_export_opts defaults = TVS_EXPORT_OPTS_INIT;
    exp_state *e = tvs_calloc(1, sizeof *e);   /* holds a tensor chain: keep it off the stack */
    tvs_model_obj m = { 0 };
    tvs_txn *txn = NULL;
    tvs_id id;
    uint64_t done = 0, total = 0;
    int rc;
    if (!o)
        o = &defaults;
    if (!e)
        return tvs__fail(TVS_ENOMEM, "out of memory");
    e->threads = o->threads > 0 ? o->threads : tvs__ncpu();
    if ((rc = tvs_txn_begin(&txn, s, TVS_TXN_READ)) || (rc = tvs_resolve(&id, txn, spec)) ||
        (rc = tvs_model_load(&m, txn, &id)) || (rc = tvs_model_logical_size(&total, txn, &m)))
        goto out;
    if (!(e->ctx = tvs_calloc((size_t)e->threads, sizeof *e->ctx))) {
        rc = tvs__fail(TVS_ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < e->threads; i++)
        if ((rc = tvs_codec_ctx_new(&e->ctx[i], TVS_CHUNK_MAX)))
            goto out;
    struct stat st;
    int is_dir = strcmp(path, "-") != 0 && stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    if (o->blobs_only && (m.flags & TVS_MODEL_SINGLE_FILE))
        goto out;   /* a single file has no companions */
    if (m.flags & TVS_MODEL_SINGLE_FILE) {
        char full[4096];
        const tvs_model_file *f = &m.files[0];
        if (m.n_files != 1) {
            rc = tvs__fail(TVS_ECORRUPT, "single-file model holds %zu files", m.n_files);
            goto out;
        }
        if (is_dir)
            snprintf(full, sizeof full, "%s/%.*s", path, (int)f->name.len,
                     (const char *)f->name.ptr);
        else
            snprintf(full, sizeof full, "%s", path);
        rc = export_file(e, txn, f, full, o, &done, total);
        goto out;
    }
    if (strcmp(path, "-") == 0) {
        rc = tvs__fail(TVS_EINVAL, "'%s' is a model folder of %zu files; it cannot go to "
                       "stdout (give -o DIR)", spec, m.n_files);
        goto out;
    }
    for (size_t i = 0; !rc && i < m.n_files; i++) {
        char full[4096];
        const tvs_model_file *f = &m.files[i];
        snprintf(full, sizeof full, "%s/%.*s", path, (int)f->name.len,
                 (const char *)f->name.ptr);
        if (!safe_name(f->name)) {
            rc = tvs__fail(TVS_ECORRUPT, "stored file name '%s' leaves the folder", full);
            break;
        }
        if (o->blobs_only && (f->kind == TVS_FILE_SAFETENSORS ||
                              memmem(f->name.ptr, f->name.len, ".safetensors.index.json", 23)))
            continue;
        char *slash = strrchr(full, '/');
        *slash = 0;
        rc = mkdirs(full);
        *slash = '/';
        if (!rc)
            rc = export_file(e, txn, f, full, o, &done, total);
    }
out:
    tvs_txn_end(txn);
    tvs_model_dispose(&m);
    for (int i = 0; e->ctx && i < e->threads; i++)
        tvs_codec_ctx_free(e->ctx[i]);
    tvs_free(e->ctx);
    tvs_free(e->jobs);
    tvs_free(e->tensors);
    tvs_free(e);
    return rc;
}
