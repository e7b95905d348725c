/*
 * trace_vllmhook - IBM vLLM-Hook's q/k captures (qk.json + qk.safetensors
 * per tensor-parallel rank; docs/TRACE_FORMAT.md) read into a heed_run's
 * exact tier, the same form trace.c builds from heed-trace/1.
 *
 * What it does not do: read .pt captures (PyTorch pickles: score and
 * quantized captures, or safetensors off), last_token captures (one query
 * per pass), or anything vLLM-Hook does not record (token ids; the caller
 * gives them through heed_trace_params). Ownership: the run is the
 * caller's (heed_run_free). Threads: none of its own; reentrant.
 */
#ifndef HEED_TRACE_VLLMHOOK_H
#define HEED_TRACE_VLLMHOOK_H

#include <stdbool.h>

#include "heed.h"

/* Whether dir holds a vLLM-Hook q/k capture rather than heed-trace/1: no
 * trace.json, and a qk.json whose keys are vLLM-Hook's (layer_order), or a
 * qk.pt, in dir or in its tp_rank_N folders. */
bool trace_vllmhook_detect(const char *dir);

/* Reads the capture in dir (p NULL: the defaults). Codes as
 * heed_trace_import; messages name the rank's file and the field. */
int trace_vllmhook_import(const char *dir, const heed_trace_params *p, heed_run **out, char *err, size_t err_size);

#endif
