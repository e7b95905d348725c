/*
 * test_gen.c - the generation session (heed_gen_*): the same tokens as the
 * engine's own loop, the stop rule (n_predict, end-of-generation, cancel,
 * the context's room), a forced prefix, the recording it hands over, the
 * text it streams, and refused arguments. Bundled model only.
 */
#include <math.h>

#include "testutil.h"

#include "gguf.h"
#include "heed.h"

typedef struct fixture {
    heed_model *m;
    heed_model_info mi;
    int32_t prompt[32];
    int n_prompt;
} fixture;

static int setup(void **state) {
    fixture *f = calloc(1, sizeof *f);
    if (!f || heed_model_load(NULL, NULL, &f->m, NULL, 0)) return -1;
    heed_model_get_info(f->m, &f->mi);
    f->n_prompt = heed_tokenize(f->m, "Once upon a time", 16, true, f->prompt, 32);
    *state = f;
    return f->n_prompt > 0 ? 0 : -1;
}

static int teardown(void **state) {
    fixture *f = *state;
    heed_model_free(f->m);
    free(f);
    return 0;
}

static heed_ctx *new_ctx(const fixture *f, int n_ctx) {
    heed_ctx_params cp = heed_ctx_default_params();
    cp.n_ctx = n_ctx;
    heed_ctx *c;
    assert_int_equal(heed_ctx_new(f->m, &cp, &c), HEED_OK);
    return c;
}

/* The session's tokens are the engine loop's: sample, decode, repeat. */
static void test_same_tokens_as_the_loop(void **state) {
    fixture *f = *state;
    enum { N = 16 };
    heed_ctx *c = new_ctx(f, 0);
    heed_sampler_params sp = heed_sampler_default_params();
    heed_sampler *s = heed_sampler_new(&sp, f->mi.n_vocab);
    heed_sampler_accept(s, f->prompt, f->n_prompt);
    assert_int_equal(heed_decode(c, f->prompt, f->n_prompt), HEED_OK);
    int32_t want[N];
    char text[4096] = "";
    for (int t = 0; t < N; t++) {
        heed_sample smp;
        assert_int_equal(heed_sampler_sample(s, heed_ctx_logits(c), f->mi.n_vocab, &smp), HEED_OK);
        want[t] = smp.id;
        char b[256];
        int nb = heed_token_bytes(f->m, smp.id, b, sizeof b);
        if (nb > 0) strncat(text, b, (size_t)nb);
        if (t + 1 < N) assert_int_equal(heed_decode(c, &smp.id, 1), HEED_OK);
    }
    heed_sampler_free(s);

    heed_gen_params gp = heed_gen_default_params();
    gp.n_predict = N;
    heed_gen *g;
    assert_int_equal(heed_gen_start(f->m, c, &gp, f->prompt, f->n_prompt, &g), HEED_OK);
    heed_gen_step st;
    char got[4096] = "";
    int n = 0, rc;
    while ((rc = heed_gen_next(g, &st)) == 1) {
        assert_int_equal(st.index, n);
        assert_int_equal(st.sample.id, want[n]);
        assert_int_equal(st.n_top, 5);
        assert_int_equal(st.top[0].id, st.sample.id); /* greedy */
        assert_int_equal(strlen(st.text), st.text_len);
        strncat(got, st.text, st.text_len);
        assert_true(st.last == (n == N - 1) || heed_token_is_eog(f->m, st.sample.id));
        n++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(n, N);
    assert_string_equal(heed_gen_stop(g), "length");
    assert_int_equal(heed_gen_n_output(g), N);
    assert_memory_equal(heed_gen_output(g), want, sizeof want);
    assert_string_equal(got, text);
    /* the last token was never run through the model */
    assert_int_equal(heed_ctx_n_past(c), f->n_prompt + N - 1);
    assert_int_equal(heed_gen_next(g, &st), 0); /* over stays over */
    heed_run *run;
    assert_int_equal(heed_gen_finish(g, &run), HEED_ERR_INVALID_ARG); /* not recording */
    heed_gen_free(g);
    heed_ctx_free(c);
}

/* n_predict 0: the prompt is run, nothing chosen. */
static void test_nothing_to_generate(void **state) {
    fixture *f = *state;
    heed_ctx *c = new_ctx(f, 0);
    heed_gen_params gp = heed_gen_default_params();
    gp.n_predict = 0;
    gp.record = true;
    heed_gen *g;
    assert_int_equal(heed_gen_start(f->m, c, &gp, f->prompt, f->n_prompt, &g), HEED_OK);
    heed_gen_step st;
    assert_int_equal(heed_gen_next(g, &st), 0);
    assert_string_equal(heed_gen_stop(g), "length");
    heed_run *run;
    assert_int_equal(heed_gen_finish(g, &run), HEED_OK);
    heed_run_info ri;
    heed_run_get_info(run, &ri);
    assert_int_equal(ri.n_output, 0);
    assert_int_equal(ri.n_prompt, f->n_prompt);
    heed_run_free(run);
    heed_gen_free(g);
    heed_ctx_free(c);
}

/* A forced prefix is taken as given (with the model's own probabilities);
 * forcing an end-of-generation token stops there; cancel stops between
 * steps; the recording holds exactly what was chosen. */
static void test_forced_eog_cancel_record(void **state) {
    fixture *f = *state;
    heed_ctx *c = new_ctx(f, 0);
    int32_t forced[3] = {403, 300, f->mi.eos};
    assert_true(f->mi.eos >= 0 && f->mi.n_vocab > 403);
    heed_gen_params gp = heed_gen_default_params();
    gp.n_predict = 10;
    gp.forced = forced;
    gp.n_forced = 3;
    gp.record = true;
    heed_gen *g;
    assert_int_equal(heed_gen_start(f->m, c, &gp, f->prompt, f->n_prompt, &g), HEED_OK);
    heed_gen_step st;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(heed_gen_next(g, &st), 1);
        assert_int_equal(st.sample.id, forced[i]);
        assert_true(st.sample.prob >= 0 && st.sample.prob <= 1);
        assert_true(heed_gen_recorder(g) != NULL);
    }
    assert_true(st.last);
    assert_string_equal(heed_gen_stop(g), "eog");
    assert_int_equal(heed_gen_next(g, &st), 0);
    heed_run *run;
    assert_int_equal(heed_gen_finish(g, &run), HEED_OK);
    heed_run_info ri;
    heed_run_get_info(run, &ri);
    assert_int_equal(ri.n_output, 3);
    assert_true(ri.eog);
    heed_run_free(run);
    heed_gen_free(g);

    /* cancel after two steps */
    gp.forced = NULL;
    gp.n_forced = 0;
    assert_int_equal(heed_gen_start(f->m, c, &gp, f->prompt, f->n_prompt, &g), HEED_OK);
    assert_int_equal(heed_gen_next(g, &st), 1);
    assert_int_equal(heed_gen_next(g, &st), 1);
    heed_gen_cancel(g);
    assert_int_equal(heed_gen_next(g, &st), 0);
    assert_string_equal(heed_gen_stop(g), "cancelled");
    assert_int_equal(heed_ctx_n_past(c), f->n_prompt + 1); /* the second token was never run */
    assert_int_equal(heed_gen_finish(g, &run), HEED_OK);
    heed_run_get_info(run, &ri);
    assert_int_equal(ri.n_output, 2);
    heed_run_free(run);
    heed_gen_free(g);
    heed_ctx_free(c);
}

/* The context's room: a prompt that does not fit is refused; n_predict is
 * cut to what fits (every output but the last goes through the model). */
static void test_context_room(void **state) {
    fixture *f = *state;
    heed_ctx *small = new_ctx(f, f->n_prompt - 1);
    heed_gen *g = NULL;
    assert_int_equal(heed_gen_start(f->m, small, NULL, f->prompt, f->n_prompt, &g), HEED_ERR_CONTEXT_FULL);
    assert_null(g);
    heed_ctx_free(small);
    heed_ctx *c = new_ctx(f, f->n_prompt + 3);
    heed_gen_params gp = heed_gen_default_params();
    gp.n_predict = 100;
    assert_int_equal(heed_gen_start(f->m, c, &gp, f->prompt, f->n_prompt, &g), HEED_OK);
    assert_int_equal(heed_gen_n_predict(g), 4);
    heed_gen_step st;
    int n = 0;
    while (heed_gen_next(g, &st) == 1) n++;
    assert_true(n <= 4);
    heed_gen_free(g);
    heed_ctx_free(c);
}

static void test_refused_arguments(void **state) {
    fixture *f = *state;
    heed_ctx *c = new_ctx(f, 0);
    heed_gen *g = NULL;
    heed_gen_params gp = heed_gen_default_params();
    assert_int_equal(heed_gen_start(f->m, c, &gp, f->prompt, 0, &g), HEED_ERR_INVALID_ARG);
    int32_t bad[2] = {1, f->mi.n_vocab};
    assert_int_equal(heed_gen_start(f->m, c, &gp, bad, 2, &g), HEED_ERR_INVALID_ARG);
    gp.n_top = HEED_GEN_MAX_TOP + 1;
    assert_int_equal(heed_gen_start(f->m, c, &gp, f->prompt, f->n_prompt, &g), HEED_ERR_INVALID_ARG);
    gp = heed_gen_default_params();
    gp.n_forced = 2; /* without the ids */
    assert_int_equal(heed_gen_start(f->m, c, &gp, f->prompt, f->n_prompt, &g), HEED_ERR_INVALID_ARG);
    gp = heed_gen_default_params();
    gp.sampler.top_p = 0; /* the sampler refuses it */
    assert_int_equal(heed_gen_start(f->m, c, &gp, f->prompt, f->n_prompt, &g), HEED_ERR_INVALID_ARG);
    assert_null(g);
    assert_int_equal(heed_gen_next(NULL, NULL), HEED_ERR_INVALID_ARG);
    heed_gen_free(NULL);
    heed_ctx_free(c);
}

/* Greedy logits of n steps (n x n_vocab into out) with an intervention. */
static void greedy_logits(heed_model *m, const int32_t *prompt, int n_prompt, const float *scale, int n, float *out) {
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    heed_ctx *c;
    assert_int_equal(heed_ctx_new(m, NULL, &c), HEED_OK);
    heed_gen_params gp = heed_gen_default_params();
    gp.sampler.temperature = 0;
    gp.n_predict = n;
    gp.head_scale = scale;
    heed_gen *g;
    assert_int_equal(heed_gen_start(m, c, &gp, prompt, n_prompt, &g), HEED_OK);
    heed_gen_step st;
    for (int t = 0; t < n; t++) {
        memcpy(out + (size_t)t * mi.n_vocab, heed_ctx_logits(c), sizeof(float) * (size_t)mi.n_vocab);
        assert_int_equal(heed_gen_next(g, &st), 1);
    }
    heed_gen_free(g);
    heed_ctx_free(c);
}

/* Head ablation and scaling: a factor of 1 changes nothing, bit for bit;
 * ablating a head equals the model whose output projection has that
 * head's columns zeroed (an independent route to the same forward pass);
 * the context is left as it was; bad factors and a recording are refused. */
static void test_head_interventions(void **state) {
    fixture *f = *state;
    enum { N = 6, L = 2, H = 5 };
    const int V = f->mi.n_vocab, NH = f->mi.n_head;
    size_t ns = (size_t)f->mi.n_layer * NH;
    float *ones = malloc(sizeof(float) * ns), *abl = malloc(sizeof(float) * ns);
    for (size_t i = 0; i < ns; i++) ones[i] = abl[i] = 1.0f;
    abl[L * NH + H] = 0.0f;
    float *base = malloc(sizeof(float) * N * V), *one = malloc(sizeof(float) * N * V),
          *cut = malloc(sizeof(float) * N * V), *ref = malloc(sizeof(float) * N * V);
    greedy_logits(f->m, f->prompt, f->n_prompt, NULL, N, base);
    greedy_logits(f->m, f->prompt, f->n_prompt, ones, N, one);
    assert_memory_equal(base, one, sizeof(float) * N * V);
    greedy_logits(f->m, f->prompt, f->n_prompt, abl, N, cut);
    assert_memory_not_equal(base, cut, sizeof(float) * V);

    /* the reference: the bundled model's file with W_O's columns of head H
     * in layer L zeroed (F32: row o of W_O reads the heads' outputs in turn) */
    int rc;
    char err[256], name[64];
    gguf_file *gf = gguf_open("models/stories260K.gguf", &rc, err, sizeof err);
    assert_non_null(gf);
    snprintf(name, sizeof name, "blk.%d.attn_output.weight", L);
    const gguf_tensor *t = gguf_find_tensor(gf, name);
    assert_non_null(t);
    assert_int_equal(t->type, GGML_F32);
    uint64_t off = t->offset;
    int64_t n_in = t->ne[0], n_out = t->ne[1];
    gguf_close(gf);
    FILE *in = fopen("models/stories260K.gguf", "rb");
    assert_non_null(in);
    fseek(in, 0, SEEK_END);
    long size = ftell(in);
    fseek(in, 0, SEEK_SET);
    unsigned char *bytes = malloc((size_t)size);
    assert_int_equal(fread(bytes, 1, (size_t)size, in), (size_t)size);
    fclose(in);
    float *w = (float *)(bytes + off);
    int hd = f->mi.head_dim;
    for (int64_t o = 0; o < n_out; o++)
        for (int d = 0; d < hd; d++) w[o * n_in + H * hd + d] = 0.0f;
    assert_int_equal(system("mkdir -p test-output"), 0);
    FILE *out = fopen("test-output/ablated.gguf", "wb");
    assert_non_null(out);
    assert_int_equal(fwrite(bytes, 1, (size_t)size, out), (size_t)size);
    fclose(out);
    free(bytes);
    heed_model *m2;
    assert_int_equal(heed_model_load("test-output/ablated.gguf", NULL, &m2, err, sizeof err), HEED_OK);
    greedy_logits(m2, f->prompt, f->n_prompt, NULL, N, ref);
    double worst = 0;
    for (size_t i = 0; i < (size_t)N * V; i++) {
        double d = fabs((double)cut[i] - ref[i]);
        if (d > worst) worst = d;
    }
    printf("ablating head %d:%d against the zeroed weights: largest logit difference %.3g over %d steps\n", L, H,
           worst, N);
    assert_true(worst <= 1e-5);
    heed_model_free(m2);

    /* a recording keeps what was done, through a save and a load */
    heed_ctx *rc_ctx;
    assert_int_equal(heed_ctx_new(f->m, NULL, &rc_ctx), HEED_OK);
    heed_gen_params rg = heed_gen_default_params();
    rg.n_predict = 3;
    rg.head_scale = abl;
    rg.record = true;
    heed_gen *rgen;
    assert_int_equal(heed_gen_start(f->m, rc_ctx, &rg, f->prompt, f->n_prompt, &rgen), HEED_OK);
    heed_gen_step rst;
    while (heed_gen_next(rgen, &rst) == 1) {
    }
    heed_run *run = NULL, *back = NULL;
    assert_int_equal(heed_gen_finish(rgen, &run), HEED_OK);
    heed_gen_free(rgen);
    heed_ctx_free(rc_ctx);
    heed_run_info ri;
    heed_run_get_info(run, &ri);
    assert_true(ri.intervened);
    assert_memory_equal(heed_run_head_scale(run), abl, sizeof(float) * ns);
    assert_int_equal(heed_run_save(run, "test-output/intervened.run", err, sizeof err), HEED_OK);
    assert_int_equal(heed_run_load("test-output/intervened.run", &back, err, sizeof err), HEED_OK);
    assert_memory_equal(heed_run_head_scale(back), abl, sizeof(float) * ns);
    heed_run_free(back);
    heed_run_free(run);

    /* refused: a factor that is not finite */
    heed_ctx *c;
    assert_int_equal(heed_ctx_new(f->m, NULL, &c), HEED_OK);
    abl[0] = NAN;
    assert_int_equal(heed_ctx_set_head_scale(c, abl), HEED_ERR_INVALID_ARG);
    abl[0] = 1.0f;
    heed_gen_params gp = heed_gen_default_params();
    gp.head_scale = abl;
    heed_gen *g = NULL;
    /* a session's intervention ends with it: the context decodes as before */
    gp.n_predict = 1;
    assert_int_equal(heed_gen_start(f->m, c, &gp, f->prompt, f->n_prompt, &g), HEED_OK);
    heed_gen_free(g);
    heed_ctx_reset(c);
    assert_int_equal(heed_decode(c, f->prompt, f->n_prompt), HEED_OK);
    assert_memory_equal(heed_ctx_logits(c), base, sizeof(float) * V);
    heed_ctx_free(c);
    free(ones);
    free(abl);
    free(base);
    free(one);
    free(cut);
    free(ref);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_tokens_as_the_loop), cmocka_unit_test(test_nothing_to_generate),
        cmocka_unit_test(test_forced_eog_cancel_record), cmocka_unit_test(test_context_room),
        cmocka_unit_test(test_refused_arguments), cmocka_unit_test(test_head_interventions),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
