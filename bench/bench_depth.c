/*
 * bench_depth - decode after a long prompt: one prompt of P tokens, then
 * decode N tokens from that depth again and again (the context rewound to P
 * between), with decode attention split across keys (the default) and not,
 * alternating, best of R each. No capture.
 *
 *   bench_depth -m MODEL [-p P] [-n N] [-t THREADS] [-r R]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "forward.h"
#include "heed.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int n_prompt = 4096, n_gen = 32, n_threads = 2, repeats = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-m")) path = argv[i + 1];
        else if (!strcmp(argv[i], "-p")) n_prompt = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-n")) n_gen = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-t")) n_threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-r")) repeats = atoi(argv[i + 1]);
    }
    char err[512];
    heed_model *m;
    if (heed_model_load(path, NULL, &m, err, sizeof err)) {
        fprintf(stderr, "bench_depth: %s\n", err);
        return 1;
    }
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    heed_ctx_params cp = heed_ctx_default_params();
    cp.n_threads = n_threads;
    cp.n_ctx = n_prompt + n_gen + 1;
    heed_ctx *c;
    if (cp.n_ctx > mi.n_ctx_train || heed_ctx_new(m, &cp, &c)) {
        fprintf(stderr, "bench_depth: cannot make a context of %d (the model's limit is %d)\n", cp.n_ctx, mi.n_ctx_train);
        return 1;
    }
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n_prompt);
    uint32_t s = 1;
    for (int i = 0; i < n_prompt; i++) ids[i] = (int32_t)((s = s * 1664525u + 1013904223u) >> 8) % mi.n_vocab;
    double t0 = now_s();
    if (heed_decode(c, ids, n_prompt)) {
        fprintf(stderr, "bench_depth: %s\n", heed_ctx_error(c));
        return 1;
    }
    double pp = n_prompt / (now_s() - t0);
    double best[2] = {0, 0};
    for (int r = 0; r < repeats; r++)
        for (int split = 1; split >= 0; split--) {
            forward_rewind(c, n_prompt);
            forward_set_key_chunk(c, split ? 512 : 0);
            int32_t id = ids[0];
            t0 = now_s();
            for (int t = 0; t < n_gen; t++) {
                if (heed_decode(c, &id, 1)) return 1;
                const float *lg = heed_ctx_logits(c);
                int b = 0;
                for (int v = 1; v < mi.n_vocab; v++) b = lg[v] > lg[b] ? v : b;
                id = b;
            }
            double tps = n_gen / (now_s() - t0);
            if (tps > best[split]) best[split] = tps;
        }
    const char *base = strrchr(path ? path : "bundled", '/');
    printf("%-28s threads %d  prompt %6d: %7.1f tok/s   decode %d at that depth: split %7.2f tok/s, whole rows %7.2f "
           "tok/s (x%.2f)\n",
           base ? base + 1 : path, n_threads, n_prompt, pp, n_gen, best[1], best[0], best[1] / best[0]);
    heed_ctx_free(c);
    heed_model_free(m);
    free(ids);
    return 0;
}
