/**
 * @file tests/support/support.h
 * @brief Fixtures shared by the Criterion tests: temporary folders, files,
 *        safetensors writers, running the `tvs` binary, store snapshots and
 *        a way to damage a stored object behind the library's back.
 *
 * Everything here returns errors instead of asserting, except the tt_ok /
 * tt_fails macros, which are Criterion assertions that print the library's
 * error message. Strings and buffers that come back are malloc'd: free them
 * with free(). Deterministic data comes from a fixed 64-bit LCG, so every
 * run of a test sees the same bytes.
 */
#ifndef TVS_TESTS_SUPPORT_H
#define TVS_TESTS_SUPPORT_H

#include <criterion/criterion.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <stdarg.h>
#include <sys/types.h>

#include "engine/store.h"
#include "format/base.h"
#include "query/plan.h"

#ifndef TVS_BIN
#error "TVS_BIN must be defined (path of the tvs binary)"
#endif

/* ---- assertions that show the library's error message */

#define tt_ok(expr)                                                                \
    do {                                                                           \
        int tt_rc_ = (expr);                                                       \
        cr_assert_eq(tt_rc_, 0, "%s returned %d (%s): %s", #expr, tt_rc_,          \
                     tvs_strerror(tt_rc_), tvs_errmsg());                          \
    } while (0)

#define tt_fails(expr, code)                                                       \
    do {                                                                           \
        int tt_rc_ = (expr);                                                       \
        cr_assert_eq(tt_rc_, (code), "%s returned %d (%s), expected %d (%s): %s",  \
                     #expr, tt_rc_, tvs_strerror(tt_rc_), (int)(code),             \
                     tvs_strerror(code), tvs_errmsg());                            \
    } while (0)

/** The last error message contains @p needle. */
#define tt_msg_has(needle)                                                         \
    cr_assert(strstr(tvs_errmsg(), (needle)) != NULL,                              \
              "error message \"%s\" does not mention \"%s\"", tvs_errmsg(), (needle))

/**
 * Under AddressSanitizer, check for memory leaked so far and, if any, log
 * an error (which makes the test binary exit non-zero). Call it last in a
 * suite's .fini: Criterion ignores the leak report of a worker at exit.
 * A no-op in other builds.
 */
void tt_leak_check(void);

/* ---- strings and paths */

/** printf into a malloc'd string. */
char *tt_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/** "a/b", malloc'd. */
char *tt_join(const char *a, const char *b);

/* ---- temporary folders */

/** mkdtemp("/tmp/tvs-test-XXXXXX"); malloc'd path, NULL on failure. */
char *tt_mkdtemp(void);
/** Remove @p path and everything under it (NULL is a no-op). */
int tt_rmtree(const char *path);
/** mkdir -p. */
int tt_mkdirs(const char *path);

/* ---- files */

int tt_write_file(const char *path, const void *p, size_t n);
int tt_write_text(const char *path, const char *s);
/** Whole file, malloc'd, with one NUL byte past the end; NULL on failure. */
uint8_t *tt_read_file(const char *path, size_t *len);
int tt_exists(const char *path);
/**
 * Compare two files byte for byte.
 * @return 1 if equal, 0 if not (*why says where), -1 if one cannot be read
 */
int tt_files_equal(const char *a, const char *b, char *why, size_t why_cap);
/** Regular files under @p dir, as sorted relative paths; -1 on error. */
int tt_list_files(char ***out, size_t *n, const char *dir);
void tt_free_list(char **list, size_t n);
/** Same set of relative paths and each pair byte-identical: 1, else 0 (*why). */
int tt_trees_equal(const char *a, const char *b, char *why, size_t why_cap);
/** Names in @p dir (not recursive) that contain @p needle. */
int tt_count_names(const char *dir, const char *needle);

/* ---- deterministic data */

/** The fixed LCG (Knuth MMIX constants); returns the high 32 bits of the new state. */
uint32_t tt_lcg(uint64_t *state);
/** @p n pseudo-random bytes from @p seed (incompressible). */
void tt_fill_random(void *p, size_t n, uint64_t seed);
/** @p n BF16 values that look like trained weights (compressible exponents). */
void tt_fill_bf16(void *p, size_t n, uint64_t seed);

/* ---- safetensors */

typedef struct {
    const char *name;
    const char *dtype;      /**< safetensors dtype name */
    unsigned rank;
    uint64_t shape[8];
} tt_tensor;

/** Bytes of @p t's data (0 if the dtype is unknown or elements do not fill bytes). */
uint64_t tt_tensor_bytes(const tt_tensor *t);
/**
 * A valid header for @p n tensors laid out back to back in the given order,
 * with `"__metadata__": meta_json` first when @p meta_json is not NULL,
 * padded with spaces to a multiple of 8 bytes as Hugging Face does.
 * @param[out] data_len  optional: bytes of the data region
 */
char *tt_st_header(const tt_tensor *t, size_t n, const char *meta_json, uint64_t *data_len);
/** Write a file: u64 LE strlen(@p json), @p json verbatim, then @p data. */
int tt_write_st_raw(const char *path, const char *json, const void *data, size_t data_len);
/** Write a valid file of @p n tensors whose bytes come from tt_fill_random(@p seed). */
int tt_write_st(const char *path, const tt_tensor *t, size_t n, const char *meta_json,
                uint64_t seed);

/**
 * A "fine-tune" of the safetensors file @p from, written to @p to: every
 * @p step-th BF16 element of the data region moved up one or two ulps
 * (chosen by @p seed), except zeros, subnormals and values near infinity.
 * Asserts on I/O failure.
 */
void tt_write_ft(const char *from, const char *to, int step, uint64_t seed);
/** Same, with bytes that look like BF16 weights (tt_fill_bf16): compressible. */
int tt_write_st_weights(const char *path, const tt_tensor *t, size_t n, const char *meta_json,
                        uint64_t seed);

/* ---- running the tvs binary */

typedef struct {
    int code;       /**< exit status, or -1 if killed by a signal */
    int sig;        /**< the signal, or 0 */
    char *out, *err;
    size_t out_len, err_len;
} tt_run;

/**
 * Run TVS_BIN with @p argv (NULL-terminated, without argv[0]) and wait.
 * @param env  NULL, or a NULL-terminated list of "NAME=VALUE" to set and
 *             "NAME" to unset in the child (TVS_STORE is never inherited
 *             unless set here)
 * @param cwd  folder to run in, or NULL
 * @return 0, or -1 if the child could not be started
 */
int tt_tvs(tt_run *r, const char *const *env, const char *cwd, const char *const *argv);
/** Same, with the arguments listed directly (NULL-terminated). */
int tt_tvsl(tt_run *r, const char *const *env, const char *cwd, ...);
void tt_run_dispose(tt_run *r);
/**
 * For CLI suites: run TVS_BIN with the arguments from @p first on (a
 * NULL-terminated list in @p ap, at most 64) under @p env, and return the
 * result. Unlike the rest of this file it asserts: that the program ran and
 * was not killed by a signal, and with @p must_succeed that it exited 0
 * (printing its output otherwise).
 */
tt_run tt_cli_va(const char *const *env, int must_succeed, const char *first, va_list ap);
/** tt_cli_va with the arguments listed directly (NULL-terminated). */
tt_run tt_cli(const char *const *env, int must_succeed, const char *first, ...);
/** The same, must exit 0; the output is dropped. */
void tt_cli_quiet(const char *const *env, const char *first, ...);

/**
 * For the CLI suites: an initialized store in a new temporary folder, which
 * is returned; *@p env_store becomes "TVS_STORE=<folder>" (malloc'd) and
 * @p env that string and a NULL, the environment for tt_cli. Asserts.
 */
char *tt_cli_store(char **env_store, const char *env[2]);

/** Start TVS_BIN without waiting; its output goes to /dev/null. -1 on failure. */
pid_t tt_tvs_spawn(const char *const *env, const char *cwd, const char *const *argv);
/** Number of '\n' in @p s. */
int tt_count_lines(const char *s);

/* ---- stores */

/** Create a store in a new temporary folder and open it. */
int tt_store_new(char **dir_out, tvs_store **store_out);

typedef struct {
    tvs_id *ids;            /**< sorted */
    size_t n;
    uint64_t bytes;
    size_t chunks, tensors, models;
    char *refs;             /**< "name hexid\n" per ref, in name order */
} tt_snapshot;

/** Every object id and ref of an open store. */
int tt_snapshot_take(tt_snapshot *out, tvs_store *s);
/** 1 if equal; else 0 and *why says what differs. */
int tt_snapshot_equal(const tt_snapshot *a, const tt_snapshot *b, char *why, size_t cap);
/** Ids in @p b that are not in @p a (both sorted); count and their bytes need @p s. */
size_t tt_snapshot_minus(const tt_snapshot *b, const tt_snapshot *a);
void tt_snapshot_dispose(tt_snapshot *s);

/**
 * Damage object @p id in the store at @p dir (the folder holding .tvs) by
 * XOR-ing @p mask into byte @p off (negative: from the end) of its value,
 * writing straight through liblmdb. No tvs_store of that store may be open
 * in this process.
 */
int tt_corrupt_object(const char *dir, const tvs_id *id, long off, uint8_t mask);

/** tvs_import with default options; the new model's id in @p out (may be NULL). */
int tt_import(tvs_id *out, tvs_store *s, const char *path, const char *ref);
/**
 * tvs_import of @p path as @p ref with a base and a lineage parent (either
 * may be NULL) and @p threads encoder threads (0: online CPUs).
 */
int tt_import_with(tvs_store *s, const char *path, const char *ref, const char *base,
                   const char *parent, int threads);
/** tvs_export with default options. */
int tt_export(tvs_store *s, const char *spec, const char *path);

/** Id of chunk @p chunk of tensor @p tensor_name of the model @p ref points at. */
int tt_find_chunk(tvs_id *out, tvs_store *s, const char *ref, const char *tensor_name,
                  uint32_t chunk);

/* ---- queries */

/** A plan and the read transaction it was built in. */
typedef struct {
    tvs_txn *txn;
    tvs_plan *p;
} tt_planned;

/** Plan @p q on @p s with @p o (asserts that planning succeeds). */
tt_planned tt_plan_of(tvs_store *s, const char *q, const tvs_plan_opts *o);

/** Free the plan, then end its transaction. */
void tt_planned_free(tt_planned *r);

/** A tvs_plan_exec sink appending to the tvs_buf @p payload. */
int tt_sink_buf(void *payload, const uint8_t *p, size_t n);

#endif
