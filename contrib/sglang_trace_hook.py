"""sglang_trace_hook.py - capture the post-RoPE queries and keys of one SGLang
generation and write them as a heed-trace/1 directory (docs/TRACE_FORMAT.md),
which `heed import DIR -o RUN.heedrun` turns into a heed run.

Two parts, so the writer can be used (and tested) without SGLang:

* the writer, plain numpy: `write_trace(...)` takes each layer's q and k as
  per-rank arrays (tensor parallelism splits the heads over ranks), merges
  the ranks by global head index and writes trace.json plus
  layer_NNN.safetensors (F32; the safetensors file is written by hand: an
  8-byte little-endian header length, the JSON header, the raw data).
  `merge_rank_dumps(...)` does the same from the files the hook saved.

* the hook, SGLang-specific: `install(model, rank, tp_size, dump_dir)` puts a
  forward pre-hook on every `RadixAttention` module of the model (SGLang's
  attention layer: it receives q and k after the rotary embedding, as
  `[n_tokens, heads_on_this_rank * head_dim]`), and appends them, per layer,
  to this rank's buffers; `save()` writes `rank{R}.npz` in dump_dir. After
  the generation, on one machine: `merge_rank_dumps(dump_dir, out_dir,
  token_ids, n_prompt)`.

How to run SGLang so the capture is complete (one request at a time):

    python -m sglang.launch_server --model-path M --tp 2 \
        --disable-cuda-graph --disable-radix-cache --max-running-requests 1

`--disable-cuda-graph`: decode steps replayed from a CUDA graph do not call
Python hooks, so they would be missing. `--disable-radix-cache`: a prompt
prefix served from the cache is not recomputed, so its q and k would be
missing. One running request: the hook sees the batch's tokens concatenated
and cannot tell requests apart. Install the hook in each tensor-parallel
worker after its model is loaded (e.g. from a patched
`ModelRunner.load_model`, or with `engine.collective_rpc` where available);
`heads_of_rank` gives the global head indices of SGLang's even split
(query heads r*n_local .. ; KV heads replicated when tp_size > n_head_kv).

The writer was tested here against heed (tests/python/test_contrib_trace.py:
synthetic 2-rank q/k through `heed import` and `heed export --full`); the
hook itself was written against SGLang's RadixAttention interface
(attributes layer_id, tp_q_head_num, tp_k_head_num, head_dim, scaling,
logit_cap, sliding_window_size) and has not been run against a live SGLang
here.
"""

import json
import os
import struct

import numpy as np

FORMAT = "heed-trace/1"

# ---------------------------------------------------------------- writer


def write_safetensors(path, tensors):
    """Writes {name: array} as a safetensors file (F32/F16/I32 arrays kept as
    they are, C order): u64 little-endian header length, JSON header padded
    with spaces to 8 bytes, then each tensor's bytes in order."""
    codes = {"f4": "F32", "f2": "F16", "i4": "I32"}
    header, blobs, off = {}, [], 0
    for name, a in tensors.items():
        a = np.asarray(a)
        kind = a.dtype.str[1:]  # "<f4" -> "f4"
        if kind not in codes:
            raise ValueError("%s: dtype %s is not one written here (float32, float16, int32)" % (name, a.dtype))
        b = np.ascontiguousarray(a, dtype="<" + kind).tobytes()
        header[name] = {"dtype": codes[kind], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def heads_of_rank(rank, tp_size, n_local, n_total):
    """Global head indices held by `rank` under SGLang's even split: heads
    rank*n_local .. when n_total >= tp_size; when there are fewer heads than
    ranks (KV heads), each is replicated and rank holds head rank*n_total//tp_size."""
    if n_total >= tp_size:
        return list(range(rank * n_local, (rank + 1) * n_local))
    return [rank * n_total // tp_size + i for i in range(n_local)]


def merge_heads(parts, n_total, what="q"):
    """parts: [(global_head_indices, array [T, n_local, head_dim])...] of one
    layer, in any order. Returns [T, n_total, head_dim] with every head in
    its global place. A head held by several ranks (replicated KV heads) must
    agree; a head no rank holds is an error."""
    if not parts:
        raise ValueError("%s: no rank's data" % what)
    T, _, d = np.asarray(parts[0][1]).shape
    out = np.zeros((T, n_total, d), dtype=np.float32)
    seen = np.zeros(n_total, dtype=bool)
    for idx, a in parts:
        a = np.asarray(a, dtype=np.float32)
        if a.ndim != 3 or a.shape[0] != T or a.shape[2] != d or a.shape[1] != len(idx):
            raise ValueError("%s: a rank's array has shape %s for heads %s (want [%d, %d, %d])"
                             % (what, a.shape, list(idx), T, len(idx), d))
        for j, h in enumerate(idx):
            if not 0 <= h < n_total:
                raise ValueError("%s: head %d is outside 0..%d" % (what, h, n_total - 1))
            if seen[h]:
                if not np.allclose(out[:, h], a[:, j], rtol=0, atol=1e-6):
                    raise ValueError("%s: head %d differs between the ranks that hold it" % (what, h))
                continue
            out[:, h] = a[:, j]
            seen[h] = True
    if not seen.all():
        raise ValueError("%s: heads %s are on no rank" % (what, np.flatnonzero(~seen).tolist()))
    return out


def write_trace(out_dir, token_ids, n_prompt, layers, n_head, n_head_kv, head_dim, scale=None,
                sliding_window=None, attn_softcap=None, model=None, source="sglang"):
    """Writes a heed-trace/1 directory.

    layers: one entry per layer, each {"q": [(head_indices, q_part)...],
    "k": [(head_indices, k_part)...]} with q_part [T, n_local_q, head_dim]
    and k_part [T, n_local_kv, head_dim] (post-RoPE, unscaled), one pair per
    tensor-parallel rank; head_indices are the global heads the rank holds
    (heads_of_rank). A plain array [T, n_head, head_dim] is taken as one rank
    holding every head. Returns out_dir."""
    token_ids = [int(t) for t in token_ids]
    T = len(token_ids)
    if not 0 <= n_prompt <= T:
        raise ValueError("n_prompt %d is outside 0..%d" % (n_prompt, T))
    if n_head % n_head_kv:
        raise ValueError("n_head %d is not a multiple of n_head_kv %d" % (n_head, n_head_kv))
    os.makedirs(out_dir, exist_ok=True)

    def parts_of(x, n):
        if isinstance(x, np.ndarray):
            return [(list(range(n)), x)]
        return list(x)

    for L, layer in enumerate(layers):
        q = merge_heads(parts_of(layer["q"], n_head), n_head, "layer %d q" % L)
        k = merge_heads(parts_of(layer["k"], n_head_kv), n_head_kv, "layer %d k" % L)
        for name, a in (("q", q), ("k", k)):
            if a.shape[0] != T or a.shape[2] != head_dim:
                raise ValueError("layer %d %s: shape %s, want [%d, *, %d]" % (L, name, a.shape, T, head_dim))
            if not np.isfinite(a).all():
                raise ValueError("layer %d %s: a value is not finite" % (L, name))
        write_safetensors(os.path.join(out_dir, "layer_%03d.safetensors" % L), {"q": q, "k": k})
    meta = {"format": FORMAT, "n_layer": len(layers), "n_head": n_head, "n_head_kv": n_head_kv,
            "head_dim": head_dim, "token_ids": token_ids, "n_prompt": int(n_prompt), "source": source}
    if scale is not None:
        meta["scale"] = float(scale)
    if sliding_window is not None:
        meta["sliding_window"] = sliding_window
    if attn_softcap:
        meta["attn_softcap"] = float(attn_softcap)
    if model:
        meta["model"] = model
    with open(os.path.join(out_dir, "trace.json"), "w") as f:
        json.dump(meta, f)
    return out_dir


def merge_rank_dumps(dump_dir, out_dir, token_ids, n_prompt, model=None):
    """Reads the rank{R}.npz files `save()` wrote and writes the trace."""
    files = sorted(f for f in os.listdir(dump_dir) if f.startswith("rank") and f.endswith(".npz"))
    if not files:
        raise ValueError("%s: no rank*.npz" % dump_dir)
    dumps = [np.load(os.path.join(dump_dir, f)) for f in files]
    m = dumps[0]
    n_layer, n_head, n_head_kv, head_dim = (int(m[x]) for x in ("n_layer", "n_head", "n_head_kv", "head_dim"))
    layers = [{"q": [(d["q_heads"].tolist(), d["q_%03d" % L]) for d in dumps],
               "k": [(d["k_heads"].tolist(), d["k_%03d" % L]) for d in dumps]} for L in range(n_layer)]
    window = [int(w) for w in m["window"]] if "window" in m else None
    return write_trace(out_dir, token_ids, n_prompt, layers, n_head, n_head_kv, head_dim, scale=float(m["scale"]),
                       sliding_window=window if window and any(window) else None,
                       attn_softcap=float(m["softcap"]) if "softcap" in m else None, model=model)


# ---------------------------------------------------------------- hook (SGLang)


class Capture:
    """Buffers one rank's post-RoPE q and k per layer, in call order."""

    def __init__(self, rank, tp_size, dump_dir):
        self.rank, self.tp_size, self.dump_dir = rank, tp_size, dump_dir
        self.q, self.k, self.geo, self.handles = {}, {}, {}, []

    def hook(self, module, args, kwargs=None):
        q, k = args[0], args[1]
        L = int(module.layer_id)
        d = int(module.head_dim)
        self.geo[L] = (int(module.tp_q_head_num), int(module.tp_k_head_num), d, float(module.scaling),
                       float(getattr(module, "logit_cap", 0.0) or 0.0),
                       int(getattr(module, "sliding_window_size", -1) or -1))
        self.q.setdefault(L, []).append(q.detach().float().reshape(q.shape[0], -1, d).cpu().numpy())
        self.k.setdefault(L, []).append(k.detach().float().reshape(k.shape[0], -1, d).cpu().numpy())

    def save(self, n_head, n_head_kv):
        """Writes dump_dir/rank{R}.npz: each layer's q and k of every token
        seen, the global heads this rank holds and the attention rule."""
        os.makedirs(self.dump_dir, exist_ok=True)
        layers = sorted(self.q)
        nq, nk, d, scale, cap, _ = self.geo[layers[0]]
        arrs = {"n_layer": len(layers), "n_head": n_head, "n_head_kv": n_head_kv, "head_dim": d, "scale": scale,
                "q_heads": np.array(heads_of_rank(self.rank, self.tp_size, nq, n_head)),
                "k_heads": np.array(heads_of_rank(self.rank, self.tp_size, nk, n_head_kv)),
                "window": np.array([max(self.geo[L][5], 0) for L in layers])}
        if cap > 0:
            arrs["softcap"] = cap
        for i, L in enumerate(layers):
            arrs["q_%03d" % i] = np.concatenate(self.q[L])
            arrs["k_%03d" % i] = np.concatenate(self.k[L])
        np.savez(os.path.join(self.dump_dir, "rank%d.npz" % self.rank), **arrs)

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


def install(model, rank, tp_size, dump_dir):
    """Hooks every RadixAttention of `model` (a torch.nn.Module in one SGLang
    tensor-parallel worker). Returns the Capture; call its save(n_head,
    n_head_kv) after the generation and remove() to unhook."""
    from sglang.srt.layers.radix_attention import RadixAttention  # only here: the writer needs no SGLang

    cap = Capture(rank, tp_size, dump_dir)
    for mod in model.modules():
        if isinstance(mod, RadixAttention):
            cap.handles.append(mod.register_forward_pre_hook(cap.hook, with_kwargs=True))
    if not cap.handles:
        raise RuntimeError("no RadixAttention module in this model: nothing to capture")
    return cap
