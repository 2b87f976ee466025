/**
 * @file engine/outfile.h
 * @brief Writing a result file safely: into a temporary name beside it,
 *        renamed into place only when everything was written ("-" = stdout).
 *        Used by export and by the query CLI, so a failure never leaves a
 *        half-written file under the requested name.
 */
#ifndef TVS_ENGINE_OUTFILE_H
#define TVS_ENGINE_OUTFILE_H

#include "format/base.h"

typedef struct {
    int fd;
    int to_stdout;
    char path[4096];
    char tmp[4200];
} tvs_outfile;

/** Open @p path for writing (through a temporary name). @return 0 or TVS_EIO */
int tvs_outfile_open(tvs_outfile *o, const char *path);
/** Write all @p n bytes. @return 0 or TVS_EIO */
int tvs_outfile_write(tvs_outfile *o, const void *p, size_t n);
/**
 * Finish: with @p rc == 0, close and rename into place; otherwise (or if
 * that fails) remove the temporary file. @return the first error, or 0.
 */
int tvs_outfile_close(tvs_outfile *o, int rc);

#endif
