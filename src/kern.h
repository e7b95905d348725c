/*
 * kern - the numeric kernels of the forward pass.
 *
 * Every kernel exists as a plain scalar reference (kern.c; the block formats
 * in kern_quant.c), which is the oracle, and as SIMD variants (kern_avx2.c,
 * kern_avx512.c: compiled with their own target flags, both including the
 * block-format kernels of kern_quant_simd.h) chosen at run time by CPU
 * detection. Kernels are
 * pure: output first, no allocation, no threads, no knowledge of models or
 * files. Threading is the caller's (see pool.h): kernels work on row ranges.
 *
 * Weight matrices are ggml-style: n_out rows of n_in elements, rows
 * contiguous. Types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K,
 * Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS, with GGML's block layouts byte for
 * byte (below). For quantized weights the activations are first quantized to
 * the matching 8-bit format (kern_act_type: Q8_0 for Q4_0/Q5_0/Q8_0/IQ4_NL,
 * Q8_1 for Q4_1/Q5_1, Q8_K for the K-quants and IQ4_XS, as the reference
 * engine does) and the dot products run on integers; only the block scales
 * are applied in float.
 *
 * All halves (d, dmin, m, s) are IEEE f16; everything is little-endian.
 */
#ifndef HEED_KERN_H
#define HEED_KERN_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ggml_types.h" /* enum ggml_type, elements per block (QK*) */

/* Q8_0 block: 32 int8 values and one f16 scale d; value i is d * qs[i]. */
typedef struct block_q8_0 {
    uint16_t d; /* IEEE half */
    int8_t qs[QK8_0];
} block_q8_0;

_Static_assert(sizeof(block_q8_0) == 34, "Q8_0 block must be 34 bytes as in GGUF");

#define K_SCALE_SIZE 12 /* bytes of a Q4_K/Q5_K block's packed 6-bit scales and mins */

/* Q4_0: x[i] = d * ((qs[i] & 15) - 8), x[i + 16] = d * ((qs[i] >> 4) - 8), i < 16 */
typedef struct block_q4_0 {
    uint16_t d;
    uint8_t qs[QK4_0 / 2];
} block_q4_0;

/* Q4_1: x = d * q + m, the nibble order of Q4_0 */
typedef struct block_q4_1 {
    uint16_t d, m;
    uint8_t qs[QK4_1 / 2];
} block_q4_1;

/* Q5_0: q = nibble as in Q4_0 | bit j of qh (a little-endian u32) << 4 for
 * element j; x = d * (q - 16) */
typedef struct block_q5_0 {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[QK5_0 / 2];
} block_q5_0;

/* Q5_1: q as in Q5_0; x = d * q + m */
typedef struct block_q5_1 {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[QK5_1 / 2];
} block_q5_1;

/* Q8_1 (activations for Q4_1/Q5_1): x = d * qs[i]; s = d * sum(qs) */
typedef struct block_q8_1 {
    uint16_t d, s;
    int8_t qs[QK8_1];
} block_q8_1;

/*
 * Q4_K: 256 elements in 8 sub-blocks of 32; sub-block j has a 6-bit scale
 * sc_j and a 6-bit min m_j packed in scales[12] (kern_scale_min_k4), and
 * x = d * sc_j * q - dmin * m_j. qs holds four 64-element chunks of 32
 * bytes: the low nibbles are the chunk's first 32 elements (sub-block 2c),
 * the high nibbles the next 32 (sub-block 2c + 1).
 */
typedef struct block_q4_K {
    uint16_t d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qs[QK_K / 2];
} block_q4_K;

/* Q5_K: Q4_K plus a fifth bit: element 64c + l (l < 32) takes bit 2c of
 * qh[l], element 64c + 32 + l bit 2c + 1. */
typedef struct block_q5_K {
    uint16_t d, dmin;
    uint8_t scales[K_SCALE_SIZE];
    uint8_t qh[QK_K / 8];
    uint8_t qs[QK_K / 2];
} block_q5_K;

/*
 * Q6_K: 16 sub-blocks of 16 with int8 scales; x = d * scales[e / 16] * (q - 32).
 * For each 128-element half h (ql += 64h, qh += 32h), l < 32:
 *   q[l]      = (ql[l] & 15)      | ((qh[l] >> 0) & 3) << 4
 *   q[l + 32] = (ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4
 *   q[l + 64] = (ql[l] >> 4)      | ((qh[l] >> 4) & 3) << 4
 *   q[l + 96] = (ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4
 */
typedef struct block_q6_K {
    uint8_t ql[QK_K / 2];
    uint8_t qh[QK_K / 4];
    int8_t scales[QK_K / 16];
    uint16_t d;
} block_q6_K;

/*
 * Q2_K: 16 sub-blocks of 16; scales[j] holds sub-block j's 4-bit scale (low
 * nibble) and 4-bit min (high nibble); x = d * sc_j * q - dmin * m_j with a
 * 2-bit q. For each 128-element half h (qs += 32h) and shift s (0..3),
 * l < 32: element 128h + 32s + l is (qs[32h + l] >> 2s) & 3, in sub-block
 * 8h + 2s + l / 16.
 */
typedef struct block_q2_K {
    uint8_t scales[QK_K / 16];
    uint8_t qs[QK_K / 4];
    uint16_t d, dmin;
} block_q2_K;

/*
 * Q3_K: 16 sub-blocks of 16 with 6-bit scales (kern_scale_q3_K, stored
 * + 32); x = d * (sc_j - 32) * q, q = (low 2 bits) - (high bit clear ? 4 : 0)
 * in -4..3. The 2-bit order is Q2_K's (element 128h + 32s + l: (qs[32h + l]
 * >> 2s) & 3, sub-block 8h + 2s + l / 16); its high bit is bit 4h + s of
 * hmask[l].
 */
typedef struct block_q3_K {
    uint8_t hmask[QK_K / 8];
    uint8_t qs[QK_K / 4];
    uint8_t scales[12];
    uint16_t d;
} block_q3_K;

/* The non-linear 4-bit grid of IQ4_NL and IQ4_XS: q indexes it (int8 values). */
extern const int8_t kern_iq4nl_values[16];

/* IQ4_NL: 32 elements, nibble order of Q4_0; x = d * kern_iq4nl_values[q] */
typedef struct block_iq4_nl {
    uint16_t d;
    uint8_t qs[QK4_NL / 2];
} block_iq4_nl;

/*
 * IQ4_XS: 256 elements in 8 sub-blocks of 32; sub-block j has a 6-bit scale
 * ls_j = (scales_l[j / 2] >> 4 (j % 2)) & 15 | ((scales_h >> 2j) & 3) << 4
 * and x = d * (ls_j - 32) * kern_iq4nl_values[q]; qs + 16j holds sub-block
 * j's nibbles in the order of IQ4_NL (low nibbles: elements 0..15).
 */
typedef struct block_iq4_xs {
    uint16_t d;
    uint16_t scales_h;
    uint8_t scales_l[QK_K / 64];
    uint8_t qs[QK_K / 2];
} block_iq4_xs;

/* Q8_K (activations for the K-quants): x = d * qs[i] (d is f32); bsums[j]
 * = sum of qs[16j .. 16j + 15]. */
typedef struct block_q8_K {
    float d;
    int8_t qs[QK_K];
    int16_t bsums[QK_K / 16];
} block_q8_K;

_Static_assert(sizeof(block_q4_0) == 18, "Q4_0 block must be 18 bytes");
_Static_assert(sizeof(block_q4_1) == 20, "Q4_1 block must be 20 bytes");
_Static_assert(sizeof(block_q5_0) == 22, "Q5_0 block must be 22 bytes");
_Static_assert(sizeof(block_q5_1) == 24, "Q5_1 block must be 24 bytes");
_Static_assert(sizeof(block_q8_1) == 36, "Q8_1 block must be 36 bytes");
_Static_assert(sizeof(block_q2_K) == 84, "Q2_K block must be 84 bytes");
_Static_assert(sizeof(block_q3_K) == 110, "Q3_K block must be 110 bytes");
_Static_assert(sizeof(block_iq4_nl) == 18, "IQ4_NL block must be 18 bytes");
_Static_assert(sizeof(block_iq4_xs) == 136, "IQ4_XS block must be 136 bytes");
_Static_assert(sizeof(block_q4_K) == 144, "Q4_K block must be 144 bytes");
_Static_assert(sizeof(block_q5_K) == 176, "Q5_K block must be 176 bytes");
_Static_assert(sizeof(block_q6_K) == 210, "Q6_K block must be 210 bytes");
_Static_assert(sizeof(block_q8_K) == 292, "Q8_K block must be 292 bytes");

/* Sub-block j (0..7) of a Q4_K/Q5_K scales[12]: 6-bit scale and min. */
void kern_scale_min_k4(int j, const uint8_t *scales, uint8_t *sc, uint8_t *m);
/* Sub-block j (0..15) of a Q3_K scales[12]: the stored 6-bit scale (0..63;
 * the factor is this - 32). Low 4 bits: scales[j] (j < 8) or scales[j - 8] >> 4;
 * high 2 bits: bits 2 (j / 4) of scales[8 + j % 4]. */
int kern_scale_q3_K(int j, const uint8_t *scales);

/*
 * IEEE half <-> float: the one f16 conversion of heed (the SIMD kernels use
 * the CPU's F16C instructions, which agree with it).
 *
 * kern_f16_to_f32 is exact: subnormal halves included, -0 stays -0,
 * infinities stay infinite, a NaN keeps its payload.
 *
 * kern_f32_to_f16 rounds to nearest, ties to even, into the subnormal halves
 * too (2^-25, half the smallest one, becomes 0); |f| >= 65520 (halfway past
 * the largest half, 65504) becomes infinity with f's sign; a NaN keeps the
 * top 10 bits of its payload, and the quiet bit when those are all zero, so
 * it stays a NaN and every half NaN round-trips. Written without branches:
 * float addition does the rounding (the method of Maratyszcza's FP16
 * library), so row loops over it vectorize. Attention weights straddle the
 * half's normal/subnormal edge, where branches mispredict; the summary tiers
 * (astore.c) convert every weight they keep. tests/test_kern.c checks it
 * against hand-computed values and an independent reference.
 */
float kern_f16_to_f32(uint16_t h);
static inline uint16_t kern_f32_to_f16(float f) {
    int32_t w, b;
    memcpy(&w, &f, sizeof w);
    int32_t sign = (w >> 16) & 0x8000, mag = w & 0x7fffffff;
    /* 4|f|; scaling up first turns |f| >= 65520 into infinity */
    float base = fabsf(f) * 0x1.0p+112f * 0x1.0p-110f;
    /* Adding 2^(E + 15), E = max(exponent of |f|, -14), leaves float ulps of
     * 2^(E - 8): the half's ulp at |f|, times 4. So the addition rounds to
     * nearest even just as the half must, normal or subnormal, and the
     * sum's low bits are the half's exponent and mantissa. (Signed 32-bit
     * compares only: baseline x86-64 vectors have no unsigned ones.) */
    int32_t e = mag & 0x7f800000;
    uint32_t bias = (uint32_t)(e < 0x38800000 ? 0x38800000 : e) + 0x07800000u; /* wraps for inf/NaN: unused */
    float add;
    memcpy(&add, &bias, sizeof add);
    base += add;
    memcpy(&b, &base, sizeof b);
    int32_t h = ((b >> 13) & 0x7c00) + (b & 0x0fff);
    /* NaN: the top 10 payload bits, and the quiet bit if they are all zero */
    int32_t man = (w >> 13) & 0x3ff, nan = 0x7c00 | man | (man == 0) << 9;
    int32_t is_nan = -(mag > 0x7f800000); /* masks, not branches, so blocks vectorize */
    return (uint16_t)(sign | (nan & is_nan) | (h & ~is_nan));
}
/* bfloat16 -> float: exact (the top half of the float's bits) */
float kern_bf16_to_f32(uint16_t b);

/* n is a multiple of 32. Scale per block d = max|x| / 127 (stored as f16),
 * q = round(x / d) (round half away from zero), as the reference engine does. */
void kern_quantize_q8_0(block_q8_0 *out, const float *x, int n);

/*
 * Reference quantizers (model writing, tests; not on the forward path for
 * weights). n is a multiple of the type's block (32, or 256 for K-quants
 * and IQ4_XS).
 * Q4_0/Q4_1/Q5_0/Q5_1/Q8_1/Q8_K follow the reference engine's *_ref
 * quantizers; the K-quant and IQ4 weight quantizers are simpler than its
 * iterative search (min/max per sub-block, scales rounded to 4, 6 or 8 bits,
 * the IQ4 grid point nearest to x / scale) but emit the same layout, so any
 * reader dequantizes them identically. Returns 0, or -1
 * for a type it cannot quantize to.
 */
int kern_quantize(int type, void *out, const float *x, int n);

/* Converts one row of n elements of a supported type to f32 (embedding lookup). */
void kern_dequant_row(float *out, const void *row, int type, int n);

/* Bytes of one row of n elements of `type`; 0 for unsupported types. */
size_t kern_row_bytes(int type, int n);

/* The activation format a weight type's dot product wants: GGML_Q8_0,
 * GGML_Q8_1, GGML_Q8_K, or -1 (float activations: F32/F16/BF16). */
int kern_act_type(int w_type);
/* Bytes of one activation row of n elements for weights of w_type (0 for float). */
size_t kern_act_row_bytes(int w_type, int n);
/* Quantizes one row of n activations to kern_act_type(w_type) (no-op for
 * float); with ops, the table's own (bit-identical) quantizer where it has one. */
void kern_quantize_act(void *out, const float *x, int w_type, int n);
struct kern_ops;
void kern_quantize_act_ops(const struct kern_ops *ops, void *out, const float *x, int w_type, int n);

/* Dot product of one quantized weight row with one activation row in
 * kern_act_type(type), n elements. */
typedef float (*kern_vec_dot_fn)(const void *w, const void *xq, int n);
#define KERN_N_QTYPES 24 /* vec_dot is indexed by ggml type id below this (IQ4_XS is 23) */
/* Queries the multi-query attention kernels take together (a caller's
 * natural block size; they accept any n_q). */
#define KERN_ATTN_BLOCK 4

typedef struct kern_ops {
    const char *name; /* "scalar", "avx2", "avx512" */
    /* sum a[i]*b[i] */
    float (*dot_f32)(const float *a, const float *b, int n);
    /* sum f16(w[i]) * x[i] */
    float (*dot_f16)(const uint16_t *w, const float *x, int n);
    /* sum bf16(w[i]) * x[i] */
    float (*dot_bf16)(const uint16_t *w, const float *x, int n);
    /* n a multiple of 32: sum over blocks of d_w*d_x * sum(qw*qx). x must not
     * hold -128 (kern_quantize_q8_0 never makes it): the SIMD sign trick
     * needs |x| <= 127 to stay exact; w may hold any int8. */
    float (*dot_q8_0)(const block_q8_0 *w, const block_q8_0 *x, int n);
    /* y[i] += a * x[i] */
    void (*axpy)(float *y, float a, const float *x, int n);
    /* y[i] *= a */
    void (*scale)(float *y, float a, int n);
    /* A Gram matrix's update (value-weighted attention, model_wo_gram):
     * g[a * hd + c] += sum over rows r < n of x[r][a] * x[r][c], for
     * a, c < hd (the full square), rows of x `stride` floats apart. */
    void (*gram_add)(float *g, const float *x, size_t stride, int n, int hd);
    /* The quadratic form v^T G v of a hd x hd matrix G (row-major) (a value
     * norm squared: v's head through its Gram matrix). */
    float (*quad_form)(const float *g, const float *v, int hd);
    /* Attention scores of one query against n_keys keys (rows of hd floats,
     * k_stride floats apart): out[k] = scale * dot(q, key k). */
    void (*attn_scores)(float *out, const float *q, const float *keys, size_t k_stride, int n_keys, int hd,
                        float scale);
    /* Weighted sum of values: out[d] = sum_k p[k] * value_k[d] (out is
     * overwritten); the scalar reference sums in key order, SIMD variants
     * may sum even and odd keys separately. */
    void (*attn_wsum)(float *out, const float *p, const float *vals, size_t v_stride, int n_keys, int hd);
    /* The same two kernels for a block of n_q queries that share one key (or
     * value) set, as a prompt's queries of one head do, or the heads of one
     * GQA group: row i has its own n_keys[i] (rows of a causal block differ
     * in length) and its own q[i] / out[i] / p[i]. Keys and values are loaded
     * once per KERN_ATTN_BLOCK queries instead of once per query.
     * attn_scores_multi equals attn_scores of the same table row by row, BIT
     * FOR BIT (the recorder recomputes captured rows with attn_scores: each
     * dot keeps its arithmetic, only the work around it is interleaved);
     * attn_wsum_multi equals attn_wsum up to float summation order. */
    void (*attn_scores_multi)(float *const *out, const float *const *q, const int *n_keys, int n_q,
                              const float *keys, size_t k_stride, int hd, float scale);
    void (*attn_wsum_multi)(float *const *out, const float *const *p, const int *n_keys, int n_q,
                            const float *vals, size_t v_stride, int hd);
    /* x = softmax(x) in place, as kern_softmax (the scalar reference); the
     * SIMD variants use a polynomial exp within 2 ulp, flush results below
     * FLT_MIN (x - max < -87.3) to 0, and sum in float lanes. */
    void (*softmax)(float *x, int n);
    /* softmax, the same function (softmax is softmax_mi with mi NULL), also
     * giving the row's statistics: mi[0] = the max score, mi[1] = the
     * reciprocal of the sum it multiplies every entry by (-INFINITY and 0
     * when every entry is masked). With them any single entry is
     * softmax_apply's, bit for bit, without the rest of its row. */
    void (*softmax_mi)(float *x, int n, float *mi);
    /* x[i] = the entry softmax_mi gives score x[i] in a row whose
     * statistics are (mx[i], inv[i]): exp(x[i] - mx[i]) * inv[i] with
     * softmax's exp, 0 where mx[i] is -INFINITY. Each x[i] its own row's: a
     * column of attention from its rows' statistics. */
    void (*softmax_apply)(float *x, int n, const float *mx, const float *inv);
    /* softmax_apply for n entries of one row (statistics mx, inv): the
     * same steps per entry, so the same results. */
    void (*softmax_apply_row)(float *x, int n, float mx, float inv);
    /* The sums of a softmax over a vocabulary of logits, as kern_exp_sums
     * (the scalar reference); the SIMD variant uses the same exp as softmax
     * and sums in double lanes. */
    float (*exp_sums)(const float *x, int n, float *e, double *z, double *zx);
    /* gate = silu(gate) * up, as kern_swiglu (the scalar reference); the SIMD
     * variant uses softmax's exp (within 2 ulp), so each result is within a
     * few ulp, and gate = -inf gives -inf where the reference gives NaN. */
    void (*swiglu)(float *gate, const float *up, int n);
    /* kern_quantize_q8_0, bit for bit (the activation side of most dot
     * products: a serial share of every matmul) */
    void (*quantize_q8_0)(block_q8_0 *out, const float *x, int n);
    /* Per quantized weight type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K .. Q6_K,
     * IQ4_NL, IQ4_XS; NULL elsewhere): row . activations, see kern_vec_dot_fn. */
    kern_vec_dot_fn vec_dot[KERN_N_QTYPES];
    /* Prefill tiles, per weight type (F16 and the block types; NULL where
     * absent): rows [0, n_rows) x 4 tokens,
     *   out[t * out_stride + r] = row r . activation row t   (t < 4)
     * rows row_bytes apart, activation rows act_bytes apart (quantized as
     * for vec_dot; for F16 they are floats). Each weight row is loaded and
     * unpacked once for the 4 tokens. Equals vec_dot / dot_f16 up to float
     * summation order. */
    void (*tile4[KERN_N_QTYPES])(float *out, size_t out_stride, const void *w, size_t row_bytes, int n_rows,
                                 const void *x, size_t act_bytes, int n);
} kern_ops;

const kern_ops *kern_ops_scalar(void);
const kern_ops *kern_ops_avx2(void);   /* NULL when the CPU lacks AVX2/FMA/F16C */
const kern_ops *kern_ops_avx512(void); /* NULL when the CPU lacks AVX-512 F/BW/VL/DQ/VNNI/BF16 */
/* The fastest the CPU supports; HEED_KERN=scalar|avx2|avx512 in the environment overrides. */
const kern_ops *kern_ops_best(void);

/* Internal to kern*.c: roundf for |v| < 2^23 without a libm call (kern.c);
 * the block formats' scalar pieces (kern_quant.c). */
int kern_round_small(float v);
int kern_dequant_quant(float *out, const void *row, int type, int n); /* -1: not a block type */
float kern_vec_dot_q4_0_ref(const void *w, const void *xq, int n);
float kern_vec_dot_q4_1_ref(const void *w, const void *xq, int n);
float kern_vec_dot_q5_0_ref(const void *w, const void *xq, int n);
float kern_vec_dot_q5_1_ref(const void *w, const void *xq, int n);
float kern_vec_dot_q8_0_ref(const void *w, const void *xq, int n);
float kern_vec_dot_q4_K_ref(const void *w, const void *xq, int n);
float kern_vec_dot_q5_K_ref(const void *w, const void *xq, int n);
float kern_vec_dot_q6_K_ref(const void *w, const void *xq, int n);
float kern_vec_dot_q2_K_ref(const void *w, const void *xq, int n);
float kern_vec_dot_q3_K_ref(const void *w, const void *xq, int n);
float kern_vec_dot_iq4_nl_ref(const void *w, const void *xq, int n);
float kern_vec_dot_iq4_xs_ref(const void *w, const void *xq, int n);

/* The SIMD tables themselves (kern_avx2.c, kern_avx512.c; x86-64 only). Reach
 * them through kern_ops_avx2()/kern_ops_avx512(), which check the CPU first. */
#if defined(__x86_64__)
extern const kern_ops kern_ops_avx2_table;
extern const kern_ops kern_ops_avx512_table;
/* The AVX2 attention kernels, shared by the AVX-512 table: head vectors are
 * short (8..256), where 256-bit registers are already as wide as useful for
 * one query. (Its multi-query kernels are its own: the same dots, two per
 * 512-bit instruction, so they still equal kern_attn_scores_avx2's.) */
void kern_attn_scores_avx2(float *out, const float *q, const float *keys, size_t k_stride, int n_keys, int hd,
                           float scale);
void kern_attn_wsum_avx2(float *out, const float *p, const float *vals, size_t v_stride, int n_keys, int hd);
void kern_softmax_avx2(float *x, int n);
void kern_softmax_mi_avx2(float *x, int n, float *mi);
void kern_softmax_apply_avx2(float *x, int n, const float *mx, const float *inv);
void kern_softmax_apply_row_avx2(float *x, int n, float mx, float inv);
float kern_exp_sums_avx2(const float *x, int n, float *e, double *z, double *zx);
void kern_swiglu_avx2(float *gate, const float *up, int n);
void kern_gram_add_avx2(float *g, const float *x, size_t stride, int n, int hd);
float kern_quad_form_avx2(const float *g, const float *v, int hd);
#endif

/*
 * Matrix product on a row range, for one or more tokens:
 *   out[t * out_stride + o] = dot(W row o, x_t)   for t < n_tok, o0 <= o < o1
 * x is n_tok rows of n_in floats (stride n_in). For quantized weights xq must
 * hold the same rows quantized with kern_quantize_act (kern_act_row_bytes
 * apart; for Q8_0 that is kern_quantize_q8_0); for float weights xq is
 * ignored. Each weight row is read once for all tokens.
 */
void kern_matmul_rows(const kern_ops *ops, float *out, size_t out_stride, int w_type, const void *w,
                      int n_in, const float *x, const void *xq, int n_tok, int o0, int o1);

/* ---- small elementwise kernels (scalar; the compiler vectorizes them) ---- */

/* out = x / sqrt(mean(x^2) + eps) * w  (out may equal x) */
void kern_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
/* x = softmax(x) in place: exp(x - max) / sum; returns nothing, never NaN for finite input.
 * -INFINITY entries (masked) become 0; if every entry is -INFINITY, all become 0. */
void kern_softmax(float *x, int n);
/* kern_softmax with the row's statistics (kern_ops.softmax_mi), and one
 * entry per row from them (kern_ops.softmax_apply): the scalar references. */
void kern_softmax_mi(float *x, int n, float *mi);
void kern_softmax_apply(float *x, int n, const float *mx, const float *inv);
void kern_softmax_apply_row(float *x, int n, float mx, float inv);
/*
 * Softmax sums over n logits x, cleaned as the sampler reads them (NaN as
 * -INFINITY, +INFINITY as FLT_MAX). Returns max = the largest cleaned value
 * (-INFINITY when none is finite, and then the sums are 0); with d_i = x_i - max:
 *   *z = sum exp(d_i),  *zx = sum exp(d_i) * d_i (terms with exp(d_i) = 0 are 0),
 *   e[i] = exp(d_i) when e is not NULL.
 * exp in float, sums in double.
 */
float kern_exp_sums(const float *x, int n, float *e, double *z, double *zx);
/* a logit as the sampler and kern_exp_sums read it: NaN as -INFINITY, +INFINITY as FLT_MAX */
static inline float kern_clean_logit(float x) {
    if (x != x) return -INFINITY;
    return x > FLT_MAX ? FLT_MAX : x;
}
/* gate[i] = silu(gate[i]) * up[i] */
void kern_swiglu(float *gate, const float *up, int n);

/* out = (x - mean) / sqrt(var + eps) * w + b, mean and variance accumulated
 * in double (LayerNorm; out may equal x) */
void kern_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps);
/* GELU as the models specify it, the tanh form, in float:
 * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
static inline float kern_gelu(float x) {
    const float c = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
}
/* x[i] = cap * tanh(x[i] / cap) (soft-capping, cap > 0) */
void kern_softcap(float *x, int n, float cap);

/*
 * How a layer turns q . k into attention: scores q . k * scale, soft-capped
 * when softcap > 0, over the keys of the sliding window when window > 0 (a
 * query at pos sees keys pos - window + 1 .. pos; the others get exactly 0),
 * the layer's knockouts applied (below), then the softmax. The forward pass
 * and every recomputation of a row (astore_row) go through the same steps,
 * so a recomputed row equals the one the model used, bit for bit.
 */

/* A knockout (an intervention): queries at positions q0..q1-1 of query head
 * `head` (-1: every head) may not attend to keys k0..k1-1. Their scores are
 * -infinity before the softmax, so the row is renormalised over the other
 * keys and shows exactly 0 there; a row with every key knocked out is all
 * zeros (the head then adds nothing at that position). */
typedef struct kern_knockout {
    int head, q0, q1, k0, k1;
} kern_knockout;

typedef struct kern_attn_rule {
    float scale, softcap;
    int window;
    const kern_knockout *ko; /* this layer's knockouts (n_ko), or NULL */
    int n_ko;
} kern_attn_rule;

/* Knockouts (heed.h's heed_knockout, layer or head -1: all) grouped by
 * layer into a new *storage (the old one freed), each rules[l].ko pointing
 * at its layer's run. HEED_OK, HEED_ERR_INVALID_ARG (out of range, an empty
 * range; nothing changed) or HEED_ERR_NOMEM. */
struct heed_knockout;
int kern_knockouts_set(kern_attn_rule *rules, int n_layer, int n_head, const struct heed_knockout *k, int n,
                       kern_knockout **storage);

/* row[k] = -INFINITY for every key k in [k_from, k_to) that a knockout of
 * rule forbids to query pos of head `head` (row indexed by key position). */
void kern_attn_knockout(float *row, int k_from, int k_to, int pos, int head, const kern_attn_rule *r);

/* the first key a query at pos sees under a window (0 when window is 0) */
static inline int kern_attn_first_key(int pos, int window) { return window > 0 && pos >= window ? pos - window + 1 : 0; }

/* out[0..pos] = the attention row of query q (of query head `head`) at
 * position pos over keys (head_dim hd, stride hd, key j at keys + j * hd)
 * under rule r. */
void kern_attn_row(const kern_ops *ops, float *out, const float *q, const float *keys, int hd, int pos, int head,
                   const kern_attn_rule *r);

#endif
