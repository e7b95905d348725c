/*
 * test_gguf_write - the GGUF writer, checked by reading its files back with
 * the (independently tested) reader: every value type, string and numeric
 * arrays, tensors of several types at a non-default alignment, streamed
 * data, and the writer's own argument checks.
 */
#include "testutil.h"

#include <math.h>

#include "gguf.h"
#include "gguf_write.h"
#include "heed.h"
#include "kern.h"

static void tmp_path(char *buf, size_t n, const char *tag) {
    snprintf(buf, n, "/tmp/heed_test_gguf_write_%d_%s.gguf", (int)getpid(), tag);
}

static void test_round_trip(void **state) {
    (void)state;
    char path[128];
    tmp_path(path, sizeof path, "rt");
    gguf_writer *w = gguf_writer_new(64);
    assert_non_null(w);
    assert_int_equal(gguf_writer_kv_u8(w, "t.u8", 200), HEED_OK);
    assert_int_equal(gguf_writer_kv_i8(w, "t.i8", -100), HEED_OK);
    assert_int_equal(gguf_writer_kv_u16(w, "t.u16", 60000), HEED_OK);
    assert_int_equal(gguf_writer_kv_i16(w, "t.i16", -30000), HEED_OK);
    assert_int_equal(gguf_writer_kv_u32(w, "t.u32", 4000000000u), HEED_OK);
    assert_int_equal(gguf_writer_kv_i32(w, "t.i32", -2000000000), HEED_OK);
    assert_int_equal(gguf_writer_kv_u64(w, "t.u64", UINT64_C(1) << 60), HEED_OK);
    assert_int_equal(gguf_writer_kv_i64(w, "t.i64", -(INT64_C(1) << 60)), HEED_OK);
    assert_int_equal(gguf_writer_kv_f32(w, "t.f32", 1.5f), HEED_OK);
    assert_int_equal(gguf_writer_kv_f64(w, "t.f64", -2.25), HEED_OK);
    assert_int_equal(gguf_writer_kv_bool(w, "t.bool", true), HEED_OK);
    assert_int_equal(gguf_writer_kv_str(w, "t.str", "héllo"), HEED_OK);
    const char *strs[] = {"<unk>", "", "abc"};
    assert_int_equal(gguf_writer_kv_arr_str(w, "t.strs", strs, 3), HEED_OK);
    const float fa[] = {0.5f, -1.0f, 3.0f, 1e-3f};
    assert_int_equal(gguf_writer_kv_arr(w, "t.f32s", GGUF_F32, fa, 4), HEED_OK);
    const int32_t ia[] = {1, -2, 3};
    assert_int_equal(gguf_writer_kv_arr(w, "t.i32s", GGUF_I32, ia, 3), HEED_OK);
    assert_int_equal(gguf_writer_kv_arr(w, "t.empty", GGUF_U8, NULL, 0), HEED_OK);

    /* tensors: f32 vector, f16 matrix, q8_0 matrix, q4_K matrix */
    float v[5] = {1, 2, 3, 4, 5};
    uint16_t h[3 * 4];
    for (int i = 0; i < 12; i++) h[i] = kern_f32_to_f16((float)i * 0.25f);
    float src[2 * 256];
    for (int i = 0; i < 512; i++) src[i] = sinf((float)i);
    block_q8_0 q8[2 * 64 / QK8_0];
    kern_quantize_q8_0(q8, src, 128);
    block_q4_K q4[2];
    kern_quantize(GGML_Q4_K, q4, src, 512);
    assert_int_equal(gguf_writer_add_tensor(w, "v", 1, (const int64_t[]){5}, GGML_F32, v), HEED_OK);
    assert_int_equal(gguf_writer_add_tensor(w, "h", 2, (const int64_t[]){4, 3}, GGML_F16, h), HEED_OK);
    assert_int_equal(gguf_writer_add_tensor(w, "q8", 2, (const int64_t[]){64, 2}, GGML_Q8_0, q8), HEED_OK);
    assert_int_equal(gguf_writer_add_tensor(w, "q4k", 3, (const int64_t[]){256, 2, 1}, GGML_Q4_K, q4), HEED_OK);
    assert_int_equal(gguf_writer_write_file(w, path), HEED_OK);
    gguf_writer_free(w);

    char err[256];
    int rc;
    gguf_file *f = gguf_open(path, &rc, err, sizeof err);
    if (!f) fail_msg("gguf_open: %s", err);
    assert_int_equal(f->version, 3);
    assert_int_equal(f->alignment, 64);
    int64_t i;
    double d;
    bool b;
    gguf_str s;
    assert_true(gguf_get_i64(f, "t.u8", &i) && i == 200);
    assert_true(gguf_get_i64(f, "t.i8", &i) && i == -100);
    assert_true(gguf_get_i64(f, "t.u16", &i) && i == 60000);
    assert_true(gguf_get_i64(f, "t.i16", &i) && i == -30000);
    assert_true(gguf_get_i64(f, "t.u32", &i) && i == 4000000000);
    assert_true(gguf_get_i64(f, "t.i32", &i) && i == -2000000000);
    assert_true(gguf_get_i64(f, "t.u64", &i) && i == INT64_C(1) << 60);
    assert_true(gguf_get_i64(f, "t.i64", &i) && i == -(INT64_C(1) << 60));
    assert_true(gguf_get_f64(f, "t.f32", &d) && d == 1.5);
    assert_true(gguf_get_f64(f, "t.f64", &d) && d == -2.25);
    assert_true(gguf_get_bool(f, "t.bool", &b) && b);
    assert_true(gguf_get_str(f, "t.str", &s) && s.len == 6 && memcmp(s.ptr, "héllo", 6) == 0);
    assert_int_equal(gguf_find(f, "t.u8")->type, GGUF_U8);
    assert_int_equal(gguf_find(f, "t.i16")->type, GGUF_I16);
    assert_int_equal(gguf_find(f, "t.f64")->type, GGUF_F64);
    const gguf_kv *kv = gguf_find(f, "t.strs");
    assert_non_null(kv);
    assert_int_equal(kv->type, GGUF_ARRAY);
    assert_int_equal(kv->arr_type, GGUF_STRING);
    assert_int_equal(kv->arr_n, 3);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(kv->strs[k].len, strlen(strs[k]));
        assert_memory_equal(kv->strs[k].ptr, strs[k], strlen(strs[k]));
    }
    kv = gguf_find(f, "t.f32s");
    assert_true(kv && kv->arr_type == GGUF_F32 && kv->arr_n == 4);
    for (int k = 0; k < 4; k++) assert_true(gguf_arr_f64(kv, (uint64_t)k, &d) && d == (double)fa[k]);
    kv = gguf_find(f, "t.i32s");
    assert_true(kv && kv->arr_type == GGUF_I32 && kv->arr_n == 3);
    for (int k = 0; k < 3; k++) assert_true(gguf_arr_i64(kv, (uint64_t)k, &i) && i == ia[k]);
    kv = gguf_find(f, "t.empty");
    assert_true(kv && kv->arr_n == 0);

    assert_int_equal(f->n_tensors, 4);
    const gguf_tensor *t = gguf_find_tensor(f, "v");
    assert_true(t && t->type == GGML_F32 && t->n_dims == 1 && t->ne[0] == 5);
    assert_memory_equal(t->data, v, sizeof v);
    t = gguf_find_tensor(f, "h");
    assert_true(t && t->type == GGML_F16 && t->n_dims == 2 && t->ne[0] == 4 && t->ne[1] == 3);
    assert_memory_equal(t->data, h, sizeof h);
    t = gguf_find_tensor(f, "q8");
    assert_true(t && t->type == GGML_Q8_0 && t->ne[0] == 64 && t->ne[1] == 2 && t->n_bytes == sizeof q8);
    assert_memory_equal(t->data, q8, sizeof q8);
    t = gguf_find_tensor(f, "q4k");
    assert_true(t && t->type == GGML_Q4_K && t->n_dims == 3 && t->ne[0] == 256 && t->n_bytes == sizeof q4);
    assert_memory_equal(t->data, q4, sizeof q4);
    for (int k = 0; k < f->n_tensors; k++) assert_int_equal((f->tensors[k].offset - f->data_offset) % 64, 0);
    gguf_close(f);
    unlink(path);
}

static void test_streamed(void **state) {
    (void)state;
    char path[128];
    tmp_path(path, sizeof path, "st");
    gguf_writer *w = gguf_writer_new(0);
    assert_int_equal(gguf_writer_kv_str(w, "general.architecture", "none"), HEED_OK);
    float a[3] = {1, 2, 3}, b[33];
    for (int k = 0; k < 33; k++) b[k] = (float)k;
    assert_int_equal(gguf_writer_add_tensor(w, "a", 1, (const int64_t[]){3}, GGML_F32, NULL), HEED_OK);
    assert_int_equal(gguf_writer_add_tensor(w, "b", 1, (const int64_t[]){33}, GGML_F32, NULL), HEED_OK);
    assert_int_equal(gguf_writer_begin(w, path), HEED_OK);
    assert_int_equal(gguf_writer_put(w, a, sizeof a), HEED_OK);
    assert_int_equal(gguf_writer_put(w, b, sizeof b), HEED_OK);
    assert_int_equal(gguf_writer_end(w), HEED_OK);
    gguf_writer_free(w);
    char err[256];
    gguf_file *f = gguf_open(path, NULL, err, sizeof err);
    if (!f) fail_msg("gguf_open: %s", err);
    assert_int_equal(f->alignment, 32);
    assert_null(gguf_find(f, "general.alignment")); /* the default is not written */
    assert_memory_equal(gguf_find_tensor(f, "a")->data, a, sizeof a);
    assert_memory_equal(gguf_find_tensor(f, "b")->data, b, sizeof b);
    gguf_close(f);
    unlink(path);
}

static void test_writer_errors(void **state) {
    (void)state;
    assert_null(gguf_writer_new(48)); /* not a power of two */
    gguf_writer *w = gguf_writer_new(32);
    /* a Q4_K row must be a multiple of 256 */
    assert_int_equal(gguf_writer_add_tensor(w, "x", 2, (const int64_t[]){576, 2}, GGML_Q4_K, NULL),
                     HEED_ERR_INVALID_ARG);
    assert_non_null(strstr(gguf_writer_error(w), "multiple"));
    /* the error sticks */
    assert_int_equal(gguf_writer_kv_u8(w, "k", 1), HEED_ERR_INVALID_ARG);
    gguf_writer_free(w);

    char path[128];
    tmp_path(path, sizeof path, "err");
    w = gguf_writer_new(32);
    assert_int_equal(gguf_writer_add_tensor(w, "a", 1, (const int64_t[]){4}, GGML_F32, NULL), HEED_OK);
    assert_int_equal(gguf_writer_begin(w, path), HEED_OK);
    float a[3] = {0};
    assert_int_equal(gguf_writer_put(w, a, sizeof a), HEED_ERR_INVALID_ARG); /* 12 bytes, 16 expected */
    gguf_writer_free(w);
    w = gguf_writer_new(32);
    assert_int_equal(gguf_writer_add_tensor(w, "a", 1, (const int64_t[]){4}, GGML_F32, NULL), HEED_OK);
    assert_int_equal(gguf_writer_begin(w, path), HEED_OK);
    assert_int_equal(gguf_writer_end(w), HEED_ERR_INVALID_ARG); /* data missing */
    gguf_writer_free(w);
    unlink(path);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_streamed),
        cmocka_unit_test(test_writer_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
