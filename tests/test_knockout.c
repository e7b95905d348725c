/*
 * test_knockout - attention knockout, the intervention on attention itself,
 * and mean ablation (a head's output replaced by its mean):
 * knocked-out keys get exactly 0 and the row is the softmax over the other
 * keys (checked in double from the observed q and k), layers before the
 * knockout are untouched bit for bit, a knockout that matches nothing
 * changes nothing, and a recording keeps the knockouts so that rows
 * recomputed from its q and k are the captured ones, through a file.
 */
#include <math.h>

#include "heed.h"
#include "testutil.h"

enum { N = 14, MAXL = 8, MAXH = 8 };

typedef struct grab {
    int n_head, hd, n_kv;
    float rows[MAXL][MAXH][N][N];
    float q[MAXL][N][MAXH * 8], k[MAXL][N][MAXH * 8];
} grab;

static void observe(void *user, const heed_attn_block *b) {
    grab *g = user;
    for (int h = 0; h < b->n_head; h++)
        for (int i = 0; i < b->n_query; i++)
            memcpy(g->rows[b->layer][h][b->pos0 + i], b->probs + h * b->head_stride + i * b->row_stride,
                   sizeof(float) * (size_t)(b->pos0 + i + 1));
}

static void observe_qk(void *user, const heed_qk_block *b) {
    grab *g = user;
    for (int i = 0; i < b->n_query; i++) {
        memcpy(g->q[b->layer][b->pos0 + i], b->q + (size_t)i * b->n_head * b->head_dim,
               sizeof(float) * (size_t)b->n_head * b->head_dim);
        memcpy(g->k[b->layer][b->pos0 + i], b->k + (size_t)i * b->n_head_kv * b->head_dim,
               sizeof(float) * (size_t)b->n_head_kv * b->head_dim);
    }
}

static const int32_t IDS[N] = {1, 403, 407, 261, 378, 432, 383, 261, 300, 410, 270, 290, 305, 320};

/* the prompt in 6 tokens, then one at a time (both attention paths) */
static void run(const heed_model *m, const heed_knockout *ko, int n_ko, grab *g, float *logits) {
    heed_ctx *c;
    assert_int_equal(heed_ctx_new(m, NULL, &c), HEED_OK);
    assert_int_equal(heed_ctx_set_knockouts(c, ko, n_ko), HEED_OK);
    heed_attn_hook hook = {.observe = observe, .observe_qk = observe_qk, .user = g};
    heed_ctx_set_attn_hook(c, &hook);
    assert_int_equal(heed_decode(c, IDS, 6), HEED_OK);
    for (int i = 6; i < N; i++) assert_int_equal(heed_decode(c, IDS + i, 1), HEED_OK);
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    memcpy(logits, heed_ctx_logits(c), sizeof(float) * (size_t)mi.n_vocab);
    heed_ctx_free(c);
}

static void test_knockout_rows(void **state) {
    (void)state;
    heed_model *m;
    assert_int_equal(heed_model_load(NULL, NULL, &m, NULL, 0), HEED_OK);
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    assert_true(mi.n_layer <= MAXL && mi.n_head <= MAXH && mi.head_dim <= 8);
    grab *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b), *z = calloc(1, sizeof *z);
    float *la = malloc(sizeof(float) * (size_t)mi.n_vocab), *lb = malloc(sizeof(float) * (size_t)mi.n_vocab);
    run(m, NULL, 0, a, la);
    /* layer 2, every head: queries 5..9 may not see keys 0..2; layer 3 head 1: query 12 sees nothing */
    const heed_knockout ko[] = {{2, -1, 5, 10, 0, 3}, {3, 1, 12, 13, 0, 100}};
    run(m, ko, 2, b, lb);
    const int hd = mi.head_dim, group = mi.n_head / mi.n_head_kv;
    double worst = 0;
    int knocked = 0;
    for (int l = 0; l < mi.n_layer; l++)
        for (int h = 0; h < mi.n_head; h++)
            for (int p = 0; p < N; p++) {
                const float *ra = a->rows[l][h][p], *rb = b->rows[l][h][p];
                if (l < 2 || (l == 2 && p < 5)) { /* before the knockout: the same numbers */
                    assert_memory_equal(ra, rb, sizeof(float) * (size_t)(p + 1));
                    continue;
                }
                if (l == 3 && h == 1 && p == 12) { /* every key knocked out: nothing */
                    for (int k = 0; k <= p; k++) assert_true(rb[k] == 0.0f);
                    knocked += p + 1;
                    continue;
                }
                /* the definition: softmax over the keys not knocked out, in double */
                double sc[N], mx = -INFINITY, z_ = 0, sum = 0;
                bool out[N] = {0};
                for (int k = 0; k <= p; k++) {
                    out[k] = l == 2 && p >= 5 && p < 10 && k < 3;
                    double d = 0;
                    for (int e = 0; e < hd; e++) d += (double)b->q[l][p][h * hd + e] * b->k[l][k][(h / group) * hd + e];
                    sc[k] = d / sqrt((double)hd);
                    if (!out[k]) mx = fmax(mx, sc[k]);
                }
                for (int k = 0; k <= p; k++) z_ += out[k] ? 0 : exp(sc[k] - mx);
                for (int k = 0; k <= p; k++) {
                    if (out[k]) {
                        assert_true(rb[k] == 0.0f);
                        knocked++;
                    }
                    double want = out[k] ? 0 : exp(sc[k] - mx) / z_;
                    worst = fmax(worst, fabs(rb[k] - want));
                    sum += rb[k];
                }
                assert_true(fabs(sum - 1) < 1e-5);
            }
    printf("  %d entries knocked out (exactly 0); the other rows within %.2e of the definition\n", knocked, worst);
    assert_true(worst < 1e-6);
    assert_int_equal(knocked, 5 * 3 * mi.n_head + 13);
    /* a knockout of keys past every query changes nothing, bit for bit */
    const heed_knockout none[] = {{-1, -1, 0, 1000, 500, 600}};
    run(m, none, 1, z, lb);
    assert_memory_equal(la, lb, sizeof(float) * (size_t)mi.n_vocab);
    assert_memory_equal(a->rows, z->rows, sizeof a->rows);
    /* refused: out of range, empty ranges */
    heed_ctx *c;
    assert_int_equal(heed_ctx_new(m, NULL, &c), HEED_OK);
    const heed_knockout bad[][1] = {{{mi.n_layer, 0, 0, 1, 0, 1}}, {{0, mi.n_head, 0, 1, 0, 1}}, {{0, 0, 3, 3, 0, 1}},
                                    {{0, 0, 0, 1, 2, 1}},          {{-2, 0, 0, 1, 0, 1}},       {{0, 0, -1, 1, 0, 1}}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(heed_ctx_set_knockouts(c, bad[i], 1), HEED_ERR_INVALID_ARG);
    assert_int_equal(heed_ctx_set_knockouts(c, NULL, 1), HEED_ERR_INVALID_ARG);
    heed_ctx_free(c);
    free(a), free(b), free(z), free(la), free(lb);
    heed_model_free(m);
}

/* A generation under knockouts, recorded with the exact rows kept whole and
 * with q/k only: the same rows bit for bit, before and after a file. */
static heed_run *record(const heed_model *m, const heed_knockout *ko, int n_ko, bool full) {
    heed_ctx *c;
    assert_int_equal(heed_ctx_new(m, NULL, &c), HEED_OK);
    heed_gen_params gp = heed_gen_default_params();
    gp.sampler.temperature = 0;
    gp.n_predict = 8;
    gp.record = true;
    gp.rec.keep_qk = !full;
    gp.rec.full_limit_bytes = full ? (size_t)1 << 28 : 0;
    gp.knockouts = ko;
    gp.n_knockouts = n_ko;
    heed_gen *g;
    assert_int_equal(heed_gen_start(m, c, &gp, IDS, 6, &g), HEED_OK);
    heed_gen_step st;
    while (heed_gen_next(g, &st) == 1) {
    }
    heed_run *r;
    assert_int_equal(heed_gen_finish(g, &r), HEED_OK);
    heed_gen_free(g);
    heed_ctx_free(c);
    return r;
}

static void same_rows(heed_run *a, heed_run *b) {
    heed_run_info ia;
    heed_run_get_info(a, &ia);
    float ra[64], rb[64];
    for (int l = 0; l < ia.n_layer; l++)
        for (int h = 0; h < ia.n_head; h++) {
            heed_attn_sel sel = {&l, 1, &h, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
            for (int p = 0; p < ia.n_pos && p < 64; p++) {
                assert_int_equal(heed_run_attn_row(a, &sel, p, ra), HEED_OK);
                assert_int_equal(heed_run_attn_row(b, &sel, p, rb), HEED_OK);
                assert_memory_equal(ra, rb, sizeof(float) * (size_t)(p + 1));
            }
        }
}

static void test_knockout_recorded(void **state) {
    (void)state;
    heed_model *m;
    assert_int_equal(heed_model_load(NULL, NULL, &m, NULL, 0), HEED_OK);
    const heed_knockout ko[] = {{1, -1, 4, 12, 1, 4}, {-1, 2, 8, 9, 0, 8}};
    heed_run *full = record(m, ko, 2, true), *qk = record(m, ko, 2, false);
    heed_run_info ri;
    heed_run_get_info(qk, &ri);
    assert_true(ri.intervened);
    same_rows(full, qk);
    int n;
    const heed_knockout *got = heed_run_knockouts(qk, &n);
    assert_int_equal(n, 2);
    assert_memory_equal(got, ko, sizeof ko);
    assert_int_equal(system("mkdir -p test-output"), 0);
    assert_int_equal(heed_run_save(qk, "test-output/knockout.heedrun", NULL, 0), HEED_OK);
    heed_run *back;
    assert_int_equal(heed_run_load("test-output/knockout.heedrun", &back, NULL, 0), HEED_OK);
    got = heed_run_knockouts(back, &n);
    assert_int_equal(n, 2);
    assert_memory_equal(got, ko, sizeof ko);
    same_rows(full, back);
    /* the row of layer 1 at position 5 is 0 at keys 1..3 */
    int l = 1, h = 0;
    heed_attn_sel sel = {&l, 1, &h, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
    float row[8];
    assert_int_equal(heed_run_attn_row(back, &sel, 5, row), HEED_OK);
    assert_true(row[1] == 0 && row[2] == 0 && row[3] == 0 && row[0] > 0 && row[4] > 0);
    /* the JSON export says what was done */
    assert_int_equal(heed_run_export_json(back, "test-output/knockout.json", NULL, 0), HEED_OK);
    FILE *f = fopen("test-output/knockout.json", "r");
    char buf[1 << 16];
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    buf[len] = 0;
    fclose(f);
    assert_non_null(strstr(buf, "\"knockouts\":[{\"layer\":1,\"head\":-1,\"queries\":[4,11],\"keys\":[1,3]}"));
    heed_run_free(back);
    heed_run_free(full);
    heed_run_free(qk);
    heed_model_free(m);
}

typedef struct head_sums {
    const unsigned char *which;
    int n_head, hd;
    double sum[8][8][8];
    float seen[8][8][N][8]; /* the observed outputs, per position */
} head_sums;

static void sum_heads(void *user, const heed_head_block *b) {
    head_sums *s = user;
    for (int i = 0; i < b->n_query; i++)
        for (int h = 0; h < b->n_head; h++)
            for (int d = 0; d < b->head_dim; d++) {
                float v = b->out[((size_t)i * b->n_head + h) * b->head_dim + d];
                s->sum[b->layer][h][d] += v;
                s->seen[b->layer][h][b->pos0 + i][d] = v;
            }
}

/* Mean ablation: the session's means are each head's output averaged over
 * the prompt in a clean pass (here recomputed, bit for bit); the replaced
 * head outputs exactly its mean at every position; the recorded run's first
 * step is a context with those values set by hand, bit for bit; the run
 * keeps the heads and means through a file. */
static void test_mean_ablation(void **state) {
    (void)state;
    heed_model *m;
    assert_int_equal(heed_model_load(NULL, NULL, &m, NULL, 0), HEED_OK);
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    assert_true(mi.n_layer <= 8 && mi.n_head <= 8 && mi.head_dim <= 8);
    unsigned char which[64] = {0};
    which[2 * mi.n_head + 3] = which[4 * mi.n_head + 0] = 1; /* heads 2:3 and 4:0 */
    /* the means, by hand */
    head_sums *hs = calloc(1, sizeof *hs);
    heed_ctx *c;
    assert_int_equal(heed_ctx_new(m, NULL, &c), HEED_OK);
    heed_attn_hook hook = {.observe_heads = sum_heads, .user = hs};
    heed_ctx_set_attn_hook(c, &hook);
    assert_int_equal(heed_decode(c, IDS, 6), HEED_OK);
    float means[8 * 8 * 8] = {0};
    for (int l = 0; l < mi.n_layer; l++)
        for (int h = 0; h < mi.n_head; h++)
            for (int d = 0; d < mi.head_dim; d++)
                means[((size_t)l * mi.n_head + h) * mi.head_dim + d] = (float)(hs->sum[l][h][d] / 6);
    /* the session, recorded */
    heed_ctx *c2;
    assert_int_equal(heed_ctx_new(m, NULL, &c2), HEED_OK);
    heed_gen_params gp = heed_gen_default_params();
    gp.sampler.temperature = 0;
    gp.n_predict = 4;
    gp.record = true;
    gp.ablate_mean = which;
    heed_gen *g;
    assert_int_equal(heed_gen_start(m, c2, &gp, IDS, 6, &g), HEED_OK);
    heed_gen_step st;
    while (heed_gen_next(g, &st) == 1) {
    }
    heed_run *run;
    assert_int_equal(heed_gen_finish(g, &run), HEED_OK);
    heed_gen_free(g);
    const unsigned char *rw;
    const float *rv = heed_run_head_values(run, &rw);
    assert_non_null(rv);
    assert_memory_equal(rw, which, (size_t)mi.n_layer * mi.n_head);
    for (int i = 0; i < mi.n_layer * mi.n_head; i++)
        if (which[i]) assert_memory_equal(rv + (size_t)i * mi.head_dim, means + (size_t)i * mi.head_dim, sizeof(float) * (size_t)mi.head_dim);
    /* a context with the values set by hand: the replaced heads output their means; step 0's logits */
    memset(hs, 0, sizeof *hs);
    heed_ctx_reset(c);
    assert_int_equal(heed_ctx_set_head_values(c, which, means), HEED_OK);
    assert_int_equal(heed_decode(c, IDS, 6), HEED_OK);
    for (int p = 0; p < 6; p++)
        for (int i = 0; i < mi.n_layer * mi.n_head; i++)
            if (which[i])
                assert_memory_equal(hs->seen[i / mi.n_head][i % mi.n_head][p], means + (size_t)i * mi.head_dim,
                                    sizeof(float) * (size_t)mi.head_dim);
    heed_run_step s0;
    assert_int_equal(heed_run_get_step(run, 0, &s0), HEED_OK);
    for (int k = 0; k < s0.n_cand; k++) assert_true(s0.cand[k].logit == heed_ctx_logits(c)[s0.cand[k].id]);
    /* through a file */
    assert_int_equal(system("mkdir -p test-output"), 0);
    assert_int_equal(heed_run_save(run, "test-output/mean.heedrun", NULL, 0), HEED_OK);
    heed_run *back;
    assert_int_equal(heed_run_load("test-output/mean.heedrun", &back, NULL, 0), HEED_OK);
    const unsigned char *bw;
    const float *bv = heed_run_head_values(back, &bw);
    assert_memory_equal(bw, which, (size_t)mi.n_layer * mi.n_head);
    assert_memory_equal(bv, rv, sizeof(float) * (size_t)mi.n_layer * mi.n_head * mi.head_dim);
    heed_run_info ri;
    heed_run_get_info(back, &ri);
    assert_true(ri.intervened);
    /* a value that is not finite is refused */
    float bad[8 * 8 * 8];
    memcpy(bad, means, sizeof bad);
    bad[(2 * mi.n_head + 3) * mi.head_dim] = NAN;
    assert_int_equal(heed_ctx_set_head_values(c, which, bad), HEED_ERR_INVALID_ARG);
    heed_run_free(back);
    heed_run_free(run);
    heed_ctx_free(c);
    heed_ctx_free(c2);
    free(hs);
    heed_model_free(m);
}

typedef struct resid_grab {
    int layer;
    float rows[N][512];
    int n_embd;
} resid_grab;

static void grab_resid(void *user, const heed_resid_block *b) {
    resid_grab *g = user;
    if (b->layer != g->layer) return;
    for (int i = 0; i < b->n_query; i++)
        memcpy(g->rows[b->pos0 + i], b->x + (size_t)i * b->n_embd, sizeof(float) * (size_t)b->n_embd);
}

/* The first step's logits of a session with these edits and patches, and
 * the residual rows after `layer` its prompt pass left. */
static void session(const heed_model *m, const heed_resid_edit *e, int n_e, const heed_gen_patch *p, int n_p,
                    int layer, float *logits, resid_grab *rg, heed_run **run) {
    heed_ctx *c;
    assert_int_equal(heed_ctx_new(m, NULL, &c), HEED_OK);
    heed_gen_params gp = heed_gen_default_params();
    gp.sampler.temperature = 0;
    gp.n_predict = 3;
    gp.record = run != NULL;
    gp.resid_edits = e;
    gp.n_resid_edits = n_e;
    gp.patches = p;
    gp.n_patches = n_p;
    heed_gen *g;
    assert_int_equal(heed_gen_start(m, c, &gp, IDS, 8, &g), HEED_OK);
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    memcpy(logits, heed_ctx_logits(c), sizeof(float) * (size_t)mi.n_vocab);
    heed_gen_step st;
    while (heed_gen_next(g, &st) == 1) {
    }
    if (run) assert_int_equal(heed_gen_finish(g, run), HEED_OK);
    heed_gen_free(g);
    if (rg) { /* the rows after `layer`, by a context with the edits set by hand */
        heed_ctx_reset(c);
        rg->layer = layer;
        rg->n_embd = mi.n_embd;
        heed_attn_hook hook = {.observe_resid = grab_resid, .user = rg};
        heed_ctx_set_attn_hook(c, &hook);
        assert_int_equal(heed_ctx_set_resid_edits(c, e, n_e), HEED_OK);
        assert_int_equal(heed_decode(c, IDS, 8), HEED_OK);
    }
    heed_ctx_free(c);
}

/* Steering adds alpha x vector to the residual after its layer at every
 * position (exactly); alpha 0 and patching a run with its own rows change
 * nothing, bit for bit; a patch from another prompt puts that prompt's row
 * in place; recorded runs keep the edits through a file. */
static void test_steer_and_patch(void **state) {
    (void)state;
    heed_model *m;
    assert_int_equal(heed_model_load(NULL, NULL, &m, NULL, 0), HEED_OK);
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    assert_true(mi.n_embd <= 512);
    float *base = malloc(sizeof(float) * (size_t)mi.n_vocab), *got = malloc(sizeof(float) * (size_t)mi.n_vocab);
    resid_grab *rb = calloc(1, sizeof *rb), *rs = calloc(1, sizeof *rs);
    session(m, NULL, 0, NULL, 0, 2, base, rb, NULL);
    float vec[512];
    for (int d = 0; d < mi.n_embd; d++) vec[d] = (float)((d * 37 % 11) - 5) * 0.05f;
    /* alpha 0: nothing changes */
    heed_resid_edit zero = {2, -1, false, 0.0f, vec};
    session(m, &zero, 1, NULL, 0, 2, got, NULL, NULL);
    assert_memory_equal(base, got, sizeof(float) * (size_t)mi.n_vocab);
    /* alpha 1.5 at layer 2: the rows after layer 2 are the clean ones plus 1.5 x vec */
    heed_resid_edit st = {2, -1, false, 1.5f, vec};
    session(m, &st, 1, NULL, 0, 2, got, rs, NULL);
    for (int p = 0; p < 8; p++)
        for (int d = 0; d < mi.n_embd; d++) {
            float want = rb->rows[p][d];
            want += 1.5f * vec[d];
            assert_true(rs->rows[p][d] == want);
        }
    assert_true(memcmp(base, got, sizeof(float) * (size_t)mi.n_vocab) != 0);
    /* patching with the run's own prompt: nothing changes */
    heed_gen_patch self = {3, 5, IDS, 8};
    session(m, NULL, 0, &self, 1, 3, got, NULL, NULL);
    assert_memory_equal(base, got, sizeof(float) * (size_t)mi.n_vocab);
    /* a patch from another prompt: its row after layer 1 at position 4, recorded with the run */
    static const int32_t other[6] = {1, 300, 301, 302, 303, 304};
    heed_gen_patch pt = {1, 4, other, 6};
    heed_run *run;
    session(m, NULL, 0, &pt, 1, 1, got, NULL, &run);
    resid_grab *ro = calloc(1, sizeof *ro);
    {
        heed_ctx *c;
        assert_int_equal(heed_ctx_new(m, NULL, &c), HEED_OK);
        ro->layer = 1;
        heed_attn_hook hook = {.observe_resid = grab_resid, .user = ro};
        heed_ctx_set_attn_hook(c, &hook);
        assert_int_equal(heed_decode(c, other, 6), HEED_OK); /* batched as the session runs it (its prompt is 8) */
        heed_ctx_free(c);
    }
    int n;
    const heed_resid_edit *re = heed_run_resid_edits(run, &n);
    assert_int_equal(n, 1);
    assert_true(re[0].layer == 1 && re[0].pos == 4 && re[0].replace);
    assert_memory_equal(re[0].vec, ro->rows[4], sizeof(float) * (size_t)mi.n_embd);
    assert_int_equal(system("mkdir -p test-output"), 0);
    assert_int_equal(heed_run_save(run, "test-output/patch.heedrun", NULL, 0), HEED_OK);
    heed_run *back;
    assert_int_equal(heed_run_load("test-output/patch.heedrun", &back, NULL, 0), HEED_OK);
    const heed_resid_edit *be = heed_run_resid_edits(back, &n);
    assert_int_equal(n, 1);
    assert_memory_equal(be[0].vec, ro->rows[4], sizeof(float) * (size_t)mi.n_embd);
    /* refused: a position beyond the source, a layer out of range */
    heed_ctx *c;
    assert_int_equal(heed_ctx_new(m, NULL, &c), HEED_OK);
    heed_gen_params gp = heed_gen_default_params();
    heed_gen_patch far = {1, 6, other, 6}, deep = {mi.n_layer, 1, other, 6};
    heed_gen *g = NULL;
    gp.patches = &far, gp.n_patches = 1;
    assert_int_equal(heed_gen_start(m, c, &gp, IDS, 8, &g), HEED_ERR_INVALID_ARG);
    gp.patches = &deep;
    assert_int_equal(heed_gen_start(m, c, &gp, IDS, 8, &g), HEED_ERR_INVALID_ARG);
    vec[3] = NAN;
    assert_int_equal(heed_ctx_set_resid_edits(c, &st, 1), HEED_ERR_INVALID_ARG);
    heed_ctx_free(c);
    heed_run_free(back);
    heed_run_free(run);
    free(base), free(got), free(rb), free(rs), free(ro);
    heed_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_steer_and_patch),
        cmocka_unit_test(test_mean_ablation),
        cmocka_unit_test(test_knockout_rows),
        cmocka_unit_test(test_knockout_recorded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
