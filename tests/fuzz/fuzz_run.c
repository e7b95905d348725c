/*
 * fuzz_run.c - libFuzzer target for the run-file loader: any bytes must be
 * loaded or refused cleanly (a message naming the file), never read out of
 * bounds. Seeds: tests/fuzz/corpus_run (small runs saved by heed).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "heed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    FILE *f = fmemopen((void *)data, size, "rb");
    if (!f) return 0;
    char err[256] = "";
    heed_run *run = NULL;
    int rc = heed_run_read(f, size, "fuzz.run", &run, err, sizeof err);
    fclose(f);
    if (rc == HEED_OK) {
        heed_run_info info;
        heed_run_get_info(run, &info);
        heed_run_free(run);
    } else if (strncmp(err, "fuzz.run", 8) != 0) {
        __builtin_trap(); /* every refusal names the file */
    }
    return 0;
}
