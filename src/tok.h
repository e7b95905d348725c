/*
 * tok - tokenizer: the vocabulary of a GGUF model, text -> ids, ids -> text.
 *
 * Vocabularies: `tokenizer.ggml.model = llama` (SentencePiece: pieces with
 * scores, "▁" for spaces, byte-fallback tokens <0x00>..<0xFF>) is encoded and
 * decoded. `gpt2` (byte-level BPE: Llama 3, Qwen, SmolLM) is decoded (pieces
 * map bytes to printable code points, "Ġ" = space); encoding it is refused
 * with HEED_ERR_TOKENIZER until the BPE encoder lands.
 *
 * What it does not do: parse special-token strings in text (never), chat
 * templates. Ownership: tok_free releases everything; pieces returned by
 * tok_piece point into the vocabulary. Threads: read-only after tok_load.
 */
#ifndef HEED_TOK_H
#define HEED_TOK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

/* token types, as stored in tokenizer.ggml.token_type */
enum tok_type {
    TOK_TYPE_UNDEFINED = 0,
    TOK_TYPE_NORMAL = 1,
    TOK_TYPE_UNKNOWN = 2,
    TOK_TYPE_CONTROL = 3,
    TOK_TYPE_USER_DEFINED = 4,
    TOK_TYPE_UNUSED = 5,
    TOK_TYPE_BYTE = 6,
};

typedef struct tok_vocab tok_vocab;

/* Reads tokenizer.ggml.{model,tokens,scores,token_type,bos_token_id,
 * eos_token_id,eot_token_id,unknown_token_id,add_bos_token,add_space_prefix}.
 * On failure returns NULL, sets *rc and writes a message naming the file
 * (f->path) and the key into err. */
tok_vocab *tok_load(const gguf_file *f, int *rc, char *err, size_t err_size);
void tok_free(tok_vocab *v);

int tok_n_vocab(const tok_vocab *v);
const char *tok_model_name(const tok_vocab *v); /* "llama", "gpt2" */
bool tok_can_encode(const tok_vocab *v);
int32_t tok_bos(const tok_vocab *v); /* -1 if none */
int32_t tok_eos(const tok_vocab *v);
int32_t tok_eot(const tok_vocab *v);
bool tok_add_bos(const tok_vocab *v);
/* SentencePiece with add_space_prefix: encoding prepends a space, so the
 * first text token of an encoded text decodes with one extra leading ' '
 * (tok_bytes returns it; a caller rebuilding the text drops it). */
bool tok_add_space_prefix(const tok_vocab *v);

/* Same contract as heed_tokenize (include/heed.h). */
int tok_encode(const tok_vocab *v, const char *text, size_t len, bool add_bos, int32_t *ids, int n_max);
/* Same contracts as heed_token_piece / _bytes / _label / _is_eog. */
const char *tok_piece(const tok_vocab *v, int32_t id);
int tok_bytes(const tok_vocab *v, int32_t id, char *buf, size_t size);
int tok_label(const tok_vocab *v, int32_t id, char *buf, size_t size);
bool tok_is_eog(const tok_vocab *v, int32_t id);

#endif
