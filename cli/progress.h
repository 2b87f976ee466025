/* Progress line on a terminal (bytes, rate, ETA); silent when stderr is
 * not a terminal. */
#ifndef TVS_CLI_PROGRESS_H
#define TVS_CLI_PROGRESS_H

#include <stdint.h>

typedef struct {
    const char *label;
    double start, last;
    int active, shown;
} progress;

void progress_init(progress *p, const char *label);
/* A tvs_progress_fn: payload is a progress*. */
void progress_cb(void *payload, uint64_t done, uint64_t total);
void progress_done(progress *p);

#endif
