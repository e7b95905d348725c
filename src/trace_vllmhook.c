/*
 * trace_vllmhook.c - IBM vLLM-Hook's q/k captures read into a heed_run's
 * exact tier (docs/TRACE_FORMAT.md, "IBM vLLM-Hook's q/k captures"): the
 * same run trace.c builds from heed-trace/1, rows recomputed from q and k.
 *
 * A capture is a folder with one qk.safetensors + qk.json per
 * tensor-parallel rank: in tp_rank_N sub-folders, or the folder itself for
 * one rank. qk.json's layer_order names each layer's q and k tensors; they
 * are the inputs of vLLM's Attention module (after RoPE and any q/k norm),
 * flattened to heads x head_dim, in the model's dtype. Two packings:
 *   compact (compact_all_tokens): q [sum q_seq_lens, W] the passes'
 *     queries concatenated; k [sum k_full_lens, W] each sequence's keys once;
 *     k_prefix_ends[s] the key count after each of sequence s's passes;
 *   padded: q [passes, max q, W], k [passes, max k, W], each pass's keys the
 *     whole prefix; q_seq_lens / k_seq_lens (older: seq_lens) the lengths.
 *     Which passes form one sequence is not recorded: a pass whose keys are
 *     its own queries starts one, a pass whose keys extend the previous
 *     pass's continues it (checked bit for bit).
 * Ranks hold the heads tp_shard says (vLLM's QKVParallelLinear split): they
 * are merged by global head, every rank present, replicated KV heads equal.
 * Everything is checked before it is used; messages name the rank's file
 * and the field. What the capture lacks (token ids; sometimes geometry)
 * comes from heed_trace_params, and its absence names the flag.
 */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "err.h"
#include "kern.h"
#include "run.h"
#include "safetensors.h"
#include "trace_vllmhook.h"

#define VH_MAX_RANKS 1024
#define VH_MAX_JSON (64u << 20)
#define VH_MAX_IDS_FILE (64u << 20)

typedef struct vh_rank {
    int rank;            /* tp_rank */
    char sub[32];        /* "tp_rank_N/" or "": the messages' prefix */
    char dir[4096];
    json_t *meta;        /* qk.json */
    st_file *st;         /* qk.safetensors */
    int q0, nq, kv0, nkv; /* global heads held: q0..q0+nq, kv0..kv0+nkv */
    bool replica;        /* a lower rank holds the same KV heads */
} vh_rank;

typedef struct vh {
    char *err;
    size_t err_size;
    vh_rank *ranks;
    int n_ranks;
    bool compact;
    int L, H, KV, hd, T;
    int64_t *qa, *qb;  /* (T) position p's query: compact row qa[p]; padded pass qa[p], row qb[p] */
    int64_t ka;        /* compact: the sequence's first key row; padded: its last pass */
    int64_t *chk;      /* padded: the sequence's earlier passes, whose keys the last pass's must extend */
    int64_t *chk_n;    /* their key counts */
    int n_chk;
    int64_t n_pass, q_rows, k_rows, max_q, max_k; /* what the shapes must be */
} vh;

__attribute__((format(printf, 4, 5))) static int vfail(vh *v, const char *where, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    err_vat(v->err, v->err_size, rc, where, fmt, ap);
    va_end(ap);
    return rc;
}

static bool is_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static bool is_dir(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* "tp_rank_N" exactly: N, else -1. */
static int rank_of_name(const char *name) {
    if (strncmp(name, "tp_rank_", 8) || !name[8]) return -1;
    long n = 0;
    for (const char *c = name + 8; *c; c++) {
        if (*c < '0' || *c > '9' || n > VH_MAX_RANKS) return -1;
        n = n * 10 + (*c - '0');
    }
    return (int)n;
}

static json_t *load_json(const char *path, size_t limit, json_error_t *je) {
    struct stat sb;
    if (stat(path, &sb) || (uint64_t)sb.st_size > limit) {
        snprintf(je->text, sizeof je->text, "is missing or larger than %zu bytes", limit);
        je->line = 0;
        return NULL;
    }
    return json_load_file(path, JSON_REJECT_DUPLICATES, je);
}

/* A folder holding a vLLM-Hook sidecar: qk.json with layer_order, or qk.pt. */
static bool has_capture(const char *dir) {
    char p[4200];
    snprintf(p, sizeof p, "%s/qk.json", dir);
    if (is_file(p)) {
        json_error_t je;
        json_t *j = load_json(p, VH_MAX_JSON, &je);
        bool yes = j && json_is_object(j) && json_object_get(j, "layer_order");
        json_decref(j);
        return yes;
    }
    snprintf(p, sizeof p, "%s/qk.pt", dir);
    return is_file(p);
}

bool trace_vllmhook_detect(const char *dir) {
    char p[4200];
    if (snprintf(p, sizeof p, "%s/trace.json", dir) >= (int)sizeof p || is_file(p)) return false;
    if (has_capture(dir)) return true;
    DIR *d = opendir(dir);
    if (!d) return false;
    bool yes = false;
    for (struct dirent *e; !yes && (e = readdir(d));)
        if (rank_of_name(e->d_name) >= 0 && snprintf(p, sizeof p, "%s/%s", dir, e->d_name) < (int)sizeof p)
            yes = is_dir(p) && has_capture(p);
    closedir(d);
    return yes;
}

heed_trace_params heed_trace_default_params(void) {
    return (heed_trace_params){0, NULL, 0, 0, 0, 0, 0.0, NULL, 0.0};
}

/* ------------------------------------------------------------ the sidecar */

/* An integer of an object: *out, or 1 when absent (null counts as absent). */
static int opt_int(vh *v, const char *file, json_t *o, const char *key, long lo, long hi, long *out) {
    json_t *x = json_object_get(o, key);
    if (!x || json_is_null(x)) return 1;
    if (!json_is_integer(x) || json_integer_value(x) < lo || json_integer_value(x) > hi)
        return vfail(v, file, HEED_ERR_FORMAT, "'%s' is not an integer in %ld..%ld", key, lo, hi);
    *out = (long)json_integer_value(x);
    return HEED_OK;
}

/* A list of n non-negative integers below hi (n < 0: any length, *n_out set). */
static int int_list(vh *v, const char *file, const char *key, json_t *a, long hi, int64_t **out, int64_t *n_out) {
    if (!json_is_array(a)) return vfail(v, file, HEED_ERR_FORMAT, "'%s' is not a list", key);
    size_t n = json_array_size(a);
    if (n > LIMIT_MAX_TOKENS) return vfail(v, file, HEED_ERR_FORMAT, "'%s' has %zu entries, more than %d", key, n, LIMIT_MAX_TOKENS);
    int64_t *x = malloc(sizeof(int64_t) * (n + 1));
    if (!x) return HEED_ERR_NOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *e = json_array_get(a, i);
        if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > hi) {
            free(x);
            return vfail(v, file, HEED_ERR_FORMAT, "'%s[%zu]' is not an integer in 0..%ld", key, i, hi);
        }
        x[i] = json_integer_value(e);
    }
    *out = x;
    *n_out = (int64_t)n;
    return HEED_OK;
}

/* The rank folders: tp_rank_N sub-folders, else dir itself. */
static int find_ranks(vh *v, const char *dir) {
    v->ranks = calloc(VH_MAX_RANKS, sizeof(vh_rank));
    if (!v->ranks) return HEED_ERR_NOMEM;
    DIR *d = opendir(dir);
    if (!d) return vfail(v, dir, HEED_ERR_IO, "cannot be read");
    for (struct dirent *e; (e = readdir(d));) {
        int r = rank_of_name(e->d_name);
        char p[4096];
        if (r < 0 || snprintf(p, sizeof p, "%s/%s", dir, e->d_name) >= (int)sizeof p || !is_dir(p)) continue;
        if (v->n_ranks == VH_MAX_RANKS) {
            closedir(d);
            return vfail(v, dir, HEED_ERR_FORMAT, "more than %d tp_rank_N folders", VH_MAX_RANKS);
        }
        vh_rank *k = &v->ranks[v->n_ranks++];
        k->rank = r;
        snprintf(k->sub, sizeof k->sub, "tp_rank_%d/", r);
        memcpy(k->dir, p, sizeof p);
    }
    closedir(d);
    if (!v->n_ranks) { /* the folder is one rank's */
        vh_rank *k = &v->ranks[v->n_ranks++];
        const char *base = strrchr(dir, '/');
        int r = rank_of_name(base ? base + 1 : dir);
        k->rank = r < 0 ? 0 : r;
        snprintf(k->dir, sizeof k->dir, "%s", dir);
    }
    for (int i = 1; i < v->n_ranks; i++) /* by rank (a handful: insertion sort) */
        for (int j = i; j > 0 && v->ranks[j].rank < v->ranks[j - 1].rank; j--) {
            vh_rank t = v->ranks[j];
            v->ranks[j] = v->ranks[j - 1], v->ranks[j - 1] = t;
        }
    for (int i = 1; i < v->n_ranks; i++)
        if (v->ranks[i].rank == v->ranks[i - 1].rank)
            return vfail(v, dir, HEED_ERR_FORMAT, "two folders claim tp_rank %d", v->ranks[i].rank);
    return HEED_OK;
}

/* Opens a rank's qk.json (refusing a .pt capture) and qk.safetensors. */
static int open_rank(vh *v, vh_rank *k) {
    char p[4200], name[64], file[64];
    snprintf(file, sizeof file, "%sqk.json", k->sub);
    snprintf(p, sizeof p, "%s/qk.json", k->dir);
    if (!is_file(p)) {
        snprintf(p, sizeof p, "%s/qk.pt", k->dir);
        if (is_file(p))
            return vfail(v, NULL, HEED_ERR_UNSUPPORTED,
                         "%sqk.pt: a PyTorch pickle, which heed does not read. vLLM-Hook writes one for a score capture "
                         "(qk_capture 'score', MIA_QK_SCORE=1), a quantized capture, or when safetensors are off: "
                         "capture raw q and k with MIA_USE_SAFETENSORS=1 (VLLM_HOOK_USE_SAFETENSORS=1 in older "
                         "versions) to get qk.safetensors and qk.json", k->sub);
        return vfail(v, file, HEED_ERR_IO, "is missing (every rank folder needs qk.json and qk.safetensors)");
    }
    json_error_t je;
    if (!(k->meta = load_json(p, VH_MAX_JSON, &je)))
        return vfail(v, file, HEED_ERR_FORMAT, "invalid JSON: %s (line %d)", je.text, je.line);
    if (!json_is_object(k->meta) || !json_is_array(json_object_get(k->meta, "layer_order")))
        return vfail(v, file, HEED_ERR_FORMAT, "has no 'layer_order' list (not a vLLM-Hook q/k sidecar)");
    snprintf(p, sizeof p, "%s/qk.safetensors", k->dir);
    snprintf(name, sizeof name, "%sqk.safetensors", k->sub);
    int src = 0;
    char serr[512];
    if (!(k->st = st_open(p, name, &src, serr, sizeof serr))) return vfail(v, NULL, src ? src : HEED_ERR_FORMAT, "%s", serr);
    return HEED_OK;
}

/* The geometry: a flag, else tp_shard, else config; absent: the flag's name. */
static int geometry_one(vh *v, const char *file, int given, const char *shard_key,
                        const char *cfg_key, const char *flag, long hi, int *out) {
    if (given > 0) {
        if (given > hi) return vfail(v, NULL, HEED_ERR_INVALID_ARG, "%s %d is more than %ld", flag, given, hi);
        *out = given;
        return HEED_OK;
    }
    long x = 0;
    json_t *shard = json_object_get(v->ranks[0].meta, "tp_shard");
    int rc = json_is_object(shard) ? opt_int(v, file, shard, shard_key, 1, hi, &x) : 1;
    if (rc == 1) rc = opt_int(v, file, json_object_get(v->ranks[0].meta, "config"), cfg_key, 1, hi, &x);
    if (rc == 1)
        return vfail(v, file, HEED_ERR_FORMAT, "'config.%s' is missing: pass %s N", cfg_key, flag);
    *out = (int)x;
    return rc;
}

static const char *const shard_fields[] = {"tp_rank", "tp_size", "q_head_start", "num_local_q_heads", "kv_head_start",
                                           "num_local_kv_heads", "num_kv_head_replicas", "num_attention_heads",
                                           "num_key_value_heads", "head_dim"};

/* Each rank's heads: its tp_shard, checked against vLLM's split (every
 * rank 0..tp_size-1 present); with no tp_shard, one rank holding all. */
static int shard_ranks(vh *v) {
    int n_with = 0;
    for (int i = 0; i < v->n_ranks; i++) n_with += json_is_object(json_object_get(v->ranks[i].meta, "tp_shard"));
    if (!n_with) {
        if (v->n_ranks > 1)
            return vfail(v, NULL, HEED_ERR_FORMAT, "%d rank folders but no qk.json has 'tp_shard': which heads each holds "
                         "is unknown (refusing to guess the head order)", v->n_ranks);
        vh_rank *k = &v->ranks[0];
        k->q0 = 0, k->nq = v->H, k->kv0 = 0, k->nkv = v->KV;
        return HEED_OK;
    }
    int tp = 0;
    for (int i = 0; i < v->n_ranks; i++) {
        vh_rank *k = &v->ranks[i];
        char file[64];
        snprintf(file, sizeof file, "%sqk.json", k->sub);
        json_t *s = json_object_get(k->meta, "tp_shard");
        if (!json_is_object(s)) return vfail(v, file, HEED_ERR_FORMAT, "has no 'tp_shard' while other ranks have one");
        long f[10];
        for (int j = 0; j < 10; j++) {
            int rc = opt_int(v, file, s, shard_fields[j], 0, LIMIT_MAX_DIM, &f[j]);
            if (rc == 1) return vfail(v, file, HEED_ERR_FORMAT, "'tp_shard.%s' is missing", shard_fields[j]);
            if (rc) return rc;
        }
        if (i == 0) tp = (int)f[1];
        if (f[1] != tp) return vfail(v, file, HEED_ERR_FORMAT, "'tp_shard.tp_size' is %ld; tp_rank %d's is %d", f[1], v->ranks[0].rank, tp);
        if (f[0] != k->rank) return vfail(v, file, HEED_ERR_FORMAT, "'tp_shard.tp_rank' is %ld in the folder of rank %d", f[0], k->rank);
        if (f[7] != v->H || f[8] != v->KV || f[9] != v->hd)
            return vfail(v, file, HEED_ERR_FORMAT, "'tp_shard' says %ld/%ld heads of %ld; the import uses %d/%d of %d",
                         f[7], f[8], f[9], v->H, v->KV, v->hd);
        /* vLLM's QKVParallelLinear: q heads split evenly; KV heads split, or replicated when tp >= KV */
        if (tp < 1 || k->rank >= tp || v->H % tp || (tp >= v->KV ? tp % v->KV : v->KV % tp))
            return vfail(v, file, HEED_ERR_FORMAT, "'tp_shard': tp_rank %d of %d cannot split %d/%d heads", k->rank, tp, v->H, v->KV);
        long lq = v->H / tp, lkv = tp >= v->KV ? 1 : v->KV / tp, rep = tp >= v->KV ? tp / v->KV : 1;
        long want[10] = {k->rank, tp, k->rank * lq, lq, (k->rank / rep) * lkv, lkv, rep, v->H, v->KV, v->hd};
        for (int j = 2; j < 7; j++)
            if (f[j] != want[j])
                return vfail(v, file, HEED_ERR_FORMAT, "'tp_shard.%s' is %ld; vLLM's split of %d/%d heads over %d ranks gives %ld",
                             shard_fields[j], f[j], v->H, v->KV, tp, want[j]);
        k->q0 = (int)f[2], k->nq = (int)f[3], k->kv0 = (int)f[4], k->nkv = (int)f[5];
        k->replica = k->rank % rep != 0;
    }
    if (v->n_ranks != tp) {
        char have[256] = "";
        for (int i = 0, o = 0; i < v->n_ranks && o < 200; i++) o += snprintf(have + o, sizeof have - o, "%s%d", i ? ", " : "", v->ranks[i].rank);
        return vfail(v, NULL, HEED_ERR_FORMAT, "the capture has tp_size %d but only tp_rank %s: every rank holds different "
                     "heads, so each tp_rank_N folder must be there (pass the folder that holds them all)", tp, have);
    }
    return HEED_OK;
}

/* The layers: layer_order's layer_num 0..L-1 each once, all_tokens. */
static int check_layers(vh *v, vh_rank *k) {
    char file[64];
    snprintf(file, sizeof file, "%sqk.json", k->sub);
    json_t *lo = json_object_get(k->meta, "layer_order");
    const char *def = json_string_value(json_object_get(k->meta, "hookq_mode"));
    size_t n = json_array_size(lo);
    if (n < 1 || n > LIMIT_MAX_LAYER) return vfail(v, file, HEED_ERR_FORMAT, "'layer_order' has %zu layers, not 1..%d", n, LIMIT_MAX_LAYER);
    if (!v->L) v->L = (int)n;
    if ((int)n != v->L) return vfail(v, file, HEED_ERR_FORMAT, "'layer_order' has %zu layers; tp_rank %d's has %d", n, v->ranks[0].rank, v->L);
    unsigned char *seen = calloc(n, 1);
    if (!seen) return HEED_ERR_NOMEM;
    int rc = HEED_OK;
    for (size_t i = 0; !rc && i < n; i++) {
        json_t *it = json_array_get(lo, i);
        json_t *ln = json_object_get(it, "layer_num");
        const char *mode = json_string_value(json_object_get(it, "hookq_mode"));
        const char *mod = json_string_value(json_object_get(it, "module_name"));
        if (!mode) mode = def ? def : "all_tokens";
        if (!json_is_string(json_object_get(it, "key_q")) || !json_is_string(json_object_get(it, "key_k")))
            rc = vfail(v, file, HEED_ERR_FORMAT, "'layer_order[%zu]' lacks 'key_q' or 'key_k'", i);
        else if (strcmp(mode, "all_tokens"))
            rc = vfail(v, file, HEED_ERR_UNSUPPORTED, "layer '%s' was captured in hookq_mode '%.40s': only the last query of "
                       "each pass is kept, so the other positions' rows cannot be recomputed; capture with hookq_mode "
                       "'all_tokens'", mod ? mod : "?", mode);
        else if (!json_is_integer(ln) || json_integer_value(ln) < 0 || json_integer_value(ln) >= (json_int_t)n ||
                 seen[json_integer_value(ln)]++)
            rc = vfail(v, file, HEED_ERR_FORMAT, "'layer_order[%zu].layer_num' is not a new layer in 0..%zu: heed needs "
                       "every layer of the model, each once (output_qk for all layers)", i, n - 1);
    }
    free(seen);
    return rc;
}

static json_t *item_of(const vh_rank *k, int l) {
    json_t *lo = json_object_get(k->meta, "layer_order");
    for (size_t i = 0; i < json_array_size(lo); i++)
        if (json_integer_value(json_object_get(json_array_get(lo, i), "layer_num")) == l) return json_array_get(lo, i);
    return NULL;
}

/* The passes and sequences (the reference rank's lengths; every rank's
 * must be the same), and the chosen sequence's rows. */
static int plan_sequence(vh *v, int seq, int *n_prompt) {
    static const char *const same[] = {"compact_all_tokens", "q_seq_lens", "k_seq_lens", "seq_lens", "k_full_lens", "k_prefix_ends"};
    json_t *m = v->ranks[0].meta;
    for (int i = 1; i < v->n_ranks; i++)
        for (size_t j = 0; j < sizeof same / sizeof *same; j++) {
            json_t *a = json_object_get(m, same[j]), *b = json_object_get(v->ranks[i].meta, same[j]);
            if ((a || b) && !(a && b && json_equal(a, b)))
                return vfail(v, NULL, HEED_ERR_FORMAT, "%sqk.json: '%s' differs from tp_rank %d's: the ranks captured "
                             "different tokens", v->ranks[i].sub, same[j], v->ranks[0].rank);
        }
    char file[64];
    snprintf(file, sizeof file, "%sqk.json", v->ranks[0].sub);
    json_t *c = json_object_get(m, "compact_all_tokens");
    v->compact = json_is_true(c);
    int64_t *ql = NULL, *kl = NULL, n_q = 0, n_k = 0;
    json_t *jq = json_object_get(m, "q_seq_lens"), *jk = json_object_get(m, "k_seq_lens");
    if (!jq) jq = json_object_get(m, "seq_lens"); /* before q and k had their own (both the q lengths then) */
    if (!jk && !v->compact) jk = jq;
    int rc = jq ? int_list(v, file, "q_seq_lens", jq, LIMIT_MAX_TOKENS, &ql, &n_q)
                : vfail(v, file, HEED_ERR_FORMAT, "'q_seq_lens' is missing (an all_tokens capture records it)");
    int64_t first = -1, last = -1, T = 0, first_n = 0; /* the chosen sequence's passes */
    if (!rc && v->compact) {
        int64_t *fl = NULL, n_s = 0;
        json_t *pe = json_object_get(m, "k_prefix_ends");
        rc = int_list(v, file, "k_full_lens", json_object_get(m, "k_full_lens"), LIMIT_MAX_TOKENS, &fl, &n_s);
        if (!rc && (!json_is_array(pe) || (int64_t)json_array_size(pe) != n_s))
            rc = vfail(v, file, HEED_ERR_FORMAT, "'k_prefix_ends' is not a list of %lld lists (one per 'k_full_lens')", (long long)n_s);
        if (!rc && (seq < 0 || seq >= n_s))
            rc = vfail(v, NULL, HEED_ERR_INVALID_ARG, "--sequence %d: the capture holds %lld sequence(s)", seq, (long long)n_s);
        int64_t pass = 0, qrow = 0, krow = 0;
        for (int64_t s = 0; !rc && s < n_s; s++) {
            int64_t *ends = NULL, n_e = 0, prev = 0;
            char key[64];
            snprintf(key, sizeof key, "k_prefix_ends[%lld]", (long long)s);
            rc = int_list(v, file, key, json_array_get(pe, (size_t)s), LIMIT_MAX_TOKENS, &ends, &n_e);
            if (!rc && (n_e < 1 || pass + n_e > n_q))
                rc = vfail(v, file, HEED_ERR_FORMAT, "'%s' has %lld passes; 'q_seq_lens' has %lld in all", key, (long long)n_e, (long long)n_q);
            if (!rc && ends[n_e - 1] != fl[s])
                rc = vfail(v, file, HEED_ERR_FORMAT, "'%s' ends at %lld; 'k_full_lens[%lld]' is %lld", key,
                           (long long)ends[n_e - 1], (long long)s, (long long)fl[s]);
            if (!rc && s == seq) {
                T = fl[s];
                if (!(v->qa = malloc(sizeof(int64_t) * (size_t)(T + 1)))) rc = HEED_ERR_NOMEM;
                v->ka = krow;
            }
            for (int64_t e = 0; !rc && e < n_e; e++, pass++) {
                int64_t n = ql[pass], start = ends[e] - n;
                if (start < prev)
                    rc = vfail(v, file, HEED_ERR_FORMAT, "sequence %lld's pass %lld holds queries %lld..%lld, which "
                               "overlap the previous pass's (up to %lld)", (long long)s, (long long)e, (long long)start,
                               (long long)ends[e] - 1, (long long)prev - 1);
                else if (start > prev)
                    rc = vfail(v, file, HEED_ERR_FORMAT, "sequence %lld's pass %lld holds queries %lld..%lld: queries "
                               "%lld..%lld were not captured (prefix caching on, or hooks_on 'decode'); capture with "
                               "enable_prefix_caching=False and hooks_on 'both' or 'prefill'", (long long)s, (long long)e,
                               (long long)start, (long long)ends[e] - 1, (long long)prev, (long long)start - 1);
                if (!rc && s == seq) {
                    if (e == 0) first_n = n;
                    for (int64_t i = 0; i < n; i++) v->qa[start + i] = qrow + i;
                }
                qrow += n, prev = ends[e];
            }
            krow += fl[s];
            free(ends);
        }
        if (!rc && pass != n_q)
            rc = vfail(v, file, HEED_ERR_FORMAT, "'q_seq_lens' has %lld passes; 'k_prefix_ends' lists %lld", (long long)n_q, (long long)pass);
        v->q_rows = qrow, v->k_rows = krow;
        free(fl);
    } else if (!rc) {
        rc = jk ? int_list(v, file, "k_seq_lens", jk, LIMIT_MAX_TOKENS, &kl, &n_k) : HEED_OK;
        if (!rc && jk && n_k != n_q)
            rc = vfail(v, file, HEED_ERR_FORMAT, "'k_seq_lens' has %lld passes; 'q_seq_lens' has %lld", (long long)n_k, (long long)n_q);
        int64_t s = -1;
        for (int64_t b = 0; !rc && b < n_q; b++) {
            int64_t nk = kl ? kl[b] : ql[b], cached = nk - ql[b];
            v->max_q = ql[b] > v->max_q ? ql[b] : v->max_q, v->max_k = nk > v->max_k ? nk : v->max_k;
            if (cached < 0) {
                rc = vfail(v, file, HEED_ERR_FORMAT, "pass %lld has %lld queries but %lld keys", (long long)b, (long long)ql[b], (long long)nk);
            } else if (cached == 0) { /* a new sequence */
                if (++s == seq) first = last = b, first_n = ql[b];
            } else if (b == 0 || cached != (kl ? kl[b - 1] : ql[b - 1])) {
                rc = vfail(v, file, HEED_ERR_FORMAT, "pass %lld's keys start at %lld but the previous pass ended at %lld: "
                           "queries were not captured (prefix caching on, or hooks_on 'decode'); capture with "
                           "enable_prefix_caching=False and hooks_on 'both' or 'prefill'", (long long)b, (long long)cached,
                           (long long)(b ? (kl ? kl[b - 1] : ql[b - 1]) : 0));
            } else if (s == seq) {
                last = b;
            }
        }
        if (!rc && (seq < 0 || seq > s))
            rc = vfail(v, NULL, HEED_ERR_INVALID_ARG, "--sequence %d: the capture holds %lld sequence(s)", seq, (long long)s + 1);
        if (!rc) {
            T = kl ? kl[last] : ql[last];
            v->ka = last;
            v->n_chk = (int)(last - first);
            v->qa = malloc(sizeof(int64_t) * (size_t)(T + 1));
            v->qb = malloc(sizeof(int64_t) * (size_t)(T + 1));
            v->chk = malloc(sizeof(int64_t) * (size_t)(v->n_chk + 1));
            v->chk_n = malloc(sizeof(int64_t) * (size_t)(v->n_chk + 1));
            if (!v->qa || !v->qb || !v->chk || !v->chk_n) rc = HEED_ERR_NOMEM;
        }
        for (int64_t b = first; !rc && b <= last; b++) {
            int64_t nk = kl ? kl[b] : ql[b];
            for (int64_t i = 0; i < ql[b]; i++) v->qa[nk - ql[b] + i] = b, v->qb[nk - ql[b] + i] = i;
            if (b < last) v->chk[b - first] = b, v->chk_n[b - first] = nk;
        }
        v->n_pass = n_q;
    }
    free(ql), free(kl);
    if (!rc && (T < 1 || T > LIMIT_MAX_TOKENS))
        rc = vfail(v, file, HEED_ERR_FORMAT, "sequence %d has %lld tokens, not 1..%d", seq, (long long)T, LIMIT_MAX_TOKENS);
    if (!rc) v->T = (int)T, *n_prompt = (int)first_n;
    return rc;
}

/* ------------------------------------------------------------ the flags */

/* The ids file: a JSON list, or integers between spaces, commas, newlines. */
static int read_ids(vh *v, const char *path, int T, int32_t *ids) {
    if (!path)
        return vfail(v, NULL, HEED_ERR_INVALID_ARG, "a vLLM-Hook capture holds no token ids: pass --token-ids FILE with the "
                     "sequence's %d ids (a JSON list, or integers separated by spaces, commas or newlines)", T);
    FILE *f = fopen(path, "rb");
    if (!f) return vfail(v, path, HEED_ERR_IO, "cannot be read (--token-ids)");
    char *buf = malloc(VH_MAX_IDS_FILE + 1);
    size_t n = buf ? fread(buf, 1, VH_MAX_IDS_FILE + 1, f) : 0;
    fclose(f);
    if (!buf) return HEED_ERR_NOMEM;
    if (n > VH_MAX_IDS_FILE) {
        free(buf);
        return vfail(v, path, HEED_ERR_FORMAT, "is larger than %u bytes (--token-ids)", VH_MAX_IDS_FILE);
    }
    buf[n] = 0;
    int rc = HEED_OK, got = 0;
    const char *c = buf + strspn(buf, " \t\r\n");
    if (*c == '[') {
        json_error_t je;
        json_t *a = json_loadb(buf, n, 0, &je);
        if (!json_is_array(a)) rc = vfail(v, path, HEED_ERR_FORMAT, "is not a JSON list of ids (--token-ids): %s", je.text);
        for (size_t i = 0; !rc && i < json_array_size(a); i++) {
            json_t *x = json_array_get(a, i);
            if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) >= LIMIT_MAX_VOCAB)
                rc = vfail(v, path, HEED_ERR_FORMAT, "id %zu is not an integer in 0..%d (--token-ids)", i, LIMIT_MAX_VOCAB - 1);
            else if (got < T)
                ids[got] = (int32_t)json_integer_value(x);
            got++;
        }
        json_decref(a);
    } else {
        while (!rc && *(c += strspn(c, " \t\r\n,"))) {
            char *end;
            long x = strtol(c, &end, 10);
            if (end == c || x < 0 || x >= LIMIT_MAX_VOCAB || (*end && !strchr(" \t\r\n,", *end)))
                rc = vfail(v, path, HEED_ERR_FORMAT, "id %d is not an integer in 0..%d (--token-ids)", got, LIMIT_MAX_VOCAB - 1);
            else if (got < T)
                ids[got] = (int32_t)x;
            got++, c = end;
        }
    }
    free(buf);
    if (!rc && got != T)
        rc = vfail(v, path, HEED_ERR_FORMAT, "has %d ids; the captured sequence has %d tokens (--token-ids)", got, T);
    return rc;
}

/* --sliding-window: "W" for every layer or "W0,W1,..." one per layer. */
static int parse_windows(vh *v, const char *s, int L, int *w) {
    for (int l = 0; l < L; l++) w[l] = 0;
    if (!s) return HEED_OK;
    int n = 0;
    for (const char *c = s; *c; n++) {
        char *end;
        long x = strtol(c, &end, 10);
        if (end == c || x < 0 || x > LIMIT_MAX_CTX || (*end && *end != ',') || n >= L)
            return vfail(v, NULL, HEED_ERR_INVALID_ARG, "--sliding-window '%.60s' is not a window in 0..%d or a list of %d", s,
                         LIMIT_MAX_CTX, L);
        w[n] = (int)x;
        c = *end ? end + 1 : end;
    }
    if (n == 1)
        for (int l = 1; l < L; l++) w[l] = w[0];
    else if (n != L)
        return vfail(v, NULL, HEED_ERR_INVALID_ARG, "--sliding-window has %d windows; the capture has %d layers", n, L);
    return HEED_OK;
}

/* ------------------------------------------------------------ the data */

static float elem(const st_tensor *s, uint64_t i) {
    if (s->dtype == ST_F32) {
        float f;
        memcpy(&f, (const char *)s->data + 4 * i, 4);
        return f;
    }
    uint16_t h;
    memcpy(&h, (const char *)s->data + 2 * i, 2);
    return s->dtype == ST_F16 ? kern_f16_to_f32(h) : kern_bf16_to_f32(h);
}

/* A layer's tensor of a rank, of the shape the sidecar implies. */
static int get_tensor(vh *v, const vh_rank *k, json_t *item, bool is_q, const st_tensor **out) {
    char file[64];
    snprintf(file, sizeof file, "%sqk.safetensors", k->sub);
    const char *name = json_string_value(json_object_get(item, is_q ? "key_q" : "key_k"));
    const st_tensor *s = st_find(k->st, name);
    if (!s) return vfail(v, file, HEED_ERR_FORMAT, "no tensor '%s' (qk.json's layer_order names it)", name);
    int64_t w = (int64_t)(is_q ? k->nq : k->nkv) * v->hd;
    int64_t want[3] = {v->compact ? (is_q ? v->q_rows : v->k_rows) : v->n_pass, is_q ? v->max_q : v->max_k, w};
    int nd = v->compact ? 2 : 3;
    if (v->compact) want[1] = w;
    bool ok = s->n_dims == nd;
    for (int i = 0; ok && i < nd; i++) ok = s->shape[i] == want[i];
    if (!ok) {
        char got[96] = "", exp[96] = "";
        for (int i = 0, o = 0; i < s->n_dims && o < 80; i++) o += snprintf(got + o, sizeof got - o, "%s%lld", i ? ", " : "", (long long)s->shape[i]);
        for (int i = 0, o = 0; i < nd; i++) o += snprintf(exp + o, sizeof exp - o, "%s%lld", i ? ", " : "", (long long)want[i]);
        bool few = v->n_ranks == 1 && k->nq == v->H && s->n_dims == nd && s->shape[nd - 1] < w; /* no tp_shard */
        return vfail(v, file, HEED_ERR_FORMAT, "tensor '%s' has shape [%s]; qk.json and the geometry imply [%s] (%s, %d %s "
                     "heads x head_dim %d)%s", name, got, exp, v->compact ? "compact" : "padded", is_q ? k->nq : k->nkv,
                     is_q ? "query" : "KV", v->hd, few ? ": fewer heads than the model's, as in a capture of tensor-parallel "
                     "rank 0 alone (vLLM-Hook before tp_shard captured only rank 0); capture at tensor_parallel_size=1, "
                     "or pass --head-dim if the config's head_dim is wrong" : "");
    }
    *out = s;
    return HEED_OK;
}

/* Layer l of rank k into the run: its q heads, its KV heads (a replica's
 * must equal what the lower rank stored), bit checks of the padded
 * sequence's earlier passes. */
static int copy_layer(vh *v, const vh_rank *k, int l, heed_run *r) {
    char file[64];
    snprintf(file, sizeof file, "%sqk.safetensors", k->sub);
    json_t *item = item_of(k, l);
    const st_tensor *q, *kt;
    int rc = get_tensor(v, k, item, true, &q);
    if (!rc) rc = get_tensor(v, k, item, false, &kt);
    if (rc) return rc;
    const int hd = v->hd, T = v->T, L = v->L;
    const uint64_t wq = (uint64_t)k->nq * hd, wk = (uint64_t)k->nkv * hd;
    const size_t qd = (size_t)v->H * hd;
    for (int p = 0; p < T; p++) {
        uint64_t base = v->compact ? (uint64_t)v->qa[p] * wq : ((uint64_t)v->qa[p] * (uint64_t)v->max_q + (uint64_t)v->qb[p]) * wq;
        float *dst = r->st.q + ((size_t)p * L + l) * qd + (size_t)k->q0 * hd;
        for (uint64_t i = 0; i < wq; i++) {
            float x = elem(q, base + i);
            if (!isfinite(x)) return vfail(v, file, HEED_ERR_FORMAT, "tensor '%s': element %llu is not finite", q->name, (unsigned long long)(base + i));
            dst[i] = x;
        }
    }
    for (int p = 0; p < T; p++) {
        uint64_t base = v->compact ? ((uint64_t)v->ka + (uint64_t)p) * wk : ((uint64_t)v->ka * (uint64_t)v->max_k + (uint64_t)p) * wk;
        for (int g = 0; g < k->nkv; g++) {
            float *dst = r->st.k[l * v->KV + k->kv0 + g] + (size_t)p * hd;
            for (int d = 0; d < hd; d++) {
                float x = elem(kt, base + (uint64_t)g * hd + (uint64_t)d);
                if (!isfinite(x)) return vfail(v, file, HEED_ERR_FORMAT, "tensor '%s': element %llu is not finite", kt->name, (unsigned long long)(base + (uint64_t)g * hd + (uint64_t)d));
                if (k->replica && memcmp(&dst[d], &x, sizeof x))
                    return vfail(v, file, HEED_ERR_FORMAT, "tensor '%s': replicated KV head %d differs from the lower rank's "
                                 "copy at position %d", kt->name, k->kv0 + g, p);
                dst[d] = x;
            }
        }
    }
    const size_t es = st_dtype_size(kt->dtype);
    for (int c = 0; c < v->n_chk; c++) { /* padded: the earlier passes' keys are the sequence's prefix */
        const char *a = (const char *)kt->data + (size_t)v->chk[c] * (size_t)v->max_k * wk * es;
        const char *b = (const char *)kt->data + (size_t)v->ka * (size_t)v->max_k * wk * es;
        if (memcmp(a, b, (size_t)v->chk_n[c] * wk * es))
            return vfail(v, file, HEED_ERR_FORMAT, "tensor '%s': pass %lld's keys are not the start of pass %lld's: the passes "
                         "are not one sequence", kt->name, (long long)v->chk[c], (long long)v->ka);
    }
    return HEED_OK;
}

/* ------------------------------------------------------------ the import */

static bool params_set(const heed_trace_params *p) {
    return p && (p->sequence || p->token_ids || p->n_prompt || p->head_dim || p->n_head || p->n_head_kv || p->scale ||
                 p->sliding_window || p->attn_softcap);
}

int heed_trace_import_ex(const char *dir, const heed_trace_params *p, heed_run **out, char *err, size_t err_size) {
    if (!dir || !out) return HEED_ERR_INVALID_ARG;
    if (trace_vllmhook_detect(dir)) return trace_vllmhook_import(dir, p, out, err, err_size);
    if (params_set(p))
        return err_at(err, err_size, HEED_ERR_INVALID_ARG, dir, "is not a vLLM-Hook capture (no qk.json or qk.pt); "
                      "--sequence, --token-ids and the geometry flags apply to one only (a heed-trace/1 folder's "
                      "trace.json says everything)");
    return heed_trace_import(dir, out, err, err_size);
}

int trace_vllmhook_import(const char *dir, const heed_trace_params *pp, heed_run **out, char *err, size_t err_size) {
    if (!dir || !out) return HEED_ERR_INVALID_ARG;
    *out = NULL;
    if (err && err_size) err[0] = 0;
    heed_trace_params p = pp ? *pp : heed_trace_default_params();
    vh v = {.err = err, .err_size = err_size};
    heed_run *r = NULL;
    int *windows = NULL, n_prompt = 0;
    int rc = find_ranks(&v, dir);
    for (int i = 0; !rc && i < v.n_ranks; i++) rc = open_rank(&v, &v.ranks[i]);
    char file[64] = "qk.json";
    if (!rc) snprintf(file, sizeof file, "%sqk.json", v.ranks[0].sub);
    if (!rc) rc = geometry_one(&v, file, p.n_head, "num_attention_heads", "num_attention_heads", "--n-head", LIMIT_MAX_HEAD, &v.H);
    if (!rc) rc = geometry_one(&v, file, p.n_head_kv, "num_key_value_heads", "num_key_value_heads", "--n-head-kv", LIMIT_MAX_HEAD, &v.KV);
    if (!rc) rc = geometry_one(&v, file, p.head_dim, "head_dim", "head_dim", "--head-dim", LIMIT_MAX_HEAD_DIM, &v.hd);
    if (!rc && (v.KV > v.H || v.H % v.KV))
        rc = vfail(&v, file, HEED_ERR_FORMAT, "%d query heads are not a multiple of %d KV heads (--n-head, --n-head-kv)", v.H, v.KV);
    if (!rc && (int64_t)v.H * v.hd > LIMIT_MAX_DIM)
        rc = vfail(&v, file, HEED_ERR_FORMAT, "%d heads x head_dim %d is more than %d", v.H, v.hd, LIMIT_MAX_DIM);
    if (!rc) rc = shard_ranks(&v);
    for (int i = 0; !rc && i < v.n_ranks; i++) rc = check_layers(&v, &v.ranks[i]);
    if (!rc) rc = plan_sequence(&v, p.sequence, &n_prompt);
    if (!rc && p.n_prompt) {
        if (p.n_prompt < 1 || p.n_prompt > v.T)
            rc = vfail(&v, NULL, HEED_ERR_INVALID_ARG, "--n-prompt %d is outside 1..%d (the sequence's tokens)", p.n_prompt, v.T);
        n_prompt = p.n_prompt;
    }
    double scale = p.scale;
    if (!rc && !(scale > 0)) { /* the config's multiplier, unless it was made for another head_dim (older versions) */
        json_t *cfg = json_object_get(v.ranks[0].meta, "config"), *am = json_object_get(cfg, "attention_multiplier");
        json_t *ch = json_object_get(cfg, "head_dim");
        bool same = !json_is_integer(ch) || json_integer_value(ch) == v.hd;
        scale = same && json_is_number(am) && json_number_value(am) > 0 && isfinite(json_number_value(am))
                    ? json_number_value(am) : 1.0 / sqrt((double)v.hd);
    }
    if (!rc && !(isfinite(scale) && isfinite(p.attn_softcap) && p.attn_softcap >= 0))
        rc = vfail(&v, NULL, HEED_ERR_INVALID_ARG, "--scale and --softcap must be finite and positive");
    if (!rc && !(windows = malloc(sizeof(int) * (size_t)v.L))) rc = HEED_ERR_NOMEM;
    if (!rc) rc = parse_windows(&v, p.sliding_window, v.L, windows);
    if (!rc && !(r = calloc(1, sizeof *r))) rc = HEED_ERR_NOMEM;
    const int T = v.T;
    if (!rc) { /* the run, as trace.c builds one: tokens, steps (unknown: NaN), the exact tier */
        r->model_file = strdup("(vLLM-Hook capture)");
        r->model_arch = strdup("trace");
        r->model_name = strdup("vLLM-Hook q/k capture");
        r->prompt_text = strdup("");
        r->n_layer = v.L, r->n_head = v.H, r->n_head_kv = v.KV, r->head_dim = v.hd, r->n_embd = v.H * v.hd;
        r->bos = r->eos = r->eot = -1;
        r->sampler = heed_sampler_default_params();
        r->n_prompt = n_prompt, r->n_output = T - n_prompt, r->n_predict = T - n_prompt, r->n_ctx = T;
        r->cap_tok = T;
        r->ids = malloc(sizeof(int32_t) * (size_t)T);
        r->labels = calloc((size_t)T, sizeof(char *));
        r->steps = malloc(sizeof(run_step) * (size_t)(T - n_prompt + 1));
        r->cand = malloc(sizeof(heed_candidate));
        if (!r->model_file || !r->model_arch || !r->model_name || !r->prompt_text || !r->ids || !r->labels || !r->steps || !r->cand)
            rc = HEED_ERR_NOMEM;
    }
    if (!rc) rc = read_ids(&v, p.token_ids, T, r->ids);
    int max_id = 0;
    for (int i = 0; !rc && i < T; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "[%d]", r->ids[i]);
        if (!(r->labels[i] = strdup(buf))) rc = HEED_ERR_NOMEM;
        max_id = r->ids[i] > max_id ? r->ids[i] : max_id;
    }
    if (!rc) r->n_vocab = max_id + 1;
    for (int s = 0; !rc && s < T - n_prompt; s++) r->steps[s] = (run_step){r->ids[n_prompt + s], NAN, NAN, NAN};
    astore_params ap = {0, true, false, 0, NULL, 0};
    if (!rc) rc = astore_init(&r->st, v.L, v.H, v.KV, v.hd, &ap);
    for (int l = 0; !rc && l < v.L; l++)
        rc = astore_set_rule(&r->st, l, (kern_attn_rule){(float)scale, (float)p.attn_softcap, windows[l], NULL, 0});
    if (!rc) rc = astore_plan(&r->st, T);
    for (int l = 0; !rc && l < v.L; l++)
        for (int i = 0; !rc && i < v.n_ranks; i++) rc = copy_layer(&v, &v.ranks[i], l, r);
    for (int i = 0; v.ranks && i < v.n_ranks; i++) {
        json_decref(v.ranks[i].meta);
        if (v.ranks[i].st) st_close(v.ranks[i].st);
    }
    free(v.ranks), free(v.qa), free(v.qb), free(v.chk), free(v.chk_n), free(windows);
    if (rc) {
        if (r) heed_run_free(r);
        return rc;
    }
    r->st.n_pos = T;
    *out = r;
    return HEED_OK;
}
