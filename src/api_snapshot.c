/*
 * api_snapshot.c - the responses the web UI reads for one recorded run,
 * computed without a server for the exported offline viewer (contract:
 * api_snapshot in api.h): the same view functions, keyed as the server's
 * view cache keys them.
 */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "api_int.h"

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
/* A binary reply as {"$bin": base64} (the exported viewer decodes it). */
static json_t *bin_json(const char *d, size_t n) {
    char *o = malloc(4 * ((n + 2) / 3) + 1), *w = o;
    if (!o) return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)(unsigned char)d[i] << 16 | (i + 1 < n ? (uint32_t)(unsigned char)d[i + 1] << 8 : 0) |
                     (i + 2 < n ? (unsigned char)d[i + 2] : 0);
        *w++ = b64[v >> 18];
        *w++ = b64[(v >> 12) & 63];
        *w++ = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        *w++ = i + 2 < n ? b64[v & 63] : '=';
    }
    *w = 0;
    json_t *j = json_pack("{s:s}", "$bin", o);
    free(o);
    return j;
}

typedef struct snap {
    api_view_env *env; /* the model (or none) for labels and the lens */
    heed_run *run;
    heed_run_info ri;
    const char *id;
    json_t *map;
    size_t bytes, budget;
} snap;
/* Computes one view exactly as the server answers it and keeps it under the
 * key the server's view cache would use. False when it failed or would pass
 * the budget (then it is left out). */
/* Graph rows above this size go in sparse: weights under SNAP_MIN_WEIGHT
 * dropped, the rest as [index, weight, index, weight, ...]; the viewer's shim
 * expands them. A long run's graph is mostly tiny weights. */
#define SNAP_SPARSE_BYTES ((size_t)1 << 20)
#define SNAP_LENS_PAGE 16 /* steps per logit-lens request of the web UI */
#define SNAP_MIN_WEIGHT 1e-3

static json_t *sparse_rows(json_t *rows) {
    json_t *out = json_array();
    for (size_t t = 0; t < json_array_size(rows); t++) {
        json_t *row = json_array_get(rows, t), *sp = json_array();
        for (size_t k = 0; k < json_array_size(row); k++) {
            double w = json_number_value(json_array_get(row, k));
            if (w >= SNAP_MIN_WEIGHT) {
                json_array_append_new(sp, json_integer((json_int_t)k));
                json_array_append_new(sp, json_real(w));
            }
        }
        json_array_append_new(out, sp);
    }
    return out;
}

/* Computes one view exactly as the server answers it and keeps it under the
 * key the server's view cache would use. False when it failed or would pass
 * the budget (then it is left out). */
static bool snap_view(snap *s, const char *route, view_fn fn, const char *const *args) {
    char path[320];
    snprintf(path, sizeof path, "/api/runs/%s/%s", s->id, route);
    api_req rq = {.method = "GET", .path = path, .param = s->id, .args = args};
    api_reply rp = {0};
    fn(s->env, &rq, s->run, &s->ri, &rp);
    bool json = rp.content_type && !strcmp(rp.content_type, "application/json");
    json_t *v = rp.status != 200 || !rp.body ? NULL
                : json                       ? json_loadb(rp.body, rp.body_len, 0, NULL)
                                             : bin_json(rp.body, rp.body_len);
    size_t size = rp.body_len;
    if (v && fn == api_view_graph && size > SNAP_SPARSE_BYTES) {
        json_object_set_new(v, "prompt", sparse_rows(json_object_get(v, "prompt")));
        json_object_set_new(v, "output", sparse_rows(json_object_get(v, "output")));
        json_object_set_new(v, "$sparse", json_real(SNAP_MIN_WEIGHT));
        size = json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_REAL_PRECISION(7));
    }
    char *key = v && s->bytes + size <= s->budget ? api_view_key(&rq) : NULL;
    bool ok = key && !json_object_set_new(s->map, key, v);
    if (ok) s->bytes += size;
    else if (!key) json_decref(v);
    free(key);
    free(rp.body);
    return ok;
}

/* GET /api/runs/{id}'s document, rebuilt from the recording (api_int.h). */
json_t *api_run_doc(heed_run *run, const heed_model *model, const char *run_id, long long created) {
    heed_run_info ri_;
    heed_run_get_info(run, &ri_);
    const heed_run_info *ri = &ri_;
    bool labels = model != NULL;
    json_t *tokens = json_array(), *pids = json_array(), *oids = json_array(), *steps = json_array();
    for (int i = 0; i < ri->n_prompt + ri->n_output; i++) {
        int32_t id;
        const char *label;
        heed_run_token(run, i, &id, &label);
        json_array_append_new(tokens, json_pack("{s:i, s:s}", "id", id, "label", label));
        json_array_append_new(i < ri->n_prompt ? pids : oids, json_integer(id));
    }
    heed_attn_sel all = heed_attn_sel_all();
    heed_edge top[32];
    for (int t = 0; t < ri->n_output; t++) {
        heed_run_step st;
        heed_run_get_step(run, t, &st);
        int32_t id;
        const char *label;
        heed_run_token(run, ri->n_prompt + t, &id, &label);
        json_t *cand = json_array(), *att = json_array();
        for (int i = 0; i < st.n_cand && i < API_N_TOP; i++)
            json_array_append_new(cand, json_pack("{s:i, s:o?, s:f}", "id", st.cand[i].id, "label",
                                                  labels ? api_label_json(model, st.cand[i].id) : NULL, "prob",
                                                  st.cand[i].prob));
        int ne = heed_run_edges(run, &all, ri->n_prompt - 1 + t, 0.0f, 32, top, 32);
        for (int i = 0; i < ne; i++) json_array_append_new(att, json_pack("[i, f]", top[i].src, top[i].weight));
        json_array_append_new(steps, json_pack("{s:i, s:i, s:s, s:s, s:f, s:f, s:o, s:{s:o}}", "index", t, "id", st.id,
                                               "label", label, "text", label, "prob", st.prob, "logprob", st.logprob,
                                               "top", cand, "attention", "top", att));
    }
    const heed_sampler_params *sp = &ri->sampler;
    json_t *doc = json_pack("{s:s, s:s, s:I, s:s, s:s, s:{s:f, s:i, s:f, s:f, s:f, s:I}, s:i, s:i, s:i, s:s, s:o, s:o, "
                            "s:o, s:o, s:o}",
                            "id", run_id, "kind", "heed", "created", (json_int_t)created, "model", ri->model_file, "prompt",
                            ri->prompt_text, "params", "temperature", sp->temperature, "top_k", sp->top_k, "top_p",
                            sp->top_p, "min_p", sp->min_p, "repeat_penalty", sp->repeat_penalty, "seed",
                            (json_int_t)sp->seed, "max_tokens", ri->n_predict, "n_prompt", ri->n_prompt, "n_output",
                            ri->n_output, "stop", ri->eog ? "eog" : "length", "prompt_ids", pids, "output_ids", oids,
                            "tokens", tokens, "text", api_labels_text(run, ri->n_prompt, ri->n_output), "steps",
                            steps);
    return doc;
}

char *api_snapshot(heed_run *run, heed_model *model, size_t budget, char *err, size_t err_size) {
    api_view_env env = {.model = model};
    pthread_mutex_init(&env.lens_mu, NULL);
    snap s = {.env = &env, .run = run, .id = "run", .map = json_object(), .budget = budget};
    heed_run_get_info(run, &s.ri);
    const heed_run_info *ri = &s.ri;
    if (model) {
        heed_model_info mi;
        heed_model_get_info(model, &mi);
        env.model_id = ri->model_file;
        env.n_vocab = mi.n_vocab;
        if (mi.n_vocab != ri->n_vocab) env.model = NULL; /* not the run's model: no labels */
    }
    json_object_set_new(s.map, "/api/model",
                        json_pack("{s:s, s:s, s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:n, s:b, "
                                  "s:{s:i, s:i, s:i}}",
                                  "id", ri->model_file, "arch", ri->model_arch, "name", ri->model_name, "n_layer",
                                  ri->n_layer, "n_head", ri->n_head, "n_head_kv", ri->n_head_kv, "head_dim", ri->head_dim,
                                  "n_embd", ri->n_embd, "n_vocab", ri->n_vocab, "n_ctx", ri->n_ctx, "bos", ri->bos,
                                  "eos", ri->eos, "eot", ri->eot, "chat_template", "exported", 1, "limits",
                                  "max_tokens", 0, "max_prompt", 0, "attention_tokens_top_k", ri->attn_top_k));
    json_object_set_new(s.map, "/api/runs",
                        json_pack("{s:[{s:s, s:s, s:I, s:s, s:i, s:i, s:s, s:s}], s:i, s:i, s:i}", "runs", "id", s.id,
                                  "kind", "heed", "created", (json_int_t)0, "model", ri->model_file, "n_prompt",
                                  ri->n_prompt, "n_output", ri->n_output, "stop", ri->eog ? "eog" : "length", "preview",
                                  ri->prompt_text, "total", 1, "limit", 100, "offset", 0));
    json_object_set_new(s.map, "/api/runs/run", api_run_doc(run, env.model, s.id, 0));
    /* the views, most wanted first, while the budget lasts: the graph's mean
     * and the other tabs' data, then per layer, then per head (each level
     * whole or not at all: a viewer with some heads and not others misleads).
     * Up to 2048 positions the dense float16 matrices go in too: the text
     * view reads them and the viewer pools heatmap windows from them. */
    char lbuf[16], hbuf[16], tbuf[16];
    const char *const none[] = {NULL}, *const step[] = {"step", tbuf, NULL},
                      *const graph[3][5] = {{NULL}, {"layer", lbuf, NULL}, {"layer", lbuf, "head", hbuf, NULL}},
                      *const dense[3][9] = {{"format", "bin", "dtype", "float16", NULL},
                                            {"format", "bin", "dtype", "float16", "layer", lbuf, NULL},
                                            {"format", "bin", "dtype", "float16", "layer", lbuf, "head", hbuf, NULL}};
    size_t before = s.bytes;
    bool ok = snap_view(&s, "graph", api_view_graph, none), small = ri->n_pos <= 2048;
    if (!ok) snprintf(err, err_size, "the run's token graph does not fit in %zu bytes, or cannot be computed", budget);
    size_t one_graph = s.bytes - before, one_dense = (size_t)ri->n_pos * (size_t)ri->n_pos * 8 / 3 + 128;
    /* the lens in the pages the viewer asks for (web/src/views/lens.ts) */
    char fbuf[16], tobuf[16];
    const char *const lens_page[] = {"from", fbuf, "to", tobuf, NULL};
    for (int t = 0; ri->lens_top_k > 0 && t < ri->n_output; t += SNAP_LENS_PAGE) {
        snprintf(fbuf, sizeof fbuf, "%d", t);
        snprintf(tobuf, sizeof tobuf, "%d", t + SNAP_LENS_PAGE); /* as the viewer asks: the server cuts it */
        if (!snap_view(&s, "logit-lens", api_view_lens, lens_page)) break;
    }
    snap_view(&s, "stats", api_view_stats, none);
    for (int t = 0; t < ri->n_output; t++) {
        snprintf(tbuf, sizeof tbuf, "%d", t);
        snap_view(&s, "candidates", api_view_candidates, step);
    }
    if (!small || !snap_view(&s, "attention", api_view_attention, dense[0])) snap_view(&s, "heatmap", api_view_heatmap, none);
    for (int level = 1; ok && level <= 4; level++) { /* layer graphs, head graphs, layer matrices, head matrices */
        bool heads = level == 2 || level == 4, matrices = level >= 3;
        size_t n = (size_t)ri->n_layer * (heads ? (size_t)ri->n_head : 1);
        if ((matrices && !small) || s.bytes + n * (matrices ? one_dense : one_graph) > s.budget) continue;
        for (int l = 0; l < ri->n_layer; l++)
            for (int h = 0; h < (heads ? ri->n_head : 1); h++) {
                snprintf(lbuf, sizeof lbuf, "%d", l);
                snprintf(hbuf, sizeof hbuf, "%d", h);
                if (matrices) snap_view(&s, "attention", api_view_attention, dense[heads ? 2 : 1]);
                else snap_view(&s, "graph", api_view_graph, graph[heads ? 2 : 1]);
            }
    }
    /* 7 digits: a viewer's precision (the server's views keep 9) */
    char *text = ok ? json_dumps(s.map, JSON_COMPACT | JSON_ESCAPE_SLASH | JSON_REAL_PRECISION(7)) : NULL;
    if (ok && !text) snprintf(err, err_size, "out of memory");
    json_decref(s.map);
    heed_ctx_free(env.lens_ctx);
    pthread_mutex_destroy(&env.lens_mu);
    return text;
}

/* ------------------------------------------------------------ lifetime */
