/*
 * gen.c - the generation session (contract in heed.h, "generation
 * session"): the one loop every front end generates through. It owns the
 * sampler, the recorder (when asked), the text's UTF-8 stream, the stop rule
 * and the forced prefix of a branch; the caller owns the model and the
 * context.
 *
 * A chosen token is decoded at the start of the next step, not at once: a
 * generation that stops (its last token, an end-of-generation token, a
 * cancel between steps) never runs a token it will not use, and the
 * recorder, which must see a step before the next decode, always does.
 * Built on heed.h alone.
 */
#include <stdlib.h>
#include <string.h>

#include "heed.h"

#define GEN_TEXT_MAX 512 /* bytes of one token's text taken; longer pieces are cut */

struct heed_gen {
    const heed_model *m;
    heed_ctx *ctx;
    heed_gen_params p;
    int n_vocab;
    int32_t *forced;     /* (n_forced) copied */
    heed_sampler *smp;
    heed_recorder *rec;  /* NULL without record */
    float *head_values;  /* mean ablation's means (n_layer, n_head, head_dim), or NULL */
    heed_resid_edit *edits; /* the residual edits with the patches' rows (patch_vecs), or NULL */
    float *patch_vecs;
    int32_t *out;        /* (n_predict + 1) */
    int n_out, n_predict;
    bool pending;        /* out[n_out - 1] is chosen but not decoded yet */
    const char *stop;    /* NULL while running */
    heed_utf8_stream us;
    char text[3 * GEN_TEXT_MAX + 8]; /* the current step's complete characters */
    heed_candidate top[HEED_GEN_MAX_TOP];
    /* KV reuse: the forced steps taken from params.reuse, replayed as they were recorded */
    int n_replay, n_reused;
    heed_run_step *replay;     /* (n_replay) */
    heed_candidate *replay_top; /* (n_replay, n_top) */
};

heed_gen_params heed_gen_default_params(void) {
    heed_gen_params p = {
        .sampler = heed_sampler_default_params(), .n_predict = 64, .record = false,
        .rec = heed_recorder_default_params(), .prompt_text = NULL, .forced = NULL, .n_forced = 0, .n_top = 5,
        .head_scale = NULL, .knockouts = NULL, .n_knockouts = 0, .ablate_mean = NULL, .resid_edits = NULL,
        .n_resid_edits = 0, .patches = NULL, .n_patches = 0, .intervene_from = 0, .reuse = NULL,
    };
    return p;
}

void heed_gen_free(heed_gen *g) {
    if (!g) return;
    if (g->p.head_scale) heed_ctx_set_head_scale(g->ctx, NULL); /* the intervention was the session's */
    if (g->p.n_knockouts) heed_ctx_set_knockouts(g->ctx, NULL, 0);
    if (g->p.ablate_mean) heed_ctx_set_head_values(g->ctx, NULL, NULL);
    if (g->p.n_resid_edits) heed_ctx_set_resid_edits(g->ctx, NULL, 0);
    free(g->head_values);
    free(g->edits);
    free(g->patch_vecs);
    heed_recorder_free(g->rec); /* also gives the context its hook back when not finished */
    heed_sampler_free(g->smp);
    free(g->forced);
    free(g->out);
    free(g->replay);
    free(g->replay_top);
    free(g);
}

/* Every intervention off the context: a session starts from a clean one. */
static void clear_interventions(heed_ctx *ctx) {
    heed_ctx_set_intervention_start(ctx, 0);
    heed_ctx_set_head_scale(ctx, NULL);
    heed_ctx_set_knockouts(ctx, NULL, 0);
    heed_ctx_set_head_values(ctx, NULL, NULL);
    heed_ctx_set_resid_edits(ctx, NULL, 0);
}

/* A first pass before the session (mean ablation's means, a patch's row):
 * ids[0..n_batch) in one call, then one at a time up to n_total, observed
 * by hook, the context left empty and hookless. */
static int clean_pass(heed_ctx *ctx, const heed_attn_hook *hook, const int32_t *ids, int n_batch, int n_total) {
    heed_ctx_set_attn_hook(ctx, hook);
    heed_ctx_reset(ctx);
    int rc = heed_decode(ctx, ids, n_batch);
    for (int k = n_batch; !rc && k < n_total; k++) rc = heed_decode(ctx, ids + k, 1);
    heed_ctx_set_attn_hook(ctx, NULL);
    heed_ctx_reset(ctx);
    return rc;
}

/* The sums of the marked heads' outputs over a pass's positions. */
typedef struct mean_acc {
    const unsigned char *which;
    double *sum; /* (n_layer, n_head, head_dim) */
} mean_acc;

static void mean_observe(void *user, const heed_head_block *b) {
    mean_acc *a = user;
    for (int h = 0; h < b->n_head; h++) {
        size_t at = (size_t)b->layer * b->n_head + h;
        if (!a->which[at]) continue;
        for (int i = 0; i < b->n_query; i++)
            for (int d = 0; d < b->head_dim; d++)
                a->sum[at * b->head_dim + d] += b->out[((size_t)i * b->n_head + h) * b->head_dim + d];
    }
}

typedef struct patch_grab {
    int layer, pos;
    float *row; /* (n_embd) */
    bool got;
} patch_grab;

static void patch_observe(void *user, const heed_resid_block *b) {
    patch_grab *pg = user;
    if (b->layer != pg->layer || pg->pos < b->pos0 || pg->pos >= b->pos0 + b->n_query) return;
    memcpy(pg->row, b->x + (size_t)(pg->pos - b->pos0) * b->n_embd, sizeof(float) * (size_t)b->n_embd);
    pg->got = true;
}

/* Activation patching: each patch's row, from a clean pass over its source
 * prefix, as residual edits (replace) after the caller's own n_user edits:
 * *edits (n_user + n_patches) and *vecs own the copies. */
static int patch_rows(const heed_model_info *mi, heed_ctx *ctx, const heed_gen_params *p, int n_prompt,
                      heed_resid_edit **edits, float **vecs) {
    int n = p->n_resid_edits + p->n_patches;
    *edits = malloc(sizeof **edits * (size_t)n);
    *vecs = malloc(sizeof(float) * (size_t)(p->n_patches ? p->n_patches : 1) * mi->n_embd);
    if (!*edits || !*vecs) return HEED_ERR_NOMEM;
    if (p->n_resid_edits) memcpy(*edits, p->resid_edits, sizeof **edits * (size_t)p->n_resid_edits);
    int rc = HEED_OK;
    for (int i = 0; i < p->n_patches && !rc; i++) {
        const heed_gen_patch *pt = &p->patches[i];
        if (pt->layer < 0 || pt->layer >= mi->n_layer || pt->pos < 0 || !pt->src || pt->n_src <= pt->pos ||
            pt->pos >= heed_ctx_n_ctx(ctx))
            return HEED_ERR_INVALID_ARG;
        /* the source batched as this run will be: its first n_prompt tokens
         * in one call, then one at a time up to pos; a run patched with its
         * own rows then gets them bit for bit (another batching would
         * differ by rounding) */
        int first = pt->n_src < n_prompt ? pt->n_src : n_prompt;
        for (int k = 0; k < pt->n_src; k++)
            if (pt->src[k] < 0 || pt->src[k] >= mi->n_vocab) return HEED_ERR_INVALID_ARG;
        patch_grab pg = {pt->layer, pt->pos, *vecs + (size_t)i * mi->n_embd, false};
        heed_attn_hook hook = {.observe_resid = patch_observe, .user = &pg};
        rc = clean_pass(ctx, &hook, pt->src, first, pt->pos + 1 > first ? pt->pos + 1 : first);
        if (!rc && !pg.got) rc = HEED_ERR_INVALID_ARG;
        (*edits)[p->n_resid_edits + i] = (heed_resid_edit){pt->layer, pt->pos, true, 1.0f, pg.row};
    }
    return rc;
}

/* Mean ablation's values: each marked head's output averaged over the
 * prompt's positions in a pass with no intervention. */
static int head_means(const heed_model_info *mi, heed_ctx *ctx, const int32_t *prompt, int n_prompt,
                      const unsigned char *which, float **out) {
    size_t nv = (size_t)mi->n_layer * mi->n_head * mi->head_dim;
    mean_acc a = {which, calloc(nv, sizeof(double))};
    *out = malloc(sizeof(float) * nv);
    int rc = a.sum && *out ? HEED_OK : HEED_ERR_NOMEM;
    if (!rc) {
        heed_attn_hook hook = {.observe_heads = mean_observe, .user = &a};
        rc = clean_pass(ctx, &hook, prompt, n_prompt, n_prompt);
    }
    for (size_t i = 0; !rc && i < nv; i++) (*out)[i] = (float)(a.sum[i] / n_prompt);
    free(a.sum);
    if (rc) {
        free(*out);
        *out = NULL;
    }
    return rc;
}

/* KV reuse: how many leading positions of p->reuse this session can take
 * (docs in heed.h, heed_gen_params.reuse): its tokens (prompt, then the
 * forced outputs) shared with the run's, before every position the
 * session intervenes on, inside what ctx holds, and always one short of
 * the tokens known (the last is decoded again for its logits). 0: none. */
static int reuse_len(const heed_model_info *mi, heed_ctx *ctx, const heed_gen_params *p, const int32_t *prompt,
                     int n_prompt) {
    const heed_run *r = p->reuse;
    if (!r || p->ablate_mean || p->n_patches) return 0;
    heed_run_info ri;
    heed_run_get_info(r, &ri);
    if (ri.intervened || ri.n_prompt != n_prompt || ri.n_vocab != mi->n_vocab || ri.n_layer != mi->n_layer ||
        (p->record && (p->rec.attn_top_k || p->rec.keep_head_mean || p->rec.full_limit_bytes || !p->rec.keep_qk)))
        return 0;
    int n = ri.n_prompt + ri.n_output, known = n_prompt + p->n_forced, lim = known - 1;
    if (n - 1 < lim) lim = n - 1;
    if (ri.n_pos < lim) lim = ri.n_pos;
    if (heed_ctx_n_past(ctx) < lim) lim = heed_ctx_n_past(ctx);
    bool every = p->head_scale != NULL;
    for (int i = 0; i < p->n_resid_edits; i++) {
        if (p->resid_edits[i].pos < 0) every = true;
        else if (p->resid_edits[i].pos < lim) lim = p->resid_edits[i].pos;
    }
    if (every && p->intervene_from < lim) lim = p->intervene_from;
    for (int i = 0; i < p->n_knockouts; i++)
        if (p->knockouts[i].q0 < lim) lim = p->knockouts[i].q0;
    int k = 0;
    for (; k < lim; k++) {
        int32_t id;
        heed_run_token(r, k, &id, NULL);
        if (id != (k < n_prompt ? prompt[k] : p->forced[k - n_prompt])) break;
    }
    return k;
}

int heed_gen_start(const heed_model *m, heed_ctx *ctx, const heed_gen_params *params, const int32_t *prompt,
                   int n_prompt, heed_gen **out) {
    if (!m || !ctx || !prompt || !out) return HEED_ERR_INVALID_ARG;
    *out = NULL;
    heed_gen_params p = params ? *params : heed_gen_default_params();
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    if (n_prompt <= 0 || p.n_predict < 0 || p.n_forced < 0 || (p.n_forced > 0 && !p.forced) || p.n_top < 0 ||
        p.n_top > HEED_GEN_MAX_TOP)
        return HEED_ERR_INVALID_ARG;
    for (int i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= mi.n_vocab) return HEED_ERR_INVALID_ARG;
    for (int i = 0; i < p.n_forced; i++)
        if (p.forced[i] < 0 || p.forced[i] >= mi.n_vocab) return HEED_ERR_INVALID_ARG;
    /* a clean context first: no earlier session's interventions */
    clear_interventions(ctx);
    float *means = NULL;
    int rc = HEED_OK;
    if (p.ablate_mean) {
        if (n_prompt > heed_ctx_n_ctx(ctx)) return HEED_ERR_CONTEXT_FULL;
        if ((rc = head_means(&mi, ctx, prompt, n_prompt, p.ablate_mean, &means))) return rc;
    }
    heed_resid_edit *edits = NULL;
    float *patch_vecs = NULL;
    if (p.n_patches < 0 || (p.n_patches && !p.patches) || p.n_resid_edits < 0 || p.intervene_from < 0 ||
        p.n_resid_edits + p.n_patches > HEED_MAX_RESID_EDITS) {
        free(means);
        return HEED_ERR_INVALID_ARG;
    }
    /* before anything touches the context: what of p.reuse's KV cache it keeps */
    int n_reuse = reuse_len(&mi, ctx, &p, prompt, n_prompt);
    if (p.n_patches && (rc = patch_rows(&mi, ctx, &p, n_prompt, &edits, &patch_vecs))) {
        free(means), free(edits), free(patch_vecs);
        return rc;
    }
    if (edits) { /* the session's edits: the caller's and the patches' */
        p.resid_edits = edits;
        p.n_resid_edits += p.n_patches;
    }
    rc = heed_ctx_set_intervention_start(ctx, p.intervene_from);
    if (!rc) rc = heed_ctx_set_head_scale(ctx, p.head_scale);
    if (!rc) rc = heed_ctx_set_knockouts(ctx, p.knockouts, p.n_knockouts);
    if (!rc && means) rc = heed_ctx_set_head_values(ctx, p.ablate_mean, means);
    if (!rc) rc = heed_ctx_set_resid_edits(ctx, p.resid_edits, p.n_resid_edits);
    if (rc) {
        clear_interventions(ctx);
        free(means), free(edits), free(patch_vecs);
        return rc;
    }
    if (n_reuse > 0) heed_ctx_rewind(ctx, n_reuse);
    else heed_ctx_reset(ctx);
    int n_ctx = heed_ctx_n_ctx(ctx);
    if (n_prompt > n_ctx) return HEED_ERR_CONTEXT_FULL;
    /* every output but the last goes through the context */
    int room = n_ctx - n_prompt + 1;
    heed_gen *g = calloc(1, sizeof *g);
    if (!g) {
        free(means), free(edits), free(patch_vecs);
        return HEED_ERR_NOMEM;
    }
    g->head_values = means;
    g->edits = edits;
    g->patch_vecs = patch_vecs;
    g->m = m;
    g->ctx = ctx;
    g->p = p;
    g->n_vocab = mi.n_vocab;
    g->n_predict = p.n_predict < room ? p.n_predict : room;
    g->out = malloc(sizeof(int32_t) * ((size_t)g->n_predict + 1));
    g->forced = p.n_forced ? malloc(sizeof(int32_t) * (size_t)p.n_forced) : NULL;
    g->smp = heed_sampler_new(&p.sampler, mi.n_vocab);
    rc = g->out && (!p.n_forced || g->forced) ? HEED_OK : HEED_ERR_NOMEM;
    if (!rc && !g->smp) rc = HEED_ERR_INVALID_ARG; /* the sampler refuses its parameters */
    if (!rc && p.n_forced) memcpy(g->forced, p.forced, sizeof(int32_t) * (size_t)p.n_forced);
    g->p.forced = g->forced;
    if (!rc && p.record) {
        heed_recorder_params rp = p.rec;
        rp.sampler = p.sampler;
        rp.n_predict = g->n_predict;
        rp.prompt_text = p.prompt_text;
        rp.head_scale = p.head_scale;
        rp.knockouts = p.knockouts;
        rp.n_knockouts = p.n_knockouts;
        rp.head_which = p.ablate_mean;
        rp.head_values = means;
        rp.resid_edits = p.resid_edits;
        rp.n_resid_edits = p.n_resid_edits;
        rp.intervene_from = p.intervene_from;
        rc = heed_recorder_new(m, ctx, &rp, &g->rec);
    }
    /* with reuse, the forced steps whose queries lie in the prefix are the run's, replayed */
    int n_steps = n_reuse >= n_prompt - 1 ? n_reuse - n_prompt + 1 : 0;
    if (!rc && n_reuse > 0 && n_steps > g->n_predict) rc = HEED_ERR_INVALID_ARG;
    if (!rc && g->rec)
        rc = n_reuse > 0 ? heed_recorder_begin_from(g->rec, prompt, n_prompt, p.reuse, n_reuse, n_steps)
                         : heed_recorder_begin(g->rec, prompt, n_prompt);
    if (!rc && n_steps) {
        int nt = p.n_top;
        g->replay = malloc(sizeof *g->replay * (size_t)n_steps);
        g->replay_top = malloc(sizeof *g->replay_top * (size_t)n_steps * (size_t)(nt ? nt : 1));
        if (!g->replay || !g->replay_top) rc = HEED_ERR_NOMEM;
        for (int t = 0; !rc && t < n_steps; t++) {
            rc = heed_run_get_step(p.reuse, t, &g->replay[t]);
            int k = g->replay[t].n_cand < nt ? g->replay[t].n_cand : nt;
            if (!rc) memcpy(g->replay_top + (size_t)t * nt, g->replay[t].cand, sizeof *g->replay_top * (size_t)k);
            g->replay[t].cand = NULL; /* the run's: not kept past the start */
            g->replay[t].n_cand = k;
        }
        g->n_replay = n_steps;
    }
    if (!rc) {
        g->n_reused = n_reuse;
        heed_sampler_accept(g->smp, prompt, n_prompt);
        if (n_reuse < n_prompt) rc = heed_decode(ctx, prompt + n_reuse, n_prompt - n_reuse);
    }
    if (rc) {
        heed_gen_free(g);
        return rc;
    }
    *out = g;
    return HEED_OK;
}

static int step_out(heed_gen *g, heed_gen_step *st, const heed_sample *sp, const heed_candidate *top, int n_top);

int heed_gen_next(heed_gen *g, heed_gen_step *st) {
    if (!g || !st) return HEED_ERR_INVALID_ARG;
    memset(st, 0, sizeof *st);
    if (g->stop) return 0;
    if (g->n_out >= g->n_predict) {
        g->stop = "length";
        return 0;
    }
    if (g->n_out < g->n_replay) { /* a step taken from params.reuse, as it was recorded */
        const heed_run_step *rs = &g->replay[g->n_out];
        heed_sample s = {.id = rs->id, .prob = rs->prob, .logprob = rs->logprob, .entropy = rs->entropy};
        heed_sampler_accept(g->smp, &s.id, 1);
        g->out[g->n_out++] = s.id;
        g->pending = g->n_out == g->n_replay; /* the last one's position is decoded again */
        return step_out(g, st, &s, g->replay_top + (size_t)(g->n_out - 1) * g->p.n_top, rs->n_cand);
    }
    if (g->pending) {
        int rc = heed_decode(g->ctx, &g->out[g->n_out - 1], 1);
        if (rc) return rc;
        g->pending = false;
    }
    const float *logits = heed_ctx_logits(g->ctx);
    heed_sample s;
    int rc = g->n_out < g->p.n_forced ? heed_sampler_force(g->smp, logits, g->n_vocab, g->forced[g->n_out], &s)
                                      : heed_sampler_sample(g->smp, logits, g->n_vocab, &s);
    if (!rc && g->rec) rc = heed_recorder_step(g->rec, &s, logits);
    if (rc) return rc;
    g->out[g->n_out++] = s.id;
    g->pending = true;
    int n_top = heed_sample_candidates(&s, logits, g->n_vocab, g->p.n_top, g->top);
    return step_out(g, st, &s, g->top, n_top);
}

/* The rest of a step: its text, the stop rule, and *st. */
static int step_out(heed_gen *g, heed_gen_step *st, const heed_sample *sp, const heed_candidate *top, int n_top) {
    heed_sample s = *sp;

    char bytes[GEN_TEXT_MAX];
    int nb = heed_token_bytes(g->m, s.id, bytes, sizeof bytes);
    size_t nd = nb > 0 ? heed_utf8_stream_push(&g->us, bytes, nb < GEN_TEXT_MAX ? (size_t)nb : GEN_TEXT_MAX - 1, g->text)
                       : 0;
    bool eog = heed_token_is_eog(g->m, s.id), last = eog || g->n_out == g->n_predict;
    if (last) {
        nd += heed_utf8_stream_flush(&g->us, g->text + nd);
        g->stop = eog ? "eog" : "length";
    }
    g->text[nd] = 0;
    st->index = g->n_out - 1;
    st->sample = s;
    st->n_top = n_top;
    st->top = top;
    st->text = g->text;
    st->text_len = nd;
    st->last = last;
    return 1;
}

void heed_gen_cancel(heed_gen *g) {
    if (g && !g->stop) g->stop = "cancelled";
}

const char *heed_gen_stop(const heed_gen *g) { return g ? g->stop : NULL; }

int heed_gen_n_output(const heed_gen *g) { return g ? g->n_out : 0; }

const int32_t *heed_gen_output(const heed_gen *g) { return g ? g->out : NULL; }

int heed_gen_n_predict(const heed_gen *g) { return g ? g->n_predict : 0; }

int heed_gen_reused(const heed_gen *g) { return g ? g->n_reused : 0; }

heed_recorder *heed_gen_recorder(heed_gen *g) { return g ? g->rec : NULL; }

int heed_gen_finish(heed_gen *g, heed_run **run) {
    if (!g || !run) return HEED_ERR_INVALID_ARG;
    *run = NULL;
    if (!g->rec) return HEED_ERR_INVALID_ARG;
    if (!g->stop) g->stop = "cancelled"; /* finished before it was over */
    if (g->n_reused > 0) { /* the prefix's queries, from the run it continues */
        int rc = heed_recorder_complete_from(g->rec, g->p.reuse);
        if (rc) return rc;
    }
    return heed_recorder_finish(g->rec, run);
}
