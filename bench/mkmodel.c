/*
 * mkmodel - writes a random-weight GGUF model of a real geometry, for
 * benchmarks and tests: the speed of a forward pass depends on the shapes
 * and types, not on the values.
 *
 *   mkmodel --arch A --layers N --embd N --heads N --kv-heads N --ff N
 *           --vocab N --ctx N --type T [--tied] [--seed S] -o PATH
 *           [--head-dim N] [--window N] [--experts N --experts-used N --ff-exp N]
 *
 * A: llama (default), gpt2 (fused QKV, LayerNorm and biases, learned
 * positions), gemma3 (q/k norms, post-norms, GeGLU, a window on five layers
 * of six: --window, default 512) or qwen3moe (q/k norms, routed experts).
 * --head-dim sets key_length where it is not n_embd / n_head (Gemma 3).
 *
 * T: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k,
 * q6_k, iq4_nl, iq4_xs, or q4_k_m
 * (the reference engine's Q4_K_M mix: Q6_K for the output / tied embedding
 * and for attn_v and ffn_down in the layers its use_more_bits rule picks,
 * Q4_K elsewhere).
 *
 * Values: matrix weights ~ N(0, 1/sqrt(fan_in)) (an Irwin-Hall sum of four
 * uniforms), quantized with heed's reference quantizers; norms 1 +- 0.02;
 * 1-D tensors stay F32. A K-quant needs rows that are a multiple of 256; for
 * a tensor whose rows are not (576 at SmolLM2-135M geometry) the type falls
 * back as in the reference engine's quantizer: Q4_K -> Q5_0, Q5_K -> Q5_1,
 * Q6_K -> Q8_0, Q2_K/Q3_K/IQ4_XS -> IQ4_NL.
 *
 * Tokenizer: a minimal SentencePiece ("llama") vocabulary so heed loads the
 * file: <unk>, <s>, </s>, the 256 byte tokens <0x00>..<0xFF> (type 6), then
 * filler pieces "▁tN" up to the vocabulary size.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "gguf_write.h"
#include "heed.h"
#include "kern.h"

typedef struct geom {
    const char *arch;
    int n_layer, n_embd, n_head, n_kv, n_ff, n_vocab, n_ctx, head_dim, window, n_exp, n_exp_used, n_ff_exp;
    bool tied;
    unsigned long long seed;
    const char *type, *out;
} geom;

static uint64_t mix(uint64_t x) {
    /* splitmix64: a seed per tensor from (seed, index) */
    x += UINT64_C(0x9e3779b97f4a7c15);
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

static uint64_t next(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * UINT64_C(2685821657736338717);
}

/* ~N(0, 1): four 16-bit uniforms summed (Irwin-Hall, variance 4/12) */
static float gauss(uint64_t *s) {
    uint64_t r = next(s);
    float u = (float)(r & 0xffff) + (float)((r >> 16) & 0xffff) + (float)((r >> 32) & 0xffff) + (float)(r >> 48);
    return (u / 65536.0f - 2.0f) * 1.7320508f;
}

static int parse_type(const char *s) {
    static const struct {
        const char *name;
        int type;
    } t[] = {{"f32", GGML_F32},   {"f16", GGML_F16},   {"bf16", GGML_BF16}, {"q8_0", GGML_Q8_0},
             {"q4_0", GGML_Q4_0}, {"q4_1", GGML_Q4_1}, {"q5_0", GGML_Q5_0}, {"q5_1", GGML_Q5_1},
             {"q4_k", GGML_Q4_K}, {"q5_k", GGML_Q5_K}, {"q6_k", GGML_Q6_K}, {"q4_k_m", GGML_Q4_K},
             {"q2_k", GGML_Q2_K}, {"q3_k", GGML_Q3_K}, {"iq4_nl", GGML_IQ4_NL}, {"iq4_xs", GGML_IQ4_XS}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (!strcmp(s, t[i].name)) return t[i].type;
    return -1;
}

/* the reference engine's fallback for rows a K-quant block cannot tile */
static int fit_type(int type, int n_in) {
    if (n_in % gguf_type_block_elems(type) == 0) return type;
    switch (type) {
    case GGML_Q4_K: return n_in % 32 ? GGML_F16 : GGML_Q5_0;
    case GGML_Q5_K: return n_in % 32 ? GGML_F16 : GGML_Q5_1;
    case GGML_Q6_K: return n_in % 32 ? GGML_F16 : GGML_Q8_0;
    case GGML_Q2_K:
    case GGML_Q3_K:
    case GGML_IQ4_XS: return n_in % 32 ? GGML_F16 : GGML_IQ4_NL;
    default: return GGML_F16;
    }
}

/* Q4_K_M's use_more_bits: the first and last eighth of the layers, and every third in between */
static bool more_bits(int il, int n) {
    return il < n / 8 || il >= 7 * n / 8 || (il - n / 8) % 3 == 2;
}

typedef struct tdesc {
    char name[64];
    int n_dims, type;
    int64_t ne[3];
    bool norm, bias;
} tdesc;

static void fill_tensor(const tdesc *t, uint64_t seed, void *out) {
    uint64_t s = mix(seed) | 1;
    int64_t n_in = t->ne[0], rows = t->n_dims >= 2 ? t->ne[1] * (t->n_dims == 3 ? t->ne[2] : 1) : 1;
    float *row = malloc(sizeof(float) * (size_t)n_in);
    size_t rb = kern_row_bytes(t->type, (int)n_in);
    float sd = t->norm ? 0.0f : 1.0f / sqrtf((float)n_in);
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t i = 0; i < n_in; i++)
            row[i] = t->bias ? 0.02f * gauss(&s) : t->norm ? 1.0f + 0.02f * (gauss(&s) / 1.7320508f) : gauss(&s) * sd;
        char *dst = (char *)out + rb * (size_t)r;
        if (t->type == GGML_F32) {
            memcpy(dst, row, rb);
        } else if (t->type == GGML_F16 || t->type == GGML_BF16) {
            uint16_t *h = (uint16_t *)dst;
            for (int64_t i = 0; i < n_in; i++) {
                uint32_t u;
                memcpy(&u, &row[i], 4);
                h[i] = t->type == GGML_F16 ? kern_f32_to_f16(row[i]) : (uint16_t)((u + 0x7fff + ((u >> 16) & 1)) >> 16);
            }
        } else {
            kern_quantize(t->type, dst, row, (int)n_in);
        }
    }
    free(row);
}

static int usage(void) {
    fprintf(stderr, "usage: mkmodel --arch llama|gpt2|gemma3|qwen3moe --layers N --embd N --heads N --kv-heads N\n"
                    "               --ff N --vocab N --ctx N --type f16|q8_0|q4_k|q4_k_m|iq4_xs|... [--tied] [--seed S]\n"
                    "               [--head-dim N] [--window N] [--experts N --experts-used N --ff-exp N] -o PATH\n");
    return 2;
}

int main(int argc, char **argv) {
    geom g = {.arch = "llama", .n_layer = 2, .n_embd = 64, .n_head = 4, .n_kv = 4, .n_ff = 128, .n_vocab = 512,
              .n_ctx = 2048, .window = 512, .seed = 1, .type = "f16"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--tied")) { g.tied = true; continue; }
        if (!v) return usage();
        i++;
        if (!strcmp(a, "--arch")) g.arch = v;
        else if (!strcmp(a, "--head-dim")) g.head_dim = atoi(v);
        else if (!strcmp(a, "--window")) g.window = atoi(v);
        else if (!strcmp(a, "--experts")) g.n_exp = atoi(v);
        else if (!strcmp(a, "--experts-used")) g.n_exp_used = atoi(v);
        else if (!strcmp(a, "--ff-exp")) g.n_ff_exp = atoi(v);
        else if (!strcmp(a, "--layers")) g.n_layer = atoi(v);
        else if (!strcmp(a, "--embd")) g.n_embd = atoi(v);
        else if (!strcmp(a, "--heads")) g.n_head = atoi(v);
        else if (!strcmp(a, "--kv-heads")) g.n_kv = atoi(v);
        else if (!strcmp(a, "--ff")) g.n_ff = atoi(v);
        else if (!strcmp(a, "--vocab")) g.n_vocab = atoi(v);
        else if (!strcmp(a, "--ctx")) g.n_ctx = atoi(v);
        else if (!strcmp(a, "--type")) g.type = v;
        else if (!strcmp(a, "--seed")) g.seed = strtoull(v, NULL, 10);
        else if (!strcmp(a, "-o")) g.out = v;
        else return usage();
    }
    int base = parse_type(g.type);
    if (!g.out || base < 0 || g.n_layer < 1 || g.n_embd < 1 || g.n_head < 1 || g.n_kv < 1 || g.n_head % g.n_kv ||
        (!g.head_dim && g.n_embd % g.n_head) || g.n_ff < 1 || g.n_vocab < 260 || g.n_ctx < 1)
        return usage();
    const bool gpt2 = !strcmp(g.arch, "gpt2"), gemma = !strcmp(g.arch, "gemma3"), moe = !strcmp(g.arch, "qwen3moe");
    if (!gpt2 && !gemma && !moe && strcmp(g.arch, "llama")) return usage();
    if (moe && (g.n_exp < 1 || g.n_exp_used < 1 || g.n_exp_used > g.n_exp || g.n_ff_exp < 1)) return usage();
    bool km = !strcmp(g.type, "q4_k_m");
    int hd = g.head_dim ? g.head_dim : g.n_embd / g.n_head, q_dim = g.n_head * hd, kv_dim = g.n_kv * hd;

    /* the tensor list, in the reference engine's order */
    int n_t = 0, max_t = 4 + 16 * g.n_layer;
    tdesc *td = calloc((size_t)max_t, sizeof *td);
#define MAT(nm, nin, nout, ty)                                                                          \
    do {                                                                                               \
        tdesc *t_ = &td[n_t++];                                                                        \
        snprintf(t_->name, sizeof t_->name, "%s", nm);                                                 \
        t_->n_dims = 2, t_->ne[0] = (nin), t_->ne[1] = (nout), t_->type = fit_type((ty), (int)(nin));  \
    } while (0)
#define VEC(nm, n)                                                                                      \
    do {                                                                                               \
        tdesc *t_ = &td[n_t++];                                                                        \
        snprintf(t_->name, sizeof t_->name, "%s", nm);                                                 \
        t_->n_dims = 1, t_->ne[0] = (n), t_->ne[1] = 1, t_->type = GGML_F32, t_->norm = true;           \
    } while (0)
#define BIAS(nm, n)                                                                                     \
    do {                                                                                               \
        VEC(nm, n);                                                                                    \
        td[n_t - 1].bias = true;                                                                       \
    } while (0)
#define EXPERTS(nm, nin, nout, ty)                                                                      \
    do {                                                                                               \
        MAT(nm, nin, nout, ty);                                                                        \
        td[n_t - 1].n_dims = 3, td[n_t - 1].ne[2] = g.n_exp;                                            \
    } while (0)
    MAT("token_embd.weight", g.n_embd, g.n_vocab, km && g.tied ? GGML_Q6_K : base);
    if (gpt2) {
        MAT("position_embd.weight", g.n_embd, g.n_ctx, GGML_F32);
        td[n_t - 1].type = GGML_F32;
    }
    VEC("output_norm.weight", g.n_embd);
    if (gpt2) BIAS("output_norm.bias", g.n_embd);
    if (!g.tied) MAT("output.weight", g.n_embd, g.n_vocab, km ? GGML_Q6_K : base);
    for (int il = 0; il < g.n_layer; il++) {
        char n[64];
        int big = km && more_bits(il, g.n_layer) ? GGML_Q6_K : base;
#define NM(s) (snprintf(n, sizeof n, "blk.%d.%s", il, s), n)
        VEC(NM("attn_norm.weight"), g.n_embd);
        if (gpt2) {
            BIAS(NM("attn_norm.bias"), g.n_embd);
            MAT(NM("attn_qkv.weight"), g.n_embd, q_dim + 2 * kv_dim, base);
            BIAS(NM("attn_qkv.bias"), q_dim + 2 * kv_dim);
        } else {
            MAT(NM("attn_q.weight"), g.n_embd, q_dim, base);
            MAT(NM("attn_k.weight"), g.n_embd, kv_dim, base);
            MAT(NM("attn_v.weight"), g.n_embd, kv_dim, big);
        }
        MAT(NM("attn_output.weight"), q_dim, g.n_embd, base);
        if (gpt2) BIAS(NM("attn_output.bias"), g.n_embd);
        if (gemma || moe) {
            VEC(NM("attn_q_norm.weight"), hd);
            VEC(NM("attn_k_norm.weight"), hd);
        }
        if (gemma) VEC(NM("post_attention_norm.weight"), g.n_embd);
        VEC(NM("ffn_norm.weight"), g.n_embd);
        if (gpt2) {
            BIAS(NM("ffn_norm.bias"), g.n_embd);
            MAT(NM("ffn_up.weight"), g.n_embd, g.n_ff, base);
            BIAS(NM("ffn_up.bias"), g.n_ff);
            MAT(NM("ffn_down.weight"), g.n_ff, g.n_embd, big);
            BIAS(NM("ffn_down.bias"), g.n_embd);
        } else if (moe) {
            MAT(NM("ffn_gate_inp.weight"), g.n_embd, g.n_exp, GGML_F32);
            td[n_t - 1].type = GGML_F32;
            EXPERTS(NM("ffn_gate_exps.weight"), g.n_embd, g.n_ff_exp, base);
            EXPERTS(NM("ffn_up_exps.weight"), g.n_embd, g.n_ff_exp, base);
            EXPERTS(NM("ffn_down_exps.weight"), g.n_ff_exp, g.n_embd, big);
        } else {
            MAT(NM("ffn_gate.weight"), g.n_embd, g.n_ff, base);
            MAT(NM("ffn_up.weight"), g.n_embd, g.n_ff, base);
            MAT(NM("ffn_down.weight"), g.n_ff, g.n_embd, big);
        }
        if (gemma) VEC(NM("post_ffw_norm.weight"), g.n_embd);
#undef NM
    }

    gguf_writer *w = gguf_writer_new(32);
    if (!w) return 1;
    char name[96];
    snprintf(name, sizeof name, "random %s %dL %dE %s", g.arch, g.n_layer, g.n_embd, g.type);
    gguf_writer_kv_str(w, "general.architecture", g.arch);
    gguf_writer_kv_str(w, "general.name", name);
    char key[96];
#define KEY(s) (snprintf(key, sizeof key, "%s.%s", g.arch, s), key)
    gguf_writer_kv_u32(w, KEY("block_count"), (uint32_t)g.n_layer);
    gguf_writer_kv_u32(w, KEY("context_length"), (uint32_t)g.n_ctx);
    gguf_writer_kv_u32(w, KEY("embedding_length"), (uint32_t)g.n_embd);
    gguf_writer_kv_u32(w, KEY("feed_forward_length"), (uint32_t)g.n_ff);
    gguf_writer_kv_u32(w, KEY("attention.head_count"), (uint32_t)g.n_head);
    gguf_writer_kv_u32(w, KEY("attention.head_count_kv"), (uint32_t)g.n_kv);
    if (g.head_dim) {
        gguf_writer_kv_u32(w, KEY("attention.key_length"), (uint32_t)hd);
        gguf_writer_kv_u32(w, KEY("attention.value_length"), (uint32_t)hd);
    }
    if (gpt2) {
        gguf_writer_kv_f32(w, KEY("attention.layer_norm_epsilon"), 1e-5f);
    } else {
        gguf_writer_kv_u32(w, KEY("rope.dimension_count"), (uint32_t)hd);
        gguf_writer_kv_f32(w, KEY("rope.freq_base"), gemma || moe ? 1000000.0f : 500000.0f);
        gguf_writer_kv_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-6f);
    }
    if (gemma) {
        gguf_writer_kv_f32(w, KEY("rope.freq_base_swa"), 10000.0f);
        gguf_writer_kv_u32(w, KEY("attention.sliding_window"), (uint32_t)g.window);
    }
    if (moe) {
        gguf_writer_kv_u32(w, KEY("expert_count"), (uint32_t)g.n_exp);
        gguf_writer_kv_u32(w, KEY("expert_used_count"), (uint32_t)g.n_exp_used);
        gguf_writer_kv_u32(w, KEY("expert_feed_forward_length"), (uint32_t)g.n_ff_exp);
    }
#undef KEY

    /* the vocabulary */
    char **tok = calloc((size_t)g.n_vocab, sizeof *tok);
    float *scores = calloc((size_t)g.n_vocab, sizeof *scores);
    int32_t *types = calloc((size_t)g.n_vocab, sizeof *types);
    for (int i = 0; i < g.n_vocab; i++) {
        tok[i] = malloc(24);
        if (i == 0) strcpy(tok[i], "<unk>"), types[i] = 2;
        else if (i == 1) strcpy(tok[i], "<s>"), types[i] = 3;
        else if (i == 2) strcpy(tok[i], "</s>"), types[i] = 3;
        else if (i < 3 + 256) snprintf(tok[i], 24, "<0x%02X>", i - 3), types[i] = 6;
        else snprintf(tok[i], 24, "\xe2\x96\x81t%d", i), types[i] = 1, scores[i] = -(float)i;
    }
    gguf_writer_kv_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_kv_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tok, (uint64_t)g.n_vocab);
    gguf_writer_kv_arr(w, "tokenizer.ggml.scores", GGUF_F32, scores, (uint64_t)g.n_vocab);
    gguf_writer_kv_arr(w, "tokenizer.ggml.token_type", GGUF_I32, types, (uint64_t)g.n_vocab);
    gguf_writer_kv_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_kv_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_writer_kv_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    for (int i = 0; i < g.n_vocab; i++) free(tok[i]);
    free(tok);
    free(scores);
    free(types);

    for (int i = 0; i < n_t; i++) gguf_writer_add_tensor(w, td[i].name, td[i].n_dims, td[i].ne, td[i].type, NULL);
    int rc = gguf_writer_begin(w, g.out);
    uint64_t total = 0;
    for (int i = 0; i < n_t && !rc; i++) {
        size_t bytes = kern_row_bytes(td[i].type, (int)td[i].ne[0]) * (size_t)td[i].ne[1] *
                       (size_t)(td[i].n_dims == 3 ? td[i].ne[2] : 1);
        void *buf = malloc(bytes);
        if (!buf) {
            fprintf(stderr, "mkmodel: out of memory\n");
            return 1;
        }
        fill_tensor(&td[i], g.seed * 1000003u + (uint64_t)i, buf);
        rc = gguf_writer_put(w, buf, bytes);
        total += bytes;
        free(buf);
    }
    if (!rc) rc = gguf_writer_end(w);
    if (rc) {
        fprintf(stderr, "mkmodel: %s: %s\n", g.out, gguf_writer_error(w));
        gguf_writer_free(w);
        return 1;
    }
    gguf_writer_free(w);
    int fallback = 0;
    for (int i = 0; i < n_t; i++)
        if (td[i].n_dims >= 2 && td[i].type != base && td[i].type != GGML_F32 && !(km && td[i].type == GGML_Q6_K)) fallback++;
    printf("%s: %d tensors, %.1f MB of weights%s\n", g.out, n_t, total / 1e6,
           fallback ? " (rows not a multiple of the block: some tensors fell back, see mkmodel.c)" : "");
    free(td);
    return 0;
}
