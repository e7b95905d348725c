/*
 * test_trace_vllmhook - IBM vLLM-Hook q/k captures (docs/TRACE_FORMAT.md):
 * captures written here in the layout its writer produces (two
 * tensor-parallel ranks in tp_rank_N folders, GQA, two sequences; compact
 * and padded packing; F32, F16, BF16) import to the same rows, bit for
 * bit, as the same q and k written as heed-trace/1; the ranks merge by
 * global head; every refusal names its cause (a missing rank, a wrong
 * shape, last_token mode, missing geometry or ids, a .pt capture, ...).
 */
#include <jansson.h>
#include <math.h>
#include <sys/stat.h>

#include "heed.h"
#include "testutil.h"

enum { L = 2, H = 4, KV = 2, HD = 8, TP = 2, NS = 2, TMAX = 7 };
#define SCALE 0.3

/* Sequence 0: a 5-token prefill and two decode passes; sequence 1: one 6-token prefill. */
static const int seq_T[NS] = {7, 6};
static const int n_passes[NS] = {3, 1};
static const int pass_q[NS][3] = {{5, 1, 1}, {6}};
static const int pass_end[NS][3] = {{5, 6, 7}, {6}};

static float qg[L][NS][TMAX][H][HD], kg[L][NS][TMAX][KV][HD]; /* global heads, values exact in F16 and BF16 */

static void fill(void) {
    uint64_t s = 7;
    for (int l = 0; l < L; l++)
        for (int q = 0; q < NS; q++)
            for (int t = 0; t < TMAX; t++) {
                for (int h = 0; h < H; h++)
                    for (int d = 0; d < HD; d++) qg[l][q][t][h][d] = (float)((int)((s = s * 6364136223846793005ull + 1) >> 55) - 256) / 256;
                for (int g = 0; g < KV; g++)
                    for (int d = 0; d < HD; d++) kg[l][q][t][g][d] = (float)((int)((s = s * 6364136223846793005ull + 1) >> 55) - 256) / 256;
            }
}

/* ------------------------------------------------------------ writers */

typedef struct tensor {
    char name[96];
    int nd;
    int64_t shape[3];
    float *v;
} tensor;

static uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)(u >> 16); /* the values are exact in BF16 */
}

/* A safetensors file of n tensors in dtype (0 F32, 1 F16, 2 BF16). */
static void write_st(const char *path, const tensor *t, int n, int dtype) {
    const char *dn = dtype == 0 ? "F32" : dtype == 1 ? "F16" : "BF16";
    size_t el = dtype == 0 ? 4 : 2, off = 0;
    char header[4096];
    int hn = snprintf(header, sizeof header, "{");
    for (int i = 0; i < n; i++) {
        size_t cnt = 1;
        for (int d = 0; d < t[i].nd; d++) cnt *= (size_t)t[i].shape[d];
        hn += snprintf(header + hn, sizeof header - (size_t)hn, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[", i ? "," : "", t[i].name, dn);
        for (int d = 0; d < t[i].nd; d++) hn += snprintf(header + hn, sizeof header - (size_t)hn, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        hn += snprintf(header + hn, sizeof header - (size_t)hn, "],\"data_offsets\":[%zu,%zu]}", off, off + cnt * el);
        off += cnt * el;
    }
    hn += snprintf(header + hn, sizeof header - (size_t)hn, "}");
    uint64_t hl = ((uint64_t)hn + 7) & ~(uint64_t)7;
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(&hl, 8, 1, f);
    fwrite(header, 1, (size_t)hn, f);
    for (uint64_t i = (uint64_t)hn; i < hl; i++) fputc(' ', f);
    for (int i = 0; i < n; i++) {
        size_t cnt = 1;
        for (int d = 0; d < t[i].nd; d++) cnt *= (size_t)t[i].shape[d];
        for (size_t j = 0; j < cnt; j++) {
            if (dtype == 0) fwrite(&t[i].v[j], 4, 1, f);
            else {
                uint16_t h = dtype == 1 ? heed_f32_to_f16(t[i].v[j]) : to_bf16(t[i].v[j]);
                fwrite(&h, 2, 1, f);
            }
        }
    }
    fclose(f);
}

/* mkdir -p dir, emptied first when fresh. */
static void make_dir(const char *dir, bool fresh) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s%s && mkdir -p %s", fresh ? "rm -rf " : "true ", fresh ? dir : "", dir);
    assert_int_equal(system(cmd), 0);
}

/* The same q and k of one sequence as heed-trace/1 (F32). */
static void write_trace(const char *dir, int seq, int n_prompt) {
    make_dir(dir, true);
    const int T = seq_T[seq];
    for (int l = 0; l < L; l++) {
        tensor t[2] = {{"q", 3, {T, H, HD}, malloc(sizeof(float) * T * H * HD)}, {"k", 3, {T, KV, HD}, malloc(sizeof(float) * T * KV * HD)}};
        memcpy(t[0].v, qg[l][seq], sizeof(float) * T * H * HD);
        memcpy(t[1].v, kg[l][seq], sizeof(float) * T * KV * HD);
        char p[256];
        snprintf(p, sizeof p, "%s/layer_%03d.safetensors", dir, l);
        write_st(p, t, 2, 0);
        free(t[0].v), free(t[1].v);
    }
    json_t *ids = json_array();
    for (int i = 0; i < T; i++) json_array_append_new(ids, json_integer(10 + 7 * i + seq));
    json_t *j = json_pack("{s:s, s:i, s:i, s:i, s:i, s:o, s:i, s:f}", "format", "heed-trace/1", "n_layer", L, "n_head", H,
                          "n_head_kv", KV, "head_dim", HD, "token_ids", ids, "n_prompt", n_prompt, "scale", SCALE);
    char p[256];
    snprintf(p, sizeof p, "%s/trace.json", dir);
    assert_int_equal(json_dump_file(j, p, 0), 0);
    json_decref(j);
}

static void write_ids(const char *path, int seq, int n, bool as_json) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(as_json ? "[" : "", f);
    for (int i = 0; i < n; i++) fprintf(f, as_json ? "%s%d" : "%s%d", i ? (as_json ? ", " : " \n") : "", 10 + 7 * i + seq);
    fputs(as_json ? "]\n" : "\n", f);
    fclose(f);
}

/* How a test capture departs from a good one. */
typedef struct variant {
    bool compact;
    int dtype;
    int tp;                /* 1 or TP */
    bool no_shard;         /* omit tp_shard (older versions) */
    bool swap_data;        /* each rank holds the other's heads (its tp_shard unchanged) */
    int short_rank;        /* a rank whose layer 0 q has one row fewer (-1: none) */
    const char *mode;      /* layer 1's hookq_mode */
    bool no_head_dim;      /* config without head_dim */
    int q_heads_rank0;     /* tp 1: q heads the one rank holds (H: all; 2: a rank-0-only capture) */
    bool gap;              /* compact: sequence 1's only pass starts at 1 (prefix caching) */
} variant;

static variant good(bool compact) { return (variant){compact, 2, TP, false, false, -1, "all_tokens", false, H, false}; }

static void write_rank(const char *dir, int rank, const variant *va) {
    const int tp = va->tp;
    const int nq = tp == 1 ? va->q_heads_rank0 : H / tp, nkv = tp == 1 ? KV : KV / tp;
    const int src = va->swap_data ? tp - 1 - rank : rank; /* whose heads the data are */
    const int q0 = src * nq, kv0 = src * nkv, wq = nq * HD, wk = nkv * HD;
    int n_pass = 0, q_rows = 0, k_rows = 0;
    for (int s = 0; s < NS; s++) n_pass += n_passes[s], q_rows += seq_T[s], k_rows += seq_T[s];
    tensor t[2 * L];
    json_t *order = json_array();
    for (int li = 0; li < L; li++) {
        int l = L - 1 - li; /* layer_order lists layer 1 first: the reader goes by layer_num */
        tensor *tq = &t[2 * li], *tk = &t[2 * li + 1];
        snprintf(tq->name, sizeof tq->name, "model__layers__%d__self_attn__attn__q", l);
        snprintf(tk->name, sizeof tk->name, "model__layers__%d__self_attn__attn__k", l);
        int short_by = va->short_rank == rank && l == 0;
        if (va->compact) {
            *tq = (tensor){"", 2, {q_rows - short_by, wq, 0}, calloc((size_t)q_rows * wq, sizeof(float))};
            *tk = (tensor){"", 2, {k_rows, wk, 0}, calloc((size_t)k_rows * wk, sizeof(float))};
        } else {
            *tq = (tensor){"", 3, {n_pass, 6 - short_by, wq}, calloc((size_t)n_pass * 6 * wq, sizeof(float))};
            *tk = (tensor){"", 3, {n_pass, TMAX, wk}, calloc((size_t)n_pass * TMAX * wk, sizeof(float))};
        }
        snprintf(tq->name, sizeof tq->name, "model__layers__%d__self_attn__attn__q", l);
        snprintf(tk->name, sizeof tk->name, "model__layers__%d__self_attn__attn__k", l);
        int qrow = 0, krow = 0, b = 0;
        for (int s = 0; s < NS; s++) {
            for (int e = 0; e < n_passes[s]; e++, b++) {
                int n = pass_q[s][e], start = pass_end[s][e] - n;
                for (int i = 0; i < n; i++) {
                    float *dst = va->compact ? tq->v + (size_t)(qrow + i) * wq : tq->v + ((size_t)b * 6 + i) * wq;
                    if (va->compact && qrow + i >= q_rows - short_by) continue;
                    if (!va->compact && i >= 6 - short_by) continue;
                    for (int h = 0; h < nq; h++) memcpy(dst + h * HD, qg[l][s][start + i][q0 + h], sizeof(float) * HD);
                }
                qrow += n;
                if (!va->compact) /* padded: each pass's keys, the whole prefix */
                    for (int p = 0; p < pass_end[s][e]; p++)
                        for (int g = 0; g < nkv; g++)
                            memcpy(tk->v + ((size_t)b * TMAX + p) * wk + g * HD, kg[l][s][p][kv0 + g], sizeof(float) * HD);
            }
            if (va->compact)
                for (int p = 0; p < seq_T[s]; p++)
                    for (int g = 0; g < nkv; g++) memcpy(tk->v + (size_t)(krow + p) * wk + g * HD, kg[l][s][p][kv0 + g], sizeof(float) * HD);
            krow += seq_T[s];
        }
        char mod[64];
        snprintf(mod, sizeof mod, "model.layers.%d.self_attn.attn", l);
        json_array_append_new(order, json_pack("{s:s, s:s, s:s, s:i, s:s}", "key_q", tq->name, "key_k", tk->name,
                                               "module_name", mod, "layer_num", l, "hookq_mode",
                                               l == 1 ? va->mode : "all_tokens"));
    }
    char p[512], rd[300];
    if (tp == 1) snprintf(rd, sizeof rd, "%s", dir);
    else snprintf(rd, sizeof rd, "%s/tp_rank_%d", dir, rank);
    make_dir(rd, false);
    snprintf(p, sizeof p, "%s/qk.safetensors", rd);
    write_st(p, t, 2 * L, va->dtype);
    for (int i = 0; i < 2 * L; i++) free(t[i].v);
    json_t *cfg = json_pack("{s:i, s:i, s:i, s:i, s:f}", "num_attention_heads", H, "num_key_value_heads", KV, "hidden_size",
                            H * HD, "head_dim", HD, "attention_multiplier", SCALE);
    if (va->no_head_dim) json_object_del(cfg, "head_dim");
    json_t *ql = json_array(), *kl = json_array(), *fl = json_array(), *pe = json_array();
    for (int s = 0; s < NS; s++) {
        json_t *ends = json_array();
        for (int e = 0; e < n_passes[s]; e++) {
            json_array_append_new(ql, json_integer(pass_q[s][e]));
            json_array_append_new(kl, json_integer(pass_end[s][e]));
            json_array_append_new(ends, json_integer(pass_end[s][e] + (va->gap && s == 1)));
        }
        json_array_append_new(fl, json_integer(seq_T[s] + (va->gap && s == 1)));
        json_array_append_new(pe, ends);
    }
    json_t *m = json_pack("{s:o, s:o, s:i, s:s, s:i, s:o}", "config", cfg, "layer_order", order, "batch_size",
                          va->compact ? q_rows : n_pass, "hookq_mode", "all_tokens", "tp_rank", rank, "q_seq_lens", ql);
    if (va->compact) {
        json_object_set_new(m, "compact_all_tokens", json_true());
        json_object_set_new(m, "k_full_lens", fl);
        json_object_set_new(m, "k_prefix_ends", pe);
        json_decref(kl);
    } else {
        json_object_set_new(m, "k_seq_lens", kl);
        json_decref(fl), json_decref(pe);
    }
    if (tp > 1 && !va->no_shard)
        json_object_set_new(m, "tp_shard", json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "tp_rank", rank,
                                                     "tp_size", tp, "q_head_start", rank * nq, "num_local_q_heads", nq,
                                                     "kv_head_start", rank * nkv, "num_local_kv_heads", nkv,
                                                     "num_kv_head_replicas", 1, "num_attention_heads", H,
                                                     "num_key_value_heads", KV, "head_dim", HD));
    snprintf(p, sizeof p, "%s/qk.json", rd);
    assert_int_equal(json_dump_file(m, p, 0), 0);
    json_decref(m);
}

static void write_capture(const char *dir, const variant *va) {
    assert_int_equal(system("mkdir -p test-output"), 0);
    make_dir(dir, true);
    for (int r = va->tp - 1; r >= 0; r--) write_rank(dir, r, va); /* the higher rank's folder first */
}

/* ------------------------------------------------------------ checks */

/* Every row of every layer and head of a and b: equal bit for bit (or, want_equal false, some row differs). */
static bool rows_equal(heed_run *a, heed_run *b) {
    heed_run_info ia, ib;
    heed_run_get_info(a, &ia);
    heed_run_get_info(b, &ib);
    assert_int_equal(ia.n_pos, ib.n_pos);
    assert_int_equal(ia.n_layer, ib.n_layer);
    assert_int_equal(ia.n_head, ib.n_head);
    float ra[TMAX], rb[TMAX];
    for (int l = 0; l < ia.n_layer; l++)
        for (int h = 0; h < ia.n_head; h++)
            for (int p = 0; p < ia.n_pos; p++) {
                heed_attn_sel sel = {&l, 1, &h, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
                assert_int_equal(heed_run_attn_row(a, &sel, p, ra), HEED_OK);
                assert_int_equal(heed_run_attn_row(b, &sel, p, rb), HEED_OK);
                if (memcmp(ra, rb, sizeof(float) * (size_t)(p + 1))) return false;
            }
    return true;
}

static void check_capture(const char *dir, bool json_ids) {
    for (int s = 0; s < NS; s++) {
        write_trace("test-output/vh-ref", s, pass_q[s][0]);
        write_ids("test-output/vh-ids", s, seq_T[s], json_ids);
        heed_run *ref, *got;
        char err[512];
        if (heed_trace_import("test-output/vh-ref", &ref, err, sizeof err)) fail_msg("%s", err);
        heed_trace_params p = heed_trace_default_params();
        p.sequence = s;
        p.token_ids = "test-output/vh-ids";
        if (heed_trace_import_ex(dir, &p, &got, err, sizeof err)) fail_msg("%s", err);
        heed_run_info ri;
        heed_run_get_info(got, &ri);
        assert_int_equal(ri.n_pos, seq_T[s]);
        assert_int_equal(ri.n_prompt, pass_q[s][0]); /* the first pass: the prefill */
        assert_int_equal(ri.n_layer, L);
        assert_int_equal(ri.n_head, H);
        assert_true(rows_equal(ref, got));
        for (int i = 0; i < seq_T[s]; i++) {
            int32_t x, y;
            heed_run_token(ref, i, &x, NULL);
            heed_run_token(got, i, &y, NULL);
            assert_int_equal(x, y);
        }
        heed_run_free(ref);
        heed_run_free(got);
    }
}

/* Compact packing (the current writer), two ranks, every dtype. */
static void test_compact(void **state) {
    (void)state;
    for (int dtype = 0; dtype < 3; dtype++) {
        variant va = good(true);
        va.dtype = dtype;
        write_capture("test-output/vh", &va);
        check_capture("test-output/vh", dtype == 1);
    }
}

/* Padded packing (earlier writers): the passes regrouped into sequences. */
static void test_padded(void **state) {
    (void)state;
    variant va = good(false);
    va.dtype = 1;
    write_capture("test-output/vh", &va);
    check_capture("test-output/vh", false);
    va.tp = 1; /* one rank in the folder itself, no tp_shard */
    write_capture("test-output/vh", &va);
    check_capture("test-output/vh", true);
}

/* The ranks merge by global head: tp_rank_0's heads first whatever the
 * folders' order, and data under the wrong rank gives other rows. */
static void test_merge_order(void **state) {
    (void)state;
    variant va = good(true);
    va.swap_data = true;
    write_capture("test-output/vh", &va);
    write_trace("test-output/vh-ref", 1, 6);
    write_ids("test-output/vh-ids", 1, 6, true);
    heed_run *ref, *got;
    char err[512];
    if (heed_trace_import("test-output/vh-ref", &ref, err, sizeof err)) fail_msg("%s", err);
    heed_trace_params p = heed_trace_default_params();
    p.sequence = 1;
    p.token_ids = "test-output/vh-ids";
    if (heed_trace_import_ex("test-output/vh", &p, &got, err, sizeof err)) fail_msg("%s", err);
    assert_false(rows_equal(ref, got));
    /* head h of the import is global head h: with the data swapped, head 0's rows are the trace's head 2's */
    float ra[TMAX], rb[TMAX];
    int l = 0, h0 = 0, h2 = 2;
    heed_attn_sel sa = {&l, 1, &h0, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION}, sb = {&l, 1, &h2, 1, HEED_AGG_MEAN, HEED_MEASURE_ATTENTION};
    assert_int_equal(heed_run_attn_row(got, &sa, 5, ra), HEED_OK);
    assert_int_equal(heed_run_attn_row(ref, &sb, 5, rb), HEED_OK);
    assert_memory_equal(ra, rb, sizeof(float) * 6);
    heed_run_free(ref);
    heed_run_free(got);
}

static void rm_rank1(void) { assert_int_equal(system("rm -rf test-output/vh/tp_rank_1"), 0); }
static void rank1_pt(void) {
    assert_int_equal(system("rm -f test-output/vh/tp_rank_1/qk.json test-output/vh/tp_rank_1/qk.safetensors && "
                            "echo x > test-output/vh/tp_rank_1/qk.pt"), 0);
}

static void test_refusals(void **state) {
    (void)state;
    static const struct {
        variant va;
        void (*after)(void);
        int sequence, n_ids;
        bool no_ids, flag_head_dim;
        const char *msg;
    } cases[] = {
        {{true, 2, TP, false, false, -1, "all_tokens", false, H, false}, rm_rank1, 0, 7, false, false,
         "the capture has tp_size 2 but only tp_rank 0"},
        {{true, 2, TP, false, false, 1, "all_tokens", false, H, false}, NULL, 0, 7, false, false,
         "tp_rank_1/qk.safetensors: tensor 'model__layers__0__self_attn__attn__q' has shape [12, 16]; qk.json and the "
         "geometry imply [13, 16]"},
        {{false, 0, TP, false, false, 0, "all_tokens", false, H, false}, NULL, 0, 7, false, false,
         "tp_rank_0/qk.safetensors: tensor 'model__layers__0__self_attn__attn__q' has shape [4, 5, 16]"},
        {{true, 2, TP, false, false, -1, "last_token", false, H, false}, NULL, 0, 7, false, false,
         "layer 'model.layers.1.self_attn.attn' was captured in hookq_mode 'last_token'"},
        {{true, 2, 1, false, false, -1, "all_tokens", true, H, false}, NULL, 0, 7, false, false,
         "qk.json: 'config.head_dim' is missing: pass --head-dim N"},
        {{true, 2, 1, false, false, -1, "all_tokens", true, H, false}, NULL, 0, 7, false, true, NULL},
        {{true, 2, TP, false, false, -1, "all_tokens", false, H, false}, NULL, 0, 7, true, false,
         "holds no token ids: pass --token-ids FILE with the sequence's 7 ids"},
        {{true, 2, TP, false, false, -1, "all_tokens", false, H, false}, NULL, 0, 6, false, false,
         "has 6 ids; the captured sequence has 7 tokens (--token-ids)"},
        {{true, 2, TP, false, false, -1, "all_tokens", false, H, false}, NULL, 2, 7, false, false,
         "--sequence 2: the capture holds 2 sequence(s)"},
        {{false, 2, TP, false, false, -1, "all_tokens", false, H, false}, NULL, 5, 7, false, false,
         "--sequence 5: the capture holds 2 sequence(s)"},
        {{true, 2, TP, false, false, -1, "all_tokens", false, H, false}, rank1_pt, 0, 7, false, false,
         "tp_rank_1/qk.pt: a PyTorch pickle"},
        {{true, 2, TP, true, false, -1, "all_tokens", false, H, false}, NULL, 0, 7, false, false,
         "refusing to guess the head order"},
        {{true, 2, 1, false, false, -1, "all_tokens", false, 2, false}, NULL, 0, 7, false, false,
         "(compact, 4 query heads x head_dim 8): fewer heads than the model's"},
        {{true, 2, TP, false, false, -1, "all_tokens", false, H, true}, NULL, 0, 7, false, false,
         "sequence 1's pass 0 holds queries 1..6: queries 0..0 were not captured"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        write_capture("test-output/vh", &cases[i].va);
        if (cases[i].after) cases[i].after();
        write_ids("test-output/vh-ids", 0, cases[i].n_ids, false);
        heed_trace_params p = heed_trace_default_params();
        p.sequence = cases[i].sequence;
        p.token_ids = cases[i].no_ids ? NULL : "test-output/vh-ids";
        if (cases[i].flag_head_dim) p.head_dim = HD;
        heed_run *r = NULL;
        char err[512] = "";
        int rc = heed_trace_import_ex("test-output/vh", &p, &r, err, sizeof err);
        printf("  %s\n", cases[i].msg ? err : "(--head-dim gives what the config lacks)");
        if (!cases[i].msg) {
            if (rc) fail_msg("case %zu: %s", i, err);
            heed_run_free(r);
            continue;
        }
        assert_true(rc != HEED_OK);
        assert_null(r);
        if (!strstr(err, cases[i].msg)) fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].msg);
    }
    /* the plain entry point detects the capture too, and asks for the ids */
    heed_run *r = NULL;
    char err[512] = "";
    variant va = good(true);
    write_capture("test-output/vh", &va);
    assert_int_equal(heed_trace_import("test-output/vh", &r, err, sizeof err), HEED_ERR_INVALID_ARG);
    assert_non_null(strstr(err, "--token-ids"));
    /* the flags are refused for a heed-trace/1 folder */
    write_trace("test-output/vh-ref", 0, 5);
    heed_trace_params p = heed_trace_default_params();
    p.sequence = 1;
    assert_int_equal(heed_trace_import_ex("test-output/vh-ref", &p, &r, err, sizeof err), HEED_ERR_INVALID_ARG);
    assert_non_null(strstr(err, "is not a vLLM-Hook capture"));
    assert_null(r);
}

int main(void) {
    fill();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_compact),
        cmocka_unit_test(test_padded),
        cmocka_unit_test(test_merge_order),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
