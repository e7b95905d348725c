/*
 * replay.c - runs a fuzz harness over its committed corpus without
 * libFuzzer: the test suite's $(BUILD)/tests/test_fuzz_NAME (Makefile),
 * built with gcc in the normal and the ASan+UBSan build, so `make test`
 * passes every seed through every harness under the sanitizers.
 *
 *   build/tests/test_fuzz_NAME            every file of tests/fuzz/corpus_NAME
 *   build/tests/test_fuzz_NAME PATH...    those files, or every file of those folders
 *                                         (a crash reproducer, a fuzzer's own corpus)
 *
 * Each input is one cmocka test named after its file: it is copied into a
 * heap buffer of exactly its size (as libFuzzer does, so ASan sees a read
 * one past the end) and handed to LLVMFuzzerTestOneInput once. A harness
 * fails by crashing or trapping, as under libFuzzer. A harness whose data
 * is absent (fuzz_unavailable) gives one skipped test saying why.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "fuzz.h"

#ifndef FUZZ_NAME
#error "FUZZ_NAME names the harness (the Makefile defines it)"
#endif

/* Optional in a harness: NULL when it has none. */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static const char *g_skip; /* fuzz_unavailable's reason; NULL while the harness can run */

void fuzz_unavailable(const char *why) {
    if (!g_skip) g_skip = strdup(why);
}

static void replay_one(void **state) {
    const char *path = *state;
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("%s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    assert_non_null(buf);
    for (size_t k; (k = fread(buf + n, 1, cap - n, f)) > 0;) {
        n += k;
        if (n == cap) {
            buf = realloc(buf, cap *= 2);
            assert_non_null(buf);
        }
    }
    fclose(f);
    uint8_t *exact = malloc(n ? n : 1); /* exactly n bytes: ASan sees any read past them */
    assert_non_null(exact);
    if (n) memcpy(exact, buf, n);
    free(buf);
    LLVMFuzzerTestOneInput(exact, n);
    free(exact);
}

static void skipped(void **state) {
    (void)state;
    print_message("SKIP: %s\n", g_skip);
    skip();
}

typedef struct test_list {
    struct CMUnitTest *t;
    int n, cap;
} test_list;

static void add_test(test_list *l, const char *path, const char *name) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->t = realloc(l->t, (size_t)l->cap * sizeof *l->t);
        if (!l->t) abort();
    }
    char *p = strdup(path), *nm = strdup(name);
    if (!p || !nm) abort();
    l->t[l->n++] = (struct CMUnitTest){.name = nm, .test_func = replay_one, .initial_state = p};
}

static void free_tests(test_list *l) {
    for (int i = 0; i < l->n; i++) {
        free((char *)l->t[i].name);
        free(l->t[i].initial_state);
    }
    l->n = 0;
}

static int visible(const struct dirent *e) { return e->d_name[0] != '.'; }

/* A file, or every regular file of a folder in name order. Returns 0, or -1
 * when the path cannot be read. */
static int add_path(test_list *l, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    if (!S_ISDIR(st.st_mode)) {
        const char *slash = strrchr(path, '/');
        add_test(l, path, slash ? slash + 1 : path);
        return 0;
    }
    struct dirent **names;
    int n = scandir(path, &names, visible, alphasort);
    if (n < 0) return -1;
    for (int i = 0; i < n; i++) {
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", path, names[i]->d_name);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode)) add_test(l, p, names[i]->d_name);
        free(names[i]);
    }
    free(names);
    return 0;
}

int main(int argc, char **argv) {
    test_list l = {0};
    const char *corpus = "tests/fuzz/corpus_" FUZZ_NAME;
    if (argc > 1) {
        for (int i = 1; i < argc; i++)
            if (add_path(&l, argv[i]) != 0) {
                fprintf(stderr, "test_fuzz_%s: %s: %s\n", FUZZ_NAME, argv[i], strerror(errno));
                return 1;
            }
    } else if (add_path(&l, corpus) != 0 || l.n == 0) {
        /* the committed corpus is part of the tree: its absence is a failure */
        fprintf(stderr, "test_fuzz_%s: %s is absent or empty (run from the repository root)\n", FUZZ_NAME,
                corpus);
        return 1;
    }
    int one = 1;
    char *arg0[] = {argv[0], NULL}, **args = arg0;
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&one, &args);
    if (g_skip) {
        char name[128];
        snprintf(name, sizeof name, "corpus_%s (%d inputs)", FUZZ_NAME, l.n);
        free_tests(&l);
        add_test(&l, corpus, name);
        l.t[0].test_func = skipped;
    }
    char group[64];
    snprintf(group, sizeof group, "fuzz_%s corpus replay", FUZZ_NAME);
    int rc = _cmocka_run_group_tests(group, l.t, (size_t)l.n, NULL, NULL);
    free_tests(&l);
    free(l.t);
    return rc;
}
