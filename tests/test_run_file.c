/*
 * test_run_file.c - run files on streams, and the limits the run file
 * shares with the model loaders (src/limit.h).
 *
 * heed_run_write / heed_run_read through memory streams: the bytes of
 * heed_run_save, counted by heed_run_file_size, read back to the same
 * bytes, the stream left just after the run, a short stream refused with a
 * message naming it. A model whose geometry a run file could not hold is
 * refused when it loads (GGUF keys, a checkpoint folder's config.json), and
 * a run file beyond the same numbers when it loads. The table of corrupt
 * run files is in test_run.c.
 */
#include <stdarg.h>

#include "gguf_write.h"
#include "heed.h"
#include "run.h"
#include "runutil.h"
#include "testutil.h"

/* Every attention tier and the lens: every section of the file. */
static heed_run *record_all(int n_gen) {
    heed_recorder_params rp = heed_recorder_default_params();
    rp.lens_eager = true;
    rp.attn_top_k = 8;
    rp.keep_head_mean = true;
    rp.full_limit_bytes = 64u << 20;
    return ru_record("Once upon a time", n_gen, &rp);
}

/* ---------------------------------------------------------------- streams */

/* heed_run_write / heed_run_read on memory streams: the bytes are those of
 * heed_run_save, heed_run_file_size counts them, a run read back writes the
 * same bytes, the reader stops at the run's end, and a stream that ends
 * before the size it was given is refused with a message naming it. */
static void test_stream_round_trip(void **state) {
    heed_run *r = record_all(6);
    char err[256];
    assert_int_equal(system("mkdir -p test-output"), 0);
    const char *p = "test-output/stream.heedrun";
    assert_int_equal(heed_run_save(r, p, err, sizeof err), HEED_OK);
    size_t n;
    unsigned char *file = ru_slurp(p, &n);
    assert_true(heed_run_file_size(r) == n);

    char *mem = NULL;
    size_t mem_n = 0;
    FILE *f = open_memstream(&mem, &mem_n);
    assert_non_null(f);
    assert_int_equal(heed_run_write(r, f, "mem.run", err, sizeof err), HEED_OK);
    assert_true(fputs("tail", f) >= 0); /* whatever follows the run on the stream */
    assert_int_equal(fclose(f), 0);
    assert_int_equal(mem_n, n + 4);
    assert_memory_equal(mem, file, n);

    /* read back; the stream is left just after the run */
    f = fmemopen(mem, mem_n, "rb");
    assert_non_null(f);
    heed_run *l = NULL;
    assert_int_equal(heed_run_read(f, n, "mem.run", &l, err, sizeof err), HEED_OK);
    assert_int_equal(ftell(f), (long)n);
    char tail[8];
    assert_int_equal(fread(tail, 1, sizeof tail, f), 4);
    assert_memory_equal(tail, "tail", 4);
    fclose(f);
    heed_run_info a, b;
    heed_run_get_info(r, &a);
    heed_run_get_info(l, &b);
    assert_true(a.n_pos == b.n_pos && a.n_output == b.n_output && a.attn_bytes == b.attn_bytes);
    float ra[64], rb[64];
    heed_attn_sel all = heed_attn_sel_all();
    assert_int_equal(heed_run_attn_row(r, &all, a.n_pos - 1, ra), HEED_OK);
    assert_int_equal(heed_run_attn_row(l, &all, b.n_pos - 1, rb), HEED_OK);
    assert_memory_equal(ra, rb, sizeof(float) * (size_t)a.n_pos);
    char *again = NULL;
    size_t again_n = 0;
    f = open_memstream(&again, &again_n);
    assert_int_equal(heed_run_write(l, f, NULL, err, sizeof err), HEED_OK);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(again_n, n);
    assert_memory_equal(again, file, n);

    /* the stream ends before the size given: after the header, anywhere */
    heed_run *t = NULL;
    for (size_t cut = 16; cut < n; cut += n / 13 + 1) {
        f = fmemopen(mem, cut, "rb");
        assert_non_null(f);
        err[0] = 0;
        int rc = heed_run_read(f, n, "cut.run", &t, err, sizeof err);
        fclose(f);
        if (rc != HEED_ERR_FORMAT || !strstr(err, "truncated") || strncmp(err, "cut.run: ", 9) != 0)
            fail_msg("cut at %zu of %zu: rc %d: %s", cut, n, rc, err);
        assert_null(t);
    }
    f = fmemopen(mem, 10, "rb");
    assert_int_equal(heed_run_read(f, n, NULL, &t, err, sizeof err), HEED_ERR_FORMAT);
    assert_non_null(strstr(err, "run: too short for a heed run file"));
    fclose(f);
    /* a stream that cannot be written */
    char ro[64] = {0};
    f = fmemopen(ro, sizeof ro, "r");
    assert_int_equal(heed_run_write(r, f, "ro.run", err, sizeof err), HEED_ERR_IO);
    assert_non_null(strstr(err, "ro.run: write failed"));
    fclose(f);
    /* misuse */
    assert_int_equal(heed_run_read(NULL, n, "x", &t, err, sizeof err), HEED_ERR_INVALID_ARG);
    assert_int_equal(heed_run_write(NULL, stdout, "x", err, sizeof err), HEED_ERR_INVALID_ARG);
    assert_int_equal(heed_run_write(r, NULL, "x", err, sizeof err), HEED_ERR_INVALID_ARG);
    assert_true(heed_run_file_size(NULL) == 0);

    free(again);
    free(mem);
    free(file);
    heed_run_free(l);
    heed_run_free(r);
}

/* -------------------------------------------------------- geometry limits */

/* A llama GGUF of n_head heads of key_length dims, with no tensors and no
 * vocabulary: loading it stops at the first check that refuses it. */
static int load_geometry(uint32_t n_head, uint32_t key_length, char *err, size_t n) {
    const char *path = "test-output/geometry.gguf";
    gguf_writer *w = gguf_writer_new(0);
    assert_non_null(w);
    gguf_writer_kv_str(w, "general.architecture", "llama");
    gguf_writer_kv_u32(w, "llama.block_count", 1);
    gguf_writer_kv_u32(w, "llama.embedding_length", 64);
    gguf_writer_kv_u32(w, "llama.feed_forward_length", 64);
    gguf_writer_kv_u32(w, "llama.context_length", 64);
    gguf_writer_kv_u32(w, "llama.attention.head_count", n_head);
    gguf_writer_kv_u32(w, "llama.attention.key_length", key_length);
    assert_int_equal(gguf_writer_write_file(w, path), HEED_OK);
    gguf_writer_free(w);
    heed_model *m = NULL;
    err[0] = 0;
    int rc = heed_model_load(path, NULL, &m, err, n);
    assert_true(rc != HEED_OK && m == NULL);
    return rc;
}

static void write_text(const char *path, const void *text, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

__attribute__((format(printf, 2, 3))) static void expect_msg(const char *err, const char *fmt, ...) {
    char want[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(want, sizeof want, fmt, ap);
    va_end(ap);
    if (!strstr(err, want)) fail_msg("expected \"%s\" in: %s", want, err);
}

/* META is the first section (payload at 32); its i32 fields follow four
 * strings (docs/RUN_FORMAT.md). */
enum { F_N_LAYER = 16, F_N_HEAD = 20, F_HEAD_DIM = 28 };

/* A copy of the run file with one META field set (its checksum fixed, so
 * the count is what is refused) must not load. */
static void expect_meta(const char *good, size_t n, size_t field, int32_t v, char *err, size_t err_size) {
    unsigned char *b = malloc(n);
    memcpy(b, good, n);
    uint64_t len;
    memcpy(&len, b + 24, 8);
    unsigned char *p = b + 32;
    size_t o = 0;
    for (int i = 0; i < 4; i++) {
        uint32_t sn;
        memcpy(&sn, p + o, 4);
        o += 4 + sn;
    }
    memcpy(p + o + field, &v, 4);
    uint32_t crc = run_crc32(0, p, (size_t)len);
    memcpy(p + len, &crc, 4);
    FILE *f = fmemopen(b, n, "rb");
    heed_run *r = NULL;
    err[0] = 0;
    assert_int_equal(heed_run_read(f, n, "mem", &r, err, err_size), HEED_ERR_FORMAT);
    assert_null(r);
    fclose(f);
    free(b);
}

/* The model loader refuses the geometry a run file could not hold (one
 * table of limits, src/limit.h), with a message naming the field and the
 * limit: a model that loads records runs that load back. */
static void test_geometry_limits(void **state) {
    char err[512];
    assert_int_equal(system("mkdir -p test-output/geometry-hf"), 0);
    /* GGUF: the keys are range-checked as they are read */
    assert_int_equal(load_geometry(LIMIT_MAX_HEAD + 1, 64, err, sizeof err), HEED_ERR_FORMAT);
    expect_msg(err, "geometry.gguf: key 'llama.attention.head_count' = %d is outside 1..%d", LIMIT_MAX_HEAD + 1,
               LIMIT_MAX_HEAD);
    assert_int_equal(load_geometry(4096, 64, err, sizeof err), HEED_ERR_FORMAT); /* loaded until the limits met */
    expect_msg(err, "key 'llama.attention.head_count' = %d is outside 1..%d", 4096, LIMIT_MAX_HEAD);
    assert_int_equal(load_geometry(2, 2 * LIMIT_MAX_HEAD_DIM, err, sizeof err), HEED_ERR_FORMAT);
    expect_msg(err, "key 'llama.attention.key_length' = %d is outside 2..%d", 2 * LIMIT_MAX_HEAD_DIM,
               LIMIT_MAX_HEAD_DIM);
    /* at the limits the geometry passes (the file then lacks its vocabulary) */
    load_geometry(LIMIT_MAX_HEAD, 64, err, sizeof err);
    assert_null(strstr(err, "head_count"));
    load_geometry(2, LIMIT_MAX_HEAD_DIM, err, sizeof err);
    assert_null(strstr(err, "key_length"));

    /* a checkpoint folder: config.json's head_dim meets the check every
     * model goes through before its weights are bound */
    static const char cfg[] =
        "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64, \"num_hidden_layers\": 1,"
        " \"num_attention_heads\": 2, \"num_key_value_heads\": 1, \"head_dim\": 8192,"
        " \"intermediate_size\": 64, \"vocab_size\": 256, \"max_position_embeddings\": 64,"
        " \"rms_norm_eps\": 1e-5, \"rope_theta\": 10000.0, \"tie_word_embeddings\": true}";
    write_text("test-output/geometry-hf/config.json", cfg, sizeof cfg - 1);
    unsigned char st[8 + 8] = {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '};
    write_text("test-output/geometry-hf/model.safetensors", st, sizeof st);
    heed_model *m = NULL;
    assert_int_equal(heed_model_load("test-output/geometry-hf", NULL, &m, err, sizeof err), HEED_ERR_FORMAT);
    assert_null(m);
    expect_msg(err, "head_dim = %d is above heed's limit of %d", 8192, LIMIT_MAX_HEAD_DIM);

    /* the run file holds the same limits */
    heed_run *r = ru_record("Once", 2, NULL);
    size_t n;
    char *good = ru_run_bytes(r, &n);
    heed_run_free(r);
    expect_meta(good, n, F_N_HEAD, LIMIT_MAX_HEAD + 1, err, sizeof err);
    expect_msg(err, "mem: section META: n_head = %d is out of range 1..%d", LIMIT_MAX_HEAD + 1, LIMIT_MAX_HEAD);
    expect_meta(good, n, F_HEAD_DIM, LIMIT_MAX_HEAD_DIM + 1, err, sizeof err);
    expect_msg(err, "head_dim = %d is out of range 1..%d", LIMIT_MAX_HEAD_DIM + 1, LIMIT_MAX_HEAD_DIM);
    expect_meta(good, n, F_N_LAYER, LIMIT_MAX_LAYER + 1, err, sizeof err);
    expect_msg(err, "n_layer = %d is out of range 1..%d", LIMIT_MAX_LAYER + 1, LIMIT_MAX_LAYER);
    free(good);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_round_trip),
        cmocka_unit_test(test_geometry_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
