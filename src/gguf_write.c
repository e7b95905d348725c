/*
 * gguf_write.c - the GGUF v3 writer (see gguf_write.h).
 *
 * The metadata and tensor-info sections are built in memory as byte
 * buffers, already serialized little-endian; tensor offsets are assigned at
 * add time (each aligned), so the header can be written before any data.
 */
#include "err.h"
#include "gguf_write.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "heed.h"

typedef struct wbuf {
    uint8_t *p;
    size_t n, cap;
} wbuf;

typedef struct wtensor {
    uint64_t size;
    const void *data;
} wtensor;

struct gguf_writer {
    uint32_t alignment;
    uint64_t n_kv, n_tensors;
    wbuf kv, ti;       /* serialized metadata pairs, tensor infos */
    wtensor *tensors;  /* sizes (and optional data) in add order */
    size_t cap_tensors;
    uint64_t data_size; /* running end of the data section (aligned) */
    FILE *f;
    uint64_t next;     /* index of the next tensor gguf_writer_put writes */
    int rc;
    char err[256];
};

__attribute__((format(printf, 3, 4))) static int wfail(gguf_writer *w, int rc, const char *fmt, ...) {
    if (w->rc) return w->rc;
    va_list ap;
    va_start(ap, fmt);
    w->rc = err_vat(w->err, sizeof w->err, rc, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

static int put(gguf_writer *w, wbuf *b, const void *src, size_t n) {
    if (w->rc) return w->rc;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) return wfail(w, HEED_ERR_NOMEM, "out of memory");
        b->p = p;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, src, n); /* src may be NULL when n is 0 */
    b->n += n;
    return HEED_OK;
}

static int put_le(gguf_writer *w, wbuf *b, uint64_t v, int bytes) {
    uint8_t t[8];
    for (int i = 0; i < bytes; i++) t[i] = (uint8_t)(v >> (8 * i));
    return put(w, b, t, (size_t)bytes);
}

static int put_str(gguf_writer *w, wbuf *b, const char *s) {
    size_t n = strlen(s);
    put_le(w, b, n, 8);
    return put(w, b, s, n);
}

gguf_writer *gguf_writer_new(uint32_t alignment) {
    if (alignment == 0) alignment = 32;
    if (alignment & (alignment - 1)) return NULL;
    gguf_writer *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->alignment = alignment;
    if (alignment != 32) gguf_writer_kv_u32(w, "general.alignment", alignment);
    return w;
}

void gguf_writer_free(gguf_writer *w) {
    if (!w) return;
    if (w->f) fclose(w->f);
    free(w->kv.p);
    free(w->ti.p);
    free(w->tensors);
    free(w);
}

const char *gguf_writer_error(const gguf_writer *w) {
    return w ? w->err : "no writer";
}

/* key and value type; the caller appends the value */
static int kv_head(gguf_writer *w, const char *key, int vtype) {
    if (w->rc) return w->rc;
    if (!key || !*key) return wfail(w, HEED_ERR_INVALID_ARG, "empty key");
    if (w->f) return wfail(w, HEED_ERR_INVALID_ARG, "key '%s' added after gguf_writer_begin", key);
    put_str(w, &w->kv, key);
    put_le(w, &w->kv, (uint64_t)vtype, 4);
    w->n_kv++;
    return w->rc;
}

#define KV_INT(name, ctype, vt, bytes)                                  \
    int gguf_writer_kv_##name(gguf_writer *w, const char *key, ctype v) { \
        if (kv_head(w, key, vt)) return w->rc;                            \
        return put_le(w, &w->kv, (uint64_t)v, bytes);                     \
    }
KV_INT(u8, uint8_t, GGUF_U8, 1)
KV_INT(i8, int8_t, GGUF_I8, 1)
KV_INT(u16, uint16_t, GGUF_U16, 2)
KV_INT(i16, int16_t, GGUF_I16, 2)
KV_INT(u32, uint32_t, GGUF_U32, 4)
KV_INT(i32, int32_t, GGUF_I32, 4)
KV_INT(u64, uint64_t, GGUF_U64, 8)
KV_INT(i64, int64_t, GGUF_I64, 8)
#undef KV_INT

int gguf_writer_kv_f32(gguf_writer *w, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, sizeof u);
    if (kv_head(w, key, GGUF_F32)) return w->rc;
    return put_le(w, &w->kv, u, 4);
}

int gguf_writer_kv_f64(gguf_writer *w, const char *key, double v) {
    uint64_t u;
    memcpy(&u, &v, sizeof u);
    if (kv_head(w, key, GGUF_F64)) return w->rc;
    return put_le(w, &w->kv, u, 8);
}

int gguf_writer_kv_bool(gguf_writer *w, const char *key, bool v) {
    if (kv_head(w, key, GGUF_BOOL)) return w->rc;
    return put_le(w, &w->kv, v ? 1 : 0, 1);
}

int gguf_writer_kv_str(gguf_writer *w, const char *key, const char *v) {
    if (!v) return wfail(w, HEED_ERR_INVALID_ARG, "key '%s': NULL string", key ? key : "");
    if (kv_head(w, key, GGUF_STRING)) return w->rc;
    return put_str(w, &w->kv, v);
}

static const uint8_t vt_size[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

int gguf_writer_kv_arr(gguf_writer *w, const char *key, int vtype, const void *data, uint64_t n) {
    if (vtype < 0 || vtype >= GGUF_VTYPE_COUNT || vt_size[vtype] == 0 || (n && !data))
        return wfail(w, HEED_ERR_INVALID_ARG, "key '%s': array of value type %d", key ? key : "", vtype);
    if (n > SIZE_MAX / vt_size[vtype]) return wfail(w, HEED_ERR_INVALID_ARG, "key '%s': array too long", key);
    if (kv_head(w, key, GGUF_ARRAY)) return w->rc;
    put_le(w, &w->kv, (uint64_t)vtype, 4);
    put_le(w, &w->kv, n, 8);
    /* host order is little-endian on every target heed builds for (x86-64, arm64) */
    return put(w, &w->kv, data, (size_t)n * vt_size[vtype]);
}

int gguf_writer_kv_arr_str(gguf_writer *w, const char *key, const char *const *strs, uint64_t n) {
    if (n && !strs) return wfail(w, HEED_ERR_INVALID_ARG, "key '%s': NULL strings", key ? key : "");
    if (kv_head(w, key, GGUF_ARRAY)) return w->rc;
    put_le(w, &w->kv, GGUF_STRING, 4);
    put_le(w, &w->kv, n, 8);
    for (uint64_t i = 0; i < n && !w->rc; i++) {
        if (!strs[i]) return wfail(w, HEED_ERR_INVALID_ARG, "key '%s': string %llu is NULL", key,
                                   (unsigned long long)i);
        put_str(w, &w->kv, strs[i]);
    }
    return w->rc;
}

static uint64_t align_up(uint64_t v, uint64_t a) {
    return (v + a - 1) / a * a;
}

int gguf_writer_add_tensor(gguf_writer *w, const char *name, int n_dims, const int64_t *ne, int type,
                           const void *data) {
    if (w->rc) return w->rc;
    if (w->f) return wfail(w, HEED_ERR_INVALID_ARG, "tensor '%s' added after gguf_writer_begin", name);
    if (!name || !*name || n_dims < 1 || n_dims > GGUF_MAX_DIMS || !ne)
        return wfail(w, HEED_ERR_INVALID_ARG, "tensor '%s': bad name or n_dims %d", name ? name : "", n_dims);
    size_t bb = gguf_type_block_bytes(type);
    int be = gguf_type_block_elems(type);
    if (!bb || !be) return wfail(w, HEED_ERR_INVALID_ARG, "tensor '%s': unknown type %d", name, type);
    uint64_t n_rows = 1;
    for (int i = 0; i < n_dims; i++) {
        if (ne[i] < 1) return wfail(w, HEED_ERR_INVALID_ARG, "tensor '%s': dimension %d is %lld", name, i,
                                    (long long)ne[i]);
        if (i) n_rows *= (uint64_t)ne[i];
    }
    if (ne[0] % be)
        return wfail(w, HEED_ERR_INVALID_ARG, "tensor '%s': row of %lld is not a multiple of the %s block (%d)",
                     name, (long long)ne[0], gguf_type_name(type), be);
    uint64_t size = (uint64_t)ne[0] / (uint64_t)be * bb * n_rows;
    if (w->n_tensors == w->cap_tensors) {
        size_t cap = w->cap_tensors ? 2 * w->cap_tensors : 64;
        wtensor *t = realloc(w->tensors, cap * sizeof *t);
        if (!t) return wfail(w, HEED_ERR_NOMEM, "out of memory");
        w->tensors = t;
        w->cap_tensors = cap;
    }
    put_str(w, &w->ti, name);
    put_le(w, &w->ti, (uint64_t)n_dims, 4);
    for (int i = 0; i < n_dims; i++) put_le(w, &w->ti, (uint64_t)ne[i], 8);
    put_le(w, &w->ti, (uint64_t)type, 4);
    put_le(w, &w->ti, w->data_size, 8);
    if (w->rc) return w->rc;
    w->tensors[w->n_tensors++] = (wtensor){size, data};
    w->data_size = align_up(w->data_size + size, w->alignment);
    return HEED_OK;
}

static int write_bytes(gguf_writer *w, const void *p, size_t n) {
    if (n && fwrite(p, 1, n, w->f) != n) return wfail(w, HEED_ERR_IO, "write failed");
    return HEED_OK;
}

static int write_zeros(gguf_writer *w, uint64_t n) {
    static const uint8_t zero[64];
    while (n && !w->rc) {
        size_t k = n < sizeof zero ? (size_t)n : sizeof zero;
        write_bytes(w, zero, k);
        n -= k;
    }
    return w->rc;
}

int gguf_writer_begin(gguf_writer *w, const char *path) {
    if (w->rc) return w->rc;
    if (w->f) return wfail(w, HEED_ERR_INVALID_ARG, "gguf_writer_begin called twice");
    w->f = fopen(path, "wb");
    if (!w->f) return wfail(w, HEED_ERR_IO, "%s: cannot create", path);
    wbuf h = {0};
    put(w, &h, "GGUF", 4);
    put_le(w, &h, 3, 4);
    put_le(w, &h, w->n_tensors, 8);
    put_le(w, &h, w->n_kv, 8);
    if (!w->rc) write_bytes(w, h.p, h.n);
    uint64_t end = h.n + w->kv.n + w->ti.n;
    free(h.p);
    write_bytes(w, w->kv.p, w->kv.n);
    write_bytes(w, w->ti.p, w->ti.n);
    return write_zeros(w, align_up(end, w->alignment) - end);
}

int gguf_writer_put(gguf_writer *w, const void *data, size_t n_bytes) {
    if (w->rc) return w->rc;
    if (!w->f) return wfail(w, HEED_ERR_INVALID_ARG, "gguf_writer_put before gguf_writer_begin");
    if (w->next >= w->n_tensors) return wfail(w, HEED_ERR_INVALID_ARG, "more tensor data than tensors");
    const wtensor *t = &w->tensors[w->next];
    if (n_bytes != t->size)
        return wfail(w, HEED_ERR_INVALID_ARG, "tensor %llu: %zu bytes given, %llu expected",
                     (unsigned long long)w->next, n_bytes, (unsigned long long)t->size);
    write_bytes(w, data, n_bytes);
    w->next++;
    return write_zeros(w, align_up(t->size, w->alignment) - t->size);
}

int gguf_writer_end(gguf_writer *w) {
    if (w->rc) return w->rc;
    if (!w->f) return wfail(w, HEED_ERR_INVALID_ARG, "gguf_writer_end before gguf_writer_begin");
    if (w->next != w->n_tensors)
        return wfail(w, HEED_ERR_INVALID_ARG, "%llu of %llu tensors written", (unsigned long long)w->next,
                     (unsigned long long)w->n_tensors);
    int bad = fclose(w->f);
    w->f = NULL;
    return bad ? wfail(w, HEED_ERR_IO, "close failed") : HEED_OK;
}

int gguf_writer_write_file(gguf_writer *w, const char *path) {
    if (gguf_writer_begin(w, path)) return w->rc;
    for (uint64_t i = 0; i < w->n_tensors && !w->rc; i++) {
        if (!w->tensors[i].data) return wfail(w, HEED_ERR_INVALID_ARG, "tensor %llu has no data",
                                              (unsigned long long)i);
        gguf_writer_put(w, w->tensors[i].data, (size_t)w->tensors[i].size);
    }
    return gguf_writer_end(w);
}
