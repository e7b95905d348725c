/*
 * test_cli_tok.c - `heed tokenize` driven as a black box on every vocabulary
 * of ../shared/vocab (llama.cpp's test vectors, .inp/.out) and on model
 * files of architectures heed does not run: the command loads the
 * vocabulary only. The text goes to the binary as one argv entry (no
 * shell), the ids come back from --json. A vocabulary heed cannot encode
 * must say so and print no ids. The binary tested is the one built beside
 * this test (build/heed or build-asan/heed).
 */
#include <jansson.h>
#include <limits.h>
#include <sys/wait.h>

#include "testutil.h"
#include "tokutil.h"

static char heed_bin[PATH_MAX + 16];

typedef struct cli_out {
    int rc;        /* exit status */
    char *out;     /* stdout, NUL-terminated */
    char err[1024]; /* the start of stderr */
} cli_out;

/* Reads fd to its end into a malloc'd, NUL-terminated buffer. */
static char *read_all(int fd) {
    size_t n = 0, cap = 4096;
    char *b = malloc(cap);
    assert_non_null(b);
    for (;;) {
        if (n + 1 >= cap) {
            cap *= 2;
            b = realloc(b, cap);
            assert_non_null(b);
        }
        ssize_t k = read(fd, b + n, cap - n - 1);
        if (k <= 0) break;
        n += (size_t)k;
    }
    b[n] = '\0';
    return b;
}

/* Runs heed with argv (NULL-terminated, without argv[0]). stderr goes to a
 * file, so neither pipe can fill up while the other is read. */
static cli_out run_heed(const char *const *args) {
    const char *argv[16] = {"heed"};
    int n = 1;
    for (; args[n - 1]; n++) {
        assert_true(n < 15);
        argv[n] = args[n - 1];
    }
    argv[n] = NULL;
    char err_path[64];
    snprintf(err_path, sizeof err_path, "test-output/cli_tok.%d.err", (int)getpid());
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        if (!freopen(err_path, "w", stderr)) _exit(126);
        execv(heed_bin, (char *const *)argv);
        _exit(127);
    }
    close(p[1]);
    cli_out r = {0};
    r.out = read_all(p[0]);
    close(p[0]);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    r.rc = WEXITSTATUS(st);
    FILE *f = fopen(err_path, "r");
    if (f) {
        size_t k = fread(r.err, 1, sizeof r.err - 1, f);
        r.err[k] = '\0';
        fclose(f);
    }
    remove(err_path);
    return r;
}

/* `heed tokenize -m PATH --json --no-bos TEXT`'s ids into ids; returns the
 * count, or -1 (with the reason printed) when the command failed. */
static int cli_ids(const char *path, const char *text, int32_t *ids, int n_max) {
    const char *args[] = {"tokenize", "-m", path, "--json", "--no-bos", text, NULL};
    cli_out r = run_heed(args);
    int n = -1;
    if (r.rc == 0) {
        json_error_t je;
        json_t *j = json_loads(r.out, 0, &je);
        json_t *a = json_object_get(j, "ids");
        assert_true(json_is_array(a));
        n = (int)json_array_size(a);
        for (int i = 0; i < n && i < n_max; i++) ids[i] = (int32_t)json_integer_value(json_array_get(a, i));
        json_decref(j);
    } else {
        printf("heed tokenize: exit %d: %s", r.rc, r.err);
    }
    free(r.out);
    return n;
}

static vocab_case g_cases[64];

/* Every 4th vector of the file and the last (the long mixed string): the
 * internal API checks all 46 (test_tok, test_tok_bpe); this checks that the
 * command gives the same ids, a dozen process starts per vocabulary. */
static void check_cli_vectors(const char *name) {
    char rel[128], path[400]; /* read_cases appends ".inp" in 512 bytes */
    snprintf(rel, sizeof rel, "vocab/ggml-vocab-%s.gguf", name);
    if (!tu_shared(rel, path, sizeof path)) skip();
    char *inp, *out;
    int n = read_cases(path, g_cases, 64, &inp, &out);
    assert_int_equal(n, 46);
    static int32_t ids[MAX_IDS];
    int tried = 0, pass = 0;
    for (int i = 0; i < n; i++) {
        const vocab_case *c = &g_cases[i];
        if (i % 4 && i != n - 1) continue;
        if (memchr(c->text, '\0', c->len)) continue; /* an argv entry cannot hold NUL */
        char *text = strndup(c->text, c->len);
        assert_non_null(text);
        int k = cli_ids(path, text, ids, MAX_IDS);
        tried++;
        if (k == c->n_ids && memcmp(ids, c->ids, (size_t)k * sizeof *ids) == 0) pass++;
        else printf("%s case %d: heed tokenize gives %d ids, expected %d\n", name, i, k, c->n_ids);
        free(text);
    }
    printf("%s: %d/%d vectors through heed tokenize\n", name, pass, tried);
    assert_true(tried >= 10);
    assert_int_equal(pass, tried);
    free(inp);
    free(out);
}

#define VOCAB_TEST(fn, name) \
    static void fn(void **state) { \
        (void)state; \
        check_cli_vectors(name); \
    }
VOCAB_TEST(test_cli_llama_spm, "llama-spm")
VOCAB_TEST(test_cli_phi3, "phi-3")
VOCAB_TEST(test_cli_llama_bpe, "llama-bpe")
VOCAB_TEST(test_cli_qwen2, "qwen2")
VOCAB_TEST(test_cli_smollm2, "smollm2")
VOCAB_TEST(test_cli_gpt2, "gpt-2")
VOCAB_TEST(test_cli_falcon, "falcon")
VOCAB_TEST(test_cli_mpt, "mpt")
VOCAB_TEST(test_cli_starcoder, "starcoder")
VOCAB_TEST(test_cli_refact, "refact")
VOCAB_TEST(test_cli_deepseek_coder, "deepseek-coder")
VOCAB_TEST(test_cli_deepseek_llm, "deepseek-llm")

/* Model files of any architecture tokenize (BOS as the file says) and
 * match the golden prompt ids; info works on a vocabulary-only file;
 * generating from one is refused with the reason. */
static void check_golden_prompt(const char *model, const char *text, const int32_t *want, int n_want) {
    char rel[128], path[512];
    snprintf(rel, sizeof rel, "models/%s", model);
    if (!tu_shared(rel, path, sizeof path)) skip();
    const char *args[] = {"tokenize", "-m", path, "--json", text, NULL};
    cli_out r = run_heed(args);
    if (r.rc) fail_msg("heed tokenize -m %s: exit %d: %s", model, r.rc, r.err);
    json_error_t je;
    json_t *j = json_loads(r.out, 0, &je);
    json_t *a = json_object_get(j, "ids");
    assert_int_equal((int)json_array_size(a), n_want);
    for (int i = 0; i < n_want; i++) assert_int_equal(json_integer_value(json_array_get(a, i)), want[i]);
    json_decref(j);
    free(r.out);
}

static const char FOX[] = "The quick brown fox jumps over the lazy dog. The quick brown";

static void test_cli_model_files(void **state) {
    (void)state;
    check_golden_prompt("tiny-gemma2.gguf", "Hello world", (const int32_t[]){2, 9259, 1902}, 3);
    check_golden_prompt("tiny-gemma3.gguf", FOX,
                        (const int32_t[]){2, 818, 3823, 8864, 37423, 38167, 1024, 506, 31770, 4799, 236761, 669,
                                          3823, 8864}, 14);
    check_golden_prompt("tiny-phi3.gguf", FOX,
                        (const int32_t[]){1, 450, 4996, 17354, 1701, 29916, 432, 17204, 975, 278, 17366, 11203,
                                          29889, 450, 4996, 17354}, 16);
}

static void test_cli_vocab_only_file(void **state) {
    (void)state;
    char path[512];
    if (!tu_shared("vocab/ggml-vocab-mpt.gguf", path, sizeof path)) skip();
    const char *info[] = {"info", "-m", path, NULL};
    cli_out r = run_heed(info);
    assert_int_equal(r.rc, 0);
    assert_non_null(strstr(r.out, "arch:        mpt"));
    assert_non_null(strstr(r.out, "weights:     none: a vocabulary-only file (it can tokenize but not generate)"));
    assert_non_null(strstr(r.out, "tokenizer.ggml.pre"));
    free(r.out);
    const char *gen[] = {"generate", "-m", path, "-p", "hi", "-n", "1", NULL};
    r = run_heed(gen);
    assert_int_equal(r.rc, 1);
    assert_non_null(strstr(r.err, "heed: ggml-vocab-mpt.gguf has no weights (vocabulary only): it can tokenize but "
                                  "not generate"));
    assert_string_equal(r.out, "");
    free(r.out);
}

/* A byte-level BPE vocabulary whose pre-tokenizer heed lacks: an error that
 * names it, never ids made with the wrong regex. */
static void test_cli_unknown_pre(void **state) {
    (void)state;
    static const char *const pieces[] = {"a", "b", "ab"};
    static const int32_t types[] = {1, 1, 1};
    static const char *const merges[] = {"a b"};
    gbuf b = {0};
    gb_kv_str(&b, "general.architecture", "nonesuch");
    gb_kv_str(&b, "tokenizer.ggml.model", "gpt2");
    gb_kv_str(&b, "tokenizer.ggml.pre", "no-such-pre");
    gb_kv_strs(&b, "tokenizer.ggml.tokens", pieces, 3);
    gb_kv_i32s(&b, "tokenizer.ggml.token_type", types, 3);
    gb_kv_strs(&b, "tokenizer.ggml.merges", merges, 1);
    size_t size;
    unsigned char *file = gb_file(&b, &size);
    free(b.p);
    assert_int_equal(system("mkdir -p test-output"), 0);
    const char *path = "test-output/cli_tok_unknown_pre.gguf";
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(file, 1, size, f), size);
    fclose(f);
    free(file);
    const char *args[] = {"tokenize", "-m", path, "ab", NULL};
    cli_out r = run_heed(args);
    assert_int_equal(r.rc, 1);
    assert_string_equal(r.out, "");
    if (!strstr(r.err, "heed: cannot tokenize: test-output/cli_tok_unknown_pre.gguf: pre-tokenizer 'no-such-pre' "
                       "(tokenizer.ggml.pre) is not supported"))
        fail_msg("stderr: %s", r.err);
    free(r.out);
    remove(path);
}

int main(void) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return 1;
    self[n] = 0;
    char *slash = strrchr(self, '/'); /* .../build/tests/test_cli_tok */
    *slash = 0;
    slash = strrchr(self, '/');
    *slash = 0;
    snprintf(heed_bin, sizeof heed_bin, "%s/heed", self);
    if (system("mkdir -p test-output")) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cli_llama_spm),
        cmocka_unit_test(test_cli_phi3),
        cmocka_unit_test(test_cli_llama_bpe),
        cmocka_unit_test(test_cli_qwen2),
        cmocka_unit_test(test_cli_smollm2),
        cmocka_unit_test(test_cli_gpt2),
        cmocka_unit_test(test_cli_falcon),
        cmocka_unit_test(test_cli_mpt),
        cmocka_unit_test(test_cli_starcoder),
        cmocka_unit_test(test_cli_refact),
        cmocka_unit_test(test_cli_deepseek_coder),
        cmocka_unit_test(test_cli_deepseek_llm),
        cmocka_unit_test(test_cli_model_files),
        cmocka_unit_test(test_cli_vocab_only_file),
        cmocka_unit_test(test_cli_unknown_pre),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
