/* Progress line (cli/progress.h): redrawn at most 10 times a second. */
#include "cli/progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "format/base.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

void progress_init(progress *p, const char *label)
{
    p->label = label;
    p->start = p->last = now();
    p->active = isatty(STDERR_FILENO);
    p->shown = 0;
}

void progress_cb(void *payload, uint64_t done, uint64_t total)
{
    progress *p = payload;
    if (!p->active)
        return;
    double t = now();
    if (t - p->last < 0.1 && done < total)
        return;
    p->last = t;
    double el = t - p->start, rate = el > 0 ? done / el : 0;
    char d[32], tot[32], r[32];
    tvs_fmt_bytes(d, sizeof d, (double)done);
    tvs_fmt_bytes(tot, sizeof tot, (double)total);
    tvs_fmt_bytes(r, sizeof r, rate);
    double eta = rate > 0 && total > done ? (double)(total - done) / rate : 0;
    fprintf(stderr, "\r%s %s / %s  %s/s  ETA %.0fs   ", p->label, d, tot, r, eta);
    p->shown = 1;
}

void progress_done(progress *p)
{
    if (p->shown)
        fprintf(stderr, "\r\033[K");
    p->shown = 0;
}
