/*
 * rec.c - the recorder: the attention hook's user, and the per-step
 * bookkeeping that makes a heed_run (run.h) while a generation runs.
 *
 * observe_qk and observe feed the run's astore (the exact tier, and the
 * summaries and full rows when asked for), observe_resid keeps the last
 * position's residual after every layer. heed_recorder_step records the
 * choice and its candidates, and keeps the step's residuals for a lens
 * computed on request (run.c); lens_eager computes it here instead, after
 * the decode (heed_ctx_unembed uses the context's scratch, so it cannot run
 * inside heed_decode). While recording, the summaries and the live views
 * run on the context's own thread pool, idle between decodes.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "astore.h"
#include "forward.h"
#include "kern.h"
#include "model.h"
#include "run.h"

#define LABEL_MAX 256 /* bytes of a token's display label */

struct heed_recorder {
    heed_run *run;
    const heed_model *m;
    heed_ctx *ctx;
    float *resid;        /* (n_layer, n_embd) last position's residual after each layer */
    run_lens_scratch lens; /* the eager lens's scratch (lens_eager only) */
    /* live_mean_row: the newest query's row summed over layers and heads as
     * the forward pass hands its rows to the hook, in the order
     * heed_run_attn_row adds them (double) */
    double *live;        /* (n_ctx + 1) */
    int q_pending;       /* heed_recorder_begin_from: q rows of the prefix still to copy */
    float *vn_buf;       /* (n_layer, VN_BATCH, kv_dim) values of decoded positions whose norms wait */
    int vn_pos0, vn_wait; /* their first position and count */
    const float **gram;  /* (n_layer) the output projection's Gram matrices (model_wo_gram), for the
                          * value norms; NULL: not kept */
    int live_pos, live_n; /* the query position summed, and how many (layer, head) rows so far */
    bool begun, done;
};

static char *rec_strdup(const char *s) {
    size_t n = strlen(s ? s : "");
    char *d = malloc(n + 1);
    if (d) memcpy(d, s ? s : "", n + 1);
    return d;
}

/* Room for n tokens in every per-token array. */
static int rec_reserve_tokens(heed_run *r, int n) {
    if (n <= r->cap_tok) return HEED_OK;
    size_t cap = (size_t)(r->cap_tok * 2 > n ? r->cap_tok * 2 : n), L = (size_t)r->n_layer;
    void *p;
#define GROW(field, per)                                              \
    if (!(p = realloc(r->field, sizeof *r->field * cap * (per) + 1))) \
        return HEED_ERR_NOMEM;                                        \
    r->field = p;
    GROW(ids, 1) GROW(labels, 1) GROW(steps, 1) GROW(cand, (size_t)r->n_cand)
    GROW(lens_id, L * r->lens_k) GROW(lens_p, L * r->lens_k) GROW(lens_ready, 1)
    if (r->lens_lazy && r->lens_k > 0) {
        GROW(resid, L * (size_t)r->n_embd)
    }
#undef GROW
    r->cap_tok = (int)cap;
    return HEED_OK;
}

static int rec_add_token(heed_run *r, const heed_model *m, int32_t id) {
    int i = r->n_prompt + r->n_output, rc = rec_reserve_tokens(r, i + 1);
    if (rc) return rc;
    char buf[LABEL_MAX];
    heed_token_label(m, id, buf, sizeof buf);
    r->labels[i] = rec_strdup(buf);
    if (!r->labels[i]) return HEED_ERR_NOMEM;
    r->ids[i] = id;
    return HEED_OK;
}

/* The run's identity, geometry and parameters from the model, and its store. */
static int rec_run_init(heed_run *r, const heed_model *m, const heed_recorder_params *p, int n_ctx) {
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    const char *base = mi.path ? strrchr(mi.path, '/') : NULL;
    r->model_file = rec_strdup(base ? base + 1 : mi.path);
    r->model_arch = rec_strdup(mi.arch);
    r->model_name = rec_strdup(mi.name);
    r->prompt_text = rec_strdup(p->prompt_text);
    if (!r->model_file || !r->model_arch || !r->model_name || !r->prompt_text) return HEED_ERR_NOMEM;
    r->model_size = mi.file_size;
    r->meta_hash = run_meta_hash(m);
    r->n_layer = mi.n_layer; r->n_head = mi.n_head; r->n_head_kv = mi.n_head_kv;
    r->head_dim = mi.head_dim; r->n_embd = mi.n_embd; r->n_vocab = mi.n_vocab;
    r->bos = mi.bos; r->eos = mi.eos; r->eot = mi.eot;
    r->sampler = p->sampler;
    r->n_predict = p->n_predict;
    r->n_ctx = n_ctx;
    r->n_threads = p->n_threads;
    r->n_cand = p->n_cand < mi.n_vocab ? p->n_cand : mi.n_vocab;
    r->lens_k = p->lens_top_k < mi.n_vocab ? p->lens_top_k : mi.n_vocab;
    r->lens_lazy = !p->lens_eager;
    r->intervene_from = p->intervene_from > 0 ? p->intervene_from : 0;
    if (p->head_scale) { /* for the record: what was done to the model */
        size_t n = (size_t)mi.n_layer * mi.n_head;
        if (!(r->head_scale = malloc(sizeof(float) * n))) return HEED_ERR_NOMEM;
        memcpy(r->head_scale, p->head_scale, sizeof(float) * n);
    }
    if (p->n_resid_edits > 0 && p->resid_edits) { /* patching, steering: the edits and their vectors */
        size_t n = (size_t)p->n_resid_edits, E = (size_t)mi.n_embd;
        if (!(r->edits = malloc(sizeof *r->edits * n)) || !(r->edit_vecs = malloc(sizeof(float) * n * E)))
            return HEED_ERR_NOMEM;
        for (size_t i = 0; i < n; i++) {
            r->edits[i] = p->resid_edits[i];
            memcpy(r->edit_vecs + i * E, p->resid_edits[i].vec, sizeof(float) * E);
            r->edits[i].vec = r->edit_vecs + i * E;
        }
        r->n_edits = (int)n;
    }
    if (p->head_which && p->head_values) { /* mean ablation: which heads, and their values */
        size_t n = (size_t)mi.n_layer * mi.n_head;
        if (!(r->head_which = malloc(n)) || !(r->head_values = malloc(sizeof(float) * n * mi.head_dim)))
            return HEED_ERR_NOMEM;
        memcpy(r->head_which, p->head_which, n);
        memcpy(r->head_values, p->head_values, sizeof(float) * n * mi.head_dim);
    }
    r->n_expert = mi.n_expert;
    r->n_expert_used = mi.n_expert_used;
    astore_params ap = {p->attn_top_k, p->keep_qk, p->keep_head_mean, p->full_limit_bytes, p->spill_dir,
                        ASTORE_SPILL_MIN};
    int rc = astore_init(&r->st, mi.n_layer, mi.n_head, mi.n_head_kv, mi.head_dim, &ap);
    r->st.has_mi = r->st.has_qk; /* the forward pass's row statistics, kept beside q and k */
    for (int l = 0; l < mi.n_layer && !rc; l++) /* rows recomputed from q and k as the model formed them */
        rc = astore_set_rule(&r->st, l, (kern_attn_rule){mi.attn_scale, mi.attn_softcap, mi.layer_window[l], NULL, 0});
    if (!rc && p->n_knockouts) rc = astore_set_knockouts(&r->st, p->knockouts, p->n_knockouts);
    return rc;
}

uint64_t heed_record_bytes(const heed_model *m, bool spilled) {
    if (!m) return 0;
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    /* q and k of every layer (the exact tier), the rows' softmax statistics
     * and the value norms (8 + 4 bytes per layer and head, never spilled),
     * the residual of every layer for the lens (per generated token: counted
     * for every position, an upper bound), the routing of a mixture of
     * experts, candidates */
    uint64_t qk = (uint64_t)mi.n_layer * (uint64_t)(mi.n_head + mi.n_head_kv) * (uint64_t)mi.head_dim * 4;
    uint64_t heads = (uint64_t)mi.n_layer * (uint64_t)mi.n_head * 12;
    uint64_t resid = (uint64_t)mi.n_layer * (uint64_t)mi.n_embd * 4;
    uint64_t moe = (uint64_t)mi.n_layer * (uint64_t)mi.n_expert_used * 8;
    return (spilled ? 0 : qk) + heads + resid + moe + 20 * 12 + 64;
}

/* -------------------------------------------------------------- recorder */

heed_recorder_params heed_recorder_default_params(void) {
    heed_recorder_params p = {
        .attn_top_k = 0, .keep_qk = true, .keep_head_mean = false, .full_limit_bytes = 0,
        .n_cand = 20, .lens_top_k = 5, .lens_eager = false, .live_mean_row = false, .head_scale = NULL,
        .n_threads = 0, .spill_dir = NULL, .knockouts = NULL, .n_knockouts = 0, .head_which = NULL,
        .head_values = NULL, .resid_edits = NULL, .n_resid_edits = 0,
        .sampler = heed_sampler_default_params(),
        .n_predict = 0, .prompt_text = NULL, .intervene_from = 0,
    };
    return p;
}

static void rec_observe(void *user, const heed_attn_block *b) {
    heed_recorder *rec = user;
    if (rec->live && b->n_query > 0) {
        int i = b->n_query - 1, pos = b->pos0 + i;
        if (b->layer == 0) {
            memset(rec->live, 0, sizeof(double) * ((size_t)pos + 1));
            rec->live_pos = pos;
            rec->live_n = 0;
        }
        if (pos == rec->live_pos && pos < rec->run->n_ctx && b->layer * b->n_head == rec->live_n) {
            for (int h = 0; h < b->n_head; h++) {
                const float *row = b->probs + (size_t)h * b->head_stride + (size_t)i * b->row_stride;
                for (int k = 0; k <= pos; k++) rec->live[k] += row[k];
            }
            rec->live_n += b->n_head;
        } else {
            rec->live_n = -1; /* out of order: the row is recomputed instead */
        }
    }
    astore_add_probs(&rec->run->st, b, rec->run->pool);
}
/* Value norms: for each position and head, |W_O^h v| = sqrt(v^T G_h v)
 * with the head's Gram matrix (model_wo_gram; kern_ops.quad_form),
 * head_dim^2 multiply-adds per head: 1/n_embd of the output projection's.
 * What costs is reading every G (a layer's: n_head x head_dim^2 floats), so
 * the positions of a block are taken per head, and a decode's one-position
 * blocks are kept (their values copied) until VN_BATCH positions are
 * waiting or the recording ends (rec_vn_flush). */
#define VN_BATCH 32

static bool vn_room(heed_run *r, int need) {
    if (need <= r->vn_cap) return true;
    int cap = r->vn_cap ? r->vn_cap : 64;
    while (cap < need) cap *= 2;
    float *vn = realloc(r->vnorm, sizeof *vn * (size_t)cap * r->n_layer * r->n_head);
    if (!vn) {
        r->st.failed = true;
        return false;
    }
    r->vnorm = vn, r->vn_cap = cap;
    return true;
}

/* Norms of n positions from pos0 in one layer; v rows kv_dim floats apart. */
static void vn_rows(heed_recorder *rec, int layer, int pos0, int n, const float *v) {
    heed_run *r = rec->run;
    const int L = r->n_layer, H = r->n_head, hd = r->head_dim, group = H / r->n_head_kv,
              kvd = r->n_head_kv * hd;
    if (!r->ops) r->ops = kern_ops_best();
    if (!vn_room(r, pos0 + n)) return;
    for (int h = 0; h < H; h++) {
        const float *gh = rec->gram[layer] + (size_t)h * hd * hd;
        for (int i = 0; i < n; i++) {
            float s2 = r->ops->quad_form(gh, v + (size_t)i * kvd + (size_t)(h / group) * hd, hd);
            r->vnorm[((size_t)(pos0 + i) * L + layer) * H + h] = sqrtf(s2 > 0 ? s2 : 0);
        }
    }
}

/* The waiting positions' norms, every layer. */
static void rec_vn_flush(heed_recorder *rec) {
    heed_run *r = rec->run;
    if (!rec->vn_wait) return;
    const size_t kvd = (size_t)r->n_head_kv * r->head_dim;
    for (int l = 0; l < r->n_layer; l++) vn_rows(rec, l, rec->vn_pos0, rec->vn_wait, rec->vn_buf + (size_t)l * VN_BATCH * kvd);
    if (rec->vn_pos0 + rec->vn_wait > r->vn_n) r->vn_n = rec->vn_pos0 + rec->vn_wait;
    rec->vn_wait = 0;
}

static void rec_value_norms(heed_recorder *rec, const heed_qk_block *b) {
    heed_run *r = rec->run;
    const int L = r->n_layer;
    const size_t kvd = (size_t)r->n_head_kv * r->head_dim;
    if (b->n_query > 1 || !rec->vn_buf) { /* a prompt's block: its positions together */
        if (b->layer == 0) rec_vn_flush(rec);
        vn_rows(rec, b->layer, b->pos0, b->n_query, b->v);
        if (b->layer == L - 1 && b->pos0 + b->n_query > r->vn_n) r->vn_n = b->pos0 + b->n_query;
        return;
    }
    if (b->layer == 0 && rec->vn_wait && b->pos0 != rec->vn_pos0 + rec->vn_wait) rec_vn_flush(rec); /* not next */
    if (!rec->vn_wait) rec->vn_pos0 = b->pos0;
    memcpy(rec->vn_buf + ((size_t)b->layer * VN_BATCH + rec->vn_wait) * kvd, b->v, sizeof(float) * kvd);
    if (b->layer == L - 1 && ++rec->vn_wait == VN_BATCH) rec_vn_flush(rec);
}

static void rec_observe_qk(void *user, const heed_qk_block *b) {
    heed_recorder *rec = user;
    astore_add_qk(&rec->run->st, b, rec->run->pool);
    if (rec->gram && b->v && b->layer >= 0 && b->layer < rec->run->n_layer && b->head_dim == rec->run->head_dim)
        rec_value_norms(rec, b);
}

static void rec_observe_resid(void *user, const heed_resid_block *b) {
    heed_recorder *rec = user;
    if (b->layer < 0 || b->layer >= rec->run->n_layer || b->n_embd != rec->run->n_embd) return;
    memcpy(rec->resid + (size_t)b->layer * b->n_embd, b->x + (size_t)(b->n_query - 1) * b->n_embd,
           sizeof(float) * (size_t)b->n_embd);
}

/* The routing of a mixture-of-experts layer, kept for every position. A
 * failed allocation marks the store failed (the recording is invalid). */
static void rec_observe_moe(void *user, const heed_moe_block *b) {
    heed_recorder *rec = user;
    heed_run *r = rec->run;
    const int L = r->n_layer, K = r->n_expert_used;
    if (b->layer < 0 || b->layer >= L || b->n_used != K || b->n_expert != r->n_expert) return;
    int need = b->pos0 + b->n_query;
    if (need > r->moe_cap) {
        int cap = r->moe_cap ? r->moe_cap : 64;
        while (cap < need) cap *= 2;
        int32_t *ids = realloc(r->moe_ids, sizeof *ids * (size_t)cap * L * K);
        if (ids) r->moe_ids = ids;
        float *w = ids ? realloc(r->moe_w, sizeof *w * (size_t)cap * L * K) : NULL;
        if (w) r->moe_w = w;
        if (!ids || !w) {
            r->st.failed = true;
            return;
        }
        r->moe_cap = cap;
    }
    for (int i = 0; i < b->n_query; i++) {
        size_t at = ((size_t)(b->pos0 + i) * L + b->layer) * K;
        memcpy(r->moe_ids + at, b->ids + (size_t)i * K, sizeof(int32_t) * (size_t)K);
        memcpy(r->moe_w + at, b->weights + (size_t)i * K, sizeof(float) * (size_t)K);
    }
    if (b->layer == L - 1 && need > r->moe_n) r->moe_n = need;
}

int heed_recorder_new(const heed_model *m, heed_ctx *ctx, const heed_recorder_params *params,
                      heed_recorder **out) {
    if (!m || !ctx || !out) return HEED_ERR_INVALID_ARG;
    *out = NULL;
    heed_recorder_params p = params ? *params : heed_recorder_default_params();
    if (p.n_cand < 0 || p.n_cand > LIMIT_MAX_CAND || p.lens_top_k < 0 ||
        p.lens_top_k > LIMIT_MAX_LENS || p.attn_top_k < 0 || p.attn_top_k > LIMIT_MAX_ATTN_TOPK || p.n_threads < 0)
        return HEED_ERR_INVALID_ARG;
    heed_recorder *rec = calloc(1, sizeof *rec);
    heed_run *r = calloc(1, sizeof *r);
    int rc = rec && r ? HEED_OK : HEED_ERR_NOMEM;
    if (!rc) {
        rec->run = r;
        rec->m = m;
        rec->ctx = ctx;
        rc = rec_run_init(r, m, &p, heed_ctx_n_ctx(ctx));
    }
    if (!rc) {
        rec->resid = calloc((size_t)r->n_layer * r->n_embd, sizeof(float));
        if (r->lens_k > 0 && !r->lens_lazy && run_lens_scratch_init(&rec->lens, r, run_lens_rows(ctx))) rc = HEED_ERR_NOMEM;
        if (p.live_mean_row && !(rec->live = calloc((size_t)r->n_ctx + 1, sizeof(double)))) rc = HEED_ERR_NOMEM;
        /* value-weighted attention: the Gram matrices of every layer's output projection (made once per model) */
        if (r->st.has_qk && (rec->gram = calloc((size_t)r->n_layer, sizeof *rec->gram)))
            for (int l = 0; l < r->n_layer; l++)
                if (!(rec->gram[l] = model_wo_gram(m, l))) {
                    free(rec->gram);
                    rec->gram = NULL;
                    break;
                }
        if (rec->gram) /* NULL: every block's norms at once */
            rec->vn_buf = malloc(sizeof(float) * (size_t)r->n_layer * VN_BATCH * r->n_head_kv * r->head_dim);
        rec->live_n = -1;
        /* the summaries' and live views' threads while recording: the
         * context's own pool, idle then (a second pool would fight it for
         * the same cores); the views' own pool is made after finishing */
        r->pool = forward_pool(ctx);
        r->pool_borrowed = true;
        if (!rec->resid) rc = HEED_ERR_NOMEM;
    }
    if (rc) {
        if (!rec) {
            heed_run_free(r);
            return rc;
        }
        rec->done = true; /* no hook was installed: leave the context's alone */
        heed_recorder_free(rec);
        return rc;
    }
    heed_attn_hook hook = {
        .want = NULL,
        .observe = (r->st.has_topk || r->st.has_hmean || r->st.has_full) ? rec_observe : NULL,
        .observe_qk = r->st.has_qk ? rec_observe_qk : NULL,
        .observe_resid = r->lens_k > 0 ? rec_observe_resid : NULL,
        .observe_moe = r->n_expert ? rec_observe_moe : NULL,
        .user = rec,
    };
    /* n_pos advances in observe; keep it even when no probability tier is on */
    if (!hook.observe) hook.observe = rec_observe;
    heed_ctx_set_attn_hook(ctx, &hook);
    *out = rec;
    return HEED_OK;
}

void heed_recorder_free(heed_recorder *rec) {
    if (!rec) return;
    if (!rec->done && rec->ctx) heed_ctx_set_attn_hook(rec->ctx, NULL);
    heed_run_free(rec->run);
    free(rec->resid);
    run_lens_scratch_free(&rec->lens);
    free(rec->live);
    free(rec->gram);
    free(rec->vn_buf);
    free(rec);
}

int heed_recorder_begin(heed_recorder *rec, const int32_t *prompt, int n) {
    if (!rec || rec->done || rec->begun || !prompt || n <= 0 || n > LIMIT_MAX_TOKENS) return HEED_ERR_INVALID_ARG;
    if (heed_ctx_n_past(rec->ctx) != 0) return HEED_ERR_INVALID_ARG; /* every position must be observed */
    heed_run *r = rec->run;
    for (int i = 0; i < n; i++) {
        if (prompt[i] < 0 || prompt[i] >= r->n_vocab) return HEED_ERR_INVALID_ARG;
        int rc = rec_add_token(r, rec->m, prompt[i]);
        if (rc) return rc;
        r->n_prompt++;
    }
    /* With the length known the store is reserved now (at most the context):
     * generating then never grows (copies) its arrays. A failure here is no
     * error: the store grows as it goes instead. */
    if (r->n_predict > 0) {
        long long expect = (long long)n + r->n_predict;
        (void)astore_plan(&r->st, expect < r->n_ctx ? (int)expect : r->n_ctx);
    }
    rec->begun = true;
    return HEED_OK;
}

int heed_recorder_begin_from(heed_recorder *rec, const int32_t *prompt, int n, const heed_run *parent, int n_pos,
                             int n_steps) {
    if (!rec || rec->done || rec->begun || !prompt || !parent || n <= 0 || n > LIMIT_MAX_TOKENS || n_pos < 1 ||
        n_steps < 0 || n_steps > parent->n_output || n_pos > parent->st.n_pos || n_pos > n + n_steps ||
        (n_steps > 0 && n_steps > n_pos - n + 1) || heed_ctx_n_past(rec->ctx) != n_pos || n != parent->n_prompt)
        return HEED_ERR_INVALID_ARG;
    heed_run *r = rec->run;
    if (r->n_layer != parent->n_layer || r->n_head != parent->n_head || r->n_embd != parent->n_embd ||
        r->n_vocab != parent->n_vocab || r->meta_hash != parent->meta_hash || r->n_cand != parent->n_cand ||
        r->lens_k != parent->lens_k || r->n_expert != parent->n_expert ||
        (r->lens_k > 0 && r->lens_lazy && !parent->resid && n_steps > 0))
        return HEED_ERR_UNSUPPORTED;
    for (int t = 0; r->lens_k > 0 && !r->lens_lazy && t < n_steps; t++) /* an eager lens needs the parent's */
        if (!parent->lens_ready[t]) return HEED_ERR_UNSUPPORTED;
    for (int i = 0; i < n; i++)
        if (prompt[i] != parent->ids[i]) return HEED_ERR_INVALID_ARG;
    /* q of the prefix (most of the bytes) is copied by heed_recorder_complete_from, after the
     * generation's first tokens: the newest query's rows need only every key */
    int rc = astore_copy_prefix(&r->st, &parent->st, n_pos, false);
    if (!rc) rec->q_pending = n_pos;
    const int L = r->n_layer, H = r->n_head;
    if (!rc && rec->gram) { /* value norms: the parent's, when it has them */
        if (!parent->vnorm || parent->vn_n < n_pos) {
            free(rec->gram); /* a recording without them, as the parent */
            rec->gram = NULL;
        } else if (!(r->vnorm = malloc(sizeof(float) * (size_t)(n_pos + 64) * L * H))) {
            rc = HEED_ERR_NOMEM;
        } else {
            memcpy(r->vnorm, parent->vnorm, sizeof(float) * (size_t)n_pos * L * H);
            r->vn_n = n_pos, r->vn_cap = n_pos + 64;
        }
    }
    if (!rc && r->n_expert) { /* the routing of the positions taken */
        if (parent->moe_n < n_pos) return HEED_ERR_UNSUPPORTED;
        size_t per = (size_t)L * r->n_expert_used;
        r->moe_ids = malloc(sizeof(int32_t) * (size_t)(n_pos + 64) * per);
        r->moe_w = malloc(sizeof(float) * (size_t)(n_pos + 64) * per);
        if (!r->moe_ids || !r->moe_w) return HEED_ERR_NOMEM;
        memcpy(r->moe_ids, parent->moe_ids, sizeof(int32_t) * (size_t)n_pos * per);
        memcpy(r->moe_w, parent->moe_w, sizeof(float) * (size_t)n_pos * per);
        r->moe_n = n_pos, r->moe_cap = n_pos + 64;
    }
    for (int i = 0; !rc && i < n; i++) {
        if (!(rc = rec_add_token(r, rec->m, prompt[i]))) r->n_prompt++;
    }
    const size_t LE = (size_t)L * r->n_embd, LK = (size_t)L * r->lens_k;
    for (int t = 0; !rc && t < n_steps; t++) { /* the parent's steps, as it recorded them */
        if ((rc = rec_add_token(r, rec->m, parent->ids[n + t]))) break;
        r->steps[t] = parent->steps[t];
        memcpy(r->cand + (size_t)t * r->n_cand, parent->cand + (size_t)t * r->n_cand, sizeof *r->cand * (size_t)r->n_cand);
        if (r->lens_k > 0) {
            r->lens_ready[t] = parent->lens_ready[t];
            memcpy(r->lens_id + t * LK, parent->lens_id + t * LK, sizeof *r->lens_id * LK);
            memcpy(r->lens_p + t * LK, parent->lens_p + t * LK, sizeof *r->lens_p * LK);
            if (r->lens_lazy) memcpy(r->resid + t * LE, parent->resid + t * LE, sizeof(float) * LE);
        }
        r->n_output++;
    }
    if (rc) return rc;
    if (r->n_predict > 0) {
        long long expect = (long long)n + r->n_predict;
        (void)astore_plan(&r->st, expect < r->n_ctx ? (int)expect : r->n_ctx);
    }
    rec->begun = true;
    return HEED_OK;
}

int heed_recorder_step(heed_recorder *rec, const heed_sample *s, const float *logits) {
    if (!rec || rec->done || !rec->begun || !s || !logits) return HEED_ERR_INVALID_ARG;
    heed_run *r = rec->run;
    if (r->st.failed) return HEED_ERR_NOMEM;
    int t = r->n_output;
    /* the query that chose this token must have gone through the model */
    if (s->id < 0 || s->id >= r->n_vocab || r->st.n_pos != r->n_prompt + t) return HEED_ERR_INVALID_ARG;
    int rc = rec_add_token(r, rec->m, s->id);
    if (rc) return rc;
    r->steps[t] = (run_step){s->id, s->prob, s->logprob, s->entropy};
    heed_sample_candidates(s, logits, r->n_vocab, r->n_cand, r->cand + (size_t)t * r->n_cand);
    if (r->lens_k > 0 && r->lens_lazy) {
        memcpy(r->resid + (size_t)t * r->n_layer * r->n_embd, rec->resid, sizeof(float) * (size_t)r->n_layer * r->n_embd);
        r->lens_ready[t] = 0;
    } else if (r->lens_k > 0) {
        const float *res = rec->resid;
        run_lens_steps(r, rec->ctx, &t, &res, 1, &rec->lens);
    }
    r->n_output++;
    r->eog = s->id == r->eos || s->id == r->eot;
    return HEED_OK;
}

int heed_recorder_last_row(heed_recorder *rec, const heed_attn_sel *sel, float *out, int n) {
    if (!rec || rec->done || !rec->run || !sel || !out) return HEED_ERR_INVALID_ARG;
    int n_row = rec->run->st.n_pos;
    if (n_row <= 0 || n < n_row) return HEED_ERR_INVALID_ARG;
    const heed_run *r = rec->run;
    bool all_mean = !sel->layers && !sel->heads && sel->agg == HEED_AGG_MEAN;
    if (all_mean && rec->live && rec->live_pos == n_row - 1 && rec->live_n == r->n_layer * r->n_head) {
        for (int k = 0; k < n_row; k++) out[k] = (float)(rec->live[k] / rec->live_n);
        return n_row;
    }
    int rc = heed_run_attn_row(rec->run, sel, n_row - 1, out);
    return rc ? rc : n_row;
}

int heed_recorder_step_view(heed_recorder *rec, const heed_attn_sel *sel, unsigned flags, float *in, float *out,
                            float *in_mass, float *out_mass) {
    if (!rec || rec->done || !rec->run || rec->run->n_output < 1) return HEED_ERR_INVALID_ARG;
    int t = rec->run->n_output - 1;
    int rc = heed_run_step_view(rec->run, sel, t, flags, in, out, in_mass, out_mass);
    return rc ? rc : t;
}

int heed_recorder_complete_from(heed_recorder *rec, const heed_run *parent) {
    if (!rec || rec->done || !parent || !rec->q_pending) return HEED_ERR_INVALID_ARG;
    heed_run *r = rec->run;
    if (parent->st.n_pos < rec->q_pending || parent->n_layer != r->n_layer || parent->st.q_dim != r->st.q_dim ||
        parent->meta_hash != r->meta_hash)
        return HEED_ERR_INVALID_ARG;
    astore_copy_q_prefix(&r->st, &parent->st, rec->q_pending);
    rec->q_pending = 0;
    return HEED_OK;
}

int heed_recorder_finish(heed_recorder *rec, heed_run **out) {
    if (!rec || rec->done || !out || !rec->begun) return HEED_ERR_INVALID_ARG;
    if (rec->q_pending) return HEED_ERR_INVALID_ARG; /* heed_recorder_complete_from first */
    if (rec->gram) rec_vn_flush(rec);
    heed_ctx_set_attn_hook(rec->ctx, NULL);
    rec->done = true;
    rec->run->pool = NULL; /* the context's: the run makes its own when a view needs it */
    rec->run->pool_borrowed = false;
    if (rec->run->st.failed) return HEED_ERR_NOMEM;
    *out = rec->run;
    rec->run = NULL;
    return HEED_OK;
}
