"""Super Tiny LM options: shared FFN / attention output, and the byte-level front end (models/byte_lm.py)."""

import json
import math
import subprocess
import sys

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx.utils import tree_flatten

from mlx_pn.models import byte_lm
from mlx_pn.models.build import build_model, load_model, make_args, model_from_config, save_model
from mlx_pn.models.transformer import ModelArgs, Transformer, unshared
from mlx_pn.train.losses import cross_entropy


def shared_args(**kw):
    d = dict(hidden_size=32, num_hidden_layers=3, intermediate_size=64, num_attention_heads=4, vocab_size=97)
    d.update(kw)
    return ModelArgs(**d)


# --- shared FFN / attention output -------------------------------------------------------------------


@pytest.mark.parametrize("ffn,attn", [(True, False), (False, True), (True, True)])
def test_shared_weights_stored_once_and_export_is_plain_llama(ffn, attn):
    from mlx_lm.models import llama

    args = shared_args(share_ffn=ffn, share_attn_out=attn)
    model = build_model(args, seed=1)
    names = [k for k, _ in tree_flatten(model.trainable_parameters())]
    assert (sum("mlp" in n for n in names) == 3) == ffn  # 3 matrices, once
    assert (sum("o_proj" in n for n in names) == 1) == attn
    base = build_model(shared_args(), seed=1)
    D, F, L = 32, 64, 3
    saved = (L - 1) * (3 * D * F * ffn + D * D * attn)
    assert base.num_params() - model.num_params() == saved
    plain = unshared(model)
    x = mx.array(np.random.default_rng(0).integers(0, 97, (2, 11)))
    assert mx.array_equal(plain(x), model(x)).item()
    ref = llama.Model(llama.ModelArgs.from_dict(plain.args.to_dict()))
    ref.load_weights(tree_flatten(plain.parameters()), strict=True)
    assert mx.abs(ref(x) - model(x)).max().item() < 1e-5


def test_shared_gradient_is_the_sum_over_layers():
    """The shared MLP's gradient equals the sum of the per-layer MLP gradients of the unshared copy."""
    model = build_model(shared_args(share_ffn=True, share_attn_out=True), seed=2)
    plain = unshared(model)
    x = mx.array(np.random.default_rng(1).integers(0, 97, (2, 9)))
    g = dict(tree_flatten(nn.value_and_grad(model, cross_entropy)(model, x[:, :-1], x[:, 1:])[1]))
    gp = dict(tree_flatten(nn.value_and_grad(plain, cross_entropy)(plain, x[:, :-1], x[:, 1:])[1]))
    summed = sum(gp[f"model.layers.{n}.mlp.down_proj.weight"] for n in range(3))
    assert mx.abs(g["model.shared_mlp.down_proj.weight"] - summed).max().item() < 1e-5
    summed = sum(gp[f"model.layers.{n}.self_attn.o_proj.weight"] for n in range(3))
    assert mx.abs(g["model.shared_o_proj.weight"] - summed).max().item() < 1e-5


def test_shared_model_folder_round_trip(tmp_path):
    model = build_model(shared_args(share_ffn=True), seed=3)
    save_model(tmp_path / "m", model)
    back = load_model(tmp_path / "m")
    assert isinstance(back, Transformer) and back.args.share_ffn
    x = mx.array([[1, 2, 3, 4]])
    assert mx.array_equal(back(x), model(x)).item()


def test_shared_export_to_mlx_lm(tiny_run, tmp_path):
    from mlx_lm import load

    from mlx_pn.export import export_mlx_lm

    vocab = tiny_run[1].tokenizer.vocab_size
    model = build_model(shared_args(vocab_size=vocab, share_ffn=True, share_attn_out=True, tie_word_embeddings=False))
    report = export_mlx_lm(model, tiny_run[1].tokenizer.hf_dir, tmp_path / "m")
    # within 1e-5, not 0: our MLP's fast silu vs mlx-lm's nn.silu (mlx_pn.models.ops; measured 8.9e-7)
    assert report["max_abs_logit_diff"] <= 1e-5 and report["exported_params"] > report["params"]
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["model_type"] == "llama" and "share_ffn" not in cfg and cfg["tie_word_embeddings"] is False
    lm, _ = load(str(tmp_path / "m"))
    x = mx.array(np.random.default_rng(0).integers(3, vocab, (1, 7)))
    assert mx.abs(lm(x) - model(x)).max().item() <= 1e-5


# --- construction hooks ------------------------------------------------------------------------------


def test_make_args_and_model_from_config():
    d = dict(hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4, byte_dim=64)
    a = make_args({**d, "share_ffn": True}, 300)
    assert isinstance(a, ModelArgs) and a.share_ffn and a.vocab_size == 300
    b = make_args({**d, "frontend": "byte", "tie_word_embeddings": True}, 300)
    assert isinstance(b, byte_lm.ModelArgs) and b.byte_dim == 64 and b.vocab_size == 300
    assert isinstance(model_from_config(b.to_dict()), byte_lm.Model)
    assert isinstance(model_from_config(a.to_dict()), Transformer)
    with pytest.raises(NotImplementedError, match="share_ffn with model.frontend=byte"):
        make_args({**d, "frontend": "byte", "share_ffn": True}, 300)
    with pytest.raises(ValueError, match="needs the tokenizer"):
        build_model(b)


# --- byte-level model --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tok(tiny_run):
    return tiny_run[1].tokenizer


def byte_args(vocab, **kw):
    d = dict(hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4, frontend="byte",
             byte_dim=32, byte_heads=2, byte_chunk_len=16, byte_decoder_layers=2)
    d.update(kw)
    return make_args(d, vocab)


@pytest.fixture(scope="module")
def byte_model(tok):
    return build_model(byte_args(tok.vocab_size), seed=4, tokenizer=tok)


def test_byte_table_matches_the_text(tok, byte_model):
    text = "Hello, world!\nA caf\u00e9 costs \u20ac3 \U0001F600."
    ids = tok.encode(text)
    # SentencePiece's dummy prefix: the first piece starts with '\u2581', a space; byte fallback covers emoji
    assert byte_model.ids_to_bytes(ids) == b" " + text.encode()
    tab = np.array(byte_model.byte_table)
    assert tab[tok.eos_id][0] == byte_lm.SYM_EOS and tab[tok.eos_id][1] == byte_lm.PAD
    assert tab[tok.bos_id][0] == byte_lm.SYM_BOS and tab[0][0] == byte_lm.SYM_UNK
    assert "byte_table" not in dict(tree_flatten(byte_model.trainable_parameters()))


def test_byte_loss_counts_real_bytes_and_end_never_padding(tok):
    """Uniform decoder (zero output weights): each token costs (its symbols + END) * log(S), pads free."""
    model = build_model(byte_args(tok.vocab_size, byte_chunk_len=4), seed=5, tokenizer=tok)
    model.decoder.out.weight = mx.zeros_like(model.decoder.out.weight)
    ids = tok.encode("the international organisation, ok")
    x, y = mx.array([ids[:-1]]), mx.array([ids[1:]])
    n = [len(byte_lm.piece_symbols(tok.sp, i)) for i in ids[1:]]
    scored = sum(min(k + 1, 4) for k in n)  # a chunk filling all 4 slots ends implicitly
    assert any(k >= 4 for k in n) and any(k < 3 for k in n)
    assert abs(model.nll_sum(x, y).item() - scored * math.log(byte_lm.N_SYMBOLS)) < 1e-2


def test_byte_pooling_ignores_padding(byte_model):
    enc = byte_model.encoder
    chunks = byte_model.byte_table[mx.array([5, 300, 700])]
    before = enc(chunks)
    w = enc.embed.weight
    enc.embed.weight = mx.where((mx.arange(w.shape[0]) == byte_lm.PAD)[:, None], 100.0, w)
    after = enc(chunks)
    enc.embed.weight = w
    assert mx.abs(after - before).max().item() < 1e-5


def test_vocab_logits_equal_the_byte_likelihood(byte_model, tok):
    """__call__'s logit of each id is minus its bytes' NLL: the next-token distribution over the vocabulary
    (a sub-distribution: the rest of the mass is on byte strings that are not vocabulary entries)."""
    ids = tok.encode("The law of the land, said the judge.")[:8]
    x = mx.array([ids])
    logits = byte_model(x[:, :-1])  # (1, 7, V)
    for t in range(7):
        nll = byte_model.nll_sum(x[:, :t + 1], x[:, 1:t + 2]).item() - (
            byte_model.nll_sum(x[:, :t], x[:, 1:t + 1]).item() if t else 0.0)
        assert abs(-logits[0, t, ids[t + 1]].item() - nll) < 1e-3 * max(1.0, nll)
    assert (mx.logsumexp(logits, axis=-1) <= 1e-5).all().item()
    canon = np.array(byte_model.canonical())
    assert canon.sum() < tok.vocab_size and np.isinf(np.array(logits[0, 0])[~canon]).all()


def test_byte_kv_cache_matches_full_forward(byte_model):
    from mlx_lm.models.cache import make_prompt_cache

    x = mx.array(np.random.default_rng(1).integers(3, 1000, (1, 6)))
    full = byte_model.hidden(x)
    cache = make_prompt_cache(byte_model)
    parts = [byte_model.hidden(x[:, :3], cache=cache)] + [byte_model.hidden(x[:, i:i + 1], cache=cache)
                                                          for i in range(3, 6)]
    assert mx.abs(mx.concatenate(parts, axis=1) - full).max().item() < 1e-5


def test_byte_model_trains_saves_and_loads(tiny_run, tmp_path):
    from mlx_pn.data.batches import PackedBatches
    from mlx_pn.train.evaluate import nll
    from mlx_pn.train.loop import RunOptions, train

    cfg, data = tiny_run
    model = build_model(byte_args(data.tokenizer.vocab_size), seed=6, tokenizer=data.tokenizer)
    t = cfg.pretrain
    t = type(t)(**{**t.__dict__, "steps": 12, "eval_every": 12, "save_every": 12, "warmup": 2, "seq_len": 32})
    toks = data.corpora["generic"].tokens("train")
    r = train(model, t, PackedBatches(toks, 32, 8, 0, "generic"), tmp_path / "run",
              RunOptions(valid_tokens=data.corpora["generic"].tokens("valid")), log=lambda *a: None)
    rows = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    valid = [row["valid_nll"] for row in rows if "valid_nll" in row]
    assert valid[-1] < valid[0] and r.steps == 12
    back = load_model(tmp_path / "run" / "final")  # no tokenizer: the byte table is in the weights
    assert isinstance(back, byte_lm.Model)
    assert mx.array_equal(back.byte_table, model.byte_table).item()
    w = toks[:65].astype(np.int64)
    assert abs(nll(back, w, 32)["nll"] - nll(model, w, 32)["nll"]) < 1e-5


def test_generate_greedy_is_the_argmax_chain(byte_model, tok):
    from mlx_pn.generate import generate_ids, generate_text

    prompt = tok.encode("The court")
    out = generate_ids(byte_model, prompt, max_tokens=3)
    seq = list(prompt)
    for _ in range(3):
        seq.append(int(mx.argmax(byte_model(mx.array([seq]))[0, -1]).item()))
    assert out == seq[len(prompt):]
    assert isinstance(generate_text(byte_model, "The court", tok, max_tokens=3, temperature=0.8, top_k=5), str)
    assert isinstance(generate_text(byte_model, "The court", tok, max_tokens=3, bytes_mode=True), str)
    plain = build_model(shared_args(vocab_size=tok.vocab_size, share_ffn=True), seed=0)
    assert isinstance(generate_text(plain, "The court", tok, max_tokens=4), str)


@pytest.mark.slow
def test_byte_export_loads_in_mlx_lm_with_remote_code(byte_model, tok, tmp_path):
    from mlx_lm import load

    from mlx_pn.export import ExportError, export_mlx_lm

    report = export_mlx_lm(byte_model, tok.hf_dir, tmp_path / "b")
    assert report["max_abs_logit_diff"] == 0.0
    cfg = json.loads((tmp_path / "b" / "config.json").read_text())
    assert cfg["model_file"] == "byte_lm.py" and (tmp_path / "b" / "byte_lm.py").exists()
    with pytest.raises(ValueError, match="trust_remote_code"):
        load(str(tmp_path / "b"))
    with pytest.raises(ExportError, match="not supported for byte-level"):
        export_mlx_lm(byte_model, tok.hf_dir, tmp_path / "q", quantize=4)
    r = subprocess.run([sys.executable, "-m", "mlx_lm", "generate", "--model", str(tmp_path / "b"), "--prompt",
                        "The court", "--max-tokens", "4", "--temp", "0", "--trust-remote-code"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Generation: " in r.stdout and "tokens-per-sec" in r.stdout, r.stdout


def test_stlm_sizes_table(tok):
    from mlx_pn.models.build import PRESETS
    from tools.stlm_sizes import rows

    rs = {r["variant"]: r for r in rows("tiny", tok.vocab_size)}
    base = rs["tied (baseline)"]["params"]
    for name, r in rs.items():
        if "equal params" in name:
            assert abs(r["params"] - base) <= 0.01 * base, name
    assert rs["untied"]["saved"] == -tok.vocab_size * 64
    assert rs["share_ffn"]["saved"] == 3 * 64 * 256  # (layers - 1) * one SwiGLU, 2 layers
    for name in ("byte", "share_ffn, equal params (deeper)"):
        args = make_args({**PRESETS["tiny"], **rs[name]["overrides"]}, tok.vocab_size)
        assert build_model(args, tokenizer=tok).num_params() == rs[name]["params"]
