/*
 * test_run.c - run recordings: recording on the bundled model, the logit
 * lens, save -> load round trips, a table of corrupt files (bad magic,
 * unknown version, truncation at every section boundary and at random
 * points, flipped bytes caught by the checksums, absurd counts), and the
 * NumPy / JSON exports.
 */
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <sys/stat.h>

#include "heed.h"
#include "run.h"
#include "runutil.h"
#include "testutil.h"

#define N_GEN 20

/* Every attention tier, made while generating: what these tests of the
 * file format and exports exercise (the default keeps only q/k). */
static heed_recorder_params every_tier(void) {
    heed_recorder_params rp = heed_recorder_default_params();
    rp.lens_eager = true; /* the lens computed while recording; on demand: test_lens_on_demand */
    rp.attn_top_k = 32;
    rp.keep_head_mean = true;
    rp.full_limit_bytes = 256u << 20;
    return rp;
}

static heed_run *record(int n_gen, const heed_recorder_params *rp_in) {
    heed_recorder_params rp = rp_in ? *rp_in : every_tier();
    return ru_record("Once upon a time", n_gen, &rp);
}

/* Every step's and layer's lens of a and b are the same bytes. */
static void assert_lens_equal(const heed_run *a, const heed_run *b, int n_steps, int n_layer) {
    for (int t = 0; t < n_steps; t++)
        for (int l = 0; l < n_layer; l++) {
            const int32_t *ia, *ib;
            const float *pa, *pb;
            int ka, kb;
            assert_int_equal(heed_run_lens(a, t, l, &ia, &pa, &ka), HEED_OK);
            assert_int_equal(heed_run_lens(b, t, l, &ib, &pb, &kb), HEED_OK);
            assert_int_equal(ka, kb);
            assert_memory_equal(ia, ib, sizeof *ia * (size_t)ka);
            assert_memory_equal(pa, pb, sizeof *pa * (size_t)ka);
        }
}

/* The lens computed on request (the default) equals the lens computed while
 * recording, bit for bit, with any thread count, before and after a save;
 * without the model every other view works and the lens says what it needs. */
static void test_lens_on_demand(void **state) {
    heed_recorder_params eager = heed_recorder_default_params(), lazy = heed_recorder_default_params();
    eager.lens_eager = true;
    heed_run *re = record(N_GEN, &eager), *rl = record(N_GEN, &lazy);
    heed_run_info ri;
    heed_run_get_info(rl, &ri);
    assert_int_equal(ri.lens_pending, N_GEN);
    assert_int_equal(heed_run_lens_pending(re), 0);
    assert_int_equal(heed_run_lens(rl, 0, 0, NULL, NULL, NULL), HEED_ERR_NEED_MODEL);

    /* saved and loaded back without the model: the model-free views work */
    char err[256];
    const char *path = "test-output/lens_lazy.run";
    assert_int_equal(heed_run_save(rl, path, err, sizeof err), HEED_OK);
    heed_run *loaded = NULL;
    assert_int_equal(heed_run_load(path, &loaded, err, sizeof err), HEED_OK);
    heed_run_get_info(loaded, &ri);
    assert_int_equal(ri.lens_pending, N_GEN);
    assert_int_equal(heed_run_lens(loaded, 1, 2, NULL, NULL, NULL), HEED_ERR_NEED_MODEL);
    float row[256];
    heed_attn_sel all = heed_attn_sel_all();
    assert_int_equal(heed_run_attn_row(loaded, &all, ri.n_pos - 1, row), HEED_OK);
    heed_run_step st;
    assert_int_equal(heed_run_get_step(loaded, N_GEN - 1, &st), HEED_OK);

    heed_model *m;
    assert_int_equal(heed_model_load(NULL, NULL, &m, NULL, 0), HEED_OK);
    for (int threads = 1; threads <= 3; threads += 2) {
        heed_ctx_params cp = heed_ctx_default_params();
        cp.n_ctx = 16;
        cp.n_threads = threads;
        heed_ctx *ctx;
        assert_int_equal(heed_ctx_new(m, &cp, &ctx), HEED_OK);
        heed_run *r = threads == 1 ? rl : loaded;
        assert_int_equal(heed_run_lens_compute(r, m, ctx, 1, 3), HEED_OK); /* a page first */
        assert_int_equal(heed_run_lens_pending(r), N_GEN - 2);
        assert_int_equal(heed_run_lens(r, 0, 0, NULL, NULL, NULL), HEED_ERR_NEED_MODEL);
        assert_int_equal(heed_run_lens_compute(r, m, ctx, 0, N_GEN), HEED_OK);
        assert_int_equal(heed_run_lens_pending(r), 0);
        assert_lens_equal(re, r, N_GEN, ri.n_layer);
        heed_ctx_free(ctx);
    }
    /* computed, it is saved as a lens (no residuals) and loads complete */
    assert_int_equal(heed_run_save(loaded, path, err, sizeof err), HEED_OK);
    heed_run *again = NULL;
    assert_int_equal(heed_run_load(path, &again, err, sizeof err), HEED_OK);
    assert_int_equal(heed_run_lens_pending(again), 0);
    const int32_t *ia, *ie;
    assert_int_equal(heed_run_lens(again, N_GEN - 1, ri.n_layer - 1, &ia, NULL, NULL), HEED_OK);
    assert_int_equal(heed_run_lens(re, N_GEN - 1, ri.n_layer - 1, &ie, NULL, NULL), HEED_OK);
    assert_memory_equal(ia, ie, sizeof *ia * 5);

    /* another model: refused, naming the mismatch */
    char other[PATH_MAX];
    if (tu_shared("models/tiny-llama3.gguf", other, sizeof other)) {
        heed_model *m2;
        assert_int_equal(heed_model_load(other, NULL, &m2, NULL, 0), HEED_OK);
        heed_ctx_params cp = heed_ctx_default_params();
        cp.n_ctx = 16;
        heed_ctx *c2;
        assert_int_equal(heed_ctx_new(m2, &cp, &c2), HEED_OK);
        heed_run *one = record(1, &lazy);
        assert_int_equal(heed_run_lens_model_ok(one, m2), HEED_ERR_MODEL_MISMATCH);
        assert_int_equal(heed_run_lens_compute(one, m2, c2, 0, 1), HEED_ERR_MODEL_MISMATCH);
        assert_int_equal(heed_run_lens_pending(one), 1);
        heed_run_free(one);
        heed_ctx_free(c2);
        heed_model_free(m2);
    }
    heed_model_free(m);
    heed_run_free(again);
    heed_run_free(loaded);
    heed_run_free(rl);
    heed_run_free(re);
}

/* A greedy run of n tokens of the model at path, recorded through the
 * generation session, the lens eager or not. */
static heed_run *record_model(heed_model *m, bool eager, int n) {
    heed_ctx *ctx;
    assert_int_equal(heed_ctx_new(m, NULL, &ctx), HEED_OK);
    int32_t prompt[32];
    int np = heed_tokenize(m, "Once upon a time there was", 26, true, prompt, 32);
    assert_true(np > 0 && np <= 32);
    heed_gen_params gp = heed_gen_default_params();
    gp.sampler.temperature = 0;
    gp.n_predict = n;
    gp.record = true;
    gp.rec.lens_eager = eager;
    heed_gen *g;
    assert_int_equal(heed_gen_start(m, ctx, &gp, prompt, np, &g), HEED_OK);
    heed_gen_step st;
    while (heed_gen_next(g, &st) == 1) {
    }
    heed_run *run;
    assert_int_equal(heed_gen_finish(g, &run), HEED_OK);
    heed_gen_free(g);
    heed_ctx_free(ctx);
    return run;
}

/* With a quantized output matrix the unembedding goes through the tile
 * kernels: a row's logits must not depend on the rows batched beside it, so
 * the lazy lens (many steps per batch, rows in other tile lanes) equals the
 * eager one (a step at a time) bit for bit. */
static void test_lens_on_demand_quantized(void **state) {
    char path[PATH_MAX];
    if (!tu_shared("models/tiny-llama3-q8_0.gguf", path, sizeof path)) return;
    heed_model *m;
    assert_int_equal(heed_model_load(path, NULL, &m, NULL, 0), HEED_OK);
    enum { N = 7 };
    heed_run *re = record_model(m, true, N), *rl = record_model(m, false, N);
    heed_run_info ri;
    heed_run_get_info(rl, &ri);
    assert_int_equal(ri.lens_pending, N);
    for (int rows = 4; rows <= 64; rows *= 4) { /* a scratch context of 4, 16 and 64 rows per batch */
        heed_ctx_params cp = heed_ctx_default_params();
        cp.n_ctx = rows;
        heed_ctx *c;
        assert_int_equal(heed_ctx_new(m, &cp, &c), HEED_OK);
        heed_run *r = record_model(m, false, N);
        assert_int_equal(heed_run_lens_compute(r, m, c, 0, N), HEED_OK);
        assert_lens_equal(re, r, N, ri.n_layer);
        heed_run_free(r);
        heed_ctx_free(c);
    }
    heed_run_free(rl);
    heed_run_free(re);
    heed_model_free(m);
}

static void test_record_steps_and_lens(void **state) {
    heed_run *r = record(N_GEN, NULL);
    heed_run_info ri;
    heed_run_get_info(r, &ri);
    assert_int_equal(ri.n_output, N_GEN);
    assert_int_equal(ri.n_pos, ri.n_prompt + N_GEN - 1);
    assert_true(ri.has_qk && ri.has_topk && ri.has_head_mean && ri.has_full);
    assert_true(strstr(ri.model_file, "stories260K") != NULL && !strchr(ri.model_file, '/'));
    assert_true(ri.meta_hash != 0 && ri.model_size > 0);
    assert_string_equal(ri.prompt_text, "Once upon a time");
    assert_int_equal(ri.n_cand, 20);
    assert_int_equal(ri.lens_top_k, 5);
    int matches_last = 0;
    for (int t = 0; t < N_GEN; t++) {
        heed_run_step st;
        assert_int_equal(heed_run_get_step(r, t, &st), HEED_OK);
        assert_int_equal(st.n_cand, 20);
        assert_int_equal(st.cand[0].id, st.id); /* greedy */
        assert_true(fabsf(st.cand[0].prob - st.prob) <= 1e-6f);
        for (int i = 1; i < st.n_cand; i++) assert_true(st.cand[i - 1].logit >= st.cand[i].logit);
        int32_t id;
        const char *label;
        assert_int_equal(heed_run_token(r, ri.n_prompt + t, &id, &label), HEED_OK);
        assert_int_equal(id, st.id);
        assert_true(strlen(label) > 0);
        for (int l = 0; l < ri.n_layer; l++) {
            const int32_t *ids;
            const float *probs;
            int k;
            assert_int_equal(heed_run_lens(r, t, l, &ids, &probs, &k), HEED_OK);
            assert_int_equal(k, 5);
            for (int i = 1; i < k; i++) assert_true(probs[i - 1] >= probs[i]);
            if (l == ri.n_layer - 1) {
                /* the last layer's lens is the model's own distribution */
                matches_last += ids[0] == st.id;
                assert_true(fabsf(probs[0] - st.cand[0].prob) <= 1e-6f);
            }
        }
    }
    assert_int_equal(matches_last, N_GEN);
    assert_int_equal(heed_run_lens(r, N_GEN, 0, NULL, NULL, NULL), HEED_ERR_INVALID_ARG);
    heed_run_free(r);
}

static void test_recorder_misuse(void **state) {
    heed_model *m;
    assert_int_equal(heed_model_load(NULL, NULL, &m, NULL, 0), HEED_OK);
    heed_ctx *ctx;
    assert_int_equal(heed_ctx_new(m, NULL, &ctx), HEED_OK);
    int32_t ids[2] = {1, 403};
    assert_int_equal(heed_decode(ctx, ids, 2), HEED_OK);
    heed_recorder *rec = NULL;
    /* a context that is not fresh: the recording cannot begin (it would miss positions) */
    assert_int_equal(heed_recorder_new(m, ctx, NULL, &rec), HEED_OK);
    assert_int_equal(heed_recorder_begin(rec, ids, 2), HEED_ERR_INVALID_ARG);
    heed_recorder_free(rec);
    rec = NULL;
    heed_ctx_reset(ctx);
    heed_recorder_params rp = heed_recorder_default_params();
    rp.n_cand = 100000;
    assert_int_equal(heed_recorder_new(m, ctx, &rp, &rec), HEED_ERR_INVALID_ARG);
    assert_int_equal(heed_recorder_new(m, ctx, NULL, &rec), HEED_OK);
    heed_run *run;
    assert_int_equal(heed_recorder_finish(rec, &run), HEED_ERR_INVALID_ARG); /* never begun */
    int32_t bad = 99999;
    assert_int_equal(heed_recorder_begin(rec, &bad, 1), HEED_ERR_INVALID_ARG);
    /* a step before the prompt went through the model is refused */
    assert_int_equal(heed_recorder_begin(rec, ids, 2), HEED_OK);
    heed_sampler_params sp = heed_sampler_default_params();
    heed_sampler *smp = heed_sampler_new(&sp, 512);
    heed_sample s;
    assert_int_equal(heed_sampler_sample(smp, heed_ctx_logits(ctx), 512, &s), HEED_OK);
    assert_int_equal(heed_recorder_step(rec, &s, heed_ctx_logits(ctx)), HEED_ERR_INVALID_ARG);
    heed_sampler_free(smp);
    heed_recorder_free(rec); /* removes the hook */
    assert_int_equal(heed_decode(ctx, ids, 2), HEED_OK);
    heed_recorder_free(NULL);
    heed_run_free(NULL);
    heed_ctx_free(ctx);
    heed_model_free(m);
}

/* ------------------------------------------------------------ round trip */

static void spit(const char *path, const unsigned char *b, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* heed_recorder_last_row: while recording, the newest query's row equals the
 * finished run's row of that position; refused before any decode and after
 * finish. */
/* The live row (mean over every layer and head) of the newest query while
 * recording: recomputed from q/k, or with live_mean_row summed from the rows
 * the forward pass hands the hook; either equals the finished run's row. */
static void last_row_case(bool live_sum) {
    heed_model *m;
    assert_int_equal(heed_model_load(NULL, NULL, &m, NULL, 0), HEED_OK);
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    heed_ctx *ctx;
    assert_int_equal(heed_ctx_new(m, NULL, &ctx), HEED_OK);
    heed_recorder_params rp = heed_recorder_default_params();
    rp.live_mean_row = live_sum;
    heed_recorder *rec;
    assert_int_equal(heed_recorder_new(m, ctx, &rp, &rec), HEED_OK);
    heed_attn_sel all = heed_attn_sel_all();
    float live[8][64], row[64];
    assert_int_equal(heed_recorder_last_row(rec, &all, live[0], 64), HEED_ERR_INVALID_ARG);
    int32_t prompt[16];
    int n = heed_tokenize(m, "Once upon a time", 16, true, prompt, 16);
    assert_int_equal(heed_recorder_begin(rec, prompt, n), HEED_OK);
    assert_int_equal(heed_decode(ctx, prompt, n), HEED_OK);
    assert_int_equal(heed_recorder_last_row(rec, &all, live[0], n - 1), HEED_ERR_INVALID_ARG); /* too small */
    heed_sampler *s = heed_sampler_new(&rp.sampler, mi.n_vocab);
    heed_sample smp;
    for (int t = 0; t < 8; t++) {
        assert_int_equal(heed_recorder_last_row(rec, &all, live[t], 64), n + t);
        assert_int_equal(heed_sampler_sample(s, heed_ctx_logits(ctx), mi.n_vocab, &smp), HEED_OK);
        assert_int_equal(heed_recorder_step(rec, &smp, heed_ctx_logits(ctx)), HEED_OK);
        if (t + 1 < 8) assert_int_equal(heed_decode(ctx, &smp.id, 1), HEED_OK);
    }
    heed_run *run;
    assert_int_equal(heed_recorder_finish(rec, &run), HEED_OK);
    assert_int_equal(heed_recorder_last_row(rec, &all, row, 64), HEED_ERR_INVALID_ARG);
    int exact = 0, total = 0;
    for (int t = 0; t < 8; t++) {
        assert_int_equal(heed_run_attn_row(run, &all, n - 1 + t, row), HEED_OK);
        double sum = 0;
        for (int k = 0; k < n + t; k++) {
            assert_float_equal(live[t][k], row[k], 1e-7);
            exact += live[t][k] == row[k];
            total++;
            sum += live[t][k];
        }
        assert_float_equal(sum, 1.0, 1e-4);
    }
    printf("live row (%s): %d of %d entries equal the run's bit for bit\n", live_sum ? "summed while decoding" : "recomputed",
           exact, total);
    heed_run_free(run);
    heed_recorder_free(rec);
    heed_sampler_free(s);
    heed_ctx_free(ctx);
    heed_model_free(m);
}

static void test_recorder_last_row(void **state) {
    last_row_case(false);
    last_row_case(true);
}

static void test_round_trip(void **state) {
    heed_run *r = record(N_GEN, NULL);
    char err[256];
    const char *p1 = "test-output/rt1.heedrun", *p2 = "test-output/rt2.heedrun";
    assert_int_equal(system("mkdir -p test-output"), 0);
    assert_int_equal(heed_run_save(r, p1, err, sizeof err), HEED_OK);
    heed_run *l;
    assert_int_equal(heed_run_load(p1, &l, err, sizeof err), HEED_OK);
    heed_run_info a, b;
    heed_run_get_info(r, &a);
    heed_run_get_info(l, &b);
    assert_string_equal(a.model_file, b.model_file);
    assert_string_equal(a.prompt_text, b.prompt_text);
    assert_true(a.meta_hash == b.meta_hash && a.model_size == b.model_size && a.attn_bytes == b.attn_bytes);
    assert_int_equal(a.n_pos, b.n_pos);
    assert_true(a.sampler.seed == b.sampler.seed && a.sampler.top_p == b.sampler.top_p);
    for (int i = 0; i < a.n_prompt + a.n_output; i++) {
        int32_t ia, ib;
        const char *la, *lb;
        heed_run_token(r, i, &ia, &la);
        heed_run_token(l, i, &ib, &lb);
        assert_int_equal(ia, ib);
        assert_string_equal(la, lb);
    }
    for (int t = 0; t < a.n_output; t++) {
        heed_run_step sa, sb;
        heed_run_get_step(r, t, &sa);
        heed_run_get_step(l, t, &sb);
        assert_memory_equal(sa.cand, sb.cand, sizeof(heed_candidate) * sa.n_cand);
        assert_true(sa.logprob == sb.logprob && sa.entropy == sb.entropy);
    }
    /* views of the loaded run (no model) are bit-identical */
    size_t n = (size_t)a.n_pos;
    float *ma = malloc(sizeof(float) * n * n), *mb = malloc(sizeof(float) * n * n);
    heed_attn_sel all = heed_attn_sel_all();
    assert_int_equal(heed_run_attn_matrix(r, &all, ma), HEED_OK);
    assert_int_equal(heed_run_attn_matrix(l, &all, mb), HEED_OK);
    assert_memory_equal(ma, mb, sizeof(float) * n * n);
    free(ma);
    free(mb);
    /* saving the loaded run gives the same bytes */
    assert_int_equal(heed_run_save(l, p2, err, sizeof err), HEED_OK);
    size_t n1, n2;
    unsigned char *b1 = ru_slurp(p1, &n1), *b2 = ru_slurp(p2, &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    free(b1);
    free(b2);
    heed_run_free(l);
    /* q/k only (no full tier): still exact after loading */
    heed_recorder_params rp = heed_recorder_default_params();
    rp.full_limit_bytes = 0;
    rp.lens_top_k = 0;
    rp.attn_top_k = 0;
    heed_run *q = record(8, &rp);
    assert_int_equal(heed_run_save(q, p2, err, sizeof err), HEED_OK);
    assert_int_equal(heed_run_load(p2, &l, err, sizeof err), HEED_OK);
    heed_run_get_info(l, &b);
    assert_true(b.has_qk && !b.has_full && !b.has_topk && b.lens_top_k == 0);
    float ra[64], rb[64];
    assert_int_equal(heed_run_attn_row(r, &all, b.n_pos - 1, ra), HEED_OK);
    assert_int_equal(heed_run_attn_row(l, &all, b.n_pos - 1, rb), HEED_OK);
    assert_memory_equal(ra, rb, sizeof(float) * b.n_pos); /* same prompt, same greedy prefix */
    assert_int_equal(heed_run_lens(l, 0, 0, NULL, NULL, NULL), HEED_ERR_UNSUPPORTED);
    heed_run_free(l);
    heed_run_free(q);
    heed_run_free(r);
}

/* Attention rollout against the whole product of the layers' matrices (0.5 I
 * + 0.5 head-mean A_l), in double from every exact row. */
static void test_rollout(void **state) {
    (void)state;
    heed_run *r = record(10, NULL);
    heed_run_info ri;
    heed_run_get_info(r, &ri);
    int P = ri.n_pos;
    double *R = calloc((size_t)P * P, sizeof(double)), *T = calloc((size_t)P * P, sizeof(double));
    float *row = malloc(sizeof(float) * (size_t)P);
    for (int i = 0; i < P; i++) R[(size_t)i * P + i] = 1; /* R = I, then R <- R A'_l from the top layer down */
    for (int l = ri.n_layer - 1; l >= 0; l--) {
        heed_attn_sel sel = {&l, 1, NULL, 0, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
        memset(T, 0, sizeof(double) * (size_t)P * P);
        for (int i = 0; i < P; i++) {
            assert_int_equal(heed_run_attn_row(r, &sel, i, row), HEED_OK);
            /* A'_l row i: 0.5 e_i + 0.5 row; T = R A'_l */
            for (int a = 0; a < P; a++) {
                double w = R[(size_t)a * P + i];
                if (w == 0) continue;
                T[(size_t)a * P + i] += 0.5 * w;
                for (int k = 0; k <= i; k++) T[(size_t)a * P + k] += 0.5 * w * row[k];
            }
        }
        memcpy(R, T, sizeof(double) * (size_t)P * P);
    }
    float *out = malloc(sizeof(float) * (size_t)P);
    for (int pos = 0; pos < P; pos += 3) {
        assert_int_equal(heed_run_rollout(r, pos, out), HEED_OK);
        double sum = 0;
        for (int k = 0; k <= pos; k++) {
            assert_true(fabs(out[k] - R[(size_t)pos * P + k]) < 1e-6);
            sum += out[k];
        }
        assert_true(fabs(sum - 1) < 1e-5);
    }
    assert_int_equal(heed_run_rollout(r, P, out), HEED_ERR_INVALID_ARG);
    free(R), free(T), free(row), free(out);
    heed_run_free(r);
}

/* ---------------------------------------------------------- corrupt files */

typedef struct section {
    size_t off, len; /* header offset; payload length */
    char tag[5];
} section;

/* Walks a valid file's sections. */
static int sections(const unsigned char *b, size_t n, section *out) {
    size_t off = 16;
    int k = 0;
    while (off + 16 <= n) {
        section *s = &out[k++];
        s->off = off;
        memcpy(s->tag, b + off, 4);
        s->tag[4] = 0;
        uint64_t len;
        memcpy(&len, b + off + 8, 8);
        s->len = (size_t)len;
        off += 16 + s->len + 4;
    }
    assert_int_equal(off, n);
    return k;
}

static int load_bytes(const unsigned char *b, size_t n, char *err, size_t en) {
    const char *p = "test-output/corrupt.heedrun";
    spit(p, b, n);
    heed_run *r = NULL;
    err[0] = 0;
    int rc = heed_run_load(p, &r, err, en);
    if (rc) assert_null(r);
    heed_run_free(r);
    return rc;
}

static void expect(const unsigned char *b, size_t n, int want_rc, const char *want_msg) {
    char err[512];
    int rc = load_bytes(b, n, err, sizeof err);
    if (rc != want_rc || (want_msg && !strstr(err, want_msg)))
        fail_msg("expected rc %d with \"%s\", got %d: %s", want_rc, want_msg ? want_msg : "", rc, err);
    if (rc) assert_non_null(strstr(err, "corrupt.heedrun")); /* the message names the file */
}

/* Rewrites an i32 of the META payload and fixes its checksum: the count is
 * then caught by validation, not by the CRC. */
static void set_meta_i32(unsigned char *b, const section *meta, size_t field_off, int32_t v) {
    unsigned char *p = b + meta->off + 16;
    size_t o = 0;
    for (int i = 0; i < 4; i++) { /* skip the four strings */
        uint32_t n;
        memcpy(&n, p + o, 4);
        o += 4 + n;
    }
    memcpy(p + o + field_off, &v, 4);
    uint32_t crc = run_crc32(0, p, meta->len);
    memcpy(p + meta->len, &crc, 4);
}

/* field offsets after the strings (docs/RUN_FORMAT.md) */
enum { F_N_LAYER = 16, F_N_HEAD = 20, F_N_HEAD_KV = 24, F_N_VOCAB = 36, F_N_CAND = 92, F_FLAGS = 104,
       F_N_PROMPT = 108, F_N_OUTPUT = 112, F_N_POS = 116 };

static void test_corrupt_table(void **state) {
    heed_run *r = record(6, NULL);
    char err[256];
    assert_int_equal(system("mkdir -p test-output"), 0);
    const char *p = "test-output/good.heedrun";
    assert_int_equal(heed_run_save(r, p, err, sizeof err), HEED_OK);
    heed_run_free(r);
    size_t n;
    unsigned char *good = ru_slurp(p, &n), *b = malloc(n);
    section sec[16];
    int ns = sections(good, n, sec);
    assert_int_equal(ns, 11); /* META TOKS STEP LENS VNRM QKST RSTA TOPK HMEA FULL END! */
    expect(good, n, HEED_OK, NULL);

    memcpy(b, good, n); b[0] = 'X';
    expect(b, n, HEED_ERR_FORMAT, "bad magic");
    memcpy(b, good, n); b[8] = 2;
    expect(b, n, HEED_ERR_UNSUPPORTED, "version 2");
    expect(good, 0, HEED_ERR_FORMAT, "too short");
    expect(good, 10, HEED_ERR_FORMAT, "too short");
    /* truncated at every section boundary, inside each header, before each checksum */
    for (int s = 0; s < ns; s++) {
        expect(good, sec[s].off, HEED_ERR_FORMAT, sec[s].tag);
        expect(good, sec[s].off + 7, HEED_ERR_FORMAT, sec[s].tag);
        expect(good, sec[s].off + 16 + sec[s].len, HEED_ERR_FORMAT, sec[s].tag);
    }
    /* at random points */
    uint64_t x = 12345;
    for (int i = 0; i < 200; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        size_t cut = (size_t)(x >> 33) % n;
        expect(good, cut, HEED_ERR_FORMAT, NULL);
    }
    /* a flipped byte in each payload: the checksum */
    for (int s = 0; s < ns; s++) {
        if (!sec[s].len) continue;
        memcpy(b, good, n);
        b[sec[s].off + 16 + sec[s].len / 2] ^= 0x20;
        expect(b, n, HEED_ERR_FORMAT, "checksum mismatch");
        memcpy(b, good, n);
        b[sec[s].off + 16 + sec[s].len] ^= 1; /* the stored CRC itself */
        expect(b, n, HEED_ERR_FORMAT, "checksum mismatch");
    }
    /* a flipped tag, an absurd section length, trailing bytes */
    memcpy(b, good, n); b[sec[2].off] ^= 0x20;
    expect(b, n, HEED_ERR_FORMAT, "expected section STEP");
    memcpy(b, good, n);
    uint64_t huge = 1ull << 62;
    memcpy(b + sec[4].off + 8, &huge, 8);
    expect(b, n, HEED_ERR_FORMAT, "past the end");
    unsigned char *longer = malloc(n + 3);
    memcpy(longer, good, n);
    memset(longer + n, 0, 3);
    expect(longer, n + 3, HEED_ERR_FORMAT, "trailing bytes");
    free(longer);
    /* absurd or inconsistent counts, with valid checksums */
    const struct { size_t field; int32_t v; const char *msg; } absurd[] = {
        {F_N_LAYER, 0x7fffffff, "n_layer"}, {F_N_LAYER, 0, "n_layer"}, {F_N_HEAD, -1, "n_head"},
        {F_N_HEAD_KV, 3, "n_head_kv"},     {F_N_VOCAB, 1 << 30, "n_vocab"}, {F_N_CAND, 1000, "n_cand"},
        {F_FLAGS, 0x8000 | 31, "unknown bits"}, {F_N_PROMPT, 0x7fffffff, "n_prompt"},
        {F_N_OUTPUT, -5, "n_output"},       {F_N_POS, 1 << 28, "n_pos"},
        {F_N_LAYER, 6, "does not match"},   /* more layers than the data: a bulk length mismatch */
        {F_N_OUTPUT, 5, "TOKS"},            /* fewer outputs: the token list has bytes left */
        {F_N_VOCAB, 3, "out of range"},     /* every id beyond the vocabulary */
    };
    for (size_t i = 0; i < sizeof absurd / sizeof absurd[0]; i++) {
        memcpy(b, good, n);
        set_meta_i32(b, &sec[0], absurd[i].field, absurd[i].v);
        expect(b, n, HEED_ERR_FORMAT, absurd[i].msg);
    }
    heed_run *none;
    assert_int_equal(heed_run_load("test-output/does-not-exist.heedrun", &none, err, sizeof err), HEED_ERR_IO);
    assert_non_null(strstr(err, "does-not-exist"));
    free(b);
    free(good);
}

/* A FIFO or a device as a run file is refused at once, naming it (open()
 * of a FIFO would wait for a writer); alarm() turns a hang into a failure. */
static void on_alarm(int sig) {
    static const char msg[] = "FAIL: test_run: loading a FIFO as a run hung\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

static void test_load_not_regular(void **state) {
    const char *fifo = "test-output/run.fifo.heedrun";
    char err[256];
    heed_run *r = NULL;
    assert_int_equal(system("mkdir -p test-output"), 0);
    unlink(fifo);
    assert_int_equal(mkfifo(fifo, 0600), 0);
    signal(SIGALRM, on_alarm);
    alarm(30);
    assert_int_equal(heed_run_load(fifo, &r, err, sizeof err), HEED_ERR_IO);
    assert_null(r);
    assert_non_null(strstr(err, "run.fifo.heedrun: not a regular file (a FIFO)"));
    if (access("/dev/zero", R_OK) == 0) {
        assert_int_equal(heed_run_load("/dev/zero", &r, err, sizeof err), HEED_ERR_IO);
        assert_non_null(strstr(err, "/dev/zero: not a regular file (a character device)"));
    }
    assert_int_equal(heed_run_load("test-output", &r, err, sizeof err), HEED_ERR_IO);
    assert_non_null(strstr(err, "test-output: is a directory"));
    alarm(0);
    signal(SIGALRM, SIG_DFL);
    unlink(fifo);
}

/* ---------------------------------------------------------------- export */

static void test_npy_header_bytes(void **state) {
    float data[6] = {1, 2, 3, 4, 5, 6};
    heed_array a = {"x", HEED_DT_F32, 2, {2, 3, 0, 0}, data};
    char hdr[256];
    size_t n = run_npy_header(&a, hdr, sizeof hdr);
    assert_int_equal(n, 128);
    const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    assert_memory_equal(hdr, "\x93NUMPY\x01\x00\x76\x00", 10);
    assert_memory_equal(hdr + 10, dict, strlen(dict));
    for (size_t i = 10 + strlen(dict); i < 127; i++) assert_int_equal(hdr[i], ' ');
    assert_int_equal(hdr[127], '\n');
    heed_array v = {"v", HEED_DT_I32, 1, {3, 0, 0, 0}, data};
    n = run_npy_header(&v, hdr, sizeof hdr);
    assert_int_equal(n, 128);
    assert_non_null(strstr(hdr + 10, "'descr': '<i4', 'fortran_order': False, 'shape': (3,), }"));
    char err[256];
    assert_int_equal(system("mkdir -p test-output"), 0);
    assert_int_equal(heed_npy_write("test-output/x.npy", &a, err, sizeof err), HEED_OK);
    size_t fn;
    unsigned char *f = ru_slurp("test-output/x.npy", &fn);
    assert_int_equal(fn, 128 + sizeof data);
    assert_memory_equal(f + 128, data, sizeof data);
    free(f);
}

static uint32_t rd32(const unsigned char *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint32_t rd16(const unsigned char *p) { return p[0] | p[1] << 8; }

/* Checks the ZIP structure ourselves: EOCD, central entries, local headers, CRCs. */
static int check_zip(const unsigned char *b, size_t n, char names[][64]) {
    assert_true(n >= 22);
    const unsigned char *e = b + n - 22;
    assert_int_equal(rd32(e), 0x06054b50);
    int count = (int)rd16(e + 10);
    size_t cd = rd32(e + 16), cd_size = rd32(e + 12);
    assert_int_equal(cd + cd_size, n - 22);
    for (int i = 0; i < count; i++) {
        const unsigned char *c = b + cd;
        assert_int_equal(rd32(c), 0x02014b50);
        uint32_t crc = rd32(c + 16), size = rd32(c + 20), nl = rd16(c + 28), off = rd32(c + 42);
        assert_int_equal(rd16(c + 10), 0); /* stored */
        memcpy(names[i], c + 46, nl);
        names[i][nl] = 0;
        const unsigned char *l = b + off;
        assert_int_equal(rd32(l), 0x04034b50);
        assert_int_equal(rd32(l + 14), crc);
        assert_int_equal(rd32(l + 18), size);
        assert_memory_equal(l + 30, c + 46, nl);
        const unsigned char *data = l + 30 + rd16(l + 26);
        assert_int_equal(run_crc32(0, data, size), crc);
        assert_memory_equal(data, "\x93NUMPY", 6);
        cd += 46 + nl;
    }
    return count;
}

/* the first occurrence of needle in hay, or NULL */
static unsigned char *find_bytes(unsigned char *hay, size_t n, const char *needle, size_t m) {
    for (size_t i = 0; i + m <= n; i++)
        if (!memcmp(hay + i, needle, m)) return hay + i;
    return NULL;
}

/* --full: the dense attention array equals every exact row, zeros above
 * the diagonal; too big a run is refused with the size it would take. */
static void test_npz_full(void **state) {
    heed_run *r = record(5, NULL);
    heed_run_info ri;
    heed_run_get_info(r, &ri);
    char err[256];
    assert_int_equal(system("mkdir -p test-output"), 0);
    assert_int_equal(heed_run_export_npz_ex(r, "test-output/full.npz", HEED_EXPORT_FULL, err, sizeof err), HEED_OK);
    size_t n;
    unsigned char *b = ru_slurp("test-output/full.npz", &n);
    unsigned char *name = find_bytes(b, n, "attention.npy", 13);
    assert_non_null(name);
    unsigned char *npy = find_bytes(name, n - (size_t)(name - b), "\x93NUMPY", 6);
    assert_non_null(npy);
    uint16_t hl;
    memcpy(&hl, npy + 8, 2);
    assert_non_null(strstr((char *)npy + 10, "'shape': (5, 8,"));
    const unsigned char *data = npy + 10 + hl;
    int P = ri.n_pos;
    float row[64], got;
    for (int l = 0; l < ri.n_layer; l++)
        for (int h = 0; h < ri.n_head; h++) {
            heed_attn_sel sel = {&l, 1, &h, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
            for (int q = 0; q < P; q++) {
                assert_int_equal(heed_run_attn_row(r, &sel, q, row), HEED_OK);
                for (int k = 0; k < P; k++) {
                    memcpy(&got, data + ((((size_t)l * ri.n_head + h) * P + q) * P + k) * 4, 4);
                    assert_true(got == (k <= q ? row[k] : 0.0f));
                }
            }
        }
    free(b);
    heed_run_free(r);
}

static void test_npz_and_json(void **state) {
    heed_run *r = record(6, NULL);
    char err[256];
    assert_int_equal(system("mkdir -p test-output"), 0);
    const char *pz = "test-output/run.npz", *pj = "test-output/run.json";
    assert_int_equal(heed_run_export_npz(r, pz, err, sizeof err), HEED_OK);
    size_t n;
    unsigned char *b = ru_slurp(pz, &n);
    char names[32][64];
    int count = check_zip(b, n, names);
    assert_int_equal(count, 17);
    assert_string_equal(names[0], "prompt_ids.npy");
    assert_string_equal(names[8], "value_norms.npy");
    assert_string_equal(names[11], "q.npy");
    free(b);
    if (system("command -v unzip >/dev/null 2>&1") == 0)
        assert_int_equal(system("unzip -tq test-output/run.npz >/dev/null"), 0);
    else
        printf("   (unzip not installed: structure checked by the test's own parser only)\n");

    assert_int_equal(heed_run_export_json(r, pj, err, sizeof err), HEED_OK);
    json_error_t je;
    json_t *root = json_load_file(pj, 0, &je);
    assert_non_null(root);
    heed_run_info ri;
    heed_run_get_info(r, &ri);
    assert_int_equal(json_array_size(json_object_get(root, "steps")), 6);
    assert_int_equal(json_array_size(json_object_get(root, "tokens")), ri.n_prompt + 6);
    json_t *s0 = json_array_get(json_object_get(root, "steps"), 0);
    assert_int_equal(json_array_size(json_object_get(s0, "top")), 20);
    assert_int_equal(json_array_size(json_object_get(s0, "lens")), ri.n_layer);
    assert_string_equal(json_string_value(json_object_get(json_object_get(root, "model"), "file")), ri.model_file);
    json_decref(root);

    /* one view (the step view of step 3) to JSON and .npy */
    float in[64], out[64];
    heed_attn_sel all = heed_attn_sel_all();
    assert_int_equal(heed_run_step_view(r, &all, 3, 0, in, out, NULL, NULL), HEED_OK);
    heed_array views[2] = {{"input", HEED_DT_F32, 1, {(uint64_t)ri.n_prompt}, in},
                           {"output", HEED_DT_F32, 2, {1, 3}, out}};
    assert_int_equal(heed_json_write_arrays("test-output/view.json", views, 2, err, sizeof err), HEED_OK);
    root = json_load_file("test-output/view.json", 0, &je);
    assert_non_null(root);
    json_t *o = json_object_get(root, "output");
    assert_string_equal(json_string_value(json_object_get(o, "dtype")), "float32");
    assert_int_equal(json_array_size(json_object_get(o, "shape")), 2);
    assert_int_equal(json_array_size(json_object_get(o, "data")), 3);
    assert_true((float)json_number_value(json_array_get(json_object_get(o, "data"), 2)) == out[2]);
    json_decref(root);
    assert_int_equal(heed_npz_write("test-output/view.npz", views, 2, err, sizeof err), HEED_OK);
    heed_run_free(r);
}

static unsigned char *export_npz(heed_run *r, const char *path, size_t *n) {
    char err[256];
    assert_int_equal(heed_run_export_npz(r, path, err, sizeof err), HEED_OK);
    return ru_slurp(path, n);
}

/* The default recorder keeps q/k only; an export computes the summaries
 * from them, and they equal summaries made while generating bit for bit:
 * the two exports are the same file. */
static void test_summaries_from_exact_tier(void **state) {
    heed_recorder_params def = heed_recorder_default_params();
    assert_true(def.keep_qk && def.attn_top_k == 0 && !def.keep_head_mean && def.full_limit_bytes == 0);
    heed_recorder_params live = def;
    live.attn_top_k = 32;
    live.keep_head_mean = true;
    live.n_threads = 1; /* the export's recomputation runs on more threads than the live one */
    def.n_threads = 3;
    heed_run *a = record(24, &def), *b = record(24, &live);
    heed_run_info ia, ib;
    heed_run_get_info(a, &ia);
    heed_run_get_info(b, &ib);
    assert_true(ia.has_qk && !ia.has_topk && !ia.has_head_mean && !ia.has_full);
    assert_true(ib.has_qk && ib.has_topk && ib.has_head_mean && !ib.has_full);
    assert_true(ia.attn_bytes < ib.attn_bytes);
    assert_int_equal(system("mkdir -p test-output"), 0);
    size_t na, nb;
    unsigned char *fa = export_npz(a, "test-output/sum-after.npz", &na);
    unsigned char *fb = export_npz(b, "test-output/sum-live.npz", &nb);
    char names[32][64];
    int count = check_zip(fa, na, names);
    int found = 0;
    for (int i = 0; i < count; i++)
        found += !strcmp(names[i], "topk_pos.npy") || !strcmp(names[i], "topk_weight.npy") ||
                 !strcmp(names[i], "head_mean_packed.npy");
    assert_int_equal(found, 3);
    assert_int_equal(na, nb);
    assert_memory_equal(fa, fb, na);
    /* the run itself is unchanged by its export */
    heed_run_get_info(a, &ia);
    assert_true(!ia.has_topk && !ia.has_head_mean);
    free(fa);
    free(fb);
    heed_run_free(a);
    heed_run_free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_steps_and_lens),
        cmocka_unit_test(test_lens_on_demand),
        cmocka_unit_test(test_lens_on_demand_quantized),
        cmocka_unit_test(test_recorder_misuse),
        cmocka_unit_test(test_recorder_last_row),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_rollout),
        cmocka_unit_test(test_npz_full),
        cmocka_unit_test(test_corrupt_table),
        cmocka_unit_test(test_load_not_regular),
        cmocka_unit_test(test_npy_header_bytes),
        cmocka_unit_test(test_npz_and_json),
        cmocka_unit_test(test_summaries_from_exact_tier),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
