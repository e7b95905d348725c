/*
 * bench_kern - figures for the kernels and the pool (printed, not checked).
 *
 *   matvec GB/s   one token times a 256 MB weight matrix (far bigger than
 *                 the caches), per ops table and weight type, 1 and 2
 *                 threads: the decode-step bound; compare with the triad
 *                 figure. Also a 512 KB matrix in L2: the kernel's own speed
 *   triad GB/s    a[i] = b[i] + s*c[i] over three 64 MB arrays, STREAM's
 *                 byte count (24 bytes per element): what memory can give
 *   prefill       GOP/s (2 * rows * n_in * tokens per second) of a 64-token
 *                 matrix product with a 2048 x 2048 weight matrix (L3-resident),
 *                 per ops table and type, 1 thread: the prompt-processing bound
 *   dot_f32 n=64  ns per call: the attention-score inner loop
 *   pool          us per empty job: the hand-off cost paid ~7 times a layer
 *
 * Each figure is the best of 5 runs (50 for the short in-L2 matvec).
 *
 *   bench_kern -b   prints only the memory figures, one "name value" a line
 *                   (read_gbs_1, read_gbs_2: a 256 MB f32 dot product with
 *                   the best table, the read-only rate decoding is bound by;
 *                   triad_gbs_1, triad_gbs_2), for bench/run.sh
 *   bench_kern -p   prints only the prefill figures
 *   bench_kern -l   prints only the matvec rates in L2 (quick, for kernel work)
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gguf.h"
#include "kern.h"
#include "pool.h"

#define MB (1024.0 * 1024.0)
#define WEIGHT_BYTES (256u << 20) /* matvec: far beyond any L3 */
#define TRIAD_BYTES (64u << 20)   /* per triad array */
#define HOT_BYTES (512u << 10)    /* matvec in L2: the compute-bound rate */
#define N_IN 4096
#define REPS 5

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint32_t rnd(uint64_t *s) {
    *s = *s * 6364136223846793005u + 1442695040888963407u;
    return (uint32_t)(*s >> 33);
}

static float rnd_f(uint64_t *s) {
    return (float)rnd(s) / 2147483648.0f - 1.0f;
}

/* ------------------------------------------------------------ matvec */

typedef struct mv_job {
    const kern_ops *ops;
    int type;
    const void *w;
    const float *x;
    const void *xq;
    float *out;
    int n_out;
} mv_job;

static void mv_fn(void *arg, int ith, int nth) {
    mv_job *j = arg;
    int per = (j->n_out + nth - 1) / nth;
    int o0 = ith * per, o1 = o0 + per < j->n_out ? o0 + per : j->n_out;
    if (o0 < o1) kern_matmul_rows(j->ops, j->out, 0, j->type, j->w, N_IN, j->x, j->xq, 1, o0, o1);
}

static double matvec_gbs(pool *p, int nth, mv_job *j, int reps) {
    size_t bytes = kern_row_bytes(j->type, N_IN) * (size_t)j->n_out;
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        pool_run(p, nth, mv_fn, j);
        double dt = now_s() - t0;
        if (dt < best) best = dt;
    }
    return (double)bytes / best / 1e9;
}

/* ------------------------------------------------------------- triad */

typedef struct triad_job {
    float *a;
    const float *b, *c;
    float s;
    size_t n;
} triad_job;

static void triad_fn(void *arg, int ith, int nth) {
    triad_job *j = arg;
    size_t per = (j->n + (size_t)nth - 1) / (size_t)nth;
    size_t lo = (size_t)ith * per, hi = lo + per < j->n ? lo + per : j->n;
    float *restrict a = j->a;
    const float *restrict b = j->b, *restrict c = j->c;
    float s = j->s;
    for (size_t i = lo; i < hi; i++) a[i] = b[i] + s * c[i];
}

/* --------------------------------------------------------------- pool */

static void empty_fn(void *arg, int ith, int nth) {
    (void)arg;
    (void)ith;
    (void)nth;
}

static float dot_sink;

typedef struct read_job {
    const kern_ops *ops;
    const float *a;
    size_t n;
    float sum[2];
} read_job;

static void read_fn(void *arg, int ith, int nth) {
    read_job *j = arg;
    size_t per = (j->n + (size_t)nth - 1) / (size_t)nth;
    size_t lo = (size_t)ith * per, hi = lo + per < j->n ? lo + per : j->n;
    float s = 0.0f;
    for (size_t i = lo; i < hi; i += 1u << 20) {
        size_t k = hi - i < (1u << 20) ? hi - i : (1u << 20);
        s += j->ops->dot_f32(j->a + i, j->a + i, (int)k);
    }
    j->sum[ith & 1] = s;
}

/* read-only bandwidth: the dot product of a 256 MB array with itself (one stream) */
static double read_gbs(pool *p, int nth) {
    size_t n = WEIGHT_BYTES / sizeof(float);
    float *a = malloc(WEIGHT_BYTES);
    if (!a) return 0.0;
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 7);
    read_job j = {kern_ops_best(), a, n, {0, 0}};
    double best = 1e30;
    for (int r = 0; r < 3 * REPS; r++) {
        double t0 = now_s();
        pool_run(p, nth, read_fn, &j);
        double dt = now_s() - t0;
        if (dt < best) best = dt;
    }
    dot_sink += j.sum[0] + j.sum[1];
    free(a);
    return (double)WEIGHT_BYTES / best / 1e9;
}

/* ----------------------------------------------------------- prefill */

#define PF_N 2048  /* rows and n_in */
#define PF_TOK 64  /* tokens */

/* rows x n_in random weights in type */
static void fill_rows(int type, void *w, int rows, int n_in, uint64_t *seed) {
    size_t row = kern_row_bytes(type, n_in);
    float *tmp = malloc((size_t)n_in * sizeof(float));
    if (!tmp) exit(1);
    for (int o = 0; o < rows; o++) {
        for (int i = 0; i < n_in; i++) tmp[i] = rnd_f(seed);
        char *dst = (char *)w + row * (size_t)o;
        if (type == GGML_F32)
            memcpy(dst, tmp, row);
        else if (type != GGML_F16 && type != GGML_BF16)
            kern_quantize(type, dst, tmp, n_in);
        else
            for (int i = 0; i < n_in; i++) {
                uint32_t u;
                memcpy(&u, &tmp[i], sizeof u);
                uint16_t h = type == GGML_F16 ? kern_f32_to_f16(tmp[i]) : (uint16_t)(u >> 16);
                memcpy(dst + 2 * (size_t)i, &h, sizeof h);
            }
    }
    free(tmp);
}

/* 64 tokens x a 2048 x 2048 matrix of every block type, 1 thread (the SIMD tables) */
static void prefill_figures(const kern_ops *const *tabs, int nt) {
    static const int types[] = {GGML_F16, GGML_Q8_0, GGML_Q4_0, GGML_Q5_0, GGML_Q4_K, GGML_Q5_K, GGML_Q6_K};
    static const char *names[] = {"f16", "q8_0", "q4_0", "q5_0", "q4_k", "q5_k", "q6_k"};
    enum { NTYPES = sizeof types / sizeof types[0] };
    uint64_t seed = 7;
    float *x = malloc(sizeof(float) * PF_N * PF_TOK), *out = malloc(sizeof(float) * PF_N * PF_TOK);
    void *xq = malloc(PF_TOK * (PF_N / QK_K) * sizeof(block_q8_K));
    if (!x || !out || !xq) exit(1);
    for (int i = 0; i < PF_N * PF_TOK; i++) x[i] = rnd_f(&seed);
    printf("\nprefill, %d tokens x a %d x %d matrix, 1 thread, GOP/s\n%-8s", PF_TOK, PF_N, PF_N, "table");
    for (int ti = 0; ti < NTYPES; ti++) printf(" %7s", names[ti]);
    printf("\n");
    for (int k = 1; k < nt; k++) { /* not the scalar table: minutes, and no bound on anything */
        printf("%-8s", tabs[k]->name);
        for (int ti = 0; ti < NTYPES; ti++) {
            int type = types[ti];
            size_t row = kern_row_bytes(type, PF_N), ab = kern_act_row_bytes(type, PF_N);
            void *w = malloc(row * PF_N);
            if (!w) exit(1);
            fill_rows(type, w, PF_N, PF_N, &seed);
            for (int t = 0; t < PF_TOK && ab; t++)
                kern_quantize_act((char *)xq + ab * t, x + (size_t)t * PF_N, type, PF_N);
            double best = 1e30;
            for (int r = 0; r < REPS; r++) {
                double t0 = now_s();
                kern_matmul_rows(tabs[k], out, PF_N, type, w, PF_N, x, ab ? xq : NULL, PF_TOK, 0, PF_N);
                double dt = now_s() - t0;
                if (dt < best) best = dt;
            }
            printf(" %7.1f", 2.0 * PF_N * PF_N * PF_TOK / best / 1e9);
            fflush(stdout);
            free(w);
        }
        printf("\n");
    }
    free(x);
    free(out);
    free(xq);
}

int main(int argc, char **argv) {
    bool mem_only = argc > 1 && !strcmp(argv[1], "-b");
    bool prefill_only = argc > 1 && !strcmp(argv[1], "-p");
    bool l2_only = argc > 1 && !strcmp(argv[1], "-l");
    pool *p = pool_new(2);
    if (!p) {
        fprintf(stderr, "bench_kern: cannot start threads\n");
        return 1;
    }
    const kern_ops *tabs[3];
    int nt = 0;
    tabs[nt++] = kern_ops_scalar();
    if (kern_ops_avx2()) tabs[nt++] = kern_ops_avx2();
    if (kern_ops_avx512()) tabs[nt++] = kern_ops_avx512();
    if (prefill_only) {
        prefill_figures(tabs, nt);
        pool_free(p);
        return 0;
    }
    if (mem_only) {
        for (int nth = 1; nth <= 2; nth++) printf("read_gbs_%d %.1f\n", nth, read_gbs(p, nth));
    } else if (!l2_only) {
        printf("bench_kern: %d CPUs online, best table %s\n\n", pool_n_cpus(), kern_ops_best()->name);
        for (int nth = 1; nth <= 2; nth++) printf("read    %d thread%s  %6.1f GB/s  (256 MB, dot_f32)\n", nth,
                                                 nth > 1 ? "s" : " ", read_gbs(p, nth));
    }

    /* --- memory bandwidth reference */
    size_t n3 = TRIAD_BYTES / sizeof(float);
    float *ta = malloc(n3 * sizeof(float)), *tb = malloc(n3 * sizeof(float)),
          *tc = malloc(n3 * sizeof(float));
    if (!ta || !tb || !tc) return 1;
    for (size_t i = 0; i < n3; i++) {
        ta[i] = 0.0f;
        tb[i] = 1.0f;
        tc[i] = 2.0f;
    }
    for (int nth = 1; nth <= 2 && !l2_only; nth++) {
        triad_job tj = {ta, tb, tc, 3.0f, n3};
        double best = 1e30;
        for (int r = 0; r < REPS; r++) {
            double t0 = now_s();
            pool_run(p, nth, triad_fn, &tj);
            double dt = now_s() - t0;
            if (dt < best) best = dt;
        }
        if (mem_only)
            printf("triad_gbs_%d %.1f\n", nth, 3.0 * (double)n3 * sizeof(float) / best / 1e9);
        else
            printf("triad   %d thread%s  %6.1f GB/s  (3 x %.0f MB)\n", nth, nth > 1 ? "s" : " ",
                   3.0 * (double)n3 * sizeof(float) / best / 1e9, (double)n3 * sizeof(float) / MB);
    }
    free(ta);
    free(tb);
    free(tc);
    if (mem_only) {
        pool_free(p);
        return 0;
    }

    /* --- weights: the same random values in every type, 64 MB each */
    uint64_t seed = 1;
    static float x[N_IN], out[WEIGHT_BYTES / (N_IN / 2)]; /* >= rows of any type (q4_0: 0.5625 B each) */
    static uint8_t xq[N_IN / QK_K * sizeof(block_q8_K)]; /* the largest activation format */
    for (int i = 0; i < N_IN; i++) x[i] = rnd_f(&seed);

    static const int types[] = {GGML_F32, GGML_F16, GGML_BF16, GGML_Q8_0, GGML_Q4_0, GGML_Q5_0, GGML_Q4_K, GGML_Q6_K};
    static const char *type_names[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q5_0", "q4_k", "q6_k"};
    printf("\nmatvec, n_in %d, GB/s of weights read: %.0f MB matrix on 1 and 2 threads,\n"
           "and a %.1f MB matrix in L2 on 1 thread (the compute-bound rate)\n",
           N_IN, WEIGHT_BYTES / MB, HOT_BYTES / MB);
    printf("%-8s %-6s %9s %9s %9s\n", "table", "type", "1 thread", "2 threads", "L2");
    for (int ti = 0; ti < (int)(sizeof types / sizeof types[0]); ti++) {
        int type = types[ti];
        kern_quantize_act(xq, x, type, N_IN);
        size_t row = kern_row_bytes(type, N_IN);
        int n_out = (int)((l2_only ? HOT_BYTES : WEIGHT_BYTES) / row);
        void *w = malloc(row * (size_t)n_out);
        if (!w) return 1;
        fill_rows(type, w, n_out, N_IN, &seed);
        for (int k = 0; k < nt; k++) {
            mv_job j = {tabs[k], type, w, x, xq, out, n_out};
            double g1 = l2_only ? 0 : matvec_gbs(p, 1, &j, REPS), g2 = l2_only ? 0 : matvec_gbs(p, 2, &j, REPS);
            mv_job hot = j;
            hot.n_out = (int)(HOT_BYTES / row);
            double gh = matvec_gbs(p, 1, &hot, 50);
            printf("%-8s %-6s %9.1f %9.1f %9.1f\n", tabs[k]->name, type_names[ti], g1, g2, gh);
        }
        free(w);
    }
    if (l2_only) {
        pool_free(p);
        return 0;
    }

    prefill_figures(tabs, nt);

    /* --- short dot products, as in attention scores (cache-resident) */
    printf("\ndot_f32, n = 64, in cache\n");
    static float a64[64 * 256], b64[64];
    for (int i = 0; i < 64 * 256; i++) a64[i] = rnd_f(&seed);
    for (int i = 0; i < 64; i++) b64[i] = rnd_f(&seed);
    for (int k = 0; k < nt; k++) {
        double best = 1e30;
        enum { CALLS = 1 << 22 };
        for (int r = 0; r < REPS; r++) {
            float s = 0;
            double t0 = now_s();
            for (int c = 0; c < CALLS; c++) s += tabs[k]->dot_f32(a64 + (c & 255) * 64, b64, 64);
            double dt = now_s() - t0;
            dot_sink += s;
            if (dt < best) best = dt;
        }
        printf("%-8s %6.1f ns per call\n", tabs[k]->name, best / CALLS * 1e9);
    }

    /* --- pool hand-off */
    printf("\npool hand-off, empty jobs\n");
    for (int nth = 1; nth <= 2; nth++) {
        enum { JOBS = 200000 };
        double best = 1e30;
        for (int r = 0; r < REPS; r++) {
            double t0 = now_s();
            for (int k = 0; k < JOBS; k++) pool_run(p, nth, empty_fn, NULL);
            double dt = now_s() - t0;
            if (dt < best) best = dt;
        }
        printf("nth %d   %6.3f us per job\n", nth, best / JOBS * 1e6);
    }
    /* a job after the workers have gone to sleep pays a futex wake-up */
    double wake = 0;
    for (int r = 0; r < 20; r++) {
        struct timespec ms = {0, 5000000}; /* past the pool's 1 ms spin window */
        nanosleep(&ms, NULL);
        double t0 = now_s();
        pool_run(p, 2, empty_fn, NULL);
        wake += now_s() - t0;
    }
    printf("nth 2   %6.3f us per job after the workers slept\n", wake / 20 * 1e6);

    pool_free(p);
    return dot_sink == 12345.0f; /* keeps the dot loop from being optimized away */
}
