/*
 * What the fuzz targets share: the libFuzzer entry point, a check that
 * aborts (so libFuzzer and the replayer both see a crash, whatever NDEBUG
 * says), and the parameter bytes of the round-trip targets, which
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
 *   bit  6    delta (delta-transformed integers)
 *   bit  7    unused
 */
typedef struct {
    unsigned elem_bytes;
    int is_float;
    int level;
    int delta;
} fuzz_chunk_params;

static inline fuzz_chunk_params fuzz_chunk_params_of(uint8_t b)
{
    fuzz_chunk_params p = { (b & 7u) + 1, (b >> 3) & 1, ((b >> 4) & 3) % 3 + 1,
                            (b >> 6) & 1 };
    return p;
}

static inline uint8_t fuzz_chunk_param_byte(fuzz_chunk_params p)
{
    return (uint8_t)(((p.elem_bytes - 1) & 7u) | (p.is_float ? 8u : 0u) |
                     (((unsigned)(p.level - 1) % 3) << 4) | (p.delta ? 64u : 0u));
}

/*
 * delta_roundtrip input: one byte picking the transform (value % 3 + 1:
 * XOR, ORD16, ORD32), then ft and base, each half of the rest.
 */
static inline int fuzz_delta_transform_of(uint8_t b) { return b % 3 + 1; }
static inline uint8_t fuzz_delta_param_byte(int transform) { return (uint8_t)(transform - 1); }

#endif
