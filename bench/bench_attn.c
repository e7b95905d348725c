/*
 * bench_attn - figures for the attention store and its exact views at
 * Llama-3.2-1B geometry (16 layers x 32 heads, 8 KV heads, head dim 64),
 * printed, not checked.
 *
 *   store MB      attention data held for N positions (default 4096) with the
 *                 default tiers: q/k f32, top-32 per (query, layer, head),
 *                 fp16 head-mean rows (target < 1.5 GB), and the process's
 *                 peak RSS
 *   feed s        time to feed the store as the hook would (q/k blocks, then
 *                 probability blocks of 64 queries per layer)
 *   row ms        one exact row at the last position aggregated over all
 *                 layers and heads (512 rows recomputed; target < 50 ms on 2
 *                 cores)
 *   matrix s      one full single-head N x N matrix (target < 1 s)
 *
 * The q and k are random Gaussians of that geometry: the cost of storing and
 * recomputing attention depends on the shapes, not on a trained model's
 * values. Probabilities fed to the summaries are recomputed from them with
 * the same kernels the forward pass uses.
 *
 * With -m MODEL (e.g. a random-weight 1B model from bench/mkmodel), it
 * also records a real generation through the public API: prompt and decode
 * speed without and with the recorder, and the run file's size and save /
 * load times.
 *
 *   bench_attn [-n POSITIONS] [-t THREADS] [-m MODEL [-p PROMPT_TOKENS] [-g GENERATED] [-L LENS_TOP_K]]
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "astore.h"
#include "heed.h"
#include "attn.h"
#include "kern.h"
#include "pool.h"

#define N_LAYER 16
#define N_HEAD 32
#define N_HEAD_KV 8
#define HEAD_DIM 64
#define QBLOCK 64 /* queries per probability block */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Standard normal by Box-Muller on a 64-bit LCG. */
static float gauss(uint64_t *s) {
    double u[2];
    for (int i = 0; i < 2; i++) {
        *s = *s * 6364136223846793005ull + 1442695040888963407ull;
        u[i] = ((double)(*s >> 11) + 0.5) / 9007199254740992.0;
    }
    return (float)(sqrt(-2.0 * log(u[0])) * cos(6.283185307179586 * u[1]));
}

static long peak_rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = atol(line + 6);
    if (f) fclose(f);
    return kb;
}

/* Probabilities of one layer for queries p0..p0+n-1, recomputed from the
 * stored q/k (heads split over threads), in the hook's block layout. */
typedef struct probs_job {
    const astore *st;
    const kern_ops *ops;
    int layer, p0, n;
    float *probs; /* (N_HEAD, n, p0 + n) */
} probs_job;

static void probs_task(void *arg, int ith, int nth) {
    probs_job *j = arg;
    size_t row = (size_t)j->p0 + j->n;
    for (int h = ith; h < N_HEAD; h += nth)
        for (int i = 0; i < j->n; i++)
            astore_row(j->st, j->ops, j->layer, h, j->p0 + i, j->probs + ((size_t)h * j->n + i) * row);
}

/* Feeds n_pos positions; returns the seconds spent in astore_add_* (what
 * the hook costs a real generation). */
static double feed(astore *st, pool *pl, const kern_ops *ops, int n_pos) {
    double t_hook = 0;
    uint64_t seed = 42;
    float *q = malloc(sizeof(float) * QBLOCK * N_HEAD * HEAD_DIM);
    float *k = malloc(sizeof(float) * QBLOCK * N_HEAD_KV * HEAD_DIM);
    float *probs = malloc(sizeof(float) * N_HEAD * QBLOCK * (size_t)n_pos);
    for (int p0 = 0; p0 < n_pos; p0 += QBLOCK) {
        int n = n_pos - p0 < QBLOCK ? n_pos - p0 : QBLOCK;
        for (int l = 0; l < N_LAYER; l++) {
            for (int i = 0; i < n * N_HEAD * HEAD_DIM; i++) q[i] = gauss(&seed);
            for (int i = 0; i < n * N_HEAD_KV * HEAD_DIM; i++) k[i] = gauss(&seed);
            heed_qk_block qb = {l, p0, n, N_HEAD, N_HEAD_KV, HEAD_DIM, q, k, NULL};
            double t0 = now_s();
            astore_add_qk(st, &qb, NULL);
            t_hook += now_s() - t0;
        }
        /* the store's n_pos advances with the probability blocks; rows are
         * recomputed for the new queries from the keys already stored */
        st->n_pos = p0 + n;
        for (int l = 0; l < N_LAYER; l++) {
            probs_job j = {st, ops, l, p0, n, probs};
            pool_run(pl, pool_size(pl), probs_task, &j);
            size_t row = (size_t)p0 + n;
            heed_attn_block b = {l, N_HEAD, p0, n, row, (size_t)n * row, probs};
            double t0 = now_s();
            astore_add_probs(st, &b, pl);
            t_hook += now_s() - t0;
        }
    }
    free(q);
    free(k);
    free(probs);
    return t_hook;
}

typedef struct mat_out {
    size_t n;
    float *m;
} mat_out;

static void mat_row(void *user, int ith, int qpos, const float *row) {
    mat_out *o = user;
    memcpy(o->m + (size_t)qpos * o->n, row, sizeof(float) * ((size_t)qpos + 1));
}

/* Prompt + greedy decode; with rec, recorded. Returns decode tokens/s and
 * sets *prompt_s. */
static double generate(heed_model *m, heed_ctx *ctx, heed_recorder *rec, int n_prompt, int n_gen, double *prompt_s) {
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n_prompt);
    for (int i = 0; i < n_prompt; i++) ids[i] = (int32_t)(3 + (i * 7919) % (mi.n_vocab - 3));
    heed_sampler_params sp = heed_sampler_default_params();
    heed_sampler *s = heed_sampler_new(&sp, mi.n_vocab);
    if (rec) heed_recorder_begin(rec, ids, n_prompt);
    double t0 = now_s();
    heed_decode(ctx, ids, n_prompt);
    *prompt_s = now_s() - t0;
    t0 = now_s();
    for (int t = 0; t < n_gen; t++) {
        heed_sample smp;
        heed_sampler_sample(s, heed_ctx_logits(ctx), mi.n_vocab, &smp);
        if (rec) heed_recorder_step(rec, &smp, heed_ctx_logits(ctx));
        if (t + 1 < n_gen) heed_decode(ctx, &smp.id, 1);
    }
    double tps = n_gen / (now_s() - t0);
    heed_sampler_free(s);
    free(ids);
    return tps;
}

static int bench_model(const char *path, int n_prompt, int n_gen, int n_threads, int lens) {
    heed_model *m;
    char err[256];
    if (heed_model_load(path, NULL, &m, err, sizeof err)) {
        fprintf(stderr, "bench_attn: %s\n", err);
        return 1;
    }
    heed_ctx_params cp = heed_ctx_default_params();
    cp.n_threads = n_threads;
    cp.n_ctx = n_prompt + n_gen;
    heed_ctx *ctx;
    if (heed_ctx_new(m, &cp, &ctx)) return 1;
    double p0, p1;
    double plain = generate(m, ctx, NULL, n_prompt, n_gen, &p0);
    heed_ctx_reset(ctx);
    heed_recorder_params rp = heed_recorder_default_params();
    rp.n_threads = n_threads;
    rp.lens_top_k = lens;
    heed_recorder *rec;
    heed_run *run = NULL;
    if (heed_recorder_new(m, ctx, &rp, &rec)) return 1;
    double recd = generate(m, ctx, rec, n_prompt, n_gen, &p1);
    heed_recorder_finish(rec, &run);
    heed_recorder_free(rec);
    printf("model %s: prompt %d tokens %.2f s plain, %.2f s recorded; decode %.2f tok/s plain, %.2f tok/s "
           "recorded (lens %d, candidates %d)\n", path, n_prompt, p0, p1, plain, recd, rp.lens_top_k, rp.n_cand);
    if (run) {
        heed_run_info ri;
        heed_run_get_info(run, &ri);
        const char *f = "/tmp/bench_attn.heedrun";
        double t0 = now_s();
        int rc = heed_run_save(run, f, err, sizeof err);
        double ts = now_s() - t0;
        heed_run *back = NULL;
        t0 = now_s();
        if (!rc) rc = heed_run_load(f, &back, err, sizeof err);
        double tl = now_s() - t0;
        if (rc) fprintf(stderr, "bench_attn: %s\n", err);
        else printf("run: %.1f MB of attention in memory; file saved in %.2f s, loaded in %.2f s\n",
                    ri.attn_bytes / 1e6, ts, tl);
        heed_run_free(back);
        remove(f);
    }
    heed_run_free(run);
    heed_ctx_free(ctx);
    heed_model_free(m);
    return 0;
}

int main(int argc, char **argv) {
    int n_pos = 4096, n_threads = 2, n_prompt = 256, n_gen = 32, lens = 5;
    const char *model = NULL;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-n")) n_pos = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-t")) n_threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-m")) model = argv[i + 1];
        else if (!strcmp(argv[i], "-p")) n_prompt = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-g")) n_gen = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-L")) lens = atoi(argv[i + 1]);
    }
    if (model && (n_prompt < 1 || n_gen < 1 || bench_model(model, n_prompt, n_gen, n_threads, lens))) return 1;
    if (n_pos < 2 || n_threads < 1) {
        fprintf(stderr, "usage: bench_attn [-n POSITIONS] [-t THREADS]\n");
        return 2;
    }
    const kern_ops *ops = kern_ops_best();
    pool *pl = pool_new(n_threads);
    astore st;
    astore_params ap = {32, true, true, 256u << 20, NULL, 0};
    if (!pl || astore_init(&st, N_LAYER, N_HEAD, N_HEAD_KV, HEAD_DIM, &ap)) return 1;
    printf("bench_attn: %d positions, %d layers x %d heads (%d kv), head dim %d, %d threads, kernels %s\n", n_pos,
           N_LAYER, N_HEAD, N_HEAD_KV, HEAD_DIM, n_threads, ops->name);

    double t0 = now_s();
    double t_hook = feed(&st, pl, ops, n_pos);
    double t_feed = now_s() - t0;
    if (st.failed) {
        fprintf(stderr, "bench_attn: out of memory while feeding the store\n");
        return 1;
    }
    size_t P = (size_t)n_pos, L = N_LAYER, H = N_HEAD;
    printf("store: %.1f MB held (q %.1f, k %.1f, top-k %.1f, head-mean %.1f, full tier %s); peak RSS %.1f MB\n",
           astore_bytes(&st) / 1e6, P * L * H * HEAD_DIM * 4 / 1e6, P * L * N_HEAD_KV * HEAD_DIM * 4 / 1e6,
           P * L * H * 32 * 6 / 1e6, astore_tri(P) * L * 2 / 1e6, st.has_full ? "kept" : "dropped (over 256 MB)",
           peak_rss_kb() / 1e3);
    printf("feed: %.2f s in all, of which %.2f s in the store (copies, top-k, head-mean: the hook's cost;\n"
           "      the rest makes the probabilities, which the forward pass does anyway)\n", t_feed, t_hook);

    attn_src src = {&st, ops, pl, NULL};
    heed_attn_sel all = {NULL, 0, NULL, 0, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
    float *row = malloc(sizeof(float) * P);
    double best = 1e9;
    for (int r = 0; r < 5; r++) {
        t0 = now_s();
        attn_agg_row(&src, &all, n_pos - 1, row);
        double t = now_s() - t0;
        if (t < best) best = t;
    }
    printf("row: position %d, mean over %d layers x %d heads: %.1f ms (best of 5)\n", n_pos, N_LAYER, N_HEAD,
           best * 1e3);

    int l = 0, h = 0;
    heed_attn_sel one = {&l, 1, &h, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
    mat_out mo = {P, calloc(P * P, sizeof(float))};
    t0 = now_s();
    attn_agg_rows(&src, &one, 0, n_pos, mat_row, &mo);
    printf("matrix: one head, %d x %d: %.3f s\n", n_pos, n_pos, now_s() - t0);
    free(mo.m);
    free(row);
    astore_free(&st);
    pool_free(pl);
    return 0;
}
