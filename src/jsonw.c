/*
 * jsonw.c - streaming JSON writer (see jsonw.h).
 */
#include "jsonw.h"

#include <math.h>
#include <string.h>

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

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    size_t len;
    unsigned min;
    if (c < 0x80) return 1;
    if (c >= 0xC2 && c <= 0xDF) len = 2, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, min = 0x10000;
    else return 0;
    if (len > n) return 0;
    unsigned cp = c & (0x7F >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

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
            size_t n = utf8_len(p + i, len - i);
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
