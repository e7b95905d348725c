/*
 * heed.h - the one public API of heed, a token attention visualizer.
 *
 * heed loads a GGUF language model, runs it on the CPU, and lets the caller
 * observe the exact post-softmax attention probabilities of every layer, head
 * and query position while it generates.
 *
 * Conventions
 *   - Handles are opaque. Every *_new / *_load has a matching *_free, which
 *     accepts NULL.
 *   - Functions that can fail return an int: HEED_OK (0) or a negative
 *     heed_status. heed_strerror() names the code; a detailed message with
 *     context (file, field, value) is written to the caller's `err` buffer
 *     where one is taken, or kept in the context (heed_ctx_error()).
 *   - Parameter structs are filled by *_default_params() and then changed.
 *   - Pointers returned by getters are owned by the handle and stay valid
 *     until it is freed (or until the next call that says it invalidates them).
 *
 * Threads: a heed_model is read-only after loading and can be shared by any
 * number of contexts on any threads. A heed_ctx and a heed_sampler must be
 * used from one thread at a time.
 */
#ifndef HEED_H
#define HEED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HEED_VERSION "0.1.0"

/* ------------------------------------------------------------------ errors */

typedef enum heed_status {
    HEED_OK = 0,
    HEED_ERR_INVALID_ARG = -1,  /* a NULL handle, a value out of range */
    HEED_ERR_IO = -2,           /* open/stat/mmap/read failed */
    HEED_ERR_FORMAT = -3,       /* the file is corrupt or truncated */
    HEED_ERR_UNSUPPORTED = -4,  /* valid file, but a version/type/arch heed lacks */
    HEED_ERR_NOMEM = -5,        /* an allocation failed */
    HEED_ERR_CONTEXT_FULL = -6, /* the tokens do not fit in the context */
    HEED_ERR_TOKENIZER = -7,    /* text cannot be tokenized with this vocabulary */
    HEED_ERR_CANCELLED = -8,    /* a callback asked to stop */
    HEED_ERR_NEED_MODEL = -9,   /* the view needs the model that made the run (the logit lens) */
    HEED_ERR_MODEL_MISMATCH = -10, /* the model given is not the one that made the run */
    HEED_ERR_NOT_FOUND = -11,   /* no such thing (a stored run's id) */
} heed_status;

/* A static string naming `rc` ("format error", ...); never NULL. */
const char *heed_strerror(int rc);

/* ------------------------------------------------------------------ model */

typedef struct heed_model heed_model;

typedef struct heed_model_params {
    bool progress;   /* draw a loading progress bar on stderr for large files */
    bool vocab_only; /* GGUF: read the metadata and the vocabulary only, of any
                      * architecture, no weights (tokenize, labels, info); an
                      * HF folder still loads whole */
} heed_model_params;

heed_model_params heed_model_default_params(void);

/*
 * Loads a model: `path` is a GGUF file, a Hugging Face checkpoint folder
 * (config.json, model.safetensors or shards with model.safetensors.index.json,
 * tokenizer.json, tokenizer_config.json), or NULL for the bundled default
 * model (stories260K). Files are mapped, not copied, and checked completely:
 * header, metadata, tensor table, shapes, types and that every tensor lies
 * inside its file. Only regular files are read: a FIFO, a device or a
 * directory where a file belongs is refused at once with HEED_ERR_IO
 * ("m.gguf: not a regular file (a FIFO)"), never waited on.
 * With params->vocab_only a GGUF file is read for its vocabulary alone: the
 * architecture is not checked and no tensor is bound, so any model file and
 * the vocabulary-only files that hold no tensors at all load. Such a model
 * tokenizes, detokenizes, labels tokens, renders chat templates and lists
 * its metadata; heed_model_get_info says vocab_only, its geometry is zero,
 * and heed_ctx_new refuses it. Without vocab_only a GGUF that holds no
 * tensors is refused with HEED_ERR_UNSUPPORTED ("v.gguf has no weights
 * (vocabulary only): it can tokenize but not generate").
 * On failure *out is NULL and `err` (if not NULL) receives a message such as
 * "model.gguf: tensor 'blk.3.attn_q.weight' extends past end of file".
 * Returns HEED_OK, HEED_ERR_IO, HEED_ERR_FORMAT, HEED_ERR_UNSUPPORTED or
 * HEED_ERR_NOMEM. The caller owns *out (heed_model_free).
 */
int heed_model_load(const char *path, const heed_model_params *params, heed_model **out, char *err,
                    size_t err_size);
void heed_model_free(heed_model *model);

typedef struct heed_model_info {
    const char *path;      /* as given to heed_model_load */
    const char *arch;      /* "llama", "qwen2", "qwen3", "qwen3moe", "gpt2", "gemma2", "gemma3", "phi3", "olmo2";
                            * vocab_only: the file's general.architecture, or "" */
    const char *name;      /* general.name, or "" */
    const char *tokenizer; /* tokenizer.ggml.model: "llama" (SentencePiece), "gpt2" (byte BPE) */
    uint64_t file_size;
    int n_layer, n_embd, n_head, n_head_kv, head_dim, n_ff, n_vocab;
    int n_ctx_train;       /* the model's context limit */
    float rope_base, rms_eps;
    bool tied_output;      /* the output matrix is token_embd */
    int32_t bos, eos, eot; /* -1 where the vocabulary has none */
    bool add_bos;          /* prepend BOS when tokenizing a prompt */
    bool can_tokenize;     /* heed can encode text for this vocabulary */
    /* How attention rows are formed (every recomputation of a row uses them):
     * scores q.k * attn_scale, then attn_softcap * tanh(s / attn_softcap)
     * when attn_softcap > 0, then the softmax over the keys a layer sees: the
     * last layer_window[l] positions (the query's own included) when that is
     * > 0, else every earlier position. The model owns layer_window. */
    float attn_scale, attn_softcap;
    const int *layer_window; /* (n_layer) */
    float final_softcap;   /* logits are final_softcap * tanh(z / final_softcap) when > 0 */
    int n_expert, n_expert_used; /* mixture of experts; 0 for dense models */
    const char *tokenize_refusal; /* why not ("v.gguf: pre-tokenizer 'foo' (tokenizer.ggml.pre) is not
                                   * supported"), or NULL when can_tokenize */
    bool vocab_only;       /* loaded for its vocabulary only: the geometry fields are 0, no context */
} heed_model_info;

void heed_model_get_info(const heed_model *model, heed_model_info *info);

/* GGUF metadata, for `heed info`: key i in file order, and its value printed
 * as text into buf (arrays shortened to their first entries). Returns the
 * length the full text would have (snprintf semantics), or a negative code. */
int heed_model_n_meta(const heed_model *model);
const char *heed_model_meta_key(const heed_model *model, int i);
int heed_model_meta_value(const heed_model *model, int i, char *buf, size_t size);

typedef struct heed_tensor_info {
    const char *name;
    const char *type; /* "F32", "F16", "BF16", "Q8_0", "Q4_K", ... */
    int n_dims;
    int64_t ne[4];    /* ne[0] is the row length (contiguous) */
    uint64_t offset;  /* file offset of the data */
    uint64_t n_bytes;
} heed_tensor_info;

int heed_model_n_tensors(const heed_model *model);
int heed_model_tensor(const heed_model *model, int i, heed_tensor_info *info);

/* -------------------------------------------------------------- tokenizer */

/*
 * Encodes UTF-8 text as the model was trained: SentencePiece or byte-level
 * BPE with the model's pre-tokenizer. Special-token strings such as
 * "<|eot_id|>" are not parsed (see heed_tokenize_flags). Writes at most n_max
 * ids and returns the number of tokens the text has (which may exceed n_max:
 * call again with a larger buffer), or HEED_ERR_TOKENIZER for a vocabulary
 * heed cannot encode (an unknown pre-tokenizer: use ids),
 * HEED_ERR_INVALID_ARG for invalid UTF-8.
 */
int heed_tokenize(const heed_model *model, const char *text, size_t len, bool add_bos, int32_t *ids,
                  int n_max);

/* Flags for heed_tokenize_flags. */
enum {
    HEED_TOK_ADD_BOS = 1,       /* prepend BOS */
    HEED_TOK_PARSE_SPECIAL = 2, /* split out special-token strings such as "<|eot_id|>" (chat templates) */
};

/* heed_tokenize with flags; same returns. Special-token strings are parsed
 * only with HEED_TOK_PARSE_SPECIAL. */
int heed_tokenize_flags(const heed_model *model, const char *text, size_t len, unsigned flags, int32_t *ids,
                        int n_max);

/* The vocabulary's own string for a token ("▁the", "Ġthe", "<0x0A>"), or NULL for an invalid id. */
const char *heed_token_piece(const heed_model *model, int32_t id);

/* The bytes the token stands for in text (may be a partial UTF-8 character).
 * Control tokens (BOS, EOS, ...) give no bytes. Returns the byte count
 * (snprintf semantics), or a negative code. */
int heed_token_bytes(const heed_model *model, int32_t id, char *buf, size_t size);

/* A short printable label for display: "▁"/"Ġ" become spaces, newlines a
 * visible "\n", BOS/EOS/UNK "[BOS]"/"[EOS]"/"[UNK]", an empty label "[EMPTY]".
 * Always valid UTF-8. Returns the length (snprintf semantics). */
int heed_token_label(const heed_model *model, int32_t id, char *buf, size_t size);

/* True for tokens that end a generation: EOS, EOT, and the chat end
 * markers the vocabulary has as control tokens (<|eot_id|>, <|im_end|>,
 * <|endoftext|>, <|end_of_text|>, <|end|>, <end_of_turn>, <eos>). */
bool heed_token_is_eog(const heed_model *model, int32_t id);

/*
 * Streaming detokenizer: feeds token bytes and hands back only complete,
 * valid UTF-8. A partial character at the end is held until the next token
 * completes it; bytes that can never form a character come out as U+FFFD.
 */
typedef struct heed_utf8_stream {
    unsigned char pending[4];
    int n_pending;
} heed_utf8_stream;

/* Appends `in` and writes the complete characters into out. Each bad byte
 * can become a 3-byte U+FFFD, so out needs 3 * n_in + 3 bytes in the worst
 * case (the +3: a held partial character that the new bytes break). Not
 * NUL-terminated. Returns the number of bytes written. */
size_t heed_utf8_stream_push(heed_utf8_stream *s, const char *in, size_t n_in, char *out);
/* Flushes what is held at the end of the text (as U+FFFD): writes 0 or 3 bytes. */
size_t heed_utf8_stream_flush(heed_utf8_stream *s, char *out);

/* ---------------------------------------------------------- chat templates */

typedef struct heed_chat_msg {
    const char *role;    /* "system", "user" or "assistant" */
    const char *content; /* UTF-8 */
} heed_chat_msg;

/* The chat template family heed recognised in the model ("llama3", "chatml",
 * "llama2", "mistral", "gemma", "phi3"), or NULL when the model has none
 * heed knows. Gemma has no system role: a system message (first only) opens
 * the first user turn, followed by a blank line, as Gemma's template does. */
const char *heed_chat_template(const heed_model *model);

/* Renders messages with the model's template into buf (snprintf semantics:
 * returns the full length). add_generation_prompt appends the opening of the
 * assistant's turn. Returns HEED_ERR_UNSUPPORTED when the model has no known
 * template, HEED_ERR_INVALID_ARG for an unknown role. */
int heed_chat_format(const heed_model *model, const heed_chat_msg *msgs, int n, bool add_generation_prompt,
                     char *buf, size_t size);

/* Renders and tokenizes (BOS as the template writes it). The template's own
 * special-token strings become special tokens; a message's content is
 * text, never parsed for special tokens, so "<|eot_id|>" or "<|im_end|>" in
 * a message cannot end its turn or open another. A chat without such
 * strings in its content gets the ids of heed_chat_format's text tokenized
 * with HEED_TOK_PARSE_SPECIAL. Same returns as heed_tokenize, plus those of
 * heed_chat_format. */
int heed_chat_tokenize(const heed_model *model, const heed_chat_msg *msgs, int n, bool add_generation_prompt,
                       int32_t *ids, int n_max);

/* ------------------------------------------------------- attention hook */

/*
 * A block of attention probabilities for one layer: every head, and a run of
 * consecutive query positions pos0 .. pos0+n_query-1.
 *
 *   probs[h * head_stride + i * row_stride + k]
 *
 * is the post-softmax probability that query position pos0+i of query head h
 * gives to key position k, for k = 0 .. pos0+i (causal). These are exactly
 * the numbers the forward pass multiplies with V. The memory is heed's and is
 * valid only during the observe call.
 *
 * row_mi[2 * (h * n_query + i)] and [... + 1] (NULL: not given) are that
 * row's softmax statistics: its largest score and the reciprocal of the
 * sum every entry was multiplied by (-INFINITY and 0 for a row with every
 * key masked). With them one entry of a row follows from its score alone
 * (a column of attention without its rows).
 */
typedef struct heed_attn_block {
    int layer;
    int n_head;
    int pos0;
    int n_query;
    size_t row_stride;
    size_t head_stride;
    const float *probs;
    const float *row_mi;
} heed_attn_block;

/*
 * Post-RoPE queries and keys of one layer for positions pos0 .. pos0+n-1:
 * what attention is computed from. q[i * n_head * head_dim + h * head_dim + d]
 * (after qwen3's q-norm, before the 1/sqrt(head_dim) scale);
 * k[i * n_head_kv * head_dim + ...] likewise. With them any attention row can
 * be recomputed exactly later: p = softmax(q . k_j / sqrt(head_dim)), j <= pos.
 */
typedef struct heed_qk_block {
    int layer, pos0, n_query;
    int n_head, n_head_kv, head_dim;
    const float *q;
    const float *k;
    const float *v; /* the values, laid out as k (after any bias): what the heads' weighted sums read */
} heed_qk_block;

/* The residual stream after layer `layer` (n_embd floats per position), for
 * the logit lens: heed_ctx_unembed turns a row into next-token logits. */
typedef struct heed_resid_block {
    int layer, pos0, n_query, n_embd;
    const float *x;
} heed_resid_block;

/* The heads' attention outputs of one layer for positions pos0 .. pos0+n-1,
 * before the output projection: out[i * n_head * head_dim + h * head_dim + d],
 * after any intervention on them (scaling, replacement). */
typedef struct heed_head_block {
    int layer, pos0, n_query;
    int n_head, head_dim;
    const float *out;
} heed_head_block;

/* A mixture-of-experts layer's routing for positions pos0 .. pos0+n-1:
 * ids[i * n_used + s] is the expert in slot s (slots in order of router
 * probability, highest first) and weights[...] its weight in the layer's
 * output (renormalised over the chosen experts where the model does so);
 * probs[i * n_expert + e] is the router's softmax over every expert. */
typedef struct heed_moe_block {
    int layer, pos0, n_query;
    int n_expert, n_used;
    const int32_t *ids;
    const float *weights;
    const float *probs;
} heed_moe_block;

/*
 * The hook is asked first (want: does the caller want layer L? NULL means
 * every layer) and then observes. The observers are called on the thread
 * that called heed_decode, once per layer and batch, in layer order; each is
 * optional. When no hook is set the cost is one branch per layer.
 */
typedef struct heed_attn_hook {
    bool (*want)(void *user, int layer);
    void (*observe)(void *user, const heed_attn_block *block);
    void (*observe_qk)(void *user, const heed_qk_block *block);
    void (*observe_resid)(void *user, const heed_resid_block *block);
    void (*observe_moe)(void *user, const heed_moe_block *block); /* mixture-of-experts layers only */
    void (*observe_heads)(void *user, const heed_head_block *block);
    void *user;
} heed_attn_hook;

/* IEEE binary16 bits of f, rounded to nearest, ties to even (overflow to
 * infinity; NaN stays NaN): the one conversion behind every float16 heed
 * writes (the kernels' kern_f32_to_f16). */
uint16_t heed_f32_to_f16(float f);

/* sizeof the public struct named type ("heed_gen_params", ...), or 0 for a
 * name heed.h does not define: bindings that mirror the structs (python/)
 * check their layout against the library they load. */
size_t heed_abi_sizeof(const char *type);

/* ---------------------------------------------------------------- context */

typedef struct heed_ctx heed_ctx;

typedef struct heed_ctx_params {
    int n_ctx;     /* context limit in tokens; 0 = the model's limit, bounded by memory (heed_ctx_fit) */
    int n_threads; /* 0 = all cores (the work size may choose fewer) */
} heed_ctx_params;

heed_ctx_params heed_ctx_default_params(void);

/* Memory, for choosing a context size before allocating one:
 * heed_ctx_bytes: what a context of n_ctx positions allocates (KV cache,
 * RoPE tables, scratch); heed_record_bytes: what a recording (the
 * recorder's defaults: q and k of every layer, and the residuals of the
 * lens) keeps in memory per position, as an upper bound (spilled: with q
 * and k in file-backed mappings, recorder_params.spill_dir);
 * heed_mem_available: the memory available now (MemAvailable; 0 when
 * unknown); heed_ctx_fit: the largest context, at most the model's limit,
 * whose heed_ctx_bytes plus per_pos_extra bytes per position fits in
 * budget (0 when none does). A context made with n_ctx 0 takes the
 * model's limit, or the largest that fits in 80% of the memory available. */
uint64_t heed_ctx_bytes(const heed_model *model, int n_ctx);
uint64_t heed_record_bytes(const heed_model *model, bool spilled);
uint64_t heed_mem_available(void);
int heed_ctx_fit(const heed_model *model, uint64_t budget, uint64_t per_pos_extra);

/* Allocates the KV cache and every scratch buffer; decoding never allocates.
 * Returns HEED_OK, HEED_ERR_INVALID_ARG (n_ctx beyond the model's limit),
 * HEED_ERR_UNSUPPORTED (a model loaded with vocab_only: no weights to run)
 * or HEED_ERR_NOMEM. */
int heed_ctx_new(const heed_model *model, const heed_ctx_params *params, heed_ctx **out);
void heed_ctx_free(heed_ctx *ctx);

int heed_ctx_n_ctx(const heed_ctx *ctx);

/*
 * An intervention in attention itself: queries at positions q0..q1-1 of
 * query head `head` of layer `layer` (-1: every head / every layer) may not
 * attend to keys at positions k0..k1-1. Their scores are set to -infinity
 * before the softmax: the row is renormalised over the other keys, and the
 * captured row shows exactly 0 there (a row with every key knocked out is
 * all zeros, and the head adds nothing at that position).
 */
typedef struct heed_knockout {
    int layer, head;
    int q0, q1;
    int k0, k1;
} heed_knockout;

/*
 * Edits of the residual stream (interventions): after layer `layer`, at
 * position `pos` (-1: every position), the residual row is replaced by vec
 * (activation patching: vec is the row another run had there) or gets
 * alpha * vec added (steering). vec has n_embd floats.
 */
typedef struct heed_resid_edit {
    int layer, pos;
    bool replace;
    float alpha;
    const float *vec;
} heed_resid_edit;

/* Residual edits one context (and one run) holds at most. */
#define HEED_MAX_RESID_EDITS 256

/* Sets the context's residual edits (copied, vectors too; n 0 clears them),
 * applied from the next heed_decode on. HEED_OK, HEED_ERR_INVALID_ARG (a
 * layer out of range, pos < -1, a vector or alpha not finite) or
 * HEED_ERR_NOMEM. */
int heed_ctx_set_resid_edits(heed_ctx *ctx, const heed_resid_edit *edits, int n);

/* Knockouts one context (and one run) holds at most. */
#define HEED_MAX_KNOCKOUTS 4096

/* Sets the context's knockouts (copied; n 0 clears them). They apply from
 * the next heed_decode on. HEED_OK, HEED_ERR_INVALID_ARG (a layer or head
 * out of range, an empty or negative range) or HEED_ERR_NOMEM. */
int heed_ctx_set_knockouts(heed_ctx *ctx, const heed_knockout *knockouts, int n);
/* Number of positions already in the KV cache. */
int heed_ctx_n_past(const heed_ctx *ctx);
/* Forgets the positions from n_past on (0 <= n_past <= heed_ctx_n_past):
 * the next heed_decode continues at n_past. HEED_OK or HEED_ERR_INVALID_ARG. */
int heed_ctx_rewind(heed_ctx *ctx, int n_past);
/* Forgets every position (the next decode starts at position 0). */
void heed_ctx_reset(heed_ctx *ctx);
/* The last error message with its context. */
const char *heed_ctx_error(const heed_ctx *ctx);

/* Installs a copy of *hook; NULL removes it. */
void heed_ctx_set_attn_hook(heed_ctx *ctx, const heed_attn_hook *hook);

/* An intervention in the forward pass: scale (n_layer x n_head, copied)
 * multiplies each head's attention output, before the output projection,
 * by its factor (0 ablates the head; 1 leaves it untouched, bit for bit);
 * NULL removes it. It applies to every decode after the call. Returns
 * HEED_OK, HEED_ERR_INVALID_ARG (a factor that is not finite),
 * HEED_ERR_NOMEM. */
int heed_ctx_set_head_scale(heed_ctx *ctx, const float *scale);

/* The first position the head interventions (heed_ctx_set_head_scale,
 * heed_ctx_set_head_values) and the residual edits of every position
 * (pos -1) apply to: earlier positions run as the model does (0, the
 * default: all). Knockouts and edits at one position name their own
 * positions. HEED_OK or HEED_ERR_INVALID_ARG (pos < 0). */
int heed_ctx_set_intervention_start(heed_ctx *ctx, int pos);

/* Replaces the attention output of the heads marked in which (n_layer x
 * n_head bytes, nonzero: replaced) by values (n_layer x n_head x head_dim,
 * the slice of each marked head) at every position: mean ablation, with the
 * head's mean output as the value. Applied after head_scale. NULL which
 * clears it. HEED_OK, HEED_ERR_INVALID_ARG (a value not finite) or
 * HEED_ERR_NOMEM. */
int heed_ctx_set_head_values(heed_ctx *ctx, const unsigned char *which, const float *values);

/*
 * Runs n tokens through the model at positions n_past .. n_past+n-1 (a whole
 * prompt is one batch; decoding passes n = 1) and appends them to the KV
 * cache. Afterwards heed_ctx_logits() holds the next-token logits of the last
 * position. Returns HEED_OK, HEED_ERR_CONTEXT_FULL (nothing is changed),
 * HEED_ERR_INVALID_ARG (an id outside the vocabulary).
 */
int heed_decode(heed_ctx *ctx, const int32_t *ids, int n);

/* n_vocab logits of the last decoded position; owned by ctx, overwritten by
 * the next heed_decode. */
const float *heed_ctx_logits(const heed_ctx *ctx);

/* Applies the model's final norm and output matrix to one residual row x
 * (n_embd floats), writing n_vocab logits: the logit lens. Uses the
 * context's scratch, so not during a heed_decode call. */
int heed_ctx_unembed(heed_ctx *ctx, const float *x, float *logits);

/* ---------------------------------------------------------------- sampler */

typedef struct heed_sampler_params {
    float temperature;    /* >= 0; 0: greedy (argmax) */
    int top_k;            /* 0: off */
    float top_p;          /* in (0, 1]; 1: off */
    float min_p;          /* in [0, 1]; 0: off */
    float repeat_penalty; /* 1: off; > 1 discourages tokens seen in the last repeat_last_n */
    int repeat_last_n;    /* window of the repetition penalty (64) */
    uint64_t seed;
} heed_sampler_params;

heed_sampler_params heed_sampler_default_params(void);

typedef struct heed_sampler heed_sampler;

/* n_vocab sizes the internal buffers. Returns NULL on bad params or no memory. */
heed_sampler *heed_sampler_new(const heed_sampler_params *params, int n_vocab);
void heed_sampler_free(heed_sampler *s);

typedef struct heed_candidate {
    int32_t id;
    float logit; /* the model's raw logit */
    float prob;  /* the model's probability, softmax of the raw logits */
} heed_candidate;

typedef struct heed_sample {
    int32_t id;         /* the chosen token */
    float prob;         /* its probability under the model (softmax of raw logits) */
    float logprob;      /* natural log of prob */
    float entropy;      /* entropy of the model's distribution, in nats */
    const float *probs; /* the model's full distribution (n_vocab), owned by the
                           sampler, valid until its next call */
    float max_logit;    /* the distribution's normaliser: p(i) = exp(logit_i - max_logit - log_z) */
    double log_z;
} heed_sample;

/*
 * Chooses the next token from n_vocab logits and records it in the
 * repetition history. Deterministic for a given seed and history. The
 * distribution reported in *out is the model's own; penalties, top-k, top-p,
 * min-p and temperature shape only the choice. Returns HEED_OK or
 * HEED_ERR_INVALID_ARG.
 */
int heed_sampler_sample(heed_sampler *s, const float *logits, int n_vocab, heed_sample *out);

/* As heed_sampler_sample, but the choice is token id (0 <= id < n_vocab):
 * reported under the model's distribution and added to the history; the
 * random state is not advanced (a branch that forces the tokens of an
 * earlier run, say). */
int heed_sampler_force(heed_sampler *s, const float *logits, int n_vocab, int32_t id, heed_sample *out);

/* Adds tokens (e.g. the prompt) to the repetition history without sampling. */
void heed_sampler_accept(heed_sampler *s, const int32_t *ids, int n);

/* The k highest logits, in descending order (ties: lower id first), with the
 * model's probabilities. Returns the number written (min(k, n_vocab)). */
int heed_top_candidates(const float *logits, int n_vocab, int k, heed_candidate *out);
/* The same for the logits s was drawn from, reusing the normaliser the
 * sampler computed (one pass over the vocabulary fewer): identical values. */
int heed_sample_candidates(const heed_sample *s, const float *logits, int n_vocab, int k, heed_candidate *out);

/* ================================================== runs and analysis
 *
 * A recording (heed_run) of one generation: model identity, parameters,
 * prompt and output ids with labels, per step the choice, its log-prob, the
 * best candidates and the entropy, the logit lens, and attention in tiers
 * (docs/RUN_FORMAT.md):
 *   exact   post-RoPE q and k of every layer: any row is recomputed exactly
 *           on demand, without the model;
 *   summary top-k sources per (query, layer, head), fp16 head-mean rows;
 *   full    every f32 probability, while under a size limit.
 * Views (docs/ANALYSIS.md) read a run; a run loaded from a file needs no model.
 *
 * Threads: a recorder and a run are used by one thread at a time (views use
 * the run's own thread pool internally).
 */

typedef struct heed_run heed_run;
typedef struct heed_recorder heed_recorder;

typedef struct heed_recorder_params {
    /* Attention tiers. The exact tier (q and k) is what every view reads,
     * and costs generation almost nothing; the others are reductions of the
     * same rows made on every layer while generating, which costs 5-20% of
     * a prompt's time, so by default they are off: heed_run_export_npz
     * computes the summaries from q/k when it writes them. */
    int attn_top_k;          /* top sources kept per query, layer and head while generating (0: none) */
    bool keep_qk;            /* keep q and k for exact views (true) */
    bool keep_head_mean;     /* fp16 head-mean rows per layer while generating (false) */
    size_t full_limit_bytes; /* full probabilities while they fit (0: never) */
    int n_cand;              /* candidates per step (20, at most 256) */
    int lens_top_k;          /* logit-lens tokens per layer and step (5, at most 64); 0: no lens */
    const float *head_scale; /* for the record: the intervention the run is made under ((n_layer x
                              * n_head) factors, heed_ctx_set_head_scale; copied), or NULL: none */
    const heed_knockout *knockouts; /* the knockouts the context applies (heed_ctx_set_knockouts; copied):
                                     * recomputed rows apply them too */
    int n_knockouts;
    const unsigned char *head_which; /* for the record: heads whose output was replaced (heed_ctx_set_head_values; */
    const float *head_values;        /* (n_layer x n_head) and (n_layer x n_head x head_dim); copied), or NULL */
    const heed_resid_edit *resid_edits; /* for the record: the residual edits (copied) */
    int n_resid_edits;
    bool live_mean_row;      /* sum the newest query's row over layers and heads as the forward pass
                              * makes it, so heed_recorder_last_row with all heads and mean costs no
                              * recomputation (a live stream's attention summary); false */
    bool lens_eager;         /* compute the lens while generating (false: keep each step's residuals
                              * and compute it on request, heed_run_lens_compute; an unembedding per
                              * layer and step is 16-30 times the output projection) */
    int n_threads;           /* threads for the run's views after recording; 0: all cores (while recording, the summaries and live views use the context's threads) */
    const char *spill_dir;   /* keep q and k in file-backed mappings in this folder (unnamed files,
                              * paged out under memory pressure) rather than in anonymous memory: a
                              * long run's store (32k tokens of a 1B model: 5.4 GB) then does not have
                              * to fit in RAM. NULL (default): memory. Copied. */
    /* recorded as given, for the record only: */
    heed_sampler_params sampler;
    int n_predict;
    const char *prompt_text; /* may be NULL (prompt given as ids) */
    int intervene_from;      /* the position the interventions applied from (heed_ctx_set_intervention_start) */
} heed_recorder_params;

heed_recorder_params heed_recorder_default_params(void);

/*
 * Creates a recorder and installs its hook on ctx (heed_ctx_set_attn_hook):
 * a context has one hook, so this replaces any other, and
 * heed_recorder_finish / heed_recorder_free remove it. ctx must be fresh
 * (heed_ctx_n_past == 0) when heed_recorder_begin is called (or hold the
 * prefix heed_recorder_begin_from takes). model and ctx must outlive the recorder. Returns
 * HEED_OK, HEED_ERR_INVALID_ARG or HEED_ERR_NOMEM; the caller owns *out.
 *
 * Use:  heed_recorder_begin(rec, prompt, n);  heed_decode(ctx, prompt, n);
 *       loop { heed_sampler_sample(..., &s);  heed_recorder_step(rec, &s, logits);
 *              stop?  heed_decode(ctx, &s.id, 1); }
 *       heed_recorder_finish(rec, &run);
 */
int heed_recorder_new(const heed_model *model, heed_ctx *ctx, const heed_recorder_params *params,
                      heed_recorder **out);
void heed_recorder_free(heed_recorder *rec);

/* Records the prompt, before it is decoded. HEED_OK, HEED_ERR_INVALID_ARG. */
int heed_recorder_begin(heed_recorder *rec, const int32_t *prompt, int n);

/* Begins a recording that continues a prefix of parent, a run of the same
 * model, instead of heed_recorder_begin: the prompt (n tokens, parent's),
 * then parent's first n_steps outputs, and what parent recorded for
 * positions 0 .. n_pos-1 (q and k, value norms, routing, those steps'
 * candidates and lens) are taken from parent rather than observed; ctx
 * must hold exactly n_pos positions, computed as parent's generation
 * computed them (the caller's guarantee: the KV cache it left), with
 * n_pos <= n + n_steps (its tokens are known) and each step's query inside
 * it (n_steps <= n_pos - n + 1, or none). Decoding then goes on from n_pos.
 * The prefix's queries (most of its bytes) are copied by
 * heed_recorder_complete_from, which must come before heed_recorder_finish:
 * the live views of the newest query need only the keys, so the first new
 * tokens do not wait for the copy. HEED_OK, HEED_ERR_INVALID_ARG (another prompt, counts out of
 * range, ctx not at n_pos), HEED_ERR_UNSUPPORTED (parent lacks what this
 * recording keeps, or this recording keeps summary tiers), HEED_ERR_NOMEM. */
int heed_recorder_begin_from(heed_recorder *rec, const int32_t *prompt, int n, const heed_run *parent, int n_pos,
                             int n_steps);

/* The rest of what heed_recorder_begin_from takes from parent (the same
 * run): its queries of the prefix. HEED_OK or HEED_ERR_INVALID_ARG. */
int heed_recorder_complete_from(heed_recorder *rec, const heed_run *parent);

/* Records one generated token: s from heed_sampler_sample on `logits` (the
 * context's logits). Computes the candidates (and the logit lens with
 * lens_eager; else it keeps the step's residuals), so it must come before
 * the next heed_decode. HEED_OK, HEED_ERR_INVALID_ARG,
 * HEED_ERR_NOMEM (also when an allocation inside the hook had failed). */
int heed_recorder_step(heed_recorder *rec, const heed_sample *s, const float *logits);

/* Ends the recording: removes the hook and moves everything into *out (the
 * caller owns it: heed_run_free). The recorder can then only be freed. */
int heed_recorder_finish(heed_recorder *rec, heed_run **out);

/* Writes the run (format: docs/RUN_FORMAT.md). HEED_OK, HEED_ERR_IO. */
int heed_run_save(const heed_run *run, const char *path, char *err, size_t err_size);
/* Reads and checks a run; errors name the file and the field. HEED_OK,
 * HEED_ERR_IO, HEED_ERR_FORMAT (corrupt, truncated, checksum),
 * HEED_ERR_UNSUPPORTED (unknown version), HEED_ERR_NOMEM. */
int heed_run_load(const char *path, heed_run **out, char *err, size_t err_size);

/* The same bytes on a stream the caller opened (a pipe, open_memstream,
 * fopencookie into a compressor: the run store keeps runs this way, with
 * no temporary files). heed_run_write writes heed_run_file_size(run) bytes
 * from the stream's position and flushes it; it neither seeks nor closes.
 * name (NULL: "run") starts its messages. HEED_OK, HEED_ERR_INVALID_ARG,
 * HEED_ERR_IO. */
uint64_t heed_run_file_size(const heed_run *run);
int heed_run_write(const heed_run *run, FILE *f, const char *name, char *err, size_t err_size);
/* Reads a run of `size` bytes from the stream's position (the size the
 * writer reported, or the file's): every length in it is checked against
 * the bytes left before anything is allocated, which is why the size is
 * given; the stream is left just after them. Returns as heed_run_load; a
 * stream shorter than `size` is HEED_ERR_FORMAT ("... (truncated)");
 * messages start with name (NULL: "run"). */
int heed_run_read(FILE *f, uint64_t size, const char *name, heed_run **out, char *err, size_t err_size);
void heed_run_free(heed_run *run);

typedef struct heed_run_info {
    const char *model_file;  /* file name of the model, without directories */
    const char *model_arch;
    const char *model_name;
    uint64_t model_size;     /* bytes */
    uint64_t meta_hash;      /* FNV-1a 64 over the metadata keys and values */
    int n_layer, n_head, n_head_kv, head_dim, n_embd, n_vocab;
    int32_t bos, eos, eot;   /* -1 where none */
    int n_prompt, n_output;
    int n_pos;               /* positions with attention: n_prompt + n_output - 1 */
    heed_sampler_params sampler;
    int n_predict, n_ctx;
    const char *prompt_text; /* "" when the prompt was given as ids */
    int n_cand, lens_top_k, attn_top_k;
    int lens_pending;        /* steps whose lens is not computed yet (heed_run_lens_compute) */
    bool intervened;         /* made under an intervention: heed_run_head_scale, heed_run_knockouts */
    bool has_qk, has_topk, has_head_mean, has_full, eog; /* eog: stopped at an end token */
    uint64_t attn_bytes;     /* attention data held in memory */
    int n_expert, n_expert_used; /* a mixture-of-experts model's run: its routing (heed_run_experts) */
    bool has_value_norms;    /* value-weighted attention is available (HEED_MEASURE_VALUE) */
    int intervene_from;      /* the interventions applied from this position on (0: all) */
} heed_run_info;

void heed_run_get_info(const heed_run *run, heed_run_info *info);

/* The value norms of position pos (0 .. n_pos-1): |W_O^h v_pos| for every
 * layer and head, out[layer * n_head + head] (owned by the run). HEED_OK,
 * HEED_ERR_INVALID_ARG, HEED_ERR_UNSUPPORTED (not recorded). */
int heed_run_value_norms(const heed_run *run, int pos, const float **out);

/* A mixture-of-experts run's routing: the n_expert_used experts position
 * pos (0 .. n_pos-1) went to in layer `layer`, best first, and their
 * weights in the layer's output (owned by the run). Returns n_expert_used,
 * HEED_ERR_UNSUPPORTED (a dense model's run) or HEED_ERR_INVALID_ARG. */
int heed_run_experts(const heed_run *run, int pos, int layer, const int32_t **ids, const float **weights);

/* Token i of prompt then output (0 .. n_prompt+n_output-1): id and display
 * label (owned by the run). HEED_OK or HEED_ERR_INVALID_ARG. */
int heed_run_token(const heed_run *run, int i, int32_t *id, const char **label);

typedef struct heed_run_step {
    int32_t id;
    float prob, logprob, entropy;
    int n_cand;
    const heed_candidate *cand; /* best first; owned by the run */
} heed_run_step;

int heed_run_get_step(const heed_run *run, int t, heed_run_step *out);

/* Logit lens of step t at layer l: *n_out (lens_top_k) ids and
 * probabilities, best first; pointers owned by the run. HEED_OK,
 * HEED_ERR_INVALID_ARG, HEED_ERR_UNSUPPORTED (recorded without a lens),
 * HEED_ERR_NEED_MODEL (not computed yet: heed_run_lens_compute). The lens
 * matches the final choice when ids[0] == the step's id. */
int heed_run_lens(const heed_run *run, int t, int layer, const int32_t **ids, const float **probs, int *n_out);

/* The lens of a run recorded without lens_eager (the default) is computed
 * on request from the residuals kept for each step and layer: with model
 * (the model that made the run, checked by its metadata hash and geometry)
 * and ctx, a context of that model used only as scratch for the
 * unembedding (its KV cache and position are untouched): heed_lens_ctx_new
 * makes one sized for it, and NULL makes one for the call. Computes steps t0 .. t1-1 that are not computed
 * yet; the numbers are those the eager lens gives, bit for bit. Returns
 * HEED_OK, HEED_ERR_INVALID_ARG, HEED_ERR_UNSUPPORTED (no lens, or no
 * residuals), HEED_ERR_MODEL_MISMATCH, HEED_ERR_NOMEM. */
int heed_run_lens_compute(heed_run *run, const heed_model *model, heed_ctx *ctx, int t0, int t1);
/* The intervention a run was made under: (n_layer x n_head) factors on each
 * head's attention output (0: ablated), owned by the run; NULL: none. */
const float *heed_run_head_scale(const heed_run *run);
/* The knockouts a run was made under (owned by the run), *n their count;
 * NULL with *n 0: none. */
const heed_knockout *heed_run_knockouts(const heed_run *run, int *n);
/* The heads whose output a run replaced (mean ablation): *which (n_layer x
 * n_head, nonzero: replaced) and the values (n_layer x n_head x head_dim),
 * owned by the run; NULL (and *which NULL): none. */
const float *heed_run_head_values(const heed_run *run, const unsigned char **which);
/* The residual edits (patching, steering) a run was made under, owned by
 * the run (vectors of n_embd floats); NULL with *n 0: none. */
const heed_resid_edit *heed_run_resid_edits(const heed_run *run, int *n);
/* A context sized as the lens's scratch (a full batch of rows per read of
 * the output matrix), for heed_run_lens_compute calls that share it.
 * n_threads 0: all cores. Returns as heed_ctx_new. */
int heed_lens_ctx_new(const heed_model *model, int n_threads, heed_ctx **out);
/* Steps whose lens is still to compute (0 for a run with its lens complete). */
int heed_run_lens_pending(const heed_run *run);
/* HEED_OK when model made the run (metadata hash and geometry), else
 * HEED_ERR_MODEL_MISMATCH. */
int heed_run_lens_model_ok(const heed_run *run, const heed_model *model);

/* ---- attention views; positions are query positions 0 .. n_pos-1. Step t
 * (0-based output token t) was chosen by query position n_prompt - 1 + t. */

typedef enum heed_agg { HEED_AGG_MEAN = 0, HEED_AGG_MAX = 1 } heed_agg;

/* What a row's entries measure (docs/ANALYSIS.md):
 *   HEED_MEASURE_ATTENTION  the attention weight a_ij (post-softmax);
 *   HEED_MEASURE_VALUE      value-weighted attention (norm-based, Kobayashi
 *       et al. 2020): a_ij * |W_O^h v_j|, the size of what key j adds to the
 *       head's output at query i (v_j the head's value at j, W_O^h the
 *       head's slice of the output projection). Rows do not sum to 1.
 *       Needs a run recorded with its value norms (heed_run_info
 *       has_value_norms); else views return HEED_ERR_UNSUPPORTED. */
typedef enum heed_measure { HEED_MEASURE_ATTENTION = 0, HEED_MEASURE_VALUE = 1 } heed_measure;

/* Which heads to combine: layers x heads (NULL lists = all), and how; each
 * head's row in the measure asked (0: attention), then combined. */
typedef struct heed_attn_sel {
    const int *layers;
    int n_layers;
    const int *heads;
    int n_heads;
    heed_agg agg;
    heed_measure measure;
} heed_attn_sel;

/* All layers, all heads, mean. */
heed_attn_sel heed_attn_sel_all(void);

/* The row of the newest query position while recording (a live summary:
 * the recorder holds the context's one hook, so a caller cannot observe the
 * attention itself): out[0..pos] for pos = positions decoded - 1, combined
 * by sel like heed_run_attn_row. n is out's capacity. Returns pos + 1, or
 * HEED_ERR_INVALID_ARG (nothing decoded yet, n too small, after finish),
 * HEED_ERR_UNSUPPORTED, HEED_ERR_NOMEM. */
int heed_recorder_last_row(heed_recorder *rec, const heed_attn_sel *sel, float *out, int n);

/* The step view (heed_run_step_view) of the newest step while recording:
 * in[0..n_prompt), out[0..t) for t = steps recorded - 1. Returns t, or the
 * codes of heed_recorder_last_row (no step recorded yet: HEED_ERR_INVALID_ARG). */
int heed_recorder_step_view(heed_recorder *rec, const heed_attn_sel *sel, unsigned flags, float *in, float *out,
                            float *in_mass, float *out_mass);

/* Row of query position pos: out[0..pos]. Exact (full tier or q/k); without
 * them the mean over all heads falls back to the fp16 head-mean rows.
 * HEED_OK, HEED_ERR_INVALID_ARG, HEED_ERR_UNSUPPORTED, HEED_ERR_NOMEM. */
int heed_run_attn_row(heed_run *run, const heed_attn_sel *sel, int pos, float *out);
/* Column of key position key: out[i] = attention of query key+i to key, for
 * i = 0 .. n_pos-1-key. Same returns. */
int heed_run_attn_col(heed_run *run, const heed_attn_sel *sel, int key, float *out);
/* A window of the matrix (queries q0..q1-1, keys k0..k1-1) pooled into
 * cells of bq queries x bk keys, row-major: rows = ceil((q1-q0)/bq), cols =
 * ceil((k1-k0)/bk); each cell the max (max) or the mean of its entries
 * with key <= query (0 when it has none). The entries are the rows' (a
 * sum taken query by query, keys in order). One head of a run that kept
 * its rows' softmax statistics is scored in blocks without forming rows
 * (the heatmap's overview of a long run). HEED_OK, HEED_ERR_INVALID_ARG,
 * HEED_ERR_UNSUPPORTED, HEED_ERR_NOMEM. */
int heed_run_attn_pool(heed_run *run, const heed_attn_sel *sel, int q0, int q1, int k0, int k1, int bq, int bk,
                       bool max, float *cell);
/* Dense n_pos x n_pos matrix, row-major, zeros above the diagonal. */
int heed_run_attn_matrix(heed_run *run, const heed_attn_sel *sel, float *out);

/* Options of the visualizer's step view. */
enum {
    HEED_VIEW_KEEP_BOS = 1, /* keep BOS (position 0 when it is the BOS id) as a source */
    HEED_VIEW_DROP_EOG = 2, /* also remove end-of-generation tokens inside the prompt */
};

/* Step t as the visualizer shows it: attention to the prompt (in[0..n_prompt))
 * and to earlier outputs (out[0..t)) normalized separately to sum 1
 * (weight / (sum + 1e-8)); BOS removed unless HEED_VIEW_KEEP_BOS (entry 0.0).
 * *in_mass / *out_mass (may be NULL) get the raw masses before
 * normalization (after removals). Same returns as heed_run_attn_row. */
int heed_run_step_view(heed_run *run, const heed_attn_sel *sel, int t, unsigned flags, float *in, float *out,
                       float *in_mass, float *out_mass);

typedef struct heed_edge {
    int src;      /* key position */
    float weight;
} heed_edge;

/* Sources of query pos with weight >= threshold, heaviest first (ties:
 * lower position), at most top_k of them (0: no limit) and at most n_max
 * written. Returns the number written or a negative code. */
int heed_run_edges(heed_run *run, const heed_attn_sel *sel, int pos, float threshold, int top_k,
                   heed_edge *out, int n_max);
/* The same selection over any row of n weights (a step view, say): entries
 * with weight >= threshold, heaviest first (ties: lower index), at most top_k
 * (0: no limit), at most n_max written. Returns the number written or a
 * negative code. */
int heed_edges(const float *row, int n, float threshold, int top_k, heed_edge *out, int n_max);

#define HEED_FINGERPRINT_DIM 20

typedef enum heed_zone {
    HEED_ZONE_NONE = 0,            /* no attention beyond the sink (position 0) */
    HEED_ZONE_SYNTAX_FLOOR = 1,    /* mostly local (distance <= 7) */
    HEED_ZONE_SEMANTIC_BRIDGE = 2, /* mostly mid (8 .. 255) */
    HEED_ZONE_STRUCTURE_RIPPLE = 3 /* mostly long (>= 256) */
} heed_zone;

typedef struct heed_token_stats {
    float entropy;         /* nats */
    float sink;            /* mass on position 0 */
    float local, mid, far; /* mass at distance <= 7, 8..255, >= 256 (position 0 excluded) */
    float fingerprint[HEED_FINGERPRINT_DIM];
    heed_zone zone;
} heed_token_stats;

/* Statistics of the (aggregated) row of query pos (docs/ANALYSIS.md). */
int heed_run_token_stats(heed_run *run, const heed_attn_sel *sel, int pos, heed_token_stats *out);
/* The same statistics of any row p[0..pos] of query pos (one from
 * heed_recorder_last_row, say): no run needed. HEED_OK, or
 * HEED_ERR_INVALID_ARG (a NULL pointer, pos < 0). */
int heed_row_stats(const float *row, int pos, heed_token_stats *out);
const char *heed_zone_name(heed_zone z);

typedef enum heed_head_kind {
    HEED_HEAD_OTHER = 0,
    HEED_HEAD_PREV_TOKEN = 1,
    HEED_HEAD_INDUCTION = 2,
    HEED_HEAD_SINK = 3,
    HEED_HEAD_LOCAL = 4
} heed_head_kind;

typedef struct heed_head_type {
    float prev, induction, sink, local; /* scores in [0, 1] (docs/ANALYSIS.md) */
    heed_head_kind kind;
} heed_head_type;

/* Scores and type of every head: out[layer * n_head + head]. Exact tier needed. */
int heed_run_head_types(heed_run *run, heed_head_type *out);
const char *heed_head_kind_name(heed_head_kind k);

/* Attention each prompt token receives, summed over all steps:
 * out[0..n_prompt). */
int heed_run_input_importance(heed_run *run, const heed_attn_sel *sel, float *out);

/* heed-trace/1 (docs/TRACE_FORMAT.md): the post-RoPE q and k of a run made
 * by another engine, in a directory (trace.json, layer_NNN.safetensors).
 * heed_trace_import reads one into a run with the exact tier (every row
 * recomputed by the trace's scale, soft-cap and windows; no candidates,
 * lens or probabilities: NaN), checking every shape, dtype and count;
 * messages name the file and the field. heed_run_export_trace writes a
 * run's exact tier as one (a run made under interventions is refused: the
 * format cannot say what they did). HEED_OK, HEED_ERR_IO,
 * HEED_ERR_FORMAT, HEED_ERR_UNSUPPORTED, HEED_ERR_NOMEM. */
int heed_trace_import(const char *dir, heed_run **out, char *err, size_t err_size);
int heed_run_export_trace(const heed_run *run, const char *dir, char *err, size_t err_size);

/* heed_trace_import_ex reads, besides heed-trace/1, IBM vLLM-Hook's q/k
 * captures (qk.json + qk.safetensors, one per tensor-parallel rank in
 * tp_rank_N folders; docs/TRACE_FORMAT.md), merging the ranks by global
 * head. Such a capture lacks what a run needs beyond q and k (the token
 * ids, sometimes the geometry): the params give it, and a missing piece is
 * an error naming the `heed import` flag that gives it. The params are
 * refused (HEED_ERR_INVALID_ARG) for a heed-trace/1 folder, whose
 * trace.json says everything. heed_trace_import is heed_trace_import_ex
 * with the defaults. */
typedef struct heed_trace_params {
    int sequence;               /* which sequence of a capture holding several (default 0) */
    const char *token_ids;      /* a file: the sequence's ids (a JSON list, or integers between spaces,
                                 * commas or newlines); vLLM-Hook records none, so required */
    int n_prompt;               /* 0: the queries of the sequence's first captured pass */
    int head_dim, n_head, n_head_kv; /* 0: the capture's (tp_shard, else config) */
    double scale;               /* 0: the config's attention_multiplier, else 1/sqrt(head_dim) */
    const char *sliding_window; /* NULL: none; "W" for every layer or "W0,W1,..." one per layer */
    double attn_softcap;        /* 0: none */
} heed_trace_params;
heed_trace_params heed_trace_default_params(void);
int heed_trace_import_ex(const char *dir, const heed_trace_params *p, heed_run **out, char *err, size_t err_size);

/* A run from another engine's per-step top-k attention (heed serve
 * --upstream: an OpenAI-compatible server that returns attention with its
 * tokens). The run has one layer and one head holding the engine's mean
 * over all its layers and heads, in the top-k tier only (no q/k, head-mean
 * rows, lens, candidates or value norms): the query position of step t,
 * n_prompt - 1 + t, has step t's entries; the rows of the other positions
 * (the prompt's queries) are absent and read as zeros. Entries outside
 * 0..query position, and pads (-1), are dropped. prob / logprob NULL or
 * NaN: unknown. Copies everything. HEED_OK, HEED_ERR_INVALID_ARG,
 * HEED_ERR_NOMEM; *out NULL on failure. */
typedef struct heed_run_topk_params {
    const char *model;          /* the model as the run records it (heed_run_info.model_file) */
    const char *source;         /* where the attention came from (model_name), e.g. a URL; may be NULL */
    const char *prompt_text;    /* may be NULL */
    const int32_t *ids;         /* (n_prompt + n_output) prompt then outputs, each in 0..n_vocab-1 */
    const char *const *labels;  /* (n_prompt + n_output) display labels, or NULL: the ids as text */
    int n_prompt, n_output;     /* n_prompt >= 1, n_output >= 0 */
    int n_vocab;
    const float *prob, *logprob; /* (n_output) or NULL */
    int top_k;                  /* entries per step, 1..4096 */
    const int32_t *top_pos;     /* (n_output, top_k) attended positions, heaviest first; -1 pads */
    const float *top_w;         /* (n_output, top_k) their weights */
    bool eog;                   /* the last output is an end-of-generation token */
} heed_run_topk_params;
int heed_run_from_topk(const heed_run_topk_params *p, heed_run **out);

/* Attention rollout (Abnar & Zuidema 2020, docs/ANALYSIS.md) of query
 * position pos: out[0..pos] = e_pos (A'_{L-1} ... A'_0), where A'_l =
 * 0.5 I + 0.5 A_l and A_l is layer l's attention averaged over its heads:
 * how much of position pos's final residual stream flows from each input
 * position through attention and the residual connection. Sums to 1.
 * Costs a row per position reached per layer. HEED_OK, HEED_ERR_INVALID_ARG,
 * HEED_ERR_UNSUPPORTED (no exact rows), HEED_ERR_NOMEM. */
int heed_run_rollout(heed_run *run, int pos, float *out);

typedef enum heed_span_level { HEED_SPAN_WORD = 0, HEED_SPAN_SENTENCE = 1 } heed_span_level;

typedef struct heed_span {
    int first, n_tok; /* tokens first .. first+n_tok-1 (prompt then output) */
} heed_span;

/* Words (a token whose label starts with a space or a newline starts a new
 * word; [BOS]-style labels are words of their own) or sentences (a word
 * ending in '.', '!' or '?' ends one). Returns the span count (may exceed
 * n_max: call again) or a negative code. */
int heed_run_spans(const heed_run *run, heed_span_level level, heed_span *out, int n_max);
/* out[s] = sum of tok_values over span s's tokens. */
void heed_spans_sum(const heed_span *spans, int n, const float *tok_values, float *out);

/* ---- ablation checks (docs/ANALYSIS.md, "Ablation-verified sources"):
 * re-running a run's tokens with more attention knocked out. */

typedef struct heed_rerun heed_rerun;

/* Prepares to re-run the tokens of run from position q0 (0 <= q0 <
 * n_prompt + n_output - 1) with model, the model that made the run
 * (checked), on ctx (NULL: one is made for the run's length): the tokens
 * before q0 are decoded once, as they were recorded (the prompt's in one
 * call, then one at a time) and under the run's own interventions. ctx is
 * the rerun's until heed_rerun_free (its hook removed, its interventions
 * set, and cleared at the end). HEED_OK, HEED_ERR_INVALID_ARG,
 * HEED_ERR_MODEL_MISMATCH, HEED_ERR_CONTEXT_FULL (ctx too short),
 * HEED_ERR_NOMEM, or a decode error. */
int heed_rerun_new(heed_run *run, const heed_model *model, heed_ctx *ctx, int q0, heed_rerun **out);
/* Decodes positions q0 .. q1-1 again, one at a time, with the run's
 * knockouts plus extra (n_extra of them): out[i] = the natural log of the
 * probability the model gives the run's token at q0 + i + 1 after position
 * q0 + i (q1 <= n_prompt + n_output - 1). Any number of calls; each starts
 * again from q0. HEED_OK, HEED_ERR_INVALID_ARG, HEED_ERR_NOMEM, a decode
 * error. */
int heed_rerun_logprobs(heed_rerun *r, const heed_knockout *extra, int n_extra, int q1, float *out);
void heed_rerun_free(heed_rerun *r);

/* Sources ablation-verified checks at most. */
#define HEED_VERIFY_MAX 10

typedef struct heed_source_check {
    int pos;           /* the source (key position) */
    float weight;      /* its weight in the row the sources were ranked by */
    float logprob;     /* the chosen token's log-probability with the source knocked out */
    float drop;        /* base log-probability - logprob: how much the choice depended on it */
    int32_t top_id;    /* the most likely token then */
    bool still_chosen; /* top_id is the token the run chose */
} heed_source_check;

/* The k (1..HEED_VERIFY_MAX) heaviest sources of step t's query (position
 * n_prompt - 1 + t) in the row sel gives (attention or value-weighted),
 * each checked: the query may not attend to that source in any layer or
 * head (a knockout), the step is re-run (heed_rerun), and the chosen
 * token's log-probability compared with the re-run without it
 * (*base_logprob, may be NULL). out gets them heaviest first. Returns the
 * number checked (k, or fewer for a short row) or a code as
 * heed_rerun_new's. */
int heed_run_verify_sources(heed_run *run, const heed_model *model, heed_ctx *ctx, int t, const heed_attn_sel *sel,
                            int k, heed_source_check *out, float *base_logprob);

/* Attention from the queries q0 .. q1-1 into spans of keys: out[s] = the
 * mean over those queries of the sum of the row sel gives (attention or
 * value-weighted) over span s's positions (keys after a query count 0).
 * HEED_OK, HEED_ERR_INVALID_ARG, HEED_ERR_UNSUPPORTED, HEED_ERR_NOMEM. */
int heed_run_span_attention(heed_run *run, const heed_attn_sel *sel, int q0, int q1, const heed_span *spans,
                            int n_spans, float *out);

/* The residual stream after layer `layer` at the query of step t (position
 * n_prompt - 1 + t; step 0's is the prompt's last token), as the run keeps
 * it for its logit lens (n_embd floats, owned by the run): steering vectors
 * as the difference of two runs' residuals. HEED_OK, HEED_ERR_INVALID_ARG,
 * HEED_ERR_UNSUPPORTED (the run keeps no residuals: an eager lens, a lens
 * already computed when it was saved, an import). */
int heed_run_residual(const heed_run *run, int t, int layer, const float **out);

/* ---- export */

typedef enum heed_dtype { HEED_DT_F32 = 0, HEED_DT_I32 = 1, HEED_DT_F16 = 2, HEED_DT_U32 = 3 } heed_dtype;

typedef struct heed_array {
    const char *name; /* member name in an .npz (".npy" is appended) */
    heed_dtype dtype;
    int ndim;         /* 1..4 */
    uint64_t shape[4];
    const void *data; /* C order */
} heed_array;

/* NumPy .npy v1.0 file of one array; .npz = uncompressed ZIP of .npy members. */
int heed_npy_write(const char *path, const heed_array *a, char *err, size_t err_size);
int heed_npz_write(const char *path, const heed_array *arrays, int n, char *err, size_t err_size);

/* Arrays (views the caller computed) as one JSON object:
 * {"name": {"dtype": "float32", "shape": [2, 3], "data": [...]}, ...} with
 * data flat in C order (f16 written as its float value, 9 significant digits). */
int heed_json_write_arrays(const char *path, const heed_array *arrays, int n, char *err, size_t err_size);

/* The whole run: tokens, steps, lens, and the attention tiers held
 * (docs/RUN_FORMAT.md lists the members). The top-32 and head-mean
 * summaries are written even when the run did not keep them: they are
 * computed from its exact tier (on the run's threads), equal to what
 * recording them would have kept. */
int heed_run_export_npz(heed_run *run, const char *path, char *err, size_t err_size);
/* As heed_run_export_npz, with flags: HEED_EXPORT_FULL adds the array
 * `attention`, float32 (n_layer, n_head, n_pos, n_pos): every exact row,
 * zeros above the diagonal and outside windows, for runs whose array is at
 * most HEED_EXPORT_FULL_MAX bytes (larger: HEED_ERR_UNSUPPORTED, the
 * message giving the size it would take). */
#define HEED_EXPORT_FULL 1u
#define HEED_EXPORT_FULL_MAX ((uint64_t)2 << 30)
int heed_run_export_npz_ex(heed_run *run, const char *path, unsigned flags, char *err, size_t err_size);
/* Metadata, tokens, steps and lens as one JSON object (attention stays in
 * the .npz or the views). */
int heed_run_export_json(const heed_run *run, const char *path, char *err, size_t err_size);
/* The offline HTML viewer of a run (what `heed export RUN -o OUT.html`
 * writes: one self-contained file, the web UI and the run's views computed
 * now, nothing loaded from the network), written to path. model (may be
 * NULL; the run's model) labels the candidates and computes the logit lens.
 * HEED_OK, HEED_ERR_IO (cannot write), HEED_ERR_UNSUPPORTED (built without
 * the web UI), HEED_ERR_NOMEM; err says which. */
int heed_run_export_html(heed_run *run, heed_model *model, const char *path, char *err, size_t err_size);

/* ============================================ end of runs and analysis */

/* ================================================== generation session
 *
 * One generation, as every front end runs it (CLI, server): the prompt
 * through the model, then one step per token: the choice (sampled, or taken
 * from a forced prefix: a branch of an earlier run), its record (when asked),
 * the complete UTF-8 text it finishes, and the stop rule (an
 * end-of-generation token, n_predict outputs, or a cancel). A chosen token is
 * decoded at the start of the next step, so a generation never runs a token
 * it will not use. The session owns its sampler and recorder; the model and
 * the context are the caller's and must outlive it; the context (reset at
 * start) and its hook are the session's until heed_gen_free. Threads: one at
 * a time.
 *
 *   heed_gen_start(model, ctx, &params, prompt, n, &g);
 *   while ((rc = heed_gen_next(g, &step)) == 1) { use step }
 *   heed_gen_stop(g);  heed_gen_finish(g, &run);  heed_gen_free(g);
 */

#define HEED_GEN_MAX_TOP 64

typedef struct heed_gen heed_gen;

/* Activation patching's source: the residual row after layer `layer` at
 * position `pos` of the sequence src (n_src ids, n_src > pos: another
 * run's prompt and outputs), put in place of this run's row there. The
 * source is run batched as this run is (its first n_prompt ids in one
 * call, then one at a time), so patching a run with its own rows changes
 * nothing, bit for bit. */
typedef struct heed_gen_patch {
    int layer, pos;
    const int32_t *src;
    int n_src;
} heed_gen_patch;

typedef struct heed_gen_params {
    heed_sampler_params sampler;
    int n_predict;            /* outputs at most (64; 0: the prompt is only run); cut to the context's room */
    bool record;              /* keep a recording: heed_gen_finish hands over the run (false) */
    heed_recorder_params rec; /* its tiers, when record (sampler, n_predict, prompt_text come from here) */
    const char *prompt_text;  /* for the record; may be NULL */
    const int32_t *forced;    /* the first n_forced outputs, taken instead of sampled (copied) */
    int n_forced;
    int n_top;                /* candidates reported per step (5, at most HEED_GEN_MAX_TOP) */
    const float *head_scale;  /* an intervention: (n_layer x n_head) factors on each head's attention
                               * output (heed_ctx_set_head_scale; 0 ablates), or NULL: none; a
                               * recording keeps it (heed_run_head_scale) */
    const heed_knockout *knockouts; /* an intervention in attention (heed_ctx_set_knockouts), n_knockouts
                                     * of them; a recording keeps them (heed_run_knockouts) */
    int n_knockouts;
    const unsigned char *ablate_mean; /* mean ablation: (n_layer x n_head) bytes, nonzero: the head's output
                                       * is replaced at every position by its mean over the prompt's
                                       * positions in a first, unintervened pass (heed_ctx_set_head_values);
                                       * a recording keeps the heads and the means (heed_run_head_values) */
    const heed_resid_edit *resid_edits; /* patching and steering (heed_ctx_set_resid_edits), n_resid_edits of
                                         * them; a recording keeps them (heed_run_resid_edits) */
    int n_resid_edits;
    const heed_gen_patch *patches; /* activation patching from other token sequences: each patch's row is
                                    * computed in a first pass over its source ids, then replaces this
                                    * run's row (a residual edit, recorded as one) */
    int n_patches;
    int intervene_from;       /* head_scale, ablate_mean and every-position steering apply from this position
                               * on (heed_ctx_set_intervention_start; 0: all): a branch at step t that asks
                               * "what if from here" passes its query's position, n_prompt - 1 + t */
    const heed_run *reuse;    /* KV reuse: ctx holds the KV cache this run's generation left (the caller's
                               * guarantee; NULL: none). The session then keeps the longest prefix of it
                               * that its own tokens share and that lies before every position it
                               * intervenes on, takes those positions' recording and its forced steps
                               * from the run (heed_recorder_begin_from) and decodes only the rest:
                               * the same run as without reuse, without the prefix's cost. Not with
                               * ablate_mean or patches (their first passes use the context), nor when
                               * the run was made under interventions or a recording keeps summary
                               * tiers: then the session starts from position 0. The run must outlive
                               * the session (heed_gen_finish copies the rest of its recording). */
} heed_gen_params;

heed_gen_params heed_gen_default_params(void);

typedef struct heed_gen_step {
    int index;                 /* output index, from 0 */
    heed_sample sample;        /* the choice and the model's own distribution */
    const heed_candidate *top; /* n_top best candidates, best first (valid until the next step) */
    int n_top;
    const char *text;          /* the complete UTF-8 characters this token finishes, NUL-terminated
                                * (the last step flushes what is left); valid until the next step */
    size_t text_len;
    bool last;                 /* the generation is over after this step (heed_gen_stop says why) */
} heed_gen_step;

/* Starts a generation on ctx: resets it, records the prompt when asked, runs
 * it. Returns HEED_OK, HEED_ERR_INVALID_ARG (an empty prompt, an id outside
 * the vocabulary, bad parameters: also those the sampler refuses),
 * HEED_ERR_CONTEXT_FULL (the prompt does not fit), HEED_ERR_NOMEM, or the
 * prompt's decode error (heed_ctx_error). The caller owns *out. */
int heed_gen_start(const heed_model *model, heed_ctx *ctx, const heed_gen_params *params, const int32_t *prompt,
                   int n_prompt, heed_gen **out);
/* The next step: 1 with *step filled, 0 when the generation is over (no
 * token chosen), or a negative code (a decode or recording failure). */
int heed_gen_next(heed_gen *g, heed_gen_step *step);
/* Ends the generation before its next step: heed_gen_next then returns 0
 * and the stop is "cancelled". */
void heed_gen_cancel(heed_gen *g);
/* Why it is over: "length", "eog", "cancelled"; NULL while it goes on. */
const char *heed_gen_stop(const heed_gen *g);
int heed_gen_n_output(const heed_gen *g);
const int32_t *heed_gen_output(const heed_gen *g); /* (heed_gen_n_output) ids chosen so far */
int heed_gen_n_predict(const heed_gen *g);         /* n_predict as cut to the context */
int heed_gen_reused(const heed_gen *g);            /* positions taken from params.reuse (0: none) */
/* The recorder while it records (live views: heed_recorder_last_row,
 * heed_recorder_step_view), else NULL. */
heed_recorder *heed_gen_recorder(heed_gen *g);
/* Ends the recording and hands over the run (the caller owns it); a
 * generation finished before it was over counts as cancelled. HEED_OK,
 * HEED_ERR_INVALID_ARG (not recording, or twice), HEED_ERR_NOMEM. */
int heed_gen_finish(heed_gen *g, heed_run **run);
void heed_gen_free(heed_gen *g);


#ifdef __cplusplus
}
#endif
#endif /* HEED_H */
