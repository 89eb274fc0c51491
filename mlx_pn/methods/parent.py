"""The pretrained model a specialization starts from: its shape read from its checkpoint, its weights read under
a reader's lock on its stage folder.

A pretraining made with `--model.num_hidden_layers 3` is specialized without repeating the flag: the section's
fields the user left to the preset take the checkpoint's values (one line says which); only a field the config
sets to another value than the checkpoint's is refused. The weights are hashed and loaded under a reader's lock
on the parent's stage folder (no pretraining starts on it meanwhile; other specializations may read it at once),
and results.json records that hash: the weights fine-tuning started from, even when a `pretrain --no-resume`
replaces the parent later.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mlx_pn.config import Config, ConfigError, ModelConfig
from mlx_pn.models import folder_check

# the section's fields a checkpoint's config.json also holds (the preset names none of them)
SHAPE_FIELDS = tuple(f.name for f in dataclasses.fields(ModelConfig) if f.name != "preset")


def set_by_user(section: ModelConfig) -> set[str]:
    """The fields the config or a flag set: an override that is not None, a switch not at its default."""
    defaults = ModelConfig()
    return {k for k in SHAPE_FIELDS if getattr(section, k) is not None and getattr(section, k) != getattr(defaults, k)}


def adopt_shape(cfg: Config, src: Path, section: str, log=print) -> Config:
    """cfg with cfg.<section> describing the checkpoint in `src` (its config.json): the fields where the preset's
    value differs from the checkpoint's take the checkpoint's, said in one line; a ConfigError when the config set
    one of them itself. A missing checkpoint leaves cfg as it is (the method says how to make it)."""
    from mlx_pn.models.build import check_section, model_args

    path = Path(src) / "config.json"
    if not path.is_file():
        return cfg
    have = folder_check.read_config(Path(src), ConfigError)
    folder_check.check_config(have, path, ConfigError)
    have = {**have, "frontend": have.get("frontend", "token")}  # a token model's config.json names no frontend
    sec = getattr(cfg, section)
    want = {**dataclasses.asdict(model_args(sec, have["vocab_size"], section)), "frontend": sec.frontend}
    diff = {k: (have[k], want.get(k)) for k in SHAPE_FIELDS if k in have and have[k] != want.get(k)}
    if not diff:
        return cfg
    asked = set_by_user(sec)
    clash = {k: v for k, v in diff.items() if k in asked}
    if clash:
        listed = ", ".join(f"{k} {a} (config: {b})" for k, (a, b) in clash.items())
        raise ConfigError(f"{src} was pretrained with {listed}; drop {section}.{next(iter(clash))} from the flags "
                          f"or the config file (a specialization reads its model's shape from {path}), or pretrain "
                          f"again with it (another --out, or --no-resume)")
    new = dataclasses.replace(sec, **{k: a for k, (a, _) in diff.items()})
    check_section(new, section, {f"{t}.seq_len": getattr(cfg, t).seq_len for t in ("finetune",)})
    log(f"[specialize] the {section} shape is read from the pretrained model {path}: "
        + ", ".join(f"{k} {a} (preset {sec.preset!r}: {b})" for k, (a, b) in diff.items()))
    return dataclasses.replace(cfg, **{section: new})


def load_parent(src: Path):
    """(the model in `src`, parent_sha256 of its folder), both read under a reader's lock on the parent's stage
    folder (src's parent, when it holds a lock file: a folder this library trains in; runlock.reading), so no
    pretraining replaces it between the hash and the load, while other specializations may load it at the same
    time. Rank 0 alone locks (the other ranks write nothing)."""
    from mlx_pn import runlock
    from mlx_pn.fingerprint import parent_sha256
    from mlx_pn.models.build import load_model
    from mlx_pn.train import distributed as dist

    src = Path(src)
    stage = src.parent
    with runlock.reading(stage, enabled=dist.is_main()):
        sha = parent_sha256(src)
        return load_model(src), sha
