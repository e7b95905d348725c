/*
 * pool - a persistent thread pool for the forward pass.
 *
 * Workers are created once (pool_new) and wait between jobs, so running a
 * job costs a wake-up, not a thread creation. pool_run() calls
 * fn(arg, ith, nth) for ith = 0..nth-1, with ith 0 on the calling thread, and
 * returns when all have finished (a full barrier: memory written by any part
 * is visible to the caller afterwards). nth may be less than the pool size,
 * so small jobs can run on fewer threads (nth = 1 runs inline, no wake-up).
 *
 * Threads: one pool is driven by one thread at a time (the owner of the
 * heed_ctx). pool_free joins the workers.
 */
#ifndef HEED_POOL_H
#define HEED_POOL_H

typedef struct pool pool;
typedef void (*pool_fn)(void *arg, int ith, int nth);

/* n_threads >= 1 (including the caller). Returns NULL on failure. */
pool *pool_new(int n_threads);
void pool_free(pool *p); /* NULL is a no-op */
int pool_size(const pool *p);
/* nth is clamped to 1..pool_size(p). */
void pool_run(pool *p, int nth, pool_fn fn, void *arg);

/* Number of online CPUs (>= 1). */
int pool_n_cpus(void);

#endif
