/*
 * run - recordings of a generation (heed_run): the module's internal header.
 *
 * The module is four files, one concern each:
 *   rec.c         the recorder: the attention hook's user, per-step
 *                 candidates, the residuals (or the eager logit lens);
 *   run.c         the run object: info, tokens, steps, the logit lens, and
 *                 the views over a run (rows, columns, step view, edges,
 *                 statistics, head types, importance, spans);
 *   run_file.c    the run file (docs/RUN_FORMAT.md): write and read, to a
 *                 path or a stream, every section checked;
 *   run_export.c  .npy / .npz / JSON exports.
 *
 * A heed_run owns everything it holds: token ids and labels, steps, logit
 * lens, and an astore with the attention tiers. Loading a run needs no
 * model: exact rows are recomputed from the stored q and k. The run creates
 * its view thread pool on first use, so views take a non-const run and one
 * thread at a time may use it.
 *
 * Everything below is shared by those files; run_crc32, run_fnv1a and
 * run_npy_header also by the tests.
 */
#ifndef HEED_RUN_H
#define HEED_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "astore.h"
#include "attn.h"
#include "heed.h"
#include "limit.h"
#include "pool.h"

#define RUN_MAGIC "HEEDRUN\0"
#define RUN_VERSION 1u

/* Residual rows are unembedded LENS_MAX_ROWS at a time at most (the output
 * matrix is read once for them), always in whole tiles of LENS_TILE rows
 * (the kernels' token tile; a batch is padded with copies of its last row),
 * so every row goes through the tile kernels, whose rows are computed
 * independently: a row's logits do not depend on the rows beside it, and
 * the eager lens (one step at a time) equals the lazy one (many steps per
 * batch) bit for bit. */
#define LENS_TILE 4
#define LENS_MAX_ROWS 64

typedef struct run_step {
    int32_t id;
    float prob, logprob, entropy;
} run_step;

struct heed_run {
    char *model_file, *model_arch, *model_name, *prompt_text;
    uint64_t model_size, meta_hash;
    int n_layer, n_head, n_head_kv, head_dim, n_embd, n_vocab;
    int32_t bos, eos, eot;
    heed_sampler_params sampler;
    int n_predict, n_ctx, n_threads;
    int n_cand, lens_k;
    bool eog;
    int n_prompt, n_output, cap_tok;
    int32_t *ids;     /* (cap_tok) prompt then output */
    char **labels;    /* (cap_tok) display labels */
    run_step *steps;  /* (cap_tok) one per output */
    heed_candidate *cand; /* (cap_tok, n_cand) */
    int32_t *lens_id; /* (cap_tok, n_layer, lens_k) */
    float *lens_p;    /* (cap_tok, n_layer, lens_k) */
    uint8_t *lens_ready; /* (cap_tok) 1: step t's lens is in lens_id / lens_p */
    float *resid;     /* (cap_tok, n_layer, n_embd) residual after each layer at the query of step t,
                       * for a lens computed on demand; NULL when every lens was computed eagerly */
    bool lens_lazy;   /* recording keeps residuals instead of computing the lens */
    float *head_scale; /* (n_layer, n_head) the intervention the run was made under, or NULL: none */
    unsigned char *head_which; /* (n_layer, n_head) heads whose output was replaced (mean ablation), or NULL */
    float *head_values;        /* (n_layer, n_head, head_dim) their values */
    heed_resid_edit *edits;    /* (n_edits) residual edits, vectors in edit_vecs (n_edits, n_embd) */
    float *edit_vecs;
    int n_edits;
    /* mixture of experts: the routing of every position fed (n_expert 0: a dense model) */
    int n_expert, n_expert_used;
    int moe_n, moe_cap;  /* positions routed; capacity */
    int32_t *moe_ids;    /* (moe_cap, n_layer, n_expert_used) chosen experts, best first */
    float *moe_w;        /* (moe_cap, n_layer, n_expert_used) their weights */
    /* value-weighted attention: |W_O^h v_p| of every position p's value in
     * every head h (heed_measure HEED_MEASURE_VALUE), or NULL: not recorded */
    int vn_n, vn_cap;    /* positions done; capacity */
    int intervene_from;  /* the interventions applied from this position on (0: all) */
    float *vnorm;        /* (vn_cap, n_layer, n_head) */
    astore st;
    const kern_ops *ops; /* the kernels views use, chosen on first use (kern_ops_best asks the CPU each time) */
    pool *pool;       /* views' threads, made on first use */
    bool pool_borrowed; /* while recording: the context's pool (forward.h) */
};

/* Writes the message (when err has room) and returns rc. */
__attribute__((format(printf, 4, 5))) int run_fail(char *err, size_t n, int rc, const char *fmt, ...);

/* CRC-32 (IEEE 802.3, reflected, as zip and PNG use) of n bytes, continuing
 * from crc (start with 0). run_crc32 builds its table each call; readers and
 * writers of many pieces keep one (run_crc_table, on their stack: no global
 * state) for run_crc_update. */
uint32_t run_crc32(uint32_t crc, const void *data, size_t n);
void run_crc_table(uint32_t table[256]);
uint32_t run_crc_update(const uint32_t table[256], uint32_t crc, const void *data, size_t n);

/* FNV-1a 64 of n bytes, continuing from h (start with RUN_FNV_INIT). */
#define RUN_FNV_INIT 0xcbf29ce484222325ull
uint64_t run_fnv1a(uint64_t h, const void *data, size_t n);

/* FNV-1a over every metadata key and value of the model as heed prints them
 * (arrays shortened), each followed by a NUL: the run's meta_hash. */
uint64_t run_meta_hash(const heed_model *m);

/* Scratch of run_lens_steps for rows at a time (run_lens_rows(ctx)). */
typedef struct run_lens_scratch {
    int rows;
    float *x;            /* (rows, n_embd) */
    float *logits;       /* (rows, n_vocab) */
    heed_candidate *tmp; /* (rows, lens_k + 1) each row's top-k, rows on several threads */
    int *step, *layer;   /* (rows) where each row's result goes */
} run_lens_scratch;

/* Rows per batch with ctx: LENS_MAX_ROWS, or the context's batch size, in
 * whole tiles. */
int run_lens_rows(heed_ctx *ctx);
int run_lens_scratch_init(run_lens_scratch *s, const heed_run *r, int rows);
void run_lens_scratch_free(run_lens_scratch *s);
/* The lens of steps ts[0..n_ts-1] from their residuals (resid[i]: n_layer
 * rows of n_embd): one unembedding per layer and step, batched as above,
 * the top lens_k tokens with their probabilities. The one function both
 * the eager (recorder) and the lazy (heed_run_lens_compute) lens go
 * through. */
void run_lens_steps(heed_run *r, heed_ctx *ctx, const int *ts, const float *const *resid, int n_ts,
                    run_lens_scratch *s);

/* The views' source over the run's store, making its thread pool on first
 * use. HEED_OK or HEED_ERR_NOMEM. */
int run_src(heed_run *r, attn_src *src);

/* The .npy v1.0 header of an array (magic, version, length, dict padded to
 * 64 bytes). Returns its length (<= size) or 0 when it does not fit. */
size_t run_npy_header(const heed_array *a, char *buf, size_t size);

#endif
