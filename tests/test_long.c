/*
 * test_long - long contexts against the reference engine: rows of query
 * positions up to 8k (and 16k with HEED_TEST_LONG=1, `make test-long`) of
 * ../shared/golden/long (README there: llama.cpp computes RoPE angles in
 * float32 and drifts from exact math by up to 2.4e-4 at 8k, 4.3e-4 at 16k;
 * the tolerance is 1e-3), the prompt fed in the engine's own batches and in
 * irregular chunks, which must give the same rows to float rounding. heed's angles
 * are computed in double: its distance to the golden rows at each position
 * is printed beside the golden file's own distance to exact float64 math,
 * which is what heed's distance is when heed computes exactly.
 */
#include <jansson.h>
#include <math.h>

#include "heed.h"
#include "testutil.h"

#define ATT_TOL 1e-3
#define LOGIT_REL_TOL 1e-3
#define MAX_Q 16
/* chunks change which rows share a matrix tile or an attention block, and
 * so the float summation order: rows agree to rounding, not bit for bit */
#define CHUNK_TOL 1e-5

typedef struct grab {
    int n_layer, n_head, n_q;
    int pos[MAX_Q];
    float *rows[MAX_Q]; /* (n_layer, n_head, pos + 1) */
} grab;

static void observe(void *user, const heed_attn_block *b) {
    grab *g = user;
    for (int q = 0; q < g->n_q; q++) {
        int i = g->pos[q] - b->pos0;
        if (i < 0 || i >= b->n_query) continue;
        size_t len = (size_t)g->pos[q] + 1;
        for (int h = 0; h < b->n_head; h++)
            memcpy(g->rows[q] + ((size_t)b->layer * g->n_head + h) * len,
                   b->probs + h * b->head_stride + (size_t)i * b->row_stride, sizeof(float) * len);
    }
}

/* Feeds ids[0..n_prompt) in chunks of `chunk` (0: one call, the engine's
 * batches), then the rest one at a time; logits of each step's position. */
static void run(heed_model *m, int n_ctx, const int32_t *ids, int n_prompt, int n_ids, int chunk, grab *g,
                float *step_logits, int n_vocab) {
    heed_ctx *c;
    heed_ctx_params cp = heed_ctx_default_params();
    cp.n_ctx = n_ctx;
    assert_int_equal(heed_ctx_new(m, &cp, &c), HEED_OK);
    heed_attn_hook hook = {.observe = observe, .user = g};
    heed_ctx_set_attn_hook(c, &hook);
    if (!chunk) chunk = n_prompt;
    for (int done = 0; done < n_prompt; done += chunk) {
        int n = n_prompt - done < chunk ? n_prompt - done : chunk;
        if (heed_decode(c, ids + done, n)) fail_msg("decode: %s", heed_ctx_error(c));
    }
    memcpy(step_logits, heed_ctx_logits(c), sizeof(float) * (size_t)n_vocab);
    for (int i = n_prompt; i < n_ids; i++) {
        assert_int_equal(heed_decode(c, ids + i, 1), HEED_OK);
        memcpy(step_logits + (size_t)(i - n_prompt + 1) * n_vocab, heed_ctx_logits(c), sizeof(float) * (size_t)n_vocab);
    }
    heed_ctx_free(c);
}

static void check_file(const char *rel) {
    char gp[512], mp[512];
    if (!tu_shared(rel, gp, sizeof gp) || !tu_shared("models/tiny-long.gguf", mp, sizeof mp)) skip();
    json_error_t je;
    json_t *j = json_load_file(gp, 0, &je);
    if (!j) fail_msg("%s: %s", gp, je.text);
    heed_model *m;
    assert_int_equal(heed_model_load(mp, NULL, &m, NULL, 0), HEED_OK);
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    json_t *jids = json_object_get(j, "ids"), *jq = json_object_get(j, "query_positions");
    int n_ids = (int)json_array_size(jids), n_prompt = (int)json_integer_value(json_object_get(j, "n_prompt"));
    int n_ctx = (int)json_integer_value(json_object_get(j, "n_ctx"));
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)n_ids);
    for (int i = 0; i < n_ids; i++) ids[i] = (int32_t)json_integer_value(json_array_get(jids, (size_t)i));
    grab a = {mi.n_layer, mi.n_head, (int)json_array_size(jq), {0}, {0}}, b = a;
    assert_true(a.n_q <= MAX_Q);
    for (int q = 0; q < a.n_q; q++) {
        a.pos[q] = b.pos[q] = (int)json_integer_value(json_array_get(jq, (size_t)q));
        size_t n = (size_t)mi.n_layer * mi.n_head * (a.pos[q] + 1);
        a.rows[q] = calloc(n, sizeof(float));
        b.rows[q] = calloc(n, sizeof(float));
    }
    int n_steps = n_ids - n_prompt + 1;
    float *la = malloc(sizeof(float) * (size_t)mi.n_vocab * n_steps), *lb = malloc(sizeof(float) * (size_t)mi.n_vocab * n_steps);
    run(m, n_ctx, ids, n_prompt, n_ids, 0, &a, la, mi.n_vocab);
    run(m, n_ctx, ids, n_prompt, n_ids, 777, &b, lb, mi.n_vocab); /* chunks that straddle every batch edge */

    json_t *rows = json_object_get(j, "rows");
    json_t *exact = json_object_get(json_object_get(json_object_get(j, "crosscheck"), "exact_float64_reference"),
                                    "max_abs_attention_diff_per_position");
    double worst = 0, worst_chunk = 0;
    for (int q = 0; q < a.n_q; q++) {
        int pos = a.pos[q];
        size_t len = (size_t)pos + 1, n = (size_t)mi.n_layer * mi.n_head * len;
        double chunk_diff = 0;
        for (size_t i = 0; i < n; i++) chunk_diff = fmax(chunk_diff, fabs(a.rows[q][i] - b.rows[q][i]));
        worst_chunk = fmax(worst_chunk, chunk_diff);
        if (chunk_diff > CHUNK_TOL)
            fail_msg("%s: position %d: rows differ by %.3g with another chunking of the prompt", rel, pos, chunk_diff);
        char key[16];
        snprintf(key, sizeof key, "%d", pos);
        json_t *jr = json_object_get(rows, key);
        assert_non_null(jr);
        double e_pos = 0;
        for (int l = 0; l < mi.n_layer; l++)
            for (int h = 0; h < mi.n_head; h++) {
                json_t *row = json_array_get(json_array_get(jr, (size_t)l), (size_t)h);
                assert_int_equal(json_array_size(row), len);
                const float *got = a.rows[q] + ((size_t)l * mi.n_head + h) * len;
                for (size_t k = 0; k < len; k++) {
                    double e = fabs(got[k] - json_number_value(json_array_get(row, k)));
                    if (e > ATT_TOL)
                        fail_msg("%s: position %d layer %d head %d key %zu: %.7g vs %.7g", rel, pos, l, h, k, got[k],
                                 json_number_value(json_array_get(row, k)));
                    e_pos = e > e_pos ? e : e_pos;
                }
            }
        worst = e_pos > worst ? e_pos : worst;
        printf("  position %5d: |heed - reference| %.2e; the reference's own distance to exact math %.2e\n", pos,
               e_pos, json_number_value(json_object_get(exact, key)));
    }
    double lchunk = 0;
    for (size_t i = 0; i < (size_t)mi.n_vocab * n_steps; i++) lchunk = fmax(lchunk, fabs(la[i] - lb[i]));
    printf("  another chunking of the prompt: rows within %.2e, logits within %.2e\n", worst_chunk, lchunk);
    json_t *steps = json_object_get(j, "steps");
    for (size_t s = 0; s < json_array_size(steps); s++) {
        json_t *st = json_array_get(steps, s);
        const float *lg = la + s * (size_t)mi.n_vocab;
        int best = 0;
        for (int i = 1; i < mi.n_vocab; i++) best = lg[i] > lg[best] ? i : best;
        assert_int_equal(best, (int)json_integer_value(json_object_get(st, "id")));
        double max_abs = json_number_value(json_object_get(st, "max_abs_logit"));
        json_t *top = json_object_get(st, "top_logits");
        for (size_t k = 0; k < json_array_size(top); k++) {
            int id = (int)json_integer_value(json_array_get(json_array_get(top, k), 0));
            double want = json_number_value(json_array_get(json_array_get(top, k), 1));
            if (fabs(lg[id] - want) > LOGIT_REL_TOL * max_abs)
                fail_msg("%s: step %zu: logit of %d is %.7g, reference %.7g", rel, s, id, lg[id], want);
        }
    }
    printf("  %s: %d rows of %d positions within %.2e of the reference (tolerance %.0e)\n",
           rel, a.n_q * mi.n_layer * mi.n_head, a.n_q, worst, ATT_TOL);
    for (int q = 0; q < a.n_q; q++) free(a.rows[q]), free(b.rows[q]);
    free(la), free(lb), free(ids);
    heed_model_free(m);
    json_decref(j);
}

static void test_long_8k(void **state) { check_file("golden/long/tiny-long__text-8192.json"); }

static void test_long_16k(void **state) { check_file("golden/long/tiny-long__text-16384.json"); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_long_8k),
        cmocka_unit_test(test_long_16k), /* make test-long (HEED_TEST_LONG=1) only */
    };
    return _cmocka_run_group_tests("test_long", tests, getenv("HEED_TEST_LONG") ? 2 : 1, NULL, NULL);
}
