"""Presets, building, saving and loading models: the one place that picks a model class.

A config section (`mlx_pn.config.ModelConfig`: `cfg.model` for the SLM, `cfg.large` for the LLM) becomes
the model's argument dataclass with `model_args`, a fresh model with `build_model`, and a model folder
(config.json + model.safetensors) with `save_model`; `load_model` reads any such folder back (the token
model or the byte model, by its config.json). The projected network, built from two argument sets, has its
own `build_projected` / `load_projected` beside its class (mlx_pn.models.projected).

A preset is the network's shape only; `recipes/configs/*.yaml` are whole experiments (data, training,
methods) that name presets. `tiny.yaml` and `cpu.yaml` use the presets of their names; the paper's two sizes
are the presets `slm` and `llm`, used by `paper-slm.yaml`, `paper-llm.yaml` and `compare-paper.yaml`. A
preset never picks a method: `--method llm` trains `cfg.large`, whatever its preset.

The fields themselves are declared where they are read: `transformer.ModelArgs` (the token model,
mlx-lm llama names), `byte_lm.ModelArgs` (the byte model; that file is also the exported remote code, so
it imports nothing from mlx_pn and repeats the trunk's fields), and `config.ModelConfig` (the
``--model.X`` keys with their help; config imports no model code). tests/test_model.py checks that
they agree.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path
from typing import Any

import mlx.core as mx
from mlx.utils import tree_flatten

from mlx_pn.config import ConfigError, ModelConfig, _suggest, to_dict
from mlx_pn.io import atomic_folder, check_disk_space, file_sha256, has_marker
from mlx_pn.models import byte_lm, folder_check
from mlx_pn.models.transformer import ModelArgs, Transformer, init_trunk_weights

# Sizes from the paper (Table 6) plus small presets for CPUs. The vocabulary comes from the
# tokenizer (32k for the paper sizes); presets fix only the shape of the network.
PRESETS: dict[str, dict[str, Any]] = {
    # A few seconds per hundred steps on a laptop CPU: unit tests and smoke runs.
    "tiny": dict(hidden_size=64, num_hidden_layers=2, intermediate_size=256, num_attention_heads=4,
                 max_position_embeddings=256),
    # The quickstart / CPU preset: ~3.6M non-embedding parameters.
    "cpu": dict(hidden_size=256, num_hidden_layers=4, intermediate_size=1024, num_attention_heads=4,
                max_position_embeddings=512),
    # A larger CPU model for the CPU comparison grid (an hour-scale run on 2 cores).
    "cpu-large": dict(hidden_size=512, num_hidden_layers=4, intermediate_size=2048,
                      num_attention_heads=8, max_position_embeddings=512),
    # The paper's SLM: 7 layers, d=1024, 8 heads, ctx 1024, a 4096-wide MLP (~121M with a 32k tied
    # vocab by the paper's own 12*L*d^2 + V*d count). SwiGLU has three matrices, so its inner size is
    # 2/3 of 4096 (rounded to 64: 2752) to keep the paper's parameters and FLOPs: 121.3M in all.
    "slm": dict(hidden_size=1024, num_hidden_layers=7, intermediate_size=2752, num_attention_heads=8,
                max_position_embeddings=1024),
    # The paper's LLM: 7 layers, d=2816, 22 heads, an 11264-wide MLP -> SwiGLU 7552 (758.7M in all).
    "llm": dict(hidden_size=2816, num_hidden_layers=7, intermediate_size=7552,
                num_attention_heads=22, max_position_embeddings=1024),
}

TOKEN_KEYS = frozenset(f.name for f in fields(ModelArgs))
# The byte front end's own knobs (frontend, byte_*): meaningless for a token model, which ignores them.
BYTE_KEYS = frozenset(f.name for f in fields(byte_lm.ModelArgs)) - TOKEN_KEYS
STLM_SHARING = ("share_ffn", "share_attn_out")


class CheckpointError(RuntimeError):
    """A model folder or training checkpoint is missing, damaged or of another kind; the message says which."""


def check_preset(section: ModelConfig, name: str = "model") -> None:
    """ConfigError naming `{name}.preset` (name: the config section, "model" or "large") when the preset is
    not one of PRESETS, with the closest one suggested."""
    if section.preset not in PRESETS:
        raise ConfigError(f"{name}.preset: unknown preset '{section.preset}'{_suggest(section.preset, PRESETS)}")


def model_args(section: ModelConfig, vocab_size: int, name: str = "model"):
    """A config section (cfg.model: the SLM, cfg.large: the LLM) -> its preset with the section's overrides
    applied, sized for the tokenizer's vocabulary: ModelArgs, or byte_lm.ModelArgs for frontend "byte".
    An unknown preset is a ConfigError naming `{name}.preset`."""
    return make_args(resolved(section, name), vocab_size)


def resolved(section: ModelConfig, name: str = "model") -> dict:
    """The section's preset with its overrides applied (the architecture fields, before the vocabulary), checked:
    every size >= 1, hidden_size divisible by num_attention_heads and heads by key/value heads; a ConfigError
    naming `{name}.KEY`, the value and the fix otherwise."""
    check_preset(section, name)
    d = dict(PRESETS[section.preset])
    for k, v in to_dict(section).items():
        if k != "preset" and v is not None:
            d[k] = v
    for k in ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads"):
        if not isinstance(d.get(k), int) or d[k] < 1:
            raise ConfigError(f"{name}.{k} must be >= 1, got {d.get(k)!r}; omit it to keep the preset's value")
    hidden, heads = d["hidden_size"], d["num_attention_heads"]
    kv = d.get("num_key_value_heads") or heads
    if hidden % heads:
        raise ConfigError(f"{name}.hidden_size={hidden} must be divisible by {name}.num_attention_heads={heads} "
                          f"(preset {section.preset!r} + overrides); pick heads that divide it")
    if heads % kv:
        raise ConfigError(f"{name}.num_attention_heads={heads} must be a multiple of {name}.num_key_value_heads={kv} "
                          f"(GQA groups must be equal)")
    return d


def check_section(section: ModelConfig, name: str = "model", seq_lens: dict[str, int] | None = None) -> None:
    """Config-load checks of a model section: its preset, its resolved sizes (`resolved`) and every training window
    it sees ({"pretrain.seq_len": 64, ...}) no longer than its max_position_embeddings."""
    d = resolved(section, name)
    max_pos = d.get("max_position_embeddings")
    for key, seq_len in (seq_lens or {}).items():
        if max_pos and seq_len > max_pos:
            raise ConfigError(f"{key}={seq_len} is longer than {name}.max_position_embeddings={max_pos} (preset "
                              f"{section.preset!r}); lower {key} or set --{name}.max_position_embeddings {seq_len}")


def make_args(d: dict, vocab_size: int):
    """Architecture fields (a preset + overrides; `frontend` picks the model) -> the model's argument
    dataclass: ModelArgs (token front end, optionally with shared FFN / attention output) or
    byte_lm.ModelArgs (frontend "byte")."""
    d = dict(d)
    frontend = d.pop("frontend", "token")
    if frontend == "byte":
        for k in STLM_SHARING:
            if d.get(k):
                raise NotImplementedError(f"model.{k} with model.frontend=byte is not implemented (the byte model's "
                                          f"trunk is mlx-lm's llama, exported as remote code); use one or the other")
        names = {f.name for f in fields(byte_lm.ModelArgs)}
        return byte_lm.ModelArgs(**{k: v for k, v in d.items() if k in names}, vocab_size=vocab_size)
    if frontend != "token":
        raise ValueError(f"model.frontend must be 'token' or 'byte', got {frontend!r}")
    return ModelArgs(**{k: v for k, v in d.items() if k not in BYTE_KEYS}, vocab_size=vocab_size)


def is_byte_args(args) -> bool:
    return getattr(args, "frontend", "token") == "byte"


def build_model(args, seed: int = 0, tokenizer=None):
    """A freshly initialised model; the same seed gives the same weights.

    A byte-level model (byte_lm.ModelArgs) needs `tokenizer` (mlx_pn.data.tokenizer.Tokenizer): its frozen
    byte table is each SentencePiece piece's bytes. Weights that cannot fit in memory are refused before they are
    allocated (mlx_pn.memory.check_model: an OutOfMemoryError with the numbers, not a segfault)."""
    from mlx_pn import memory

    memory.check_model(args)
    mx.random.seed(seed)
    if is_byte_args(args):
        if tokenizer is None:
            raise ValueError("build_model: a byte-level model (model.frontend=byte) needs the tokenizer for its "
                             "byte table: build_model(args, seed, tokenizer=data.tokenizer)")
        if tokenizer.vocab_size != args.vocab_size:
            raise ValueError(f"build_model: tokenizer has {tokenizer.vocab_size} ids, model.vocab_size is "
                             f"{args.vocab_size}")
        model = byte_lm.Model(args)
        init_trunk_weights(model, args.num_hidden_layers)
        table, _ = byte_lm.build_byte_table(tokenizer.sp, args.byte_chunk_len)
        model.byte_table = mx.array(table)
    else:
        model = Transformer(args)
    mx.eval(model.parameters())
    return model


def model_from_config(config: dict):
    """A model folder's config.json -> an (uninitialised) model of the right class."""
    from mlx_pn import memory

    args = byte_lm.ModelArgs.from_dict(config) if config.get("frontend") == "byte" else ModelArgs.from_dict(config)
    memory.check_model(args)  # the weights must fit before they are allocated
    return byte_lm.Model(args) if config.get("frontend") == "byte" else Transformer(args)


# --- model folders (config.json + model.safetensors) ---------------------------------------------


HASHES = "sha256.json"  # {file: sha256} of a model folder's files, checked by load_model (like a checkpoint's)
HASHED = ("model.safetensors", "config.json")


def write_model(folder: Path, model, extra_config: dict | None = None) -> None:
    """Write `model` into an existing folder: its weights, config.json (its args + extra_config) and the sha256 of
    both (sha256.json), after checking that the disk has room for them."""
    weights = dict(tree_flatten(model.parameters()))
    check_disk_space(folder.parent, sum(v.nbytes for v in weights.values()) + (1 << 20), "a model folder",
                     "free some space or point --out at a disk with room, then rerun the same command")
    mx.save_safetensors(str(folder / "model.safetensors"), weights, metadata={"format": "mlx"})
    cfg = {**model.args.to_dict(), **(extra_config or {})}
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    (folder / HASHES).write_text(json.dumps({f: file_sha256(folder / f) for f in HASHED}, indent=2))


def verify_model_folder(folder: Path) -> None:
    """CheckpointError naming the file when a model folder's file differs from its sha256.json; a folder this
    library marked as a model must have one (a folder from before the hashes, unmarked, is trusted as it is)."""
    path = folder / HASHES
    if not path.exists():
        if has_marker(folder, "model"):
            raise CheckpointError(f"{folder}/{HASHES} is missing, so its weights cannot be checked; retrain this "
                                  f"stage (or rerun the stage that wrote it) to rewrite the folder")
        return
    try:
        hashes = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is unreadable ({e}); rerun the stage that wrote {folder}") from None
    for name, digest in hashes.items():
        if not (folder / name).exists() or file_sha256(folder / name) != digest:
            raise CheckpointError(f"{folder}/{name} is missing or was changed after it was written (sha256 differs "
                                  f"from {HASHES}); rerun the stage that wrote {folder}")


def save_model(folder: str | Path, model, extra_config: dict | None = None) -> Path:
    """write_model into a temp folder renamed to `folder`: a crash never leaves half a model."""
    # replaces only a model folder (marked, or one with a config.json and weights from before markers)
    return atomic_folder(Path(folder), lambda tmp: write_model(tmp, model, extra_config), kind="model",
                         legacy=lambda f: (f / "config.json").exists() and (f / "model.safetensors").exists())


def load_model(folder: str | Path):
    """A folder written by save_model -> its Transformer or byte-level model (CheckpointError if unreadable)."""
    folder = Path(folder)
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        raise CheckpointError(f"{folder}: no config.json; is this a model folder written by mlx_pn?")
    config = folder_check.read_config(folder, CheckpointError)
    folder_check.check_config(config, cfg_path, CheckpointError)  # before the hashes: a bomb is refused unread
    verify_model_folder(folder)
    model = model_from_config(config)
    try:
        model.load_weights(str(folder / "model.safetensors"), strict=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{folder}/model.safetensors: cannot load ({e})") from None
    mx.eval(model.parameters())
    return model
