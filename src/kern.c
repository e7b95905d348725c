/*
 * kern.c - scalar reference kernels and run-time selection of SIMD variants.
 *
 * Everything here is plain C compiled without SIMD flags, so it runs on any
 * CPU and serves as the oracle the SIMD tables (kern_avx2.c, kern_avx512.c)
 * are tested against. The scalar dot products accumulate in float in index
 * order, exactly as written: a SIMD variant differs from them only by
 * summation order. Number formats follow GGML's definitions bit for bit.
 */
#include "kern.h"

#include <assert.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ggml_types.h"
#include "heed.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

/* ------------------------------------------------------- number formats */

float kern_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    uint32_t bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13); /* inf, or NaN keeping its payload */
    } else if (exp != 0) {
        bits = sign | ((exp + 112) << 23) | (man << 13); /* rebias 15 -> 127 */
    } else {
        /* zero or subnormal: man * 2^-24, exact in float (man < 2^10) */
        float f = (float)man * 0x1p-24f;
        return sign ? -f : f;
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* kern_f32_to_f16 is inline in kern.h (branchless, so that row loops vectorize). */

float kern_bf16_to_f32(uint16_t b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* ------------------------------------------------------------ Q8_0, rows */

int kern_round_small(float v) {
    /* roundf (half away from zero) for |v| < 2^23, inline: the truncation
     * and the fraction v - i are exact there */
    int i = (int)v;
    float frac = v - (float)i;
    return i + (frac >= 0.5f) - (frac <= -0.5f);
}

void kern_quantize_q8_0(block_q8_0 *out, const float *x, int n) {
    assert(n % QK8_0 == 0);
    for (int b = 0; b < n / QK8_0; b++) {
        const float *xb = x + (size_t)b * QK8_0;
        float amax = 0.0f;
        for (int i = 0; i < QK8_0; i++) {
            float a = fabsf(xb[i]);
            amax = a > amax ? a : amax; /* fmaxf without the libm call (NaN is skipped alike) */
        }
        /* The scale is computed and applied in f32; only the stored copy is
         * rounded to f16 (the dot product then uses the rounded one), which is
         * what the reference engine does. |x * id| <= 127, so q never hits -128. */
        float d = amax / 127.0f;
        float id = d != 0.0f ? 1.0f / d : 0.0f;
        out[b].d = kern_f32_to_f16(d);
        for (int i = 0; i < QK8_0; i++) out[b].qs[i] = (int8_t)kern_round_small(xb[i] * id);
    }
}

size_t kern_row_bytes(int type, int n) {
    switch (type) {
    case GGML_F32: return (size_t)n * 4;
    case GGML_F16:
    case GGML_BF16: return (size_t)n * 2;
    case GGML_Q8_0: return (size_t)(n / QK8_0) * sizeof(block_q8_0);
    case GGML_Q4_0: return (size_t)(n / QK4_0) * sizeof(block_q4_0);
    case GGML_Q4_1: return (size_t)(n / QK4_1) * sizeof(block_q4_1);
    case GGML_Q5_0: return (size_t)(n / QK5_0) * sizeof(block_q5_0);
    case GGML_Q5_1: return (size_t)(n / QK5_1) * sizeof(block_q5_1);
    case GGML_Q8_1: return (size_t)(n / QK8_1) * sizeof(block_q8_1);
    case GGML_Q4_K: return (size_t)(n / QK_K) * sizeof(block_q4_K);
    case GGML_Q5_K: return (size_t)(n / QK_K) * sizeof(block_q5_K);
    case GGML_Q6_K: return (size_t)(n / QK_K) * sizeof(block_q6_K);
    case GGML_Q2_K: return (size_t)(n / QK_K) * sizeof(block_q2_K);
    case GGML_Q3_K: return (size_t)(n / QK_K) * sizeof(block_q3_K);
    case GGML_IQ4_NL: return (size_t)(n / QK4_NL) * sizeof(block_iq4_nl);
    case GGML_IQ4_XS: return (size_t)(n / QK_K) * sizeof(block_iq4_xs);
    case GGML_Q8_K: return (size_t)(n / QK_K) * sizeof(block_q8_K);
    default: return 0;
    }
}

void kern_dequant_row(float *out, const void *row, int type, int n) {
    switch (type) {
    case GGML_F32: memcpy(out, row, (size_t)n * sizeof(float)); break;
    case GGML_F16: {
        const uint16_t *h = row;
        for (int i = 0; i < n; i++) out[i] = kern_f16_to_f32(h[i]);
        break;
    }
    case GGML_BF16: {
        const uint16_t *h = row;
        for (int i = 0; i < n; i++) out[i] = kern_bf16_to_f32(h[i]);
        break;
    }
    case GGML_Q8_0: {
        const block_q8_0 *q = row;
        for (int b = 0; b < n / QK8_0; b++) {
            float d = kern_f16_to_f32(q[b].d);
            for (int i = 0; i < QK8_0; i++) out[b * QK8_0 + i] = d * (float)q[b].qs[i];
        }
        break;
    }
    default: {
        int rc = kern_dequant_quant(out, row, type, n);
        assert(rc == 0 && "kern_dequant_row: unsupported type");
        (void)rc;
    }
    }
}

/* ------------------------------------------------------ scalar dot table */

static float dot_f32_scalar(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static float dot_f16_scalar(const uint16_t *w, const float *x, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += kern_f16_to_f32(w[i]) * x[i];
    return s;
}

static float dot_bf16_scalar(const uint16_t *w, const float *x, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += kern_bf16_to_f32(w[i]) * x[i];
    return s;
}

static float dot_q8_0_scalar(const block_q8_0 *w, const block_q8_0 *x, int n) {
    float s = 0.0f;
    for (int b = 0; b < n / QK8_0; b++) {
        int sumi = 0; /* exact: 32 * 128 * 128 fits easily */
        for (int i = 0; i < QK8_0; i++) sumi += w[b].qs[i] * x[b].qs[i];
        s += (float)sumi * (kern_f16_to_f32(w[b].d) * kern_f16_to_f32(x[b].d));
    }
    return s;
}

static void axpy_scalar(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

static void scale_scalar(float *y, float a, int n) {
    for (int i = 0; i < n; i++) y[i] *= a;
}

static void attn_scores_scalar(float *out, const float *q, const float *keys, size_t k_stride, int n_keys,
                               int hd, float scale) {
    for (int k = 0; k < n_keys; k++) out[k] = dot_f32_scalar(q, keys + (size_t)k * k_stride, hd) * scale;
}

static void attn_wsum_scalar(float *out, const float *p, const float *vals, size_t v_stride, int n_keys, int hd) {
    for (int d = 0; d < hd; d++) out[d] = 0.0f;
    for (int k = 0; k < n_keys; k++) axpy_scalar(out, p[k], vals + (size_t)k * v_stride, hd);
}

/* The multi-query reference is the single-query one row by row: the oracle
 * for what the SIMD block kernels must reproduce. */
static void attn_scores_multi_scalar(float *const *out, const float *const *q, const int *n_keys, int n_q,
                                     const float *keys, size_t k_stride, int hd, float scale) {
    for (int i = 0; i < n_q; i++) attn_scores_scalar(out[i], q[i], keys, k_stride, n_keys[i], hd, scale);
}

static void attn_wsum_multi_scalar(float *const *out, const float *const *p, const int *n_keys, int n_q,
                                   const float *vals, size_t v_stride, int hd) {
    for (int i = 0; i < n_q; i++) attn_wsum_scalar(out[i], p[i], vals, v_stride, n_keys[i], hd);
}

static void gram_add_scalar(float *g, const float *x, size_t stride, int n, int hd) {
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * stride;
        for (int a = 0; a < hd; a++)
            for (int c = 0; c < hd; c++) g[(size_t)a * hd + c] += xr[a] * xr[c];
    }
}

static float quad_form_scalar(const float *g, const float *v, int hd) {
    double s = 0;
    for (int a = 0; a < hd; a++) {
        double t = 0;
        for (int c = 0; c < hd; c++) t += (double)g[(size_t)a * hd + c] * v[c];
        s += t * v[a];
    }
    return (float)s;
}

static const kern_ops scalar_table = {
    .name = "scalar",
    .dot_f32 = dot_f32_scalar,
    .dot_f16 = dot_f16_scalar,
    .dot_bf16 = dot_bf16_scalar,
    .dot_q8_0 = dot_q8_0_scalar,
    .axpy = axpy_scalar,
    .scale = scale_scalar,
    .gram_add = gram_add_scalar,
    .quad_form = quad_form_scalar,
    .attn_scores = attn_scores_scalar,
    .attn_wsum = attn_wsum_scalar,
    .attn_scores_multi = attn_scores_multi_scalar,
    .attn_wsum_multi = attn_wsum_multi_scalar,
    .softmax = kern_softmax,
    .softmax_mi = kern_softmax_mi,
    .softmax_apply = kern_softmax_apply,
    .softmax_apply_row = kern_softmax_apply_row,
    .exp_sums = kern_exp_sums,
    .swiglu = kern_swiglu,
    .quantize_q8_0 = kern_quantize_q8_0,
    .vec_dot = {[GGML_Q4_0] = kern_vec_dot_q4_0_ref, [GGML_Q4_1] = kern_vec_dot_q4_1_ref,
                [GGML_Q5_0] = kern_vec_dot_q5_0_ref, [GGML_Q5_1] = kern_vec_dot_q5_1_ref,
                [GGML_Q8_0] = kern_vec_dot_q8_0_ref, [GGML_Q4_K] = kern_vec_dot_q4_K_ref,
                [GGML_Q5_K] = kern_vec_dot_q5_K_ref, [GGML_Q6_K] = kern_vec_dot_q6_K_ref,
                [GGML_Q2_K] = kern_vec_dot_q2_K_ref, [GGML_Q3_K] = kern_vec_dot_q3_K_ref,
                [GGML_IQ4_NL] = kern_vec_dot_iq4_nl_ref, [GGML_IQ4_XS] = kern_vec_dot_iq4_xs_ref},
};

/* ------------------------------------------------------------- dispatch */

const kern_ops *kern_ops_scalar(void) {
    return &scalar_table;
}

/*
 * CPU detection with CPUID and XGETBV rather than __builtin_cpu_supports:
 * clang 14 (used for the fuzz build) rejects "f16c" there.
 * The SIMD files are built with their target flags, so the compiler may use
 * any of those instructions anywhere in them: require every flag a file is
 * compiled with, not just the ones its intrinsics name, and require that the
 * OS saves the wide registers (XCR0), or the first vector op would fault.
 * Nothing is cached (no mutable globals): these run once, at context setup.
 */
#if defined(__x86_64__)
typedef struct cpu_caps {
    int avx2;   /* with FMA and F16C */
    int avx512; /* F, BW, VL, DQ, VNNI, BF16 */
} cpu_caps;

static cpu_caps cpu_detect(void) {
    cpu_caps c = {0, 0};
    unsigned a, b, cx, d;
    if (!__get_cpuid(1, &a, &b, &cx, &d)) return c;
    int fma = (cx >> 12) & 1, osxsave = (cx >> 27) & 1, f16c = (cx >> 29) & 1;
    if (!osxsave) return c;
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    int ymm_os = (xlo & 0x06) == 0x06; /* SSE and AVX state */
    int zmm_os = (xlo & 0xe6) == 0xe6; /* plus opmask and both ZMM halves */
    if (!__get_cpuid_count(7, 0, &a, &b, &cx, &d)) return c;
    int avx2 = (b >> 5) & 1, f = (b >> 16) & 1, dq = (b >> 17) & 1, bw = (b >> 30) & 1,
        vl = (b >> 31) & 1, vnni = (cx >> 11) & 1;
    int bf16 = 0;
    if (a >= 1 && __get_cpuid_count(7, 1, &a, &b, &cx, &d)) bf16 = (a >> 5) & 1;
    c.avx2 = ymm_os && avx2 && fma && f16c;
    c.avx512 = c.avx2 && zmm_os && f && bw && vl && dq && vnni && bf16;
    return c;
}
#endif

const kern_ops *kern_ops_avx2(void) {
#if defined(__x86_64__)
    if (cpu_detect().avx2) return &kern_ops_avx2_table;
#endif
    return NULL;
}

const kern_ops *kern_ops_avx512(void) {
#if defined(__x86_64__)
    if (cpu_detect().avx512) return &kern_ops_avx512_table;
#endif
    return NULL;
}

const kern_ops *kern_ops_best(void) {
    const kern_ops *best = kern_ops_avx512();
    if (!best) best = kern_ops_avx2();
    if (!best) best = kern_ops_scalar();

    /* An override naming a table this CPU cannot run falls back to the best. */
    const char *want = getenv("HEED_KERN");
    if (want) {
        const kern_ops *o = NULL;
        if (strcmp(want, "scalar") == 0)
            o = kern_ops_scalar();
        else if (strcmp(want, "avx2") == 0)
            o = kern_ops_avx2();
        else if (strcmp(want, "avx512") == 0)
            o = kern_ops_avx512();
        if (o) best = o;
    }
    return best;
}

/* ---------------------------------------------------------------- matmul */

/* Bytes of weight rows a prefill tile sweep keeps hot: well inside L2, so
 * the rows are read from memory once and from L2 for every token group. */
#define TILE_ROW_BYTES (128u << 10)

/* Groups of 4 tokens through a prefill tile; returns the tokens it covered.
 * Cache blocking: a block of rows (TILE_ROW_BYTES) meets every token group
 * before the next block is loaded; the activations stream from L2/L3. */
static int matmul_tiles(const kern_ops *ops, float *out, size_t out_stride, int w_type, const char *w, size_t rb,
                        const void *x, size_t ab, int n_in, int n_tok, int o0, int o1) {
    if (n_tok < 4 || w_type < 0 || w_type >= KERN_N_QTYPES || !ops->tile4[w_type]) return 0;
    int n_groups = n_tok / 4;
    int rows = (int)(TILE_ROW_BYTES / rb) & ~3;
    if (rows < 4) rows = 4;
    for (int ob = o0; ob < o1; ob += rows) {
        int nr = o1 - ob < rows ? o1 - ob : rows;
        for (int g = 0; g < n_groups; g++)
            ops->tile4[w_type](out + (size_t)4 * g * out_stride + ob, out_stride, w + rb * ob, rb, nr,
                               (const char *)x + ab * 4 * g, ab, n_in);
    }
    return 4 * n_groups;
}

void kern_matmul_rows(const kern_ops *ops, float *out, size_t out_stride, int w_type, const void *w,
                      int n_in, const float *x, const void *xq, int n_tok, int o0, int o1) {
    /* Rows outer, tokens inner: a weight row is streamed from memory once and
     * then stays in L1 while every token's activations are dotted with it.
     * Several tokens (prefill) go through the tiles in groups of 4, the rest
     * through the dot products. */
    switch (w_type) {
    case GGML_F32:
        for (int o = o0; o < o1; o++) {
            const float *row = (const float *)w + (size_t)o * n_in;
            for (int t = 0; t < n_tok; t++)
                out[t * out_stride + o] = ops->dot_f32(row, x + (size_t)t * n_in, n_in);
        }
        break;
    case GGML_F16: {
        int t0 = matmul_tiles(ops, out, out_stride, w_type, w, (size_t)n_in * 2, x, (size_t)n_in * 4, n_in, n_tok,
                              o0, o1);
        for (int o = o0; o < o1; o++) {
            const uint16_t *row = (const uint16_t *)w + (size_t)o * n_in;
            for (int t = t0; t < n_tok; t++)
                out[t * out_stride + o] = ops->dot_f16(row, x + (size_t)t * n_in, n_in);
        }
        break;
    }
    case GGML_BF16:
        for (int o = o0; o < o1; o++) {
            const uint16_t *row = (const uint16_t *)w + (size_t)o * n_in;
            for (int t = 0; t < n_tok; t++)
                out[t * out_stride + o] = ops->dot_bf16(row, x + (size_t)t * n_in, n_in);
        }
        break;
    default: {
        /* the block types: integer dot products against quantized activations */
        assert(w_type >= 0 && w_type < KERN_N_QTYPES && ops->vec_dot[w_type] && xq);
        kern_vec_dot_fn dot = ops->vec_dot[w_type];
        size_t rb = kern_row_bytes(w_type, n_in), ab = kern_act_row_bytes(w_type, n_in);
        const char *wb = w, *xb = xq;
        int t0 = matmul_tiles(ops, out, out_stride, w_type, wb, rb, xq, ab, n_in, n_tok, o0, o1);
        for (int o = o0; o < o1; o++) {
            const char *row = wb + rb * o;
            for (int t = t0; t < n_tok; t++) out[t * out_stride + o] = dot(row, xb + ab * t, n_in);
        }
        break;
    }
    }
}

/* ----------------------------------------------------------- elementwise */

void kern_rmsnorm(float *out, const float *x, const float *w, int n, float eps) {
    /* The sum of squares is accumulated in double as the reference engine
     * does (ggml_float); the scale itself is a float, applied as (x*scale)*w
     * in the reference engine's order (norm, then a separate multiply). */
    double ss = 0.0;
    for (int i = 0; i < n; i++) ss += (double)x[i] * (double)x[i];
    float mean = (float)(ss / n);
    float scale = 1.0f / sqrtf(mean + eps);
    for (int i = 0; i < n; i++) out[i] = (x[i] * scale) * w[i];
}

void kern_layernorm(float *out, const float *x, const float *w, const float *b, int n, float eps) {
    /* as the reference engine: mean and variance in double, the scale a float */
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += x[i];
    float mean = (float)(sum / n);
    double ss = 0.0;
    for (int i = 0; i < n; i++) {
        float d = x[i] - mean;
        ss += (double)(d * d);
    }
    float scale = 1.0f / sqrtf((float)(ss / n) + eps);
    for (int i = 0; i < n; i++) {
        float y = ((x[i] - mean) * scale) * w[i];
        out[i] = b ? y + b[i] : y;
    }
}

void kern_softcap(float *x, int n, float cap) {
    for (int i = 0; i < n; i++) x[i] = tanhf(x[i] / cap) * cap;
}

int kern_knockouts_set(kern_attn_rule *rules, int n_layer, int n_head, const heed_knockout *k, int n,
                       kern_knockout **storage) {
    if (n < 0 || n > HEED_MAX_KNOCKOUTS || (n && !k)) return HEED_ERR_INVALID_ARG;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        const heed_knockout *x = &k[i];
        if (x->layer < -1 || x->layer >= n_layer || x->head < -1 || x->head >= n_head || x->q0 < 0 ||
            x->q1 <= x->q0 || x->k0 < 0 || x->k1 <= x->k0)
            return HEED_ERR_INVALID_ARG;
        total += x->layer < 0 ? (size_t)n_layer : 1;
    }
    kern_knockout *ko = total ? malloc(sizeof *ko * total) : NULL;
    if (total && !ko) return HEED_ERR_NOMEM;
    size_t at = 0;
    for (int l = 0; l < n_layer; l++) { /* grouped by layer: each rule points at its run */
        rules[l].ko = ko ? ko + at : NULL;
        rules[l].n_ko = 0;
        for (int i = 0; i < n; i++)
            if (k[i].layer < 0 || k[i].layer == l) {
                ko[at++] = (kern_knockout){k[i].head, k[i].q0, k[i].q1, k[i].k0, k[i].k1};
                rules[l].n_ko++;
            }
        if (!rules[l].n_ko) rules[l].ko = NULL;
    }
    free(*storage);
    *storage = ko;
    return HEED_OK;
}

void kern_attn_knockout(float *row, int k_from, int k_to, int pos, int head, const kern_attn_rule *r) {
    for (int i = 0; i < r->n_ko; i++) {
        const kern_knockout *k = &r->ko[i];
        if ((k->head >= 0 && k->head != head) || pos < k->q0 || pos >= k->q1) continue;
        int a = k->k0 > k_from ? k->k0 : k_from, b = k->k1 < k_to ? k->k1 : k_to;
        for (int j = a; j < b; j++) row[j] = -INFINITY;
    }
}

void kern_attn_row(const kern_ops *ops, float *out, const float *q, const float *keys, int hd, int pos, int head,
                   const kern_attn_rule *r) {
    int lo = kern_attn_first_key(pos, r->window), n = pos + 1 - lo;
    if (lo) memset(out, 0, sizeof(float) * (size_t)lo);
    ops->attn_scores(out + lo, q, keys + (size_t)lo * hd, (size_t)hd, n, hd, r->scale);
    if (r->softcap > 0.0f) kern_softcap(out + lo, n, r->softcap);
    if (r->n_ko) kern_attn_knockout(out, lo, pos + 1, pos, head, r);
    ops->softmax(out + lo, n);
}

void kern_softmax(float *x, int n) { kern_softmax_mi(x, n, NULL); }

void kern_softmax_mi(float *x, int n, float *mi) {
    if (n <= 0) return;
    float max = -INFINITY;
    /* a plain compare, not fmaxf: no NaN handling needed, and it inlines */
    for (int i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
    if (max == -INFINITY) {
        /* everything masked: no probability anywhere (not NaN, not uniform) */
        for (int i = 0; i < n; i++) x[i] = 0.0f;
        if (mi) mi[0] = -INFINITY, mi[1] = 0.0f;
        return;
    }
    double sum = 0.0; /* expf(-inf) = 0, so masked entries drop out naturally */
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - max);
        sum += x[i];
    }
    /* sum >= 1 (the max contributes exp(0)), so the reciprocal is finite */
    float inv = (float)(1.0 / sum);
    for (int i = 0; i < n; i++) x[i] *= inv;
    if (mi) mi[0] = max, mi[1] = inv;
}

static inline float apply_one(float x, float mx, float inv) {
    if (mx == -INFINITY) return 0.0f;
    float e = expf(x - mx);
    return e * inv;
}

void kern_softmax_apply(float *x, int n, const float *mx, const float *inv) {
    for (int i = 0; i < n; i++) x[i] = apply_one(x[i], mx[i], inv[i]);
}

void kern_softmax_apply_row(float *x, int n, float mx, float inv) {
    for (int i = 0; i < n; i++) x[i] = apply_one(x[i], mx, inv);
}

float kern_exp_sums(const float *x, int n, float *e, double *z, double *zx) {
    float max = -INFINITY;
    for (int i = 0; i < n; i++) {
        float v = kern_clean_logit(x[i]);
        max = v > max ? v : max;
    }
    double sz = 0.0, szx = 0.0;
    for (int i = 0; i < n; i++) {
        float d = kern_clean_logit(x[i]) - max; /* -inf - -inf: NaN, only when nothing is finite */
        float ei = max == -INFINITY ? 0.0f : expf(d);
        if (e) e[i] = ei;
        sz += ei;
        if (ei > 0.0f) szx += (double)ei * d;
    }
    *z = sz;
    *zx = szx;
    return max;
}

void kern_swiglu(float *gate, const float *up, int n) {
    for (int i = 0; i < n; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}
