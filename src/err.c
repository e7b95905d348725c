/*
 * err.c - error messages with their place (contract in err.h).
 */
#include "err.h"

#include <stdio.h>

int err_vat(char *err, size_t err_size, int rc, const char *where, const char *fmt, va_list ap) {
    if (!err || !err_size) return rc;
    int n = where && where[0] ? snprintf(err, err_size, "%s: ", where) : 0;
    if (n >= 0 && (size_t)n < err_size) vsnprintf(err + n, err_size - (size_t)n, fmt, ap);
    return rc;
}

int err_at(char *err, size_t err_size, int rc, const char *where, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    err_vat(err, err_size, rc, where, fmt, ap);
    va_end(ap);
    return rc;
}
