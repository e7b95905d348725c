/*
 * safetensors.c - the checked safetensors reader (see safetensors.h for the
 * file layout).
 *
 * The 8-byte length is checked against the named limit and the file size
 * before jansson sees a byte; jansson then parses exactly those N bytes
 * (rejecting duplicate names). Each tensor entry is checked on its own
 * (dtype, shape, offsets, size agreement, alignment), then all of them
 * together (no overlaps, no duplicate names). Every product of file values
 * goes through a checked multiply. Names are copied, so the JSON tree is
 * freed before st_open returns; data pointers point into the mapping.
 */
#include "err.h"
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fmap.h"
#include "heed.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c reads little-endian data in place: port it before using a big-endian host"
#endif

#define ST_LEN_BYTES 8
#define ST_META_KEY "__metadata__"
#define ST_NAME_SHOW 64 /* characters of a tensor name or dtype quoted in messages */

/* The private object: st_file first, so an st_file * converts back. */
struct st_impl {
    st_file pub;
    size_t map_len;        /* nonzero when pub.map is our own mmap */
    st_tensor **by_name;   /* (n_tensors) sorted by name, for st_find */
};

static const struct {
    const char *name;
    size_t size;
} dtype_table[] = {[ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2}};

const char *st_dtype_name(enum st_dtype t) {
    return (unsigned)t < sizeof dtype_table / sizeof dtype_table[0] ? dtype_table[t].name : "unknown";
}

size_t st_dtype_size(enum st_dtype t) {
    return (unsigned)t < sizeof dtype_table / sizeof dtype_table[0] ? dtype_table[t].size : 0;
}

/* ---------------------------------------------------------------- errors */

struct reader {
    const uint8_t *buf;
    uint64_t size;
    const char *name; /* the file, first in every message */
    char *err;
    size_t err_size;
};


/* Writes "file: message" and returns rc, so callers can `return fail(...)`. */
__attribute__((format(printf, 3, 4))) static int fail(const struct reader *r, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    err_vat(r->err, r->err_size, rc, r->name, fmt, ap);
    va_end(ap);
    return rc;
}

/* Strings from the file go into messages: control bytes would garble a
 * terminal and a long name would push out the reason. */
static const char *shown(const char *s, char out[ST_NAME_SHOW + 4]) {
    size_t n = 0;
    for (; s[n] && n < ST_NAME_SHOW; n++) {
        unsigned char c = (unsigned char)s[n];
        out[n] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    if (s[n]) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
    return out;
}

/* ------------------------------------------------------------- entries */

static int parse_dtype(const struct reader *r, const char *tname, json_t *j, st_tensor *t) {
    char a[ST_NAME_SHOW + 4], b[ST_NAME_SHOW + 4];
    const char *s = json_string_value(j);
    if (!s) return fail(r, HEED_ERR_FORMAT, "tensor '%s': 'dtype' is missing or not a string", shown(tname, a));
    for (size_t i = 0; i < sizeof dtype_table / sizeof dtype_table[0]; i++) {
        if (strcmp(s, dtype_table[i].name) == 0) {
            t->dtype = (enum st_dtype)i;
            return 0;
        }
    }
    return fail(r, HEED_ERR_UNSUPPORTED, "dtype %s of tensor '%s' is not supported (heed reads F32, F16, BF16)",
                shown(s, b), shown(tname, a));
}

static int parse_shape(const struct reader *r, const char *tname, json_t *j, st_tensor *t) {
    char a[ST_NAME_SHOW + 4];
    if (!json_is_array(j))
        return fail(r, HEED_ERR_FORMAT, "tensor '%s': 'shape' is missing or not an array", shown(tname, a));
    size_t n = json_array_size(j);
    if (n > ST_MAX_DIMS)
        return fail(r, HEED_ERR_FORMAT, "tensor '%s': shape has %zu dims, more than %d", shown(tname, a), n,
                    ST_MAX_DIMS);
    t->n_dims = (int)n;
    t->n_elems = 1;
    for (size_t d = 0; d < n; d++) {
        json_t *e = json_array_get(j, d);
        if (!json_is_integer(e) || json_integer_value(e) < 0)
            return fail(r, HEED_ERR_FORMAT, "tensor '%s': shape is not an array of non-negative integers",
                        shown(tname, a));
        t->shape[d] = json_integer_value(e);
        /* kept within int64 too: callers turn shapes into signed ne[] */
        if (__builtin_mul_overflow(t->n_elems, (uint64_t)t->shape[d], &t->n_elems) || t->n_elems > INT64_MAX)
            return fail(r, HEED_ERR_FORMAT, "tensor '%s': element count overflows at dim %zu", shown(tname, a), d);
    }
    if (__builtin_mul_overflow(t->n_elems, (uint64_t)st_dtype_size(t->dtype), &t->n_bytes))
        return fail(r, HEED_ERR_FORMAT, "tensor '%s': byte size overflows", shown(tname, a));
    return 0;
}

/* Offsets against the data section, the shape's byte size and alignment. */
static int parse_offsets(const struct reader *r, const char *tname, json_t *j, uint64_t data_offset,
                         st_tensor *t) {
    char a[ST_NAME_SHOW + 4];
    json_t *jb = json_array_get(j, 0), *je = json_array_get(j, 1);
    if (json_array_size(j) != 2 || !json_is_integer(jb) || !json_is_integer(je) || json_integer_value(jb) < 0 ||
        json_integer_value(je) < 0)
        return fail(r, HEED_ERR_FORMAT, "tensor '%s': 'data_offsets' is not two non-negative integers",
                    shown(tname, a));
    uint64_t begin = (uint64_t)json_integer_value(jb), end = (uint64_t)json_integer_value(je);
    uint64_t data_size = r->size - data_offset;
    if (begin > end)
        return fail(r, HEED_ERR_FORMAT, "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] begin after end",
                    shown(tname, a), begin, end);
    if (end > data_size)
        return fail(r, HEED_ERR_FORMAT,
                    "tensor '%s': data_offsets end %" PRIu64 " is past the end of the data (%" PRIu64 " bytes)",
                    shown(tname, a), end, data_size);
    if (end - begin != t->n_bytes)
        return fail(r, HEED_ERR_FORMAT,
                    "tensor '%s': header lies about offsets: [%" PRIu64 ", %" PRIu64 "] is %" PRIu64
                    " bytes, but %" PRIu64 " %s elements need %" PRIu64,
                    shown(tname, a), begin, end, end - begin, t->n_elems, st_dtype_name(t->dtype), t->n_bytes);
    t->offset = data_offset + begin; /* <= size: no overflow */
    t->data = r->buf + t->offset;
    size_t esize = st_dtype_size(t->dtype);
    if (t->n_bytes && (uintptr_t)t->data % esize)
        return fail(r, HEED_ERR_UNSUPPORTED, "tensor '%s': data at file offset %" PRIu64
                    " is not aligned to its %zu-byte elements", shown(tname, a), t->offset, esize);
    return 0;
}

static int parse_tensor(const struct reader *r, const char *tname, json_t *j, uint64_t data_offset,
                        st_tensor *t) {
    char a[ST_NAME_SHOW + 4];
    int rc;
    if (!json_is_object(j)) return fail(r, HEED_ERR_FORMAT, "tensor '%s': entry is not an object", shown(tname, a));
    if (!(t->name = strdup(tname))) return fail(r, HEED_ERR_NOMEM, "out of memory");
    if ((rc = parse_dtype(r, tname, json_object_get(j, "dtype"), t))) return rc;
    if ((rc = parse_shape(r, tname, json_object_get(j, "shape"), t))) return rc;
    return parse_offsets(r, tname, json_object_get(j, "data_offsets"), data_offset, t);
}

/* ---------------------------------------------------------------- header */

static int by_offset(const void *pa, const void *pb) {
    const st_tensor *a = pa, *b = pb;
    if (a->offset != b->offset) return a->offset < b->offset ? -1 : 1;
    return strcmp(a->name, b->name);
}

static int by_name(const void *pa, const void *pb) {
    return strcmp((*(const st_tensor *const *)pa)->name, (*(const st_tensor *const *)pb)->name);
}

/* Tensors are sorted by offset: each must start after every earlier one ends. */
static int check_overlaps(const struct reader *r, const st_file *f) {
    const st_tensor *reach = NULL; /* the non-empty tensor ending furthest so far */
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor *t = &f->tensors[i];
        if (!t->n_bytes) continue;
        if (reach && t->offset < reach->offset + reach->n_bytes) {
            char a[ST_NAME_SHOW + 4], b[ST_NAME_SHOW + 4];
            return fail(r, HEED_ERR_FORMAT, "tensors '%s' and '%s' overlap", shown(reach->name, a),
                        shown(t->name, b));
        }
        if (!reach || t->offset + t->n_bytes > reach->offset + reach->n_bytes) reach = t;
    }
    return 0;
}

/* The name index; equal names can only come from keys that differ after a
 * NUL, which jansson refuses anyway: checked all the same. */
static int index_names(const struct reader *r, struct st_impl *g) {
    st_file *f = &g->pub;
    if (f->n_tensors == 0) return 0;
    if (!(g->by_name = malloc(sizeof *g->by_name * (size_t)f->n_tensors)))
        return fail(r, HEED_ERR_NOMEM, "out of memory");
    for (int i = 0; i < f->n_tensors; i++) g->by_name[i] = &f->tensors[i];
    qsort(g->by_name, (size_t)f->n_tensors, sizeof *g->by_name, by_name);
    for (int i = 1; i < f->n_tensors; i++) {
        if (strcmp(g->by_name[i - 1]->name, g->by_name[i]->name) == 0) {
            char a[ST_NAME_SHOW + 4];
            return fail(r, HEED_ERR_FORMAT, "duplicate tensor name '%s'", shown(g->by_name[i]->name, a));
        }
    }
    return 0;
}

static int parse_entries(const struct reader *r, struct st_impl *g, json_t *root, uint64_t data_offset) {
    st_file *f = &g->pub;
    json_t *meta = json_object_get(root, ST_META_KEY);
    if (meta && !json_is_object(meta)) return fail(r, HEED_ERR_FORMAT, "'" ST_META_KEY "' is not an object");
    size_t n = json_object_size(root) - (meta ? 1 : 0);
    if (n > ST_MAX_TENSORS)
        return fail(r, HEED_ERR_FORMAT, "%zu tensors are more than the limit of %d", n, ST_MAX_TENSORS);
    if (n && !(f->tensors = calloc(n, sizeof *f->tensors))) return fail(r, HEED_ERR_NOMEM, "out of memory");
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val) {
        if (strcmp(key, ST_META_KEY) == 0) continue;
        int rc = parse_tensor(r, key, val, data_offset, &f->tensors[f->n_tensors++]);
        if (rc) return rc;
    }
    if (f->n_tensors) qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, by_offset);
    int rc = check_overlaps(r, f);
    return rc ? rc : index_names(r, g);
}

static int parse_header(const struct reader *r, struct st_impl *g) {
    st_file *f = &g->pub;
    if (r->size < ST_LEN_BYTES)
        return fail(r, HEED_ERR_FORMAT, "file is %" PRIu64 " bytes, too short for the 8-byte header length", r->size);
    uint64_t n;
    memcpy(&n, r->buf, sizeof n);
    if (n > ST_MAX_HEADER_BYTES)
        return fail(r, HEED_ERR_FORMAT, "header length %" PRIu64 " exceeds the limit of %u bytes", n,
                    ST_MAX_HEADER_BYTES);
    if (n > r->size - ST_LEN_BYTES)
        return fail(r, HEED_ERR_FORMAT, "header length %" PRIu64 " runs past the end of the file (%" PRIu64 " bytes)",
                    n, r->size);
    f->data_offset = ST_LEN_BYTES + n;
    json_error_t je;
    json_t *root = json_loadb((const char *)r->buf + ST_LEN_BYTES, (size_t)n, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return fail(r, HEED_ERR_FORMAT, "header is not valid JSON: %s (header byte %d)", je.text, je.position);
    int rc = json_is_object(root) ? parse_entries(r, g, root, f->data_offset)
                                  : fail(r, HEED_ERR_FORMAT, "header is not a JSON object");
    json_decref(root);
    return rc;
}

/* ------------------------------------------------------------ open/close */

static void free_impl(struct st_impl *g) {
    st_file *f = &g->pub;
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->tensors);
    free(g->by_name);
    free(f->name);
    free(g);
}

static struct st_impl *parse(const uint8_t *buf, uint64_t size, const char *name, int *rc_out, char *err,
                             size_t err_size) {
    struct reader r = {.buf = buf, .size = size, .name = name, .err = err, .err_size = err_size};
    int rc = HEED_OK;
    struct st_impl *g = calloc(1, sizeof *g);
    if (!g || !(g->pub.name = strdup(name))) {
        rc = fail(&r, HEED_ERR_NOMEM, "out of memory");
        goto done;
    }
    g->pub.map = buf;
    g->pub.file_size = size;
    rc = parse_header(&r, g);
done:
    if (rc_out) *rc_out = rc;
    if (rc && g) {
        free_impl(g);
        g = NULL;
    }
    return g;
}

st_file *st_open_buffer(const void *buf, size_t size, const char *name, int *rc, char *err, size_t err_size) {
    if (err && err_size) err[0] = '\0';
    struct st_impl *g = parse(buf, size, name ? name : "<buffer>", rc, err, err_size);
    return g ? &g->pub : NULL;
}


st_file *st_open(const char *path, const char *name, int *rc, char *err, size_t err_size) {
    const void *map = NULL;
    size_t size = 0;
    if (err && err_size) err[0] = '\0';
    int r = fmap_open(path, &map, &size, err, err_size);
    if (r) {
        if (rc) *rc = r;
        return NULL;
    }
    struct st_impl *g = parse(map, size, name ? name : path, rc, err, err_size);
    if (!g) {
        fmap_close(map, size);
        return NULL;
    }
    g->map_len = size;
    return &g->pub;
}

void st_close(st_file *f) {
    if (!f) return;
    struct st_impl *g = (struct st_impl *)f;
    fmap_close(f->map, g->map_len);
    free_impl(g);
}

const st_tensor *st_find(const st_file *f, const char *name) {
    if (!f || !name || f->n_tensors == 0) return NULL;
    const struct st_impl *g = (const struct st_impl *)f;
    st_tensor key = {.name = (char *)name}, *pk = &key;
    st_tensor **hit = bsearch(&pk, g->by_name, (size_t)f->n_tensors, sizeof *g->by_name, by_name);
    return hit ? *hit : NULL;
}
