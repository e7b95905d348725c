/*
 * attn.c - aggregation of exact attention rows and the per-token and
 * per-head statistics defined in docs/ANALYSIS.md.
 *
 * One aggregated row (many heads, one query) is split over threads by
 * (layer, head) pairs; many rows (a matrix, a column, importance) are split
 * by query, interleaved because later rows are longer. Means accumulate in
 * double so the thread split changes the result by rounding only.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "attn.h"

/* Multiply-adds below which one thread does the job (as in forward.c). */
#define WORK_PER_THREAD (1u << 18)

/* ------------------------------------------------------------ selection */

/* Resolves a selection into (layer, head) pairs; returns the count or a
 * negative code (out of range, duplicates, empty). pairs holds 2*L*H ints. */
static int sel_pairs(const astore *st, const heed_attn_sel *sel, int *pairs) {
    int L = st->n_layer, H = st->n_head;
    int nl = sel->layers ? sel->n_layers : L, nh = sel->heads ? sel->n_heads : H;
    if (nl <= 0 || nl > L || nh <= 0 || nh > H || (sel->agg != HEED_AGG_MEAN && sel->agg != HEED_AGG_MAX))
        return HEED_ERR_INVALID_ARG;
    unsigned char seen_l[1024] = {0}, seen_h[1024] = {0};
    if (L > 1024 || H > 1024) return HEED_ERR_UNSUPPORTED;
    int n = 0;
    for (int a = 0; a < nl; a++) {
        int l = sel->layers ? sel->layers[a] : a;
        if (l < 0 || l >= L || seen_l[l]++) return HEED_ERR_INVALID_ARG;
    }
    for (int b = 0; b < nh; b++) {
        int h = sel->heads ? sel->heads[b] : b;
        if (h < 0 || h >= H || seen_h[h]++) return HEED_ERR_INVALID_ARG;
    }
    for (int a = 0; a < nl; a++)
        for (int b = 0; b < nh; b++) {
            pairs[2 * n] = sel->layers ? sel->layers[a] : a;
            pairs[2 * n + 1] = sel->heads ? sel->heads[b] : b;
            n++;
        }
    return n;
}

static bool exact(const astore *st) { return st->has_full || st->has_qk; }

/* The measure asked is one src has: value-weighted attention needs the value norms. */
static int measure_ok(const attn_src *src, const heed_attn_sel *sel) {
    if (sel->measure == HEED_MEASURE_ATTENTION) return HEED_OK;
    if (sel->measure != HEED_MEASURE_VALUE) return HEED_ERR_INVALID_ARG;
    return src->vnorm && exact(src->st) ? HEED_OK : HEED_ERR_UNSUPPORTED;
}

int attn_n_threads(const attn_src *src) { return src->pool ? pool_size(src->pool) : 1; }

static int threads_for(const attn_src *src, size_t work, size_t max_parts) {
    size_t nth = work / WORK_PER_THREAD + 1, cap = (size_t)attn_n_threads(src);
    if (nth > cap) nth = cap;
    if (nth > max_parts) nth = max_parts;
    return nth < 1 ? 1 : (int)nth;
}

/* acc (double, pos+1) combined with the pairs [p0, p1) of query pos, in
 * their order; tmp is ACC_TMP_ROWS rows of scratch. Consecutive pairs of
 * one layer whose heads share a KV head are recomputed together
 * (astore_rows: their keys read once). */
#define ACC_TMP_ROWS KERN_ATTN_BLOCK
static int acc_pairs(const attn_src *src, const int *pairs, int p0, int p1, int pos, heed_agg agg,
                     heed_measure measure, float *tmp, double *acc) {
    const astore *st = src->st;
    const size_t LH = (size_t)st->n_layer * st->n_head;
    const int group = st->n_head / st->n_head_kv;
    for (int i = p0; i < p1;) {
        int l = pairs[2 * i], heads[KERN_ATTN_BLOCK], n = 0;
        float *rows[KERN_ATTN_BLOCK];
        while (i + n < p1 && n < KERN_ATTN_BLOCK && pairs[2 * (i + n)] == l &&
               pairs[2 * (i + n) + 1] / group == pairs[2 * i + 1] / group) {
            heads[n] = pairs[2 * (i + n) + 1];
            rows[n] = tmp + (size_t)n * (pos + 1);
            n++;
        }
        int rc = astore_rows(st, src->ops, l, heads, n, pos, rows);
        if (rc) return rc;
        for (int r = 0; r < n; r++) {
            float *t = rows[r];
            if (measure == HEED_MEASURE_VALUE) { /* a_ij * |W_O^h v_j| */
                const float *vn = src->vnorm + (size_t)l * st->n_head + heads[r];
                for (int k = 0; k <= pos; k++) t[k] *= vn[(size_t)k * LH];
            }
            if (agg == HEED_AGG_MEAN)
                for (int k = 0; k <= pos; k++) acc[k] += t[k];
            else
                for (int k = 0; k <= pos; k++) acc[k] = t[k] > acc[k] ? t[k] : acc[k];
        }
        i += n;
    }
    return HEED_OK;
}

static void acc_init(double *acc, int n, heed_agg agg) {
    for (int k = 0; k < n; k++) acc[k] = agg == HEED_AGG_MEAN ? 0.0 : -INFINITY;
}

/* Without an exact tier, the mean over every head of some layers is still
 * available from the fp16 head-mean rows. */
static int hmean_row(const astore *st, const heed_attn_sel *sel, int pos, float *out) {
    if (!st->has_hmean || sel->heads || sel->agg != HEED_AGG_MEAN) return HEED_ERR_UNSUPPORTED;
    int nl = sel->layers ? sel->n_layers : st->n_layer;
    for (int k = 0; k <= pos; k++) {
        double s = 0;
        for (int a = 0; a < nl; a++) {
            int l = sel->layers ? sel->layers[a] : a;
            s += kern_f16_to_f32(st->hmean[astore_tri((size_t)pos) * st->n_layer + (size_t)l * (pos + 1) + k]);
        }
        out[k] = (float)(s / nl);
    }
    return HEED_OK;
}

/* Without an exact tier or head-mean rows, a sparse row from the top-k
 * tier: each selected (layer, head) contributes its kept sources only (every
 * other key 0), combined by mean or max. A store made from another engine's
 * top-k (heed_run_from_topk) has rows only at the positions it was given;
 * the others are all zeros. */
static int topk_row(const astore *st, const int *pairs, int n_pairs, heed_agg agg, int pos, float *out) {
    if (!st->has_topk) return HEED_ERR_UNSUPPORTED;
    for (int k = 0; k <= pos; k++) out[k] = 0.0f;
    for (int i = 0; i < n_pairs; i++) {
        size_t base = (((size_t)pos * st->n_layer + pairs[2 * i]) * st->n_head + pairs[2 * i + 1]) * st->top_k;
        for (int e = 0; e < st->top_k; e++) {
            uint32_t p = st->tk_pos[base + e];
            if (p == ASTORE_TK_NONE || p > (uint32_t)pos) continue;
            float w = kern_f16_to_f32(st->tk_w[base + e]);
            if (agg == HEED_AGG_MEAN) out[p] += w / (float)n_pairs;
            else if (w > out[p]) out[p] = w;
        }
    }
    return HEED_OK;
}

/* A row from the summary tiers: head-mean rows when they serve the
 * selection, else the top-k tier. */
static int summary_row(const astore *st, const heed_attn_sel *sel, const int *pairs, int n_pairs, int pos,
                       float *out) {
    int rc = hmean_row(st, sel, pos, out);
    return rc == HEED_ERR_UNSUPPORTED ? topk_row(st, pairs, n_pairs, sel->agg, pos, out) : rc;
}

/* ------------------------------------------------------- one row, threads */

typedef struct row_job {
    const attn_src *src;
    const int *pairs;
    int n_pairs, pos;
    heed_agg agg;
    heed_measure measure;
    float *tmp;  /* (nth, pos+1) */
    double *acc; /* (nth, pos+1) */
    int rc[64];
} row_job;

static void row_task(void *arg, int ith, int nth) {
    row_job *j = arg;
    size_t n = (size_t)j->pos + 1;
    int per = (j->n_pairs + nth - 1) / nth;
    int p0 = ith * per, p1 = p0 + per < j->n_pairs ? p0 + per : j->n_pairs;
    acc_init(j->acc + ith * n, (int)n, j->agg);
    j->rc[ith] = p0 < p1 ? acc_pairs(j->src, j->pairs, p0, p1, j->pos, j->agg, j->measure, j->tmp + ith * n * ACC_TMP_ROWS,
                                     j->acc + ith * n)
                         : HEED_OK;
}

int attn_agg_row(const attn_src *src, const heed_attn_sel *sel, int pos, float *out) {
    const astore *st = src->st;
    if (!sel || !out || pos < 0 || pos >= st->n_pos) return HEED_ERR_INVALID_ARG;
    int *pairs = malloc(sizeof(int) * 2 * (size_t)st->n_layer * st->n_head);
    if (!pairs) return HEED_ERR_NOMEM;
    int n_pairs = sel_pairs(st, sel, pairs), rc = n_pairs < 0 ? n_pairs : measure_ok(src, sel);
    if (!rc && !exact(st)) rc = summary_row(st, sel, pairs, n_pairs, pos, out);
    if (rc || !exact(st)) {
        free(pairs);
        return rc;
    }
    size_t n = (size_t)pos + 1;
    int nth = threads_for(src, (size_t)n_pairs * n * st->head_dim, (size_t)n_pairs);
    if (nth > 64) nth = 64;
    row_job j = {.src = src, .pairs = pairs, .n_pairs = n_pairs, .pos = pos, .agg = sel->agg, .measure = sel->measure};
    j.tmp = malloc(sizeof(float) * n * nth * ACC_TMP_ROWS);
    j.acc = malloc(sizeof(double) * n * nth);
    if (!j.tmp || !j.acc) rc = HEED_ERR_NOMEM;
    if (!rc) {
        if (nth > 1) pool_run(src->pool, nth, row_task, &j);
        else row_task(&j, 0, 1);
        for (int t = 0; t < nth && !rc; t++) rc = j.rc[t];
    }
    for (size_t k = 0; !rc && k < n; k++) {
        double v = j.acc[k];
        for (int t = 1; t < nth; t++)
            v = sel->agg == HEED_AGG_MEAN ? v + j.acc[t * n + k] : (j.acc[t * n + k] > v ? j.acc[t * n + k] : v);
        out[k] = (float)(sel->agg == HEED_AGG_MEAN ? v / n_pairs : v);
    }
    free(j.tmp);
    free(j.acc);
    free(pairs);
    return rc;
}

/* ----------------------------------------------------- many rows, threads */

typedef struct rows_job {
    const attn_src *src;
    const heed_attn_sel *sel;
    const int *pairs;
    int n_pairs, q0, q1;
    attn_row_fn fn;
    void *user;
    float *tmp, *row; /* (nth, q1) each */
    double *acc;      /* (nth, q1) */
    int rc[64];
} rows_job;

static void rows_task(void *arg, int ith, int nth) {
    rows_job *j = arg;
    size_t n = (size_t)j->q1;
    float *tmp = j->tmp + ith * n * ACC_TMP_ROWS, *row = j->row + ith * n;
    double *acc = j->acc + ith * n;
    j->rc[ith] = HEED_OK;
    for (int q = j->q0 + ith; q < j->q1; q += nth) {
        int rc;
        if (exact(j->src->st)) {
            acc_init(acc, q + 1, j->sel->agg);
            rc = acc_pairs(j->src, j->pairs, 0, j->n_pairs, q, j->sel->agg, j->sel->measure, tmp, acc);
            for (int k = 0; k <= q; k++) row[k] = (float)(j->sel->agg == HEED_AGG_MEAN ? acc[k] / j->n_pairs : acc[k]);
        } else {
            rc = summary_row(j->src->st, j->sel, j->pairs, j->n_pairs, q, row);
        }
        if (rc) {
            j->rc[ith] = rc;
            return;
        }
        j->fn(j->user, ith, q, row);
    }
}

int attn_agg_rows(const attn_src *src, const heed_attn_sel *sel, int q0, int q1, attn_row_fn fn, void *user) {
    const astore *st = src->st;
    if (!sel || q0 < 0 || q1 > st->n_pos || q0 > q1) return HEED_ERR_INVALID_ARG;
    if (q0 == q1) return HEED_OK;
    int *pairs = malloc(sizeof(int) * 2 * (size_t)st->n_layer * st->n_head);
    if (!pairs) return HEED_ERR_NOMEM;
    int n_pairs = sel_pairs(st, sel, pairs), rc = n_pairs < 0 ? n_pairs : measure_ok(src, sel);
    size_t n = (size_t)q1;
    int nth = threads_for(src, (size_t)(n_pairs > 0 ? n_pairs : 1) * n * (q1 - q0) / 2 * st->head_dim,
                          (size_t)(q1 - q0));
    if (nth > 64) nth = 64;
    rows_job j = {src, sel, pairs, n_pairs, q0, q1, fn, user, NULL, NULL, NULL, {0}};
    if (!rc) {
        j.tmp = malloc(sizeof(float) * n * nth * ACC_TMP_ROWS);
        j.row = malloc(sizeof(float) * n * nth);
        j.acc = malloc(sizeof(double) * n * nth);
        if (!j.tmp || !j.row || !j.acc) rc = HEED_ERR_NOMEM;
    }
    if (!rc) {
        if (nth > 1) pool_run(src->pool, nth, rows_task, &j);
        else rows_task(&j, 0, 1);
        for (int t = 0; t < nth && !rc; t++) rc = j.rc[t];
    }
    free(j.tmp);
    free(j.row);
    free(j.acc);
    free(pairs);
    return rc;
}

/* ------------------------------------------------- a column, threads */

/* A column from the rows' statistics (astore_col): each thread takes a
 * range of queries and goes through the pairs in the selection's order, so
 * every entry is combined exactly as rows_task combines its row's. */
typedef struct col_job {
    const attn_src *src;
    const int *pairs;
    int n_pairs, key, n;
    heed_agg agg;
    heed_measure measure;
    float *out;
    int rc[64];
} col_job;

static void col_task(void *arg, int ith, int nth) {
    col_job *j = arg;
    const astore *st = j->src->st;
    int per = (j->n + nth - 1) / nth, i0 = ith * per, i1 = i0 + per < j->n ? i0 + per : j->n;
    j->rc[ith] = HEED_OK;
    if (i0 >= i1) return;
    int m = i1 - i0;
    float *tmp = malloc(sizeof(float) * 3 * (size_t)m);
    double *acc = malloc(sizeof(double) * (size_t)m);
    if (!tmp || !acc) {
        j->rc[ith] = HEED_ERR_NOMEM;
        free(tmp);
        free(acc);
        return;
    }
    acc_init(acc, m, j->agg);
    for (int p = 0; p < j->n_pairs && !j->rc[ith]; p++) {
        int l = j->pairs[2 * p], h = j->pairs[2 * p + 1];
        j->rc[ith] = astore_col(st, j->src->ops, l, h, j->key, j->key + i0, j->key + i1, tmp, tmp + m);
        if (j->rc[ith]) break;
        if (j->measure == HEED_MEASURE_VALUE) { /* a_ij * |W_O^h v_j|: one key, one norm */
            float vn = j->src->vnorm[((size_t)j->key * st->n_layer + l) * st->n_head + h];
            for (int i = 0; i < m; i++) tmp[i] *= vn;
        }
        if (j->agg == HEED_AGG_MEAN)
            for (int i = 0; i < m; i++) acc[i] += tmp[i];
        else
            for (int i = 0; i < m; i++) acc[i] = tmp[i] > acc[i] ? tmp[i] : acc[i];
    }
    for (int i = 0; i < m && !j->rc[ith]; i++)
        j->out[i0 + i] = (float)(j->agg == HEED_AGG_MEAN ? acc[i] / j->n_pairs : acc[i]);
    free(tmp);
    free(acc);
}

int attn_agg_col(const attn_src *src, const heed_attn_sel *sel, int key, float *out) {
    const astore *st = src->st;
    if (!sel || !out || key < 0 || key >= st->n_pos) return HEED_ERR_INVALID_ARG;
    if (!st->has_qk || !st->has_mi) return HEED_ERR_UNSUPPORTED;
    int *pairs = malloc(sizeof(int) * 2 * (size_t)st->n_layer * st->n_head);
    if (!pairs) return HEED_ERR_NOMEM;
    int n_pairs = sel_pairs(st, sel, pairs), rc = n_pairs < 0 ? n_pairs : measure_ok(src, sel);
    for (int p = 0; !rc && p < n_pairs; p++)
        if (st->rules[pairs[2 * p]].n_ko) rc = HEED_ERR_UNSUPPORTED; /* rows under knockouts: astore_row's way */
    if (rc) {
        free(pairs);
        return rc;
    }
    int n = st->n_pos - key;
    int nth = threads_for(src, (size_t)n_pairs * n * st->head_dim, (size_t)n);
    if (nth > 64) nth = 64;
    col_job j = {src, pairs, n_pairs, key, n, sel->agg, sel->measure, out, {0}};
    if (nth > 1) pool_run(src->pool, nth, col_task, &j);
    else col_task(&j, 0, 1);
    for (int t = 0; t < nth && !rc; t++) rc = j.rc[t];
    free(pairs);
    return rc;
}

/* --------------------------------------------- a pooled window, threads */

/* Queries of one cell row per task: the rows of one (layer, head) scored a
 * block of KERN_ATTN_BLOCK queries at a time against a chunk of keys (in
 * cache for the whole group), each entry made from its score and its row's
 * statistics (softmax_apply) and pooled at once, so no row is ever whole.
 * A cell's keys lie in one chunk and its queries are visited in order, so
 * its sum takes its entries in the order of the row-by-row loop. */
#define POOL_GROUP 64     /* queries sharing one pass over the keys */
#define POOL_CHUNK 1024   /* keys per chunk (a multiple of the cell width) */

typedef struct pool_job {
    const attn_src *src;
    const int *pairs;
    int n_pairs;
    const heed_attn_sel *sel;
    int q0, q1, k0, k1, bq, bk, rows, cols;
    bool max;
    bool fast; /* one (layer, head), statistics kept: the blocked path */
    float *cell;
    int rc[64];
} pool_job;

/* Entries v[0..n) of keys k.. into the cell row c: cell by cell, each
 * cell's entries in key order (a float sum or a max in a register). */
static void pool_entries(const pool_job *j, float *c, const float *v, int k, int n) {
    for (int i = 0; i < n;) {
        int cell = (k + i - j->k0) / j->bk, end = j->k0 + (cell + 1) * j->bk - k;
        if (end > n) end = n;
        float acc = c[cell];
        if (j->max)
            for (; i < end; i++) acc = v[i] > acc ? v[i] : acc;
        else
            for (; i < end; i++) acc += v[i];
        c[cell] = acc;
    }
}

/* Cell row r through the blocked path. */
static int pool_row_fast(const pool_job *j, int r, float *sc) {
    const astore *st = j->src->st;
    const kern_ops *ops = j->src->ops;
    int l = j->pairs[0], h = j->pairs[1], hd = st->head_dim;
    size_t L = (size_t)st->n_layer, H = (size_t)st->n_head;
    const kern_attn_rule *rule = &st->rules[l];
    const float *keys = st->k[l * st->n_head_kv + h / (st->n_head / st->n_head_kv)];
    int chunk = POOL_CHUNK / j->bk * j->bk;
    if (chunk < j->bk) chunk = j->bk;
    float *c = j->cell + (size_t)r * j->cols;
    int qa = j->q0 + r * j->bq, qb = qa + j->bq < j->q1 ? qa + j->bq : j->q1;
    for (int g0 = qa; g0 < qb; g0 += POOL_GROUP) {
        int g1 = g0 + POOL_GROUP < qb ? g0 + POOL_GROUP : qb;
        int kend = g1 < j->k1 ? g1 : j->k1; /* keys any query of the group sees: < g1 */
        for (int ka = j->k0; ka < kend; ka += chunk) {
            int kb = ka + chunk < kend ? ka + chunk : kend;
            for (int b0 = g0; b0 < g1; b0 += KERN_ATTN_BLOCK) {
                int nb = g1 - b0 < KERN_ATTN_BLOCK ? g1 - b0 : KERN_ATTN_BLOCK;
                float *outs[KERN_ATTN_BLOCK];
                const float *qs[KERN_ATTN_BLOCK];
                int nk[KERN_ATTN_BLOCK], lo[KERN_ATTN_BLOCK], n_real = 0, klo = kb;
                for (int i = 0; i < nb; i++) { /* query b0+i: keys [lo, its end) of this chunk */
                    int q = b0 + i, first = kern_attn_first_key(q, rule->window);
                    lo[i] = first > ka ? first : ka;
                    int end = q + 1 < kb ? q + 1 : kb;
                    nk[i] = end > lo[i] ? end - lo[i] : 0;
                    if (nk[i] && lo[i] < klo) klo = lo[i];
                }
                /* the multi-query kernel takes one key start: rows from klo, each its own length */
                for (int i = 0; i < nb; i++) {
                    if (!nk[i]) continue;
                    outs[n_real] = sc + (size_t)n_real * chunk;
                    qs[n_real] = st->q + ((size_t)(b0 + i) * L + l) * st->q_dim + (size_t)h * hd;
                    nk[n_real] = nk[i] + lo[i] - klo;
                    lo[n_real] = lo[i];
                    n_real++;
                }
                if (!n_real) continue;
                ops->attn_scores_multi(outs, qs, nk, n_real, keys + (size_t)klo * hd, (size_t)hd, hd, rule->scale);
                for (int i = 0, qi = 0; i < nb; i++) {
                    int q = b0 + i;
                    int first = kern_attn_first_key(q, rule->window), s0 = first > ka ? first : ka;
                    int end = q + 1 < kb ? q + 1 : kb;
                    if (end <= s0) continue;
                    float *v = outs[qi] + (s0 - klo);
                    int n = end - s0;
                    qi++;
                    if (rule->softcap > 0.0f) kern_softcap(v, n, rule->softcap);
                    const float *m = st->mi + (((size_t)q * L + l) * H + h) * 2;
                    ops->softmax_apply_row(v, n, m[0], m[1]);
                    if (j->sel->measure == HEED_MEASURE_VALUE)
                        for (int e = 0; e < n; e++) v[e] *= j->src->vnorm[((size_t)(s0 + e) * L + l) * H + h];
                    pool_entries(j, c, v, s0, n);
                }
            }
        }
    }
    return HEED_OK;
}

static void pool_task(void *arg, int ith, int nth) {
    pool_job *j = arg;
    const astore *st = j->src->st;
    j->rc[ith] = HEED_OK;
    int chunk = POOL_CHUNK / j->bk * j->bk;
    if (chunk < j->bk) chunk = j->bk;
    float *buf = malloc(sizeof(float) * ((size_t)KERN_ATTN_BLOCK * chunk + 2 * (size_t)chunk +
                                         (1 + ACC_TMP_ROWS) * (size_t)st->n_pos));
    double *acc = j->fast ? NULL : malloc(sizeof(double) * (size_t)st->n_pos);
    if (!buf || (!j->fast && !acc)) {
        j->rc[ith] = HEED_ERR_NOMEM;
        free(buf);
        free(acc);
        return;
    }
    /* cell rows interleaved over threads: the early rows are short */
    for (int r = ith; r < j->rows && !j->rc[ith]; r += nth) {
        if (j->fast) {
            j->rc[ith] = pool_row_fast(j, r, buf);
            continue;
        }
        /* each query's aggregated row, made as rows_task makes it */
        float *row = buf, *tmp = buf + st->n_pos;
        int qa = j->q0 + r * j->bq, qb = qa + j->bq < j->q1 ? qa + j->bq : j->q1;
        for (int q = qa; q < qb && !j->rc[ith]; q++) {
            acc_init(acc, q + 1, j->sel->agg);
            j->rc[ith] = acc_pairs(j->src, j->pairs, 0, j->n_pairs, q, j->sel->agg, j->sel->measure, tmp, acc);
            for (int k = 0; k <= q; k++) row[k] = (float)(j->sel->agg == HEED_AGG_MEAN ? acc[k] / j->n_pairs : acc[k]);
            if (j->rc[ith]) break;
            int end = q + 1 < j->k1 ? q + 1 : j->k1;
            if (end > j->k0) pool_entries(j, j->cell + (size_t)r * j->cols, row + j->k0, j->k0, end - j->k0);
        }
    }
    free(buf);
    free(acc);
}

int attn_agg_pool(const attn_src *src, const heed_attn_sel *sel, int q0, int q1, int k0, int k1, int bq, int bk,
                  bool max, float *cell) {
    const astore *st = src->st;
    if (!sel || !cell || q0 < 0 || q1 > st->n_pos || q0 >= q1 || k0 < 0 || k1 > st->n_pos || k0 >= k1 || bq < 1 ||
        bk < 1)
        return HEED_ERR_INVALID_ARG;
    int rows = (q1 - q0 + bq - 1) / bq, cols = (k1 - k0 + bk - 1) / bk;
    memset(cell, 0, sizeof(float) * (size_t)rows * cols);
    int *pairs = malloc(sizeof(int) * 2 * (size_t)st->n_layer * st->n_head);
    if (!pairs) return HEED_ERR_NOMEM;
    int n_pairs = sel_pairs(st, sel, pairs), rc = n_pairs < 0 ? n_pairs : measure_ok(src, sel);
    if (!rc && !exact(st)) rc = HEED_ERR_UNSUPPORTED; /* the summary tiers: row by row (heed_run_attn_row) */
    if (rc) {
        free(pairs);
        return rc;
    }
    bool fast = n_pairs == 1 && st->has_qk && st->has_mi && !st->rules[pairs[0]].n_ko;
    size_t work = (size_t)n_pairs * (size_t)(q1 - q0) * (size_t)q1 / 2 * st->head_dim;
    int nth = threads_for(src, work, (size_t)rows);
    if (nth > 64) nth = 64;
    pool_job j = {src, pairs, n_pairs, sel, q0, q1, k0, k1, bq, bk, rows, cols, max, fast, cell, {0}};
    if (nth > 1) pool_run(src->pool, nth, pool_task, &j);
    else pool_task(&j, 0, 1);
    for (int t = 0; t < nth && !rc; t++) rc = j.rc[t];
    if (!rc && !max) /* a mean over the cell's unmasked entries (keys <= query) */
        for (int r = 0; r < rows; r++) {
            int qa = q0 + r * bq, qb = qa + bq < q1 ? qa + bq : q1;
            for (int c = 0; c < cols; c++) {
                int ka = k0 + c * bk, kb = ka + bk < k1 ? ka + bk : k1;
                long n = 0;
                for (int q = qa; q < qb; q++) n += q < ka ? 0 : (q + 1 < kb ? q + 1 : kb) - ka;
                float *d = cell + (size_t)r * cols + c;
                *d = n ? *d / (float)n : 0.0f;
            }
        }
    free(pairs);
    return rc;
}

/* ------------------------------------------------------------ statistics */

/* Histogram bin of distance d: 0, 1, 2-3, 4-7, ..., 512-1023, >= 1024. */
static int dist_bin(int d) {
    int b = 0;
    while (d > 0 && b < 11) {
        d >>= 1;
        b++;
    }
    return b;
}

heed_zone attn_zone(float local, float mid, float far) {
    if (local + mid + far < ATTN_EPS) return HEED_ZONE_NONE;
    /* the largest band wins; ties go to the nearer band */
    if (local >= mid && local >= far) return HEED_ZONE_SYNTAX_FLOOR;
    if (mid >= far) return HEED_ZONE_SEMANTIC_BRIDGE;
    return HEED_ZONE_STRUCTURE_RIPPLE;
}

void attn_row_stats(const float *p, int pos, heed_token_stats *out) {
    memset(out, 0, sizeof *out);
    double h = 0, hist[12] = {0}, band[3] = {0}, mean_d = 0, mx = 0;
    for (int k = 0; k <= pos; k++) {
        double w = p[k];
        int d = pos - k;
        if (w > 0) h -= w * log(w);
        if (w > mx) mx = w;
        mean_d += w * d;
        if (k == 0) continue; /* the sink is counted on its own */
        hist[dist_bin(d)] += w;
        band[d <= ATTN_LOCAL_MAX ? 0 : d <= ATTN_MID_MAX ? 1 : 2] += w;
    }
    out->entropy = (float)h;
    out->sink = p[0];
    out->local = (float)band[0];
    out->mid = (float)band[1];
    out->far = (float)band[2];
    float *f = out->fingerprint;
    for (int b = 0; b < 12; b++) f[b] = (float)hist[b];
    f[12] = p[0];
    f[13] = pos > 0 ? (float)(h / log((double)pos + 1)) : 0.0f;
    f[14] = (float)mx;
    f[15] = out->local;
    f[16] = out->mid;
    f[17] = out->far;
    f[18] = pos > 0 ? (float)(mean_d / pos) : 0.0f;
    f[19] = (float)(exp(h) / (pos + 1));
    out->zone = attn_zone(out->local, out->mid, out->far);
}

void attn_step_view(const float *row, int n_prompt, int t, const bool *drop, float *in, float *out,
                    float *in_mass, float *out_mass) {
    double si = 0, so = 0;
    for (int k = 0; k < n_prompt; k++) {
        in[k] = drop && drop[k] ? 0.0f : row[k];
        si += in[k];
    }
    for (int j = 0; j < t; j++) so += out[j] = row[n_prompt + j];
    /* separately to sum 1: shares of the attention that went to each part */
    for (int k = 0; k < n_prompt; k++) in[k] = (float)(in[k] / (si + ATTN_EPS));
    for (int j = 0; j < t; j++) out[j] = (float)(out[j] / (so + ATTN_EPS));
    if (in_mass) *in_mass = (float)si;
    if (out_mass) *out_mass = (float)so;
}

static int edge_cmp(const void *a, const void *b) {
    const heed_edge *x = a, *y = b;
    if (x->weight != y->weight) return x->weight > y->weight ? -1 : 1;
    return (x->src > y->src) - (x->src < y->src);
}

int attn_edges(const float *row, int n, float threshold, int top_k, heed_edge *out, int n_max) {
    heed_edge *all = malloc(sizeof *all * (size_t)(n > 0 ? n : 1));
    if (!all) return HEED_ERR_NOMEM;
    int m = 0;
    for (int k = 0; k < n; k++)
        if (row[k] >= threshold) all[m++] = (heed_edge){k, row[k]};
    qsort(all, (size_t)m, sizeof *all, edge_cmp);
    if (top_k > 0 && m > top_k) m = top_k;
    if (m > n_max) m = n_max;
    if (m > 0) memcpy(out, all, sizeof *all * (size_t)m);
    free(all);
    return m;
}

/* ------------------------------------------------------------ head types */

/* Scores are means over queries pos >= 2 (at 0 and 1 previous token, sink and
 * local cannot be told apart). */
void attn_head_add(attn_head_acc *a, const float *p, int pos, const int32_t *ids) {
    if (pos < 2) return;
    a->n++;
    a->prev += p[pos - 1];
    a->sink += p[0];
    for (int k = pos - ATTN_LOCAL_MAX > 1 ? pos - ATTN_LOCAL_MAX : 1; k <= pos; k++) a->local += p[k];
    /* induction: earlier occurrences j of this token (j + 1 < pos, so not the
     * previous-token position) and the mass on the token after each */
    double ind = 0;
    bool any = false;
    for (int j = 0; j + 1 < pos; j++)
        if (ids[j] == ids[pos]) {
            ind += p[j + 1];
            any = true;
        }
    if (any) {
        a->n_ind++;
        a->induction += ind;
    }
}

#define TH_PREV 0.5
#define TH_INDUCTION 0.3
#define TH_SINK 0.5
#define TH_LOCAL 0.7

void attn_head_finish(const attn_head_acc *a, heed_head_type *out) {
    memset(out, 0, sizeof *out);
    if (a->n > 0) {
        out->prev = (float)(a->prev / a->n);
        out->sink = (float)(a->sink / a->n);
        out->local = (float)(a->local / a->n);
    }
    if (a->n_ind > 0) out->induction = (float)(a->induction / a->n_ind);
    /* the kind whose score passes its threshold by the largest factor */
    const double score[4] = {out->prev / TH_PREV, out->induction / TH_INDUCTION, out->sink / TH_SINK,
                             out->local / TH_LOCAL};
    const heed_head_kind kind[4] = {HEED_HEAD_PREV_TOKEN, HEED_HEAD_INDUCTION, HEED_HEAD_SINK, HEED_HEAD_LOCAL};
    double best = 1.0;
    out->kind = HEED_HEAD_OTHER;
    for (int i = 0; i < 4; i++)
        if (score[i] >= best) {
            best = score[i];
            out->kind = kind[i];
        }
}

/* ----------------------------------------------------------------- spans */

static bool is_control_label(const char *s) {
    size_t n = strlen(s);
    return n >= 3 && s[0] == '[' && s[n - 1] == ']';
}

static bool starts_word(const char *s) {
    return s[0] == ' ' || s[0] == '\n' || (s[0] == '\\' && s[1] == 'n') || is_control_label(s);
}

static bool ends_sentence(const char *s) {
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == ' ') n--;
    return n > 0 && (s[n - 1] == '.' || s[n - 1] == '!' || s[n - 1] == '?');
}

int attn_spans(const char *const *labels, int n, heed_span_level level, heed_span *out, int n_max) {
    if (n < 0 || (level != HEED_SPAN_WORD && level != HEED_SPAN_SENTENCE)) return HEED_ERR_INVALID_ARG;
    int m = 0, first = 0;
    for (int i = 0; i < n; i++) {
        bool last = i + 1 == n;
        /* a word ends before a token that starts one, and after a control token */
        bool word_end = last || starts_word(labels[i + 1]) || is_control_label(labels[i]);
        bool end = level == HEED_SPAN_WORD ? word_end : word_end && (last || ends_sentence(labels[i]) ||
                                                                  is_control_label(labels[i]));
        if (!end) continue;
        if (m < n_max) out[m] = (heed_span){first, i + 1 - first};
        m++;
        first = i + 1;
    }
    return m;
}
