/*
 * api.c - handlers of `heed serve` (contract in api.h; routes and shapes in
 * docs/API.md).
 *
 * A generation ("gen") is built from a request in the handler - parameters
 * checked, prompt tokenized and measured - so every client error is a plain
 * JSON reply before any event is sent. It then waits in a FIFO ticket queue
 * for the engine thread, which runs it one token per step and ends it in the
 * run store. A streamed generation writes its events into the stream's
 * buffer; api_stream_read, on the connection's own thread, copies them out.
 * A client that leaves (the HTTP layer frees the stream) or falls too far
 * behind (emit) ends its generation at the next token.
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

#include "api.h"
#include "heed.h"
#include "store.h"

#define API_N_TOP 5      /* candidates reported per token */
#define API_WAIT_MS 1000 /* a waiting stream wakes this often to report and to notice a gone client */
#define LABEL_MAX 256
#define BYTES_MAX 512

/* ------------------------------------------------------------ engine */

/* A place in the engine's queue; the head is the generation running. */
typedef struct ticket {
    struct ticket *prev, *next;
    struct gen *g;
    bool queued;
} ticket;

/* One thread runs every generation, one at a time, in arrival order. It
 * never waits for a client: a streamed generation writes its events into
 * the stream's own buffer (bounded: a client too far behind is dropped), and
 * the connection's thread copies them out as the client reads. */
typedef struct engine {
    heed_ctx *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* the queue changed, a stream has new bytes, a generation ended */
    ticket *head, *tail;
    pthread_t thread;
    bool started;
    int n_streams; /* streams handed to the HTTP layer and not yet freed */
    /* Used only by the engine thread: */
    float *row; /* (n_ctx) newest query's row, mean over layers and heads (the live summary) */
} engine;

/* The request cache of the original design: a finished /api/runs request
 * (its prompt's token ids plus the parameters that decide the output) maps
 * to its stored run, and the same request again replays that run instead of
 * generating. Sampling is deterministic for a seed, so the replay is what
 * generation would give. */
typedef struct req_cache_entry {
    char *key;
    char run_id[40];
    unsigned long long used; /* LRU clock */
} req_cache_entry;

struct api {
    heed_model *model;
    heed_model_info info;
    heed_ctx *lens_ctx;    /* scratch of the logit lens computed on request (under lens_mu) */
    pthread_mutex_t lens_mu;
    char model_id[256];
    api_config cfg;
    int n_ctx;
    atomic_bool stopping;
    engine eng;
    store *store;
    pthread_mutex_t runs_mu;
    unsigned long long n_made; /* under runs_mu */
    unsigned long long id_stem; /* run ids: run_STEM_N */
    req_cache_entry *rcache;    /* (cfg.cache_runs), under runs_mu */
    unsigned long long rclock;
    long long started;
};

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Requests ahead of t in the queue (under e->mu). */
static int queue_ahead_locked(const engine *e, const ticket *t) {
    int n = 0;
    for (const ticket *p = e->head; p && p != t; p = p->next) n++;
    return n;
}

static void queue_remove_locked(engine *e, ticket *t) {
    if (!t->queued) return;
    if (t->prev) t->prev->next = t->next;
    else e->head = t->next;
    if (t->next) t->next->prev = t->prev;
    else e->tail = t->prev;
    t->queued = false;
}

/* ------------------------------------------------------------ replies */

/* Replies j (taken) with reals printed to prec significant digits (0: 17,
 * jansson's default; 9 is enough for any float to read back exactly). */
static void reply_json_prec(api_reply *rp, int status, json_t *j, int prec) {
    rp->status = status;
    rp->content_type = "application/json";
    rp->body = json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(prec));
    rp->body_len = rp->body ? strlen(rp->body) : 0;
    json_decref(j);
    if (!rp->body) rp->status = 500;
}

static void reply_json(api_reply *rp, int status, json_t *j) { reply_json_prec(rp, status, j, 0); }

static const char *error_type(int status) {
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
    json_t *e = json_pack("{s:{s:s, s:s, s:s?, s:s?}}", "error", "message", msg, "type", error_type(status),
                          "param", param ? par : NULL, "code", code);
    free(rp->body);
    rp->body = NULL;
    reply_json(rp, status, e);
}

/* ------------------------------------------------------------ parameters */

typedef struct gen_params {
    int max_tokens;
    heed_sampler_params sp;
    bool stream, attn_tokens;
    bool attn_split; /* /api/runs: token events carry the step's split view */
} gen_params;

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
static bool get_num(json_t *o, const char *name, double *v, api_reply *rp) {
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

static bool get_bool(json_t *o, const char *name, bool *v, api_reply *rp) {
    json_t *j = json_object_get(o, name);
    if (!j || json_is_null(j)) return true;
    if (!json_is_boolean(j)) {
        api_error(rp, 400, name, "invalid_parameter", "%s must be true or false", name);
        return false;
    }
    *v = json_is_true(j);
    return true;
}

static void reply_store_error(api_reply *rp, int found, const char *id, const char *err) {
    if (found == 0) api_error(rp, 404, "id", "run_not_found", "no run '%s'", id);
    else api_error(rp, 500, NULL, "store_error", "run store: %s", err);
}

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
    bool ok = get_num(body, "max_tokens", &mt, rp) && get_num(body, "temperature", &t, rp) &&
              get_num(body, "top_k", &tk, rp) && get_num(body, "top_p", &tp, rp) &&
              get_num(body, "min_p", &mp, rp) && get_num(body, "repeat_penalty", &rpen, rp) &&
              get_num(body, "seed", &seed, rp) && get_bool(body, "stream", &p->stream, rp) &&
              get_bool(body, "return_attention_tokens", &p->attn_tokens, rp) &&
              get_bool(body, "attention_split", &p->attn_split, rp);
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

/* Parses the body as a JSON object; false with a 400 in rp otherwise
 * (jansson also rejects invalid UTF-8 and NUL characters). */
static json_t *parse_body(const api_req *rq, api_reply *rp) {
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

enum { GEN_HEED, GEN_COMPLETION, GEN_CHAT };
/* A generation's phase, under eng.mu: waiting in the queue, running on the
 * engine thread, ended (every event written; or a replay, written whole). */
enum { G_QUEUED, G_RUNNING, G_END };

/* A generation. Owned by references (refs, under eng.mu): the request's
 * (its stream, or the handler waiting for a non-streamed reply) and the
 * engine's while it is queued or running; the last to let go frees it.
 * The engine thread alone touches the generation's state (sampler, recorder,
 * outputs, steps) until phase is G_END; pend, phase and the flags are
 * shared under eng.mu. */
typedef struct gen {
    api *api;
    int kind;
    gen_params p;
    int32_t *prompt;
    int n_prompt, n_predict;
    char *prompt_text; /* NULL when the prompt came as messages */
    json_t *messages;  /* NULL when the prompt came as text */
    ticket tk;
    int refs;
    int phase;
    bool streamed;     /* events go to pend for an SSE reader */
    atomic_bool gone;  /* the client left: the generation ends at its next token */
    atomic_bool dropped; /* the client fell too far behind: dropped, the generation cancelled */
    heed_gen *sess;    /* the generation session, while it runs (on the engine thread) */
    int32_t *out;      /* (n_predict + 1) the outputs so far */
    int n_out;
    char *text;
    size_t text_len, text_cap;
    json_t *steps;
    const char *stop;  /* "length", "eog", "cancelled", "error" */
    char run_id[40];
    bool stored;       /* the run is in the store under run_id */
    long long created;
    /* a failed non-streamed generation: its HTTP status, code and message */
    int fail_status;
    const char *fail_code;
    char fail_msg[256];
    /* stream output not yet copied out (under eng.mu) */
    char *pend;
    size_t pend_len, pend_cap, pend_off;
    double pend_since; /* when the oldest unread bytes began to wait (reads count as progress) */
    int last_ahead;
    char *cache_key;  /* /api/runs requests: the request-cache key, or NULL */
    int32_t *forced;  /* a branch: output tokens taken, not sampled (the earlier run's prefix) */
    int n_forced;
    json_t *branch;   /* a branch: {"run","step","token"?}, kept in the run's document */
    json_t *replay;   /* a cached run's document being replayed */
} gen;

struct api_stream {
    gen *g;
};

static void gen_free(gen *g) {
    if (!g) return;
    free(g->prompt);
    free(g->prompt_text);
    json_decref(g->messages);
    heed_gen_free(g->sess);
    free(g->out);
    free(g->text);
    json_decref(g->steps);
    free(g->pend);
    free(g->cache_key);
    free(g->forced);
    json_decref(g->branch);
    json_decref(g->replay);
    free(g);
}

/* ------------------------------------------------------------ request cache */

/* The prompt's token ids (what the model sees: two texts that tokenize
 * differently are different requests, whatever their whitespace), then the
 * parameters that decide the output. */
static char *req_cache_key(const gen *g) {
    const heed_sampler_params *sp = &g->p.sp;
    json_t *ids = json_array();
    for (int i = 0; ids && i < g->n_prompt; i++) json_array_append_new(ids, json_integer(g->prompt[i]));
    json_t *k = json_pack("{s:o, s:f, s:i, s:f, s:f, s:f, s:i, s:I, s:i}", "prompt_ids", ids, "temperature",
                          sp->temperature, "top_k", sp->top_k, "top_p", sp->top_p, "min_p", sp->min_p,
                          "repeat_penalty", sp->repeat_penalty, "repeat_last_n", sp->repeat_last_n, "seed",
                          (json_int_t)sp->seed, "max_tokens", g->n_predict);
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
    if (!heed_chat_template(a->model)) {
        api_error(rp, 400, "messages", "no_chat_template",
                  "the model %s has no chat template heed knows (Llama 3, ChatML, Llama 2, Mistral)", a->model_id);
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
    json_t *jrun = json_object_get(br, "run"), *jstep = json_object_get(br, "step"), *jtok = json_object_get(br, "token");
    if (!json_is_object(br) || !json_is_string(jrun) || !json_is_integer(jstep) || json_integer_value(jstep) < 0 ||
        (jtok && !json_is_null(jtok) &&
         (!json_is_integer(jtok) || json_integer_value(jtok) < 0 || json_integer_value(jtok) >= a->info.n_vocab))) {
        api_error(rp, 400, "branch", "invalid_parameter",
                  "branch must be {\"run\": id, \"step\": integer >= 0, \"token\": a token id (optional)}");
        return -1;
    }
    char *text = NULL;
    int found = store_get_doc(a->store, json_string_value(jrun), &text);
    if (found <= 0) {
        reply_store_error(rp, found, json_string_value(jrun), "cannot read the run to branch from");
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
        g->branch = json_pack("{s:O, s:i, s:O?}", "run", jrun, "step", step, "token", tok ? jtok : NULL);
        rc = n;
    }
    json_decref(doc);
    return rc;
}

static gen *gen_from_body(api *a, json_t *body, int kind, api_reply *rp) {
    gen *g = calloc(1, sizeof *g);
    int limit = a->cfg.max_prompt < a->n_ctx ? a->cfg.max_prompt : a->n_ctx;
    if (!g || !(g->prompt = malloc(sizeof(int32_t) * ((size_t)limit + 1)))) {
        gen_free(g);
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
           *branch = kind == GEN_HEED ? json_object_get(body, "branch") : NULL;
    int n;
    if (branch && !json_is_null(branch)) {
        if ((n = branch_prompt(a, branch, g, limit, rp)) < 0) goto fail;
    } else if (kind == GEN_CHAT || (kind == GEN_HEED && msgs && !prompt)) {
        if ((n = tokenize_messages(a, msgs, g->prompt, limit + 1, rp)) < 0) goto fail;
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
        n = heed_tokenize(a->model, s, json_string_length(prompt), a->info.add_bos, g->prompt, limit + 1);
        if (n < 0) {
            api_error(rp, 400, "prompt", "invalid_parameter", "cannot tokenize the prompt: %s", heed_strerror(n));
            goto fail;
        }
        g->prompt_text = strdup(s);
    }
    if (n > limit) {
        api_error(rp, 422, kind == GEN_CHAT ? "messages" : "prompt", "prompt_too_long",
                  "the prompt has %d tokens; the limit is %d (%s)", n, limit,
                  limit == a->cfg.max_prompt ? "--max-prompt" : "the context size");
        goto fail;
    }
    if (n == 0) {
        api_error(rp, 400, "prompt", "invalid_parameter", "the prompt is empty");
        goto fail;
    }
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
    gen_free(g);
    return NULL;
}

static bool text_append(gen *g, const char *s, size_t n) {
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

static json_t *floats_json(const float *x, int n) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(arr, json_real(x[i]));
    return arr;
}

/* A step's split view as the API gives it: w = prompt part (np) then the
 * output part (t), with the raw masses. */
static json_t *split_json(const float *w, int np, int t, float in_mass, float out_mass) {
    return json_pack("{s:o, s:o, s:f, s:f}", "prompt", floats_json(w, np), "output", floats_json(w + np, t),
                     "prompt_mass", in_mass, "output_mass", out_mass);
}

static json_t *label_json(const heed_model *m, int32_t id) {
    char label[LABEL_MAX];
    heed_token_label(m, id, label, sizeof label);
    return json_string(label);
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
    /* the default tiers: q/k only (every view's rows come back from them),
     * so the stored run stays small and capture costs generation little */
    gp.record = true;
    gp.rec.n_threads = a->cfg.n_threads;
    gp.rec.live_mean_row = true; /* each token event's attention summary, without recomputing the row */
    return heed_gen_start(a->model, a->eng.ctx, &gp, g->prompt, g->n_prompt, &g->sess);
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
    if (!text_append(g, st.text, st.text_len)) return HEED_ERR_NOMEM;
    json_t *top = json_array();
    for (int i = 0; i < st.n_top; i++)
        json_array_append_new(top, json_pack("{s:i, s:o, s:f}", "id", st.top[i].id, "label",
                                             label_json(m, st.top[i].id), "prob", st.top[i].prob));
    const heed_sample *s = &st.sample;
    json_t *e = json_pack("{s:i, s:i, s:o, s:s%, s:f, s:f, s:o, s:{s:o}}", "index", st.index, "id", s->id, "label",
                          label_json(m, s->id), "text", st.text, st.text_len, "prob", s->prob, "logprob", s->logprob,
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

static json_t *ids_json(const int32_t *ids, int n) {
    json_t *arr = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(arr, json_integer(ids[i]));
    return arr;
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
        json_array_append_new(tokens, json_pack("{s:i, s:o}", "id", id, "label", label_json(a->model, id)));
    }
    const heed_sampler_params *sp = &g->p.sp;
    return json_pack(
        "{s:s, s:s, s:I, s:s, s:s?, s:O?, s:{s:f, s:i, s:f, s:f, s:f, s:I}, s:i, s:i, s:i, s:s, s:o, s:o, s:o, "
        "s:s%, s:O, s:O?}",
        "id", g->run_id, "kind", kind_name(g->kind), "created", g->created, "model", a->model_id, "prompt",
        g->prompt_text, "messages", g->messages, "params", "temperature", sp->temperature, "top_k", sp->top_k,
        "top_p", sp->top_p, "min_p", sp->min_p, "repeat_penalty", sp->repeat_penalty, "seed", (json_int_t)sp->seed,
        "max_tokens", g->n_predict, "n_prompt", g->n_prompt, "n_output", g->n_out, "stop", g->stop, "prompt_ids",
        ids_json(g->prompt, g->n_prompt), "output_ids", ids_json(g->out, g->n_out), "tokens", tokens, "text",
        g->text ? g->text : "", g->text_len, "steps", g->steps, "branch", g->branch);
}

/* On the engine thread: ends the recording and saves it with its JSON in
 * the store. Returns 0 (stored: g->stored), 1 (nothing to store: the
 * recording failed before its prompt was recorded) or -1 (the store failed;
 * the message in err). */
static int gen_finish(gen *g, char *err, size_t err_size) {
    api *a = g->api;
    heed_run *run = NULL;
    int rc = g->sess ? heed_gen_finish(g->sess, &run) : HEED_ERR_INVALID_ARG;
    heed_gen_free(g->sess); /* also removes the hook when finish was refused */
    g->sess = NULL;
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
        g->stored = true;
        if (g->cache_key && (!strcmp(g->stop, "length") || !strcmp(g->stop, "eog")))
            req_cache_put(a, g->cache_key, g->run_id);
    }
    free(doc_s);
    free(params_s);
    json_decref(doc);
    return st;
}

/* ------------------------------------------------------------ streams */

/* Appends to pend (under eng.mu), unbounded: the request's own first
 * events and the reader's heartbeats. */
static bool pend_add_locked(gen *g, const char *s, size_t n) {
    if (g->pend_off > 0 && g->pend_off == g->pend_len) g->pend_off = g->pend_len = 0;
    if (g->pend_len + n > g->pend_cap) {
        size_t cap = g->pend_cap * 2 + n + 1024;
        char *p = realloc(g->pend, cap);
        if (!p) return false;
        g->pend = p;
        g->pend_cap = cap;
    }
    if (g->pend_off == g->pend_len) g->pend_since = mono_s();
    memcpy(g->pend + g->pend_len, s, n);
    g->pend_len += n;
    return true;
}

/* Hands bytes to the stream's reader. While the generation runs, a client
 * that has more than cfg.stream_buffer bytes unread, or has taken nothing
 * for cfg.stream_stall_s seconds, is dropped: the generation ends as
 * cancelled and the connection is closed, so no client holds the engine by
 * reading slowly. */
static void emit(gen *g, const char *s, size_t n) {
    if (!g->streamed) return;
    const api_config *cfg = &g->api->cfg;
    engine *e = &g->api->eng;
    pthread_mutex_lock(&e->mu);
    size_t unread = g->pend_len - g->pend_off;
    if (g->phase == G_RUNNING && unread > 0 &&
        (unread + n > cfg->stream_buffer || mono_s() - g->pend_since > (double)cfg->stream_stall_s)) {
        if (!atomic_exchange(&g->dropped, true))
            fprintf(stderr, "heed: %s: the client is too far behind (%zu bytes unread); dropped\n", g->run_id, unread);
    } else if (!atomic_load(&g->dropped)) {
        pend_add_locked(g, s, n);
    }
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
}

/* The token event as streamed: with "attention_split", a copy whose
 * attention also holds the step's split view (as GET .../attention?norm=split
 * gives it; not stored: the run's views give it later). */
static json_t *with_split(gen *g, json_t *ev) {
    if (!g->p.attn_split) return json_incref(ev);
    int np = g->n_prompt;
    float *w = malloc(sizeof(float) * ((size_t)np + (size_t)g->n_out)), im = 0, om = 0;
    heed_attn_sel all = heed_attn_sel_all();
    int t = w ? heed_recorder_step_view(heed_gen_recorder(g->sess), &all, 0, w, w + np, &im, &om) : HEED_ERR_NOMEM;
    json_t *e = json_copy(ev), *att = json_copy(json_object_get(ev, "attention"));
    if (t >= 0 && e && att) {
        json_object_set_new(att, "split", split_json(w, np, t, im, om));
        json_object_set_new(e, "attention", att);
    } else {
        json_decref(att);
    }
    free(w);
    return e ? e : json_incref(ev);
}

/* One SSE event as text: "event: NAME\ndata: JSON\n\n" (no event line when
 * name is NULL, as OpenAI streams). Takes j. malloc'd, NULL when out of memory. */
static char *sse_text(const char *name, json_t *j, int prec, size_t *len) {
    char *data = j ? json_dumps(j, JSON_COMPACT | JSON_REAL_PRECISION(prec)) : NULL;
    json_decref(j);
    size_t n = (name ? strlen(name) + 8 : 0) + (data ? strlen(data) : 0) + 9;
    char *t = malloc(n);
    if (t) *len = (size_t)snprintf(t, n, "%s%s%sdata: %s\n\n", name ? "event: " : "", name ? name : "", name ? "\n" : "",
                                   data ? data : "");
    free(data);
    return t;
}

static void sse_event_prec(gen *g, const char *name, json_t *j, int prec) {
    size_t n = 0;
    char *t = sse_text(name, j, prec, &n);
    if (t) emit(g, t, n);
    free(t);
}

static void sse_event(gen *g, const char *name, json_t *j) { sse_event_prec(g, name, j, 0); }

/* An OpenAI chunk or response skeleton: id, object, created, model. */
static json_t *oai_head(gen *g, const char *object) {
    char id[64];
    snprintf(id, sizeof id, "%s-%s", g->kind == GEN_CHAT ? "chatcmpl" : "cmpl", g->run_id);
    return json_pack("{s:s, s:s, s:I, s:s}", "id", id, "object", object, "created", g->created ? g->created
                                                                                                  : (json_int_t)time(NULL),
                     "model", g->api->model_id);
}

static const char *finish_reason(const gen *g) { return !strcmp(g->stop, "eog") ? "stop" : "length"; }

static json_t *attn_token(json_t *step) {
    return json_pack("{s:O, s:O, s:O}", "token_index", json_object_get(step, "index"), "id",
                     json_object_get(step, "id"), "top", json_object_get(json_object_get(step, "attention"), "top"));
}

/* One OpenAI stream chunk; step NULL: the closing chunk with finish_reason. */
static json_t *oai_chunk(gen *g, json_t *step, bool first) {
    bool chat = g->kind == GEN_CHAT;
    json_t *c = oai_head(g, chat ? "chat.completion.chunk" : "text_completion");
    json_t *choice = json_pack("{s:i, s:n}", "index", 0, "logprobs");
    json_t *text = step ? json_incref(json_object_get(step, "text")) : json_string("");
    if (chat) {
        json_t *delta = json_object();
        if (first) json_object_set_new(delta, "role", json_string("assistant"));
        if (step) json_object_set(delta, "content", text);
        json_object_set_new(choice, "delta", delta);
    } else {
        json_object_set(choice, "text", text);
    }
    json_decref(text);
    json_object_set_new(choice, "finish_reason", step ? json_null() : json_string(finish_reason(g)));
    if (step && g->p.attn_tokens) json_object_set_new(choice, "attention_tokens", json_pack("[o]", attn_token(step)));
    json_object_set_new(c, "choices", json_pack("[o]", choice));
    return c;
}

/* A generation that could not be done or kept: an "error" event (heed
 * stream), an error chunk then [DONE] (OpenAI stream), or, not streamed,
 * the reply's status and message. */
static void gen_fail(gen *g, int status, const char *code, const char *msg) {
    if (!g->streamed) {
        g->fail_status = status;
        g->fail_code = code;
        snprintf(g->fail_msg, sizeof g->fail_msg, "%s", msg);
        return;
    }
    json_t *e = json_pack("{s:{s:s, s:s, s:n, s:s}}", "error", "message", msg, "type", error_type(status), "param",
                          "code", code);
    sse_event(g, g->kind == GEN_HEED ? "error" : NULL, e);
    if (g->kind != GEN_HEED) emit(g, "data: [DONE]\n\n", 14);
}

static void stream_done(gen *g) {
    if (g->kind == GEN_HEED) {
        sse_event(g, "done", json_pack("{s:s, s:i, s:i, s:s}", "run_id", g->run_id, "n_prompt", g->n_prompt,
                                       "n_output", g->n_out, "stop", g->stop));
        return;
    }
    json_t *c = oai_chunk(g, NULL, false);
    json_object_set_new(c, "usage", json_pack("{s:i, s:i, s:i}", "prompt_tokens", g->n_prompt, "completion_tokens",
                                              g->n_out, "total_tokens", g->n_prompt + g->n_out));
    sse_event(g, NULL, c);
    emit(g, "data: [DONE]\n\n", 14);
}

/* A cached run: its token events again, then done with "cached": true. */
static void stream_replay(gen *g) {
    json_t *d = g->replay, *steps = json_object_get(d, "steps");
    sse_event(g, "queued", json_pack("{s:i}", "position", 0)); /* the same event sequence as a generation */
    for (size_t i = 0; i < json_array_size(steps); i++) sse_event(g, "token", json_incref(json_array_get(steps, i)));
    sse_event(g, "done", json_pack("{s:O?, s:O?, s:O?, s:O?, s:b}", "run_id", json_object_get(d, "id"), "n_prompt",
                                   json_object_get(d, "n_prompt"), "n_output", json_object_get(d, "n_output"),
                                   "stop", json_object_get(d, "stop"), "cached", 1));
}

/* The token event of a step, as its stream wants it. */
static void emit_step(gen *g, json_t *ev) {
    if (!ev || !g->streamed) return;
    if (g->kind == GEN_HEED) sse_event_prec(g, "token", with_split(g, ev), g->p.attn_split ? 9 : 0);
    else sse_event(g, NULL, oai_chunk(g, ev, false));
}

/* On the engine thread: the whole generation, from the prompt to the store,
 * its events written as it goes. */
static void gen_execute(gen *g) {
    api *a = g->api;
    if (atomic_load(&a->stopping)) {
        gen_fail(g, 503, "shutting_down", "the server is shutting down");
        return;
    }
    if (atomic_load(&g->gone)) return; /* the client left while it waited */
    char err[512];
    int rc = gen_start(g);
    if (rc) {
        g->stop = "error";
        snprintf(err, sizeof err, "generation failed: %s", heed_ctx_error(a->eng.ctx));
        gen_fail(g, 500, "engine_error", err);
        gen_finish(g, err, sizeof err);
        return;
    }
    if (g->streamed && g->kind == GEN_CHAT) {
        json_t *c = oai_chunk(g, NULL, true);
        json_object_set_new(json_array_get(json_object_get(c, "choices"), 0), "finish_reason", json_null());
        sse_event(g, NULL, c);
    }
    json_t *ev;
    do {
        rc = gen_step(g, &ev);
        emit_step(g, ev);
    } while (rc == 0);
    if (rc < 0) {
        g->stop = "error";
        snprintf(err, sizeof err, "generation failed: %s", heed_strerror(rc));
        gen_fail(g, 500, "engine_error", err);
        gen_finish(g, err, sizeof err);
        return;
    }
    int st = gen_finish(g, err, sizeof err);
    if (st) {
        /* nothing may claim a run id that does not exist */
        char msg[600];
        snprintf(msg, sizeof msg, "the run could not be stored: %s", st < 0 ? err : "the recording failed");
        gen_fail(g, 507, "store_failed", msg);
    } else if (g->streamed) {
        stream_done(g);
    }
}

/* Drops one reference (under nothing); frees g with the last. */
static void gen_release(gen *g) {
    engine *e = &g->api->eng;
    pthread_mutex_lock(&e->mu);
    int left = --g->refs;
    pthread_mutex_unlock(&e->mu);
    if (!left) gen_free(g);
}

static void *engine_main(void *arg) {
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
        queue_remove_locked(e, &g->tk);
        g->phase = G_END;
        pthread_cond_broadcast(&e->cv);
        pthread_mutex_unlock(&e->mu);
        gen_release(g);
        pthread_mutex_lock(&e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* Puts g in the engine's queue (the engine takes its own reference).
 * False when the server is stopping. */
static bool engine_enqueue(api *a, gen *g) {
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
        g->refs++;
        g->phase = G_QUEUED;
        pthread_cond_broadcast(&e->cv);
    }
    pthread_mutex_unlock(&e->mu);
    return ok;
}

/* Runs a whole generation (the non-streaming routes): queued, then waited
 * for. Returns 0, or an HTTP status with rp filled. */
static int gen_run(gen *g, api_reply *rp) {
    api *a = g->api;
    if (!engine_enqueue(a, g)) {
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

/* The queue position as the reader reports it while waiting (under eng.mu):
 * a "queued" event when it changed, else a heartbeat comment. */
static void stream_heartbeat_locked(gen *g) {
    int ahead = g->phase == G_QUEUED ? queue_ahead_locked(&g->api->eng, &g->tk) : 0;
    if (g->phase == G_QUEUED && ahead != g->last_ahead) {
        g->last_ahead = ahead;
        if (g->kind == GEN_HEED) {
            size_t n = 0;
            char *t = sse_text("queued", json_pack("{s:i}", "position", ahead), 0, &n);
            if (t) pend_add_locked(g, t, n);
            free(t);
        } else {
            pend_add_locked(g, ": queued\n\n", 10);
        }
    } else {
        /* writing it tells whether the client is still there */
        pend_add_locked(g, ": waiting\n\n", 11);
    }
}

ssize_t api_stream_read(api_stream *s, char *buf, size_t max) {
    gen *g = s->g;
    engine *e = &g->api->eng;
    pthread_mutex_lock(&e->mu);
    ssize_t n = -1;
    for (;;) {
        if (atomic_load(&g->dropped)) {
            n = -2;
            break;
        }
        if (g->pend_off < g->pend_len) {
            size_t k = g->pend_len - g->pend_off;
            if (k > max) k = max;
            memcpy(buf, g->pend + g->pend_off, k);
            g->pend_off += k;
            g->pend_since = mono_s(); /* a read is progress */
            n = (ssize_t)k;
            break;
        }
        g->pend_off = g->pend_len = 0;
        if (g->phase == G_END) break;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += API_WAIT_MS / 1000;
        if (pthread_cond_timedwait(&e->cv, &e->mu, &until) && g->pend_len == 0 && g->phase != G_END)
            stream_heartbeat_locked(g);
    }
    pthread_mutex_unlock(&e->mu);
    return n;
}

void api_stream_free(api_stream *s) {
    if (!s) return;
    gen *g = s->g;
    engine *e = &g->api->eng;
    pthread_mutex_lock(&e->mu);
    atomic_store(&g->gone, true); /* a running generation ends at its next token, stored as "cancelled" */
    if (g->phase == G_QUEUED && g->tk.queued && e->head != &g->tk) {
        queue_remove_locked(e, &g->tk); /* never started: the engine's reference goes with it */
        g->phase = G_END;
        g->refs--;
    }
    e->n_streams--;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    gen_release(g);
    free(s);
}

/* Hands g to the HTTP layer as an SSE stream (its reference goes with it). */
static int reply_stream_of(gen *g, api_reply *rp) {
    api_stream *s = malloc(sizeof *s);
    if (!s) {
        gen_release(g);
        api_error(rp, 500, NULL, "out_of_memory", "out of memory");
        return 0;
    }
    s->g = g;
    engine *e = &g->api->eng;
    pthread_mutex_lock(&e->mu);
    e->n_streams++;
    pthread_mutex_unlock(&e->mu);
    rp->status = 200;
    rp->content_type = "text/event-stream";
    rp->stream = s;
    return 0;
}

/* Queues g and hands it over as a stream; 503 when the server stops. */
static int reply_stream(gen *g, api_reply *rp) {
    g->streamed = true;
    if (!engine_enqueue(g->api, g)) {
        gen_release(g);
        api_error(rp, 503, NULL, "shutting_down", "the server is shutting down");
        return 0;
    }
    return reply_stream_of(g, rp);
}

/* ------------------------------------------------------------ handlers */

static int h_health(api *a, const api_req *rq, api_reply *rp) {
    reply_json(rp, 200, json_pack("{s:s}", "status", "ok"));
    return 0;
}

static int h_model(api *a, const api_req *rq, api_reply *rp) {
    const heed_model_info *i = &a->info;
    const char *tmpl = heed_chat_template(a->model);
    reply_json(rp, 200,
               json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, "
                         "s:b, s:i, s:i, s:i, s:b, s:b, s:s?, s:{s:i, s:i, s:i}}",
                         "id", a->model_id, "path", i->path, "arch", i->arch, "name", i->name, "tokenizer",
                         i->tokenizer, "file_size", (json_int_t)i->file_size, "n_layer", i->n_layer, "n_embd",
                         i->n_embd, "n_head", i->n_head, "n_head_kv", i->n_head_kv, "head_dim", i->head_dim,
                         "n_ff", i->n_ff, "n_vocab", i->n_vocab, "n_ctx_train", i->n_ctx_train, "n_ctx", a->n_ctx,
                         "rope_base", i->rope_base, "rms_eps", i->rms_eps, "tied_output", i->tied_output, "bos",
                         i->bos, "eos", i->eos, "eot", i->eot, "add_bos", i->add_bos, "can_tokenize",
                         i->can_tokenize, "chat_template", tmpl, "limits", "max_tokens", a->cfg.max_tokens,
                         "max_prompt", a->cfg.max_prompt, "attention_tokens_top_k", a->cfg.attn_top_k));
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
    json_t *body = parse_body(rq, rp), *text = body ? json_object_get(body, "text") : NULL;
    bool bos = a->info.add_bos, special = false;
    if (!body || !get_bool(body, "add_bos", &bos, rp) || !get_bool(body, "special", &special, rp)) goto done;
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
                                                    "label", label_json(a->model, ids[i]), "bytes",
                                                    bytes_json(a->model, ids[i])));
        }
        reply_json(rp, 200, json_pack("{s:o, s:o}", "ids", ids_json(ids, ids ? n : 0), "tokens", tokens));
    }
    free(ids);
done:
    json_decref(body);
    return 0;
}

/* A stored run for the same request (request cache), as a document to
 * replay; NULL when there is none (or it was deleted). */
static json_t *cached_run(api *a, const char *key) {
    char id[40], *doc = NULL;
    if (!key || !req_cache_get(a, key, id, sizeof id) || store_get_doc(a->store, id, &doc) <= 0) return NULL;
    json_t *d = json_loads(doc, 0, NULL);
    free(doc);
    return d;
}

static int h_run_create(api *a, const api_req *rq, api_reply *rp) {
    json_t *body = parse_body(rq, rp);
    gen *g = body ? gen_from_body(a, body, GEN_HEED, rp) : NULL;
    bool use_cache = true;
    if (g && !get_bool(body, "cache", &use_cache, rp)) {
        gen_free(g);
        g = NULL;
    }
    json_decref(body);
    if (!g) return 0;
    g->cache_key = g->branch ? NULL : req_cache_key(g); /* a branch always generates */
    g->streamed = true;
    if (use_cache && (g->replay = cached_run(a, g->cache_key))) {
        g->phase = G_END; /* written whole, never queued */
        stream_replay(g);
        return reply_stream_of(g, rp);
    }
    /* the first event says where the request stands in the queue */
    engine *e = &a->eng;
    pthread_mutex_lock(&e->mu);
    g->last_ahead = e->tail ? queue_ahead_locked(e, NULL) : 0;
    pthread_mutex_unlock(&e->mu);
    sse_event(g, "queued", json_pack("{s:i}", "position", g->last_ahead));
    return reply_stream(g, rp);
}

/* ------------------------------------------------------------ stored runs */

/* Query argument `name`, or NULL. */
static const char *arg(const api_req *rq, const char *name) {
    for (int i = 0; rq->args && rq->args[i]; i += 2)
        if (!strcmp(rq->args[i], name)) return rq->args[i + 1] ? rq->args[i + 1] : "";
    return NULL;
}

/* Integer argument in [lo, hi]; absent: *v unchanged. False with a 400 naming it. */
static bool arg_int(const api_req *rq, const char *name, long lo, long hi, long *v, api_reply *rp) {
    const char *s = arg(rq, name);
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

static bool arg_float(const api_req *rq, const char *name, double lo, double hi, double *v, api_reply *rp) {
    const char *s = arg(rq, name);
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
static int arg_enum(const api_req *rq, const char *name, const char *const *choices, int n, api_reply *rp) {
    const char *s = arg(rq, name);
    if (!s) return 0;
    for (int i = 0; i < n; i++)
        if (!strcmp(s, choices[i])) return i;
    api_error(rp, 400, name, "invalid_parameter", "%s must be %s or %s", name, choices[0], choices[n - 1]);
    return -1;
}

static void reply_body(api_reply *rp, char *body, size_t len, const char *type) {
    rp->status = body ? 200 : 500;
    rp->content_type = type;
    rp->body = body;
    rp->body_len = body ? len : 0;
}

static int h_run_list(api *a, const api_req *rq, api_reply *rp) {
    long limit = 100, offset = 0;
    if (!arg_int(rq, "limit", 1, 1000, &limit, rp) || !arg_int(rq, "offset", 0, 1L << 40, &offset, rp)) return 0;
    char *runs;
    long long total;
    if (store_list(a->store, (int)limit, (long long)offset, &runs, &total)) {
        reply_store_error(rp, -1, rq->param, "cannot list the runs");
        return 0;
    }
    json_t *arr = json_loads(runs, 0, NULL);
    free(runs);
    reply_json(rp, 200, json_pack("{s:o, s:I, s:i, s:I}", "runs", arr ? arr : json_array(), "total",
                                  (json_int_t)total, "limit", (int)limit, "offset", (json_int_t)offset));
    return 0;
}

static int h_run_get(api *a, const api_req *rq, api_reply *rp) {
    char *doc;
    int found = store_get_doc(a->store, rq->param, &doc);
    if (found <= 0) reply_store_error(rp, found, rq->param, "cannot read the run");
    else reply_body(rp, doc, strlen(doc), "application/json");
    return 0;
}

static int h_run_delete(api *a, const api_req *rq, api_reply *rp) {
    int found = store_delete(a->store, rq->param);
    if (found <= 0) reply_store_error(rp, found, rq->param, "cannot delete the run");
    else reply_json(rp, 200, json_pack("{s:s, s:b}", "id", rq->param, "deleted", 1));
    return 0;
}

/* ---- views of a stored run
 *
 * Each view handler parses and checks its arguments against the run, then
 * computes one heed_run view while holding the run's lock. The reply is
 * kept in the run's cache under the normalized request (path and sorted
 * arguments), so a repeated read only copies bytes. */

typedef struct view_args {
    heed_attn_sel sel;
    int layer, head; /* the one selected, or -1 for all */
} view_args;

typedef int (*view_fn)(api *a, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp);

/* layer, head and agg against the run's geometry. */
static bool parse_sel(const api_req *rq, const heed_run_info *ri, view_args *v, api_reply *rp) {
    static const char *const aggs[] = {"mean", "max"};
    long layer = -1, head = -1;
    int agg = arg_enum(rq, "agg", aggs, 2, rp);
    if (agg < 0 || !arg_int(rq, "layer", 0, ri->n_layer - 1, &layer, rp) ||
        !arg_int(rq, "head", 0, ri->n_head - 1, &head, rp))
        return false;
    v->layer = (int)layer;
    v->head = (int)head;
    v->sel = heed_attn_sel_all();
    v->sel.agg = agg ? HEED_AGG_MAX : HEED_AGG_MEAN;
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

/* IEEE binary16 bits of f, rounded to nearest even (the binary form's f16). */
static uint16_t f16_bits(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, e = (x >> 23) & 0xff, m = x & 0x7fffffu;
    if (e == 0xff) return (uint16_t)(sign | 0x7c00u | (m ? 0x200u : 0)); /* inf, NaN */
    int ex = (int)e - 127 + 15;
    if (ex >= 31) return (uint16_t)(sign | 0x7c00u);                       /* overflow: inf */
    if (ex <= 0) {                                                          /* subnormal or zero */
        if (ex < -10) return (uint16_t)sign;
        m |= 0x800000u;
        int shift = 14 - ex;
        uint32_t h = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((uint32_t)ex << 10) | (m >> 13), rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) h++; /* a carry into the exponent is right */
    return (uint16_t)(sign | h);
}

/* The binary form (docs/API.md): one JSON header line (extra's members, if
 * any (taken), then dtype and shape), then the raw little-endian values.
 * x86-64 and ARM64 hosts are little-endian already. */
static void reply_binary(api_reply *rp, const float *x, int rows, int cols, bool f16, json_t *extra) {
    json_t *hj = extra ? extra : json_object();
    json_object_set_new(hj, "dtype", json_string(f16 ? "float16" : "float32"));
    json_object_set_new(hj, "shape", json_pack("[i, i]", rows, cols));
    char *hs = json_dumps(hj, JSON_COMPACT | JSON_PRESERVE_ORDER), head[512];
    json_decref(hj);
    int hn = snprintf(head, sizeof head, "%s\n", hs ? hs : "{}");
    free(hs);
    size_t n = (size_t)rows * (size_t)cols, esz = f16 ? 2 : 4;
    char *body = malloc((size_t)hn + n * esz);
    if (body) {
        memcpy(body, head, (size_t)hn);
        if (f16) {
            for (size_t i = 0; i < n; i++) {
                uint16_t h = f16_bits(x[i]);
                memcpy(body + hn + 2 * i, &h, 2);
            }
        } else {
            memcpy(body + hn, x, n * 4);
        }
    }
    reply_body(rp, body, (size_t)hn + n * esz, "application/octet-stream");
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
        reply_json(rp, 200, json_pack("{s:s, s:[i, i], s:o}", "dtype", "float32", "shape", n, n, "data",
                                      floats_json(m, n * n)));
    free(m);
}

/* The row of query position p (what p attended to: {"pos","row"[p+1]}), or
 * with column the column of key position p (how much each later query
 * attended to p: {"key","col"[n_pos-p]}, entry i for query p+i). */
static void attn_line(api_reply *rp, heed_run *run, const heed_run_info *ri, const view_args *v, int p, bool column) {
    float *x = malloc(sizeof(float) * (size_t)ri->n_pos);
    int rc = !x ? HEED_ERR_NOMEM : column ? heed_run_attn_col(run, &v->sel, p, x) : heed_run_attn_row(run, &v->sel, p, x);
    if (rc) view_error(rp, rc);
    else if (column) reply_json_prec(rp, 200, json_pack("{s:i, s:o}", "key", p, "col", floats_json(x, ri->n_pos - p)), 9);
    else reply_json_prec(rp, 200, json_pack("{s:i, s:o}", "pos", p, "row", floats_json(x, p + 1)), 9);
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
        if (!rc) json_object_set_new(j, "split", split_json(in, ri->n_prompt, step, in_mass, out_mass));
    } else {
        float *row = malloc(sizeof(float) * ((size_t)pos + 1));
        rc = row ? heed_run_attn_row(run, &v->sel, pos, row) : HEED_ERR_NOMEM;
        if (!rc) json_object_set_new(j, "row", floats_json(row, pos + 1));
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
        reply_json(rp, 200, j);
    }
}

static int view_attention(api *a, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp) {
    static const char *const norms[] = {"raw", "split"}, *const formats[] = {"auto", "json", "bin"},
                             *const dtypes[] = {"float32", "float16"};
    view_args v;
    long step = -1, topk = 0;
    double threshold = 0;
    int norm, format, dtype;
    if (!parse_sel(rq, ri, &v, rp) || (norm = arg_enum(rq, "norm", norms, 2, rp)) < 0 ||
        (format = arg_enum(rq, "format", formats, 3, rp)) < 0 || (dtype = arg_enum(rq, "dtype", dtypes, 2, rp)) < 0 ||
        !arg_float(rq, "threshold", 0, 1, &threshold, rp) || !arg_int(rq, "topk", 0, 1L << 30, &topk, rp))
        return 0;
    if (ri->n_output > 0 && !arg_int(rq, "step", 0, ri->n_output - 1, &step, rp)) return 0;
    if (ri->n_output == 0 && arg(rq, "step")) {
        api_error(rp, 400, "step", "invalid_parameter", "the run has no steps");
        return 0;
    }
    long pos = -1, key = -1;
    if (!arg_int(rq, "pos", 0, ri->n_pos - 1, &pos, rp) || !arg_int(rq, "key", 0, ri->n_pos - 1, &key, rp)) return 0;
    if ((step >= 0) + (pos >= 0) + (key >= 0) > 1) {
        api_error(rp, 400, "pos", "invalid_parameter", "give at most one of step, pos and key");
        return 0;
    }
    if (pos >= 0 || key >= 0) attn_line(rp, run, ri, &v, pos >= 0 ? (int)pos : (int)key, key >= 0);
    else if (step < 0) attn_matrix(run, ri, &v, format, dtype == 1, rp);
    else attn_step(rp, run, ri, &v, (int)step, norm == 1, threshold, topk, arg(rq, "threshold") || arg(rq, "topk"));
    return 0;
}

/* Every step's split view at once (what the web UI's token graph draws). */
static int view_graph(api *a, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp) {
    view_args v;
    if (!parse_sel(rq, ri, &v, rp)) return 0;
    int np = ri->n_prompt, n = ri->n_output, rc = 0;
    float *w = malloc(sizeof(float) * ((size_t)np + (size_t)n + 1));
    json_t *prompt = json_array(), *output = json_array(), *pmass = json_array(), *omass = json_array();
    if (!w) rc = HEED_ERR_NOMEM;
    for (int t = 0; t < n && !rc; t++) {
        float im = 0, om = 0;
        if ((rc = heed_run_step_view(run, &v.sel, t, 0, w, w + np, &im, &om))) break;
        json_array_append_new(prompt, floats_json(w, np));
        json_array_append_new(output, floats_json(w + np, t));
        json_array_append_new(pmass, json_real(im));
        json_array_append_new(omass, json_real(om));
    }
    free(w);
    json_t *j = json_pack("{s:i, s:i, s:o, s:o, s:o, s:o}", "n_prompt", np, "n_output", n, "prompt", prompt, "output",
                          output, "prompt_mass", pmass, "output_mass", omass);
    if (rc) {
        json_decref(j);
        view_error(rp, rc);
    } else {
        reply_json_prec(rp, 200, j, 9);
    }
    return 0;
}

/* A window of the attention matrix pooled to at most size x size cells
 * (docs/API.md): the zoomable heatmap and the per-head thumbnails. */
static int view_heatmap(api *a, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp) {
    static const char *const pools[] = {"max", "mean"}, *const formats[] = {"json", "bin"},
                             *const dtypes[] = {"float32", "float16"};
    view_args v;
    long q0 = 0, q1 = ri->n_pos, k0 = 0, k1 = ri->n_pos, size = 256;
    int pool, format, dtype;
    if (!parse_sel(rq, ri, &v, rp) || (pool = arg_enum(rq, "pool", pools, 2, rp)) < 0 ||
        (format = arg_enum(rq, "format", formats, 2, rp)) < 0 || (dtype = arg_enum(rq, "dtype", dtypes, 2, rp)) < 0 ||
        !arg_int(rq, "q0", 0, ri->n_pos, &q0, rp) || !arg_int(rq, "q1", 0, ri->n_pos, &q1, rp) ||
        !arg_int(rq, "k0", 0, ri->n_pos, &k0, rp) || !arg_int(rq, "k1", 0, ri->n_pos, &k1, rp) ||
        !arg_int(rq, "size", 1, 1024, &size, rp))
        return 0;
    if (q0 >= q1 || k0 >= k1) {
        api_error(rp, 400, q0 >= q1 ? "q1" : "k1", "invalid_parameter", "the window is empty (q0 < q1 and k0 < k1)");
        return 0;
    }
    long bq = (q1 - q0 + size - 1) / size, bk = (k1 - k0 + size - 1) / size;
    long rows = (q1 - q0 + bq - 1) / bq, cols = (k1 - k0 + bk - 1) / bk;
    float *cell = calloc((size_t)(rows * cols), sizeof(float)), *row = malloc(sizeof(float) * (size_t)ri->n_pos);
    int *cnt = calloc((size_t)(rows * cols), sizeof(int)), rc = cell && row && cnt ? 0 : HEED_ERR_NOMEM;
    for (long q = q0; !rc && q < q1; q++) {
        if ((rc = heed_run_attn_row(run, &v.sel, (int)q, row))) break;
        float *c = cell + (q - q0) / bq * cols;
        int *n = cnt + (q - q0) / bq * cols;
        for (long k = k0; k < k1 && k <= q; k++) { /* keys after q are masked: not part of any cell */
            long j = (k - k0) / bk;
            if (pool == 0) c[j] = row[k] > c[j] ? row[k] : c[j];
            else c[j] += row[k];
            n[j]++;
        }
    }
    for (long i = 0; !rc && pool == 1 && i < rows * cols; i++) cell[i] = cnt[i] ? cell[i] / (float)cnt[i] : 0.0f;
    if (rc) {
        view_error(rp, rc);
    } else {
        json_t *head = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:b}", "q0", (int)q0, "q1", (int)q1,
                                 "k0", (int)k0, "k1", (int)k1, "bq", (int)bq, "bk", (int)bk, "rows", (int)rows,
                                 "cols", (int)cols, "pool", pools[pool], "exact", bq == 1 && bk == 1);
        if (format == 1) {
            reply_binary(rp, cell, (int)rows, (int)cols, dtype == 1, head);
        } else {
            json_object_set_new(head, "data", floats_json(cell, (int)(rows * cols)));
            reply_json_prec(rp, 200, head, 9);
        }
    }
    free(cell);
    free(row);
    free(cnt);
    return 0;
}

/* The stored next-token candidates of one step (the model's own
 * distribution before sampling), best first: the sampling explorer's data. */
static int view_candidates(api *a, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp) {
    long step = -1;
    if (!arg_int(rq, "step", 0, ri->n_output - 1, &step, rp)) return 0;
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
    bool labels = !strcmp(ri->model_file, a->model_id) && ri->n_vocab == a->info.n_vocab;
    json_t *cands = json_array();
    for (int i = 0; i < st.n_cand; i++)
        json_array_append_new(cands, json_pack("{s:i, s:o?, s:f, s:f}", "id", st.cand[i].id, "label",
                                               labels ? label_json(a->model, st.cand[i].id) : NULL, "logit",
                                               st.cand[i].logit, "prob", st.cand[i].prob));
    reply_json_prec(rp, 200, json_pack("{s:i, s:i, s:f, s:f, s:o}", "step", (int)step, "chosen", st.id, "prob", st.prob,
                                       "entropy", st.entropy, "candidates", cands), 9);
    return 0;
}

/* Computes the lens of steps t0 .. t1-1 where it is still to compute, with
 * the served model (it must be the run's). Returns 0, or -1 with rp filled. */
static int lens_ensure(api *a, heed_run *run, const heed_run_info *ri, int t0, int t1, api_reply *rp) {
    if (ri->lens_pending == 0) return 0;
    if (!a->model || heed_run_lens_model_ok(run, a->model)) {
        api_error(rp, 409, NULL, "model_needed",
                  "the logit lens of this run is computed with the model that made it (%s); this server %s",
                  ri->model_file, a->model ? "runs another model" : "has none");
        return -1;
    }
    int rc = HEED_ERR_NOMEM;
    pthread_mutex_lock(&a->lens_mu);
    if (!a->lens_ctx) {
        heed_ctx_params cp = heed_ctx_default_params();
        cp.n_ctx = 16; /* scratch for the unembedding only */
        cp.n_threads = a->cfg.n_threads;
        rc = heed_ctx_new(a->model, &cp, &a->lens_ctx);
    }
    if (a->lens_ctx) rc = heed_run_lens_compute(run, a->model, a->lens_ctx, t0, t1);
    pthread_mutex_unlock(&a->lens_mu);
    if (rc) {
        view_error(rp, rc);
        return -1;
    }
    return 0;
}

/* The logit lens of steps from .. to-1 (default: all). A lens recorded on
 * demand (the default) is computed here for the steps asked, so a client
 * can fetch the visible steps first and the rest after. */
static int view_lens(api *a, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp) {
    if (ri->lens_top_k <= 0) {
        api_error(rp, 400, NULL, "view_unsupported", "the run was recorded without a logit lens");
        return 0;
    }
    long from = 0, to = ri->n_output;
    if (!arg_int(rq, "from", 0, ri->n_output, &from, rp) || !arg_int(rq, "to", 0, 1L << 30, &to, rp)) return 0;
    if (to < from) {
        api_error(rp, 400, "to", "invalid_parameter", "to must be >= from");
        return 0;
    }
    if (to > ri->n_output) to = ri->n_output; /* a page past the end is cut to it */
    if (lens_ensure(a, run, ri, (int)from, (int)to, rp)) return 0;
    /* labels come from the served model when the run was made with it */
    bool labels = a->model && !strcmp(ri->model_file, a->model_id) && ri->n_vocab == a->info.n_vocab;
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
                                                     labels ? label_json(a->model, ids[i]) : NULL, "prob", probs[i]));
            json_array_append_new(layers, json_pack("{s:i, s:b, s:o}", "layer", l, "match", n > 0 && ids[0] == st.id,
                                                    "top", top));
        }
        json_array_append_new(steps, json_pack("{s:i, s:i, s:o}", "step", t, "id", st.id, "layers", layers));
    }
    reply_json(rp, 200, json_pack("{s:i, s:i, s:i, s:i, s:i, s:o}", "n_layer", ri->n_layer, "n_output", ri->n_output,
                                  "top_k", ri->lens_top_k, "from", (int)from, "to", (int)to, "steps", steps));
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
                                             floats_json(ts.fingerprint, HEED_FINGERPRINT_DIM)));
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

static int view_stats(api *a, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp) {
    view_args v;
    if (!parse_sel(rq, ri, &v, rp)) return 0;
    int rc = 0;
    json_t *tokens = token_stats_json(run, ri, &v.sel, &rc), *heads = rc ? NULL : head_types_json(run, ri, &rc);
    float *imp = rc ? NULL : malloc(sizeof(float) * (size_t)ri->n_prompt);
    if (!rc) rc = imp ? heed_run_input_importance(run, &v.sel, imp) : HEED_ERR_NOMEM;
    json_t *j = json_pack("{s:o, s:o*, s:o*}", "tokens", tokens, "head_types", heads, "input_importance",
                          rc ? NULL : floats_json(imp, ri->n_prompt));
    free(imp);
    if (rc) {
        json_decref(j);
        view_error(rp, rc);
    } else {
        reply_json(rp, 200, j);
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
static char *view_key(const api_req *rq) {
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

/* Finds the run, answers from the view cache or computes fn under the run's
 * lock, and caches a successful reply. */
static int run_view(api *a, const api_req *rq, api_reply *rp, view_fn fn) {
    store_run *sr;
    char err[512] = "";
    int found = store_acquire(a->store, rq->param, &sr, err, sizeof err);
    if (found <= 0) {
        reply_store_error(rp, found, rq->param, err);
        return 0;
    }
    char *key = view_key(rq);
    if (key && store_view_get(a->store, sr, key, &rp->body, &rp->body_len, &rp->content_type)) {
        rp->status = 200;
    } else {
        heed_run *run = store_run_get(sr);
        heed_run_info ri;
        store_run_lock(sr);
        heed_run_get_info(run, &ri);
        fn(a, rq, run, &ri, rp);
        store_run_unlock(sr);
        if (key && rp->status == 200 && rp->body)
            store_view_put(a->store, sr, key, rp->body, rp->body_len, rp->content_type);
    }
    free(key);
    store_release(a->store, sr);
    return 0;
}

static int h_run_attention(api *a, const api_req *rq, api_reply *rp) { return run_view(a, rq, rp, view_attention); }
static int h_run_graph(api *a, const api_req *rq, api_reply *rp) { return run_view(a, rq, rp, view_graph); }
static int h_run_heatmap(api *a, const api_req *rq, api_reply *rp) { return run_view(a, rq, rp, view_heatmap); }
static int h_run_candidates(api *a, const api_req *rq, api_reply *rp) {
    return run_view(a, rq, rp, view_candidates);
}
static int h_run_lens(api *a, const api_req *rq, api_reply *rp) { return run_view(a, rq, rp, view_lens); }
static int h_run_stats(api *a, const api_req *rq, api_reply *rp) { return run_view(a, rq, rp, view_stats); }

static int h_v1_models(api *a, const api_req *rq, api_reply *rp) {
    reply_json(rp, 200, json_pack("{s:s, s:[{s:s, s:s, s:I, s:s}]}", "object", "list", "data", "id", a->model_id,
                                  "object", "model", "created", (json_int_t)a->started, "owned_by", "heed"));
    return 0;
}

/* The non-streaming OpenAI response of a finished generation. */
static json_t *oai_response(gen *g) {
    bool chat = g->kind == GEN_CHAT;
    json_t *r = oai_head(g, chat ? "chat.completion" : "text_completion");
    json_t *text = json_stringn(g->text ? g->text : "", g->text_len);
    json_t *choice = chat ? json_pack("{s:i, s:{s:s, s:o}}", "index", 0, "message", "role", "assistant", "content", text)
                          : json_pack("{s:i, s:o}", "index", 0, "text", text);
    json_object_set_new(choice, "finish_reason", json_string(finish_reason(g)));
    json_object_set_new(choice, "logprobs", json_null());
    if (g->p.attn_tokens) {
        json_t *at = json_array();
        for (size_t i = 0; i < json_array_size(g->steps); i++)
            json_array_append_new(at, attn_token(json_array_get(g->steps, i)));
        json_object_set_new(choice, "attention_tokens", at);
    }
    json_object_set_new(r, "choices", json_pack("[o]", choice));
    json_object_set_new(r, "usage", json_pack("{s:i, s:i, s:i}", "prompt_tokens", g->n_prompt, "completion_tokens",
                                              g->n_out, "total_tokens", g->n_prompt + g->n_out));
    return r;
}

static int oai_generate(api *a, const api_req *rq, api_reply *rp, int kind) {
    json_t *body = parse_body(rq, rp);
    gen *g = body ? gen_from_body(a, body, kind, rp) : NULL;
    json_decref(body);
    if (!g) return 0;
    if (g->p.stream) return reply_stream(g, rp);
    if (!gen_run(g, rp)) reply_json(rp, 200, oai_response(g));
    gen_release(g);
    return 0;
}

static int h_v1_completions(api *a, const api_req *rq, api_reply *rp) {
    return oai_generate(a, rq, rp, GEN_COMPLETION);
}

static int h_v1_chat(api *a, const api_req *rq, api_reply *rp) { return oai_generate(a, rq, rp, GEN_CHAT); }

/* The query arguments each route reads; any other is refused (400), so a
 * view's cache key holds only what decides its reply. */
static const char *const args_none[] = {NULL}, *const args_list[] = {"limit", "offset", NULL},
                         *const args_sel[] = {"layer", "head", "agg", NULL},
                         *const args_attention[] = {"layer", "head", "agg", "norm", "format", "dtype", "threshold",
                                                    "topk", "step", "pos", "key", NULL},
                         *const args_heatmap[] = {"layer", "head", "agg", "pool", "format", "dtype", "q0", "q1",
                                                  "k0", "k1", "size", NULL},
                         *const args_step[] = {"step", NULL}, *const args_lens[] = {"from", "to", NULL};

#define ROUTE(m, p, f, a) {.method = m, .pattern = p, .fn = f, .args = a}
#define ROUTE_GEN(m, p, f) {.method = m, .pattern = p, .fn = f, .args = args_none, .generates = true}
static const api_route routes[] = {
    ROUTE("GET", "/api/health", h_health, NULL),
    ROUTE("GET", "/api/model", h_model, NULL),
    ROUTE("POST", "/api/tokenize", h_tokenize, NULL),
    ROUTE("GET", "/api/runs", h_run_list, args_list),
    ROUTE_GEN("POST", "/api/runs", h_run_create),
    ROUTE("GET", "/api/runs/{id}", h_run_get, args_none),
    ROUTE("DELETE", "/api/runs/{id}", h_run_delete, args_none),
    ROUTE("GET", "/api/runs/{id}/attention", h_run_attention, args_attention),
    ROUTE("GET", "/api/runs/{id}/graph", h_run_graph, args_sel),
    ROUTE("GET", "/api/runs/{id}/heatmap", h_run_heatmap, args_heatmap),
    ROUTE("GET", "/api/runs/{id}/candidates", h_run_candidates, args_step),
    ROUTE("GET", "/api/runs/{id}/logit-lens", h_run_lens, args_lens),
    ROUTE("GET", "/api/runs/{id}/stats", h_run_stats, args_sel),
    ROUTE("GET", "/v1/models", h_v1_models, NULL),
    ROUTE_GEN("POST", "/v1/completions", h_v1_completions),
    ROUTE_GEN("POST", "/v1/chat/completions", h_v1_chat),
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

const api_route *api_routes(int *n) {
    *n = (int)(sizeof routes / sizeof *routes);
    return routes;
}

/* ------------------------------------------------------------ snapshot */

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
    api *a; /* a stand-in: the model (or none) for labels */
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
    fn(s->a, &rq, s->run, &s->ri, &rp);
    bool json = rp.content_type && !strcmp(rp.content_type, "application/json");
    json_t *v = rp.status != 200 || !rp.body ? NULL
                : json                       ? json_loadb(rp.body, rp.body_len, 0, NULL)
                                             : bin_json(rp.body, rp.body_len);
    size_t size = rp.body_len;
    if (v && fn == view_graph && size > SNAP_SPARSE_BYTES) {
        json_object_set_new(v, "prompt", sparse_rows(json_object_get(v, "prompt")));
        json_object_set_new(v, "output", sparse_rows(json_object_get(v, "output")));
        json_object_set_new(v, "$sparse", json_real(SNAP_MIN_WEIGHT));
        size = json_dumpb(v, NULL, 0, JSON_COMPACT | JSON_REAL_PRECISION(7));
    }
    char *key = v && s->bytes + size <= s->budget ? view_key(&rq) : NULL;
    bool ok = key && !json_object_set_new(s->map, key, v);
    if (ok) s->bytes += size;
    else if (!key) json_decref(v);
    free(key);
    free(rp.body);
    return ok;
}

/* GET /api/runs/{id}'s document, rebuilt from the recording. */
static json_t *snap_doc(snap *s) {
    const heed_run_info *ri = &s->ri;
    bool labels = s->a->model != NULL;
    json_t *tokens = json_array(), *pids = json_array(), *oids = json_array(), *steps = json_array();
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (int i = 0; i < ri->n_prompt + ri->n_output; i++) {
        int32_t id;
        const char *label;
        heed_run_token(s->run, i, &id, &label);
        json_array_append_new(tokens, json_pack("{s:i, s:s}", "id", id, "label", label));
        json_array_append_new(i < ri->n_prompt ? pids : oids, json_integer(id));
        size_t n = strlen(label);
        if (i >= ri->n_prompt && len + n + 1 > cap) {
            char *t = realloc(text, cap = 2 * cap + n + 64);
            if (!t) break;
            text = t;
        }
        if (i >= ri->n_prompt) memcpy(text + len, label, n + 1), len += n;
    }
    heed_attn_sel all = heed_attn_sel_all();
    heed_edge top[32];
    for (int t = 0; t < ri->n_output; t++) {
        heed_run_step st;
        heed_run_get_step(s->run, t, &st);
        int32_t id;
        const char *label;
        heed_run_token(s->run, ri->n_prompt + t, &id, &label);
        json_t *cand = json_array(), *att = json_array();
        for (int i = 0; i < st.n_cand && i < API_N_TOP; i++)
            json_array_append_new(cand, json_pack("{s:i, s:o?, s:f}", "id", st.cand[i].id, "label",
                                                  labels ? label_json(s->a->model, st.cand[i].id) : NULL, "prob",
                                                  st.cand[i].prob));
        int ne = heed_run_edges(s->run, &all, ri->n_prompt - 1 + t, 0.0f, 32, top, 32);
        for (int i = 0; i < ne; i++) json_array_append_new(att, json_pack("[i, f]", top[i].src, top[i].weight));
        json_array_append_new(steps, json_pack("{s:i, s:i, s:s, s:s, s:f, s:f, s:o, s:{s:o}}", "index", t, "id", st.id,
                                               "label", label, "text", label, "prob", st.prob, "logprob", st.logprob,
                                               "top", cand, "attention", "top", att));
    }
    const heed_sampler_params *sp = &ri->sampler;
    json_t *doc = json_pack("{s:s, s:s, s:I, s:s, s:s, s:{s:f, s:i, s:f, s:f, s:f, s:I}, s:i, s:i, s:i, s:s, s:o, s:o, "
                            "s:o, s:s, s:o}",
                            "id", s->id, "kind", "heed", "created", (json_int_t)0, "model", ri->model_file, "prompt",
                            ri->prompt_text, "params", "temperature", sp->temperature, "top_k", sp->top_k, "top_p",
                            sp->top_p, "min_p", sp->min_p, "repeat_penalty", sp->repeat_penalty, "seed",
                            (json_int_t)sp->seed, "max_tokens", ri->n_predict, "n_prompt", ri->n_prompt, "n_output",
                            ri->n_output, "stop", ri->eog ? "eog" : "length", "prompt_ids", pids, "output_ids", oids,
                            "tokens", tokens, "text", text ? text : "", "steps", steps);
    free(text);
    return doc;
}

char *api_snapshot(heed_run *run, heed_model *model, size_t budget, char *err, size_t err_size) {
    api stub = {.model = model};
    pthread_mutex_init(&stub.lens_mu, NULL);
    snap s = {.a = &stub, .run = run, .id = "run", .map = json_object(), .budget = budget};
    heed_run_get_info(run, &s.ri);
    const heed_run_info *ri = &s.ri;
    if (model) {
        heed_model_get_info(model, &stub.info);
        snprintf(stub.model_id, sizeof stub.model_id, "%s", ri->model_file);
        if (stub.info.n_vocab != ri->n_vocab) stub.model = NULL; /* not the run's model: no labels */
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
    json_object_set_new(s.map, "/api/runs/run", snap_doc(&s));
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
    bool ok = snap_view(&s, "graph", view_graph, none), small = ri->n_pos <= 2048;
    if (!ok) snprintf(err, err_size, "the run's token graph does not fit in %zu bytes, or cannot be computed", budget);
    size_t one_graph = s.bytes - before, one_dense = (size_t)ri->n_pos * (size_t)ri->n_pos * 8 / 3 + 128;
    /* the lens in the pages the viewer asks for (web/src/views/lens.ts) */
    char fbuf[16], tobuf[16];
    const char *const lens_page[] = {"from", fbuf, "to", tobuf, NULL};
    for (int t = 0; ri->lens_top_k > 0 && t < ri->n_output; t += SNAP_LENS_PAGE) {
        snprintf(fbuf, sizeof fbuf, "%d", t);
        snprintf(tobuf, sizeof tobuf, "%d", t + SNAP_LENS_PAGE); /* as the viewer asks: the server cuts it */
        if (!snap_view(&s, "logit-lens", view_lens, lens_page)) break;
    }
    snap_view(&s, "stats", view_stats, none);
    for (int t = 0; t < ri->n_output; t++) {
        snprintf(tbuf, sizeof tbuf, "%d", t);
        snap_view(&s, "candidates", view_candidates, step);
    }
    if (!small || !snap_view(&s, "attention", view_attention, dense[0])) snap_view(&s, "heatmap", view_heatmap, none);
    for (int level = 1; ok && level <= 4; level++) { /* layer graphs, head graphs, layer matrices, head matrices */
        bool heads = level == 2 || level == 4, matrices = level >= 3;
        size_t n = (size_t)ri->n_layer * (heads ? (size_t)ri->n_head : 1);
        if ((matrices && !small) || s.bytes + n * (matrices ? one_dense : one_graph) > s.budget) continue;
        for (int l = 0; l < ri->n_layer; l++)
            for (int h = 0; h < (heads ? ri->n_head : 1); h++) {
                snprintf(lbuf, sizeof lbuf, "%d", l);
                snprintf(hbuf, sizeof hbuf, "%d", h);
                if (matrices) snap_view(&s, "attention", view_attention, dense[heads ? 2 : 1]);
                else snap_view(&s, "graph", view_graph, graph[heads ? 2 : 1]);
            }
    }
    /* 7 digits: a viewer's precision (the server's views keep 9) */
    char *text = ok ? json_dumps(s.map, JSON_COMPACT | JSON_ESCAPE_SLASH | JSON_REAL_PRECISION(7)) : NULL;
    if (ok && !text) snprintf(err, err_size, "out of memory");
    json_decref(s.map);
    heed_ctx_free(stub.lens_ctx);
    pthread_mutex_destroy(&stub.lens_mu);
    return text;
}

/* ------------------------------------------------------------ lifetime */

int api_new(const api_config *cfg, api **out, char *err, size_t err_size) {
    *out = NULL;
    api *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, err_size, "out of memory");
        return -1;
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
    pthread_mutex_init(&a->lens_mu, NULL);
    heed_model_params mp = heed_model_default_params();
    int rc = heed_model_load(cfg->model_path, &mp, &a->model, err, err_size);
    if (rc) goto fail;
    heed_model_get_info(a->model, &a->info);
    const char *base = strrchr(a->info.path, '/');
    snprintf(a->model_id, sizeof a->model_id, "%s", base ? base + 1 : a->info.path);
    heed_ctx_params cp = heed_ctx_default_params();
    cp.n_threads = cfg->n_threads;
    if ((rc = heed_ctx_new(a->model, &cp, &a->eng.ctx))) {
        snprintf(err, err_size, "cannot create a context: %s", heed_strerror(rc));
        goto fail;
    }
    a->n_ctx = heed_ctx_n_ctx(a->eng.ctx);
    a->eng.row = calloc((size_t)a->n_ctx + 1, sizeof(float));
    if (!a->eng.row) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    if (store_open(cfg->data_dir, cfg->cache_runs, cfg->cache_bytes, &a->store, err, err_size)) goto fail;
    a->rcache = calloc((size_t)cfg->cache_runs, sizeof *a->rcache);
    if (!a->rcache) {
        snprintf(err, err_size, "out of memory");
        goto fail;
    }
    if (pthread_create(&a->eng.thread, NULL, engine_main, a)) {
        snprintf(err, err_size, "cannot start the engine thread");
        goto fail;
    }
    a->eng.started = true;
    *out = a;
    return 0;
fail:
    api_free(a);
    return -1;
}

void api_stop(api *a) {
    if (!a) return;
    pthread_mutex_lock(&a->eng.mu);
    atomic_store(&a->stopping, true);
    pthread_cond_broadcast(&a->eng.cv);
    pthread_mutex_unlock(&a->eng.mu);
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
    store_close(a->store);
    for (int i = 0; a->rcache && i < a->cfg.cache_runs; i++) free(a->rcache[i].key);
    free(a->rcache);
    free(a->eng.row);
    heed_ctx_free(a->eng.ctx);
    heed_ctx_free(a->lens_ctx);
    heed_model_free(a->model);
    pthread_mutex_destroy(&a->lens_mu);
    pthread_mutex_destroy(&a->eng.mu);
    pthread_cond_destroy(&a->eng.cv);
    pthread_mutex_destroy(&a->runs_mu);
    free(a);
}
