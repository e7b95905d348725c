/*
 * gguf.c - the checked GGUF reader (see gguf.h for the file layout).
 *
 * One linear pass over the file: header, key/values, tensor infos, then the
 * tensor ranges are checked once the data section's start is known. Nothing
 * is read before the bytes it needs are known to be there: every length and
 * count is compared with the bytes left first, and every sum or product of
 * file values goes through a checked helper. Keys and tensor names are copied
 * (NUL-terminated); everything else points into the caller's buffer or our
 * mapping. Names are hashed, which makes the duplicate checks linear too.
 */
#include "err.h"
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fmap.h"
#include "heed.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "gguf.c reads little-endian values with memcpy: port it before using a big-endian host"
#endif

#define GGUF_MAGIC 0x46554747u /* "GGUF" read as a little-endian u32 */
#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_ALIGNMENT_KEY "general.alignment"

/* The smallest encodings, used to reject counts that cannot fit in the bytes
 * left before anything is allocated for them. */
#define GGUF_MIN_KV_BYTES 13     /* key length 8 + value type 4 + a 1-byte value */
#define GGUF_MIN_TENSOR_BYTES 32 /* name length 8 + n_dims 4 + ne[0] 8 + type 4 + offset 8 */
#define GGUF_STR_LEN_BYTES 8

#define GGUF_NAME_SHOW 64 /* characters of a key or tensor name quoted in messages */

/* ------------------------------------------------------------ name index */

/* Open addressing over names owned elsewhere (the kv / tensor arrays). */
struct name_slot {
    const char *name; /* NULL = empty */
    int idx;
};

struct name_index {
    struct name_slot *slots;
    size_t mask; /* capacity - 1; capacity is a power of two >= 2 * n */
};

/* The full private object: gguf_file is first, so a gguf_file * handed out
 * converts back. */
struct gguf_impl {
    gguf_file pub;
    size_t map_len; /* nonzero when pub.map is our own mmap */
    struct name_index kv_index;
    struct name_index tensor_index;
};

static uint64_t name_hash(const char *s) {
    uint64_t h = 0xcbf29ce484222325u; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3u;
    return h;
}

static int index_init(struct name_index *ix, size_t n) {
    size_t cap = 2;
    while (cap / 2 < n) {
        if (cap > SIZE_MAX / 2 / sizeof(struct name_slot)) return HEED_ERR_NOMEM;
        cap *= 2;
    }
    ix->slots = calloc(cap, sizeof(struct name_slot));
    ix->mask = cap - 1;
    return ix->slots ? HEED_OK : HEED_ERR_NOMEM;
}

/* The slot holding name, or the empty slot where it would go. */
static size_t index_pos(const struct name_index *ix, const char *name) {
    size_t i = (size_t)name_hash(name) & ix->mask;
    while (ix->slots[i].name && strcmp(ix->slots[i].name, name) != 0) i = (i + 1) & ix->mask;
    return i;
}

/* Adds name -> idx; returns -1, or the index already holding the name. The
 * table is sized for every name up front, so it never fills. */
static int index_add(struct name_index *ix, const char *name, int idx) {
    struct name_slot *s = &ix->slots[index_pos(ix, name)];
    if (s->name) return s->idx;
    s->name = name;
    s->idx = idx;
    return -1;
}

static int index_get(const struct name_index *ix, const char *name) {
    if (!ix->slots) return -1;
    const struct name_slot *s = &ix->slots[index_pos(ix, name)];
    return s->name ? s->idx : -1;
}

/* ------------------------------------------------------------ type tables */

struct type_info {
    const char *name;
    uint16_t block_bytes;
    uint16_t block_elems;
};

/* As ggml numbers and sizes them; ids ggml has retired stay zero (unknown). */
static const struct type_info type_table[GGML_TYPE_COUNT] = {
    [GGML_F32] = {"F32", 4, 1},          [GGML_F16] = {"F16", 2, 1},
    [GGML_Q4_0] = {"Q4_0", 18, 32},      [GGML_Q4_1] = {"Q4_1", 20, 32},
    [GGML_Q5_0] = {"Q5_0", 22, 32},      [GGML_Q5_1] = {"Q5_1", 24, 32},
    [GGML_Q8_0] = {"Q8_0", 34, 32},      [GGML_Q8_1] = {"Q8_1", 36, 32},
    [GGML_Q2_K] = {"Q2_K", 84, 256},     [GGML_Q3_K] = {"Q3_K", 110, 256},
    [GGML_Q4_K] = {"Q4_K", 144, 256},    [GGML_Q5_K] = {"Q5_K", 176, 256},
    [GGML_Q6_K] = {"Q6_K", 210, 256},    [GGML_Q8_K] = {"Q8_K", 292, 256},
    [16] = {"IQ2_XXS", 66, 256},         [17] = {"IQ2_XS", 74, 256},
    [18] = {"IQ3_XXS", 98, 256},         [19] = {"IQ1_S", 50, 256},
    [GGML_IQ4_NL] = {"IQ4_NL", 18, 32},  [21] = {"IQ3_S", 110, 256},
    [22] = {"IQ2_S", 82, 256},           [GGML_IQ4_XS] = {"IQ4_XS", 136, 256},
    [24] = {"I8", 1, 1},                 [25] = {"I16", 2, 1},
    [26] = {"I32", 4, 1},                [27] = {"I64", 8, 1},
    [28] = {"F64", 8, 1},                [29] = {"IQ1_M", 56, 256},
    [GGML_BF16] = {"BF16", 2, 1},        [34] = {"TQ1_0", 54, 256},
    [35] = {"TQ2_0", 66, 256},           [39] = {"MXFP4", 17, 32},
};

static const char *const vtype_names[GGUF_VTYPE_COUNT] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
};

/* Bytes of one scalar in the file; 0 for STRING and ARRAY (variable). */
static const uint8_t vtype_sizes[GGUF_VTYPE_COUNT] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

static const struct type_info *type_info_of(int type) {
    if (type < 0 || type >= GGML_TYPE_COUNT || !type_table[type].name) return NULL;
    return &type_table[type];
}

const char *gguf_type_name(int type) {
    const struct type_info *t = type_info_of(type);
    return t ? t->name : "unknown";
}

const char *gguf_vtype_name(int vtype) {
    return vtype >= 0 && vtype < GGUF_VTYPE_COUNT ? vtype_names[vtype] : "unknown";
}

size_t gguf_type_block_bytes(int type) {
    const struct type_info *t = type_info_of(type);
    return t ? t->block_bytes : 0;
}

int gguf_type_block_elems(int type) {
    const struct type_info *t = type_info_of(type);
    return t ? t->block_elems : 0;
}

bool gguf_type_supported(int type) {
    /* the weight types kern.c can dequantize and multiply (Q8_1/Q8_K are
     * activation formats only, never stored in model files) */
    switch (type) {
    case GGML_F32: case GGML_F16: case GGML_BF16: case GGML_Q8_0:
    case GGML_Q4_0: case GGML_Q4_1: case GGML_Q5_0: case GGML_Q5_1:
    case GGML_Q2_K: case GGML_Q3_K: case GGML_Q4_K: case GGML_Q5_K: case GGML_Q6_K:
    case GGML_IQ4_NL: case GGML_IQ4_XS: return true;
    default: return false;
    }
}

/* ---------------------------------------------------------------- reader */

struct reader {
    const uint8_t *buf;
    uint64_t size;
    uint64_t pos;
    const char *name; /* the file, first in every message */
    char ctx[160];    /* what is being read, e.g. "key #3 ('general.name')"; may be empty */
    char *err;
    size_t err_size;
};

static uint64_t left(const struct reader *r) { return r->size - r->pos; }

/* Writes "name: ctx: message" and returns rc, so callers can `return fail(...)`. */
__attribute__((format(printf, 3, 4))) static int fail(struct reader *r, int rc, const char *fmt, ...) {
    char where[512];
    snprintf(where, sizeof where, "%s%s%s", r->name, r->ctx[0] ? ": " : "", r->ctx);
    va_list ap;
    va_start(ap, fmt);
    err_vat(r->err, r->err_size, rc, where, fmt, ap);
    va_end(ap);
    return rc;
}

/* Names from the file go into messages; control bytes would garble a terminal. */
static void set_ctx(struct reader *r, const char *kind, int i, const char *name) {
    if (!name) {
        snprintf(r->ctx, sizeof r->ctx, "%s #%d", kind, i);
        return;
    }
    char safe[GGUF_NAME_SHOW + 4];
    size_t n = 0;
    for (; name[n] && n < GGUF_NAME_SHOW; n++) {
        unsigned char c = (unsigned char)name[n];
        safe[n] = c < 0x20 || c == 0x7f ? '?' : (char)c;
    }
    if (name[n]) {
        memcpy(safe + n, "...", 3);
        n += 3;
    }
    safe[n] = '\0';
    snprintf(r->ctx, sizeof r->ctx, "%s #%d ('%s')", kind, i, safe);
}

static int need(struct reader *r, uint64_t n, const char *what) {
    if (n <= left(r)) return HEED_OK;
    return fail(r, HEED_ERR_FORMAT, "%s: truncated (needs %" PRIu64 " bytes, %" PRIu64 " left)", what, n,
                left(r));
}

static int read_u32(struct reader *r, const char *what, uint32_t *out) {
    int rc = need(r, sizeof *out, what);
    if (rc) return rc;
    memcpy(out, r->buf + r->pos, sizeof *out);
    r->pos += sizeof *out;
    return HEED_OK;
}

static int read_u64(struct reader *r, const char *what, uint64_t *out) {
    int rc = need(r, sizeof *out, what);
    if (rc) return rc;
    memcpy(out, r->buf + r->pos, sizeof *out);
    r->pos += sizeof *out;
    return HEED_OK;
}

/* elem >= 0 names an array element in the message. */
static int read_str(struct reader *r, const char *what, int64_t elem, gguf_str *out) {
    uint64_t len;
    int rc = read_u64(r, what, &len);
    if (rc) return rc;
    if (len > left(r)) {
        if (elem >= 0)
            return fail(r, HEED_ERR_FORMAT, "%s #%" PRId64 ": length %" PRIu64 " exceeds the %" PRIu64 " bytes left",
                        what, elem, len, left(r));
        return fail(r, HEED_ERR_FORMAT, "%s length %" PRIu64 " exceeds the %" PRIu64 " bytes left", what, len,
                    left(r));
    }
    out->ptr = (const char *)r->buf + r->pos;
    out->len = len;
    r->pos += len;
    return HEED_OK;
}

/* Keys and tensor names become C strings, so an embedded NUL would make two
 * different names compare equal: refused. */
static int copy_name(struct reader *r, gguf_str s, char **out) {
    if (memchr(s.ptr, '\0', (size_t)s.len)) return fail(r, HEED_ERR_FORMAT, "name contains a NUL byte");
    size_t n;
    if (__builtin_add_overflow((size_t)s.len, (size_t)1, &n) || !(*out = malloc(n)))
        return fail(r, HEED_ERR_NOMEM, "out of memory copying a name of %" PRIu64 " bytes", s.len);
    memcpy(*out, s.ptr, (size_t)s.len);
    (*out)[s.len] = '\0';
    return HEED_OK;
}

/* ------------------------------------------------------------ key/values */

static int parse_string_array(struct reader *r, gguf_kv *kv) {
    if (kv->arr_n > left(r) / GGUF_STR_LEN_BYTES)
        return fail(r, HEED_ERR_FORMAT, "array count %" PRIu64 " exceeds what the %" PRIu64 " bytes left can hold",
                    kv->arr_n, left(r));
    if (kv->arr_n == 0) return HEED_OK;
    size_t bytes;
    if (__builtin_mul_overflow((size_t)kv->arr_n, sizeof(gguf_str), &bytes) || !(kv->strs = malloc(bytes)))
        return fail(r, HEED_ERR_NOMEM, "out of memory for %" PRIu64 " strings", kv->arr_n);
    for (uint64_t j = 0; j < kv->arr_n; j++) {
        int rc = read_str(r, "string", (int64_t)j, &kv->strs[j]);
        if (rc) return rc;
    }
    return HEED_OK;
}

static int parse_array(struct reader *r, gguf_kv *kv) {
    uint32_t t;
    int rc = read_u32(r, "array element type", &t);
    if (rc) return rc;
    if (t == GGUF_ARRAY) return fail(r, HEED_ERR_UNSUPPORTED, "nested arrays are not supported");
    if (t >= GGUF_VTYPE_COUNT) return fail(r, HEED_ERR_FORMAT, "unknown array element type %" PRIu32, t);
    if ((rc = read_u64(r, "array count", &kv->arr_n))) return rc;
    kv->arr_type = (enum gguf_vtype)t;
    kv->data = r->buf + r->pos;
    if (t == GGUF_STRING) return parse_string_array(r, kv);
    uint64_t esize = vtype_sizes[t];
    if (kv->arr_n > left(r) / esize)
        return fail(r, HEED_ERR_FORMAT,
                    "array count %" PRIu64 " of %s exceeds what the %" PRIu64 " bytes left can hold", kv->arr_n,
                    vtype_names[t], left(r));
    r->pos += kv->arr_n * esize;
    return HEED_OK;
}

static int parse_value(struct reader *r, gguf_kv *kv) {
    if (kv->type == GGUF_ARRAY) return parse_array(r, kv);
    kv->arr_type = kv->type;
    kv->arr_n = 1;
    kv->data = r->buf + r->pos;
    if (kv->type != GGUF_STRING) {
        int rc = need(r, vtype_sizes[kv->type], vtype_names[kv->type]);
        if (!rc) r->pos += vtype_sizes[kv->type];
        return rc;
    }
    if (!(kv->strs = malloc(sizeof *kv->strs))) return fail(r, HEED_ERR_NOMEM, "out of memory");
    return read_str(r, "string", -1, kv->strs);
}

static int parse_kv(struct reader *r, struct gguf_impl *g, int i) {
    gguf_kv *kv = &g->pub.kv[i];
    gguf_str name;
    uint32_t t;
    set_ctx(r, "key", i, NULL);
    int rc = read_str(r, "name", -1, &name);
    if (rc || (rc = copy_name(r, name, &kv->key))) return rc;
    set_ctx(r, "key", i, kv->key);
    int first = index_add(&g->kv_index, kv->key, i);
    if (first >= 0) return fail(r, HEED_ERR_FORMAT, "duplicate key (first at key #%d)", first);
    if ((rc = read_u32(r, "value type", &t))) return rc;
    if (t >= GGUF_VTYPE_COUNT) return fail(r, HEED_ERR_FORMAT, "unknown value type %" PRIu32, t);
    kv->type = (enum gguf_vtype)t;
    return parse_value(r, kv);
}

static int parse_alignment(struct reader *r, struct gguf_impl *g) {
    gguf_file *f = &g->pub;
    int i = index_get(&g->kv_index, GGUF_ALIGNMENT_KEY);
    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    if (i < 0) return HEED_OK;
    set_ctx(r, "key", i, GGUF_ALIGNMENT_KEY);
    if (f->kv[i].type != GGUF_U32)
        return fail(r, HEED_ERR_FORMAT, "has type %s, expected u32", gguf_vtype_name(f->kv[i].type));
    uint32_t a;
    memcpy(&a, f->kv[i].data, sizeof a);
    if (a == 0 || (a & (a - 1)) != 0)
        return fail(r, HEED_ERR_FORMAT, "alignment %" PRIu32 " is not a nonzero power of two", a);
    f->alignment = a;
    return HEED_OK;
}

/* --------------------------------------------------------------- tensors */

static int parse_shape(struct reader *r, gguf_tensor *t) {
    uint32_t n_dims;
    int rc = read_u32(r, "n_dims", &n_dims);
    if (rc) return rc;
    if (n_dims < 1 || n_dims > GGUF_MAX_DIMS)
        return fail(r, HEED_ERR_FORMAT, "n_dims %" PRIu32 " outside 1..%d", n_dims, GGUF_MAX_DIMS);
    t->n_dims = (int)n_dims;
    int64_t n_elem = 1;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) {
        uint64_t ne = 1;
        if (d < t->n_dims && (rc = read_u64(r, "ne", &ne))) return rc;
        if (ne == 0 || ne > INT64_MAX)
            return fail(r, HEED_ERR_FORMAT, "ne[%d] = %" PRId64 " is not positive", d, (int64_t)ne);
        t->ne[d] = (int64_t)ne;
        if (__builtin_mul_overflow(n_elem, t->ne[d], &n_elem))
            return fail(r, HEED_ERR_FORMAT, "element count overflows at ne[%d] = %" PRId64, d, t->ne[d]);
    }
    return HEED_OK;
}

/* Type, block divisibility and byte size; the shape is known. */
static int parse_type(struct reader *r, gguf_tensor *t) {
    uint32_t type;
    int rc = read_u32(r, "type", &type);
    if (rc) return rc;
    const struct type_info *ti = type_info_of(type < GGML_TYPE_COUNT ? (int)type : -1);
    if (!ti) return fail(r, HEED_ERR_FORMAT, "unknown tensor type %" PRIu32, type);
    if (!gguf_type_supported((int)type)) {
        r->ctx[0] = '\0'; /* this message has its own wording, naming the tensor */
        return fail(r, HEED_ERR_UNSUPPORTED, "unsupported tensor type %s for tensor '%s'", ti->name, t->name);
    }
    t->type = (int)type;
    if (t->ne[0] % ti->block_elems != 0)
        return fail(r, HEED_ERR_FORMAT, "ne[0] = %" PRId64 " is not a multiple of the %s block size %d", t->ne[0],
                    ti->name, ti->block_elems);
    /* ne[0] is a multiple of the block, so the element count is too. */
    uint64_t n_blocks = (uint64_t)(t->ne[0] / ti->block_elems);
    for (int d = 1; d < GGUF_MAX_DIMS; d++)
        if (__builtin_mul_overflow(n_blocks, (uint64_t)t->ne[d], &n_blocks))
            return fail(r, HEED_ERR_FORMAT, "byte size overflows");
    if (__builtin_mul_overflow(n_blocks, (uint64_t)ti->block_bytes, &t->n_bytes))
        return fail(r, HEED_ERR_FORMAT, "byte size overflows");
    return HEED_OK;
}

/* Leaves t->offset relative to the data section; see place_tensor. */
static int parse_tensor_info(struct reader *r, struct gguf_impl *g, int i) {
    gguf_tensor *t = &g->pub.tensors[i];
    gguf_str name;
    set_ctx(r, "tensor", i, NULL);
    int rc = read_str(r, "name", -1, &name);
    if (rc || (rc = copy_name(r, name, &t->name))) return rc;
    set_ctx(r, "tensor", i, t->name);
    int first = index_add(&g->tensor_index, t->name, i);
    if (first >= 0) return fail(r, HEED_ERR_FORMAT, "duplicate tensor name (first at tensor #%d)", first);
    if ((rc = parse_shape(r, t)) || (rc = parse_type(r, t))) return rc;
    if ((rc = read_u64(r, "offset", &t->offset))) return rc;
    if (t->offset % g->pub.alignment != 0)
        return fail(r, HEED_ERR_FORMAT, "offset %" PRIu64 " is not a multiple of the alignment %" PRIu32,
                    t->offset, g->pub.alignment);
    return HEED_OK;
}

static int place_tensor(struct reader *r, gguf_file *f, gguf_tensor *t) {
    uint64_t start, end;
    if (__builtin_add_overflow(f->data_offset, t->offset, &start) ||
        __builtin_add_overflow(start, t->n_bytes, &end) || end > r->size) {
        r->ctx[0] = '\0';
        return fail(r, HEED_ERR_FORMAT,
                    "tensor '%s' extends past end of file (data offset %" PRIu64 " + %" PRIu64
                    " bytes, file is %" PRIu64 " bytes)",
                    t->name, t->offset, t->n_bytes, r->size);
    }
    t->offset = start;
    t->data = r->buf + start;
    return HEED_OK;
}

/* ---------------------------------------------------------------- parse */

static int parse_header(struct reader *r, gguf_file *f, uint64_t *n_tensors, uint64_t *n_kv) {
    uint32_t magic;
    snprintf(r->ctx, sizeof r->ctx, "header");
    int rc = read_u32(r, "magic", &magic);
    if (rc) return rc;
    if (magic != GGUF_MAGIC)
        return fail(r, HEED_ERR_FORMAT, "bad magic 0x%08" PRIx32 " (not a GGUF file)", magic);
    if ((rc = read_u32(r, "version", &f->version))) return rc;
    if (f->version != 2 && f->version != 3) {
        const char *hint = f->version == 0x03000000u || f->version == 0x02000000u ? " (a big-endian file?)" : "";
        return fail(r, HEED_ERR_UNSUPPORTED, "unsupported version %" PRIu32 " (heed reads 2 and 3)%s", f->version,
                    hint);
    }
    if ((rc = read_u64(r, "n_tensors", n_tensors)) || (rc = read_u64(r, "n_kv", n_kv))) return rc;
    if (*n_kv > INT_MAX || *n_kv > left(r) / GGUF_MIN_KV_BYTES)
        return fail(r, HEED_ERR_FORMAT, "n_kv %" PRIu64 " exceeds what the %" PRIu64 " bytes left can hold", *n_kv,
                    left(r));
    uint64_t after_kv = left(r) - *n_kv * GGUF_MIN_KV_BYTES;
    if (*n_tensors > INT_MAX || *n_tensors > after_kv / GGUF_MIN_TENSOR_BYTES)
        return fail(r, HEED_ERR_FORMAT, "n_tensors %" PRIu64 " exceeds what the %" PRIu64 " bytes left can hold",
                    *n_tensors, left(r));
    return HEED_OK;
}

static int parse_kvs(struct reader *r, struct gguf_impl *g, uint64_t n_kv) {
    gguf_file *f = &g->pub;
    if (index_init(&g->kv_index, (size_t)n_kv)) return fail(r, HEED_ERR_NOMEM, "out of memory");
    if (n_kv > 0 && !(f->kv = calloc((size_t)n_kv, sizeof *f->kv)))
        return fail(r, HEED_ERR_NOMEM, "out of memory for %" PRIu64 " keys", n_kv);
    f->n_kv = (int)n_kv;
    for (int i = 0; i < f->n_kv; i++) {
        int rc = parse_kv(r, g, i);
        if (rc) return rc;
    }
    return parse_alignment(r, g);
}

static int parse_tensors(struct reader *r, struct gguf_impl *g, uint64_t n_tensors) {
    gguf_file *f = &g->pub;
    if (index_init(&g->tensor_index, (size_t)n_tensors)) return fail(r, HEED_ERR_NOMEM, "out of memory");
    if (n_tensors > 0 && !(f->tensors = calloc((size_t)n_tensors, sizeof *f->tensors)))
        return fail(r, HEED_ERR_NOMEM, "out of memory for %" PRIu64 " tensors", n_tensors);
    f->n_tensors = (int)n_tensors;
    for (int i = 0; i < f->n_tensors; i++) {
        int rc = parse_tensor_info(r, g, i);
        if (rc) return rc;
    }
    /* A file without tensors may end before the padding (ggml reads those);
     * with tensors, place_tensor catches a data section past the end. */
    uint64_t a = f->alignment, pad = (a - r->pos % a) % a;
    if (__builtin_add_overflow(r->pos, pad, &f->data_offset)) {
        r->ctx[0] = '\0';
        return fail(r, HEED_ERR_FORMAT, "data section offset overflows");
    }
    for (int i = 0; i < f->n_tensors; i++) {
        int rc = place_tensor(r, f, &f->tensors[i]);
        if (rc) return rc;
    }
    return HEED_OK;
}

static void free_impl(struct gguf_impl *g) {
    gguf_file *f = &g->pub;
    for (int i = 0; i < f->n_kv; i++) {
        free(f->kv[i].key);
        free(f->kv[i].strs);
    }
    for (int i = 0; i < f->n_tensors; i++) free(f->tensors[i].name);
    free(f->kv);
    free(f->tensors);
    free(g->kv_index.slots);
    free(g->tensor_index.slots);
    free(f->path);
    free(g);
}

static struct gguf_impl *parse(const uint8_t *buf, uint64_t size, const char *name, int *rc_out, char *err,
                               size_t err_size) {
    struct reader r = {.buf = buf, .size = size, .name = name, .err = err, .err_size = err_size};
    uint64_t n_tensors = 0, n_kv = 0;
    int rc = HEED_OK;
    struct gguf_impl *g = calloc(1, sizeof *g);
    if (!g || !(g->pub.path = strdup(name))) {
        rc = fail(&r, HEED_ERR_NOMEM, "out of memory");
        goto done;
    }
    g->pub.map = buf;
    g->pub.file_size = size;
    if ((rc = parse_header(&r, &g->pub, &n_tensors, &n_kv))) goto done;
    if ((rc = parse_kvs(&r, g, n_kv))) goto done;
    rc = parse_tensors(&r, g, n_tensors);
done:
    if (rc_out) *rc_out = rc;
    if (rc && g) {
        free_impl(g);
        g = NULL;
    }
    return g;
}

/* ------------------------------------------------------------ open/close */

gguf_file *gguf_open_buffer(const void *buf, size_t size, const char *name, int *rc, char *err,
                            size_t err_size) {
    struct gguf_impl *g = parse(buf, size, name ? name : "<buffer>", rc, err, err_size);
    return g ? &g->pub : NULL;
}


gguf_file *gguf_open(const char *path, int *rc, char *err, size_t err_size) {
    const void *map = NULL;
    size_t size = 0;
    int r = fmap_open(path, &map, &size, err, err_size);
    if (r) {
        if (rc) *rc = r;
        return NULL;
    }
    struct gguf_impl *g = parse(map, size, path, rc, err, err_size);
    if (!g) {
        fmap_close(map, size);
        return NULL;
    }
    g->map_len = size;
    return &g->pub;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    struct gguf_impl *g = (struct gguf_impl *)f;
    fmap_close(f->map, g->map_len);
    free_impl(g);
}

/* --------------------------------------------------------------- lookups */

const gguf_kv *gguf_find(const gguf_file *f, const char *key) {
    if (!f || !key) return NULL;
    int i = index_get(&((const struct gguf_impl *)f)->kv_index, key);
    return i >= 0 ? &f->kv[i] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    if (!f || !name) return NULL;
    int i = index_get(&((const struct gguf_impl *)f)->tensor_index, name);
    return i >= 0 ? &f->tensors[i] : NULL;
}

/* Integer scalar at p; false for non-integers and u64 values past INT64_MAX. */
static bool scalar_i64(enum gguf_vtype type, const uint8_t *p, int64_t *out) {
    union {
        uint8_t u8;
        int8_t i8;
        uint16_t u16;
        int16_t i16;
        uint32_t u32;
        int32_t i32;
        uint64_t u64;
        int64_t i64;
    } v;
    if (type >= GGUF_VTYPE_COUNT || vtype_sizes[type] == 0) return false;
    memcpy(&v, p, vtype_sizes[type]);
    switch (type) {
    case GGUF_U8: *out = v.u8; return true;
    case GGUF_I8: *out = v.i8; return true;
    case GGUF_U16: *out = v.u16; return true;
    case GGUF_I16: *out = v.i16; return true;
    case GGUF_U32: *out = v.u32; return true;
    case GGUF_I32: *out = v.i32; return true;
    case GGUF_I64: *out = v.i64; return true;
    case GGUF_U64:
        if (v.u64 > INT64_MAX) return false;
        *out = (int64_t)v.u64;
        return true;
    default: return false;
    }
}

/* Numeric scalar at p as a double (integers and floats; not bool). */
static bool scalar_f64(enum gguf_vtype type, const uint8_t *p, double *out) {
    if (type == GGUF_F32) {
        float v;
        memcpy(&v, p, sizeof v);
        *out = v;
        return true;
    }
    if (type == GGUF_F64) {
        memcpy(out, p, sizeof *out);
        return true;
    }
    if (type == GGUF_U64) {
        uint64_t v;
        memcpy(&v, p, sizeof v);
        *out = (double)v;
        return true;
    }
    int64_t i;
    if (!scalar_i64(type, p, &i)) return false;
    *out = (double)i;
    return true;
}

bool gguf_get_i64(const gguf_file *f, const char *key, int64_t *out) {
    const gguf_kv *kv = gguf_find(f, key);
    return kv && kv->type != GGUF_ARRAY && scalar_i64(kv->type, kv->data, out);
}

bool gguf_get_f64(const gguf_file *f, const char *key, double *out) {
    const gguf_kv *kv = gguf_find(f, key);
    return kv && kv->type != GGUF_ARRAY && scalar_f64(kv->type, kv->data, out);
}

bool gguf_get_bool(const gguf_file *f, const char *key, bool *out) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv || kv->type != GGUF_BOOL) return false;
    *out = kv->data[0] != 0;
    return true;
}

bool gguf_get_str(const gguf_file *f, const char *key, gguf_str *out) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv || kv->type != GGUF_STRING) return false;
    *out = kv->strs[0];
    return true;
}

/* Element i of a fixed-size array; NULL when kv is not one or i is out of range. */
static const uint8_t *arr_elem(const gguf_kv *kv, uint64_t i) {
    if (!kv || kv->type != GGUF_ARRAY || i >= kv->arr_n || kv->arr_type >= GGUF_VTYPE_COUNT) return NULL;
    size_t esize = vtype_sizes[kv->arr_type];
    return esize ? kv->data + i * esize : NULL;
}

bool gguf_arr_f64(const gguf_kv *kv, uint64_t i, double *out) {
    const uint8_t *p = arr_elem(kv, i);
    return p && scalar_f64(kv->arr_type, p, out);
}

bool gguf_arr_i64(const gguf_kv *kv, uint64_t i, int64_t *out) {
    const uint8_t *p = arr_elem(kv, i);
    return p && scalar_i64(kv->arr_type, p, out);
}

/* ----------------------------------------------------------- formatting */

/* An snprintf-style appender: len counts every byte, written or not. */
struct sbuf {
    char *buf;
    size_t size;
    size_t len;
};

static void sb_putc(struct sbuf *b, char c) {
    if (b->len + 1 < b->size) b->buf[b->len] = c;
    b->len++;
}

__attribute__((format(printf, 2, 3))) static void sb_printf(struct sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = b->len < b->size ? vsnprintf(b->buf + b->len, b->size - b->len, fmt, ap) : vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n > 0) b->len += (size_t)n;
}

static void sb_quoted(struct sbuf *b, gguf_str s) {
    sb_putc(b, '"');
    for (uint64_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c == '"' || c == '\\') sb_printf(b, "\\%c", c);
        else if (c == '\n') sb_printf(b, "\\n");
        else if (c == '\t') sb_printf(b, "\\t");
        else if (c == '\r') sb_printf(b, "\\r");
        else if (c < 0x20 || c == 0x7f) sb_printf(b, "\\x%02x", c);
        else sb_putc(b, (char)c);
    }
    sb_putc(b, '"');
}

/* The shortest text that reads back as the same float, so 1e-5 stored as an
 * f32 prints "1e-05", not "9.99999975e-06"; integral values print whole. */
static void sb_float(struct sbuf *b, double v, bool is_f32) {
    char tmp[48];
    if (fabs(v) < 1e15 && v == (double)(long long)v) {
        sb_printf(b, "%.0f", v);
        return;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(tmp, sizeof tmp, "%.*g", prec, v);
        if (is_f32 ? strtof(tmp, NULL) == (float)v : strtod(tmp, NULL) == v) break;
    }
    sb_printf(b, "%s", tmp);
}

static void sb_scalar(struct sbuf *b, enum gguf_vtype type, const uint8_t *p) {
    int64_t i;
    double d;
    if (type == GGUF_BOOL) {
        sb_printf(b, "%s", p[0] ? "true" : "false");
    } else if (type == GGUF_U64) {
        uint64_t u;
        memcpy(&u, p, sizeof u);
        sb_printf(b, "%" PRIu64, u);
    } else if (scalar_i64(type, p, &i)) {
        sb_printf(b, "%" PRId64, i);
    } else if (scalar_f64(type, p, &d)) {
        sb_float(b, d, type == GGUF_F32);
    }
}

static void sb_array(struct sbuf *b, const gguf_kv *kv, int max_elems) {
    uint64_t n = kv->arr_n;
    uint64_t shown = max_elems <= 0 ? 0 : (uint64_t)max_elems < n ? (uint64_t)max_elems : n;
    sb_putc(b, '[');
    for (uint64_t j = 0; j < shown; j++) {
        if (j) sb_printf(b, ", ");
        if (kv->arr_type == GGUF_STRING) sb_quoted(b, kv->strs[j]);
        else sb_scalar(b, kv->arr_type, kv->data + j * vtype_sizes[kv->arr_type]);
    }
    if (shown < n) sb_printf(b, "%s... (%" PRIu64 " total)", shown ? ", " : "", n);
    sb_putc(b, ']');
}

int gguf_kv_format(const gguf_kv *kv, char *buf, size_t size, int max_elems) {
    struct sbuf b = {buf, size, 0};
    if (kv && kv->type == GGUF_ARRAY) sb_array(&b, kv, max_elems);
    else if (kv && kv->type == GGUF_STRING) sb_quoted(&b, kv->strs[0]);
    else if (kv) sb_scalar(&b, kv->type, kv->data);
    if (size > 0) buf[b.len < size ? b.len : size - 1] = '\0';
    return b.len > INT_MAX ? INT_MAX : (int)b.len;
}
