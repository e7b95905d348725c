"""heed from Python: generate with a GGUF model on the CPU, and read the
model's exact attention, the logit lens and the statistics as numpy arrays.

    import heed
    run = heed.Model().generate("Once upon a time", max_tokens=20)
    run.attention(0, 3)          # (n_pos, n_pos) float32, exact

A thin layer over the C library (libheed.so, loaded with ctypes): every
number comes from the library's own computations (include/heed.h), the
same ones the CLI, the server and the web UI show. Errors raise HeedError
(the library's message) or ValueError/TypeError (bad arguments, checked
here before the library is called). Reference: python/README.md.
"""
import ctypes
import html as _html
import math
import os
import tempfile
import threading
from collections import namedtuple
from ctypes import POINTER, byref, c_char_p, c_float, c_int, c_int32, c_ubyte, c_void_p

import numpy as np

from . import _ffi

__all__ = ["Model", "Run", "HeedError", "open_run", "import_trace", "HTML", "Tokens", "Step", "Candidate"]
__version__ = "0.1.0"

_lib = _ffi.load()


class HeedError(RuntimeError):
    """A failure reported by the library; .code is its heed_status."""

    def __init__(self, message, code=None):
        super().__init__(message)
        self.code = code


Tokens = namedtuple("Tokens", "ids pieces labels")
Candidate = namedtuple("Candidate", "id label logit prob")
Step = namedtuple("Step", "index id label prob logprob entropy candidates")


def _err_buf():
    return ctypes.create_string_buffer(1024)


def _fail(rc, what, buf=None):
    msg = buf.value.decode("utf-8", "replace") if buf is not None and buf.value else ""
    text = "%s: %s" % (what, msg or _lib.heed_strerror(rc).decode())
    raise HeedError(text, rc)


def _int(name, v, lo=None, hi=None):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError("%s must be an integer, not %r" % (name, v))
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = "%s..%s" % ("" if lo is None else lo, "" if hi is None else hi)
        raise ValueError("%s = %d is out of range (%s)" % (name, v, rng))
    return v


def _num(name, v, lo=None, hi=None):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise TypeError("%s must be a number, not %r" % (name, v))
    v = float(v)
    if not math.isfinite(v) or (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError("%s = %r is out of range [%s, %s]" % (name, v, lo, hi))
    return v


def _ids_array(ids, n_vocab, name="ids"):
    a = np.asarray(ids)
    if a.ndim != 1 or a.size == 0 or not np.issubdtype(a.dtype, np.integer):
        raise ValueError("%s must be a non-empty 1-D sequence of token ids" % name)
    if a.min() < 0 or a.max() >= n_vocab:
        raise ValueError("%s: token id %d is outside the vocabulary (0..%d)" %
                         (name, int(a.min() if a.min() < 0 else a.max()), n_vocab - 1))
    return np.ascontiguousarray(a, dtype=np.int32)


def _i32p(a):
    return a.ctypes.data_as(POINTER(c_int32))


def _f32p(a):
    return a.ctypes.data_as(POINTER(c_float))


class Model:
    """A model loaded once: path is a GGUF file or a Hugging Face folder
    (None: the bundled stories260K). threads: None = all cores. ctx: the
    context limit in tokens (None: the model's, bounded by memory); the
    context is allocated on the first generate."""

    def __init__(self, path=None, threads=None, ctx=None):
        self._model = c_void_p()
        self._ctx = None
        self._lock = threading.Lock()
        self._threads = 0 if threads is None else _int("threads", threads, 1, 4096)
        self._n_ctx = 0 if ctx is None else _int("ctx", ctx, 1)
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise TypeError("path must be a file or folder path (str), not %r" % (path,))
        params = _lib.heed_model_default_params()
        buf = _err_buf()
        p = None if path is None else os.fsencode(path)
        rc = _lib.heed_model_load(p, byref(params), byref(self._model), buf, len(buf))
        if rc != _ffi.HEED_OK:
            self._model = c_void_p()
            _fail(rc, "cannot load %s" % (path if path is not None else "the bundled model"), buf)
        mi = _ffi.ModelInfo()
        _lib.heed_model_get_info(self._model, byref(mi))
        self._mi = mi
        s = lambda b: b.decode("utf-8", "replace") if b else ""
        self.info = {
            "path": s(mi.path), "arch": s(mi.arch), "name": s(mi.name), "tokenizer": s(mi.tokenizer),
            "file_size": mi.file_size, "n_layer": mi.n_layer, "n_embd": mi.n_embd, "n_head": mi.n_head,
            "n_head_kv": mi.n_head_kv, "head_dim": mi.head_dim, "n_ff": mi.n_ff, "n_vocab": mi.n_vocab,
            "n_ctx_train": mi.n_ctx_train, "rope_base": mi.rope_base, "bos": mi.bos, "eos": mi.eos,
            "add_bos": mi.add_bos, "attn_scale": mi.attn_scale, "attn_softcap": mi.attn_softcap,
            "layer_window": [mi.layer_window[i] for i in range(mi.n_layer)] if mi.layer_window else [],
            "final_softcap": mi.final_softcap, "n_expert": mi.n_expert, "n_expert_used": mi.n_expert_used,
            "chat_template": s(_lib.heed_chat_template(self._model)) or None,
        }

    def close(self):
        """Frees the model and its context (also done when it is collected)."""
        if self._ctx:
            _lib.heed_ctx_free(self._ctx)
            self._ctx = None
        if self._model:
            _lib.heed_model_free(self._model)
            self._model = c_void_p()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self):
        return "heed.Model(%r: %s, %d layers x %d heads)" % (self.info["path"] or "bundled", self.info["arch"],
                                                              self.info["n_layer"], self.info["n_head"])

    def _check_open(self):
        if not self._model:
            raise ValueError("this model is closed")

    # ------------------------------------------------------------ tokens
    def tokenize(self, text, add_bos=None, special=False):
        """Token ids of text (numpy int32), as generate would tokenize a
        prompt: BOS first when the model adds one (add_bos overrides);
        special=True parses special-token strings such as "<|eot_id|>"."""
        self._check_open()
        if not isinstance(text, str):
            raise TypeError("text must be a str, not %r" % (text,))
        b = text.encode("utf-8", "surrogatepass")
        flags = (_ffi.HEED_TOK_ADD_BOS if (self._mi.add_bos if add_bos is None else add_bos) else 0) | \
            (_ffi.HEED_TOK_PARSE_SPECIAL if special else 0)
        n = _lib.heed_tokenize_flags(self._model, b, len(b), flags, None, 0)
        if n < 0:
            if n == -1:
                raise ValueError("text is not valid UTF-8 (it holds a lone surrogate)")
            raise HeedError("cannot tokenize: %s" % (self._mi.tokenize_refusal or b"").decode() or
                            _lib.heed_strerror(n).decode(), n)
        ids = np.zeros(n, dtype=np.int32)
        if n:
            _lib.heed_tokenize_flags(self._model, b, len(b), flags, _i32p(ids), n)
        return ids

    def label(self, token_id):
        """A token's display label (spaces shown, "\\n" visible, [BOS]...)."""
        self._check_open()
        t = _int("token id", token_id, 0, self._mi.n_vocab - 1)
        buf = ctypes.create_string_buffer(256)
        n = _lib.heed_token_label(self._model, t, buf, len(buf))
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            _lib.heed_token_label(self._model, t, buf, len(buf))
        return buf.value.decode("utf-8", "replace")

    def piece(self, token_id):
        """The vocabulary's own string for a token ("▁the", "Ġthe")."""
        self._check_open()
        t = _int("token id", token_id, 0, self._mi.n_vocab - 1)
        p = _lib.heed_token_piece(self._model, t)
        return p.decode("utf-8", "replace") if p is not None else ""

    def detokenize(self, ids):
        """The text token ids stand for (invalid UTF-8 replaced)."""
        self._check_open()
        out = bytearray()
        buf = ctypes.create_string_buffer(256)
        for t in _ids_array(ids, self._mi.n_vocab):
            n = _lib.heed_token_bytes(self._model, int(t), buf, len(buf))
            if n > 0:
                out += buf.raw[:min(n, len(buf) - 1)]
        return out.decode("utf-8", "replace")

    # -------------------------------------------------------- generation
    def _context(self):
        if self._ctx is None:
            cp = _lib.heed_ctx_default_params()
            cp.n_ctx, cp.n_threads = self._n_ctx, self._threads
            ctx = c_void_p()
            rc = _lib.heed_ctx_new(self._model, byref(cp), byref(ctx))
            if rc != _ffi.HEED_OK:
                _fail(rc, "cannot make a context of %s tokens" % (self._n_ctx or "the model's"))
            self._ctx = ctx
        return self._ctx

    def _prompt_ids(self, prompt, ids, chat, system):
        if (prompt is None) == (ids is None):
            raise ValueError("give exactly one of prompt (text) and ids (token ids)")
        if ids is not None:
            if chat:
                raise ValueError("chat needs a text prompt or messages, not ids")
            return _ids_array(ids, self._mi.n_vocab), None
        if chat:
            if isinstance(chat, (list, tuple)):
                msgs = list(chat)
                if prompt:
                    msgs.append({"role": "user", "content": prompt})
            else:
                msgs = ([{"role": "system", "content": system}] if system else []) + \
                    [{"role": "user", "content": prompt}]
            if not isinstance(prompt, str):
                raise TypeError("prompt must be a str, not %r" % (prompt,))
            return self._chat_ids(msgs), prompt
        if not isinstance(prompt, str):
            raise TypeError("prompt must be a str, not %r" % (prompt,))
        if not prompt:
            raise ValueError("the prompt is empty")
        return self.tokenize(prompt), prompt

    def _chat_ids(self, msgs):
        if _lib.heed_chat_template(self._model) is None:
            raise HeedError("%s has no chat template heed knows (llama3, chatml, llama2, mistral, gemma, phi3)"
                            % (self.info["path"] or "the bundled model"))
        arr = (_ffi.ChatMsg * len(msgs))()
        keep = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise ValueError("chat[%d] must be {'role': str, 'content': str}" % i)
            if m["role"] not in ("system", "user", "assistant"):
                raise ValueError("chat[%d]: role must be 'system', 'user' or 'assistant', not %r" % (i, m["role"]))
            r, c = m["role"].encode(), m["content"].encode("utf-8", "surrogatepass")
            keep += [r, c]
            arr[i].role, arr[i].content = r, c
        n = _lib.heed_chat_tokenize(self._model, arr, len(msgs), True, None, 0)
        if n < 0:
            _fail(n, "cannot render the chat")
        ids = np.zeros(n, dtype=np.int32)
        _lib.heed_chat_tokenize(self._model, arr, len(msgs), True, _i32p(ids), n)
        return ids

    def generate(self, prompt=None, ids=None, max_tokens=64, temperature=0.0, top_k=None, top_p=None, min_p=None,
                 seed=0, chat=None, system=None, interventions=None, repeat_penalty=None, on_token=None,
                 intervene_from=0):
        """Generates from a text prompt (or token ids) and records the run:
        its tokens, steps and the exact attention (post-RoPE q and k, from
        which every row is recomputed). temperature 0 is greedy; top_k,
        top_p, min_p and repeat_penalty default to the CLI's (40, 0.95, 0.05,
        1). chat=True wraps the prompt as a user message in the model's chat
        template (system: a system message); chat may also be a list of
        {"role", "content"} messages. interventions: a list of dicts, as in
        the HTTP API (docs/API.md): {"type": "ablate"|"ablate_mean", "layer",
        "head"}, {"type": "scale", "layer", "head", "factor"}, {"type":
        "knockout", "layer", "head" (None: all), "queries": [first, last],
        "keys": [first, last]}, {"type": "steer", "layer", "alpha", "vector"},
        {"type": "patch", "run": Run, "layer", "pos"}; intervene_from: the
        position ablation, scaling and steering act from (0: all).
        on_token(step, text) is called for each generated token. Returns a
        Run."""
        self._check_open()
        ids_arr, text = self._prompt_ids(prompt, ids, chat, system)
        mi = self._mi
        p = _lib.heed_gen_default_params()
        p.n_predict = _int("max_tokens", max_tokens, 0, 1 << 20)
        p.sampler.temperature = _num("temperature", temperature, 0.0)
        if top_k is not None:
            p.sampler.top_k = _int("top_k", top_k, 0)
        if top_p is not None:
            p.sampler.top_p = _num("top_p", top_p, 0.0, 1.0)
            if p.sampler.top_p <= 0:
                raise ValueError("top_p must be in (0, 1]")
        if min_p is not None:
            p.sampler.min_p = _num("min_p", min_p, 0.0, 1.0)
        if repeat_penalty is not None:
            p.sampler.repeat_penalty = _num("repeat_penalty", repeat_penalty, 0.0)
        p.sampler.seed = _int("seed", seed, 0, (1 << 64) - 1)
        p.record = True
        tb = text.encode("utf-8", "surrogatepass") if text is not None else None
        p.prompt_text = tb
        p.rec.prompt_text = tb
        keep = _Interventions(self, interventions)
        keep.apply(p)
        p.intervene_from = _int("intervene_from", intervene_from, 0)
        ctx = self._context()
        with self._lock:
            g = c_void_p()
            rc = _lib.heed_gen_start(self._model, ctx, byref(p), _i32p(ids_arr), len(ids_arr), byref(g))
            if rc != _ffi.HEED_OK:
                msg = _lib.heed_ctx_error(ctx)
                if rc == -6:
                    raise HeedError("the prompt (%d tokens) does not fit in the context of %d tokens" %
                                    (len(ids_arr), _lib.heed_ctx_n_ctx(ctx)), rc)
                raise HeedError("cannot generate: %s%s" % (_lib.heed_strerror(rc).decode(),
                                                           (" (" + msg.decode() + ")") if msg else ""), rc)
            try:
                out_text = bytearray()
                step = _ffi.GenStep()
                while True:
                    rc = _lib.heed_gen_next(g, byref(step))
                    if rc < 0:
                        msg = _lib.heed_ctx_error(ctx)
                        raise HeedError("generation failed: %s%s" % (_lib.heed_strerror(rc).decode(),
                                                                    (" (" + msg.decode() + ")") if msg else ""), rc)
                    if rc == 0:
                        break
                    piece = ctypes.string_at(step.text, step.text_len) if step.text_len else b""
                    out_text += piece
                    if on_token is not None:
                        on_token(step.index, piece.decode("utf-8", "replace"))
                stop = _lib.heed_gen_stop(g)
                run = c_void_p()
                rc = _lib.heed_gen_finish(g, byref(run))
                if rc != _ffi.HEED_OK:
                    _fail(rc, "cannot finish the recording")
            finally:
                _lib.heed_gen_free(g)
        r = Run(run, model=self)
        r._text = out_text.decode("utf-8", "replace")
        r._stop = stop.decode() if stop else None
        r.interventions = list(interventions) if interventions else []
        return r


class _Interventions:
    """The interventions of one generate call, as the library's arrays
    (kept alive here while the generation runs)."""

    def __init__(self, model, items):
        mi = model._mi
        L, H, E = mi.n_layer, mi.n_head, mi.n_embd
        self.scale = None
        self.mean = None
        self.knock = []
        self.edits = []
        self.patches = []
        self.vecs = []
        if items is None:
            return
        if not isinstance(items, (list, tuple)):
            raise TypeError("interventions must be a list of dicts")
        for i, e in enumerate(items):
            where = "interventions[%d]" % i
            if not isinstance(e, dict):
                raise TypeError("%s must be a dict" % where)
            t = e.get("type")
            kinds = ("ablate", "ablate_mean", "scale", "knockout", "steer", "patch")
            if t not in kinds:
                raise ValueError("%s: type must be one of %s, not %r" % (where, ", ".join(kinds), t))
            if t in ("steer", "patch"):
                layer = _int(where + ".layer", e.get("layer"), 0, L - 1)
                if t == "steer":
                    alpha = _num(where + ".alpha", e.get("alpha"))
                    v = np.ascontiguousarray(np.asarray(e.get("vector"), dtype=np.float32))
                    if v.shape != (E,):
                        raise ValueError("%s.vector must have the model's %d numbers, not shape %s" %
                                         (where, E, v.shape))
                    if not np.all(np.isfinite(v)):
                        raise ValueError("%s.vector holds a number that is not finite" % where)
                    self.vecs.append(v)
                    self.edits.append((layer, -1, False, alpha, v))
                else:
                    src = e.get("run")
                    if not isinstance(src, Run):
                        raise TypeError("%s.run must be a heed.Run (the run to patch from)" % where)
                    if src._info.n_embd != E or src._info.n_layer != L or src._info.n_vocab != mi.n_vocab:
                        raise ValueError("%s.run was made with another model" % where)
                    ids = src.tokens.ids
                    pos = _int(where + ".pos", e.get("pos"), 0)
                    if pos >= len(ids):
                        raise ValueError("%s.pos = %d is beyond the patch run's %d tokens" % (where, pos, len(ids)))
                    ids = np.ascontiguousarray(ids, dtype=np.int32)
                    self.vecs.append(ids)
                    self.patches.append((layer, pos, ids))
                continue
            if t == "knockout":
                layer = e.get("layer")
                head = e.get("head")
                layer = -1 if layer is None else _int(where + ".layer", layer, 0, L - 1)
                head = -1 if head is None else _int(where + ".head", head, 0, H - 1)
                q = self._range(where + ".queries", e.get("queries"))
                k = self._range(where + ".keys", e.get("keys"))
                self.knock.append((layer, head, q[0], q[1] + 1, k[0], k[1] + 1))
                continue
            layer = _int(where + ".layer", e.get("layer"), 0, L - 1)
            head = _int(where + ".head", e.get("head"), 0, H - 1)
            if t == "ablate_mean":
                if self.mean is None:
                    self.mean = np.zeros(L * H, dtype=np.uint8)
                self.mean[layer * H + head] = 1
                continue
            if self.scale is None:
                self.scale = np.ones(L * H, dtype=np.float32)
            self.scale[layer * H + head] = 0.0 if t == "ablate" else _num(where + ".factor", e.get("factor"))

    @staticmethod
    def _range(name, r):
        if not isinstance(r, (list, tuple)) or len(r) != 2:
            raise ValueError("%s must be [first, last] (positions, inclusive)" % name)
        a, b = _int(name + "[0]", r[0], 0), _int(name + "[1]", r[1], 0)
        if b < a:
            raise ValueError("%s: last (%d) is before first (%d)" % (name, b, a))
        return a, b

    def apply(self, p):
        if self.scale is not None:
            p.head_scale = _f32p(self.scale)
        if self.mean is not None:
            p.ablate_mean = self.mean.ctypes.data_as(POINTER(c_ubyte))
        if self.knock:
            self._k = (_ffi.Knockout * len(self.knock))(*[_ffi.Knockout(*k) for k in self.knock])
            p.knockouts, p.n_knockouts = self._k, len(self.knock)
        if self.edits:
            self._e = (_ffi.ResidEdit * len(self.edits))(
                *[_ffi.ResidEdit(l, pos, rep, a, _f32p(v)) for (l, pos, rep, a, v) in self.edits])
            p.resid_edits, p.n_resid_edits = self._e, len(self.edits)
        if self.patches:
            self._p = (_ffi.GenPatch * len(self.patches))(
                *[_ffi.GenPatch(l, pos, _i32p(ids), len(ids)) for (l, pos, ids) in self.patches])
            p.patches, p.n_patches = self._p, len(self.patches)


class HTML:
    """The offline viewer of a run: one self-contained HTML document
    (.html), shown inline in Jupyter (in an iframe, so the notebook's page
    and the viewer do not share styles or scripts)."""

    def __init__(self, document, height=640):
        self.html = document
        self.height = height

    def _repr_html_(self):
        return ('<iframe srcdoc="%s" style="width:100%%;height:%dpx;border:1px solid #ddd" '
                'sandbox="allow-scripts allow-downloads"></iframe>' % (_html.escape(self.html, quote=True),
                                                                       self.height))

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.html)


class Run:
    """A recorded generation: tokens, steps, the exact attention (every row
    recomputed from the recorded q and k), the logit lens and statistics.
    Positions count the prompt's tokens from 0 (BOS included), then the
    outputs; step t was chosen by position n_prompt - 1 + t."""

    def __init__(self, handle, model=None):
        self._run = handle
        self._model = model
        self._lock = threading.Lock()
        self._text = None
        self._stop = None
        self.interventions = []
        info = _ffi.RunInfo()
        _lib.heed_run_get_info(self._run, byref(info))
        self._info = info
        self._tokens = None

    def close(self):
        if self._run:
            _lib.heed_run_free(self._run)
            self._run = c_void_p()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _check_open(self):
        if not self._run:
            raise ValueError("this run is closed")

    # ---------------------------------------------------------- metadata
    @property
    def info(self):
        i = self._info
        s = lambda b: b.decode("utf-8", "replace") if b else ""
        return {"model_file": s(i.model_file), "model_arch": s(i.model_arch), "model_name": s(i.model_name),
                "n_layer": i.n_layer, "n_head": i.n_head, "n_head_kv": i.n_head_kv, "head_dim": i.head_dim,
                "n_embd": i.n_embd, "n_vocab": i.n_vocab, "n_prompt": i.n_prompt, "n_output": i.n_output,
                "n_pos": i.n_pos, "prompt_text": s(i.prompt_text), "intervened": i.intervened,
                "has_qk": i.has_qk, "eog": i.eog, "stop": self.stop,
                "sampler": {"temperature": i.sampler.temperature, "top_k": i.sampler.top_k,
                            "top_p": i.sampler.top_p, "min_p": i.sampler.min_p,
                            "repeat_penalty": i.sampler.repeat_penalty, "seed": i.sampler.seed,
                            "n_predict": i.n_predict}}

    n_prompt = property(lambda self: self._info.n_prompt)
    n_output = property(lambda self: self._info.n_output)
    n_pos = property(lambda self: self._info.n_pos)
    n_layer = property(lambda self: self._info.n_layer)
    n_head = property(lambda self: self._info.n_head)

    @property
    def stop(self):
        if self._stop:
            return self._stop
        return "eog" if self._info.eog else "length"

    @property
    def tokens(self):
        """Tokens(ids, pieces, labels) of the prompt then the outputs;
        pieces is None for a run opened without its model."""
        if self._tokens is None:
            self._check_open()
            n = self._info.n_prompt + self._info.n_output
            ids = np.zeros(n, dtype=np.int32)
            labels = []
            tid, lab = c_int32(), c_char_p()
            for i in range(n):
                _lib.heed_run_token(self._run, i, byref(tid), byref(lab))
                ids[i] = tid.value
                labels.append(lab.value.decode("utf-8", "replace") if lab.value else "")
            pieces = [self._model.piece(int(t)) for t in ids] if self._model else None
            self._tokens = Tokens(ids, pieces, labels)
        return self._tokens

    @property
    def text(self):
        """The generated text (needs the model for a run opened from a file)."""
        if self._text is None:
            if self._model is None:
                raise HeedError("the text of a run opened without its model needs the model's vocabulary: "
                                "heed.open_run(path, model=heed.Model(...)) (run.tokens.labels has each "
                                "token's label)")
            self._text = self._model.detokenize(self.tokens.ids[self._info.n_prompt:]) if self.n_output else ""
        return self._text

    @property
    def steps(self):
        """One Step per generated token: the chosen id, its probability,
        log-probability, the distribution's entropy and the best candidates."""
        self._check_open()
        out = []
        st = _ffi.RunStep()
        labels = self.tokens.labels
        for t in range(self._info.n_output):
            rc = _lib.heed_run_get_step(self._run, t, byref(st))
            if rc != _ffi.HEED_OK:
                _fail(rc, "step %d" % t)
            cands = [Candidate(st.cand[k].id, self._model.label(st.cand[k].id) if self._model else None,
                               st.cand[k].logit, st.cand[k].prob) for k in range(st.n_cand)]
            out.append(Step(t, st.id, labels[self._info.n_prompt + t], st.prob, st.logprob, st.entropy, cands))
        return out

    # --------------------------------------------------------- attention
    def _sel(self, layer, head, agg, measure="attention"):
        i = self._info
        keep = []
        sel = _ffi.AttnSel()
        if agg not in ("mean", "max"):
            raise ValueError("agg must be 'mean' or 'max', not %r" % (agg,))
        sel.agg = _ffi.HEED_AGG_MEAN if agg == "mean" else _ffi.HEED_AGG_MAX
        if measure not in ("attention", "value"):
            raise ValueError("measure must be 'attention' or 'value', not %r" % (measure,))
        if measure == "value" and not i.has_value_norms:
            raise HeedError("this run has no value norms (recorded before heed recorded them, or imported "
                            "from a trace): measure='value' is unavailable")
        sel.measure = _ffi.HEED_MEASURE_ATTENTION if measure == "attention" else _ffi.HEED_MEASURE_VALUE
        for name, v, n, fp, fn in (("layer", layer, i.n_layer, "layers", "n_layers"),
                                   ("head", head, i.n_head, "heads", "n_heads")):
            if v is None:
                continue
            vals = [v] if isinstance(v, (int, np.integer)) and not isinstance(v, bool) else list(v)
            if not vals:
                raise ValueError("%s: an empty list (None means all)" % name)
            arr = (c_int * len(vals))(*[_int(name, x, 0, n - 1) for x in vals])
            keep.append(arr)
            setattr(sel, fp, arr)
            setattr(sel, fn, len(vals))
        return sel, keep

    def _pos(self, name, pos):
        return _int(name, pos, 0, self._info.n_pos - 1)

    def row(self, pos, layer=None, head=None, agg="mean", measure="attention"):
        """The exact attention row of query position pos (keys 0..pos):
        one head, or combined (agg "mean" or "max") over the layers and heads
        given (an int, a list, or None: all). float32, shape (pos + 1,).
        measure "value": value-weighted attention, a_ij * |W_O^h v_j| per
        head (docs/ANALYSIS.md), then combined."""
        self._check_open()
        pos = self._pos("pos", pos)
        sel, keep = self._sel(layer, head, agg, measure)
        out = np.zeros(pos + 1, dtype=np.float32)
        with self._lock:
            rc = _lib.heed_run_attn_row(self._run, byref(sel), pos, _f32p(out))
        if rc != _ffi.HEED_OK:
            _fail(rc, "attention row %d" % pos)
        return out

    def column(self, key, layer=None, head=None, agg="mean", measure="attention"):
        """How much every later query attended to key position key:
        out[i] = attention of query key + i; shape (n_pos - key,)."""
        self._check_open()
        key = self._pos("key", key)
        sel, keep = self._sel(layer, head, agg, measure)
        out = np.zeros(self._info.n_pos - key, dtype=np.float32)
        with self._lock:
            rc = _lib.heed_run_attn_col(self._run, byref(sel), key, _f32p(out))
        if rc != _ffi.HEED_OK:
            _fail(rc, "attention column %d" % key)
        return out

    def attention(self, layer=None, head=None, agg="mean", measure="attention"):
        """The dense (n_pos, n_pos) attention matrix of one head (or
        combined like row), float32, zeros above the diagonal: exact, every
        row recomputed from the recorded q and k."""
        self._check_open()
        n = self._info.n_pos
        if n * n * 4 > (4 << 30):
            raise ValueError("a %d x %d matrix takes %.1f GB: read rows (run.row) instead" % (n, n, n * n * 4e-9))
        sel, keep = self._sel(layer, head, agg, measure)
        out = np.zeros((n, n), dtype=np.float32)
        with self._lock:
            rc = _lib.heed_run_attn_matrix(self._run, byref(sel), _f32p(out))
        if rc != _ffi.HEED_OK:
            _fail(rc, "attention matrix")
        return out

    def value_norms(self):
        """|W_O^h v_p| of every position p's value in every head: float32
        (n_pos, n_layer, n_head), what measure="value" weighs rows by."""
        self._check_open()
        i = self._info
        if not i.has_value_norms:
            raise HeedError("this run has no value norms")
        out = np.zeros((i.n_pos, i.n_layer, i.n_head), dtype=np.float32)
        p = POINTER(c_float)()
        for pos in range(i.n_pos):
            rc = _lib.heed_run_value_norms(self._run, pos, byref(p))
            if rc != _ffi.HEED_OK:
                _fail(rc, "value norms of position %d" % pos)
            out[pos] = np.ctypeslib.as_array(p, shape=(i.n_layer * i.n_head,)).reshape(i.n_layer, i.n_head)
        return out

    def verify_sources(self, step, k=5, layer=None, head=None, agg="mean", measure="attention"):
        """The ablation check of step `step`'s k (1..10) heaviest sources in
        the row chosen by layer/head/agg/measure: for each, the step is
        re-run with its query unable to attend to that source (every layer
        and head), and the chosen token's log-probability compared. A list
        of dicts, heaviest first: pos, label, weight, logprob, drop (base -
        logprob), top_id (the most likely token then), still_chosen. Needs
        the model that made the run."""
        self._check_open()
        i = self._info
        step = _int("step", step, 0, i.n_output - 1)
        k = _int("k", k, 1, 10)
        if i.n_prompt - 1 + step >= i.n_pos:
            raise ValueError("step %d's query did not go through the model" % step)
        if self._model is None:
            raise HeedError("verifying sources re-runs the model that made the run: "
                            "heed.open_run(path, model=heed.Model(...))", _ffi.HEED_ERR_NEED_MODEL)
        sel, keep = self._sel(layer, head, agg, measure)
        out = (_ffi.SourceCheck * k)()
        base = c_float()
        with self._lock:
            n = _lib.heed_run_verify_sources(self._run, self._model._model, None, step, byref(sel), k, out,
                                             byref(base))
        if n < 0:
            _fail(n, "verifying the sources of step %d" % step)
        labels = self.tokens.labels
        return [{"pos": out[j].pos, "label": labels[out[j].pos], "weight": out[j].weight,
                 "logprob": out[j].logprob, "drop": out[j].drop, "base_logprob": base.value,
                 "top_id": out[j].top_id, "still_chosen": bool(out[j].still_chosen)} for j in range(n)]

    def span_attention(self, q0, q1, spans, layer=None, head=None, agg="mean", measure="attention"):
        """For the queries q0..q1-1, the mean over them of the attention (or
        value-weighted attention) summed over each span of keys: spans is a
        list of (first, n_tokens). float32 (len(spans),)."""
        self._check_open()
        q0 = self._pos("q0", q0)
        q1 = _int("q1", q1, q0 + 1, self._info.n_pos)
        n_tok = self._info.n_prompt + self._info.n_output
        arr = (_ffi.Span * max(len(spans), 1))()
        for j, sp in enumerate(spans):
            if len(sp) != 2:
                raise ValueError("spans[%d] must be (first, n_tokens)" % j)
            f, n = _int("spans[%d] first" % j, sp[0], 0, n_tok - 1), _int("spans[%d] n_tokens" % j, sp[1], 0)
            if f + n > n_tok:
                raise ValueError("spans[%d] runs past the run's %d tokens" % (j, n_tok))
            arr[j].first, arr[j].n_tok = f, n
        sel, keep = self._sel(layer, head, agg, measure)
        out = np.zeros(len(spans), dtype=np.float32)
        with self._lock:
            rc = _lib.heed_run_span_attention(self._run, byref(sel), q0, q1, arr, len(spans), _f32p(out))
        if rc != _ffi.HEED_OK:
            _fail(rc, "span attention")
        return out

    def residual(self, step, layer):
        """The residual stream after `layer` at the query of step `step`
        (step 0: the prompt's last token), float32 (n_embd,): the difference
        of two runs' residuals is a steering vector."""
        self._check_open()
        step = _int("step", step, 0, self._info.n_output - 1)
        layer = _int("layer", layer, 0, self._info.n_layer - 1)
        p = POINTER(c_float)()
        rc = _lib.heed_run_residual(self._run, step, layer, byref(p))
        if rc != _ffi.HEED_OK:
            _fail(rc, "the residual of step %d after layer %d (the run keeps none once its lens was computed "
                      "and saved)" % (step, layer))
        return np.ctypeslib.as_array(p, shape=(self._info.n_embd,)).copy()

    def rollout(self, pos):
        """Attention rollout (Abnar & Zuidema) of position pos: shape (pos + 1,)."""
        self._check_open()
        pos = self._pos("pos", pos)
        out = np.zeros(pos + 1, dtype=np.float32)
        with self._lock:
            rc = _lib.heed_run_rollout(self._run, pos, _f32p(out))
        if rc != _ffi.HEED_OK:
            _fail(rc, "rollout of %d" % pos)
        return out

    def stats(self, layer=None, head=None, agg="mean"):
        """Per-position statistics of the (combined) rows (docs/ANALYSIS.md):
        a dict of arrays over positions: entropy, sink, local, mid, far,
        fingerprint (n_pos, 20), zone (names); and head_types, a list per
        layer of each head's kind and scores."""
        self._check_open()
        sel, keep = self._sel(layer, head, agg)
        n = self._info.n_pos
        cols = {k: np.zeros(n, dtype=np.float32) for k in ("entropy", "sink", "local", "mid", "far")}
        fp = np.zeros((n, _ffi.HEED_FINGERPRINT_DIM), dtype=np.float32)
        zones = []
        ts = _ffi.TokenStats()
        with self._lock:
            for p in range(n):
                rc = _lib.heed_run_token_stats(self._run, byref(sel), p, byref(ts))
                if rc != _ffi.HEED_OK:
                    _fail(rc, "statistics of position %d" % p)
                for k in cols:
                    cols[k][p] = getattr(ts, k)
                fp[p] = np.ctypeslib.as_array(ts.fingerprint)
                zones.append(_lib.heed_zone_name(ts.zone).decode())
            L, H = self._info.n_layer, self._info.n_head
            ht = (_ffi.HeadType * (L * H))()
            rc = _lib.heed_run_head_types(self._run, ht)
        if rc != _ffi.HEED_OK:
            _fail(rc, "head types")
        cols["fingerprint"] = fp
        cols["zone"] = zones
        cols["head_types"] = [[{"kind": _lib.heed_head_kind_name(ht[l * H + h].kind).decode(),
                                "prev": ht[l * H + h].prev, "induction": ht[l * H + h].induction,
                                "sink": ht[l * H + h].sink, "local": ht[l * H + h].local}
                               for h in range(H)] for l in range(L)]
        return cols

    def logit_lens(self):
        """The logit lens of every step at every layer: (ids, probs), each
        of shape (n_output, n_layer, k) (k = 5): the layer's residual put
        through the final norm and the output matrix, best first. Computed
        on request with the model that made the run."""
        self._check_open()
        i = self._info
        if i.lens_top_k <= 0:
            raise HeedError("this run was recorded without the logit lens")
        with self._lock:
            if i.n_output and _lib.heed_run_lens(self._run, 0, 0, byref(POINTER(c_int32)()),
                                                 byref(POINTER(c_float)()), byref(c_int())) == \
                    _ffi.HEED_ERR_NEED_MODEL:
                if self._model is None:
                    raise HeedError("the logit lens needs the model that made the run: "
                                    "heed.open_run(path, model=heed.Model(...))", _ffi.HEED_ERR_NEED_MODEL)
                rc = _lib.heed_run_lens_compute(self._run, self._model._model, None, 0, i.n_output)
                if rc != _ffi.HEED_OK:
                    _fail(rc, "the logit lens (with %s)" % (self._model.info["path"] or "the bundled model"))
            k = i.lens_top_k
            ids = np.zeros((i.n_output, i.n_layer, k), dtype=np.int32)
            probs = np.zeros((i.n_output, i.n_layer, k), dtype=np.float32)
            pi, pp, n = POINTER(c_int32)(), POINTER(c_float)(), c_int()
            for t in range(i.n_output):
                for layer in range(i.n_layer):
                    rc = _lib.heed_run_lens(self._run, t, layer, byref(pi), byref(pp), byref(n))
                    if rc != _ffi.HEED_OK:
                        _fail(rc, "the logit lens of step %d, layer %d" % (t, layer))
                    ids[t, layer, :n.value] = np.ctypeslib.as_array(pi, shape=(n.value,))
                    probs[t, layer, :n.value] = np.ctypeslib.as_array(pp, shape=(n.value,))
        return ids, probs

    # ----------------------------------------------------------- output
    def save(self, path):
        """Writes the run file (docs/RUN_FORMAT.md): `heed export`,
        `heed serve` (POST /api/runs/upload) and heed.open_run read it."""
        self._check_open()
        buf = _err_buf()
        rc = _lib.heed_run_save(self._run, os.fsencode(path), buf, len(buf))
        if rc != _ffi.HEED_OK:
            _fail(rc, "cannot save the run", buf)

    def to_npz(self, path, full=False):
        """The run's arrays as an .npz (what `heed export -o X.npz` writes;
        full=True adds `attention`, (n_layer, n_head, n_pos, n_pos))."""
        self._check_open()
        buf = _err_buf()
        with self._lock:
            rc = _lib.heed_run_export_npz_ex(self._run, os.fsencode(path), _ffi.HEED_EXPORT_FULL if full else 0,
                                             buf, len(buf))
        if rc != _ffi.HEED_OK:
            _fail(rc, "cannot export the run", buf)

    def show(self, height=640):
        """The offline viewer (the web UI and this run's views, one
        self-contained HTML document, nothing loaded from the network) as an
        object Jupyter shows inline; .html is the document, .save(path)
        writes it."""
        self._check_open()
        buf = _err_buf()
        fd, path = tempfile.mkstemp(suffix=".html", prefix="heed-")
        os.close(fd)
        try:
            with self._lock:
                rc = _lib.heed_run_export_html(self._run, self._model._model if self._model else None,
                                               os.fsencode(path), buf, len(buf))
            if rc != _ffi.HEED_OK:
                _fail(rc, "cannot build the viewer", buf)
            with open(path, encoding="utf-8") as f:
                return HTML(f.read(), height)
        finally:
            os.unlink(path)

    def __repr__(self):
        return "heed.Run(%d prompt + %d output tokens, %d layers x %d heads%s)" % (
            self.n_prompt, self.n_output, self.n_layer, self.n_head, ", intervened" if self._info.intervened else "")


def open_run(path, model=None):
    """Reads a run file (`heed generate --save`, Run.save, a server's
    download). model (a heed.Model, the one that made the run) is needed
    only for its text, pieces and the logit lens."""
    if model is not None and not isinstance(model, Model):
        raise TypeError("model must be a heed.Model")
    buf = _err_buf()
    h = c_void_p()
    rc = _lib.heed_run_load(os.fsencode(path), byref(h), buf, len(buf))
    if rc != _ffi.HEED_OK:
        _fail(rc, "cannot open the run", buf)
    return Run(h, model=model)


def import_trace(path):
    """A run from a heed-trace/1 folder (docs/TRACE_FORMAT.md): another
    engine's post-RoPE q and k, every row recomputed exactly."""
    buf = _err_buf()
    h = c_void_p()
    rc = _lib.heed_trace_import(os.fsencode(path), byref(h), buf, len(buf))
    if rc != _ffi.HEED_OK:
        _fail(rc, "cannot import the trace", buf)
    return Run(h)
