/*
 * Tests of the tokenizer (src/tok.c): the bundled stories260K vocabulary,
 * llama.cpp's tokenizer test vectors in ../shared/vocab (SentencePiece
 * encode + decode, byte-level BPE decode; BPE encoding is in
 * test_tok_bpe.c), labels of each family, hand-made vocabularies for the
 * merge rules and the load errors, the streaming UTF-8 assembler, and a
 * bounded random loop.
 */
#include "testutil.h"

#include <jansson.h>

#include "gguf.h"
#include "heed.h"
#include "tokutil.h"
#include "tok.h"

#define STORIES "models/stories260K.gguf"

static void assert_label(const tok_vocab *v, int32_t id, const char *want) {
    char buf[128];
    int n = tok_label(v, id, buf, sizeof buf);
    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(buf, want);
}

/* An independent strict UTF-8 check (code point arithmetic, not tables). */
static bool valid_utf8(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + (size_t)len > n) return false;
        uint32_t cp = len == 1 ? c : c & (0x3fu >> (len - 1));
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return false;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
        i += (size_t)len;
    }
    return true;
}

/* ---------------------------------------------------------- stories260K */

static void test_stories_once_upon(void **state) {
    (void)state;
    loaded l = load_path(STORIES);
    assert_string_equal(tok_model_name(l.v), "llama");
    assert_int_equal(tok_n_vocab(l.v), 512);
    assert_true(tok_can_encode(l.v));
    assert_true(tok_add_bos(l.v));
    assert_true(tok_add_space_prefix(l.v));
    assert_int_equal(tok_bos(l.v), 1);
    assert_int_equal(tok_eos(l.v), 2);
    assert_int_equal(tok_eot(l.v), -1);
    const char *text = "Once upon a time";
    int32_t ids[16];
    const int32_t want[5] = {1, 403, 407, 261, 378};
    assert_int_equal(tok_encode(l.v, text, strlen(text), true, ids, 16), 5);
    assert_memory_equal(ids, want, sizeof want);
    assert_int_equal(tok_encode(l.v, text, strlen(text), false, ids, 16), 4);
    assert_memory_equal(ids, want + 1, 4 * sizeof *ids);
    /* a short buffer: the full count comes back, nothing is written past n_max */
    int32_t few[3] = {-7, -7, -7};
    assert_int_equal(tok_encode(l.v, text, strlen(text), true, few, 2), 5);
    assert_int_equal(few[0], 1);
    assert_int_equal(few[1], 403);
    assert_int_equal(few[2], -7);
    assert_int_equal(tok_encode(l.v, text, strlen(text), true, NULL, 0), 5);
    /* the text is taken by length, not up to a NUL */
    assert_int_equal(tok_encode(l.v, "Once upon", 4, false, ids, 16), 1);
    assert_int_equal(ids[0], 403);
    unload(&l);
}

static void test_stories_lily_fixture(void **state) {
    (void)state;
    json_error_t jerr;
    json_t *root = json_load_file("tests/fixtures/stories260K__lily-and-ben-went-to-the-park-lily.json", 0, &jerr);
    if (!root) fail_msg("fixture: %s", jerr.text);
    const char *prompt = json_string_value(json_object_get(root, "prompt"));
    json_t *jids = json_object_get(root, "prompt_ids");
    assert_non_null(prompt);
    assert_true(json_is_array(jids));
    int n = (int)json_array_size(jids);
    int32_t want[64];
    assert_true(n > 0 && n <= 64);
    for (int i = 0; i < n; i++) want[i] = (int32_t)json_integer_value(json_array_get(jids, (size_t)i));

    loaded l = load_path(STORIES);
    int32_t ids[64];
    assert_int_equal(tok_encode(l.v, prompt, strlen(prompt), true, ids, 64), n);
    assert_memory_equal(ids, want, (size_t)n * sizeof *ids);
    /* BOS gives no bytes; the first word keeps the space of the prefix */
    char text[256];
    size_t len = decode_ids(l.v, ids, n, text, sizeof text);
    assert_int_equal(len, strlen(prompt) + 1);
    assert_int_equal(text[0], ' ');
    assert_string_equal(text + 1, prompt);
    unload(&l);
    json_decref(root);
}

static void test_stories_labels(void **state) {
    (void)state;
    loaded l = load_path(STORIES);
    assert_label(l.v, 1, "[BOS]");
    assert_label(l.v, 2, "[EOS]");
    assert_label(l.v, 0, "[UNK]");
    assert_label(l.v, 403, " Once");
    assert_label(l.v, 426, ".");
    assert_label(l.v, 3 + '\n', "\\n");
    assert_label(l.v, 3 + '\t', "\\t");
    assert_label(l.v, 3 + '\r', "\\r");
    assert_label(l.v, 3 + 'A', "A");
    assert_label(l.v, 3 + 0xe2, "<0xE2>"); /* not a character alone */
    assert_label(l.v, 3 + 0x00, "<0x00>");
    assert_string_equal(tok_piece(l.v, 403), "\xe2\x96\x81Once");
    assert_null(tok_piece(l.v, 512));
    assert_null(tok_piece(l.v, -1));
    char buf[8];
    assert_int_equal(tok_label(l.v, 512, buf, sizeof buf), HEED_ERR_INVALID_ARG);
    assert_int_equal(tok_bytes(l.v, -1, buf, sizeof buf), HEED_ERR_INVALID_ARG);
    /* bytes: BOS/EOS/UNK none; "▁" a space; byte tokens one byte */
    assert_int_equal(tok_bytes(l.v, 1, buf, sizeof buf), 0);
    assert_int_equal(tok_bytes(l.v, 0, buf, sizeof buf), 0);
    assert_int_equal(tok_bytes(l.v, 3 + 0xe2, buf, sizeof buf), 1);
    assert_int_equal((unsigned char)buf[0], 0xe2);
    /* snprintf semantics: the full length, truncated output NUL-terminated */
    assert_int_equal(tok_bytes(l.v, 403, buf, 3), 5);
    assert_string_equal(buf, " O");
    assert_int_equal(tok_bytes(l.v, 403, NULL, 0), 5);
    assert_int_equal(tok_label(l.v, 1, buf, 4), 5);
    assert_string_equal(buf, "[BO");
    assert_true(tok_is_eog(l.v, 2));
    assert_false(tok_is_eog(l.v, 1));
    assert_false(tok_is_eog(l.v, 403));
    assert_false(tok_is_eog(l.v, -1));
    unload(&l);
}

static void test_stories_byte_fallback(void **state) {
    (void)state;
    loaded l = load_path(STORIES);
    const char *text = "日本";
    int32_t ids[16];
    int n = tok_encode(l.v, text, strlen(text), false, ids, 16);
    assert_int_equal(n, 7); /* "▁" then six bytes */
    assert_string_equal(tok_piece(l.v, ids[0]), "\xe2\x96\x81");
    for (int i = 1; i < n; i++) assert_int_equal(ids[i], 3 + (unsigned char)text[i - 1]);
    char out[64];
    assert_int_equal(decode_ids(l.v, ids, n, out, sizeof out), 7);
    assert_string_equal(out, " 日本");
    /* a label of a byte that is not a character alone is its piece */
    assert_label(l.v, ids[1], "<0xE6>");
    unload(&l);
}

static void test_empty_text(void **state) {
    (void)state;
    loaded l = load_path(STORIES);
    int32_t ids[4];
    assert_int_equal(tok_encode(l.v, "", 0, false, ids, 4), 0);
    assert_int_equal(tok_encode(l.v, NULL, 0, false, ids, 4), 0);
    assert_int_equal(tok_encode(l.v, "", 0, true, ids, 4), 1);
    assert_int_equal(ids[0], 1);
    assert_int_equal(tok_encode(l.v, NULL, 3, false, ids, 4), HEED_ERR_INVALID_ARG);
    assert_int_equal(tok_encode(NULL, "a", 1, false, ids, 4), HEED_ERR_INVALID_ARG);
    unload(&l);
}

static void test_invalid_utf8(void **state) {
    (void)state;
    static const char *const bad[] = {
        "\xff", "\xfe", "\x80", "a\xbf", "\xc0\xaf", "\xc1\xbf", "\xe0\x80\xaf", "\xe0\x9f\xbf",
        "\xf0\x80\x80\xaf", "\xf0\x8f\xbf\xbf", "\xed\xa0\x80", "\xed\xbf\xbf", "\xf4\x90\x80\x80",
        "\xf5\x80\x80\x80", "\xe2\x82", "a\xc3", "\xf0\x9f\x99", "\xc3(", "\xe2\x28\xa1",
    };
    static const char *const good[] = {
        "\x7f", "\xc2\x80", "\xdf\xbf", "\xe0\xa0\x80", "\xed\x9f\xbf", "\xee\x80\x80", "\xef\xbf\xbd",
        "\xf0\x90\x80\x80", "\xf4\x8f\xbf\xbf", "\xf0\x9f\x99\x82",
    };
    loaded l = load_path(STORIES);
    int32_t ids[32];
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (tok_encode(l.v, bad[i], strlen(bad[i]), false, ids, 32) != HEED_ERR_INVALID_ARG)
            fail_msg("invalid UTF-8 case %zu accepted", i);
    }
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        int n = tok_encode(l.v, good[i], strlen(good[i]), false, ids, 32);
        if (n <= 0) fail_msg("valid UTF-8 case %zu refused: %d", i, n);
    }
    /* NUL is a character like any other */
    assert_int_equal(tok_encode(l.v, "a\0b", 3, false, ids, 32), tok_encode(l.v, "a\0b", 3, false, NULL, 0));
    unload(&l);
}

/* --------------------------------------------------- shared test vectors */

static vocab_case g_cases[64];

static void check_spm_vectors(const char *name) {
    char rel[128], path[512];
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf", name);
    if (!tu_shared(rel, path, sizeof path)) skip();
    char *inp, *out;
    int n = read_cases(path, g_cases, 64, &inp, &out);
    assert_int_equal(n, 46);
    loaded l = load_path(path);
    int pass = 0, pass_decode = 0;
    static int32_t ids[MAX_IDS];
    static char text[8 * MAX_IDS];
    for (int i = 0; i < n; i++) {
        const vocab_case *c = &g_cases[i];
        int k = tok_encode(l.v, c->text, c->len, false, ids, MAX_IDS);
        if (k == c->n_ids && memcmp(ids, c->ids, (size_t)k * sizeof *ids) == 0) pass++;
        else printf("%s case %d: encode differs (%d ids, expected %d)\n", name, i, k, c->n_ids);
        size_t len = decode_ids(l.v, c->ids, c->n_ids, text, sizeof text);
        /* one leading space came from the prefix (none for empty text) */
        const char *t = len > 0 && tok_add_space_prefix(l.v) ? text + 1 : text;
        if (strlen(t) == c->len && memcmp(t, c->text, c->len) == 0) pass_decode++;
        else printf("%s case %d: decode differs\n", name, i);
    }
    printf("%s: %d/%d cases encode exactly, %d/%d decode exactly\n", name, pass, n, pass_decode, n);
    assert_int_equal(pass, n);
    assert_int_equal(pass_decode, n);
    unload(&l);
    free(inp);
    free(out);
}

static void test_vectors_llama_spm(void **state) {
    (void)state;
    check_spm_vectors("llama-spm");
}

static void test_vectors_phi3(void **state) {
    (void)state;
    check_spm_vectors("phi-3");
}

/* Byte-level BPE vocabularies: the expected ids decode to the input. */
static void check_gpt2_decode(const char *name) {
    char rel[128], path[512];
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf", name);
    if (!tu_shared(rel, path, sizeof path)) skip();
    char *inp, *out;
    int n = read_cases(path, g_cases, 64, &inp, &out);
    assert_int_equal(n, 46);
    loaded l = load_path(path);
    assert_string_equal(tok_model_name(l.v), "gpt2");
    assert_true(tok_can_encode(l.v)); /* encoding: tests/test_tok_bpe.c */
    assert_null(tok_encode_refusal(l.v));
    assert_false(tok_add_space_prefix(l.v));
    static char text[8 * MAX_IDS];
    int pass = 0;
    for (int i = 0; i < n; i++) {
        const vocab_case *c = &g_cases[i];
        size_t len = decode_ids(l.v, c->ids, c->n_ids, text, sizeof text);
        if (len == c->len && memcmp(text, c->text, len) == 0) pass++;
        else printf("%s case %d: decode differs\n", name, i);
        /* every label of every token is valid UTF-8 */
        for (int k = 0; k < c->n_ids; k++) {
            char lab[256];
            int m = tok_label(l.v, c->ids[k], lab, sizeof lab);
            assert_true(m > 0 && m < (int)sizeof lab);
            assert_true(valid_utf8((const unsigned char *)lab, (size_t)m));
        }
    }
    printf("%s: %d/%d cases decode exactly\n", name, pass, n);
    assert_int_equal(pass, n);
    unload(&l);
    free(inp);
    free(out);
}

static void test_gpt2_decode_llama_bpe(void **state) {
    (void)state;
    check_gpt2_decode("llama-bpe");
}

static void test_gpt2_decode_others(void **state) {
    (void)state;
    static const char *const names[] = {"qwen2", "smollm2", "gpt-2", "falcon", "mpt",
                                        "starcoder", "refact", "deepseek-coder", "deepseek-llm"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) check_gpt2_decode(names[i]);
}

static void test_gpt2_labels(void **state) {
    (void)state;
    char path[512];
    if (!tu_shared("vocab/ggml-vocab-llama-bpe.gguf", path, sizeof path)) skip();
    loaded l = load_path(path);
    assert_int_equal(tok_n_vocab(l.v), 128256);
    assert_int_equal(tok_bos(l.v), 128000);
    assert_true(tok_add_bos(l.v));
    assert_label(l.v, 128000, "[BOS]");
    assert_label(l.v, 128001, "[EOS]");
    assert_label(l.v, 128009, "<|eot_id|>"); /* another control token: its piece */
    assert_label(l.v, piece_id(l.v, "\xc4\xa0the"), " the");
    assert_label(l.v, piece_id(l.v, "\xc4\x8a"), "\\n");
    assert_label(l.v, piece_id(l.v, "\xc4\xa0\xc4\xa0"), "  ");
    assert_label(l.v, piece_id(l.v, "\xc3\x83"), "<0xC3>"); /* byte 0xC3 alone */
    char buf[8];
    assert_int_equal(tok_bytes(l.v, 128000, buf, sizeof buf), 0);
    assert_int_equal(tok_bytes(l.v, piece_id(l.v, "\xc3\x83"), buf, sizeof buf), 1);
    assert_int_equal((unsigned char)buf[0], 0xc3);
    assert_true(tok_is_eog(l.v, 128001));
    assert_true(tok_is_eog(l.v, 128009)); /* <|eot_id|> is a control token */
    assert_false(tok_is_eog(l.v, 128000));
    unload(&l);
}

/* Labels of the Llama 3, Qwen2 and SmolLM2 vocabularies: the byte
 * alphabet decoded ('Ġ' a space, 'Ċ' a visible newline), BOS/EOS by the
 * vocabulary's own ids, every token labelled as valid UTF-8 and none
 * "[EMPTY]" (no real piece is empty). */
typedef struct family_labels {
    const char *model;
    int32_t bos, eos;
    const char *bos_piece, *eos_piece;
} family_labels;

static void check_family_labels(const family_labels *fam) {
    char rel[128], path[512];
    snprintf(rel, sizeof rel, "models/%s.gguf", fam->model);
    if (!tu_shared(rel, path, sizeof path)) skip();
    loaded l = load_path(path);
    assert_int_equal(tok_bos(l.v), fam->bos);
    assert_int_equal(tok_eos(l.v), fam->eos);
    assert_string_equal(tok_piece(l.v, fam->bos), fam->bos_piece);
    assert_string_equal(tok_piece(l.v, fam->eos), fam->eos_piece);
    assert_label(l.v, fam->bos, "[BOS]");
    assert_label(l.v, fam->eos, "[EOS]");
    assert_label(l.v, piece_id(l.v, "\xc4\xa0"), " ");       /* Ġ */
    assert_label(l.v, piece_id(l.v, "\xc4\x8a"), "\\n");     /* Ċ */
    assert_label(l.v, piece_id(l.v, "\xc4\x89"), "\\t");     /* ĉ */
    assert_label(l.v, piece_id(l.v, "\xc4\xa0the"), " the");
    assert_label(l.v, piece_id(l.v, "\xc4\x8a\xc4\x8a"), "\\n\\n");
    char buf[8];
    assert_int_equal(tok_bytes(l.v, fam->bos, buf, sizeof buf), 0); /* control: no bytes */
    assert_true(tok_is_eog(l.v, fam->eos));
    int n_empty = 0;
    for (int32_t id = 0; id < tok_n_vocab(l.v); id++) {
        char lab[512];
        int m = tok_label(l.v, id, lab, sizeof lab);
        assert_true(m > 0 && m < (int)sizeof lab);
        assert_true(valid_utf8((const unsigned char *)lab, (size_t)m));
        n_empty += strcmp(lab, "[EMPTY]") == 0;
    }
    assert_int_equal(n_empty, 0);
    unload(&l);
}

static void test_labels_llama3(void **state) {
    (void)state;
    const family_labels f = {"tiny-llama3", 128000, 128001, "<|begin_of_text|>", "<|end_of_text|>"};
    check_family_labels(&f);
}

static void test_labels_qwen2(void **state) {
    (void)state;
    const family_labels f = {"tiny-qwen2", 151643, 151645, "<|endoftext|>", "<|im_end|>"};
    check_family_labels(&f);
}

static void test_labels_smollm2(void **state) {
    (void)state;
    const family_labels f = {"tiny-smollm2", 1, 2, "<|im_start|>", "<|im_end|>"};
    check_family_labels(&f);
}

static void test_load_vocabularies(void **state) {
    (void)state;
    /* the load-time figure is bench_tok's (make bench): a test only checks what was loaded */
    static const char *const names[] = {"vocab/ggml-vocab-llama-bpe.gguf", "vocab/ggml-vocab-qwen2.gguf"};
    for (int i = 0; i < 2; i++) {
        char path[512], err[256];
        int rc;
        if (!tu_shared(names[i], path, sizeof path)) skip();
        gguf_file *f = gguf_open(path, &rc, err, sizeof err);
        assert_non_null(f);
        tok_vocab *v = tok_load(f, &rc, err, sizeof err);
        assert_non_null(v);
        assert_true(tok_n_vocab(v) > 100000);
        if (i == 1) {
            assert_int_equal(tok_bos(v), -1);
            assert_false(tok_add_bos(v));
            assert_true(tok_is_eog(v, tok_eos(v)));               /* <|im_end|> */
            assert_true(tok_is_eog(v, piece_id(v, "<|endoftext|>"))); /* a control token */
        }
        tok_free(v);
        gguf_close(f);
    }
}

/* heed_model_params.vocab_only: any architecture, no weights; the model
 * tokenizes, labels and lists its metadata, and no context can be made. */
static void check_vocab_only(const char *path, const char *arch) {
    heed_model_params mp = heed_model_default_params();
    mp.vocab_only = true;
    heed_model *m = NULL;
    char err[512] = "";
    assert_int_equal(heed_model_load(path, &mp, &m, err, sizeof err), HEED_OK);
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    assert_true(mi.vocab_only);
    assert_string_equal(mi.arch, arch);
    assert_int_equal(mi.n_layer, 0);
    assert_int_equal(mi.n_embd, 0);
    assert_int_equal(mi.n_ctx_train, 0);
    assert_true(mi.n_vocab >= 512);
    assert_true(mi.can_tokenize);
    assert_true(heed_model_n_meta(m) > 0);
    int32_t ids[16];
    assert_true(heed_tokenize(m, "Hello world", 11, false, ids, 16) >= 2);
    char label[64];
    assert_true(heed_token_label(m, ids[0], label, sizeof label) > 0);
    heed_ctx *ctx = (heed_ctx *)&mi; /* must come back NULL */
    assert_int_equal(heed_ctx_new(m, NULL, &ctx), HEED_ERR_UNSUPPORTED);
    assert_null(ctx);
    heed_ctx_params cp = heed_ctx_default_params();
    cp.n_ctx = 16;
    assert_int_equal(heed_ctx_new(m, &cp, &ctx), HEED_ERR_UNSUPPORTED);
    assert_null(ctx);
    heed_model_free(m);
}

static void test_vocab_only_model(void **state) {
    (void)state;
    check_vocab_only(NULL, "llama"); /* the bundled model, weights left alone */
    char path[512], err[512] = "";
    if (!tu_shared("vocab/ggml-vocab-falcon.gguf", path, sizeof path)) skip();
    check_vocab_only(path, "falcon");
    /* without vocab_only a file of no tensors is refused, saying why */
    heed_model *m = (heed_model *)path;
    assert_int_equal(heed_model_load(path, NULL, &m, err, sizeof err), HEED_ERR_UNSUPPORTED);
    assert_null(m);
    assert_string_equal(err, "ggml-vocab-falcon.gguf has no weights (vocabulary only): it can tokenize but not generate");
    if (!tu_shared("models/tiny-gemma2.gguf", path, sizeof path)) skip();
    check_vocab_only(path, "gemma2");
}

/* Gemma 3's SentencePiece vocabulary (262,144 pieces, score-ordered merges,
 * byte fallback, user-defined runs of spaces/newlines/tabs and HTML tags,
 * no space prefix, BOS): tests/fixtures/gemma3_tokenize.json holds tricky
 * strings with the reference ids (its "about" says where they come from).
 * Each encodes to them exactly and the ids after BOS decode to the text. */
static void check_gemma_fixture(const char *model) {
    char rel[128], path[512];
    snprintf(rel, sizeof rel, "models/%s", model);
    if (!tu_shared(rel, path, sizeof path)) skip();
    heed_model_params mp = heed_model_default_params();
    mp.vocab_only = true;
    heed_model *m = NULL;
    assert_int_equal(heed_model_load(path, &mp, &m, NULL, 0), HEED_OK);
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    assert_int_equal(mi.n_vocab, 262144);
    assert_true(mi.add_bos);
    assert_int_equal(mi.bos, 2);
    json_error_t je;
    json_t *fx = json_load_file("tests/fixtures/gemma3_tokenize.json", 0, &je);
    if (!fx) fail_msg("gemma3_tokenize.json: %s", je.text);
    json_t *cases = json_object_get(fx, "cases");
    assert_true(json_array_size(cases) >= 80);
    static int32_t ids[MAX_IDS];
    static char text[8 * MAX_IDS];
    int pass = 0, n = (int)json_array_size(cases);
    for (int i = 0; i < n; i++) {
        json_t *c = json_array_get(cases, i), *want = json_object_get(c, "ids");
        const char *t = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        int k = heed_tokenize(m, t, len, true, ids, MAX_IDS);
        bool same = k == (int)json_array_size(want);
        for (int j = 0; same && j < k; j++) same = ids[j] == json_integer_value(json_array_get(want, j));
        size_t n_text = 0;
        for (int j = 1; same && j < k; j++) {
            int nb = heed_token_bytes(m, ids[j], text + n_text, sizeof text - n_text);
            assert_true(nb >= 0 && (size_t)nb < sizeof text - n_text);
            n_text += (size_t)nb;
        }
        if (!same) printf("%s case %d: encode differs (%d ids, expected %zu)\n", model, i, k, json_array_size(want));
        else if (n_text != len || memcmp(text, t, len)) printf("%s case %d: decode differs\n", model, i);
        else pass++;
    }
    printf("%s: %d/%d fixture strings encode and decode exactly\n", model, pass, n);
    assert_int_equal(pass, n);
    json_decref(fx);
    heed_model_free(m);
}

static void test_gemma2_fixture(void **state) {
    (void)state;
    check_gemma_fixture("tiny-gemma2.gguf");
}

static void test_gemma3_fixture(void **state) {
    (void)state;
    check_gemma_fixture("tiny-gemma3.gguf");
}

/* The golden prompts' ids (the prompt_ids of ../shared/golden: BOS as the
 * file says, special text not parsed) for the SentencePiece models heed
 * does not yet run: the vocabulary loads on its own. */
static void check_golden_ids(const char *model, const char *text, const int32_t *want, int n_want) {
    char rel[128], path[512];
    snprintf(rel, sizeof rel, "models/%s", model);
    if (!tu_shared(rel, path, sizeof path)) skip();
    heed_model_params mp = heed_model_default_params();
    mp.vocab_only = true;
    heed_model *m = NULL;
    assert_int_equal(heed_model_load(path, &mp, &m, NULL, 0), HEED_OK);
    int32_t ids[64];
    int k = heed_tokenize(m, text, strlen(text), true, ids, 64);
    assert_int_equal(k, n_want);
    for (int i = 0; i < k; i++) assert_int_equal(ids[i], want[i]);
    heed_model_free(m);
}

static void test_golden_gemma_phi3(void **state) {
    (void)state;
    static const char fox[] = "The quick brown fox jumps over the lazy dog. The quick brown";
    static const int32_t gemma_fox[] = {2, 818, 3823, 8864, 37423, 38167, 1024, 506, 31770, 4799, 236761, 669, 3823,
                                        8864};
    static const int32_t phi3_fox[] = {1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203, 29889,
                                       450, 4996, 17354};
    check_golden_ids("tiny-gemma2.gguf", "Hello world", (const int32_t[]){2, 9259, 1902}, 3);
    check_golden_ids("tiny-gemma2.gguf", fox, gemma_fox, 14);
    check_golden_ids("tiny-gemma3.gguf", "Hello world", (const int32_t[]){2, 9259, 1902}, 3);
    check_golden_ids("tiny-gemma3.gguf", fox, gemma_fox, 14);
    check_golden_ids("tiny-phi3.gguf", "Hello world", (const int32_t[]){1, 15043, 3186}, 3);
    check_golden_ids("tiny-phi3.gguf", fox, phi3_fox, 16);
}

/* ------------------------------------------------- hand-made vocabularies */

/* An SPM vocabulary of the given pieces and scores, no space prefix. */
static mem_vocab spm_vocab(const char *const *pieces, const float *scores, int n, bool with_unk) {
    gbuf b = {0};
    gb_kv_str(&b, "tokenizer.ggml.model", "llama");
    gb_kv_strs(&b, "tokenizer.ggml.tokens", pieces, n);
    gb_kv_f32s(&b, "tokenizer.ggml.scores", scores, n);
    gb_kv_bool(&b, "tokenizer.ggml.add_space_prefix", false);
    if (!with_unk) gb_kv_u32(&b, "tokenizer.ggml.unknown_token_id", 0xffffffffu);
    mem_vocab m = mem_load(&b);
    if (!m.v) fail_msg("tok_load: %s", m.err);
    return m;
}

static void expect_ids(const tok_vocab *v, const char *text, const int32_t *want, int n) {
    int32_t ids[32];
    int k = tok_encode(v, text, strlen(text), false, ids, 32);
    if (k != n) fail_msg("'%s': %d ids, expected %d", text, k, n);
    for (int i = 0; i < n; i++)
        if (ids[i] != want[i]) fail_msg("'%s': id %d is %d, expected %d", text, i, ids[i], want[i]);
}

static void test_spm_merge_rules(void **state) {
    (void)state;
    /*                                0        1      2      3    4    5    6     7     8      9 */
    static const char *const p[] = {"<unk>", "<s>", "</s>", "a", "b", "c", "ab", "bc", "abc", "aa"};
    /* highest score first: bc (2) before ab (1); then a + bc = abc */
    float s1[10] = {0, 0, 0, 0, 0, 0, 1, 2, -5, 0};
    mem_vocab m = spm_vocab(p, s1, 10, true);
    expect_ids(m.v, "abc", (const int32_t[]){8}, 1);
    expect_ids(m.v, "aaa", (const int32_t[]){9, 3}, 2); /* a tie: the leftmost pair merges */
    expect_ids(m.v, "ab", (const int32_t[]){6}, 1);
    /* no byte tokens: a character outside the vocabulary is <unk> per byte */
    expect_ids(m.v, "d", (const int32_t[]){0}, 1);
    expect_ids(m.v, "é", (const int32_t[]){0, 0}, 2);
    /* spaces are escaped, but "▁" is no piece here */
    expect_ids(m.v, "a b", (const int32_t[]){3, 0, 0, 0, 4}, 5);
    mem_free(&m);

    /* ab (3) before bc (2): ab merges first, then the pair (ab, c) forms the
     * piece "abc" and merges too */
    float s2[10] = {0, 0, 0, 0, 0, 0, 3, 2, -5, 0};
    m = spm_vocab(p, s2, 10, true);
    expect_ids(m.v, "abc", (const int32_t[]){8}, 1);
    expect_ids(m.v, "abcb", (const int32_t[]){8, 4}, 2);
    mem_free(&m);

    /* without "abc" the order decides the split */
    static const char *const q[] = {"<unk>", "<s>", "</s>", "a", "b", "c", "ab", "bc"};
    float s3[8] = {0, 0, 0, 0, 0, 0, 3, 2};
    m = spm_vocab(q, s3, 8, true);
    expect_ids(m.v, "abc", (const int32_t[]){6, 5}, 2);
    mem_free(&m);
    float s4[8] = {0, 0, 0, 0, 0, 0, 2, 3};
    m = spm_vocab(q, s4, 8, true);
    expect_ids(m.v, "abc", (const int32_t[]){3, 7}, 2);
    mem_free(&m);
    float s5[8] = {0, 0, 0, 0, 0, 0, 2, 2};
    m = spm_vocab(q, s5, 8, true);
    expect_ids(m.v, "abc", (const int32_t[]){6, 5}, 2); /* tie: leftmost */
    mem_free(&m);

    /* no unknown token and no byte tokens: the text cannot be encoded */
    m = spm_vocab(q, s5, 8, false);
    int32_t ids[4];
    assert_int_equal(tok_encode(m.v, "ad", 2, false, ids, 4), HEED_ERR_TOKENIZER);
    assert_int_equal(tok_encode(m.v, "ab", 2, false, ids, 4), 1);
    mem_free(&m);
}

static void test_spm_duplicate_piece(void **state) {
    (void)state;
    /* a duplicated piece maps to its last id, as in the reference engine */
    static const char *const p[] = {"<unk>", "<s>", "</s>", "a", "b", "ab", "ab"};
    float s[7] = {0, 0, 0, 0, 0, 1, 1};
    mem_vocab m = spm_vocab(p, s, 7, true);
    expect_ids(m.v, "ab", (const int32_t[]){6}, 1);
    mem_free(&m);
}

static void test_spm_types_absent(void **state) {
    (void)state;
    /* without token_type, byte pieces are recognised by their shape */
    static const char *const p[] = {"<unk>", "<s>", "</s>", "<0x0A>", "<0xC3>", "<0xA9>", "a"};
    float s[7] = {0};
    mem_vocab m = spm_vocab(p, s, 7, true);
    expect_ids(m.v, "a\né", (const int32_t[]){6, 3, 4, 5}, 4);
    char buf[8];
    assert_int_equal(tok_bytes(m.v, 3, buf, sizeof buf), 1);
    assert_int_equal(buf[0], '\n');
    assert_label(m.v, 3, "\\n");
    assert_label(m.v, 4, "<0xC3>");
    assert_label(m.v, 1, "[BOS]");
    assert_int_equal(tok_bos(m.v), 1); /* defaults of SPM vocabularies */
    assert_int_equal(tok_eos(m.v), 2);
    mem_free(&m);
}

static void test_labels_handmade(void **state) {
    (void)state;
    /* a gpt2 vocabulary: control, user-defined, empty, odd pieces */
    static const char *const p[] = {"<|endoftext|>", "<|im_end|>", "hello\xc4\xa0", "\xc3\xa9",
                                    "<tool>", "", "\xc4\x89", "\xe6\x97\xa5", "\xe2\x96\x81x", "Ã©"};
    int32_t t[10] = {3, 3, 1, 1, 4, 1, 1, 1, 1, 1};
    gbuf b = {0};
    gb_kv_str(&b, "tokenizer.ggml.model", "gpt2");
    gb_kv_strs(&b, "tokenizer.ggml.tokens", p, 10);
    gb_kv_i32s(&b, "tokenizer.ggml.token_type", t, 10);
    gb_kv_u32(&b, "tokenizer.ggml.eos_token_id", 1);
    mem_vocab m = mem_load(&b);
    assert_non_null(m.v);
    assert_false(tok_add_bos(m.v));
    assert_int_equal(tok_bos(m.v), -1);
    assert_label(m.v, 0, "<|endoftext|>");
    assert_label(m.v, 1, "[EOS]");
    assert_label(m.v, 2, "hello ");
    assert_label(m.v, 3, "<0xE9>");  /* "é" in the byte alphabet is byte 0xE9 */
    assert_label(m.v, 4, "<tool>"); /* user-defined: verbatim */
    assert_label(m.v, 5, "[EMPTY]");
    assert_label(m.v, 6, "\\t");    /* U+0109 is byte 0x09 */
    assert_label(m.v, 7, "日");     /* outside the byte alphabet: as is */
    assert_label(m.v, 8, "\xe2\x96\x81x");
    assert_label(m.v, 9, "é");      /* bytes C3 A9 */
    /* no merges: it decodes but cannot encode, and says why */
    assert_false(tok_can_encode(m.v));
    assert_non_null(strstr(tok_encode_refusal(m.v), "mem.gguf: key 'tokenizer.ggml.merges' is missing"));
    int32_t ids[4];
    assert_int_equal(tok_encode(m.v, "hello", 5, false, ids, 4), HEED_ERR_TOKENIZER);
    assert_true(tok_is_eog(m.v, 0)); /* <|endoftext|> is control */
    assert_true(tok_is_eog(m.v, 1));
    assert_false(tok_is_eog(m.v, 2));
    /* truncation never splits a character; the full length comes back */
    char buf[16];
    assert_int_equal(tok_label(m.v, 9, buf, 2), 2);
    assert_string_equal(buf, "");
    assert_int_equal(tok_label(m.v, 9, buf, 3), 2);
    assert_string_equal(buf, "é");
    assert_int_equal(tok_label(m.v, 3, buf, 4), 6);
    assert_string_equal(buf, "<0x");
    assert_int_equal(tok_label(m.v, 7, buf, 3), 3);
    assert_string_equal(buf, "");
    assert_int_equal(tok_label(m.v, 2, NULL, 0), 6);
    mem_free(&m);
}

typedef struct bad_vocab {
    const char *what;
    int rc;
    const char *msg; /* expected message, or a fragment (prefix '~') */
} bad_vocab;

static mem_vocab build_bad(int which) {
    static const char *const p[] = {"<unk>", "<s>", "</s>", "a"};
    float s[4] = {0}, s3[3] = {0};
    int32_t t[4] = {2, 3, 3, 1};
    gbuf b = {0};
    if (which != 0) gb_kv_str(&b, "tokenizer.ggml.model", which == 1 ? "bert" : "llama");
    if (which == 2) gb_kv_u32(&b, "tokenizer.ggml.tokens", 5);
    else if (which != 3) gb_kv_strs(&b, "tokenizer.ggml.tokens", p, 4);
    if (which == 4) gb_kv_f32s(&b, "tokenizer.ggml.scores", s3, 3);
    else gb_kv_f32s(&b, "tokenizer.ggml.scores", s, 4);
    if (which == 5) gb_kv_i32s(&b, "tokenizer.ggml.token_type", t, 3);
    else gb_kv_i32s(&b, "tokenizer.ggml.token_type", t, 4);
    if (which == 6) gb_kv_u32(&b, "tokenizer.ggml.bos_token_id", 4);
    if (which == 7) gb_kv_str(&b, "tokenizer.ggml.eos_token_id", "2");
    if (which == 8) gb_kv_u32(&b, "tokenizer.ggml.add_bos_token", 1);
    if (which == 9) {
        gb_kv_u32(&b, "tokenizer.ggml.bos_token_id", 0xffffffffu);
        gb_kv_bool(&b, "tokenizer.ggml.add_bos_token", true);
    }
    if (which == 10) gb_kv_u32(&b, "tokenizer.ggml.padding_token_id", 0xffffffffu); /* fine */
    return mem_load(&b);
}

static void test_load_errors(void **state) {
    (void)state;
    static const bad_vocab cases[] = {
        {"no model", HEED_ERR_FORMAT, "mem.gguf: key 'tokenizer.ggml.model' is missing"},
        {"bert", HEED_ERR_UNSUPPORTED, "~mem.gguf: key 'tokenizer.ggml.model' is 'bert'"},
        {"tokens not array", HEED_ERR_FORMAT, "mem.gguf: key 'tokenizer.ggml.tokens' is not an array of strings"},
        {"no tokens", HEED_ERR_FORMAT, "mem.gguf: key 'tokenizer.ggml.tokens' is missing"},
        {"short scores", HEED_ERR_FORMAT, "mem.gguf: key 'tokenizer.ggml.scores' has 3 entries, expected 4"},
        {"short types", HEED_ERR_FORMAT, "mem.gguf: key 'tokenizer.ggml.token_type' has 3 entries, expected 4"},
        {"bos range", HEED_ERR_FORMAT,
         "mem.gguf: key 'tokenizer.ggml.bos_token_id' is 4, outside the vocabulary (0..3)"},
        {"eos string", HEED_ERR_FORMAT, "mem.gguf: key 'tokenizer.ggml.eos_token_id' is not an integer"},
        {"add_bos u32", HEED_ERR_FORMAT, "mem.gguf: key 'tokenizer.ggml.add_bos_token' is not a boolean"},
        {"add_bos without bos", HEED_ERR_FORMAT, "~no BOS token"},
        {"pad none", HEED_OK, ""},
    };
    for (int i = 0; i < (int)(sizeof cases / sizeof cases[0]); i++) {
        mem_vocab m = build_bad(i);
        if (m.rc != cases[i].rc) fail_msg("%s: rc %d, expected %d (%s)", cases[i].what, m.rc, cases[i].rc, m.err);
        if (cases[i].rc == HEED_OK) {
            assert_non_null(m.v);
        } else {
            assert_null(m.v);
            const char *want = cases[i].msg;
            bool ok = want[0] == '~' ? strstr(m.err, want + 1) != NULL : strcmp(m.err, want) == 0;
            if (!ok) fail_msg("%s: message '%s'", cases[i].what, m.err);
        }
        mem_free(&m);
    }
}

/* ------------------------------------------------------------ UTF-8 stream */

static size_t stream_all(const char *in, size_t n, const size_t *cuts, int n_cuts, char *out) {
    heed_utf8_stream s = {0};
    size_t pos = 0, len = 0;
    for (int i = 0; i <= n_cuts; i++) {
        size_t end = i < n_cuts ? cuts[i] : n;
        len += heed_utf8_stream_push(&s, in + pos, end - pos, out + len);
        pos = end;
    }
    return len + heed_utf8_stream_flush(&s, out + len);
}

static void test_utf8_stream_splits(void **state) {
    (void)state;
    const char *text = "a\xc3\xa9\xe6\x97\xa5\xf0\x9f\x99\x82z\xe2\x96\x81";
    size_t n = strlen(text);
    char out[64];
    for (size_t cut = 0; cut <= n; cut++) {
        size_t len = stream_all(text, n, &cut, 1, out);
        assert_int_equal(len, n);
        assert_memory_equal(out, text, n);
    }
    size_t every[32];
    for (size_t i = 0; i < n; i++) every[i] = i;
    assert_int_equal(stream_all(text, n, every, (int)n, out), n);
    assert_memory_equal(out, text, n);
    /* a held partial character comes out only once completed */
    heed_utf8_stream s = {0};
    assert_int_equal(heed_utf8_stream_push(&s, "\xf0\x9f", 2, out), 0);
    assert_int_equal(heed_utf8_stream_push(&s, "\x99", 1, out), 0);
    assert_int_equal(heed_utf8_stream_push(&s, "\x82!", 2, out), 5);
    assert_memory_equal(out, "\xf0\x9f\x99\x82!", 5);
    assert_int_equal(heed_utf8_stream_flush(&s, out), 0);
}

static void expect_stream(const char *in, size_t n, const char *want) {
    char out[128];
    size_t len = stream_all(in, n, NULL, 0, out);
    if (len != strlen(want) || memcmp(out, want, len) != 0) fail_msg("stream output differs for %zu bytes", n);
}

#define FFFD "\xef\xbf\xbd"

static void test_utf8_stream_invalid(void **state) {
    (void)state;
    expect_stream("\xff", 1, FFFD);
    expect_stream("a\x80" "b", 3, "a" FFFD "b");
    expect_stream("\xe2\x82" "A", 3, FFFD "A"); /* one U+FFFD for the broken prefix */
    expect_stream("\xed\xa0\x80", 3, FFFD FFFD FFFD); /* a surrogate: no valid prefix */
    expect_stream("\xc0\xaf", 2, FFFD FFFD);
    expect_stream("\xf4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD);
    expect_stream("\xe6\x97", 2, FFFD); /* flushed */
    expect_stream("\xe6\x97\xe6\x97\xa5", 5, FFFD "\xe6\x97\xa5");
    heed_utf8_stream s = {0};
    char out[16];
    assert_int_equal(heed_utf8_stream_push(&s, "\0x", 2, out), 2); /* NUL is a character */
    assert_memory_equal(out, "\0x", 2);
    assert_int_equal(heed_utf8_stream_flush(&s, out), 0);
    assert_int_equal(heed_utf8_stream_push(&s, "\xe6\x97", 2, out), 0);
    assert_int_equal(heed_utf8_stream_flush(&s, out), 3);
    assert_memory_equal(out, FFFD, 3);
    assert_int_equal(s.n_pending, 0);
}

static uint64_t rng_state = 88172645463325252ull;
static uint32_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

/* Random bytes, biased towards UTF-8 lead and continuation bytes. */
static void random_bytes(char *buf, size_t n) {
    static const unsigned char pick[] = {'a', ' ', '\n', 0x80, 0xbf, 0xc3, 0xe2, 0xed, 0xf0, 0xf4, 0xff, 0x9f};
    for (size_t i = 0; i < n; i++)
        buf[i] = (char)(rnd() % 2 ? pick[rnd() % sizeof pick] : (unsigned char)rnd());
}

/* Random valid UTF-8 from code points of every length; returns bytes. */
static size_t random_utf8(char *buf, int n_chars) {
    size_t n = 0;
    for (int i = 0; i < n_chars; i++) {
        uint32_t cp;
        switch (rnd() % 5) {
        case 0: cp = rnd() % 0x80; break;
        case 1: cp = 0x20 + rnd() % 0x5f; break;
        case 2: cp = 0x80 + rnd() % 0x780; break;
        case 3: cp = 0x800 + rnd() % 0xf800; break;
        default: cp = 0x10000 + rnd() % 0x100000; break;
        }
        if (cp >= 0xd800 && cp <= 0xdfff) cp = ' ';
        /* U+2581 "▁" is SentencePiece's escaped space and decodes as ' ', so
         * text holding it does not round-trip (in the reference engine neither) */
        if (cp == 0x2581) cp = 'x';
        if (cp < 0x80) {
            buf[n++] = (char)cp;
        } else if (cp < 0x800) {
            buf[n++] = (char)(0xc0 | cp >> 6);
            buf[n++] = (char)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            buf[n++] = (char)(0xe0 | cp >> 12);
            buf[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            buf[n++] = (char)(0x80 | (cp & 0x3f));
        } else {
            buf[n++] = (char)(0xf0 | cp >> 18);
            buf[n++] = (char)(0x80 | ((cp >> 12) & 0x3f));
            buf[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            buf[n++] = (char)(0x80 | (cp & 0x3f));
        }
    }
    return n;
}

static void test_utf8_stream_random(void **state) {
    (void)state;
    char in[64], out[3 * 64 + 16];
    for (int iter = 0; iter < 20000; iter++) {
        size_t n = rnd() % 40;
        bool valid = iter % 2;
        if (valid) n = random_utf8(in, (int)(rnd() % 10));
        else random_bytes(in, n);
        heed_utf8_stream s = {0};
        size_t pos = 0, len = 0;
        while (pos < n) {
            size_t k = 1 + rnd() % (n - pos);
            size_t got = heed_utf8_stream_push(&s, in + pos, k, out + len);
            assert_true(got <= 3 * k + 3); /* the bound heed.h promises */
            len += got;
            pos += k;
        }
        len += heed_utf8_stream_flush(&s, out + len);
        assert_true(valid_utf8((unsigned char *)out, len));
        if (valid) {
            assert_int_equal(len, n);
            assert_memory_equal(out, in, n);
        } else {
            assert_true(len >= n); /* nothing vanishes: each bad byte or prefix is a U+FFFD */
        }
    }
}

/* ------------------------------------------------------------- random */

static void test_random_encode(void **state) {
    (void)state;
    loaded l = load_path(STORIES);
    static int32_t ids[1024];
    static char in[256], out[4096];
    for (int iter = 0; iter < 5000; iter++) {
        size_t n = rnd() % 64;
        random_bytes(in, n);
        int k = tok_encode(l.v, in, n, iter % 2, ids, 1024);
        bool valid = valid_utf8((unsigned char *)in, n);
        if (valid) assert_true(k >= 0);
        else assert_int_equal(k, HEED_ERR_INVALID_ARG);
    }
    for (int iter = 0; iter < 5000; iter++) {
        size_t n = random_utf8(in, (int)(rnd() % 40));
        int k = tok_encode(l.v, in, n, false, ids, 1024);
        assert_true(k >= (n > 0) && k <= 1024);
        for (int i = 0; i < k; i++) {
            char lab[64];
            int m = tok_label(l.v, ids[i], lab, sizeof lab);
            assert_true(m > 0 && m < (int)sizeof lab);
            assert_true(valid_utf8((unsigned char *)lab, (size_t)m));
        }
        size_t len = decode_ids(l.v, ids, k, out, sizeof out);
        if (n == 0) {
            assert_int_equal(len, 0);
            continue;
        }
        assert_int_equal(len, n + 1);
        assert_int_equal(out[0], ' ');
        assert_memory_equal(out + 1, in, n);
    }
    unload(&l);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_once_upon),
        cmocka_unit_test(test_stories_lily_fixture),
        cmocka_unit_test(test_stories_labels),
        cmocka_unit_test(test_stories_byte_fallback),
        cmocka_unit_test(test_empty_text),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_vectors_llama_spm),
        cmocka_unit_test(test_vectors_phi3),
        cmocka_unit_test(test_gpt2_decode_llama_bpe),
        cmocka_unit_test(test_gpt2_decode_others),
        cmocka_unit_test(test_gpt2_labels),
        cmocka_unit_test(test_labels_llama3),
        cmocka_unit_test(test_labels_qwen2),
        cmocka_unit_test(test_labels_smollm2),
        cmocka_unit_test(test_load_vocabularies),
        cmocka_unit_test(test_vocab_only_model),
        cmocka_unit_test(test_gemma2_fixture),
        cmocka_unit_test(test_gemma3_fixture),
        cmocka_unit_test(test_golden_gemma_phi3),
        cmocka_unit_test(test_spm_merge_rules),
        cmocka_unit_test(test_spm_duplicate_piece),
        cmocka_unit_test(test_spm_types_absent),
        cmocka_unit_test(test_labels_handmade),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_utf8_stream_splits),
        cmocka_unit_test(test_utf8_stream_invalid),
        cmocka_unit_test(test_utf8_stream_random),
        cmocka_unit_test(test_random_encode),
    };
    return cmocka_run_group_tests_name("tok", tests, NULL, NULL);
}
