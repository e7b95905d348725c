/*
 * trace.c - heed-trace/1 (docs/TRACE_FORMAT.md): the post-RoPE q and k of
 * a run made by another engine, read into a heed_run's exact tier
 * (heed_trace_import), and a heed run written as one (heed_run_export_trace).
 *
 * A trace is a directory: trace.json and layer_NNN.safetensors per layer,
 * each with q [T, n_head, head_dim] and k [T, n_head_kv, head_dim] (F32,
 * F16 or BF16). Every shape, dtype and count is checked against trace.json
 * before anything is copied; messages name the file and the field. The
 * run's rows are then recomputed exactly as heed's own (astore_row, by
 * each layer's rule: scale, soft-cap, window).
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "err.h"
#include "fmap.h"
#include "kern.h"
#include "run.h"
#include "safetensors.h"
#include "trace_vllmhook.h"

#define TRACE_FORMAT "heed-trace/1"
#define TRACE_MAX_JSON (64u << 20)

typedef struct tr {
    const char *dir;
    char *err;
    size_t err_size;
} tr;

__attribute__((format(printf, 4, 5))) static int tfail(tr *t, const char *file, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    err_vat(t->err, t->err_size, rc, file, fmt, ap);
    va_end(ap);
    return rc;
}

static int get_int(tr *t, json_t *j, const char *key, bool required, long def, long lo, long hi, int *out) {
    json_t *v = json_object_get(j, key);
    long x = def;
    if (!v || json_is_null(v)) {
        if (required) return tfail(t, "trace.json", HEED_ERR_FORMAT, "'%s' is missing", key);
    } else if (!json_is_integer(v)) {
        return tfail(t, "trace.json", HEED_ERR_FORMAT, "'%s' is not an integer", key);
    } else {
        x = (long)json_integer_value(v);
    }
    if (x < lo || x > hi) return tfail(t, "trace.json", HEED_ERR_FORMAT, "'%s' = %ld is outside %ld..%ld", key, x, lo, hi);
    *out = (int)x;
    return HEED_OK;
}

/* A tensor of the layer file: the given dims exactly, read into f32 out. */
static int read_tensor(tr *t, const st_file *f, const char *file, const char *name, int64_t d0, int64_t d1, int64_t d2,
                       float *out) {
    const st_tensor *s = st_find(f, name);
    if (!s) return tfail(t, file, HEED_ERR_FORMAT, "no tensor '%s'", name);
    if (s->n_dims != 3 || s->shape[0] != d0 || s->shape[1] != d1 || s->shape[2] != d2)
        return tfail(t, file, HEED_ERR_FORMAT, "tensor '%s' has shape [%lld, %lld, %lld] in %d dims; trace.json "
                     "implies [%lld, %lld, %lld]", name, (long long)s->shape[0], (long long)(s->n_dims > 1 ? s->shape[1] : 0),
                     (long long)(s->n_dims > 2 ? s->shape[2] : 0), s->n_dims, (long long)d0, (long long)d1, (long long)d2);
    size_t n = (size_t)(d0 * d1 * d2);
    for (size_t i = 0; i < n; i++) {
        float v;
        if (s->dtype == ST_F32) {
            memcpy(&v, (const char *)s->data + 4 * i, 4);
        } else {
            uint16_t h;
            memcpy(&h, (const char *)s->data + 2 * i, 2);
            v = s->dtype == ST_F16 ? kern_f16_to_f32(h) : kern_bf16_to_f32(h);
        }
        if (!isfinite(v)) return tfail(t, file, HEED_ERR_FORMAT, "tensor '%s': element %zu is not finite", name, i);
        out[i] = v;
    }
    return HEED_OK;
}

/* "sliding_window": an int for every layer or a list of n_layer; 0: none. */
static int get_windows(tr *t, json_t *j, int n_layer, int T, int *w) {
    json_t *v = json_object_get(j, "sliding_window");
    for (int l = 0; l < n_layer; l++) w[l] = 0;
    if (!v || json_is_null(v)) return HEED_OK;
    if (json_is_integer(v)) {
        int x;
        int rc = get_int(t, j, "sliding_window", false, 0, 0, LIMIT_MAX_CTX, &x);
        for (int l = 0; !rc && l < n_layer; l++) w[l] = x;
        return rc;
    }
    if (!json_is_array(v) || json_array_size(v) != (size_t)n_layer)
        return tfail(t, "trace.json", HEED_ERR_FORMAT, "'sliding_window' is neither an integer nor a list of %d", n_layer);
    for (int l = 0; l < n_layer; l++) {
        json_t *x = json_array_get(v, (size_t)l);
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > LIMIT_MAX_CTX)
            return tfail(t, "trace.json", HEED_ERR_FORMAT, "'sliding_window[%d]' is not an integer in 0..%d", l,
                         LIMIT_MAX_CTX);
        w[l] = (int)json_integer_value(x);
    }
    (void)T;
    return HEED_OK;
}

/* Labels from a tokenizer the trace names (a GGUF file, its vocabulary
 * read alone; a path relative to the trace), else "[id]". */
static int set_labels(tr *t, heed_run *r, const char *tokenizer) {
    heed_model *m = NULL;
    if (tokenizer) {
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", t->dir, tokenizer) >= (int)sizeof path)
            return tfail(t, "trace.json", HEED_ERR_FORMAT, "'tokenizer' is too long");
        heed_model_params mp = heed_model_default_params();
        mp.vocab_only = true;
        char err[512];
        if (heed_model_load(path, &mp, &m, err, sizeof err))
            return tfail(t, "trace.json", HEED_ERR_FORMAT, "'tokenizer' %s cannot be read: %s", tokenizer, err);
        heed_model_info mi;
        heed_model_get_info(m, &mi);
        for (int i = 0; i < r->n_prompt + r->n_output; i++)
            if (r->ids[i] >= mi.n_vocab) {
                heed_model_free(m);
                return tfail(t, "trace.json", HEED_ERR_FORMAT, "token_ids[%d] = %d is outside the tokenizer's %d tokens",
                             i, r->ids[i], mi.n_vocab);
            }
        r->n_vocab = mi.n_vocab;
        r->bos = mi.bos, r->eos = mi.eos, r->eot = mi.eot;
    }
    for (int i = 0; i < r->n_prompt + r->n_output; i++) {
        char buf[256];
        if (m) heed_token_label(m, r->ids[i], buf, sizeof buf);
        else snprintf(buf, sizeof buf, "[%d]", r->ids[i]);
        if (!(r->labels[i] = strdup(buf))) {
            heed_model_free(m);
            return HEED_ERR_NOMEM;
        }
    }
    heed_model_free(m);
    return HEED_OK;
}

static char *dup_str(json_t *j, const char *key, const char *def) {
    const char *s = json_string_value(json_object_get(j, key));
    return strdup(s ? s : def);
}

int heed_trace_import(const char *dir, heed_run **out, char *err, size_t err_size) {
    if (!dir || !out) return HEED_ERR_INVALID_ARG;
    if (trace_vllmhook_detect(dir)) return trace_vllmhook_import(dir, NULL, out, err, err_size); /* IBM vLLM-Hook's layout */
    *out = NULL;
    if (err && err_size) err[0] = 0;
    tr t = {dir, err, err_size};
    char path[4096];
    if (snprintf(path, sizeof path, "%s/trace.json", dir) >= (int)sizeof path)
        return tfail(&t, dir, HEED_ERR_INVALID_ARG, "the path is too long");
    uint64_t size = 0;
    char ferr[512];
    int fd = fmap_open_fd(path, &size, ferr, sizeof ferr);
    if (fd < 0) return tfail(&t, NULL, HEED_ERR_IO, "%s", ferr);
    if (size > TRACE_MAX_JSON) {
        close(fd);
        return tfail(&t, "trace.json", HEED_ERR_FORMAT, "is %llu bytes, more than %u", (unsigned long long)size,
                     TRACE_MAX_JSON);
    }
    json_error_t je;
    json_t *j = json_loadfd(fd, JSON_REJECT_DUPLICATES, &je);
    close(fd);
    if (!j) return tfail(&t, "trace.json", HEED_ERR_FORMAT, "invalid JSON: %s (line %d)", je.text, je.line);
    heed_run *r = calloc(1, sizeof *r);
    int *windows = NULL;
    int rc = r ? HEED_OK : HEED_ERR_NOMEM;
    const char *fmt = json_string_value(json_object_get(j, "format"));
    if (!rc && (!fmt || strcmp(fmt, TRACE_FORMAT)))
        rc = tfail(&t, "trace.json", HEED_ERR_UNSUPPORTED, "'format' is '%.40s', not '%s'", fmt ? fmt : "(none)",
                   TRACE_FORMAT);
    int L = 0, H = 0, KV = 0, hd = 0, T = 0, n_prompt = 0;
    json_t *ids = json_object_get(j, "token_ids");
    if (!rc) rc = get_int(&t, j, "n_layer", true, 0, 1, LIMIT_MAX_LAYER, &L);
    if (!rc) rc = get_int(&t, j, "n_head", true, 0, 1, LIMIT_MAX_HEAD, &H);
    if (!rc) rc = get_int(&t, j, "n_head_kv", false, H, 1, H, &KV);
    if (!rc) rc = get_int(&t, j, "head_dim", true, 0, 1, LIMIT_MAX_HEAD_DIM, &hd);
    if (!rc && H % KV) rc = tfail(&t, "trace.json", HEED_ERR_FORMAT, "n_head %d is not a multiple of n_head_kv %d", H, KV);
    if (!rc && (!json_is_array(ids) || json_array_size(ids) < 1 || json_array_size(ids) > LIMIT_MAX_TOKENS))
        rc = tfail(&t, "trace.json", HEED_ERR_FORMAT, "'token_ids' is not a list of 1..%d ids", LIMIT_MAX_TOKENS);
    if (!rc) T = (int)json_array_size(ids);
    if (!rc) rc = get_int(&t, j, "n_prompt", false, T, 1, T, &n_prompt);
    double scale = 1.0 / sqrt((double)(hd ? hd : 1)), cap = 0;
    json_t *js = json_object_get(j, "scale"), *jc = json_object_get(j, "attn_softcap");
    if (!rc && js && !json_is_null(js) && (!json_is_number(js) || !((scale = json_number_value(js)) > 0) || !isfinite(scale)))
        rc = tfail(&t, "trace.json", HEED_ERR_FORMAT, "'scale' is not a positive number");
    if (!rc && jc && !json_is_null(jc) && (!json_is_number(jc) || !((cap = json_number_value(jc)) > 0) || !isfinite(cap)))
        rc = tfail(&t, "trace.json", HEED_ERR_FORMAT, "'attn_softcap' is not a positive number");
    if (!rc && !(windows = malloc(sizeof(int) * (size_t)L))) rc = HEED_ERR_NOMEM;
    if (!rc) rc = get_windows(&t, j, L, T, windows);
    int max_id = 0;
    for (int i = 0; !rc && i < T; i++) {
        json_t *x = json_array_get(ids, (size_t)i);
        if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) >= LIMIT_MAX_VOCAB)
            rc = tfail(&t, "trace.json", HEED_ERR_FORMAT, "'token_ids[%d]' is not an id in 0..%d", i, LIMIT_MAX_VOCAB - 1);
        else if (json_integer_value(x) > max_id)
            max_id = (int)json_integer_value(x);
    }
    if (!rc) { /* the run: tokens, steps (unknown: NaN), the exact tier by the trace's rule */
        r->model_file = dup_str(j, "model", "(imported trace)");
        r->model_arch = strdup("trace");
        r->model_name = dup_str(j, "source", "");
        r->prompt_text = strdup("");
        r->n_layer = L, r->n_head = H, r->n_head_kv = KV, r->head_dim = hd, r->n_embd = H * hd;
        r->n_vocab = max_id + 1, r->bos = r->eos = r->eot = -1;
        r->sampler = heed_sampler_default_params();
        r->n_prompt = n_prompt, r->n_output = T - n_prompt, r->n_predict = T - n_prompt, r->n_ctx = T;
        r->cap_tok = T;
        r->ids = malloc(sizeof(int32_t) * (size_t)T);
        r->labels = calloc((size_t)T, sizeof(char *));
        r->steps = malloc(sizeof(run_step) * (size_t)(T - n_prompt + 1));
        r->cand = malloc(sizeof(heed_candidate));
        if (!r->model_file || !r->model_arch || !r->model_name || !r->prompt_text || !r->ids || !r->labels ||
            !r->steps || !r->cand)
            rc = HEED_ERR_NOMEM;
        for (int i = 0; !rc && i < T; i++) r->ids[i] = (int32_t)json_integer_value(json_array_get(ids, (size_t)i));
        for (int s = 0; !rc && s < T - n_prompt; s++)
            r->steps[s] = (run_step){r->ids[n_prompt + s], NAN, NAN, NAN};
        if (!rc) rc = set_labels(&t, r, json_string_value(json_object_get(j, "tokenizer")));
        astore_params ap = {0, true, false, 0, NULL, 0};
        if (!rc) rc = astore_init(&r->st, L, H, KV, hd, &ap);
        for (int l = 0; !rc && l < L; l++)
            rc = astore_set_rule(&r->st, l, (kern_attn_rule){(float)scale, (float)cap, windows[l], NULL, 0});
        if (!rc) rc = astore_plan(&r->st, T);
    }
    float *buf = NULL;
    if (!rc && !(buf = malloc(sizeof(float) * (size_t)T * (size_t)H * hd))) rc = HEED_ERR_NOMEM;
    for (int l = 0; !rc && l < L; l++) {
        char name[64], lp[4200];
        snprintf(name, sizeof name, "layer_%03d.safetensors", l);
        snprintf(lp, sizeof lp, "%s/%s", dir, name);
        int src;
        char serr[512];
        st_file *f = st_open(lp, name, &src, serr, sizeof serr);
        if (!f) {
            rc = tfail(&t, NULL, src ? src : HEED_ERR_FORMAT, "%s", serr);
            break;
        }
        rc = read_tensor(&t, f, name, "q", T, H, hd, buf);
        const size_t qd = (size_t)H * hd;
        for (int p = 0; !rc && p < T; p++) /* q store: (pos, layer, q_dim) */
            memcpy(r->st.q + ((size_t)p * L + l) * qd, buf + (size_t)p * qd, sizeof(float) * qd);
        if (!rc) rc = read_tensor(&t, f, name, "k", T, KV, hd, buf);
        for (int g = 0; !rc && g < KV; g++) /* k store: (layer, kv head) arrays of (pos, head_dim) */
            for (int p = 0; p < T; p++)
                memcpy(r->st.k[l * KV + g] + (size_t)p * hd, buf + ((size_t)p * KV + g) * hd, sizeof(float) * (size_t)hd);
        st_close(f);
    }
    free(buf);
    free(windows);
    json_decref(j);
    if (rc) {
        heed_run_free(r);
        return rc;
    }
    r->st.n_pos = T;
    *out = r;
    return HEED_OK;
}

/* ------------------------------------------------------------ writing */

static int write_layer(const heed_run *r, int l, const char *path, float *q, float *k) {
    const int T = r->st.n_pos, H = r->n_head, KV = r->n_head_kv, hd = r->head_dim, L = r->n_layer;
    const size_t qd = (size_t)H * hd;
    for (int p = 0; p < T; p++) memcpy(q + (size_t)p * qd, r->st.q + ((size_t)p * L + l) * qd, sizeof(float) * qd);
    for (int g = 0; g < KV; g++)
        for (int p = 0; p < T; p++)
            memcpy(k + ((size_t)p * KV + g) * hd, r->st.k[l * KV + g] + (size_t)p * hd, sizeof(float) * (size_t)hd);
    size_t qb = (size_t)T * qd * 4, kb = (size_t)T * KV * hd * 4;
    char header[512];
    int n = snprintf(header, sizeof header,
                     "{\"q\":{\"dtype\":\"F32\",\"shape\":[%d,%d,%d],\"data_offsets\":[0,%zu]},"
                     "\"k\":{\"dtype\":\"F32\",\"shape\":[%d,%d,%d],\"data_offsets\":[%zu,%zu]}}",
                     T, H, hd, qb, T, KV, hd, qb, qb + kb);
    uint64_t hl = ((uint64_t)n + 7) & ~(uint64_t)7;
    FILE *f = fopen(path, "wb");
    if (!f) return HEED_ERR_IO;
    bool ok = fwrite(&hl, 8, 1, f) == 1 && fwrite(header, 1, (size_t)n, f) == (size_t)n;
    for (uint64_t i = (uint64_t)n; ok && i < hl; i++) ok = fputc(' ', f) != EOF;
    ok = ok && fwrite(q, 1, qb, f) == qb && fwrite(k, 1, kb, f) == kb;
    ok = fclose(f) == 0 && ok;
    return ok ? HEED_OK : HEED_ERR_IO;
}

int heed_run_export_trace(const heed_run *r, const char *dir, char *err, size_t err_size) {
    if (!r || !dir) return HEED_ERR_INVALID_ARG;
    tr t = {dir, err, err_size};
    if (!r->st.has_qk) return tfail(&t, dir, HEED_ERR_UNSUPPORTED, "the run keeps no q and k (its exact tier)");
    if (r->st.n_ko_list || r->head_scale || r->head_which || r->n_edits)
        return tfail(&t, dir, HEED_ERR_UNSUPPORTED, "heed-trace/1 cannot say what interventions did to the run");
    if (mkdir(dir, 0755) && errno != EEXIST) return tfail(&t, dir, HEED_ERR_IO, "cannot create: %s", strerror(errno));
    const int T = r->st.n_pos;
    json_t *ids = json_array(), *win = json_array();
    for (int i = 0; i < T; i++) json_array_append_new(ids, json_integer(r->ids[i]));
    for (int l = 0; l < r->n_layer; l++) json_array_append_new(win, json_integer(r->st.rules[l].window));
    json_t *j = json_pack("{s:s, s:i, s:i, s:i, s:i, s:o, s:i, s:f, s:o, s:f, s:s, s:s}", "format", TRACE_FORMAT,
                          "n_layer", r->n_layer, "n_head", r->n_head, "n_head_kv", r->n_head_kv, "head_dim", r->head_dim,
                          "token_ids", ids, "n_prompt", r->n_prompt < T ? r->n_prompt : T, "scale",
                          (double)r->st.rules[0].scale, "sliding_window", win, "attn_softcap",
                          (double)(r->st.rules[0].softcap > 0 ? r->st.rules[0].softcap : 0), "model", r->model_file,
                          "source", "heed export");
    if (!j) return HEED_ERR_NOMEM;
    if (!(r->st.rules[0].softcap > 0)) json_object_del(j, "attn_softcap");
    char path[4200];
    snprintf(path, sizeof path, "%s/trace.json", dir);
    int rc = json_dump_file(j, path, JSON_INDENT(1)) ? tfail(&t, path, HEED_ERR_IO, "cannot be written") : HEED_OK;
    json_decref(j);
    float *q = malloc(sizeof(float) * (size_t)T * r->n_head * r->head_dim + 1);
    float *k = malloc(sizeof(float) * (size_t)T * r->n_head_kv * r->head_dim + 1);
    if (!rc && (!q || !k)) rc = HEED_ERR_NOMEM;
    for (int l = 0; !rc && l < r->n_layer; l++) {
        snprintf(path, sizeof path, "%s/layer_%03d.safetensors", dir, l);
        if ((rc = write_layer(r, l, path, q, k))) rc = tfail(&t, path, rc, "cannot be written");
    }
    free(q), free(k);
    return rc;
}
