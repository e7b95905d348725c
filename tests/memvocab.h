/*
 * memvocab.h - hand-made vocabularies for the tokenizer tests: a GGUF built
 * in memory (header and key/values, no tensors) and loaded with tok_load.
 */
#ifndef HEED_TEST_MEMVOCAB_H
#define HEED_TEST_MEMVOCAB_H

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "testutil.h"
#include "tok.h"

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
