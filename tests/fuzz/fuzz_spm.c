/*
 * fuzz_spm - libFuzzer target for SentencePiece encoding (the "llama"
 * vocabularies: score-ordered bigram merges, byte fallback): any input must
 * be encoded or refused as invalid UTF-8, never read out of bounds or leak;
 * valid UTF-8 must decode back to itself (plus the space prefix, with
 * U+2581 read as the space it escapes), a short id buffer must receive a
 * prefix of the full result, and every label must be valid UTF-8.
 *
 * The vocabulary is the bundled model's (stories260K, 512 pieces with byte
 * fallback, linked into libheed), or $HEED_FUZZ_VOCAB: a GGUF file such as
 * ../shared/vocab/ggml-vocab-llama-spm.gguf. Seeds: tests/fuzz/corpus_spm.
 *
 *   make fuzz && build-fuzz/fuzz/fuzz_spm DIR tests/fuzz/corpus_spm
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "gguf.h"
#include "heed.h"
#include "model.h"
#include "tok.h"

/* libFuzzer's entry points take no context: the vocabulary lives here,
 * loaded once, read-only afterwards. */
static heed_model *g_model; /* the bundled model, or NULL */
static gguf_file *g_file;   /* $HEED_FUZZ_VOCAB, or NULL */
static const tok_vocab *g_vocab;
static int g_byte_fallback; /* every byte has a <0xXX> token: valid text must round-trip */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *path = getenv("HEED_FUZZ_VOCAB");
    char err[256] = "", why[512];
    int rc;
    if (path) {
        g_file = gguf_open(path, &rc, err, sizeof err);
        tok_vocab *v = g_file ? tok_load(g_file, &rc, err, sizeof err) : NULL;
        g_vocab = v;
    } else if (heed_model_load(NULL, NULL, &g_model, err, sizeof err) == HEED_OK) {
        g_vocab = g_model->vocab;
    }
    if (!g_vocab || !tok_can_encode(g_vocab) || strcmp(tok_model_name(g_vocab), "llama") != 0) {
        snprintf(why, sizeof why, "fuzz_spm: %s: %s", path ? path : "bundled model",
                 !g_vocab ? err : "not a SentencePiece vocabulary heed encodes");
        fuzz_unavailable(why);
        return 0;
    }
    int n_bytes = 0;
    for (int b = 0; b < 256; b++) {
        char piece[8];
        snprintf(piece, sizeof piece, "<0x%02X>", b);
        for (int32_t id = 0; id < tok_n_vocab(g_vocab); id++)
            if (strcmp(tok_piece(g_vocab, id), piece) == 0) {
                n_bytes++;
                break;
            }
    }
    g_byte_fallback = n_bytes == 256;
    return 0;
}

/* What decoding the encoded text gives: the space prefix (for non-empty
 * text), then the text with each U+2581 as a space. Returns the length. */
static size_t expected_text(const uint8_t *data, size_t size, char *out) {
    size_t n = 0;
    if (size && tok_add_space_prefix(g_vocab)) out[n++] = ' ';
    for (size_t i = 0; i < size; i++) {
        if (i + 2 < size && data[i] == 0xe2 && data[i + 1] == 0x96 && data[i + 2] == 0x81) {
            out[n++] = ' ';
            i += 2;
        } else {
            out[n++] = (char)data[i];
        }
    }
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* a token covers at least one byte; with the prefix and BOS, two more */
    int n_max = (int)size + 2;
    int32_t *ids = malloc((size_t)n_max * sizeof *ids);
    char *out = malloc(size + 2), *want = malloc(size + 2), label[256];
    if (!ids || !out || !want) abort();
    const char *text = (const char *)data;
    int n = tok_encode(g_vocab, text, size, false, ids, n_max);
    if (!fuzz_valid_utf8(data, size)) {
        if (n != HEED_ERR_INVALID_ARG) __builtin_trap();
    } else if (n == HEED_ERR_TOKENIZER && !g_byte_fallback) {
        /* a character with no piece and no byte token: refused, which is allowed */
    } else {
        if (n < 0 || n > n_max - 1) __builtin_trap();
        size_t len = 0;
        for (int i = 0; i < n; i++) {
            int k = tok_bytes(g_vocab, ids[i], out + len, size + 2 - len);
            if (k < 0 || len + (size_t)k > size + 1) __builtin_trap();
            len += (size_t)k;
            int m = tok_label(g_vocab, ids[i], label, sizeof label);
            if (m < 0 || ((size_t)m < sizeof label && !fuzz_valid_utf8((const uint8_t *)label, (size_t)m)))
                __builtin_trap();
        }
        size_t want_len = expected_text(data, size, want);
        if (g_byte_fallback && (len != want_len || memcmp(out, want, len) != 0)) __builtin_trap();
        fuzz_check_short_buffer(g_vocab, text, size, ids, n);
        /* special-token parsing and BOS: still at most a token per byte,
         * plus the space prefix and the BOS */
        bool bos = tok_bos(g_vocab) >= 0;
        int m = tok_encode_ex(g_vocab, text, size, bos, true, ids, n_max);
        if (m < (int)bos || m > n_max) __builtin_trap();
    }
    free(ids);
    free(out);
    free(want);
    return 0;
}
