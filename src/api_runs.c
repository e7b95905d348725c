/*
 * api_runs.c - stored runs: list, read, delete, and every view route,
 * answered from the store's view cache or computed under the run's lock by
 * api_view.c.
 */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "api_int.h"
#include "webexport.h"

int api_route_run_list(api *a, const api_req *rq, api_reply *rp) {
    long limit = 100, offset = 0;
    if (!api_arg_int(rq, "limit", 1, 1000, &limit, rp) || !api_arg_int(rq, "offset", 0, 1L << 40, &offset, rp)) return 0;
    char *runs;
    long long total;
    int rc = store_list(a->store, (int)limit, (long long)offset, &runs, &total);
    if (rc) {
        api_reply_store_error(rp, rc, rq->param, "cannot list the runs");
        return 0;
    }
    json_t *arr = json_loads(runs, 0, NULL);
    free(runs);
    api_reply_json(rp, 200, json_pack("{s:o, s:I, s:i, s:I}", "runs", arr ? arr : json_array(), "total",
                                  (json_int_t)total, "limit", (int)limit, "offset", (json_int_t)offset));
    return 0;
}

int api_route_run_get(api *a, const api_req *rq, api_reply *rp) {
    char *doc;
    int rc = store_get_doc(a->store, rq->param, &doc);
    if (rc) api_reply_store_error(rp, rc, rq->param, "cannot read the run");
    else api_reply_body(rp, doc, strlen(doc), "application/json");
    return 0;
}

int api_route_run_delete(api *a, const api_req *rq, api_reply *rp) {
    int rc = store_delete(a->store, rq->param);
    if (rc) api_reply_store_error(rp, rc, rq->param, "cannot delete the run");
    else api_reply_json(rp, 200, json_pack("{s:s, s:b}", "id", rq->param, "deleted", 1));
    return 0;
}

/* ---- views of a stored run
 *
 * Each view handler parses and checks its arguments against the run, then
 * computes one heed_run view while holding the run's lock. The reply is
 * kept in the run's cache under the normalized request (path and sorted
 * arguments), so a repeated read only copies bytes. */
/* Finds the run, answers from the view cache or computes fn under the run's
 * lock, and caches a successful reply. */
/* A view of a stored run: from the view cache, or computed by cb under the
 * run's lock and kept there. */
typedef void (*run_cb)(api *a, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp, void *user);

static int run_view_cb(api *a, const api_req *rq, api_reply *rp, run_cb cb, void *user) {
    store_run *sr = api_run_acquire(a, rq->param, rp);
    if (!sr) return 0;
    char *key = api_view_key(rq);
    if (key && store_view_get(a->store, sr, key, &rp->body, &rp->body_len, &rp->content_type)) {
        rp->status = 200;
    } else {
        heed_run *run = store_run_get(sr);
        heed_run_info ri;
        store_run_lock(sr);
        heed_run_get_info(run, &ri);
        cb(a, rq, run, &ri, rp, user);
        store_run_unlock(sr);
        if (key && rp->status == 200 && rp->body)
            store_view_put(a->store, sr, key, rp->body, rp->body_len, rp->content_type);
    }
    free(key);
    store_release(a->store, sr);
    return 0;
}

static void call_view(api *a, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp, void *user) {
    (*(view_fn *)user)(&a->view, rq, run, ri, rp);
}

static int run_view(api *a, const api_req *rq, api_reply *rp, view_fn fn) {
    return run_view_cb(a, rq, rp, call_view, &fn);
}

int api_route_run_attention(api *a, const api_req *rq, api_reply *rp) { return run_view(a, rq, rp, api_view_attention); }
int api_route_run_graph(api *a, const api_req *rq, api_reply *rp) { return run_view(a, rq, rp, api_view_graph); }
int api_route_run_heatmap(api *a, const api_req *rq, api_reply *rp) { return run_view(a, rq, rp, api_view_heatmap); }
int api_route_run_candidates(api *a, const api_req *rq, api_reply *rp) {
    return run_view(a, rq, rp, api_view_candidates);
}

int api_route_run_lens(api *a, const api_req *rq, api_reply *rp) { return run_view(a, rq, rp, api_view_lens); }
int api_route_run_stats(api *a, const api_req *rq, api_reply *rp) { return run_view(a, rq, rp, api_view_stats); }
int api_route_run_experts(api *a, const api_req *rq, api_reply *rp) { return run_view(a, rq, rp, api_view_experts); }
int api_route_run_rollout(api *a, const api_req *rq, api_reply *rp) { return run_view(a, rq, rp, api_view_rollout); }
int api_route_run_verify(api *a, const api_req *rq, api_reply *rp) { return run_view(a, rq, rp, api_view_verify); }

/* GET /api/runs/{id}/provenance?verify=0|1: the output sentences' sources
 * in the documents the request carried (the run document's "documents"). */
typedef struct prov_args {
    json_t *docs;
    bool verify;
} prov_args;

static void call_provenance(api *a, const api_req *rq, heed_run *run, const heed_run_info *ri, api_reply *rp,
                            void *user) {
    prov_args *pa = user;
    json_t *p = api_provenance(&a->view, run, ri, pa->docs, pa->verify, rp);
    if (p) api_reply_json(rp, 200, p);
}

int api_route_run_provenance(api *a, const api_req *rq, api_reply *rp) {
    static const char *const verifies[] = {"0", "1"};
    int verify = api_arg_enum(rq, "verify", verifies, 2, rp);
    if (verify < 0) return 0;
    char *doc_s = NULL;
    int rc = store_get_doc(a->store, rq->param, &doc_s);
    if (rc) {
        api_reply_store_error(rp, rc, rq->param, "");
        return 0;
    }
    json_t *doc = json_loads(doc_s, 0, NULL), *empty = json_array();
    free(doc_s);
    json_t *docs = json_object_get(doc, "documents");
    prov_args pa = {json_is_array(docs) ? docs : empty, verify == 1};
    run_view_cb(a, rq, rp, call_provenance, &pa);
    json_decref(empty);
    json_decref(doc);
    return 0;
}

/* GET /api/runs/{id}/download?format=run|html: the run as a run file
 * (docs/RUN_FORMAT.md; `heed export`, Python and another heed read it) or as
 * the offline HTML viewer `heed export -o OUT.html` writes. */
int api_route_run_download(api *a, const api_req *rq, api_reply *rp) {
    static const char *const formats[] = {"run", "html"};
    int fmt = api_arg_enum(rq, "format", formats, 2, rp);
    if (fmt < 0) return 0;
    store_run *sr = api_run_acquire(a, rq->param, rp);
    if (!sr) return 0;
    char err[512] = "";
    int rc;
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        store_release(a->store, sr);
        api_error(rp, 500, NULL, "out_of_memory", "out of memory");
        return 0;
    }
    heed_run *run = store_run_get(sr);
    store_run_lock(sr);
    if (fmt == 0) {
        rc = heed_run_write(run, f, rq->param, err, sizeof err);
    } else {
        heed_run_info ri;
        heed_run_get_info(run, &ri);
        bool own = !strcmp(ri.model_file, a->model_id) && ri.n_vocab == a->info.n_vocab; /* labels and the lens */
        rc = webexport_html_stream(run, own ? a->model : NULL, f, WEBEXPORT_BUDGET, err, sizeof err) ? HEED_ERR_IO : 0;
    }
    store_run_unlock(sr);
    store_release(a->store, sr);
    if (fclose(f) && !rc) rc = HEED_ERR_IO;
    if (rc) {
        free(buf);
        api_error(rp, 500, NULL, "export_failed", "%s", err[0] ? err : heed_strerror(rc));
        return 0;
    }
    api_reply_body(rp, buf, len, fmt == 0 ? "application/octet-stream" : "text/html; charset=utf-8");
    snprintf(rp->filename, sizeof rp->filename, "%.40s.%s", rq->param, fmt == 0 ? "heedrun" : "html");
    return 0;
}

/* POST /api/runs/upload: a run file in the body (`heed generate --save`, a
 * download, Python's Run.save, `heed import`), checked completely
 * (heed_run_read), stored under a new id with its document rebuilt from the
 * recording; every view then works on it as on a run made here. Views that
 * need the model (the logit lens) work when it is this server's model. */
int api_route_run_upload(api *a, const api_req *rq, api_reply *rp) {
    if (!rq->body_len) {
        api_error(rp, 400, "body", "invalid_request_error", "the body must be a run file (docs/RUN_FORMAT.md)");
        return 0;
    }
    FILE *f = fmemopen((void *)rq->body, rq->body_len, "rb");
    if (!f) {
        api_error(rp, 500, NULL, "out_of_memory", "out of memory");
        return 0;
    }
    heed_run *run = NULL;
    char err[512] = "";
    int rc = heed_run_read(f, rq->body_len, "upload", &run, err, sizeof err);
    fclose(f);
    if (rc) {
        api_error(rp, rc == HEED_ERR_NOMEM ? 500 : 400, "body", "invalid_run_file", "%s", err[0] ? err : heed_strerror(rc));
        return 0;
    }
    heed_run_info ri;
    heed_run_get_info(run, &ri);
    bool own = !strcmp(ri.model_file, a->model_id) && heed_run_lens_model_ok(run, a->model) == HEED_OK;
    char id[40];
    pthread_mutex_lock(&a->runs_mu);
    snprintf(id, sizeof id, "run_%llx_%llu", a->id_stem, ++a->n_made);
    pthread_mutex_unlock(&a->runs_mu);
    long long created = (long long)time(NULL);
    json_t *doc = api_run_doc(run, own ? a->model : NULL, id, created);
    if (doc) json_object_set_new(doc, "uploaded", json_true());
    char *doc_s = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    char *params_s = doc ? json_dumps(json_object_get(doc, "params"), JSON_COMPACT) : NULL;
    const char *text = doc ? json_string_value(json_object_get(doc, "text")) : NULL;
    store_row row = {.id = id, .model = ri.model_file, .prompt = ri.prompt_text, .params = params_s,
                     .text = text ? text : "", .kind = "heed", .stop = ri.eog ? "eog" : "length", .doc = doc_s,
                     .created = created, .n_prompt = ri.n_prompt, .n_output = ri.n_output};
    if (!doc_s || !params_s) {
        heed_run_free(run);
        api_error(rp, 500, NULL, "out_of_memory", "out of memory");
    } else if (store_put(a->store, &row, run, err, sizeof err)) { /* frees the run either way */
        api_error(rp, 500, NULL, "store_failed", "cannot store the run: %s", err);
    } else {
        api_reply_json(rp, 201, json_pack("{s:s, s:s, s:i, s:i, s:b}", "id", id, "model", ri.model_file, "n_prompt",
                                          ri.n_prompt, "n_output", ri.n_output, "own_model", own));
    }
    free(doc_s);
    free(params_s);
    json_decref(doc);
    return 0;
}

/* The effects of an intervention or a branch: this run against ?base=ID,
 * both stored. The two runs' locks are taken in address order. */
int api_route_run_effects(api *a, const api_req *rq, api_reply *rp) {
    const char *base_id = api_arg(rq, "base");
    if (!base_id || !*base_id) {
        api_error(rp, 400, "base", "invalid_parameter", "base (the id of the run to compare with) is required");
        return 0;
    }
    store_run *sr = api_run_acquire(a, rq->param, rp), *sb = sr ? api_run_acquire(a, base_id, rp) : NULL;
    if (!sb) {
        if (sr) store_release(a->store, sr);
        return 0;
    }
    store_run *first = sr < sb ? sr : sb, *second = sr < sb ? sb : sr;
    store_run_lock(first);
    if (second != first) store_run_lock(second);
    api_view_effects(store_run_get(sr), store_run_get(sb), base_id, rp);
    if (second != first) store_run_unlock(second);
    store_run_unlock(first);
    store_release(a->store, sb);
    store_release(a->store, sr);
    return 0;
}
