/*
 * hf.c - loads a Hugging Face checkpoint folder into the model structure:
 * config.json (hyperparameters), model.safetensors or the shards named by
 * model.safetensors.index.json (weights), tokenizer.json (tok_load_hf).
 *
 * Architectures: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM,
 * Qwen3ForCausalLM, Gemma3ForCausalLM (text-only Gemma 3) and
 * GPT2LMHeadModel, with no rope scaling, linear, or llama3 (whose
 * per-frequency divisors are computed here as transformers'
 * _compute_llama3_parameters does). Anything else is refused by name.
 *
 * Gemma's RMSNorm multiplies by (1 + weight): the GGUF converter stores
 * weight + 1, and so do we after binding. GPT-2 stores its projections as
 * Conv1D, [in, out]: they are transposed into owned copies.
 *
 * Weights are bound by model_bind_weights through a name translation
 * (GGUF names -> HF names), so a folder passes the same presence, type and
 * shape checks as a GGUF file. HF stores a Linear weight as [out, in]
 * row-major, which is GGUF's ne = [in, out]: matrices are used in place.
 * HF q/k rows are in "rotate_half" order (pairs i, i + head_dim/2); instead
 * of permuting them as GGUF converters do, the model uses NEOX rotation,
 * which on unpermuted rows is the same model.
 *
 * Vocabulary: config vocab_size is the embedding's row count. The tokenizer
 * may have fewer tokens (checkpoints pad the embedding); the extra ids are
 * valid model outputs shown as "[PAD]" (see model.c). More tokens than rows
 * is an error.
 *
 * Mistral's sliding window is the forward pass's (every layer); Qwen's,
 * when enabled, is not implemented: the context limit is capped at the
 * window, within which attention is exactly causal.
 */
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "fmap.h"
#include "model.h"
#include "safetensors.h"

#define HF_CONFIG "config.json"
#define HF_WEIGHTS "model.safetensors"
#define HF_INDEX "model.safetensors.index.json"
#define HF_MAX_JSON_BYTES (64u << 20) /* config / index files; real ones are kilobytes */
#define HF_MAX_SHARDS 4096
#define HF_MAX_NAME 255               /* a shard's file name */
#define HF_SHOW 64                    /* characters of a value from a file quoted in messages */

struct hf_model {
    json_t *config;       /* kept for the metadata listing */
    char **meta_keys;     /* (n_meta) "config.<key>", in file order */
    int n_meta;
    st_file **shards;     /* (n_shards) */
    char **shard_names;   /* (n_shards) file names in the folder */
    int n_shards;
    const char *weights;  /* HF_WEIGHTS or HF_INDEX: the file messages about weights name */
    uint64_t file_size;
    int n_tensors;
    void **owned;         /* (n_owned) transposed copies of GPT-2's Conv1D weights */
    int n_owned;
};

typedef struct hf_loader {
    heed_model *m;
    hf_model *h;
    const char *dir;
    const char *scope;    /* prefix of keys in messages: "" or "rope_scaling." */
    bool tied;
    char name_buf[160];   /* the HF name last looked up, for model.c's messages */
    char *err;
    size_t err_size;
} hf_loader;

__attribute__((format(printf, 4, 5))) static int fail(hf_loader *H, const char *file, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    err_vat(H->err, H->err_size, rc, file, fmt, ap);
    va_end(ap);
    return rc;
}

/* Strings from a file go into messages: no control bytes, bounded length. */
static const char *shown(const char *s, char out[HF_SHOW + 4]) {
    size_t n = 0;
    for (; s[n] && n < HF_SHOW; n++) out[n] = (unsigned char)s[n] < 0x20 || s[n] == 0x7f ? '?' : s[n];
    if (s[n]) {
        memcpy(out + n, "...", 3);
        n += 3;
    }
    out[n] = '\0';
    return out;
}

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* ---------------------------------------------------------------- JSON files */

/* Reads dir/name whole (at most HF_MAX_JSON_BYTES) into a NUL-terminated buffer. */
static int read_small_file(hf_loader *H, const char *name, char **out, size_t *len) {
    int rc = HEED_OK;
    char *path = path_join(H->dir, name);
    if (!path) return fail(H, name, HEED_ERR_NOMEM, "out of memory");
    uint64_t size = 0;
    int fd = fmap_open_fd(path, &size, H->err, H->err_size); /* regular files only: a FIFO would hang */
    *out = NULL;
    if (fd < 0) {
        rc = HEED_ERR_IO;
    } else if (size > HF_MAX_JSON_BYTES) {
        rc = fail(H, name, HEED_ERR_FORMAT, "%" PRIu64 " bytes is more than the limit of %u", size,
                  HF_MAX_JSON_BYTES);
    } else if (!(*out = malloc((size_t)size + 1))) {
        rc = fail(H, name, HEED_ERR_NOMEM, "out of memory");
    } else {
        ssize_t got = read(fd, *out, (size_t)size);
        if (got != (ssize_t)size) rc = fail(H, path, HEED_ERR_IO, "short read");
        *len = (size_t)size;
    }
    if (fd >= 0) close(fd);
    free(path);
    if (rc) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

/* Parses dir/name, which must hold one JSON object. */
static int load_json(hf_loader *H, const char *name, json_t **out) {
    char *text = NULL;
    size_t len = 0;
    *out = NULL;
    int rc = read_small_file(H, name, &text, &len);
    if (rc) return rc;
    json_error_t je;
    *out = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    free(text);
    if (!*out)
        return fail(H, name, HEED_ERR_FORMAT, "invalid JSON: %s (line %d, column %d)", je.text, je.line, je.column);
    if (!json_is_object(*out)) return fail(H, name, HEED_ERR_FORMAT, "not a JSON object");
    return HEED_OK;
}

/* ------------------------------------------------------------ config values */

/* obj[key] as an integer in lo..hi; absent or null -> def, or an error when required. */
static int cfg_int(hf_loader *H, json_t *obj, const char *key, bool required, int64_t def, int64_t lo, int64_t hi,
                   int *out) {
    json_t *v = json_object_get(obj, key);
    json_int_t x = def;
    if (!v || json_is_null(v)) {
        if (required) return fail(H, HF_CONFIG, HEED_ERR_FORMAT, "'%s%s' is missing", H->scope, key);
    } else if (!json_is_integer(v)) {
        return fail(H, HF_CONFIG, HEED_ERR_FORMAT, "'%s%s' is not an integer", H->scope, key);
    } else {
        x = json_integer_value(v);
    }
    if (x < lo || x > hi)
        return fail(H, HF_CONFIG, HEED_ERR_FORMAT, "'%s%s' = %lld is outside %lld..%lld", H->scope, key, (long long)x,
                    (long long)lo, (long long)hi);
    *out = (int)x;
    return HEED_OK;
}

/* obj[key] as a number in lo..hi; absent or null -> def, or an error when required. */
static int cfg_num(hf_loader *H, json_t *obj, const char *key, bool required, double def, double lo, double hi,
                   double *out) {
    json_t *v = json_object_get(obj, key);
    double x = def;
    if (!v || json_is_null(v)) {
        if (required) return fail(H, HF_CONFIG, HEED_ERR_FORMAT, "'%s%s' is missing", H->scope, key);
    } else if (!json_is_number(v)) {
        return fail(H, HF_CONFIG, HEED_ERR_FORMAT, "'%s%s' is not a number", H->scope, key);
    } else {
        x = json_number_value(v);
    }
    if (!(x >= lo && x <= hi))
        return fail(H, HF_CONFIG, HEED_ERR_FORMAT, "'%s%s' = %g is outside %g..%g", H->scope, key, x, lo, hi);
    *out = x;
    return HEED_OK;
}

static int cfg_bool(hf_loader *H, json_t *obj, const char *key, bool def, bool *out) {
    json_t *v = json_object_get(obj, key);
    *out = def;
    if (!v || json_is_null(v)) return HEED_OK;
    if (!json_is_boolean(v)) return fail(H, HF_CONFIG, HEED_ERR_FORMAT, "'%s%s' is not a boolean", H->scope, key);
    *out = json_is_true(v);
    return HEED_OK;
}

/* --------------------------------------------------------------- config */

static const struct {
    const char *hf;
    enum model_arch arch;
    const char *name;
    int default_ctx; /* transformers' default max_position_embeddings */
} known_archs[] = {
    {"LlamaForCausalLM", ARCH_LLAMA, "llama", 2048},
    {"MistralForCausalLM", ARCH_LLAMA, "llama", 131072},
    {"Qwen2ForCausalLM", ARCH_QWEN2, "qwen2", 32768},
    {"Qwen3ForCausalLM", ARCH_QWEN3, "qwen3", 32768},
    {"Gemma3ForCausalLM", ARCH_GEMMA3, "gemma3", 131072},
    {"GPT2LMHeadModel", ARCH_GPT2, "gpt2", 1024},
};

static int load_arch(hf_loader *H, json_t *cfg, int *default_ctx) {
    char a[HF_SHOW + 4];
    json_t *archs = json_object_get(cfg, "architectures");
    const char *s = json_string_value(json_array_get(archs, 0));
    if (!archs) return fail(H, HF_CONFIG, HEED_ERR_FORMAT, "'architectures' is missing");
    if (!s) return fail(H, HF_CONFIG, HEED_ERR_FORMAT, "'architectures' is not a non-empty array of strings");
    for (size_t i = 0; i < sizeof known_archs / sizeof known_archs[0]; i++) {
        if (strcmp(s, known_archs[i].hf) == 0) {
            H->m->arch = known_archs[i].arch;
            H->m->arch_name = known_archs[i].name;
            *default_ctx = known_archs[i].default_ctx;
            return HEED_OK;
        }
    }
    return fail(H, HF_CONFIG, HEED_ERR_UNSUPPORTED,
                "architecture '%s' is not supported (heed reads LlamaForCausalLM, MistralForCausalLM, "
                "Qwen2ForCausalLM, Qwen3ForCausalLM, Gemma3ForCausalLM, GPT2LMHeadModel)", shown(s, a));
}

/* Variants of these architectures that the forward pass does not implement. */
static int check_variant(hf_loader *H, json_t *cfg) {
    char a[HF_SHOW + 4];
    /* the activation each family implements: GELU's tanh form for Gemma 3 and GPT-2 */
    const enum model_arch arch = H->m->arch;
    const char *key = arch == ARCH_GEMMA3 ? "hidden_activation" : arch == ARCH_GPT2 ? "activation_function" : "hidden_act";
    const char *want = arch == ARCH_GEMMA3 ? "gelu_pytorch_tanh" : arch == ARCH_GPT2 ? "gelu_new" : "silu";
    const char *act = json_string_value(json_object_get(cfg, key));
    if (act && strcmp(act, want) != 0)
        return fail(H, HF_CONFIG, HEED_ERR_UNSUPPORTED, "%s '%s' is not supported (heed implements %s)", key,
                    shown(act, a), want);
    /* Qwen2 always has q/k/v biases; elsewhere attention_bias adds an o_proj bias too */
    if (H->m->arch != ARCH_QWEN2 && json_is_true(json_object_get(cfg, "attention_bias")))
        return fail(H, HF_CONFIG, HEED_ERR_UNSUPPORTED, "'attention_bias' true is not supported");
    if (json_is_true(json_object_get(cfg, "mlp_bias")))
        return fail(H, HF_CONFIG, HEED_ERR_UNSUPPORTED, "'mlp_bias' true is not supported");
    json_t *q = json_object_get(cfg, "quantization_config");
    if (q && !json_is_null(q)) {
        const char *method = json_string_value(json_object_get(q, "quant_method"));
        return fail(H, HF_CONFIG, HEED_ERR_UNSUPPORTED, "quantized checkpoints are not supported (quant_method '%s')",
                    method ? shown(method, a) : "?");
    }
    return HEED_OK;
}

static int load_heads(hf_loader *H, json_t *cfg) {
    heed_model *m = H->m;
    int rc;
    if ((rc = cfg_int(H, cfg, "num_attention_heads", true, 0, 1, MODEL_MAX_HEADS, &m->n_head))) return rc;
    if ((rc = cfg_int(H, cfg, "num_key_value_heads", false, m->n_head, 1, m->n_head, &m->n_head_kv))) return rc;
    if (m->n_head % m->n_head_kv)
        return fail(H, HF_CONFIG, HEED_ERR_FORMAT,
                    "'num_attention_heads' %d is not a multiple of 'num_key_value_heads' %d",
                    m->n_head, m->n_head_kv);
    json_t *hd = json_object_get(cfg, "head_dim");
    if ((!hd || json_is_null(hd)) && m->n_embd % m->n_head)
        return fail(H, HF_CONFIG, HEED_ERR_FORMAT,
                    "'hidden_size' %d is not a multiple of 'num_attention_heads' %d (and 'head_dim' is not given)",
                    m->n_embd, m->n_head);
    if ((rc = cfg_int(H, cfg, "head_dim", false, m->n_embd / m->n_head, 2, MODEL_MAX_DIM / 4, &m->head_dim)))
        return rc;
    if (m->head_dim % 2) return fail(H, HF_CONFIG, HEED_ERR_FORMAT, "'head_dim' %d is odd", m->head_dim);
    if ((int64_t)m->head_dim * m->n_head > MODEL_MAX_DIM)
        return fail(H, HF_CONFIG, HEED_ERR_FORMAT, "num_attention_heads x head_dim is too large");
    m->n_rot = m->head_dim;
    return HEED_OK;
}

/* Mistral attends to the last sliding_window keys in every layer, as the
 * forward pass does for a model with n_swa. Qwen's use_sliding_window
 * applies only from max_window_layers on, which heed does not implement:
 * capping the context at the window keeps its attention exact. */
static int sliding_window(hf_loader *H, json_t *cfg) {
    heed_model *m = H->m;
    bool on = m->arch == ARCH_LLAMA;
    int rc, window;
    if (m->arch != ARCH_LLAMA && (rc = cfg_bool(H, cfg, "use_sliding_window", false, &on))) return rc;
    if (!on) return HEED_OK;
    if ((rc = cfg_int(H, cfg, "sliding_window", false, m->n_ctx_train, 1, MODEL_MAX_CTX, &window))) return rc;
    if (window >= m->n_ctx_train) return HEED_OK;
    if (m->arch == ARCH_LLAMA) {
        m->n_swa = window;
        m->swa_pattern = 1;
    } else {
        m->n_ctx_train = window;
    }
    return HEED_OK;
}

/* GPT-2's own spelling of the geometry; learned positions, LayerNorm, tied output. */
static int load_hparams_gpt2(hf_loader *H, json_t *cfg) {
    heed_model *m = H->m;
    int rc;
    double eps;
    if ((rc = cfg_int(H, cfg, "n_embd", true, 0, 1, MODEL_MAX_DIM, &m->n_embd))) return rc;
    if ((rc = cfg_int(H, cfg, "n_layer", true, 0, 1, MODEL_MAX_LAYERS, &m->n_layer))) return rc;
    if ((rc = cfg_int(H, cfg, "n_head", true, 0, 1, MODEL_MAX_HEADS, &m->n_head))) return rc;
    if (m->n_embd % m->n_head)
        return fail(H, HF_CONFIG, HEED_ERR_FORMAT, "'n_embd' %d is not a multiple of 'n_head' %d", m->n_embd, m->n_head);
    if ((rc = cfg_int(H, cfg, "n_inner", false, 4 * (int64_t)m->n_embd, 1, MODEL_MAX_DIM, &m->n_ff))) return rc;
    if ((rc = cfg_int(H, cfg, "vocab_size", true, 0, 1, MODEL_MAX_VOCAB, &m->n_vocab))) return rc;
    if ((rc = cfg_int(H, cfg, "n_positions", false, 1024, 1, MODEL_MAX_CTX, &m->n_ctx_train))) return rc;
    if ((rc = cfg_num(H, cfg, "layer_norm_epsilon", false, 1e-5, 0.0, 1.0, &eps))) return rc;
    m->n_head_kv = m->n_head;
    m->head_dim = m->n_embd / m->n_head;
    m->rope_base = 10000.0f;
    model_arch_defaults(m);
    m->rms_eps = (float)eps;
    m->n_rot = 0;
    H->tied = true; /* lm_head is the embedding */
    return HEED_OK;
}

/* Gemma 3's extras: the local layers' RoPE base and window, the query
 * scale, soft-caps where a checkpoint sets them. The sliding layers are
 * sliding_window_pattern's, or layer_types' when it is a repeating pattern. */
static int load_gemma3(hf_loader *H, json_t *cfg) {
    heed_model *m = H->m;
    char a[HF_SHOW + 4];
    double base_local, qpas, cap;
    int rc;
    if ((rc = cfg_num(H, cfg, "rope_local_base_freq", false, 10000.0, 1.0, 1e12, &base_local))) return rc;
    m->rope_base_local = (float)base_local;
    if ((rc = cfg_num(H, cfg, "query_pre_attn_scalar", false, m->head_dim, 1e-6, 1e9, &qpas))) return rc;
    m->attn_scale = 1.0f / sqrtf((float)qpas);
    if ((rc = cfg_num(H, cfg, "attn_logit_softcapping", false, 0.0, 0.0, 1e6, &cap))) return rc;
    m->attn_softcap = (float)cap;
    if ((rc = cfg_num(H, cfg, "final_logit_softcapping", false, 0.0, 0.0, 1e6, &cap))) return rc;
    m->final_softcap = (float)cap;
    if ((rc = cfg_int(H, cfg, "sliding_window", true, 0, 1, MODEL_MAX_CTX, &m->n_swa))) return rc;
    if ((rc = cfg_int(H, cfg, "sliding_window_pattern", false, 6, 1, MODEL_MAX_LAYERS, &m->swa_pattern))) return rc;
    json_t *types = json_object_get(cfg, "layer_types");
    if (types && !json_is_null(types)) {
        if (!json_is_array(types) || json_array_size(types) != (size_t)m->n_layer)
            return fail(H, HF_CONFIG, HEED_ERR_FORMAT, "'layer_types' is not an array of %d strings", m->n_layer);
        int pattern = 0;
        for (int il = 0; il < m->n_layer && !pattern; il++) {
            const char *t = json_string_value(json_array_get(types, (size_t)il));
            if (t && !strcmp(t, "full_attention")) pattern = il + 1;
        }
        m->swa_pattern = pattern ? pattern : m->n_layer + 1;
        for (int il = 0; il < m->n_layer; il++) {
            const char *t = json_string_value(json_array_get(types, (size_t)il));
            bool local = m->swa_pattern <= 1 || il % m->swa_pattern < m->swa_pattern - 1;
            if (!t || strcmp(t, local ? "sliding_attention" : "full_attention"))
                return fail(H, HF_CONFIG, HEED_ERR_UNSUPPORTED,
                            "'layer_types[%d]' = '%s' does not follow a repeating pattern of sliding layers and one "
                            "full layer", il, t ? shown(t, a) : "(not a string)");
        }
    }
    if (m->n_swa > m->n_ctx_train)
        return fail(H, HF_CONFIG, HEED_ERR_FORMAT, "'sliding_window' %d is larger than the context (%d)", m->n_swa,
                    m->n_ctx_train);
    return HEED_OK;
}

static int load_hparams(hf_loader *H, json_t *cfg) {
    heed_model *m = H->m;
    int rc, default_ctx = 0;
    double eps, theta;
    if ((rc = load_arch(H, cfg, &default_ctx)) || (rc = check_variant(H, cfg))) return rc;
    if (m->arch == ARCH_GPT2) return load_hparams_gpt2(H, cfg);
    if ((rc = cfg_int(H, cfg, "hidden_size", true, 0, 1, MODEL_MAX_DIM, &m->n_embd))) return rc;
    if ((rc = cfg_int(H, cfg, "num_hidden_layers", true, 0, 1, MODEL_MAX_LAYERS, &m->n_layer))) return rc;
    if ((rc = cfg_int(H, cfg, "intermediate_size", true, 0, 1, MODEL_MAX_DIM, &m->n_ff))) return rc;
    if ((rc = cfg_int(H, cfg, "vocab_size", true, 0, 1, MODEL_MAX_VOCAB, &m->n_vocab))) return rc;
    if ((rc = cfg_int(H, cfg, "max_position_embeddings", false, default_ctx, 1, MODEL_MAX_CTX, &m->n_ctx_train)))
        return rc;
    if ((rc = load_heads(H, cfg))) return rc;
    if ((rc = cfg_num(H, cfg, "rms_norm_eps", false, 1e-6, 0.0, 1.0, &eps))) return rc;
    if ((rc = cfg_num(H, cfg, "rope_theta", false, 10000.0, 1.0, 1e12, &theta))) return rc;
    if ((rc = cfg_bool(H, cfg, "tie_word_embeddings", m->arch == ARCH_GEMMA3, &H->tied))) return rc;
    m->rms_eps = (float)eps;
    m->rope_base = (float)theta;
    model_arch_defaults(m);
    m->rope_neox = true; /* see the top of the file */
    if (m->arch == ARCH_GEMMA3) return load_gemma3(H, cfg);
    return sliding_window(H, cfg);
}

/* ------------------------------------------------------------- rope scaling */

/*
 * The divisor of each frequency, as transformers' _compute_llama3_parameters
 * rescales inv_freq: wavelengths shorter than old_ctx / high_freq_factor keep
 * their frequency, longer than old_ctx / low_freq_factor are divided by
 * factor, and those between are interpolated.
 */
static void llama3_divisors(float *out, int n_rot, double base, double factor, double lo, double hi, double old_ctx) {
    const double lo_wavelen = old_ctx / lo, hi_wavelen = old_ctx / hi;
    for (int i = 0; i < n_rot / 2; i++) {
        double inv_freq = pow(base, -2.0 * i / n_rot), wavelen = 2.0 * M_PI / inv_freq;
        double div = 1.0;
        if (wavelen > lo_wavelen) {
            div = factor;
        } else if (wavelen >= hi_wavelen) {
            double smooth = (old_ctx / wavelen - lo) / (hi - lo);
            div = 1.0 / ((1.0 - smooth) / factor + smooth);
        }
        out[i] = (float)div;
    }
}

static int rope_llama3(hf_loader *H, json_t *rs) {
    heed_model *m = H->m;
    double factor, lo, hi;
    int old_ctx, rc;
    if ((rc = cfg_num(H, rs, "factor", true, 0, 1e-6, 1e6, &factor))) return rc;
    if ((rc = cfg_num(H, rs, "low_freq_factor", true, 0, 1e-6, 1e6, &lo))) return rc;
    if ((rc = cfg_num(H, rs, "high_freq_factor", true, 0, 1e-6, 1e6, &hi))) return rc;
    if ((rc = cfg_int(H, rs, "original_max_position_embeddings", true, 0, 1, MODEL_MAX_CTX, &old_ctx))) return rc;
    if (!(hi > lo))
        return fail(H, HF_CONFIG, HEED_ERR_FORMAT,
                    "'rope_scaling.high_freq_factor' %g is not above low_freq_factor %g",
                    hi, lo);
    if (!(m->rope_freqs = malloc(sizeof(float) * (size_t)(m->n_rot / 2))))
        return fail(H, HF_CONFIG, HEED_ERR_NOMEM, "out of memory");
    llama3_divisors(m->rope_freqs, m->n_rot, m->rope_base, factor, lo, hi, old_ctx);
    return HEED_OK;
}

static int load_rope_scaling(hf_loader *H, json_t *cfg) {
    char a[HF_SHOW + 4];
    json_t *rs = json_object_get(cfg, "rope_scaling");
    if (!rs || json_is_null(rs)) return HEED_OK;
    if (!json_is_object(rs)) return fail(H, HF_CONFIG, HEED_ERR_FORMAT, "'rope_scaling' is not an object");
    json_t *jt = json_object_get(rs, "rope_type");
    if (!jt) jt = json_object_get(rs, "type"); /* the older spelling */
    const char *type = json_string_value(jt);
    if (!type) return fail(H, HF_CONFIG, HEED_ERR_FORMAT, "'rope_scaling' has no string 'rope_type'");
    if (strcmp(type, "default") == 0) return HEED_OK;
    int rc = HEED_OK;
    H->scope = "rope_scaling.";
    if (strcmp(type, "llama3") == 0) {
        rc = rope_llama3(H, rs);
    } else if (strcmp(type, "linear") == 0) {
        double factor;
        if (!(rc = cfg_num(H, rs, "factor", true, 0, 1e-6, 1e6, &factor)))
            H->m->rope_freq_scale = (float)(1.0 / factor);
    } else {
        rc = fail(H, HF_CONFIG, HEED_ERR_UNSUPPORTED,
                  "rope_scaling type '%s' is not supported (heed implements linear and llama3)", shown(type, a));
    }
    H->scope = "";
    return rc;
}

/* ------------------------------------------------------------ weight files */

static int add_shard(hf_loader *H, const char *name) {
    hf_model *h = H->h;
    char *path = path_join(H->dir, name);
    char *copy = strdup(name);
    int rc = HEED_OK;
    if (!path || !copy) {
        rc = fail(H, name, HEED_ERR_NOMEM, "out of memory");
        goto done;
    }
    st_file *f = st_open(path, name, &rc, H->err, H->err_size);
    if (!f) goto done;
    h->shards[h->n_shards] = f;
    h->shard_names[h->n_shards++] = copy;
    copy = NULL;
    if (__builtin_add_overflow(h->file_size, f->file_size, &h->file_size) ||
        __builtin_add_overflow(h->n_tensors, f->n_tensors, &h->n_tensors))
        rc = fail(H, name, HEED_ERR_FORMAT, "the weight files are too large together");
done:
    free(copy);
    free(path);
    return rc;
}

static int alloc_shards(hf_loader *H, size_t n) {
    hf_model *h = H->h;
    h->shards = calloc(n, sizeof *h->shards);
    h->shard_names = calloc(n, sizeof *h->shard_names);
    if (!h->shards || !h->shard_names) return fail(H, h->weights, HEED_ERR_NOMEM, "out of memory");
    return HEED_OK;
}

/* A shard must be a plain file name in the folder: no path, no "..". */
static bool shard_name_ok(const char *s) {
    size_t n = strlen(s);
    return n > 0 && n <= HF_MAX_NAME && !strchr(s, '/') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int by_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* The distinct file names of weight_map, sorted; they point into the index JSON. */
static int list_shards(hf_loader *H, json_t *map, const char ***out, size_t *n_out) {
    char a[HF_SHOW + 4], b[HF_SHOW + 4];
    size_t n = 0, cap = json_object_size(map);
    const char **names = calloc(cap ? cap : 1, sizeof *names);
    if (!names) return fail(H, HF_INDEX, HEED_ERR_NOMEM, "out of memory");
    const char *key;
    json_t *val;
    json_object_foreach(map, key, val) {
        const char *file = json_string_value(val);
        if (!file || !shard_name_ok(file)) {
            free(names);
            return fail(H, HF_INDEX, HEED_ERR_FORMAT,
                        "tensor '%s' maps to '%s', which is not a file name in the folder",
                        shown(key, a), file ? shown(file, b) : "(not a string)");
        }
        size_t i = 0;
        while (i < n && strcmp(names[i], file) != 0) i++;
        if (i == n) names[n++] = file;
        if (n > HF_MAX_SHARDS) {
            free(names);
            return fail(H, HF_INDEX, HEED_ERR_FORMAT, "more than %d shard files", HF_MAX_SHARDS);
        }
    }
    qsort(names, n, sizeof *names, by_str);
    *out = names;
    *n_out = n;
    return HEED_OK;
}

/* Every weight_map entry is in the shard it names, and no tensor is in two shards. */
static int check_index(hf_loader *H, json_t *map) {
    const hf_model *h = H->h;
    char a[HF_SHOW + 4], b[HF_SHOW + 4];
    const char *key;
    json_t *val;
    json_object_foreach(map, key, val) {
        int s = 0;
        while (strcmp(h->shard_names[s], json_string_value(val)) != 0) s++;
        if (!st_find(h->shards[s], key))
            return fail(H, HF_INDEX, HEED_ERR_FORMAT, "tensor '%s' is mapped to '%s', which does not hold it",
                        shown(key, a), shown(h->shard_names[s], b));
    }
    for (int s = 1; s < h->n_shards; s++)
        for (int i = 0; i < h->shards[s]->n_tensors; i++)
            for (int r = 0; r < s; r++)
                if (st_find(h->shards[r], h->shards[s]->tensors[i].name))
                    return fail(H, HF_INDEX, HEED_ERR_FORMAT, "tensor '%s' is in both '%s' and '%s'",
                                shown(h->shards[s]->tensors[i].name, a), h->shard_names[r], h->shard_names[s]);
    return HEED_OK;
}

static int open_index(hf_loader *H) {
    json_t *index;
    const char **names = NULL;
    size_t n = 0;
    int rc = load_json(H, HF_INDEX, &index);
    if (rc) goto done;
    json_t *map = json_object_get(index, "weight_map");
    if (!json_is_object(map) || json_object_size(map) == 0) {
        rc = fail(H, HF_INDEX, HEED_ERR_FORMAT, "'weight_map' is missing, empty or not an object");
        goto done;
    }
    if ((rc = list_shards(H, map, &names, &n)) || (rc = alloc_shards(H, n))) goto done;
    for (size_t i = 0; i < n && !rc; i++) rc = add_shard(H, names[i]);
    if (!rc) rc = check_index(H, map);
done:
    free(names);
    json_decref(index);
    return rc;
}

static int open_weights(hf_loader *H) {
    char *single = path_join(H->dir, HF_WEIGHTS), *index = path_join(H->dir, HF_INDEX);
    int rc = HEED_OK;
    if (!single || !index) {
        rc = fail(H, H->dir, HEED_ERR_NOMEM, "out of memory");
    } else if (access(single, F_OK) == 0) { /* transformers prefers the single file too */
        H->h->weights = HF_WEIGHTS;
        if (!(rc = alloc_shards(H, 1))) rc = add_shard(H, HF_WEIGHTS);
    } else if (access(index, F_OK) == 0) {
        H->h->weights = HF_INDEX;
        rc = open_index(H);
    } else {
        rc = fail(H, H->dir, HEED_ERR_IO, "no %s or %s in the folder", HF_WEIGHTS, HF_INDEX);
    }
    free(single);
    free(index);
    return rc;
}

/* ---------------------------------------------------------- name mapping */

static const struct {
    const char *gguf, *hf;
} global_names[] = {
    {"token_embd.weight", "model.embed_tokens.weight"},
    {"output_norm.weight", "model.norm.weight"},
    {"output.weight", "lm_head.weight"},
};

/* "blk.N.<gguf>" -> "model.layers.N.<hf>" */
static const struct {
    const char *gguf, *hf;
} layer_names[] = {
    {"attn_norm.weight", "input_layernorm.weight"},
    {"attn_q.weight", "self_attn.q_proj.weight"},
    {"attn_k.weight", "self_attn.k_proj.weight"},
    {"attn_v.weight", "self_attn.v_proj.weight"},
    {"attn_output.weight", "self_attn.o_proj.weight"},
    {"attn_q.bias", "self_attn.q_proj.bias"},
    {"attn_k.bias", "self_attn.k_proj.bias"},
    {"attn_v.bias", "self_attn.v_proj.bias"},
    {"attn_q_norm.weight", "self_attn.q_norm.weight"},
    {"attn_k_norm.weight", "self_attn.k_norm.weight"},
    {"ffn_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_gate.weight", "mlp.gate_proj.weight"},
    {"ffn_up.weight", "mlp.up_proj.weight"},
    {"ffn_down.weight", "mlp.down_proj.weight"},
};

/* Gemma 3's norms around each block: its names, where llama's differ. */
static const struct {
    const char *gguf, *hf;
} gemma3_names[] = {
    {"post_attention_norm.weight", "post_attention_layernorm.weight"},
    {"ffn_norm.weight", "pre_feedforward_layernorm.weight"},
    {"post_ffw_norm.weight", "post_feedforward_layernorm.weight"},
};

/* GPT-2 ("transformer." may prefix every name); transpose: a Conv1D weight, stored [in, out]. */
static const struct {
    const char *gguf, *hf;
    bool transpose;
} gpt2_names[] = {
    {"token_embd.weight", "wte.weight", false},
    {"position_embd.weight", "wpe.weight", false},
    {"output_norm.weight", "ln_f.weight", false},
    {"output_norm.bias", "ln_f.bias", false},
    {"attn_norm.weight", "ln_1.weight", false},
    {"attn_norm.bias", "ln_1.bias", false},
    {"attn_qkv.weight", "attn.c_attn.weight", true},
    {"attn_qkv.bias", "attn.c_attn.bias", false},
    {"attn_output.weight", "attn.c_proj.weight", true},
    {"attn_output.bias", "attn.c_proj.bias", false},
    {"ffn_norm.weight", "ln_2.weight", false},
    {"ffn_norm.bias", "ln_2.bias", false},
    {"ffn_up.weight", "mlp.c_fc.weight", true},
    {"ffn_up.bias", "mlp.c_fc.bias", false},
    {"ffn_down.weight", "mlp.c_proj.weight", true},
    {"ffn_down.bias", "mlp.c_proj.bias", false},
};

/* "blk.N.rest" -> N and rest; false for a global name */
static bool layer_of(const char *gguf, long *layer, const char **rest) {
    char *end;
    if (strncmp(gguf, "blk.", 4) != 0) return false;
    *layer = strtol(gguf + 4, &end, 10);
    if (end == gguf + 4 || *end != '.') return false;
    *rest = end + 1;
    return true;
}

/* GPT-2's name (without the optional "transformer." prefix). */
static bool gpt2_name(const char *gguf, char *buf, size_t size, bool *transpose) {
    long layer = -1;
    const char *rest = gguf;
    bool in_layer = layer_of(gguf, &layer, &rest);
    for (size_t i = 0; i < sizeof gpt2_names / sizeof gpt2_names[0]; i++) {
        if (strcmp(rest, gpt2_names[i].gguf) != 0) continue;
        bool global = !strncmp(gpt2_names[i].hf, "wte", 3) || !strncmp(gpt2_names[i].hf, "wpe", 3) ||
                      !strncmp(gpt2_names[i].hf, "ln_f", 4);
        if (global == in_layer) return false;
        if (in_layer) snprintf(buf, size, "h.%ld.%s", layer, gpt2_names[i].hf);
        else snprintf(buf, size, "%s", gpt2_names[i].hf);
        *transpose = gpt2_names[i].transpose;
        return true;
    }
    return false;
}

/* The HF name of a GGUF tensor name into buf, or false when HF has none
 * (rope_freqs: computed from config.json). */
static bool hf_name(enum model_arch arch, const char *gguf, char *buf, size_t size, bool *transpose) {
    *transpose = false;
    if (arch == ARCH_GPT2) return gpt2_name(gguf, buf, size, transpose);
    long layer;
    const char *rest;
    if (arch == ARCH_GEMMA3 && layer_of(gguf, &layer, &rest))
        for (size_t i = 0; i < sizeof gemma3_names / sizeof gemma3_names[0]; i++)
            if (strcmp(rest, gemma3_names[i].gguf) == 0) {
                snprintf(buf, size, "model.layers.%ld.%s", layer, gemma3_names[i].hf);
                return true;
            }
    for (size_t i = 0; i < sizeof global_names / sizeof global_names[0]; i++) {
        if (strcmp(gguf, global_names[i].gguf) == 0) {
            snprintf(buf, size, "%s", global_names[i].hf);
            return true;
        }
    }
    if (!layer_of(gguf, &layer, &rest)) return false;
    for (size_t i = 0; i < sizeof layer_names / sizeof layer_names[0]; i++) {
        if (strcmp(rest, layer_names[i].gguf) == 0) {
            snprintf(buf, size, "model.layers.%ld.%s", layer, layer_names[i].hf);
            return true;
        }
    }
    return false;
}

static const int ggml_of_dtype[] = {[ST_F32] = GGML_F32, [ST_F16] = GGML_F16, [ST_BF16] = GGML_BF16};

static void describe(const st_tensor *s, const char *file, model_tensor *t) {
    t->name = s->name;
    t->file = file;
    t->type = ggml_of_dtype[s->dtype];
    t->n_dims = s->n_dims;
    t->outer_first = true;
    for (int d = 0; d < GGUF_MAX_DIMS; d++) t->ne[d] = d < s->n_dims ? s->shape[s->n_dims - 1 - d] : 1;
    t->data = s->data;
}

/* A Conv1D weight [in, out] as the [out, in] matrix the forward pass reads:
 * an owned copy (kept until the model is freed). False when out of memory. */
static bool transposed(hf_loader *H, model_tensor *t) {
    hf_model *h = H->h;
    if (t->n_dims != 2) return true; /* the shape check names it */
    size_t el = t->type == GGML_F32 ? 4 : 2, rows = (size_t)t->ne[1], cols = (size_t)t->ne[0];
    void **grown = realloc(h->owned, sizeof *h->owned * (size_t)(h->n_owned + 1));
    if (!grown) return false;
    h->owned = grown;
    size_t bytes = el * rows * cols;
    unsigned char *dst = malloc(bytes > 0 ? bytes : 1);
    if (!dst) return false;
    h->owned[h->n_owned++] = dst;
    const unsigned char *src = t->data;
    for (size_t r = 0; r < rows; r++) /* src row r (input r) -> column r of dst */
        for (size_t c = 0; c < cols; c++) memcpy(dst + (c * rows + r) * el, src + (r * cols + c) * el, el);
    t->data = dst;
    t->ne[0] = (int64_t)rows;
    t->ne[1] = (int64_t)cols;
    return true;
}

/* model_source.find: GGUF name -> HF name -> the shard that holds it. */
static bool find_tensor(void *ctx, const char *gguf, model_tensor *t) {
    hf_loader *H = ctx;
    const hf_model *h = H->h;
    bool transpose;
    /* tied: transformers ignores a stored lm_head.weight, and so do we */
    if ((H->tied && strcmp(gguf, "output.weight") == 0) ||
        !hf_name(H->m->arch, gguf, H->name_buf, sizeof H->name_buf, &transpose))
        return false;
    t->outer_first = true;
    t->name = H->name_buf;
    t->file = h->weights;
    for (int pass = 0; pass < (H->m->arch == ARCH_GPT2 ? 2 : 1); pass++) {
        if (pass) { /* GPT-2 checkpoints name their tensors with or without "transformer." */
            char bare[sizeof H->name_buf];
            memcpy(bare, H->name_buf, sizeof bare);
            if (strlen(bare) + sizeof "transformer." > sizeof H->name_buf) return false;
            memcpy(H->name_buf, "transformer.", sizeof "transformer." - 1);
            memcpy(H->name_buf + sizeof "transformer." - 1, bare, strlen(bare) + 1);
        }
        for (int s = 0; s < h->n_shards; s++) {
            const st_tensor *st = st_find(h->shards[s], H->name_buf);
            if (st) {
                describe(st, h->shard_names[s], t);
                if (transpose && !transposed(H, t)) return false;
                return true;
            }
        }
    }
    return false;
}

/* Gemma's norms weigh by (1 + weight); the forward pass multiplies by what
 * it binds, as the GGUF converter stores it. */
static void gemma_norms(heed_model *m) {
    float *v[] = {m->output_norm};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++)
        for (int k = 0; k < m->n_embd; k++) v[i][k] += 1.0f;
    for (int il = 0; il < m->n_layer; il++) {
        model_layer *ly = &m->layers[il];
        float *e[] = {ly->attn_norm, ly->post_attn_norm, ly->ffn_norm, ly->post_ffn_norm};
        for (size_t i = 0; i < sizeof e / sizeof *e; i++)
            for (int k = 0; e[i] && k < m->n_embd; k++) e[i][k] += 1.0f;
        float *hn[] = {ly->q_norm, ly->k_norm};
        for (size_t i = 0; i < sizeof hn / sizeof *hn; i++)
            for (int k = 0; hn[i] && k < m->head_dim; k++) hn[i][k] += 1.0f;
    }
}

/* ---------------------------------------------------------------- loading */

static int load_meta(hf_loader *H, json_t *cfg) {
    hf_model *h = H->h;
    size_t n = json_object_size(cfg);
    if (n && !(h->meta_keys = calloc(n, sizeof *h->meta_keys)))
        return fail(H, HF_CONFIG, HEED_ERR_NOMEM, "out of memory");
    const char *key;
    json_t *val;
    json_object_foreach(cfg, key, val) {
        size_t len = strlen(key) + sizeof "config.";
        if (!(h->meta_keys[h->n_meta] = malloc(len))) return fail(H, HF_CONFIG, HEED_ERR_NOMEM, "out of memory");
        snprintf(h->meta_keys[h->n_meta++], len, "config.%s", key);
    }
    return HEED_OK;
}

/* general.name's counterpart: the checkpoint's _name_or_path, else the folder's name. */
static int load_name(hf_loader *H, json_t *cfg) {
    const char *s = json_string_value(json_object_get(cfg, "_name_or_path"));
    size_t len = s ? strlen(s) : 0;
    if (!len) {
        s = H->dir;
        len = strlen(s);
        while (len > 1 && s[len - 1] == '/') len--;
        size_t start = len;
        while (start > 0 && s[start - 1] != '/') start--;
        if (start < len) {
            s += start;
            len -= start;
        }
    }
    H->m->name = strndup(s, len > 256 ? 256 : len);
    return H->m->name ? HEED_OK : fail(H, HF_CONFIG, HEED_ERR_NOMEM, "out of memory");
}

static int load_tokenizer(hf_loader *H) {
    heed_model *m = H->m;
    int rc = HEED_OK;
    m->vocab = tok_load_hf(H->dir, &rc, H->err, H->err_size);
    if (!m->vocab) return rc ? rc : HEED_ERR_FORMAT;
    if (tok_n_vocab(m->vocab) > m->n_vocab)
        return fail(H, "tokenizer.json", HEED_ERR_FORMAT, "%d tokens are more than the model's vocab_size %d",
                    tok_n_vocab(m->vocab), m->n_vocab);
    return HEED_OK;
}

static void prefault(const hf_model *h) {
    if (h->file_size < MODEL_PROGRESS_MIN_BYTES) return;
    for (int s = 0; s < h->n_shards; s++)
        model_prefault(h->shard_names[s], h->shards[s]->map, h->shards[s]->file_size);
}

int hf_load(heed_model *m, const char *dir, const heed_model_params *params, char *err, size_t err_size) {
    hf_loader H = {.m = m, .dir = dir, .scope = "", .err = err, .err_size = err_size};
    if (!(m->hf = H.h = calloc(1, sizeof *H.h))) return HEED_ERR_NOMEM;
    int rc = load_json(&H, HF_CONFIG, &m->hf->config);
    json_t *cfg = m->hf->config;
    if (rc || (rc = load_hparams(&H, cfg)) || (rc = load_rope_scaling(&H, cfg))) return rc;
    if ((rc = load_meta(&H, cfg)) || (rc = load_name(&H, cfg))) return rc;
    /* weights before the tokenizer: its JSON is megabytes, parsed only for a sound checkpoint */
    if ((rc = open_weights(&H))) return rc;
    model_source src = {.find = find_tensor, .ctx = &H, .output_required = !H.tied};
    if ((rc = model_bind_weights(m, &src, m->hf->weights, err, err_size))) return rc;
    if (m->arch == ARCH_GEMMA3) gemma_norms(m);
    if ((rc = load_tokenizer(&H))) return rc;
    if (params && params->progress) prefault(m->hf);
    return HEED_OK;
}

void hf_free(hf_model *h) {
    if (!h) return;
    for (int i = 0; i < h->n_shards; i++) {
        st_close(h->shards[i]);
        free(h->shard_names[i]);
    }
    free(h->shards);
    free(h->shard_names);
    for (int i = 0; i < h->n_meta; i++) free(h->meta_keys[i]);
    free(h->meta_keys);
    for (int i = 0; i < h->n_owned; i++) free(h->owned[i]);
    free(h->owned);
    json_decref(h->config);
    free(h);
}

/* --------------------------------------------------------------- listings */

uint64_t hf_file_size(const hf_model *h) { return h->file_size; }

int hf_n_meta(const hf_model *h) { return h->n_meta; }

const char *hf_meta_key(const hf_model *h, int i) { return i >= 0 && i < h->n_meta ? h->meta_keys[i] : NULL; }

/* Strings as they are, anything else as compact JSON. */
int hf_meta_value(const hf_model *h, int i, char *buf, size_t size) {
    if (i < 0 || i >= h->n_meta || (!buf && size)) return HEED_ERR_INVALID_ARG;
    json_t *v = json_object_get(h->config, h->meta_keys[i] + strlen("config."));
    if (json_is_string(v)) return snprintf(buf, size, "%s", json_string_value(v));
    char *text = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(9));
    if (!text) return HEED_ERR_NOMEM;
    int n = snprintf(buf, size, "%s", text);
    free(text);
    return n;
}

int hf_n_tensors(const hf_model *h) { return h->n_tensors; }

int hf_tensor(const hf_model *h, int i, heed_tensor_info *info) {
    if (i < 0) return HEED_ERR_INVALID_ARG;
    for (int s = 0; s < h->n_shards; s++) {
        if (i >= h->shards[s]->n_tensors) {
            i -= h->shards[s]->n_tensors;
            continue;
        }
        const st_tensor *t = &h->shards[s]->tensors[i];
        info->name = t->name;
        info->type = st_dtype_name(t->dtype);
        /* ne[0] innermost; dims beyond 4 fold into ne[3] */
        info->n_dims = t->n_dims < 4 ? t->n_dims : 4;
        for (int d = 0; d < 4; d++) info->ne[d] = 1;
        for (int d = 0; d < t->n_dims; d++) info->ne[d < 3 ? d : 3] *= t->shape[t->n_dims - 1 - d];
        info->offset = t->offset;
        info->n_bytes = t->n_bytes;
        return HEED_OK;
    }
    return HEED_ERR_INVALID_ARG;
}
