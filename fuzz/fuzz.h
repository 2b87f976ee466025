/*
 * What the fuzz targets share: the libFuzzer entry point, a check that
 * aborts (so libFuzzer and the replayer both see a crash, whatever NDEBUG
 * says), and the parameter byte of the chunk round-trip target, which
 * make_corpus.c also writes.
 */
#ifndef TVS_FUZZ_FUZZ_H
#define TVS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A broken invariant is a bug in the code under test: report it and crash. */
#define FUZZ_CHECK(cond)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                     \
            abort();                                                            \
        }                                                                       \
    } while (0)

/* Largest raw chunk the targets decode or encode; bigger declared lengths
 * are skipped (the decoder itself accepts up to TVS_CHUNK_MAX). */
#define FUZZ_MAX_RAW (4u << 20)

/*
 * chunk_roundtrip input: one parameter byte, then the raw data.
 *   bits 0-2  element width - 1 (1..8)
 *   bit  3    is_float
 *   bits 4-5  zstd level selector: level = sel % 3 + 1 (1..3)
 */
typedef struct {
    unsigned elem_bytes;
    int is_float;
    int level;
} fuzz_chunk_params;

static inline fuzz_chunk_params fuzz_chunk_params_of(uint8_t b)
{
    fuzz_chunk_params p = { (b & 7u) + 1, (b >> 3) & 1, ((b >> 4) & 3) % 3 + 1 };
    return p;
}

static inline uint8_t fuzz_chunk_param_byte(unsigned elem_bytes, int is_float, int level)
{
    return (uint8_t)(((elem_bytes - 1) & 7u) | (is_float ? 8u : 0u) |
                     (((unsigned)(level - 1) % 3) << 4));
}

#endif
