/*
 * kern_quant_simd.h - the x86 SIMD dot products of the block formats,
 * written once and compiled twice: kern_avx2.c includes it with the AVX2
 * flags, kern_avx512.c with the AVX-512 + VNNI flags and KQ_VNNI defined
 * (then the unsigned x signed byte sums are single VPDPBUSD instructions).
 * A header only so that the build's header dependencies rebuild both
 * tables when it changes; it is not an interface: everything is static.
 *
 * Every function equals its scalar reference in kern_quant.c up to float
 * summation order: the integer sums of a block or sub-block are exact (no
 * int16 saturation: |q| <= 63 and |x| <= 127 keep maddubs pairs below
 * 2^15), only the scaling by d and the accumulation across blocks round.
 *
 * Including file must define KQ(name) (a suffix for the function names) and
 * provide <immintrin.h> with the right target flags.
 */
#ifndef HEED_KERN_QUANT_SIMD_H
#define HEED_KERN_QUANT_SIMD_H
#if !defined(KQ_INCLUDED_FROM_TABLE)
#error "kern_quant_simd.h is included only by kern_avx2.c and kern_avx512.c"
#endif

#include <string.h>

/* constant-trip loops the compiler must unroll (array accumulators then live in registers) */
#define KQ_UNROLL _Pragma("GCC unroll 4")

static inline float kq_hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* acc + sum of groups of 4 products u8 * s8 into int32 lanes */
static inline __m256i kq_dot_u8s8(__m256i acc, __m256i u, __m256i s) {
#if defined(KQ_VNNI)
    return _mm256_dpbusd_epi32(acc, u, s);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
#endif
}

/* 32 nibbles in Q4 order (low nibbles = elements 0..15) as bytes 0..15 */
static inline __m256i kq_nibbles32(const uint8_t *qs) {
    __m128i t = _mm_loadu_si128((const __m128i *)qs);
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x0F));
}

/* byte i = 0xFF where bit i of the 32-bit little-endian word at p is set */
static inline __m256i kq_bits32(const uint8_t *p) {
    uint32_t w;
    memcpy(&w, p, 4);
    const __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    __m256i bytes = _mm256_shuffle_epi8(_mm256_set1_epi32((int)w), shuf);
    bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    return _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1));
}

/* sum over groups of 4 of (q - off) * x, for unsigned q + off <= 31 and
 * int8 x, in int32 lanes (exact: no int16 pair passes 2 * 31 * 128) */
static inline __m256i kq_dot_off(__m256i q, __m256i x, char off) {
#if defined(KQ_VNNI)
    return _mm256_sub_epi32(_mm256_dpbusd_epi32(_mm256_setzero_si256(), q, x),
                            _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_set1_epi8(off), x));
#else
    __m256i p = _mm256_sub_epi16(_mm256_maddubs_epi16(q, x), _mm256_maddubs_epi16(_mm256_set1_epi8(off), x));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
#endif
}

/* d_w * d_x of two consecutive blocks (the f16 scales w0, w1 of the
 * weights, x0, x1 of the activations), broadcast: one conversion and one
 * product for the pair instead of two each */
static inline void kq_scale_pair(uint16_t w0, uint16_t w1, uint16_t x0, uint16_t x1, __m256 *d0, __m256 *d1) {
    __m128i h = _mm_cvtsi32_si128((int)((uint32_t)w0 | (uint32_t)w1 << 16));
    h = _mm_insert_epi32(h, (int)((uint32_t)x0 | (uint32_t)x1 << 16), 1);
    __m128 f = _mm_cvtph_ps(h); /* w0 w1 x0 x1 */
    __m128 d = _mm_mul_ps(f, _mm_movehl_ps(f, f));
    *d0 = _mm256_broadcastss_ps(d);
    *d1 = _mm256_broadcastss_ps(_mm_movehdup_ps(d));
}

/* Q4_0 and Q5_0 share the loop: two blocks a step into two accumulators,
 * Q(blk) the block's unsigned q (0..15 or 0..31) and OFF its offset */
#define KQ_DOT_32(name, wtype, OFF, Q)                                                                          \
    static float KQ(name)(const void *vw, const void *vx, int n) {                                              \
        const wtype *w = vw;                                                                                     \
        const block_q8_0 *x = vx;                                                                                \
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();                                               \
        int nb = n / 32, b = 0;                                                                                  \
        for (; b + 2 <= nb; b += 2) {                                                                            \
            __m256 d0, d1;                                                                                       \
            kq_scale_pair(w[b].d, w[b + 1].d, x[b].d, x[b + 1].d, &d0, &d1);                                     \
            const wtype *blk = w + b;                                                                            \
            __m256i p0 = kq_dot_off(Q(blk), _mm256_loadu_si256((const __m256i *)x[b].qs), OFF);                  \
            blk = w + b + 1;                                                                                     \
            __m256i p1 = kq_dot_off(Q(blk), _mm256_loadu_si256((const __m256i *)x[b + 1].qs), OFF);              \
            s0 = _mm256_fmadd_ps(d0, _mm256_cvtepi32_ps(p0), s0);                                                \
            s1 = _mm256_fmadd_ps(d1, _mm256_cvtepi32_ps(p1), s1);                                                \
        }                                                                                                        \
        if (b < nb) {                                                                                            \
            const wtype *blk = w + b;                                                                            \
            __m256i p0 = kq_dot_off(Q(blk), _mm256_loadu_si256((const __m256i *)x[b].qs), OFF);                  \
            s0 = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(w[b].d) * _cvtsh_ss(x[b].d)), _mm256_cvtepi32_ps(p0), s0); \
        }                                                                                                        \
        return kq_hsum8(_mm256_add_ps(s0, s1));                                                                  \
    }

#define KQ_Q4_0(blk) kq_nibbles32((blk)->qs)
/* the fifth bit of each q from qh, as 16 */
#define KQ_Q5_0(blk) _mm256_or_si256(kq_nibbles32((blk)->qs), _mm256_and_si256(kq_bits32((blk)->qh), _mm256_set1_epi8(16)))
KQ_DOT_32(dot_q4_0, block_q4_0, 8, KQ_Q4_0)
KQ_DOT_32(dot_q5_0, block_q5_0, 16, KQ_Q5_0)

static float KQ(dot_q4_1)(const void *vw, const void *vx, int n) {
    const block_q4_1 *w = vw;
    const block_q8_1 *x = vx;
    __m256 s0 = _mm256_setzero_ps();
    float sm = 0.0f;
    for (int b = 0; b < n / QK4_1; b++) {
        __m256i p = kq_dot_u8s8(_mm256_setzero_si256(), kq_nibbles32(w[b].qs),
                                _mm256_loadu_si256((const __m256i *)x[b].qs));
        s0 = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(w[b].d) * _cvtsh_ss(x[b].d)), _mm256_cvtepi32_ps(p), s0);
        sm += _cvtsh_ss(w[b].m) * _cvtsh_ss(x[b].s);
    }
    return kq_hsum8(s0) + sm;
}

static float KQ(dot_q5_1)(const void *vw, const void *vx, int n) {
    const block_q5_1 *w = vw;
    const block_q8_1 *x = vx;
    __m256 s0 = _mm256_setzero_ps();
    float sm = 0.0f;
    for (int b = 0; b < n / QK5_1; b++) {
        __m256i hi = _mm256_and_si256(kq_bits32(w[b].qh), _mm256_set1_epi8(0x10));
        __m256i q = _mm256_or_si256(kq_nibbles32(w[b].qs), hi);
        __m256i p = kq_dot_u8s8(_mm256_setzero_si256(), q, _mm256_loadu_si256((const __m256i *)x[b].qs));
        s0 = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(w[b].d) * _cvtsh_ss(x[b].d)), _mm256_cvtepi32_ps(p), s0);
        sm += _cvtsh_ss(w[b].m) * _cvtsh_ss(x[b].s);
    }
    return kq_hsum8(s0) + sm;
}

/* The 8 scales (bytes 0..7) and 8 mins (bytes 8..15) of a Q4_K/Q5_K
 * super-block, 6 bits each, in one register: unpacked in general registers
 * and moved over whole (bytes written to memory and read back as a wider
 * word would stall on store forwarding, once per super-block). */
static inline __m128i kq_unpack_k4(const uint8_t *scales) {
    uint32_t u0, u1, u2;
    memcpy(&u0, scales, 4);
    memcpy(&u1, scales + 4, 4);
    memcpy(&u2, scales + 8, 4);
    const uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
    uint32_t sc_lo = u0 & k1, sc_hi = (u2 & k2) | (((u0 >> 6) & k3) << 4);
    uint32_t mn_lo = u1 & k1, mn_hi = ((u2 >> 4) & k2) | (((u1 >> 6) & k3) << 4);
    return _mm_set_epi32((int)mn_hi, (int)mn_lo, (int)sc_hi, (int)sc_lo);
}

/* the mins of kq_unpack_k4 as int16 */
static inline __m128i kq_mins16(__m128i scmn) { return _mm_cvtepu8_epi16(_mm_unpackhi_epi64(scmn, scmn)); }

/* sum_j mn[j] * (bsums[2j] + bsums[2j+1]), mn16 from kq_mins16 */
static inline int kq_mins_dot(__m128i mn16, const int16_t *bsums) {
    __m128i b0 = _mm_loadu_si128((const __m128i *)bsums), b1 = _mm_loadu_si128((const __m128i *)(bsums + 8));
    __m128i pair = _mm_hadd_epi16(b0, b1); /* 8 sums of 32 (|.| <= 32 * 127) */
    __m128i p = _mm_madd_epi16(mn16, pair);
    p = _mm_add_epi32(p, _mm_shuffle_epi32(p, 0x4E));
    p = _mm_add_epi32(p, _mm_shuffle_epi32(p, 0xB1));
    return _mm_cvtsi128_si32(p);
}

/* the 8 scales of kq_unpack_k4 as int16, the same in both 128-bit lanes */
static inline __m256i kq_scales16(__m128i scmn) { return _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(scmn)); }

/* Q6_K: sum_j sc[j] * bsums[j] as 8 int32 lanes (exact: |sc| <= 128,
 * |bsum| <= 16 * 127), for the -32 offset of every q */
static inline __m256i kq_q6_offset(const int8_t *sc, const int16_t *bsums) {
    __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
    return _mm256_madd_epi16(s16, _mm256_loadu_si256((const __m256i *)bsums));
}

/* 32 unsigned q (<= 31) times 32 int8 x, times int16 scales: int32 x 8 (exact) */
static inline __m256i kq_scaled32(__m256i q, __m256i x, __m256i scale) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), scale);
}

/* int16 element lo of each lane in the low lane, element hi in the high
 * lane, broadcast: one byte shuffle (the indices are constants once the
 * loops around are unrolled) instead of moves through a general register */
static inline __m256i kq_pick16(__m256i v, int lo, int hi) {
    return _mm256_shuffle_epi8(v, _mm256_set_m128i(_mm_set1_epi16((short)(0x0202 * hi + 0x0100)),
                                                   _mm_set1_epi16((short)(0x0202 * lo + 0x0100))));
}

static float KQ(dot_q4_K)(const void *vw, const void *vx, int n) {
    const block_q4_K *w = vw;
    const block_q8_K *x = vx;
    __m256 acc = _mm256_setzero_ps();
    float accm = 0.0f;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int b = 0; b < n / QK_K; b++) {
        __m128i scmn = kq_unpack_k4(w[b].scales);
        float d = _cvtsh_ss(w[b].d) * x[b].d, dmin = _cvtsh_ss(w[b].dmin) * x[b].d;
        accm += dmin * (float)kq_mins_dot(kq_mins16(scmn), x[b].bsums);
        __m256i sumi = _mm256_setzero_si256(), sc16 = kq_scales16(scmn);
        KQ_UNROLL for (int c = 0; c < 4; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(w[b].qs + 32 * c));
            __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            __m256i x0 = _mm256_loadu_si256((const __m256i *)(x[b].qs + 64 * c));
            __m256i x1 = _mm256_loadu_si256((const __m256i *)(x[b].qs + 64 * c + 32));
            sumi = _mm256_add_epi32(sumi, kq_scaled32(lo, x0, kq_pick16(sc16, 2 * c, 2 * c)));
            sumi = _mm256_add_epi32(sumi, kq_scaled32(hi, x1, kq_pick16(sc16, 2 * c + 1, 2 * c + 1)));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return kq_hsum8(acc) - accm;
}

static float KQ(dot_q5_K)(const void *vw, const void *vx, int n) {
    const block_q5_K *w = vw;
    const block_q8_K *x = vx;
    __m256 acc = _mm256_setzero_ps();
    float accm = 0.0f;
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    for (int b = 0; b < n / QK_K; b++) {
        __m128i scmn = kq_unpack_k4(w[b].scales);
        float d = _cvtsh_ss(w[b].d) * x[b].d, dmin = _cvtsh_ss(w[b].dmin) * x[b].d;
        accm += dmin * (float)kq_mins_dot(kq_mins16(scmn), x[b].bsums);
        __m256i hb = _mm256_loadu_si256((const __m256i *)w[b].qh);
        __m256i sumi = _mm256_setzero_si256(), sc16 = kq_scales16(scmn);
        KQ_UNROLL for (int c = 0; c < 4; c++) {
            __m256i q = _mm256_loadu_si256((const __m256i *)(w[b].qs + 32 * c));
            /* bit 2c of qh -> 16 in the low element, bit 2c+1 -> the high one */
            __m256i h0 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), one), 4);
            __m256i h1 = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), one), 4);
            __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m4), h0);
            __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4), h1);
            __m256i x0 = _mm256_loadu_si256((const __m256i *)(x[b].qs + 64 * c));
            __m256i x1 = _mm256_loadu_si256((const __m256i *)(x[b].qs + 64 * c + 32));
            sumi = _mm256_add_epi32(sumi, kq_scaled32(lo, x0, kq_pick16(sc16, 2 * c, 2 * c)));
            sumi = _mm256_add_epi32(sumi, kq_scaled32(hi, x1, kq_pick16(sc16, 2 * c + 1, 2 * c + 1)));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return kq_hsum8(acc) - accm;
}


static float KQ(dot_q6_K)(const void *vw, const void *vx, int n) {
    const block_q6_K *w = vw;
    const block_q8_K *x = vx;
    __m256 acc = _mm256_setzero_ps();
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    for (int b = 0; b < n / QK_K; b++) {
        const int8_t *sc = w[b].scales;
        /* q - 32: sum(q * x) - 32 * sum(x), the latter from the bsums */
        __m256i sumi = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(kq_q6_offset(sc, x[b].bsums), 5));
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w[b].ql + 64 * h, *qh = w[b].qh + 32 * h;
            const int8_t *xs = x[b].qs + 128 * h, *s = sc + 8 * h;
            __m256i l0 = _mm256_loadu_si256((const __m256i *)ql), l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
            __m256i hb = _mm256_loadu_si256((const __m256i *)qh);
            __m256i q0 = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hb, m2), 4));
            __m256i q1 = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m2), 4));
            __m256i q2 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m2), 4));
            __m256i q3 = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                         _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m2), 4));
            __m256i p0 = _mm256_maddubs_epi16(q0, _mm256_loadu_si256((const __m256i *)xs));
            __m256i p1 = _mm256_maddubs_epi16(q1, _mm256_loadu_si256((const __m256i *)(xs + 32)));
            __m256i p2 = _mm256_maddubs_epi16(q2, _mm256_loadu_si256((const __m256i *)(xs + 64)));
            __m256i p3 = _mm256_maddubs_epi16(q3, _mm256_loadu_si256((const __m256i *)(xs + 96)));
            __m256i s16 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)s)));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p0, kq_pick16(s16, 0, 1)));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p1, kq_pick16(s16, 2, 3)));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p2, kq_pick16(s16, 4, 5)));
            sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p3, kq_pick16(s16, 6, 7)));
        }
        acc = _mm256_fmadd_ps(_mm256_set1_ps(_cvtsh_ss(w[b].d) * x[b].d), _mm256_cvtepi32_ps(sumi), acc);
    }
    return kq_hsum8(acc);
}

/* kern_quantize_q8_0 bit for bit: the same f32 operations (amax / 127,
 * 1 / d, x * id) and the same rounding (half away from zero, via the exact
 * truncation and fraction of kern_round_small); F16C rounds d to half as
 * kern_f32_to_f16 does (to nearest even, subnormals included). */
static void KQ(quantize_q8_0)(block_q8_0 *out, const float *x, int n) {
    const __m256 sign = _mm256_set1_ps(-0.0f), half = _mm256_set1_ps(0.5f);
    for (int b = 0; b < n / QK8_0; b++, x += QK8_0) {
        __m256 v[4], m = _mm256_setzero_ps();
        KQ_UNROLL for (int k = 0; k < 4; k++) {
            v[k] = _mm256_loadu_ps(x + 8 * k);
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[k]));
        }
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float amax = _mm_cvtss_f32(m4);
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        out[b].d = (uint16_t)_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT);
        __m256 vid = _mm256_set1_ps(id);
        __m256i q[4];
        KQ_UNROLL for (int k = 0; k < 4; k++) {
            __m256 s = _mm256_mul_ps(v[k], vid);
            __m256i t = _mm256_cvttps_epi32(s);
            __m256 frac = _mm256_sub_ps(s, _mm256_cvtepi32_ps(t));
            /* compare masks are -1 where true: subtract for +1, add for -1 */
            __m256i up = _mm256_castps_si256(_mm256_cmp_ps(frac, half, _CMP_GE_OQ));
            __m256i dn = _mm256_castps_si256(_mm256_cmp_ps(frac, _mm256_xor_ps(half, sign), _CMP_LE_OQ));
            q[k] = _mm256_add_epi32(_mm256_sub_epi32(t, up), dn);
        }
        /* int32 -> int8 in element order: packs work per 128-bit lane, so fix the order after */
        __m256i p01 = _mm256_packs_epi32(q[0], q[1]), p23 = _mm256_packs_epi32(q[2], q[3]);
        __m256i p = _mm256_packs_epi16(p01, p23);
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)out[b].qs, p);
    }
}

/* ------------------------------------------------------------ prefill tiles
 *
 * tile4: rows [0, n_rows) x 4 tokens (kern.h). Every weight block is loaded
 * and unpacked once for the 4 tokens; the activations (4 rows of n_in) stay
 * in L1/L2 across rows. Written with constant-trip loops the compiler
 * unrolls (so the accumulator arrays live in registers).
 */


static inline float kq_hsum8i(__m256 v) { return kq_hsum8(v); }

/* Q8_0 (AVX2): 4 rows x 2 tokens per register tile (16 registers), and one
 * row x KQ_Q8_NT tokens for the remainder rows. The AVX-512 table has its own
 * tile with two blocks per 512-bit register (kern_avx512.c: tile4_q8_0_zmm)
 * and uses only q8_0_row1 from here, 4 tokens at a time. */
#if defined(KQ_VNNI)
#define KQ_Q8_NT 4
#else
#define KQ_Q8_NT 2
#endif

/* one row x KQ_Q8_NT tokens */
static void KQ(q8_0_row1)(float *out, size_t out_stride, const char *wc, const char *xc, size_t act_bytes, int n) {
    __m256 acc[KQ_Q8_NT];
    KQ_UNROLL for (int t = 0; t < KQ_Q8_NT; t++) acc[t] = _mm256_setzero_ps();
    const block_q8_0 *wb = (const block_q8_0 *)wc;
    for (int b = 0; b < n / QK8_0; b++) {
        __m256i qw = _mm256_loadu_si256((const __m256i *)wb[b].qs), aw = _mm256_sign_epi8(qw, qw);
        float wd = _cvtsh_ss(wb[b].d);
        KQ_UNROLL for (int t = 0; t < KQ_Q8_NT; t++) {
            const block_q8_0 *xb = (const block_q8_0 *)(xc + act_bytes * t) + b;
            __m256i p = kq_dot_u8s8(_mm256_setzero_si256(), aw,
                                    _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)xb->qs), qw));
            acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(wd * _cvtsh_ss(xb->d)), _mm256_cvtepi32_ps(p), acc[t]);
        }
    }
    KQ_UNROLL for (int t = 0; t < KQ_Q8_NT; t++) out[t * out_stride] = kq_hsum8i(acc[t]);
}

#if !defined(KQ_VNNI)
static void KQ(q8_0_rows4)(float *out, size_t out_stride, const char *wc, size_t row_bytes, const char *xc,
                           size_t act_bytes, int n) {
    __m256 acc[4][KQ_Q8_NT];
    KQ_UNROLL for (int r = 0; r < 4; r++) KQ_UNROLL for (int t = 0; t < KQ_Q8_NT; t++) acc[r][t] = _mm256_setzero_ps();
    for (int b = 0; b < n / QK8_0; b++) {
        __m256i xv[KQ_Q8_NT];
        float xd[KQ_Q8_NT];
        KQ_UNROLL for (int t = 0; t < KQ_Q8_NT; t++) {
            const block_q8_0 *xb = (const block_q8_0 *)(xc + act_bytes * t) + b;
            xv[t] = _mm256_loadu_si256((const __m256i *)xb->qs);
            xd[t] = _cvtsh_ss(xb->d);
        }
        KQ_UNROLL for (int r = 0; r < 4; r++) {
            const block_q8_0 *wb = (const block_q8_0 *)(wc + row_bytes * r) + b;
            __m256i qw = _mm256_loadu_si256((const __m256i *)wb->qs);
            float wd = _cvtsh_ss(wb->d);
            __m256i aw = _mm256_sign_epi8(qw, qw);
            KQ_UNROLL for (int t = 0; t < KQ_Q8_NT; t++) {
                __m256i p = kq_dot_u8s8(_mm256_setzero_si256(), aw, _mm256_sign_epi8(xv[t], qw));
                acc[r][t] = _mm256_fmadd_ps(_mm256_set1_ps(wd * xd[t]), _mm256_cvtepi32_ps(p), acc[r][t]);
            }
        }
    }
    KQ_UNROLL for (int r = 0; r < 4; r++) KQ_UNROLL for (int t = 0; t < KQ_Q8_NT; t++)
        out[t * out_stride + r] = kq_hsum8i(acc[r][t]);
}

static void KQ(tile4_q8_0)(float *out, size_t out_stride, const void *w, size_t row_bytes, int n_rows,
                           const void *x, size_t act_bytes, int n) {
    const char *wc = w, *xc = x;
    for (int t0 = 0; t0 < 4; t0 += KQ_Q8_NT) {
        int r = 0;
        for (; r + 4 <= n_rows; r += 4)
            KQ(q8_0_rows4)(out + t0 * out_stride + r, out_stride, wc + row_bytes * r, row_bytes,
                           xc + act_bytes * t0, act_bytes, n);
        for (; r < n_rows; r++)
            KQ(q8_0_row1)(out + t0 * out_stride + r, out_stride, wc + row_bytes * r, xc + act_bytes * t0,
                          act_bytes, n);
    }
}
#endif

/* The other 32-element formats: one row x 4 tokens, the block unpacked
 * once. UNPACK sets q (signed for _0 types: q - bias; unsigned for _1). */
#define KQ_TILE_32(name, btype, xtype, SIGNED, UNPACK, HAS_M)                                              \
    static void KQ(name)(float *out, size_t out_stride, const void *w, size_t row_bytes, int n_rows,         \
                         const void *x, size_t act_bytes, int n) {                                          \
        for (int r = 0; r < n_rows; r++) {                                                                  \
            const btype *wb = (const btype *)((const char *)w + row_bytes * r);                             \
            __m256 acc[4];                                                                                  \
            float sm[4] = {0, 0, 0, 0};                                                                     \
            KQ_UNROLL for (int t = 0; t < 4; t++) acc[t] = _mm256_setzero_ps();                             \
            for (int b = 0; b < n / 32; b++) {                                                              \
                const btype *blk = wb + b;                                                                  \
                __m256i q;                                                                                  \
                UNPACK;                                                                                     \
                __m256i aq = SIGNED ? _mm256_sign_epi8(q, q) : q;                                           \
                float wd = _cvtsh_ss(blk->d);                                                               \
                KQ_UNROLL for (int t = 0; t < 4; t++) {                                                     \
                    const xtype *xb = (const xtype *)((const char *)x + act_bytes * t) + b;                 \
                    __m256i xv = _mm256_loadu_si256((const __m256i *)xb->qs);                               \
                    __m256i p = kq_dot_u8s8(_mm256_setzero_si256(), aq, SIGNED ? _mm256_sign_epi8(xv, q) : xv); \
                    acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(wd * _cvtsh_ss(xb->d)), _mm256_cvtepi32_ps(p), acc[t]); \
                    HAS_M;                                                                                  \
                }                                                                                           \
            }                                                                                               \
            KQ_UNROLL for (int t = 0; t < 4; t++) out[t * out_stride + r] = kq_hsum8i(acc[t]) + sm[t];      \
        }                                                                                                   \
    }

KQ_TILE_32(tile4_q4_0, block_q4_0, block_q8_0, 1, q = _mm256_sub_epi8(kq_nibbles32(blk->qs), _mm256_set1_epi8(8)), (void)0)
KQ_TILE_32(tile4_q5_0, block_q5_0, block_q8_0, 1,
           q = _mm256_or_si256(kq_nibbles32(blk->qs), _mm256_andnot_si256(kq_bits32(blk->qh), _mm256_set1_epi8((char)0xF0))),
           (void)0)
KQ_TILE_32(tile4_q4_1, block_q4_1, block_q8_1, 0, q = kq_nibbles32(blk->qs),
           sm[t] += _cvtsh_ss(blk->m) * _cvtsh_ss(xb->s))
KQ_TILE_32(tile4_q5_1, block_q5_1, block_q8_1, 0,
           q = _mm256_or_si256(kq_nibbles32(blk->qs), _mm256_and_si256(kq_bits32(blk->qh), _mm256_set1_epi8(0x10))),
           sm[t] += _cvtsh_ss(blk->m) * _cvtsh_ss(xb->s))

/* Q4_K / Q5_K: one row x 4 tokens; qh NULL for Q4_K */
static inline __attribute__((always_inline)) void kq_tile_k_min(float *out, size_t out_stride, const uint16_t *dd, const uint8_t *scales,
                                 const uint8_t *qs, const uint8_t *qh, const char *x, size_t act_bytes,
                                 __m256 acc[4], float accm[4]) {
    __m128i scmn = kq_unpack_k4(scales), mn16 = kq_mins16(scmn);
    float d = _cvtsh_ss(dd[0]), dmin = _cvtsh_ss(dd[1]);
    const __m256i m4 = _mm256_set1_epi8(0x0F), one = _mm256_set1_epi8(1);
    __m256i hb = qh ? _mm256_loadu_si256((const __m256i *)qh) : _mm256_setzero_si256();
    __m256i sumi[4], sc16 = kq_scales16(scmn);
    KQ_UNROLL for (int t = 0; t < 4; t++) sumi[t] = _mm256_setzero_si256();
    KQ_UNROLL for (int c = 0; c < 4; c++) {
        __m256i q = _mm256_loadu_si256((const __m256i *)(qs + 32 * c));
        __m256i lo = _mm256_and_si256(q, m4), hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
        if (qh) {
            lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c), one), 4));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2 * c + 1), one), 4));
        }
        __m256i s0 = kq_pick16(sc16, 2 * c, 2 * c), s1 = kq_pick16(sc16, 2 * c + 1, 2 * c + 1);
        KQ_UNROLL for (int t = 0; t < 4; t++) {
            const block_q8_K *xb = (const block_q8_K *)(x + act_bytes * t);
            __m256i x0 = _mm256_loadu_si256((const __m256i *)(xb->qs + 64 * c));
            __m256i x1 = _mm256_loadu_si256((const __m256i *)(xb->qs + 64 * c + 32));
            sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(_mm256_maddubs_epi16(lo, x0), s0));
            sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(_mm256_maddubs_epi16(hi, x1), s1));
        }
    }
    KQ_UNROLL for (int t = 0; t < 4; t++) {
        const block_q8_K *xb = (const block_q8_K *)(x + act_bytes * t);
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb->d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
        accm[t] += dmin * xb->d * (float)kq_mins_dot(mn16, xb->bsums);
    }
    (void)out;
    (void)out_stride;
}

static void KQ(tile4_q4_K)(float *out, size_t out_stride, const void *w, size_t row_bytes, int n_rows,
                           const void *x, size_t act_bytes, int n) {
    for (int r = 0; r < n_rows; r++) {
        const block_q4_K *wb = (const block_q4_K *)((const char *)w + row_bytes * r);
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        float accm[4] = {0, 0, 0, 0};
        for (int b = 0; b < n / QK_K; b++)
            kq_tile_k_min(out, out_stride, &wb[b].d, wb[b].scales, wb[b].qs, NULL,
                          (const char *)x + sizeof(block_q8_K) * b, act_bytes, acc, accm);
        KQ_UNROLL for (int t = 0; t < 4; t++) out[t * out_stride + r] = kq_hsum8i(acc[t]) - accm[t];
    }
}

static void KQ(tile4_q5_K)(float *out, size_t out_stride, const void *w, size_t row_bytes, int n_rows,
                           const void *x, size_t act_bytes, int n) {
    for (int r = 0; r < n_rows; r++) {
        const block_q5_K *wb = (const block_q5_K *)((const char *)w + row_bytes * r);
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        float accm[4] = {0, 0, 0, 0};
        for (int b = 0; b < n / QK_K; b++)
            kq_tile_k_min(out, out_stride, &wb[b].d, wb[b].scales, wb[b].qs, wb[b].qh,
                          (const char *)x + sizeof(block_q8_K) * b, act_bytes, acc, accm);
        KQ_UNROLL for (int t = 0; t < 4; t++) out[t * out_stride + r] = kq_hsum8i(acc[t]) - accm[t];
    }
}

static void KQ(tile4_q6_K)(float *out, size_t out_stride, const void *w, size_t row_bytes, int n_rows,
                           const void *x, size_t act_bytes, int n) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(3);
    for (int r = 0; r < n_rows; r++) {
        const block_q6_K *wb = (const block_q6_K *)((const char *)w + row_bytes * r);
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int b = 0; b < n / QK_K; b++) {
            const int8_t *sc = wb[b].scales;
            __m256i sumi[4];
            KQ_UNROLL for (int t = 0; t < 4; t++) sumi[t] = _mm256_setzero_si256();
            for (int h = 0; h < 2; h++) {
                const uint8_t *ql = wb[b].ql + 64 * h, *qhp = wb[b].qh + 32 * h;
                const int8_t *s = sc + 8 * h;
                __m256i l0 = _mm256_loadu_si256((const __m256i *)ql), l1 = _mm256_loadu_si256((const __m256i *)(ql + 32));
                __m256i hb = _mm256_loadu_si256((const __m256i *)qhp);
                __m256i q[4];
                q[0] = _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(hb, m2), 4));
                q[1] = _mm256_or_si256(_mm256_and_si256(l1, m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 2), m2), 4));
                q[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 4), m2), 4));
                q[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                       _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hb, 6), m2), 4));
                __m256i scl[4], s16 = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_loadl_epi64((const __m128i *)s)));
                KQ_UNROLL for (int k = 0; k < 4; k++) scl[k] = kq_pick16(s16, 2 * k, 2 * k + 1);
                KQ_UNROLL for (int t = 0; t < 4; t++) {
                    const int8_t *xs = ((const block_q8_K *)((const char *)x + act_bytes * t) + b)->qs + 128 * h;
                    KQ_UNROLL for (int k = 0; k < 4; k++) {
                        __m256i p = _mm256_maddubs_epi16(q[k], _mm256_loadu_si256((const __m256i *)(xs + 32 * k)));
                        sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(p, scl[k]));
                    }
                }
            }
            float d = _cvtsh_ss(wb[b].d);
            KQ_UNROLL for (int t = 0; t < 4; t++) {
                const block_q8_K *xb = (const block_q8_K *)((const char *)x + act_bytes * t) + b;
                __m256i si = _mm256_sub_epi32(sumi[t], _mm256_slli_epi32(kq_q6_offset(sc, xb->bsums), 5));
                acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * xb->d), _mm256_cvtepi32_ps(si), acc[t]);
            }
        }
        KQ_UNROLL for (int t = 0; t < 4; t++) out[t * out_stride + r] = kq_hsum8i(acc[t]);
    }
}

/* F16 weights, float activations: one row x 4 tokens, each 8 halves converted once */
static void KQ(tile4_f16)(float *out, size_t out_stride, const void *w, size_t row_bytes, int n_rows,
                          const void *x, size_t act_bytes, int n) {
    const float *xf = x;
    size_t xs = act_bytes / sizeof(float);
    for (int r = 0; r < n_rows; r++) {
        const uint16_t *wr = (const uint16_t *)((const char *)w + row_bytes * r);
        __m256 a0[4], a1[4];
        KQ_UNROLL for (int t = 0; t < 4; t++) a0[t] = _mm256_setzero_ps(), a1[t] = _mm256_setzero_ps();
        int i = 0;
        for (; i + 16 <= n; i += 16) {
            __m256 w0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(wr + i)));
            __m256 w1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(wr + i + 8)));
            KQ_UNROLL for (int t = 0; t < 4; t++) {
                a0[t] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xf + xs * t + i), a0[t]);
                a1[t] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xf + xs * t + i + 8), a1[t]);
            }
        }
        float tail[4] = {0, 0, 0, 0};
        for (; i < n; i++) {
            float wv = _cvtsh_ss(wr[i]);
            for (int t = 0; t < 4; t++) tail[t] += wv * xf[xs * t + i];
        }
        KQ_UNROLL for (int t = 0; t < 4; t++) out[t * out_stride + r] = kq_hsum8i(_mm256_add_ps(a0[t], a1[t])) + tail[t];
    }
}

/* ------------------------------------------ Q2_K, Q3_K, IQ4_NL, IQ4_XS
 *
 * One block function per type, always inlined with a constant token count
 * nt: the dot product calls it with nt = 1, the prefill tile with nt = 4
 * (the block is unpacked once for the 4 tokens). x[t] is token t's
 * activation block; acc[t] collects d-scaled integer sums, accm[t] the min
 * terms subtracted at the end (Q2_K only).
 */
#define KQ_INLINE static inline __attribute__((always_inline))

static inline int kq_hsum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* the IQ4 grid in both 128-bit lanes, for byte shuffles */
static inline __m256i kq_iq4_grid(void) {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)kern_iq4nl_values));
}

/* Q2_K: the 2-bit field of half h at shift s is elements 128h + 32s + l,
 * sub-block 8h + 2s in the low lane and 8h + 2s + 1 in the high one */
KQ_INLINE void kq_blk_q2_K(const block_q2_K *w, const block_q8_K *const *x, int nt, __m256 *acc, float *accm) {
    const __m256i m3 = _mm256_set1_epi8(3);
    __m128i raw = _mm_loadu_si128((const __m128i *)w->scales);
    __m128i sc8 = _mm_and_si128(raw, _mm_set1_epi8(15));
    __m256i mn16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), _mm_set1_epi8(15)));
    __m256i sch[2] = {_mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sc8)),
                      _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(_mm_srli_si128(sc8, 8)))};
    __m256i sumi[4];
    KQ_UNROLL for (int t = 0; t < nt; t++) sumi[t] = _mm256_setzero_si256();
    KQ_UNROLL for (int h = 0; h < 2; h++) {
        __m256i qv = _mm256_loadu_si256((const __m256i *)(w->qs + 32 * h));
        KQ_UNROLL for (int s = 0; s < 4; s++) {
            __m256i q = _mm256_and_si256(_mm256_srli_epi16(qv, 2 * s), m3);
            __m256i scl = kq_pick16(sch[h], 2 * s, 2 * s + 1);
            KQ_UNROLL for (int t = 0; t < nt; t++) {
                __m256i xv = _mm256_loadu_si256((const __m256i *)(x[t]->qs + 128 * h + 32 * s));
                sumi[t] = _mm256_add_epi32(sumi[t], kq_scaled32(q, xv, scl));
            }
        }
    }
    float d = _cvtsh_ss(w->d), dmin = _cvtsh_ss(w->dmin);
    KQ_UNROLL for (int t = 0; t < nt; t++) {
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[t]->d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
        __m256i m = _mm256_madd_epi16(mn16, _mm256_loadu_si256((const __m256i *)x[t]->bsums));
        accm[t] += dmin * x[t]->d * (float)kq_hsum_i32(m);
    }
}

/* Q3_K's 16 scales minus 32 as int8 (kern_scale_q3_K), unpacked in general registers */
static inline __m128i kq_q3_scales(const uint8_t *sc) {
    uint32_t a0, a1, a2;
    memcpy(&a0, sc, 4);
    memcpy(&a1, sc + 4, 4);
    memcpy(&a2, sc + 8, 4);
    const uint32_t k4 = 0x0f0f0f0f, k2 = 0x03030303;
    uint32_t s0 = (a0 & k4) | (a2 & k2) << 4, s1 = (a1 & k4) | ((a2 >> 2) & k2) << 4;
    uint32_t s2 = ((a0 >> 4) & k4) | ((a2 >> 4) & k2) << 4, s3 = ((a1 >> 4) & k4) | ((a2 >> 6) & k2) << 4;
    return _mm_sub_epi8(_mm_set_epi32((int)s3, (int)s2, (int)s1, (int)s0), _mm_set1_epi8(32));
}

/* Q3_K: u = low 2 bits | high bit << 2 (0..7) and q = u - 4, so
 * sum sc * q * x = sum sc * u * x - 4 * sum sc * bsums */
KQ_INLINE void kq_blk_q3_K(const block_q3_K *w, const block_q8_K *const *x, int nt, __m256 *acc) {
    const __m256i m3 = _mm256_set1_epi8(3), one = _mm256_set1_epi8(1);
    __m128i sc8 = kq_q3_scales(w->scales);
    __m256i sc16 = _mm256_cvtepi8_epi16(sc8);
    __m256i sch[2] = {_mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(sc8)),
                      _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(_mm_srli_si128(sc8, 8)))};
    __m256i hm = _mm256_loadu_si256((const __m256i *)w->hmask);
    __m256i sumi[4];
    KQ_UNROLL for (int t = 0; t < nt; t++) {
        __m256i off = _mm256_madd_epi16(sc16, _mm256_loadu_si256((const __m256i *)x[t]->bsums));
        sumi[t] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(off, 2));
    }
    KQ_UNROLL for (int h = 0; h < 2; h++) {
        __m256i qv = _mm256_loadu_si256((const __m256i *)(w->qs + 32 * h));
        KQ_UNROLL for (int s = 0; s < 4; s++) {
            __m256i hb = _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + s), one), 2);
            __m256i q = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(qv, 2 * s), m3), hb);
            __m256i scl = kq_pick16(sch[h], 2 * s, 2 * s + 1);
            KQ_UNROLL for (int t = 0; t < nt; t++) {
                __m256i xv = _mm256_loadu_si256((const __m256i *)(x[t]->qs + 128 * h + 32 * s));
                sumi[t] = _mm256_add_epi32(sumi[t], kq_scaled32(q, xv, scl));
            }
        }
    }
    float d = _cvtsh_ss(w->d);
    KQ_UNROLL for (int t = 0; t < nt; t++)
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[t]->d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
}

/* IQ4_NL: grid values by byte shuffle (signed, |v| <= 127), then the sign
 * trick as Q8_0: |w| * (x with w's sign); x never holds -128 */
KQ_INLINE void kq_blk_iq4_nl(const block_iq4_nl *w, const block_q8_0 *const *x, int nt, __m256 *acc) {
    __m256i q = _mm256_shuffle_epi8(kq_iq4_grid(), kq_nibbles32(w->qs)), aq = _mm256_sign_epi8(q, q);
    float wd = _cvtsh_ss(w->d);
    KQ_UNROLL for (int t = 0; t < nt; t++) {
        __m256i xv = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)x[t]->qs), q);
        __m256i p = kq_dot_u8s8(_mm256_setzero_si256(), aq, xv);
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(wd * _cvtsh_ss(x[t]->d)), _mm256_cvtepi32_ps(p), acc[t]);
    }
}

/* IQ4_XS: as IQ4_NL per sub-block of 32, each pair sum (<= 2 * 127 * 127,
 * no int16 saturation) times the sub-block's scale - 32 */
KQ_INLINE void kq_blk_iq4_xs(const block_iq4_xs *w, const block_q8_K *const *x, int nt, __m256 *acc) {
    const __m256i grid = kq_iq4_grid();
    uint32_t sl;
    memcpy(&sl, w->scales_l, 4);
    int16_t ls[8];
    for (int j = 0; j < 8; j++)
        ls[j] = (int16_t)((((sl >> (4 * j)) & 15) | ((w->scales_h >> (2 * j)) & 3) << 4) - 32);
    __m256i sc16 = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ls));
    __m256i sumi[4];
    KQ_UNROLL for (int t = 0; t < nt; t++) sumi[t] = _mm256_setzero_si256();
    KQ_UNROLL for (int j = 0; j < 8; j++) {
        __m256i q = _mm256_shuffle_epi8(grid, kq_nibbles32(w->qs + 16 * j)), aq = _mm256_sign_epi8(q, q);
        __m256i scl = kq_pick16(sc16, j, j);
        KQ_UNROLL for (int t = 0; t < nt; t++) {
            __m256i xv = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)(x[t]->qs + 32 * j)), q);
            sumi[t] = _mm256_add_epi32(sumi[t], _mm256_madd_epi16(_mm256_maddubs_epi16(aq, xv), scl));
        }
    }
    float d = _cvtsh_ss(w->d);
    KQ_UNROLL for (int t = 0; t < nt; t++)
        acc[t] = _mm256_fmadd_ps(_mm256_set1_ps(d * x[t]->d), _mm256_cvtepi32_ps(sumi[t]), acc[t]);
}

/* the dot product (nt = 1) and the prefill tile (nt = 4) of a block
 * function; BLK(w, x, nt) passes acc (and accm where the type has mins) */
#define KQ_DOT_TILE(dname, tname, wtype, xtype, QKB, BLK)                                                    \
    static float KQ(dname)(const void *vw, const void *vx, int n) {                                         \
        const wtype *w = vw;                                                                                 \
        const xtype *xb = vx;                                                                                \
        __m256 acc[1] = {_mm256_setzero_ps()};                                                               \
        float accm[1] = {0.0f};                                                                              \
        for (int b = 0; b < n / QKB; b++) {                                                                  \
            const xtype *x[1] = {xb + b};                                                                    \
            BLK(w + b, x, 1);                                                                                \
        }                                                                                                    \
        (void)accm;                                                                                          \
        return kq_hsum8(acc[0]) - accm[0];                                                                   \
    }                                                                                                        \
    static void KQ(tname)(float *out, size_t out_stride, const void *vw, size_t row_bytes, int n_rows,      \
                          const void *vx, size_t act_bytes, int n) {                                         \
        for (int r = 0; r < n_rows; r++) {                                                                   \
            const wtype *w = (const wtype *)((const char *)vw + row_bytes * r);                              \
            __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()}; \
            float accm[4] = {0, 0, 0, 0};                                                                    \
            for (int b = 0; b < n / QKB; b++) {                                                              \
                const xtype *x[4];                                                                           \
                KQ_UNROLL for (int t = 0; t < 4; t++) x[t] = (const xtype *)((const char *)vx + act_bytes * t) + b; \
                BLK(w + b, x, 4);                                                                            \
            }                                                                                                \
            KQ_UNROLL for (int t = 0; t < 4; t++) out[t * out_stride + r] = kq_hsum8i(acc[t]) - accm[t];    \
        }                                                                                                    \
    }

#define KQ_BLK_Q2_K(w, x, nt) kq_blk_q2_K(w, x, nt, acc, accm)
#define KQ_BLK_Q3_K(w, x, nt) kq_blk_q3_K(w, x, nt, acc)
#define KQ_BLK_IQ4_NL(w, x, nt) kq_blk_iq4_nl(w, x, nt, acc)
#define KQ_BLK_IQ4_XS(w, x, nt) kq_blk_iq4_xs(w, x, nt, acc)
KQ_DOT_TILE(dot_q2_K, tile4_q2_K, block_q2_K, block_q8_K, QK_K, KQ_BLK_Q2_K)
KQ_DOT_TILE(dot_q3_K, tile4_q3_K, block_q3_K, block_q8_K, QK_K, KQ_BLK_Q3_K)
KQ_DOT_TILE(dot_iq4_nl, tile4_iq4_nl, block_iq4_nl, block_q8_0, QK4_NL, KQ_BLK_IQ4_NL)
KQ_DOT_TILE(dot_iq4_xs, tile4_iq4_xs, block_iq4_xs, block_q8_K, QK_K, KQ_BLK_IQ4_XS)

#endif
