/*
 * fuzz.h - what the harnesses of tests/fuzz/ share.
 *
 * Each fuzz_NAME.c is built twice:
 *   - against libFuzzer (`make fuzz`: build-fuzz/fuzz/fuzz_NAME, the whole
 *     library instrumented for coverage, ASan and UBSan);
 *   - against tests/fuzz/replay.c (FUZZ_REPLAY defined; the test suite's
 *     $(BUILD)/tests/test_fuzz_NAME), which runs every file of
 *     tests/fuzz/corpus_NAME/ through LLVMFuzzerTestOneInput once, as one
 *     cmocka test per file, in the normal and in the ASan+UBSan build.
 * A harness must therefore compile cleanly under the project's warning
 * flags with gcc and clang, and must not depend on libFuzzer's runtime.
 *
 * Temporary files: harnesses that need files (a Hugging Face folder, the
 * server's data folder) make one folder per process with fuzz_tmpdir; it
 * and everything in it is removed at exit.
 */
#ifndef HEED_FUZZ_H
#define HEED_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libFuzzer's entry points. LLVMFuzzerInitialize is optional (replay.c
 * declares it weak); it may call fuzz_unavailable. */
int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * The harness cannot run here, for a reason that is not a bug: data it
 * needs (a vocabulary of ../shared) is absent. Under libFuzzer: prints
 * "NAME: why" and exits 1. Under replay.c: the corpus is reported as one
 * skipped test with the reason, and no input is run; the harness returns
 * from LLVMFuzzerInitialize after the call.
 */
#ifdef FUZZ_REPLAY
void fuzz_unavailable(const char *why);
#else
static inline void fuzz_unavailable(const char *why) {
    fprintf(stderr, "%s\n", why);
    exit(1);
}
#endif

/*
 * A folder for this process's files: $TMPDIR (or /tmp)/heed-fuzz-XXXXXX,
 * created on the first call and removed with its contents at exit. Returns
 * its path (static storage); exits 1 if it cannot be made, which is not an
 * input's fault.
 */
const char *fuzz_tmpdir(void);

/* Writes n bytes to DIR/name (replacing it); exits 1 on an I/O error. */
void fuzz_write_file(const char *dir, const char *name, const void *data, size_t n);

/* Removes DIR/name if it exists. */
void fuzz_remove_file(const char *dir, const char *name);

/* Is s (n bytes) strict UTF-8 (no overlongs, surrogates or code points past
 * U+10FFFF)? Written independently of the library's own check. */
int fuzz_valid_utf8(const uint8_t *s, size_t n);

/* Encoding text (size bytes, no BOS) into a buffer of 2 gives the same count
 * n as into a big one and the first two of its ids, and writes nothing past
 * the buffer; traps otherwise. */
struct tok_vocab;
void fuzz_check_short_buffer(const struct tok_vocab *v, const char *text, size_t size, const int32_t *ids, int n);

/* A NUL-terminated malloc'd copy of n bytes; aborts when out of memory. */
char *fuzz_strndup(const void *data, size_t n);

#endif
