/*
 * main.c - the heed command line.
 *
 *   heed generate [-m MODEL] (-p PROMPT | --ids LIST) [options]   generate, stream or dump JSON
 *   heed serve [options]                                          HTTP API (src/server.c)
 *   heed tokenize [-m MODEL] TEXT                                 ids, pieces, labels
 *   heed export RUN -o OUT                                        a recorded run as npz/json/html
 *   heed info [-m MODEL]                                          metadata, geometry, tensors
 *
 * Without -m, the bundled default model (stories260K) is used. The CLI speaks
 * only the public API (heed.h) and hands `serve` to the HTTP layer
 * (server.h), which does the same; the JSON format of `generate --json` is
 * documented in docs/CLI.md.
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "heed.h"
#include "jsonw.h"
#include "mcp.h"
#include "server.h"
#include "pull.h"
#include "webexport.h"

#define MAX_IDS 65536
#define N_TOP 10
/* Full capture keeps every row; beyond this it would exhaust memory, and the
 * user is told to capture less. */
#define MAX_CAPTURE_BYTES (2ull << 30)

static const char *usage_text =
    "usage:\n"
    "  heed generate [-m MODEL] (-p PROMPT | --ids 1,2,3) [options]\n"
    "  heed serve [-m MODEL] [--host H] [--port P] [...]   HTTP API (heed serve --help)\n"
    "  heed tokenize [-m MODEL] [--json] [--no-bos] [--special] TEXT\n"
    "  heed mcp [-m MODEL] [--data-dir DIR]                 MCP server for agents over stdio (docs/MCP.md)\n"
    "  heed info [-m MODEL]\n"
    "  heed pull ORG/REPO[:FILE] [--base-url URL]           download a model into the cache\n"
    "\n"
    "generate options:\n"
    "  -m, --model PATH        GGUF model (default: the bundled stories260K)\n"
    "  -p, --prompt TEXT       prompt text\n"
    "      --ids LIST          prompt as comma-separated token ids (no BOS is added)\n"
    "      --chat              wrap the prompt as a user message in the model's chat template\n"
    "      --system TEXT       system message for --chat\n"
    "  -n, --n-predict N       tokens to generate (default 64)\n"
    "      --temp T            temperature; 0 = greedy (default 0)\n"
    "      --top-k K           keep the K most likely tokens (default 40; 0 = off)\n"
    "      --top-p P           nucleus sampling (default 0.95; 1 = off)\n"
    "      --min-p M           drop tokens below M x the top probability (default 0.05; 0 = off)\n"
    "      --repeat-penalty R  penalize recent tokens (default 1 = off)\n"
    "      --repeat-last-n N   window of the repetition penalty (default 64)\n"
    "      --seed S            random seed (default 0)\n"
    "      --threads N         threads (default: all cores)\n"
    "      --ctx N             context limit in tokens (default: the model's, bounded by memory)\n"
    "      --json              print one JSON object (format: docs/CLI.md)\n"
    "      --attention MODE    full | none | rows:P1,P2,...: attention rows in the JSON (default full with\n"
    "                          --json; rows: only those query positions, every layer and head)\n"
    "      --no-stream         plain mode: print the text at the end, not token by token\n"
    "      --save RUN          record the run (tokens, steps, logit lens, attention) to the file RUN\n"
    "      --ablate L:H[,L:H]  zero these heads' attention output (layer and head from 0)\n"
    "      --ablate-mean L:H[,...]  replace these heads' output by its mean over the prompt\n"
    "      --steer FILE:L:ALPHA  add ALPHA x the vector in FILE (n_embd float32) to the residual after layer L\n"
    "      --steer-diff RUN_A:RUN_B:L:ALPHA  the same with the vector RUN_A's residual minus RUN_B's after\n"
    "                          layer L at their prompts' last token (runs saved by --save with this model)\n"
    "      --patch RUN:L:POS   put the residual after layer L at POS of the run RUN in place of this run's\n"
    "      --scale L:H:F[,...] multiply these heads' attention output by F\n"
    "      --knockout L:H:Q:K  queries Q may not attend to keys K (each field a list of N, A-B or '*';\n"
    "                          positions inclusive; repeatable)\n"
    "\n"
    "  heed export RUN -o OUT.npz|OUT.json|OUT.html|OUT.trace [-m MODEL] [--full]\n"
    "                                        a recorded run as NumPy arrays, JSON, an offline HTML viewer,\n"
    "                                        or a heed-trace/1 folder (its q and k)\n"
    "  heed import TRACE -o RUN [options]   a heed-trace/1 folder or an IBM vLLM-Hook q/k capture (another\n"
    "                                        engine's q/k) as a run; for a vLLM-Hook capture (docs/TRACE_FORMAT.md):\n"
    "      --token-ids FILE    the sequence's token ids (required: the capture has none)\n"
    "      --sequence N        which sequence of a capture holding several (default 0)\n"
    "      --n-prompt N        prompt tokens (default: the sequence's first captured pass)\n"
    "      --head-dim N, --n-head N, --n-head-kv N  the geometry, where the capture lacks or misstates it\n"
    "      --scale X           score scale (default: the capture's attention_multiplier, else 1/sqrt(head_dim))\n"
    "      --sliding-window W  a window for every layer, or W0,W1,... one per layer (default none)\n"
    "      --softcap C         attention logit soft-cap (default none)\n";

typedef struct gen_opts {
    const char *model;
    const char *prompt;
    const char *ids;
    const char *system;
    const char *save;
    const char *ablate, *scale; /* interventions: "L:H,..." and "L:H:F,..." */
    const char *knockout[16];   /* each --knockout: "LAYERS:HEADS:QUERIES:KEYS" */
    const char *ablate_mean;    /* "L:H,..." */
    const char *steer[16];      /* each --steer: "FILE:L:ALPHA", or --steer-diff: "RUN_A:RUN_B:L:ALPHA" */
    bool steer_diff[16];        /* steer[i] came from --steer-diff */
    int n_steer;
    const char *patch[16];      /* each --patch: "RUN:L:POS" */
    int n_patch;
    int n_knockout;
    bool chat;
    int n_predict;
    int n_threads, n_ctx;
    bool json, attention, stream;
    const char *att_rows; /* --attention rows:P1,P2,...: only these query positions' rows */
    heed_sampler_params sp;
} gen_opts;

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "heed: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2; /* the exit status of a usage error */
}

static bool parse_long(const char *s, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return false;
    *out = v;
    return true;
}

static bool parse_float(const char *s, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

static bool parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (*s == '-') return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) return false;
    *out = v;
    return true;
}

/* "1, 2,3" -> ids; returns the count or -1 with a message. */
static int parse_ids(const char *s, int32_t *ids, int n_max) {
    int n = 0;
    while (*s) {
        while (*s == ' ' || *s == ',') s++;
        if (!*s) break;
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (end == s || errno || v < 0 || v > INT32_MAX) {
            fprintf(stderr, "heed: --ids: '%s' is not a token id\n", s);
            return -1;
        }
        if (n == n_max) {
            fprintf(stderr, "heed: --ids: more than %d ids\n", n_max);
            return -1;
        }
        ids[n++] = (int32_t)v;
        s = end;
        if (*s && *s != ',' && *s != ' ') {
            fprintf(stderr, "heed: --ids: unexpected '%c'\n", *s);
            return -1;
        }
    }
    return n;
}

/* Loads a model, or with vocab_only its vocabulary alone (any architecture,
 * no weights: heed_model_params.vocab_only); a failure is printed. */
static int load_model_ex(const char *path, bool vocab_only, heed_model **m) {
    char err[512], cached[PATH_MAX];
    int pr = pull_resolve(path, cached, sizeof cached, err, sizeof err); /* -m ORG/REPO[:FILE]: the pulled copy */
    if (pr < 0) {
        fprintf(stderr, "heed: %s\n", err);
        return HEED_ERR_IO;
    }
    if (pr > 0) path = cached;
    heed_model_params mp = heed_model_default_params();
    mp.progress = !vocab_only;
    mp.vocab_only = vocab_only;
    int rc = heed_model_load(path, &mp, m, err, sizeof err);
    if (rc) fprintf(stderr, "heed: %s\n", err[0] ? err : heed_strerror(rc));
    return rc;
}

static int load_model(const char *path, heed_model **m) { return load_model_ex(path, false, m); }

/* ---------------------------------------------------------- capture */

/* Full capture: for each (layer, head) the causal rows of positions
 * 0..n_pos-1, packed triangularly (row p starts at p(p+1)/2). */
typedef struct capture {
    int n_layer, n_head, n_pos;
    float *rows; /* (n_layer, n_head, n_pos(n_pos+1)/2); with sel: each selected row, one after another */
    int n_filled; /* positions observed so far (from the last layer) */
    int *sel;     /* rows mode: the selected positions, ascending and distinct; NULL: every row */
    int n_sel;
    size_t *sel_off; /* (n_sel) where position sel[i]'s (n_layer, n_head, sel[i] + 1) floats start */
} capture;

/* Selected row i of (layer, head): sel[i] + 1 floats. */
static float *sel_row(const capture *cap, int i, int l, int h) {
    return cap->rows + cap->sel_off[i] + ((size_t)l * cap->n_head + h) * (size_t)(cap->sel[i] + 1);
}

/* Index of pos in the selection, or -1. */
static int sel_index(const capture *cap, int pos) {
    int lo = 0, hi = cap->n_sel - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        if (cap->sel[mid] == pos) return mid;
        if (cap->sel[mid] < pos) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

static size_t tri(size_t p) { return p * (p + 1) / 2; }

static void capture_observe(void *user, const heed_attn_block *b) {
    capture *cap = user;
    if (cap->sel) {
        for (int i = 0; i < b->n_query; i++) {
            int s = sel_index(cap, b->pos0 + i);
            if (s < 0) continue;
            for (int h = 0; h < b->n_head; h++)
                memcpy(sel_row(cap, s, b->layer, h), b->probs + h * b->head_stride + i * b->row_stride,
                       sizeof(float) * (size_t)(b->pos0 + i + 1));
        }
        if (b->layer == cap->n_layer - 1) cap->n_filled = b->pos0 + b->n_query;
        return;
    }
    size_t per_head = tri((size_t)cap->n_pos);
    for (int h = 0; h < b->n_head; h++) {
        for (int i = 0; i < b->n_query; i++) {
            size_t pos = (size_t)b->pos0 + i;
            if (pos >= (size_t)cap->n_pos) return;
            float *dst = cap->rows + ((size_t)b->layer * cap->n_head + h) * per_head + tri(pos);
            memcpy(dst, b->probs + h * b->head_stride + i * b->row_stride, sizeof(float) * (pos + 1));
        }
    }
    if (b->layer == cap->n_layer - 1) cap->n_filled = b->pos0 + b->n_query;
}

/* With --save the recorder holds the hook: the rows are recomputed from the
 * run's stored queries and keys (exact), one layer and head at a time. */
static int capture_from_run(capture *cap, heed_run *run) {
    heed_run_info ri;
    heed_run_get_info(run, &ri);
    size_t per_head = tri((size_t)cap->n_pos);
    int n = ri.n_pos < cap->n_pos ? ri.n_pos : cap->n_pos;
    if (cap->sel) {
        for (int i = 0; i < cap->n_sel && cap->sel[i] < n; i++)
            for (int l = 0; l < cap->n_layer; l++)
                for (int h = 0; h < cap->n_head; h++) {
                    heed_attn_sel sel = {&l, 1, &h, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
                    if (heed_run_attn_row(run, &sel, cap->sel[i], sel_row(cap, i, l, h))) return -1;
                }
        cap->n_filled = n;
        return 0;
    }
    for (int l = 0; l < cap->n_layer; l++)
        for (int h = 0; h < cap->n_head; h++) {
            heed_attn_sel sel = {&l, 1, &h, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
            float *base = cap->rows + ((size_t)l * cap->n_head + h) * per_head;
            for (int p = 0; p < n; p++)
                if (heed_run_attn_row(run, &sel, p, base + tri((size_t)p))) return -1;
        }
    cap->n_filled = n;
    return 0;
}

/* ----------------------------------------------------------- output */

typedef struct step_rec {
    int32_t id;
    float prob, logprob, entropy;
    heed_candidate top[N_TOP];
    int n_top;
} step_rec;

static void json_token(jsonw *w, const heed_model *m, int32_t id) {
    char label[256];
    const char *piece = heed_token_piece(m, id);
    heed_token_label(m, id, label, sizeof label);
    jw_obj(w);
    jw_key(w, "id"); jw_int(w, id);
    jw_key(w, "piece"); jw_cstr(w, piece ? piece : "");
    jw_key(w, "label"); jw_cstr(w, label);
    jw_obj_end(w);
}

static void json_ids(jsonw *w, const int32_t *ids, int n) {
    jw_arr(w);
    for (int i = 0; i < n; i++) jw_int(w, ids[i]);
    jw_arr_end(w);
}

static void write_json(const gen_opts *o, const heed_model *m, const int32_t *prompt, int n_prompt,
                       const int32_t *out, int n_out, const step_rec *steps, const char *text, size_t text_len,
                       const capture *cap, const char *stop) {
    heed_model_info info;
    heed_model_get_info(m, &info);
    const char *base = strrchr(info.path, '/');
    jsonw w;
    jw_init(&w, stdout);
    jw_obj(&w);
    jw_key(&w, "model"); jw_cstr(&w, base ? base + 1 : info.path);
    jw_key(&w, "prompt"); if (o->prompt) jw_cstr(&w, o->prompt); else jw_null(&w);
    jw_key(&w, "prompt_ids"); json_ids(&w, prompt, n_prompt);
    jw_key(&w, "output_ids"); json_ids(&w, out, n_out);
    jw_key(&w, "text"); jw_str(&w, text, text_len);
    jw_key(&w, "stop"); jw_cstr(&w, stop);
    jw_key(&w, "params");
    jw_obj(&w);
    jw_key(&w, "temperature"); jw_float(&w, o->sp.temperature);
    jw_key(&w, "top_k"); jw_int(&w, o->sp.top_k);
    jw_key(&w, "top_p"); jw_float(&w, o->sp.top_p);
    jw_key(&w, "min_p"); jw_float(&w, o->sp.min_p);
    jw_key(&w, "repeat_penalty"); jw_float(&w, o->sp.repeat_penalty);
    jw_key(&w, "repeat_last_n"); jw_int(&w, o->sp.repeat_last_n);
    jw_key(&w, "seed"); jw_int(&w, (int64_t)o->sp.seed);
    jw_key(&w, "n_predict"); jw_int(&w, o->n_predict);
    jw_obj_end(&w);
    jw_key(&w, "tokens");
    jw_arr(&w);
    for (int i = 0; i < n_prompt; i++) json_token(&w, m, prompt[i]);
    for (int i = 0; i < n_out; i++) json_token(&w, m, out[i]);
    jw_arr_end(&w);
    jw_key(&w, "steps");
    jw_arr(&w);
    for (int s = 0; s < n_out; s++) {
        jw_obj(&w);
        jw_key(&w, "id"); jw_int(&w, steps[s].id);
        jw_key(&w, "prob"); jw_float(&w, steps[s].prob);
        jw_key(&w, "logprob"); jw_float(&w, steps[s].logprob);
        jw_key(&w, "entropy"); jw_float(&w, steps[s].entropy);
        jw_key(&w, "top");
        jw_arr(&w);
        for (int k = 0; k < steps[s].n_top; k++) {
            jw_obj(&w);
            jw_key(&w, "id"); jw_int(&w, steps[s].top[k].id);
            jw_key(&w, "logit"); jw_float(&w, steps[s].top[k].logit);
            jw_key(&w, "prob"); jw_float(&w, steps[s].top[k].prob);
            jw_obj_end(&w);
        }
        jw_arr_end(&w);
        jw_obj_end(&w);
    }
    jw_arr_end(&w);
    jw_key(&w, "attention");
    if (!cap) {
        jw_null(&w);
    } else {
        jw_obj(&w);
        jw_key(&w, "n_layer"); jw_int(&w, cap->n_layer);
        jw_key(&w, "n_head"); jw_int(&w, cap->n_head);
        jw_key(&w, "n_pos"); jw_int(&w, cap->n_filled);
        jw_key(&w, "rows");
        jw_arr(&w);
        size_t per_head = tri((size_t)cap->n_pos);
        for (int l = 0; cap->sel && l < cap->n_layer; l++) { /* rows mode: {"P": row, ...} per head */
            jw_arr(&w);
            for (int h = 0; h < cap->n_head; h++) {
                jw_obj(&w);
                for (int i = 0; i < cap->n_sel && cap->sel[i] < cap->n_filled; i++) {
                    char key[16];
                    snprintf(key, sizeof key, "%d", cap->sel[i]);
                    jw_key(&w, key);
                    jw_arr(&w);
                    const float *row = sel_row(cap, i, l, h);
                    for (int k = 0; k <= cap->sel[i]; k++) jw_float(&w, row[k]);
                    jw_arr_end(&w);
                }
                jw_obj_end(&w);
            }
            jw_arr_end(&w);
        }
        for (int l = 0; !cap->sel && l < cap->n_layer; l++) {
            jw_arr(&w);
            for (int h = 0; h < cap->n_head; h++) {
                jw_arr(&w);
                const float *base_row = cap->rows + ((size_t)l * cap->n_head + h) * per_head;
                for (int p = 0; p < cap->n_filled; p++) {
                    jw_arr(&w);
                    for (int k = 0; k <= p; k++) jw_float(&w, base_row[tri((size_t)p) + k]);
                    jw_arr_end(&w);
                }
                jw_arr_end(&w);
            }
            jw_arr_end(&w);
        }
        jw_arr_end(&w);
        jw_obj_end(&w);
    }
    jw_obj_end(&w);
    fputc('\n', stdout);
}

/* --------------------------------------------------------- generate */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The generated text, printed as it comes when streaming. */
typedef struct text_out {
    char *buf;
    size_t len, cap;
    bool print;
} text_out;

static bool text_push(text_out *t, const char *s, size_t n) {
    if (t->len + n + 1 > t->cap) {
        size_t cap = (t->cap ? t->cap * 2 : 1024) + n + 1;
        char *b = realloc(t->buf, cap);
        if (!b) return false;
        t->buf = b;
        t->cap = cap;
    }
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = 0;
    if (t->print && n) {
        fwrite(s, 1, n, stdout);
        fflush(stdout);
    }
    return true;
}

/* The prompt's ids from -p (plain or --chat) or --ids. Returns the count, or
 * -1 after a message. */
static int prompt_ids(const gen_opts *o, const heed_model *m, const heed_model_info *info, int32_t *prompt) {
    int n = 0;
    if (o->ids) {
        if ((n = parse_ids(o->ids, prompt, MAX_IDS)) < 0) return -1;
    } else {
        if (!info->can_tokenize) {
            fprintf(stderr,
                    "heed: %s has a %s vocabulary heed cannot encode (unknown pre-tokenizer); "
                    "pass the prompt as token ids with --ids\n", info->path, info->tokenizer);
            return -1;
        }
        const char *p = o->prompt ? o->prompt : "";
        if (o->chat) {
            if (!heed_chat_template(m)) {
                fprintf(stderr, "heed: %s has no chat template heed knows (Llama 3, ChatML, Llama 2, Mistral, Gemma, Phi-3)\n",
                        info->path);
                return -1;
            }
            heed_chat_msg msgs[2] = {{"system", o->system}, {"user", p}};
            int first = o->system ? 0 : 1;
            n = heed_chat_tokenize(m, msgs + first, 2 - first, true, prompt, MAX_IDS);
        } else {
            n = heed_tokenize(m, p, strlen(p), info->add_bos, prompt, MAX_IDS);
        }
        if (n < 0) {
            fprintf(stderr, "heed: cannot tokenize the prompt: %s\n",
                    n == HEED_ERR_INVALID_ARG ? "it is not valid UTF-8" : heed_strerror(n));
            return -1;
        }
        if (n > MAX_IDS) {
            fprintf(stderr, "heed: the prompt has %d tokens, more than %d\n", n, MAX_IDS);
            return -1;
        }
    }
    if (n == 0) {
        fprintf(stderr, "heed: the prompt is empty (give -p TEXT or --ids LIST)\n");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        if (prompt[i] >= info->n_vocab) {
            fprintf(stderr, "heed: token id %d is outside the vocabulary (0..%d)\n", prompt[i], info->n_vocab - 1);
            return -1;
        }
    }
    return n;
}

/* The prompt as the output's first line: its text, or its tokens' bytes. */
static void print_prompt(const gen_opts *o, const heed_model *m, const int32_t *prompt, int n_prompt) {
    if (o->prompt) fputs(o->prompt, stdout);
    for (int i = 0; !o->prompt && i < n_prompt; i++) {
        char b[256];
        int n = heed_token_bytes(m, prompt[i], b, sizeof b);
        if (n > 0) fwrite(b, 1, (size_t)n < sizeof b ? (size_t)n : sizeof b - 1, stdout);
    }
    fflush(stdout);
}

/* With --json, the attention rows: the capture hook's store, sized for the
 * whole generation (the recorder's run fills it instead with --save). */
static int compare_int(const void *a, const void *b) { return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b); }

/* rows mode: "P1,P2,..." into cap->sel (sorted, distinct), each below n_pos,
 * and the store for their rows. */
static int capture_init_rows(capture *cap, const char *list, int n_pos) {
    int n = 1;
    for (const char *c = list; *c; c++) n += *c == ',';
    cap->sel = malloc(sizeof(int) * (size_t)n);
    cap->sel_off = malloc(sizeof(size_t) * (size_t)n);
    if (!cap->sel || !cap->sel_off) {
        fprintf(stderr, "heed: out of memory\n");
        return -1;
    }
    char *copy = strdup(list), *save = NULL;
    cap->n_sel = 0;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        long p;
        if (!parse_long(t, 0, 1 << 24, &p) || p >= n_pos) {
            fprintf(stderr, "heed: --attention rows: '%s' is not a query position below %d (the positions that go "
                            "through the model: the prompt, then every generated token but the last)\n", t, n_pos);
            free(copy);
            return -1;
        }
        cap->sel[cap->n_sel++] = (int)p;
    }
    free(copy);
    if (!cap->n_sel) {
        fprintf(stderr, "heed: --attention rows: needs at least one position\n");
        return -1;
    }
    qsort(cap->sel, (size_t)cap->n_sel, sizeof(int), compare_int);
    int k = 0;
    for (int i = 0; i < cap->n_sel; i++)
        if (!k || cap->sel[i] != cap->sel[k - 1]) cap->sel[k++] = cap->sel[i];
    cap->n_sel = k;
    double total = 0;
    for (int i = 0; i < k; i++) {
        cap->sel_off[i] = (size_t)total;
        total += (double)cap->n_layer * cap->n_head * (cap->sel[i] + 1);
    }
    if (total * sizeof(float) > (double)MAX_CAPTURE_BYTES) {
        fprintf(stderr, "heed: these rows would need %.1f GB; ask for fewer\n", total * sizeof(float) / 1e9);
        return -1;
    }
    cap->rows = calloc((size_t)total + 1, sizeof(float));
    if (!cap->rows) fprintf(stderr, "heed: out of memory\n");
    return cap->rows ? 0 : -1;
}

static int capture_init(capture *cap, const heed_model_info *info, int n_pos, const char *rows) {
    cap->n_layer = info->n_layer;
    cap->n_head = info->n_head;
    cap->n_pos = n_pos;
    if (rows) return capture_init_rows(cap, rows, n_pos);
    double bytes = (double)cap->n_layer * cap->n_head * (double)tri((size_t)n_pos) * sizeof(float);
    if (bytes > (double)MAX_CAPTURE_BYTES) {
        fprintf(stderr, "heed: full attention for %d positions would need %.1f GB; "
                        "generate fewer tokens or use --attention none\n", n_pos, bytes / 1e9);
        return -1;
    }
    cap->rows = calloc(1, (size_t)bytes + 1);
    if (!cap->rows) fprintf(stderr, "heed: out of memory\n");
    return cap->rows ? 0 : -1;
}

/* Adds the heads of one intervention flag ("L:H,L:H" for --ablate, factor
 * 0; "L:H:F,..." for --scale) to scale (n_layer x n_head). Returns 0, or -1
 * after a message naming the flag and the item. */
static int parse_heads(const char *flag, const char *list, bool with_factor, const heed_model_info *info,
                       float *scale) {
    const char *p = list;
    while (*p) {
        char *end;
        errno = 0;
        long l = strtol(p, &end, 10), h = -1;
        double f = 0;
        bool ok = end != p && *end == ':' && !errno;
        if (ok) {
            p = end + 1;
            h = strtol(p, &end, 10);
            ok = end != p && !errno;
        }
        if (ok && with_factor) {
            ok = *end == ':';
            p = end + 1;
            f = ok ? strtod(p, &end) : 0;
            ok = ok && end != p && isfinite(f);
        }
        ok = ok && (*end == ',' || *end == 0);
        if (!ok) {
            fprintf(stderr, "heed: %s: '%s' is not %s\n", flag, list, with_factor ? "LAYER:HEAD:FACTOR[,...]" : "LAYER:HEAD[,...]");
            return -1;
        }
        if (l < 0 || l >= info->n_layer || h < 0 || h >= info->n_head) {
            fprintf(stderr, "heed: %s: head %ld:%ld is outside the model's %d layers x %d heads\n", flag, l, h,
                    info->n_layer, info->n_head);
            return -1;
        }
        scale[(size_t)l * info->n_head + h] = (float)f;
        p = *end ? end + 1 : end;
    }
    return 0;
}

/* --ablate and --scale as factors per head, or NULL (none). *failed after a message. */
static float *head_scales(const gen_opts *o, const heed_model_info *info, bool *failed) {
    *failed = false;
    if (!o->ablate && !o->scale) return NULL;
    size_t n = (size_t)info->n_layer * info->n_head;
    float *s = malloc(sizeof(float) * n);
    for (size_t i = 0; s && i < n; i++) s[i] = 1.0f;
    if (!s || (o->ablate && parse_heads("--ablate", o->ablate, false, info, s)) ||
        (o->scale && parse_heads("--scale", o->scale, true, info, s))) {
        if (!s) fprintf(stderr, "heed: out of memory\n");
        free(s);
        *failed = true;
        return NULL;
    }
    return s;
}

/* One item of a --knockout field: '*' (all), N, or A-B (inclusive), as
 * [*lo, *hi) half-open; max bounds the numbers (exclusive). */
static bool knock_item(const char *s, size_t len, long max, int *lo, int *hi) {
    if (len == 1 && s[0] == '*') {
        *lo = -1, *hi = -1;
        return true;
    }
    char buf[32];
    if (len == 0 || len >= sizeof buf) return false;
    memcpy(buf, s, len);
    buf[len] = 0;
    char *dash = strchr(buf, '-');
    long a, b;
    if (dash) *dash = 0;
    if (!parse_long(buf, 0, max - 1, &a)) return false;
    b = a;
    if (dash && !parse_long(dash + 1, a, max - 1, &b)) return false;
    *lo = (int)a;
    *hi = (int)b + 1;
    return true;
}

/* The items of one field ("1,3-4" or "*"), in ranges[2*i], ranges[2*i+1]. */
static int knock_field(const char *s, size_t len, long max, int *ranges, int cap) {
    int n = 0;
    for (size_t i = 0; i <= len;) {
        size_t j = i;
        while (j < len && s[j] != ',') j++;
        if (n == cap || !knock_item(s + i, j - i, max, &ranges[2 * n], &ranges[2 * n + 1])) return -1;
        n++;
        i = j + 1;
    }
    return n;
}

/* Each --knockout LAYERS:HEADS:QUERIES:KEYS (each field a list of N, A-B or
 * '*'; positions inclusive) into *out, every combination one knockout
 * (a '*' layer or head one knockout for all). Returns the count, 0 for none,
 * -1 after a message naming the flag's value. */
static int parse_knockouts(const char *const *specs, int n_specs, const heed_model_info *info, heed_knockout **out) {
    *out = NULL;
    int n = 0, cap = 0;
    heed_knockout *k = NULL;
    for (int s = 0; s < n_specs; s++) {
        const char *spec = specs[s], *f[5] = {spec, NULL, NULL, NULL, NULL};
        int nf = 1;
        for (const char *c = spec; *c && nf < 5; c++)
            if (*c == ':') f[nf++] = c + 1;
        enum { MAXR = 64 };
        int r[4][2 * MAXR], cnt[4] = {0};
        const long max[4] = {info->n_layer, info->n_head, 1 << 24, 1 << 24};
        bool ok = nf == 4;
        for (int i = 0; ok && i < 4; i++) {
            size_t len = i < 3 ? (size_t)(f[i + 1] - f[i] - 1) : strlen(f[i]);
            cnt[i] = knock_field(f[i], len, max[i], r[i], MAXR);
            ok = cnt[i] > 0;
        }
        if (!ok) {
            fprintf(stderr,
                    "heed: --knockout: '%s' is not LAYERS:HEADS:QUERIES:KEYS (each a list of N, A-B or '*'; layers "
                    "below %d, heads below %d; positions inclusive), e.g. 3:*:10-20:0-4 or 1,2:0-3:*:0\n",
                    spec, info->n_layer, info->n_head);
            free(k);
            return -1;
        }
        for (int a = 0; a < cnt[0]; a++)
            for (int l = r[0][2 * a]; l < (r[0][2 * a] < 0 ? 0 : r[0][2 * a + 1]); l++)
                for (int b = 0; b < cnt[1]; b++)
                    for (int h = r[1][2 * b]; h < (r[1][2 * b] < 0 ? 0 : r[1][2 * b + 1]); h++)
                        for (int c = 0; c < cnt[2]; c++)
                            for (int d = 0; d < cnt[3]; d++) {
                                if (n == HEED_MAX_KNOCKOUTS) {
                                    fprintf(stderr, "heed: --knockout: more than %d knockouts\n", HEED_MAX_KNOCKOUTS);
                                    free(k);
                                    return -1;
                                }
                                if (n == cap) {
                                    cap = cap ? 2 * cap : 16;
                                    heed_knockout *g = realloc(k, sizeof *k * (size_t)cap);
                                    if (!g) {
                                        free(k);
                                        return -1;
                                    }
                                    k = g;
                                }
                                int q0 = r[2][2 * c], q1 = r[2][2 * c + 1], k0 = r[3][2 * d], k1 = r[3][2 * d + 1];
                                if (q0 < 0) q0 = 0, q1 = 1 << 24; /* '*': every position */
                                if (k0 < 0) k0 = 0, k1 = 1 << 24;
                                k[n++] = (heed_knockout){l, h, q0, q1, k0, k1};
                            }
    }
    *out = k;
    return n;
}

/* "A:L:B" split at its last two colons (a file name may hold colons):
 * *first = A (a copy), *l, *last_text = B. */
static bool split_tail(const char *s, char **first, long max_l, int *l, const char **last) {
    const char *c2 = strrchr(s, ':');
    if (!c2 || c2 == s) return false;
    const char *c1 = c2 - 1;
    while (c1 > s && *c1 != ':') c1--;
    if (*c1 != ':' || c1 == s) return false;
    char lbuf[16];
    size_t ln = (size_t)(c2 - c1 - 1);
    if (ln == 0 || ln >= sizeof lbuf) return false;
    memcpy(lbuf, c1 + 1, ln);
    lbuf[ln] = 0;
    long v;
    if (!parse_long(lbuf, 0, max_l - 1, &v)) return false;
    *l = (int)v;
    *first = strndup(s, (size_t)(c1 - s));
    *last = c2 + 1;
    return *first != NULL;
}

/* --steer FILE:L:ALPHA: FILE holds n_embd float32 (little-endian), added
 * times ALPHA to the residual after layer L at every position. */
/* --steer-diff RUN_A:RUN_B (the head of the flag): v = RUN_A's residual
 * after layer l minus RUN_B's, each at its prompt's last token (step 0's
 * query), both runs made with model m. */
static bool steer_diff_vec(const heed_model *m, char *runs, int l, int n_embd, float *v) {
    char *colon = strrchr(runs, ':');
    if (!colon || colon == runs || !colon[1]) {
        fprintf(stderr, "heed: --steer-diff: '%s' is not RUN_A:RUN_B\n", runs);
        return false;
    }
    *colon = 0;
    const char *path[2] = {runs, colon + 1};
    heed_run *r[2] = {NULL, NULL};
    bool ok = true;
    for (int i = 0; i < 2 && ok; i++) {
        char err[512];
        const float *x;
        if (heed_run_load(path[i], &r[i], err, sizeof err)) {
            fprintf(stderr, "heed: --steer-diff: %s\n", err);
            ok = false;
        } else if (heed_run_lens_model_ok(r[i], m)) {
            fprintf(stderr, "heed: --steer-diff: %s was made with another model\n", path[i]);
            ok = false;
        } else if (heed_run_residual(r[i], 0, l, &x)) {
            fprintf(stderr, "heed: --steer-diff: %s keeps no residuals (a run saved by generate --save with at "
                            "least one output token has them)\n", path[i]);
            ok = false;
        } else {
            for (int d = 0; d < n_embd; d++) v[d] = i ? v[d] - x[d] : x[d];
        }
    }
    heed_run_free(r[0]);
    heed_run_free(r[1]);
    return ok;
}

static int parse_steers(const gen_opts *o, const heed_model *m, const heed_model_info *info, heed_resid_edit *edits,
                        float *vecs) {
    for (int i = 0; i < o->n_steer; i++) {
        char *file = NULL, *end;
        const char *alpha_s;
        int l;
        const char *flag = o->steer_diff[i] ? "--steer-diff" : "--steer";
        if (!split_tail(o->steer[i], &file, info->n_layer, &l, &alpha_s)) {
            fprintf(stderr, "heed: %s: '%s' is not %s:LAYER:ALPHA (layer below %d)\n", flag, o->steer[i],
                    o->steer_diff[i] ? "RUN_A:RUN_B" : "FILE", info->n_layer);
            free(file);
            return -1;
        }
        double alpha = strtod(alpha_s, &end);
        float *v = vecs + (size_t)i * info->n_embd;
        const size_t want = (size_t)info->n_embd * 4;
        struct stat st;
        bool ok = false;
        if (*end || end == alpha_s || !isfinite(alpha))
            fprintf(stderr, "heed: %s: '%s': ALPHA is not a number\n", flag, o->steer[i]);
        else if (o->steer_diff[i])
            ok = steer_diff_vec(m, file, l, info->n_embd, v);
        else if ((errno = 0, stat(file, &st)) || !S_ISREG(st.st_mode)) /* never open a FIFO or a device: it could block */
            fprintf(stderr, "heed: --steer: %s: %s\n", file, errno ? strerror(errno) : "not a regular file");
        else if ((size_t)st.st_size != want)
            fprintf(stderr, "heed: --steer: %s has %lld bytes; a steering vector of this model is %d float32 (%zu bytes)\n",
                    file, (long long)st.st_size, info->n_embd, want);
        else {
            FILE *f = fopen(file, "rb");
            ok = f && fread(v, 1, want, f) == want;
            if (!ok) fprintf(stderr, "heed: --steer: %s: cannot be read\n", file);
            if (f) fclose(f);
        }
        for (int d = 0; ok && d < info->n_embd; d++)
            if (!isfinite(v[d])) {
                fprintf(stderr, "heed: --steer: %s: value %d is not finite\n", file, d);
                ok = false;
            }
        free(file);
        if (!ok) return -1;
        edits[i] = (heed_resid_edit){l, -1, false, (float)alpha, v};
    }
    return 0;
}

/* --patch RUN:L:POS: the run (made with this model) gives its tokens up to
 * POS; the session computes its residual after layer L at POS. */
static int parse_patches(const gen_opts *o, const heed_model *m, const heed_model_info *info, heed_gen_patch *patches,
                         int32_t **srcs) {
    for (int i = 0; i < o->n_patch; i++) {
        char *path = NULL;
        const char *pos_s;
        int l;
        long pos;
        if (!split_tail(o->patch[i], &path, info->n_layer, &l, &pos_s) || !parse_long(pos_s, 0, 1 << 24, &pos)) {
            fprintf(stderr, "heed: --patch: '%s' is not RUN:LAYER:POS (layer below %d)\n", o->patch[i], info->n_layer);
            free(path);
            return -1;
        }
        heed_run *run = NULL;
        char err[512];
        int rc = heed_run_load(path, &run, err, sizeof err);
        if (rc) fprintf(stderr, "heed: --patch: %s\n", err);
        else if (heed_run_lens_model_ok(run, m))
            fprintf(stderr, "heed: --patch: %s was made with another model; a patch needs this model's residuals\n", path);
        heed_run_info ri;
        heed_run_get_info(run, &ri);
        int n_tok = run ? ri.n_prompt + ri.n_output : 0;
        if (!rc && !heed_run_lens_model_ok(run, m) && pos >= n_tok)
            fprintf(stderr, "heed: --patch: %s has %d tokens; position %ld is beyond them\n", path, n_tok, pos);
        bool ok = !rc && !heed_run_lens_model_ok(run, m) && pos < n_tok && (srcs[i] = malloc(sizeof(int32_t) * (size_t)n_tok));
        for (int k = 0; ok && k < n_tok; k++) heed_run_token(run, k, &srcs[i][k], NULL);
        if (ok) patches[i] = (heed_gen_patch){l, (int)pos, srcs[i], n_tok};
        heed_run_free(run);
        free(path);
        if (!ok) return -1;
    }
    return 0;
}

/* The context of a generation: --ctx checked, the prompt fits, n_predict
 * cut to the room left (said on stderr). Returns the context, or NULL after
 * a message. */
static heed_ctx *open_context(const gen_opts *o, const heed_model *m, const heed_model_info *info, int n_prompt,
                              int *n_predict) {
    if (o->n_ctx > info->n_ctx_train) {
        fprintf(stderr, "heed: --ctx %d exceeds the model's context limit of %d tokens\n", o->n_ctx, info->n_ctx_train);
        return NULL;
    }
    /* What the context and (with --save) the recording will take, before allocating */
    /* (--save keeps a long run's q and k in file-backed pages beside the file: not counted) */
    uint64_t per_pos = o->save ? heed_record_bytes(m, true) : 0, avail = heed_mem_available();
    int n_ctx = o->n_ctx;
    if (!n_ctx) { /* the model's limit, bounded by memory; no more than this generation uses */
        long long want = (long long)n_prompt + (o->n_predict > 0 ? o->n_predict : 0);
        n_ctx = want < info->n_ctx_train ? (int)(want > 0 ? want : 1) : info->n_ctx_train;
        int fit = avail ? heed_ctx_fit(m, (uint64_t)(avail * 0.8), per_pos) : n_ctx;
        if (fit < n_ctx) n_ctx = fit;
        if (n_ctx < 1) {
            fprintf(stderr, "heed: not enough memory for any context (%.2f GB available)\n", avail / 1e9);
            return NULL;
        }
    } else if (avail) {
        uint64_t need = heed_ctx_bytes(m, n_ctx) + per_pos * (uint64_t)n_ctx;
        if (need > avail) {
            int fit = heed_ctx_fit(m, (uint64_t)(avail * 0.8), per_pos);
            char rec[64] = "";
            if (per_pos) snprintf(rec, sizeof rec, ", recording %.2f GB", per_pos * (double)n_ctx / 1e9);
            fprintf(stderr,
                    "heed: a context of %d tokens needs %.2f GB (KV cache and scratch %.2f GB%s) but %.2f GB is "
                    "available; --ctx %d fits\n",
                    n_ctx, need / 1e9, heed_ctx_bytes(m, n_ctx) / 1e9, rec, avail / 1e9, fit);
            return NULL;
        }
    }
    heed_ctx_params cp = heed_ctx_default_params();
    cp.n_ctx = n_ctx;
    cp.n_threads = o->n_threads;
    heed_ctx *ctx = NULL;
    int rc = heed_ctx_new(m, &cp, &ctx);
    if (rc) {
        fprintf(stderr, "heed: cannot create a context: %s\n", heed_strerror(rc));
        return NULL;
    }
    n_ctx = heed_ctx_n_ctx(ctx);
    if (n_prompt > n_ctx) {
        fprintf(stderr, "heed: the prompt has %d tokens but the context limit is %d tokens\n", n_prompt, n_ctx);
        heed_ctx_free(ctx);
        return NULL;
    }
    *n_predict = o->n_predict;
    if (n_prompt + *n_predict - 1 > n_ctx) { /* every generated token but the last goes through the model */
        *n_predict = n_ctx - n_prompt + 1;
        fprintf(stderr, "heed: generating at most %d tokens: the context limit is %d tokens\n", *n_predict, n_ctx);
    }
    return ctx;
}

/* What a generation collected for the output. */
typedef struct gen_out {
    step_rec *steps; /* (n_predict + 1) */
    int n_out;
    text_out text;
    capture cap;
    double t0, t1, t2; /* start, prompt done, generation done */
} gen_out;

/* --save: the run to its file; with --json its rows fill the capture. */
static int save_run(const gen_opts *o, heed_gen *g, gen_out *go) {
    heed_run *run = NULL;
    char err[512];
    int rc = heed_gen_finish(g, &run);
    if (!rc) rc = heed_run_save(run, o->save, err, sizeof err);
    if (rc) fprintf(stderr, "heed: cannot save the run: %s\n", rc == HEED_ERR_IO ? err : heed_strerror(rc));
    else if (go->cap.rows && capture_from_run(&go->cap, run)) {
        fprintf(stderr, "heed: out of memory\n");
        rc = HEED_ERR_NOMEM;
    }
    heed_run_free(run);
    return rc;
}

static void print_result(const gen_opts *o, const heed_model *m, heed_gen *g, const int32_t *prompt, int n_prompt,
                         const gen_out *go) {
    if (o->json) {
        write_json(o, m, prompt, n_prompt, heed_gen_output(g), go->n_out, go->steps, go->text.buf ? go->text.buf : "",
                   go->text.len, go->cap.rows ? &go->cap : NULL, heed_gen_stop(g));
        return;
    }
    if (!o->stream && go->text.len) fwrite(go->text.buf, 1, go->text.len, stdout);
    fputc('\n', stdout);
    fflush(stdout); /* the text, then the timings on stderr */
    double pp = go->t1 - go->t0, tg = go->t2 - go->t1;
    fprintf(stderr, "heed: prompt %d tokens in %.1f ms (%.0f tok/s), generated %d tokens (%.0f tok/s)\n", n_prompt,
            pp * 1e3, n_prompt / (pp + 1e-12), go->n_out, go->n_out > 1 ? (go->n_out - 1) / (tg + 1e-12) : 0.0);
}

/* heed generate: the session's loop (gen.c), with the CLI's output around it. */
static int run_generate(const gen_opts *o) {
    heed_model *m = NULL;
    heed_ctx *ctx = NULL;
    heed_gen *g = NULL;
    int32_t *prompt = malloc(sizeof(int32_t) * MAX_IDS);
    gen_out go = {.text = {.print = !o->json && o->stream}};
    int rc = 1, n_prompt = 0, n_predict = 0;
    float *scale = NULL;
    bool bad_scale = false;
    heed_knockout *knock = NULL;
    int n_knock = 0;
    unsigned char *mean_which = NULL;
    heed_resid_edit steers[16];
    heed_gen_patch patches[16];
    int32_t *patch_src[16] = {0};
    float *steer_vecs = NULL;
    heed_model_info info;
    if (!prompt || load_model(o->model, &m)) goto done;
    heed_model_get_info(m, &info);
    if ((scale = head_scales(o, &info, &bad_scale)), bad_scale) goto done;
    if ((n_knock = parse_knockouts(o->knockout, o->n_knockout, &info, &knock)) < 0) goto done;
    if (o->n_steer && (!(steer_vecs = malloc(sizeof(float) * (size_t)o->n_steer * info.n_embd)) ||
                       parse_steers(o, m, &info, steers, steer_vecs)))
        goto done;
    if (o->n_patch && parse_patches(o, m, &info, patches, patch_src)) goto done;
    if (o->ablate_mean) { /* the heads, through parse_heads: factor 0 marks them */
        size_t nh = (size_t)info.n_layer * info.n_head;
        float *marks = malloc(sizeof(float) * nh);
        if (!marks || !(mean_which = calloc(nh, 1))) {
            free(marks);
            goto done;
        }
        for (size_t i = 0; i < nh; i++) marks[i] = 1.0f;
        int prc = parse_heads("--ablate-mean", o->ablate_mean, false, &info, marks);
        for (size_t i = 0; i < nh; i++) mean_which[i] = marks[i] == 0.0f;
        free(marks);
        if (prc) goto done;
    }
    if ((n_prompt = prompt_ids(o, m, &info, prompt)) < 0 || !(ctx = open_context(o, m, &info, n_prompt, &n_predict)))
        goto done;
    if (!(go.steps = calloc((size_t)n_predict + 1, sizeof *go.steps))) goto oom;
    if (o->json && o->attention &&
        capture_init(&go.cap, &info, n_prompt + (n_predict > 0 ? n_predict - 1 : 0), o->att_rows))
        goto done;
    heed_attn_hook hook = {.want = NULL, .observe = capture_observe, .user = &go.cap};
    if (go.cap.rows && !o->save) heed_ctx_set_attn_hook(ctx, &hook); /* with --save the recorder holds it */
    heed_gen_params gp = heed_gen_default_params();
    gp.sampler = o->sp;
    gp.n_predict = n_predict;
    gp.n_top = N_TOP;
    gp.record = o->save != NULL;
    gp.rec.n_threads = o->n_threads;
    char spill[4096] = ".";
    if (o->save) { /* a long run's q/k store in file-backed pages beside the run file */
        const char *slash = strrchr(o->save, '/');
        if (slash && slash > o->save) snprintf(spill, sizeof spill, "%.*s", (int)(slash - o->save), o->save);
        else if (slash) snprintf(spill, sizeof spill, "/");
        gp.rec.spill_dir = spill;
    }
    gp.prompt_text = o->prompt;
    gp.head_scale = scale;
    gp.knockouts = knock;
    gp.n_knockouts = n_knock;
    gp.ablate_mean = mean_which;
    gp.resid_edits = o->n_steer ? steers : NULL;
    gp.n_resid_edits = o->n_steer;
    gp.patches = o->n_patch ? patches : NULL;
    gp.n_patches = o->n_patch;
    if (!o->json) print_prompt(o, m, prompt, n_prompt);
    go.t0 = now_s();
    int grc = heed_gen_start(m, ctx, &gp, prompt, n_prompt, &g);
    go.t1 = now_s();
    heed_gen_step st;
    int next = 0;
    while (!grc && (next = heed_gen_next(g, &st)) == 1) {
        step_rec *r = &go.steps[go.n_out++];
        *r = (step_rec){st.sample.id, st.sample.prob, st.sample.logprob, st.sample.entropy, {{0}}, st.n_top};
        memcpy(r->top, st.top, sizeof *st.top * (size_t)st.n_top);
        if (!text_push(&go.text, st.text, st.text_len)) goto oom;
    }
    if (!grc && next < 0) grc = next;
    go.t2 = now_s();
    if (grc) {
        fprintf(stderr, "heed: %s\n", grc == HEED_ERR_INVALID_ARG ? "invalid sampling parameters"
                                      : heed_ctx_error(ctx)[0]    ? heed_ctx_error(ctx)
                                                                  : heed_strerror(grc));
        goto done;
    }
    if (o->save && save_run(o, g, &go)) goto done;
    print_result(o, m, g, prompt, n_prompt, &go);
    rc = 0;
    goto done;
oom:
    fprintf(stderr, "heed: out of memory\n");
done:
    heed_gen_free(g);
    free(scale);
    free(knock);
    free(mean_which);
    free(steer_vecs);
    for (int i = 0; i < 16; i++) free(patch_src[i]);
    free(go.text.buf);
    free(go.cap.rows);
    free(go.cap.sel);
    free(go.cap.sel_off);
    free(go.steps);
    free(prompt);
    heed_ctx_free(ctx);
    heed_model_free(m);
    return rc;
}

/* --------------------------------------------------------- tokenize */

static int run_tokenize(int argc, char **argv) {
    const char *model = NULL, *text = NULL;
    bool json = false, bos = true, special = false;
    for (int i = 0; i < argc; i++) {
        if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) && i + 1 < argc) model = argv[++i];
        else if (!strcmp(argv[i], "--json")) json = true;
        else if (!strcmp(argv[i], "--no-bos")) bos = false;
        else if (!strcmp(argv[i], "--special")) special = true;
        else if (argv[i][0] == '-' && argv[i][1]) return usage_error("tokenize: unknown option '%s'", argv[i]);
        else if (!text) text = argv[i];
        else return usage_error("%s", "tokenize: give the text as one argument (quote it)");
    }
    if (!text) return usage_error("%s", "tokenize needs a TEXT argument");
    heed_model *m = NULL;
    if (load_model_ex(model, true, &m)) return 1; /* the vocabulary is all it needs */
    heed_model_info info;
    heed_model_get_info(m, &info);
    if (!info.can_tokenize) {
        fprintf(stderr, "heed: cannot tokenize: %s (heed decodes this vocabulary's ids but cannot encode text "
                        "with it)\n", info.tokenize_refusal ? info.tokenize_refusal : "unsupported vocabulary");
        heed_model_free(m);
        return 1;
    }
    unsigned flags = (bos && info.add_bos ? HEED_TOK_ADD_BOS : 0) | (special ? HEED_TOK_PARSE_SPECIAL : 0);
    int n = heed_tokenize_flags(m, text, strlen(text), flags, NULL, 0);
    int32_t *ids = n > 0 ? malloc(sizeof(int32_t) * (size_t)n) : NULL;
    if (n > 0 && ids) n = heed_tokenize_flags(m, text, strlen(text), flags, ids, n);
    if (n < 0 || (n > 0 && !ids)) {
        fprintf(stderr, "heed: cannot tokenize: %s\n",
                n == HEED_ERR_INVALID_ARG ? "the text is not valid UTF-8"
                : n == HEED_ERR_TOKENIZER ? "this vocabulary cannot encode text yet" : heed_strerror(n));
        free(ids);
        heed_model_free(m);
        return 1;
    }
    char label[256], bytes[256];
    if (json) {
        jsonw w;
        jw_init(&w, stdout);
        jw_obj(&w);
        const char *base = strrchr(info.path, '/');
        jw_key(&w, "model"); jw_cstr(&w, base ? base + 1 : info.path);
        jw_key(&w, "ids"); json_ids(&w, ids, n);
        jw_key(&w, "tokens");
        jw_arr(&w);
        for (int i = 0; i < n; i++) {
            const char *piece = heed_token_piece(m, ids[i]);
            int nb = heed_token_bytes(m, ids[i], bytes, sizeof bytes);
            heed_token_label(m, ids[i], label, sizeof label);
            jw_obj(&w);
            jw_key(&w, "id"); jw_int(&w, ids[i]);
            jw_key(&w, "piece"); jw_cstr(&w, piece ? piece : "");
            jw_key(&w, "label"); jw_cstr(&w, label);
            jw_key(&w, "bytes");
            jw_arr(&w);
            for (int k = 0; k < nb && k < (int)sizeof bytes; k++) jw_int(&w, (unsigned char)bytes[k]);
            jw_arr_end(&w);
            jw_obj_end(&w);
        }
        jw_arr_end(&w);
        jw_obj_end(&w);
        fputc('\n', stdout);
    } else {
        printf("%d tokens\n", n);
        for (int i = 0; i < n; i++) {
            const char *piece = heed_token_piece(m, ids[i]);
            heed_token_label(m, ids[i], label, sizeof label);
            printf("%6d  %8d  %-24s  '%s'\n", i, ids[i], piece ? piece : "", label);
        }
    }
    free(ids);
    heed_model_free(m);
    return 0;
}

/* ----------------------------------------------------------- export */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* The model that labels an exported viewer's candidates and logit lens: -m,
 * else the bundled one when the run was made with it, else none. */
static heed_model *export_model(const char *path, const heed_run *run) {
    heed_run_info ri;
    heed_run_get_info(run, &ri);
    heed_model *m = NULL;
    if (path) {
        if (load_model(path, &m)) return NULL;
    } else if (heed_model_load(NULL, NULL, &m, NULL, 0)) {
        return NULL;
    }
    heed_model_info mi;
    heed_model_get_info(m, &mi);
    const char *base = strrchr(mi.path, '/');
    if (mi.n_vocab != ri.n_vocab || (!path && strcmp(base ? base + 1 : mi.path, ri.model_file))) {
        if (path) fprintf(stderr, "heed: %s is not the run's model (%s); exporting without its labels\n", path, ri.model_file);
        heed_model_free(m);
        return NULL;
    }
    return m;
}

/* A run recorded with its lens on demand (the default) gets it computed
 * before an npz or JSON export, with -m or the bundled model when it made
 * the run; without that model the export leaves the lens out and says so. */
static void export_lens(heed_run *run, const char *model_path) {
    if (heed_run_lens_pending(run) == 0) return;
    heed_run_info ri;
    heed_run_get_info(run, &ri);
    heed_model *m = export_model(model_path, run);
    int rc = m ? heed_run_lens_compute(run, m, NULL, 0, ri.n_output) : HEED_ERR_NEED_MODEL;
    if (rc)
        fprintf(stderr, "heed: the logit lens is left out: it is computed with the model that made the run (%s); "
                        "give it with -m (%s)\n", ri.model_file, heed_strerror(rc));
    heed_model_free(m);
}

static int run_export(int argc, char **argv) {
    const char *in = NULL, *out = NULL, *model_path = NULL;
    bool full = false;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "--full")) full = true;
        else if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) && i + 1 < argc) model_path = argv[++i];
        else if (argv[i][0] == '-') return usage_error("export: unknown option '%s'", argv[i]);
        else if (!in) in = argv[i];
        else return usage_error("%s", "export: one RUN file at a time");
    }
    if (!in || !out) return usage_error("%s", "export needs RUN and -o OUT.npz|OUT.json|OUT.html|OUT.trace");
    if (!ends_with(out, ".npz") && !ends_with(out, ".json") && !ends_with(out, ".html") && !ends_with(out, ".trace"))
        return usage_error("export: '%s' should end in .npz, .json, .html or .trace (a heed-trace/1 folder)", out);
    char err[512] = "";
    heed_run *run = NULL;
    int rc = heed_run_load(in, &run, err, sizeof err);
    if (!rc && ends_with(out, ".trace")) {
        rc = heed_run_export_trace(run, out, err, sizeof err);
    } else if (!rc && ends_with(out, ".html")) {
        heed_model *m = export_model(model_path, run);
        rc = webexport_html(run, m, out, WEBEXPORT_BUDGET, err, sizeof err) ? HEED_ERR_IO : 0;
        heed_model_free(m);
    } else if (!rc) {
        export_lens(run, model_path);
        if (full && !ends_with(out, ".npz")) {
            heed_run_free(run);
            return usage_error("%s", "export: --full goes with OUT.npz");
        }
        rc = ends_with(out, ".npz") ? heed_run_export_npz_ex(run, out, full ? HEED_EXPORT_FULL : 0, err, sizeof err)
                                    : heed_run_export_json(run, out, err, sizeof err);
    }
    heed_run_free(run);
    if (rc) {
        fprintf(stderr, "heed: %s\n", err[0] ? err : heed_strerror(rc));
        return 1;
    }
    return 0;
}

/* heed import TRACE -o RUN: a heed-trace/1 folder (another engine's q/k)
 * as a run file. */
static int run_import(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    heed_trace_params tp = heed_trace_default_params();
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long l = 0;
        float f = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (a[0] == '-' && strcmp(a, "-o") && strncmp(a, "--", 2)) return usage_error("import: unknown option '%s'", a);
        if (a[0] == '-' && !v) return usage_error("import: %s needs a value", a);
        if (!strcmp(a, "-o")) out = v;
        else if (!strcmp(a, "--token-ids")) tp.token_ids = v;
        else if (!strcmp(a, "--sliding-window")) tp.sliding_window = v;
        else if (!strcmp(a, "--sequence") && parse_long(v, 0, 1 << 20, &l)) tp.sequence = (int)l;
        else if (!strcmp(a, "--n-prompt") && parse_long(v, 1, 1 << 20, &l)) tp.n_prompt = (int)l;
        else if (!strcmp(a, "--head-dim") && parse_long(v, 1, 1 << 16, &l)) tp.head_dim = (int)l;
        else if (!strcmp(a, "--n-head") && parse_long(v, 1, 1 << 16, &l)) tp.n_head = (int)l;
        else if (!strcmp(a, "--n-head-kv") && parse_long(v, 1, 1 << 16, &l)) tp.n_head_kv = (int)l;
        else if (!strcmp(a, "--scale") && parse_float(v, &f) && f > 0) tp.scale = f;
        else if (!strcmp(a, "--softcap") && parse_float(v, &f) && f > 0) tp.attn_softcap = f;
        else if (a[0] == '-') return usage_error("import: unknown option '%s', or '%s' is not its value (a positive number)", a, v);
        else if (!in) in = a;
        else return usage_error("%s", "import: one TRACE folder at a time");
        if (a[0] == '-') i++;
    }
    if (!in || !out) return usage_error("%s", "import needs TRACE (a heed-trace/1 folder or vLLM-Hook capture) and -o RUN");
    char err[512] = "";
    heed_run *run = NULL;
    int rc = heed_trace_import_ex(in, &tp, &run, err, sizeof err);
    if (!rc) rc = heed_run_save(run, out, err, sizeof err);
    if (!rc) {
        heed_run_info ri;
        heed_run_get_info(run, &ri);
        printf("%s: %d tokens, %d layers x %d heads, the exact tier (every row recomputed from q and k)\n", out,
               ri.n_pos, ri.n_layer, ri.n_head);
    }
    heed_run_free(run);
    if (rc) {
        fprintf(stderr, "heed: %s\n", err[0] ? err : heed_strerror(rc));
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------- info */

/* heed info: a model whose weights heed cannot run (a vocabulary-only
 * file, an architecture heed lacks: HEED_ERR_UNSUPPORTED) is shown from its
 * vocabulary and metadata, with the reason; a corrupt file is an error. */
static int run_info(const char *path) {
    heed_model *m = NULL;
    char err[512], cached[PATH_MAX];
    int pr = pull_resolve(path, cached, sizeof cached, err, sizeof err); /* -m ORG/REPO[:FILE]: the pulled copy */
    if (pr < 0) {
        fprintf(stderr, "heed: %s\n", err);
        return 1;
    }
    if (pr > 0) path = cached;
    heed_model_params mp = heed_model_default_params();
    mp.progress = true;
    int rc = heed_model_load(path, &mp, &m, err, sizeof err);
    if (rc == HEED_ERR_UNSUPPORTED) {
        mp.vocab_only = true;
        if (heed_model_load(path, &mp, &m, NULL, 0)) m = NULL;
    }
    if (!m) {
        fprintf(stderr, "heed: %s\n", err[0] ? err : heed_strerror(rc));
        return 1;
    }
    heed_model_info i;
    heed_model_get_info(m, &i);
    printf("file:        %s (%llu bytes)\n", i.path, (unsigned long long)i.file_size);
    printf("name:        %s\n", i.name);
    printf("arch:        %s\n", i.arch);
    if (i.vocab_only && heed_model_n_tensors(m) == 0)
        printf("weights:     none: a vocabulary-only file (it can tokenize but not generate)\n");
    else if (i.vocab_only)
        printf("weights:     not loaded (%s): shown for its vocabulary only\n", err[0] ? err : heed_strerror(rc));
    else
        printf("geometry:    %d layers, width %d, %d heads (%d KV heads), head dim %d, FFN %d\n", i.n_layer,
               i.n_embd, i.n_head, i.n_head_kv, i.head_dim, i.n_ff);
    printf("vocabulary:  %d tokens, %s tokenizer%s; BOS %d, EOS %d, EOT %d, add BOS %s\n", i.n_vocab,
           i.tokenizer, i.can_tokenize ? "" : " (text encoding not yet supported: use --ids)", i.bos, i.eos,
           i.eot, i.add_bos ? "yes" : "no");
    if (!i.vocab_only) {
        printf("context:     %d tokens; rope base %g; rms eps %g; output %s\n", i.n_ctx_train, i.rope_base,
               i.rms_eps, i.tied_output ? "tied to token_embd" : "separate");
        /* how attention rows are formed: what every view of a run of this model shows */
        printf("attention:   scores q.k x %g", i.attn_scale);
        if (i.attn_softcap > 0) printf(", soft-capped at %g", i.attn_softcap);
        int first_w = -1, n_w = 0;
        for (int l = 0; l < i.n_layer; l++)
            if (i.layer_window[l] > 0) n_w++, first_w = first_w < 0 ? l : first_w;
        if (n_w) printf("; sliding window of %d keys on %d of %d layers", i.layer_window[first_w], n_w, i.n_layer);
        if (i.final_softcap > 0) printf("; logits soft-capped at %g", i.final_softcap);
        printf("\n");
        if (i.n_expert) printf("experts:     %d per layer, %d chosen per token\n", i.n_expert, i.n_expert_used);
    }

    int n_types = 0;
    const char *types[16];
    int counts[16] = {0};
    for (int t = 0; t < heed_model_n_tensors(m); t++) {
        heed_tensor_info ti;
        heed_model_tensor(m, t, &ti);
        int k = 0;
        while (k < n_types && strcmp(types[k], ti.type)) k++;
        if (k == n_types && n_types < 16) types[n_types++] = ti.type;
        if (k < 16) counts[k]++;
    }
    printf("tensors:     %d (", heed_model_n_tensors(m));
    for (int k = 0; k < n_types; k++) printf("%s%s: %d", k ? ", " : "", types[k], counts[k]);
    printf(")\n\nmetadata:\n");
    char buf[1024];
    for (int k = 0; k < heed_model_n_meta(m); k++) {
        heed_model_meta_value(m, k, buf, sizeof buf);
        printf("  %-44s %s\n", heed_model_meta_key(m, k), buf);
    }
    printf("\ntensors:\n");
    for (int t = 0; t < heed_model_n_tensors(m); t++) {
        heed_tensor_info ti;
        heed_model_tensor(m, t, &ti);
        printf("  %-36s %-5s [", ti.name, ti.type);
        for (int d = 0; d < ti.n_dims; d++) printf("%s%lld", d ? ", " : "", (long long)ti.ne[d]);
        printf("]  %llu bytes\n", (unsigned long long)ti.n_bytes);
    }
    heed_model_free(m);
    return 0;
}

/* ------------------------------------------------------------- args */

static int parse_generate(int argc, char **argv, gen_opts *o) {
    memset(o, 0, sizeof *o);
    o->n_predict = 64;
    o->stream = true;
    o->sp = heed_sampler_default_params();
    bool att_set = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        long l;
        float f;
#define NEED_VALUE() do { if (!v) return usage_error("%s needs a value", a); i++; } while (0)
        if (!strcmp(a, "-m") || !strcmp(a, "--model")) { NEED_VALUE(); o->model = v; }
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) { NEED_VALUE(); o->prompt = v; }
        else if (!strcmp(a, "--ids")) { NEED_VALUE(); o->ids = v; }
        else if (!strcmp(a, "--chat")) { o->chat = true; }
        else if (!strcmp(a, "--save")) { NEED_VALUE(); o->save = v; }
        else if (!strcmp(a, "--ablate")) { NEED_VALUE(); o->ablate = v; }
        else if (!strcmp(a, "--scale")) { NEED_VALUE(); o->scale = v; }
        else if (!strcmp(a, "--ablate-mean")) { NEED_VALUE(); o->ablate_mean = v; }
        else if (!strcmp(a, "--steer") || !strcmp(a, "--steer-diff")) {
            NEED_VALUE();
            if (o->n_steer == 16) return usage_error("%s", "--steer, --steer-diff: at most 16 flags");
            o->steer_diff[o->n_steer] = !strcmp(a, "--steer-diff");
            o->steer[o->n_steer++] = v;
        } else if (!strcmp(a, "--patch")) {
            NEED_VALUE();
            if (o->n_patch == 16) return usage_error("%s", "--patch: at most 16 flags");
            o->patch[o->n_patch++] = v;
        }
        else if (!strcmp(a, "--knockout")) {
            NEED_VALUE();
            if (o->n_knockout == 16) return usage_error("%s", "--knockout: at most 16 flags (each may list many)");
            o->knockout[o->n_knockout++] = v;
        }
        else if (!strcmp(a, "--system")) { NEED_VALUE(); o->system = v; }
        else if (!strcmp(a, "-n") || !strcmp(a, "--n-predict")) {
            NEED_VALUE();
            if (!parse_long(v, 0, 1 << 20, &l)) return usage_error("-n: '%s' is not a count (0..1048576)", v);
            o->n_predict = (int)l;
        } else if (!strcmp(a, "--temp")) {
            NEED_VALUE();
            if (!parse_float(v, &f) || f < 0) return usage_error("--temp: '%s' is not a temperature >= 0", v);
            o->sp.temperature = f;
        } else if (!strcmp(a, "--top-k")) {
            NEED_VALUE();
            if (!parse_long(v, 0, INT_MAX, &l)) return usage_error("--top-k: '%s' is not a count >= 0", v);
            o->sp.top_k = (int)l;
        } else if (!strcmp(a, "--top-p")) {
            NEED_VALUE();
            if (!parse_float(v, &f) || f <= 0 || f > 1) return usage_error("--top-p: '%s' is not in (0, 1]", v);
            o->sp.top_p = f;
        } else if (!strcmp(a, "--min-p")) {
            NEED_VALUE();
            if (!parse_float(v, &f) || f < 0 || f > 1) return usage_error("--min-p: '%s' is not in [0, 1]", v);
            o->sp.min_p = f;
        } else if (!strcmp(a, "--repeat-penalty")) {
            NEED_VALUE();
            if (!parse_float(v, &f) || f <= 0) return usage_error("--repeat-penalty: '%s' is not a number > 0", v);
            o->sp.repeat_penalty = f;
        } else if (!strcmp(a, "--repeat-last-n")) {
            NEED_VALUE();
            if (!parse_long(v, 0, 1 << 20, &l)) return usage_error("--repeat-last-n: '%s' is not a count", v);
            o->sp.repeat_last_n = (int)l;
        } else if (!strcmp(a, "--seed")) {
            NEED_VALUE();
            if (!parse_u64(v, &o->sp.seed)) return usage_error("--seed: '%s' is not a non-negative integer", v);
        } else if (!strcmp(a, "--threads")) {
            NEED_VALUE();
            if (!parse_long(v, 1, 1024, &l)) return usage_error("--threads: '%s' is not in 1..1024", v);
            o->n_threads = (int)l;
        } else if (!strcmp(a, "--ctx")) {
            NEED_VALUE();
            if (!parse_long(v, 1, 1 << 24, &l)) return usage_error("--ctx: '%s' is not a token count", v);
            o->n_ctx = (int)l;
        } else if (!strcmp(a, "--json")) {
            o->json = true;
        } else if (!strcmp(a, "--attention")) {
            NEED_VALUE();
            o->att_rows = NULL;
            if (!strcmp(v, "full")) o->attention = true;
            else if (!strcmp(v, "none")) o->attention = false;
            else if (!strncmp(v, "rows:", 5) && v[5]) o->attention = true, o->att_rows = v + 5;
            else return usage_error("--attention: '%s' is not full, none or rows:P1,P2,...", v);
            att_set = true;
        } else if (!strcmp(a, "--no-stream")) {
            o->stream = false;
        } else {
            return usage_error("unknown option '%s' (see heed --help)", a);
        }
#undef NEED_VALUE
    }
    if (!att_set) o->attention = o->json;
    if (o->prompt && o->ids) return usage_error("%s", "give either -p or --ids, not both");
    if (!o->prompt && !o->ids) return usage_error("%s", "generate needs a prompt: -p TEXT or --ids LIST");
    if (o->chat && o->ids) return usage_error("%s", "--chat needs a text prompt (-p), not --ids");
    if (o->system && !o->chat) return usage_error("%s", "--system needs --chat");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "heed: no command given\n%s", usage_text);
        return 2;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        fputs(usage_text, stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("heed %s\n", HEED_VERSION);
        return 0;
    }
    if (!strcmp(argv[1], "generate")) {
        gen_opts o;
        if (parse_generate(argc - 2, argv + 2, &o)) return 2;
        return run_generate(&o);
    }
    if (!strcmp(argv[1], "serve")) return server_main(argc - 2, argv + 2);
    if (!strcmp(argv[1], "tokenize")) return run_tokenize(argc - 2, argv + 2);
    if (!strcmp(argv[1], "pull")) return pull_main(argc - 2, argv + 2);
    if (!strcmp(argv[1], "export")) return run_export(argc - 2, argv + 2);
    if (!strcmp(argv[1], "import")) return run_import(argc - 2, argv + 2);
    if (!strcmp(argv[1], "mcp")) return mcp_main(argc - 2, argv + 2);
    if (!strcmp(argv[1], "info")) {
        const char *model = NULL;
        for (int i = 2; i < argc; i++) {
            if ((!strcmp(argv[i], "-m") || !strcmp(argv[i], "--model")) && i + 1 < argc) model = argv[++i];
            else return usage_error("info: unknown argument '%s'", argv[i]);
        }
        return run_info(model);
    }
    fprintf(stderr, "heed: unknown command '%s'\n%s", argv[1], usage_text);
    return 2;
}
