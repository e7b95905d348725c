/*
 * api.c - the server's handlers (contract in api.h; routes and shapes in
 * docs/API.md): the route table, the helpers every handler uses (JSON
 * replies and errors, request parameters and query arguments), the small
 * routes (health, model, tokenize), and the api's lifetime.
 *
 * The rest, by concern: api_gen.c (the engine thread and a generation, from
 * a request to the run store), api_stream.c (Server-Sent Events, the heed and
 * OpenAI event shapes, the generating routes), api_runs.c (stored runs and
 * the view cache), api_view.c (views of a run), api_snapshot.c (the offline
 * export's views).
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

/* Replies j (taken) with reals printed to prec significant digits (0: 17,
 * jansson's default; 9 is enough for any float to read back exactly). */
void api_reply_json_prec(api_reply *rp, int status, json_t *j, int prec) {
    rp->status = status;
    rp->content_type = "application/json";
    rp->body = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(prec));
    rp->body_len = rp->body ? strlen(rp->body) : 0;
    json_decref(j);
    if (!rp->body) rp->status = 500;
}

void api_reply_json(api_reply *rp, int status, json_t *j) { api_reply_json_prec(rp, status, j, 0); }
const char *api_error_type(int status) {
    switch (status) {
    case 401: return "authentication_error";
    case 404: return "not_found_error";
    case 405: return "method_not_allowed";
    case 413: return "request_too_large";
    case 503: return "service_unavailable";
    default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

/* Length of the valid UTF-8 character at s (n > 0 bytes left): 1..4, or 0
 * (an invalid or cut byte sequence; overlongs and surrogates are invalid,
 * as JSON encoders require). */
static int utf8_char_len(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    int len = c < 0x80 ? 1 : c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
    if (!len || (size_t)len > n) return 0;
    for (int i = 1; i < len; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if (c == 0xe0 && s[1] < 0xa0) return 0; /* overlong */
    if (c == 0xed && s[1] > 0x9f) return 0; /* surrogate */
    if (c == 0xf0 && s[1] < 0x90) return 0; /* overlong */
    if (c == 0xf4 && s[1] > 0x8f) return 0; /* above U+10FFFF */
    return len;
}

/* Copies src into dst (size > 0) as valid UTF-8 without control
 * characters: each invalid byte or control becomes "\xNN", and the text is
 * cut at a character boundary when it does not fit. Client input echoed in
 * an error must not break the reply's JSON. */
static void text_sanitize(char *dst, size_t size, const char *src) {
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)src;
    size_t n = strlen(src);
    while (n > 0) {
        int len = utf8_char_len(p, n);
        if (len == 1 && p[0] < 0x20 && p[0] != '\n' && p[0] != '\t') len = 0;
        if (len > 0) {
            if (o + (size_t)len >= size) break;
            memcpy(dst + o, p, (size_t)len);
            o += (size_t)len;
            p += len;
            n -= (size_t)len;
        } else {
            if (o + 4 >= size) break;
            snprintf(dst + o, size - o, "\\x%02x", p[0]);
            o += 4;
            p++;
            n--;
        }
    }
    dst[o] = 0;
}

void api_error(api_reply *rp, int status, const char *param, const char *code, const char *fmt, ...) {
    char raw[1024], msg[512], par[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    text_sanitize(msg, sizeof msg, raw);
    if (param) text_sanitize(par, sizeof par, param);
    json_t *e = json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", msg, "type", api_error_type(status),
                          "param", param ? par : NULL, "code", code);
    free(rp->body);
    rp->body = NULL;
    api_reply_json(rp, status, e);
}

/* ------------------------------------------------------------ parameters */
/* One numeric parameter: its range and the rule named in the error. */
typedef struct num_rule {
    const char *name;
    double lo, hi;
    bool lo_open, integer;
    const char *rule;
} num_rule;
static const num_rule num_rules[] = {
    {"max_tokens", 0, 9.2e18, false, true, "must be an integer >= 0"}, /* above the cap: cut to it */
    {"temperature", 0, 1e6, false, false, "must be >= 0"},
    {"top_k", 0, 1 << 30, false, true, "must be an integer >= 0"},
    {"top_p", 0, 1, true, false, "must be in (0, 1]"},
    {"min_p", 0, 1, false, false, "must be in [0, 1]"},
    {"repeat_penalty", 0, 1e6, true, false, "must be > 0"},
    {"seed", 0, 9.2e18, false, true, "must be an integer >= 0"},
};
/* Reads member `name` of o (absent or null: *v unchanged). False, with rp
 * filled, when it breaks its rule. */
bool api_get_num(json_t *o, const char *name, double *v, api_reply *rp) {
    json_t *j = json_object_get(o, name);
    if (!j || json_is_null(j)) return true;
    const num_rule *r = NULL;
    for (size_t i = 0; i < sizeof num_rules / sizeof *num_rules; i++)
        if (!strcmp(num_rules[i].name, name)) r = &num_rules[i];
    double x = json_is_integer(j) ? (double)json_integer_value(j) : json_is_real(j) ? json_real_value(j) : NAN;
    bool ok = r && isfinite(x) && x <= r->hi && (r->lo_open ? x > r->lo : x >= r->lo) &&
              (!r->integer || json_is_integer(j) || x == floor(x));
    if (!ok) {
        api_error(rp, 400, name, "invalid_parameter", "%s %s", name, r ? r->rule : "is invalid");
        return false;
    }
    *v = x;
    return true;
}

bool api_get_bool(json_t *o, const char *name, bool *v, api_reply *rp) {
    json_t *j = json_object_get(o, name);
    if (!j || json_is_null(j)) return true;
    if (!json_is_boolean(j)) {
        api_error(rp, 400, name, "invalid_parameter", "%s must be true or false", name);
        return false;
    }
    *v = json_is_true(j);
    return true;
}

void api_reply_store_error(api_reply *rp, int rc, const char *id, const char *err) {
    if (rc == HEED_ERR_NOT_FOUND) api_error(rp, 404, "id", "run_not_found", "no run '%s'", id);
    else api_error(rp, 500, NULL, "store_error", "run store: %s (%s)", err, heed_strerror(rc));
}

store_run *api_run_acquire(api *a, const char *id, api_reply *rp) {
    store_run *sr;
    char err[512] = "";
    int rc = store_acquire(a->store, id, &sr, err, sizeof err);
    if (rc) {
        api_reply_store_error(rp, rc, id, err);
        return NULL;
    }
    return sr;
}

/* Parses the body as a JSON object; false with a 400 in rp otherwise
 * (jansson also rejects invalid UTF-8 and NUL characters). */
json_t *api_parse_body(const api_req *rq, api_reply *rp) {
    json_error_t je;
    json_t *j = rq->body_len ? json_loadb(rq->body, rq->body_len, 0, &je) : NULL;
    if (!j) {
        api_error(rp, 400, NULL, "invalid_json", "the body is not valid JSON: %s",
                  rq->body_len ? je.text : "it is empty");
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        api_error(rp, 400, NULL, "invalid_json", "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* ------------------------------------------------------------ generation */
json_t *api_floats_json(const float *x, int n) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(arr, json_real(x[i]));
    return arr;
}

/* A step's split view as the API gives it: w = prompt part (np) then the
 * output part (t), with the raw masses. */
json_t *api_split_json(const float *w, int np, int t, float in_mass, float out_mass) {
    return json_pack("{s:o, s:o, s:f, s:f}", "prompt", api_floats_json(w, np), "output", api_floats_json(w + np, t),
                     "prompt_mass", in_mass, "output_mass", out_mass);
}

json_t *api_label_json(const heed_model *m, int32_t id) {
    char label[LABEL_MAX];
    heed_token_label(m, id, label, sizeof label);
    return json_string(label);
}

json_t *api_ids_json(const int32_t *ids, int n) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
    return arr;
}

static int h_health(api *a, const api_req *rq, api_reply *rp) {
    api_reply_json(rp, 200, json_pack("{s:s}", "status", "ok"));
    return 0;
}

static int h_model(api *a, const api_req *rq, api_reply *rp) {
    const heed_model_info *i = &a->info;
    const char *tmpl = heed_chat_template(a->model);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, "
                          "s:b, s:i, s:i, s:i, s:b, s:b, s:s?, s:{s:i, s:i, s:i}}",
                          "id", a->model_id, "path", i->path, "arch", i->arch, "name", i->name, "tokenizer",
                          i->tokenizer, "file_size", (json_int_t)i->file_size, "n_layer", i->n_layer, "n_embd",
                          i->n_embd, "n_head", i->n_head, "n_head_kv", i->n_head_kv, "head_dim", i->head_dim,
                          "n_ff", i->n_ff, "n_vocab", i->n_vocab, "n_ctx_train", i->n_ctx_train, "n_ctx", a->n_ctx,
                          "rope_base", i->rope_base, "rms_eps", i->rms_eps, "tied_output", i->tied_output, "bos",
                          i->bos, "eos", i->eos, "eot", i->eot, "add_bos", i->add_bos, "can_tokenize",
                          i->can_tokenize, "chat_template", tmpl, "limits", "max_tokens", a->cfg.max_tokens,
                          "max_prompt", a->cfg.max_prompt, "attention_tokens_top_k", a->cfg.attn_top_k);
    /* each layer's attention rule and the routing: keys a layer sees (0 = every earlier position),
     * the soft-caps (0 = none), the experts (0 = dense) */
    json_t *win = json_array();
    for (int l = 0; l < i->n_layer; l++)
        json_array_append_new(win, json_integer(i->layer_window ? i->layer_window[l] : 0));
    json_object_set_new(o, "layer_window", win);
    json_object_set_new(o, "attn_softcap", json_real(i->attn_softcap));
    json_object_set_new(o, "final_softcap", json_real(i->final_softcap));
    json_object_set_new(o, "n_expert", json_integer(i->n_expert));
    json_object_set_new(o, "n_expert_used", json_integer(i->n_expert_used));
    api_reply_json(rp, 200, o);
    return 0;
}

/* The bytes token id decodes to (special tokens: none), as numbers. */
static json_t *bytes_json(const heed_model *m, int32_t id) {
    char b[BYTES_MAX];
    int n = heed_token_bytes(m, id, b, sizeof b);
    json_t *arr = json_array();
    for (int i = 0; i < n && i < BYTES_MAX; i++) json_array_append_new(arr, json_integer((unsigned char)b[i]));
    return arr;
}

static int h_tokenize(api *a, const api_req *rq, api_reply *rp) {
    json_t *body = api_parse_body(rq, rp), *text = body ? json_object_get(body, "text") : NULL;
    bool bos = a->info.add_bos, special = false;
    if (!body || !api_get_bool(body, "add_bos", &bos, rp) || !api_get_bool(body, "special", &special, rp)) goto done;
    if (!json_is_string(text)) {
        api_error(rp, 400, "text", "invalid_parameter", "text must be a string");
        goto done;
    }
    unsigned flags = (bos ? HEED_TOK_ADD_BOS : 0) | (special ? HEED_TOK_PARSE_SPECIAL : 0);
    const char *s = json_string_value(text);
    size_t len = json_string_length(text);
    int n = heed_tokenize_flags(a->model, s, len, flags, NULL, 0);
    int32_t *ids = n > 0 ? malloc(sizeof(int32_t) * (size_t)n) : NULL;
    if (ids) n = heed_tokenize_flags(a->model, s, len, flags, ids, n);
    if (n < 0) {
        api_error(rp, 400, "text", "cannot_tokenize", "cannot tokenize the text: %s", heed_strerror(n));
    } else {
        json_t *tokens = json_array();
        for (int i = 0; i < n && ids; i++) {
            const char *piece = heed_token_piece(a->model, ids[i]);
            json_array_append_new(tokens, json_pack("{s:i, s:s, s:o, s:o}", "id", ids[i], "piece", piece ? piece : "",
                                                    "label", api_label_json(a->model, ids[i]), "bytes",
                                                    bytes_json(a->model, ids[i])));
        }
        api_reply_json(rp, 200, json_pack("{s:o, s:o}", "ids", api_ids_json(ids, ids ? n : 0), "tokens", tokens));
    }
    free(ids);
done:
    json_decref(body);
    return 0;
}

/* Query argument `name`, or NULL. */
const char *api_arg(const api_req *rq, const char *name) {
    for (int i = 0; rq->args && rq->args[i]; i += 2)
        if (!strcmp(rq->args[i], name)) return rq->args[i + 1] ? rq->args[i + 1] : "";
    return NULL;
}

/* Integer argument in [lo, hi]; absent: *v unchanged. False with a 400 naming it. */
bool api_arg_int(const api_req *rq, const char *name, long lo, long hi, long *v, api_reply *rp) {
    const char *s = api_arg(rq, name);
    if (!s) return true;
    char *end;
    long x = strtol(s, &end, 10);
    if (!*s || *end || x < lo || x > hi) {
        api_error(rp, 400, name, "invalid_parameter", "%s must be an integer in [%ld, %ld]", name, lo, hi);
        return false;
    }
    *v = x;
    return true;
}

bool api_arg_float(const api_req *rq, const char *name, double lo, double hi, double *v, api_reply *rp) {
    const char *s = api_arg(rq, name);
    if (!s) return true;
    char *end;
    double x = strtod(s, &end);
    if (!*s || *end || !(x >= lo && x <= hi)) {
        api_error(rp, 400, name, "invalid_parameter", "%s must be a number in [%g, %g]", name, lo, hi);
        return false;
    }
    *v = x;
    return true;
}

/* One of the words in choices (absent: index 0). Returns the index or -1 with a 400. */
int api_arg_enum(const api_req *rq, const char *name, const char *const *choices, int n, api_reply *rp) {
    const char *s = api_arg(rq, name);
    if (!s) return 0;
    for (int i = 0; i < n; i++)
        if (!strcmp(s, choices[i])) return i;
    api_error(rp, 400, name, "invalid_parameter", "%s must be %s or %s", name, choices[0], choices[n - 1]);
    return -1;
}

void api_reply_body(api_reply *rp, char *body, size_t len, const char *type) {
    rp->status = body ? 200 : 500;
    rp->content_type = type;
    rp->body = body;
    rp->body_len = body ? len : 0;
}

/* ------------------------------------------------------------ metrics */

static const int metric_statuses[API_METRIC_STATUSES - 1] = {200, 204, 400, 401, 404, 405, 409,
                                                              413, 422, 429, 500, 503, 507};

void api_metrics_request(api *a, int route, int status) {
    int r = route >= 0 && route < API_METRIC_ROUTES - 1 ? route : API_METRIC_ROUTES - 1, k = 0;
    while (k < API_METRIC_STATUSES - 1 && metric_statuses[k] != status) k++;
    atomic_fetch_add(&a->metrics.requests[r][k], 1);
}

static unsigned long long us(double s) { return s > 0 ? (unsigned long long)(s * 1e6 + 0.5) : 0; }

void api_metrics_generation(api *a, const gen *g) {
    api_metrics *m = &a->metrics;
    atomic_fetch_add(&m->generations, 1);
    atomic_fetch_add(&m->tokens, (unsigned long)g->n_out);
    atomic_fetch_add(&m->prompt_tokens, (unsigned long)g->n_prompt);
    if (g->stop && !strcmp(g->stop, "cancelled")) atomic_fetch_add(&m->cancelled, 1);
    if (g->t_started > 0) atomic_fetch_add(&m->queue_us, us(g->t_started - g->t_queued));
    if (g->t_prompt > 0) atomic_fetch_add(&m->prompt_us, us(g->t_prompt - g->t_started));
    if (g->t_first > 0) {
        atomic_fetch_add(&m->first_token_us, us(g->t_first - g->t_prompt));
        atomic_fetch_add(&m->first_token_n, 1);
    }
    if (g->n_out > 1 && g->t_last > g->t_first) atomic_fetch_add(&m->decode_us, us(g->t_last - g->t_first));
}

/* GET /metrics: Prometheus text format, version 0.0.4. */
static int h_metrics(api *a, const api_req *rq, api_reply *rp) {
    (void)rq;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    if (!b) return api_error(rp, 500, NULL, "out_of_memory", "out of memory"), 0;
#define OUT(...)                                                                                                       \
    do {                                                                                                               \
        if (n < cap) n += (size_t)snprintf(b + n, cap - n, __VA_ARGS__);                                               \
    } while (0)
    int n_routes;
    const api_route *routes = api_routes(&n_routes);
    OUT("# HELP heed_requests_total HTTP requests, by route and status.\n# TYPE heed_requests_total counter\n");
    for (int r = 0; r < API_METRIC_ROUTES; r++)
        for (int k = 0; k < API_METRIC_STATUSES; k++) {
            unsigned long c = atomic_load(&a->metrics.requests[r][k]);
            if (!c) continue;
            char st[8];
            if (k < API_METRIC_STATUSES - 1) snprintf(st, sizeof st, "%d", metric_statuses[k]);
            else snprintf(st, sizeof st, "other");
            if (r < n_routes && r < API_METRIC_ROUTES - 1)
                OUT("heed_requests_total{method=\"%s\",route=\"%s\",status=\"%s\"} %lu\n", routes[r].method,
                    routes[r].pattern, st, c);
            else
                OUT("heed_requests_total{method=\"\",route=\"other\",status=\"%s\"} %lu\n", st, c);
        }
    api_metrics *m = &a->metrics;
    unsigned long gens = atomic_load(&m->generations);
    /* a metric's HELP and TYPE lines, then its sample (the name written once) */
#define HEAD(name, type, help) OUT("# HELP " name " " help "\n# TYPE " name " " type "\n")
#define METRIC(name, type, help, fmt, v) OUT("# HELP " name " " help "\n# TYPE " name " " type "\n" name " " fmt "\n", v)
    METRIC("heed_generations_total", "counter", "Generations finished (stored or not).", "%lu", gens);
    METRIC("heed_generations_cancelled_total", "counter", "Generations whose client left or fell behind.", "%lu",
           (unsigned long)atomic_load(&m->cancelled));
    METRIC("heed_tokens_generated_total", "counter", "Tokens generated.", "%lu", (unsigned long)atomic_load(&m->tokens));
    METRIC("heed_prompt_tokens_total", "counter", "Prompt tokens processed.", "%lu",
           (unsigned long)atomic_load(&m->prompt_tokens));
    METRIC("heed_decode_seconds_total", "counter",
           "Time decoding after each generation's first token (tokens/s = tokens after the first / this).", "%.6f",
           atomic_load(&m->decode_us) / 1e6);
    METRIC("heed_prompt_seconds_total", "counter", "Time processing prompts.", "%.6f", atomic_load(&m->prompt_us) / 1e6);
    HEAD("heed_time_to_first_token_seconds", "summary", "Time from the end of the prompt to the first token.");
    OUT("heed_time_to_first_token_seconds_sum %.6f\nheed_time_to_first_token_seconds_count %llu\n",
        atomic_load(&m->first_token_us) / 1e6, (unsigned long long)atomic_load(&m->first_token_n));
    HEAD("heed_queue_wait_seconds", "summary", "Time generations waited in the queue.");
    OUT("heed_queue_wait_seconds_sum %.6f\nheed_queue_wait_seconds_count %lu\n", atomic_load(&m->queue_us) / 1e6, gens);
    pthread_mutex_lock(&a->eng.mu);
    int depth = 0;
    for (ticket *t = a->eng.head; t; t = t->next) depth++;
    int streams = a->eng.n_streams;
    pthread_mutex_unlock(&a->eng.mu);
    METRIC("heed_queue_depth", "gauge", "Generations waiting or running.", "%d", depth);
    METRIC("heed_streams_open", "gauge", "Streams open to clients.", "%d", streams);
    long long total = 0;
    char *list = NULL;
    if (!store_list(a->store, 1, 0, &list, &total)) free(list);
    METRIC("heed_runs_stored", "gauge", "Runs in the store.", "%lld", total);
    unsigned long mon_subs, mon_events, mon_dropped;
    double mon_s;
    api_monitor_counters(a, &mon_subs, &mon_events, &mon_dropped, &mon_s);
    METRIC("heed_monitor_subscribers", "gauge", "Clients subscribed to GET /api/monitor.", "%lu", mon_subs);
    METRIC("heed_monitor_events_total", "counter", "Tokens reported to /api/monitor (once per token, all subscribers).",
           "%lu", mon_events);
    METRIC("heed_monitor_dropped_total", "counter", "Monitor subscribers dropped for falling too far behind.", "%lu",
           mon_dropped);
    METRIC("heed_capture_seconds_total", "counter",
           "Engine time reading the live recording per token for /api/monitor (row, statistics, events).", "%.6f",
           mon_s);
    METRIC("heed_capture_bytes_per_position", "gauge",
           "Bytes a generation's recording (q/k tier) takes per position, plus the summary rows.", "%llu",
           (unsigned long long)heed_record_bytes(a->model, true));
    METRIC("heed_uptime_seconds", "gauge", "Seconds since the server started.", "%lld", (long long)time(NULL) - a->started);
#undef METRIC
#undef HEAD
#undef OUT
    if (n >= cap) n = cap - 1;
    api_reply_body(rp, b, n, "text/plain; version=0.0.4");
    return 0;
}

/* The query arguments each route reads; any other is refused (400), so a
 * view's cache key holds only what decides its reply. */
static const char *const args_none[] = {NULL}, *const args_list[] = {"limit", "offset", NULL},
                         *const args_graph[] = {"layer", "head", "agg", "measure", "from", "to", "format", NULL},
                         *const args_stats[] = {"layer", "head", "agg", NULL},
                         *const args_attention[] = {"layer", "head", "agg", "measure", "norm", "format", "dtype", "threshold",
                                                    "topk", "step", "pos", "key", NULL},
                         *const args_heatmap[] = {"layer", "head", "agg", "measure", "pool", "format", "dtype", "q0", "q1",
                                                  "k0", "k1", "size", NULL},
                         *const args_step[] = {"step", NULL}, *const args_lens[] = {"from", "to", NULL},
                         *const args_effects[] = {"base", NULL}, *const args_pos[] = {"pos", NULL},
                         *const args_format[] = {"format", NULL},
                         *const args_verify[] = {"step", "k", "layer", "head", "agg", "measure", NULL},
                         *const args_provenance[] = {"verify", NULL};
#define ROUTE(m, p, f, a) {.method = m, .pattern = p, .fn = f, .args = a}
#define ROUTE_GEN(m, p, f) {.method = m, .pattern = p, .fn = f, .args = args_none, .generates = true}

static const api_route routes[] = {
    ROUTE("GET", "/api/health", h_health, NULL),
    ROUTE("GET", "/metrics", h_metrics, args_none),
    ROUTE("GET", "/api/monitor", api_route_monitor, args_none),
    ROUTE("GET", "/api/model", h_model, NULL),
    ROUTE("POST", "/api/tokenize", h_tokenize, NULL),
    ROUTE("GET", "/api/runs", api_route_run_list, args_list),
    {.method = "POST", .pattern = "/api/runs/upload", .fn = api_route_run_upload, .args = args_none,
     .max_body = API_MAX_UPLOAD},
    ROUTE_GEN("POST", "/api/runs", api_route_run_create),
    ROUTE("GET", "/api/runs/{id}", api_route_run_get, args_none),
    ROUTE("DELETE", "/api/runs/{id}", api_route_run_delete, args_none),
    ROUTE("GET", "/api/runs/{id}/attention", api_route_run_attention, args_attention),
    ROUTE("GET", "/api/runs/{id}/graph", api_route_run_graph, args_graph),
    ROUTE("GET", "/api/runs/{id}/heatmap", api_route_run_heatmap, args_heatmap),
    ROUTE("GET", "/api/runs/{id}/candidates", api_route_run_candidates, args_step),
    ROUTE("GET", "/api/runs/{id}/logit-lens", api_route_run_lens, args_lens),
    ROUTE("GET", "/api/runs/{id}/stats", api_route_run_stats, args_stats),
    ROUTE("GET", "/api/runs/{id}/experts", api_route_run_experts, args_lens),
    ROUTE("GET", "/api/runs/{id}/effects", api_route_run_effects, args_effects),
    ROUTE("GET", "/api/runs/{id}/rollout", api_route_run_rollout, args_pos),
    ROUTE("GET", "/api/runs/{id}/download", api_route_run_download, args_format),
    ROUTE("GET", "/api/runs/{id}/verify", api_route_run_verify, args_verify),
    ROUTE("GET", "/api/runs/{id}/provenance", api_route_run_provenance, args_provenance),
    ROUTE("GET", "/v1/models", api_route_v1_models, NULL),
    ROUTE_GEN("POST", "/v1/completions", api_route_v1_completions),
    ROUTE_GEN("POST", "/v1/chat/completions", api_route_v1_chat),
};
#undef ROUTE
#undef ROUTE_GEN
bool api_args_ok(const api_route *r, const char *const *args, api_reply *rp) {
    for (int i = 0; r->args && args && args[i]; i += 2) {
        bool known = false;
        for (int k = 0; r->args[k] && !known; k++) known = !strcmp(args[i], r->args[k]);
        if (!known) {
            char list[256] = "";
            for (int k = 0; r->args[k]; k++)
                snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", k ? ", " : "", r->args[k]);
            api_error(rp, 400, args[i], "unknown_parameter", "unknown query argument '%s' (this route reads: %s)",
                      args[i], list[0] ? list : "none");
            return false;
        }
        for (int j = 0; j < i; j += 2)
            if (!strcmp(args[i], args[j])) {
                api_error(rp, 400, args[i], "invalid_parameter", "query argument '%s' is given twice", args[i]);
                return false;
            }
    }
    return true;
}

size_t api_route_max_body(const api_route *r) { return r && r->max_body ? r->max_body : API_MAX_BODY; }

const api_route *api_routes(int *n) {
    *n = (int)(sizeof routes / sizeof *routes);
    return routes;
}

/* ------------------------------------------------------------ snapshot */
int api_new(const api_config *cfg, api **out, char *err, size_t err_size) {
    *out = NULL;
    api *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, err_size, "out of memory");
        return HEED_ERR_NOMEM;
    }
    a->cfg = *cfg;
    if (!a->cfg.stream_buffer) a->cfg.stream_buffer = (size_t)1 << 20;
    if (a->cfg.stream_stall_s <= 0) a->cfg.stream_stall_s = 30;
    a->started = (long long)time(NULL);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    a->id_stem = (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
    pthread_mutex_init(&a->eng.mu, NULL);
    pthread_cond_init(&a->eng.cv, NULL);
    pthread_mutex_init(&a->runs_mu, NULL);
    pthread_mutex_init(&a->view.lens_mu, NULL);
    heed_model_params mp = heed_model_default_params();
    int rc = heed_model_load(cfg->model_path, &mp, &a->model, err, err_size);
    if (rc) goto fail;
    heed_model_get_info(a->model, &a->info);
    const char *base = strrchr(a->info.path, '/');
    snprintf(a->model_id, sizeof a->model_id, "%s", base ? base + 1 : a->info.path);
    a->view.model = a->model;
    a->view.model_id = a->model_id;
    a->view.n_vocab = a->info.n_vocab;
    a->view.n_threads = cfg->n_threads;
    heed_ctx_params cp = heed_ctx_default_params();
    cp.n_threads = cfg->n_threads;
    /* the model's limit, or --ctx, held to the memory the cache and one
     * generation's recording need (refused, naming a --ctx that fits) */
    uint64_t per_pos = heed_record_bytes(a->model, true), avail = heed_mem_available();
    int fit = avail ? heed_ctx_fit(a->model, (uint64_t)(avail * 0.8), per_pos) : a->info.n_ctx_train;
    if (cfg->n_ctx > a->info.n_ctx_train) {
        snprintf(err, err_size, "--ctx %d exceeds the model's context limit of %d tokens", cfg->n_ctx,
                 a->info.n_ctx_train);
        rc = HEED_ERR_INVALID_ARG;
        goto fail;
    }
    if (cfg->n_ctx && avail && heed_ctx_bytes(a->model, cfg->n_ctx) + per_pos * (uint64_t)cfg->n_ctx > avail) {
        snprintf(err, err_size, "a context of %d tokens needs %.2f GB with its recording but %.2f GB is available; "
                 "--ctx %d fits", cfg->n_ctx,
                 (heed_ctx_bytes(a->model, cfg->n_ctx) + per_pos * (double)cfg->n_ctx) / 1e9, avail / 1e9, fit);
        rc = HEED_ERR_NOMEM;
        goto fail;
    }
    cp.n_ctx = cfg->n_ctx ? cfg->n_ctx : fit < a->info.n_ctx_train ? (fit > 0 ? fit : 1) : a->info.n_ctx_train;
    if ((rc = heed_ctx_new(a->model, &cp, &a->eng.ctx))) {
        snprintf(err, err_size, "cannot create a context: %s", heed_strerror(rc));
        goto fail;
    }
    a->n_ctx = heed_ctx_n_ctx(a->eng.ctx);
    if (!a->cfg.max_prompt) a->cfg.max_prompt = a->n_ctx; /* the limits follow the context */
    if (!a->cfg.max_tokens) a->cfg.max_tokens = a->n_ctx;
    rc = HEED_ERR_NOMEM;
    a->eng.row = calloc((size_t)a->n_ctx + 1, sizeof(float));
    if (!a->eng.row) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    if ((rc = store_open(cfg->data_dir, cfg->cache_runs, cfg->cache_bytes, &a->store, err, err_size))) goto fail;
    rc = HEED_ERR_NOMEM;
    a->rcache = calloc((size_t)cfg->cache_runs, sizeof *a->rcache);
    a->mon = api_monitor_new();
    if (!a->rcache || !a->mon) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    if (pthread_create(&a->eng.thread, NULL, api_engine_main, a)) {
        snprintf(err, err_size, "cannot start the engine thread");
        goto fail;
    }
    a->eng.started = true;
    *out = a;
    return HEED_OK;
fail:
    api_free(a);
    return rc;
}

void api_stop(api *a) {
    if (!a) return;
    pthread_mutex_lock(&a->eng.mu);
    atomic_store(&a->stopping, true);
    pthread_cond_broadcast(&a->eng.cv);
    pthread_mutex_unlock(&a->eng.mu);
    api_monitor_stop(a); /* its streams end too */
}

int api_n_streams(api *a) {
    pthread_mutex_lock(&a->eng.mu);
    int n = a->eng.n_streams;
    pthread_mutex_unlock(&a->eng.mu);
    return n;
}

void api_free(api *a) {
    if (!a) return;
    if (a->eng.started) {
        api_stop(a);
        pthread_join(a->eng.thread, NULL);
    }
    api_monitor_free(a);
    store_close(a->store);
    for (int i = 0; a->rcache && i < a->cfg.cache_runs; i++) free(a->rcache[i].key);
    free(a->rcache);
    free(a->eng.row);
    heed_ctx_free(a->eng.ctx);
    heed_ctx_free(a->view.lens_ctx);
    heed_model_free(a->model);
    free(a->upstream_url);
    free(a->upstream_key);
    pthread_mutex_destroy(&a->view.lens_mu);
    pthread_mutex_destroy(&a->eng.mu);
    pthread_cond_destroy(&a->eng.cv);
    pthread_mutex_destroy(&a->runs_mu);
    free(a);
}
