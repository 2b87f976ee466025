/* Shared inside query/ only: the plan's structures. */
#ifndef TVS_QUERY_PLAN_INT_H
#define TVS_QUERY_PLAN_INT_H

#include "format/object.h"
#include "query/plan.h"

typedef enum { T_SCALAR, T_FULL, T_DELTA } qtype;
typedef enum { OP_SCALAR, OP_FULL, OP_DELTA, OP_LIN, OP_DARE, OP_TIES, OP_CRUMBS } qop_kind;

typedef struct qop qop;
struct qop {
    qop_kind op;
    qtype type;
    double num;               /* OP_SCALAR */
    size_t leaf;              /* OP_FULL, OP_DELTA: index into plan->leaves */
    tvs_id anchor;            /* T_FULL: the model deltas may apply to; T_DELTA: the base */
    int has_anchor;
    qop **kids;               /* OP_LIN, OP_DARE */
    double *w;                /* OP_LIN: weights */
    size_t n;
    double drop, lambda;      /* OP_DARE (drop), OP_TIES (drop = density), all (lambda) */
    double top, bottom;       /* OP_CRUMBS: fractions dropped by magnitude */
    uint64_t seed;
    size_t sel;               /* OP_TIES, OP_CRUMBS: index of its thresholds in a tensor */
    size_t pos;               /* byte offset in the query */
};

typedef struct {
    tvs_id id;
    tvs_model_obj m;          /* the model (borrows from the plan's txn) */
    tvs_model_obj base;       /* a delta model's base */
    int is_delta;
    char label[TVS_REF_MAX + 48];
} qleaf;

/* Where an output tensor's bytes come from. */
enum { SRC_COPY, SRC_EVAL };

typedef struct {
    char *name;
    tvs_dtype dtype;          /* output dtype */
    tvs_dtype src_dtype;      /* SRC_COPY: the source tensor's dtype */
    uint32_t rank;
    uint64_t shape[TVS_ST_MAX_RANK];
    uint64_t n_elems, nbytes, offset;   /* offset: in the whole output file */
    int src;
    tvs_id copy;              /* SRC_COPY: the tensor copied (converted if dtypes differ) */
    tvs_id *leaf_t;           /* SRC_EVAL: per leaf, the tensor (FULL) or ft tensor (DELTA) */
    tvs_id *leaf_b;           /* SRC_EVAL: per delta leaf, the base tensor */
    tvs_dtype *leaf_dt;       /* SRC_EVAL: per leaf, its dtype */
    uint64_t first_block;     /* index of its first block among all blocks */
    uint64_t n_blocks;
    float *thr;               /* magnitude thresholds: per selecting op, per kid, lo and hi */
} qtensor;

struct tvs_plan {
    tvs_txn *txn;
    tvs_store *store;
    char *text;
    tvs_ast ast;
    qop *root;
    qop *ops;                 /* every op, for freeing */
    size_t n_ops, cap_ops;
    qleaf *leaves;
    size_t n_leaves;
    qtensor *tensors;         /* in output order */
    size_t n_tensors;
    uint8_t *header;          /* 8-byte length + JSON header */
    size_t header_len;
    uint64_t size, n_blocks;
    int copy_file;            /* output = a stored file verbatim */
    tvs_id copy_model;
    int threads;
    tvs_plan_opts opts;
    size_t n_sel;             /* ops that select by magnitude (TIES, breadcrumbs) */
    size_t sel_slots;         /* floats of thresholds per tensor */
};

#define TVS_BLOCK_ELEMS (512u * 1024u)   /* elements per execution block */

/* exec.c: worker memory per block and leaf, for EXPLAIN */
size_t tvs__exec_block_bytes(const tvs_plan *p);

#endif
