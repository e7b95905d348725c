/*
 * jsonw.c - streaming JSON writer (see jsonw.h).
 */
#include "jsonw.h"

#include <math.h>
#include <string.h>

#include "utf8.h"

void jw_init(jsonw *w, FILE *f) {
    memset(w, 0, sizeof *w);
    w->f = f;
}

/* Separator before a value: a comma unless it is the first in its container
 * or follows a key. */
static void sep(jsonw *w) {
    if (w->after_key) {
        w->after_key = false;
        return;
    }
    if (w->depth > 0) {
        if (w->need_comma[w->depth - 1]) fputc(',', w->f);
        w->need_comma[w->depth - 1] = true;
    }
}

static void open(jsonw *w, char c) {
    sep(w);
    fputc(c, w->f);
    if (w->depth < JSONW_MAX_DEPTH) w->need_comma[w->depth] = false;
    w->depth++;
}

static void close_(jsonw *w, char c) {
    if (w->depth > 0) w->depth--;
    fputc(c, w->f);
}

void jw_obj(jsonw *w) { open(w, '{'); }
void jw_obj_end(jsonw *w) { close_(w, '}'); }
void jw_arr(jsonw *w) { open(w, '['); }
void jw_arr_end(jsonw *w) { close_(w, ']'); }

static void write_str(FILE *f, const char *s, size_t len) {
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', f);
    for (size_t i = 0; i < len;) {
        unsigned c = p[i];
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc((int)c, f);
            i++;
        } else if (c < 0x20) {
            switch (c) {
            case '\n': fputs("\\n", f); break;
            case '\r': fputs("\\r", f); break;
            case '\t': fputs("\\t", f); break;
            default: fprintf(f, "\\u%04x", c);
            }
            i++;
        } else {
            uint32_t cp;
            size_t n = (size_t)utf8_decode(p + i, len - i, &cp);
            if (n == 0) {
                fputs("\xEF\xBF\xBD", f); /* U+FFFD for a byte that is not UTF-8 */
                i++;
            } else {
                fwrite(p + i, 1, n, f);
                i += n;
            }
        }
    }
    fputc('"', f);
}

void jw_key(jsonw *w, const char *key) {
    sep(w);
    write_str(w->f, key, strlen(key));
    fputc(':', w->f);
    w->after_key = true;
}

void jw_str(jsonw *w, const char *s, size_t len) {
    sep(w);
    write_str(w->f, s ? s : "", s ? len : 0);
}

void jw_cstr(jsonw *w, const char *s) { jw_str(w, s, s ? strlen(s) : 0); }

void jw_int(jsonw *w, int64_t v) {
    sep(w);
    fprintf(w->f, "%lld", (long long)v);
}

void jw_float(jsonw *w, double v) {
    sep(w);
    if (isfinite(v)) fprintf(w->f, "%.9g", v);
    else fputs("null", w->f);
}

void jw_bool(jsonw *w, bool v) {
    sep(w);
    fputs(v ? "true" : "false", w->f);
}

void jw_null(jsonw *w) {
    sep(w);
    fputs("null", w->f);
}
