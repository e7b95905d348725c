/*
 * test_trace - heed-trace/1 (docs/TRACE_FORMAT.md): traces written here in
 * F32, F16 and BF16 with GQA, a sliding window, soft-capping and a scale of
 * their own import and give rows equal to a float64 softmax of the same
 * inputs (as stored) within 1e-5; a run recorded by heed, exported as a
 * trace and imported back has the same rows bit for bit; corrupt traces
 * are refused with messages naming the file and the field.
 */
#include <jansson.h>
#include <math.h>
#include <sys/stat.h>

#include "heed.h"
#include "testutil.h"

enum { T = 12, L = 2, H = 4, KV = 2, HD = 8 };

static float q_[L][T][H][HD], k_[L][T][KV][HD];

static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
}

static float from_bf16(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* One layer file: q [T, H, HD] and k [T, KV, HD] in dtype (0 F32, 1 F16, 2 BF16);
 * q_/k_ are set to the values as stored (rounded). lie: a data_offsets end past the file. */
static void write_layer(const char *dir, int l, int dtype, bool lie, int t_q) {
    const char *dn = dtype == 0 ? "F32" : dtype == 1 ? "F16" : "BF16";
    size_t el = dtype == 0 ? 4 : 2, qn = (size_t)t_q * H * HD, kn = (size_t)T * KV * HD;
    unsigned char *data = malloc((qn + kn) * el);
    for (size_t i = 0; i < qn + kn; i++) {
        float *v = i < qn ? &q_[l][0][0][0] + i : &k_[l][0][0][0] + (i - qn);
        if (dtype == 0) memcpy(data + i * 4, v, 4);
        else {
            uint16_t h = dtype == 1 ? heed_f32_to_f16(*v) : to_bf16(*v);
            memcpy(data + i * 2, &h, 2);
            if (dtype == 2) *v = from_bf16(h);
            else { /* the stored half, back */
                uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
                float f = exp == 0 ? ldexpf((float)man, -24) : ldexpf((float)(man | 0x400), (int)exp - 25);
                uint32_t u;
                memcpy(&u, &f, 4);
                u |= sign;
                memcpy(v, &u, 4);
            }
        }
    }
    char header[512];
    int n = snprintf(header, sizeof header,
                     "{\"q\":{\"dtype\":\"%s\",\"shape\":[%d,%d,%d],\"data_offsets\":[0,%zu]},"
                     "\"k\":{\"dtype\":\"%s\",\"shape\":[%d,%d,%d],\"data_offsets\":[%zu,%zu]}}",
                     dn, t_q, H, HD, qn * el, dn, T, KV, HD, qn * el, (qn + kn) * el + (lie ? 64 : 0));
    uint64_t hl = ((uint64_t)n + 7) & ~(uint64_t)7;
    char path[256];
    snprintf(path, sizeof path, "%s/layer_%03d.safetensors", dir, l);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(&hl, 8, 1, f);
    fwrite(header, 1, (size_t)n, f);
    for (uint64_t i = (uint64_t)n; i < hl; i++) fputc(' ', f);
    fwrite(data, el, qn + kn, f);
    fclose(f);
    free(data);
}

static void write_trace(const char *dir, int dtype, json_t *meta, bool lie, int t_q, bool skip_layer1) {
    assert_int_equal(system("mkdir -p test-output"), 0);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s && mkdir -p %s", dir, dir);
    assert_int_equal(system(cmd), 0);
    uint64_t s = 99;
    for (int l = 0; l < L; l++)
        for (int t = 0; t < T; t++) {
            for (int h = 0; h < H; h++)
                for (int d = 0; d < HD; d++) q_[l][t][h][d] = (float)((s = s * 6364136223846793005ull + 1) >> 40) / (1 << 24) * 2 - 1;
            for (int g = 0; g < KV; g++)
                for (int d = 0; d < HD; d++) k_[l][t][g][d] = (float)((s = s * 6364136223846793005ull + 1) >> 40) / (1 << 24) * 2 - 1;
        }
    for (int l = 0; l < L; l++)
        if (!(skip_layer1 && l == 1)) write_layer(dir, l, dtype, lie && l == 1, l == 1 ? t_q : T);
    char path[256];
    snprintf(path, sizeof path, "%s/trace.json", dir);
    assert_int_equal(json_dump_file(meta, path, 0), 0);
}

static json_t *base_meta(void) {
    json_t *ids = json_array();
    for (int i = 0; i < T; i++) json_array_append_new(ids, json_integer(5 + i * 3));
    return json_pack("{s:s, s:i, s:i, s:i, s:i, s:o, s:i, s:f, s:[i, i], s:f, s:s}", "format", "heed-trace/1", "n_layer", L,
                     "n_head", H, "n_head_kv", KV, "head_dim", HD, "token_ids", ids, "n_prompt", 9, "scale", 0.3,
                     "sliding_window", 4, 0, "attn_softcap", 5.0, "source", "test");
}

/* Imported rows against float64: scale, cap, window 4 on layer 0. */
static void test_import_dtypes(void **state) {
    (void)state;
    for (int dtype = 0; dtype < 3; dtype++) {
        json_t *meta = base_meta();
        write_trace("test-output/tr", dtype, meta, false, T, false);
        json_decref(meta);
        heed_run *r;
        char err[512];
        if (heed_trace_import("test-output/tr", &r, err, sizeof err)) fail_msg("%s", err);
        heed_run_info ri;
        heed_run_get_info(r, &ri);
        assert_int_equal(ri.n_pos, T);
        assert_int_equal(ri.n_prompt, 9);
        assert_int_equal(ri.n_output, 3);
        double worst = 0;
        float row[T];
        for (int l = 0; l < L; l++)
            for (int h = 0; h < H; h++)
                for (int p = 0; p < T; p++) {
                    heed_attn_sel sel = {&l, 1, &h, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
                    assert_int_equal(heed_run_attn_row(r, &sel, p, row), HEED_OK);
                    int lo = l == 0 && p >= 4 ? p - 3 : 0;
                    double sc[T], mx = -INFINITY, z = 0;
                    for (int j = lo; j <= p; j++) {
                        double d = 0;
                        for (int e = 0; e < HD; e++) d += (double)q_[l][p][h][e] * k_[l][j][h / 2][e];
                        sc[j] = 5.0 * tanh(d * 0.3 / 5.0);
                        mx = fmax(mx, sc[j]);
                    }
                    for (int j = lo; j <= p; j++) z += exp(sc[j] - mx);
                    for (int j = 0; j <= p; j++) {
                        double want = j < lo ? 0 : exp(sc[j] - mx) / z;
                        if (j < lo) assert_true(row[j] == 0.0f);
                        worst = fmax(worst, fabs(row[j] - want));
                    }
                }
        printf("  %s: every row within %.2e of float64\n", dtype == 0 ? "F32" : dtype == 1 ? "F16" : "BF16", worst);
        assert_true(worst < 1e-5);
        heed_run_free(r);
    }
}

/* heed's own run through a trace and back: the same rows, bit for bit. */
static void test_round_trip(void **state) {
    (void)state;
    heed_model *m;
    assert_int_equal(heed_model_load(NULL, NULL, &m, NULL, 0), HEED_OK);
    heed_ctx *c;
    assert_int_equal(heed_ctx_new(m, NULL, &c), HEED_OK);
    heed_gen_params gp = heed_gen_default_params();
    gp.sampler.temperature = 0;
    gp.n_predict = 6;
    gp.record = true;
    static const int32_t ids[] = {1, 403, 407, 261, 378};
    heed_gen *g;
    assert_int_equal(heed_gen_start(m, c, &gp, ids, 5, &g), HEED_OK);
    heed_gen_step st;
    while (heed_gen_next(g, &st) == 1) {
    }
    heed_run *run, *back;
    assert_int_equal(heed_gen_finish(g, &run), HEED_OK);
    heed_gen_free(g);
    char err[512];
    assert_int_equal(system("rm -rf test-output/rt.trace"), 0);
    if (heed_run_export_trace(run, "test-output/rt.trace", err, sizeof err)) fail_msg("%s", err);
    if (heed_trace_import("test-output/rt.trace", &back, err, sizeof err)) fail_msg("%s", err);
    heed_run_info a, b;
    heed_run_get_info(run, &a);
    heed_run_get_info(back, &b);
    assert_int_equal(a.n_pos, b.n_pos);
    float ra[32], rb[32];
    for (int l = 0; l < a.n_layer; l++)
        for (int h = 0; h < a.n_head; h++)
            for (int p = 0; p < a.n_pos; p++) {
                heed_attn_sel sel = {&l, 1, &h, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
                assert_int_equal(heed_run_attn_row(run, &sel, p, ra), HEED_OK);
                assert_int_equal(heed_run_attn_row(back, &sel, p, rb), HEED_OK);
                assert_memory_equal(ra, rb, sizeof(float) * (size_t)(p + 1));
            }
    for (int i = 0; i < a.n_prompt + a.n_output && i < a.n_pos; i++) {
        int32_t x, y;
        heed_run_token(run, i, &x, NULL);
        heed_run_token(back, i, &y, NULL);
        assert_int_equal(x, y);
    }
    heed_run_free(back);
    heed_run_free(run);
    heed_ctx_free(c);
    heed_model_free(m);
}

typedef void (*meta_edit)(json_t *);
static void m_format(json_t *j) { json_object_set_new(j, "format", json_string("heed-trace/9")); }
static void m_heads(json_t *j) { json_object_set_new(j, "n_head_kv", json_integer(3)); }
static void m_ids(json_t *j) { json_array_set_new(json_object_get(j, "token_ids"), 2, json_string("x")); }
static void m_prompt(json_t *j) { json_object_set_new(j, "n_prompt", json_integer(T + 1)); }
static void m_window(json_t *j) { json_object_set_new(j, "sliding_window", json_pack("[i]", 4)); }
static void m_cap(json_t *j) { json_object_set_new(j, "attn_softcap", json_real(-1)); }
static void m_layers(json_t *j) {
    json_object_set_new(j, "n_layer", json_integer(3));
    json_object_set_new(j, "sliding_window", json_integer(4));
}
static void m_headdim(json_t *j) { json_object_set_new(j, "head_dim", json_integer(16)); }

static void test_corrupt(void **state) {
    (void)state;
    static const struct {
        meta_edit edit;
        bool lie, skip;
        int t_q;
        const char *msg;
    } cases[] = {
        {m_format, false, false, T, "trace.json: 'format' is 'heed-trace/9'"},
        {m_heads, false, false, T, "n_head 4 is not a multiple of n_head_kv 3"},
        {m_ids, false, false, T, "'token_ids[2]' is not an id"},
        {m_prompt, false, false, T, "'n_prompt' = 13 is outside 1..12"},
        {m_window, false, false, T, "'sliding_window' is neither an integer nor a list of 2"},
        {m_cap, false, false, T, "'attn_softcap' is not a positive number"},
        {m_layers, false, false, T, "layer_002.safetensors"},
        {m_headdim, false, false, T, "layer_000.safetensors: tensor 'q' has shape [12, 4, 8] in 3 dims; trace.json implies [12, 4, 16]"},
        {NULL, false, true, T, "layer_001.safetensors"},
        {NULL, false, false, T - 1, "layer_001.safetensors: tensor 'q' has shape [11, 4, 8]"},
        {NULL, true, false, T, "layer_001.safetensors"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        json_t *meta = base_meta();
        if (cases[i].edit) cases[i].edit(meta);
        write_trace("test-output/bad", 0, meta, cases[i].lie, cases[i].t_q, cases[i].skip);
        json_decref(meta);
        heed_run *r = NULL;
        char err[512] = "";
        int rc = heed_trace_import("test-output/bad", &r, err, sizeof err);
        printf("  %s\n", err);
        assert_true(rc != HEED_OK);
        assert_null(r);
        if (!strstr(err, cases[i].msg)) fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].msg);
    }
    heed_run *r = NULL;
    char err[256];
    assert_int_equal(heed_trace_import("test-output/no-such-trace", &r, err, sizeof err), HEED_ERR_IO);
    assert_non_null(strstr(err, "trace.json"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_import_dtypes),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_corrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
