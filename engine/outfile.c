/* Temporary-then-rename output files (engine/outfile.h). */
#include "engine/outfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int tvs_outfile_open(tvs_outfile *o, const char *path)
{
    o->to_stdout = strcmp(path, "-") == 0;
    o->fd = STDOUT_FILENO;
    snprintf(o->path, sizeof o->path, "%s", path);
    if (o->to_stdout)
        return 0;
    snprintf(o->tmp, sizeof o->tmp, "%s.tvs-tmp-%ld", path, (long)getpid());
    o->fd = open(o->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (o->fd < 0)
        return tvs__fail(TVS_EIO, "cannot create %s: %s", o->tmp, strerror(errno));
    return 0;
}

int tvs_outfile_write(tvs_outfile *o, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = write(o->fd, b, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return tvs__fail(TVS_EIO, "%s: write: %s", o->path, strerror(errno));
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

int tvs_outfile_close(tvs_outfile *o, int rc)
{
    if (o->to_stdout)
        return rc;
    if (close(o->fd) && !rc)
        rc = tvs__fail(TVS_EIO, "%s: %s", o->tmp, strerror(errno));
    if (!rc && rename(o->tmp, o->path))
        rc = tvs__fail(TVS_EIO, "cannot rename %s to %s: %s", o->tmp, o->path,
                       strerror(errno));
    if (rc)
        unlink(o->tmp);
    return rc;
}
