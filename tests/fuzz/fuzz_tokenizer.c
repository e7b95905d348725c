/*
 * fuzz_tokenizer - libFuzzer target for Hugging Face tokenizer loading
 * (tok_load_hf: tokenizer.json and tokenizer_config.json): any pair of
 * files must load or be refused with a message naming the file, never read
 * out of bounds or leak; a vocabulary that loads must encode a few texts
 * (at most a token per byte, plus BOS), and decode and label every id.
 *
 * Input: tokenizer.json, then optionally a NUL byte and
 * tokenizer_config.json (JSON text holds no raw NUL). tok_load_hf reads a
 * folder, so both go into this process's temporary folder (fuzz.h).
 *
 *   make fuzz && build-fuzz/fuzz/fuzz_tokenizer DIR tests/fuzz/corpus_tokenizer
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "heed.h"
#include "tok.h"

/* Texts every loaded vocabulary encodes: words, digits, specials of the
 * seeds, user-defined tokens, non-ASCII, newlines, an empty text. */
static const char *const TEXTS[] = {
    "Hello world, the user said 1234567!",
    "<|bos|>x<tool><|eot_id|><|im_start|>user\n",
    "\xe6\x97\xa5\xe6\x9c\xac caf\xc3\xa9 \xf0\x9f\x99\x82\n\n\t  end",
    "",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *dir = fuzz_tmpdir();
    const uint8_t *nul = memchr(data, 0, size), *cfg = nul ? nul + 1 : NULL;
    size_t n_tok = nul ? (size_t)(nul - data) : size, n_cfg = nul ? size - n_tok - 1 : 0;
    fuzz_write_file(dir, "tokenizer.json", data, n_tok);
    if (cfg) fuzz_write_file(dir, "tokenizer_config.json", cfg, n_cfg);
    else fuzz_remove_file(dir, "tokenizer_config.json");

    char err[512] = "";
    int rc = HEED_OK;
    tok_vocab *v = tok_load_hf(dir, &rc, err, sizeof err);
    if (!v) {
        /* a refusal says why, naming the file (or memory) */
        if (rc >= 0 || (strncmp(err, dir, strlen(dir)) != 0 && !strstr(err, "out of memory"))) __builtin_trap();
        return 0;
    }
    int n_vocab = tok_n_vocab(v);
    if (n_vocab <= 0 || strcmp(tok_model_name(v), "gpt2") != 0) __builtin_trap();
    int32_t bos = tok_bos(v);
    if (bos >= n_vocab || tok_eos(v) >= n_vocab || tok_eot(v) >= n_vocab) __builtin_trap();
    if (tok_add_bos(v) && bos < 0) __builtin_trap();
    const char *tmpl = tok_chat_template(v);
    if (tmpl) (void)strlen(tmpl);

    /* decode and label every id */
    char buf[256];
    for (int32_t id = 0; id < n_vocab; id++) {
        if (!tok_piece(v, id)) __builtin_trap();
        if (tok_bytes(v, id, buf, sizeof buf) < 0 || tok_label(v, id, buf, sizeof buf) < 0) __builtin_trap();
        (void)tok_is_eog(v, id);
    }
    if (tok_piece(v, n_vocab) || tok_bytes(v, n_vocab, buf, sizeof buf) >= 0) __builtin_trap();

    if (tok_can_encode(v)) {
        for (size_t t = 0; t < sizeof TEXTS / sizeof TEXTS[0]; t++) {
            const char *text = TEXTS[t];
            size_t len = strlen(text);
            int32_t ids[128];
            for (int special = 0; special < 2; special++) {
                bool add_bos = special && bos >= 0;
                int n = tok_encode_ex(v, text, len, add_bos, special, ids, 128);
                /* a regex that gave up is a refusal; else a token per byte at most */
                if (n == HEED_ERR_TOKENIZER) continue;
                if (n < 0 || (size_t)n > len + add_bos) __builtin_trap();
                for (int i = 0; i < n; i++)
                    if (ids[i] < 0 || ids[i] >= n_vocab) __builtin_trap();
            }
        }
    } else if (!tok_encode_refusal(v)) {
        __builtin_trap(); /* a vocabulary that cannot encode says why */
    }
    tok_free(v);
    return 0;
}
