/*
 * kern - the numeric kernels of the forward pass.
 *
 * Every kernel exists as a plain scalar reference (kern.c), which is the
 * oracle, and as SIMD variants (kern_avx2.c, kern_avx512.c: compiled with
 * their own target flags) chosen at run time by CPU detection. Kernels are
 * pure: output first, no allocation, no threads, no knowledge of models or
 * files. Threading is the caller's (see pool.h): kernels work on row ranges.
 *
 * Weight matrices are ggml-style: n_out rows of n_in elements, rows
 * contiguous. Types: F32, F16, BF16, Q8_0. For Q8_0 weights the activations
 * are first quantized to Q8_0 blocks (as the reference engine does) and the
 * dot product runs on int8 values.
 */
#ifndef HEED_KERN_H
#define HEED_KERN_H

#include <stddef.h>
#include <stdint.h>

#define QK8_0 32

/* Q8_0 block: 32 int8 values and one f16 scale d; value i is d * qs[i]. */
typedef struct block_q8_0 {
    uint16_t d; /* IEEE half */
    int8_t qs[QK8_0];
} block_q8_0;

_Static_assert(sizeof(block_q8_0) == 34, "Q8_0 block must be 34 bytes as in GGUF");

/* Exact IEEE conversions (round to nearest even for f32 -> f16). */
float kern_f16_to_f32(uint16_t h);
uint16_t kern_f32_to_f16(float f);
float kern_bf16_to_f32(uint16_t b);

/* n is a multiple of 32. Scale per block d = max|x| / 127 (stored as f16),
 * q = round(x / d) (round half away from zero), as the reference engine does. */
void kern_quantize_q8_0(block_q8_0 *out, const float *x, int n);

/* Converts one row of n elements of a supported type to f32 (embedding lookup). */
void kern_dequant_row(float *out, const void *row, int type, int n);

/* Bytes of one row of n elements of `type`. */
size_t kern_row_bytes(int type, int n);

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
    /* Attention scores of one query against n_keys keys (rows of hd floats,
     * k_stride floats apart): out[k] = scale * dot(q, key k). */
    void (*attn_scores)(float *out, const float *q, const float *keys, size_t k_stride, int n_keys, int hd,
                        float scale);
    /* Weighted sum of values: out[d] = sum_k p[k] * value_k[d] (out is
     * overwritten), summed in key order. */
    void (*attn_wsum)(float *out, const float *p, const float *vals, size_t v_stride, int n_keys, int hd);
} kern_ops;

const kern_ops *kern_ops_scalar(void);
const kern_ops *kern_ops_avx2(void);   /* NULL when the CPU lacks AVX2/FMA/F16C */
const kern_ops *kern_ops_avx512(void); /* NULL when the CPU lacks AVX-512 F/BW/VL/DQ/VNNI/BF16 */
/* The fastest the CPU supports; HEED_KERN=scalar|avx2|avx512 in the environment overrides. */
const kern_ops *kern_ops_best(void);

/* The SIMD tables themselves (kern_avx2.c, kern_avx512.c; x86-64 only). Reach
 * them through kern_ops_avx2()/kern_ops_avx512(), which check the CPU first. */
#if defined(__x86_64__)
extern const kern_ops kern_ops_avx2_table;
extern const kern_ops kern_ops_avx512_table;
/* The AVX2 attention kernels, shared by the AVX-512 table: head vectors are
 * short (8..256), where 256-bit registers are already as wide as useful. */
void kern_attn_scores_avx2(float *out, const float *q, const float *keys, size_t k_stride, int n_keys, int hd,
                           float scale);
void kern_attn_wsum_avx2(float *out, const float *p, const float *vals, size_t v_stride, int n_keys, int hd);
#endif

/*
 * Matrix product on a row range, for one or more tokens:
 *   out[t * out_stride + o] = dot(W row o, x_t)   for t < n_tok, o0 <= o < o1
 * x is n_tok rows of n_in floats (stride n_in). For Q8_0 weights xq must hold
 * the same rows quantized with kern_quantize_q8_0 (n_in/32 blocks per row);
 * otherwise xq is ignored. Each weight row is read once for all tokens.
 */
void kern_matmul_rows(const kern_ops *ops, float *out, size_t out_stride, int w_type, const void *w,
                      int n_in, const float *x, const block_q8_0 *xq, int n_tok, int o0, int o1);

/* ---- small elementwise kernels (scalar; the compiler vectorizes them) ---- */

/* out = x / sqrt(mean(x^2) + eps) * w  (out may equal x) */
void kern_rmsnorm(float *out, const float *x, const float *w, int n, float eps);
/* x = softmax(x) in place: exp(x - max) / sum; returns nothing, never NaN for finite input.
 * -INFINITY entries (masked) become 0; if every entry is -INFINITY, all become 0. */
void kern_softmax(float *x, int n);
/* gate[i] = silu(gate[i]) * up[i] */
void kern_swiglu(float *gate, const float *up, int n);

#endif
