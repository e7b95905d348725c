/*
 * run_topk.c - a run from another engine's per-step top-k attention
 * (heed_run_from_topk; `heed serve --upstream`).
 *
 * Such an engine reports, per output token, the positions its query
 * attended to most, averaged over all its layers and heads. The run keeps
 * exactly that: a store of one layer and one head with the top-k tier only
 * (astore.h: tk_pos / tk_w), rows at the query positions that chose the
 * outputs (n_prompt - 1 + t) and pads (ASTORE_TK_NONE) everywhere else, so
 * the run file needs nothing new (its TOPK section). Views that need rows
 * read sparse rows of it (attn.c: topk_row); the ones that need q/k, the
 * lens or candidates say they are unsupported.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "astore.h"
#include "heed.h"
#include "kern.h"
#include "limit.h"
#include "run.h"

static int check(const heed_run_topk_params *p) {
    if (!p || !p->model || !p->ids || p->n_prompt < 1 || p->n_output < 0 || p->n_vocab < 1 ||
        p->n_vocab > LIMIT_MAX_VOCAB || p->top_k < 1 || p->top_k > ASTORE_TOPK_MAX ||
        (p->n_output > 0 && (!p->top_pos || !p->top_w)) || p->n_prompt > LIMIT_MAX_TOKENS ||
        p->n_output > LIMIT_MAX_TOKENS - p->n_prompt)
        return HEED_ERR_INVALID_ARG;
    for (int i = 0; i < p->n_prompt + p->n_output; i++)
        if (p->ids[i] < 0 || p->ids[i] >= p->n_vocab) return HEED_ERR_INVALID_ARG;
    return HEED_OK;
}

static char *label_of(const heed_run_topk_params *p, int i) {
    if (p->labels && p->labels[i]) return strdup(p->labels[i]);
    char buf[16];
    snprintf(buf, sizeof buf, "%d", (int)p->ids[i]);
    return strdup(buf);
}

int heed_run_from_topk(const heed_run_topk_params *p, heed_run **out) {
    if (!out) return HEED_ERR_INVALID_ARG;
    *out = NULL;
    int rc = check(p);
    if (rc) return rc;
    const int T = p->n_prompt + p->n_output, K = p->top_k, n_pos = T - 1;
    heed_run *r = calloc(1, sizeof *r);
    if (!r) return HEED_ERR_NOMEM;
    r->model_file = strdup(p->model);
    r->model_arch = strdup("upstream");
    r->model_name = strdup(p->source ? p->source : "");
    r->prompt_text = strdup(p->prompt_text ? p->prompt_text : "");
    r->n_layer = r->n_head = r->n_head_kv = r->head_dim = r->n_embd = 1;
    r->n_vocab = p->n_vocab, r->bos = r->eos = r->eot = -1;
    r->sampler = heed_sampler_default_params();
    r->n_prompt = p->n_prompt, r->n_output = p->n_output, r->n_predict = p->n_output, r->n_ctx = T;
    r->cap_tok = T;
    r->eog = p->eog;
    r->ids = malloc(sizeof(int32_t) * (size_t)T);
    r->labels = calloc((size_t)T, sizeof(char *));
    r->steps = malloc(sizeof(run_step) * ((size_t)p->n_output + 1));
    r->cand = malloc(sizeof(heed_candidate));
    if (!r->model_file || !r->model_arch || !r->model_name || !r->prompt_text || !r->ids || !r->labels || !r->steps ||
        !r->cand)
        rc = HEED_ERR_NOMEM;
    for (int i = 0; !rc && i < T; i++) {
        r->ids[i] = p->ids[i];
        if (!(r->labels[i] = label_of(p, i))) rc = HEED_ERR_NOMEM;
    }
    for (int t = 0; !rc && t < p->n_output; t++)
        r->steps[t] = (run_step){p->ids[p->n_prompt + t], p->prob ? p->prob[t] : NAN,
                                 p->logprob ? p->logprob[t] : NAN, NAN};
    astore_params ap = {K, false, false, 0, NULL, 0};
    if (!rc) rc = astore_init(&r->st, 1, 1, 1, 1, &ap);
    if (!rc && n_pos > 0) rc = astore_plan(&r->st, n_pos);
    if (!rc && n_pos > 0) {
        size_t n = (size_t)n_pos * K;
        for (size_t i = 0; i < n; i++) r->st.tk_pos[i] = ASTORE_TK_NONE, r->st.tk_w[i] = 0;
        for (int t = 0; t < p->n_output; t++) {
            int q = p->n_prompt - 1 + t, m = 0;
            uint32_t *pos = r->st.tk_pos + (size_t)q * K;
            uint16_t *w = r->st.tk_w + (size_t)q * K;
            for (int e = 0; e < K; e++) {
                int32_t kp = p->top_pos[(size_t)t * K + e];
                float kw = p->top_w[(size_t)t * K + e];
                if (kp < 0 || kp > q || !isfinite(kw)) continue; /* a pad, or a key the query cannot see */
                pos[m] = (uint32_t)kp;
                w[m++] = astore_f16(kw);
            }
        }
        r->st.n_pos = n_pos;
    }
    if (rc) {
        heed_run_free(r);
        return rc;
    }
    *out = r;
    return HEED_OK;
}
