/*
 * model - a loaded model: hyperparameters and weights bound from a GGUF file.
 *
 * model.c reads the architecture keys, checks every tensor's presence, type
 * and shape against the geometry, and keeps pointers into the mapping for the
 * matrices (no copy) and small owned f32 copies of the 1-D vectors (norms,
 * biases, rope factors), so the forward pass reads one layout whatever the
 * file stored. It knows nothing of contexts, kernels or attention.
 *
 * Ownership: heed_model owns the gguf_file (the mapping), the vocabulary and
 * the vector copies. Threads: read-only after heed_model_load.
 */
#ifndef HEED_MODEL_H
#define HEED_MODEL_H

#include <stdbool.h>

#include "gguf.h"
#include "heed.h"
#include "tok.h"

enum model_arch { ARCH_LLAMA, ARCH_QWEN2, ARCH_QWEN3 };

/* A weight matrix: n_out rows of n_in elements of `type`, in the mapping. */
typedef struct model_mat {
    int type;
    const void *data;
    int n_in, n_out;
} model_mat;

typedef struct model_layer {
    float *attn_norm;          /* (n_embd) */
    model_mat wq, wk, wv, wo;  /* q: n_embd -> n_head*head_dim, k/v: -> n_head_kv*head_dim, o: back */
    float *bq, *bk, *bv;       /* qwen2 projection biases, else NULL */
    float *q_norm, *k_norm;    /* qwen3 per-head RMSNorm weights (head_dim), else NULL */
    float *ffn_norm;           /* (n_embd) */
    model_mat w_gate, w_up;    /* n_embd -> n_ff */
    model_mat w_down;          /* n_ff -> n_embd */
} model_layer;

struct heed_model {
    gguf_file *gguf;
    tok_vocab *vocab;
    char *path;
    enum model_arch arch;
    const char *arch_name;
    char *name;

    int n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx_train;
    int n_rot;           /* rotated dims per head (rope.dimension_count) */
    bool rope_neox;      /* pairs (i, i + n_rot/2) instead of (2i, 2i+1) */
    float rope_base;
    float rope_freq_scale; /* linear scaling: 1 / factor */
    float *rope_freqs;   /* (n_rot/2) llama3 frequency divisors, else NULL */
    float rms_eps;

    model_mat tok_embd;  /* n_vocab rows of n_embd */
    float *output_norm;  /* (n_embd) */
    model_mat output;    /* n_embd -> n_vocab; equals tok_embd when tied */
    bool tied_output;
    model_layer *layers; /* (n_layer) */
};

#endif
