/*
 * fuzz_hf_config - libFuzzer target for the config.json of Hugging Face
 * checkpoint folders (src/hf.c through heed_model_load): any config must
 * load or be refused with a message, never read out of bounds, overflow or
 * leak; a model that loads must run a few tokens.
 *
 * The folder is this process's temporary folder (fuzz.h): at start-up the
 * harness writes a tiny checkpoint there (model.safetensors: hidden 8, two
 * layers, 2 heads / 1 KV head of 4, n_ff 16, 261 tokens, F32; with
 * lm_head, the Qwen2 q/k/v biases and the Qwen3 q/k norms, so tied and
 * untied Llama, Mistral, Qwen2 and Qwen3 configs of that geometry all
 * load) and a small byte-level tokenizer.json; each input is written as
 * config.json. Geometry that does not match is refused by the weight
 * checks, which the fuzzer thereby reaches too.
 *
 *   make fuzz && build-fuzz/fuzz/fuzz_hf_config DIR tests/fuzz/corpus_hf_config
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "heed.h"

enum { E = 8, FF = 16, HD = 4, HEADS = 2, LAYERS = 2, VOCAB = 261 };

/* ---------------------------------------------------- the checkpoint */

typedef struct st_build {
    char header[8192];
    size_t n_header;
    float data[32768];
    size_t n_data; /* floats */
} st_build;

static void st_add(st_build *b, const char *name, int d0, int d1) {
    size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1);
    if (b->n_data + n > sizeof b->data / sizeof b->data[0]) abort();
    for (size_t i = 0; i < n; i++) /* small values of both signs; norms near one */
        b->data[b->n_data + i] = strstr(name, "norm") ? 1.0f : (float)((int)((i * 7919 + b->n_data) % 17) - 8) * 0.05f;
    char shape[32];
    if (d1) snprintf(shape, sizeof shape, "[%d,%d]", d0, d1);
    else snprintf(shape, sizeof shape, "[%d]", d0);
    b->n_header += (size_t)snprintf(b->header + b->n_header, sizeof b->header - b->n_header,
                                    "%s\"%s\":{\"dtype\":\"F32\",\"shape\":%s,\"data_offsets\":[%zu,%zu]}",
                                    b->n_header > 1 ? "," : "", name, shape, b->n_data * 4, (b->n_data + n) * 4);
    b->n_data += n;
}

static void write_weights(const char *dir) {
    static st_build b;
    b.n_header = (size_t)snprintf(b.header, sizeof b.header, "{");
    st_add(&b, "model.embed_tokens.weight", VOCAB, E);
    st_add(&b, "lm_head.weight", VOCAB, E);
    st_add(&b, "model.norm.weight", E, 0);
    for (int l = 0; l < LAYERS; l++) {
        char n[96];
#define T(s, d0, d1) (snprintf(n, sizeof n, "model.layers.%d.%s", l, s), st_add(&b, n, d0, d1))
        T("input_layernorm.weight", E, 0);
        T("self_attn.q_proj.weight", HEADS * HD, E);
        T("self_attn.k_proj.weight", HD, E);
        T("self_attn.v_proj.weight", HD, E);
        T("self_attn.o_proj.weight", E, HEADS * HD);
        T("self_attn.q_proj.bias", HEADS * HD, 0);
        T("self_attn.k_proj.bias", HD, 0);
        T("self_attn.v_proj.bias", HD, 0);
        T("self_attn.q_norm.weight", HD, 0);
        T("self_attn.k_norm.weight", HD, 0);
        T("post_attention_layernorm.weight", E, 0);
        T("mlp.gate_proj.weight", FF, E);
        T("mlp.up_proj.weight", FF, E);
        T("mlp.down_proj.weight", E, FF);
#undef T
    }
    b.n_header += (size_t)snprintf(b.header + b.n_header, sizeof b.header - b.n_header, "}");
    while (b.n_header % 8) b.header[b.n_header++] = ' ';
    size_t total = 8 + b.n_header + b.n_data * 4;
    uint8_t *file = malloc(total);
    if (!file) abort();
    uint64_t len = b.n_header;
    for (int i = 0; i < 8; i++) file[i] = (uint8_t)(len >> (8 * i));
    memcpy(file + 8, b.header, b.n_header);
    memcpy(file + 8 + b.n_header, b.data, b.n_data * 4); /* x86-64: little-endian like the format */
    fuzz_write_file(dir, "model.safetensors", file, total);
    free(file);
}

/* GPT-2's byte alphabet: byte -> a printable code point, as a JSON string body. */
static void byte_piece(int byte, char *out, size_t size) {
    int cp = byte, n = 0;
    if (!((byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || byte >= 174)) {
        for (int b = 0; b < byte; b++)
            if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)) n++;
        cp = 256 + n;
    }
    if (cp == '"' || cp == '\\') snprintf(out, size, "\\%c", cp);
    else snprintf(out, size, "\\u%04x", cp);
}

/* 256 byte pieces, "Ġt", "he", "Ġthe" and two added tokens: 261. */
static void write_tokenizer(const char *dir) {
    static char json[16384];
    size_t n = (size_t)snprintf(json, sizeof json, "{\"model\":{\"type\":\"BPE\",\"vocab\":{");
    for (int b = 0; b < 256; b++) {
        char p[16];
        byte_piece(b, p, sizeof p);
        n += (size_t)snprintf(json + n, sizeof json - n, "\"%s\":%d,", p, b);
    }
    n += (size_t)snprintf(json + n, sizeof json - n,
                          "\"\\u0120t\":256,\"he\":257,\"\\u0120the\":258},"
                          "\"merges\":[\"\\u0120 t\",\"h e\",\"\\u0120t he\"]},"
                          "\"added_tokens\":[{\"id\":259,\"content\":\"<|bos|>\",\"special\":true},"
                          "{\"id\":260,\"content\":\"<|eos|>\",\"special\":true}],"
                          "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":true}}");
    fuzz_write_file(dir, "tokenizer.json", json, n);
    const char *cfg = "{\"bos_token\":\"<|bos|>\",\"eos_token\":\"<|eos|>\",\"add_bos_token\":true}";
    fuzz_write_file(dir, "tokenizer_config.json", cfg, strlen(cfg));
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *dir = fuzz_tmpdir();
    write_weights(dir);
    write_tokenizer(dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *dir = fuzz_tmpdir();
    fuzz_write_file(dir, "config.json", data, size);
    heed_model *m = NULL;
    char err[512] = "";
    int rc = heed_model_load(dir, NULL, &m, err, sizeof err);
    if (rc != HEED_OK) {
        if (m || rc > 0 || !err[0]) __builtin_trap(); /* a refusal says why */
        return 0;
    }
    heed_model_info info;
    heed_model_get_info(m, &info);
    if (info.n_embd != E || info.n_vocab != VOCAB || info.n_ctx_train < 1) __builtin_trap();
    char buf[128];
    for (int i = 0; i < heed_model_n_meta(m); i++) {
        if (!heed_model_meta_key(m, i) || heed_model_meta_value(m, i, buf, sizeof buf) < 0) __builtin_trap();
    }
    /* a few positions through the model: RoPE tables, scaling, norms */
    heed_ctx_params cp = heed_ctx_default_params();
    cp.n_ctx = info.n_ctx_train < 8 ? info.n_ctx_train : 8;
    cp.n_threads = 1;
    heed_ctx *c = NULL;
    if (heed_ctx_new(m, &cp, &c) != HEED_OK) __builtin_trap();
    const int32_t ids[] = {259, 258, 104, 101, 260, 0, 255, 257};
    int n = cp.n_ctx < 3 ? cp.n_ctx : 3;
    if (heed_decode(c, ids, n) != HEED_OK) __builtin_trap();
    if (cp.n_ctx > n && heed_decode(c, ids + n, 1) != HEED_OK) __builtin_trap();
    volatile float sink = heed_ctx_logits(c)[0];
    (void)sink;
    int32_t tok[16];
    if (heed_tokenize(m, "Hello the", 9, true, tok, 16) < 0) __builtin_trap();
    heed_ctx_free(c);
    heed_model_free(m);
    return 0;
}
