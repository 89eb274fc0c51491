"""mlx_pn.costs against hand counts."""

import pytest

from mlx_pn.costs import (StageCost, c_total, forward_flops_per_token, projection_flops_per_token,
                          train_flops_per_token, training_cost)
from mlx_pn.models.build import build_model
from mlx_pn.models.transformer import ModelArgs

ARGS = ModelArgs(hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4, vocab_size=97)


def test_forward_flops_by_hand():
    # per layer: q,k,v,o 4 x 32x32 matmuls = 2*4096; scores+values 4*L*d = 4*10*32; SwiGLU 2*3*32*64
    per_layer = 2 * 4 * 32 * 32 + 4 * 10 * 32 + 2 * 3 * 32 * 64
    assert forward_flops_per_token(ARGS, 10) == 2 * per_layer + 2 * 32 * 97 == 49728
    gqa = ModelArgs(hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=97)  # k and v are 16 wide
    assert forward_flops_per_token(gqa, 10) == 49728 - 2 * 2 * (2 * 32 * 16)
    assert train_flops_per_token(ARGS, 10) == 3 * 49728


def test_matmul_flops_are_twice_the_weights_a_token_meets():
    model = build_model(ARGS)  # tied head: the embedding matrix is used once, as the head
    weights = model.num_params() - sum(p.size for n, p in _named(model) if "norm" in n)
    assert forward_flops_per_token(ARGS, 10) - 2 * 4 * 10 * 32 == 2 * weights


def test_projection_and_totals():
    # 3 matrices of 32x64 per layer, 2 layers, from h=5 basis matrices: 2*5*3*32*64*2 per routed sequence
    per_seq = 2 * 5 * 3 * 32 * 64 * 2
    assert projection_flops_per_token(ARGS, 5, 10, 10) == pytest.approx(3 * per_seq / 10)
    assert projection_flops_per_token(ARGS, 5, 10, 40, training=False) == pytest.approx(per_seq / 40)
    c = training_cost(ARGS, 1000, 10, wall_s=2.0) + StageCost(5.0, 10, None)
    assert c.flops == 3 * 49728 * 1000 + 5 and c.tokens == 1010 and c.wall_s == 2.0
    assert StageCost.from_dict(c.as_dict()) == c
    assert c_total(100.0, 7.0, 3) == 121.0 and c_total(0.0, 7.0, 50) == 350.0


def _named(model):
    from mlx.utils import tree_flatten

    return tree_flatten(model.parameters())


def test_byte_model_flops_replace_the_head_with_the_byte_frontend():
    from mlx_pn.models.build import make_args

    base = dict(hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4)
    tok = make_args(base, 97)
    byte = make_args({**base, "frontend": "byte", "byte_dim": 16, "byte_chunk_len": 8}, 97)
    trunk = forward_flops_per_token(tok, 10) - 2 * 32 * 97
    block = 2 * 12 * 16 * 16 + 4 * 8 * 16  # per byte position: 12 Db^2 weights, scores over 8 positions
    frontend = (8 * block + 2 * 16 * 32) + (2 * 32 * 16 + 8 * (block + 2 * 16 * 262))
    assert forward_flops_per_token(byte, 10) == trunk + frontend
