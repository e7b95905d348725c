/*
 * tok.c - the vocabulary of a model: loading from GGUF, SentencePiece
 * encoding, splitting special tokens out of text, decoding of SentencePiece
 * and byte-level BPE tokens into bytes and display labels, and the
 * streaming UTF-8 assembler of the public API. Byte-level BPE encoding and
 * tokenizer.json live in tok_bpe.c.
 *
 * SentencePiece encoding reproduces the reference engine (llama.cpp's SPM
 * tokenizer) id for id, because heed must feed a model the same ids the
 * reference feeds it, or every attention map after the first difference is
 * a different experiment: escape spaces as "▁", start from single UTF-8
 * characters, merge the adjacent pair that forms the highest-scoring piece
 * (ties: leftmost), and fall back to <0xNN> byte tokens for what remains.
 *
 * Pieces are copied out of the GGUF mapping at load, so a tok_vocab does
 * not depend on the gguf_file afterwards, and tok_piece can hand out
 * NUL-terminated strings.
 */
#include "err.h"
#include "tok.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "heed.h"
#include "tok_internal.h"
#include "utf8.h"

/* "▁" (U+2581), SentencePiece's visible space */
static const char SPM_SPACE[] = "\xe2\x96\x81";

int tok_fail(int rc, char *err, size_t err_size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    err_vat(err, err_size, rc, NULL, fmt, ap);
    va_end(ap);
    return rc;
}

/* ------------------------------------------------------------------ UTF-8 */

enum utf8_event {
    U8_HELD,     /* b extends a character still incomplete */
    U8_CHAR,     /* pend[0..*n) is now one complete character */
    U8_BAD,      /* pend[0..*n) (b included) can never be a character */
    U8_BAD_AGAIN /* pend[0..*n) (b NOT included) can never be completed: offer b again */
};

/* One step of an incremental UTF-8 assembler whose partial character is
 * pend[0..*n). After U8_CHAR or U8_BAD* the caller consumes pend and sets
 * *n = 0. A broken sequence is reported as its maximal valid prefix (one
 * replacement per such prefix, as Unicode recommends). */
static enum utf8_event utf8_offer(unsigned char *pend, int *n, unsigned char b) {
    if (*n == 0) {
        int need = utf8_seq_len(b);
        pend[0] = b;
        *n = 1;
        return need == 0 ? U8_BAD : need == 1 ? U8_CHAR : U8_HELD;
    }
    if (!utf8_cont_ok(pend[0], *n, b)) return U8_BAD_AGAIN;
    pend[(*n)++] = b;
    return *n == utf8_seq_len(pend[0]) ? U8_CHAR : U8_HELD;
}

bool tok_utf8_valid(const char *s, size_t len) {
    unsigned char pend[4];
    int n = 0;
    for (size_t i = 0; i < len; i++) {
        enum utf8_event e = utf8_offer(pend, &n, (unsigned char)s[i]);
        if (e == U8_BAD || e == U8_BAD_AGAIN) return false;
        if (e == U8_CHAR) n = 0;
    }
    return n == 0;
}

static const char REPLACEMENT[3] = {'\xef', '\xbf', '\xbd'}; /* U+FFFD */

size_t heed_utf8_stream_push(heed_utf8_stream *s, const char *in, size_t n_in, char *out) {
    size_t n_out = 0;
    if (s->n_pending < 0 || s->n_pending > 3) s->n_pending = 0; /* never garbage-index */
    for (size_t i = 0; i < n_in; i++) {
        unsigned char b = (unsigned char)in[i];
        enum utf8_event e;
        while ((e = utf8_offer(s->pending, &s->n_pending, b)) == U8_BAD_AGAIN) {
            memcpy(out + n_out, REPLACEMENT, 3);
            n_out += 3;
            s->n_pending = 0;
        }
        if (e == U8_CHAR) {
            memcpy(out + n_out, s->pending, (size_t)s->n_pending);
            n_out += (size_t)s->n_pending;
            s->n_pending = 0;
        } else if (e == U8_BAD) {
            memcpy(out + n_out, REPLACEMENT, 3);
            n_out += 3;
            s->n_pending = 0;
        }
    }
    return n_out;
}

size_t heed_utf8_stream_flush(heed_utf8_stream *s, char *out) {
    if (s->n_pending <= 0) {
        s->n_pending = 0;
        return 0;
    }
    s->n_pending = 0;
    memcpy(out, REPLACEMENT, 3);
    return 3;
}

/* ---------------------------------------------------------- output buffers */

/* A bounded writer with snprintf semantics: n counts every byte offered,
 * buf receives what fits before its NUL. Atomic puts (a multi-byte
 * character of a label) are written whole or not at all, and nothing is
 * written after a put that did not fit, so a label is never cut inside a
 * character and never has a gap. */
typedef struct out_buf {
    char *buf;
    size_t size;
    size_t w; /* bytes in buf, < size */
    size_t n; /* bytes offered */
    bool full;
} out_buf;

static void out_put(out_buf *o, const void *p, size_t len, bool atomic) {
    size_t room = o->size > 0 && !o->full ? o->size - 1 - o->w : 0;
    size_t k = len <= room ? len : atomic ? 0 : room;
    if (k) memcpy(o->buf + o->w, p, k);
    o->w += k;
    if (k < len) o->full = true;
    o->n += len;
}

static int out_finish(out_buf *o) {
    if (o->size > 0) o->buf[o->w] = '\0';
    return o->n > INT_MAX ? INT_MAX : (int)o->n;
}

/* Consumers of a token's raw bytes: the plain copy (tok_bytes) and the
 * label builder. `put` comes first so a consumer struct can be passed as
 * a byte_sink. */
typedef struct byte_sink byte_sink;
struct byte_sink {
    void (*put)(byte_sink *k, const unsigned char *p, size_t n);
};

typedef struct raw_sink {
    byte_sink base;
    out_buf out;
} raw_sink;

static void raw_put(byte_sink *k, const unsigned char *p, size_t n) {
    out_put(&((raw_sink *)k)->out, p, n, false);
}

/* ----------------------------------------------------------- piece lookup */

static uint32_t hash_bytes(const char *s, size_t n) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static const char *piece_of(const tok_vocab *v, int32_t id) { return v->blob + v->off[id]; }

/* The id of the piece s[0..n), or -1. */
int32_t tok_find(const tok_vocab *v, const char *s, size_t n) {
    for (uint32_t i = hash_bytes(s, n) & v->slot_mask;; i = (i + 1) & v->slot_mask) {
        int32_t id = v->slot[i];
        if (id < 0) return -1;
        if (v->len[id] == n && memcmp(piece_of(v, id), s, n) == 0) return id;
    }
}

/* A duplicated piece maps to its LAST id, as in the reference engine (its
 * map assignment overwrites), so merges and scores agree with it. */
static void vocab_insert(tok_vocab *v, int32_t id) {
    const char *s = piece_of(v, id);
    size_t n = v->len[id];
    for (uint32_t i = hash_bytes(s, n) & v->slot_mask;; i = (i + 1) & v->slot_mask) {
        int32_t old = v->slot[i];
        if (old < 0 || (v->len[old] == n && memcmp(piece_of(v, old), s, n) == 0)) {
            v->slot[i] = id;
            return;
        }
    }
}

/* ------------------------------------------------------------------ load */

static bool is_byte_piece(const char *s, size_t n, int *byte) {
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return false;
    int val = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0'
              : c >= 'A' && c <= 'F' ? c - 'A' + 10
              : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0) return false;
        val = val * 16 + d;
    }
    *byte = val;
    return true;
}

static int load_kind(tok_vocab *v, const gguf_file *f, char *err, size_t es) {
    const char *key = "tokenizer.ggml.model";
    gguf_str m;
    if (!gguf_find(f, key)) return tok_fail(HEED_ERR_FORMAT, err, es, "%s: key '%s' is missing", f->path, key);
    if (!gguf_get_str(f, key, &m))
        return tok_fail(HEED_ERR_FORMAT, err, es, "%s: key '%s' is not a string", f->path, key);
    if (m.len == 5 && memcmp(m.ptr, "llama", 5) == 0) v->kind = TOK_SPM;
    else if (m.len == 4 && memcmp(m.ptr, "gpt2", 4) == 0) v->kind = TOK_GPT2;
    else
        return tok_fail(HEED_ERR_UNSUPPORTED, err, es,
                        "%s: key '%s' is '%.*s': heed reads 'llama' (SentencePiece) and 'gpt2' (byte-level BPE)",
                        f->path, key, (int)(m.len > 40 ? 40 : m.len), m.ptr);
    return HEED_OK;
}

int tok_set_pieces(tok_vocab *v, const gguf_str *pieces, uint64_t n_pieces, const char *where, char *err,
                   size_t es) {
    if (n_pieces == 0 || n_pieces > TOK_MAX_VOCAB)
        return tok_fail(HEED_ERR_FORMAT, err, es, "%s has %llu entries (allowed: 1..%d)", where,
                        (unsigned long long)n_pieces, TOK_MAX_VOCAB);
    int n = (int)n_pieces;
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (pieces[i].len > TOK_MAX_PIECE)
            return tok_fail(HEED_ERR_FORMAT, err, es, "%s: token %d is %llu bytes long (limit %d)", where, i,
                            (unsigned long long)pieces[i].len, TOK_MAX_PIECE);
        total += pieces[i].len + 1;
    }
    if (total > TOK_MAX_BLOB)
        return tok_fail(HEED_ERR_FORMAT, err, es, "%s: %llu bytes of tokens is too much", where,
                        (unsigned long long)total);
    uint32_t n_slot = 1;
    while (n_slot < 2u * (uint32_t)n) n_slot <<= 1; /* load factor <= 1/2 */
    v->n_vocab = n;
    v->blob = malloc((size_t)total);
    v->off = malloc((size_t)n * sizeof *v->off);
    v->len = malloc((size_t)n * sizeof *v->len);
    v->slot = malloc((size_t)n_slot * sizeof *v->slot);
    if (!v->blob || !v->off || !v->len || !v->slot) return tok_fail(HEED_ERR_NOMEM, err, es, "out of memory");
    v->slot_mask = n_slot - 1;
    memset(v->slot, 0xff, (size_t)n_slot * sizeof *v->slot);
    uint32_t pos = 0;
    for (int i = 0; i < n; i++) {
        uint32_t len = (uint32_t)pieces[i].len;
        if (len) memcpy(v->blob + pos, pieces[i].ptr, len);
        v->blob[pos + len] = '\0';
        v->off[i] = pos;
        v->len[i] = len;
        pos += len + 1;
        vocab_insert(v, i);
    }
    return HEED_OK;
}

static int load_pieces(tok_vocab *v, const gguf_file *f, char *err, size_t es) {
    const char *key = "tokenizer.ggml.tokens";
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) return tok_fail(HEED_ERR_FORMAT, err, es, "%s: key '%s' is missing", f->path, key);
    if (kv->type != GGUF_ARRAY || kv->arr_type != GGUF_STRING || !kv->strs)
        return tok_fail(HEED_ERR_FORMAT, err, es, "%s: key '%s' is not an array of strings", f->path, key);
    char where[512];
    snprintf(where, sizeof where, "%s: key '%s'", f->path, key);
    return tok_set_pieces(v, kv->strs, kv->arr_n, where, err, es);
}

/* An optional numeric array with one entry per token: NULL if absent. */
static int find_per_token(const gguf_file *f, const char *key, int n, const gguf_kv **out, char *err,
                          size_t es) {
    const gguf_kv *kv = gguf_find(f, key);
    *out = NULL;
    if (!kv) return HEED_OK;
    if (kv->type != GGUF_ARRAY || kv->arr_type == GGUF_STRING || kv->arr_type == GGUF_ARRAY ||
        kv->arr_type == GGUF_BOOL)
        return tok_fail(HEED_ERR_FORMAT, err, es, "%s: key '%s' is not a numeric array", f->path, key);
    if (kv->arr_n != (uint64_t)n)
        return tok_fail(HEED_ERR_FORMAT, err, es, "%s: key '%s' has %llu entries, expected %d", f->path, key,
                        (unsigned long long)kv->arr_n, n);
    *out = kv;
    return HEED_OK;
}

static int load_scores_types(tok_vocab *v, const gguf_file *f, char *err, size_t es) {
    int n = v->n_vocab;
    const gguf_kv *scores, *types;
    int rc = find_per_token(f, "tokenizer.ggml.scores", n, &scores, err, es);
    if (!rc) rc = find_per_token(f, "tokenizer.ggml.token_type", n, &types, err, es);
    if (rc) return rc;
    v->score = calloc((size_t)n, sizeof *v->score);
    v->type = malloc((size_t)n);
    if (!v->score || !v->type) return tok_fail(HEED_ERR_NOMEM, err, es, "out of memory");
    for (int i = 0; i < n; i++) {
        double d = 0;
        int64_t t = TOK_TYPE_NORMAL;
        if (scores && !gguf_arr_f64(scores, (uint64_t)i, &d))
            return tok_fail(HEED_ERR_FORMAT, err, es, "%s: key 'tokenizer.ggml.scores': entry %d unreadable",
                            f->path, i);
        if (types && !gguf_arr_i64(types, (uint64_t)i, &t))
            return tok_fail(HEED_ERR_FORMAT, err, es,
                            "%s: key 'tokenizer.ggml.token_type': entry %d unreadable", f->path, i);
        v->score[i] = d == d ? (float)d : -INFINITY; /* a NaN score would break the merge order */
        /* Unknown type values are read as normal text rather than refused. */
        v->type[i] = t >= TOK_TYPE_UNDEFINED && t <= TOK_TYPE_BYTE ? (uint8_t)t : TOK_TYPE_NORMAL;
        /* Without a type array the reference engine would decode "<0x0A>"
         * literally; heed recognises byte pieces by their shape instead. */
        int b;
        if (!types && v->kind == TOK_SPM && is_byte_piece(piece_of(v, i), v->len[i], &b))
            v->type[i] = TOK_TYPE_BYTE;
    }
    return HEED_OK;
}

/* A special token id: `dflt` when absent; -1 when stored as -1 or as u32
 * 0xFFFFFFFF (how converters write "none"); anything else outside the
 * vocabulary is an error. */
static int load_id(const gguf_file *f, const char *key, int n, int32_t dflt, int32_t *out, char *err,
                   size_t es) {
    int64_t val;
    *out = dflt < n ? dflt : -1;
    if (!gguf_find(f, key)) return HEED_OK;
    if (!gguf_get_i64(f, key, &val))
        return tok_fail(HEED_ERR_FORMAT, err, es, "%s: key '%s' is not an integer", f->path, key);
    if (val == -1 || val == 0xffffffffLL) {
        *out = -1;
        return HEED_OK;
    }
    if (val < 0 || val >= n)
        return tok_fail(HEED_ERR_FORMAT, err, es, "%s: key '%s' is %lld, outside the vocabulary (0..%d)",
                        f->path, key, (long long)val, n - 1);
    *out = (int32_t)val;
    return HEED_OK;
}

static int load_bool(const gguf_file *f, const char *key, bool dflt, bool *out, char *err, size_t es) {
    *out = dflt;
    if (!gguf_find(f, key)) return HEED_OK;
    if (!gguf_get_bool(f, key, out))
        return tok_fail(HEED_ERR_FORMAT, err, es, "%s: key '%s' is not a boolean", f->path, key);
    return HEED_OK;
}

static int load_specials(tok_vocab *v, const gguf_file *f, char *err, size_t es) {
    int n = v->n_vocab;
    bool spm = v->kind == TOK_SPM;
    /* SentencePiece Llama vocabularies fix <unk>=0, <s>=1, </s>=2; the
     * reference engine assumes them when the keys are absent. */
    int rc = load_id(f, "tokenizer.ggml.bos_token_id", n, spm ? 1 : -1, &v->bos, err, es);
    if (!rc) rc = load_id(f, "tokenizer.ggml.eos_token_id", n, spm ? 2 : -1, &v->eos, err, es);
    if (!rc) rc = load_id(f, "tokenizer.ggml.eot_token_id", n, -1, &v->eot, err, es);
    if (!rc) rc = load_id(f, "tokenizer.ggml.unknown_token_id", n, spm ? 0 : -1, &v->unk, err, es);
    if (!rc) rc = load_id(f, "tokenizer.ggml.padding_token_id", n, -1, &v->pad, err, es);
    /* Llama 3 GGUFs may omit add_bos_token: the reference engine then adds BOS */
    bool dflt_bos = spm || (tok_bpe_default_add_bos(v->bpe) && v->bos >= 0);
    if (!rc) rc = load_bool(f, "tokenizer.ggml.add_bos_token", dflt_bos, &v->add_bos, err, es);
    if (!rc) rc = load_bool(f, "tokenizer.ggml.add_space_prefix", spm, &v->add_space_prefix, err, es);
    if (!rc && v->add_bos && v->bos < 0)
        rc = tok_fail(HEED_ERR_FORMAT, err, es, "%s: key 'tokenizer.ggml.add_bos_token' is true but there is "
                      "no BOS token", f->path);
    return rc;
}

/* The token encoding a raw byte: "<0xNN>", else the one-byte piece, else
 * <unk> (the reference engine's order). */
static void init_byte_ids(tok_vocab *v) {
    for (int b = 0; b < 256; b++) {
        char name[8];
        char one = (char)b;
        snprintf(name, sizeof name, "<0x%02X>", b);
        int32_t id = tok_find(v, name, 6);
        if (id < 0) id = tok_find(v, &one, 1);
        v->byte_id[b] = id >= 0 ? id : v->unk;
    }
}

static void add_eog(tok_vocab *v, int32_t id) {
    if (id < 0 || v->n_eog == TOK_MAX_EOG) return;
    for (int i = 0; i < v->n_eog; i++)
        if (v->eog[i] == id) return;
    v->eog[v->n_eog++] = id;
}

/* Chat models often stop on a control token other than the declared EOS
 * (Llama 3 instruct: <|eot_id|>; Qwen: <|im_end|>; Phi-3: <|end|> beside
 * <|endoftext|>; Gemma: <end_of_turn> and <eos>, whichever the file names
 * as EOS). As the reference engine, these names end a generation when the
 * vocabulary has them as control tokens. */
static void init_eog(tok_vocab *v) {
    static const char *const names[] = {"<|eot_id|>", "<|im_end|>", "<|endoftext|>", "<|end_of_text|>",
                                        "<|end|>", "<end_of_turn>", "<eos>"};
    add_eog(v, v->eos);
    add_eog(v, v->eot);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int32_t id = tok_find(v, names[i], strlen(names[i]));
        if (id >= 0 && v->type[id] == TOK_TYPE_CONTROL) add_eog(v, id);
    }
}

/* Tokens that text may contain literally and that are split out of it
 * before encoding, as in the reference engines: control and unknown tokens
 * only when asked (parse_special), user-defined tokens always (Hugging Face
 * splits every added token; the GPT-NeoX vocabulary's runs of spaces and
 * its test vectors depend on it). */
static bool splits_out(int type) {
    return type == TOK_TYPE_CONTROL || type == TOK_TYPE_USER_DEFINED || type == TOK_TYPE_UNKNOWN;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Orders the special tokens by first byte, then longest first (so the
 * first match at a position is the longest: leftmost-longest, as Hugging
 * Face's added-token matcher), then by id. */
static int init_special(tok_vocab *v, char *err, size_t es) {
    int n = 0;
    for (int i = 0; i < v->n_vocab; i++)
        if (splits_out(v->type[i]) && v->len[i] > 0 && tok_utf8_valid(piece_of(v, i), v->len[i])) n++;
    uint64_t *key = malloc((size_t)(n ? n : 1) * sizeof *key);
    v->special = malloc((size_t)(n ? n : 1) * sizeof *v->special);
    if (!key || !v->special) {
        free(key);
        return tok_fail(HEED_ERR_NOMEM, err, es, "out of memory");
    }
    n = 0;
    for (int i = 0; i < v->n_vocab; i++) {
        if (!splits_out(v->type[i]) || v->len[i] == 0 || !tok_utf8_valid(piece_of(v, i), v->len[i])) continue;
        uint64_t first = (unsigned char)piece_of(v, i)[0];
        key[n++] = first << 56 | (uint64_t)(0xffffffu - v->len[i]) << 32 | (uint32_t)i; /* len <= 2^16 */
        if (v->type[i] == TOK_TYPE_USER_DEFINED) v->n_special_user++;
    }
    qsort(key, (size_t)n, sizeof *key, cmp_u64);
    memset(v->special_at, 0, sizeof v->special_at);
    for (int k = 0; k < n; k++) {
        v->special[k] = (int32_t)(key[k] & 0xffffffffu);
        v->special_at[(key[k] >> 56) + 1]++;
    }
    for (int b = 0; b < 256; b++) v->special_at[b + 1] += v->special_at[b];
    v->n_special = n;
    free(key);
    return HEED_OK;
}

int tok_finish(tok_vocab *v, char *err, size_t es) {
    init_byte_ids(v);
    init_eog(v);
    return init_special(v, err, es);
}

static int load_chat_template(tok_vocab *v, const gguf_file *f, char *err, size_t es) {
    const char *key = "tokenizer.chat_template";
    gguf_str t;
    if (!gguf_find(f, key)) return HEED_OK;
    if (!gguf_get_str(f, key, &t))
        return tok_fail(HEED_ERR_FORMAT, err, es, "%s: key '%s' is not a string", f->path, key);
    if (t.len > TOK_MAX_BLOB) return tok_fail(HEED_ERR_FORMAT, err, es, "%s: key '%s' is too long", f->path, key);
    v->chat_template = malloc((size_t)t.len + 1);
    if (!v->chat_template) return tok_fail(HEED_ERR_NOMEM, err, es, "out of memory");
    memcpy(v->chat_template, t.ptr, (size_t)t.len);
    v->chat_template[t.len] = '\0';
    return HEED_OK;
}

tok_vocab *tok_load(const gguf_file *f, int *rc_out, char *err, size_t err_size) {
    int rc = HEED_OK;
    tok_vocab *v = calloc(1, sizeof *v);
    if (!v) {
        rc = tok_fail(HEED_ERR_NOMEM, err, err_size, "out of memory");
        goto done;
    }
    rc = load_kind(v, f, err, err_size);
    if (!rc) rc = load_pieces(v, f, err, err_size);
    if (!rc) rc = load_scores_types(v, f, err, err_size);
    if (!rc && v->kind == TOK_GPT2) rc = tok_bpe_load(v, f, err, err_size);
    if (!rc) rc = load_specials(v, f, err, err_size);
    if (!rc) rc = load_chat_template(v, f, err, err_size);
    if (!rc) rc = tok_finish(v, err, err_size);
done:
    if (rc_out) *rc_out = rc;
    if (rc) {
        tok_free(v);
        return NULL;
    }
    return v;
}

void tok_free(tok_vocab *v) {
    if (!v) return;
    free(v->blob);
    free(v->off);
    free(v->len);
    free(v->score);
    free(v->type);
    free(v->slot);
    free(v->special);
    free(v->chat_template);
    tok_bpe_free(v->bpe);
    free(v);
}

int tok_n_vocab(const tok_vocab *v) { return v->n_vocab; }
const char *tok_model_name(const tok_vocab *v) { return v->kind == TOK_SPM ? "llama" : "gpt2"; }
bool tok_can_encode(const tok_vocab *v) { return v->kind == TOK_SPM || v->bpe != NULL; }
const char *tok_encode_refusal(const tok_vocab *v) { return tok_can_encode(v) ? NULL : v->refusal; }
int32_t tok_bos(const tok_vocab *v) { return v->bos; }
int32_t tok_eos(const tok_vocab *v) { return v->eos; }
int32_t tok_eot(const tok_vocab *v) { return v->eot; }
bool tok_add_bos(const tok_vocab *v) { return v->add_bos; }
bool tok_add_space_prefix(const tok_vocab *v) { return v->kind == TOK_SPM && v->add_space_prefix; }
const char *tok_chat_template(const tok_vocab *v) { return v->chat_template; }

/* ------------------------------------------------------ SentencePiece encode */

/* A symbol is a run of the escaped text; merging appends the right symbol
 * to the left one (n grows) and empties the right one (n = 0). */
typedef struct spm_sym {
    uint32_t off, n;
    int32_t prev, next; /* neighbours in the chain, -1 at the ends */
} spm_sym;

/* A candidate merge of two adjacent symbols, valid while they still have
 * the lengths they had when it was queued (lazy invalidation). */
typedef struct spm_pair {
    float score;
    int32_t left, right;
    uint32_t n; /* bytes of left + right when queued */
} spm_pair;

typedef struct spm_work {
    const tok_vocab *v;
    const char *text; /* the escaped text */
    spm_sym *sym;
    spm_pair *heap;   /* max-heap: best score first, ties leftmost */
    int n_heap;
} spm_work;

static bool pair_before(const spm_pair *a, const spm_pair *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(spm_work *w, spm_pair p) {
    int i = w->n_heap++;
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!pair_before(&p, &w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = p;
}

static spm_pair heap_pop(spm_work *w) {
    spm_pair top = w->heap[0], last = w->heap[--w->n_heap];
    int i = 0, n = w->n_heap;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && pair_before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!pair_before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

/* Queues the merge of two neighbours if their concatenation is a piece. */
static void spm_try_pair(spm_work *w, int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    uint32_t n = w->sym[left].n + w->sym[right].n;
    int32_t id = tok_find(w->v, w->text + w->sym[left].off, n);
    if (id < 0) return;
    spm_pair p = {w->v->score[id], left, right, n};
    heap_push(w, p);
}

static void spm_merge_all(spm_work *w) {
    while (w->n_heap > 0) {
        spm_pair p = heap_pop(w);
        spm_sym *l = &w->sym[p.left], *r = &w->sym[p.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != p.n) continue; /* stale */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0) w->sym[r->next].prev = p.left;
        spm_try_pair(w, l->prev, p.left);
        spm_try_pair(w, p.left, l->next);
    }
}

/* Escapes the text as SentencePiece sees it: an optional leading space,
 * every ' ' as "▁". Returns the length; out holds 3 * len + 3 bytes. */
static size_t spm_escape(const char *text, size_t len, bool prefix, char *out) {
    size_t n = 0;
    if (prefix) {
        memcpy(out, SPM_SPACE, 3);
        n = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(out + n, SPM_SPACE, 3);
            n += 3;
        } else {
            out[n++] = text[i];
        }
    }
    return n;
}

void tok_emit(int32_t id, int32_t *ids, int n_max, int *n_tok) {
    if (*n_tok < n_max) ids[*n_tok] = id;
    (*n_tok)++;
}

/* Turns the merged chain into ids: whole pieces, or bytes for the rest. */
static int spm_emit(const spm_work *w, int32_t *ids, int n_max, int *n_tok) {
    for (int32_t i = 0; i >= 0; i = w->sym[i].next) {
        const spm_sym *s = &w->sym[i];
        int32_t id = tok_find(w->v, w->text + s->off, s->n);
        if (id >= 0) {
            tok_emit(id, ids, n_max, n_tok);
            continue;
        }
        for (uint32_t k = 0; k < s->n; k++) {
            int32_t b = w->v->byte_id[(unsigned char)w->text[s->off + k]];
            if (b < 0) return HEED_ERR_TOKENIZER; /* no byte tokens and no <unk> */
            tok_emit(b, ids, n_max, n_tok);
        }
    }
    return HEED_OK;
}

/* Encodes valid, non-empty UTF-8 text, appending to ids. */
static int spm_encode(const tok_vocab *v, const char *text, size_t len, int32_t *ids, int n_max,
                      int *n_tok) {
    int rc = HEED_OK;
    spm_work w = {.v = v};
    char *esc = malloc(3 * len + 3);
    size_t n_esc = esc ? spm_escape(text, len, v->add_space_prefix, esc) : 0;
    /* every symbol is at least one byte; each merge queues at most two pairs */
    w.sym = malloc(n_esc * sizeof *w.sym);
    w.heap = malloc(3 * n_esc * sizeof *w.heap);
    if (!esc || !w.sym || !w.heap) {
        rc = HEED_ERR_NOMEM;
        goto done;
    }
    w.text = esc;
    int32_t n_sym = 0;
    for (size_t off = 0; off < n_esc; n_sym++) {
        uint32_t n = (uint32_t)utf8_seq_len((unsigned char)esc[off]); /* validated: never 0 */
        w.sym[n_sym] = (spm_sym){(uint32_t)off, n, n_sym - 1, off + n < n_esc ? n_sym + 1 : -1};
        off += n;
    }
    for (int32_t i = 1; i < n_sym; i++) spm_try_pair(&w, i - 1, i);
    spm_merge_all(&w);
    rc = spm_emit(&w, ids, n_max, n_tok);
done:
    free(esc);
    free(w.sym);
    free(w.heap);
    return rc;
}

/* Encodes a run of text that holds no special token. */
static int encode_run(const tok_vocab *v, const char *text, size_t len, int32_t *ids, int n_max, int *n_tok) {
    if (v->kind == TOK_GPT2) return tok_bpe_encode(v, text, len, ids, n_max, n_tok);
    return spm_encode(v, text, len, ids, n_max, n_tok);
}

/* True if any of plain[0..n) is set. */
static bool any_plain(const unsigned char *plain, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (plain[i]) return true;
    return false;
}

/* The special token that starts s[0..n) (the longest one), or -1. A control
 * or unknown token counts only with parse_special and, given plain (aligned
 * with s), only where none of its bytes is marked plain. */
static int32_t special_at(const tok_vocab *v, const char *s, size_t n, bool parse_special,
                          const unsigned char *plain) {
    unsigned char b = (unsigned char)s[0];
    for (int k = v->special_at[b]; k < v->special_at[b + 1]; k++) {
        int32_t id = v->special[k];
        bool user = v->type[id] == TOK_TYPE_USER_DEFINED;
        if (!parse_special && !user) continue;
        if (v->len[id] > n || memcmp(piece_of(v, id), s, v->len[id]) != 0) continue;
        if (plain && !user && any_plain(plain, v->len[id])) continue;
        return id;
    }
    return -1;
}

/* Splits the special tokens out of the text, leftmost-longest, and encodes
 * the runs between them. Each run is encoded on its own, as the reference
 * engine does (for SentencePiece each run gets the space prefix). */
static int encode_text(const tok_vocab *v, const char *text, size_t len, bool parse_special,
                       const unsigned char *plain, int32_t *ids, int n_max, int *n_tok) {
    if (!parse_special && v->n_special_user == 0) return encode_run(v, text, len, ids, n_max, n_tok);
    size_t run = 0; /* start of the text not yet encoded */
    for (size_t pos = 0; pos < len;) {
        int32_t id = special_at(v, text + pos, len - pos, parse_special, plain ? plain + pos : NULL);
        if (id < 0) {
            pos++;
            continue;
        }
        if (pos > run) {
            int rc = encode_run(v, text + run, pos - run, ids, n_max, n_tok);
            if (rc) return rc;
        }
        tok_emit(id, ids, n_max, n_tok);
        pos += v->len[id];
        run = pos;
    }
    return run < len ? encode_run(v, text + run, len - run, ids, n_max, n_tok) : HEED_OK;
}

/*
 * Returns the token count (which may exceed n_max; ids gets the first
 * n_max), or HEED_ERR_INVALID_ARG (NULL arguments, invalid UTF-8, text
 * longer than TOK_MAX_TEXT), HEED_ERR_TOKENIZER (a vocabulary heed cannot
 * encode; add_bos without a BOS token; a character with neither a piece
 * nor a byte token nor <unk>), HEED_ERR_NOMEM.
 */
static int encode(const tok_vocab *v, const char *text, size_t len, bool add_bos, bool parse_special,
                  const unsigned char *plain, int32_t *ids, int n_max) {
    if (!v || (!text && len) || (!ids && n_max > 0) || len > TOK_MAX_TEXT) return HEED_ERR_INVALID_ARG;
    if (!tok_can_encode(v)) return HEED_ERR_TOKENIZER;
    if (!tok_utf8_valid(text, len)) return HEED_ERR_INVALID_ARG;
    if (n_max < 0) n_max = 0;
    int n_tok = 0;
    if (add_bos) {
        if (v->bos < 0) return HEED_ERR_TOKENIZER;
        tok_emit(v->bos, ids, n_max, &n_tok);
    }
    /* empty text: no tokens, and no space prefix either (as the reference) */
    if (len == 0) return n_tok;
    int rc = encode_text(v, text, len, parse_special, plain, ids, n_max, &n_tok);
    return rc ? rc : n_tok;
}

int tok_encode_ex(const tok_vocab *v, const char *text, size_t len, bool add_bos, bool parse_special,
                  int32_t *ids, int n_max) {
    return encode(v, text, len, add_bos, parse_special, NULL, ids, n_max);
}

int tok_encode_guarded(const tok_vocab *v, const char *text, size_t len, const unsigned char *plain, int32_t *ids,
                       int n_max) {
    if (!plain && len) return HEED_ERR_INVALID_ARG;
    return encode(v, text, len, false, true, plain, ids, n_max);
}

int tok_encode(const tok_vocab *v, const char *text, size_t len, bool add_bos, int32_t *ids, int n_max) {
    return tok_encode_ex(v, text, len, add_bos, false, ids, n_max);
}

/* ---------------------------------------------------------------- decode */

const char *tok_piece(const tok_vocab *v, int32_t id) {
    if (!v || id < 0 || id >= v->n_vocab) return NULL;
    return piece_of(v, id);
}

/* GPT-2's bytes_to_unicode maps the printable bytes ('!'..'~', '¡'..'¬',
 * '®'..'ÿ') to themselves and the other 68 bytes, in increasing order, to
 * U+0100..U+0143. The inverse: the byte of code point cp, or -1. */
int tok_gpt2_byte_of(uint32_t cp) {
    if ((cp >= 0x21 && cp <= 0x7e) || (cp >= 0xa1 && cp <= 0xac) || (cp >= 0xae && cp <= 0xff))
        return (int)cp;
    if (cp < 0x100 || cp > 0x143) return -1;
    uint32_t k = cp - 0x100; /* rank among the non-printable bytes */
    if (k <= 0x20) return (int)k;                       /* 0x00..0x20 */
    if (k <= 0x20 + 34) return (int)(k - 0x21 + 0x7f); /* 0x7f..0xa0 */
    return 0xad;
}

static void spm_decode_text(const char *p, size_t n, byte_sink *k) {
    size_t run = 0; /* start of the bytes not yet handed on */
    for (size_t i = 0; i + 3 <= n; i++) {
        if (memcmp(p + i, SPM_SPACE, 3) != 0) continue;
        k->put(k, (const unsigned char *)p + run, i - run);
        k->put(k, (const unsigned char *)" ", 1);
        run = i + 3;
        i += 2;
    }
    k->put(k, (const unsigned char *)p + run, n - run);
}

static void gpt2_decode_text(const char *p, size_t n, byte_sink *k) {
    const unsigned char *s = (const unsigned char *)p;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int len = utf8_decode(s + i, n - i, &cp);
        int b = len ? tok_gpt2_byte_of(cp) : -1;
        if (len == 0) len = 1; /* a corrupt piece: pass the byte on as is */
        if (b >= 0) {
            unsigned char c = (unsigned char)b;
            k->put(k, &c, 1);
        } else {
            k->put(k, s + i, (size_t)len); /* outside the table: the character itself */
        }
        i += (size_t)len;
    }
}

/* Hands the bytes token id stands for in text to k. */
static void token_text(const tok_vocab *v, int32_t id, byte_sink *k) {
    const char *p = piece_of(v, id);
    size_t n = v->len[id];
    int t = v->type[id], b;
    if (id == v->unk || t == TOK_TYPE_CONTROL || t == TOK_TYPE_UNKNOWN || t == TOK_TYPE_UNUSED) return;
    if (t == TOK_TYPE_USER_DEFINED) {
        k->put(k, (const unsigned char *)p, n);
    } else if (v->kind == TOK_SPM && t == TOK_TYPE_BYTE && is_byte_piece(p, n, &b)) {
        unsigned char c = (unsigned char)b;
        k->put(k, &c, 1);
    } else if (v->kind == TOK_SPM) {
        spm_decode_text(p, n, k);
    } else {
        gpt2_decode_text(p, n, k);
    }
}

/*
 * The bytes of token id, snprintf-style (the buffer may receive a partial
 * UTF-8 character; a NUL follows the bytes written). For SentencePiece the
 * "▁" of a word-initial piece is a space, so the first token of a text
 * encoded with the space prefix starts with ' ': the caller drops that one
 * space (tok_add_space_prefix) when turning a whole encoded text back into
 * text. Returns HEED_ERR_INVALID_ARG for an id outside the vocabulary.
 */
int tok_bytes(const tok_vocab *v, int32_t id, char *buf, size_t size) {
    if (!v || id < 0 || id >= v->n_vocab || (!buf && size)) return HEED_ERR_INVALID_ARG;
    raw_sink r = {{raw_put}, {buf, size, 0, 0, false}};
    token_text(v, id, &r.base);
    return out_finish(&r.out);
}

/* Builds a label from raw bytes: whole characters pass, control characters
 * become escapes, and bytes that form no character appear as <0xNN>. */
typedef struct label_sink {
    byte_sink base;
    out_buf out;
    unsigned char pend[4];
    int n_pend;
} label_sink;

static void label_hex(label_sink *l, const unsigned char *p, int n) {
    for (int i = 0; i < n; i++) {
        char hex[8];
        snprintf(hex, sizeof hex, "<0x%02X>", p[i]);
        out_put(&l->out, hex, 6, false);
    }
}

static void label_char(label_sink *l, const unsigned char *p, int n) {
    if (n > 1 || (p[0] >= 0x20 && p[0] != 0x7f)) out_put(&l->out, p, (size_t)n, n > 1);
    else if (p[0] == '\n') out_put(&l->out, "\\n", 2, false);
    else if (p[0] == '\t') out_put(&l->out, "\\t", 2, false);
    else if (p[0] == '\r') out_put(&l->out, "\\r", 2, false);
    else label_hex(l, p, 1); /* other control characters would be invisible */
}

static void label_put(byte_sink *k, const unsigned char *p, size_t n) {
    label_sink *l = (label_sink *)k;
    for (size_t i = 0; i < n; i++) {
        enum utf8_event e;
        while ((e = utf8_offer(l->pend, &l->n_pend, p[i])) == U8_BAD_AGAIN) {
            label_hex(l, l->pend, l->n_pend);
            l->n_pend = 0;
        }
        if (e == U8_CHAR) label_char(l, l->pend, l->n_pend);
        else if (e == U8_BAD) label_hex(l, l->pend, l->n_pend);
        if (e != U8_HELD) l->n_pend = 0;
    }
}

static const char *label_special(const tok_vocab *v, int32_t id) {
    if (id == v->bos) return "[BOS]";
    if (id == v->eos) return "[EOS]";
    if (id == v->unk) return "[UNK]";
    return NULL;
}

/*
 * A display label, always valid UTF-8 (see heed_token_label): BOS/EOS/UNK by
 * id; other control tokens as their piece; an SPM byte token that is not a
 * character alone as its piece ("<0xE2>"); otherwise the token's bytes with
 * \n \t \r escaped and stray bytes as <0xNN>; "[EMPTY]" for nothing.
 * snprintf semantics, truncated only between characters.
 */
int tok_label(const tok_vocab *v, int32_t id, char *buf, size_t size) {
    if (!v || id < 0 || id >= v->n_vocab || (!buf && size)) return HEED_ERR_INVALID_ARG;
    label_sink l = {{label_put}, {buf, size, 0, 0, false}, {0}, 0};
    const char *p = piece_of(v, id);
    size_t n = v->len[id];
    int t = v->type[id], b;
    const char *special = label_special(v, id);
    bool lone_byte = v->kind == TOK_SPM && t == TOK_TYPE_BYTE && is_byte_piece(p, n, &b) && b >= 0x80;
    if (special) out_put(&l.out, special, strlen(special), false);
    else if (t == TOK_TYPE_CONTROL || lone_byte) label_put(&l.base, (const unsigned char *)p, n);
    else token_text(v, id, &l.base);
    label_hex(&l, l.pend, l.n_pend); /* an incomplete character at the end */
    if (l.out.n == 0) out_put(&l.out, "[EMPTY]", 7, false);
    return out_finish(&l.out);
}

bool tok_is_eog(const tok_vocab *v, int32_t id) {
    if (!v || id < 0) return false;
    for (int i = 0; i < v->n_eog; i++)
        if (v->eog[i] == id) return true;
    return false;
}
