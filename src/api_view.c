/*
 * api_view.c - the views of a stored run (attention rows, columns and
 * matrices, the token graph, heatmap windows, candidates, the logit lens,
 * statistics) as JSON or binary replies. A view takes the run, the request's
 * arguments and an api_view_env (labels, the lens's scratch), never the
 * server, so the offline export computes the same replies (api_snapshot.c).
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

/* layer, head and agg against the run's geometry. */
static bool parse_sel(const api_req *rq, const heed_run_info *ri, view_args *v, api_reply *rp) {
    static const char *const aggs[] = {"mean", "max"}, *const measures[] = {"attention", "value"};
    long layer = -1, head = -1;
    int agg = api_arg_enum(rq, "agg", aggs, 2, rp), measure = agg < 0 ? -1 : api_arg_enum(rq, "measure", measures, 2, rp);
    if (measure == 1 && !ri->has_value_norms) {
        api_error(rp, 400, "measure", "invalid_parameter", "measure=value needs the run's value norms, which this run "
                  "does not hold (recorded by an older heed, or imported from a trace)");
        return false;
    }
    if (agg < 0 || measure < 0 || !api_arg_int(rq, "layer", 0, ri->n_layer - 1, &layer, rp) ||
        !api_arg_int(rq, "head", 0, ri->n_head - 1, &head, rp))
        return false;
    v->layer = (int)layer;
    v->head = (int)head;
    v->sel = heed_attn_sel_all();
    v->sel.agg = agg ? HEED_AGG_MAX : HEED_AGG_MEAN;
    v->sel.measure = measure ? HEED_MEASURE_VALUE : HEED_MEASURE_ATTENTION;
    if (layer >= 0) v->sel.layers = &v->layer, v->sel.n_layers = 1;
    if (head >= 0) v->sel.heads = &v->head, v->sel.n_heads = 1;
    return true;
}

static void view_error(api_reply *rp, int rc) {
    if (rc == HEED_ERR_UNSUPPORTED)
        api_error(rp, 400, NULL, "view_unsupported", "the run does not hold the attention this view needs");
    else if (rc == HEED_ERR_NEED_MODEL || rc == HEED_ERR_MODEL_MISMATCH)
        api_error(rp, 409, NULL, "model_needed", "this view needs the model that made the run");
    else api_error(rp, 500, NULL, "engine_error", "view failed: %s", heed_strerror(rc));
}

/* The binary form (docs/API.md): one JSON header line (extra's members, if
 * any (taken), then dtype and shape; reals to 9 significant digits, as the
 * JSON replies), then the raw little-endian values. x86-64 and ARM64 hosts
 * are little-endian already. */
static void reply_binary(api_reply *rp, const float *x, int rows, int cols, bool f16, json_t *extra) {
    json_t *hj = extra ? extra : json_object();
    json_object_set_new(hj, "dtype", json_string(f16 ? "float16" : "float32"));
    json_object_set_new(hj, "shape", json_pack("[i, i]", rows, cols));
    char *hs = json_dumps(hj, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(9));
    json_decref(hj);
    size_t hn = (hs ? strlen(hs) : 2) + 1; /* the header line, its LF included */
    size_t n = (size_t)rows * (size_t)cols, esz = f16 ? 2 : 4;
    char *body = malloc(hn + n * esz);
    if (body) {
        memcpy(body, hs ? hs : "{}", hn - 1);
        body[hn - 1] = '\n';
        if (f16) {
            for (size_t i = 0; i < n; i++) {
                uint16_t h = heed_f32_to_f16(x[i]);
                memcpy(body + hn + 2 * i, &h, 2);
            }
        } else if (n) {
            memcpy(body + hn, x, n * 4);
        }
    }
    free(hs);
    api_reply_body(rp, body, hn + n * esz, "application/octet-stream");
}

/* Matrices up to this many entries are JSON unless format=bin is asked. */
#define API_JSON_MAX_ENTRIES 4096
/* The whole n_pos x n_pos matrix of the selection. */
static void attn_matrix(heed_run *run, const heed_run_info *ri, const view_args *v, int format, bool f16,
                        api_reply *rp) {
    int n = ri->n_pos;
    float *m = malloc(sizeof(float) * (size_t)n * (size_t)n + 1);
    int rc = m ? heed_run_attn_matrix(run, &v->sel, m) : HEED_ERR_NOMEM;
    if (rc) view_error(rp, rc);
    else if (format == 2 || (format == 0 && (size_t)n * n > API_JSON_MAX_ENTRIES)) reply_binary(rp, m, n, n, f16, NULL);
    else
        api_reply_json(rp, 200, json_pack("{s:s, s:[i, i], s:o}", "dtype", "float32", "shape", n, n, "data",
                                      api_floats_json(m, n * n)));
    free(m);
}

/* The row of query position p (what p attended to: {"pos","row"[p+1]}), or
 * with column the column of key position p (how much each later query
 * attended to p: {"key","col"[n_pos-p]}, entry i for query p+i). */
static void attn_line(api_reply *rp, heed_run *run, const heed_run_info *ri, const view_args *v, int p, bool column) {
    float *x = malloc(sizeof(float) * (size_t)ri->n_pos);
    int rc = !x ? HEED_ERR_NOMEM : column ? heed_run_attn_col(run, &v->sel, p, x) : heed_run_attn_row(run, &v->sel, p, x);
    if (rc) view_error(rp, rc);
    else if (column) api_reply_json_prec(rp, 200, json_pack("{s:i, s:o}", "key", p, "col", api_floats_json(x, ri->n_pos - p)), 9);
    else api_reply_json_prec(rp, 200, json_pack("{s:i, s:o}", "pos", p, "row", api_floats_json(x, p + 1)), 9);
    free(x);
}

/* The row of one step: raw or the visualizer's split normalization, with
 * edges (of what is shown: split weights index positions like a row) when
 * threshold or topk is given. */
static void attn_step(api_reply *rp, heed_run *run, const heed_run_info *ri, const view_args *v, int step,
                      bool split, double threshold, long topk, bool edges) {
    int pos = ri->n_prompt - 1 + step;
    json_t *j = json_pack("{s:i, s:i}", "step", step, "pos", pos);
    int rc;
    /* the split view, prompt then outputs: indexed by position like a row */
    float *split_w = split ? malloc(sizeof(float) * ((size_t)ri->n_prompt + (size_t)step + 1)) : NULL;
    if (split) {
        float *in = split_w, *out = in + ri->n_prompt;
        float in_mass = 0, out_mass = 0;
        rc = in ? heed_run_step_view(run, &v->sel, step, 0, in, out, &in_mass, &out_mass) : HEED_ERR_NOMEM;
        if (!rc) json_object_set_new(j, "split", api_split_json(in, ri->n_prompt, step, in_mass, out_mass));
    } else {
        float *row = malloc(sizeof(float) * ((size_t)pos + 1));
        rc = row ? heed_run_attn_row(run, &v->sel, pos, row) : HEED_ERR_NOMEM;
        if (!rc) json_object_set_new(j, "row", api_floats_json(row, pos + 1));
        free(row);
    }
    if (!rc && edges) {
        heed_edge *e = malloc(sizeof *e * ((size_t)pos + 1));
        int n = !e ? HEED_ERR_NOMEM
                : split ? heed_edges(split_w, pos + 1, (float)threshold, (int)topk, e, pos + 1)
                        : heed_run_edges(run, &v->sel, pos, (float)threshold, (int)topk, e, pos + 1);
        json_t *arr = json_array();
        for (int i = 0; i < n; i++) json_array_append_new(arr, json_pack("[i, f]", e[i].src, e[i].weight));
        json_object_set_new(j, "edges", arr);
        rc = n < 0 ? n : 0;
        free(e);
    }
    free(split_w);
    if (rc) {
        json_decref(j);
        view_error(rp, rc);
    } else {
        api_reply_json(rp, 200, j);
    }
}

int api_view_attention(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp) {
    static const char *const norms[] = {"raw", "split"}, *const formats[] = {"auto", "json", "bin"},
                             *const dtypes[] = {"float32", "float16"};
    view_args v;
    long step = -1, topk = 0;
    double threshold = 0;
    int norm, format, dtype;
    if (!parse_sel(rq, ri, &v, rp) || (norm = api_arg_enum(rq, "norm", norms, 2, rp)) < 0 ||
        (format = api_arg_enum(rq, "format", formats, 3, rp)) < 0 || (dtype = api_arg_enum(rq, "dtype", dtypes, 2, rp)) < 0 ||
        !api_arg_float(rq, "threshold", 0, 1, &threshold, rp) || !api_arg_int(rq, "topk", 0, 1L << 30, &topk, rp))
        return 0;
    if (ri->n_output > 0 && !api_arg_int(rq, "step", 0, ri->n_output - 1, &step, rp)) return 0;
    if (ri->n_output == 0 && api_arg(rq, "step")) {
        api_error(rp, 400, "step", "invalid_parameter", "the run has no steps");
        return 0;
    }
    long pos = -1, key = -1;
    if (!api_arg_int(rq, "pos", 0, ri->n_pos - 1, &pos, rp) || !api_arg_int(rq, "key", 0, ri->n_pos - 1, &key, rp)) return 0;
    if ((step >= 0) + (pos >= 0) + (key >= 0) > 1) {
        api_error(rp, 400, "pos", "invalid_parameter", "give at most one of step, pos and key");
        return 0;
    }
    if (pos >= 0 || key >= 0) attn_line(rp, run, ri, &v, pos >= 0 ? (int)pos : (int)key, key >= 0);
    else if (step < 0) attn_matrix(run, ri, &v, format, dtype == 1, rp);
    else attn_step(rp, run, ri, &v, (int)step, norm == 1, threshold, topk, api_arg(rq, "threshold") || api_arg(rq, "topk"));
    return 0;
}

/* Every step's split view at once (what the web UI's token graph draws), or
 * those of the steps [from, to) only: a long run's graph is n_output rows of
 * up to n_pos weights, which a client reads a range at a time. With a range
 * the reply names it ("from", "to"); its rows are those steps' rows.
 * format=bin: the same numbers as float32, a (to - from) x (n_prompt +
 * to - 1) matrix after a header line (docs/API.md): the web UI's reads,
 * which jansson would spend most of their time writing as JSON. */
int api_view_graph(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp) {
    static const char *const formats[] = {"json", "bin"};
    view_args v;
    long from = 0, to = ri->n_output;
    int format;
    if (!parse_sel(rq, ri, &v, rp) || (format = api_arg_enum(rq, "format", formats, 2, rp)) < 0 ||
        !api_arg_int(rq, "from", 0, ri->n_output, &from, rp) || !api_arg_int(rq, "to", 0, ri->n_output, &to, rp))
        return 0;
    if (from > to) {
        api_error(rp, 400, "to", "invalid_parameter", "the step range is reversed (from <= to)");
        return 0;
    }
    bool ranged = api_arg(rq, "from") || api_arg(rq, "to"), bin = format == 1;
    int np = ri->n_prompt, n = ri->n_output, rc = 0;
    /* bin: row i (step from + i) is its prompt part, then its from + i
     * outputs, then zeros; json: one row's scratch */
    size_t cols = (size_t)np + (size_t)(to > 0 ? to - 1 : 0), rows = bin ? (size_t)(to - from) : 1;
    float *w = bin ? calloc(rows * cols + 1, sizeof(float)) : malloc(sizeof(float) * ((size_t)np + (size_t)n + 1));
    json_t *prompt = json_array(), *output = json_array(), *pmass = json_array(), *omass = json_array();
    if (!w) rc = HEED_ERR_NOMEM;
    for (int t = (int)from; t < (int)to && !rc; t++) {
        float im = 0, om = 0, *row = bin ? w + (size_t)(t - from) * cols : w;
        if ((rc = heed_run_step_view(run, &v.sel, t, 0, row, row + np, &im, &om))) break;
        if (!bin) {
            json_array_append_new(prompt, api_floats_json(row, np));
            json_array_append_new(output, api_floats_json(row + np, t));
        }
        json_array_append_new(pmass, json_real(im));
        json_array_append_new(omass, json_real(om));
    }
    json_t *j = bin ? json_pack("{s:i, s:i, s:i, s:i, s:o, s:o}", "n_prompt", np, "n_output", n, "from", (int)from, "to",
                                (int)to, "prompt_mass", pmass, "output_mass", omass)
                    : json_pack("{s:i, s:i, s:o, s:o, s:o, s:o}", "n_prompt", np, "n_output", n, "prompt", prompt,
                                "output", output, "prompt_mass", pmass, "output_mass", omass);
    if (bin) json_decref(prompt), json_decref(output);
    else if (ranged) {
        json_object_set_new(j, "from", json_integer(from));
        json_object_set_new(j, "to", json_integer(to));
    }
    if (rc) {
        json_decref(j);
        view_error(rp, rc);
    } else if (bin) {
        reply_binary(rp, w, (int)rows, (int)cols, false, j);
    } else {
        api_reply_json_prec(rp, 200, j, 9);
    }
    free(w);
    return 0;
}

/* A window of the attention matrix pooled to at most size x size cells
 * (docs/API.md): the zoomable heatmap and the per-head thumbnails. */
int api_view_heatmap(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp) {
    static const char *const pools[] = {"max", "mean"}, *const formats[] = {"json", "bin"},
                             *const dtypes[] = {"float32", "float16"};
    view_args v;
    long q0 = 0, q1 = ri->n_pos, k0 = 0, k1 = ri->n_pos, size = 256;
    int pool, format, dtype;
    if (!parse_sel(rq, ri, &v, rp) || (pool = api_arg_enum(rq, "pool", pools, 2, rp)) < 0 ||
        (format = api_arg_enum(rq, "format", formats, 2, rp)) < 0 || (dtype = api_arg_enum(rq, "dtype", dtypes, 2, rp)) < 0 ||
        !api_arg_int(rq, "q0", 0, ri->n_pos, &q0, rp) || !api_arg_int(rq, "q1", 0, ri->n_pos, &q1, rp) ||
        !api_arg_int(rq, "k0", 0, ri->n_pos, &k0, rp) || !api_arg_int(rq, "k1", 0, ri->n_pos, &k1, rp) ||
        !api_arg_int(rq, "size", 1, 1024, &size, rp))
        return 0;
    if (q0 >= q1 || k0 >= k1) {
        api_error(rp, 400, q0 >= q1 ? "q1" : "k1", "invalid_parameter", "the window is empty (q0 < q1 and k0 < k1)");
        return 0;
    }
    long bq = (q1 - q0 + size - 1) / size, bk = (k1 - k0 + size - 1) / size;
    long rows = (q1 - q0 + bq - 1) / bq, cols = (k1 - k0 + bk - 1) / bk;
    float *cell = malloc(sizeof(float) * (size_t)(rows * cols));
    int rc = cell ? heed_run_attn_pool(run, &v.sel, (int)q0, (int)q1, (int)k0, (int)k1, (int)bq, (int)bk, pool == 0, cell)
                  : HEED_ERR_NOMEM;
    if (rc) {
        view_error(rp, rc);
    } else {
        json_t *head = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:b}", "q0", (int)q0, "q1", (int)q1,
                                 "k0", (int)k0, "k1", (int)k1, "bq", (int)bq, "bk", (int)bk, "rows", (int)rows,
                                 "cols", (int)cols, "pool", pools[pool], "exact", bq == 1 && bk == 1);
        if (format == 1) {
            reply_binary(rp, cell, (int)rows, (int)cols, dtype == 1, head);
        } else {
            json_object_set_new(head, "data", api_floats_json(cell, (int)(rows * cols)));
            api_reply_json_prec(rp, 200, head, 9);
        }
    }
    free(cell);
    return 0;
}

/* The stored next-token candidates of one step (the model's own
 * distribution before sampling), best first: the sampling explorer's data. */
int api_view_candidates(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp) {
    long step = -1;
    if (!api_arg_int(rq, "step", 0, ri->n_output - 1, &step, rp)) return 0;
    if (step < 0) {
        api_error(rp, 400, "step", "invalid_parameter", ri->n_output ? "step is required" : "the run has no steps");
        return 0;
    }
    heed_run_step st;
    int rc = heed_run_get_step(run, (int)step, &st);
    if (rc) {
        view_error(rp, rc);
        return 0;
    }
    bool labels = !strcmp(ri->model_file, env->model_id) && ri->n_vocab == env->n_vocab;
    json_t *cands = json_array();
    for (int i = 0; i < st.n_cand; i++)
        json_array_append_new(cands, json_pack("{s:i, s:o?, s:f, s:f}", "id", st.cand[i].id, "label",
                                               labels ? api_label_json(env->model, st.cand[i].id) : NULL, "logit",
                                               st.cand[i].logit, "prob", st.cand[i].prob));
    /* a run from another engine may not know them: NaN is written as null */
    api_reply_json_prec(rp, 200, json_pack("{s:i, s:i, s:o, s:o, s:o}", "step", (int)step, "chosen", st.id, "prob",
                                       isfinite(st.prob) ? json_real(st.prob) : json_null(), "entropy",
                                       isfinite(st.entropy) ? json_real(st.entropy) : json_null(), "candidates", cands),
                        9);
    return 0;
}

/* Computes the lens of steps t0 .. t1-1 where it is still to compute, with
 * the served model (it must be the run's). Returns 0, or -1 with rp filled. */
static int lens_ensure(api_view_env *env, heed_run *run, const heed_run_info *ri, int t0, int t1, api_reply *rp) {
    if (ri->lens_pending == 0) return 0;
    if (!env->model || heed_run_lens_model_ok(run, env->model)) {
        api_error(rp, 409, NULL, "model_needed",
                  "the logit lens of this run is computed with the model that made it (%s); this server %s",
                  ri->model_file, env->model ? "runs another model" : "has none");
        return -1;
    }
    int rc = HEED_ERR_NOMEM;
    pthread_mutex_lock(&env->lens_mu);
    if (!env->lens_ctx) rc = heed_lens_ctx_new(env->model, env->n_threads, &env->lens_ctx);
    if (env->lens_ctx) rc = heed_run_lens_compute(run, env->model, env->lens_ctx, t0, t1);
    pthread_mutex_unlock(&env->lens_mu);
    if (rc) {
        view_error(rp, rc);
        return -1;
    }
    return 0;
}

/* The logit lens of steps from .. to-1 (default: all). A lens recorded on
 * demand (the default) is computed here for the steps asked, so a client
 * can fetch the visible steps first and the rest after. */
int api_view_lens(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp) {
    if (ri->lens_top_k <= 0) {
        api_error(rp, 400, NULL, "view_unsupported", "the run was recorded without a logit lens");
        return 0;
    }
    long from = 0, to = ri->n_output;
    if (!api_arg_int(rq, "from", 0, ri->n_output, &from, rp) || !api_arg_int(rq, "to", 0, 1L << 30, &to, rp)) return 0;
    if (to < from) {
        api_error(rp, 400, "to", "invalid_parameter", "to must be >= from");
        return 0;
    }
    if (to > ri->n_output) to = ri->n_output; /* a page past the end is cut to it */
    if (lens_ensure(env, run, ri, (int)from, (int)to, rp)) return 0;
    /* labels come from the served model when the run was made with it */
    bool labels = env->model && !strcmp(ri->model_file, env->model_id) && ri->n_vocab == env->n_vocab;
    json_t *steps = json_array();
    for (int t = (int)from; t < (int)to; t++) {
        heed_run_step st;
        heed_run_get_step(run, t, &st);
        json_t *layers = json_array();
        for (int l = 0; l < ri->n_layer; l++) {
            const int32_t *ids;
            const float *probs;
            int n;
            if (heed_run_lens(run, t, l, &ids, &probs, &n)) continue;
            json_t *top = json_array();
            for (int i = 0; i < n && ids[i] >= 0; i++)
                json_array_append_new(top, json_pack("{s:i, s:o?, s:f}", "id", ids[i], "label",
                                                     labels ? api_label_json(env->model, ids[i]) : NULL, "prob", probs[i]));
            json_array_append_new(layers, json_pack("{s:i, s:b, s:o}", "layer", l, "match", n > 0 && ids[0] == st.id,
                                                    "top", top));
        }
        json_array_append_new(steps, json_pack("{s:i, s:i, s:o}", "step", t, "id", st.id, "layers", layers));
    }
    api_reply_json(rp, 200, json_pack("{s:i, s:i, s:i, s:i, s:i, s:o}", "n_layer", ri->n_layer, "n_output", ri->n_output,
                                  "top_k", ri->lens_top_k, "from", (int)from, "to", (int)to, "steps", steps));
    return 0;
}

/* A mixture-of-experts run's routing for positions from .. to-1 (default
 * all), and each layer's load over the whole run: how many positions chose
 * each expert, and the sum of the weights they gave it. */
int api_view_experts(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp) {
    (void)env;
    if (ri->n_expert <= 0) {
        api_error(rp, 400, NULL, "view_unsupported", "the run's model (%s) is not a mixture of experts", ri->model_arch);
        return 0;
    }
    long from = 0, to = ri->n_pos;
    if (!api_arg_int(rq, "from", 0, ri->n_pos, &from, rp) || !api_arg_int(rq, "to", 0, 1L << 30, &to, rp)) return 0;
    if (to < from) {
        api_error(rp, 400, "to", "invalid_parameter", "to must be >= from");
        return 0;
    }
    if (to > ri->n_pos) to = ri->n_pos;
    const int K = ri->n_expert_used, X = ri->n_expert;
    json_t *positions = json_array(), *load = json_array();
    for (int p = (int)from; p < (int)to; p++) {
        json_t *layers = json_array();
        for (int l = 0; l < ri->n_layer; l++) {
            const int32_t *ids;
            const float *w;
            if (heed_run_experts(run, p, l, &ids, &w) != K) break;
            json_t *ji = json_array(), *jw = json_array();
            for (int s = 0; s < K; s++) {
                json_array_append_new(ji, json_integer(ids[s]));
                json_array_append_new(jw, json_real(w[s]));
            }
            json_array_append_new(layers, json_pack("{s:o, s:o}", "ids", ji, "weights", jw));
        }
        json_array_append_new(positions, json_pack("{s:i, s:o}", "pos", p, "layers", layers));
    }
    long *count = calloc((size_t)X, sizeof *count);
    double *mass = calloc((size_t)X, sizeof *mass);
    if (!count || !mass) {
        free(count), free(mass);
        json_decref(positions), json_decref(load);
        api_error(rp, 500, NULL, "out_of_memory", "out of memory");
        return 0;
    }
    for (int l = 0; l < ri->n_layer; l++) {
        memset(count, 0, sizeof *count * (size_t)X);
        memset(mass, 0, sizeof *mass * (size_t)X);
        for (int p = 0; p < ri->n_pos; p++) {
            const int32_t *ids;
            const float *w;
            if (heed_run_experts(run, p, l, &ids, &w) != K) continue;
            for (int s = 0; s < K; s++) count[ids[s]]++, mass[ids[s]] += w[s];
        }
        json_t *jc = json_array(), *jm = json_array();
        for (int e = 0; e < X; e++) {
            json_array_append_new(jc, json_integer(count[e]));
            json_array_append_new(jm, json_real(mass[e]));
        }
        json_array_append_new(load, json_pack("{s:i, s:o, s:o}", "layer", l, "count", jc, "weight", jm));
    }
    free(count), free(mass);
    api_reply_json(rp, 200, json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:o, s:o}", "n_expert", X, "n_used", K, "n_layer",
                                      ri->n_layer, "n_pos", ri->n_pos, "from", (int)from, "to", (int)to, "positions",
                                      positions, "load", load));
    return 0;
}

/* A step's probability of token id from its candidates, or -1 when the id
 * is not among them (then it is below the smallest candidate's). */
static double cand_prob(const heed_run_step *s, int32_t id) {
    for (int i = 0; i < s->n_cand; i++)
        if (s->cand[i].id == id) return s->cand[i].prob;
    return -1;
}

/* Per step, how this run's next-token distribution differs from the base
 * run's (docs/ANALYSIS.md, "Effects"): chosen tokens, the first step they
 * differ, the base's chosen token's probability in both, and the KL
 * divergence KL(base || run) over the tokens both runs list among their
 * candidates plus one bucket for the rest: exact masses on a partition, so
 * a lower bound of the full divergence. */
int api_view_effects(heed_run *run, heed_run *base, const char *base_id, api_reply *rp) {
    heed_run_info ri, bi;
    heed_run_get_info(run, &ri);
    heed_run_get_info(base, &bi);
    if (strcmp(ri.model_file, bi.model_file) || ri.meta_hash != bi.meta_hash || ri.n_prompt != bi.n_prompt) {
        api_error(rp, 400, "base", "invalid_parameter", "the base run was made with another model or prompt");
        return 0;
    }
    for (int i = 0; i < ri.n_prompt; i++) {
        int32_t a, b;
        heed_run_token(run, i, &a, NULL);
        heed_run_token(base, i, &b, NULL);
        if (a != b) {
            api_error(rp, 400, "base", "invalid_parameter", "the base run's prompt differs at position %d", i);
            return 0;
        }
    }
    int n = ri.n_output < bi.n_output ? ri.n_output : bi.n_output, first_diff = -1;
    json_t *steps = json_array();
    double kl_sum = 0;
    for (int t = 0; t < n; t++) {
        heed_run_step s, b;
        heed_run_get_step(run, t, &s);
        heed_run_get_step(base, t, &b);
        double in_both_b = 0, in_both_r = 0, kl = 0;
        for (int i = 0; i < b.n_cand; i++) {
            double pr = cand_prob(&s, b.cand[i].id), pb = b.cand[i].prob;
            if (pr < 0) continue;
            in_both_b += pb, in_both_r += pr;
            if (pb > 0) kl += pb * log(pb / (pr > 0 ? pr : 1e-300));
        }
        double ob = 1 - in_both_b, orr = 1 - in_both_r;
        if (ob > 1e-12) kl += ob * log(ob / (orr > 1e-300 ? orr : 1e-300));
        if (kl < 0) kl = 0; /* rounding */
        kl_sum += kl;
        if (first_diff < 0 && s.id != b.id) first_diff = t;
        double p_run = cand_prob(&s, b.id);
        double below = s.n_cand ? s.cand[s.n_cand - 1].prob : 1;
        json_array_append_new(steps, json_pack("{s:i, s:i, s:i, s:b, s:f, s:f, s:o, s:o}", "step", t, "base_id", b.id,
                                               "id", s.id, "differs", s.id != b.id, "kl_lower_bound", kl,
                                               "base_token_prob_base", (double)b.prob, "base_token_prob",
                                               p_run >= 0 ? json_real(p_run) : json_null(), "base_token_prob_below",
                                               p_run >= 0 ? json_null() : json_real(below)));
    }
    api_reply_json(rp, 200, json_pack("{s:s, s:i, s:o, s:f, s:o}", "base", base_id, "n_steps", n, "first_diff",
                                      first_diff >= 0 ? json_integer(first_diff) : json_null(), "mean_kl_lower_bound",
                                      n ? kl_sum / n : 0.0, "steps", steps));
    return 0;
}

/* Attention rollout of query position pos (default the last), docs/ANALYSIS.md. */
int api_view_rollout(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp) {
    (void)env;
    long pos = ri->n_pos - 1;
    if (ri->n_pos < 1 || !api_arg_int(rq, "pos", 0, ri->n_pos - 1, &pos, rp)) {
        if (ri->n_pos < 1) api_error(rp, 400, "pos", "invalid_parameter", "the run has no positions");
        return 0;
    }
    float *out = malloc(sizeof(float) * (size_t)(pos + 1));
    int rc = out ? heed_run_rollout(run, (int)pos, out) : HEED_ERR_NOMEM;
    if (rc) {
        free(out);
        if (rc == HEED_ERR_UNSUPPORTED) api_error(rp, 400, NULL, "view_unsupported", "the run keeps no exact rows");
        else api_error(rp, 500, NULL, "internal", "%s", heed_strerror(rc));
        return 0;
    }
    json_t *arr = json_array();
    for (long k = 0; k <= pos; k++) json_array_append_new(arr, json_real(out[k]));
    free(out);
    api_reply_json(rp, 200, json_pack("{s:i, s:o}", "pos", (int)pos, "rollout", arr));
    return 0;
}

static json_t *token_stats_json(heed_run *run, const heed_run_info *ri, const heed_attn_sel *sel, int *rc) {
    json_t *arr = json_array();
    for (int p = 0; p < ri->n_pos && !*rc; p++) {
        heed_token_stats ts;
        if ((*rc = heed_run_token_stats(run, sel, p, &ts))) break;
        json_array_append_new(arr, json_pack("{s:i, s:f, s:f, s:f, s:f, s:f, s:s, s:o}", "pos", p, "entropy",
                                             ts.entropy, "sink", ts.sink, "local", ts.local, "mid", ts.mid, "far",
                                             ts.far, "zone", heed_zone_name(ts.zone), "fingerprint",
                                             api_floats_json(ts.fingerprint, HEED_FINGERPRINT_DIM)));
    }
    return arr;
}

static json_t *head_types_json(heed_run *run, const heed_run_info *ri, int *rc) {
    json_t *arr = json_array();
    heed_head_type *ht = malloc(sizeof *ht * (size_t)ri->n_layer * (size_t)ri->n_head);
    *rc = ht ? heed_run_head_types(run, ht) : HEED_ERR_NOMEM;
    for (int i = 0; !*rc && i < ri->n_layer * ri->n_head; i++)
        json_array_append_new(arr, json_pack("{s:i, s:i, s:f, s:f, s:f, s:f, s:s}", "layer", i / ri->n_head, "head",
                                             i % ri->n_head, "prev", ht[i].prev, "induction", ht[i].induction, "sink",
                                             ht[i].sink, "local", ht[i].local, "kind", heed_head_kind_name(ht[i].kind)));
    free(ht);
    return arr;
}

int api_view_stats(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp) {
    view_args v;
    if (!parse_sel(rq, ri, &v, rp)) return 0;
    int rc = 0;
    json_t *tokens = token_stats_json(run, ri, &v.sel, &rc), *heads = rc ? NULL : head_types_json(run, ri, &rc);
    float *imp = rc ? NULL : malloc(sizeof(float) * (size_t)ri->n_prompt);
    if (!rc) rc = imp ? heed_run_input_importance(run, &v.sel, imp) : HEED_ERR_NOMEM;
    json_t *j = json_pack("{s:o, s:o*, s:o*}", "tokens", tokens, "head_types", heads, "input_importance",
                          rc ? NULL : api_floats_json(imp, ri->n_prompt));
    free(imp);
    if (rc) {
        json_decref(j);
        view_error(rp, rc);
    } else {
        api_reply_json(rp, 200, j);
    }
    return 0;
}

static int cmp_pair(const void *x, const void *y) {
    const char *const *p = x, *const *q = y;
    int c = strcmp(p[0], q[0]);
    return c ? c : strcmp(p[1] ? p[1] : "", q[1] ? q[1] : "");
}

/* The cache key: the path and the arguments sorted by name, so the same
 * view asked with its arguments in another order is the same entry. */
char *api_view_key(const api_req *rq) {
    const char *pairs[2 * API_MAX_ARGS];
    int n = 0;
    for (int i = 0; rq->args && rq->args[i] && n < API_MAX_ARGS; i += 2, n++) {
        pairs[2 * n] = rq->args[i];
        pairs[2 * n + 1] = rq->args[i + 1];
    }
    qsort(pairs, (size_t)n, 2 * sizeof *pairs, cmp_pair);
    size_t len = strlen(rq->path) + 2;
    for (int i = 0; i < 2 * n; i++) len += (pairs[i] ? strlen(pairs[i]) : 0) + 1;
    char *k = malloc(len);
    if (!k) return NULL;
    size_t off = (size_t)snprintf(k, len, "%s", rq->path);
    for (int i = 0; i < n; i++)
        off += (size_t)snprintf(k + off, len - off, "%c%s=%s", i ? '&' : '?', pairs[2 * i],
                                pairs[2 * i + 1] ? pairs[2 * i + 1] : "");
    return k;
}

/* Does env's model make this run (labels, the lens, re-runs)? */
static bool own_model(const api_view_env *env, heed_run *run, const heed_run_info *ri) {
    return env->model && !strcmp(ri->model_file, env->model_id) && ri->n_vocab == env->n_vocab &&
           heed_run_lens_model_ok(run, env->model) == HEED_OK;
}

static json_t *label_of(const api_view_env *env, int32_t id) {
    return env->model ? api_label_json(env->model, id) : json_null();
}

/* GET /api/runs/{id}/verify?step=t&k=5 (and the selection of the row the
 * sources are ranked by, measure included): the ablation check of step t's
 * heaviest sources (heed_run_verify_sources). Needs this server's model. */
int api_view_verify(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp) {
    view_args v;
    long step = -1, k = 5;
    if (!parse_sel(rq, ri, &v, rp)) return 0;
    if (!api_arg(rq, "step")) {
        api_error(rp, 400, "step", "invalid_parameter", "step is required (an output index)");
        return 0;
    }
    if (!api_arg_int(rq, "step", 0, ri->n_output - 1, &step, rp) || !api_arg_int(rq, "k", 1, HEED_VERIFY_MAX, &k, rp))
        return 0;
    if (ri->n_prompt - 1 + step >= ri->n_pos) {
        api_error(rp, 400, "step", "invalid_parameter", "step %ld's query did not go through the model", step);
        return 0;
    }
    if (!own_model(env, run, ri)) {
        api_error(rp, 409, NULL, "model_needed", "verifying sources re-runs the model that made the run (%s); this "
                  "server runs %s", ri->model_file, env->model_id ? env->model_id : "none");
        return 0;
    }
    heed_source_check chk[HEED_VERIFY_MAX];
    float base = 0;
    int n = heed_run_verify_sources(run, env->model, NULL, (int)step, &v.sel, (int)k, chk, &base);
    if (n < 0) {
        view_error(rp, n);
        return 0;
    }
    heed_run_step st;
    heed_run_get_step(run, (int)step, &st);
    json_t *src = json_array();
    for (int i = 0; i < n; i++) {
        int32_t id;
        const char *label;
        heed_run_token(run, chk[i].pos, &id, &label);
        json_array_append_new(src, json_pack("{s:i, s:s, s:f, s:f, s:f, s:i, s:o, s:b}", "pos", chk[i].pos, "label", label,
                                             "weight", chk[i].weight, "logprob", chk[i].logprob, "drop", chk[i].drop,
                                             "top_id", chk[i].top_id, "top_label", label_of(env, chk[i].top_id),
                                             "still_chosen", chk[i].still_chosen));
    }
    api_reply_json(rp, 200, json_pack("{s:i, s:i, s:{s:i, s:o}, s:f, s:f, s:i, s:s, s:o}", "step", (int)step, "pos",
                                      ri->n_prompt - 1 + (int)step, "token", "id", st.id, "label", label_of(env, st.id),
                                      "logprob", st.logprob, "base_logprob", base, "k", (int)k, "measure",
                                      v.sel.measure == HEED_MEASURE_VALUE ? "value" : "attention", "sources", src));
    return 0;
}

json_t *api_labels_text(heed_run *run, int first, int n) {
    size_t len = 0, cap = 64;
    char *s = malloc(cap);
    for (int i = first; s && i < first + n; i++) {
        const char *label;
        heed_run_token(run, i, NULL, &label);
        size_t m = strlen(label);
        if (len + m + 1 > cap) {
            char *t = realloc(s, cap = 2 * cap + m);
            if (!t) break;
            s = t;
        }
        memcpy(s + len, label, m);
        len += m;
    }
    json_t *j = s ? json_stringn(s, len) : json_string("");
    free(s);
    return j ? j : json_string("");
}

typedef struct doc_span {
    const char *doc;
    heed_span span;
} doc_span;

/* Provenance of the outputs (docs/ANALYSIS.md "Provenance"): each output
 * sentence's value-weighted attention into the sentences of the documents
 * (docs: [{name, first, n_tok}]), the 3 heaviest as shares of what went into
 * document text; with verify, its top span knocked out for the sentence's
 * queries and the fall of the sentence's log-probability. NULL with rp
 * filled on an error. */
json_t *api_provenance(api_view_env *env, heed_run *run, const heed_run_info *ri, json_t *docs, bool verify,
                       api_reply *rp) {
    int n_sp = heed_run_spans(run, HEED_SPAN_SENTENCE, NULL, 0);
    heed_span *sp = n_sp > 0 ? malloc(sizeof *sp * (size_t)n_sp) : NULL;
    size_t nd = json_array_size(docs);
    doc_span *ds = malloc(sizeof *ds * ((size_t)(n_sp > 0 ? n_sp : 0) + nd + 1));
    heed_span *flat = malloc(sizeof *flat * ((size_t)(n_sp > 0 ? n_sp : 0) + nd + 1));
    if ((n_sp > 0 && !sp) || !ds || !flat) {
        free(sp), free(ds), free(flat);
        api_error(rp, 500, NULL, "out_of_memory", "out of memory");
        return NULL;
    }
    if (n_sp > 0) heed_run_spans(run, HEED_SPAN_SENTENCE, sp, n_sp);
    /* the documents' sentences: each run sentence cut to each document */
    int n_ds = 0;
    for (size_t d = 0; d < nd; d++) {
        json_t *e = json_array_get(docs, d);
        int f = (int)json_integer_value(json_object_get(e, "first")), n = (int)json_integer_value(json_object_get(e, "n_tok"));
        for (int s = 0; s < n_sp; s++) {
            int a = sp[s].first > f ? sp[s].first : f, b = sp[s].first + sp[s].n_tok < f + n ? sp[s].first + sp[s].n_tok : f + n;
            if (a < b) {
                ds[n_ds] = (doc_span){json_string_value(json_object_get(e, "name")), {a, b - a}};
                flat[n_ds] = ds[n_ds].span;
                n_ds++;
            }
        }
    }
    heed_attn_sel sel = heed_attn_sel_all();
    sel.measure = ri->has_value_norms ? HEED_MEASURE_VALUE : HEED_MEASURE_ATTENTION;
    float *score = malloc(sizeof(float) * (size_t)(n_ds ? n_ds : 1));
    heed_rerun *rr = NULL;
    float *base = NULL, *lp = NULL;
    const int out0 = ri->n_prompt, out1 = ri->n_prompt + ri->n_output;
    int rc = score ? HEED_OK : HEED_ERR_NOMEM;
    if (!rc && verify && n_ds) {
        if (!own_model(env, run, ri)) {
            api_error(rp, 409, NULL, "model_needed", "verifying provenance re-runs the model that made the run (%s)",
                      ri->model_file);
            free(sp), free(ds), free(flat), free(score);
            return NULL;
        }
        base = malloc(sizeof(float) * (size_t)ri->n_output);
        lp = malloc(sizeof(float) * (size_t)ri->n_output);
        rc = base && lp ? heed_rerun_new(run, env->model, NULL, out0 - 1, &rr) : HEED_ERR_NOMEM;
        if (!rc) rc = heed_rerun_logprobs(rr, NULL, 0, out1 - 1, base); /* base[i]: output token i */
    }
    json_t *sentences = json_array();
    for (int s = 0; !rc && s < n_sp; s++) {
        int a = sp[s].first > out0 ? sp[s].first : out0, b = sp[s].first + sp[s].n_tok;
        if (a >= b || a < out0) continue;
        json_t *j = json_pack("{s:i, s:i, s:o}", "first", a, "n_tok", b - a, "text", api_labels_text(run, a, b - a));
        json_t *srcs = json_array();
        int best = -1;
        if (n_ds && (rc = heed_run_span_attention(run, &sel, a - 1, b - 1, flat, n_ds, score))) break;
        double tot = 0;
        for (int i = 0; i < n_ds; i++) tot += score[i];
        for (int pick = 0; pick < 3 && tot > 0; pick++) {
            int m = -1;
            for (int i = 0; i < n_ds; i++)
                if (score[i] >= 0 && (m < 0 || score[i] > score[m])) m = i;
            if (m < 0) break;
            if (pick == 0) best = m;
            json_array_append_new(srcs, json_pack("{s:s, s:i, s:i, s:o, s:f}", "doc", ds[m].doc, "first", ds[m].span.first,
                                                  "n_tok", ds[m].span.n_tok, "text",
                                                  api_labels_text(run, ds[m].span.first, ds[m].span.n_tok), "score",
                                                  score[m] / tot));
            score[m] = -1.0f; /* taken */
        }
        json_object_set_new(j, "sources", srcs);
        if (rr && best >= 0) {
            heed_knockout ko = {-1, -1, a - 1, b - 1, ds[best].span.first, ds[best].span.first + ds[best].span.n_tok};
            if ((rc = heed_rerun_logprobs(rr, &ko, 1, b - 1, lp))) break;
            double drop = 0;
            for (int q = a - 1; q < b - 1; q++) drop += base[q - (out0 - 1)] - lp[q - (out0 - 1)];
            json_object_set_new(j, "verified", json_pack("{s:s, s:i, s:i, s:f}", "doc", ds[best].doc, "first",
                                                         ds[best].span.first, "n_tok", ds[best].span.n_tok, "drop", drop));
        }
        json_array_append_new(sentences, j);
    }
    heed_rerun_free(rr);
    free(base), free(lp), free(score), free(sp), free(ds), free(flat);
    if (rc) {
        json_decref(sentences);
        view_error(rp, rc);
        return NULL;
    }
    return json_pack("{s:O, s:s, s:o}", "documents", docs, "measure",
                     sel.measure == HEED_MEASURE_VALUE ? "value" : "attention", "sentences", sentences);
}
