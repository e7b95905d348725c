/*
 * kern_avx512.c - the AVX-512 (F/BW/VL/DQ + VNNI) kernel table.
 *
 * Built with the AVX-512 target flags and only reached through
 * kern_ops_avx512(), which checks the CPU first. Results equal the scalar
 * reference up to summation order (the Q8_0 integer block sums are exact).
 *
 * Compared with AVX2: 16 lanes, and masked loads/stores, so the tail of any
 * n is one masked step instead of a scalar loop; short attention vectors
 * (n < 16) cost a single masked FMA. bf16 weights are widened to f32 and
 * multiplied with FMA on purpose: VDPBF16PS would also round x to bf16 and
 * change the numbers.
 */
#include "ggml_types.h"
#include "kern.h"

#if defined(__x86_64__)

#include <immintrin.h>
#include <stdbool.h>

/* lanes [0, r) set, r in 0..16 */
static inline __mmask16 tail_mask(int r) {
    return (__mmask16)((1u << r) - 1);
}

static inline __m512 load_f16x16(const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

static inline __m512 load_f16x16_mask(__mmask16 m, const uint16_t *p) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

/* bf16 is the top half of an f32: widen to 32 bits and shift up (exact) */
static inline __m512 widen_bf16(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

static float dot_f32_avx512(const float *a, const float *b, int n) {
    /* four independent accumulators hide the FMA latency */
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
        s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
        s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), s2);
        s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16)
        s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static float dot_f16_avx512(const uint16_t *w, const float *x, int n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(load_f16x16(w + i), _mm512_loadu_ps(x + i), s0);
        s1 = _mm512_fmadd_ps(load_f16x16(w + i + 16), _mm512_loadu_ps(x + i + 16), s1);
        s2 = _mm512_fmadd_ps(load_f16x16(w + i + 32), _mm512_loadu_ps(x + i + 32), s2);
        s3 = _mm512_fmadd_ps(load_f16x16(w + i + 48), _mm512_loadu_ps(x + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16)
        s0 = _mm512_fmadd_ps(load_f16x16(w + i), _mm512_loadu_ps(x + i), s0);
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        s1 = _mm512_fmadd_ps(load_f16x16_mask(m, w + i), _mm512_maskz_loadu_ps(m, x + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static float dot_bf16_avx512(const uint16_t *w, const float *x, int n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    __m512 s2 = _mm512_setzero_ps(), s3 = _mm512_setzero_ps();
#define LD(p) widen_bf16(_mm256_loadu_si256((const __m256i *)(p)))
    int i = 0;
    for (; i + 64 <= n; i += 64) {
        s0 = _mm512_fmadd_ps(LD(w + i), _mm512_loadu_ps(x + i), s0);
        s1 = _mm512_fmadd_ps(LD(w + i + 16), _mm512_loadu_ps(x + i + 16), s1);
        s2 = _mm512_fmadd_ps(LD(w + i + 32), _mm512_loadu_ps(x + i + 32), s2);
        s3 = _mm512_fmadd_ps(LD(w + i + 48), _mm512_loadu_ps(x + i + 48), s3);
    }
    for (; i + 16 <= n; i += 16) s0 = _mm512_fmadd_ps(LD(w + i), _mm512_loadu_ps(x + i), s0);
#undef LD
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        __m512 wv = widen_bf16(_mm256_maskz_loadu_epi16(m, w + i));
        s1 = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m, x + i), s1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

/*
 * Q8_0 with VNNI: VPDPBUSD sums groups of four u8*s8 products straight into
 * int32 lanes, so one instruction replaces AVX2's maddubs + madd and nothing
 * can saturate. It multiplies unsigned by signed bytes, so the sign of w
 * moves onto x (|w| * x*sign(w) = w*x), exact while |x| <= 127 as kern.h
 * requires. Blocks are 34 bytes, so one block per 256-bit register; packing
 * two blocks into a 512-bit one measured ~20% slower (the inserts and the
 * per-lane scale blend cost more than the wider multiply saves).
 */
static inline __m256i block_dot_q8(const block_q8_0 *w, const block_q8_0 *x) {
    __m256i qw = _mm256_loadu_si256((const __m256i *)w->qs);
    __m256i qx = _mm256_loadu_si256((const __m256i *)x->qs);
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(qw, qw),
                               _mm256_sign_epi8(qx, qw));
}

/* d_w * d_x * (8 int32 lane sums), accumulated */
static inline __m256 block_fma(const block_q8_0 *w, const block_q8_0 *x, __m256 acc) {
    __m256 d = _mm256_set1_ps(_cvtsh_ss(w->d) * _cvtsh_ss(x->d));
    return _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(block_dot_q8(w, x)), acc);
}

static float dot_q8_0_avx512(const block_q8_0 *w, const block_q8_0 *x, int n) {
    int nb = n / QK8_0, b = 0;
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    for (; b + 4 <= nb; b += 4) {
        s0 = block_fma(w + b, x + b, s0);
        s1 = block_fma(w + b + 1, x + b + 1, s1);
        s2 = block_fma(w + b + 2, x + b + 2, s2);
        s3 = block_fma(w + b + 3, x + b + 3, s3);
    }
    for (; b < nb; b++) s0 = block_fma(w + b, x + b, s0);
    __m256 v = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    h = _mm_add_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

static void axpy_avx512(float *y, float a, const float *x, int n) {
    __m512 va = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 32 <= n; i += 32) {
        __m512 y0 = _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i));
        __m512 y1 = _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(y + i + 16));
        _mm512_storeu_ps(y + i, y0);
        _mm512_storeu_ps(y + i + 16, y1);
    }
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(y + i,
                         _mm512_fmadd_ps(va, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        __m512 r =
            _mm512_fmadd_ps(va, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i));
        _mm512_mask_storeu_ps(y + i, m, r);
    }
}

static void scale_avx512(float *y, float a, int n) {
    __m512 va = _mm512_set1_ps(a);
    int i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_mul_ps(va, _mm512_loadu_ps(y + i)));
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(va, _mm512_maskz_loadu_ps(m, y + i)));
    }
}


/* the block formats (kern_quant_simd.h), compiled with this file's flags */
#define KQ_INCLUDED_FROM_TABLE
#define KQ_VNNI
#define KQ(name) name##_avx512
#include "kern_quant_simd.h"

/*
 * Q8_0 prefill tile in 512-bit registers: two blocks per register with their
 * 32-bit groups interleaved (even lanes block b, odd lanes block b + 1), so
 * one VPDPBUSD covers both blocks while each lane keeps to one block, and the
 * scale products of the two blocks (d_w * d_x) are one 64-bit broadcast from
 * memory. VPDPBUSD multiplies unsigned by signed bytes: the weights are made
 * unsigned (w ^ 0x80 = w + 128), so each lane sums w.x + 128 * sum(x), and
 * the sum starts at -128 * sum(x) per lane. That correction depends on the
 * activations only: it is made once per call with the activations' repacking
 * (4 tokens, a chunk of K at a time), not once per weight row, and each
 * (row, token) pair costs one VPDPBUSD, one conversion and one FMA. A
 * chunk's partial sums are added to out. Zen 4 runs 512-bit operations in
 * two halves, but issues them as one: the gain is in instructions.
 */
#define Q8Z_CHUNK 64 /* blocks of K repacked per chunk: 4 tokens x 8 KB, and their corrections */

/* the qs of blocks b0 and b1 (b1 NULL: zeros) interleaved by 32-bit groups */
static inline __m512i q8z_pair(const block_q8_0 *b0, const block_q8_0 *b1) {
    const __m512i idx = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    __m512i lo = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)b0->qs));
    __m512i hi = b1 ? _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)b1->qs)) : _mm512_setzero_si512();
    return _mm512_permutex2var_epi32(lo, idx, hi);
}

/* A chunk of 4 tokens' activations, repacked: xq[t * np + p] block pair p of
 * token t, xc the same pair's -128 * sum(x) per lane, xs[8 * p + 2 * t + i]
 * the scale of block 2p + i of token t. */
typedef struct q8z_chunk {
    __m512i xq[4 * Q8Z_CHUNK / 2], xc[4 * Q8Z_CHUNK / 2];
    float xs[Q8Z_CHUNK / 2 * 8];
    int np;
} q8z_chunk;

/* 4 rows x 4 tokens over the block pairs of a chunk starting at block b0
 * with nb blocks */
static void q8z_rows4(float *out, size_t out_stride, const char *wc, size_t row_bytes, int b0, int nb,
                      const q8z_chunk *ch, bool first) {
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    const int np = ch->np;
    __m512 acc[4][4];
    KQ_UNROLL for (int r = 0; r < 4; r++) KQ_UNROLL for (int t = 0; t < 4; t++) acc[r][t] = _mm512_setzero_ps();
    for (int p = 0; p < np; p++) {
        int b = b0 + 2 * p;
        bool two = 2 * p + 1 < nb;
        _Alignas(32) float sc[4][8];
        __m512i wv[4];
        KQ_UNROLL for (int r = 0; r < 4; r++) {
            const block_q8_0 *w0 = (const block_q8_0 *)(wc + row_bytes * r) + b;
            wv[r] = _mm512_xor_si512(q8z_pair(w0, two ? w0 + 1 : NULL), bias);
            uint32_t dd = (uint32_t)w0->d | (two ? (uint32_t)w0[1].d << 16 : 0u);
            __m128 wd = _mm_cvtph_ps(_mm_cvtsi32_si128((int)dd));
            __m256 wdp = _mm256_castpd_ps(_mm256_broadcastsd_pd(_mm_castps_pd(wd)));
            _mm256_store_ps(sc[r], _mm256_mul_ps(wdp, _mm256_loadu_ps(ch->xs + 8 * p)));
        }
        KQ_UNROLL for (int r = 0; r < 4; r++) KQ_UNROLL for (int t = 0; t < 4; t++) {
            __m512i d = _mm512_dpbusd_epi32(ch->xc[t * np + p], wv[r], ch->xq[t * np + p]);
            __m512 s = _mm512_castpd_ps(_mm512_broadcastsd_pd(_mm_load_sd((const double *)&sc[r][2 * t])));
            acc[r][t] = _mm512_fmadd_ps(s, _mm512_cvtepi32_ps(d), acc[r][t]);
        }
    }
    KQ_UNROLL for (int r = 0; r < 4; r++) KQ_UNROLL for (int t = 0; t < 4; t++) {
        float v = _mm512_reduce_add_ps(acc[r][t]);
        float *o = out + t * out_stride + r;
        *o = first ? v : *o + v;
    }
}

/* Repacks blocks [c0, c0 + cb) of the 4 tokens' activations into ch. */
static void q8z_repack(q8z_chunk *ch, const void *x, size_t act_bytes, int c0, int cb) {
    const __m512i bias = _mm512_set1_epi8((char)0x80);
    int np = ch->np = (cb + 1) / 2;
    for (int t = 0; t < 4; t++) {
        const block_q8_0 *xb = (const block_q8_0 *)((const char *)x + act_bytes * t) + c0;
        for (int p = 0; p < np; p++) {
            bool two = 2 * p + 1 < cb;
            __m512i v = q8z_pair(xb + 2 * p, two ? xb + 2 * p + 1 : NULL);
            ch->xq[t * np + p] = v;
            ch->xc[t * np + p] =
                _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), bias, v));
            ch->xs[8 * p + 2 * t] = _cvtsh_ss(xb[2 * p].d);
            ch->xs[8 * p + 2 * t + 1] = two ? _cvtsh_ss(xb[2 * p + 1].d) : 0.0f;
        }
    }
}

static void tile4_q8_0_zmm(float *out, size_t out_stride, const void *w, size_t row_bytes, int n_rows,
                           const void *x, size_t act_bytes, int n) {
    const char *wc = w;
    int nb = n / QK8_0, r4 = n_rows & ~3;
    _Alignas(64) q8z_chunk ch;
    for (int c0 = 0; c0 < nb && r4 > 0; c0 += Q8Z_CHUNK) {
        int cb = nb - c0 < Q8Z_CHUNK ? nb - c0 : Q8Z_CHUNK;
        q8z_repack(&ch, x, act_bytes, c0, cb);
        for (int r = 0; r < r4; r += 4)
            q8z_rows4(out + r, out_stride, wc + row_bytes * r, row_bytes, c0, cb, &ch, c0 == 0);
    }
    for (int r = r4; r < n_rows; r++) q8_0_row1_avx512(out + r, out_stride, wc + row_bytes * r, x, act_bytes, n);
}

/* Low + high 128 bits of each half of a pair accumulator, for two of them:
 * [a lo, a hi, b lo, b hi] halves -> four 4-lane partial sums. */
static inline __m512 halves_fold(__m512 a, __m512 b) {
    return _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x88), _mm512_shuffle_f32x4(a, b, 0xDD));
}

/*
 * Sixteen attention dots reduced at once. Input: aK = [q0.key_K | q1.key_K]
 * and bK = [q2.key_K | q3.key_K], each half an 8-lane dot accumulator;
 * output: 128-bit lane j = [qj.key_0, qj.key_1, qj.key_2, qj.key_3]. The adds
 * are hsum8's of kern_avx2.c, pair for pair and in the same operand order
 * (low + high 128 bits, then lanes 0+2 and 1+3, then those two), so every
 * result equals kern_attn_scores_avx2's bit for bit.
 */
static inline __m512 hsum8x16(__m512 a0, __m512 a1, __m512 a2, __m512 a3, __m512 b0, __m512 b1, __m512 b2,
                              __m512 b3) {
    __m512 t0 = halves_fold(a0, b0), t1 = halves_fold(a1, b1), t2 = halves_fold(a2, b2), t3 = halves_fold(a3, b3);
    __m512 u0 = _mm512_add_ps(_mm512_shuffle_ps(t0, t1, 0x44), _mm512_shuffle_ps(t0, t1, 0xEE));
    __m512 u1 = _mm512_add_ps(_mm512_shuffle_ps(t2, t3, 0x44), _mm512_shuffle_ps(t2, t3, 0xEE));
    return _mm512_add_ps(_mm512_shuffle_ps(u0, u1, 0x88), _mm512_shuffle_ps(u0, u1, 0xDD));
}

/* An 8-float key chunk in both halves of a 512-bit register (masked for a short tail). */
static inline __m512 key_chunk2(const float *p, __mmask8 mask, bool full) {
    return _mm512_broadcast_f32x8(full ? _mm256_loadu_ps(p) : _mm256_maskz_loadu_ps(mask, p));
}

/*
 * Scores of 4 queries against keys [0, n_keys) rounded down to a multiple
 * of 4, four keys at a time. The queries sit in pairs, pq[c] = [q0 chunk c |
 * q1 chunk c] and [q2 | q3] after them (zero past hd), so one FMA advances
 * two 8-lane dots and each key chunk is loaded once for the four queries.
 * Every dot is the one kern_attn_scores_avx2 computes: the tail chunk's
 * product first, then one FMA per chunk in order, hsum8, times scale.
 * Returns the keys done.
 */
static inline __attribute__((always_inline)) int scores_block4_zmm(float *const *out, const float *pq, int n_keys,
                                                                   const float *keys, size_t k_stride, int nc,
                                                                   __mmask8 tail, bool full, float scale) {
    const float *p01 = pq, *p23 = pq + 16 * nc;
    const int t = 8 * (nc - 1);
    const __m512 vscale = _mm512_set1_ps(scale);
    float *o0 = out[0], *o1 = out[1], *o2 = out[2], *o3 = out[3];
    int k = 0;
    for (; k + 4 <= n_keys; k += 4) {
        const float *ka = keys + (size_t)k * k_stride, *kb = ka + k_stride, *kc = kb + k_stride, *kd = kc + k_stride;
        __m512 xa = key_chunk2(ka + t, tail, full), xb = key_chunk2(kb + t, tail, full);
        __m512 xc = key_chunk2(kc + t, tail, full), xd = key_chunk2(kd + t, tail, full);
        __m512 v = _mm512_loadu_ps(p01 + 2 * t);
        __m512 a0 = _mm512_mul_ps(v, xa), a1 = _mm512_mul_ps(v, xb);
        __m512 a2 = _mm512_mul_ps(v, xc), a3 = _mm512_mul_ps(v, xd);
        v = _mm512_loadu_ps(p23 + 2 * t);
        __m512 b0 = _mm512_mul_ps(v, xa), b1 = _mm512_mul_ps(v, xb);
        __m512 b2 = _mm512_mul_ps(v, xc), b3 = _mm512_mul_ps(v, xd);
        for (int c = 0; c < t; c += 8) {
            xa = key_chunk2(ka + c, 0xff, true);
            xb = key_chunk2(kb + c, 0xff, true);
            xc = key_chunk2(kc + c, 0xff, true);
            xd = key_chunk2(kd + c, 0xff, true);
            v = _mm512_loadu_ps(p01 + 2 * c);
            a0 = _mm512_fmadd_ps(v, xa, a0);
            a1 = _mm512_fmadd_ps(v, xb, a1);
            a2 = _mm512_fmadd_ps(v, xc, a2);
            a3 = _mm512_fmadd_ps(v, xd, a3);
            v = _mm512_loadu_ps(p23 + 2 * c);
            b0 = _mm512_fmadd_ps(v, xa, b0);
            b1 = _mm512_fmadd_ps(v, xb, b1);
            b2 = _mm512_fmadd_ps(v, xc, b2);
            b3 = _mm512_fmadd_ps(v, xd, b3);
        }
        __m512 r = _mm512_mul_ps(hsum8x16(a0, a1, a2, a3, b0, b1, b2, b3), vscale);
        _mm_storeu_ps(o0 + k, _mm512_castps512_ps128(r));
        _mm_storeu_ps(o1 + k, _mm512_extractf32x4_ps(r, 1));
        _mm_storeu_ps(o2 + k, _mm512_extractf32x4_ps(r, 2));
        _mm_storeu_ps(o3 + k, _mm512_extractf32x4_ps(r, 3));
    }
    return k;
}

/* kern_avx2.c's attn_scores_multi with the 512-bit block above (two dots per
 * instruction, four keys per step): bit for bit kern_attn_scores_avx2's
 * scores, which this table's attn_scores is. */
static void attn_scores_multi_avx512(float *const *out, const float *const *q, const int *n_keys, int n_q,
                                     const float *keys, size_t k_stride, int hd, float scale) {
    enum { MAX_CHUNKS = 32 }; /* as kern_attn_scores_avx2: beyond, it is a plain dot per key */
    int nc = (hd + 7) / 8, i = 0;
    if (nc <= MAX_CHUNKS) {
        __mmask8 tail = (__mmask8)((1u << (hd - 8 * (nc - 1))) - 1);
        float pq[2 * 16 * MAX_CHUNKS];
        for (; i + 4 <= n_q; i += 4) {
            int common = n_keys[i];
            for (int r = 0; r < 4; r++) {
                common = n_keys[i + r] < common ? n_keys[i + r] : common;
                /* query r into half r % 2 of pair r / 2, zero past hd */
                float *dst = pq + 16 * nc * (r / 2) + 8 * (r % 2);
                for (int c = 0; c < nc; c++)
                    _mm256_storeu_ps(dst + 16 * c, _mm256_maskz_loadu_ps(c < nc - 1 ? 0xff : tail, q[i + r] + 8 * c));
            }
            /* a constant chunk count for the common head sizes lets the compiler unroll */
            int done = hd == 64    ? scores_block4_zmm(out + i, pq, common, keys, k_stride, 8, tail, true, scale)
                       : hd == 128 ? scores_block4_zmm(out + i, pq, common, keys, k_stride, 16, tail, true, scale)
                       : hd % 8 == 0 ? scores_block4_zmm(out + i, pq, common, keys, k_stride, nc, tail, true, scale)
                                     : scores_block4_zmm(out + i, pq, common, keys, k_stride, nc, tail, false, scale);
            /* the last few common keys and each row's causal tail, one query at a time */
            for (int r = 0; r < 4; r++)
                if (n_keys[i + r] > done)
                    kern_attn_scores_avx2(out[i + r] + done, q[i + r], keys + (size_t)done * k_stride, k_stride,
                                          n_keys[i + r] - done, hd, scale);
        }
    }
    for (; i < n_q; i++) kern_attn_scores_avx2(out[i], q[i], keys, k_stride, n_keys[i], hd, scale);
}

/*
 * The weighted sums of 4 rows over one strip of up to 32 dims [d0, d0 + w):
 * as the AVX2 strip, with 16-lane chunks (half the instructions per key:
 * about 20% faster on Zen 4, whose 512-bit FMAs are double-pumped) and
 * masked tails. 8 accumulators (4
 * rows x 2 chunks) stay in registers across all keys; each value chunk is
 * loaded once for the four rows; keys every row has first, then each row's
 * own causal tail. Sums run in key order, one FMA per key.
 */
static inline __attribute__((always_inline)) void wsum_strip4_zmm(float *const *out, const float *const *p,
                                                                  const int *n_keys, int common,
                                                                  const float *vals, size_t v_stride, int d0,
                                                                  int w) {
    const __mmask16 m0 = tail_mask(w < 16 ? w : 16), m1 = tail_mask(w > 16 ? w - 16 : 0);
    const bool two = w > 16;
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    const float *p0 = p[0], *p1 = p[1], *p2 = p[2], *p3 = p[3];
    const float *v = vals + d0;
    for (int k = 0; k < common; k++, v += v_stride) {
        __m512 x0 = _mm512_maskz_loadu_ps(m0, v), x1 = two ? _mm512_maskz_loadu_ps(m1, v + 16) : x0;
        __m512 b = _mm512_set1_ps(p0[k]);
        a0 = _mm512_fmadd_ps(b, x0, a0);
        if (two) a1 = _mm512_fmadd_ps(b, x1, a1);
        b = _mm512_set1_ps(p1[k]);
        a2 = _mm512_fmadd_ps(b, x0, a2);
        if (two) a3 = _mm512_fmadd_ps(b, x1, a3);
        b = _mm512_set1_ps(p2[k]);
        a4 = _mm512_fmadd_ps(b, x0, a4);
        if (two) a5 = _mm512_fmadd_ps(b, x1, a5);
        b = _mm512_set1_ps(p3[k]);
        a6 = _mm512_fmadd_ps(b, x0, a6);
        if (two) a7 = _mm512_fmadd_ps(b, x1, a7);
    }
    __m512 acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
    for (int r = 0; r < 4; r++) {
        for (int k = common; k < n_keys[r]; k++) {
            const float *vk = vals + (size_t)k * v_stride + d0;
            __m512 b = _mm512_set1_ps(p[r][k]);
            acc[2 * r] = _mm512_fmadd_ps(b, _mm512_maskz_loadu_ps(m0, vk), acc[2 * r]);
            if (two) acc[2 * r + 1] = _mm512_fmadd_ps(b, _mm512_maskz_loadu_ps(m1, vk + 16), acc[2 * r + 1]);
        }
        _mm512_mask_storeu_ps(out[r] + d0, m0, acc[2 * r]);
        if (two) _mm512_mask_storeu_ps(out[r] + d0 + 16, m1, acc[2 * r + 1]);
    }
}

/* kern.h's attn_wsum_multi: blocks of 4 rows in strips of 32 dims (the
 * last strip masked); leftover rows through kern_attn_wsum_avx2. */
static void attn_wsum_multi_avx512(float *const *out, const float *const *p, const int *n_keys, int n_q,
                                   const float *vals, size_t v_stride, int hd) {
    int i = 0;
    for (; i + 4 <= n_q; i += 4) {
        int common = n_keys[i];
        for (int r = 1; r < 4; r++) common = n_keys[i + r] < common ? n_keys[i + r] : common;
        int d0 = 0;
        for (; d0 + 32 <= hd; d0 += 32) wsum_strip4_zmm(out + i, p + i, n_keys + i, common, vals, v_stride, d0, 32);
        if (d0 < hd) wsum_strip4_zmm(out + i, p + i, n_keys + i, common, vals, v_stride, d0, hd - d0);
    }
    for (; i < n_q; i++) kern_attn_wsum_avx2(out[i], p[i], vals, v_stride, n_keys[i], hd);
}

static float vec_dot_q8_0_avx512(const void *w, const void *x, int n) {
    return dot_q8_0_avx512(w, x, n);
}

const kern_ops kern_ops_avx512_table = {
    .name = "avx512",
    .dot_f32 = dot_f32_avx512,
    .dot_f16 = dot_f16_avx512,
    .dot_bf16 = dot_bf16_avx512,
    .dot_q8_0 = dot_q8_0_avx512,
    .axpy = axpy_avx512,
    .scale = scale_avx512,
    .gram_add = kern_gram_add_avx2,
    .quad_form = kern_quad_form_avx2,
    .attn_scores = kern_attn_scores_avx2,
    .attn_wsum = kern_attn_wsum_avx2,
    .attn_scores_multi = attn_scores_multi_avx512,
    .attn_wsum_multi = attn_wsum_multi_avx512,
    .softmax = kern_softmax_avx2,
    .softmax_mi = kern_softmax_mi_avx2,
    .softmax_apply = kern_softmax_apply_avx2,
    .softmax_apply_row = kern_softmax_apply_row_avx2,
    .exp_sums = kern_exp_sums_avx2,
    .swiglu = kern_swiglu_avx2,
    .vec_dot = {[GGML_Q4_0] = dot_q4_0_avx512, [GGML_Q4_1] = dot_q4_1_avx512, [GGML_Q5_0] = dot_q5_0_avx512,
                [GGML_Q5_1] = dot_q5_1_avx512, [GGML_Q8_0] = vec_dot_q8_0_avx512, [GGML_Q4_K] = dot_q4_K_avx512,
                [GGML_Q5_K] = dot_q5_K_avx512, [GGML_Q6_K] = dot_q6_K_avx512,
                [GGML_Q2_K] = dot_q2_K_avx512, [GGML_Q3_K] = dot_q3_K_avx512, [GGML_IQ4_NL] = dot_iq4_nl_avx512,
                [GGML_IQ4_XS] = dot_iq4_xs_avx512},
    .quantize_q8_0 = quantize_q8_0_avx512,
    .tile4 = {[GGML_F16] = tile4_f16_avx512, [GGML_Q4_0] = tile4_q4_0_avx512, [GGML_Q4_1] = tile4_q4_1_avx512,
              [GGML_Q5_0] = tile4_q5_0_avx512, [GGML_Q5_1] = tile4_q5_1_avx512, [GGML_Q8_0] = tile4_q8_0_zmm,
              [GGML_Q4_K] = tile4_q4_K_avx512, [GGML_Q5_K] = tile4_q5_K_avx512, [GGML_Q6_K] = tile4_q6_K_avx512,
              [GGML_Q2_K] = tile4_q2_K_avx512, [GGML_Q3_K] = tile4_q3_K_avx512, [GGML_IQ4_NL] = tile4_iq4_nl_avx512,
              [GGML_IQ4_XS] = tile4_iq4_xs_avx512},
};

#else
/* Not x86-64: kern_ops_avx512() returns NULL; ISO C wants a non-empty file. */
typedef int kern_avx512_unused;
#endif
