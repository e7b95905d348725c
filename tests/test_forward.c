/*
 * test_forward.c - the forward pass at attention geometries the shared
 * models do not have: grouped-query ratios of 1 to 8 query heads
 * per KV head (decode takes a group's heads through the multi-query kernels
 * in blocks of 4, padding a block of 2 or 3 and sending a lone head through
 * the one-query kernels) and head sizes that are not a multiple of 8.
 *
 * The models are random-weight llama files written by the bench tool
 * mkmodel (built beside this test, in <build>/bench/), f32 so that only the
 * attention's shape differs between cases. For each:
 *   - a prompt fed in one batch and then token by token gives the same
 *     logits within float reassociation;
 *   - token by token on 1, 2 and 3 threads gives the same logits and the
 *     same attention rows bit for bit;
 *   - every decode row equals softmax(q . k / sqrt(head_dim)) recomputed in
 *     double from the observed post-RoPE q and k;
 *   - decode rows split across keys (chunks of 5, 8, 13 keys) equal the
 *     whole rows bit for bit on 1, 2 and 3 threads, and the logits agree
 *     within 1e-6 (the attention output's additions are reordered).
 */
#include <libgen.h>
#include <limits.h>
#include <math.h>

#include "forward.h"
#include "heed.h"
#include "kern.h"
#include "testutil.h"

enum { N_PROMPT = 37, N_GEN = 6, N_TOK = N_PROMPT + N_GEN, N_LAYER = 2, VOCAB = 300 };

static char mkmodel[PATH_MAX];

typedef struct geometry {
    int n_head, n_kv, head_dim;
} geometry;

/* Writes a random model of geometry g; returns its path (static buffer). */
static const char *make_model(const geometry *g) {
    static char path[256];
    snprintf(path, sizeof path, "/tmp/heed_test_forward_%d_%d_%d_%d.gguf", (int)getpid(), g->n_head, g->n_kv,
             g->head_dim);
    char cmd[PATH_MAX + 512];
    snprintf(cmd, sizeof cmd,
             "%s --arch llama --layers %d --embd %d --heads %d --kv-heads %d --ff 96 --vocab %d --ctx 128 "
             "--type f32 --seed 7 -o %s >/dev/null",
             mkmodel, N_LAYER, g->n_head * g->head_dim, g->n_head, g->n_kv, VOCAB, path);
    assert_int_equal(system(cmd), 0);
    return path;
}

/* What a run observed: per step, the logits and every layer's rows (head-major,
 * each row padded to N_TOK), and the q/k of every position and layer. */
typedef struct trace {
    int n_head, n_kv, hd;
    float logits[N_TOK][VOCAB];
    float *rows;      /* (N_TOK query, N_LAYER, n_head, N_TOK key) */
    float *q, *k;     /* (N_LAYER, N_TOK, n_head * hd), (N_LAYER, N_TOK, n_kv * hd) */
} trace;

static void observe(void *user, const heed_attn_block *b) {
    trace *t = user;
    for (int i = 0; i < b->n_query; i++)
        for (int h = 0; h < b->n_head; h++) {
            int pos = b->pos0 + i;
            float *dst = t->rows + (((size_t)pos * N_LAYER + b->layer) * t->n_head + h) * N_TOK;
            memcpy(dst, b->probs + h * b->head_stride + i * b->row_stride, sizeof(float) * (pos + 1));
        }
}

static void observe_qk(void *user, const heed_qk_block *b) {
    trace *t = user;
    size_t qd = (size_t)t->n_head * t->hd, kd = (size_t)t->n_kv * t->hd;
    for (int i = 0; i < b->n_query; i++) {
        int pos = b->pos0 + i;
        memcpy(t->q + ((size_t)b->layer * N_TOK + pos) * qd, b->q + i * qd, sizeof(float) * qd);
        memcpy(t->k + ((size_t)b->layer * N_TOK + pos) * kd, b->k + i * kd, sizeof(float) * kd);
    }
}

static void trace_init(trace *t, const geometry *g) {
    memset(t, 0, sizeof *t);
    t->n_head = g->n_head, t->n_kv = g->n_kv, t->hd = g->head_dim;
    t->rows = calloc((size_t)N_TOK * N_LAYER * g->n_head * N_TOK, sizeof(float));
    t->q = calloc((size_t)N_LAYER * N_TOK * g->n_head * g->head_dim, sizeof(float));
    t->k = calloc((size_t)N_LAYER * N_TOK * g->n_kv * g->head_dim, sizeof(float));
    assert_true(t->rows && t->q && t->k);
}

static void trace_free(trace *t) {
    free(t->rows);
    free(t->q);
    free(t->k);
}

/* Runs ids through a fresh context: the first `batch` tokens in one call
 * (0: none), the rest one at a time, logits kept after every call. */
static void run_split(const heed_model *m, const int32_t *ids, int batch, int threads, int key_chunk, trace *t) {
    heed_ctx_params cp = heed_ctx_default_params();
    cp.n_threads = threads;
    cp.n_ctx = 128;
    heed_ctx *c;
    assert_int_equal(heed_ctx_new(m, &cp, &c), HEED_OK);
    assert_int_equal(forward_set_key_chunk(c, key_chunk), HEED_OK);
    heed_attn_hook hook = {.observe = observe, .observe_qk = observe_qk, .user = t};
    heed_ctx_set_attn_hook(c, &hook);
    int pos = 0;
    if (batch) {
        assert_int_equal(heed_decode(c, ids, batch), HEED_OK);
        pos = batch;
        memcpy(t->logits[pos - 1], heed_ctx_logits(c), sizeof(float) * VOCAB);
    }
    for (; pos < N_TOK; pos++) {
        assert_int_equal(heed_decode(c, ids + pos, 1), HEED_OK);
        memcpy(t->logits[pos], heed_ctx_logits(c), sizeof(float) * VOCAB);
    }
    heed_ctx_free(c);
}

/* Decode rows whole (no key split: these rows are short of the default chunk). */
static void run(const heed_model *m, const int32_t *ids, int batch, int threads, trace *t) {
    run_split(m, ids, batch, threads, 0, t);
}

static void check_geometry(const geometry *g) {
    const char *path = make_model(g);
    heed_model *m;
    char err[256];
    int rc = heed_model_load(path, NULL, &m, err, sizeof err);
    if (rc) fail_msg("%s", err);
    unlink(path);
    int32_t ids[N_TOK];
    uint32_t s = 12345u + (uint32_t)g->n_head * 31u + (uint32_t)g->n_kv;
    for (int i = 0; i < N_TOK; i++) {
        s = s * 1664525u + 1013904223u;
        ids[i] = 3 + (int32_t)((s >> 8) % (VOCAB - 3));
    }
    trace *one = malloc(sizeof *one), *other = malloc(sizeof *other);
    assert_true(one && other);
    trace_init(one, g);
    trace_init(other, g);
    const size_t row_floats = (size_t)N_TOK * N_LAYER * g->n_head * N_TOK;

    run(m, ids, 0, 1, one);
    /* threads split units of heads, never a sum */
    for (int th = 2; th <= 3; th++) {
        run(m, ids, 0, th, other);
        assert_memory_equal(one->logits, other->logits, sizeof one->logits);
        assert_memory_equal(one->rows, other->rows, row_floats * sizeof(float));
    }

    /* decode rows split across keys in chunks of 5, 8 and 13 (every length
     * 1..43 crosses their boundaries): the same numbers on any thread count;
     * each row equal, bit for bit, to kern_attn_row recomputed from the
     * observed q and k (what a recording does); layer 0 (same q and k) equal
     * to the whole rows; the rest and the logits to the order of additions */
    static const int chunks[] = {5, 8, 13};
    const kern_ops *ops = kern_ops_best();
    for (size_t ci = 0; ci < sizeof chunks / sizeof *chunks; ci++) {
        trace *split = malloc(sizeof *split);
        assert_non_null(split);
        trace_init(split, g);
        for (int th = 1; th <= 3; th++) {
            run_split(m, ids, 0, th, chunks[ci], th == 1 ? split : other);
            if (th > 1) { /* the chunking, not the threads, decides every number */
                assert_memory_equal(split->logits, other->logits, sizeof one->logits);
                assert_memory_equal(split->rows, other->rows, row_floats * sizeof(float));
            }
        }
        const int hd = g->head_dim, group = g->n_head / g->n_kv;
        const size_t qd = (size_t)g->n_head * hd, kd = (size_t)g->n_kv * hd;
        kern_attn_rule rule = {1.0f / sqrtf((float)hd), 0.0f, 0, NULL, 0};
        float keys[N_TOK * 64], row[N_TOK];
        assert_true(hd <= 64);
        double worst_row = 0, worst = 0;
        for (int pos = 0; pos < N_TOK; pos++)
            for (int l = 0; l < N_LAYER; l++)
                for (int h = 0; h < g->n_head; h++) {
                    for (int j = 0; j <= pos; j++)
                        memcpy(keys + (size_t)j * hd, split->k + ((size_t)l * N_TOK + j) * kd + (size_t)(h / group) * hd,
                               sizeof(float) * (size_t)hd);
                    kern_attn_row(ops, row, split->q + ((size_t)l * N_TOK + pos) * qd + (size_t)h * hd, keys, hd, pos, h,
                                  &rule);
                    const float *got = split->rows + (((size_t)pos * N_LAYER + l) * g->n_head + h) * N_TOK;
                    const float *whole = one->rows + (((size_t)pos * N_LAYER + l) * g->n_head + h) * N_TOK;
                    if (memcmp(row, got, sizeof(float) * (size_t)(pos + 1)))
                        fail_msg("chunk %d: layer %d head %d position %d: the split row is not its recomputation",
                                 chunks[ci], l, h, pos);
                    if (l == 0) assert_memory_equal(got, whole, sizeof(float) * (size_t)(pos + 1));
                    for (int j = 0; j <= pos; j++) worst_row = fmax(worst_row, fabs(got[j] - whole[j]));
                }
        for (int pos = 0; pos < N_TOK; pos++)
            for (int v = 0; v < VOCAB; v++)
                worst = fmax(worst, fabs(one->logits[pos][v] - split->logits[pos][v]) / (1 + fabs(one->logits[pos][v])));
        if (!(worst <= 1e-5) || !(worst_row <= 1e-5))
            fail_msg("heads %d/%d: split in chunks of %d keys: rows differ by %g, logits by %g", g->n_head, g->n_kv,
                     chunks[ci], worst_row, worst);
        trace_free(split);
        free(split);
    }

    /* the batch path (prompt attention blocks, matrix tiles) agrees */
    run(m, ids, N_PROMPT, 2, other);
    for (int pos = N_PROMPT - 1; pos < N_TOK; pos++)
        for (int v = 0; v < VOCAB; v++) {
            float a = one->logits[pos][v], b = other->logits[pos][v];
            if (!(fabsf(a - b) <= 1e-4f * (1 + fabsf(a))))
                fail_msg("heads %d/%d hd %d: position %d logit %d: %g one at a time, %g batched", g->n_head,
                         g->n_kv, g->head_dim, pos, v, a, b);
        }

    /* each decode row against the definition, from the observed q and k */
    const int hd = g->head_dim, group = g->n_head / g->n_kv;
    const size_t qd = (size_t)g->n_head * hd, kd = (size_t)g->n_kv * hd;
    double worst = 0;
    for (int pos = 0; pos < N_TOK; pos++)
        for (int l = 0; l < N_LAYER; l++)
            for (int h = 0; h < g->n_head; h++) {
                const float *q = one->q + ((size_t)l * N_TOK + pos) * qd + (size_t)h * hd;
                const float *row = one->rows + (((size_t)pos * N_LAYER + l) * g->n_head + h) * N_TOK;
                double sc[N_TOK], mx = -INFINITY, sum = 0, rsum = 0;
                for (int j = 0; j <= pos; j++) {
                    const float *k = one->k + ((size_t)l * N_TOK + j) * kd + (size_t)(h / group) * hd;
                    double d = 0;
                    for (int e = 0; e < hd; e++) d += (double)q[e] * k[e];
                    sc[j] = d / sqrt((double)hd);
                    mx = fmax(mx, sc[j]);
                }
                for (int j = 0; j <= pos; j++) sum += sc[j] = exp(sc[j] - mx);
                for (int j = 0; j <= pos; j++) {
                    double e = fabs(sc[j] / sum - row[j]);
                    worst = fmax(worst, e);
                    rsum += row[j];
                }
                if (!(worst <= 1e-5) || fabs(rsum - 1) > 1e-5)
                    fail_msg("heads %d/%d hd %d: layer %d head %d position %d: error %g, row sum %.8f", g->n_head,
                             g->n_kv, g->head_dim, l, h, pos, worst, rsum);
            }
    printf("heads %d / KV heads %d, head dim %d: %d rows, max error %.2e against the definition\n", g->n_head,
           g->n_kv, g->head_dim, N_TOK * N_LAYER * g->n_head, worst);

    trace_free(one);
    trace_free(other);
    free(one);
    free(other);
    heed_model_free(m);
}

static void test_group_1(void **state) {
    (void)state;
    check_geometry(&(geometry){4, 4, 16});
}

static void test_group_3(void **state) {
    (void)state;
    check_geometry(&(geometry){6, 2, 16});
}

static void test_group_4_small_heads(void **state) {
    (void)state;
    check_geometry(&(geometry){8, 2, 8});
}

static void test_group_5(void **state) {
    (void)state;
    check_geometry(&(geometry){5, 1, 16});
}

static void test_group_7_odd_head_dim(void **state) {
    (void)state;
    check_geometry(&(geometry){7, 1, 12});
}

static void test_group_6_wide_heads(void **state) {
    (void)state;
    check_geometry(&(geometry){12, 2, 36});
}

static void test_group_2(void **state) {
    (void)state;
    check_geometry(&(geometry){4, 2, 16});
}

static void test_group_8(void **state) {
    (void)state;
    check_geometry(&(geometry){8, 1, 16});
}

int main(int argc, char **argv) {
    (void)argc;
    char self[PATH_MAX];
    snprintf(self, sizeof self, "%s", argv[0]);
    snprintf(mkmodel, sizeof mkmodel, "%s/../bench/mkmodel", dirname(self));
    if (access(mkmodel, X_OK)) {
        fprintf(stderr, "test_forward: %s is missing (make tests builds it)\n", mkmodel);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_group_1),
        cmocka_unit_test(test_group_3),
        cmocka_unit_test(test_group_4_small_heads),
        cmocka_unit_test(test_group_5),
        cmocka_unit_test(test_group_7_odd_head_dim),
        cmocka_unit_test(test_group_6_wide_heads),
        cmocka_unit_test(test_group_2),
        cmocka_unit_test(test_group_8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
