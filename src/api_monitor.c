/*
 * api_monitor.c - GET /api/monitor: one Server-Sent Event per generated
 * token, across every generation the engine runs, for dashboards. Each
 * event is a bare `data: {...}` line (no event name), so the stream minus
 * its "data: " prefixes is JSON Lines:
 *
 *   {"run_id", "kind", "index", "pos", "id", "label", "text", "prob",
 *    "entropy", "sink", "zone", "fingerprint": [20 numbers]}
 *
 * zone and fingerprint are docs/ANALYSIS.md's, of the row of query
 * position pos (the one whose logits chose the token) averaged over layers
 * and heads (heed_recorder_last_row, heed_row_stats).
 *
 * What it does not do: replay. A subscriber sees the tokens generated while
 * it is connected; cached replays (no generation) are not reported.
 *
 * A subscriber is a gen that never generates (api_int.h): it only borrows
 * the generations' stream machinery (api_stream.c), so its buffer is bounded
 * exactly like a generation's stream (--stream-buffer bytes unread, or
 * --stream-stall seconds without a read, and it is dropped), it has the same
 * heartbeat, and the HTTP layer reads and frees it like any stream. The
 * engine thread never waits for a subscriber.
 *
 * Threads: the list of subscribers is under mon->mu; lock order mon->mu,
 * then eng.mu (api_sse_event and api_gen_release take eng.mu). The engine
 * thread alone calls api_monitor_token.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "api_int.h"

#define MONITOR_MAX_SUBS 64 /* subscribers at once; more are refused (503) */

struct api_monitor {
    pthread_mutex_t mu;
    gen *subs[MONITOR_MAX_SUBS]; /* each holds one reference to its gen */
    int n_subs;
    atomic_int n_live;           /* n_subs, read without the lock by the engine's fast path */
    bool stopped;
    atomic_ulong events, dropped;
    atomic_ullong us;            /* engine time spent on monitor events */
};

api_monitor *api_monitor_new(void) {
    api_monitor *m = calloc(1, sizeof *m);
    if (m) pthread_mutex_init(&m->mu, NULL);
    return m;
}

/* Lets go of subscribers whose client left or was dropped (under m->mu). */
static void prune_locked(api_monitor *m) {
    int k = 0;
    for (int i = 0; i < m->n_subs; i++) {
        gen *s = m->subs[i];
        if (atomic_load(&s->gone) || atomic_load(&s->dropped)) {
            if (atomic_load(&s->dropped)) atomic_fetch_add(&m->dropped, 1);
            api_gen_release(s);
        } else {
            m->subs[k++] = s;
        }
    }
    m->n_subs = k;
    atomic_store(&m->n_live, k);
}

/* Ends every subscriber's stream (the server stops): their readers see the
 * end once they have taken what is buffered. */
void api_monitor_stop(api *a) {
    api_monitor *m = a->mon;
    if (!m) return;
    pthread_mutex_lock(&m->mu);
    m->stopped = true;
    pthread_mutex_lock(&a->eng.mu);
    for (int i = 0; i < m->n_subs; i++) m->subs[i]->phase = G_END;
    pthread_cond_broadcast(&a->eng.cv);
    pthread_mutex_unlock(&a->eng.mu);
    pthread_mutex_unlock(&m->mu);
}

void api_monitor_free(api *a) {
    api_monitor *m = a->mon;
    if (!m) return;
    for (int i = 0; i < m->n_subs; i++) api_gen_release(m->subs[i]);
    pthread_mutex_destroy(&m->mu);
    free(m);
    a->mon = NULL;
}

void api_monitor_counters(api *a, unsigned long *subs, unsigned long *events, unsigned long *dropped, double *secs) {
    api_monitor *m = a->mon;
    *subs = m ? (unsigned long)atomic_load(&m->n_live) : 0;
    *events = m ? atomic_load(&m->events) : 0;
    *dropped = m ? atomic_load(&m->dropped) : 0;
    *secs = m ? atomic_load(&m->us) / 1e6 : 0;
}

static const char *kind_name(int kind) {
    return kind == GEN_CHAT ? "chat" : kind == GEN_COMPLETION ? "completion" : "heed";
}

void api_monitor_token(gen *g, json_t *ev) {
    api *a = g->api;
    api_monitor *m = a->mon;
    if (!ev || !m || !g->sess || atomic_load(&m->n_live) == 0) return; /* one branch when nobody listens */
    double t0 = api_mono_s();
    heed_attn_sel all = heed_attn_sel_all();
    /* the engine's row buffer: this runs on the engine thread, after the
     * token event that filled it was made */
    int n = heed_recorder_last_row(heed_gen_recorder(g->sess), &all, a->eng.row, a->n_ctx);
    heed_token_stats ts;
    if (n <= 0 || heed_row_stats(a->eng.row, n - 1, &ts)) return;
    json_t *fp = json_array();
    for (int i = 0; i < HEED_FINGERPRINT_DIM; i++) json_array_append_new(fp, json_real(ts.fingerprint[i]));
    json_t *j = json_pack("{s:s, s:s, s:O?, s:i, s:O?, s:O?, s:O?, s:O?, s:f, s:f, s:s, s:o}", "run_id", g->run_id,
                          "kind", kind_name(g->kind), "index", json_object_get(ev, "index"), "pos", n - 1,
                          "id", json_object_get(ev, "id"), "label", json_object_get(ev, "label"), "text",
                          json_object_get(ev, "text"), "prob", json_object_get(ev, "prob"), "entropy", ts.entropy, "sink", ts.sink, "zone",
                          heed_zone_name(ts.zone), "fingerprint", fp);
    if (!j) return;
    pthread_mutex_lock(&m->mu);
    prune_locked(m);
    for (int i = 0; !m->stopped && i < m->n_subs; i++) api_sse_event(m->subs[i], NULL, json_incref(j));
    prune_locked(m); /* one dropped just now is counted now */
    pthread_mutex_unlock(&m->mu);
    json_decref(j);
    atomic_fetch_add(&m->events, 1);
    atomic_fetch_add(&m->us, (unsigned long long)((api_mono_s() - t0) * 1e6));
}

int api_route_monitor(api *a, const api_req *rq, api_reply *rp) {
    (void)rq;
    api_monitor *m = a->mon;
    gen *s = m ? calloc(1, sizeof *s) : NULL;
    if (!s) return api_error(rp, 500, NULL, "out_of_memory", "out of memory"), 0;
    s->api = a;
    s->kind = GEN_HEED;
    s->streamed = true;
    s->phase = G_RUNNING; /* so its buffer is bounded as a running generation's */
    s->refs = 2;          /* the stream's and the monitor's */
    s->stop = "monitor";
    snprintf(s->run_id, sizeof s->run_id, "monitor");
    pthread_mutex_lock(&m->mu);
    prune_locked(m);
    bool full = m->n_subs >= MONITOR_MAX_SUBS, stopped = m->stopped || atomic_load(&a->stopping);
    if (!full && !stopped) {
        m->subs[m->n_subs++] = s;
        atomic_store(&m->n_live, m->n_subs);
    }
    pthread_mutex_unlock(&m->mu);
    if (full || stopped) {
        free(s);
        if (stopped) api_error(rp, 503, NULL, "shutting_down", "the server is shutting down");
        else api_error(rp, 503, NULL, "too_many_subscribers", "%d monitor subscribers are connected already",
                       MONITOR_MAX_SUBS);
        return 0;
    }
    return api_reply_stream_of(s, rp);
}
