/*
 * fuzz_bpe - libFuzzer target for byte-level BPE encoding: any input must
 * be encoded or refused as invalid UTF-8, never read out of bounds or
 * leak; valid UTF-8 must decode back to itself, and a short id buffer must
 * receive a prefix of the full result.
 *
 * The vocabulary is loaded once: $HEED_FUZZ_VOCAB, else
 * ../shared/vocab/ggml-vocab-llama-bpe.gguf (run from the repository root);
 * without it the replay in the test suite skips, saying so. Seeds:
 * tests/fuzz/corpus_bpe.
 *
 *   make fuzz && build-fuzz/fuzz/fuzz_bpe -max_total_time=60
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "gguf.h"
#include "heed.h"
#include "tok.h"

/* libFuzzer's entry points take no context: the vocabulary lives here,
 * loaded once, read-only afterwards. */
static gguf_file *g_file;
static tok_vocab *g_vocab;
static int g_all_bytes; /* every byte has a token, so valid text must round-trip */

/* Whether each of the 256 byte-alphabet characters (U+0021..U+0143 minus
 * the gaps; found as one-character pieces that tok_bytes turns into one
 * byte) is a token: some vocabularies lack a few, which encoding drops. */
static int covers_all_bytes(const tok_vocab *v) {
    int seen[256] = {0}, n = 0;
    for (int32_t id = 0; id < tok_n_vocab(v); id++) {
        const char *p = tok_piece(v, id);
        size_t len = strlen(p);
        char b[4];
        if (len < 1 || len > 2 || tok_bytes(v, id, b, sizeof b) != 1) continue;
        if (len == 2 && ((unsigned char)p[0] < 0xc2 || (unsigned char)p[0] > 0xc5)) continue;
        if (!seen[(unsigned char)b[0]]++) n++;
    }
    return n == 256;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *path = getenv("HEED_FUZZ_VOCAB");
    if (!path) path = "../shared/vocab/ggml-vocab-llama-bpe.gguf";
    char err[256];
    int rc;
    g_file = gguf_open(path, &rc, err, sizeof err);
    g_vocab = g_file ? tok_load(g_file, &rc, err, sizeof err) : NULL;
    if (!g_vocab || !tok_can_encode(g_vocab)) {
        char why[512];
        snprintf(why, sizeof why, "fuzz_bpe: %s: %s", path, g_vocab ? "cannot encode" : err);
        fuzz_unavailable(why);
        return 0;
    }
    g_all_bytes = covers_all_bytes(g_vocab);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    int32_t *ids = malloc((size + 1) * sizeof *ids); /* a token covers at least one byte */
    char *out = malloc(size + 1);
    if (!ids || !out) abort();
    const char *text = (const char *)data;
    int n = tok_encode(g_vocab, text, size, false, ids, (int)size + 1);
    if (!fuzz_valid_utf8(data, size)) {
        if (n != HEED_ERR_INVALID_ARG) __builtin_trap();
    } else {
        if (n < 0 || (size_t)n > size) __builtin_trap();
        size_t len = 0;
        for (int i = 0; i < n; i++) {
            int k = tok_bytes(g_vocab, ids[i], out + len, size + 1 - len);
            if (k < 0 || len + (size_t)k > size) __builtin_trap();
            len += (size_t)k;
        }
        if (g_all_bytes && (len != size || memcmp(out, data, size) != 0)) __builtin_trap();
        fuzz_check_short_buffer(g_vocab, text, size, ids, n);
        /* special-token parsing (and BOS where the vocabulary has one):
         * never more tokens than bytes, plus the BOS */
        bool bos = tok_bos(g_vocab) >= 0;
        int m = tok_encode_ex(g_vocab, text, size, bos, true, ids, (int)size + 1);
        if (m < (int)bos || (size_t)m > size + bos) __builtin_trap();
    }
    free(ids);
    free(out);
    return 0;
}
