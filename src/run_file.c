/*
 * run_file.c - the run file (docs/RUN_FORMAT.md): heed_run_write /
 * heed_run_save and heed_run_read / heed_run_load.
 *
 * The file is a header and a fixed sequence of sections, each with its
 * length and a CRC-32 of its payload. Every count read is checked against
 * the named limits of limit.h, and every length against the computed size
 * and the bytes left, before anything is allocated. A stream works as well
 * as a file (the run store compresses what heed_run_write writes, and
 * decompresses into heed_run_read): the reader is told the run's size and
 * never reads past it.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "astore.h"
#include "fmap.h"
#include "run.h"

/* ------------------------------------------------------------- checksums */

void run_crc_table(uint32_t table[256]) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
}

uint32_t run_crc_update(const uint32_t table[256], uint32_t crc, const void *data, size_t n) {
    const unsigned char *p = data;
    crc = ~crc;
    for (size_t i = 0; i < n; i++) crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* The table lives on the caller's stack (no global state); readers and
 * writers keep one for all their sections. */
uint32_t run_crc32(uint32_t crc, const void *data, size_t n) {
    uint32_t table[256];
    run_crc_table(table);
    return run_crc_update(table, crc, data, n);
}

static bool little_endian(void) {
    const uint32_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* ------------------------------------------------------------ run files */

enum {
    FLAG_QK = 1,
    FLAG_TOPK = 2,
    FLAG_HMEAN = 4,
    FLAG_FULL = 8,
    FLAG_EOG = 16,
    FLAG_RESID = 32, /* the lens is to be computed: RESI (residuals) in place of LENS */
    FLAG_INTV = 64,  /* made under an intervention: INTV (the heads' factors) */
    FLAG_RULE = 128, /* attention rows not q.k / sqrt(head_dim) over every key: ATTR (each layer's rule) */
    FLAG_MOE = 256,  /* a mixture-of-experts model's run: EXPT (the routing) */
    FLAG_KNOCK = 512, /* made with attention knockouts: KNCK (the list) */
    FLAG_MEAN = 1024, /* heads' outputs replaced (mean ablation): HVAL (which, and the values) */
    FLAG_EDIT = 2048, /* the residual stream edited (patching, steering): REDT (the edits) */
    FLAG_VNRM = 4096, /* the value norms of value-weighted attention: VNRM */
    FLAG_IFRM = 8192, /* the interventions applied from a position on: IFRM */
    FLAG_MI = 16384,  /* each exact row's softmax statistics: RSTA (after QKST) */
    FLAG_ALL = 32767,
};

/* Sizes are counted first (f == NULL), then written with the CRC. */
typedef struct wr {
    FILE *f;
    uint64_t n;
    uint32_t crc;
    bool io_err;
    const uint32_t *table;
} wr;

static void w_bytes(wr *w, const void *p, size_t n) {
    w->n += n;
    if (!w->f || n == 0) return;
    w->crc = run_crc_update(w->table, w->crc, p, n);
    if (!w->io_err && fwrite(p, 1, n, w->f) != n) w->io_err = true;
}

static void w_u32(wr *w, uint32_t v) { w_bytes(w, &v, 4); }
static void w_i32(wr *w, int32_t v) { w_bytes(w, &v, 4); }
static void w_u64(wr *w, uint64_t v) { w_bytes(w, &v, 8); }
static void w_f32(wr *w, float v) { w_bytes(w, &v, 4); }
static void w_str(wr *w, const char *s) {
    size_t n = strlen(s);
    w_u32(w, (uint32_t)n);
    w_bytes(w, s, n);
}

static uint32_t run_flags(const heed_run *r) {
    return (r->st.has_qk ? FLAG_QK : 0) | (r->st.has_topk ? FLAG_TOPK : 0) | (r->st.has_hmean ? FLAG_HMEAN : 0) |
           (r->st.has_full ? FLAG_FULL : 0) | (r->eog ? FLAG_EOG : 0) |
           (r->resid && heed_run_lens_pending(r) > 0 ? FLAG_RESID : 0) | (r->head_scale ? FLAG_INTV : 0) |
           (astore_rules_default(&r->st) ? 0 : FLAG_RULE) | (r->n_expert ? FLAG_MOE : 0) |
           (r->st.n_ko_list ? FLAG_KNOCK : 0) | (r->head_which ? FLAG_MEAN : 0) |
           (r->n_edits ? FLAG_EDIT : 0) | (r->vnorm && r->vn_n >= r->st.n_pos ? FLAG_VNRM : 0) |
           (r->intervene_from > 0 ? FLAG_IFRM : 0) | (r->st.has_qk && r->st.has_mi ? FLAG_MI : 0);
}

static void sec_meta(wr *w, const heed_run *r) {
    w_str(w, r->model_file); w_str(w, r->model_arch); w_str(w, r->model_name); w_str(w, r->prompt_text);
    w_u64(w, r->model_size); w_u64(w, r->meta_hash);
    const int32_t geo[9] = {r->n_layer, r->n_head, r->n_head_kv, r->head_dim, r->n_embd, r->n_vocab,
                            r->bos, r->eos, r->eot};
    for (int i = 0; i < 9; i++) w_i32(w, geo[i]);
    const heed_sampler_params *sp = &r->sampler;
    w_f32(w, sp->temperature); w_i32(w, sp->top_k); w_f32(w, sp->top_p); w_f32(w, sp->min_p);
    w_f32(w, sp->repeat_penalty); w_i32(w, sp->repeat_last_n); w_u64(w, sp->seed);
    const int32_t cnt[5] = {r->n_predict, r->n_ctx, r->n_cand, r->lens_k, r->st.top_k};
    for (int i = 0; i < 5; i++) w_i32(w, cnt[i]);
    w_u32(w, run_flags(r));
    w_i32(w, r->n_prompt); w_i32(w, r->n_output); w_i32(w, r->st.n_pos);
}

static void sec_toks(wr *w, const heed_run *r) {
    for (int i = 0; i < r->n_prompt + r->n_output; i++) {
        w_i32(w, r->ids[i]);
        w_str(w, r->labels[i]);
    }
}

static void sec_step(wr *w, const heed_run *r) {
    for (int t = 0; t < r->n_output; t++) {
        const run_step *s = &r->steps[t];
        w_i32(w, s->id); w_f32(w, s->prob); w_f32(w, s->logprob); w_f32(w, s->entropy);
        for (int i = 0; i < r->n_cand; i++) {
            const heed_candidate *c = &r->cand[(size_t)t * r->n_cand + i];
            w_i32(w, c->id); w_f32(w, c->logit); w_f32(w, c->prob);
        }
    }
}

static void sec_lens(wr *w, const heed_run *r) {
    size_t n = (size_t)r->n_output * r->n_layer * r->lens_k;
    w_bytes(w, r->lens_id, n * 4);
    w_bytes(w, r->lens_p, n * 4);
}

static void sec_intv(wr *w, const heed_run *r) {
    w_bytes(w, r->head_scale, (size_t)r->n_layer * r->n_head * 4);
}

static void sec_rule(wr *w, const heed_run *r) {
    for (int l = 0; l < r->n_layer; l++) {
        const kern_attn_rule *a = &r->st.rules[l];
        w_f32(w, a->scale); w_f32(w, a->softcap); w_i32(w, a->window);
    }
}

static void sec_hval(wr *w, const heed_run *r) {
    size_t n = (size_t)r->n_layer * r->n_head;
    w_bytes(w, r->head_which, n);
    w_bytes(w, r->head_values, n * r->head_dim * 4);
}

static void sec_edit(wr *w, const heed_run *r) {
    for (int i = 0; i < r->n_edits; i++) {
        const heed_resid_edit *e = &r->edits[i];
        w_i32(w, e->layer); w_i32(w, e->pos); w_i32(w, e->replace); w_f32(w, e->alpha);
        w_bytes(w, e->vec, (size_t)r->n_embd * 4);
    }
}

static void sec_knock(wr *w, const heed_run *r) {
    for (int i = 0; i < r->st.n_ko_list; i++) {
        const heed_knockout *k = &r->st.ko_list[i];
        w_i32(w, k->layer); w_i32(w, k->head); w_i32(w, k->q0); w_i32(w, k->q1); w_i32(w, k->k0); w_i32(w, k->k1);
    }
}

static void sec_moe(wr *w, const heed_run *r) {
    w_i32(w, r->n_expert); w_i32(w, r->n_expert_used); w_i32(w, r->moe_n);
    size_t n = (size_t)r->moe_n * r->n_layer * r->n_expert_used;
    w_bytes(w, r->moe_ids, n * 4);
    w_bytes(w, r->moe_w, n * 4);
}

static void sec_ifrm(wr *w, const heed_run *r) { w_i32(w, r->intervene_from); }

static void sec_vnorm(wr *w, const heed_run *r) {
    w_i32(w, r->st.n_pos);
    w_bytes(w, r->vnorm, (size_t)r->st.n_pos * r->n_layer * r->n_head * 4);
}

static void sec_resid(wr *w, const heed_run *r) {
    w_bytes(w, r->resid, (size_t)r->n_output * r->n_layer * r->n_embd * 4);
}

static void sec_qk(wr *w, const heed_run *r) {
    size_t P = (size_t)r->st.n_pos;
    w_bytes(w, r->st.q, P * r->n_layer * r->st.q_dim * 4);
    for (int i = 0; i < r->n_layer * r->n_head_kv; i++) w_bytes(w, r->st.k[i], P * r->head_dim * 4);
}

static void sec_rsta(wr *w, const heed_run *r) {
    w_bytes(w, r->st.mi, (size_t)r->st.n_pos * r->n_layer * r->n_head * 2 * 4);
}

static void sec_topk(wr *w, const heed_run *r) {
    size_t n = (size_t)r->st.n_pos * r->n_layer * r->n_head * r->st.top_k;
    w_bytes(w, r->st.tk_pos, n * 4);
    w_bytes(w, r->st.tk_w, n * 2);
}

static void sec_hmean(wr *w, const heed_run *r) {
    w_bytes(w, r->st.hmean, astore_tri((size_t)r->st.n_pos) * r->n_layer * 2);
}

static void sec_full(wr *w, const heed_run *r) {
    w_bytes(w, r->st.full, astore_tri((size_t)r->st.n_pos) * r->n_layer * r->n_head * 4);
}

static void sec_end(wr *w, const heed_run *r) {}

typedef void (*sec_fn)(wr *w, const heed_run *r);

typedef struct sec_def {
    char tag[5];
    uint32_t need; /* flag that makes the section present; 0: always */
    sec_fn write;
} sec_def;

/* The sections in file order (docs/RUN_FORMAT.md). With lens_k > 0, LENS
 * (the lens computed) or, with FLAG_RESID, RESI (the residuals to compute it
 * from); decided in sec_present. */
static const sec_def SECTIONS[] = {
    {"META", 0, sec_meta}, {"TOKS", 0, sec_toks}, {"STEP", 0, sec_step}, {"LENS", 0, sec_lens}, {"RESI", 0, sec_resid},
    {"INTV", FLAG_INTV, sec_intv}, {"ATTR", FLAG_RULE, sec_rule}, {"EXPT", FLAG_MOE, sec_moe}, {"KNCK", FLAG_KNOCK, sec_knock}, {"HVAL", FLAG_MEAN, sec_hval}, {"REDT", FLAG_EDIT, sec_edit},
    {"VNRM", FLAG_VNRM, sec_vnorm}, {"IFRM", FLAG_IFRM, sec_ifrm},
    {"QKST", FLAG_QK, sec_qk}, {"RSTA", FLAG_MI, sec_rsta}, {"TOPK", FLAG_TOPK, sec_topk}, {"HMEA", FLAG_HMEAN, sec_hmean},
    {"FULL", FLAG_FULL, sec_full}, {"END!", 0, sec_end},
};
#define N_SECTIONS (sizeof SECTIONS / sizeof SECTIONS[0])

static bool sec_present(const sec_def *d, uint32_t flags, int lens_k) {
    if (!strcmp(d->tag, "LENS")) return lens_k > 0 && !(flags & FLAG_RESID);
    if (!strcmp(d->tag, "RESI")) return lens_k > 0 && (flags & FLAG_RESID);
    return !d->need || (flags & d->need);
}

static void write_section(wr *w, const sec_def *d, const heed_run *r) {
    wr count = {0};
    d->write(&count, r);
    w_bytes(w, d->tag, 4);
    w_u32(w, 0);
    w_u64(w, count.n);
    w->crc = 0;
    d->write(w, r);
    uint32_t crc = w->crc;
    w_u32(w, crc);
}

/* The whole file through w: the header, then every section present. With
 * w->f NULL it only counts the bytes. */
static void write_run(wr *w, const heed_run *r) {
    w_bytes(w, RUN_MAGIC, 8);
    w_u32(w, RUN_VERSION);
    w_u32(w, 0);
    uint32_t flags = run_flags(r);
    for (size_t i = 0; i < N_SECTIONS; i++)
        if (sec_present(&SECTIONS[i], flags, r->lens_k)) write_section(w, &SECTIONS[i], r);
}

uint64_t heed_run_file_size(const heed_run *r) {
    if (!r) return 0;
    wr count = {0};
    write_run(&count, r);
    return count.n;
}

int heed_run_write(const heed_run *r, FILE *f, const char *name, char *err, size_t err_size) {
    if (!r || !f) return HEED_ERR_INVALID_ARG;
    if (!name) name = "run";
    if (!little_endian()) return run_fail(err, err_size, HEED_ERR_UNSUPPORTED, "%s: run files are little-endian", name);
    uint32_t table[256];
    run_crc_table(table);
    wr w = {.f = f, .table = table};
    write_run(&w, r);
    if (w.io_err || fflush(f) != 0)
        return run_fail(err, err_size, HEED_ERR_IO, "%s: write failed: %s", name, strerror(errno));
    return HEED_OK;
}

int heed_run_save(const heed_run *r, const char *path, char *err, size_t err_size) {
    if (!r || !path) return HEED_ERR_INVALID_ARG;
    if (!little_endian()) return run_fail(err, err_size, HEED_ERR_UNSUPPORTED, "%s: run files are little-endian", path);
    FILE *f = fopen(path, "wb");
    if (!f) return run_fail(err, err_size, HEED_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    int rc = heed_run_write(r, f, path, err, err_size);
    if (fclose(f) != 0 && !rc) rc = run_fail(err, err_size, HEED_ERR_IO, "%s: write failed: %s", path, strerror(errno));
    return rc;
}

/* ---- loading */

typedef struct rd {
    FILE *f;
    const char *path;
    uint64_t left;  /* bytes left in the file */
    const char *sec; /* section being read, for messages */
    uint32_t crc;
    const uint32_t *table;
    char *err;
    size_t err_size;
    /* cursor over a small section's payload */
    const unsigned char *p;
    size_t n, off;
} rd;

static int bad(rd *d, const char *field, const char *what) {
    return run_fail(d->err, d->err_size, HEED_ERR_FORMAT, "%s: section %s: %s %s", d->path, d->sec, field, what);
}

static int mul_chk(uint64_t a, uint64_t b, uint64_t *out) { return __builtin_mul_overflow(a, b, out) ? -1 : 0; }

/* Reads n payload bytes into dst, counting them into the CRC. */
static int r_raw(rd *d, void *dst, uint64_t n, const char *field) {
    if (n > d->left || n > SIZE_MAX) return bad(d, field, "extends past the end of the file");
    if (n && fread(dst, 1, (size_t)n, d->f) != n) return bad(d, field, "cannot be read (truncated)");
    d->left -= n;
    d->crc = run_crc_update(d->table, d->crc, dst, (size_t)n);
    return HEED_OK;
}

static int c_take(rd *d, void *dst, size_t n, const char *field) {
    if (n > d->n - d->off) return bad(d, field, "is truncated");
    memcpy(dst, d->p + d->off, n);
    d->off += n;
    return HEED_OK;
}

static int c_i32(rd *d, int32_t *v, const char *field) { return c_take(d, v, 4, field); }
static int c_u32(rd *d, uint32_t *v, const char *field) { return c_take(d, v, 4, field); }
static int c_u64(rd *d, uint64_t *v, const char *field) { return c_take(d, v, 8, field); }
static int c_f32(rd *d, float *v, const char *field) { return c_take(d, v, 4, field); }

static int c_str(rd *d, char **out, const char *field) {
    uint32_t n = 0;
    int rc = c_u32(d, &n, field);
    if (rc) return rc;
    if (n > LIMIT_MAX_STR || n > d->n - d->off) return bad(d, field, "length is out of range");
    *out = malloc((size_t)n + 1);
    if (!*out) return HEED_ERR_NOMEM;
    memcpy(*out, d->p + d->off, n);
    (*out)[n] = 0;
    if (memchr(*out, 0, n)) return bad(d, field, "contains a NUL byte");
    d->off += n;
    return HEED_OK;
}

static int c_int(rd *d, int *v, long lo, long hi, const char *field) {
    int32_t x = 0;
    int rc = c_i32(d, &x, field);
    if (rc) return rc;
    if (x < lo || x > hi) {
        return run_fail(d->err, d->err_size, HEED_ERR_FORMAT, "%s: section %s: %s = %ld is out of range %ld..%ld",
                    d->path, d->sec, field, (long)x, lo, hi);
    }
    *v = x;
    return HEED_OK;
}

/* Section header: the expected tag, and a length that fits in the file. */
static int sec_begin(rd *d, const char *tag, uint64_t *len) {
    unsigned char h[16];
    d->sec = tag;
    if (d->left < sizeof h || fread(h, 1, sizeof h, d->f) != sizeof h)
        return bad(d, "header", "is missing (file truncated)");
    d->left -= sizeof h;
    if (memcmp(h, tag, 4)) {
        char got[5] = {0};
        for (int i = 0; i < 4; i++) got[i] = h[i] >= 32 && h[i] < 127 ? (char)h[i] : '?';
        return run_fail(d->err, d->err_size, HEED_ERR_FORMAT, "%s: expected section %s, found '%s'", d->path, tag, got);
    }
    uint32_t flags;
    memcpy(&flags, h + 4, 4);
    memcpy(len, h + 8, 8);
    if (flags) return bad(d, "flags", "are not 0");
    if (*len > d->left) return bad(d, "length", "extends past the end of the file");
    d->crc = 0;
    return HEED_OK;
}

static int sec_end_check(rd *d) {
    uint32_t want = d->crc, got;
    if (d->left < 4 || fread(&got, 1, 4, d->f) != 4) return bad(d, "checksum", "is missing (file truncated)");
    d->left -= 4;
    if (got != want) {
        return run_fail(d->err, d->err_size, HEED_ERR_FORMAT, "%s: section %s: checksum mismatch (stored %08x, computed %08x)",
                    d->path, d->sec, got, want);
    }
    return HEED_OK;
}

/* A small section read whole into a buffer for the cursor. */
static int sec_small(rd *d, const char *tag, unsigned char **buf) {
    uint64_t len;
    int rc = sec_begin(d, tag, &len);
    if (rc) return rc;
    *buf = malloc(len ? (size_t)len : 1);
    if (!*buf) return HEED_ERR_NOMEM;
    rc = r_raw(d, *buf, len, "payload");
    if (!rc) rc = sec_end_check(d);
    d->p = *buf;
    d->n = (size_t)len;
    d->off = 0;
    return rc;
}

static int sec_done(rd *d) { return d->off == d->n ? HEED_OK : bad(d, "payload", "has trailing bytes"); }

static int parse_meta(rd *d, heed_run *r, uint32_t *flags) {
    int rc = c_str(d, &r->model_file, "model_file");
    if (!rc) rc = c_str(d, &r->model_arch, "model_arch");
    if (!rc) rc = c_str(d, &r->model_name, "model_name");
    if (!rc) rc = c_str(d, &r->prompt_text, "prompt_text");
    if (!rc) rc = c_u64(d, &r->model_size, "model_size");
    if (!rc) rc = c_u64(d, &r->meta_hash, "meta_hash");
    if (!rc) rc = c_int(d, &r->n_layer, 1, LIMIT_MAX_LAYER, "n_layer");
    if (!rc) rc = c_int(d, &r->n_head, 1, LIMIT_MAX_HEAD, "n_head");
    if (!rc) rc = c_int(d, &r->n_head_kv, 1, r->n_head, "n_head_kv");
    if (!rc && r->n_head % r->n_head_kv) return bad(d, "n_head_kv", "does not divide n_head");
    if (!rc) rc = c_int(d, &r->head_dim, 1, LIMIT_MAX_HEAD_DIM, "head_dim");
    if (!rc) rc = c_int(d, &r->n_embd, 1, LIMIT_MAX_HEAD * LIMIT_MAX_HEAD_DIM, "n_embd");
    if (!rc) rc = c_int(d, &r->n_vocab, 1, LIMIT_MAX_VOCAB, "n_vocab");
    int bos = -1, eos = -1, eot = -1;
    if (!rc) rc = c_int(d, &bos, -1, r->n_vocab - 1, "bos");
    if (!rc) rc = c_int(d, &eos, -1, r->n_vocab - 1, "eos");
    if (!rc) rc = c_int(d, &eot, -1, r->n_vocab - 1, "eot");
    r->bos = bos; r->eos = eos; r->eot = eot;
    heed_sampler_params *sp = &r->sampler;
    int32_t top_k = 0, last_n = 0;
    if (!rc) rc = c_f32(d, &sp->temperature, "temperature");
    if (!rc) rc = c_i32(d, &top_k, "top_k");
    if (!rc) rc = c_f32(d, &sp->top_p, "top_p");
    if (!rc) rc = c_f32(d, &sp->min_p, "min_p");
    if (!rc) rc = c_f32(d, &sp->repeat_penalty, "repeat_penalty");
    if (!rc) rc = c_i32(d, &last_n, "repeat_last_n");
    if (!rc) rc = c_u64(d, &sp->seed, "seed");
    sp->top_k = top_k;
    sp->repeat_last_n = last_n;
    int atk = 0;
    if (!rc) rc = c_int(d, &r->n_predict, -1, LIMIT_MAX_TOKENS, "n_predict");
    if (!rc) rc = c_int(d, &r->n_ctx, 0, LIMIT_MAX_TOKENS, "n_ctx");
    if (!rc) rc = c_int(d, &r->n_cand, 0, r->n_vocab < LIMIT_MAX_CAND ? r->n_vocab : LIMIT_MAX_CAND, "n_cand");
    if (!rc) rc = c_int(d, &r->lens_k, 0, r->n_vocab < LIMIT_MAX_LENS ? r->n_vocab : LIMIT_MAX_LENS, "lens_top_k");
    if (!rc) rc = c_int(d, &atk, 0, LIMIT_MAX_ATTN_TOPK, "attn_top_k");
    if (!rc) rc = c_u32(d, flags, "flags");
    if (!rc && (*flags & ~(uint32_t)FLAG_ALL)) return bad(d, "flags", "has unknown bits");
    if (!rc && (atk > 0) != !!(*flags & FLAG_TOPK)) return bad(d, "attn_top_k", "disagrees with the TOPK flag");
    if (!rc) rc = c_int(d, &r->n_prompt, 1, LIMIT_MAX_TOKENS, "n_prompt");
    if (!rc) rc = c_int(d, &r->n_output, 0, LIMIT_MAX_TOKENS - r->n_prompt, "n_output");
    int n_pos = 0;
    if (!rc) rc = c_int(d, &n_pos, 0, r->n_prompt + r->n_output, "n_pos");
    if (!rc) rc = sec_done(d);
    if (rc) return rc;
    r->eog = *flags & FLAG_EOG;
    astore_params ap = {atk, *flags & FLAG_QK, *flags & FLAG_HMEAN, (*flags & FLAG_FULL) ? SIZE_MAX : 0, NULL, 0};
    rc = astore_init(&r->st, r->n_layer, r->n_head, r->n_head_kv, r->head_dim, &ap);
    r->st.n_pos = n_pos;
    return rc;
}

static int parse_toks(rd *d, heed_run *r) {
    int n = r->n_prompt + r->n_output, rc = HEED_OK;
    r->ids = malloc(sizeof *r->ids * (size_t)n);
    r->labels = calloc((size_t)n, sizeof *r->labels);
    if (!r->ids || !r->labels) return HEED_ERR_NOMEM;
    for (int i = 0; i < n && !rc; i++) {
        int id;
        rc = c_int(d, &id, 0, r->n_vocab - 1, "token id");
        r->ids[i] = id;
        if (!rc) rc = c_str(d, &r->labels[i], "token label");
    }
    return rc ? rc : sec_done(d);
}

static int parse_step(rd *d, heed_run *r) {
    size_t n = (size_t)r->n_output;
    r->steps = malloc(sizeof *r->steps * (n ? n : 1));
    r->cand = malloc(sizeof *r->cand * (n * r->n_cand + 1));
    if (!r->steps || !r->cand) return HEED_ERR_NOMEM;
    int rc = HEED_OK;
    for (size_t t = 0; t < n && !rc; t++) {
        run_step *s = &r->steps[t];
        int id;
        rc = c_int(d, &id, 0, r->n_vocab - 1, "step id");
        s->id = id;
        if (!rc && id != r->ids[r->n_prompt + t]) return bad(d, "step id", "differs from the output token");
        if (!rc) rc = c_f32(d, &s->prob, "prob");
        if (!rc) rc = c_f32(d, &s->logprob, "logprob");
        if (!rc) rc = c_f32(d, &s->entropy, "entropy");
        for (int i = 0; i < r->n_cand && !rc; i++) {
            heed_candidate *c = &r->cand[t * r->n_cand + i];
            int cid;
            rc = c_int(d, &cid, 0, r->n_vocab - 1, "candidate id");
            c->id = cid;
            if (!rc) rc = c_f32(d, &c->logit, "candidate logit");
            if (!rc) rc = c_f32(d, &c->prob, "candidate prob");
        }
    }
    return rc ? rc : sec_done(d);
}

/* A bulk section: its length must be exactly the sum of the parts, read
 * straight into the arrays. */
typedef struct part {
    void **dst;
    uint64_t count, size;
    const char *field;
} part;

static int sec_bulk(rd *d, const char *tag, part *parts, int n) {
    uint64_t len, total = 0, bytes;
    int rc = sec_begin(d, tag, &len);
    if (rc) return rc;
    for (int i = 0; i < n; i++) {
        if (mul_chk(parts[i].count, parts[i].size, &bytes) || bytes > SIZE_MAX ||
            __builtin_add_overflow(total, bytes, &total))
            return bad(d, parts[i].field, "count is absurd");
    }
    if (len != total) {
        return run_fail(d->err, d->err_size, HEED_ERR_FORMAT,
                    "%s: section %s: length %llu does not match the counts (%llu bytes)", d->path, tag,
                    (unsigned long long)len, (unsigned long long)total);
    }
    for (int i = 0; i < n && !rc; i++) {
        bytes = parts[i].count * parts[i].size;
        *parts[i].dst = malloc(bytes ? (size_t)bytes : 1);
        if (!*parts[i].dst) return HEED_ERR_NOMEM;
        rc = r_raw(d, *parts[i].dst, bytes, parts[i].field);
    }
    return rc ? rc : sec_end_check(d);
}

static int check_lens(rd *d, const heed_run *r) {
    size_t n = (size_t)r->n_output * r->n_layer * r->lens_k;
    for (size_t i = 0; i < n; i++)
        if (r->lens_id[i] < -1 || r->lens_id[i] >= r->n_vocab) return bad(d, "lens id", "is out of range");
    return HEED_OK;
}

static int check_topk(rd *d, const heed_run *r) {
    const astore *s = &r->st;
    size_t per_pos = (size_t)s->n_layer * s->n_head * s->top_k;
    for (size_t p = 0; p < (size_t)s->n_pos; p++)
        for (size_t i = 0; i < per_pos; i++) {
            uint32_t v = s->tk_pos[p * per_pos + i];
            if (v != ASTORE_TK_NONE && v > p) return bad(d, "top-k position", "is beyond its query");
        }
    return HEED_OK;
}

static int load_attn(rd *d, heed_run *r, uint32_t flags) {
    astore *s = &r->st;
    uint64_t P = (uint64_t)s->n_pos, L = (uint64_t)s->n_layer, H = (uint64_t)s->n_head, tri = P * (P + 1) / 2;
    int rc = HEED_OK;
    /* every product below is < 2^20 * 2^21 * 2^10 * 2^12: no overflow */
    if (flags & FLAG_QK) {
        int nk = s->n_layer * s->n_head_kv;
        part *p = malloc(sizeof *p * (size_t)(nk + 1));
        if (!p) return HEED_ERR_NOMEM;
        p[0] = (part){(void **)&s->q, P * L * s->q_dim, 4, "q"};
        for (int i = 0; i < nk; i++) p[1 + i] = (part){(void **)&s->k[i], P * s->head_dim, 4, "k"};
        rc = sec_bulk(d, "QKST", p, nk + 1);
        free(p);
    }
    if (!rc && (flags & FLAG_MI)) { /* rows' statistics: a max that is a number or -inf, a factor in [0, 1] */
        if (!(flags & FLAG_QK)) return bad(d, "RSTA", "comes without QKST");
        part p[1] = {{(void **)&s->mi, P * L * H * 2, 4, "row statistics"}};
        rc = sec_bulk(d, "RSTA", p, 1);
        for (uint64_t i = 0; !rc && i < P * L * H; i++) {
            float m = s->mi[2 * i], v = s->mi[2 * i + 1];
            if (isnan(m) || m == INFINITY || !(v >= 0.0f && v <= 1.0f) || (m == -INFINITY) != (v == 0.0f))
                rc = bad(d, "row statistics", "are out of range");
        }
        s->has_mi = !rc;
    }
    if (!rc && (flags & FLAG_TOPK)) {
        uint64_t n = P * L * H * (uint64_t)s->top_k;
        part p[2] = {{(void **)&s->tk_pos, n, 4, "top-k positions"}, {(void **)&s->tk_w, n, 2, "top-k weights"}};
        rc = sec_bulk(d, "TOPK", p, 2);
        if (!rc) rc = check_topk(d, r);
    }
    if (!rc && (flags & FLAG_HMEAN)) {
        part p[1] = {{(void **)&s->hmean, tri * L, 2, "head-mean rows"}};
        rc = sec_bulk(d, "HMEA", p, 1);
    }
    if (!rc && (flags & FLAG_FULL)) {
        uint64_t n;
        if (mul_chk(tri, L * H, &n)) return bad(d, "full", "count is absurd");
        part p[1] = {{(void **)&s->full, n, 4, "full probabilities"}};
        rc = sec_bulk(d, "FULL", p, 1);
    }
    s->cap = s->full_cap = s->n_pos;
    return rc;
}

/* EXPT: three counts, then the ids and the weights (sizes checked by sec_bulk). */
static int load_moe(rd *d, heed_run *r) {
    uint64_t len;
    int rc = sec_begin(d, "EXPT", &len);
    int32_t cnt[3];
    if (!rc && len < sizeof cnt) return bad(d, "EXPT", "is too short");
    if (!rc) rc = r_raw(d, cnt, sizeof cnt, "expert counts");
    if (rc) return rc;
    if (cnt[0] < 1 || cnt[0] > LIMIT_MAX_EXPERTS) return bad(d, "n_expert", "is out of range");
    if (cnt[1] < 1 || cnt[1] > cnt[0]) return bad(d, "n_expert_used", "is out of range");
    if (cnt[2] < 0 || cnt[2] > r->n_prompt + r->n_output) return bad(d, "routed positions", "is out of range");
    r->n_expert = cnt[0], r->n_expert_used = cnt[1], r->moe_n = r->moe_cap = cnt[2];
    uint64_t n = (uint64_t)cnt[2] * r->n_layer * cnt[1];
    if (len - sizeof cnt != n * 8) return bad(d, "EXPT", "length does not match the counts");
    r->moe_ids = malloc(n ? n * 4 : 1);
    r->moe_w = malloc(n ? n * 4 : 1);
    if (!r->moe_ids || !r->moe_w) return HEED_ERR_NOMEM;
    if ((rc = r_raw(d, r->moe_ids, n * 4, "expert ids")) || (rc = r_raw(d, r->moe_w, n * 4, "expert weights"))) return rc;
    for (uint64_t i = 0; i < n; i++) {
        if (r->moe_ids[i] < 0 || r->moe_ids[i] >= cnt[0]) return bad(d, "expert id", "is out of range");
        if (!isfinite(r->moe_w[i])) return bad(d, "expert weight", "is not finite");
    }
    return sec_end_check(d);
}

/* VNRM: the positions counted, then their value norms (finite, >= 0). */
static int load_vnorm(rd *d, heed_run *r) {
    uint64_t len;
    int rc = sec_begin(d, "VNRM", &len);
    int32_t n;
    if (!rc && len < sizeof n) return bad(d, "VNRM", "is too short");
    if (!rc) rc = r_raw(d, &n, sizeof n, "value norm count");
    if (rc) return rc;
    if (n < 0 || n > r->n_prompt + r->n_output) return bad(d, "value norm count", "is out of range");
    uint64_t cnt = (uint64_t)n * r->n_layer * r->n_head;
    if (len - sizeof n != cnt * 4) return bad(d, "VNRM", "length does not match the count");
    if (!(r->vnorm = malloc(cnt ? cnt * 4 : 1))) return HEED_ERR_NOMEM;
    r->vn_n = r->vn_cap = n;
    if ((rc = r_raw(d, r->vnorm, cnt * 4, "value norms"))) return rc;
    for (uint64_t i = 0; i < cnt; i++)
        if (!isfinite(r->vnorm[i]) || r->vnorm[i] < 0) return bad(d, "value norm", "is not a finite number >= 0");
    return sec_end_check(d);
}

/* REDT: the residual edits, each 16 bytes and n_embd floats. */
static int load_edits(rd *d, heed_run *r) {
    uint64_t len, each = 16 + 4 * (uint64_t)r->n_embd;
    int rc = sec_begin(d, "REDT", &len);
    if (rc) return rc;
    if (len == 0 || len % each || len / each > HEED_MAX_RESID_EDITS) return bad(d, "residual edits", "count is out of range");
    int n = (int)(len / each);
    r->edits = calloc((size_t)n, sizeof *r->edits);
    r->edit_vecs = malloc(sizeof(float) * (size_t)n * r->n_embd);
    if (!r->edits || !r->edit_vecs) return HEED_ERR_NOMEM;
    for (int i = 0; i < n && !rc; i++) {
        int32_t h[3];
        float alpha;
        float *v = r->edit_vecs + (size_t)i * r->n_embd;
        if ((rc = r_raw(d, h, 12, "residual edit")) || (rc = r_raw(d, &alpha, 4, "residual edit")) ||
            (rc = r_raw(d, v, 4 * (uint64_t)r->n_embd, "residual edit vector")))
            break;
        if (h[0] < 0 || h[0] >= r->n_layer || h[1] < -1 || (h[2] != 0 && h[2] != 1) || !isfinite(alpha))
            rc = bad(d, "residual edit", "is out of range");
        for (int k = 0; !rc && k < r->n_embd; k++)
            if (!isfinite(v[k])) rc = bad(d, "residual edit vector", "is not finite");
        r->edits[i] = (heed_resid_edit){h[0], h[1], h[2] == 1, alpha, v};
        r->n_edits = i + 1;
    }
    return rc ? rc : sec_end_check(d);
}

static int load_body(rd *d, heed_run *r) {
    unsigned char *buf = NULL;
    uint32_t flags = 0;
    int rc = sec_small(d, "META", &buf);
    if (!rc) rc = parse_meta(d, r, &flags);
    free(buf);
    buf = NULL;
    if (!rc) rc = sec_small(d, "TOKS", &buf);
    if (!rc) rc = parse_toks(d, r);
    free(buf);
    buf = NULL;
    if (!rc) rc = sec_small(d, "STEP", &buf);
    if (!rc) rc = parse_step(d, r);
    free(buf);
    buf = NULL;
    r->cap_tok = r->n_prompt + r->n_output;
    if (!rc && r->lens_k > 0) {
        uint64_t n = (uint64_t)r->n_output * r->n_layer * r->lens_k;
        r->lens_ready = calloc((size_t)r->cap_tok + 1, 1);
        if (!r->lens_ready) rc = HEED_ERR_NOMEM;
        if (!rc && (flags & FLAG_RESID)) { /* the lens is computed when asked, with the model */
            uint64_t nr;
            if (mul_chk((uint64_t)r->n_output * r->n_layer, (uint64_t)r->n_embd, &nr)) return bad(d, "residuals", "count is absurd");
            part p[1] = {{(void **)&r->resid, nr, 4, "residuals"}};
            rc = sec_bulk(d, "RESI", p, 1);
            r->lens_id = rc ? NULL : calloc(n + 1, 4);
            r->lens_p = rc ? NULL : calloc(n + 1, 4);
            if (!rc && (!r->lens_id || !r->lens_p)) rc = HEED_ERR_NOMEM;
            r->lens_lazy = true;
        } else if (!rc) {
            part p[2] = {{(void **)&r->lens_id, n, 4, "lens ids"}, {(void **)&r->lens_p, n, 4, "lens probs"}};
            rc = sec_bulk(d, "LENS", p, 2);
            if (!rc) rc = check_lens(d, r);
            if (!rc) memset(r->lens_ready, 1, (size_t)r->n_output);
        }
    }
    if (!rc && (flags & FLAG_INTV)) { /* the intervention it was made under */
        part p[1] = {{(void **)&r->head_scale, (uint64_t)r->n_layer * r->n_head, 4, "head factors"}};
        rc = sec_bulk(d, "INTV", p, 1);
        for (int i = 0; !rc && i < r->n_layer * r->n_head; i++)
            if (!isfinite(r->head_scale[i])) rc = bad(d, "head factor", "is not finite");
    }
    if (!rc && (flags & FLAG_RULE)) { /* how rows are formed from q and k, per layer */
        struct { float scale, softcap; int32_t window; } *a = NULL;
        part p[1] = {{(void **)&a, (uint64_t)r->n_layer, 12, "attention rules"}};
        rc = sec_bulk(d, "ATTR", p, 1);
        for (int l = 0; !rc && l < r->n_layer; l++) {
            kern_attn_rule k = {a[l].scale, a[l].softcap, a[l].window, NULL, 0};
            if (k.window > LIMIT_MAX_CTX || astore_set_rule(&r->st, l, k)) rc = bad(d, "attention rule", "is out of range");
        }
        free(a);
    }
    if (!rc && (flags & FLAG_MOE)) rc = load_moe(d, r);
    if (!rc && (flags & FLAG_KNOCK)) { /* the knockouts it was made under, applied to every recomputed row */
        int32_t *k = NULL;
        uint64_t len;
        rc = sec_begin(d, "KNCK", &len);
        if (!rc && (len == 0 || len % 24 || len / 24 > LIMIT_MAX_KNOCKOUTS)) rc = bad(d, "knockouts", "count is out of range");
        if (!rc && !(k = malloc((size_t)len))) rc = HEED_ERR_NOMEM;
        if (!rc) rc = r_raw(d, k, len, "knockouts");
        if (!rc) rc = sec_end_check(d);
        if (!rc) {
            heed_knockout *list = malloc(sizeof *list * (size_t)(len / 24));
            if (!list) rc = HEED_ERR_NOMEM;
            for (size_t i = 0; !rc && i < len / 24; i++)
                list[i] = (heed_knockout){k[6 * i], k[6 * i + 1], k[6 * i + 2], k[6 * i + 3], k[6 * i + 4], k[6 * i + 5]};
            if (!rc && astore_set_knockouts(&r->st, list, (int)(len / 24))) rc = bad(d, "knockout", "is out of range");
            free(list);
        }
        free(k);
    }
    if (!rc && (flags & FLAG_MEAN)) { /* the heads whose output was replaced, and the values */
        uint64_t n = (uint64_t)r->n_layer * r->n_head;
        part p[2] = {{(void **)&r->head_which, n, 1, "replaced heads"},
                     {(void **)&r->head_values, n * (uint64_t)r->head_dim, 4, "head values"}};
        rc = sec_bulk(d, "HVAL", p, 2);
        for (uint64_t i = 0; !rc && i < n * (uint64_t)r->head_dim; i++)
            if (!isfinite(r->head_values[i])) rc = bad(d, "head value", "is not finite");
    }
    if (!rc && (flags & FLAG_EDIT)) rc = load_edits(d, r);
    if (!rc && (flags & FLAG_VNRM)) rc = load_vnorm(d, r);
    if (!rc && (flags & FLAG_IFRM)) { /* the position the interventions applied from */
        int32_t *v = NULL;
        part pt = {(void **)&v, 1, 4, "intervention start"};
        rc = sec_bulk(d, "IFRM", &pt, 1);
        if (!rc && (*v < 1 || *v > r->n_prompt + r->n_output)) rc = bad(d, "intervention start", "is out of range");
        if (!rc) r->intervene_from = *v;
        free(v);
    }
    if (!rc) rc = load_attn(d, r, flags);
    if (!rc) {
        uint64_t len;
        rc = sec_begin(d, "END!", &len);
        if (!rc && len) rc = bad(d, "length", "is not 0");
        if (!rc) rc = sec_end_check(d);
    }
    if (!rc && d->left) {
        rc = run_fail(d->err, d->err_size, HEED_ERR_FORMAT, "%s: %llu trailing bytes after the END! section", d->path,
                  (unsigned long long)d->left);
    }
    return rc;
}

static int load_header(rd *d) {
    unsigned char h[16];
    d->sec = "header";
    if (d->left < sizeof h || fread(h, 1, sizeof h, d->f) != sizeof h)
        return run_fail(d->err, d->err_size, HEED_ERR_FORMAT, "%s: too short for a heed run file", d->path);
    d->left -= sizeof h;
    if (memcmp(h, RUN_MAGIC, 8))
        return run_fail(d->err, d->err_size, HEED_ERR_FORMAT, "%s: bad magic: not a heed run file", d->path);
    uint32_t version, reserved;
    memcpy(&version, h + 8, 4);
    memcpy(&reserved, h + 12, 4);
    if (version != RUN_VERSION)
        return run_fail(d->err, d->err_size, HEED_ERR_UNSUPPORTED, "%s: run format version %u is not supported (this heed reads %u)",
                    d->path, version, RUN_VERSION);
    if (reserved) return run_fail(d->err, d->err_size, HEED_ERR_FORMAT, "%s: header: reserved field is not 0", d->path);
    return HEED_OK;
}

int heed_run_read(FILE *f, uint64_t size, const char *name, heed_run **out, char *err, size_t err_size) {
    if (!f || !out) return HEED_ERR_INVALID_ARG;
    *out = NULL;
    if (!name) name = "run";
    if (!little_endian()) return run_fail(err, err_size, HEED_ERR_UNSUPPORTED, "%s: run files are little-endian", name);
    uint32_t table[256];
    run_crc_table(table);
    rd d = {.f = f, .path = name, .left = size, .table = table, .err = err, .err_size = err_size};
    heed_run *r = calloc(1, sizeof *r);
    int rc = r ? load_header(&d) : HEED_ERR_NOMEM;
    if (!rc) rc = load_body(&d, r);
    if (rc == HEED_ERR_NOMEM) run_fail(err, err_size, rc, "%s: out of memory", name);
    if (rc) {
        heed_run_free(r);
        return rc;
    }
    *out = r;
    return HEED_OK;
}

int heed_run_load(const char *path, heed_run **out, char *err, size_t err_size) {
    if (!path || !out) return HEED_ERR_INVALID_ARG;
    *out = NULL;
    if (!little_endian()) return run_fail(err, err_size, HEED_ERR_UNSUPPORTED, "%s: run files are little-endian", path);
    uint64_t size;
    int fd = fmap_open_fd(path, &size, err, err_size); /* regular files only: a FIFO would hang */
    if (fd < 0) return HEED_ERR_IO;
    FILE *f = fdopen(fd, "rb");
    if (!f) {
        int e = errno;
        close(fd);
        return run_fail(err, err_size, HEED_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    int rc = heed_run_read(f, size, path, out, err, err_size);
    fclose(f);
    return rc;
}
