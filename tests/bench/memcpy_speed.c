/*
 * memcpy_speed: the machine's single-thread memcpy bandwidth, the baseline
 * line of bench_import.sh. Copies a 256 MiB buffer (well past the caches)
 * REPS times and prints the best rate, "memcpy N MB/s" (N = 10^6 bytes copied
 * per second).
 *   cc -O2 -o memcpy_speed memcpy_speed.c
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BYTES ((size_t)256 << 20)
#define REPS 10

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(void)
{
    unsigned char *a = malloc(BYTES), *b = malloc(BYTES);
    if (!a || !b) {
        fputs("memcpy_speed: out of memory\n", stderr);
        return 1;
    }
    memset(a, 1, BYTES);   /* fault every page in before timing */
    memset(b, 2, BYTES);
    double best = 1e30;
    for (int i = 0; i < REPS; i++) {
        a[(size_t)i * 4096] = (unsigned char)i;
        double t0 = now();
        memcpy(b, a, BYTES);
        double t = now() - t0;
        if (t < best)
            best = t;
    }
    if (b[(size_t)(REPS - 1) * 4096] != (unsigned char)(REPS - 1))
        return 1;   /* keeps the copies observable */
    printf("memcpy %.0f MB/s\n", (double)BYTES / best / 1e6);
    free(a);
    free(b);
    return 0;
}
