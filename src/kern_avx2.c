/*
 * kern_avx2.c - the AVX2 + FMA + F16C kernel table.
 *
 * Built with -mavx2 -mfma -mf16c and only reached through kern_ops_avx2(),
 * which checks the CPU first. Results equal the scalar reference up to
 * summation order (the Q8_0 integer block sums are exact).
 *
 * The dot products keep four independent 8-lane accumulators so the FMA
 * latency (4-5 cycles) is hidden and the loop can issue one load pair per
 * cycle: at that rate a single core saturates its share of DRAM bandwidth,
 * which is what bounds decoding. Short vectors (head_dim 8..128 in
 * attention) pass through the same loops with no setup besides zeroing.
 */
#include "kern.h"

#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* 8 halfs or 8 bfloat16s at an unaligned address, widened to f32 */
static inline __m256 load_f16x8(const uint16_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static inline __m256 load_bf16x8(const uint16_t *p) {
    /* bf16 is the top half of an f32: widen to 32 bits and shift up (exact) */
    __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}

static float dot_f32_avx2(const float *a, const float *b, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8)
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    float s = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static float dot_f16_avx2(const uint16_t *w, const float *x, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(load_f16x8(w + i), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(load_f16x8(w + i + 8), _mm256_loadu_ps(x + i + 8), s1);
        s2 = _mm256_fmadd_ps(load_f16x8(w + i + 16), _mm256_loadu_ps(x + i + 16), s2);
        s3 = _mm256_fmadd_ps(load_f16x8(w + i + 24), _mm256_loadu_ps(x + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(load_f16x8(w + i), _mm256_loadu_ps(x + i), s0);
    float s = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += _cvtsh_ss(w[i]) * x[i];
    return s;
}

static float dot_bf16_avx2(const uint16_t *w, const float *x, int n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(load_bf16x8(w + i), _mm256_loadu_ps(x + i), s0);
        s1 = _mm256_fmadd_ps(load_bf16x8(w + i + 8), _mm256_loadu_ps(x + i + 8), s1);
        s2 = _mm256_fmadd_ps(load_bf16x8(w + i + 16), _mm256_loadu_ps(x + i + 16), s2);
        s3 = _mm256_fmadd_ps(load_bf16x8(w + i + 24), _mm256_loadu_ps(x + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(load_bf16x8(w + i), _mm256_loadu_ps(x + i), s0);
    float s = hsum8(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (; i < n; i++) s += kern_bf16_to_f32(w[i]) * x[i];
    return s;
}

/*
 * One Q8_0 block pair: 32 int8 products summed into 8 int32 lanes, exactly.
 * maddubs multiplies unsigned by signed bytes, so move w's sign onto x:
 * |w| * (x * sign(w)) = w * x. Its pairwise int16 sums cannot saturate while
 * |x| <= 127 (2 * 128 * 127 < 32767), which the kern.h contract guarantees.
 */
static inline __m256i block_dot_q8(const block_q8_0 *w, const block_q8_0 *x) {
    __m256i qw = _mm256_loadu_si256((const __m256i *)w->qs);
    __m256i qx = _mm256_loadu_si256((const __m256i *)x->qs);
    __m256i p16 = _mm256_maddubs_epi16(_mm256_sign_epi8(qw, qw), _mm256_sign_epi8(qx, qw));
    return _mm256_madd_epi16(p16, _mm256_set1_epi16(1));
}

static inline __m256 block_scale(const block_q8_0 *w, const block_q8_0 *x) {
    return _mm256_set1_ps(_cvtsh_ss(w->d) * _cvtsh_ss(x->d));
}

static float dot_q8_0_avx2(const block_q8_0 *w, const block_q8_0 *x, int n) {
    int nb = n / QK8_0, b = 0;
    /* two blocks per iteration into two accumulators: independent FMA chains */
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    for (; b + 2 <= nb; b += 2) {
        __m256i p0 = block_dot_q8(w + b, x + b);
        __m256i p1 = block_dot_q8(w + b + 1, x + b + 1);
        s0 = _mm256_fmadd_ps(block_scale(w + b, x + b), _mm256_cvtepi32_ps(p0), s0);
        s1 = _mm256_fmadd_ps(block_scale(w + b + 1, x + b + 1), _mm256_cvtepi32_ps(p1), s1);
    }
    if (b < nb)
        s0 = _mm256_fmadd_ps(block_scale(w + b, x + b),
                             _mm256_cvtepi32_ps(block_dot_q8(w + b, x + b)), s0);
    return hsum8(_mm256_add_ps(s0, s1));
}

static void axpy_avx2(float *y, float a, const float *x, int n) {
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 y0 = _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i));
        __m256 y1 = _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(y + i + 8));
        _mm256_storeu_ps(y + i, y0);
        _mm256_storeu_ps(y + i + 8, y1);
    }
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i,
                         _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    /* fmaf keeps the tail bit-identical to the vector body (one rounding) */
    for (; i < n; i++) y[i] = fmaf(a, x[i], y[i]);
}

static void scale_avx2(float *y, float a, int n) {
    __m256 va = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(va, _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] *= a;
}

const kern_ops kern_ops_avx2_table = {
    .name = "avx2",
    .dot_f32 = dot_f32_avx2,
    .dot_f16 = dot_f16_avx2,
    .dot_bf16 = dot_bf16_avx2,
    .dot_q8_0 = dot_q8_0_avx2,
    .axpy = axpy_avx2,
    .scale = scale_avx2,
};

#else
/* Not x86-64: kern_ops_avx2() returns NULL; ISO C wants a non-empty file. */
typedef int kern_avx2_unused;
#endif
