/*
 * run_verify.c - re-running a recorded run with more attention knocked out,
 * to test what a view suggests: does the chosen token depend on the source
 * the attention points at? (heed_rerun_*, heed_run_verify_sources,
 * heed_run_span_attention; docs/ANALYSIS.md, "Ablation-verified sources").
 *
 * A rerun decodes the run's tokens before the first position a knockout
 * changes once (the prompt's in one batch, the outputs one at a time, as
 * they were recorded, under the run's own interventions), then, for each
 * question, rewinds to that position and decodes the rest one token at a
 * time, reading the log-probability of the run's next token at each.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn.h"
#include "forward.h"
#include "run.h"

struct heed_rerun {
    heed_run *run;
    const heed_model *m;
    heed_ctx *ctx;
    bool own_ctx;
    int q0;
    heed_knockout *ko; /* the run's knockouts, then a call's extra ones */
    int n_ko_run, cap_ko;
};

/* Positions the run's tokens fill: prompt then outputs. */
static int run_tokens(const heed_run *r) { return r->n_prompt + r->n_output; }

/* The run's own interventions on ctx (a rerun is of the model that made the run). */
static int apply_run_interventions(heed_rerun *rr) {
    heed_run *r = rr->run;
    int rc = heed_ctx_set_head_scale(rr->ctx, r->head_scale);
    if (!rc) rc = heed_ctx_set_head_values(rr->ctx, r->head_which, r->head_values);
    if (!rc) rc = heed_ctx_set_resid_edits(rr->ctx, r->edits, r->n_edits);
    if (!rc) rc = heed_ctx_set_knockouts(rr->ctx, rr->ko, rr->n_ko_run);
    return rc;
}

/* Decodes the run's tokens [from, to): those inside the prompt in one call,
 * the rest one at a time (as the recording decoded them). */
static int decode_range(heed_rerun *rr, int from, int to) {
    const heed_run *r = rr->run;
    int rc = HEED_OK;
    if (from < to && from < r->n_prompt) {
        int end = to < r->n_prompt ? to : r->n_prompt;
        rc = heed_decode(rr->ctx, r->ids + from, end - from);
        from = end;
    }
    for (int i = from; !rc && i < to; i++) rc = heed_decode(rr->ctx, r->ids + i, 1);
    return rc;
}

int heed_rerun_new(heed_run *run, const heed_model *model, heed_ctx *ctx, int q0, heed_rerun **out) {
    if (!out) return HEED_ERR_INVALID_ARG;
    *out = NULL;
    if (!run || !model || q0 < 0 || q0 >= run_tokens(run) - 1) return HEED_ERR_INVALID_ARG;
    int rc = heed_run_lens_model_ok(run, model);
    if (rc) return rc;
    heed_rerun *rr = calloc(1, sizeof *rr);
    if (!rr) return HEED_ERR_NOMEM;
    rr->run = run, rr->m = model, rr->q0 = q0;
    rr->n_ko_run = run->st.n_ko_list;
    rr->cap_ko = rr->n_ko_run + 64;
    if (!(rr->ko = malloc(sizeof *rr->ko * (size_t)rr->cap_ko))) rc = HEED_ERR_NOMEM;
    else if (rr->n_ko_run) memcpy(rr->ko, run->st.ko_list, sizeof *rr->ko * (size_t)rr->n_ko_run);
    if (!rc && !ctx) {
        heed_ctx_params cp = heed_ctx_default_params();
        cp.n_ctx = run_tokens(run);
        cp.n_threads = run->n_threads;
        rc = heed_ctx_new(model, &cp, &ctx);
        rr->own_ctx = !rc;
    }
    rr->ctx = ctx;
    if (!rc && heed_ctx_n_ctx(ctx) < run_tokens(run) - 1) rc = HEED_ERR_CONTEXT_FULL;
    if (!rc) {
        heed_ctx_set_attn_hook(ctx, NULL);
        heed_ctx_reset(ctx);
        rc = apply_run_interventions(rr);
    }
    if (!rc) rc = decode_range(rr, 0, q0);
    if (rc) {
        heed_rerun_free(rr);
        return rc;
    }
    *out = rr;
    return HEED_OK;
}

void heed_rerun_free(heed_rerun *rr) {
    if (!rr) return;
    if (rr->ctx) { /* the context's interventions were the rerun's */
        heed_ctx_set_head_scale(rr->ctx, NULL);
        heed_ctx_set_head_values(rr->ctx, NULL, NULL);
        heed_ctx_set_resid_edits(rr->ctx, NULL, 0);
        heed_ctx_set_knockouts(rr->ctx, NULL, 0);
        if (rr->own_ctx) heed_ctx_free(rr->ctx);
    }
    free(rr->ko);
    free(rr);
}

/* log p(id) under the logits' softmax, in double. */
static float log_prob(const float *logits, int n, int32_t id, int32_t *argmax) {
    float mx = logits[0];
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > mx) mx = logits[i], best = i;
    double z = 0;
    for (int i = 0; i < n; i++) z += exp((double)logits[i] - mx);
    if (argmax) *argmax = best;
    return (float)((double)logits[id] - mx - log(z));
}

static int rerun_run(heed_rerun *rr, const heed_knockout *extra, int n_extra, int q1, float *out, int32_t *top) {
    const heed_run *r = rr->run;
    if (q1 <= rr->q0 || q1 > run_tokens(r) - 1 || n_extra < 0 || (n_extra && !extra) || !out)
        return HEED_ERR_INVALID_ARG;
    if (rr->n_ko_run + n_extra > HEED_MAX_KNOCKOUTS) return HEED_ERR_INVALID_ARG;
    if (rr->n_ko_run + n_extra > rr->cap_ko) {
        heed_knockout *k = realloc(rr->ko, sizeof *k * (size_t)(rr->n_ko_run + n_extra));
        if (!k) return HEED_ERR_NOMEM;
        rr->ko = k, rr->cap_ko = rr->n_ko_run + n_extra;
    }
    if (n_extra) memcpy(rr->ko + rr->n_ko_run, extra, sizeof *extra * (size_t)n_extra);
    int rc = forward_rewind(rr->ctx, rr->q0);
    if (!rc) rc = heed_ctx_set_knockouts(rr->ctx, rr->ko, rr->n_ko_run + n_extra);
    for (int q = rr->q0; !rc && q < q1; q++) {
        if ((rc = heed_decode(rr->ctx, r->ids + q, 1))) break;
        out[q - rr->q0] = log_prob(heed_ctx_logits(rr->ctx), r->n_vocab, r->ids[q + 1], top ? &top[q - rr->q0] : NULL);
    }
    int rc2 = heed_ctx_set_knockouts(rr->ctx, rr->ko, rr->n_ko_run);
    return rc ? rc : rc2;
}

int heed_rerun_logprobs(heed_rerun *rr, const heed_knockout *extra, int n_extra, int q1, float *out) {
    if (!rr) return HEED_ERR_INVALID_ARG;
    return rerun_run(rr, extra, n_extra, q1, out, NULL);
}

int heed_run_verify_sources(heed_run *run, const heed_model *model, heed_ctx *ctx, int t, const heed_attn_sel *sel,
                            int k, heed_source_check *out, float *base_logprob) {
    if (!run || !model || !sel || !out || k < 1 || k > HEED_VERIFY_MAX || t < 0 || t >= run->n_output)
        return HEED_ERR_INVALID_ARG;
    const int p = run->n_prompt - 1 + t;
    if (p >= run->st.n_pos) return HEED_ERR_INVALID_ARG; /* the step's query went through the model */
    float *row = malloc(sizeof(float) * ((size_t)p + 1));
    heed_edge e[HEED_VERIFY_MAX];
    if (!row) return HEED_ERR_NOMEM;
    int rc = heed_run_attn_row(run, sel, p, row), n = 0;
    if (!rc) n = heed_edges(row, p + 1, 0.0f, k, e, k);
    free(row);
    if (rc) return rc;
    if (n < 0) return n;
    heed_rerun *rr;
    if ((rc = heed_rerun_new(run, model, ctx, p, &rr))) return rc;
    float base;
    int32_t top;
    rc = rerun_run(rr, NULL, 0, p + 1, &base, &top);
    for (int i = 0; !rc && i < n; i++) {
        heed_knockout ko = {-1, -1, p, p + 1, e[i].src, e[i].src + 1};
        float lp;
        rc = rerun_run(rr, &ko, 1, p + 1, &lp, &top);
        out[i] = (heed_source_check){.pos = e[i].src, .weight = e[i].weight, .logprob = lp, .drop = base - lp,
                                     .top_id = top, .still_chosen = top == run->ids[p + 1]};
    }
    heed_rerun_free(rr);
    if (base_logprob) *base_logprob = base;
    return rc ? rc : n;
}

/* ------------------------------------------------------- span attention */

typedef struct span_ctx {
    const heed_span *spans;
    int n_spans;
    double *acc; /* (threads, n_spans) */
} span_ctx;

static void span_fn(void *user, int ith, int q, const float *row) {
    span_ctx *c = user;
    double *a = c->acc + (size_t)ith * c->n_spans;
    for (int s = 0; s < c->n_spans; s++) {
        const heed_span *sp = &c->spans[s];
        int end = sp->first + sp->n_tok - 1 < q ? sp->first + sp->n_tok - 1 : q;
        for (int key = sp->first; key <= end; key++) a[s] += row[key];
    }
}

int heed_run_span_attention(heed_run *run, const heed_attn_sel *sel, int q0, int q1, const heed_span *spans,
                            int n_spans, float *out) {
    if (!run || !sel || !out || n_spans < 0 || (n_spans && !spans) || q0 < 0 || q1 <= q0 || q1 > run->st.n_pos)
        return HEED_ERR_INVALID_ARG;
    for (int s = 0; s < n_spans; s++)
        if (spans[s].first < 0 || spans[s].n_tok < 0 || spans[s].first + spans[s].n_tok > run_tokens(run))
            return HEED_ERR_INVALID_ARG;
    attn_src src;
    int rc = run_src(run, &src);
    if (rc) return rc;
    int nth = attn_n_threads(&src);
    span_ctx c = {spans, n_spans, calloc((size_t)nth * (n_spans ? n_spans : 1), sizeof(double))};
    if (!c.acc) return HEED_ERR_NOMEM;
    rc = attn_agg_rows(&src, sel, q0, q1, span_fn, &c);
    for (int s = 0; !rc && s < n_spans; s++) {
        double v = 0;
        for (int t = 0; t < nth; t++) v += c.acc[(size_t)t * n_spans + s];
        out[s] = (float)(v / (q1 - q0));
    }
    free(c.acc);
    return rc;
}

/* ------------------------------------------------------------ residuals */

int heed_run_residual(const heed_run *run, int t, int layer, const float **out) {
    if (!run || !out || t < 0 || t >= run->n_output || layer < 0 || layer >= run->n_layer) return HEED_ERR_INVALID_ARG;
    if (!run->resid || !run->lens_lazy || run->lens_k <= 0) return HEED_ERR_UNSUPPORTED;
    *out = run->resid + ((size_t)t * run->n_layer + layer) * run->n_embd;
    return HEED_OK;
}
