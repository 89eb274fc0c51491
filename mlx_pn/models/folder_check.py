"""A model folder is untrusted input: check its config.json (and tokenizer.json) before anything is built from it.

A config.json with `num_hidden_layers: 10**7` made the kernel's OOM killer end the process (rc 137); `"64"`, -64,
0 heads or a vocabulary of 1e10 gave TypeError / ZeroDivisionError / OverflowError tracebacks; a config.json that is
a symlink to /etc/passwd a JSONDecodeError. Here each is one line naming the file, the field and the fix
(ModelFolderError, a ConfigError: the recipes print it and exit 2), and the weights' size is estimated
(mlx_pn.memory.check_model) before one byte of them is allocated.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from mlx_pn.config import ConfigError

# Sizes every model needs (>= 1, whole numbers); the optional ones are checked when present.
REQUIRED_SIZES = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads", "vocab_size")
OPTIONAL_SIZES = ("num_key_value_heads", "max_position_embeddings", "byte_chunk_len", "byte_dim",
                  "byte_encoder_layers", "byte_decoder_layers", "byte_heads")
MAX_JSON_BYTES = 64 << 20  # a config.json is a few hundred bytes; a tokenizer.json of a 256k vocabulary ~20 MB


class ModelFolderError(ConfigError):
    """A model folder's config.json or tokenizer.json is unusable; the message names the file, the field and the fix."""


def read_json_file(path: Path, what: str) -> object:
    """The JSON in `path`, a regular file (not a symlink, not a device, not over MAX_JSON_BYTES); a
    ModelFolderError naming the file otherwise."""
    fix = f"replace it with the {what} the model was saved with (re-export or rerun the stage that wrote it)"
    if path.is_symlink():
        raise ModelFolderError(f"{path} is a symlink (to {path.readlink()}); a model folder's files must be its own "
                               f"regular files: {fix}")
    if not path.is_file():
        raise ModelFolderError(f"{path} is missing or not a regular file; {fix}")
    if path.stat().st_size > MAX_JSON_BYTES:
        raise ModelFolderError(f"{path} is {path.stat().st_size:,} bytes, more than a {what} can be; {fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFolderError(f"{path} is not valid JSON ({str(e).splitlines()[0]}); {fix}") from None


def _size(cfg: dict, key: str, path: Path) -> int:
    v = cfg[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ModelFolderError(f"{path}: {key} must be a whole number >= 1, got {v!r} ({type(v).__name__}); "
                               f"write the size the weights were saved with as a plain integer, or re-export the model")
    return v


def check_config(folder: str | Path) -> dict:
    """folder/config.json -> its dict, checked: a regular JSON object, every size a whole number >= 1, hidden_size
    divisible by the heads and heads by the key/value heads, and weights that fit in memory (the estimate of
    mlx_pn.memory, an OutOfMemoryError with the numbers otherwise)."""
    from mlx_pn import memory

    path = Path(folder) / "config.json"
    cfg = read_json_file(path, "config.json")
    if not isinstance(cfg, dict):
        raise ModelFolderError(f"{path} holds a JSON {type(cfg).__name__}, not an object of model fields; "
                               f"re-export the model or rerun the stage that wrote {folder}")
    for key in REQUIRED_SIZES:
        if key not in cfg:
            raise ModelFolderError(f"{path}: the field {key} is missing; add it (a whole number >= 1) or re-export "
                                   f"the model")
        _size(cfg, key, path)
    for key in OPTIONAL_SIZES:
        if cfg.get(key) is not None:
            _size(cfg, key, path)
    heads = cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or heads
    if cfg["hidden_size"] % heads or heads % kv:
        raise ModelFolderError(f"{path}: hidden_size {cfg['hidden_size']} must be divisible by num_attention_heads "
                               f"{heads}, and that by num_key_value_heads {kv}; fix the three fields to match the "
                               f"weights, or re-export the model")
    args = SimpleNamespace(**{k: cfg[k] for k in REQUIRED_SIZES}, num_key_value_heads=kv,
                           tie_word_embeddings=cfg.get("tie_word_embeddings", True) is not False,
                           share_ffn=bool(cfg.get("share_ffn")), share_attn_out=bool(cfg.get("share_attn_out")))
    try:
        memory.check_model(args)
    except memory.OutOfMemoryError as e:
        raise memory.OutOfMemoryError(f"{path}: {e}") from None
    return cfg


def check_tokenizer_json(path: str | Path) -> dict:
    """A tokenizer.json -> its vocabulary {piece: id}, checked: a regular JSON file whose model.vocab is a non-empty
    map of pieces to whole-number ids; a ModelFolderError naming the file and the field otherwise."""
    path = Path(path)
    tok = read_json_file(path, "tokenizer.json")
    vocab = tok.get("model", {}).get("vocab") if isinstance(tok, dict) and isinstance(tok.get("model"), dict) else None
    if not isinstance(vocab, dict) or not vocab:
        raise ModelFolderError(f"{path}: model.vocab is missing or empty (not a {{piece: id}} map); rebuild the "
                               f"tokenizer (the data stage writes it) or copy the one the model was trained with")
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in vocab.values()):
        raise ModelFolderError(f"{path}: model.vocab has an id that is not a whole number >= 0; rebuild the tokenizer "
                               f"(the data stage writes it)")
    return vocab
