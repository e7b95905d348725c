/*
 * astore.c - tiered attention storage (see astore.h for the layout).
 *
 * The hook feeds blocks of one layer and a run of consecutive positions.
 * Queries and keys are copied as they come; probabilities are reduced at
 * once to top-k entries and head-mean rows, and copied whole only while the
 * full tier fits its limit. Arrays are position-major so a generation only
 * appends; they are reserved for the planned length (astore_plan) or grow
 * by doubling with realloc.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "astore.h"
#include "fmap.h"

/* GCC's -O2 vectorizer only takes loops that vector code replaces whole,
 * so hot loops over rows of unknown length walk them in blocks of BLOCK
 * floats (fixed-width inner loops it vectorizes) and finish the tail
 * scalar. */
enum { BLOCK = 16 };

int astore_init(astore *s, int n_layer, int n_head, int n_head_kv, int head_dim, const astore_params *p) {
    memset(s, 0, sizeof *s);
    if (n_layer <= 0 || n_head <= 0 || n_head_kv <= 0 || head_dim <= 0 || n_head % n_head_kv || !p ||
        p->top_k < 0 || p->top_k > ASTORE_TOPK_MAX)
        return HEED_ERR_INVALID_ARG;
    s->n_layer = n_layer;
    s->n_head = n_head;
    s->n_head_kv = n_head_kv;
    s->head_dim = head_dim;
    s->q_dim = n_head * head_dim;
    s->kv_dim = n_head_kv * head_dim;
    s->top_k = p->top_k;
    s->has_qk = p->keep_qk;
    s->has_topk = p->top_k > 0;
    s->has_hmean = p->keep_head_mean;
    s->full_limit = p->full_limit;
    s->has_full = p->full_limit > 0;
    if (s->has_qk && !(s->k = calloc((size_t)n_layer * n_head_kv, sizeof *s->k))) return HEED_ERR_NOMEM;
    if (s->has_qk && !(s->k_map = calloc((size_t)n_layer * n_head_kv, sizeof *s->k_map))) return HEED_ERR_NOMEM;
    if (s->has_qk && p->spill_dir && !(s->spill_dir = strdup(p->spill_dir))) return HEED_ERR_NOMEM;
    s->spill_min = p->spill_min;
    if (!(s->rules = malloc(sizeof *s->rules * (size_t)n_layer))) return HEED_ERR_NOMEM;
    for (int l = 0; l < n_layer; l++) s->rules[l] = astore_default_rule(head_dim);
    return HEED_OK;
}

int astore_set_rule(astore *s, int layer, kern_attn_rule rule) {
    if (layer < 0 || layer >= s->n_layer || !(rule.scale > 0.0f) || !isfinite(rule.scale) || !(rule.softcap >= 0.0f) ||
        !isfinite(rule.softcap) || rule.window < 0)
        return HEED_ERR_INVALID_ARG;
    s->rules[layer].scale = rule.scale; /* its knockouts stay */
    s->rules[layer].softcap = rule.softcap;
    s->rules[layer].window = rule.window;
    return HEED_OK;
}

int astore_set_knockouts(astore *s, const heed_knockout *k, int n) {
    heed_knockout *copy = n > 0 ? malloc(sizeof *copy * (size_t)n) : NULL;
    if (n > 0 && !copy) return HEED_ERR_NOMEM;
    int rc = kern_knockouts_set(s->rules, s->n_layer, s->n_head, k, n, &s->ko);
    if (rc) {
        free(copy);
        return rc;
    }
    if (n > 0) memcpy(copy, k, sizeof *copy * (size_t)n);
    free(s->ko_list);
    s->ko_list = copy;
    s->n_ko_list = n;
    return HEED_OK;
}

bool astore_rules_default(const astore *s) {
    kern_attn_rule d = astore_default_rule(s->head_dim);
    for (int l = 0; l < s->n_layer; l++)
        if (s->rules[l].scale != d.scale || s->rules[l].softcap != 0.0f || s->rules[l].window != 0) return false;
    return true;
}

/* Frees an array of tier (a): a file-backed mapping of map bytes, or malloc'd. */
static void qk_free(void *p, size_t map) {
    if (map) fmap_spill_free(p, map);
    else free(p);
}

void astore_free(astore *s) {
    if (!s) return;
    qk_free(s->q, s->q_map);
    if (s->k)
        for (int i = 0; i < s->n_layer * s->n_head_kv; i++) qk_free(s->k[i], s->k_map ? s->k_map[i] : 0);
    free(s->k);
    free(s->k_map);
    free(s->spill_dir);
    free(s->tk_pos);
    free(s->tk_w);
    free(s->hmean);
    free(s->full);
    free(s->mi);
    free(s->acc);
    free(s->rules);
    free(s->ko);
    free(s->ko_list);
    memset(s, 0, sizeof *s);
}

/* Grows *p from `have` to `want` elements of `size` bytes, keeping the contents. */
static int grow(void **p, size_t have, size_t want, size_t size) {
    if (want <= have) return HEED_OK;
    void *n = realloc(*p, want * size);
    if (!n) return HEED_ERR_NOMEM;
    *p = n;
    fmap_advise_huge(n, want * size);
    return HEED_OK;
}

/* Most positions whose tier (c) fits full_limit. */
static size_t full_fit(const astore *s) {
    size_t per = (size_t)s->n_layer * s->n_head * sizeof(float), rows = s->full_limit / per;
    size_t p = (size_t)sqrt(2.0 * (double)rows); /* tri(p) <= rows, within one either way */
    while (p > 0 && astore_tri(p) > rows) p--;
    while (astore_tri(p + 1) <= rows) p++;
    return p;
}

/* Tier (c) has its own capacity: doubling must not carry it past its limit.
 * When it reaches the limit it is reserved there at once rather than a
 * position at a time. drop: a run that needs more than the limit loses
 * the tier (else the call only reserves what fits). */
static int reserve_full(astore *s, size_t need, size_t want, bool drop) {
    size_t LH = (size_t)s->n_layer * s->n_head, cap = (size_t)s->full_cap;
    if (!s->has_full || need <= cap) return HEED_OK;
    size_t fit = full_fit(s);
    if (need > fit) {
        if (!drop) {
            need = want = fit;
            if (need <= cap) return HEED_OK;
        } else {
            free(s->full); /* the run outgrew the full tier: q/k and summaries remain */
            s->full = NULL;
            s->has_full = false;
            s->full_cap = 0;
            return HEED_OK;
        }
    }
    if (want > fit) want = fit;
    int rc = grow((void **)&s->full, astore_tri(cap) * LH, astore_tri(want) * LH, sizeof(float));
    if (!rc) s->full_cap = (int)want;
    return rc;
}

/* grow() for an array of tier (a): in a new file-backed mapping when the
 * store spills (the contents copied over, the old array freed), else as
 * grow(); a mapping that cannot be made falls back to memory. */
static int grow_qk(const astore *s, bool spill, void **p, size_t *map, size_t have, size_t want, size_t size) {
    if (want <= have) return HEED_OK;
    if (spill) {
        void *n = fmap_spill(s->spill_dir, want * size);
        if (n) {
            if (have) memcpy(n, *p, have * size);
            qk_free(*p, *map);
            *p = n;
            *map = want * size;
            return HEED_OK;
        }
    }
    if (*map) { /* from a mapping back to memory */
        void *n = malloc(want * size);
        if (!n) return HEED_ERR_NOMEM;
        memcpy(n, *p, have * size);
        fmap_spill_free(*p, *map);
        *p = n;
        *map = 0;
        return HEED_OK;
    }
    return grow(p, have, want, size);
}

/* Room for `need` positions, `want` (>= need) if it is grown. */
static int reserve(astore *s, size_t need, size_t want, bool drop_full) {
    size_t old = (size_t)s->cap;
    int rc = reserve_full(s, need, want, drop_full);
    if (rc || need <= old) return rc;
    size_t L = (size_t)s->n_layer, H = (size_t)s->n_head, K = (size_t)s->top_k;
    if (s->has_qk) {
        bool spill = s->spill_dir && want * L * (size_t)(s->q_dim + s->kv_dim) * sizeof(float) >= s->spill_min;
        rc = grow_qk(s, spill, (void **)&s->q, &s->q_map, old * L * s->q_dim, want * L * s->q_dim, sizeof(float));
        for (int i = 0; !rc && i < s->n_layer * s->n_head_kv; i++)
            rc = grow_qk(s, spill, (void **)&s->k[i], &s->k_map[i], old * s->head_dim, want * s->head_dim,
                         sizeof(float));
    }
    if (!rc && s->has_mi) rc = grow((void **)&s->mi, old * L * H * 2, want * L * H * 2, sizeof(float));
    if (!rc && s->has_topk) {
        rc = grow((void **)&s->tk_pos, old * L * H * K, want * L * H * K, sizeof(uint32_t));
        if (!rc) rc = grow((void **)&s->tk_w, old * L * H * K, want * L * H * K, sizeof(uint16_t));
    }
    if (!rc && s->has_hmean)
        rc = grow((void **)&s->hmean, astore_tri(old) * L, astore_tri(want) * L, sizeof(uint16_t));
    /* on failure some arrays are larger than cap: harmless, cap is what counts */
    if (!rc) s->cap = (int)want;
    return rc;
}

int astore_reserve(astore *s, int n_pos) {
    size_t old = (size_t)s->cap, need = (size_t)n_pos;
    if (need <= old && (!s->has_full || n_pos <= s->full_cap)) return HEED_OK; /* the hooks' common case */
    size_t want = old * 2 > need ? old * 2 : need;
    if (want < 64) want = 64;
    return reserve(s, need, want, true);
}

int astore_plan(astore *s, int n_pos) {
    return n_pos > 0 ? reserve(s, (size_t)n_pos, (size_t)n_pos, false) : HEED_OK;
}

typedef struct qk_job {
    astore *s;
    const heed_qk_block *b;
} qk_job;

/* Copies the block's queries [i0, i1) into their places. */
static void qk_copy(astore *s, const heed_qk_block *b, int i0, int i1) {
    size_t L = (size_t)s->n_layer, hd = (size_t)s->head_dim;
    for (int i = i0; i < i1; i++) {
        size_t pos = (size_t)(b->pos0 + i);
        memcpy(s->q + (pos * L + b->layer) * s->q_dim, b->q + (size_t)i * s->q_dim, sizeof(float) * s->q_dim);
        for (int g = 0; g < s->n_head_kv; g++)
            memcpy(s->k[b->layer * s->n_head_kv + g] + pos * hd, b->k + (size_t)i * s->kv_dim + g * hd,
                   sizeof(float) * hd);
    }
}

/* one contiguous range of the block's queries per thread */
static void qk_task(void *arg, int ith, int nth) {
    const qk_job *j = arg;
    int n = j->b->n_query, per = (n + nth - 1) / nth, i0 = ith * per, i1 = i0 + per < n ? i0 + per : n;
    if (i0 < i1) qk_copy(j->s, j->b, i0, i1);
}

/* Queries below which a block's copy stays on this thread (a decode step,
 * short prompts): the copy is a few KB per query, and a prompt's copies
 * also take the page faults of fresh memory, which threads take in parallel. */
#define QK_SPLIT_QUERIES 16

int astore_copy_prefix(astore *dst, const astore *src, int n, bool with_q) {
    if (!dst->has_qk || !src->has_qk || dst->has_topk || dst->has_hmean || dst->has_full || dst->n_pos != 0 ||
        dst->n_layer != src->n_layer || dst->n_head != src->n_head || dst->n_head_kv != src->n_head_kv ||
        dst->head_dim != src->head_dim)
        return HEED_ERR_UNSUPPORTED;
    if (n < 0 || n > src->n_pos) return HEED_ERR_INVALID_ARG;
    int rc = astore_reserve(dst, n);
    if (rc) return rc;
    if (with_q) astore_copy_q_prefix(dst, src, n);
    for (int i = 0; i < dst->n_layer * dst->n_head_kv; i++)
        memcpy(dst->k[i], src->k[i], sizeof(float) * (size_t)n * dst->head_dim);
    if (dst->has_mi && src->has_mi && n)
        memcpy(dst->mi, src->mi, sizeof(float) * 2 * (size_t)n * dst->n_layer * dst->n_head);
    else
        dst->has_mi = false;
    dst->n_pos = n;
    return HEED_OK;
}

void astore_copy_q_prefix(astore *dst, const astore *src, int n) {
    memcpy(dst->q, src->q, sizeof(float) * (size_t)n * dst->n_layer * dst->q_dim);
}

void astore_add_qk(astore *s, const heed_qk_block *b, pool *p) {
    if (!s->has_qk || s->failed) return;
    if (b->n_head != s->n_head || b->n_head_kv != s->n_head_kv || b->head_dim != s->head_dim ||
        b->layer < 0 || b->layer >= s->n_layer || astore_reserve(s, b->pos0 + b->n_query)) {
        s->failed = true;
        return;
    }
    qk_job j = {s, b};
    if (p && b->n_query >= QK_SPLIT_QUERIES) pool_run(p, pool_size(p), qk_task, &j);
    else qk_copy(s, b, 0, b->n_query);
}

/* astore_f16 (see astore.h) is kern_f32_to_f16, which kern.h inlines into
 * the row loops below. */
uint16_t astore_f16(float f) { return kern_f32_to_f16(f); }

/* dst[k] = f16(src[k]): whole blocks become vector code */
static void f16_row(uint16_t *restrict dst, const float *restrict src, size_t n) {
    size_t k = 0;
    for (; k + BLOCK <= n; k += BLOCK)
        for (int j = 0; j < BLOCK; j++) dst[k + j] = kern_f32_to_f16(src[k + j]);
    for (; k < n; k++) dst[k] = kern_f32_to_f16(src[k]);
}

/* ------------------------------------------------------------------ top-k */

/* min-heap on (weight, -position): the root is the entry to evict next */
static bool tk_less(float wa, uint32_t pa, float wb, uint32_t pb) { return wa < wb || (wa == wb && pa > pb); }

static void tk_sift(float *w, uint32_t *p, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && tk_less(w[l], p[l], w[m], p[m])) m = l;
        if (r < n && tk_less(w[r], p[r], w[m], p[m])) m = r;
        if (m == i) return;
        float tw = w[i]; w[i] = w[m]; w[m] = tw;
        uint32_t tp = p[i]; p[i] = p[m]; p[m] = tp;
        i = m;
    }
}

int astore_topk_ref(const float *row, int n, int k, uint32_t *pos, float *w) {
    int m = n < k ? n : k;
    if (m <= 0) return 0;
    int filled = 0;
    for (int i = 0; i < n; i++) {
        if (row[i] != row[i]) continue; /* NaN */
        if (filled < m) {
            w[filled] = row[i];
            pos[filled++] = (uint32_t)i;
            if (filled == m)
                for (int j = m / 2 - 1; j >= 0; j--) tk_sift(w, pos, m, j);
        } else if (tk_less(w[0], pos[0], row[i], (uint32_t)i)) {
            w[0] = row[i];
            pos[0] = (uint32_t)i;
            tk_sift(w, pos, m, 0);
        }
    }
    if (filled < m) { /* NaNs kept the heap from filling: make one of what there is */
        m = filled;
        for (int j = m / 2 - 1; j >= 0; j--) tk_sift(w, pos, m, j);
    }
    /* heap sort: repeatedly move the smallest to the end -> descending order */
    for (int e = m - 1; e > 0; e--) {
        float tw = w[0]; w[0] = w[e]; w[e] = tw;
        uint32_t tp = pos[0]; pos[0] = pos[e]; pos[e] = tp;
        tk_sift(w, pos, e, 0);
    }
    return m;
}

/* The fast path sorts one 64-bit key per entry, ordered as the contract
 * orders entries: the weight's bits mapped so that unsigned order is float
 * order (both zeros made +0, as they compare equal), above the complemented
 * position, so that of equal weights the lower position has the larger key.
 * Keys are distinct, so the top m is one set whatever order the selection
 * visits them in. Weights are read back from the row by position. */
static inline uint64_t tk_key(float x, int i) {
    uint32_t b;
    x += 0.0f; /* -0 + 0 = +0 */
    memcpy(&b, &x, sizeof b);
    b ^= -(b >> 31) | 0x80000000u; /* negative: flip all bits; else the sign bit */
    return (uint64_t)b << 32 | (uint32_t)~(uint32_t)i;
}

static inline uint32_t tk_key_pos(uint64_t key) { return ~(uint32_t)key; }

/* Permutes a[lo], a[mid], a[last] so that a[last] is their median. Keys
 * of a row compare unpredictably, so here and below comparisons feed
 * selects and indices rather than branches. */
static void tk_median3(uint64_t *a, int lo, int mid, int last) {
    uint64_t x = a[lo], y = a[mid], z = a[last];
    uint64_t mn = x < y ? x : y, mx = x < y ? y : x;
    a[lo] = z < mn ? z : mn;
    a[mid] = z > mx ? z : mx;
    a[last] = z < mn ? mn : z > mx ? mx : z;
}

/* Partitions a[lo..hi) (hi - lo >= 3) around the median of its first,
 * middle and last keys: larger keys first. Returns the pivot's index. */
static int tk_partition(uint64_t *a, int lo, int hi) {
    int last = hi - 1;
    tk_median3(a, lo, lo + (hi - lo) / 2, last);
    uint64_t p = a[last];
    int j = lo;
    for (int i = lo; i < last; i++) {
        uint64_t x = a[i];
        a[i] = a[j];
        a[j] = x;
        j += x > p;
    }
    a[last] = a[j];
    a[j] = p;
    return j;
}

/* Runs of up to TK_RUN keys are sorted by counting: a key's place is the
 * number of larger keys (keys are distinct). Quadratic, but without the
 * mispredicted branch insertion sort takes at every key. */
enum { TK_RUN = 16 };

static void tk_small_sort(uint64_t *a, int lo, int hi) {
    uint64_t t[TK_RUN];
    int r = hi - lo;
    memcpy(t, a + lo, sizeof *t * r);
    for (int i = 0; i < r; i++) {
        int above = 0;
        for (int j = 0; j < r; j++) above += t[j] > t[i];
        a[lo + above] = t[i];
    }
}

/* Sorts a[lo..hi) descending as far as index m: positions below m get
 * their final keys, the rest any order. Quicksort that skips parts lying
 * wholly at or past m; it recurses into the smaller part and loops on the
 * larger, so the stack stays logarithmic whatever the pivots. */
static void tk_partial_sort(uint64_t *a, int lo, int hi, int m) {
    while (hi - lo > TK_RUN && lo < m) {
        int j = tk_partition(a, lo, hi);
        if (j >= m) {
            hi = j;
        } else if (j - lo < hi - j) {
            tk_partial_sort(a, lo, j, m);
            lo = j + 1;
        } else {
            tk_partial_sort(a, j + 1, hi, m);
            hi = j;
        }
    }
    if (lo < m) tk_small_sort(a, lo, hi);
}

/* Moves the m largest keys of a[0..n) to a[0..m), in no particular order,
 * and returns the smallest of them. */
static uint64_t tk_select(uint64_t *a, int n, int m) {
    int lo = 0, hi = n;
    while (hi - lo > TK_RUN && lo < m && hi > m) {
        int j = tk_partition(a, lo, hi);
        if (j >= m) hi = j;
        else lo = j + 1;
    }
    if (lo < m && hi > m) tk_small_sort(a, lo, hi);
    uint64_t min = a[0];
    for (int i = 1; i < m; i++) min = a[i] < min ? a[i] : min;
    return min;
}

/* The key buffer holds the top k found so far plus the candidates since,
 * and is cut back to k when it passes 2k + 4 blocks. A row gets a floor
 * once it has TK_FLOOR_MIN entries per group to sample. */
enum { TK_BUF = 2 * ASTORE_TOPK_MAX + 5 * BLOCK, TK_FLOOR_MIN = 4 };

/* Whether any of the BLOCK floats at x reaches t: a fixed-width loop the
 * compiler turns into a few vector compares, so blocks of a long row that
 * cannot enter the top k cost almost nothing. */
static bool tk_block_hits(const float *x, float t) {
    int hit = 0;
    for (int j = 0; j < BLOCK; j++) hit |= x[j] >= t;
    return hit;
}

/* keys of the BLOCK entries at x, the first at position i: vector code */
static void tk_block_keys(uint64_t *restrict out, const float *restrict x, int i) {
    for (int j = 0; j < BLOCK; j++) out[j] = tk_key(x[j], i + j);
}

/* mx[j] = max(mx[j], x[j]) for a block; NaNs never win (x > mx is false). */
static void tk_block_max(float *mx, const float *x) {
    for (int j = 0; j < BLOCK; j++) mx[j] = x[j] > mx[j] ? x[j] : mx[j];
}

/* A lower bound for the k-th largest weight of a row: entries i, i + g,
 * i + 2g... form one of g >= k disjoint groups, whose g maxima are distinct
 * entries, so the k-th largest is at least the smallest of them. Strided
 * groups make the pass whole vector maxima, and each samples the whole row,
 * so the bound holds up on rows whose weight sits in a few places. */
static float tk_floor(const float *row, int n, int k) {
    float mx[ASTORE_TOPK_MAX + BLOCK];
    int g = (k + BLOCK - 1) / BLOCK * BLOCK, i = 0;
    for (int j = 0; j < g; j++) mx[j] = -INFINITY;
    for (; i + g <= n; i += g)
        for (int b = 0; b < g; b += BLOCK) tk_block_max(mx + b, row + i + b);
    for (int j = 0; i + j < n; j++) mx[j] = row[i + j] > mx[j] ? row[i + j] : mx[j];
    float t = INFINITY;
    for (int j = 0; j < g; j++) t = mx[j] < t ? mx[j] : t;
    return t;
}

int astore_topk(const float *row, int n, int k, uint32_t *pos, float *w) {
    if (k > ASTORE_TOPK_MAX) return astore_topk_ref(row, n, k, pos, w);
    int m = n < k ? n : k;
    if (m <= 0) return 0;
    uint64_t keys[TK_BUF];
    int cap = 2 * k + 4 * BLOCK, c = 0;
    /* Entries below t cannot make the top k. It starts at a floor on long
     * rows, else below every weight (NaNs never pass), and each time the
     * buffer is cut back to the top k it rises past the k-th weight: a later
     * entry of equal weight loses the tie by its higher position. */
    float t = n >= TK_FLOOR_MIN * k ? tk_floor(row, n, k) : -INFINITY;
    for (int i = 0; i < n; i += BLOCK) {
        int len = n - i < BLOCK ? n - i : BLOCK;
        uint64_t blk[BLOCK];
        if (len == BLOCK) {
            if (!tk_block_hits(row + i, t)) continue;
            tk_block_keys(blk, row + i, i);
        } else {
            for (int j = 0; j < len; j++) blk[j] = tk_key(row[i + j], i + j);
        }
        for (int j = 0; j < len; j++) { /* append the keys that pass, without branches */
            keys[c] = blk[j];
            c += row[i + j] >= t;
        }
        if (c > cap) {
            uint64_t kth = tk_select(keys, c, m);
            c = m;
            t = nextafterf(row[tk_key_pos(kth)], INFINITY);
        }
    }
    if (c < m) m = c; /* NaNs were skipped */
    tk_partial_sort(keys, 0, c, m);
    for (int i = 0; i < m; i++) {
        pos[i] = tk_key_pos(keys[i]);
        w[i] = row[pos[i]];
    }
    return m;
}

static void add_topk(astore *s, int layer, int h, int pos, const float *row) {
    size_t K = (size_t)s->top_k;
    size_t base = (((size_t)pos * s->n_layer + layer) * s->n_head + h) * K;
    uint32_t *tp = s->tk_pos + base;
    uint16_t *tw = s->tk_w + base;
    float w[ASTORE_TOPK_MAX];
    int m = astore_topk(row, pos + 1, s->top_k, tp, w);
    f16_row(tw, w, (size_t)m);
    for (size_t i = (size_t)m; i < K; i++) { tp[i] = ASTORE_TK_NONE; tw[i] = 0; }
}

/* acc[k] += row[k] (the buffers never overlap) */
static void add_row(float *restrict acc, const float *restrict row, size_t n) {
    size_t k = 0;
    for (; k + BLOCK <= n; k += BLOCK)
        for (int j = 0; j < BLOCK; j++) acc[k + j] += row[k + j];
    for (; k < n; k++) acc[k] += row[k];
}

/* x[k] /= d */
static void div_row(float *x, float d, size_t n) {
    size_t k = 0;
    for (; k + BLOCK <= n; k += BLOCK)
        for (int j = 0; j < BLOCK; j++) x[k + j] /= d;
    for (; k < n; k++) x[k] /= d;
}

/* Head mean of one layer's row at query i, keys k0..k1-1: heads added in
 * head order in float (row by row, so the loop vectorizes; each key still
 * sees the same additions in the same order), divided by n_head: the
 * reference the tests repeat exactly. Each key is its own sum, so any split
 * of a row into key ranges gives the same bits. acc holds k1 - k0 floats. */
static void add_hmean(astore *s, const heed_attn_block *b, int i, size_t k0, size_t k1, float *acc) {
    size_t pos = (size_t)b->pos0 + i, n = k1 - k0;
    uint16_t *dst = s->hmean + astore_tri(pos) * s->n_layer + (size_t)b->layer * (pos + 1) + k0;
    const float *row = b->probs + i * b->row_stride + k0;
    memcpy(acc, row, sizeof(float) * n);
    for (int h = 1; h < b->n_head; h++) add_row(acc, row + h * b->head_stride, n);
    div_row(acc, (float)b->n_head, n);
    f16_row(dst, acc, n);
}

typedef struct probs_job {
    astore *s;
    const heed_attn_block *b;
    float *acc; /* (nth, pos0 + n_query) */
} probs_job;

/* keys per part when a head-mean row is split over threads: whole cache
 * lines of the output, so threads do not write the same line */
enum { HMEAN_PART = 64 };

/* (query, head) pairs for top-k and the full tier, interleaved over threads;
 * the head mean by query, or, for blocks of fewer queries than threads (a
 * decode step), each query's keys in one range per thread. */
static void probs_task(void *arg, int ith, int nth) {
    probs_job *j = arg;
    astore *s = j->s;
    const heed_attn_block *b = j->b;
    size_t LH = (size_t)s->n_layer * s->n_head;
    if (s->has_topk || s->has_full)
        for (int idx = ith; idx < b->n_query * b->n_head; idx += nth) {
            int i = idx / b->n_head, h = idx % b->n_head, pos = b->pos0 + i;
            const float *row = b->probs + h * b->head_stride + i * b->row_stride;
            if (s->has_topk) add_topk(s, b->layer, h, pos, row);
            if (s->has_full)
                memcpy(s->full + astore_tri((size_t)pos) * LH + ((size_t)b->layer * s->n_head + h) * (pos + 1),
                       row, sizeof(float) * (pos + 1));
        }
    if (!s->has_hmean) return;
    float *acc = j->acc + (size_t)ith * (b->pos0 + b->n_query);
    if (b->n_query >= nth) {
        for (int i = ith; i < b->n_query; i += nth) add_hmean(s, b, i, 0, (size_t)b->pos0 + i + 1, acc);
        return;
    }
    for (int i = 0; i < b->n_query; i++) {
        size_t n = (size_t)b->pos0 + i + 1, per = ((n + nth - 1) / nth + HMEAN_PART - 1) / HMEAN_PART * HMEAN_PART;
        size_t k0 = (size_t)ith * per, k1 = k0 + per < n ? k0 + per : n;
        if (k0 < k1) add_hmean(s, b, i, k0, k1, acc);
    }
}

/* Work per thread below which a block stays on this thread, in units of
 * about a third of a nanosecond: per row entry, top-k costs 8 (it reads the
 * row twice and sorts its candidates), tier (c) 2 (a copy into new pages),
 * the head mean 1 (an add). Handing work to a worker that is still
 * spinning costs about a microsecond, so only blocks of a few microseconds
 * stay: a small model's first decode steps, or a decode step's head means
 * alone (the server's tiers) on a small model. */
#define WORK_PER_THREAD ((size_t)8192)

static int probs_threads(const astore *s, const heed_attn_block *b, const pool *p) {
    int rows = b->n_query * b->n_head, nth = p ? pool_size(p) : 1;
    if (nth <= 1) return 1;
    /* row i has pos0 + i + 1 entries */
    size_t entries = (size_t)b->n_head * b->n_query * ((size_t)b->pos0 + ((size_t)b->n_query + 1) / 2);
    size_t work = entries * ((size_t)s->has_topk * 8 + (size_t)s->has_full * 2 + s->has_hmean);
    size_t want = work / WORK_PER_THREAD + 1;
    if (want < (size_t)nth) nth = (int)want;
    return nth < rows ? nth : rows;
}

void astore_add_probs(astore *s, const heed_attn_block *b, pool *p) {
    if (s->failed) return;
    if (b->n_head != s->n_head || b->layer < 0 || b->layer >= s->n_layer ||
        astore_reserve(s, b->pos0 + b->n_query)) {
        s->failed = true;
        return;
    }
    int nth = probs_threads(s, b, p);
    if (s->has_hmean) { /* per-thread head-mean rows, kept for the next block */
        size_t need = (size_t)nth * (b->pos0 + b->n_query);
        if (need > s->acc_cap) {
            size_t cap = s->acc_cap * 2 > need ? s->acc_cap * 2 : need;
            float *a = malloc(sizeof(float) * cap);
            if (!a) {
                s->failed = true;
                return;
            }
            free(s->acc);
            s->acc = a;
            s->acc_cap = cap;
        }
    }
    if (s->has_mi && !b->row_mi) s->has_mi = false; /* a block without statistics: none kept */
    if (s->has_mi)
        for (int i = 0; i < b->n_query; i++)
            for (int h = 0; h < b->n_head; h++) {
                float *d = s->mi + (((size_t)(b->pos0 + i) * s->n_layer + b->layer) * s->n_head + h) * 2;
                const float *m = b->row_mi + 2 * ((size_t)h * b->n_query + i);
                d[0] = m[0], d[1] = m[1];
            }
    probs_job j = {s, b, s->acc};
    if (nth > 1) pool_run(p, nth, probs_task, &j);
    else probs_task(&j, 0, 1);
    if (b->layer == s->n_layer - 1 && b->pos0 + b->n_query > s->n_pos) s->n_pos = b->pos0 + b->n_query;
}

/* ------------------------------------------------------------- summaries */

/* Rows recomputed per summary block at most (floats): 16 MB of scratch. */
enum { SUM_BLOCK_FLOATS = 4 << 20 };

typedef struct sum_job {
    const astore *src;
    const kern_ops *ops;
    heed_attn_block b; /* the block being filled: probs is the scratch */
} sum_job;

/* The block's rows, every head, as the hook would have seen them: (query,
 * head) pairs interleaved over threads; each row is written by one thread. */
static void sum_rows_task(void *arg, int ith, int nth) {
    const sum_job *j = arg;
    const heed_attn_block *b = &j->b;
    float *probs = (float *)b->probs;
    for (int idx = ith; idx < b->n_query * b->n_head; idx += nth) {
        int i = idx / b->n_head, h = idx % b->n_head;
        (void)astore_row(j->src, j->ops, b->layer, h, b->pos0 + i, probs + h * b->head_stride + i * b->row_stride);
    }
}

int astore_summarize(const astore *src, const kern_ops *ops, pool *p, int top_k, bool head_mean, astore *out) {
    astore_params ap = {top_k, false, head_mean, 0, NULL, 0};
    int rc = astore_init(out, src->n_layer, src->n_head, src->n_head_kv, src->head_dim, &ap);
    if (rc) return rc;
    memcpy(out->rules, src->rules, sizeof *out->rules * (size_t)src->n_layer);
    for (int l = 0; l < src->n_layer; l++) out->rules[l].ko = NULL, out->rules[l].n_ko = 0; /* src's storage */
    if ((rc = astore_set_knockouts(out, src->ko_list, src->n_ko_list))) {
        astore_free(out);
        return rc;
    }
    if (!src->has_qk && !src->has_full) {
        astore_free(out);
        return HEED_ERR_UNSUPPORTED;
    }
    int P = src->n_pos, H = src->n_head;
    size_t per_query = (size_t)H * (P > 0 ? P : 1);
    int Q = per_query >= SUM_BLOCK_FLOATS ? 1 : (int)(SUM_BLOCK_FLOATS / per_query);
    if (Q > P) Q = P;
    float *buf = P > 0 ? malloc(sizeof(float) * per_query * Q) : NULL;
    if (P > 0 && (!buf || astore_plan(out, P))) {
        free(buf);
        astore_free(out);
        return HEED_ERR_NOMEM;
    }
    int nth = p ? pool_size(p) : 1;
    for (int l = 0; l < src->n_layer && !out->failed; l++)
        for (int pos0 = 0; pos0 < P && !out->failed; pos0 += Q) {
            int n = P - pos0 < Q ? P - pos0 : Q;
            size_t row = (size_t)pos0 + n;
            sum_job j = {src, ops, {l, H, pos0, n, row, (size_t)n * row, buf, NULL}};
            if (nth > 1 && n * H > 1) pool_run(p, nth < n * H ? nth : n * H, sum_rows_task, &j);
            else sum_rows_task(&j, 0, 1);
            astore_add_probs(out, &j.b, p);
        }
    free(buf);
    if (out->failed) {
        astore_free(out);
        return HEED_ERR_NOMEM;
    }
    out->n_pos = P;
    return HEED_OK;
}

int astore_row(const astore *s, const kern_ops *ops, int layer, int head, int pos, float *out) {
    if (layer < 0 || layer >= s->n_layer || head < 0 || head >= s->n_head || pos < 0 || pos >= s->n_pos)
        return HEED_ERR_INVALID_ARG;
    size_t L = (size_t)s->n_layer, H = (size_t)s->n_head;
    if (s->has_full) {
        memcpy(out, s->full + astore_tri((size_t)pos) * L * H + ((size_t)layer * H + head) * (pos + 1),
               sizeof(float) * (pos + 1));
        return HEED_OK;
    }
    if (!s->has_qk) return HEED_ERR_UNSUPPORTED;
    int hd = s->head_dim, group = s->n_head / s->n_head_kv;
    const float *qv = s->q + ((size_t)pos * L + layer) * s->q_dim + (size_t)head * hd;
    const float *keys = s->k[layer * s->n_head_kv + head / group];
    kern_attn_row(ops, out, qv, keys, hd, pos, head, &s->rules[layer]); /* the forward pass's steps */
    return HEED_OK;
}

int astore_rows(const astore *s, const kern_ops *ops, int layer, const int *heads, int n, int pos, float *const *out) {
    if (n < 1 || n > KERN_ATTN_BLOCK || layer < 0 || layer >= s->n_layer || pos < 0 || pos >= s->n_pos)
        return HEED_ERR_INVALID_ARG;
    int group = s->n_head / s->n_head_kv;
    for (int i = 0; i < n; i++)
        if (heads[i] < 0 || heads[i] >= s->n_head || heads[i] / group != heads[0] / group) return HEED_ERR_INVALID_ARG;
    if (s->has_full || !s->has_qk || n == 1) {
        for (int i = 0; i < n; i++) {
            int rc = astore_row(s, ops, layer, heads[i], pos, out[i]);
            if (rc) return rc;
        }
        return HEED_OK;
    }
    const kern_attn_rule *r = &s->rules[layer];
    int hd = s->head_dim, lo = kern_attn_first_key(pos, r->window), nk = pos + 1 - lo;
    const float *keys = s->k[layer * s->n_head_kv + heads[0] / group] + (size_t)lo * hd;
    float *rows[KERN_ATTN_BLOCK];
    const float *qs[KERN_ATTN_BLOCK];
    int n_keys[KERN_ATTN_BLOCK];
    for (int i = 0; i < n; i++) {
        rows[i] = out[i] + lo;
        qs[i] = s->q + ((size_t)pos * s->n_layer + layer) * s->q_dim + (size_t)heads[i] * hd;
        n_keys[i] = nk;
    }
    /* the keys read once for the group's heads; each row then takes kern_attn_row's steps */
    ops->attn_scores_multi(rows, qs, n_keys, n, keys, (size_t)hd, hd, r->scale);
    for (int i = 0; i < n; i++) {
        if (lo) memset(out[i], 0, sizeof(float) * (size_t)lo);
        if (r->softcap > 0.0f) kern_softcap(rows[i], nk, r->softcap);
        if (r->n_ko) kern_attn_knockout(out[i], lo, pos + 1, pos, heads[i], r);
        ops->softmax(rows[i], nk);
    }
    return HEED_OK;
}

int astore_col(const astore *s, const kern_ops *ops, int layer, int head, int key, int q0, int q1, float *out,
               float *mi) {
    if (layer < 0 || layer >= s->n_layer || head < 0 || head >= s->n_head || key < 0 || q0 < key || q1 < q0 ||
        q1 > s->n_pos)
        return HEED_ERR_INVALID_ARG;
    const kern_attn_rule *r = &s->rules[layer];
    if (!s->has_qk || !s->has_mi || r->n_ko) return HEED_ERR_UNSUPPORTED;
    size_t L = (size_t)s->n_layer, H = (size_t)s->n_head;
    int hd = s->head_dim, group = s->n_head / s->n_head_kv, n = q1 - q0;
    /* queries past the window's reach get 0, as kern_attn_row leaves keys before its first:
     * query i sees key while kern_attn_first_key(i) <= key, i.e. i < key + window */
    int n_see = n;
    if (r->window > 0) n_see = key + r->window - q0 < n ? (key + r->window - q0 > 0 ? key + r->window - q0 : 0) : n;
    const float *kv = s->k[layer * s->n_head_kv + head / group] + (size_t)key * hd;
    const float *qv = s->q + ((size_t)q0 * L + layer) * s->q_dim + (size_t)head * hd;
    /* q_i . k_key with the roles swapped: the dot's products and sums are the same */
    if (n_see > 0) ops->attn_scores(out, kv, qv, L * s->q_dim, n_see, hd, r->scale);
    if (r->softcap > 0.0f && n_see > 0) kern_softcap(out, n_see, r->softcap);
    for (int i = 0; i < n_see; i++) {
        const float *m = s->mi + (((size_t)(q0 + i) * L + layer) * H + head) * 2;
        mi[i] = m[0], mi[n + i] = m[1];
    }
    if (n_see > 0) ops->softmax_apply(out, n_see, mi, mi + n);
    for (int i = n_see; i < n; i++) out[i] = 0.0f;
    return HEED_OK;
}

size_t astore_bytes(const astore *s) {
    size_t P = (size_t)s->n_pos, L = (size_t)s->n_layer, H = (size_t)s->n_head, n = 0;
    if (s->has_qk) n += P * L * (size_t)(s->q_dim + s->kv_dim) * sizeof(float);
    if (s->has_topk) n += P * L * H * (size_t)s->top_k * (sizeof(uint32_t) + sizeof(uint16_t));
    if (s->has_hmean) n += astore_tri(P) * L * sizeof(uint16_t);
    if (s->has_full) n += astore_tri(P) * L * H * sizeof(float);
    if (s->has_mi) n += P * L * H * 2 * sizeof(float);
    return n;
}
