/*
 * model - a loaded model: hyperparameters and weights bound from a GGUF file.
 *
 * model.c reads the architecture keys, checks every tensor's presence, type
 * and shape against the geometry, and keeps pointers into the mapping for the
 * matrices (no copy) and small owned f32 copies of the 1-D vectors (norms,
 * biases, rope factors), so the forward pass reads one layout whatever the
 * file stored. It knows nothing of contexts, kernels or attention.
 *
 * A model comes from a GGUF file (model.c) or a Hugging Face checkpoint
 * folder (hf.c: config.json + safetensors). Both describe their tensors as a
 * model_tensor, so one set of checks (model_bind_weights) binds either.
 *
 * Ownership: heed_model owns the gguf_file or the hf_model (the mappings),
 * the vocabulary and the vector copies. Threads: read-only after
 * heed_model_load.
 */
#ifndef HEED_MODEL_H
#define HEED_MODEL_H

#include <pthread.h>
#include <stdbool.h>

#include "gguf.h"
#include "heed.h"
#include "limit.h"
#include "tok.h"

enum model_arch {
    ARCH_LLAMA, ARCH_QWEN2, ARCH_QWEN3, ARCH_GPT2, ARCH_GEMMA2, ARCH_GEMMA3, ARCH_PHI3, ARCH_OLMO2, ARCH_QWEN3MOE
};

/* The feed-forward block: down(silu(gate) * up), down(gelu(gate) * up),
 * down(gelu(up)) (gpt2, with biases), or routed experts of SwiGLU (moe). */
enum model_ffn { FFN_SWIGLU, FFN_GEGLU, FFN_GELU, FFN_MOE };

/* Limits of a mixture of experts, read from a file. */
#define MODEL_MAX_EXPERTS LIMIT_MAX_EXPERTS

/* Named limits for hyperparameters read from a file (GGUF keys, config.json)
 * are those of src/limit.h, which the run file shares: a model that loads
 * records runs that load back. These names are the loaders' spellings. */
#define MODEL_MAX_LAYERS LIMIT_MAX_LAYER
#define MODEL_MAX_DIM LIMIT_MAX_DIM
#define MODEL_MAX_HEADS LIMIT_MAX_HEAD
#define MODEL_MAX_HEAD_DIM LIMIT_MAX_HEAD_DIM
#define MODEL_MAX_CTX LIMIT_MAX_CTX
#define MODEL_MAX_VOCAB LIMIT_MAX_VOCAB

/* Weights at least this large are prefaulted with a progress bar when asked. */
#define MODEL_PROGRESS_MIN_BYTES (64ull << 20)

/* A checkpoint folder's files and config (hf.c); NULL for GGUF models. */
typedef struct hf_model hf_model;

/* A weight matrix: n_out rows of n_in elements of `type`, in the mapping. */
typedef struct model_mat {
    int type;
    const void *data;
    int n_in, n_out;
} model_mat;

/*
 * One layer. A NULL vector is a step the architecture does not have: no
 * pre-norm (olmo2), no bias, no post-norm (all but gemma2/3 and olmo2).
 * Fused matrices in the file (gpt2 and phi3's attn_qkv, phi3's gate+up
 * ffn_up) are bound as views of their row ranges, so the forward pass sees
 * one layout.
 */
typedef struct model_layer {
    float *attn_norm, *attn_norm_b; /* (n_embd) pre-attention norm and its LayerNorm bias */
    model_mat wq, wk, wv, wo;  /* q: n_embd -> n_head*head_dim, k/v: -> n_head_kv*head_dim, o: back */
    float *bq, *bk, *bv, *bo;  /* projection biases (qwen2: q/k/v; gpt2: all four) */
    float *q_norm, *k_norm;    /* RMSNorm weights: per head (head_dim), or over the whole q / k (olmo2) */
    float *post_attn_norm;     /* (n_embd) RMSNorm of the attention output before the residual add */
    float *ffn_norm, *ffn_norm_b; /* (n_embd) */
    model_mat w_gate, w_up;    /* n_embd -> n_ff (no gate for FFN_GELU) */
    model_mat w_down;          /* n_ff -> n_embd */
    float *b_up, *b_down;      /* gpt2's FFN biases */
    float *post_ffn_norm;      /* (n_embd) RMSNorm of the FFN output before the residual add */
    int window;                /* sliding window: the query sees itself and window-1 keys before; 0: all */
    bool rope_local;           /* the sliding layers' own RoPE base (gemma3) */
    model_mat router;          /* moe: n_embd -> n_expert router logits */
    model_mat *exp_gate, *exp_up, *exp_down; /* moe: (n_expert) views into the 3-D expert tensors */
} model_layer;

struct heed_model {
    gguf_file *gguf;     /* exactly one of gguf and hf is set */
    hf_model *hf;
    tok_vocab *vocab;
    char *path;
    enum model_arch arch;
    const char *arch_name;
    char *name;
    /* Loaded with heed_model_params.vocab_only: the vocabulary and the
     * metadata, no weights. The geometry stays 0 and n_ctx_train is -1, so
     * heed_ctx_new's n_ctx check refuses every context; heed_model_get_info
     * reports 0. arch_name then points to arch_text, the file's own
     * general.architecture (any architecture, "" when absent). */
    bool vocab_only;
    char *arch_text;

    int n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab, n_ctx_train;
    int n_rot;           /* rotated dims per head (rope.dimension_count) */
    bool rope_neox;      /* pairs (i, i + n_rot/2) instead of (2i, 2i+1) */
    float rope_base;
    float rope_freq_scale; /* linear scaling: 1 / factor */
    float *rope_freqs;   /* (n_rot/2) llama3 frequency divisors, else NULL */
    float rms_eps;       /* the norms' epsilon (LayerNorm's for gpt2) */
    bool layer_norm;     /* LayerNorm with bias (gpt2) rather than RMSNorm */
    bool qk_norm_full;   /* q/k norms over the whole projection before the head split (olmo2) */
    enum model_ffn ffn;
    float embd_scale;    /* the embedding rows times this (gemma: sqrt(n_embd)); 1: none */
    float attn_scale;    /* scores are q.k * attn_scale */
    float attn_softcap;  /* scores become cap * tanh(s / cap) before the softmax (gemma2); 0: none */
    float final_softcap; /* logits become cap * tanh(z / cap) (gemma2); 0: none */
    int n_swa;           /* the sliding layers' window (0: no sliding layers) */
    int swa_pattern;     /* layer il slides when il % pattern < pattern - 1 (1: every layer) */
    int *windows;        /* (n_layer) each layer's window (0: none), as heed_model_info shows them */
    float rope_base_local, rope_freq_scale_local; /* RoPE of layers with rope_local */
    float *rope_factors_short, *rope_factors_long; /* phi3 longrope divisors (n_rot/2), else NULL */
    int n_ctx_orig;      /* phi3: the context the short factors are for */
    float rope_attn_factor; /* phi3: cos and sin times this (1: none) */
    int n_expert, n_expert_used, n_ff_exp; /* moe geometry; 0 for dense models */
    bool expert_norm;    /* moe: the chosen experts' weights renormalised to sum 1 */

    model_mat tok_embd;  /* n_vocab rows of n_embd */
    model_mat pos_embd;  /* gpt2: n_ctx_train rows of n_embd learned positions; else data NULL */
    float *output_norm, *output_norm_b; /* (n_embd) */
    model_mat output;    /* n_embd -> n_vocab; equals tok_embd when tied */
    bool tied_output;
    model_layer *layers; /* (n_layer) */
    /* model_wo_gram's cache: (n_layer) arrays of (n_head, head_dim, head_dim), made on first use */
    pthread_mutex_t gram_mu;
    float **wo_gram;
};

/* Each head's Gram matrix of layer `layer`'s output projection, G_h =
 * W_O^h^T W_O^h (head_dim x head_dim, row-major, heads one after another),
 * where W_O^h is the head's slice of the output matrix (the columns it
 * multiplies): |W_O^h v|^2 = v^T G_h v for any value vector v of that head.
 * Made from the dequantized weights on first use (head_dim^2 x n_embd x
 * n_head / 2 multiply-adds per layer) and kept until the model is freed;
 * any thread may call it. NULL: no memory, or a model without weights. */
const float *model_wo_gram(const heed_model *m, int layer);

/* ------------------------------------------------ binding, for model.c and hf.c */

/* A tensor as its file describes it, whatever the format. */
typedef struct model_tensor {
    const char *name;  /* the file's own name for it (for messages); NULL: the format has none */
    const char *file;  /* the file holding it, for messages; NULL: the loader's file */
    int type;          /* enum ggml_type */
    int n_dims;        /* may exceed 4 (then ne holds the innermost 4) */
    int64_t ne[GGUF_MAX_DIMS]; /* ne[0] is contiguous; unused dims are 1 */
    bool outer_first;  /* messages print shapes outermost first, as the format does (safetensors) */
    const void *data;
} model_tensor;

/* Where tensors come from: find() looks a tensor up by its GGUF name
 * ("blk.3.attn_q.weight") and fills *t; when absent it returns false with
 * t->name / t->file still naming what was looked for. */
typedef struct model_source {
    bool (*find)(void *ctx, const char *gguf_name, model_tensor *t);
    void *ctx;
    bool output_required; /* an untied output matrix must be present (else absent = tied) */
} model_source;

/*
 * Binds every weight of the geometry already in *m (n_layer, n_embd, ...,
 * n_vocab, arch) from src: presence, type and exact shape; matrices point
 * into the source's mapping, vectors become owned f32 copies. rope_freqs is
 * bound only if m->rope_freqs is still NULL. `file` names the source in
 * messages that concern no single tensor. On failure the pointers bound so
 * far stay in *m for heed_model_free. Returns HEED_OK or a negative code.
 */
int model_bind_weights(heed_model *m, const model_source *src, const char *file, char *err, size_t err_size);

/* The architecture's fixed traits (norm kind, FFN kind, RoPE style, query
 * scale, ...) from m->arch and the geometry read so far; loaders call it
 * once n_embd, n_head and head_dim are known, then override from the file. */
void model_arch_defaults(heed_model *m);

/* Touches every page of a mapping once so the first tokens do not stall on
 * page faults, drawing a progress bar labelled `label` on stderr. */
void model_prefault(const char *label, const void *map, uint64_t size);

/* -------------------------------------------------- Hugging Face folders (hf.c) */

/*
 * Loads the checkpoint folder `dir` into *m (which heed_model_load has zeroed
 * and given its path): config.json, the safetensors weights (one file or an
 * index of shards) and the tokenizer. Sets m->hf first, so on failure
 * heed_model_free(m) releases what was loaded. Same codes as heed_model_load.
 */
int hf_load(heed_model *m, const char *dir, const heed_model_params *params, char *err, size_t err_size);
void hf_free(hf_model *h);

uint64_t hf_file_size(const hf_model *h); /* total bytes of the weight files */
/* config.json's top-level keys as metadata: "config.<key>" -> the value as text. */
int hf_n_meta(const hf_model *h);
const char *hf_meta_key(const hf_model *h, int i);
int hf_meta_value(const hf_model *h, int i, char *buf, size_t size);
/* Every tensor of every weight file, shards in order, each file in data order. */
int hf_n_tensors(const hf_model *h);
int hf_tensor(const hf_model *h, int i, heed_tensor_info *info);

#endif
