/*
 * The lossy encoder's choices (engine/lossy.c), used by import (engine/import.c).
 *
 * A lossy tensor's chunk is cut into units (row blocks of about
 * TVS__LUNIT elements, cut at the same element positions in every chunk).
 * Analysis measures, for every unit, a fixed list of candidate encodings
 * (rate in stored bytes, distortion in squared error of the delta) on a
 * sample of the unit; a choice step then picks one candidate per unit,
 * either the smallest meeting a relative error (--max-error) or the
 * allocation of a bit budget over all units that minimizes the total
 * squared error (--bits); encoding writes the picks and measures every
 * unit's real error exactly.
 */
#ifndef TVS_ENGINE_LOSSY_INT_H
#define TVS_ENGINE_LOSSY_INT_H

#include "format/lossy.h"

#define TVS__LUNIT 16384u        /* target elements per unit */
#define TVS__LSAMPLE 4096u       /* elements measured per chunk (all of a smaller one) */
#define TVS__LRUN 64u            /* ... in evenly spaced runs of this many */
#define TVS__LCAND_MAX 40       /* the list has at most 38 */
#define TVS__LUNIT_HDR 17u       /* stored bytes of a unit's header in a lossy chunk */
#define TVS__LMIN_ELEMS 16u      /* smaller tensors stay lossless */

typedef struct {
    tvs_lossy_params p;
    float rate;                  /* estimated stored bytes, unit header included */
    float dist;                  /* estimated squared error of the delta */
    uint8_t all_nz;              /* SIGN/SPARSEQ keeping exactly the nonzero entries:
                                    density set from the data measured */
} tvs__lcand;

typedef struct {
    uint64_t first;              /* element index in the tensor */
    uint32_t n;
    uint32_t cols;               /* whole rows of this many elements, else 0 */
    double norm2;                /* squared L2 norm of the exact delta */
    uint8_t head;                /* of the model's output head (lm_head) */
    double weight;               /* --bits: its squared error counts this much */
    uint8_t n_cand;
    uint8_t pick;                /* chosen candidate */
    tvs__lcand cand[TVS__LCAND_MAX];   /* by rate, ascending */
    /* after encoding */
    float err;                   /* relative L2 error, measured */
    uint8_t codec;
    uint32_t bytes;              /* payload + header */
    uint8_t from;                /* the pick encoding started from (it may move on) */
    uint8_t written;             /* the candidate written */
    float *svd;                  /* LOWRANKQ: the unit's triplets, kept from analysis
                                    for encoding (u, s, v of tvs_lossy_svd_t; or with
                                    svd_small, the smaller side's vectors), or NULL */
    uint32_t svd_k;
    uint8_t svd_small;
} tvs__lunit;

typedef struct tvs__lworker tvs__lworker;

int tvs__lworker_new(tvs__lworker **out);
void tvs__lworker_free(tvs__lworker *w);

/*
 * LOWRANKQ candidates cost an SVD of each chunk to measure (the encoder
 * then runs at about 110 MB/s on 2048-wide tensors and 40 MB/s on 256-wide
 * ones, instead of 120-260), and win only at low rates:
 * import tries them for --bits B <= TVS__LRQ_MAX_BITS and --max-error E >=
 * TVS__LRQ_MIN_ERROR (on the fine-tunes of ../shared/models, 2-bit blocks
 * already keep 99.9 % of the gain).
 */
#define TVS__LRQ_MAX_BITS 1.5
/*
 * The --bits allocation counts an output head's (lm_head's) relative error
 * this many times: it writes the logits, so its error reaches the loss
 * directly (quantizers for LLMs keep it at higher precision for the same
 * reason). On ft-code at 1 bit per parameter, the exact lm_head alone would
 * lift the kept gain from 97.4 to 99.1 %; weighted 8x, it gets 0.7 instead of
 * 0.23 bits per parameter, and the model keeps 98.9 %.
 */
#define TVS__LHEAD_WEIGHT 8.0
#define TVS__LRQ_MIN_ERROR 0.15
void tvs__lworker_set_lowrankq(tvs__lworker *w, int on);

/**
 * Units of the chunk holding elements [first, first + n) of a tensor whose
 * rows have @p cols elements; fills @p u (NULL: just count).
 */
uint32_t tvs__lossy_units(tvs__lunit *u, uint64_t first, size_t n, uint64_t cols);

/** Free what analysis kept with @p n units (their triplets). */
void tvs__lossy_units_release(tvs__lunit *u, size_t n);

/** Measure every candidate of every unit of one chunk (ft and base: n elements of dt). */
int tvs__lossy_analyze(tvs__lworker *w, tvs__lunit *u, uint32_t n_units, const uint8_t *ft,
                       const uint8_t *base, tvs_dtype dt);

/** --max-error: the smallest candidate of each unit whose estimate meets @p e. */
void tvs__lossy_pick_error(tvs__lunit *u, size_t n, double e);

/**
 * --bits: pick candidates for all @p n units (pointers, in a fixed order)
 * so that their total rate stays within @p budget bytes and the total
 * squared error is smallest (marginal gains over each unit's convex hull).
 */
int tvs__lossy_allocate(tvs__lunit *const *u, size_t n, double budget);

/**
 * Encode one chunk with the picks: the lossy chunk's bytes go to @p out
 * (appended), and @p base_io (n elements of the base) becomes the decoded
 * elements. With @p max_err > 0, a unit whose measured error exceeds it
 * moves on to its next larger candidate until it meets it. Each unit's
 * `from` is its pick on entry, and `pick` and `written` the candidate
 * written: the same picks and inputs give the same bytes.
 */
int tvs__lossy_encode(tvs__lworker *w, tvs_buf *out, tvs__lunit *u, uint32_t n_units,
                      const uint8_t *ft, uint8_t *base_io, tvs_dtype dt, double max_err);

#endif
