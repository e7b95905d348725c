/*
 * run.c - the run object: its data and info, tokens, steps, the logit lens
 * computed on request, and the views over a run (rows, columns, matrix,
 * step view, edges, statistics, head types, input importance, spans).
 *
 * The logit lens is one unembedding per layer and step - 16 to 30 times the
 * output projection - so by default nothing of it is computed while
 * generating: the recorder (rec.c) keeps each step's residuals, and
 * heed_run_lens_compute unembeds them when a view asks (run_lens_step: the
 * same function on the same floats as the eager lens, so the numbers are
 * the same bit for bit).
 *
 * Views read the run's attention store through attn.c with the run's own
 * thread pool, made on first use (the context's pool while recording).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "astore.h"
#include "attn.h"
#include "forward.h"
#include "kern.h"
#include "pool.h"
#include "run.h"

int run_fail(char *err, size_t n, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    err_vat(err, n, rc, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

uint64_t run_fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

/* --------------------------------------------------------------- run data */

static void run_free_data(heed_run *r) {
    free(r->model_file); free(r->model_arch); free(r->model_name); free(r->prompt_text);
    if (r->labels)
        for (int i = 0; i < r->n_prompt + r->n_output; i++) free(r->labels[i]);
    free(r->labels); free(r->ids); free(r->steps); free(r->cand);
    free(r->lens_id); free(r->lens_p); free(r->lens_ready); free(r->resid); free(r->head_scale);
    free(r->head_which); free(r->head_values);
    free(r->edits); free(r->edit_vecs);
    free(r->moe_ids); free(r->moe_w);
    free(r->vnorm);
    astore_free(&r->st);
    if (!r->pool_borrowed) pool_free(r->pool);
}

void heed_run_free(heed_run *r) {
    if (!r) return;
    run_free_data(r);
    free(r);
}


/* FNV-1a over every metadata key and value as heed prints them (arrays
 * shortened), each followed by a NUL: identifies the model's metadata. */
uint64_t run_meta_hash(const heed_model *m) {
    uint64_t h = RUN_FNV_INIT;
    char small[512];
    for (int i = 0; i < heed_model_n_meta(m); i++) {
        const char *k = heed_model_meta_key(m, i);
        h = run_fnv1a(h, k ? k : "", strlen(k ? k : "") + 1);
        int n = heed_model_meta_value(m, i, small, sizeof small);
        if (n < 0) continue;
        char *buf = small;
        if ((size_t)n >= sizeof small && (buf = malloc((size_t)n + 1)) != NULL)
            heed_model_meta_value(m, i, buf, (size_t)n + 1);
        if (!buf) buf = small, n = (int)strlen(small);
        h = run_fnv1a(h, buf, (size_t)n + 1);
        if (buf != small) free(buf);
    }
    return h;
}

/* ------------------------------------------------------------- the lens */

int run_lens_rows(heed_ctx *ctx) {
    int b = forward_max_batch(ctx) < LENS_MAX_ROWS ? forward_max_batch(ctx) : LENS_MAX_ROWS;
    return b >= LENS_TILE ? b / LENS_TILE * LENS_TILE : b;
}

int run_lens_scratch_init(run_lens_scratch *s, const heed_run *r, int rows) {
    memset(s, 0, sizeof *s);
    s->rows = rows;
    s->x = malloc(sizeof(float) * (size_t)rows * r->n_embd);
    s->logits = malloc(sizeof(float) * (size_t)rows * r->n_vocab);
    s->tmp = malloc(sizeof(heed_candidate) * (size_t)rows * (r->lens_k + 1));
    s->step = malloc(sizeof(int) * (size_t)rows);
    s->layer = malloc(sizeof(int) * (size_t)rows);
    return s->x && s->logits && s->tmp && s->step && s->layer ? HEED_OK : HEED_ERR_NOMEM;
}

void run_lens_scratch_free(run_lens_scratch *s) {
    free(s->x);
    free(s->logits);
    free(s->tmp);
    free(s->step);
    free(s->layer);
    memset(s, 0, sizeof *s);
}

/* The top tokens of rows [0, n) of a batch's logits, filed under each
 * row's step and layer: rows split across the context's threads (each row
 * its own heed_top_candidates, into its own slot of tmp, so the split does
 * not touch the numbers). */
typedef struct lens_topk_job {
    heed_run *r;
    run_lens_scratch *s;
    int n;
} lens_topk_job;

static void lens_topk_task(void *arg, int ith, int nth) {
    const lens_topk_job *j = arg;
    heed_run *r = j->r;
    const run_lens_scratch *s = j->s;
    for (int b = ith; b < j->n; b += nth) {
        heed_candidate *tmp = s->tmp + (size_t)b * (r->lens_k + 1);
        int k = heed_top_candidates(s->logits + (size_t)b * r->n_vocab, r->n_vocab, r->lens_k, tmp);
        size_t base = ((size_t)s->step[b] * r->n_layer + s->layer[b]) * r->lens_k;
        for (int i = 0; i < r->lens_k; i++) {
            r->lens_id[base + i] = i < k ? tmp[i].id : -1;
            r->lens_p[base + i] = i < k ? tmp[i].prob : 0.0f;
        }
    }
}

/* Unembeds the n gathered rows (padded to whole tiles) and files each
 * row's top tokens under its step and layer. */
static void lens_flush(heed_run *r, heed_ctx *ctx, run_lens_scratch *s, int n) {
    int padded = n;
    while (padded % LENS_TILE && padded < s->rows) { /* copies of the last row: their results are dropped */
        memcpy(s->x + (size_t)padded * r->n_embd, s->x + (size_t)(n - 1) * r->n_embd, sizeof(float) * (size_t)r->n_embd);
        padded++;
    }
    forward_unembed_rows(ctx, s->x, padded, s->logits);
    lens_topk_job j = {r, s, n};
    pool *p = forward_pool(ctx);
    pool_run(p, n < pool_size(p) ? n : pool_size(p), lens_topk_task, &j);
}

void run_lens_steps(heed_run *r, heed_ctx *ctx, const int *ts, const float *const *resid, int n_ts,
                    run_lens_scratch *s) {
    /* The rows in as few batches as fit in s->rows, of even sizes in whole
     * tiles (208 rows: 4 of 52, not 3 of 64 and one of 16): each batch is
     * one read of the output matrix, and a small last batch reads it for
     * little work. A row's numbers do not depend on its batch (run.h). */
    int total = n_ts * r->n_layer, per = s->rows;
    if (total > 0 && per >= LENS_TILE) {
        int n_batch = (total + s->rows - 1) / s->rows;
        per = ((total + n_batch - 1) / n_batch + LENS_TILE - 1) / LENS_TILE * LENS_TILE;
        if (per > s->rows) per = s->rows;
    }
    int n = 0;
    for (int i = 0; i < n_ts; i++) {
        for (int l = 0; l < r->n_layer; l++) {
            memcpy(s->x + (size_t)n * r->n_embd, resid[i] + (size_t)l * r->n_embd, sizeof(float) * (size_t)r->n_embd);
            s->step[n] = ts[i];
            s->layer[n] = l;
            if (++n == per) {
                lens_flush(r, ctx, s, n);
                n = 0;
            }
        }
    }
    if (n) lens_flush(r, ctx, s, n);
    for (int i = 0; i < n_ts; i++) r->lens_ready[ts[i]] = 1;
}

/* ------------------------------------------- info, tokens, steps, lens */

void heed_run_get_info(const heed_run *r, heed_run_info *info) {
    memset(info, 0, sizeof *info);
    if (!r) return;
    *info = (heed_run_info){
        .model_file = r->model_file, .model_arch = r->model_arch, .model_name = r->model_name,
        .model_size = r->model_size, .meta_hash = r->meta_hash,
        .n_layer = r->n_layer, .n_head = r->n_head, .n_head_kv = r->n_head_kv, .head_dim = r->head_dim,
        .n_embd = r->n_embd, .n_vocab = r->n_vocab, .bos = r->bos, .eos = r->eos, .eot = r->eot,
        .n_prompt = r->n_prompt, .n_output = r->n_output, .n_pos = r->st.n_pos,
        .sampler = r->sampler, .n_predict = r->n_predict, .n_ctx = r->n_ctx, .prompt_text = r->prompt_text,
        .n_cand = r->n_cand, .lens_top_k = r->lens_k, .lens_pending = heed_run_lens_pending(r),
        .intervened = r->head_scale != NULL || r->st.n_ko_list > 0 || r->head_which != NULL || r->n_edits > 0,
        .attn_top_k = r->st.top_k,
        .has_qk = r->st.has_qk, .has_topk = r->st.has_topk, .has_head_mean = r->st.has_hmean,
        .has_full = r->st.has_full, .eog = r->eog, .attn_bytes = astore_bytes(&r->st),
        .n_expert = r->n_expert, .n_expert_used = r->n_expert_used,
        .has_value_norms = r->vnorm && r->vn_n >= r->st.n_pos, .intervene_from = r->intervene_from,
    };
}

int heed_run_value_norms(const heed_run *r, int pos, const float **out) {
    if (!r || !out || pos < 0 || pos >= r->st.n_pos) return HEED_ERR_INVALID_ARG;
    if (!r->vnorm || r->vn_n < r->st.n_pos) return HEED_ERR_UNSUPPORTED;
    *out = r->vnorm + (size_t)pos * r->n_layer * r->n_head;
    return HEED_OK;
}

int heed_run_experts(const heed_run *r, int pos, int layer, const int32_t **ids, const float **weights) {
    if (!r) return HEED_ERR_INVALID_ARG;
    if (!r->n_expert) return HEED_ERR_UNSUPPORTED;
    if (pos < 0 || pos >= r->moe_n || layer < 0 || layer >= r->n_layer) return HEED_ERR_INVALID_ARG;
    size_t at = ((size_t)pos * r->n_layer + layer) * r->n_expert_used;
    if (ids) *ids = r->moe_ids + at;
    if (weights) *weights = r->moe_w + at;
    return r->n_expert_used;
}

int heed_run_token(const heed_run *r, int i, int32_t *id, const char **label) {
    if (!r || i < 0 || i >= r->n_prompt + r->n_output) return HEED_ERR_INVALID_ARG;
    if (id) *id = r->ids[i];
    if (label) *label = r->labels[i];
    return HEED_OK;
}

int heed_run_get_step(const heed_run *r, int t, heed_run_step *out) {
    if (!r || !out || t < 0 || t >= r->n_output) return HEED_ERR_INVALID_ARG;
    const run_step *s = &r->steps[t];
    *out = (heed_run_step){s->id, s->prob, s->logprob, s->entropy, r->n_cand, r->cand + (size_t)t * r->n_cand};
    return HEED_OK;
}

int heed_run_lens(const heed_run *r, int t, int layer, const int32_t **ids, const float **probs, int *n_out) {
    if (!r || t < 0 || t >= r->n_output || layer < 0 || layer >= r->n_layer) return HEED_ERR_INVALID_ARG;
    if (r->lens_k == 0) return HEED_ERR_UNSUPPORTED;
    if (!r->lens_ready[t]) return HEED_ERR_NEED_MODEL;
    size_t base = ((size_t)t * r->n_layer + layer) * r->lens_k;
    if (ids) *ids = r->lens_id + base;
    if (probs) *probs = r->lens_p + base;
    if (n_out) *n_out = r->lens_k;
    return HEED_OK;
}

int heed_run_lens_pending(const heed_run *r) {
    int n = 0;
    for (int t = 0; r && r->lens_k > 0 && t < r->n_output; t++) n += !r->lens_ready[t];
    return n;
}

const float *heed_run_head_scale(const heed_run *r) { return r ? r->head_scale : NULL; }

const float *heed_run_head_values(const heed_run *r, const unsigned char **which) {
    if (which) *which = r ? r->head_which : NULL;
    return r ? r->head_values : NULL;
}

const heed_resid_edit *heed_run_resid_edits(const heed_run *r, int *n) {
    if (n) *n = r ? r->n_edits : 0;
    return r && r->n_edits ? r->edits : NULL;
}

const heed_knockout *heed_run_knockouts(const heed_run *r, int *n) {
    if (n) *n = r ? r->st.n_ko_list : 0;
    return r && r->st.n_ko_list ? r->st.ko_list : NULL;
}

int heed_run_lens_model_ok(const heed_run *r, const heed_model *m) {
    if (!r || !m) return HEED_ERR_INVALID_ARG;
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    return mi.n_vocab == r->n_vocab && mi.n_embd == r->n_embd && mi.n_layer == r->n_layer &&
                   run_meta_hash(m) == r->meta_hash
               ? HEED_OK
               : HEED_ERR_MODEL_MISMATCH;
}

int heed_lens_ctx_new(const heed_model *m, int n_threads, heed_ctx **out) {
    heed_ctx_params cp = heed_ctx_default_params();
    cp.n_ctx = LENS_MAX_ROWS; /* a batch of LENS_MAX_ROWS rows fits; its KV cache is never used */
    cp.n_threads = n_threads;
    return heed_ctx_new(m, &cp, out);
}

int heed_run_lens_compute(heed_run *r, const heed_model *m, heed_ctx *ctx, int t0, int t1) {
    if (!r || !m || t0 < 0 || t1 < t0 || t1 > r->n_output) return HEED_ERR_INVALID_ARG;
    if (r->lens_k == 0) return HEED_ERR_UNSUPPORTED;
    bool pending = false;
    for (int t = t0; t < t1 && !pending; t++) pending = !r->lens_ready[t];
    if (!pending) return HEED_OK;
    if (!r->resid) return HEED_ERR_UNSUPPORTED;
    int rc = heed_run_lens_model_ok(r, m);
    if (rc) return rc;
    if (!ctx) { /* a scratch context for this call */
        heed_ctx *own = NULL;
        rc = heed_lens_ctx_new(m, 0, &own);
        if (!rc) rc = heed_run_lens_compute(r, m, own, t0, t1);
        heed_ctx_free(own);
        return rc;
    }
    run_lens_scratch s;
    int *ts = malloc(sizeof(int) * (size_t)(t1 - t0));
    const float **res = malloc(sizeof *res * (size_t)(t1 - t0));
    rc = run_lens_scratch_init(&s, r, run_lens_rows(ctx));
    if (!rc && (!ts || !res)) rc = HEED_ERR_NOMEM;
    int n = 0;
    for (int t = t0; !rc && t < t1; t++)
        if (!r->lens_ready[t]) {
            ts[n] = t;
            res[n++] = r->resid + (size_t)t * r->n_layer * r->n_embd;
        }
    if (!rc) run_lens_steps(r, ctx, ts, res, n, &s); /* the steps' rows batched together */
    run_lens_scratch_free(&s);
    free(ts);
    free(res);
    return rc;
}

/* ----------------------------------------------------------------- views */

heed_attn_sel heed_attn_sel_all(void) {
    heed_attn_sel s = {NULL, 0, NULL, 0, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
    return s;
}

int run_src(heed_run *r, attn_src *src) {
    if (!r->pool) {
        int n = r->n_threads > 0 ? r->n_threads : pool_n_cpus();
        r->pool = pool_new(n);
        if (!r->pool) return HEED_ERR_NOMEM;
    }
    bool vn = r->vnorm && r->vn_n >= r->st.n_pos;
    if (!r->ops) r->ops = kern_ops_best();
    *src = (attn_src){&r->st, r->ops, r->pool, vn ? r->vnorm : NULL};
    return HEED_OK;
}

int heed_run_attn_row(heed_run *r, const heed_attn_sel *sel, int pos, float *out) {
    attn_src src;
    if (!r || !sel || !out) return HEED_ERR_INVALID_ARG;
    int rc = run_src(r, &src);
    return rc ? rc : attn_agg_row(&src, sel, pos, out);
}

typedef struct col_ctx {
    int key;
    float *out;
} col_ctx;

static void col_fn(void *user, int ith, int q, const float *row) {
    col_ctx *c = user;
    c->out[q - c->key] = row[c->key];
}

int heed_run_attn_col(heed_run *r, const heed_attn_sel *sel, int key, float *out) {
    attn_src src;
    if (!r || !sel || !out || key < 0 || key >= r->st.n_pos) return HEED_ERR_INVALID_ARG;
    int rc = run_src(r, &src);
    if (!rc) rc = attn_agg_col(&src, sel, key, out); /* from the rows' statistics, when kept */
    if (rc != HEED_ERR_UNSUPPORTED) return rc;
    col_ctx c = {key, out};
    return attn_agg_rows(&src, sel, key, r->st.n_pos, col_fn, &c);
}

typedef struct mat_ctx {
    size_t n;
    float *out;
} mat_ctx;

static void mat_fn(void *user, int ith, int q, const float *row) {
    mat_ctx *c = user;
    memcpy(c->out + (size_t)q * c->n, row, sizeof(float) * ((size_t)q + 1));
}

int heed_run_attn_pool(heed_run *r, const heed_attn_sel *sel, int q0, int q1, int k0, int k1, int bq, int bk,
                       bool max, float *cell) {
    attn_src src;
    if (!r || !sel || !cell) return HEED_ERR_INVALID_ARG;
    int rc = run_src(r, &src);
    if (!rc) rc = attn_agg_pool(&src, sel, q0, q1, k0, k1, bq, bk, max, cell);
    if (rc != HEED_ERR_UNSUPPORTED || !(r->st.has_topk || r->st.has_hmean)) return rc;
    /* the summary tiers: row by row */
    int rows = (q1 - q0 + bq - 1) / bq, cols = (k1 - k0 + bk - 1) / bk;
    float *row = malloc(sizeof(float) * (size_t)r->st.n_pos);
    if (!row) return HEED_ERR_NOMEM;
    memset(cell, 0, sizeof(float) * (size_t)rows * cols);
    rc = HEED_OK;
    for (int q = q0; !rc && q < q1; q++) {
        if ((rc = heed_run_attn_row(r, sel, q, row))) break;
        float *c = cell + (size_t)((q - q0) / bq) * cols;
        for (int k = k0; k < k1 && k <= q; k++) {
            float *d = c + (k - k0) / bk;
            *d = max ? (row[k] > *d ? row[k] : *d) : *d + row[k];
        }
    }
    for (int i = 0; !rc && !max && i < rows * cols; i++) {
        int rq = i / cols, ck = i % cols, qa = q0 + rq * bq, qb = qa + bq < q1 ? qa + bq : q1;
        int ka = k0 + ck * bk, kb = ka + bk < k1 ? ka + bk : k1;
        long n = 0;
        for (int q = qa; q < qb; q++) n += q < ka ? 0 : (q + 1 < kb ? q + 1 : kb) - ka;
        cell[i] = n ? cell[i] / (float)n : 0.0f;
    }
    free(row);
    return rc;
}

int heed_run_attn_matrix(heed_run *r, const heed_attn_sel *sel, float *out) {
    attn_src src;
    if (!r || !sel || !out) return HEED_ERR_INVALID_ARG;
    int rc = run_src(r, &src);
    if (rc) return rc;
    size_t n = (size_t)r->st.n_pos;
    memset(out, 0, sizeof(float) * n * n);
    mat_ctx c = {n, out};
    return attn_agg_rows(&src, sel, 0, r->st.n_pos, mat_fn, &c);
}

static bool is_eog(const heed_run *r, int32_t id) { return id >= 0 && (id == r->eos || id == r->eot); }

/* The aggregated row that chose output t (query n_prompt - 1 + t). */
static int step_row(heed_run *r, const heed_attn_sel *sel, int t, float **row) {
    if (!r || !sel || t < 0 || t >= r->n_output || r->n_prompt - 1 + t >= r->st.n_pos) return HEED_ERR_INVALID_ARG;
    int pos = r->n_prompt - 1 + t;
    *row = malloc(sizeof(float) * ((size_t)pos + 1));
    if (!*row) return HEED_ERR_NOMEM;
    int rc = heed_run_attn_row(r, sel, pos, *row);
    if (rc) {
        free(*row);
        *row = NULL;
    }
    return rc;
}

int heed_run_step_view(heed_run *r, const heed_attn_sel *sel, int t, unsigned flags, float *in, float *out,
                       float *in_mass, float *out_mass) {
    if (!in || (t > 0 && !out)) return HEED_ERR_INVALID_ARG;
    float *row;
    int rc = step_row(r, sel, t, &row);
    if (rc) return rc;
    bool *drop = calloc((size_t)r->n_prompt, sizeof(bool));
    if (!drop) {
        free(row);
        return HEED_ERR_NOMEM;
    }
    for (int k = 0; k < r->n_prompt; k++)
        drop[k] = (!(flags & HEED_VIEW_KEEP_BOS) && r->ids[k] == r->bos && r->bos >= 0) ||
                  ((flags & HEED_VIEW_DROP_EOG) && is_eog(r, r->ids[k]));
    attn_step_view(row, r->n_prompt, t, drop, in, out, in_mass, out_mass);
    free(drop);
    free(row);
    return HEED_OK;
}

int heed_edges(const float *row, int n, float threshold, int top_k, heed_edge *out, int n_max) {
    if (!row || !out || n < 0 || n_max < 0 || top_k < 0) return HEED_ERR_INVALID_ARG;
    return attn_edges(row, n, threshold, top_k, out, n_max);
}

int heed_run_edges(heed_run *r, const heed_attn_sel *sel, int pos, float threshold, int top_k, heed_edge *out,
                   int n_max) {
    if (!r || !sel || !out || n_max < 0 || top_k < 0 || pos < 0 || pos >= r->st.n_pos) return HEED_ERR_INVALID_ARG;
    float *row = malloc(sizeof(float) * ((size_t)pos + 1));
    if (!row) return HEED_ERR_NOMEM;
    int rc = heed_run_attn_row(r, sel, pos, row);
    if (!rc) rc = attn_edges(row, pos + 1, threshold, top_k, out, n_max);
    free(row);
    return rc;
}

int heed_run_token_stats(heed_run *r, const heed_attn_sel *sel, int pos, heed_token_stats *out) {
    if (!r || !sel || !out || pos < 0 || pos >= r->st.n_pos) return HEED_ERR_INVALID_ARG;
    float *row = malloc(sizeof(float) * ((size_t)pos + 1));
    if (!row) return HEED_ERR_NOMEM;
    int rc = heed_run_attn_row(r, sel, pos, row);
    if (!rc) attn_row_stats(row, pos, out);
    free(row);
    return rc;
}

int heed_row_stats(const float *row, int pos, heed_token_stats *out) {
    if (!row || !out || pos < 0) return HEED_ERR_INVALID_ARG;
    attn_row_stats(row, pos, out);
    return HEED_OK;
}

const char *heed_zone_name(heed_zone z) {
    switch (z) {
    case HEED_ZONE_SYNTAX_FLOOR: return "syntax_floor";
    case HEED_ZONE_SEMANTIC_BRIDGE: return "semantic_bridge";
    case HEED_ZONE_STRUCTURE_RIPPLE: return "structure_ripple";
    default: return "none";
    }
}

const char *heed_head_kind_name(heed_head_kind k) {
    switch (k) {
    case HEED_HEAD_PREV_TOKEN: return "previous_token";
    case HEED_HEAD_INDUCTION: return "induction";
    case HEED_HEAD_SINK: return "sink";
    case HEED_HEAD_LOCAL: return "local";
    default: return "other";
    }
}

typedef struct head_ctx {
    const int32_t *ids;
    attn_head_acc acc[64];
} head_ctx;

static void head_fn(void *user, int ith, int q, const float *row) {
    head_ctx *c = user;
    attn_head_add(&c->acc[ith], row, q, c->ids);
}

int heed_run_head_types(heed_run *r, heed_head_type *out) {
    attn_src src;
    if (!r || !out) return HEED_ERR_INVALID_ARG;
    if (!r->st.has_full && !r->st.has_qk) return HEED_ERR_UNSUPPORTED;
    int rc = run_src(r, &src);
    head_ctx *c = malloc(sizeof *c);
    if (!c) return HEED_ERR_NOMEM;
    for (int l = 0; !rc && l < r->n_layer; l++)
        for (int h = 0; !rc && h < r->n_head; h++) {
            heed_attn_sel sel = {&l, 1, &h, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
            memset(c, 0, sizeof *c);
            c->ids = r->ids;
            rc = attn_agg_rows(&src, &sel, 0, r->st.n_pos, head_fn, c);
            attn_head_acc sum = {0};
            for (int t = 0; t < 64; t++) {
                sum.prev += c->acc[t].prev; sum.sink += c->acc[t].sink; sum.local += c->acc[t].local;
                sum.induction += c->acc[t].induction; sum.n += c->acc[t].n; sum.n_ind += c->acc[t].n_ind;
            }
            attn_head_finish(&sum, &out[(size_t)l * r->n_head + h]);
        }
    free(c);
    return rc;
}

typedef struct imp_ctx {
    int n_prompt;
    double *acc; /* (nth, n_prompt) */
} imp_ctx;

static void imp_fn(void *user, int ith, int q, const float *row) {
    imp_ctx *c = user;
    for (int k = 0; k < c->n_prompt; k++) c->acc[(size_t)ith * c->n_prompt + k] += row[k];
}

int heed_run_rollout(heed_run *r, int pos, float *out) {
    if (!r || !out || pos < 0 || pos >= r->st.n_pos) return HEED_ERR_INVALID_ARG;
    if (!r->st.has_qk && !r->st.has_full) return HEED_ERR_UNSUPPORTED;
    size_t n = (size_t)pos + 1;
    double *cur = calloc(n, sizeof *cur), *next = calloc(n, sizeof *next);
    float *row = malloc(sizeof(float) * n);
    int rc = cur && next && row ? HEED_OK : HEED_ERR_NOMEM;
    if (!rc) cur[pos] = 1.0;
    /* from the top layer down: r <- r (0.5 I + 0.5 A_l), A_l the head mean */
    for (int l = r->n_layer - 1; l >= 0 && !rc; l--) {
        heed_attn_sel sel = {&l, 1, NULL, 0, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
        for (size_t i = 0; i < n; i++) next[i] = 0.5 * cur[i];
        for (int i = 0; i <= pos && !rc; i++) {
            if (cur[i] == 0.0) continue; /* positions no mass reaches need no row */
            if ((rc = heed_run_attn_row(r, &sel, i, row))) break;
            for (int k = 0; k <= i; k++) next[k] += 0.5 * cur[i] * row[k];
        }
        double *t = cur;
        cur = next;
        next = t;
    }
    for (size_t i = 0; !rc && i < n; i++) out[i] = (float)cur[i];
    free(cur), free(next), free(row);
    return rc;
}

int heed_run_input_importance(heed_run *r, const heed_attn_sel *sel, float *out) {
    attn_src src;
    if (!r || !sel || !out) return HEED_ERR_INVALID_ARG;
    int rc = run_src(r, &src);
    if (rc) return rc;
    int nth = attn_n_threads(&src) < 64 ? attn_n_threads(&src) : 64;
    imp_ctx c = {r->n_prompt, calloc((size_t)nth * r->n_prompt, sizeof(double))};
    if (!c.acc) return HEED_ERR_NOMEM;
    int q0 = r->n_prompt - 1, q1 = r->n_prompt - 1 + r->n_output;
    if (q1 > r->st.n_pos) q1 = r->st.n_pos;
    rc = attn_agg_rows(&src, sel, q0 < q1 ? q0 : q1, q1, imp_fn, &c);
    for (int k = 0; k < r->n_prompt; k++) {
        double s = 0;
        for (int t = 0; t < nth; t++) s += c.acc[(size_t)t * r->n_prompt + k];
        out[k] = (float)s;
    }
    free(c.acc);
    return rc;
}

int heed_run_spans(const heed_run *r, heed_span_level level, heed_span *out, int n_max) {
    if (!r || n_max < 0 || (n_max > 0 && !out)) return HEED_ERR_INVALID_ARG;
    return attn_spans((const char *const *)r->labels, r->n_prompt + r->n_output, level, out, n_max);
}

void heed_spans_sum(const heed_span *spans, int n, const float *tok_values, float *out) {
    for (int s = 0; s < n; s++) {
        double v = 0;
        for (int i = 0; i < spans[s].n_tok; i++) v += tok_values[spans[s].first + i];
        out[s] = (float)v;
    }
}
