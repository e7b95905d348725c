/*
 * test_monitor - GET /api/monitor and the counters /metrics gains with it,
 * black-box against the real `heed serve`: a subscriber gets one event per
 * generated token, each with a valid fingerprint and zone that match the
 * stored run's /stats for the same query position; a subscriber that never
 * reads is dropped and never stalls generation; /metrics parses line by line
 * and its counters move.
 */
#include "serverutil.h"

#include <arpa/inet.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <sys/socket.h>

static srv main_srv;

/* ------------------------------------------------------------ raw sockets */

/* A connection to the server; rcvbuf > 0 shrinks its receive window. */
static int raw_connect(int port, int rcvbuf) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&to, sizeof to), 0);
    return fd;
}

/* Subscribes on a fresh connection. HTTP/1.0, so the body is not chunked:
 * the bytes after the headers are the SSE stream itself. */
static int subscribe(int port, int rcvbuf) {
    int fd = raw_connect(port, rcvbuf);
    const char *req = "GET /api/monitor HTTP/1.0\r\nHost: x\r\n\r\n";
    assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    return fd;
}

/* Reads from fd into *buf until it holds `want` data events after the
 * headers, the peer closes, or ms pass. Returns the data events seen. */
static int read_events(int fd, char **buf, size_t *len, int want, double ms) {
    double t0 = now_ms();
    int n = 0;
    for (;;) {
        const char *body = *buf ? strstr(*buf, "\r\n\r\n") : NULL;
        n = 0;
        for (const char *p = body; p && (p = strstr(p, "\ndata: ")); p++) n++;
        if (n >= want || now_ms() - t0 > ms) break;
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (poll(&pf, 1, 100) <= 0) continue;
        char tmp[8192];
        ssize_t r = recv(fd, tmp, sizeof tmp, 0);
        if (r <= 0) break;
        char *b = realloc(*buf, *len + (size_t)r + 1);
        assert_non_null(b);
        memcpy(b + *len, tmp, (size_t)r);
        *len += (size_t)r;
        b[*len] = 0;
        *buf = b;
    }
    return n;
}

/* ------------------------------------------------------------ /metrics */

/* The value of the sample `name` (no labels) in a Prometheus text body;
 * every line must be a comment or `name{labels} value`. NAN when absent. */
static double metric(const char *text, const char *name) {
    double v = NAN;
    const char *p = text;
    while (*p) {
        const char *nl = strchr(p, '\n');
        size_t ll = nl ? (size_t)(nl - p) : strlen(p);
        char line[1024];
        snprintf(line, sizeof line, "%.*s", (int)ll, p);
        if (line[0] && line[0] != '#') {
            char *sp = strrchr(line, ' ');
            if (!sp) fail_msg("/metrics: a sample without a value: '%s'", line);
            char *end;
            double x = strtod(sp + 1, &end);
            if (*end) fail_msg("/metrics: not a number in '%s'", line);
            *sp = 0;
            if (!strcmp(line, name)) v = x;
        }
        p += ll + (nl ? 1 : 0);
    }
    return v;
}

static char *metrics_text(const srv *s) {
    resp r = {0};
    assert_int_equal(http_ex(s, "GET", "/metrics", NULL, 0, NULL, &r), CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_non_null(r.body);
    return r.body;
}

static double metric_of(const srv *s, const char *name) {
    char *t = metrics_text(s);
    double v = metric(t, name);
    free(t);
    return v;
}

/* Waits (bounded) until the server counts n subscribers. */
static void wait_subscribers(const srv *s, int n) {
    double v = -1;
    for (int i = 0; i < 200 && v != n; i++) {
        v = metric_of(s, "heed_monitor_subscribers");
        if (v != n) usleep(25 * 1000);
    }
    if (v != n) fail_msg("the server counts %g monitor subscribers, want %d", v, n);
}

/* One generation through POST /api/runs; returns its done event. */
static json_t *generate(const srv *s, const char *body) {
    resp r = {0};
    assert_int_equal(http_ex(s, "POST", "/api/runs", body, strlen(body), NULL, &r), CURLE_OK);
    assert_int_equal(r.status, 200);
    static sse_ev ev[2048];
    int n = sse_parse(r.body, ev, 2048);
    free(r.body);
    assert_true(n >= 2);
    assert_string_equal(ev[n - 1].name, "done");
    json_t *done = json_incref(ev[n - 1].data);
    sse_free(ev, n);
    return done;
}

/* ------------------------------------------------------------ tests */

static void test_one_event_per_token(void **state) {
    (void)state;
    char *m0 = metrics_text(&main_srv);
    double events0 = metric(m0, "heed_monitor_events_total"), tokens0 = metric(m0, "heed_tokens_generated_total");
    assert_false(isnan(metric(m0, "heed_capture_seconds_total")));
    assert_true(metric(m0, "heed_capture_bytes_per_position") > 0);
    free(m0);
    assert_false(isnan(events0));

    int fd = subscribe(main_srv.port, 0);
    wait_subscribers(&main_srv, 1);
    json_t *done = generate(&main_srv, "{\"prompt\": \"Once upon a time\", \"max_tokens\": 12, \"temperature\": 0, "
                                       "\"cache\": false}");
    int n_out = (int)json_integer_value(json_object_get(done, "n_output"));
    const char *run_id = json_string_value(json_object_get(done, "run_id"));
    assert_int_equal(n_out, 12);
    char *buf = NULL;
    size_t len = 0;
    assert_int_equal(read_events(fd, &buf, &len, n_out, 10000), n_out);
    assert_non_null(strstr(buf, "200"));
    assert_non_null(strstr(buf, "text/event-stream"));
    static sse_ev ev[64];
    int n = sse_parse(strstr(buf, "\r\n\r\n") + 4, ev, 64);
    assert_int_equal(n, n_out);

    /* the stored run, to check each event against */
    char path[256];
    snprintf(path, sizeof path, "/api/runs/%s", run_id);
    json_t *doc, *stats;
    assert_int_equal(http(&main_srv, "GET", path, NULL, NULL, &doc), 200);
    snprintf(path, sizeof path, "/api/runs/%s/stats", run_id);
    assert_int_equal(http(&main_srv, "GET", path, NULL, NULL, &stats), 200);
    json_t *steps = json_object_get(doc, "steps"), *tokens = json_object_get(stats, "tokens");
    int n_prompt = (int)json_integer_value(json_object_get(doc, "n_prompt"));
    for (int i = 0; i < n; i++) {
        json_t *d = ev[i].data, *st = json_array_get(steps, (size_t)i);
        assert_non_null(d);
        assert_string_equal(ev[i].name, "message"); /* bare data lines: JSON Lines once "data: " is cut */
        assert_string_equal(json_string_value(json_object_get(d, "run_id")), run_id);
        assert_string_equal(json_string_value(json_object_get(d, "kind")), "heed");
        assert_int_equal(json_integer_value(json_object_get(d, "index")), i);
        assert_int_equal(json_integer_value(json_object_get(d, "id")), json_integer_value(json_object_get(st, "id")));
        assert_string_equal(json_string_value(json_object_get(d, "label")),
                            json_string_value(json_object_get(st, "label")));
        int pos = (int)json_integer_value(json_object_get(d, "pos"));
        assert_int_equal(pos, n_prompt - 1 + i); /* the query whose logits chose the token */
        const char *zone = json_string_value(json_object_get(d, "zone"));
        assert_non_null(zone);
        assert_true(!strcmp(zone, "none") || !strcmp(zone, "syntax_floor") || !strcmp(zone, "semantic_bridge") ||
                    !strcmp(zone, "structure_ripple"));
        json_t *fp = json_object_get(d, "fingerprint"), *ref = json_array_get(tokens, (size_t)pos);
        assert_int_equal(json_array_size(fp), 20);
        double sum = 0;
        for (size_t k = 0; k < 20; k++) {
            double x = json_number_value(json_array_get(fp, k));
            assert_true(x >= -1e-6 && x <= 1 + 1e-6);
            if (k <= 12) sum += x;
            double y = json_number_value(json_array_get(json_object_get(ref, "fingerprint"), k));
            if (fabs(x - y) > 1e-3) fail_msg("token %d fingerprint[%zu] %g, the stored run's %g", i, k, x, y);
        }
        assert_true(fabs(sum - 1) < 1e-3); /* entries 0..12 sum to 1 */
        assert_string_equal(zone, json_string_value(json_object_get(ref, "zone")));
    }
    sse_free(ev, n);
    json_decref(doc);
    json_decref(stats);
    json_decref(done);
    free(buf);
    close(fd);

    /* the counters moved; the closed subscriber goes at a later token */
    char *m1 = metrics_text(&main_srv);
    assert_true(metric(m1, "heed_monitor_events_total") >= events0 + n_out);
    assert_true(metric(m1, "heed_tokens_generated_total") >= tokens0 + n_out);
    assert_true(metric(m1, "heed_capture_seconds_total") > 0);
    free(m1);
    for (int k = 0; k < 10 && metric_of(&main_srv, "heed_monitor_subscribers") != 0; k++)
        json_decref(generate(&main_srv, "{\"prompt\": \"Lily\", \"max_tokens\": 2, \"cache\": false}"));
    assert_true(metric_of(&main_srv, "heed_monitor_subscribers") == 0);
}

/* A subscriber that never reads: generation goes on at full speed, a
 * reading subscriber (its own thread) still gets every token, and the slow
 * one is dropped once too far behind (the server runs with --stream-buffer
 * 65536; the kernel's socket buffers take a few hundred kB first, so it
 * takes a few generations). */
typedef struct reader {
    int fd;
    atomic_int got;   /* data events read so far */
    atomic_bool stop;
} reader;

/* Counts data events as they come, keeping only a chunk's tail (a
 * "\ndata: " split across two reads is counted once): it keeps up with the
 * stream, so the server never finds it behind. */
static void *reader_main(void *arg) {
    reader *r = arg;
    char buf[65536 + 8];
    size_t keep = 0;
    int n = 0; /* the headers hold no "\ndata: " */
    while (!atomic_load(&r->stop)) {
        struct pollfd pf = {.fd = r->fd, .events = POLLIN};
        if (poll(&pf, 1, 100) <= 0) continue;
        ssize_t k = recv(r->fd, buf + keep, sizeof buf - 1 - keep, 0);
        if (k <= 0) break;
        size_t len = keep + (size_t)k;
        buf[len] = 0;
        for (const char *p = buf; (p = strstr(p, "\ndata: ")); p++) n++;
        keep = len < 6 ? len : 6; /* shorter than the pattern: no match is counted twice */
        memmove(buf, buf + len - keep, keep);
        atomic_store(&r->got, n);
    }
    return NULL;
}

static void test_slow_subscriber(void **state) {
    (void)state;
    double dropped0 = metric_of(&main_srv, "heed_monitor_dropped_total");
    int slow = subscribe(main_srv.port, 4096); /* a small window: the kernel buffers little */
    int fast = subscribe(main_srv.port, 0);
    wait_subscribers(&main_srv, 2);
    enum { N_TOK = 450, MAX_GENS = 12 };
    reader rd = {.fd = fast};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, reader_main, &rd), 0);
    double dropped = dropped0, worst = 0;
    int gens = 0;
    while (gens < MAX_GENS && dropped <= dropped0) {
        double t0 = now_ms();
        json_t *done = generate(&main_srv, "{\"prompt\": \"Once upon a time\", \"max_tokens\": 450, "
                                           "\"temperature\": 0, \"cache\": false}");
        double took = now_ms() - t0;
        worst = took > worst ? took : worst;
        assert_string_equal(json_string_value(json_object_get(done, "stop")), "length"); /* never cancelled */
        assert_int_equal(json_integer_value(json_object_get(done, "n_output")), N_TOK);
        json_decref(done);
        gens++;
        dropped = metric_of(&main_srv, "heed_monitor_dropped_total");
    }
    printf("%d generations of %d tokens (slowest %.0f ms) with a subscriber that never reads\n", gens, N_TOK, worst);
    assert_true(dropped >= dropped0 + 1);
    assert_true(worst < 15000);
    /* the reading subscriber got every token */
    for (int i = 0; i < 200 && atomic_load(&rd.got) < N_TOK * gens; i++) usleep(50 * 1000);
    atomic_store(&rd.stop, true);
    pthread_join(th, NULL);
    assert_int_equal(atomic_load(&rd.got), N_TOK * gens);
    close(slow);
    close(fast);
    assert_int_equal(http(&main_srv, "GET", "/api/health", NULL, NULL, NULL), 200);
}

/* Shutting down ends the monitor's streams: the server exits cleanly with
 * a subscriber connected. */
static void test_stop_with_subscriber(void **state) {
    (void)state;
    srv s;
    if (system("rm -rf test-output/monitor-stop")) fail();
    const char *args[] = {"--data-dir", "test-output/monitor-stop", NULL};
    srv_start(&s, args);
    int fd = subscribe(s.port, 0);
    wait_subscribers(&s, 1);
    srv_stop(&s);
    close(fd);
}

static int group_setup(void **state) {
    const char *extra[] = {"--stream-buffer", "65536", NULL};
    return su_group_start(&main_srv, "test-output/monitor", extra);
}

static int group_teardown(void **state) { return su_group_stop(&main_srv); }

int main(void) {
    if (su_init()) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_event_per_token),
        cmocka_unit_test(test_slow_subscriber),
        cmocka_unit_test(test_stop_with_subscriber),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
