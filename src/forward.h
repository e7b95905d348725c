/*
 * forward.h - what the library's other modules may know of a context beyond
 * heed.h.
 */
#ifndef HEED_FORWARD_H
#define HEED_FORWARD_H

#include "heed.h"
#include "pool.h"

/* The context's thread pool. It is idle while the attention hook runs and
 * between heed_decode calls, so the recorder borrows it for its summaries
 * and live views instead of starting a second pool on the same cores. */
pool *forward_pool(heed_ctx *c);

/* The most rows one forward batch (and forward_unembed_rows) takes. */
int forward_max_batch(const heed_ctx *c);
/* logits (n, n_vocab) = output . rmsnorm(x) for n residual rows (n_embd
 * each), n <= forward_max_batch: the logit lens, the matrix read once for n
 * rows. Uses the context's scratch, so not inside heed_decode. A row's
 * logits depend on n (the kernels tile rows), not on the thread count.
 * HEED_OK or HEED_ERR_INVALID_ARG. */
int forward_unembed_rows(heed_ctx *c, const float *x, int n, float *logits);

/* Forgets the positions from n_past on (n_past <= heed_ctx_n_past): the
 * next heed_decode continues there, overwriting them. For benchmarks that
 * decode at one depth several times after one prompt. */
int forward_rewind(heed_ctx *c, int n_past);

/* Keys per chunk of a split decode row (default 512, for models with few
 * KV heads; 0: never split; set: split every model's long rows), for tests
 * that check the split against the whole row on short contexts and
 * benchmarks that compare them.
 * HEED_OK, HEED_ERR_INVALID_ARG or HEED_ERR_NOMEM. */
int forward_set_key_chunk(heed_ctx *c, int keys);

#endif
