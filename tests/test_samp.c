/* Tests of the sampler (src/samp.c) through the public API. */
#include "testutil.h"

#include <float.h>
#include <math.h>

#include "heed.h"

static heed_sampler *new_sampler(float temp, int top_k, float top_p, float min_p, uint64_t seed, int n) {
    heed_sampler_params p = heed_sampler_default_params();
    p.temperature = temp;
    p.top_k = top_k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.seed = seed;
    heed_sampler *s = heed_sampler_new(&p, n);
    assert_non_null(s);
    return s;
}

static int32_t sample_id(heed_sampler *s, const float *logits, int n) {
    heed_sample out;
    assert_int_equal(heed_sampler_sample(s, logits, n, &out), HEED_OK);
    return out.id;
}

/* Logits of a softmax that gives the probabilities p. */
static void logits_of(float *logits, const double *p, int n) {
    for (int i = 0; i < n; i++) logits[i] = (float)log(p[i]);
}

static void test_defaults(void **state) {
    (void)state;
    heed_sampler_params p = heed_sampler_default_params();
    assert_true(p.temperature == 0.0f);
    assert_int_equal(p.top_k, 40);
    assert_true(p.top_p == 0.95f);
    assert_true(p.min_p == 0.05f);
    assert_true(p.repeat_penalty == 1.0f);
    assert_int_equal(p.repeat_last_n, 64);
    assert_true(p.seed == 0);
}

static void test_invalid_params(void **state) {
    (void)state;
    heed_sampler_params d = heed_sampler_default_params();
    assert_null(heed_sampler_new(&d, 0));
    assert_null(heed_sampler_new(&d, -3));
    assert_null(heed_sampler_new(NULL, 10));
    heed_sampler_params bad[9];
    for (int i = 0; i < 9; i++) bad[i] = d;
    bad[0].temperature = NAN;
    bad[1].temperature = -0.5f;
    bad[2].top_p = 0.0f;
    bad[3].top_p = 1.5f;
    bad[4].min_p = -0.1f;
    bad[5].min_p = 1.01f;
    bad[6].repeat_penalty = 0.0f;
    bad[7].repeat_penalty = -1.0f;
    bad[8].repeat_last_n = -1;
    for (int i = 0; i < 9; i++) assert_null(heed_sampler_new(&bad[i], 10));
    /* the edges that are allowed */
    heed_sampler_params ok = d;
    ok.top_p = 1.0f;
    ok.min_p = 0.0f;
    ok.repeat_last_n = 0;
    heed_sampler *s = heed_sampler_new(&ok, 10);
    assert_non_null(s);
    heed_sampler_free(s);
    heed_sampler_free(NULL);
}

static void test_bad_calls(void **state) {
    (void)state;
    float logits[4] = {1, 2, 3, 4};
    heed_sample out;
    heed_sampler *s = new_sampler(0, 40, 0.95f, 0.05f, 0, 4);
    assert_int_equal(heed_sampler_sample(s, logits, 5, &out), HEED_ERR_INVALID_ARG);
    assert_int_equal(heed_sampler_sample(s, NULL, 4, &out), HEED_ERR_INVALID_ARG);
    assert_int_equal(heed_sampler_sample(s, logits, 4, NULL), HEED_ERR_INVALID_ARG);
    assert_int_equal(heed_sampler_sample(NULL, logits, 4, &out), HEED_ERR_INVALID_ARG);
    float dead[4] = {-INFINITY, NAN, -INFINITY, NAN};
    assert_int_equal(heed_sampler_sample(s, dead, 4, &out), HEED_ERR_INVALID_ARG);
    heed_sampler_free(s);
}

static void random_logits(float *logits, int n, unsigned seed) {
    srand(seed);
    for (int i = 0; i < n; i++) logits[i] = (float)(rand() / (double)RAND_MAX * 6.0 - 3.0);
}

static void test_seed_determinism(void **state) {
    (void)state;
    enum { N = 200, STEPS = 300 };
    float logits[N];
    random_logits(logits, N, 7);
    heed_sampler *a = new_sampler(1.0f, 0, 1.0f, 0.0f, 42, N);
    heed_sampler *b = new_sampler(1.0f, 0, 1.0f, 0.0f, 42, N);
    heed_sampler *c = new_sampler(1.0f, 0, 1.0f, 0.0f, 43, N);
    int differ = 0;
    for (int i = 0; i < STEPS; i++) {
        int32_t x = sample_id(a, logits, N), y = sample_id(b, logits, N), z = sample_id(c, logits, N);
        assert_int_equal(x, y);
        differ += x != z;
    }
    assert_true(differ > STEPS / 2); /* near-uniform over 200 tokens: almost all differ */
    heed_sampler_free(a);
    heed_sampler_free(b);
    heed_sampler_free(c);
}

static void test_greedy(void **state) {
    (void)state;
    float logits[6] = {0.5f, 3.0f, -1.0f, 3.0f, 2.9f, NAN};
    heed_sampler *s = new_sampler(0.0f, 40, 0.95f, 0.05f, 1, 6);
    heed_sample out;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(heed_sampler_sample(s, logits, 6, &out), HEED_OK);
        assert_int_equal(out.id, 1); /* tie between 1 and 3: lowest id */
    }
    assert_float_equal(out.probs[5], 0.0, 0); /* NaN reads as -inf */
    heed_sampler_free(s);

    /* top_k = 1 at a high temperature is greedy too, and tiny top_p as well */
    float r[300];
    random_logits(r, 300, 3);
    heed_candidate best;
    assert_int_equal(heed_top_candidates(r, 300, 1, &best), 1);
    heed_sampler *k1 = new_sampler(5.0f, 1, 1.0f, 0.0f, 9, 300);
    heed_sampler *p0 = new_sampler(5.0f, 0, 1e-6f, 0.0f, 9, 300);
    for (int i = 0; i < 200; i++) {
        assert_int_equal(sample_id(k1, r, 300), best.id);
        assert_int_equal(sample_id(p0, r, 300), best.id);
    }
    heed_sampler_free(k1);
    heed_sampler_free(p0);
}

static void test_min_p(void **state) {
    (void)state;
    /* probs .50 .30 .15 .04 .01; min_p .1 keeps >= .05: ids 0, 1, 2 */
    const double p[5] = {0.50, 0.30, 0.15, 0.04, 0.01};
    float logits[5];
    logits_of(logits, p, 5);
    heed_sampler *s = new_sampler(1.0f, 0, 1.0f, 0.1f, 5, 5);
    int count[5] = {0};
    for (int i = 0; i < 10000; i++) count[sample_id(s, logits, 5)]++;
    assert_int_equal(count[3], 0);
    assert_int_equal(count[4], 0);
    assert_true(count[0] > 0 && count[1] > 0 && count[2] > 0);
    heed_sampler_free(s);
}

static void test_top_p(void **state) {
    (void)state;
    /* top_p .85: .50 + .30 = .80 < .85, so the prefix is ids 0, 1, 2 */
    const double p[5] = {0.50, 0.30, 0.15, 0.04, 0.01};
    float logits[5];
    logits_of(logits, p, 5);
    heed_sampler *s = new_sampler(1.0f, 0, 0.85f, 0.0f, 5, 5);
    int count[5] = {0};
    for (int i = 0; i < 10000; i++) count[sample_id(s, logits, 5)]++;
    assert_int_equal(count[3] + count[4], 0);
    assert_true(count[2] > 1000); /* .15 / .95 of the draws */
    heed_sampler_free(s);
}

static void test_top_k(void **state) {
    (void)state;
    enum { N = 1000 };
    float logits[N];
    random_logits(logits, N, 11);
    heed_candidate top[5];
    assert_int_equal(heed_top_candidates(logits, N, 5, top), 5);
    heed_sampler *s = new_sampler(100.0f, 5, 1.0f, 0.0f, 2, N);
    for (int i = 0; i < 2000; i++) {
        int32_t id = sample_id(s, logits, N);
        bool in = false;
        for (int j = 0; j < 5; j++) in |= top[j].id == id;
        assert_true(in);
    }
    heed_sampler_free(s);
}

static void test_high_temperature_uniform(void **state) {
    (void)state;
    const double p[5] = {0.50, 0.30, 0.15, 0.04, 0.01};
    float logits[5];
    logits_of(logits, p, 5);
    heed_sampler *s = new_sampler(1e6f, 0, 1.0f, 0.0f, 77, 5);
    enum { DRAWS = 50000 };
    int count[5] = {0};
    for (int i = 0; i < DRAWS; i++) count[sample_id(s, logits, 5)]++;
    for (int i = 0; i < 5; i++) assert_true(fabs(count[i] / (double)DRAWS - 0.2) < 0.02);
    heed_sampler_free(s);
}

static void test_empirical_matches_softmax(void **state) {
    (void)state;
    const double p[5] = {0.40, 0.25, 0.20, 0.10, 0.05};
    float logits[5];
    for (int i = 0; i < 5; i++) logits[i] = (float)log(p[i]) + 3.0f; /* shifts change nothing */
    heed_sampler *s = new_sampler(1.0f, 0, 1.0f, 0.0f, 1234, 5);
    enum { DRAWS = 100000 };
    int count[5] = {0};
    heed_sample out;
    for (int i = 0; i < DRAWS; i++) {
        assert_int_equal(heed_sampler_sample(s, logits, 5, &out), HEED_OK);
        count[out.id]++;
        assert_float_equal(out.prob, p[out.id], 1e-5);
        assert_float_equal(out.logprob, log(p[out.id]), 1e-5);
    }
    /* the standard error of each frequency is < 0.0016: 0.01 is > 6 sigma */
    for (int i = 0; i < 5; i++) assert_float_equal(count[i] / (double)DRAWS, p[i], 0.01);
    heed_sampler_free(s);
}

static void test_repetition_penalty(void **state) {
    (void)state;
    float logits[4] = {2.0f, 1.8f, -1.0f, -1.1f};
    heed_sampler_params prm = heed_sampler_default_params();
    prm.repeat_penalty = 1.5f;
    prm.repeat_last_n = 2;
    heed_sampler *s = heed_sampler_new(&prm, 4);
    assert_non_null(s);
    /* 2.0 / 1.5 = 1.33 < 1.8: token 0, once seen, loses to token 1 */
    int32_t seen0 = 0;
    heed_sampler_accept(s, &seen0, 1);
    heed_sample out;
    assert_int_equal(heed_sampler_sample(s, logits, 4, &out), HEED_OK);
    assert_int_equal(out.id, 1);
    assert_float_equal(out.prob, exp(1.8) / (exp(2.0) + exp(1.8) + exp(-1.0) + exp(-1.1)), 1e-6);
    /* history is now [0, 1]: 1.2 vs 1.33, token 0 wins back */
    assert_int_equal(heed_sampler_sample(s, logits, 4, &out), HEED_OK);
    assert_int_equal(out.id, 0);
    /* negative logits are multiplied: -1.0 * 1.5 = -1.5 < -1.1 */
    float neg[3] = {-1.0f, -1.1f, -5.0f};
    heed_sampler *t = heed_sampler_new(&prm, 3);
    heed_sampler_accept(t, &seen0, 1);
    assert_int_equal(heed_sampler_sample(t, neg, 3, &out), HEED_OK);
    assert_int_equal(out.id, 1);
    /* a token is penalised once even if it appears twice in the window */
    heed_sampler_free(t);
    prm.repeat_last_n = 4;
    t = heed_sampler_new(&prm, 3);
    int32_t twice[2] = {0, 0};
    heed_sampler_accept(t, twice, 2);
    float once[3] = {3.0f, 1.9f, 0.0f}; /* 3 / 1.5 = 2.0 > 1.9; 3 / 1.5^2 = 1.33 would lose */
    assert_int_equal(heed_sampler_sample(t, once, 3, &out), HEED_OK);
    assert_int_equal(out.id, 0);
    /* ids outside the vocabulary are ignored by accept */
    int32_t junk[3] = {-1, 3, 1000};
    heed_sampler_accept(t, junk, 3);
    heed_sampler_free(t);
    heed_sampler_free(s);
}

static void test_penalty_window(void **state) {
    (void)state;
    float logits[3] = {2.0f, 1.8f, 0.0f};
    heed_sampler_params prm = heed_sampler_default_params();
    prm.repeat_penalty = 2.0f;
    prm.repeat_last_n = 2;
    heed_sampler *s = heed_sampler_new(&prm, 3);
    int32_t h[3] = {0, 2, 2}; /* 0 has left the window of 2 */
    heed_sampler_accept(s, h, 3);
    assert_int_equal(sample_id(s, logits, 3), 0);
    heed_sampler_free(s);
}

static void test_probs_and_entropy(void **state) {
    (void)state;
    enum { N = 1000 };
    float logits[N];
    random_logits(logits, N, 5);
    heed_sampler *s = new_sampler(0.0f, 40, 0.95f, 0.05f, 0, N);
    heed_sample out;
    assert_int_equal(heed_sampler_sample(s, logits, N, &out), HEED_OK);
    double sum = 0, h = 0;
    for (int i = 0; i < N; i++) {
        sum += out.probs[i];
        if (out.probs[i] > 0) h -= out.probs[i] * log(out.probs[i]);
    }
    assert_float_equal(sum, 1.0, 1e-5);
    assert_float_equal(out.entropy, h, 1e-4);
    heed_sampler_free(s);

    float flat[N];
    for (int i = 0; i < N; i++) flat[i] = 0.25f;
    s = new_sampler(0.0f, 40, 0.95f, 0.05f, 0, N);
    assert_int_equal(heed_sampler_sample(s, flat, N, &out), HEED_OK);
    assert_float_equal(out.entropy, log((double)N), 1e-5);
    assert_int_equal(out.id, 0);
    assert_float_equal(out.prob, 1.0 / N, 1e-7);
    heed_sampler_free(s);

    /* a certain outcome: entropy 0, huge logits do not overflow */
    float sharp[3] = {1e30f, 0.0f, INFINITY};
    s = new_sampler(1.0f, 0, 1.0f, 0.0f, 0, 3);
    assert_int_equal(heed_sampler_sample(s, sharp, 3, &out), HEED_OK);
    assert_int_equal(out.id, 2);
    assert_float_equal(out.prob, 1.0, 1e-6);
    assert_float_equal(out.entropy, 0.0, 1e-6);
    heed_sampler_free(s);

    /* greedy: +inf reads as FLT_MAX, so it ties with a FLT_MAX logit and the
     * lower id wins; a NaN before the max is skipped */
    float infs[5] = {NAN, 1.0f, INFINITY, FLT_MAX, INFINITY};
    s = new_sampler(0.0f, 40, 0.95f, 0.05f, 0, 5);
    assert_int_equal(heed_sampler_sample(s, infs, 5, &out), HEED_OK);
    assert_int_equal(out.id, 2);
    infs[1] = FLT_MAX;
    assert_int_equal(heed_sampler_sample(s, infs, 5, &out), HEED_OK);
    assert_int_equal(out.id, 1);
    heed_sampler_free(s);
}

static void test_n_vocab_1(void **state) {
    (void)state;
    float logit = -7.0f;
    heed_sampler *s = new_sampler(1.0f, 40, 0.5f, 0.5f, 3, 1);
    heed_sample out;
    for (int i = 0; i < 10; i++) {
        assert_int_equal(heed_sampler_sample(s, &logit, 1, &out), HEED_OK);
        assert_int_equal(out.id, 0);
        assert_float_equal(out.prob, 1.0, 0);
        assert_float_equal(out.logprob, 0.0, 0);
        assert_float_equal(out.entropy, 0.0, 0);
    }
    heed_sampler_free(s);
}

static void test_top_candidates(void **state) {
    (void)state;
    float logits[7] = {1.0f, 5.0f, 3.0f, 5.0f, NAN, 3.0f, -2.0f};
    heed_candidate c[10];
    assert_int_equal(heed_top_candidates(logits, 7, 4, c), 4);
    const int32_t want[4] = {1, 3, 2, 5};
    double z = exp(1.0) + 2 * exp(5.0) + 2 * exp(3.0) + exp(-2.0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(c[i].id, want[i]);
        assert_true(c[i].logit == logits[want[i]]);
        assert_float_equal(c[i].prob, exp(logits[want[i]]) / z, 1e-6);
    }
    /* k > n: everything, NaN last with probability 0 */
    assert_int_equal(heed_top_candidates(logits, 7, 10, c), 7);
    assert_int_equal(c[5].id, 6);
    assert_int_equal(c[6].id, 4);
    assert_true(isnan(c[6].logit));
    assert_float_equal(c[6].prob, 0.0, 0);
    assert_int_equal(heed_top_candidates(logits, 7, 0, c), 0);
    assert_int_equal(heed_top_candidates(logits, 0, 3, c), 0);

    /* against a brute-force order on a large input with many ties */
    enum { N = 5000, K = 50 };
    static float big[N];
    srand(99);
    for (int i = 0; i < N; i++) big[i] = (float)(rand() % 300);
    static heed_candidate top[K];
    assert_int_equal(heed_top_candidates(big, N, K, top), K);
    for (int i = 1; i < K; i++)
        assert_true(top[i - 1].logit > top[i].logit ||
                    (top[i - 1].logit == top[i].logit && top[i - 1].id < top[i].id));
    int better = 0; /* ids outside the top that beat the last kept one: none */
    for (int i = 0; i < N; i++) {
        bool kept = false;
        for (int j = 0; j < K; j++) kept |= top[j].id == i;
        const heed_candidate *last = &top[K - 1];
        if (!kept && (big[i] > last->logit || (big[i] == last->logit && i < last->id))) better++;
    }
    assert_int_equal(better, 0);
}

static void test_top_k_top_p_min_p_big_vocab(void **state) {
    (void)state;
    /* a vocabulary of Qwen's size through every filter; the choice must be a
     * token that survives all of them */
    enum { N = 151936 };
    float *logits = malloc(N * sizeof *logits);
    assert_non_null(logits);
    random_logits(logits, N, 21);
    logits[12345] = 12.0f;
    logits[777] = 11.5f;
    heed_sampler *s = new_sampler(0.8f, 40, 0.9f, 0.05f, 8, N);
    heed_sampler *all = new_sampler(0.8f, 0, 0.9f, 0.05f, 8, N);
    for (int i = 0; i < 20; i++) {
        int32_t a = sample_id(s, logits, N), b = sample_id(all, logits, N);
        assert_true(a == 12345 || a == 777);
        assert_true(b == 12345 || b == 777);
    }
    heed_sampler_free(s);
    heed_sampler_free(all);
    free(logits);
}

/* The top candidates equal a full sort by (logit desc, id asc), NaN as
 * -inf, on rows with many ties, for k from 1 past n. */
static int by_logit_then_id(const void *a, const void *b) {
    const heed_candidate *x = a, *y = b;
    if (x->logit != y->logit) return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static void test_top_candidates_vs_sort(void **state) {
    enum { N = 700 };
    static float logits[N];
    static heed_candidate want[N], got[N + 5];
    uint32_t x = 99;
    const int ks[] = {1, 2, 5, 20, 64, N - 1, N, N + 5};
    for (int round = 0; round < 40; round++) {
        for (int i = 0; i < N; i++) {
            x = x * 1664525u + 1013904223u;
            logits[i] = round % 3 == 0 ? (float)((x >> 24) % 7) : (float)(x >> 8) / (float)(1u << 24) * 10.0f;
        }
        if (round % 4 == 1) logits[x % N] = NAN;
        if (round % 5 == 2) logits[(x >> 3) % N] = -INFINITY;
        if (round % 6 == 3) logits[(x >> 5) % N] = INFINITY, logits[(x >> 7) % N] = FLT_MAX;
        if (round % 8 == 5) logits[N - 1] = INFINITY, logits[N - 3] = NAN; /* in the last, partial run of 8 */
        for (int i = 0; i < N; i++)
            want[i] = (heed_candidate){i, logits[i] != logits[i] ? -INFINITY : logits[i] > FLT_MAX ? FLT_MAX : logits[i],
                                       0.0f};
        qsort(want, N, sizeof *want, by_logit_then_id);
        for (size_t j = 0; j < sizeof ks / sizeof *ks; j++) {
            int n = heed_top_candidates(logits, N, ks[j], got);
            assert_int_equal(n, ks[j] < N ? ks[j] : N);
            for (int i = 0; i < n; i++) assert_int_equal(got[i].id, want[i].id);
        }
    }
}

/* The candidates of a sample reuse the sampler's normaliser and equal the
 * stand-alone computation bit for bit (the recorder and the server use them). */
static void test_sample_candidates_equal(void **state) {
    enum { N = 5000 };
    static float logits[N];
    heed_sampler_params p = heed_sampler_default_params();
    p.temperature = 0.8f;
    heed_sampler *s = heed_sampler_new(&p, N);
    uint32_t x = 7;
    for (int round = 0; round < 20; round++) {
        for (int i = 0; i < N; i++) {
            x = x * 1664525u + 1013904223u;
            logits[i] = (float)(x >> 8) / (float)(1u << 24) * (round % 2 ? 40.0f : 4.0f) - 2.0f;
        }
        if (round == 3) logits[17] = -INFINITY;
        if (round == 5) logits[99] = NAN;
        heed_sample sm;
        assert_int_equal(heed_sampler_sample(s, logits, N, &sm), HEED_OK);
        heed_candidate a[20], b[20];
        assert_int_equal(heed_top_candidates(logits, N, 20, a), 20);
        assert_int_equal(heed_sample_candidates(&sm, logits, N, 20, b), 20);
        assert_memory_equal(a, b, sizeof a);
    }
    heed_sampler_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample_candidates_equal),
        cmocka_unit_test(test_top_candidates_vs_sort),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_invalid_params),
        cmocka_unit_test(test_bad_calls),
        cmocka_unit_test(test_seed_determinism),
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_min_p),
        cmocka_unit_test(test_top_p),
        cmocka_unit_test(test_top_k),
        cmocka_unit_test(test_high_temperature_uniform),
        cmocka_unit_test(test_empirical_matches_softmax),
        cmocka_unit_test(test_repetition_penalty),
        cmocka_unit_test(test_penalty_window),
        cmocka_unit_test(test_probs_and_entropy),
        cmocka_unit_test(test_n_vocab_1),
        cmocka_unit_test(test_top_candidates),
        cmocka_unit_test(test_top_k_top_p_min_p_big_vocab),
    };
    return cmocka_run_group_tests_name("samp", tests, NULL, NULL);
}
