/*
 * Backup of a checkpoint series (engine/model.h, tvs_backup).
 *
 * Checkpoints are imported in name order. For each, the candidates are the
 * root base and the latest `candidates` earlier checkpoints whose delta
 * depth is under max_chain; the chosen one becomes the checkpoint's parent
 * and its tensors are stored as deltas of the parent's; each is scored by tvs_delta_estimate (a sample
 * of delta-encoded chunks) and the cheapest wins, unless storing the
 * checkpoint in full is estimated cheaper. Restoring any checkpoint then
 * decodes at most max_chain + 1 levels.
 */
#include "engine/model.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#define FULL_ESTIMATE 0.67   /* lossless BF16 in full, for comparison */

typedef struct {
    char name[256];
    tvs_id id;
    int depth;
} ckpt;

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_checkpoints(char ***out, size_t *n, const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return tvs__fail(TVS_ENOTFOUND, "%s: cannot read folder", dir);
    char **names = NULL;
    size_t cap = 0;
    int rc = 0;
    struct dirent *e;
    *n = 0;
    while (!rc && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char p[4096];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        size_t len = strlen(e->d_name);
        int file = stat(p, &st) == 0 && S_ISREG(st.st_mode) && len > 12 &&
                   strcmp(e->d_name + len - 12, ".safetensors") == 0;
        if (!file && !S_ISDIR(st.st_mode))
            continue;
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = tvs_realloc(names, cap * sizeof *nn);
            if (!nn) {
                rc = tvs__fail(TVS_ENOMEM, "out of memory");
                break;
            }
            names = nn;
        }
        if (!(names[*n] = tvs_strdup(e->d_name)))
            rc = tvs__fail(TVS_ENOMEM, "out of memory");
        else
            ++*n;
    }
    closedir(d);
    if (!rc && *n == 0)
        rc = tvs__fail(TVS_ENOTFOUND, "%s: no .safetensors files or model folders", dir);
    if (!rc)
        qsort(names, *n, sizeof *names, name_cmp);
    *out = names;
    return rc;
}

int tvs_backup(tvs_store *s, const char *dir, const char *prefix, const tvs_backup_opts *o,
               void (*cb)(const tvs_backup_item *, void *), void *payload)
{
    int max_chain = o->max_chain > 0 ? o->max_chain : 8;
    int k = o->candidates > 0 ? o->candidates : 4;
    char **names = NULL;
    size_t n = 0;
    ckpt *done = NULL;
    ckpt root = { "", { { 0 } }, 0 };
    int has_root = 0, rc = list_checkpoints(&names, &n, dir);
    if (!rc && o->base) {
        tvs_txn *txn;
        if (!(rc = tvs_txn_begin(&txn, s, TVS_TXN_READ))) {
            rc = tvs_resolve(&root.id, txn, o->base);
            if (!rc)
                rc = tvs_model_depth(&root.depth, txn, &root.id);
            tvs_txn_end(txn);
        }
        snprintf(root.name, sizeof root.name, "%s", o->base);
        has_root = !rc;
    }
    if (!rc && !(done = tvs_calloc(n ? n : 1, sizeof *done)))
        rc = tvs__fail(TVS_ENOMEM, "out of memory");
    for (size_t i = 0; !rc && i < n; i++) {
        tvs_backup_item item;
        memset(&item, 0, sizeof item);
        char path[4096], stem[256];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        snprintf(stem, sizeof stem, "%s", names[i]);
        size_t sl = strlen(stem);
        if (sl > 12 && strcmp(stem + sl - 12, ".safetensors") == 0)
            stem[sl - 12] = 0;
        snprintf(item.name, sizeof item.name, "%s/%s", prefix, stem);

        /* candidates: the root base, then the latest earlier checkpoints */
        const ckpt *cand[64];
        tvs_id ids[64];
        size_t nc = 0;
        if (has_root && root.depth < max_chain)
            cand[nc++] = &root;
        for (size_t j = i; j-- > 0 && nc < (size_t)k + 1 && nc < 64;)
            if (done[j].depth < max_chain)
                cand[nc++] = &done[j];
        for (size_t c = 0; c < nc; c++)
            ids[c] = cand[c]->id;
        double ratios[64];
        size_t matched[64], nt;
        const ckpt *best = NULL;
        item.estimate = FULL_ESTIMATE;
        if (nc && (rc = tvs_delta_estimate(ratios, matched, &nt, s, path, ids, nc)))
            break;
        for (size_t c = 0; c < nc; c++)
            if (matched[c] && ratios[c] < item.estimate) {
                item.estimate = ratios[c];
                best = cand[c];
            }
        tvs_import_opts io = o->import;
        char base_hex[TVS_ID_HEX + 1];
        const char *parent = base_hex;
        if (best) {
            /* a checkpoint is a full model continued from its parent, stored
             * as a delta of it: not a task vector */
            tvs_id_hex(base_hex, &best->id);
            io.parents = &parent;
            io.n_parents = 1;
            snprintf(item.base, sizeof item.base, "%s", best->name);
            item.depth = best->depth + 1;
        }
        io.max_chain = max_chain;
        if ((rc = tvs_import(&item.r, s, path, item.name, &io)))
            break;
        snprintf(done[i].name, sizeof done[i].name, "%s", item.name);
        done[i].id = item.r.model;
        done[i].depth = item.depth;
        if (cb)
            cb(&item, payload);
    }
    for (size_t i = 0; i < n; i++)
        tvs_free(names[i]);
    tvs_free(names);
    tvs_free(done);
    return rc;
}
