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
#include "ggml_types.h"
#include "kern.h"

#if defined(__x86_64__)

#include <float.h>
#include <immintrin.h>
#include <math.h>
#include <stdbool.h>

static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

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

/* Lanes below `rem` (1..8) set: for masked loads and stores of a tail. */
static inline __m256i lane_mask(int rem) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(rem), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

#define ATT_MAX_CHUNKS 32 /* head_dim up to 256 keeps q in registers */

void kern_attn_scores_avx2(float *out, const float *q, const float *keys, size_t k_stride, int n_keys, int hd,
                           float scale) {
    int nc = (hd + 7) / 8;
    if (nc > ATT_MAX_CHUNKS) {
        for (int k = 0; k < n_keys; k++) out[k] = dot_f32_avx2(q, keys + (size_t)k * k_stride, hd) * scale;
        return;
    }
    __m256i tail = lane_mask(hd - 8 * (nc - 1));
    __m256 qv[ATT_MAX_CHUNKS];
    for (int c = 0; c < nc - 1; c++) qv[c] = _mm256_loadu_ps(q + 8 * c);
    qv[nc - 1] = _mm256_maskload_ps(q + 8 * (nc - 1), tail);
    for (int k = 0; k < n_keys; k++) {
        const float *kk = keys + (size_t)k * k_stride;
        __m256 acc = _mm256_mul_ps(qv[nc - 1], _mm256_maskload_ps(kk + 8 * (nc - 1), tail));
        for (int c = 0; c < nc - 1; c++) acc = _mm256_fmadd_ps(qv[c], _mm256_loadu_ps(kk + 8 * c), acc);
        out[k] = hsum8(acc) * scale;
    }
}

void kern_attn_wsum_avx2(float *out, const float *p, const float *vals, size_t v_stride, int n_keys, int hd) {
    /* strips of up to 32 dims live in registers across all keys, so out is
     * written once instead of once per key; even and odd keys go to two
     * accumulator sets, which halves the FMA latency chain (a prompt's
     * attention is latency-bound otherwise), added at the end */
    for (int d0 = 0; d0 < hd; d0 += 32) {
        int w = hd - d0 < 32 ? hd - d0 : 32, nc = (w + 7) / 8;
        __m256i tail = lane_mask(w - 8 * (nc - 1));
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        __m256 acc2[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        int k = 0;
        for (; k + 2 <= n_keys; k += 2) {
            const float *vk = vals + (size_t)k * v_stride + d0, *vk2 = vk + v_stride;
            __m256 pk = _mm256_set1_ps(p[k]), pk2 = _mm256_set1_ps(p[k + 1]);
            for (int c = 0; c < nc - 1; c++) {
                acc[c] = _mm256_fmadd_ps(pk, _mm256_loadu_ps(vk + 8 * c), acc[c]);
                acc2[c] = _mm256_fmadd_ps(pk2, _mm256_loadu_ps(vk2 + 8 * c), acc2[c]);
            }
            acc[nc - 1] = _mm256_fmadd_ps(pk, _mm256_maskload_ps(vk + 8 * (nc - 1), tail), acc[nc - 1]);
            acc2[nc - 1] = _mm256_fmadd_ps(pk2, _mm256_maskload_ps(vk2 + 8 * (nc - 1), tail), acc2[nc - 1]);
        }
        if (k < n_keys) {
            const float *vk = vals + (size_t)k * v_stride + d0;
            __m256 pk = _mm256_set1_ps(p[k]);
            for (int c = 0; c < nc - 1; c++) acc[c] = _mm256_fmadd_ps(pk, _mm256_loadu_ps(vk + 8 * c), acc[c]);
            acc[nc - 1] = _mm256_fmadd_ps(pk, _mm256_maskload_ps(vk + 8 * (nc - 1), tail), acc[nc - 1]);
        }
        for (int c = 0; c < nc - 1; c++) _mm256_storeu_ps(out + d0 + 8 * c, _mm256_add_ps(acc[c], acc2[c]));
        _mm256_maskstore_ps(out + d0 + 8 * (nc - 1), tail, _mm256_add_ps(acc[nc - 1], acc2[nc - 1]));
    }
}

/*
 * Eight dot-product accumulators reduced at once: lane j of the result is
 * hsum8(a[j]) bit for bit. The adds are hsum8's, pair for pair and in the
 * same operand order (low half + high half, then lanes 0+2 and 1+3, then
 * those two); only the shuffles that line them up differ, and doing eight
 * vectors together takes 21 instructions instead of 48.
 */
static inline __m256 hsum8x8(__m256 a0, __m256 a1, __m256 a2, __m256 a3, __m256 a4, __m256 a5, __m256 a6,
                             __m256 a7) {
    /* low 128-bit lane: low + high half of a_j; high lane: the same of a_j+4 */
    __m256 t0 = _mm256_add_ps(_mm256_permute2f128_ps(a0, a4, 0x20), _mm256_permute2f128_ps(a0, a4, 0x31));
    __m256 t1 = _mm256_add_ps(_mm256_permute2f128_ps(a1, a5, 0x20), _mm256_permute2f128_ps(a1, a5, 0x31));
    __m256 t2 = _mm256_add_ps(_mm256_permute2f128_ps(a2, a6, 0x20), _mm256_permute2f128_ps(a2, a6, 0x31));
    __m256 t3 = _mm256_add_ps(_mm256_permute2f128_ps(a3, a7, 0x20), _mm256_permute2f128_ps(a3, a7, 0x31));
    /* per lane [x0 + x2, x1 + x3, y0 + y2, y1 + y3] of two reduced vectors x, y */
    __m256 u0 = _mm256_add_ps(_mm256_shuffle_ps(t0, t1, 0x44), _mm256_shuffle_ps(t0, t1, 0xEE));
    __m256 u1 = _mm256_add_ps(_mm256_shuffle_ps(t2, t3, 0x44), _mm256_shuffle_ps(t2, t3, 0xEE));
    /* per lane [(x0 + x2) + (x1 + x3), ...]: the results in a0..a7 order */
    return _mm256_add_ps(_mm256_shuffle_ps(u0, u1, 0x88), _mm256_shuffle_ps(u0, u1, 0xDD));
}

/* A chunk of 8 floats: a plain load, or a masked one for a short tail. */
static inline __m256 load_chunk(const float *p, __m256i mask, bool full) {
    return full ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask);
}

/*
 * Scores of 4 queries against keys [0, n_keys), two keys at a time: 8
 * independent dots per step, and each key chunk loaded once for the four.
 * qb holds the queries as nc chunks each, zero past hd (as the masked query
 * load of kern_attn_scores_avx2 leaves them). Every dot is computed as
 * there: the tail chunk's product first, then one FMA per chunk in order,
 * hsum8, times scale.
 */
static inline __attribute__((always_inline)) void scores_block4(float *const *out, const float *qb, int n_keys,
                                                                const float *keys, size_t k_stride, int nc,
                                                                __m256i tail, bool full, float scale) {
    const float *q0 = qb, *q1 = qb + 8 * nc, *q2 = qb + 16 * nc, *q3 = qb + 24 * nc;
    const int t = 8 * (nc - 1);
    const __m256 vscale = _mm256_set1_ps(scale);
    int k = 0;
    for (; k + 2 <= n_keys; k += 2) {
        const float *ka = keys + (size_t)k * k_stride, *kb = ka + k_stride;
        __m256 xa = load_chunk(ka + t, tail, full), xb = load_chunk(kb + t, tail, full);
        __m256 v = _mm256_loadu_ps(q0 + t);
        __m256 a0 = _mm256_mul_ps(v, xa), a1 = _mm256_mul_ps(v, xb);
        v = _mm256_loadu_ps(q1 + t);
        __m256 a2 = _mm256_mul_ps(v, xa), a3 = _mm256_mul_ps(v, xb);
        v = _mm256_loadu_ps(q2 + t);
        __m256 a4 = _mm256_mul_ps(v, xa), a5 = _mm256_mul_ps(v, xb);
        v = _mm256_loadu_ps(q3 + t);
        __m256 a6 = _mm256_mul_ps(v, xa), a7 = _mm256_mul_ps(v, xb);
        for (int c = 0; c < t; c += 8) {
            xa = _mm256_loadu_ps(ka + c);
            xb = _mm256_loadu_ps(kb + c);
            v = _mm256_loadu_ps(q0 + c);
            a0 = _mm256_fmadd_ps(v, xa, a0);
            a1 = _mm256_fmadd_ps(v, xb, a1);
            v = _mm256_loadu_ps(q1 + c);
            a2 = _mm256_fmadd_ps(v, xa, a2);
            a3 = _mm256_fmadd_ps(v, xb, a3);
            v = _mm256_loadu_ps(q2 + c);
            a4 = _mm256_fmadd_ps(v, xa, a4);
            a5 = _mm256_fmadd_ps(v, xb, a5);
            v = _mm256_loadu_ps(q3 + c);
            a6 = _mm256_fmadd_ps(v, xa, a6);
            a7 = _mm256_fmadd_ps(v, xb, a7);
        }
        /* [q0.ka q0.kb q1.ka q1.kb | q2.ka q2.kb q3.ka q3.kb], each hsum8 * scale */
        __m256 r = _mm256_mul_ps(hsum8x8(a0, a1, a2, a3, a4, a5, a6, a7), vscale);
        __m128 lo = _mm256_castps256_ps128(r), hi = _mm256_extractf128_ps(r, 1);
        _mm_storel_pi((__m64 *)(out[0] + k), lo);
        _mm_storeh_pi((__m64 *)(out[1] + k), lo);
        _mm_storel_pi((__m64 *)(out[2] + k), hi);
        _mm_storeh_pi((__m64 *)(out[3] + k), hi);
    }
    if (k < n_keys) { /* an odd last key: the four dots one by one */
        const float *ka = keys + (size_t)k * k_stride;
        __m256 xa = load_chunk(ka + t, tail, full);
        for (int i = 0; i < 4; i++) {
            const float *qi = qb + 8 * nc * i;
            __m256 a = _mm256_mul_ps(_mm256_loadu_ps(qi + t), xa);
            for (int c = 0; c < t; c += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(qi + c), _mm256_loadu_ps(ka + c), a);
            out[i][k] = hsum8(a) * scale;
        }
    }
}

/* kern.h's attn_scores_multi: blocks of 4 queries through scores_block4,
 * what is left (a block's causal tails, leftover queries, head_dim over 256)
 * through kern_attn_scores_avx2 itself; bit for bit its scores either way. */
static void attn_scores_multi_avx2(float *const *out, const float *const *q, const int *n_keys, int n_q,
                                   const float *keys, size_t k_stride, int hd, float scale) {
    int nc = (hd + 7) / 8, i = 0;
    if (nc <= ATT_MAX_CHUNKS) {
        __m256i tail = lane_mask(hd - 8 * (nc - 1));
        float qb[4 * 8 * ATT_MAX_CHUNKS];
        for (; i + 4 <= n_q; i += 4) {
            /* the keys all four rows see go through the block */
            int common = n_keys[i];
            for (int r = 0; r < 4; r++) {
                common = n_keys[i + r] < common ? n_keys[i + r] : common;
                float *qr = qb + 8 * nc * r;
                for (int c = 0; c < nc - 1; c++) _mm256_storeu_ps(qr + 8 * c, _mm256_loadu_ps(q[i + r] + 8 * c));
                _mm256_storeu_ps(qr + 8 * (nc - 1), _mm256_maskload_ps(q[i + r] + 8 * (nc - 1), tail));
            }
            if (hd % 8 == 0) scores_block4(out + i, qb, common, keys, k_stride, nc, tail, true, scale);
            else scores_block4(out + i, qb, common, keys, k_stride, nc, tail, false, scale);
            for (int r = 0; r < 4; r++)
                if (n_keys[i + r] > common)
                    kern_attn_scores_avx2(out[i + r] + common, q[i + r], keys + (size_t)common * k_stride, k_stride,
                                          n_keys[i + r] - common, hd, scale);
        }
    }
    for (; i < n_q; i++) kern_attn_scores_avx2(out[i], q[i], keys, k_stride, n_keys[i], hd, scale);
}

/*
 * The weighted sums of 4 rows over one strip of up to 16 dims [d0, d0 + w):
 * 8 accumulators (4 rows x 2 chunks) in registers across all keys, each value
 * chunk loaded once for the four rows; keys every row has first, then each
 * row's own causal tail. Sums run in key order, one FMA per key.
 */
static inline __attribute__((always_inline)) void wsum_strip4(float *const *out, const float *const *p,
                                                              const int *n_keys, int common, const float *vals,
                                                              size_t v_stride, int d0, int w, bool full) {
    __m256i m0 = lane_mask(w < 8 ? w : 8), m1 = lane_mask(w > 8 ? w - 8 : 8);
    const bool two = w > 8, full0 = full || w >= 8;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    const float *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3];
    const float *v = vals + d0;
    for (int k = 0; k < common; k++, v += v_stride) {
        __m256 x0 = load_chunk(v, m0, full0), x1 = two ? load_chunk(v + 8, m1, full) : x0;
        __m256 b = _mm256_broadcast_ss(p0 + k);
        a0 = _mm256_fmadd_ps(b, x0, a0);
        if (two) a1 = _mm256_fmadd_ps(b, x1, a1);
        b = _mm256_broadcast_ss(p1 + k);
        a2 = _mm256_fmadd_ps(b, x0, a2);
        if (two) a3 = _mm256_fmadd_ps(b, x1, a3);
        b = _mm256_broadcast_ss(p2 + k);
        a4 = _mm256_fmadd_ps(b, x0, a4);
        if (two) a5 = _mm256_fmadd_ps(b, x1, a5);
        b = _mm256_broadcast_ss(p3 + k);
        a6 = _mm256_fmadd_ps(b, x0, a6);
        if (two) a7 = _mm256_fmadd_ps(b, x1, a7);
    }
    __m256 acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
    for (int r = 0; r < 4; r++) {
        for (int k = common; k < n_keys[r]; k++) {
            const float *vk = vals + (size_t)k * v_stride + d0;
            __m256 b = _mm256_broadcast_ss(p[r] + k);
            acc[2 * r] = _mm256_fmadd_ps(b, load_chunk(vk, m0, full0), acc[2 * r]);
            if (two) acc[2 * r + 1] = _mm256_fmadd_ps(b, load_chunk(vk + 8, m1, full), acc[2 * r + 1]);
        }
        if (full0) _mm256_storeu_ps(out[r] + d0, acc[2 * r]);
        else _mm256_maskstore_ps(out[r] + d0, m0, acc[2 * r]);
        if (two && full) _mm256_storeu_ps(out[r] + d0 + 8, acc[2 * r + 1]);
        else if (two) _mm256_maskstore_ps(out[r] + d0 + 8, m1, acc[2 * r + 1]);
    }
}

/* kern.h's attn_wsum_multi: blocks of 4 rows in strips of 16 dims (the
 * last strip masked); leftover rows through kern_attn_wsum_avx2. */
static void attn_wsum_multi_avx2(float *const *out, const float *const *p, const int *n_keys, int n_q,
                                 const float *vals, size_t v_stride, int hd) {
    int i = 0;
    for (; i + 4 <= n_q; i += 4) {
        int common = n_keys[i];
        for (int r = 1; r < 4; r++) common = n_keys[i + r] < common ? n_keys[i + r] : common;
        int d0 = 0;
        for (; d0 + 16 <= hd; d0 += 16)
            wsum_strip4(out + i, p + i, n_keys + i, common, vals, v_stride, d0, 16, true);
        if (d0 < hd) wsum_strip4(out + i, p + i, n_keys + i, common, vals, v_stride, d0, hd - d0, false);
    }
    for (; i < n_q; i++) kern_attn_wsum_avx2(out[i], p[i], vals, v_stride, n_keys[i], hd);
}

/* the block formats (kern_quant_simd.h), compiled with this file's flags */
#define KQ_INCLUDED_FROM_TABLE
#define KQ(name) name##_avx2
#include "kern_quant_simd.h"

static float vec_dot_q8_0_avx2(const void *w, const void *x, int n) {
    return dot_q8_0_avx2(w, x, n);
}

/* exp(x) for x <= 88, within 2 ulp: x = n ln2 + r with |r| <= ln2/2 (ln2 in
 * two parts so r is exact), a degree-6 polynomial for e^r, and 2^n put into
 * the exponent. Below -87.3 (results under FLT_MIN) it gives 0, so masked
 * -INFINITY entries come out as exact zeros, as in the scalar reference. */
static inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3365478515625f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.0f));
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}

void kern_softmax_avx2(float *x, int n) { kern_softmax_mi_avx2(x, n, NULL); }

void kern_softmax_mi_avx2(float *x, int n, float *mi) {
    if (n <= 0) return;
    int body = n & ~7, rem = n - body;
    __m256i tail = lane_mask(rem ? rem : 8);
    __m256 ninf = _mm256_set1_ps(-INFINITY), vm = ninf;
    for (int i = 0; i < body; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
    if (rem)
        vm = _mm256_max_ps(vm, _mm256_blendv_ps(ninf, _mm256_maskload_ps(x + body, tail), _mm256_castsi256_ps(tail)));
    float max = hmax8(vm);
    if (max == -INFINITY) { /* everything masked: no probability anywhere */
        for (int i = 0; i < n; i++) x[i] = 0.0f;
        if (mi) mi[0] = -INFINITY, mi[1] = 0.0f;
        return;
    }
    __m256 vmax = _mm256_set1_ps(max), vs = _mm256_setzero_ps();
    for (int i = 0; i < body; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmax));
        _mm256_storeu_ps(x + i, e);
        vs = _mm256_add_ps(vs, e);
    }
    if (rem) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_maskload_ps(x + body, tail), vmax));
        e = _mm256_and_ps(e, _mm256_castsi256_ps(tail));
        _mm256_maskstore_ps(x + body, tail, e);
        vs = _mm256_add_ps(vs, e);
    }
    /* sum >= 1 (the max contributes exp(0)), so the reciprocal is finite */
    float invs = 1.0f / hsum8(vs);
    __m256 inv = _mm256_set1_ps(invs);
    for (int i = 0; i < body; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
    if (rem) _mm256_maskstore_ps(x + body, tail, _mm256_mul_ps(_mm256_maskload_ps(x + body, tail), inv));
    if (mi) mi[0] = max, mi[1] = invs;
}

/* Lane i: softmax_mi's steps for entry i of a row with statistics (mx[i],
 * inv[i]): the same exp8 of the same difference, times the same factor. */
static inline __m256 apply8(__m256 x, __m256 m, __m256 inv) {
    __m256 p = _mm256_mul_ps(exp8(_mm256_sub_ps(x, m)), inv);
    return _mm256_andnot_ps(_mm256_cmp_ps(m, _mm256_set1_ps(-INFINITY), _CMP_EQ_OQ), p);
}

void kern_softmax_apply_avx2(float *x, int n, const float *mx, const float *inv) {
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, apply8(_mm256_loadu_ps(x + i), _mm256_loadu_ps(mx + i), _mm256_loadu_ps(inv + i)));
    if (i < n) {
        __m256i tail = lane_mask(n - i);
        __m256 m = _mm256_blendv_ps(_mm256_setzero_ps(), _mm256_maskload_ps(mx + i, tail), _mm256_castsi256_ps(tail));
        _mm256_maskstore_ps(x + i, tail, apply8(_mm256_maskload_ps(x + i, tail), m, _mm256_maskload_ps(inv + i, tail)));
    }
}

void kern_softmax_apply_row_avx2(float *x, int n, float mx, float inv) {
    const __m256 m = _mm256_set1_ps(mx), v = _mm256_set1_ps(inv);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, apply8(_mm256_loadu_ps(x + i), m, v));
    if (i < n) {
        __m256i tail = lane_mask(n - i);
        _mm256_maskstore_ps(x + i, tail, apply8(_mm256_maskload_ps(x + i, tail), m, v));
    }
}

/* NaN as -inf, +inf as FLT_MAX (the sampler's reading of a logit) */
static inline __m256 clean8(__m256 v) {
    __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    v = _mm256_min_ps(v, _mm256_set1_ps(FLT_MAX)); /* min(NaN, c) = c: replaced below */
    return _mm256_blendv_ps(v, _mm256_set1_ps(-INFINITY), nan);
}

/* kern_exp_sums: 8 float lanes, each lane's sums in double (two 4-lane halves) */
/* gate / (1 + exp(-gate)) * up, 8 lanes at a time, the tail masked. Beyond
 * -88 the exp is clamped at exp(88), so silu gives gate * 6e-39 (the
 * reference's expf overflows to inf there and gives -0: both are nothing
 * next to the other activations); NaN stays NaN, +inf stays +inf. */
void kern_swiglu_avx2(float *gate, const float *up, int n) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    int body = n & ~7, rem = n - body;
    for (int i = 0; i < body; i += 8) {
        __m256 g = _mm256_loadu_ps(gate + i);
        __m256 s = _mm256_div_ps(g, _mm256_add_ps(one, exp8(_mm256_sub_ps(zero, g))));
        _mm256_storeu_ps(gate + i, _mm256_mul_ps(s, _mm256_loadu_ps(up + i)));
    }
    if (rem) {
        __m256i tail = lane_mask(rem);
        __m256 g = _mm256_maskload_ps(gate + body, tail);
        __m256 s = _mm256_div_ps(g, _mm256_add_ps(one, exp8(_mm256_sub_ps(zero, g))));
        _mm256_maskstore_ps(gate + body, tail, _mm256_mul_ps(s, _mm256_maskload_ps(up + body, tail)));
    }
}

float kern_exp_sums_avx2(const float *x, int n, float *e, double *z, double *zx) {
    int body = n > 0 ? n & ~7 : 0, rem = n > 0 ? n - body : 0;
    __m256i tail = lane_mask(rem ? rem : 8);
    __m256 ninf = _mm256_set1_ps(-INFINITY), vm = ninf;
    for (int i = 0; i < body; i += 8) vm = _mm256_max_ps(vm, clean8(_mm256_loadu_ps(x + i)));
    if (rem) vm = _mm256_max_ps(vm, _mm256_blendv_ps(ninf, clean8(_mm256_maskload_ps(x + body, tail)), _mm256_castsi256_ps(tail)));
    float max = hmax8(vm);
    if (max == -INFINITY) {
        if (e)
            for (int i = 0; i < n; i++) e[i] = 0.0f;
        *z = *zx = 0.0;
        return max;
    }
    __m256 vmax = _mm256_set1_ps(max), zero = _mm256_setzero_ps();
    __m256d z0 = _mm256_setzero_pd(), z1 = z0, x0 = z0, x1 = z0;
    for (int i = 0; i < n; i += 8) {
        bool last = i == body;
        __m256 v = last ? _mm256_blendv_ps(ninf, clean8(_mm256_maskload_ps(x + i, tail)), _mm256_castsi256_ps(tail))
                        : clean8(_mm256_loadu_ps(x + i));
        __m256 d = _mm256_sub_ps(v, vmax);
        __m256 ev = exp8(d);
        if (e) {
            if (last) _mm256_maskstore_ps(e + i, tail, ev);
            else _mm256_storeu_ps(e + i, ev);
        }
        /* e * d, 0 where e is 0 (there d may be -inf) */
        __m256 ed = _mm256_mul_ps(ev, _mm256_blendv_ps(d, zero, _mm256_cmp_ps(ev, zero, _CMP_EQ_OQ)));
        z0 = _mm256_add_pd(z0, _mm256_cvtps_pd(_mm256_castps256_ps128(ev)));
        z1 = _mm256_add_pd(z1, _mm256_cvtps_pd(_mm256_extractf128_ps(ev, 1)));
        x0 = _mm256_add_pd(x0, _mm256_cvtps_pd(_mm256_castps256_ps128(ed)));
        x1 = _mm256_add_pd(x1, _mm256_cvtps_pd(_mm256_extractf128_ps(ed, 1)));
        if (last) break;
    }
    double lz[4], lx[4];
    _mm256_storeu_pd(lz, _mm256_add_pd(z0, z1));
    _mm256_storeu_pd(lx, _mm256_add_pd(x0, x1));
    *z = (lz[0] + lz[1]) + (lz[2] + lz[3]);
    *zx = (lx[0] + lx[1]) + (lx[2] + lx[3]);
    return max;
}

/* Four rows at a time: each 8-wide slice of a row of g is loaded and
 * stored once per four multiply-adds; hd not a multiple of 8 ends scalar. */
void kern_gram_add_avx2(float *g, const float *x, size_t stride, int n, int hd) {
    int r = 0;
    for (; r + 4 <= n; r += 4) {
        const float *x0 = x + (size_t)r * stride, *x1 = x0 + stride, *x2 = x1 + stride, *x3 = x2 + stride;
        for (int a = 0; a < hd; a++) {
            float *ga = g + (size_t)a * hd;
            __m256 b0 = _mm256_set1_ps(x0[a]), b1 = _mm256_set1_ps(x1[a]), b2 = _mm256_set1_ps(x2[a]),
                   b3 = _mm256_set1_ps(x3[a]);
            int c = 0;
            for (; c + 8 <= hd; c += 8) {
                __m256 acc = _mm256_loadu_ps(ga + c);
                acc = _mm256_fmadd_ps(b0, _mm256_loadu_ps(x0 + c), acc);
                acc = _mm256_fmadd_ps(b1, _mm256_loadu_ps(x1 + c), acc);
                acc = _mm256_fmadd_ps(b2, _mm256_loadu_ps(x2 + c), acc);
                acc = _mm256_fmadd_ps(b3, _mm256_loadu_ps(x3 + c), acc);
                _mm256_storeu_ps(ga + c, acc);
            }
            for (; c < hd; c++) ga[c] += x0[a] * x0[c] + x1[a] * x1[c] + x2[a] * x2[c] + x3[a] * x3[c];
        }
    }
    for (; r < n; r++) {
        const float *xr = x + (size_t)r * stride;
        for (int a = 0; a < hd; a++) {
            float *ga = g + (size_t)a * hd;
            __m256 b = _mm256_set1_ps(xr[a]);
            int c = 0;
            for (; c + 8 <= hd; c += 8)
                _mm256_storeu_ps(ga + c, _mm256_fmadd_ps(b, _mm256_loadu_ps(xr + c), _mm256_loadu_ps(ga + c)));
            for (; c < hd; c++) ga[c] += xr[a] * xr[c];
        }
    }
}

/* v^T G v: each row of G times v elementwise, scaled by v[a], into 8-wide
 * accumulators; hd not a multiple of 8 ends scalar. */
float kern_quad_form_avx2(const float *g, const float *v, int hd) {
    __m256 acc = _mm256_setzero_ps();
    float tail = 0;
    for (int a = 0; a < hd; a++) {
        const float *ga = g + (size_t)a * hd;
        __m256 va = _mm256_set1_ps(v[a]);
        int c = 0;
        for (; c + 8 <= hd; c += 8)
            acc = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_loadu_ps(ga + c), _mm256_loadu_ps(v + c)), va, acc);
        for (; c < hd; c++) tail += ga[c] * v[c] * v[a];
    }
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h) + tail;
}

const kern_ops kern_ops_avx2_table = {
    .name = "avx2",
    .dot_f32 = dot_f32_avx2,
    .dot_f16 = dot_f16_avx2,
    .dot_bf16 = dot_bf16_avx2,
    .dot_q8_0 = dot_q8_0_avx2,
    .axpy = axpy_avx2,
    .scale = scale_avx2,
    .gram_add = kern_gram_add_avx2,
    .quad_form = kern_quad_form_avx2,
    .attn_scores = kern_attn_scores_avx2,
    .attn_wsum = kern_attn_wsum_avx2,
    .attn_scores_multi = attn_scores_multi_avx2,
    .attn_wsum_multi = attn_wsum_multi_avx2,
    .softmax = kern_softmax_avx2,
    .softmax_mi = kern_softmax_mi_avx2,
    .softmax_apply = kern_softmax_apply_avx2,
    .softmax_apply_row = kern_softmax_apply_row_avx2,
    .exp_sums = kern_exp_sums_avx2,
    .swiglu = kern_swiglu_avx2,
    .vec_dot = {[GGML_Q4_0] = dot_q4_0_avx2, [GGML_Q4_1] = dot_q4_1_avx2, [GGML_Q5_0] = dot_q5_0_avx2,
                [GGML_Q5_1] = dot_q5_1_avx2, [GGML_Q8_0] = vec_dot_q8_0_avx2, [GGML_Q4_K] = dot_q4_K_avx2,
                [GGML_Q5_K] = dot_q5_K_avx2, [GGML_Q6_K] = dot_q6_K_avx2,
                [GGML_Q2_K] = dot_q2_K_avx2, [GGML_Q3_K] = dot_q3_K_avx2, [GGML_IQ4_NL] = dot_iq4_nl_avx2,
                [GGML_IQ4_XS] = dot_iq4_xs_avx2},
    .quantize_q8_0 = quantize_q8_0_avx2,
    .tile4 = {[GGML_F16] = tile4_f16_avx2, [GGML_Q4_0] = tile4_q4_0_avx2, [GGML_Q4_1] = tile4_q4_1_avx2,
              [GGML_Q5_0] = tile4_q5_0_avx2, [GGML_Q5_1] = tile4_q5_1_avx2, [GGML_Q8_0] = tile4_q8_0_avx2,
              [GGML_Q4_K] = tile4_q4_K_avx2, [GGML_Q5_K] = tile4_q5_K_avx2, [GGML_Q6_K] = tile4_q6_K_avx2,
              [GGML_Q2_K] = tile4_q2_K_avx2, [GGML_Q3_K] = tile4_q3_K_avx2, [GGML_IQ4_NL] = tile4_iq4_nl_avx2,
              [GGML_IQ4_XS] = tile4_iq4_xs_avx2},
};

#else
/* Not x86-64: kern_ops_avx2() returns NULL; ISO C wants a non-empty file. */
typedef int kern_avx2_unused;
#endif
