/*
 * jsonw - a streaming JSON writer for the CLI's machine output.
 *
 * Attention dumps hold millions of numbers, so they are written as they are
 * produced instead of being built as a document tree first. The writer keeps
 * commas and nesting right, escapes strings, replaces invalid UTF-8 with
 * U+FFFD (output is always valid JSON), and writes non-finite floats as null.
 * Floats use 9 significant digits: enough to round-trip any float32.
 *
 * Not a parser (tests parse with jansson). Owns nothing; one writer per stream.
 */
#ifndef HEED_JSONW_H
#define HEED_JSONW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define JSONW_MAX_DEPTH 32

typedef struct jsonw {
    FILE *f;
    int depth;
    bool need_comma[JSONW_MAX_DEPTH];
    bool after_key;
} jsonw;

void jw_init(jsonw *w, FILE *f);
void jw_obj(jsonw *w);     /* { */
void jw_obj_end(jsonw *w); /* } */
void jw_arr(jsonw *w);     /* [ */
void jw_arr_end(jsonw *w); /* ] */
void jw_key(jsonw *w, const char *key);
void jw_str(jsonw *w, const char *s, size_t len);
void jw_cstr(jsonw *w, const char *s);
void jw_int(jsonw *w, int64_t v);
void jw_float(jsonw *w, double v);
void jw_bool(jsonw *w, bool v);
void jw_null(jsonw *w);

#endif
