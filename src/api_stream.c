/*
 * api_stream.c - the streams of `heed serve`: each generation's event
 * buffer (bounded: a client too far behind is dropped), the heed and OpenAI
 * event shapes, the reader the HTTP layer calls, and the generating routes
 * (POST /api/runs, /v1/completions, /v1/chat/completions, /v1/models).
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
    if (g->pend_off == g->pend_len) g->pend_since = api_mono_s();
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
        (unread + n > cfg->stream_buffer || api_mono_s() - g->pend_since > (double)cfg->stream_stall_s)) {
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
        json_object_set_new(att, "split", api_split_json(w, np, t, im, om));
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

void api_sse_event(gen *g, const char *name, json_t *j) { sse_event_prec(g, name, j, 0); }
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
json_t *api_oai_chunk(gen *g, json_t *step, bool first) {
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
void api_gen_fail(gen *g, int status, const char *code, const char *msg) {
    if (!g->streamed) {
        g->fail_status = status;
        g->fail_code = code;
        snprintf(g->fail_msg, sizeof g->fail_msg, "%s", msg);
        return;
    }
    json_t *e = json_pack("{s:{s:s, s:s, s:n, s:s}}", "error", "message", msg, "type", api_error_type(status), "param",
                          "code", code);
    api_sse_event(g, g->kind == GEN_HEED ? "error" : NULL, e);
    if (g->kind != GEN_HEED) emit(g, "data: [DONE]\n\n", 14);
}

void api_stream_done(gen *g) {
    if (g->kind == GEN_HEED) {
        /* where the time went, measured by the server (ms; tokens/s over the
         * tokens after the first), so a client sees its own overhead apart */
        json_t *t = json_pack("{s:f, s:f, s:f, s:f, s:i}", "queued_ms", (g->t_started - g->t_queued) * 1e3, "prompt_ms",
                              (g->t_prompt - g->t_started) * 1e3, "first_token_ms",
                              g->t_first ? (g->t_first - g->t_prompt) * 1e3 : 0.0, "decode_tok_s",
                              g->n_out > 1 && g->t_last > g->t_first ? (g->n_out - 1) / (g->t_last - g->t_first) : 0.0,
                              "reused_positions", g->reused);
        api_sse_event(g, "done", json_pack("{s:s, s:i, s:i, s:s, s:o}", "run_id", g->run_id, "n_prompt", g->n_prompt,
                                           "n_output", g->n_out, "stop", g->stop, "timings", t));
        return;
    }
    json_t *c = api_oai_chunk(g, NULL, false);
    json_object_set_new(c, "usage", json_pack("{s:i, s:i, s:i}", "prompt_tokens", g->n_prompt, "completion_tokens",
                                              g->n_out, "total_tokens", g->n_prompt + g->n_out));
    api_sse_event(g, NULL, c);
    emit(g, "data: [DONE]\n\n", 14);
}

/* A cached run: its token events again, then done with "cached": true. */
void api_stream_replay(gen *g) {
    json_t *d = g->replay, *steps = json_object_get(d, "steps");
    api_sse_event(g, "queued", json_pack("{s:i, s:O?}", "position", 0, "run_id", json_object_get(d, "id"))); /* as a generation's */
    for (size_t i = 0; i < json_array_size(steps); i++) api_sse_event(g, "token", json_incref(json_array_get(steps, i)));
    api_sse_event(g, "done", json_pack("{s:O?, s:O?, s:O?, s:O?, s:b}", "run_id", json_object_get(d, "id"), "n_prompt",
                                   json_object_get(d, "n_prompt"), "n_output", json_object_get(d, "n_output"),
                                   "stop", json_object_get(d, "stop"), "cached", 1));
}

/* The token event of a step, as its stream wants it. */
void api_emit_step(gen *g, json_t *ev) {
    if (!ev || !g->streamed) return;
    if (g->kind == GEN_HEED) sse_event_prec(g, "token", with_split(g, ev), g->p.attn_split ? 9 : 0);
    else api_sse_event(g, NULL, api_oai_chunk(g, ev, false));
}

/* The queue position as the reader reports it while waiting (under eng.mu):
 * a "queued" event when it changed, else a heartbeat comment. */
static void stream_heartbeat_locked(gen *g) {
    int ahead = g->phase == G_QUEUED ? api_queue_ahead_locked(&g->api->eng, &g->tk) : 0;
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
            g->pend_since = api_mono_s(); /* a read is progress */
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
        api_queue_remove_locked(e, &g->tk); /* never started: the engine's reference goes with it */
        g->phase = G_END;
        g->refs--;
    }
    e->n_streams--;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    api_gen_release(g);
    free(s);
}

/* Hands g to the HTTP layer as an SSE stream (its reference goes with it). */
int api_reply_stream_of(gen *g, api_reply *rp) {
    api_stream *s = malloc(sizeof *s);
    if (!s) {
        api_gen_release(g);
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
int api_reply_stream(gen *g, api_reply *rp) {
    g->streamed = true;
    if (g->api->upstream_url) return upstream_reply_stream(g, rp); /* an unreachable upstream: a plain 502 */
    if (!api_engine_enqueue(g->api, g)) {
        api_gen_release(g);
        api_error(rp, 503, NULL, "shutting_down", "the server is shutting down");
        return 0;
    }
    return api_reply_stream_of(g, rp);
}

/* ------------------------------------------------------------ handlers */
int api_route_run_create(api *a, const api_req *rq, api_reply *rp) {
    json_t *body = api_parse_body(rq, rp);
    gen *g = body ? api_gen_from_body(a, body, GEN_HEED, rp) : NULL;
    bool use_cache = true;
    if (g && !api_get_bool(body, "cache", &use_cache, rp)) {
        api_gen_free(g);
        g = NULL;
    }
    json_decref(body);
    if (!g) return 0;
    g->cache_key = g->branch ? NULL : api_req_cache_key(g); /* a branch always generates */
    g->streamed = true;
    if (use_cache && (g->replay = api_cached_run(a, g->cache_key))) {
        g->phase = G_END; /* written whole, never queued */
        api_stream_replay(g);
        return api_reply_stream_of(g, rp);
    }
    /* the first event says where the request stands in the queue */
    engine *e = &a->eng;
    pthread_mutex_lock(&e->mu);
    g->last_ahead = e->tail ? api_queue_ahead_locked(e, NULL) : 0;
    pthread_mutex_unlock(&e->mu);
    /* with the run's id, so a client that stops (disconnects) can read the run the server stores */
    api_sse_event(g, "queued", json_pack("{s:i, s:s}", "position", g->last_ahead, "run_id", g->run_id));
    return api_reply_stream(g, rp);
}

/* ------------------------------------------------------------ stored runs */
int api_route_v1_models(api *a, const api_req *rq, api_reply *rp) {
    api_reply_json(rp, 200, json_pack("{s:s, s:[{s:s, s:s, s:I, s:s}]}", "object", "list", "data", "id", a->model_id,
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

/* "provenance": true on a non-streamed response: the stored run's output
 * sentences with their sources in the documents (api_provenance). */
static bool add_provenance(api *a, gen *g, json_t *resp, api_reply *rp) {
    store_run *sr = api_run_acquire(a, g->run_id, rp);
    if (!sr) return false;
    heed_run *run = store_run_get(sr);
    heed_run_info ri;
    json_t *empty = json_array();
    store_run_lock(sr);
    heed_run_get_info(run, &ri);
    json_t *p = api_provenance(&a->view, run, &ri, g->documents ? g->documents : empty, false, rp);
    store_run_unlock(sr);
    store_release(a->store, sr);
    json_decref(empty);
    if (p) json_object_set_new(json_array_get(json_object_get(resp, "choices"), 0), "provenance", p);
    return p != NULL;
}

static int oai_generate(api *a, const api_req *rq, api_reply *rp, int kind) {
    json_t *body = api_parse_body(rq, rp);
    gen *g = body ? api_gen_from_body(a, body, kind, rp) : NULL;
    json_decref(body);
    if (!g) return 0;
    if (g->p.stream) return api_reply_stream(g, rp);
    if (!api_gen_run(g, rp)) {
        json_t *resp = oai_response(g);
        if (!g->provenance || add_provenance(a, g, resp, rp)) api_reply_json(rp, 200, resp);
        else json_decref(resp);
    }
    api_gen_release(g);
    return 0;
}

int api_route_v1_completions(api *a, const api_req *rq, api_reply *rp) {
    return oai_generate(a, rq, rp, GEN_COMPLETION);
}

int api_route_v1_chat(api *a, const api_req *rq, api_reply *rp) { return oai_generate(a, rq, rp, GEN_CHAT); }
