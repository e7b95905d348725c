/*
 * run.c - recordings: the recorder (hook + per-step bookkeeping + logit
 * lens), the run file (docs/RUN_FORMAT.md), views and export.
 *
 * The recorder is the hook's user: observe_qk and observe feed the astore,
 * observe_resid keeps the last position's residual after every layer. The
 * logit lens is one unembedding per layer and step - 16 to 30 times the
 * output projection - so by default nothing of it is computed while
 * generating: heed_recorder_step keeps the step's residuals, and
 * heed_run_lens_compute unembeds them when a view asks (the same function on
 * the same floats: the numbers eager computation gives). lens_eager computes
 * it in heed_recorder_step instead, after the decode (heed_ctx_unembed uses
 * the context's scratch, so it cannot run inside heed_decode).
 *
 * The file is a header and a fixed sequence of sections, each with its
 * length and a CRC-32 of its payload. Every count read is checked against
 * named limits, and every length against the computed size and the bytes
 * left, before anything is allocated.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "astore.h"
#include "attn.h"
#include "fmap.h"
#include "jsonw.h"
#include "kern.h"
#include "forward.h"
#include "pool.h"
#include "run.h"

/* Limits on counts read from a file: generous for real models, small enough
 * that products of them cannot overflow 64 bits. */
#define MAX_LAYER 1024
#define MAX_HEAD 1024
#define MAX_HEAD_DIM 4096
#define MAX_VOCAB (1 << 24)
#define MAX_TOKENS (1 << 20)
#define MAX_CAND 256
#define MAX_LENS 64
#define MAX_ATTN_TOPK ASTORE_TOPK_MAX
#define MAX_STR (1u << 20)
#define LABEL_MAX 256
/* Layers unembedded together: the output matrix is read once for them.
 * Fixed (not the context's batch size), since a row's logits depend on how
 * many rows go through the kernels together: the eager and the lazy lens
 * must batch alike to agree bit for bit. */
#define LENS_BATCH 8

typedef struct run_step {
    int32_t id;
    float prob, logprob, entropy;
} run_step;

struct heed_run {
    char *model_file, *model_arch, *model_name, *prompt_text;
    uint64_t model_size, meta_hash;
    int n_layer, n_head, n_head_kv, head_dim, n_embd, n_vocab;
    int32_t bos, eos, eot;
    heed_sampler_params sampler;
    int n_predict, n_ctx, n_threads;
    int n_cand, lens_k;
    bool eog;
    int n_prompt, n_output, cap_tok;
    int32_t *ids;     /* (cap_tok) prompt then output */
    char **labels;    /* (cap_tok) display labels */
    run_step *steps;  /* (cap_tok) one per output */
    heed_candidate *cand; /* (cap_tok, n_cand) */
    int32_t *lens_id; /* (cap_tok, n_layer, lens_k) */
    float *lens_p;    /* (cap_tok, n_layer, lens_k) */
    uint8_t *lens_ready; /* (cap_tok) 1: step t's lens is in lens_id / lens_p */
    float *resid;     /* (cap_tok, n_layer, n_embd) residual after each layer at the query of step t,
                       * for a lens computed on demand; NULL when every lens was computed eagerly */
    bool lens_lazy;   /* recording keeps residuals instead of computing the lens */
    astore st;
    pool *pool;       /* views' threads, made on first use */
    bool pool_borrowed; /* while recording: the context's pool (forward.h) */
};

struct heed_recorder {
    heed_run *run;
    const heed_model *m;
    heed_ctx *ctx;
    float *resid;        /* (n_layer, n_embd) last position's residual after each layer */
    float *logits;       /* (LENS_BATCH, n_vocab) logit-lens scratch */
    heed_candidate *tmp; /* (lens_k) */
    /* live_mean_row: the newest query's row summed over layers and heads as
     * the forward pass hands its rows to the hook, in the order
     * heed_run_attn_row adds them (double) */
    double *live;        /* (n_ctx + 1) */
    int live_pos, live_n; /* the query position summed, and how many (layer, head) rows so far */
    bool begun, done;
};

__attribute__((format(printf, 4, 5))) static int fail(char *err, size_t n, int rc, const char *fmt, ...) {
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return rc;
}

static char *dupstr(const char *s) {
    size_t n = strlen(s ? s : "");
    char *d = malloc(n + 1);
    if (d) memcpy(d, s ? s : "", n + 1);
    return d;
}

/* ------------------------------------------------------------- checksums */

static void crc_table(uint32_t table[256]) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
}

static uint32_t crc_update(const uint32_t table[256], uint32_t crc, const void *data, size_t n) {
    const unsigned char *p = data;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* The table lives on the caller's stack (no global state); readers and
 * writers keep one for all their sections. */
uint32_t run_crc32(uint32_t crc, const void *data, size_t n) {
    uint32_t table[256];
    crc_table(table);
    return crc_update(table, crc, data, n);
}

uint64_t run_fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static bool little_endian(void) {
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* --------------------------------------------------------------- run data */

static void run_free_data(heed_run *r) {
    free(r->model_file); free(r->model_arch); free(r->model_name); free(r->prompt_text);
    if (r->labels)
        for (int i = 0; i < r->n_prompt + r->n_output; i++) free(r->labels[i]);
    free(r->labels); free(r->ids); free(r->steps); free(r->cand);
    free(r->lens_id); free(r->lens_p); free(r->lens_ready); free(r->resid);
    astore_free(&r->st);
    if (!r->pool_borrowed) pool_free(r->pool);
}

void heed_run_free(heed_run *r) {
    if (!r) return;
    run_free_data(r);
    free(r);
}

/* Room for n tokens in every per-token array. */
static int run_reserve_tokens(heed_run *r, int n) {
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

static int run_add_token(heed_run *r, const heed_model *m, int32_t id) {
    int i = r->n_prompt + r->n_output, rc = run_reserve_tokens(r, i + 1);
    if (rc) return rc;
    char buf[LABEL_MAX];
    heed_token_label(m, id, buf, sizeof buf);
    r->labels[i] = dupstr(buf);
    if (!r->labels[i]) return HEED_ERR_NOMEM;
    r->ids[i] = id;
    return HEED_OK;
}

/* FNV-1a over every metadata key and value as heed prints them (arrays
 * shortened), each followed by a NUL: identifies the model's metadata. */
static uint64_t meta_hash(const heed_model *m) {
    uint64_t h = RUN_FNV_INIT;
    char small[512];
    for (int i = 0; i < heed_model_n_meta(m); i++) {
        const char *k = heed_model_meta_key(m, i);
        h = run_fnv1a(h, k ? k : "", strlen(k ? k : "") + 1);
        int n = heed_model_meta_value(m, i, small, sizeof small);
        if (n < 0) continue;
        char *buf = small;
        if ((size_t)n >= sizeof small && (buf = malloc((size_t)n + 1)) != NULL)
            heed_model_meta_value(m, i, buf, (size_t)n + 1);
        if (!buf) buf = small, n = (int)strlen(small);
        h = run_fnv1a(h, buf, (size_t)n + 1);
        if (buf != small) free(buf);
    }
    return h;
}

static int run_from_model(heed_run *r, const heed_model *m, const heed_recorder_params *p, int n_ctx) {
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    const char *base = mi.path ? strrchr(mi.path, '/') : NULL;
    r->model_file = dupstr(base ? base + 1 : mi.path);
    r->model_arch = dupstr(mi.arch);
    r->model_name = dupstr(mi.name);
    r->prompt_text = dupstr(p->prompt_text);
    if (!r->model_file || !r->model_arch || !r->model_name || !r->prompt_text) return HEED_ERR_NOMEM;
    r->model_size = mi.file_size;
    r->meta_hash = meta_hash(m);
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
    astore_params ap = {p->attn_top_k, p->keep_qk, p->keep_head_mean, p->full_limit_bytes};
    return astore_init(&r->st, mi.n_layer, mi.n_head, mi.n_head_kv, mi.head_dim, &ap);
}

/* -------------------------------------------------------------- recorder */

heed_recorder_params heed_recorder_default_params(void) {
    heed_recorder_params p = {
        .attn_top_k = 0, .keep_qk = true, .keep_head_mean = false, .full_limit_bytes = 0,
        .n_cand = 20, .lens_top_k = 5, .lens_eager = false, .live_mean_row = false, .n_threads = 0,
        .sampler = heed_sampler_default_params(),
        .n_predict = 0, .prompt_text = NULL,
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
static void rec_observe_qk(void *user, const heed_qk_block *b) {
    heed_recorder *rec = user;
    astore_add_qk(&rec->run->st, b, rec->run->pool);
}

static void rec_observe_resid(void *user, const heed_resid_block *b) {
    heed_recorder *rec = user;
    if (b->layer < 0 || b->layer >= rec->run->n_layer || b->n_embd != rec->run->n_embd) return;
    memcpy(rec->resid + (size_t)b->layer * b->n_embd, b->x + (size_t)(b->n_query - 1) * b->n_embd,
           sizeof(float) * (size_t)b->n_embd);
}

int heed_recorder_new(const heed_model *m, heed_ctx *ctx, const heed_recorder_params *params,
                      heed_recorder **out) {
    if (!m || !ctx || !out) return HEED_ERR_INVALID_ARG;
    *out = NULL;
    heed_recorder_params p = params ? *params : heed_recorder_default_params();
    if (heed_ctx_n_past(ctx) != 0 || p.n_cand < 0 || p.n_cand > MAX_CAND || p.lens_top_k < 0 ||
        p.lens_top_k > MAX_LENS || p.attn_top_k < 0 || p.attn_top_k > MAX_ATTN_TOPK || p.n_threads < 0)
        return HEED_ERR_INVALID_ARG;
    heed_recorder *rec = calloc(1, sizeof *rec);
    heed_run *r = calloc(1, sizeof *r);
    int rc = rec && r ? HEED_OK : HEED_ERR_NOMEM;
    if (!rc) {
        rec->run = r;
        rec->m = m;
        rec->ctx = ctx;
        rc = run_from_model(r, m, &p, heed_ctx_n_ctx(ctx));
    }
    if (!rc) {
        rec->resid = calloc((size_t)r->n_layer * r->n_embd, sizeof(float));
        rec->logits = malloc(sizeof(float) * (size_t)r->n_vocab * LENS_BATCH);
        rec->tmp = malloc(sizeof(heed_candidate) * (size_t)(r->lens_k + 1));
        if (p.live_mean_row && !(rec->live = calloc((size_t)r->n_ctx + 1, sizeof(double)))) rc = HEED_ERR_NOMEM;
        rec->live_n = -1;
        /* the summaries' and live views' threads while recording: the
         * context's own pool, idle then (a second pool would fight it for
         * the same cores); the views' own pool is made after finishing */
        r->pool = forward_pool(ctx);
        r->pool_borrowed = true;
        if (!rec->resid || !rec->logits || !rec->tmp) rc = HEED_ERR_NOMEM;
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
    free(rec->logits);
    free(rec->tmp);
    free(rec->live);
    free(rec);
}

int heed_recorder_begin(heed_recorder *rec, const int32_t *prompt, int n) {
    if (!rec || rec->done || rec->begun || !prompt || n <= 0 || n > MAX_TOKENS) return HEED_ERR_INVALID_ARG;
    heed_run *r = rec->run;
    for (int i = 0; i < n; i++) {
        if (prompt[i] < 0 || prompt[i] >= r->n_vocab) return HEED_ERR_INVALID_ARG;
        int rc = run_add_token(r, rec->m, prompt[i]);
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

/* Step t's lens from its residuals (n_layer rows of n_embd): one
 * unembedding per layer, LENS_BATCH layers at a time, the top lens_k tokens
 * with their probabilities. logits (LENS_BATCH, n_vocab) and tmp
 * (lens_k + 1) are scratch. The one function both the eager and the lazy
 * lens go through. */
static void lens_of_step(heed_run *r, heed_ctx *ctx, int t, const float *resid, float *logits, heed_candidate *tmp) {
    int batch = forward_max_batch(ctx) < LENS_BATCH ? forward_max_batch(ctx) : LENS_BATCH;
    for (int l0 = 0; l0 < r->n_layer; l0 += batch) {
        int nb = r->n_layer - l0 < batch ? r->n_layer - l0 : batch;
        forward_unembed_rows(ctx, resid + (size_t)l0 * r->n_embd, nb, logits);
        for (int b = 0; b < nb; b++) {
            int l = l0 + b;
            int n = heed_top_candidates(logits + (size_t)b * r->n_vocab, r->n_vocab, r->lens_k, tmp);
            size_t base = ((size_t)t * r->n_layer + l) * r->lens_k;
            for (int i = 0; i < r->lens_k; i++) {
                r->lens_id[base + i] = i < n ? tmp[i].id : -1;
                r->lens_p[base + i] = i < n ? tmp[i].prob : 0.0f;
            }
        }
    }
    r->lens_ready[t] = 1;
}

int heed_recorder_step(heed_recorder *rec, const heed_sample *s, const float *logits) {
    if (!rec || rec->done || !rec->begun || !s || !logits) return HEED_ERR_INVALID_ARG;
    heed_run *r = rec->run;
    if (r->st.failed) return HEED_ERR_NOMEM;
    int t = r->n_output;
    /* the query that chose this token must have gone through the model */
    if (s->id < 0 || s->id >= r->n_vocab || r->st.n_pos != r->n_prompt + t) return HEED_ERR_INVALID_ARG;
    int rc = run_add_token(r, rec->m, s->id);
    if (rc) return rc;
    r->steps[t] = (run_step){s->id, s->prob, s->logprob, s->entropy};
    heed_sample_candidates(s, logits, r->n_vocab, r->n_cand, r->cand + (size_t)t * r->n_cand);
    if (r->lens_k > 0 && r->lens_lazy) {
        memcpy(r->resid + (size_t)t * r->n_layer * r->n_embd, rec->resid, sizeof(float) * (size_t)r->n_layer * r->n_embd);
        r->lens_ready[t] = 0;
    } else if (r->lens_k > 0) {
        lens_of_step(r, rec->ctx, t, rec->resid, rec->logits, rec->tmp);
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

int heed_recorder_finish(heed_recorder *rec, heed_run **out) {
    if (!rec || rec->done || !out || !rec->begun) return HEED_ERR_INVALID_ARG;
    heed_ctx_set_attn_hook(rec->ctx, NULL);
    rec->done = true;
    rec->run->pool = NULL; /* the context's: the run makes its own when a view needs it */
    rec->run->pool_borrowed = false;
    if (rec->run->st.failed) return HEED_ERR_NOMEM;
    *out = rec->run;
    rec->run = NULL;
    return HEED_OK;
}

/* ------------------------------------------------------------------ info */

void heed_run_get_info(const heed_run *r, heed_run_info *info) {
    memset(info, 0, sizeof *info);
    if (!r) return;
    *info = (heed_run_info){
        .model_file = r->model_file, .model_arch = r->model_arch, .model_name = r->model_name,
        .model_size = r->model_size, .meta_hash = r->meta_hash,
        .n_layer = r->n_layer, .n_head = r->n_head, .n_head_kv = r->n_head_kv, .head_dim = r->head_dim,
        .n_embd = r->n_embd, .n_vocab = r->n_vocab, .bos = r->bos, .eos = r->eos, .eot = r->eot,
        .n_prompt = r->n_prompt, .n_output = r->n_output, .n_pos = r->st.n_pos,
        .sampler = r->sampler, .n_predict = r->n_predict, .n_ctx = r->n_ctx, .prompt_text = r->prompt_text,
        .n_cand = r->n_cand, .lens_top_k = r->lens_k, .lens_pending = heed_run_lens_pending(r),
        .attn_top_k = r->st.top_k,
        .has_qk = r->st.has_qk, .has_topk = r->st.has_topk, .has_head_mean = r->st.has_hmean,
        .has_full = r->st.has_full, .eog = r->eog, .attn_bytes = astore_bytes(&r->st),
    };
}

int heed_run_token(const heed_run *r, int i, int32_t *id, const char **label) {
    if (!r || i < 0 || i >= r->n_prompt + r->n_output) return HEED_ERR_INVALID_ARG;
    if (id) *id = r->ids[i];
    if (label) *label = r->labels[i];
    return HEED_OK;
}

int heed_run_get_step(const heed_run *r, int t, heed_run_step *out) {
    if (!r || !out || t < 0 || t >= r->n_output) return HEED_ERR_INVALID_ARG;
    const run_step *s = &r->steps[t];
    *out = (heed_run_step){s->id, s->prob, s->logprob, s->entropy, r->n_cand, r->cand + (size_t)t * r->n_cand};
    return HEED_OK;
}

int heed_run_lens(const heed_run *r, int t, int layer, const int32_t **ids, const float **probs, int *n_out) {
    if (!r || t < 0 || t >= r->n_output || layer < 0 || layer >= r->n_layer) return HEED_ERR_INVALID_ARG;
    if (r->lens_k == 0) return HEED_ERR_UNSUPPORTED;
    if (!r->lens_ready[t]) return HEED_ERR_NEED_MODEL;
    size_t base = ((size_t)t * r->n_layer + layer) * r->lens_k;
    if (ids) *ids = r->lens_id + base;
    if (probs) *probs = r->lens_p + base;
    if (n_out) *n_out = r->lens_k;
    return HEED_OK;
}

int heed_run_lens_pending(const heed_run *r) {
    int n = 0;
    for (int t = 0; r && r->lens_k > 0 && t < r->n_output; t++) n += !r->lens_ready[t];
    return n;
}

int heed_run_lens_model_ok(const heed_run *r, const heed_model *m) {
    if (!r || !m) return HEED_ERR_INVALID_ARG;
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    return mi.n_vocab == r->n_vocab && mi.n_embd == r->n_embd && mi.n_layer == r->n_layer &&
                   meta_hash(m) == r->meta_hash
               ? HEED_OK
               : HEED_ERR_MODEL_MISMATCH;
}

int heed_run_lens_compute(heed_run *r, const heed_model *m, heed_ctx *ctx, int t0, int t1) {
    if (!r || !m || !ctx || t0 < 0 || t1 < t0 || t1 > r->n_output) return HEED_ERR_INVALID_ARG;
    if (r->lens_k == 0) return HEED_ERR_UNSUPPORTED;
    bool pending = false;
    for (int t = t0; t < t1 && !pending; t++) pending = !r->lens_ready[t];
    if (!pending) return HEED_OK;
    if (!r->resid) return HEED_ERR_UNSUPPORTED;
    int rc = heed_run_lens_model_ok(r, m);
    if (rc) return rc;
    float *logits = malloc(sizeof(float) * (size_t)r->n_vocab * LENS_BATCH);
    heed_candidate *tmp = malloc(sizeof(heed_candidate) * (size_t)(r->lens_k + 1));
    rc = logits && tmp ? HEED_OK : HEED_ERR_NOMEM;
    for (int t = t0; !rc && t < t1; t++)
        if (!r->lens_ready[t]) lens_of_step(r, ctx, t, r->resid + (size_t)t * r->n_layer * r->n_embd, logits, tmp);
    free(logits);
    free(tmp);
    return rc;
}

/* ----------------------------------------------------------------- views */

heed_attn_sel heed_attn_sel_all(void) {
    heed_attn_sel s = {NULL, 0, NULL, 0, HEED_AGG_MEAN};
    return s;
}

static int run_src(heed_run *r, attn_src *src) {
    if (!r->pool) {
        int n = r->n_threads > 0 ? r->n_threads : pool_n_cpus();
        r->pool = pool_new(n);
        if (!r->pool) return HEED_ERR_NOMEM;
    }
    *src = (attn_src){&r->st, kern_ops_best(), r->pool};
    return HEED_OK;
}

int heed_run_attn_row(heed_run *r, const heed_attn_sel *sel, int pos, float *out) {
    attn_src src;
    if (!r || !sel || !out) return HEED_ERR_INVALID_ARG;
    int rc = run_src(r, &src);
    return rc ? rc : attn_agg_row(&src, sel, pos, out);
}

typedef struct col_ctx {
    int key;
    float *out;
} col_ctx;

static void col_fn(void *user, int ith, int q, const float *row) {
    col_ctx *c = user;
    c->out[q - c->key] = row[c->key];
}

int heed_run_attn_col(heed_run *r, const heed_attn_sel *sel, int key, float *out) {
    attn_src src;
    if (!r || !sel || !out || key < 0 || key >= r->st.n_pos) return HEED_ERR_INVALID_ARG;
    int rc = run_src(r, &src);
    col_ctx c = {key, out};
    return rc ? rc : attn_agg_rows(&src, sel, key, r->st.n_pos, col_fn, &c);
}

typedef struct mat_ctx {
    size_t n;
    float *out;
} mat_ctx;

static void mat_fn(void *user, int ith, int q, const float *row) {
    mat_ctx *c = user;
    memcpy(c->out + (size_t)q * c->n, row, sizeof(float) * ((size_t)q + 1));
}

int heed_run_attn_matrix(heed_run *r, const heed_attn_sel *sel, float *out) {
    attn_src src;
    if (!r || !sel || !out) return HEED_ERR_INVALID_ARG;
    int rc = run_src(r, &src);
    if (rc) return rc;
    size_t n = (size_t)r->st.n_pos;
    memset(out, 0, sizeof(float) * n * n);
    mat_ctx c = {n, out};
    return attn_agg_rows(&src, sel, 0, r->st.n_pos, mat_fn, &c);
}

static bool is_eog(const heed_run *r, int32_t id) { return id >= 0 && (id == r->eos || id == r->eot); }

/* The aggregated row that chose output t (query n_prompt - 1 + t). */
static int step_row(heed_run *r, const heed_attn_sel *sel, int t, float **row) {
    if (!r || !sel || t < 0 || t >= r->n_output || r->n_prompt - 1 + t >= r->st.n_pos) return HEED_ERR_INVALID_ARG;
    int pos = r->n_prompt - 1 + t;
    *row = malloc(sizeof(float) * ((size_t)pos + 1));
    if (!*row) return HEED_ERR_NOMEM;
    int rc = heed_run_attn_row(r, sel, pos, *row);
    if (rc) {
        free(*row);
        *row = NULL;
    }
    return rc;
}

int heed_run_step_view(heed_run *r, const heed_attn_sel *sel, int t, unsigned flags, float *in, float *out,
                       float *in_mass, float *out_mass) {
    if (!in || (t > 0 && !out)) return HEED_ERR_INVALID_ARG;
    float *row;
    int rc = step_row(r, sel, t, &row);
    if (rc) return rc;
    bool *drop = calloc((size_t)r->n_prompt, sizeof(bool));
    if (!drop) {
        free(row);
        return HEED_ERR_NOMEM;
    }
    for (int k = 0; k < r->n_prompt; k++)
        drop[k] = (!(flags & HEED_VIEW_KEEP_BOS) && r->ids[k] == r->bos && r->bos >= 0) ||
                  ((flags & HEED_VIEW_DROP_EOG) && is_eog(r, r->ids[k]));
    attn_step_view(row, r->n_prompt, t, drop, in, out, in_mass, out_mass);
    free(drop);
    free(row);
    return HEED_OK;
}

int heed_edges(const float *row, int n, float threshold, int top_k, heed_edge *out, int n_max) {
    if (!row || !out || n < 0 || n_max < 0 || top_k < 0) return HEED_ERR_INVALID_ARG;
    return attn_edges(row, n, threshold, top_k, out, n_max);
}

int heed_run_edges(heed_run *r, const heed_attn_sel *sel, int pos, float threshold, int top_k, heed_edge *out,
                   int n_max) {
    if (!r || !sel || !out || n_max < 0 || top_k < 0 || pos < 0 || pos >= r->st.n_pos) return HEED_ERR_INVALID_ARG;
    float *row = malloc(sizeof(float) * ((size_t)pos + 1));
    if (!row) return HEED_ERR_NOMEM;
    int rc = heed_run_attn_row(r, sel, pos, row);
    if (!rc) rc = attn_edges(row, pos + 1, threshold, top_k, out, n_max);
    free(row);
    return rc;
}

int heed_run_token_stats(heed_run *r, const heed_attn_sel *sel, int pos, heed_token_stats *out) {
    if (!r || !sel || !out || pos < 0 || pos >= r->st.n_pos) return HEED_ERR_INVALID_ARG;
    float *row = malloc(sizeof(float) * ((size_t)pos + 1));
    if (!row) return HEED_ERR_NOMEM;
    int rc = heed_run_attn_row(r, sel, pos, row);
    if (!rc) attn_row_stats(row, pos, out);
    free(row);
    return rc;
}

const char *heed_zone_name(heed_zone z) {
    switch (z) {
    case HEED_ZONE_SYNTAX_FLOOR: return "syntax_floor";
    case HEED_ZONE_SEMANTIC_BRIDGE: return "semantic_bridge";
    case HEED_ZONE_STRUCTURE_RIPPLE: return "structure_ripple";
    default: return "none";
    }
}

const char *heed_head_kind_name(heed_head_kind k) {
    switch (k) {
    case HEED_HEAD_PREV_TOKEN: return "previous_token";
    case HEED_HEAD_INDUCTION: return "induction";
    case HEED_HEAD_SINK: return "sink";
    case HEED_HEAD_LOCAL: return "local";
    default: return "other";
    }
}

typedef struct head_ctx {
    const int32_t *ids;
    attn_head_acc acc[64];
} head_ctx;

static void head_fn(void *user, int ith, int q, const float *row) {
    head_ctx *c = user;
    attn_head_add(&c->acc[ith], row, q, c->ids);
}

int heed_run_head_types(heed_run *r, heed_head_type *out) {
    attn_src src;
    if (!r || !out) return HEED_ERR_INVALID_ARG;
    if (!r->st.has_full && !r->st.has_qk) return HEED_ERR_UNSUPPORTED;
    int rc = run_src(r, &src);
    head_ctx *c = malloc(sizeof *c);
    if (!c) return HEED_ERR_NOMEM;
    for (int l = 0; !rc && l < r->n_layer; l++)
        for (int h = 0; !rc && h < r->n_head; h++) {
            heed_attn_sel sel = {&l, 1, &h, 1, HEED_AGG_MEAN};
            memset(c, 0, sizeof *c);
            c->ids = r->ids;
            rc = attn_agg_rows(&src, &sel, 0, r->st.n_pos, head_fn, c);
            attn_head_acc sum = {0};
            for (int t = 0; t < 64; t++) {
                sum.prev += c->acc[t].prev; sum.sink += c->acc[t].sink; sum.local += c->acc[t].local;
                sum.induction += c->acc[t].induction; sum.n += c->acc[t].n; sum.n_ind += c->acc[t].n_ind;
            }
            attn_head_finish(&sum, &out[(size_t)l * r->n_head + h]);
        }
    free(c);
    return rc;
}

typedef struct imp_ctx {
    int n_prompt;
    double *acc; /* (nth, n_prompt) */
} imp_ctx;

static void imp_fn(void *user, int ith, int q, const float *row) {
    imp_ctx *c = user;
    for (int k = 0; k < c->n_prompt; k++) c->acc[(size_t)ith * c->n_prompt + k] += row[k];
}

int heed_run_input_importance(heed_run *r, const heed_attn_sel *sel, float *out) {
    attn_src src;
    if (!r || !sel || !out) return HEED_ERR_INVALID_ARG;
    int rc = run_src(r, &src);
    if (rc) return rc;
    int nth = attn_n_threads(&src) < 64 ? attn_n_threads(&src) : 64;
    imp_ctx c = {r->n_prompt, calloc((size_t)nth * r->n_prompt, sizeof(double))};
    if (!c.acc) return HEED_ERR_NOMEM;
    int q0 = r->n_prompt - 1, q1 = r->n_prompt - 1 + r->n_output;
    if (q1 > r->st.n_pos) q1 = r->st.n_pos;
    rc = attn_agg_rows(&src, sel, q0 < q1 ? q0 : q1, q1, imp_fn, &c);
    for (int k = 0; k < r->n_prompt; k++) {
        double s = 0;
        for (int t = 0; t < nth; t++) s += c.acc[(size_t)t * r->n_prompt + k];
        out[k] = (float)s;
    }
    free(c.acc);
    return rc;
}

int heed_run_spans(const heed_run *r, heed_span_level level, heed_span *out, int n_max) {
    if (!r || n_max < 0 || (n_max > 0 && !out)) return HEED_ERR_INVALID_ARG;
    return attn_spans((const char *const *)r->labels, r->n_prompt + r->n_output, level, out, n_max);
}

void heed_spans_sum(const heed_span *spans, int n, const float *tok_values, float *out) {
    for (int s = 0; s < n; s++) {
        double v = 0;
        for (int i = 0; i < spans[s].n_tok; i++) v += tok_values[spans[s].first + i];
        out[s] = (float)v;
    }
}

/* ------------------------------------------------------------ run files */

enum {
    FLAG_QK = 1,
    FLAG_TOPK = 2,
    FLAG_HMEAN = 4,
    FLAG_FULL = 8,
    FLAG_EOG = 16,
    FLAG_RESID = 32, /* the lens is to be computed: RESI (residuals) in place of LENS */
    FLAG_ALL = 63,
};

/* Sizes are counted first (f == NULL), then written with the CRC. */
typedef struct wr {
    FILE *f;
    uint64_t n;
    uint32_t crc;
    bool io_err;
    const uint32_t *table;
} wr;

static void w_bytes(wr *w, const void *p, size_t n) {
    w->n += n;
    if (!w->f || n == 0) return;
    w->crc = crc_update(w->table, w->crc, p, n);
    if (!w->io_err && fwrite(p, 1, n, w->f) != n) w->io_err = true;
}

static void w_u32(wr *w, uint32_t v) { w_bytes(w, &v, 4); }
static void w_i32(wr *w, int32_t v) { w_bytes(w, &v, 4); }
static void w_u64(wr *w, uint64_t v) { w_bytes(w, &v, 8); }
static void w_f32(wr *w, float v) { w_bytes(w, &v, 4); }
static void w_str(wr *w, const char *s) {
    size_t n = strlen(s);
    w_u32(w, (uint32_t)n);
    w_bytes(w, s, n);
}

static uint32_t run_flags(const heed_run *r) {
    return (r->st.has_qk ? FLAG_QK : 0) | (r->st.has_topk ? FLAG_TOPK : 0) | (r->st.has_hmean ? FLAG_HMEAN : 0) |
           (r->st.has_full ? FLAG_FULL : 0) | (r->eog ? FLAG_EOG : 0) |
           (r->resid && heed_run_lens_pending(r) > 0 ? FLAG_RESID : 0);
}

static void sec_meta(wr *w, const heed_run *r) {
    w_str(w, r->model_file); w_str(w, r->model_arch); w_str(w, r->model_name); w_str(w, r->prompt_text);
    w_u64(w, r->model_size); w_u64(w, r->meta_hash);
    const int32_t geo[9] = {r->n_layer, r->n_head, r->n_head_kv, r->head_dim, r->n_embd, r->n_vocab,
                            r->bos, r->eos, r->eot};
    for (int i = 0; i < 9; i++) w_i32(w, geo[i]);
    const heed_sampler_params *sp = &r->sampler;
    w_f32(w, sp->temperature); w_i32(w, sp->top_k); w_f32(w, sp->top_p); w_f32(w, sp->min_p);
    w_f32(w, sp->repeat_penalty); w_i32(w, sp->repeat_last_n); w_u64(w, sp->seed);
    const int32_t cnt[5] = {r->n_predict, r->n_ctx, r->n_cand, r->lens_k, r->st.top_k};
    for (int i = 0; i < 5; i++) w_i32(w, cnt[i]);
    w_u32(w, run_flags(r));
    w_i32(w, r->n_prompt); w_i32(w, r->n_output); w_i32(w, r->st.n_pos);
}

static void sec_toks(wr *w, const heed_run *r) {
    for (int i = 0; i < r->n_prompt + r->n_output; i++) {
        w_i32(w, r->ids[i]);
        w_str(w, r->labels[i]);
    }
}

static void sec_step(wr *w, const heed_run *r) {
    for (int t = 0; t < r->n_output; t++) {
        const run_step *s = &r->steps[t];
        w_i32(w, s->id); w_f32(w, s->prob); w_f32(w, s->logprob); w_f32(w, s->entropy);
        for (int i = 0; i < r->n_cand; i++) {
            const heed_candidate *c = &r->cand[(size_t)t * r->n_cand + i];
            w_i32(w, c->id); w_f32(w, c->logit); w_f32(w, c->prob);
        }
    }
}

static void sec_lens(wr *w, const heed_run *r) {
    size_t n = (size_t)r->n_output * r->n_layer * r->lens_k;
    w_bytes(w, r->lens_id, n * 4);
    w_bytes(w, r->lens_p, n * 4);
}

static void sec_resid(wr *w, const heed_run *r) {
    w_bytes(w, r->resid, (size_t)r->n_output * r->n_layer * r->n_embd * 4);
}

static void sec_qk(wr *w, const heed_run *r) {
    size_t P = (size_t)r->st.n_pos;
    w_bytes(w, r->st.q, P * r->n_layer * r->st.q_dim * 4);
    for (int i = 0; i < r->n_layer * r->n_head_kv; i++) w_bytes(w, r->st.k[i], P * r->head_dim * 4);
}

static void sec_topk(wr *w, const heed_run *r) {
    size_t n = (size_t)r->st.n_pos * r->n_layer * r->n_head * r->st.top_k;
    w_bytes(w, r->st.tk_pos, n * 4);
    w_bytes(w, r->st.tk_w, n * 2);
}

static void sec_hmean(wr *w, const heed_run *r) {
    w_bytes(w, r->st.hmean, astore_tri((size_t)r->st.n_pos) * r->n_layer * 2);
}

static void sec_full(wr *w, const heed_run *r) {
    w_bytes(w, r->st.full, astore_tri((size_t)r->st.n_pos) * r->n_layer * r->n_head * 4);
}

static void sec_end(wr *w, const heed_run *r) {}

typedef void (*sec_fn)(wr *w, const heed_run *r);

typedef struct sec_def {
    char tag[5];
    uint32_t need; /* flag that makes the section present; 0: always */
    sec_fn write;
} sec_def;

/* The sections in file order (docs/RUN_FORMAT.md). With lens_k > 0, LENS
 * (the lens computed) or, with FLAG_RESID, RESI (the residuals to compute it
 * from); decided in sec_present. */
static const sec_def SECTIONS[] = {
    {"META", 0, sec_meta}, {"TOKS", 0, sec_toks}, {"STEP", 0, sec_step}, {"LENS", 0, sec_lens}, {"RESI", 0, sec_resid},
    {"QKST", FLAG_QK, sec_qk}, {"TOPK", FLAG_TOPK, sec_topk}, {"HMEA", FLAG_HMEAN, sec_hmean},
    {"FULL", FLAG_FULL, sec_full}, {"END!", 0, sec_end},
};
#define N_SECTIONS (sizeof SECTIONS / sizeof SECTIONS[0])

static bool sec_present(const sec_def *d, uint32_t flags, int lens_k) {
    if (!strcmp(d->tag, "LENS")) return lens_k > 0 && !(flags & FLAG_RESID);
    if (!strcmp(d->tag, "RESI")) return lens_k > 0 && (flags & FLAG_RESID);
    return !d->need || (flags & d->need);
}

static void write_section(wr *w, const sec_def *d, const heed_run *r) {
    wr count = {0};
    d->write(&count, r);
    w_bytes(w, d->tag, 4);
    w_u32(w, 0);
    w_u64(w, count.n);
    w->crc = 0;
    d->write(w, r);
    uint32_t crc = w->crc;
    w_u32(w, crc);
}

int heed_run_save(const heed_run *r, const char *path, char *err, size_t err_size) {
    if (!r || !path) return HEED_ERR_INVALID_ARG;
    if (!little_endian()) return fail(err, err_size, HEED_ERR_UNSUPPORTED, "%s: run files are little-endian", path);
    FILE *f = fopen(path, "wb");
    if (!f) return fail(err, err_size, HEED_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    uint32_t table[256];
    crc_table(table);
    wr w = {.f = f, .table = table};
    w_bytes(&w, RUN_MAGIC, 8);
    w_u32(&w, RUN_VERSION);
    w_u32(&w, 0);
    uint32_t flags = run_flags(r);
    for (size_t i = 0; i < N_SECTIONS; i++)
        if (sec_present(&SECTIONS[i], flags, r->lens_k)) write_section(&w, &SECTIONS[i], r);
    bool bad = w.io_err;
    if (fclose(f) != 0) bad = true;
    if (bad) return fail(err, err_size, HEED_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return HEED_OK;
}

/* ---- loading */

typedef struct rd {
    FILE *f;
    const char *path;
    uint64_t left;  /* bytes left in the file */
    const char *sec; /* section being read, for messages */
    uint32_t crc;
    const uint32_t *table;
    char *err;
    size_t err_size;
    /* cursor over a small section's payload */
    const unsigned char *p;
    size_t n, off;
} rd;

static int bad(rd *d, const char *field, const char *what) {
    return fail(d->err, d->err_size, HEED_ERR_FORMAT, "%s: section %s: %s %s", d->path, d->sec, field, what);
}

static int mul_chk(uint64_t a, uint64_t b, uint64_t *out) { return __builtin_mul_overflow(a, b, out) ? -1 : 0; }

/* Reads n payload bytes into dst, counting them into the CRC. */
static int r_raw(rd *d, void *dst, uint64_t n, const char *field) {
    if (n > d->left || n > SIZE_MAX) return bad(d, field, "extends past the end of the file");
    if (n && fread(dst, 1, (size_t)n, d->f) != n) return bad(d, field, "cannot be read (truncated)");
    d->left -= n;
    d->crc = crc_update(d->table, d->crc, dst, (size_t)n);
    return HEED_OK;
}

static int c_take(rd *d, void *dst, size_t n, const char *field) {
    if (n > d->n - d->off) return bad(d, field, "is truncated");
    memcpy(dst, d->p + d->off, n);
    d->off += n;
    return HEED_OK;
}

static int c_i32(rd *d, int32_t *v, const char *field) { return c_take(d, v, 4, field); }
static int c_u32(rd *d, uint32_t *v, const char *field) { return c_take(d, v, 4, field); }
static int c_u64(rd *d, uint64_t *v, const char *field) { return c_take(d, v, 8, field); }
static int c_f32(rd *d, float *v, const char *field) { return c_take(d, v, 4, field); }

static int c_str(rd *d, char **out, const char *field) {
    uint32_t n;
    int rc = c_u32(d, &n, field);
    if (rc) return rc;
    if (n > MAX_STR || n > d->n - d->off) return bad(d, field, "length is out of range");
    *out = malloc((size_t)n + 1);
    if (!*out) return HEED_ERR_NOMEM;
    memcpy(*out, d->p + d->off, n);
    (*out)[n] = 0;
    if (memchr(*out, 0, n)) return bad(d, field, "contains a NUL byte");
    d->off += n;
    return HEED_OK;
}

static int c_int(rd *d, int *v, long lo, long hi, const char *field) {
    int32_t x = 0;
    int rc = c_i32(d, &x, field);
    if (rc) return rc;
    if (x < lo || x > hi) {
        return fail(d->err, d->err_size, HEED_ERR_FORMAT, "%s: section %s: %s = %ld is out of range %ld..%ld",
                    d->path, d->sec, field, (long)x, lo, hi);
    }
    *v = x;
    return HEED_OK;
}

/* Section header: the expected tag, and a length that fits in the file. */
static int sec_begin(rd *d, const char *tag, uint64_t *len) {
    unsigned char h[16];
    d->sec = tag;
    if (d->left < sizeof h || fread(h, 1, sizeof h, d->f) != sizeof h)
        return bad(d, "header", "is missing (file truncated)");
    d->left -= sizeof h;
    if (memcmp(h, tag, 4)) {
        char got[5] = {0};
        for (int i = 0; i < 4; i++) got[i] = h[i] >= 32 && h[i] < 127 ? (char)h[i] : '?';
        return fail(d->err, d->err_size, HEED_ERR_FORMAT, "%s: expected section %s, found '%s'", d->path, tag, got);
    }
    uint32_t flags;
    memcpy(&flags, h + 4, 4);
    memcpy(len, h + 8, 8);
    if (flags) return bad(d, "flags", "are not 0");
    if (*len > d->left) return bad(d, "length", "extends past the end of the file");
    d->crc = 0;
    return HEED_OK;
}

static int sec_end_check(rd *d) {
    uint32_t want = d->crc, got;
    if (d->left < 4 || fread(&got, 1, 4, d->f) != 4) return bad(d, "checksum", "is missing (file truncated)");
    d->left -= 4;
    if (got != want) {
        return fail(d->err, d->err_size, HEED_ERR_FORMAT, "%s: section %s: checksum mismatch (stored %08x, computed %08x)",
                    d->path, d->sec, got, want);
    }
    return HEED_OK;
}

/* A small section read whole into a buffer for the cursor. */
static int sec_small(rd *d, const char *tag, unsigned char **buf) {
    uint64_t len;
    int rc = sec_begin(d, tag, &len);
    if (rc) return rc;
    *buf = malloc(len ? (size_t)len : 1);
    if (!*buf) return HEED_ERR_NOMEM;
    rc = r_raw(d, *buf, len, "payload");
    if (!rc) rc = sec_end_check(d);
    d->p = *buf;
    d->n = (size_t)len;
    d->off = 0;
    return rc;
}

static int sec_done(rd *d) { return d->off == d->n ? HEED_OK : bad(d, "payload", "has trailing bytes"); }

static int parse_meta(rd *d, heed_run *r, uint32_t *flags) {
    int rc = c_str(d, &r->model_file, "model_file");
    if (!rc) rc = c_str(d, &r->model_arch, "model_arch");
    if (!rc) rc = c_str(d, &r->model_name, "model_name");
    if (!rc) rc = c_str(d, &r->prompt_text, "prompt_text");
    if (!rc) rc = c_u64(d, &r->model_size, "model_size");
    if (!rc) rc = c_u64(d, &r->meta_hash, "meta_hash");
    if (!rc) rc = c_int(d, &r->n_layer, 1, MAX_LAYER, "n_layer");
    if (!rc) rc = c_int(d, &r->n_head, 1, MAX_HEAD, "n_head");
    if (!rc) rc = c_int(d, &r->n_head_kv, 1, r->n_head, "n_head_kv");
    if (!rc && r->n_head % r->n_head_kv) return bad(d, "n_head_kv", "does not divide n_head");
    if (!rc) rc = c_int(d, &r->head_dim, 1, MAX_HEAD_DIM, "head_dim");
    if (!rc) rc = c_int(d, &r->n_embd, 1, MAX_HEAD * MAX_HEAD_DIM, "n_embd");
    if (!rc) rc = c_int(d, &r->n_vocab, 1, MAX_VOCAB, "n_vocab");
    int bos = -1, eos = -1, eot = -1;
    if (!rc) rc = c_int(d, &bos, -1, r->n_vocab - 1, "bos");
    if (!rc) rc = c_int(d, &eos, -1, r->n_vocab - 1, "eos");
    if (!rc) rc = c_int(d, &eot, -1, r->n_vocab - 1, "eot");
    r->bos = bos; r->eos = eos; r->eot = eot;
    heed_sampler_params *sp = &r->sampler;
    int32_t top_k = 0, last_n = 0;
    if (!rc) rc = c_f32(d, &sp->temperature, "temperature");
    if (!rc) rc = c_i32(d, &top_k, "top_k");
    if (!rc) rc = c_f32(d, &sp->top_p, "top_p");
    if (!rc) rc = c_f32(d, &sp->min_p, "min_p");
    if (!rc) rc = c_f32(d, &sp->repeat_penalty, "repeat_penalty");
    if (!rc) rc = c_i32(d, &last_n, "repeat_last_n");
    if (!rc) rc = c_u64(d, &sp->seed, "seed");
    sp->top_k = top_k;
    sp->repeat_last_n = last_n;
    int atk = 0;
    if (!rc) rc = c_int(d, &r->n_predict, -1, MAX_TOKENS, "n_predict");
    if (!rc) rc = c_int(d, &r->n_ctx, 0, MAX_TOKENS, "n_ctx");
    if (!rc) rc = c_int(d, &r->n_cand, 0, r->n_vocab < MAX_CAND ? r->n_vocab : MAX_CAND, "n_cand");
    if (!rc) rc = c_int(d, &r->lens_k, 0, r->n_vocab < MAX_LENS ? r->n_vocab : MAX_LENS, "lens_top_k");
    if (!rc) rc = c_int(d, &atk, 0, MAX_ATTN_TOPK, "attn_top_k");
    if (!rc) rc = c_u32(d, flags, "flags");
    if (!rc && (*flags & ~(uint32_t)FLAG_ALL)) return bad(d, "flags", "has unknown bits");
    if (!rc && (atk > 0) != !!(*flags & FLAG_TOPK)) return bad(d, "attn_top_k", "disagrees with the TOPK flag");
    if (!rc) rc = c_int(d, &r->n_prompt, 1, MAX_TOKENS, "n_prompt");
    if (!rc) rc = c_int(d, &r->n_output, 0, MAX_TOKENS - r->n_prompt, "n_output");
    int n_pos = 0;
    if (!rc) rc = c_int(d, &n_pos, 0, r->n_prompt + r->n_output, "n_pos");
    if (!rc) rc = sec_done(d);
    if (rc) return rc;
    r->eog = *flags & FLAG_EOG;
    astore_params ap = {atk, *flags & FLAG_QK, *flags & FLAG_HMEAN, (*flags & FLAG_FULL) ? SIZE_MAX : 0};
    rc = astore_init(&r->st, r->n_layer, r->n_head, r->n_head_kv, r->head_dim, &ap);
    r->st.n_pos = n_pos;
    return rc;
}

static int parse_toks(rd *d, heed_run *r) {
    int n = r->n_prompt + r->n_output, rc = HEED_OK;
    r->ids = malloc(sizeof *r->ids * (size_t)n);
    r->labels = calloc((size_t)n, sizeof *r->labels);
    if (!r->ids || !r->labels) return HEED_ERR_NOMEM;
    for (int i = 0; i < n && !rc; i++) {
        int id;
        rc = c_int(d, &id, 0, r->n_vocab - 1, "token id");
        r->ids[i] = id;
        if (!rc) rc = c_str(d, &r->labels[i], "token label");
    }
    return rc ? rc : sec_done(d);
}

static int parse_step(rd *d, heed_run *r) {
    size_t n = (size_t)r->n_output;
    r->steps = malloc(sizeof *r->steps * (n ? n : 1));
    r->cand = malloc(sizeof *r->cand * (n * r->n_cand + 1));
    if (!r->steps || !r->cand) return HEED_ERR_NOMEM;
    int rc = HEED_OK;
    for (size_t t = 0; t < n && !rc; t++) {
        run_step *s = &r->steps[t];
        int id;
        rc = c_int(d, &id, 0, r->n_vocab - 1, "step id");
        s->id = id;
        if (!rc && id != r->ids[r->n_prompt + t]) return bad(d, "step id", "differs from the output token");
        if (!rc) rc = c_f32(d, &s->prob, "prob");
        if (!rc) rc = c_f32(d, &s->logprob, "logprob");
        if (!rc) rc = c_f32(d, &s->entropy, "entropy");
        for (int i = 0; i < r->n_cand && !rc; i++) {
            heed_candidate *c = &r->cand[t * r->n_cand + i];
            int cid;
            rc = c_int(d, &cid, 0, r->n_vocab - 1, "candidate id");
            c->id = cid;
            if (!rc) rc = c_f32(d, &c->logit, "candidate logit");
            if (!rc) rc = c_f32(d, &c->prob, "candidate prob");
        }
    }
    return rc ? rc : sec_done(d);
}

/* A bulk section: its length must be exactly the sum of the parts, read
 * straight into the arrays. */
typedef struct part {
    void **dst;
    uint64_t count, size;
    const char *field;
} part;

static int sec_bulk(rd *d, const char *tag, part *parts, int n) {
    uint64_t len, total = 0, bytes;
    int rc = sec_begin(d, tag, &len);
    if (rc) return rc;
    for (int i = 0; i < n; i++) {
        if (mul_chk(parts[i].count, parts[i].size, &bytes) || bytes > SIZE_MAX ||
            __builtin_add_overflow(total, bytes, &total))
            return bad(d, parts[i].field, "count is absurd");
    }
    if (len != total) {
        return fail(d->err, d->err_size, HEED_ERR_FORMAT,
                    "%s: section %s: length %llu does not match the counts (%llu bytes)", d->path, tag,
                    (unsigned long long)len, (unsigned long long)total);
    }
    for (int i = 0; i < n && !rc; i++) {
        bytes = parts[i].count * parts[i].size;
        *parts[i].dst = malloc(bytes ? (size_t)bytes : 1);
        if (!*parts[i].dst) return HEED_ERR_NOMEM;
        rc = r_raw(d, *parts[i].dst, bytes, parts[i].field);
    }
    return rc ? rc : sec_end_check(d);
}

static int check_lens(rd *d, const heed_run *r) {
    size_t n = (size_t)r->n_output * r->n_layer * r->lens_k;
    for (size_t i = 0; i < n; i++)
        if (r->lens_id[i] < -1 || r->lens_id[i] >= r->n_vocab) return bad(d, "lens id", "is out of range");
    return HEED_OK;
}

static int check_topk(rd *d, const heed_run *r) {
    const astore *s = &r->st;
    size_t per_pos = (size_t)s->n_layer * s->n_head * s->top_k;
    for (size_t p = 0; p < (size_t)s->n_pos; p++)
        for (size_t i = 0; i < per_pos; i++) {
            uint32_t v = s->tk_pos[p * per_pos + i];
            if (v != ASTORE_TK_NONE && v > p) return bad(d, "top-k position", "is beyond its query");
        }
    return HEED_OK;
}

static int load_attn(rd *d, heed_run *r, uint32_t flags) {
    astore *s = &r->st;
    uint64_t P = (uint64_t)s->n_pos, L = (uint64_t)s->n_layer, H = (uint64_t)s->n_head, tri = P * (P + 1) / 2;
    int rc = HEED_OK;
    /* every product below is < 2^20 * 2^21 * 2^10 * 2^12: no overflow */
    if (flags & FLAG_QK) {
        int nk = s->n_layer * s->n_head_kv;
        part *p = malloc(sizeof *p * (size_t)(nk + 1));
        if (!p) return HEED_ERR_NOMEM;
        p[0] = (part){(void **)&s->q, P * L * s->q_dim, 4, "q"};
        for (int i = 0; i < nk; i++) p[1 + i] = (part){(void **)&s->k[i], P * s->head_dim, 4, "k"};
        rc = sec_bulk(d, "QKST", p, nk + 1);
        free(p);
    }
    if (!rc && (flags & FLAG_TOPK)) {
        uint64_t n = P * L * H * (uint64_t)s->top_k;
        part p[2] = {{(void **)&s->tk_pos, n, 4, "top-k positions"}, {(void **)&s->tk_w, n, 2, "top-k weights"}};
        rc = sec_bulk(d, "TOPK", p, 2);
        if (!rc) rc = check_topk(d, r);
    }
    if (!rc && (flags & FLAG_HMEAN)) {
        part p[1] = {{(void **)&s->hmean, tri * L, 2, "head-mean rows"}};
        rc = sec_bulk(d, "HMEA", p, 1);
    }
    if (!rc && (flags & FLAG_FULL)) {
        uint64_t n;
        if (mul_chk(tri, L * H, &n)) return bad(d, "full", "count is absurd");
        part p[1] = {{(void **)&s->full, n, 4, "full probabilities"}};
        rc = sec_bulk(d, "FULL", p, 1);
    }
    s->cap = s->full_cap = s->n_pos;
    return rc;
}

static int load_body(rd *d, heed_run *r) {
    unsigned char *buf = NULL;
    uint32_t flags = 0;
    int rc = sec_small(d, "META", &buf);
    if (!rc) rc = parse_meta(d, r, &flags);
    free(buf);
    buf = NULL;
    if (!rc) rc = sec_small(d, "TOKS", &buf);
    if (!rc) rc = parse_toks(d, r);
    free(buf);
    buf = NULL;
    if (!rc) rc = sec_small(d, "STEP", &buf);
    if (!rc) rc = parse_step(d, r);
    free(buf);
    buf = NULL;
    r->cap_tok = r->n_prompt + r->n_output;
    if (!rc && r->lens_k > 0) {
        uint64_t n = (uint64_t)r->n_output * r->n_layer * r->lens_k;
        r->lens_ready = calloc((size_t)r->cap_tok + 1, 1);
        if (!r->lens_ready) rc = HEED_ERR_NOMEM;
        if (!rc && (flags & FLAG_RESID)) { /* the lens is computed when asked, with the model */
            uint64_t nr;
            if (mul_chk((uint64_t)r->n_output * r->n_layer, (uint64_t)r->n_embd, &nr)) return bad(d, "residuals", "count is absurd");
            part p[1] = {{(void **)&r->resid, nr, 4, "residuals"}};
            rc = sec_bulk(d, "RESI", p, 1);
            r->lens_id = rc ? NULL : calloc(n + 1, 4);
            r->lens_p = rc ? NULL : calloc(n + 1, 4);
            if (!rc && (!r->lens_id || !r->lens_p)) rc = HEED_ERR_NOMEM;
            r->lens_lazy = true;
        } else if (!rc) {
            part p[2] = {{(void **)&r->lens_id, n, 4, "lens ids"}, {(void **)&r->lens_p, n, 4, "lens probs"}};
            rc = sec_bulk(d, "LENS", p, 2);
            if (!rc) rc = check_lens(d, r);
            if (!rc) memset(r->lens_ready, 1, (size_t)r->n_output);
        }
    }
    if (!rc) rc = load_attn(d, r, flags);
    if (!rc) {
        uint64_t len;
        rc = sec_begin(d, "END!", &len);
        if (!rc && len) rc = bad(d, "length", "is not 0");
        if (!rc) rc = sec_end_check(d);
    }
    if (!rc && d->left) {
        rc = fail(d->err, d->err_size, HEED_ERR_FORMAT, "%s: %llu trailing bytes after the END! section", d->path,
                  (unsigned long long)d->left);
    }
    return rc;
}

static int load_header(rd *d) {
    unsigned char h[16];
    d->sec = "header";
    if (d->left < sizeof h || fread(h, 1, sizeof h, d->f) != sizeof h)
        return fail(d->err, d->err_size, HEED_ERR_FORMAT, "%s: too short for a heed run file", d->path);
    d->left -= sizeof h;
    if (memcmp(h, RUN_MAGIC, 8))
        return fail(d->err, d->err_size, HEED_ERR_FORMAT, "%s: bad magic: not a heed run file", d->path);
    uint32_t version, reserved;
    memcpy(&version, h + 8, 4);
    memcpy(&reserved, h + 12, 4);
    if (version != RUN_VERSION)
        return fail(d->err, d->err_size, HEED_ERR_UNSUPPORTED, "%s: run format version %u is not supported (this heed reads %u)",
                    d->path, version, RUN_VERSION);
    if (reserved) return fail(d->err, d->err_size, HEED_ERR_FORMAT, "%s: header: reserved field is not 0", d->path);
    return HEED_OK;
}

int run_load_stream(FILE *f, uint64_t size, const char *name, heed_run **out, char *err, size_t err_size) {
    *out = NULL;
    uint32_t table[256];
    crc_table(table);
    rd d = {.f = f, .path = name, .left = size, .table = table, .err = err, .err_size = err_size};
    heed_run *r = calloc(1, sizeof *r);
    int rc = r ? load_header(&d) : HEED_ERR_NOMEM;
    if (!rc) rc = load_body(&d, r);
    if (rc == HEED_ERR_NOMEM) fail(err, err_size, rc, "%s: out of memory", name);
    if (rc) {
        heed_run_free(r);
        return rc;
    }
    *out = r;
    return HEED_OK;
}

int heed_run_load(const char *path, heed_run **out, char *err, size_t err_size) {
    if (!path || !out) return HEED_ERR_INVALID_ARG;
    *out = NULL;
    if (!little_endian()) return fail(err, err_size, HEED_ERR_UNSUPPORTED, "%s: run files are little-endian", path);
    uint64_t size;
    int fd = fmap_open_fd(path, &size, err, err_size); /* regular files only: a FIFO would hang */
    if (fd < 0) return HEED_ERR_IO;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        return fail(err, err_size, HEED_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    int rc = run_load_stream(f, size, path, out, err, err_size);
    fclose(f);
    return rc;
}

/* ---------------------------------------------------------------- export */

static const char *npy_descr(heed_dtype t) {
    switch (t) {
    case HEED_DT_F32: return "<f4";
    case HEED_DT_I32: return "<i4";
    case HEED_DT_F16: return "<f2";
    case HEED_DT_U32: return "<u4";
    }
    return NULL;
}

static size_t dtype_size(heed_dtype t) { return t == HEED_DT_F16 ? 2 : 4; }

size_t run_npy_header(const heed_array *a, char *buf, size_t size) {
    const char *descr = npy_descr(a->dtype);
    if (!descr || a->ndim < 1 || a->ndim > 4 || size < 128) return 0;
    char dict[256];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    /* Python's tuple repr, as numpy writes it: (3,) and (2, 3) */
    for (int i = 0; i < a->ndim; i++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%llu%s", i ? ", " : "", (unsigned long long)a->shape[i],
                      a->ndim == 1 ? "," : "");
    n += snprintf(dict + n, sizeof dict - (size_t)n, "), }");
    /* numpy pads with spaces and ends with '\n' so the data starts 64-aligned */
    size_t total = 10 + (size_t)n + 1;
    total = (total + 63) / 64 * 64;
    if (total > size || total - 10 > 65535) return 0;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (char)((total - 10) & 0xff);
    buf[9] = (char)((total - 10) >> 8);
    memcpy(buf + 10, dict, (size_t)n);
    memset(buf + 10 + n, ' ', total - 10 - (size_t)n - 1);
    buf[total - 1] = '\n';
    return total;
}

static int array_bytes(const heed_array *a, uint64_t *out) {
    uint64_t n = dtype_size(a->dtype);
    if (!npy_descr(a->dtype) || a->ndim < 1 || a->ndim > 4 || (!a->data && a->shape[0])) return HEED_ERR_INVALID_ARG;
    for (int i = 0; i < a->ndim; i++)
        if (mul_chk(n, a->shape[i], &n)) return HEED_ERR_INVALID_ARG;
    *out = n;
    return HEED_OK;
}

int heed_npy_write(const char *path, const heed_array *a, char *err, size_t err_size) {
    char hdr[512];
    uint64_t nb;
    if (!path || !a || array_bytes(a, &nb)) return HEED_ERR_INVALID_ARG;
    size_t hn = run_npy_header(a, hdr, sizeof hdr);
    if (!hn) return HEED_ERR_INVALID_ARG;
    FILE *f = fopen(path, "wb");
    if (!f) return fail(err, err_size, HEED_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    bool ok = fwrite(hdr, 1, hn, f) == hn && (nb == 0 || fwrite(a->data, 1, (size_t)nb, f) == nb);
    if (fclose(f) != 0) ok = false;
    return ok ? HEED_OK : fail(err, err_size, HEED_ERR_IO, "%s: write failed", path);
}

static void put16(unsigned char *p, uint32_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }
static void put32(unsigned char *p, uint32_t v) { put16(p, v & 0xffff); put16(p + 2, v >> 16); }

/* ZIP "stored" entries (no compression, no zip64): member sizes and the
 * archive must stay under 4 GiB. DOS date 1980-01-01 keeps output reproducible. */
static void zip_local(unsigned char *h, uint32_t crc, uint32_t size, uint16_t name_len) {
    memset(h, 0, 30);
    put32(h, 0x04034b50);
    put16(h + 4, 20);
    put16(h + 12, 0x21);
    put32(h + 14, crc);
    put32(h + 18, size);
    put32(h + 22, size);
    put16(h + 26, name_len);
}

static void zip_central(unsigned char *h, uint32_t crc, uint32_t size, uint16_t name_len, uint32_t offset) {
    memset(h, 0, 46);
    put32(h, 0x02014b50);
    put16(h + 4, 20);
    put16(h + 6, 20);
    put16(h + 14, 0x21);
    put32(h + 16, crc);
    put32(h + 20, size);
    put32(h + 24, size);
    put16(h + 28, name_len);
    put32(h + 42, offset);
}

typedef struct zip_entry {
    char name[80];
    uint32_t crc, size, offset;
} zip_entry;

static int npz_member(FILE *f, const heed_array *a, zip_entry *e, uint64_t *off, const uint32_t *table) {
    char hdr[512];
    uint64_t nb;
    if (!a->name || array_bytes(a, &nb)) return HEED_ERR_INVALID_ARG;
    size_t hn = run_npy_header(a, hdr, sizeof hdr);
    int nl = snprintf(e->name, sizeof e->name, "%s.npy", a->name);
    if (!hn || nl <= 4 || (size_t)nl >= sizeof e->name || hn + nb > UINT32_MAX || *off > UINT32_MAX)
        return HEED_ERR_INVALID_ARG;
    uint32_t crc = crc_update(table, crc_update(table, 0, hdr, hn), a->data, (size_t)nb);
    e->crc = crc;
    e->size = (uint32_t)(hn + nb);
    e->offset = (uint32_t)*off;
    unsigned char lh[30];
    zip_local(lh, crc, e->size, (uint16_t)nl);
    bool ok = fwrite(lh, 1, 30, f) == 30 && fwrite(e->name, 1, (size_t)nl, f) == (size_t)nl &&
              fwrite(hdr, 1, hn, f) == hn && (nb == 0 || fwrite(a->data, 1, (size_t)nb, f) == nb);
    *off += 30 + (uint64_t)nl + e->size;
    return ok ? HEED_OK : HEED_ERR_IO;
}

static int npz_directory(FILE *f, const zip_entry *e, int n, uint64_t off) {
    uint64_t start = off;
    for (int i = 0; i < n; i++) {
        unsigned char ch[46];
        uint16_t nl = (uint16_t)strlen(e[i].name);
        zip_central(ch, e[i].crc, e[i].size, nl, e[i].offset);
        if (fwrite(ch, 1, 46, f) != 46 || fwrite(e[i].name, 1, nl, f) != nl) return HEED_ERR_IO;
        off += 46 + nl;
    }
    if (off > UINT32_MAX) return HEED_ERR_INVALID_ARG;
    unsigned char eocd[22] = {0};
    put32(eocd, 0x06054b50);
    put16(eocd + 8, (uint32_t)n);
    put16(eocd + 10, (uint32_t)n);
    put32(eocd + 12, (uint32_t)(off - start));
    put32(eocd + 16, (uint32_t)start);
    return fwrite(eocd, 1, 22, f) == 22 ? HEED_OK : HEED_ERR_IO;
}

int heed_npz_write(const char *path, const heed_array *arrays, int n, char *err, size_t err_size) {
    if (!path || (n > 0 && !arrays) || n < 0 || n > 65535) return HEED_ERR_INVALID_ARG;
    zip_entry *e = calloc((size_t)n + 1, sizeof *e);
    if (!e) return HEED_ERR_NOMEM;
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(e);
        return fail(err, err_size, HEED_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    uint32_t table[256];
    crc_table(table);
    uint64_t off = 0;
    int rc = HEED_OK;
    for (int i = 0; i < n && !rc; i++) rc = npz_member(f, &arrays[i], &e[i], &off, table);
    if (!rc) rc = npz_directory(f, e, n, off);
    if (fclose(f) != 0 && !rc) rc = HEED_ERR_IO;
    free(e);
    if (rc == HEED_ERR_INVALID_ARG) return fail(err, err_size, rc, "%s: an array is invalid or over 4 GiB", path);
    return rc ? fail(err, err_size, rc, "%s: write failed", path) : HEED_OK;
}

static heed_array arr(const char *name, heed_dtype t, const void *data, int ndim, uint64_t a, uint64_t b,
                      uint64_t c, uint64_t d) {
    heed_array x = {name, t, ndim, {a, b, c, d}, data};
    return x;
}

/* Top sources per (query, layer, head) that an export computes for a run
 * that did not keep them: the recorder's former default. */
enum { EXPORT_TOPK = 32 };

/* The summary tiers an export writes: the run's own, and those it lacks
 * computed from its exact tier into *sum (freed by the caller). */
static int export_summaries(heed_run *r, astore *sum, const astore **tk, const astore **hm) {
    const astore *st = &r->st;
    *tk = st->has_topk ? st : NULL;
    *hm = st->has_hmean ? st : NULL;
    memset(sum, 0, sizeof *sum);
    if ((*tk && *hm) || (!st->has_qk && !st->has_full) || st->n_pos == 0) return HEED_OK;
    attn_src src;
    int rc = run_src(r, &src);
    if (!rc) rc = astore_summarize(st, src.ops, src.pool, *tk ? 0 : EXPORT_TOPK, !*hm, sum);
    if (rc) return rc;
    if (!*tk) *tk = sum;
    if (!*hm) *hm = sum;
    return HEED_OK;
}

int heed_run_export_npz(heed_run *r, const char *path, char *err, size_t err_size) {
    if (!r || !path) return HEED_ERR_INVALID_ARG;
    astore sum;
    const astore *tk, *hm;
    int sum_rc = export_summaries(r, &sum, &tk, &hm);
    if (sum_rc) return sum_rc;
    uint64_t T = (uint64_t)r->n_output, P = (uint64_t)r->st.n_pos, L = (uint64_t)r->n_layer;
    uint64_t H = (uint64_t)r->n_head, tri = P * (P + 1) / 2;
    int32_t *sid = malloc(sizeof(int32_t) * (T + 1)), *cid = malloc(sizeof(int32_t) * (T * r->n_cand + 1));
    float *sf = malloc(sizeof(float) * (3 * T + 1)), *cf = malloc(sizeof(float) * (2 * T * r->n_cand + 1));
    if (!sid || !cid || !sf || !cf) {
        free(sid); free(cid); free(sf); free(cf);
        astore_free(&sum);
        return HEED_ERR_NOMEM;
    }
    /* steps as columns: numpy users index step_prob[t] */
    for (uint64_t t = 0; t < T; t++) {
        sid[t] = r->steps[t].id;
        sf[t] = r->steps[t].prob;
        sf[T + t] = r->steps[t].logprob;
        sf[2 * T + t] = r->steps[t].entropy;
        for (int i = 0; i < r->n_cand; i++) {
            const heed_candidate *c = &r->cand[t * r->n_cand + i];
            cid[t * r->n_cand + i] = c->id;
            cf[t * r->n_cand + i] = c->prob;
            cf[T * r->n_cand + t * r->n_cand + i] = c->logit;
        }
    }
    heed_array a[20];
    int n = 0;
    a[n++] = arr("prompt_ids", HEED_DT_I32, r->ids, 1, (uint64_t)r->n_prompt, 0, 0, 0);
    a[n++] = arr("output_ids", HEED_DT_I32, r->ids + r->n_prompt, 1, T, 0, 0, 0);
    a[n++] = arr("step_prob", HEED_DT_F32, sf, 1, T, 0, 0, 0);
    a[n++] = arr("step_logprob", HEED_DT_F32, sf + T, 1, T, 0, 0, 0);
    a[n++] = arr("step_entropy", HEED_DT_F32, sf + 2 * T, 1, T, 0, 0, 0);
    a[n++] = arr("cand_id", HEED_DT_I32, cid, 2, T, (uint64_t)r->n_cand, 0, 0);
    a[n++] = arr("cand_prob", HEED_DT_F32, cf, 2, T, (uint64_t)r->n_cand, 0, 0);
    a[n++] = arr("cand_logit", HEED_DT_F32, cf + T * r->n_cand, 2, T, (uint64_t)r->n_cand, 0, 0);
    if (r->lens_k > 0 && heed_run_lens_pending(r) == 0) { /* a lens still to compute is left out */
        a[n++] = arr("lens_id", HEED_DT_I32, r->lens_id, 3, T, L, (uint64_t)r->lens_k, 0);
        a[n++] = arr("lens_prob", HEED_DT_F32, r->lens_p, 3, T, L, (uint64_t)r->lens_k, 0);
    }
    float *k = NULL;
    if (r->st.has_qk) {
        /* the per-(layer, KV head) key arrays, gathered into one member */
        size_t per = (size_t)P * r->head_dim, nk = (size_t)r->n_layer * r->n_head_kv;
        k = malloc(sizeof(float) * (per * nk + 1));
        if (!k) {
            free(sid); free(cid); free(sf); free(cf);
            astore_free(&sum);
            return HEED_ERR_NOMEM;
        }
        for (size_t i = 0; i < nk; i++) memcpy(k + i * per, r->st.k[i], sizeof(float) * per);
        a[n++] = arr("q", HEED_DT_F32, r->st.q, 3, P, L, (uint64_t)r->st.q_dim, 0);
        a[n++] = arr("k", HEED_DT_F32, k, 4, L, (uint64_t)r->n_head_kv, P, (uint64_t)r->head_dim);
    }
    if (tk) {
        a[n++] = arr("topk_pos", HEED_DT_U32, tk->tk_pos, 4, P, L, H, (uint64_t)tk->top_k);
        a[n++] = arr("topk_weight", HEED_DT_F16, tk->tk_w, 4, P, L, H, (uint64_t)tk->top_k);
    }
    if (hm) a[n++] = arr("head_mean_packed", HEED_DT_F16, hm->hmean, 1, tri * L, 0, 0, 0);
    if (r->st.has_full) a[n++] = arr("full_packed", HEED_DT_F32, r->st.full, 1, tri * L * H, 0, 0, 0);
    int rc = heed_npz_write(path, a, n, err, err_size);
    free(sid); free(cid); free(sf); free(cf); free(k);
    astore_free(&sum);
    return rc;
}

static void json_run_meta(jsonw *w, const heed_run *r) {
    char hash[17];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)r->meta_hash);
    jw_key(w, "format"); jw_cstr(w, "heed-run");
    jw_key(w, "version"); jw_int(w, RUN_VERSION);
    jw_key(w, "model"); jw_obj(w);
    jw_key(w, "file"); jw_cstr(w, r->model_file);
    jw_key(w, "arch"); jw_cstr(w, r->model_arch);
    jw_key(w, "name"); jw_cstr(w, r->model_name);
    jw_key(w, "size"); jw_int(w, (int64_t)r->model_size);
    jw_key(w, "meta_hash"); jw_cstr(w, hash);
    jw_key(w, "n_layer"); jw_int(w, r->n_layer);
    jw_key(w, "n_head"); jw_int(w, r->n_head);
    jw_key(w, "n_head_kv"); jw_int(w, r->n_head_kv);
    jw_key(w, "head_dim"); jw_int(w, r->head_dim);
    jw_key(w, "n_vocab"); jw_int(w, r->n_vocab);
    jw_obj_end(w);
    jw_key(w, "params"); jw_obj(w);
    jw_key(w, "temperature"); jw_float(w, r->sampler.temperature);
    jw_key(w, "top_k"); jw_int(w, r->sampler.top_k);
    jw_key(w, "top_p"); jw_float(w, r->sampler.top_p);
    jw_key(w, "min_p"); jw_float(w, r->sampler.min_p);
    jw_key(w, "repeat_penalty"); jw_float(w, r->sampler.repeat_penalty);
    jw_key(w, "repeat_last_n"); jw_int(w, r->sampler.repeat_last_n);
    jw_key(w, "seed"); jw_int(w, (int64_t)r->sampler.seed);
    jw_key(w, "n_predict"); jw_int(w, r->n_predict);
    jw_key(w, "n_ctx"); jw_int(w, r->n_ctx);
    jw_obj_end(w);
    jw_key(w, "prompt"); jw_cstr(w, r->prompt_text);
    jw_key(w, "n_prompt"); jw_int(w, r->n_prompt);
    jw_key(w, "n_pos"); jw_int(w, r->st.n_pos);
    jw_key(w, "stop"); jw_cstr(w, r->eog ? "eog" : "length");
}

static void json_run_steps(jsonw *w, const heed_run *r) {
    jw_key(w, "tokens"); jw_arr(w);
    for (int i = 0; i < r->n_prompt + r->n_output; i++) {
        jw_obj(w);
        jw_key(w, "id"); jw_int(w, r->ids[i]);
        jw_key(w, "label"); jw_cstr(w, r->labels[i]);
        jw_obj_end(w);
    }
    jw_arr_end(w);
    jw_key(w, "steps"); jw_arr(w);
    for (int t = 0; t < r->n_output; t++) {
        const run_step *s = &r->steps[t];
        jw_obj(w);
        jw_key(w, "id"); jw_int(w, s->id);
        jw_key(w, "prob"); jw_float(w, s->prob);
        jw_key(w, "logprob"); jw_float(w, s->logprob);
        jw_key(w, "entropy"); jw_float(w, s->entropy);
        jw_key(w, "top"); jw_arr(w);
        for (int i = 0; i < r->n_cand; i++) {
            const heed_candidate *c = &r->cand[(size_t)t * r->n_cand + i];
            jw_obj(w);
            jw_key(w, "id"); jw_int(w, c->id);
            jw_key(w, "logit"); jw_float(w, c->logit);
            jw_key(w, "prob"); jw_float(w, c->prob);
            jw_obj_end(w);
        }
        jw_arr_end(w);
        if (r->lens_k > 0 && r->lens_ready[t]) {
            jw_key(w, "lens"); jw_arr(w); /* per layer: [[id, prob], ...] best first */
            for (int l = 0; l < r->n_layer; l++) {
                size_t base = ((size_t)t * r->n_layer + l) * r->lens_k;
                jw_obj(w);
                jw_key(w, "match"); jw_bool(w, r->lens_id[base] == s->id);
                jw_key(w, "ids"); jw_arr(w);
                for (int i = 0; i < r->lens_k; i++) jw_int(w, r->lens_id[base + i]);
                jw_arr_end(w);
                jw_key(w, "probs"); jw_arr(w);
                for (int i = 0; i < r->lens_k; i++) jw_float(w, r->lens_p[base + i]);
                jw_arr_end(w);
                jw_obj_end(w);
            }
            jw_arr_end(w);
        }
        jw_obj_end(w);
    }
    jw_arr_end(w);
}

int heed_run_export_json(const heed_run *r, const char *path, char *err, size_t err_size) {
    if (!r || !path) return HEED_ERR_INVALID_ARG;
    FILE *f = fopen(path, "wb");
    if (!f) return fail(err, err_size, HEED_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    jsonw w;
    jw_init(&w, f);
    jw_obj(&w);
    json_run_meta(&w, r);
    json_run_steps(&w, r);
    jw_obj_end(&w);
    fputc('\n', f);
    bool ok = !ferror(f);
    if (fclose(f) != 0) ok = false;
    return ok ? HEED_OK : fail(err, err_size, HEED_ERR_IO, "%s: write failed", path);
}

static const char *json_dtype(heed_dtype t) {
    switch (t) {
    case HEED_DT_F32: return "float32";
    case HEED_DT_I32: return "int32";
    case HEED_DT_F16: return "float16";
    case HEED_DT_U32: return "uint32";
    }
    return "?";
}

static void json_array(jsonw *w, const heed_array *a, uint64_t count) {
    jw_key(w, a->name);
    jw_obj(w);
    jw_key(w, "dtype"); jw_cstr(w, json_dtype(a->dtype));
    jw_key(w, "shape"); jw_arr(w);
    for (int d = 0; d < a->ndim; d++) jw_int(w, (int64_t)a->shape[d]);
    jw_arr_end(w);
    jw_key(w, "data"); jw_arr(w);
    for (uint64_t i = 0; i < count; i++) {
        switch (a->dtype) {
        case HEED_DT_F32: jw_float(w, ((const float *)a->data)[i]); break;
        case HEED_DT_I32: jw_int(w, ((const int32_t *)a->data)[i]); break;
        case HEED_DT_F16: jw_float(w, kern_f16_to_f32(((const uint16_t *)a->data)[i])); break;
        case HEED_DT_U32: jw_int(w, ((const uint32_t *)a->data)[i]); break;
        }
    }
    jw_arr_end(w);
    jw_obj_end(w);
}

int heed_json_write_arrays(const char *path, const heed_array *arrays, int n, char *err, size_t err_size) {
    if (!path || n < 0 || (n > 0 && !arrays)) return HEED_ERR_INVALID_ARG;
    for (int i = 0; i < n; i++) {
        uint64_t nb;
        if (!arrays[i].name || array_bytes(&arrays[i], &nb)) return HEED_ERR_INVALID_ARG;
    }
    FILE *f = fopen(path, "wb");
    if (!f) return fail(err, err_size, HEED_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    jsonw w;
    jw_init(&w, f);
    jw_obj(&w);
    for (int i = 0; i < n; i++) {
        uint64_t nb;
        array_bytes(&arrays[i], &nb);
        json_array(&w, &arrays[i], nb / dtype_size(arrays[i].dtype));
    }
    jw_obj_end(&w);
    fputc('\n', f);
    bool ok = !ferror(f);
    if (fclose(f) != 0) ok = false;
    return ok ? HEED_OK : fail(err, err_size, HEED_ERR_IO, "%s: write failed", path);
}
