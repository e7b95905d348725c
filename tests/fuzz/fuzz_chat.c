/*
 * fuzz_chat - libFuzzer target for chat templates: hostile messages (any
 * role, any content, any number) rendered by each template family and
 * tokenized with special tokens parsed, and hostile template strings
 * recognised by chat_detect. Nothing may read out of bounds or leak;
 * rendering keeps snprintf semantics (the full length, a truncated copy
 * that is a NUL-terminated prefix); an unknown role or a misplaced system
 * message is refused the same way by format and tokenize; special-token
 * strings in content never become special tokens (the chat has as many
 * control tokens as with harmless content), and a chat without them
 * tokenizes as heed_tokenize_flags does its rendered text.
 *
 * Models: the bundled one has no template, so the harness writes twelve
 * tiny ones at start-up (tokenizer and template matter here, not weights):
 * six templates (Llama 3, Llama 3.1, ChatML, Qwen 2.5's ChatML with a
 * default system message, Llama 2, Mistral) x two vocabularies
 * (SentencePiece with byte fallback, byte-level BPE with merges), each
 * holding the special tokens of every family.
 *
 * Input: byte 0 picks the model (bits 0-2: template, mod 6; bit 3: BPE;
 * bit 4: add_generation_prompt); the rest is split at NUL bytes into role,
 * content, role, content, ... (at most 32 messages); an odd last part is a
 * template string for chat_detect (else the model's own is used).
 *
 *   make fuzz && build-fuzz/fuzz/fuzz_chat DIR tests/fuzz/corpus_chat
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "fuzz.h"
#include "gguf.h"
#include "gguf_write.h"
#include "heed.h"

#define N_TMPL 6
#define MAX_MSGS 32

static const char *const TEMPLATES[N_TMPL] = {
    /* Llama 3 */
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}",
    /* Llama 3.1: the knowledge-date preamble */
    "{{- bos_token }}{{- \"<|start_header_id|>system<|end_header_id|>\\n\\n\" }}{{- \"Cutting Knowledge Date: "
    "December 2023\\n\" }}{{- system_message }}{{- \"<|eot_id|>\" }}",
    /* ChatML */
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}",
    /* Qwen 2.5: ChatML with a literal default system message */
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
    "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a "
    "helpful assistant.<|im_end|>\\n' }}{%- endif %}",
    /* Llama 2 */
    "{% if messages[0]['role'] == 'system' %}{% set system_message = '<<SYS>>\\n' + messages[0]['content'] + "
    "'\\n<</SYS>>\\n\\n' %}{% endif %}{{ bos_token + '[INST] ' + content + ' [/INST]' }}",
    /* Mistral */
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
    "message['content'] + ' [/INST]' }}{% else %}{{ message['content'] + eos_token }}{% endif %}{% endfor %}",
};

/* Special tokens of every family, after <unk> <s> </s>. */
static const char *const SPECIALS[] = {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                                       "<|eot_id|>",        "<|im_start|>",        "<|im_end|>",
                                       "<|endoftext|>"};
/* Words whose prefixes become pieces (SentencePiece: reachable by bigram
 * merges) or merges (BPE); ' ' is the family's space symbol. */
static const char *const WORDS[] = {" user", " system", " assistant", "[INST]", "[/INST]", "<<SYS>>", "<</SYS>>",
                                    " the",  " Hello",  " You",       "user",   "system",  "assistant", "\n\n"};

#define MAX_TOKENS 1024

typedef struct vocab_build {
    char *tok[MAX_TOKENS];
    float score[MAX_TOKENS];
    int32_t type[MAX_TOKENS];
    char *merges[MAX_TOKENS];
    int n, n_merges;
} vocab_build;

static heed_model *g_models[2][N_TMPL];

static int vb_find(const vocab_build *b, const char *s) {
    for (int i = 0; i < b->n; i++)
        if (strcmp(b->tok[i], s) == 0) return i;
    return -1;
}

static void vb_add(vocab_build *b, const char *s, int type, float score) {
    if (vb_find(b, s) >= 0) return;
    if (b->n == MAX_TOKENS) abort();
    b->tok[b->n] = strdup(s);
    if (!b->tok[b->n]) abort();
    b->type[b->n] = type;
    b->score[b->n++] = score;
}

/* GPT-2's byte alphabet: byte -> a printable code point, as UTF-8. */
static void byte_char(int byte, char *out) {
    int cp = byte, n = 0;
    if (!((byte >= 33 && byte <= 126) || (byte >= 161 && byte <= 172) || byte >= 174)) {
        for (int b = 0; b < byte; b++)
            if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)) n++;
        cp = 256 + n;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = '\0';
    } else {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = '\0';
    }
}

/* A word in the vocabulary's alphabet: ' ' as "▁" (SentencePiece) or as
 * its byte character "Ġ" (BPE), "\n" as "Ċ" (BPE). */
static void spelled(const char *w, bool bpe, char *out, size_t size) {
    size_t n = 0;
    for (const char *p = w; *p && n + 4 < size; p++) {
        char c[4];
        if (!bpe && *p == ' ') strcpy(c, "\xe2\x96\x81");
        else if (bpe) byte_char((unsigned char)*p, c);
        else c[0] = *p, c[1] = '\0';
        strcpy(out + n, c);
        n += strlen(c);
    }
    out[n] = '\0';
}

static void build_vocab(vocab_build *b, bool bpe) {
    memset(b, 0, sizeof *b);
    vb_add(b, "<unk>", 2, 0);
    vb_add(b, "<s>", 3, 0);
    vb_add(b, "</s>", 3, 0);
    for (size_t i = 0; i < sizeof SPECIALS / sizeof SPECIALS[0]; i++) vb_add(b, SPECIALS[i], 3, 0);
    for (int c = 0; c < 256; c++) {
        char piece[8];
        if (bpe) byte_char(c, piece);
        else snprintf(piece, sizeof piece, "<0x%02X>", c);
        vb_add(b, piece, bpe ? 1 : 6, 0);
    }
    if (!bpe) {
        vb_add(b, "\xe2\x96\x81", 1, -1);
        for (int c = 0x21; c < 0x7f; c++) vb_add(b, (char[]){(char)c, 0}, 1, -2);
    }
    /* every prefix of every word: score grows with length (merges prefer it) */
    for (size_t w = 0; w < sizeof WORDS / sizeof WORDS[0]; w++) {
        char sp[64], prev[64] = "";
        spelled(WORDS[w], bpe, sp, sizeof sp);
        size_t len = strlen(sp);
        for (size_t k = 1; k <= len; k++) {
            if (k < len && ((unsigned char)sp[k] & 0xc0) == 0x80) continue; /* inside a character */
            char pre[64];
            memcpy(pre, sp, k);
            pre[k] = '\0';
            if (prev[0] && vb_find(b, pre) < 0) {
                vb_add(b, pre, 1, (float)k - 100.0f);
                if (bpe && b->n_merges < MAX_TOKENS) {
                    char m[160];
                    snprintf(m, sizeof m, "%s %s", prev, pre + strlen(prev));
                    b->merges[b->n_merges++] = strdup(m);
                }
            }
            strcpy(prev, pre);
        }
    }
}

static void free_vocab(vocab_build *b) {
    for (int i = 0; i < b->n; i++) free(b->tok[i]);
    for (int i = 0; i < b->n_merges; i++) free(b->merges[i]);
}

enum { E = 8, FF = 16, HEADS = 2, HD = 4, CTX = 64 };

/* Writes a one-layer llama model with the vocabulary and template to path. */
static int write_model(const char *path, bool bpe, const char *tmpl) {
    vocab_build b;
    build_vocab(&b, bpe);
    gguf_writer *w = gguf_writer_new(32);
    if (!w) abort();
    gguf_writer_kv_str(w, "general.architecture", "llama");
    gguf_writer_kv_str(w, "general.name", "fuzz chat");
    gguf_writer_kv_u32(w, "llama.block_count", 1);
    gguf_writer_kv_u32(w, "llama.context_length", CTX);
    gguf_writer_kv_u32(w, "llama.embedding_length", E);
    gguf_writer_kv_u32(w, "llama.feed_forward_length", FF);
    gguf_writer_kv_u32(w, "llama.attention.head_count", HEADS);
    gguf_writer_kv_u32(w, "llama.attention.head_count_kv", 1);
    gguf_writer_kv_str(w, "tokenizer.ggml.model", bpe ? "gpt2" : "llama");
    if (bpe) {
        gguf_writer_kv_str(w, "tokenizer.ggml.pre", "llama-bpe");
        gguf_writer_kv_arr_str(w, "tokenizer.ggml.merges", (const char *const *)b.merges, (uint64_t)b.n_merges);
    }
    gguf_writer_kv_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)b.tok, (uint64_t)b.n);
    gguf_writer_kv_arr(w, "tokenizer.ggml.scores", GGUF_F32, b.score, (uint64_t)b.n);
    gguf_writer_kv_arr(w, "tokenizer.ggml.token_type", GGUF_I32, b.type, (uint64_t)b.n);
    gguf_writer_kv_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_kv_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_writer_kv_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_writer_kv_str(w, "tokenizer.chat_template", tmpl);
    /* weights: zeros, norms one (values do not matter for tokenizing) */
    static float embd[MAX_TOKENS * E], ones[FF], mat[FF * E];
    for (int i = 0; i < FF; i++) ones[i] = 1.0f;
    const struct {
        const char *name;
        int64_t ne0, ne1;
        const float *data;
    } t[] = {
        {"token_embd.weight", E, b.n, embd},
        {"output_norm.weight", E, 1, ones},
        {"blk.0.attn_norm.weight", E, 1, ones},
        {"blk.0.attn_q.weight", E, HEADS * HD, mat},
        {"blk.0.attn_k.weight", E, HD, mat},
        {"blk.0.attn_v.weight", E, HD, mat},
        {"blk.0.attn_output.weight", HEADS * HD, E, mat},
        {"blk.0.ffn_norm.weight", E, 1, ones},
        {"blk.0.ffn_gate.weight", E, FF, mat},
        {"blk.0.ffn_up.weight", E, FF, mat},
        {"blk.0.ffn_down.weight", FF, E, mat},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        int64_t ne[2] = {t[i].ne0, t[i].ne1};
        gguf_writer_add_tensor(w, t[i].name, t[i].ne1 == 1 ? 1 : 2, ne, GGML_F32, t[i].data);
    }
    int rc = gguf_writer_write_file(w, path);
    if (rc) fprintf(stderr, "fuzz_chat: %s: %s\n", path, gguf_writer_error(w));
    gguf_writer_free(w);
    free_vocab(&b);
    return rc;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *dir = fuzz_tmpdir();
    for (int bpe = 0; bpe < 2; bpe++)
        for (int t = 0; t < N_TMPL; t++) {
            char path[4200], err[256];
            snprintf(path, sizeof path, "%s/chat-%d-%d.gguf", dir, bpe, t);
            if (write_model(path, bpe, TEMPLATES[t]) ||
                heed_model_load(path, NULL, &g_models[bpe][t], err, sizeof err) != HEED_OK) {
                fprintf(stderr, "fuzz_chat: cannot make the model %s: %s\n", path, err);
                exit(1);
            }
            remove(path); /* mapped: the model keeps it */
        }
    return 0;
}

/* Whether text holds a special-token string of the models' vocabularies. */
static bool has_special(const char *text) {
    static const char *const more[] = {"<unk>", "<s>", "</s>"};
    for (size_t i = 0; i < sizeof SPECIALS / sizeof SPECIALS[0]; i++)
        if (strstr(text, SPECIALS[i])) return true;
    for (size_t i = 0; i < sizeof more / sizeof more[0]; i++)
        if (strstr(text, more[i])) return true;
    return false;
}

/* Tokens that stand for no bytes: control tokens (and <unk>). */
static int n_control(const heed_model *m, const int32_t *ids, int n) {
    int c = 0;
    for (int i = 0; i < n; i++) c += heed_token_bytes(m, ids[i], NULL, 0) == 0;
    return c;
}

/* Renders with snprintf semantics checked: the full length, then a copy
 * into a buffer that fits, then a truncated copy that is its prefix. */
static char *render_checked(const chat_style *st, const heed_model *m, const heed_chat_msg *msgs, int n, bool gen,
                            int *len_out) {
    int len = st ? chat_render(st, msgs, n, gen, NULL, 0) : heed_chat_format(m, msgs, n, gen, NULL, 0);
    *len_out = len;
    if (len < 0) return NULL;
    char *buf = malloc((size_t)len + 1), *cut = malloc((size_t)len / 2 + 1);
    if (!buf || !cut) abort();
    int again = st ? chat_render(st, msgs, n, gen, buf, (size_t)len + 1)
                   : heed_chat_format(m, msgs, n, gen, buf, (size_t)len + 1);
    if (again != len || strlen(buf) != (size_t)len) __builtin_trap();
    size_t k = (size_t)len / 2 + 1;
    int part = st ? chat_render(st, msgs, n, gen, cut, k) : heed_chat_format(m, msgs, n, gen, cut, k);
    if (part != len || strlen(cut) != k - 1 || memcmp(cut, buf, k - 1) != 0) __builtin_trap();
    free(cut);
    return buf;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int t = (data[0] & 7) % N_TMPL, bpe = (data[0] >> 3) & 1;
    bool gen = (data[0] >> 4) & 1;
    const heed_model *m = g_models[bpe][t];
    /* parts at NUL bytes: role, content, ..., [template] */
    char *text = fuzz_strndup(data + 1, size - 1);
    const char *part[2 * MAX_MSGS + 1];
    int n_part = 0;
    for (char *p = text; n_part < 2 * MAX_MSGS + 1;) {
        part[n_part++] = p;
        char *z = p + strlen(p);
        if (z == text + (size - 1)) break;
        p = z + 1;
    }
    heed_chat_msg msgs[MAX_MSGS];
    int n = n_part / 2;
    for (int i = 0; i < n; i++) msgs[i] = (heed_chat_msg){.role = part[2 * i], .content = part[2 * i + 1]};

    /* the model's template, through the public API */
    int len;
    char *buf = render_checked(NULL, m, msgs, n, gen, &len);
    int32_t *ids = malloc(((size_t)(len > 0 ? len : 0) + 2) * sizeof *ids);
    if (!ids) abort();
    int n_max = (len > 0 ? len : 0) + 2;
    int k = heed_chat_tokenize(m, msgs, n, gen, ids, n_max);
    if (len < 0) {
        if (len != HEED_ERR_INVALID_ARG || k != len) __builtin_trap();
    } else {
        /* at most a token per byte, plus SentencePiece's space prefix */
        if ((k < 0 && k != HEED_ERR_INVALID_ARG) || k > len + 1) __builtin_trap();
        for (int i = 0; i < k; i++) {
            char label[64];
            if (heed_token_label(m, ids[i], label, sizeof label) < 0) __builtin_trap();
        }
        /* content is text: special-token strings in it never become special
         * tokens, so the chat has as many byteless (control) tokens as the
         * same chat with each content "a"; and without such strings it is
         * its rendered text tokenized with special tokens parsed */
        if (k >= 0) {
            heed_chat_msg plain[MAX_MSGS];
            for (int i = 0; i < n; i++) plain[i] = (heed_chat_msg){.role = msgs[i].role, .content = "a"};
            int kp = heed_chat_tokenize(m, plain, n, gen, NULL, 0);
            int32_t *pids = malloc((size_t)(kp > 0 ? kp : 1) * sizeof *pids);
            if (!pids) abort();
            if (kp < 0 || heed_chat_tokenize(m, plain, n, gen, pids, kp) != kp ||
                n_control(m, ids, k) != n_control(m, pids, kp))
                __builtin_trap();
            free(pids);
        }
        bool special_in_content = false;
        for (int i = 0; i < n; i++) special_in_content |= has_special(msgs[i].content);
        if (!special_in_content) {
            int32_t *again = malloc((size_t)n_max * sizeof *again);
            if (!again) abort();
            int k2 = heed_tokenize_flags(m, buf, (size_t)len, HEED_TOK_PARSE_SPECIAL, again, n_max);
            if (k != k2 || (k > 0 && memcmp(ids, again, (size_t)k * sizeof *ids) != 0)) __builtin_trap();
            free(again);
        }
    }
    free(ids);
    free(buf);

    /* a template string of the input, recognised and rendered directly */
    if (n_part % 2) {
        chat_style st;
        chat_detect(part[n_part - 1], &st);
        if (strlen(st.default_system) >= sizeof st.default_system) __builtin_trap();
        buf = render_checked(&st, NULL, msgs, n, gen, &len);
        if (st.kind == CHAT_NONE ? len != HEED_ERR_INVALID_ARG : (len < 0 && len != HEED_ERR_INVALID_ARG))
            __builtin_trap();
        if ((chat_kind_name(st.kind) == NULL) != (st.kind == CHAT_NONE)) __builtin_trap();
        free(buf);
    }
    free(text);
    return 0;
}
