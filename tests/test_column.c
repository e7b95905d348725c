/*
 * test_column.c - a column of attention from the rows' softmax statistics.
 *
 * The forward pass hands the recorder each row's max score and reciprocal
 * sum (heed_attn_block.row_mi); the store keeps them beside q and k, and a
 * column (every later query's weight on one key) is then its scores alone
 * through softmax_apply. Every entry must equal the row's entry bit for
 * bit: checked on every kernel table for the store alone (GQA, scale,
 * soft-cap, sliding windows, underflowing scores, ranges of queries), and
 * on recorded runs (every selection, value-weighted, decode split across
 * keys, after a save and load, sliding windows and soft-caps of the shared
 * gemma models).
 */
#include <math.h>

#include "astore.h"
#include "attn.h"
#include "forward.h"
#include "kern.h"
#include "run.h"
#include "runutil.h"
#include "testutil.h"

/* ------------------------------------------------------ the store alone */

static float frand(uint32_t *s) {
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* A store of 2 layers filled with random q/k (amplitude amp) and the rows
 * the forward pass would make from them, with their statistics. */
static void fill_store(astore *s, const kern_ops *ops, int n_head, int n_kv, int hd, kern_attn_rule rule, int n_pos,
                       float amp, uint32_t seed) {
    astore_params ap = {0, true, false, 0, NULL, 0};
    assert_int_equal(astore_init(s, 2, n_head, n_kv, hd, &ap), HEED_OK);
    s->has_mi = true;
    for (int l = 0; l < 2; l++) assert_int_equal(astore_set_rule(s, l, rule), HEED_OK);
    size_t qd = (size_t)n_head * hd, kd = (size_t)n_kv * hd;
    float *q = malloc(sizeof(float) * n_pos * qd), *k = malloc(sizeof(float) * n_pos * kd);
    float *probs = malloc(sizeof(float) * n_head * n_pos * n_pos), *mi = malloc(sizeof(float) * 2 * n_head * n_pos);
    for (int l = 0; l < 2; l++) {
        for (size_t i = 0; i < n_pos * qd; i++) q[i] = amp * frand(&seed);
        for (size_t i = 0; i < n_pos * kd; i++) k[i] = amp * frand(&seed);
        heed_qk_block qb = {l, 0, n_pos, n_head, n_kv, hd, q, k, NULL};
        astore_add_qk(s, &qb, NULL);
        for (int h = 0; h < n_head; h++)
            for (int i = 0; i < n_pos; i++) { /* as forward.c's attn_rows: scores, cap, softmax_mi */
                float *row = probs + ((size_t)h * n_pos + i) * n_pos;
                int lo = kern_attn_first_key(i, rule.window), n = i + 1 - lo;
                memset(row, 0, sizeof(float) * n_pos);
                ops->attn_scores(row + lo, q + i * qd + (size_t)h * hd, k + (size_t)lo * kd + (size_t)(h / (n_head / n_kv)) * hd,
                                 kd, n, hd, rule.scale);
                if (rule.softcap > 0.0f) kern_softcap(row + lo, n, rule.softcap);
                ops->softmax_mi(row + lo, n, mi + 2 * ((size_t)h * n_pos + i));
            }
        heed_attn_block b = {l, n_head, 0, n_pos, (size_t)n_pos, (size_t)n_pos * n_pos, probs, mi};
        astore_add_probs(s, &b, NULL);
    }
    assert_false(s->failed);
    assert_int_equal(s->n_pos, n_pos);
    free(q);
    free(k);
    free(probs);
    free(mi);
}

/* Every column of every (layer, head), whole and from a later query on,
 * equals the rows' entries, bit for bit. */
static void check_store(const astore *s, const kern_ops *ops) {
    int n = s->n_pos;
    float *row = malloc(sizeof(float) * n), *col = malloc(sizeof(float) * n), *mi = malloc(sizeof(float) * 2 * n);
    for (int l = 0; l < s->n_layer; l++)
        for (int h = 0; h < s->n_head; h++)
            for (int key = 0; key < n; key++) {
                int q0 = key + (key * 7 + h) % 3 * (n - key) / 4; /* whole, or from a later query */
                assert_int_equal(astore_col(s, ops, l, h, key, q0, n, col, mi), HEED_OK);
                for (int q = q0; q < n; q++) {
                    assert_int_equal(astore_row(s, ops, l, h, q, row), HEED_OK);
                    if (memcmp(&row[key], &col[q - q0], sizeof(float)))
                        fail_msg("layer %d head %d key %d query %d: column %.9g, row %.9g", l, h, key, q,
                                 col[q - q0], row[key]);
                }
            }
    /* the rows of a KV group's heads together (their keys read once): each row astore_row's */
    int group = s->n_head / s->n_head_kv;
    float *rows = malloc(sizeof(float) * n * KERN_ATTN_BLOCK);
    for (int l = 0; l < s->n_layer; l++)
        for (int q = 0; q < n; q++)
            for (int h0 = 0; h0 < s->n_head; h0 += group)
                for (int a = 0; a < group; a += KERN_ATTN_BLOCK) {
                    int heads[KERN_ATTN_BLOCK], m = group - a < KERN_ATTN_BLOCK ? group - a : KERN_ATTN_BLOCK;
                    float *outs[KERN_ATTN_BLOCK];
                    for (int i = 0; i < m; i++) heads[i] = h0 + a + i, outs[i] = rows + (size_t)i * n;
                    assert_int_equal(astore_rows(s, ops, l, heads, m, q, outs), HEED_OK);
                    for (int i = 0; i < m; i++) {
                        assert_int_equal(astore_row(s, ops, l, heads[i], q, row), HEED_OK);
                        assert_memory_equal(row, outs[i], sizeof(float) * (size_t)(q + 1));
                    }
                }
    if (group > 1) { /* heads of two KV groups: refused */
        int heads[2] = {0, group};
        float *outs[2] = {rows, rows + n};
        assert_int_equal(astore_rows(s, ops, 0, heads, 2, n - 1, outs), HEED_ERR_INVALID_ARG);
    }
    free(rows);
    free(row);
    free(col);
    free(mi);
}

static void test_store_every_table(void **state) {
    const kern_ops *tables[] = {kern_ops_scalar(), kern_ops_avx2(), kern_ops_avx512()};
    const char *names[] = {"scalar", "avx2", "avx512"};
    int tried = 0;
    for (int t = 0; t < 3; t++) {
        if (!tables[t]) {
            printf("# %s: not on this CPU\n", names[t]);
            continue;
        }
        struct {
            int n_head, n_kv, hd;
            kern_attn_rule rule;
            float amp;
        } cases[] = {
            {4, 4, 8, {1.0f / sqrtf(8.0f), 0.0f, 0, NULL, 0}, 1.0f},   /* plain */
            {8, 2, 12, {0.25f, 0.0f, 0, NULL, 0}, 3.0f},              /* GQA, odd head size, sharp rows */
            {12, 2, 8, {0.35f, 0.0f, 0, NULL, 0}, 1.0f},              /* groups of 6: a block of 4 and of 2 */
            {6, 3, 16, {0.25f, 5.0f, 7, NULL, 0}, 2.0f},              /* soft-cap and a window of 7 */
            {2, 1, 64, {0.125f, 0.0f, 0, NULL, 0}, 6.0f},             /* scores past exp's underflow */
        };
        for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
            astore s;
            fill_store(&s, tables[t], cases[c].n_head, cases[c].n_kv, cases[c].hd, cases[c].rule, 37, cases[c].amp,
                       (uint32_t)(c * 31 + 5));
            check_store(&s, tables[t]);
            astore_free(&s);
        }
        tried++;
    }
    assert_true(tried >= 1);
}

/* Pooled windows of a longer store (past a chunk of keys and a group of
 * queries): the blocked path equals the row-by-row one bit for bit, on one
 * thread and three. */
static void test_store_pool(void **state) {
    const kern_ops *ops = kern_ops_avx2() ? kern_ops_avx2() : kern_ops_scalar();
    kern_attn_rule rules[] = {{0.3f, 0.0f, 0, NULL, 0}, {0.3f, 4.0f, 300, NULL, 0}};
    pool *p3 = pool_new(3);
    for (int ri = 0; ri < 2; ri++) {
        astore s;
        int n = 1300;
        fill_store(&s, ops, 2, 1, 8, rules[ri], n, 2.0f, (uint32_t)(77 + ri));
        struct {
            int q0, q1, k0, k1, bq, bk;
        } w[] = {{0, n, 0, n, 6, 6}, {0, n, 0, n, 1, 1100}, {100, n, 7, n, 70, 1}, {n - 200, n, 0, n, 3, 341}};
        float *a = malloc(sizeof(float) * (size_t)n * n), *b = malloc(sizeof(float) * (size_t)n * n);
        for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
            for (int th = 0; th < 2; th++)
                for (int max = 0; max < 2; max++) {
                    int l = 1, h = 1;
                    heed_attn_sel one = {&l, 1, &h, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
                    attn_src src = {&s, ops, th ? p3 : NULL, NULL};
                    int rows = (w[i].q1 - w[i].q0 + w[i].bq - 1) / w[i].bq, cols = (w[i].k1 - w[i].k0 + w[i].bk - 1) / w[i].bk;
                    assert_int_equal(attn_agg_pool(&src, &one, w[i].q0, w[i].q1, w[i].k0, w[i].k1, w[i].bq, w[i].bk, max, a),
                                     HEED_OK);
                    s.has_mi = false;
                    assert_int_equal(attn_agg_pool(&src, &one, w[i].q0, w[i].q1, w[i].k0, w[i].k1, w[i].bq, w[i].bk, max, b),
                                     HEED_OK);
                    s.has_mi = true;
                    if (memcmp(a, b, sizeof(float) * rows * cols))
                        fail_msg("rule %d window %zu threads %d %s: blocked cells differ", ri, i, th ? 3 : 1, max ? "max" : "mean");
                }
        free(a);
        free(b);
        astore_free(&s);
    }
    pool_free(p3);
}

/* A store without statistics, knockouts, or bad arguments: refused. */
static void test_store_refusals(void **state) {
    astore s;
    const kern_ops *ops = kern_ops_scalar();
    fill_store(&s, ops, 2, 2, 8, (kern_attn_rule){0.3f, 0.0f, 0, NULL, 0}, 10, 1.0f, 9);
    float col[16], mi[32];
    assert_int_equal(astore_col(&s, ops, 0, 0, 3, 2, 10, col, mi), HEED_ERR_INVALID_ARG); /* q0 before key */
    assert_int_equal(astore_col(&s, ops, 2, 0, 3, 3, 10, col, mi), HEED_ERR_INVALID_ARG);
    assert_int_equal(astore_col(&s, ops, 0, 0, 3, 3, 11, col, mi), HEED_ERR_INVALID_ARG);
    heed_knockout ko = {0, 1, 0, 10, 2, 3};
    assert_int_equal(astore_set_knockouts(&s, &ko, 1), HEED_OK);
    assert_int_equal(astore_col(&s, ops, 0, 0, 3, 3, 10, col, mi), HEED_ERR_UNSUPPORTED);
    assert_int_equal(astore_col(&s, ops, 1, 0, 3, 3, 10, col, mi), HEED_OK); /* another layer */
    astore_free(&s);
    /* a block without statistics turns them off for good */
    fill_store(&s, ops, 2, 2, 8, (kern_attn_rule){0.3f, 0.0f, 0, NULL, 0}, 10, 1.0f, 9);
    float probs[2 * 11] = {0};
    probs[10] = 1.0f, probs[21] = 1.0f;
    heed_attn_block b = {0, 2, 10, 1, 11, 11, probs, NULL};
    astore_add_probs(&s, &b, NULL);
    assert_false(s.has_mi);
    assert_int_equal(astore_col(&s, ops, 0, 0, 3, 3, 10, col, mi), HEED_ERR_UNSUPPORTED);
    astore_free(&s);
}

/* ------------------------------------------------------- recorded runs */

/* n_gen greedy tokens after prompt on model_path (NULL: bundled), recorded
 * with the defaults; key_chunk > 0 splits every decode row across keys. */
static heed_run *record(const char *model_path, const char *prompt, int n_gen, int key_chunk) {
    return ru_record_model_split(model_path, prompt, n_gen, NULL, 256, key_chunk);
}

/* Every key's column under each selection equals the rows' entries bit for
 * bit, and equals the column made row by row (statistics switched off). */
static void check_run(heed_run *r) {
    assert_true(r->st.has_qk);
    assert_true(r->st.has_mi);
    int n = r->st.n_pos, L = r->n_layer, H = r->n_head;
    int l1 = L - 1, h1 = H / 2, layers2[2] = {0, L - 1}, heads2[2] = {H - 1, 0};
    heed_attn_sel sels[] = {
        heed_attn_sel_all(),
        {NULL, 0, NULL, 0, HEED_AGG_MAX, HEED_MEASURE_ATTENTION},
        {&l1, 1, &h1, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION},
        {layers2, 2, heads2, 2, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION},
        {NULL, 0, NULL, 0, HEED_AGG_MEAN, HEED_MEASURE_VALUE},
        {&l1, 1, NULL, 0, HEED_AGG_MAX, HEED_MEASURE_VALUE},
    };
    float *row = malloc(sizeof(float) * n), *col = malloc(sizeof(float) * n), *slow = malloc(sizeof(float) * n);
    for (size_t si = 0; si < sizeof sels / sizeof sels[0]; si++)
        for (int key = 0; key < n; key += 1 + (n > 40)) {
            assert_int_equal(heed_run_attn_col(r, &sels[si], key, col), HEED_OK);
            r->st.has_mi = false; /* the same column, row by row */
            assert_int_equal(heed_run_attn_col(r, &sels[si], key, slow), HEED_OK);
            r->st.has_mi = true;
            assert_memory_equal(col, slow, sizeof(float) * (size_t)(n - key));
            for (int q = key; q < n; q += 3) {
                assert_int_equal(heed_run_attn_row(r, &sels[si], q, row), HEED_OK);
                if (memcmp(&row[key], &col[q - key], sizeof(float)))
                    fail_msg("selection %zu key %d query %d: column %.9g, row %.9g", si, key, q, col[q - key], row[key]);
            }
        }
    free(row);
    free(col);
    free(slow);
}

/* The pooled window computed row by row as the heatmap route did before
 * heed_run_attn_pool: each query's row, keys in order, float sums. */
static void pool_by_rows(heed_run *r, const heed_attn_sel *sel, int q0, int q1, int k0, int k1, int bq, int bk,
                         bool max, float *cell) {
    int rows = (q1 - q0 + bq - 1) / bq, cols = (k1 - k0 + bk - 1) / bk;
    float *row = malloc(sizeof(float) * r->st.n_pos);
    int *cnt = calloc((size_t)rows * cols, sizeof(int));
    memset(cell, 0, sizeof(float) * rows * cols);
    for (int q = q0; q < q1; q++) {
        assert_int_equal(heed_run_attn_row(r, sel, q, row), HEED_OK);
        for (int k = k0; k < k1 && k <= q; k++) {
            int i = (q - q0) / bq * cols + (k - k0) / bk;
            cell[i] = max ? (row[k] > cell[i] ? row[k] : cell[i]) : cell[i] + row[k];
            cnt[i]++;
        }
    }
    for (int i = 0; !max && i < rows * cols; i++) cell[i] = cnt[i] ? cell[i] / (float)cnt[i] : 0.0f;
    free(row);
    free(cnt);
}

/* Pooled windows of one head (the blocked path from the statistics), of a
 * head without statistics and of several heads (row by row) equal the
 * row-by-row pooling bit for bit: windows and cells of many shapes. */
static void check_pool(heed_run *r) {
    int n = r->st.n_pos, L = r->n_layer, H = r->n_head, l = L - 1, h = H - 1;
    heed_attn_sel one = {&l, 1, &h, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
    heed_attn_sel one_v = {&l, 1, &h, 1, HEED_AGG_MEAN, HEED_MEASURE_VALUE}, all = heed_attn_sel_all();
    const heed_attn_sel *sels[] = {&one, &one_v, &all};
    struct {
        int q0, q1, k0, k1, bq, bk;
    } w[] = {{0, n, 0, n, 1, 1}, {0, n, 0, n, 3, 5}, {n / 3, n, 2, n - 1, 4, 2}, {5, n / 2, n / 4, n, 7, 1},
             {0, n, 0, n, n, n}, {n - 9, n, 0, 17, 2, 3}};
    size_t cap = (size_t)n * n;
    float *a = malloc(sizeof(float) * cap), *b = malloc(sizeof(float) * cap);
    for (size_t si = 0; si < 3; si++)
        for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
            for (int max = 0; max < 2; max++) {
                int rows = (w[i].q1 - w[i].q0 + w[i].bq - 1) / w[i].bq, cols = (w[i].k1 - w[i].k0 + w[i].bk - 1) / w[i].bk;
                assert_int_equal(heed_run_attn_pool(r, sels[si], w[i].q0, w[i].q1, w[i].k0, w[i].k1, w[i].bq, w[i].bk,
                                                    max, a),
                                 HEED_OK);
                pool_by_rows(r, sels[si], w[i].q0, w[i].q1, w[i].k0, w[i].k1, w[i].bq, w[i].bk, max, b);
                if (memcmp(a, b, sizeof(float) * rows * cols))
                    fail_msg("selection %zu window %zu %s: pooled cells differ from the rows'", si, i, max ? "max" : "mean");
                r->st.has_mi = false; /* the row-by-row path inside heed_run_attn_pool */
                assert_int_equal(heed_run_attn_pool(r, sels[si], w[i].q0, w[i].q1, w[i].k0, w[i].k1, w[i].bq, w[i].bk,
                                                    max, a),
                                 HEED_OK);
                r->st.has_mi = true;
                assert_memory_equal(a, b, sizeof(float) * rows * cols);
            }
    float c[4];
    assert_int_equal(heed_run_attn_pool(r, &one, 3, 3, 0, n, 1, 1, false, c), HEED_ERR_INVALID_ARG);
    assert_int_equal(heed_run_attn_pool(r, &one, 0, n + 1, 0, n, 1, 1, false, c), HEED_ERR_INVALID_ARG);
    assert_int_equal(heed_run_attn_pool(r, &one, 0, n, 0, n, 0, 1, false, c), HEED_ERR_INVALID_ARG);
    free(a);
    free(b);
}

static void test_run_bundled(void **state) {
    heed_run *r = record(NULL, "Once upon a time, there was a little girl named Lily.", 24, 0);
    check_run(r);
    check_pool(r);
    /* the statistics travel in the run file (RSTA) */
    char err[256];
    const char *path = "test-output/column.run";
    assert_int_equal(heed_run_save(r, path, err, sizeof err), HEED_OK);
    heed_run *back = NULL;
    assert_int_equal(heed_run_load(path, &back, err, sizeof err), HEED_OK);
    assert_true(back->st.has_mi);
    assert_memory_equal(back->st.mi, r->st.mi, sizeof(float) * 2 * (size_t)r->st.n_pos * r->n_layer * r->n_head);
    check_run(back);
    heed_run_free(back);
    heed_run_free(r);
}

/* decode rows split across keys (chunks of 8): their statistics come from
 * the split's own softmax pass */
static void test_run_split(void **state) {
    heed_run *r = record(NULL, "One day, a big dog and a small cat went to the park to play.", 30, 8);
    check_run(r);
    heed_run_free(r);
}

/* soft-capped scores and sliding windows (gemma 2), windows with a
 * different scale (gemma 3), from the shared tiny models */
static void test_run_windows(void **state) {
    const char *names[] = {"models/tiny-gemma2.gguf", "models/tiny-gemma3.gguf", "models/tiny-qwen3.gguf"};
    int done = 0;
    for (int i = 0; i < 3; i++) {
        char buf[512];
        const char *p = tu_shared(names[i], buf, sizeof buf);
        if (!p) continue;
        heed_run *r = record(p, "The quick brown fox jumps over the lazy dog, and then it runs far away.", 20, 0);
        check_run(r);
        check_pool(r);
        heed_run_free(r);
        done++;
    }
    if (!done) skip();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_store_every_table),
        cmocka_unit_test(test_store_refusals),
        cmocka_unit_test(test_store_pool),
        cmocka_unit_test(test_run_bundled),
        cmocka_unit_test(test_run_split),
        cmocka_unit_test(test_run_windows),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
