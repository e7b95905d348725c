/*
 * fuzzutil.c - helpers the fuzz harnesses share (fuzz.h): a per-process
 * temporary folder removed at exit, file writes, string copies. Linked
 * into both builds of every harness (libFuzzer and replay.c).
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fuzz.h"
#include "tok.h"

/* The process's folder: set once by fuzz_tmpdir, removed by the atexit
 * handler. The harnesses are single-threaded (libFuzzer calls them from one
 * thread), so this one piece of global state needs no lock. */
static char g_tmpdir[PATH_MAX];

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void remove_tmpdir(void) {
    if (g_tmpdir[0]) nftw(g_tmpdir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fuzz_tmpdir(void) {
    if (g_tmpdir[0]) return g_tmpdir;
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    if ((size_t)snprintf(g_tmpdir, sizeof g_tmpdir, "%s/heed-fuzz-XXXXXX", base) >= sizeof g_tmpdir ||
        !mkdtemp(g_tmpdir)) {
        fprintf(stderr, "fuzz: cannot make a folder under %s: %s\n", base, strerror(errno));
        exit(1);
    }
    atexit(remove_tmpdir);
    return g_tmpdir;
}

void fuzz_write_file(const char *dir, const char *name, const void *data, size_t n) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(stderr, "fuzz: cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
}

void fuzz_remove_file(const char *dir, const char *name) {
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    unlink(path);
}

char *fuzz_strndup(const void *data, size_t n) {
    char *s = malloc(n + 1);
    if (!s) abort();
    if (n) memcpy(s, data, n);
    s[n] = '\0';
    return s;
}

/* Strict UTF-8, written independently of tok.c (code point arithmetic). */
int fuzz_valid_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        int len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!len || i + (size_t)len > n) return 0;
        uint32_t cp = len == 1 ? c : c & (0x3fu >> (len - 1));
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += (size_t)len;
    }
    return 1;
}

void fuzz_check_short_buffer(const struct tok_vocab *v, const char *text, size_t size, const int32_t *ids, int n) {
    int32_t few[3] = {-1, -1, -1};
    if (tok_encode(v, text, size, false, few, 2) != n) __builtin_trap();
    for (int i = 0; i < 2 && i < n; i++)
        if (few[i] != ids[i]) __builtin_trap();
    if (few[2] != -1) __builtin_trap();
}
