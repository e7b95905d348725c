/*
 * test_mcp.c - black-box tests of `heed mcp`: the real binary built beside
 * this test (build/heed or build-asan/heed) is started with pipes on its
 * stdin and stdout and a temporary data folder, and spoken to as an MCP
 * client speaks: JSON-RPC 2.0, one message per line. Tool results are
 * checked against the library (the stored run's rows through store.h and
 * heed_run_attn_row), against `heed serve` on the same data folder, and
 * against each other. Every read has a deadline, so a bug fails instead of
 * hanging.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "heed.h"
#include "serverutil.h"
#include "store.h"

#define MSG_TIMEOUT_MS 30000 /* one reply (a generation under ASan included) */
#define EXIT_TIMEOUT_MS 10000
#define TOL 1e-6             /* replies carry 6 significant digits */

/* A running `heed mcp` and what has been read from it. */
typedef struct mc {
    pid_t pid;
    int in, out;          /* its stdin (written here), its stdout (read here) */
    char *buf;            /* bytes read and not yet handed out */
    size_t len, cap;
    int next_id;
} mc;

static char tmp_dir[512];       /* the suite's temporary folder */
static char data_dir[600];      /* the shared server's run store */
static mc main_mc;              /* the server most tests share */

/* ------------------------------------------------------------ the client */

/* Starts `heed mcp ARGS...` with setenv pairs env (NULL-terminated; value
 * NULL: unset), its stderr appended to tmp_dir/mcp.log. */
static void mc_start_env(mc *c, const char *const *args, const char *const *env) {
    int to[2], from[2];
    assert_int_equal(pipe(to), 0);
    assert_int_equal(pipe(from), 0);
    const char *argv[32] = {heed_bin, "mcp", "--threads", "1"};
    int n = 4;
    for (int i = 0; args && args[i] && n < 30; i++) argv[n++] = args[i];
    argv[n] = NULL;
    char log[PATH_MAX + 16];
    snprintf(log, sizeof log, "%s/mcp.log", tmp_dir);
    *c = (mc){.next_id = 1};
    c->pid = fork();
    assert_true(c->pid >= 0);
    if (c->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a test that fails midway leaves no server behind */
        dup2(to[0], 0);
        dup2(from[1], 1);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) dup2(fd, 2);
        close(to[0]), close(to[1]), close(from[0]), close(from[1]);
        for (int i = 0; env && env[i]; i += 2) {
            if (env[i + 1]) setenv(env[i], env[i + 1], 1);
            else unsetenv(env[i]);
        }
        execv(heed_bin, (char *const *)argv);
        _exit(127);
    }
    close(to[0]);
    close(from[1]);
    c->in = to[1];
    c->out = from[0];
}

static void mc_start(mc *c, const char *dir) {
    const char *args[] = {"--data", dir, NULL};
    mc_start_env(c, args, NULL);
}

/* Writes bytes to its stdin, all of them. */
static void mc_write(mc *c, const char *s, size_t n) {
    while (n) {
        ssize_t w = write(c->in, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) fail_msg("writing to heed mcp: %s", strerror(errno));
        s += w;
        n -= (size_t)w;
    }
}

static void mc_send(mc *c, const char *line) {
    mc_write(c, line, strlen(line));
    mc_write(c, "\n", 1);
}

/* The next line of its stdout, or NULL at its end or after ms without one. */
static char *mc_line(mc *c, int ms) {
    double t0 = now_ms();
    for (;;) {
        char *nl = c->buf ? memchr(c->buf, '\n', c->len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - c->buf);
            char *line = strndup(c->buf, n);
            memmove(c->buf, nl + 1, c->len - n - 1);
            c->len -= n + 1;
            return line;
        }
        int left = ms - (int)(now_ms() - t0);
        if (left <= 0) return NULL;
        struct pollfd p = {.fd = c->out, .events = POLLIN};
        if (poll(&p, 1, left) <= 0) continue;
        if (c->len + 65536 > c->cap) {
            c->cap = (c->len + 65536) * 2;
            c->buf = realloc(c->buf, c->cap);
            assert_non_null(c->buf);
        }
        ssize_t r = read(c->out, c->buf + c->len, 65536);
        if (r <= 0) return NULL;
        c->len += (size_t)r;
    }
}

/* The next message (every line of stdout must be a JSON-RPC 2.0 object). */
static json_t *mc_recv(mc *c, int ms) {
    char *line = mc_line(c, ms);
    if (!line) return NULL;
    json_error_t je;
    json_t *j = json_loads(line, 0, &je);
    if (!j) fail_msg("heed mcp wrote a line that is not JSON (%s): %.200s", je.text, line);
    free(line);
    assert_true(json_is_object(j));
    assert_string_equal(json_string_value(json_object_get(j, "jsonrpc")), "2.0");
    return j;
}

/* Sends a request (params taken; may be NULL) and returns its reply. */
static json_t *mc_request(mc *c, const char *method, json_t *params) {
    int id = c->next_id++;
    json_t *msg = json_pack("{s:s, s:i, s:s}", "jsonrpc", "2.0", "id", id, "method", method);
    if (params) json_object_set_new(msg, "params", params);
    char *s = json_dumps(msg, JSON_COMPACT);
    json_decref(msg);
    mc_send(c, s);
    free(s);
    json_t *r = mc_recv(c, MSG_TIMEOUT_MS);
    if (!r) fail_msg("no reply to %s within %d ms", method, MSG_TIMEOUT_MS);
    assert_int_equal(json_integer_value(json_object_get(r, "id")), id);
    return r;
}

/* A JSON-RPC error reply to line: its code, the message checked for want. */
static void expect_rpc_error(mc *c, const char *line, bool null_id, int code, const char *want) {
    mc_send(c, line);
    json_t *r = mc_recv(c, MSG_TIMEOUT_MS);
    if (!r) fail_msg("no reply to %.80s", line);
    json_t *e = json_object_get(r, "error");
    if (!e) fail_msg("%.80s: not an error: %s", line, json_dumps(r, JSON_COMPACT));
    assert_int_equal(json_integer_value(json_object_get(e, "code")), code);
    if (null_id) assert_true(json_is_null(json_object_get(r, "id")));
    const char *msg = json_string_value(json_object_get(e, "message"));
    assert_non_null(msg);
    if (want && !strstr(msg, want)) fail_msg("%.80s: message '%s' lacks '%s'", line, msg, want);
    assert_null(json_object_get(r, "result"));
    json_decref(r);
}

/* Calls a tool (args taken); returns the result object. */
static json_t *mc_tool_raw(mc *c, const char *name, json_t *args) {
    json_t *r = mc_request(c, "tools/call", json_pack("{s:s, s:o}", "name", name, "arguments", args));
    json_t *res = json_object_get(r, "result");
    if (!res) fail_msg("tools/call %s: %s", name, json_dumps(r, JSON_COMPACT));
    json_incref(res);
    json_decref(r);
    return res;
}

/* A successful call: its structured content, checked to be what its text
 * content says. */
static json_t *mc_tool(mc *c, const char *name, json_t *args) {
    json_t *res = mc_tool_raw(c, name, args);
    if (json_is_true(json_object_get(res, "isError")))
        fail_msg("%s failed: %s", name,
                 json_string_value(json_object_get(json_array_get(json_object_get(res, "content"), 0), "text")));
    json_t *sc = json_object_get(res, "structuredContent"), *content = json_object_get(res, "content");
    assert_true(json_is_object(sc));
    assert_int_equal(json_array_size(content), 1);
    json_t *t = json_array_get(content, 0);
    assert_string_equal(json_string_value(json_object_get(t, "type")), "text");
    json_t *parsed = json_loads(json_string_value(json_object_get(t, "text")), 0, NULL);
    assert_non_null(parsed);
    assert_true(json_equal(parsed, sc));
    json_decref(parsed);
    json_incref(sc);
    json_decref(res);
    return sc;
}

/* A failing call: isError, its text holding want. */
static void mc_tool_err(mc *c, const char *name, json_t *args, const char *want) {
    json_t *res = mc_tool_raw(c, name, args);
    assert_true(json_is_true(json_object_get(res, "isError")));
    const char *text = json_string_value(json_object_get(json_array_get(json_object_get(res, "content"), 0), "text"));
    assert_non_null(text);
    if (!strstr(text, want)) fail_msg("%s: error '%s' lacks '%s'", name, text, want);
    json_decref(res);
}

/* Closes its stdin and expects it to exit 0 (and say nothing more). */
static void mc_stop(mc *c) {
    if (c->in >= 0) close(c->in);
    json_t *extra = mc_recv(c, EXIT_TIMEOUT_MS);
    if (extra) fail_msg("heed mcp wrote after stdin ended: %s", json_dumps(extra, JSON_COMPACT));
    int st = 0;
    double t0 = now_ms();
    pid_t r;
    while ((r = waitpid(c->pid, &st, WNOHANG)) == 0 && now_ms() - t0 < EXIT_TIMEOUT_MS) usleep(10000);
    if (r == 0) {
        kill(c->pid, SIGKILL);
        waitpid(c->pid, &st, 0);
        fail_msg("heed mcp did not exit within %d ms of the end of its stdin", EXIT_TIMEOUT_MS);
    }
    close(c->out);
    free(c->buf);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void mc_initialize(mc *c) {
    json_t *r = mc_request(c, "initialize", json_pack("{s:s, s:{}, s:{s:s, s:s}}", "protocolVersion", "2025-06-18",
                                                      "capabilities", "clientInfo", "name", "test_mcp", "version", "1"));
    assert_string_equal(json_string_value(json_object_get(json_object_get(r, "result"), "protocolVersion")),
                        "2025-06-18");
    json_decref(r);
    mc_send(c, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
}

/* ------------------------------------------------------------ helpers over results */

static int obj_int(json_t *o, const char *name) { return (int)json_integer_value(json_object_get(o, name)); }
static const char *obj_str(json_t *o, const char *name) { return json_string_value(json_object_get(o, name)); }

static json_t *generate(mc *c, const char *prompt, int max_tokens) {
    return mc_tool(c, "generate", json_pack("{s:s, s:i}", "prompt", prompt, "max_tokens", max_tokens));
}

/* A stored run, read by the library from the data folder (store.h). */
typedef struct lib_run {
    store *s;
    store_run *r;
    heed_run *run;
} lib_run;

static void lib_open(lib_run *l, const char *id) {
    char err[256] = "";
    if (store_open(data_dir, 2, 0, &l->s, err, sizeof err)) fail_msg("store_open %s: %s", data_dir, err);
    if (store_acquire(l->s, id, &l->r, err, sizeof err)) fail_msg("store_acquire %s: %s", id, err);
    l->run = store_run_get(l->r);
    store_run_lock(l->r);
}

static void lib_close(lib_run *l) {
    store_run_unlock(l->r);
    store_release(l->s, l->r);
    store_close(l->s);
}

/* The library's row of pos for one layer/head (-1: all), mean. */
static void lib_row(lib_run *l, int pos, int layer, int head, float *out) {
    heed_attn_sel sel = heed_attn_sel_all();
    if (layer >= 0) sel.layers = &layer, sel.n_layers = 1;
    if (head >= 0) sel.heads = &head, sel.n_heads = 1;
    assert_int_equal(heed_run_attn_row(l->run, &sel, pos, out), HEED_OK);
}

static json_t *sel_args(const char *id, int pos, int layer, int head) {
    json_t *a = json_pack("{s:s, s:i}", "run_id", id, "pos", pos);
    if (layer >= 0) json_object_set_new(a, "layer", json_integer(layer));
    if (head >= 0) json_object_set_new(a, "head", json_integer(head));
    return a;
}

/* ablate_compare's result is consistent with itself and with both runs. */
static void check_comparison(mc *c, json_t *cmp, json_t *base) {
    const char *id = obj_str(cmp, "run_id"), *base_id = obj_str(base, "run_id");
    assert_non_null(id);
    assert_string_equal(obj_str(cmp, "base_run_id"), base_id);
    assert_string_not_equal(id, base_id);
    assert_string_equal(obj_str(cmp, "base_text"), obj_str(base, "text"));
    json_t *nrun = mc_tool(c, "open_run", json_pack("{s:s}", "run_id", id)); /* stored */
    assert_string_equal(obj_str(nrun, "text"), obj_str(cmp, "text"));
    assert_string_equal(obj_str(nrun, "prompt"), obj_str(base, "prompt"));
    assert_true(json_equal(json_object_get(nrun, "params"), json_object_get(base, "params")));
    assert_true(json_equal(json_object_get(nrun, "interventions"), json_object_get(cmp, "interventions")));
    assert_int_equal(json_array_size(json_object_get(nrun, "interventions")),
                     json_array_size(json_object_get(cmp, "heads")));

    json_t *fd = json_object_get(cmp, "first_divergent_step"), *steps = json_object_get(cmp, "steps");
    int n_prompt = obj_int(base, "n_prompt"), n = (int)json_array_size(steps);
    assert_int_equal(obj_int(cmp, "n_steps_compared"), n);
    json_t *btok = json_object_get(base, "tokens"), *ntok = json_object_get(nrun, "tokens");
    double sum = 0, mx = 0;
    for (int t = 0; t < n; t++) {
        json_t *s = json_array_get(steps, (size_t)t);
        assert_int_equal(obj_int(s, "step"), t);
        assert_int_equal(obj_int(s, "pos"), n_prompt - 1 + t);
        assert_string_equal(obj_str(s, "base_token"), json_string_value(json_array_get(btok, (size_t)(n_prompt + t))));
        assert_string_equal(obj_str(s, "token"), json_string_value(json_array_get(ntok, (size_t)(n_prompt + t))));
        bool differs = json_is_true(json_object_get(s, "differs"));
        assert_true(differs == (json_is_integer(fd) && json_integer_value(fd) == t));
        double kl = json_number_value(json_object_get(s, "kl_lower_bound"));
        assert_true(kl >= 0);
        sum += kl;
        mx = kl > mx ? kl : mx;
        json_t *p = json_object_get(s, "base_token_prob"), *d = json_object_get(s, "base_token_prob_change");
        if (json_is_number(p))
            assert_true(fabs(json_number_value(d) - (json_number_value(p) -
                                                     json_number_value(json_object_get(s, "base_token_prob_base")))) < 1e-5);
        else assert_true(json_is_number(json_object_get(s, "base_token_prob_below")));
    }
    if (n) assert_true(fabs(json_number_value(json_object_get(cmp, "mean_kl_lower_bound")) - sum / n) < 1e-5);
    assert_true(fabs(json_number_value(json_object_get(cmp, "max_kl_lower_bound")) - mx) < 1e-5);
    if (json_is_integer(fd)) {
        int t = (int)json_integer_value(fd);
        assert_int_equal(n, t + 1); /* compared up to the divergence */
        json_t *div = json_object_get(cmp, "divergence");
        assert_int_equal(obj_int(div, "step"), t);
        assert_string_not_equal(obj_str(div, "token"), obj_str(div, "base_token"));
        assert_false(json_is_true(json_object_get(cmp, "same_text")));
    } else {
        assert_true(json_is_null(json_object_get(cmp, "divergence")));
        if (obj_int(cmp, "n_output") == obj_int(base, "n_output"))
            assert_true(json_is_true(json_object_get(cmp, "same_text")));
    }
    json_decref(nrun);
}

/* ------------------------------------------------------------ tests */

static void test_initialize_and_list(void **state) {
    mc *c = &main_mc;
    /* a version heed does not know gets the newest it speaks */
    json_t *r = mc_request(c, "initialize", json_pack("{s:s}", "protocolVersion", "1999-01-01"));
    json_t *res = json_object_get(r, "result");
    assert_string_equal(obj_str(res, "protocolVersion"), "2025-11-25");
    assert_true(json_is_object(json_object_get(json_object_get(res, "capabilities"), "tools")));
    json_t *info = json_object_get(res, "serverInfo");
    assert_string_equal(obj_str(info, "name"), "heed");
    assert_string_equal(obj_str(info, "version"), HEED_VERSION);
    json_decref(r);
    static const char *const known[] = {"2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"};
    for (int i = 0; i < 4; i++) {
        r = mc_request(c, "initialize", json_pack("{s:s}", "protocolVersion", known[i]));
        assert_string_equal(obj_str(json_object_get(r, "result"), "protocolVersion"), known[i]);
        json_decref(r);
    }

    /* notifications get no reply: the next line is the ping's */
    mc_send(c, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}");
    mc_send(c, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/cancelled\",\"params\":{\"requestId\":3}}");
    mc_send(c, "{\"jsonrpc\":\"2.0\",\"method\":\"notifications/no_such_thing\",\"params\":[1]}");
    mc_send(c, "{\"jsonrpc\":\"2.0\",\"id\":77,\"result\":{}}"); /* a response to nothing it asked */
    r = mc_request(c, "ping", NULL);
    assert_true(json_is_object(json_object_get(r, "result")));
    assert_int_equal(json_object_size(json_object_get(r, "result")), 0);
    json_decref(r);

    r = mc_request(c, "tools/list", json_object());
    json_t *tools = json_object_get(json_object_get(r, "result"), "tools");
    static const char *const names[] = {"generate", "attention_row", "top_sources",
                                        "list_runs", "open_run", "ablate_compare"};
    assert_int_equal(json_array_size(tools), 6);
    for (int i = 0; i < 6; i++) {
        json_t *t = NULL, *e;
        size_t k;
        json_array_foreach(tools, k, e) if (!strcmp(obj_str(e, "name"), names[i])) t = e;
        if (!t) fail_msg("tools/list lacks %s", names[i]);
        assert_true(strlen(obj_str(t, "description")) > 40);
        json_t *schema = json_object_get(t, "inputSchema");
        assert_string_equal(obj_str(schema, "type"), "object");
        assert_true(json_object_size(json_object_get(schema, "properties")) >= 1);
        assert_true(json_is_false(json_object_get(schema, "additionalProperties")));
    }
    json_t *gen = json_array_get(tools, 0);
    assert_string_equal(json_string_value(json_array_get(json_object_get(json_object_get(gen, "inputSchema"),
                                                                         "required"), 0)), "prompt");
    json_decref(r);
}

static void test_generate_and_rows(void **state) {
    mc *c = &main_mc;
    json_t *g = generate(c, "Once upon a time", 8);
    const char *id = obj_str(g, "run_id");
    assert_non_null(id);
    assert_int_equal(obj_int(g, "n_prompt"), 5);
    assert_int_equal(obj_int(g, "n_output"), 8);
    assert_string_equal(obj_str(g, "stop"), "length");
    assert_true(strlen(obj_str(g, "text")) > 0);
    json_t *tokens = json_object_get(g, "tokens");
    assert_int_equal(json_array_size(tokens), 13);
    assert_string_equal(json_string_value(json_array_get(tokens, 0)), "[BOS]");
    assert_string_equal(json_string_value(json_array_get(tokens, 1)), " Once");

    /* the rows are the stored run's, as the library computes them */
    lib_run l;
    lib_open(&l, id);
    float want[16];
    static const int sels[][2] = {{-1, -1}, {1, 3}, {2, -1}, {-1, 5}, {4, 7}};
    static const int poss[] = {0, 4, 6, 11};
    for (size_t s = 0; s < sizeof sels / sizeof sels[0]; s++) {
        for (size_t p = 0; p < sizeof poss / sizeof poss[0]; p++) {
            int pos = poss[p];
            json_t *row = mc_tool(c, "attention_row", sel_args(id, pos, sels[s][0], sels[s][1]));
            lib_row(&l, pos, sels[s][0], sels[s][1], want);
            json_t *w = json_object_get(row, "weights"), *lab = json_object_get(row, "tokens");
            assert_int_equal(json_array_size(w), pos + 1);
            assert_int_equal(json_array_size(lab), pos + 1);
            assert_int_equal(obj_int(row, "pos"), pos);
            double sum = 0;
            for (int k = 0; k <= pos; k++) {
                double x = json_number_value(json_array_get(w, (size_t)k));
                if (fabs(x - want[k]) > TOL) fail_msg("pos %d key %d: %.9g, the library %.9g", pos, k, x, want[k]);
                sum += x;
                assert_string_equal(json_string_value(json_array_get(lab, (size_t)k)),
                                    json_string_value(json_array_get(tokens, (size_t)k)));
            }
            assert_true(fabs(sum - 1) < 1e-4);
            assert_string_equal(obj_str(row, "token"), json_string_value(json_array_get(tokens, (size_t)pos)));
            if (pos >= 4) { /* a query that chose an output token */
                assert_int_equal(obj_int(row, "step"), pos - 4);
                assert_string_equal(obj_str(row, "chosen_token"), json_string_value(json_array_get(tokens, (size_t)pos + 1)));
            } else {
                assert_null(json_object_get(row, "step"));
            }
            json_decref(row);
        }
    }

    /* top sources: the heaviest keys of the same row, heaviest first */
    for (size_t s = 0; s < 2; s++) {
        int layer = sels[s][0], head = sels[s][1];
        json_t *a = json_pack("{s:s, s:i, s:i}", "run_id", id, "step", 3, "k", 4);
        if (layer >= 0) json_object_set_new(a, "layer", json_integer(layer)), json_object_set_new(a, "head", json_integer(head));
        json_t *top = mc_tool(c, "top_sources", a);
        assert_int_equal(obj_int(top, "pos"), 7);
        assert_int_equal(obj_int(top, "step"), 3);
        lib_row(&l, 7, layer, head, want);
        json_t *src = json_object_get(top, "sources");
        assert_int_equal(json_array_size(src), 4);
        bool listed[8] = {false};
        double prev = 2, least = 2;
        for (size_t i = 0; i < 4; i++) {
            json_t *e = json_array_get(src, i);
            int p = obj_int(e, "pos");
            double w = json_number_value(json_object_get(e, "weight"));
            assert_true(p >= 0 && p <= 7);
            assert_false(listed[p]);
            listed[p] = true;
            assert_true(w <= prev);
            prev = least = w;
            assert_true(fabs(w - want[p]) < TOL);
            assert_string_equal(obj_str(e, "token"), json_string_value(json_array_get(tokens, (size_t)p)));
        }
        for (int p = 0; p <= 7; p++)
            if (!listed[p]) assert_true(want[p] <= least + TOL);
        json_decref(top);
    }
    /* pos and step name the same query */
    json_t *a = mc_tool(c, "top_sources", json_pack("{s:s, s:i}", "run_id", id, "pos", 7));
    json_t *b = mc_tool(c, "top_sources", json_pack("{s:s, s:i}", "run_id", id, "step", 3));
    assert_true(json_equal(json_object_get(a, "sources"), json_object_get(b, "sources")));
    assert_int_equal(json_array_size(json_object_get(a, "sources")), 5); /* k defaults to 5 */
    json_decref(a);
    json_decref(b);
    lib_close(&l);

    /* the run is listed and opens with the same text and tokens */
    json_t *list = mc_tool(c, "list_runs", json_object());
    json_t *runs = json_object_get(list, "runs"), *e, *found = NULL;
    size_t i;
    json_array_foreach(runs, i, e) if (!strcmp(obj_str(e, "run_id"), id)) found = e;
    assert_non_null(found);
    assert_int_equal(obj_int(found, "n_tokens"), 13);
    assert_string_equal(obj_str(found, "prompt"), "Once upon a time");
    assert_true(obj_int(list, "total") >= 1);
    json_decref(list);

    json_t *run = mc_tool(c, "open_run", json_pack("{s:s}", "run_id", id));
    assert_string_equal(obj_str(run, "text"), obj_str(g, "text"));
    assert_string_equal(obj_str(run, "prompt"), "Once upon a time");
    assert_true(json_equal(json_object_get(run, "tokens"), tokens));
    assert_int_equal(json_array_size(json_object_get(run, "interventions")), 0);
    assert_int_equal(obj_int(run, "max_tokens"), 8);
    assert_true(json_is_object(json_object_get(run, "params")));
    json_decref(run);

    /* the same request again replays the stored run */
    json_t *again = generate(c, "Once upon a time", 8);
    assert_string_equal(obj_str(again, "run_id"), id);
    assert_true(json_is_true(json_object_get(again, "cached")));
    json_decref(again);
    json_decref(g);
}

static void test_ablate_compare(void **state) {
    mc *c = &main_mc;
    json_t *g = generate(c, "The little dog", 10);
    json_t *base = mc_tool(c, "open_run", json_pack("{s:s}", "run_id", obj_str(g, "run_id")));
    json_t *l0 = mc_tool(c, "list_runs", json_pack("{s:i}", "limit", 1));
    int total = obj_int(l0, "total");
    json_decref(l0);

    /* every head zeroed: the text changes */
    json_t *heads = json_array();
    for (int l = 0; l < 5; l++)
        for (int h = 0; h < 8; h++) {
            char s[32];
            snprintf(s, sizeof s, "%d:%d", l, h);
            json_array_append_new(heads, json_string(s));
        }
    json_t *all = mc_tool(c, "ablate_compare", json_pack("{s:s, s:o}", "run_id", obj_str(g, "run_id"), "heads", heads));
    assert_string_equal(obj_str(all, "mode"), "zero");
    assert_int_equal(json_array_size(json_object_get(all, "heads")), 40);
    assert_true(json_is_integer(json_object_get(all, "first_divergent_step")));
    check_comparison(c, all, base);
    json_t *iv = json_array_get(json_object_get(all, "interventions"), 39);
    assert_string_equal(obj_str(iv, "type"), "ablate");
    assert_int_equal(obj_int(iv, "layer"), 4);
    assert_int_equal(obj_int(iv, "head"), 7);
    json_t *l1 = mc_tool(c, "list_runs", json_pack("{s:i}", "limit", 1));
    assert_int_equal(obj_int(l1, "total"), total + 1); /* stored */
    assert_string_equal(obj_str(json_array_get(json_object_get(l1, "runs"), 0), "run_id"), obj_str(all, "run_id"));
    json_decref(l1);
    json_decref(all);

    /* one head, both modes: whatever happens, reported consistently */
    static const char *const modes[] = {"zero", "mean"};
    for (int m = 0; m < 2; m++) {
        json_t *one = mc_tool(c, "ablate_compare", json_pack("{s:s, s:i, s:i, s:s}", "run_id", obj_str(g, "run_id"),
                                                             "layer", 2, "head", 1, "mode", modes[m]));
        assert_string_equal(obj_str(one, "mode"), modes[m]);
        assert_string_equal(json_string_value(json_array_get(json_object_get(one, "heads"), 0)), "2:1");
        assert_string_equal(obj_str(json_array_get(json_object_get(one, "interventions"), 0), "type"),
                            m ? "ablate_mean" : "ablate");
        check_comparison(c, one, base);
        json_decref(one);
    }

    /* what it refuses */
    const char *id = obj_str(g, "run_id");
    mc_tool_err(c, "ablate_compare", json_pack("{s:s}", "run_id", id), "layer and head");
    mc_tool_err(c, "ablate_compare", json_pack("{s:s, s:i, s:i}", "run_id", id, "layer", 5, "head", 0), "layer 5");
    mc_tool_err(c, "ablate_compare", json_pack("{s:s, s:i, s:i}", "run_id", id, "layer", 0, "head", 8), "head 8");
    mc_tool_err(c, "ablate_compare", json_pack("{s:s, s:[s]}", "run_id", id, "heads", "0:9"), "outside");
    mc_tool_err(c, "ablate_compare", json_pack("{s:s, s:[s]}", "run_id", id, "heads", "zero"), "LAYER:HEAD");
    mc_tool_err(c, "ablate_compare", json_pack("{s:s, s:i, s:i, s:[s]}", "run_id", id, "layer", 0, "head", 0, "heads", "1:1"),
                "not both");
    mc_tool_err(c, "ablate_compare", json_pack("{s:s, s:i, s:i, s:s}", "run_id", id, "layer", 0, "head", 0, "mode", "half"),
                "mode");
    mc_tool_err(c, "ablate_compare", json_pack("{s:s, s:i, s:i}", "run_id", "run_gone_1", "layer", 0, "head", 0),
                "no run 'run_gone_1'");
    json_decref(base);
    json_decref(g);
}

static void test_errors(void **state) {
    mc *c = &main_mc;
    /* framing and requests */
    expect_rpc_error(c, "{\"jsonrpc\":\"2.0\",\"id\":1,", true, -32700, "parse error");
    expect_rpc_error(c, "not json at all", true, -32700, NULL);
    expect_rpc_error(c, "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]", true, -32600, "batch");
    expect_rpc_error(c, "42", true, -32600, "object");
    expect_rpc_error(c, "\"ping\"", true, -32600, "object");
    expect_rpc_error(c, "{\"jsonrpc\":\"1.0\",\"id\":5,\"method\":\"ping\"}", false, -32600, "jsonrpc");
    expect_rpc_error(c, "{\"id\":5,\"method\":\"ping\"}", false, -32600, "jsonrpc");
    expect_rpc_error(c, "{\"jsonrpc\":\"2.0\",\"id\":5}", false, -32600, "method");
    expect_rpc_error(c, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":7}", false, -32600, "method");
    expect_rpc_error(c, "{\"jsonrpc\":\"2.0\",\"id\":{\"a\":1},\"method\":\"ping\"}", true, -32600, "id");
    expect_rpc_error(c, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"resources/list\"}", false, -32601, "resources/list");
    expect_rpc_error(c, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":[1]}", false, -32602, "params");
    expect_rpc_error(c, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":{}}", false, -32602, "name");
    expect_rpc_error(c, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":{\"name\":\"generate\","
                        "\"arguments\":[1]}}", false, -32602, "arguments");
    expect_rpc_error(c, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"tools/call\",\"params\":{\"name\":\"gen\"}}", false,
                     -32602, "unknown tool 'gen'");
    expect_rpc_error(c, "{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"initialize\",\"params\":{}}", false, -32602,
                     "protocolVersion");
    /* a string id is echoed as it came */
    mc_send(c, "{\"jsonrpc\":\"2.0\",\"id\":\"abc\",\"method\":\"ping\"}");
    json_t *r = mc_recv(c, MSG_TIMEOUT_MS);
    assert_non_null(r);
    assert_string_equal(obj_str(r, "id"), "abc");
    json_decref(r);

    /* a line over 8 MiB: an error, skipped, and the next one is answered */
    size_t big = (9u << 20);
    char *huge = malloc(big + 1);
    assert_non_null(huge);
    memset(huge, 'x', big);
    huge[0] = '{';
    huge[big] = '\n';
    mc_write(c, huge, big + 1);
    free(huge);
    r = mc_recv(c, MSG_TIMEOUT_MS);
    assert_non_null(r);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(r, "error"), "code")), -32600);
    assert_true(json_is_null(json_object_get(r, "id")));
    json_decref(r);
    r = mc_request(c, "ping", NULL);
    assert_non_null(json_object_get(r, "result"));
    json_decref(r);

    /* tool arguments: a result with isError, naming the argument */
    json_t *g = generate(c, "Once upon a time", 4);
    const char *id = obj_str(g, "run_id");
    mc_tool_err(c, "generate", json_object(), "missing required argument 'prompt'");
    mc_tool_err(c, "generate", json_pack("{s:i}", "prompt", 3), "prompt must be a string");
    mc_tool_err(c, "generate", json_pack("{s:s}", "prompt", ""), "prompt must not be empty");
    mc_tool_err(c, "generate", json_pack("{s:s, s:i}", "prompt", "x", "max_tokens", 5000), "max_tokens must be an integer in [0, 1024]");
    mc_tool_err(c, "generate", json_pack("{s:s, s:f}", "prompt", "x", "max_tokens", 2.5), "max_tokens");
    mc_tool_err(c, "generate", json_pack("{s:s, s:f}", "prompt", "x", "temperature", -1.0), "temperature");
    mc_tool_err(c, "generate", json_pack("{s:s, s:s}", "prompt", "x", "chat", "yes"), "chat must be true or false");
    mc_tool_err(c, "generate", json_pack("{s:s, s:i}", "prompt", "x", "tmperature", 1), "unknown argument 'tmperature'");
    mc_tool_err(c, "generate", json_pack("{s:s, s:b}", "prompt", "x", "chat", 1), "chat template"); /* the server's check */
    mc_tool_err(c, "attention_row", json_pack("{s:s}", "run_id", id), "'pos'");
    mc_tool_err(c, "attention_row", json_pack("{s:s, s:i}", "run_id", "run_nothing_9", "pos", 1), "no run 'run_nothing_9'");
    mc_tool_err(c, "attention_row", json_pack("{s:s, s:i}", "run_id", "../../etc", "pos", 1), "no run");
    mc_tool_err(c, "attention_row", json_pack("{s:s, s:i, s:i}", "run_id", id, "pos", 2, "layer", 5), "layer must be");
    mc_tool_err(c, "attention_row", json_pack("{s:s, s:i, s:i}", "run_id", id, "pos", 2, "head", 99), "head must be");
    mc_tool_err(c, "attention_row", json_pack("{s:s, s:i}", "run_id", id, "pos", 8), "pos must be");
    mc_tool_err(c, "attention_row", json_pack("{s:s, s:i}", "run_id", id, "pos", -1), "pos must be");
    mc_tool_err(c, "top_sources", json_pack("{s:s}", "run_id", id), "exactly one of pos");
    mc_tool_err(c, "top_sources", json_pack("{s:s, s:i, s:i}", "run_id", id, "pos", 1, "step", 1), "exactly one of pos");
    mc_tool_err(c, "top_sources", json_pack("{s:s, s:i}", "run_id", id, "step", 4), "step must be in [0, 3]");
    mc_tool_err(c, "top_sources", json_pack("{s:s, s:i, s:i}", "run_id", id, "step", 0, "k", 0), "k must be");
    mc_tool_err(c, "open_run", json_pack("{s:s}", "run_id", "run_nothing_9"), "no run");
    mc_tool_err(c, "list_runs", json_pack("{s:i}", "limit", 0), "limit");
    /* null for an optional argument is as if absent; an integral real is an integer */
    json_t *row = mc_tool(c, "attention_row", json_pack("{s:s, s:f, s:n, s:n}", "run_id", id, "pos", 3.0, "layer", "head"));
    assert_int_equal(json_array_size(json_object_get(row, "weights")), 4);
    assert_true(json_is_null(json_object_get(row, "layer")));
    json_decref(row);
    json_decref(g);
}

/* Runs made here are heed serve's runs, and the other way round. */
static void test_store_shared_with_serve(void **state) {
    mc *c = &main_mc;
    json_t *g = generate(c, "The cat sat", 3);
    srv s;
    const char *args[] = {"--data-dir", data_dir, NULL};
    srv_start(&s, args);
    json_t *j = NULL;
    char path[256];
    snprintf(path, sizeof path, "/api/runs/%s", obj_str(g, "run_id"));
    assert_int_equal(http(&s, "GET", path, NULL, NULL, &j), 200);
    assert_string_equal(json_string_value(json_object_get(j, "text")), obj_str(g, "text"));
    json_decref(j);

    resp r = {0};
    const char *body = "{\"prompt\":\"A bird\",\"max_tokens\":3}";
    assert_int_equal(http_ex(&s, "POST", "/api/runs", body, strlen(body), NULL, &r), CURLE_OK);
    assert_int_equal(r.status, 200);
    sse_ev ev[16];
    int n = sse_parse(r.body, ev, 16);
    free(r.body);
    assert_true(n >= 2);
    assert_string_equal(ev[n - 1].name, "done");
    char served[64];
    snprintf(served, sizeof served, "%s", json_string_value(json_object_get(ev[n - 1].data, "run_id")));
    sse_free(ev, n);
    srv_stop(&s);

    json_t *list = mc_tool(c, "list_runs", json_pack("{s:i}", "limit", 5));
    assert_string_equal(obj_str(json_array_get(json_object_get(list, "runs"), 0), "run_id"), served);
    json_decref(list);
    json_t *run = mc_tool(c, "open_run", json_pack("{s:s}", "run_id", served));
    assert_string_equal(obj_str(run, "prompt"), "A bird");
    assert_int_equal(obj_int(run, "n_output"), 3);
    json_decref(run);
    json_t *row = mc_tool(c, "attention_row", json_pack("{s:s, s:i}", "run_id", served, "pos", 2));
    assert_int_equal(json_array_size(json_object_get(row, "weights")), 3);
    json_decref(row);
    json_decref(g);
}

/* Without --data, the folder heed serve uses by default; EOF ends it with 0
 * even mid-session, and a last line without its newline is answered. */
static void test_default_data_dir_and_eof(void **state) {
    char xdg[PATH_MAX + 16], db[PATH_MAX + 64];
    snprintf(xdg, sizeof xdg, "%s/xdg", tmp_dir);
    snprintf(db, sizeof db, "%s/heed/runs.db", xdg);
    const char *env[] = {"XDG_DATA_HOME", xdg, NULL};
    mc c;
    mc_start_env(&c, NULL, env);
    mc_initialize(&c);
    json_t *g = generate(&c, "Hello", 2);
    json_decref(g);
    struct stat st;
    assert_int_equal(stat(db, &st), 0);
    const char *last = "{\"jsonrpc\":\"2.0\",\"id\":\"last\",\"method\":\"ping\"}";
    mc_write(&c, last, strlen(last)); /* no newline, then EOF */
    close(c.in);
    c.in = -1;
    json_t *r = mc_recv(&c, MSG_TIMEOUT_MS);
    assert_non_null(r);
    assert_string_equal(obj_str(r, "id"), "last");
    json_decref(r);
    mc_stop(&c);

    /* a request before initialize is answered (lenient), then EOF */
    mc d;
    char dir[PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/data2", tmp_dir);
    mc_start(&d, dir);
    r = mc_request(&d, "tools/list", NULL);
    assert_int_equal(json_array_size(json_object_get(json_object_get(r, "result"), "tools")), 6);
    json_decref(r);
    mc_stop(&d);
}

static void test_flags(void **state) {
    char cmd[2 * PATH_MAX];
    snprintf(cmd, sizeof cmd, "%s mcp --bogus 1 >/dev/null 2>&1 </dev/null", heed_bin);
    int st = system(cmd);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2);
    snprintf(cmd, sizeof cmd, "%s mcp --threads 0 >/dev/null 2>&1 </dev/null", heed_bin);
    assert_int_equal(WEXITSTATUS(system(cmd)), 2);
    snprintf(cmd, sizeof cmd, "%s mcp --help 2>/dev/null </dev/null | grep -q 'usage: heed mcp'", heed_bin);
    assert_int_equal(WEXITSTATUS(system(cmd)), 0);
    snprintf(cmd, sizeof cmd, "%s mcp -m /nonexistent/model.gguf --data %s/data3 >/dev/null 2>&1 </dev/null", heed_bin,
             tmp_dir);
    assert_int_equal(WEXITSTATUS(system(cmd)), 1);
    /* nothing at all on stdout for an empty session */
    snprintf(cmd, sizeof cmd, "test -z \"$(%s mcp --data %s/data4 2>/dev/null </dev/null)\"", heed_bin, tmp_dir);
    assert_int_equal(WEXITSTATUS(system(cmd)), 0);
}

static int group_setup(void **state) {
    curl_global_init(CURL_GLOBAL_ALL);
    const char *t = getenv("TMPDIR");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/heed-test-mcp.XXXXXX", t && t[0] ? t : "/tmp");
    if (!mkdtemp(tmp_dir)) return -1;
    snprintf(data_dir, sizeof data_dir, "%s/data", tmp_dir);
    mc_start(&main_mc, data_dir);
    mc_initialize(&main_mc);
    return 0;
}

static int group_teardown(void **state) {
    mc_stop(&main_mc);
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd)) return -1;
    curl_global_cleanup();
    return 0;
}

int main(void) {
    if (su_find_heed()) return 1;
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_initialize_and_list),
        cmocka_unit_test(test_generate_and_rows),
        cmocka_unit_test(test_ablate_compare),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_store_shared_with_serve),
        cmocka_unit_test(test_default_data_dir_and_eof),
        cmocka_unit_test(test_flags),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
