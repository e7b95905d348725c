/*
 * fuzz_gguf - libFuzzer target for the GGUF reader: any input must be
 * accepted or rejected with a message, never read out of bounds or leak.
 * Seeds: tests/fuzz/corpus_gguf (written by tests/test_gguf.c, see there).
 *
 *   make fuzz && build-fuzz/fuzz/fuzz_gguf DIR tests/fuzz/corpus_gguf   (new inputs go to DIR)
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "fuzz.h"
#include "gguf.h"
#include "heed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[256];
    int rc = HEED_OK;
    gguf_file *f = gguf_open_buffer(data, size, "fuzz.gguf", &rc, err, sizeof err);
    if (f) {
        /* Touch what a loader would: every tensor's bytes and every value's text. */
        volatile uint8_t sink = 0;
        for (int i = 0; i < f->n_tensors; i++) {
            const uint8_t *p = f->tensors[i].data;
            sink ^= p[0] ^ p[f->tensors[i].n_bytes - 1];
        }
        char buf[128];
        for (int i = 0; i < f->n_kv; i++) gguf_kv_format(&f->kv[i], buf, sizeof buf, 4);
        (void)sink;
    } else if (rc == HEED_OK || strncmp(err, "fuzz.gguf: ", 11) != 0) {
        __builtin_trap(); /* a rejection must say why, naming the file */
    }
    gguf_close(f);
    return 0;
}
