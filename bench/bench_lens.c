/*
 * bench_lens - the logit lens on request (heed_run_lens_compute), as the
 * web UI's Logit-lens view asks for it: one page of 16 steps (the page
 * holding the newest step, what the view shows first), and the whole run.
 * Best of R, each repeat on a fresh copy of the run (a computed lens stays
 * in the run), the lens's context made once as the server keeps it.
 *
 * The web UI asks first for the steps its view shows (-v: 9, what its grid
 * shows in a 1400 px wide window, 86 px a column), centred on the current
 * step, then for the rest page by page; "first screen" is that first
 * request, here the newest step's.
 *
 * For scale, the prompt rate of the same model on the same threads is
 * measured in the same call (64 tokens, its matrices' multiply-adds per
 * second): the lens is the output matrix at 64 rows a read, so it can go
 * no faster than the kernels run the model's other matrices.
 *
 * The run: N steps generated with the model as `--save` records them
 * (residuals kept, the lens left to compute), written once to RUN and read
 * back on later calls. Then the phases of one batch of LENS_MAX_ROWS rows
 * are timed apart (the unembedding, i.e. final norm + output matrix, and the
 * top-k with probabilities), and, with -o, the batching the lens used before
 * it was restructured (a 64-row unembedding, then each row's top-k, serial)
 * alternates with heed_run_lens_compute, to compare on the same machine.
 *
 *   bench_lens -m MODEL [-t THREADS] [-n STEPS] [-v VISIBLE] [-r R] [-f RUN] [-o 1]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "forward.h"
#include "heed.h"
#include "run.h"

#define PAGE 16 /* the web UI's page of steps (web/src/views/lens.ts) */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    fprintf(stderr, "bench_lens: %s\n", what);
    exit(1);
}

/* n_gen steps greedily from a fixed prompt, recorded with the defaults. */
static heed_run *record(const heed_model *m, int n_threads, int n_gen) {
    heed_model_info info;
    heed_model_get_info(m, &info);
    enum { N_PROMPT = 16 };
    heed_ctx_params cp = heed_ctx_default_params();
    cp.n_threads = n_threads;
    cp.n_ctx = N_PROMPT + n_gen + 1;
    heed_ctx *ctx;
    if (heed_ctx_new(m, &cp, &ctx)) die("cannot create a context");
    heed_recorder_params rp = heed_recorder_default_params();
    rp.n_threads = n_threads;
    rp.n_predict = n_gen;
    heed_sampler_params sp = heed_sampler_default_params();
    sp.temperature = 0.0f;
    heed_sampler *smp = heed_sampler_new(&sp, info.n_vocab);
    heed_recorder *rec;
    if (!smp || heed_recorder_new(m, ctx, &rp, &rec)) die("cannot record");
    int32_t ids[N_PROMPT];
    for (int i = 0; i < N_PROMPT; i++) ids[i] = (int32_t)((i * 7919 + 13) % info.n_vocab);
    if (heed_recorder_begin(rec, ids, N_PROMPT) || heed_decode(ctx, ids, N_PROMPT)) die("cannot decode the prompt");
    for (int i = 0; i < n_gen; i++) {
        heed_sample s;
        if (heed_sampler_sample(smp, heed_ctx_logits(ctx), info.n_vocab, &s) ||
            heed_recorder_step(rec, &s, heed_ctx_logits(ctx)) || heed_decode(ctx, &s.id, 1))
            die("cannot decode");
    }
    heed_run *r;
    if (heed_recorder_finish(rec, &r)) die("cannot finish the recording");
    heed_recorder_free(rec);
    heed_sampler_free(smp);
    heed_ctx_free(ctx);
    return r;
}

static heed_run *load(const char *path) {
    heed_run *r;
    char err[512];
    if (heed_run_load(path, &r, err, sizeof err)) die(err);
    return r;
}

/* The lens as it was computed before (the reference for -o): rows batched
 * run_lens_rows at a time, one unembedding of the batch, then each row's
 * top-k in turn on one thread. */
static void lens_old(heed_run *r, heed_ctx *ctx, int t0, int t1) {
    run_lens_scratch s;
    if (run_lens_scratch_init(&s, r, run_lens_rows(ctx))) die("no memory");
    int n = 0;
    for (int t = t0; t < t1; t++)
        for (int l = 0; l < r->n_layer; l++) {
            memcpy(s.x + (size_t)n * r->n_embd, r->resid + ((size_t)t * r->n_layer + l) * r->n_embd,
                   sizeof(float) * (size_t)r->n_embd);
            s.step[n] = t, s.layer[n] = l;
            if (++n == s.rows || (t == t1 - 1 && l == r->n_layer - 1)) {
                int padded = n;
                while (padded % LENS_TILE && padded < s.rows) {
                    memcpy(s.x + (size_t)padded * r->n_embd, s.x + (size_t)(n - 1) * r->n_embd,
                           sizeof(float) * (size_t)r->n_embd);
                    padded++;
                }
                forward_unembed_rows(ctx, s.x, padded, s.logits);
                for (int b = 0; b < n; b++) {
                    int k = heed_top_candidates(s.logits + (size_t)b * r->n_vocab, r->n_vocab, r->lens_k, s.tmp);
                    size_t base = ((size_t)s.step[b] * r->n_layer + s.layer[b]) * r->lens_k;
                    for (int i = 0; i < r->lens_k; i++) {
                        r->lens_id[base + i] = i < k ? s.tmp[i].id : -1;
                        r->lens_p[base + i] = i < k ? s.tmp[i].prob : 0.0f;
                    }
                }
                n = 0;
            }
        }
    for (int t = t0; t < t1; t++) r->lens_ready[t] = 1;
    run_lens_scratch_free(&s);
}

/* Whether a and b hold the same lens bytes for steps t0..t1-1. */
static int lens_same(const heed_run *a, const heed_run *b, int t0, int t1) {
    size_t at = (size_t)t0 * a->n_layer * a->lens_k, n = (size_t)(t1 - t0) * a->n_layer * a->lens_k;
    return !memcmp(a->lens_id + at, b->lens_id + at, n * sizeof *a->lens_id) &&
           !memcmp(a->lens_p + at, b->lens_p + at, n * sizeof *a->lens_p);
}

int main(int argc, char **argv) {
    const char *model = NULL, *path = "build/bench-lens.run";
    int n_threads = 2, n_gen = 128, repeats = 3, old = 0, n_vis = 9;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-m")) model = argv[i + 1];
        else if (!strcmp(argv[i], "-t")) n_threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-n")) n_gen = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-r")) repeats = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-f")) path = argv[i + 1];
        else if (!strcmp(argv[i], "-o")) old = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-v")) n_vis = atoi(argv[i + 1]);
    }
    if (!model || n_gen < PAGE || repeats < 1 || n_vis < 1 || n_vis > n_gen) {
        fprintf(stderr, "usage: bench_lens -m MODEL [-t THREADS] [-n STEPS>=16] [-v VISIBLE<=STEPS] [-r R] [-f RUN] [-o 1]\n");
        return 2;
    }
    char err[512];
    heed_model *m;
    if (heed_model_load(model, NULL, &m, err, sizeof err)) die(err);
    heed_run *probe = NULL; /* the run of an earlier call, if it is this model's and as long */
    if (!heed_run_load(path, &probe, err, sizeof err)) {
        if (heed_run_lens_model_ok(probe, m) || probe->n_output != n_gen || !probe->resid) {
            heed_run_free(probe);
            probe = NULL;
        }
    }
    if (!probe) {
        double t = now_s();
        probe = record(m, n_threads, n_gen);
        if (heed_run_save(probe, path, err, sizeof err)) die(err);
        printf("recorded %d steps in %.1f s -> %s\n", n_gen, now_s() - t, path);
    }
    heed_ctx *ctx;
    if (heed_lens_ctx_new(m, n_threads, &ctx)) die("cannot create the lens context");
    int L = probe->n_layer, V = probe->n_vocab, E = probe->n_embd;
    int p0 = (n_gen - 1) / PAGE * PAGE, p1 = p0 + PAGE < n_gen ? p0 + PAGE : n_gen; /* the newest step's page */

    /* untimed: the first pass over the mapped output matrix pays its page faults */
    if (heed_run_lens_compute(probe, m, ctx, p0, p0 + 1)) die("lens failed");

    /* for scale: the prompt rate of the model's own matrices */
    {
        heed_model_info mi;
        heed_model_get_info(m, &mi);
        enum { N_PP = 64 };
        heed_ctx_params cp = heed_ctx_default_params();
        cp.n_threads = n_threads;
        cp.n_ctx = N_PP;
        heed_ctx *pc;
        if (heed_ctx_new(m, &cp, &pc)) die("cannot create a context");
        int32_t ids[N_PP];
        for (int i = 0; i < N_PP; i++) ids[i] = (int32_t)((i * 7919 + 13) % mi.n_vocab);
        double best_pp = 1e30;
        for (int rep = 0; rep < repeats; rep++) {
            forward_rewind(pc, 0);
            double t0 = now_s();
            if (heed_decode(pc, ids, N_PP)) die("cannot decode");
            if (now_s() - t0 < best_pp) best_pp = now_s() - t0;
        }
        heed_ctx_free(pc);
        double kv = (double)mi.n_head_kv * mi.head_dim, q = (double)mi.n_head * mi.head_dim;
        double per_tok = (double)mi.n_layer * mi.n_embd * (2 * q + 2 * kv + 3.0 * mi.n_ff);
        printf("prompt of %d tokens: %.1f tok/s, its matrices %.1f GMAC/s (attention and the last row's "
               "unembedding left out)\n", N_PP, N_PP / best_pp, per_tok * N_PP / best_pp * 1e-9);
    }

    /* the phases of one batch of rows */
    int rows = run_lens_rows(ctx);
    run_lens_scratch s;
    if (run_lens_scratch_init(&s, probe, rows)) die("no memory");
    for (int b = 0; b < rows; b++)
        memcpy(s.x + (size_t)b * E, probe->resid + (size_t)(b % (n_gen * L)) * E, sizeof(float) * (size_t)E);
    double best_mm = 1e30, best_topk = 1e30;
    for (int rep = 0; rep < repeats; rep++) {
        double t0 = now_s();
        forward_unembed_rows(ctx, s.x, rows, s.logits);
        double t1 = now_s();
        for (int b = 0; b < rows; b++) heed_top_candidates(s.logits + (size_t)b * V, V, probe->lens_k, s.tmp);
        double t2 = now_s();
        if (t1 - t0 < best_mm) best_mm = t1 - t0;
        if (t2 - t1 < best_topk) best_topk = t2 - t1;
    }
    run_lens_scratch_free(&s);
    double macs = (double)rows * V * E;
    printf("%d layers, vocab %d x %d, %d threads, %d rows per batch: unembedding %.1f ms (%.1f GMAC/s), "
           "top-%d of each row %.1f ms (one thread)\n",
           L, V, E, n_threads, rows, best_mm * 1e3, macs / best_mm * 1e-9, probe->lens_k, best_topk * 1e3);

    /* the lens as the view asks for it: the first screen (the newest step's
     * columns), the page holding the newest step, the whole run; each on a
     * fresh copy of the run, the old batching (-o) and the new alternating */
    enum { N_RANGES = 3 };
    const int r0[N_RANGES] = {n_gen - n_vis, p0, 0}, r1[N_RANGES] = {n_gen, p1, n_gen};
    const char *what[N_RANGES] = {"first screen", "page", "all"};
    double best[2][N_RANGES];
    for (int o = 0; o < 2; o++)
        for (int k = 0; k < N_RANGES; k++) best[o][k] = 1e30;
    int same = 1;
    heed_run *ref[N_RANGES] = {NULL}; /* the old path's lens of each range */
    for (int rep = 0; rep < repeats; rep++)
        for (int o = old ? 1 : 0; o >= 0; o--)
            for (int k = 0; k < N_RANGES; k++) {
                heed_run *a = load(path);
                double t0 = now_s();
                if (o) lens_old(a, ctx, r0[k], r1[k]);
                else if (heed_run_lens_compute(a, m, ctx, r0[k], r1[k])) die("lens failed");
                double t = now_s() - t0;
                if (t < best[o][k]) best[o][k] = t;
                if (o && !ref[k]) {
                    ref[k] = a;
                    a = NULL;
                } else if (ref[k]) {
                    same &= lens_same(a, ref[k], r0[k], r1[k]);
                }
                heed_run_free(a);
            }
    for (int k = 0; k < N_RANGES; k++) heed_run_free(ref[k]);
    for (int o = 0; o <= old; o++) {
        printf("%s:", o ? "before (64-row batches, each row's top-k on one thread)" : "heed_run_lens_compute");
        for (int k = 0; k < N_RANGES; k++) {
            double rmacs = (double)(r1[k] - r0[k]) * L * V * E;
            printf("%s %s, steps %d-%d: %.0f ms (%.1f GMAC/s)", k ? ";" : "", what[k], r0[k], r1[k] - 1,
                   best[o][k] * 1e3, rmacs / best[o][k] * 1e-9);
        }
        printf("\n");
    }
    if (old) printf("lens of both: %s\n", same ? "identical" : "DIFFERENT");
    heed_run_free(probe);
    heed_ctx_free(ctx);
    heed_model_free(m);
    return old && !same;
}
