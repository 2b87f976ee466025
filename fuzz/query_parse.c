/*
 * Fuzz target: query text through tvs_query_parse (query/parse.h).
 *
 * A rejected query must come back as TVS_EINVAL (or TVS_ENOMEM) with the
 * tree left empty. An accepted one is printed with tvs_ast_print; the
 * printed text must parse again and print to the same text. The one
 * exception allowed: the canonical form is fully parenthesized and
 * spaced, so a query near the limits may print to text over the length or
 * nesting limit (a sum of 150 terms prints 150 parentheses deep); that
 * re-parse may fail, but only with the limit's error.
 *
 * fuzz/CMakeLists.txt links every target with tvs_engine only; the parser
 * lives in tvs_query, so it is compiled in here (it needs nothing but
 * format/base).
 */
#include "fuzz/fuzz.h"

#include <string.h>

#include "query/parse.h"

/* A failed parse of printed text is acceptable only at a limit. */
static int at_a_limit(void)
{
    const char *m = tvs_errmsg();
    return strstr(m, "query nested") != NULL || strstr(m, "-byte limit") != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tvs_ast a;
    int rc = tvs_query_parse(&a, (const char *)data, size);
    if (rc) {
        FUZZ_CHECK(rc == TVS_EINVAL || rc == TVS_ENOMEM);
        FUZZ_CHECK(a.root == NULL && a.arena == NULL);
        return 0;
    }
    FUZZ_CHECK(a.root != NULL);
    FUZZ_CHECK(a.arena_len <= a.arena_cap);

    tvs_buf once = TVS_BUF_INIT, twice = TVS_BUF_INIT;
    FUZZ_CHECK(tvs_ast_print(&once, a.root) == 0);
    FUZZ_CHECK(once.len > 0 && memchr(once.ptr, 0, once.len) == NULL);

    tvs_ast b;
    rc = tvs_query_parse(&b, (const char *)once.ptr, once.len);
    if (rc) {
        if (!at_a_limit())
            fprintf(stderr, "printed \"%.*s\" does not parse: %s\n", (int)TVS_MIN(once.len, 300),
                    (const char *)once.ptr, tvs_errmsg());
        FUZZ_CHECK(rc == TVS_EINVAL && at_a_limit());
    } else {
        FUZZ_CHECK(tvs_ast_print(&twice, b.root) == 0);
        if (twice.len != once.len || memcmp(twice.ptr, once.ptr, once.len) != 0)
            fprintf(stderr, "printed \"%.*s\", then \"%.*s\"\n", (int)TVS_MIN(once.len, 300),
                    (const char *)once.ptr, (int)TVS_MIN(twice.len, 300),
                    (const char *)twice.ptr);
        FUZZ_CHECK(twice.len == once.len && memcmp(twice.ptr, once.ptr, once.len) == 0);
        tvs_ast_dispose(&b);
    }
    tvs_buf_dispose(&once);
    tvs_buf_dispose(&twice);
    tvs_ast_dispose(&a);
    return 0;
}
