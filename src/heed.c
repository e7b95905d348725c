/*
 * heed.c - small parts of the public API: the error codes' text (the
 * heed_strerror table) and the float16 conversion behind every f16 heed writes.
 */
#include <string.h>

#include "heed.h"
#include "kern.h"

const char *heed_strerror(int rc) {
    switch (rc) {
    case HEED_OK: return "ok";
    case HEED_ERR_INVALID_ARG: return "invalid argument";
    case HEED_ERR_IO: return "i/o error";
    case HEED_ERR_FORMAT: return "corrupt or truncated file";
    case HEED_ERR_UNSUPPORTED: return "unsupported";
    case HEED_ERR_NOMEM: return "out of memory";
    case HEED_ERR_CONTEXT_FULL: return "context full";
    case HEED_ERR_TOKENIZER: return "cannot tokenize";
    case HEED_ERR_CANCELLED: return "cancelled";
    case HEED_ERR_NEED_MODEL: return "needs the model that made the run";
    case HEED_ERR_MODEL_MISMATCH: return "not the model that made the run";
    case HEED_ERR_NOT_FOUND: return "not found";
    default: return "unknown error";
    }
}

uint16_t heed_f32_to_f16(float f) { return kern_f32_to_f16(f); }

size_t heed_abi_sizeof(const char *type) {
#define T(name) {#name, sizeof(name)}
    static const struct {
        const char *name;
        size_t size;
    } types[] = {
        T(heed_model_params), T(heed_model_info), T(heed_ctx_params), T(heed_knockout), T(heed_resid_edit),
        T(heed_sampler_params), T(heed_candidate), T(heed_sample), T(heed_recorder_params), T(heed_run_info),
        T(heed_run_step), T(heed_attn_sel), T(heed_edge), T(heed_token_stats), T(heed_head_type),
        T(heed_span), T(heed_gen_patch), T(heed_gen_params), T(heed_gen_step), T(heed_chat_msg),
        T(heed_tensor_info), T(heed_source_check),
    };
#undef T
    for (size_t i = 0; type && i < sizeof types / sizeof types[0]; i++)
        if (!strcmp(types[i].name, type)) return types[i].size;
    return 0;
}
