/*
 * Tests of byte-level BPE encoding and tokenizer.json loading
 * (src/tok_bpe.c, with the special-token splitting of src/tok.c):
 * llama.cpp's test vectors for every byte-level BPE vocabulary in
 * ../shared/vocab, the golden prompts, special tokens, the Hugging Face
 * twin of tiny-llama3, malformed tokenizer.json files, hand-made
 * vocabularies for the merge rules and the load errors, round trips of
 * random text, and long pathological texts.
 */
#include "testutil.h"

#include <jansson.h>

#include "gguf.h"
#include "heed.h"
#include "tokutil.h"
#include "tok.h"


/* A file of ../shared, loaded; skips the test when the data is absent. */
static loaded load_shared(const char *rel) {
    char path[512];
    if (!tu_shared(rel, path, sizeof path)) skip();
    return load_path(path);
}

static void expect_ids(const tok_vocab *v, const char *text, bool parse_special, const int32_t *want, int n) {
    int32_t ids[64];
    int k = tok_encode_ex(v, text, strlen(text), false, parse_special, ids, 64);
    if (k != n) fail_msg("'%s': %d ids, expected %d", text, k, n);
    for (int i = 0; i < n; i++)
        if (ids[i] != want[i]) fail_msg("'%s': id %d is %d, expected %d", text, i, ids[i], want[i]);
}

static vocab_case g_cases[64];

/* Every case encodes to the expected ids (no BOS, no special parsing) and
 * the ids decode to the text. */
static void check_vectors(const char *name) {
    char rel[128], path[512];
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf", name);
    if (!tu_shared(rel, path, sizeof path)) skip();
    char *inp, *out;
    int n = read_cases(path, g_cases, 64, &inp, &out);
    assert_int_equal(n, 46);
    loaded l = load_path(path);
    assert_true(tok_can_encode(l.v));
    int pass = 0, round = 0;
    static int32_t ids[MAX_IDS];
    static char text[8 * MAX_IDS];
    for (int i = 0; i < n; i++) {
        const vocab_case *c = &g_cases[i];
        int k = tok_encode(l.v, c->text, c->len, false, ids, MAX_IDS);
        if (k == c->n_ids && memcmp(ids, c->ids, (size_t)k * sizeof *ids) == 0) pass++;
        else printf("%s case %d: encode differs (%d ids, expected %d)\n", name, i, k, c->n_ids);
        size_t len = k >= 0 ? decode_ids(l.v, ids, k, text, sizeof text) : 0;
        if (k >= 0 && len == c->len && memcmp(text, c->text, len) == 0) round++;
    }
    printf("%s: %d/%d cases encode exactly, %d/%d round-trip\n", name, pass, n, round, n);
    assert_int_equal(pass, n);
    assert_int_equal(round, n);
    unload(&l);
    free(inp);
    free(out);
}

#define VECTORS(fn, name)            \
    static void fn(void **state) {   \
        (void)state;                 \
        check_vectors(name);         \
    }
VECTORS(test_vectors_llama_bpe, "llama-bpe")
VECTORS(test_vectors_qwen2, "qwen2")
VECTORS(test_vectors_smollm2, "smollm2")
VECTORS(test_vectors_gpt2, "gpt-2")
VECTORS(test_vectors_falcon, "falcon")
VECTORS(test_vectors_mpt, "mpt")
VECTORS(test_vectors_starcoder, "starcoder")
VECTORS(test_vectors_refact, "refact")
VECTORS(test_vectors_deepseek_coder, "deepseek-coder")
VECTORS(test_vectors_deepseek_llm, "deepseek-llm")

/* ------------------------------------------------------------- golden */

/* The prompt of ../shared/golden/MODEL__SLUG.json encodes to its
 * prompt_ids with the model's own add_bos. */
static void check_golden(const char *model, const char *slug) {
    char rel[256], path[512];
    snprintf(rel, sizeof rel, "golden/%s__%s.json", model, slug);
    if (!tu_shared(rel, path, sizeof path)) skip();
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) fail_msg("%s: %s", path, jerr.text);
    const char *prompt = json_string_value(json_object_get(root, "prompt"));
    const json_t *jids = json_object_get(root, "prompt_ids");
    assert_non_null(prompt);
    int n = (int)json_array_size(jids);
    assert_true(n > 0 && n <= 64);
    snprintf(rel, sizeof rel, "models/%s.gguf", model);
    loaded l = load_shared(rel);
    assert_int_equal(tok_add_bos(l.v), json_is_true(json_object_get(root, "add_bos")));
    int32_t ids[64];
    int k = tok_encode(l.v, prompt, strlen(prompt), tok_add_bos(l.v), ids, 64);
    assert_int_equal(k, n);
    for (int i = 0; i < n; i++) assert_int_equal(ids[i], json_integer_value(json_array_get(jids, (size_t)i)));
    unload(&l);
    json_decref(root);
}

static const char *const GOLDEN_MODELS[] = {"tiny-llama3", "tiny-qwen2", "tiny-qwen3", "tiny-smollm2"};

static void test_golden_hello_world(void **state) {
    (void)state;
    loaded l = load_shared("models/tiny-llama3.gguf");
    expect_ids(l.v, "Hello world", false, (const int32_t[]){9906, 1917}, 2);
    int32_t ids[4];
    assert_int_equal(tok_encode(l.v, "Hello world", 11, true, ids, 4), 3);
    assert_int_equal(ids[0], 128000);
    assert_int_equal(ids[1], 9906);
    assert_int_equal(ids[2], 1917);
    unload(&l);
    for (int i = 0; i < 4; i++) check_golden(GOLDEN_MODELS[i], "hello-world");
}

static void test_golden_quick_brown_fox(void **state) {
    (void)state;
    for (int i = 0; i < 4; i++) check_golden(GOLDEN_MODELS[i], "the-quick-brown-fox-jumps-over-the-lazy-dog-the");
}

/* ------------------------------------------------------ special tokens */

static bool contains(const int32_t *ids, int n, int32_t id) {
    for (int i = 0; i < n; i++)
        if (ids[i] == id) return true;
    return false;
}

/* parse_special: [prefix ids] + text-between encoded alone + [suffix] */
static void test_special_llama3(void **state) {
    (void)state;
    loaded l = load_shared("vocab/ggml-vocab-llama-bpe.gguf");
    const char *t = "<|begin_of_text|>hi";
    int32_t ids[32], hi[4];
    int k = tok_encode(l.v, t, strlen(t), false, ids, 32);
    assert_true(k > 2);
    assert_false(contains(ids, k, 128000));
    assert_int_equal(tok_encode_ex(l.v, t, strlen(t), false, false, ids, 32), k);
    assert_int_equal(tok_encode(l.v, "hi", 2, false, hi, 4), 1);
    expect_ids(l.v, t, true, (const int32_t[]){128000, hi[0]}, 2);
    /* with add_bos as well, and control tokens inside and at the end */
    k = tok_encode_ex(l.v, t, strlen(t), true, true, ids, 32);
    assert_int_equal(k, 3);
    assert_int_equal(ids[0], 128000);
    assert_int_equal(ids[1], 128000);
    expect_ids(l.v, "hi<|eot_id|>", true, (const int32_t[]){hi[0], 128009}, 2);
    expect_ids(l.v, "<|start_header_id|>user<|end_header_id|>", true,
               (const int32_t[]){128006, piece_id(l.v, "user"), 128007}, 3);
    /* an unfinished special token is text */
    k = tok_encode_ex(l.v, "<|eot_id", 8, false, true, ids, 32);
    assert_true(k > 1);
    assert_false(contains(ids, k, 128009));
    unload(&l);
}

static void test_special_qwen2(void **state) {
    (void)state;
    loaded l = load_shared("vocab/ggml-vocab-qwen2.gguf");
    const char *t = "<|im_start|>user\nhi<|im_end|>\n";
    int32_t ids[32], mid[16], nl[2];
    int n_mid = tok_encode(l.v, "user\nhi", 7, false, mid, 16);
    assert_int_equal(tok_encode(l.v, "\n", 1, false, nl, 2), 1);
    int k = tok_encode_ex(l.v, t, strlen(t), false, true, ids, 32);
    assert_int_equal(k, n_mid + 3);
    assert_int_equal(ids[0], 151644);
    assert_memory_equal(ids + 1, mid, (size_t)n_mid * sizeof *ids);
    assert_int_equal(ids[n_mid + 1], 151645);
    assert_int_equal(ids[n_mid + 2], nl[0]);
    k = tok_encode(l.v, t, strlen(t), false, ids, 32);
    assert_false(contains(ids, k, 151644));
    /* "<think>" is user-defined (an added token, not special): split out
     * even without parse_special, as HF and llama.cpp do */
    expect_ids(l.v, "<think>", false, (const int32_t[]){151667}, 1);
    expect_ids(l.v, "a<think>b", false, (const int32_t[]){64, 151667, 65}, 3);
    unload(&l);
}

/* SentencePiece: the text after a special token gets the space prefix
 * again, as in the reference engine. */
static void test_special_spm(void **state) {
    (void)state;
    loaded l = load_path("models/stories260K.gguf");
    int32_t once[8], ids[16];
    int n_once = tok_encode(l.v, "Once", 4, false, once, 8);
    assert_true(n_once >= 1);
    int k = tok_encode_ex(l.v, "<s>Once", 7, false, true, ids, 16);
    assert_int_equal(k, 1 + n_once);
    assert_int_equal(ids[0], 1);
    assert_memory_equal(ids + 1, once, (size_t)n_once * sizeof *ids);
    k = tok_encode_ex(l.v, "Once</s>", 8, false, true, ids, 16);
    assert_int_equal(k, n_once + 1);
    assert_int_equal(ids[n_once], 2);
    k = tok_encode(l.v, "<s>Once", 7, false, ids, 16);
    assert_false(contains(ids, k, 1));
    assert_int_equal(tok_encode_ex(l.v, "<s>", 3, false, true, ids, 16), 1); /* no empty run, no prefix */
    assert_int_equal(ids[0], 1);
    assert_int_equal(tok_encode_ex(l.v, "<unk>", 5, false, true, ids, 16), 1);
    assert_int_equal(ids[0], 0);
    unload(&l);
}

/* ----------------------------------------------- hand-made vocabularies */


/*                                 0    1    2    3     4     5      6          7      8        9 */
static const char *const ABC[] = {"a", "b", "c", "ab", "bc", "abc", "\xc4\xa0", "<u>", "<u><v>", "aa"};
static const int32_t ABC_TYPES[] = {1, 1, 1, 1, 1, 1, 1, 4, 4, 1};
#define N_ABC 10

/* A gpt2 vocabulary of ABC with the given pre-tokenizer and merges. */
static mem_vocab abc_vocab(const char *pre, const char *const *merges, int n_merges) {
    gbuf b = {0};
    gb_kv_str(&b, "tokenizer.ggml.model", "gpt2");
    if (pre) gb_kv_str(&b, "tokenizer.ggml.pre", pre);
    gb_kv_strs(&b, "tokenizer.ggml.tokens", ABC, N_ABC);
    gb_kv_i32s(&b, "tokenizer.ggml.token_type", ABC_TYPES, N_ABC);
    if (merges) gb_kv_strs(&b, "tokenizer.ggml.merges", merges, n_merges);
    return mem_load(&b);
}

static void test_bpe_merge_rules(void **state) {
    (void)state;
    /* lowest rank first: b+c (0), then a+bc (2) */
    static const char *const m1[] = {"b c", "a b", "a bc"};
    mem_vocab m = abc_vocab("gpt-2", m1, 3);
    assert_non_null(m.v);
    assert_true(tok_can_encode(m.v));
    expect_ids(m.v, "abc", false, (const int32_t[]){5}, 1);
    expect_ids(m.v, "abcab", false, (const int32_t[]){5, 3}, 2);
    expect_ids(m.v, "cba", false, (const int32_t[]){2, 1, 0}, 3);
    mem_free(&m);
    /* a+b (0) first leaves c alone: no merge (ab, c) */
    static const char *const m2[] = {"a b", "b c", "a bc"};
    m = abc_vocab("gpt-2", m2, 3);
    expect_ids(m.v, "abc", false, (const int32_t[]){3, 2}, 2);
    mem_free(&m);
    /* equal ranks cannot happen, but a pair listed twice keeps its first rank */
    static const char *const m3[] = {"b c", "a b", "b c"};
    m = abc_vocab("gpt-2", m3, 3);
    expect_ids(m.v, "abc", false, (const int32_t[]){0, 4}, 2);
    mem_free(&m);
    /* overlapping pairs of one rank: the leftmost merges first */
    static const char *const m4[] = {"a b", "a a"};
    m = abc_vocab("gpt-2", m4, 2);
    expect_ids(m.v, "ababa", false, (const int32_t[]){3, 3, 0}, 3);
    expect_ids(m.v, "aaa", false, (const int32_t[]){9, 0}, 2);
    expect_ids(m.v, "aaaaa", false, (const int32_t[]){9, 9, 0}, 3);
    mem_free(&m);
}

static void test_bpe_ignore_merges(void **state) {
    (void)state;
    /* "abc" is a token but no merge builds it: Llama 3 takes the word
     * whole, GPT-2 does not */
    static const char *const m1[] = {"a b"};
    mem_vocab m = abc_vocab("llama-bpe", m1, 1);
    expect_ids(m.v, "abc", false, (const int32_t[]){5}, 1);
    expect_ids(m.v, "abcab", false, (const int32_t[]){3, 2, 3}, 3); /* not a token: merges */
    mem_free(&m);
    m = abc_vocab("gpt-2", m1, 1);
    expect_ids(m.v, "abc", false, (const int32_t[]){3, 2}, 2);
    mem_free(&m);
}

static void test_bpe_unresolvable_merges(void **state) {
    (void)state;
    /* parts or results outside the vocabulary are skipped, not fatal */
    static const char *const m1[] = {"a x", "c c", "b c"};
    mem_vocab m = abc_vocab("gpt-2", m1, 3);
    assert_non_null(m.v);
    expect_ids(m.v, "bcc", false, (const int32_t[]){4, 2}, 2);
    /* a byte without a token is dropped, as the reference engines drop it */
    expect_ids(m.v, "d", false, NULL, 0);
    expect_ids(m.v, "dab", false, (const int32_t[]){0, 1}, 2);
    /* user-defined tokens are split out, leftmost-longest; "Ġ" is a space */
    expect_ids(m.v, "<u><v>", false, (const int32_t[]){8}, 1);
    expect_ids(m.v, "a<u>", false, (const int32_t[]){0, 7}, 2);
    expect_ids(m.v, " a", false, (const int32_t[]){6, 0}, 2);
    mem_free(&m);
}

typedef struct bad_case {
    const char *what;
    int rc;
    const char *msg; /* a fragment of the expected message */
} bad_case;

static mem_vocab build_bad_gguf(int which) {
    static const char *const ok[] = {"a b"};
    static const char *const nospace[] = {"a b", "ab"};
    static const char *const edge[] = {" ab"};
    gbuf b = {0};
    gb_kv_str(&b, "tokenizer.ggml.model", "gpt2");
    gb_kv_strs(&b, "tokenizer.ggml.tokens", ABC, N_ABC);
    if (which == 0) gb_kv_u32(&b, "tokenizer.ggml.merges", 3);
    if (which == 1) gb_kv_strs(&b, "tokenizer.ggml.merges", nospace, 2);
    if (which == 2) gb_kv_strs(&b, "tokenizer.ggml.merges", edge, 1);
    if (which >= 3) gb_kv_strs(&b, "tokenizer.ggml.merges", ok, 1);
    if (which == 3) gb_kv_u32(&b, "tokenizer.ggml.pre", 7);
    if (which == 4) gb_kv_u32(&b, "tokenizer.chat_template", 7);
    if (which == 5) gb_kv_str(&b, "tokenizer.chat_template", "{{ messages }}");
    return mem_load(&b);
}

static void test_bpe_load_errors(void **state) {
    (void)state;
    static const bad_case cases[] = {
        {"merges not strings", HEED_ERR_FORMAT, "mem.gguf: key 'tokenizer.ggml.merges' is not an array of strings"},
        {"merge without space", HEED_ERR_FORMAT,
         "mem.gguf: key 'tokenizer.ggml.merges': entry 1 ('ab') is not two pieces separated by a space"},
        {"merge ' ab'", HEED_ERR_FORMAT, "entry 0 (' ab') is not two pieces"},
        {"pre not a string", HEED_ERR_FORMAT, "mem.gguf: key 'tokenizer.ggml.pre' is not a string"},
        {"template not a string", HEED_ERR_FORMAT, "mem.gguf: key 'tokenizer.chat_template' is not a string"},
        {"template", HEED_OK, ""},
    };
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        mem_vocab m = build_bad_gguf(i);
        if (m.rc != cases[i].rc) fail_msg("%s: rc %d, expected %d (%s)", cases[i].what, m.rc, cases[i].rc, m.err);
        if (cases[i].rc != HEED_OK) {
            assert_null(m.v);
            if (!strstr(m.err, cases[i].msg)) fail_msg("%s: message '%s'", cases[i].what, m.err);
        } else {
            assert_string_equal(tok_chat_template(m.v), "{{ messages }}");
        }
        mem_free(&m);
    }
}

/* SmolLM2 lacks tokens for a few bytes (controls 0x04, 0x06, ..., lead
 * bytes F1, F2): they vanish from the ids, as in the reference engines,
 * instead of failing the whole text. */
static void test_bpe_missing_bytes(void **state) {
    (void)state;
    loaded l = load_shared("vocab/ggml-vocab-smollm2.gguf");
    int32_t a[8], b[8];
    int ka = tok_encode(l.v, "a\x04 b", 4, false, a, 8), kb = tok_encode(l.v, "a b", 3, false, b, 8);
    assert_int_equal(ka, kb);
    assert_memory_equal(a, b, (size_t)ka * sizeof *a);
    assert_int_equal(tok_encode(l.v, "\x04\x06", 2, false, a, 8), 0);
    /* U+80000 (F2 80 80 80): the lead byte has no token, the rest do */
    ka = tok_encode(l.v, "\xf2\x80\x80\x80", 4, false, a, 8);
    assert_true(ka > 0);
    char out[16];
    assert_int_equal(decode_ids(l.v, a, ka, out, sizeof out), 3);
    assert_memory_equal(out, "\x80\x80\x80", 3);
    unload(&l);
}

/* An unknown pre-tokenizer loads (ids still decode) but does not encode. */
static void test_bpe_unknown_pre(void **state) {
    (void)state;
    static const char *const m1[] = {"a b"};
    mem_vocab m = abc_vocab("no-such-pre", m1, 1);
    assert_non_null(m.v);
    assert_false(tok_can_encode(m.v));
    assert_string_equal(tok_encode_refusal(m.v),
                        "mem.gguf: pre-tokenizer 'no-such-pre' (tokenizer.ggml.pre) is not supported");
    int32_t ids[4];
    assert_int_equal(tok_encode(m.v, "ab", 2, false, ids, 4), HEED_ERR_TOKENIZER);
    char buf[8];
    assert_int_equal(tok_bytes(m.v, 3, buf, sizeof buf), 2);
    assert_null(tok_chat_template(m.v));
    mem_free(&m);
    /* no pre key: llama.cpp's "default" */
    m = abc_vocab(NULL, m1, 1);
    assert_true(tok_can_encode(m.v));
    expect_ids(m.v, "ab", false, (const int32_t[]){3}, 1);
    mem_free(&m);
}

/* ------------------------------------------------------ tokenizer.json */

static void test_hf_equivalence(void **state) {
    (void)state;
    char dir[512], err[256];
    if (!tu_shared("models/hf-tiny-llama3/tokenizer.json", dir, sizeof dir)) skip();
    *strrchr(dir, '/') = '\0';
    int rc = -1;
    tok_vocab *h = tok_load_hf(dir, &rc, err, sizeof err);
    if (!h) fail_msg("tok_load_hf: %s", err);
    assert_int_equal(rc, HEED_OK);
    loaded g = load_shared("models/tiny-llama3.gguf");
    assert_int_equal(tok_n_vocab(h), tok_n_vocab(g.v));
    for (int32_t id = 0; id < tok_n_vocab(g.v); id++) {
        if (strcmp(tok_piece(h, id), tok_piece(g.v, id)) != 0) fail_msg("id %d: pieces differ", id);
        char lh[256], lg[256];
        tok_label(h, id, lh, sizeof lh);
        tok_label(g.v, id, lg, sizeof lg);
        if (strcmp(lh, lg) != 0) fail_msg("id %d: labels '%s' and '%s'", id, lh, lg);
        assert_int_equal(tok_is_eog(h, id), tok_is_eog(g.v, id));
    }
    assert_int_equal(tok_bos(h), 128000);
    assert_int_equal(tok_eos(h), tok_eos(g.v));
    assert_true(tok_add_bos(h));
    assert_string_equal(tok_model_name(h), "gpt2");
    assert_non_null(tok_chat_template(g.v));
    assert_string_equal(tok_chat_template(h), tok_chat_template(g.v));
    int32_t ids[8];
    assert_int_equal(tok_encode(h, "Hello world", 11, tok_add_bos(h), ids, 8), 3);
    assert_memory_equal(ids, ((const int32_t[]){128000, 9906, 1917}), 3 * sizeof *ids);
    /* every llama-bpe test string encodes alike */
    char vpath[512];
    if (tu_shared("vocab/ggml-vocab-llama-bpe.gguf", vpath, sizeof vpath)) {
        char *inp, *out;
        int n = read_cases(vpath, g_cases, 64, &inp, &out), same = 0;
        static int32_t a[MAX_IDS], b[MAX_IDS];
        for (int i = 0; i < n; i++) {
            int ka = tok_encode_ex(h, g_cases[i].text, g_cases[i].len, false, true, a, MAX_IDS);
            int kb = tok_encode_ex(g.v, g_cases[i].text, g_cases[i].len, false, true, b, MAX_IDS);
            same += ka == kb && ka == g_cases[i].n_ids && memcmp(a, b, (size_t)ka * sizeof *a) == 0;
        }
        printf("hf-tiny-llama3: %d/%d llama-bpe cases encode as the GGUF\n", same, n);
        assert_int_equal(same, n);
        free(inp);
        free(out);
    }
    unload(&g);
    tok_free(h);
}

/* The byte of GPT-2's alphabet that code point i (0..255 in byte order)
 * stands for, written as its piece. */
static void byte_piece(int b, char *out) {
    int k = 0, cp = b;
    bool printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    if (!printable) {
        for (int c = 0; c < b; c++)
            k += !((c >= 0x21 && c <= 0x7e) || (c >= 0xa1 && c <= 0xac) || (c >= 0xae && c <= 0xff));
        cp = 0x100 + k;
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

/* A small valid byte-level tokenizer.json: the 256 byte pieces (id =
 * byte), then "Ġt" 256, "he" 257, "Ġthe" 258; added <|bos|> 259 (special)
 * and <tool> 260 (not special). */
static json_t *hf_small(void) {
    json_t *vocab = json_object();
    for (int b = 0; b < 256; b++) {
        char p[4];
        byte_piece(b, p);
        json_object_set_new(vocab, p, json_integer(b));
    }
    json_object_set_new(vocab, "\xc4\xa0t", json_integer(256));
    json_object_set_new(vocab, "he", json_integer(257));
    json_object_set_new(vocab, "\xc4\xa0the", json_integer(258));
    json_t *model = json_pack("{s:s, s:o, s:[s, s, s], s:b}", "type", "BPE", "vocab", vocab, "merges",
                              "\xc4\xa0 t", "h e", "\xc4\xa0t he", "ignore_merges", 0);
    json_t *added = json_pack("[{s:i, s:s, s:b}, {s:i, s:s, s:b}]", "id", 259, "content", "<|bos|>", "special", 1,
                              "id", 260, "content", "<tool>", "special", 0);
    json_t *pre = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 1,
                            "use_regex", 1);
    json_t *root = json_pack("{s:s, s:o, s:n, s:o, s:o}", "version", "1.0", "added_tokens", added, "normalizer",
                             "pre_tokenizer", pre, "model", model);
    assert_non_null(root);
    return root;
}

static json_t *hf_small_config(void) {
    return json_pack("{s:s, s:{s:s}, s:b, s:s}", "bos_token", "<|bos|>", "eos_token", "content", "<|bos|>",
                     "add_bos_token", 1, "chat_template", "{{ x }}");
}

typedef struct hf_dir {
    char path[64];
    char tok[128], cfg[128];
} hf_dir;

static void hf_dir_make(hf_dir *d) {
    strcpy(d->path, "/tmp/heed_tok_bpe_XXXXXX");
    assert_non_null(mkdtemp(d->path));
    snprintf(d->tok, sizeof d->tok, "%s/tokenizer.json", d->path);
    snprintf(d->cfg, sizeof d->cfg, "%s/tokenizer_config.json", d->path);
}

static void hf_dir_remove(hf_dir *d) {
    unlink(d->tok);
    unlink(d->cfg);
    rmdir(d->path);
}

static void write_text(const char *path, const char *s, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(s, 1, n, f), n);
    fclose(f);
}

static void write_json(const char *path, const json_t *j) {
    char *s = json_dumps(j, JSON_INDENT(1));
    assert_non_null(s);
    write_text(path, s, strlen(s));
    free(s);
}

static void test_hf_small(void **state) {
    (void)state;
    hf_dir d;
    hf_dir_make(&d);
    json_t *root = hf_small(), *cfg = hf_small_config();
    write_json(d.tok, root);
    write_json(d.cfg, cfg);
    char err[256];
    int rc = -1;
    tok_vocab *v = tok_load_hf(d.path, &rc, err, sizeof err);
    if (!v) fail_msg("tok_load_hf: %s", err);
    assert_int_equal(tok_n_vocab(v), 261);
    assert_int_equal(tok_bos(v), 259);
    assert_int_equal(tok_eos(v), 259);
    assert_true(tok_add_bos(v));
    assert_string_equal(tok_chat_template(v), "{{ x }}");
    expect_ids(v, " the", false, (const int32_t[]){258}, 1);
    expect_ids(v, "the", false, (const int32_t[]){'t', 257}, 2);
    expect_ids(v, "<tool>", false, (const int32_t[]){260}, 1);    /* not special: always split */
    expect_ids(v, "<|bos|>", true, (const int32_t[]){259}, 1);
    int32_t ids[16];
    int k = tok_encode(v, "<|bos|>", 7, false, ids, 16);
    assert_int_equal(k, 7); /* as text: one token per byte here */
    assert_false(contains(ids, k, 259));
    tok_free(v);
    /* without tokenizer_config.json: no BOS, nothing added */
    unlink(d.cfg);
    v = tok_load_hf(d.path, &rc, err, sizeof err);
    if (!v) fail_msg("tok_load_hf without config: %s", err);
    assert_int_equal(tok_bos(v), -1);
    assert_false(tok_add_bos(v));
    assert_null(tok_chat_template(v));
    tok_free(v);
    /* merges as pairs, and a TemplateProcessing post-processor adding BOS */
    json_t *model = json_object_get(root, "model");
    json_object_set_new(model, "merges", json_pack("[[s, s], [s, s], [s, s]]", "\xc4\xa0", "t", "h", "e",
                                                   "\xc4\xa0t", "he"));
    json_object_set_new(root, "post_processor",
                        json_pack("{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}]}", "type", "TemplateProcessing",
                                  "single", "SpecialToken", "id", "<|bos|>", "type_id", 0, "Sequence", "id", "A",
                                  "type_id", 0));
    write_json(d.tok, root);
    v = tok_load_hf(d.path, &rc, err, sizeof err);
    if (!v) fail_msg("tok_load_hf with pairs: %s", err);
    assert_int_equal(tok_bos(v), 259);
    assert_true(tok_add_bos(v));
    expect_ids(v, " the", false, (const int32_t[]){258}, 1);
    tok_free(v);
    /* the pre-tokenizers of Llama 3 and Qwen2 (Split + ByteLevel without
     * regex) and of SmolLM2 (Digits + ByteLevel) are recognised */
    static const char *const split[] = {
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
        "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
        "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
        "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
    };
    json_object_set_new(json_object_get(model, "vocab"), "12", json_integer(261));
    json_array_append_new(json_object_get(model, "merges"), json_pack("[s, s]", "1", "2"));
    for (int p = 0; p < 3; p++) {
        json_t *pre = p < 2 ? json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b}]}", "type", "Sequence",
                                        "pretokenizers", "type", "Split", "pattern", "Regex", split[p], "behavior",
                                        "Isolated", "invert", 0, "type", "ByteLevel", "add_prefix_space", 0,
                                        "use_regex", 0)
                            : json_pack("{s:s, s:[{s:s, s:b}, {s:s, s:b, s:b}]}", "type", "Sequence",
                                        "pretokenizers", "type", "Digits", "individual_digits", 1, "type",
                                        "ByteLevel", "add_prefix_space", 0, "use_regex", 1);
        json_object_set_new(root, "pre_tokenizer", pre);
        write_json(d.tok, root);
        v = tok_load_hf(d.path, &rc, err, sizeof err);
        if (!v) fail_msg("pre-tokenizer %d: %s", p, err);
        /* digits: in threes (Llama 3: "123" "4" -> 12 3 4), one by one
         * (Qwen2, SmolLM2: 1 2 3 4) */
        int32_t got[8];
        assert_int_equal(tok_encode(v, "1234", 4, false, got, 8), p == 0 ? 3 : 4);
        assert_int_equal(got[0], p == 0 ? 261 : '1');
        tok_free(v);
    }
    json_decref(root);
    json_decref(cfg);
    hf_dir_remove(&d);
}

/* One malformed folder: tokenizer.json and tokenizer_config.json as the
 * case makes them. */
static void hf_bad_case(hf_dir *d, int which) {
    json_t *root = hf_small(), *cfg = hf_small_config();
    json_t *model = json_object_get(root, "model"), *vocab = json_object_get(model, "vocab");
    switch (which) {
    case 0: break; /* truncated below */
    case 1: json_object_del(model, "vocab"); break;
    case 2: json_object_set_new(vocab, "he", json_integer(99999)); break;
    case 3: json_object_set_new(model, "merges", json_object()); break;
    case 4: json_array_set_new(json_object_get(model, "merges"), 0, json_integer(5)); break;
    case 5: json_array_set_new(json_object_get(model, "merges"), 2, json_string("\xc4\xa0the x")); break;
    case 6: json_object_set_new(vocab, "he", json_integer(0)); break;
    case 7: json_object_set_new(cfg, "bos_token", json_string("<nope>")); break;
    case 8: break; /* config not JSON, below */
    case 9: json_object_set_new(model, "type", json_string("WordPiece")); break;
    case 10:
        json_object_set_new(root, "pre_tokenizer",
                            json_pack("{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b}]}", "type", "Sequence",
                                      "pretokenizers", "type", "Split", "pattern", "Regex", "\\w+", "behavior",
                                      "Isolated", "invert", 0, "type", "ByteLevel", "add_prefix_space", 0,
                                      "use_regex", 0));
        break;
    case 11: json_object_set_new(root, "pre_tokenizer", json_pack("{s:s}", "type", "Metaspace")); break;
    case 12: json_object_set_new(vocab, "he", json_string("x")); break;
    case 13: json_object_set_new(json_array_get(json_object_get(root, "added_tokens"), 1), "content",
                                 json_string("he")); break;
    case 14: json_object_set_new(cfg, "add_bos_token", json_string("yes")); break;
    case 15: json_object_set_new(model, "vocab", json_array()); break;
    case 16: json_object_set_new(model, "merges", json_pack("[s]", "a b c")); break;
    case 17: json_object_set_new(root, "normalizer", json_pack("{s:s}", "type", "NFKC")); break;
    default: break;
    }
    char *s = json_dumps(root, JSON_INDENT(1));
    assert_non_null(s);
    write_text(d->tok, s, which == 0 ? strlen(s) * 2 / 3 : strlen(s));
    free(s);
    if (which == 8) write_text(d->cfg, "{\"bos_token\": ", 14);
    else write_json(d->cfg, cfg);
    json_decref(root);
    json_decref(cfg);
}

static void test_hf_malformed(void **state) {
    (void)state;
    static const bad_case cases[] = {
        {"truncated", HEED_ERR_FORMAT, "tokenizer.json: invalid JSON at line "},
        {"no vocab", HEED_ERR_FORMAT, "tokenizer.json: model.vocab is missing"},
        {"id out of range", HEED_ERR_FORMAT,
         "tokenizer.json: model.vocab: 'he' has id 99999, outside 0..260 (the file holds 261 tokens)"},
        {"merges type", HEED_ERR_FORMAT, "tokenizer.json: model.merges is not an array"},
        {"merge entry type", HEED_ERR_FORMAT,
         "tokenizer.json: model.merges[0] is neither \"a b\" nor [\"a\", \"b\"]"},
        {"merge result", HEED_ERR_FORMAT,
         "tokenizer.json: model.merges[2] ('\xc4\xa0the' 'x'): a part or the result is not in model.vocab"},
        {"duplicate id", HEED_ERR_FORMAT, "both have id 0"},
        {"bos not in vocab", HEED_ERR_FORMAT, "tokenizer_config.json: bos_token '<nope>' is not in the vocabulary"},
        {"config truncated", HEED_ERR_FORMAT, "tokenizer_config.json: invalid JSON at line 1"},
        {"wordpiece", HEED_ERR_UNSUPPORTED, "tokenizer.json: model.type is 'WordPiece': heed reads 'BPE'"},
        {"unknown regex", HEED_ERR_UNSUPPORTED, "the first '\\w+', is none that heed knows"},
        {"metaspace", HEED_ERR_UNSUPPORTED, "tokenizer.json: pre_tokenizer 'Metaspace' is not supported"},
        {"id not integer", HEED_ERR_FORMAT, "tokenizer.json: model.vocab: the id of 'he' is not an integer"},
        {"added id mismatch", HEED_ERR_FORMAT,
         "tokenizer.json: added token 'he' has id 260 but model.vocab gives 257"},
        {"add_bos type", HEED_ERR_FORMAT, "tokenizer_config.json: add_bos_token is not a boolean"},
        {"vocab type", HEED_ERR_FORMAT, "tokenizer.json: model.vocab is not an object"},
        {"merge with two spaces", HEED_ERR_FORMAT, "model.merges[0] is neither"},
        {"normalizer", HEED_ERR_UNSUPPORTED, "tokenizer.json: normalizer 'NFKC' is not supported"},
    };
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        hf_dir d;
        hf_dir_make(&d);
        hf_bad_case(&d, i);
        char err[512] = "";
        int rc = 0;
        tok_vocab *v = tok_load_hf(d.path, &rc, err, sizeof err);
        if (v || rc != cases[i].rc) fail_msg("%s: rc %d, expected %d (%s)", cases[i].what, rc, cases[i].rc, err);
        if (!strstr(err, cases[i].msg)) fail_msg("%s: message '%s'", cases[i].what, err);
        if (strncmp(err, d.path, strlen(d.path)) != 0)
            fail_msg("%s: message names no file: '%s'", cases[i].what, err);
        hf_dir_remove(&d);
    }
    /* a folder without tokenizer.json */
    char err[512];
    int rc = 0;
    assert_null(tok_load_hf("/nonexistent/heed", &rc, err, sizeof err));
    assert_int_equal(rc, HEED_ERR_IO);
    assert_non_null(strstr(err, "/nonexistent/heed/tokenizer.json: cannot open"));
}

/* The real tokenizer.json cut in the middle: jansson's message and line. */
static void test_hf_truncated_real(void **state) {
    (void)state;
    char path[512];
    if (!tu_shared("models/hf-tiny-llama3/tokenizer.json", path, sizeof path)) skip();
    size_t n;
    char *s = slurp(path, &n);
    assert_non_null(s);
    hf_dir d;
    hf_dir_make(&d);
    write_text(d.tok, s, n / 2);
    char err[512];
    int rc = 0;
    assert_null(tok_load_hf(d.path, &rc, err, sizeof err));
    assert_int_equal(rc, HEED_ERR_FORMAT);
    assert_non_null(strstr(err, "tokenizer.json: invalid JSON at line "));
    printf("truncated tokenizer.json: %s\n", err);
    free(s);
    hf_dir_remove(&d);
}

/* ------------------------------------------------------------- random */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static size_t put_cp(char *buf, uint32_t cp) {
    if (cp < 0x80) {
        buf[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        buf[0] = (char)(0xc0 | cp >> 6);
        buf[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        buf[0] = (char)(0xe0 | cp >> 12);
        buf[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        buf[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    buf[0] = (char)(0xf0 | cp >> 18);
    buf[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    buf[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    buf[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* Random valid UTF-8 text from pieces that exercise the pre-tokenizers:
 * words, runs of spaces and newlines, digits, apostrophes, punctuation,
 * accented and CJK letters, emoji (with ZWJ), and any code point. */
static size_t random_text(char *buf, int n_pieces) {
    static const char *const bits[] = {
        "the", "Hello", "don't", "I'M", "we'll", "'s", "  ", "   ", "\n", "\n\n", "\t", "\r\n", " \n ", "...",
        "!!", "(", ")", "\"", "-", "$", "3", "42", "1234567", "\xc2\xbd", "caf\xc3\xa9", "\xc3\x84pfel",
        "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", "\xd0\xbd\xd0\xb5\xd1\x89\xd0\xbe", "\xf0\x9f\xa6\x99",
        "\xf0\x9f\x98\xb6\xe2\x80\x8d\xf0\x9f\x8c\xab\xef\xb8\x8f", "e\xcc\x81", "\xc2\xa0", "\xe3\x80\x80",
        "C\xe1\xbb\xadu", "<|", "|>", " ", " ",
    };
    size_t n = 0;
    for (int i = 0; i < n_pieces; i++) {
        uint32_t r = rnd() % 10;
        if (r < 7) {
            const char *b = bits[rnd() % (sizeof bits / sizeof bits[0])];
            memcpy(buf + n, b, strlen(b));
            n += strlen(b);
        } else if (r < 9) {
            buf[n++] = (char)(0x20 + rnd() % 0x5f);
        } else {
            /* SmolLM2 has no token for some C0 controls and for the lead
             * bytes F1, F2 of planes 4-11 (unassigned); such bytes are
             * dropped (test_bpe_missing_bytes), so they cannot round-trip */
            uint32_t cp = rnd() % 0x40000;
            if ((cp >= 0xd800 && cp <= 0xdfff) || cp < 0x20) cp = 'x';
            n += put_cp(buf + n, cp);
        }
    }
    return n;
}

static void check_round_trip(const char *name) {
    char rel[128];
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf", name);
    loaded l = load_shared(rel);
    static char in[2048], out[16384];
    static int32_t ids[2048];
    int iters = 1500;
    for (int it = 0; it < iters; it++) {
        size_t n = random_text(in, 1 + (int)(rnd() % 40));
        int k = tok_encode(l.v, in, n, false, ids, 2048);
        if (k < 0 || k > 2048) fail_msg("%s: encode of %zu bytes gave %d", name, n, k);
        size_t len = decode_ids(l.v, ids, k, out, sizeof out);
        if (len != n || memcmp(in, out, n) != 0) {
            for (size_t i = 0; i < n; i++) printf("%02x%s", (unsigned char)in[i], i + 1 < n ? " " : "\n");
            for (size_t i = 0; i < len; i++) printf("%02x%s", (unsigned char)out[i], i + 1 < len ? " " : "\n");
            fail_msg("%s: iteration %d does not round-trip", name, it);
        }
    }
    /* invalid UTF-8 is refused, never crashes */
    static const unsigned char pick[] = {'a', ' ', 0x80, 0xbf, 0xc3, 0xe2, 0xed, 0xf0, 0xf4, 0xff, 0xc0};
    int refused = 0;
    for (int it = 0; it < 3000; it++) {
        size_t n = 1 + rnd() % 24;
        for (size_t i = 0; i < n; i++) in[i] = (char)(rnd() % 2 ? pick[rnd() % sizeof pick] : (unsigned char)rnd());
        int k = tok_encode_ex(l.v, in, n, false, it % 2, ids, 2048);
        assert_true(k >= 0 || k == HEED_ERR_INVALID_ARG);
        refused += k == HEED_ERR_INVALID_ARG;
    }
    printf("%s: %d random texts round-trip; %d/3000 random byte strings refused as invalid UTF-8\n", name, iters,
           refused);
    assert_true(refused > 1000);
    unload(&l);
}

static void test_round_trip_llama_bpe(void **state) {
    (void)state;
    check_round_trip("llama-bpe");
}

static void test_round_trip_qwen2(void **state) {
    (void)state;
    check_round_trip("qwen2");
}

static void test_round_trip_smollm2(void **state) {
    (void)state;
    check_round_trip("smollm2");
}

/* ------------------------------------------------------------ long texts */

/* Long runs that make regexes backtrack or BPE words huge: each encodes
 * and round-trips; beyond 1 MiB is refused. */
static void test_long_texts(void **state) {
    (void)state;
    loaded l = load_shared("vocab/ggml-vocab-llama-bpe.gguf");
    size_t n = 1 << 18;
    char *in = malloc((1 << 20) + 1), *out = malloc((1 << 20) + 1);
    int32_t *ids = malloc(sizeof *ids << 20);
    assert_true(in && out && ids);
    static const char *const fills[] = {" ", "a", "7", "\n", " \n", "\t ", "!", "\xe6\x97\xa5", "a ", "'s"};
    for (size_t f = 0; f < sizeof fills / sizeof fills[0]; f++) {
        size_t flen = strlen(fills[f]), len = n / flen * flen;
        for (size_t i = 0; i < len; i += flen) memcpy(in + i, fills[f], flen);
        int k = tok_encode(l.v, in, len, false, ids, 1 << 20);
        if (k <= 0) fail_msg("fill %zu: %d", f, k);
        size_t got = 0;
        for (int i = 0; i < k; i++) {
            int b = tok_bytes(l.v, ids[i], out + got, (1 << 20) + 1 - got);
            assert_true(b >= 0);
            got += (size_t)b;
        }
        if (got != len || memcmp(in, out, len) != 0) fail_msg("fill %zu does not round-trip", f);
    }
    memset(in, 'x', 1 << 20);
    assert_true(tok_encode(l.v, in, 1 << 20, false, ids, 1 << 20) > 0);
    assert_int_equal(tok_encode(l.v, in, (1 << 20) + 1, false, ids, 1 << 20), HEED_ERR_INVALID_ARG);
    free(in);
    free(out);
    free(ids);
    unload(&l);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors_llama_bpe),
        cmocka_unit_test(test_vectors_qwen2),
        cmocka_unit_test(test_vectors_smollm2),
        cmocka_unit_test(test_vectors_gpt2),
        cmocka_unit_test(test_vectors_falcon),
        cmocka_unit_test(test_vectors_mpt),
        cmocka_unit_test(test_vectors_starcoder),
        cmocka_unit_test(test_vectors_refact),
        cmocka_unit_test(test_vectors_deepseek_coder),
        cmocka_unit_test(test_vectors_deepseek_llm),
        cmocka_unit_test(test_golden_hello_world),
        cmocka_unit_test(test_golden_quick_brown_fox),
        cmocka_unit_test(test_special_llama3),
        cmocka_unit_test(test_special_qwen2),
        cmocka_unit_test(test_special_spm),
        cmocka_unit_test(test_bpe_merge_rules),
        cmocka_unit_test(test_bpe_ignore_merges),
        cmocka_unit_test(test_bpe_unresolvable_merges),
        cmocka_unit_test(test_bpe_missing_bytes),
        cmocka_unit_test(test_bpe_load_errors),
        cmocka_unit_test(test_bpe_unknown_pre),
        cmocka_unit_test(test_hf_equivalence),
        cmocka_unit_test(test_hf_small),
        cmocka_unit_test(test_hf_malformed),
        cmocka_unit_test(test_hf_truncated_real),
        cmocka_unit_test(test_round_trip_llama_bpe),
        cmocka_unit_test(test_round_trip_qwen2),
        cmocka_unit_test(test_round_trip_smollm2),
        cmocka_unit_test(test_long_texts),
    };
    return cmocka_run_group_tests_name("tok_bpe", tests, NULL, NULL);
}
