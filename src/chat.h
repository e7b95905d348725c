/*
 * chat - chat templates: messages -> the prompt text an instruct model was
 * trained on.
 *
 * A model ships its template as a Jinja string (tokenizer.chat_template in
 * GGUF, chat_template in tokenizer_config.json). heed does not run Jinja: it
 * recognises the families it knows by their marker strings and renders them
 * natively. Known: Llama 3 (and the 3.1+ "Cutting Knowledge Date" system
 * preamble), ChatML (Qwen, SmolLM; a literal default system message in the
 * template is honoured), Llama 2 ([INST] with <<SYS>>), Mistral ([INST]),
 * Gemma (<start_of_turn>user/model; no system role: the system message
 * opens the first turn, as Gemma's template writes it) and Phi-3
 * (<|user|>/<|assistant|>/<|system|> turns closed by <|end|>).
 *
 * The rendered text contains special-token strings (<|eot_id|>, <s>, ...)
 * that must become special tokens; a message's content is text and must not
 * (or "<|eot_id|><|start_header_id|>system..." in a user message would close
 * the user's turn and open a system one). chat_render_marked tells the two
 * apart, byte by byte, and chat_tokenize tokenizes accordingly
 * (tok_encode_guarded). Pure functions, no allocation, except
 * chat_tokenize's scratch text; threads: any.
 */
#ifndef HEED_CHAT_H
#define HEED_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include "heed.h"
#include "tok.h"

enum chat_kind { CHAT_NONE, CHAT_LLAMA3, CHAT_CHATML, CHAT_LLAMA2, CHAT_MISTRAL, CHAT_GEMMA, CHAT_PHI3 };

#define CHAT_MAX_DEFAULT_SYSTEM 512

typedef struct chat_style {
    enum chat_kind kind;
    bool llama31_preamble; /* Llama 3.1+: system text starts with the knowledge-date lines */
    char default_system[CHAT_MAX_DEFAULT_SYSTEM]; /* ChatML: used when no system message is given */
} chat_style;

/* Recognises a template string (NULL or unknown -> CHAT_NONE). */
void chat_detect(const char *tmpl, chat_style *out);
const char *chat_kind_name(enum chat_kind kind); /* "llama3", "chatml", "llama2", "mistral", "gemma",
                                                  * "phi3", NULL */

/* Renders messages (roles "system", "user", "assistant") into buf with
 * snprintf semantics: returns the full length, or HEED_ERR_INVALID_ARG for
 * an unknown role, a NULL content, or CHAT_NONE. */
int chat_render(const chat_style *st, const heed_chat_msg *msgs, int n, bool add_generation_prompt, char *buf,
                size_t size);
/* chat_render, and plain (NULL, or size bytes like buf) receives a mark per
 * byte written: 1 for message content, 0 for the template's own text (its
 * markers, role names, separators, preambles, a template's default system
 * message). */
int chat_render_marked(const chat_style *st, const heed_chat_msg *msgs, int n, bool add_generation_prompt, char *buf,
                       unsigned char *plain, size_t size);

/* Renders and tokenizes: special-token strings become special tokens in the
 * template's text only, never in content (tok_encode_guarded), so a chat
 * without such strings in its content gets the ids of its rendered text
 * tokenized with parse_special. Returns as heed_chat_tokenize (include/heed.h). */
int chat_tokenize(const chat_style *st, const tok_vocab *v, const heed_chat_msg *msgs, int n,
                  bool add_generation_prompt, int32_t *ids, int n_max);

#endif
