/*
 * Ordered pipeline (engine/pipe.h). Job j uses slot j % depth. A worker
 * claims the next job only when its slot has been handed back by the
 * consumer, i.e. when job < released + depth, where the consumer releases
 * a result when it asks for the next one.
 */
#include "engine/pipe.h"

#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

enum { SLOT_FREE, SLOT_BUSY, SLOT_DONE };

typedef struct {
    uint8_t *buf;
    size_t len;
    size_t job;
    int state, rc;
    char err[256];
} slot;

struct tvs__pipe {
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    pthread_t *threads;
    int n_threads;
    size_t n_jobs, depth, next_job, consumed, released, slot_cap;
    int stop;
    slot *slots;
    tvs__pipe_fn fn;
    void *payload;
};

typedef struct { tvs__pipe *p; int worker; } worker_arg;

int tvs__ncpu(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static void *worker_main(void *arg)
{
    worker_arg *wa = arg;
    tvs__pipe *p = wa->p;
    int worker = wa->worker;
    tvs_free(wa);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->next_job < p->n_jobs && p->next_job >= p->released + p->depth)
            pthread_cond_wait(&p->work_cv, &p->mu);
        if (p->stop || p->next_job >= p->n_jobs)
            break;
        size_t job = p->next_job++;
        slot *s = &p->slots[job % p->depth];
        s->state = SLOT_BUSY;
        s->job = job;
        pthread_mutex_unlock(&p->mu);
        size_t len = 0;
        tvs__errclear();
        int rc = p->fn(p->payload, worker, job, s->buf, p->slot_cap, &len);
        pthread_mutex_lock(&p->mu);
        s->len = len;
        s->rc = rc;
        if (rc)
            snprintf(s->err, sizeof s->err, "%s", tvs_errmsg());
        s->state = SLOT_DONE;
        pthread_cond_broadcast(&p->done_cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int tvs__pipe_start(tvs__pipe **out, int threads, size_t n_jobs, size_t depth,
                    size_t slot_cap, tvs__pipe_fn fn, void *payload)
{
    *out = NULL;
    tvs__pipe *p = tvs_calloc(1, sizeof *p);
    if (!p)
        return tvs__fail(TVS_ENOMEM, "out of memory for a work pipeline");
    if (threads < 1)
        threads = 1;
    if (depth < (size_t)threads)
        depth = (size_t)threads;
    if (n_jobs && depth > n_jobs)
        depth = n_jobs;
    if (depth == 0)
        depth = 1;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    p->n_jobs = n_jobs;
    p->depth = depth;
    p->slot_cap = slot_cap;
    p->fn = fn;
    p->payload = payload;
    p->slots = tvs_calloc(depth, sizeof *p->slots);
    p->threads = tvs_calloc((size_t)threads, sizeof *p->threads);
    if (!p->slots || !p->threads)
        goto nomem;
    for (size_t i = 0; i < depth; i++)
        if (!(p->slots[i].buf = tvs_malloc(slot_cap)))
            goto nomem;
    for (int i = 0; i < threads; i++) {
        worker_arg *wa = tvs_malloc(sizeof *wa);
        if (!wa)
            goto nomem;
        wa->p = p;
        wa->worker = i;
        if (pthread_create(&p->threads[i], NULL, worker_main, wa)) {
            tvs_free(wa);
            tvs__pipe_stop(p);
            return tvs__fail(TVS_ERROR, "cannot start a worker thread");
        }
        p->n_threads++;
    }
    *out = p;
    return 0;
nomem:
    tvs__pipe_stop(p);
    return tvs__fail(TVS_ENOMEM, "out of memory for a work pipeline (%zu x %zu bytes)",
                     depth, slot_cap);
}

int tvs__pipe_next(tvs__pipe *p, size_t *job, uint8_t **data, size_t *len)
{
    pthread_mutex_lock(&p->mu);
    size_t want = p->consumed;
    if (p->released < want) {
        p->released = want;
        pthread_cond_broadcast(&p->work_cv);
    }
    if (want >= p->n_jobs) {
        pthread_mutex_unlock(&p->mu);
        return tvs__fail(TVS_EINVAL, "pipeline: no more jobs");
    }
    /* the previous result is handed back now: its slot may be reused */
    slot *s = &p->slots[want % p->depth];
    while (!(s->state == SLOT_DONE && s->job == want))
        pthread_cond_wait(&p->done_cv, &p->mu);
    int rc = s->rc;
    if (rc)
        tvs__fail(rc, "%s", s->err);
    *job = want;
    *data = s->buf;
    *len = s->len;
    s->state = SLOT_FREE;
    p->consumed = want + 1;
    pthread_mutex_unlock(&p->mu);
    return rc;
}

void tvs__pipe_stop(tvs__pipe *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_threads; i++)
        pthread_join(p->threads[i], NULL);
    for (size_t i = 0; p->slots && i < p->depth; i++)
        tvs_free(p->slots[i].buf);
    tvs_free(p->slots);
    tvs_free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->work_cv);
    pthread_cond_destroy(&p->done_cv);
    tvs_free(p);
}
