/*
 * fuzz_safetensors - libFuzzer target for the safetensors reader: any input
 * must be accepted or rejected with a message naming the file, never read
 * out of bounds or leak. Seeds: HEED_WRITE_CORPUS=dir build/tests/test_hf
 * writes a valid file and every corrupt case of its parser table
 * (tests/fuzz/corpus_safetensors).
 *
 *   make fuzz && build-fuzz/fuzz/fuzz_safetensors DIR tests/fuzz/corpus_safetensors
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "heed.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* libFuzzer's buffer is exactly `size` bytes, so ASan sees any read past
     * it; the copy gives the alignment a mapping would */
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf) return 0;
    if (size) memcpy(buf, data, size);
    char err[256];
    int rc = HEED_OK;
    st_file *f = st_open_buffer(buf, size, "fuzz.safetensors", &rc, err, sizeof err);
    if (f) {
        /* Touch what a loader would: every tensor's first and last byte, and
         * the lookup of every name. */
        volatile uint8_t sink = 0;
        for (int i = 0; i < f->n_tensors; i++) {
            const st_tensor *t = &f->tensors[i];
            if (t->n_bytes) sink ^= ((const uint8_t *)t->data)[0] ^ ((const uint8_t *)t->data)[t->n_bytes - 1];
            if (st_find(f, t->name) != t) __builtin_trap();
        }
        (void)sink;
    } else if (rc == HEED_OK || strncmp(err, "fuzz.safetensors: ", 18) != 0) {
        __builtin_trap(); /* a rejection must say why, naming the file */
    }
    st_close(f);
    free(buf);
    return 0;
}
