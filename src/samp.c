/*
 * samp.c - the sampler of the public API: reports the model's own
 * next-token distribution and chooses a token from a reshaped copy of it.
 *
 * Two things are kept apart on purpose. What heed reports (probs, prob,
 * logprob, entropy) is always the softmax of the raw logits, because that is
 * what the visualizer analyses. What it chooses goes through the usual chain
 * of the reference engine: repetition penalty, top-k, top-p, min-p,
 * temperature, then a draw. Temperature 0 is greedy, so runs are
 * reproducible by default.
 *
 * Logits: NaN is read as -inf (never chosen, probability 0) and +inf as the
 * largest float, so one bad value cannot poison the whole distribution; if
 * every logit is -inf or NaN, sampling fails with HEED_ERR_INVALID_ARG.
 *
 * Every buffer is allocated by heed_sampler_new for n_vocab; sampling
 * allocates nothing. The random generator (xoshiro256**, seeded through
 * splitmix64) lives in the sampler: no global state.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "heed.h"
#include "kern.h"

struct heed_sampler {
    heed_sampler_params p;
    const kern_ops *ops;  /* exp_sums: the softmax over the vocabulary */
    int n_vocab;
    uint64_t rng[4];      /* xoshiro256** state */
    float *probs;         /* (n_vocab) the model's distribution of the last call */
    heed_candidate *cand; /* (n_vocab) candidates of the choice: logit after penalties, prob = weight */
    uint8_t *seen;        /* (n_vocab) all 0 between calls; marks tokens penalised once */
    int32_t *hist;        /* (repeat_last_n) ring buffer of the latest accepted ids */
    int n_hist;           /* entries in hist, <= repeat_last_n */
    int hist_next;        /* where the next id goes */
};

heed_sampler_params heed_sampler_default_params(void) {
    heed_sampler_params p = {
        .temperature = 0.0f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .repeat_last_n = 64,
        .seed = 0,
    };
    return p;
}

/* ---------------------------------------------------------------- random */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_next(uint64_t *s) {
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1.0p-53; }

/* ------------------------------------------------------------ lifecycle */

static bool params_ok(const heed_sampler_params *p) {
    /* written so that NaN fails every test */
    return p->temperature >= 0.0f && p->temperature <= FLT_MAX && p->top_p > 0.0f && p->top_p <= 1.0f &&
           p->min_p >= 0.0f && p->min_p <= 1.0f && p->repeat_penalty > 0.0f &&
           p->repeat_penalty <= FLT_MAX && p->repeat_last_n >= 0;
}

heed_sampler *heed_sampler_new(const heed_sampler_params *params, int n_vocab) {
    if (!params || n_vocab <= 0 || !params_ok(params)) return NULL;
    heed_sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *params;
    s->ops = kern_ops_best();
    s->n_vocab = n_vocab;
    s->probs = malloc((size_t)n_vocab * sizeof *s->probs);
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->seen = calloc((size_t)n_vocab, 1);
    s->hist = malloc((size_t)(params->repeat_last_n > 0 ? params->repeat_last_n : 1) * sizeof *s->hist);
    if (!s->probs || !s->cand || !s->seen || !s->hist) {
        heed_sampler_free(s);
        return NULL;
    }
    uint64_t x = params->seed;
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&x);
    return s;
}

void heed_sampler_free(heed_sampler *s) {
    if (!s) return;
    free(s->probs);
    free(s->cand);
    free(s->seen);
    free(s->hist);
    free(s);
}

void heed_sampler_accept(heed_sampler *s, const int32_t *ids, int n) {
    if (!s || !ids || s->p.repeat_last_n == 0) return;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= s->n_vocab) continue; /* not a token of this vocabulary */
        s->hist[s->hist_next] = ids[i];
        s->hist_next = (s->hist_next + 1) % s->p.repeat_last_n;
        if (s->n_hist < s->p.repeat_last_n) s->n_hist++;
    }
}

/* ------------------------------------------------------- candidate order */

/* The order of candidates: higher logit first, ties lower id first. */
static bool cand_before(const heed_candidate *a, const heed_candidate *b) {
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

/* Min-heap on cand_before: the root is the worst candidate kept. */
static void worst_sift_down(heed_candidate *h, int n, int i) {
    heed_candidate x = h[i];
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_before(&h[c], &h[c + 1])) c++;
        if (!cand_before(&x, &h[c])) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

static void worst_sift_up(heed_candidate *h, int i) {
    heed_candidate x = h[i];
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!cand_before(&h[parent], &x)) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = x;
}

/* A full worst-first heap h[0..k) sorted in place, best first. Returns k. */
static int heap_sort_best_first(heed_candidate *h, int k) {
    for (int m = k - 1; m > 0; m--) { /* move the worst to the back, repeatedly */
        heed_candidate t = h[0];
        h[0] = h[m];
        h[m] = t;
        worst_sift_down(h, m, 0);
    }
    return k;
}

/*
 * Keeps the k best of the n candidates produced by get(i) in out[0..k),
 * sorted best first: a bounded heap, O(n log k) time and no memory beyond
 * out. With k = n it is a heapsort (no allocation, unlike qsort).
 */
static int select_best(heed_candidate *out, int k, int n, heed_candidate (*get)(const void *, int),
                       const void *src) {
    if (k > n) k = n;
    if (k <= 0) return 0;
    for (int i = 0; i < n; i++) {
        heed_candidate c = get(src, i);
        if (i < k) {
            out[i] = c;
            worst_sift_up(out, i);
        } else if (cand_before(&c, &out[0])) {
            out[0] = c;
            worst_sift_down(out, k, 0);
        }
    }
    return heap_sort_best_first(out, k);
}

static heed_candidate get_raw(const void *src, int i) {
    heed_candidate c = {i, kern_clean_logit(((const float *)src)[i]), 0.0f};
    return c;
}

/* select_best over raw logits, with the same result: once the heap is full,
 * a later token enters only with a logit above the worst kept (an equal one
 * loses the tie, its id being higher), so most of the vocabulary is one
 * compare each, with no call per token (this runs for every generated token). */
static int select_best_raw(heed_candidate *out, int k, int n, const float *logits) {
    if (k > n) k = n;
    if (k <= 0) return 0;
    for (int i = 0; i < k; i++) {
        out[i] = get_raw(logits, i);
        worst_sift_up(out, i);
    }
    float worst = out[0].logit;
    for (int i = k; i < n; i++) {
        /* eight at a time, one branch: a raw logit above the worst kept is
         * one whose cleaned value is too (NaN compares false, +inf true) */
        if (i + 8 <= n) {
            const float *x = logits + i;
            bool any = (x[0] > worst) | (x[1] > worst) | (x[2] > worst) | (x[3] > worst) | (x[4] > worst) |
                       (x[5] > worst) | (x[6] > worst) | (x[7] > worst);
            if (!any) {
                i += 7;
                continue;
            }
        }
        float x = kern_clean_logit(logits[i]);
        if (!(x > worst)) continue;
        out[0] = (heed_candidate){i, x, 0.0f};
        worst_sift_down(out, k, 0);
        worst = out[0].logit;
    }
    return heap_sort_best_first(out, k);
}

static heed_candidate get_cand(const void *src, int i) { return ((const heed_candidate *)src)[i]; }

/* ------------------------------------------------------- the model's view */

/* Max of the cleaned logits, and log of the softmax normaliser relative to
 * it: the same kernel and sums as model_distribution, so that
 * heed_sample_candidates equals heed_top_candidates bit for bit. */
static float log_normaliser(const kern_ops *ops, const float *logits, int n, double *log_z) {
    double z, zx;
    float max = ops->exp_sums(logits, n, NULL, &z, &zx);
    *log_z = log(z);
    return max;
}

/* The k best of logits with their probabilities under normaliser max, log_z. */
static int candidates(const float *logits, int n_vocab, int k, float max, double log_z, heed_candidate *out) {
    int n = select_best_raw(out, k, n_vocab, logits);
    for (int i = 0; i < n; i++) {
        out[i].prob = max == -INFINITY ? 0.0f : (float)exp((double)out[i].logit - max - log_z);
        out[i].logit = logits[out[i].id]; /* raw, NaN included */
    }
    return n;
}

int heed_top_candidates(const float *logits, int n_vocab, int k, heed_candidate *out) {
    if (k <= 0 || n_vocab <= 0) return 0;
    if (!logits || !out) return HEED_ERR_INVALID_ARG;
    double log_z;
    float max = log_normaliser(kern_ops_best(), logits, n_vocab, &log_z);
    return candidates(logits, n_vocab, k, max, log_z, out);
}

int heed_sample_candidates(const heed_sample *s, const float *logits, int n_vocab, int k, heed_candidate *out) {
    if (k <= 0 || n_vocab <= 0) return 0;
    if (!s || !logits || !out) return HEED_ERR_INVALID_ARG;
    return candidates(logits, n_vocab, k, s->max_logit, s->log_z, out);
}

/* Softmax of the raw logits into s->probs; returns the entropy in nats,
 * and the max and log normaliser for exact log-probabilities. exp in float
 * (vectorized), sums in double. */
static double model_distribution(heed_sampler *s, const float *logits, float *max, double *log_z) {
    int n = s->n_vocab;
    double z, zx; /* sum e_i, sum e_i (x_i - max) */
    *max = s->ops->exp_sums(logits, n, s->probs, &z, &zx);
    if (*max == -INFINITY) return 0;
    float inv = (float)(1.0 / z); /* z >= 1: the max contributes exp(0) */
    for (int i = 0; i < n; i++) s->probs[i] *= inv;
    *log_z = log(z);
    double h = *log_z - zx / z; /* -sum p ln p, with ln p = d - ln z */
    return h > 0 ? h : 0;
}

/* ---------------------------------------------------------------- choice */

/* cand[0..n) = the cleaned logits, with the repetition penalty applied once
 * to each distinct token of the history (the reference engine's rule). */
static void penalised_logits(heed_sampler *s, const float *logits) {
    int n = s->n_vocab;
    for (int i = 0; i < n; i++) s->cand[i] = (heed_candidate){i, kern_clean_logit(logits[i]), 0.0f};
    float pen = s->p.repeat_penalty;
    if (pen == 1.0f) return;
    for (int i = 0; i < s->n_hist; i++) {
        int32_t id = s->hist[i];
        if (s->seen[id]) continue;
        s->seen[id] = 1;
        float *x = &s->cand[id].logit;
        *x = *x > 0 ? *x / pen : *x * pen;
    }
    for (int i = 0; i < s->n_hist; i++) s->seen[s->hist[i]] = 0;
}

static int32_t argmax(const heed_candidate *c, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (c[i].logit > c[best].logit) best = i; /* strict: ties keep the lower id */
    return c[best].id;
}

/* Top-p over c[0..n) sorted best first: the shortest prefix whose softmax
 * mass (temperature 1) reaches p; at least one. */
static int top_p_cut(const heed_candidate *c, int n, float p) {
    double z = 0;
    for (int i = 0; i < n; i++) z += exp((double)c[i].logit - c[0].logit);
    double cum = 0;
    for (int i = 0; i < n; i++) {
        cum += exp((double)c[i].logit - c[0].logit) / z;
        if (cum >= p) return i + 1;
    }
    return n;
}

/* Min-p: keeps the candidates whose probability is at least min_p times
 * the largest, i.e. logit >= max + ln(min_p); order is kept. */
static int min_p_filter(heed_candidate *c, int n, float min_p) {
    float max = -INFINITY;
    for (int i = 0; i < n; i++)
        if (c[i].logit > max) max = c[i].logit;
    double floor = (double)max + log((double)min_p);
    int m = 0;
    for (int i = 0; i < n; i++)
        if ((double)c[i].logit >= floor) c[m++] = c[i];
    return m;
}

/* Softmax at temperature T over the survivors, then one draw. */
static int32_t draw(heed_sampler *s, heed_candidate *c, int n) {
    float max = -INFINITY;
    for (int i = 0; i < n; i++)
        if (c[i].logit > max) max = c[i].logit;
    double z = 0, t = s->p.temperature;
    for (int i = 0; i < n; i++) {
        c[i].prob = (float)exp(((double)c[i].logit - max) / t);
        z += c[i].prob;
    }
    double u = rng_uniform(s->rng) * z, cum = 0;
    int last = 0; /* the last candidate with weight, for rounding at the top end */
    for (int i = 0; i < n; i++) {
        if (c[i].prob <= 0) continue;
        cum += c[i].prob;
        last = i;
        if (u < cum) return c[i].id;
    }
    return c[last].id;
}

/* max: the largest cleaned logit (model_distribution's) */
static int32_t choose(heed_sampler *s, const float *logits, float max) {
    const heed_sampler_params *p = &s->p;
    int n = s->n_vocab;
    if (p->temperature <= 0.0f && (p->repeat_penalty == 1.0f || s->n_hist == 0)) {
        /* greedy without penalties: the lowest id at the distribution's max,
         * no copy (below FLT_MAX a raw logit equals the max exactly when its
         * cleaned value does) */
        if (max < FLT_MAX) {
            for (int i = 0; i < n; i++)
                if (logits[i] == max) return i;
        }
        for (int i = 0; i < n; i++)
            if (kern_clean_logit(logits[i]) == max) return i;
    }
    penalised_logits(s, logits);
    if (p->temperature <= 0.0f) return argmax(s->cand, n);
    heed_candidate *c = s->cand;
    if (p->top_k > 0 && p->top_k < n) {
        /* the k best land sorted at the front; select_best reads c while
         * writing c[0..k), which is safe: it never writes past the index it
         * has just read */
        n = select_best(c, p->top_k, n, get_cand, c);
    } else if (p->top_p < 1.0f) {
        n = select_best(c, n, n, get_cand, c);
    }
    if (p->top_p < 1.0f) n = top_p_cut(c, n, p->top_p);
    if (p->min_p > 0.0f) n = min_p_filter(c, n, p->min_p);
    return draw(s, c, n);
}

/* Samples (force < 0) or takes token force, reporting it under the model's
 * own distribution either way. */
static int sample_or_force(heed_sampler *s, const float *logits, int n_vocab, int32_t force, heed_sample *out) {
    if (!s || !logits || !out || n_vocab != s->n_vocab || force >= n_vocab) return HEED_ERR_INVALID_ARG;
    float max;
    double log_z;
    double entropy = model_distribution(s, logits, &max, &log_z);
    if (max == -INFINITY) return HEED_ERR_INVALID_ARG; /* no token has any probability */
    int32_t id = force >= 0 ? force : choose(s, logits, max);
    heed_sampler_accept(s, &id, 1);
    out->id = id;
    out->prob = s->probs[id];
    out->logprob = (float)((double)kern_clean_logit(logits[id]) - max - log_z); /* exact where prob underflows */
    out->entropy = (float)entropy;
    out->probs = s->probs;
    out->max_logit = max;
    out->log_z = log_z; /* the same sums as log_normaliser: heed_sample_candidates equals heed_top_candidates */
    return HEED_OK;
}

int heed_sampler_sample(heed_sampler *s, const float *logits, int n_vocab, heed_sample *out) {
    return sample_or_force(s, logits, n_vocab, -1, out);
}

int heed_sampler_force(heed_sampler *s, const float *logits, int n_vocab, int32_t id, heed_sample *out) {
    return id < 0 ? HEED_ERR_INVALID_ARG : sample_or_force(s, logits, n_vocab, id, out);
}
