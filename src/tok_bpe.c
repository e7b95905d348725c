/*
 * tok_bpe.c - byte-level BPE encoding (tokenizer.ggml.model = gpt2) and the
 * Hugging Face tokenizer.json loader.
 *
 * A run of text (special tokens are split out before, in tok.c) becomes
 * ids as the models were trained, i.e. as Hugging Face tokenizers encodes
 * (llama.cpp reproduces it, and heed must feed a model the ids the
 * reference feeds it):
 *  1. pre-tokenize: the family's regexes, applied in order, each splitting
 *     every piece left by the previous one into its matches and the gaps
 *     between them (HF's Split with behavior "Isolated"). A regex sees one
 *     piece as its whole subject, so lookaheads and `$` stop at its end;
 *  2. map each byte of a word to its GPT-2 printable character (' ' is
 *     'Ġ'): the initial symbols are the tokens of those one-byte pieces;
 *  3. merge: repeatedly join the adjacent pair whose merge has the lowest
 *     rank (ties: the leftmost), until no adjacent pair has a merge. With
 *     ignore_merges (Llama 3) a word that is itself a token is taken whole.
 * Merges are keyed by the ids of their two parts, so step 3 never builds
 * strings; a merge whose parts or result are not tokens cannot be keyed
 * and is skipped (GGUF: llama.cpp loads such files) or refused
 * (tokenizer.json, as HF refuses it). A byte whose printable character is
 * not a token (SmolLM2 and Falcon lack a few) is dropped, as both
 * reference engines drop it.
 *
 * Regexes are PCRE2 with UTF and UCP (\p{L}, \s, ... by Unicode
 * properties), JIT-compiled where the platform allows; the compiled
 * patterns live in the vocabulary, matching data is per call. PCRE2's
 * Unicode tables (14.0 on Debian 12) may differ from HF's Oniguruma for
 * characters assigned since, and its \s also matches U+180E.
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <pcre2.h>

#include "err.h"
#include "fmap.h"
#include "heed.h"
#include "tok_internal.h"

#define BPE_MAX_RE 7              /* regexes in one pre-tokenizer, + a NULL */
#define BPE_MAX_MERGES (1 << 24)  /* merges in a vocabulary (real ones: < 300k) */
#define MERGE_FREE UINT64_MAX     /* key of an unused merge slot */

/* ------------------------------------------------------ pre-tokenizers */

/* GPT-2's pattern, as HF's ByteLevel pre-tokenizer writes it. */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
/* Llama 3 and Qwen2 (tokenizer.json's Split regexes): the same but for
 * digits, grouped by up to three (Llama 3) or single (Qwen2). */
#define RE_LLAMA3 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}" \
                  "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2 "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}" \
                 "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* DeepSeek's CJK runs: U+4E00-9FA5, U+0800-4E00, U+AC00-D7FF */
#define RE_DEEPSEEK_CJK "[\\x{4e00}-\\x{9fa5}\\x{0800}-\\x{4e00}\\x{ac00}-\\x{d7ff}]+"
/* DeepSeek LLM's words: the cased letters (Unicode LC) of its tokenizer.json */
#define RE_DEEPSEEK_LETTERS                                                                              \
    "\\s?[A-Za-z\\x{b5}\\x{c0}-\\x{d6}\\x{d8}-\\x{f6}\\x{f8}-\\x{1ba}\\x{1bc}-\\x{1bf}\\x{1c4}-\\x{293}"  \
    "\\x{295}-\\x{2af}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37b}-\\x{37d}\\x{37f}\\x{386}\\x{388}-\\x{38a}" \
    "\\x{38c}\\x{38e}-\\x{3a1}\\x{3a3}-\\x{3f5}\\x{3f7}-\\x{481}\\x{48a}-\\x{52f}\\x{531}-\\x{556}"         \
    "\\x{10a0}-\\x{10c5}\\x{13a0}-\\x{13f5}\\x{13f8}-\\x{13fd}\\x{1c90}-\\x{1cba}\\x{1cbd}-\\x{1cbf}"      \
    "\\x{1d00}-\\x{1d2b}\\x{1d6b}-\\x{1d77}\\x{1d79}-\\x{1d9a}\\x{1e00}-\\x{1f15}\\x{1f18}-\\x{1f1d}"      \
    "\\x{1f20}-\\x{1f45}\\x{1f48}-\\x{1f4d}\\x{1f50}-\\x{1f57}\\x{1f59}\\x{1f5b}\\x{1f5d}"                 \
    "\\x{1f5f}-\\x{1f7d}\\x{1f80}-\\x{1fb4}\\x{1fb6}-\\x{1fbc}\\x{1fbe}\\x{1fc2}-\\x{1fc4}"                \
    "\\x{1fc6}-\\x{1fcc}\\x{1fd0}-\\x{1fd3}\\x{1fd6}-\\x{1fdb}\\x{1fe0}-\\x{1fec}\\x{1ff2}-\\x{1ff4}"      \
    "\\x{1ff6}-\\x{1ffc}\\x{2102}\\x{2107}\\x{210a}-\\x{2113}\\x{2115}\\x{2119}-\\x{211d}\\x{2124}"        \
    "\\x{2126}\\x{2128}\\x{212a}-\\x{212d}\\x{212f}-\\x{2134}\\x{2139}\\x{213c}-\\x{213f}"                \
    "\\x{2145}-\\x{2149}\\x{214e}\\x{2183}\\x{2184}\\x{2c00}-\\x{2c7b}\\x{2c7e}-\\x{2ce4}"                \
    "\\x{2ceb}-\\x{2cee}\\x{2cf2}\\x{2cf3}\\x{a640}-\\x{a66d}\\x{a680}-\\x{a69b}\\x{a722}-\\x{a76f}"       \
    "\\x{a771}-\\x{a787}\\x{a78b}-\\x{a78e}\\x{ab70}-\\x{abbf}\\x{fb00}-\\x{fb06}\\x{fb13}-\\x{fb17}"      \
    "\\x{ff21}-\\x{ff3a}\\x{ff41}-\\x{ff5a}\\x{10400}-\\x{1044f}\\x{104b0}-\\x{104d3}"                    \
    "\\x{104d8}-\\x{104fb}\\x{10c80}-\\x{10cb2}\\x{10cc0}-\\x{10cf2}\\x{118a0}-\\x{118df}"                \
    "\\x{1e900}-\\x{1e943}]+"
/* DeepSeek LLM's punctuation: ASCII and fullwidth, quotes, CJK marks */
#define RE_DEEPSEEK_PUNCT \
    "\\s?[!-/:-~\\x{ff01}-\\x{ff0f}\\x{ff1a}-\\x{ff5e}\\x{2018}-\\x{201f}\\x{3000}-\\x{3002}]+"

/* A pre-tokenizer: what llama.cpp applies for each tokenizer.ggml.pre
 * value (names from its loader), written as HF tokenizer.json writes the
 * same steps where one exists, so tok_load_hf can recognise it. */
typedef struct pre_def {
    const char *names[12];          /* tokenizer.ggml.pre values, NULL-terminated */
    const char *regex[BPE_MAX_RE];  /* applied in order, NULL-terminated */
    bool ignore_merges;             /* a word that is a token skips the merges */
    bool add_bos;                   /* add_bos_token's default */
} pre_def;

static const pre_def PRE_DEFS[] = {
    {{"llama-bpe", "llama3", "llama-v3", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", NULL},
     {RE_LLAMA3, NULL}, true, true},
    {{"dbrx", "smaug-bpe", NULL}, {RE_LLAMA3, NULL}, false, false},
    {{"qwen2", "deepseek-r1-qwen", "stablelm2", "megrez", "hunyuan", "kormo", NULL}, {RE_QWEN2, NULL}, false,
     false},
    {{"gpt-2", "phi-2", "mpt", "olmo", "jais", "trillion", "exaone4", "granite-docling", "a.x-4.0", "mellum",
      "gigachat", NULL},
     {RE_GPT2, NULL}, false, false},
    /* HF: Digits(individual_digits) then ByteLevel */
    {{"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", NULL},
     {"\\p{N}", RE_GPT2, NULL}, false, false},
    /* ASCII symbols count as punctuation in HF's Punctuation pre-tokenizer */
    {{"falcon", NULL}, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]", NULL}, false, false},
    {{"deepseek-coder", NULL}, {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", RE_DEEPSEEK_CJK, "\\p{N}", NULL}, false,
     false},
    {{"deepseek-llm", NULL},
     {"[\r\n]", RE_DEEPSEEK_LETTERS, RE_DEEPSEEK_PUNCT, "\\s+$", RE_DEEPSEEK_CJK, "\\p{N}+", NULL}, false, false},
    /* llama.cpp's choice for "default" and for a file without the key */
    {{"default", NULL}, {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]", NULL}, false, false},
};

static const pre_def *pre_by_name(const char *name, size_t n) {
    for (size_t d = 0; d < sizeof PRE_DEFS / sizeof PRE_DEFS[0]; d++)
        for (const char *const *p = PRE_DEFS[d].names; *p; p++)
            if (strlen(*p) == n && memcmp(*p, name, n) == 0) return &PRE_DEFS[d];
    return NULL;
}

/* The definition whose regex list is exactly re[0..n), or NULL. */
static const pre_def *pre_by_regexes(const char *const *re, int n) {
    for (size_t d = 0; d < sizeof PRE_DEFS / sizeof PRE_DEFS[0]; d++) {
        int k = 0;
        while (k < n && PRE_DEFS[d].regex[k] && strcmp(PRE_DEFS[d].regex[k], re[k]) == 0) k++;
        if (k == n && !PRE_DEFS[d].regex[k]) return &PRE_DEFS[d];
    }
    return NULL;
}

/* ------------------------------------------------------------- the model */

typedef struct merge_slot {
    uint64_t key;  /* left id << 32 | right id; MERGE_FREE when unused */
    int32_t rank;  /* index in the merges list: lower ranks merge first */
    int32_t id;    /* the token the pair becomes */
} merge_slot;

struct tok_bpe {
    const pre_def *pre;
    pcre2_code *re[BPE_MAX_RE];
    int n_re;
    bool ignore_merges;
    merge_slot *merge;              /* (merge_mask + 1) open addressing, linear probing */
    uint32_t merge_mask;
    int32_t byte_tok[256];          /* the token of each byte's printable character, or -1 */
    char byte_utf8[256][2];         /* that character in UTF-8 */
    uint8_t byte_len[256];          /* its length: 1 or 2 */
};

bool tok_bpe_default_add_bos(const tok_bpe *b) { return b && b->pre->add_bos; }

void tok_bpe_free(tok_bpe *b) {
    if (!b) return;
    for (int i = 0; i < b->n_re; i++) pcre2_code_free(b->re[i]);
    free(b->merge);
    free(b);
}

static int bpe_compile(tok_bpe *b, const pre_def *pre, char *err, size_t es) {
    b->pre = pre;
    for (b->n_re = 0; pre->regex[b->n_re]; b->n_re++) {
        int code;
        PCRE2_SIZE at;
        pcre2_code *re = pcre2_compile((PCRE2_SPTR)pre->regex[b->n_re], PCRE2_ZERO_TERMINATED,
                                       PCRE2_UTF | PCRE2_UCP, &code, &at, NULL);
        if (!re) {
            PCRE2_UCHAR msg[128];
            pcre2_get_error_message(code, msg, sizeof msg);
            return tok_fail(HEED_ERR_UNSUPPORTED, err, es, "pre-tokenizer '%s': regex %d: %s at offset %zu",
                            pre->names[0], b->n_re, (const char *)msg, (size_t)at);
        }
        b->re[b->n_re] = re;
        /* without JIT (unsupported CPU, W^X policies) pcre2_match interprets */
        (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    }
    return HEED_OK;
}

/* The GPT-2 byte alphabet, forward: the code point that stands for byte b. */
static uint32_t gpt2_cp_of(int b) {
    for (uint32_t cp = 0; cp <= 0x143; cp++)
        if (tok_gpt2_byte_of(cp) == b) return cp;
    return 0; /* unreachable: the alphabet covers every byte */
}

static void bpe_init_bytes(tok_bpe *b, const tok_vocab *v) {
    for (int c = 0; c < 256; c++) {
        uint32_t cp = gpt2_cp_of(c);
        if (cp < 0x80) {
            b->byte_utf8[c][0] = (char)cp;
            b->byte_len[c] = 1;
        } else {
            b->byte_utf8[c][0] = (char)(0xc0 | cp >> 6);
            b->byte_utf8[c][1] = (char)(0x80 | (cp & 0x3f));
            b->byte_len[c] = 2;
        }
        b->byte_tok[c] = tok_find(v, b->byte_utf8[c], b->byte_len[c]);
    }
}

static uint32_t merge_hash(uint64_t key) { return (uint32_t)((key * 0x9e3779b97f4a7c15ull) >> 32); }

static uint64_t merge_key(int32_t left, int32_t right) { return (uint64_t)(uint32_t)left << 32 | (uint32_t)right; }

static const merge_slot *merge_find(const tok_bpe *b, int32_t left, int32_t right) {
    uint64_t key = merge_key(left, right);
    for (uint32_t i = merge_hash(key) & b->merge_mask;; i = (i + 1) & b->merge_mask) {
        if (b->merge[i].key == key) return &b->merge[i];
        if (b->merge[i].key == MERGE_FREE) return NULL;
    }
}

/* The merge of pieces l + r at `rank` as a slot; false when a part or the
 * result is not a token (ids cannot express such a merge). `buf` holds
 * 2 * TOK_MAX_PIECE bytes. */
static bool merge_resolve(const tok_vocab *v, const char *l, size_t nl, const char *r, size_t nr, int32_t rank,
                          char *buf, merge_slot *out) {
    if (nl > TOK_MAX_PIECE || nr > TOK_MAX_PIECE) return false;
    int32_t left = tok_find(v, l, nl), right = tok_find(v, r, nr);
    if (left < 0 || right < 0) return false;
    memcpy(buf, l, nl);
    memcpy(buf + nl, r, nr);
    int32_t id = tok_find(v, buf, nl + nr);
    if (id < 0) return false;
    *out = (merge_slot){merge_key(left, right), rank, id};
    return true;
}

/* Builds the table from resolved merges in rank order; a pair listed
 * twice keeps its first (lowest) rank. The slots are random accesses into
 * megabytes, so each is prefetched a few merges ahead. */
static int merges_build(tok_bpe *b, const merge_slot *m, size_t n) {
    uint32_t n_slot = 16;
    while (n_slot < n + n / 2) n_slot <<= 1; /* load factor <= 2/3 */
    b->merge = malloc((size_t)n_slot * sizeof *b->merge);
    if (!b->merge) return HEED_ERR_NOMEM;
    for (uint32_t i = 0; i < n_slot; i++) b->merge[i].key = MERGE_FREE;
    b->merge_mask = n_slot - 1;
    enum { AHEAD = 8 };
    for (size_t k = 0; k < n; k++) {
        if (k + AHEAD < n) __builtin_prefetch(&b->merge[merge_hash(m[k + AHEAD].key) & b->merge_mask], 1);
        uint32_t i = merge_hash(m[k].key) & b->merge_mask;
        while (b->merge[i].key != MERGE_FREE && b->merge[i].key != m[k].key) i = (i + 1) & b->merge_mask;
        if (b->merge[i].key == MERGE_FREE) b->merge[i] = m[k];
    }
    return HEED_OK;
}

/* ------------------------------------------------------------- GGUF load */

/* tokenizer.ggml.pre: absent means "default", as in the reference engine. */
static int gguf_pre(tok_vocab *v, const gguf_file *f, const pre_def **out, char *err, size_t es) {
    const char *key = "tokenizer.ggml.pre";
    gguf_str name = {"default", 7};
    *out = NULL;
    if (gguf_find(f, key) && !gguf_get_str(f, key, &name))
        return tok_fail(HEED_ERR_FORMAT, err, es, "%s: key '%s' is not a string", f->path, key);
    *out = pre_by_name(name.ptr, name.len);
    if (!*out)
        snprintf(v->refusal, sizeof v->refusal, "%s: pre-tokenizer '%.*s' (%s) is not supported", f->path,
                 (int)(name.len > 40 ? 40 : name.len), name.ptr, key);
    return HEED_OK;
}

/* A merge "a b": the first space after the first byte separates the parts
 * (as the reference engine splits), and both are non-empty. */
static bool split_merge(const gguf_str *m, size_t *space) {
    const char *sp = m->len > 1 ? memchr(m->ptr + 1, ' ', m->len - 1) : NULL;
    if (!sp || (uint64_t)(sp - m->ptr) + 1 >= m->len) return false;
    *space = (size_t)(sp - m->ptr);
    return true;
}

static int gguf_merges(tok_bpe *b, const tok_vocab *v, const gguf_kv *kv, const char *path, char *err,
                       size_t es) {
    const char *key = "tokenizer.ggml.merges";
    if (kv->type != GGUF_ARRAY || kv->arr_type != GGUF_STRING || !kv->strs)
        return tok_fail(HEED_ERR_FORMAT, err, es, "%s: key '%s' is not an array of strings", path, key);
    if (kv->arr_n > BPE_MAX_MERGES)
        return tok_fail(HEED_ERR_FORMAT, err, es, "%s: key '%s' has %llu entries (limit %d)", path, key,
                        (unsigned long long)kv->arr_n, BPE_MAX_MERGES);
    char *buf = malloc(2 * TOK_MAX_PIECE);
    merge_slot *m = malloc((kv->arr_n ? kv->arr_n : 1) * sizeof *m);
    int rc = buf && m ? HEED_OK : tok_fail(HEED_ERR_NOMEM, err, es, "out of memory");
    size_t n = 0;
    for (uint64_t i = 0; i < kv->arr_n && !rc; i++) {
        const gguf_str *s = &kv->strs[i];
        size_t sp;
        if (!split_merge(s, &sp))
            rc = tok_fail(HEED_ERR_FORMAT, err, es,
                          "%s: key '%s': entry %llu ('%.*s') is not two pieces separated by a space", path, key,
                          (unsigned long long)i, (int)(s->len > 40 ? 40 : s->len), s->ptr);
        else if (merge_resolve(v, s->ptr, sp, s->ptr + sp + 1, s->len - sp - 1, (int32_t)i, buf, &m[n]))
            n++; /* else skipped: it could not apply to ids (see the file comment) */
    }
    if (!rc && merges_build(b, m, n)) rc = tok_fail(HEED_ERR_NOMEM, err, es, "out of memory");
    free(buf);
    free(m);
    return rc;
}

int tok_bpe_load(tok_vocab *v, const gguf_file *f, char *err, size_t es) {
    const pre_def *pre;
    int rc = gguf_pre(v, f, &pre, err, es);
    if (rc || !pre) return rc;
    const gguf_kv *kv = gguf_find(f, "tokenizer.ggml.merges");
    if (!kv) {
        snprintf(v->refusal, sizeof v->refusal, "%s: key 'tokenizer.ggml.merges' is missing", f->path);
        return HEED_OK;
    }
    tok_bpe *b = calloc(1, sizeof *b);
    if (!b) return tok_fail(HEED_ERR_NOMEM, err, es, "out of memory");
    b->ignore_merges = pre->ignore_merges;
    rc = gguf_merges(b, v, kv, f->path, err, es);
    if (!rc) rc = bpe_compile(b, pre, err, es);
    if (rc) {
        tok_bpe_free(b);
        return rc;
    }
    bpe_init_bytes(b, v);
    v->bpe = b;
    return HEED_OK;
}

/* ---------------------------------------------------------------- encode */

#define SYM_MERGED -1 /* bpe_sym.id once merged into its left neighbour */
#define SYM_NONE -2   /* bpe_sym.id of a byte the vocabulary has no token for */

typedef struct bpe_sym {
    int32_t id;          /* the token this symbol is, or SYM_MERGED / SYM_NONE */
    int32_t prev, next;  /* neighbours in the word, -1 at the ends */
} bpe_sym;

/* A queued merge, valid while `left` is alive, `right` is still its next
 * neighbour and still the token it was (lazy invalidation). */
typedef struct bpe_pair {
    int32_t rank, left, right, right_id, id;
} bpe_pair;

/* One tok_bpe_encode call: the text, its output and the scratch, grown to
 * the longest word seen. */
typedef struct bpe_run {
    const tok_vocab *v;
    const tok_bpe *b;
    const char *text;
    pcre2_match_data *md;
    bpe_sym *sym;     /* (cap) */
    bpe_pair *heap;   /* (3 * cap) min-heap: lowest rank first, ties leftmost */
    char *mapped;     /* (2 * cap) a word in the byte alphabet */
    size_t cap;
    int n_heap;
    int32_t *ids;
    int n_max;
    int *n_tok;
} bpe_run;

static int run_reserve(bpe_run *r, size_t n) {
    if (n <= r->cap) return HEED_OK;
    size_t cap = r->cap ? r->cap : 64;
    while (cap < n) cap *= 2;
    bpe_sym *sym = realloc(r->sym, cap * sizeof *sym);
    if (sym) r->sym = sym;
    bpe_pair *heap = realloc(r->heap, 3 * cap * sizeof *heap);
    if (heap) r->heap = heap;
    char *mapped = realloc(r->mapped, 2 * cap);
    if (mapped) r->mapped = mapped;
    if (!sym || !heap || !mapped) return HEED_ERR_NOMEM;
    r->cap = cap;
    return HEED_OK;
}

static bool pair_before(const bpe_pair *a, const bpe_pair *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(bpe_run *r, bpe_pair p) {
    int i = r->n_heap++;
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!pair_before(&p, &r->heap[parent])) break;
        r->heap[i] = r->heap[parent];
        i = parent;
    }
    r->heap[i] = p;
}

static bpe_pair heap_pop(bpe_run *r) {
    bpe_pair top = r->heap[0], last = r->heap[--r->n_heap];
    int i = 0, n = r->n_heap;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && pair_before(&r->heap[c + 1], &r->heap[c])) c++;
        if (!pair_before(&r->heap[c], &last)) break;
        r->heap[i] = r->heap[c];
        i = c;
    }
    if (n > 0) r->heap[i] = last;
    return top;
}

static void try_pair(bpe_run *r, int32_t left, int32_t right) {
    if (left < 0 || right < 0 || r->sym[left].id < 0 || r->sym[right].id < 0) return;
    const merge_slot *m = merge_find(r->b, r->sym[left].id, r->sym[right].id);
    if (m) heap_push(r, (bpe_pair){m->rank, left, right, r->sym[right].id, m->id});
}

static void merge_all(bpe_run *r) {
    while (r->n_heap > 0) {
        bpe_pair p = heap_pop(r);
        bpe_sym *l = &r->sym[p.left], *rt = &r->sym[p.right];
        if (l->id < 0 || l->next != p.right || rt->id != p.right_id) continue; /* stale */
        l->id = p.id;
        rt->id = SYM_MERGED;
        l->next = rt->next;
        if (rt->next >= 0) r->sym[rt->next].prev = p.left;
        try_pair(r, l->prev, p.left);
        try_pair(r, p.left, l->next);
    }
}

/* The word in the byte alphabet ("Ġthe"), into r->mapped; its length. */
static size_t map_word(const bpe_run *r, const unsigned char *s, size_t n) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        memcpy(r->mapped + m, r->b->byte_utf8[s[i]], r->b->byte_len[s[i]]);
        m += r->b->byte_len[s[i]];
    }
    return m;
}

/* Encodes one word. A byte whose printable character is not a token (a
 * few vocabularies lack some control characters) never merges and is
 * dropped, as both reference engines drop it (HF: unless the model names
 * an unk_token). */
static int encode_word(bpe_run *r, size_t off, size_t n) {
    const unsigned char *s = (const unsigned char *)r->text + off;
    const tok_bpe *b = r->b;
    if (n == 1) {
        if (b->byte_tok[s[0]] >= 0) tok_emit(b->byte_tok[s[0]], r->ids, r->n_max, r->n_tok);
        return HEED_OK;
    }
    if (run_reserve(r, n)) return HEED_ERR_NOMEM;
    if (b->ignore_merges) {
        int32_t id = tok_find(r->v, r->mapped, map_word(r, s, n));
        if (id >= 0) {
            tok_emit(id, r->ids, r->n_max, r->n_tok);
            return HEED_OK;
        }
    }
    for (size_t i = 0; i < n; i++) {
        int32_t id = b->byte_tok[s[i]];
        r->sym[i] = (bpe_sym){id >= 0 ? id : SYM_NONE, (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1};
    }
    r->n_heap = 0;
    for (size_t i = 1; i < n; i++) try_pair(r, (int32_t)i - 1, (int32_t)i);
    merge_all(r);
    for (int32_t i = 0; i >= 0; i = r->sym[i].next)
        if (r->sym[i].id >= 0) tok_emit(r->sym[i].id, r->ids, r->n_max, r->n_tok);
    return HEED_OK;
}

/* The next match of regex `re` in subject s[0..n) at or after `start`:
 * 1 and [*ms, *me); 0 when there is none; HEED_ERR_TOKENIZER when PCRE2
 * gives up (its match or heap limit: pathological text). A JIT stack
 * overflow retries with the interpreter, which backtracks on the heap. */
static int next_match(bpe_run *r, const pcre2_code *re, const char *s, size_t n, size_t start, size_t *ms,
                      size_t *me) {
    uint32_t opt = PCRE2_NO_UTF_CHECK; /* tok_encode validated the whole text */
    int rc = pcre2_match(re, (PCRE2_SPTR)s, n, start, opt, r->md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(re, (PCRE2_SPTR)s, n, start, opt | PCRE2_NO_JIT, r->md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) return HEED_ERR_TOKENIZER;
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(r->md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

/* Splits text[off, off + n) with regex `level` into matches and the gaps
 * between them, each handed to the next level; past the last regex,
 * each piece is a word. */
static int split_level(bpe_run *r, int level, size_t off, size_t n) {
    if (level == r->b->n_re) return encode_word(r, off, n);
    const char *s = r->text + off;
    size_t pos = 0, gap = 0, ms, me;
    int rc, found;
    while (pos < n && (found = next_match(r, r->b->re[level], s, n, pos, &ms, &me)) != 0) {
        if (found < 0) return found;
        if (me == ms) { /* an empty match splits nothing: step over one character */
            pos = ms + 1;
            while (pos < n && ((unsigned char)s[pos] & 0xc0) == 0x80) pos++;
            continue;
        }
        if (ms > gap && (rc = split_level(r, level + 1, off + gap, ms - gap)) != 0) return rc;
        if ((rc = split_level(r, level + 1, off + ms, me - ms)) != 0) return rc;
        gap = pos = me;
    }
    return gap < n ? split_level(r, level + 1, off + gap, n - gap) : HEED_OK;
}

int tok_bpe_encode(const tok_vocab *v, const char *text, size_t len, int32_t *ids, int n_max, int *n_tok) {
    bpe_run r = {.v = v, .b = v->bpe, .text = text, .ids = ids, .n_max = n_max, .n_tok = n_tok};
    /* one pair of offsets suffices: only the whole match is read, and each
     * level reads it before the next level matches */
    r.md = pcre2_match_data_create(1, NULL);
    int rc = r.md ? split_level(&r, 0, 0, len) : HEED_ERR_NOMEM;
    pcre2_match_data_free(r.md);
    free(r.sym);
    free(r.heap);
    free(r.mapped);
    return rc;
}

/* ------------------------------------------------------ tokenizer.json */

#define HF_FLAGS (JSON_DECODE_INT_AS_REAL | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL)
#define HF_SHOW 60 /* bytes of a piece or regex quoted in a message */

/* Loading state: the two files, their parsed trees, the message sink. */
typedef struct hf_ctx {
    char path[512];      /* DIR/tokenizer.json */
    char cfg_path[512];  /* DIR/tokenizer_config.json */
    json_t *root, *cfg;  /* cfg: NULL when the file is absent */
    json_t *model;
    char *err;
    size_t es;
} hf_ctx;

/* "PATH: message" into the error buffer; returns rc. */
__attribute__((format(printf, 4, 5)))
__attribute__((format(printf, 4, 5))) static int hf_fail(hf_ctx *c, int rc, const char *path, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    err_vat(c->err, c->es, rc, path, fmt, ap);
    va_end(ap);
    return rc;
}

/* Parses a JSON file; an absent optional file gives *out = NULL. Only a
 * regular file is read (a FIFO would hang, /dev/zero never end). */
static int hf_parse(hf_ctx *c, const char *path, bool optional, json_t **out) {
    json_error_t je;
    char msg[512];
    uint64_t size;
    *out = NULL;
    int fd = fmap_open_fd(path, &size, msg, sizeof msg);
    if (fd < 0) {
        if (optional && errno == ENOENT) return HEED_OK;
        return tok_fail(HEED_ERR_IO, c->err, c->es, "%s", msg);
    }
    FILE *f = fdopen(fd, "rb"); /* buffered: json_loadfd reads a byte per call */
    if (!f) {
        int e = errno;
        close(fd);
        return hf_fail(c, HEED_ERR_IO, path, "cannot open: %s", strerror(e));
    }
    *out = json_loadf(f, HF_FLAGS, &je);
    fclose(f);
    if (*out) return HEED_OK;
    if (json_error_code(&je) == json_error_out_of_memory)
        return tok_fail(HEED_ERR_NOMEM, c->err, c->es, "out of memory");
    return hf_fail(c, HEED_ERR_FORMAT, path, "invalid JSON at line %d, column %d: %s", je.line, je.column, je.text);
}

/* A JSON number that is an integer (tokenizer.json is read with every
 * number as a double, since tokenizer_config.json holds integers beyond
 * 64 bits); false otherwise. */
static bool hf_int(const json_t *j, long long *out) {
    if (!json_is_number(j)) return false;
    double d = json_number_value(j);
    if (!(d >= -9e15 && d <= 9e15) || d != (double)(long long)d) return false;
    *out = (long long)d;
    return true;
}

/* An optional boolean member: absent or null leaves *out. */
static int hf_bool(hf_ctx *c, const char *path, const json_t *obj, const char *key, const char *name, bool *out) {
    const json_t *j = json_object_get(obj, key);
    if (!j || json_is_null(j)) return HEED_OK;
    if (!json_is_boolean(j)) return hf_fail(c, HEED_ERR_FORMAT, path, "%s is not a boolean", name);
    *out = json_is_true(j);
    return HEED_OK;
}

/* Places piece (s, n) at id, checking the range and that the id is free. */
static int hf_place(hf_ctx *c, gguf_str *pieces, long long n_tok, long long id, const char *s, size_t n,
                    const char *from) {
    if (id < 0 || id >= n_tok)
        return hf_fail(c, HEED_ERR_FORMAT, c->path,
                       "%s: '%.*s' has id %lld, outside 0..%lld (the file holds %lld tokens)", from,
                       (int)(n > HF_SHOW ? HF_SHOW : n), s, id, n_tok - 1, n_tok);
    if (pieces[id].ptr)
        return hf_fail(c, HEED_ERR_FORMAT, c->path, "%s: '%.*s' and '%.*s' both have id %lld", from,
                       (int)(pieces[id].len > HF_SHOW ? HF_SHOW : pieces[id].len), pieces[id].ptr,
                       (int)(n > HF_SHOW ? HF_SHOW : n), s, id);
    pieces[id] = (gguf_str){s, n};
    return HEED_OK;
}

/* Checks added_tokens[i]: an object with an integer id and a string content. */
static int hf_added_entry(hf_ctx *c, const json_t *a, size_t i, long long *id, const json_t **content) {
    *content = json_object_get(a, "content");
    if (!json_is_object(a) || !hf_int(json_object_get(a, "id"), id) || !json_is_string(*content))
        return hf_fail(c, HEED_ERR_FORMAT, c->path,
                       "added_tokens[%zu] is not an object with an integer 'id' and a string 'content'", i);
    return HEED_OK;
}

/* Counts the tokens: model.vocab plus the added tokens it lacks. */
static int hf_count(hf_ctx *c, const json_t *vocab, const json_t *added, long long *n_tok) {
    *n_tok = (long long)json_object_size(vocab);
    for (size_t i = 0; i < json_array_size(added); i++) {
        long long id;
        const json_t *content;
        int rc = hf_added_entry(c, json_array_get(added, i), i, &id, &content);
        if (rc) return rc;
        if (!json_object_getn(vocab, json_string_value(content), json_string_length(content))) (*n_tok)++;
    }
    if (*n_tok == 0 || *n_tok > TOK_MAX_VOCAB)
        return hf_fail(c, HEED_ERR_FORMAT, c->path, "model.vocab holds %lld tokens (allowed: 1..%d)", *n_tok,
                       TOK_MAX_VOCAB);
    return HEED_OK;
}

static int hf_place_vocab(hf_ctx *c, const json_t *vocab, gguf_str *pieces, long long n_tok) {
    const char *key;
    size_t klen;
    json_t *val;
    json_object_keylen_foreach((json_t *)vocab, key, klen, val) {
        long long id;
        if (!hf_int(val, &id))
            return hf_fail(c, HEED_ERR_FORMAT, c->path, "model.vocab: the id of '%.*s' is not an integer",
                           (int)(klen > HF_SHOW ? HF_SHOW : klen), key);
        int rc = hf_place(c, pieces, n_tok, id, key, klen, "model.vocab");
        if (rc) return rc;
    }
    return HEED_OK;
}

/* Added tokens: special ones are control tokens, the others user-defined
 * (as llama.cpp's converter types them). One already in model.vocab must
 * keep its id there. */
static int hf_place_added(hf_ctx *c, const json_t *vocab, const json_t *added, gguf_str *pieces, uint8_t *type,
                          long long n_tok) {
    for (size_t i = 0; i < json_array_size(added); i++) {
        const json_t *a = json_array_get(added, i), *content;
        long long id, known;
        int rc = hf_added_entry(c, a, i, &id, &content);
        bool special = false;
        if (!rc) rc = hf_bool(c, c->path, a, "special", "an added token's 'special'", &special);
        if (rc) return rc;
        const char *s = json_string_value(content);
        size_t n = json_string_length(content);
        const json_t *in_vocab = json_object_getn(vocab, s, n);
        if (in_vocab && hf_int(in_vocab, &known) && known != id)
            return hf_fail(c, HEED_ERR_FORMAT, c->path, "added token '%.*s' has id %lld but model.vocab gives %lld",
                           (int)(n > HF_SHOW ? HF_SHOW : n), s, id, known);
        if (!in_vocab && (rc = hf_place(c, pieces, n_tok, id, s, n, "added_tokens")) != 0) return rc;
        type[id] = special ? TOK_TYPE_CONTROL : TOK_TYPE_USER_DEFINED;
    }
    return HEED_OK;
}

/* model.vocab + added_tokens -> pieces, types, the piece table. Ids must
 * cover 0..N-1 exactly once (N = the number of distinct tokens). */
static int hf_vocab(hf_ctx *c, tok_vocab *v) {
    const json_t *vocab = json_object_get(c->model, "vocab");
    const json_t *added = json_object_get(c->root, "added_tokens");
    if (!vocab) return hf_fail(c, HEED_ERR_FORMAT, c->path, "model.vocab is missing");
    if (!json_is_object(vocab)) return hf_fail(c, HEED_ERR_FORMAT, c->path, "model.vocab is not an object");
    if (added && !json_is_null(added) && !json_is_array(added))
        return hf_fail(c, HEED_ERR_FORMAT, c->path, "added_tokens is not an array");
    long long n_tok;
    int rc = hf_count(c, vocab, added, &n_tok);
    if (rc) return rc;
    gguf_str *pieces = calloc((size_t)n_tok, sizeof *pieces);
    v->type = malloc((size_t)n_tok);
    v->score = calloc((size_t)n_tok, sizeof *v->score);
    if (!pieces || !v->type || !v->score) {
        free(pieces);
        return tok_fail(HEED_ERR_NOMEM, c->err, c->es, "out of memory");
    }
    memset(v->type, TOK_TYPE_NORMAL, (size_t)n_tok);
    rc = hf_place_vocab(c, vocab, pieces, n_tok);
    if (!rc) rc = hf_place_added(c, vocab, added, pieces, v->type, n_tok);
    if (!rc) {
        char where[600];
        snprintf(where, sizeof where, "%s: model.vocab", c->path);
        rc = tok_set_pieces(v, pieces, (uint64_t)n_tok, where, c->err, c->es);
    }
    free(pieces);
    return rc;
}

/* model.merges[i] as two pieces: "a b" (exactly one space, as HF splits)
 * or ["a", "b"]. */
static bool hf_merge_parts(const json_t *m, gguf_str *l, gguf_str *r) {
    if (json_is_array(m)) {
        const json_t *a = json_array_get(m, 0), *b = json_array_get(m, 1);
        if (json_array_size(m) != 2 || !json_is_string(a) || !json_is_string(b)) return false;
        *l = (gguf_str){json_string_value(a), json_string_length(a)};
        *r = (gguf_str){json_string_value(b), json_string_length(b)};
        return true;
    }
    if (!json_is_string(m)) return false;
    const char *s = json_string_value(m);
    size_t n = json_string_length(m);
    const char *sp = memchr(s, ' ', n);
    if (!sp || memchr(sp + 1, ' ', n - (size_t)(sp - s) - 1)) return false;
    *l = (gguf_str){s, (size_t)(sp - s)};
    *r = (gguf_str){sp + 1, n - (size_t)(sp - s) - 1};
    return true;
}

/* Every merge must resolve: HF refuses a file whose merge names a piece
 * the vocabulary lacks, and so does heed. */
static int hf_merges(hf_ctx *c, tok_bpe *b, const tok_vocab *v) {
    const json_t *merges = json_object_get(c->model, "merges");
    if (!merges) return hf_fail(c, HEED_ERR_FORMAT, c->path, "model.merges is missing");
    if (!json_is_array(merges)) return hf_fail(c, HEED_ERR_FORMAT, c->path, "model.merges is not an array");
    size_t n = json_array_size(merges);
    if (n > BPE_MAX_MERGES)
        return hf_fail(c, HEED_ERR_FORMAT, c->path, "model.merges has %zu entries (limit %d)", n, BPE_MAX_MERGES);
    char *buf = malloc(2 * TOK_MAX_PIECE);
    merge_slot *m = malloc((n ? n : 1) * sizeof *m);
    int rc = buf && m ? HEED_OK : tok_fail(HEED_ERR_NOMEM, c->err, c->es, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) {
        gguf_str l, r;
        if (!hf_merge_parts(json_array_get(merges, i), &l, &r) || l.len == 0 || r.len == 0)
            rc = hf_fail(c, HEED_ERR_FORMAT, c->path, "model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", i);
        else if (!merge_resolve(v, l.ptr, l.len, r.ptr, r.len, (int32_t)i, buf, &m[i]))
            rc = hf_fail(c, HEED_ERR_FORMAT, c->path,
                         "model.merges[%zu] ('%.*s' '%.*s'): a part or the result is not in model.vocab", i,
                         (int)(l.len > HF_SHOW ? HF_SHOW : l.len), l.ptr, (int)(r.len > HF_SHOW ? HF_SHOW : r.len),
                         r.ptr);
    }
    if (!rc && merges_build(b, m, n)) rc = tok_fail(HEED_ERR_NOMEM, c->err, c->es, "out of memory");
    free(buf);
    free(m);
    return rc;
}

/* The regex list a pre-tokenizer step stands for. */
typedef struct hf_steps {
    const char *re[BPE_MAX_RE];
    int n;
    bool byte_level;
} hf_steps;

static int hf_add_step(hf_ctx *c, hf_steps *st, const char *re) {
    if (st->n == BPE_MAX_RE - 1)
        return hf_fail(c, HEED_ERR_UNSUPPORTED, c->path, "pre_tokenizer has more steps than heed knows");
    st->re[st->n++] = re;
    return HEED_OK;
}

static int hf_pre_step(hf_ctx *c, const json_t *p, hf_steps *st, int depth);

static int hf_pre_split(hf_ctx *c, const json_t *p, hf_steps *st) {
    const char *re = json_string_value(json_object_get(json_object_get(p, "pattern"), "Regex"));
    const char *behavior = json_string_value(json_object_get(p, "behavior"));
    if (!re) return hf_fail(c, HEED_ERR_UNSUPPORTED, c->path, "pre_tokenizer Split without a Regex pattern");
    if (!behavior || strcmp(behavior, "Isolated") != 0 || json_is_true(json_object_get(p, "invert")))
        return hf_fail(c, HEED_ERR_UNSUPPORTED, c->path, "pre_tokenizer Split '%.*s': only behavior Isolated, "
                       "not inverted, is supported", HF_SHOW, re);
    return hf_add_step(c, st, re);
}

static int hf_pre_byte_level(hf_ctx *c, const json_t *p, hf_steps *st) {
    bool prefix = false, use_regex = true;
    int rc = hf_bool(c, c->path, p, "add_prefix_space", "ByteLevel add_prefix_space", &prefix);
    if (!rc) rc = hf_bool(c, c->path, p, "use_regex", "ByteLevel use_regex", &use_regex);
    if (rc) return rc;
    if (prefix)
        return hf_fail(c, HEED_ERR_UNSUPPORTED, c->path, "pre_tokenizer ByteLevel with add_prefix_space is not "
                       "supported");
    st->byte_level = true;
    return use_regex ? hf_add_step(c, st, RE_GPT2) : HEED_OK;
}

/* One pre_tokenizer entry: Sequence, Split, Digits or ByteLevel. */
static int hf_pre_step(hf_ctx *c, const json_t *p, hf_steps *st, int depth) {
    const char *type = json_string_value(json_object_get(p, "type"));
    if (!type) return hf_fail(c, HEED_ERR_FORMAT, c->path, "a pre_tokenizer has no 'type'");
    if (strcmp(type, "Sequence") == 0 && depth == 0) {
        const json_t *seq = json_object_get(p, "pretokenizers");
        if (!json_is_array(seq))
            return hf_fail(c, HEED_ERR_FORMAT, c->path, "pre_tokenizer Sequence without 'pretokenizers'");
        for (size_t i = 0; i < json_array_size(seq); i++) {
            int rc = hf_pre_step(c, json_array_get(seq, i), st, depth + 1);
            if (rc) return rc;
        }
        return HEED_OK;
    }
    if (strcmp(type, "Split") == 0) return hf_pre_split(c, p, st);
    if (strcmp(type, "ByteLevel") == 0) return hf_pre_byte_level(c, p, st);
    if (strcmp(type, "Digits") == 0)
        return hf_add_step(c, st, json_is_true(json_object_get(p, "individual_digits")) ? "\\p{N}" : "\\p{N}+");
    return hf_fail(c, HEED_ERR_UNSUPPORTED, c->path, "pre_tokenizer '%.40s' is not supported", type);
}

/* Recognises the pre_tokenizer as one of heed's, by its regexes. */
static int hf_pre(hf_ctx *c, tok_bpe *b) {
    const json_t *p = json_object_get(c->root, "pre_tokenizer");
    hf_steps st = {{0}, 0, false};
    if (!json_is_object(p))
        return hf_fail(c, HEED_ERR_UNSUPPORTED, c->path, "no pre_tokenizer: heed reads byte-level BPE only");
    int rc = hf_pre_step(c, p, &st, 0);
    if (rc) return rc;
    if (!st.byte_level)
        return hf_fail(c, HEED_ERR_UNSUPPORTED, c->path, "pre_tokenizer has no ByteLevel step: heed reads "
                       "byte-level BPE only");
    const pre_def *pre = pre_by_regexes(st.re, st.n);
    if (!pre)
        return hf_fail(c, HEED_ERR_UNSUPPORTED, c->path, "pre_tokenizer with %d regex step(s), the first '%.*s', "
                       "is none that heed knows", st.n, HF_SHOW, st.n ? st.re[0] : "");
    return bpe_compile(b, pre, c->err, c->es);
}

/* model: type BPE without word affixes; normalizer: none or NFC. */
static int hf_check_model(hf_ctx *c) {
    const json_t *norm = json_object_get(c->root, "normalizer");
    const char *type = json_string_value(json_object_get(c->model, "type"));
    if (!json_is_object(c->model))
        return hf_fail(c, HEED_ERR_FORMAT, c->path, "'model' is missing or not an object");
    if (!type || strcmp(type, "BPE") != 0)
        return hf_fail(c, HEED_ERR_UNSUPPORTED, c->path, "model.type is '%.40s': heed reads 'BPE'",
                       type ? type : "");
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *a = json_string_value(json_object_get(c->model, affixes[i]));
        if (a && a[0]) return hf_fail(c, HEED_ERR_UNSUPPORTED, c->path, "model.%s is not supported", affixes[i]);
    }
    /* NFC is accepted but not applied, as llama.cpp does: text already in
     * NFC (nearly all text) encodes the same */
    const char *nt = json_string_value(json_object_get(norm, "type"));
    if (norm && !json_is_null(norm) && (!nt || strcmp(nt, "NFC") != 0))
        return hf_fail(c, HEED_ERR_UNSUPPORTED, c->path, "normalizer '%.40s' is not supported", nt ? nt : "?");
    return HEED_OK;
}

/* bos_token / eos_token / unk_token of tokenizer_config.json: a string or
 * {"content": string}; absent or null: -1. */
static int hf_config_token(hf_ctx *c, const tok_vocab *v, const char *key, int32_t *out) {
    const json_t *j = json_object_get(c->cfg, key);
    *out = -1;
    if (!j || json_is_null(j)) return HEED_OK;
    if (json_is_object(j)) j = json_object_get(j, "content");
    if (!json_is_string(j))
        return hf_fail(c, HEED_ERR_FORMAT, c->cfg_path, "%s is neither a string nor {\"content\": string}", key);
    size_t n = json_string_length(j);
    *out = tok_find(v, json_string_value(j), n);
    if (*out < 0)
        return hf_fail(c, HEED_ERR_FORMAT, c->cfg_path, "%s '%.*s' is not in the vocabulary", key,
                       (int)(n > HF_SHOW ? HF_SHOW : n), json_string_value(j));
    return HEED_OK;
}

/* chat_template: a string, or a list of {name, template} (the one named
 * "default"). */
static int hf_chat_template(hf_ctx *c, tok_vocab *v) {
    const json_t *t = json_object_get(c->cfg, "chat_template");
    if (json_is_array(t)) {
        const json_t *pick = NULL;
        for (size_t i = 0; i < json_array_size(t); i++) {
            const char *name = json_string_value(json_object_get(json_array_get(t, i), "name"));
            if (name && strcmp(name, "default") == 0) pick = json_object_get(json_array_get(t, i), "template");
        }
        t = pick;
    }
    if (!t || json_is_null(t)) return HEED_OK;
    if (!json_is_string(t)) return hf_fail(c, HEED_ERR_FORMAT, c->cfg_path, "chat_template is not a string");
    v->chat_template = strdup(json_string_value(t));
    return v->chat_template ? HEED_OK : tok_fail(HEED_ERR_NOMEM, c->err, c->es, "out of memory");
}

/* The token a TemplateProcessing post-processor puts first, or -1
 * (looked for directly and inside a Sequence of processors). */
static int32_t hf_template_first(const tok_vocab *v, const json_t *pp) {
    const char *type = json_string_value(json_object_get(pp, "type"));
    if (type && strcmp(type, "Sequence") == 0) {
        const json_t *list = json_object_get(pp, "processors");
        for (size_t i = 0; i < json_array_size(list); i++) {
            int32_t id = hf_template_first(v, json_array_get(list, i));
            if (id >= 0) return id;
        }
        return -1;
    }
    if (!type || strcmp(type, "TemplateProcessing") != 0) return -1;
    const json_t *first = json_object_get(json_array_get(json_object_get(pp, "single"), 0), "SpecialToken");
    const char *name = json_string_value(json_object_get(first, "id"));
    return name ? tok_find(v, name, strlen(name)) : -1;
}

/* Special ids, add_bos and the chat template (see tok_load_hf). */
static int hf_config(hf_ctx *c, tok_vocab *v) {
    v->bos = v->eos = v->eot = v->unk = v->pad = -1;
    const char *unk = json_string_value(json_object_get(c->model, "unk_token"));
    if (unk) v->unk = tok_find(v, unk, strlen(unk));
    int32_t first = hf_template_first(v, json_object_get(c->root, "post_processor"));
    bool add_bos = false, has_add_bos = json_is_boolean(json_object_get(c->cfg, "add_bos_token"));
    int rc = HEED_OK;
    if (c->cfg) {
        rc = hf_config_token(c, v, "bos_token", &v->bos);
        if (!rc) rc = hf_config_token(c, v, "eos_token", &v->eos);
        if (!rc && json_object_get(c->cfg, "unk_token")) rc = hf_config_token(c, v, "unk_token", &v->unk);
        if (!rc) rc = hf_bool(c, c->cfg_path, c->cfg, "add_bos_token", "add_bos_token", &add_bos);
        if (!rc) rc = hf_chat_template(c, v);
        if (rc) return rc;
    }
    if (v->bos < 0 && first >= 0 && v->type[first] == TOK_TYPE_CONTROL) v->bos = first;
    if (has_add_bos) v->add_bos = add_bos;
    else if (first >= 0) v->add_bos = first == v->bos;
    else v->add_bos = v->bos >= 0 && v->bpe->pre->add_bos;
    if (v->add_bos && v->bos < 0)
        return hf_fail(c, HEED_ERR_FORMAT, c->cfg_path, "add_bos_token is true but there is no bos_token");
    return HEED_OK;
}

static int hf_load(hf_ctx *c, tok_vocab *v) {
    int rc = hf_parse(c, c->path, false, &c->root);
    if (!rc && !json_is_object(c->root)) rc = hf_fail(c, HEED_ERR_FORMAT, c->path, "the top level is not an object");
    if (!rc) rc = hf_parse(c, c->cfg_path, true, &c->cfg);
    if (!rc && c->cfg && !json_is_object(c->cfg))
        rc = hf_fail(c, HEED_ERR_FORMAT, c->cfg_path, "the top level is not an object");
    if (rc) return rc;
    c->model = json_object_get(c->root, "model");
    rc = hf_check_model(c);
    if (!rc) rc = hf_vocab(c, v);
    if (rc) return rc;
    v->bpe = calloc(1, sizeof *v->bpe);
    if (!v->bpe) return tok_fail(HEED_ERR_NOMEM, c->err, c->es, "out of memory");
    rc = hf_bool(c, c->path, c->model, "ignore_merges", "model.ignore_merges", &v->bpe->ignore_merges);
    if (!rc) rc = hf_merges(c, v->bpe, v);
    if (!rc) rc = hf_pre(c, v->bpe);
    if (!rc) rc = hf_config(c, v);
    if (rc) return rc;
    bpe_init_bytes(v->bpe, v);
    return tok_finish(v, c->err, c->es);
}

tok_vocab *tok_load_hf(const char *dir, int *rc_out, char *err, size_t err_size) {
    hf_ctx c = {.err = err, .es = err_size};
    int rc = HEED_OK;
    tok_vocab *v = NULL;
    if (!dir) {
        rc = tok_fail(HEED_ERR_INVALID_ARG, err, err_size, "no folder given");
        goto done;
    }
    if ((size_t)snprintf(c.path, sizeof c.path, "%s/tokenizer.json", dir) >= sizeof c.path ||
        (size_t)snprintf(c.cfg_path, sizeof c.cfg_path, "%s/tokenizer_config.json", dir) >= sizeof c.cfg_path) {
        rc = tok_fail(HEED_ERR_INVALID_ARG, err, err_size, "%.64s...: path too long", dir);
        goto done;
    }
    v = calloc(1, sizeof *v);
    if (!v) {
        rc = tok_fail(HEED_ERR_NOMEM, err, err_size, "out of memory");
        goto done;
    }
    v->kind = TOK_GPT2;
    rc = hf_load(&c, v);
done:
    json_decref(c.root);
    json_decref(c.cfg);
    if (rc_out) *rc_out = rc;
    if (rc) {
        tok_free(v);
        return NULL;
    }
    return v;
}
