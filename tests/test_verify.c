/*
 * test_verify - re-running a recorded run with attention knocked out
 * (heed_rerun_*, heed_run_verify_sources) and attention into spans
 * (heed_run_span_attention): a rerun without extra knockouts gives back the
 * recorded log-probabilities (also for a run made under interventions,
 * which the rerun applies again), a rerun that reuses the prefix equals a
 * full decode from position 0 with the same knockout bit for bit, a
 * knockout that matches nothing changes nothing, the verified sources are
 * the row's heaviest, and span sums equal the rows summed by hand.
 */
#include <math.h>

#include "heed.h"
#include "testutil.h"

enum { N_OUT = 10 };

static const int32_t PROMPT[] = {1, 403, 407, 261, 378};

/* A whole generation of PROMPT with gp, recorded; *reused (may be NULL)
 * gets the positions it kept of gp->reuse. */
static heed_run *generate(heed_model *m, heed_ctx *c, const heed_gen_params *gp, int *reused) {
    heed_gen *g;
    assert_int_equal(heed_gen_start(m, c, gp, PROMPT, 5, &g), HEED_OK);
    heed_gen_step st;
    while (heed_gen_next(g, &st) == 1) {}
    if (reused) *reused = heed_gen_reused(g);
    heed_run *run;
    assert_int_equal(heed_gen_finish(g, &run), HEED_OK);
    heed_gen_free(g);
    return run;
}

static heed_run *record(heed_model *m, heed_ctx *c, const float *head_scale) {
    heed_gen_params gp = heed_gen_default_params();
    gp.record = true;
    gp.n_predict = N_OUT;
    gp.sampler.temperature = 0;
    gp.head_scale = head_scale;
    return generate(m, c, &gp, NULL);
}

/* The bundled model, a context, and a greedy run recorded on it. */
static heed_run *fixture(heed_model **m, heed_ctx **c, heed_run_info *ri) {
    assert_int_equal(heed_model_load(NULL, NULL, m, NULL, 0), HEED_OK);
    assert_int_equal(heed_ctx_new(*m, NULL, c), HEED_OK);
    heed_run *run = record(*m, *c, NULL);
    heed_run_get_info(run, ri);
    return run;
}

/* log p(ids[q+1]) after decoding ids[0..q] from scratch: [0, q) as one call
 * (or the prompt's part of it), then q alone; ko applied throughout. */
static float full_decode(heed_model *m, const int32_t *ids, int n_prompt, int q, const heed_knockout *ko, int n_ko,
                         const float *head_scale) {
    heed_ctx *c;
    assert_int_equal(heed_ctx_new(m, NULL, &c), HEED_OK);
    assert_int_equal(heed_ctx_set_knockouts(c, ko, n_ko), HEED_OK);
    assert_int_equal(heed_ctx_set_head_scale(c, head_scale), HEED_OK);
    int batch = q < n_prompt ? q : n_prompt;
    if (batch) assert_int_equal(heed_decode(c, ids, batch), HEED_OK);
    for (int i = batch; i <= q; i++) assert_int_equal(heed_decode(c, ids + i, 1), HEED_OK);
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    const float *lg = heed_ctx_logits(c);
    double mx = lg[0], z = 0;
    for (int i = 1; i < mi.n_vocab; i++) mx = lg[i] > mx ? lg[i] : mx;
    for (int i = 0; i < mi.n_vocab; i++) z += exp((double)lg[i] - mx);
    float lp = (float)((double)lg[ids[q + 1]] - mx - log(z));
    heed_ctx_free(c);
    return lp;
}

static void check_run(heed_model *m, heed_run *run, const float *head_scale) {
    heed_run_info ri;
    heed_run_get_info(run, &ri);
    int32_t ids[64];
    for (int i = 0; i < ri.n_prompt + ri.n_output; i++) heed_run_token(run, i, &ids[i], NULL);
    for (int t = 0; t < ri.n_output - 1; t += 3) {
        int p = ri.n_prompt - 1 + t;
        heed_rerun *rr;
        assert_int_equal(heed_rerun_new(run, m, NULL, p, &rr), HEED_OK);
        /* the whole rest of the run: each step's recorded log-probability */
        float lp[64];
        int q1 = ri.n_prompt + ri.n_output - 1;
        assert_int_equal(heed_rerun_logprobs(rr, NULL, 0, q1, lp), HEED_OK);
        for (int q = p; q < q1; q++) {
            heed_run_step st;
            assert_int_equal(heed_run_get_step(run, q - ri.n_prompt + 1, &st), HEED_OK);
            assert_true(fabsf(lp[q - p] - st.logprob) <= 1e-5f + 1e-5f * fabsf(st.logprob));
        }
        /* a knockout of BOS for this query: equal to a decode from scratch, bit for bit */
        heed_knockout ko = {-1, -1, p, p + 1, 0, 1};
        float got;
        assert_int_equal(heed_rerun_logprobs(rr, &ko, 1, p + 1, &got), HEED_OK);
        assert_true(got == full_decode(m, ids, ri.n_prompt, p, &ko, 1, head_scale));
        /* one on keys after the query matches nothing: the base again, bit for bit */
        float base, none;
        assert_int_equal(heed_rerun_logprobs(rr, NULL, 0, p + 1, &base), HEED_OK);
        heed_knockout later = {-1, -1, p, p + 1, p + 1, p + 3};
        assert_int_equal(heed_rerun_logprobs(rr, &later, 1, p + 1, &none), HEED_OK);
        assert_true(none == base);
        heed_rerun_free(rr);
    }
}

static void test_rerun(void **state) {
    (void)state;
    heed_model *m;
    assert_int_equal(heed_model_load(NULL, NULL, &m, NULL, 0), HEED_OK);
    heed_ctx *c;
    assert_int_equal(heed_ctx_new(m, NULL, &c), HEED_OK);
    heed_run *run = record(m, c, NULL);
    check_run(m, run, NULL);
    heed_run_free(run);
    /* a run made with a head ablated: the rerun applies it again */
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    float *scale = malloc(sizeof(float) * (size_t)mi.n_layer * mi.n_head);
    for (int i = 0; i < mi.n_layer * mi.n_head; i++) scale[i] = i == 3 ? 0.0f : 1.0f;
    run = record(m, c, scale);
    check_run(m, run, scale);
    heed_run_free(run);
    free(scale);
    heed_ctx_free(c);
    heed_model_free(m);
}

static void test_verify_sources(void **state) {
    (void)state;
    heed_model *m;
    heed_ctx *c;
    heed_run_info ri;
    heed_run *run = fixture(&m, &c, &ri);
    const int t = 4, p = ri.n_prompt - 1 + t;
    for (int measure = 0; measure < 2; measure++) {
        heed_attn_sel sel = heed_attn_sel_all();
        sel.measure = measure ? HEED_MEASURE_VALUE : HEED_MEASURE_ATTENTION;
        heed_source_check chk[HEED_VERIFY_MAX];
        float base;
        int n = heed_run_verify_sources(run, m, c, t, &sel, 5, chk, &base);
        assert_int_equal(n, 5);
        heed_run_step st;
        heed_run_get_step(run, t, &st);
        assert_true(fabsf(base - st.logprob) <= 1e-5f + 1e-5f * fabsf(st.logprob));
        heed_edge e[5];
        assert_int_equal(heed_run_edges(run, &sel, p, 0.0f, 5, e, 5), 5);
        int32_t chosen;
        heed_run_token(run, p + 1, &chosen, NULL);
        for (int i = 0; i < n; i++) {
            assert_int_equal(chk[i].pos, e[i].src);
            assert_true(chk[i].weight == e[i].weight);
            assert_true(chk[i].drop == base - chk[i].logprob);
            assert_int_equal(chk[i].still_chosen, chk[i].top_id == chosen);
            assert_true(isfinite(chk[i].logprob) && chk[i].logprob <= 0);
        }
        printf("step %d (%s): drops %.4f %.4f %.4f %.4f %.4f\n", t, measure ? "value" : "attention", chk[0].drop,
               chk[1].drop, chk[2].drop, chk[3].drop, chk[4].drop);
    }
    /* the context is usable again afterwards, with no interventions left on it */
    heed_ctx_reset(c);
    assert_int_equal(heed_decode(c, PROMPT, 5), HEED_OK);
    /* bad arguments */
    heed_attn_sel sel = heed_attn_sel_all();
    heed_source_check chk[HEED_VERIFY_MAX];
    assert_int_equal(heed_run_verify_sources(run, m, c, ri.n_output, &sel, 5, chk, NULL), HEED_ERR_INVALID_ARG);
    assert_int_equal(heed_run_verify_sources(run, m, c, 0, &sel, 11, chk, NULL), HEED_ERR_INVALID_ARG);
    assert_int_equal(heed_run_verify_sources(run, m, c, 0, &sel, 0, chk, NULL), HEED_ERR_INVALID_ARG);
    heed_rerun *rr;
    assert_int_equal(heed_rerun_new(run, m, NULL, ri.n_prompt + ri.n_output - 1, &rr), HEED_ERR_INVALID_ARG);
    assert_int_equal(heed_rerun_new(run, m, NULL, 2, &rr), HEED_OK);
    float lp[4];
    assert_int_equal(heed_rerun_logprobs(rr, NULL, 0, 2, lp), HEED_ERR_INVALID_ARG);
    assert_int_equal(heed_rerun_logprobs(rr, NULL, 0, ri.n_prompt + ri.n_output, lp), HEED_ERR_INVALID_ARG);
    heed_rerun_free(rr);
    heed_run_free(run);
    heed_ctx_free(c);
    heed_model_free(m);
}

static void test_other_model_refused(void **state) {
    (void)state;
    char buf[1024];
    const char *path = tu_shared("models/tiny-llama3.gguf", buf, sizeof buf);
    if (!path) skip();
    heed_model *m, *other;
    assert_int_equal(heed_model_load(NULL, NULL, &m, NULL, 0), HEED_OK);
    assert_int_equal(heed_model_load(path, NULL, &other, NULL, 0), HEED_OK);
    heed_ctx *c;
    assert_int_equal(heed_ctx_new(m, NULL, &c), HEED_OK);
    heed_run *run = record(m, c, NULL);
    heed_rerun *rr;
    assert_int_equal(heed_rerun_new(run, other, NULL, 3, &rr), HEED_ERR_MODEL_MISMATCH);
    heed_run_free(run);
    heed_ctx_free(c);
    heed_model_free(other);
    heed_model_free(m);
}

static void test_span_attention(void **state) {
    (void)state;
    heed_model *m;
    heed_ctx *c;
    heed_run_info ri;
    heed_run *run = fixture(&m, &c, &ri);
    heed_span spans[3] = {{0, 1}, {1, 3}, {6, 4}};
    for (int measure = 0; measure < 2; measure++) {
        heed_attn_sel sel = heed_attn_sel_all();
        sel.measure = measure ? HEED_MEASURE_VALUE : HEED_MEASURE_ATTENTION;
        float out[3];
        int q0 = 5, q1 = ri.n_pos;
        assert_int_equal(heed_run_span_attention(run, &sel, q0, q1, spans, 3, out), HEED_OK);
        for (int s = 0; s < 3; s++) {
            double want = 0;
            float row[64];
            for (int q = q0; q < q1; q++) {
                heed_run_attn_row(run, &sel, q, row);
                for (int k = spans[s].first; k < spans[s].first + spans[s].n_tok && k <= q; k++) want += row[k];
            }
            want /= q1 - q0;
            assert_true(fabs(out[s] - want) <= 1e-6 * (1 + fabs(want)));
        }
    }
    heed_attn_sel sel = heed_attn_sel_all();
    float out[3];
    heed_span bad = {ri.n_prompt + ri.n_output - 1, 2};
    assert_int_equal(heed_run_span_attention(run, &sel, 0, 1, &bad, 1, out), HEED_ERR_INVALID_ARG);
    assert_int_equal(heed_run_span_attention(run, &sel, 3, 3, spans, 1, out), HEED_ERR_INVALID_ARG);
    heed_run_free(run);
    heed_ctx_free(c);
    heed_model_free(m);
}

/* A branch at step t with head 3 ablated from its query on: with the
 * parent's KV cache reused, and from scratch on a fresh context. */
static heed_run *branch(heed_model *m, heed_ctx *c, const heed_run *parent, int t, bool reuse, const float *scale,
                        const heed_knockout *ko, int n_ko, int *reused) {
    heed_run_info ri;
    heed_run_get_info(parent, &ri);
    int32_t forced[N_OUT];
    for (int i = 0; i < t; i++) heed_run_token(parent, ri.n_prompt + i, &forced[i], NULL);
    heed_gen_params gp = heed_gen_default_params();
    gp.record = true;
    gp.n_predict = N_OUT;
    gp.sampler.temperature = 0;
    gp.forced = forced;
    gp.n_forced = t;
    gp.head_scale = scale;
    gp.knockouts = ko;
    gp.n_knockouts = n_ko;
    gp.intervene_from = ri.n_prompt - 1 + t;
    gp.reuse = reuse ? parent : NULL;
    return generate(m, c, &gp, reused);
}

static void assert_runs_equal(heed_run *a, heed_run *b, bool exact) {
    heed_run_info ia, ib;
    heed_run_get_info(a, &ia);
    heed_run_get_info(b, &ib);
    assert_int_equal(ia.n_output, ib.n_output);
    assert_int_equal(ia.n_pos, ib.n_pos);
    assert_int_equal(ia.intervene_from, ib.intervene_from);
    for (int i = 0; i < ia.n_prompt + ia.n_output; i++) {
        int32_t x, y;
        heed_run_token(a, i, &x, NULL);
        heed_run_token(b, i, &y, NULL);
        assert_int_equal(x, y);
    }
    for (int t = 0; t < ia.n_output; t++) {
        heed_run_step sa, sb;
        heed_run_get_step(a, t, &sa);
        heed_run_get_step(b, t, &sb);
        if (exact) assert_true(sa.logprob == sb.logprob);
        else assert_true(fabsf(sa.logprob - sb.logprob) <= 1e-5f * (1 + fabsf(sb.logprob)));
    }
    heed_attn_sel all = heed_attn_sel_all();
    float *ma = malloc(sizeof(float) * (size_t)ia.n_pos * ia.n_pos), *mb = malloc(sizeof(float) * (size_t)ia.n_pos * ia.n_pos);
    for (int measure = 0; measure < 2; measure++) {
        all.measure = measure ? HEED_MEASURE_VALUE : HEED_MEASURE_ATTENTION;
        assert_int_equal(heed_run_attn_matrix(a, &all, ma), HEED_OK);
        assert_int_equal(heed_run_attn_matrix(b, &all, mb), HEED_OK);
        for (size_t i = 0; i < (size_t)ia.n_pos * ia.n_pos; i++)
            if (exact) assert_true(ma[i] == mb[i]);
            else assert_true(fabsf(ma[i] - mb[i]) <= 1e-5f);
    }
    free(ma), free(mb);
}

static void test_branch_reuse(void **state) {
    (void)state;
    heed_model *m;
    assert_int_equal(heed_model_load(NULL, NULL, &m, NULL, 0), HEED_OK);
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    float *scale = malloc(sizeof(float) * (size_t)mi.n_layer * mi.n_head);
    for (int i = 0; i < mi.n_layer * mi.n_head; i++) scale[i] = i == 3 ? 0.0f : 1.0f;
    heed_ctx *c, *fresh;
    assert_int_equal(heed_ctx_new(m, NULL, &c), HEED_OK);
    assert_int_equal(heed_ctx_new(m, NULL, &fresh), HEED_OK);
    for (int t = 0; t <= 6; t += 2) {
        for (int kind = 0; kind < 2; kind++) { /* head ablation, then a knockout of BOS from the query on */
            heed_run *parent = record(m, c, NULL); /* c now holds the parent's KV cache */
            heed_run_info pi;
            heed_run_get_info(parent, &pi);
            const int p = pi.n_prompt - 1 + t;
            heed_knockout ko = {-1, -1, p, 64, 0, 1};
            int used_a, used_b;
            heed_run *a = branch(m, c, parent, t, true, kind ? NULL : scale, kind ? &ko : NULL, kind, &used_a);
            heed_run *b = branch(m, fresh, parent, t, false, kind ? NULL : scale, kind ? &ko : NULL, kind, &used_b);
            assert_int_equal(used_a, p);
            assert_int_equal(used_b, 0);
            /* from step 1 on the prefix is decoded as the parent decoded it: bit for bit; at step 0 the
             * prompt's last token is decoded alone rather than in the prompt's batch */
            assert_runs_equal(a, b, t > 0);
            /* the reused positions' rows are the parent's */
            heed_attn_sel all = heed_attn_sel_all();
            float ra[32], rp[32];
            for (int q = 0; q < p; q++) {
                heed_run_attn_row(a, &all, q, ra);
                heed_run_attn_row(parent, &all, q, rp);
                assert_memory_equal(ra, rp, sizeof(float) * (size_t)(q + 1));
            }
            heed_run_free(a), heed_run_free(b), heed_run_free(parent);
        }
    }
    /* mean ablation needs a first pass over the context: no reuse, the same run */
    heed_run *parent = record(m, c, NULL);
    heed_gen_params gp = heed_gen_default_params();
    unsigned char *which = calloc((size_t)mi.n_layer * mi.n_head, 1);
    which[5] = 1;
    gp.record = true, gp.n_predict = 4, gp.sampler.temperature = 0, gp.ablate_mean = which, gp.reuse = parent;
    heed_gen *g;
    assert_int_equal(heed_gen_start(m, c, &gp, PROMPT, 5, &g), HEED_OK);
    assert_int_equal(heed_gen_reused(g), 0);
    heed_gen_free(g);
    free(which);
    heed_run_free(parent);
    free(scale);
    heed_ctx_free(c);
    heed_ctx_free(fresh);
    heed_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rerun),
        cmocka_unit_test(test_verify_sources),
        cmocka_unit_test(test_other_model_refused),
        cmocka_unit_test(test_span_attention),
        cmocka_unit_test(test_branch_reuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
