/*
 * chat.c - chat template detection and rendering (see chat.h), and the public
 * chat API on a model.
 */
#include "chat.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

/* The 3.1+ templates write this preamble; the date is the templates' default. */
#define LLAMA31_PREAMBLE "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"

/* A ChatML template may carry a literal default system message, as in
 * '<|im_start|>system\nYou are Qwen, ...<|im_end|>\n': the text between the
 * escaped newline and <|im_end|>, if it is a plain literal (no quote that
 * would end the Jinja string, no expression). */
static void find_default_system(const char *tmpl, char *out, size_t size) {
    static const char open[] = "<|im_start|>system\\n";
    out[0] = '\0';
    for (const char *p = strstr(tmpl, open); p; p = strstr(p + 1, open)) {
        const char *start = p + strlen(open);
        const char *end = strstr(start, "<|im_end|>");
        if (!end) return;
        size_t n = (size_t)(end - start);
        if (n == 0 || n >= size || memchr(start, '\'', n) || memchr(start, '"', n) || memchr(start, '{', n))
            continue;
        memcpy(out, start, n);
        out[n] = '\0';
        return;
    }
}

void chat_detect(const char *tmpl, chat_style *out) {
    memset(out, 0, sizeof *out);
    if (!tmpl) return;
    if (strstr(tmpl, "<|start_header_id|>") && strstr(tmpl, "<|eot_id|>")) {
        out->kind = CHAT_LLAMA3;
        out->llama31_preamble = strstr(tmpl, "Cutting Knowledge Date") != NULL;
    } else if (strstr(tmpl, "<start_of_turn>") && strstr(tmpl, "<end_of_turn>")) {
        out->kind = CHAT_GEMMA;
    } else if (strstr(tmpl, "<|user|>") && strstr(tmpl, "<|end|>") && strstr(tmpl, "<|assistant|>")) {
        out->kind = CHAT_PHI3;
    } else if (strstr(tmpl, "<|im_start|>")) {
        out->kind = CHAT_CHATML;
        find_default_system(tmpl, out->default_system, sizeof out->default_system);
    } else if (strstr(tmpl, "[INST]")) {
        out->kind = strstr(tmpl, "<<SYS>>") ? CHAT_LLAMA2 : CHAT_MISTRAL;
    }
}

const char *chat_kind_name(enum chat_kind kind) {
    switch (kind) {
    case CHAT_LLAMA3: return "llama3";
    case CHAT_CHATML: return "chatml";
    case CHAT_LLAMA2: return "llama2";
    case CHAT_MISTRAL: return "mistral";
    case CHAT_GEMMA: return "gemma";
    case CHAT_PHI3: return "phi3";
    default: return NULL;
    }
}

/* An output buffer with snprintf semantics: counts everything, writes what
 * fits; plain (NULL, or size bytes beside buf) marks each byte written that
 * is message content. */
typedef struct sbuf {
    char *buf;
    unsigned char *plain;
    size_t size, len;
} sbuf;

static void put_as(sbuf *b, const char *s, size_t n, unsigned char mark) {
    if (b->len < b->size) {
        size_t room = b->size - b->len - 1, k = n < room ? n : room;
        memcpy(b->buf + b->len, s, k);
        b->buf[b->len + k] = '\0';
        if (b->plain) {
            memset(b->plain + b->len, mark, k);
            b->plain[b->len + k] = 0;
        }
    }
    b->len += n;
}

/* The template's own text: its special-token strings are special tokens. */
static void puts_(sbuf *b, const char *s) { put_as(b, s, strlen(s), 0); }

/* A message's content: text, never special tokens. */
static void content(sbuf *b, const char *s, size_t n) { put_as(b, s, n, 1); }
static void content_s(sbuf *b, const char *s) { content(b, s, strlen(s)); }

/* Llama 3 applies Jinja's trim to every content. */
static void put_trimmed(sbuf *b, const char *s) {
    const char *e = s + strlen(s);
    while (s < e && (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')) s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\n' || e[-1] == '\t' || e[-1] == '\r')) e--;
    content(b, s, (size_t)(e - s));
}

enum role { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT, ROLE_BAD };

static enum role role_of(const heed_chat_msg *m) {
    if (!m->role || !m->content) return ROLE_BAD;
    if (!strcmp(m->role, "system")) return ROLE_SYSTEM;
    if (!strcmp(m->role, "user")) return ROLE_USER;
    if (!strcmp(m->role, "assistant")) return ROLE_ASSISTANT;
    return ROLE_BAD;
}

static void render_llama3(const chat_style *st, const heed_chat_msg *msgs, int n, sbuf *b) {
    puts_(b, "<|begin_of_text|>");
    bool has_system = n > 0 && role_of(&msgs[0]) == ROLE_SYSTEM;
    if (st->llama31_preamble && !has_system)
        puts_(b, "<|start_header_id|>system<|end_header_id|>\n\n" LLAMA31_PREAMBLE "<|eot_id|>");
    for (int i = 0; i < n; i++) {
        puts_(b, "<|start_header_id|>");
        puts_(b, msgs[i].role);
        puts_(b, "<|end_header_id|>\n\n");
        if (i == 0 && has_system && st->llama31_preamble) puts_(b, LLAMA31_PREAMBLE);
        put_trimmed(b, msgs[i].content);
        puts_(b, "<|eot_id|>");
    }
}

static void render_chatml(const chat_style *st, const heed_chat_msg *msgs, int n, sbuf *b) {
    if (st->default_system[0] && (n == 0 || role_of(&msgs[0]) != ROLE_SYSTEM)) {
        puts_(b, "<|im_start|>system\n");
        puts_(b, st->default_system);
        puts_(b, "<|im_end|>\n");
    }
    for (int i = 0; i < n; i++) {
        puts_(b, "<|im_start|>");
        puts_(b, msgs[i].role);
        puts_(b, "\n");
        content_s(b, msgs[i].content);
        puts_(b, "<|im_end|>\n");
    }
}

/* Llama 2 puts the system prompt inside the first [INST] in <<SYS>> tags;
 * Mistral prepends it to the first user message. */
static void render_inst(const chat_style *st, const heed_chat_msg *msgs, int n, sbuf *b) {
    const char *system = NULL;
    int i = 0;
    if (n > 0 && role_of(&msgs[0]) == ROLE_SYSTEM) system = msgs[i++].content;
    bool first = true;
    for (; i < n; i++) {
        if (role_of(&msgs[i]) == ROLE_USER) {
            puts_(b, st->kind == CHAT_LLAMA2 || first ? "<s>[INST] " : "[INST] ");
            if (first && system) {
                if (st->kind == CHAT_LLAMA2) {
                    puts_(b, "<<SYS>>\n");
                    content_s(b, system);
                    puts_(b, "\n<</SYS>>\n\n");
                } else {
                    content_s(b, system);
                    puts_(b, "\n\n");
                }
            }
            content_s(b, msgs[i].content);
            puts_(b, " [/INST]");
            first = false;
        } else {
            puts_(b, st->kind == CHAT_LLAMA2 ? " " : "");
            content_s(b, msgs[i].content);
            puts_(b, st->kind == CHAT_LLAMA2 ? " </s>" : "</s>");
        }
    }
}

/* Gemma (2 and 3): turns "<start_of_turn>ROLE\n" + trimmed content +
 * "<end_of_turn>\n" with ROLE user or model (the assistant). Gemma has no
 * system role: its template prepends a system message, untrimmed, and a
 * blank line to the first turn's content. */
static void render_gemma(const heed_chat_msg *msgs, int n, sbuf *b) {
    puts_(b, "<bos>");
    const char *system = NULL;
    int i = 0;
    if (n > 0 && role_of(&msgs[0]) == ROLE_SYSTEM) system = msgs[i++].content;
    for (bool first = true; i < n; i++, first = false) {
        puts_(b, "<start_of_turn>");
        puts_(b, role_of(&msgs[i]) == ROLE_ASSISTANT ? "model" : "user");
        puts_(b, "\n");
        if (first && system) {
            content_s(b, system);
            puts_(b, "\n\n");
        }
        put_trimmed(b, msgs[i].content);
        puts_(b, "<end_of_turn>\n");
    }
}

/* Phi-3: "<|ROLE|>\n" + content + "<|end|>\n" per message, as the reference
 * engine writes it. (tiny-phi3's own Jinja drops system messages and opens
 * the assistant's turn after every user turn; with a generation prompt and
 * no system message the two texts are the same.) */
static void render_phi3(const heed_chat_msg *msgs, int n, sbuf *b) {
    puts_(b, "<s>");
    for (int i = 0; i < n; i++) {
        puts_(b, "<|");
        puts_(b, msgs[i].role);
        puts_(b, "|>\n");
        content_s(b, msgs[i].content);
        puts_(b, "<|end|>\n");
    }
}

int chat_render_marked(const chat_style *st, const heed_chat_msg *msgs, int n, bool add_generation_prompt, char *buf,
                       unsigned char *plain, size_t size) {
    if (!st || st->kind == CHAT_NONE || n < 0 || (!msgs && n) || (!buf && size)) return HEED_ERR_INVALID_ARG;
    for (int i = 0; i < n; i++) {
        enum role r = role_of(&msgs[i]);
        if (r == ROLE_BAD) return HEED_ERR_INVALID_ARG;
        /* [INST] formats and Gemma have no place for a system message after the first */
        if (r == ROLE_SYSTEM && i > 0 &&
            (st->kind == CHAT_LLAMA2 || st->kind == CHAT_MISTRAL || st->kind == CHAT_GEMMA))
            return HEED_ERR_INVALID_ARG;
    }
    sbuf b = {buf, size ? plain : NULL, size, 0};
    if (size) buf[0] = '\0';
    if (b.plain) b.plain[0] = 0;
    switch (st->kind) {
    case CHAT_LLAMA3:
        render_llama3(st, msgs, n, &b);
        if (add_generation_prompt) puts_(&b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    case CHAT_CHATML:
        render_chatml(st, msgs, n, &b);
        if (add_generation_prompt) puts_(&b, "<|im_start|>assistant\n");
        break;
    case CHAT_GEMMA:
        render_gemma(msgs, n, &b);
        if (add_generation_prompt) puts_(&b, "<start_of_turn>model\n");
        break;
    case CHAT_PHI3:
        render_phi3(msgs, n, &b);
        if (add_generation_prompt) puts_(&b, "<|assistant|>\n");
        break;
    default:
        render_inst(st, msgs, n, &b); /* the [INST] turn already opens the answer */
        break;
    }
    return b.len > (size_t)0x7fffffff ? HEED_ERR_INVALID_ARG : (int)b.len;
}

int chat_render(const chat_style *st, const heed_chat_msg *msgs, int n, bool add_generation_prompt, char *buf,
                size_t size) {
    return chat_render_marked(st, msgs, n, add_generation_prompt, buf, NULL, size);
}

int chat_tokenize(const chat_style *st, const tok_vocab *v, const heed_chat_msg *msgs, int n,
                  bool add_generation_prompt, int32_t *ids, int n_max) {
    if (!v || n_max < 0 || (!ids && n_max)) return HEED_ERR_INVALID_ARG;
    int len = chat_render(st, msgs, n, add_generation_prompt, NULL, 0);
    if (len < 0) return len;
    char *text = malloc((size_t)len + 1);
    unsigned char *plain = malloc((size_t)len + 1);
    int rc = HEED_ERR_NOMEM;
    if (text && plain) {
        chat_render_marked(st, msgs, n, add_generation_prompt, text, plain, (size_t)len + 1);
        rc = tok_encode_guarded(v, text, (size_t)len, plain, ids, n_max);
    }
    free(text);
    free(plain);
    return rc;
}

/* ------------------------------------------------------------- public API */

static void model_style(const heed_model *m, chat_style *st) { chat_detect(tok_chat_template(m->vocab), st); }

const char *heed_chat_template(const heed_model *m) {
    if (!m) return NULL;
    chat_style st;
    model_style(m, &st);
    return chat_kind_name(st.kind);
}

int heed_chat_format(const heed_model *m, const heed_chat_msg *msgs, int n, bool add_generation_prompt, char *buf,
                     size_t size) {
    if (!m) return HEED_ERR_INVALID_ARG;
    chat_style st;
    model_style(m, &st);
    if (st.kind == CHAT_NONE) return HEED_ERR_UNSUPPORTED;
    return chat_render(&st, msgs, n, add_generation_prompt, buf, size);
}

int heed_chat_tokenize(const heed_model *m, const heed_chat_msg *msgs, int n, bool add_generation_prompt,
                       int32_t *ids, int n_max) {
    if (!m) return HEED_ERR_INVALID_ARG;
    chat_style st;
    model_style(m, &st);
    if (st.kind == CHAT_NONE) return HEED_ERR_UNSUPPORTED;
    return chat_tokenize(&st, m->vocab, msgs, n, add_generation_prompt, ids, n_max);
}
