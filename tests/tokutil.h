/*
 * tokutil.h - helpers of the tokenizer suites: loading a vocabulary file,
 * decoding ids, the ../shared/vocab test vectors (.inp/.out), and hand-made
 * vocabularies (a GGUF built in memory, header and key/values, no tensors).
 */
#ifndef HEED_TEST_TOKUTIL_H
#define HEED_TEST_TOKUTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "testutil.h"
#include "heed.h"
#include "tok.h"

#define MAX_IDS 4096

typedef struct loaded {
    gguf_file *f;
    tok_vocab *v;
} loaded;

static inline loaded load_path(const char *path) {
    char err[256] = "";
    int rc = -1;
    loaded l = {gguf_open(path, &rc, err, sizeof err), NULL};
    if (!l.f) fail_msg("%s: %s", path, err);
    l.v = tok_load(l.f, &rc, err, sizeof err);
    if (!l.v) fail_msg("%s: tok_load: %s", path, err);
    assert_int_equal(rc, HEED_OK);
    return l;
}

static inline void unload(loaded *l) {
    tok_free(l->v);
    gguf_close(l->f);
}


/* Concatenated tok_bytes of ids into out (NUL-terminated); returns the length. */
static inline size_t decode_ids(const tok_vocab *v, const int32_t *ids, int n, char *out, size_t size) {
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        char buf[512];
        int k = tok_bytes(v, ids[i], buf, sizeof buf);
        assert_true(k >= 0 && (size_t)k < sizeof buf);
        assert_true(len + (size_t)k < size);
        memcpy(out + len, buf, (size_t)k);
        len += (size_t)k;
    }
    out[len] = '\0';
    return len;
}


static inline int32_t piece_id(const tok_vocab *v, const char *piece) {
    for (int32_t i = 0; i < tok_n_vocab(v); i++)
        if (strcmp(tok_piece(v, i), piece) == 0) return i;
    fail_msg("no piece '%s'", piece);
    return -1;
}


static inline char *slurp(const char *path, size_t *len) {
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    *len = fread(buf, 1, (size_t)n, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

#define VOCAB_SEP "\n__ggml_vocab_test__\n"

typedef struct vocab_case {
    const char *text;
    size_t len;
    int32_t ids[MAX_IDS];
    int n_ids;
} vocab_case;

/* Reads NAME.gguf.inp / .out into cases; returns the count, or -1 if absent. */
static inline int read_cases(const char *gguf_path, vocab_case *cases, int max, char **inp_buf, char **out_buf) {
    char path[512];
    size_t n_inp, n_out;
    snprintf(path, sizeof path, "%s.inp", gguf_path);
    *inp_buf = slurp(path, &n_inp);
    snprintf(path, sizeof path, "%s.out", gguf_path);
    *out_buf = slurp(path, &n_out);
    if (!*inp_buf || !*out_buf) return -1;
    int n = 0;
    char *s = *inp_buf, *o = *out_buf;
    for (char *e; (e = strstr(s, VOCAB_SEP)) != NULL; s = e + strlen(VOCAB_SEP)) {
        assert_true(n < max);
        char *eol = strchr(o, '\n');
        assert_non_null(eol);
        *eol = '\0';
        vocab_case *c = &cases[n++];
        c->text = s;
        c->len = (size_t)(e - s);
        c->n_ids = 0;
        for (char *q = o; *q;) {
            assert_true(c->n_ids < MAX_IDS);
            c->ids[c->n_ids++] = (int32_t)strtol(q, &q, 10);
        }
        o = eol + 1;
    }
    assert_string_equal(s, ""); /* the last element after the final separator */
    return n;
}



/* A GGUF written in memory: header, then key/values (no tensors). */
typedef struct gbuf {
    unsigned char *p;
    size_t n, cap;
    uint64_t n_kv;
} gbuf;

static inline void gb_put(gbuf *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 64;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static inline void gb_u32(gbuf *b, uint32_t x) { gb_put(b, &x, 4); }
static inline void gb_u64(gbuf *b, uint64_t x) { gb_put(b, &x, 8); }

static inline void gb_str(gbuf *b, const char *s) {
    gb_u64(b, strlen(s));
    gb_put(b, s, strlen(s));
}

static inline void gb_key(gbuf *b, const char *key, uint32_t type) {
    gb_str(b, key);
    gb_u32(b, type);
    b->n_kv++;
}

static inline void gb_kv_str(gbuf *b, const char *key, const char *val) {
    gb_key(b, key, GGUF_STRING);
    gb_str(b, val);
}

static inline void gb_kv_u32(gbuf *b, const char *key, uint32_t val) {
    gb_key(b, key, GGUF_U32);
    gb_u32(b, val);
}

static inline void gb_kv_bool(gbuf *b, const char *key, bool val) {
    unsigned char c = val;
    gb_key(b, key, GGUF_BOOL);
    gb_put(b, &c, 1);
}

static inline void gb_kv_strs(gbuf *b, const char *key, const char *const *vals, int n) {
    gb_key(b, key, GGUF_ARRAY);
    gb_u32(b, GGUF_STRING);
    gb_u64(b, (uint64_t)n);
    for (int i = 0; i < n; i++) gb_str(b, vals[i]);
}

static inline void gb_kv_f32s(gbuf *b, const char *key, const float *vals, int n) {
    gb_key(b, key, GGUF_ARRAY);
    gb_u32(b, GGUF_F32);
    gb_u64(b, (uint64_t)n);
    gb_put(b, vals, (size_t)n * 4);
}

static inline void gb_kv_i32s(gbuf *b, const char *key, const int32_t *vals, int n) {
    gb_key(b, key, GGUF_ARRAY);
    gb_u32(b, GGUF_I32);
    gb_u64(b, (uint64_t)n);
    gb_put(b, vals, (size_t)n * 4);
}

/* The whole file: header + the key/values written so far. */
static inline unsigned char *gb_file(const gbuf *b, size_t *size) {
    gbuf f = {0};
    gb_u32(&f, 0x46554747u);
    gb_u32(&f, 3);
    gb_u64(&f, 0);
    gb_u64(&f, b->n_kv);
    gb_put(&f, b->p, b->n);
    *size = f.n;
    return f.p;
}

typedef struct mem_vocab {
    unsigned char *file;
    gguf_file *f;
    tok_vocab *v;
    int rc;
    char err[256];
} mem_vocab;

static inline mem_vocab mem_load(gbuf *b) {
    mem_vocab m = {0};
    size_t size;
    m.file = gb_file(b, &size);
    m.f = gguf_open_buffer(m.file, size, "mem.gguf", &m.rc, m.err, sizeof m.err);
    if (!m.f) fail_msg("gguf_open_buffer: %s", m.err);
    m.v = tok_load(m.f, &m.rc, m.err, sizeof m.err);
    free(b->p);
    return m;
}

static inline void mem_free(mem_vocab *m) {
    tok_free(m->v);
    gguf_close(m->f);
    free(m->file);
}

#endif
