/*
 * test_arch - the model families beyond llama/qwen, built here as small GGUF
 * files (random weights, a minimal SentencePiece vocabulary) so the suite
 * needs nothing from ../shared: each family's base file loads and decodes
 * to finite logits, and each required tensor or hyperparameter, missing or
 * absurd, is refused with a message naming it. (The numbers themselves are
 * checked against the reference engine in test_golden.)
 */
#include "testutil.h"

#include <math.h>

#include "gguf_write.h"
#include "heed.h"

#define E 32    /* n_embd */
#define H 4     /* heads */
#define HKV 2   /* KV heads */
#define HD 8    /* head_dim */
#define FF 64   /* n_ff */
#define NV 300  /* vocabulary */
#define CTX 64  /* context */
#define NL 2    /* layers */
#define NX 4    /* experts */

/* One change to a family's base file. */
typedef struct mutation {
    const char *drop;      /* a tensor left out */
    const char *shape_of;  /* a tensor whose rows are one short */
    const char *flat;      /* a 3-D tensor written as 2-D */
    const char *key;       /* a key set to value (absent when value is NAN and key is a base key) */
    double value;
} mutation;

typedef struct builder {
    gguf_writer *w;
    const mutation *mu;
    uint64_t seed;
    float *bufs[256];
    int n_bufs;
} builder;

static float rnd(uint64_t *s) {
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return ((float)(*s >> 40) / (float)(1 << 24) - 0.5f) * 0.5f;
}

/* A tensor of random F32 values (norm weights near 1). */
static void tensor(builder *b, const char *name, int n_dims, int64_t n0, int64_t n1, int64_t n2) {
    const mutation *mu = b->mu;
    if (mu->drop && !strcmp(mu->drop, name)) return;
    if (mu->shape_of && !strcmp(mu->shape_of, name)) {
        if (n_dims == 1) n0--;
        else n1--;
    }
    if (mu->flat && !strcmp(mu->flat, name) && n_dims == 3) n_dims = 2, n1 *= n2, n2 = 1;
    int64_t ne[3] = {n0, n1, n2};
    size_t n = (size_t)n0 * (size_t)(n_dims > 1 ? n1 : 1) * (size_t)(n_dims > 2 ? n2 : 1);
    float *d = malloc(sizeof(float) * n);
    assert_non_null(d);
    bool norm = strstr(name, "norm.weight") != NULL;
    for (size_t i = 0; i < n; i++) d[i] = norm ? 1.0f + rnd(&b->seed) * 0.1f : rnd(&b->seed);
    assert_true(b->n_bufs < 256);
    b->bufs[b->n_bufs++] = d;
    assert_int_equal(gguf_writer_add_tensor(b->w, name, n_dims, ne, 0 /* F32 */, d), HEED_OK);
}

static void key_u32(builder *b, const char *arch, const char *suffix, uint32_t v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, suffix);
    if (b->mu->key && !strcmp(b->mu->key, k)) {
        if (isnan(b->mu->value)) return;
        v = (uint32_t)b->mu->value;
    }
    assert_int_equal(gguf_writer_kv_u32(b->w, k, v), HEED_OK);
}

static void key_f32(builder *b, const char *arch, const char *suffix, float v) {
    char k[128];
    snprintf(k, sizeof k, "%s.%s", arch, suffix);
    if (b->mu->key && !strcmp(b->mu->key, k)) {
        if (isnan(b->mu->value)) return;
        v = (float)b->mu->value;
    }
    assert_int_equal(gguf_writer_kv_f32(b->w, k, v), HEED_OK);
}

static void vocab(builder *b) {
    char **tok = calloc(NV, sizeof *tok);
    float *scores = calloc(NV, sizeof *scores);
    int32_t *types = calloc(NV, sizeof *types);
    for (int i = 0; i < NV; i++) {
        tok[i] = malloc(24);
        if (i == 0) strcpy(tok[i], "<unk>"), types[i] = 2;
        else if (i == 1) strcpy(tok[i], "<s>"), types[i] = 3;
        else if (i == 2) strcpy(tok[i], "</s>"), types[i] = 3;
        else if (i < 3 + 256) snprintf(tok[i], 24, "<0x%02X>", i - 3), types[i] = 6;
        else snprintf(tok[i], 24, "\xe2\x96\x81t%d", i), types[i] = 1, scores[i] = -(float)i;
    }
    gguf_writer_kv_str(b->w, "tokenizer.ggml.model", "llama");
    gguf_writer_kv_arr_str(b->w, "tokenizer.ggml.tokens", (const char *const *)tok, NV);
    gguf_writer_kv_arr(b->w, "tokenizer.ggml.scores", 6 /* F32 */, scores, NV);
    gguf_writer_kv_arr(b->w, "tokenizer.ggml.token_type", 5 /* I32 */, types, NV);
    gguf_writer_kv_u32(b->w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_kv_u32(b->w, "tokenizer.ggml.eos_token_id", 2);
    for (int i = 0; i < NV; i++) free(tok[i]);
    free(tok);
    free(scores);
    free(types);
}

/* Writes arch's base file, changed by mu, to path. */
static void build(const char *arch, const mutation *mu, const char *path) {
    builder b = {gguf_writer_new(32), mu, 7, {0}, 0};
    assert_non_null(b.w);
    const bool gpt2 = !strcmp(arch, "gpt2"), gemma2 = !strcmp(arch, "gemma2"), gemma3 = !strcmp(arch, "gemma3"),
               phi3 = !strcmp(arch, "phi3"), olmo2 = !strcmp(arch, "olmo2"), moe = !strcmp(arch, "qwen3moe");
    const bool gemma = gemma2 || gemma3;
    gguf_writer_kv_str(b.w, "general.architecture", arch);
    key_u32(&b, arch, "block_count", NL);
    key_u32(&b, arch, "context_length", CTX);
    key_u32(&b, arch, "embedding_length", E);
    key_u32(&b, arch, "feed_forward_length", FF);
    key_u32(&b, arch, "attention.head_count", H);
    key_u32(&b, arch, "attention.head_count_kv", gpt2 ? H : HKV);
    key_u32(&b, arch, "attention.key_length", HD);
    key_u32(&b, arch, "attention.value_length", HD);
    if (gpt2) key_f32(&b, arch, "attention.layer_norm_epsilon", 1e-5f);
    else key_f32(&b, arch, "attention.layer_norm_rms_epsilon", 1e-6f);
    if (gemma) key_u32(&b, arch, "attention.sliding_window", 8);
    if (gemma2) {
        key_f32(&b, arch, "attn_logit_softcapping", 10.0f);
        key_f32(&b, arch, "final_logit_softcapping", 15.0f);
    }
    if (moe) {
        key_u32(&b, arch, "expert_count", NX);
        key_u32(&b, arch, "expert_used_count", 2);
        key_u32(&b, arch, "expert_feed_forward_length", FF / 2);
    }
    if (mu->key && !strncmp(mu->key, arch, strlen(arch)) && !isnan(mu->value)) { /* a key the base lacks */
        const char *suffix = mu->key + strlen(arch) + 1;
        if (!strcmp(suffix, "attention.sliding_window_pattern")) key_u32(&b, arch, suffix, 0);
    }
    vocab(&b);

    const int q = H * HD, kv = (gpt2 ? H : HKV) * HD;
    tensor(&b, "token_embd.weight", 2, E, NV, 1);
    if (gpt2) tensor(&b, "position_embd.weight", 2, E, CTX, 1);
    tensor(&b, "output_norm.weight", 1, E, 1, 1);
    if (gpt2) tensor(&b, "output_norm.bias", 1, E, 1, 1);
    char n[96];
#define NM(s) (snprintf(n, sizeof n, "blk.%d.%s", il, s), n)
    for (int il = 0; il < NL; il++) {
        if (!olmo2) tensor(&b, NM("attn_norm.weight"), 1, E, 1, 1);
        if (gpt2) tensor(&b, NM("attn_norm.bias"), 1, E, 1, 1);
        if (gpt2 || phi3) {
            tensor(&b, NM("attn_qkv.weight"), 2, E, q + 2 * kv, 1);
            if (gpt2) tensor(&b, NM("attn_qkv.bias"), 1, q + 2 * kv, 1, 1);
        } else {
            tensor(&b, NM("attn_q.weight"), 2, E, q, 1);
            tensor(&b, NM("attn_k.weight"), 2, E, kv, 1);
            tensor(&b, NM("attn_v.weight"), 2, E, kv, 1);
        }
        tensor(&b, NM("attn_output.weight"), 2, q, E, 1);
        if (gpt2) tensor(&b, NM("attn_output.bias"), 1, E, 1, 1);
        if (gemma3 || moe) {
            tensor(&b, NM("attn_q_norm.weight"), 1, HD, 1, 1);
            tensor(&b, NM("attn_k_norm.weight"), 1, HD, 1, 1);
        }
        if (olmo2) {
            tensor(&b, NM("attn_q_norm.weight"), 1, q, 1, 1);
            tensor(&b, NM("attn_k_norm.weight"), 1, kv, 1, 1);
        }
        if (gemma || olmo2) tensor(&b, NM("post_attention_norm.weight"), 1, E, 1, 1);
        if (!olmo2) tensor(&b, NM("ffn_norm.weight"), 1, E, 1, 1);
        if (gpt2) {
            tensor(&b, NM("ffn_norm.bias"), 1, E, 1, 1);
            tensor(&b, NM("ffn_up.weight"), 2, E, FF, 1);
            tensor(&b, NM("ffn_up.bias"), 1, FF, 1, 1);
            tensor(&b, NM("ffn_down.weight"), 2, FF, E, 1);
            tensor(&b, NM("ffn_down.bias"), 1, E, 1, 1);
        } else if (moe) {
            tensor(&b, NM("ffn_gate_inp.weight"), 2, E, NX, 1);
            tensor(&b, NM("ffn_gate_exps.weight"), 3, E, FF / 2, NX);
            tensor(&b, NM("ffn_up_exps.weight"), 3, E, FF / 2, NX);
            tensor(&b, NM("ffn_down_exps.weight"), 3, FF / 2, E, NX);
        } else if (phi3) {
            tensor(&b, NM("ffn_up.weight"), 2, E, 2 * FF, 1);
            tensor(&b, NM("ffn_down.weight"), 2, FF, E, 1);
        } else {
            tensor(&b, NM("ffn_gate.weight"), 2, E, FF, 1);
            tensor(&b, NM("ffn_up.weight"), 2, E, FF, 1);
            tensor(&b, NM("ffn_down.weight"), 2, FF, E, 1);
        }
        if (gemma || olmo2) tensor(&b, NM("post_ffw_norm.weight"), 1, E, 1, 1);
    }
#undef NM
    assert_int_equal(gguf_writer_write_file(b.w, path), HEED_OK);
    gguf_writer_free(b.w);
    for (int i = 0; i < b.n_bufs; i++) free(b.bufs[i]);
}

static const char *tmp(const char *tag) {
    static char p[128];
    snprintf(p, sizeof p, "/tmp/heed_test_arch_%d_%s.gguf", (int)getpid(), tag);
    return p;
}

static const char *const ARCHS[] = {"gpt2", "gemma2", "gemma3", "phi3", "olmo2", "qwen3moe"};

/* Every family's base file loads, reports itself, and decodes a prompt to finite logits. */
static void test_base_files(void **state) {
    (void)state;
    for (size_t a = 0; a < sizeof ARCHS / sizeof *ARCHS; a++) {
        mutation none = {0};
        const char *p = tmp(ARCHS[a]);
        build(ARCHS[a], &none, p);
        heed_model *m;
        char err[256];
        if (heed_model_load(p, NULL, &m, err, sizeof err)) fail_msg("%s: %s", ARCHS[a], err);
        heed_model_info mi;
        heed_model_get_info(m, &mi);
        assert_string_equal(mi.arch, ARCHS[a]);
        assert_int_equal(mi.n_layer, NL);
        bool windowed = !strncmp(ARCHS[a], "gemma", 5);
        assert_int_equal(mi.layer_window[0], windowed ? 8 : 0); /* gemma2/3: layer 0 slides */
        assert_int_equal(mi.layer_window[1], strcmp(ARCHS[a], "gemma3") ? 0 : 8); /* gemma3: 5 of every 6 */
        assert_true((mi.attn_softcap > 0) == !strcmp(ARCHS[a], "gemma2"));
        assert_int_equal(mi.n_expert, strcmp(ARCHS[a], "qwen3moe") ? 0 : NX);
        heed_ctx *c;
        assert_int_equal(heed_ctx_new(m, NULL, &c), HEED_OK);
        int32_t ids[20];
        for (int i = 0; i < 20; i++) ids[i] = 3 + (i * 37) % (NV - 3);
        assert_int_equal(heed_decode(c, ids, 20), HEED_OK);
        assert_int_equal(heed_decode(c, ids, 1), HEED_OK);
        for (int i = 0; i < NV; i++) assert_true(isfinite(heed_ctx_logits(c)[i]));
        if (mi.final_softcap > 0)
            for (int i = 0; i < NV; i++) assert_true(fabsf(heed_ctx_logits(c)[i]) <= mi.final_softcap);
        heed_ctx_free(c);
        heed_model_free(m);
        unlink(p);
    }
}

/* Each required tensor and hyperparameter of the new families, missing or
 * absurd: a clear error naming the field, never a crash. */
static void test_corrupt_files(void **state) {
    (void)state;
    static const struct {
        const char *arch;
        mutation mu;
        int rc;
        const char *msg;
    } cases[] = {
        {"gpt2", {.drop = "position_embd.weight"}, HEED_ERR_FORMAT, "missing tensor 'position_embd.weight'"},
        {"gpt2", {.drop = "blk.1.attn_qkv.bias"}, HEED_ERR_FORMAT, "missing tensor 'blk.1.attn_qkv.bias'"},
        {"gpt2", {.drop = "blk.0.attn_norm.bias"}, HEED_ERR_FORMAT, "missing tensor 'blk.0.attn_norm.bias'"},
        {"gpt2", {.drop = "blk.0.ffn_down.bias"}, HEED_ERR_FORMAT, "missing tensor 'blk.0.ffn_down.bias'"},
        {"gpt2", {.shape_of = "blk.0.attn_qkv.weight"}, HEED_ERR_FORMAT, "tensor 'blk.0.attn_qkv.weight' has shape"},
        {"gpt2", {.drop = "blk.0.attn_qkv.weight"}, HEED_ERR_FORMAT, "missing tensor 'blk.0.attn_qkv.weight'"},
        {"gemma2", {.key = "gemma2.attn_logit_softcapping", .value = 0}, HEED_ERR_FORMAT,
         "'gemma2.attn_logit_softcapping' = 0: a soft-cap must be positive"},
        {"gemma2", {.key = "gemma2.final_logit_softcapping", .value = -3}, HEED_ERR_FORMAT,
         "'gemma2.final_logit_softcapping' = -3 is outside"},
        {"gemma2", {.key = "gemma2.attention.sliding_window", .value = NAN}, HEED_ERR_FORMAT,
         "missing key 'gemma2.attention.sliding_window'"},
        {"gemma2", {.key = "gemma2.attention.sliding_window", .value = 4096}, HEED_ERR_FORMAT,
         "'gemma2.attention.sliding_window' = 4096 is larger than the context (64)"},
        {"gemma2", {.key = "gemma2.attention.sliding_window", .value = 0}, HEED_ERR_FORMAT,
         "'gemma2.attention.sliding_window' = 0 is outside"},
        {"gemma2", {.drop = "blk.1.post_attention_norm.weight"}, HEED_ERR_FORMAT,
         "missing tensor 'blk.1.post_attention_norm.weight'"},
        {"gemma3", {.drop = "blk.0.attn_k_norm.weight"}, HEED_ERR_FORMAT, "missing tensor 'blk.0.attn_k_norm.weight'"},
        {"gemma3", {.drop = "blk.1.post_ffw_norm.weight"}, HEED_ERR_FORMAT, "missing tensor 'blk.1.post_ffw_norm.weight'"},
        {"gemma3", {.key = "gemma3.attention.sliding_window_pattern", .value = 0}, HEED_ERR_FORMAT,
         "'gemma3.attention.sliding_window_pattern' = 0 is outside"},
        {"phi3", {.shape_of = "blk.0.ffn_up.weight"}, HEED_ERR_FORMAT, "tensor 'blk.0.ffn_up.weight' has shape"},
        {"phi3", {.drop = "blk.0.attn_qkv.weight"}, HEED_ERR_FORMAT, "missing tensor 'blk.0.attn_q.weight'"},
        {"olmo2", {.shape_of = "blk.0.attn_k_norm.weight"}, HEED_ERR_FORMAT,
         "tensor 'blk.0.attn_k_norm.weight' has 15 elements in 1 dims, expected a vector of 16"},
        {"olmo2", {.drop = "blk.1.post_ffw_norm.weight"}, HEED_ERR_FORMAT, "missing tensor 'blk.1.post_ffw_norm.weight'"},
        {"qwen3moe", {.drop = "blk.1.ffn_down_exps.weight"}, HEED_ERR_FORMAT,
         "missing tensor 'blk.1.ffn_down_exps.weight'"},
        {"qwen3moe", {.drop = "blk.0.ffn_gate_inp.weight"}, HEED_ERR_FORMAT, "missing tensor 'blk.0.ffn_gate_inp.weight'"},
        {"qwen3moe", {.flat = "blk.0.ffn_up_exps.weight"}, HEED_ERR_FORMAT,
         "tensor 'blk.0.ffn_up_exps.weight' has shape [32, 128, 1] in 2 dims, expected [32, 32, 4] (3 dims)"},
        {"qwen3moe", {.shape_of = "blk.0.ffn_gate_exps.weight"}, HEED_ERR_FORMAT,
         "tensor 'blk.0.ffn_gate_exps.weight' has shape"},
        {"qwen3moe", {.key = "qwen3moe.expert_used_count", .value = 5}, HEED_ERR_FORMAT,
         "'qwen3moe.expert_used_count' = 5 is outside 1..4"},
        {"qwen3moe", {.key = "qwen3moe.expert_count", .value = NAN}, HEED_ERR_FORMAT, "missing key 'qwen3moe.expert_count'"},
        {"qwen3moe", {.key = "qwen3moe.expert_count", .value = 100000}, HEED_ERR_FORMAT,
         "'qwen3moe.expert_count' = 100000 is outside 1..512"},
        {"qwen3moe", {.key = "qwen3moe.expert_feed_forward_length", .value = NAN}, HEED_ERR_FORMAT,
         "missing key 'qwen3moe.expert_feed_forward_length'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *p = tmp("bad");
        build(cases[i].arch, &cases[i].mu, p);
        heed_model *m = NULL;
        char err[512] = "";
        int rc = heed_model_load(p, NULL, &m, err, sizeof err);
        printf("  %-9s %s\n", cases[i].arch, err);
        if (rc != cases[i].rc || !strstr(err, cases[i].msg))
            fail_msg("%s case %zu: rc %d '%s', expected %d with '%s'", cases[i].arch, i, rc, err, cases[i].rc,
                     cases[i].msg);
        assert_null(m);
        unlink(p);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_files),
        cmocka_unit_test(test_corrupt_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
