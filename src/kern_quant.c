/*
 * kern_quant.c - the block-quantized formats: reference quantizers,
 * dequantization, and the scalar dot products that are the oracle for the
 * SIMD ones.
 *
 * Layouts are GGML's (ggml-common.h), described in kern.h next to each block
 * struct. The dot products follow the reference engine's formulation: the
 * integer sums of a block (or of a K-quant sub-block) are exact, then scaled
 * in float; the scalar code accumulates blocks in index order, so a SIMD
 * variant differs from it only by float summation order.
 *
 * Plain C, no SIMD flags: runs anywhere.
 */
#include <assert.h>
#include <math.h>
#include <string.h>

#include "ggml_types.h"
#include "kern.h"

/* round to nearest, ties to even, for |f| < 2^22: the reference engine's nearest_int */
static int nearest_int(float f) {
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static float h2f(uint16_t h) { return kern_f16_to_f32(h); }

void kern_scale_min_k4(int j, const uint8_t *q, uint8_t *sc, uint8_t *m) {
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (uint8_t)((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
        *m = (uint8_t)((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
    }
}

/* inverse of kern_scale_min_k4: sc, m < 64; scales must start zeroed */
static void pack_scale_min_k4(int j, uint8_t *q, int sc, int m) {
    if (j < 4) {
        q[j] = (uint8_t)(q[j] | sc);
        q[j + 4] = (uint8_t)(q[j + 4] | m);
    } else {
        q[j + 4] = (uint8_t)((sc & 0xF) | ((m & 0xF) << 4));
        q[j - 4] = (uint8_t)(q[j - 4] | ((sc >> 4) << 6));
        q[j] = (uint8_t)(q[j] | ((m >> 4) << 6));
    }
}

const int8_t kern_iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113};

int kern_scale_q3_K(int j, const uint8_t *q) {
    int lo = j < 8 ? q[j] & 15 : q[j - 8] >> 4;
    int hi = (q[8 + j % 4] >> (2 * (j / 4))) & 3;
    return lo | hi << 4;
}

/* inverse of kern_scale_q3_K: v < 64; scales must start zeroed */
static void pack_scale_q3_K(int j, uint8_t *q, int v) {
    if (j < 8)
        q[j] = (uint8_t)(q[j] | (v & 15));
    else
        q[j - 8] = (uint8_t)(q[j - 8] | (v & 15) << 4);
    q[8 + j % 4] = (uint8_t)(q[8 + j % 4] | (v >> 4) << (2 * (j / 4)));
}

/* the 6-bit scale of IQ4_XS sub-block j (0..7), 0..63 (the factor is this - 32) */
static int iq4_xs_scale(const block_iq4_xs *b, int j) {
    return ((b->scales_l[j / 2] >> (4 * (j % 2))) & 15) | ((b->scales_h >> (2 * j)) & 3) << 4;
}

/* ------------------------------------------------------------ quantizers */

static void quantize_q4_0(block_q4_0 *y, const float *x, int n) {
    for (int b = 0; b < n / QK4_0; b++, x += QK4_0) {
        float amax = 0.0f, max = 0.0f; /* max keeps its sign */
        for (int i = 0; i < QK4_0; i++)
            if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
        float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = kern_f32_to_f16(d);
        for (int i = 0; i < QK4_0 / 2; i++) {
            int q0 = (int)(x[i] * id + 8.5f), q1 = (int)(x[i + 16] * id + 8.5f);
            q0 = q0 > 15 ? 15 : q0;
            q1 = q1 > 15 ? 15 : q1;
            y[b].qs[i] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quantize_q4_1(block_q4_1 *y, const float *x, int n) {
    for (int b = 0; b < n / QK4_1; b++, x += QK4_1) {
        float min = x[0], max = x[0];
        for (int i = 1; i < QK4_1; i++) min = x[i] < min ? x[i] : min, max = x[i] > max ? x[i] : max;
        float d = (max - min) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = kern_f32_to_f16(d);
        y[b].m = kern_f32_to_f16(min);
        for (int i = 0; i < QK4_1 / 2; i++) {
            int q0 = (int)((x[i] - min) * id + 0.5f), q1 = (int)((x[i + 16] - min) * id + 0.5f);
            q0 = q0 > 15 ? 15 : q0;
            q1 = q1 > 15 ? 15 : q1;
            y[b].qs[i] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

static void quantize_q5_0(block_q5_0 *y, const float *x, int n) {
    for (int b = 0; b < n / QK5_0; b++, x += QK5_0) {
        float amax = 0.0f, max = 0.0f;
        for (int i = 0; i < QK5_0; i++)
            if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
        float d = max / -16.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = kern_f32_to_f16(d);
        uint32_t qh = 0;
        for (int i = 0; i < QK5_0 / 2; i++) {
            int q0 = (int)(x[i] * id + 16.5f), q1 = (int)(x[i + 16] * id + 16.5f);
            q0 = q0 > 31 ? 31 : q0;
            q1 = q1 > 31 ? 31 : q1;
            y[b].qs[i] = (uint8_t)((q0 & 15) | ((q1 & 15) << 4));
            qh |= (uint32_t)(q0 >> 4) << i;
            qh |= (uint32_t)(q1 >> 4) << (i + 16);
        }
        for (int k = 0; k < 4; k++) y[b].qh[k] = (uint8_t)(qh >> (8 * k));
    }
}

static void quantize_q5_1(block_q5_1 *y, const float *x, int n) {
    for (int b = 0; b < n / QK5_1; b++, x += QK5_1) {
        float min = x[0], max = x[0];
        for (int i = 1; i < QK5_1; i++) min = x[i] < min ? x[i] : min, max = x[i] > max ? x[i] : max;
        float d = (max - min) / 31.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = kern_f32_to_f16(d);
        y[b].m = kern_f32_to_f16(min);
        uint32_t qh = 0;
        for (int i = 0; i < QK5_1 / 2; i++) {
            int q0 = (int)((x[i] - min) * id + 0.5f), q1 = (int)((x[i + 16] - min) * id + 0.5f);
            q0 = q0 > 31 ? 31 : q0;
            q1 = q1 > 31 ? 31 : q1;
            y[b].qs[i] = (uint8_t)((q0 & 15) | ((q1 & 15) << 4));
            qh |= (uint32_t)(q0 >> 4) << i;
            qh |= (uint32_t)(q1 >> 4) << (i + 16);
        }
        for (int k = 0; k < 4; k++) y[b].qh[k] = (uint8_t)(qh >> (8 * k));
    }
}

static void quantize_q8_1(block_q8_1 *y, const float *x, int n) {
    for (int b = 0; b < n / QK8_1; b++, x += QK8_1) {
        float amax = 0.0f;
        for (int i = 0; i < QK8_1; i++) amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
        float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        int sum = 0;
        for (int i = 0; i < QK8_1; i++) {
            y[b].qs[i] = (int8_t)kern_round_small(x[i] * id);
            sum += y[b].qs[i];
        }
        y[b].d = kern_f32_to_f16(d);
        y[b].s = kern_f32_to_f16((float)sum * d);
    }
}

static void quantize_q8_K(block_q8_K *y, const float *x, int n) {
    for (int b = 0; b < n / QK_K; b++, x += QK_K) {
        float amax = 0.0f, max = 0.0f;
        for (int i = 0; i < QK_K; i++)
            if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
        if (amax == 0.0f) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        /* -127/max: values stay in -127..127 (the SIMD sign trick needs that) */
        float iscale = -127.0f / max;
        for (int i = 0; i < QK_K; i++) {
            int v = nearest_int(iscale * x[i]);
            y[b].qs[i] = (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
        }
        for (int j = 0; j < QK_K / 16; j++) {
            int s = 0;
            for (int i = 0; i < 16; i++) s += y[b].qs[16 * j + i];
            y[b].bsums[j] = (int16_t)s;
        }
        y[b].d = 1.0f / iscale;
    }
}

/*
 * K-quant weights with a min (Q4_K: nmax 15, Q5_K: nmax 31): per sub-block
 * of 32, scale = (max - min) / nmax and offset = -min (min clamped to <= 0);
 * both go to 6 bits against the super-block d and dmin; q is then chosen
 * with the rounded scales, so the stored values are the best for them.
 */
static void quantize_k_min(uint16_t *d_out, uint16_t *dmin_out, uint8_t *scales, uint8_t *L, const float *x,
                           int nmax) {
    float sc[8], mn[8], max_sc = 0.0f, max_mn = 0.0f;
    for (int j = 0; j < 8; j++) {
        const float *xs = x + 32 * j;
        float lo = xs[0], hi = xs[0];
        for (int i = 1; i < 32; i++) lo = xs[i] < lo ? xs[i] : lo, hi = xs[i] > hi ? xs[i] : hi;
        if (lo > 0.0f) lo = 0.0f;
        sc[j] = (hi - lo) / nmax;
        mn[j] = -lo;
        max_sc = sc[j] > max_sc ? sc[j] : max_sc;
        max_mn = mn[j] > max_mn ? mn[j] : max_mn;
    }
    float d = max_sc / 63.0f, dmin = max_mn / 63.0f;
    *d_out = kern_f32_to_f16(d);
    *dmin_out = kern_f32_to_f16(dmin);
    d = kern_f16_to_f32(*d_out);
    dmin = kern_f16_to_f32(*dmin_out);
    memset(scales, 0, K_SCALE_SIZE);
    for (int j = 0; j < 8; j++) {
        int ls = d > 0.0f ? nearest_int(sc[j] / d) : 0, lm = dmin > 0.0f ? nearest_int(mn[j] / dmin) : 0;
        ls = ls > 63 ? 63 : ls < 0 ? 0 : ls;
        lm = lm > 63 ? 63 : lm < 0 ? 0 : lm;
        pack_scale_min_k4(j, scales, ls, lm);
        float ds = d * ls, dm = dmin * lm;
        for (int i = 0; i < 32; i++) {
            int q = ds > 0.0f ? nearest_int((x[32 * j + i] + dm) / ds) : 0;
            L[32 * j + i] = (uint8_t)(q > nmax ? nmax : q < 0 ? 0 : q);
        }
    }
}

static void quantize_q4_K(block_q4_K *y, const float *x, int n) {
    uint8_t L[QK_K];
    for (int b = 0; b < n / QK_K; b++, x += QK_K) {
        quantize_k_min(&y[b].d, &y[b].dmin, y[b].scales, L, x, 15);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                y[b].qs[32 * c + l] = (uint8_t)(L[64 * c + l] | (L[64 * c + 32 + l] << 4));
    }
}

static void quantize_q5_K(block_q5_K *y, const float *x, int n) {
    uint8_t L[QK_K];
    for (int b = 0; b < n / QK_K; b++, x += QK_K) {
        quantize_k_min(&y[b].d, &y[b].dmin, y[b].scales, L, x, 31);
        memset(y[b].qh, 0, sizeof y[b].qh);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++) {
                int lo = L[64 * c + l], hi = L[64 * c + 32 + l];
                y[b].qs[32 * c + l] = (uint8_t)((lo & 15) | ((hi & 15) << 4));
                y[b].qh[l] = (uint8_t)(y[b].qh[l] | ((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
            }
    }
}

/* Q6_K: per sub-block of 16, scale = amax / 31 rounded to int8 against d =
 * max scale / 127; q = round(x / (d * sc)) in -32..31. */
static void quantize_q6_K(block_q6_K *y, const float *x, int n) {
    uint8_t L[QK_K];
    for (int b = 0; b < n / QK_K; b++, x += QK_K) {
        float sc[16], max_sc = 0.0f;
        for (int j = 0; j < 16; j++) {
            float amax = 0.0f;
            for (int i = 0; i < 16; i++) amax = fmaxf(amax, fabsf(x[16 * j + i]));
            sc[j] = amax / 31.0f;
            max_sc = sc[j] > max_sc ? sc[j] : max_sc;
        }
        y[b].d = kern_f32_to_f16(max_sc / 127.0f);
        float d = kern_f16_to_f32(y[b].d);
        for (int j = 0; j < 16; j++) {
            int ls = d > 0.0f ? nearest_int(sc[j] / d) : 0;
            ls = ls > 127 ? 127 : ls;
            y[b].scales[j] = (int8_t)ls;
            float ds = d * ls;
            for (int i = 0; i < 16; i++) {
                int q = ds > 0.0f ? nearest_int(x[16 * j + i] / ds) : 0;
                q = q > 31 ? 31 : q < -32 ? -32 : q;
                L[16 * j + i] = (uint8_t)(q + 32);
            }
        }
        for (int h = 0; h < 2; h++) {
            uint8_t *ql = y[b].ql + 64 * h, *qh = y[b].qh + 32 * h;
            const uint8_t *Lh = L + 128 * h;
            for (int l = 0; l < 32; l++) {
                int q1 = Lh[l], q2 = Lh[l + 32], q3 = Lh[l + 64], q4 = Lh[l + 96];
                ql[l] = (uint8_t)((q1 & 15) | ((q3 & 15) << 4));
                ql[l + 32] = (uint8_t)((q2 & 15) | ((q4 & 15) << 4));
                qh[l] = (uint8_t)((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
            }
        }
    }
}

/* The element order of Q2_K/Q3_K's 2-bit field: element 128h + 32s + l
 * lives in qs[32h + l] at bits 2s. L holds 0..3 per element. */
static void pack_2bit(uint8_t *qs, const uint8_t *L) {
    memset(qs, 0, QK_K / 4);
    for (int h = 0; h < 2; h++)
        for (int sh = 0; sh < 4; sh++)
            for (int l = 0; l < 32; l++)
                qs[32 * h + l] = (uint8_t)(qs[32 * h + l] | (L[128 * h + 32 * sh + l] & 3) << (2 * sh));
}

/* Q2_K: per sub-block of 16, scale = (max - min) / 3 and offset -min (min
 * clamped to <= 0), both to 4 bits against d = max scale / 15 and dmin =
 * max offset / 15; the scale is then refitted to the rounded offset. */
static void quantize_q2_K(block_q2_K *y, const float *x, int n) {
    uint8_t L[QK_K];
    for (int b = 0; b < n / QK_K; b++, x += QK_K) {
        float sc[16], mn[16], hi[16], max_sc = 0.0f, max_mn = 0.0f;
        for (int j = 0; j < 16; j++) {
            const float *xs = x + 16 * j;
            float lo = xs[0], h = xs[0];
            for (int i = 1; i < 16; i++) lo = xs[i] < lo ? xs[i] : lo, h = xs[i] > h ? xs[i] : h;
            if (lo > 0.0f) lo = 0.0f;
            sc[j] = (h - lo) / 3.0f;
            mn[j] = -lo;
            hi[j] = h;
            max_sc = sc[j] > max_sc ? sc[j] : max_sc;
            max_mn = mn[j] > max_mn ? mn[j] : max_mn;
        }
        y[b].d = kern_f32_to_f16(max_sc / 15.0f);
        y[b].dmin = kern_f32_to_f16(max_mn / 15.0f);
        float d = h2f(y[b].d), dmin = h2f(y[b].dmin);
        for (int j = 0; j < 16; j++) {
            int lm = dmin > 0.0f ? nearest_int(mn[j] / dmin) : 0;
            lm = lm > 15 ? 15 : lm < 0 ? 0 : lm;
            float dm = dmin * lm;
            int ls = d > 0.0f ? nearest_int((hi[j] + dm) / (3.0f * d)) : 0;
            ls = ls > 15 ? 15 : ls < 0 ? 0 : ls;
            y[b].scales[j] = (uint8_t)(ls | lm << 4);
            float ds = d * ls;
            for (int i = 0; i < 16; i++) {
                int q = ds > 0.0f ? nearest_int((x[16 * j + i] + dm) / ds) : 0;
                L[16 * j + i] = (uint8_t)(q > 3 ? 3 : q < 0 ? 0 : q);
            }
        }
        pack_2bit(y[b].qs, L);
    }
}

/* the element of largest magnitude, with its sign */
static float signed_amax(const float *x, int n) {
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++)
        if (fabsf(x[i]) > amax) amax = fabsf(x[i]), max = x[i];
    return max;
}

/* Q3_K: per sub-block of 16, the signed max maps to q = -4 (scale max / -4);
 * the scales go to 6 signed bits against d, the largest one to -32. */
static void quantize_q3_K(block_q3_K *y, const float *x, int n) {
    uint8_t L[QK_K];
    for (int b = 0; b < n / QK_K; b++, x += QK_K) {
        float sc[16];
        for (int j = 0; j < 16; j++) sc[j] = signed_amax(x + 16 * j, 16) / -4.0f;
        y[b].d = kern_f32_to_f16(signed_amax(sc, 16) / -32.0f);
        float d = h2f(y[b].d);
        memset(y[b].scales, 0, sizeof y[b].scales);
        memset(y[b].hmask, 0, sizeof y[b].hmask);
        for (int j = 0; j < 16; j++) {
            int ls = d != 0.0f ? nearest_int(sc[j] / d) : 0;
            ls = ls > 31 ? 31 : ls < -32 ? -32 : ls;
            pack_scale_q3_K(j, y[b].scales, ls + 32);
            float ds = d * ls;
            for (int i = 0; i < 16; i++) {
                int q = ds != 0.0f ? nearest_int(x[16 * j + i] / ds) : 0;
                L[16 * j + i] = (uint8_t)((q > 3 ? 3 : q < -4 ? -4 : q) + 4);
            }
        }
        /* L = q + 4: low 2 bits to qs, bit 2 (set: no -4) to hmask */
        for (int e = 0; e < QK_K; e++)
            if (L[e] & 4) {
                int h = e / 128, sh = (e % 128) / 32, l = e % 32;
                y[b].hmask[l] = (uint8_t)(y[b].hmask[l] | 1 << (4 * h + sh));
            }
        pack_2bit(y[b].qs, L);
    }
}

/* the index of the IQ4 grid value nearest v (ties to the lower index) */
static int iq4_nearest(float v) {
    int best = 0;
    float err = fabsf(v - kern_iq4nl_values[0]);
    for (int k = 1; k < 16; k++) {
        float e = fabsf(v - kern_iq4nl_values[k]);
        if (e < err) err = e, best = k;
    }
    return best;
}

/* 32 values on the IQ4 grid at scale d, nibbles in Q4_0 order */
static void iq4_pack32(uint8_t *qs, const float *x, float d) {
    float id = d != 0.0f ? 1.0f / d : 0.0f;
    for (int i = 0; i < 16; i++)
        qs[i] = (uint8_t)(iq4_nearest(x[i] * id) | iq4_nearest(x[i + 16] * id) << 4);
}

/* IQ4_NL: the signed max maps to the grid's -127 */
static void quantize_iq4_nl(block_iq4_nl *y, const float *x, int n) {
    for (int b = 0; b < n / QK4_NL; b++, x += QK4_NL) {
        y[b].d = kern_f32_to_f16(signed_amax(x, QK4_NL) / -127.0f);
        iq4_pack32(y[b].qs, x, h2f(y[b].d));
    }
}

/* IQ4_XS: per sub-block of 32 a scale as IQ4_NL's, to 6 signed bits against
 * d (the largest scale to -32) */
static void quantize_iq4_xs(block_iq4_xs *y, const float *x, int n) {
    for (int b = 0; b < n / QK_K; b++, x += QK_K) {
        float sc[8];
        for (int j = 0; j < 8; j++) sc[j] = signed_amax(x + 32 * j, 32) / -127.0f;
        y[b].d = kern_f32_to_f16(signed_amax(sc, 8) / -32.0f);
        float d = h2f(y[b].d);
        y[b].scales_h = 0;
        memset(y[b].scales_l, 0, sizeof y[b].scales_l);
        for (int j = 0; j < 8; j++) {
            int ls = d != 0.0f ? nearest_int(sc[j] / d) : 0;
            ls = (ls > 31 ? 31 : ls < -32 ? -32 : ls) + 32;
            y[b].scales_l[j / 2] = (uint8_t)(y[b].scales_l[j / 2] | (ls & 15) << (4 * (j % 2)));
            y[b].scales_h = (uint16_t)(y[b].scales_h | (ls >> 4) << (2 * j));
            iq4_pack32(y[b].qs + 16 * j, x + 32 * j, d * (float)(ls - 32));
        }
    }
}

int kern_quantize(int type, void *out, const float *x, int n) {
    switch (type) {
    case GGML_Q4_0: quantize_q4_0(out, x, n); return 0;
    case GGML_Q4_1: quantize_q4_1(out, x, n); return 0;
    case GGML_Q5_0: quantize_q5_0(out, x, n); return 0;
    case GGML_Q5_1: quantize_q5_1(out, x, n); return 0;
    case GGML_Q8_0: kern_quantize_q8_0(out, x, n); return 0;
    case GGML_Q8_1: quantize_q8_1(out, x, n); return 0;
    case GGML_Q4_K: quantize_q4_K(out, x, n); return 0;
    case GGML_Q5_K: quantize_q5_K(out, x, n); return 0;
    case GGML_Q6_K: quantize_q6_K(out, x, n); return 0;
    case GGML_Q8_K: quantize_q8_K(out, x, n); return 0;
    case GGML_Q2_K: quantize_q2_K(out, x, n); return 0;
    case GGML_Q3_K: quantize_q3_K(out, x, n); return 0;
    case GGML_IQ4_NL: quantize_iq4_nl(out, x, n); return 0;
    case GGML_IQ4_XS: quantize_iq4_xs(out, x, n); return 0;
    default: return -1;
    }
}

/* -------------------------------------------------------- dequantization */

static void dequant_q4_0(float *y, const block_q4_0 *x, int n) {
    for (int b = 0; b < n / QK4_0; b++, y += QK4_0) {
        float d = h2f(x[b].d);
        for (int i = 0; i < 16; i++) {
            y[i] = d * (float)((x[b].qs[i] & 15) - 8);
            y[i + 16] = d * (float)((x[b].qs[i] >> 4) - 8);
        }
    }
}

static void dequant_q4_1(float *y, const block_q4_1 *x, int n) {
    for (int b = 0; b < n / QK4_1; b++, y += QK4_1) {
        float d = h2f(x[b].d), m = h2f(x[b].m);
        for (int i = 0; i < 16; i++) {
            y[i] = d * (float)(x[b].qs[i] & 15) + m;
            y[i + 16] = d * (float)(x[b].qs[i] >> 4) + m;
        }
    }
}

static uint32_t load_u32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void dequant_q5_0(float *y, const block_q5_0 *x, int n) {
    for (int b = 0; b < n / QK5_0; b++, y += QK5_0) {
        float d = h2f(x[b].d);
        uint32_t qh = load_u32le(x[b].qh);
        for (int i = 0; i < 16; i++) {
            int q0 = (x[b].qs[i] & 15) | (int)(((qh >> i) & 1) << 4);
            int q1 = (x[b].qs[i] >> 4) | (int)(((qh >> (i + 16)) & 1) << 4);
            y[i] = d * (float)(q0 - 16);
            y[i + 16] = d * (float)(q1 - 16);
        }
    }
}

static void dequant_q5_1(float *y, const block_q5_1 *x, int n) {
    for (int b = 0; b < n / QK5_1; b++, y += QK5_1) {
        float d = h2f(x[b].d), m = h2f(x[b].m);
        uint32_t qh = load_u32le(x[b].qh);
        for (int i = 0; i < 16; i++) {
            int q0 = (x[b].qs[i] & 15) | (int)(((qh >> i) & 1) << 4);
            int q1 = (x[b].qs[i] >> 4) | (int)(((qh >> (i + 16)) & 1) << 4);
            y[i] = d * (float)q0 + m;
            y[i + 16] = d * (float)q1 + m;
        }
    }
}

static void dequant_q8_1(float *y, const block_q8_1 *x, int n) {
    for (int b = 0; b < n / QK8_1; b++, y += QK8_1) {
        float d = h2f(x[b].d);
        for (int i = 0; i < QK8_1; i++) y[i] = d * (float)x[b].qs[i];
    }
}

static void dequant_q4_K(float *y, const block_q4_K *x, int n) {
    for (int b = 0; b < n / QK_K; b++) {
        float d = h2f(x[b].d), dmin = h2f(x[b].dmin);
        for (int c = 0; c < 4; c++, y += 64) {
            uint8_t s0, m0, s1, m1;
            kern_scale_min_k4(2 * c, x[b].scales, &s0, &m0);
            kern_scale_min_k4(2 * c + 1, x[b].scales, &s1, &m1);
            float d0 = d * s0, mm0 = dmin * m0, d1 = d * s1, mm1 = dmin * m1;
            const uint8_t *q = x[b].qs + 32 * c;
            for (int l = 0; l < 32; l++) {
                y[l] = d0 * (float)(q[l] & 15) - mm0;
                y[l + 32] = d1 * (float)(q[l] >> 4) - mm1;
            }
        }
    }
}

static void dequant_q5_K(float *y, const block_q5_K *x, int n) {
    for (int b = 0; b < n / QK_K; b++) {
        float d = h2f(x[b].d), dmin = h2f(x[b].dmin);
        for (int c = 0; c < 4; c++, y += 64) {
            uint8_t s0, m0, s1, m1;
            kern_scale_min_k4(2 * c, x[b].scales, &s0, &m0);
            kern_scale_min_k4(2 * c + 1, x[b].scales, &s1, &m1);
            float d0 = d * s0, mm0 = dmin * m0, d1 = d * s1, mm1 = dmin * m1;
            const uint8_t *q = x[b].qs + 32 * c, *qh = x[b].qh;
            for (int l = 0; l < 32; l++) {
                int lo = (q[l] & 15) | (((qh[l] >> (2 * c)) & 1) << 4);
                int hi = (q[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4);
                y[l] = d0 * (float)lo - mm0;
                y[l + 32] = d1 * (float)hi - mm1;
            }
        }
    }
}

static void dequant_q6_K(float *y, const block_q6_K *x, int n) {
    for (int b = 0; b < n / QK_K; b++) {
        float d = h2f(x[b].d);
        for (int h = 0; h < 2; h++, y += 128) {
            const uint8_t *ql = x[b].ql + 64 * h, *qh = x[b].qh + 32 * h;
            const int8_t *sc = x[b].scales + 8 * h;
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                int q1 = ((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                y[l] = d * sc[is] * (float)q1;
                y[l + 32] = d * sc[is + 2] * (float)q2;
                y[l + 64] = d * sc[is + 4] * (float)q3;
                y[l + 96] = d * sc[is + 6] * (float)q4;
            }
        }
    }
}

static void dequant_q8_K(float *y, const block_q8_K *x, int n) {
    for (int b = 0; b < n / QK_K; b++, y += QK_K)
        for (int i = 0; i < QK_K; i++) y[i] = x[b].d * (float)x[b].qs[i];
}

static void dequant_q2_K(float *y, const block_q2_K *x, int n) {
    for (int b = 0; b < n / QK_K; b++, y += QK_K) {
        float d = h2f(x[b].d), dmin = h2f(x[b].dmin);
        for (int e = 0; e < QK_K; e++) {
            int h = e / 128, sh = (e % 128) / 32, l = e % 32, j = 8 * h + 2 * sh + l / 16;
            int q = (x[b].qs[32 * h + l] >> (2 * sh)) & 3;
            y[e] = d * (float)(x[b].scales[j] & 15) * (float)q - dmin * (float)(x[b].scales[j] >> 4);
        }
    }
}

/* Q3_K's q of element e (-4..3) */
static int q3_K_value(const block_q3_K *x, int e) {
    int h = e / 128, sh = (e % 128) / 32, l = e % 32;
    int q = (x->qs[32 * h + l] >> (2 * sh)) & 3;
    return q - ((x->hmask[l] >> (4 * h + sh)) & 1 ? 0 : 4);
}

static void dequant_q3_K(float *y, const block_q3_K *x, int n) {
    for (int b = 0; b < n / QK_K; b++, y += QK_K) {
        float d = h2f(x[b].d);
        for (int e = 0; e < QK_K; e++) {
            int h = e / 128, sh = (e % 128) / 32, l = e % 32, j = 8 * h + 2 * sh + l / 16;
            y[e] = d * (float)(kern_scale_q3_K(j, x[b].scales) - 32) * (float)q3_K_value(&x[b], e);
        }
    }
}

static void dequant_iq4_nl(float *y, const block_iq4_nl *x, int n) {
    for (int b = 0; b < n / QK4_NL; b++, y += QK4_NL) {
        float d = h2f(x[b].d);
        for (int i = 0; i < 16; i++) {
            y[i] = d * (float)kern_iq4nl_values[x[b].qs[i] & 15];
            y[i + 16] = d * (float)kern_iq4nl_values[x[b].qs[i] >> 4];
        }
    }
}

static void dequant_iq4_xs(float *y, const block_iq4_xs *x, int n) {
    for (int b = 0; b < n / QK_K; b++) {
        float d = h2f(x[b].d);
        for (int j = 0; j < 8; j++, y += 32) {
            float dl = d * (float)(iq4_xs_scale(&x[b], j) - 32);
            const uint8_t *q = x[b].qs + 16 * j;
            for (int i = 0; i < 16; i++) {
                y[i] = dl * (float)kern_iq4nl_values[q[i] & 15];
                y[i + 16] = dl * (float)kern_iq4nl_values[q[i] >> 4];
            }
        }
    }
}

int kern_dequant_quant(float *out, const void *row, int type, int n) {
    switch (type) {
    case GGML_Q4_0: dequant_q4_0(out, row, n); return 0;
    case GGML_Q4_1: dequant_q4_1(out, row, n); return 0;
    case GGML_Q5_0: dequant_q5_0(out, row, n); return 0;
    case GGML_Q5_1: dequant_q5_1(out, row, n); return 0;
    case GGML_Q8_1: dequant_q8_1(out, row, n); return 0;
    case GGML_Q4_K: dequant_q4_K(out, row, n); return 0;
    case GGML_Q5_K: dequant_q5_K(out, row, n); return 0;
    case GGML_Q6_K: dequant_q6_K(out, row, n); return 0;
    case GGML_Q8_K: dequant_q8_K(out, row, n); return 0;
    case GGML_Q2_K: dequant_q2_K(out, row, n); return 0;
    case GGML_Q3_K: dequant_q3_K(out, row, n); return 0;
    case GGML_IQ4_NL: dequant_iq4_nl(out, row, n); return 0;
    case GGML_IQ4_XS: dequant_iq4_xs(out, row, n); return 0;
    default: return -1;
    }
}

/* ---------------------------------------------------------- activations */

int kern_act_type(int w_type) {
    switch (w_type) {
    case GGML_Q4_0:
    case GGML_Q5_0:
    case GGML_Q8_0:
    case GGML_IQ4_NL: return GGML_Q8_0;
    case GGML_Q4_1:
    case GGML_Q5_1: return GGML_Q8_1;
    case GGML_Q2_K:
    case GGML_Q3_K:
    case GGML_Q4_K:
    case GGML_Q5_K:
    case GGML_Q6_K:
    case GGML_IQ4_XS: return GGML_Q8_K;
    default: return -1;
    }
}

size_t kern_act_row_bytes(int w_type, int n) {
    int a = kern_act_type(w_type);
    return a < 0 ? 0 : kern_row_bytes(a, n);
}

void kern_quantize_act(void *out, const float *x, int w_type, int n) {
    int a = kern_act_type(w_type);
    if (a >= 0) kern_quantize(a, out, x, n);
}

void kern_quantize_act_ops(const kern_ops *ops, void *out, const float *x, int w_type, int n) {
    if (kern_act_type(w_type) == GGML_Q8_0 && ops && ops->quantize_q8_0)
        ops->quantize_q8_0(out, x, n);
    else
        kern_quantize_act(out, x, w_type, n);
}

/* ------------------------------------------------------ scalar dot products */

/* sum over a block of 32 of wq[i] * xq[i], for 4-bit nibbles in Q4 order plus a bias */
static int dot_nib32(const uint8_t *qs, uint32_t qh, int has_qh, int bias, const int8_t *x) {
    int s = 0;
    for (int i = 0; i < 16; i++) {
        int q0 = (qs[i] & 15) | (has_qh ? (int)(((qh >> i) & 1) << 4) : 0);
        int q1 = (qs[i] >> 4) | (has_qh ? (int)(((qh >> (i + 16)) & 1) << 4) : 0);
        s += (q0 - bias) * x[i] + (q1 - bias) * x[i + 16];
    }
    return s;
}

float kern_vec_dot_q4_0_ref(const void *vw, const void *vx, int n) {
    const block_q4_0 *w = vw;
    const block_q8_0 *x = vx;
    float s = 0.0f;
    for (int b = 0; b < n / QK4_0; b++)
        s += (float)dot_nib32(w[b].qs, 0, 0, 8, x[b].qs) * (h2f(w[b].d) * h2f(x[b].d));
    return s;
}

float kern_vec_dot_q4_1_ref(const void *vw, const void *vx, int n) {
    const block_q4_1 *w = vw;
    const block_q8_1 *x = vx;
    float s = 0.0f;
    for (int b = 0; b < n / QK4_1; b++)
        s += (float)dot_nib32(w[b].qs, 0, 0, 0, x[b].qs) * (h2f(w[b].d) * h2f(x[b].d)) +
             h2f(w[b].m) * h2f(x[b].s);
    return s;
}

float kern_vec_dot_q5_0_ref(const void *vw, const void *vx, int n) {
    const block_q5_0 *w = vw;
    const block_q8_0 *x = vx;
    float s = 0.0f;
    for (int b = 0; b < n / QK5_0; b++)
        s += (float)dot_nib32(w[b].qs, load_u32le(w[b].qh), 1, 16, x[b].qs) * (h2f(w[b].d) * h2f(x[b].d));
    return s;
}

float kern_vec_dot_q5_1_ref(const void *vw, const void *vx, int n) {
    const block_q5_1 *w = vw;
    const block_q8_1 *x = vx;
    float s = 0.0f;
    for (int b = 0; b < n / QK5_1; b++)
        s += (float)dot_nib32(w[b].qs, load_u32le(w[b].qh), 1, 0, x[b].qs) * (h2f(w[b].d) * h2f(x[b].d)) +
             h2f(w[b].m) * h2f(x[b].s);
    return s;
}

float kern_vec_dot_q8_0_ref(const void *vw, const void *vx, int n) {
    const block_q8_0 *w = vw, *x = vx;
    float s = 0.0f;
    for (int b = 0; b < n / QK8_0; b++) {
        int sumi = 0;
        for (int i = 0; i < QK8_0; i++) sumi += w[b].qs[i] * x[b].qs[i];
        s += (float)sumi * (h2f(w[b].d) * h2f(x[b].d));
    }
    return s;
}

/* Q4_K and Q5_K share everything but the fifth bit (qh NULL for Q4_K):
 * d*xd * sum_j sc_j * sum(q * x) - dmin*xd * sum_j m_j * (sum of x over j). */
static float dot_k_min(uint16_t dw, uint16_t dminw, const uint8_t *scales, const uint8_t *qs, const uint8_t *qh,
                       const block_q8_K *x) {
    int sumi = 0, summ = 0;
    for (int c = 0; c < 4; c++) {
        uint8_t s0, m0, s1, m1;
        kern_scale_min_k4(2 * c, scales, &s0, &m0);
        kern_scale_min_k4(2 * c + 1, scales, &s1, &m1);
        const int8_t *xs = x->qs + 64 * c;
        int p0 = 0, p1 = 0;
        for (int l = 0; l < 32; l++) {
            int lo = qs[32 * c + l] & 15, hi = qs[32 * c + l] >> 4;
            if (qh) lo |= ((qh[l] >> (2 * c)) & 1) << 4, hi |= ((qh[l] >> (2 * c + 1)) & 1) << 4;
            p0 += lo * xs[l];
            p1 += hi * xs[l + 32];
        }
        sumi += s0 * p0 + s1 * p1;
        summ += m0 * (x->bsums[4 * c] + x->bsums[4 * c + 1]) + m1 * (x->bsums[4 * c + 2] + x->bsums[4 * c + 3]);
    }
    return h2f(dw) * x->d * (float)sumi - h2f(dminw) * x->d * (float)summ;
}

float kern_vec_dot_q4_K_ref(const void *vw, const void *vx, int n) {
    const block_q4_K *w = vw;
    const block_q8_K *x = vx;
    float s = 0.0f;
    for (int b = 0; b < n / QK_K; b++) s += dot_k_min(w[b].d, w[b].dmin, w[b].scales, w[b].qs, NULL, &x[b]);
    return s;
}

float kern_vec_dot_q5_K_ref(const void *vw, const void *vx, int n) {
    const block_q5_K *w = vw;
    const block_q8_K *x = vx;
    float s = 0.0f;
    for (int b = 0; b < n / QK_K; b++) s += dot_k_min(w[b].d, w[b].dmin, w[b].scales, w[b].qs, w[b].qh, &x[b]);
    return s;
}

float kern_vec_dot_q6_K_ref(const void *vw, const void *vx, int n) {
    const block_q6_K *w = vw;
    const block_q8_K *x = vx;
    float s = 0.0f;
    for (int b = 0; b < n / QK_K; b++) {
        int sumi = 0;
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = w[b].ql + 64 * h, *qh = w[b].qh + 32 * h;
            const int8_t *sc = w[b].scales + 8 * h, *xs = x[b].qs + 128 * h;
            int p[8] = {0};
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                p[is] += (((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32) * xs[l];
                p[is + 2] += (((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32) * xs[l + 32];
                p[is + 4] += (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32) * xs[l + 64];
                p[is + 6] += (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32) * xs[l + 96];
            }
            for (int j = 0; j < 8; j++) sumi += sc[j] * p[j];
        }
        s += h2f(w[b].d) * x[b].d * (float)sumi;
    }
    return s;
}

/* Q2_K: d*xd * sum_j sc_j * sum(q * x) - dmin*xd * sum_j m_j * bsums[j] */
float kern_vec_dot_q2_K_ref(const void *vw, const void *vx, int n) {
    const block_q2_K *w = vw;
    const block_q8_K *x = vx;
    float s = 0.0f;
    for (int b = 0; b < n / QK_K; b++) {
        int p[16] = {0}, sumi = 0, summ = 0;
        for (int e = 0; e < QK_K; e++) {
            int h = e / 128, sh = (e % 128) / 32, l = e % 32;
            p[8 * h + 2 * sh + l / 16] += ((w[b].qs[32 * h + l] >> (2 * sh)) & 3) * x[b].qs[e];
        }
        for (int j = 0; j < 16; j++) {
            sumi += (w[b].scales[j] & 15) * p[j];
            summ += (w[b].scales[j] >> 4) * x[b].bsums[j];
        }
        s += h2f(w[b].d) * x[b].d * (float)sumi - h2f(w[b].dmin) * x[b].d * (float)summ;
    }
    return s;
}

float kern_vec_dot_q3_K_ref(const void *vw, const void *vx, int n) {
    const block_q3_K *w = vw;
    const block_q8_K *x = vx;
    float s = 0.0f;
    for (int b = 0; b < n / QK_K; b++) {
        int p[16] = {0}, sumi = 0;
        for (int e = 0; e < QK_K; e++) {
            int h = e / 128, sh = (e % 128) / 32, l = e % 32;
            p[8 * h + 2 * sh + l / 16] += q3_K_value(&w[b], e) * x[b].qs[e];
        }
        for (int j = 0; j < 16; j++) sumi += (kern_scale_q3_K(j, w[b].scales) - 32) * p[j];
        s += h2f(w[b].d) * x[b].d * (float)sumi;
    }
    return s;
}

/* sum over 32 elements of grid[q] * x, nibbles in Q4_0 order */
static int dot_iq4_32(const uint8_t *qs, const int8_t *x) {
    int s = 0;
    for (int i = 0; i < 16; i++)
        s += kern_iq4nl_values[qs[i] & 15] * x[i] + kern_iq4nl_values[qs[i] >> 4] * x[i + 16];
    return s;
}

float kern_vec_dot_iq4_nl_ref(const void *vw, const void *vx, int n) {
    const block_iq4_nl *w = vw;
    const block_q8_0 *x = vx;
    float s = 0.0f;
    for (int b = 0; b < n / QK4_NL; b++) s += (float)dot_iq4_32(w[b].qs, x[b].qs) * (h2f(w[b].d) * h2f(x[b].d));
    return s;
}

float kern_vec_dot_iq4_xs_ref(const void *vw, const void *vx, int n) {
    const block_iq4_xs *w = vw;
    const block_q8_K *x = vx;
    float s = 0.0f;
    for (int b = 0; b < n / QK_K; b++) {
        int sumi = 0;
        for (int j = 0; j < 8; j++) sumi += (iq4_xs_scale(&w[b], j) - 32) * dot_iq4_32(w[b].qs + 16 * j, x[b].qs + 32 * j);
        s += h2f(w[b].d) * x[b].d * (float)sumi;
    }
    return s;
}
