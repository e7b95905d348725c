/*
 * fuzz_api - libFuzzer target for the HTTP API's request handling without
 * sockets (server_dispatch: the routing, auth, argument checks and
 * handlers of `heed serve`): any request must get a reply with a status and,
 * for JSON, a body that parses (an error body holding "error"), or a stream
 * that ends; nothing may read out of bounds (the body is not
 * NUL-terminated), crash, hang or leak.
 *
 * Input (text, so seeds read as requests):
 *
 *   METHOD SP TARGET [SP AUTHORIZATION] LF BODY
 *
 * TARGET is a path with an optional ?query (name=value pairs split at '&',
 * percent-decoded, '+' as space; at most API_MAX_ARGS + 1 pairs, so the
 * limit's refusal is reached). With AUTHORIZATION (the rest of the line)
 * the request goes to a server that wants the API key "fuzz-key", else to
 * one without a key. "$RUN" in TARGET and BODY becomes the id of a run
 * generated at start-up, so views and branches of a real run are reached
 * (in a DELETE, that of a run generated for it, so the first one stays).
 *
 * The api runs the bundled model (1 thread, max_tokens 4, max_prompt 64)
 * with its run store in this process's temporary folder (fuzz.h). Streams
 * are read to their end (at most 4 MiB, else freed early, which cancels).
 *
 *   make fuzz && build-fuzz/fuzz/fuzz_api DIR tests/fuzz/corpus_api
 *
 * HEED_FUZZ_VERBOSE=1 build/tests/test_fuzz_api prints each seed's status
 * and the start of its reply (what a seed reaches).
 */
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "fuzz.h"
#include "server.h"

#define STREAM_MAX (4u << 20)

/* libFuzzer's entry points take no context: the api and its two servers
 * live here, made once. */
static api *g_api;
static server *g_open, *g_keyed;
static char g_run[128]; /* the start-up run's id, for "$RUN" */
static bool g_verbose;  /* $HEED_FUZZ_VERBOSE: print each reply's start */

/* Reads a stream to its end (bounded) and frees it; the text read goes
 * into out (if not NULL), truncated to size. */
static void drain(api_stream *st, char *out, size_t size) {
    char buf[4096];
    size_t total = 0, kept = 0;
    ssize_t k;
    while (total < STREAM_MAX && (k = api_stream_read(st, buf, sizeof buf)) != -1) {
        if (k == -2) break; /* dropped: the server would close the connection */
        if (k <= 0 || (size_t)k > sizeof buf) __builtin_trap();
        if (out && kept + 1 < size) {
            size_t c = (size_t)k < size - 1 - kept ? (size_t)k : size - 1 - kept;
            memcpy(out + kept, buf, c);
            kept += c;
        }
        total += (size_t)k;
    }
    if (out && size) out[kept] = '\0';
    api_stream_free(st);
}

/* Generates a run of three tokens and writes its id (from the "done"
 * event) into id[128]. Exits if that fails: the harness is broken then,
 * not the input. */
static void make_run(char *id) {
    static const char body[] = "{\"prompt\":\"Once upon a time\",\"max_tokens\":3,\"seed\":1,\"cache\":false}";
    api_reply rp;
    server_dispatch(g_open, "POST", "/api/runs", NULL, NULL, body, sizeof body - 1, &rp);
    char events[16384];
    if (rp.status != 200 || !rp.stream) {
        fprintf(stderr, "fuzz_api: POST /api/runs: status %d\n", rp.status);
        exit(1);
    }
    drain(rp.stream, events, sizeof events);
    const char *p = strstr(events, "\"run_id\":\"");
    if (!p || sscanf(p + 10, "%127[^\"]", id) != 1) {
        fprintf(stderr, "fuzz_api: no run id in the events of a generation\n");
        exit(1);
    }
}

static void cleanup(void) {
    server_free_offline(g_open);
    server_free_offline(g_keyed);
    if (g_api) {
        api_stop(g_api);
        api_free(g_api);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    api_config cfg = {
        .model_path = NULL,
        .max_tokens = 4,
        .max_prompt = 64,
        .n_threads = 1,
        .attn_top_k = 4,
        .data_dir = fuzz_tmpdir(),
        .cache_runs = 4,
        .cache_bytes = 1u << 20,
        .stream_buffer = 1u << 20,
        .stream_stall_s = 30,
    };
    char err[512];
    if (api_new(&cfg, &g_api, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_api: api_new: %s\n", err);
        exit(1);
    }
    atexit(cleanup); /* before the folder's removal, which fuzz_tmpdir registered first */
    g_open = server_new_offline(g_api, NULL);
    g_keyed = server_new_offline(g_api, "fuzz-key");
    if (!g_open || !g_keyed) abort();
    make_run(g_run);
    g_verbose = getenv("HEED_FUZZ_VERBOSE") != NULL;
    return 0;
}

static int hex(int c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* Percent-decodes [s, s + n) into a new string ('+' is a space). */
static char *url_decode(const char *s, size_t n) {
    char *out = fuzz_strndup(s, n), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            *o++ = ' ';
        } else if (s[i] == '%' && i + 2 < n && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
            *o++ = (char)(hex(s[i + 1]) * 16 + hex(s[i + 2]));
            i += 2;
        } else {
            *o++ = s[i];
        }
    }
    *o = '\0';
    return out;
}

static bool has_run(const char *s, size_t n) {
    for (size_t i = 0; i + 4 <= n; i++)
        if (memcmp(s + i, "$RUN", 4) == 0) return true;
    return false;
}

/* A copy of [s, s + n) with each "$RUN" replaced by run; the result
 * is malloc'd with exactly *out_len bytes (no NUL), so ASan sees a read
 * past the end. */
static char *substitute(const char *s, size_t n, const char *run, size_t *out_len) {
    size_t run_len = strlen(run), len = 0;
    for (size_t i = 0; i < n; i++) {
        if (i + 4 <= n && memcmp(s + i, "$RUN", 4) == 0) {
            len += run_len;
            i += 3;
        } else {
            len++;
        }
    }
    char *out = malloc(len ? len : 1), *o = out;
    if (!out) abort();
    for (size_t i = 0; i < n; i++) {
        if (i + 4 <= n && memcmp(s + i, "$RUN", 4) == 0) {
            memcpy(o, run, run_len);
            o += run_len;
            i += 3;
        } else {
            *o++ = s[i];
        }
    }
    *out_len = len;
    return out;
}

static void check_reply(const api_reply *rp) {
    if (rp->status < 100 || rp->status > 599) __builtin_trap();
    if (rp->stream && rp->body) __builtin_trap();
    if (!rp->body) return;
    if (!rp->content_type) __builtin_trap();
    if (strncmp(rp->content_type, "application/json", 16) == 0) {
        json_error_t je;
        json_t *j = json_loadb(rp->body, rp->body_len, JSON_ALLOW_NUL, &je);
        if (!j) __builtin_trap(); /* every JSON reply parses */
        if (rp->status >= 400 && !json_is_object(json_object_get(j, "error"))) __builtin_trap();
        json_decref(j);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *in = (const char *)data;
    const char *lf = memchr(in, '\n', size);
    size_t n_line = lf ? (size_t)(lf - in) : size;
    const char *sp1 = memchr(in, ' ', n_line);
    if (!sp1) return 0;
    char *method = fuzz_strndup(in, (size_t)(sp1 - in));
    const char *target = sp1 + 1, *line_end = in + n_line;
    const char *sp2 = memchr(target, ' ', (size_t)(line_end - target));
    const char *target_end = sp2 ? sp2 : line_end;
    char *auth = sp2 ? fuzz_strndup(sp2 + 1, (size_t)(line_end - sp2 - 1)) : NULL;

    /* DELETE of "$RUN" deletes a run made for it: the start-up run stays for the views */
    char fresh[128];
    const char *run = g_run;
    if (strcmp(method, "DELETE") == 0 && has_run(target, (size_t)(target_end - target))) {
        make_run(fresh);
        run = fresh;
    }
    size_t n_target;
    char *t = substitute(target, (size_t)(target_end - target), run, &n_target);
    const char *q = memchr(t, '?', n_target);
    char *path = fuzz_strndup(t, q ? (size_t)(q - t) : n_target);
    char *args[2 * (API_MAX_ARGS + 1) + 1];
    int n_args = 0;
    if (q) {
        const char *p = q + 1, *end = t + n_target;
        while (p <= end && n_args < API_MAX_ARGS + 1) {
            const char *amp = memchr(p, '&', (size_t)(end - p));
            const char *e = amp ? amp : end;
            const char *eq = memchr(p, '=', (size_t)(e - p));
            args[2 * n_args] = url_decode(p, (size_t)((eq ? eq : e) - p));
            args[2 * n_args + 1] = eq ? url_decode(eq + 1, (size_t)(e - eq - 1)) : NULL;
            n_args++;
            if (!amp) break;
            p = amp + 1;
        }
    }
    args[2 * n_args] = NULL;

    size_t body_len = 0;
    char *body = lf ? substitute(lf + 1, size - n_line - 1, run, &body_len) : NULL;
    api_reply rp;
    server_dispatch(auth ? g_keyed : g_open, method, path, auth, n_args || q ? (const char *const *)args : NULL,
                    body, body_len, &rp);
    check_reply(&rp);
    char events[512] = "";
    if (rp.stream) drain(rp.stream, events, sizeof events);
    if (g_verbose) { /* for writing seeds: what each one reaches */
        bool json = rp.body && !strncmp(rp.content_type, "application/json", 16);
        fprintf(stderr, "%s %s -> %d %.200s\n", method, path, rp.status, json ? rp.body : events);
    }
    free(rp.body);

    free(body);
    for (int i = 0; i < n_args; i++) {
        free(args[2 * i]);
        free(args[2 * i + 1]);
    }
    free(path);
    free(t);
    free(auth);
    free(method);
    return 0;
}
