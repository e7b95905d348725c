/*
 * server.c - libmicrohttpd glue of `heed serve` (contract in server.h).
 *
 * One thread per connection: a streamed generation blocks its own thread
 * inside the content reader (waiting for the engine, then one token per
 * call), which keeps the engine's FIFO queue and cancellation simple - when
 * the client leaves, MHD stops calling the reader and frees the stream, and
 * the generation ends at the next token.
 *
 * Per request, on the first call (headers only): route, auth and the body
 * limit are checked, so a refused request never has its body read. The body
 * is then collected and the handler runs on the last call.
 *
 * The only global is the signal flag.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <microhttpd.h>

#include "api.h"
#include "assets.h"
#include "server.h"
#include "pull.h"
#include "upstream.h"

#define MAX_CONNECTIONS 256  /* default --max-connections: each holds a thread */
#define MAX_PER_IP 64        /* default --max-connections-per-ip */
#define IDLE_TIMEOUT_S 60    /* default --idle-timeout: a connection with no traffic either way is closed */
#define HEADER_TIMEOUT_S 10  /* default --header-timeout: whole request headers within this */
#define BODY_TIMEOUT_S 30    /* default --body-timeout: the whole body within this after the headers */
#define SHUTDOWN_DRAIN_MS 5000 /* how long streams get to be read to their end on SIGTERM */
#define CONN_RESERVE 16      /* connections kept from streams, for health checks and reads */
#define SSE_BLOCK 4096       /* bytes MHD asks the event reader for at a time */
#define MAX_PARAM 128        /* longest {id} path segment */
#define MAX_STATIC_BYTES (64u << 20) /* largest file served from --web-dir */

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) { stop_signal = sig; }

struct conn;

struct server {
    api *api;
    struct MHD_Daemon *daemon;
    const char *cors;    /* allowed origin, or NULL */
    const char *api_key; /* or NULL */
    const char *web_dir; /* realpath of --web-dir, or NULL: the embedded assets */
    const api_route *routes;
    int n_routes;
    double header_timeout, body_timeout; /* seconds */
    int max_streams;                     /* open streams before generating routes answer 503; 0: no limit */
    pthread_mutex_t conns_mu;
    struct conn *conns; /* every open connection, under conns_mu */
    int n_requests;     /* requests begun and not yet completed (replies included), under conns_mu */
};

/* Per-request state, from the first call to the completion notice. */
typedef struct request {
    const api_route *route;
    char param[MAX_PARAM];
    char *body;
    size_t len, cap;
    bool too_large;
} request;

/* ------------------------------------------------------------ routing */

/* Does path match pattern? "{id}" matches one non-empty segment of
 * [A-Za-z0-9_.-], copied into param. */
static bool route_match(const char *pattern, const char *path, char *param) {
    while (*pattern) {
        if (!strncmp(pattern, "{id}", 4)) {
            size_t n = strcspn(path, "/");
            if (n == 0 || n >= MAX_PARAM || strspn(path, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                                      "0123456789_.-") < n)
                return false;
            memcpy(param, path, n);
            param[n] = 0;
            path += n;
            pattern += 4;
        } else if (*pattern++ != *path++) {
            return false;
        }
    }
    return *path == 0;
}

/* Finds the route of method and path. NULL when none: *path_known says
 * whether another method serves the path (405, with its methods in allow). */
static const api_route *route_find(const server *s, const char *method, const char *path, char *param,
                                   bool *path_known, char *allow, size_t allow_size) {
    *path_known = false;
    allow[0] = 0;
    for (int i = 0; i < s->n_routes; i++) {
        const api_route *r = &s->routes[i];
        if (!route_match(r->pattern, path, param)) continue;
        if (!strcmp(r->method, method)) return r;
        *path_known = true;
        size_t n = strlen(allow);
        snprintf(allow + n, allow_size - n, "%s%s", n ? ", " : "", r->method);
    }
    return NULL;
}

/* ------------------------------------------------------------ replies */

static ssize_t sse_read(void *cls, uint64_t pos, char *buf, size_t max) {
    ssize_t n = api_stream_read(cls, buf, max);
    return n == -2 ? MHD_CONTENT_READER_END_WITH_ERROR : n < 0 ? MHD_CONTENT_READER_END_OF_STREAM : n;
}

static void sse_free(void *cls) { api_stream_free(cls); }

static enum MHD_Result send_reply(const server *s, struct MHD_Connection *c, api_reply *rp) {
    struct MHD_Response *resp;
    if (rp->stream) {
        resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK, sse_read, rp->stream, sse_free);
        if (!resp) api_stream_free(rp->stream);
        else {
            MHD_add_response_header(resp, "Cache-Control", "no-cache");
            MHD_add_response_header(resp, "X-Accel-Buffering", "no"); /* proxies must not hold events back */
        }
    } else {
        resp = MHD_create_response_from_buffer(rp->body_len, rp->body, MHD_RESPMEM_MUST_FREE);
        if (!resp) free(rp->body);
    }
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Content-Type", rp->content_type ? rp->content_type : "application/json");
    if (rp->allow) MHD_add_response_header(resp, "Allow", rp->allow);
    if (rp->filename[0]) {
        char cd[128];
        snprintf(cd, sizeof cd, "attachment; filename=\"%s\"", rp->filename);
        MHD_add_response_header(resp, "Content-Disposition", cd);
    }
    if (rp->status == 401) MHD_add_response_header(resp, "WWW-Authenticate", "Bearer");
    if (s->cors) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", s->cors);
        MHD_add_response_header(resp, "Vary", "Origin");
    }
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)rp->status, resp);
    MHD_destroy_response(resp);
    return ok;
}

/* ------------------------------------------------------------ static files */

/* The API's own prefixes never fall through to static files, so an unknown
 * API path is a JSON 404, not a web page. */
static bool is_api_path(const char *url) {
    return !strncmp(url, "/api/", 5) || !strcmp(url, "/api") || !strncmp(url, "/v1/", 4) || !strcmp(url, "/v1") ||
           !strcmp(url, "/metrics");
}

/* Reads web_dir + path when it resolves (symlinks included) to a regular
 * file inside web_dir. Returns a malloc'd buffer or NULL. */
static char *read_static(const char *web_dir, const char *path, size_t *len) {
    char full[PATH_MAX], real[PATH_MAX];
    if (snprintf(full, sizeof full, "%s%s", web_dir, path) >= (int)sizeof full) return NULL;
    if (!realpath(full, real)) return NULL;
    size_t n = strlen(web_dir);
    if (strncmp(real, web_dir, n) || real[n] != '/') return NULL; /* escaped the root */
    FILE *f = fopen(real, "rb");
    if (!f) return NULL;
    struct stat st;
    char *buf = NULL;
    if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode) && (uintmax_t)st.st_size <= MAX_STATIC_BYTES) {
        *len = (size_t)st.st_size;
        buf = malloc(*len + 1);
        if (buf && fread(buf, 1, *len, f) != *len) {
            free(buf);
            buf = NULL;
        }
    }
    fclose(f);
    return buf;
}

/* GET/HEAD outside the API: the web UI, from --web-dir or embedded. No key
 * is needed (the page itself holds no data). */
static enum MHD_Result serve_static(const server *s, struct MHD_Connection *c, const char *url) {
    const char *path = strcmp(url, "/") ? url : "/index.html";
    api_reply rp = {0};
    if (!assets_path_ok(path)) {
        api_error(&rp, 404, NULL, "not_found", "no file %s", url);
        return send_reply(s, c, &rp);
    }
    struct MHD_Response *resp = NULL;
    if (s->web_dir) {
        size_t len = 0;
        char *buf = read_static(s->web_dir, path, &len);
        if (buf) resp = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
        if (buf && !resp) free(buf);
    } else {
        const asset *a = assets_find(path);
        if (a) resp = MHD_create_response_from_buffer(a->size, (void *)a->data, MHD_RESPMEM_PERSISTENT);
    }
    if (!resp) {
        api_error(&rp, 404, NULL, "not_found", "no file %s", url);
        return send_reply(s, c, &rp);
    }
    MHD_add_response_header(resp, "Content-Type", assets_mime(path));
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    enum MHD_Result ok = MHD_queue_response(c, MHD_HTTP_OK, resp);
    MHD_destroy_response(resp);
    return ok;
}

/* The CORS preflight: any route, no key (browsers send none). */
static enum MHD_Result send_preflight(const server *s, struct MHD_Connection *c, const char *allow) {
    api_reply rp = {.status = 204, .content_type = "text/plain", .body = NULL, .body_len = 0};
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp) return MHD_NO;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", s->cors);
    MHD_add_response_header(resp, "Access-Control-Allow-Methods", allow);
    MHD_add_response_header(resp, "Access-Control-Allow-Headers", "Authorization, Content-Type");
    MHD_add_response_header(resp, "Access-Control-Max-Age", "600");
    MHD_add_response_header(resp, "Vary", "Origin");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)rp.status, resp);
    MHD_destroy_response(resp);
    return ok;
}

/* Compares the whole key whatever the first difference, so the time taken
 * does not tell how much of a guess was right. The scheme is
 * case-insensitive (RFC 9110). */
static bool key_ok(const server *s, const char *h) {
    if (!h || strncasecmp(h, "Bearer ", 7)) return false;
    h += 7;
    while (*h == ' ') h++;
    size_t n = strlen(h), k = strlen(s->api_key);
    unsigned diff = n != k;
    for (size_t i = 0; i < k; i++) diff |= (unsigned char)s->api_key[i] ^ (unsigned char)(i < n ? h[i] : 0);
    return diff == 0;
}

/* Checks done on the headers alone (authorization and content_length may
 * be NULL). Returns true with rp filled when the request is refused. On an
 * API path the key is checked first, so without it a client learns nothing
 * of which routes exist. HEAD is answered on GET routes (without a body). */
static bool refuse_early(const server *s, const char *method, const char *url, const char *authorization,
                         const char *content_length, request *r, api_reply *rp, char *allow, size_t allow_size) {
    bool known;
    const char *m = strcmp(method, "HEAD") ? method : "GET";
    r->route = route_find(s, m, url, r->param, &known, allow, allow_size);
    if (s->api_key && !(r->route && r->route->open) && !key_ok(s, authorization)) {
        r->route = NULL;
        api_error(rp, 401, NULL, "invalid_api_key", "missing or wrong API key (send Authorization: Bearer KEY)");
        return true;
    }
    if (!r->route && known) {
        api_error(rp, 405, NULL, "method_not_allowed", "%s %s is not allowed (allowed: %s)", method, url, allow);
        rp->allow = allow;
        return true;
    }
    if (!r->route) {
        api_error(rp, 404, NULL, "not_found", "no route %s %s", method, url);
        return true;
    }
    if (content_length) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(content_length, &end, 10);
        size_t most = api_route_max_body(r->route);
        if (errno || end == content_length || n > most) {
            r->route = NULL;
            api_error(rp, 413, NULL, "body_too_large", "the body has %s bytes; the limit is %zu", content_length,
                      most);
            return true;
        }
    }
    return false;
}

/* Collects the query arguments (name, value pairs; MHD owns the strings
 * until the request completes). */
typedef struct arg_list {
    const char *v[2 * API_MAX_ARGS + 1];
    int n;
    bool too_many;
} arg_list;

static enum MHD_Result on_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value) {
    arg_list *l = cls;
    if (l->n >= API_MAX_ARGS) {
        l->too_many = true;
        return MHD_NO;
    }
    l->v[2 * l->n] = key;
    l->v[2 * l->n + 1] = value;
    l->n++;
    return MHD_YES;
}

/* ------------------------------------------------------------ connections
 *
 * MHD's own timeout is for inactivity: a client sending one header byte a
 * second is never idle. So each connection carries a deadline for the part
 * of the request the client owes: its headers (from the connection's start,
 * or from the end of the previous response on a kept-alive connection),
 * then its body. The main loop shuts down the socket of a connection past
 * its deadline; MHD then closes it. While the server answers, the deadline
 * is off (a stream's pace is the stream's business: api.h). */

typedef struct conn {
    struct conn *prev, *next;
    int fd;
    double deadline; /* monotonic seconds; 0: none */
    bool cut;        /* its socket was shut down */
} conn;

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void conn_set_deadline(server *s, struct MHD_Connection *c, double seconds) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn *k = ci ? ci->socket_context : NULL;
    if (!k) return;
    pthread_mutex_lock(&s->conns_mu);
    k->deadline = seconds > 0 ? mono_now() + seconds : 0;
    pthread_mutex_unlock(&s->conns_mu);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
    server *s = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        conn *k = calloc(1, sizeof *k);
        if (!k || !ci) {
            free(k);
            return;
        }
        k->fd = ci->connect_fd;
        k->deadline = mono_now() + s->header_timeout;
        pthread_mutex_lock(&s->conns_mu);
        k->next = s->conns;
        if (s->conns) s->conns->prev = k;
        s->conns = k;
        pthread_mutex_unlock(&s->conns_mu);
        *socket_context = k;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
        /* MHD tells before it closes the socket, so the fd is still ours to
         * shut down until this entry is gone */
        conn *k = *socket_context;
        pthread_mutex_lock(&s->conns_mu);
        if (k->prev) k->prev->next = k->next;
        else s->conns = k->next;
        if (k->next) k->next->prev = k->prev;
        pthread_mutex_unlock(&s->conns_mu);
        free(k);
        *socket_context = NULL;
    }
}

/* Shuts down the sockets of connections past their deadline. Returns how many. */
static int conns_reap(server *s) {
    double now = mono_now();
    int n = 0;
    pthread_mutex_lock(&s->conns_mu);
    for (conn *k = s->conns; k; k = k->next) {
        if (k->cut || k->deadline <= 0 || now < k->deadline) continue;
        shutdown(k->fd, SHUT_RDWR);
        k->cut = true;
        n++;
    }
    pthread_mutex_unlock(&s->conns_mu);
    return n;
}

static int requests_open(server *s) {
    pthread_mutex_lock(&s->conns_mu);
    int n = s->n_requests;
    pthread_mutex_unlock(&s->conns_mu);
    return n;
}

/* ------------------------------------------------------------ requests */

/* The route's handler, on a whole request. Generating routes are refused
 * while the streams open leave fewer than the reserve of connections, so
 * health checks and reads always find a slot. */
static void dispatch(server *s, request *r, const char *method, const char *url, const char *const *args,
                     api_reply *rp) {
    if (r->route->generates && s->max_streams > 0 && api_n_streams(s->api) >= s->max_streams) {
        api_error(rp, 503, NULL, "server_busy", "%d streams are open, the most this server keeps (--max-connections "
                  "less a reserve of %d for other requests); try again later", s->max_streams, CONN_RESERVE);
        return;
    }
    if (!api_args_ok(r->route, args, rp)) return;
    api_req rq = {.method = method, .path = url, .param = r->param, .args = args, .body = r->body,
                  .body_len = r->len};
    r->route->fn(s->api, &rq, rp);
    /* a stream's status is 200 once it starts: counted now */
    api_metrics_request(s->api, (int)(r->route - s->routes), rp->status ? rp->status : 200);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    server *s = cls;
    request *r = *con_cls;
    api_reply rp = {0};
    if (!r) {
        if (!(r = calloc(1, sizeof *r))) return MHD_NO;
        *con_cls = r;
        pthread_mutex_lock(&s->conns_mu);
        s->n_requests++;
        pthread_mutex_unlock(&s->conns_mu);
        conn_set_deadline(s, c, s->body_timeout); /* the headers are in; the body is owed next */
        if (!strcmp(method, "OPTIONS") && s->cors) {
            char allow[128];
            bool known;
            route_find(s, "", url, r->param, &known, allow, sizeof allow);
            if (known) {
                conn_set_deadline(s, c, 0);
                return send_preflight(s, c, allow);
            }
        }
        if ((!strcmp(method, "GET") || !strcmp(method, "HEAD")) && !is_api_path(url)) {
            r->route = NULL;
            conn_set_deadline(s, c, 0);
            return serve_static(s, c, url);
        }
        char allow[128];
        const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION),
                   *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (refuse_early(s, method, url, auth, cl, r, &rp, allow, sizeof allow)) {
            r->route = NULL;
            conn_set_deadline(s, c, 0);
            api_metrics_request(s->api, -1, rp.status); /* refused before any route ran */
            return send_reply(s, c, &rp);
        }
        return MHD_YES;
    }
    if (!r->route) { /* refused on the first call; the rest of the body is dropped */
        *upload_size = 0;
        return MHD_YES;
    }
    if (*upload_size) {
        size_t n = *upload_size;
        *upload_size = 0;
        size_t most = api_route_max_body(r->route);
        if (r->too_large || r->len + n > most) { /* a chunked body without Content-Length */
            r->too_large = true;
            return MHD_YES;
        }
        if (r->len + n > r->cap) {
            size_t cap = r->cap * 2 + n;
            if (cap > most) cap = most;
            char *b = realloc(r->body, cap);
            if (!b) return MHD_NO;
            r->body = b;
            r->cap = cap;
        }
        memcpy(r->body + r->len, upload, n);
        r->len += n;
        return MHD_YES;
    }
    conn_set_deadline(s, c, 0);
    if (r->too_large) {
        api_error(&rp, 413, NULL, "body_too_large", "the body is larger than %zu bytes", api_route_max_body(r->route));
        return send_reply(s, c, &rp);
    }
    arg_list args = {.n = 0};
    MHD_get_connection_values(c, MHD_GET_ARGUMENT_KIND, on_arg, &args);
    args.v[2 * args.n] = NULL;
    if (args.too_many) {
        api_error(&rp, 400, NULL, "too_many_arguments", "more than %d query arguments", API_MAX_ARGS);
        return send_reply(s, c, &rp);
    }
    dispatch(s, r, method, url, args.v, &rp);
    return send_reply(s, c, &rp);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode why) {
    server *s = cls;
    request *r = *con_cls;
    if (r) {
        free(r->body);
        free(r);
        *con_cls = NULL;
        pthread_mutex_lock(&s->conns_mu);
        s->n_requests--;
        pthread_mutex_unlock(&s->conns_mu);
    }
    conn_set_deadline(s, c, s->header_timeout); /* a kept-alive connection owes the next request's headers */
}

/* ------------------------------------------------------------ without sockets */

server *server_new_offline(api *a, const char *api_key) {
    server *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->api = a;
    s->api_key = api_key;
    s->routes = api_routes(&s->n_routes);
    pthread_mutex_init(&s->conns_mu, NULL);
    return s;
}

void server_free_offline(server *s) {
    if (!s) return;
    pthread_mutex_destroy(&s->conns_mu);
    free(s);
}

void server_dispatch(server *s, const char *method, const char *url, const char *authorization,
                     const char *const *args, const char *body, size_t body_len, api_reply *rp) {
    request r = {.body = (char *)body, .len = body_len};
    char allow[128], cl[32];
    snprintf(cl, sizeof cl, "%zu", body_len);
    memset(rp, 0, sizeof *rp);
    if (!is_api_path(url)) {
        api_error(rp, 404, NULL, "not_found", "no route %s %s", method, url);
        return;
    }
    if (refuse_early(s, method, url, authorization, cl, &r, rp, allow, sizeof allow)) {
        rp->allow = NULL; /* points into this frame */
        return;
    }
    int n = 0;
    while (args && args[2 * n]) n++;
    if (n > API_MAX_ARGS) {
        api_error(rp, 400, NULL, "too_many_arguments", "more than %d query arguments", API_MAX_ARGS);
        return;
    }
    dispatch(s, &r, method, url, args, rp);
}

/* ------------------------------------------------------------ flags */

static const char *usage_text =
    "usage: heed serve [options]\n"
    "  --host HOST                   address to listen on (default 127.0.0.1)\n"
    "  --port N                      port (default 8080; 0 = any free port)\n"
    "  -m, --model PATH              GGUF file or Hugging Face folder (default: the bundled model)\n"
    "  --ctx N                       context size in tokens (default: the model's limit, bounded by\n"
    "                                the memory its cache and recordings need)\n"
    "  --max-tokens N                cap on generated tokens per request (default: the context)\n"
    "  --max-prompt N                prompt token limit (default: the context)\n"
    "  --threads N                   inference threads (default: all cores)\n"
    "  --cors ORIGIN                 allow browser requests from ORIGIN\n"
    "  --api-key KEY                 require Authorization: Bearer KEY\n"
    "  --data-dir DIR                folder of the run store (created; default $XDG_DATA_HOME/heed\n"
    "                                or ~/.local/share/heed)\n"
    "  --cache-runs N                stored runs kept loaded with their views (default 10)\n"
    "  --cache-bytes N               bytes of computed views kept in memory, all runs together\n"
    "                                (default 268435456)\n"
    "  --attention-tokens-top-k N    attended positions reported per token (default 32)\n"
    "  --web-dir DIR                 serve the web UI from DIR instead of the embedded copy\n"
    "  --max-connections N           open connections at most (default 256; 16 of them are kept\n"
    "                                from streams, for health checks and reads)\n"
    "  --max-connections-per-ip N    open connections from one client address (default 64)\n"
    "  --header-timeout S            seconds a client has to send a request's headers (default 10)\n"
    "  --body-timeout S              seconds it then has to send the body (default 30)\n"
    "  --idle-timeout S              seconds without traffic either way before a connection is\n"
    "                                closed, also while sending a reply (default 60)\n"
    "  --stream-buffer N             bytes a streaming client may fall behind by before it is\n"
    "                                dropped and its generation cancelled (default 1048576)\n"
    "  --stream-stall S              seconds a streaming client may read nothing while events\n"
    "                                wait before it is dropped (default 30)\n"
    "  --upstream URL                generate on the OpenAI-compatible server at URL (which returns\n"
    "                                attention with its tokens: return_attention_tokens); the local\n"
    "                                model tokenizes and labels (docs/API.md, Upstream)\n"
    "  --upstream-key KEY            send Authorization: Bearer KEY to the upstream\n";

typedef struct serve_opts {
    const char *host, *cors, *api_key, *web_dir, *upstream, *upstream_key;
    long port, max_conn, max_per_ip, header_timeout, body_timeout, idle_timeout;
    api_config cfg;
} serve_opts;

bool server_parse_count(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

/* Returns 0, or 2 (the usage-error exit status) after a message. */
static int parse_flags(int argc, char **argv, serve_opts *o) {
    *o = (serve_opts){.host = "127.0.0.1", .port = 8080, .max_conn = MAX_CONNECTIONS, .max_per_ip = MAX_PER_IP,
                      .header_timeout = HEADER_TIMEOUT_S, .body_timeout = BODY_TIMEOUT_S,
                      .idle_timeout = IDLE_TIMEOUT_S};
    o->cfg = (api_config){.max_tokens = 0, .max_prompt = 0, .attn_top_k = 32, .cache_runs = 10,
                          .cache_bytes = (size_t)256 << 20, .stream_buffer = (size_t)1 << 20,
                          .stream_stall_s = 30};
    for (int i = 0; i < argc; i++) {
        const char *a, *v;
        int r = server_flag(argc, argv, &i, "serve", usage_text, &a, &v);
        if (r) return r;
        long n = 0;
        bool ok = true;
        if (!strcmp(a, "--host")) o->host = v;
        else if (!strcmp(a, "--port")) ok = server_parse_count(v, 0, 65535, &o->port);
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) o->cfg.model_path = v;
        else if (!strcmp(a, "--max-tokens") && (ok = server_parse_count(v, 1, 1 << 20, &n))) o->cfg.max_tokens = (int)n;
        else if (!strcmp(a, "--max-prompt") && (ok = server_parse_count(v, 1, 1 << 24, &n))) o->cfg.max_prompt = (int)n;
        else if (!strcmp(a, "--ctx") && (ok = server_parse_count(v, 1, 1 << 24, &n))) o->cfg.n_ctx = (int)n;
        else if (!strcmp(a, "--threads") && (ok = server_parse_count(v, 1, 1024, &n))) o->cfg.n_threads = (int)n;
        else if (!strcmp(a, "--attention-tokens-top-k") && (ok = server_parse_count(v, 0, API_MAX_ATTN_TOP, &n)))
            o->cfg.attn_top_k = (int)n;
        else if (!strcmp(a, "--cache-runs") && (ok = server_parse_count(v, 1, 1 << 16, &n))) o->cfg.cache_runs = (int)n;
        else if (!strcmp(a, "--cache-bytes") && (ok = server_parse_count(v, 0, LONG_MAX, &n))) o->cfg.cache_bytes = (size_t)n;
        else if (!strcmp(a, "--max-connections")) ok = server_parse_count(v, CONN_RESERVE + 1, 4096, &o->max_conn);
        else if (!strcmp(a, "--max-connections-per-ip")) ok = server_parse_count(v, 1, 4096, &o->max_per_ip);
        else if (!strcmp(a, "--header-timeout")) ok = server_parse_count(v, 1, 3600, &o->header_timeout);
        else if (!strcmp(a, "--body-timeout")) ok = server_parse_count(v, 1, 3600, &o->body_timeout);
        else if (!strcmp(a, "--idle-timeout")) ok = server_parse_count(v, 1, 86400, &o->idle_timeout);
        else if (!strcmp(a, "--stream-buffer") && (ok = server_parse_count(v, 4096, 1L << 34, &n)))
            o->cfg.stream_buffer = (size_t)n;
        else if (!strcmp(a, "--stream-stall") && (ok = server_parse_count(v, 1, 3600, &n))) o->cfg.stream_stall_s = (int)n;
        else if (!strcmp(a, "--cors")) o->cors = v;
        else if (!strcmp(a, "--api-key")) o->api_key = v;
        else if (!strcmp(a, "--web-dir")) o->web_dir = v;
        else if (!strcmp(a, "--upstream")) o->upstream = v;
        else if (!strcmp(a, "--upstream-key")) o->upstream_key = v;
        else if (!strcmp(a, "--data-dir")) o->cfg.data_dir = v;
        else if (ok) {
            fprintf(stderr, "heed: serve: unknown option '%s'\n", a);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "heed: serve: %s: '%s' is not a valid value\n", a, v);
            return 2;
        }
    }
    if (o->api_key && !o->api_key[0]) {
        fprintf(stderr, "heed: serve: --api-key must not be empty\n");
        return 2;
    }
    if (o->upstream && strncmp(o->upstream, "http://", 7) && strncmp(o->upstream, "https://", 8)) {
        fprintf(stderr, "heed: serve: --upstream must be an http:// or https:// URL\n");
        return 2;
    }
    if (o->upstream_key && !o->upstream) {
        fprintf(stderr, "heed: serve: --upstream-key needs --upstream\n");
        return 2;
    }
    return 0;
}

/* ------------------------------------------------------------ main */

static struct MHD_Daemon *start_daemon(server *s, const serve_opts *o, unsigned *port) {
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai;
    char port_s[16];
    snprintf(port_s, sizeof port_s, "%ld", o->port);
    int gai = getaddrinfo(o->host, port_s, &hints, &ai);
    if (gai) {
        fprintf(stderr, "heed: serve: --host %s: %s\n", o->host, gai_strerror(gai));
        return NULL;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_AUTO;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)o->port, NULL, NULL, on_request, s, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, s, MHD_OPTION_NOTIFY_CONNECTION, on_connection, s,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)o->max_conn, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
        (unsigned)o->max_per_ip, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->idle_timeout, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!d) {
        fprintf(stderr, "heed: serve: cannot listen on %s port %ld (in use, or not an address here)\n", o->host,
                o->port);
        return NULL;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *port = di ? di->port : (unsigned)o->port;
    return d;
}

/* mkdir -p: the default data folder's parents (~/.local/share) may be missing. */
static int make_dirs(char *path) {
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        int rc = mkdir(path, 0755) && errno != EEXIST ? -1 : 0;
        *p = '/';
        if (rc) return -1;
    }
    return mkdir(path, 0755) && errno != EEXIST ? -1 : 0;
}

int server_flag(int argc, char **argv, int *i, const char *cmd, const char *usage, const char **a, const char **v) {
    *a = argv[*i];
    *v = *i + 1 < argc ? argv[*i + 1] : NULL;
    if (!strcmp(*a, "-h") || !strcmp(*a, "--help")) {
        fputs(usage, stdout);
        return 1;
    }
    if (!*v) {
        fprintf(stderr, "heed: %s: %s %s\n", cmd, *a, (*a)[0] == '-' ? "needs a value" : "is not an option");
        return 2;
    }
    (*i)++;
    return 0;
}

int server_data_dir(const char *given, const char *cmd, char *dir, size_t size) {
    /* the per-user data folder: $XDG_DATA_HOME/heed, else ~/.local/share/heed */
    const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
    int n = given               ? snprintf(dir, size, "%s", given)
            : xdg && xdg[0] == '/' ? snprintf(dir, size, "%s/heed", xdg)
            : home && home[0]    ? snprintf(dir, size, "%s/.local/share/heed", home)
                                 : -1;
    if (n <= 0 || (size_t)n >= size) {
        fprintf(stderr, "heed: %s: no data folder (set --data-dir, XDG_DATA_HOME or HOME)\n", cmd);
        return -1;
    }
    if (make_dirs(dir)) {
        fprintf(stderr, "heed: %s: --data-dir %s: %s\n", cmd, dir, strerror(errno));
        return -1;
    }
    return 0;
}

int server_main(int argc, char **argv) {
    serve_opts o;
    int rc = parse_flags(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    char model[PATH_MAX], perr[512];
    int pr = pull_resolve(o.cfg.model_path, model, sizeof model, perr, sizeof perr); /* -m ORG/REPO[:FILE] */
    if (pr < 0) {
        fprintf(stderr, "heed: serve: %s\n", perr);
        return 1;
    }
    if (pr > 0) o.cfg.model_path = model;
    char dir[PATH_MAX];
    if (server_data_dir(o.cfg.data_dir, "serve", dir, sizeof dir)) return 1;
    o.cfg.data_dir = dir;
    char web[PATH_MAX];
    if (o.web_dir && !realpath(o.web_dir, web)) {
        fprintf(stderr, "heed: serve: --web-dir %s: %s\n", o.web_dir, strerror(errno));
        return 1;
    }
    server s = {.cors = o.cors, .api_key = o.api_key, .web_dir = o.web_dir ? web : NULL,
                .header_timeout = (double)o.header_timeout, .body_timeout = (double)o.body_timeout,
                .max_streams = (int)o.max_conn - CONN_RESERVE};
    s.routes = api_routes(&s.n_routes);
    pthread_mutex_init(&s.conns_mu, NULL);
    char err[512] = "";
    if (api_new(&o.cfg, &s.api, err, sizeof err)) {
        fprintf(stderr, "heed: %s\n", err[0] ? err : "cannot load the model");
        return 1;
    }
    if (o.upstream && upstream_set(s.api, o.upstream, o.upstream_key)) {
        fprintf(stderr, "heed: out of memory\n");
        api_free(s.api);
        return 1;
    }
    /* a client that leaves mid-stream must not kill the server */
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    unsigned port = 0;
    s.daemon = start_daemon(&s, &o, &port);
    if (!s.daemon) {
        api_free(s.api);
        return 1;
    }
    bool v6 = strchr(o.host, ':') != NULL;
    printf("heed: listening on http://%s%s%s:%u\n", v6 ? "[" : "", o.host, v6 ? "]" : "", port);
    fflush(stdout);

    while (!stop_signal) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
        conns_reap(&s);
    }
    fprintf(stderr, "heed: %s received, shutting down\n", stop_signal == SIGINT ? "SIGINT" : "SIGTERM");
    /* the running generation ends at its next token and is stored, queued
     * ones are answered 503; every request under way is then answered and
     * every stream read to its end (as long as its client keeps reading,
     * within a bound) before the daemon closes the connections and joins
     * their threads, so nothing uses the engine when it goes */
    api_stop(s.api);
    for (int i = 0; i < SHUTDOWN_DRAIN_MS / 50 && requests_open(&s) > 0; i++) {
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
        conns_reap(&s);
    }
    MHD_stop_daemon(s.daemon);
    api_free(s.api);
    pthread_mutex_destroy(&s.conns_mu);
    return 0;
}
