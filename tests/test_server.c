/*
 * test_server.c - black-box tests of `heed serve`: the real binary built
 * beside this test (build/heed or build-asan/heed) is started on a free port
 * of 127.0.0.1 and spoken to over HTTP with libcurl. Every wait is bounded.
 */
#include <curl/curl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>

#include "heed.h"
#include "serverutil.h"

static srv main_srv; /* bundled model, default flags, its own data folder: shared by most tests */

#define MAX_EV 1100

/* ------------------------------------------------------------ tests */

static void test_routes_basic(void **state) {
    json_t *j;
    assert_int_equal(http(&main_srv, "GET", "/api/health", NULL, NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
    json_decref(j);

    assert_int_equal(http(&main_srv, "GET", "/api/model", NULL, NULL, &j), 200);
    assert_int_equal(json_integer_value(json_object_get(j, "n_layer")), 5);
    assert_int_equal(json_integer_value(json_object_get(j, "n_head")), 8);
    assert_string_equal(json_string_value(json_object_get(j, "arch")), "llama");
    assert_true(json_is_null(json_object_get(j, "chat_template")));
    json_decref(j);

    assert_int_equal(http(&main_srv, "GET", "/v1/models", NULL, NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "object")), "list");
    json_t *m = json_array_get(json_object_get(j, "data"), 0);
    assert_string_equal(json_string_value(json_object_get(m, "id")), "stories260K.gguf");
    assert_string_equal(json_string_value(json_object_get(m, "object")), "model");
    json_decref(j);

    resp r = {0};
    assert_int_equal(http_ex(&main_srv, "GET", "/", NULL, 0, NULL, &r), CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "<h1>heed</h1>"));
    free(r.body);
}

static void test_tokenize(void **state) {
    json_t *j;
    assert_int_equal(http(&main_srv, "POST", "/api/tokenize", "{\"text\": \"Once upon a time\"}", NULL, &j), 200);
    json_t *ids = json_object_get(j, "ids"), *toks = json_object_get(j, "tokens");
    assert_int_equal(json_array_size(ids), 5);
    assert_int_equal(json_integer_value(json_array_get(ids, 1)), 403);
    assert_string_equal(json_string_value(json_object_get(json_array_get(toks, 0), "label")), "[BOS]");
    assert_string_equal(json_string_value(json_object_get(json_array_get(toks, 1), "piece")), "▁Once");
    json_decref(j);
    assert_int_equal(http(&main_srv, "POST", "/api/tokenize", "{\"text\": \"Once\", \"add_bos\": false}", NULL, &j),
                     200);
    assert_int_equal(json_array_size(json_object_get(j, "ids")), 1);
    json_decref(j);
}

static void test_errors(void **state) {
    expect_error(&main_srv, "POST", "/api/tokenize", "{\"text\": ", 400, NULL);         /* malformed */
    expect_error(&main_srv, "POST", "/api/tokenize", "[1, 2]", 400, NULL);              /* not an object */
    expect_error(&main_srv, "POST", "/api/tokenize", "{\"text\": 3}", 400, "text");
    expect_error(&main_srv, "POST", "/api/tokenize", "{\"text\": \"\xff\xfe\"}", 400, NULL); /* bad UTF-8 */
    expect_error(&main_srv, "POST", "/api/runs", "{\"prompt\": \"x\", \"temperature\": -1}", 400, "temperature");
    expect_error(&main_srv, "POST", "/api/runs", "{\"prompt\": \"x\", \"top_p\": 0}", 400, "top_p");
    expect_error(&main_srv, "POST", "/api/runs", "{\"prompt\": \"x\", \"max_tokens\": 1.5}", 400, "max_tokens");
    expect_error(&main_srv, "POST", "/api/runs", "{\"max_tokens\": 3}", 400, "prompt");
    expect_error(&main_srv, "POST", "/v1/completions", "{\"prompt\": \"x\", \"seed\": -3}", 400, "seed");
    expect_error(&main_srv, "POST", "/v1/completions", "{\"prompt\": \"x\", \"n\": 2}", 400, "n");
    /* the bundled model has no chat template */
    expect_error(&main_srv, "POST", "/v1/chat/completions", "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}",
                 400, "messages");
    expect_error(&main_srv, "GET", "/api/nothing", NULL, 404, NULL);
    expect_error(&main_srv, "GET", "/api/runs/run_nope", NULL, 404, "id");
    expect_error(&main_srv, "DELETE", "/api/runs/run_nope", NULL, 404, "id");
    expect_error(&main_srv, "DELETE", "/api/health", NULL, 405, NULL);

    resp r = {0};
    http_ex(&main_srv, "PUT", "/api/runs", "{}", 2, NULL, &r);
    assert_int_equal(r.status, 405);
    assert_non_null(strstr(r.allow, "GET"));
    assert_non_null(strstr(r.allow, "POST"));
    free(r.body);

    /* 413: refused on its Content-Length, before the body is read */
    size_t big = (1u << 20) + 16;
    char *body = malloc(big + 1);
    assert_non_null(body);
    memset(body, ' ', big);
    body[big] = 0;
    memset(&r, 0, sizeof r);
    http_ex(&main_srv, "POST", "/api/tokenize", body, big, NULL, &r);
    free(body);
    assert_int_equal(r.status, 413);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(json_object_get(j, "error"), "code")), "body_too_large");
    json_decref(j);
    free(r.body);

    /* still serving */
    assert_int_equal(http(&main_srv, "GET", "/api/health", NULL, NULL, NULL), 200);
}

/* POST /api/runs: queued, one token per step, done; then the stored run. */
static void test_run_stream_and_store(void **state) {
    resp r = {0};
    const char *body = "{\"prompt\": \"Once upon a time\", \"max_tokens\": 24, \"temperature\": 0}";
    assert_int_equal(http_ex(&main_srv, "POST", "/api/runs", body, strlen(body), NULL, &r), CURLE_OK);
    assert_int_equal(r.status, 200);
    static sse_ev ev[MAX_EV];
    int n = sse_parse(r.body, ev, MAX_EV);
    assert_true(n >= 3);
    assert_string_equal(ev[0].name, "queued");
    assert_non_null(json_object_get(ev[0].data, "position"));
    int n_tok = 0;
    char text[4096] = "";
    for (int i = 1; i < n - 1; i++) {
        assert_string_equal(ev[i].name, "token");
        json_t *d = ev[i].data;
        assert_int_equal(json_integer_value(json_object_get(d, "index")), n_tok);
        json_t *top = json_object_get(d, "top");
        assert_int_equal(json_array_size(top), 5);
        json_t *att = json_object_get(json_object_get(d, "attention"), "top");
        int pos = 5 - 1 + n_tok; /* query position that chose this token */
        assert_int_equal(json_array_size(att), (size_t)(pos + 1 < 32 ? pos + 1 : 32));
        double sum = 0, prev = 2;
        for (size_t k = 0; k < json_array_size(att); k++) {
            json_t *pw = json_array_get(att, k);
            int p = (int)json_integer_value(json_array_get(pw, 0));
            double w = json_number_value(json_array_get(pw, 1));
            assert_true(p >= 0 && p <= pos);
            assert_true(w >= 0 && w <= prev + 1e-6);
            prev = w;
            sum += w;
        }
        assert_true(sum <= 1.0 + 1e-3);
        if (pos + 1 <= 32) assert_true(fabs(sum - 1.0) < 1e-3); /* every source listed: the row sums to 1 */
        strncat(text, json_string_value(json_object_get(d, "text")), sizeof text - strlen(text) - 1);
        n_tok++;
    }
    assert_int_equal(n_tok, 24);
    assert_string_equal(ev[n - 1].name, "done");
    json_t *done = ev[n - 1].data;
    const char *run_id = json_string_value(json_object_get(done, "run_id"));
    assert_non_null(run_id);
    assert_int_equal(json_integer_value(json_object_get(done, "n_output")), 24);
    assert_int_equal(json_integer_value(json_object_get(done, "n_prompt")), 5);
    assert_string_equal(json_string_value(json_object_get(done, "stop")), "length");
    /* the server's own timings: where the time went */
    json_t *tm = json_object_get(done, "timings");
    const char *tkeys[] = {"queued_ms", "prompt_ms", "first_token_ms", "decode_tok_s"};
    for (int k = 0; k < 4; k++) assert_true(json_number_value(json_object_get(tm, tkeys[k])) >= 0);
    assert_true(json_number_value(json_object_get(tm, "prompt_ms")) > 0);
    assert_true(json_number_value(json_object_get(tm, "decode_tok_s")) > 0);

    /* greedy output matches the reference engine's */
    json_t *g = json_load_file("tests/fixtures/stories260K__once-upon-a-time.json", 0, NULL);
    char path[128];
    snprintf(path, sizeof path, "/api/runs/%s", run_id);
    json_t *run;
    assert_int_equal(http(&main_srv, "GET", path, NULL, NULL, &run), 200);
    json_t *out = json_object_get(run, "output_ids");
    assert_int_equal(json_array_size(out), 24);
    if (g) {
        json_t *gi = json_object_get(g, "greedy_ids");
        for (size_t i = 0; i < 24; i++)
            assert_int_equal(json_integer_value(json_array_get(out, i)), json_integer_value(json_array_get(gi, i)));
    }
    json_decref(g);
    assert_string_equal(json_string_value(json_object_get(run, "text")), text);
    assert_int_equal(json_array_size(json_object_get(run, "tokens")), 29);
    assert_int_equal(json_array_size(json_object_get(run, "steps")), 24);
    assert_string_equal(json_string_value(json_object_get(run, "prompt")), "Once upon a time");
    json_decref(run);

    json_t *list;
    assert_int_equal(http(&main_srv, "GET", "/api/runs", NULL, NULL, &list), 200);
    bool found = false;
    json_t *runs = json_object_get(list, "runs");
    for (size_t i = 0; i < json_array_size(runs); i++)
        found |= !strcmp(json_string_value(json_object_get(json_array_get(runs, i), "id")), run_id);
    assert_true(found);
    json_decref(list);

    assert_int_equal(http(&main_srv, "DELETE", path, NULL, NULL, NULL), 200);
    assert_int_equal(http(&main_srv, "GET", path, NULL, NULL, NULL), 404);
    sse_free(ev, n);
    free(r.body);
}

static void test_v1_completions(void **state) {
    json_t *j;
    const char *body = "{\"model\": \"x\", \"prompt\": \"Once upon a time\", \"max_tokens\": 6, \"temperature\": 0, "
                       "\"return_attention_tokens\": true}";
    assert_int_equal(http(&main_srv, "POST", "/v1/completions", body, NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "object")), "text_completion");
    assert_non_null(json_string_value(json_object_get(j, "id")));
    assert_true(json_is_integer(json_object_get(j, "created")));
    assert_string_equal(json_string_value(json_object_get(j, "model")), "stories260K.gguf");
    json_t *ch = json_array_get(json_object_get(j, "choices"), 0);
    assert_int_equal(json_integer_value(json_object_get(ch, "index")), 0);
    assert_true(strlen(json_string_value(json_object_get(ch, "text"))) > 0);
    assert_string_equal(json_string_value(json_object_get(ch, "finish_reason")), "length");
    assert_true(json_is_null(json_object_get(ch, "logprobs")));
    json_t *at = json_object_get(ch, "attention_tokens");
    assert_int_equal(json_array_size(at), 6);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(at, 2), "token_index")), 2);
    assert_true(json_array_size(json_object_get(json_array_get(at, 2), "top")) == 7);
    json_t *u = json_object_get(j, "usage");
    assert_int_equal(json_integer_value(json_object_get(u, "prompt_tokens")), 5);
    assert_int_equal(json_integer_value(json_object_get(u, "completion_tokens")), 6);
    assert_int_equal(json_integer_value(json_object_get(u, "total_tokens")), 11);
    json_decref(j);

    /* without the flag, no attention */
    assert_int_equal(http(&main_srv, "POST", "/v1/completions", "{\"prompt\": \"Once\", \"max_tokens\": 2}", NULL, &j),
                     200);
    assert_null(json_object_get(json_array_get(json_object_get(j, "choices"), 0), "attention_tokens"));
    json_decref(j);

    resp r = {0};
    body = "{\"prompt\": \"Once upon a time\", \"max_tokens\": 5, \"temperature\": 0, \"stream\": true, "
           "\"return_attention_tokens\": true}";
    assert_int_equal(http_ex(&main_srv, "POST", "/v1/completions", body, strlen(body), NULL, &r), CURLE_OK);
    assert_int_equal(r.status, 200);
    static sse_ev ev[64];
    int n = sse_parse(r.body, ev, 64);
    assert_int_equal(n, 5 + 2); /* one chunk per token, the closing chunk, [DONE] */
    assert_true(ev[n - 1].done_marker);
    for (int i = 0; i < n - 1; i++) {
        json_t *c = ev[i].data;
        assert_non_null(c);
        assert_string_equal(json_string_value(json_object_get(c, "object")), "text_completion");
        json_t *cc = json_array_get(json_object_get(c, "choices"), 0);
        assert_non_null(json_string_value(json_object_get(cc, "text")));
        if (i < 5) {
            assert_true(json_is_null(json_object_get(cc, "finish_reason")));
            json_t *a = json_array_get(json_object_get(cc, "attention_tokens"), 0);
            assert_int_equal(json_integer_value(json_object_get(a, "token_index")), i);
        } else {
            assert_string_equal(json_string_value(json_object_get(cc, "finish_reason")), "length");
        }
    }
    sse_free(ev, n);
    free(r.body);
}

/* ------------------------------------------------------------ stored runs */

/* Generates greedily on s and returns the run id (malloc'd). */
static char *generate(const srv *s, const char *prompt, int n) {
    char body[256];
    snprintf(body, sizeof body, "{\"prompt\": \"%s\", \"max_tokens\": %d, \"temperature\": 0}", prompt, n);
    resp r = {0};
    assert_int_equal(http_ex(s, "POST", "/api/runs", body, strlen(body), NULL, &r), CURLE_OK);
    const char *at = strstr(r.body, "\"run_id\":\"");
    assert_non_null(at);
    at += strlen("\"run_id\":\"");
    char *id = strndup(at, strcspn(at, "\""));
    free(r.body);
    return id;
}

/* GET s path as text (status 200 expected). */
static char *get_text(const srv *s, const char *path, size_t *len) {
    resp r = {0};
    assert_int_equal(http_ex(s, "GET", path, NULL, 0, NULL, &r), CURLE_OK);
    if (r.status != 200) fail_msg("GET %s: status %ld: %s", path, r.status, r.body ? r.body : "");
    if (len) *len = r.len;
    return r.body;
}

/* GET /api/runs/{id}/{what}{args} as JSON (status 200 expected). */
static json_t *get_json(const srv *s, const char *id, const char *what, const char *args) {
    char path[512];
    snprintf(path, sizeof path, "/api/runs/%s/%s%s", id, what, args);
    json_t *j;
    assert_int_equal(http(s, "GET", path, NULL, NULL, &j), 200);
    assert_non_null(j);
    return j;
}

/* A client that hangs up after the first token: the server carries on and
 * the next generation starts promptly. */
static void test_cancel_on_disconnect(void **state) {
    resp r = {.abort_after = 2}; /* queued, first token */
    const char *body = "{\"prompt\": \"Once upon a time\", \"max_tokens\": 512}";
    CURLcode rc = http_ex(&main_srv, "POST", "/api/runs", body, strlen(body), NULL, &r);
    assert_int_equal(rc, CURLE_WRITE_ERROR);
    free(r.body);

    double t0 = now_ms();
    memset(&r, 0, sizeof r);
    body = "{\"prompt\": \"Once\", \"max_tokens\": 3}";
    assert_int_equal(http_ex(&main_srv, "POST", "/api/runs", body, strlen(body), NULL, &r), CURLE_OK);
    assert_true(now_ms() - t0 < 10000);
    assert_non_null(strstr(r.body, "event: done"));
    free(r.body);

    /* the abandoned run is stored as cancelled (or complete when it beat the hang-up) */
    json_t *list;
    assert_int_equal(http(&main_srv, "GET", "/api/runs", NULL, NULL, &list), 200);
    json_t *runs = json_object_get(list, "runs");
    for (size_t i = 0; i < json_array_size(runs); i++) {
        json_t *e = json_array_get(runs, i);
        if (!strcmp(json_string_value(json_object_get(e, "stop")), "cancelled"))
            assert_true(json_integer_value(json_object_get(e, "n_output")) < 512);
    }
    json_decref(list);
}

/* With a model slow enough that 2000 tokens take seconds, a hang-up after
 * the first token must leave a run stored as cancelled, well short of 2000. */
static void test_cancel_long_generation(void **state) {
    char buf[512];
    const char *model = tu_shared("models/tiny-qwen3.gguf", buf, sizeof buf);
    if (!model) skip();
    srv s;
    const char *args[] = {"-m", model, "--max-tokens", "2000", "--data-dir", "test-output/cancel-data", NULL};
    assert_int_equal(system("rm -rf test-output/cancel-data"), 0);
    srv_start(&s, args);
    resp r = {.abort_after = 2};
    const char *body = "{\"prompt\": \"Hello\", \"max_tokens\": 2000, \"cache\": false}";
    assert_int_equal(http_ex(&s, "POST", "/api/runs", body, strlen(body), NULL, &r), CURLE_WRITE_ERROR);
    free(r.body);
    const char *stop = NULL;
    long long n_out = -1;
    for (double t0 = now_ms(); now_ms() - t0 < 20000 && !stop;) {
        json_t *list;
        assert_int_equal(http(&s, "GET", "/api/runs", NULL, NULL, &list), 200);
        json_t *e = json_array_get(json_object_get(list, "runs"), 0);
        if (e) {
            stop = strcmp(json_string_value(json_object_get(e, "stop")), "cancelled") ? "other" : "cancelled";
            n_out = json_integer_value(json_object_get(e, "n_output"));
        }
        json_decref(list);
        if (!stop) usleep(50 * 1000);
    }
    assert_non_null(stop);
    assert_string_equal(stop, "cancelled");
    assert_true(n_out >= 1 && n_out < 2000);
    printf("  cancelled after %lld of 2000 tokens\n", n_out);
    srv_stop(&s);
}

/* "/api/runs/ID" of the newest stored run. */
static void newest_run_path(srv *s, char *path, size_t size) {
    json_t *list;
    assert_int_equal(http(s, "GET", "/api/runs", NULL, NULL, &list), 200);
    const char *id = json_string_value(json_object_get(json_array_get(json_object_get(list, "runs"), 0), "id"));
    assert_non_null(id);
    snprintf(path, size, "/api/runs/%s", id);
    json_decref(list);
}

/* A mixture-of-experts model's run: the run says so, /experts gives each
 * position's routing (as many experts as the model uses, weights summing to
 * 1) and each layer's load; a dense model's run refuses the view. */
static void test_experts_view(void **state) {
    char buf[512];
    const char *model = tu_shared("models/tiny-qwen3moe.gguf", buf, sizeof buf);
    if (!model) skip();
    srv s;
    const char *args[] = {"-m", model, "--data-dir", "test-output/moe-data", NULL};
    assert_int_equal(system("rm -rf test-output/moe-data"), 0);
    srv_start(&s, args);
    json_t *j;
    assert_int_equal(http(&s, "POST", "/v1/completions", "{\"prompt\": \"Hello world\", \"max_tokens\": 5}", NULL, &j), 200);
    json_decref(j);
    char path[256];
    newest_run_path(&s, path, sizeof path);
    json_t *run;
    assert_int_equal(http(&s, "GET", path, NULL, NULL, &run), 200);
    json_t *ex = json_object_get(run, "experts");
    assert_int_equal(json_integer_value(json_object_get(ex, "n_expert")), 8);
    assert_int_equal(json_integer_value(json_object_get(ex, "n_used")), 2);
    int n_pos = (int)(json_integer_value(json_object_get(run, "n_prompt")) + json_integer_value(json_object_get(run, "n_output")) - 1);
    json_decref(run);
    strcat(path, "/experts");
    assert_int_equal(http(&s, "GET", path, NULL, NULL, &j), 200);
    assert_int_equal(json_integer_value(json_object_get(j, "n_pos")), n_pos);
    json_t *pos = json_object_get(j, "positions");
    assert_int_equal(json_array_size(pos), (size_t)n_pos);
    for (size_t p = 0; p < json_array_size(pos); p++) {
        json_t *layers = json_object_get(json_array_get(pos, p), "layers");
        assert_int_equal(json_array_size(layers), 4);
        for (size_t l = 0; l < 4; l++) {
            json_t *e = json_array_get(layers, l), *ids = json_object_get(e, "ids"), *w = json_object_get(e, "weights");
            assert_int_equal(json_array_size(ids), 2);
            long a = (long)json_integer_value(json_array_get(ids, 0)), b = (long)json_integer_value(json_array_get(ids, 1));
            assert_true(a >= 0 && a < 8 && b >= 0 && b < 8 && a != b);
            double w0 = json_real_value(json_array_get(w, 0)), w1 = json_real_value(json_array_get(w, 1));
            assert_true(w0 >= w1 && fabs(w0 + w1 - 1) < 1e-5);
        }
    }
    json_t *load = json_object_get(j, "load");
    assert_int_equal(json_array_size(load), 4);
    long total = 0;
    json_t *cnt = json_object_get(json_array_get(load, 0), "count");
    for (size_t e = 0; e < json_array_size(cnt); e++) total += (long)json_integer_value(json_array_get(cnt, e));
    assert_int_equal(total, 2L * n_pos); /* every position chose two experts */
    json_decref(j);
    char page[300];
    snprintf(page, sizeof page, "%s?from=1&to=3", path);
    assert_int_equal(http(&s, "GET", page, NULL, NULL, &j), 200);
    assert_int_equal(json_array_size(json_object_get(j, "positions")), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(j, "positions"), 0), "pos")), 1);
    json_decref(j);
    snprintf(page, sizeof page, "%s?layer=0", path);
    assert_int_equal(http(&s, "GET", page, NULL, NULL, &j), 400);
    json_decref(j);
    srv_stop(&s);

    /* a dense model's run has no experts */
    const char *dense[] = {"--data-dir", "test-output/moe-data-dense", NULL};
    assert_int_equal(system("rm -rf test-output/moe-data-dense"), 0);
    srv_start(&s, dense);
    assert_int_equal(http(&s, "POST", "/v1/completions", "{\"prompt\": \"Once\", \"max_tokens\": 2}", NULL, &j), 200);
    json_decref(j);
    newest_run_path(&s, path, sizeof path);
    strcat(path, "/experts");
    assert_int_equal(http(&s, "GET", path, NULL, NULL, &j), 400);
    assert_non_null(strstr(json_string_value(json_object_get(json_object_get(j, "error"), "message")), "not a mixture"));
    json_decref(j);
    srv_stop(&s);
}

/* /api/model says each layer's attention rule and the routing: a dense llama
 * (every layer causal, no caps, no experts), gemma2 (window 8 on layers 0 and
 * 2, logits capped at 10, final logits at 15) and the mixture-of-experts model. */
static void test_model_rules(void **state) {
    json_t *j;
    assert_int_equal(http(&main_srv, "GET", "/api/model", NULL, NULL, &j), 200);
    json_t *win = json_object_get(j, "layer_window");
    assert_int_equal(json_array_size(win), 5);
    for (size_t l = 0; l < 5; l++) assert_int_equal(json_integer_value(json_array_get(win, l)), 0);
    assert_true(json_number_value(json_object_get(j, "attn_softcap")) == 0);
    assert_true(json_number_value(json_object_get(j, "final_softcap")) == 0);
    assert_int_equal(json_integer_value(json_object_get(j, "n_expert")), 0);
    assert_int_equal(json_integer_value(json_object_get(j, "n_expert_used")), 0);
    json_decref(j);

    char buf[512];
    const char *model = tu_shared("models/tiny-gemma2.gguf", buf, sizeof buf);
    if (!model) skip();
    srv s;
    const char *args[] = {"-m", model, "--data-dir", "test-output/gemma2-data", NULL};
    assert_int_equal(system("rm -rf test-output/gemma2-data"), 0);
    srv_start(&s, args);
    assert_int_equal(http(&s, "GET", "/api/model", NULL, NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "arch")), "gemma2");
    win = json_object_get(j, "layer_window");
    assert_int_equal(json_array_size(win), 4);
    const int want[4] = {8, 0, 8, 0};
    for (size_t l = 0; l < 4; l++) assert_int_equal(json_integer_value(json_array_get(win, l)), want[l]);
    assert_true(fabs(json_number_value(json_object_get(j, "attn_softcap")) - 10) < 1e-6);
    assert_true(fabs(json_number_value(json_object_get(j, "final_softcap")) - 15) < 1e-6);
    assert_int_equal(json_integer_value(json_object_get(j, "n_expert")), 0);
    json_decref(j);
    srv_stop(&s);

    model = tu_shared("models/tiny-qwen3moe.gguf", buf, sizeof buf);
    if (!model) skip();
    const char *moe[] = {"-m", model, "--data-dir", "test-output/moe-model-data", NULL};
    assert_int_equal(system("rm -rf test-output/moe-model-data"), 0);
    srv_start(&s, moe);
    assert_int_equal(http(&s, "GET", "/api/model", NULL, NULL, &j), 200);
    assert_int_equal(json_integer_value(json_object_get(j, "n_expert")), 8);
    assert_int_equal(json_integer_value(json_object_get(j, "n_expert_used")), 2);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(j, "layer_window"), 0)), 0);
    json_decref(j);
    srv_stop(&s);
}

typedef struct reader_arg {
    int ok, total;
    const char *view; /* a stored run's view */
} reader_arg;

static void *reader_main(void *p) {
    reader_arg *a = p;
    for (int i = 0; i < 30; i++) {
        const char *path = i % 3 == 0 ? "/api/health" : i % 3 == 1 ? "/api/runs" : a->view;
        resp r = {0};
        if (http_ex(&main_srv, "GET", path, NULL, 0, NULL, &r) == CURLE_OK && r.status == 200) a->ok++;
        a->total++;
        free(r.body);
    }
    return NULL;
}

static void *stream_main(void *p) {
    resp *r = p;
    const char *body = "{\"prompt\": \"Once upon a time\", \"max_tokens\": 400}";
    http_ex(&main_srv, "POST", "/api/runs", body, strlen(body), NULL, r);
    return NULL;
}

/* Readers of stored runs and their views never wait for a generation. */
static void test_concurrent_readers(void **state) {
    pthread_t gen, th[8];
    resp gr = {0};
    reader_arg ra[8] = {{0}};
    char *id = generate(&main_srv, "Once upon a time", 12);
    char views[8][256];
    for (int i = 0; i < 8; i++) {
        snprintf(views[i], sizeof views[i], "/api/runs/%s/attention?step=%d%s", id, i, i % 2 ? "&norm=split" : "");
        ra[i].view = views[i];
    }
    assert_int_equal(pthread_create(&gen, NULL, stream_main, &gr), 0);
    for (int i = 0; i < 8; i++) assert_int_equal(pthread_create(&th[i], NULL, reader_main, &ra[i]), 0);
    for (int i = 0; i < 8; i++) pthread_join(th[i], NULL);
    pthread_join(gen, NULL);
    for (int i = 0; i < 8; i++) assert_int_equal(ra[i].ok, ra[i].total);
    assert_int_equal(gr.status, 200);
    assert_non_null(strstr(gr.body, "event: done"));
    free(gr.body);
    free(id);
}

/* Two streams at once: both finish, each with its own run. */
static void test_queue_two_streams(void **state) {
    pthread_t a, b;
    resp ra = {0}, rb = {0};
    assert_int_equal(pthread_create(&a, NULL, stream_main, &ra), 0);
    assert_int_equal(pthread_create(&b, NULL, stream_main, &rb), 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    assert_non_null(strstr(ra.body, "event: done"));
    assert_non_null(strstr(rb.body, "event: done"));
    free(ra.body);
    free(rb.body);
}

/* The full capture of `heed generate --json` for the same greedy run. */
static json_t *cli_capture(const char *prompt, int n) {
    char cmd[PATH_MAX + 256];
    snprintf(cmd, sizeof cmd, "%s generate --json --temp 0 -n %d -p '%s' 2>/dev/null", heed_bin, n, prompt);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    json_t *j = json_loadf(f, 0, NULL);
    assert_int_equal(pclose(f), 0);
    assert_non_null(j);
    return j;
}

/* Attention views equal the CLI's full capture: one (layer, head) row, and
 * the mean over every layer and head computed here from the capture. */
static void test_attention_views_match_cli(void **state) {
    char *id = generate(&main_srv, "Once upon a time", 8);
    json_t *cli = cli_capture("Once upon a time", 8);
    json_t *rows = json_object_get(json_object_get(cli, "attention"), "rows");
    int n_layer = (int)json_array_size(rows), n_head = (int)json_array_size(json_array_get(rows, 0));
    assert_int_equal(n_layer, 5);
    for (int step = 0; step < 8; step += 7) {
        int pos = 4 + step;
        char args[128];
        snprintf(args, sizeof args, "step=%d&layer=2&head=3", step);
        json_t *v = get_json(&main_srv, id, "attention?", args);
        json_t *row = json_object_get(v, "row"), *ref = json_array_get(json_array_get(json_array_get(rows, 2), 3), pos);
        assert_int_equal(json_array_size(row), pos + 1);
        for (int k = 0; k <= pos; k++)
            assert_float_equal(json_number_value(json_array_get(row, k)), json_number_value(json_array_get(ref, k)),
                               1e-5);
        json_decref(v);
        snprintf(args, sizeof args, "step=%d", step);
        v = get_json(&main_srv, id, "attention?", args);
        row = json_object_get(v, "row");
        for (int k = 0; k <= pos; k++) {
            double mean = 0;
            for (int l = 0; l < n_layer; l++)
                for (int h = 0; h < n_head; h++)
                    mean += json_number_value(json_array_get(json_array_get(json_array_get(json_array_get(rows, l), h), pos), k));
            assert_float_equal(json_number_value(json_array_get(row, k)), mean / (n_layer * n_head), 1e-5);
        }
        json_decref(v);
    }
    /* edges: the top 3 of the row, heaviest first */
    json_t *v = get_json(&main_srv, id, "attention?", "step=3&topk=3");
    json_t *edges = json_object_get(v, "edges"), *row = json_object_get(v, "row");
    assert_int_equal(json_array_size(edges), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(edges, i);
        double w = json_number_value(json_array_get(e, 1));
        assert_float_equal(w, json_number_value(json_array_get(row, (size_t)json_integer_value(json_array_get(e, 0)))), 1e-7);
        for (size_t k = 0; k < json_array_size(row); k++) /* nothing heavier was left out */
            if (json_number_value(json_array_get(row, k)) > w + 1e-7 && i == 0) fail_msg("edge 0 is not the heaviest");
    }
    json_decref(v);
    /* split normalization: BOS removed, each part sums to 1 */
    v = get_json(&main_srv, id, "attention?", "step=3&norm=split");
    json_t *sp = json_object_get(v, "split"), *in = json_object_get(sp, "prompt"), *out = json_object_get(sp, "output");
    assert_int_equal(json_array_size(in), 5);
    assert_int_equal(json_array_size(out), 3);
    assert_true(json_number_value(json_array_get(in, 0)) == 0.0);
    double si = 0, so = 0;
    for (size_t k = 0; k < 5; k++) si += json_number_value(json_array_get(in, k));
    for (size_t k = 0; k < 3; k++) so += json_number_value(json_array_get(out, k));
    assert_float_equal(si, 1.0, 1e-5);
    assert_float_equal(so, 1.0, 1e-5);
    json_decref(v);
    json_decref(cli);
    free(id);
}

/* What the web UI draws: token events with "attention_split" carry each
 * step's split view; /graph gives every step's at once; both equal the
 * per-step view, and split edges select from what is shown. The run list
 * previews the prompt. */
static void test_graph_and_split_stream(void **state) {
    const char *body = "{\"prompt\": \"Once upon a time there was\", \"max_tokens\": 6, \"temperature\": 0,"
                       " \"attention_split\": true, \"cache\": false}";
    resp r = {0};
    assert_int_equal(http_ex(&main_srv, "POST", "/api/runs", body, strlen(body), NULL, &r), CURLE_OK);
    assert_int_equal(r.status, 200);
    static sse_ev ev[MAX_EV];
    int n = sse_parse(r.body, ev, MAX_EV), n_tok = 0;
    const char *id = NULL;
    for (int i = 0; i < n; i++)
        if (!strcmp(ev[i].name, "done")) id = json_string_value(json_object_get(ev[i].data, "run_id"));
    assert_non_null(id);
    json_t *g = get_json(&main_srv, id, "graph", ""), *gl = get_json(&main_srv, id, "graph?", "layer=1&head=2");
    int np = (int)json_integer_value(json_object_get(g, "n_prompt"));
    assert_int_equal(json_integer_value(json_object_get(g, "n_output")), 6);
    for (int i = 0; i < n; i++) {
        if (strcmp(ev[i].name, "token")) continue;
        int t = n_tok++;
        json_t *sp = json_object_get(json_object_get(ev[i].data, "attention"), "split");
        assert_non_null(sp);
        char args[96];
        snprintf(args, sizeof args, "step=%d&norm=split", t);
        json_t *v = get_json(&main_srv, id, "attention?", args), *vs = json_object_get(v, "split");
        snprintf(args, sizeof args, "step=%d&norm=split&layer=1&head=2&threshold=0.05", t);
        json_t *vl = get_json(&main_srv, id, "attention?", args), *vls = json_object_get(vl, "split");
        static const char *const parts[] = {"prompt", "output"};
        for (int p = 0; p < 2; p++) {
            json_t *live = json_object_get(sp, parts[p]), *ref = json_object_get(vs, parts[p]);
            json_t *all = json_array_get(json_object_get(g, parts[p]), (size_t)t);
            json_t *one = json_array_get(json_object_get(gl, parts[p]), (size_t)t), *one_ref = json_object_get(vls, parts[p]);
            size_t len = p ? (size_t)t : (size_t)np;
            assert_int_equal(json_array_size(live), len);
            assert_int_equal(json_array_size(all), len);
            assert_int_equal(json_array_size(one), len);
            for (size_t k = 0; k < len; k++) {
                double x = json_number_value(json_array_get(ref, k));
                assert_float_equal(json_number_value(json_array_get(live, k)), x, 1e-7);
                assert_float_equal(json_number_value(json_array_get(all, k)), x, 1e-7);
                assert_float_equal(json_number_value(json_array_get(one, k)), json_number_value(json_array_get(one_ref, k)), 1e-7);
            }
        }
        /* split edges: every shown weight >= 0.05, as positions (outputs after the prompt) */
        int want = 0;
        for (int p = 0; p < 2; p++)
            for (size_t k = 0; k < json_array_size(json_object_get(vls, parts[p])); k++)
                want += json_number_value(json_array_get(json_object_get(vls, parts[p]), k)) >= 0.05;
        json_t *edges = json_object_get(vl, "edges");
        assert_int_equal(json_array_size(edges), want);
        for (size_t e = 0; e < json_array_size(edges); e++) {
            int pos = (int)json_integer_value(json_array_get(json_array_get(edges, e), 0));
            json_t *src = pos < np ? json_array_get(json_object_get(vls, "prompt"), (size_t)pos)
                                   : json_array_get(json_object_get(vls, "output"), (size_t)(pos - np));
            assert_float_equal(json_number_value(json_array_get(json_array_get(edges, e), 1)), json_number_value(src), 1e-7);
        }
        json_decref(v);
        json_decref(vl);
    }
    assert_int_equal(n_tok, 6);
    json_t *list;
    assert_int_equal(http(&main_srv, "GET", "/api/runs?limit=1", NULL, NULL, &list), 200);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(list, "runs"), 0), "preview")),
                        "Once upon a time there was");
    json_decref(list);
    json_decref(g);
    json_decref(gl);
    sse_free(ev, n);
    free(r.body);
}

/* The binary matrix: a JSON header line, then little-endian floats equal
 * to the JSON matrix (float16 within its rounding). */
static void test_attention_binary(void **state) {
    char *id = generate(&main_srv, "Once upon a time", 6);
    json_t *m = get_json(&main_srv, id, "attention?", "layer=1&agg=max&format=json");
    json_t *data = json_object_get(m, "data");
    int n = (int)json_integer_value(json_array_get(json_object_get(m, "shape"), 0));
    assert_int_equal(n, 5 + 6 - 1);
    assert_int_equal(json_array_size(data), (size_t)(n * n));
    for (int dt = 0; dt < 2; dt++) {
        char path[256];
        snprintf(path, sizeof path, "/api/runs/%s/attention?format=bin&agg=max&layer=1%s", id, dt ? "&dtype=float16" : "");
        size_t len;
        char *b = get_text(&main_srv, path, &len);
        char *nl = memchr(b, '\n', len);
        assert_non_null(nl);
        json_t *h = json_loadb(b, (size_t)(nl - b), 0, NULL);
        assert_string_equal(json_string_value(json_object_get(h, "dtype")), dt ? "float16" : "float32");
        assert_int_equal(json_integer_value(json_array_get(json_object_get(h, "shape"), 1)), n);
        size_t esz = dt ? 2 : 4, off = (size_t)(nl - b) + 1;
        assert_int_equal(len - off, (size_t)(n * n) * esz);
        for (int i = 0; i < n * n; i++) {
            double want = json_number_value(json_array_get(data, (size_t)i)), got;
            if (dt) {
                unsigned char *p = (unsigned char *)b + off + 2 * (size_t)i;
                unsigned hb = p[0] | (unsigned)p[1] << 8, e = (hb >> 10) & 31, mant = hb & 1023;
                got = e ? ldexp(1.0 + mant / 1024.0, (int)e - 15) : ldexp(mant / 1024.0, -14);
                assert_float_equal(got, want, want * 1e-3 + 1e-7);
            } else {
                float f;
                memcpy(&f, b + off + 4 * (size_t)i, 4);
                assert_true(f == (float)want);
            }
        }
        json_decref(h);
        free(b);
    }
    json_decref(m);
    free(id);
}

/* The token graph's binary form: a header line naming the range, the masses
 * (as the JSON reply writes them) and the shape, then float32 rows equal to
 * the JSON reply's (prompt part, the step's outputs, zeros after). */
static void test_graph_binary(void **state) {
    char *id = generate(&main_srv, "Once upon a time", 6);
    static const char *const sels[] = {"", "&layer=1&head=2"};
    for (int s = 0; s < 2; s++) {
        for (int rg = 0; rg < 3; rg++) {
            int from = rg == 1 ? 2 : rg == 2 ? 3 : 0, to = rg == 1 ? 5 : rg == 2 ? 3 : 6;
            char args[128], path[256];
            snprintf(args, sizeof args, "?from=%d&to=%d%s", from, to, sels[s]);
            json_t *g = get_json(&main_srv, id, "graph", args);
            int np = (int)json_integer_value(json_object_get(g, "n_prompt"));
            snprintf(path, sizeof path, "/api/runs/%s/graph%s&format=bin", id, args);
            size_t len;
            char *b = get_text(&main_srv, path, &len);
            char *nl = memchr(b, '\n', len);
            assert_non_null(nl);
            json_t *h = json_loadb(b, (size_t)(nl - b), 0, NULL);
            assert_non_null(h);
            size_t rows = (size_t)json_integer_value(json_array_get(json_object_get(h, "shape"), 0)),
                   cols = (size_t)json_integer_value(json_array_get(json_object_get(h, "shape"), 1)), off = (size_t)(nl - b) + 1;
            assert_string_equal(json_string_value(json_object_get(h, "dtype")), "float32");
            assert_int_equal(json_integer_value(json_object_get(h, "n_prompt")), np);
            assert_int_equal(json_integer_value(json_object_get(h, "n_output")), 6);
            assert_int_equal(json_integer_value(json_object_get(h, "from")), from);
            assert_int_equal(json_integer_value(json_object_get(h, "to")), to);
            assert_int_equal(rows, (size_t)(to - from));
            assert_int_equal(cols, (size_t)np + (size_t)(to > 0 ? to - 1 : 0));
            assert_int_equal(len - off, rows * cols * 4);
            assert_true(json_equal(json_object_get(h, "prompt_mass"), json_object_get(g, "prompt_mass")));
            assert_true(json_equal(json_object_get(h, "output_mass"), json_object_get(g, "output_mass")));
            for (size_t i = 0; i < rows; i++) {
                json_t *p = json_array_get(json_object_get(g, "prompt"), i), *o = json_array_get(json_object_get(g, "output"), i);
                assert_int_equal(json_array_size(o), (size_t)from + i);
                for (size_t k = 0; k < cols; k++) {
                    float f;
                    memcpy(&f, b + off + 4 * (i * cols + k), 4);
                    /* the prompt part, the step's outputs, then zeros */
                    double want = 0.0;
                    if (k < (size_t)np) want = json_number_value(json_array_get(p, k));
                    else if (k < (size_t)np + (size_t)from + i) want = json_number_value(json_array_get(o, k - (size_t)np));
                    if (f != (float)want) fail_msg("graph%s: row %zu col %zu: %.9g in binary, %.9g in JSON", args, i, k, f, want);
                }
            }
            json_decref(h);
            json_decref(g);
            free(b);
        }
    }
    /* the JSON reply is still the default; a bad format is a clear 400 */
    json_t *g = get_json(&main_srv, id, "graph", ""), *e;
    assert_int_equal(json_array_size(json_object_get(g, "prompt")), 6);
    json_decref(g);
    char path[256];
    snprintf(path, sizeof path, "/api/runs/%s/graph?format=csv", id);
    assert_int_equal(http(&main_srv, "GET", path, NULL, NULL, &e), 400);
    assert_string_equal(json_string_value(json_object_get(json_object_get(e, "error"), "param")), "format");
    json_decref(e);
    free(id);
}

static void test_lens_stats_and_paging(void **state) {
    char *id = generate(&main_srv, "Once upon a time", 5);
    json_t *l = get_json(&main_srv, id, "logit-lens", "");
    json_t *steps = json_object_get(l, "steps");
    assert_int_equal(json_array_size(steps), 5);
    for (size_t t = 0; t < 5; t++) {
        json_t *layers = json_object_get(json_array_get(steps, t), "layers");
        assert_int_equal(json_array_size(layers), 5);
        json_t *last = json_array_get(layers, 4);
        assert_true(json_is_true(json_object_get(last, "match"))); /* the last layer is the model's own choice */
        assert_int_equal(json_array_size(json_object_get(last, "top")), 5);
    }
    json_decref(l);
    json_t *st = get_json(&main_srv, id, "stats", "");
    assert_int_equal(json_array_size(json_object_get(st, "tokens")), 5 + 5 - 1);
    assert_int_equal(json_array_size(json_object_get(st, "head_types")), 5 * 8);
    assert_int_equal(json_array_size(json_object_get(st, "input_importance")), 5);
    json_t *t0 = json_array_get(json_object_get(st, "tokens"), 3);
    assert_int_equal(json_array_size(json_object_get(t0, "fingerprint")), 20);
    assert_non_null(json_string_value(json_object_get(t0, "zone")));
    json_decref(st);

    char *id2 = generate(&main_srv, "Once", 2);
    json_t *list;
    assert_int_equal(http(&main_srv, "GET", "/api/runs?limit=1", NULL, NULL, &list), 200);
    assert_int_equal(json_array_size(json_object_get(list, "runs")), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(list, "runs"), 0), "id")), id2);
    assert_true(json_integer_value(json_object_get(list, "total")) >= 2);
    json_decref(list);
    assert_int_equal(http(&main_srv, "GET", "/api/runs?limit=1&offset=1", NULL, NULL, &list), 200);
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(list, "runs"), 0), "id")), id);
    json_decref(list);

    /* errors: unknown run, bad arguments named */
    const char *bad[][2] = {{"attention?step=5", "step"}, {"attention?step=-1", "step"}, {"attention?layer=5", "layer"},
                            {"attention?head=8", "head"}, {"attention?head=x", "head"}, {"attention?agg=sum", "agg"},
                            {"attention?norm=max", "norm"}, {"attention?format=xml", "format"},
                            {"attention?step=1&threshold=2", "threshold"}, {"stats?layer=9", "layer"}};
    char path[256];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(path, sizeof path, "/api/runs/%s/%s", id, bad[i][0]);
        expect_error(&main_srv, "GET", path, NULL, 400, bad[i][1]);
    }
    expect_error(&main_srv, "GET", "/api/runs/run_nope/attention", NULL, 404, "id");
    expect_error(&main_srv, "GET", "/api/runs/run_nope/logit-lens", NULL, 404, "id");
    expect_error(&main_srv, "GET", "/api/runs/run_nope/stats", NULL, 404, "id");
    expect_error(&main_srv, "GET", "/api/runs?limit=0", NULL, 400, "limit");
    /* deleted: the views go too */
    snprintf(path, sizeof path, "/api/runs/%s", id2);
    assert_int_equal(http(&main_srv, "DELETE", path, NULL, NULL, NULL), 200);
    snprintf(path, sizeof path, "/api/runs/%s/attention?step=0", id2);
    expect_error(&main_srv, "GET", path, NULL, 404, "id");
    free(id);
    free(id2);
}

/* Runs survive a restart: the run and a view read back equal. */
static void test_restart_keeps_runs(void **state) {
    if (system("rm -rf test-output/serve-restart")) fail_msg("rm");
    const char *args[] = {"--data-dir", "test-output/serve-restart", "--cache-runs", "1", NULL};
    srv s;
    srv_start(&s, args);
    char *id = generate(&s, "Once upon a time", 6);
    char *other = generate(&s, "Once", 2); /* evicts the first from the cache of one */
    char p_run[256], p_view[256];
    snprintf(p_run, sizeof p_run, "/api/runs/%s", id);
    snprintf(p_view, sizeof p_view, "/api/runs/%s/attention?step=4&layer=1&head=2", id);
    char *run1 = get_text(&s, p_run, NULL), *view1 = get_text(&s, p_view, NULL);
    srv_stop(&s);
    srv_start(&s, args);
    char *run2 = get_text(&s, p_run, NULL), *view2 = get_text(&s, p_view, NULL);
    assert_string_equal(run1, run2);
    assert_string_equal(view1, view2);
    json_t *list;
    assert_int_equal(http(&s, "GET", "/api/runs", NULL, NULL, &list), 200);
    assert_int_equal(json_integer_value(json_object_get(list, "total")), 2);
    json_decref(list);
    srv_stop(&s);
    free(run1);
    free(run2);
    free(view1);
    free(view2);
    free(id);
    free(other);
}

/* Static files: the embedded page, and --web-dir with every way out of the
 * root refused (dot segments, encoded dots, symlinks, dotfiles). */
static void test_static_files(void **state) {
    resp r = {0};
    assert_int_equal(http_ex(&main_srv, "GET", "/index.html", NULL, 0, NULL, &r), CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "<h1>heed</h1>"));
    free(r.body);
    assert_int_equal(http(&main_srv, "GET", "/missing.js", NULL, NULL, NULL), 404);
    assert_int_equal(http(&main_srv, "GET", "/api/missing", NULL, NULL, NULL), 404);

    assert_int_equal(system("rm -rf test-output/web test-output/secret.txt && mkdir -p test-output/web/sub && "
                            "printf 'hello-web' > test-output/web/index.html && "
                            "printf 'var x = 1;' > test-output/web/app.js && "
                            "printf 'p{}' > test-output/web/sub/x.css && printf 'h' > test-output/web/.hidden && "
                            "printf 'top-secret' > test-output/secret.txt && "
                            "ln -s ../secret.txt test-output/web/link.txt"),
                     0);
    srv s;
    const char *args[] = {"--web-dir", "test-output/web", "--data-dir", "test-output/web-data", NULL};
    srv_start(&s, args);
    static const struct { const char *path; long status; const char *body; } cases[] = {
        {"/", 200, "hello-web"},
        {"/app.js", 200, "var x = 1;"},
        {"/sub/x.css", 200, "p{}"},
        {"/../secret.txt", 404, NULL},
        {"/%2e%2e/secret.txt", 404, NULL},
        {"/sub/../../secret.txt", 404, NULL},
        {"/sub/%2E%2E/app.js", 404, NULL},
        {"/link.txt", 404, NULL},
        {"/.hidden", 404, NULL},
        {"//etc/passwd", 404, NULL},
        {"/sub", 404, NULL},
        {"/nope.html", 404, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        resp q = {0};
        assert_int_equal(http_ex(&s, "GET", cases[i].path, NULL, 0, NULL, &q), CURLE_OK);
        if (q.status != cases[i].status) fail_msg("GET %s: %ld, want %ld", cases[i].path, q.status, cases[i].status);
        if (cases[i].body) assert_string_equal(q.body, cases[i].body);
        else assert_null(q.body ? strstr(q.body, "top-secret") : NULL);
        free(q.body);
    }
    srv_stop(&s);
}

/* POSTs a run and returns its done event's data (owned by the caller) and
 * the output ids of its token events. */
static json_t *post_run(const char *body, int32_t *ids, int *n_ids) {
    resp r = {0};
    assert_int_equal(http_ex(&main_srv, "POST", "/api/runs", body, strlen(body), NULL, &r), CURLE_OK);
    if (r.status != 200) fail_msg("POST /api/runs %s: %ld %s", body, r.status, r.body ? r.body : "");
    static sse_ev ev[MAX_EV];
    int n = sse_parse(r.body, ev, MAX_EV);
    json_t *done = NULL;
    *n_ids = 0;
    assert_string_equal(ev[0].name, "queued");
    for (int i = 0; i < n; i++) {
        if (!strcmp(ev[i].name, "token")) ids[(*n_ids)++] = (int32_t)json_integer_value(json_object_get(ev[i].data, "id"));
        if (!strcmp(ev[i].name, "done")) done = json_incref(ev[i].data);
    }
    sse_free(ev, n);
    free(r.body);
    assert_non_null(done);
    return done;
}

/* The deep views' routes: heatmap windows (exact and pooled), rows and
 * columns of any position, stored candidates, token bytes, and branches. */
static void test_heatmap_candidates_branch(void **state) {
    char *id = generate(&main_srv, "Once upon a time", 8);
    json_t *m = get_json(&main_srv, id, "attention?", "layer=1&format=json");
    int n = (int)json_integer_value(json_array_get(json_object_get(m, "shape"), 0));
    json_t *data = json_object_get(m, "data");
#define M(q, k) json_number_value(json_array_get(data, (size_t)(q) * (size_t)n + (size_t)(k)))
    /* exact window */
    json_t *h = get_json(&main_srv, id, "heatmap?", "layer=1&q0=2&q1=6&k0=1&k1=5");
    assert_true(json_is_true(json_object_get(h, "exact")));
    assert_int_equal(json_integer_value(json_object_get(h, "rows")), 4);
    assert_int_equal(json_integer_value(json_object_get(h, "cols")), 4);
    for (int q = 2; q < 6; q++)
        for (int k = 1; k < 5; k++)
            assert_float_equal(json_number_value(json_array_get(json_object_get(h, "data"), (size_t)((q - 2) * 4 + k - 1))),
                               M(q, k), 1e-7);
    json_decref(h);
    /* pooled: max and causal mean of each block */
    for (int pool = 0; pool < 2; pool++) {
        h = get_json(&main_srv, id, "heatmap?", pool ? "layer=1&size=3&pool=mean" : "layer=1&size=3");
        int bq = (int)json_integer_value(json_object_get(h, "bq")), cols = (int)json_integer_value(json_object_get(h, "cols"));
        assert_int_equal(bq, (n + 2) / 3);
        for (int r = 0; r < (int)json_integer_value(json_object_get(h, "rows")); r++)
            for (int c = 0; c < cols; c++) {
                double want = 0;
                int cnt = 0;
                for (int q = r * bq; q < (r + 1) * bq && q < n; q++)
                    for (int k = c * bq; k < (c + 1) * bq && k < n && k <= q; k++) {
                        want = pool ? want + M(q, k) : (M(q, k) > want ? M(q, k) : want);
                        cnt++;
                    }
                if (pool && cnt) want /= cnt;
                assert_float_equal(json_number_value(json_array_get(json_object_get(h, "data"), (size_t)(r * cols + c))),
                                   want, 1e-6);
            }
        json_decref(h);
    }
    /* a row and a column of any position */
    json_t *r = get_json(&main_srv, id, "attention?", "layer=1&pos=5"), *c = get_json(&main_srv, id, "attention?", "layer=1&key=3");
    assert_int_equal(json_array_size(json_object_get(r, "row")), 6);
    for (int k = 0; k <= 5; k++) assert_float_equal(json_number_value(json_array_get(json_object_get(r, "row"), (size_t)k)), M(5, k), 1e-7);
    assert_int_equal(json_array_size(json_object_get(c, "col")), (size_t)(n - 3));
    for (int q = 3; q < n; q++) assert_float_equal(json_number_value(json_array_get(json_object_get(c, "col"), (size_t)(q - 3))), M(q, 3), 1e-7);
    json_decref(r);
    json_decref(c);
#undef M
    json_decref(m);
    char path[256];
    snprintf(path, sizeof path, "/api/runs/%s/heatmap?q0=4&q1=4", id);
    expect_error(&main_srv, "GET", path, NULL, 400, "q1");
    snprintf(path, sizeof path, "/api/runs/%s/attention?pos=2&key=1", id);
    expect_error(&main_srv, "GET", path, NULL, 400, "pos");
    snprintf(path, sizeof path, "/api/runs/%s/candidates", id);
    expect_error(&main_srv, "GET", path, NULL, 400, "step");

    /* candidates: the model's distribution, best first, the chosen one as streamed */
    json_t *doc;
    snprintf(path, sizeof path, "/api/runs/%s", id);
    assert_int_equal(http(&main_srv, "GET", path, NULL, NULL, &doc), 200);
    json_t *cand = get_json(&main_srv, id, "candidates?", "step=2"), *cl = json_object_get(cand, "candidates");
    json_t *st = json_array_get(json_object_get(doc, "steps"), 2);
    assert_int_equal(json_integer_value(json_object_get(cand, "chosen")), json_integer_value(json_object_get(st, "id")));
    assert_int_equal(json_array_size(cl), 20);
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(json_integer_value(json_object_get(json_array_get(cl, i), "id")),
                         json_integer_value(json_object_get(json_array_get(json_object_get(st, "top"), i), "id")));
    for (size_t i = 1; i < 20; i++)
        assert_true(json_number_value(json_object_get(json_array_get(cl, i), "logit")) <=
                    json_number_value(json_object_get(json_array_get(cl, i - 1), "logit")));
    json_decref(cand);

    /* token bytes */
    json_t *tk;
    const char *tb = "{\"text\": \"Once \\u00e9\"}";
    assert_int_equal(http(&main_srv, "POST", "/api/tokenize", tb, NULL, &tk), 200);
    json_t *toks = json_object_get(tk, "tokens"), *last = json_array_get(toks, json_array_size(toks) - 1);
    assert_int_equal(json_array_size(json_object_get(json_array_get(toks, 0), "bytes")), 0); /* BOS: none */
    assert_int_equal(json_integer_value(json_array_get(json_object_get(last, "bytes"), 0)), 0xc3);
    assert_int_equal(json_integer_value(json_array_get(json_object_get(last, "bytes"), 1)), 0xa9);
    json_decref(tk);

    /* branches: the prefix is the earlier run's, the token at the step is forced */
    json_t *outs = json_object_get(doc, "output_ids");
    int32_t forced = (int32_t)json_integer_value(json_object_get(json_array_get(json_object_get(st, "top"), 1), "id"));
    char body[512];
    snprintf(body, sizeof body, "{\"branch\": {\"run\": \"%s\", \"step\": 2, \"token\": %d}, \"max_tokens\": 6, \"temperature\": 0}", id, forced);
    int32_t ids[64];
    int n_ids;
    json_t *done = post_run(body, ids, &n_ids);
    assert_int_equal(n_ids, 6);
    assert_int_equal(ids[0], json_integer_value(json_array_get(outs, 0)));
    assert_int_equal(ids[1], json_integer_value(json_array_get(outs, 1)));
    assert_int_equal(ids[2], forced);
    json_t *bdoc;
    snprintf(path, sizeof path, "/api/runs/%s", json_string_value(json_object_get(done, "run_id")));
    assert_int_equal(http(&main_srv, "GET", path, NULL, NULL, &bdoc), 200);
    assert_string_equal(json_string_value(json_object_get(bdoc, "prompt")), "Once upon a time");
    assert_string_equal(json_string_value(json_object_get(json_object_get(bdoc, "branch"), "run")), id);
    assert_true(json_equal(json_object_get(bdoc, "prompt_ids"), json_object_get(doc, "prompt_ids")));
    json_decref(bdoc);
    json_decref(done);
    /* without a token, greedy from the same prefix gives the earlier run back */
    snprintf(body, sizeof body, "{\"branch\": {\"run\": \"%s\", \"step\": 3}, \"max_tokens\": 8, \"temperature\": 0}", id);
    done = post_run(body, ids, &n_ids);
    for (int i = 0; i < 8; i++) assert_int_equal(ids[i], json_integer_value(json_array_get(outs, (size_t)i)));
    json_decref(done);
    expect_error(&main_srv, "POST", "/api/runs", "{\"branch\": {\"run\": \"run_nope\", \"step\": 1}}", 404, "id");
    snprintf(body, sizeof body, "{\"branch\": {\"run\": \"%s\", \"step\": 99}}", id);
    expect_error(&main_srv, "POST", "/api/runs", body, 400, "branch");
    snprintf(body, sizeof body, "{\"branch\": {\"run\": \"%s\", \"step\": 1, \"token\": -3}}", id);
    expect_error(&main_srv, "POST", "/api/runs", body, 400, "branch");
    snprintf(body, sizeof body, "{\"branch\": {\"run\": \"%s\", \"step\": 5}, \"max_tokens\": 3}", id);
    expect_error(&main_srv, "POST", "/api/runs", body, 400, "max_tokens");
    expect_error(&main_srv, "POST", "/api/runs", "{\"branch\": \"run_x\"}", 400, "branch");
    json_decref(doc);
    free(id);
}

/* The request cache: the same prompt tokens and parameters replay the
 * stored run; a whitespace variant that tokenizes differently, any other
 * parameter, or "cache": false, generates. */
static void test_request_cache(void **state) {
    int32_t a[64], b[64], c[64];
    int na, nb, nc;
    json_t *d1 = post_run("{\"prompt\": \"Lily and Ben went to the park\", \"max_tokens\": 6}", a, &na);
    json_t *d2 = post_run("{\"prompt\": \"Lily and Ben went to the park\", \"max_tokens\": 6}", b, &nb);
    json_t *d2w = post_run("{\"prompt\": \"  Lily and  Ben went\\tto the park \", \"max_tokens\": 6}", c, &nc);
    assert_false(json_is_true(json_object_get(d2w, "cached")));
    assert_string_not_equal(json_string_value(json_object_get(d2w, "run_id")),
                            json_string_value(json_object_get(d1, "run_id")));
    json_decref(d2w);
    assert_false(json_is_true(json_object_get(d1, "cached")));
    assert_true(json_is_true(json_object_get(d2, "cached")));
    assert_string_equal(json_string_value(json_object_get(d1, "run_id")), json_string_value(json_object_get(d2, "run_id")));
    assert_int_equal(na, 6);
    assert_int_equal(nb, na);
    assert_memory_equal(a, b, sizeof(int32_t) * (size_t)na);

    json_t *d3 = post_run("{\"prompt\": \"Lily and Ben went to the park\", \"max_tokens\": 7}", c, &nc);
    assert_false(json_is_true(json_object_get(d3, "cached")));
    assert_int_equal(nc, 7);
    json_t *d4 = post_run("{\"prompt\": \"Lily and Ben went to the park\", \"max_tokens\": 6, \"cache\": false}", c, &nc);
    assert_false(json_is_true(json_object_get(d4, "cached")));
    assert_string_not_equal(json_string_value(json_object_get(d4, "run_id")), json_string_value(json_object_get(d1, "run_id")));
    assert_memory_equal(a, c, sizeof(int32_t) * (size_t)na); /* greedy: the same tokens anyway */
    expect_error(&main_srv, "POST", "/api/runs", "{\"prompt\": \"x\", \"cache\": 3}", 400, "cache");

    /* a deleted run is generated again, not replayed */
    char path[128];
    snprintf(path, sizeof path, "/api/runs/%s", json_string_value(json_object_get(d4, "run_id")));
    json_t *d5 = post_run("{\"prompt\": \"Lily and Ben went to the park\", \"max_tokens\": 6}", c, &nc);
    assert_true(json_is_true(json_object_get(d5, "cached")));
    snprintf(path, sizeof path, "/api/runs/%s", json_string_value(json_object_get(d5, "run_id")));
    assert_int_equal(http(&main_srv, "DELETE", path, NULL, NULL, NULL), 200);
    json_t *d6 = post_run("{\"prompt\": \"Lily and Ben went to the park\", \"max_tokens\": 6}", c, &nc);
    assert_false(json_is_true(json_object_get(d6, "cached")));
    json_decref(d1);
    json_decref(d2);
    json_decref(d3);
    json_decref(d4);
    json_decref(d5);
    json_decref(d6);
}

/* "interventions": an ablated head changes the run as the CLI's --ablate
 * does, the run's document says what was done, and bad items are 400s
 * naming "interventions". */
/* A run of "Once upon a time" made through the API with these
 * interventions (a JSON list) and the CLI's run with these flags give the
 * same first step; returns the API run's document (the caller's). */
static json_t *api_matches_cli(const char *interventions, const char *cli_flags) {
    int32_t ids[16];
    int n_ids;
    char body[1024], path[160], cmd[PATH_MAX + 512];
    snprintf(body, sizeof body, "{\"prompt\": \"Once upon a time\", \"max_tokens\": 2, \"cache\": false, "
             "\"interventions\": %s}", interventions);
    json_t *d = post_run(body, ids, &n_ids), *doc;
    snprintf(path, sizeof path, "/api/runs/%s", json_string_value(json_object_get(d, "run_id")));
    assert_int_equal(http(&main_srv, "GET", path, NULL, NULL, &doc), 200);
    double p_api = json_number_value(json_object_get(json_array_get(json_object_get(doc, "steps"), 0), "prob"));
    snprintf(cmd, sizeof cmd, "%s generate -p 'Once upon a time' -n 1 --json --attention none --top-k 40 "
                              "--top-p 0.95 --min-p 0.05 %s > test-output/iv.json", heed_bin, cli_flags);
    assert_int_equal(system(cmd), 0);
    json_t *cli = json_load_file("test-output/iv.json", 0, NULL);
    assert_non_null(cli);
    double p_cli = json_number_value(json_object_get(json_array_get(json_object_get(cli, "steps"), 0), "prob"));
    assert_float_equal(p_api, p_cli, 1e-6);
    json_decref(cli);
    json_decref(d);
    return doc;
}

static void test_interventions(void **state) {
    int32_t ids[16];
    int n_ids;
    char path[160];
    json_t *d;
    json_t *doc = api_matches_cli("[{\"type\": \"ablate\", \"layer\": 2, \"head\": 5}, "
                                  "{\"type\": \"scale\", \"layer\": 1, \"head\": 1, \"factor\": 0.5}]",
                                  "--ablate 2:5 --scale 1:1:0.5");
    json_t *iv = json_object_get(doc, "interventions");
    assert_int_equal(json_array_size(iv), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(iv, 0), "type")), "ablate");
    json_decref(doc);
    /* a knockout, recorded in the run's document */
    doc = api_matches_cli("[{\"type\": \"knockout\", \"layer\": 1, \"head\": null, \"queries\": [2, 4], "
                          "\"keys\": [0, 1]}]", "--knockout '1:*:2-4:0-1'");
    assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(doc, "interventions"), 0),
                                                          "type")), "knockout");
    json_decref(doc);
    /* mean ablation */
    json_decref(api_matches_cli("[{\"type\": \"ablate_mean\", \"layer\": 2, \"head\": 3}]", "--ablate-mean 2:3"));
    expect_error(&main_srv, "POST", "/api/runs",
                 "{\"prompt\": \"x\", \"interventions\": [{\"type\": \"ablate_mean\", \"layer\": 0, \"head\": 99}]}",
                 400, "interventions");
    /* steering with alpha 0 and patching a run with its own rows: the plain run's first step */
    json_t *plain = post_run("{\"prompt\": \"Once upon a time\", \"max_tokens\": 2, \"cache\": false}", ids, &n_ids);
    const char *plain_id = json_string_value(json_object_get(plain, "run_id"));
    snprintf(path, sizeof path, "/api/runs/%s", plain_id);
    assert_int_equal(http(&main_srv, "GET", path, NULL, NULL, &doc), 200);
    double p_plain = json_number_value(json_object_get(json_array_get(json_object_get(doc, "steps"), 0), "prob"));
    json_decref(doc);
    char body[4096];
    int len = snprintf(body, sizeof body, "{\"prompt\": \"Once upon a time\", \"max_tokens\": 2, \"cache\": false, "
                       "\"interventions\": [{\"type\": \"patch\", \"run\": \"%s\", \"layer\": 3, \"pos\": 4}, "
                       "{\"type\": \"steer\", \"layer\": 1, \"alpha\": 0, \"vector\": [", plain_id);
    for (int i = 0; i < 64; i++) len += snprintf(body + len, sizeof body - (size_t)len, "%s%d", i ? "," : "", i % 5);
    snprintf(body + len, sizeof body - (size_t)len, "]}]}");
    d = post_run(body, ids, &n_ids);
    snprintf(path, sizeof path, "/api/runs/%s", json_string_value(json_object_get(d, "run_id")));
    assert_int_equal(http(&main_srv, "GET", path, NULL, NULL, &doc), 200);
    assert_true(json_number_value(json_object_get(json_array_get(json_object_get(doc, "steps"), 0), "prob")) == p_plain);
    json_decref(doc);
    json_decref(d);
    char bad[512];
    snprintf(bad, sizeof bad, "{\"prompt\": \"x\", \"interventions\": [{\"type\": \"patch\", \"run\": \"%s\", "
             "\"layer\": 1, \"pos\": 999}]}", plain_id);
    expect_error(&main_srv, "POST", "/api/runs", bad, 400, "interventions");
    json_decref(plain);
    expect_error(&main_srv, "POST", "/api/runs",
                 "{\"prompt\": \"x\", \"interventions\": [{\"type\": \"patch\", \"run\": \"run_nope\", \"layer\": 1, "
                 "\"pos\": 0}]}", 400, "interventions");
    expect_error(&main_srv, "POST", "/api/runs",
                 "{\"prompt\": \"x\", \"interventions\": [{\"type\": \"steer\", \"layer\": 1, \"alpha\": 1, "
                 "\"vector\": [1, 2]}]}", 400, "interventions");
    expect_error(&main_srv, "POST", "/api/runs",
                 "{\"prompt\": \"x\", \"interventions\": [{\"type\": \"knockout\", \"queries\": [3, 1], "
                 "\"keys\": [0, 0]}]}", 400, "interventions");
    expect_error(&main_srv, "POST", "/api/runs",
                 "{\"prompt\": \"x\", \"interventions\": [{\"type\": \"knockout\", \"layer\": 99, \"queries\": [0, 1], "
                 "\"keys\": [0, 0]}]}", 400, "interventions");
    expect_error(&main_srv, "POST", "/api/runs", "{\"prompt\": \"x\", \"interventions\": 3}", 400, "interventions");
    expect_error(&main_srv, "POST", "/api/runs",
                 "{\"prompt\": \"x\", \"interventions\": [{\"type\": \"knockout\"}]}", 400, "interventions");
    expect_error(&main_srv, "POST", "/v1/completions",
                 "{\"prompt\": \"x\", \"interventions\": [{\"type\": \"ablate\", \"layer\": 5, \"head\": 0}]}",
                 400, "interventions");
    expect_error(&main_srv, "POST", "/api/runs",
                 "{\"prompt\": \"x\", \"interventions\": [{\"type\": \"scale\", \"layer\": 0, \"head\": 0}]}",
                 400, "interventions");
}

/* The effects view: a run against itself has no effect; an intervened
 * branch from step 0 has non-negative KL lower bounds, the base's chosen
 * token's probability in both, and the first step where the choices part;
 * another prompt or no base is refused. */
static void test_effects_view(void **state) {
    int32_t ids[16];
    int n_ids;
    json_t *a = post_run("{\"prompt\": \"Once upon a time\", \"max_tokens\": 6, \"cache\": false}", ids, &n_ids);
    const char *aid = json_string_value(json_object_get(a, "run_id"));
    char path[256], body[512];
    snprintf(path, sizeof path, "/api/runs/%s/effects?base=%s", aid, aid);
    json_t *j;
    assert_int_equal(http(&main_srv, "GET", path, NULL, NULL, &j), 200);
    assert_int_equal(json_integer_value(json_object_get(j, "n_steps")), 6);
    assert_true(json_is_null(json_object_get(j, "first_diff")));
    for (size_t t = 0; t < 6; t++) {
        json_t *st = json_array_get(json_object_get(j, "steps"), t);
        assert_true(json_real_value(json_object_get(st, "kl_lower_bound")) == 0);
        assert_true(json_real_value(json_object_get(st, "base_token_prob")) ==
                    json_real_value(json_object_get(st, "base_token_prob_base")));
    }
    json_decref(j);
    snprintf(body, sizeof body, "{\"branch\": {\"run\": \"%s\", \"step\": 0}, \"max_tokens\": 6, \"cache\": false, "
             "\"interventions\": [{\"type\": \"knockout\", \"layer\": null, \"head\": null, \"queries\": [1, 100], "
             "\"keys\": [0, 0]}]}", aid);
    json_t *b = post_run(body, ids, &n_ids);
    snprintf(path, sizeof path, "/api/runs/%s/effects?base=%s", json_string_value(json_object_get(b, "run_id")), aid);
    assert_int_equal(http(&main_srv, "GET", path, NULL, NULL, &j), 200);
    double kl0 = json_real_value(json_object_get(json_array_get(json_object_get(j, "steps"), 0), "kl_lower_bound"));
    printf("  knocking out attention to BOS everywhere: KL lower bound at step 0 = %.4f, first differing step %s\n", kl0,
           json_is_null(json_object_get(j, "first_diff")) ? "none" : "found");
    assert_true(kl0 > 0); /* attention to BOS matters in this model */
    for (size_t t = 0; t < json_array_size(json_object_get(j, "steps")); t++)
        assert_true(json_real_value(json_object_get(json_array_get(json_object_get(j, "steps"), t), "kl_lower_bound")) >= 0);
    json_decref(j);
    json_t *c = post_run("{\"prompt\": \"Lily and Ben\", \"max_tokens\": 2, \"cache\": false}", ids, &n_ids);
    snprintf(path, sizeof path, "/api/runs/%s/effects?base=%s", json_string_value(json_object_get(c, "run_id")), aid);
    expect_error(&main_srv, "GET", path, NULL, 400, "base");
    snprintf(path, sizeof path, "/api/runs/%s/effects", aid);
    expect_error(&main_srv, "GET", path, NULL, 400, "base");
    snprintf(path, sizeof path, "/api/runs/%s/effects?base=run_nope", aid);
    assert_int_equal(http(&main_srv, "GET", path, NULL, NULL, NULL), 404);
    /* the rollout of position 3: four weights summing to 1 */
    snprintf(path, sizeof path, "/api/runs/%s/rollout?pos=3", aid);
    assert_int_equal(http(&main_srv, "GET", path, NULL, NULL, &j), 200);
    json_t *ro = json_object_get(j, "rollout");
    assert_int_equal(json_array_size(ro), 4);
    double sum = 0;
    for (size_t k = 0; k < 4; k++) sum += json_real_value(json_array_get(ro, k));
    assert_true(fabs(sum - 1) < 1e-5);
    json_decref(j);
    snprintf(path, sizeof path, "/api/runs/%s/rollout?pos=999", aid);
    expect_error(&main_srv, "GET", path, NULL, 400, "pos");
    json_decref(a), json_decref(b), json_decref(c);
}

/* The value of the first sample line of /metrics starting with prefix, or -1. */
static double metric(const char *text, const char *prefix) {
    for (const char *l = text; *l;) {
        const char *e = strchr(l, '\n');
        if (!e) break;
        if (!strncmp(l, prefix, strlen(prefix))) {
            const char *sp = e;
            while (sp > l && sp[-1] != ' ') sp--;
            return atof(sp);
        }
        l = e + 1;
    }
    return -1;
}

static char *get_metrics(void) {
    resp r = {0};
    assert_int_equal(http_ex(&main_srv, "GET", "/metrics", NULL, 0, NULL, &r), CURLE_OK);
    assert_int_equal(r.status, 200);
    /* every line is a comment or "name{labels} value" / "name value" */
    for (char *l = r.body; *l;) {
        char *e = strchr(l, '\n');
        assert_non_null(e);
        if (*l != '#') {
            const char *sp = e;
            while (sp > l && sp[-1] != ' ') sp--;
            assert_true(sp > l);
            char *end;
            strtod(sp, &end);
            assert_true(end == e);
            for (const char *c = l; c < sp - 1 && *c != '{'; c++) assert_true(*c == '_' || (*c >= 'a' && *c <= 'z'));
        }
        l = e + 1;
    }
    return r.body;
}

/* A run downloaded as a run file loads with its tokens; as HTML it is the
 * offline viewer; a bad format or run is refused. */
static void test_download(void **state) {
    int32_t ids[16];
    int n_ids;
    json_t *d = post_run("{\"prompt\": \"Once upon a time\", \"max_tokens\": 4, \"cache\": false}", ids, &n_ids);
    const char *id = json_string_value(json_object_get(d, "run_id"));
    char path[256];
    snprintf(path, sizeof path, "/api/runs/%s/download?format=run", id);
    resp r = {0};
    assert_int_equal(http_ex(&main_srv, "GET", path, NULL, 0, NULL, &r), CURLE_OK);
    assert_int_equal(r.status, 200);
    FILE *f = fopen("test-output/downloaded.heedrun", "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(r.body, 1, r.len, f), r.len);
    fclose(f);
    free(r.body);
    heed_run *run;
    char err[256];
    if (heed_run_load("test-output/downloaded.heedrun", &run, err, sizeof err)) fail_msg("%s", err);
    heed_run_info ri;
    heed_run_get_info(run, &ri);
    assert_int_equal(ri.n_output, n_ids); /* the streamed tokens are the run's outputs */
    for (int i = 0; i < n_ids; i++) {
        int32_t t;
        heed_run_token(run, ri.n_prompt + i, &t, NULL);
        assert_int_equal(t, ids[i]);
    }
    heed_run_free(run);
    snprintf(path, sizeof path, "/api/runs/%s/download?format=html", id);
    memset(&r, 0, sizeof r);
    assert_int_equal(http_ex(&main_srv, "GET", path, NULL, 0, NULL, &r), CURLE_OK);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "heed-data"));
    free(r.body);
    snprintf(path, sizeof path, "/api/runs/%s/download?format=zip", id);
    expect_error(&main_srv, "GET", path, NULL, 400, "format");
    assert_int_equal(http(&main_srv, "GET", "/api/runs/run_nope/download", NULL, NULL, NULL), 404);
    json_decref(d);
}

/* /metrics: Prometheus text, counters that move with requests and generations. */
static void test_metrics(void **state) {
    char *before = get_metrics();
    json_t *j;
    assert_int_equal(http(&main_srv, "POST", "/v1/completions", "{\"prompt\": \"Once\", \"max_tokens\": 5, "
                                                                  "\"cache\": false}", NULL, &j), 200);
    json_decref(j);
    assert_int_equal(http(&main_srv, "GET", "/api/no-such-route", NULL, NULL, NULL), 404);
    char *after = get_metrics();
    assert_true(metric(after, "heed_generations_total ") >= metric(before, "heed_generations_total ") + 1);
    assert_true(metric(after, "heed_tokens_generated_total ") >= metric(before, "heed_tokens_generated_total ") + 5);
    const char *done = "heed_requests_total{method=\"POST\",route=\"/v1/completions\",status=\"200\"}";
    assert_true(metric(after, done) >= (metric(before, done) > 0 ? metric(before, done) : 0) + 1);
    assert_true(metric(after, "heed_requests_total{method=\"\",route=\"other\",status=\"404\"}") >= 1);
    assert_true(metric(after, "heed_time_to_first_token_seconds_count ") >= 1);
    assert_true(metric(after, "heed_runs_stored ") >= 1);
    free(before);
    free(after);
}

static void test_api_key_and_cors(void **state) {
    srv s;
    const char *args[] = {"--api-key", "sekrit", "--cors", "http://example.test", "--max-prompt", "8",
                          "--max-tokens", "4", "--data-dir", "test-output/serve-data", NULL};
    srv_start(&s, args);
    expect_error(&s, "GET", "/api/health", NULL, 401, NULL);
    assert_int_equal(http(&s, "GET", "/api/health", NULL, "Authorization: Bearer wrong", NULL), 401);
    assert_int_equal(http(&s, "GET", "/api/health", NULL, "Authorization: Bearer sekri", NULL), 401);
    assert_int_equal(http(&s, "GET", "/api/health", NULL, "Authorization: Bearer sekrit", NULL), 200);
    assert_int_equal(http(&s, "GET", "/", NULL, NULL, NULL), 200); /* static: open */
    assert_int_equal(http(&s, "OPTIONS", "/api/runs", NULL, NULL, NULL), 204);

    /* 422: over --max-prompt, naming the limit */
    json_t *j;
    const char *key = "Authorization: Bearer sekrit";
    long st = http(&s, "POST", "/api/runs", "{\"prompt\": \"Once upon a time there was a little girl named Lily\"}",
                   key, &j);
    assert_int_equal(st, 422);
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    assert_non_null(strstr(msg, "8"));
    assert_non_null(strstr(msg, "--max-prompt"));
    json_decref(j);

    /* --max-tokens caps a larger request */
    assert_int_equal(http(&s, "POST", "/v1/completions", "{\"prompt\": \"Once\", \"max_tokens\": 100}", key, &j), 200);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "usage"), "completion_tokens")), 4);
    json_decref(j);
    assert_int_equal(access("test-output/serve-data", F_OK), 0);
    srv_stop(&s);
}

static void test_bad_flags(void **state) {
    char cmd[PATH_MAX + 128];
    snprintf(cmd, sizeof cmd, "%s serve --port 99999 >/dev/null 2>&1", heed_bin);
    int st = system(cmd);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
    snprintf(cmd, sizeof cmd, "%s serve --bogus 1 >/dev/null 2>&1", heed_bin);
    st = system(cmd);
    assert_int_equal(WEXITSTATUS(st), 2);
}

static int group_setup(void **state) { return su_group_start(&main_srv, "test-output/serve-main", NULL); }

static int group_teardown(void **state) { return su_group_stop(&main_srv); }

int main(void) {
    if (su_init()) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes_basic),
        cmocka_unit_test(test_tokenize),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_run_stream_and_store),
        cmocka_unit_test(test_v1_completions),
        cmocka_unit_test(test_cancel_on_disconnect),
        cmocka_unit_test(test_concurrent_readers),
        cmocka_unit_test(test_queue_two_streams),
        cmocka_unit_test(test_attention_views_match_cli),
        cmocka_unit_test(test_graph_and_split_stream),
        cmocka_unit_test(test_heatmap_candidates_branch),
        cmocka_unit_test(test_attention_binary),
        cmocka_unit_test(test_graph_binary),
        cmocka_unit_test(test_lens_stats_and_paging),
        cmocka_unit_test(test_restart_keeps_runs),
        cmocka_unit_test(test_static_files),
        cmocka_unit_test(test_request_cache),
        cmocka_unit_test(test_cancel_long_generation),
        cmocka_unit_test(test_experts_view),
        cmocka_unit_test(test_model_rules),
        cmocka_unit_test(test_interventions),
        cmocka_unit_test(test_effects_view),
        cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_download),
        cmocka_unit_test(test_api_key_and_cors),
        cmocka_unit_test(test_bad_flags),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
