/**
 * @file engine/pipe.h
 * @brief An ordered work pipeline: jobs run on a pool of threads, results
 *        come back to one consumer in job order.
 *
 * Each of `depth` slots owns a reusable buffer (allocated once, so pages are
 * touched once), which is what keeps import and export from paying for
 * fresh pages per chunk. At most `depth` jobs are in flight or waiting to
 * be consumed, which bounds memory to depth x slot_cap.
 */
#ifndef TVS_ENGINE_PIPE_H
#define TVS_ENGINE_PIPE_H

#include "format/base.h"

typedef struct tvs__pipe tvs__pipe;

/**
 * Work for job @p job on worker @p worker: fill @p slot (cap @p cap) and set
 * @p len. Runs on a pool thread; must touch only state owned by the job or
 * the worker.
 */
typedef int (*tvs__pipe_fn)(void *payload, int worker, size_t job, uint8_t *slot,
                            size_t cap, size_t *len);

int tvs__pipe_start(tvs__pipe **out, int threads, size_t n_jobs, size_t depth,
                    size_t slot_cap, tvs__pipe_fn fn, void *payload);

/**
 * Wait for the next job's result, in order. The bytes stay valid until
 * the next call. @return 0, or the job's error.
 */
int tvs__pipe_next(tvs__pipe *p, size_t *job, uint8_t **data, size_t *len);

/** Stop the workers (mid-way is fine), join them and free everything. */
void tvs__pipe_stop(tvs__pipe *p);

/** Number of online CPUs, at least 1. */
int tvs__ncpu(void);

#endif
