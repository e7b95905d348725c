/*
 * limit - the named limits on counts read from files: model geometry (GGUF
 * keys, config.json) and run files (docs/RUN_FORMAT.md).
 *
 * One table, so that what the model loader accepts a run file can hold: a
 * model that loads records runs that save and load back. Every limit is far
 * above any real model (the largest open ones have about 128 heads, heads
 * of up to 256 dims, under 200 layers, vocabularies of about 256k) and low
 * enough that products of them cannot overflow 64 bits (a run's full tier
 * is tri(tokens) x layers x heads floats: 2^39 x 2^10 x 2^10 x 4 bytes).
 *
 * Header only; no code depends on more than the numbers.
 */
#ifndef HEED_LIMIT_H
#define HEED_LIMIT_H

/* Geometry: the model loader refuses more, a run file holds at most this. */
#define LIMIT_MAX_LAYER 1024        /* layers */
#define LIMIT_MAX_HEAD 1024         /* query heads (KV heads divide them) */
#define LIMIT_MAX_HEAD_DIM 4096     /* dims of one head */
#define LIMIT_MAX_VOCAB (1 << 24)   /* tokens in a vocabulary */
#define LIMIT_MAX_DIM (1 << 20)     /* a model's widths: n_embd, n_ff, n_head x head_dim */
#define LIMIT_MAX_CTX (1 << 24)     /* a model's training context (context_length) */

/* Runs. */
#define LIMIT_MAX_TOKENS (1 << 20)  /* prompt + output tokens of a run; also its n_ctx and n_predict */
#define LIMIT_MAX_CAND 256          /* candidates kept per step */
#define LIMIT_MAX_LENS 64           /* logit-lens tokens per layer and step */
#define LIMIT_MAX_ATTN_TOPK 4096    /* top sources kept per query, layer and head */
#define LIMIT_MAX_EXPERTS 512       /* experts of a mixture-of-experts layer */
#define LIMIT_MAX_KNOCKOUTS 4096    /* attention knockouts of one run (heed.h's HEED_MAX_KNOCKOUTS) */
#define LIMIT_MAX_STR (1u << 20)    /* bytes of a string in a run file (model name, prompt, label) */

#endif
