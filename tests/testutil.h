/* Shared helpers for the cmocka test suites. */
#ifndef HEED_TESTUTIL_H
#define HEED_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

/* Path of a file in ../shared (beside the repository), or NULL when absent,
 * after printing a clear SKIP line: tests that need large shared data never
 * pass silently without it. */
static inline const char *tu_shared(const char *rel, char *buf, size_t n) {
    const char *roots[] = {"../shared", "../../shared", NULL};
    const char *env = getenv("HEED_SHARED");
    if (env) {
        snprintf(buf, n, "%s/%s", env, rel);
        if (access(buf, R_OK) == 0) return buf;
    }
    for (int i = 0; roots[i]; i++) {
        snprintf(buf, n, "%s/%s", roots[i], rel);
        if (access(buf, R_OK) == 0) return buf;
    }
    printf("SKIP: shared data %s is absent (set HEED_SHARED to the shared folder)\n", rel);
    return NULL;
}

#endif
