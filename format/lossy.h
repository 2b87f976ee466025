/**
 * @file format/lossy.h
 * @brief Lossy encodings of a task vector: the byte layouts of units and
 *        lossy chunks, their encoders, decoders and size bounds.
 *
 * A lossy tensor (tensor encoding 2, format/object.h) stores, for each
 * chunk-sized byte range of the fine-tuned tensor, one *lossy chunk*: a list
 * of *units* (consecutive element ranges, usually row blocks), each encoded
 * with one of the codecs below. Decoding a unit gives an approximate delta
 * `d[i]` in f32; the tensor's elements are `round(base[i] + d[i])` to the
 * tensor's dtype (round to nearest even), except for VERBATIM units, which
 * hold the fine-tuned elements themselves.
 *
 * Pure functions over explicit sizes: decoders allocate only a LOWRANKQ
 * unit's dequantized factors (at most 4 bytes per element), every
 * decoder accepts untrusted bytes and returns TVS_ECORRUPT with a message
 * naming the rule broken. Byte layouts: SPEC.md, section 2.7.
 */
#ifndef TVS_FORMAT_LOSSY_H
#define TVS_FORMAT_LOSSY_H

#include "format/base.h"
#include "format/dtype.h"

/** Unit codecs (stored; never reused). */
enum {
    TVS_LC_ZERO = 0,      /**< delta dropped: d = 0 */
    TVS_LC_SIGN = 1,      /**< T-Switch: mask of kept entries, their signs, one scale */
    TVS_LC_BLOCKQ = 2,    /**< k-bit block quantization, per-block scale (and zero point) */
    TVS_LC_SPARSEQ = 3,   /**< mask of kept entries + BLOCKQ body over the kept values */
    TVS_LC_LOWRANK = 4,   /**< d = scale · U·V, U rows×rank, V rank×cols */
    TVS_LC_VERBATIM = 5,  /**< the fine-tuned elements themselves (exact) */
    TVS_LC_LOWRANKQ = 6,  /**< d = scale · U·V with each rank-1 term's factors in
                               BLOCKQ bodies of their own bit width */
    TVS_LC_COUNT
};

/** Layouts of a sparse mask (stored; the encoder picks the smallest). */
enum {
    TVS_MASK_ALL = 0,     /**< every entry kept; no mask bytes */
    TVS_MASK_BITMAP = 1,  /**< ceil(n/8) bytes, bit i = byte i/8 bit i%8 */
    TVS_MASK_INDEX = 2,   /**< LEB128 gaps between kept indices */
    TVS_MASK_RUNS = 3,    /**< LEB128 run lengths, alternating unkept / kept */
};

/** BLOCKQ flags. */
enum {
    TVS_BQ_ZERO = 1,      /**< a per-block zero point follows the scales */
    TVS_BQ_CODEBOOK = 2,  /**< 2^bits f32 levels replace the uniform levels */
};

/** Lossy chunk version written; decoders read TVS_LOSSY_VERSION_MIN and up.
 *  Version 1 differs only in LOWRANKQ's sums (a product then a sum, each
 *  rounded; SPEC.md 2.7), version 2 fuses them. */
#define TVS_LOSSY_VERSION 2
#define TVS_LOSSY_VERSION_MIN 1
#define TVS_LOSSY_MAX_UNIT (1u << 24)   /**< elements per unit a decoder accepts */
#define TVS_LOSSY_MAX_RANK 1024u
#define TVS_BQ_MIN_BLOCK 8u
#define TVS_BQ_MAX_BLOCK 4096u

/**
 * The leading singular triplets of a rows × cols matrix: A ≈ Σ_t s[t] ·
 * u_t · v_tᵀ, s descending, u_t and v_t unit vectors (see tvs_lossy_svd).
 */
typedef struct {
    uint32_t rows, cols, k;  /**< k triplets */
    const float *u;          /**< k × rows: u_t at u + t·rows */
    const float *s;          /**< k singular values, descending, ≥ 0 */
    const float *v;          /**< k × cols: v_t at v + t·cols */
} tvs_lossy_svd_t;

/** What an encoder is asked to produce for one unit. */
typedef struct {
    uint8_t codec;          /**< TVS_LC_* */
    uint8_t bits;           /**< BLOCKQ / SPARSEQ: 1…8 bits per value */
    uint16_t block;         /**< BLOCKQ / SPARSEQ: values per scale, 8…4096 */
    uint8_t flags;          /**< BLOCKQ / SPARSEQ: TVS_BQ_* the encoder may use */
    uint8_t wide;           /**< BLOCKQ / SPARSEQ, encoder only: each block's step
                                 puts its largest |value| on the outer level (no
                                 clipping; the rare outer levels entropy-code
                                 cheaply) instead of least squares; bits >= 2 */
    uint8_t unbiased;       /**< SIGN / BLOCKQ / SPARSEQ / LOWRANK / LOWRANKQ, encoder
                                 only: the unit's global scale is divided by <r, d> /
                                 |d|^2 (r: the reconstruction; for LOWRANKQ, <r, d> as
                                 tvs_lossy_lowrankq_estimate's model gives it), so the
                                 stored delta keeps the full length along d instead
                                 of the least-squares shrinkage */
    float density;          /**< SIGN / SPARSEQ: fraction of entries kept, (0, 1];
                                 the kept set is every entry with |d| ≥ a threshold
                                 (ties resolved by index, lowest first) */
    uint32_t rows, cols;    /**< LOWRANK: rows × cols = n */
    uint32_t rank;          /**< LOWRANK: 1…TVS_LOSSY_MAX_RANK */
    tvs_dtype factor_dtype; /**< LOWRANK: BF16, F16 or F32 factors */
    float rate;             /**< LOWRANKQ: bits per element the payload may spend
                                 (bodies' headers and scales included), > 0 */
    const tvs_lossy_svd_t *svd; /**< LOWRANKQ, optional: the unit's leading singular
                                 triplets (rows, cols as above; computed when NULL) */
    double norm2;           /**< LOWRANKQ, optional: |d|², when > 0 (else summed);
                                 with svd too, the encoder does not read d */
} tvs_lossy_params;

/**
 * Largest payload tvs_lossy_unit_encode can write for @p n elements
 * (elements of @p dt: only VERBATIM depends on it). 0 for invalid params.
 */
size_t tvs_lossy_unit_bound(const tvs_lossy_params *p, size_t n, tvs_dtype dt);

/**
 * Encode the exact delta @p d (n values, f32) of one unit as codec p->codec.
 * VERBATIM copies @p ft (the fine-tuned elements, n elements of @p dt) and
 * ignores @p d; the other codecs ignore @p ft. LOWRANK computes the factors
 * (a deterministic randomized subspace iteration). @p scratch holds at least
 * tvs_lossy_scratch_size(p, n) bytes. The output depends only on the inputs.
 * @return 0, TVS_EBUFS (cap too small), TVS_EINVAL (params out of range, or
 *         a non-finite value in @p d for a codec other than VERBATIM)
 */
int tvs_lossy_unit_encode(uint8_t *dst, size_t cap, size_t *written, const tvs_lossy_params *p,
                          const float *d, const uint8_t *ft, tvs_dtype dt, size_t n,
                          void *scratch);
/**
 * tvs_lossy_unit_encode, and into @p r the n values decoding the payload
 * gives (bit for bit what tvs_lossy_unit_decode writes), from the encoder's
 * own state where it can (BLOCKQ, SPARSEQ, SIGN, ZERO): for an encoder
 * that measures its error. VERBATIM leaves @p r alone. Same scratch.
 */
int tvs_lossy_unit_encode_r(uint8_t *dst, size_t cap, size_t *written, float *r,
                            const tvs_lossy_params *p, const float *d, const uint8_t *ft,
                            tvs_dtype dt, size_t n, void *scratch);

/** Scratch bytes tvs_lossy_unit_encode needs (any alignment); 0 if none. */
size_t tvs_lossy_scratch_size(const tvs_lossy_params *p, size_t n);

/**
 * The @p k (≤ min(rows, cols), ≤ TVS_LOSSY_MAX_RANK) leading singular
 * triplets of the row-major rows × cols matrix @p a, deterministically (the
 * eigenvectors of the smaller side's Gram matrix, by a subspace iteration
 * oversampled by 8 or more when that side is larger than k + 8;
 * format/lossy_svd.c: the same bits on every machine), into @p out, whose
 * arrays live in @p mem (tvs_lossy_svd_size bytes, any alignment).
 * @return 0, TVS_EINVAL (sizes out of range)
 */
int tvs_lossy_svd(tvs_lossy_svd_t *out, const float *a, uint32_t rows, uint32_t cols,
                  uint32_t k, void *mem);
/**
 * The eigenvalues of the symmetric @p n × @p n matrix @p a (row-major, f64,
 * destroyed; 1 ≤ n ≤ 64), descending, into @p ev — Householder and QL, the
 * same bits on every machine: an encoder's probe of a spectrum.
 * @return 0, TVS_EINVAL (n out of range, or values not finite)
 */
int tvs_lossy_eigvals(double *a, size_t n, double *ev);
/**
 * The same triplets as tvs_lossy_svd(out, a, rows, cols, k, mem) gave, from
 * the smaller side's vectors it gave (@p small: k × min(rows, cols), that
 * call's out->u when rows < cols, else its out->v): one product with @p a
 * instead of the Gram matrix and its eigenvectors. Same @p mem.
 * @return 0, TVS_EINVAL (sizes out of range)
 */
int tvs_lossy_svd_resume(tvs_lossy_svd_t *out, const float *a, uint32_t rows, uint32_t cols,
                         uint32_t k, const float *small, void *mem);
/** Bytes tvs_lossy_svd needs for @p k triplets; 0 if out of range. */
size_t tvs_lossy_svd_size(uint32_t rows, uint32_t cols, uint32_t k);

/**
 * What a LOWRANKQ encoding of a unit with energy @p norm2 (n elements,
 * @p p with its svd) is expected to take, without encoding it: the
 * payload's @p bytes exactly (before zstd), and its squared error in two
 * parts: @p tail, the energy outside the terms kept (|d|² − Σ s_t²), and
 * @p noise, the kept terms' quantization noise as the bit allocation's
 * model expects it.
 * @return 0, TVS_EINVAL
 */
int tvs_lossy_lowrankq_plan(const tvs_lossy_params *p, size_t n, double norm2, double *bytes,
                            double *tail, double *noise);

/**
 * Encode a LOWRANKQ unit like tvs_lossy_unit_encode without decoding it,
 * and into @p err its squared error |d − r|² as the factors' own errors
 * give it: exact but for products of two factors' quantization noises
 * (which average out over the terms) and the part of the tail that is
 * not orthogonal to the terms (none, for exact triplets). Same scratch.
 * @return as tvs_lossy_unit_encode
 */
int tvs_lossy_lowrankq_estimate(uint8_t *dst, size_t cap, size_t *written, double *err,
                                const tvs_lossy_params *p, const float *d, size_t n,
                                void *scratch);

/**
 * Entries SIGN and SPARSEQ keep of @p n at @p density:
 * clamp(round(density · n), 1, n), rounding halves up; 0 if @p density is
 * not in (0, 1] or @p n is 0.
 */
size_t tvs_lossy_keep_count(float density, size_t n);

/**
 * LOWRANK from given factors (an imported LoRA adapter: U = B, V = A,
 * scale = alpha / r): @p u is rows×rank and @p v rank×cols elements of
 * @p fdt (BF16, F16 or F32), row-major, copied as they are.
 */
int tvs_lossy_lowrank_put(uint8_t *dst, size_t cap, size_t *written, uint32_t rows,
                          uint32_t cols, uint32_t rank, tvs_dtype fdt, float scale,
                          const uint8_t *u, const uint8_t *v);

/**
 * Decode one unit's payload into @p d (n f32 values), by the rules of a
 * TVS_LOSSY_VERSION chunk (a unit of an older chunk may decode to other
 * bits: tvs_lossy_chunk_apply takes the chunk's version into account). Not
 * for VERBATIM (its values are elements, not a delta): TVS_EINVAL.
 * @return 0 or TVS_ECORRUPT
 */
int tvs_lossy_unit_decode(float *d, size_t n, uint8_t codec, tvs_span payload);

/** Unit header as stored in a lossy chunk. */
typedef struct {
    uint32_t n;             /**< elements */
    float err;              /**< relative L2 error of the tensor's elements over this
                                 unit, measured when encoding (informational) */
    float norm;             /**< L2 norm of the exact delta (informational) */
    uint8_t codec;
    tvs_span payload;
} tvs_lossy_unit;

/** Append a lossy chunk's header (version, unit count) to @p out. */
int tvs_lossy_chunk_begin(tvs_buf *out, uint32_t n_units);
/** Append one unit (its header fields and payload). */
int tvs_lossy_chunk_add(tvs_buf *out, const tvs_lossy_unit *u);

/**
 * Walk the units of a lossy chunk of @p n elements of @p dt, validating
 * the framing (unit counts, lengths summing to n, codecs known). Calls @p cb
 * for each unit in order, only once the whole framing has checked out (not
 * the payloads: tvs_lossy_unit_decode does that); a non-zero return stops
 * the walk and is returned. @p first is the unit's first element.
 * @return 0, TVS_ECORRUPT, TVS_EINVAL (@p dt not BF16, F16 or F32), or cb's
 */
int tvs_lossy_chunk_units(tvs_span chunk, tvs_dtype dt, size_t n,
                          int (*cb)(const tvs_lossy_unit *u, size_t first, void *p),
                          void *payload);

/**
 * Apply a lossy chunk: @p dst holds n elements of @p dt (BF16, F16 or F32)
 * of the base and gets round(base + d), or the VERBATIM elements. Fully
 * validates @p chunk (every unit's payload) before or while writing; on
 * TVS_ECORRUPT the contents of @p dst are unspecified. Works in pieces
 * through a stack buffer; allocates only LOWRANKQ factors.
 */
int tvs_lossy_chunk_apply(uint8_t *dst, tvs_dtype dt, size_t n, tvs_span chunk);

/**
 * dst = round(dst + d) for @p n elements of @p dt (BF16, F16 or F32):
 * exactly what tvs_lossy_chunk_apply does to each element of a non-VERBATIM
 * unit (round to nearest even; a NaN sum is the base's NaN quieted, or the
 * canonical quiet NaN). For encoders that must predict the decoded bytes.
 * @return 0, TVS_EINVAL for another dtype
 */
int tvs_lossy_add(uint8_t *dst, tvs_dtype dt, const float *d, size_t n);

/** Dtypes a lossy tensor may have (BF16, F16, F32). */
int tvs_lossy_dtype_ok(tvs_dtype dt);

/**
 * For tests: 1 (the default) runs the SSE2 loops, and the AVX2 and
 * AVX-512 ones (the SVD's product, LOWRANKQ's decode) where the CPU has
 * them; 2 the SSE2 loops only; 0 the portable reference loops; 3 the SVD's
 * and LOWRANKQ's AVX2+FMA products, never AVX-512 (the rest as 2).
 */
extern int tvs__lossy_simd;

const char *tvs_lossy_codec_name(unsigned codec);
const char *tvs_mask_layout_name(unsigned layout);

/**
 * Describe a unit's parameters as stored (for `tvs show --units`), e.g.
 * "bits=2 block=64 zp", "density=0.100 mask=index", "rank=8 bf16".
 */
int tvs_lossy_unit_describe(char *out, size_t cap, const tvs_lossy_unit *u);

#endif
