/*
 * upstream.c - `heed serve --upstream URL` (upstream.h): a generation made
 * by a remote OpenAI-compatible server that streams attention with its
 * tokens, turned into heed's events and a stored run.
 *
 * The request goes to URL/v1/completions (a text prompt) or
 * URL/v1/chat/completions (messages) with the request's sampling
 * parameters, `stream: true` and `return_attention_tokens: true`. libcurl's
 * write callback splits the SSE body into lines; each `data:` line is one
 * JSON chunk whose choice carries `attention_tokens: [{token_index, id,
 * top}]`, one entry per token, `top` = [[position, weight], ...]. Timeouts:
 * 10 s to connect, 60 s without a byte (heed's upstream sends a heartbeat
 * each second while queued).
 */
#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "api_int.h"
#include "upstream.h"

#define UP_CONNECT_S 10L
#define UP_IDLE_S 60L
#define UP_LINE_MAX ((size_t)16 << 20) /* one SSE line (a chunk) */
#define UP_ERR_MAX 65536               /* the body of an error reply kept for its message */
#define UP_TOPK_MAX 4096               /* entries per step a run keeps (heed_run_from_topk) */

/* Views a run from an upstream cannot give: they need q/k, the model's residuals or candidates. */
static const char *const unavailable[] = {"logit-lens", "candidates", "verify", "rollout", "stats",
                                          "experts", "measure=value", "layer/head selection"};

int upstream_set(api *a, const char *url, const char *key) {
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/') n--;
    a->upstream_url = strndup(url, n);
    a->upstream_key = key ? strdup(key) : NULL;
    return a->upstream_url && (!key || a->upstream_key) ? 0 : -1;
}

int upstream_messages_ids(api *a, json_t *msgs, int32_t *ids, int n_max, api_reply *rp) {
    size_t n = json_array_size(msgs), len = 0;
    if (!json_is_array(msgs) || n == 0 || n > 4096) {
        api_error(rp, 400, "messages", "invalid_parameter", "messages must be a non-empty array (at most 4096)");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(msgs, i);
        if (!json_is_string(json_object_get(e, "role")) || !json_is_string(json_object_get(e, "content"))) {
            api_error(rp, 400, "messages", "invalid_parameter", "messages[%zu] needs string members role and content", i);
            return -1;
        }
        len += json_string_length(json_object_get(e, "content")) + 1;
    }
    char *text = malloc(len + 1), *p = text;
    if (!text) {
        api_error(rp, 500, NULL, "out_of_memory", "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *c = json_object_get(json_array_get(msgs, i), "content");
        memcpy(p, json_string_value(c), json_string_length(c));
        p += json_string_length(c);
        *p++ = '\n';
    }
    int r = heed_tokenize(a->model, text, len, a->info.add_bos, ids, n_max);
    free(text);
    if (r < 0) api_error(rp, 400, "messages", "invalid_parameter", "cannot tokenize the messages: %s", heed_strerror(r));
    return r;
}

bool upstream_accepts(const gen *g, api_reply *rp) {
    const char *what = g->branch ? "branch" : g->interventions ? "interventions" : g->documents ? "documents" : NULL;
    if (what) api_error(rp, 400, what, "unsupported_parameter", "%s: not with --upstream (the upstream makes the run)", what);
    return what == NULL;
}

void upstream_doc(const api *a, json_t *doc) {
    json_t *u = json_array();
    for (size_t i = 0; i < sizeof unavailable / sizeof *unavailable; i++) json_array_append_new(u, json_string(unavailable[i]));
    json_object_set_new(doc, "upstream", json_string(a->upstream_url));
    json_object_set_new(doc, "unavailable", u);
}

int upstream_reply_stream(gen *g, api_reply *rp) {
    engine *e = &g->api->eng;
    if (!api_engine_enqueue(g->api, g)) {
        api_gen_release(g);
        api_error(rp, 503, NULL, "shutting_down", "the server is shutting down");
        return 0;
    }
    pthread_mutex_lock(&e->mu);
    while (!g->up_open && g->phase != G_END) pthread_cond_wait(&e->cv, &e->mu);
    bool failed = !g->up_open && g->fail_status;
    pthread_mutex_unlock(&e->mu);
    if (failed) {
        api_error(rp, g->fail_status, NULL, g->fail_code, "%s", g->fail_msg);
        api_gen_release(g);
        return 0;
    }
    return api_reply_stream_of(g, rp);
}

/* ------------------------------------------------------------ the transfer */

typedef struct xfer {
    gen *g;
    CURL *c;
    bool chat;        /* the upstream's chat route: text in delta.content */
    bool opened;      /* it answered 200 */
    bool http_error;  /* it answered another status: its body is in body */
    bool done;        /* data: [DONE] */
    bool bad;         /* a chunk heed cannot use, or an error chunk: msg says which */
    const char *finish; /* the last finish_reason seen */
    char msg[300];
    long status;
    char *line;
    size_t line_len, line_cap;
    char *body;
    size_t body_len;
} xfer;

static void set_open(xfer *x) {
    engine *e = &x->g->api->eng;
    pthread_mutex_lock(&e->mu);
    x->g->up_open = true;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    if (x->g->streamed && x->g->kind == GEN_CHAT) { /* the role chunk first, as a local chat stream */
        json_t *c = api_oai_chunk(x->g, NULL, true);
        json_object_set_new(json_array_get(json_object_get(c, "choices"), 0), "finish_reason", json_null());
        api_sse_event(x->g, NULL, c);
    }
}


/* The log-prob of the i-th token of a chunk's choice, if the upstream sent
 * it (completions: logprobs.token_logprobs; chat: logprobs.content[].logprob). */
static double chunk_logprob(json_t *choice, size_t i) {
    json_t *lp = json_object_get(choice, "logprobs");
    json_t *v = json_array_get(json_object_get(lp, "token_logprobs"), i);
    if (!v) v = json_object_get(json_array_get(json_object_get(lp, "content"), i), "logprob");
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* One token of the upstream: the step's event, emitted. */
static bool add_token(xfer *x, json_t *at, json_t *choice, size_t i, const char *text, size_t text_len) {
    gen *g = x->g;
    const api *a = g->api;
    json_t *jid = json_object_get(at, "id"), *top = json_object_get(at, "top");
    if (!json_is_integer(jid) || json_integer_value(jid) < 0 || json_integer_value(jid) >= a->info.n_vocab ||
        !json_is_array(top)) {
        snprintf(x->msg, sizeof x->msg, "the upstream sent a token heed cannot use (an id outside the local "
                 "model's %d-token vocabulary, or no \"top\")", a->info.n_vocab);
        return false;
    }
    if (g->n_out >= g->n_predict) return true; /* more than asked: ignored */
    json_t *clean = json_array(); /* [position, weight] pairs only */
    for (size_t k = 0; k < json_array_size(top); k++) {
        json_t *e = json_array_get(top, k), *p = json_array_get(e, 0), *w = json_array_get(e, 1);
        if (json_is_integer(p) && json_is_number(w)) json_array_append_new(clean, json_pack("[O, O]", p, w));
    }
    int32_t id = (int32_t)json_integer_value(jid);
    g->out[g->n_out++] = id;
    double lp = chunk_logprob(choice, i);
    json_t *ev = json_pack("{s:i, s:i, s:o, s:s%, s:o, s:o, s:[], s:{s:o}}", "index", g->n_out - 1, "id", id, "label",
                           api_label_json(a->model, id), "text", text, text_len, "prob",
                           isfinite(lp) ? json_real(exp(lp)) : json_null(), "logprob",
                           isfinite(lp) ? json_real(lp) : json_null(), "top", "attention", "top", clean);
    if (!ev || !api_text_append(g, text, text_len) || json_array_append_new(g->steps, ev)) {
        snprintf(x->msg, sizeof x->msg, "out of memory");
        return false;
    }
    api_emit_step(g, ev);
    g->t_last = api_mono_s();
    if (!g->t_first) g->t_first = g->t_last;
    return true;
}

/* One data: line of the stream. false: stop reading (x->msg says why). */
static bool on_chunk(xfer *x, const char *data, size_t n) {
    if (n == 6 && !memcmp(data, "[DONE]", 6)) {
        x->done = true;
        return true;
    }
    json_t *j = json_loadb(data, n, 0, NULL), *err = json_object_get(j, "error");
    bool ok = true;
    if (!json_is_object(j)) {
        snprintf(x->msg, sizeof x->msg, "the upstream sent a chunk that is not a JSON object");
        ok = false;
    } else if (err) {
        const char *m = json_string_value(json_object_get(err, "message"));
        snprintf(x->msg, sizeof x->msg, "the upstream failed mid-stream: %.200s", m ? m : "(no message)");
        ok = false;
    } else {
        json_t *choice = json_array_get(json_object_get(j, "choices"), 0);
        json_t *txt = x->chat ? json_object_get(json_object_get(choice, "delta"), "content")
                              : json_object_get(choice, "text");
        json_t *ats = json_object_get(choice, "attention_tokens"), *fr = json_object_get(choice, "finish_reason");
        const char *s = json_is_string(txt) ? json_string_value(txt) : "";
        size_t sl = json_is_string(txt) ? json_string_length(txt) : 0;
        for (size_t i = 0; ok && i < json_array_size(ats); i++) /* the chunk's text goes with its first token */
            ok = add_token(x, json_array_get(ats, i), choice, i, i ? "" : s, i ? 0 : sl);
        if (ok && sl && !json_array_size(ats)) {
            snprintf(x->msg, sizeof x->msg, "the upstream sent text without attention_tokens "
                     "(it does not speak return_attention_tokens)");
            ok = false;
        }
        if (json_is_string(fr)) x->finish = !strcmp(json_string_value(fr), "stop") ? "eog" : "length";
    }
    json_decref(j);
    x->bad = !ok;
    return ok;
}

static size_t on_data(char *p, size_t size, size_t nmemb, void *user) {
    xfer *x = user;
    size_t n = size * nmemb;
    if (!x->opened && !x->http_error) {
        curl_easy_getinfo(x->c, CURLINFO_RESPONSE_CODE, &x->status);
        if (x->status == 200) {
            x->opened = true;
            set_open(x);
        } else {
            x->http_error = true;
        }
    }
    if (x->http_error) { /* kept for its message */
        size_t k = x->body_len + n > UP_ERR_MAX ? UP_ERR_MAX - x->body_len : n;
        char *b = k ? realloc(x->body, x->body_len + k + 1) : x->body;
        if (b) {
            memcpy(b + x->body_len, p, k);
            x->body = b;
            x->body_len += k;
            b[x->body_len] = 0;
        }
        return n;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\n') {
            if (x->line_len + 1 >= x->line_cap) {
                size_t cap = x->line_cap ? x->line_cap * 2 : 4096;
                char *l = cap <= UP_LINE_MAX ? realloc(x->line, cap) : NULL;
                if (!l) {
                    snprintf(x->msg, sizeof x->msg, "the upstream sent a line longer than %zu bytes", UP_LINE_MAX);
                    x->bad = true;
                    return 0;
                }
                x->line = l;
                x->line_cap = cap;
            }
            x->line[x->line_len++] = p[i];
            continue;
        }
        size_t len = x->line_len;
        x->line_len = 0;
        if (len && x->line[len - 1] == '\r') len--;
        if (len >= 5 && !memcmp(x->line, "data:", 5)) {
            size_t off = len > 5 && x->line[5] == ' ' ? 6 : 5;
            if (!on_chunk(x, x->line + off, len - off)) return 0;
        } /* comments (heartbeats), event: and empty lines carry nothing heed needs */
    }
    return n;
}

/* Abort the transfer when the generation is cancelled (server stopping, client gone or dropped). */
static int on_progress(void *user, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un) {
    (void)dt, (void)dn, (void)ut, (void)un;
    const gen *g = ((xfer *)user)->g;
    return atomic_load(&g->api->stopping) || atomic_load(&g->gone) || atomic_load(&g->dropped);
}

static json_t *request_body(const gen *g) {
    const heed_sampler_params *sp = &g->p.sp;
    json_t *b = json_pack("{s:i, s:f, s:i, s:f, s:f, s:f, s:I, s:b, s:b}", "max_tokens", g->n_predict, "temperature",
                          sp->temperature, "top_k", sp->top_k, "top_p", sp->top_p, "min_p", sp->min_p, "repeat_penalty",
                          sp->repeat_penalty, "seed", (json_int_t)sp->seed, "stream", 1, "return_attention_tokens", 1);
    if (!b) return NULL;
    json_object_set_new(b, "model", json_string(g->api->model_id));
    if (g->messages) json_object_set(b, "messages", g->messages);
    else json_object_set_new(b, "prompt", json_string(g->prompt_text ? g->prompt_text : ""));
    return b;
}

/* The message of an upstream's error reply: its OpenAI error message, else its first bytes. */
static void http_error_msg(const xfer *x, char *out, size_t n) {
    json_t *j = x->body ? json_loads(x->body, 0, NULL) : NULL;
    const char *m = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    snprintf(out, n, "the upstream answered HTTP %ld: %.200s", x->status, m ? m : x->body ? x->body : "(no body)");
    json_decref(j);
}

/* The run of what was received: the prompt, the outputs, each step's attention.top. */
static int build_run(gen *g) {
    api *a = g->api;
    int T = g->n_prompt + g->n_out, K = 1;
    for (int t = 0; t < g->n_out; t++) {
        size_t k = json_array_size(json_object_get(json_object_get(json_array_get(g->steps, (size_t)t), "attention"), "top"));
        if ((int)k > K) K = k > UP_TOPK_MAX ? UP_TOPK_MAX : (int)k;
    }
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)T), *tp = malloc(sizeof(int32_t) * ((size_t)g->n_out * K + 1));
    float *tw = malloc(sizeof(float) * ((size_t)g->n_out * K + 1)), *prob = malloc(sizeof(float) * ((size_t)g->n_out + 1)),
          *lp = malloc(sizeof(float) * ((size_t)g->n_out + 1));
    char **labels = calloc((size_t)T, sizeof(char *));
    int rc = ids && tp && tw && prob && lp && labels ? HEED_OK : HEED_ERR_NOMEM;
    for (int i = 0; !rc && i < T; i++) {
        ids[i] = i < g->n_prompt ? g->prompt[i] : g->out[i - g->n_prompt];
        char buf[LABEL_MAX];
        heed_token_label(a->model, ids[i], buf, sizeof buf);
        if (!(labels[i] = strdup(buf))) rc = HEED_ERR_NOMEM;
    }
    for (int t = 0; !rc && t < g->n_out; t++) {
        json_t *st = json_array_get(g->steps, (size_t)t), *top = json_object_get(json_object_get(st, "attention"), "top");
        json_t *jp = json_object_get(st, "prob"), *jl = json_object_get(st, "logprob");
        prob[t] = json_is_number(jp) ? (float)json_number_value(jp) : NAN;
        lp[t] = json_is_number(jl) ? (float)json_number_value(jl) : NAN;
        for (int e = 0; e < K; e++) {
            json_t *pair = json_array_get(top, (size_t)e);
            json_int_t pos = json_integer_value(json_array_get(pair, 0));
            tp[(size_t)t * K + e] = pair && pos >= 0 && pos < T ? (int32_t)pos : -1;
            tw[(size_t)t * K + e] = pair ? (float)json_number_value(json_array_get(pair, 1)) : 0.0f;
        }
    }
    heed_run_topk_params p = {.model = a->model_id, .source = a->upstream_url, .prompt_text = g->prompt_text,
                              .ids = ids, .labels = (const char *const *)labels, .n_prompt = g->n_prompt,
                              .n_output = g->n_out, .n_vocab = a->info.n_vocab, .prob = prob, .logprob = lp,
                              .top_k = K, .top_pos = tp, .top_w = tw, .eog = !strcmp(g->stop, "eog")};
    if (!rc) rc = heed_run_from_topk(&p, &g->up_run);
    for (int i = 0; labels && i < T; i++) free(labels[i]);
    free(labels), free(ids), free(tp), free(tw), free(prob), free(lp);
    return rc;
}

int upstream_generate(gen *g, char *err, size_t err_size) {
    api *a = g->api;
    g->created = (long long)time(NULL);
    char url[2048];
    snprintf(url, sizeof url, "%s%s", a->upstream_url, g->messages ? "/v1/chat/completions" : "/v1/completions");
    xfer x = {.g = g, .chat = g->messages != NULL};
    json_t *body = request_body(g);
    char *bs = body ? json_dumps(body, JSON_COMPACT) : NULL, *auth = NULL;
    json_decref(body);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (a->upstream_key && (auth = malloc(strlen(a->upstream_key) + 32))) {
        sprintf(auth, "Authorization: Bearer %s", a->upstream_key);
        h = curl_slist_append(h, auth);
    }
    x.c = curl_easy_init();
    CURLcode res = CURLE_OUT_OF_MEMORY;
    if (x.c && bs && h) {
        curl_easy_setopt(x.c, CURLOPT_URL, url);
        curl_easy_setopt(x.c, CURLOPT_POSTFIELDS, bs);
        curl_easy_setopt(x.c, CURLOPT_HTTPHEADER, h);
        curl_easy_setopt(x.c, CURLOPT_WRITEFUNCTION, on_data);
        curl_easy_setopt(x.c, CURLOPT_WRITEDATA, &x);
        curl_easy_setopt(x.c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(x.c, CURLOPT_XFERINFODATA, &x);
        curl_easy_setopt(x.c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(x.c, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(x.c, CURLOPT_CONNECTTIMEOUT, UP_CONNECT_S);
        curl_easy_setopt(x.c, CURLOPT_LOW_SPEED_LIMIT, 1L); /* idle: under a byte a second for UP_IDLE_S */
        curl_easy_setopt(x.c, CURLOPT_LOW_SPEED_TIME, UP_IDLE_S);
        curl_easy_setopt(x.c, CURLOPT_PROTOCOLS_STR, "http,https");
        res = curl_easy_perform(x.c);
    }
    bool cancelled = res == CURLE_ABORTED_BY_CALLBACK;
    if (!x.opened && !x.http_error && res == CURLE_OK) /* 200 with an empty body */
        curl_easy_getinfo(x.c, CURLINFO_RESPONSE_CODE, &x.status), x.http_error = x.status != 200, x.opened = !x.http_error;
    int ret = 0;
    if (!x.opened) { /* nothing generated: a plain error, nothing stored */
        if (cancelled) {
            g->fail_status = 503;
            g->fail_code = atomic_load(&a->stopping) ? "shutting_down" : "cancelled";
            snprintf(g->fail_msg, sizeof g->fail_msg, "the request was cancelled before the upstream answered");
        } else if (x.http_error) {
            g->fail_status = 502;
            g->fail_code = "upstream_error";
            http_error_msg(&x, g->fail_msg, sizeof g->fail_msg);
        } else {
            g->fail_status = 502;
            g->fail_code = "upstream_unreachable";
            snprintf(g->fail_msg, sizeof g->fail_msg, "cannot reach the upstream %.120s: %.100s", a->upstream_url, curl_easy_strerror(res));
        }
        fprintf(stderr, "heed: %s: %s\n", g->run_id, g->fail_msg);
        ret = 1;
    } else {
        if (cancelled) {
            g->stop = "cancelled";
        } else if (x.bad || res != CURLE_OK || !x.done) {
            g->stop = "upstream_error";
            if (x.bad) snprintf(err, err_size, "%s", x.msg);
            else if (res != CURLE_OK) snprintf(err, err_size, "the upstream stream broke: %s", curl_easy_strerror(res));
            else snprintf(err, err_size, "the upstream closed the stream before [DONE]");
            fprintf(stderr, "heed: %s: %s\n", g->run_id, err);
            ret = 2;
        } else {
            g->stop = x.finish ? x.finish : "length";
        }
        int rc = build_run(g);
        if (rc) {
            snprintf(err, err_size, "the run could not be built: %s", heed_strerror(rc));
            api_gen_fail(g, 500, "engine_error", err);
            ret = 1;
        }
    }
    curl_easy_cleanup(x.c);
    curl_slist_free_all(h);
    free(auth);
    free(bs);
    free(x.line);
    free(x.body);
    return ret;
}
