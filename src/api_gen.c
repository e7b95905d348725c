/*
 * api_gen.c - a generation of `heed serve`, from a request to the run
 * store: the request's parameters and prompt (every client error is a plain
 * JSON reply before any event is sent), the FIFO queue and the one engine
 * thread that runs generations one at a time through the generation session
 * (heed_gen_*), the request cache, and the stored run's document. Events go
 * out through api_stream.c.
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
#include "upstream.h"

double api_mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Requests ahead of t in the queue (under e->mu). */
int api_queue_ahead_locked(const engine *e, const ticket *t) {
    int n = 0;
    for (const ticket *p = e->head; p && p != t; p = p->next) n++;
    return n;
}

void api_queue_remove_locked(engine *e, ticket *t) {
    if (!t->queued) return;
    if (t->prev) t->prev->next = t->next;
    else e->head = t->next;
    if (t->next) t->next->prev = t->prev;
    else e->tail = t->prev;
    t->queued = false;
}

/* ------------------------------------------------------------ replies */
/* Sampling and output parameters shared by every generating route; the
 * OpenAI routes start from OpenAI's defaults (temperature 1, top_p 1). */
static bool parse_gen_params(api *a, json_t *body, bool openai, gen_params *p, api_reply *rp) {
    p->sp = heed_sampler_default_params();
    if (openai) {
        p->sp.temperature = 1.0f;
        p->sp.top_p = 1.0f;
        p->sp.top_k = 0;
        p->sp.min_p = 0.0f;
    }
    double mt = openai ? 16 : a->cfg.max_tokens, t = p->sp.temperature, tk = p->sp.top_k, tp = p->sp.top_p,
           mp = p->sp.min_p, rpen = p->sp.repeat_penalty, seed = 0;
    bool ok = api_get_num(body, "max_tokens", &mt, rp) && api_get_num(body, "temperature", &t, rp) &&
              api_get_num(body, "top_k", &tk, rp) && api_get_num(body, "top_p", &tp, rp) &&
              api_get_num(body, "min_p", &mp, rp) && api_get_num(body, "repeat_penalty", &rpen, rp) &&
              api_get_num(body, "seed", &seed, rp) && api_get_bool(body, "stream", &p->stream, rp) &&
              api_get_bool(body, "return_attention_tokens", &p->attn_tokens, rp) &&
              api_get_bool(body, "attention_split", &p->attn_split, rp);
    if (!ok) return false;
    json_t *n = json_object_get(body, "n");
    if (n && !json_is_null(n) && !(json_is_integer(n) && json_integer_value(n) == 1)) {
        api_error(rp, 400, "n", "invalid_parameter", "n must be 1 (one choice per request)");
        return false;
    }
    json_t *stop = json_object_get(body, "stop");
    if (stop && !json_is_null(stop) && !(json_is_array(stop) && json_array_size(stop) == 0)) {
        api_error(rp, 400, "stop", "unsupported_parameter", "stop sequences are not supported yet");
        return false;
    }
    /* the server's cap wins over a larger request: clients often ask for "a
     * lot" (compared as doubles, before any narrowing) */
    p->max_tokens = mt > (double)a->cfg.max_tokens ? a->cfg.max_tokens : (int)mt;
    p->sp.temperature = (float)t;
    p->sp.top_k = (int)tk;
    p->sp.top_p = (float)tp;
    p->sp.min_p = (float)mp;
    p->sp.repeat_penalty = (float)rpen;
    p->sp.seed = (uint64_t)seed;
    return true;
}

void api_gen_free(gen *g) {
    if (!g) return;
    free(g->prompt);
    free(g->prompt_text);
    json_decref(g->messages);
    json_decref(g->documents);
    if (g->parent) store_release(g->api->store, g->parent);
    heed_gen_free(g->sess);
    free(g->out);
    free(g->text);
    json_decref(g->steps);
    free(g->pend);
    free(g->cache_key);
    free(g->forced);
    json_decref(g->branch);
    json_decref(g->interventions);
    free(g->head_scale);
    free(g->knockouts);
    free(g->ablate_mean);
    free(g->edits);
    free(g->edit_vecs);
    for (int i = 0; g->patch_src && i < g->n_patches; i++) free(g->patch_src[i]);
    free(g->patch_src);
    free(g->patches);
    json_decref(g->replay);
    heed_run_free(g->up_run);
    free(g);
}

/* ------------------------------------------------------------ request cache */
/* The prompt's token ids (what the model sees: two texts that tokenize
 * differently are different requests, whatever their whitespace), then the
 * parameters that decide the output. */
char *api_req_cache_key(const gen *g) {
    const heed_sampler_params *sp = &g->p.sp;
    json_t *ids = json_array();
    for (int i = 0; ids && i < g->n_prompt; i++) json_array_append_new(ids, json_integer(g->prompt[i]));
    json_t *k = json_pack("{s:o, s:f, s:i, s:f, s:f, s:f, s:i, s:I, s:i, s:O?}", "prompt_ids", ids, "temperature",
                          sp->temperature, "top_k", sp->top_k, "top_p", sp->top_p, "min_p", sp->min_p,
                          "repeat_penalty", sp->repeat_penalty, "repeat_last_n", sp->repeat_last_n, "seed",
                          (json_int_t)sp->seed, "max_tokens", g->n_predict, "interventions", g->interventions);
    char *key = k ? json_dumps(k, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(k);
    return key;
}

/* The run id cached for key, copied into id; false when none. */
static bool req_cache_get(api *a, const char *key, char *id, size_t size) {
    bool hit = false;
    pthread_mutex_lock(&a->runs_mu);
    for (int i = 0; i < a->cfg.cache_runs && !hit; i++) {
        req_cache_entry *e = &a->rcache[i];
        if (e->key && !strcmp(e->key, key)) {
            e->used = ++a->rclock;
            snprintf(id, size, "%s", e->run_id);
            hit = true;
        }
    }
    pthread_mutex_unlock(&a->runs_mu);
    return hit;
}

/* Remembers key -> id, evicting the least recently used entry. */
static void req_cache_put(api *a, const char *key, const char *id) {
    char *k = strdup(key);
    if (!k) return;
    pthread_mutex_lock(&a->runs_mu);
    req_cache_entry *victim = &a->rcache[0];
    for (int i = 0; i < a->cfg.cache_runs; i++) {
        req_cache_entry *e = &a->rcache[i];
        if (e->key && !strcmp(e->key, key)) { victim = e; break; }
        if (!e->key || e->used < victim->used) victim = e;
    }
    free(victim->key);
    victim->key = k;
    snprintf(victim->run_id, sizeof victim->run_id, "%s", id);
    victim->used = ++a->rclock;
    pthread_mutex_unlock(&a->runs_mu);
}

/* Renders and tokenizes messages [{role, content}] with the model's chat
 * template. Returns the token count, or -1 with rp filled. */
static int tokenize_messages(api *a, json_t *msgs, int32_t *ids, int n_max, api_reply *rp) {
    if (!heed_chat_template(a->model) && a->upstream_url) /* the upstream renders them (upstream.c) */
        return upstream_messages_ids(a, msgs, ids, n_max, rp);
    if (!heed_chat_template(a->model)) {
        api_error(rp, 400, "messages", "no_chat_template",
                  "the model %s has no chat template heed knows (Llama 3, ChatML, Llama 2, Mistral, Gemma, Phi-3)", a->model_id);
        return -1;
    }
    size_t n = json_array_size(msgs);
    if (!json_is_array(msgs) || n == 0 || n > 4096) {
        api_error(rp, 400, "messages", "invalid_parameter", "messages must be a non-empty array (at most 4096)");
        return -1;
    }
    heed_chat_msg *m = calloc(n, sizeof *m);
    if (!m) {
        api_error(rp, 500, NULL, "out_of_memory", "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(msgs, i);
        m[i].role = json_string_value(json_object_get(e, "role"));
        m[i].content = json_string_value(json_object_get(e, "content"));
        if (!m[i].role || !m[i].content) {
            free(m);
            api_error(rp, 400, "messages", "invalid_parameter",
                      "messages[%zu] needs string members role and content", i);
            return -1;
        }
    }
    int r = heed_chat_tokenize(a->model, m, (int)n, true, ids, n_max);
    free(m);
    if (r < 0)
        api_error(rp, 400, "messages", "invalid_parameter", "cannot render the messages: %s",
                  r == HEED_ERR_INVALID_ARG ? "a role is not system, user or assistant" : heed_strerror(r));
    return r;
}

/* Builds a generation from a request body: "prompt" (text) or "messages".
 * Returns NULL with rp filled on a client error. */
/* A branch of a stored run (POST /api/runs with "branch"): its prompt, and
 * its outputs before step (then token, if given) as forced outputs.
 * Returns the prompt's length, or -1 with the error in rp. */
static int branch_prompt(api *a, json_t *br, gen *g, int limit, api_reply *rp) {
    json_t *jrun = json_object_get(br, "run"), *jstep = json_object_get(br, "step"), *jtok = json_object_get(br, "token"),
           *jfrom = json_object_get(br, "interventions_from");
    const char *from = jfrom ? json_string_value(jfrom) : "step";
    if (!from || (strcmp(from, "step") && strcmp(from, "start"))) {
        api_error(rp, 400, "branch", "invalid_parameter", "branch.interventions_from must be \"step\" or \"start\"");
        return -1;
    }
    if (!json_is_object(br) || !json_is_string(jrun) || !json_is_integer(jstep) || json_integer_value(jstep) < 0 ||
        (jtok && !json_is_null(jtok) &&
         (!json_is_integer(jtok) || json_integer_value(jtok) < 0 || json_integer_value(jtok) >= a->info.n_vocab))) {
        api_error(rp, 400, "branch", "invalid_parameter",
                  "branch must be {\"run\": id, \"step\": integer >= 0, \"token\": a token id (optional)}");
        return -1;
    }
    char *text = NULL;
    int src = store_get_doc(a->store, json_string_value(jrun), &text);
    if (src) {
        api_reply_store_error(rp, src, json_string_value(jrun), "cannot read the run to branch from");
        return -1;
    }
    json_t *doc = json_loads(text, 0, NULL), *pids = json_object_get(doc, "prompt_ids"),
           *oids = json_object_get(doc, "output_ids");
    free(text);
    /* the step is compared as the JSON integer it is: narrowed only once in range */
    json_int_t step_j = json_integer_value(jstep);
    int n = (int)json_array_size(pids), step = step_j <= (json_int_t)json_array_size(oids) ? (int)step_j : -1, rc = -1;
    bool tok = jtok && !json_is_null(jtok);
    if (!doc || strcmp(json_string_value(json_object_get(doc, "model")) ? json_string_value(json_object_get(doc, "model")) : "",
                       a->model_id)) {
        api_error(rp, 400, "branch", "invalid_parameter", "the run was made with another model");
    } else if (step < 0) {
        api_error(rp, 400, "branch", "invalid_parameter", "step must be at most the run's %d outputs",
                  (int)json_array_size(oids));
    } else if (n > limit) {
        api_error(rp, 422, "branch", "prompt_too_long", "the run's prompt has %d tokens; the limit is %d", n, limit);
    } else if (!(g->forced = malloc(sizeof(int32_t) * ((size_t)step + 1)))) {
        api_error(rp, 500, NULL, "out_of_memory", "out of memory");
    } else {
        for (int i = 0; i < n; i++) g->prompt[i] = (int32_t)json_integer_value(json_array_get(pids, (size_t)i));
        for (int i = 0; i < step; i++) g->forced[i] = (int32_t)json_integer_value(json_array_get(oids, (size_t)i));
        if (tok) g->forced[step] = (int32_t)json_integer_value(jtok);
        g->n_forced = step + tok;
        json_t *pt = json_object_get(doc, "prompt"), *msgs = json_object_get(doc, "messages");
        if (json_is_string(pt)) g->prompt_text = strdup(json_string_value(pt));
        else if (msgs) g->messages = json_deep_copy(msgs);
        g->branch = json_pack("{s:O, s:i, s:O?, s:s}", "run", jrun, "step", step, "token", tok ? jtok : NULL,
                              "interventions_from", from);
        /* "step": the interventions act from the query that chooses step's token on, so the
         * positions before it are the run's own and its KV cache can be kept */
        g->intervene_from = strcmp(from, "step") ? 0 : n - 1 + step;
        rc = n;
    }
    json_decref(doc);
    return rc;
}

/* A position range [first, last] (inclusive) as JSON [first, last]: into
 * [*lo, *hi) half-open. false when it is not two integers with
 * 0 <= first <= last < 2^24. */
static bool json_range(json_t *j, int *lo, int *hi) {
    json_t *a = json_array_get(j, 0), *b = json_array_get(j, 1);
    if (!json_is_array(j) || json_array_size(j) != 2 || !json_is_integer(a) || !json_is_integer(b)) return false;
    json_int_t x = json_integer_value(a), y = json_integer_value(b);
    if (x < 0 || y < x || y >= (1 << 24)) return false;
    *lo = (int)x;
    *hi = (int)y + 1;
    return true;
}

/* A steering or patching item: {"type": "steer", "layer": L, "alpha": A,
 * "vector": [n_embd numbers]} or {"type": "patch", "run": ID, "layer": L,
 * "pos": P} (the stored run, of this model, with more than P tokens). */
static int parse_resid_edit(api *a, json_t *e, size_t i, bool steer, gen *g, api_reply *rp) {
    const int E = a->info.n_embd, L = a->info.n_layer;
    json_t *jl = json_object_get(e, "layer");
    json_int_t l = json_is_integer(jl) ? json_integer_value(jl) : -1;
    if (l < 0 || l >= L) {
        api_error(rp, 400, "interventions", "invalid_parameter", "interventions[%zu]: layer must be an integer below %d",
                  i, L);
        return -1;
    }
    if (g->n_edits + g->n_patches >= HEED_MAX_RESID_EDITS) {
        api_error(rp, 400, "interventions", "invalid_parameter", "interventions[%zu]: more than %d steering and "
                  "patching items", i, HEED_MAX_RESID_EDITS);
        return -1;
    }
    if (steer) {
        json_t *jv = json_object_get(e, "vector"), *ja = json_object_get(e, "alpha");
        double alpha = json_is_number(ja) ? json_number_value(ja) : NAN;
        if (!json_is_array(jv) || json_array_size(jv) != (size_t)E || !isfinite(alpha)) {
            api_error(rp, 400, "interventions", "invalid_parameter",
                      "interventions[%zu]: a steer needs \"alpha\" (a number) and \"vector\" (%d numbers)", i, E);
            return -1;
        }
        if (!g->edits && (!(g->edits = calloc(HEED_MAX_RESID_EDITS, sizeof *g->edits)) ||
                          !(g->edit_vecs = malloc(sizeof(float) * HEED_MAX_RESID_EDITS * (size_t)E)))) {
            api_error(rp, 500, NULL, "out_of_memory", "out of memory");
            return -1;
        }
        float *v = g->edit_vecs + (size_t)g->n_edits * E;
        for (int d = 0; d < E; d++) {
            json_t *x = json_array_get(jv, (size_t)d);
            v[d] = json_is_number(x) ? (float)json_number_value(x) : NAN;
            if (!isfinite(v[d])) {
                api_error(rp, 400, "interventions", "invalid_parameter", "interventions[%zu]: vector[%d] is not a "
                          "finite number", i, d);
                return -1;
            }
        }
        g->edits[g->n_edits++] = (heed_resid_edit){(int)l, -1, false, (float)alpha, v};
        return 0;
    }
    json_t *jp = json_object_get(e, "pos");
    const char *run = json_string_value(json_object_get(e, "run"));
    json_int_t pos = json_is_integer(jp) ? json_integer_value(jp) : -1;
    if (!run || pos < 0) {
        api_error(rp, 400, "interventions", "invalid_parameter",
                  "interventions[%zu]: a patch needs \"run\" (a stored run's id) and \"pos\" (a position)", i);
        return -1;
    }
    char *doc_s = NULL;
    if (store_get_doc(a->store, run, &doc_s)) {
        api_error(rp, 400, "interventions", "invalid_parameter", "interventions[%zu]: no stored run '%.64s'", i, run);
        return -1;
    }
    json_t *doc = json_loads(doc_s, 0, NULL);
    free(doc_s);
    const char *model = json_string_value(json_object_get(doc, "model"));
    json_t *pi = json_object_get(doc, "prompt_ids"), *oi = json_object_get(doc, "output_ids");
    size_t np = json_array_size(pi), n = np + json_array_size(oi);
    int rc = 0;
    if (!model || strcmp(model, a->model_id)) {
        api_error(rp, 400, "interventions", "invalid_parameter", "interventions[%zu]: run '%.64s' was made with "
                  "another model (%.64s)", i, run, model ? model : "?");
        rc = -1;
    } else if ((size_t)pos >= n) {
        api_error(rp, 400, "interventions", "invalid_parameter", "interventions[%zu]: run '%.64s' has %zu tokens; "
                  "position %lld is beyond them", i, run, n, (long long)pos);
        rc = -1;
    } else if ((!g->patches && (!(g->patches = calloc(HEED_MAX_RESID_EDITS, sizeof *g->patches)) ||
                                !(g->patch_src = calloc(HEED_MAX_RESID_EDITS, sizeof *g->patch_src)))) ||
               !(g->patch_src[g->n_patches] = malloc(sizeof(int32_t) * n))) {
        api_error(rp, 500, NULL, "out_of_memory", "out of memory");
        rc = -1;
    } else {
        int32_t *src = g->patch_src[g->n_patches];
        for (size_t k = 0; k < n; k++)
            src[k] = (int32_t)json_integer_value(k < np ? json_array_get(pi, k) : json_array_get(oi, k - np));
        g->patches[g->n_patches++] = (heed_gen_patch){(int)l, (int)pos, src, (int)n};
    }
    json_decref(doc);
    return rc;
}

/* "interventions": [{"type": "ablate", "layer": L, "head": H},
 * {"type": "scale", "layer": L, "head": H, "factor": F},
 * {"type": "knockout", "layer": L|null, "head": H|null, "queries": [q0, q1], "keys": [k0, k1]}, ...]
 * (docs/API.md) as factors per head in g->head_scale and knockouts in
 * g->knockouts. Returns 0, or -1 with a 400 naming the item. Absent or
 * null: none. */
static int parse_interventions(api *a, json_t *list, gen *g, api_reply *rp) {
    if (!list || json_is_null(list)) return 0;
    size_t n = json_array_size(list), nh = (size_t)a->info.n_layer * a->info.n_head;
    size_t most = nh > HEED_MAX_KNOCKOUTS ? nh : HEED_MAX_KNOCKOUTS;
    if (!json_is_array(list) || n > most) {
        api_error(rp, 400, "interventions", "invalid_parameter", "interventions must be an array (at most %zu)", most);
        return -1;
    }
    if (n == 0) return 0;
    if (!(g->head_scale = malloc(sizeof(float) * nh)) || !(g->knockouts = malloc(sizeof *g->knockouts * n))) {
        api_error(rp, 500, NULL, "out_of_memory", "out of memory");
        return -1;
    }
    for (size_t i = 0; i < nh; i++) g->head_scale[i] = 1.0f;
    bool scaled = false;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(list, i), *jl = json_object_get(e, "layer"), *jh = json_object_get(e, "head"),
               *jf = json_object_get(e, "factor");
        const char *type = json_string_value(json_object_get(e, "type"));
        bool ablate = type && !strcmp(type, "ablate"), scale = type && !strcmp(type, "scale"),
             knock = type && !strcmp(type, "knockout"), mean = type && !strcmp(type, "ablate_mean"),
             steer = type && !strcmp(type, "steer"), patch = type && !strcmp(type, "patch");
        if (!ablate && !scale && !knock && !mean && !steer && !patch) {
            api_error(rp, 400, "interventions", "invalid_parameter",
                      "interventions[%zu]: type must be \"ablate\", \"ablate_mean\", \"scale\", \"knockout\", "
                      "\"steer\" or \"patch\"", i);
            return -1;
        }
        if (steer || patch) {
            if (parse_resid_edit(a, e, i, steer, g, rp)) return -1;
            continue;
        }
        /* a knockout's layer and head may be absent or null: every one */
        json_int_t l = json_is_integer(jl) ? json_integer_value(jl) : (knock && (!jl || json_is_null(jl)) ? -1 : -2),
                   h = json_is_integer(jh) ? json_integer_value(jh) : (knock && (!jh || json_is_null(jh)) ? -1 : -2);
        if (l < (knock ? -1 : 0) || l >= a->info.n_layer || h < (knock ? -1 : 0) || h >= a->info.n_head) {
            api_error(rp, 400, "interventions", "invalid_parameter",
                      "interventions[%zu]: layer and head must be integers within the model's %d layers x %d heads%s",
                      i, a->info.n_layer, a->info.n_head, knock ? " (or null: all)" : "");
            return -1;
        }
        if (knock) {
            heed_knockout *k = &g->knockouts[g->n_knockouts];
            *k = (heed_knockout){(int)l, (int)h, 0, 0, 0, 0};
            if (!json_range(json_object_get(e, "queries"), &k->q0, &k->q1) ||
                !json_range(json_object_get(e, "keys"), &k->k0, &k->k1)) {
                api_error(rp, 400, "interventions", "invalid_parameter",
                          "interventions[%zu]: queries and keys must be position ranges [first, last] "
                          "(0 <= first <= last)", i);
                return -1;
            }
            g->n_knockouts++;
            continue;
        }
        if (mean) {
            if (!g->ablate_mean && !(g->ablate_mean = calloc(nh, 1))) {
                api_error(rp, 500, NULL, "out_of_memory", "out of memory");
                return -1;
            }
            g->ablate_mean[l * a->info.n_head + h] = 1;
            continue;
        }
        double f = 0;
        if (scale && (!json_is_number(jf) || !isfinite(f = json_number_value(jf)))) {
            api_error(rp, 400, "interventions", "invalid_parameter", "interventions[%zu]: factor must be a number", i);
            return -1;
        }
        g->head_scale[l * a->info.n_head + h] = (float)f;
        scaled = true;
    }
    if (!scaled) { /* knockouts only: no factors to apply */
        free(g->head_scale);
        g->head_scale = NULL;
    }
    g->interventions = json_deep_copy(list);
    return 0;
}

/* "documents": [{"name", "text"}] (at most API_MAX_DOCS): checked, and
 * the text that puts them in the prompt (malloc'd; NULL with rp filled on
 * an error, or when there are none: *none). */
#define API_MAX_DOCS 32
static char *documents_text(json_t *docs, bool *none, api_reply *rp) {
    *none = !docs || json_is_null(docs);
    if (*none) return NULL;
    size_t n = json_array_size(docs), len = 0;
    if (!json_is_array(docs) || n == 0 || n > API_MAX_DOCS) {
        api_error(rp, 400, "documents", "invalid_parameter", "documents must be a non-empty array (at most %d)",
                  API_MAX_DOCS);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(docs, i), *nm = json_object_get(e, "name"), *tx = json_object_get(e, "text");
        if (!json_is_string(nm) || !json_is_string(tx) || !json_string_length(tx) || json_string_length(nm) > 200 ||
            memchr(json_string_value(tx), 0, json_string_length(tx))) {
            api_error(rp, 400, "documents", "invalid_parameter",
                      "documents[%zu] needs a string name (at most 200 bytes) and a non-empty text", i);
            return NULL;
        }
        len += json_string_length(nm) + json_string_length(tx) + 32;
    }
    char *t = malloc(len + 32);
    if (!t) {
        api_error(rp, 500, NULL, "out_of_memory", "out of memory");
        return NULL;
    }
    size_t at = (size_t)sprintf(t, "Documents:\n\n");
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(docs, i);
        at += (size_t)sprintf(t + at, "[%s]\n", json_string_value(json_object_get(e, "name")));
        memcpy(t + at, json_string_value(json_object_get(e, "text")), json_string_length(json_object_get(e, "text")));
        at += json_string_length(json_object_get(e, "text"));
        at += (size_t)sprintf(t + at, "\n\n");
    }
    t[at] = 0;
    return t;
}

static const char *find_bytes(const char *h, size_t hn, const char *nd, size_t nn) {
    for (size_t i = 0; nn && i + nn <= hn; i++)
        if (h[i] == nd[0] && !memcmp(h + i, nd, nn)) return h + i;
    return NULL;
}

/* Where each document's text lies among the prompt's tokens: the tokens'
 * bytes concatenated, each text found in order; g->documents gets
 * [{name, first, n_tok}] (the tokens holding its first to last byte).
 * false with rp filled when one cannot be found. */
static bool locate_documents(api *a, gen *g, json_t *docs, int n, api_reply *rp) {
    size_t cap = 4096, len = 0;
    char *b = malloc(cap);
    size_t *off = malloc(sizeof *off * ((size_t)n + 1));
    char piece[256];
    for (int i = 0; b && off && i < n; i++) {
        off[i] = len;
        int m = heed_token_bytes(a->model, g->prompt[i], piece, sizeof piece);
        if (m < 0) m = 0;
        if (m > (int)sizeof piece - 1) m = (int)sizeof piece - 1;
        if (len + (size_t)m + 1 > cap) {
            char *t = realloc(b, cap = 2 * cap + (size_t)m);
            if (!t) {
                free(b);
                b = NULL;
                break;
            }
            b = t;
        }
        memcpy(b + len, piece, (size_t)m);
        len += (size_t)m;
    }
    if (!b || !off) {
        free(b), free(off);
        api_error(rp, 500, NULL, "out_of_memory", "out of memory");
        return false;
    }
    off[n] = len;
    g->documents = json_array();
    size_t from = 0;
    bool ok = true;
    for (size_t d = 0; ok && d < json_array_size(docs); d++) {
        json_t *e = json_array_get(docs, d), *tx = json_object_get(e, "text");
        const char *hit = find_bytes(b + from, len - from, json_string_value(tx), json_string_length(tx));
        if (!hit) {
            api_error(rp, 400, "documents", "invalid_parameter",
                      "documents[%zu]: its text is not whole among the prompt's tokens (it may be too long)", d);
            ok = false;
            break;
        }
        size_t s = (size_t)(hit - b), e_ = s + json_string_length(tx);
        int first = 0, last = 0;
        while (first + 1 < n && off[first + 1] <= s) first++;
        last = first;
        while (last + 1 < n && off[last + 1] < e_) last++;
        json_array_append_new(g->documents, json_pack("{s:O, s:i, s:i}", "name", json_object_get(e, "name"), "first",
                                                      first, "n_tok", last - first + 1));
        from = e_;
    }
    free(b), free(off);
    return ok;
}

gen *api_gen_from_body(api *a, json_t *body, int kind, api_reply *rp) {
    char *docs_text = NULL;
    gen *g = calloc(1, sizeof *g);
    int limit = a->cfg.max_prompt < a->n_ctx ? a->cfg.max_prompt : a->n_ctx;
    if (!g || !(g->prompt = malloc(sizeof(int32_t) * ((size_t)limit + 1)))) {
        api_gen_free(g);
        api_error(rp, 500, NULL, "out_of_memory", "out of memory");
        return NULL;
    }
    g->api = a;
    g->kind = kind;
    g->stop = "length";
    pthread_mutex_lock(&a->runs_mu);
    /* the start time in ns keeps ids unique across restarts on one data folder */
    snprintf(g->run_id, sizeof g->run_id, "run_%llx_%llu", a->id_stem, ++a->n_made);
    pthread_mutex_unlock(&a->runs_mu);
    g->last_ahead = -1;
    g->refs = 1;
    if (!parse_gen_params(a, body, kind != GEN_HEED, &g->p, rp)) goto fail;
    json_t *prompt = json_object_get(body, "prompt"), *msgs = json_object_get(body, "messages"),
           *branch = kind == GEN_HEED ? json_object_get(body, "branch") : NULL,
           *docs = json_object_get(body, "documents"), *prov = json_object_get(body, "provenance");
    bool no_docs;
    docs_text = documents_text(docs, &no_docs, rp);
    if (!no_docs && !docs_text) goto fail;
    if (prov && !json_is_boolean(prov)) {
        api_error(rp, 400, "provenance", "invalid_parameter", "provenance must be a boolean");
        goto fail;
    }
    g->provenance = json_is_true(prov);
    int n;
    if (branch && !json_is_null(branch) && docs_text) {
        api_error(rp, 400, "documents", "invalid_parameter", "a branch keeps its run's prompt: no documents");
        goto fail;
    }
    if (branch && !json_is_null(branch)) {
        if ((n = branch_prompt(a, branch, g, limit, rp)) < 0) goto fail;
    } else if (kind == GEN_CHAT || (kind == GEN_HEED && msgs && !prompt)) {
        /* documents go into the system message (one is added first when there is none) */
        json_t *with = NULL;
        if (docs_text) {
            with = json_is_array(msgs) ? json_deep_copy(msgs) : NULL;
            json_t *m0 = json_array_get(with, 0);
            const char *r0 = json_string_value(json_object_get(m0, "role")),
                       *c0 = json_string_value(json_object_get(m0, "content"));
            if (r0 && c0 && !strcmp(r0, "system")) {
                size_t l0 = strlen(c0), ld = strlen(docs_text);
                char *c = malloc(l0 + ld + 3);
                if (c) {
                    memcpy(c, c0, l0), memcpy(c + l0, "\n\n", 2), memcpy(c + l0 + 2, docs_text, ld + 1);
                    json_object_set_new(m0, "content", json_string(c));
                }
                free(c);
            } else if (with) {
                json_array_insert_new(with, 0, json_pack("{s:s, s:s}", "role", "system", "content", docs_text));
            }
        }
        n = tokenize_messages(a, with ? with : msgs, g->prompt, limit + 1, rp);
        json_decref(with);
        if (n < 0) goto fail;
        g->messages = json_deep_copy(msgs);
    } else {
        if (!json_is_string(prompt)) {
            api_error(rp, 400, "prompt", "invalid_parameter",
                      kind == GEN_HEED ? "give prompt (a string) or messages" : "prompt must be a string");
            goto fail;
        }
        if (!a->info.can_tokenize) {
            api_error(rp, 400, "prompt", "cannot_tokenize", "this model's vocabulary cannot encode text");
            goto fail;
        }
        const char *s = json_string_value(prompt);
        size_t sl = json_string_length(prompt);
        char *full = NULL; /* documents first, then the prompt */
        if (docs_text && (full = malloc(strlen(docs_text) + sl + 1))) {
            memcpy(full, docs_text, strlen(docs_text));
            memcpy(full + strlen(docs_text), s, sl + 1);
            s = full, sl += strlen(docs_text);
        }
        n = heed_tokenize(a->model, s, sl, a->info.add_bos, g->prompt, limit + 1);
        if (n < 0) {
            free(full);
            api_error(rp, 400, "prompt", "invalid_parameter", "cannot tokenize the prompt: %s", heed_strerror(n));
            goto fail;
        }
        g->prompt_text = strdup(s);
        free(full);
    }
    if (docs_text && n >= 0 && n <= limit && !locate_documents(a, g, docs, n, rp)) goto fail;
    free(docs_text);
    docs_text = NULL;
    if (n > limit) {
        api_error(rp, 422, kind == GEN_CHAT ? "messages" : "prompt", "prompt_too_long",
                  "the prompt has %d tokens; the limit is %d (%s)", n, limit,
                  limit < a->n_ctx ? "--max-prompt" : "the context size");
        goto fail;
    }
    if (n == 0) {
        api_error(rp, 400, "prompt", "invalid_parameter", "the prompt is empty");
        goto fail;
    }
    if (parse_interventions(a, json_object_get(body, "interventions"), g, rp)) goto fail;
    if (a->upstream_url && !upstream_accepts(g, rp)) goto fail;
    g->n_prompt = n;
    /* every generated token but the last goes through the context */
    int room = a->n_ctx - n + 1;
    g->n_predict = g->p.max_tokens < room ? g->p.max_tokens : room;
    int need = g->branch ? (int)json_integer_value(json_object_get(g->branch, "step")) + 1 : 0;
    if (g->n_predict < need) {
        api_error(rp, 400, "max_tokens", "invalid_parameter",
                  "a branch at step %d needs max_tokens >= %d (the reused outputs count)", need - 1, need);
        goto fail;
    }
    g->out = malloc(sizeof(int32_t) * ((size_t)g->n_predict + 1));
    g->steps = json_array();
    if (!g->out || !g->steps || (g->prompt_text == NULL && g->messages == NULL)) {
        api_error(rp, 500, NULL, "out_of_memory", "out of memory");
        goto fail;
    }
    return g;
fail:
    free(docs_text);
    api_gen_free(g);
    return NULL;
}

bool api_text_append(gen *g, const char *s, size_t n) {
    if (g->text_len + n + 1 > g->text_cap) {
        size_t cap = g->text_cap * 2 + n + 256;
        char *t = realloc(g->text, cap);
        if (!t) return false;
        g->text = t;
        g->text_cap = cap;
    }
    memcpy(g->text + g->text_len, s, n);
    g->text_len += n;
    g->text[g->text_len] = 0;
    return true;
}

/* The k heaviest of the n positions of the newest query's row (ties: lower
 * position), as [[position, weight], ...], weights averaged over layers and
 * heads. The recorder holds the context's hook, so the row comes from it. */
static json_t *attn_top(gen *g, int k) {
    api *a = g->api;
    const float *row = a->eng.row;
    heed_attn_sel all = heed_attn_sel_all();
    int n = heed_recorder_last_row(heed_gen_recorder(g->sess), &all, a->eng.row, a->n_ctx), idx[API_MAX_ATTN_TOP];
    if (k > API_MAX_ATTN_TOP) k = API_MAX_ATTN_TOP;
    int m = 0;
    json_t *arr = json_array();
    for (int i = 0; i < n && k > 0; i++) {
        if (m == k && row[i] <= row[idx[m - 1]]) continue;
        int j = m < k ? m++ : m - 1;
        while (j > 0 && row[idx[j - 1]] < row[i]) {
            idx[j] = idx[j - 1];
            j--;
        }
        idx[j] = i;
    }
    for (int i = 0; i < m; i++) json_array_append_new(arr, json_pack("[i, f]", idx[i], row[idx[i]]));
    return arr;
}

/* On the engine thread: the generation session (gen.c) started on the
 * engine's context: recorder, prompt decoded, sampler ready. */
static int gen_start(gen *g) {
    api *a = g->api;
    g->created = (long long)time(NULL);
    heed_gen_params gp = heed_gen_default_params();
    gp.sampler = g->p.sp;
    gp.n_predict = g->n_predict;
    gp.n_top = API_N_TOP;
    gp.prompt_text = g->prompt_text;
    gp.forced = g->forced;
    gp.n_forced = g->n_forced;
    gp.head_scale = g->head_scale;
    gp.knockouts = g->knockouts;
    gp.n_knockouts = g->n_knockouts;
    gp.ablate_mean = g->ablate_mean;
    gp.resid_edits = g->edits;
    gp.n_resid_edits = g->n_edits;
    gp.patches = g->patches;
    gp.n_patches = g->n_patches;
    gp.intervene_from = g->intervene_from;
    /* a branch of the run whose KV cache the context still holds: its prefix is kept (heed_gen_params.reuse) */
    const char *pid = g->branch ? json_string_value(json_object_get(g->branch, "run")) : NULL;
    char err[256];
    if (pid && !strcmp(pid, a->eng.kv_run) && !store_acquire(a->store, pid, &g->parent, err, sizeof err)) {
        store_run_lock(g->parent);
        gp.reuse = store_run_get(g->parent);
    }
    /* the default tiers: q/k only (every view's rows come back from them),
     * so the stored run stays small and capture costs generation little */
    gp.record = true;
    gp.rec.n_threads = a->cfg.n_threads;
    gp.rec.spill_dir = a->cfg.data_dir; /* a long run's q/k store in file-backed pages */
    gp.rec.live_mean_row = true; /* each token event's attention summary, without recomputing the row */
    int rc = heed_gen_start(a->model, a->eng.ctx, &gp, g->prompt, g->n_prompt, &g->sess);
    g->reused = g->sess ? heed_gen_reused(g->sess) : 0;
    if (g->parent) { /* kept (unlocked) until the session has finished taking from it */
        store_run_unlock(g->parent);
        if (!g->reused) {
            store_release(a->store, g->parent);
            g->parent = NULL;
        }
    }
    a->eng.kv_run[0] = 0; /* the context is this generation's now */
    return rc;
}

/* Should the generation end now, cancelled (server stopping, client gone
 * or dropped)? */
static bool gen_cancelled(const gen *g) {
    return atomic_load(&g->api->stopping) || atomic_load(&g->gone) || atomic_load(&g->dropped);
}

/* One step of the session, and its event in *ev (borrowed from g->steps,
 * valid while g lives; NULL when no token was chosen). Returns 0 (more to
 * come), 1 (finished: g->stop says why) or a negative code. The session
 * never goes past n_predict outputs, whatever the request asked. */
static int gen_step(gen *g, json_t **ev) {
    api *a = g->api;
    const heed_model *m = a->model;
    *ev = NULL;
    heed_gen_step st;
    int rc = heed_gen_next(g->sess, &st);
    if (rc <= 0) {
        if (!rc) g->stop = heed_gen_stop(g->sess);
        return rc < 0 ? rc : 1;
    }
    g->out[g->n_out++] = st.sample.id;
    if (!api_text_append(g, st.text, st.text_len)) return HEED_ERR_NOMEM;
    json_t *top = json_array();
    for (int i = 0; i < st.n_top; i++)
        json_array_append_new(top, json_pack("{s:i, s:o, s:f}", "id", st.top[i].id, "label",
                                             api_label_json(m, st.top[i].id), "prob", st.top[i].prob));
    const heed_sample *s = &st.sample;
    json_t *e = json_pack("{s:i, s:i, s:o, s:s%, s:f, s:f, s:o, s:{s:o}}", "index", st.index, "id", s->id, "label",
                          api_label_json(m, s->id), "text", st.text, st.text_len, "prob", s->prob, "logprob", s->logprob,
                          "top", top, "attention", "top", attn_top(g, a->cfg.attn_top_k));
    if (!e || json_array_append_new(g->steps, e)) return HEED_ERR_NOMEM;
    *ev = e; /* borrowed: g->steps holds it */
    if (st.last) {
        g->stop = heed_gen_stop(g->sess);
        return 1;
    }
    if (gen_cancelled(g)) {
        heed_gen_cancel(g->sess);
        g->stop = "cancelled";
        return 1;
    }
    return 0;
}

static const char *kind_name(int kind) {
    return kind == GEN_CHAT ? "chat" : kind == GEN_COMPLETION ? "completion" : "heed";
}

/* The JSON of GET /api/runs/{id} (metadata, tokens, steps as streamed). */
static json_t *run_doc(gen *g) {
    api *a = g->api;
    json_t *tokens = json_array();
    for (int i = 0; i < g->n_prompt + g->n_out; i++) {
        int32_t id = i < g->n_prompt ? g->prompt[i] : g->out[i - g->n_prompt];
        json_array_append_new(tokens, json_pack("{s:i, s:o}", "id", id, "label", api_label_json(a->model, id)));
    }
    const heed_sampler_params *sp = &g->p.sp;
    /* a mixture of experts: its routing is at /api/runs/{id}/experts */
    json_t *experts = a->info.n_expert ? json_pack("{s:i, s:i}", "n_expert", a->info.n_expert, "n_used",
                                                   a->info.n_expert_used) : NULL;
    json_t *d = json_pack(
        "{s:s, s:s, s:I, s:s, s:s?, s:O?, s:{s:f, s:i, s:f, s:f, s:f, s:I}, s:i, s:i, s:i, s:s, s:o, s:o, s:o, "
        "s:s%, s:O, s:O?, s:O?, s:o?, s:O?}",
        "id", g->run_id, "kind", kind_name(g->kind), "created", g->created, "model", a->model_id, "prompt",
        g->prompt_text, "messages", g->messages, "params", "temperature", sp->temperature, "top_k", sp->top_k,
        "top_p", sp->top_p, "min_p", sp->min_p, "repeat_penalty", sp->repeat_penalty, "seed", (json_int_t)sp->seed,
        "max_tokens", g->n_predict, "n_prompt", g->n_prompt, "n_output", g->n_out, "stop", g->stop, "prompt_ids",
        api_ids_json(g->prompt, g->n_prompt), "output_ids", api_ids_json(g->out, g->n_out), "tokens", tokens, "text",
        g->text ? g->text : "", g->text_len, "steps", g->steps, "branch", g->branch, "interventions",
        g->interventions, "experts", experts, "documents", g->documents);
    if (d && a->upstream_url) upstream_doc(a, d);
    return d;
}

/* On the engine thread: ends the recording and saves it with its JSON in
 * the store. Returns 0 (stored under g->run_id), 1 (nothing to store: the
 * recording failed before its prompt was recorded) or -1 (the store failed;
 * the message in err). */
static int gen_finish(gen *g, char *err, size_t err_size) {
    api *a = g->api;
    api_metrics_generation(a, g);
    heed_run *run = NULL;
    if (g->parent) store_run_lock(g->parent); /* the session copies the rest of its prefix from it */
    int rc = g->up_run ? HEED_OK : g->sess ? heed_gen_finish(g->sess, &run) : HEED_ERR_INVALID_ARG;
    if (g->up_run) run = g->up_run, g->up_run = NULL; /* made by upstream.c */
    heed_gen_free(g->sess); /* also removes the hook when finish was refused */
    g->sess = NULL;
    if (g->parent) {
        store_run_unlock(g->parent);
        store_release(a->store, g->parent);
        g->parent = NULL;
    }
    if (rc) return 1;

    json_t *doc = run_doc(g);
    char *doc_s = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_t *params = doc ? json_object_get(doc, "params") : NULL;
    char *params_s = params ? json_dumps(params, JSON_COMPACT) : NULL;
    store_row row = {.id = g->run_id, .model = a->model_id, .prompt = g->prompt_text, .params = params_s,
                     .text = g->text ? g->text : "", .kind = kind_name(g->kind), .stop = g->stop, .doc = doc_s,
                     .created = g->created, .n_prompt = g->n_prompt, .n_output = g->n_out};
    int st = -1;
    if (!doc_s || !params_s) {
        heed_run_free(run);
        snprintf(err, err_size, "out of memory");
    } else if (store_put(a->store, &row, run, err, err_size)) {
        fprintf(stderr, "heed: cannot store %s: %s\n", g->run_id, err);
    } else {
        st = 0;
        if (g->cache_key && (!strcmp(g->stop, "length") || !strcmp(g->stop, "eog")))
            req_cache_put(a, g->cache_key, g->run_id);
        /* the context holds this run's KV cache until the next generation: a branch of it may keep it */
        if (!g->head_scale && !g->n_knockouts && !g->ablate_mean && !g->n_edits && !g->n_patches)
            snprintf(a->eng.kv_run, sizeof a->eng.kv_run, "%s", g->run_id);
    }
    free(doc_s);
    free(params_s);
    json_decref(doc);
    return st;
}

/* ------------------------------------------------------------ streams */
/* On the engine thread: the whole generation, from the prompt to the store,
 * its events written as it goes. */
static void gen_execute(gen *g) {
    api *a = g->api;
    if (atomic_load(&a->stopping)) {
        api_gen_fail(g, 503, "shutting_down", "the server is shutting down");
        return;
    }
    if (atomic_load(&g->gone)) return; /* the client left while it waited */
    char err[512];
    if (a->upstream_url) { /* made by the upstream (upstream.c), stored as a local one */
        g->t_started = g->t_prompt = api_mono_s();
        int up = upstream_generate(g, err, sizeof err);
        if (up == 1) return; /* nothing to store; the failure is reported */
        char msg[600];
        int st = gen_finish(g, msg, sizeof msg);
        if (st) {
            char m2[700];
            snprintf(m2, sizeof m2, "the run could not be stored: %s", st < 0 ? msg : "the recording failed");
            api_gen_fail(g, 507, "store_failed", m2);
        } else if (up == 2) {
            char m2[800];
            snprintf(m2, sizeof m2, "%s; what was received is stored as %s (stop \"upstream_error\")", err, g->run_id);
            api_gen_fail(g, 502, "upstream_error", m2);
        } else if (g->streamed) {
            api_stream_done(g);
        }
        return;
    }
    g->t_started = api_mono_s();
    int rc = gen_start(g);
    g->t_prompt = api_mono_s();
    if (rc) {
        g->stop = "error";
        snprintf(err, sizeof err, "generation failed: %s", heed_ctx_error(a->eng.ctx));
        api_gen_fail(g, 500, "engine_error", err);
        gen_finish(g, err, sizeof err);
        return;
    }
    if (g->streamed && g->kind == GEN_CHAT) {
        json_t *c = api_oai_chunk(g, NULL, true);
        json_object_set_new(json_array_get(json_object_get(c, "choices"), 0), "finish_reason", json_null());
        api_sse_event(g, NULL, c);
    }
    json_t *ev;
    do {
        rc = gen_step(g, &ev);
        api_emit_step(g, ev);
        api_monitor_token(g, ev);
        if (ev) {
            g->t_last = api_mono_s();
            if (!g->t_first) g->t_first = g->t_last;
        }
    } while (rc == 0);
    if (rc < 0) {
        g->stop = "error";
        snprintf(err, sizeof err, "generation failed: %s", heed_strerror(rc));
        api_gen_fail(g, 500, "engine_error", err);
        gen_finish(g, err, sizeof err);
        return;
    }
    int st = gen_finish(g, err, sizeof err);
    if (st) {
        /* nothing may claim a run id that does not exist */
        char msg[600];
        snprintf(msg, sizeof msg, "the run could not be stored: %s", st < 0 ? err : "the recording failed");
        api_gen_fail(g, 507, "store_failed", msg);
    } else if (g->streamed) {
        api_stream_done(g);
    }
}

/* Drops one reference (under nothing); frees g with the last. */
void api_gen_release(gen *g) {
    engine *e = &g->api->eng;
    pthread_mutex_lock(&e->mu);
    int left = --g->refs;
    pthread_mutex_unlock(&e->mu);
    if (!left) api_gen_free(g);
}

void *api_engine_main(void *arg) {
    api *a = arg;
    engine *e = &a->eng;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        while (!e->head && !atomic_load(&a->stopping)) pthread_cond_wait(&e->cv, &e->mu);
        if (!e->head) break; /* stopping, and every queued request has had its answer */
        gen *g = e->head->g;
        g->phase = G_RUNNING;
        pthread_cond_broadcast(&e->cv);
        pthread_mutex_unlock(&e->mu);
        gen_execute(g);
        pthread_mutex_lock(&e->mu);
        api_queue_remove_locked(e, &g->tk);
        g->phase = G_END;
        pthread_cond_broadcast(&e->cv);
        pthread_mutex_unlock(&e->mu);
        api_gen_release(g);
        pthread_mutex_lock(&e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* Puts g in the engine's queue (the engine takes its own reference).
 * False when the server is stopping. */
bool api_engine_enqueue(api *a, gen *g) {
    engine *e = &a->eng;
    pthread_mutex_lock(&e->mu);
    bool ok = !atomic_load(&a->stopping);
    if (ok) {
        ticket *t = &g->tk;
        t->g = g;
        t->next = NULL;
        t->prev = e->tail;
        if (e->tail) e->tail->next = t;
        else e->head = t;
        e->tail = t;
        t->queued = true;
        g->t_queued = api_mono_s();
        g->refs++;
        g->phase = G_QUEUED;
        pthread_cond_broadcast(&e->cv);
    }
    pthread_mutex_unlock(&e->mu);
    return ok;
}

/* Runs a whole generation (the non-streaming routes): queued, then waited
 * for. Returns 0, or an HTTP status with rp filled. */
int api_gen_run(gen *g, api_reply *rp) {
    api *a = g->api;
    if (!api_engine_enqueue(a, g)) {
        api_error(rp, 503, NULL, "shutting_down", "the server is shutting down");
        return 503;
    }
    engine *e = &a->eng;
    pthread_mutex_lock(&e->mu);
    while (g->phase != G_END) pthread_cond_wait(&e->cv, &e->mu);
    pthread_mutex_unlock(&e->mu);
    if (g->fail_status) {
        api_error(rp, g->fail_status, NULL, g->fail_code, "%s", g->fail_msg);
        return g->fail_status;
    }
    return 0;
}

/* A stored run for the same request (request cache), as a document to
 * replay; NULL when there is none (or it was deleted). */
json_t *api_cached_run(api *a, const char *key) {
    char id[40], *doc = NULL;
    if (!key || !req_cache_get(a, key, id, sizeof id) || store_get_doc(a->store, id, &doc)) return NULL;
    json_t *d = json_loads(doc, 0, NULL);
    free(doc);
    return d;
}
