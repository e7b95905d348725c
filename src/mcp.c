/*
 * mcp.c - `heed mcp`: a Model Context Protocol server over stdio (contract
 * in mcp.h, protocol and tools in docs/MCP.md).
 *
 * One loop reads a line from stdin, answers it and writes one line to
 * stdout. The JSON-RPC layer (framing, ids, error codes, the lifecycle) is
 * here; every tool is a thin translation onto the handlers of `heed serve`,
 * called through server_dispatch on an offline server: a generation is
 * POST /api/runs (its event stream read to `done`), a row is
 * GET /api/runs/{id}/attention?pos=P, a comparison is
 * GET /api/runs/{id}/effects?base=B. So the parameter checks, the run
 * store and its documents, the intervention parsing and the views are the
 * server's own, and a run made here is one `heed serve` lists (and back).
 *
 * Each tool's inputSchema (JSON text in the table below) is also what its
 * arguments are checked against before the tool runs, so the schema an
 * agent reads and the checks cannot drift apart. Argument errors, like
 * every other failure of a tool, come back as a result with isError (MCP
 * 2025-11-25: the model reads them and corrects itself); JSON-RPC errors
 * are for the protocol: bad framing, unknown methods or tools, malformed
 * tools/call params.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "api.h"
#include "heed.h"
#include "mcp.h"
#include "pull.h"
#include "server.h"

#define MAX_LINE (8u << 20)   /* a longer message is answered -32600 and skipped */
#define MAX_GEN_TOKENS 1024   /* generate's max_tokens bound (the context bounds it too) */
#define MAX_RUN_ID 127        /* the server's {id} segments are shorter than 128 */
#define REAL_DIGITS 6         /* significant digits of every real in a reply */
#define ERR_MAX 512

/* The revisions this server speaks, newest first: a client's own is echoed,
 * any other gets the newest (the client then decides). */
static const char *const versions[] = {"2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"};

enum {
    RPC_PARSE = -32700,
    RPC_INVALID_REQUEST = -32600,
    RPC_METHOD_NOT_FOUND = -32601,
    RPC_INVALID_PARAMS = -32602,
    RPC_INTERNAL = -32603,
};

typedef struct mcp_state {
    api *api;
    server *srv;      /* offline: server_dispatch only */
    FILE *out;        /* the real stdout (fd 1 points at stderr meanwhile) */
    char model_id[256];
    int n_layer, n_head;
} mcp_state;

typedef json_t *(*tool_fn)(mcp_state *m, json_t *args, char *err, size_t n);

typedef struct tool {
    const char *name, *title, *description;
    const char *schema; /* inputSchema as JSON text; also what the arguments are checked against */
    tool_fn fn;
    bool read_only;
} tool;

/* ------------------------------------------------------------ calls into the server */

/* The message of an API error reply ({"error":{"message"}}), or a fallback. */
static void reply_error(json_t *j, int status, char *err, size_t n) {
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    if (msg) snprintf(err, n, "%s", msg);
    else snprintf(err, n, "the server answered %d", status);
}

/* Reads a generation's event stream to its end: *out gets the data of its
 * `done` event, or of its `error` event. Returns 200, or 500 when the
 * stream ended without either. */
static int read_stream(api_stream *s, json_t **out) {
    char buf[16384], *line = NULL, event[32] = "message";
    size_t len = 0, cap = 0;
    int status = 500;
    bool fail = false;
    ssize_t got;
    while ((got = api_stream_read(s, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < got && !fail; i++) {
            if (buf[i] != '\n') {
                if (len + 2 > cap) {
                    size_t nc = cap ? cap * 2 : 4096;
                    char *nl = realloc(line, nc);
                    if (!nl) {
                        fail = true;
                        break;
                    }
                    line = nl, cap = nc;
                }
                line[len++] = buf[i];
                continue;
            }
            if (line) line[len] = 0;
            if (len == 0) snprintf(event, sizeof event, "message"); /* an event ends */
            else if (!strncmp(line, "event: ", 7)) snprintf(event, sizeof event, "%s", line + 7);
            else if (!strncmp(line, "data: ", 6) && (!strcmp(event, "done") || !strcmp(event, "error"))) {
                json_decref(*out);
                *out = json_loads(line + 6, 0, NULL);
                status = !strcmp(event, "done") && *out ? 200 : 500;
            }
            len = 0;
        }
    }
    free(line);
    api_stream_free(s);
    return fail ? 500 : status;
}

/* One request through heed serve's routing and handlers. args: name, value
 * pairs, NULL-terminated (or NULL); body (or NULL) is sent as JSON. Returns
 * the HTTP status with *out the reply's JSON (NULL when it is none); a
 * stream is read to its end (read_stream). */
static int call(mcp_state *m, const char *method, const char *path, const char *const *args, json_t *body,
                json_t **out) {
    *out = NULL;
    char *b = body ? json_dumps(body, JSON_COMPACT) : NULL;
    if (body && !b) return 500;
    api_reply rp;
    server_dispatch(m->srv, method, path, NULL, args, b, b ? strlen(b) : 0, &rp);
    free(b);
    if (rp.stream) return read_stream(rp.stream, out);
    if (rp.body) *out = json_loadb(rp.body, rp.body_len, 0, NULL);
    free(rp.body);
    return rp.status ? rp.status : 200;
}

/* A run id the server's routes can hold: [A-Za-z0-9_.-], 1..127 bytes. */
static bool run_id_ok(const char *id, char *err, size_t n) {
    size_t len = strlen(id);
    if (len && len <= MAX_RUN_ID &&
        strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == len)
        return true;
    snprintf(err, n, "no run '%.*s' (run ids look like run_..., from generate or list_runs)", 64, id);
    return false;
}

/* GET /api/runs/{id}: the run's document, or NULL with the message. */
static json_t *get_doc(mcp_state *m, const char *id, char *err, size_t n) {
    if (!run_id_ok(id, err, n)) return NULL;
    char path[192];
    snprintf(path, sizeof path, "/api/runs/%s", id);
    json_t *j;
    int st = call(m, "GET", path, NULL, NULL, &j);
    if (st == 200 && json_is_object(j)) return j;
    reply_error(j, st, err, n);
    json_decref(j);
    return NULL;
}

static int doc_int(json_t *doc, const char *name) { return (int)json_integer_value(json_object_get(doc, name)); }

/* The label of position pos in a run's document ("" past its tokens). */
static const char *doc_label(json_t *doc, int pos) {
    json_t *tok = json_array_get(json_object_get(doc, "tokens"), (size_t)pos);
    const char *s = json_string_value(json_object_get(tok, "label"));
    return s ? s : "";
}

/* The labels of positions [from, to) of a run's document. */
static json_t *doc_labels(json_t *doc, int from, int to) {
    json_t *arr = json_array();
    for (int p = from; p < to; p++) json_array_append_new(arr, json_string(doc_label(doc, p)));
    return arr;
}

/* Copies the members keys of a run's document that it has (a null
 * member only when it is a field that is always there). */
static void copy_keys(json_t *dst, json_t *doc, const char *const *keys, size_t n_keys) {
    for (size_t i = 0; i < n_keys; i++) {
        json_t *v = json_object_get(doc, keys[i]);
        bool optional = !strcmp(keys[i], "messages") || !strcmp(keys[i], "branch");
        if (v && !(optional && json_is_null(v))) json_object_set(dst, keys[i], v);
    }
}

/* Starts a generation (POST /api/runs with body) and waits for it to be
 * stored: the `done` event's data, or NULL with the message. */
static json_t *generate_run(mcp_state *m, json_t *body, char *err, size_t n) {
    json_t *j;
    int st = call(m, "POST", "/api/runs", NULL, body, &j);
    if (st == 200 && json_is_string(json_object_get(j, "run_id"))) return j;
    reply_error(j, st, err, n);
    json_decref(j);
    return NULL;
}

/* The attention row of query pos (keys 0..pos) of a stored run, one head
 * or the mean over the selection (layer/head -1: all), as the server's
 * attention view gives it (9 significant digits: the floats exactly).
 * Returns the row (malloc'd, *n_out entries) or NULL with the message. */
static float *fetch_row(mcp_state *m, const char *id, int pos, int layer, int head, int *n_out, char *err, size_t n) {
    char path[192], ps[16], ls[16], hs[16];
    const char *args[7];
    int k = 0;
    snprintf(path, sizeof path, "/api/runs/%s/attention", id);
    snprintf(ps, sizeof ps, "%d", pos);
    args[k++] = "pos", args[k++] = ps;
    if (layer >= 0) snprintf(ls, sizeof ls, "%d", layer), args[k++] = "layer", args[k++] = ls;
    if (head >= 0) snprintf(hs, sizeof hs, "%d", head), args[k++] = "head", args[k++] = hs;
    args[k] = NULL;
    json_t *j;
    int st = call(m, "GET", path, args, NULL, &j);
    json_t *row = json_object_get(j, "row");
    if (st != 200 || !json_is_array(row)) {
        reply_error(j, st, err, n);
        json_decref(j);
        return NULL;
    }
    size_t len = json_array_size(row);
    float *x = malloc(sizeof(float) * (len + 1));
    if (!x) snprintf(err, n, "out of memory");
    for (size_t i = 0; x && i < len; i++) x[i] = (float)json_number_value(json_array_get(row, i));
    json_decref(j);
    *n_out = (int)len;
    return x;
}

/* What a row was combined from, in words. */
static void describe_sel(int layer, int head, char *buf, size_t n) {
    if (layer >= 0 && head >= 0) snprintf(buf, n, "layer %d, head %d (one head, exact)", layer, head);
    else if (layer >= 0) snprintf(buf, n, "mean over the heads of layer %d", layer);
    else if (head >= 0) snprintf(buf, n, "mean over head %d of every layer", head);
    else snprintf(buf, n, "mean over all layers and heads");
}

/* An optional integer argument (already checked), or -1. */
static int opt_int(json_t *args, const char *name) {
    json_t *v = json_object_get(args, name);
    return json_is_integer(v) ? (int)json_integer_value(v) : -1;
}

/* Adds what query pos of a run does, when it chose an output token. */
static void add_query(json_t *r, json_t *doc, int pos) {
    int n_prompt = doc_int(doc, "n_prompt"), n_output = doc_int(doc, "n_output"), t = pos - (n_prompt - 1);
    json_object_set_new(r, "token", json_string(doc_label(doc, pos)));
    if (t >= 0 && t < n_output) {
        json_object_set_new(r, "step", json_integer(t));
        json_object_set_new(r, "chosen_token", json_string(doc_label(doc, pos + 1)));
    }
}

static json_t *created_utc(json_t *created) {
    time_t t = (time_t)json_integer_value(created);
    struct tm tm;
    char buf[32];
    if (!gmtime_r(&t, &tm) || !strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm)) return json_null();
    return json_string(buf);
}

/* ------------------------------------------------------------ tools */

static json_t *tool_generate(mcp_state *m, json_t *a, char *err, size_t n) {
    json_t *prompt = json_object_get(a, "prompt");
    json_t *body = json_pack("{s:O?, s:O?, s:O?}", "max_tokens", json_object_get(a, "max_tokens"), "temperature",
                             json_object_get(a, "temperature"), "seed", json_object_get(a, "seed"));
    if (json_is_true(json_object_get(a, "chat")))
        json_object_set_new(body, "messages", json_pack("[{s:s, s:O?}]", "role", "user", "content", prompt));
    else json_object_set(body, "prompt", prompt);
    json_t *done = generate_run(m, body, err, n);
    json_decref(body);
    if (!done) return NULL;
    const char *id = json_string_value(json_object_get(done, "run_id"));
    json_t *doc = get_doc(m, id, err, n), *r = NULL;
    if (doc) {
        static const char *const keys[] = {"model", "text", "n_prompt", "n_output", "stop"};
        r = json_pack("{s:s}", "run_id", id);
        copy_keys(r, doc, keys, sizeof keys / sizeof keys[0]);
        json_object_set_new(r, "tokens", doc_labels(doc, 0, doc_int(doc, "n_prompt") + doc_int(doc, "n_output")));
        json_object_set_new(r, "cached", json_boolean(json_is_true(json_object_get(done, "cached"))));
    }
    json_decref(doc);
    json_decref(done);
    return r;
}

static json_t *tool_attention_row(mcp_state *m, json_t *a, char *err, size_t n) {
    const char *id = json_string_value(json_object_get(a, "run_id"));
    int pos = opt_int(a, "pos"), layer = opt_int(a, "layer"), head = opt_int(a, "head"), len = 0;
    json_t *doc = get_doc(m, id, err, n);
    float *row = doc ? fetch_row(m, id, pos, layer, head, &len, err, n) : NULL;
    json_t *r = NULL;
    if (row) {
        char sel[96];
        describe_sel(layer, head, sel, sizeof sel);
        json_t *w = json_array();
        for (int k = 0; k < len; k++) json_array_append_new(w, json_real(row[k]));
        r = json_pack("{s:s, s:i}", "run_id", id, "pos", pos);
        add_query(r, doc, pos);
        json_object_set_new(r, "layer", layer >= 0 ? json_integer(layer) : json_null());
        json_object_set_new(r, "head", head >= 0 ? json_integer(head) : json_null());
        json_object_set_new(r, "selection", json_string(sel));
        json_object_set_new(r, "weights", w);
        json_object_set_new(r, "tokens", doc_labels(doc, 0, len));
    }
    free(row);
    json_decref(doc);
    return r;
}

static json_t *tool_top_sources(mcp_state *m, json_t *a, char *err, size_t n) {
    const char *id = json_string_value(json_object_get(a, "run_id"));
    int pos = opt_int(a, "pos"), step = opt_int(a, "step"), k = opt_int(a, "k"), layer = opt_int(a, "layer"),
        head = opt_int(a, "head"), len = 0;
    if ((pos >= 0) == (step >= 0)) {
        snprintf(err, n, "give exactly one of pos (a query position) and step (an output index)");
        return NULL;
    }
    json_t *doc = get_doc(m, id, err, n), *r = NULL;
    if (!doc) return NULL;
    int n_output = doc_int(doc, "n_output");
    if (step >= n_output) {
        snprintf(err, n, "step must be in [0, %d]: run %s has %d output tokens", n_output - 1, id, n_output);
        json_decref(doc);
        return NULL;
    }
    if (step >= 0) pos = doc_int(doc, "n_prompt") - 1 + step;
    float *row = fetch_row(m, id, pos, layer, head, &len, err, n);
    heed_edge *e = row ? malloc(sizeof *e * (size_t)(len + 1)) : NULL;
    int n_e = e ? heed_edges(row, len, 0.0f, k, e, len) : -1;
    if (row && n_e < 0) snprintf(err, n, "out of memory");
    if (n_e >= 0) {
        char sel[96];
        describe_sel(layer, head, sel, sizeof sel);
        json_t *src = json_array();
        for (int i = 0; i < n_e; i++)
            json_array_append_new(src, json_pack("{s:i, s:s, s:f}", "pos", e[i].src, "token", doc_label(doc, e[i].src),
                                                 "weight", (double)e[i].weight));
        r = json_pack("{s:s, s:i}", "run_id", id, "pos", pos);
        add_query(r, doc, pos);
        json_object_set_new(r, "layer", layer >= 0 ? json_integer(layer) : json_null());
        json_object_set_new(r, "head", head >= 0 ? json_integer(head) : json_null());
        json_object_set_new(r, "selection", json_string(sel));
        json_object_set_new(r, "sources", src);
    }
    free(e);
    free(row);
    json_decref(doc);
    return r;
}

static json_t *tool_list_runs(mcp_state *m, json_t *a, char *err, size_t n) {
    char ls[24], os[24];
    snprintf(ls, sizeof ls, "%d", opt_int(a, "limit"));
    snprintf(os, sizeof os, "%lld", (long long)json_integer_value(json_object_get(a, "offset")));
    const char *args[] = {"limit", ls, "offset", os, NULL};
    json_t *j;
    int st = call(m, "GET", "/api/runs", args, NULL, &j);
    json_t *runs = json_object_get(j, "runs");
    if (st != 200 || !json_is_array(runs)) {
        reply_error(j, st, err, n);
        json_decref(j);
        return NULL;
    }
    json_t *list = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(runs, i, e) {
        json_int_t np = json_integer_value(json_object_get(e, "n_prompt")),
                   no = json_integer_value(json_object_get(e, "n_output"));
        json_array_append_new(list, json_pack("{s:O?, s:O?, s:O?, s:o, s:O?, s:O?, s:I, s:I, s:I, s:O?}", "run_id",
                                              json_object_get(e, "id"), "kind", json_object_get(e, "kind"), "created",
                                              json_object_get(e, "created"), "created_utc",
                                              created_utc(json_object_get(e, "created")), "model",
                                              json_object_get(e, "model"), "prompt", json_object_get(e, "preview"),
                                              "n_prompt", np, "n_output", no, "n_tokens", np + no, "stop",
                                              json_object_get(e, "stop")));
    }
    json_t *r = json_pack("{s:o, s:O?, s:O?}", "runs", list, "total", json_object_get(j, "total"), "offset",
                          json_object_get(a, "offset"));
    json_decref(j);
    return r;
}

static json_t *tool_open_run(mcp_state *m, json_t *a, char *err, size_t n) {
    static const char *const keys[] = {"kind", "model", "created", "prompt", "messages", "params", "max_tokens",
                                       "n_prompt", "n_output", "stop", "text", "branch"};
    const char *id = json_string_value(json_object_get(a, "run_id"));
    json_t *doc = get_doc(m, id, err, n);
    if (!doc) return NULL;
    json_t *r = json_pack("{s:s}", "run_id", id);
    copy_keys(r, doc, keys, sizeof keys / sizeof keys[0]);
    json_object_set_new(r, "created_utc", created_utc(json_object_get(doc, "created")));
    json_object_set_new(r, "tokens", doc_labels(doc, 0, doc_int(doc, "n_prompt") + doc_int(doc, "n_output")));
    json_t *iv = json_object_get(doc, "interventions");
    json_object_set_new(r, "interventions", json_is_array(iv) ? json_incref(iv) : json_array());
    json_decref(doc);
    return r;
}

/* "L:H" into layer and head within the served model. */
static bool parse_head(mcp_state *m, const char *s, int *layer, int *head, char *err, size_t n) {
    char *end;
    errno = 0;
    long l = strtol(s, &end, 10), h = -1;
    if (!errno && end != s && *end == ':' && end[1] >= '0' && end[1] <= '9') h = strtol(end + 1, &end, 10);
    if (errno || h < 0 || *end || s[0] < '0' || s[0] > '9') {
        snprintf(err, n, "heads: '%.32s' is not \"LAYER:HEAD\" (e.g. \"2:5\")", s);
        return false;
    }
    if (l >= m->n_layer || h >= m->n_head) {
        snprintf(err, n, "heads: '%.32s' is outside the model's %d layers x %d heads", s, m->n_layer, m->n_head);
        return false;
    }
    *layer = (int)l, *head = (int)h;
    return true;
}

/* The ablations asked for (layer + head, or heads) as intervention items
 * appended to list; "L:H" names of them appended to names. */
static bool ablations(mcp_state *m, json_t *a, const char *type, json_t *list, json_t *names, char *err, size_t n) {
    int layer = opt_int(a, "layer"), head = opt_int(a, "head");
    json_t *heads = json_object_get(a, "heads");
    if (heads && (layer >= 0 || head >= 0)) {
        snprintf(err, n, "give layer and head, or heads, not both");
        return false;
    }
    if (!heads && (layer < 0 || head < 0)) {
        snprintf(err, n, "give layer and head (one head) or heads (a list of \"LAYER:HEAD\")");
        return false;
    }
    if (!heads && (layer >= m->n_layer || head >= m->n_head)) {
        snprintf(err, n, "%s %d is outside the model's %d layers x %d heads", layer >= m->n_layer ? "layer" : "head",
                 layer >= m->n_layer ? layer : head, m->n_layer, m->n_head);
        return false;
    }
    size_t count = heads ? json_array_size(heads) : 1;
    for (size_t i = 0; i < count; i++) {
        if (heads && !parse_head(m, json_string_value(json_array_get(heads, i)), &layer, &head, err, n)) return false;
        char name[32];
        snprintf(name, sizeof name, "%d:%d", layer, head);
        json_array_append_new(names, json_string(name));
        json_array_append_new(list, json_pack("{s:s, s:i, s:i}", "type", type, "layer", layer, "head", head));
    }
    return true;
}

/* The base run's prompt, sampling parameters and max_tokens, its own
 * interventions and the ablations: the request of the ablated run. */
static json_t *ablated_request(json_t *base, json_t *ablate) {
    json_t *body = json_object(), *params = json_object_get(base, "params"), *v;
    const char *key;
    json_object_foreach(params, key, v) json_object_set(body, key, v);
    json_t *prompt = json_object_get(base, "prompt"), *msgs = json_object_get(base, "messages");
    if (json_is_string(prompt)) json_object_set(body, "prompt", prompt);
    else if (json_is_array(msgs)) json_object_set(body, "messages", msgs);
    json_object_set(body, "max_tokens", json_object_get(base, "max_tokens"));
    json_t *iv = json_object_get(base, "interventions"), *all = json_is_array(iv) ? json_copy(iv) : json_array();
    json_array_extend(all, ablate);
    json_object_set_new(body, "interventions", all);
    return body;
}

/* The effects view's steps while both runs share their outputs so far (up
 * to and including the first divergent step: beyond it the two runs
 * condition on different text), with the tokens' labels. */
static json_t *compare_steps(json_t *fx, json_t *base, json_t *doc, double *mean_kl, double *max_kl) {
    json_t *steps = json_object_get(fx, "steps"), *out = json_array(), *fd = json_object_get(fx, "first_diff");
    size_t n = json_array_size(steps);
    if (json_is_integer(fd) && (size_t)json_integer_value(fd) + 1 < n) n = (size_t)json_integer_value(fd) + 1;
    int n_prompt = doc_int(base, "n_prompt");
    double sum = 0;
    *max_kl = 0;
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(steps, i), *pr = json_object_get(s, "base_token_prob");
        int t = (int)json_integer_value(json_object_get(s, "step"));
        double kl = json_number_value(json_object_get(s, "kl_lower_bound")),
               pb = json_number_value(json_object_get(s, "base_token_prob_base"));
        sum += kl;
        if (kl > *max_kl) *max_kl = kl;
        json_t *e = json_pack("{s:i, s:i, s:s, s:s, s:O?, s:f, s:f, s:O?, s:o}", "step", t, "pos", n_prompt - 1 + t,
                              "base_token", doc_label(base, n_prompt + t), "token", doc_label(doc, n_prompt + t),
                              "differs", json_object_get(s, "differs"), "kl_lower_bound", kl, "base_token_prob_base",
                              pb, "base_token_prob", pr, "base_token_prob_change",
                              json_is_number(pr) ? json_real(json_number_value(pr) - pb) : json_null());
        if (!json_is_number(pr))
            json_object_set(e, "base_token_prob_below", json_object_get(s, "base_token_prob_below"));
        json_array_append_new(out, e);
    }
    *mean_kl = n ? sum / (double)n : 0;
    return out;
}

static json_t *tool_ablate_compare(mcp_state *m, json_t *a, char *err, size_t n) {
    const char *id = json_string_value(json_object_get(a, "run_id"));
    bool mean = !strcmp(json_string_value(json_object_get(a, "mode")), "mean");
    json_t *base = get_doc(m, id, err, n), *doc = NULL, *done = NULL, *fx = NULL, *r = NULL;
    json_t *items = json_array(), *names = json_array();
    if (!base) goto out;
    const char *model = json_string_value(json_object_get(base, "model"));
    if (!model || strcmp(model, m->model_id)) {
        snprintf(err, n, "run %s was made with %s; this server runs %s (start heed mcp -m with that model)", id,
                 model ? model : "another model", m->model_id);
        goto out;
    }
    if (!ablations(m, a, mean ? "ablate_mean" : "ablate", items, names, err, n)) goto out;
    json_t *body = ablated_request(base, items);
    done = generate_run(m, body, err, n);
    json_decref(body);
    if (!done) goto out;
    const char *nid = json_string_value(json_object_get(done, "run_id"));
    if (!(doc = get_doc(m, nid, err, n))) goto out;
    char path[192];
    snprintf(path, sizeof path, "/api/runs/%s/effects", nid);
    const char *args[] = {"base", id, NULL};
    int st = call(m, "GET", path, args, NULL, &fx);
    if (st != 200 || !json_is_array(json_object_get(fx, "steps"))) {
        reply_error(fx, st, err, n);
        goto out;
    }
    double mean_kl, max_kl;
    json_t *steps = compare_steps(fx, base, doc, &mean_kl, &max_kl), *fd = json_object_get(fx, "first_diff");
    const char *text = json_string_value(json_object_get(doc, "text")),
               *base_text = json_string_value(json_object_get(base, "text"));
    json_t *div = json_null();
    if (json_is_integer(fd)) {
        int t = (int)json_integer_value(fd), np = doc_int(base, "n_prompt");
        div = json_pack("{s:i, s:i, s:s, s:s}", "step", t, "pos", np - 1 + t, "base_token", doc_label(base, np + t),
                        "token", doc_label(doc, np + t));
    }
    r = json_pack("{s:s, s:s, s:s, s:O?, s:s, s:s, s:b, s:O?, s:o, s:i, s:i, s:I, s:f, s:f, s:o, s:O?, s:b}", "run_id",
                  nid, "base_run_id", id, "mode", mean ? "mean" : "zero", "heads", names, "text", text ? text : "",
                  "base_text", base_text ? base_text : "", "same_text",
                  text && base_text && !strcmp(text, base_text), "first_divergent_step", fd, "divergence", div,
                  "n_output", doc_int(doc, "n_output"), "base_n_output", doc_int(base, "n_output"), "n_steps_compared",
                  (json_int_t)json_array_size(steps), "mean_kl_lower_bound", mean_kl, "max_kl_lower_bound", max_kl,
                  "steps", steps, "interventions", json_object_get(doc, "interventions"), "cached",
                  json_is_true(json_object_get(done, "cached")));
    if (!r) snprintf(err, n, "out of memory");
out:
    json_decref(items);
    json_decref(names);
    json_decref(base);
    json_decref(doc);
    json_decref(done);
    json_decref(fx);
    return r;
}

#define RUN_ID_SCHEMA                                                                                                  \
    "\"run_id\":{\"type\":\"string\",\"pattern\":\"^[A-Za-z0-9_.-]{1,127}$\",\"maxLength\":127,"                      \
    "\"description\":\"a stored run's id (from generate or list_runs)\"}"
#define SEL_SCHEMA                                                                                                     \
    "\"layer\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"one layer (0-based); omit: every layer\"},"     \
    "\"head\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"one head (0-based); omit: every head\"}"

static const tool tools[] = {
    {"generate", "Generate and record",
     "Generate text from a prompt with the loaded model, recording the exact attention of every layer and head. "
     "The run is stored (the same store as `heed serve`) and its run_id is what the other tools take. Returns the "
     "generated text, the stop reason (\"length\" or \"eog\") and the label of every token: positions count prompt "
     "tokens from 0 (BOS included), then output tokens; output step t was chosen by query position "
     "n_prompt - 1 + t. Greedy by default; the same request again replays the stored run (cached: true).",
     "{\"type\":\"object\",\"properties\":{"
     "\"prompt\":{\"type\":\"string\",\"minLength\":1,\"maxLength\":1000000,\"description\":\"the text to continue "
     "(with chat: the user's message)\"},"
     "\"max_tokens\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":1024,\"default\":32,\"description\":\"tokens to "
     "generate (also cut to the room left in the context)\"},"
     "\"temperature\":{\"type\":\"number\",\"minimum\":0,\"default\":0,\"description\":\"0: greedy; above 0: sampled "
     "(top_k 40, top_p 0.95, min_p 0.05)\"},"
     "\"seed\":{\"type\":\"integer\",\"minimum\":0,\"maximum\":9007199254740991,\"default\":0,\"description\":"
     "\"sampling seed\"},"
     "\"chat\":{\"type\":\"boolean\",\"default\":false,\"description\":\"send prompt as one user message through the "
     "model's chat template (instruct models)\"}},"
     "\"required\":[\"prompt\"],\"additionalProperties\":false}",
     tool_generate, false},
    {"attention_row", "Attention row",
     "What one query position of a stored run attended to: the post-softmax attention weights over keys 0..pos "
     "(they sum to 1), for one head (layer and head given), or the mean over the heads of a layer, over a head of "
     "every layer, or over all layers and heads (omitted). weights[k] is the weight of key position k, whose "
     "label is tokens[k]. Positions 0..n_prompt+n_output-2 have rows (the last output token was never a query).",
     "{\"type\":\"object\",\"properties\":{" RUN_ID_SCHEMA ","
     "\"pos\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"the query position\"}," SEL_SCHEMA "},"
     "\"required\":[\"run_id\",\"pos\"],\"additionalProperties\":false}",
     tool_attention_row, true},
    {"top_sources", "Most attended tokens",
     "The k key positions a query position of a stored run attended to most, heaviest first (ties: earlier "
     "position), each {pos, token, weight}: the mean over all layers and heads unless layer or head is given. Give "
     "pos (a query position) or step (an output index t: the query n_prompt - 1 + t that chose output token t).",
     "{\"type\":\"object\",\"properties\":{" RUN_ID_SCHEMA ","
     "\"pos\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"the query position (or give step)\"},"
     "\"step\":{\"type\":\"integer\",\"minimum\":0,\"description\":\"an output index t (or give pos)\"},"
     "\"k\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000,\"default\":5,\"description\":\"how many sources\"},"
     SEL_SCHEMA "},\"required\":[\"run_id\"],\"additionalProperties\":false}",
     tool_top_sources, true},
    {"list_runs", "List stored runs",
     "The stored runs, newest first: run_id, kind, created (Unix seconds and UTC), model, the first 80 characters "
     "of the prompt, token counts and stop reason; total counts every stored run (also those made by heed serve).",
     "{\"type\":\"object\",\"properties\":{"
     "\"limit\":{\"type\":\"integer\",\"minimum\":1,\"maximum\":1000,\"default\":20,\"description\":\"runs to list\"},"
     "\"offset\":{\"type\":\"integer\",\"minimum\":0,\"default\":0,\"description\":\"runs to skip (newest first)\"}},"
     "\"additionalProperties\":false}",
     tool_list_runs, true},
    {"open_run", "Open a stored run",
     "A stored run's metadata (model, created, sampling parameters, max_tokens, stop), its prompt (or chat "
     "messages), generated text, the label of every token (prompt, then output) and its interventions (the heads "
     "ablated or scaled when it was made; [] for none).",
     "{\"type\":\"object\",\"properties\":{" RUN_ID_SCHEMA "},"
     "\"required\":[\"run_id\"],\"additionalProperties\":false}",
     tool_open_run, true},
    {"ablate_compare", "Ablate heads and compare",
     "Regenerates a stored run's prompt with its sampling parameters and max_tokens, with attention heads ablated "
     "(mode zero: the head's output zeroed; mean: replaced by its mean over the prompt), stores that run and "
     "compares it with the original: both texts, the first divergent step, and per step while both runs share "
     "their outputs so far (up to the first divergent step) the original's chosen token, the new token, a lower "
     "bound of KL(original || ablated) of the next-token distributions and the change of the original token's "
     "probability. Give layer and head, or heads as a list of \"LAYER:HEAD\".",
     "{\"type\":\"object\",\"properties\":{" RUN_ID_SCHEMA "," SEL_SCHEMA ","
     "\"heads\":{\"type\":\"array\",\"items\":{\"type\":\"string\",\"pattern\":\"^[0-9]+:[0-9]+$\"},\"minItems\":1,"
     "\"maxItems\":4096,\"description\":\"heads to ablate together, as \\\"LAYER:HEAD\\\" (instead of layer and "
     "head)\"},"
     "\"mode\":{\"type\":\"string\",\"enum\":[\"zero\",\"mean\"],\"default\":\"zero\",\"description\":\"zero: the "
     "head's attention output is zeroed; mean: replaced by its mean over the prompt\"}},"
     "\"required\":[\"run_id\"],\"additionalProperties\":false}",
     tool_ablate_compare, false},
};
#define N_TOOLS (sizeof tools / sizeof tools[0])

/* ------------------------------------------------------------ arguments against the schema */

/* One argument's value against its property schema p: a copy (integral
 * numbers as integers), or NULL with a message naming it. */
static json_t *check_value(const char *key, json_t *p, json_t *v, char *err, size_t n) {
    const char *type = json_string_value(json_object_get(p, "type"));
    json_t *jmin = json_object_get(p, "minimum"), *jmax = json_object_get(p, "maximum");
    if (!strcmp(type, "integer") || !strcmp(type, "number")) {
        bool integer = !strcmp(type, "integer");
        double lo = jmin ? json_number_value(jmin) : integer ? (double)INT_MIN : -HUGE_VAL,
               hi = jmax ? json_number_value(jmax) : integer ? (double)INT_MAX : HUGE_VAL, x = json_number_value(v);
        if (!json_is_number(v) || (integer && x != floor(x)) || !(x >= lo && x <= hi)) {
            if (jmax || integer)
                snprintf(err, n, "%s must be %s in [%.16g, %.16g]", key, integer ? "an integer" : "a number", lo, hi);
            else snprintf(err, n, "%s must be a number >= %.16g", key, lo);
            return NULL;
        }
        return integer ? json_integer(json_is_integer(v) ? json_integer_value(v) : (json_int_t)x) : json_real(x);
    }
    if (!strcmp(type, "boolean")) {
        if (json_is_boolean(v)) return json_incref(v);
        snprintf(err, n, "%s must be true or false", key);
        return NULL;
    }
    if (!strcmp(type, "string")) {
        json_t *en = json_object_get(p, "enum");
        size_t len = json_string_length(v);
        long long lo = json_integer_value(json_object_get(p, "minLength")),
                  hi = json_integer_value(json_object_get(p, "maxLength"));
        if (!json_is_string(v)) snprintf(err, n, "%s must be a string", key);
        else if ((long long)len < lo) snprintf(err, n, "%s must not be empty", key);
        else if (hi && (long long)len > hi) snprintf(err, n, "%s is longer than %lld bytes", key, hi);
        else if (en) {
            size_t i;
            json_t *c;
            json_array_foreach(en, i, c) if (json_equal(c, v)) return json_incref(v);
            snprintf(err, n, "%s must be one of", key);
            json_array_foreach(en, i, c) {
                size_t k = strlen(err);
                snprintf(err + k, n - k, "%s \"%s\"", i ? "," : "", json_string_value(c));
            }
        } else return json_incref(v);
        return NULL;
    }
    /* arrays of strings */
    json_int_t lo = json_integer_value(json_object_get(p, "minItems")),
               hi = json_integer_value(json_object_get(p, "maxItems"));
    size_t i;
    json_t *e;
    if (!json_is_array(v) || (json_int_t)json_array_size(v) < lo || (json_int_t)json_array_size(v) > hi) {
        snprintf(err, n, "%s must be an array of %lld to %lld strings", key, (long long)lo, (long long)hi);
        return NULL;
    }
    json_array_foreach(v, i, e) if (!json_is_string(e)) {
        snprintf(err, n, "%s[%zu] must be a string", key, i);
        return NULL;
    }
    return json_incref(v);
}

/* args (an object, or NULL: none) against a tool's schema: a copy with
 * the defaults filled in, or NULL with a message naming the argument. A null
 * value of an optional argument counts as absent. */
static json_t *check_args(const tool *t, json_t *schema, json_t *args, char *err, size_t n) {
    json_t *props = json_object_get(schema, "properties"), *out = json_object(), *v, *p;
    const char *key;
    json_object_foreach(args, key, v) {
        if (!(p = json_object_get(props, key))) {
            snprintf(err, n, "unknown argument '%.64s'; %s takes:", key, t->name);
            const char *k2;
            json_t *p2;
            json_object_foreach(props, k2, p2) {
                size_t k = strlen(err);
                snprintf(err + k, n - k, " %s", k2);
            }
            goto fail;
        }
        if (json_is_null(v)) continue;
        json_t *c = check_value(key, p, v, err, n);
        if (!c) goto fail;
        json_object_set_new(out, key, c);
    }
    size_t i;
    json_array_foreach(json_object_get(schema, "required"), i, v) {
        if (!json_object_get(out, json_string_value(v))) {
            snprintf(err, n, "missing required argument '%s'", json_string_value(v));
            goto fail;
        }
    }
    json_object_foreach(props, key, p) {
        json_t *d = json_object_get(p, "default");
        if (d && !json_object_get(out, key)) json_object_set(out, key, d);
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

/* ------------------------------------------------------------ JSON-RPC */

static json_t *rpc_result(json_t *id, json_t *result) {
    return json_pack("{s:s, s:O?, s:o}", "jsonrpc", "2.0", "id", id ? id : json_null(), "result", result);
}

__attribute__((format(printf, 3, 4))) static json_t *rpc_error(json_t *id, int code, const char *fmt, ...) {
    char msg[ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return json_pack("{s:s, s:O?, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id ? id : json_null(), "error", "code", code,
                     "message", msg);
}

/* A tool's result: the object as JSON text and as structured content. */
static json_t *tool_result(json_t *obj) {
    char *s = json_dumps(obj, JSON_COMPACT | JSON_REAL_PRECISION(REAL_DIGITS));
    json_t *r = s ? json_pack("{s:[{s:s, s:s}], s:o, s:b}", "content", "type", "text", "text", s, "structuredContent",
                              obj, "isError", 0)
                  : NULL;
    if (!s) json_decref(obj);
    free(s);
    return r;
}

static json_t *tool_error(const char *name, const char *msg) {
    char text[ERR_MAX + 64];
    snprintf(text, sizeof text, "%s: %s", name, msg);
    return json_pack("{s:[{s:s, s:s}], s:b}", "content", "type", "text", "text", text, "isError", 1);
}

static json_t *on_initialize(json_t *id, json_t *params) {
    const char *want = json_string_value(json_object_get(params, "protocolVersion"));
    if (!want)
        return rpc_error(id, RPC_INVALID_PARAMS, "params.protocolVersion must be a string (e.g. \"%s\")",
                         versions[0]);
    const char *v = versions[0];
    for (size_t i = 0; i < sizeof versions / sizeof versions[0]; i++)
        if (!strcmp(want, versions[i])) v = versions[i];
    return rpc_result(
        id, json_pack("{s:s, s:{s:{}}, s:{s:s, s:s, s:s}, s:s}", "protocolVersion", v, "capabilities", "tools",
                      "serverInfo", "name", "heed", "title", "heed attention visualizer", "version", HEED_VERSION,
                      "instructions",
                      "heed records a language model's exact attention. generate makes a run and returns its run_id; "
                      "attention_row and top_sources read what a query position attended to; ablate_compare "
                      "regenerates a run with heads ablated and compares; list_runs and open_run read stored runs. "
                      "Positions count prompt tokens from 0 (BOS included), then output tokens; output step t was "
                      "chosen by query position n_prompt - 1 + t."));
}

static json_t *on_tools_list(json_t *id) {
    json_t *list = json_array();
    for (size_t i = 0; i < N_TOOLS; i++) {
        const tool *t = &tools[i];
        json_t *schema = json_loads(t->schema, 0, NULL);
        if (!schema) {
            json_decref(list);
            return rpc_error(id, RPC_INTERNAL, "tool %s: its schema does not parse", t->name);
        }
        json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:o, s:{s:s, s:b, s:b, s:b}}", "name", t->name,
                                              "title", t->title, "description", t->description, "inputSchema", schema,
                                              "annotations", "title", t->title, "readOnlyHint", t->read_only,
                                              "destructiveHint", 0, "openWorldHint", 0));
    }
    return rpc_result(id, json_pack("{s:o}", "tools", list));
}

static json_t *on_tools_call(mcp_state *m, json_t *id, json_t *params) {
    json_t *jname = json_object_get(params, "name"), *args = json_object_get(params, "arguments");
    const char *name = json_string_value(jname);
    if (!name) return rpc_error(id, RPC_INVALID_PARAMS, "params.name must be a string: the tool's name");
    if (args && !json_is_object(args) && !json_is_null(args))
        return rpc_error(id, RPC_INVALID_PARAMS, "params.arguments must be an object");
    const tool *t = NULL;
    for (size_t i = 0; i < N_TOOLS && !t; i++)
        if (!strcmp(tools[i].name, name)) t = &tools[i];
    if (!t) {
        char names[256] = "";
        for (size_t i = 0; i < N_TOOLS; i++) {
            size_t k = strlen(names);
            snprintf(names + k, sizeof names - k, "%s%s", i ? ", " : "", tools[i].name);
        }
        return rpc_error(id, RPC_INVALID_PARAMS, "unknown tool '%.64s' (tools: %s)", name, names);
    }
    char err[ERR_MAX] = "";
    json_t *schema = json_loads(t->schema, 0, NULL);
    if (!schema) return rpc_error(id, RPC_INTERNAL, "tool %s: its schema does not parse", t->name);
    json_t *a = check_args(t, schema, json_is_object(args) ? args : NULL, err, sizeof err);
    json_decref(schema);
    json_t *r = a ? t->fn(m, a, err, sizeof err) : NULL;
    json_decref(a);
    if (!r && !err[0]) snprintf(err, sizeof err, "failed (out of memory?)");
    if (err[0]) fprintf(stderr, "heed: mcp: %s: %s\n", t->name, err);
    return rpc_result(id, r ? tool_result(r) : tool_error(t->name, err));
}

/* One line from the client: the reply to send, or NULL (a notification, or
 * a response to nothing this server asked). */
static json_t *on_line(mcp_state *m, const char *line, size_t len) {
    json_error_t je;
    json_t *msg = json_loadb(line, len, JSON_DECODE_ANY, &je), *reply = NULL;
    if (!msg) return rpc_error(NULL, RPC_PARSE, "parse error: %s (column %d)", je.text, je.column);
    if (json_is_array(msg)) {
        reply = rpc_error(NULL, RPC_INVALID_REQUEST, "batches are not supported (MCP dropped JSON-RPC batching in "
                                                     "2025-06-18): send one message per line");
        goto done;
    }
    if (!json_is_object(msg)) {
        reply = rpc_error(NULL, RPC_INVALID_REQUEST, "a message must be a JSON object");
        goto done;
    }
    json_t *id = json_object_get(msg, "id"), *jm = json_object_get(msg, "method"),
           *params = json_object_get(msg, "params");
    if (id && !json_is_string(id) && !json_is_number(id)) {
        reply = rpc_error(NULL, RPC_INVALID_REQUEST, "id must be a string or a number");
        goto done;
    }
    const char *jr = json_string_value(json_object_get(msg, "jsonrpc")), *method = json_string_value(jm);
    if (!jr || strcmp(jr, "2.0")) {
        reply = rpc_error(id, RPC_INVALID_REQUEST, "jsonrpc must be \"2.0\"");
        goto done;
    }
    if (!jm && id && (json_object_get(msg, "result") || json_object_get(msg, "error"))) goto done; /* asked nothing */
    if (!method) {
        reply = rpc_error(id, RPC_INVALID_REQUEST, "method must be a string");
        goto done;
    }
    if (!id) goto done; /* a notification (initialized, cancelled, ...): never answered */
    if (params && !json_is_object(params)) {
        reply = rpc_error(id, RPC_INVALID_PARAMS, "params must be an object");
        goto done;
    }
    if (!strcmp(method, "initialize")) reply = on_initialize(id, params);
    else if (!strcmp(method, "ping")) reply = rpc_result(id, json_object());
    else if (!strcmp(method, "tools/list")) reply = on_tools_list(id);
    else if (!strcmp(method, "tools/call")) reply = on_tools_call(m, id, params);
    else reply = rpc_error(id, RPC_METHOD_NOT_FOUND, "method '%.64s' not found (this server has initialize, ping, "
                                                     "tools/list, tools/call)", method);
done:
    json_decref(msg);
    return reply;
}

/* Writes one message as one line; false when stdout is gone. */
static bool send_msg(mcp_state *m, json_t *msg) {
    char *s = msg ? json_dumps(msg, JSON_COMPACT | JSON_REAL_PRECISION(REAL_DIGITS)) : NULL;
    json_decref(msg);
    if (!s) {
        fprintf(stderr, "heed: mcp: a reply could not be written (out of memory)\n");
        return true;
    }
    bool ok = fputs(s, m->out) >= 0 && fputc('\n', m->out) != EOF && fflush(m->out) == 0;
    free(s);
    return ok;
}

/* ------------------------------------------------------------ stdin lines */

typedef struct line_reader {
    int fd;
    char *line; /* the line being collected (NUL-terminated when handed out) */
    size_t len, cap;
    bool too_long; /* past MAX_LINE: the rest is skipped up to its newline */
    bool eof;
    char chunk[65536];
    size_t pos, n;
} line_reader;

/* The next line, without its newline (and a CR before it): 1 with *line
 * and *len, 2 for a line longer than MAX_LINE (skipped), 0 at the end of
 * the input, -1 on a read error. A last line without a newline counts. */
static int read_line(line_reader *r, const char **line, size_t *len) {
    r->len = 0;
    r->too_long = false;
    if (r->cap > (1u << 20)) { /* a huge line's buffer is not kept */
        free(r->line);
        r->line = NULL;
        r->cap = 0;
    }
    for (;;) {
        if (r->pos == r->n) {
            if (r->eof) {
                if (!r->len && !r->too_long) return 0;
                break;
            }
            ssize_t k = read(r->fd, r->chunk, sizeof r->chunk);
            if (k < 0 && errno == EINTR) continue;
            if (k < 0) return -1;
            if (k == 0) r->eof = true;
            r->pos = 0;
            r->n = (size_t)(k > 0 ? k : 0);
            continue;
        }
        char *start = r->chunk + r->pos, *nl = memchr(start, '\n', r->n - r->pos);
        size_t take = nl ? (size_t)(nl - start) : r->n - r->pos;
        r->pos += take + (nl ? 1 : 0);
        if (!r->too_long && r->len + take > MAX_LINE) r->too_long = true;
        if (!r->too_long) {
            if (r->len + take + 1 > r->cap) {
                size_t nc = r->cap ? r->cap : 4096;
                while (nc < r->len + take + 1) nc *= 2;
                char *p = realloc(r->line, nc);
                if (!p) return -1;
                r->line = p;
                r->cap = nc;
            }
            memcpy(r->line + r->len, start, take);
            r->len += take;
        }
        if (nl) break;
    }
    if (r->too_long) return 2;
    if (r->len && r->line[r->len - 1] == '\r') r->len--;
    if (!r->line && !(r->line = malloc(r->cap = 1))) return -1;
    r->line[r->len] = 0;
    *line = r->line;
    *len = r->len;
    return 1;
}

/* ------------------------------------------------------------ flags, data folder, main */

static const char *usage_text =
    "usage: heed mcp [options]   (a Model Context Protocol server on stdin/stdout: docs/MCP.md)\n"
    "  -m, --model PATH      GGUF file or Hugging Face folder (default: the bundled model)\n"
    "  --data-dir DIR        folder of the run store, shared with heed serve (created; default\n"
    "                        $XDG_DATA_HOME/heed or ~/.local/share/heed; also --data)\n"
    "  --threads N           inference threads (default: all cores)\n"
    "  --ctx N               context size in tokens (default: the model's limit, bounded by memory)\n";

/* Returns 0, 1 after --help, or 2 (bad flags) after a message. */
static int parse_flags(int argc, char **argv, api_config *cfg) {
    for (int i = 0; i < argc; i++) {
        const char *a, *v;
        int r = server_flag(argc, argv, &i, "mcp", usage_text, &a, &v);
        if (r) return r;
        long n = 0;
        bool ok = true;
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) cfg->model_path = v;
        else if (!strcmp(a, "--data") || !strcmp(a, "--data-dir")) cfg->data_dir = v;
        else if (!strcmp(a, "--threads") && (ok = server_parse_count(v, 1, 1024, &n))) cfg->n_threads = (int)n;
        else if (!strcmp(a, "--ctx") && (ok = server_parse_count(v, 1, 1 << 24, &n))) cfg->n_ctx = (int)n;
        else if (ok) {
            fprintf(stderr, "heed: mcp: unknown option '%s'\n%s", a, usage_text);
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "heed: mcp: %s: '%s' is not a valid value\n", a, v);
            return 2;
        }
    }
    return 0;
}

/* The served model's name and geometry (GET /api/model). */
static bool read_model(mcp_state *m) {
    json_t *j;
    int st = call(m, "GET", "/api/model", NULL, NULL, &j);
    const char *id = json_string_value(json_object_get(j, "id"));
    if (st == 200 && id) {
        snprintf(m->model_id, sizeof m->model_id, "%s", id);
        m->n_layer = (int)json_integer_value(json_object_get(j, "n_layer"));
        m->n_head = (int)json_integer_value(json_object_get(j, "n_head"));
    }
    json_decref(j);
    return st == 200 && id;
}

int mcp_main(int argc, char **argv) {
    api_config cfg = {.max_tokens = MAX_GEN_TOKENS, .attn_top_k = 32, .cache_runs = 10,
                      .cache_bytes = (size_t)64 << 20, .stream_buffer = (size_t)1 << 20, .stream_stall_s = 30};
    int rc = parse_flags(argc, argv, &cfg);
    if (rc) return rc == 1 ? 0 : rc;
    char model[PATH_MAX], perr[512];
    int pr = pull_resolve(cfg.model_path, model, sizeof model, perr, sizeof perr); /* -m ORG/REPO[:FILE] */
    if (pr < 0) {
        fprintf(stderr, "heed: mcp: %s\n", perr);
        return 1;
    }
    if (pr > 0) cfg.model_path = model;
    char dir[PATH_MAX];
    if (server_data_dir(cfg.data_dir, "mcp", dir, sizeof dir)) return 1;
    cfg.data_dir = dir;

    /* stdout carries the protocol alone: the messages go to a copy of it,
     * and fd 1 points at stderr, so a line anything else prints is a log */
    fflush(stdout);
    int out_fd = dup(STDOUT_FILENO);
    mcp_state m = {.out = out_fd >= 0 ? fdopen(out_fd, "w") : NULL};
    if (!m.out || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
        fprintf(stderr, "heed: mcp: cannot take over stdout: %s\n", strerror(errno));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN); /* a client gone: the write fails and the loop ends */

    char err[512] = "";
    if (api_new(&cfg, &m.api, err, sizeof err)) {
        fprintf(stderr, "heed: mcp: %s\n", err[0] ? err : "cannot load the model");
        fclose(m.out);
        return 1;
    }
    rc = 1;
    if (!(m.srv = server_new_offline(m.api, NULL)) || !read_model(&m)) {
        fprintf(stderr, "heed: mcp: cannot start the server's handlers\n");
        goto out;
    }
    fprintf(stderr, "heed: mcp: %s (%d layers x %d heads), runs in %s; reading JSON-RPC on stdin\n", m.model_id,
            m.n_layer, m.n_head, dir);

    line_reader *lr = calloc(1, sizeof *lr);
    if (!lr) goto out;
    lr->fd = STDIN_FILENO;
    for (;;) {
        const char *line = NULL;
        size_t len = 0;
        int got = read_line(lr, &line, &len);
        if (got == 0) {
            rc = 0; /* the client closed stdin: done */
            break;
        }
        if (got < 0) {
            fprintf(stderr, "heed: mcp: reading stdin: %s\n", strerror(errno));
            break;
        }
        json_t *reply;
        if (got == 2) {
            fprintf(stderr, "heed: mcp: skipped a message longer than %u bytes\n", MAX_LINE);
            reply = rpc_error(NULL, RPC_INVALID_REQUEST, "message longer than %u bytes: skipped", MAX_LINE);
        } else {
            if (strspn(line, " \t\r") == len) continue; /* blank lines between messages */
            reply = on_line(&m, line, len);
        }
        if (reply && !send_msg(&m, reply)) {
            fprintf(stderr, "heed: mcp: stdout is closed\n");
            break;
        }
    }
    free(lr->line);
    free(lr);
out:
    api_stop(m.api);
    server_free_offline(m.srv);
    api_free(m.api);
    fclose(m.out);
    return rc;
}
