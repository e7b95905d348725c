/*
 * astore.c - tiered attention storage (see astore.h for the layout).
 *
 * The hook feeds blocks of one layer and a run of consecutive positions.
 * Queries and keys are copied as they come; probabilities are reduced at
 * once to top-k entries and head-mean rows, and copied whole only while the
 * full tier fits its limit. Arrays are position-major so a generation only
 * appends; they grow by doubling with realloc.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "astore.h"

int astore_init(astore *s, int n_layer, int n_head, int n_head_kv, int head_dim, const astore_params *p) {
    memset(s, 0, sizeof *s);
    if (n_layer <= 0 || n_head <= 0 || n_head_kv <= 0 || head_dim <= 0 || n_head % n_head_kv || !p ||
        p->top_k < 0 || p->top_k > 4096)
        return HEED_ERR_INVALID_ARG;
    s->n_layer = n_layer;
    s->n_head = n_head;
    s->n_head_kv = n_head_kv;
    s->head_dim = head_dim;
    s->q_dim = n_head * head_dim;
    s->kv_dim = n_head_kv * head_dim;
    s->top_k = p->top_k;
    s->has_qk = p->keep_qk;
    s->has_topk = p->top_k > 0;
    s->has_hmean = p->keep_head_mean;
    s->full_limit = p->full_limit;
    s->has_full = p->full_limit > 0;
    if (s->has_qk && !(s->k = calloc((size_t)n_layer * n_head_kv, sizeof *s->k))) return HEED_ERR_NOMEM;
    return HEED_OK;
}

void astore_free(astore *s) {
    if (!s) return;
    free(s->q);
    if (s->k)
        for (int i = 0; i < s->n_layer * s->n_head_kv; i++) free(s->k[i]);
    free(s->k);
    free(s->tk_pos);
    free(s->tk_w);
    free(s->hmean);
    free(s->full);
    memset(s, 0, sizeof *s);
}

/* Grows *p from `have` to `want` elements of `size` bytes, keeping the contents. */
static int grow(void **p, size_t have, size_t want, size_t size) {
    if (want <= have) return HEED_OK;
    void *n = realloc(*p, want * size);
    if (!n) return HEED_ERR_NOMEM;
    *p = n;
    return HEED_OK;
}

/* Tier (c) has its own capacity: doubling must not carry it past its limit. */
static int reserve_full(astore *s, size_t need, size_t want) {
    size_t LH = (size_t)s->n_layer * s->n_head, cap = (size_t)s->full_cap;
    if (!s->has_full || need <= cap) return HEED_OK;
    if (astore_tri(need) * LH * sizeof(float) > s->full_limit) {
        free(s->full); /* the run outgrew the full tier: q/k and summaries remain */
        s->full = NULL;
        s->has_full = false;
        s->full_cap = 0;
        return HEED_OK;
    }
    if (astore_tri(want) * LH * sizeof(float) > s->full_limit) want = need;
    int rc = grow((void **)&s->full, astore_tri(cap) * LH, astore_tri(want) * LH, sizeof(float));
    if (!rc) s->full_cap = (int)want;
    return rc;
}

int astore_reserve(astore *s, int n_pos) {
    size_t old = (size_t)s->cap, need = (size_t)n_pos;
    size_t want = old * 2 > need ? old * 2 : need;
    if (want < 64) want = 64;
    int rc = reserve_full(s, need, want);
    if (rc || n_pos <= s->cap) return rc;
    size_t L = (size_t)s->n_layer, H = (size_t)s->n_head, K = (size_t)s->top_k;
    if (s->has_qk) {
        rc = grow((void **)&s->q, old * L * s->q_dim, want * L * s->q_dim, sizeof(float));
        for (int i = 0; !rc && i < s->n_layer * s->n_head_kv; i++)
            rc = grow((void **)&s->k[i], old * s->head_dim, want * s->head_dim, sizeof(float));
    }
    if (!rc && s->has_topk) {
        rc = grow((void **)&s->tk_pos, old * L * H * K, want * L * H * K, sizeof(uint32_t));
        if (!rc) rc = grow((void **)&s->tk_w, old * L * H * K, want * L * H * K, sizeof(uint16_t));
    }
    if (!rc && s->has_hmean)
        rc = grow((void **)&s->hmean, astore_tri(old) * L, astore_tri(want) * L, sizeof(uint16_t));
    /* on failure some arrays are larger than cap: harmless, cap is what counts */
    if (!rc) s->cap = (int)want;
    return rc;
}

void astore_add_qk(astore *s, const heed_qk_block *b) {
    if (!s->has_qk || s->failed) return;
    if (b->n_head != s->n_head || b->n_head_kv != s->n_head_kv || b->head_dim != s->head_dim ||
        b->layer < 0 || b->layer >= s->n_layer || astore_reserve(s, b->pos0 + b->n_query)) {
        s->failed = true;
        return;
    }
    size_t L = (size_t)s->n_layer, hd = (size_t)s->head_dim;
    for (int i = 0; i < b->n_query; i++) {
        size_t pos = (size_t)(b->pos0 + i);
        memcpy(s->q + (pos * L + b->layer) * s->q_dim, b->q + (size_t)i * s->q_dim, sizeof(float) * s->q_dim);
        for (int g = 0; g < s->n_head_kv; g++)
            memcpy(s->k[b->layer * s->n_head_kv + g] + pos * hd, b->k + (size_t)i * s->kv_dim + g * hd,
                   sizeof(float) * hd);
    }
}

/* min-heap on (weight, -position): the root is the entry to evict next */
static bool tk_less(float wa, uint32_t pa, float wb, uint32_t pb) { return wa < wb || (wa == wb && pa > pb); }

static void tk_sift(float *w, uint32_t *p, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && tk_less(w[l], p[l], w[m], p[m])) m = l;
        if (r < n && tk_less(w[r], p[r], w[m], p[m])) m = r;
        if (m == i) return;
        float tw = w[i]; w[i] = w[m]; w[m] = tw;
        uint32_t tp = p[i]; p[i] = p[m]; p[m] = tp;
        i = m;
    }
}

/* A lower bound for the k-th largest of a long row: split it into k blocks;
 * their k maxima are k distinct entries, so the k-th largest is at least
 * the smallest of them. Entries below it cannot make the top k, which
 * spares the heap almost all of a long row (one vectorizable pass). */
static float topk_floor(const float *row, int n, int k) {
    int bs = n / k;
    float t = INFINITY;
    for (int b = 0; b < k; b++) {
        int lo = b * bs, hi = b == k - 1 ? n : lo + bs;
        float mx = row[lo];
        for (int i = lo + 1; i < hi; i++) mx = row[i] > mx ? row[i] : mx;
        t = mx < t ? mx : t;
    }
    return t;
}

int astore_topk(const float *row, int n, int k, uint32_t *pos, float *w) {
    int m = n < k ? n : k;
    if (m <= 0) return 0;
    float floor = n > 2 * k ? topk_floor(row, n, k) : -INFINITY;
    int filled = 0;
    for (int i = 0; i < n; i++) {
        if (!(row[i] >= floor)) continue;
        if (filled < m) {
            w[filled] = row[i];
            pos[filled++] = (uint32_t)i;
            if (filled == m)
                for (int j = m / 2 - 1; j >= 0; j--) tk_sift(w, pos, m, j);
        } else if (tk_less(w[0], pos[0], row[i], (uint32_t)i)) {
            w[0] = row[i];
            pos[0] = (uint32_t)i;
            tk_sift(w, pos, m, 0);
        }
    }
    m = filled; /* fewer only when NaNs were skipped */
    /* heap sort: repeatedly move the smallest to the end -> descending order */
    for (int e = m - 1; e > 0; e--) {
        float tw = w[0]; w[0] = w[e]; w[e] = tw;
        uint32_t tp = pos[0]; pos[0] = pos[e]; pos[e] = tp;
        tk_sift(w, pos, e, 0);
    }
    return m;
}

static void add_topk(astore *s, int layer, int h, int pos, const float *row) {
    size_t K = (size_t)s->top_k;
    size_t base = (((size_t)pos * s->n_layer + layer) * s->n_head + h) * K;
    uint32_t *tp = s->tk_pos + base;
    uint16_t *tw = s->tk_w + base;
    float w[4096];
    int m = astore_topk(row, pos + 1, s->top_k, tp, w);
    for (int i = 0; i < m; i++) tw[i] = kern_f32_to_f16(w[i]);
    for (size_t i = (size_t)m; i < K; i++) { tp[i] = ASTORE_TK_NONE; tw[i] = 0; }
}

/* Head mean of one layer's row at query i: heads added in head order in
 * float (row by row, so the loop vectorizes; each key still sees the same
 * additions in the same order), divided by n_head: the reference the tests
 * repeat exactly. acc holds pos + 1 floats. */
static void add_hmean(astore *s, const heed_attn_block *b, int i, float *acc) {
    size_t pos = (size_t)b->pos0 + i, n = pos + 1;
    uint16_t *dst = s->hmean + astore_tri(pos) * s->n_layer + (size_t)b->layer * n;
    memcpy(acc, b->probs + i * b->row_stride, sizeof(float) * n);
    for (int h = 1; h < b->n_head; h++) {
        const float *row = b->probs + h * b->head_stride + i * b->row_stride;
        for (size_t k = 0; k < n; k++) acc[k] += row[k];
    }
    for (size_t k = 0; k < n; k++) dst[k] = kern_f32_to_f16(acc[k] / (float)b->n_head);
}

typedef struct probs_job {
    astore *s;
    const heed_attn_block *b;
    float *acc; /* (nth, pos0 + n_query) */
} probs_job;

/* (query, head) pairs for top-k and the full tier, queries for the head
 * mean, interleaved over threads. */
static void probs_task(void *arg, int ith, int nth) {
    probs_job *j = arg;
    astore *s = j->s;
    const heed_attn_block *b = j->b;
    size_t LH = (size_t)s->n_layer * s->n_head;
    for (int idx = ith; idx < b->n_query * b->n_head; idx += nth) {
        int i = idx / b->n_head, h = idx % b->n_head, pos = b->pos0 + i;
        const float *row = b->probs + h * b->head_stride + i * b->row_stride;
        if (s->has_topk) add_topk(s, b->layer, h, pos, row);
        if (s->has_full)
            memcpy(s->full + astore_tri((size_t)pos) * LH + ((size_t)b->layer * s->n_head + h) * (pos + 1), row,
                   sizeof(float) * (pos + 1));
    }
    if (s->has_hmean)
        for (int i = ith; i < b->n_query; i += nth)
            add_hmean(s, b, i, j->acc + (size_t)ith * (b->pos0 + b->n_query));
}

void astore_add_probs(astore *s, const heed_attn_block *b, pool *p) {
    if (s->failed) return;
    if (b->n_head != s->n_head || b->layer < 0 || b->layer >= s->n_layer ||
        astore_reserve(s, b->pos0 + b->n_query)) {
        s->failed = true;
        return;
    }
    int nth = p ? pool_size(p) : 1;
    if (nth > b->n_query * b->n_head) nth = b->n_query * b->n_head;
    probs_job j = {s, b, NULL};
    if (s->has_hmean && !(j.acc = malloc(sizeof(float) * (size_t)nth * (b->pos0 + b->n_query)))) {
        s->failed = true;
        return;
    }
    if (nth > 1) pool_run(p, nth, probs_task, &j);
    else probs_task(&j, 0, 1);
    free(j.acc);
    if (b->layer == s->n_layer - 1 && b->pos0 + b->n_query > s->n_pos) s->n_pos = b->pos0 + b->n_query;
}

int astore_row(const astore *s, const kern_ops *ops, int layer, int head, int pos, float *out) {
    if (layer < 0 || layer >= s->n_layer || head < 0 || head >= s->n_head || pos < 0 || pos >= s->n_pos)
        return HEED_ERR_INVALID_ARG;
    size_t L = (size_t)s->n_layer, H = (size_t)s->n_head;
    if (s->has_full) {
        memcpy(out, s->full + astore_tri((size_t)pos) * L * H + ((size_t)layer * H + head) * (pos + 1),
               sizeof(float) * (pos + 1));
        return HEED_OK;
    }
    if (!s->has_qk) return HEED_ERR_UNSUPPORTED;
    int hd = s->head_dim, group = s->n_head / s->n_head_kv;
    /* the forward pass's scale, computed the same way, so rows match bit for bit */
    const float scale = 1.0f / sqrtf((float)hd);
    const float *qv = s->q + ((size_t)pos * L + layer) * s->q_dim + (size_t)head * hd;
    const float *keys = s->k[layer * s->n_head_kv + head / group];
    ops->attn_scores(out, qv, keys, (size_t)hd, pos + 1, hd, scale);
    ops->softmax(out, pos + 1);
    return HEED_OK;
}

size_t astore_bytes(const astore *s) {
    size_t P = (size_t)s->n_pos, L = (size_t)s->n_layer, H = (size_t)s->n_head, n = 0;
    if (s->has_qk) n += P * L * (size_t)(s->q_dim + s->kv_dim) * sizeof(float);
    if (s->has_topk) n += P * L * H * (size_t)s->top_k * (sizeof(uint32_t) + sizeof(uint16_t));
    if (s->has_hmean) n += astore_tri(P) * L * sizeof(uint16_t);
    if (s->has_full) n += astore_tri(P) * L * H * sizeof(float);
    return n;
}
