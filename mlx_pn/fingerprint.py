"""What a training run's result depends on, as a flat {key: value} dict stored with the run.

The loop (mlx_pn.train.loop) records it in every checkpoint's state.json and in the run's summary.json; a
specialization also in its results.json. A resume, or a stage about to say "already done", compares the
stored one with the current one and stops, listing the keys that differ, instead of mixing two configs in
one run or reporting an old result for a new config.

Keys: ``train.*`` (the TrainConfig fields that change the result: not log_every, save_every,
keep_checkpoints or compile), ``model.*`` (the model's args), ``data.*`` (sha256 of the token arrays the
batches and the validation read, of their window subset and cluster labels), ``start.weights`` (sha256 of
the weights training starts from: the seeded initialisation, or the pretrained parent of a specialization),
and whatever the caller adds (a method's loss settings, ``parent.*``). No paths and no times: the same
command in a moved checkout gives the same fingerprint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import numpy as np

from mlx_pn.config import ConfigError

NOT_RESULT = ("log_every", "save_every", "keep_checkpoints", "compile")  # TrainConfig fields that change no result


class StaleRunError(ConfigError):
    """A run folder was made with other settings, data or parent model than the current command's."""


_MEMMAP_SHA: dict[tuple, str] = {}  # (file, address, shape, strides, dtype, size, mtime) of a memory map -> sha


def array_sha256(a) -> str:
    """sha256 of an array's dtype, shape and bytes (a memory-mapped shard is read, not copied; a whole shard
    file is hashed once per process while it is unchanged)."""
    key = None
    if isinstance(a, np.memmap) and getattr(a, "filename", None) and getattr(a, "_mmap", None) is not None:
        st = os.stat(a.filename)
        key = (a.filename, a.__array_interface__["data"][0], a.shape, a.strides, a.dtype.str, st.st_size,
               st.st_mtime_ns)
        if key in _MEMMAP_SHA:
            return _MEMMAP_SHA[key]
    a = np.ascontiguousarray(a)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a.reshape(-1).view(np.uint8)))
    if key is not None:
        _MEMMAP_SHA[key] = h.hexdigest()
    return h.hexdigest()


def weights_sha256(model) -> str:
    """sha256 over a model's parameters (names, dtypes, shapes, values), in sorted name order."""
    import mlx.core as mx
    from mlx.utils import tree_flatten

    h = hashlib.sha256()
    for name, v in sorted(tree_flatten(model.parameters())):
        if v.dtype == mx.bfloat16:
            v = v.astype(mx.float32)
        h.update(name.encode())
        h.update(array_sha256(np.array(v)).encode())
    return h.hexdigest()


def train_keys(t) -> dict:
    """train.* of a TrainConfig: the fields that change what training computes."""
    return {f"train.{k}": v for k, v in dataclasses.asdict(t).items() if k not in NOT_RESULT}


def model_keys(model) -> dict:
    """model.class, model.<args field> and, for a projected network, model.projected.<its ProjectedArgs field>."""
    args, pargs = getattr(model, "args", None), getattr(model, "pargs", None)
    fp = {"model.class": type(model).__name__}
    if args is not None and dataclasses.is_dataclass(args):
        fp.update({f"model.{k}": v for k, v in dataclasses.asdict(args).items()})
    if pargs is not None and dataclasses.is_dataclass(pargs):
        fp.update({f"model.projected.{k}": v for k, v in dataclasses.asdict(pargs).items()})
    return fp


def batches_keys(batches, prefix: str = "data.train") -> dict:
    """The token stream a batch source cuts its windows from, and what selects or labels them."""
    out = {}
    for attr, key in (("tokens", ""), ("indices", ".indices"), ("labels", ".labels")):
        v = getattr(batches, attr, None)
        if v is not None:
            out[prefix + key] = array_sha256(v)
    inner = getattr(batches, "inner", None)  # a wrapper around another batch source
    if not out and inner is not None and inner is not batches:
        return batches_keys(inner, prefix)
    return out  # a source of another kind records nothing here (its caller may add keys of its own)


def normalise(fp: dict) -> dict:
    """As it reads back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(fp, sort_keys=True, default=str))


def differences(old: dict | None, new: dict) -> dict[str, tuple]:
    """key -> (old, new) for the keys both hold with other values. A key one of them lacks is not compared
    (a run made before that key was recorded)."""
    if not old:
        return {}
    new = normalise(new)
    return {k: (old[k], v) for k, v in sorted(new.items()) if k in old and old[k] != v}


def _short(v) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s[:12] if len(s) == 64 and all(c in "0123456789abcdef" for c in s) else s[:60]


def check_same(old: dict | None, new: dict, where, fix: str | None = None) -> None:
    """StaleRunError listing the keys that differ between the stored fingerprint `old` and `new`."""
    diff = differences(old, new)
    if diff:
        listed = "; ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, (a, b) in diff.items())
        fix = fix or "rerun with --no-resume to start over (the old run is moved aside), or use a new --out"
        raise StaleRunError(f"{where} was made with other settings or inputs than this command's ({listed}); {fix}")


# Config keys that change no result of a specialization: where things are written and read (the data's
# content is fingerprinted instead of its source spec), the domain (its own folder), the grid's own section,
# and the loop's bookkeeping.
NOT_RESULT_CONFIG = ("out", "domain", "data.dir", "data.generic", "data.domains", "data.add_domains")


def config_keys(cfg) -> dict:
    """The config's dotted keys -> values, but those in NOT_RESULT_CONFIG, the grid section and NOT_RESULT."""
    out = {}
    for section, d in dataclasses.asdict(cfg).items():
        if not dataclasses.is_dataclass(getattr(cfg, section)):
            out[section] = d  # a top-level key (method, select, ...)
        elif section != "grid":
            out.update({f"{section}.{k}": v for k, v in d.items() if k not in NOT_RESULT})
    return normalise({k: v for k, v in out.items() if k not in NOT_RESULT_CONFIG})


def parent_sha256(path) -> str | None:
    """sha256 of the pretrained model a specialization started from: PATH/model.safetensors, else
    PATH/final/model.safetensors, else every PATH/*/final/model.safetensors (k experts); None: none there."""
    from pathlib import Path

    from mlx_pn.io import file_sha256

    p = Path(path)
    files = [f for f in (p / "model.safetensors", p / "final" / "model.safetensors") if f.is_file()][:1] or \
        sorted(p.glob("*/final/model.safetensors"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.relative_to(p)}:{file_sha256(f)}".encode())
    return h.hexdigest()


def specialize_fingerprint(cfg, data, domain: str, parent, teacher=None) -> dict:
    """results.json's fingerprint: the config keys, the sha256 of the domain's shards and of the generic test
    split (both measured), of the parent model (`parent`: results.json's pretrained_from) and of a
    distillation's teacher (`teacher`: results.json's teacher)."""
    fp = config_keys(cfg)
    for name, splits in ((domain, None), ("generic", ("test",))):
        for split, info in sorted(data.corpora[name].manifest["splits"].items()):
            if splits is None or split in splits:
                fp[f"data.{'domain' if name == domain else name}.{split}"] = info.get("sha256")
    if parent:
        fp["parent.weights"] = parent_sha256(parent) or "missing"
    if teacher:
        fp["teacher.weights"] = parent_sha256(teacher) or "missing"
    return fp
