/*
 * tok - tokenizer: the vocabulary of a model, text -> ids, ids -> text.
 *
 * Vocabularies: `tokenizer.ggml.model = llama` (SentencePiece: pieces with
 * scores, "▁" for spaces, byte-fallback tokens <0x00>..<0xFF>) and `gpt2`
 * (byte-level BPE: Llama 3, Qwen2/3, SmolLM, GPT-2, ...: pieces map bytes to
 * printable code points, "Ġ" = space, ranked merges, a pre-tokenizer named
 * by tokenizer.ggml.pre) are encoded and decoded, id for id as the
 * reference engines (llama.cpp, Hugging Face tokenizers). A gpt2 vocabulary
 * whose pre-tokenizer heed does not know, or without merges, still loads and
 * decodes; tok_can_encode is false and tok_encode_refusal says why.
 * Hugging Face folders (tokenizer.json + tokenizer_config.json) load with
 * tok_load_hf into the same structure.
 *
 * Special tokens in text: control and unknown tokens ("<|begin_of_text|>",
 * "<s>") are recognised only with tok_encode_ex(parse_special = true), and
 * in a rendered chat only in the template's own text (tok_encode_guarded);
 * user-defined tokens (added tokens that are not special, e.g. GPT-NeoX's
 * runs of spaces, Qwen's "<think>") are always split out of the text, as
 * both reference engines do. Matching is leftmost-longest.
 *
 * What it does not do: Unicode normalisation (a tokenizer.json NFC
 * normaliser is accepted and not applied, as llama.cpp does), render chat
 * templates (tok_chat_template only hands the template over).
 *
 * Ownership: tok_free releases everything; pieces returned by tok_piece and
 * the chat template point into the vocabulary. Threads: read-only after
 * loading; any number of threads may encode and decode at once.
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
 * eos_token_id,eot_token_id,unknown_token_id,padding_token_id,add_bos_token,
 * add_space_prefix,pre,merges} and tokenizer.chat_template. On failure
 * returns NULL, sets *rc and writes a message naming the file (f->path)
 * and the key into err. A merge that is not two pieces joined by a space
 * is an error; a merge whose parts or result are not in the vocabulary is
 * skipped (the reference engine loads such files; HF's loader would refuse
 * them, and no published vocabulary heed has seen contains one). */
tok_vocab *tok_load(const gguf_file *f, int *rc, char *err, size_t err_size);
void tok_free(tok_vocab *v);

/*
 * Reads DIR/tokenizer.json (model.type "BPE" with byte-level pieces:
 * model.vocab, model.merges as "a b" or ["a", "b"], added_tokens, a
 * pre_tokenizer heed recognises, model.ignore_merges) and, if present,
 * DIR/tokenizer_config.json (bos_token, eos_token, unk_token as a string or
 * {"content": ...}; add_bos_token; chat_template). Ids are those of the
 * file: 0..N-1, each exactly once. add_bos: tokenizer_config's
 * add_bos_token if present; else true when tokenizer.json's post_processor
 * (TemplateProcessing) starts with the BOS token; else the reference
 * engine's default for the pre-tokenizer (true for the Llama 3 family, as
 * a converted GGUF would get), provided a BOS token is set.
 * On failure returns NULL, sets *rc (HEED_ERR_IO, HEED_ERR_FORMAT for
 * malformed files, HEED_ERR_UNSUPPORTED for a model or pre-tokenizer heed
 * lacks, HEED_ERR_NOMEM) and writes a message naming the file and the
 * problem into err.
 */
tok_vocab *tok_load_hf(const char *dir, int *rc, char *err, size_t err_size);

int tok_n_vocab(const tok_vocab *v);
const char *tok_model_name(const tok_vocab *v); /* "llama", "gpt2" */
bool tok_can_encode(const tok_vocab *v);
/* Why tok_encode refuses this vocabulary ("x.gguf: pre-tokenizer 'foo'
 * (tokenizer.ggml.pre) is not supported"), or NULL when it encodes. */
const char *tok_encode_refusal(const tok_vocab *v);
int32_t tok_bos(const tok_vocab *v); /* -1 if none */
int32_t tok_eos(const tok_vocab *v);
int32_t tok_eot(const tok_vocab *v);
bool tok_add_bos(const tok_vocab *v);
/* SentencePiece with add_space_prefix: encoding prepends a space, so the
 * first text token of an encoded text decodes with one extra leading ' '
 * (tok_bytes returns it; a caller rebuilding the text drops it). */
bool tok_add_space_prefix(const tok_vocab *v);

/* The chat template (GGUF tokenizer.chat_template, tokenizer_config.json
 * chat_template), or NULL if the model has none. */
const char *tok_chat_template(const tok_vocab *v);

/* Same contract as heed_tokenize (include/heed.h): control tokens in the
 * text are not parsed. */
int tok_encode(const tok_vocab *v, const char *text, size_t len, bool add_bos, int32_t *ids, int n_max);
/* tok_encode, and with parse_special the pieces of control and unknown
 * tokens in the text become those tokens. Returns the token count (may
 * exceed n_max; ids receives the first n_max), HEED_ERR_INVALID_ARG (NULL
 * arguments, invalid UTF-8, more than 1 MiB of text), HEED_ERR_TOKENIZER
 * (a vocabulary heed cannot encode, add_bos without BOS, SentencePiece: a
 * character with no piece, byte token or <unk>; BPE: a pre-tokenizer
 * regex that gave up), HEED_ERR_NOMEM. Byte-level BPE drops a byte whose
 * character is no token (SmolLM2 lacks a few controls), as the reference
 * engines do. */
int tok_encode_ex(const tok_vocab *v, const char *text, size_t len, bool add_bos, bool parse_special,
                  int32_t *ids, int n_max);
/* tok_encode_ex with parse_special, for a rendered chat: plain (len bytes,
 * aligned with text) marks the bytes that are message content. A control or
 * unknown token is recognised only where none of its bytes is marked: what
 * a message says is text, whatever special-token string it spells (a user
 * cannot close its turn and open a system one). User-defined tokens split
 * out everywhere, as in any text. The text between two recognised special
 * tokens is one run whatever its marks, encoded as tok_encode_ex encodes
 * it, so a chat whose content holds no special-token string gets the ids
 * tok_encode_ex(parse_special = true) gives. No BOS is added (a template
 * writes its own). Same returns as tok_encode_ex. */
int tok_encode_guarded(const tok_vocab *v, const char *text, size_t len, const unsigned char *plain, int32_t *ids,
                       int n_max);
/* Same contracts as heed_token_piece / _bytes / _label / _is_eog. */
const char *tok_piece(const tok_vocab *v, int32_t id);
int tok_bytes(const tok_vocab *v, int32_t id, char *buf, size_t size);
int tok_label(const tok_vocab *v, int32_t id, char *buf, size_t size);
bool tok_is_eog(const tok_vocab *v, int32_t id);

#endif
