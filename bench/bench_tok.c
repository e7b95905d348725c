/*
 * bench_tok - tokenizer figures: loading a byte-level BPE vocabulary
 * (128k tokens, 280k merges for Llama 3; target < 200 ms), tokenizing
 * 1 MiB of English prose (target < 1 s), and loading the same tokenizer
 * from a Hugging Face tokenizer.json.
 *
 *   bench_tok [-r REPEATS] [VOCAB.gguf ...]
 *
 * Default vocabularies: ../shared/vocab/ggml-vocab-{llama-bpe,qwen2,smollm2}.gguf
 * (skipped when absent). Prints the best of REPEATS runs (least disturbed
 * by the machine). The text is generated deterministically: a few
 * paragraphs of varied prose, each copy with its own numbers, so no two
 * paragraphs are identical.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "heed.h"
#include "tok.h"

#define TEXT_BYTES (1 << 20)

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static uint32_t rng = 12345;
static int next(int mod) {
    rng = rng * 1103515245u + 12345u;
    return (int)((rng >> 8) % (uint32_t)mod);
}

/* Paragraph k of the text (one of five kinds, with fresh numbers). */
static int paragraph(char *out, size_t size, int k) {
    int a = next(28) + 1, b = next(999) + 1, c = next(1000), d = next(100);
    switch (k % 5) {
    case 0:
        return snprintf(out, size,
                        "The committee met on Tuesday, March %d, to review the budget of $%d,%03d.%02d for the "
                        "coming year. Dr. O'Neill argued that the new laboratory (room %d-B) wouldn't be ready "
                        "before autumn; others disagreed.\n\n", a, b, c, d, b % 40);
    case 1:
        return snprintf(out, size,
                        "\"We've already spent %d%% of the grant,\" she said, \"and it's only the %dth week!\" "
                        "Nobody answered. Outside, the rain kept falling on the old caf\u00e9's windows \u2014 a "
                        "na\u00efve reminder that weather ignores plans.\n", d, a);
    case 2:
        return snprintf(out, size,
                        "In %d, the population of the valley was roughly %d people; by %d it had grown to "
                        "%d,%03d. Historians attribute the change to the railway, the mines, and (perhaps) to "
                        "sheer luck: 3 harvests in a row.\n\n", 1800 + c % 100, b * 7, 1900 + d, b, c);
    case 3:
        return snprintf(out, size,
                        "Step %d: heat the oven to %d degrees. Step %d: mix 2 cups of flour with 1/2 teaspoon of "
                        "salt... Don't forget the eggs!!! If the dough feels dry, add water; if it's sticky, add "
                        "flour - simple, isn't it?\n", a, 150 + c % 100, a + 1);
    default:
        return snprintf(out, size,
                        "    def area(r):\n        return 3.14159 * r ** 2  # radius %d -> %d\n\n"
                        "Email j.smith@example.org or call +1 (555) %03d-%04d before 5:30 p.m. on weekdays.\n",
                        a, a * a, c, b * 10 + d % 10);
    }
}

/* Exactly TEXT_BYTES of prose (UTF-8), the tail padded with spaces where
 * the last paragraph is cut inside a character. */
static char *make_text(size_t *len) {
    char *t = malloc(TEXT_BYTES + 1024);
    if (!t) return NULL;
    size_t n = 0;
    for (int k = 0; n < TEXT_BYTES; k++) n += (size_t)paragraph(t + n, 1024, k);
    size_t cut = TEXT_BYTES;
    while (cut > 0 && ((unsigned char)t[cut] & 0xc0) == 0x80) cut--; /* t[cut] starts a character */
    memset(t + cut, ' ', TEXT_BYTES - cut);
    *len = TEXT_BYTES;
    return t;
}

static void bench_vocab(const char *path, const char *text, size_t len, int repeats, int32_t *ids) {
    char err[256];
    int rc;
    double t0 = now_ms();
    gguf_file *f = gguf_open(path, &rc, err, sizeof err);
    double open_ms = now_ms() - t0;
    if (!f) {
        printf("%s: %s\n", path, err);
        return;
    }
    double load_ms = 1e30, enc_ms = 1e30;
    tok_vocab *v = NULL;
    for (int r = 0; r < repeats; r++) {
        tok_free(v);
        t0 = now_ms();
        v = tok_load(f, &rc, err, sizeof err);
        double ms = now_ms() - t0;
        if (!v) {
            printf("%s: %s\n", path, err);
            gguf_close(f);
            return;
        }
        if (ms < load_ms) load_ms = ms;
    }
    int n = 0;
    for (int r = 0; r < repeats && tok_can_encode(v); r++) {
        t0 = now_ms();
        n = tok_encode(v, text, len, false, ids, (int)len);
        double ms = now_ms() - t0;
        if (ms < enc_ms) enc_ms = ms;
    }
    const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    printf("%-28s %7d tokens  gguf_open %6.1f ms  tok_load %6.1f ms%s\n", name, tok_n_vocab(v), open_ms, load_ms,
           load_ms < 200 ? "" : "  (over the 200 ms target)");
    if (n < 0) printf("%-28s encode failed: %s\n", "", heed_strerror(n));
    else if (tok_can_encode(v))
        printf("%-28s 1 MiB -> %d tokens in %6.1f ms (%.1f MB/s, %.2f M tokens/s)%s\n", "", n, enc_ms,
               len / enc_ms / 1e3, n / enc_ms / 1e3, enc_ms < 1000 ? "" : "  (over the 1 s target)");
    tok_free(v);
    gguf_close(f);
}

static void bench_hf(const char *dir, int repeats) {
    char err[256];
    int rc;
    double best = 1e30;
    for (int r = 0; r < repeats; r++) {
        double t0 = now_ms();
        tok_vocab *v = tok_load_hf(dir, &rc, err, sizeof err);
        double ms = now_ms() - t0;
        if (!v) {
            printf("%s: %s\n", dir, err);
            return;
        }
        tok_free(v);
        if (ms < best) best = ms;
    }
    printf("%-28s tok_load_hf (tokenizer.json) %6.1f ms\n", "hf-tiny-llama3/", best);
}

int main(int argc, char **argv) {
    int repeats = 3, first = 1;
    if (argc > 2 && strcmp(argv[1], "-r") == 0) {
        repeats = atoi(argv[2]);
        first = 3;
        if (repeats < 1) repeats = 1;
    }
    static const char *const dflt[] = {"../shared/vocab/ggml-vocab-llama-bpe.gguf",
                                       "../shared/vocab/ggml-vocab-qwen2.gguf",
                                       "../shared/vocab/ggml-vocab-smollm2.gguf"};
    size_t len;
    char *text = make_text(&len);
    int32_t *ids = malloc(len * sizeof *ids);
    if (!text || !ids) return 1;
    if (first < argc) {
        for (int i = first; i < argc; i++) bench_vocab(argv[i], text, len, repeats, ids);
    } else {
        for (int i = 0; i < 3; i++) {
            if (access(dflt[i], R_OK) == 0) bench_vocab(dflt[i], text, len, repeats, ids);
            else printf("%s: SKIP (absent)\n", dflt[i]);
        }
        if (access("../shared/models/hf-tiny-llama3/tokenizer.json", R_OK) == 0)
            bench_hf("../shared/models/hf-tiny-llama3", repeats);
    }
    free(text);
    free(ids);
    return 0;
}
