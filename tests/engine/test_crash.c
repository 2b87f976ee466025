/*
 * Crash safety: `tvs import` of a ~150 MB file is killed with SIGKILL at
 * several points; after each kill the store passes `tvs fsck`, the ref does
 * not exist (or, if the kill came after the publishing commit, the whole
 * model is there) and other models still export. Readers (exports) succeed
 * while an import runs, and gc refuses to run under it.
 *
 * Kill points are 20 ms, 100 ms, 300 ms and 1 s after the start, and the
 * moments the import has read 10%, 30% ... 100% of the file (rchar in
 * /proc/PID/io), so that kills land mid-way on a fast or a slow
 * (sanitized) build alike.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/support/support.h"

#define BIG_BYTES (150u << 20)

static char *dir, *store, *big, *small, *small_out;

static void sleep_s(double s)
{
    struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
    while (nanosleep(&ts, &ts) && errno == EINTR)
        ;
}

/* Run tvs against the test store; returns the exit code. */
static int tvs_run(tt_run *r, const char *a1, const char *a2, const char *a3, const char *a4,
                   const char *a5)
{
    const char *argv[] = { "--store", store, a1, a2, a3, a4, a5, NULL };
    cr_assert_eq(tt_tvs(r, NULL, NULL, argv), 0);
    return r->code;
}

static void tvs_ok(const char *a1, const char *a2, const char *a3, const char *a4,
                   const char *a5)
{
    tt_run r;
    int code = tvs_run(&r, a1, a2, a3, a4, a5);
    cr_assert_eq(code, 0, "tvs %s %s failed (%d, signal %d): %s", a1, a2 ? a2 : "", code, r.sig,
                 r.err);
    tt_run_dispose(&r);
}

typedef struct {
    pid_t pid;
    int done, status;
} child;

static child spawn_import_threads(const char *store_dir, const char *ref, const char *threads)
{
    const char *argv[] = { "--store", store_dir, "import", big, "--as", ref, "--threads",
                           threads, NULL };
    child c = { tt_tvs_spawn(NULL, NULL, argv), 0, 0 };
    cr_assert_gt(c.pid, 0);
    return c;
}

static child spawn_import(const char *store_dir, const char *ref)
{
    return spawn_import_threads(store_dir, ref, "0");
}

static int wait_child(child *c)
{
    while (!c->done) {
        if (waitpid(c->pid, &c->status, 0) == c->pid)
            c->done = 1;
        else
            cr_assert_eq(errno, EINTR);
    }
    return c->status;
}

static int still_running(child *c)
{
    if (!c->done && waitpid(c->pid, &c->status, WNOHANG) == c->pid)
        c->done = 1;
    return !c->done;
}

static void setup(void)
{
    dir = tt_mkdtemp();
    cr_assert_not_null(dir);
    store = tt_join(dir, "store");
    big = tt_join(dir, "big.safetensors");
    small = tt_join(dir, "small.safetensors");
    small_out = tt_join(dir, "small.out");
    tt_ok(tvs_store_init(store));
    /* 150 MiB of BF16 "weights" in 15 tensors of 10 MiB */
    tt_tensor t[15];
    char names[15][48];
    for (int i = 0; i < 15; i++) {
        snprintf(names[i], sizeof names[i], "model.layers.%d.mlp.weight", i);
        t[i] = (tt_tensor){ names[i], "BF16", 2, { 2560, 2048 } };
    }
    cr_assert_eq(tt_write_st_weights(big, t, 15, "{\"format\":\"pt\"}", 7), 0);
    tt_tensor st[] = { { "w", "BF16", 2, { 256, 256 } }, { "b", "F32", 1, { 256 } } };
    cr_assert_eq(tt_write_st_weights(small, st, 2, "{\"format\":\"pt\"}", 8), 0);
    tvs_ok("import", small, "--as", "small", NULL);
}

static void teardown(void)
{
    tt_rmtree(dir);
    free(dir);
    free(store);
    free(big);
    free(small);
    free(small_out);
    tt_leak_check();
}

TestSuite(crash, .init = setup, .fini = teardown, .timeout = 280);

static void assert_small_exports(void)
{
    char why[512];
    unlink(small_out);
    tvs_ok("export", "small", "-o", small_out, NULL);
    cr_assert_eq(tt_files_equal(small, small_out, why, sizeof why), 1, "%s", why);
}

static void assert_store_healthy(const char *when)
{
    tt_run r;
    int code = tvs_run(&r, "fsck", NULL, NULL, NULL, NULL);
    cr_assert_eq(code, 0, "%s: fsck exit %d (signal %d):\n%s%s", when, code, r.sig, r.out,
                 r.err);
    r.out[strcspn(r.out, "\n")] = 0;
    cr_log_info("%s: %s", when, r.out);
    tt_run_dispose(&r);
}

/* 0 if @p ref does not exist, 1 if it does. */
static int ref_exists(const char *ref, const char *when)
{
    tt_run r;
    int code = tvs_run(&r, "show", ref, NULL, NULL, NULL);
    cr_assert(code == 3 || code == 0, "%s: tvs show %s exit %d: %s", when, ref, code, r.err);
    tt_run_dispose(&r);
    return code == 0;
}

static void assert_big_exports(void)
{
    char *out = tt_join(dir, "big.out"), why[512];
    unlink(out);
    tvs_ok("export", "big", "-o", out, NULL);
    cr_assert_eq(tt_files_equal(big, out, why, sizeof why), 1, "%s", why);
    unlink(out);
    free(out);
}

/* Bytes child @p pid has read so far (rchar of /proc/PID/io), -1 if gone. */
static long long bytes_read(pid_t pid)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/%d/io", (int)pid);
    FILE *f = fopen(path, "r");
    long long v = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "rchar: %lld", &v) == 1)
            break;
    fclose(f);
    return v;
}

/* Start an import and kill it after @p seconds, or (if @p seconds < 0) once
 * it has read @p fraction of the big file. Returns 1 if the kill landed. */
static int import_and_kill(double seconds, double fraction, const char *when)
{
    child c = spawn_import(store, "big");
    if (seconds >= 0) {
        sleep_s(seconds);
    } else {
        long long want = (long long)(fraction * BIG_BYTES);
        for (int i = 0; i < 600000 && still_running(&c); i++) {
            long long got = bytes_read(c.pid);
            if (got < 0 && still_running(&c)) {
                /* no /proc/PID/io here: fall back to a time guess */
                cr_log_info("%s: cannot read /proc/%d/io; killing after a delay", when,
                            (int)c.pid);
                sleep_s(fraction * 0.4);
                break;
            }
            if (got >= want)
                break;
            sleep_s(0.0005);
        }
    }
    kill(c.pid, SIGKILL);
    int status = wait_child(&c);
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
        return 1;
    /* it finished first: then it must have finished well */
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s: import exit %d", when,
              WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    cr_log_info("%s: the import had already finished", when);
    tvs_ok("rm", "big", NULL, NULL, NULL);
    tvs_ok("gc", NULL, NULL, NULL, NULL);   /* or the next import reuses it all */
    return 0;
}

Test(crash, a_killed_import_leaves_a_consistent_store_without_its_ref)
{
    static const double times[] = { 0.020, 0.100, 0.300, 1.000 };
    static const double fractions[] = { 0.1, 0.3, 0.5, 0.7, 0.9, 1.0 };
    int killed = 0, n = 0;
    for (int i = 0; i < 10; i++, n++) {
        char when[96];
        double t = i < 4 ? times[i] : -1, f = i < 4 ? 0 : fractions[i - 4];
        if (t >= 0)
            snprintf(when, sizeof when, "after a kill at %.0f ms", t * 1000);
        else
            snprintf(when, sizeof when, "after a kill once %.0f%% was read", f * 100);
        int landed = import_and_kill(t, f, when);
        assert_store_healthy(when);
        if (landed && !ref_exists("big", when)) {
            killed++;
        } else if (landed) {
            /* killed after its last commit (while syncing or exiting): the
             * ref was published atomically, so the model must be whole */
            cr_log_info("%s: killed after publishing; checking the model", when);
            assert_big_exports();
            tvs_ok("rm", "big", NULL, NULL, NULL);
            tvs_ok("gc", NULL, NULL, NULL, NULL);
        }
        assert_small_exports();
    }
    cr_assert_geq(killed, 5, "only %d of %d kills landed before an import published its ref",
                  killed, n);

    /* the dead imports released the store: gc runs and reclaims their chunks */
    tvs_ok("gc", NULL, NULL, NULL, NULL);
    assert_store_healthy("after gc");
    /* and the store still takes the whole import, byte for byte */
    tvs_ok("import", big, "--as", "big", NULL);
    assert_big_exports();
    assert_store_healthy("after a complete import");
}

Test(crash, readers_succeed_while_an_import_runs_and_gc_waits_for_it)
{
    /* one encoder thread: a slower import leaves room for several readers */
    child c = spawn_import_threads(store, "big", "1");
    int overlapped = 0, gc_refused = 0;
    sleep_s(0.02);
    for (int i = 0; i < 50 && still_running(&c); i++) {
        int before = still_running(&c);
        assert_small_exports();
        if (before && still_running(&c))
            overlapped++;
        tt_run r;
        int code = tvs_run(&r, "ls", "--json", NULL, NULL, NULL);
        cr_assert_eq(code, 0, "ls during an import: %s", r.err);
        tt_run_dispose(&r);
        if (!gc_refused && still_running(&c)) {
            code = tvs_run(&r, "gc", NULL, NULL, NULL, NULL);
            /* 7 = EBUSY; 0 if the import had not taken the lock yet or was done */
            cr_assert(code == 7 || code == 0, "gc during an import: exit %d: %s", code, r.err);
            gc_refused |= code == 7;
            if (code == 7)
                cr_assert(strstr(r.err, "import in progress"), "gc said: %s", r.err);
            tt_run_dispose(&r);
        }
    }
    int status = wait_child(&c);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the import failed while readers ran (status %d)", status);
    cr_assert_gt(overlapped, 0, "no export ran entirely during the import");
    cr_assert(gc_refused || overlapped < 3, "gc never refused during a long import");
    cr_log_info("%d exports ran during the import; gc refused: %d", overlapped, gc_refused);
    assert_store_healthy("after the import");
    tt_run r;
    cr_assert_eq(tvs_run(&r, "show", "big", NULL, NULL, NULL), 0);
    tt_run_dispose(&r);
}
