/*
 * upstream - `heed serve --upstream URL`: generations made by a remote
 * OpenAI-compatible server that returns attention with its tokens (the
 * SGLang attention explorer's protocol, `return_attention_tokens: true`;
 * another `heed serve` speaks it). Each generating request is forwarded to
 * URL/v1/completions (or /v1/chat/completions) with `stream: true`; the
 * upstream's SSE chunks become heed's own token events or OpenAI chunks, and
 * the run is stored from the tokens and their top-k attention
 * (heed_run_from_topk). The local model tokenizes the prompt and labels the
 * tokens. Runs on the engine thread, one generation at a time, like a local
 * one; the stream's handler waits for the upstream's answer so that an
 * unreachable upstream or an HTTP error is a plain 502 reply.
 */
#ifndef HEED_UPSTREAM_H
#define HEED_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "api.h"

/* Makes a's generations go to url (the server's root, e.g.
 * http://127.0.0.1:8081), with key (NULL: none) as a bearer key. Before the
 * server listens. 0, or -1 when out of memory. */
int upstream_set(api *a, const char *url, const char *key);

#ifdef HEED_API_INT_H
/* Chat messages when the local model has no chat template: the upstream
 * renders them; the run's prompt tokens are their contents, one per line,
 * tokenized by the local model. Count, or -1 with rp filled. */
int upstream_messages_ids(api *a, json_t *msgs, int32_t *ids, int n_max, api_reply *rp);
/* false (rp filled) for what an upstream cannot do: branches, interventions, documents. */
bool upstream_accepts(const gen *g, api_reply *rp);
/* The run document's "upstream" and "unavailable" members. */
void upstream_doc(const api *a, json_t *doc);
/* A streamed generation: queued, then handed over as a stream once the
 * upstream answered 200, or answered as a JSON error (502, 503). */
int upstream_reply_stream(gen *g, api_reply *rp);
/* On the engine thread: the whole generation at the upstream, events
 * emitted as chunks arrive, g->up_run and g->stop set. 0: finished (or
 * cancelled); 1: failed before anything was generated (reported, nothing
 * to store); 2: the upstream failed mid-stream (the message in err; the
 * run of what was received is in g->up_run, stop "upstream_error"). */
int upstream_generate(gen *g, char *err, size_t err_size);
#endif

#endif
