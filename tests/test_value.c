/*
 * test_value - value-weighted attention (heed_measure HEED_MEASURE_VALUE):
 * the value norms a recording keeps equal |W_O^h v_j| computed by brute
 * force in double (the output matrix dequantized, each head's slice times
 * the value the forward pass observed), value-weighted rows equal the
 * attention row times those norms (one head bit for bit; combined heads
 * against a double recomputation), the norms survive a run file, and runs
 * without them refuse the measure. On the bundled model, and on the tiny
 * models of ../shared (GQA, a post-attention norm, experts) when present.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "heed.h"
#include "kern.h"
#include "model.h"
#include "testutil.h"

enum { N = 12 };

static const int32_t PROMPT[] = {1, 403, 407, 261, 378};

typedef struct grab {
    int L, kvd;
    float *v; /* (L, N, kv_dim) */
} grab;

static void observe_qk(void *user, const heed_qk_block *b) {
    grab *g = user;
    for (int i = 0; i < b->n_query; i++)
        memcpy(g->v + ((size_t)b->layer * N + b->pos0 + i) * g->kvd, b->v + (size_t)i * g->kvd,
               sizeof(float) * (size_t)g->kvd);
}

/* |W_O^h v| in double, from the dequantized output matrix. */
static double ref_norm(const heed_model *m, int layer, int head, const float *v_head, float *row) {
    const model_mat *wo = &m->layers[layer].wo;
    const int hd = m->head_dim;
    const size_t rb = kern_row_bytes(wo->type, wo->n_in);
    double s = 0;
    for (int o = 0; o < wo->n_out; o++) {
        kern_dequant_row(row, (const char *)wo->data + (size_t)o * rb, wo->type, wo->n_in);
        double t = 0;
        for (int a = 0; a < hd; a++) t += (double)row[head * hd + a] * v_head[a];
        s += t * t;
    }
    return sqrt(s);
}

/* Records a greedy run on ids, reruns its tokens through a bare context to
 * observe the values, and checks the norms and the value-weighted rows. */
static void check_model(const char *path) {
    heed_model *m;
    char err[256];
    assert_int_equal(heed_model_load(path, NULL, &m, err, sizeof err), HEED_OK);
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    const int L = mi.n_layer, H = mi.n_head, hd = mi.head_dim, kvd = mi.n_head_kv * hd;
    int32_t ids[16];
    int n_prompt = mi.n_vocab > 512 ? 4 : 5;
    for (int i = 0; i < n_prompt; i++) ids[i] = mi.n_vocab > 512 ? (int32_t)(100 + 37 * i) : PROMPT[i];

    heed_ctx *c;
    heed_ctx_params cp = heed_ctx_default_params();
    cp.n_ctx = 64;
    cp.n_threads = 1;
    assert_int_equal(heed_ctx_new(m, &cp, &c), HEED_OK);
    heed_gen_params gp = heed_gen_default_params();
    gp.record = true;
    gp.n_predict = N - n_prompt + 1; /* n_pos = N */
    gp.sampler.temperature = 0;
    heed_gen *g;
    assert_int_equal(heed_gen_start(m, c, &gp, ids, n_prompt, &g), HEED_OK);
    heed_gen_step st;
    while (heed_gen_next(g, &st) == 1) {}
    heed_run *run;
    assert_int_equal(heed_gen_finish(g, &run), HEED_OK);
    heed_gen_free(g);
    heed_run_info ri;
    heed_run_get_info(run, &ri);
    assert_int_equal(ri.n_pos, N);
    assert_true(ri.has_value_norms);
    for (int i = 0; i < ri.n_prompt + ri.n_output; i++) heed_run_token(run, i, &ids[i], NULL);

    /* the same tokens through a context with no recorder: the prompt in one batch, then one at a time */
    grab gr = {L, kvd, calloc((size_t)L * N * kvd, sizeof(float))};
    heed_ctx_reset(c);
    heed_attn_hook hook = {.observe_qk = observe_qk, .user = &gr};
    heed_ctx_set_attn_hook(c, &hook);
    assert_int_equal(heed_decode(c, ids, n_prompt), HEED_OK);
    for (int i = n_prompt; i < N; i++) assert_int_equal(heed_decode(c, ids + i, 1), HEED_OK);
    heed_ctx_set_attn_hook(c, NULL);

    float *row = malloc(sizeof(float) * (size_t)m->layers[0].wo.n_in);
    double worst = 0;
    for (int p = 0; p < N; p++) {
        const float *vn;
        assert_int_equal(heed_run_value_norms(run, p, &vn), HEED_OK);
        for (int l = 0; l < L; l++)
            for (int h = 0; h < H; h++) {
                const float *v = gr.v + ((size_t)l * N + p) * kvd + (size_t)(h / (H / mi.n_head_kv)) * hd;
                double want = ref_norm(m, l, h, v, row), got = vn[l * H + h];
                double rel = fabs(got - want) / (want > 1e-6 ? want : 1e-6);
                if (rel > worst) worst = rel;
                if (rel > 1e-4) fail_msg("%s: position %d layer %d head %d: norm %.9g, brute force %.9g", path, p, l, h, got, want);
            }
    }
    printf("%s: value norms within %.2e (relative) of the brute force\n", path ? path : "bundled", worst);

    /* value-weighted rows: one head is the attention row times the norms, bit for bit */
    float a[N], w[N], mean[N];
    for (int l = 0; l < L; l++)
        for (int h = 0; h < H; h += 3) {
            heed_attn_sel one = {&l, 1, &h, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
            assert_int_equal(heed_run_attn_row(run, &one, N - 1, a), HEED_OK);
            one.measure = HEED_MEASURE_VALUE;
            assert_int_equal(heed_run_attn_row(run, &one, N - 1, w), HEED_OK);
            for (int k = 0; k < N; k++) {
                const float *vn;
                heed_run_value_norms(run, k, &vn);
                assert_true(w[k] == a[k] * vn[l * H + h]);
            }
        }
    /* every head combined: the mean of the products, against double */
    heed_attn_sel all = heed_attn_sel_all();
    all.measure = HEED_MEASURE_VALUE;
    assert_int_equal(heed_run_attn_row(run, &all, N - 1, mean), HEED_OK);
    for (int k = 0; k < N; k++) {
        double s = 0;
        for (int l = 0; l < L; l++)
            for (int h = 0; h < H; h++) {
                heed_attn_sel one = {&l, 1, &h, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
                heed_run_attn_row(run, &one, N - 1, a);
                const float *vn;
                heed_run_value_norms(run, k, &vn);
                s += (double)a[k] * vn[l * H + h];
            }
        assert_true(fabs(mean[k] - s / (L * H)) <= 1e-6 * (1 + fabs(s / (L * H))));
    }
    /* a column and the matrix agree with the rows */
    float *mat = malloc(sizeof(float) * N * N), col[N];
    assert_int_equal(heed_run_attn_matrix(run, &all, mat), HEED_OK);
    assert_memory_equal(mat + (size_t)(N - 1) * N, mean, sizeof mean);
    assert_int_equal(heed_run_attn_col(run, &all, 2, col), HEED_OK);
    for (int q = 2; q < N; q++) assert_true(col[q - 2] == mat[(size_t)q * N + 2]);

    /* through a run file */
    char tmp[] = "/tmp/heed_value_XXXXXX";
    int fd = mkstemp(tmp);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(heed_run_save(run, tmp, err, sizeof err), HEED_OK);
    heed_run *back;
    assert_int_equal(heed_run_load(tmp, &back, err, sizeof err), HEED_OK);
    heed_run_info bi;
    heed_run_get_info(back, &bi);
    assert_true(bi.has_value_norms);
    float again[N];
    assert_int_equal(heed_run_attn_row(back, &all, N - 1, again), HEED_OK);
    assert_memory_equal(again, mean, sizeof mean);
    unlink(tmp);

    /* a measure that is not one is refused */
    all.measure = (heed_measure)7;
    assert_int_equal(heed_run_attn_row(run, &all, 0, a), HEED_ERR_INVALID_ARG);
    heed_run_free(back);
    heed_run_free(run);
    free(mat);
    free(row);
    free(gr.v);
    heed_ctx_free(c);
    heed_model_free(m);
}

static void test_bundled(void **state) {
    (void)state;
    check_model(NULL);
}

static void test_shared_models(void **state) {
    (void)state;
    const char *names[] = {"models/tiny-llama3.gguf", "models/tiny-gemma2.gguf", "models/tiny-qwen3moe.gguf",
                           "models/tiny-gpt2.gguf", "models/tiny-llama3-q8_0.gguf"};
    int n = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char buf[1024];
        const char *p = tu_shared(names[i], buf, sizeof buf);
        if (!p) continue;
        check_model(p);
        n++;
    }
    if (!n) skip();
}

/* A run with no value norms (an imported trace has only q and k) refuses
 * the measure with HEED_ERR_UNSUPPORTED; the attention itself still works. */
static void test_without_norms(void **state) {
    (void)state;
    heed_model *m;
    assert_int_equal(heed_model_load(NULL, NULL, &m, NULL, 0), HEED_OK);
    heed_ctx *c;
    assert_int_equal(heed_ctx_new(m, NULL, &c), HEED_OK);
    heed_recorder_params rp = heed_recorder_default_params();
    rp.keep_qk = false;
    rp.keep_head_mean = true;
    heed_recorder *rec;
    assert_int_equal(heed_recorder_new(m, c, &rp, &rec), HEED_OK);
    assert_int_equal(heed_recorder_begin(rec, PROMPT, 5), HEED_OK);
    assert_int_equal(heed_decode(c, PROMPT, 5), HEED_OK);
    heed_run *run;
    assert_int_equal(heed_recorder_finish(rec, &run), HEED_OK);
    heed_recorder_free(rec);
    heed_run_info ri;
    heed_run_get_info(run, &ri);
    assert_false(ri.has_value_norms);
    const float *vn;
    assert_int_equal(heed_run_value_norms(run, 0, &vn), HEED_ERR_UNSUPPORTED);
    heed_attn_sel all = heed_attn_sel_all();
    float row[5];
    assert_int_equal(heed_run_attn_row(run, &all, 4, row), HEED_OK);
    all.measure = HEED_MEASURE_VALUE;
    assert_int_equal(heed_run_attn_row(run, &all, 4, row), HEED_ERR_UNSUPPORTED);
    heed_run_free(run);
    heed_ctx_free(c);
    heed_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bundled),
        cmocka_unit_test(test_shared_models),
        cmocka_unit_test(test_without_norms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
