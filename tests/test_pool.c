/*
 * test_pool - the persistent thread pool: every part of a job runs exactly
 * once, on the right number of threads, results are visible on return, and
 * both hand-off paths (spinning workers and sleeping ones) work under load.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "pool.h"

#define MAX_TH 8

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

typedef struct count_job {
    atomic_int calls[MAX_TH]; /* per ith */
    atomic_int bad_nth;       /* calls that saw an nth other than the expected */
    int want_nth;
    pthread_t caller;
    atomic_int ith0_elsewhere; /* ith 0 must run on the calling thread */
} count_job;

static void count_fn(void *arg, int ith, int nth) {
    count_job *j = arg;
    atomic_fetch_add(&j->calls[ith], 1);
    if (nth != j->want_nth) atomic_fetch_add(&j->bad_nth, 1);
    if (ith == 0 && !pthread_equal(pthread_self(), j->caller))
        atomic_fetch_add(&j->ith0_elsewhere, 1);
}

/* runs count_fn with `nth` and checks ith 0..expect-1 ran once, others never */
static void run_count(pool *p, int nth, int expect) {
    count_job j;
    memset(&j, 0, sizeof j);
    j.want_nth = expect;
    j.caller = pthread_self();
    pool_run(p, nth, count_fn, &j);
    for (int i = 0; i < MAX_TH; i++) assert_int_equal(atomic_load(&j.calls[i]), i < expect ? 1 : 0);
    assert_int_equal(atomic_load(&j.bad_nth), 0);
    assert_int_equal(atomic_load(&j.ith0_elsewhere), 0);
}

static void test_every_ith_once(void **state) {
    (void)state;
    pool *p = pool_new(4);
    assert_non_null(p);
    assert_int_equal(pool_size(p), 4);
    for (int rep = 0; rep < 100; rep++) run_count(p, 4, 4);
    pool_free(p);
}

static void test_nth_below_and_above_size(void **state) {
    (void)state;
    pool *p = pool_new(4);
    assert_non_null(p);
    for (int rep = 0; rep < 100; rep++) {
        run_count(p, 2, 2);
        run_count(p, 3, 3);
        run_count(p, 9, 4); /* clamped to the pool size */
        run_count(p, 0, 1); /* nonsense below 1 runs one part */
    }
    pool_free(p);
}

static void test_nth_one_inline(void **state) {
    (void)state;
    pool *p = pool_new(3);
    assert_non_null(p);
    run_count(p, 1, 1); /* count_fn checks it ran on this thread */
    pool_free(p);
}

static void test_size_one(void **state) {
    (void)state;
    pool *p = pool_new(1);
    assert_non_null(p);
    assert_int_equal(pool_size(p), 1);
    run_count(p, 1, 1);
    run_count(p, 4, 1);
    pool_free(p);
    assert_null(pool_new(0));
    assert_null(pool_new(-3));
}

/* each part writes plain (non-atomic) memory; pool_run's barrier must make
 * it visible to the caller */
typedef struct fill_job {
    int *out;
    int n;
    int value;
} fill_job;

static void fill_fn(void *arg, int ith, int nth) {
    fill_job *j = arg;
    int per = (j->n + nth - 1) / nth;
    int lo = ith * per, hi = lo + per < j->n ? lo + per : j->n;
    for (int i = lo; i < hi; i++) j->out[i] = j->value + i;
}

/* 100k tiny jobs of every width; n_threads above the CPU count exercises
 * the oversubscribed (yielding) path, at or below it the pure spin path */
static void stress(int n_threads) {
    pool *p = pool_new(n_threads);
    assert_non_null(p);
    enum { N = 64, JOBS = 100000 };
    int out[N];
    double t0 = now_s();
    for (int k = 0; k < JOBS; k++) {
        fill_job j = {out, N, k};
        int nth = 1 + k % n_threads; /* every width, interleaved */
        pool_run(p, nth, fill_fn, &j);
        for (int i = 0; i < N; i++)
            if (out[i] != k + i)
                fail_msg("job %d (nth %d): out[%d] = %d, want %d", k, nth, i, out[i], k + i);
    }
    printf("pool: %d threads, %d jobs in %.3f s\n", n_threads, JOBS, now_s() - t0);
    pool_free(p);
}

static void test_stress_many_jobs(void **state) {
    (void)state;
    int n = pool_n_cpus() < MAX_TH ? pool_n_cpus() : MAX_TH;
    stress(n > 1 ? n : 2);
    stress(2 * pool_n_cpus() < MAX_TH ? 2 * pool_n_cpus() : MAX_TH);
}

static void test_wake_from_sleep(void **state) {
    (void)state;
    pool *p = pool_new(3);
    assert_non_null(p);
    /* long enough gaps that the workers stop spinning and block */
    for (int rep = 0; rep < 5; rep++) {
        sleep_ms(30);
        run_count(p, 3, 3);
        run_count(p, 2, 2);
    }
    pool_free(p);
}

static void test_free_idle_is_quick(void **state) {
    (void)state;
    /* freed while workers spin (just created) and while they sleep */
    for (int sleeping = 0; sleeping < 2; sleeping++) {
        pool *p = pool_new(4);
        assert_non_null(p);
        run_count(p, 4, 4);
        if (sleeping) sleep_ms(50);
        double t0 = now_s();
        pool_free(p);
        double dt = now_s() - t0;
        if (dt > 5) fail_msg("pool_free took %.3f s: a sleeping worker was not woken", dt); /* a hang check, not a speed figure */
    }
    pool_free(NULL);
}

static void test_n_cpus(void **state) {
    (void)state;
    assert_true(pool_n_cpus() >= 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_ith_once),     cmocka_unit_test(test_nth_below_and_above_size),
        cmocka_unit_test(test_nth_one_inline),     cmocka_unit_test(test_size_one),
        cmocka_unit_test(test_stress_many_jobs),   cmocka_unit_test(test_wake_from_sleep),
        cmocka_unit_test(test_free_idle_is_quick), cmocka_unit_test(test_n_cpus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
