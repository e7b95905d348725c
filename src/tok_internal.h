/*
 * tok_internal - what the two halves of the tokenizer share: tok.c (the
 * vocabulary, SentencePiece encoding, special-token splitting, decoding,
 * labels) and tok_bpe.c (byte-level BPE encoding, pre-tokenizers,
 * tokenizer.json). Private: nothing outside src/tok*.c includes it.
 *
 * Ownership: a tok_vocab owns every array below, its tok_bpe included;
 * tok_free releases them all. Threads: everything here is read-only after
 * loading; encoding allocates its scratch per call.
 */
#ifndef HEED_TOK_INTERNAL_H
#define HEED_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "limit.h"
#include "tok.h"

#define TOK_MAX_VOCAB LIMIT_MAX_VOCAB /* tokens in a vocabulary (real ones: < 300k) */
#define TOK_MAX_PIECE (1 << 16) /* bytes in one piece */
#define TOK_MAX_BLOB 0x7fffffffu /* bytes of all pieces together (offsets are u32) */
#define TOK_MAX_TEXT (1 << 20)  /* bytes of text per tok_encode call (~250k tokens,
                                 * beyond any context): the scratch is up to ~200
                                 * bytes per input byte (a text of spaces) */
#define TOK_MAX_EOG 12

enum tok_kind { TOK_SPM, TOK_GPT2 };

typedef struct tok_bpe tok_bpe; /* tok_bpe.c: merges and pre-tokenizer */

struct tok_vocab {
    enum tok_kind kind;
    int n_vocab;
    char *blob;           /* every piece, NUL-terminated, back to back */
    uint32_t *off;        /* (n_vocab) start of piece i in blob */
    uint32_t *len;        /* (n_vocab) bytes of piece i (a piece may contain NUL) */
    float *score;         /* (n_vocab) SPM merge priority, higher merges first; 0 without scores */
    uint8_t *type;        /* (n_vocab) enum tok_type */
    int32_t *slot;        /* (slot_mask + 1) open addressing, linear probing: id, or -1 */
    uint32_t slot_mask;
    int32_t byte_id[256]; /* SPM byte fallback: the token for each raw byte, or -1 */
    int32_t bos, eos, eot, unk, pad; /* -1: none */
    int32_t eog[TOK_MAX_EOG];        /* ids that end a generation */
    int n_eog;
    bool add_bos, add_space_prefix;
    /* Tokens split out of the text before encoding (control, user-defined,
     * unknown; non-empty, valid UTF-8): grouped by first byte, longest
     * first within a group. special[special_at[b] .. special_at[b + 1])
     * start with byte b. */
    int32_t *special;             /* (n_special) */
    int n_special;
    int n_special_user;           /* of which user-defined (split even without parse_special) */
    int32_t special_at[257];
    char *chat_template;          /* NUL-terminated copy, or NULL */
    tok_bpe *bpe;                 /* the BPE encoder; NULL for SPM or when refused */
    char refusal[192];            /* why a gpt2 vocabulary cannot be encoded; "" if it can */
};

/* tok.c */
__attribute__((format(printf, 4, 5)))
__attribute__((format(printf, 4, 5))) int tok_fail(int rc, char *err, size_t err_size, const char *fmt, ...);
int32_t tok_find(const tok_vocab *v, const char *s, size_t n); /* the id of piece s[0..n), or -1 */
bool tok_utf8_valid(const char *s, size_t len);
int tok_gpt2_byte_of(uint32_t cp); /* GPT-2 byte alphabet: the byte of code point cp, or -1 */
void tok_emit(int32_t id, int32_t *ids, int n_max, int *n_tok);
/* Copies n pieces (checked against the limits above) and builds the piece
 * -> id table; `where` names the source in messages ("x.gguf: key 'k'"). */
int tok_set_pieces(tok_vocab *v, const gguf_str *pieces, uint64_t n, const char *where, char *err,
                   size_t err_size);
/* After pieces, types and special ids are set: byte fallback ids, the EOG
 * list and the special-token table. */
int tok_finish(tok_vocab *v, char *err, size_t err_size);

/* tok_bpe.c */
/* Reads tokenizer.ggml.{pre,merges} into v->bpe. A malformed merges array
 * is an error; an unknown pre-tokenizer or absent merges leave v->bpe NULL
 * and say why in v->refusal (the vocabulary still decodes). */
int tok_bpe_load(tok_vocab *v, const gguf_file *f, char *err, size_t err_size);
/* add_bos_token's default when the file does not say (Llama 3: true) */
bool tok_bpe_default_add_bos(const tok_bpe *b);
void tok_bpe_free(tok_bpe *b);
/* Encodes one run of valid UTF-8 text containing no special token,
 * appending to ids as tok_emit does. HEED_OK, HEED_ERR_TOKENIZER (a regex
 * that gave up on pathological text), HEED_ERR_NOMEM. */
int tok_bpe_encode(const tok_vocab *v, const char *text, size_t len, int32_t *ids, int n_max, int *n_tok);

#endif
