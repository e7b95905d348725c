/*
 * forward.c - the inference context: KV cache, the forward pass, and the
 * attention hook.
 *
 * A batch of tokens (a whole prompt, or one decoded token) goes through every
 * layer at once: the pre-norm (RMSNorm, or LayerNorm with bias for gpt2;
 * none for olmo2), q/k/v projections (+ biases, + q/k norms per head or over
 * the whole projection), RoPE, causal attention against the KV cache (scaled,
 * soft-capped and windowed as the layer's kern_attn_rule says), output
 * projection, the optional post-norm (gemma2/3, olmo2), the feed-forward
 * block (SwiGLU, GeGLU, GELU with biases, or routed SwiGLU experts), residual
 * adds; then the final norm, the output matrix for the last position and the
 * final soft-cap.
 *
 * Attention is computed unfused: scores, softmax into `att`, then the
 * weighted sum of V reads the very same `att` buffer. The hook observes that
 * buffer between the two, so what it sees is exactly what generation uses,
 * and observing cannot change it (the hook gets a const pointer).
 *
 * Memory: everything is allocated in heed_ctx_new; heed_decode allocates
 * nothing. Threads: matrix rows, attention units ((KV head, block of its
 * query heads) in decode, (head, query block) in prefill) and a prompt's
 * per-token steps are split over the context's pool; the hook is called on
 * the caller's thread.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "forward.h"
#include "fmap.h"
#include "heed.h"
#include "kern.h"
#include "model.h"
#include "pool.h"

/* Budget for a batch's attention probabilities (n_head x n x (pos0 + n)
 * floats, rows packed by their length): a batch deep in a long prompt is
 * cut to what fits, early ones take up to MAX_UBATCH tokens, rather than
 * allocating n_ctx^2 per head. At least one row per head always fits. */
#define ATT_BUDGET_BYTES (64u << 20)
#define MAX_UBATCH 512
/* Of the memory available when a context is made with the default size,
 * the part its KV cache and scratch may take. */
#define DEFAULT_MEM_SHARE 0.8
/* Multiply-adds below which a job runs on one thread: waking a worker costs
 * more than it saves on small matrices. */
#define WORK_PER_THREAD (1u << 18)
/* A decode row of a model with fewer than SPLIT_MAX_UNITS units of decode
 * attention (KV heads x blocks of 4 of their query heads: too few to keep
 * the threads busy) over at least SPLIT_MIN_CHUNKS chunks of KEY_CHUNK keys
 * is split across keys (below). Models with more units keep whole rows:
 * their units already spread over the threads, and the split's three
 * hand-offs and cold rows cost more than they give (1B geometry, 8 KV
 * heads, decode at 4096: 11.6 tok/s split against 13.9 whole). The
 * decision and the chunking depend on the model and the row's length,
 * never on the thread count, so results do not depend on how many threads
 * run. */
#define KEY_CHUNK 512
#define SPLIT_MIN_CHUNKS 2
#define SPLIT_MAX_UNITS 4

struct heed_ctx {
    const heed_model *m;
    const kern_ops *ops;
    pool *pool;
    int n_threads;
    int n_ctx;  /* context limit */
    int n_past; /* positions in the KV cache */
    int n_ub;   /* max tokens per forward batch */
    size_t att_cap; /* floats in att: a batch's n_head x n x (pos0 + n) must fit */
    int q_dim, kv_dim;

    /* Each KV head's keys (values) are contiguous across positions, so the
     * attention of a head streams one run of memory; a head-interleaved
     * (position, kv_dim) cache made every head read a third or an eighth of
     * each row, and long contexts paid for the lines in between. */
    float *k_cache;  /* (n_layer, n_head_kv, n_ctx, head_dim) post-RoPE keys */
    float *v_cache;  /* (n_layer, n_head_kv, n_ctx, head_dim) values */
    float *kb, *vb;  /* (n_ub, kv_dim) a batch's keys and values, before they go into the cache */
    float *rope_cos; /* (n_ctx, n_rot/2) */
    float *rope_sin; /* (n_ctx, n_rot/2) */
    float *rope_cos_local, *rope_sin_local; /* the same for layers with rope_local, else NULL */
    kern_attn_rule *rules; /* (n_layer) how each layer forms its attention rows */
    float *x;        /* (n_ub, n_embd) residual stream */
    float *xb;       /* (n_ub, n_embd) normed block input / block output */
    float *q;        /* (n_ub, q_dim) post-RoPE queries */
    float *ao;       /* (n_ub, q_dim) attention output, heads concatenated */
    float *hb;       /* (n_ub, n_ff) gate, then silu(gate) * up */
    float *hb2;      /* (n_ub, n_ff) up */
    float *att;      /* (n_head, n_ub, row) post-softmax probabilities of one layer */
    float *att_mi;   /* (n_head, n_ub, 2) each row's max score and reciprocal sum (softmax_mi) */
    void *xq;        /* (n_ub, act row bytes of max_in) activations quantized for block-type weights */
    float *logits;   /* (n_vocab) next-token logits of the last position */
    /* mixture of experts (NULL for dense models) */
    float *moe_probs;   /* (n_ub, n_expert) router softmax */
    int32_t *moe_ids;   /* (n_ub, n_used) chosen experts, best first */
    float *moe_w;       /* (n_ub, n_used) their weights */
    float *moe_x;       /* (n_ub, n_embd) the inputs routed to one expert, gathered */
    float *moe_y;       /* (n_ub, n_embd) that expert's outputs */
    float *moe_out;     /* (n_ub, n_used, n_embd) each slot's weighted output */
    int *moe_rows;      /* (n_ub) the (token * n_used + slot) of each gathered row */

    heed_attn_hook hook;
    bool hooked;
    float *head_scale; /* (n_layer, n_head) factors on each head's attention output, or NULL: none */
    int intervene_from; /* head_scale, head values and every-position edits apply from this position on */
    unsigned char *head_which; /* (n_layer, n_head) heads whose output is replaced by head_values, or NULL */
    float *head_values;        /* (n_layer, n_head, head_dim) */
    int key_chunk;     /* keys per chunk of a split decode row; 0: never split */
    bool split_forced; /* split whatever the model's units (forward_set_key_chunk: tests, benchmarks) */
    kern_knockout *ko; /* the knockouts, by layer (rules[l].ko points into it), or NULL */
    heed_resid_edit *edits; /* (n_edits) residual edits, vectors in edit_vecs */
    float *edit_vecs;       /* (n_edits, n_embd) */
    int n_edits;
    float *part;       /* (part_chunks, q_dim) each chunk's share of the attention output */
    int part_chunks;
    char err[256];
};

__attribute__((format(printf, 3, 4))) static int ctx_fail(heed_ctx *c, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    err_vat(c->err, sizeof c->err, rc, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

static int threads_for(const heed_ctx *c, size_t work) {
    size_t nth = work / WORK_PER_THREAD + 1;
    return nth < (size_t)c->n_threads ? (int)nth : c->n_threads;
}

/* ------------------------------------------------------------- matmul */

/* Up to three matrices that read the same input (q/k/v, gate/up) go
 * through one hand-off: their rows, laid end to end, are split across the
 * threads, and the input is quantized once. */
#define MM_MAX 3

typedef struct mm_job {
    const kern_ops *ops;
    int n_mat;
    float *out[MM_MAX];
    size_t out_stride[MM_MAX];
    const model_mat *w[MM_MAX];
    const float *x;
    const void *xq;
    int n_tok, n_rows; /* n_rows: the matrices' rows together */
} mm_job;

static void mm_task(void *arg, int ith, int nth) {
    const mm_job *j = arg;
    /* chunks of 16 rows keep threads off each other's cache lines */
    int per = ((j->n_rows + nth - 1) / nth + 15) & ~15;
    int r0 = ith * per, r1 = r0 + per < j->n_rows ? r0 + per : j->n_rows;
    for (int m = 0, base = 0; m < j->n_mat && base < r1; base += j->w[m++]->n_out) {
        const model_mat *w = j->w[m];
        int o0 = r0 > base ? r0 - base : 0, o1 = r1 - base < w->n_out ? r1 - base : w->n_out;
        if (o0 < o1)
            kern_matmul_rows(j->ops, j->out[m], j->out_stride[m], w->type, w->data, w->n_in, j->x, j->xq, j->n_tok,
                             o0, o1);
    }
}

typedef struct quant_job {
    const kern_ops *ops;
    void *xq;
    const float *x;
    size_t act_bytes;
    int w_type, n_in, n_tok;
} quant_job;

static void quant_task(void *arg, int ith, int nth) {
    const quant_job *j = arg;
    int per = (j->n_tok + nth - 1) / nth;
    int t0 = ith * per, t1 = t0 + per < j->n_tok ? t0 + per : j->n_tok;
    for (int t = t0; t < t1; t++)
        kern_quantize_act_ops(j->ops, (char *)j->xq + j->act_bytes * t, j->x + (size_t)t * j->n_in, j->w_type,
                              j->n_in);
}

/* out[m][t * out_stride[m] + o] = W[m][o] . x[t] for n_mat matrices of the
 * same input width and n_tok rows of x (stride n_in). Matrices whose
 * weights want different activation formats go one by one. */
static void matmul_n(heed_ctx *c, int n_mat, float *const *out, const size_t *out_stride,
                     const model_mat *const *w, const float *x, int n_tok) {
    for (int m = 1; m < n_mat; m++)
        if (kern_act_type(w[m]->type) != kern_act_type(w[0]->type)) {
            for (int i = 0; i < n_mat; i++) matmul_n(c, 1, out + i, out_stride + i, w + i, x, n_tok);
            return;
        }
    const void *xq = NULL;
    size_t ab = kern_act_row_bytes(w[0]->type, w[0]->n_in);
    if (ab) {
        /* activations in the weight type's partner format (Q8_0, Q8_1 or Q8_K);
         * a prompt's rows are quantized on every thread (else it is a serial
         * step of a few percent of prefill) */
        quant_job qj = {c->ops, c->xq, x, ab, w[0]->type, w[0]->n_in, n_tok};
        pool_run(c->pool, n_tok >= 8 ? c->n_threads : 1, quant_task, &qj);
        xq = c->xq;
    }
    mm_job j = {.ops = c->ops, .n_mat = n_mat, .x = x, .xq = xq, .n_tok = n_tok};
    size_t work = 0;
    for (int m = 0; m < n_mat; m++) {
        j.out[m] = out[m], j.out_stride[m] = out_stride[m], j.w[m] = w[m];
        j.n_rows += w[m]->n_out;
        work += (size_t)w[m]->n_in * w[m]->n_out * n_tok;
    }
    pool_run(c->pool, threads_for(c, work), mm_task, &j);
}

/* out[t * out_stride + o] = W[o] . x[t] for n_tok rows of x (stride n_in). */
static void matmul(heed_ctx *c, float *out, size_t out_stride, const model_mat *w, const float *x, int n_tok) {
    matmul_n(c, 1, &out, &out_stride, &w, x, n_tok);
}

/* --------------------------------------------------------------- rope */

/*
 * Angles in double, once per context: theta(p, i) = p * scale * base^(-2i/n_rot) / freqs[i].
 * Computing them exactly (rather than by repeated float multiplication) keeps
 * long positions accurate.
 */
static void rope_table(heed_ctx *c, double base, double freq_scale, const float *divisors, double mag, float *cos_t,
                       float *sin_t) {
    const heed_model *m = c->m;
    int half = m->n_rot / 2;
    for (int i = 0; i < half; i++) {
        double inv = pow(base, -2.0 * i / m->n_rot) * freq_scale;
        if (divisors) inv /= divisors[i];
        for (int p = 0; p < c->n_ctx; p++) {
            double th = p * inv;
            cos_t[(size_t)p * half + i] = (float)(cos(th) * mag);
            sin_t[(size_t)p * half + i] = (float)(sin(th) * mag);
        }
    }
}

/* The tables a context needs: every layer's, and the sliding layers' own
 * base (gemma3). Phi-3's longrope divides by its long factors when the
 * context exceeds the one the short factors are for, as the reference
 * engine chooses. */
static void rope_tables(heed_ctx *c) {
    const heed_model *m = c->m;
    const float *div = m->rope_freqs;
    if (m->rope_factors_short || m->rope_factors_long)
        div = c->n_ctx > m->n_ctx_orig && m->rope_factors_long ? m->rope_factors_long : m->rope_factors_short;
    rope_table(c, m->rope_base, m->rope_freq_scale, div, m->rope_attn_factor, c->rope_cos, c->rope_sin);
    if (c->rope_cos_local)
        rope_table(c, m->rope_base_local, m->rope_freq_scale_local, NULL, 1.0, c->rope_cos_local, c->rope_sin_local);
}

/* Rotates n_vecs head vectors (head_dim each, contiguous) at position pos. */
static void rope_apply(const heed_ctx *c, float *v, int n_vecs, int pos, bool local) {
    const heed_model *m = c->m;
    int half = m->n_rot / 2, hd = m->head_dim;
    const float *ct = local ? c->rope_cos_local : c->rope_cos, *st = local ? c->rope_sin_local : c->rope_sin;
    const float *cs = ct + (size_t)pos * half, *sn = st + (size_t)pos * half;
    for (int h = 0; h < n_vecs; h++) {
        float *x = v + (size_t)h * hd;
        for (int i = 0; i < half; i++) {
            /* llama: adjacent pairs (2i, 2i+1); neox: (i, i + n_rot/2) */
            int a = m->rope_neox ? i : 2 * i, b = m->rope_neox ? i + half : 2 * i + 1;
            float x0 = x[a], x1 = x[b];
            x[a] = x0 * cs[i] - x1 * sn[i];
            x[b] = x0 * sn[i] + x1 * cs[i];
        }
    }
}

/* ---------------------------------------------------------- attention */

/* where KV head g's row for position pos of a layer starts in the caches */
static size_t kv_offset(const heed_ctx *c, int layer, int g, int pos) {
    return (((size_t)layer * c->m->n_head_kv + g) * c->n_ctx + pos) * c->m->head_dim;
}

typedef struct attn_job {
    heed_ctx *c;
    int layer, pos0, n;
    size_t row_stride, head_stride;
    int n_blocks;      /* query blocks of KERN_ATTN_BLOCK positions per head (prefill) */
    int n_head_blocks; /* blocks of up to KERN_ATTN_BLOCK query heads per KV head (decode) */
} attn_job;

/*
 * Attention of n_q rows that share KV head g's keys and values: the scores
 * (each equal to attn_scores's), the softmax of the first n_real rows (the
 * others repeat one of them), then the weighted sums, which read those very
 * rows. The multi-query kernels take n_q = 1 through the one-query ones.
 */
static void attn_rows(const attn_job *j, int g, float *const *rows, const float *const *queries,
                      float *const *outs, const int *n_keys, const int *heads, int n_q, int n_real) {
    heed_ctx *c = j->c;
    const kern_ops *ops = c->ops;
    const int hd = c->m->head_dim;
    const kern_attn_rule *rule = &c->rules[j->layer];
    /* Under a window the block's keys start at its first row's first key
     * (the earliest query sees the earliest keys); each row then zeroes the
     * keys before its own first, and its cap and softmax cover exactly the
     * keys kern_attn_row's would, so the rows are the same bit for bit. */
    const int lo0 = kern_attn_first_key(n_keys[0] - 1, rule->window);
    const size_t koff = kv_offset(c, j->layer, g, lo0);
    float *srows[KERN_ATTN_BLOCK];
    const float *probs[KERN_ATTN_BLOCK];
    int n_k[KERN_ATTN_BLOCK];
    for (int r = 0; r < n_q; r++) {
        srows[r] = rows[r] + lo0;
        probs[r] = srows[r];
        n_k[r] = n_keys[r] - lo0;
    }
    ops->attn_scores_multi(srows, queries, n_k, n_q, c->k_cache + koff, hd, hd, rule->scale);
    for (int r = 0; r < n_real; r++) {
        int lo = kern_attn_first_key(n_keys[r] - 1, rule->window), n = n_keys[r] - lo;
        if (lo) memset(rows[r], 0, sizeof(float) * (size_t)lo);
        if (rule->softcap > 0.0f) kern_softcap(rows[r] + lo, n, rule->softcap);
        if (rule->n_ko) kern_attn_knockout(rows[r], lo, n_keys[r], n_keys[r] - 1, heads[r], rule);
        /* row h * n + i of the layer's (rows - att is h * head_stride + i * row_stride) */
        ops->softmax_mi(rows[r] + lo, n, c->att_mi + 2 * (size_t)((rows[r] - c->att) / (ptrdiff_t)j->row_stride));
    }
    ops->attn_wsum_multi(outs, probs, n_k, n_q, c->v_cache + koff, hd, hd);
}

/*
 * Decode (one query per head). The query heads of one KV group read the same
 * keys and values, so they go through the multi-query kernels together, as a
 * prompt's query blocks do: units of (KV head, block of up to
 * KERN_ATTN_BLOCK of its query heads), each thread a contiguous range. A
 * block of 2 or 3 heads is padded to 4 by repeating its last head (same
 * query, same rows: the repeat writes the same values again); a lone head
 * goes alone.
 */
static void attn_decode_task(void *arg, int ith, int nth) {
    const attn_job *j = arg;
    const heed_ctx *c = j->c;
    const int hd = c->m->head_dim, group = c->m->n_head / c->m->n_head_kv;
    const int nb = j->n_head_blocks, n_units = c->m->n_head_kv * nb;
    int per = (n_units + nth - 1) / nth;
    int u0 = ith * per, u1 = u0 + per < n_units ? u0 + per : n_units;
    for (int u = u0; u < u1; u++) {
        int g = u / nb, first = (u % nb) * KERN_ATTN_BLOCK, h0 = g * group + first;
        int nq = group - first < KERN_ATTN_BLOCK ? group - first : KERN_ATTN_BLOCK;
        int n_q = nq == 1 ? 1 : KERN_ATTN_BLOCK;
        float *rows[KERN_ATTN_BLOCK], *outs[KERN_ATTN_BLOCK];
        const float *queries[KERN_ATTN_BLOCK];
        int n_keys[KERN_ATTN_BLOCK], heads[KERN_ATTN_BLOCK];
        for (int r = 0; r < n_q; r++) {
            int h = h0 + (r < nq ? r : nq - 1);
            rows[r] = c->att + h * j->head_stride;
            queries[r] = c->q + (size_t)h * hd;
            outs[r] = c->ao + (size_t)h * hd;
            n_keys[r] = j->pos0 + 1; /* causal: keys 0..pos */
            heads[r] = h;
        }
        attn_rows(j, g, rows, queries, outs, n_keys, heads, n_q, nq);
    }
}

/* One unit of prompt attention: queries i0 .. i0 + nq - 1 of head h. */
static void attn_block(const attn_job *j, int h, int i0, int nq) {
    const heed_ctx *c = j->c;
    const int hd = c->m->head_dim;
    float *rows[KERN_ATTN_BLOCK], *outs[KERN_ATTN_BLOCK];
    const float *queries[KERN_ATTN_BLOCK];
    int n_keys[KERN_ATTN_BLOCK], heads[KERN_ATTN_BLOCK];
    for (int r = 0; r < nq; r++) {
        int i = i0 + r;
        n_keys[r] = j->pos0 + i + 1; /* causal: keys 0..pos */
        rows[r] = c->att + h * j->head_stride + i * j->row_stride;
        queries[r] = c->q + (size_t)i * c->q_dim + (size_t)h * hd;
        outs[r] = c->ao + (size_t)i * c->q_dim + (size_t)h * hd;
        heads[r] = h;
    }
    attn_rows(j, h / (c->m->n_head / c->m->n_head_kv), rows, queries, outs, n_keys, heads, nq, nq);
}

/*
 * Prefill: units of (head, query block), numbered head-major so a thread's
 * consecutive units reuse one head's keys and values in its cache. A block
 * costs more the later its queries (the causal triangle), so units are dealt
 * out in rounds of nth that alternate direction (thread t takes unit t of one
 * round and unit nth - 1 - t of the next): over each pair of rounds every
 * thread gets one cheaper and one dearer unit, and the totals even out
 * whatever the head count.
 */
static void attn_prefill_task(void *arg, int ith, int nth) {
    const attn_job *j = arg;
    int n_units = j->c->m->n_head * j->n_blocks;
    for (int round = 0;; round++) {
        int u = round * nth + (round % 2 ? nth - 1 - ith : ith);
        if (u >= n_units) break;
        int h = u / j->n_blocks, i0 = (u % j->n_blocks) * KERN_ATTN_BLOCK;
        attn_block(j, h, i0, j->n - i0 < KERN_ATTN_BLOCK ? j->n - i0 : KERN_ATTN_BLOCK);
    }
}

/*
 * Decode over a long row, split across keys (flash-decoding's split, with
 * the rows kept): (A) each unit (key chunk, KV head block) scores its keys
 * with the multi-query kernel and soft-caps them; (B) each head's row is
 * softmaxed whole, by the very kernel call kern_attn_row makes, so the row
 * is the one a recomputation gives, bit for bit; (C) each unit sums its
 * chunk's values into the chunk's part of the output; (D) the parts are
 * added in chunk order. Scores and rows equal the unsplit ones exactly; the
 * output differs by the order of the float additions only.
 */
typedef struct split_job {
    heed_ctx *c;
    int layer, pos, lo, n_chunks, nb, phase;
    size_t head_stride;
} split_job;

static void split_task(void *arg, int ith, int nth) {
    const split_job *j = arg;
    heed_ctx *c = j->c;
    const heed_model *m = c->m;
    const kern_ops *ops = c->ops;
    const kern_attn_rule *rule = &c->rules[j->layer];
    const int hd = m->head_dim, group = m->n_head / m->n_head_kv, n_units = m->n_head_kv * j->nb;
    if (j->phase == 1) { /* B: each head's row */
        for (int h = ith; h < m->n_head; h += nth) {
            float *row = c->att + (size_t)h * j->head_stride;
            if (j->lo) memset(row, 0, sizeof(float) * (size_t)j->lo);
            ops->softmax_mi(row + j->lo, j->pos + 1 - j->lo, c->att_mi + 2 * (size_t)h);
        }
        return;
    }
    for (int u = ith; u < j->n_chunks * n_units; u += nth) {
        int ch = u / n_units, gu = u % n_units, g = gu / j->nb, first = (gu % j->nb) * KERN_ATTN_BLOCK;
        int k0 = j->lo + ch * c->key_chunk, k1 = k0 + c->key_chunk < j->pos + 1 ? k0 + c->key_chunk : j->pos + 1;
        int nq = group - first < KERN_ATTN_BLOCK ? group - first : KERN_ATTN_BLOCK, n_q = nq == 1 ? 1 : KERN_ATTN_BLOCK;
        float *rows[KERN_ATTN_BLOCK], *outs[KERN_ATTN_BLOCK];
        const float *queries[KERN_ATTN_BLOCK], *probs[KERN_ATTN_BLOCK];
        int n_keys[KERN_ATTN_BLOCK];
        for (int r = 0; r < n_q; r++) {
            int h = g * group + first + (r < nq ? r : nq - 1);
            rows[r] = c->att + (size_t)h * j->head_stride + k0;
            probs[r] = rows[r];
            queries[r] = c->q + (size_t)h * hd;
            outs[r] = c->part + (size_t)ch * c->q_dim + (size_t)h * hd;
            n_keys[r] = k1 - k0;
        }
        size_t koff = kv_offset(c, j->layer, g, k0);
        if (j->phase == 0) { /* A */
            ops->attn_scores_multi(rows, queries, n_keys, n_q, c->k_cache + koff, hd, hd, rule->scale);
            for (int r = 0; r < nq; r++) {
                if (rule->softcap > 0.0f) kern_softcap(rows[r], k1 - k0, rule->softcap);
                if (rule->n_ko) kern_attn_knockout(rows[r] - k0, k0, k1, j->pos, g * group + first + r, rule);
            }
        } else { /* C */
            ops->attn_wsum_multi(outs, probs, n_keys, n_q, c->v_cache + koff, hd, hd);
        }
    }
}

static void attention_split(heed_ctx *c, int layer, int pos, int lo, int n_chunks, size_t head_stride) {
    const heed_model *m = c->m;
    int nb = (m->n_head / m->n_head_kv + KERN_ATTN_BLOCK - 1) / KERN_ATTN_BLOCK;
    split_job j = {c, layer, pos, lo, n_chunks, nb, 0, head_stride};
    int units = n_chunks * m->n_head_kv * nb;
    int nth = c->n_threads < units ? c->n_threads : units;
    pool_run(c->pool, nth, split_task, &j);
    j.phase = 1;
    pool_run(c->pool, c->n_threads < m->n_head ? c->n_threads : m->n_head, split_task, &j);
    j.phase = 2;
    pool_run(c->pool, nth, split_task, &j);
    for (int i = 0; i < c->q_dim; i++) { /* D: the chunks' parts in order */
        float acc = c->part[i];
        for (int ch = 1; ch < n_chunks; ch++) acc += c->part[(size_t)ch * c->q_dim + i];
        c->ao[i] = acc;
    }
}

static void attention(heed_ctx *c, int layer, int pos0, int n) {
    const heed_model *m = c->m;
    int units = m->n_head_kv * ((m->n_head / m->n_head_kv + KERN_ATTN_BLOCK - 1) / KERN_ATTN_BLOCK);
    if (n == 1 && c->key_chunk > 0 && (units < SPLIT_MAX_UNITS || c->split_forced)) {
        int lo = kern_attn_first_key(pos0, c->rules[layer].window);
        int n_chunks = (pos0 + 1 - lo + c->key_chunk - 1) / c->key_chunk;
        if (n_chunks >= SPLIT_MIN_CHUNKS && n_chunks <= c->part_chunks) {
            attention_split(c, layer, pos0, lo, n_chunks, (size_t)pos0 + 1);
            if (c->hooked && c->hook.observe && (!c->hook.want || c->hook.want(c->hook.user, layer))) {
                heed_attn_block blk = {layer, m->n_head, pos0, 1, (size_t)pos0 + 1, (size_t)pos0 + 1, c->att,
                                       c->att_mi};
                c->hook.observe(c->hook.user, &blk);
            }
            return;
        }
    }
    int n_blocks = (n + KERN_ATTN_BLOCK - 1) / KERN_ATTN_BLOCK;
    int n_head_blocks = (m->n_head / m->n_head_kv + KERN_ATTN_BLOCK - 1) / KERN_ATTN_BLOCK;
    attn_job j = {c, layer, pos0, n, (size_t)(pos0 + n), (size_t)n * (pos0 + n), n_blocks, n_head_blocks};
    size_t work = (size_t)m->n_head * n * (pos0 + n) * m->head_dim * 2;
    int nth = threads_for(c, work);
    int n_units = n == 1 ? m->n_head_kv * n_head_blocks : m->n_head * n_blocks;
    pool_run(c->pool, nth < n_units ? nth : n_units, n == 1 ? attn_decode_task : attn_prefill_task, &j);

    /* the hook sees the probabilities the weighted sum above just used */
    if (c->hooked && c->hook.observe && (!c->hook.want || c->hook.want(c->hook.user, layer))) {
        heed_attn_block blk = {layer, m->n_head, pos0, n, j.row_stride, j.head_stride, c->att, c->att_mi};
        c->hook.observe(c->hook.user, &blk);
    }
}

/* ------------------------------------------------------------ forward */

/* An intervention: each head's attention output (its slice of ao, before
 * the output projection) times its factor; 0 ablates the head. Heads at 1
 * are left as they are, so a factor of 1 changes nothing, bit for bit. */
static void scale_heads(heed_ctx *c, int layer, int pos0, int n) {
    const heed_model *m = c->m;
    const float *f = c->head_scale + (size_t)layer * m->n_head;
    const int t0 = c->intervene_from > pos0 ? c->intervene_from - pos0 : 0;
    for (int h = 0; h < m->n_head; h++) {
        if (f[h] == 1.0f) continue;
        for (int t = t0; t < n; t++) {
            float *y = c->ao + (size_t)t * c->q_dim + (size_t)h * m->head_dim;
            for (int d = 0; d < m->head_dim; d++) y[d] *= f[h];
        }
    }
}

/* An intervention: the marked heads' outputs replaced by their values (mean ablation). */
static void replace_heads(heed_ctx *c, int layer, int pos0, int n) {
    const heed_model *m = c->m;
    const int t0 = c->intervene_from > pos0 ? c->intervene_from - pos0 : 0;
    for (int h = 0; h < m->n_head; h++) {
        size_t at = (size_t)layer * m->n_head + h;
        if (!c->head_which[at]) continue;
        for (int t = t0; t < n; t++)
            memcpy(c->ao + (size_t)t * c->q_dim + (size_t)h * m->head_dim, c->head_values + at * m->head_dim,
                   sizeof(float) * (size_t)m->head_dim);
    }
}

static void add_bias(float *y, const float *b, int dim) {
    if (!b) return;
    for (int i = 0; i < dim; i++) y[i] += b[i];
}

static void head_norm(float *y, const float *w, int n_vecs, int hd, float eps) {
    if (!w) return;
    for (int h = 0; h < n_vecs; h++) kern_rmsnorm(y + (size_t)h * hd, y + (size_t)h * hd, w, hd, eps);
}

/* ------------------------------------------------------------ swiglu */

typedef struct swiglu_job {
    const kern_ops *ops;
    float *gate;
    const float *up;
    size_t n;
} swiglu_job;

/* Each thread one contiguous range, in whole cache lines (16 floats). */
static void swiglu_task(void *arg, int ith, int nth) {
    const swiglu_job *j = arg;
    size_t per = (j->n / nth + 15) & ~(size_t)15, i0 = per * ith, i1 = i0 + per < j->n ? i0 + per : j->n;
    if (i0 < i1) j->ops->swiglu(j->gate + i0, j->up + i0, (int)(i1 - i0));
}

/* gate = silu(gate) * up over a batch's FFN activations: a prompt's are
 * n_tok * n_ff elements, worth the pool (an exp each costs about what 8
 * multiply-adds of a matrix product do). */
static void swiglu(heed_ctx *c, float *gate, const float *up, size_t n) {
    swiglu_job j = {c->ops, gate, up, n};
    pool_run(c->pool, threads_for(c, n * 8), swiglu_task, &j);
}

/* ------------------------------------------------------------ gelu */

typedef struct act_job {
    float *h;          /* (n_tok, n_ff) gate (geglu) or up (gelu) */
    const float *up;   /* (n_tok, n_ff) geglu's up; NULL for gelu */
    const float *bias; /* (n_ff) gelu's up bias, or NULL */
    size_t n;
    int n_ff;
} act_job;

/* h = gelu(h + bias) (gpt2) or gelu(h) * up (GeGLU), each thread a range of whole cache lines */
static void act_task(void *arg, int ith, int nth) {
    const act_job *j = arg;
    size_t per = (j->n / nth + 15) & ~(size_t)15, i0 = per * ith, i1 = i0 + per < j->n ? i0 + per : j->n;
    for (size_t i = i0; i < i1; i++) {
        float x = j->bias ? j->h[i] + j->bias[i % (size_t)j->n_ff] : j->h[i];
        j->h[i] = j->up ? kern_gelu(x) * j->up[i] : kern_gelu(x);
    }
}

static void gelu_act(heed_ctx *c, float *h, const float *up, const float *bias, size_t n, int n_ff) {
    act_job j = {h, up, bias, n, n_ff};
    pool_run(c->pool, threads_for(c, n * 16), act_task, &j);
}

/* ------------------------------------------------- per-token steps */

/* The steps of a layer that work on each token alone: a prompt's tokens are
 * split across the threads (on one thread they were a serial 4% of a
 * 135M prompt on two cores); one token runs on the calling thread. */
enum { STEP_ATTN_NORM, STEP_QKV, STEP_ADD_FFN_NORM, STEP_ADD };

typedef struct tok_job {
    heed_ctx *c;
    const model_layer *ly;
    int il, pos0, n, step;
} tok_job;

/* out = the model's norm of x (RMSNorm, or LayerNorm with bias b); no weights: a copy */
static void norm(const heed_model *m, float *out, const float *x, const float *w, const float *b) {
    if (!w) memmove(out, x, sizeof(float) * (size_t)m->n_embd);
    else if (m->layer_norm) kern_layernorm(out, x, w, b, m->n_embd, m->rms_eps);
    else kern_rmsnorm(out, x, w, m->n_embd, m->rms_eps);
}

static void token_step(const tok_job *j, int t) {
    heed_ctx *c = j->c;
    const heed_model *m = c->m;
    const model_layer *ly = j->ly;
    const int E = m->n_embd, hd = m->head_dim;
    float *x = c->x + (size_t)t * E, *xb = c->xb + (size_t)t * E;
    switch (j->step) {
    case STEP_ATTN_NORM:
        norm(m, xb, x, ly->attn_norm, ly->attn_norm_b);
        break;
    case STEP_QKV: {
        float *qt = c->q + (size_t)t * c->q_dim, *kt = c->kb + (size_t)t * c->kv_dim;
        float *vt = c->vb + (size_t)t * c->kv_dim;
        add_bias(qt, ly->bq, c->q_dim);
        add_bias(kt, ly->bk, c->kv_dim);
        add_bias(vt, ly->bv, c->kv_dim);
        if (m->qk_norm_full) { /* olmo2: over the whole projection, before the head split */
            kern_rmsnorm(qt, qt, ly->q_norm, c->q_dim, m->rms_eps);
            kern_rmsnorm(kt, kt, ly->k_norm, c->kv_dim, m->rms_eps);
        } else {
            head_norm(qt, ly->q_norm, m->n_head, hd, m->rms_eps);
            head_norm(kt, ly->k_norm, m->n_head_kv, hd, m->rms_eps);
        }
        if (m->n_rot) {
            rope_apply(c, qt, m->n_head, j->pos0 + t, ly->rope_local);
            rope_apply(c, kt, m->n_head_kv, j->pos0 + t, ly->rope_local);
        }
        /* into the head-major cache (the hook reads kb, and only reads it) */
        for (int g = 0; g < m->n_head_kv; g++) {
            memcpy(c->k_cache + kv_offset(c, j->il, g, j->pos0 + t), kt + (size_t)g * hd, hd * sizeof(float));
            memcpy(c->v_cache + kv_offset(c, j->il, g, j->pos0 + t), vt + (size_t)g * hd, hd * sizeof(float));
        }
        break;
    }
    case STEP_ADD_FFN_NORM: /* the attention block's output (+ bias, post-norm) into the residual */
        add_bias(xb, ly->bo, E);
        if (ly->post_attn_norm) kern_rmsnorm(xb, xb, ly->post_attn_norm, E, m->rms_eps);
        for (int i = 0; i < E; i++) x[i] += xb[i];
        norm(m, xb, x, ly->ffn_norm, ly->ffn_norm_b);
        break;
    case STEP_ADD: /* the FFN's output (+ bias, post-norm) into the residual */
        add_bias(xb, ly->b_down, E);
        if (ly->post_ffn_norm) kern_rmsnorm(xb, xb, ly->post_ffn_norm, E, m->rms_eps);
        for (int i = 0; i < E; i++) x[i] += xb[i];
        break;
    }
}

static void tok_task(void *arg, int ith, int nth) {
    const tok_job *j = arg;
    int per = (j->n + nth - 1) / nth, t0 = ith * per, t1 = t0 + per < j->n ? t0 + per : j->n;
    for (int t = t0; t < t1; t++) token_step(j, t);
}

static void per_token(heed_ctx *c, const model_layer *ly, int il, int pos0, int n, int step) {
    tok_job j = {c, ly, il, pos0, n, step};
    pool_run(c->pool, n >= 8 ? c->n_threads : 1, tok_task, &j);
}

/* ------------------------------------------------- mixture of experts */

/* The router: softmax over the experts' logits, the n_used most probable
 * (ties to the lower id), their probabilities renormalised to sum 1 where
 * the model says so. Router logits arrive in moe_probs. */
static void moe_route(heed_ctx *c, int n) {
    const heed_model *m = c->m;
    const int X = m->n_expert, K = m->n_expert_used;
    for (int t = 0; t < n; t++) {
        float *p = c->moe_probs + (size_t)t * X, *w = c->moe_w + (size_t)t * K;
        int32_t *id = c->moe_ids + (size_t)t * K;
        kern_softmax(p, X);
        for (int s = 0; s < K; s++) {
            int best = -1;
            for (int e = 0; e < X; e++) {
                bool taken = false;
                for (int u = 0; u < s && !taken; u++) taken = id[u] == e;
                if (!taken && (best < 0 || p[e] > p[best])) best = e;
            }
            id[s] = best;
            w[s] = p[best];
        }
        if (m->expert_norm) {
            float sum = 0.0f;
            for (int s = 0; s < K; s++) sum += w[s];
            for (int s = 0; s < K; s++) w[s] /= sum;
        }
    }
}

/* xb (the FFN's normed input, n tokens) -> xb = the sum over each token's
 * chosen experts of weight * down(silu(gate x) * up x), slots summed in
 * order. Each expert runs once on the tokens routed to it. */
static void moe_ffn(heed_ctx *c, const model_layer *ly, int il, int pos0, int n) {
    const heed_model *m = c->m;
    const int E = m->n_embd, X = m->n_expert, K = m->n_expert_used, F = m->n_ff_exp;
    matmul(c, c->moe_probs, (size_t)X, &ly->router, c->xb, n);
    moe_route(c, n);
    if (c->hooked && c->hook.observe_moe && (!c->hook.want || c->hook.want(c->hook.user, il))) {
        heed_moe_block mb = {il, pos0, n, X, K, c->moe_ids, c->moe_w, c->moe_probs};
        c->hook.observe_moe(c->hook.user, &mb);
    }
    for (int e = 0; e < X; e++) {
        int cnt = 0;
        for (int r = 0; r < n * K; r++)
            if (c->moe_ids[r] == e) {
                c->moe_rows[cnt] = r;
                memcpy(c->moe_x + (size_t)cnt * E, c->xb + (size_t)(r / K) * E, sizeof(float) * (size_t)E);
                cnt++;
            }
        if (!cnt) continue;
        float *outs[] = {c->hb, c->hb2};
        size_t strides[] = {(size_t)F, (size_t)F};
        const model_mat *ws[] = {&ly->exp_gate[e], &ly->exp_up[e]};
        matmul_n(c, 2, outs, strides, ws, c->moe_x, cnt);
        swiglu(c, c->hb, c->hb2, (size_t)cnt * F);
        matmul(c, c->moe_y, (size_t)E, &ly->exp_down[e], c->hb, cnt);
        for (int i = 0; i < cnt; i++) {
            int r = c->moe_rows[i];
            float w = c->moe_w[r], *o = c->moe_out + (size_t)r * E;
            const float *y = c->moe_y + (size_t)i * E;
            for (int d = 0; d < E; d++) o[d] = y[d] * w;
        }
    }
    for (int t = 0; t < n; t++) {
        float *o = c->xb + (size_t)t * E;
        const float *sl = c->moe_out + (size_t)t * K * E;
        memcpy(o, sl, sizeof(float) * (size_t)E);
        for (int s = 1; s < K; s++)
            for (int d = 0; d < E; d++) o[d] += sl[(size_t)s * E + d];
    }
}

static void forward_layer(heed_ctx *c, int il, int pos0, int n) {
    const heed_model *m = c->m;
    const model_layer *ly = &m->layers[il];
    const int E = m->n_embd, F = m->n_ff;

    per_token(c, ly, il, pos0, n, STEP_ATTN_NORM);
    {
        float *outs[] = {c->q, c->kb, c->vb};
        size_t strides[] = {(size_t)c->q_dim, (size_t)c->kv_dim, (size_t)c->kv_dim};
        const model_mat *ws[] = {&ly->wq, &ly->wk, &ly->wv};
        matmul_n(c, 3, outs, strides, ws, c->xb, n);
    }
    per_token(c, ly, il, pos0, n, STEP_QKV); /* biases, q/k norms, RoPE; k and v into the cache */
    if (c->hooked && c->hook.observe_qk && (!c->hook.want || c->hook.want(c->hook.user, il))) {
        heed_qk_block qb = {il, pos0, n, m->n_head, m->n_head_kv, m->head_dim, c->q, c->kb, c->vb};
        c->hook.observe_qk(c->hook.user, &qb);
    }
    attention(c, il, pos0, n);
    if (c->head_scale) scale_heads(c, il, pos0, n);
    if (c->head_which) replace_heads(c, il, pos0, n);
    if (c->hooked && c->hook.observe_heads && (!c->hook.want || c->hook.want(c->hook.user, il))) {
        heed_head_block hb = {il, pos0, n, m->n_head, m->head_dim, c->ao};
        c->hook.observe_heads(c->hook.user, &hb);
    }
    matmul(c, c->xb, E, &ly->wo, c->ao, n);

    per_token(c, ly, il, pos0, n, STEP_ADD_FFN_NORM); /* residual, then the FFN's norm */
    switch (m->ffn) {
    case FFN_MOE:
        moe_ffn(c, ly, il, pos0, n);
        break;
    case FFN_GELU:
        matmul(c, c->hb, (size_t)F, &ly->w_up, c->xb, n);
        gelu_act(c, c->hb, NULL, ly->b_up, (size_t)n * F, F);
        matmul(c, c->xb, E, &ly->w_down, c->hb, n);
        break;
    case FFN_SWIGLU:
    case FFN_GEGLU: {
        float *outs[] = {c->hb, c->hb2};
        size_t strides[] = {(size_t)F, (size_t)F};
        const model_mat *ws[] = {&ly->w_gate, &ly->w_up};
        matmul_n(c, 2, outs, strides, ws, c->xb, n);
        if (m->ffn == FFN_GEGLU) gelu_act(c, c->hb, c->hb2, NULL, (size_t)n * F, F);
        else swiglu(c, c->hb, c->hb2, (size_t)n * F);
        matmul(c, c->xb, E, &ly->w_down, c->hb, n);
        break;
    }
    }
    per_token(c, ly, il, pos0, n, STEP_ADD);
    for (int e = 0; e < c->n_edits; e++) { /* interventions on the residual stream after this layer */
        const heed_resid_edit *ed = &c->edits[e];
        if (ed->layer != il) continue;
        for (int t = 0; t < n; t++) {
            if (ed->pos >= 0 ? ed->pos != pos0 + t : pos0 + t < c->intervene_from) continue;
            float *x = c->x + (size_t)t * E;
            if (ed->replace) memcpy(x, ed->vec, sizeof(float) * (size_t)E);
            else
                for (int i = 0; i < E; i++) x[i] += ed->alpha * ed->vec[i];
        }
    }

    if (c->hooked && c->hook.observe_resid && (!c->hook.want || c->hook.want(c->hook.user, il))) {
        heed_resid_block rb = {il, pos0, n, E, c->x};
        c->hook.observe_resid(c->hook.user, &rb);
    }
}

/* The final norm, the output matrix and the final soft-cap for n residual
 * rows (xb as scratch). */
static void unembed_rows(heed_ctx *c, const float *x, int n, float *logits) {
    const heed_model *m = c->m;
    for (int i = 0; i < n; i++)
        norm(m, c->xb + (size_t)i * m->n_embd, x + (size_t)i * m->n_embd, m->output_norm, m->output_norm_b);
    matmul(c, logits, (size_t)m->n_vocab, &m->output, c->xb, n);
    if (m->final_softcap > 0.0f) kern_softcap(logits, (int)((size_t)n * m->n_vocab), m->final_softcap);
}

int heed_ctx_unembed(heed_ctx *c, const float *x, float *logits) {
    if (!c || !x || !logits) return HEED_ERR_INVALID_ARG;
    unembed_rows(c, x, 1, logits);
    return HEED_OK;
}

int forward_max_batch(const heed_ctx *c) { return c->n_ub; }

int forward_unembed_rows(heed_ctx *c, const float *x, int n, float *logits) {
    if (!c || !x || !logits || n < 1 || n > c->n_ub) return HEED_ERR_INVALID_ARG;
    unembed_rows(c, x, n, logits);
    return HEED_OK;
}

static void forward_batch(heed_ctx *c, const int32_t *ids, int n, bool want_logits) {
    const heed_model *m = c->m;
    const int E = m->n_embd, pos0 = c->n_past;
    size_t row_bytes = kern_row_bytes(m->tok_embd.type, E);
    for (int t = 0; t < n; t++) {
        float *x = c->x + (size_t)t * E;
        kern_dequant_row(x, (const char *)m->tok_embd.data + (size_t)ids[t] * row_bytes, m->tok_embd.type, E);
        if (m->embd_scale != 1.0f)
            for (int i = 0; i < E; i++) x[i] *= m->embd_scale;
        if (m->pos_embd.data) { /* gpt2: the learned position's row, added (xb as scratch) */
            size_t pb = kern_row_bytes(m->pos_embd.type, E);
            kern_dequant_row(c->xb, (const char *)m->pos_embd.data + (size_t)(pos0 + t) * pb, m->pos_embd.type, E);
            for (int i = 0; i < E; i++) x[i] += c->xb[i];
        }
    }
    for (int il = 0; il < m->n_layer; il++) forward_layer(c, il, pos0, n);
    c->n_past += n;
    if (want_logits) unembed_rows(c, c->x + (size_t)(n - 1) * E, 1, c->logits);
}

int heed_decode(heed_ctx *c, const int32_t *ids, int n) {
    if (!c || n <= 0 || !ids) return HEED_ERR_INVALID_ARG;
    const heed_model *m = c->m;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->n_vocab)
            return ctx_fail(c, HEED_ERR_INVALID_ARG, "token id %d at index %d is outside the vocabulary (0..%d)",
                            ids[i], i, m->n_vocab - 1);
    if (n > c->n_ctx - c->n_past)
        return ctx_fail(c, HEED_ERR_CONTEXT_FULL,
                        "context full: %d tokens after %d exceed the context limit of %d tokens "
                        "(model limit %d)", n, c->n_past, c->n_ctx, m->n_ctx_train);
    for (int done = 0; done < n;) {
        int b = n - done < c->n_ub ? n - done : c->n_ub;
        /* deep in a long prompt, as many rows as the attention buffer holds */
        while (b > 1 && (size_t)c->m->n_head * b * (size_t)(c->n_past + b) > c->att_cap) b--;
        forward_batch(c, ids + done, b, done + b == n);
        done += b;
    }
    return HEED_OK;
}

/* ------------------------------------------------------------ context */

heed_ctx_params heed_ctx_default_params(void) {
    heed_ctx_params p = {.n_ctx = 0, .n_threads = 0};
    return p;
}

static void *zalloc(size_t n, size_t size, bool *ok) {
    void *p = calloc(n ? n : 1, size);
    if (!p) *ok = false;
    return p;
}

/* The sizes heed_ctx_new allocates for n_ctx positions: one plan, so what
 * heed_ctx_bytes reports is what the context takes. */
typedef struct ctx_plan {
    int n_ub;
    size_t q_dim, kv_dim, ff, kv, rope, att, act_row, bytes;
    bool local_rope;
} ctx_plan;

static ctx_plan plan_ctx(const heed_model *m, int n_ctx) {
    ctx_plan p = {0};
    p.q_dim = (size_t)m->n_head * m->head_dim;
    p.kv_dim = (size_t)m->n_head_kv * m->head_dim;
    p.n_ub = n_ctx < MAX_UBATCH ? n_ctx : MAX_UBATCH;
    const size_t U = (size_t)p.n_ub, E = (size_t)m->n_embd;
    p.ff = (size_t)(m->n_ff > m->n_ff_exp ? m->n_ff : m->n_ff_exp);
    size_t max_in = E > p.q_dim ? E : p.q_dim;
    if (p.ff > max_in) max_in = p.ff;
    p.kv = (size_t)m->n_layer * n_ctx * p.kv_dim;
    for (int il = 0; il < m->n_layer; il++) p.local_rope |= m->layers[il].rope_local;
    p.rope = (size_t)n_ctx * (m->n_rot / 2);
    p.att = ATT_BUDGET_BYTES / sizeof(float);
    if (p.att < (size_t)m->n_head * n_ctx) p.att = (size_t)m->n_head * n_ctx;
    if (p.att > (size_t)m->n_head * U * n_ctx) p.att = (size_t)m->n_head * U * n_ctx;
    /* the largest activation format per element is Q8_K (292 bytes per 256) */
    size_t act_bytes = kern_row_bytes(GGML_Q8_K, (int)(max_in / QK_K + 1) * QK_K);
    size_t act_q81 = kern_row_bytes(GGML_Q8_1, (int)(max_in / QK8_1 + 1) * QK8_1);
    p.act_row = act_bytes > act_q81 ? act_bytes : act_q81;
    size_t floats = 2 * p.kv + (p.local_rope ? 4 : 2) * p.rope + 2 * U * E + U * p.q_dim * 2 + 2 * U * p.kv_dim +
                    2 * U * p.ff + p.att + (size_t)m->n_vocab;
    if (m->n_expert)
        floats += U * (size_t)m->n_expert + 2 * U * (size_t)m->n_expert_used + 2 * U * E +
                  U * (size_t)m->n_expert_used * E;
    p.bytes = floats * sizeof(float) + U * p.act_row;
    return p;
}

uint64_t heed_ctx_bytes(const heed_model *m, int n_ctx) {
    if (!m || n_ctx < 1) return 0;
    return plan_ctx(m, n_ctx).bytes;
}

uint64_t heed_mem_available(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

int heed_ctx_fit(const heed_model *m, uint64_t budget, uint64_t per_pos_extra) {
    if (!m) return 0;
    /* the need grows with n_ctx (the attention buffer is bounded): bisect */
    int lo = 0, hi = m->n_ctx_train;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (heed_ctx_bytes(m, mid) + per_pos_extra * (uint64_t)mid <= budget) lo = mid;
        else hi = mid - 1;
    }
    return lo;
}

int heed_ctx_new(const heed_model *m, const heed_ctx_params *params, heed_ctx **out) {
    if (!m || !out) return HEED_ERR_INVALID_ARG;
    *out = NULL;
    if (m->vocab_only) return HEED_ERR_UNSUPPORTED; /* loaded for its vocabulary: no weights */
    heed_ctx_params p = params ? *params : heed_ctx_default_params();
    if (p.n_ctx < 0 || p.n_ctx > m->n_ctx_train || p.n_threads < 0 || p.n_threads > 1024)
        return HEED_ERR_INVALID_ARG;
    int n_ctx = p.n_ctx;
    if (!n_ctx) { /* the model's limit, as far as the memory available allows */
        uint64_t avail = heed_mem_available();
        n_ctx = m->n_ctx_train;
        if (avail) {
            int fit = heed_ctx_fit(m, (uint64_t)(avail * DEFAULT_MEM_SHARE), 0);
            if (fit < n_ctx) n_ctx = fit > 0 ? fit : 1;
        }
    }
    heed_ctx *c = calloc(1, sizeof *c);
    if (!c) return HEED_ERR_NOMEM;
    c->m = m;
    c->ops = kern_ops_best();
    c->n_ctx = n_ctx;
    c->n_threads = p.n_threads ? p.n_threads : pool_n_cpus();
    ctx_plan pl = plan_ctx(m, n_ctx);
    c->q_dim = (int)pl.q_dim;
    c->kv_dim = (int)pl.kv_dim;
    c->n_ub = pl.n_ub;
    c->att_cap = pl.att;

    const size_t U = (size_t)c->n_ub, E = (size_t)m->n_embd, ff = pl.ff;
    bool ok = true;
    c->k_cache = zalloc(pl.kv, sizeof(float), &ok);
    c->v_cache = zalloc(pl.kv, sizeof(float), &ok);
    if (ok) {
        fmap_advise_huge(c->k_cache, pl.kv * sizeof(float));
        fmap_advise_huge(c->v_cache, pl.kv * sizeof(float));
    }
    c->rope_cos = zalloc(pl.rope, sizeof(float), &ok);
    c->rope_sin = zalloc(pl.rope, sizeof(float), &ok);
    if (pl.local_rope) {
        c->rope_cos_local = zalloc(pl.rope, sizeof(float), &ok);
        c->rope_sin_local = zalloc(pl.rope, sizeof(float), &ok);
    }
    c->rules = zalloc((size_t)m->n_layer, sizeof *c->rules, &ok);
    if (m->n_expert) {
        const size_t X = (size_t)m->n_expert, K = (size_t)m->n_expert_used;
        c->moe_probs = zalloc(U * X, sizeof(float), &ok);
        c->moe_ids = zalloc(U * K, sizeof(int32_t), &ok);
        c->moe_w = zalloc(U * K, sizeof(float), &ok);
        c->moe_x = zalloc(U * E, sizeof(float), &ok); /* a token picks an expert at most once */
        c->moe_y = zalloc(U * E, sizeof(float), &ok);
        c->moe_out = zalloc(U * K * E, sizeof(float), &ok);
        c->moe_rows = zalloc(U, sizeof(int), &ok);
    }
    c->x = zalloc(U * E, sizeof(float), &ok);
    c->xb = zalloc(U * E, sizeof(float), &ok);
    c->q = zalloc(U * pl.q_dim, sizeof(float), &ok);
    c->kb = zalloc(U * pl.kv_dim, sizeof(float), &ok);
    c->vb = zalloc(U * pl.kv_dim, sizeof(float), &ok);
    c->ao = zalloc(U * pl.q_dim, sizeof(float), &ok);
    c->hb = zalloc(U * ff, sizeof(float), &ok);
    c->hb2 = zalloc(U * ff, sizeof(float), &ok);
    c->att = zalloc(pl.att, sizeof(float), &ok);
    c->att_mi = zalloc((size_t)m->n_head * U * 2, sizeof(float), &ok);
    c->xq = zalloc(U, pl.act_row, &ok);
    c->logits = zalloc((size_t)m->n_vocab, sizeof(float), &ok);
    c->key_chunk = KEY_CHUNK;
    c->part_chunks = (n_ctx + KEY_CHUNK - 1) / KEY_CHUNK;
    c->part = zalloc((size_t)c->part_chunks * pl.q_dim, sizeof(float), &ok);
    c->pool = ok ? pool_new(c->n_threads) : NULL;
    if (!ok || !c->pool) {
        heed_ctx_free(c);
        return HEED_ERR_NOMEM;
    }
    rope_tables(c);
    for (int il = 0; il < m->n_layer; il++)
        c->rules[il] = (kern_attn_rule){m->attn_scale, m->attn_softcap, m->layers[il].window, NULL, 0};
    *out = c;
    return HEED_OK;
}

void heed_ctx_free(heed_ctx *c) {
    if (!c) return;
    pool_free(c->pool);
    free(c->k_cache); free(c->v_cache);
    free(c->rope_cos); free(c->rope_sin); free(c->rope_cos_local); free(c->rope_sin_local);
    free(c->rules);
    free(c->part);
    free(c->ko);
    free(c->moe_probs); free(c->moe_ids); free(c->moe_w); free(c->moe_x); free(c->moe_y); free(c->moe_out);
    free(c->moe_rows);
    free(c->x); free(c->xb); free(c->q); free(c->kb); free(c->vb); free(c->ao);
    free(c->hb); free(c->hb2); free(c->att); free(c->att_mi); free(c->xq);
    free(c->logits);
    free(c->head_scale);
    free(c->head_which);
    free(c->head_values);
    free(c->edits);
    free(c->edit_vecs);
    free(c);
}

int heed_ctx_rewind(heed_ctx *c, int n_past) { return c ? forward_rewind(c, n_past) : HEED_ERR_INVALID_ARG; }

int heed_ctx_set_intervention_start(heed_ctx *c, int pos) {
    if (!c || pos < 0) return HEED_ERR_INVALID_ARG;
    c->intervene_from = pos;
    return HEED_OK;
}

int heed_ctx_set_head_scale(heed_ctx *c, const float *scale) {
    if (!c) return HEED_ERR_INVALID_ARG;
    if (!scale) {
        free(c->head_scale);
        c->head_scale = NULL;
        return HEED_OK;
    }
    size_t n = (size_t)c->m->n_layer * c->m->n_head;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(scale[i])) return HEED_ERR_INVALID_ARG;
    float *s = c->head_scale ? c->head_scale : malloc(sizeof(float) * n);
    if (!s) return HEED_ERR_NOMEM;
    memcpy(s, scale, sizeof(float) * n);
    c->head_scale = s;
    return HEED_OK;
}

int heed_ctx_set_head_values(heed_ctx *c, const unsigned char *which, const float *values) {
    if (!c) return HEED_ERR_INVALID_ARG;
    free(c->head_which);
    free(c->head_values);
    c->head_which = NULL;
    c->head_values = NULL;
    if (!which) return HEED_OK;
    if (!values) return HEED_ERR_INVALID_ARG;
    const heed_model *m = c->m;
    size_t nh = (size_t)m->n_layer * m->n_head, nv = nh * m->head_dim;
    for (size_t i = 0; i < nh; i++)
        for (int d = 0; which[i] && d < m->head_dim; d++)
            if (!isfinite(values[i * m->head_dim + d])) return HEED_ERR_INVALID_ARG;
    c->head_which = malloc(nh);
    c->head_values = malloc(sizeof(float) * nv);
    if (!c->head_which || !c->head_values) {
        free(c->head_which), free(c->head_values);
        c->head_which = NULL, c->head_values = NULL;
        return HEED_ERR_NOMEM;
    }
    memcpy(c->head_which, which, nh);
    memcpy(c->head_values, values, sizeof(float) * nv);
    return HEED_OK;
}

int heed_ctx_n_ctx(const heed_ctx *c) { return c ? c->n_ctx : 0; }

int heed_ctx_set_resid_edits(heed_ctx *c, const heed_resid_edit *e, int n) {
    if (!c || n < 0 || n > HEED_MAX_RESID_EDITS || (n && !e)) return HEED_ERR_INVALID_ARG;
    const int E = c->m->n_embd;
    for (int i = 0; i < n; i++) {
        if (e[i].layer < 0 || e[i].layer >= c->m->n_layer || e[i].pos < -1 || !e[i].vec || !isfinite(e[i].alpha))
            return HEED_ERR_INVALID_ARG;
        for (int d = 0; d < E; d++)
            if (!isfinite(e[i].vec[d])) return HEED_ERR_INVALID_ARG;
    }
    heed_resid_edit *ed = n ? malloc(sizeof *ed * (size_t)n) : NULL;
    float *v = n ? malloc(sizeof(float) * (size_t)n * E) : NULL;
    if (n && (!ed || !v)) {
        free(ed), free(v);
        return HEED_ERR_NOMEM;
    }
    for (int i = 0; i < n; i++) {
        memcpy(v + (size_t)i * E, e[i].vec, sizeof(float) * (size_t)E);
        ed[i] = e[i];
        ed[i].vec = v + (size_t)i * E;
    }
    free(c->edits), free(c->edit_vecs);
    c->edits = ed, c->edit_vecs = v, c->n_edits = n;
    return HEED_OK;
}

int heed_ctx_set_knockouts(heed_ctx *c, const heed_knockout *k, int n) {
    if (!c) return HEED_ERR_INVALID_ARG;
    return kern_knockouts_set(c->rules, c->m->n_layer, c->m->n_head, k, n, &c->ko);
}

int forward_rewind(heed_ctx *c, int n_past) {
    if (!c || n_past < 0 || n_past > c->n_past) return HEED_ERR_INVALID_ARG;
    c->n_past = n_past;
    return HEED_OK;
}

int forward_set_key_chunk(heed_ctx *c, int keys) {
    if (!c || keys < 0) return HEED_ERR_INVALID_ARG;
    int chunks = keys ? (c->n_ctx + keys - 1) / keys : 0;
    if (chunks > c->part_chunks) {
        float *p = realloc(c->part, sizeof(float) * (size_t)chunks * c->q_dim);
        if (!p) return HEED_ERR_NOMEM;
        c->part = p;
        c->part_chunks = chunks;
    }
    c->key_chunk = keys;
    c->split_forced = keys > 0;
    return HEED_OK;
}

pool *forward_pool(heed_ctx *c) { return c->pool; }
int heed_ctx_n_past(const heed_ctx *c) { return c ? c->n_past : 0; }
void heed_ctx_reset(heed_ctx *c) { if (c) c->n_past = 0; }
const char *heed_ctx_error(const heed_ctx *c) { return c ? c->err : "no context"; }
const float *heed_ctx_logits(const heed_ctx *c) { return c ? c->logits : NULL; }

void heed_ctx_set_attn_hook(heed_ctx *c, const heed_attn_hook *hook) {
    if (!c) return;
    c->hooked = hook && (hook->observe || hook->observe_qk || hook->observe_resid || hook->observe_moe ||
                         hook->observe_heads);
    if (c->hooked) c->hook = *hook;
    else memset(&c->hook, 0, sizeof c->hook);
}
