/*
 * bench_lossy_codec: single-thread speed and quality of the lossy unit
 * codecs (format/lossy.c) on a synthetic fine-tune: a BF16 base ~ N(0, 0.02)
 * and a Gaussian delta ~ N(0, 0.001) in f32, cut into chunks of 512 Ki
 * elements (1 MiB of BF16, as import cuts them) of 8 units of 64 Ki
 * elements (256 x 256 for LOWRANK).
 *
 * For each codec it prints: encode speed (MB/s of BF16 delta input, i.e.
 * 2 bytes per element), apply speed (GB/s of BF16 output: the whole
 * tvs_lossy_chunk_apply, validation + decode + base add + RNE rounding,
 * best of REPS), the relative MSE of the decoded delta (sum (d - d')^2 /
 * sum d^2) and the stored bits per element; and a memcpy baseline over the
 * same bytes, in the same run.
 *
 *   cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release
 *   cmake --build build-rel --target tvs_format
 *   cc -O2 -I. -o bench_lossy_codec tests/bench/bench_lossy_codec.c \
 *      build-rel/format/libtvs_format.a -lzstd -lxxhash -ljansson -lm
 *   ./bench_lossy_codec [MIB] [FILTER]
 *
 * MIB: BF16 output size (default 64). FILTER: run only codecs whose name
 * contains it (e.g. "blockq").
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "format/lossy.h"

#define UNIT 65536u
#define UNITS_PER_CHUNK 8u
#define CHUNK (UNIT * UNITS_PER_CHUNK)
#define REPS 5

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng = 0x2545f4914f6cdd1dull;

static double uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}

static double gauss(void)
{
    return sqrt(-2 * log(uniform())) * cos(6.283185307179586 * uniform());
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_lossy_codec: %s: %s (%s)\n", what, tvs_strerror(rc), tvs_errmsg());
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fputs("bench_lossy_codec: out of memory\n", stderr);
        exit(1);
    }
    return p;
}

typedef struct {
    const char *name;
    tvs_lossy_params p;
} config;

int main(int argc, char **argv)
{
    size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 64;
    const char *filter = argc > 2 ? argv[2] : NULL;
    size_t n = mib << 19;                   /* BF16 elements */
    n = (n + CHUNK - 1) / CHUNK * CHUNK;
    size_t n_chunks = n / CHUNK;

    uint8_t *base = xmalloc(2 * n), *dst = xmalloc(2 * n), *copy = xmalloc(2 * n);
    float *d = xmalloc(n * sizeof *d), *dhat = xmalloc(UNIT * sizeof *dhat);
    for (size_t i = 0; i < n; i++) {
        uint16_t h = tvs_f32_to_bf16((float)(0.02 * gauss()));
        base[2 * i] = (uint8_t)h;
        base[2 * i + 1] = (uint8_t)(h >> 8);
        d[i] = (float)(0.001 * gauss());
    }
    memcpy(dst, base, 2 * n);
    memcpy(copy, base, 2 * n);

    double best = 1e30;
    for (int r = 0; r < REPS; r++) {
        copy[(size_t)r * 4096] = (uint8_t)r;
        double t0 = now();
        memcpy(dst, copy, 2 * n);
        best = fmin(best, now() - t0);
    }
    double memcpy_gbs = 2.0 * (double)n / best / 1e9;
    printf("%zu BF16 elements (%.0f MiB), %zu chunks of %u units of %u; memcpy %.2f GB/s\n\n",
           n, 2.0 * (double)n / 1048576, n_chunks, UNITS_PER_CHUNK, UNIT, memcpy_gbs);

    static const config configs[] = {
        { "blockq b1", { .codec = TVS_LC_BLOCKQ, .bits = 1, .block = 64 } },
        { "blockq b2", { .codec = TVS_LC_BLOCKQ, .bits = 2, .block = 64 } },
        { "blockq b3", { .codec = TVS_LC_BLOCKQ, .bits = 3, .block = 64 } },
        { "blockq b4", { .codec = TVS_LC_BLOCKQ, .bits = 4, .block = 64 } },
        { "blockq b8", { .codec = TVS_LC_BLOCKQ, .bits = 8, .block = 64 } },
        { "blockq b2 blk256", { .codec = TVS_LC_BLOCKQ, .bits = 2, .block = 256 } },
        { "blockq b2 zp", { .codec = TVS_LC_BLOCKQ, .bits = 2, .block = 64,
                            .flags = TVS_BQ_ZERO } },
        { "blockq b2 cb", { .codec = TVS_LC_BLOCKQ, .bits = 2, .block = 64,
                            .flags = TVS_BQ_CODEBOOK } },
        { "blockq b3 cb", { .codec = TVS_LC_BLOCKQ, .bits = 3, .block = 64,
                            .flags = TVS_BQ_CODEBOOK } },
        { "blockq b4 cb", { .codec = TVS_LC_BLOCKQ, .bits = 4, .block = 64,
                            .flags = TVS_BQ_CODEBOOK } },
        { "sign d=1.0", { .codec = TVS_LC_SIGN, .density = 1.0f } },
        { "sign d=0.5", { .codec = TVS_LC_SIGN, .density = 0.5f } },
        { "sign d=0.1", { .codec = TVS_LC_SIGN, .density = 0.1f } },
        { "sign d=0.01", { .codec = TVS_LC_SIGN, .density = 0.01f } },
        { "sparseq d=0.5 b4", { .codec = TVS_LC_SPARSEQ, .density = 0.5f, .bits = 4,
                                .block = 64 } },
        { "sparseq d=0.1 b4", { .codec = TVS_LC_SPARSEQ, .density = 0.1f, .bits = 4,
                                .block = 64 } },
        { "sparseq d=0.1 b2", { .codec = TVS_LC_SPARSEQ, .density = 0.1f, .bits = 2,
                                .block = 64 } },
        { "lowrank r8 bf16", { .codec = TVS_LC_LOWRANK, .rows = 256, .cols = 256, .rank = 8,
                               .factor_dtype = TVS_DTYPE_BF16 } },
        { "lowrank r16 bf16", { .codec = TVS_LC_LOWRANK, .rows = 256, .cols = 256,
                                .rank = 16, .factor_dtype = TVS_DTYPE_BF16 } },
        { "lowrank r16 f32", { .codec = TVS_LC_LOWRANK, .rows = 256, .cols = 256,
                               .rank = 16, .factor_dtype = TVS_DTYPE_F32 } },
        { "zero", { .codec = TVS_LC_ZERO } },
        { "verbatim", { .codec = TVS_LC_VERBATIM } },
    };

    printf("%-18s %11s %11s %9s %9s %11s %9s\n", "codec", "enc MB/s", "apply GB/s",
           "ns/elem", "memcpy", "rel MSE", "bits/el");
    for (size_t c = 0; c < sizeof configs / sizeof *configs; c++) {
        const config *cf = &configs[c];
        if (filter && !strstr(cf->name, filter))
            continue;
        const tvs_lossy_params *p = &cf->p;
        /* LOWRANK encodes are slow: encode a few units and repeat them */
        size_t enc_units = p->codec == TVS_LC_LOWRANK ? TVS_MIN(n / UNIT, 16) : n / UNIT;
        size_t bound = tvs_lossy_unit_bound(p, UNIT, TVS_DTYPE_BF16);
        size_t ss = tvs_lossy_scratch_size(p, UNIT);
        uint8_t *enc = xmalloc(bound * enc_units + 1), *scratch = xmalloc(ss + 1);
        size_t *len = xmalloc(enc_units * sizeof *len);
        uint8_t *ft = xmalloc(2 * UNIT);
        double t_enc = 0, err = 0, norm = 0, bytes = 0;
        for (size_t u = 0; u < enc_units; u++) {
            const float *du = d + u * UNIT;
            if (p->codec == TVS_LC_VERBATIM)
                for (size_t i = 0; i < UNIT; i++) {
                    uint16_t b = (uint16_t)(base[2 * (u * UNIT + i)] |
                                            base[2 * (u * UNIT + i) + 1] << 8);
                    uint16_t h = tvs_f32_to_bf16(tvs_bf16_to_f32(b) + du[i]);
                    ft[2 * i] = (uint8_t)h;
                    ft[2 * i + 1] = (uint8_t)(h >> 8);
                }
            double t0 = now();
            int rc = tvs_lossy_unit_encode(enc + u * bound, bound, &len[u], p, du, ft,
                                           TVS_DTYPE_BF16, UNIT, scratch);
            t_enc += now() - t0;
            if (rc)
                die(cf->name, rc);
            bytes += (double)len[u];
            if (p->codec != TVS_LC_VERBATIM) {
                if (p->codec == TVS_LC_ZERO)
                    memset(dhat, 0, UNIT * sizeof *dhat);
                else if ((rc = tvs_lossy_unit_decode(dhat, UNIT, p->codec,
                                                     (tvs_span){ enc + u * bound, len[u] })))
                    die("decode", rc);
                for (size_t i = 0; i < UNIT; i++) {
                    double e = (double)du[i] - dhat[i];
                    err += e * e;
                    norm += (double)du[i] * du[i];
                }
            }
        }
        /* the chunks (units beyond enc_units reuse the encoded ones) */
        tvs_buf *chunks = xmalloc(n_chunks * sizeof *chunks);
        for (size_t k = 0; k < n_chunks; k++) {
            tvs_buf b = TVS_BUF_INIT;
            int rc = tvs_lossy_chunk_begin(&b, UNITS_PER_CHUNK);
            for (unsigned u = 0; !rc && u < UNITS_PER_CHUNK; u++) {
                size_t e = (k * UNITS_PER_CHUNK + u) % enc_units;
                tvs_lossy_unit lu = { UNIT, 0, 0, p->codec, { enc + e * bound, len[e] } };
                rc = tvs_lossy_chunk_add(&b, &lu);
            }
            if (rc)
                die("chunk", rc);
            chunks[k] = b;
        }
        memcpy(dst, base, 2 * n);
        double t_apply = 1e30;
        for (int r = 0; r < REPS; r++) {
            double t0 = now();
            for (size_t k = 0; k < n_chunks; k++) {
                int rc = tvs_lossy_chunk_apply(dst + 2 * k * CHUNK, TVS_DTYPE_BF16, CHUNK,
                                               (tvs_span){ chunks[k].ptr, chunks[k].len });
                if (rc)
                    die("apply", rc);
            }
            t_apply = fmin(t_apply, now() - t0);
        }
        double enc_mbs = 2.0 * (double)(enc_units * UNIT) / t_enc / 1e6;
        double apply_gbs = 2.0 * (double)n / t_apply / 1e9;
        char mse[32] = "-";
        if (p->codec != TVS_LC_VERBATIM)
            snprintf(mse, sizeof mse, "%.5f", norm > 0 ? err / norm : 0);
        printf("%-18s %11.1f %11.2f %9.3f %9.2f %11s %9.3f\n", cf->name, enc_mbs, apply_gbs,
               t_apply * 1e9 / (double)n, memcpy_gbs, mse,
               8.0 * bytes / (double)(enc_units * UNIT));
        fflush(stdout);
        for (size_t k = 0; k < n_chunks; k++)
            tvs_buf_dispose(&chunks[k]);
        free(chunks);
        free(enc);
        free(scratch);
        free(len);
        free(ft);
    }
    free(base);
    free(dst);
    free(copy);
    free(d);
    free(dhat);
    return 0;
}
