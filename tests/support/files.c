/*
 * Test fixtures: strings, temporary folders, whole-file reads and writes,
 * byte-for-byte comparison of files and of folder trees, deterministic data
 * (tests/support/support.h).
 */
#include "tests/support/support.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

void tt_leak_check(void)
{
#if defined(__SANITIZE_ADDRESS__)
    if (__lsan_do_recoverable_leak_check())
        cr_log_error("memory leaked during this test: see the LeakSanitizer report above");
#endif
}

char *tt_fmt(const char *fmt, ...)
{
    va_list ap;
    char *s = NULL;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    return s;
}

char *tt_join(const char *a, const char *b) { return tt_fmt("%s/%s", a, b); }

char *tt_mkdtemp(void)
{
    char *p = strdup("/tmp/tvs-test-XXXXXX");
    if (p && !mkdtemp(p)) {
        free(p);
        return NULL;
    }
    return p;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (flag == FTW_DP) {
        chmod(path, 0700);
        return rmdir(path);
    }
    return unlink(path);
}

int tt_rmtree(const char *path)
{
    if (!path)
        return 0;
    return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int tt_mkdirs(const char *path)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, 0755) && errno != EEXIST)
            return -1;
        *s = '/';
    }
    return mkdir(p, 0755) && errno != EEXIST ? -1 : 0;
}

int tt_write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = (n == 0 || fwrite(p, 1, n, f) == n);
    ok &= fclose(f) == 0;
    return ok ? 0 : -1;
}

int tt_write_text(const char *path, const char *s)
{
    return tt_write_file(path, s, strlen(s));
}

uint8_t *tt_read_file(const char *path, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    struct stat st;
    if (fstat(fd, &st)) {
        close(fd);
        return NULL;
    }
    size_t n = (size_t)st.st_size, got = 0;
    uint8_t *p = malloc(n + 1);
    while (p && got < n) {
        ssize_t r = read(fd, p + got, n - got);
        if (r <= 0) {
            free(p);
            p = NULL;
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    if (!p)
        return NULL;
    p[n] = 0;
    if (len)
        *len = n;
    return p;
}

int tt_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

int tt_files_equal(const char *a, const char *b, char *why, size_t cap)
{
    size_t na, nb;
    uint8_t *pa = tt_read_file(a, &na), *pb = tt_read_file(b, &nb);
    int rc;
    if (!pa || !pb) {
        snprintf(why, cap, "cannot read %s", !pa ? a : b);
        rc = -1;
    } else if (na != nb) {
        snprintf(why, cap, "%s is %zu bytes, %s is %zu", a, na, b, nb);
        rc = 0;
    } else {
        rc = 1;
        for (size_t i = 0; i < na; i++)
            if (pa[i] != pb[i]) {
                snprintf(why, cap, "%s and %s differ at byte %zu (%02x vs %02x)", a, b, i,
                         pa[i], pb[i]);
                rc = 0;
                break;
            }
    }
    free(pa);
    free(pb);
    return rc;
}

typedef struct {
    char **names;
    size_t n, cap;
    int err;
} name_list;

static int add_name(name_list *l, const char *s)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 32;
        char **nn = realloc(l->names, cap * sizeof *nn);
        if (!nn)
            return -1;
        l->names = nn;
        l->cap = cap;
    }
    if (!(l->names[l->n] = strdup(s)))
        return -1;
    l->n++;
    return 0;
}

static int list_rec(name_list *l, const char *root, const char *rel)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s%s%s", root, *rel ? "/" : "", rel);
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char sub[4096], full[8192];
        struct stat st;
        snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", e->d_name);
        snprintf(full, sizeof full, "%s/%s", root, sub);
        if (lstat(full, &st))
            rc = -1;
        else if (S_ISDIR(st.st_mode))
            rc = list_rec(l, root, sub);
        else
            rc = add_name(l, sub);
    }
    closedir(d);
    return rc;
}

static int str_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int tt_list_files(char ***out, size_t *n, const char *dir)
{
    name_list l = { 0 };
    int rc = list_rec(&l, dir, "");
    if (rc) {
        tt_free_list(l.names, l.n);
        return rc;
    }
    if (l.n)
        qsort(l.names, l.n, sizeof *l.names, str_cmp);
    *out = l.names;
    *n = l.n;
    return 0;
}

void tt_free_list(char **list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

int tt_trees_equal(const char *a, const char *b, char *why, size_t cap)
{
    char **la = NULL, **lb = NULL;
    size_t na = 0, nb = 0;
    int rc = 1;
    if (tt_list_files(&la, &na, a) || tt_list_files(&lb, &nb, b)) {
        snprintf(why, cap, "cannot list %s or %s", a, b);
        rc = 0;
        goto out;
    }
    for (size_t i = 0; rc && i < na && i < nb; i++)
        if (strcmp(la[i], lb[i])) {
            snprintf(why, cap, "file sets differ: '%s' in %s vs '%s' in %s", la[i], a, lb[i],
                     b);
            rc = 0;
        }
    if (rc && na != nb) {
        snprintf(why, cap, "%s holds %zu files, %s holds %zu (first extra: %s)", a, na, b, nb,
                 na > nb ? la[nb] : lb[na]);
        rc = 0;
    }
    for (size_t i = 0; rc && i < na; i++) {
        char *pa = tt_join(a, la[i]), *pb = tt_join(b, lb[i]);
        rc = tt_files_equal(pa, pb, why, cap) == 1;
        free(pa);
        free(pb);
    }
out:
    tt_free_list(la, na);
    tt_free_list(lb, nb);
    return rc;
}

int tt_count_names(const char *dir, const char *needle)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += strstr(e->d_name, needle) != NULL;
    closedir(d);
    return n;
}

/* ---- deterministic data */

uint32_t tt_lcg(uint64_t *state)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*state >> 32);
}

void tt_fill_random(void *p, size_t n, uint64_t seed)
{
    uint8_t *b = p;
    uint64_t st = seed;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        uint32_t v = tt_lcg(&st);
        memcpy(b + i, &v, 4);
    }
    for (uint32_t v = tt_lcg(&st); i < n; i++, v >>= 8)
        b[i] = (uint8_t)v;
}

void tt_fill_bf16(void *p, size_t n, uint64_t seed)
{
    uint8_t *b = p;
    uint64_t st = seed;
    for (size_t i = 0; i < n; i++) {
        uint32_t r = tt_lcg(&st);
        /* |w| mostly in [2^-9, 2^-4): a handful of exponents, random mantissa */
        uint32_t sign = r >> 31, e = 118 + (r >> 24 & 7) % 6 - ((r >> 27 & 3) == 0);
        uint16_t v = (uint16_t)(sign << 15 | e << 7 | (r & 0x7f));
        b[2 * i] = (uint8_t)v;
        b[2 * i + 1] = (uint8_t)(v >> 8);
    }
}
