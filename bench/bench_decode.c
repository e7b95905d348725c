/*
 * bench_decode - prompt and decode throughput of the engine, with attention
 * capture on and off.
 *
 *   bench_decode [-m MODEL] [-p PROMPT_TOKENS] [-n DECODE_TOKENS] [-t THREADS] [-r REPEATS] [-c MODES]
 *
 * Capture "on" installs a hook that copies every attention row into a
 * preallocated triangular store, as `heed generate --json` does; "qk"
 * records as `--save` and `heed serve` do, with heed_recorder's default
 * tiers: the exact tier only (post-RoPE q/k of every layer, from which every
 * attention row is recomputed bit for bit) and 20 candidates per step
 * (logit lens off); "sum" also makes the summary tiers while generating
 * (top-32 sources, fp16 head means, full rows under 256 MB), which the
 * recorder did by default before they were left to the export; both choose
 * tokens through the sampler; "off" has no hook and takes the argmax. The modes take turns
 * within each repeat, after an untimed warm-up pass over the weights; prints
 * the best of REPEATS runs of each (least disturbed by the machine).
 */
#include <stdbool.h>
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

typedef struct store {
    int n_layer, n_head, n_pos;
    float *rows;
} store;

static size_t tri(size_t p) { return p * (p + 1) / 2; }

static void observe(void *user, const heed_attn_block *b) {
    store *s = user;
    size_t per_head = tri((size_t)s->n_pos);
    for (int h = 0; h < b->n_head; h++)
        for (int i = 0; i < b->n_query; i++) {
            size_t pos = (size_t)b->pos0 + i;
            memcpy(s->rows + ((size_t)b->layer * s->n_head + h) * per_head + tri(pos),
                   b->probs + h * b->head_stride + i * b->row_stride, sizeof(float) * (pos + 1));
        }
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* One run: prefill n_prompt tokens, then decode n_gen greedily. */
enum { CAP_OFF, CAP_ON, CAP_QK, CAP_SUM };

static void run(const heed_model *m, int n_threads, int capture, int n_prompt, int n_gen, double *pp_tps,
                double *tg_tps) {
    heed_model_info info;
    heed_model_get_info(m, &info);
    heed_ctx_params cp = heed_ctx_default_params();
    cp.n_threads = n_threads;
    cp.n_ctx = n_prompt + n_gen + 1;
    heed_ctx *ctx;
    if (heed_ctx_new(m, &cp, &ctx)) {
        fprintf(stderr, "bench: cannot create a context of %d\n", cp.n_ctx);
        exit(1);
    }
    store s = {info.n_layer, info.n_head, cp.n_ctx, NULL};
    if (capture == CAP_ON) {
        s.rows = calloc((size_t)info.n_layer * info.n_head * tri((size_t)cp.n_ctx), sizeof(float));
        if (!s.rows) {
            fprintf(stderr, "bench: no memory for capture\n");
            exit(1);
        }
        heed_attn_hook hook = {.observe = observe, .user = &s};
        heed_ctx_set_attn_hook(ctx, &hook);
    }
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n_prompt);
    for (int i = 0; i < n_prompt; i++) ids[i] = (int32_t)((i * 7919 + 13) % info.n_vocab);
    heed_recorder *rec = NULL;
    heed_sampler *smp = NULL;
    if (capture == CAP_QK || capture == CAP_SUM) {
        heed_recorder_params rp = heed_recorder_default_params();
        rp.lens_top_k = 0;
        if (capture == CAP_SUM) {
            rp.attn_top_k = 32;
            rp.keep_head_mean = true;
            rp.full_limit_bytes = 256u << 20;
        }
        rp.n_threads = n_threads;
        rp.n_predict = n_gen; /* as --save and heed serve do: the store is reserved at once */
        heed_sampler_params sp = heed_sampler_default_params();
        smp = heed_sampler_new(&sp, info.n_vocab);
        if (!smp || heed_recorder_new(m, ctx, &rp, &rec)) {
            fprintf(stderr, "bench: cannot record\n");
            exit(1);
        }
    }
    double t0 = now_s();
    /* the recorder's setup (its store reserved for the whole run) counts as
     * capture cost, in the prompt's time */
    if (rec && heed_recorder_begin(rec, ids, n_prompt)) {
        fprintf(stderr, "bench: cannot record\n");
        exit(1);
    }
    heed_decode(ctx, ids, n_prompt);
    double t1 = now_s();
    for (int i = 0; i < n_gen; i++) {
        int32_t id;
        if (rec) {
            heed_sample smpl;
            heed_sampler_sample(smp, heed_ctx_logits(ctx), info.n_vocab, &smpl);
            heed_recorder_step(rec, &smpl, heed_ctx_logits(ctx));
            id = smpl.id;
        } else {
            id = argmax(heed_ctx_logits(ctx), info.n_vocab);
        }
        heed_decode(ctx, &id, 1);
    }
    double t2 = now_s();
    *pp_tps = n_prompt / (t1 - t0);
    *tg_tps = n_gen / (t2 - t1);
    if (rec) {
        heed_run *r = NULL;
        heed_recorder_finish(rec, &r);
        heed_run_free(r);
        heed_recorder_free(rec);
        heed_sampler_free(smp);
    }
    free(ids);
    free(s.rows);
    heed_ctx_free(ctx);
}

/* whether the comma-separated list names `mode` */
static bool mode_named(const char *list, const char *mode) {
    size_t n = strlen(mode);
    for (const char *p = list; p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
        if (!strncmp(p, mode, n) && (p[n] == ',' || !p[n])) return true;
    return false;
}

int main(int argc, char **argv) {
    const char *path = NULL;
    int n_prompt = 64, n_gen = 256, n_threads = 1, repeats = 5;
    const char *modes = NULL; /* -c: only the named capture modes (e.g. "qk,rec"), for profiling */
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-m")) path = argv[i + 1];
        else if (!strcmp(argv[i], "-p")) n_prompt = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-n")) n_gen = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-t")) n_threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-r")) repeats = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-c")) modes = argv[i + 1];
    }
    char err[512];
    heed_model *m;
    if (heed_model_load(path, NULL, &m, err, sizeof err)) {
        fprintf(stderr, "bench: %s\n", err);
        return 1;
    }
    heed_model_info info;
    heed_model_get_info(m, &info);
    if (n_prompt + n_gen + 1 > info.n_ctx_train) n_gen = info.n_ctx_train - n_prompt - 1;
    const char *base = strrchr(info.path, '/');
    static const char *const cap_names[] = {"off", "on", "qk", "sum"};
    bool use[CAP_SUM + 1];
    int n_use = 0;
    for (int cap = CAP_OFF; cap <= CAP_SUM; cap++) n_use += use[cap] = !modes || mode_named(modes, cap_names[cap]);
    if (!n_use) {
        fprintf(stderr, "bench: -c '%s' names no mode (off, on, qk, sum)\n", modes);
        return 1;
    }
    /* The modes take turns within each repeat, so that a machine whose speed
     * drifts (other work, clocks) disturbs them alike; the best of each is kept. */
    double best_pp[CAP_SUM + 1] = {0}, best_tg[CAP_SUM + 1] = {0};
    { /* untimed: the first pass over a mapped file pays its page faults */
        double pp, tg;
        run(m, n_threads, CAP_OFF, n_prompt < 8 ? n_prompt : 8, 1, &pp, &tg);
    }
    for (int r = 0; r < repeats; r++)
        for (int cap = CAP_OFF; cap <= CAP_SUM; cap++) {
            if (!use[cap]) continue;
            double pp, tg;
            run(m, n_threads, cap, n_prompt, n_gen, &pp, &tg);
            if (pp > best_pp[cap]) best_pp[cap] = pp;
            if (tg > best_tg[cap]) best_tg[cap] = tg;
        }
    for (int cap = CAP_OFF; cap <= CAP_SUM; cap++)
        if (use[cap])
            printf("%-22s threads %d  capture %-3s  prompt %4d: %9.1f tok/s   decode %4d: %9.1f tok/s\n",
               base ? base + 1 : info.path, n_threads, cap_names[cap], n_prompt, best_pp[cap], n_gen, best_tg[cap]);
    heed_model_free(m);
    return 0;
}
