/*
 * runutil.h - helpers of the suites that need a recorded run without the
 * recorder being what they test (run streams and limits, the run store): a
 * short greedy run on the bundled model, a run's file bytes in memory, a
 * file's bytes.
 */
#ifndef HEED_TEST_RUNUTIL_H
#define HEED_TEST_RUNUTIL_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "heed.h"
#include "testutil.h"

/* n_gen greedy tokens after prompt on the model at model_path (NULL: the
 * bundled one), in a context of n_ctx (0: the default), recorded with rp
 * (NULL: the recorder's defaults); the prompt gets BOS as the model says.
 * key_chunk > 0 splits every decode row across keys of that many. */
static inline heed_run *ru_record_model_split(const char *model_path, const char *prompt, int n_gen,
                                              const heed_recorder_params *rp_in, int n_ctx, int key_chunk) {
    heed_model *m;
    char err[256];
    if (heed_model_load(model_path, NULL, &m, err, sizeof err)) fail_msg("%s", err);
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    heed_ctx *ctx;
    heed_ctx_params cp = heed_ctx_default_params();
    cp.n_ctx = n_ctx;
    assert_int_equal(heed_ctx_new(m, &cp, &ctx), HEED_OK);
    if (key_chunk) assert_int_equal(forward_set_key_chunk(ctx, key_chunk), HEED_OK);
    heed_recorder_params rp = rp_in ? *rp_in : heed_recorder_default_params();
    rp.sampler.temperature = 0;
    rp.prompt_text = prompt;
    rp.n_predict = n_gen;
    heed_recorder *rec;
    assert_int_equal(heed_recorder_new(m, ctx, &rp, &rec), HEED_OK);
    heed_sampler *s = heed_sampler_new(&rp.sampler, mi.n_vocab);
    int32_t ids[128];
    int n = heed_tokenize(m, prompt, (int)strlen(prompt), mi.add_bos, ids, 128);
    assert_true(n > 0 && n < 128);
    assert_int_equal(heed_recorder_begin(rec, ids, n), HEED_OK);
    assert_int_equal(heed_decode(ctx, ids, n), HEED_OK);
    for (int t = 0; t < n_gen; t++) {
        heed_sample smp;
        assert_int_equal(heed_sampler_sample(s, heed_ctx_logits(ctx), mi.n_vocab, &smp), HEED_OK);
        assert_int_equal(heed_recorder_step(rec, &smp, heed_ctx_logits(ctx)), HEED_OK);
        if (t + 1 < n_gen) assert_int_equal(heed_decode(ctx, &smp.id, 1), HEED_OK);
    }
    heed_run *run;
    assert_int_equal(heed_recorder_finish(rec, &run), HEED_OK);
    heed_recorder_free(rec);
    heed_sampler_free(s);
    heed_ctx_free(ctx);
    heed_model_free(m);
    return run;
}

static inline heed_run *ru_record_model(const char *model_path, const char *prompt, int n_gen,
                                        const heed_recorder_params *rp_in, int n_ctx) {
    return ru_record_model_split(model_path, prompt, n_gen, rp_in, n_ctx, 0);
}

/* n_gen greedy tokens after prompt on the bundled model, recorded with rp
 * (NULL: the recorder's defaults). */
static inline heed_run *ru_record(const char *prompt, int n_gen, const heed_recorder_params *rp_in) {
    return ru_record_model(NULL, prompt, n_gen, rp_in, 0);
}

/* A whole file's bytes (malloc'd, one spare byte); *n its size. */
static inline unsigned char *ru_slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n + 1);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

/* The run file's bytes, written by heed_run_write to memory (malloc'd). */
static inline char *ru_run_bytes(const heed_run *r, size_t *n) {
    char *b = NULL, err[256];
    FILE *f = open_memstream(&b, n);
    assert_non_null(f);
    if (heed_run_write(r, f, "mem", err, sizeof err) != HEED_OK) fail_msg("heed_run_write: %s", err);
    assert_int_equal(fclose(f), 0);
    return b;
}

#endif
