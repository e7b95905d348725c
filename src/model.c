/*
 * model.c - binds a GGUF file to the model structure (see model.h), and the
 * public model API: load, info, metadata and tensor listing, tokenizer calls.
 * A directory is a Hugging Face checkpoint folder: hf.c reads it and binds
 * its weights with the same checks (model_bind_weights).
 *
 * Every tensor the forward pass will touch is checked here, once: present,
 * of a supported type, of exactly the shape the hyperparameters imply. The
 * forward pass can then trust its pointers.
 */
#include "err.h"
#include "model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "kern.h"
#include "pool.h"

/* The bundled default model, linked in by src/bundled.S. */
extern const unsigned char heed_bundled_model[];
extern const unsigned long long heed_bundled_model_size;
#define BUNDLED_NAME "stories260K.gguf"

typedef struct loader {
    heed_model *m;
    const gguf_file *f;       /* GGUF hyperparameter keys; NULL when binding another format */
    const model_source *src;  /* where the tensors come from */
    const char *file;         /* name used in messages */
    char *err;
    size_t err_size;
} loader;

__attribute__((format(printf, 3, 0))) static void vfail_in(loader *L, const char *file, const char *fmt,
                                                         va_list ap) {
    err_vat(L->err, L->err_size, 0, file, fmt, ap);
}

__attribute__((format(printf, 3, 4))) static int fail(loader *L, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail_in(L, L->file, fmt, ap);
    va_end(ap);
    return rc;
}

/* A message about one tensor names the file that holds it (a shard). */
__attribute__((format(printf, 4, 5))) static int tensor_fail(loader *L, const model_tensor *t, int rc,
                                                             const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfail_in(L, t->file ? t->file : L->file, fmt, ap);
    va_end(ap);
    return rc;
}

/* Reads "<arch>.<suffix>" as an int in [lo, hi]; absent -> def (or an error when def < 0). */
static int arch_int(loader *L, const char *suffix, int64_t def, int64_t lo, int64_t hi, int *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", L->m->arch_name, suffix);
    int64_t v;
    if (!gguf_get_i64(L->f, key, &v)) {
        if (gguf_find(L->f, key))
            return fail(L, HEED_ERR_FORMAT, "key '%s' is not an integer", key);
        if (def < 0) return fail(L, HEED_ERR_FORMAT, "missing key '%s'", key);
        v = def;
    }
    if (v < lo || v > hi)
        return fail(L, HEED_ERR_FORMAT, "key '%s' = %lld is outside %lld..%lld", key, (long long)v,
                    (long long)lo, (long long)hi);
    *out = (int)v;
    return HEED_OK;
}

static int arch_float(loader *L, const char *suffix, double def, double lo, double hi, float *out) {
    char key[128];
    snprintf(key, sizeof key, "%s.%s", L->m->arch_name, suffix);
    double v;
    if (!gguf_get_f64(L->f, key, &v)) {
        if (gguf_find(L->f, key)) return fail(L, HEED_ERR_FORMAT, "key '%s' is not a number", key);
        v = def;
    }
    if (!(v >= lo && v <= hi))
        return fail(L, HEED_ERR_FORMAT, "key '%s' = %g is outside %g..%g", key, v, lo, hi);
    *out = (float)v;
    return HEED_OK;
}

/* ------------------------------------------------------------ binding */

/* Looks `name` (a GGUF name) up in the source; *found says whether it is there. */
static int find_tensor(loader *L, const char *name, bool required, model_tensor *t, bool *found) {
    memset(t, 0, sizeof *t);
    *found = L->src->find(L->src->ctx, name, t);
    if (!t->name) t->name = name;
    if (!*found && required) return tensor_fail(L, t, HEED_ERR_FORMAT, "missing tensor '%s'", t->name);
    return HEED_OK;
}

/* "[a, b]" outermost first over the tensor's dims (safetensors messages). */
static const char *shape_text(const model_tensor *t, char *buf, size_t size) {
    int nd = t->n_dims < GGUF_MAX_DIMS ? t->n_dims : GGUF_MAX_DIMS;
    size_t n = (size_t)snprintf(buf, size, "[%s", t->n_dims > nd ? "..., " : "");
    for (int d = nd - 1; d >= 0 && n < size; d--)
        n += (size_t)snprintf(buf + n, size - n, "%lld%s", (long long)t->ne[d], d ? ", " : "");
    if (n < size) snprintf(buf + n, size - n, "]");
    return buf;
}

static int shape_fail(loader *L, const model_tensor *t, const char *want) {
    char got[96];
    return tensor_fail(L, t, HEED_ERR_FORMAT, "tensor '%s' has shape %s, expected %s", t->name,
                       shape_text(t, got, sizeof got), want);
}

/* A matrix of n_out rows of n_in, any supported type. */
static int bind_mat(loader *L, const char *name, int n_in, int n_out, bool required, model_mat *out) {
    model_tensor t;
    bool found;
    int rc = find_tensor(L, name, required, &t, &found);
    memset(out, 0, sizeof *out);
    if (rc || !found) return rc;
    if (t.n_dims != 2 || t.ne[0] != n_in || t.ne[1] != n_out) {
        char want[48];
        snprintf(want, sizeof want, "[%d, %d]", n_out, n_in);
        if (t.outer_first) return shape_fail(L, &t, want);
        return tensor_fail(L, &t, HEED_ERR_FORMAT, "tensor '%s' has shape [%lld, %lld, %lld], expected [%d, %d]",
                           t.name, (long long)t.ne[0], (long long)t.ne[1], (long long)t.ne[2], n_in, n_out);
    }
    out->type = t.type;
    out->data = t.data;
    out->n_in = n_in;
    out->n_out = n_out;
    return HEED_OK;
}

/* A 1-D vector of n, copied to f32 so the forward pass reads one type. */
static int bind_vec(loader *L, const char *name, int n, bool required, float **out) {
    model_tensor t;
    bool found;
    int rc = find_tensor(L, name, required, &t, &found);
    *out = NULL;
    if (rc || !found) return rc;
    if (t.n_dims != 1 || t.ne[0] != n) {
        char want[24];
        snprintf(want, sizeof want, "[%d]", n);
        if (t.outer_first) return shape_fail(L, &t, want);
        return tensor_fail(L, &t, HEED_ERR_FORMAT,
                           "tensor '%s' has %lld elements in %d dims, expected a vector of %d", t.name,
                           (long long)t.ne[0], t.n_dims, n);
    }
    if (t.type == GGML_Q8_0)
        return tensor_fail(L, &t, HEED_ERR_UNSUPPORTED, "tensor '%s': quantized vectors are not supported", t.name);
    *out = malloc(sizeof(float) * (size_t)n);
    if (!*out) return tensor_fail(L, &t, HEED_ERR_NOMEM, "out of memory for tensor '%s'", t.name);
    kern_dequant_row(*out, t.data, t.type, n);
    return HEED_OK;
}

static const struct {
    const char *name;
    enum model_arch arch;
} known_archs[] = {
    {"llama", ARCH_LLAMA}, {"qwen2", ARCH_QWEN2}, {"qwen3", ARCH_QWEN3}, {"gpt2", ARCH_GPT2},
    {"gemma2", ARCH_GEMMA2}, {"gemma3", ARCH_GEMMA3}, {"phi3", ARCH_PHI3}, {"olmo2", ARCH_OLMO2},
    {"qwen3moe", ARCH_QWEN3MOE},
};

static int load_arch(loader *L) {
    heed_model *m = L->m;
    gguf_str s;
    if (!gguf_get_str(L->f, "general.architecture", &s))
        return fail(L, HEED_ERR_FORMAT, "missing key 'general.architecture'");
    for (size_t i = 0; i < sizeof known_archs / sizeof known_archs[0]; i++) {
        if (s.len == strlen(known_archs[i].name) && memcmp(s.ptr, known_archs[i].name, s.len) == 0) {
            m->arch = known_archs[i].arch;
            m->arch_name = known_archs[i].name;
            return HEED_OK;
        }
    }
    int n = s.len > 64 ? 64 : (int)s.len;
    return fail(L, HEED_ERR_UNSUPPORTED,
                "unknown architecture '%.*s' (heed supports llama, qwen2, qwen3, qwen3moe, gpt2, gemma2, gemma3, "
                "phi3, olmo2)", n, s.ptr);
}

static bool arch_is(const heed_model *m, enum model_arch a, enum model_arch b) { return m->arch == a || m->arch == b; }

void model_arch_defaults(heed_model *m) {
    m->layer_norm = m->arch == ARCH_GPT2;
    m->qk_norm_full = m->arch == ARCH_OLMO2;
    m->ffn = m->arch == ARCH_GPT2 ? FFN_GELU
           : arch_is(m, ARCH_GEMMA2, ARCH_GEMMA3) ? FFN_GEGLU
           : m->arch == ARCH_QWEN3MOE ? FFN_MOE : FFN_SWIGLU;
    m->rope_neox = m->arch != ARCH_LLAMA && m->arch != ARCH_GPT2;
    m->embd_scale = arch_is(m, ARCH_GEMMA2, ARCH_GEMMA3) ? sqrtf((float)m->n_embd) : 1.0f;
    /* the query scale: 1/sqrt(head_dim), but Gemma's 27B models (46 and 62
     * layers) scale by 1/sqrt(n_embd / n_head), their query_pre_attn_scalar,
     * which GGUF files do not carry (the reference engine decides the same way) */
    float qpas = (float)m->head_dim;
    if ((m->arch == ARCH_GEMMA2 && m->n_layer == 46) || (m->arch == ARCH_GEMMA3 && m->n_layer == 62))
        qpas = (float)(m->n_embd / m->n_head);
    m->attn_scale = 1.0f / sqrtf(qpas);
    m->rope_freq_scale = 1.0f;
    m->rope_base_local = m->rope_base;
    m->rope_freq_scale_local = 1.0f;
    m->rope_attn_factor = 1.0f;
    m->expert_norm = true;
}

/* The sliding layers (m->swa_pattern): gemma2 every other layer from 0
 * (pattern 2), gemma3 five of every six (pattern 6), a file's
 * attention.sliding_window_pattern where it has one; llama (Mistral) files
 * that set a window use it in every layer (pattern 1). */
static void set_windows(heed_model *m) {
    int pattern = m->swa_pattern;
    for (int il = 0; il < m->n_layer; il++) {
        bool local = m->n_swa > 0 && (pattern <= 1 || il % pattern < pattern - 1);
        m->layers[il].window = m->windows[il] = local ? m->n_swa : 0;
        m->layers[il].rope_local = local && m->arch == ARCH_GEMMA3;
    }
}

static int load_rope_scaling(loader *L) {
    heed_model *m = L->m;
    int rc;
    char key[128];
    snprintf(key, sizeof key, "%s.rope.scaling.type", m->arch_name);
    gguf_str st;
    if (!gguf_get_str(L->f, key, &st)) return HEED_OK;
    if (st.len == 6 && memcmp(st.ptr, "linear", 6) == 0) {
        float factor;
        if ((rc = arch_float(L, "rope.scaling.factor", 1.0, 1e-6, 1e6, &factor))) return rc;
        m->rope_freq_scale = 1.0f / factor;
    } else if (!((st.len == 4 && memcmp(st.ptr, "none", 4) == 0) ||
                 (st.len == 6 && memcmp(st.ptr, "llama3", 6) == 0) ||
                 (m->arch == ARCH_PHI3 && st.len == 8 && memcmp(st.ptr, "longrope", 8) == 0))) {
        /* llama3 scaling travels as the rope_freqs tensor, phi3's longrope
         * as rope_factors_long/short; yarn etc. are not implemented */
        int n = st.len > 32 ? 32 : (int)st.len;
        return fail(L, HEED_ERR_UNSUPPORTED, "rope scaling type '%.*s' is not supported", n, st.ptr);
    }
    return HEED_OK;
}

/* A soft-cap read from the file: absent -> def (0: none); present, it must be > 0. */
static int load_softcap(loader *L, const char *suffix, double def, float *out) {
    int rc = arch_float(L, suffix, def, 0.0, 1e6, out);
    if (rc) return rc;
    char key[128];
    snprintf(key, sizeof key, "%s.%s", L->m->arch_name, suffix);
    if (def > 0 && !(*out > 0.0f)) return fail(L, HEED_ERR_FORMAT, "key '%s' = %g: a soft-cap must be positive", key, *out);
    return HEED_OK;
}

static int load_hparams(loader *L) {
    heed_model *m = L->m;
    int rc;
    if ((rc = arch_int(L, "block_count", -1, 1, MODEL_MAX_LAYERS, &m->n_layer))) return rc;
    if ((rc = arch_int(L, "embedding_length", -1, 1, MODEL_MAX_DIM, &m->n_embd))) return rc;
    if ((rc = arch_int(L, "feed_forward_length", -1, 1, MODEL_MAX_DIM, &m->n_ff))) return rc;
    if ((rc = arch_int(L, "context_length", -1, 1, MODEL_MAX_CTX, &m->n_ctx_train))) return rc;
    if ((rc = arch_int(L, "attention.head_count", -1, 1, MODEL_MAX_HEADS, &m->n_head))) return rc;
    if ((rc = arch_int(L, "attention.head_count_kv", m->n_head, 1, m->n_head, &m->n_head_kv))) return rc;
    if (m->n_head % m->n_head_kv)
        return fail(L, HEED_ERR_FORMAT, "head_count %d is not a multiple of head_count_kv %d", m->n_head,
                    m->n_head_kv);
    /* without key_length the head size is n_embd / n_head, which must divide */
    int64_t def_hd = m->n_embd % m->n_head ? -1 : m->n_embd / m->n_head;
    if ((rc = arch_int(L, "attention.key_length", def_hd, 2, MODEL_MAX_HEAD_DIM, &m->head_dim))) return rc;
    int v_len;
    if ((rc = arch_int(L, "attention.value_length", m->head_dim, 1, MODEL_MAX_DIM, &v_len))) return rc;
    if (v_len != m->head_dim)
        return fail(L, HEED_ERR_UNSUPPORTED, "value_length %d differs from key_length %d", v_len, m->head_dim);
    if ((int64_t)m->head_dim * m->n_head > MODEL_MAX_DIM)
        return fail(L, HEED_ERR_FORMAT, "head_count x key_length is too large");
    if ((rc = arch_float(L, "rope.freq_base", 10000.0, 1.0, 1e12, &m->rope_base))) return rc;
    model_arch_defaults(m);
    if (m->arch == ARCH_GPT2) {
        m->n_rot = 0; /* learned positions, no rotation */
        if ((rc = arch_float(L, "attention.layer_norm_epsilon", 1e-5, 0.0, 1.0, &m->rms_eps))) return rc;
    } else {
        if ((rc = arch_int(L, "rope.dimension_count", m->head_dim, 2, m->head_dim, &m->n_rot))) return rc;
        if (m->n_rot % 2) return fail(L, HEED_ERR_FORMAT, "rope.dimension_count %d is odd", m->n_rot);
        if ((rc = arch_float(L, "attention.layer_norm_rms_epsilon", 1e-5, 0.0, 1.0, &m->rms_eps))) return rc;
    }
    if ((rc = load_rope_scaling(L))) return rc;
    m->rope_base_local = m->rope_base;
    if (m->arch == ARCH_GEMMA3 && (rc = arch_float(L, "rope.freq_base_swa", 10000.0, 1.0, 1e12, &m->rope_base_local)))
        return rc;
    if (m->arch == ARCH_GEMMA2) {
        if ((rc = load_softcap(L, "attn_logit_softcapping", 50.0, &m->attn_softcap))) return rc;
        if ((rc = load_softcap(L, "final_logit_softcapping", 30.0, &m->final_softcap))) return rc;
    }
    if (m->arch == ARCH_PHI3) {
        if ((rc = arch_int(L, "rope.scaling.original_context_length", m->n_ctx_train, 1, MODEL_MAX_CTX,
                           &m->n_ctx_orig)))
            return rc;
        if ((rc = arch_float(L, "rope.scaling.attn_factor", 1.0, 1e-3, 1e3, &m->rope_attn_factor))) return rc;
    }
    /* sliding window: required by gemma2/3, optional for llama (Mistral);
     * phi3's key is ignored, as the reference engine does */
    bool swa_arch = arch_is(m, ARCH_GEMMA2, ARCH_GEMMA3), swa_opt = m->arch == ARCH_LLAMA;
    if (swa_arch || swa_opt) {
        if ((rc = arch_int(L, "attention.sliding_window", swa_arch ? -1 : 0, swa_arch ? 1 : 0, MODEL_MAX_CTX,
                           &m->n_swa)))
            return rc;
        if (m->n_swa > m->n_ctx_train)
            return fail(L, HEED_ERR_FORMAT, "key '%s.attention.sliding_window' = %d is larger than the context (%d)",
                        m->arch_name, m->n_swa, m->n_ctx_train);
        int def = m->arch == ARCH_GEMMA2 ? 2 : m->arch == ARCH_GEMMA3 ? 6 : 1;
        if ((rc = arch_int(L, "attention.sliding_window_pattern", def, 1, MODEL_MAX_LAYERS, &m->swa_pattern)))
            return rc;
    }
    if (m->arch == ARCH_QWEN3MOE) {
        if ((rc = arch_int(L, "expert_count", -1, 1, MODEL_MAX_EXPERTS, &m->n_expert))) return rc;
        if ((rc = arch_int(L, "expert_used_count", -1, 1, m->n_expert, &m->n_expert_used))) return rc;
        if ((rc = arch_int(L, "expert_feed_forward_length", -1, 1, MODEL_MAX_DIM, &m->n_ff_exp))) return rc;
    }
    return HEED_OK;
}

/* The geometry every model is held to (limit.h), whatever its source: the
 * GGUF keys and config.json are range-checked as they are read, and this is
 * the one check both paths go through, so that a model that loads records
 * runs whose files load back (the run file has the same limits). */
static int check_geometry(loader *L) {
    const heed_model *m = L->m;
    const struct { const char *field; int v, max; } g[] = {
        {"n_layer", m->n_layer, LIMIT_MAX_LAYER}, {"n_head", m->n_head, LIMIT_MAX_HEAD},
        {"head_dim", m->head_dim, LIMIT_MAX_HEAD_DIM}, {"n_vocab", m->n_vocab, LIMIT_MAX_VOCAB}};
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++)
        if (g[i].v > g[i].max)
            return fail(L, HEED_ERR_FORMAT, "%s = %d is above heed's limit of %d", g[i].field, g[i].v, g[i].max);
    return HEED_OK;
}

/* Rows r0 .. r0+n-1 of a matrix, as a matrix of their own (a fused tensor's part). */
static model_mat mat_rows(const model_mat *w, int r0, int n) {
    model_mat v = *w;
    v.data = (const char *)w->data + kern_row_bytes(w->type, w->n_in) * (size_t)r0;
    v.n_out = n;
    return v;
}

/* n_exp matrices of n_out rows of n_in, stored as one 3-D tensor [n_exp][n_out][n_in]. */
static int bind_experts(loader *L, const char *name, int n_in, int n_out, int n_exp, model_mat **out) {
    model_tensor t;
    bool found;
    int rc = find_tensor(L, name, true, &t, &found);
    if (rc) return rc;
    if (t.n_dims != 3 || t.ne[0] != n_in || t.ne[1] != n_out || t.ne[2] != n_exp) {
        char want[64];
        snprintf(want, sizeof want, "[%d, %d, %d]", n_exp, n_out, n_in);
        if (t.outer_first) return shape_fail(L, &t, want);
        return tensor_fail(L, &t, HEED_ERR_FORMAT,
                           "tensor '%s' has shape [%lld, %lld, %lld] in %d dims, expected [%d, %d, %d] (3 dims)",
                           t.name, (long long)t.ne[0], (long long)t.ne[1], (long long)t.ne[2], t.n_dims, n_in,
                           n_out, n_exp);
    }
    if (!(*out = calloc((size_t)n_exp, sizeof **out))) return fail(L, HEED_ERR_NOMEM, "out of memory");
    size_t bytes = kern_row_bytes(t.type, n_in) * (size_t)n_out;
    for (int e = 0; e < n_exp; e++)
        (*out)[e] = (model_mat){t.type, (const char *)t.data + bytes * (size_t)e, n_in, n_out};
    return HEED_OK;
}

/* A fused bias [q; k; v] split into owned parts. */
static int split_bias(loader *L, float *fused, int nq, int nkv, float **bq, float **bk, float **bv) {
    *bq = malloc(sizeof(float) * (size_t)nq);
    *bk = malloc(sizeof(float) * (size_t)nkv);
    *bv = malloc(sizeof(float) * (size_t)nkv);
    if (!*bq || !*bk || !*bv) {
        free(fused);
        return fail(L, HEED_ERR_NOMEM, "out of memory");
    }
    memcpy(*bq, fused, sizeof(float) * (size_t)nq);
    memcpy(*bk, fused + nq, sizeof(float) * (size_t)nkv);
    memcpy(*bv, fused + nq + nkv, sizeof(float) * (size_t)nkv);
    free(fused);
    return HEED_OK;
}

static int check_factors(loader *L, const char *name, const float *f, int n) {
    for (int i = 0; f && i < n; i++)
        if (!(f[i] > 0.0f) || !isfinite(f[i]))
            return fail(L, HEED_ERR_FORMAT, "tensor '%s' has a non-positive factor at %d", name, i);
    return HEED_OK;
}

/* q, k, v: separate tensors, or one fused attn_qkv (gpt2, phi3) bound as three views. */
static int bind_attn(loader *L, int il, model_layer *ly) {
    heed_model *m = L->m;
    const int q_dim = m->n_head * m->head_dim, kv_dim = m->n_head_kv * m->head_dim;
    char n[96];
    int rc;
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", il, s), n)
    bool fused_arch = m->arch == ARCH_GPT2 || m->arch == ARCH_PHI3;
    model_mat qkv;
    if ((rc = bind_mat(L, NAME("attn_qkv.weight"), m->n_embd, q_dim + 2 * kv_dim, m->arch == ARCH_GPT2, &qkv)))
        return rc;
    if (fused_arch && qkv.data) {
        ly->wq = mat_rows(&qkv, 0, q_dim);
        ly->wk = mat_rows(&qkv, q_dim, kv_dim);
        ly->wv = mat_rows(&qkv, q_dim + kv_dim, kv_dim);
        float *b;
        if ((rc = bind_vec(L, NAME("attn_qkv.bias"), q_dim + 2 * kv_dim, m->arch == ARCH_GPT2, &b))) return rc;
        if (b && (rc = split_bias(L, b, q_dim, kv_dim, &ly->bq, &ly->bk, &ly->bv))) return rc;
    } else {
        if (qkv.data)
            return fail(L, HEED_ERR_UNSUPPORTED, "tensor 'blk.%d.attn_qkv.weight': a fused QKV is not read for %s",
                        il, m->arch_name);
        if ((rc = bind_mat(L, NAME("attn_q.weight"), m->n_embd, q_dim, true, &ly->wq))) return rc;
        if ((rc = bind_mat(L, NAME("attn_k.weight"), m->n_embd, kv_dim, true, &ly->wk))) return rc;
        if ((rc = bind_mat(L, NAME("attn_v.weight"), m->n_embd, kv_dim, true, &ly->wv))) return rc;
        bool bias = m->arch == ARCH_QWEN2;
        if ((rc = bind_vec(L, NAME("attn_q.bias"), q_dim, bias, &ly->bq))) return rc;
        if ((rc = bind_vec(L, NAME("attn_k.bias"), kv_dim, bias, &ly->bk))) return rc;
        if ((rc = bind_vec(L, NAME("attn_v.bias"), kv_dim, bias, &ly->bv))) return rc;
    }
    if ((rc = bind_mat(L, NAME("attn_output.weight"), q_dim, m->n_embd, true, &ly->wo))) return rc;
    if ((rc = bind_vec(L, NAME("attn_output.bias"), m->n_embd, m->arch == ARCH_GPT2, &ly->bo))) return rc;
    bool qk_norm = m->arch == ARCH_QWEN3 || m->arch == ARCH_QWEN3MOE || m->arch == ARCH_GEMMA3 || m->qk_norm_full;
    int qn = m->qk_norm_full ? q_dim : m->head_dim, kn = m->qk_norm_full ? kv_dim : m->head_dim;
    if ((rc = bind_vec(L, NAME("attn_q_norm.weight"), qn, qk_norm, &ly->q_norm))) return rc;
    if ((rc = bind_vec(L, NAME("attn_k_norm.weight"), kn, qk_norm, &ly->k_norm))) return rc;
#undef NAME
    return HEED_OK;
}

static int bind_ffn(loader *L, int il, model_layer *ly) {
    heed_model *m = L->m;
    char n[96];
    int rc;
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", il, s), n)
    switch (m->ffn) {
    case FFN_GELU:
        if ((rc = bind_mat(L, NAME("ffn_up.weight"), m->n_embd, m->n_ff, true, &ly->w_up))) return rc;
        if ((rc = bind_vec(L, NAME("ffn_up.bias"), m->n_ff, true, &ly->b_up))) return rc;
        if ((rc = bind_mat(L, NAME("ffn_down.weight"), m->n_ff, m->n_embd, true, &ly->w_down))) return rc;
        return bind_vec(L, NAME("ffn_down.bias"), m->n_embd, true, &ly->b_down);
    case FFN_MOE:
        if ((rc = bind_mat(L, NAME("ffn_gate_inp.weight"), m->n_embd, m->n_expert, true, &ly->router))) return rc;
        if ((rc = bind_experts(L, NAME("ffn_gate_exps.weight"), m->n_embd, m->n_ff_exp, m->n_expert, &ly->exp_gate)))
            return rc;
        if ((rc = bind_experts(L, NAME("ffn_up_exps.weight"), m->n_embd, m->n_ff_exp, m->n_expert, &ly->exp_up)))
            return rc;
        return bind_experts(L, NAME("ffn_down_exps.weight"), m->n_ff_exp, m->n_embd, m->n_expert, &ly->exp_down);
    case FFN_SWIGLU:
    case FFN_GEGLU:
        break;
    }
    if (m->arch == ARCH_PHI3) { /* gate and up fused in ffn_up, gate first, unless the file splits them */
        model_mat gate;
        if ((rc = bind_mat(L, NAME("ffn_gate.weight"), m->n_embd, m->n_ff, false, &gate))) return rc;
        if (!gate.data) {
            model_mat up;
            if ((rc = bind_mat(L, NAME("ffn_up.weight"), m->n_embd, 2 * m->n_ff, true, &up))) return rc;
            ly->w_gate = mat_rows(&up, 0, m->n_ff);
            ly->w_up = mat_rows(&up, m->n_ff, m->n_ff);
            return bind_mat(L, NAME("ffn_down.weight"), m->n_ff, m->n_embd, true, &ly->w_down);
        }
    }
    if ((rc = bind_mat(L, NAME("ffn_gate.weight"), m->n_embd, m->n_ff, true, &ly->w_gate))) return rc;
    if ((rc = bind_mat(L, NAME("ffn_up.weight"), m->n_embd, m->n_ff, true, &ly->w_up))) return rc;
    return bind_mat(L, NAME("ffn_down.weight"), m->n_ff, m->n_embd, true, &ly->w_down);
#undef NAME
}

static int load_weights(loader *L) {
    heed_model *m = L->m;
    int rc = check_geometry(L);
    if (rc) return rc;
    if ((rc = bind_mat(L, "token_embd.weight", m->n_embd, m->n_vocab, true, &m->tok_embd))) return rc;
    if (m->arch == ARCH_GPT2 &&
        (rc = bind_mat(L, "position_embd.weight", m->n_embd, m->n_ctx_train, true, &m->pos_embd)))
        return rc;
    if ((rc = bind_vec(L, "output_norm.weight", m->n_embd, true, &m->output_norm))) return rc;
    if ((rc = bind_vec(L, "output_norm.bias", m->n_embd, m->layer_norm, &m->output_norm_b))) return rc;
    bool need_output = L->src->output_required;
    if ((rc = bind_mat(L, "output.weight", m->n_embd, m->n_vocab, need_output, &m->output))) return rc;
    m->tied_output = m->output.data == NULL;
    if (m->tied_output) m->output = m->tok_embd;
    /* HF folders compute the llama3 factors from config.json instead */
    if (!m->rope_freqs && m->n_rot && (rc = bind_vec(L, "rope_freqs.weight", m->n_rot / 2, false, &m->rope_freqs)))
        return rc;
    if ((rc = check_factors(L, "rope_freqs.weight", m->rope_freqs, m->n_rot / 2))) return rc;
    if (m->arch == ARCH_PHI3) {
        if ((rc = bind_vec(L, "rope_factors_long.weight", m->n_rot / 2, false, &m->rope_factors_long))) return rc;
        if ((rc = bind_vec(L, "rope_factors_short.weight", m->n_rot / 2, false, &m->rope_factors_short))) return rc;
        if ((rc = check_factors(L, "rope_factors_long.weight", m->rope_factors_long, m->n_rot / 2))) return rc;
        if ((rc = check_factors(L, "rope_factors_short.weight", m->rope_factors_short, m->n_rot / 2))) return rc;
    }

    m->layers = calloc((size_t)m->n_layer, sizeof *m->layers);
    m->windows = calloc((size_t)m->n_layer, sizeof *m->windows);
    if (!m->layers || !m->windows) return fail(L, HEED_ERR_NOMEM, "out of memory");
    const bool post_norms = m->arch == ARCH_GEMMA2 || m->arch == ARCH_GEMMA3 || m->arch == ARCH_OLMO2;
    const bool pre_norms = m->arch != ARCH_OLMO2;
    for (int il = 0; il < m->n_layer; il++) {
        model_layer *ly = &m->layers[il];
        char n[96];
#define NAME(s) (snprintf(n, sizeof n, "blk.%d.%s", il, s), n)
        if ((rc = bind_vec(L, NAME("attn_norm.weight"), m->n_embd, pre_norms, &ly->attn_norm))) return rc;
        if ((rc = bind_vec(L, NAME("attn_norm.bias"), m->n_embd, m->layer_norm, &ly->attn_norm_b))) return rc;
        if ((rc = bind_attn(L, il, ly))) return rc;
        if ((rc = bind_vec(L, NAME("post_attention_norm.weight"), m->n_embd, post_norms, &ly->post_attn_norm)))
            return rc;
        if ((rc = bind_vec(L, NAME("ffn_norm.weight"), m->n_embd, pre_norms, &ly->ffn_norm))) return rc;
        if ((rc = bind_vec(L, NAME("ffn_norm.bias"), m->n_embd, m->layer_norm, &ly->ffn_norm_b))) return rc;
        if ((rc = bind_ffn(L, il, ly))) return rc;
        if ((rc = bind_vec(L, NAME("post_ffw_norm.weight"), m->n_embd, post_norms, &ly->post_ffn_norm))) return rc;
#undef NAME
    }
    set_windows(m);
    return HEED_OK;
}

int model_bind_weights(heed_model *m, const model_source *src, const char *file, char *err, size_t err_size) {
    loader L = {.m = m, .src = src, .file = file, .err = err, .err_size = err_size};
    return load_weights(&L);
}

/* GGUF names are the canonical ones: a lookup in the file's tensor table. */
static bool gguf_source_find(void *ctx, const char *name, model_tensor *t) {
    const gguf_tensor *g = gguf_find_tensor(ctx, name);
    if (!g) return false;
    t->type = g->type;
    t->n_dims = g->n_dims;
    memcpy(t->ne, g->ne, sizeof t->ne);
    t->data = g->data;
    return true;
}

void model_prefault(const char *label, const void *map, uint64_t size) {
    const unsigned char *p = map;
    const uint64_t page = 4096, step = size / 50 + 1;
    volatile unsigned char sink = 0;
    uint64_t next = 0;
    for (uint64_t off = 0; off < size; off += page) {
        sink ^= p[off];
        if (off >= next) {
            int pct = (int)(off * 100 / size);
            fprintf(stderr, "\rloading %s: %3d%%", label, pct);
            next += step;
        }
    }
    fprintf(stderr, "\rloading %s: 100%%\n", label);
    (void)sink;
}

static bool is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

heed_model_params heed_model_default_params(void) {
    heed_model_params p = {.progress = false};
    return p;
}

/* The file's general.architecture as text, for a vocabulary-only model: any
 * architecture, "" when absent (vocabulary files carry dummies). */
static int load_arch_text(loader *L) {
    gguf_str s = {"", 0};
    gguf_get_str(L->f, "general.architecture", &s);
    L->m->arch_text = strndup(s.ptr, s.len > 64 ? 64 : s.len);
    if (!L->m->arch_text) return fail(L, HEED_ERR_NOMEM, "out of memory");
    L->m->arch_name = L->m->arch_text;
    return HEED_OK;
}

int heed_model_load(const char *path, const heed_model_params *params, heed_model **out, char *err,
                    size_t err_size) {
    if (!out) return HEED_ERR_INVALID_ARG;
    *out = NULL;
    heed_model_params defaults = heed_model_default_params();
    if (!params) params = &defaults;
    if (err && err_size) err[0] = '\0';

    heed_model *m = calloc(1, sizeof *m);
    if (!m) return HEED_ERR_NOMEM;
    pthread_mutex_init(&m->gram_mu, NULL);
    int rc = HEED_OK;
    const char *shown = path ? path : BUNDLED_NAME;
    m->path = strdup(shown);
    if (!m->path) { rc = HEED_ERR_NOMEM; goto done; }
    if (path && is_dir(path)) { /* a Hugging Face checkpoint folder */
        rc = hf_load(m, path, params, err, err_size);
        goto done;
    }
    if (path)
        m->gguf = gguf_open(path, &rc, err, err_size);
    else
        m->gguf = gguf_open_buffer(heed_bundled_model, (size_t)heed_bundled_model_size, BUNDLED_NAME, &rc,
                                   err, err_size);
    if (!m->gguf) goto done;

    const char *base = strrchr(shown, '/');
    model_source src = {.find = gguf_source_find, .ctx = m->gguf, .output_required = false};
    loader L = {.m = m, .f = m->gguf, .src = &src, .file = base ? base + 1 : shown, .err = err,
                .err_size = err_size};
    m->vocab_only = params->vocab_only;
    if (m->vocab_only) {
        m->n_ctx_train = -1; /* heed_ctx_new refuses it (model.h) */
        if ((rc = load_arch_text(&L))) goto done;
    } else {
        /* a file of no tensors (a vocabulary file) says so, unless its
         * hyperparameters are wrong: those are checked whatever follows */
        bool no_weights = m->gguf->n_tensors == 0;
        if (!(rc = load_arch(&L))) rc = load_hparams(&L);
        if (no_weights && rc != HEED_ERR_FORMAT)
            rc = err_at(err, err_size, HEED_ERR_UNSUPPORTED, NULL,
                        "%s has no weights (vocabulary only): it can tokenize but not generate", L.file);
        if (rc) goto done;
    }
    m->vocab = tok_load(m->gguf, &rc, err, err_size);
    if (!m->vocab) goto done;
    m->n_vocab = tok_n_vocab(m->vocab);
    if (!m->vocab_only && (rc = load_weights(&L))) goto done;
    gguf_str name;
    if (gguf_get_str(m->gguf, "general.name", &name)) m->name = strndup(name.ptr, name.len > 256 ? 256 : name.len);
    else m->name = strdup("");
    if (!m->name) { rc = fail(&L, HEED_ERR_NOMEM, "out of memory"); goto done; }
    if (params->progress && path && !m->vocab_only && m->gguf->file_size >= MODEL_PROGRESS_MIN_BYTES)
        model_prefault(m->path, m->gguf->map, m->gguf->file_size);
done:
    if (rc) {
        heed_model_free(m);
        return rc;
    }
    *out = m;
    return HEED_OK;
}

void heed_model_free(heed_model *m) {
    if (!m) return;
    if (m->layers) {
        for (int i = 0; i < m->n_layer; i++) {
            model_layer *ly = &m->layers[i];
            free(ly->attn_norm); free(ly->attn_norm_b); free(ly->ffn_norm); free(ly->ffn_norm_b);
            free(ly->bq); free(ly->bk); free(ly->bv); free(ly->bo); free(ly->b_up); free(ly->b_down);
            free(ly->q_norm); free(ly->k_norm); free(ly->post_attn_norm); free(ly->post_ffn_norm);
            free(ly->exp_gate); free(ly->exp_up); free(ly->exp_down);
        }
        free(m->layers);
    }
    free(m->windows);
    free(m->output_norm); free(m->output_norm_b);
    free(m->rope_freqs); free(m->rope_factors_long); free(m->rope_factors_short);
    tok_free(m->vocab);
    gguf_close(m->gguf);
    hf_free(m->hf);
    free(m->arch_text);
    free(m->name);
    free(m->path);
    if (m->wo_gram)
        for (int i = 0; i < m->n_layer; i++) free(m->wo_gram[i]);
    free(m->wo_gram);
    pthread_mutex_destroy(&m->gram_mu);
    free(m);
}

/* G_h = sum over the output rows o of w_o,h w_o,h^T (w_o,h: row o's slice
 * of the head's columns), made from blocks of dequantized rows
 * (kern_ops.gram_add); the threads take disjoint row ranges into their own
 * matrices, summed at the end in thread order (the same on every run). */
typedef struct gram_job {
    const model_mat *wo;
    int H, hd;
    float *g; /* (nth, H, hd, hd) */
    bool nomem;
} gram_job;

static void gram_task(void *arg, int ith, int nth) {
    enum { BLOCK = 32 };
    gram_job *j = arg;
    const model_mat *wo = j->wo;
    const int n_in = wo->n_in, n_out = wo->n_out, hd = j->hd;
    const size_t rb = kern_row_bytes(wo->type, n_in);
    const kern_ops *ops = kern_ops_best();
    float *g = j->g + (size_t)ith * j->H * hd * hd, *rows = malloc(sizeof(float) * (size_t)n_in * BLOCK);
    if (!rows) {
        j->nomem = true;
        return;
    }
    int per = (n_out + nth - 1) / nth, o_end = (ith + 1) * per < n_out ? (ith + 1) * per : n_out;
    for (int o0 = ith * per; o0 < o_end; o0 += BLOCK) {
        int n = o_end - o0 < BLOCK ? o_end - o0 : BLOCK;
        for (int i = 0; i < n; i++)
            kern_dequant_row(rows + (size_t)i * n_in, (const char *)wo->data + (size_t)(o0 + i) * rb, wo->type, n_in);
        for (int h = 0; h < j->H; h++) ops->gram_add(g + (size_t)h * hd * hd, rows + (size_t)h * hd, (size_t)n_in, n, hd);
    }
    free(rows);
}

static float *wo_gram_make(const heed_model *m, int layer) {
    const model_mat *wo = &m->layers[layer].wo;
    const int H = m->n_head, hd = m->head_dim;
    if (wo->n_in != H * hd) return NULL;
    const size_t per = (size_t)H * hd * hd;
    int nth = pool_n_cpus();
    if (nth > 8) nth = 8;
    if ((size_t)wo->n_out * per < ((size_t)1 << 22)) nth = 1; /* small: not worth the threads */
    gram_job j = {wo, H, hd, calloc(per * (size_t)nth, sizeof(float)), false};
    pool *p = nth > 1 ? pool_new(nth) : NULL;
    if (!j.g || (nth > 1 && !p)) {
        free(j.g);
        pool_free(p);
        return NULL;
    }
    if (p) pool_run(p, nth, gram_task, &j);
    else gram_task(&j, 0, 1);
    pool_free(p);
    for (int t = 1; t < nth; t++)
        for (size_t i = 0; i < per; i++) j.g[i] += j.g[(size_t)t * per + i];
    if (j.nomem) {
        free(j.g);
        return NULL;
    }
    float *g = nth > 1 ? realloc(j.g, sizeof(float) * per) : j.g;
    return g ? g : j.g;
}

const float *model_wo_gram(const heed_model *mc, int layer) {
    heed_model *m = (heed_model *)mc; /* the cache is the model's one mutable part, under gram_mu */
    if (!m || layer < 0 || layer >= m->n_layer || m->vocab_only || !m->layers) return NULL;
    pthread_mutex_lock(&m->gram_mu);
    if (!m->wo_gram) m->wo_gram = calloc((size_t)m->n_layer, sizeof *m->wo_gram);
    float *g = m->wo_gram ? m->wo_gram[layer] : NULL;
    if (m->wo_gram && !g) g = m->wo_gram[layer] = wo_gram_make(m, layer);
    pthread_mutex_unlock(&m->gram_mu);
    return g;
}

void heed_model_get_info(const heed_model *m, heed_model_info *info) {
    memset(info, 0, sizeof *info);
    if (!m) return;
    info->path = m->path;
    info->arch = m->arch_name;
    info->name = m->name;
    info->tokenizer = tok_model_name(m->vocab);
    info->file_size = m->hf ? hf_file_size(m->hf) : m->gguf->file_size;
    info->n_layer = m->n_layer;
    info->n_embd = m->n_embd;
    info->n_head = m->n_head;
    info->n_head_kv = m->n_head_kv;
    info->head_dim = m->head_dim;
    info->n_ff = m->n_ff;
    info->n_vocab = m->n_vocab;
    info->n_ctx_train = m->vocab_only ? 0 : m->n_ctx_train;
    info->rope_base = m->rope_base;
    info->rms_eps = m->rms_eps;
    info->tied_output = m->tied_output;
    info->bos = tok_bos(m->vocab);
    info->eos = tok_eos(m->vocab);
    info->eot = tok_eot(m->vocab);
    info->add_bos = tok_add_bos(m->vocab);
    info->can_tokenize = tok_can_encode(m->vocab);
    info->attn_scale = m->attn_scale;
    info->attn_softcap = m->attn_softcap;
    info->layer_window = m->windows;
    info->final_softcap = m->final_softcap;
    info->n_expert = m->n_expert;
    info->n_expert_used = m->n_expert_used;
    info->tokenize_refusal = tok_encode_refusal(m->vocab);
    info->vocab_only = m->vocab_only;
}

/* Metadata and tensor listings: an HF folder answers from hf.c. */

int heed_model_n_meta(const heed_model *m) {
    if (!m) return 0;
    return m->hf ? hf_n_meta(m->hf) : m->gguf->n_kv;
}

const char *heed_model_meta_key(const heed_model *m, int i) {
    if (m && m->hf) return hf_meta_key(m->hf, i);
    if (!m || i < 0 || i >= m->gguf->n_kv) return NULL;
    return m->gguf->kv[i].key;
}

int heed_model_meta_value(const heed_model *m, int i, char *buf, size_t size) {
    if (m && m->hf) return hf_meta_value(m->hf, i, buf, size);
    if (!m || i < 0 || i >= m->gguf->n_kv) return HEED_ERR_INVALID_ARG;
    return gguf_kv_format(&m->gguf->kv[i], buf, size, 8);
}

int heed_model_n_tensors(const heed_model *m) {
    if (!m) return 0;
    return m->hf ? hf_n_tensors(m->hf) : m->gguf->n_tensors;
}

int heed_model_tensor(const heed_model *m, int i, heed_tensor_info *info) {
    if (m && m->hf) return info ? hf_tensor(m->hf, i, info) : HEED_ERR_INVALID_ARG;
    if (!m || !info || i < 0 || i >= m->gguf->n_tensors) return HEED_ERR_INVALID_ARG;
    const gguf_tensor *t = &m->gguf->tensors[i];
    info->name = t->name;
    info->type = gguf_type_name(t->type);
    info->n_dims = t->n_dims;
    for (int d = 0; d < 4; d++) info->ne[d] = t->ne[d];
    info->offset = t->offset;
    info->n_bytes = t->n_bytes;
    return HEED_OK;
}

int heed_tokenize_flags(const heed_model *m, const char *text, size_t len, unsigned flags, int32_t *ids,
                        int n_max) {
    if (!m || (!text && len) || n_max < 0 || (!ids && n_max)) return HEED_ERR_INVALID_ARG;
    return tok_encode_ex(m->vocab, text ? text : "", len, flags & HEED_TOK_ADD_BOS, flags & HEED_TOK_PARSE_SPECIAL,
                         ids, n_max);
}

int heed_tokenize(const heed_model *m, const char *text, size_t len, bool add_bos, int32_t *ids, int n_max) {
    return heed_tokenize_flags(m, text, len, add_bos ? HEED_TOK_ADD_BOS : 0, ids, n_max);
}

/* HF checkpoints may pad the embedding past the tokenizer (Qwen2.5: 151936
 * rows, 151665 tokens): those ids are valid model outputs that no text maps
 * to. They have an empty piece, no bytes and the label "[PAD]". */
static bool is_pad_id(const heed_model *m, int32_t id) {
    return id >= tok_n_vocab(m->vocab) && id < m->n_vocab;
}

const char *heed_token_piece(const heed_model *m, int32_t id) {
    if (m && is_pad_id(m, id)) return "";
    return m ? tok_piece(m->vocab, id) : NULL;
}

int heed_token_bytes(const heed_model *m, int32_t id, char *buf, size_t size) {
    if (m && is_pad_id(m, id) && (buf || !size)) {
        if (size) buf[0] = '\0';
        return 0;
    }
    return m ? tok_bytes(m->vocab, id, buf, size) : HEED_ERR_INVALID_ARG;
}

int heed_token_label(const heed_model *m, int32_t id, char *buf, size_t size) {
    if (m && is_pad_id(m, id) && (buf || !size)) return snprintf(buf, size, "[PAD]");
    return m ? tok_label(m->vocab, id, buf, size) : HEED_ERR_INVALID_ARG;
}

bool heed_token_is_eog(const heed_model *m, int32_t id) { return m && tok_is_eog(m->vocab, id); }
