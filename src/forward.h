/*
 * forward.h - what the library's other modules may know of a context beyond
 * heed.h.
 */
#ifndef HEED_FORWARD_H
#define HEED_FORWARD_H

#include "heed.h"
#include "pool.h"

/* The context's thread pool. It is idle while the attention hook runs and
 * between heed_decode calls, so the recorder borrows it for its summaries
 * and live views instead of starting a second pool on the same cores. */
pool *forward_pool(heed_ctx *c);

#endif
