"""contrib/sglang_trace_hook.py's writer: synthetic q/k split over two
tensor-parallel ranks (heads in a shuffled global order, KV heads both split
and replicated) are merged by global head index and written as heed-trace/1;
`heed import` reads the trace and `heed export --full` gives rows equal to a
float64 softmax of the synthetic q/k. Needs numpy and build/heed (HEED_BUILD
overrides build/); skipped without the binary."""

import importlib.util
import json
import os
import struct
import subprocess

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.abspath(os.environ.get("HEED_BUILD", os.path.join(ROOT, "build")))
HEED = os.path.join(BUILD, "heed")

spec = importlib.util.spec_from_file_location("sglang_trace_hook", os.path.join(ROOT, "contrib", "sglang_trace_hook.py"))
hook = importlib.util.module_from_spec(spec)
spec.loader.exec_module(hook)


def reference_rows(qs, ks, n_head, n_head_kv, scale):
    """float64 softmax rows [L, H, T, T] (zeros above the diagonal)."""
    L, T = len(qs), qs[0].shape[0]
    out = np.zeros((L, n_head, T, T))
    g = n_head // n_head_kv
    for l in range(L):
        q, k = qs[l].astype(np.float64), ks[l].astype(np.float64)
        for h in range(n_head):
            s = scale * q[:, h, :] @ k[:, h // g, :].T
            s = np.where(np.tril(np.ones((T, T), bool)), s, -np.inf)
            s -= s.max(axis=1, keepdims=True)
            e = np.exp(s)
            out[l, h] = e / e.sum(axis=1, keepdims=True)
    return out


def split_ranks(a, n_total, tp, order):
    """The per-rank parts of a [T, n_total, d] array under the hook's split
    (heads_of_rank), listed in `order` of ranks."""
    n_local = max(n_total // tp, 1)
    parts = []
    for r in order:
        idx = hook.heads_of_rank(r, tp, n_local, n_total)
        parts.append((idx, a[:, idx, :].copy()))
    return parts


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
        data = f.read()
    return {k: np.frombuffer(data[v["data_offsets"][0]:v["data_offsets"][1]], "<f4").reshape(v["shape"])
            for k, v in h.items()}


@pytest.mark.parametrize("n_head_kv", [2, 1])  # KV heads split over the ranks / replicated on both
def test_two_rank_trace_imports_with_exact_rows(tmp_path, n_head_kv):
    rng = np.random.default_rng(7 + n_head_kv)
    n_layer, n_head, d, T, n_prompt, tp = 3, 4, 8, 11, 7, 2
    qs = [rng.standard_normal((T, n_head, d)).astype(np.float32) for _ in range(n_layer)]
    ks = [rng.standard_normal((T, n_head_kv, d)).astype(np.float32) for _ in range(n_layer)]
    layers = [{"q": split_ranks(qs[l], n_head, tp, [1, 0]), "k": split_ranks(ks[l], n_head_kv, tp, [1, 0])}
              for l in range(n_layer)]
    trace = str(tmp_path / "t.trace")
    ids = list(range(10, 10 + T))
    hook.write_trace(trace, ids, n_prompt, layers, n_head, n_head_kv, d, model="synthetic")

    # the files themselves: heads in global order, the metadata heed reads
    meta = json.load(open(os.path.join(trace, "trace.json")))
    assert meta["format"] == "heed-trace/1" and meta["n_layer"] == n_layer and meta["token_ids"] == ids
    st = read_safetensors(os.path.join(trace, "layer_001.safetensors"))
    np.testing.assert_array_equal(st["q"], qs[1])
    np.testing.assert_array_equal(st["k"], ks[1])

    if not os.access(HEED, os.X_OK):
        pytest.skip("%s is absent: build it (make all) or set HEED_BUILD" % HEED)
    run, npz = str(tmp_path / "r.heedrun"), str(tmp_path / "x.npz")
    r = subprocess.run([HEED, "import", trace, "-o", run], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([HEED, "export", run, "-o", npz, "--full"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    x = np.load(npz)
    assert x["prompt_ids"].tolist() == ids[:n_prompt]
    assert x["output_ids"].tolist() == ids[n_prompt:]
    got = x["attention"]
    assert got.shape == (n_layer, n_head, T, T)
    want = reference_rows(qs, ks, n_head, n_head_kv, 1 / np.sqrt(d))
    assert np.abs(got - want).max() < 1e-5


def test_merge_refuses_missing_and_disagreeing_heads():
    a = np.ones((3, 2, 4), np.float32)
    with pytest.raises(ValueError, match="on no rank"):
        hook.merge_heads([([0, 1], a)], 4)
    with pytest.raises(ValueError, match="differs"):
        hook.merge_heads([([0, 1], a), ([1, 2], a * 2)], 3)
    with pytest.raises(ValueError, match="shape"):
        hook.merge_heads([([0, 1, 2], a)], 3)


def test_rank_dumps_merge_to_the_same_trace(tmp_path):
    """The hook's per-rank files (as Capture.save writes them) give the trace
    write_trace gives from the arrays."""
    rng = np.random.default_rng(3)
    n_layer, n_head, n_head_kv, d, T, tp = 2, 4, 2, 8, 6, 2
    qs = [rng.standard_normal((T, n_head, d)).astype(np.float32) for _ in range(n_layer)]
    ks = [rng.standard_normal((T, n_head_kv, d)).astype(np.float32) for _ in range(n_layer)]
    dump = tmp_path / "dump"
    dump.mkdir()
    for r in range(tp):
        qi, ki = hook.heads_of_rank(r, tp, 2, n_head), hook.heads_of_rank(r, tp, 1, n_head_kv)
        arrs = {"n_layer": n_layer, "n_head": n_head, "n_head_kv": n_head_kv, "head_dim": d, "scale": 0.25,
                "q_heads": np.array(qi), "k_heads": np.array(ki), "window": np.zeros(n_layer, int)}
        for l in range(n_layer):
            arrs["q_%03d" % l], arrs["k_%03d" % l] = qs[l][:, qi], ks[l][:, ki]
        np.savez(str(dump / ("rank%d.npz" % r)), **arrs)
    out = str(tmp_path / "m.trace")
    hook.merge_rank_dumps(str(dump), out, list(range(T)), 4)
    meta = json.load(open(os.path.join(out, "trace.json")))
    assert meta["scale"] == 0.25 and "sliding_window" not in meta
    for l in range(n_layer):
        st = read_safetensors(os.path.join(out, "layer_%03d.safetensors" % l))
        np.testing.assert_array_equal(st["q"], qs[l])
        np.testing.assert_array_equal(st["k"], ks[l])
