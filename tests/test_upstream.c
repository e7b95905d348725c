/*
 * test_upstream.c - `heed serve --upstream URL`: another `heed serve`
 * (bundled model) is the upstream; a heed in front of it must stream the
 * same tokens and attention, store the run with its top-k attention, pass
 * the upstream's errors on as 502, and survive an upstream that dies
 * mid-stream (a fake one, libmicrohttpd in this process) or is not there.
 */
#include <arpa/inet.h>
#include <math.h>
#include <microhttpd.h>
#include <netinet/in.h>

#include "serverutil.h"

static srv up, proxy, fake_proxy, dead_proxy;
static struct MHD_Daemon *fake;
static int fake_port;

/* ------------------------------------------------------------ the fake upstream */

/* Two token chunks of a completion stream with attention, then the
 * connection closes without [DONE]. */
static const char *const fake_chunks[] = {
    "data: {\"id\":\"x\",\"object\":\"text_completion\",\"choices\":[{\"index\":0,\"text\":\",\",\"finish_reason\":null,"
    "\"attention_tokens\":[{\"token_index\":0,\"id\":432,\"top\":[[4,0.5],[0,0.25]]}]}]}\n\n",
    "data: {\"id\":\"x\",\"object\":\"text_completion\",\"choices\":[{\"index\":0,\"text\":\" there\",\"finish_reason\":null,"
    "\"attention_tokens\":[{\"token_index\":1,\"id\":383,\"top\":[[5,0.75],[1,0.125]]}]}]}\n\n",
};

static ssize_t fake_read(void *cls, uint64_t pos, char *buf, size_t max) {
    size_t off = 0;
    for (size_t i = 0; i < 2; i++) {
        size_t n = strlen(fake_chunks[i]);
        if (pos < off + n) {
            size_t k = off + n - pos < max ? off + n - pos : max;
            memcpy(buf, fake_chunks[i] + (pos - off), k);
            return (ssize_t)k;
        }
        off += n;
    }
    return MHD_CONTENT_READER_END_WITH_ERROR; /* dies: the connection is closed mid-stream */
}

static enum MHD_Result on_fake(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                               const char *version, const char *data, size_t *size, void **state) {
    if (!*state) { /* first call: headers only */
        *state = (void *)1;
        return MHD_YES;
    }
    if (*size) { /* the body: read and ignored */
        *size = 0;
        return MHD_YES;
    }
    struct MHD_Response *r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, fake_read, NULL, NULL);
    MHD_add_response_header(r, "Content-Type", "text/event-stream");
    enum MHD_Result ret = MHD_queue_response(c, 200, r);
    MHD_destroy_response(r);
    return ret;
}

/* ------------------------------------------------------------ helpers */

/* A streamed POST; the events in ev (sse_free them). Returns the count. */
static int stream(const srv *s, const char *path, const char *body, sse_ev *ev, int n_max, long *status) {
    resp r = {0};
    CURLcode rc = http_ex(s, "POST", path, body, strlen(body), NULL, &r);
    if (rc != CURLE_OK) fail_msg("POST %s: %s", path, curl_easy_strerror(rc));
    *status = r.status;
    int n = r.body ? sse_parse(r.body, ev, n_max) : 0;
    free(r.body);
    return n;
}

static const char *ev_name(const sse_ev *e) { return e->name; }

/* ------------------------------------------------------------ tests */

static void test_stream_equals_upstream(void **state) {
    const char *body = "{\"prompt\":\"Once upon a time\",\"max_tokens\":6,\"temperature\":0.8,\"seed\":7,\"cache\":false}";
    sse_ev a[64], b[64];
    long sa, sb;
    int na = stream(&up, "/api/runs", body, a, 64, &sa), nb = stream(&proxy, "/api/runs", body, b, 64, &sb);
    assert_int_equal(sa, 200);
    assert_int_equal(sb, 200);
    int ta = 0, tb = 0;
    const char *run_id = NULL;
    for (int i = 0; i < na; i++) ta += !strcmp(ev_name(&a[i]), "token");
    for (int i = 0; i < nb; i++) {
        if (!strcmp(ev_name(&b[i]), "done")) run_id = json_string_value(json_object_get(b[i].data, "run_id"));
        if (strcmp(ev_name(&b[i]), "token")) continue;
        tb++;
    }
    assert_int_equal(ta, 6);
    assert_int_equal(tb, ta);
    assert_non_null(run_id);
    /* token for token: the same ids and the same attention.top */
    int ia = 0, ib = 0;
    for (int t = 0; t < ta; t++) {
        while (strcmp(ev_name(&a[ia]), "token")) ia++;
        while (strcmp(ev_name(&b[ib]), "token")) ib++;
        json_t *ea = a[ia++].data, *eb = b[ib++].data;
        assert_int_equal(json_integer_value(json_object_get(ea, "id")), json_integer_value(json_object_get(eb, "id")));
        assert_int_equal(json_integer_value(json_object_get(eb, "index")), t);
        assert_true(json_equal(json_object_get(json_object_get(ea, "attention"), "top"),
                               json_object_get(json_object_get(eb, "attention"), "top")));
        assert_string_equal(json_string_value(json_object_get(ea, "label")), json_string_value(json_object_get(eb, "label")));
    }

    /* the stored run */
    char path[256];
    json_t *j = NULL;
    assert_int_equal(http(&proxy, "GET", "/api/runs?limit=5", NULL, NULL, &j), 200);
    bool listed = false;
    json_t *runs = json_object_get(j, "runs");
    for (size_t i = 0; i < json_array_size(runs); i++)
        listed |= !strcmp(json_string_value(json_object_get(json_array_get(runs, i), "id")), run_id);
    assert_true(listed);
    json_decref(j);
    snprintf(path, sizeof path, "/api/runs/%s", run_id);
    assert_int_equal(http(&proxy, "GET", path, NULL, NULL, &j), 200);
    assert_int_equal(json_integer_value(json_object_get(j, "n_output")), 6);
    int n_prompt = (int)json_integer_value(json_object_get(j, "n_prompt"));
    assert_int_equal(n_prompt, 5);
    assert_int_equal(json_array_size(json_object_get(j, "tokens")), 11);
    assert_non_null(json_string_value(json_object_get(j, "upstream")));
    assert_true(json_array_size(json_object_get(j, "unavailable")) > 0);
    json_t *oids = json_object_get(j, "output_ids");
    ib = 0;
    for (int t = 0; t < 6; t++) {
        while (strcmp(ev_name(&b[ib]), "token")) ib++;
        assert_int_equal(json_integer_value(json_array_get(oids, (size_t)t)),
                         json_integer_value(json_object_get(b[ib++].data, "id")));
    }
    json_decref(j);

    /* views from the top-k tier: a step's row holds the streamed top (fp16) */
    snprintf(path, sizeof path, "/api/runs/%s/attention?step=2", run_id);
    assert_int_equal(http(&proxy, "GET", path, NULL, NULL, &j), 200);
    json_t *row = json_object_get(j, "row");
    assert_int_equal(json_array_size(row), n_prompt - 1 + 2 + 1);
    ib = 0;
    for (int t = 0; t <= 2; t++) {
        while (strcmp(ev_name(&b[ib]), "token")) ib++;
        if (t < 2) ib++;
    }
    json_t *top = json_object_get(json_object_get(b[ib].data, "attention"), "top");
    assert_true(json_array_size(top) > 0);
    for (size_t e = 0; e < json_array_size(top); e++) {
        json_t *pair = json_array_get(top, e);
        double w = json_real_value(json_array_get(pair, 1)),
               got = json_number_value(json_array_get(row, (size_t)json_integer_value(json_array_get(pair, 0))));
        assert_true(fabs(got - w) <= 1e-3 * (w > 1 ? w : 1));
    }
    json_decref(j);
    snprintf(path, sizeof path, "/api/runs/%s/graph", run_id);
    assert_int_equal(http(&proxy, "GET", path, NULL, NULL, &j), 200);
    assert_int_equal(json_array_size(json_object_get(j, "prompt")), 6);
    json_decref(j);
    snprintf(path, sizeof path, "/api/runs/%s/attention?step=1&norm=split", run_id);
    assert_int_equal(http(&proxy, "GET", path, NULL, NULL, &j), 200);
    assert_non_null(json_object_get(j, "split"));
    json_decref(j);
    /* what needs the model, q/k or candidates says so */
    snprintf(path, sizeof path, "/api/runs/%s/logit-lens", run_id);
    long st = http(&proxy, "GET", path, NULL, NULL, &j);
    assert_true(st == 400 || st == 409);
    assert_non_null(json_object_get(j, "error"));
    json_decref(j);
    snprintf(path, sizeof path, "/api/runs/%s/attention?step=1&measure=value", run_id);
    assert_int_equal(http(&proxy, "GET", path, NULL, NULL, &j), 400);
    json_decref(j);
    sse_free(a, na);
    sse_free(b, nb);
}

static void test_v1_via_upstream(void **state) {
    const char *body = "{\"prompt\":\"Once upon a time\",\"max_tokens\":4,\"temperature\":0,"
                       "\"return_attention_tokens\":true}";
    json_t *a = NULL, *b = NULL;
    assert_int_equal(http(&up, "POST", "/v1/completions", body, NULL, &a), 200);
    assert_int_equal(http(&proxy, "POST", "/v1/completions", body, NULL, &b), 200);
    json_t *ca = json_array_get(json_object_get(a, "choices"), 0), *cb = json_array_get(json_object_get(b, "choices"), 0);
    assert_string_equal(json_string_value(json_object_get(ca, "text")), json_string_value(json_object_get(cb, "text")));
    assert_true(json_equal(json_object_get(ca, "attention_tokens"), json_object_get(cb, "attention_tokens")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(b, "usage"), "completion_tokens")), 4);
    json_decref(a);
    json_decref(b);

    /* streamed */
    const char *sbody = "{\"prompt\":\"Once upon a time\",\"max_tokens\":3,\"temperature\":0,\"stream\":true,"
                        "\"return_attention_tokens\":true}";
    sse_ev ev[32];
    long status;
    int n = stream(&proxy, "/v1/completions", sbody, ev, 32, &status);
    assert_int_equal(status, 200);
    int toks = 0;
    bool done = false, finish = false;
    for (int i = 0; i < n; i++) {
        if (ev[i].done_marker) done = true;
        json_t *c = json_array_get(json_object_get(ev[i].data, "choices"), 0);
        toks += json_array_size(json_object_get(c, "attention_tokens")) == 1;
        finish |= json_is_string(json_object_get(c, "finish_reason"));
    }
    assert_int_equal(toks, 3);
    assert_true(done && finish);
    sse_free(ev, n);

    /* chat: the bundled model has no chat template, the upstream says 400: passed on as 502 */
    const char *chat = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2}";
    json_t *j = NULL;
    assert_int_equal(http(&proxy, "POST", "/v1/chat/completions", chat, NULL, &j), 502);
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    assert_non_null(msg);
    assert_non_null(strstr(msg, "400"));
    assert_non_null(strstr(msg, "chat template"));
    json_decref(j);
    const char *chat_s = "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":2,\"stream\":true}";
    assert_int_equal(http(&proxy, "POST", "/v1/chat/completions", chat_s, NULL, &j), 502);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "upstream_error");
    json_decref(j);
    /* what an upstream cannot do is refused */
    expect_error(&proxy, "POST", "/api/runs", "{\"prompt\":\"x\",\"interventions\":[{\"type\":\"ablate\",\"layer\":0,\"head\":0}]}",
                 400, "interventions");
}

static void test_upstream_dies_mid_stream(void **state) {
    sse_ev ev[32];
    long status;
    int n = stream(&fake_proxy, "/api/runs", "{\"prompt\":\"Once upon a time\",\"max_tokens\":8}", ev, 32, &status);
    assert_int_equal(status, 200);
    int toks = 0;
    bool error = false, done = false;
    for (int i = 0; i < n; i++) {
        toks += !strcmp(ev_name(&ev[i]), "token");
        done |= !strcmp(ev_name(&ev[i]), "done");
        if (!strcmp(ev_name(&ev[i]), "error")) {
            error = true;
            assert_string_equal(json_string_value(json_object_get(json_object_get(ev[i].data, "error"), "code")),
                                "upstream_error");
        }
    }
    assert_int_equal(toks, 2);
    assert_true(error);
    assert_false(done);
    assert_string_equal(ev_name(&ev[n - 1]), "error");
    sse_free(ev, n);
    json_t *j = NULL;
    assert_int_equal(http(&fake_proxy, "GET", "/api/runs?limit=1", NULL, NULL, &j), 200);
    json_t *r = json_array_get(json_object_get(j, "runs"), 0);
    assert_string_equal(json_string_value(json_object_get(r, "stop")), "upstream_error");
    assert_int_equal(json_integer_value(json_object_get(r, "n_output")), 2);
    char path[256];
    snprintf(path, sizeof path, "/api/runs/%s/attention?step=1", json_string_value(json_object_get(r, "id")));
    json_decref(j);
    assert_int_equal(http(&fake_proxy, "GET", path, NULL, NULL, &j), 200);
    json_t *row = json_object_get(j, "row"); /* step 1: query 5, top [[5,0.75],[1,0.125]] */
    assert_int_equal(json_array_size(row), 6);
    assert_true(fabs(json_number_value(json_array_get(row, 5)) - 0.75) < 1e-3);
    assert_true(fabs(json_number_value(json_array_get(row, 1)) - 0.125) < 1e-3);
    assert_true(json_number_value(json_array_get(row, 0)) == 0.0);
    json_decref(j);
    /* non-streamed: a 502 naming the stored run */
    assert_int_equal(http(&fake_proxy, "POST", "/v1/completions", "{\"prompt\":\"Once upon a time\",\"max_tokens\":8}", NULL,
                          &j), 502);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "upstream_error");
    json_decref(j);
}

static void test_unreachable(void **state) {
    json_t *j = NULL;
    assert_int_equal(http(&dead_proxy, "POST", "/v1/completions", "{\"prompt\":\"Once\",\"max_tokens\":2}", NULL, &j), 502);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "upstream_unreachable");
    json_decref(j);
    assert_int_equal(http(&dead_proxy, "POST", "/api/runs", "{\"prompt\":\"Once\",\"max_tokens\":2}", NULL, &j), 502);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "upstream_unreachable");
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "error"), "message")), "upstream"));
    json_decref(j);
    /* the server is still there */
    assert_int_equal(http(&dead_proxy, "GET", "/api/health", NULL, NULL, NULL), 200);
}

/* ------------------------------------------------------------ setup */

static int group_setup(void **state) {
    curl_global_init(CURL_GLOBAL_ALL);
    setenv("NO_PROXY", "*", 1); /* every server here is on loopback, whatever proxy the environment names */
    setenv("no_proxy", "*", 1);
    if (system("rm -rf test-output/up-a test-output/up-b test-output/up-c test-output/up-d")) return -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    fake = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_AUTO, 0, NULL,
                            NULL, on_fake, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa,
                            MHD_OPTION_CONNECTION_TIMEOUT, 30u, MHD_OPTION_END);
    if (!fake) return -1;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(fake, MHD_DAEMON_INFO_BIND_PORT);
    if (!di) return -1;
    fake_port = di->port;
    const char *ua[] = {"--data-dir", "test-output/up-a", NULL};
    srv_start(&up, ua);
    char url[64], furl[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", up.port);
    snprintf(furl, sizeof furl, "http://127.0.0.1:%d/", fake_port);
    const char *pa[] = {"--data-dir", "test-output/up-b", "--upstream", url, "--upstream-key", "k", NULL};
    srv_start(&proxy, pa);
    const char *fa[] = {"--data-dir", "test-output/up-c", "--upstream", furl, NULL};
    srv_start(&fake_proxy, fa);
    /* port 1 on loopback: nothing listens there */
    const char *da[] = {"--data-dir", "test-output/up-d", "--upstream", "http://127.0.0.1:1", NULL};
    srv_start(&dead_proxy, da);
    return 0;
}

static int group_teardown(void **state) {
    srv_stop(&dead_proxy);
    srv_stop(&fake_proxy);
    srv_stop(&proxy);
    srv_stop(&up);
    if (fake) MHD_stop_daemon(fake);
    curl_global_cleanup();
    return 0;
}

int main(void) {
    if (su_init()) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_equals_upstream),
        cmocka_unit_test(test_v1_via_upstream),
        cmocka_unit_test(test_upstream_dies_mid_stream),
        cmocka_unit_test(test_unreachable),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
