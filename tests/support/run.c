/*
 * Running the tvs binary from a test: fork/exec with an adjusted
 * environment and working folder; stdout and stderr are captured in memory
 * files so that binary output (export to "-") comes back intact
 * (tests/support/support.h).
 */
#include "tests/support/support.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_ARGS 64

static void child_env(const char *const *env)
{
    int store_given = 0;
    for (size_t i = 0; env && env[i]; i++)
        store_given |= strncmp(env[i], "TVS_STORE", 9) == 0;
    if (!store_given)
        unsetenv("TVS_STORE");
    for (size_t i = 0; env && env[i]; i++) {
        const char *eq = strchr(env[i], '=');
        if (!eq) {
            unsetenv(env[i]);
            continue;
        }
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(eq - env[i]), env[i]);
        setenv(name, eq + 1, 1);
    }
}

/* Runs in the child: never returns. */
static void exec_tvs(const char *const *env, const char *cwd, const char *const *argv,
                     int out_fd, int err_fd)
{
    const char *av[MAX_ARGS + 2];
    size_t n = 0;
    av[n++] = TVS_BIN;
    for (size_t i = 0; argv[i] && n < MAX_ARGS + 1; i++)
        av[n++] = argv[i];
    av[n] = NULL;
    if (dup2(out_fd, STDOUT_FILENO) < 0 || dup2(err_fd, STDERR_FILENO) < 0)
        _exit(126);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0)
        dup2(devnull, STDIN_FILENO);
    if (cwd && chdir(cwd))
        _exit(126);
    child_env(env);
    execv(TVS_BIN, (char *const *)av);
    _exit(127);
}

static char *slurp(int fd, size_t *len)
{
    off_t end = lseek(fd, 0, SEEK_END);
    char *p = malloc(end > 0 ? (size_t)end + 1 : 1);
    size_t got = 0;
    if (!p)
        return NULL;
    if (end > 0 && lseek(fd, 0, SEEK_SET) == 0) {
        while (got < (size_t)end) {
            ssize_t r = read(fd, p + got, (size_t)end - got);
            if (r <= 0)
                break;
            got += (size_t)r;
        }
    }
    p[got] = 0;
    *len = got;
    return p;
}

int tt_tvs(tt_run *r, const char *const *env, const char *cwd, const char *const *argv)
{
    memset(r, 0, sizeof *r);
    int out = memfd_create("tvs-stdout", MFD_CLOEXEC);
    int err = memfd_create("tvs-stderr", MFD_CLOEXEC);
    if (out < 0 || err < 0) {
        if (out >= 0)
            close(out);
        if (err >= 0)
            close(err);
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        exec_tvs(env, cwd, argv, out, err);
    int status = 0, rc = 0;
    if (pid < 0) {
        rc = -1;
    } else {
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
            ;
        if (WIFEXITED(status)) {
            r->code = WEXITSTATUS(status);
        } else {
            r->code = -1;
            r->sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
        }
        r->out = slurp(out, &r->out_len);
        r->err = slurp(err, &r->err_len);
    }
    close(out);
    close(err);
    return rc;
}

int tt_tvsl(tt_run *r, const char *const *env, const char *cwd, ...)
{
    const char *argv[MAX_ARGS + 1];
    size_t n = 0;
    va_list ap;
    va_start(ap, cwd);
    for (const char *a; n < MAX_ARGS && (a = va_arg(ap, const char *));)
        argv[n++] = a;
    va_end(ap);
    argv[n] = NULL;
    return tt_tvs(r, env, cwd, argv);
}

void tt_run_dispose(tt_run *r)
{
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

pid_t tt_tvs_spawn(const char *const *env, const char *cwd, const char *const *argv)
{
    int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null < 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        exec_tvs(env, cwd, argv, null, null);
    close(null);
    return pid;
}

int tt_count_lines(const char *s)
{
    int n = 0;
    for (; s && *s; s++)
        n += *s == '\n';
    return n;
}

tt_run tt_cli_va(const char *const *env, int must_succeed, const char *first, va_list ap)
{
    const char *argv[MAX_ARGS + 1];
    size_t n = 0;
    for (const char *a = first; a && n < MAX_ARGS; a = va_arg(ap, const char *))
        argv[n++] = a;
    argv[n] = NULL;
    tt_run r;
    cr_assert_eq(tt_tvs(&r, env, NULL, argv), 0, "cannot run %s", TVS_BIN);
    cr_assert_eq(r.sig, 0, "tvs %s died of signal %d: %s", first, r.sig, r.err);
    if (must_succeed)
        cr_assert_eq(r.code, 0, "tvs %s exited %d\nstdout: %s\nstderr: %s", first, r.code,
                     r.out, r.err);
    return r;
}

tt_run tt_cli(const char *const *env, int must_succeed, const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    tt_run r = tt_cli_va(env, must_succeed, first, ap);
    va_end(ap);
    return r;
}

void tt_cli_quiet(const char *const *env, const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    tt_run r = tt_cli_va(env, 1, first, ap);
    va_end(ap);
    tt_run_dispose(&r);
}

char *tt_cli_store(char **env_store, const char *env[2])
{
    char *dir = tt_mkdtemp();
    cr_assert_not_null(dir);
    tt_ok(tvs_store_init(dir));
    *env_store = tt_fmt("TVS_STORE=%s", dir);
    env[0] = *env_store;
    env[1] = NULL;
    return dir;
}
