/*
 * astore - attention storage in tiers, fed by the attention hook.
 *
 *   (a) exact on demand: the post-RoPE queries and keys of every layer (f32).
 *       Any row is recomputed with the forward pass's own kernels
 *       (ops->attn_scores, ops->softmax) in the same order, so it equals the
 *       probabilities generation used bit for bit (tests/test_attn.c
 *       asserts it on every kernel table).
 *   (b) compact summaries: the top-k sources of every (query, layer, head)
 *       as u32 position + fp16 weight, and the per-layer head-mean rows in
 *       fp16; made while generating (a store without tier (a)), or from the
 *       exact rows afterwards (astore_summarize) when they are wanted.
 *   (c) full f32 probabilities, kept only while they fit under a byte limit.
 *
 * Every array is position-major (all layers of query position p, then p+1),
 * so generation only appends: arrays are reserved for the planned length
 * (astore_plan) or grow by doubling, and a loaded run has exactly the bytes
 * of the file. Row p of a triangular array starts at
 * tri(p) = p(p+1)/2 times the per-row multiplier. Keys are the exception:
 * recomputing a row streams every key of one (layer, KV head), so each of
 * those gets its own contiguous array (a position-major k would put every
 * key on its own page: 3x slower rows at 4,096 positions).
 *
 *   q     (n_pos, n_layer, n_head * head_dim)      f32
 *   k     one array per (layer, KV head): (n_pos, head_dim) f32
 *   tk_pos(n_pos, n_layer, n_head, top_k)          u32; UINT32_MAX pads rows shorter than top_k
 *   tk_w  (n_pos, n_layer, n_head, top_k)          fp16 (IEEE half bits)
 *   hmean tri rows: hmean[tri(p) * n_layer + l * (p + 1) + key]        fp16
 *   full  tri rows: full[tri(p) * n_layer * n_head + (l * n_head + h) * (p + 1) + key]   f32
 *   mi    (n_pos, n_layer, n_head, 2)              f32: each exact row's softmax statistics (the
 *         max score, the reciprocal sum), as the forward pass computed them; with tier (a), from
 *         blocks that carry them (heed_attn_block.row_mi): any entry of a row, so a column, follows
 *         from its score alone (astore_col)
 *
 * Not here: file I/O (run.c), analysis (attn.c). The store is owned by one
 * recorder or run and used by one thread at a time (astore_add_probs may
 * fan out over a pool); astore_row only reads the store and may be called
 * from several threads at once.
 */
#ifndef HEED_ASTORE_H
#define HEED_ASTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "heed.h"
#include "kern.h"
#include "limit.h"
#include "pool.h"

#define ASTORE_TK_NONE UINT32_MAX
#define ASTORE_TOPK_MAX LIMIT_MAX_ATTN_TOPK /* largest top_k a store keeps */

typedef struct astore_params {
    int top_k;           /* sources kept per (query, layer, head); 0: no top-k tier */
    bool keep_qk;        /* tier (a) */
    bool keep_head_mean; /* per-layer fp16 head-mean rows */
    size_t full_limit;   /* bytes allowed for tier (c); 0: never */
    const char *spill_dir; /* tier (a) in file-backed mappings in this folder (fmap_spill), not in
                            * anonymous memory, once it is planned or grown to spill_min bytes or more;
                            * NULL: memory. A mapping that fails falls back to memory. */
    size_t spill_min;
} astore_params;

/* The recorder's spill_min: below it, file-backed pages would only cost page faults. */
#define ASTORE_SPILL_MIN ((size_t)256 << 20)

typedef struct astore {
    int n_layer, n_head, n_head_kv, head_dim;
    int q_dim, kv_dim;
    int top_k;
    bool has_qk, has_topk, has_hmean, has_full;
    bool has_mi;      /* mi holds every position's row statistics (tier (a) only; astore_init
                       * leaves it off, a recorder turns it on before the first block) */
    size_t full_limit;
    int n_pos;      /* query positions complete in every layer */
    int cap;        /* positions the arrays can hold */
    float *q;       /* (cap, n_layer, q_dim) */
    float **k;      /* (n_layer * n_head_kv) arrays of (cap, head_dim) */
    uint32_t *tk_pos; /* (cap, n_layer, n_head, top_k) */
    uint16_t *tk_w;   /* (cap, n_layer, n_head, top_k) fp16 */
    uint16_t *hmean;  /* tri(cap) * n_layer fp16 */
    float *full;      /* tri(cap) * n_layer * n_head f32 */
    float *mi;        /* (cap, n_layer, n_head, 2) f32 */
    int full_cap;     /* positions tier (c) can hold (its own doubling, capped by full_limit) */
    float *acc;       /* head-mean scratch: acc_cap floats, kept between blocks */
    size_t acc_cap;
    bool failed;      /* an allocation failed inside a hook; the recording is invalid */
    kern_attn_rule *rules; /* (n_layer) how each layer's rows come from q and k (kern.h) */
    kern_knockout *ko;     /* the knockouts the rules point into, or NULL */
    heed_knockout *ko_list; /* (n_ko_list) as given, for the run file and exports */
    int n_ko_list;
    char *spill_dir;  /* astore_params.spill_dir, copied; NULL: tier (a) in memory */
    size_t spill_min;
    size_t q_map;     /* bytes of q's file-backed mapping; 0: q is malloc'd */
    size_t *k_map;    /* (n_layer * n_head_kv) the same for each k array */
} astore;

static inline size_t astore_tri(size_t p) { return p * (p + 1) / 2; }

/* The rule of a model without scale, cap or window of its own: q.k / sqrt(head_dim), computed
 * as the forward pass computes it, so rows match bit for bit. */
static inline kern_attn_rule astore_default_rule(int head_dim) {
    return (kern_attn_rule){1.0f / sqrtf((float)head_dim), 0.0f, 0, NULL, 0};
}

/* Sets geometry and tiers; allocates only the key array table. HEED_OK,
 * HEED_ERR_INVALID_ARG or HEED_ERR_NOMEM. */
int astore_init(astore *s, int n_layer, int n_head, int n_head_kv, int head_dim, const astore_params *p);
void astore_free(astore *s);
/* Layer `layer`'s attention rule (astore_init sets 1/sqrt(head_dim), no
 * cap, no window): the model's, so recomputed rows are the ones it used. */
int astore_set_rule(astore *s, int layer, kern_attn_rule rule);
/* The knockouts the run was made under (heed_ctx_set_knockouts), applied
 * to every recomputed row; copied. Same returns as heed_ctx_set_knockouts. */
int astore_set_knockouts(astore *s, const heed_knockout *k, int n);
/* true when every layer has the default rule (knockouts aside) */
bool astore_rules_default(const astore *s);

/* Makes room for positions 0..n_pos-1 in every tier kept. Tier (c) is dropped
 * (freed, has_full = false) when it would pass full_limit. HEED_OK or
 * HEED_ERR_NOMEM. */
int astore_reserve(astore *s, int n_pos);

/* A recording's plan: room for the n_pos positions it expects to reach
 * (prompt plus tokens to generate) is made at once, in one allocation per
 * array, so generating never grows (copies) one. Tier (c) gets what its
 * limit allows and is never dropped here: a run that ends early keeps it.
 * n_pos <= 0 does nothing. HEED_OK or HEED_ERR_NOMEM (the store stays
 * usable and grows as it goes). */
int astore_plan(astore *s, int n_pos);

/* Positions 0..n-1 of src's exact tier (k, and q when with_q) into dst,
 * which holds nothing yet and keeps only that tier (a recording that
 * continues another's prefix); n_pos becomes n. Without with_q the q rows
 * stay to copy (astore_copy_q_prefix) before any row older than the newest
 * is read. HEED_OK, HEED_ERR_UNSUPPORTED (another tier, another geometry),
 * HEED_ERR_INVALID_ARG, HEED_ERR_NOMEM. */
int astore_copy_prefix(astore *dst, const astore *src, int n, bool with_q);
/* The q rows of positions 0..n-1 (room made by astore_copy_prefix). */
void astore_copy_q_prefix(astore *dst, const astore *src, int n);

/* Hook feeders (see heed_attn_hook). Allocation failures set s->failed.
 * The summaries of a probability block are split over pool p (NULL: this
 * thread) when the block is large enough to repay waking its workers (a
 * prompt, long rows); a decode step's block is done on this thread. The
 * split is by (query, head) and query, each written by one thread, so the
 * store is the same bit for bit on any number of threads. */
void astore_add_qk(astore *s, const heed_qk_block *b, pool *p);
void astore_add_probs(astore *s, const heed_attn_block *b, pool *p);

/* Exact row of (layer, head) at query position pos: out[0..pos], recomputed
 * from q and k (has_qk) with `ops`, else copied from tier (c). Returns
 * HEED_OK, HEED_ERR_INVALID_ARG (out of range) or HEED_ERR_UNSUPPORTED (no
 * exact tier). Thread-safe. */
int astore_row(const astore *s, const kern_ops *ops, int layer, int head, int pos, float *out);

/* The summary tiers (top_k sources, 0: none; head-mean rows) of a store
 * that has an exact tier, computed from its rows afterwards: *out becomes a
 * store holding only those tiers, for src's n_pos positions. The rows come
 * from astore_row and go through the hook's own reduction
 * (astore_add_probs), so the result equals summaries made while generating
 * bit for bit. Rows are recomputed over pool p (NULL: this thread). HEED_OK,
 * HEED_ERR_UNSUPPORTED (no exact tier), HEED_ERR_INVALID_ARG or
 * HEED_ERR_NOMEM; on failure *out holds nothing. */
int astore_summarize(const astore *src, const kern_ops *ops, pool *p, int top_k, bool head_mean, astore *out);

/* Bytes of attention data held (the n_pos used, not the capacity). */
/* The rows of query pos for n (<= KERN_ATTN_BLOCK) heads of one layer that
 * share a KV head, each equal bit for bit to astore_row's: the keys are
 * read once for all of them (attn_scores_multi). HEED_ERR_INVALID_ARG when
 * the heads do not share a KV head. */
int astore_rows(const astore *s, const kern_ops *ops, int layer, const int *heads, int n, int pos, float *const *out);
/* Column `key` of one (layer, head), queries q0 .. q1-1 (key <= q0):
 * out[i - q0] = the entry of key in query i's row, equal bit for bit to
 * astore_row's (its score by the same kernel, q and k swapped in the
 * symmetric dot, then softmax_apply with the row's statistics). mi is
 * scratch of 2 * (q1 - q0) floats. HEED_ERR_UNSUPPORTED when the store
 * keeps no statistics or the layer has knockouts (astore_row then). */
int astore_col(const astore *s, const kern_ops *ops, int layer, int head, int key, int q0, int q1, float *out,
               float *mi);
size_t astore_bytes(const astore *s);

/* Top-k selection of one row: writes the min(k, n) heaviest entries sorted
 * by weight descending (ties, -0 == +0 included: lower position first) and
 * returns their count; NaNs are skipped, so fewer when the row has them.
 * astore_topk is the recorder's hot path (k above ASTORE_TOPK_MAX falls
 * back to the reference); astore_topk_ref is the plain heap it must equal
 * entry for entry, exposed for the tests. */
int astore_topk(const float *row, int n, int k, uint32_t *pos, float *w);
int astore_topk_ref(const float *row, int n, int k, uint32_t *pos, float *w);

/* kern_f32_to_f16, bit for bit (NaN payloads included), without branches:
 * the summary tiers convert every weight they keep, and attention weights
 * straddle the half's normal/subnormal edge, where kern's branches
 * mispredict. The method of the FP16 library (Maratyszcza): float addition
 * does the rounding. Exposed for the tests. */
uint16_t astore_f16(float f);

#endif
