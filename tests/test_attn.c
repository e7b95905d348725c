/*
 * test_attn.c - attention storage and analysis.
 *
 * Hand-made patterns with known answers (top-k selection, statistics,
 * fingerprint, zones, the step view, head types, spans), then every view of
 * a recorded run against a straightforward reference computed from a full
 * capture taken by the test's own hook on an identical second context: the
 * bundled stories260K always, the tiny models of ../shared when present.
 */
#include <math.h>

#include "astore.h"
#include "attn.h"
#include "heed.h"
#include "testutil.h"

/* ------------------------------------------------------- hand-made patterns */

static void test_topk_select(void **state) {
    const float row[] = {0.1f, 0.3f, 0.05f, 0.3f, 0.25f, 0.0f};
    uint32_t pos[6];
    float w[6];
    assert_int_equal(astore_topk(row, 6, 3, pos, w), 3);
    /* ties: the lower position first */
    assert_int_equal(pos[0], 1);
    assert_int_equal(pos[1], 3);
    assert_int_equal(pos[2], 4);
    assert_true(w[0] == 0.3f && w[2] == 0.25f);
    assert_int_equal(astore_topk(row, 2, 32, pos, w), 2);
    assert_int_equal(pos[0], 1);
    assert_int_equal(pos[1], 0);
    /* every k on a longer row against a sort */
    float big[300];
    for (int i = 0; i < 300; i++) big[i] = (float)((i * 37) % 101) / 101.0f;
    for (int k = 1; k <= 300; k += 13) {
        uint32_t p[300];
        float ww[300];
        int m = astore_topk(big, 300, k, p, ww);
        assert_int_equal(m, k);
        for (int i = 1; i < m; i++) assert_true(ww[i - 1] > ww[i] || (ww[i - 1] == ww[i] && p[i - 1] < p[i]));
        int above = 0; /* nothing left out is heavier than the last kept */
        for (int i = 0; i < 300; i++) above += big[i] > ww[m - 1];
        assert_true(above <= m);
    }
}

static void test_row_stats_patterns(void **state) {
    heed_token_stats s;
    float row[600] = {0};
    /* pure previous token at pos 10 */
    row[9] = 1.0f;
    attn_row_stats(row, 10, &s);
    assert_float_equal(s.entropy, 0.0f, 1e-7);
    assert_float_equal(s.sink, 0.0f, 0);
    assert_float_equal(s.local, 1.0f, 1e-7);
    assert_int_equal(s.zone, HEED_ZONE_SYNTAX_FLOOR);
    assert_float_equal(s.fingerprint[1], 1.0f, 0);  /* distance 1 bin */
    assert_float_equal(s.fingerprint[14], 1.0f, 0); /* max */
    assert_float_equal(s.fingerprint[18], 0.1f, 1e-7); /* mean distance 1 / 10 */
    assert_float_equal(s.fingerprint[19], 1.0f / 11, 1e-7);
    /* all to BOS: sink, no zone */
    memset(row, 0, sizeof row);
    row[0] = 1.0f;
    attn_row_stats(row, 300, &s);
    assert_float_equal(s.sink, 1.0f, 0);
    assert_float_equal(s.fingerprint[12], 1.0f, 0);
    assert_int_equal(s.zone, HEED_ZONE_NONE);
    assert_float_equal(s.local + s.mid + s.far, 0.0f, 0);
    /* half at distance 20 (mid), a quarter each at 300 (long) and 0 (self) */
    memset(row, 0, sizeof row);
    row[500 - 20] = 0.5f;
    row[500 - 300] = 0.25f;
    row[500] = 0.25f;
    attn_row_stats(row, 500, &s);
    assert_float_equal(s.mid, 0.5f, 0);
    assert_float_equal(s.far, 0.25f, 0);
    assert_float_equal(s.local, 0.25f, 0);
    assert_int_equal(s.zone, HEED_ZONE_SEMANTIC_BRIDGE);
    assert_float_equal(s.fingerprint[0], 0.25f, 0); /* d = 0 */
    assert_float_equal(s.fingerprint[5], 0.5f, 0);  /* 16..31 */
    assert_float_equal(s.fingerprint[9], 0.25f, 0); /* 256..511 */
    double h = -(0.5 * log(0.5) + 2 * 0.25 * log(0.25));
    assert_float_equal(s.entropy, h, 1e-6);
    assert_float_equal(s.fingerprint[13], h / log(501.0), 1e-6);
    float sum = 0;
    for (int i = 0; i < 12; i++) sum += s.fingerprint[i];
    assert_float_equal(sum + s.fingerprint[12], 1.0f, 1e-6);
    /* zones: ties go to the nearer band */
    assert_int_equal(attn_zone(0.3f, 0.3f, 0.3f), HEED_ZONE_SYNTAX_FLOOR);
    assert_int_equal(attn_zone(0.1f, 0.3f, 0.3f), HEED_ZONE_SEMANTIC_BRIDGE);
    assert_int_equal(attn_zone(0.1f, 0.2f, 0.3f), HEED_ZONE_STRUCTURE_RIPPLE);
    assert_string_equal(heed_zone_name(HEED_ZONE_STRUCTURE_RIPPLE), "structure_ripple");
}

static void test_step_view_pattern(void **state) {
    /* prompt of 4 (BOS first), step t = 2: row has 4 + 2 entries */
    const float row[6] = {0.5f, 0.1f, 0.1f, 0.0f, 0.2f, 0.1f};
    const bool drop[4] = {true, false, false, false};
    float in[4], out[2], mi, mo;
    attn_step_view(row, 4, 2, drop, in, out, &mi, &mo);
    assert_float_equal(in[0], 0.0f, 0);
    assert_float_equal(in[1], 0.5f, 1e-6);
    assert_float_equal(in[2], 0.5f, 1e-6);
    assert_float_equal(in[3], 0.0f, 0);
    assert_float_equal(out[0], 2.0f / 3, 1e-6);
    assert_float_equal(out[1], 1.0f / 3, 1e-6);
    assert_float_equal(mi, 0.2f, 1e-6);
    assert_float_equal(mo, 0.3f, 1e-6);
    /* first step: nothing generated yet; all on BOS: the epsilon keeps zeros */
    const float r0[4] = {1.0f, 0.0f, 0.0f, 0.0f};
    attn_step_view(r0, 4, 0, drop, in, NULL, &mi, &mo);
    for (int k = 0; k < 4; k++) assert_float_equal(in[k], 0.0f, 0);
    assert_float_equal(mo, 0.0f, 0);
}

static void test_edges_pattern(void **state) {
    const float row[5] = {0.4f, 0.05f, 0.2f, 0.2f, 0.15f};
    heed_edge e[5];
    assert_int_equal(attn_edges(row, 5, 0.1f, 0, e, 5), 4);
    assert_int_equal(e[0].src, 0);
    assert_int_equal(e[1].src, 2); /* tie: lower position first */
    assert_int_equal(e[2].src, 3);
    assert_int_equal(e[3].src, 4);
    assert_int_equal(attn_edges(row, 5, 0.0f, 2, e, 5), 2);
    assert_int_equal(attn_edges(row, 5, 0.0f, 0, e, 3), 3);
}

/* Head types from rows made by a rule, over a repeated random sequence. */
typedef void (*pattern_fn)(float *row, int q, int period);

static void pat_prev(float *row, int q, int period) { row[q - 1] = 1.0f; }
static void pat_sink(float *row, int q, int period) { row[0] = 1.0f; }
static void pat_local(float *row, int q, int period) {
    int k0 = q - 7 > 1 ? q - 7 : 1;
    for (int k = k0; k <= q; k++) row[k] = 1.0f / (q - k0 + 1);
}
/* induction: in the second copy, attend to the token after the earlier
 * occurrence of the current token; elsewhere to BOS */
static void pat_induction(float *row, int q, int period) {
    if (q > period) row[q - period + 1] = 1.0f;
    else row[0] = 1.0f;
}

static heed_head_type head_of(pattern_fn fn, const int32_t *ids, int n, int period) {
    attn_head_acc acc = {0};
    float row[256];
    for (int q = 0; q < n; q++) {
        memset(row, 0, sizeof row);
        if (q < 2) row[0] = 1.0f;
        else fn(row, q, period);
        attn_head_add(&acc, row, q, ids);
    }
    heed_head_type t;
    attn_head_finish(&acc, &t);
    return t;
}

static void test_head_types_patterns(void **state) {
    /* BOS, then 24 distinct tokens, then the same 24 again */
    enum { PERIOD = 24, N = 1 + 2 * PERIOD };
    int32_t ids[N];
    ids[0] = 1;
    for (int i = 0; i < PERIOD; i++) ids[1 + i] = ids[1 + PERIOD + i] = 100 + (i * 7) % PERIOD;
    heed_head_type t = head_of(pat_prev, ids, N, PERIOD);
    assert_int_equal(t.kind, HEED_HEAD_PREV_TOKEN);
    assert_float_equal(t.prev, 1.0f, 0);
    assert_float_equal(t.induction, 0.0f, 0);
    t = head_of(pat_sink, ids, N, PERIOD);
    assert_int_equal(t.kind, HEED_HEAD_SINK);
    assert_float_equal(t.sink, 1.0f, 0);
    t = head_of(pat_local, ids, N, PERIOD);
    assert_int_equal(t.kind, HEED_HEAD_LOCAL);
    assert_float_equal(t.local, 1.0f, 1e-6);
    t = head_of(pat_induction, ids, N, PERIOD);
    assert_int_equal(t.kind, HEED_HEAD_INDUCTION);
    assert_float_equal(t.induction, 1.0f, 1e-6);
    assert_string_equal(heed_head_kind_name(t.kind), "induction");
}

static void test_spans_pattern(void **state) {
    const char *labels[] = {"[BOS]", " Once", " up", "on", " a", " time", ".", " The", " end", "!", "\\n", "Hi"};
    heed_span sp[16];
    int n = attn_spans(labels, 12, HEED_SPAN_WORD, sp, 16);
    /* [BOS] | Once | upon | a | time. | The | end! | \n | ... "Hi" has no space: joins "\n" */
    assert_int_equal(n, 8);
    assert_int_equal(sp[2].first, 2);
    assert_int_equal(sp[2].n_tok, 2);
    assert_int_equal(sp[4].n_tok, 2);
    assert_int_equal(sp[7].first, 10);
    assert_int_equal(sp[7].n_tok, 2);
    n = attn_spans(labels, 12, HEED_SPAN_SENTENCE, sp, 16);
    assert_int_equal(n, 4); /* [BOS] | Once upon a time. | The end! | \nHi */
    assert_int_equal(sp[1].first, 1);
    assert_int_equal(sp[1].n_tok, 6);
    assert_int_equal(sp[2].n_tok, 3);
    float v[12], o[4];
    for (int i = 0; i < 12; i++) v[i] = (float)i;
    heed_spans_sum(sp, n, v, o);
    assert_float_equal(o[1], 1 + 2 + 3 + 4 + 5 + 6, 0);
    assert_int_equal(attn_spans(labels, 12, HEED_SPAN_WORD, NULL, 0), 8);
}

/* ---------------------------------------------- views against a reference */

/* The test's own full capture: every row of every (layer, head). */
typedef struct cap {
    int n_layer, n_head, n_max;
    float *rows; /* (n_layer, n_head, n_max, n_max) */
} cap;

static void cap_observe(void *user, const heed_attn_block *b) {
    cap *c = user;
    for (int h = 0; h < b->n_head; h++)
        for (int i = 0; i < b->n_query; i++) {
            size_t pos = (size_t)b->pos0 + i;
            assert_true(pos < (size_t)c->n_max);
            float *dst = c->rows + (((size_t)b->layer * c->n_head + h) * c->n_max + pos) * c->n_max;
            memcpy(dst, b->probs + h * b->head_stride + i * b->row_stride, sizeof(float) * (pos + 1));
        }
}

static const float *cap_row(const cap *c, int l, int h, int q) {
    return c->rows + (((size_t)l * c->n_head + h) * c->n_max + q) * c->n_max;
}

/* Greedy generation of n_gen tokens; with rec, recorded. ids_out gets prompt + output. */
static int generate(heed_model *m, heed_ctx *ctx, heed_recorder *rec, const int32_t *prompt, int n_prompt,
                    int n_gen, int32_t *ids_out) {
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    heed_sampler_params sp = heed_sampler_default_params();
    heed_sampler *s = heed_sampler_new(&sp, mi.n_vocab);
    assert_non_null(s);
    if (rec) assert_int_equal(heed_recorder_begin(rec, prompt, n_prompt), HEED_OK);
    assert_int_equal(heed_decode(ctx, prompt, n_prompt), HEED_OK);
    memcpy(ids_out, prompt, sizeof(int32_t) * n_prompt);
    int n = 0;
    for (; n < n_gen; n++) {
        heed_sample smp;
        assert_int_equal(heed_sampler_sample(s, heed_ctx_logits(ctx), mi.n_vocab, &smp), HEED_OK);
        if (rec) assert_int_equal(heed_recorder_step(rec, &smp, heed_ctx_logits(ctx)), HEED_OK);
        ids_out[n_prompt + n] = smp.id;
        if (n + 1 == n_gen) {
            n++;
            break;
        }
        assert_int_equal(heed_decode(ctx, &smp.id, 1), HEED_OK);
    }
    heed_sampler_free(s);
    return n;
}

typedef struct ref_case {
    heed_model *m;
    heed_model_info mi;
    cap c;
    heed_run *run;      /* q/k only: every view recomputes */
    heed_run *run_full; /* full tier only */
    int32_t ids[128];
    int n_prompt, n_out, n_pos;
} ref_case;

static void ref_setup(ref_case *rc, const char *path, const int32_t *prompt, int n_prompt, int n_gen) {
    memset(rc, 0, sizeof *rc);
    assert_int_equal(heed_model_load(path, NULL, &rc->m, NULL, 0), HEED_OK);
    heed_model_get_info(rc->m, &rc->mi);
    rc->n_prompt = n_prompt;
    rc->c = (cap){rc->mi.n_layer, rc->mi.n_head, n_prompt + n_gen, NULL};
    rc->c.rows = calloc((size_t)rc->c.n_layer * rc->c.n_head * rc->c.n_max * rc->c.n_max, sizeof(float));
    assert_non_null(rc->c.rows);
    heed_ctx_params cp = heed_ctx_default_params();
    cp.n_ctx = 256;
    heed_ctx *ctx;
    /* reference: the test's own hook */
    assert_int_equal(heed_ctx_new(rc->m, &cp, &ctx), HEED_OK);
    heed_attn_hook hook = {.observe = cap_observe, .user = &rc->c};
    heed_ctx_set_attn_hook(ctx, &hook);
    int32_t ref_ids[128];
    rc->n_out = generate(rc->m, ctx, NULL, prompt, n_prompt, n_gen, ref_ids);
    heed_ctx_free(ctx);
    /* recorded twice: exact tier from q/k only, and full tier only */
    for (int pass = 0; pass < 2; pass++) {
        assert_int_equal(heed_ctx_new(rc->m, &cp, &ctx), HEED_OK);
        heed_recorder_params rp = heed_recorder_default_params();
        rp.attn_top_k = 32;
        rp.keep_head_mean = true;
        rp.keep_qk = pass == 0;
        rp.full_limit_bytes = pass == 0 ? 0 : (64u << 20);
        rp.n_threads = 2;
        heed_recorder *rec;
        assert_int_equal(heed_recorder_new(rc->m, ctx, &rp, &rec), HEED_OK);
        int n = generate(rc->m, ctx, rec, prompt, n_prompt, n_gen, rc->ids);
        assert_int_equal(n, rc->n_out);
        assert_memory_equal(rc->ids, ref_ids, sizeof(int32_t) * (n_prompt + n));
        assert_int_equal(heed_recorder_finish(rec, pass == 0 ? &rc->run : &rc->run_full), HEED_OK);
        heed_recorder_free(rec);
        heed_ctx_free(ctx);
    }
    rc->n_pos = n_prompt + rc->n_out - 1;
    heed_run_info ri;
    heed_run_get_info(rc->run, &ri);
    assert_int_equal(ri.n_pos, rc->n_pos);
    assert_true(ri.has_qk && !ri.has_full && ri.has_topk && ri.has_head_mean);
    heed_run_get_info(rc->run_full, &ri);
    assert_true(!ri.has_qk && ri.has_full);
}

static void ref_teardown(ref_case *rc) {
    heed_run_free(rc->run);
    heed_run_free(rc->run_full);
    free(rc->c.rows);
    heed_model_free(rc->m);
}

/* Reference aggregation: straightforward loops in double. */
static void ref_agg(const ref_case *rc, const heed_attn_sel *sel, int q, double *out) {
    int nl = sel->layers ? sel->n_layers : rc->mi.n_layer, nh = sel->heads ? sel->n_heads : rc->mi.n_head;
    for (int k = 0; k <= q; k++) {
        double acc = sel->agg == HEED_AGG_MEAN ? 0 : -1;
        for (int a = 0; a < nl; a++)
            for (int b = 0; b < nh; b++) {
                double v = cap_row(&rc->c, sel->layers ? sel->layers[a] : a, sel->heads ? sel->heads[b] : b, q)[k];
                acc = sel->agg == HEED_AGG_MEAN ? acc + v : (v > acc ? v : acc);
            }
        out[k] = sel->agg == HEED_AGG_MEAN ? acc / (nl * nh) : acc;
    }
}

static double max_row_err(heed_run *run, const ref_case *rc, const heed_attn_sel *sel, int q) {
    float got[128];
    double want[128], e = 0;
    assert_int_equal(heed_run_attn_row(run, sel, q, got), HEED_OK);
    ref_agg(rc, sel, q, want);
    for (int k = 0; k <= q; k++) e = fmax(e, fabs(got[k] - want[k]));
    return e;
}

static void check_exact_rows(const ref_case *rc) {
    /* single heads: recomputation from q/k against the captured probabilities */
    double e = 0;
    long identical = 0, total = 0;
    for (int l = 0; l < rc->mi.n_layer; l++)
        for (int h = 0; h < rc->mi.n_head; h++)
            for (int q = 0; q < rc->n_pos; q++) {
                heed_attn_sel sel = {&l, 1, &h, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
                float got[128];
                assert_int_equal(heed_run_attn_row(rc->run, &sel, q, got), HEED_OK);
                const float *want = cap_row(&rc->c, l, h, q);
                for (int k = 0; k <= q; k++) e = fmax(e, fabs(got[k] - want[k]));
                identical += !memcmp(got, want, sizeof(float) * (q + 1));
                total++;
                assert_int_equal(heed_run_attn_row(rc->run_full, &sel, q, got), HEED_OK);
                assert_memory_equal(got, want, sizeof(float) * (q + 1));
            }
    printf("   recompute vs capture: max err %.3g, %ld of %ld rows bit-identical\n", e, identical, total);
    /* the recorder's promise: the forward pass's kernels (block kernels in
     * a prompt, single-query ones in decode) and the recomputation agree
     * bit for bit, on every table */
    assert_true(e == 0.0);
    assert_int_equal(identical, total);
}

static void check_aggregations(const ref_case *rc) {
    int l1 = rc->mi.n_layer - 1, h1 = rc->mi.n_head - 1;
    int sub_l[2] = {0, l1}, sub_h[2] = {h1, 0};
    heed_attn_sel sels[] = {
        {NULL, 0, NULL, 0, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION}, {NULL, 0, NULL, 0, HEED_AGG_MAX, HEED_MEASURE_ATTENTION}, {&l1, 1, NULL, 0, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION},
        {NULL, 0, &h1, 1, HEED_AGG_MAX, HEED_MEASURE_ATTENTION},   {sub_l, 2, sub_h, 2, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION}, {sub_l, 1, sub_h, 1, HEED_AGG_MAX, HEED_MEASURE_ATTENTION},
    };
    for (size_t s = 0; s < sizeof sels / sizeof sels[0]; s++)
        for (int q = 0; q < rc->n_pos; q++) {
            assert_true(max_row_err(rc->run, rc, &sels[s], q) <= 1e-6);
            assert_true(max_row_err(rc->run_full, rc, &sels[s], q) <= 1e-6);
        }
    /* bad selections */
    int bad_l = rc->mi.n_layer, dup[2] = {0, 0};
    float row[128];
    heed_attn_sel b1 = {&bad_l, 1, NULL, 0, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION}, b2 = {dup, 2, NULL, 0, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
    assert_int_equal(heed_run_attn_row(rc->run, &b1, 0, row), HEED_ERR_INVALID_ARG);
    assert_int_equal(heed_run_attn_row(rc->run, &b2, 0, row), HEED_ERR_INVALID_ARG);
    heed_attn_sel all = heed_attn_sel_all();
    assert_int_equal(heed_run_attn_row(rc->run, &all, rc->n_pos, row), HEED_ERR_INVALID_ARG);
}

static void check_matrix_and_columns(const ref_case *rc) {
    int n = rc->n_pos, l = rc->mi.n_layer / 2, h = 1;
    heed_attn_sel one = {&l, 1, &h, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION}, all = heed_attn_sel_all();
    float *mat = malloc(sizeof(float) * n * n);
    assert_int_equal(heed_run_attn_matrix(rc->run, &one, mat), HEED_OK);
    for (int q = 0; q < n; q++)
        for (int k = 0; k < n; k++) {
            float want = k <= q ? cap_row(&rc->c, l, h, q)[k] : 0.0f;
            assert_true(fabs(mat[q * n + k] - want) <= 1e-5);
        }
    float col[128];
    double ref[128];
    for (int key = 0; key < n; key += 3) {
        assert_int_equal(heed_run_attn_col(rc->run, &all, key, col), HEED_OK);
        for (int q = key; q < n; q++) {
            ref_agg(rc, &all, q, ref);
            assert_true(fabs(col[q - key] - ref[key]) <= 1e-6);
        }
    }
    free(mat);
}

static void check_step_views(const ref_case *rc) {
    heed_attn_sel all = heed_attn_sel_all();
    int np = rc->n_prompt;
    float imp[128] = {0};
    double imp_ref[128] = {0};
    for (int t = 0; t < rc->n_out; t++) {
        float in[128], out[128], mi, mo;
        double row[128];
        int q = np - 1 + t;
        ref_agg(rc, &all, q, row);
        assert_int_equal(heed_run_step_view(rc->run, &all, t, 0, in, out, &mi, &mo), HEED_OK);
        /* reference: BOS out, each part divided by its own sum + 1e-8 */
        double si = 0, so = 0;
        for (int k = 0; k < np; k++) si += (k == 0 && rc->ids[0] == rc->mi.bos) ? 0 : row[k];
        for (int j = 0; j < t; j++) so += row[np + j];
        for (int k = 0; k < np; k++) {
            double w = (k == 0 && rc->ids[0] == rc->mi.bos) ? 0 : row[k] / (si + 1e-8);
            assert_true(fabs(in[k] - w) <= 1e-5);
        }
        for (int j = 0; j < t; j++) assert_true(fabs(out[j] - row[np + j] / (so + 1e-8)) <= 1e-5);
        assert_true(fabs(mi - si) <= 1e-5 && fabs(mo - so) <= 1e-5);
        for (int k = 0; k < np; k++) imp_ref[k] += row[k];
        /* edges: threshold and top-k */
        heed_edge e[128];
        int ne = heed_run_edges(rc->run, &all, q, 0.05f, 0, e, 128), want = 0;
        for (int k = 0; k <= q; k++) want += (float)row[k] >= 0.05f;
        assert_true(abs(ne - want) <= 1); /* a weight exactly at the threshold may round either way */
        for (int i = 1; i < ne; i++) assert_true(e[i - 1].weight >= e[i].weight);
        assert_int_equal(heed_run_edges(rc->run, &all, q, 0.0f, 3, e, 128), q + 1 < 3 ? q + 1 : 3);
        /* statistics */
        heed_token_stats st;
        assert_int_equal(heed_run_token_stats(rc->run, &all, q, &st), HEED_OK);
        double h = 0, loc = 0;
        for (int k = 0; k <= q; k++) {
            if (row[k] > 0) h -= row[k] * log(row[k]);
            if (k > 0 && q - k <= 7) loc += row[k];
        }
        assert_true(fabs(st.entropy - h) <= 1e-4 && fabs(st.sink - row[0]) <= 1e-6 && fabs(st.local - loc) <= 1e-5);
    }
    assert_int_equal(heed_run_input_importance(rc->run, &all, imp), HEED_OK);
    for (int k = 0; k < np; k++) assert_true(fabs(imp[k] - imp_ref[k]) <= 1e-5);
    float in[128];
    assert_int_equal(heed_run_step_view(rc->run, &all, rc->n_out, 0, in, in, NULL, NULL), HEED_ERR_INVALID_ARG);
}

static void check_head_types(const ref_case *rc) {
    int LH = rc->mi.n_layer * rc->mi.n_head;
    heed_head_type *got = calloc((size_t)LH, sizeof *got), *ful = calloc((size_t)LH, sizeof *ful);
    assert_int_equal(heed_run_head_types(rc->run, got), HEED_OK);
    assert_int_equal(heed_run_head_types(rc->run_full, ful), HEED_OK);
    for (int l = 0; l < rc->mi.n_layer; l++)
        for (int h = 0; h < rc->mi.n_head; h++) {
            double prev = 0, sink = 0;
            int n = 0;
            for (int q = 2; q < rc->n_pos; q++, n++) {
                prev += cap_row(&rc->c, l, h, q)[q - 1];
                sink += cap_row(&rc->c, l, h, q)[0];
            }
            const heed_head_type *t = &got[l * rc->mi.n_head + h];
            assert_true(fabs(t->prev - prev / n) <= 1e-5 && fabs(t->sink - sink / n) <= 1e-5);
            assert_int_equal(t->kind, ful[l * rc->mi.n_head + h].kind);
        }
    free(got);
    free(ful);
}

static void run_reference_checks(const char *path, const int32_t *prompt, int n_prompt, int n_gen) {
    ref_case rc;
    ref_setup(&rc, path, prompt, n_prompt, n_gen);
    check_exact_rows(&rc);
    check_aggregations(&rc);
    check_matrix_and_columns(&rc);
    check_step_views(&rc);
    check_head_types(&rc);
    ref_teardown(&rc);
}

static void test_views_stories(void **state) {
    const int32_t prompt[] = {1, 403, 407, 261, 378, 432, 383, 263, 268};
    run_reference_checks(NULL, prompt, 9, 24);
}

static void shared_case(const char *name) {
    char buf[512];
    const char *p = tu_shared(name, buf, sizeof buf);
    if (!p) {
        skip();
        return;
    }
    /* ids inside every tiny vocabulary; the first is arbitrary, not BOS */
    const int32_t prompt[] = {791, 4062, 14198, 39935, 35308, 927, 279, 16053, 5679, 13};
    run_reference_checks(p, prompt, 10, 12);
}

static void test_views_tiny_llama3(void **state) { shared_case("models/tiny-llama3.gguf"); }
static void test_views_tiny_qwen3(void **state) { shared_case("models/tiny-qwen3.gguf"); }
static void test_views_tiny_q8(void **state) { shared_case("models/tiny-llama3-q8_0.gguf"); }

/* Summaries: top-k entries and fp16 head-mean rows against the capture. */
static void test_summaries(void **state) {
    heed_model *m;
    assert_int_equal(heed_model_load(NULL, NULL, &m, NULL, 0), HEED_OK);
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    heed_ctx *ctx;
    assert_int_equal(heed_ctx_new(m, NULL, &ctx), HEED_OK);
    cap c = {mi.n_layer, mi.n_head, 40, calloc((size_t)mi.n_layer * mi.n_head * 40 * 40, sizeof(float))};
    int32_t ids[40] = {1, 403, 407, 261, 378, 432, 383};
    for (int i = 7; i < 40; i++) ids[i] = 260 + i;
    heed_attn_hook hook = {.observe = cap_observe, .user = &c};
    heed_ctx_set_attn_hook(ctx, &hook);
    assert_int_equal(heed_decode(ctx, ids, 40), HEED_OK);
    /* on this thread, then split over a pool of 3: the same summaries */
    for (int pass = 0; pass < 2; pass++) {
    pool *pl = pass ? pool_new(3) : NULL;
    astore st;
    astore_params ap = {4, true, true, 0, NULL, 0};
    assert_int_equal(astore_init(&st, mi.n_layer, mi.n_head, mi.n_head_kv, mi.head_dim, &ap), HEED_OK);
    /* replay the capture into the store as one block per layer */
    for (int l = 0; l < mi.n_layer; l++) {
        float *probs = calloc((size_t)mi.n_head * 40 * 40, sizeof(float));
        for (int h = 0; h < mi.n_head; h++)
            for (int q = 0; q < 40; q++) memcpy(probs + (h * 40 + q) * 40, cap_row(&c, l, h, q), sizeof(float) * (q + 1));
        heed_attn_block blk = {l, mi.n_head, 0, 40, 40, 40 * 40, probs, NULL};
        astore_add_probs(&st, &blk, pl);
        free(probs);
    }
    assert_false(st.failed);
    assert_int_equal(st.n_pos, 40);
    for (int l = 0; l < mi.n_layer; l++)
        for (int q = 0; q < 40; q++) {
            for (int k = 0; k <= q; k++) {
                float s = 0;
                for (int h = 0; h < mi.n_head; h++) s += cap_row(&c, l, h, q)[k];
                uint16_t want = kern_f32_to_f16(s / (float)mi.n_head);
                assert_int_equal(st.hmean[astore_tri(q) * mi.n_layer + l * (q + 1) + k], want);
            }
            for (int h = 0; h < mi.n_head; h++) {
                uint32_t pos[4];
                float w[4];
                int n = astore_topk(cap_row(&c, l, h, q), q + 1, 4, pos, w);
                const uint32_t *tp = st.tk_pos + ((size_t)(q * mi.n_layer + l) * mi.n_head + h) * 4;
                const uint16_t *tw = st.tk_w + ((size_t)(q * mi.n_layer + l) * mi.n_head + h) * 4;
                for (int i = 0; i < 4; i++) {
                    assert_int_equal(tp[i], i < n ? pos[i] : ASTORE_TK_NONE);
                    if (i < n) assert_int_equal(tw[i], kern_f32_to_f16(w[i]));
                }
            }
        }
    astore_free(&st);
    pool_free(pl);
    }
    free(c.rows);
    heed_ctx_free(ctx);
    heed_model_free(m);
}

/* ------------------------------------------- fast paths against references */

static uint64_t tk_rng = 0x9e3779b97f4a7c15ull;

static uint32_t tk_rand(void) {
    tk_rng ^= tk_rng << 13;
    tk_rng ^= tk_rng >> 7;
    tk_rng ^= tk_rng << 17;
    return (uint32_t)(tk_rng >> 32);
}

static float tk_bits(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

/* Row kind `kind` of length n: softmax-like weights, heavy ties, constant
 * rows, signed zeros, denormals, infinities, NaNs, and sorted orders (the
 * worst case for a naive quickselect pivot). */
static void tk_make_row(float *row, int n, int kind) {
    float peak = 1.0f + (float)(tk_rand() % 40);
    for (int i = 0; i < n; i++) {
        float u = (float)(tk_rand() >> 8) / 16777216.0f;
        switch (kind) {
        case 0: row[i] = expf(peak * (u - 1.0f)); break;
        case 1: row[i] = (float)(tk_rand() % 5) / 4.0f; break; /* 5 values: ties everywhere */
        case 2: row[i] = 0.25f; break;
        case 3: row[i] = tk_rand() % 2 ? 0.0f : -0.0f; break;
        case 4: row[i] = tk_bits(tk_rand() % 4); break; /* +0 and the three smallest denormals */
        case 5: row[i] = tk_rand() % 3 ? tk_bits(tk_rand() & 0x807fffffu) : u; break; /* denormals of both signs */
        case 6: row[i] = (float)i / (float)n; break;
        case 7: row[i] = 1.0f - (float)i / (float)n; break;
        case 8: row[i] = (float)(i % 7); break;
        case 9: row[i] = tk_bits(tk_rand()); break; /* every bit pattern, NaNs and infinities included */
        default: {
            static const float sp[] = {INFINITY, -INFINITY, NAN, 0.0f, -0.0f, 1.0f};
            row[i] = tk_rand() % 4 ? u * u : sp[tk_rand() % 6];
        }
        }
    }
}

static void test_topk_fast_matches_ref(void **state) {
    enum { NMAX = 5000, KINDS = 11 };
    float *row = malloc(sizeof(float) * NMAX), *w1 = malloc(sizeof(float) * NMAX), *w2 = malloc(sizeof(float) * NMAX);
    uint32_t *p1 = malloc(sizeof(uint32_t) * NMAX), *p2 = malloc(sizeof(uint32_t) * NMAX);
    static const int ks[] = {1, 2, 3, 7, 16, 31, 32, 33, 64, 100, 1000, ASTORE_TOPK_MAX, ASTORE_TOPK_MAX + 1};
    int checked = 0;
    for (size_t ki = 0; ki < sizeof ks / sizeof *ks; ki++) {
        int k = ks[ki];
        /* around k, around the floor's start (4k) and a buffer cut (2k + 64), long rows, random */
        int ns[] = {0, 1, 2, k - 1, k, k + 1, 2 * k + 64, 2 * k + 65, 4 * k - 1, 4 * k, 4 * k + 1,
                    4096, NMAX, 1 + (int)(tk_rand() % 700), 1 + (int)(tk_rand() % NMAX)};
        int reps = k >= 1000 ? 1 : 3;
        for (size_t ni = 0; ni < sizeof ns / sizeof *ns; ni++) {
            int n = ns[ni];
            if (n < 0 || n > NMAX) continue;
            for (int kind = 0; kind < KINDS; kind++)
                for (int r = 0; r < reps; r++) {
                    tk_make_row(row, n, kind);
                    int m1 = astore_topk_ref(row, n, k, p1, w1), m2 = astore_topk(row, n, k, p2, w2);
                    if (m1 != m2 || memcmp(p1, p2, sizeof *p1 * m1) || memcmp(w1, w2, sizeof *w1 * m1))
                        fail_msg("top-k differs from the reference: k %d n %d kind %d (%d vs %d entries)", k, n,
                                 kind, m2, m1);
                    checked++;
                }
        }
    }
    assert_true(checked > 1000);
    /* the reference itself on a known case: ties by position, -0 == +0, NaN skipped */
    const float t[] = {0.0f, NAN, 0.5f, -0.0f, 0.5f, 0.0f};
    assert_int_equal(astore_topk_ref(t, 6, 4, p1, w1), 4);
    assert_int_equal(p1[0], 2);
    assert_int_equal(p1[1], 4);
    assert_int_equal(p1[2], 0);
    assert_int_equal(p1[3], 3);
    assert_true(signbit(w1[3]));
    assert_int_equal(astore_topk_ref(t, 6, 6, p1, w1), 5);
    free(row);
    free(w1);
    free(w2);
    free(p1);
    free(p2);
}

/* Float j of the f16 test set: every sign, exponent and top-10 mantissa
 * pattern, with low bits on and around the rounding halfway points (for
 * subnormal halves these lie in the top 10 bits, all covered), then one
 * random low part. */
enum { F16_LOW = 7, F16_SET = F16_LOW << 19 };

static float f16_case(uint32_t j) {
    static const uint32_t low[F16_LOW - 1] = {0, 1, 0x0fff, 0x1000, 0x1001, 0x1fff};
    uint32_t r = j % F16_LOW;
    return tk_bits((j / F16_LOW) << 13 | (r < F16_LOW - 1 ? low[r] : tk_rand() & 0x1fff));
}

/* The branchless f16 conversion against kern's, alone and as the head-mean
 * tier runs it (in vector blocks, after the division by n_head). Checked
 * over all 2^32 floats once by hand; too slow for every run. */
static void test_f16_fast_matches_kern(void **state) {
    for (uint32_t j = 0; j < F16_SET; j++) {
        float f = f16_case(j);
        if (astore_f16(f) != kern_f32_to_f16(f))
            fail_msg("f16 of %08x: %04x, kern %04x", (unsigned)j, astore_f16(f), kern_f32_to_f16(f));
    }
    for (int i = 0; i < 1 << 20; i++) {
        float f = tk_bits(tk_rand());
        assert_int_equal(astore_f16(f), kern_f32_to_f16(f));
    }
    /* two heads, so each key is (a + b) / 2; query 4095 has a row of 4096.
     * Which payload a NaN sum carries is the compiler's choice of operand
     * order, so a NaN need only stay a NaN there. */
    enum { N = 4096 };
    astore st;
    astore_params ap = {0, false, true, 0, NULL, 0};
    assert_int_equal(astore_init(&st, 1, 2, 1, 1, &ap), HEED_OK);
    float *probs = malloc(sizeof(float) * 2 * N);
    for (uint32_t j0 = 0; j0 < F16_SET; j0 += N) {
        for (int k = 0; k < 2 * N; k++) probs[k] = f16_case((j0 + (uint32_t)k / 2) % F16_SET);
        heed_attn_block blk = {0, 2, N - 1, 1, N, N, probs, NULL};
        astore_add_probs(&st, &blk, NULL);
        assert_false(st.failed);
        const uint16_t *got = st.hmean + astore_tri(N - 1);
        for (int k = 0; k < N; k++) {
            float mean = (probs[k] + probs[N + k]) / 2.0f;
            uint16_t want = kern_f32_to_f16(mean);
            if (isnan(mean) ? (got[k] & 0x7c00) != 0x7c00 || !(got[k] & 0x3ff) : got[k] != want)
                fail_msg("head mean of %08x: %04x, want %04x", (unsigned)j0 + k, got[k], want);
        }
    }
    free(probs);
    astore_free(&st);
}

/* ------------------------------------------- summaries on any number of threads */

/* Every array of two stores, position for position: they must be equal bit for bit. */
static void stores_equal(const astore *a, const astore *b) {
    assert_int_equal(a->n_pos, b->n_pos);
    assert_int_equal(a->has_full, b->has_full);
    assert_false(a->failed || b->failed);
    size_t P = (size_t)a->n_pos, L = (size_t)a->n_layer, H = (size_t)a->n_head, K = (size_t)a->top_k;
    if (a->has_qk) {
        assert_memory_equal(a->q, b->q, sizeof(float) * P * L * a->q_dim);
        for (int i = 0; i < a->n_layer * a->n_head_kv; i++)
            assert_memory_equal(a->k[i], b->k[i], sizeof(float) * P * a->head_dim);
    }
    if (a->has_topk) {
        assert_memory_equal(a->tk_pos, b->tk_pos, sizeof(uint32_t) * P * L * H * K);
        assert_memory_equal(a->tk_w, b->tk_w, sizeof(uint16_t) * P * L * H * K);
    }
    if (a->has_hmean) assert_memory_equal(a->hmean, b->hmean, sizeof(uint16_t) * astore_tri(P) * L);
    if (a->has_full) assert_memory_equal(a->full, b->full, sizeof(float) * astore_tri(P) * L * H);
}

/* Feeds blocks of (pos0, n_query) to stores filled on this thread, and on
 * pools of 2 and 3: long blocks and long rows (summaries) and blocks of
 * many queries (q/k copies) are split over the pool, short ones stay on the
 * calling thread; every store must be the same. */
static void feed_threads(int n_layer, int n_head, int n_head_kv, int head_dim, int top_k, bool full,
                         const int (*blocks)[2], int n_blocks, bool plan) {
    enum { NS = 3 };
    pool *pools[NS] = {NULL, pool_new(2), pool_new(3)};
    astore st[NS];
    astore_params ap = {top_k, true, true, full ? (size_t)1 << 30 : 0, NULL, 0};
    for (int i = 0; i < NS; i++) {
        assert_non_null(i ? pools[i] : (void *)1);
        assert_int_equal(astore_init(&st[i], n_layer, n_head, n_head_kv, head_dim, &ap), HEED_OK);
        /* the first store grows as it goes, the others as planned */
        if (plan && i) assert_int_equal(astore_plan(&st[i], blocks[n_blocks - 1][0] + blocks[n_blocks - 1][1]), HEED_OK);
    }
    int q_dim = n_head * head_dim, kv_dim = n_head_kv * head_dim;
    for (int bi = 0; bi < n_blocks; bi++) {
        int pos0 = blocks[bi][0], nq = blocks[bi][1], n_keys = pos0 + nq;
        size_t row_stride = (size_t)n_keys, head_stride = (size_t)nq * n_keys;
        float *probs = malloc(sizeof(float) * n_head * head_stride);
        float *q = malloc(sizeof(float) * (size_t)nq * q_dim), *k = malloc(sizeof(float) * (size_t)nq * kv_dim);
        assert_true(probs && q && k);
        for (int l = 0; l < n_layer; l++) {
            for (int h = 0; h < n_head; h++)
                for (int i = 0; i < nq; i++) /* mostly softmax-like rows, now and then ties, zeros, NaNs */
                    tk_make_row(probs + h * head_stride + i * row_stride, pos0 + i + 1,
                                tk_rand() % 4 ? 0 : (int)(tk_rand() % 11));
            for (int i = 0; i < nq * q_dim; i++) q[i] = (float)(tk_rand() >> 8) / 16777216.0f - 0.5f;
            for (int i = 0; i < nq * kv_dim; i++) k[i] = (float)(tk_rand() >> 8) / 16777216.0f - 0.5f;
            heed_qk_block qb = {l, pos0, nq, n_head, n_head_kv, head_dim, q, k, NULL};
            heed_attn_block pb = {l, n_head, pos0, nq, row_stride, head_stride, probs, NULL};
            for (int i = 0; i < NS; i++) {
                astore_add_qk(&st[i], &qb, pools[i]);
                astore_add_probs(&st[i], &pb, pools[i]);
            }
        }
        free(probs);
        free(q);
        free(k);
        for (int i = 1; i < NS; i++) stores_equal(&st[0], &st[i]);
    }
    assert_int_equal(st[0].n_pos, blocks[n_blocks - 1][0] + blocks[n_blocks - 1][1]);
    assert_int_equal(st[0].has_full, full);
    for (int i = 0; i < NS; i++) {
        astore_free(&st[i]);
        pool_free(pools[i]);
    }
}

static void test_summaries_threads(void **state) {
    /* Blocks of under 8192 units of work stay on the caller: here the
     * first ones (4 heads x 9 entries x 11 units), later decode steps are
     * split (4 x 311 x 11: 13.7k; the head mean of one query by key
     * ranges), prompts too (4 x 300 rows of 160 entries on average x 11) */
    static const int small[][2] = {{0, 8}, {8, 1}, {9, 1}, {10, 300}, {310, 1}, {311, 40}, {351, 1}, {352, 3}};
    feed_threads(3, 4, 2, 8, 8, true, small, 8, false);
    feed_threads(3, 4, 2, 8, 8, true, small, 8, true);
    /* q/k and head means only: decode steps (4 x 311
     * entries) stay on the caller, prompts are split by query */
    feed_threads(3, 4, 2, 8, 0, false, small, 8, true);
    /* 32 heads of long rows: a decode step's head means alone are split too
     * (32 x 601: 19k) */
    static const int wide[][2] = {{0, 600}, {600, 1}, {601, 1}, {602, 5}, {607, 1}};
    feed_threads(1, 32, 8, 4, 32, true, wide, 5, true);
    feed_threads(1, 32, 8, 4, 0, false, wide, 5, false);
}

typedef struct two_stores {
    astore *a, *b;
} two_stores;

static void qk_both(void *user, const heed_qk_block *blk) {
    two_stores *t = user;
    astore_add_qk(t->a, blk, NULL);
    astore_add_qk(t->b, blk, NULL);
}

static void probs_both(void *user, const heed_attn_block *blk) {
    two_stores *t = user;
    astore_add_probs(t->a, blk, NULL); /* advances n_pos */
    astore_add_probs(t->b, blk, NULL);
}

/* q and k in file-backed mappings (spill_dir): the same rows, bit for bit,
 * as in memory, through growth past the plan (the mapping's contents move
 * to a bigger one). */
static void test_spill(void **state) {
    heed_model *m;
    assert_int_equal(heed_model_load(NULL, NULL, &m, NULL, 0), HEED_OK);
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    assert_int_equal(system("mkdir -p test-output"), 0);
    astore mem, file;
    astore_params am = {0, true, false, 0, NULL, 0}, af = {0, true, false, 0, "test-output", 0};
    assert_int_equal(astore_init(&mem, mi.n_layer, mi.n_head, mi.n_head_kv, mi.head_dim, &am), HEED_OK);
    assert_int_equal(astore_init(&file, mi.n_layer, mi.n_head, mi.n_head_kv, mi.head_dim, &af), HEED_OK);
    assert_int_equal(astore_plan(&file, 24), HEED_OK);
    assert_true(file.q_map > 0 && file.k_map[0] > 0);
    heed_ctx *ctx;
    assert_int_equal(heed_ctx_new(m, NULL, &ctx), HEED_OK);
    two_stores t = {&mem, &file};
    heed_attn_hook hook = {.observe = probs_both, .observe_qk = qk_both, .user = &t};
    heed_ctx_set_attn_hook(ctx, &hook);
    int32_t ids[80] = {1, 403, 407, 261, 378, 432, 383};
    for (int i = 7; i < 80; i++) ids[i] = 260 + i;
    assert_int_equal(heed_decode(ctx, ids, 20), HEED_OK);
    for (int i = 20; i < 80; i++) assert_int_equal(heed_decode(ctx, ids + i, 1), HEED_OK); /* past the plan */
    assert_int_equal(file.n_pos, 80);
    assert_true(file.cap >= 80 && file.q_map >= (size_t)file.cap * mi.n_layer * file.q_dim * sizeof(float));
    float ra[80], rb[80];
    const kern_ops *ops = kern_ops_best();
    for (int l = 0; l < mi.n_layer; l++)
        for (int h = 0; h < mi.n_head; h++)
            for (int p = 0; p < 80; p++) {
                assert_int_equal(astore_row(&mem, ops, l, h, p, ra), HEED_OK);
                assert_int_equal(astore_row(&file, ops, l, h, p, rb), HEED_OK);
                assert_memory_equal(ra, rb, sizeof(float) * (size_t)(p + 1));
            }
    /* the spill folder holds no file with a name */
    assert_int_equal(system("ls -A test-output | grep -q heed-spill"), 256);
    heed_ctx_free(ctx);
    astore_free(&mem);
    astore_free(&file);
    heed_model_free(m);
}

/* A plan reserves every tier at once, tier (c) up to its limit without
 * dropping it; growth past it doubles as before. */
static void test_plan(void **state) {
    astore st;
    /* 2 layers x 2 heads x 4 bytes: 16 bytes per row, 100 rows fit tri(13) = 91 */
    astore_params ap = {4, true, true, 100 * 16, NULL, 0};
    assert_int_equal(astore_init(&st, 2, 2, 1, 4, &ap), HEED_OK);
    assert_int_equal(astore_plan(&st, 40), HEED_OK);
    assert_int_equal(st.cap, 40);
    assert_true(st.has_full);
    assert_int_equal(st.full_cap, 13);
    assert_int_equal(astore_reserve(&st, 13), HEED_OK);
    assert_true(st.has_full);
    assert_int_equal(st.cap, 40);
    assert_int_equal(astore_reserve(&st, 14), HEED_OK); /* past the limit: the tier goes */
    assert_false(st.has_full);
    assert_int_equal(astore_reserve(&st, 40), HEED_OK);
    assert_int_equal(st.cap, 40);
    assert_int_equal(astore_reserve(&st, 41), HEED_OK);
    assert_int_equal(st.cap, 80);
    assert_int_equal(astore_plan(&st, 0), HEED_OK);
    assert_int_equal(astore_plan(&st, 20), HEED_OK); /* never shrinks */
    assert_int_equal(st.cap, 80);
    astore_free(&st);
    /* no plan: doubling from 64 */
    assert_int_equal(astore_init(&st, 2, 2, 1, 4, &ap), HEED_OK);
    assert_int_equal(astore_reserve(&st, 10), HEED_OK);
    assert_int_equal(st.cap, 64);
    assert_int_equal(astore_reserve(&st, 65), HEED_OK);
    assert_int_equal(st.cap, 128);
    assert_false(st.has_full); /* 65 positions are past the limit */
    astore_free(&st);
    /* a full tier that grows reserves up to its limit at once, not a row at a time */
    assert_int_equal(astore_init(&st, 2, 2, 1, 4, &ap), HEED_OK);
    assert_int_equal(astore_reserve(&st, 5), HEED_OK);
    assert_int_equal(st.full_cap, 13);
    assert_true(st.has_full);
    astore_free(&st);
}

/* A whole recording (prompt long enough to be split over the pool) on 1 and
 * on 3 threads, saved: the files are the same byte for byte (n_threads is
 * not stored), so every q/k entry, top-k slot, head-mean and full row is. */
static unsigned char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)sz);
    assert_non_null(b);
    assert_int_equal(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static void test_recorder_threads(void **state) {
    heed_model *m;
    assert_int_equal(heed_model_load(NULL, NULL, &m, NULL, 0), HEED_OK);
    enum { NP = 200, NG = 24 };
    int32_t prompt[NP], ids[NP + NG];
    for (int i = 0; i < NP; i++) prompt[i] = 260 + (i * 37) % 200;
    assert_int_equal(system("mkdir -p test-output"), 0);
    /* the split recording first: a store made after another is freed may
     * get its memory back, and a slot the split left unwritten would then
     * hold the right value by chance */
    const char *paths[3] = {"test-output/thr3.heedrun", "test-output/thr1.heedrun", "test-output/thr3g.heedrun"};
    for (int pass = 0; pass < 3; pass++) {
        heed_ctx_params cp = heed_ctx_default_params();
        cp.n_ctx = 256;
        heed_ctx *ctx;
        assert_int_equal(heed_ctx_new(m, &cp, &ctx), HEED_OK);
        heed_recorder_params rp = heed_recorder_default_params();
        rp.attn_top_k = 32;
        rp.keep_head_mean = true;
        rp.full_limit_bytes = 256u << 20;
        rp.n_threads = pass == 1 ? 1 : 3;
        rp.n_predict = pass < 2 ? NG : 0; /* the last one grows as it goes */
        heed_recorder *rec;
        assert_int_equal(heed_recorder_new(m, ctx, &rp, &rec), HEED_OK);
        assert_int_equal(generate(m, ctx, rec, prompt, NP, NG, ids), NG);
        heed_run *run;
        assert_int_equal(heed_recorder_finish(rec, &run), HEED_OK);
        heed_run_info ri;
        heed_run_get_info(run, &ri);
        assert_true(ri.has_qk && ri.has_topk && ri.has_head_mean && ri.has_full);
        assert_int_equal(ri.n_pos, NP + NG - 1);
        char err[256];
        assert_int_equal(heed_run_save(run, paths[pass], err, sizeof err), HEED_OK);
        heed_run_free(run);
        heed_recorder_free(rec);
        heed_ctx_free(ctx);
    }
    size_t n1, n2;
    unsigned char *b1 = read_all(paths[0], &n1), *b2 = read_all(paths[1], &n2);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    free(b2);
    /* grown rather than planned: the same attention (the header records n_predict) */
    heed_run *a, *b;
    char err[256];
    assert_int_equal(heed_run_load(paths[0], &a, err, sizeof err), HEED_OK);
    assert_int_equal(heed_run_load(paths[2], &b, err, sizeof err), HEED_OK);
    size_t n = NP + NG - 1;
    float *ma = malloc(sizeof(float) * n * n), *mb = malloc(sizeof(float) * n * n);
    heed_attn_sel all = heed_attn_sel_all();
    assert_int_equal(heed_run_attn_matrix(a, &all, ma), HEED_OK);
    assert_int_equal(heed_run_attn_matrix(b, &all, mb), HEED_OK);
    assert_memory_equal(ma, mb, sizeof(float) * n * n);
    heed_run_info ia, ib;
    heed_run_get_info(a, &ia);
    heed_run_get_info(b, &ib);
    assert_true(ia.attn_bytes == ib.attn_bytes);
    free(ma);
    free(mb);
    free(b1);
    heed_run_free(a);
    heed_run_free(b);
    heed_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_topk_select),
        cmocka_unit_test(test_row_stats_patterns),
        cmocka_unit_test(test_step_view_pattern),
        cmocka_unit_test(test_edges_pattern),
        cmocka_unit_test(test_head_types_patterns),
        cmocka_unit_test(test_spans_pattern),
        cmocka_unit_test(test_summaries),
        cmocka_unit_test(test_views_stories),
        cmocka_unit_test(test_views_tiny_llama3),
        cmocka_unit_test(test_views_tiny_qwen3),
        cmocka_unit_test(test_views_tiny_q8),
        cmocka_unit_test(test_topk_fast_matches_ref),
        cmocka_unit_test(test_f16_fast_matches_kern),
        cmocka_unit_test(test_summaries_threads),
        cmocka_unit_test(test_plan),
        cmocka_unit_test(test_spill),
        cmocka_unit_test(test_recorder_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
