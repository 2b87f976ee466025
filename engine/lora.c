/*
 * Import of a PEFT LoRA adapter as a low-rank delta model (engine/model.h).
 *
 * The adapter's files are read and checked whole (config, every factor's
 * name, dtype and shape against the base's weight) before anything is
 * written. Each adapted weight W [out, in] becomes a lossy tensor over the
 * base's W: every chunk of W is cut at row boundaries into LOWRANK units
 * (a partial first or last row is a one-row unit over a slice of A's
 * columns), holding rows of B and columns of A as the adapter stores them,
 * with scale lora_alpha / r (lora_alpha / sqrt(r) for rsLoRA). Everything
 * is published in one write transaction.
 */
#include "engine/lossy_int.h"
#include "engine/model.h"
#include "engine/store_int.h"
#include "engine/tensor.h"
#include "format/codec.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define PREFIX "base_model.model."
#define MAX_ADAPTER (4ull << 30)

typedef struct {
    char *module;              /* e.g. model.layers.0.self_attn.q_proj */
    const tvs_st_tensor *a, *b;
    const tvs_model_entry *w;  /* the base's weight */
    tvs_tensor_obj t;          /* the lossy tensor */
    uint8_t *ids;
    tvs_id id;
} adapted;

typedef struct {
    uint8_t *file;             /* adapter_model.safetensors, whole */
    size_t file_len;
    tvs_st_header h;
    const uint8_t *data;
    uint32_t r;
    double scale;
    json_t *targets;           /* array of names, or NULL = any */
    adapted *ad;
    size_t n_ad;
    tvs_buf chunks;            /* encoded chunk objects, back to back */
    size_t *chunk_len;
    size_t n_chunks;
    uint64_t tensor_bytes;     /* bytes of the tensor objects */
    tvs_model_obj model;
    tvs_buf model_bytes;
    tvs_id model_id, base_id, head;
    int has_head;
    const char *ref;
    char msg[600];
    uint64_t written;
} lora;

static int read_file(uint8_t **out, size_t *len, const char *path, uint64_t max)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return tvs__fail(errno == ENOENT ? TVS_ENOTFOUND : TVS_EIO, "%s: %s", path,
                         strerror(errno));
    int rc = 0;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n < 0 || (uint64_t)n > max)
        rc = n < 0 ? tvs__fail(TVS_EIO, "%s: cannot size it", path)
                   : tvs__fail(TVS_EINVAL, "%s: %ld bytes is over the limit", path, n);
    uint8_t *p = rc ? NULL : tvs_malloc((size_t)n + 1);
    if (!rc && !p)
        rc = tvs__fail(TVS_ENOMEM, "out of memory reading %s", path);
    if (!rc && (fseek(f, 0, SEEK_SET) || fread(p, 1, (size_t)n, f) != (size_t)n))
        rc = tvs__fail(TVS_EIO, "%s: read failed", path);
    fclose(f);
    if (rc) {
        tvs_free(p);
        return rc;
    }
    p[n] = 0;
    *out = p;
    *len = (size_t)n;
    return 0;
}

int tvs__lora_config_parse(uint32_t *r_out, double *scale, json_t **targets, const char *text,
                           size_t len, const char *path)
{
    int rc = 0;
    *targets = NULL;
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!j || !json_is_object(j)) {
        rc = tvs__fail(TVS_ECORRUPT, "%s: %s (line %d, column %d)", path,
                       j ? "not a JSON object" : je.text, je.line, je.column);
        json_decref(j);
        return rc;
    }
    json_t *v = json_object_get(j, "peft_type");
    json_t *r = json_object_get(j, "r"), *alpha = json_object_get(j, "lora_alpha");
    json_t *rs = json_object_get(j, "use_rslora"), *fifo = json_object_get(j, "fan_in_fan_out");
    json_t *dora = json_object_get(j, "use_dora"), *tm = json_object_get(j, "target_modules");
    json_t *rp = json_object_get(j, "rank_pattern"), *ap = json_object_get(j, "alpha_pattern");
    if (v && !(json_is_string(v) && strcmp(json_string_value(v), "LORA") == 0))
        rc = tvs__fail(TVS_EINVAL, "%s: peft_type is not \"LORA\"", path);
    else if (!json_is_integer(r) || json_integer_value(r) < 1 ||
             json_integer_value(r) > TVS_LOSSY_MAX_RANK)
        rc = tvs__fail(TVS_ECORRUPT, "%s: \"r\" must be an integer from 1 to %u", path,
                       TVS_LOSSY_MAX_RANK);
    else if (!json_is_number(alpha) || !isfinite(json_number_value(alpha)) ||
             json_number_value(alpha) <= 0)
        rc = tvs__fail(TVS_ECORRUPT, "%s: \"lora_alpha\" must be a positive number", path);
    else if (rs && !json_is_boolean(rs))
        rc = tvs__fail(TVS_ECORRUPT, "%s: \"use_rslora\" must be true or false", path);
    else if (json_is_true(fifo))
        rc = tvs__fail(TVS_EINVAL, "%s: fan_in_fan_out adapters (Conv1D weights) are not "
                       "supported", path);
    else if (json_is_true(dora))
        rc = tvs__fail(TVS_EINVAL, "%s: DoRA adapters (use_dora) are not supported", path);
    else if ((rp && json_is_object(rp) && json_object_size(rp)) ||
             (ap && json_is_object(ap) && json_object_size(ap)))
        rc = tvs__fail(TVS_EINVAL, "%s: per-module rank_pattern / alpha_pattern are not "
                       "supported", path);
    else if (tm && !json_is_null(tm) && !json_is_array(tm) && !json_is_string(tm))
        rc = tvs__fail(TVS_ECORRUPT, "%s: \"target_modules\" must be a list of names",
                       path);
    if (!rc && json_is_array(tm)) {
        for (size_t i = 0; !rc && i < json_array_size(tm); i++)
            if (!json_is_string(json_array_get(tm, i)))
                rc = tvs__fail(TVS_ECORRUPT, "%s: target_modules[%zu] is not a string", path,
                               i);
        if (!rc)
            *targets = json_incref(tm);
    }
    if (!rc) {
        *r_out = (uint32_t)json_integer_value(r);
        double a = json_number_value(alpha);
        *scale = json_is_true(rs) ? a / sqrt((double)*r_out) : a / *r_out;
        if (!isfinite(*scale) || *scale <= 0)
            rc = tvs__fail(TVS_ECORRUPT, "%s: lora_alpha / r is not a positive number", path);
    }
    json_decref(j);
    return rc;
}

/* adapter_config.json: r, lora_alpha, target_modules and the refusals. */
static int read_config(lora *l, const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    uint8_t *text;
    size_t len;
    int rc = read_file(&text, &len, path, 1u << 24);
    if (rc)
        return rc;
    rc = tvs__lora_config_parse(&l->r, &l->scale, &l->targets, (const char *)text, len, path);
    tvs_free(text);
    return rc;
}

static int targeted(const lora *l, const char *module)
{
    if (!l->targets)
        return 1;
    const char *last = strrchr(module, '.');
    last = last ? last + 1 : module;
    for (size_t i = 0; i < json_array_size(l->targets); i++) {
        const char *t = json_string_value(json_array_get(l->targets, i));
        size_t n = strlen(t), m = strlen(module);
        if (strcmp(t, last) == 0 ||
            (m >= n && strcmp(module + m - n, t) == 0 && (m == n || module[m - n - 1] == '.')))
            return 1;
    }
    return 0;
}

/* Pair the factors by module and check them against the base's weights. */
static int bind(lora *l, const char *path, tvs_txn *txn, const tvs_model_obj *base)
{
    size_t plen = strlen(PREFIX);
    if (!(l->ad = tvs_calloc(l->h.n ? l->h.n : 1, sizeof *l->ad)))
        return tvs__fail(TVS_ENOMEM, "out of memory");
    for (size_t i = 0; i < l->h.n; i++) {
        const tvs_st_tensor *t = &l->h.tensors[i];
        const char *name = t->name;
        size_t n = t->name_len;
        int is_a = n > 14 && strcmp(name + n - 14, ".lora_A.weight") == 0;
        int is_b = n > 14 && strcmp(name + n - 14, ".lora_B.weight") == 0;
        if (strncmp(name, PREFIX, plen) != 0 || !(is_a || is_b))
            return tvs__fail(TVS_EINVAL, "%s: tensor \"%s\" is not a LoRA factor "
                             "(base_model.model.<module>.lora_A/lora_B.weight); only plain "
                             "LoRA adapters are supported", path, name);
        size_t mlen = n - plen - 14;
        adapted *ad = NULL;
        for (size_t k = 0; k < l->n_ad; k++)
            if (strlen(l->ad[k].module) == mlen && memcmp(l->ad[k].module, name + plen, mlen) == 0)
                ad = &l->ad[k];
        if (!ad) {
            ad = &l->ad[l->n_ad++];
            if (!(ad->module = tvs_malloc(mlen + 1)))
                return tvs__fail(TVS_ENOMEM, "out of memory");
            memcpy(ad->module, name + plen, mlen);
            ad->module[mlen] = 0;
        }
        if (is_a)
            ad->a = t;
        else
            ad->b = t;
    }
    if (l->n_ad == 0)
        return tvs__fail(TVS_ECORRUPT, "%s: no LoRA factors in the adapter", path);
    for (size_t k = 0; k < l->n_ad; k++) {
        adapted *ad = &l->ad[k];
        char wname[1024];
        snprintf(wname, sizeof wname, "%s.weight", ad->module);
        if (!ad->a || !ad->b)
            return tvs__fail(TVS_ECORRUPT, "%s: module %s has lora_%s but not lora_%s", path,
                             ad->module, ad->a ? "A" : "B", ad->a ? "B" : "A");
        if (!targeted(l, ad->module))
            return tvs__fail(TVS_ECORRUPT, "%s: module %s is not in the config's "
                             "target_modules", path, ad->module);
        if (!(ad->w = tvs_model_find(base, wname)))
            return tvs__fail(TVS_EINVAL, "LoRA module %s: the base has no tensor \"%s\"",
                             ad->module, wname);
        int rc = tvs_tensor_load(&ad->t, txn, &ad->w->id);
        if (rc)
            return rc;
        const tvs_tensor_obj *w = &ad->t;
        const tvs_st_tensor *a = ad->a, *b = ad->b;
        if (a->dtype != b->dtype || !tvs_lossy_dtype_ok(a->dtype))
            return tvs__fail(TVS_EINVAL, "LoRA module %s: factors of dtype %s and %s (both "
                             "must be BF16, F16 or F32)", ad->module, tvs_dtype_name(a->dtype),
                             tvs_dtype_name(b->dtype));
        if (w->rank != 2 || !tvs_lossy_dtype_ok(w->dtype))
            return tvs__fail(TVS_EINVAL, "LoRA module %s: the base's \"%s\" is %s of rank %u, "
                             "not a BF16/F16/F32 matrix", ad->module, wname,
                             tvs_dtype_name(w->dtype), w->rank);
        if (a->rank != 2 || b->rank != 2 || a->shape[0] != l->r || b->shape[1] != l->r ||
            a->shape[1] != w->shape[1] || b->shape[0] != w->shape[0])
            return tvs__fail(TVS_EINVAL, "LoRA module %s: lora_A %s%llux%llu and lora_B "
                             "%llux%llu do not fit r = %u and the base's \"%s\" %llux%llu "
                             "(need A r x in, B out x r)", ad->module, "",
                             (unsigned long long)a->shape[0],
                             (unsigned long long)(a->rank > 1 ? a->shape[1] : 0),
                             (unsigned long long)b->shape[0],
                             (unsigned long long)(b->rank > 1 ? b->shape[1] : 0), l->r, wname,
                             (unsigned long long)w->shape[0], (unsigned long long)w->shape[1]);
    }
    return 0;
}

/* The lossy chunk covering elements [e0, e1) of @p ad's weight. */
static int chunk_units(tvs_buf *out, const lora *l, const adapted *ad, uint64_t e0,
                       uint64_t e1, uint8_t *vtmp, tvs_buf *pay)
{
    uint64_t cols = ad->t.shape[1];
    unsigned fw = tvs_dtype_bits(ad->a->dtype) / 8;
    const uint8_t *A = l->data + ad->a->begin, *B = l->data + ad->b->begin;
    uint64_t pieces[3][2];
    uint32_t n = 0;
    uint64_t at = e0;
    if (at % cols) {   /* a partial first row */
        uint64_t stop = TVS_MIN(e1, (at / cols + 1) * cols);
        pieces[n][0] = at, pieces[n++][1] = stop;
        at = stop;
    }
    if (at < e1 && e1 - at >= cols) {
        uint64_t stop = at + (e1 - at) / cols * cols;
        pieces[n][0] = at, pieces[n++][1] = stop;
        at = stop;
    }
    if (at < e1)
        pieces[n][0] = at, pieces[n++][1] = e1;
    int rc = tvs_lossy_chunk_begin(out, n);
    for (uint32_t k = 0; !rc && k < n; k++) {
        uint64_t p0 = pieces[k][0], p1 = pieces[k][1];
        uint32_t rows, pc;
        const uint8_t *v = A;
        if (p0 % cols || p1 - p0 < cols) {   /* one row, a slice of A's columns */
            rows = 1;
            pc = (uint32_t)(p1 - p0);
            uint64_t c0 = p0 % cols;
            for (uint32_t j = 0; j < l->r; j++)
                memcpy(vtmp + (size_t)j * pc * fw, A + ((size_t)j * cols + c0) * fw,
                       (size_t)pc * fw);
            v = vtmp;
        } else {
            rows = (uint32_t)((p1 - p0) / cols);
            pc = (uint32_t)cols;
        }
        tvs_lossy_params lp = { .codec = TVS_LC_LOWRANK, .rows = rows, .cols = pc,
                                .rank = l->r, .factor_dtype = ad->a->dtype };
        size_t bound = tvs_lossy_unit_bound(&lp, (size_t)rows * pc, ad->t.dtype), w;
        pay->len = 0;
        if ((rc = tvs_buf_reserve(pay, bound)))
            break;
        rc = tvs_lossy_lowrank_put(pay->ptr, bound, &w, rows, pc, l->r, ad->a->dtype,
                                   (float)l->scale, B + (size_t)(p0 / cols) * l->r * fw, v);
        if (rc)
            break;
        /* err and norm are filled in by measure() */
        tvs_lossy_unit u = { (uint32_t)(p1 - p0), 0, 0, TVS_LC_LOWRANK, { pay->ptr, w } };
        rc = tvs_lossy_chunk_add(out, &u);
    }
    return rc;
}

typedef struct {
    const uint8_t *base;       /* the base chunk's elements */
    uint8_t *dec;              /* the decoded elements */
    float *d, *x;
    tvs_dtype dt;
    uint8_t *chunk;            /* the lossy chunk, to patch err and norm into */
    size_t hdr_at;
    double e2, n2;
    size_t n_units;
} measure_ctx;

/* Per unit: the exact delta's norm and the decoded elements' relative error. */
static int measure_unit(const tvs_lossy_unit *u, size_t first, void *p)
{
    measure_ctx *m = p;
    unsigned w = tvs_dtype_bits(m->dt) / 8;
    int rc = tvs_lossy_unit_decode(m->d, u->n, u->codec, u->payload);
    if (rc)
        return rc;
    tvs_dtype_to_f32(m->x, m->base + first * w, u->n, m->dt);
    double n2 = 0, e2 = 0;
    float *y = m->x + u->n;
    tvs_dtype_to_f32(y, m->dec + first * w, u->n, m->dt);
    for (size_t i = 0; i < u->n; i++) {
        double want = (double)m->x[i] + m->d[i];
        n2 += (double)m->d[i] * m->d[i];
        e2 += (y[i] - want) * (y[i] - want);
    }
    m->e2 += e2;
    m->n2 += n2;
    m->n_units++;
    /* the unit header sits just before the payload: n, err, norm, codec, len */
    uint8_t *h = (uint8_t *)u->payload.ptr - TVS__LUNIT_HDR;
    float err = n2 > 0 ? (float)sqrt(e2 / n2) : 0, norm = (float)sqrt(n2);
    memcpy(h + 4, &err, 4);
    memcpy(h + 8, &norm, 4);
    return 0;
}

static int publish(tvs_txn *txn, void *payload)
{
    lora *l = payload;
    int rc = 0, existed;
    size_t off = 0;
    l->written = 0;
    l->tensor_bytes = 0;
    for (size_t i = 0; !rc && i < l->n_chunks; i++) {
        tvs_id id;
        tvs_id_of(&id, l->chunks.ptr + off, l->chunk_len[i]);
        rc = tvs_obj_put(txn, &id, (tvs_span){ l->chunks.ptr + off, l->chunk_len[i] },
                         &existed);
        if (!rc && !existed)
            l->written += l->chunk_len[i];
        off += l->chunk_len[i];
    }
    off = 0;
    for (size_t k = 0; !rc && k < l->n_ad; k++) {
        tvs_buf one = TVS_BUF_INIT;
        if (!(rc = tvs_tensor_encode(&one, &l->ad[k].t))) {
            tvs_id_of(&l->ad[k].id, one.ptr, one.len);
            rc = tvs_obj_put(txn, &l->ad[k].id, (tvs_span){ one.ptr, one.len }, &existed);
            l->tensor_bytes += one.len;
            if (!rc && !existed)
                l->written += one.len;
            if (!rc)
                rc = tvs_sums_put(txn, &l->ad[k].t.checksum, &l->ad[k].id);
        }
        tvs_buf_dispose(&one);
    }
    if (!rc)
        rc = tvs_obj_put(txn, &l->model_id,
                         (tvs_span){ l->model_bytes.ptr, l->model_bytes.len }, &existed);
    if (!rc && !existed)
        l->written += l->model_bytes.len;
    if (!rc)
        rc = tvs_lineage_add(txn, &l->base_id, TVS_REL_DELTA, &l->model_id);
    for (size_t i = 0; !rc && i < l->model.n_parents; i++)
        rc = tvs_lineage_add(txn, &l->model.parents[i], TVS_REL_PARENT, &l->model_id);
    if (!rc) {
        static const tvs_id zero;
        rc = tvs_ref_set(txn, l->ref, &l->model_id, l->has_head ? &l->head : &zero, l->msg);
    }
    return rc;
}

/* Encode every adapted weight's chunks; fill its tensor object. */
static int encode_all(lora *l, tvs_txn *txn, tvs_import_result *res)
{
    tvs_codec_ctx *ctx = NULL;
    tvs_tensor_chain *chain = tvs_malloc(sizeof *chain);
    tvs_hasher *h = NULL;
    tvs_buf lc = TVS_BUF_INIT, pay = TVS_BUF_INIT;
    uint8_t *base = NULL, *scratch = NULL, *vtmp = NULL;
    float *fl = NULL;
    size_t max_chunks = 0;
    int rc = 0;
    for (size_t k = 0; k < l->n_ad; k++)
        max_chunks += l->ad[k].t.n_chunks;
    l->chunk_len = tvs_calloc(max_chunks ? max_chunks : 1, sizeof *l->chunk_len);
    if (!chain || !l->chunk_len)
        rc = tvs__fail(TVS_ENOMEM, "out of memory");
    if (!rc) rc = tvs_hasher_new(&h);
    if (!rc) rc = tvs_codec_ctx_new(&ctx, TVS_CHUNK_SIZE);
    measure_ctx mc = { 0 };
    for (size_t k = 0; !rc && k < l->n_ad; k++) {
        adapted *ad = &l->ad[k];
        tvs_tensor_obj *t = &ad->t;
        unsigned w = tvs_dtype_bits(t->dtype) / 8, fw = tvs_dtype_bits(ad->a->dtype) / 8;
        size_t cs = t->chunk_size, ne = cs / w;
        if (!base || cs > TVS_CHUNK_SIZE) {
            tvs_free(base), tvs_free(scratch), tvs_free(fl), tvs_free(vtmp);
            size_t big = TVS_MAX(cs, (size_t)TVS_CHUNK_SIZE);
            base = tvs_malloc(2 * big);
            scratch = tvs_malloc(big);
            fl = tvs_malloc(3 * (big / 2 + 1) * sizeof(float));
            vtmp = NULL;
            if (!base || !scratch || !fl) {
                rc = tvs__fail(TVS_ENOMEM, "out of memory");
                break;
            }
        }
        tvs_free(vtmp);   /* a slice of A's columns: at most all of A */
        if (!(vtmp = tvs_malloc((size_t)l->r * t->shape[1] * fw + 1))) {
            rc = tvs__fail(TVS_ENOMEM, "out of memory");
            break;
        }
        if ((rc = tvs_tensor_chain_load(chain, txn, &ad->w->id)))
            break;
        if (!(ad->ids = tvs_malloc((size_t)t->n_chunks * TVS_ID_LEN + 1))) {
            rc = tvs__fail(TVS_ENOMEM, "out of memory");
            break;
        }
        t->chunk_ids = ad->ids;
        t->encoding = TVS_ENC_LOSSY;
        t->base = ad->w->id;
        t->transform = 0;
        tvs_hasher_reset(h);
        for (uint32_t c = 0; !rc && c < t->n_chunks; c++) {
            size_t len = tvs_tensor_chunk_len(t, c);
            tvs_chunk_plan plan;
            if ((rc = tvs_chunk_plan_make(&plan, txn, chain, c)) ||
                (rc = tvs_chunk_plan_decode(base, scratch, &plan, ctx)))
                break;
            uint64_t e0 = (uint64_t)c * ne;
            lc.len = 0;
            if ((rc = chunk_units(&lc, l, ad, e0, e0 + len / w, vtmp, &pay)))
                break;
            uint8_t *dec = base + TVS_MAX(cs, (size_t)TVS_CHUNK_SIZE);
            memcpy(dec, base, len);
            if ((rc = tvs_lossy_chunk_apply(dec, t->dtype, len / w,
                                            (tvs_span){ lc.ptr, lc.len })))
                break;
            mc = (measure_ctx){ base, dec, fl, fl + (len / w + 1), t->dtype, lc.ptr, 0,
                                mc.e2, mc.n2, mc.n_units };
            if ((rc = tvs_lossy_chunk_units((tvs_span){ lc.ptr, lc.len }, t->dtype, len / w,
                                            measure_unit, &mc)))
                break;
            tvs_hasher_update(h, dec, len);
            size_t at = l->chunks.len, wr;
            tvs_chunk_params p = { 1, 0, 0, 0 };
            if ((rc = tvs_buf_reserve(&l->chunks, tvs_chunk_bound(lc.len))) ||
                (rc = tvs_chunk_encode(l->chunks.ptr + at, tvs_chunk_bound(lc.len), &wr, ctx,
                                       lc.ptr, lc.len, &p)))
                break;
            l->chunks.len += wr;
            l->chunk_len[l->n_chunks++] = wr;
            tvs_id cid;
            tvs_id_of(&cid, l->chunks.ptr + at, wr);
            memcpy(ad->ids + (size_t)c * TVS_ID_LEN, cid.b, TVS_ID_LEN);
        }
        if (rc) {
            tvs__failctx(rc, "LoRA module %s", ad->module);
            break;
        }
        tvs_hasher_final(&t->checksum, h);
        res->lossy_params += t->nbytes / w;
    }
    res->n_units = mc.n_units;
    res->err_l2 = mc.n2 > 0 ? sqrt(mc.e2 / mc.n2) : 0;
    tvs_codec_ctx_free(ctx);
    tvs_hasher_free(h);
    tvs_free(chain);
    tvs_buf_dispose(&lc);
    tvs_buf_dispose(&pay);
    tvs_free(base);
    tvs_free(scratch);
    tvs_free(fl);
    tvs_free(vtmp);
    return rc;
}

static int build_model(lora *l, const tvs_model_obj *base, const tvs_import_opts *o)
{
    tvs_model_obj *m = &l->model;
    *m = *base;
    m->kind = TVS_MODEL_DELTA;
    m->flags = (uint8_t)(base->flags | TVS_MODEL_LOSSY);
    m->base = l->base_id;
    m->parents = l->has_head ? &l->head : NULL;
    m->n_parents = (size_t)l->has_head;
    m->time = (int64_t)time(NULL);
    const char *author = tvs__author(o ? o->author : NULL);
    m->author = (tvs_span){ (const uint8_t *)author, strlen(author) };
    m->message = (tvs_span){ (const uint8_t *)l->msg, strlen(l->msg) };
    m->files = tvs_calloc(base->n_files ? base->n_files : 1, sizeof *m->files);
    if (!m->files)
        return tvs__fail(TVS_ENOMEM, "out of memory");
    for (size_t i = 0; i < base->n_files; i++) {
        m->files[i] = base->files[i];
        if (base->files[i].kind != TVS_FILE_SAFETENSORS)
            continue;
        size_t n = base->files[i].n_tensors;
        if (!(m->files[i].tensors = tvs_malloc((n ? n : 1) * sizeof *m->files[i].tensors)))
            return tvs__fail(TVS_ENOMEM, "out of memory");
        memcpy(m->files[i].tensors, base->files[i].tensors, n * sizeof *m->files[i].tensors);
        for (size_t j = 0; j < n; j++)
            for (size_t k = 0; k < l->n_ad; k++)
                if (&base->files[i].tensors[j] == l->ad[k].w) {
                    tvs_buf one = TVS_BUF_INIT;
                    int rc = tvs_tensor_encode(&one, &l->ad[k].t);
                    if (rc)
                        return rc;
                    tvs_id_of(&m->files[i].tensors[j].id, one.ptr, one.len);
                    tvs_buf_dispose(&one);
                }
    }
    int rc = tvs_model_encode(&l->model_bytes, m);
    if (!rc)
        tvs_id_of(&l->model_id, l->model_bytes.ptr, l->model_bytes.len);
    return rc;
}

int tvs_import_lora(tvs_import_result *res, tvs_store *s, const char *dir, const char *base,
                    const char *ref, const tvs_import_opts *o)
{
    lora l = { 0 };
    tvs_model_obj bm = { 0 };
    tvs_txn *txn = NULL;
    char path[4096];
    int rc = tvs_ref_check_name(ref), have_bm = 0;
    memset(res, 0, sizeof *res);
    l.ref = ref;
    snprintf(l.msg, sizeof l.msg, "%s", o && o->message ? o->message : "");
    if (!l.msg[0])
        snprintf(l.msg, sizeof l.msg, "import LoRA adapter %s", dir);
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", dir);
    if (!rc) rc = read_config(&l, dir);
    if (!rc) rc = read_file(&l.file, &l.file_len, path, MAX_ADAPTER);
    if (!rc && (rc = tvs_st_parse(&l.h, (tvs_span){ l.file, l.file_len })))
        tvs__failctx(rc, "%s", path);
    if (!rc) {
        l.data = l.file + 8 + l.h.header_len;
    }
    if (!rc) rc = tvs_txn_begin(&txn, s, TVS_TXN_READ);
    if (!rc) rc = tvs_resolve(&l.base_id, txn, base);
    if (!rc && !(rc = tvs_model_load(&bm, txn, &l.base_id)))
        have_bm = 1;
    if (!rc) {
        int hr = tvs_ref_get(&l.head, txn, ref);
        l.has_head = hr == 0;
        if (hr && hr != TVS_ENOTFOUND)
            rc = hr;
        tvs__errclear();
    }
    if (!rc) rc = bind(&l, path, txn, &bm);
    if (!rc) rc = encode_all(&l, txn, res);
    if (!rc) rc = build_model(&l, &bm, o);
    if (!rc) rc = tvs_model_logical_size(&res->logical, txn, &bm);
    if (!rc) {
        for (size_t i = 0; i < bm.n_files; i++)
            for (size_t j = 0; j < bm.files[i].n_tensors; j++) {
                tvs_tensor_obj t;
                if (tvs_tensor_load(&t, txn, &bm.files[i].tensors[j].id) == 0)
                    res->params += t.nbytes * 8 / TVS_MAX(tvs_dtype_bits(t.dtype), 1u);
                res->n_tensors++;
            }
    }
    tvs_txn_end(txn);
    if (!rc) rc = tvs_store_write(s, l.chunks.len + l.model_bytes.len + (1u << 20), publish, &l);
    if (!rc) {
        res->model = l.model_id;
        res->base = l.base_id;
        res->written = l.written;
        res->own = l.chunks.len + l.tensor_bytes + l.model_bytes.len;
        res->n_lossy = l.n_ad;
        res->n_unchanged = res->n_tensors - l.n_ad;
        res->max_unit_err = res->err_l2;
    }
    for (size_t k = 0; l.ad && k < l.n_ad; k++) {
        tvs_free(l.ad[k].module);
        tvs_free(l.ad[k].ids);
    }
    tvs_free(l.ad);
    for (size_t i = 0; l.model.files && i < l.model.n_files; i++)
        if (l.model.files[i].kind == TVS_FILE_SAFETENSORS)
            tvs_free(l.model.files[i].tensors);
    tvs_free(l.model.files);
    tvs_buf_dispose(&l.model_bytes);
    tvs_buf_dispose(&l.chunks);
    tvs_free(l.chunk_len);
    json_decref(l.targets);
    tvs_st_header_dispose(&l.h);
    tvs_free(l.file);
    if (have_bm)
        tvs_model_dispose(&bm);
    return rc;
}
