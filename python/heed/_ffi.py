"""ctypes mirror of include/heed.h: the structs and function signatures the
package uses, and the loader of libheed.so.

Every mirrored struct is checked against the library it loads
(heed_abi_sizeof), so a package and a library out of step fail at import
with a clear message instead of reading garbage.
"""
import ctypes
import ctypes.util
import os
from ctypes import (POINTER, Structure, c_bool, c_char_p, c_double, c_float, c_int, c_int32, c_int64,
                    c_size_t, c_ubyte, c_uint, c_uint64, c_void_p)

HEED_OK = 0
HEED_ERR_NEED_MODEL = -9
HEED_AGG_MEAN, HEED_AGG_MAX = 0, 1
HEED_MEASURE_ATTENTION, HEED_MEASURE_VALUE = 0, 1
HEED_TOK_ADD_BOS, HEED_TOK_PARSE_SPECIAL = 1, 2
HEED_EXPORT_FULL = 1
HEED_FINGERPRINT_DIM = 20


class ModelParams(Structure):
    _fields_ = [("progress", c_bool), ("vocab_only", c_bool)]


class ModelInfo(Structure):
    _fields_ = [("path", c_char_p), ("arch", c_char_p), ("name", c_char_p), ("tokenizer", c_char_p),
                ("file_size", c_uint64),
                ("n_layer", c_int), ("n_embd", c_int), ("n_head", c_int), ("n_head_kv", c_int),
                ("head_dim", c_int), ("n_ff", c_int), ("n_vocab", c_int), ("n_ctx_train", c_int),
                ("rope_base", c_float), ("rms_eps", c_float), ("tied_output", c_bool),
                ("bos", c_int32), ("eos", c_int32), ("eot", c_int32), ("add_bos", c_bool),
                ("can_tokenize", c_bool), ("attn_scale", c_float), ("attn_softcap", c_float),
                ("layer_window", POINTER(c_int)), ("final_softcap", c_float),
                ("n_expert", c_int), ("n_expert_used", c_int), ("tokenize_refusal", c_char_p),
                ("vocab_only", c_bool)]


class TensorInfo(Structure):
    _fields_ = [("name", c_char_p), ("type", c_char_p), ("n_dims", c_int), ("ne", c_int64 * 4),
                ("offset", c_uint64), ("n_bytes", c_uint64)]


class CtxParams(Structure):
    _fields_ = [("n_ctx", c_int), ("n_threads", c_int)]


class Knockout(Structure):
    _fields_ = [("layer", c_int), ("head", c_int), ("q0", c_int), ("q1", c_int), ("k0", c_int), ("k1", c_int)]


class ResidEdit(Structure):
    _fields_ = [("layer", c_int), ("pos", c_int), ("replace", c_bool), ("alpha", c_float),
                ("vec", POINTER(c_float))]


class SamplerParams(Structure):
    _fields_ = [("temperature", c_float), ("top_k", c_int), ("top_p", c_float), ("min_p", c_float),
                ("repeat_penalty", c_float), ("repeat_last_n", c_int), ("seed", c_uint64)]


class Candidate(Structure):
    _fields_ = [("id", c_int32), ("logit", c_float), ("prob", c_float)]


class Sample(Structure):
    _fields_ = [("id", c_int32), ("prob", c_float), ("logprob", c_float), ("entropy", c_float),
                ("probs", POINTER(c_float)), ("max_logit", c_float), ("log_z", c_double)]


class RecorderParams(Structure):
    _fields_ = [("attn_top_k", c_int), ("keep_qk", c_bool), ("keep_head_mean", c_bool),
                ("full_limit_bytes", c_size_t), ("n_cand", c_int), ("lens_top_k", c_int),
                ("head_scale", POINTER(c_float)), ("knockouts", POINTER(Knockout)), ("n_knockouts", c_int),
                ("head_which", POINTER(c_ubyte)), ("head_values", POINTER(c_float)),
                ("resid_edits", POINTER(ResidEdit)), ("n_resid_edits", c_int),
                ("live_mean_row", c_bool), ("lens_eager", c_bool), ("n_threads", c_int),
                ("spill_dir", c_char_p), ("sampler", SamplerParams), ("n_predict", c_int),
                ("prompt_text", c_char_p), ("intervene_from", c_int)]


class RunInfo(Structure):
    _fields_ = [("model_file", c_char_p), ("model_arch", c_char_p), ("model_name", c_char_p),
                ("model_size", c_uint64), ("meta_hash", c_uint64),
                ("n_layer", c_int), ("n_head", c_int), ("n_head_kv", c_int), ("head_dim", c_int),
                ("n_embd", c_int), ("n_vocab", c_int), ("bos", c_int32), ("eos", c_int32), ("eot", c_int32),
                ("n_prompt", c_int), ("n_output", c_int), ("n_pos", c_int), ("sampler", SamplerParams),
                ("n_predict", c_int), ("n_ctx", c_int), ("prompt_text", c_char_p),
                ("n_cand", c_int), ("lens_top_k", c_int), ("attn_top_k", c_int), ("lens_pending", c_int),
                ("intervened", c_bool), ("has_qk", c_bool), ("has_topk", c_bool), ("has_head_mean", c_bool),
                ("has_full", c_bool), ("eog", c_bool), ("attn_bytes", c_uint64),
                ("n_expert", c_int), ("n_expert_used", c_int), ("has_value_norms", c_bool),
                ("intervene_from", c_int)]


class RunStep(Structure):
    _fields_ = [("id", c_int32), ("prob", c_float), ("logprob", c_float), ("entropy", c_float),
                ("n_cand", c_int), ("cand", POINTER(Candidate))]


class AttnSel(Structure):
    _fields_ = [("layers", POINTER(c_int)), ("n_layers", c_int), ("heads", POINTER(c_int)),
                ("n_heads", c_int), ("agg", c_int), ("measure", c_int)]


class Edge(Structure):
    _fields_ = [("src", c_int), ("weight", c_float)]


class TokenStats(Structure):
    _fields_ = [("entropy", c_float), ("sink", c_float), ("local", c_float), ("mid", c_float),
                ("far", c_float), ("fingerprint", c_float * HEED_FINGERPRINT_DIM), ("zone", c_int)]


class HeadType(Structure):
    _fields_ = [("prev", c_float), ("induction", c_float), ("sink", c_float), ("local", c_float),
                ("kind", c_int)]


class Span(Structure):
    _fields_ = [("first", c_int), ("n_tok", c_int)]


class SourceCheck(Structure):
    _fields_ = [("pos", c_int), ("weight", c_float), ("logprob", c_float), ("drop", c_float), ("top_id", c_int32),
                ("still_chosen", c_bool)]


class GenPatch(Structure):
    _fields_ = [("layer", c_int), ("pos", c_int), ("src", POINTER(c_int32)), ("n_src", c_int)]


class GenParams(Structure):
    _fields_ = [("sampler", SamplerParams), ("n_predict", c_int), ("record", c_bool), ("rec", RecorderParams),
                ("prompt_text", c_char_p), ("forced", POINTER(c_int32)), ("n_forced", c_int),
                ("n_top", c_int), ("head_scale", POINTER(c_float)), ("knockouts", POINTER(Knockout)),
                ("n_knockouts", c_int), ("ablate_mean", POINTER(c_ubyte)), ("resid_edits", POINTER(ResidEdit)),
                ("n_resid_edits", c_int), ("patches", POINTER(GenPatch)), ("n_patches", c_int),
                ("intervene_from", c_int), ("reuse", c_void_p)]


class GenStep(Structure):
    _fields_ = [("index", c_int), ("sample", Sample), ("top", POINTER(Candidate)), ("n_top", c_int),
                ("text", c_void_p), ("text_len", c_size_t), ("last", c_bool)]


class ChatMsg(Structure):
    _fields_ = [("role", c_char_p), ("content", c_char_p)]


_MIRRORS = {
    "heed_model_params": ModelParams, "heed_model_info": ModelInfo, "heed_tensor_info": TensorInfo,
    "heed_ctx_params": CtxParams, "heed_knockout": Knockout, "heed_resid_edit": ResidEdit,
    "heed_sampler_params": SamplerParams, "heed_candidate": Candidate, "heed_sample": Sample,
    "heed_recorder_params": RecorderParams, "heed_run_info": RunInfo, "heed_run_step": RunStep,
    "heed_attn_sel": AttnSel, "heed_edge": Edge, "heed_token_stats": TokenStats,
    "heed_head_type": HeadType, "heed_span": Span, "heed_gen_patch": GenPatch,
    "heed_gen_params": GenParams, "heed_gen_step": GenStep, "heed_chat_msg": ChatMsg,
    "heed_source_check": SourceCheck,
}

P = c_void_p  # opaque handles: heed_model *, heed_ctx *, heed_run *, heed_gen *
ERR = c_char_p  # char *err (a ctypes buffer is passed)

_SIGNATURES = {
    "heed_strerror": (c_char_p, [c_int]),
    "heed_abi_sizeof": (c_size_t, [c_char_p]),
    "heed_model_default_params": (ModelParams, []),
    "heed_model_load": (c_int, [c_char_p, POINTER(ModelParams), POINTER(P), ERR, c_size_t]),
    "heed_model_free": (None, [P]),
    "heed_model_get_info": (None, [P, POINTER(ModelInfo)]),
    "heed_tokenize_flags": (c_int, [P, c_char_p, c_size_t, c_uint, POINTER(c_int32), c_int]),
    "heed_token_piece": (c_char_p, [P, c_int32]),
    "heed_token_label": (c_int, [P, c_int32, ctypes.c_char_p, c_size_t]),
    "heed_token_bytes": (c_int, [P, c_int32, ctypes.c_char_p, c_size_t]),
    "heed_chat_template": (c_char_p, [P]),
    "heed_chat_tokenize": (c_int, [P, POINTER(ChatMsg), c_int, c_bool, POINTER(c_int32), c_int]),
    "heed_ctx_default_params": (CtxParams, []),
    "heed_ctx_new": (c_int, [P, POINTER(CtxParams), POINTER(P)]),
    "heed_ctx_free": (None, [P]),
    "heed_ctx_n_ctx": (c_int, [P]),
    "heed_ctx_error": (c_char_p, [P]),
    "heed_gen_default_params": (GenParams, []),
    "heed_gen_start": (c_int, [P, P, POINTER(GenParams), POINTER(c_int32), c_int, POINTER(P)]),
    "heed_gen_next": (c_int, [P, POINTER(GenStep)]),
    "heed_gen_stop": (c_char_p, [P]),
    "heed_gen_finish": (c_int, [P, POINTER(P)]),
    "heed_gen_free": (None, [P]),
    "heed_run_save": (c_int, [P, c_char_p, ERR, c_size_t]),
    "heed_run_load": (c_int, [c_char_p, POINTER(P), ERR, c_size_t]),
    "heed_run_free": (None, [P]),
    "heed_run_get_info": (None, [P, POINTER(RunInfo)]),
    "heed_run_token": (c_int, [P, c_int, POINTER(c_int32), POINTER(c_char_p)]),
    "heed_run_get_step": (c_int, [P, c_int, POINTER(RunStep)]),
    "heed_run_lens": (c_int, [P, c_int, c_int, POINTER(POINTER(c_int32)), POINTER(POINTER(c_float)),
                              POINTER(c_int)]),
    "heed_run_lens_compute": (c_int, [P, P, P, c_int, c_int]),
    "heed_run_lens_model_ok": (c_int, [P, P]),
    "heed_run_attn_row": (c_int, [P, POINTER(AttnSel), c_int, POINTER(c_float)]),
    "heed_run_attn_col": (c_int, [P, POINTER(AttnSel), c_int, POINTER(c_float)]),
    "heed_run_attn_matrix": (c_int, [P, POINTER(AttnSel), POINTER(c_float)]),
    "heed_run_token_stats": (c_int, [P, POINTER(AttnSel), c_int, POINTER(TokenStats)]),
    "heed_zone_name": (c_char_p, [c_int]),
    "heed_run_head_types": (c_int, [P, POINTER(HeadType)]),
    "heed_head_kind_name": (c_char_p, [c_int]),
    "heed_run_input_importance": (c_int, [P, POINTER(AttnSel), POINTER(c_float)]),
    "heed_run_rollout": (c_int, [P, c_int, POINTER(c_float)]),
    "heed_run_value_norms": (c_int, [P, c_int, POINTER(POINTER(c_float))]),
    "heed_run_residual": (c_int, [P, c_int, c_int, POINTER(POINTER(c_float))]),
    "heed_run_verify_sources": (c_int, [P, P, P, c_int, POINTER(AttnSel), c_int, POINTER(SourceCheck),
                                        POINTER(c_float)]),
    "heed_run_span_attention": (c_int, [P, POINTER(AttnSel), c_int, c_int, POINTER(Span), c_int, POINTER(c_float)]),
    "heed_run_export_npz_ex": (c_int, [P, c_char_p, c_uint, ERR, c_size_t]),
    "heed_run_export_json": (c_int, [P, c_char_p, ERR, c_size_t]),
    "heed_run_export_html": (c_int, [P, P, c_char_p, ERR, c_size_t]),
    "heed_trace_import": (c_int, [c_char_p, POINTER(P), ERR, c_size_t]),
}


def _candidates():
    """Where libheed.so may be, in order: $HEED_LIB, beside this package (a
    wheel built after `make` carries it), the repository's build/ (the
    package used from a checkout), then the system's (make install)."""
    env = os.environ.get("HEED_LIB")
    if env:
        yield env
        return
    here = os.path.dirname(os.path.abspath(__file__))
    yield os.path.join(here, "libheed.so")
    yield os.path.join(here, "..", "..", "build", "libheed.so")
    found = ctypes.util.find_library("heed")
    if found:
        yield found


class LibraryError(ImportError):
    pass


def load():
    tried = []
    lib = None
    for path in _candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append(path + " (absent)")
            continue
        try:
            lib = ctypes.CDLL(path)
            break
        except OSError as e:
            tried.append("%s (%s)" % (path, e))
    if lib is None:
        raise LibraryError("heed: cannot find libheed.so (build it with `make` in the heed repository, install "
                           "it with `make install`, or set HEED_LIB to its path); tried: " + "; ".join(tried))
    for name, (res, args) in _SIGNATURES.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise LibraryError("heed: %s lacks %s: the library is older than this package" % (lib._name, name))
        fn.restype = res
        fn.argtypes = args
    for cname, cls in _MIRRORS.items():
        size = lib.heed_abi_sizeof(cname.encode())
        if size != ctypes.sizeof(cls):
            raise LibraryError("heed: %s has %s of %d bytes but this package expects %d: the package and the "
                               "library (%s) are from different versions" % (lib._name, cname, size,
                                                                             ctypes.sizeof(cls), lib._name))
    return lib
