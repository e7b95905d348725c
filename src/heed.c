/*
 * heed.c - small parts of the public API: the error codes' text (the
 * heed_strerror table) and the float16 conversion behind every f16 heed writes.
 */
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
