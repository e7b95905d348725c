/*
 * run_export.c - a run and the views a caller computed, for other tools:
 * NumPy .npy and .npz (an uncompressed ZIP of .npy members, written here:
 * no zlib) and JSON (docs/RUN_FORMAT.md lists the members).
 *
 * A run that kept only its exact tier still exports the top-k and head-mean
 * summaries: they are computed from q/k (astore_summarize) through the same
 * reduction the recorder uses, so they are the bytes a recording that kept
 * them would hold. Members are limited to 4 GiB (no zip64).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "astore.h"
#include "jsonw.h"
#include "kern.h"
#include "run.h"

static int mul_chk(uint64_t a, uint64_t b, uint64_t *out) { return __builtin_mul_overflow(a, b, out) ? -1 : 0; }

/* ------------------------------------------------------------------ npy */

static const char *npy_descr(heed_dtype t) {
    switch (t) {
    case HEED_DT_F32: return "<f4";
    case HEED_DT_I32: return "<i4";
    case HEED_DT_F16: return "<f2";
    case HEED_DT_U32: return "<u4";
    }
    return NULL;
}

static size_t dtype_size(heed_dtype t) { return t == HEED_DT_F16 ? 2 : 4; }

size_t run_npy_header(const heed_array *a, char *buf, size_t size) {
    const char *descr = npy_descr(a->dtype);
    if (!descr || a->ndim < 1 || a->ndim > 4 || size < 128) return 0;
    char dict[256];
    int n = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", descr);
    /* Python's tuple repr, as numpy writes it: (3,) and (2, 3) */
    for (int i = 0; i < a->ndim; i++)
        n += snprintf(dict + n, sizeof dict - (size_t)n, "%s%llu%s", i ? ", " : "", (unsigned long long)a->shape[i],
                      a->ndim == 1 ? "," : "");
    n += snprintf(dict + n, sizeof dict - (size_t)n, "), }");
    /* numpy pads with spaces and ends with '\n' so the data starts 64-aligned */
    size_t total = 10 + (size_t)n + 1;
    total = (total + 63) / 64 * 64;
    if (total > size || total - 10 > 65535) return 0;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (char)((total - 10) & 0xff);
    buf[9] = (char)((total - 10) >> 8);
    memcpy(buf + 10, dict, (size_t)n);
    memset(buf + 10 + n, ' ', total - 10 - (size_t)n - 1);
    buf[total - 1] = '\n';
    return total;
}

static int array_bytes(const heed_array *a, uint64_t *out) {
    uint64_t n = dtype_size(a->dtype);
    if (!npy_descr(a->dtype) || a->ndim < 1 || a->ndim > 4 || (!a->data && a->shape[0])) return HEED_ERR_INVALID_ARG;
    for (int i = 0; i < a->ndim; i++)
        if (mul_chk(n, a->shape[i], &n)) return HEED_ERR_INVALID_ARG;
    *out = n;
    return HEED_OK;
}

int heed_npy_write(const char *path, const heed_array *a, char *err, size_t err_size) {
    char hdr[512];
    uint64_t nb;
    if (!path || !a || array_bytes(a, &nb)) return HEED_ERR_INVALID_ARG;
    size_t hn = run_npy_header(a, hdr, sizeof hdr);
    if (!hn) return HEED_ERR_INVALID_ARG;
    FILE *f = fopen(path, "wb");
    if (!f) return run_fail(err, err_size, HEED_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    bool ok = fwrite(hdr, 1, hn, f) == hn && (nb == 0 || fwrite(a->data, 1, (size_t)nb, f) == nb);
    if (fclose(f) != 0) ok = false;
    return ok ? HEED_OK : run_fail(err, err_size, HEED_ERR_IO, "%s: write failed", path);
}

/* ------------------------------------------------------------------ npz */

static void put16(unsigned char *p, uint32_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }
static void put32(unsigned char *p, uint32_t v) { put16(p, v & 0xffff); put16(p + 2, v >> 16); }

/* ZIP "stored" entries (no compression, no zip64): member sizes and the
 * archive must stay under 4 GiB. DOS date 1980-01-01 keeps output reproducible. */
static void zip_local(unsigned char *h, uint32_t crc, uint32_t size, uint16_t name_len) {
    memset(h, 0, 30);
    put32(h, 0x04034b50);
    put16(h + 4, 20);
    put16(h + 12, 0x21);
    put32(h + 14, crc);
    put32(h + 18, size);
    put32(h + 22, size);
    put16(h + 26, name_len);
}

static void zip_central(unsigned char *h, uint32_t crc, uint32_t size, uint16_t name_len, uint32_t offset) {
    memset(h, 0, 46);
    put32(h, 0x02014b50);
    put16(h + 4, 20);
    put16(h + 6, 20);
    put16(h + 14, 0x21);
    put32(h + 16, crc);
    put32(h + 20, size);
    put32(h + 24, size);
    put16(h + 28, name_len);
    put32(h + 42, offset);
}

typedef struct zip_entry {
    char name[80];
    uint32_t crc, size, offset;
} zip_entry;

static int npz_member(FILE *f, const heed_array *a, zip_entry *e, uint64_t *off, const uint32_t *table) {
    char hdr[512];
    uint64_t nb;
    if (!a->name || array_bytes(a, &nb)) return HEED_ERR_INVALID_ARG;
    size_t hn = run_npy_header(a, hdr, sizeof hdr);
    int nl = snprintf(e->name, sizeof e->name, "%s.npy", a->name);
    if (!hn || nl <= 4 || (size_t)nl >= sizeof e->name || hn + nb > UINT32_MAX || *off > UINT32_MAX)
        return HEED_ERR_INVALID_ARG;
    uint32_t crc = run_crc_update(table, run_crc_update(table, 0, hdr, hn), a->data, (size_t)nb);
    e->crc = crc;
    e->size = (uint32_t)(hn + nb);
    e->offset = (uint32_t)*off;
    unsigned char lh[30];
    zip_local(lh, crc, e->size, (uint16_t)nl);
    bool ok = fwrite(lh, 1, 30, f) == 30 && fwrite(e->name, 1, (size_t)nl, f) == (size_t)nl &&
              fwrite(hdr, 1, hn, f) == hn && (nb == 0 || fwrite(a->data, 1, (size_t)nb, f) == nb);
    *off += 30 + (uint64_t)nl + e->size;
    return ok ? HEED_OK : HEED_ERR_IO;
}

static int npz_directory(FILE *f, const zip_entry *e, int n, uint64_t off) {
    uint64_t start = off;
    for (int i = 0; i < n; i++) {
        unsigned char ch[46];
        uint16_t nl = (uint16_t)strlen(e[i].name);
        zip_central(ch, e[i].crc, e[i].size, nl, e[i].offset);
        if (fwrite(ch, 1, 46, f) != 46 || fwrite(e[i].name, 1, nl, f) != nl) return HEED_ERR_IO;
        off += 46 + nl;
    }
    if (off > UINT32_MAX) return HEED_ERR_INVALID_ARG;
    unsigned char eocd[22] = {0};
    put32(eocd, 0x06054b50);
    put16(eocd + 8, (uint32_t)n);
    put16(eocd + 10, (uint32_t)n);
    put32(eocd + 12, (uint32_t)(off - start));
    put32(eocd + 16, (uint32_t)start);
    return fwrite(eocd, 1, 22, f) == 22 ? HEED_OK : HEED_ERR_IO;
}

int heed_npz_write(const char *path, const heed_array *arrays, int n, char *err, size_t err_size) {
    if (!path || (n > 0 && !arrays) || n < 0 || n > 65535) return HEED_ERR_INVALID_ARG;
    zip_entry *e = calloc((size_t)n + 1, sizeof *e);
    if (!e) return HEED_ERR_NOMEM;
    FILE *f = fopen(path, "wb");
    if (!f) {
        free(e);
        return run_fail(err, err_size, HEED_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    }
    uint32_t table[256];
    run_crc_table(table);
    uint64_t off = 0;
    int rc = HEED_OK;
    for (int i = 0; i < n && !rc; i++) rc = npz_member(f, &arrays[i], &e[i], &off, table);
    if (!rc) rc = npz_directory(f, e, n, off);
    if (fclose(f) != 0 && !rc) rc = HEED_ERR_IO;
    free(e);
    if (rc == HEED_ERR_INVALID_ARG) return run_fail(err, err_size, rc, "%s: an array is invalid or over 4 GiB", path);
    return rc ? run_fail(err, err_size, rc, "%s: write failed", path) : HEED_OK;
}

/* -------------------------------------------------------------- the run */

static heed_array arr(const char *name, heed_dtype t, const void *data, int ndim, uint64_t a, uint64_t b,
                      uint64_t c, uint64_t d) {
    heed_array x = {name, t, ndim, {a, b, c, d}, data};
    return x;
}

/* Top sources per (query, layer, head) that an export computes for a run
 * that did not keep them: the recorder's former default. */
enum { EXPORT_TOPK = 32 };

/* The summary tiers an export writes: the run's own, and those it lacks
 * computed from its exact tier into *sum (freed by the caller). */
static int export_summaries(heed_run *r, astore *sum, const astore **tk, const astore **hm) {
    const astore *st = &r->st;
    *tk = st->has_topk ? st : NULL;
    *hm = st->has_hmean ? st : NULL;
    memset(sum, 0, sizeof *sum);
    if ((*tk && *hm) || (!st->has_qk && !st->has_full) || st->n_pos == 0) return HEED_OK;
    attn_src src;
    int rc = run_src(r, &src);
    if (!rc) rc = astore_summarize(st, src.ops, src.pool, *tk ? 0 : EXPORT_TOPK, !*hm, sum);
    if (rc) return rc;
    if (!*tk) *tk = sum;
    if (!*hm) *hm = sum;
    return HEED_OK;
}

int heed_run_export_npz(heed_run *r, const char *path, char *err, size_t err_size) {
    return heed_run_export_npz_ex(r, path, 0, err, err_size);
}

/* The dense attention of every layer and head, (L, H, P, P), zeros where a
 * query does not look; NULL on failure (rc set). */
static float *dense_attention(heed_run *r, int *rc) {
    uint64_t P = (uint64_t)r->st.n_pos, L = (uint64_t)r->n_layer, H = (uint64_t)r->n_head;
    float *a = calloc(L * H * P * P + 1, sizeof(float));
    if (!a) {
        *rc = HEED_ERR_NOMEM;
        return NULL;
    }
    for (int l = 0; l < r->n_layer; l++)
        for (int h = 0; h < r->n_head; h++) {
            heed_attn_sel sel = {&l, 1, &h, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
            for (uint64_t q = 0; q < P; q++)
                if ((*rc = heed_run_attn_row(r, &sel, (int)q, a + (((uint64_t)l * H + h) * P + q) * P))) {
                    free(a);
                    return NULL;
                }
        }
    return a;
}

int heed_run_export_npz_ex(heed_run *r, const char *path, unsigned flags, char *err, size_t err_size) {
    if (!r || !path || (flags & ~HEED_EXPORT_FULL)) return HEED_ERR_INVALID_ARG;
    float *dense = NULL;
    if (flags & HEED_EXPORT_FULL) {
        uint64_t P = (uint64_t)r->st.n_pos, bytes = (uint64_t)r->n_layer * r->n_head * P * P * 4;
        if (bytes > HEED_EXPORT_FULL_MAX)
            return run_fail(err, err_size, HEED_ERR_UNSUPPORTED,
                            "%s: the full attention of this run (%d layers x %d heads x %llu^2 positions) would take "
                            "%.2f GB, more than %.0f GB: export without it, or a shorter run", path, r->n_layer,
                            r->n_head, (unsigned long long)P, bytes / 1e9, HEED_EXPORT_FULL_MAX / 1e9);
        int drc = HEED_OK;
        if (!(dense = dense_attention(r, &drc))) return drc;
    }
    astore sum;
    const astore *tk, *hm;
    int sum_rc = export_summaries(r, &sum, &tk, &hm);
    if (sum_rc) {
        free(dense);
        return sum_rc;
    }
    uint64_t T = (uint64_t)r->n_output, P = (uint64_t)r->st.n_pos, L = (uint64_t)r->n_layer;
    uint64_t H = (uint64_t)r->n_head, tri = P * (P + 1) / 2;
    int32_t *sid = malloc(sizeof(int32_t) * (T + 1)), *cid = malloc(sizeof(int32_t) * (T * r->n_cand + 1));
    float *sf = malloc(sizeof(float) * (3 * T + 1)), *cf = malloc(sizeof(float) * (2 * T * r->n_cand + 1));
    if (!sid || !cid || !sf || !cf) {
        free(sid); free(cid); free(sf); free(cf); free(dense);
        astore_free(&sum);
        return HEED_ERR_NOMEM;
    }
    /* steps as columns: numpy users index step_prob[t] */
    for (uint64_t t = 0; t < T; t++) {
        sid[t] = r->steps[t].id;
        sf[t] = r->steps[t].prob;
        sf[T + t] = r->steps[t].logprob;
        sf[2 * T + t] = r->steps[t].entropy;
        for (int i = 0; i < r->n_cand; i++) {
            const heed_candidate *c = &r->cand[t * r->n_cand + i];
            cid[t * r->n_cand + i] = c->id;
            cf[t * r->n_cand + i] = c->prob;
            cf[T * r->n_cand + t * r->n_cand + i] = c->logit;
        }
    }
    heed_array a[32];
    int n = 0;
    a[n++] = arr("prompt_ids", HEED_DT_I32, r->ids, 1, (uint64_t)r->n_prompt, 0, 0, 0);
    a[n++] = arr("output_ids", HEED_DT_I32, r->ids + r->n_prompt, 1, T, 0, 0, 0);
    a[n++] = arr("step_prob", HEED_DT_F32, sf, 1, T, 0, 0, 0);
    a[n++] = arr("step_logprob", HEED_DT_F32, sf + T, 1, T, 0, 0, 0);
    a[n++] = arr("step_entropy", HEED_DT_F32, sf + 2 * T, 1, T, 0, 0, 0);
    a[n++] = arr("cand_id", HEED_DT_I32, cid, 2, T, (uint64_t)r->n_cand, 0, 0);
    a[n++] = arr("cand_prob", HEED_DT_F32, cf, 2, T, (uint64_t)r->n_cand, 0, 0);
    a[n++] = arr("cand_logit", HEED_DT_F32, cf + T * r->n_cand, 2, T, (uint64_t)r->n_cand, 0, 0);
    if (r->head_scale) /* the intervention the run was made under */
        a[n++] = arr("head_scale", HEED_DT_F32, r->head_scale, 2, (uint64_t)r->n_layer, (uint64_t)r->n_head, 0, 0);
    int32_t *ko = NULL;
    if (r->st.n_ko_list) { /* the knockouts: layer, head (-1: all), first and last query, first and last key */
        ko = malloc(sizeof(int32_t) * 6 * (size_t)r->st.n_ko_list);
        for (int i = 0; ko && i < r->st.n_ko_list; i++) {
            const heed_knockout *k = &r->st.ko_list[i];
            int32_t row[6] = {k->layer, k->head, k->q0, k->q1 - 1, k->k0, k->k1 - 1};
            memcpy(ko + 6 * i, row, sizeof row);
        }
        if (ko) a[n++] = arr("knockouts", HEED_DT_I32, ko, 2, (uint64_t)r->st.n_ko_list, 6, 0, 0);
    }
    if (dense)
        a[n++] = arr("attention", HEED_DT_F32, dense, 4, L, H, (uint64_t)r->st.n_pos, (uint64_t)r->st.n_pos);
    if (r->head_values) /* mean ablation: each head's replacement (the heads not replaced are in the JSON) */
        a[n++] = arr("head_values", HEED_DT_F32, r->head_values, 3, L, (uint64_t)r->n_head, (uint64_t)r->head_dim, 0);
    if (r->n_expert) { /* a mixture of experts: the routing of every position fed */
        uint64_t K = (uint64_t)r->n_expert_used;
        a[n++] = arr("expert_id", HEED_DT_I32, r->moe_ids, 3, (uint64_t)r->moe_n, L, K, 0);
        a[n++] = arr("expert_weight", HEED_DT_F32, r->moe_w, 3, (uint64_t)r->moe_n, L, K, 0);
    }
    if (r->vnorm && r->vn_n >= r->st.n_pos) /* value-weighted attention: |W_O^h v_p| per position, layer, head */
        a[n++] = arr("value_norms", HEED_DT_F32, r->vnorm, 3, (uint64_t)r->st.n_pos, L, (uint64_t)r->n_head, 0);
    if (r->lens_k > 0 && heed_run_lens_pending(r) == 0) { /* a lens still to compute is left out */
        a[n++] = arr("lens_id", HEED_DT_I32, r->lens_id, 3, T, L, (uint64_t)r->lens_k, 0);
        a[n++] = arr("lens_prob", HEED_DT_F32, r->lens_p, 3, T, L, (uint64_t)r->lens_k, 0);
    }
    float *k = NULL;
    if (r->st.has_qk) {
        /* the per-(layer, KV head) key arrays, gathered into one member */
        size_t per = (size_t)P * r->head_dim, nk = (size_t)r->n_layer * r->n_head_kv;
        k = malloc(sizeof(float) * (per * nk + 1));
        if (!k) {
            free(sid); free(cid); free(sf); free(cf);
            astore_free(&sum);
            return HEED_ERR_NOMEM;
        }
        for (size_t i = 0; i < nk; i++) memcpy(k + i * per, r->st.k[i], sizeof(float) * per);
        a[n++] = arr("q", HEED_DT_F32, r->st.q, 3, P, L, (uint64_t)r->st.q_dim, 0);
        a[n++] = arr("k", HEED_DT_F32, k, 4, L, (uint64_t)r->n_head_kv, P, (uint64_t)r->head_dim);
    }
    if (tk) {
        a[n++] = arr("topk_pos", HEED_DT_U32, tk->tk_pos, 4, P, L, H, (uint64_t)tk->top_k);
        a[n++] = arr("topk_weight", HEED_DT_F16, tk->tk_w, 4, P, L, H, (uint64_t)tk->top_k);
    }
    if (hm) a[n++] = arr("head_mean_packed", HEED_DT_F16, hm->hmean, 1, tri * L, 0, 0, 0);
    if (r->st.has_full) a[n++] = arr("full_packed", HEED_DT_F32, r->st.full, 1, tri * L * H, 0, 0, 0);
    int rc = heed_npz_write(path, a, n, err, err_size);
    free(sid); free(cid); free(sf); free(cf); free(k); free(ko); free(dense);
    astore_free(&sum);
    return rc;
}

/* ----------------------------------------------------------------- JSON */

static void json_run_meta(jsonw *w, const heed_run *r) {
    char hash[17];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)r->meta_hash);
    jw_key(w, "format"); jw_cstr(w, "heed-run");
    jw_key(w, "version"); jw_int(w, RUN_VERSION);
    jw_key(w, "model"); jw_obj(w);
    jw_key(w, "file"); jw_cstr(w, r->model_file);
    jw_key(w, "arch"); jw_cstr(w, r->model_arch);
    jw_key(w, "name"); jw_cstr(w, r->model_name);
    jw_key(w, "size"); jw_int(w, (int64_t)r->model_size);
    jw_key(w, "meta_hash"); jw_cstr(w, hash);
    jw_key(w, "n_layer"); jw_int(w, r->n_layer);
    jw_key(w, "n_head"); jw_int(w, r->n_head);
    jw_key(w, "n_head_kv"); jw_int(w, r->n_head_kv);
    jw_key(w, "head_dim"); jw_int(w, r->head_dim);
    jw_key(w, "n_vocab"); jw_int(w, r->n_vocab);
    jw_obj_end(w);
    jw_key(w, "params"); jw_obj(w);
    jw_key(w, "temperature"); jw_float(w, r->sampler.temperature);
    jw_key(w, "top_k"); jw_int(w, r->sampler.top_k);
    jw_key(w, "top_p"); jw_float(w, r->sampler.top_p);
    jw_key(w, "min_p"); jw_float(w, r->sampler.min_p);
    jw_key(w, "repeat_penalty"); jw_float(w, r->sampler.repeat_penalty);
    jw_key(w, "repeat_last_n"); jw_int(w, r->sampler.repeat_last_n);
    jw_key(w, "seed"); jw_int(w, (int64_t)r->sampler.seed);
    jw_key(w, "n_predict"); jw_int(w, r->n_predict);
    jw_key(w, "n_ctx"); jw_int(w, r->n_ctx);
    jw_obj_end(w);
    jw_key(w, "prompt"); jw_cstr(w, r->prompt_text);
    jw_key(w, "n_prompt"); jw_int(w, r->n_prompt);
    jw_key(w, "n_pos"); jw_int(w, r->st.n_pos);
    jw_key(w, "stop"); jw_cstr(w, r->eog ? "eog" : "length");
    jw_key(w, "attention_rule"); /* how each layer's rows come from q and k */
    jw_arr(w);
    for (int l = 0; l < r->n_layer; l++) {
        const kern_attn_rule *a = &r->st.rules[l];
        jw_obj(w);
        jw_key(w, "scale"); jw_float(w, a->scale);
        jw_key(w, "softcap"); jw_float(w, a->softcap);
        jw_key(w, "window"); jw_int(w, a->window);
        jw_obj_end(w);
    }
    jw_arr_end(w);
    jw_key(w, "experts"); /* a mixture of experts: n_expert, n_used and each position's routing; null: dense */
    if (!r->n_expert) {
        jw_null(w);
    } else {
        jw_obj(w);
        jw_key(w, "n_expert"); jw_int(w, r->n_expert);
        jw_key(w, "n_used"); jw_int(w, r->n_expert_used);
        jw_key(w, "routing"); jw_arr(w); /* [pos][layer] = {ids, weights} */
        for (int p = 0; p < r->moe_n; p++) {
            jw_arr(w);
            for (int l = 0; l < r->n_layer; l++) {
                size_t at = ((size_t)p * r->n_layer + l) * r->n_expert_used;
                jw_obj(w);
                jw_key(w, "ids"); jw_arr(w);
                for (int s = 0; s < r->n_expert_used; s++) jw_int(w, r->moe_ids[at + s]);
                jw_arr_end(w);
                jw_key(w, "weights"); jw_arr(w);
                for (int s = 0; s < r->n_expert_used; s++) jw_float(w, r->moe_w[at + s]);
                jw_arr_end(w);
                jw_obj_end(w);
            }
            jw_arr_end(w);
        }
        jw_arr_end(w);
        jw_obj_end(w);
    }
    jw_key(w, "residual_edits"); /* [{layer, pos (-1: all), kind: patch|steer, alpha, vector: [n_embd]}] */
    jw_arr(w);
    for (int i = 0; i < r->n_edits; i++) {
        const heed_resid_edit *e = &r->edits[i];
        jw_obj(w);
        jw_key(w, "layer"); jw_int(w, e->layer);
        jw_key(w, "pos"); jw_int(w, e->pos);
        jw_key(w, "kind"); jw_cstr(w, e->replace ? "patch" : "steer");
        jw_key(w, "alpha"); jw_float(w, e->alpha);
        jw_key(w, "vector"); jw_arr(w);
        for (int d = 0; d < r->n_embd; d++) jw_float(w, e->vec[d]);
        jw_arr_end(w);
        jw_obj_end(w);
    }
    jw_arr_end(w);
    jw_key(w, "mean_ablated"); /* [{layer, head, value: [head_dim]}]: heads whose output was replaced */
    jw_arr(w);
    for (int i = 0; r->head_which && i < r->n_layer * r->n_head; i++) {
        if (!r->head_which[i]) continue;
        jw_obj(w);
        jw_key(w, "layer"); jw_int(w, i / r->n_head);
        jw_key(w, "head"); jw_int(w, i % r->n_head);
        jw_key(w, "value"); jw_arr(w);
        for (int d = 0; d < r->head_dim; d++) jw_float(w, r->head_values[(size_t)i * r->head_dim + d]);
        jw_arr_end(w);
        jw_obj_end(w);
    }
    jw_arr_end(w);
    jw_key(w, "knockouts"); /* [{layer, head (-1: all), queries: [first, last], keys: [first, last]}] */
    jw_arr(w);
    for (int i = 0; i < r->st.n_ko_list; i++) {
        const heed_knockout *ko = &r->st.ko_list[i];
        jw_obj(w);
        jw_key(w, "layer"); jw_int(w, ko->layer);
        jw_key(w, "head"); jw_int(w, ko->head);
        jw_key(w, "queries"); jw_arr(w); jw_int(w, ko->q0); jw_int(w, ko->q1 - 1); jw_arr_end(w);
        jw_key(w, "keys"); jw_arr(w); jw_int(w, ko->k0); jw_int(w, ko->k1 - 1); jw_arr_end(w);
        jw_obj_end(w);
    }
    jw_arr_end(w);
    jw_key(w, "head_scale"); /* the intervention it was made under, per layer and head; null: none */
    if (!r->head_scale) {
        jw_null(w);
    } else {
        jw_arr(w);
        for (int l = 0; l < r->n_layer; l++) {
            jw_arr(w);
            for (int h = 0; h < r->n_head; h++) jw_float(w, r->head_scale[(size_t)l * r->n_head + h]);
            jw_arr_end(w);
        }
        jw_arr_end(w);
    }
}

static void json_run_steps(jsonw *w, const heed_run *r) {
    jw_key(w, "tokens"); jw_arr(w);
    for (int i = 0; i < r->n_prompt + r->n_output; i++) {
        jw_obj(w);
        jw_key(w, "id"); jw_int(w, r->ids[i]);
        jw_key(w, "label"); jw_cstr(w, r->labels[i]);
        jw_obj_end(w);
    }
    jw_arr_end(w);
    jw_key(w, "steps"); jw_arr(w);
    for (int t = 0; t < r->n_output; t++) {
        const run_step *s = &r->steps[t];
        jw_obj(w);
        jw_key(w, "id"); jw_int(w, s->id);
        jw_key(w, "prob"); jw_float(w, s->prob);
        jw_key(w, "logprob"); jw_float(w, s->logprob);
        jw_key(w, "entropy"); jw_float(w, s->entropy);
        jw_key(w, "top"); jw_arr(w);
        for (int i = 0; i < r->n_cand; i++) {
            const heed_candidate *c = &r->cand[(size_t)t * r->n_cand + i];
            jw_obj(w);
            jw_key(w, "id"); jw_int(w, c->id);
            jw_key(w, "logit"); jw_float(w, c->logit);
            jw_key(w, "prob"); jw_float(w, c->prob);
            jw_obj_end(w);
        }
        jw_arr_end(w);
        if (r->lens_k > 0 && r->lens_ready[t]) {
            jw_key(w, "lens"); jw_arr(w); /* per layer: [[id, prob], ...] best first */
            for (int l = 0; l < r->n_layer; l++) {
                size_t base = ((size_t)t * r->n_layer + l) * r->lens_k;
                jw_obj(w);
                jw_key(w, "match"); jw_bool(w, r->lens_id[base] == s->id);
                jw_key(w, "ids"); jw_arr(w);
                for (int i = 0; i < r->lens_k; i++) jw_int(w, r->lens_id[base + i]);
                jw_arr_end(w);
                jw_key(w, "probs"); jw_arr(w);
                for (int i = 0; i < r->lens_k; i++) jw_float(w, r->lens_p[base + i]);
                jw_arr_end(w);
                jw_obj_end(w);
            }
            jw_arr_end(w);
        }
        jw_obj_end(w);
    }
    jw_arr_end(w);
}

int heed_run_export_json(const heed_run *r, const char *path, char *err, size_t err_size) {
    if (!r || !path) return HEED_ERR_INVALID_ARG;
    FILE *f = fopen(path, "wb");
    if (!f) return run_fail(err, err_size, HEED_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    jsonw w;
    jw_init(&w, f);
    jw_obj(&w);
    json_run_meta(&w, r);
    json_run_steps(&w, r);
    jw_obj_end(&w);
    fputc('\n', f);
    bool ok = !ferror(f);
    if (fclose(f) != 0) ok = false;
    return ok ? HEED_OK : run_fail(err, err_size, HEED_ERR_IO, "%s: write failed", path);
}

static const char *json_dtype(heed_dtype t) {
    switch (t) {
    case HEED_DT_F32: return "float32";
    case HEED_DT_I32: return "int32";
    case HEED_DT_F16: return "float16";
    case HEED_DT_U32: return "uint32";
    }
    return "?";
}

static void json_array(jsonw *w, const heed_array *a, uint64_t count) {
    jw_key(w, a->name);
    jw_obj(w);
    jw_key(w, "dtype"); jw_cstr(w, json_dtype(a->dtype));
    jw_key(w, "shape"); jw_arr(w);
    for (int d = 0; d < a->ndim; d++) jw_int(w, (int64_t)a->shape[d]);
    jw_arr_end(w);
    jw_key(w, "data"); jw_arr(w);
    for (uint64_t i = 0; i < count; i++) {
        switch (a->dtype) {
        case HEED_DT_F32: jw_float(w, ((const float *)a->data)[i]); break;
        case HEED_DT_I32: jw_int(w, ((const int32_t *)a->data)[i]); break;
        case HEED_DT_F16: jw_float(w, kern_f16_to_f32(((const uint16_t *)a->data)[i])); break;
        case HEED_DT_U32: jw_int(w, ((const uint32_t *)a->data)[i]); break;
        }
    }
    jw_arr_end(w);
    jw_obj_end(w);
}

int heed_json_write_arrays(const char *path, const heed_array *arrays, int n, char *err, size_t err_size) {
    if (!path || n < 0 || (n > 0 && !arrays)) return HEED_ERR_INVALID_ARG;
    for (int i = 0; i < n; i++) {
        uint64_t nb;
        if (!arrays[i].name || array_bytes(&arrays[i], &nb)) return HEED_ERR_INVALID_ARG;
    }
    FILE *f = fopen(path, "wb");
    if (!f) return run_fail(err, err_size, HEED_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    jsonw w;
    jw_init(&w, f);
    jw_obj(&w);
    for (int i = 0; i < n; i++) {
        uint64_t nb;
        array_bytes(&arrays[i], &nb);
        json_array(&w, &arrays[i], nb / dtype_size(arrays[i].dtype));
    }
    jw_obj_end(&w);
    fputc('\n', f);
    bool ok = !ferror(f);
    if (fclose(f) != 0) ok = false;
    return ok ? HEED_OK : run_fail(err, err_size, HEED_ERR_IO, "%s: write failed", path);
}
