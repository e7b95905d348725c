/*
 * serverutil.h - helpers of the black-box tests of `heed serve`: start the
 * real binary built beside the test on a free port, speak HTTP to it with
 * libcurl, split SSE bodies. Every wait is bounded.
 */
#ifndef HEED_SERVERUTIL_H
#define HEED_SERVERUTIL_H

#include <curl/curl.h>
#include <jansson.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

#include "testutil.h"

#define START_TIMEOUT_MS 20000 /* model load under ASan included */
#define STOP_TIMEOUT_MS 10000
#define REQ_TIMEOUT_S 30L

static char heed_bin[PATH_MAX + 16];

typedef struct srv {
    pid_t pid;
    int port;
} srv;


static inline double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Starts `heed serve --port 0 ARGS...` and reads the port from its banner. */
static inline void srv_start(srv *s, const char *const *args) {
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    const char *argv[32] = {heed_bin, "serve", "--port", "0", "--threads", "1"};
    int n = 6;
    for (int i = 0; args && args[i] && n < 30; i++) argv[n++] = args[i];
    argv[n] = NULL;
    s->pid = fork();
    assert_true(s->pid >= 0);
    if (s->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a test that fails midway leaves no server behind */
        dup2(fd[1], 1);
        close(fd[0]);
        close(fd[1]);
        execv(heed_bin, (char *const *)argv);
        _exit(127);
    }
    close(fd[1]);
    char line[256];
    size_t len = 0;
    double t0 = now_ms();
    s->port = 0;
    while (!s->port && now_ms() - t0 < START_TIMEOUT_MS && len < sizeof line - 1) {
        struct pollfd p = {.fd = fd[0], .events = POLLIN};
        if (poll(&p, 1, 100) <= 0) continue;
        ssize_t r = read(fd[0], line + len, sizeof line - 1 - len);
        if (r <= 0) break;
        len += (size_t)r;
        line[len] = 0;
        const char *at = strstr(line, "heed: listening on http://127.0.0.1:");
        if (at && strchr(at, '\n')) s->port = atoi(at + strlen("heed: listening on http://127.0.0.1:"));
    }
    close(fd[0]);
    if (!s->port) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
        fail_msg("heed serve did not print its address: '%.*s'", (int)len, line);
    }
}

/* SIGTERM, then waits (bounded) for a clean exit. */
static inline void srv_stop(srv *s) {
    kill(s->pid, SIGTERM);
    int st = 0;
    double t0 = now_ms();
    pid_t r;
    while ((r = waitpid(s->pid, &st, WNOHANG)) == 0 && now_ms() - t0 < STOP_TIMEOUT_MS) usleep(10000);
    if (r == 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, &st, 0);
        fail_msg("heed serve did not stop within %d ms of SIGTERM", STOP_TIMEOUT_MS);
    }
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

/* ------------------------------------------------------------ HTTP */

typedef struct resp {
    long status;
    char *body;
    size_t len;
    char allow[128];
    int abort_after; /* events (blank-line ends) after which the client hangs up; 0: never */
} resp;

static inline size_t on_body(char *d, size_t sz, size_t nm, void *u) {
    resp *r = u;
    size_t n = sz * nm;
    char *b = realloc(r->body, r->len + n + 1);
    if (!b) return 0;
    r->body = b;
    memcpy(r->body + r->len, d, n);
    r->len += n;
    r->body[r->len] = 0;
    if (r->abort_after) {
        int ev = 0;
        for (const char *p = r->body; (p = strstr(p, "\n\n")); p += 2) ev++;
        if (ev >= r->abort_after) return 0;
    }
    return n;
}

static inline size_t on_header(char *d, size_t sz, size_t nm, void *u) {
    resp *r = u;
    size_t n = sz * nm;
    if (n > 6 && !strncasecmp(d, "Allow:", 6)) {
        snprintf(r->allow, sizeof r->allow, "%.*s", (int)(n - 6), d + 6);
        r->allow[strcspn(r->allow, "\r\n")] = 0;
    }
    return n;
}

/* One request; returns the curl code (CURLE_WRITE_ERROR after an abort). */
static inline CURLcode http_ex(const srv *s, const char *method, const char *path, const char *body, size_t body_len,
                        const char *header, resp *r) {
    CURL *c = curl_easy_init();
    assert_non_null(c);
    char url[1024];
    if (snprintf(url, sizeof url, "http://127.0.0.1:%d%s", s->port, path) >= (int)sizeof url)
        fail_msg("path too long for the test: %.64s...", path);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    if (header) h = curl_slist_append(h, header);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, REQ_TIMEOUT_S);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, 1L); /* send "/../" as is: the server must refuse it */
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    CURLcode rc = curl_easy_perform(c);
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return rc;
}

/* A request that must complete; returns the status and the body as JSON
 * (NULL when it is not JSON). */
static inline long http(const srv *s, const char *method, const char *path, const char *body, const char *header,
                 json_t **json) {
    resp r = {0};
    CURLcode rc = http_ex(s, method, path, body, body ? strlen(body) : 0, header, &r);
    if (rc != CURLE_OK) fail_msg("%s %s: %s", method, path, curl_easy_strerror(rc));
    if (json) *json = r.body ? json_loads(r.body, 0, NULL) : NULL;
    free(r.body);
    return r.status;
}

/* Expects an error reply with status and, when given, the param named. */
static inline void expect_error(const srv *s, const char *method, const char *path, const char *body, long status,
                         const char *param) {
    json_t *j = NULL;
    long st = http(s, method, path, body, NULL, &j);
    if (st != status) fail_msg("%s %s %s: status %ld, want %ld", method, path, body ? body : "", st, status);
    json_t *e = json_object_get(j, "error");
    assert_non_null(json_string_value(json_object_get(e, "message")));
    assert_non_null(json_string_value(json_object_get(e, "type")));
    assert_non_null(json_object_get(e, "code"));
    if (param) assert_string_equal(json_string_value(json_object_get(e, "param")), param);
    json_decref(j);
}

/* ------------------------------------------------------------ SSE */

typedef struct sse_ev {
    char name[32];
    json_t *data; /* NULL for [DONE] or non-JSON */
    bool done_marker;
} sse_ev;

/* Splits an SSE body into events (comments skipped). Returns the count. */
static inline int sse_parse(const char *body, sse_ev *ev, int n_max) {
    int n = 0;
    const char *p = body;
    while (p && *p && n < n_max) {
        const char *end = strstr(p, "\n\n");
        if (!end) break;
        sse_ev e = {.name = "message"};
        bool any = false;
        for (const char *l = p; l < end;) {
            const char *nl = memchr(l, '\n', (size_t)(end - l));
            size_t ll = nl ? (size_t)(nl - l) : (size_t)(end - l);
            if (ll > 7 && !strncmp(l, "event: ", 7)) snprintf(e.name, sizeof e.name, "%.*s", (int)ll - 7, l + 7);
            else if (ll > 6 && !strncmp(l, "data: ", 6)) {
                any = true;
                if (ll == 12 && !strncmp(l + 6, "[DONE]", 6)) e.done_marker = true;
                else e.data = json_loadb(l + 6, ll - 6, 0, NULL);
            }
            l += ll + 1;
        }
        if (any) ev[n++] = e;
        p = end + 2;
    }
    return n;
}

static inline void sse_free(sse_ev *ev, int n) {
    for (int i = 0; i < n; i++) json_decref(ev[i].data);
}

/* Sets heed_bin to the heed binary of the build this test belongs to
 * (.../build/tests/test_x -> .../build/heed). Returns 0 or -1. */
static inline int su_find_heed(void) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return -1;
    self[n] = 0;
    char *slash = strrchr(self, '/');
    if (!slash) return -1;
    *slash = 0;
    slash = strrchr(self, '/');
    if (!slash) return -1;
    *slash = 0;
    snprintf(heed_bin, sizeof heed_bin, "%s/heed", self);
    return 0;
}

/* A server suite's start: the binary found, test-output made, SIGPIPE
 * ignored (a server closing a connection must not kill the test). 0 or 1. */
static inline int su_init(void) {
    if (su_find_heed() || system("mkdir -p test-output")) return 1;
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

/* A suite's one server, as its group setup and teardown start and stop
 * it: `heed serve --data-dir DIR EXTRA...` on a fresh DIR (libcurl set up
 * for the suite's requests). */
static inline int su_group_start(srv *s, const char *dir, const char *const *extra) {
    curl_global_init(CURL_GLOBAL_ALL);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd)) return -1;
    const char *args[24] = {"--data-dir", dir};
    int n = 2;
    for (int i = 0; extra && extra[i] && n < 23; i++) args[n++] = extra[i];
    args[n] = NULL;
    srv_start(s, args);
    return 0;
}

static inline int su_group_stop(srv *s) {
    srv_stop(s);
    curl_global_cleanup();
    return 0;
}

#endif
