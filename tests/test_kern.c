/*
 * test_kern - the numeric kernels.
 *
 * Number formats are checked exhaustively (all 65536 halfs and bfloat16s)
 * or against an independent brute-force reference (f32 -> f16 rounding).
 * Every SIMD table the CPU runs is checked op by op against the scalar
 * table, which is itself checked against double-precision references.
 *
 * Tolerances. A SIMD dot product sums in a different order than the scalar
 * loop, so the two differ by float rounding only: for random data
 *   |simd - ref| <= 1e-5 * sum|a_i * b_i| + 1e-6
 * (the bound scales with the sum of magnitudes, not with the result, which
 * may cancel to near 0). Q8_0 block sums are integer and exact; only the
 * final scaling and block summation round, so its bound is 2e-6, and with
 * unit scales the result must match exactly.
 */
#include "testutil.h"

#include <float.h>
#include <math.h>

#include "gguf.h"
#include "kern.h"

/* ------------------------------------------------------------- helpers */

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rng_next(rng *r) {
    /* xorshift64*: deterministic and plenty for test data */
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * UINT64_C(2685821657736338717);
}

/* uniform in [-1, 1) */
static float rng_f(rng *r) {
    return (float)((double)(rng_next(r) >> 11) * 0x1p-52 - 1.0);
}

static void fill(rng *r, float *x, int n, float scale) {
    for (int i = 0; i < n; i++) x[i] = rng_f(r) * scale;
}

static uint32_t f2u(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float u2f(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* The tables to check: scalar always, SIMD ones when the CPU runs them. */
static int tables(const kern_ops **out) {
    int n = 0;
    out[n++] = kern_ops_scalar();
    if (kern_ops_avx2()) out[n++] = kern_ops_avx2();
    if (kern_ops_avx512()) out[n++] = kern_ops_avx512();
    return n;
}

static void check_close(const char *what, const char *table, int n, double got, double ref,
                        double tol) {
    if (!(fabs(got - ref) <= tol))
        fail_msg("%s [%s] n=%d: got %.9g, reference %.9g, |diff| %.3g > tol %.3g", what, table, n,
                 got, ref, fabs(got - ref), tol);
}

static const int sizes[] = {1,  3,  7,  8,   15,  16,  17,  31,   32,
                            33, 63, 64, 100, 128, 255, 256, 1000, 4096};
#define N_SIZES (int)(sizeof sizes / sizeof sizes[0])
#define MAXN 4096

/* ------------------------------------------------------- number formats */

/* value of a half computed the textbook way, in double */
static double half_value(uint16_t h) {
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    double s = (h & 0x8000) ? -1.0 : 1.0;
    if (e == 0x1f) return m ? NAN : s * INFINITY;
    if (e == 0) return s * ldexp(m, -24);
    return s * ldexp(1024 + m, e - 25);
}

static void test_f16_to_f32_exhaustive(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kern_f16_to_f32((uint16_t)h);
        double v = half_value((uint16_t)h);
        if (isnan(v)) {
            assert_true(isnan(f));
            /* payload kept: the top mantissa bits of the f32 are the half's */
            assert_int_equal((f2u(f) >> 13) & 0x3ff, h & 0x3ff);
        } else {
            if ((double)f != v) fail_msg("half 0x%04x: got %.9g want %.9g", h, (double)f, v);
            assert_int_equal(signbit(f) != 0, (h & 0x8000) != 0); /* -0 stays -0 */
        }
    }
}

static void test_f16_round_trip_exhaustive(void **state) {
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        uint16_t back = kern_f32_to_f16(kern_f16_to_f32((uint16_t)h));
        if (back != h) fail_msg("half 0x%04x round-trips to 0x%04x", h, back);
    }
}

/* Independent f32 -> f16 reference: binary search over the ordered finite
 * halfs in double, ties to the even encoding, overflow past 65520. */
static uint16_t ref_f32_to_f16(float f) {
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double a = fabs((double)f);
    if (isnan(f)) return 0x7e00;
    if (a >= 65520.0) return sign | 0x7c00;
    int lo = 0, hi = 0x7bff; /* largest k with half_value(k) <= a */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (half_value((uint16_t)mid) <= a)
            lo = mid;
        else
            hi = mid - 1;
    }
    double below = half_value((uint16_t)lo);
    double above = lo < 0x7bff ? half_value((uint16_t)(lo + 1)) : 65536.0;
    int k = lo;
    if (a - below > above - a || (a - below == above - a && (lo & 1))) k = lo + 1;
    return sign | (uint16_t)k;
}

static void check_f32_to_f16(float f) {
    uint16_t got = kern_f32_to_f16(f), want = ref_f32_to_f16(f);
    if (got != want)
        fail_msg("f32 %a (0x%08x): got 0x%04x want 0x%04x", (double)f, f2u(f), got, want);
}

static void test_f32_to_f16_rounding(void **state) {
    (void)state;
    /* every halfway point between neighbouring halfs (exact in f32: halfs
     * have 11 significant bits), and the floats just either side of it */
    for (int k = 0; k < 0x7bff; k++) {
        float mid = (float)((half_value((uint16_t)k) + half_value((uint16_t)(k + 1))) / 2);
        float cases[] = {mid, nextafterf(mid, 0), nextafterf(mid, INFINITY)};
        for (int c = 0; c < 3; c++) {
            check_f32_to_f16(cases[c]);
            check_f32_to_f16(-cases[c]);
        }
    }
    float special[] = {0.0f,        -0.0f,       65504.0f, 65519.99f,    65520.0f,        65536.0f,
                       1e10f,       -1e10f,      0x1p-24f, 0x1p-25f,     0x1.000002p-25f, 0x1p-26f,
                       0x1.8p-24f,  0x1.4p-24f,  0x1p-14f, 0x1.ff8p-15f, 0x1.ffcp-15f,    1e-10f,
                       1.0f / 3.0f, 3.14159265f, FLT_MIN,  FLT_MAX};
    for (size_t i = 0; i < sizeof special / sizeof special[0]; i++) check_f32_to_f16(special[i]);
    assert_int_equal(kern_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(kern_f32_to_f16(65520.0f), 0x7c00);
    assert_int_equal(kern_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(kern_f32_to_f16(0x1p-24f), 0x0001);
    assert_int_equal(kern_f32_to_f16(0x1p-25f), 0x0000);     /* tie -> even (0) */
    assert_int_equal(kern_f32_to_f16(0x1.8p-24f), 0x0002);   /* 1.5 ulp -> 2 */
    assert_int_equal(kern_f32_to_f16(0x1.ffcp-15f), 0x0400); /* rounds up into the normals */
    assert_true((kern_f32_to_f16(NAN) & 0x7fff) > 0x7c00);   /* NaN stays NaN */
    assert_true((kern_f32_to_f16(u2f(0x7f800001u)) & 0x7fff) > 0x7c00); /* low-payload NaN too */

    /* random bit patterns across the whole float range */
    rng r = {0x9e3779b97f4a7c15u};
    for (int i = 0; i < 1000000; i++) {
        float f = u2f((uint32_t)rng_next(&r));
        if (!isnan(f)) check_f32_to_f16(f);
    }
}

/* Both conversions on values worked out by hand (bits, so -0 and NaN
 * payloads count): zeros, subnormals, ties at both ends of the range, the
 * carry into the next exponent, overflow to infinity, NaN. */
static void test_f16_by_hand(void **state) {
    (void)state;
    static const struct { uint32_t f; uint16_t h; } to_half[] = {
        {0x00000000u, 0x0000}, /* 0 */
        {0x80000000u, 0x8000}, /* -0 keeps its sign */
        {0x3f800000u, 0x3c00}, /* 1 */
        {0xc0000000u, 0xc000}, /* -2 */
        {0x3dcccccdu, 0x2e66}, /* 0.1f = 1.6 x 2^-4: 0.6 x 1024 = 614.4 -> 614 */
        {0x3eaaaaabu, 0x3555}, /* 1/3 = 1.333 x 2^-2: 341.33 -> 341 */
        {0x3f801000u, 0x3c00}, /* 1 + 2^-11: halfway 0x3c00..0x3c01, to even 0x3c00 */
        {0x3f801001u, 0x3c01}, /* just above that halfway point */
        {0x3f803000u, 0x3c02}, /* 1 + 3 x 2^-11: halfway 0x3c01..0x3c02, to even 0x3c02 */
        {0x3ffff000u, 0x4000}, /* 2 - 2^-11: halfway 0x3fff..0x4000, the carry makes 2 */
        {0x38800000u, 0x0400}, /* 2^-14, the smallest normal half */
        {0x387fc000u, 0x03ff}, /* 1023 x 2^-24, the largest subnormal half */
        {0x387fe000u, 0x0400}, /* 1023.5 x 2^-24: tie, 0x03ff is odd: up into the normals */
        {0x33800000u, 0x0001}, /* 2^-24, the smallest subnormal half */
        {0xb3800000u, 0x8001}, /* -2^-24 */
        {0x33000000u, 0x0000}, /* 2^-25 = half of it: tie, to even 0 */
        {0xb3000000u, 0x8000}, /* -2^-25 -> -0 */
        {0x33000001u, 0x0001}, /* just above 2^-25 */
        {0x33c00000u, 0x0002}, /* 1.5 x 2^-24: tie 1..2, to even 2 */
        {0x34200000u, 0x0002}, /* 2.5 x 2^-24: tie 2..3, to even 2 */
        {0x00800000u, 0x0000}, /* FLT_MIN: far below the halves */
        {0x00000001u, 0x0000}, /* the smallest float subnormal */
        {0x477fe000u, 0x7bff}, /* 65504, the largest half */
        {0x477fefffu, 0x7bff}, /* just below 65520 */
        {0x477ff000u, 0x7c00}, /* 65520: halfway to 2^16, the overflow to infinity */
        {0xc77ff000u, 0xfc00}, /* -65520 -> -infinity */
        {0x501502f9u, 0x7c00}, /* 1e10 */
        {0x7f7fffffu, 0x7c00}, /* FLT_MAX */
        {0x7f800000u, 0x7c00}, /* infinity */
        {0xff800000u, 0xfc00}, /* -infinity */
        {0x7fc00000u, 0x7e00}, /* quiet NaN */
        {0xffc00000u, 0xfe00}, /* negative quiet NaN */
        {0x7fa00000u, 0x7d00}, /* a NaN's top payload bits are kept */
        {0x7f800001u, 0x7e00}, /* payload only in the low bits: the quiet bit keeps it a NaN */
        {0x7fffffffu, 0x7fff},
    };
    for (size_t i = 0; i < sizeof to_half / sizeof to_half[0]; i++) {
        uint16_t got = kern_f32_to_f16(u2f(to_half[i].f));
        if (got != to_half[i].h)
            fail_msg("f32 0x%08x: got half 0x%04x, want 0x%04x", to_half[i].f, got, to_half[i].h);
    }
    static const struct { uint16_t h; uint32_t f; } to_float[] = {
        {0x0000, 0x00000000u}, {0x8000, 0x80000000u}, /* -0 */
        {0x0001, 0x33800000u}, {0x8001, 0xb3800000u}, /* 2^-24 */
        {0x03ff, 0x387fc000u}, {0x0400, 0x38800000u}, /* the edge of the subnormals */
        {0x3c00, 0x3f800000u}, {0xc000, 0xc0000000u}, {0x3555, 0x3eaaa000u},
        {0x7bff, 0x477fe000u}, {0x7c00, 0x7f800000u}, {0xfc00, 0xff800000u},
        {0x7e00, 0x7fc00000u}, {0x7c01, 0x7f802000u}, {0xfe00, 0xffc00000u}, /* NaN payloads kept */
    };
    for (size_t i = 0; i < sizeof to_float / sizeof to_float[0]; i++) {
        uint32_t got = f2u(kern_f16_to_f32(to_float[i].h));
        if (got != to_float[i].f)
            fail_msg("half 0x%04x: got f32 0x%08x, want 0x%08x", to_float[i].h, got, to_float[i].f);
    }
}

static void test_bf16(void **state) {
    (void)state;
    for (uint32_t b = 0; b < 65536; b++)
        assert_int_equal(f2u(kern_bf16_to_f32((uint16_t)b)), b << 16);
    assert_true(kern_bf16_to_f32(0x3f80) == 1.0f);
    assert_true(kern_bf16_to_f32(0xc000) == -2.0f);
    assert_true(isinf(kern_bf16_to_f32(0x7f80)));
    assert_true(kern_bf16_to_f32(0x0001) == 0x1p-133f); /* smallest subnormal */
}

/* ----------------------------------------------------------------- Q8_0 */

static void test_quantize_q8_0_by_hand(void **state) {
    (void)state;
    float x[3 * QK8_0] = {0};
    /* block 0: max 127, so d = 1 and q = roundf(x): halves go away from zero */
    float b0[] = {0.5f, -0.5f, 1.5f, 2.5f, -2.5f, 126.4f, -127.0f, 127.0f, 0.49f, -3.0f};
    int8_t q0[] = {1, -1, 2, 3, -3, 126, -127, 127, 0, -3};
    memcpy(x, b0, sizeof b0);
    /* block 1: max 63.5, d = 0.5, id = 2 */
    float b1[] = {63.5f, 0.25f, -0.75f, -63.5f, 10.0f};
    int8_t q1[] = {127, 1, -2, -127, 20};
    memcpy(x + QK8_0, b1, sizeof b1);
    /* block 2: max 1: d = 1/127 = 0.007874..., stored rounded to f16 0x2008
     * (2^-7 * (1 + 8/1024)); the quants use the unrounded f32 scale */
    float b2[] = {1.0f, -1.0f, 0.25f};
    int8_t q2[] = {127, -127, 32};
    memcpy(x + 2 * QK8_0, b2, sizeof b2);

    block_q8_0 q[3];
    kern_quantize_q8_0(q, x, 3 * QK8_0);
    assert_int_equal(q[0].d, 0x3c00);
    assert_int_equal(q[1].d, 0x3800);
    assert_int_equal(q[2].d, 0x2008);
    for (int i = 0; i < QK8_0; i++) {
        assert_int_equal(q[0].qs[i], i < 10 ? q0[i] : 0);
        assert_int_equal(q[1].qs[i], i < 5 ? q1[i] : 0);
        assert_int_equal(q[2].qs[i], i < 3 ? q2[i] : 0);
    }

    /* an all-zero block: scale 0, quants 0, no division by zero */
    float z[QK8_0] = {0};
    kern_quantize_q8_0(q, z, QK8_0);
    assert_int_equal(q[0].d, 0);
    for (int i = 0; i < QK8_0; i++) assert_int_equal(q[0].qs[i], 0);

    /* random data never produces -128 (kern.h's precondition for x) */
    rng r = {42};
    float big[1024];
    block_q8_0 qb[1024 / QK8_0];
    fill(&r, big, 1024, 1000.0f);
    kern_quantize_q8_0(qb, big, 1024);
    for (int b = 0; b < 1024 / QK8_0; b++)
        for (int i = 0; i < QK8_0; i++) assert_true(qb[b].qs[i] >= -127);
}

static void test_dequant_row(void **state) {
    (void)state;
    block_q8_0 q[2];
    q[0].d = 0x3800; /* 0.5 */
    q[1].d = 0xc000; /* -2 */
    for (int i = 0; i < QK8_0; i++) {
        q[0].qs[i] = (int8_t)(i - 16);
        q[1].qs[i] = (int8_t)(i % 2 ? 127 : -128);
    }
    float out[2 * QK8_0];
    kern_dequant_row(out, q, GGML_Q8_0, 2 * QK8_0);
    for (int i = 0; i < QK8_0; i++) {
        assert_true(out[i] == 0.5f * (float)(i - 16));
        assert_true(out[QK8_0 + i] == (i % 2 ? -254.0f : 256.0f));
    }

    uint16_t h[4] = {0x3c00, 0xc000, 0x0001, 0x7bff};
    kern_dequant_row(out, h, GGML_F16, 4);
    assert_true(out[0] == 1.0f && out[1] == -2.0f && out[2] == 0x1p-24f && out[3] == 65504.0f);
    uint16_t bf[3] = {0x3f80, 0x4049, 0xbf00};
    kern_dequant_row(out, bf, GGML_BF16, 3);
    assert_true(out[0] == 1.0f && out[1] == 0x1.92p1f && out[2] == -0.5f);
    float f[3] = {1.25f, -7.0f, 3e30f};
    kern_dequant_row(out, f, GGML_F32, 3);
    assert_memory_equal(out, f, sizeof f);

    assert_int_equal(kern_row_bytes(GGML_F32, 100), 400);
    assert_int_equal(kern_row_bytes(GGML_F16, 100), 200);
    assert_int_equal(kern_row_bytes(GGML_BF16, 100), 200);
    assert_int_equal(kern_row_bytes(GGML_Q8_0, 4096), 128 * 34);
    assert_int_equal(kern_row_bytes(GGML_Q4_K, 256), 144);
    assert_int_equal(kern_row_bytes(GGML_Q2_K, 512), 2 * 84);
    assert_int_equal(kern_row_bytes(GGML_IQ4_NL, 64), 2 * 18);
    assert_int_equal(kern_row_bytes(16, 256), 0); /* IQ2_XXS: unsupported */
}

/* ------------------------------------------------- ops vs scalar oracle */

/* the scalar oracle checked against double, so the SIMD comparison means something */
static void test_scalar_vs_double(void **state) {
    (void)state;
    rng r = {7};
    static float a[MAXN], b[MAXN];
    for (int s = 0; s < N_SIZES; s++) {
        int n = sizes[s];
        fill(&r, a, n, 1.0f);
        fill(&r, b, n, 1.0f);
        double ref = 0, mag = 0;
        for (int i = 0; i < n; i++) {
            ref += (double)a[i] * b[i];
            mag += fabs((double)a[i] * b[i]);
        }
        check_close("dot_f32 vs double", "scalar", n, kern_ops_scalar()->dot_f32(a, b, n), ref,
                    1e-5 * mag + 1e-6);
    }
}

static void test_dot_f32(void **state) {
    (void)state;
    const kern_ops *t[3];
    int nt = tables(t);
    const kern_ops *ref = kern_ops_scalar();
    rng r = {1};
    static float abuf[MAXN + 1], bbuf[MAXN + 1];
    for (int k = 0; k < nt; k++) {
        for (int s = 0; s < N_SIZES; s++) {
            int n = sizes[s];
            for (int off = 0; off < 2; off++) { /* off = 1: not 32-byte aligned */
                float *a = abuf + off, *b = bbuf + off;
                fill(&r, a, n, 1.0f);
                fill(&r, b, n, 1.0f);
                double mag = 0;
                for (int i = 0; i < n; i++) mag += fabs((double)a[i] * b[i]);
                check_close("dot_f32", t[k]->name, n, t[k]->dot_f32(a, b, n), ref->dot_f32(a, b, n),
                            1e-5 * mag + 1e-6);
                /* large magnitudes: the tolerance scales, nothing overflows */
                fill(&r, a, n, 6e4f);
                mag = 0;
                for (int i = 0; i < n; i++) mag += fabs((double)a[i] * b[i]);
                check_close("dot_f32 large", t[k]->name, n, t[k]->dot_f32(a, b, n),
                            ref->dot_f32(a, b, n), 1e-5 * mag + 1e-6);
                memset(a, 0, (size_t)n * sizeof *a);
                assert_true(t[k]->dot_f32(a, b, n) == 0.0f);
            }
        }
        assert_true(t[k]->dot_f32(abuf, bbuf, 0) == 0.0f);
    }
}

/* halfs (or bfloat16s) of random floats in [-scale, scale] */
static void fill_h(rng *r, uint16_t *w, int n, float scale, int bf16) {
    for (int i = 0; i < n; i++) {
        float f = rng_f(r) * scale;
        w[i] = bf16 ? (uint16_t)(f2u(f) >> 16) : kern_f32_to_f16(f);
    }
}

static void test_dot_f16_bf16(void **state) {
    (void)state;
    const kern_ops *t[3];
    int nt = tables(t);
    const kern_ops *ref = kern_ops_scalar();
    rng r = {2};
    static uint16_t wbuf[MAXN + 1];
    static float xbuf[MAXN + 1];
    for (int bf = 0; bf < 2; bf++) {
        const char *what = bf ? "dot_bf16" : "dot_f16";
        for (int k = 0; k < nt; k++) {
            float (*dot)(const uint16_t *, const float *, int) =
                bf ? t[k]->dot_bf16 : t[k]->dot_f16;
            float (*rdot)(const uint16_t *, const float *, int) = bf ? ref->dot_bf16 : ref->dot_f16;
            for (int s = 0; s < N_SIZES; s++) {
                int n = sizes[s];
                for (int off = 0; off < 2; off++) {
                    uint16_t *w = wbuf + off;
                    float *x = xbuf + off;
                    /* 6e4 is near the top of the f16 range */
                    float scales[] = {1.0f, 6e4f};
                    for (int sc = 0; sc < 2; sc++) {
                        fill_h(&r, w, n, scales[sc], bf);
                        fill(&r, x, n, sc ? 1e3f : 1.0f);
                        double mag = 0;
                        for (int i = 0; i < n; i++) {
                            float wf = bf ? kern_bf16_to_f32(w[i]) : kern_f16_to_f32(w[i]);
                            mag += fabs((double)wf * x[i]);
                        }
                        check_close(what, t[k]->name, n, dot(w, x, n), rdot(w, x, n),
                                    1e-5 * mag + 1e-6);
                    }
                    memset(w, 0, (size_t)n * sizeof *w);
                    assert_true(dot(w, x, n) == 0.0f);
                }
            }
        }
    }
}

static void fill_q8(rng *r, block_q8_0 *q, int nb, int unit_scale) {
    for (int b = 0; b < nb; b++) {
        q[b].d = unit_scale ? 0x3c00 : kern_f32_to_f16(rng_f(r) * 0.05f);
        for (int i = 0; i < QK8_0; i++) q[b].qs[i] = (int8_t)(rng_next(r) >> 56);
    }
}

static void test_dot_q8_0(void **state) {
    (void)state;
    const kern_ops *t[3];
    int nt = tables(t);
    const kern_ops *ref = kern_ops_scalar();
    rng r = {3};
    /* odd and even block counts reach every tail path of the SIMD loops */
    static const int qsizes[] = {32, 64, 96, 128, 160, 256, 1024, 4096};
    static block_q8_0 w[MAXN / QK8_0 + 1], x[MAXN / QK8_0 + 1];
    for (int k = 0; k < nt; k++) {
        for (size_t s = 0; s < sizeof qsizes / sizeof qsizes[0]; s++) {
            int n = qsizes[s], nb = n / QK8_0;
            for (int off = 0; off < 2; off++) {
                block_q8_0 *wp = w + off, *xp = x + off;
                /* w may hold -128; x may not (kern.h), as from the quantizer */
                fill_q8(&r, wp, nb, 0);
                fill_q8(&r, xp, nb, 0);
                for (int b = 0; b < nb; b++)
                    for (int i = 0; i < QK8_0; i++)
                        if (xp[b].qs[i] == -128) xp[b].qs[i] = -127;
                /* extremes in the first block: -128 and 127 in w, +-127 in x */
                for (int i = 0; i < 8; i++) {
                    wp[0].qs[i] = (int8_t)(i % 2 ? 127 : -128);
                    xp[0].qs[i] = (int8_t)(i % 4 < 2 ? -127 : 127);
                }
                double mag = 0;
                for (int b = 0; b < nb; b++) {
                    double sb = 0;
                    for (int i = 0; i < QK8_0; i++) sb += abs(wp[b].qs[i] * xp[b].qs[i]);
                    mag += sb * fabs((double)kern_f16_to_f32(wp[b].d) * kern_f16_to_f32(xp[b].d));
                }
                check_close("dot_q8_0", t[k]->name, n, t[k]->dot_q8_0(wp, xp, n),
                            ref->dot_q8_0(wp, xp, n), 2e-6 * mag + 1e-7);

                /* unit scales: every partial sum is an integer below 2^24,
                 * so any summation order gives the exact same float */
                if (nb <= 32) {
                    for (int b = 0; b < nb; b++) wp[b].d = xp[b].d = 0x3c00;
                    float got = t[k]->dot_q8_0(wp, xp, n), want = ref->dot_q8_0(wp, xp, n);
                    if (got != want)
                        fail_msg("dot_q8_0 unit scales [%s] n=%d: %.1f != %.1f", t[k]->name, n,
                                 (double)got, (double)want);
                }
                memset(wp, 0, (size_t)nb * sizeof *wp);
                assert_true(t[k]->dot_q8_0(wp, xp, n) == 0.0f);
            }
        }
    }
}

/* gram_add: g += sum over rows of x x^T, against double, on every table,
 * for head sizes around the 8-lane blocks and row counts around the
 * 4-row blocks, rows strided; nothing outside hd x hd is written. */
static void test_gram_add(void **state) {
    (void)state;
    const kern_ops *t[3];
    int nt = tables(t);
    rng r = {11};
    static const int hds[] = {1, 7, 8, 9, 16, 64, 67, 128};
    static float x[9 * 200], g[130 * 130 + 1];
    static double ref[130 * 130];
    for (int k = 0; k < nt; k++)
        for (size_t ih = 0; ih < sizeof hds / sizeof hds[0]; ih++)
            for (int n = 1; n <= 9; n++) {
                int hd = hds[ih];
                size_t stride = (size_t)hd + 3;
                fill(&r, x, (int)(stride * (size_t)n), 1.0f);
                for (int i = 0; i < hd * hd; i++) g[i] = rng_f(&r), ref[i] = g[i];
                g[hd * hd] = 555.0f;
                for (int row = 0; row < n; row++)
                    for (int a = 0; a < hd; a++)
                        for (int c = 0; c < hd; c++) ref[a * hd + c] += (double)x[row * stride + a] * x[row * stride + c];
                t[k]->gram_add(g, x, stride, n, hd);
                for (int i = 0; i < hd * hd; i++) check_close("gram_add", t[k]->name, hd, g[i], ref[i], 2e-6 * (1 + n));
                assert_true(g[hd * hd] == 555.0f);
            }
}

/* quad_form: v^T G v against double on every table, around the 8 lanes. */
static void test_quad_form(void **state) {
    (void)state;
    const kern_ops *t[3];
    int nt = tables(t);
    rng r = {12};
    static const int hds[] = {1, 7, 8, 9, 64, 67, 128};
    static float g[128 * 128], v[128];
    for (int k = 0; k < nt; k++)
        for (size_t ih = 0; ih < sizeof hds / sizeof hds[0]; ih++) {
            int hd = hds[ih];
            fill(&r, g, hd * hd, 1.0f);
            fill(&r, v, hd, 1.0f);
            double ref = 0;
            for (int a = 0; a < hd; a++)
                for (int c = 0; c < hd; c++) ref += (double)g[a * hd + c] * v[a] * v[c];
            check_close("quad_form", t[k]->name, hd, t[k]->quad_form(g, v, hd), ref, 2e-6 * hd);
        }
}

static void test_axpy_scale(void **state) {
    (void)state;
    const kern_ops *t[3];
    int nt = tables(t);
    const kern_ops *ref = kern_ops_scalar();
    rng r = {4};
    static float xbuf[MAXN + 1], y0[MAXN + 2], y1[MAXN + 2];
    for (int k = 0; k < nt; k++) {
        for (int s = 0; s < N_SIZES; s++) {
            int n = sizes[s];
            for (int off = 0; off < 2; off++) {
                float *x = xbuf + off, *ya = y0 + off, *yb = y1 + off;
                fill(&r, x, n, 1.0f);
                fill(&r, ya, n, 1.0f);
                ya[n] = 777.0f; /* sentinel: nothing past n is written */
                memcpy(yb, ya, (size_t)(n + 1) * sizeof *ya);
                float a = rng_f(&r) * 3.0f;
                ref->axpy(ya, a, x, n);
                t[k]->axpy(yb, a, x, n);
                /* a SIMD FMA rounds once where the scalar code rounds twice */
                for (int i = 0; i < n; i++)
                    check_close("axpy", t[k]->name, n, yb[i], ya[i],
                                2e-7 * (fabs((double)ya[i]) + fabs((double)a * x[i])) + 1e-30);
                assert_true(yb[n] == 777.0f);

                memcpy(yb, ya, (size_t)n * sizeof *ya); /* start both from the same y */
                ref->scale(ya, -1.75f, n);
                t[k]->scale(yb, -1.75f, n);
                assert_memory_equal(ya, yb, (size_t)n * sizeof *ya); /* one multiply: exact */
                assert_true(yb[n] == 777.0f);
            }
        }
    }
}

/* Attention kernels: every table against the scalar reference, for head
 * sizes with and without a full 8-lane tail, strides wider than a head (GQA
 * rows hold several heads), and a sentinel past each output. */
static void test_attention_kernels(void **state) {
    (void)state;
    const kern_ops *t[3];
    int nt = tables(t);
    const kern_ops *ref = kern_ops_scalar();
    rng r = {11};
    static const int hds[] = {1, 3, 8, 16, 33, 64, 100, 128, 256, 300};
    static const int nks[] = {1, 7, 130};
    enum { MAXK = 130, MAXHD = 300, STRIDE = MAXHD + 5 };
    static float q[MAXHD], kv[MAXK * STRIDE], p[MAXK], o0[MAXHD + 1], o1[MAXHD + 1]; /* MAXHD >= MAXK */
    fill(&r, kv, MAXK * STRIDE, 1.0f);
    for (int k = 0; k < nt; k++)
        for (size_t a = 0; a < sizeof hds / sizeof *hds; a++)
            for (size_t b = 0; b < sizeof nks / sizeof *nks; b++) {
                int hd = hds[a], nk = nks[b];
                fill(&r, q, hd, 1.0f);
                o0[nk] = o1[nk] = 777.0f;
                ref->attn_scores(o0, q, kv + 1, STRIDE, nk, hd, 0.125f);
                t[k]->attn_scores(o1, q, kv + 1, STRIDE, nk, hd, 0.125f);
                for (int i = 0; i < nk; i++) {
                    double mag = 0;
                    for (int d = 0; d < hd; d++) mag += fabs((double)q[d] * kv[1 + (size_t)i * STRIDE + d]);
                    check_close("attn_scores", t[k]->name, hd, o1[i], o0[i], 0.125 * (1e-5 * mag + 1e-6));
                }
                assert_true(o1[nk] == 777.0f);

                double sum = 0;
                for (int i = 0; i < nk; i++) sum += p[i] = rng_f(&r) * 0.5f + 0.5f;
                for (int i = 0; i < nk; i++) p[i] = (float)(p[i] / sum);
                o0[hd] = o1[hd] = 777.0f;
                ref->attn_wsum(o0, p, kv + 2, STRIDE, nk, hd);
                t[k]->attn_wsum(o1, p, kv + 2, STRIDE, nk, hd);
                for (int d = 0; d < hd; d++) {
                    double mag = 0;
                    for (int i = 0; i < nk; i++) mag += fabs((double)p[i] * kv[2 + (size_t)i * STRIDE + d]);
                    check_close("attn_wsum", t[k]->name, hd, o1[d], o0[d], 1e-5 * mag + 1e-7);
                }
                assert_true(o1[hd] == 777.0f);
            }
}

/* Row lengths of a multi-query block: causal (row i one key longer than row
 * i - 1), equal (the heads of a GQA group), decreasing, and random. */
static void block_lengths(rng *r, int *n_keys, int n_q, int shape, int max_keys) {
    for (int i = 0; i < n_q; i++) {
        switch (shape) {
        case 0: n_keys[i] = max_keys - n_q + 1 + i; break;
        case 1: n_keys[i] = max_keys; break;
        case 2: n_keys[i] = max_keys - 2 * i; break;
        default: n_keys[i] = 1 + (int)(rng_next(r) % (uint64_t)max_keys); break;
        }
        if (n_keys[i] < 1) n_keys[i] = 1;
    }
}

/*
 * The multi-query attention kernels. Scores: every table's block kernel
 * against its own single-query kernel, BIT FOR BIT (the recorder recomputes
 * captured rows with attn_scores), for head sizes with and without a full
 * 8-lane tail, blocks of 1..9 queries (whole groups of 4 and leftovers),
 * rows of different lengths (odd and even, shorter and longer than the
 * others), and key strides of one head, a GQA row, and a padded row.
 * Weighted sums: against the scalar reference within attn_wsum's tolerance.
 * A sentinel past every row catches writes beyond it.
 */
static void test_attention_multi(void **state) {
    (void)state;
    const kern_ops *t[3];
    int nt = tables(t);
    const kern_ops *ref = kern_ops_scalar();
    rng r = {23};
    /* every kind of last strip for the weighted sums' 16- and 32-dim strips */
    static const int hds[] = {1, 3, 8, 20, 48, 56, 64, 80, 100, 128, 256, 300};
    static const int nqs[] = {1, 3, 4, 5, 8, 9};
    enum { MAXQ = 9, MAXK = 67, MAXHD = 300, MAXSTRIDE = 3 * MAXHD };
    static float kv[(MAXK + 1) * MAXSTRIDE], q[MAXQ][MAXHD], o1[MAXQ][MAXK + 1], o0[MAXQ][MAXK + 1];
    static float pr[MAXQ][MAXK], w1[MAXQ][MAXHD + 1], w0[MAXQ][MAXHD + 1];
    fill(&r, kv, (MAXK + 1) * MAXSTRIDE, 1.0f);
    for (int k = 0; k < nt; k++)
        for (size_t a = 0; a < sizeof hds / sizeof *hds; a++)
            for (size_t b = 0; b < sizeof nqs / sizeof *nqs; b++)
                for (int shape = 0; shape < 4; shape++) {
                    int hd = hds[a], nq = nqs[b], n_keys[MAXQ];
                    size_t strides[3] = {(size_t)hd, (size_t)3 * hd, (size_t)hd + 5};
                    size_t stride = strides[(a + b + shape) % 3];
                    block_lengths(&r, n_keys, nq, shape, MAXK - (int)(shape + b) % 4);
                    float *out[MAXQ], *wout[MAXQ];
                    const float *qp[MAXQ], *pp[MAXQ];
                    for (int i = 0; i < nq; i++) {
                        fill(&r, q[i], hd, 1.0f);
                        qp[i] = q[i];
                        out[i] = o1[i];
                        o1[i][n_keys[i]] = 777.0f;
                    }
                    t[k]->attn_scores_multi(out, qp, n_keys, nq, kv + 1, stride, hd, 0.125f);
                    for (int i = 0; i < nq; i++) {
                        t[k]->attn_scores(o0[i], q[i], kv + 1, stride, n_keys[i], hd, 0.125f);
                        for (int j = 0; j < n_keys[i]; j++)
                            if (f2u(o1[i][j]) != f2u(o0[i][j]))
                                fail_msg("attn_scores_multi [%s] hd=%d n_q=%d row %d key %d: %.9g, "
                                         "attn_scores gives %.9g",
                                         t[k]->name, hd, nq, i, j, o1[i][j], o0[i][j]);
                        assert_true(o1[i][n_keys[i]] == 777.0f);
                    }

                    for (int i = 0; i < nq; i++) {
                        double sum = 0;
                        for (int j = 0; j < n_keys[i]; j++) sum += pr[i][j] = rng_f(&r) * 0.5f + 0.5f;
                        for (int j = 0; j < n_keys[i]; j++) pr[i][j] = (float)(pr[i][j] / sum);
                        pp[i] = pr[i];
                        wout[i] = w1[i];
                        w1[i][hd] = 777.0f;
                        ref->attn_wsum(w0[i], pr[i], kv + 2, stride, n_keys[i], hd);
                    }
                    t[k]->attn_wsum_multi(wout, pp, n_keys, nq, kv + 2, stride, hd);
                    for (int i = 0; i < nq; i++) {
                        for (int d = 0; d < hd; d++) {
                            double mag = 0;
                            for (int j = 0; j < n_keys[i]; j++)
                                mag += fabs((double)pr[i][j] * kv[2 + (size_t)j * stride + d]);
                            check_close("attn_wsum_multi", t[k]->name, hd, w1[i][d], w0[i][d],
                                        1e-5 * mag + 1e-7);
                        }
                        assert_true(w1[i][hd] == 777.0f);
                    }
                }
}

/* ---------------------------------------------------------------- matmul */

static void test_matmul_rows(void **state) {
    (void)state;
    const kern_ops *t[3];
    int nt = tables(t);
    rng r = {5};
    enum { N_OUT = 13, N_TOK = 5, STRIDE = N_OUT + 4 };
    static const int types[] = {GGML_F32, GGML_F16, GGML_BF16, GGML_Q8_0};
    static const int n_ins[] = {33, 96, 256}; /* 33 only for float types */
    static float wf[N_OUT * 256], x[N_TOK * 256], wdq[N_OUT * 256], xdq[N_TOK * 256];
    static uint16_t wh[N_OUT * 256];
    static block_q8_0 wq[N_OUT * 256 / QK8_0], xq[N_TOK * 256 / QK8_0];
    float out[N_TOK * STRIDE];

    for (int k = 0; k < nt; k++)
        for (size_t ti = 0; ti < 4; ti++)
            for (size_t ni = 0; ni < 3; ni++) {
                int type = types[ti], n_in = n_ins[ni];
                if (type == GGML_Q8_0 && n_in % QK8_0) continue;
                fill(&r, wf, N_OUT * n_in, 1.0f);
                fill(&r, x, N_TOK * n_in, 2.0f);
                const void *w = wf;
                /* the weights as stored, and as the exact values the kernel must see */
                if (type == GGML_F16 || type == GGML_BF16) {
                    fill_h(&r, wh, N_OUT * n_in, 1.0f, type == GGML_BF16);
                    w = wh;
                } else if (type == GGML_Q8_0) {
                    kern_quantize_q8_0(wq, wf, N_OUT * n_in);
                    kern_quantize_q8_0(xq, x, N_TOK * n_in);
                    w = wq;
                }
                for (int o = 0; o < N_OUT; o++)
                    kern_dequant_row(wdq + o * n_in,
                                     (const char *)w + kern_row_bytes(type, n_in) * o, type, n_in);
                if (type == GGML_Q8_0)
                    for (int tk = 0; tk < N_TOK; tk++)
                        kern_dequant_row(xdq + tk * n_in, xq + tk * (n_in / QK8_0), type, n_in);
                else
                    memcpy(xdq, x, sizeof(float) * N_TOK * n_in);

                /* a sub-range of rows, several tokens, a padded output stride */
                int o0 = 3, o1 = N_OUT - 2;
                for (int i = 0; i < N_TOK * STRIDE; i++) out[i] = 12345.0f;
                kern_matmul_rows(t[k], out, STRIDE, type, w, n_in, x, xq, N_TOK, o0, o1);
                for (int tk = 0; tk < N_TOK; tk++)
                    for (int o = 0; o < STRIDE; o++) {
                        float got = out[tk * STRIDE + o];
                        if (o < o0 || o >= o1) {
                            assert_true(got == 12345.0f); /* outside the range: untouched */
                            continue;
                        }
                        double ref = 0, mag = 0;
                        for (int i = 0; i < n_in; i++) {
                            double p = (double)wdq[o * n_in + i] * xdq[tk * n_in + i];
                            ref += p;
                            mag += fabs(p);
                        }
                        check_close("matmul_rows", t[k]->name, n_in, got, ref, 1e-5 * mag + 1e-6);
                    }
            }
}

/* ----------------------------------------------------------- elementwise */

static void test_rmsnorm(void **state) {
    (void)state;
    rng r = {6};
    static float x[4096], w[4096], out[4096];
    int ns[] = {1, 7, 64, 4096};
    for (int s = 0; s < 4; s++) {
        int n = ns[s];
        fill(&r, x, n, 3.0f);
        fill(&r, w, n, 1.0f);
        kern_rmsnorm(out, x, w, n, 1e-5f);
        double ss = 0;
        for (int i = 0; i < n; i++) ss += (double)x[i] * x[i];
        double sc = 1.0 / sqrt(ss / n + 1e-5);
        for (int i = 0; i < n; i++) {
            double ref = x[i] * sc * w[i];
            check_close("rmsnorm", "scalar", n, out[i], ref, 1e-6 * fabs(ref) + 1e-30);
        }
        /* in place gives the same bits */
        kern_rmsnorm(x, x, w, n, 1e-5f);
        assert_memory_equal(x, out, (size_t)n * sizeof *x);
    }
    /* all zeros: eps keeps it finite */
    memset(x, 0, sizeof x);
    kern_rmsnorm(out, x, w, 64, 1e-6f);
    for (int i = 0; i < 64; i++) assert_true(out[i] == 0.0f);
}

static void test_softmax(void **state) {
    (void)state;
    rng r = {8};
    static float x[1000], orig[1000];
    fill(&r, x, 1000, 20.0f);
    for (int i = 0; i < 1000; i += 7) x[i] = -INFINITY; /* causal-mask style entries */
    memcpy(orig, x, sizeof x);
    kern_softmax(x, 1000);
    double max = -INFINITY, den = 0, sum = 0;
    for (int i = 0; i < 1000; i++) max = fmax(max, orig[i]);
    for (int i = 0; i < 1000; i++) den += exp(orig[i] - max);
    for (int i = 0; i < 1000; i++) {
        if (i % 7 == 0) assert_true(x[i] == 0.0f);
        check_close("softmax", "scalar", 1000, x[i], exp(orig[i] - max) / den,
                    1e-6 * exp(orig[i] - max) / den + 1e-12);
        sum += x[i];
    }
    check_close("softmax sum", "scalar", 1000, sum, 1.0, 1e-5);

    float one = -3.5f;
    kern_softmax(&one, 1);
    assert_true(one == 1.0f);

    float big[3] = {1e30f, 1e30f, -1e30f}; /* no overflow: shifted by the max */
    kern_softmax(big, 3);
    assert_true(big[0] == 0.5f && big[1] == 0.5f && big[2] == 0.0f);

    float masked[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    kern_softmax(masked, 4);
    for (int i = 0; i < 4; i++) assert_true(masked[i] == 0.0f);
}

/* Every table's softmax against the scalar reference: relative error of each
 * probability within 2e-6 (a 2-ulp exp, a float sum), masked entries exactly
 * 0, tails of every length, rows that underflow, a sentinel past the end. */
static void test_softmax_tables(void **state) {
    (void)state;
    const kern_ops *t[3];
    int nt = tables(t);
    rng r = {9};
    static float x[1001], a[1001], b[1001];
    static const int sizes_sm[] = {1, 2, 7, 8, 9, 15, 16, 17, 63, 100, 1000};
    static const float scales[] = {1.0f, 20.0f, 200.0f};
    for (int k = 0; k < nt; k++)
        for (size_t si = 0; si < sizeof sizes_sm / sizeof *sizes_sm; si++)
            for (size_t sc = 0; sc < sizeof scales / sizeof *scales; sc++) {
                int n = sizes_sm[si];
                fill(&r, x, n, scales[sc]);
                for (int i = 3; i < n; i += 11) x[i] = -INFINITY;
                memcpy(a, x, sizeof(float) * (size_t)n);
                memcpy(b, x, sizeof(float) * (size_t)n);
                a[n] = b[n] = 777.0f;
                kern_softmax(a, n);
                t[k]->softmax(b, n);
                double sum = 0;
                for (int i = 0; i < n; i++) {
                    if (x[i] == -INFINITY) assert_true(b[i] == 0.0f);
                    /* results below FLT_MIN may be flushed to 0 */
                    check_close("softmax", t[k]->name, n, b[i], a[i], 2e-6 * a[i] + 1.2e-38);
                    sum += b[i];
                }
                check_close("softmax sum", t[k]->name, n, sum, 1.0, 1e-5);
                assert_true(b[n] == 777.0f);
            }
    static float all[9];
    for (int k = 0; k < nt; k++) {
        for (int i = 0; i < 9; i++) all[i] = -INFINITY;
        t[k]->softmax(all, 9);
        for (int i = 0; i < 9; i++) assert_true(all[i] == 0.0f);
    }
}

/* Every table's SwiGLU against the scalar reference: each result within
 * 1e-6 relative (a 2-ulp exp, one division), tails of every length, the
 * edges of the exp (-88 and below, where the reference's expf overflows and
 * both give next to nothing), NaN, +inf, and a sentinel past the end. */
static void test_swiglu_tables(void **state) {
    (void)state;
    const kern_ops *t[3];
    int nt = tables(t);
    rng r = {13};
    static float g[1001], up[1001], a[1001], b[1001];
    static const int n_sw[] = {1, 5, 8, 9, 16, 23, 1000};
    static const float edge[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 87.0f, 88.5f, 100.0f, -87.0f, -87.5f, -88.5f,
                                 -100.0f, -1e4f, INFINITY, NAN};
    enum { N_EDGE = sizeof edge / sizeof *edge };
    for (int k = 0; k < nt; k++)
        for (size_t si = 0; si < sizeof n_sw / sizeof *n_sw; si++)
            for (float scale = 1.0f; scale <= 100.0f; scale *= 10.0f) {
                int n = n_sw[si];
                fill(&r, g, n, scale);
                fill(&r, up, n, 2.0f);
                for (int i = 0; i < n && n > 20; i += 7) g[i] = edge[(i / 7) % N_EDGE];
                memcpy(a, g, sizeof(float) * (size_t)n);
                memcpy(b, g, sizeof(float) * (size_t)n);
                a[n] = b[n] = 777.0f;
                kern_swiglu(a, up, n);
                t[k]->swiglu(b, up, n);
                for (int i = 0; i < n; i++) {
                    if (a[i] != a[i]) {
                        assert_true(b[i] != b[i]);
                        continue;
                    }
                    if (isinf(a[i])) {
                        assert_true(b[i] == a[i]);
                        continue;
                    }
                    /* below -88 only the magnitude is nothing, in both */
                    check_close("swiglu", t[k]->name, n, b[i], a[i], 1e-6 * fabs(a[i]) + 1e-30);
                }
                assert_true(b[n] == 777.0f);
            }
}

/* The sampler's softmax sums: the scalar reference against double-precision
 * sums of exp, and every table against the scalar reference (z and zx within
 * 1e-6 relative, each e within 2e-6 relative or flushed below FLT_MIN), with
 * NaN (read as -inf), +inf (read as FLT_MAX), -inf, tails of every length, a
 * vocabulary-sized row, and rows with nothing finite. */
static void test_exp_sums(void **state) {
    (void)state;
    const kern_ops *t[3];
    int nt = tables(t);
    rng r = {10};
    enum { N = 49155 };
    static float x[N + 1], ea[N + 1], eb[N + 1];
    static const int sizes_es[] = {1, 2, 7, 8, 9, 17, 100, 1001, N};
    for (size_t si = 0; si < sizeof sizes_es / sizeof *sizes_es; si++)
        for (int kind = 0; kind < 3; kind++) {
            int n = sizes_es[si];
            fill(&r, x, n, kind == 0 ? 1.0f : 30.0f);
            if (kind == 2 && n > 5) {
                x[1] = NAN;
                x[n - 2] = -INFINITY;
                x[n / 2] = INFINITY; /* read as FLT_MAX: every other term underflows to 0 */
            }
            double za, zxa;
            float ma = kern_exp_sums(x, n, ea, &za, &zxa);
            /* the reference against double sums */
            double mx = -INFINITY, z = 0, zx = 0;
            for (int i = 0; i < n; i++) {
                double v = x[i] != x[i] ? -INFINITY : x[i] > FLT_MAX ? FLT_MAX : x[i];
                mx = fmax(mx, v);
            }
            for (int i = 0; i < n; i++) {
                double v = x[i] != x[i] ? -INFINITY : x[i] > FLT_MAX ? FLT_MAX : x[i];
                double e = exp(v - mx);
                z += e;
                if (e > 0) zx += e * (v - mx);
            }
            assert_true(ma == (float)mx);
            check_close("exp_sums z", "scalar", n, za, z, 1e-6 * z);
            check_close("exp_sums zx", "scalar", n, zxa, zx, 1e-5 * fabs(zx) + 1e-9);
            for (int k = 0; k < nt; k++) {
                double zb, zxb;
                eb[n] = 777.0f;
                float mb = t[k]->exp_sums(x, n, eb, &zb, &zxb);
                assert_true(mb == ma);
                check_close("exp_sums z", t[k]->name, n, zb, za, 1e-6 * za);
                check_close("exp_sums zx", t[k]->name, n, zxb, zxa, 1e-5 * fabs(zxa) + 1e-9);
                for (int i = 0; i < n; i++) check_close("exp_sums e", t[k]->name, n, eb[i], ea[i], 2e-6 * ea[i] + 1.2e-38);
                assert_true(eb[n] == 777.0f);
                /* without the e array: the same sums, bit for bit */
                double zc, zxc;
                assert_true(t[k]->exp_sums(x, n, NULL, &zc, &zxc) == mb && zc == zb && zxc == zxb);
            }
        }
    static float none[11];
    for (int i = 0; i < 11; i++) none[i] = i % 2 ? NAN : -INFINITY;
    for (int k = 0; k < nt; k++) {
        double z = 1, zx = 1;
        assert_true(t[k]->exp_sums(none, 11, eb, &z, &zx) == -INFINITY);
        assert_true(z == 0 && zx == 0);
        for (int i = 0; i < 11; i++) assert_true(eb[i] == 0.0f);
    }
}

static void test_swiglu(void **state) {
    (void)state;
    rng r = {9};
    float g[256], u[256], orig[256];
    fill(&r, g, 256, 8.0f);
    fill(&r, u, 256, 2.0f);
    g[0] = -100.0f; /* exp(100) overflows float: silu must still be ~0, not NaN */
    g[1] = 100.0f;
    g[2] = 0.0f;
    memcpy(orig, g, sizeof g);
    kern_swiglu(g, u, 256);
    for (int i = 0; i < 256; i++) {
        double ref = orig[i] / (1.0 + exp(-(double)orig[i])) * u[i];
        check_close("swiglu", "scalar", 256, g[i], ref, 1e-6 * fabs(ref) + 1e-30);
    }
}

/* ------------------------------------------------------------- dispatch */

static void test_dispatch(void **state) {
    (void)state;
    const char *saved = getenv("HEED_KERN");
    char keep[32] = "";
    if (saved) snprintf(keep, sizeof keep, "%s", saved);

    unsetenv("HEED_KERN");
    const kern_ops *best = kern_ops_best();
    assert_non_null(best);
    if (kern_ops_avx512())
        assert_ptr_equal(best, kern_ops_avx512());
    else if (kern_ops_avx2())
        assert_ptr_equal(best, kern_ops_avx2());
    else
        assert_ptr_equal(best, kern_ops_scalar());
    printf("kern: best table is %s\n", best->name);

    setenv("HEED_KERN", "scalar", 1);
    assert_ptr_equal(kern_ops_best(), kern_ops_scalar());
    setenv("HEED_KERN", "avx2", 1);
    assert_ptr_equal(kern_ops_best(), kern_ops_avx2() ? kern_ops_avx2() : best);
    setenv("HEED_KERN", "avx512", 1);
    assert_ptr_equal(kern_ops_best(), kern_ops_avx512() ? kern_ops_avx512() : best);
    setenv("HEED_KERN", "no-such-table", 1);
    assert_ptr_equal(kern_ops_best(), best);

    if (saved)
        setenv("HEED_KERN", keep, 1);
    else
        unsetenv("HEED_KERN");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_to_f32_exhaustive),
        cmocka_unit_test(test_f16_round_trip_exhaustive),
        cmocka_unit_test(test_f32_to_f16_rounding),
        cmocka_unit_test(test_f16_by_hand),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_quantize_q8_0_by_hand),
        cmocka_unit_test(test_dequant_row),
        cmocka_unit_test(test_scalar_vs_double),
        cmocka_unit_test(test_dot_f32),
        cmocka_unit_test(test_dot_f16_bf16),
        cmocka_unit_test(test_dot_q8_0),
        cmocka_unit_test(test_axpy_scale),
        cmocka_unit_test(test_gram_add),
        cmocka_unit_test(test_quad_form),
        cmocka_unit_test(test_attention_kernels),
        cmocka_unit_test(test_attention_multi),
        cmocka_unit_test(test_matmul_rows),
        cmocka_unit_test(test_rmsnorm),
        cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_softmax_tables),
        cmocka_unit_test(test_swiglu_tables),
        cmocka_unit_test(test_exp_sums),
        cmocka_unit_test(test_swiglu),
        cmocka_unit_test(test_dispatch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
