/*
 * test_gguf - the GGUF reader: hand-made valid files (every value type, v2
 * and v3, custom alignment), a table of corrupt files that must be rejected
 * with the right code and a message naming the field, a truncation sweep,
 * file-system errors, the bundled model and (when present) a shared Q8_0
 * model. Files are built by a small writer below, so each corrupt case reads
 * as the one field it breaks.
 *
 * HEED_WRITE_CORPUS=dir also writes the fuzz seeds (tests/fuzz/corpus_gguf).
 */
#include "testutil.h"

#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>

#include "gguf.h"
#include "heed.h"

#define MODEL_PATH "models/stories260K.gguf"
#define CORPUS_DIR "tests/fuzz/corpus_gguf"
#define ERR_SIZE 512

/* ---------------------------------------------------------------- writer */

typedef struct wbuf {
    uint8_t *p;
    size_t n, cap;
} wbuf;

static void w_bytes(wbuf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n) cap *= 2;
        b->p = realloc(b->p, cap);
        assert_non_null(b->p);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, d, n);
    b->n += n;
}

static void w_u8(wbuf *b, uint8_t v) { w_bytes(b, &v, 1); }
static void w_u16(wbuf *b, uint16_t v) { w_bytes(b, &v, 2); }
static void w_u32(wbuf *b, uint32_t v) { w_bytes(b, &v, 4); }
static void w_u64(wbuf *b, uint64_t v) { w_bytes(b, &v, 8); }
static void w_f32(wbuf *b, float v) { w_bytes(b, &v, 4); }
static void w_f64(wbuf *b, double v) { w_bytes(b, &v, 8); }

static void w_str(wbuf *b, const char *s) {
    w_u64(b, strlen(s));
    w_bytes(b, s, strlen(s));
}

static void w_pad(wbuf *b, size_t align) {
    while (b->n % align) w_u8(b, 0);
}

static void w_header(wbuf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
    w_u32(b, 0x46554747u);
    w_u32(b, version);
    w_u64(b, n_tensors);
    w_u64(b, n_kv);
}

static void w_free(wbuf *b) {
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* A whole file: key/values, tensor infos and data are collected apart and
 * joined by gb_finish, which knows the counts by then. */
typedef struct gbuild {
    wbuf kv, info, data;
    uint64_t n_kv, n_tensors;
    uint32_t align; /* used to place tensors; 0 means the default 32 */
} gbuild;

static size_t gb_align(const gbuild *g) { return g->align ? g->align : 32; }

static void gb_key(gbuild *g, const char *key, uint32_t type) {
    w_str(&g->kv, key);
    w_u32(&g->kv, type);
    g->n_kv++;
}

static void gb_u32(gbuild *g, const char *key, uint32_t v) {
    gb_key(g, key, GGUF_U32);
    w_u32(&g->kv, v);
}

static void gb_str(gbuild *g, const char *key, const char *s) {
    gb_key(g, key, GGUF_STRING);
    w_str(&g->kv, s);
}

static void gb_arr_head(gbuild *g, const char *key, uint32_t elem_type, uint64_t n) {
    gb_key(g, key, GGUF_ARRAY);
    w_u32(&g->kv, elem_type);
    w_u64(&g->kv, n);
}

static void gb_alignment(gbuild *g, uint32_t a) {
    gb_u32(g, "general.alignment", a);
    g->align = a;
}

/* A tensor info with an explicit relative offset; no data. */
static void gb_tensor_raw(gbuild *g, const char *name, int n_dims, const int64_t *ne, uint32_t type,
                          uint64_t offset) {
    w_str(&g->info, name);
    w_u32(&g->info, (uint32_t)n_dims);
    for (int d = 0; d < n_dims; d++) w_u64(&g->info, (uint64_t)ne[d]);
    w_u32(&g->info, type);
    w_u64(&g->info, offset);
    g->n_tensors++;
}

/* A tensor placed after the previous one, with n_bytes of patterned data.
 * The last tensor ends the file (no trailing padding), so every strict
 * prefix of a built file is invalid. Returns the relative offset. */
static uint64_t gb_tensor(gbuild *g, const char *name, int n_dims, const int64_t *ne, uint32_t type,
                          size_t n_bytes, const void *bytes) {
    w_pad(&g->data, gb_align(g));
    uint64_t offset = g->data.n;
    gb_tensor_raw(g, name, n_dims, ne, type, offset);
    for (size_t i = 0; i < n_bytes; i++) w_u8(&g->data, bytes ? ((const uint8_t *)bytes)[i] : (uint8_t)(i * 7 + 1));
    return offset;
}

static void gb_finish(gbuild *g, uint32_t version, wbuf *out) {
    w_header(out, version, g->n_tensors, g->n_kv);
    w_bytes(out, g->kv.p, g->kv.n);
    w_bytes(out, g->info.p, g->info.n);
    if (g->n_tensors) w_pad(out, gb_align(g));
    w_bytes(out, g->data.p, g->data.n);
    w_free(&g->kv);
    w_free(&g->info);
    w_free(&g->data);
}

/* ------------------------------------------------------ the valid file */

struct tspec {
    const char *name;
    int n_dims;
    int64_t ne[GGUF_MAX_DIMS];
    int type;
    size_t n_bytes;
};

static const struct tspec full_tensors[] = {
    {"a", 2, {4, 2}, GGML_F32, 32},
    {"b", 1, {8}, GGML_F16, 16},
    {"blk.0.c", 2, {32, 2}, GGML_Q8_0, 68},
    {"d", 4, {2, 1, 1, 3}, GGML_BF16, 12},
};
#define N_FULL_TENSORS (sizeof full_tensors / sizeof full_tensors[0])

static void full_kvs(gbuild *g) {
    gb_key(g, "t.u8", GGUF_U8), w_u8(&g->kv, 200);
    gb_key(g, "t.i8", GGUF_I8), w_u8(&g->kv, (uint8_t)-5);
    gb_key(g, "t.u16", GGUF_U16), w_u16(&g->kv, 60000);
    gb_key(g, "t.i16", GGUF_I16), w_u16(&g->kv, (uint16_t)-30000);
    gb_u32(g, "t.u32", 4000000000u);
    gb_key(g, "t.i32", GGUF_I32), w_u32(&g->kv, (uint32_t)-2000000000);
    gb_key(g, "t.f32", GGUF_F32), w_f32(&g->kv, 0.5f);
    gb_key(g, "t.eps", GGUF_F32), w_f32(&g->kv, 1e-5f);
    gb_key(g, "t.bool", GGUF_BOOL), w_u8(&g->kv, 1);
    gb_key(g, "t.false", GGUF_BOOL), w_u8(&g->kv, 0);
    gb_str(g, "general.name", "hello");
    gb_str(g, "t.empty_str", "");
    gb_str(g, "t.escape", "a\"b\\\n\t\x01z");
    gb_key(g, "t.u64", GGUF_U64), w_u64(&g->kv, UINT64_MAX);
    gb_key(g, "t.i64", GGUF_I64), w_u64(&g->kv, (uint64_t)INT64_MIN);
    gb_key(g, "t.f64", GGUF_F64), w_f64(&g->kv, 10000.0);
    gb_arr_head(g, "t.arr_i32", GGUF_I32, 5);
    for (int i = 1; i <= 5; i++) w_u32(&g->kv, (uint32_t)(i * (i % 2 ? 1 : -1)));
    gb_arr_head(g, "t.arr_f32", GGUF_F32, 2), w_f32(&g->kv, 0.25f), w_f32(&g->kv, -1.0f);
    gb_arr_head(g, "t.arr_u8", GGUF_U8, 3), w_u8(&g->kv, 1), w_u8(&g->kv, 2), w_u8(&g->kv, 255);
    gb_arr_head(g, "t.arr_bool", GGUF_BOOL, 2), w_u8(&g->kv, 1), w_u8(&g->kv, 0);
    gb_arr_head(g, "t.arr_u64", GGUF_U64, 1), w_u64(&g->kv, UINT64_MAX);
    gb_arr_head(g, "t.arr_str", GGUF_STRING, 3);
    w_str(&g->kv, "x"), w_str(&g->kv, ""), w_str(&g->kv, "y\"z");
    gb_arr_head(g, "t.arr_empty", GGUF_U32, 0);
    gb_arr_head(g, "t.arr_empty_str", GGUF_STRING, 0);
}

/* Every value type and four tensor types; align 0 = no general.alignment. */
static void build_full(wbuf *out, uint32_t version, uint32_t align) {
    gbuild g = {0};
    full_kvs(&g);
    if (align) gb_alignment(&g, align);
    for (size_t i = 0; i < N_FULL_TENSORS; i++) {
        const struct tspec *t = &full_tensors[i];
        gb_tensor(&g, t->name, t->n_dims, t->ne, (uint32_t)t->type, t->n_bytes, NULL);
    }
    gb_finish(&g, version, out);
}

/* Opens a heap copy of exactly b->n bytes, so ASan sees any read past it. */
static gguf_file *open_copy(const wbuf *b, uint8_t **copy, int *rc, char *err) {
    *copy = malloc(b->n ? b->n : 1);
    assert_non_null(*copy);
    if (b->n) memcpy(*copy, b->p, b->n);
    err[0] = '\0';
    return gguf_open_buffer(*copy, b->n, "t.gguf", rc, err, ERR_SIZE);
}

static void check_full_tensors(const gguf_file *f, const uint8_t *base, uint32_t align) {
    assert_int_equal(f->alignment, align);
    assert_int_equal(f->data_offset % align, 0);
    assert_int_equal(f->n_tensors, N_FULL_TENSORS);
    uint64_t prev_end = f->data_offset;
    for (size_t i = 0; i < N_FULL_TENSORS; i++) {
        const struct tspec *s = &full_tensors[i];
        const gguf_tensor *t = gguf_find_tensor(f, s->name);
        assert_ptr_equal(t, &f->tensors[i]);
        assert_string_equal(t->name, s->name);
        assert_int_equal(t->type, s->type);
        assert_int_equal(t->n_dims, s->n_dims);
        for (int d = 0; d < GGUF_MAX_DIMS; d++) assert_int_equal(t->ne[d], d < s->n_dims ? s->ne[d] : 1);
        assert_int_equal(t->n_bytes, s->n_bytes);
        assert_int_equal(t->offset % align, 0);
        assert_true(t->offset >= prev_end);
        assert_ptr_equal(t->data, base + t->offset);
        assert_int_equal(((const uint8_t *)t->data)[1], 8); /* the writer's pattern: i * 7 + 1 */
        prev_end = t->offset + t->n_bytes;
    }
    assert_int_equal(prev_end, f->file_size);
    assert_null(gguf_find_tensor(f, "nope"));
}

static void check_full_kvs(const gguf_file *f) {
    int64_t i;
    double d;
    bool b;
    gguf_str s;
    assert_true(gguf_get_i64(f, "t.u8", &i) && i == 200);
    assert_true(gguf_get_i64(f, "t.i8", &i) && i == -5);
    assert_true(gguf_get_i64(f, "t.u16", &i) && i == 60000);
    assert_true(gguf_get_i64(f, "t.i16", &i) && i == -30000);
    assert_true(gguf_get_i64(f, "t.u32", &i) && i == 4000000000);
    assert_true(gguf_get_i64(f, "t.i32", &i) && i == -2000000000);
    assert_true(gguf_get_i64(f, "t.i64", &i) && i == INT64_MIN);
    assert_false(gguf_get_i64(f, "t.u64", &i)); /* past INT64_MAX */
    assert_false(gguf_get_i64(f, "t.f32", &i));
    assert_false(gguf_get_i64(f, "t.bool", &i));
    assert_false(gguf_get_i64(f, "general.name", &i));
    assert_false(gguf_get_i64(f, "t.arr_i32", &i));
    assert_false(gguf_get_i64(f, "absent", &i));
    assert_true(gguf_get_f64(f, "t.f32", &d) && d == 0.5);
    assert_true(gguf_get_f64(f, "t.f64", &d) && d == 10000.0);
    assert_true(gguf_get_f64(f, "t.i32", &d) && d == -2000000000.0);
    assert_true(gguf_get_f64(f, "t.u64", &d) && d == 18446744073709551615.0);
    assert_false(gguf_get_f64(f, "t.bool", &d));
    assert_false(gguf_get_f64(f, "general.name", &d));
    assert_true(gguf_get_bool(f, "t.bool", &b) && b);
    assert_true(gguf_get_bool(f, "t.false", &b) && !b);
    assert_false(gguf_get_bool(f, "t.u8", &b));
    assert_true(gguf_get_str(f, "general.name", &s) && s.len == 5 && memcmp(s.ptr, "hello", 5) == 0);
    assert_true(gguf_get_str(f, "t.empty_str", &s) && s.len == 0);
    assert_false(gguf_get_str(f, "t.arr_str", &s));
    assert_false(gguf_get_str(f, "t.u8", &s));
}

static void check_full_arrays(const gguf_file *f) {
    int64_t i;
    double d;
    const gguf_kv *kv = gguf_find(f, "t.arr_i32");
    assert_non_null(kv);
    assert_int_equal(kv->type, GGUF_ARRAY);
    assert_int_equal(kv->arr_type, GGUF_I32);
    assert_int_equal(kv->arr_n, 5);
    assert_true(gguf_arr_i64(kv, 1, &i) && i == -2);
    assert_true(gguf_arr_f64(kv, 4, &d) && d == 5.0);
    assert_false(gguf_arr_i64(kv, 5, &i));
    kv = gguf_find(f, "t.arr_f32");
    assert_true(gguf_arr_f64(kv, 0, &d) && d == 0.25);
    assert_false(gguf_arr_i64(kv, 0, &i));
    assert_false(gguf_arr_i64(gguf_find(f, "t.arr_u64"), 0, &i));
    assert_false(gguf_arr_f64(gguf_find(f, "t.arr_bool"), 0, &d));
    assert_false(gguf_arr_f64(gguf_find(f, "t.u8"), 0, &d)); /* a scalar is not an array */
    kv = gguf_find(f, "t.arr_str");
    assert_int_equal(kv->arr_type, GGUF_STRING);
    assert_int_equal(kv->arr_n, 3);
    assert_int_equal(kv->strs[0].len, 1);
    assert_int_equal(kv->strs[1].len, 0);
    assert_memory_equal(kv->strs[2].ptr, "y\"z", 3);
    assert_false(gguf_arr_f64(kv, 0, &d));
    kv = gguf_find(f, "t.arr_empty");
    assert_int_equal(kv->arr_n, 0);
    assert_false(gguf_arr_i64(kv, 0, &i));
    kv = gguf_find(f, "t.arr_empty_str");
    assert_int_equal(kv->arr_n, 0);
    assert_null(kv->strs);
}

static void check_full(uint32_t version, uint32_t align) {
    wbuf b = {0};
    uint8_t *copy;
    int rc = -99;
    char err[ERR_SIZE];
    build_full(&b, version, align);
    gguf_file *f = open_copy(&b, &copy, &rc, err);
    if (!f) print_message("unexpected error: %s\n", err);
    assert_non_null(f);
    assert_int_equal(rc, HEED_OK);
    assert_int_equal(f->version, version);
    assert_int_equal(f->file_size, b.n);
    assert_ptr_equal(f->map, copy);
    assert_string_equal(f->path, "t.gguf");
    assert_int_equal(f->n_kv, 24 + (align ? 1 : 0));
    assert_string_equal(f->kv[0].key, "t.u8");
    check_full_kvs(f);
    check_full_arrays(f);
    check_full_tensors(f, copy, align ? align : 32);
    gguf_close(f);
    free(copy);
    w_free(&b);
}

static void test_valid_v3(void **state) { check_full(3, 0); }
static void test_valid_v2(void **state) { check_full(2, 0); }
static void test_valid_align64(void **state) { check_full(3, 64); }
static void test_valid_align1(void **state) { check_full(3, 1); }

static void test_no_tensors(void **state) {
    gbuild g = {0};
    wbuf b = {0};
    uint8_t *copy;
    int rc;
    char err[ERR_SIZE];
    gb_str(&g, "general.architecture", "llama");
    gb_finish(&g, 3, &b);
    gguf_file *f = open_copy(&b, &copy, &rc, err);
    assert_non_null(f);
    assert_int_equal(f->n_tensors, 0);
    assert_int_equal(f->n_kv, 1);
    gguf_close(f);
    free(copy);
    w_free(&b);

    w_header(&b, 3, 0, 0); /* the smallest file: a bare header */
    f = open_copy(&b, &copy, &rc, err);
    assert_non_null(f);
    assert_int_equal(f->n_kv + f->n_tensors, 0);
    assert_null(gguf_find(f, "x"));
    gguf_close(f);
    free(copy);
    w_free(&b);
}

/* ------------------------------------------------------- corrupt files */

static const int64_t NE_1[] = {32};

/* One tensor `name` with its data, after a header with no keys. */
static void one_tensor(wbuf *b, const char *name, int n_dims, const int64_t *ne, uint32_t type,
                       uint64_t offset, size_t n_data) {
    gbuild g = {0};
    gb_tensor_raw(&g, name, n_dims, ne, type, offset);
    for (size_t i = 0; i < n_data; i++) w_u8(&g.data, 0);
    gb_finish(&g, 3, b);
}

static void c_empty(wbuf *b) { (void)b; }
static void c_short_header(wbuf *b) { w_bytes(b, "GGUF\3\0\0\0\0\0", 10); }
static void c_bad_magic(wbuf *b) { w_u32(b, 0x46554746u), w_u32(b, 3), w_u64(b, 0), w_u64(b, 0); }
static void c_version1(wbuf *b) { w_header(b, 1, 0, 0); }
static void c_version4(wbuf *b) { w_header(b, 4, 0, 0); }
static void c_big_endian(wbuf *b) { w_header(b, 0x03000000u, 0, 0); }
static void c_nkv_huge(wbuf *b) { w_header(b, 3, 0, 1ull << 62); }
static void c_ntensors_huge(wbuf *b) { w_header(b, 3, 1ull << 62, 0); }

static void c_nkv_past_end(wbuf *b) {
    w_header(b, 3, 0, 2);
    w_str(b, "a"), w_u32(b, GGUF_U8), w_u8(b, 1); /* 14 bytes: one key, not two */
}

static void c_key_len_huge(wbuf *b) {
    w_header(b, 3, 0, 1);
    w_u64(b, UINT64_MAX);
    w_bytes(b, "abcde", 5);
}

static void c_key_nul(wbuf *b) {
    w_header(b, 3, 0, 1);
    w_u64(b, 3), w_bytes(b, "a\0b", 3), w_u32(b, GGUF_U8), w_u8(b, 1);
}

static void c_str_past_end(wbuf *b) {
    w_header(b, 3, 0, 1);
    w_str(b, "general.name"), w_u32(b, GGUF_STRING), w_u64(b, 100), w_bytes(b, "abc", 3);
}

static void c_str_len_huge(wbuf *b) {
    w_header(b, 3, 0, 1);
    w_str(b, "general.name"), w_u32(b, GGUF_STRING), w_u64(b, UINT64_MAX), w_bytes(b, "abc", 3);
}

static void c_scalar_truncated(wbuf *b) {
    w_header(b, 3, 0, 1);
    w_str(b, "a"), w_u32(b, GGUF_U64), w_bytes(b, "abc", 3);
}

static void c_arr_count_huge(wbuf *b) {
    w_header(b, 3, 0, 1);
    w_str(b, "a"), w_u32(b, GGUF_ARRAY), w_u32(b, GGUF_U32), w_u64(b, 1ull << 62), w_u32(b, 7);
}

static void c_arr_count_wrap(wbuf *b) { /* count * 8 wraps to 8 in 64 bits */
    w_header(b, 3, 0, 1);
    w_str(b, "a"), w_u32(b, GGUF_ARRAY), w_u32(b, GGUF_U64), w_u64(b, (1ull << 61) + 1), w_u64(b, 7);
}

static void c_str_arr_count_huge(wbuf *b) {
    w_header(b, 3, 0, 1);
    w_str(b, "a"), w_u32(b, GGUF_ARRAY), w_u32(b, GGUF_STRING), w_u64(b, UINT64_MAX), w_str(b, "x");
}

static void c_str_arr_elem_past_end(wbuf *b) {
    w_header(b, 3, 0, 1);
    w_str(b, "a"), w_u32(b, GGUF_ARRAY), w_u32(b, GGUF_STRING), w_u64(b, 2);
    w_str(b, "x"), w_u64(b, 50), w_bytes(b, "yz", 2);
}

static void c_vtype_13(wbuf *b) {
    w_header(b, 3, 0, 1);
    w_str(b, "a"), w_u32(b, 13), w_u32(b, 0);
}

static void c_vtype_max(wbuf *b) {
    w_header(b, 3, 0, 1);
    w_str(b, "a"), w_u32(b, 0xFFFFFFFFu), w_u32(b, 0);
}

static void c_arr_elem_type(wbuf *b) {
    w_header(b, 3, 0, 1);
    w_str(b, "a"), w_u32(b, GGUF_ARRAY), w_u32(b, 13), w_u64(b, 0);
}

static void c_nested_array(wbuf *b) {
    w_header(b, 3, 0, 1);
    w_str(b, "a"), w_u32(b, GGUF_ARRAY), w_u32(b, GGUF_ARRAY), w_u64(b, 1);
    w_u32(b, GGUF_U8), w_u64(b, 1), w_u8(b, 1);
}

static void c_dup_key(wbuf *b) {
    gbuild g = {0};
    gb_u32(&g, "a", 1);
    gb_str(&g, "b", "x");
    gb_u32(&g, "a", 2);
    gb_finish(&g, 3, b);
}

static void c_dup_long_key(wbuf *b) { /* messages quote at most 64 bytes, control bytes as '?' */
    char key[71];
    memset(key, 'k', 70);
    key[0] = '\x01';
    key[70] = '\0';
    gbuild g = {0};
    gb_u32(&g, key, 1);
    gb_u32(&g, key, 2);
    gb_finish(&g, 3, b);
}

static void c_dup_tensor(wbuf *b) {
    gbuild g = {0};
    gb_tensor(&g, "w", 1, NE_1, GGML_F32, 128, NULL);
    gb_tensor(&g, "w", 1, NE_1, GGML_F32, 128, NULL);
    gb_finish(&g, 3, b);
}

static void c_tensor_name_huge(wbuf *b) {
    w_header(b, 3, 1, 0);
    w_u64(b, UINT64_MAX), w_bytes(b, "abcdefghijklmnopqrstuvwxyz0123456789", 36);
}

static void c_ndims0(wbuf *b) { one_tensor(b, "w", 0, NE_1, GGML_F32, 0, 128); }

static void c_ndims5(wbuf *b) {
    static const int64_t ne[5] = {32, 1, 1, 1, 1};
    one_tensor(b, "w", 5, ne, GGML_F32, 0, 128);
}

static void c_ne_zero(wbuf *b) {
    static const int64_t ne[2] = {32, 0};
    one_tensor(b, "w", 2, ne, GGML_F32, 0, 128);
}

static void c_ne_negative(wbuf *b) {
    static const int64_t ne[1] = {-1};
    one_tensor(b, "w", 1, ne, GGML_F32, 0, 128);
}

static void c_ne_overflow(wbuf *b) {
    static const int64_t ne[2] = {1ll << 40, 1ll << 40};
    one_tensor(b, "w", 2, ne, GGML_F32, 0, 128);
}

static void c_bytes_overflow(wbuf *b) { /* elements fit in int64, bytes do not */
    static const int64_t ne[2] = {1ll << 31, 1ll << 31};
    one_tensor(b, "w", 2, ne, GGML_F32, 0, 128);
}

static void c_type_99(wbuf *b) { one_tensor(b, "w", 1, NE_1, 99, 0, 128); }
static void c_type_retired(wbuf *b) { one_tensor(b, "w", 1, NE_1, 4, 0, 128); }

/* IQ2_XXS (16): a type ggml defines and heed cannot run */
static void c_type_iq2xxs(wbuf *b) {
    static const int64_t ne[2] = {256, 1};
    one_tensor(b, "blk.0.attn_q.weight", 2, ne, 16, 0, 66);
}

static void c_q8_0_ne33(wbuf *b) {
    static const int64_t ne[1] = {33};
    one_tensor(b, "w", 1, ne, GGML_Q8_0, 0, 68);
}

static void c_misaligned(wbuf *b) { one_tensor(b, "w", 1, NE_1, GGML_F32, 16, 160); }

static void c_past_end(wbuf *b) {
    static const int64_t ne[2] = {32, 2};
    one_tensor(b, "blk.3.attn_q.weight", 2, ne, GGML_F32, 0, 255);
}

static void c_offset_huge(wbuf *b) { one_tensor(b, "w", 1, NE_1, GGML_F32, UINT64_MAX - 31, 128); }

static void c_second_past_end(wbuf *b) {
    gbuild g = {0};
    gb_tensor(&g, "first", 1, NE_1, GGML_F32, 128, NULL);
    gb_tensor_raw(&g, "second", 1, NE_1, GGML_F32, 128);
    gb_finish(&g, 3, b);
}

static void c_align0(wbuf *b) {
    gbuild g = {0};
    gb_u32(&g, "general.alignment", 0);
    gb_finish(&g, 3, b);
}

static void c_align3(wbuf *b) {
    gbuild g = {0};
    gb_str(&g, "x", "y");
    gb_u32(&g, "general.alignment", 3);
    gb_finish(&g, 3, b);
}

static void c_align_string(wbuf *b) {
    gbuild g = {0};
    gb_str(&g, "general.alignment", "32");
    gb_finish(&g, 3, b);
}

static void c_align_u64(wbuf *b) {
    gbuild g = {0};
    gb_key(&g, "general.alignment", GGUF_U64), w_u64(&g.kv, 32);
    gb_finish(&g, 3, b);
}

static void c_infos_truncated(wbuf *b) {
    w_header(b, 3, 1, 0);
    w_str(b, "w"), w_u32(b, 2), w_u64(b, 32), w_u64(b, 2), w_u32(b, GGML_F32), w_u32(b, 0);
}

struct corrupt_case {
    const char *what;
    void (*build)(wbuf *b);
    int rc;
    const char *msg; /* a substring of the message */
};

static const struct corrupt_case corrupt_cases[] = {
    {"empty", c_empty, HEED_ERR_FORMAT, "t.gguf: header: magic: truncated (needs 4 bytes, 0 left)"},
    {"short header", c_short_header, HEED_ERR_FORMAT, "t.gguf: header: n_tensors: truncated"},
    {"bad magic", c_bad_magic, HEED_ERR_FORMAT, "t.gguf: header: bad magic 0x46554746"},
    {"version 1", c_version1, HEED_ERR_UNSUPPORTED, "t.gguf: header: unsupported version 1"},
    {"version 4", c_version4, HEED_ERR_UNSUPPORTED, "t.gguf: header: unsupported version 4"},
    {"big-endian", c_big_endian, HEED_ERR_UNSUPPORTED, "big-endian"},
    {"n_kv huge", c_nkv_huge, HEED_ERR_FORMAT, "t.gguf: header: n_kv 4611686018427387904 exceeds"},
    {"n_tensors huge", c_ntensors_huge, HEED_ERR_FORMAT, "t.gguf: header: n_tensors 4611686018427387904 exceeds"},
    {"n_kv past end", c_nkv_past_end, HEED_ERR_FORMAT, "t.gguf: header: n_kv 2 exceeds what the 14 bytes left"},
    {"key length huge", c_key_len_huge, HEED_ERR_FORMAT,
     "t.gguf: key #0: name length 18446744073709551615 exceeds the 5 bytes left"},
    {"key with NUL", c_key_nul, HEED_ERR_FORMAT, "t.gguf: key #0: name contains a NUL byte"},
    {"string past end", c_str_past_end, HEED_ERR_FORMAT,
     "t.gguf: key #0 ('general.name'): string length 100 exceeds the 3 bytes left"},
    {"string length huge", c_str_len_huge, HEED_ERR_FORMAT,
     "t.gguf: key #0 ('general.name'): string length 18446744073709551615 exceeds the 3 bytes left"},
    {"scalar truncated", c_scalar_truncated, HEED_ERR_FORMAT,
     "t.gguf: key #0 ('a'): u64: truncated (needs 8 bytes, 3 left)"},
    {"array count huge", c_arr_count_huge, HEED_ERR_FORMAT,
     "t.gguf: key #0 ('a'): array count 4611686018427387904 of u32 exceeds what the 4 bytes left"},
    {"array count wraps", c_arr_count_wrap, HEED_ERR_FORMAT, "t.gguf: key #0 ('a'): array count 2305843009213693953"},
    {"string array count huge", c_str_arr_count_huge, HEED_ERR_FORMAT,
     "t.gguf: key #0 ('a'): array count 18446744073709551615 exceeds"},
    {"string array element past end", c_str_arr_elem_past_end, HEED_ERR_FORMAT,
     "t.gguf: key #0 ('a'): string #1: length 50 exceeds the 2 bytes left"},
    {"value type 13", c_vtype_13, HEED_ERR_FORMAT, "t.gguf: key #0 ('a'): unknown value type 13"},
    {"value type 2^32-1", c_vtype_max, HEED_ERR_FORMAT, "t.gguf: key #0 ('a'): unknown value type 4294967295"},
    {"array element type 13", c_arr_elem_type, HEED_ERR_FORMAT, "t.gguf: key #0 ('a'): unknown array element type 13"},
    {"nested array", c_nested_array, HEED_ERR_UNSUPPORTED, "t.gguf: key #0 ('a'): nested arrays"},
    {"duplicate key", c_dup_key, HEED_ERR_FORMAT, "t.gguf: key #2 ('a'): duplicate key (first at key #0)"},
    {"duplicate long key", c_dup_long_key, HEED_ERR_FORMAT,
     "t.gguf: key #1 ('?kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk...'): duplicate key"},
    {"duplicate tensor", c_dup_tensor, HEED_ERR_FORMAT, "t.gguf: tensor #1 ('w'): duplicate tensor name"},
    {"tensor name huge", c_tensor_name_huge, HEED_ERR_FORMAT,
     "t.gguf: tensor #0: name length 18446744073709551615 exceeds the 36 bytes left"},
    {"n_dims 0", c_ndims0, HEED_ERR_FORMAT, "t.gguf: tensor #0 ('w'): n_dims 0 outside 1..4"},
    {"n_dims 5", c_ndims5, HEED_ERR_FORMAT, "t.gguf: tensor #0 ('w'): n_dims 5 outside 1..4"},
    {"ne 0", c_ne_zero, HEED_ERR_FORMAT, "t.gguf: tensor #0 ('w'): ne[1] = 0 is not positive"},
    {"ne negative", c_ne_negative, HEED_ERR_FORMAT, "t.gguf: tensor #0 ('w'): ne[0] = -1 is not positive"},
    {"ne overflow", c_ne_overflow, HEED_ERR_FORMAT, "t.gguf: tensor #0 ('w'): element count overflows"},
    {"byte size overflow", c_bytes_overflow, HEED_ERR_FORMAT, "t.gguf: tensor #0 ('w'): byte size overflows"},
    {"type 99", c_type_99, HEED_ERR_FORMAT, "t.gguf: tensor #0 ('w'): unknown tensor type 99"},
    {"retired type 4", c_type_retired, HEED_ERR_FORMAT, "t.gguf: tensor #0 ('w'): unknown tensor type 4"},
    {"IQ2_XXS", c_type_iq2xxs, HEED_ERR_UNSUPPORTED,
     "t.gguf: unsupported tensor type IQ2_XXS for tensor 'blk.0.attn_q.weight'"},
    {"Q8_0 ne0 33", c_q8_0_ne33, HEED_ERR_FORMAT,
     "t.gguf: tensor #0 ('w'): ne[0] = 33 is not a multiple of the Q8_0 block size 32"},
    {"misaligned offset", c_misaligned, HEED_ERR_FORMAT,
     "t.gguf: tensor #0 ('w'): offset 16 is not a multiple of the alignment 32"},
    {"past end", c_past_end, HEED_ERR_FORMAT, "t.gguf: tensor 'blk.3.attn_q.weight' extends past end of file"},
    {"offset huge", c_offset_huge, HEED_ERR_FORMAT, "t.gguf: tensor 'w' extends past end of file"},
    {"second past end", c_second_past_end, HEED_ERR_FORMAT, "t.gguf: tensor 'second' extends past end of file"},
    {"tensor infos truncated", c_infos_truncated, HEED_ERR_FORMAT, "t.gguf: tensor #0 ('w'): offset: truncated"},
    {"alignment 0", c_align0, HEED_ERR_FORMAT,
     "t.gguf: key #0 ('general.alignment'): alignment 0 is not a nonzero power of two"},
    {"alignment 3", c_align3, HEED_ERR_FORMAT,
     "t.gguf: key #1 ('general.alignment'): alignment 3 is not a nonzero power of two"},
    {"alignment string", c_align_string, HEED_ERR_FORMAT,
     "t.gguf: key #0 ('general.alignment'): has type string, expected u32"},
    {"alignment u64", c_align_u64, HEED_ERR_FORMAT, "('general.alignment'): has type u64, expected u32"},
};

static void test_corrupt_table(void **state) {
    size_t n = sizeof corrupt_cases / sizeof corrupt_cases[0];
    for (size_t i = 0; i < n; i++) {
        const struct corrupt_case *c = &corrupt_cases[i];
        wbuf b = {0};
        uint8_t *copy;
        int rc = -99;
        char err[ERR_SIZE];
        c->build(&b);
        gguf_file *f = open_copy(&b, &copy, &rc, err);
        if (f || rc != c->rc || !strstr(err, c->msg))
            print_message("case '%s': rc %d (want %d), message \"%s\", want \"%s\"\n", c->what, rc, c->rc, err,
                          c->msg);
        assert_null(f);
        assert_int_equal(rc, c->rc);
        assert_non_null(strstr(err, c->msg));
        free(copy);
        w_free(&b);
    }
}

/* Every strict prefix of a valid file fails cleanly: the truncation is
 * caught before any read (ASan checks the exact-size copies). */
static void test_truncation_sweep(void **state) {
    wbuf b = {0};
    build_full(&b, 3, 0);
    for (size_t len = 0; len < b.n; len++) {
        wbuf prefix = {b.p, len, len};
        uint8_t *copy;
        int rc = -99;
        char err[ERR_SIZE];
        gguf_file *f = open_copy(&prefix, &copy, &rc, err);
        if (f || rc != HEED_ERR_FORMAT) print_message("prefix of %zu bytes: rc %d: %s\n", len, rc, err);
        assert_null(f);
        assert_int_equal(rc, HEED_ERR_FORMAT);
        assert_memory_equal(err, "t.gguf: ", 8);
        free(copy);
    }
    w_free(&b);
}

/* A tiny error buffer truncates the message but never overflows it. */
static void test_error_buffer(void **state) {
    wbuf b = {0};
    uint8_t *copy = NULL;
    char small[8];
    int rc;
    c_str_past_end(&b);
    assert_null(gguf_open_buffer(b.p, b.n, "t.gguf", &rc, small, sizeof small));
    assert_string_equal(small, "t.gguf:");
    assert_null(gguf_open_buffer(b.p, b.n, NULL, NULL, NULL, 0));
    char err[ERR_SIZE];
    assert_null(open_copy(&b, &copy, &rc, err));
    free(copy);
    w_free(&b);
}

/* ---------------------------------------------------------- formatting */

static void expect_format(const gguf_file *f, const char *key, int max_elems, const char *want) {
    char buf[256];
    const gguf_kv *kv = gguf_find(f, key);
    assert_non_null(kv);
    int n = gguf_kv_format(kv, buf, sizeof buf, max_elems);
    if (strcmp(buf, want) != 0) print_message("%s: got '%s', want '%s'\n", key, buf, want);
    assert_string_equal(buf, want);
    assert_int_equal(n, strlen(want));
}

static void test_kv_format(void **state) {
    wbuf b = {0};
    uint8_t *copy;
    int rc;
    char err[ERR_SIZE];
    build_full(&b, 3, 0);
    gguf_file *f = open_copy(&b, &copy, &rc, err);
    assert_non_null(f);
    expect_format(f, "t.u8", 4, "200");
    expect_format(f, "t.i8", 4, "-5");
    expect_format(f, "t.u32", 4, "4000000000");
    expect_format(f, "t.i16", 4, "-30000");
    expect_format(f, "t.f32", 4, "0.5");
    expect_format(f, "t.eps", 4, "1e-05");
    expect_format(f, "t.f64", 4, "10000");
    expect_format(f, "t.u64", 4, "18446744073709551615");
    expect_format(f, "t.i64", 4, "-9223372036854775808");
    expect_format(f, "t.bool", 4, "true");
    expect_format(f, "t.false", 4, "false");
    expect_format(f, "general.name", 4, "\"hello\"");
    expect_format(f, "t.empty_str", 4, "\"\"");
    expect_format(f, "t.escape", 4, "\"a\\\"b\\\\\\n\\t\\x01z\"");
    expect_format(f, "t.arr_i32", 3, "[1, -2, 3, ... (5 total)]");
    expect_format(f, "t.arr_i32", 5, "[1, -2, 3, -4, 5]");
    expect_format(f, "t.arr_i32", 0, "[... (5 total)]");
    expect_format(f, "t.arr_f32", 8, "[0.25, -1]");
    expect_format(f, "t.arr_bool", 8, "[true, false]");
    expect_format(f, "t.arr_u64", 8, "[18446744073709551615]");
    expect_format(f, "t.arr_str", 8, "[\"x\", \"\", \"y\\\"z\"]");
    expect_format(f, "t.arr_str", 1, "[\"x\", ... (3 total)]");
    expect_format(f, "t.arr_empty", 8, "[]");
    expect_format(f, "t.arr_empty_str", 8, "[]");

    /* snprintf semantics: the full length comes back, the text is cut and terminated */
    char small[6];
    const gguf_kv *kv = gguf_find(f, "t.arr_i32");
    assert_int_equal(gguf_kv_format(kv, small, sizeof small, 5), strlen("[1, -2, 3, -4, 5]"));
    assert_string_equal(small, "[1, -");
    assert_int_equal(gguf_kv_format(kv, NULL, 0, 5), strlen("[1, -2, 3, -4, 5]"));
    gguf_close(f);
    free(copy);
    w_free(&b);
}

static void test_type_tables(void **state) {
    static const struct {
        int type;
        const char *name;
        size_t bytes;
        int elems;
        bool supported;
    } want[] = {
        {GGML_F32, "F32", 4, 1, true},         {GGML_F16, "F16", 2, 1, true},
        {GGML_BF16, "BF16", 2, 1, true},       {GGML_Q8_0, "Q8_0", 34, 32, true},
        {GGML_Q4_0, "Q4_0", 18, 32, true},    {GGML_Q4_1, "Q4_1", 20, 32, true},
        {GGML_Q5_0, "Q5_0", 22, 32, true},    {GGML_Q5_1, "Q5_1", 24, 32, true},
        {GGML_Q8_1, "Q8_1", 36, 32, false},    {GGML_Q2_K, "Q2_K", 84, 256, true},
        {GGML_Q3_K, "Q3_K", 110, 256, true},   {GGML_Q4_K, "Q4_K", 144, 256, true},
        {GGML_Q5_K, "Q5_K", 176, 256, true},  {GGML_Q6_K, "Q6_K", 210, 256, true},
        {GGML_Q8_K, "Q8_K", 292, 256, false},  {GGML_IQ4_NL, "IQ4_NL", 18, 32, true},
        {GGML_IQ4_XS, "IQ4_XS", 136, 256, true}, {16, "IQ2_XXS", 66, 256, false},
        {4, "unknown", 0, 0, false},
        {99, "unknown", 0, 0, false},          {-1, "unknown", 0, 0, false},
        {GGML_TYPE_COUNT, "unknown", 0, 0, false},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_string_equal(gguf_type_name(want[i].type), want[i].name);
        assert_int_equal(gguf_type_block_bytes(want[i].type), want[i].bytes);
        assert_int_equal(gguf_type_block_elems(want[i].type), want[i].elems);
        assert_int_equal(gguf_type_supported(want[i].type), want[i].supported);
    }
    assert_string_equal(gguf_vtype_name(GGUF_U8), "u8");
    assert_string_equal(gguf_vtype_name(GGUF_STRING), "string");
    assert_string_equal(gguf_vtype_name(GGUF_ARRAY), "array");
    assert_string_equal(gguf_vtype_name(GGUF_F64), "f64");
    assert_string_equal(gguf_vtype_name(GGUF_VTYPE_COUNT), "unknown");
    assert_string_equal(gguf_vtype_name(-1), "unknown");
}

/* ---------------------------------------------------------- real files */

static void write_file(const char *path, const wbuf *b) {
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(b->p, 1, b->n, fp), b->n);
    assert_int_equal(fclose(fp), 0);
}

static void test_open_errors(void **state) {
    char err[ERR_SIZE];
    int rc = 0;
    assert_null(gguf_open("no/such/dir/model.gguf", &rc, err, sizeof err));
    assert_int_equal(rc, HEED_ERR_IO);
    assert_non_null(strstr(err, "no/such/dir/model.gguf"));

    assert_null(gguf_open("tests", &rc, err, sizeof err));
    assert_int_equal(rc, HEED_ERR_IO);
    assert_non_null(strstr(err, "tests: is a directory"));

    char path[] = "/tmp/heed_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_null(gguf_open(path, &rc, err, sizeof err));
    assert_int_equal(rc, HEED_ERR_FORMAT);
    assert_non_null(strstr(err, path));

    wbuf b = {0};
    c_past_end(&b);
    write_file(path, &b);
    assert_null(gguf_open(path, &rc, err, sizeof err));
    assert_int_equal(rc, HEED_ERR_FORMAT);
    assert_non_null(strstr(err, "tensor 'blk.3.attn_q.weight' extends past end of file"));
    w_free(&b);
    unlink(path);
}

/* A FIFO, a device or a directory given as the model is refused at once
 * with a message naming it: open() of a FIFO would wait for a writer
 * forever, /dev/zero would never end. alarm() turns a regression into a
 * failure, not a hang. */
static void on_alarm(int sig) {
    static const char msg[] = "FAIL: test_gguf: opening a FIFO or a device as a model hung\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

static void expect_not_regular(const char *path, const char *why) {
    char err[ERR_SIZE], want[ERR_SIZE];
    snprintf(want, sizeof want, "%s: %s", path, why);
    int rc = 0;
    assert_null(gguf_open(path, &rc, err, sizeof err));
    assert_int_equal(rc, HEED_ERR_IO);
    if (!strstr(err, want)) fail_msg("gguf_open: '%s' lacks '%s'", err, want);
    heed_model *m = NULL;
    assert_int_equal(heed_model_load(path, NULL, &m, err, sizeof err), HEED_ERR_IO);
    assert_null(m);
    if (!strstr(err, want)) fail_msg("heed_model_load: '%s' lacks '%s'", err, want);
}

static void test_open_not_regular(void **state) {
    char dir[] = "/tmp/heed_test_gguf_XXXXXX", fifo[64], link[64];
    assert_non_null(mkdtemp(dir));
    snprintf(fifo, sizeof fifo, "%s/m.gguf", dir);
    snprintf(link, sizeof link, "%s/link.gguf", dir);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    assert_int_equal(symlink("m.gguf", link), 0);
    signal(SIGALRM, on_alarm);
    alarm(30);
    expect_not_regular(fifo, "not a regular file (a FIFO)");
    expect_not_regular(link, "not a regular file (a FIFO)");
    if (access("/dev/zero", R_OK) == 0) expect_not_regular("/dev/zero", "not a regular file (a character device)");
    else print_message("SKIP: /dev/zero is absent\n");
    alarm(0);
    signal(SIGALRM, SIG_DFL);
    unlink(link);
    unlink(fifo);
    rmdir(dir);
}

/* The mmap path: the same file as the in-memory tests, from disk. */
static void test_open_file(void **state) {
    char path[] = "/tmp/heed_test_gguf_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    wbuf b = {0};
    build_full(&b, 3, 64);
    write_file(path, &b);
    char err[ERR_SIZE];
    int rc = -99;
    gguf_file *f = gguf_open(path, &rc, err, sizeof err);
    if (!f) print_message("%s\n", err);
    assert_non_null(f);
    assert_int_equal(rc, HEED_OK);
    assert_string_equal(f->path, path);
    assert_memory_equal(f->map, b.p, b.n);
    check_full_tensors(f, f->map, 64);
    gguf_close(f);
    gguf_close(NULL);
    unlink(path);
    w_free(&b);
}

static void test_stories260k(void **state) {
    char err[ERR_SIZE];
    int rc = -99;
    gguf_file *f = gguf_open(MODEL_PATH, &rc, err, sizeof err);
    if (!f) print_message("%s (run the tests from the repository root)\n", err);
    assert_non_null(f);
    gguf_str s;
    int64_t i;
    assert_true(gguf_get_str(f, "general.architecture", &s));
    assert_int_equal(s.len, 5);
    assert_memory_equal(s.ptr, "llama", 5);
    assert_true(gguf_get_i64(f, "llama.block_count", &i) && i == 5);
    assert_true(gguf_get_i64(f, "llama.embedding_length", &i) && i == 64);
    const gguf_kv *tokens = gguf_find(f, "tokenizer.ggml.tokens");
    assert_non_null(tokens);
    assert_int_equal(tokens->type, GGUF_ARRAY);
    assert_int_equal(tokens->arr_type, GGUF_STRING);
    assert_int_equal(tokens->arr_n, 512);
    const gguf_tensor *t = gguf_find_tensor(f, "token_embd.weight");
    assert_non_null(t);
    assert_int_equal(t->type, GGML_F32);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 64);
    assert_int_equal(t->ne[1], 512);
    assert_int_equal(t->n_bytes, 64 * 512 * 4);
    assert_non_null(gguf_find_tensor(f, "blk.0.attn_q.weight"));
    for (int k = 0; k < f->n_tensors; k++) {
        t = &f->tensors[k];
        assert_true(t->offset >= f->data_offset);
        assert_true(t->offset + t->n_bytes <= f->file_size);
        assert_ptr_equal(t->data, f->map + t->offset);
        assert_int_equal((t->offset - f->data_offset) % f->alignment, 0);
    }
    char buf[128];
    assert_true(gguf_kv_format(tokens, buf, sizeof buf, 3) > 0);
    assert_non_null(strstr(buf, "(512 total)]"));
    gguf_close(f);
}

static void test_tiny_llama3_q8_0(void **state) {
    char path[512], err[ERR_SIZE];
    if (!tu_shared("models/tiny-llama3-q8_0.gguf", path, sizeof path)) skip();
    int rc = -99;
    gguf_file *f = gguf_open(path, &rc, err, sizeof err);
    if (!f) print_message("%s\n", err);
    assert_non_null(f);
    const gguf_kv *tokens = gguf_find(f, "tokenizer.ggml.tokens");
    assert_non_null(tokens);
    assert_int_equal(tokens->arr_type, GGUF_STRING);
    assert_int_equal(tokens->arr_n, 128256);
    int n_q8 = 0;
    for (int k = 0; k < f->n_tensors; k++) n_q8 += f->tensors[k].type == GGML_Q8_0;
    assert_true(n_q8 > 0);
    const gguf_tensor *t = gguf_find_tensor(f, "blk.0.attn_q.weight");
    assert_non_null(t);
    assert_int_equal(t->type, GGML_Q8_0);
    assert_int_equal(t->n_bytes, (uint64_t)t->ne[0] / 32 * 34 * (uint64_t)t->ne[1]);
    gguf_close(f);
}

/* ---------------------------------------------------------- fuzz corpus */

/* The seeds in tests/fuzz/corpus_gguf are built here (HEED_WRITE_CORPUS=dir)
 * so that they stay in step with the writer. */
static void write_corpus(const char *dir) {
    wbuf b = {0};
    char path[512];
    build_full(&b, 3, 0);
    snprintf(path, sizeof path, "%s/full_v3.gguf", dir);
    write_file(path, &b);
    w_free(&b);
    build_full(&b, 2, 64);
    snprintf(path, sizeof path, "%s/full_v2_align64.gguf", dir);
    write_file(path, &b);
    w_free(&b);
    gbuild g = {0};
    gb_str(&g, "general.architecture", "llama");
    gb_arr_head(&g, "tokenizer.ggml.tokens", GGUF_STRING, 2);
    w_str(&g.kv, "<s>"), w_str(&g.kv, "a");
    gb_tensor(&g, "token_embd.weight", 2, (const int64_t[]){4, 2}, GGML_F32, 32, NULL);
    gb_finish(&g, 3, &b);
    snprintf(path, sizeof path, "%s/small.gguf", dir);
    write_file(path, &b);
    w_free(&b);
}

/* Replays the fuzz corpus (seeds and any crashers saved there): whatever
 * the verdict, no file may crash the reader. */
static void test_corpus_replay(void **state) {
    const char *dir = getenv("HEED_WRITE_CORPUS");
    if (dir) write_corpus(dir);
    DIR *d = opendir(CORPUS_DIR);
    if (!d) {
        print_message("SKIP: %s is absent (run from the repository root)\n", CORPUS_DIR);
        skip();
    }
    int n_files = 0, n_ok = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[1024], err[ERR_SIZE];
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", CORPUS_DIR, e->d_name);
        int rc;
        gguf_file *f = gguf_open(path, &rc, err, sizeof err);
        n_files++;
        n_ok += f != NULL;
        gguf_close(f);
    }
    closedir(d);
    assert_true(n_files > 0);
    assert_true(n_ok > 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_v3),        cmocka_unit_test(test_valid_v2),
        cmocka_unit_test(test_valid_align64),   cmocka_unit_test(test_valid_align1),
        cmocka_unit_test(test_no_tensors),      cmocka_unit_test(test_corrupt_table),
        cmocka_unit_test(test_truncation_sweep), cmocka_unit_test(test_error_buffer),
        cmocka_unit_test(test_kv_format),       cmocka_unit_test(test_type_tables),
        cmocka_unit_test(test_open_errors),     cmocka_unit_test(test_open_file),
        cmocka_unit_test(test_open_not_regular),
        cmocka_unit_test(test_stories260k),     cmocka_unit_test(test_tiny_llama3_q8_0),
        cmocka_unit_test(test_corpus_replay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
