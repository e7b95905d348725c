/*
 * api_int.h - what the files of the server's handlers share (api.c,
 * api_gen.c, api_stream.c, api_runs.c, api_view.c, api_snapshot.c): the
 * engine and its queue, a generation, the view environment, and the helpers
 * each file offers the others. Private to those files; the contract of the
 * handlers as a whole is api.h.
 */
#ifndef HEED_API_INT_H
#define HEED_API_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <jansson.h>

#include "api.h"
#include "heed.h"
#include "store.h"

#define API_N_TOP 5      /* candidates reported per token */
#define API_WAIT_MS 1000 /* a waiting stream wakes this often to report and to notice a gone client */
#define LABEL_MAX 256
#define BYTES_MAX 512

/* ------------------------------------------------------------ engine */

/* A place in the engine's queue; the head is the generation running. */
typedef struct ticket {
    struct ticket *prev, *next;
    struct gen *g;
    bool queued;
} ticket;

/* One thread runs every generation, one at a time, in arrival order. It
 * never waits for a client: a streamed generation writes its events into
 * the stream's own buffer (bounded: a client too far behind is dropped), and
 * the connection's thread copies them out as the client reads. */
typedef struct engine {
    heed_ctx *ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* the queue changed, a stream has new bytes, a generation ended */
    ticket *head, *tail;
    pthread_t thread;
    bool started;
    int n_streams; /* streams handed to the HTTP layer and not yet freed */
    /* Used only by the engine thread: */
    float *row; /* (n_ctx) newest query's row, mean over layers and heads (the live summary) */
    char kv_run[40]; /* the stored run whose KV cache the context holds ("" : none), for branches to keep */
} engine;

/* What a view of a stored run may use besides the run and its arguments:
 * the served model (labels, and the logit lens computed on request) and the
 * lens's scratch context. Never the server itself. */
typedef struct api_view_env {
    const heed_model *model; /* NULL: no labels, no lens to compute */
    const char *model_id;    /* its file name: runs made with it get labels */
    int n_vocab;
    int n_threads;           /* for the lens's scratch context */
    heed_ctx *lens_ctx;      /* made on first use, under lens_mu */
    pthread_mutex_t lens_mu;
} api_view_env;

/* The request cache of the original design: a finished /api/runs request
 * (its prompt's token ids plus the parameters that decide the output) maps
 * to its stored run, and the same request again replays that run instead of
 * generating. Sampling is deterministic for a seed, so the replay is what
 * generation would give. */
typedef struct req_cache_entry {
    char *key;
    char run_id[40];
    unsigned long long used; /* LRU clock */
} req_cache_entry;
/* What /metrics reports: counters updated as requests end and generations
 * finish (atomics: any thread), read at scrape time. */
#define API_METRIC_ROUTES 32
#define API_METRIC_STATUSES 14 /* the statuses the API answers with, and one for any other */
typedef struct api_metrics {
    atomic_ulong requests[API_METRIC_ROUTES][API_METRIC_STATUSES];
    atomic_ulong generations, tokens, prompt_tokens, cancelled;
    atomic_ullong decode_us, first_token_us, first_token_n, queue_us, prompt_us;
} api_metrics;

typedef struct api_monitor api_monitor; /* api_monitor.c: GET /api/monitor's subscribers */
struct api {
    heed_model *model;
    api_monitor *mon;      /* the monitor stream's subscribers */
    api_metrics metrics;
    heed_model_info info;
    api_view_env view;     /* what the views read: the model, its labels, the lens's scratch */
    char model_id[256];
    api_config cfg;
    int n_ctx;
    atomic_bool stopping;
    engine eng;
    store *store;
    pthread_mutex_t runs_mu;
    unsigned long long n_made; /* under runs_mu */
    unsigned long long id_stem; /* run ids: run_STEM_N */
    req_cache_entry *rcache;    /* (cfg.cache_runs), under runs_mu */
    unsigned long long rclock;
    long long started;
    char *upstream_url;  /* heed serve --upstream: generations are made there (upstream.c), or NULL */
    char *upstream_key;  /* --upstream-key: sent as Authorization: Bearer, or NULL */
};
typedef struct gen_params {
    int max_tokens;
    heed_sampler_params sp;
    bool stream, attn_tokens;
    bool attn_split; /* /api/runs: token events carry the step's split view */
} gen_params;
enum { GEN_HEED, GEN_COMPLETION, GEN_CHAT };
/* A generation's phase, under eng.mu: waiting in the queue, running on the
 * engine thread, ended (every event written; or a replay, written whole). */
enum { G_QUEUED, G_RUNNING, G_END };
/* A generation. Owned by references (refs, under eng.mu): the request's
 * (its stream, or the handler waiting for a non-streamed reply) and the
 * engine's while it is queued or running; the last to let go frees it.
 * The engine thread alone touches the generation's state (sampler, recorder,
 * outputs, steps) until phase is G_END; pend, phase and the flags are
 * shared under eng.mu. */
typedef struct gen {
    api *api;
    int kind;
    gen_params p;
    int32_t *prompt;
    int n_prompt, n_predict;
    char *prompt_text; /* NULL when the prompt came as messages */
    json_t *messages;  /* NULL when the prompt came as text */
    ticket tk;
    int refs;
    int phase;
    bool streamed;     /* events go to pend for an SSE reader */
    atomic_bool gone;  /* the client left: the generation ends at its next token */
    atomic_bool dropped; /* the client fell too far behind: dropped, the generation cancelled */
    heed_gen *sess;    /* the generation session, while it runs (on the engine thread) */
    int32_t *out;      /* (n_predict + 1) the outputs so far */
    int n_out;
    char *text;
    size_t text_len, text_cap;
    json_t *steps;
    const char *stop;  /* "length", "eog", "cancelled", "error" */
    char run_id[40];
    long long created;
    /* a failed non-streamed generation: its HTTP status, code and message */
    int fail_status;
    const char *fail_code;
    char fail_msg[256];
    /* stream output not yet copied out (under eng.mu) */
    char *pend;
    size_t pend_len, pend_cap, pend_off;
    double pend_since; /* when the oldest unread bytes began to wait (reads count as progress) */
    int last_ahead;
    char *cache_key;  /* /api/runs requests: the request-cache key, or NULL */
    int32_t *forced;  /* a branch: output tokens taken, not sampled (the earlier run's prefix) */
    int n_forced;
    json_t *branch;   /* a branch: {"run","step","token"?}, kept in the run's document */
    json_t *interventions; /* the request's "interventions", kept in the run's document; or NULL */
    json_t *documents;     /* the request's documents placed in the prompt: [{name, first, n_tok}]; or NULL */
    bool provenance;       /* "provenance": true: a non-streamed OpenAI response carries it */
    int intervene_from;    /* a branch's interventions act from this position on (heed_gen_params) */
    int reused;            /* positions of a parent's KV cache the generation kept */
    store_run *parent;     /* that parent while the session takes from it (referenced), or NULL */
    float *head_scale; /* (n_layer, n_head) what they do to the heads, or NULL: none */
    heed_knockout *knockouts; /* (n_knockouts) the knockouts among them */
    unsigned char *ablate_mean; /* (n_layer, n_head) heads mean-ablated, or NULL */
    heed_resid_edit *edits;     /* (n_edits) steering, vectors in edit_vecs (n_edits, n_embd) */
    float *edit_vecs;
    int n_edits;
    heed_gen_patch *patches;    /* (n_patches) activation patching, sources in patch_src */
    int32_t **patch_src;
    int n_patches;
    int n_knockouts;
    /* timings (api_mono_s), on the engine thread: queued, started (taken by
     * the engine), prompt done, first token event out, last token event out */
    double t_queued, t_started, t_prompt, t_first, t_last;
    json_t *replay;   /* a cached run's document being replayed */
    /* --upstream (upstream.c): the run built from what the upstream sent, for gen_finish; and
     * whether the upstream has answered 200 (under eng.mu: the stream's handler waits for it) */
    heed_run *up_run;
    bool up_open;
} gen;
struct api_stream {
    gen *g;
};
typedef struct view_args {
    heed_attn_sel sel;
    int layer, head; /* the one selected, or -1 for all */
} view_args;
typedef int (*view_fn)(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp);

/* ---- api.c */

void api_reply_json_prec(api_reply *rp, int status, json_t *j, int prec);
void api_reply_json(api_reply *rp, int status, json_t *j);
const char *api_error_type(int status);
bool api_get_num(json_t *o, const char *name, double *v, api_reply *rp);
bool api_get_bool(json_t *o, const char *name, bool *v, api_reply *rp);
void api_reply_store_error(api_reply *rp, int rc, const char *id, const char *err);
/* The stored run id, referenced (store_release), or NULL with the store's
 * error in rp (404 for an unknown id). */
store_run *api_run_acquire(api *a, const char *id, api_reply *rp);
json_t *api_parse_body(const api_req *rq, api_reply *rp);
json_t *api_floats_json(const float *x, int n);
json_t *api_split_json(const float *w, int np, int t, float in_mass, float out_mass);
json_t *api_label_json(const heed_model *m, int32_t id);
json_t *api_ids_json(const int32_t *ids, int n);
/* The document of GET /api/runs/{id} rebuilt from a recording (an export's,
 * an uploaded run's): metadata, tokens, steps with their top sources; the
 * text is the outputs' labels. model (NULL: none) labels the candidates. */
json_t *api_run_doc(heed_run *run, const heed_model *model, const char *run_id, long long created);
/* The text of a run's tokens first .. first+n-1: their labels joined. */
json_t *api_labels_text(heed_run *run, int first, int n);
const char *api_arg(const api_req *rq, const char *name);
bool api_arg_int(const api_req *rq, const char *name, long lo, long hi, long *v, api_reply *rp);
bool api_arg_float(const api_req *rq, const char *name, double lo, double hi, double *v, api_reply *rp);
int api_arg_enum(const api_req *rq, const char *name, const char *const *choices, int n, api_reply *rp);
void api_reply_body(api_reply *rp, char *body, size_t len, const char *type);

/* ---- api_gen.c */

double api_mono_s(void);
/* Appends n bytes to the generation's text (g->text, NUL-terminated). false: no memory. */
bool api_text_append(gen *g, const char *s, size_t n);
int api_queue_ahead_locked(const engine *e, const ticket *t);
void api_queue_remove_locked(engine *e, ticket *t);
void api_gen_free(gen *g);
char *api_req_cache_key(const gen *g);
gen *api_gen_from_body(api *a, json_t *body, int kind, api_reply *rp);
void api_gen_release(gen *g);
void *api_engine_main(void *arg);
bool api_engine_enqueue(api *a, gen *g);
int api_gen_run(gen *g, api_reply *rp);
json_t *api_cached_run(api *a, const char *key);

/* ---- api_stream.c */

void api_sse_event(gen *g, const char *name, json_t *j);
json_t *api_oai_chunk(gen *g, json_t *step, bool first);
void api_gen_fail(gen *g, int status, const char *code, const char *msg);
void api_stream_done(gen *g);
void api_stream_replay(gen *g);
void api_emit_step(gen *g, json_t *ev);
int api_reply_stream_of(gen *g, api_reply *rp);
int api_reply_stream(gen *g, api_reply *rp);
int api_route_run_create(api *a, const api_req *rq, api_reply *rp);
int api_route_v1_models(api *a, const api_req *rq, api_reply *rp);
int api_route_v1_completions(api *a, const api_req *rq, api_reply *rp);
int api_route_v1_chat(api *a, const api_req *rq, api_reply *rp);

/* ---- api_runs.c */

int api_route_run_list(api *a, const api_req *rq, api_reply *rp);
int api_route_run_get(api *a, const api_req *rq, api_reply *rp);
int api_route_run_delete(api *a, const api_req *rq, api_reply *rp);
int api_route_run_attention(api *a, const api_req *rq, api_reply *rp);
int api_route_run_graph(api *a, const api_req *rq, api_reply *rp);
int api_route_run_heatmap(api *a, const api_req *rq, api_reply *rp);
int api_route_run_candidates(api *a, const api_req *rq, api_reply *rp);
int api_route_run_lens(api *a, const api_req *rq, api_reply *rp);
int api_route_run_stats(api *a, const api_req *rq, api_reply *rp);
int api_route_run_experts(api *a, const api_req *rq, api_reply *rp);
int api_route_run_effects(api *a, const api_req *rq, api_reply *rp);
int api_route_run_rollout(api *a, const api_req *rq, api_reply *rp);
int api_route_run_download(api *a, const api_req *rq, api_reply *rp);
int api_route_run_upload(api *a, const api_req *rq, api_reply *rp);
int api_route_run_verify(api *a, const api_req *rq, api_reply *rp);
int api_route_run_provenance(api *a, const api_req *rq, api_reply *rp);

/* ---- api.c: metrics */

/* A generation finished (its timings and counts). */
void api_metrics_generation(api *a, const gen *g);

/* ---- api_view.c */

int api_view_attention(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp);
int api_view_graph(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp);
int api_view_heatmap(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp);
int api_view_candidates(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp);
int api_view_lens(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp);
int api_view_stats(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp);
int api_view_experts(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp);
int api_view_effects(heed_run *run, heed_run *base, const char *base_id, api_reply *rp);
int api_view_rollout(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp);
int api_view_verify(api_view_env *env, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp);
/* A run's provenance (GET /api/runs/{id}/provenance, a chat response's
 * "provenance"): docs is the run document's "documents" (borrowed). NULL
 * with rp filled on an error. */
json_t *api_provenance(api_view_env *env, heed_run *run, const heed_run_info *ri, json_t *docs, bool verify,
                       api_reply *rp);
char *api_view_key(const api_req *rq);

/* ---- api_monitor.c */

api_monitor *api_monitor_new(void);
/* On the engine thread, after a token's event ev (may be NULL: no token):
 * its monitor event to every subscriber; one branch when there is none. */
void api_monitor_token(gen *g, json_t *ev);
void api_monitor_stop(api *a);
void api_monitor_free(api *a);
void api_monitor_counters(api *a, unsigned long *subs, unsigned long *events, unsigned long *dropped, double *secs);
int api_route_monitor(api *a, const api_req *rq, api_reply *rp);

#endif
