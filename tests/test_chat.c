/*
 * test_chat.c - chat template detection, rendering of each family, and
 * tokenization of rendered chats with special tokens parsed.
 */
#include "chat.h"
#include "heed.h"
#include "testutil.h"

static const char *LLAMA3_TMPL =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}";
static const char *LLAMA31_TMPL = "{{- \"Cutting Knowledge Date: December 2023\\n\" }} <|start_header_id|> <|eot_id|>";
static const char *CHATML_TMPL =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
static const char *QWEN25_TMPL =
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + "
    "'<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a "
    "helpful assistant.<|im_end|>\\n' }}{%- endif %}";
static const char *LLAMA2_TMPL = "{% if messages[0]['role'] == 'system' %}<<SYS>>\\n{% endif %}[INST] [/INST]";
static const char *MISTRAL_TMPL = "{{ bos_token }}{% for message in messages %}[INST] {{ message['content'] }} [/INST]";

static void render(const char *tmpl, const heed_chat_msg *m, int n, bool gen, const char *want) {
    chat_style st;
    chat_detect(tmpl, &st);
    char buf[2048];
    int len = chat_render(&st, m, n, gen, buf, sizeof buf);
    assert_int_equal(len, (int)strlen(want));
    assert_string_equal(buf, want);
}

static void test_detect(void **state) {
    chat_style st;
    chat_detect(LLAMA3_TMPL, &st);
    assert_int_equal(st.kind, CHAT_LLAMA3);
    assert_false(st.llama31_preamble);
    chat_detect(LLAMA31_TMPL, &st);
    assert_int_equal(st.kind, CHAT_LLAMA3);
    assert_true(st.llama31_preamble);
    chat_detect(CHATML_TMPL, &st);
    assert_int_equal(st.kind, CHAT_CHATML);
    assert_string_equal(st.default_system, "");
    chat_detect(QWEN25_TMPL, &st);
    assert_int_equal(st.kind, CHAT_CHATML);
    assert_string_equal(st.default_system, "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.");
    chat_detect(LLAMA2_TMPL, &st);
    assert_int_equal(st.kind, CHAT_LLAMA2);
    chat_detect(MISTRAL_TMPL, &st);
    assert_int_equal(st.kind, CHAT_MISTRAL);
    chat_detect("{{ messages }}", &st);
    assert_int_equal(st.kind, CHAT_NONE);
    chat_detect(NULL, &st);
    assert_int_equal(st.kind, CHAT_NONE);
    assert_null(chat_kind_name(CHAT_NONE));
    assert_string_equal(chat_kind_name(CHAT_CHATML), "chatml");
}

static void test_render_llama3(void **state) {
    heed_chat_msg m[] = {{"system", "Be brief."}, {"user", "  Hello \n"}, {"assistant", "Hi."}, {"user", "Why?"}};
    render(LLAMA3_TMPL, m + 1, 1, true,
           "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\n");
    render(LLAMA3_TMPL, m, 4, false,
           "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\nHi.<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\nWhy?<|eot_id|>");
    render(LLAMA31_TMPL, m + 1, 1, true,
           "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
           "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n<|eot_id|>"
           "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
           "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

static void test_render_chatml(void **state) {
    heed_chat_msg m[] = {{"system", "Be brief."}, {"user", "Hello"}};
    render(CHATML_TMPL, m + 1, 1, true, "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
    render(CHATML_TMPL, m, 2, false, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n");
    render(QWEN25_TMPL, m + 1, 1, true,
           "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
           "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n");
    render(QWEN25_TMPL, m, 2, false, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n");
}

static void test_render_inst(void **state) {
    heed_chat_msg m[] = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "Why?"}};
    render(LLAMA2_TMPL, m, 4, true,
           "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello. </s><s>[INST] Why? [/INST]");
    render(MISTRAL_TMPL, m, 4, true, "<s>[INST] Be brief.\n\nHi [/INST]Hello.</s>[INST] Why? [/INST]");
    render(MISTRAL_TMPL, m + 1, 1, true, "<s>[INST] Hi [/INST]");
}

static void test_render_errors(void **state) {
    chat_style st;
    chat_detect(CHATML_TMPL, &st);
    heed_chat_msg bad[] = {{"wizard", "x"}};
    assert_int_equal(chat_render(&st, bad, 1, true, NULL, 0), HEED_ERR_INVALID_ARG);
    heed_chat_msg null_content[] = {{"user", NULL}};
    assert_int_equal(chat_render(&st, null_content, 1, true, NULL, 0), HEED_ERR_INVALID_ARG);
    chat_detect(MISTRAL_TMPL, &st);
    heed_chat_msg late_sys[] = {{"user", "a"}, {"system", "b"}};
    assert_int_equal(chat_render(&st, late_sys, 2, true, NULL, 0), HEED_ERR_INVALID_ARG);
    chat_detect(NULL, &st);
    assert_int_equal(chat_render(&st, bad, 0, true, NULL, 0), HEED_ERR_INVALID_ARG);

    /* snprintf semantics: a short buffer gets a NUL-terminated prefix, the full length is returned */
    chat_detect(CHATML_TMPL, &st);
    heed_chat_msg m[] = {{"user", "Hello"}};
    char small[8];
    int len = chat_render(&st, m, 1, true, small, sizeof small);
    assert_int_equal(len, (int)strlen("<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"));
    assert_string_equal(small, "<|im_st");
}

static void test_bundled_has_no_template(void **state) {
    heed_model *m;
    assert_int_equal(heed_model_load(NULL, NULL, &m, NULL, 0), HEED_OK);
    assert_null(heed_chat_template(m));
    heed_chat_msg msg[] = {{"user", "Hi"}};
    assert_int_equal(heed_chat_format(m, msg, 1, true, NULL, 0), HEED_ERR_UNSUPPORTED);
    heed_model_free(m);
}

static bool contains(const int32_t *ids, int n, int32_t id) {
    for (int i = 0; i < n; i++)
        if (ids[i] == id) return true;
    return false;
}

static void chat_tokens(const char *model, const char *family, int32_t first, int32_t marker, int32_t end) {
    char buf[512];
    const char *p = tu_shared(model, buf, sizeof buf);
    if (!p) skip();
    heed_model *m;
    char err[256];
    if (heed_model_load(p, NULL, &m, err, sizeof err)) fail_msg("%s", err);
    assert_string_equal(heed_chat_template(m), family);
    heed_chat_msg msg[] = {{"system", "Be brief."}, {"user", "Hello world"}};
    int32_t ids[128];
    int n = heed_chat_tokenize(m, msg, 2, true, ids, 128);
    assert_true(n > 8 && n < 128);
    assert_int_equal(ids[0], first);
    assert_true(contains(ids, n, marker));
    assert_true(contains(ids, n, end));
    /* the same text without special parsing never yields the special ids */
    char text[1024];
    int len = heed_chat_format(m, msg, 2, true, text, sizeof text);
    assert_true(len > 0 && len < (int)sizeof text);
    int32_t plain[512];
    int np = heed_tokenize_flags(m, text, (size_t)len, 0, plain, 512);
    assert_true(np > n);
    assert_false(contains(plain, np, marker));
    heed_model_free(m);
}

static void test_llama3_chat_tokens(void **state) {
    /* <|begin_of_text|>, <|start_header_id|>, <|eot_id|> */
    chat_tokens("models/tiny-llama3.gguf", "llama3", 128000, 128006, 128009);
}

static void test_qwen2_chat_tokens(void **state) {
    /* <|im_start|> opens, <|im_end|> closes */
    chat_tokens("models/tiny-qwen2.gguf", "chatml", 151644, 151644, 151645);
}

static void test_smollm2_chat_tokens(void **state) {
    chat_tokens("models/tiny-smollm2.gguf", "chatml", 1, 1, 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_render_llama3),
        cmocka_unit_test(test_render_chatml),
        cmocka_unit_test(test_render_inst),
        cmocka_unit_test(test_render_errors),
        cmocka_unit_test(test_bundled_has_no_template),
        cmocka_unit_test(test_llama3_chat_tokens),
        cmocka_unit_test(test_qwen2_chat_tokens),
        cmocka_unit_test(test_smollm2_chat_tokens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
