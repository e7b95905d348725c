/*
 * pool.c - a persistent pthread pool with spin-then-sleep workers.
 *
 * A decode step runs several short jobs per layer (tens of microseconds
 * each), so the hand-off must cost far less than a futex wake-up. The whole
 * job is published through one atomic word, `job`: a generation counter in
 * the high bits and nth in the low bits. Workers spin on it (with PAUSE) for
 * a while after each job and only then sleep on a condition variable; the
 * caller spins on an atomic countdown of the workers still running.
 *
 * Why one word: a worker that is not needed (ith >= nth) must learn that
 * without reading anything the caller may already be rewriting for the next
 * job. Packing nth with the generation means it reads a single consistent
 * value. fn and arg are plain fields, read only by participants, and the
 * caller does not touch them again until every participant has counted
 * down, so they need no atomics.
 *
 * Memory order: the caller writes fn/arg, then stores `job` (release);
 * workers load it (acquire). Each worker's countdown is a release and the
 * caller's final load an acquire, which makes pool_run a full barrier.
 */
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long a worker spins after a job before it sleeps. The serial gaps
 * between the jobs of one decode step are microseconds and are always
 * bridged; the window also covers short gaps between tokens (sampling, the
 * attention hook), because waking a sleeping worker is slow: bench_kern
 * measured 30 us at best and up to several ms in a busy VM, where the host
 * must first reschedule the idle vCPU. An idle pool stops spinning after 1 ms.
 * Measured in time, not iterations: PAUSE takes ~3 to ~40 ns by CPU model. */
#define POOL_SPIN_NS 1000000
/* iterations between clock reads and between yields */
#define POOL_SPIN_CHECK 64
/* pure spin iterations (~1-10 us: a hand-off to a running thread takes
 * under 1 us) before spinners start yielding */
#define POOL_YIELD_AFTER 256

#define NTH_BITS 16
#define NTH_MASK ((UINT64_C(1) << NTH_BITS) - 1)
#define GEN_ONE (UINT64_C(1) << NTH_BITS)

typedef struct worker {
    struct pool *pool;
    int ith;
    pthread_t thread;
} worker;

struct pool {
    int n;           /* threads, including the caller */
    worker *workers; /* n - 1 of them, ith 1..n-1 */
    int n_started;   /* workers actually created */
    int oversub;     /* more threads than CPUs: spinners yield from the start */

    /* Written by the caller, polled by the workers; `pending` and the sleep
     * state get lines of their own so the spinning readers of `job` are not
     * disturbed by the countdown and vice versa. */
    _Alignas(64) _Atomic uint64_t job; /* generation << NTH_BITS | nth */
    pool_fn fn;                        /* current job: valid for participants of `job` */
    void *arg;
    _Alignas(64) atomic_int pending; /* participants (other than the caller) still running */

    /* sleeping: guarded by mu; n_sleeping lets pool_run skip the lock when
     * every worker is still spinning */
    _Alignas(64) pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int n_sleeping;
};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* One step of a spin-wait. A spinner may hold the very CPU that the thread
 * it waits for needs: always with more threads than CPUs, and whenever other
 * processes keep the CPUs busy. So past a short pure spin (the common, fast
 * hand-off) it yields now and then; with no one else runnable sched_yield
 * returns at once and the spin goes on. */
static inline void spin_step(const struct pool *p, unsigned k) {
    cpu_relax();
    if (k % POOL_SPIN_CHECK == 0 && (p->oversub || k >= POOL_YIELD_AFTER)) sched_yield();
}

/* Waits until `job` differs from `seen` in its generation, returns it. */
static uint64_t wait_job(struct pool *p, uint64_t seen) {
    uint64_t deadline = 0;
    for (unsigned k = 1;; k++) {
        uint64_t j = atomic_load_explicit(&p->job, memory_order_acquire);
        if (j != seen) return j;
        spin_step(p, k);
        if (k % POOL_SPIN_CHECK == 0) {
            uint64_t t = now_ns();
            if (!deadline)
                deadline = t + POOL_SPIN_NS;
            else if (t >= deadline)
                break;
        }
    }
    /* Lost-wake-up freedom: we announce ourselves (seq_cst) before checking
     * `job` again, and pool_run stores `job` (seq_cst) before checking
     * n_sleeping; one of the two must see the other. If pool_run sees us, it
     * takes mu, which we hold until cond_wait releases it. */
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->n_sleeping, 1);
    uint64_t j;
    while ((j = atomic_load(&p->job)) == seen) pthread_cond_wait(&p->cv, &p->mu);
    atomic_fetch_sub(&p->n_sleeping, 1);
    pthread_mutex_unlock(&p->mu);
    return j;
}

static void *worker_main(void *v) {
    worker *w = v;
    struct pool *p = w->pool;
    /* Not a load: pool_run may already have published the first job by the
     * time this thread starts, and that job must not be taken as seen. */
    uint64_t seen = 0;
    for (;;) {
        seen = wait_job(p, seen);
        int nth = (int)(seen & NTH_MASK);
        if (nth == 0) break;         /* pool_free (pool_run never publishes nth < 2) */
        if (w->ith >= nth) continue; /* not needed this time */
        p->fn(p->arg, w->ith, nth);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
    return NULL;
}

/* Publishes a new generation and wakes sleepers. */
static void publish(struct pool *p, int nth) {
    uint64_t gen = atomic_load_explicit(&p->job, memory_order_relaxed) & ~NTH_MASK;
    atomic_store(&p->job, (gen + GEN_ONE) | (uint64_t)nth);
    if (atomic_load(&p->n_sleeping) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
}

pool *pool_new(int n_threads) {
    if (n_threads < 1 || (uint64_t)n_threads > NTH_MASK) return NULL;
    /* aligned: the hot atomics sit on their own cache lines (see struct pool) */
    size_t size = (sizeof(struct pool) + 63) / 64 * 64;
    struct pool *p = aligned_alloc(64, size);
    if (!p) return NULL;
    memset(p, 0, size);
    p->n = n_threads;
    p->oversub = n_threads > pool_n_cpus();
    atomic_init(&p->job, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->n_sleeping, 0);
    if (pthread_mutex_init(&p->mu, NULL)) {
        free(p);
        return NULL;
    }
    if (pthread_cond_init(&p->cv, NULL)) {
        pthread_mutex_destroy(&p->mu);
        free(p);
        return NULL;
    }
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) {
            pool_free(p);
            return NULL;
        }
        for (int i = 0; i < n_threads - 1; i++) {
            worker *w = &p->workers[i];
            w->pool = p;
            w->ith = i + 1;
            if (pthread_create(&w->thread, NULL, worker_main, w)) {
                pool_free(p); /* joins the ones already started */
                return NULL;
            }
            p->n_started++;
        }
    }
    return p;
}

void pool_free(pool *p) {
    if (!p) return;
    /* a generation with nth = 0 means stop: spinners see the change,
     * sleepers get the broadcast, and all of them exit */
    publish(p, 0);
    for (int i = 0; i < p->n_started; i++) pthread_join(p->workers[i].thread, NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->workers);
    free(p);
}

int pool_size(const pool *p) {
    return p->n;
}

void pool_run(pool *p, int nth, pool_fn fn, void *arg) {
    if (nth > p->n) nth = p->n;
    if (nth <= 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->pending, nth - 1, memory_order_relaxed);
    publish(p, nth); /* seq_cst store: orders fn/arg/pending before it */
    fn(arg, 0, nth);
    for (unsigned k = 1; atomic_load_explicit(&p->pending, memory_order_acquire) > 0; k++)
        spin_step(p, k);
}

int pool_n_cpus(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n >= 1 ? (int)n : 1;
}
