/*
 * test_hf - Hugging Face checkpoint folders and the safetensors reader.
 *
 *   - hf-tiny-llama3 (../shared) holds the same weights as tiny-llama3.gguf:
 *     same geometry, and the same logits and attention rows for prompts and
 *     16 greedy steps (HF: BF16, unpermuted q/k with NEOX RoPE, llama3 rope
 *     factors computed from config.json; GGUF: F32/F16, permuted q/k, the
 *     rope_freqs tensor).
 *   - The same folder split into two shards + index.json, a padded
 *     vocabulary, and bad indexes.
 *   - tiny-qwen2.gguf and tiny-qwen3.gguf rewritten here as HF folders
 *     (biases, q/k norms, tied and untied output; their q/k rows need no
 *     permutation): the same logits and attention as the GGUF.
 *   - A table of corrupt safetensors buffers parsed directly, a truncation
 *     sweep, and corrupt files and config.json in a small synthetic folder
 *     built here (a llama with 1 layer and hidden size 8), each rejected with
 *     the right code and a message naming the file and the problem.
 *
 * HEED_WRITE_CORPUS=dir also writes fuzz seeds (tests/fuzz/fuzz_safetensors.c).
 */
#include "testutil.h"

#include <dirent.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <sys/stat.h>

#include "gguf.h"
#include "heed.h"
#include "safetensors.h"

#define HF_DIR "models/hf-tiny-llama3"
#define GGUF_FILE "models/tiny-llama3.gguf"
#define FOX_GOLDEN "golden/tiny-llama3__the-quick-brown-fox-jumps-over-the-lazy-dog-the.json"
#define CORPUS_DIR "tests/fuzz/corpus_safetensors"
#define LOGIT_TOL 1e-4
#define ATT_TOL 1e-5
#define N_GEN 16
#define ERR_SIZE 512

/* ------------------------------------------------------------ temp folders */

static void make_tmpdir(char *dir, size_t n) {
    mkdir("test-output", 0755);
    snprintf(dir, n, "test-output/hf.XXXXXX");
    assert_non_null(mkdtemp(dir));
}

/* Our folders are flat: files and symlinks only. */
static void remove_tmpdir(const char *dir) {
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        char p[PATH_MAX];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        assert_int_equal(unlink(p), 0);
    }
    closedir(d);
    assert_int_equal(rmdir(dir), 0);
}

static void write_file(const char *dir, const char *name, const void *data, size_t n) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

static void write_json(const char *dir, const char *name, const json_t *j) {
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    assert_non_null(s);
    write_file(dir, name, s, strlen(s));
    free(s);
}

/* dir/name -> the absolute path of src_dir/name (tokenizer files are 9 MB). */
static void link_file(const char *dir, const char *src_dir, const char *name) {
    char src[PATH_MAX], abs[PATH_MAX], dst[PATH_MAX];
    snprintf(src, sizeof src, "%s/%s", src_dir, name);
    assert_non_null(realpath(src, abs));
    snprintf(dst, sizeof dst, "%s/%s", dir, name);
    assert_int_equal(symlink(abs, dst), 0);
}

/* ------------------------------------------------------ safetensors writer */

typedef struct wt {
    const char *name;
    const char *dtype;
    int n_dims;
    int64_t shape[4];
    const void *data;
    size_t n_bytes;
} wt;

/* Header edits for the corrupt cases: change one field of one tensor. */
typedef void (*header_edit)(json_t *header, uint64_t data_size);

static size_t dtype_bytes(const char *dtype) { return strcmp(dtype, "F32") == 0 ? 4 : 2; }

/* A file as the reference writer makes it: header padded with spaces to 8
 * bytes, tensors in the given order, each placed at a multiple of 8. */
static void write_st(const char *dir, const char *name, const wt *ts, int n, header_edit edit) {
    json_t *h = json_object();
    uint64_t off = 0;
    json_object_set_new(h, "__metadata__", json_pack("{s:s}", "format", "pt"));
    for (int i = 0; i < n; i++) {
        json_t *shape = json_array();
        for (int d = 0; d < ts[i].n_dims; d++) json_array_append_new(shape, json_integer(ts[i].shape[d]));
        off = (off + 7) & ~(uint64_t)7;
        json_object_set_new(h, ts[i].name, json_pack("{s:s, s:o, s:[I, I]}", "dtype", ts[i].dtype, "shape", shape,
                                                     "data_offsets", (json_int_t)off,
                                                     (json_int_t)(off + ts[i].n_bytes)));
        off += ts[i].n_bytes;
    }
    if (edit) edit(h, off);
    char *text = json_dumps(h, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(h);
    uint64_t len = (strlen(text) + 7) & ~(size_t)7;
    uint8_t *buf = calloc(1, 8 + len + off);
    assert_non_null(buf);
    memcpy(buf, &len, 8);
    memset(buf + 8, ' ', len);
    memcpy(buf + 8, text, strlen(text));
    free(text);
    off = 0;
    for (int i = 0; i < n; i++) {
        off = (off + 7) & ~(uint64_t)7;
        memcpy(buf + 8 + len + off, ts[i].data, ts[i].n_bytes);
        off += ts[i].n_bytes;
    }
    write_file(dir, name, buf, 8 + len + off);
    free(buf);
}

/* The tensors of an opened file, to write elsewhere. */
static wt wt_of(const st_tensor *t) {
    wt w = {.name = t->name, .dtype = st_dtype_name(t->dtype), .n_dims = t->n_dims, .data = t->data,
            .n_bytes = t->n_bytes};
    for (int d = 0; d < t->n_dims && d < 4; d++) w.shape[d] = t->shape[d];
    return w;
}

/* ------------------------------------------------------------ comparisons */

/* The attention of the last heed_decode: att[layer][head][i][k], k < n_kv. */
typedef struct grab {
    int n_layer, n_head, n_query, n_kv, layers_seen;
    float *att;
    size_t cap;
} grab;

static void grab_observe(void *user, const heed_attn_block *b) {
    grab *g = user;
    size_t n_kv = (size_t)b->pos0 + b->n_query;
    size_t need = (size_t)g->n_layer * b->n_head * b->n_query * n_kv;
    if (need > g->cap) {
        g->att = realloc(g->att, need * sizeof(float));
        assert_non_null(g->att);
        g->cap = need;
    }
    g->n_head = b->n_head;
    g->n_query = b->n_query;
    g->n_kv = (int)n_kv;
    for (int h = 0; h < b->n_head; h++)
        for (int i = 0; i < b->n_query; i++) {
            float *dst = g->att + (((size_t)b->layer * b->n_head + h) * b->n_query + i) * n_kv;
            memset(dst, 0, sizeof(float) * n_kv);
            memcpy(dst, b->probs + h * b->head_stride + i * b->row_stride, sizeof(float) * (b->pos0 + i + 1));
        }
    g->layers_seen++;
}

typedef struct side {
    heed_model *m;
    heed_ctx *ctx;
    grab g;
} side;

static void side_open(side *s, heed_model *m) {
    heed_model_info info;
    heed_model_get_info(m, &info);
    heed_ctx_params cp = heed_ctx_default_params();
    cp.n_ctx = 128;
    s->m = m;
    memset(&s->g, 0, sizeof s->g);
    s->g.n_layer = info.n_layer;
    assert_int_equal(heed_ctx_new(m, &cp, &s->ctx), HEED_OK);
    heed_attn_hook hook = {.observe = grab_observe, .user = &s->g};
    heed_ctx_set_attn_hook(s->ctx, &hook);
}

static void side_close(side *s) {
    heed_ctx_free(s->ctx);
    free(s->g.att);
}

static void side_decode(side *s, const int32_t *ids, int n) {
    s->g.layers_seen = 0;
    assert_int_equal(heed_decode(s->ctx, ids, n), HEED_OK);
    assert_int_equal(s->g.layers_seen, s->g.n_layer);
}

static int argmax(const float *x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

typedef struct diffs {
    double logit, att;
} diffs;

/* After the same decode on both sides: every logit and attention probability. */
static void compare_step(side *a, side *b, int n_vocab, diffs *d, const char *what, int step) {
    const float *la = heed_ctx_logits(a->ctx), *lb = heed_ctx_logits(b->ctx);
    for (int i = 0; i < n_vocab; i++) {
        double e = fabs((double)la[i] - lb[i]);
        if (e > d->logit) d->logit = e;
        if (!(e <= LOGIT_TOL)) fail_msg("%s step %d: logit %d is %.7g vs %.7g", what, step, i, la[i], lb[i]);
    }
    int ia = argmax(la, n_vocab), ib = argmax(lb, n_vocab);
    if (ia != ib) fail_msg("%s step %d: argmax %d vs %d", what, step, ia, ib);
    assert_int_equal(a->g.n_kv, b->g.n_kv);
    size_t n = (size_t)a->g.n_layer * a->g.n_head * a->g.n_query * a->g.n_kv;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a->g.att[i] - b->g.att[i]);
        if (e > d->att) d->att = e;
        if (!(e <= ATT_TOL)) fail_msg("%s step %d: attention entry %zu is %.7g vs %.7g", what, step, i, a->g.att[i],
                                      b->g.att[i]);
    }
}

/* The prompt, then N_GEN greedy tokens fed back, on both models. */
static diffs compare_models(heed_model *ma, heed_model *mb, const int32_t *prompt, int n, const char *what) {
    heed_model_info info;
    heed_model_get_info(ma, &info);
    side a, b;
    side_open(&a, ma);
    side_open(&b, mb);
    diffs d = {0, 0};
    side_decode(&a, prompt, n);
    side_decode(&b, prompt, n);
    compare_step(&a, &b, info.n_vocab, &d, what, 0);
    for (int s = 1; s <= N_GEN; s++) {
        int32_t next = argmax(heed_ctx_logits(a.ctx), info.n_vocab);
        side_decode(&a, &next, 1);
        side_decode(&b, &next, 1);
        compare_step(&a, &b, info.n_vocab, &d, what, s);
    }
    side_close(&a);
    side_close(&b);
    return d;
}

static heed_model *load_ok(const char *path) {
    char err[ERR_SIZE];
    heed_model *m = NULL;
    int rc = heed_model_load(path, NULL, &m, err, sizeof err);
    if (rc) fail_msg("load %s: %s (%s)", path, err, heed_strerror(rc));
    return m;
}

/* Loading must fail with rc and a message holding every needle. */
static void expect_fail(const char *path, int rc_want, const char *n1, const char *n2, const char *what) {
    char err[ERR_SIZE];
    heed_model *m = NULL;
    int rc = heed_model_load(path, NULL, &m, err, sizeof err);
    assert_null(m);
    if (rc != rc_want) fail_msg("%s: rc %d (%s), expected %d; message: %s", what, rc, heed_strerror(rc), rc_want, err);
    if ((n1 && !strstr(err, n1)) || (n2 && !strstr(err, n2)))
        fail_msg("%s: message '%s' lacks '%s' / '%s'", what, err, n1 ? n1 : "", n2 ? n2 : "");
    print_message("  %-34s %s\n", what, err);
}

/* ------------------------------------------------------ HF against GGUF */

static bool shared_paths(char *hf, char *gguf, size_t n) {
    return tu_shared(HF_DIR, hf, n) && tu_shared(GGUF_FILE, gguf, n);
}

static void test_geometry(void **state) {
    char hp[512], gp[512];
    if (!shared_paths(hp, gp, sizeof hp)) skip();
    heed_model *h = load_ok(hp), *g = load_ok(gp);
    heed_model_info a, b;
    heed_model_get_info(h, &a);
    heed_model_get_info(g, &b);
    assert_string_equal(a.arch, b.arch);
    assert_string_equal(a.name, "hf-tiny-llama3");
    assert_int_equal(a.n_layer, b.n_layer);
    assert_int_equal(a.n_embd, b.n_embd);
    assert_int_equal(a.n_head, b.n_head);
    assert_int_equal(a.n_head_kv, b.n_head_kv);
    assert_int_equal(a.head_dim, b.head_dim);
    assert_int_equal(a.n_ff, b.n_ff);
    assert_int_equal(a.n_vocab, b.n_vocab);
    assert_int_equal(a.n_ctx_train, b.n_ctx_train);
    assert_true(a.rope_base == b.rope_base);
    assert_true(a.rms_eps == b.rms_eps);
    assert_true(a.tied_output && b.tied_output);
    assert_int_equal(a.file_size, 16766104);
    heed_model_free(h);
    heed_model_free(g);
}

static void test_logits_attention(void **state) {
    char hp[512], gp[512], fp[512];
    if (!shared_paths(hp, gp, sizeof hp)) skip();
    heed_model *h = load_ok(hp), *g = load_ok(gp);
    const int32_t hello[] = {128000, 9906, 1917};
    diffs d = compare_models(g, h, hello, 3, "hello");
    print_message("  [128000, 9906, 1917] + %d greedy: max |logit diff| %.3g, max |attention diff| %.3g\n", N_GEN,
                  d.logit, d.att);
    if (tu_shared(FOX_GOLDEN, fp, sizeof fp)) {
        json_error_t je;
        json_t *gold = json_load_file(fp, 0, &je);
        assert_non_null(gold);
        json_t *jp = json_object_get(gold, "prompt_ids");
        int n = (int)json_array_size(jp);
        assert_int_equal(n, 14);
        int32_t ids[14];
        for (int i = 0; i < n; i++) ids[i] = (int32_t)json_integer_value(json_array_get(jp, (size_t)i));
        d = compare_models(g, h, ids, n, "fox");
        print_message("  fox prompt (14 ids) + %d greedy: max |logit diff| %.3g, max |attention diff| %.3g\n", N_GEN,
                      d.logit, d.att);
        json_decref(gold);
    }
    heed_model_free(h);
    heed_model_free(g);
}

/* When the tokenizer can encode, both folders encode text alike. */
static void test_tokenize_alike(void **state) {
    char hp[512], gp[512];
    if (!shared_paths(hp, gp, sizeof hp)) skip();
    heed_model *h = load_ok(hp), *g = load_ok(gp);
    const char *text = "Hello world, the quick brown fox!";
    int32_t a[64], b[64];
    int na = heed_tokenize(g, text, strlen(text), false, a, 64);
    int nb = heed_tokenize(h, text, strlen(text), false, b, 64);
    if (na < 0 || nb < 0) {
        print_message("SKIP: byte-level BPE encoding is not available (%d, %d)\n", na, nb);
    } else {
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, sizeof(int32_t) * (size_t)na);
    }
    char pa[64], pb[64];
    for (int32_t id = 0; id < 128256; id += 997) {
        assert_int_equal(heed_token_label(g, id, pa, sizeof pa), heed_token_label(h, id, pb, sizeof pb));
        assert_string_equal(pa, pb);
    }
    heed_model_free(h);
    heed_model_free(g);
}

static void test_listing(void **state) {
    char hp[512], gp[512];
    if (!shared_paths(hp, gp, sizeof hp)) skip();
    heed_model *h = load_ok(hp);
    char buf[256];
    int n_meta = heed_model_n_meta(h), seen = 0;
    assert_true(n_meta >= 20);
    for (int i = 0; i < n_meta; i++) {
        const char *k = heed_model_meta_key(h, i);
        assert_non_null(k);
        assert_true(heed_model_meta_value(h, i, buf, sizeof buf) >= 0);
        if (strcmp(k, "config.hidden_size") == 0) seen++, assert_string_equal(buf, "64");
        if (strcmp(k, "config.architectures") == 0) seen++, assert_string_equal(buf, "[\"LlamaForCausalLM\"]");
        if (strcmp(k, "config.model_type") == 0) seen++, assert_string_equal(buf, "llama");
        if (strcmp(k, "config.rope_scaling") == 0) seen++, assert_non_null(strstr(buf, "\"llama3\""));
    }
    assert_int_equal(seen, 4);
    assert_null(heed_model_meta_key(h, n_meta));
    assert_int_equal(heed_model_meta_value(h, -1, buf, sizeof buf), HEED_ERR_INVALID_ARG);
    /* snprintf semantics */
    assert_int_equal(heed_model_meta_value(h, 0, buf, 4), (int)strlen("[\"LlamaForCausalLM\"]"));
    assert_int_equal(heed_model_n_tensors(h), 38);
    uint64_t end = 0, bytes = 0;
    for (int i = 0; i < 38; i++) {
        heed_tensor_info t;
        assert_int_equal(heed_model_tensor(h, i, &t), HEED_OK);
        assert_string_equal(t.type, "BF16");
        assert_true(t.offset >= end); /* data order */
        end = t.offset + t.n_bytes;
        bytes += t.n_bytes;
        if (strcmp(t.name, "model.embed_tokens.weight") == 0) {
            assert_int_equal(t.n_dims, 2);
            assert_int_equal(t.ne[0], 64);
            assert_int_equal(t.ne[1], 128256);
            assert_int_equal(t.offset, 8 + 4112);
        }
    }
    assert_int_equal(end, 16766104);
    assert_int_equal(bytes, 16766104 - 8 - 4112);
    heed_tensor_info t;
    assert_int_equal(heed_model_tensor(h, 38, &t), HEED_ERR_INVALID_ARG);
    heed_model_free(h);
}

/* --------------------------------------------------------- shards, padding */

/* A folder with hf-tiny-llama3's config and tokenizer, and weights of our own. */
static void hf_twin_dir(char *dir, size_t n, const char *hp) {
    make_tmpdir(dir, n);
    link_file(dir, hp, "config.json");
    link_file(dir, hp, "tokenizer.json");
    link_file(dir, hp, "tokenizer_config.json");
}

static st_file *open_twin_weights(const char *hp) {
    char p[PATH_MAX], err[ERR_SIZE];
    int rc;
    snprintf(p, sizeof p, "%s/model.safetensors", hp);
    st_file *f = st_open(p, NULL, &rc, err, sizeof err);
    if (!f) fail_msg("%s", err);
    return f;
}

/* Shard 1: embeddings and layers 0-1; shard 2: the rest. Returns the index. */
static json_t *write_shards(const char *dir, const st_file *f) {
    wt *w = calloc((size_t)f->n_tensors, sizeof *w);
    int n1 = 0, n2 = 0;
    assert_non_null(w);
    json_t *map = json_object();
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < f->n_tensors; i++) {
            const char *name = f->tensors[i].name;
            bool first = strstr(name, "embed") || strncmp(name, "model.layers.0.", 15) == 0 ||
                         strncmp(name, "model.layers.1.", 15) == 0;
            if (first != (pass == 0)) continue;
            w[n1 + n2] = wt_of(&f->tensors[i]);
            *(pass == 0 ? &n1 : &n2) += 1;
            json_object_set_new(map, name, json_string(pass == 0 ? "model-00001-of-00002.safetensors"
                                                                 : "model-00002-of-00002.safetensors"));
        }
    assert_true(n1 > 0 && n2 > 0);
    write_st(dir, "model-00001-of-00002.safetensors", w, n1, NULL);
    write_st(dir, "model-00002-of-00002.safetensors", w + n1, n2, NULL);
    free(w);
    return json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)16416768, "weight_map", map);
}

static void test_sharded(void **state) {
    char hp[512], gp[512], dir[128];
    if (!shared_paths(hp, gp, sizeof hp)) skip();
    st_file *f = open_twin_weights(hp);
    hf_twin_dir(dir, sizeof dir, hp);
    json_t *index = write_shards(dir, f);
    write_json(dir, "model.safetensors.index.json", index);

    heed_model *sh = load_ok(dir), *one = load_ok(hp);
    heed_model_info info;
    heed_model_get_info(sh, &info);
    assert_int_equal(heed_model_n_tensors(sh), 38);
    uint64_t total = 0;
    for (int i = 1; i <= 2; i++) {
        char p[PATH_MAX];
        struct stat st;
        snprintf(p, sizeof p, "%s/model-0000%d-of-00002.safetensors", dir, i);
        assert_int_equal(stat(p, &st), 0);
        total += (uint64_t)st.st_size;
    }
    assert_int_equal(info.file_size, total);
    const int32_t hello[] = {128000, 9906, 1917};
    diffs d = compare_models(one, sh, hello, 3, "sharded");
    assert_true(d.logit == 0 && d.att == 0); /* same bytes, same code */
    heed_model_free(sh);
    heed_model_free(one);

    /* one tensor moved to a shard that is not there */
    json_t *map = json_object_get(index, "weight_map");
    json_object_set_new(map, "model.norm.weight", json_string("model-00003-of-00003.safetensors"));
    write_json(dir, "model.safetensors.index.json", index);
    expect_fail(dir, HEED_ERR_IO, "model-00003-of-00003.safetensors", "cannot open", "index: missing shard");
    /* ... to a shard that does not hold it */
    json_object_set_new(map, "model.norm.weight", json_string("model-00001-of-00002.safetensors"));
    write_json(dir, "model.safetensors.index.json", index);
    expect_fail(dir, HEED_ERR_FORMAT, "model.safetensors.index.json", "does not hold it", "index: wrong shard");
    /* ... out of the folder */
    json_object_set_new(map, "model.norm.weight", json_string("../model-00002-of-00002.safetensors"));
    write_json(dir, "model.safetensors.index.json", index);
    expect_fail(dir, HEED_ERR_FORMAT, "model.safetensors.index.json", "not a file name", "index: path");
    json_object_del(index, "weight_map");
    write_json(dir, "model.safetensors.index.json", index);
    expect_fail(dir, HEED_ERR_FORMAT, "model.safetensors.index.json", "'weight_map'", "index: no weight_map");
    write_file(dir, "model.safetensors.index.json", "{\"weight_map\": {", 16);
    expect_fail(dir, HEED_ERR_FORMAT, "model.safetensors.index.json", "invalid JSON", "index: truncated");

    json_decref(index);
    remove_tmpdir(dir);
    st_close(f);
}

/* Checkpoints pad the embedding past the tokenizer: the extra ids decode,
 * have no text, and show as [PAD]. */
static void test_padded_vocab(void **state) {
    char hp[512], gp[512], dir[128];
    if (!shared_paths(hp, gp, sizeof hp)) skip();
    enum { PAD = 8, N_TOK = 128256, E = 64 };
    st_file *f = open_twin_weights(hp);
    make_tmpdir(dir, sizeof dir);
    link_file(dir, hp, "tokenizer.json");
    link_file(dir, hp, "tokenizer_config.json");
    json_error_t je;
    char cp[PATH_MAX];
    snprintf(cp, sizeof cp, "%s/config.json", hp);
    json_t *cfg = json_load_file(cp, 0, &je);
    assert_non_null(cfg);
    json_object_set_new(cfg, "vocab_size", json_integer(N_TOK + PAD));
    write_json(dir, "config.json", cfg);
    json_decref(cfg);

    wt *w = calloc((size_t)f->n_tensors, sizeof *w);
    uint16_t *embd = calloc((size_t)(N_TOK + PAD) * E, 2);
    assert_true(w && embd);
    for (int i = 0; i < f->n_tensors; i++) {
        w[i] = wt_of(&f->tensors[i]);
        if (strcmp(w[i].name, "model.embed_tokens.weight") != 0) continue;
        memcpy(embd, w[i].data, w[i].n_bytes);
        for (size_t j = (size_t)N_TOK * E; j < (size_t)(N_TOK + PAD) * E; j++) embd[j] = 0x3f80; /* 1.0 */
        w[i].shape[0] = N_TOK + PAD;
        w[i].data = embd;
        w[i].n_bytes = (size_t)(N_TOK + PAD) * E * 2;
    }
    write_st(dir, "model.safetensors", w, f->n_tensors, NULL);

    heed_model *m = load_ok(dir);
    heed_model_info info;
    heed_model_get_info(m, &info);
    assert_int_equal(info.n_vocab, N_TOK + PAD);
    char buf[32];
    int32_t id = N_TOK + 3;
    assert_int_equal(heed_token_label(m, id, buf, sizeof buf), 5);
    assert_string_equal(buf, "[PAD]");
    assert_int_equal(heed_token_bytes(m, id, buf, sizeof buf), 0);
    assert_string_equal(heed_token_piece(m, id), "");
    assert_false(heed_token_is_eog(m, id));
    assert_null(heed_token_piece(m, N_TOK + PAD));
    heed_ctx *c;
    assert_int_equal(heed_ctx_new(m, NULL, &c), HEED_OK);
    int32_t ids[] = {128000, id};
    assert_int_equal(heed_decode(c, ids, 2), HEED_OK);
    assert_true(isfinite(heed_ctx_logits(c)[N_TOK + PAD - 1]));
    heed_ctx_free(c);
    heed_model_free(m);
    free(embd);
    free(w);
    remove_tmpdir(dir);
    st_close(f);
}

/* GGUF name -> HF name, the test's own statement of the mapping. */
static void hf_name_of(const char *g, char *out, size_t n) {
    static const char *const pairs[][2] = {
        {"token_embd.weight", "model.embed_tokens.weight"},
        {"output_norm.weight", "model.norm.weight"},
        {"output.weight", "lm_head.weight"},
        {"attn_norm.weight", "input_layernorm.weight"},
        {"attn_q.weight", "self_attn.q_proj.weight"},
        {"attn_k.weight", "self_attn.k_proj.weight"},
        {"attn_v.weight", "self_attn.v_proj.weight"},
        {"attn_output.weight", "self_attn.o_proj.weight"},
        {"attn_q.bias", "self_attn.q_proj.bias"},
        {"attn_k.bias", "self_attn.k_proj.bias"},
        {"attn_v.bias", "self_attn.v_proj.bias"},
        {"attn_q_norm.weight", "self_attn.q_norm.weight"},
        {"attn_k_norm.weight", "self_attn.k_norm.weight"},
        {"ffn_norm.weight", "post_attention_layernorm.weight"},
        {"ffn_gate.weight", "mlp.gate_proj.weight"},
        {"ffn_up.weight", "mlp.up_proj.weight"},
        {"ffn_down.weight", "mlp.down_proj.weight"},
    };
    int layer = -1, used = 0;
    if (sscanf(g, "blk.%d.%n", &layer, &used) != 1) used = 0;
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        if (strcmp(g + used, pairs[i][0]) != 0) continue;
        if (layer >= 0) snprintf(out, n, "model.layers.%d.%s", layer, pairs[i][1]);
        else snprintf(out, n, "%s", pairs[i][1]);
        return;
    }
    fail_msg("no HF name for %s", g);
}

static json_t *config_of(const heed_model_info *i, const char *arch) {
    return json_pack("{s:[s], s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b}", "architectures", arch,
                     "hidden_size", i->n_embd, "num_hidden_layers", i->n_layer, "num_attention_heads", i->n_head,
                     "num_key_value_heads", i->n_head_kv, "head_dim", i->head_dim, "intermediate_size", i->n_ff,
                     "vocab_size", i->n_vocab, "max_position_embeddings", i->n_ctx_train, "rms_norm_eps",
                     (double)i->rms_eps, "rope_theta", (double)i->rope_base, "tie_word_embeddings", i->tied_output);
}

/* The GGUF's tensors under HF names and shapes (ne reversed), its config,
 * and the Llama 3 tokenizer: fewer tokens than Qwen's 151669 rows, so the
 * ids beyond it are padding, which decoding does not mind. */
static void gguf_to_hf(const char *gp, const char *hp, const char *arch, const char *dir) {
    char err[ERR_SIZE];
    int rc;
    gguf_file *f = gguf_open(gp, &rc, err, sizeof err);
    if (!f) fail_msg("%s", err);
    wt *w = calloc((size_t)f->n_tensors, sizeof *w);
    char (*names)[96] = calloc((size_t)f->n_tensors, sizeof *names);
    assert_true(w && names);
    for (int i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        hf_name_of(t->name, names[i], sizeof names[i]);
        w[i] = (wt){.name = names[i], .dtype = gguf_type_name(t->type), .n_dims = t->n_dims, .data = t->data,
                    .n_bytes = t->n_bytes};
        for (int d = 0; d < t->n_dims; d++) w[i].shape[d] = t->ne[t->n_dims - 1 - d];
    }
    write_st(dir, "model.safetensors", w, f->n_tensors, NULL);
    heed_model *m = load_ok(gp);
    heed_model_info info;
    heed_model_get_info(m, &info);
    json_t *cfg = config_of(&info, arch);
    write_json(dir, "config.json", cfg);
    json_decref(cfg);
    heed_model_free(m);
    link_file(dir, hp, "tokenizer.json");
    link_file(dir, hp, "tokenizer_config.json");
    free(names);
    free(w);
    gguf_close(f);
}

static void qwen_case(const char *gguf_rel, const char *arch) {
    char hp[512], gp[512], dir[128];
    if (!tu_shared(HF_DIR, hp, sizeof hp) || !tu_shared(gguf_rel, gp, sizeof gp)) skip();
    make_tmpdir(dir, sizeof dir);
    gguf_to_hf(gp, hp, arch, dir);
    heed_model *g = load_ok(gp), *h = load_ok(dir);
    heed_model_info a, b;
    heed_model_get_info(g, &a);
    heed_model_get_info(h, &b);
    assert_string_equal(a.arch, b.arch);
    assert_int_equal(a.tied_output, b.tied_output);
    const int32_t ids[] = {9906, 1917, 11, 279, 4062, 14198};
    diffs d = compare_models(g, h, ids, 6, arch);
    print_message("  %s: max |logit diff| %.3g, max |attention diff| %.3g\n", arch, d.logit, d.att);
    heed_model_free(g);
    heed_model_free(h);
    remove_tmpdir(dir);
}

static void test_qwen2_folder(void **state) { qwen_case("models/tiny-qwen2.gguf", "Qwen2ForCausalLM"); }
static void test_qwen3_folder(void **state) { qwen_case("models/tiny-qwen3.gguf", "Qwen3ForCausalLM"); }

/* ------------------------------------------------- the safetensors parser */

/* u64 length | header padded to 8 | n_data bytes (1..n) */
static uint8_t *st_buffer(const char *header, size_t n_data, size_t *size) {
    size_t len = (strlen(header) + 7) & ~(size_t)7;
    *size = 8 + len + n_data;
    uint8_t *b = malloc(*size);
    assert_non_null(b);
    uint64_t l = len;
    memcpy(b, &l, 8);
    memset(b + 8, ' ', len);
    memcpy(b + 8, header, strlen(header));
    for (size_t i = 0; i < n_data; i++) b[8 + len + i] = (uint8_t)(i + 1);
    return b;
}

static const struct parse_case {
    const char *what, *header;
    size_t n_data;
    int rc;
    const char *needle;
} parse_cases[] = {
    {"empty header", "", 0, HEED_ERR_FORMAT, "not valid JSON"},
    {"header not JSON", "{\"a\": {\"dtype\": ", 0, HEED_ERR_FORMAT, "not valid JSON"},
    {"header an array", "[1, 2]", 0, HEED_ERR_FORMAT, "not a JSON object"},
    {"duplicate names", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                        "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, HEED_ERR_FORMAT,
     "duplicate"},
    {"metadata not object", "{\"__metadata__\": 3}", 0, HEED_ERR_FORMAT, "'__metadata__' is not an object"},
    {"entry not object", "{\"w\": [1]}", 0, HEED_ERR_FORMAT, "tensor 'w': entry is not an object"},
    {"dtype missing", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, HEED_ERR_FORMAT, "tensor 'w': 'dtype'"},
    {"dtype I8", "{\"w\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, HEED_ERR_UNSUPPORTED,
     "dtype I8 of tensor 'w' is not supported"},
    {"dtype unknown", "{\"w\":{\"dtype\":\"Q9\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4, HEED_ERR_UNSUPPORTED,
     "dtype Q9 of tensor 'w'"},
    {"shape missing", "{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, HEED_ERR_FORMAT, "'shape' is missing"},
    {"shape negative", "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, HEED_ERR_FORMAT,
     "non-negative integers"},
    {"shape float", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, HEED_ERR_FORMAT,
     "non-negative integers"},
    {"shape 9 dims", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
     HEED_ERR_FORMAT, "9 dims"},
    {"count overflow", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,4]}}", 4,
     HEED_ERR_FORMAT, "overflows"},
    {"bytes overflow", "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,4]}}", 4,
     HEED_ERR_FORMAT, "overflows"},
    {"offsets one int", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}", 4, HEED_ERR_FORMAT,
     "'data_offsets' is not two"},
    {"offsets negative", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, HEED_ERR_FORMAT,
     "'data_offsets' is not two"},
    {"offsets strings", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",\"4\"]}}", 4,
     HEED_ERR_FORMAT, "'data_offsets' is not two"},
    {"begin after end", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, HEED_ERR_FORMAT,
     "begin after end"},
    {"end past data", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, HEED_ERR_FORMAT,
     "past the end of the data (4 bytes)"},
    {"offsets lie", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8, HEED_ERR_FORMAT,
     "header lies about offsets"},
    {"huge end", "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,9223372036854775807]}}", 8,
     HEED_ERR_FORMAT, "past the end"},
    {"overlap", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, HEED_ERR_FORMAT,
     "tensors 'a' and 'b' overlap"},
    {"overlap inside", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                       "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                       "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 16, HEED_ERR_FORMAT,
     "overlap"},
    {"misaligned", "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[2,6]}}", 8, HEED_ERR_UNSUPPORTED,
     "not aligned"},
    {"control bytes in name", "{\"a\\u0001b\":{\"dtype\":\"I8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 4,
     HEED_ERR_UNSUPPORTED, "tensor 'a?b'"},
};

static void test_parse_table(void **state) {
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        const struct parse_case *c = &parse_cases[i];
        size_t size;
        uint8_t *b = st_buffer(c->header, c->n_data, &size);
        char err[ERR_SIZE];
        int rc = 12345;
        st_file *f = st_open_buffer(b, size, "case.safetensors", &rc, err, sizeof err);
        if (f || rc != c->rc || strncmp(err, "case.safetensors: ", 18) != 0 || !strstr(err, c->needle))
            fail_msg("%s: rc %d, message '%s' (want %d, '%s')", c->what, rc, err, c->rc, c->needle);
        free(b);
    }
}

/* Length-field problems: the header bytes themselves are fine. */
static void test_parse_length(void **state) {
    char err[ERR_SIZE];
    int rc;
    uint8_t b[64] = {0};
    uint64_t len = 1ull << 40;
    assert_null(st_open_buffer(b, 7, "x.safetensors", &rc, err, sizeof err));
    assert_int_equal(rc, HEED_ERR_FORMAT);
    assert_non_null(strstr(err, "too short"));
    memcpy(b, &len, 8);
    assert_null(st_open_buffer(b, sizeof b, "x.safetensors", &rc, err, sizeof err));
    assert_int_equal(rc, HEED_ERR_FORMAT);
    assert_non_null(strstr(err, "exceeds the limit"));
    len = 100;
    memcpy(b, &len, 8);
    memcpy(b + 8, "{}", 2);
    assert_null(st_open_buffer(b, sizeof b, "x.safetensors", &rc, err, sizeof err));
    assert_int_equal(rc, HEED_ERR_FORMAT);
    assert_non_null(strstr(err, "runs past the end of the file (64 bytes)"));
    /* trailing garbage inside the header length is not JSON padding */
    len = 8;
    memcpy(b, &len, 8);
    memcpy(b + 8, "{}  x   ", 8);
    assert_null(st_open_buffer(b, 16, "x.safetensors", &rc, err, sizeof err));
    assert_non_null(strstr(err, "not valid JSON"));
    /* an error buffer of 1 byte still gets a terminator; NULL is fine */
    assert_null(st_open_buffer(b, 16, "x.safetensors", &rc, err, 1));
    assert_int_equal(err[0], '\0');
    assert_null(st_open_buffer(b, 16, "x.safetensors", NULL, NULL, 0));
}

static const char *valid_header =
    "{\"__metadata__\":{\"format\":\"pt\"},"
    "\"b.weight\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[16,28]},"
    "\"a.weight\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
    "\"scalar\":{\"dtype\":\"F16\",\"shape\":[],\"data_offsets\":[28,30]},"
    "\"empty\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[32,32]},"
    "\"last\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[32,36]}}";

static void test_parse_valid(void **state) {
    size_t size;
    uint8_t *b = st_buffer(valid_header, 36, &size);
    char err[ERR_SIZE];
    int rc;
    st_file *f = st_open_buffer(b, size, "ok.safetensors", &rc, err, sizeof err);
    if (!f) fail_msg("%s", err);
    assert_int_equal(rc, HEED_OK);
    assert_int_equal(f->n_tensors, 5);
    /* data order; the empty tensor sorts before 'last' at the same offset */
    const char *order[] = {"a.weight", "b.weight", "scalar", "empty", "last"};
    for (int i = 0; i < 5; i++) assert_string_equal(f->tensors[i].name, order[i]);
    const st_tensor *t = st_find(f, "b.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_BF16);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->shape[0], 2);
    assert_int_equal(t->shape[1], 3);
    assert_int_equal(t->n_elems, 6);
    assert_int_equal(t->offset, f->data_offset + 16);
    assert_ptr_equal(t->data, b + t->offset);
    assert_int_equal(st_find(f, "scalar")->n_elems, 1);
    assert_int_equal(st_find(f, "empty")->n_bytes, 0);
    assert_null(st_find(f, "missing"));
    assert_null(st_find(f, "a.weigh"));
    st_close(f);
    free(b);
    /* no tensors at all */
    b = st_buffer("{\"__metadata__\":{}}", 0, &size);
    assert_non_null(f = st_open_buffer(b, size, "none", &rc, err, sizeof err));
    assert_int_equal(f->n_tensors, 0);
    assert_null(st_find(f, "a"));
    st_close(f);
    free(b);
    assert_string_equal(st_dtype_name(ST_F16), "F16");
    assert_int_equal(st_dtype_size(ST_F32), 4);
}

/* Every strict prefix of a valid file is rejected cleanly. */
static void test_truncation_sweep(void **state) {
    size_t size;
    uint8_t *b = st_buffer(valid_header, 36, &size);
    for (size_t n = 0; n < size; n++) {
        uint8_t *p = malloc(n ? n : 1);
        memcpy(p, b, n);
        char err[ERR_SIZE];
        int rc = HEED_OK;
        st_file *f = st_open_buffer(p, n, "cut.safetensors", &rc, err, sizeof err);
        if (f || rc != HEED_ERR_FORMAT) fail_msg("prefix of %zu bytes: rc %d (%s)", n, rc, f ? "accepted" : err);
        free(p);
    }
    free(b);
}

static void test_open_file(void **state) {
    char err[ERR_SIZE], hp[512], p[PATH_MAX];
    int rc;
    assert_null(st_open("/nonexistent/model.safetensors", NULL, &rc, err, sizeof err));
    assert_int_equal(rc, HEED_ERR_IO);
    assert_non_null(strstr(err, "/nonexistent/model.safetensors: cannot open"));
    assert_null(st_open(".", NULL, &rc, err, sizeof err));
    assert_int_equal(rc, HEED_ERR_IO);
    if (!tu_shared(HF_DIR, hp, sizeof hp)) skip();
    snprintf(p, sizeof p, "%s/model.safetensors", hp);
    st_file *f = st_open(p, "model.safetensors", &rc, err, sizeof err);
    assert_non_null(f);
    assert_string_equal(f->name, "model.safetensors");
    assert_int_equal(f->n_tensors, 38);
    assert_int_equal(f->file_size, 16766104);
    const st_tensor *t = st_find(f, "model.layers.3.self_attn.k_proj.weight");
    assert_non_null(t);
    assert_int_equal(t->dtype, ST_BF16);
    assert_int_equal(t->shape[0], 32);
    assert_int_equal(t->shape[1], 64);
    st_close(f);
}

/* ------------------------------------------- a small synthetic folder */

/*
 * LlamaForCausalLM, hidden 8, 1 layer, 2 heads / 1 KV head of 4, n_ff 16,
 * the Llama 3 vocabulary (so the real tokenizer fits), tied embeddings.
 * Embeddings BF16, q_proj F16, the rest F32: every dtype is bound.
 */
enum { S_E = 8, S_FF = 16, S_HD = 4, S_VOCAB = 128256, S_MAX_T = 16 };

typedef struct synth {
    wt t[S_MAX_T];
    void *buf[S_MAX_T];
    int n;
} synth;

static void synth_add(synth *s, const char *name, const char *dtype, int64_t d0, int64_t d1) {
    assert_true(s->n < S_MAX_T);
    wt *w = &s->t[s->n];
    size_t n = (size_t)d0 * (size_t)(d1 ? d1 : 1), es = dtype_bytes(dtype);
    uint8_t *b = malloc(n * es);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++) {
        float v = (float)((int)((i * 7919 + (size_t)s->n * 31) % 17) - 8) * 0.05f;
        uint32_t u;
        memcpy(&u, &v, 4);
        if (es == 4) memcpy(b + i * 4, &v, 4);
        else if (strcmp(dtype, "BF16") == 0) { uint16_t h = (uint16_t)(u >> 16); memcpy(b + i * 2, &h, 2); }
        else { uint16_t h = v == 0 ? 0 : 0x3c00; memcpy(b + i * 2, &h, 2); } /* F16: 0 or 1.0 */
    }
    *w = (wt){.name = name, .dtype = dtype, .n_dims = d1 ? 2 : 1, .shape = {d0, d1}, .data = b, .n_bytes = n * es};
    s->buf[s->n++] = b;
}

static void synth_init_vocab(synth *s, int64_t q_rows, int64_t vocab) {
    memset(s, 0, sizeof *s);
    synth_add(s, "model.embed_tokens.weight", "BF16", vocab, S_E);
    synth_add(s, "model.layers.0.input_layernorm.weight", "F32", S_E, 0);
    synth_add(s, "model.layers.0.self_attn.q_proj.weight", "F16", q_rows, S_E);
    synth_add(s, "model.layers.0.self_attn.k_proj.weight", "F32", S_HD, S_E);
    synth_add(s, "model.layers.0.self_attn.v_proj.weight", "F32", S_HD, S_E);
    synth_add(s, "model.layers.0.self_attn.o_proj.weight", "F32", S_E, 2 * S_HD);
    synth_add(s, "model.layers.0.post_attention_layernorm.weight", "F32", S_E, 0);
    synth_add(s, "model.layers.0.mlp.gate_proj.weight", "F32", S_FF, S_E);
    synth_add(s, "model.layers.0.mlp.up_proj.weight", "F32", S_FF, S_E);
    synth_add(s, "model.layers.0.mlp.down_proj.weight", "F32", S_E, S_FF);
    synth_add(s, "model.norm.weight", "F32", S_E, 0);
}

static void synth_init(synth *s, int64_t q_rows) { synth_init_vocab(s, q_rows, S_VOCAB); }

static void synth_free(synth *s) {
    for (int i = 0; i < s->n; i++) free(s->buf[i]);
}

static json_t *synth_config(void) {
    return json_pack("{s:[s], s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, s:n}", "architectures",
                     "LlamaForCausalLM", "hidden_size", S_E, "num_hidden_layers", 1, "num_attention_heads", 2,
                     "num_key_value_heads", 1, "head_dim", S_HD, "intermediate_size", S_FF, "vocab_size", S_VOCAB,
                     "max_position_embeddings", 64, "rms_norm_eps", 1e-5, "rope_theta", 10000.0,
                     "tie_word_embeddings", 1, "rope_scaling");
}

/* ---- header edits: one field of one tensor */

static json_t *entry(json_t *h, const char *name) {
    json_t *e = json_object_get(h, name);
    assert_non_null(e);
    return e;
}

static void edit_dtype_i64(json_t *h, uint64_t n) {
    json_object_set_new(entry(h, "model.norm.weight"), "dtype", json_string("I64"));
}

static void edit_shape_negative(json_t *h, uint64_t n) {
    json_object_set_new(entry(h, "model.norm.weight"), "shape", json_pack("[i]", -8));
}

static void edit_past_end(json_t *h, uint64_t n) {
    json_t *off = json_object_get(entry(h, "model.norm.weight"), "data_offsets");
    json_array_set_new(off, 1, json_integer((json_int_t)n + 64));
}

static void edit_lie(json_t *h, uint64_t n) {
    json_t *off = json_object_get(entry(h, "model.norm.weight"), "data_offsets");
    json_array_set_new(off, 1, json_integer(json_integer_value(json_array_get(off, 1)) - 4));
}

static void edit_drop_norm(json_t *h, uint64_t n) { json_object_del(h, "model.norm.weight"); }

/* Writes the synthetic weights with an edit, or raw bytes instead. */
typedef struct weight_case {
    const char *what;
    header_edit edit;
    const char *raw; /* when set: the first 8 bytes are the length, then this */
    uint64_t raw_len;
    int64_t q_rows;
    int rc;
    const char *needle;
} weight_case;

static const weight_case weight_cases[] = {
    {"truncated header", NULL, "{\"model.norm.weight\": {\"dt", 4096, 0, HEED_ERR_FORMAT, "runs past the end"},
    {"header length huge", NULL, "{}", 1ull << 50, 0, HEED_ERR_FORMAT, "exceeds the limit"},
    {"header not JSON", NULL, "not json", 8, 0, HEED_ERR_FORMAT, "not valid JSON"},
    {"dtype I64", edit_dtype_i64, NULL, 0, 0, HEED_ERR_UNSUPPORTED,
     "dtype I64 of tensor 'model.norm.weight' is not supported"},
    {"negative shape", edit_shape_negative, NULL, 0, 0, HEED_ERR_FORMAT, "non-negative integers"},
    {"offsets past end", edit_past_end, NULL, 0, 0, HEED_ERR_FORMAT, "past the end of the data"},
    {"offsets lie", edit_lie, NULL, 0, 0, HEED_ERR_FORMAT, "header lies about offsets"},
    {"missing tensor", edit_drop_norm, NULL, 0, 0, HEED_ERR_FORMAT, "missing tensor 'model.norm.weight'"},
    {"wrong q_proj shape", NULL, NULL, 0, 2 * S_HD + 2, HEED_ERR_FORMAT,
     "tensor 'model.layers.0.self_attn.q_proj.weight' has shape [10, 8], expected [8, 8]"},
};

static void test_weight_table(void **state) {
    char dir[128];
    make_tmpdir(dir, sizeof dir);
    json_t *cfg = synth_config();
    write_json(dir, "config.json", cfg);
    json_decref(cfg);
    for (size_t i = 0; i < sizeof weight_cases / sizeof weight_cases[0]; i++) {
        const weight_case *c = &weight_cases[i];
        if (c->raw) {
            uint8_t b[256] = {0};
            memcpy(b, &c->raw_len, 8);
            memcpy(b + 8, c->raw, strlen(c->raw));
            write_file(dir, "model.safetensors", b, 8 + strlen(c->raw));
        } else {
            synth s;
            synth_init(&s, c->q_rows ? c->q_rows : 2 * S_HD);
            write_st(dir, "model.safetensors", s.t, s.n, c->edit);
            synth_free(&s);
        }
        expect_fail(dir, c->rc, "model.safetensors", c->needle, c->what);
    }
    remove_tmpdir(dir);
}

/* ---- config edits */

static void cfg_del_hidden(json_t *c) { json_object_del(c, "hidden_size"); }
static void cfg_hidden_str(json_t *c) { json_object_set_new(c, "hidden_size", json_string("8")); }
static void cfg_unknown(json_t *c) { json_object_set_new(c, "architectures", json_pack("[s]", "FalconForCausalLM")); }
static void cfg_no_arch(json_t *c) { json_object_del(c, "architectures"); }
static void cfg_heads_3(json_t *c) {
    json_object_del(c, "head_dim");
    json_object_set_new(c, "num_attention_heads", json_integer(3));
}
static void cfg_kv_3(json_t *c) { json_object_set_new(c, "num_key_value_heads", json_integer(3)); }
static void cfg_yarn(json_t *c) {
    json_object_set_new(c, "rope_scaling", json_pack("{s:s, s:f}", "rope_type", "yarn", "factor", 4.0));
}
static void cfg_llama3_nofactor(json_t *c) {
    json_object_set_new(c, "rope_scaling", json_pack("{s:s, s:f, s:f, s:i}", "type", "llama3", "low_freq_factor",
                                                     1.0, "high_freq_factor", 4.0, "original_max_position_embeddings",
                                                     8192));
}
static void cfg_untied(json_t *c) { json_object_set_new(c, "tie_word_embeddings", json_false()); }
static void cfg_layers_0(json_t *c) { json_object_set_new(c, "num_hidden_layers", json_integer(0)); }
static void cfg_gelu(json_t *c) { json_object_set_new(c, "hidden_act", json_string("gelu")); }
static void cfg_vocab_small(json_t *c) { json_object_set_new(c, "vocab_size", json_integer(1000)); }

static const struct config_case {
    const char *what;
    void (*edit)(json_t *);
    int rc;
    const char *file, *needle;
} config_cases[] = {
    {"missing hidden_size", cfg_del_hidden, HEED_ERR_FORMAT, "config.json", "'hidden_size' is missing"},
    {"hidden_size a string", cfg_hidden_str, HEED_ERR_FORMAT, "config.json", "'hidden_size' is not an integer"},
    {"unknown architecture", cfg_unknown, HEED_ERR_UNSUPPORTED, "config.json", "'FalconForCausalLM' is not supported"},
    {"no architectures", cfg_no_arch, HEED_ERR_FORMAT, "config.json", "'architectures' is missing"},
    {"heads do not divide hidden", cfg_heads_3, HEED_ERR_FORMAT, "config.json",
     "'hidden_size' 8 is not a multiple of 'num_attention_heads' 3"},
    {"kv heads do not divide heads", cfg_kv_3, HEED_ERR_FORMAT, "config.json", "num_key_value_heads"},
    {"rope_scaling yarn", cfg_yarn, HEED_ERR_UNSUPPORTED, "config.json", "rope_scaling type 'yarn' is not supported"},
    {"llama3 without factor", cfg_llama3_nofactor, HEED_ERR_FORMAT, "config.json", "'rope_scaling.factor' is missing"},
    {"zero layers", cfg_layers_0, HEED_ERR_FORMAT, "config.json", "'num_hidden_layers' = 0 is outside"},
    {"gelu", cfg_gelu, HEED_ERR_UNSUPPORTED, "config.json", "hidden_act 'gelu'"},
    {"untied without lm_head", cfg_untied, HEED_ERR_FORMAT, "model.safetensors", "missing tensor 'lm_head.weight'"},
    {"vocab_size below the rows", cfg_vocab_small, HEED_ERR_FORMAT, "model.safetensors",
     "'model.embed_tokens.weight' has shape [128256, 8], expected [1000, 8]"},
};

static void test_config_table(void **state) {
    char dir[128];
    make_tmpdir(dir, sizeof dir);
    synth s;
    synth_init(&s, 2 * S_HD);
    write_st(dir, "model.safetensors", s.t, s.n, NULL);
    synth_free(&s);
    for (size_t i = 0; i < sizeof config_cases / sizeof config_cases[0]; i++) {
        const struct config_case *c = &config_cases[i];
        json_t *cfg = synth_config();
        c->edit(cfg);
        write_json(dir, "config.json", cfg);
        json_decref(cfg);
        expect_fail(dir, c->rc, c->file, c->needle, c->what);
    }
    write_file(dir, "config.json", "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden", 46);
    expect_fail(dir, HEED_ERR_FORMAT, "config.json", "invalid JSON", "truncated config.json");
    write_file(dir, "config.json", "[1]", 3);
    expect_fail(dir, HEED_ERR_FORMAT, "config.json", "not a JSON object", "config.json an array");
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    expect_fail(dir, HEED_ERR_IO, "config.json", "cannot open", "no config.json");
    json_t *cfg = synth_config();
    write_json(dir, "config.json", cfg);
    json_decref(cfg);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    expect_fail(dir, HEED_ERR_IO, "model.safetensors", "no model.safetensors", "no weights");
    remove_tmpdir(dir);
}

/* The synthetic folder itself loads once the tokenizer is there, and runs. */
static void test_synthetic_loads(void **state) {
    char hp[512], dir[128];
    if (!tu_shared(HF_DIR, hp, sizeof hp)) skip();
    make_tmpdir(dir, sizeof dir);
    link_file(dir, hp, "tokenizer.json");
    link_file(dir, hp, "tokenizer_config.json");
    synth s;
    synth_init(&s, 2 * S_HD);
    write_st(dir, "model.safetensors", s.t, s.n, NULL);
    synth_free(&s);
    json_t *cfg = synth_config();
    write_json(dir, "config.json", cfg);
    heed_model *m = load_ok(dir);
    heed_model_info info;
    heed_model_get_info(m, &info);
    assert_int_equal(info.n_ctx_train, 64);
    assert_true(info.tied_output);
    heed_ctx *c;
    assert_int_equal(heed_ctx_new(m, NULL, &c), HEED_OK);
    int32_t ids[] = {128000, 9906, 1917};
    assert_int_equal(heed_decode(c, ids, 3), HEED_OK);
    for (int i = 0; i < info.n_vocab; i += 101) assert_true(isfinite(heed_ctx_logits(c)[i]));
    heed_ctx_free(c);
    heed_model_free(m);
    /* Mistral's sliding window applies to every layer, the context stays; Qwen2 requires its biases */
    json_object_set_new(cfg, "architectures", json_pack("[s]", "MistralForCausalLM"));
    json_object_set_new(cfg, "sliding_window", json_integer(32));
    write_json(dir, "config.json", cfg);
    m = load_ok(dir);
    heed_model_get_info(m, &info);
    assert_int_equal(info.n_ctx_train, 64);
    for (int l = 0; l < info.n_layer; l++) assert_int_equal(info.layer_window[l], 32);
    heed_model_free(m);
    json_object_set_new(cfg, "architectures", json_pack("[s]", "Qwen2ForCausalLM"));
    write_json(dir, "config.json", cfg);
    expect_fail(dir, HEED_ERR_FORMAT, "model.safetensors", "missing tensor 'model.layers.0.self_attn.q_proj.bias'",
                "qwen2 without biases");
    /* a tokenizer with more tokens than the embedding has rows */
    json_object_set_new(cfg, "architectures", json_pack("[s]", "LlamaForCausalLM"));
    json_object_set_new(cfg, "vocab_size", json_integer(1000));
    write_json(dir, "config.json", cfg);
    synth_init_vocab(&s, 2 * S_HD, 1000);
    write_st(dir, "model.safetensors", s.t, s.n, NULL);
    synth_free(&s);
    expect_fail(dir, HEED_ERR_FORMAT, "tokenizer.json", "more than the model's vocab_size 1000",
                "tokenizer larger than vocab");
    json_decref(cfg);
    remove_tmpdir(dir);
}

/* A FIFO (or a device, or a directory) where a file of the folder belongs
 * is refused at once, naming the file: open() of a FIFO would wait for a
 * writer forever. alarm() turns a regression into a failure, not a hang. */
static void on_alarm(int sig) {
    static const char msg[] = "FAIL: test_hf: loading a folder with a FIFO in it hung\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

static void swap_fifo(const char *dir, const char *name) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    unlink(p);
    assert_int_equal(mkfifo(p, 0600), 0);
}

static void swap_link(const char *dir, const char *name, const char *target) {
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    unlink(p);
    assert_int_equal(symlink(target, p), 0);
}

static void test_not_regular_files(void **state) {
    char dir[128], p[PATH_MAX];
    make_tmpdir(dir, sizeof dir);
    signal(SIGALRM, on_alarm);
    alarm(60);
    synth s;
    synth_init(&s, 2 * S_HD);
    write_st(dir, "model.safetensors", s.t, s.n, NULL);
    synth_free(&s);
    swap_fifo(dir, "config.json");
    expect_fail(dir, HEED_ERR_IO, "config.json: ", "not a regular file (a FIFO)", "config.json a FIFO");
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p); /* writing into the FIFO would wait for a reader */
    json_t *cfg = synth_config();
    write_json(dir, "config.json", cfg);
    json_decref(cfg);

    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    assert_int_equal(rename(p, "test-output/hf-weights.tmp"), 0);
    swap_fifo(dir, "model.safetensors");
    expect_fail(dir, HEED_ERR_IO, "model.safetensors: ", "not a regular file (a FIFO)", "weights a FIFO");
    if (access("/dev/zero", R_OK) == 0) {
        swap_link(dir, "model.safetensors", "/dev/zero");
        expect_fail(dir, HEED_ERR_IO, "model.safetensors: ", "not a regular file (a character device)",
                    "weights -> /dev/zero");
    }
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    swap_fifo(dir, "model.safetensors.index.json");
    expect_fail(dir, HEED_ERR_IO, "model.safetensors.index.json: ", "not a regular file (a FIFO)", "index a FIFO");
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    assert_int_equal(rename("test-output/hf-weights.tmp", p), 0);

    /* the tokenizer files come after the weights */
    swap_fifo(dir, "tokenizer.json");
    expect_fail(dir, HEED_ERR_IO, "tokenizer.json: ", "not a regular file (a FIFO)", "tokenizer.json a FIFO");
    snprintf(p, sizeof p, "%s/tokenizer.json", dir);
    unlink(p);
    assert_int_equal(mkdir(p, 0755), 0);
    expect_fail(dir, HEED_ERR_IO, "tokenizer.json: ", "is a directory", "tokenizer.json a directory");
    assert_int_equal(rmdir(p), 0);
    char hp[512];
    if (tu_shared(HF_DIR, hp, sizeof hp)) {
        link_file(dir, hp, "tokenizer.json");
        swap_fifo(dir, "tokenizer_config.json");
        expect_fail(dir, HEED_ERR_IO, "tokenizer_config.json: ", "not a regular file (a FIFO)",
                    "tokenizer_config.json a FIFO");
        /* and with every file regular, the folder loads */
        snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
        unlink(p);
        heed_model_free(load_ok(dir));
    }
    alarm(0);
    signal(SIGALRM, SIG_DFL);
    remove_tmpdir(dir);
}

/* ----------------------------------------------------------- fuzz corpus */

static void write_corpus(const char *dir) {
    mkdir(dir, 0755);
    size_t size;
    uint8_t *b = st_buffer(valid_header, 36, &size);
    write_file(dir, "valid.safetensors", b, size);
    free(b);
    for (size_t i = 0; i < sizeof parse_cases / sizeof parse_cases[0]; i++) {
        char name[64];
        snprintf(name, sizeof name, "case%02zu.safetensors", i);
        b = st_buffer(parse_cases[i].header, parse_cases[i].n_data, &size);
        write_file(dir, name, b, size);
        free(b);
    }
}

/* Replays the fuzz corpus when it is there: no file may crash the reader. */
static void test_corpus_replay(void **state) {
    const char *out = getenv("HEED_WRITE_CORPUS");
    if (out) write_corpus(out);
    DIR *d = opendir(CORPUS_DIR);
    if (!d) {
        print_message("SKIP: %s is absent\n", CORPUS_DIR);
        skip();
    }
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        char path[PATH_MAX], err[ERR_SIZE];
        int rc;
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", CORPUS_DIR, e->d_name);
        st_close(st_open(path, NULL, &rc, err, sizeof err));
        n++;
    }
    closedir(d);
    assert_true(n > 0);
}

/* ------------------------------------------- Gemma 3 and GPT-2 folders */

/* A minimal byte-level BPE tokenizer.json (the 256 byte symbols, no merges):
 * enough for a folder whose test feeds ids. */
static void write_byte_tokenizer(const char *dir) {
    json_t *vocab = json_object();
    int n = 0;
    for (int b = 0; b < 256; b++) { /* GPT-2's bytes_to_unicode */
        bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
        unsigned cp = keep ? (unsigned)b : 256u + (unsigned)n++;
        char u[4];
        int len = cp < 0x80 ? 1 : 2;
        if (len == 1) u[0] = (char)cp;
        else u[0] = (char)(0xC0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 0x3F));
        json_object_setn_new(vocab, u, (size_t)len, json_integer(b));
    }
    json_t *tj = json_pack("{s:{s:s, s:o, s:[]}, s:{s:s, s:b, s:b, s:b}, s:[]}", "model", "type", "BPE", "vocab",
                           vocab, "merges", "pre_tokenizer", "type", "ByteLevel", "add_prefix_space", 0,
                           "trim_offsets", 1, "use_regex", 1, "added_tokens");
    assert_non_null(tj);
    write_json(dir, "tokenizer.json", tj);
    json_decref(tj);
}

/* The HF folder of a shared GGUF file (gemma3 or gpt2) as transformers
 * would hold it: HF names, Gemma's norms as (weight - 1), GPT-2's Conv1D
 * weights as [in, out]. F16 and F32 tensors are copied as they are. */
static void hf_twin(const char *gguf_path, bool gpt2, const char *dir) {
    int rc;
    char err[256];
    gguf_file *f = gguf_open(gguf_path, &rc, err, sizeof err);
    assert_non_null(f);
    wt *w = calloc((size_t)f->n_tensors, sizeof *w);
    void **bufs = calloc((size_t)f->n_tensors, sizeof *bufs);
    char **names = calloc((size_t)f->n_tensors, sizeof *names);
    assert_true(w && bufs && names);
    int n = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        char hf[160];
        long layer = -1;
        const char *rest = t->name;
        if (!strncmp(t->name, "blk.", 4)) {
            char *end;
            layer = strtol(t->name + 4, &end, 10);
            rest = end + 1;
        }
        bool conv = false, norm = false;
        if (gpt2) {
            static const char *const map[][2] = {
                {"token_embd.weight", "wte.weight"}, {"position_embd.weight", "wpe.weight"},
                {"output_norm.weight", "ln_f.weight"}, {"output_norm.bias", "ln_f.bias"},
                {"attn_norm.weight", "ln_1.weight"}, {"attn_norm.bias", "ln_1.bias"},
                {"attn_qkv.weight", "attn.c_attn.weight"}, {"attn_qkv.bias", "attn.c_attn.bias"},
                {"attn_output.weight", "attn.c_proj.weight"}, {"attn_output.bias", "attn.c_proj.bias"},
                {"ffn_norm.weight", "ln_2.weight"}, {"ffn_norm.bias", "ln_2.bias"},
                {"ffn_up.weight", "mlp.c_fc.weight"}, {"ffn_up.bias", "mlp.c_fc.bias"},
                {"ffn_down.weight", "mlp.c_proj.weight"}, {"ffn_down.bias", "mlp.c_proj.bias"}};
            size_t k = 0;
            while (k < sizeof map / sizeof *map && strcmp(map[k][0], rest)) k++;
            assert_true(k < sizeof map / sizeof *map);
            /* half the layers with the "transformer." prefix, as some checkpoints name them */
            const char *pre = layer % 2 ? "transformer." : "";
            if (layer >= 0) snprintf(hf, sizeof hf, "%sh.%ld.%s", pre, layer, map[k][1]);
            else snprintf(hf, sizeof hf, "%s", map[k][1]);
            conv = t->n_dims == 2 && layer >= 0;
        } else {
            static const char *const map[][2] = {
                {"token_embd.weight", "model.embed_tokens.weight"}, {"output_norm.weight", "model.norm.weight"},
                {"attn_norm.weight", "input_layernorm.weight"}, {"attn_q.weight", "self_attn.q_proj.weight"},
                {"attn_k.weight", "self_attn.k_proj.weight"}, {"attn_v.weight", "self_attn.v_proj.weight"},
                {"attn_output.weight", "self_attn.o_proj.weight"}, {"attn_q_norm.weight", "self_attn.q_norm.weight"},
                {"attn_k_norm.weight", "self_attn.k_norm.weight"},
                {"post_attention_norm.weight", "post_attention_layernorm.weight"},
                {"ffn_norm.weight", "pre_feedforward_layernorm.weight"}, {"ffn_gate.weight", "mlp.gate_proj.weight"},
                {"ffn_up.weight", "mlp.up_proj.weight"}, {"ffn_down.weight", "mlp.down_proj.weight"},
                {"post_ffw_norm.weight", "post_feedforward_layernorm.weight"}};
            size_t k = 0;
            while (k < sizeof map / sizeof *map && strcmp(map[k][0], rest)) k++;
            assert_true(k < sizeof map / sizeof *map);
            if (layer >= 0) snprintf(hf, sizeof hf, "model.layers.%ld.%s", layer, map[k][1]);
            else snprintf(hf, sizeof hf, "%s", map[k][1]);
            norm = strstr(rest, "norm") != NULL;
        }
        assert_true(t->type == 0 /* F32 */ || t->type == 1 /* F16 */);
        size_t el = t->type == 0 ? 4 : 2, cnt = (size_t)t->ne[0] * (size_t)(t->n_dims == 2 ? t->ne[1] : 1);
        unsigned char *b = malloc(el * cnt);
        assert_non_null(b);
        if (conv) { /* [out][in] -> [in][out] */
            size_t in = (size_t)t->ne[0], out = (size_t)t->ne[1];
            for (size_t o = 0; o < out; o++)
                for (size_t i2 = 0; i2 < in; i2++)
                    memcpy(b + (i2 * out + o) * el, (const unsigned char *)t->data + (o * in + i2) * el, el);
        } else {
            memcpy(b, t->data, el * cnt);
        }
        if (norm) { /* Gemma stores weight - 1 (its RMSNorm multiplies by 1 + weight) */
            assert_int_equal(t->type, 0);
            for (size_t k = 0; k < cnt; k++) ((float *)b)[k] -= 1.0f;
        }
        names[n] = strdup(hf);
        bufs[n] = b;
        w[n].name = names[n];
        w[n].dtype = t->type == 0 ? "F32" : "F16";
        w[n].n_dims = t->n_dims;
        /* safetensors shapes are outermost first */
        if (t->n_dims == 1) w[n].shape[0] = t->ne[0];
        else if (conv) w[n].shape[0] = t->ne[0], w[n].shape[1] = t->ne[1];
        else w[n].shape[0] = t->ne[1], w[n].shape[1] = t->ne[0];
        w[n].data = b;
        w[n].n_bytes = el * cnt;
        n++;
    }
    write_st(dir, "model.safetensors", w, n, NULL);
    for (int i = 0; i < n; i++) free(bufs[i]), free(names[i]);
    free(bufs), free(names), free(w);
    json_t *cfg;
    if (gpt2) {
        cfg = json_pack("{s:[s], s:i, s:i, s:i, s:i, s:i, s:f, s:s}", "architectures", "GPT2LMHeadModel", "n_embd", 32,
                        "n_layer", 4, "n_head", 4, "n_positions", 1024, "vocab_size", 50257, "layer_norm_epsilon",
                        1e-5, "activation_function", "gelu_new");
    } else {
        cfg = json_pack("{s:[s], s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:f, s:i, s:[s,s,s,s,s,s], s:i, s:i, s:i, "
                        "s:s, s:b}",
                        "architectures", "Gemma3ForCausalLM", "hidden_size", 16, "num_hidden_layers", 6,
                        "intermediate_size", 160, "num_attention_heads", 4, "num_key_value_heads", 2, "head_dim", 16,
                        "rms_norm_eps", 1e-6, "rope_theta", 1e6, "rope_local_base_freq", 10000.0, "sliding_window", 8,
                        "layer_types", "sliding_attention", "sliding_attention", "sliding_attention",
                        "sliding_attention", "sliding_attention", "full_attention", "query_pre_attn_scalar", 16,
                        "vocab_size", 262144, "max_position_embeddings", 8192, "hidden_activation",
                        "gelu_pytorch_tanh", "tie_word_embeddings", 1);
    }
    assert_non_null(cfg);
    write_json(dir, "config.json", cfg);
    json_decref(cfg);
    write_byte_tokenizer(dir);
    gguf_close(f);
}

/* Logits and every attention row of the folder equal the GGUF file's, on
 * the golden prompt and 8 more tokens. */
typedef struct rows_grab {
    float *buf;
    size_t n, cap;
} rows_grab;

static void grab_rows(void *user, const heed_attn_block *b) {
    rows_grab *g = user;
    for (int h = 0; h < b->n_head; h++)
        for (int i = 0; i < b->n_query; i++) {
            size_t len = (size_t)b->pos0 + i + 1;
            if (g->n + len > g->cap) {
                g->cap = (g->n + len) * 2;
                g->buf = realloc(g->buf, sizeof(float) * g->cap);
                assert_non_null(g->buf);
            }
            memcpy(g->buf + g->n, b->probs + h * b->head_stride + i * b->row_stride, sizeof(float) * len);
            g->n += len;
        }
}

static void run_ids(heed_model *m, const int32_t *ids, int n, rows_grab *g, float *logits, int n_vocab) {
    heed_ctx *c;
    heed_ctx_params cp = heed_ctx_default_params();
    cp.n_ctx = 64;
    assert_int_equal(heed_ctx_new(m, &cp, &c), HEED_OK);
    heed_attn_hook hook = {.observe = grab_rows, .user = g};
    heed_ctx_set_attn_hook(c, &hook);
    assert_int_equal(heed_decode(c, ids, n - 4), HEED_OK);
    for (int i = n - 4; i < n; i++) assert_int_equal(heed_decode(c, ids + i, 1), HEED_OK);
    memcpy(logits, heed_ctx_logits(c), sizeof(float) * (size_t)n_vocab);
    heed_ctx_free(c);
}

static void check_twin(const char *model, bool gpt2) {
    char gp[512];
    if (!tu_shared(model, gp, sizeof gp)) skip();
    char dir[128];
    make_tmpdir(dir, sizeof dir);
    hf_twin(gp, gpt2, dir);
    heed_model *h = load_ok(dir), *g = load_ok(gp);
    heed_model_info a, b;
    heed_model_get_info(h, &a);
    heed_model_get_info(g, &b);
    assert_string_equal(a.arch, b.arch);
    assert_int_equal(a.n_vocab, b.n_vocab);
    assert_true(a.attn_scale == b.attn_scale && a.attn_softcap == b.attn_softcap);
    for (int l = 0; l < a.n_layer; l++) assert_int_equal(a.layer_window[l], b.layer_window[l]);
    int32_t ids[20];
    for (int i = 0; i < 20; i++) ids[i] = 100 + 977 * i % 40000;
    rows_grab ra = {0}, rb = {0};
    float *la = malloc(sizeof(float) * (size_t)a.n_vocab), *lb = malloc(sizeof(float) * (size_t)b.n_vocab);
    run_ids(h, ids, 20, &ra, la, a.n_vocab);
    run_ids(g, ids, 20, &rb, lb, b.n_vocab);
    assert_int_equal(ra.n, rb.n);
    double worst = 0;
    for (size_t i = 0; i < ra.n; i++) worst = fmax(worst, fabs(ra.buf[i] - rb.buf[i]));
    double lw = 0;
    for (int i = 0; i < a.n_vocab; i++) lw = fmax(lw, fabs(la[i] - lb[i]));
    print_message("  %s as an HF folder: max |attention diff| %.2e over %zu entries, max |logit diff| %.2e\n", model,
                  worst, ra.n, lw);
    assert_true(worst == 0 && lw == 0); /* the same numbers in, the same code: bit for bit */
    free(ra.buf), free(rb.buf), free(la), free(lb);
    heed_model_free(h);
    heed_model_free(g);
    remove_tmpdir(dir);
}

static void test_gemma3_folder(void **state) { check_twin("models/tiny-gemma3.gguf", false); }
static void test_gpt2_folder(void **state) { check_twin("models/tiny-gpt2.gguf", true); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemma3_folder),    cmocka_unit_test(test_gpt2_folder),
        cmocka_unit_test(test_parse_table),      cmocka_unit_test(test_parse_length),
        cmocka_unit_test(test_parse_valid),      cmocka_unit_test(test_truncation_sweep),
        cmocka_unit_test(test_open_file),        cmocka_unit_test(test_weight_table),
        cmocka_unit_test(test_config_table),     cmocka_unit_test(test_synthetic_loads),
        cmocka_unit_test(test_not_regular_files),
        cmocka_unit_test(test_geometry),         cmocka_unit_test(test_logits_attention),
        cmocka_unit_test(test_tokenize_alike),   cmocka_unit_test(test_listing),
        cmocka_unit_test(test_sharded),          cmocka_unit_test(test_padded_vocab),
        cmocka_unit_test(test_qwen2_folder),     cmocka_unit_test(test_qwen3_folder),
        cmocka_unit_test(test_corpus_replay),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
