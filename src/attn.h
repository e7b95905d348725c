/*
 * attn - attention analysis: aggregation over heads and layers, and the
 * statistics of docs/ANALYSIS.md (step view, edges, entropy, distance bands,
 * fingerprint, zone, head types, spans).
 *
 * Aggregation reads exact rows from an astore (recomputed from q/k with SIMD
 * kernels, split over a thread pool); everything else is pure functions of
 * rows, so the tests drive them with hand-made patterns. Nothing here knows
 * files or the model.
 */
#ifndef HEED_ATTN_H
#define HEED_ATTN_H

#include "astore.h"
#include "heed.h"
#include "kern.h"
#include "pool.h"

/* Where rows come from. pool may be NULL (one thread). */
typedef struct attn_src {
    const astore *st;
    const kern_ops *ops;
    pool *pool;
    const float *vnorm; /* (n_pos, n_layer, n_head) value norms for HEED_MEASURE_VALUE, or NULL: none */
} attn_src;

/* Epsilon of the separate normalizations (the original visualizer's). */
#define ATTN_EPS 1e-8f
#define ATTN_LOCAL_MAX 7   /* distance <= 7: local */
#define ATTN_MID_MAX 255   /* 8 .. 255: mid; beyond: long */

/* Aggregated row of query pos over the selection: out[0..pos].
 * HEED_OK, HEED_ERR_INVALID_ARG, HEED_ERR_UNSUPPORTED, HEED_ERR_NOMEM. */
int attn_agg_row(const attn_src *src, const heed_attn_sel *sel, int pos, float *out);

/* Calls fn(user, ith, q, row) for each query q in q0..q1-1 with its
 * aggregated row, queries split over the pool's threads (ith = thread). */
typedef void (*attn_row_fn)(void *user, int ith, int q, const float *row);
int attn_agg_rows(const attn_src *src, const heed_attn_sel *sel, int q0, int q1, attn_row_fn fn, void *user);
/* The aggregated column of key: out[q - key] = attn_agg_row's entry key of
 * query q, for q = key .. n_pos-1, bit for bit, from the rows' statistics
 * (astore_col) without computing the rows. HEED_ERR_UNSUPPORTED when the
 * store keeps no statistics or a selected layer has knockouts (then
 * attn_agg_rows, row by row). */
int attn_agg_col(const attn_src *src, const heed_attn_sel *sel, int key, float *out);
/* A window of the aggregated matrix pooled into cells of bq queries x bk
 * keys: cell[r * cols + c] = the max (max) or the mean over the entries
 * with key <= query of the queries q0 + r*bq .. and keys k0 + c*bk .. (the
 * last row and column may be short; rows = ceil((q1-q0)/bq), cols
 * likewise). Entries as attn_agg_row makes them; a sum takes them query by
 * query, keys in order, in float, then is divided by its count. One
 * (layer, head) with row statistics: scored in blocks against chunks of
 * keys and pooled without forming rows. HEED_ERR_UNSUPPORTED without an
 * exact tier. */
int attn_agg_pool(const attn_src *src, const heed_attn_sel *sel, int q0, int q1, int k0, int k1, int bq, int bk,
                  bool max, float *cell);
/* Threads attn_agg_rows uses (for per-thread accumulators). */
int attn_n_threads(const attn_src *src);

/* ---- pure statistics of one row p[0..pos] */
void attn_row_stats(const float *p, int pos, heed_token_stats *out);
heed_zone attn_zone(float local, float mid, float far);

/* The step view of docs/ANALYSIS.md. row has n_prompt + t entries; drop[k]
 * (NULL: none) removes prompt source k. */
void attn_step_view(const float *row, int n_prompt, int t, const bool *drop, float *in, float *out,
                    float *in_mass, float *out_mass);

/* Edges of a row of n entries (see heed_run_edges). */
int attn_edges(const float *row, int n, float threshold, int top_k, heed_edge *out, int n_max);

/* Head-type scores accumulated over rows of one head. */
typedef struct attn_head_acc {
    double prev, sink, local, induction;
    long n, n_ind;
} attn_head_acc;

/* ids: token ids of positions 0..pos (for induction: the earlier
 * occurrences of ids[pos]). */
void attn_head_add(attn_head_acc *a, const float *p, int pos, const int32_t *ids);
void attn_head_finish(const attn_head_acc *a, heed_head_type *out);

/* Spans from display labels (see heed_run_spans). */
int attn_spans(const char *const *labels, int n, heed_span_level level, heed_span *out, int n_max);

#endif
