"""The Python package (python/heed) against the CLI, the server and itself.

Run by tests/python.sh (make test) with Debian's python3, numpy and pytest
against build/libheed.so and build/heed (HEED_BUILD overrides build/).
"""
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.abspath(os.environ.get("HEED_BUILD", os.path.join(ROOT, "build")))
HEED = os.path.join(BUILD, "heed")
SHARED = os.path.abspath(os.path.join(ROOT, "..", "shared", "models"))
os.environ.setdefault("HEED_LIB", os.path.join(BUILD, "libheed.so"))
sys.path.insert(0, os.path.join(ROOT, "python"))

import heed  # noqa: E402

PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def model():
    m = heed.Model(threads=1)
    yield m
    m.close()


@pytest.fixture(scope="module")
def run(model):
    return model.generate(PROMPT, max_tokens=6)


def cli(*args):
    p = subprocess.run([HEED, *args], capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    return p.stdout


def cli_json(*args):
    return json.loads(cli("generate", "--threads", "1", "--json", *args))


def assert_rows_equal_json(run, attention):
    """Every row of every layer and head equals the CLI's, bit for bit (the
    JSON prints float32 with 9 significant digits: exact round trip)."""
    rows = attention["rows"]
    assert attention["n_pos"] == run.n_pos
    assert len(rows) == run.n_layer and len(rows[0]) == run.n_head
    for layer in range(run.n_layer):
        for head in range(run.n_head):
            m = run.attention(layer, head)
            for q in range(run.n_pos):
                want = np.array(rows[layer][head][q], dtype=np.float32)
                got = m[q, :q + 1]
                assert np.array_equal(got, want), (layer, head, q, got, want)
                assert not m[q, q + 1:].any()


# ------------------------------------------------------------------ library

def test_abi_mirrors_match_the_library():
    lib = heed._lib
    for name, cls in heed._ffi._MIRRORS.items():
        assert lib.heed_abi_sizeof(name.encode()) == __import__("ctypes").sizeof(cls), name
    assert lib.heed_abi_sizeof(b"no_such_type") == 0


def test_model_info_and_tokenize(model):
    info = model.info
    assert info["arch"] == "llama" and info["n_layer"] == 5 and info["n_head"] == 8 and info["n_vocab"] == 512
    ids = model.tokenize(PROMPT)
    out = json.loads(cli("tokenize", "--json", PROMPT))
    assert ids.dtype == np.int32
    assert ids.tolist() == out["ids"]
    assert [model.label(int(i)) for i in ids] == [t["label"] for t in out["tokens"]]
    assert [model.piece(int(i)) for i in ids] == [t["piece"] for t in out["tokens"]]
    assert model.detokenize(ids[1:]) == " " + PROMPT  # SentencePiece: a word starts with a space


# ------------------------------------------------------- the CLI, bit for bit

def test_rows_tokens_and_steps_equal_generate_json(run):
    j = cli_json("-p", PROMPT, "-n", "6")
    assert run.tokens.ids.tolist() == j["prompt_ids"] + j["output_ids"]
    assert run.tokens.labels == [t["label"] for t in j["tokens"]]
    assert run.tokens.pieces == [t["piece"] for t in j["tokens"]]
    assert run.text == j["text"] and run.stop == j["stop"]
    assert run.n_prompt == len(j["prompt_ids"]) and run.n_output == len(j["output_ids"])
    for s, js in zip(run.steps, j["steps"]):
        assert s.id == js["id"]
        assert np.float32(s.prob) == np.float32(js["prob"])
        assert [c.id for c in s.candidates[:10]] == [c["id"] for c in js["top"]]
    assert_rows_equal_json(run, j["attention"])


def test_rows_and_aggregates(run):
    n = run.n_pos
    full = np.stack([np.stack([run.attention(l, h) for h in range(run.n_head)]) for l in range(run.n_layer)])
    for pos in (0, 3, n - 1):
        r = run.row(pos, layer=2, head=5)
        assert r.shape == (pos + 1,) and np.array_equal(r, full[2, 5, pos, :pos + 1])
        assert abs(float(r.sum()) - 1) < 1e-5
        mean = run.row(pos)
        assert np.allclose(mean, full[:, :, pos, :pos + 1].mean(axis=(0, 1)), atol=1e-6)
        mx = run.row(pos, layer=[1, 3], agg="max")
        assert np.allclose(mx, full[[1, 3], :, pos, :pos + 1].max(axis=(0, 1)), atol=0)
    col = run.column(2, layer=0, head=0)
    assert np.array_equal(col, full[0, 0, 2:, 2])
    assert np.allclose(run.attention(), full.mean(axis=(0, 1)), atol=1e-6)
    roll = run.rollout(n - 1)
    assert roll.shape == (n,) and abs(float(roll.sum()) - 1) < 1e-4


def test_interventions_equal_the_cli(model):
    r = model.generate(PROMPT, max_tokens=5, interventions=[{"type": "ablate", "layer": 0, "head": 1},
                                                          {"type": "scale", "layer": 2, "head": 3, "factor": 0.5}])
    j = cli_json("-p", PROMPT, "-n", "5", "--ablate", "0:1", "--scale", "2:3:0.5")
    assert r.info["intervened"]
    assert r.tokens.ids.tolist() == j["prompt_ids"] + j["output_ids"]
    assert_rows_equal_json(r, j["attention"])
    k = model.generate(PROMPT, max_tokens=4, interventions=[
        {"type": "knockout", "layer": None, "head": None, "queries": [3, 10], "keys": [1, 2]}])
    jk = cli_json("-p", PROMPT, "-n", "4", "--knockout", "*:*:3-10:1-2")
    assert_rows_equal_json(k, jk["attention"])
    for q in range(3, k.n_pos):
        assert not k.row(q, layer=1, head=2)[1:3].any()


def test_patching_a_run_with_itself_changes_nothing(model, run):
    p = model.generate(PROMPT, max_tokens=6, interventions=[{"type": "patch", "run": run, "layer": 2, "pos": 3}])
    assert p.tokens.ids.tolist() == run.tokens.ids.tolist()
    assert np.array_equal(p.attention(4, 7), run.attention(4, 7))


def test_steering_changes_the_residual(model, run):
    v = np.ones(model.info["n_embd"], dtype=np.float32)
    s = model.generate(PROMPT, max_tokens=6, interventions=[{"type": "steer", "layer": 1, "alpha": 4.0, "vector": v}])
    assert s.info["intervened"]
    assert not np.array_equal(s.attention(3, 0), run.attention(3, 0))


def test_mean_ablation_runs(model):
    r = model.generate(PROMPT, max_tokens=3, interventions=[{"type": "ablate_mean", "layer": 1, "head": 0}])
    assert r.info["intervened"] and r.n_output == 3


def test_sampling_and_callback(model):
    seen = []
    a = model.generate(PROMPT, max_tokens=8, temperature=1.0, seed=7, top_k=0, top_p=1.0, min_p=0.0,
                       on_token=lambda i, t: seen.append((i, t)))
    b = model.generate(PROMPT, max_tokens=8, temperature=1.0, seed=7, top_k=0, top_p=1.0, min_p=0.0)
    j = cli_json("-p", PROMPT, "-n", "8", "--temp", "1", "--seed", "7", "--top-k", "0", "--top-p", "1",
                 "--min-p", "0", "--attention", "none")
    assert a.tokens.ids.tolist() == b.tokens.ids.tolist() == j["prompt_ids"] + j["output_ids"]
    assert [i for i, _ in seen] == list(range(a.n_output))
    assert "".join(t for _, t in seen) == a.text == j["text"]


def test_ids_prompt(model, run):
    r = model.generate(ids=run.tokens.ids[:run.n_prompt], max_tokens=6)
    assert r.tokens.ids.tolist() == run.tokens.ids.tolist()
    assert r.info["prompt_text"] == ""


# ----------------------------------------------------- lens, stats, exports

def test_logit_lens(model, run):
    ids, probs = run.logit_lens()
    assert ids.shape == probs.shape == (run.n_output, run.n_layer, 5)
    # the last layer's lens is the model's own distribution: greedy chose its top
    assert ids[:, -1, 0].tolist() == run.tokens.ids[run.n_prompt:].tolist()
    assert np.all(np.diff(probs, axis=2) <= 0) and np.all(probs >= 0) and np.all(probs <= 1)


def test_stats(run):
    s = run.stats()
    n = run.n_pos
    for k in ("entropy", "sink", "local", "mid", "far"):
        assert s[k].shape == (n,)
    assert s["fingerprint"].shape == (n, 20) and len(s["zone"]) == n
    assert s["zone"][0] == "none"
    # position 0's row is [1]: all its mass is the sink
    assert s["sink"][0] == pytest.approx(1.0) and s["entropy"][0] == pytest.approx(0.0, abs=1e-6)
    assert len(s["head_types"]) == run.n_layer and len(s["head_types"][0]) == run.n_head
    assert s["head_types"][0][0]["kind"] in ("other", "prev_token", "induction", "sink", "local")


def test_save_open_and_npz(tmp_path, model):
    run = model.generate(PROMPT, max_tokens=6)  # its lens not computed yet
    path = str(tmp_path / "r.heedrun")
    run.save(path)
    back = heed.open_run(path)
    assert back.tokens.ids.tolist() == run.tokens.ids.tolist() and back.tokens.pieces is None
    for l in range(run.n_layer):
        assert np.array_equal(back.attention(l, 6), run.attention(l, 6))
    with pytest.raises(heed.HeedError, match="needs the model"):
        back.logit_lens()
    with pytest.raises(heed.HeedError, match="model"):
        back.text
    withm = heed.open_run(path, model=model)
    assert withm.text == run.text
    assert np.array_equal(withm.logit_lens()[0], run.logit_lens()[0])
    npz = str(tmp_path / "r.npz")
    run.to_npz(npz, full=True)
    z = np.load(npz)
    att = z["attention"]
    assert att.shape == (run.n_layer, run.n_head, run.n_pos, run.n_pos)
    assert np.array_equal(att[3, 2], run.attention(3, 2))


def test_cli_saved_run_opens_in_python(tmp_path, run):
    path = str(tmp_path / "cli.heedrun")
    cli("generate", "--threads", "1", "-p", PROMPT, "-n", "6", "--save", path)
    r = heed.open_run(path)
    assert r.tokens.ids.tolist() == run.tokens.ids.tolist()
    assert np.array_equal(r.attention(2, 2), run.attention(2, 2))


def test_show_is_self_contained(run):
    h = run.show(height=500)
    doc = h.html
    assert doc.lstrip().lower().startswith("<!doctype html")
    assert "<script" in doc and len(doc) > 10000
    # nothing loaded from the network: no remote src/href, no remote imports or fetches
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', doc, re.I)
    assert not re.search(r'@import\s+url\(\s*["\']?(https?:)?//', doc, re.I)
    # the run's own data is in it
    assert run.tokens.labels[1] in doc
    frame = h._repr_html_()
    assert frame.startswith("<iframe srcdoc=\"") and "<script" not in frame  # escaped inside srcdoc
    assert "height:500px" in frame


# ------------------------------------------------------------- bad input

def test_bad_arguments_raise_clearly(tmp_path, model, run):
    with pytest.raises(heed.HeedError, match="nope.gguf"):
        heed.Model("/nonexistent/nope.gguf")
    with pytest.raises(TypeError, match="path"):
        heed.Model(42)
    with pytest.raises(ValueError, match="threads"):
        heed.Model(threads=0)
    with pytest.raises(ValueError, match="pos"):
        run.row(run.n_pos)
    with pytest.raises(ValueError, match="pos"):
        run.row(-1)
    with pytest.raises(ValueError, match="layer"):
        run.attention(layer=99, head=0)
    with pytest.raises(ValueError, match="head"):
        run.row(0, layer=0, head=8)
    with pytest.raises(TypeError, match="layer"):
        run.row(0, layer="0")
    with pytest.raises(ValueError, match="agg"):
        run.row(0, agg="median")
    with pytest.raises(ValueError, match="empty"):
        model.generate("")
    with pytest.raises(ValueError, match="exactly one"):
        model.generate(PROMPT, ids=[1, 2])
    with pytest.raises(ValueError, match="exactly one"):
        model.generate()
    with pytest.raises(ValueError, match="vocabulary"):
        model.generate(ids=[1, 100000])
    with pytest.raises(ValueError, match="temperature"):
        model.generate(PROMPT, temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(PROMPT, top_p=0)
    with pytest.raises(ValueError, match="max_tokens"):
        model.generate(PROMPT, max_tokens=-5)
    with pytest.raises(TypeError, match="max_tokens"):
        model.generate(PROMPT, max_tokens=2.5)
    with pytest.raises(ValueError, match=r"interventions\[0\]: type"):
        model.generate(PROMPT, interventions=[{"type": "explode"}])
    with pytest.raises(ValueError, match=r"interventions\[0\]\.layer"):
        model.generate(PROMPT, interventions=[{"type": "ablate", "layer": 5, "head": 0}])
    with pytest.raises(ValueError, match=r"interventions\[1\]\.vector"):
        model.generate(PROMPT, interventions=[{"type": "ablate", "layer": 0, "head": 0},
                                              {"type": "steer", "layer": 0, "alpha": 1, "vector": [1.0, 2.0]}])
    with pytest.raises(TypeError, match=r"interventions\[0\]\.run"):
        model.generate(PROMPT, interventions=[{"type": "patch", "run": "run_1", "layer": 0, "pos": 0}])
    with pytest.raises(ValueError, match="beyond"):
        model.generate(PROMPT, interventions=[{"type": "patch", "run": run, "layer": 0, "pos": 999}])
    with pytest.raises(ValueError, match="queries"):
        model.generate(PROMPT, interventions=[{"type": "knockout", "queries": [5, 2], "keys": [0, 0]}])
    with pytest.raises(heed.HeedError, match="chat template"):
        model.generate(PROMPT, chat=True)
    with pytest.raises(ValueError, match="UTF-8"):
        model.tokenize("\udc80")
    with pytest.raises(heed.HeedError, match="does not fit"):
        heed.Model(ctx=8, threads=1).generate(PROMPT * 10, max_tokens=2)
    bad = tmp_path / "bad.heedrun"
    bad.write_bytes(b"HEEDRUN\0" + b"\xff" * 100)
    with pytest.raises(heed.HeedError, match="bad.heedrun"):
        heed.open_run(str(bad))
    with pytest.raises(heed.HeedError):
        heed.open_run(str(tmp_path / "missing.heedrun"))


def test_views_from_two_threads(run):
    want = run.attention(1, 1)
    errors = []

    def work():
        try:
            for _ in range(20):
                if not np.array_equal(run.attention(1, 1), want):
                    errors.append("differs")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    ts = [threading.Thread(target=work) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


@pytest.mark.skipif(not os.path.exists(os.path.join(SHARED, "tiny-llama3.gguf")),
                    reason="../shared/models/tiny-llama3.gguf is absent (a chat-template model)")
def test_chat_on_a_chat_model():
    m = heed.Model(os.path.join(SHARED, "tiny-llama3.gguf"), threads=1)
    r = m.generate("Hi", chat=True, system="Be brief.", max_tokens=3)
    j = cli_json("-m", os.path.join(SHARED, "tiny-llama3.gguf"), "-p", "Hi", "--chat", "--system", "Be brief.",
                 "-n", "3")
    assert r.tokens.ids.tolist() == j["prompt_ids"] + j["output_ids"]
    assert_rows_equal_json(r, j["attention"])
    r2 = m.generate(chat=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                    prompt="", max_tokens=3)
    assert r2.tokens.ids.tolist() == r.tokens.ids.tolist()


# ------------------------------------------------------------ heed serve

class Server:
    def __init__(self, data, *extra):
        self.p = subprocess.Popen([HEED, "serve", "--port", "0", "--threads", "1", "--data-dir", data, *extra],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        line = b""
        deadline = time.time() + 30
        while time.time() < deadline and b"\n" not in line:
            r, _, _ = select.select([self.p.stdout], [], [], 0.5)
            if r:
                line += os.read(self.p.stdout.fileno(), 256)
        m = re.search(rb"listening on (http://127\.0\.0\.1:\d+)", line)
        if not m:
            self.p.kill()
            raise AssertionError("heed serve did not start: %r" % line)
        self.url = m.group(1).decode()

    def req(self, method, path, body=None, ctype="application/json"):
        rq = urllib.request.Request(self.url + path, data=body, method=method, headers={"Content-Type": ctype})
        try:
            with urllib.request.urlopen(rq, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def close(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.p.kill()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(str(tmp_path_factory.mktemp("data")))
    yield s
    s.close()


def test_python_runs_open_in_serve_and_back(tmp_path, server, run):
    path = tmp_path / "py.heedrun"
    run.save(str(path))
    st, body = server.req("POST", "/api/runs/upload", path.read_bytes(), "application/octet-stream")
    assert st == 201, body
    up = json.loads(body)
    assert up["n_prompt"] == run.n_prompt and up["n_output"] == run.n_output and up["own_model"]
    rid = up["id"]
    st, body = server.req("GET", "/api/runs")
    assert rid in body.decode()
    for pos in (0, run.n_pos - 1):
        st, body = server.req("GET", "/api/runs/%s/attention?pos=%d&layer=3&head=1" % (rid, pos))
        assert st == 200, body
        assert np.array_equal(np.array(json.loads(body)["row"], dtype=np.float32), run.row(pos, layer=3, head=1))
    st, body = server.req("GET", "/api/runs/%s/logit-lens" % rid)
    assert st == 200, body
    # and back: the server's download opens in Python, equal
    st, body = server.req("GET", "/api/runs/%s/download?format=run" % rid)
    assert st == 200
    back = tmp_path / "back.heedrun"
    back.write_bytes(body)
    b = heed.open_run(str(back))
    assert np.array_equal(b.attention(0, 0), run.attention(0, 0))


def test_server_runs_open_in_python(tmp_path, server, run):
    st, body = server.req("POST", "/api/runs", json.dumps({"prompt": PROMPT, "max_tokens": 6}).encode())
    assert st == 200
    rid = re.search(rb'"run_id":"([^"]+)"', body).group(1).decode()
    st, body = server.req("GET", "/api/runs/%s/download?format=run" % rid)
    assert st == 200
    p = tmp_path / "srv.heedrun"
    p.write_bytes(body)
    r = heed.open_run(str(p))
    assert r.tokens.ids.tolist() == run.tokens.ids.tolist()
    st, body = server.req("GET", "/api/runs/%s/attention?pos=%d&layer=4&head=4" % (rid, r.n_pos - 1))
    assert np.array_equal(np.array(json.loads(body)["row"], dtype=np.float32), r.row(r.n_pos - 1, layer=4, head=4))


def test_upload_refuses_bad_files(server):
    st, body = server.req("POST", "/api/runs/upload", b"", "application/octet-stream")
    assert st == 400 and b"run file" in body
    st, body = server.req("POST", "/api/runs/upload", b"HEEDRUN\0garbage", "application/octet-stream")
    assert st == 400 and b"upload" in body
    st, body = server.req("POST", "/api/runs/upload", os.urandom(5000), "application/octet-stream")
    assert st == 400


# ------------------------------------------------------- pip install offline

def test_pip_install_offline(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)], check=True, timeout=120)
    env = dict(os.environ, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("HEED_LIB", None)
    env["HEED_LIB"] = os.path.join(BUILD, "libheed.so")  # the wheel carries this library
    p = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-index", "-q", os.path.join(ROOT, "python")],
                       capture_output=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr.decode()
    env.pop("HEED_LIB")
    code = ("import heed, os; assert 'site-packages' in heed.__file__, heed.__file__; "
            "assert os.path.exists(os.path.join(os.path.dirname(heed.__file__), 'libheed.so')); "
            "r = heed.Model(threads=1).generate('Once upon a time', max_tokens=3); print(r.n_output, r.text)")
    p = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, cwd=str(tmp_path),
                       env=env, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    assert p.stdout.decode().startswith("3 ")


# -------------------------------------------------- value-weighted attention

def test_value_weighted_rows(tmp_path, run):
    vn = run.value_norms()
    assert vn.shape == (run.n_pos, run.n_layer, run.n_head) and np.all(vn > 0)
    pos = run.n_pos - 1
    a = run.row(pos, layer=2, head=3)
    w = run.row(pos, layer=2, head=3, measure="value")
    assert np.array_equal(w, a * vn[:pos + 1, 2, 3])
    full = np.stack([np.stack([run.attention(l, h) for h in range(run.n_head)]) for l in range(run.n_layer)])
    want = (full[:, :, pos, :pos + 1] * vn[:pos + 1].transpose(1, 2, 0)).mean(axis=(0, 1))
    assert np.allclose(run.row(pos, measure="value"), want, rtol=1e-5, atol=1e-7)
    npz = str(tmp_path / "v.npz")
    run.to_npz(npz)
    assert np.array_equal(np.load(npz)["value_norms"], vn)
    with pytest.raises(ValueError, match="measure"):
        run.row(pos, measure="norm")


def test_value_measure_over_http(tmp_path, server, run):
    path = tmp_path / "v.heedrun"
    run.save(str(path))
    st, body = server.req("POST", "/api/runs/upload", path.read_bytes(), "application/octet-stream")
    rid = json.loads(body)["id"]
    pos = run.n_pos - 1
    st, body = server.req("GET", "/api/runs/%s/attention?pos=%d&layer=1&head=2&measure=value" % (rid, pos))
    assert st == 200, body
    assert np.array_equal(np.array(json.loads(body)["row"], dtype=np.float32),
                          run.row(pos, layer=1, head=2, measure="value"))
    st, body = server.req("GET", "/api/runs/%s/graph?measure=value" % rid)
    assert st == 200, body
    st, body = server.req("GET", "/api/runs/%s/attention?pos=0&measure=weight" % rid)
    assert st == 400 and b"measure" in body
    st, body = server.req("GET", "/api/runs/%s/stats?measure=value" % rid)
    assert st == 400


# ------------------------------------------- ablation checks and provenance

def test_verify_sources_python_and_http(tmp_path, model, server, run):
    py = run.verify_sources(2, k=4, measure="value")
    assert len(py) == 4
    w = [s["weight"] for s in py]
    assert w == sorted(w, reverse=True)
    st = run.steps[2]
    assert abs(py[0]["base_logprob"] - st.logprob) < 1e-5
    for s in py:
        assert s["drop"] == pytest.approx(s["base_logprob"] - s["logprob"], abs=1e-6)
        assert s["still_chosen"] == (s["top_id"] == st.id)
    path = tmp_path / "r.heedrun"
    run.save(str(path))
    rid = json.loads(server.req("POST", "/api/runs/upload", path.read_bytes(), "application/octet-stream")[1])["id"]
    code, body = server.req("GET", "/api/runs/%s/verify?step=2&k=4&measure=value" % rid)
    assert code == 200, body
    j = json.loads(body)
    assert j["pos"] == run.n_prompt + 1 and j["token"]["id"] == st.id
    assert [s["pos"] for s in j["sources"]] == [s["pos"] for s in py]
    assert [np.float32(s["drop"]) for s in j["sources"]] == [np.float32(s["drop"]) for s in py]
    assert server.req("GET", "/api/runs/%s/verify?k=4" % rid)[0] == 400
    assert server.req("GET", "/api/runs/%s/verify?step=2&k=11" % rid)[0] == 400
    with pytest.raises(heed.HeedError, match="model"):
        heed.open_run(str(path)).verify_sources(2)


def test_documents_and_provenance(server):
    docs = [{"name": "cat", "text": "The cat sat on the mat. It was happy."},
            {"name": "dog", "text": "A big dog ran to the park."}]
    code, body = server.req("POST", "/api/runs", json.dumps({"prompt": PROMPT, "max_tokens": 20,
                                                             "documents": docs}).encode())
    assert code == 200
    rid = re.search(rb'"run_id":"([^"]+)"', body).group(1).decode()
    doc = json.loads(server.req("GET", "/api/runs/" + rid)[1])
    placed = doc["documents"]
    assert [d["name"] for d in placed] == ["cat", "dog"]
    labels = [t["label"] for t in doc["tokens"]]
    for d, src in zip(placed, docs):
        assert "".join(labels[d["first"]:d["first"] + d["n_tok"]]).strip() == src["text"]
    code, body = server.req("GET", "/api/runs/%s/provenance?verify=1" % rid)
    assert code == 200, body
    p = json.loads(body)
    assert p["documents"] == placed and p["sentences"]
    for s in p["sentences"]:
        assert s["first"] >= doc["n_prompt"]
        scores = [x["score"] for x in s["sources"]]
        assert scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1 + 1e-6
        assert s["verified"]["doc"] == s["sources"][0]["doc"] and "drop" in s["verified"]
    bad = [({"documents": "x"}, 400), ({"documents": [{"name": "a"}]}, 400), ({"documents": []}, 400),
           ({"documents": [{"name": 1, "text": "t"}]}, 400), ({"provenance": "yes"}, 400)]
    for extra, want in bad:
        req = dict({"prompt": PROMPT, "max_tokens": 2}, **extra)
        code, body = server.req("POST", "/api/runs", json.dumps(req).encode())
        assert code == want, (extra, body)
    code, body = server.req("GET", "/api/runs/%s/provenance?verify=2" % rid)
    assert code == 400


@pytest.mark.skipif(not os.path.exists(os.path.join(SHARED, "tiny-llama3.gguf")),
                    reason="../shared/models/tiny-llama3.gguf is absent (a chat-template model)")
def test_chat_documents_provenance(tmp_path):
    s = Server(str(tmp_path / "data"), "-m", os.path.join(SHARED, "tiny-llama3.gguf"))
    try:
        req = {"messages": [{"role": "user", "content": "What sat on the mat?"}], "max_tokens": 12,
               "documents": [{"name": "a", "text": "The cat sat on the mat."}], "provenance": True}
        code, body = s.req("POST", "/v1/chat/completions", json.dumps(req).encode())
        assert code == 200, body
        ch = json.loads(body)["choices"][0]
        prov = ch["provenance"]
        assert prov["documents"][0]["name"] == "a" and prov["documents"][0]["n_tok"] > 0
        assert isinstance(prov["sentences"], list)
        for sent in prov["sentences"]:
            assert all(x["doc"] == "a" for x in sent["sources"])
    finally:
        s.close()


def sse(server, body):
    code, raw = server.req("POST", "/api/runs", json.dumps(body).encode())
    assert code == 200, raw
    done = json.loads(re.search(rb"event: done\ndata: (.*)\n", raw).group(1))
    return done


def test_branch_reuses_the_kv_cache(server):
    parent = sse(server, {"prompt": PROMPT, "max_tokens": 12})
    pid = parent["run_id"]
    ablate = [{"type": "ablate", "layer": 2, "head": 3}]
    b1 = sse(server, {"branch": {"run": pid, "step": 4}, "max_tokens": 12, "interventions": ablate})
    assert b1["timings"]["reused_positions"] == parent["n_prompt"] - 1 + 4
    sse(server, {"prompt": "One day", "max_tokens": 3})  # the context now holds another run
    b2 = sse(server, {"branch": {"run": pid, "step": 4}, "max_tokens": 12, "interventions": ablate})
    assert b2["timings"]["reused_positions"] == 0
    d1 = json.loads(server.req("GET", "/api/runs/" + b1["run_id"])[1])
    d2 = json.loads(server.req("GET", "/api/runs/" + b2["run_id"])[1])
    assert d1["output_ids"] == d2["output_ids"]
    assert [s["logprob"] for s in d1["steps"]] == [s["logprob"] for s in d2["steps"]]
    pos = d1["n_prompt"] + len(d1["output_ids"]) - 2
    r1 = server.req("GET", "/api/runs/%s/attention?pos=%d" % (b1["run_id"], pos))[1]
    r2 = server.req("GET", "/api/runs/%s/attention?pos=%d" % (b2["run_id"], pos))[1]
    assert json.loads(r1)["row"] == json.loads(r2)["row"]
    assert d1["branch"]["interventions_from"] == "step"
    # from the start: the prompt is intervened on too, nothing to keep
    sse(server, {"prompt": PROMPT, "max_tokens": 12})
    b3 = sse(server, {"branch": {"run": pid, "step": 4, "interventions_from": "start"}, "max_tokens": 12,
                      "interventions": ablate})
    assert b3["timings"]["reused_positions"] == 0
    code, body = server.req("POST", "/api/runs", json.dumps({"branch": {"run": pid, "step": 1,
                                                                        "interventions_from": "later"}}).encode())
    assert code == 400 and b"interventions_from" in body


def test_steer_by_the_difference_of_two_runs(tmp_path, model):
    a, b = str(tmp_path / "a.heedrun"), str(tmp_path / "b.heedrun")
    cli("generate", "--threads", "1", "-p", "Once upon a time", "-n", "2", "--save", a)
    cli("generate", "--threads", "1", "-p", "One day a big dog", "-n", "2", "--save", b)
    ra, rb = heed.open_run(a), heed.open_run(b)
    v = ra.residual(0, 2) - rb.residual(0, 2)
    assert v.shape == (model.info["n_embd"],) and np.any(v != 0)
    vec = str(tmp_path / "v.f32")
    v.astype("<f4").tofile(vec)
    j1 = cli_json("-p", PROMPT, "-n", "6", "--steer-diff", "%s:%s:2:3.5" % (a, b))
    j2 = cli_json("-p", PROMPT, "-n", "6", "--steer", "%s:2:3.5" % vec)
    assert j1["output_ids"] == j2["output_ids"] and j1["attention"] == j2["attention"]
    py = model.generate(PROMPT, max_tokens=6, interventions=[{"type": "steer", "layer": 2, "alpha": 3.5, "vector": v}])
    assert py.tokens.ids.tolist() == j1["prompt_ids"] + j1["output_ids"]
    p = subprocess.run([HEED, "generate", "-p", PROMPT, "-n", "2", "--steer-diff", "%s:%s:2:1" % (a, vec)],
                       capture_output=True)
    assert p.returncode != 0 and b"--steer-diff" in p.stderr
    p = subprocess.run([HEED, "generate", "-p", PROMPT, "-n", "2", "--steer-diff", "%s:2:1" % a], capture_output=True)
    assert p.returncode != 0 and b"RUN_A:RUN_B" in p.stderr
