/*
 * bench_longviews - how long the views of a long run take, from its file
 * (the exact tier: rows recomputed from q and k): one row aggregated over
 * every layer and head at the last position, one column (how much every
 * later position attended to key 0, one head), and the rows of one head at
 * every position, and the heatmap's overview of one head: the whole matrix
 * pooled to 256 x 256 and 1024 x 1024 cells (heed_run_attn_pool, what
 * GET /heatmap computes). Best of R.
 *
 *   bench_longviews RUN [-r R]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "heed.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_longviews RUN [-r R]\n");
        return 2;
    }
    int repeats = argc > 3 && !strcmp(argv[2], "-r") ? atoi(argv[3]) : 3;
    heed_run *r;
    char err[512];
    if (heed_run_load(argv[1], &r, err, sizeof err)) {
        fprintf(stderr, "bench_longviews: %s\n", err);
        return 1;
    }
    heed_run_info ri;
    heed_run_get_info(r, &ri);
    int P = ri.n_pos;
    float *out = malloc(sizeof(float) * (size_t)P);
    heed_attn_sel all = heed_attn_sel_all();
    int l0 = 0, h0 = 0;
    heed_attn_sel one = {&l0, 1, &h0, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
    heed_attn_sel value = all;
    value.measure = HEED_MEASURE_VALUE;
    double best[6] = {1e30, 1e30, 1e30, 1e30, 1e30, 1e30};
    float *cells = malloc(sizeof(float) * 1024 * 1024);
    for (int rep = 0; rep < repeats; rep++) {
        double t0 = now_s();
        if (heed_run_attn_row(r, &all, P - 1, out)) return 1;
        double t1 = now_s();
        if (heed_run_attn_col(r, &one, 0, out)) return 1;
        double t2 = now_s();
        for (int q = 0; q < P; q++)
            if (heed_run_attn_row(r, &one, q, out)) return 1;
        double t3 = now_s();
        if (ri.has_value_norms && heed_run_attn_row(r, &value, P - 1, out)) return 1;
        double t4 = now_s();
        int b256 = (P + 255) / 256, b1024 = (P + 1023) / 1024;
        if (heed_run_attn_pool(r, &one, 0, P, 0, P, b256, b256, false, cells)) return 1;
        double t5 = now_s();
        if (heed_run_attn_pool(r, &one, 0, P, 0, P, b1024, b1024, false, cells)) return 1;
        double t6 = now_s();
        if (t5 - t4 < best[4]) best[4] = t5 - t4;
        if (t6 - t5 < best[5]) best[5] = t6 - t5;
        if (t1 - t0 < best[0]) best[0] = t1 - t0;
        if (t2 - t1 < best[1]) best[1] = t2 - t1;
        if (t3 - t2 < best[2]) best[2] = t3 - t2;
        if (t4 - t3 < best[3]) best[3] = t4 - t3;
        if (t4 - t0 > 30) break; /* one slow pass is enough */
    }
    printf("%d positions, %d layers x %d heads: row of all heads at %d: %.1f ms; column of key 0 (one head): %.1f ms; "
           "every row of one head, row by row: %.0f ms; overview of one head pooled to 256 / 1024 cells: %.0f / %.0f ms",
           P, ri.n_layer, ri.n_head, P - 1, best[0] * 1e3, best[1] * 1e3, best[2] * 1e3, best[4] * 1e3, best[5] * 1e3);
    if (ri.has_value_norms) printf("; value-weighted row of all heads: %.1f ms", best[3] * 1e3);
    printf("\n");
    heed_run_free(r);
    free(out);
    free(cells);
    return 0;
}
