/*
 * err.h - the one way heed writes an error's message: a heed_status code
 * and a message that says where ("model.gguf: tensor 'x': ...") into the
 * caller's buffer. Every module's failure path goes through err_at (its own
 * small wrapper adds what it knows: the file, the section, the key).
 * Pure; threads: any.
 */
#ifndef HEED_ERR_H
#define HEED_ERR_H

#include <stdarg.h>
#include <stddef.h>

/* Writes "WHERE: MESSAGE" (just the message when where is NULL or "") into
 * err, cut to err_size bytes (nothing when err is NULL or err_size is 0),
 * and returns rc, so a failure is one statement: return err_at(...). */
__attribute__((format(printf, 5, 0))) int err_vat(char *err, size_t err_size, int rc, const char *where,
                                                  const char *fmt, va_list ap);
__attribute__((format(printf, 5, 6))) int err_at(char *err, size_t err_size, int rc, const char *where,
                                                 const char *fmt, ...);

#endif
