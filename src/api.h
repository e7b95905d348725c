/*
 * api.h - the handlers of `heed serve`: the heed API (/api/...), the
 * OpenAI-compatible endpoints (/v1/...), the one inference engine with its
 * FIFO queue, and the views of stored runs (the store itself: store.h).
 *
 * What it does not do: HTTP. server.c owns libmicrohttpd, routing, auth, CORS
 * and body limits; it hands each request over as an api_req and turns the
 * api_reply back into a response. This module sees only heed.h and jansson,
 * so it knows nothing of kernels, model internals or sockets.
 *
 * Ownership: an api_reply's body (malloc'd) and stream belong to the caller
 * after the handler returns (free() / api_stream_free()).
 *
 * Threads: handlers run on any number of connection threads at once. One
 * engine thread owns the one heed_ctx and runs every generation, one at a
 * time, in arrival order (a ticket queue under a mutex and a condition
 * variable). It never waits for a client: a stream's events go into that
 * stream's bounded buffer, which the connection's thread drains as the
 * client reads (a client too far behind is dropped). Generations are
 * recorded (heed_recorder) and saved in the SQLite run store; reading runs
 * and their views uses the store's own connections and locks, so it never
 * waits for a generation.
 */
#ifndef HEED_API_H
#define HEED_API_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* Request bodies larger than this are refused with 413 before they are read. */
#define API_MAX_BODY (1u << 20)
/* The largest run file POST /api/runs/upload takes. */
#define API_MAX_UPLOAD ((size_t)1 << 30)
/* Most attended positions reported per token (--attention-tokens-top-k). */
#define API_MAX_ATTN_TOP 256
/* Query arguments a request may carry; more are refused (400). */
#define API_MAX_ARGS 16

typedef struct api api;
typedef struct api_stream api_stream;

typedef struct api_config {
    const char *model_path; /* NULL: the bundled model */
    int max_tokens;         /* per-request cap on generated tokens (0: the context) */
    int max_prompt;         /* prompt token limit (422 beyond it; 0: the context) */
    int n_ctx;              /* context size (0: the model's limit, bounded by memory with the recording) */
    int n_threads;          /* 0: all cores */
    int attn_top_k;         /* attended positions reported per token */
    const char *data_dir;   /* run store folder (exists) */
    int cache_runs;         /* stored runs kept loaded, with their computed views */
    size_t cache_bytes;     /* bytes of computed views kept, all runs together (0: none kept) */
    size_t stream_buffer;   /* unread bytes a streaming client may fall behind by before it is dropped */
    int stream_stall_s;     /* seconds a streaming client may take nothing while bytes wait */
} api_config;

typedef struct api_req {
    const char *method;
    const char *path;
    const char *param; /* the {id} segment of the route, or "" */
    const char *const *args; /* query arguments: name, value (NULL: none), ...; NULL-terminated; may be NULL */
    const char *body;  /* not NUL-terminated; may be NULL when body_len is 0 */
    size_t body_len;
} api_req;

typedef struct api_reply {
    int status;
    const char *content_type;
    char *body;         /* malloc'd; NULL with a stream */
    size_t body_len;
    api_stream *stream; /* Server-Sent Events, read with api_stream_read */
    const char *allow;  /* the Allow header of a 405 */
    char filename[64];  /* non-empty: a download, sent with Content-Disposition: attachment */
} api_reply;

typedef int (*api_handler)(api *a, const api_req *rq, api_reply *rp);

/* A route: method, path pattern ("{id}" matches one path segment), handler.
 * open: needs no API key (static content). generates: may start a
 * generation (held to the server's stream limit). */
typedef struct api_route {
    const char *method;
    const char *pattern;
    api_handler fn;
    const char *const *args; /* the query arguments it reads (NULL-terminated); NULL: any, ignored */
    bool open;
    bool generates;
    size_t max_body; /* the largest body it takes (0: API_MAX_BODY) */
} api_route;

/* The largest body route r takes. */
size_t api_route_max_body(const api_route *r);

/* Are args (name, value pairs, NULL-terminated; may be NULL) all ones that
 * route r reads, each once? False with a 400 naming the argument in rp. */
bool api_args_ok(const api_route *r, const char *const *args, api_reply *rp);

/* The responses the web UI reads for one recorded run, computed here
 * without a server: a JSON object from "path?sorted-args" to the response
 * (binary ones as {"$bin": base64}), the run named "run"; the views go in
 * while they fit in budget bytes (the mean token graph first, then the other
 * tabs' data, then per-layer and per-head graphs). model (may be NULL: no
 * labels for candidates and the logit lens) must be the run's. The exported
 * HTML viewer (webexport.h) carries it. Returns malloc'd text, or NULL with
 * a message in err. */
struct heed_run;
struct heed_model;
char *api_snapshot(struct heed_run *run, struct heed_model *model, size_t budget, char *err, size_t err_size);

/* Loads the model, opens the run store and starts the engine thread.
 * Returns HEED_OK, or a heed_status (the model's load error, HEED_ERR_IO
 * for the store, HEED_ERR_NOMEM) with a message in err. */
int api_new(const api_config *cfg, api **out, char *err, size_t err_size);
/* Asks every generation and waiting request to end: the running one
 * finishes with stop "cancelled" (and is stored), queued ones get a 503
 * (an error event on their stream); new generations are refused with 503.
 * Called before the HTTP daemon stops. */
void api_stop(api *a);
/* Streams open now (handed out and not yet freed). */
int api_n_streams(api *a);
void api_free(api *a);

const api_route *api_routes(int *n);

/* Fills rp with a JSON error {"error": {"message", "type", "param", "code"}}
 * (OpenAI's shape, used on every route). param may be NULL. */
__attribute__((format(printf, 5, 6))) void api_error(api_reply *rp, int status, const char *param,
                                                     const char *code, const char *fmt, ...);

/* Copies up to max bytes of the next events into buf. Returns the count (> 0;
 * it blocks until it has something, sending SSE comments as a heartbeat
 * after each second without events), -1 at the end of the stream, or -2
 * when the client fell too far behind and was dropped (close the
 * connection). The generation itself never waits for this reader. */
ssize_t api_stream_read(api_stream *s, char *buf, size_t max);
/* Ends the stream; a generation still running is cancelled (the client left)
 * and stored with stop "cancelled"; one still queued leaves the queue. */
void api_stream_free(api_stream *s);

/* /metrics: a request to route number `route` (api_routes order; -1: none
 * matched) was answered with status. Any thread. */
void api_metrics_request(api *a, int route, int status);

#endif
